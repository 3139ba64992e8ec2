//! What the channel tests share: the platform fakes, an in-memory store, and a performer that
//! drives the kernel's real loop with a scripted model.
#![allow(dead_code)]

pub mod fake;
pub mod store;

use async_trait::async_trait;
use improv_channel::ChannelError;
use improv_channel::conversation::{self, Performer, Request};
use improv_kernel::{Actor, Event, Message, Performance, ScriptedModel, ScriptedTurn, Tape};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use tokio_util::sync::CancellationToken;

/// One performance: its intent, the thread's previous performance, what the model was sent.
pub type Performed = (String, Option<String>, Vec<Vec<Message>>);

/// Performs each request with the next script, on the kernel loop: a new performance, or the
/// thread's previous one resumed from its events with the message as its sender's (`hear`), as the door's
/// performer does.
#[derive(Default)]
pub struct KernelPerformer {
    scripts: Mutex<VecDeque<Vec<ScriptedTurn>>>,
    logs: Mutex<HashMap<String, Vec<Event>>>,
    /// Every request: the intent, the previous performance, what the model was sent.
    pub performed: Mutex<Vec<Performed>>,
    asked: Mutex<usize>,
}

impl KernelPerformer {
    pub fn new(scripts: Vec<Vec<ScriptedTurn>>) -> Self {
        KernelPerformer {
            scripts: Mutex::new(scripts.into()),
            ..Default::default()
        }
    }
    /// Performances asked for (counted before anything can fail).
    pub fn count(&self) -> usize {
        *self.asked.lock().unwrap()
    }
}

#[async_trait]
impl Performer for KernelPerformer {
    async fn perform(&self, request: Request) -> Result<conversation::Performed, ChannelError> {
        *self.asked.lock().unwrap() += 1;
        let script = self
            .scripts
            .lock()
            .unwrap()
            .pop_front()
            .expect("a script for every performance");
        let model = Arc::new(ScriptedModel::new(script));
        let actor = Actor {
            name: "lead".into(),
            system: "You answer chat messages.".into(),
            model: model.clone(),
            props: std::iter::once(request.reply.clone())
                .chain(request.send.clone())
                .collect(),
            max_output_tokens: None,
        };
        let recorder = Arc::new(Tape::default());
        let builder = Performance::builder(actor)
            .observer(request.observer.clone())
            .observer(recorder.clone());
        let mut past = Vec::new();
        let mut performance = match &request.previous {
            Some(previous) => {
                past = self.logs.lock().unwrap()[previous].clone();
                let mut p = builder.resume(&past).unwrap();
                p.hear(&request.from, &request.intent).unwrap();
                p
            }
            None => builder.start(&request.intent).unwrap(),
        };
        let ended = performance.act(&CancellationToken::new()).await;
        let id = performance.id().to_string();
        past.extend(recorder.events());
        self.logs.lock().unwrap().insert(id.clone(), past);
        self.performed
            .lock()
            .unwrap()
            .push((request.intent, request.previous, model.requests()));
        Ok(conversation::Performed {
            id,
            outcome: ended.outcome,
        })
    }
}

/// The stage the tests' doors belong to: one named stage, unless a test sets two side by side.
pub fn stage() -> improv_store::StageKey {
    improv_store::StageKey {
        name: Some("shop".into()),
        path: "/srv/shop/stage.toml".into(),
    }
}
