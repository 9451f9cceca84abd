//! Ingest: find each input's Parquet files through `object_store` (the same code path
//! for local folders, `file://` and cloud URLs), check every file's schema against
//! the contract, apply the safe casts, and register the tables with opt-outs applied.

pub mod contract;
pub mod recheck;
pub mod stores;
pub mod tables;
pub mod tee;
pub mod validate;

use crate::bad_input;
use crate::error::Error;
use crate::error::Result;
use crate::governance::optouts::{self, OptOuts, RawPersonTable};
use contract::{Column, Table};
use datafusion::arrow::datatypes::{Field, Schema};
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
use datafusion::datasource::physical_plan::parquet::metadata::DFParquetMetadata;
use datafusion::parquet::arrow::parquet_to_arrow_schema;
use datafusion::prelude::{DataFrame, SessionContext, cast, ident, lit};
use futures::TryStreamExt;
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::sync::Arc;

#[derive(Debug, Clone, Serialize)]
pub struct InputFile {
    pub path: String,
    pub bytes: u64,
    pub rows: u64,
    pub modified: String,
    /// SHA-256 of the object's location, size, modification time and e-tag: cheap to
    /// take on any object store, and changes whenever the file is replaced.
    pub fingerprint: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct InputTable {
    pub table: &'static str,
    pub location: String,
    pub files: Vec<InputFile>,
    pub rows: u64,
    /// Column -> type as found in the first file (before safe casts).
    pub found_types: BTreeMap<String, String>,
    /// The first and last days of the table's event date in its files' statistics
    /// (any row, valid or not), when they hold them: the time the extract covers.
    #[serde(skip)]
    pub event_span: Option<(chrono::NaiveDate, chrono::NaiveDate)>,
}

/// What `register_inputs` read; the data itself is registered in the session.
#[derive(Debug, Clone, Serialize)]
pub struct Inputs {
    pub tables: Vec<InputTable>,
}

impl Inputs {
    pub fn get(&self, name: &str) -> Option<&InputTable> {
        self.tables.iter().find(|t| t.table == name)
    }
}

/// Check and register every input of a job as `input_<table>`, with opt-outs applied.
/// This is the only function that makes person-level data visible to a session.
pub async fn register_inputs(
    ctx: &SessionContext,
    inputs: &BTreeMap<String, String>,
    allow_empty_optouts: bool,
) -> Result<Inputs> {
    let mut found = Vec::new();
    let mut raw = BTreeMap::new();
    for table in contract::TABLES.iter() {
        let Some(location) = inputs.get(table.name) else {
            if table.required {
                return Err(bad_input!(
                    "input '{}' is required; name it under [inputs]",
                    table.name
                ));
            }
            continue;
        };
        let (summary, df) = read_table(ctx, table.name, table.columns, location).await?;
        let what = format!("input {} ({location})", table.name);
        let empty_optouts = if allow_empty_optouts {
            EmptyOptOuts::Allowed
        } else {
            EmptyOptOuts::RefusedUnless("set allow_empty_optouts = true under [job]")
        };
        refuse_empty(table, summary.rows, &what, empty_optouts)?;
        found.push(summary);
        raw.insert(table.name, df);
    }

    let optouts = OptOuts::new(
        raw.remove(contract::OPTOUTS.name)
            .expect("optouts is required"),
    );
    let location = &inputs[contract::OPTOUTS.name];
    optouts
        .check(&format!("input {} ({location})", contract::OPTOUTS.name))
        .await?;
    for (name, df) in raw {
        let df = optouts::apply(RawPersonTable::new(df), &optouts)?;
        ctx.register_table(tables::input(name), df.into_view())?;
    }
    Ok(Inputs { tables: found })
}

/// Whether an empty opt-out list may be used, and if not, how the user allows it.
#[derive(Debug, Clone, Copy)]
pub(crate) enum EmptyOptOuts {
    Allowed,
    RefusedUnless(&'static str),
}

/// A required table with no rows is a failed extract, not data: refused, naming it
/// (`what`). An empty opt-out list is refused unless allowed, in a run and in
/// `pseudonymise` alike: it would let every objector through (regression:
/// `pseudonymise` took an empty list, exit 0).
pub(crate) fn refuse_empty(
    table: &Table,
    rows: u64,
    what: &str,
    empty_optouts: EmptyOptOuts,
) -> Result<()> {
    if rows > 0 || !table.required {
        return Ok(());
    }
    let hint = match empty_optouts {
        _ if table.name != contract::OPTOUTS.name => "check that the extract ran".to_string(),
        EmptyOptOuts::Allowed => return Ok(()),
        EmptyOptOuts::RefusedUnless(how) => format!(
            "an empty opt-out list is almost always a failed extract; if there truly are none, {how}"
        ),
    };
    Err(bad_input!("{what} has no rows: {hint}"))
}

/// Check and open one identifiable extract, for `pseudonymise` on the gate's side:
/// `nhs_number` in place of `pseudo_id`, identity columns on patients.
pub(crate) async fn read_extract(
    ctx: &SessionContext,
    table: &Table,
    location: &str,
) -> Result<(InputTable, DataFrame)> {
    read_table(ctx, table.name, &table.identifiable_columns(), location).await
}

/// One input's Parquet files, in name order.
struct Listed {
    url: ListingTableUrl,
    store: Arc<dyn object_store::ObjectStore>,
    /// ".parquet" for a folder or glob, "" for a named file.
    ext: &'static str,
    metas: Vec<object_store::ObjectMeta>,
}

async fn list_files(ctx: &SessionContext, what: &str, location: &str) -> Result<Listed> {
    let local = !crate::job::is_url(location);
    if local && !location.contains(['*', '?', '[']) && !std::path::Path::new(location).exists() {
        return Err(bad_input!(
            "{what}: no such file or folder; fix the path under [inputs] in the job file"
        ));
    }
    let url = stores::listing_url(location)
        .map_err(|e| bad_input!("{what}: not a valid path or URL ({e})"))?;
    let store = ctx.runtime_env().object_store(url.object_store()).map_err(|_| {
        bad_input!(
            "{what}: this build of riskstrat cannot read '{}' URLs; use a local path or file:// URL",
            url.scheme()
        )
    })?;
    // A folder or glob means "its .parquet files"; a single named file is taken as is.
    let ext = if url.is_collection() || url.get_glob().is_some() {
        ".parquet"
    } else {
        ""
    };
    let state = ctx.state();
    let cannot = |e: datafusion::error::DataFusionError| {
        bad_input!(
            "{what}: cannot list it: {}",
            stores::explain(location, &e.to_string())
        )
    };
    let mut metas: Vec<_> = url
        .list_all_files(&state, store.as_ref(), ext)
        .await
        .map_err(cannot)?
        .try_collect()
        .await
        .map_err(cannot)?;
    metas.sort_by(|a, b| a.location.cmp(&b.location));
    if metas.is_empty() {
        return Err(bad_input!("{what}: no .parquet files found there"));
    }
    Ok(Listed {
        url,
        store,
        ext,
        metas,
    })
}

/// After a run or validation failed on a Parquet decoding error, find the input file
/// that cannot be decoded and name it; any other error is returned as it is. Only the
/// contract's columns are decoded: the others are never read.
pub async fn name_damaged_input(inputs: &BTreeMap<String, String>, e: Error) -> Error {
    if !crate::damage::error_is_decoding(&e) {
        return e;
    }
    let Ok(ctx) = crate::session::new_context(&Default::default()) else {
        return e;
    };
    for table in contract::TABLES.iter() {
        let Some(location) = inputs.get(table.name) else {
            continue;
        };
        let what = format!("input {} ({location})", table.name);
        let Ok(listed) = list_files(&ctx, &what, location).await else {
            continue;
        };
        let columns: Vec<&str> = table.columns.iter().map(|c| c.name).collect();
        let urls = listed.metas.iter().map(|m| listed_url(&listed.url, m));
        if let Some((url, err)) = crate::damage::first_damaged(&ctx, urls, Some(&columns)).await {
            let file = url
                .strip_prefix(listed.url.object_store().as_str())
                .unwrap_or(&url);
            return damaged(&what, file, err);
        }
    }
    e
}

fn damaged(what: &str, file: &str, e: datafusion::error::DataFusionError) -> Error {
    bad_input!(
        "{what}: file {file} cannot be decoded: its footer reads but a data page is damaged ({}); replace it with a good copy (export the extract again)",
        e.strip_backtrace()
    )
    .with_source(e)
}

/// List, check and open one input. Every file's footer is read here, so that a
/// truncated or non-Parquet file is reported by name before any work starts.
async fn read_table(
    ctx: &SessionContext,
    name: &'static str,
    columns: &[Column],
    location: &str,
) -> Result<(InputTable, DataFrame)> {
    let what = format!("input {name} ({location})");
    let listed = list_files(ctx, &what, location).await?;
    let mut files = Vec::with_capacity(listed.metas.len());
    let mut table_fields: Option<Vec<Field>> = None;
    let mut found_types = BTreeMap::new();
    let event_date = contract::table(name).and_then(|t| t.event_date);
    let mut event_span: Option<(i32, i32)> = None;
    for meta in &listed.metas {
        let (file, fields, span) =
            check_file(ctx, columns, &listed, meta, &what, event_date).await?;
        event_span = match (event_span, span) {
            (Some((a, b)), Some((c, d))) => Some((a.min(c), b.max(d))),
            (x, y) => x.or(y),
        };
        match &table_fields {
            None => {
                for f in &fields {
                    found_types.insert(f.name().clone(), f.data_type().to_string());
                }
                table_fields = Some(fields);
            }
            Some(first) => same_types(first, &fields, &what, &file.path)?,
        }
        files.push(file);
    }
    let rows = files.iter().map(|f| f.rows).sum();
    let fields = table_fields.expect("at least one file");
    let df = open_listed(ctx, listed, fields, columns)?;
    Ok((
        InputTable {
            table: name,
            location: location.to_string(),
            files,
            rows,
            found_types,
            event_span: event_span
                .map(|(a, b)| (crate::sql::from_date32(a), crate::sql::from_date32(b))),
        },
        df,
    ))
}

/// Read one listed file's footer and check its schema against the contract (and the
/// Int64 values of Int32 columns): the file as the manifest records it, and its
/// fields as found. Footers read here go into the session's metadata cache: the scans
/// reuse them.
async fn check_file(
    ctx: &SessionContext,
    columns: &[Column],
    listed: &Listed,
    meta: &object_store::ObjectMeta,
    what: &str,
    event_date: Option<&str>,
) -> Result<(InputFile, Vec<Field>, Option<(i32, i32)>)> {
    let store = listed.store.as_ref();
    let cache = ctx.runtime_env().cache_manager.get_file_metadata_cache();
    let file = file_name(&listed.url, meta);
    let unreadable = |e: &dyn std::fmt::Display| {
        bad_input!(
            "{what}: file {file} is not a readable Parquet file ({e}); it may be truncated or another format: replace it with a complete Parquet file"
        )
    };
    let metadata = match DFParquetMetadata::new(store, meta)
        .with_file_metadata_cache(Some(cache))
        .fetch_metadata()
        .await
    {
        Ok(m) => m,
        Err(e) => {
            return Err(refuse_secret(store, meta, what, &file)
                .await
                .unwrap_or_else(|| unreadable(&e)));
        }
    };
    let fm = metadata.file_metadata();
    let schema = parquet_to_arrow_schema(fm.schema_descr(), fm.key_value_metadata())
        .map_err(|e| unreadable(&e))?;
    let rows = fm.num_rows().max(0) as u64;
    let fields = check_schema(columns, &schema, &file, what)?;
    let url = listed_url(&listed.url, meta);
    check_int32_range(ctx, columns, &fields, &metadata, &url, &file, what).await?;
    let input = InputFile {
        path: file,
        bytes: meta.size,
        rows,
        modified: meta.last_modified.to_rfc3339(),
        fingerprint: fingerprint(meta),
    };
    let span = event_date.and_then(|c| span_in(&metadata, c));
    Ok((input, fields, span))
}

/// The smallest and largest values of the Date32 column `column` in a file's
/// row-group statistics, as days since 1970: read from the footer, no data.
fn span_in(
    metadata: &datafusion::parquet::file::metadata::ParquetMetaData,
    column: &str,
) -> Option<(i32, i32)> {
    use datafusion::parquet::file::statistics::Statistics;
    let descr = metadata.file_metadata().schema_descr();
    let i = (0..descr.num_columns()).find(|&i| descr.column(i).path().string() == column)?;
    let spans = metadata
        .row_groups()
        .iter()
        .filter_map(|g| match g.column(i).statistics() {
            Some(Statistics::Int32(s)) => Some((*s.min_opt()?, *s.max_opt()?)),
            _ => None,
        });
    spans.reduce(|(a, b), (c, d)| (a.min(c), b.max(d)))
}

/// Every file of an input must have the types of the first.
fn same_types(first: &[Field], fields: &[Field], what: &str, file: &str) -> Result<()> {
    for (a, b) in first.iter().zip(fields) {
        if a.data_type() != b.data_type() {
            return Err(bad_input!(
                "{what}: file {file}, column '{}' is {} but earlier files have {}; write every file with the same types",
                a.name(),
                b.data_type(),
                a.data_type()
            ));
        }
    }
    Ok(())
}

/// The listed files as one table of the found types, its columns cast to the
/// contract's.
fn open_listed(
    ctx: &SessionContext,
    listed: Listed,
    fields: Vec<Field>,
    columns: &[Column],
) -> Result<DataFrame> {
    let schema = Arc::new(Schema::new(fields));
    let options =
        ListingOptions::new(Arc::new(ParquetFormat::default())).with_file_extension(listed.ext);
    let config = ListingTableConfig::new(listed.url)
        .with_listing_options(options)
        .with_schema(schema);
    let provider = ListingTable::try_new(config)?;
    let df = ctx.read_table(Arc::new(provider))?.select(
        columns
            .iter()
            .map(|c| cast(ident(c.name), c.ty.arrow()).alias(c.name))
            .collect::<Vec<_>>(),
    )?;
    Ok(df)
}

/// A URL for one listed file, readable on its own.
fn listed_url(url: &ListingTableUrl, meta: &object_store::ObjectMeta) -> String {
    format!("{}{}", url.object_store().as_str(), meta.location)
}

/// One listed file as its user would name it: a local file by its absolute path
/// (`/data/x.parquet`, where the store's own path drops the leading `/`), a file in
/// an object store by its URL.
pub(crate) fn file_name(url: &ListingTableUrl, meta: &object_store::ObjectMeta) -> String {
    let full = listed_url(url, meta);
    match full.strip_prefix("file://") {
        Some(local) => local.to_string(),
        None => full,
    }
}

/// What tells a file read at a run's start from the same name rewritten since:
/// location, size, modification time and e-tag, hashed.
pub(crate) fn fingerprint(meta: &object_store::ObjectMeta) -> String {
    let mut h = Sha256::new();
    h.update(format!(
        "{}|{}|{}|{:?}",
        meta.location, meta.size, meta.last_modified, meta.e_tag
    ));
    hex::encode(h.finalize())
}

/// Int64 is a safe cast to the contract's Int32 only when every value fits. Values
/// that do not are refused by file and column, not quarantined: a year of birth or an
/// item count beyond two thousand million is no data entry slip but a broken or
/// mis-mapped extract (whose in-range values cannot be trusted either), and
/// quarantine, which keeps the contract's types, could not hold the value. Decided on
/// the footer's statistics when every row group has them; otherwise by a scan of
/// that column alone.
async fn check_int32_range(
    ctx: &SessionContext,
    columns: &[Column],
    fields: &[Field],
    metadata: &datafusion::parquet::file::metadata::ParquetMetaData,
    file_url: &str,
    file: &str,
    what: &str,
) -> Result<()> {
    use datafusion::arrow::datatypes::DataType;
    use datafusion::parquet::file::statistics::Statistics;
    let (lo, hi) = (i32::MIN as i64, i32::MAX as i64);
    let leaves = metadata.file_metadata().schema_descr().columns();
    for (c, f) in columns.iter().zip(fields) {
        if c.ty != contract::ColType::Int32 || f.data_type() != &DataType::Int64 {
            continue;
        }
        let out_of_range = || {
            bad_input!(
                "{what}: file {file}, column '{}' holds values that do not fit Int32, the contract's type (Int64 is accepted only when every value fits); such values are not plausible {}s: fix the extract, or write the column as Int32",
                c.name,
                c.name
            )
        };
        let leaf = leaves.iter().position(|l| l.path().string() == c.name);
        let mut decided = leaf.is_some();
        for rg in metadata.row_groups() {
            let Some(i) = leaf else { break };
            let chunk = rg.column(i);
            match chunk.statistics() {
                Some(Statistics::Int64(s)) => match (s.min_opt(), s.max_opt()) {
                    (Some(min), Some(max)) => {
                        if *min < lo || *max > hi {
                            return Err(out_of_range());
                        }
                    }
                    _ if s.null_count_opt() == Some(chunk.num_values() as u64) => {}
                    _ => decided = false,
                },
                _ => decided = false,
            }
        }
        if decided {
            continue;
        }
        let scan = async {
            crate::damage::one_file(ctx, file_url)
                .await?
                .select(vec![ident(c.name)])?
                .filter(ident(c.name).lt(lit(lo)).or(ident(c.name).gt(lit(hi))))?
                .limit(0, Some(1))?
                .count()
                .await
        };
        match scan.await {
            Ok(0) => {}
            Ok(_) => return Err(out_of_range()),
            Err(e) if crate::damage::caused_by_decoding(&e) => return Err(damaged(what, file, e)),
            Err(e) => return Err(Error::from(e).context(format!("{what}: file {file}"))),
        }
    }
    Ok(())
}

/// Role separation: the analyst's side never opens the identity vault or reads a key.
/// A file that is one of them is refused as such, not as merely "unreadable".
async fn refuse_secret(
    store: &dyn object_store::ObjectStore,
    meta: &object_store::ObjectMeta,
    what: &str,
    file: &str,
) -> Option<crate::error::Error> {
    let size = meta.size;
    let got = store
        .get_ranges(
            &meta.location,
            &[0..size.min(256), size.saturating_sub(4)..size],
        )
        .await
        .ok()?;
    let (head, tail) = (&got[0], &got[1]);
    if size >= 8 && &tail[..] == crate::governance::vault::ENCRYPTED_PARQUET_MAGIC {
        return Some(bad_input!(
            "{what}: file {file} is encrypted Parquet (the identity vault?): jobs never open the vault, only the gate (`riskstrat reidentify`) does; remove it from [inputs]"
        ));
    }
    let text = std::str::from_utf8(head).ok()?.trim();
    if text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Some(bad_input!(
            "{what}: file {file} looks like a key file: jobs never take keys (they belong to the gate); remove it from [inputs] and keep keys outside the analysts' folders"
        ));
    }
    None
}

/// The contract's columns as found in one file, or an error naming the file, column,
/// expected and found types.
fn check_schema(columns: &[Column], schema: &Schema, file: &str, what: &str) -> Result<Vec<Field>> {
    columns
        .iter()
        .map(|c| {
            let field = schema.field_with_name(c.name).map_err(|_| {
                let names: Vec<_> = schema.fields().iter().map(|f| f.name().as_str()).collect();
                bad_input!(
                    "{what}: file {file} has no column '{}' (expected {}); it has: {}",
                    c.name,
                    c.ty.name(),
                    names.join(", ")
                )
            })?;
            if !c.ty.accepts(field.data_type()) {
                return Err(bad_input!(
                    "{what}: file {file}, column '{}' is {} but the contract needs {}{}; convert the column when writing the extract",
                    c.name,
                    field.data_type(),
                    c.ty.name(),
                    safe_cast_hint(c.ty)
                ));
            }
            Ok(Field::new(c.name, field.data_type().clone(), true))
        })
        .collect()
}

fn safe_cast_hint(ty: contract::ColType) -> &'static str {
    use contract::ColType::*;
    match ty {
        Utf8 => " (LargeUtf8 and Utf8View are also accepted)",
        Int32 => " (Int64 is also accepted)",
        Date32 => " (Timestamp is also accepted)",
        Float64 | Utf8List => "",
    }
}
