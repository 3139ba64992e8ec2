//! [`Guarded`]: a prop under the policy. Each call's command or path is judged before it runs,
//! the director is asked when a rule says so, and every decision is recorded and emitted as a
//! `policy_decision` event in the stream of the performance making the call, under its actor.

use super::{Approval, ApprovalRequest, Decision, Policy, PolicyDecision, holds_secret, lock};
use async_trait::async_trait;
use improv_kernel::event::Decision as Decided;
use improv_kernel::prop::{Layer, Wrapped};
use improv_kernel::{Access, EventKind, Prop, PropContext, PropError};
use improv_props::workspace::Workspace;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The mark that ends every refusal of a call by the edges' rules (deny, hidden, read-only, the
/// workspace edge, an approval nobody could give or that the stop cut short), which a model's
/// side may match where the prose around it may change: improv-local leaves a file whose write
/// was refused out of its edits.
pub const REFUSED: &str = "[denied]";

/// The mark that ends the director's no to one call: that call, not its file, was refused
/// (improv-local then avoids the text it would have written, and may edit the file otherwise).
pub const DIRECTOR_REFUSED: &str = "[director: no]";

/// An ask in flight: records `denied_interrupted` when dropped unanswered.
struct Pending<'a> {
    call: &'a Call<'a>,
    subject: String,
    rule: String,
    armed: bool,
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        if self.armed {
            // Dropped unanswered: nothing runs, and a log failure has no one to tell.
            let _ = self.call.decide(
                &self.subject,
                Decided::DeniedInterrupted,
                self.rule.clone(),
                Some("the performance stopped before the director answered".into()),
            );
        }
    }
}

/// A prop under the policy: its command or path is judged before it runs; hidden paths are
/// refused and left out of `grep`/`find` results. `Guarded::new(prop, policy)`.
pub type Guarded = Wrapped<Guard>;

/// The [`Layer`] of [`Guarded`]: the policy its calls are judged by.
pub struct Guard {
    policy: Arc<Policy>,
}

impl From<Arc<Policy>> for Guard {
    fn from(policy: Arc<Policy>) -> Self {
        Guard { policy }
    }
}

/// Puts every prop under the policy.
pub fn guard_all(props: Vec<Arc<dyn Prop>>, policy: &Arc<Policy>) -> Vec<Arc<dyn Prop>> {
    props
        .into_iter()
        .map(|p| Arc::new(Guarded::new(p, policy.clone())) as Arc<dyn Prop>)
        .collect()
}

/// One call being judged: the policy, the prop's name and the performance making the call.
struct Call<'a> {
    guard: &'a Guard,
    prop: &'a str,
    context: &'a PropContext,
}

