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
}

impl Progress {
    pub fn new() -> Self {
        Self::default()
    }

    /// Run one stage, showing it while it runs and recording how long it took.
    pub async fn stage<T>(&self, name: &str, fut: impl Future<Output = T>) -> T {
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
        out
    }

    /// Milliseconds per stage (a stage run twice adds up).
    pub fn timings_ms(&self) -> BTreeMap<String, u64> {
        self.timings_ms
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
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
