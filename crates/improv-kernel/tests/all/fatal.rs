//! A prop call that must end the turn (`PropError::Fatal`) ends the performance `failed` with
//! its reason instead of answering the model, and leaves the conversation whole.

#![allow(clippy::unwrap_used)]

use async_trait::async_trait;
use improv_kernel::*;
use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// A prop whose every call fails as `fatal` says, counting its calls.
struct Failing {
    spec: ToolSpec,
    fatal: bool,
    calls: AtomicUsize,
}

impl Failing {
    fn new(name: &str, fatal: bool) -> Arc<Self> {
        Arc::new(Failing {
            spec: ToolSpec {
                name: name.into(),
                description: String::new(),
                parameters: json!({"type": "object"}),
            },
            fatal,
            calls: AtomicUsize::new(0),
        })
    }
}

#[async_trait]
impl Prop for Failing {
    fn spec(&self) -> &ToolSpec {
        &self.spec
    }
    async fn call(&self, _: serde_json::Value, _: &PropContext) -> Result<String, PropError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        Err(if self.fatal {
            PropError::fatal("the ledger's disk is gone")
        } else {
            PropError::new("try again")
        })
    }
}

#[tokio::test]
async fn a_fatal_prop_error_ends_the_performance_failed_with_its_reason() {
    let doomed = Failing::new("doomed", true);
    let after = Failing::new("after", false);
    let model = Arc::new(ScriptedModel::new(vec![
        ScriptedTurn::call("doomed", json!({})).and_call("after", json!({})),
        ScriptedTurn::say("never asked"),
    ]));
    let actor = Actor {
        name: "lead".into(),
        system: "test".into(),
        model,
        props: vec![doomed.clone(), after.clone()],
        max_output_tokens: None,
    };
    let mut p = Performance::builder(actor).start("go").unwrap();
    let ended = p.act(&Default::default()).await;
    assert_eq!(ended.outcome, Outcome::Failed);
    assert_eq!(ended.reason, "the ledger's disk is gone");
    // The model was not asked again, the call after it did not run, and both were answered.
    assert_eq!(p.spent().turns, 1);
    assert_eq!(after.calls.load(Ordering::SeqCst), 0);
    let answers: Vec<&str> = p
        .conversation()
        .iter()
        .filter_map(|m| match m {
            Message::Tool { content, .. } => Some(content.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(
        answers,
        [
            "the ledger's disk is gone",
            "not run: the ledger's disk is gone"
        ]
    );
    p.finish(&ended).unwrap();
}
