//! improv-channel's integration tests, one module per file, built as one test binary: one link
//! instead of one per file keeps a fresh `cargo test` small on disk and quick to build. Files
//! that change process-wide state (environment, limits) or measure the process stay their own
//! binary beside this folder.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../common/mod.rs"]
mod common;

mod authority;
mod conversation;
mod deferred;
mod failures;
mod inbound;
mod limits;
mod outbox;
mod retake;
mod send;
mod stages;
