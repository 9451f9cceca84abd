//! `riskstrat demo`: the whole flow on a synthetic population, each role in turn.
//!
//! 1. the gate: synthetic identifiable extracts -> `pseudonymise` -> pseudonymised
//!    tables for the analysts, and the encrypted vault;
//! 2. the analyst: `run` the default job;
//! 3. the gate operator: `approve` team T01 for the complex-needs cohort;
//! 4. the care team: `reidentify` (the gate) -> its list, with names;
//! 5. the care team's feedback: `feedback import`;
//! 6. the analyst: the run again, leaving out people who declined;
//! 7. the commissioner: service outcomes, through disclosure control.
//!
//! Nothing identifying is printed: counts and paths only.

use crate::error::{Error, Result};
use crate::gate::{self, Release};
use crate::governance::teams;
use crate::job::Job;
use crate::run::RunOutcome;
use crate::synth::{
    IDENTIFIABLE_DIR, KEYS_DIR, PSEUDONYMISED_DIR, SynthOptions, SynthSummary, generate,
};
use crate::{feedback, pseudonymise};
use chrono::NaiveDate;
use std::path::{Path, PathBuf};

/// The demo's fixed extract date and seed, so that every demo shows the same numbers.
pub const DEMO_AS_OF: (i32, u32, u32) = (2026, 4, 1);
pub const DEMO_SEED: u64 = 42;

/// The demo's care team, its member who asks for the list, and the cohort.
const TEAM: &str = "T01";
const REQUESTER: &str = "gp.north.1";
const COHORT: &str = "complex_needs";
/// The job `synth` writes (`[job] name`), whose runs the approval covers.
const JOB: &str = "complex-needs";

pub async fn demo(out: &Path, patients: u64) -> Result<()> {
    let as_of = NaiveDate::from_ymd_opt(DEMO_AS_OF.0, DEMO_AS_OF.1, DEMO_AS_OF.2).unwrap();
    let today = chrono::Utc::now().date_naive();
    let synthetic = synthesise(out, patients, as_of).await?;
    let places = Places::new(out);
    // 1. The gate pseudonymises the extracts.
    gate_pseudonymises(&places, as_of).await?;
    // 2. The analyst runs the job.
    let first = analyst_runs(&synthetic.job_file).await?;
    // 3-4. The gate operator approves; the care team asks the gate for its list.
    let registry = teams::Registry::load(&out.join("teams.toml"))?;
    let release = team_gets_its_list(&places, &registry, &first.dir, today).await?;
    // 5. The team says what happened to its first few patients.
    team_gives_feedback(&places, &registry, &release, as_of)?;
    // 6. The run again, now reading the feedback.
    let second = analyst_runs_with_feedback(&places, as_of).await?;
    // 7. What a commissioner sees: aggregates through disclosure control.
    commissioner_sees_outcomes(&places, &second.dir).await?;
    let records = crate::governance::audit::read(&places.audit_log)?;
    println!(
        "  audit log: {} records, chain intact ({})",
        records.len(),
        places.audit_log.display()
    );
    println!("  report: {}", second.dir.join("report.html").display());
    println!("{}", second.dir.display());
    Ok(())
}

/// Where the demo's roles keep what they hold, under its output folder.
struct Places {
    out: PathBuf,
    /// The keys synth made for the gate: pseudonym, vault and cell keys.
    keys: PathBuf,
    /// The gate's own folder, with the identity vault and the audit log.
    gate: PathBuf,
    vault: PathBuf,
    audit_log: PathBuf,
}

impl Places {
    fn new(out: &Path) -> Self {
        let gate = out.join("gate");
        Places {
            out: out.to_path_buf(),
            keys: out.join(KEYS_DIR),
            vault: gate.join("vault.parquet"),
            audit_log: gate.join("audit.jsonl"),
            gate,
        }
    }
}

/// The synthetic population's identifiable extracts, and the default job over their
/// pseudonymised tables.
async fn synthesise(out: &Path, patients: u64, as_of: NaiveDate) -> Result<SynthSummary> {
    let opts = SynthOptions {
        patients,
        seed: DEMO_SEED,
        as_of,
        out: out.to_path_buf(),
        identifiable: true,
        service_effects: Default::default(),
    };
    eprintln!(
        "synthesising {patients} identifiable patients into {} ...",
        out.join(IDENTIFIABLE_DIR).display()
    );
    tokio::task::spawn_blocking(move || generate(&opts))
        .await
        .map_err(|e| Error::failed(e.to_string()).with_source(e))?
}

