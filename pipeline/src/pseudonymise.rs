//! `riskstrat pseudonymise`, on the gate's side: identifiable extracts become the
//! analysts' pseudonymised tables plus the encrypted identity vault.
//!
//! - Every NHS number is normalised and checked (modulus 11). A row whose number fails
//!   goes to the gate-side quarantine with its reason and is counted; none is dropped
//!   silently, and none reaches the analysts.
//! - Valid rows keep their contract columns, with `pseudo_id` (HMAC-SHA256 under the
//!   pseudonymisation key) in place of `nhs_number`. Identity columns go only into
//!   the vault.
//! - Opt-outs are applied here too, through the one opt-out rule
//!   (`governance::optouts::apply`): an objector's rows never leave the gate, and the
//!   vault holds no one the gate may not release. The pseudonymised opt-out list is
//!   still written, so every run applies it again.
//! - Keys, vault and quarantine must sit outside the output folder; the output folder,
//!   quarantine and vault are each replaced whole, or left as they were.

use crate::bad_input;
use crate::durable::{self, io_at};
use crate::error::{Error, Result};
use crate::governance::optouts::{self, OptOuts, RawPersonTable};
use crate::governance::pseudonym::{Key, normalise_nhs_number, pseudo_id};
use crate::governance::vault::IDENTITY_COLUMNS;
use crate::governance::{refuse_inside, refuse_overlap, vault};
use crate::ingest::contract::{EXTRACT_TABLES, OPTOUTS, PATIENTS, Table, table_path};
use crate::ingest::{EmptyOptOuts, read_extract, refuse_empty};
use crate::session::functions::udf_over_strings;
use crate::session::{SessionOptions, new_context};
use datafusion::arrow::array::{Array, ArrayRef, StringArray};
use datafusion::arrow::datatypes::DataType;
use datafusion::common::JoinType;
use datafusion::dataframe::DataFrameWriteOptions;
use datafusion::execution::FunctionRegistry;
use datafusion::functions_aggregate::expr_fn::count;
use datafusion::logical_expr::{Expr, ScalarUDF};
use datafusion::prelude::{DataFrame, SessionContext, col, ident, lit};
use futures::StreamExt;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The summary written beside the pseudonymised tables: counts only.
pub const SUMMARY_FILE: &str = "pseudonymise.json";

pub struct Request<'a> {
    pub input: &'a Path,
    pub out: &'a Path,
    pub key_path: &'a Path,
    pub vault: &'a Path,
    pub vault_key_path: &'a Path,
    /// Gate-side folder for rows whose NHS number fails; default beside the vault.
    pub quarantine: Option<&'a Path>,
    /// An opt-out extract with no rows is used (otherwise it is refused as a failed
    /// extract).
    pub allow_empty_optouts: bool,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct TableSummary {
    pub rows_read: u64,
    pub rows_written: u64,
    /// Rows of patients with an opt-out: kept on the gate's side.
    pub rows_withheld_optout: u64,
    /// Reason -> rows.
    pub quarantined: BTreeMap<String, u64>,
}

