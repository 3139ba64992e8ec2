//! improv-store's integration tests, one module per file, built as one test binary: one link
//! instead of one per file keeps a fresh `cargo test` small on disk and quick to build. Files
//! that change process-wide state (environment, limits) or measure the process stay their own
//! binary beside this folder.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod claim_among;
mod conformance;
mod firings_upgrade;
mod journal_size;
mod layer;
mod postgres_locks;
mod stage_state;
mod temp_postgres;
mod timeouts;
mod tls;
mod wake;
