//! The performance loop: an actor's model is called, its tool calls are run, the results go back,
//! until the model ends its turn or an edge stops it. [`Performance::act`] is the whole loop.

use crate::budget::{Budget, BudgetHook, BudgetKind, Spent};
use crate::event::{Event, EventKind, ObserveError, Observer, Outcome};
use crate::hook::{Between, Control, Hook};
use crate::message::{Message, ToolCall, ToolSpec};
use crate::model::{Model, ModelUpdate, Reply, Request, StopReason, Usage};
use crate::prop::{Access, EventSink, Prop, PropContext, PropError};
use futures::future::join_all;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// The tool-call time limit when neither the stage nor the prop sets one.
pub const DEFAULT_TOOL_TIMEOUT: Duration = Duration::from_secs(120);

/// Sent back instead of running calls from a reply cut off by the output-token limit: their
/// arguments may parse and still be incomplete.
pub const CUT_OFF: &str = "not run: your reply hit the output-token limit, so this call's arguments may be incomplete. Re-issue the call, with shorter arguments if needed.";

const INTERRUPTED: &str =
    "not finished: the performance was interrupted. Re-issue the call if it is still needed.";

/// A tool call ready to run (its prop and parsed arguments), or the error the model gets instead.
type Prepared = Result<(Arc<dyn Prop>, serde_json::Value), String>;

/// One member of the cast, ready to perform.
pub struct Actor {
    /// The actor's name in the cast (`lead`, `critic`); its events carry it.
    pub name: String,
    /// The system prompt: role, context and conventions. Sent unchanged on every turn, so
    /// provider prompt caches keep hitting it.
    pub system: String,
    /// The model that speaks for the actor; a hook may switch it between turns.
    pub model: Arc<dyn Model>,
    /// The props the actor may call, each already wrapped in the stage's edges.
    pub props: Vec<Arc<dyn Prop>>,
    /// Most tokens one reply may have; the provider's default when `None`.
    pub max_output_tokens: Option<u32>,
}

/// How a call to [`Performance::act`] ended.
#[derive(Clone, Debug, PartialEq)]
pub struct Ended {
    /// How the performance ended.
    pub outcome: Outcome,
    /// Why, in words for the director: the actor's last reply, the budget spent, the error.
    pub reason: String,
    /// The budget that ended it, when one did.
    pub budget: Option<BudgetKind>,
}

impl Ended {
    /// How a performance ended, no budget to blame.
    pub fn new(outcome: Outcome, reason: impl Into<String>) -> Self {
        Ended {
            outcome,
            reason: reason.into(),
            budget: None,
        }
    }

    /// The same, naming the budget that ended it, if one did.
    pub fn with_budget(self, budget: Option<BudgetKind>) -> Self {
        Ended { budget, ..self }
    }
}

/// Sets up a performance: who acts, where, within which budget, and who watches.
pub struct PerformanceBuilder {
    id: Option<String>,
    stage: String,
    actor: Actor,
    workspace: PathBuf,
    budget: Budget,
    hooks: Vec<Arc<dyn Hook>>,
    observers: Vec<Arc<dyn Observer>>,
    tool_timeout: Duration,
}

impl PerformanceBuilder {
    /// The performance's id (the store's and the log's name for it); a fresh one when unset.
    pub fn id(mut self, id: impl Into<String>) -> Self {
        self.id = Some(id.into());
        self
    }
    /// Name of the stage it is performed on, as `performance_started` logs it.
    pub fn stage(mut self, name: impl Into<String>) -> Self {
        self.stage = name.into();
        self
    }
    /// The folder the props work in (canonicalized); the current folder when unset.
    pub fn workspace(mut self, root: impl Into<PathBuf>) -> Self {
        self.workspace = root.into();
        self
    }
    /// The limits the performance stops at; unlimited when unset.
    pub fn budget(mut self, budget: Budget) -> Self {
        self.budget = budget;
        self
    }
    /// Adds a hook, run between turns after the ones added before it (see [`Hook`]).
    pub fn hook(mut self, hook: Arc<dyn Hook>) -> Self {
        self.hooks.push(hook);
        self
    }
    /// Adds an observer of the event stream, called after the ones added before it.
    pub fn observer(mut self, observer: Arc<dyn Observer>) -> Self {
        self.observers.push(observer);
        self
    }
    /// The time limit of a prop call whose prop sets none; [`DEFAULT_TOOL_TIMEOUT`] when unset.
    pub fn tool_timeout(mut self, timeout: Duration) -> Self {
        self.tool_timeout = timeout;
        self
    }

