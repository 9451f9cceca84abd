//! Feedback from care teams: their returned list (NHS number + outcome) becomes
//! pseudonymised rows the analysts' runs can use, so that support stops where it is
//! not wanted. This runs on the gate's side: it needs the pseudonymisation key and the
//! vault. A team's feedback counts only for its own patients: people the vault places
//! at one of its practices (regression: any team could mark anyone `declined`, and so
//! take them off every team's list); objectors, whom the vault does not hold, are
//! never written. No NHS number is written, printed or audited; rejected rows are
//! reported by line number.

use crate::bad_input;
use crate::durable::{self, io_at};
use crate::error::{Error, Result};
use crate::governance::audit::{self, Record};
use crate::governance::pseudonym::{Key, normalise_nhs_number, pseudo_id};
use crate::governance::teams::Registry;
use crate::ingest::contract::FEEDBACK;
use chrono::NaiveDate;
use datafusion::arrow::array::{Array, ArrayRef, Date32Array, RecordBatch, StringArray};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Outcomes a team may return; `enrolled` carries a service, written `enrolled:VW01`.
pub const OUTCOMES: &[&str] = &[
    "reviewed",
    "enrolled",
    "declined",
    "not_appropriate",
    "deceased",
    "moved_away",
];

/// Outcomes that take a person out of cohorts for a while.
pub const EXCLUDING: &[&str] = &["declined", "not_appropriate"];

#[derive(Debug, Clone, Default)]
pub struct ImportSummary {
    pub rows: usize,
    pub imported: usize,
    pub by_outcome: BTreeMap<String, usize>,
    /// (line number, reason); never the NHS number.
    pub rejected: Vec<(usize, String)>,
    pub file: PathBuf,
}

/// The longest service code a team may return (`VW01`): a code, not room for text
/// (regression: `enrolled:<a patient's name and date of birth>` was accepted and
/// shown to commissioners in `feedback_outcomes`).
pub const MAX_SERVICE_CODE: usize = 8;

/// `outcome` or `enrolled:<service>` -> (outcome, service).
pub fn parse_outcome(s: &str) -> Option<(String, Option<String>)> {
    let s = s.trim();
    if let Some(service) = s.strip_prefix("enrolled:") {
        let service = service.trim();
        let ok = !service.is_empty()
            && service.len() <= MAX_SERVICE_CODE
            && service.chars().all(|c| c.is_ascii_alphanumeric());
        return ok.then(|| ("enrolled".to_string(), Some(service.to_ascii_uppercase())));
    }
    (OUTCOMES.contains(&s) && s != "enrolled").then(|| (s.to_string(), None))
}

/// The file as text, without the byte-order mark Excel's "CSV UTF-8" starts with
/// (regression: the header then did not name nhs_number, and the file was refused).
fn csv_text(bytes: &[u8]) -> Option<&str> {
    let text = std::str::from_utf8(bytes).ok()?;
    Some(text.strip_prefix('\u{feff}').unwrap_or(text))
}

/// Split one CSV line, honouring double quotes.
fn csv_fields(line: &str) -> Vec<String> {
    let mut out = vec![String::new()];
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' if quoted && chars.peek() == Some(&'"') => {
                out.last_mut().unwrap().push('"');
                chars.next();
            }
            '"' => quoted = !quoted,
            ',' if !quoted => out.push(String::new()),
            c => out.last_mut().unwrap().push(c),
        }
    }
    out.into_iter().map(|f| f.trim().to_string()).collect()
}

pub struct ImportRequest<'a> {
    pub team: &'a str,
    pub importer: &'a str,
    pub input: &'a Path,
    pub key: &'a Key,
    pub key_path: &'a Path,
    /// The vault (as `vault::read` gives it): who the gate knows, at which practice.
    pub vault: &'a [RecordBatch],
    pub registry: &'a Registry,
    pub out_dir: &'a Path,
    pub audit_log: &'a Path,
    /// The day the team recorded the outcomes.
    pub recorded: NaiveDate,
}