impl Call<'_> {
    /// Records a decision and emits it as a `policy_decision` event in the stream of the
    /// performance making the call, under its actor: a cued actor's decisions are in its own
    /// sub-performance. An error means the log failed: the call must not run, and the
    /// performance ends (a fatal error).
    fn decide(
        &self,
        subject: &str,
        decision: Decided,
        rule: String,
        note: Option<String>,
    ) -> Result<(), PropError> {
        let decision = PolicyDecision {
            actor: self.context.actor.to_string(),
            prop: self.prop.to_string(),
            subject: subject.to_string(),
            decision,
            rule,
            note,
        };
        let event = EventKind::PolicyDecision {
            prop: decision.prop.clone(),
            subject: decision.subject.clone(),
            decision: decision.decision,
            rule: decision.rule.clone(),
            note: decision.note.clone(),
        };
        self.guard.policy.record(decision);
        self.context.events.emit(event).map_err(|e| {
            PropError::fatal(format!(
                "the policy's decision could not be logged ({e}), so the call did not run"
            ))
        })
    }

    /// Refuses a path the edges hide or keep read-only; `Ok(Some(rel))` for a path to judge.
    fn check_path(&self, given: &str, write: bool) -> Result<PathBuf, PropError> {
        let prop = self.prop;
        let workspace = Workspace::new(&self.context.workspace).map_err(PropError::from)?;
        let real = match workspace.resolve(given) {
            Ok(real) => real,
            Err(e) => {
                let message = format!("{prop}: {e}");
                self.decide(given, Decided::Deny, "the workspace edge".into(), None)?;
                return Err(PropError::new(format!("{message} {REFUSED}")));
            }
        };
        let rel = real
            .strip_prefix(workspace.root())
            .map(Path::to_path_buf)
            .unwrap_or_default();
        // The path as written too: a link inside the workspace must not unhide its target,
        // nor a hidden name hide behind a link.
        let lexical = Path::new(given)
            .strip_prefix(workspace.root())
            .unwrap_or(Path::new(given))
            .to_path_buf();
        for p in [&rel, &lexical] {
            if let Some(glob) = self.guard.policy.hidden_by(p, &workspace, Path::new(given)) {
                self.decide(given, Decided::Deny, format!("hidden = \"{glob}\""), None)?;
                return Err(PropError::new(format!(
                    "{prop}: `{given}` is hidden by the stage's edges (`{glob}`): it cannot be read, written or listed. Do not try to reach it another way; ask the director if you need it. {REFUSED}"
                )));
            }
            if write && let Some(glob) = self.guard.policy.read_only_by(p) {
                self.decide(
                    given,
                    Decided::Deny,
                    format!("read_only = \"{glob}\""),
                    None,
                )?;
                return Err(PropError::new(format!(
                    "{prop}: `{given}` is read-only by the stage's edges (`{glob}`); you may read it but not change it. {REFUSED}"
                )));
            }
        }
        Ok(rel)
    }

    /// Drops `grep`/`find` result lines naming a hidden path.
    fn filter_listing(&self, out: String) -> String {
        let name = self.prop;
        if name != "grep" && name != "find" {
            return out;
        }
        // Without the workspace, no file named like key material can be judged: all are hidden.
        let workspace = Workspace::new(&self.context.workspace).ok();
        let hidden = |path: &Path| {
            self.guard
                .policy
                .hidden
                .hidden_by(path, || {
                    workspace
                        .as_ref()
                        .and_then(|w| w.open_read(path).ok())
                        .is_none_or(|file| holds_secret(&file))
                })
                .is_some()
        };
        let mut dropped = 0;
        let mut kept: Vec<&str> = Vec::new();
        for line in out.lines() {
            let path = if name == "grep" {
                line.split(':').next().unwrap_or(line)
            } else {
                line
            };
            if !path.is_empty() && hidden(Path::new(path)) {
                dropped += 1;
            } else {
                kept.push(line);
            }
        }
        if dropped == 0 {
            return out;
        }
        let mut text = kept.join("\n");
        text.push_str(&format!(
            "\n[{dropped} result line(s) in paths hidden by the stage's edges were left out]"
        ));
        text
    }
}