    fn build(self, id: String, seq: u64, conversation: Vec<Message>, spent: Spent) -> Performance {
        let deadline = self
            .budget
            .timeout
            .map(|t| Instant::now() + t.saturating_sub(Duration::from_millis(spent.elapsed_ms)));
        let meter = crate::Meter::new(self.budget.clone());
        let budget = self.budget.clone();
        let mut hooks: Vec<Arc<dyn Hook>> = vec![Arc::new(BudgetHook::new(self.budget))];
        hooks.extend(self.hooks);
        let specs = self.actor.props.iter().map(|p| p.spec().clone()).collect();
        let actor: Arc<str> = self.actor.name.into();
        let out = Stream(Arc::new(Mutex::new(Emitter {
            seq,
            actor: actor.clone(),
            observers: self.observers.into(),
            broken: None,
        })));
        Performance {
            stage: self.stage,
            system: self.actor.system,
            model: self.actor.model,
            props: self.actor.props,
            specs,
            max_output_tokens: self.actor.max_output_tokens,
            conversation,
            spent,
            hooks,
            out: out.clone(),
            context: PropContext {
                // Props rely on a canonical root; a root that cannot be canonicalized (it does
                // not exist) is kept as given, and every path under it fails with a clear error.
                events: EventSink::new({
                    let out = out.clone();
                    move |kind| out.emit(kind)
                }),
                workspace: self
                    .workspace
                    .canonicalize()
                    .unwrap_or(self.workspace)
                    .into(),
                actor,
                performance: id.as_str().into(),
                cancel: CancellationToken::new(),
                meter,
            },
            budget,
            id,
            tool_timeout: self.tool_timeout,
            started: Instant::now(),
            elapsed_before: spent.elapsed_ms,
            deadline,
            context_tokens: 0,
            rerun: Vec::new(),
        }
    }

    /// Starts a new performance of `intent`, which becomes the actor's first message.
    pub fn start(self, intent: &str) -> Result<Performance, ObserveError> {
        let id = self.id.clone().unwrap_or_else(new_id);
        let mut p = self.build(id, 0, Vec::new(), Spent::default());
        p.announce(intent, false)?;
        if !intent.is_empty() {
            p.direct(intent)?;
        }
        Ok(p)
    }

    /// Continues a performance from its logged events: the conversation, the spending and the
    /// numbering go on where the log ends. Calls that never finished run on the next
    /// [`Performance::act`] when they never started or their prop says they are
    /// [`Prop::repeatable`]; the others are answered as interrupted (they may have run).
    pub fn resume(self, events: &[Event]) -> Result<Performance, ObserveError> {
        self.resume_from(crate::resume::replay(events))
    }

    /// [`PerformanceBuilder::resume`] from what a replay of the log found, for a reader that
    /// replays the log one event at a time ([`crate::resume::Past::take`]).
    pub fn resume_from(self, past: crate::resume::Past) -> Result<Performance, ObserveError> {
        let id = past.id.clone().or(self.id.clone()).unwrap_or_else(new_id);
        let mut p = self.build(id, past.next_seq, past.conversation, past.spent);
        p.announce(&past.intent, true)?;
        for call in past.unanswered {
            let safe = match p.prepare(&call) {
                Ok((prop, args)) => !past.started.contains(&call.id) || prop.repeatable(&args),
                // Answered with the error again: nothing runs.
                Err(_) => true,
            };
            if safe {
                p.rerun.push(call);
                continue;
            }
            p.out.emit(EventKind::ToolCallFinished {
                call_id: call.id.clone(),
                name: call.name.clone(),
                ok: false,
                output: INTERRUPTED.into(),
                duration_ms: 0.0,
            })?;
            p.conversation.push(Message::Tool {
                call_id: call.id,
                name: call.name,
                content: INTERRUPTED.into(),
                is_error: true,
            });
        }
        Ok(p)
    }
}

