//! The care-team registry (TOML, format in DATA_CONTRACT.md) and approvals. A team
//! serves ODS practice codes and has named members; an approval, made by the gate
//! operator, lets one team receive one cohort for one purpose until a date, and is a
//! record of the audit log itself.

use crate::bad_input;
use crate::error::Result;
use crate::governance::audit::{self, Record};
use chrono::NaiveDate;
use serde::Deserialize;
use std::path::Path;

/// The only purpose for which names may be released.
pub const DIRECT_CARE: &str = "direct-care";

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Team {
    pub id: String,
    pub name: String,
    pub practices: Vec<String>,
    pub members: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RegistryFile {
    team: Vec<Team>,
}

#[derive(Debug, Clone)]
pub struct Registry {
    pub teams: Vec<Team>,
}

impl Registry {
    pub fn load(path: &Path) -> Result<Registry> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            bad_input!(
                "care-team registry {}: cannot read it ({e})",
                path.display()
            )
        })?;
        let file: RegistryFile = toml::from_str(&text).map_err(|e| {
            bad_input!(
                "care-team registry {}: {}",
                path.display(),
                e.to_string().trim_end()
            )
        })?;
        for (i, t) in file.team.iter().enumerate() {
            if t.id.trim().is_empty() || t.practices.is_empty() || t.members.is_empty() {
                return Err(bad_input!(
                    "care-team registry {}: team {} needs an id, at least one practice and at least one member",
                    path.display(),
                    i + 1
                ));
            }
            if file.team[..i].iter().any(|o| o.id == t.id) {
                return Err(bad_input!(
                    "care-team registry {}: team id {} appears twice",
                    path.display(),
                    t.id
                ));
            }
        }
        Ok(Registry { teams: file.team })
    }

    pub fn team(&self, id: &str) -> Option<&Team> {
        self.teams.iter().find(|t| t.id == id)
    }
}

/// What an approval covers.
#[derive(Debug, Clone, PartialEq)]
pub struct Approval {
    pub team: String,
    /// The job whose runs it covers: a cohort's name alone could be any job's (and
    /// any SQL's, through `sql_dir`). None in approvals given before 0.6.2, which
    /// cover no run.
    pub job: Option<String>,
    pub cohort: String,
    pub purpose: String,
    pub expires: NaiveDate,
    pub approver: String,
}

impl Approval {
    /// Read an approval back from its audit record.
    pub fn from_record(r: &Record) -> Option<Approval> {
        if r.action != audit::Action::Approve {
            return None;
        }
        // Records written before `expires` was a field held it in `detail`.
        let expires = r.expires.or_else(|| {
            let old = r.detail.as_deref()?.strip_prefix("expires=")?;
            NaiveDate::parse_from_str(old, "%Y-%m-%d").ok()
        })?;
        Some(Approval {
            team: r.team.clone()?,
            job: r.job.clone(),
            cohort: r.cohort.clone()?,
            purpose: r.purpose.clone()?,
            expires,
            approver: r.actor.clone(),
        })
    }

    /// Whether this approval lets `team` receive `cohort` for `purpose` on `day`.
    pub fn covers(&self, team: &str, cohort: &str, purpose: &str, day: NaiveDate) -> bool {
        self.team == team && self.cohort == cohort && self.purpose == purpose && day <= self.expires
    }
}

/// The longest an approval may run: a year, after which it is renewed.
pub const MAX_APPROVAL_DAYS: u64 = 366;

/// Record an approval in the audit log, after checking it names a registered team, the
/// direct-care purpose, a date not yet past and at most [`MAX_APPROVAL_DAYS`] away,
/// and an approver from outside the team.
pub fn approve(
    registry: &Registry,
    log: &Path,
    approval: &Approval,
    today: NaiveDate,
) -> Result<Record> {
    if registry.team(&approval.team).is_none() {
        let ids: Vec<&str> = registry.teams.iter().map(|t| t.id.as_str()).collect();
        return Err(bad_input!(
            "--team {}: no such team in the registry (teams: {})",
            approval.team,
            ids.join(", ")
        ));
    }
    if approval.purpose != DIRECT_CARE {
        return Err(bad_input!(
            "--purpose {}: names are released only for {DIRECT_CARE}",
            approval.purpose
        ));
    }
    if approval.expires < today {
        return Err(bad_input!(
            "--expires {}: that date has passed",
            approval.expires
        ));
    }
    // Regression: an approval could run for ever (9999-12-31).
    if approval.expires > today + chrono::Days::new(MAX_APPROVAL_DAYS) {
        return Err(bad_input!(
            "--expires {}: an approval lasts at most {MAX_APPROVAL_DAYS} days (until {}); renew it when it ends",
            approval.expires,
            today + chrono::Days::new(MAX_APPROVAL_DAYS)
        ));
    }
    if approval.approver.trim().is_empty()
        || approval.cohort.trim().is_empty()
        || approval.job.as_deref().is_none_or(|j| j.trim().is_empty())
    {
        return Err(bad_input!(
            "--approver, --job and --cohort must not be empty"
        ));
    }
    // Regression: a team member could approve their own team's release.
    let team = registry.team(&approval.team).expect("checked above");
    if team.members.iter().any(|m| m == &approval.approver) {
        return Err(bad_input!(
            "--approver {}: a member of team {} cannot approve its own releases; the approval must come from outside the team (the Caldicott guardian or the IG lead)",
            approval.approver,
            approval.team
        ));
    }
    audit::append(
        log,
        Record {
            actor: approval.approver.clone(),
            action: audit::Action::Approve,
            team: Some(approval.team.clone()),
            purpose: Some(approval.purpose.clone()),
            cohort: Some(approval.cohort.clone()),
            job: approval.job.clone(),
            expires: Some(approval.expires),
            ..Default::default()
        },
    )
}