/// Import one team's returned list. The audit record is written before the
/// pseudonymised file is put in place; if the audit cannot be written, nothing is.
pub fn import(req: &ImportRequest) -> Result<ImportSummary> {
    check_importer(req)?;
    let (out_dir, _lock) = prepare_out_dir(req)?;
    let bytes = std::fs::read(req.input)
        .map_err(|e| bad_input!("--in {}: cannot read it ({e})", req.input.display()))?;
    let (batch, mut summary) = pseudonymised_rows(req, &bytes)?;
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%S%3fZ");
    let name = format!("feedback-{}-{stamp}.parquet", req.team);
    let tmp = out_dir.join(format!(".{name}.tmp"));
    crate::outputs::write_batch(&tmp, &batch)?;
    durable::sync_tree(&tmp)?;
    let audited = audit::append(
        req.audit_log,
        Record {
            actor: req.importer.to_string(),
            action: audit::Action::FeedbackImport,
            team: Some(req.team.to_string()),
            patients: Some(summary.imported as u64),
            file_sha256: Some(hex::encode(Sha256::digest(&bytes))),
            detail: Some(format!(
                "rows={} rejected={}",
                summary.rows,
                summary.rejected.len()
            )),
            ..Default::default()
        },
    );
    if let Err(e) = audited {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::failed(format!("nothing imported: {e}")).with_source(e));
    }
    summary.file = out_dir.join(name);
    if let Err(e) = std::fs::rename(&tmp, &summary.file) {
        let _ = std::fs::remove_file(&tmp);
        return Err(io_at(&summary.file, "renaming into place")(e));
    }
    durable::sync_dir(&out_dir)?;
    Ok(summary)
}

/// The team exists and the importer is one of its members (a refusal is audited).
fn check_importer(req: &ImportRequest) -> Result<()> {
    let team = req
        .registry
        .team(req.team)
        .ok_or_else(|| bad_input!("--team {}: no such team in the registry", req.team))?;
    if team.members.iter().any(|m| m == req.importer) {
        return Ok(());
    }
    audit::append(
        req.audit_log,
        Record {
            actor: req.importer.to_string(),
            action: audit::Action::Refuse,
            team: Some(req.team.to_string()),
            detail: Some("feedback import: importer is not a member of the team".into()),
            ..Default::default()
        },
    )?;
    Err(bad_input!(
        "--importer {}: not a member of team {} (refusal audited)",
        req.importer,
        req.team
    ))
}

/// The output folder, made and locked for this importer, cleared of what a killed one
/// left; the key must not sit inside it.
fn prepare_out_dir(req: &ImportRequest) -> Result<(PathBuf, durable::TargetLock)> {
    std::fs::create_dir_all(req.out_dir)
        .map_err(|e| bad_input!("--out {}: cannot create it ({e})", req.out_dir.display()))?;
    let out_dir = req.out_dir.canonicalize()?;
    let lock = durable::lock_target(&out_dir)?;
    for e in std::fs::read_dir(&out_dir)
        .map_err(io_at(&out_dir, "reading"))?
        .flatten()
    {
        let n = e.file_name().to_string_lossy().into_owned();
        if n.starts_with(".feedback-") && n.ends_with(".tmp") {
            let _ = std::fs::remove_file(e.path());
        }
    }
    if let Ok(k) = req.key_path.canonicalize()
        && k.starts_with(&out_dir)
    {
        return Err(bad_input!(
            "--key {}: a key must not sit inside the data folder {}",
            req.key_path.display(),
            out_dir.display()
        ));
    }
    Ok((out_dir, lock))
}

