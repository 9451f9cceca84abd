//! `riskstrat demo`: synthesise a population, run the default job, summarise.

use crate::error::{Error, Result};
use crate::job::Job;
use crate::synth::{SynthOptions, generate};
use chrono::NaiveDate;
use std::path::Path;

/// The demo's fixed extract date and seed, so that every demo shows the same numbers.
pub const DEMO_AS_OF: (i32, u32, u32) = (2026, 4, 1);
pub const DEMO_SEED: u64 = 42;

pub async fn demo(out: &Path, patients: u64) -> Result<()> {
    let as_of = NaiveDate::from_ymd_opt(DEMO_AS_OF.0, DEMO_AS_OF.1, DEMO_AS_OF.2).unwrap();
    let data = out.join("data");
    let opts = SynthOptions {
        patients,
        seed: DEMO_SEED,
        as_of,
        out: data,
    };
    eprintln!(
        "synthesising {patients} patients into {} ...",
        opts.out.display()
    );
    let s = tokio::task::spawn_blocking(move || generate(&opts))
        .await
        .map_err(|e| Error::failed(e.to_string()))??;
    let job = Job::load(&s.job_file, None)?;
    eprintln!("running job {} ...", s.job_file.display());
    let outcome = crate::run::run(&job).await?;
    let m = &outcome.manifest;
    let quarantined: u64 = m.rows.values().map(|r| r.quarantined).sum();
    println!("riskstrat demo: synthetic population, as of {}", m.as_of);
    println!("  population at {}: {}", m.as_of, m.population);
    println!(
        "  opt-outs applied: {} patients ({} rows) excluded before processing",
        m.optouts.patients_excluded, m.optouts.rows_excluded
    );
    println!("  rows quarantined: {quarantined} (see quarantine/ and manifest.json)");
    match m.validation_auc {
        Some(auc) => println!(
            "  risk model: validation AUC {auc:.3} (95% CI {:.3}-{:.3}), calibration slope {:.2}",
            outcome.metrics["validation"]["auc_ci"][0]
                .as_f64()
                .unwrap_or(f64::NAN),
            outcome.metrics["validation"]["auc_ci"][1]
                .as_f64()
                .unwrap_or(f64::NAN),
            outcome.metrics["validation"]["calibration_slope"]
                .as_f64()
                .unwrap_or(f64::NAN),
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
    println!("  report: {}", outcome.dir.join("report.html").display());
    println!("{}", outcome.dir.display());
    Ok(())
}
