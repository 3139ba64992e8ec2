//! `improv memory --store URL` (or `IMPROV_STORE`) lists, edits and forgets the memories kept
//! in a PostgreSQL store, where workers keep them, not the stage folder's: the real binary
//! against a throwaway PostgreSQL server (TempPostgres).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use improv_store::testing::TempPostgres;
use std::path::Path;
use std::process::{Command, Stdio};

fn improv(dir: &Path, args: &[&str]) -> String {
    let mut c: Command = common::improv_command();
    let out = c
        .current_dir(dir)
        .args(["memory"])
        .args(args)
        .env_remove("IMPROV_STORE")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "improv memory {args:?}: {stderr}");
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn the_director_reads_and_changes_the_memory_in_the_store() {
    let server = TempPostgres::start_new();
    let url = server.create_database("memory");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("stage.toml"),
        "[stage]\nname = \"shop\"\n\n[[actor]]\nname = \"lead\"\nmodel = \"openai/mock\"\nprops = [\"remember\"]\n",
    )
    .unwrap();
    let d = dir.path();

    let added = improv(
        d,
        &[
            "--store",
            &url,
            "add",
            "The staging database is on port 6543.",
        ],
    );
    assert!(added.contains("added memory #1"), "{added}");
    let listed = improv(d, &["--store", &url]);
    assert!(
        listed.contains("staging database is on port 6543"),
        "{listed}"
    );
    // The stage folder keeps none of it.
    let folder = improv(d, &[]);
    assert!(folder.contains("no memories yet"), "{folder}");

    // IMPROV_STORE names the store as --store does.
    let mut c = common::improv_command();
    let out = c
        .current_dir(d)
        .args([
            "memory",
            "--json",
            "edit",
            "1",
            "The staging database is on port 7000.",
        ])
        .env("IMPROV_STORE", &url)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let shown = improv(d, &["--store", &url, "--json", "search", "staging"]);
    assert!(shown.contains("port 7000"), "{shown}");

    let forgot = improv(d, &["--store", &url, "forget", "1"]);
    assert!(forgot.contains("forgot memory #1"), "{forgot}");
    let empty = improv(d, &["--store", &url]);
    assert!(
        empty.contains("no memories yet in the store's memory of stage shop"),
        "{empty}"
    );
}
