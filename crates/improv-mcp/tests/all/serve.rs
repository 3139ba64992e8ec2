//! improv as an MCP server, driven by the official `mcp` Python SDK as the client: a stage with
//! a scripted model is performed through the `perform` tool (with progress notifications), its
//! ledger read through `ledger_query`, and its settled schemas listed and read as resources.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use improv_ledger::{Ledger, LedgerOptions, Provenance};
use serde_json::{Value, json};
use std::path::Path;
use std::process::Command;

const CLIENT: &str = r#"
import asyncio, json, sys
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client

async def main():
    server = StdioServerParameters(command=sys.argv[1], args=[sys.argv[2]], env={"HOME": sys.argv[3]})
    out = {"progress": []}
    async def progress(p, total, message):
        out["progress"].append(message)
    async with stdio_client(server) as (read, write):
        async with ClientSession(read, write) as session:
            init = await session.initialize()
            out["server"] = init.server_info.name
            out["tools"] = sorted(t.name for t in (await session.list_tools()).tools)
            r = await session.call_tool("perform", {"intent": "Say what hello.txt says."}, progress_callback=progress)
            out["perform"] = {"error": r.is_error, "text": r.content[0].text, "structured": r.structured_content}
            r = await session.call_tool("ledger_query", {"collection": "leads", "where": {"score": {">": 1}}})
            out["query"] = {"error": r.is_error, "structured": r.structured_content}
            r = await session.call_tool("ledger_query", {"collection": "Bad Name"})
            out["bad_query"] = {"error": r.is_error, "text": r.content[0].text}
            res = (await session.list_resources()).resources
            out["resources"] = [str(x.uri) for x in res]
            if res:
                out["schema"] = json.loads((await session.read_resource(res[0].uri)).contents[0].text)
    print(json.dumps(out))

asyncio.run(main())
"#;

fn python_with_mcp() -> &'static str {
    let ok = Command::new("python3")
        .args(["-c", "import mcp"])
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "python3 with the `mcp` package is needed as the MCP client: run crates/improv-mcp/ci-setup.sh"
    );
    "python3"
}

fn stage(dir: &Path) {
    let script = dir.join("script.json");
    std::fs::write(
        &script,
        json!([
            {"calls": [{"name": "read", "arguments": {"path": "hello.txt"}}]},
            {"say": "The file says hello from the stage."}
        ])
        .to_string(),
    )
    .unwrap();
    std::fs::write(dir.join("hello.txt"), "hello from the stage\n").unwrap();
    std::fs::write(
        dir.join("stage.toml"),
        format!(
            "[stage]\nname = \"served\"\n\n[[actor]]\nname = \"lead\"\nmodel = \"scripted/{}\"\nprops = [\"read\"]\n",
            script.display()
        ),
    )
    .unwrap();
    // A ledger with one settled collection.
    let ledger = Ledger::open_in(dir.join(".improv"), LedgerOptions::default()).unwrap();
    let who = Provenance::new("seed", "test");
    for (name, score) in [("Ada", 3), ("Bob", 1), ("Cy", 2)] {
        ledger
            .record("leads", json!({"name": name, "score": score}), &who)
            .unwrap();
    }
    ledger.settle("leads").unwrap();
}

#[test]
fn the_python_sdk_performs_a_stage_and_reads_its_ledger() {
    let python = python_with_mcp();
    let dir = tempfile::tempdir().unwrap();
    stage(dir.path());
    let home = tempfile::tempdir().unwrap();
    let client = dir.path().join("client.py");
    std::fs::write(&client, CLIENT).unwrap();
    let out = Command::new(python)
        .arg(&client)
        .arg(env!("CARGO_BIN_EXE_improv-mcp-stage"))
        .arg(dir.path())
        .arg(home.path())
        .env("HOME", home.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "the client failed: {stderr}");
    let got: Value = serde_json::from_slice(&out.stdout).unwrap();

    assert_eq!(got["server"], "improv:served");
    assert_eq!(got["tools"], json!(["ledger_query", "perform"]));

    let perform = &got["perform"];
    assert_eq!(perform["error"], false, "{perform}");
    let text = perform["text"].as_str().unwrap();
    assert!(
        text.starts_with("done (the actor ended its turn), performance "),
        "{text}"
    );
    assert!(
        text.ends_with("The file says hello from the stage."),
        "{text}"
    );
    assert_eq!(perform["structured"]["outcome"], "done");
    assert_eq!(perform["structured"]["spent"]["tool_calls"], 1);
    // Progress: each turn and the prop call, in order.
    assert_eq!(
        got["progress"],
        json!(["lead: turn 1", "lead: read", "lead: turn 2"]),
    );
    // The performance is in the stage's log like any other.
    let id = perform["structured"]["id"].as_str().unwrap();
    let logged = std::fs::read_dir(dir.path().join(".improv"))
        .unwrap()
        .flatten()
        .any(|e| e.file_name().to_string_lossy().contains(id))
        || walk_contains(&dir.path().join(".improv"), id);
    assert!(logged, "performance {id} is not in .improv/");

    let entries = got["query"]["structured"]["entries"].as_array().unwrap();
    let names: Vec<&str> = entries
        .iter()
        .map(|e| e["value"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["Ada", "Cy"]);
    assert_eq!(got["bad_query"]["error"], true, "{}", got["bad_query"]);

    assert_eq!(got["resources"], json!(["improv://schema/leads"]));
    let schema = &got["schema"];
    assert!(schema["properties"]["score"].is_object(), "{schema}");
}

fn walk_contains(dir: &Path, needle: &str) -> bool {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .any(|e| {
            let p = e.path();
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().contains(needle))
                || (p.is_dir() && walk_contains(&p, needle))
        })
}
