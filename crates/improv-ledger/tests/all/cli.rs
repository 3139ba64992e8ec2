//! `improv ledger` subcommands, parsed by clap and run against a real state directory.
#![cfg(feature = "cli")]
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may unwrap

use clap::Parser;
use improv_ledger::cli::{LedgerCommand, run_to};
use serde_json::Value;
use std::path::Path;

#[derive(Parser)]
struct Improv {
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Option<LedgerCommand>,
}

fn improv(state: &Path, args: &[&str]) -> anyhow::Result<String> {
    let cli = Improv::try_parse_from(std::iter::once("ledger").chain(args.iter().copied()))?;
    let mut out = Vec::new();
    run_to(cli.command, state, cli.json, &mut out)?;
    Ok(String::from_utf8(out)?)
}

#[test]
fn the_director_imports_lists_settles_evolves_and_exports() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join(".improv");
    let out = improv(&state, &[]).unwrap();
    assert!(out.contains("no collections yet"), "{out}");

    let file = dir.path().join("leads.jsonl");
    let mut lines: Vec<String> = (0..30)
        .map(|i| {
            format!(
                r#"{{"name": "n{i}", "email": "n{i}@example.org", "stage": "{}"}}"#,
                ["new", "won", "lost"][i % 3]
            )
        })
        .collect();
    lines.push("{broken".into());
    std::fs::write(&file, lines.join("\n")).unwrap();
    let out = improv(
        &state,
        &["import", file.to_str().unwrap(), "--collection", "leads"],
    )
    .unwrap();
    assert!(
        out.contains("imported 30 entries into leads, 1 rejected"),
        "{out}"
    );

    let out = improv(&state, &[]).unwrap();
    assert!(
        out.contains("leads  settling  30 records, 1 rejects"),
        "{out}"
    );
    assert!(out.contains("email  string(email)"), "{out}");
    assert!(
        out.contains("stage  string  (one of lost, new, won)"),
        "{out}"
    );

    let listed: Value = serde_json::from_str(&improv(&state, &["--json"]).unwrap()).unwrap();
    assert_eq!(listed["collections"][0]["name"], "leads");
    assert_eq!(listed["collections"][0]["state"], "settling");
    assert_eq!(listed["collections"][0]["records"], 30);

    let out = improv(&state, &["settle", "leads"]).unwrap();
    assert!(out.contains("settled leads (schema version 1)"), "{out}");
    assert!(out.contains("CREATE TABLE \"leads\""), "{out}");
    assert!(state.join("schemas/leads.schema.json").exists());

    let extra = dir.path().join("more.json");
    std::fs::write(
        &extra,
        r#"[{"name": "z", "email": "z@example.org", "stage": "new", "phone": "1"}]"#,
    )
    .unwrap();
    let out = improv(
        &state,
        &["import", extra.to_str().unwrap(), "--collection", "leads"],
    )
    .unwrap();
    assert!(out.contains("new fields proposed: phone"), "{out}");
    let out = improv(&state, &["evolve", "leads"]).unwrap();
    assert!(out.contains("phone  string  (1 entries"), "{out}");
    let out = improv(&state, &["evolve", "leads", "--accept", "phone"]).unwrap();
    assert!(
        out.contains("ALTER TABLE \"leads\" ADD COLUMN \"phone\" TEXT;"),
        "{out}"
    );
    assert!(
        improv(
            &state,
            &["evolve", "leads", "--accept", "x", "--reject", "y"]
        )
        .is_err()
    );

    let out = improv(&state, &["rejects", "leads"]).unwrap();
    assert!(out.contains("reason: line 31: malformed JSON"), "{out}");
    assert!(out.contains("entry:  {broken"), "{out}");

    let out = improv(&state, &["export", "leads"]).unwrap();
    assert_eq!(out.lines().count(), 31);
    let out = improv(&state, &["export", "leads", "--csv"]).unwrap();
    assert!(
        out.starts_with("id,performance,actor,at,email,name,stage,phone\n"),
        "{out}"
    );
    let error = improv(&state, &["export", "ghosts"])
        .unwrap_err()
        .to_string();
    assert!(error.contains("no collection named `ghosts`"), "{error}");
}

#[test]
fn the_director_reads_a_collection_with_query() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join(".improv");
    let file = dir.path().join("scores.csv");
    std::fs::write(&file, "name,score\nada,3\nbob,9\neve,5\n").unwrap();
    improv(
        &state,
        &["import", file.to_str().unwrap(), "--collection", "scores"],
    )
    .unwrap();
    let out = improv(
        &state,
        &[
            "query",
            "scores",
            "--where",
            r#"{"score": {">": 4}}"#,
            "--order-by",
            "-score",
        ],
    )
    .unwrap();
    let names: Vec<String> = out
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap()["name"].to_string())
        .collect();
    assert_eq!(names, vec!["\"bob\"", "\"eve\""], "{out}");
    let out = improv(&state, &["query", "scores", "--limit", "1"]).unwrap();
    assert_eq!(out.lines().count(), 1, "{out}");
    let error = improv(&state, &["query", "scores", "--where", "{oops"])
        .unwrap_err()
        .to_string();
    assert!(error.contains("--where must be JSON"), "{error}");
    let error = improv(&state, &["query", "scores", "--schema"])
        .unwrap_err()
        .to_string();
    assert!(error.contains("not settled yet"), "{error}");
    improv(&state, &["settle", "scores"]).unwrap();
    let schema: Value =
        serde_json::from_str(&improv(&state, &["query", "scores", "--schema"]).unwrap()).unwrap();
    assert_eq!(schema["properties"]["score"]["type"], "integer");
}