/// Approvals in an intact audit log, oldest first.
pub fn approvals(log: &Path) -> Result<Vec<Approval>> {
    Ok(audit::read(log)?
        .iter()
        .filter_map(Approval::from_record)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    const REGISTRY: &str = r#"
[[team]]
id = "T01"
name = "North locality complex care team"
practices = ["A81001", "A81002"]
members = ["gp.north.1", "nurse.north.2"]

[[team]]
id = "T02"
name = "South"
practices = ["A81003"]
members = ["gp.south.1"]
"#;

    fn setup(name: &str) -> (Registry, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!("rs-teams-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("teams.toml"), REGISTRY).unwrap();
        (
            Registry::load(&dir.join("teams.toml")).unwrap(),
            dir.join("audit.jsonl"),
        )
    }

    fn d(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
    }

    fn approval(team: &str) -> Approval {
        Approval {
            team: team.into(),
            job: Some("complex-needs".into()),
            cohort: "complex_needs".into(),
            purpose: DIRECT_CARE.into(),
            expires: d("2026-12-31"),
            approver: "caldicott.guardian".into(),
        }
    }

    #[test]
    fn approvals_are_audit_records_read_back_from_the_chain() {
        let (reg, log) = setup("ok");
        assert_eq!(reg.team("T01").unwrap().practices, vec!["A81001", "A81002"]);
        approve(&reg, &log, &approval("T01"), d("2026-11-22")).unwrap();
        let a = approvals(&log).unwrap();
        assert_eq!(a, vec![approval("T01")]);
        assert!(a[0].covers("T01", "complex_needs", DIRECT_CARE, d("2026-12-31")));
        assert!(!a[0].covers("T01", "complex_needs", DIRECT_CARE, d("2027-01-01")));
        assert!(!a[0].covers("T02", "complex_needs", DIRECT_CARE, d("2026-12-01")));
        assert!(!a[0].covers("T01", "high_cost", DIRECT_CARE, d("2026-12-01")));
    }

    #[test]
    fn expiry_is_a_date_field_and_old_records_holding_it_in_detail_still_read() {
        let (reg, log) = setup("fields");
        let r = approve(&reg, &log, &approval("T01"), d("2026-11-22")).unwrap();
        let line = std::fs::read_to_string(&log).unwrap();
        assert!(line.contains(r#""expires":"2026-12-31""#), "{line}");
        assert_eq!((r.expires, r.detail), (Some(d("2026-12-31")), None));
        // As approvals were written before the field existed.
        let old = Record {
            actor: "caldicott.guardian".into(),
            action: audit::Action::Approve,
            team: Some("T01".into()),
            purpose: Some(DIRECT_CARE.into()),
            cohort: Some("complex_needs".into()),
            detail: Some("expires=2026-12-31".into()),
            ..Default::default()
        };
        assert!(!serde_json::to_string(&old).unwrap().contains("\"expires\""));
        assert!(!serde_json::to_string(&old).unwrap().contains("\"job\""));
        // Read back as it was given: no job, so it covers no run (the gate's check 6).
        let before_jobs = Approval {
            job: None,
            ..approval("T01")
        };
        assert_eq!(Approval::from_record(&old), Some(before_jobs));
        let mut bad = old.clone();
        bad.detail = Some("expires=31/12/2026".into());
        assert_eq!(Approval::from_record(&bad), None);
    }

    #[test]
    fn bad_approvals_are_refused_and_not_written() {
        let (reg, log) = setup("bad");
        assert!(
            approve(&reg, &log, &approval("T09"), d("2026-11-22"))
                .unwrap_err()
                .message
                .contains("T09")
        );
        let mut a = approval("T01");
        a.purpose = "research".into();
        assert!(approve(&reg, &log, &a, d("2026-11-22")).is_err());
        let mut a = approval("T01");
        a.expires = d("2026-01-01");
        assert!(
            approve(&reg, &log, &a, d("2026-11-22"))
                .unwrap_err()
                .message
                .contains("passed")
        );
        assert!(!log.exists());
    }

    #[test]
    fn registry_rejects_unknown_keys_and_duplicate_ids() {
        let dir = std::env::temp_dir().join(format!("rs-teams-reg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("teams.toml");
        std::fs::write(
            &p,
            REGISTRY.replace("members = [\"gp.south.1\"]", "membres = [\"gp.south.1\"]"),
        )
        .unwrap();
        assert!(Registry::load(&p).unwrap_err().message.contains("membres"));
        std::fs::write(&p, REGISTRY.replace("\"T02\"", "\"T01\"")).unwrap();
        assert!(Registry::load(&p).unwrap_err().message.contains("twice"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