impl TableSummary {
    /// The quarantine's reasons and their rows, as `reason n, ...`.
    pub fn reasons(&self) -> String {
        let reasons: Vec<String> = self
            .quarantined
            .iter()
            .map(|(r, n)| format!("{r} {n}"))
            .collect();
        reasons.join(", ")
    }
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Summary {
    pub tables: BTreeMap<String, TableSummary>,
    pub vault_patients: u64,
    #[serde(skip)]
    pub quarantine_dir: PathBuf,
}

impl Summary {
    pub fn quarantined_total(&self) -> u64 {
        self.tables
            .values()
            .flat_map(|t| t.quarantined.values())
            .sum()
    }
}

/// `nhs_number_problem(raw)`: the quarantine reason of an NHS number, NULL if valid.
fn problem_udf() -> ScalarUDF {
    string_udf("nhs_number_problem", |raw| match raw {
        None => Some("null_nhs_number".to_string()),
        Some(r) => normalise_nhs_number(r)
            .err()
            .map(|p| p.reason().to_string()),
    })
}

/// `nhs_number(raw)`: its ten digits, NULL if invalid.
fn normalised_udf() -> ScalarUDF {
    string_udf("nhs_number", |raw| {
        raw.and_then(|r| normalise_nhs_number(r).ok())
    })
}

/// `pseudonymise(raw)`: the contract's pseudo_id of a valid NHS number. It holds the
/// key, so it exists only in this command's own session.
fn pseudonymise_udf(key: Key) -> ScalarUDF {
    string_udf("pseudonymise", move |raw| {
        raw.and_then(|r| normalise_nhs_number(r).ok())
            .map(|n| pseudo_id(&key, &n))
    })
}

/// A Utf8 -> Utf8 UDF. Extracts list a person's events together, so each batch
/// computes a value once per distinct input.
fn string_udf(
    name: &str,
    f: impl Fn(Option<&str>) -> Option<String> + Send + Sync + 'static,
) -> ScalarUDF {
    udf_over_strings(name, DataType::Utf8, move |s| {
        let mut seen: HashMap<Option<&str>, Option<String>> = HashMap::new();
        let out: StringArray = s
            .iter()
            .map(|v| seen.entry(v).or_insert_with(|| f(v)).clone())
            .collect();
        Arc::new(out) as ArrayRef
    })
}

fn call(ctx: &SessionContext, udf: &str, arg: Expr) -> Result<Expr> {
    Ok(ctx.udf(udf)?.call(vec![arg]))
}

/// Where an extract's table is: `<table>.parquet` or a folder `<table>/`.
fn locate(input: &Path, table: &str) -> Option<PathBuf> {
    [input.join(format!("{table}.parquet")), input.join(table)]
        .into_iter()
        .find(|p| p.exists())
}

/// Temporary siblings that replace their targets only when everything is written.
/// Each target is locked for the command's life, so what a killed `pseudonymise` left
/// beside it (hidden staging copies holding NHS numbers, or the previous version
/// moved aside) is cleaned up at the next start: the previous version put back if
/// the kill came between the two renames, the copies removed.
struct Staged {
    moves: Vec<(PathBuf, PathBuf)>,
    locks: Vec<durable::TargetLock>,
    committed: bool,
}

impl Staged {
    /// Lock `target` and clean up after a killed writer of it: before anything else
    /// looks at the target (a kill between the two renames leaves it missing).
    fn recover(&mut self, target: &Path) -> Result<()> {
        if let Some(parent) = target.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(io_at(parent, "creating"))?;
        }
        self.locks.push(durable::lock_target(target)?);
        for old in durable::hidden_siblings(target, "old") {
            if target.exists() {
                durable::remove(&old).map_err(io_at(&old, "removing"))?;
            } else {
                std::fs::rename(&old, target).map_err(io_at(target, "restoring"))?;
            }
        }
        for tmp in durable::hidden_siblings(target, "staging") {
            durable::remove(&tmp).map_err(io_at(&tmp, "removing"))?;
        }
        Ok(())
    }

    fn path(&mut self, target: &Path) -> PathBuf {
        let name = target.file_name().unwrap_or_default().to_string_lossy();
        let tmp = target.with_file_name(format!(".{name}.staging-{}", std::process::id()));
        self.moves.push((tmp.clone(), target.to_path_buf()));
        tmp
    }

    fn commit(mut self) -> Result<()> {
        for (tmp, _) in &self.moves {
            durable::sync_tree(tmp)?;
        }
        for (tmp, target) in &self.moves {
            let old = target.with_file_name(format!(
                ".{}.old-{}",
                target.file_name().unwrap_or_default().to_string_lossy(),
                std::process::id()
            ));
            if target.exists() {
                std::fs::rename(target, &old).map_err(io_at(target, "moving aside"))?;
            }
            crate::faults::point("pseudonymise.between_renames");
            std::fs::rename(tmp, target).map_err(io_at(target, "renaming into place"))?;
            if let Some(parent) = target.parent().filter(|p| !p.as_os_str().is_empty()) {
                durable::sync_dir(parent)?;
            }
            let _ = durable::remove(&old);
        }
        self.committed = true;
        Ok(())
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        if !self.committed {
            for (tmp, _) in &self.moves {
                let _ = durable::remove(tmp);
            }
        }
    }
}

/// The default gate-side quarantine: beside the vault.
pub fn default_quarantine(vault: &Path) -> PathBuf {
    let stem = vault.file_stem().unwrap_or_default().to_string_lossy();
    vault.with_file_name(format!("{stem}-quarantine"))
}

