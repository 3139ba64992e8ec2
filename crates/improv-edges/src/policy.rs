//! Command and path policy: the stage's `[[edges.rule]]`s (prop, command glob, path glob →
//! allow, deny or ask), hidden and read-only path globs, and approvals. [`Guarded`] wraps a prop
//! and applies the policy before the prop runs; every decision is recorded as a
//! [`PolicyDecision`] and said in the tool result.
//!
//! Command rules judge what a shell line would run, not its text: [`crate::command`] parses it
//! and resolves each simple command wherever it stands (`a && $(b) | sh -c 'c'` is three),
//! unquoted and seen through launchers (`env`, `sudo`, `xargs`, `find -exec`, …), with git's
//! global options dropped (`git -C . push` is `git push`). Each command takes the first rule
//! that matches it (as written or normalized), else the prop's rule; the strictest decision of
//! the line wins. What cannot be known before the line runs (a computed program, `eval`,
//! `source`, `alias`, `sh -c "$x"`) takes the strictest deny or ask among the command rules, and
//! a command known only up to a computed word (`git $sub`) takes the strictest deny or ask rule
//! that could match what it becomes; neither is ever allowed by a rule. Scripts and programs
//! that start programs themselves (`bash x.sh`, `python -c`) are beyond the rules: there the
//! sandbox holds, as it does against any hostile actor. Path rules judge the file props only;
//! what a command may touch is the sandbox's (`hidden` and `read_only` globs are enforced for
//! every process it starts), so a path to keep from commands belongs in `read_only`/`hidden`.

mod approval;
mod globs;
mod guarded;
mod rules;

pub use approval::{Approval, ApprovalRequest, Approver, Prompt, Unattended, printable};
pub(crate) use globs::PathGlob;
pub use globs::{
    ByName, DEFAULT_HIDDEN, DEFAULT_READ_ONLY, GlobError, Hidden, HiddenGlobs, HiddenKind,
    KEY_MATERIAL_MAX, PathEdges, default_hidden, holds_secret,
};
pub use guarded::{DIRECTOR_REFUSED, Guard, Guarded, REFUSED, guard_all};
pub use improv_stage::{Decision, Rule};

use crate::command;
use improv_kernel::event::Decision as Decided;
use improv_props::workspace::Workspace;
use rules::{CommandRule, CompiledRule, Verdict, command_glob, judge_invocation, stricter};
use serde::Serialize;
use std::collections::HashSet;
use std::path::Path;
use std::sync::{Arc, Mutex};

/// One decision of the policy: what the log's `policy_decision` event carries, and the actor
/// that made the call.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PolicyDecision {
    pub actor: String,
    pub prop: String,
    /// The command or path judged.
    pub subject: String,
    pub decision: Decided,
    /// The rule or edge that decided, as the stage file says it.
    pub rule: String,
    /// The director's note, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// The policy of one performance: rules, path edges, the approver, approvals given so far and
/// the decisions made (by every actor of the performance; each decision is also an event in the
/// stream of the performance that made the call).
pub struct Policy {
    rules: Vec<CompiledRule>,
    hidden: HiddenGlobs,
    read_only: Vec<PathGlob>,
    approver: Arc<dyn Approver>,
    approved: Mutex<HashSet<usize>>,
    decisions: Mutex<Vec<PolicyDecision>>,
}

impl Policy {
    /// Compiles the stage's rules and path edges. Calls no rule matches are allowed (the sandbox
    /// still holds).
    pub fn new(
        rules: &[Rule],
        paths: &PathEdges,
        approver: Arc<dyn Approver>,
    ) -> Result<Self, GlobError> {
        let rules = rules
            .iter()
            .enumerate()
            .map(|(index, rule)| {
                Ok(CompiledRule {
                    index,
                    command: rule.command.as_deref().map(command_glob).transpose()?,
                    path: rule.path.as_deref().map(PathGlob::new).transpose()?,
                    rule: rule.clone(),
                })
            })
            .collect::<Result<_, GlobError>>()?;
        let globs = |list: &[String]| {
            list.iter()
                .map(|g| PathGlob::new(g))
                .collect::<Result<Vec<_>, _>>()
        };
        Ok(Policy {
            rules,
            hidden: HiddenGlobs::new(&paths.hidden)?,
            read_only: globs(&paths.read_only)?,
            approver,
            approved: Mutex::new(HashSet::new()),
            decisions: Mutex::new(Vec::new()),
        })
    }

    /// The decisions made so far, in order.
    pub fn decisions(&self) -> Vec<PolicyDecision> {
        lock(&self.decisions).clone()
    }