/// A performance in progress.
pub struct Performance {
    id: String,
    stage: String,
    system: String,
    model: Arc<dyn Model>,
    props: Vec<Arc<dyn Prop>>,
    specs: Vec<ToolSpec>,
    max_output_tokens: Option<u32>,
    conversation: Vec<Message>,
    spent: Spent,
    hooks: Vec<Arc<dyn Hook>>,
    out: Stream,
    context: PropContext,
    /// The limits the budget hook enforces between turns, checked too between a routine's steps.
    budget: Budget,
    tool_timeout: Duration,
    started: Instant,
    elapsed_before: u64,
    deadline: Option<Instant>,
    context_tokens: u64,
    /// Calls of a resumed reply that are safe to run again, run first by the next act.
    rerun: Vec<ToolCall>,
}

impl Performance {
    /// Starts setting up a performance by `actor`; finish with [`PerformanceBuilder::start`]
    /// or [`PerformanceBuilder::resume`].
    pub fn builder(actor: Actor) -> PerformanceBuilder {
        PerformanceBuilder {
            id: None,
            stage: String::new(),
            actor,
            workspace: PathBuf::from("."),
            budget: Budget::default(),
            hooks: Vec::new(),
            observers: Vec::new(),
            tool_timeout: DEFAULT_TOOL_TIMEOUT,
        }
    }

    /// The performance's id, as its events and the store name it.
    pub fn id(&self) -> &str {
        &self.id
    }
    /// What it has spent so far, across resumptions.
    pub fn spent(&self) -> Spent {
        self.spent
    }
    /// The conversation as the model's next call would send it.
    pub fn conversation(&self) -> &[Message] {
        &self.conversation
    }
    /// The canonical folder its props work in.
    pub fn workspace(&self) -> &Path {
        &self.context.workspace
    }

    fn announce(&mut self, intent: &str, resumed: bool) -> Result<(), ObserveError> {
        self.out.emit(EventKind::PerformanceStarted {
            performance: self.id.clone(),
            stage: self.stage.clone(),
            intent: intent.to_string(),
            model: self.model.name().to_string(),
            resumed,
        })
    }

    /// Emits an event from outside the loop (the edges' `sandbox_started`), numbered and
    /// observed like the loop's own.
    pub fn emit(&mut self, kind: EventKind) -> Result<(), ObserveError> {
        self.out.emit(kind)
    }

    /// The director speaks: the text becomes the actor's next message.
    pub fn direct(&mut self, text: &str) -> Result<(), ObserveError> {
        self.conversation.push(Message::user(text));
        self.out.emit(EventKind::DirectorNote { text: text.into() })
    }

    /// Someone outside the stage speaks (a chat door's sender): `text`, already fenced as
    /// untrusted data, becomes the actor's next message, logged as theirs and not the director's.
    pub fn hear(&mut self, from: &str, text: &str) -> Result<(), ObserveError> {
        self.conversation.push(Message::outside(from, text));
        self.out.emit(EventKind::OutsideMessage {
            from: from.into(),
            text: text.into(),
        })
    }

    fn tick(&mut self) {
        self.spent.elapsed_ms = self.elapsed_before + self.started.elapsed().as_millis() as u64;
    }