/// Where the command would write, checked by path before it locks or makes anything
/// there: nothing it replaces whole may be, hold or sit inside what it must keep.
fn check_targets(req: &Request, quarantine: &Path) -> Result<()> {
    if !req.input.is_dir() {
        return Err(bad_input!(
            "--in {}: no such folder of identifiable extracts",
            req.input.display()
        ));
    }
    for (path, flag) in [
        (req.key_path, "--key"),
        (req.vault_key_path, "--vault-key"),
        (req.vault, "--vault"),
        (quarantine, "--quarantine"),
    ] {
        refuse_inside(path, req.out, flag)?;
    }
    refuse_overlaps(req, quarantine)
}

/// What the command replaces whole must be its own: checked under the targets' locks,
/// once what a killed run left is put back (`Staged::recover`).
fn check_contents(req: &Request, quarantine: &Path) -> Result<()> {
    if req.out.exists() {
        let empty = std::fs::read_dir(req.out)?.next().is_none();
        if !empty && !req.out.join(SUMMARY_FILE).exists() {
            return Err(bad_input!(
                "--out {}: exists and is not an earlier pseudonymise output; it would be replaced whole, so name a new or empty folder",
                req.out.display()
            ));
        }
        let ours = EXTRACT_TABLES
            .iter()
            .map(|t| table_path(t.name).trim_end_matches('/').to_string())
            .chain([SUMMARY_FILE.to_string()]);
        refuse_what_it_did_not_write(
            req.out,
            "--out",
            ours.collect(),
            " (keep feedback and other files beside the pseudonymised tables, not inside)",
        )?;
    }
    if quarantine.exists() {
        if !quarantine.is_dir() {
            return Err(bad_input!(
                "--quarantine {}: is a file; name a folder (it is replaced whole)",
                quarantine.display()
            ));
        }
        let ours = EXTRACT_TABLES.iter().map(|t| format!("{}.parquet", t.name));
        refuse_what_it_did_not_write(quarantine, "--quarantine", ours.collect(), "")?;
    }
    if req.vault.exists() && !vault::looks_like_vault(req.vault) {
        return Err(bad_input!(
            "--vault {}: exists and is not an identity vault (Parquet with an encrypted footer); it would be replaced, so name a new file or the earlier vault",
            req.vault.display()
        ));
    }
    Ok(())
}

/// The output's folders made, and the two keys read.
fn prepare(req: &Request, quarantine: &Path) -> Result<(Key, Key)> {
    std::fs::create_dir_all(req.out)
        .map_err(|e| bad_input!("--out {}: cannot create it ({e})", req.out.display()))?;
    for (path, flag) in [(req.vault, "--vault"), (quarantine, "--quarantine")] {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| {
                bad_input!("{flag} {}: cannot create its folder ({e})", path.display())
            })?;
        }
    }
    let key = Key::read_file(req.key_path)?;
    let vault_key = Key::read_file(req.vault_key_path)?;
    if key.bytes() == vault_key.bytes() {
        return Err(bad_input!(
            "--key and --vault-key hold the same key: each protects something different, so use two separate keys"
        ));
    }
    Ok((key, vault_key))
}

/// What pseudonymise replaces whole (the output, the vault, the quarantine) must not
/// be, hold or sit inside the extracts, a key or one another.
fn refuse_overlaps(req: &Request, quarantine: &Path) -> Result<()> {
    let replaced = [
        (req.out, "--out"),
        (req.vault, "--vault"),
        (quarantine, "--quarantine"),
    ];
    let kept = [
        (req.input, "--in"),
        (req.key_path, "--key"),
        (req.vault_key_path, "--vault-key"),
    ];
    for (i, (path, flag)) in replaced.iter().enumerate() {
        for (other, other_flag) in kept.iter().chain(&replaced[i + 1..]) {
            refuse_overlap(path, flag, other, other_flag)?;
        }
    }
    Ok(())
}