    fn record(&self, decision: PolicyDecision) {
        lock(&self.decisions).push(decision);
    }

    /// Judges a shell line: each command it would run by the command rules (see the module
    /// doc), one no command rule applies to by the prop's rule; the strictest wins.
    fn judge_command(&self, prop: &str, line: &str) -> Verdict {
        let rules: Vec<CommandRule<'_>> = self
            .rules
            .iter()
            .filter(|r| r.path.is_none() && r.rule.prop.as_deref().is_none_or(|p| p == prop))
            .filter_map(|r| Some((r, r.command.as_ref()?)))
            .collect();
        let fallback = Verdict {
            decision: self
                .prop_rule(prop)
                .map_or(Decision::Allow, |r| r.rule.decision),
            rule: self.prop_rule(prop).map(|r| r.index),
            subject: line.to_string(),
            because: None,
        };
        if rules.is_empty() {
            // Nothing to match: the line need not be parsed.
            return fallback;
        }
        let mut worst: Option<Verdict> = None;
        for invocation in command::invocations(line) {
            let verdict = judge_invocation(&rules, &invocation);
            worst = Some(stricter(worst, verdict.unwrap_or_else(|| fallback.clone())));
        }
        worst.unwrap_or(fallback)
    }

    /// What the command rules decide about `line` run through `prop`, judged exactly as an
    /// actor's call is (by [`Policy::judge_command`]): the decision and the rule that made it
    /// as the stage file says it, `default` when none did. A door's probes are judged by it.
    pub fn command_decision(&self, prop: &str, line: &str) -> (Decision, String) {
        let verdict = self.judge_command(prop, line);
        let rule = verdict.rule.map_or_else(
            || "default".to_string(),
            |i| self.rules[i].explain(verdict.because.as_deref()),
        );
        (verdict.decision, rule)
    }

    fn judge_path(&self, prop: &str, rel: &Path) -> Verdict {
        let shown = rel.display().to_string();
        let hit = self.rules.iter().find(|r| {
            r.rule.prop.as_deref().is_none_or(|p| p == prop)
                && r.command.is_none()
                && r.path.as_ref().is_some_and(|g| g.matches(rel))
        });
        match hit.or_else(|| self.prop_rule(prop)) {
            Some(r) => Verdict {
                decision: r.rule.decision,
                rule: Some(r.index),
                subject: shown,
                because: None,
            },
            None => Verdict {
                decision: Decision::Allow,
                rule: None,
                subject: shown,
                because: None,
            },
        }
    }

    fn prop_rule(&self, prop: &str) -> Option<&CompiledRule> {
        self.rules.iter().find(|r| {
            r.rule.prop.as_deref() == Some(prop) && r.command.is_none() && r.path.is_none()
        })
    }

    /// The glob hiding `rel`; a file named only like key material is judged by what `given`
    /// opens to (beneath the workspace, as the props open it), just before the prop runs.
    fn hidden_by(&self, rel: &Path, workspace: &Workspace, given: &Path) -> Option<&str> {
        self.hidden.hidden_by(rel, || {
            workspace
                .open_read(given)
                .map_or(true, |file| holds_secret(&file))
        })
    }

