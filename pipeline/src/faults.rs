//! Test hooks for the fault-injection suite, compiled into debug builds only (release
//! builds ignore the variables):
//!
//! - `RISKSTRAT_CLOCK=2020-01-01T00:00:00Z`: the wall clock starts at that instant (and
//!   runs on from there), so a test can jump the clock; read here and nowhere else.
//!   `RISKSTRAT_CLOCK_SPEED=N` makes it run N times faster, so that a test sees months
//!   of a schedule's ticks in seconds.
//! - `RISKSTRAT_FAULT=point=kill,other=wait:/path,third=spin:50`: at a named point the
//!   process SIGKILLs itself (`kill`), waits until `/path` exists (`wait:`, writing
//!   `/path.reached` first so the test knows where it is), or computes for 50 ms
//!   without yielding (`spin:50`, a stand-in for an expensive step: serve's limit tests
//!   make every batch of a query this costly; `spin:50:/path` only while `/path`
//!   exists, so a test can turn it off); `fail:N` makes the point's first N passes in
//!   this process fail as a run that failed would (`failure`), for the retries of
//!   schedules.
//! - `RISKSTRAT_EPISODES_PER_PLAN=N`: the service evaluation computes the risk at the
//!   index dates in plans of at most N episodes, as a memory limit would make it do at
//!   scale, so that a test can compare the split with the whole.

use chrono::{DateTime, Utc};

/// The wall clock: every time riskstrat records (run ids, manifests, audit records)
/// comes from here.
pub fn now() -> DateTime<Utc> {
    #[cfg(debug_assertions)]
    {
        use std::sync::LazyLock;
        static FAKE: LazyLock<Option<(DateTime<Utc>, std::time::Instant)>> = LazyLock::new(|| {
            let s = std::env::var("RISKSTRAT_CLOCK").ok()?;
            let t = DateTime::parse_from_rfc3339(&s)
                .unwrap_or_else(|e| panic!("RISKSTRAT_CLOCK={s}: not an RFC 3339 time ({e})"));
            Some((t.with_timezone(&Utc), std::time::Instant::now()))
        });
        if let Some((start, at)) = *FAKE {
            let elapsed = at.elapsed().mul_f64(clock_speed());
            return start + chrono::Duration::from_std(elapsed).unwrap_or(chrono::TimeDelta::MAX);
        }
    }
    Utc::now()
}

/// How many times faster than real time the clock runs (1 but in tests).
pub fn clock_speed() -> f64 {
    #[cfg(debug_assertions)]
    {
        use std::sync::LazyLock;
        static SPEED: LazyLock<f64> = LazyLock::new(|| {
            std::env::var("RISKSTRAT_CLOCK_SPEED").map_or(1.0, |s| {
                s.parse()
                    .ok()
                    .filter(|v: &f64| *v >= 1.0)
                    .unwrap_or_else(|| panic!("RISKSTRAT_CLOCK_SPEED={s}: a number >= 1"))
            })
        });
        *SPEED
    }
    #[cfg(not(debug_assertions))]
    1.0
}

/// The largest number of episodes the test hook allows in one plan of the risk at the
/// index dates (None but in tests).
pub fn episodes_per_plan() -> Option<usize> {
    #[cfg(debug_assertions)]
    if let Ok(s) = std::env::var("RISKSTRAT_EPISODES_PER_PLAN") {
        let n = s.parse().ok().filter(|n: &usize| *n > 0);
        return Some(n.unwrap_or_else(|| panic!("RISKSTRAT_EPISODES_PER_PLAN={s}: a number > 0")));
    }
    None
}

/// A named point where the fault suite may kill, pause or slow the process.
pub fn point(name: &str) {
    #[cfg(debug_assertions)]
    {
        use std::sync::LazyLock;
        // Read once: some points (a query's batches) are passed thousands of times.
        static SPEC: LazyLock<Option<String>> =
            LazyLock::new(|| std::env::var("RISKSTRAT_FAULT").ok());
        let Some(spec) = SPEC.as_deref() else {
            return;
        };
        for item in spec.split(',') {
            let Some((at, action)) = item.split_once('=') else {
                continue;
            };
            if at != name {
                continue;
            }
            if action == "kill" {
                // SAFETY: kill(2) on our own pid; no memory is involved.
                unsafe {
                    libc::kill(libc::getpid(), libc::SIGKILL);
                }
            } else if let Some(path) = action.strip_prefix("wait:") {
                let path = std::path::Path::new(path);
                let _ = std::fs::write(path.with_extension("reached"), name);
                while !path.exists() {
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
            } else if action.starts_with("fail:") {
                // Handled by `failure`.
            } else if let Some(spin) = action.strip_prefix("spin:") {
                let (ms, gate) = match spin.split_once(':') {
                    Some((ms, path)) => (ms, Some(std::path::Path::new(path))),
                    None => (spin, None),
                };
                if gate.is_some_and(|p| !p.exists()) {
                    continue;
                }
                let ms: u64 = ms.parse().unwrap_or_else(|_| {
                    panic!("RISKSTRAT_FAULT {item}: spin:MILLISECONDS[:/path]")
                });
                let until = std::time::Instant::now() + std::time::Duration::from_millis(ms);
                while std::time::Instant::now() < until {
                    std::hint::spin_loop();
                }
            }
        }
    }
    #[cfg(not(debug_assertions))]
    let _ = name;
}

/// At a point named in `RISKSTRAT_FAULT` as `name=fail:N`: an error for each of the
/// first N passes in this process, then none. Always none in release builds.
pub fn failure(name: &str) -> Option<String> {
    #[cfg(debug_assertions)]
    {
        use std::sync::Mutex;
        static PASSES: Mutex<Vec<(String, u32)>> = Mutex::new(Vec::new());
        let spec = std::env::var("RISKSTRAT_FAULT").ok()?;
        let n: u32 = spec.split(',').find_map(|item| {
            let (at, action) = item.split_once('=')?;
            (at == name).then(|| action.strip_prefix("fail:")?.parse().ok())?
        })?;
        let mut passes = PASSES.lock().unwrap_or_else(|p| p.into_inner());
        let k = match passes.iter().position(|(p, _)| p == name) {
            Some(k) => k,
            None => {
                passes.push((name.to_string(), 0));
                passes.len() - 1
            }
        };
        passes[k].1 += 1;
        return (passes[k].1 <= n)
            .then(|| format!("injected failure {} of {n} at {name}", passes[k].1));
    }
    #[cfg(not(debug_assertions))]
    {
        let _ = name;
        None
    }
}