    /// Performs until the actor ends its turn, an edge or hook stops it, `cancel` fires, or an
    /// error ends it. The performance can be directed and acted again afterwards.
    pub async fn act(&mut self, cancel: &CancellationToken) -> Ended {
        self.context.cancel = cancel.child_token();
        let rerun = std::mem::take(&mut self.rerun);
        if !rerun.is_empty()
            && let Err(ended) = self.run_calls(rerun, StopReason::ToolUse, cancel).await
        {
            return ended;
        }
        loop {
            // Between turns: stop conditions, director notes, compaction, model switching.
            self.tick();
            let mut at = Between {
                turn: self.spent.turns + 1,
                spent: &self.spent,
                context_tokens: self.context_tokens,
                conversation: &mut self.conversation,
                model: &mut self.model,
                events: Vec::new(),
                spend: Vec::new(),
                cancel,
            };
            let mut stop = None;
            for hook in &self.hooks {
                if let Control::Stop {
                    outcome,
                    reason,
                    budget,
                } = hook.between_turns(&mut at).await
                {
                    stop = Some(Ended {
                        outcome,
                        reason,
                        budget,
                    });
                    break;
                }
            }
            let (events, spend) = (
                std::mem::take(&mut at.events),
                std::mem::take(&mut at.spend),
            );
            for event in events {
                if let Err(e) = self.out.emit(event) {
                    return log_failed(e);
                }
            }
            for usage in spend {
                if let Err(e) = self.account(&usage, 0) {
                    return log_failed(e);
                }
            }
            if let Some(ended) = stop {
                return self.wrap_up(ended, cancel).await;
            }
            if cancel.is_cancelled() {
                return Ended::new(Outcome::Interrupted, "interrupted by the director");
            }
            // Resumed after the actor's last reply ended its turn (its process died before the
            // end was recorded): that reply stands; the model is not asked again.
            if matches!(
                self.conversation.last(),
                Some(Message::Assistant { tool_calls, .. }) if tool_calls.is_empty()
            ) {
                return Ended::new(Outcome::Done, "the actor ended its turn");
            }

            // The model's turn.
            let reply = match self.model_turn(true, cancel).await {
                Ok(reply) => reply,
                Err(ended) => return ended,
            };
            let calls = reply.tool_calls;
            self.conversation.push(Message::Assistant {
                text: reply.text,
                tool_calls: calls.clone(),
            });
            if calls.is_empty() {
                let reason = if reply.stop == StopReason::MaxTokens {
                    "the actor's reply hit the output-token limit"
                } else {
                    "the actor ended its turn"
                };
                return Ended::new(Outcome::Done, reason);
            }

            // The props' turn.
            if let Err(ended) = self.run_calls(calls, reply.stop, cancel).await {
                return ended;
            }
        }
    }

    /// Replays one step of routine `routine` in place of a model's reply: the call is logged as a
    /// `routine_step`, then runs exactly as a model's call would (the same props inside the same
    /// edges, the tool timeout, Ctrl-C and the time budget) and counts against the tool-call
    /// budget. Before it, every budget is checked as between turns: a spent one returns the end
    /// it makes (`stopped`, naming the budget) and the step does not run. Returns whether it
    /// succeeded and what it returned; the call and its result stay in the conversation, so an
    /// actor taking over sees them.
    pub async fn replay_call(
        &mut self,
        routine: &str,
        step: u32,
        call: ToolCall,
        cancel: &CancellationToken,
    ) -> Result<(bool, String), Ended> {
        self.context.cancel = cancel.child_token();
        // Between steps, as between turns: a spent budget ends the replay before the step.
        self.tick();
        crate::Meter::check(&self.budget, &self.spent)?;
        self.spent.tool_calls += 1;
        self.out
            .emit(EventKind::RoutineStep {
                routine: routine.to_string(),
                step,
                call: call.clone(),
                within: None,
            })
            .map_err(log_failed)?;
        self.conversation.push(Message::Assistant {
            text: String::new(),
            tool_calls: vec![call.clone()],
        });
        self.run_calls(vec![call], StopReason::EndTurn, cancel)
            .await?;
        match self.conversation.last() {
            Some(Message::Tool {
                content, is_error, ..
            }) => Ok((!is_error, content.clone())),
            // `run_calls` answers every call it is given with one tool message.
            _ => Ok((false, INTERRUPTED.to_string())),
        }
    }