    fn read_only_by(&self, rel: &Path) -> Option<&str> {
        self.read_only
            .iter()
            .find(|g| g.matches(rel))
            .map(|g| g.text.as_str())
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Every value guarded here stays valid if a holder panicked.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every spelling of `git push` an actor might try to get past a rule on it: quoting,
    /// paths, launchers, shells, substitutions, aliases, functions, computed words.
    const GIT_PUSH: [&str; 36] = [
        "/usr/bin/git push",
        "sh -c 'git push'",
        "bash -lc \"cd x && git push\"",
        "$(echo git) push",
        "`echo git` push",
        "cmd=git; $cmd push",
        "g\"i\"t push",
        "\\git pu\\sh",
        "git $'\\x70ush'",
        "git -C . push",
        "git --git-dir=.git --work-tree=. --no-pager push origin",
        "env git push",
        "env -i -u HOME A=1 git push",
        "command git push",
        "exec git push",
        "nice -n 5 nohup timeout 10 stdbuf -o0 setsid git push",
        "sudo -u root git push",
        "doas git push",
        "echo push | xargs git",
        "find . -exec git push \\;",
        "eval \"git push\"",
        "source ./push.sh",
        "alias p='git push'; p",
        "f() { git push; }; f",
        "if true; then (git push); fi",
        "for x in a; do { git push; }; done",
        "echo \"$(git push)\"",
        "cat <(git push)",
        "bash <<< 'git push'",
        "echo 'git push' | sh",
        "git $sub",
        "git pu*",
        "trap 'git push' EXIT",
        "git -c alias.p=push p",
        "x=$(git push)",
        "git push 'unterminated",
    ];

    /// Commands that only mention `git push`, or are other commands.
    const NOT_GIT_PUSH: [&str; 9] = [
        "git status",
        "echo \"git push\"",
        "grep 'git push' file",
        "cat push.txt",
        "git log --grep push",
        "ls *.rs | xargs wc -l",
        "[ -f x ] && echo $HOME",
        "cargo test 2>&1 | tail -5",
        "git -C $dir status",
    ];

    fn rule(command: &str, decision: Decision) -> Rule {
        Rule {
            prop: None,
            command: Some(command.into()),
            path: None,
            decision,
        }
    }

    fn policy(rules: &[Rule]) -> Policy {
        Policy::new(rules, &PathEdges::default(), Arc::new(Unattended)).unwrap()
    }

    /// The decision on `line` and the rule text the actor is told.
    fn judge(policy: &Policy, line: &str) -> (Decision, String) {
        let v = policy.judge_command("bash", line);
        let rule = v
            .rule
            .map(|i| policy.rules[i].explain(v.because.as_deref()));
        (v.decision, rule.unwrap_or_default())
    }

    #[test]
    fn every_spelling_of_a_denied_command_is_denied() {
        let deny = policy(&[rule("git push*", Decision::Deny)]);
        for line in GIT_PUSH {
            assert_eq!(judge(&deny, line).0, Decision::Deny, "{line}");
        }
        for line in NOT_GIT_PUSH {
            assert_eq!(
                judge(&deny, line),
                (Decision::Allow, String::new()),
                "{line}"
            );
        }
    }

    #[test]
    fn every_spelling_of_a_command_to_ask_about_is_asked_about() {
        let ask = policy(&[rule("git push*", Decision::Ask)]);
        for line in GIT_PUSH {
            assert_eq!(judge(&ask, line).0, Decision::Ask, "{line}");
        }
        for line in NOT_GIT_PUSH {
            assert_eq!(judge(&ask, line).0, Decision::Allow, "{line}");
        }
    }

    #[test]
    fn what_cannot_be_resolved_takes_the_strictest_command_rule_and_says_why() {
        let rules = [
            rule("cargo*", Decision::Allow),
            rule("git commit*", Decision::Ask),
            rule("git push*", Decision::Deny),
        ];
        let (decision, why) = judge(&policy(&rules), "$cmd status");
        assert_eq!(decision, Decision::Deny);
        assert!(
            why.contains("rule 3") && why.contains("`$cmd` is computed"),
            "{why}"
        );
        let (decision, why) = judge(&policy(&rules[..2]), "eval x");
        assert_eq!(decision, Decision::Ask);
        assert!(why.contains("`eval` runs text"), "{why}");
        // A computed word takes only the rules that could match what it becomes.
        assert_eq!(judge(&policy(&rules), "git com$x").0, Decision::Ask);
        assert_eq!(judge(&policy(&rules), "cargo $x").0, Decision::Allow);
        let (decision, why) = judge(&policy(&rules), "/usr/bin/git -C . push");
        assert_eq!(decision, Decision::Deny);
        assert!(why.ends_with("it runs `git push`"), "{why}");
        // Allow rules never allow what cannot be resolved; with no command rule nothing
        // changes.
        assert_eq!(judge(&policy(&rules[..1]), "$cmd").0, Decision::Allow);
        assert_eq!(judge(&policy(&[]), "eval \"git push\"").0, Decision::Allow);
    }

    #[test]
    fn the_first_rule_matching_a_command_decides_it() {
        let rules = [
            rule("git push --dry-run*", Decision::Allow),
            rule("git push*", Decision::Deny),
        ];
        let p = policy(&rules);
        assert_eq!(judge(&p, "git -C . push --dry-run").0, Decision::Allow);
        assert_eq!(judge(&p, "git push --dry-run; git push").0, Decision::Deny);
    }

    #[test]
    fn a_command_no_command_rule_matches_takes_the_prop_rule() {
        let rules = [
            Rule {
                prop: Some("bash".into()),
                command: None,
                path: None,
                decision: Decision::Ask,
            },
            rule("cargo test*", Decision::Allow),
        ];
        let p = policy(&rules);
        assert_eq!(judge(&p, "cargo test").0, Decision::Allow);
        // An allowed command does not carry the rest of the line with it.
        assert_eq!(judge(&p, "cargo test && curl x").0, Decision::Ask);
        assert_eq!(judge(&p, "").0, Decision::Ask);
    }
}
