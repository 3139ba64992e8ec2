//! A routine's step replayed in place of the model's reply is logged as `routine_step`; resuming
//! from the log must rebuild it as the assistant's call, so the tool result that follows answers
//! a call the conversation has (a provider rejects a tool result without its call).

#![allow(clippy::unwrap_used)]

use improv_kernel::resume::replay;
use improv_kernel::{Event, EventKind, Message, ToolCall};

fn event(seq: u64, kind: EventKind) -> Event {
    Event {
        seq,
        at: "2026-11-29T00:00:00.000Z".into(),
        actor: Some("lead".into()),
        kind,
    }
}

#[test]
fn a_replayed_step_resumes_as_the_call_it_stands_for() {
    let call = ToolCall {
        id: "routine-greet-1".into(),
        name: "read".into(),
        arguments: r#"{"path":"template.txt"}"#.into(),
    };
    let events = vec![
        event(
            0,
            EventKind::DirectorNote {
                text: "Greet Ann".into(),
            },
        ),
        event(
            1,
            EventKind::RoutineStep {
                routine: "greet".into(),
                step: 1,
                call: call.clone(),
                within: None,
            },
        ),
        event(
            2,
            EventKind::ToolCallFinished {
                call_id: call.id.clone(),
                name: "read".into(),
                ok: true,
                output: "Dear".into(),
                duration_ms: 1.0,
            },
        ),
        // A step run inside a `routine.NAME` prop call is not a reply of its own.
        event(
            3,
            EventKind::RoutineStep {
                routine: "greet".into(),
                step: 1,
                call: call.clone(),
                within: Some("routine.greet-p".into()),
            },
        ),
    ];
    let past = replay(&events);
    assert_eq!(
        past.conversation,
        vec![
            Message::user("Greet Ann"),
            Message::Assistant {
                text: String::new(),
                tool_calls: vec![call.clone()],
            },
            Message::Tool {
                call_id: call.id,
                name: "read".into(),
                content: "Dear".into(),
                is_error: false,
            },
        ]
    );
    assert!(past.unanswered.is_empty());
}
