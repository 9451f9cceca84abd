//! The end-to-end tests: one test binary, one module per capability.
//!
//! One binary rather than one per file: each links DataFusion, Arrow Flight and
//! Ballista, and fourteen of them filled a CI disk (stop 42). Run one module with
//! `cargo test --test e2e serve::`.

mod common;

mod cli;
mod cluster;
mod disclosure;
mod faults;
mod features;
mod governance;
mod integrity_input;
mod object_stores;
mod report;
mod run_store;
mod schedules;
mod serve;
mod service_evaluation;
mod sql_overrides;
