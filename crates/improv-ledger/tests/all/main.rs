//! improv-ledger's integration tests, one module per file, built as one test binary: one link
//! instead of one per file keeps a fresh `cargo test` small on disk and quick to build. Files
//! that change process-wide state (environment, limits) or measure the process stay their own
//! binary beside this folder.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../support/mod.rs"]
mod support;

mod cli;
mod import;
mod ledger;
mod merge_props;
mod postgres;
mod props;
mod real_world;
mod shapes;
mod store_tables;
mod truth;
