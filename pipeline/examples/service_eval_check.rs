//! The service evaluation against known truth, over many seeds (issue 12):
//!
//!     cargo run --release -p riskstrat --example service_eval_check -- \
//!         [--seeds 20] [--patients 100000] [--effects VW01=1.0,CM01=0.8] [--out DIR]
//!         [--candidates N]   (default: the job's default, `[outcomes] candidates`)
//!
//! For each seed: `synth` with the services' true effects, the default job with the
//! evaluation, and each service's difference in differences against
//! `truth/service_effects.json`. Prints each run, then the table the README quotes,
//! and each criterion with PASS or FAIL; exits 1 if one on emergency admissions fails.

use riskstrat::service_evaluation_check::{run_seed, summarise, table};
use riskstrat::synth::ServiceEffects;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str, default: &str| -> String {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
            .unwrap_or_else(|| default.to_string())
    };
    let seeds: u64 = arg("--seeds", "20").parse()?;
    let patients: u64 = arg("--patients", "100000").parse()?;
    let effects_text = arg("--effects", "VW01=1.0,CM01=0.8");
    let effects = ServiceEffects::parse(&effects_text)?;
    let out = std::path::PathBuf::from(arg("--out", "/tmp/riskstrat-service-eval-check"));
    let candidates: Option<usize> = args
        .iter()
        .position(|a| a == "--candidates")
        .map(|_| arg("--candidates", "").parse())
        .transpose()?;
    let as_of = chrono::NaiveDate::from_ymd_opt(2026, 4, 1).unwrap();
    println!("{seeds} seeds x {patients} people, effects {effects_text}, A = {as_of}");
    println!(
        "seed service outcome treated match_rate estimate ci_low ci_high truth error max_smd_after pre_trend seconds"
    );
    let mut all = Vec::new();
    for seed in 1..=seeds {
        let dir = out.join(format!("seed-{seed}"));
        let t = std::time::Instant::now();
        let rs = run_seed(&dir, patients, seed, as_of, &effects, candidates).await?;
        let secs = t.elapsed().as_secs_f64();
        for r in &rs {
            println!(
                "{} {} {} {} {:.3} {:.1} {:.1} {:.1} {:.1} {:+.1} {:.3} {} {:.1}",
                r.seed,
                r.service,
                r.outcome,
                r.treated,
                r.match_rate,
                r.estimate,
                r.ci_low,
                r.ci_high,
                r.truth,
                r.estimate - r.truth,
                r.max_smd_after,
                r.pre_trend,
                secs
            );
        }
        all.extend(rs);
        std::fs::remove_dir_all(&dir)?;
    }
    let summaries = summarise(&all);
    println!("\nRates per 1,000 person-years; error = estimate - truth.\n");
    print!("{}", table(&summaries));
    let mut ok = true;
    for s in &summaries {
        for (what, pass) in s.criteria() {
            println!(
                "{} {} {}: {what}",
                if pass { "PASS" } else { "FAIL" },
                s.service,
                s.outcome
            );
            // The criteria are on emergency admissions; bed days are shown.
            ok &= pass || s.outcome != "emergency_admissions";
        }
    }
    if !ok {
        std::process::exit(1);
    }
    Ok(())
}