/// Step 1: the gate pseudonymises the extracts into the analysts' tables and the vault.
async fn gate_pseudonymises(places: &Places, as_of: NaiveDate) -> Result<()> {
    std::fs::create_dir_all(&places.gate)?;
    let p = pseudonymise::pseudonymise(&pseudonymise::Request {
        input: &places.out.join(IDENTIFIABLE_DIR),
        out: &places.out.join(PSEUDONYMISED_DIR),
        key_path: &places.keys.join("pseudonym.key"),
        vault: &places.vault,
        vault_key_path: &places.keys.join("vault.key"),
        quarantine: None,
        allow_empty_optouts: false,
    })
    .await?;
    let withheld = p.tables[crate::ingest::contract::PATIENTS.name].rows_withheld_optout;
    println!("riskstrat demo: synthetic population, as of {as_of}");
    println!(
        "  gate: pseudonymised the extracts; {withheld} patients with an opt-out withheld; {} rows with invalid NHS numbers quarantined on the gate's side; vault holds {} people",
        p.quarantined_total(),
        p.vault_patients
    );
    Ok(())
}

/// Step 2: the analyst runs the job (the population, the model, its tiers and cohorts).
async fn analyst_runs(job_file: &Path) -> Result<RunOutcome> {
    let job = Job::load(job_file, None)?;
    eprintln!("running job {} ...", job_file.display());
    let first = crate::run::run(&job).await?;
    let m = &first.manifest;
    let quarantined: u64 = m.rows.values().map(|r| r.quarantined).sum();
    println!("  population at {}: {}", m.as_of, m.population);
    println!(
        "  opt-outs applied in the run: {} patients ({} rows) excluded before processing",
        m.optouts.patients_excluded, m.optouts.rows_excluded
    );
    println!("  rows quarantined: {quarantined} (see quarantine/ and manifest.json)");
    let validation = first.metrics.validation();
    match m.validation_auc {
        Some(auc) => println!(
            "  risk model: validation AUC {auc:.3} (95% CI {:.3}-{:.3}), calibration slope {:.2}",
            validation.map_or(f64::NAN, |v| v.auc_ci[0]),
            validation.map_or(f64::NAN, |v| v.auc_ci[1]),
            validation.map_or(f64::NAN, |v| v.calibration_slope),
        ),
        None => println!("  risk model: scored with a saved model"),
    }
    let tiers: Vec<String> = job
        .model
        .tiers
        .iter()
        .map(|t| format!("{} {}", t.name, m.tiers.get(&t.name).copied().unwrap_or(0)))
        .collect();
    println!("  risk tiers: {}", tiers.join(", "));
    for (name, n) in &m.cohorts {
        println!(
            "  cohort {name}: {n} people ({:.1}% of the population)",
            100.0 * *n as f64 / m.population.max(1) as f64
        );
    }
    Ok(first)
}

/// Steps 3-4: the gate operator approves the team for the cohort; the care team asks
/// the gate for its list, with names.
async fn team_gets_its_list(
    places: &Places,
    registry: &teams::Registry,
    run: &Path,
    today: NaiveDate,
) -> Result<Release> {
    teams::approve(
        registry,
        &places.audit_log,
        &teams::Approval {
            team: TEAM.into(),
            job: Some(JOB.into()),
            cohort: COHORT.into(),
            purpose: teams::DIRECT_CARE.into(),
            expires: today + chrono::Days::new(90),
            approver: "caldicott.guardian".into(),
        },
        today,
    )?;
    let release = gate::reidentify(&gate::Request {
        run,
        cohort: COHORT,
        team: TEAM,
        requester: REQUESTER,
        vault: &places.vault,
        vault_key_path: &places.keys.join("vault.key"),
        registry,
        audit_log: &places.audit_log,
        out: &places.out.join("lists").join(format!("{TEAM}-{COHORT}")),
        today,
        changes: false,
    })
    .await?;
    println!(
        "  gate: team {TEAM} approved for {COHORT}; released {} people at its practices to {REQUESTER}: {}",
        release.patients,
        release.csv.display()
    );
    Ok(release)
}