/// An earlier output or quarantine (`flag`) is replaced whole: anything but `ours`
/// kept in it would go with it (regressions: feedback imported into `<out>/feedback`
/// was silently deleted; `--quarantine runs` deleted every run folder).
fn refuse_what_it_did_not_write(
    folder: &Path,
    flag: &str,
    ours: Vec<String>,
    hint: &str,
) -> Result<()> {
    for entry in std::fs::read_dir(folder).map_err(io_at(folder, "listing"))? {
        let name = entry.map_err(io_at(folder, "listing"))?.file_name();
        let name = name.to_string_lossy();
        if !ours.iter().any(|o| *o == name) {
            return Err(bad_input!(
                "{flag} {}: holds {name}, which pseudonymise did not write; it is replaced whole, so name a new or empty folder, or move {name} out of it first{hint}",
                folder.display()
            ));
        }
    }
    Ok(())
}

pub async fn pseudonymise(req: &Request<'_>) -> Result<Summary> {
    let quarantine = req
        .quarantine
        .map(Path::to_path_buf)
        .unwrap_or_else(|| default_quarantine(req.vault));
    let mut staged = Staged {
        moves: Vec::new(),
        locks: Vec::new(),
        committed: false,
    };
    check_targets(req, &quarantine)?;
    for target in [req.out, quarantine.as_path(), req.vault] {
        staged.recover(target)?;
    }
    check_contents(req, &quarantine)?;
    let (key, vault_key) = prepare(req, &quarantine)?;
    let ctx = new_context(&SessionOptions::default())?;
    ctx.register_udf(pseudonymise_udf(key));
    ctx.register_udf(problem_udf());
    ctx.register_udf(normalised_udf());

    let out = staged.path(req.out);
    let qdir = staged.path(&quarantine);
    std::fs::create_dir_all(&out).map_err(io_at(&out, "creating"))?;
    // The gate-side quarantine holds NHS numbers: its owner's only.
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&qdir)
        .map_err(io_at(&qdir, "creating"))?;

    // Valid rows of every table, pseudonymised, before opt-outs.
    let mut tables = BTreeMap::new();
    let mut summary = Summary {
        quarantine_dir: quarantine.clone(),
        ..Default::default()
    };
    for table in EXTRACT_TABLES.iter() {
        let Some(location) = locate(req.input, table.name) else {
            if table.required {
                return Err(bad_input!(
                    "--in {}: no {} extract ({}.parquet or a folder {}/)",
                    req.input.display(),
                    table.name,
                    table.name,
                    table.name
                ));
            }
            continue;
        };
        let (s, df) = pseudonymised_table(&ctx, table, &location, &qdir).await?;
        let what = format!("--in {}: the {} extract", req.input.display(), table.name);
        let empty_optouts = if req.allow_empty_optouts {
            EmptyOptOuts::Allowed
        } else {
            EmptyOptOuts::RefusedUnless("run pseudonymise with --allow-empty-optouts")
        };
        refuse_empty(table, s.rows_read, &what, empty_optouts)?;
        if table.name == OPTOUTS.name {
            refuse_unreadable_optouts(&s, &location)?;
        } else {
            refuse_wholly_unreadable(table, &s, &what)?;
        }
        summary.tables.insert(table.name.to_string(), s);
        tables.insert(table.name, df);
    }
    let vault = staged.path(req.vault);
    write_tables(tables, &out, &vault, &vault_key, &mut summary).await?;
    let summary_file = out.join(SUMMARY_FILE);
    std::fs::write(&summary_file, serde_json::to_vec_pretty(&summary)?)
        .map_err(io_at(&summary_file, "writing"))?;
    staged.commit()?;
    Ok(summary)
}

/// An objection whose NHS number cannot be read would match no one, and the objector
/// would be pseudonymised, kept in the vault and named by the gate (regression: such
/// rows were quarantined and the command went on, exit 0). So, as a run refuses an
/// opt-out it cannot use, nothing is written. Names the reasons, never the values.
fn refuse_unreadable_optouts(s: &TableSummary, location: &Path) -> Result<()> {
    let n: u64 = s.quarantined.values().sum();
    if n == 0 {
        return Ok(());
    }
    Err(bad_input!(
        "{}: {n} opt-out rows have an NHS number that cannot be read ({}); an objection that matches no one would not be honoured, so nothing was written. Correct those rows' nhs_number in the extract (or remove rows that are not objections) and run pseudonymise again",
        location.display(),
        s.reasons()
    ))
}

