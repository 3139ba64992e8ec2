//! improv-door's integration tests, one module per file, built as one test binary: one link
//! instead of one per file keeps a fresh `cargo test` small on disk and quick to build. Files
//! that change process-wide state (environment, limits) or measure the process stay their own
//! binary beside this folder.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../common/mod.rs"]
mod common;

mod alive;
mod probe;
mod reload;
mod retention;
mod retention_setting;
mod schedule;
mod stages;
mod upgrade;
mod webhook;
