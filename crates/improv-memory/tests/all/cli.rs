//! `improv memory` subcommands, parsed by clap and run against a real state directory.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use clap::Parser;
use improv_memory::cli::{MemoryCommand, run_to};
use improv_memory::{Memory, MemoryError, Provenance};
use serde_json::Value;
use std::path::Path;

#[derive(Parser)]
struct Improv {
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Option<MemoryCommand>,
}

fn improv(state: &Path, args: &[&str]) -> Result<String, MemoryError> {
    let cli = Improv::try_parse_from(std::iter::once("memory").chain(args.iter().copied()))
        .unwrap_or_else(|e| panic!("{args:?}: {e}"));
    let mut out = Vec::new();
    run_to(cli.command, state, cli.json, &mut out)?;
    Ok(String::from_utf8(out).unwrap())
}

#[test]
fn the_director_lists_searches_adds_edits_and_forgets() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join(".improv");

    let out = improv(&state, &[]).unwrap();
    assert!(
        out.contains("no memories yet") && out.contains("improv memory add"),
        "{out}"
    );

    Memory::open_in(&state)
        .unwrap()
        .remember(
            "The build fails without libssl-dev; install it first.",
            &["build".into()],
            None,
            &Provenance::new("lead", "0194abc"),
        )
        .unwrap();
    let out = improv(
        &state,
        &[
            "add",
            "Deploys go through staging first.",
            "--tag",
            "deploy",
            "--key",
            "deploy",
        ],
    )
    .unwrap();
    assert_eq!(out, "added memory #2\n");
    let out = improv(
        &state,
        &[
            "add",
            "Deploys go through staging, then canary.",
            "--key",
            "deploy",
        ],
    )
    .unwrap();
    assert_eq!(out, "replaced memory #2\n");

    // A table, newest first, with who saved each memory.
    let out = improv(&state, &["list"]).unwrap();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    assert!(
        lines[0].starts_with("ID") && lines[0].contains("TEXT"),
        "{out}"
    );
    assert!(
        lines[1].starts_with("2 ")
            && lines[1].contains("key:deploy")
            && lines[1].contains("director")
            && lines[1].contains("canary"),
        "{out}"
    );
    assert!(
        lines[2].starts_with("1 ")
            && lines[2].contains("lead in 0194abc")
            && lines[2].contains("build"),
        "{out}"
    );
    // Columns line up.
    assert_eq!(
        lines[1].find("Deploys"),
        lines[2].find("The build"),
        "{out}"
    );

    let out = improv(&state, &["search", "libssl"]).unwrap();
    assert_eq!(out.lines().count(), 2, "{out}");
    assert!(out.contains("libssl-dev"), "{out}");
    let out = improv(&state, &["search", "foo\"bar AND("]).unwrap();
    assert_eq!(out, "no memories match `foo\"bar AND(`\n");

    let out = improv(
        &state,
        &["edit", "1", "The build needs libssl-dev and pkg-config."],
    )
    .unwrap();
    assert_eq!(out, "edited memory #1\n");
    let out = improv(&state, &["--json", "search", "pkg-config"]).unwrap();
    let found: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(found[0]["id"], 1);
    assert_eq!(found[0]["actor"], "lead");
    assert_eq!(found[0]["performance"], "0194abc");
    assert_eq!(found[0]["tags"][0], "build");
    assert!(
        found[0]["snippet"].as_str().unwrap().contains("pkg"),
        "{out}"
    );

    let out = improv(&state, &["forget", "2"]).unwrap();
    assert!(
        out.starts_with("forgot memory #2: Deploys go through staging"),
        "{out}"
    );
    let err = improv(&state, &["forget", "2"]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "no memory #2; `improv memory list` shows the ids"
    );

    let out = improv(&state, &["--json"]).unwrap();
    let all: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(all.as_array().unwrap().len(), 1);
    assert_eq!(all[0]["text"], "The build needs libssl-dev and pkg-config.");
    assert!(all[0].get("key").is_none());

    let err = improv(&state, &["add", "   "]).unwrap_err();
    assert!(matches!(err, MemoryError::Empty));
}