/// The returned CSV as the contract's `feedback` rows (NHS numbers pseudonymised at
/// once), with the lines not imported and why.
fn pseudonymised_rows(req: &ImportRequest, bytes: &[u8]) -> Result<(RecordBatch, ImportSummary)> {
    let text = csv_text(bytes)
        .ok_or_else(|| bad_input!("--in {}: not UTF-8 text (CSV)", req.input.display()))?;
    let mut lines = text.lines();
    let header: Vec<String> = csv_fields(lines.next().unwrap_or(""))
        .iter()
        .map(|h| h.to_ascii_lowercase())
        .collect();
    let col = |name: &str| header.iter().position(|h| h == name);
    let (Some(nhs_col), Some(outcome_col)) = (col("nhs_number"), col("outcome")) else {
        return Err(bad_input!(
            "--in {}: the header must name the columns nhs_number and outcome",
            req.input.display()
        ));
    };
    let mut summary = ImportSummary::default();
    let mut rows: Vec<(usize, String, String, Option<String>)> = Vec::new();
    for (i, line) in lines.enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let n = i + 2;
        summary.rows += 1;
        let f = csv_fields(line);
        let nhs = match normalise_nhs_number(f.get(nhs_col).map_or("", String::as_str)) {
            Ok(n) => n,
            Err(p) => {
                summary.rejected.push((n, p.reason().to_string()));
                continue;
            }
        };
        let Some((outcome, service)) = parse_outcome(f.get(outcome_col).map_or("", String::as_str))
        else {
            summary.rejected.push((n, "invalid_outcome".into()));
            continue;
        };
        rows.push((n, pseudo_id(req.key, &nhs), outcome, service));
    }
    let practices = vault_practices(req.vault, rows.iter().map(|r| r.1.as_str()))?;
    let team = req
        .registry
        .team(req.team)
        .ok_or_else(|| bad_input!("--team {}: no such team in the registry", req.team))?;
    let (mut ids, mut outcomes, mut services) = (Vec::new(), Vec::new(), Vec::new());
    for (n, id, outcome, service) in &rows {
        let why = match practices.get(id.as_str()) {
            None => Some("not_in_the_vault"),
            Some(p) if !team.practices.iter().any(|t| Some(t) == p.as_ref()) => {
                Some("not_registered_with_the_team")
            }
            Some(_) => None,
        };
        if let Some(why) = why {
            summary.rejected.push((*n, why.to_string()));
            continue;
        }
        *summary.by_outcome.entry(outcome.clone()).or_default() += 1;
        ids.push(id.clone());
        outcomes.push(outcome.clone());
        services.push(service.clone());
    }
    summary.rejected.sort();
    summary.imported = ids.len();
    let day = crate::sql::date32(req.recorded);
    let n = ids.len();
    let batch = RecordBatch::try_new(
        FEEDBACK.schema(),
        vec![
            Arc::new(StringArray::from(ids)) as ArrayRef,
            Arc::new(StringArray::from(vec![req.team; n])),
            Arc::new(StringArray::from(outcomes)),
            Arc::new(StringArray::from(services)),
            Arc::new(Date32Array::from(vec![day; n])),
        ],
    )?;
    Ok((batch, summary))
}

/// The vault's practice of each of `ids` that it holds.
fn vault_practices<'a>(
    vault: &[RecordBatch],
    ids: impl Iterator<Item = &'a str>,
) -> Result<std::collections::HashMap<&'a str, Option<String>>> {
    let mut wanted: std::collections::HashSet<&str> = ids.collect();
    let mut found = std::collections::HashMap::new();
    for b in vault {
        let column = |name: &str| {
            b.column_by_name(name)
                .and_then(|c| c.as_any().downcast_ref::<StringArray>())
                .ok_or_else(|| Error::failed(format!("the vault has no text column {name}")))
        };
        let (ids, practice) = (column("pseudo_id")?, column("practice_code")?);
        for r in 0..b.num_rows() {
            if let Some(k) = wanted.take(ids.value(r)) {
                let p = practice.is_valid(r).then(|| practice.value(r).to_string());
                found.insert(k, p);
            }
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes() {
        assert_eq!(parse_outcome("declined"), Some(("declined".into(), None)));
        assert_eq!(
            parse_outcome("enrolled:vw01"),
            Some(("enrolled".into(), Some("VW01".into())))
        );
        assert_eq!(parse_outcome("enrolled"), None);
        assert_eq!(parse_outcome("enrolled:"), None);
        assert_eq!(parse_outcome("maybe"), None);
    }

    #[test]
    fn an_excel_byte_order_mark_is_not_part_of_the_header() {
        let text = csv_text("\u{feff}nhs_number,outcome\n".as_bytes()).unwrap();
        assert_eq!(csv_fields(text.lines().next().unwrap())[0], "nhs_number");
        assert!(csv_text(&[0xff, 0xfe]).is_none());
    }

    #[test]
    fn csv_quotes() {
        assert_eq!(
            csv_fields(r#""943 476 5919","declined",x"#),
            vec!["943 476 5919", "declined", "x"]
        );
        assert_eq!(csv_fields(r#"a,"b,c","d""e""#), vec!["a", "b,c", "d\"e"]);
    }
}
