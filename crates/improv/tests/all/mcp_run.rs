//! `improv run` with a stage that declares `[[props.mcp]]`: the reference filesystem server
//! (installed by crates/improv-mcp/ci-setup.sh) is called by a scripted lead through the real
//! binary, on a first run (no cached tool list: attaching starts the server) and a second one
//! (cached list: the first call starts it).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// server-filesystem's entry point; fails loudly when the reference servers are not installed.
fn filesystem_server() -> PathBuf {
    let index = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../improv-mcp/tests/servers/node_modules/@modelcontextprotocol/server-filesystem/dist/index.js");
    assert!(
        index.is_file(),
        "the reference MCP servers are not installed ({} is missing): run crates/improv-mcp/ci-setup.sh",
        index.display()
    );
    index.canonicalize().unwrap()
}

fn improv(dir: &Path) -> Command {
    let mut c = common::improv_command();
    c.current_dir(dir)
        .env_remove("OPENAI_API_KEY")
        .env_remove("ANTHROPIC_API_KEY")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null());
    c
}

/// The tool results of a `--json` run: (name, ok, output).
fn tool_results(stdout: &[u8]) -> Vec<(String, bool, String)> {
    String::from_utf8_lossy(stdout)
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|e| e["type"] == "tool_call_finished")
        .map(|e| {
            (
                e["name"].as_str().unwrap().to_string(),
                e["ok"].as_bool().unwrap(),
                e["output"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn improv_run_calls_the_tools_of_a_stage_mcp_server() {
    let server = filesystem_server();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().canonicalize().unwrap();
    std::fs::write(root.join("note.txt"), "written before the run\n").unwrap();
    std::fs::write(
        root.join("stage.toml"),
        format!(
            "[stage]\nname = \"mcp-run\"\nintent = \"Read note.txt with the fs server.\"\n\n\
             [[props.mcp]]\nname = \"fs\"\ncommand = \"node\"\nargs = [{server:?}, {root:?}]\n\n\
             [[actor]]\nname = \"lead\"\nmodel = \"scripted/script.json\"\nprops = [\"fs\"]\n",
            server = server.to_str().unwrap(),
            root = root.to_str().unwrap(),
        ),
    )
    .unwrap();
    let note = root.join("note.txt");
    let script = json!([
        {"calls": [{"name": "fs.read_text_file", "arguments": {"path": note}}]},
        {"calls": [{"name": "fs.list_directory", "arguments": {"path": root}}]},
        {"say": "The note says it was written before the run."}
    ]);
    std::fs::write(root.join("script.json"), script.to_string()).unwrap();

    for pass in [
        "first run (tool list fetched)",
        "second run (tool list cached)",
    ] {
        let out = improv(&root).args(["run", "--json"]).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{pass}: {stderr}");
        let results = tool_results(&out.stdout);
        assert_eq!(results.len(), 2, "{pass}: {results:?}\n{stderr}");
        assert_eq!(
            results[0],
            (
                "fs.read_text_file".to_string(),
                true,
                "written before the run\n".to_string()
            ),
            "{pass}"
        );
        let (name, ok, listing) = &results[1];
        assert_eq!((name.as_str(), *ok), ("fs.list_directory", true), "{pass}");
        assert!(listing.contains("[FILE] note.txt"), "{pass}: {listing}");
    }
    assert!(
        root.join(".improv/mcp/fs.json").is_file(),
        "the tool list is cached for the next run"
    );
}
