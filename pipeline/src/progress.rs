//! Progress: a spinner per stage on a terminal, plain log lines otherwise; and the
//! stage timings that go into the manifest.

use indicatif::{ProgressBar, ProgressStyle};
use std::collections::BTreeMap;
use std::future::Future;
use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Shared by a run's stages (`stage` takes `&self`, so a stage's work may borrow the
/// rest of the run context while it is timed).
#[derive(Default)]
pub struct Progress {
    timings_ms: Mutex<BTreeMap<String, u64>>,
    peak_memory_mib: Mutex<BTreeMap<String, u64>>,
}

impl Progress {
    pub fn new() -> Self {
        Self::default()
    }

    /// Run one stage, showing it while it runs and recording how long it took.
    pub async fn stage<T>(&self, name: &str, fut: impl Future<Output = T>) -> T {
        reset_peak_memory();
        let start = Instant::now();
        let bar = spinner(name);
        if bar.is_none() {
            tracing::info!("{name}...");
        }
        let out = fut.await;
        let elapsed = start.elapsed();
        if let Some(bar) = bar {
            bar.finish_and_clear();
        }
        tracing::info!("{name} done in {:.2} s", elapsed.as_secs_f64());
        let mut t = self.timings_ms.lock().unwrap_or_else(|p| p.into_inner());
        *t.entry(name.to_string()).or_default() += elapsed.as_millis() as u64;
        if let Some(peak) = peak_memory_mib() {
            let mut m = self
                .peak_memory_mib
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            let e = m.entry(name.to_string()).or_default();
            *e = (*e).max(peak);
        }
        out
    }

