//! A job's `[schedule]`: when it runs (a cron pattern in a time zone) and what each
//! tick means (`A` is the tick's local date). The workflows that run ticks are in
//! `scheduler.rs`.

use crate::bad_input;
use crate::error::Result;
use chrono::{DateTime, Datelike, NaiveDate, TimeZone, Utc};
use chrono_tz::Tz;
use croner::Cron;
use serde::Deserialize;

/// `[schedule]` as written in a job file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleSection {
    /// Five fields: minute hour day-of-month month day-of-week.
    pub cron: String,
    /// An IANA time zone name (`Europe/London`); default UTC.
    #[serde(default = "utc")]
    pub timezone: String,
    /// What `A` is for a tick: `tick`, the tick's local date (the only choice).
    #[serde(default = "tick")]
    pub as_of: String,
    #[serde(default)]
    pub missed: Missed,
    /// Attempts after a failed one, each recorded, with a doubling wait between them.
    #[serde(default)]
    pub retries: u32,
    /// An http(s) URL that receives a JSON summary (counts only) of each tick.
    pub notify: Option<String>,
}

fn utc() -> String {
    "UTC".into()
}

fn tick() -> String {
    "tick".into()
}

/// What a scheduler does with ticks that passed while it was not running.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Missed {
    /// Run the newest missed tick only (the others are recorded as skipped).
    #[default]
    Latest,
    /// Run every missed tick, oldest first.
    All,
    /// Run none of them (each recorded as skipped).
    Skip,
}

/// A checked schedule.
#[derive(Debug, Clone)]
pub struct Schedule {
    pub cron: Cron,
    pub pattern: String,
    pub timezone: Tz,
    pub missed: Missed,
    pub retries: u32,
    pub notify: Option<String>,
}

/// One tick: the instant it fires and the population date `A` it runs at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Tick {
    pub at: DateTime<Utc>,
    pub as_of: NaiveDate,
}

impl Tick {
    /// The run key of a tick (with the job's name, it names a tick's run once): the
    /// instant in RFC 3339, UTC.
    pub fn key(&self) -> String {
        self.at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    }
}

impl Schedule {
    /// Check `[schedule]`; `ctx` starts each error ("job file <path>: [schedule]").
    pub fn parse(s: &ScheduleSection, ctx: &str) -> Result<Schedule> {
        let fields = s.cron.split_whitespace().count();
        if fields != 5 {
            return Err(bad_input!(
                "{ctx} cron: '{}' has {fields} fields; write five: minute hour day-of-month month day-of-week, e.g. \"0 2 1 * *\" (02:00 on the 1st of each month)",
                s.cron
            ));
        }
        let cron: Cron = s.cron.parse().map_err(|e| {
            bad_input!(
                "{ctx} cron: '{}' is not a cron pattern ({e}); e.g. \"0 2 1 * *\"",
                s.cron
            )
        })?;
        // A pattern no date matches (the 30th of February) would make `backfill` do
        // nothing and `schedule` wait for ever; every real pattern recurs within 400
        // years (the Gregorian calendar's cycle).
        let from = Utc
            .with_ymd_and_hms(2000, 1, 1, 0, 0, 0)
            .single()
            .expect("a date");
        let recurs = matches!(cron.find_next_occurrence(&from, false), Ok(t) if t.year() < 2400);
        if !recurs {
            return Err(bad_input!(
                "{ctx} cron: '{}' matches no date (check the day of the month against the month); e.g. \"0 2 1 * *\"",
                s.cron
            ));
        }
        let timezone: Tz = s.timezone.parse().map_err(|_| {
            bad_input!(
                "{ctx} timezone: '{}' is not an IANA time zone name; e.g. \"Europe/London\" or \"UTC\"",
                s.timezone
            )
        })?;
        if s.as_of != "tick" {
            return Err(bad_input!(
                "{ctx} as_of: '{}' is not supported; the only choice is \"tick\" (A is the tick's local date)",
                s.as_of
            ));
        }
        if s.retries > 10 {
            return Err(bad_input!(
                "{ctx} retries: {} is too many (the waits double each time); use at most 10",
                s.retries
            ));
        }
        if let Some(url) = &s.notify
            && !(url.starts_with("https://") || url.starts_with("http://"))
        {
            return Err(bad_input!(
                "{ctx} notify: not an http:// or https:// URL; give the webhook's URL"
            ));
        }
        Ok(Schedule {
            cron,
            pattern: s.cron.clone(),
            timezone,
            missed: s.missed,
            retries: s.retries,
            notify: s.notify.clone(),
        })
    }

    /// Every tick from the start of local day `from` to the end of local day `to`,
    /// oldest first.
    pub fn ticks(&self, from: NaiveDate, to: NaiveDate) -> Result<Vec<Tick>> {
        let start = self.local_midnight(from)?;
        let end = self.local_midnight(to + chrono::Duration::days(1))?;
        let mut out = Vec::new();
        for t in self.cron.iter_from(start, croner::Direction::Forward) {
            if t >= end {
                break;
            }
            out.push(self.tick_at(t));
        }
        Ok(out)
    }