#[async_trait]
impl Layer for Guard {
    async fn call(
        &self,
        inner: &dyn Prop,
        arguments: serde_json::Value,
        context: &PropContext,
    ) -> Result<String, PropError> {
        let prop = inner.spec().name.clone();
        let call = Call {
            guard: self,
            prop: &prop,
            context,
        };
        let write = inner.access(&arguments) == Access::Write;
        let verdict = if let Some(command) = arguments.get("command").and_then(|c| c.as_str()) {
            self.policy.judge_command(&prop, command)
        } else {
            let given = arguments
                .get("path")
                .and_then(|p| p.as_str())
                .filter(|p| !p.is_empty())
                .unwrap_or(".");
            let rel = call.check_path(given, write)?;
            self.policy.judge_path(&prop, &rel)
        };
        let rule = verdict
            .rule
            .map(|i| self.policy.rules[i].explain(verdict.because.as_deref()));
        let rule_text = rule.clone().unwrap_or_else(|| "default".into());
        let subject = verdict.subject.clone();
        let mut banner = None;
        match verdict.decision {
            Decision::Allow => {
                call.decide(&subject, Decided::Allow, rule_text, None)?;
            }
            Decision::Deny => {
                call.decide(&subject, Decided::Deny, rule_text.clone(), None)?;
                return Err(PropError::new(format!(
                    "{prop}: `{subject}` is denied by the stage's edges ({rule_text}). Do not retry it or work around it; do without it, or finish and say what you needed. {REFUSED}"
                )));
            }
            Decision::Ask => {
                let index = verdict.rule.unwrap_or(usize::MAX);
                if lock(&self.policy.approved).contains(&index) {
                    call.decide(&subject, Decided::ApprovedForPerformance, rule_text, None)?;
                } else {
                    let request = ApprovalRequest {
                        actor: context.actor.to_string(),
                        prop: prop.clone(),
                        subject: subject.clone(),
                        rule: rule_text.clone(),
                    };
                    // Recorded as interrupted unless an answer comes: the performance may stop
                    // (and drop this call) while the director is being asked.
                    let mut pending = Pending {
                        call: &call,
                        subject: subject.clone(),
                        rule: rule_text.clone(),
                        armed: true,
                    };
                    let answer = tokio::select! {
                        biased;
                        _ = context.cancel.cancelled() => None,
                        answer = self.policy.approver.ask(&request) => Some(answer),
                    };
                    let Some(answer) = answer else {
                        drop(pending);
                        return Err(PropError::new(format!(
                            "{prop}: `{subject}` was waiting for the director's approval ({rule_text}) when the performance stopped, so it was denied and did not run. {REFUSED}"
                        )));
                    };
                    pending.armed = false;
                    match answer {
                        Approval::Once => {
                            call.decide(&subject, Decided::ApprovedOnce, rule_text, None)?;
                            banner = Some("[approved by the director, once]");
                        }
                        Approval::ForPerformance => {
                            lock(&self.policy.approved).insert(index);
                            call.decide(
                                &subject,
                                Decided::ApprovedForPerformance,
                                rule_text,
                                None,
                            )?;
                            banner = Some("[approved by the director for this performance]");
                        }
                        Approval::Deny { note } => {
                            call.decide(
                                &subject,
                                Decided::DeniedByDirector,
                                rule_text.clone(),
                                note.clone(),
                            )?;
                            let note = note
                                .map(|n| format!(" The director's note: {n}"))
                                .unwrap_or_default();
                            return Err(PropError::new(format!(
                                "{prop}: the director denied `{subject}` ({rule_text}).{note} {DIRECTOR_REFUSED}"
                            )));
                        }
                        Approval::Unattended => {
                            call.decide(
                                &subject,
                                Decided::DeniedUnattended,
                                rule_text.clone(),
                                None,
                            )?;
                            return Err(PropError::new(format!(
                                "{prop}: `{subject}` needs the director's approval ({rule_text}), and nobody can approve it in this non-interactive run, so it was denied. Do without it, or finish and say that it is needed. {REFUSED}"
                            )));
                        }
                    }
                }
            }
        }
        let result = inner.call(arguments, context).await;
        let with_banner = |text: String| match banner {
            Some(b) => format!("{b}\n{text}"),
            None => text,
        };
        match result {
            Ok(out) => Ok(with_banner(call.filter_listing(out))),
            Err(e) => Err(e.map(with_banner)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{PathEdges, Prompt, Rule, Unattended};
    use improv_kernel::ToolSpec;
    use std::sync::Mutex;
    use std::time::Duration;

    /// A shell-like prop that only counts its calls.
    struct Counting(ToolSpec, std::sync::atomic::AtomicUsize);

    #[async_trait]
    impl Prop for Counting {
        fn spec(&self) -> &ToolSpec {
            &self.0
        }
        async fn call(
            &self,
            _arguments: serde_json::Value,
            _context: &PropContext,
        ) -> Result<String, PropError> {
            self.1.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Ok("ran".into())
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_ask_is_denied_as_interrupted_when_the_performance_is_cancelled() {
        // A director who never answers.
        let (_director, input) = std::os::unix::net::UnixStream::pair().unwrap();
        let prompt = Prompt::new(std::io::BufReader::new(input), std::io::sink());
        let rule = Rule {
            prop: None,
            command: Some("git push*".into()),
            path: None,
            decision: Decision::Ask,
        };
        let policy =
            Arc::new(Policy::new(&[rule], &PathEdges::default(), Arc::new(prompt)).unwrap());
        let spec = ToolSpec {
            name: "bash".into(),
            description: String::new(),
            parameters: serde_json::json!({}),
        };
        let inner = Arc::new(Counting(spec, Default::default()));
        let guarded = Guarded::new(inner.clone(), policy.clone());
        let dir = tempfile::tempdir().unwrap();
        let context = PropContext::new(dir.path().canonicalize().unwrap(), "lead", "p1");
        let cancel = context.cancel.clone();
        let stop = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            cancel.cancel();
        });
        let result = guarded
            .call(serde_json::json!({"command": "git push"}), &context)
            .await;
        stop.await.unwrap();
        let err = result.unwrap_err().into_message();
        assert!(err.contains("when the performance stopped"), "{err}");
        assert_eq!(inner.1.load(std::sync::atomic::Ordering::SeqCst), 0);
        let d = policy.decisions();
        assert_eq!(d.len(), 1, "{d:?}");
        assert_eq!(d[0].decision, Decided::DeniedInterrupted);
        // Already cancelled: denied without asking.
        let again = guarded
            .call(serde_json::json!({"command": "git push"}), &context)
            .await;
        assert!(again.is_err());
        assert_eq!(policy.decisions()[1].decision, Decided::DeniedInterrupted);
    }

    /// Every event a performance emits.
    #[derive(Default)]
    struct Collect(Mutex<Vec<improv_kernel::Event>>);

    impl improv_kernel::Observer for Collect {
        fn observe(&self, event: &improv_kernel::Event) -> Result<(), improv_kernel::ObserveError> {
            self.0.lock().unwrap().push(event.clone());
            Ok(())
        }
    }

    #[tokio::test]
    async fn a_decision_is_logged_during_its_call_in_the_stream_of_the_actor_making_it() {
        use improv_kernel::{Actor, Performance, ScriptedModel, ScriptedTurn};
        let dir = tempfile::tempdir().unwrap();
        let rule = Rule {
            prop: None,
            command: Some("curl*".into()),
            path: None,
            decision: Decision::Deny,
        };
        let policy =
            Arc::new(Policy::new(&[rule], &PathEdges::default(), Arc::new(Unattended)).unwrap());
        let spec = ToolSpec {
            name: "bash".into(),
            description: String::new(),
            parameters: serde_json::json!({}),
        };
        let inner = Arc::new(Counting(spec, Default::default()));
        let model = Arc::new(ScriptedModel::new(vec![
            ScriptedTurn::call("bash", serde_json::json!({"command": "curl x.invalid"})),
            ScriptedTurn::call("bash", serde_json::json!({"command": "echo fine"})),
            ScriptedTurn::say("done"),
        ]));
        let collect = Arc::new(Collect::default());
        let actor = Actor {
            name: "scout".into(),
            system: "test".into(),
            model,
            props: guard_all(vec![inner.clone()], &policy),
            max_output_tokens: None,
        };
        let mut performance = Performance::builder(actor)
            .workspace(dir.path())
            .observer(collect.clone())
            .start("go")
            .unwrap();
        let ended = performance.act(&Default::default()).await;
        performance.finish(&ended).unwrap();
        let events = collect.0.lock().unwrap();
        let names: Vec<&str> = events.iter().map(|e| e.kind.name()).collect();
        let decided: Vec<(Decided, &str)> = events
            .iter()
            .filter_map(|e| match &e.kind {
                EventKind::PolicyDecision {
                    decision, subject, ..
                } => {
                    assert_eq!(e.actor.as_deref(), Some("scout"));
                    Some((*decision, subject.as_str()))
                }
                _ => None,
            })
            .collect();
        assert_eq!(
            decided,
            [
                (Decided::Deny, "curl x.invalid"),
                (Decided::Allow, "echo fine")
            ]
        );
        // Each between its call's start and finish: made, and logged, where the call runs.
        for (at, _) in names
            .iter()
            .enumerate()
            .filter(|(_, n)| **n == "policy_decision")
        {
            assert_eq!(names[at - 1], "tool_call_started", "{names:?}");
            assert_eq!(names[at + 1], "tool_call_finished", "{names:?}");
        }
        assert_eq!(inner.1.load(std::sync::atomic::Ordering::SeqCst), 1);
    }
}