    /// The peak resident memory of each stage, in MiB (Linux only).
    pub fn peak_memory_mib(&self) -> BTreeMap<String, u64> {
        self.peak_memory_mib
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Milliseconds per stage (a stage run twice adds up).
    pub fn timings_ms(&self) -> BTreeMap<String, u64> {
        self.timings_ms
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// Start a new high-water mark of resident memory (Linux: `clear_refs` 5 resets
/// `VmHWM` to the current resident size), so a stage's peak is its own. The process's
/// `getrusage` maximum (what `/usr/bin/time` prints) then covers only the time since
/// the last reset: the run's peak is the largest of its stages'.
fn reset_peak_memory() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// The high-water mark of resident memory since the last reset, in MiB.
fn peak_memory_mib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib.div_ceil(1024))
}

/// At debug level (target `riskstrat::plans`), an executed plan's operators, one line
/// each, indented as the plan, with the rows each gave, its compute time and what it
/// spilled: where a stage's time goes, for the benchmark (issue 16). Names and counts
/// only, never an operator's expressions, which may hold literals of an analyst's SQL.
pub fn log_plan_metrics(what: &str, plan: &dyn datafusion::physical_plan::ExecutionPlan) {
    if !tracing::enabled!(target: "riskstrat::plans", tracing::Level::DEBUG) {
        return;
    }
    let mut lines = Vec::new();
    operator_lines(plan, 0, &mut lines);
    tracing::debug!(target: "riskstrat::plans", "{what}:\n{}", lines.join("\n"));
}

/// [`log_plan_metrics`]'s lines. An operator that reports no `elapsed_compute` (some
/// scans) shows its `time_elapsed_processing`, its decoding, instead; one that reports
/// both shows `elapsed_compute` only, so the sums the benchmark prints leave out most
/// of the event tables' decoding.
fn operator_lines(
    plan: &dyn datafusion::physical_plan::ExecutionPlan,
    depth: usize,
    lines: &mut Vec<String>,
) {
    let metrics = plan.metrics().map(|m| m.aggregate_by_name());
    let rows = metrics.as_ref().and_then(|m| m.output_rows());
    let compute = metrics.as_ref().and_then(|m| {
        m.elapsed_compute().filter(|&ns| ns > 0).or_else(|| {
            m.sum_by_name("time_elapsed_processing")
                .map(|v| v.as_usize())
        })
    });
    let spilled = metrics
        .as_ref()
        .and_then(|m| m.spilled_bytes())
        .filter(|&b| b > 0)
        .map_or(String::new(), |b| {
            format!(" spilled={:.1}MiB", b as f64 / 1048576.0)
        });
    lines.push(format!(
        "{:depth$}{} rows={}{spilled} compute={:.3}s",
        "",
        plan.name(),
        rows.map_or("-".to_string(), |r| r.to_string()),
        compute.unwrap_or(0) as f64 / 1e9,
        depth = depth * 2
    ));
    for child in plan.children() {
        operator_lines(child.as_ref(), depth + 1, lines);
    }
}

pub fn interactive() -> bool {
    std::io::stderr().is_terminal()
}

pub fn spinner(msg: &str) -> Option<ProgressBar> {
    if !interactive() {
        return None;
    }
    let bar = ProgressBar::new_spinner();
    bar.set_style(ProgressStyle::with_template("{spinner} {msg} {elapsed}").unwrap());
    bar.set_message(msg.to_string());
    bar.enable_steady_tick(Duration::from_millis(120));
    Some(bar)
}

/// A bar with a known length (e.g. synthetic patients), or None off a terminal.
pub fn bar(len: u64, msg: &str) -> Option<ProgressBar> {
    if !interactive() {
        return None;
    }
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} {elapsed}/{eta}")
            .unwrap()
            .progress_chars("=> "),
    );
    bar.set_message(msg.to_string());
    Some(bar)
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    /// Each stage's peak is its own: the high-water mark is reset at its start.
    #[test]
    fn a_stage_reports_its_own_peak_memory() {
        let p = Progress::new();
        futures::executor::block_on(p.stage("big", async {
            let v = vec![1u8; 300 << 20];
            std::hint::black_box(&v);
        }));
        futures::executor::block_on(p.stage("small", async {}));
        let m = p.peak_memory_mib();
        assert!(m["big"] >= 300, "{m:?}");
        // (Other tests of this process allocate too, but not hundreds of MiB at once.)
        assert!(m["small"] + 200 < m["big"], "{m:?}");
    }

    /// Runs `df`'s plan to the end: the rows it gave and its operator lines.
    async fn run_and_describe(
        ctx: &datafusion::prelude::SessionContext,
        df: datafusion::prelude::DataFrame,
    ) -> (usize, Vec<String>) {
        let plan = df.create_physical_plan().await.unwrap();
        let got = datafusion::physical_plan::collect(plan.clone(), ctx.task_ctx())
            .await
            .unwrap();
        let mut lines = Vec::new();
        operator_lines(plan.as_ref(), 0, &mut lines);
        (got.iter().map(|b| b.num_rows()).sum(), lines)
    }

    /// An executed plan's lines: each operator once, indented under its parent, with
    /// the rows it gave; and no expression, so no literal of the SQL.
    #[tokio::test]
    async fn plan_lines_give_each_operator_its_rows_and_no_literal() {
        use datafusion::arrow::array::{Int64Array, RecordBatch};
        use datafusion::prelude::{SessionContext, col, lit};
        let ctx = SessionContext::new();
        let batch = RecordBatch::try_from_iter([(
            "x",
            std::sync::Arc::new(Int64Array::from(vec![1, 5, 7, 9])) as _,
        )])
        .unwrap();
        let df = ctx
            .read_batch(batch)
            .unwrap()
            .filter(
                col("x")
                    .gt(lit(1i64))
                    .and(col("x").lt(lit(4_242_424_242i64))),
            )
            .unwrap();
        let (rows, lines) = run_and_describe(&ctx, df).await;
        assert_eq!(rows, 3);
        let filter = lines.iter().find(|l| l.contains("FilterExec")).unwrap();
        assert!(filter.contains(" rows=3 "), "{lines:?}");
        let depth = |l: &str| l.len() - l.trim_start().len();
        let scan = lines
            .iter()
            .position(|l| l.contains("DataSourceExec"))
            .unwrap();
        let at = lines.iter().position(|l| l.contains("FilterExec")).unwrap();
        assert!(
            at < scan && depth(&lines[scan]) > depth(&lines[at]),
            "{lines:?}"
        );
        assert!(!lines.join("\n").contains("4242424242"), "{lines:?}");
        assert!(!lines.join("\n").contains("spilled"), "{lines:?}");
    }

    /// An operator that spilled under a memory limit says so, and only that one.
    #[tokio::test]
    async fn plan_lines_show_what_spilled() {
        use datafusion::arrow::array::{Int64Array, RecordBatch};
        use datafusion::execution::memory_pool::FairSpillPool;
        use datafusion::execution::runtime_env::RuntimeEnvBuilder;
        use datafusion::prelude::{SessionConfig, SessionContext, col};
        let runtime = RuntimeEnvBuilder::new()
            .with_memory_pool(std::sync::Arc::new(FairSpillPool::new(8 << 20)))
            .build_arc()
            .unwrap();
        let ctx = SessionContext::new_with_config_rt(
            SessionConfig::new()
                .with_target_partitions(1)
                .set_usize("datafusion.execution.sort_spill_reservation_bytes", 1 << 20),
            runtime,
        );
        let batches: Vec<RecordBatch> = (0..400)
            .map(|b| {
                let x = Int64Array::from_iter_values((0..8192).map(|i| (i * 7919 + b) % 100_003));
                RecordBatch::try_from_iter([("x", std::sync::Arc::new(x) as _)]).unwrap()
            })
            .collect();
        let df = ctx
            .read_batches(batches)
            .unwrap()
            .sort(vec![col("x").sort(true, false)])
            .unwrap();
        let (rows, lines) = run_and_describe(&ctx, df).await;
        assert_eq!(rows, 400 * 8192);
        let spilled: Vec<&String> = lines.iter().filter(|l| l.contains("spilled=")).collect();
        assert_eq!(spilled.len(), 1, "{lines:?}");
        assert!(spilled[0].trim_start().starts_with("SortExec"), "{lines:?}");
    }
}
