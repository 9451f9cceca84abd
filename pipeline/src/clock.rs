//! The clock a run reads its times from (its run id, the manifest's start and finish),
//! so that a test can set it rather than wait for it.

use chrono::{DateTime, Utc};
use std::time::Instant;

#[derive(Debug, Clone, Copy, Default)]
pub struct Clock {
    /// Set clocks start at an instant and run on from there at the wall clock's pace.
    start: Option<(DateTime<Utc>, Instant)>,
}

impl Clock {
    /// The wall clock (which debug builds let the fault suite move: `faults::now`).
    pub fn system() -> Self {
        Self { start: None }
    }

    /// A clock that reads `t` now and runs on from there.
    pub fn starting_at(t: DateTime<Utc>) -> Self {
        Self {
            start: Some((t, Instant::now())),
        }
    }

    pub fn now(&self) -> DateTime<Utc> {
        match self.start {
            Some((t, at)) => t + at.elapsed(),
            None => crate::faults::now(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_set_clock_starts_where_it_was_set_and_runs_on() {
        let t = DateTime::parse_from_rfc3339("2031-05-06T07:08:09Z")
            .unwrap()
            .with_timezone(&Utc);
        let c = Clock::starting_at(t);
        let a = c.now();
        let b = c.now();
        assert!(a >= t && a - t < chrono::Duration::seconds(5));
        assert!(b >= a);
    }
}