    /// One call to the model, streamed into events and accounted for; its reply is appended to
    /// the conversation by the caller. Without `tools`, the model can only answer in text.
    async fn model_turn(
        &mut self,
        tools: bool,
        cancel: &CancellationToken,
    ) -> Result<Reply, Ended> {
        self.spent.turns += 1;
        self.out
            .emit(EventKind::TurnStarted {
                turn: self.spent.turns,
            })
            .map_err(log_failed)?;
        self.out.settled().await.map_err(log_failed)?;
        let request = Request {
            system: &self.system,
            messages: &self.conversation,
            tools: if tools { &self.specs } else { &[] },
            max_output_tokens: self.max_output_tokens,
        };
        let out = &self.out;
        let mut update = |u: ModelUpdate<'_>| {
            let kind = match u {
                ModelUpdate::Text(text) => EventKind::TextDelta { text: text.into() },
                ModelUpdate::Retry {
                    attempt,
                    delay,
                    reason,
                } => EventKind::ModelRetry {
                    attempt,
                    delay_ms: delay.as_millis() as u64,
                    reason: reason.into(),
                },
            };
            if let Err(e) = out.emit(kind) {
                out.lock().broken.get_or_insert(e);
            }
        };
        let reply = tokio::select! {
            reply = self.model.respond(request, &mut update) => reply,
            ended = halted(cancel, self.deadline, &self.spent) => return Err(ended),
        };
        let broken = self.out.lock().broken.take();
        if let Some(e) = broken {
            return Err(log_failed(e));
        }
        let reply = reply.map_err(|e| Ended::new(Outcome::Failed, format!("model error: {e}")))?;