/// A required extract none of whose NHS numbers can be read is a broken extract: it
/// would replace the vault and the analysts' table with empty ones, as a zero-row one
/// did (regression, exit 0).
fn refuse_wholly_unreadable(table: &Table, s: &TableSummary, what: &str) -> Result<()> {
    let quarantined: u64 = s.quarantined.values().sum();
    if !table.required || s.rows_read == 0 || quarantined < s.rows_read {
        return Ok(());
    }
    Err(bad_input!(
        "{what}: none of its {} rows has an NHS number that can be read ({}); nothing was written. Check the extract's nhs_number column",
        s.rows_read,
        s.reasons()
    ))
}

/// One extract: rows with a bad NHS number to the gate-side quarantine, the rest with
/// their pseudo_id (and, for patients, the identity the vault keeps).
async fn pseudonymised_table(
    ctx: &SessionContext,
    table: &'static Table,
    location: &Path,
    qdir: &Path,
) -> Result<(TableSummary, DataFrame)> {
    let (found, df) = read_extract(ctx, table, &location.to_string_lossy()).await?;
    let mut s = TableSummary {
        rows_read: found.rows,
        ..Default::default()
    };
    let df = df.with_column(
        "reason",
        call(ctx, "nhs_number_problem", ident("nhs_number"))?,
    )?;
    let bad = df.clone().filter(col("reason").is_not_null())?;
    let qfile = qdir.join(format!("{}.parquet", table.name));
    if crate::outputs::write_parquet(bad, &qfile).await? > 0 {
        durable::owner_only(&qfile)?;
        s.quarantined = reasons(ctx, &qfile).await?;
    } else {
        std::fs::remove_file(&qfile)?;
    }
    let mut columns = Vec::new();
    for c in table.columns {
        columns.push(match c.name {
            "pseudo_id" => call(ctx, "pseudonymise", ident("nhs_number"))?.alias("pseudo_id"),
            name => ident(name),
        });
    }
    if table.name == PATIENTS.name {
        // Kept for the vault; dropped before anything reaches the analysts.
        columns.push(call(ctx, "nhs_number", ident("nhs_number"))?.alias("nhs_number"));
        columns.extend(IDENTITY_COLUMNS.iter().map(|c| ident(c.0)));
    }
    Ok((s, df.filter(col("reason").is_null())?.select(columns)?))
}

/// The analysts' tables and the vault: the pseudonymised opt-out list is written as
/// is and applied to every other table first.
async fn write_tables(
    mut tables: BTreeMap<&'static str, DataFrame>,
    out: &Path,
    vault: &Path,
    vault_key: &Key,
    summary: &mut Summary,
) -> Result<()> {
    let optout_list = tables.remove(OPTOUTS.name).expect("optouts is required");
    let path = out.join(table_path(OPTOUTS.name));
    let n = crate::outputs::write_parquet(optout_list.clone(), &path).await?;
    summary.tables.get_mut(OPTOUTS.name).unwrap().rows_written = n;
    let optout_list = OptOuts::new(optout_list);
    for (name, df) in tables {
        let df = optouts::apply(RawPersonTable::new(df), &optout_list)?;
        let contract = crate::ingest::contract::table(name).expect("an extract table");
        let data = df.clone().select(
            contract
                .columns
                .iter()
                .map(|c| ident(c.name))
                .collect::<Vec<_>>(),
        )?;
        let n = write_table(data, &out.join(table_path(name))).await?;
        let s = summary.tables.get_mut(name).unwrap();
        s.rows_written = n;
        let quarantined: u64 = s.quarantined.values().sum();
        s.rows_withheld_optout = s.rows_read - quarantined - n;
        if name == PATIENTS.name {
            summary.vault_patients = write_vault(df, vault, vault_key).await?;
        }
    }
    Ok(())
}

/// The vault: one row per person with exactly one patients row (duplicates are
/// quarantined by every run, so no one is released under a doubtful identity).
async fn write_vault(patients: DataFrame, path: &Path, key: &Key) -> Result<u64> {
    let unique = patients
        .clone()
        .aggregate(vec![ident("pseudo_id")], vec![count(lit(1)).alias("n")])?
        .filter(col("n").eq(lit(1)))?
        .select(vec![ident("pseudo_id").alias("__unique")])?;
    let schema = vault::schema();
    let rows = patients
        .join(
            unique,
            JoinType::LeftSemi,
            &["pseudo_id"],
            &["__unique"],
            None,
        )?
        .select(
            schema
                .fields()
                .iter()
                .map(|f| ident(f.name()))
                .collect::<Vec<_>>(),
        )?;
    let mut writer = vault::Writer::create(path, key)?;
    let mut stream = rows.execute_stream().await?;
    while let Some(batch) = stream.next().await {
        writer.write(&batch?)?;
    }
    writer.finish()
}

