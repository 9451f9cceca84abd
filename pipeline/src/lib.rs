//! riskstrat: find the people who most need joined-up care, from linked
//! pseudonymised NHS data, on Apache DataFusion.
//!
//! Stages: [`ingest`] (schemas, safe casts, opt-outs, row validation),
//! [`features`], cohorts (in [`run`]), [`outputs`]. Concerns: [`governance`]
//! (opt-outs, pseudonyms, the vault, the gate, audit, feedback, disclosure control),
//! [`serve`] (commissioner views and queries). Supporting: [`job`], [`session`], [`sql`], [`synth`].

pub mod changes;
pub mod clock;
pub mod cluster;
pub mod damage;
pub mod demo;
pub mod durable;
pub mod error;
pub mod faults;
pub mod features;
pub mod feedback;
pub mod gate;
pub mod governance;
pub mod history;
pub mod ingest;
pub mod job;
#[cfg(test)]
mod layers;
pub mod model;
pub mod outputs;
pub mod progress;
pub mod pseudonymise;
pub mod quality;
pub mod report;
pub mod run;
pub mod schedule;
pub mod scheduler;
pub mod serve;
pub mod service_evaluation;
pub mod service_evaluation_check;
pub mod session;
pub mod sql;
pub mod synth;

pub use error::{Error, Result};

/// The README between `<!-- name:start -->` and `<!-- name:end -->`: the tables that
/// tests keep current from the registries.
#[cfg(test)]
pub(crate) fn readme_section(name: &str) -> &'static str {
    let readme = include_str!("../../README.md");
    let (start, end) = (
        format!("<!-- {name}:start -->"),
        format!("<!-- {name}:end -->"),
    );
    let a = readme
        .find(&start)
        .unwrap_or_else(|| panic!("README has no {start}"))
        + start.len();
    let b = readme
        .find(&end)
        .unwrap_or_else(|| panic!("README has no {end}"));
    &readme[a..b]
}