/// Step 5: the team returns what happened to the first few people on its list; the
/// feedback is imported, pseudonymised.
fn team_gives_feedback(
    places: &Places,
    registry: &teams::Registry,
    release: &Release,
    as_of: NaiveDate,
) -> Result<()> {
    let keys = &places.keys;
    let returned = places
        .out
        .join("lists")
        .join(format!("{TEAM}-feedback.csv"));
    std::fs::write(&returned, team_feedback(&release.csv)?)?;
    let vault_key = crate::governance::pseudonym::Key::read_file(&keys.join("vault.key"))?;
    let f = feedback::import(&feedback::ImportRequest {
        team: TEAM,
        importer: REQUESTER,
        input: &returned,
        key: &crate::governance::pseudonym::Key::read_file(&keys.join("pseudonym.key"))?,
        key_path: &keys.join("pseudonym.key"),
        vault: &crate::governance::vault::read(&places.vault, &vault_key)?,
        registry,
        out_dir: &places.out.join("feedback"),
        audit_log: &places.audit_log,
        recorded: as_of,
    })?;
    let outcomes: Vec<String> = f
        .by_outcome
        .iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect();
    println!(
        "  feedback from {TEAM}: {} outcomes imported, pseudonymised ({})",
        f.imported,
        outcomes.join(", ")
    );
    Ok(())
}

/// Step 6: the analyst runs again, reading the feedback: people who declined or were
/// judged not appropriate are left out of the cohort.
async fn analyst_runs_with_feedback(places: &Places, as_of: NaiveDate) -> Result<RunOutcome> {
    let job_file = places.out.join("job-with-feedback.toml");
    std::fs::write(
        &job_file,
        crate::synth::sample_job_with(as_of, &format!("{PSEUDONYMISED_DIR}/"), Some("feedback/")),
    )?;
    let second = crate::run::run(&Job::load(&job_file, None)?).await?;
    let excluded = second
        .manifest
        .feedback_excluded
        .get(COHORT)
        .copied()
        .unwrap_or(0);
    println!(
        "  next run: cohort {COHORT} {} people; {excluded} left out after declining or being judged not appropriate",
        second.manifest.cohorts.get(COHORT).copied().unwrap_or(0)
    );
    Ok(second)
}

/// Step 7: what a commissioner sees of the run: service outcomes, aggregates through
/// disclosure control.
async fn commissioner_sees_outcomes(places: &Places, run: &Path) -> Result<()> {
    let commissioner = crate::serve::Commissioner::open(
        &[run.to_path_buf()],
        crate::governance::disclosure_control::Policy::default(),
        &crate::governance::pseudonym::Key::read_file(&places.keys.join("cell.key"))?,
    )
    .await?;
    let answer = commissioner
        .query(
            "SELECT service_code, outcome, treated, match_rate, did, did_ci_low, did_ci_high, \
             placebo_did, max_smd_after, warning_low_match_rate, warning_imbalance, \
             warning_pre_trend, warning_imprecise FROM service_outcomes \
             WHERE outcome = 'emergency_admissions' ORDER BY service_code",
        )
        .await?;
    for line in crate::serve::render::render(&answer, crate::serve::render::Format::Csv)?
        .lines()
        .skip(1)
    {
        let f: Vec<&str> = line.split(',').collect();
        // The flags, in `Warning::ALL`'s order, as the view's columns 9-12.
        let raised: Vec<&str> = crate::service_evaluation::Warning::ALL
            .iter()
            .zip(&f[9..])
            .filter(|(_, v)| v.parse::<f64>().is_ok_and(|v| v == 1.0))
            .map(|(w, _)| w.text())
            .collect();
        println!(
            "  service {}: {} enrolled patients matched ({} of those enrolled); emergency admissions per 1,000 person-years, difference in differences {} (95% CI {} to {}), placebo on the year before {}, largest SMD after matching {}; warnings: {}",
            f[0],
            f[2],
            f[3],
            f[4],
            f[5],
            f[6],
            f[7],
            f[8],
            if raised.is_empty() {
                "none".to_string()
            } else {
                raised.join(", ")
            }
        );
    }
    Ok(())
}

/// What a team might return for the first rows of its list: two declined, one not
/// appropriate, one enrolled in the virtual ward, one reviewed.
fn team_feedback(list: &Path) -> Result<String> {
    let text = std::fs::read_to_string(list)?;
    let outcomes = [
        "declined",
        "declined",
        "not_appropriate",
        "enrolled:VW01",
        "reviewed",
    ];
    let mut out = String::from("nhs_number,outcome\n");
    for (line, outcome) in text.lines().skip(1).zip(outcomes) {
        let nhs = line.split(',').next().unwrap_or_default();
        out.push_str(&format!("{nhs},{outcome}\n"));
    }
    Ok(out)
}