        // Account for it.
        self.context_tokens = reply.usage.input_tokens;
        self.spent.tool_calls += reply.tool_calls.len() as u32;
        let replied = EventKind::ModelReplied {
            text: reply.text.clone(),
            tool_calls: reply.tool_calls.clone(),
            stop: reply.stop.clone(),
        };
        self.account(&reply.usage, reply.request_bytes)
            .and_then(|_| self.out.emit(replied))
            .map_err(log_failed)?;
        self.out.settled().await.map_err(log_failed)?;
        Ok(reply)
    }

    /// Adds a model call's tokens and cost to what the performance spent, and logs them.
    fn account(&mut self, usage: &Usage, request_bytes: u64) -> Result<(), ObserveError> {
        let cost = self.model.price().map_or(0.0, |p| p.cost(usage));
        self.tick();
        let s = &mut self.spent;
        s.input_tokens += usage.input_tokens;
        s.output_tokens += usage.output_tokens;
        s.cached_input_tokens += usage.cached_input_tokens;
        s.cost_usd += cost;
        self.out.emit(EventKind::Usage {
            input_tokens: usage.input_tokens,
            output_tokens: usage.output_tokens,
            cached_input_tokens: usage.cached_input_tokens,
            cost_usd: cost,
            request_bytes,
            spent: self.spent,
        })
    }

    /// A budget ran out: the actor gets one last turn, without props, to say what it did and
    /// what remains; then the performance stops for the reason the budget gave. Time is the
    /// exception: a deadline is not extended.
    async fn wrap_up(&mut self, ended: Ended, cancel: &CancellationToken) -> Ended {
        if ended.budget.is_none() || ended.budget == Some(BudgetKind::Time) {
            return ended;
        }
        let note = format!(
            "{}. You cannot use props any more: reply now with a short summary of what you did and what remains.",
            ended.reason
        );
        if let Err(e) = self.direct(&note) {
            return log_failed(e);
        }
        let reply = match self.model_turn(false, cancel).await {
            Ok(reply) => reply,
            Err(other) => return other,
        };
        let calls = reply.tool_calls;
        self.conversation.push(Message::Assistant {
            text: reply.text,
            tool_calls: calls.clone(),
        });
        // Calls in a reply that was offered no props are answered, never run, so the
        // conversation stays whole for a resume.
        for call in calls {
            let refused = Err(format!("not run: {}", ended.reason));
            if let Err(e) = self.answer(call, refused, 0.0) {
                return e;
            }
        }
        ended
    }

    /// Runs a reply's tool calls: consecutive reads together, each write alone, in order.
    async fn run_calls(
        &mut self,
        calls: Vec<ToolCall>,
        stop: StopReason,
        cancel: &CancellationToken,
    ) -> Result<(), Ended> {
        let parsed: Vec<(ToolCall, Prepared)> = calls
            .into_iter()
            .map(|call| {
                let prepared = if stop == StopReason::MaxTokens {
                    Err(CUT_OFF.to_string())
                } else {
                    self.prepare(&call)
                };
                (call, prepared)
            })
            .collect();
        let mut rest = parsed.into_iter().peekable();
        while let Some(first) = rest.next() {
            let mut batch = vec![first];
            if is_read(&batch[0].1) {
                while rest.peek().is_some_and(|(_, p)| is_read(p)) {
                    batch.extend(rest.next());
                }
            }
            for (call, _) in &batch {
                self.out
                    .emit(EventKind::ToolCallStarted {
                        call_id: call.id.clone(),
                        name: call.name.clone(),
                        arguments: call.arguments.clone(),
                    })
                    .map_err(log_failed)?;
            }
            self.out.settled().await.map_err(log_failed)?;
            self.tick();
            self.context.meter.begin(self.spent);
            let context = &self.context;
            let default_timeout = self.tool_timeout;
            let running = join_all(batch.iter().map(|(_, prepared)| async move {
                let began = Instant::now();
                let result = match prepared {
                    Err(message) => Err(PropError::new(message.clone())),
                    Ok((prop, args)) => {
                        let limit = prop.timeout().unwrap_or(default_timeout);
                        match tokio::time::timeout(limit, prop.call(args.clone(), context)).await {
                            Ok(r) => r,
                            Err(_) => Err(PropError::new(format!(
                                "timed out after {}s and was stopped; try a smaller step",
                                limit.as_secs_f64()
                            ))),
                        }
                    }
                };
                (result, began.elapsed().as_secs_f64() * 1000.0)
            }));
            let (results, halt) = tokio::select! {
                results = running => (results, None),
                ended = halted(cancel, self.deadline, &self.spent) => {
                    self.context.cancel.cancel();
                    let results = batch.iter().map(|_| (Err(PropError::new(INTERRUPTED)), 0.0)).collect();
                    (results, Some(ended))
                }
            };
            // Calls the props made on the performance's behalf count as its own.
            self.spent.tool_calls += self.context.meter.nested();
            // A fatal error ends the performance once its batch is answered.
            let mut fatal = None;
            for ((call, _), (result, duration_ms)) in batch.into_iter().zip(results) {
                let result = result.map_err(|e| {
                    if e.is_fatal() && fatal.is_none() {
                        fatal = Some(e.message().to_string());
                    }
                    e.into_message()
                });
                self.answer(call, result, duration_ms)?;
            }
            let halt = halt.or_else(|| fatal.map(|reason| Ended::new(Outcome::Failed, reason)));
            if let Some(ended) = halt {
                let unrun = match ended.outcome {
                    Outcome::Failed => format!("not run: {}", ended.reason),
                    _ => INTERRUPTED.to_string(),
                };
                for (call, _) in rest {
                    self.answer(call, Err(unrun.clone()), 0.0)?;
                }
                return Err(ended);
            }
        }
        Ok(())
    }

    /// Finds the prop and parses the arguments; a failure is a message for the model.
    fn prepare(&self, call: &ToolCall) -> Prepared {
        let Some(prop) = self.props.iter().find(|p| p.spec().name == call.name) else {
            let names: Vec<&str> = self.specs.iter().map(|s| s.name.as_str()).collect();
            return Err(format!(
                "unknown prop `{}`; the props you have are: {}",
                call.name,
                names.join(", ")
            ));
        };
        let raw = call.arguments.trim();
        let args = if raw.is_empty() {
            serde_json::Value::Object(Default::default())
        } else {
            serde_json::from_str(raw).map_err(|e| {
                format!("the arguments are not valid JSON ({e}); re-issue the call with a JSON object that matches the schema")
            })?
        };
        if !args.is_object() {
            return Err("the arguments must be a JSON object that matches the schema".into());
        }
        Ok((prop.clone(), args))
    }

    fn answer(
        &mut self,
        call: ToolCall,
        result: Result<String, String>,
        duration_ms: f64,
    ) -> Result<(), Ended> {
        let (ok, content) = match result {
            Ok(c) => (true, c),
            Err(c) => (false, c),
        };
        self.out
            .emit(EventKind::ToolCallFinished {
                call_id: call.id.clone(),
                name: call.name.clone(),
                ok,
                output: content.clone(),
                duration_ms,
            })
            .map_err(log_failed)?;
        self.conversation.push(Message::Tool {
            call_id: call.id,
            name: call.name,
            content,
            is_error: !ok,
        });
        Ok(())
    }

    /// Ends the performance: emits its outcome and returns what it spent.
    pub fn finish(mut self, ended: &Ended) -> Result<Spent, ObserveError> {
        self.tick();
        self.context.cancel.cancel();
        self.out.emit(EventKind::PerformanceFinished {
            outcome: ended.outcome,
            reason: ended.reason.clone(),
            budget: ended.budget,
            spent: self.spent,
        })?;
        Ok(self.spent)
    }
}