/// A table as one file, or as a folder of files for the big event tables.
async fn write_table(df: DataFrame, path: &Path) -> Result<u64> {
    if table_path_is_folder(path) {
        std::fs::create_dir_all(path)?;
        let batches = df
            .write_parquet(
                &format!("{}/", path.to_string_lossy()),
                DataFrameWriteOptions::new(),
                None,
            )
            .await?;
        Ok(batches
            .iter()
            .filter_map(|b| {
                b.column(0)
                    .as_any()
                    .downcast_ref::<datafusion::arrow::array::UInt64Array>()
                    .map(|c| c.values().iter().sum::<u64>())
            })
            .sum())
    } else {
        crate::outputs::write_parquet(df, path).await
    }
}

fn table_path_is_folder(path: &Path) -> bool {
    path.extension().is_none()
}

/// Reason -> rows of a quarantine file.
async fn reasons(ctx: &SessionContext, file: &Path) -> Result<BTreeMap<String, u64>> {
    let df = ctx
        .read_parquet(
            file.to_string_lossy().as_ref(),
            datafusion::prelude::ParquetReadOptions::default(),
        )
        .await?
        .aggregate(vec![ident("reason")], vec![count(lit(1)).alias("n")])?;
    let mut out = BTreeMap::new();
    for b in df.collect().await? {
        let r = b.column(0).as_any().downcast_ref::<StringArray>();
        let n = b
            .column(1)
            .as_any()
            .downcast_ref::<datafusion::arrow::array::Int64Array>();
        let (Some(r), Some(n)) = (r, n) else {
            return Err(Error::failed("quarantine counts have unexpected types"));
        };
        for i in 0..b.num_rows() {
            out.insert(r.value(i).to_string(), n.value(i) as u64);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::logical_expr::ColumnarValue;

    fn apply(udf: &ScalarUDF, values: Vec<Option<&str>>) -> Vec<Option<String>> {
        let n = values.len();
        let arg = ColumnarValue::Array(Arc::new(StringArray::from(values)));
        let args = datafusion::logical_expr::ScalarFunctionArgs {
            args: vec![arg],
            arg_fields: vec![Arc::new(datafusion::arrow::datatypes::Field::new(
                "a",
                DataType::Utf8,
                true,
            ))],
            number_rows: n,
            return_field: Arc::new(datafusion::arrow::datatypes::Field::new(
                "r",
                DataType::Utf8,
                true,
            )),
            config_options: Arc::new(Default::default()),
        };
        let out = udf.invoke_with_args(args).unwrap().to_array(n).unwrap();
        let s = out.as_any().downcast_ref::<StringArray>().unwrap();
        s.iter().map(|v| v.map(String::from)).collect()
    }

    #[test]
    fn udfs_judge_and_pseudonymise_each_row_even_when_repeated() {
        let key = Key::from_bytes([1; 32]);
        let rows = vec![
            Some("943 476 5919"),
            Some("9434765919"),
            None,
            Some("943 476 5919"),
            Some("9434765911"),
            Some("94347659"),
            None,
        ];
        assert_eq!(
            apply(&problem_udf(), rows.clone()),
            vec![
                None,
                None,
                Some("null_nhs_number".into()),
                None,
                Some("invalid_nhs_number_check_digit".into()),
                Some("malformed_nhs_number".into()),
                Some("null_nhs_number".into()),
            ]
        );
        let p = pseudo_id(&key, "9434765919");
        assert_eq!(
            apply(&pseudonymise_udf(key), rows.clone()),
            vec![
                Some(p.clone()),
                Some(p.clone()),
                None,
                Some(p),
                None,
                None,
                None
            ]
        );
        assert_eq!(
            apply(&normalised_udf(), rows)[..2],
            [Some("9434765919".into()), Some("9434765919".into())]
        );
    }

    #[test]
    fn default_quarantine_sits_beside_the_vault() {
        assert_eq!(
            default_quarantine(Path::new("/gate/vault.parquet")),
            Path::new("/gate/vault-quarantine")
        );
    }
}
