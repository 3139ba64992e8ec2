//! The command rules at work: each simple command a shell line would run (split and resolved by
//! [`crate::command`]) is judged by the first rule whose glob matches it, what cannot be known
//! before the line runs by the strictest deny or ask, and the strictest verdict of the line wins.

use super::GlobError;
use super::globs::PathGlob;
use crate::command::{CommandGlob, Invocation, Resolution, Spelling};
use improv_stage::{Decision, Rule};

pub(super) fn command_glob(text: &str) -> Result<CommandGlob, GlobError> {
    CommandGlob::new(text).map_err(|source| GlobError {
        glob: text.to_string(),
        source,
    })
}

pub(super) struct CompiledRule {
    pub(super) index: usize,
    pub(super) rule: Rule,
    pub(super) command: Option<CommandGlob>,
    pub(super) path: Option<PathGlob>,
}

impl CompiledRule {
    fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(p) = &self.rule.prop {
            parts.push(format!("prop = \"{p}\""));
        }
        if let Some(c) = &self.rule.command {
            parts.push(format!("command = \"{c}\""));
        }
        if let Some(p) = &self.rule.path {
            parts.push(format!("path = \"{p}\""));
        }
        format!(
            "rule {} ({} → {})",
            self.index + 1,
            parts.join(", "),
            decision_name(self.rule.decision)
        )
    }

    /// The rule as the stage file says it, and why it applies when its glob did not simply
    /// match the command as written.
    pub(super) fn explain(&self, because: Option<&str>) -> String {
        match because {
            Some(why) => format!("{}: {why}", self.describe()),
            None => self.describe(),
        }
    }
}

fn decision_name(d: Decision) -> &'static str {
    match d {
        Decision::Allow => "allow",
        Decision::Deny => "deny",
        Decision::Ask => "ask",
    }
}

pub(super) fn strictness(d: Decision) -> u8 {
    match d {
        Decision::Allow => 0,
        Decision::Ask => 1,
        Decision::Deny => 2,
    }
}

/// What the policy says about one call, before any approval.
#[derive(Clone)]
pub(super) struct Verdict {
    pub(super) decision: Decision,
    /// The rule that decided; `None` for the default (allow).
    pub(super) rule: Option<usize>,
    pub(super) subject: String,
    /// Why the rule applies, when not by matching the subject as written.
    pub(super) because: Option<String>,
}

impl Verdict {
    /// Whether `self` is stricter than `other` (at equal strictness a rule beats the default).
    fn stricter_than(&self, other: &Verdict) -> bool {
        (strictness(self.decision), self.rule.is_some())
            > (strictness(other.decision), other.rule.is_some())
    }
}

/// The stricter of two verdicts, the earlier at a tie.
pub(super) fn stricter(a: Option<Verdict>, b: Verdict) -> Verdict {
    match a {
        Some(a) if !b.stricter_than(&a) => a,
        _ => b,
    }
}

/// A stage's command rule for one prop, with its glob.
pub(super) type CommandRule<'a> = (&'a CompiledRule, &'a CommandGlob);

/// The strictest deny or ask among `rules` that `applies` to; never an allow.
fn strictest<'a>(
    rules: &[CommandRule<'a>],
    applies: impl Fn(&CommandGlob) -> bool,
) -> Option<&'a CompiledRule> {
    rules
        .iter()
        .filter(|(r, g)| r.rule.decision != Decision::Allow && applies(g))
        .map(|(r, _)| *r)
        .reduce(|a, b| {
            if strictness(b.rule.decision) > strictness(a.rule.decision) {
                b
            } else {
                a
            }
        })
}

/// What the command rules say about one command of a line; `None` when none applies.
pub(super) fn judge_invocation(
    rules: &[CommandRule<'_>],
    invocation: &Invocation,
) -> Option<Verdict> {
    let verdict = |rule: &CompiledRule, because: Option<String>| Verdict {
        decision: rule.rule.decision,
        rule: Some(rule.index),
        subject: invocation.source.clone(),
        because,
    };
    let mut worst = None;
    for layer in &invocation.layers {
        let spellings = match layer {
            Resolution::Resolved(c) => c.spellings(),
            Resolution::Unresolved(why) => {
                if let Some(r) = strictest(rules, |_| true) {
                    let because = format!(
                        "{why}, so the strictest command rule applies; spell the command out"
                    );
                    worst = Some(stricter(worst, verdict(r, Some(because))));
                }
                continue;
            }
        };
        for Spelling { text, complete } in spellings {
            let found = if complete {
                rules.iter().find(|(_, g)| g.is_match(&text)).map(|(r, _)| {
                    let because = (text != invocation.source).then(|| format!("it runs `{text}`"));
                    verdict(r, because)
                })
            } else {
                strictest(rules, |g| g.could_match(&text)).map(|r| {
                    let because = format!(
                        "it runs `{text}…` with the rest computed when the line runs, which the rule could match"
                    );
                    verdict(r, Some(because))
                })
            };
            if let Some(v) = found {
                worst = Some(stricter(worst, v));
            }
        }
    }
    worst
}