fn is_read(prepared: &Prepared) -> bool {
    match prepared {
        Ok((prop, args)) => prop.access(args) == Access::Read,
        Err(_) => true,
    }
}

/// Resolves when the director interrupts or the wall-clock budget runs out.
async fn halted(cancel: &CancellationToken, deadline: Option<Instant>, spent: &Spent) -> Ended {
    let timeout = async {
        match deadline {
            Some(d) => tokio::time::sleep_until(d.into()).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = cancel.cancelled() => Ended::new(Outcome::Interrupted, "interrupted by the director"),
        _ = timeout => Ended {
            outcome: Outcome::Stopped,
            reason: format!("time budget spent during turn {}", spent.turns),
            budget: Some(BudgetKind::Time),
        },
    }
}

fn log_failed(e: ObserveError) -> Ended {
    Ended::new(Outcome::Failed, format!("the event log failed: {e}"))
}

/// A new performance id: time-ordered, so ids sort by start.
pub fn new_id() -> String {
    let u = uuid::Uuid::now_v7().simple().to_string();
    // 12 hex digits of time + 6 of randomness: short enough to type, unique enough per stage.
    format!("{}{}", &u[..12], &u[u.len() - 6..])
}

/// The performance's event stream: numbered, observed, shared with its props' [`EventSink`].
#[derive(Clone)]
struct Stream(Arc<Mutex<Emitter>>);

impl Stream {
    fn lock(&self) -> MutexGuard<'_, Emitter> {
        // Poisoning needs a panic inside an observer; the numbering is still sound then.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
    fn emit(&self, kind: EventKind) -> Result<(), ObserveError> {
        self.lock().emit(kind)
    }
    /// Waits until every observer keeps what it took ([`Observer::settled`]).
    async fn settled(&self) -> Result<(), ObserveError> {
        let observers = self.lock().observers.clone();
        for o in observers.iter() {
            o.settled().await?;
        }
        Ok(())
    }
}

/// Numbers events and hands them to every observer.
struct Emitter {
    seq: u64,
    actor: Arc<str>,
    /// Fixed once the performance starts; shared so that [`Stream::settled`] takes it without
    /// copying (it runs three times a turn and cannot hold the lock across its awaits).
    observers: Arc<[Arc<dyn Observer>]>,
    broken: Option<ObserveError>,
}

impl Emitter {
    fn emit(&mut self, kind: EventKind) -> Result<(), ObserveError> {
        let event = Event {
            seq: self.seq,
            at: now_rfc3339(),
            actor: Some(self.actor.to_string()),
            kind,
        };
        self.seq += 1;
        let mut first_error = None;
        for o in self.observers.iter() {
            if let Err(e) = o.observe(&event) {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

/// The current UTC time as RFC 3339 with milliseconds.
pub fn now_rfc3339() -> String {
    let t = time::OffsetDateTime::now_utc();
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        t.year(),
        t.month() as u8,
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.millisecond()
    )
}