    /// The ticks in `(after, until]`, oldest first.
    pub fn ticks_between(&self, after: DateTime<Utc>, until: DateTime<Utc>) -> Vec<Tick> {
        self.cron
            .iter_after(after.with_timezone(&self.timezone))
            .take_while(|t| t.with_timezone(&Utc) <= until)
            .map(|t| self.tick_at(t))
            .collect()
    }

    fn tick_at(&self, t: DateTime<Tz>) -> Tick {
        Tick {
            at: t.with_timezone(&Utc),
            as_of: t.date_naive(),
        }
    }

    /// The first instant of a local day (a day starting in a DST gap starts when the
    /// clocks do).
    fn local_midnight(&self, day: NaiveDate) -> Result<DateTime<Tz>> {
        let mut t = day.and_hms_opt(0, 0, 0).expect("midnight");
        for _ in 0..24 * 4 {
            if let Some(x) = self.timezone.from_local_datetime(&t).earliest() {
                return Ok(x);
            }
            t += chrono::Duration::minutes(15);
        }
        Err(bad_input!(
            "{day} has no start in time zone {}",
            self.timezone
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schedule(cron: &str, tz: &str) -> Schedule {
        let s = ScheduleSection {
            cron: cron.into(),
            timezone: tz.into(),
            as_of: tick(),
            missed: Missed::Latest,
            retries: 0,
            notify: None,
        };
        Schedule::parse(&s, "[schedule]").unwrap()
    }

    fn d(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
    }

    /// Regression: a pattern that matches no date was accepted; `backfill` then did
    /// nothing and `schedule` waited for ever. A leap day still is a date.
    #[test]
    fn a_pattern_that_matches_no_date_is_refused() {
        let section = |cron: &str| ScheduleSection {
            cron: cron.into(),
            timezone: "UTC".into(),
            as_of: tick(),
            missed: Missed::Latest,
            retries: 0,
            notify: None,
        };
        let e = Schedule::parse(&section("0 2 30 2 *"), "[schedule]").unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert!(e.message.contains("matches no date"), "{}", e.message);
        assert!(Schedule::parse(&section("0 2 29 2 *"), "[schedule]").is_ok());
    }

    /// Monthly at 02:00 London time: GMT in winter, BST (UTC+1) in summer, and `A` is
    /// the local date.
    #[test]
    fn monthly_ticks_follow_london_time_across_dst() {
        let s = schedule("0 2 1 * *", "Europe/London");
        let ticks = s.ticks(d("2026-01-01"), d("2026-04-30")).unwrap();
        let keys: Vec<String> = ticks.iter().map(Tick::key).collect();
        assert_eq!(
            keys,
            [
                "2026-01-01T02:00:00Z",
                "2026-02-01T02:00:00Z",
                "2026-03-01T02:00:00Z",
                "2026-04-01T01:00:00Z",
            ]
        );
        let as_of: Vec<NaiveDate> = ticks.iter().map(|t| t.as_of).collect();
        assert_eq!(
            as_of,
            [
                d("2026-01-01"),
                d("2026-02-01"),
                d("2026-03-01"),
                d("2026-04-01")
            ]
        );
    }

    /// A tick at 00:30 local time on the night the clocks go forward (29 March 2026 in
    /// London, 01:00 -> 02:00) and back (25 October, 02:00 -> 01:00): one tick each day.
    #[test]
    fn a_daily_tick_fires_once_on_each_dst_change() {
        let s = schedule("30 1 * * *", "Europe/London");
        let spring = s.ticks(d("2026-03-29"), d("2026-03-29")).unwrap();
        assert_eq!(spring.len(), 1, "{spring:?}");
        let autumn = s.ticks(d("2026-10-25"), d("2026-10-25")).unwrap();
        assert_eq!(autumn.len(), 1, "{autumn:?}");
        assert_eq!(autumn[0].as_of, d("2026-10-25"));
    }

    #[test]
    fn ticks_between_excludes_the_start_and_includes_the_end() {
        let s = schedule("0 2 1 * *", "UTC");
        let at = |x: &str| DateTime::parse_from_rfc3339(x).unwrap().with_timezone(&Utc);
        let t = s.ticks_between(at("2026-01-01T02:00:00Z"), at("2026-03-01T02:00:00Z"));
        let keys: Vec<String> = t.iter().map(Tick::key).collect();
        assert_eq!(keys, ["2026-02-01T02:00:00Z", "2026-03-01T02:00:00Z"]);
    }

    #[test]
    fn bad_settings_name_the_setting() {
        for (cron, tz, as_of, what) in [
            ("0 2 1 *", "UTC", "tick", "cron"),
            ("0 25 1 * *", "UTC", "tick", "cron"),
            ("0 2 1 * *", "Europe/Londres", "tick", "timezone"),
            ("0 2 1 * *", "UTC", "end_of_month", "as_of"),
        ] {
            let s = ScheduleSection {
                cron: cron.into(),
                timezone: tz.into(),
                as_of: as_of.into(),
                missed: Missed::Latest,
                retries: 0,
                notify: None,
            };
            let e = Schedule::parse(&s, "job file j.toml: [schedule]")
                .unwrap_err()
                .to_string();
            assert!(e.contains(&format!("[schedule] {what}")), "{e}");
        }
    }
}
