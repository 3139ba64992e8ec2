//! What judging a shell line costs: (1) parsing and resolving it ([`command::invocations`]),
//! (2) the whole policy check of a bash call (`Guarded` over a prop that does nothing, with a
//! few command rules), beside (3) starting `bash -c true`, which every call pays anyway.
//! Medians per command line.
//! Run: `cargo run -p improv-edges --example command-bench [N]` (add `--release` for release
//! figures).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use async_trait::async_trait;
use improv_edges::command;
use improv_edges::{Decision, Guarded, PathEdges, Policy, Rule, Unattended};
use improv_kernel::{Prop, PropContext, PropError, ToolSpec};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Lines an actor sends: short, piped, nested, and a long script.
fn lines() -> Vec<(&'static str, String)> {
    let script: String = (0..40)
        .map(|i| format!("if [ -f f{i} ]; then grep -n \"x{i}\" f{i} | head -3; fi\n"))
        .collect();
    let file: String = (0..1000)
        .map(|i| format!("    let x{i} = \"{i}\".parse::<u32>().unwrap_or(0); // $HOME `x`\n"))
        .collect();
    vec![
        ("simple", "git status".into()),
        (
            "pipeline",
            "cargo test -p x 2>&1 | grep -E 'FAIL|panic' | tail -20".into(),
        ),
        (
            "wrapped",
            "cd sub && env A=1 timeout 60 sh -c 'git -C . log --oneline | head -5'".into(),
        ),
        (
            "substitutions",
            "for f in $(git ls-files '*.rs'); do echo \"$f: $(wc -l < \"$f\")\"; done".into(),
        ),
        ("script-40-lines", script),
        (
            "heredoc-1000",
            format!("cat > src/gen.rs <<'EOF'\nfn f() {{\n{file}}}\nEOF\ncargo check -q"),
        ),
    ]
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// A prop that does nothing, so only the policy is timed.
struct Nothing(ToolSpec);

#[async_trait]
impl Prop for Nothing {
    fn spec(&self) -> &ToolSpec {
        &self.0
    }
    async fn call(
        &self,
        _arguments: serde_json::Value,
        _context: &PropContext,
    ) -> Result<String, PropError> {
        Ok(String::new())
    }
}

fn guarded() -> Guarded {
    let rule = |command: &str, decision| Rule {
        prop: None,
        command: Some(command.into()),
        path: None,
        decision,
    };
    let rules = [
        rule("git push*", Decision::Deny),
        rule("rm -rf*", Decision::Ask),
        rule("cargo*", Decision::Allow),
    ];
    let policy =
        Arc::new(Policy::new(&rules, &PathEdges::default(), Arc::new(Unattended)).unwrap());
    let spec = ToolSpec {
        name: "bash".into(),
        description: String::new(),
        parameters: serde_json::json!({}),
    };
    Guarded::new(Arc::new(Nothing(spec)), policy)
}

#[tokio::main]
async fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1000);
    let dir = tempfile::tempdir().unwrap();
    let context = PropContext::new(dir.path().canonicalize().unwrap(), "lead", "bench");
    println!("{:<16} {:>12} {:>14}", "line", "parse", "policy check");
    for (name, line) in lines() {
        let parse = (0..n)
            .map(|_| {
                let start = Instant::now();
                std::hint::black_box(command::invocations(std::hint::black_box(&line)));
                start.elapsed()
            })
            .collect();
        // A fresh policy per round keeps the record of decisions from growing.
        let mut check = Vec::with_capacity(n);
        for _ in 0..n {
            let g = guarded();
            let args = serde_json::json!({ "command": line });
            let start = Instant::now();
            let _ = std::hint::black_box(g.call(args, &context).await);
            check.push(start.elapsed());
        }
        println!("{name:<16} {:>12?} {:>14?}", median(parse), median(check));
    }
    let spawn = (0..n.min(200))
        .map(|_| {
            let start = Instant::now();
            let status = std::process::Command::new("bash")
                .args(["-c", "true"])
                .status()
                .unwrap();
            assert!(status.success());
            start.elapsed()
        })
        .collect();
    println!("{:<16} {:>12?}", "bash -c true", median(spawn));
}
