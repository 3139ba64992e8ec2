//! improv-serve's integration tests, one module per file, built as one test binary: one link
//! instead of one per file keeps a fresh `cargo test` small on disk and quick to build. Files
//! that change process-wide state (environment, limits) or measure the process stay their own
//! binary beside this folder.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../common/mod.rs"]
mod common;

mod api;
mod api_errors;
mod browser;
mod hardening;
mod mcp_http;
mod mcp_http_errors;
mod openai_python;
mod openai_python_errors;
mod ops;
mod ops_fleet;
mod routines;
mod schemathesis;
mod stored_entrances;
mod stored_shutdown;
mod stored_store_errors;
mod token;
