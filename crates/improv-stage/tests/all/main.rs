//! improv-stage's integration tests, one module per file, built as one test binary: one link
//! instead of one per file keeps a fresh `cargo test` small on disk and quick to build. Files
//! that change process-wide state (environment, limits) or measure the process stay their own
//! binary beside this folder.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod context_files;
mod door_email;
mod door_limits;
mod door_retention;
mod doors;
mod messages;
mod stage;
mod writable;
