//! improv's integration tests, one module per file, built as one test binary: one link
//! instead of one per file keeps a fresh `cargo test` small on disk and quick to build. Files
//! that change process-wide state (environment, limits) or measure the process stay their own
//! binary beside this folder.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../common/mod.rs"]
mod common;

mod channels;
mod chat_drain;
mod cli;
mod cli_rough_edges;
mod daemon;
mod doors;
mod doors_kill;
mod doors_queued;
mod edges;
mod email_serve;
mod feedback;
mod mcp_logs;
mod mcp_run;
mod memory_store;
mod ops;
mod routines;
mod serve_store;
mod signals;
mod stage_moved;
mod stagecraft;
mod store_file;
mod trace;
mod worker;
mod worker_state;
