//! A turn that wrote is known by the access of the props it called, whoever provides them: a
//! ledger `record` (or an MCP tool) that writes triggers the checks as a file write does.

#![allow(clippy::unwrap_used)]

use improv_kernel::{EventKind, Outcome};
use improv_log::EventLog;
use improv_perform::{Launch, Production, state_dir};
use improv_stage::Stage;
use serde_json::json;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

#[tokio::test]
async fn a_ledger_record_triggers_the_write_checks() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(
        d.join("stage.toml"),
        r#"
[[actor]]
name = "lead"
model = "scripted/lead.json"
props = ["record"]

[[feedback.check]]
name = "ready"
file = "ready.txt"
contains = "ready"
"#,
    )
    .unwrap();
    std::fs::write(d.join("ready.txt"), "ready").unwrap();
    let record = json!({"calls": [{"name": "record", "arguments": {
        "collection": "findings", "entry": {"title": "one"}
    }}]});
    // Were the record not known as a write, the lead would go on to its second turn.
    std::fs::write(
        d.join("lead.json"),
        json!([record, {"say": "done"}]).to_string(),
    )
    .unwrap();

    let stage = Arc::new(Stage::load(&d.join("stage.toml")).unwrap());
    let (mut p, _notes) = Production::open(stage.clone(), Launch::new("record one")).unwrap();
    let ended = p.perform(&CancellationToken::new()).await;
    let summary = p.finish(&ended).unwrap();
    assert_eq!(summary.outcome, Outcome::Converged, "{}", summary.reason);
    assert_eq!(
        summary.spent.turns, 1,
        "the checks ran right after the record"
    );
    let events = EventLog::open(&state_dir(&stage))
        .unwrap()
        .events(&summary.id)
        .unwrap();
    let on: Vec<&str> = events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::CheckFinished { on, .. } => Some(on.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(on, ["write"]);
}

#[test]
fn the_props_say_what_the_registry_says_of_them() {
    let dir = tempfile::tempdir().unwrap();
    let config = improv_props::PropsConfig::default();
    let mut props: Vec<Arc<dyn improv_kernel::Prop>> = improv_props::CORE
        .iter()
        .map(|name| improv_props::prop(name, &config).unwrap())
        .collect();
    let ledger = improv_ledger::Ledger::open_in(dir.path(), Default::default()).unwrap();
    props.extend(improv_ledger::props(Arc::new(ledger)));
    let memory = improv_memory::Memory::open_in(dir.path()).unwrap();
    props.extend(improv_memory::props(Arc::new(memory)));
    let core: Vec<&str> = improv_props::CORE.to_vec();
    assert_eq!(core, improv_stage::CORE_PROPS);
    for prop in props {
        let name = &prop.spec().name;
        let info = improv_stage::props::find(name).unwrap();
        // What a call with no arguments says: these props' access does not depend on them.
        assert_eq!(prop.access(&json!({})), info.access, "{name}");
    }
}
