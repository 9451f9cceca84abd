//! Profile the feature SQL of a job: `cargo run --release --example explain -- JOB.toml [sql/features/x.sql]`.
//! Prints DataFusion's EXPLAIN ANALYZE for each feature source at both dates; with
//! `--plan` instead of files, the physical plan of the whole feature table (not run),
//! with `--analyze`, its EXPLAIN ANALYZE.

use riskstrat::job::Job;
use riskstrat::sql::{Params, SqlSource};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let job = Job::load(std::path::Path::new(&args[1]), None)?;
    let rc = riskstrat::run::context::RunContext::checking(&job, riskstrat::clock::Clock::system())
        .await?;
    riskstrat::run::stages::load(&rc, riskstrat::run::stages::Checks::Now).await?;
    let sql = SqlSource {
        override_dir: job.sql_dir.clone(),
    };
    let params = Params::at(job.as_of);
    let whole = args.get(2).map(String::as_str);
    if matches!(whole, Some("--plan" | "--analyze")) {
        // The physical plan of the features of both dates (plan_at registers the
        // dates; it reads the validated tables, a run the event tables' validation pass).
        let df = riskstrat::features::plan_at(
            &rc.ctx,
            &sql,
            &params,
            &[job.as_of, job.as_of - chrono::Days::new(365)],
            &[],
        )
        .await?;
        if whole == Some("--analyze") {
            let start = std::time::Instant::now();
            let plan = df.explain(false, true)?.collect().await?;
            println!(
                "== the feature table: {:.2} s",
                start.elapsed().as_secs_f64()
            );
            println!(
                "{}",
                datafusion::arrow::util::pretty::pretty_format_batches(&plan)?
            );
            return Ok(());
        }
        let plan = df.create_physical_plan().await?;
        println!(
            "{}",
            datafusion::physical_plan::displayable(plan.as_ref()).indent(true)
        );
        return Ok(());
    }
    // Both dates, as a run computes them.
    riskstrat::features::register_dates(&rc.ctx, &[job.as_of, job.as_of - chrono::Days::new(365)])
        .await?;
    let files: Vec<String> = if args.len() > 2 {
        args[2..].to_vec()
    } else {
        [
            "features/appointments.sql",
            "features/prescriptions.sql",
            "features/admissions.sql",
            "features/charlson.sql",
        ]
        .map(String::from)
        .to_vec()
    };
    for f in files {
        let text = sql.get(&f)?;
        let start = std::time::Instant::now();
        let dates = [job.as_of, job.as_of - chrono::Days::new(365)];
        let df = riskstrat::sql::query_with(
            &rc.ctx,
            &text,
            &params,
            vec![riskstrat::features::dates_param(&dates)],
        )
        .await?;
        let plan = df.explain(false, true)?.collect().await?;
        println!("== {f}: {:.2} s", start.elapsed().as_secs_f64());
        println!(
            "{}",
            datafusion::arrow::util::pretty::pretty_format_batches(&plan)?
        );
    }
    Ok(())
}
