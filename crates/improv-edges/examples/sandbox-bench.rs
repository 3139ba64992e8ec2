//! The sandbox's overhead: (1) spawning `true` N times plain and sandboxed (with and without the
//! user and mount namespace that covers hidden files), (2) the kernel's 20-turn `bash`
//! performance (a scripted model, `echo` per turn) with the sandbox on and off, (3) the scan
//! for hidden files, again before every command (only changed folders are read again), and the
//! control files and improv's state guarded in the namespace. Medians side by side.
//! Run: `cargo run --release -p improv-edges --example sandbox-bench [N]` (the default profile
//! works too: its figures are those of unoptimized code).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use improv_edges::{Sandbox, SandboxConfig, SandboxMode};
use improv_kernel::{Actor, Performance, Prop, ScriptedModel, ScriptedTurn};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// The time from `apply` (which scans the workspace again) to the command's exit.
fn spawn(sandbox: Option<&Sandbox>, program: &str, args: &[&str]) -> Duration {
    let mut cmd = std::process::Command::new(program);
    cmd.args(args);
    let start = Instant::now();
    if let Some(s) = sandbox {
        s.apply(&mut cmd).unwrap();
    }
    let status = cmd.status().unwrap();
    let took = start.elapsed();
    assert!(status.success());
    took
}

async fn performance(
    sandbox: Option<Arc<Sandbox>>,
    ws: &std::path::Path,
    turns: usize,
) -> Duration {
    let mut b = improv_props::Bash::new(Duration::from_secs(60), 30 * 1024);
    if let Some(s) = &sandbox {
        b = b.with_spawn_hook(Arc::new(s.spawn_hook()));
    }
    let mut script: Vec<ScriptedTurn> = (0..turns)
        .map(|i| ScriptedTurn::call("bash", serde_json::json!({"command": format!("echo {i}")})))
        .collect();
    script.push(ScriptedTurn::say("done"));
    let actor = Actor {
        name: "lead".into(),
        system: "bench".into(),
        model: Arc::new(ScriptedModel::new(script)),
        props: vec![Arc::new(b) as Arc<dyn Prop>],
        max_output_tokens: None,
    };
    let mut p = Performance::builder(actor)
        .workspace(ws)
        .start("go")
        .unwrap();
    let start = Instant::now();
    let ended = p.act(&Default::default()).await;
    let took = start.elapsed();
    assert_eq!(ended.outcome, improv_kernel::Outcome::Done, "{ended:?}");
    took
}

#[tokio::main]
async fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(300);
    let ws = tempfile::tempdir().unwrap();
    // A project-sized workspace: 2,000 files in 100 folders, three of them hidden.
    for d in 0..100 {
        let dir = ws.path().join(format!("src/m{d}"));
        std::fs::create_dir_all(&dir).unwrap();
        for f in 0..20 {
            std::fs::write(dir.join(format!("f{f}.rs")), "fn f() {}\n").unwrap();
        }
    }
    for hidden in [".env", "src/m7/.env.local", "certs/server.pem"] {
        let p = ws.path().join(hidden);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, "secret").unwrap();
    }
    let built = Instant::now();
    let on = Sandbox::new(SandboxConfig::new(ws.path())).unwrap();
    let build_time = built.elapsed();
    let covered = on.covered().map_or(0, |c| c.len());
    let scans: Vec<Duration> = (0..20)
        .map(|_| {
            let t = Instant::now();
            on.rescan().unwrap();
            t.elapsed()
        })
        .collect();
    // A command changed one folder: that folder is read again.
    let changed_scans: Vec<Duration> = (0..20)
        .map(|i| {
            std::fs::write(ws.path().join(format!("src/m3/new{i}.rs")), "").unwrap();
            std::thread::sleep(Duration::from_millis(40));
            let t = Instant::now();
            on.rescan().unwrap();
            t.elapsed()
        })
        .collect();
    // The control plane as a stage names it: guarded in every command's namespace.
    for (rel, text) in [
        ("stage.toml", "[edges]\n"),
        ("AGENTS.md", "rules\n"),
        ("skills/a/SKILL.md", "# a\n"),
        (".git/config", "[core]\n"),
        (".git/hooks/README", "hooks\n"),
        (".improv/serve.token", "token"),
    ] {
        let p = ws.path().join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }
    let mut guarded_config = SandboxConfig::new(ws.path());
    guarded_config.protected = [
        "stage.toml",
        "AGENTS.md",
        "skills",
        ".git/config",
        ".git/hooks",
    ]
    .iter()
    .map(|p| ws.path().join(p))
    .collect();
    guarded_config.concealed = vec![ws.path().join(".improv")];
    let guarded = Sandbox::new(guarded_config).unwrap();
    let mut no_ns_config = SandboxConfig::new(ws.path());
    no_ns_config.user_namespaces = false;
    let no_ns = Sandbox::new(no_ns_config).unwrap();
    // Without a process limit and a memory bound there is no cgroup to join (pids as root,
    // memory where writable): its share of a spawn.
    let mut no_cgroup_config = SandboxConfig::new(ws.path());
    no_cgroup_config.limits.processes = None;
    no_cgroup_config.limits.memory_bytes_total = None;
    let no_cgroup = Sandbox::new(no_cgroup_config).unwrap();
    let mut off_config = SandboxConfig::new(ws.path());
    off_config.mode = SandboxMode::Off;
    let off = Sandbox::new(off_config).unwrap();

    // Interleaved, so drift in the machine's load hits all three alike.
    let (mut plain, mut env_only, mut sandboxed) = (Vec::new(), Vec::new(), Vec::new());
    let (mut without_ns, mut without_cgroup, mut with_control) =
        (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..n {
        plain.push(spawn(None, "true", &[]));
        env_only.push(spawn(Some(&off), "true", &[]));
        without_ns.push(spawn(Some(&no_ns), "true", &[]));
        without_cgroup.push(spawn(Some(&no_cgroup), "true", &[]));
        sandboxed.push(spawn(Some(&on), "true", &[]));
        with_control.push(spawn(Some(&guarded), "true", &[]));
    }
    let echo = ["-c", "echo 1 > /dev/null"];
    let (mut bash_off, mut bash_on) = (Vec::new(), Vec::new());
    for _ in 0..n {
        bash_off.push(spawn(Some(&off), "bash", &echo));
        bash_on.push(spawn(Some(&on), "bash", &echo));
    }
    let (p, e, s) = (median(plain), median(env_only), median(sandboxed));
    let w = median(without_ns);
    println!(
        "sandbox construction (once per performance, probe and scan included): {build_time:.2?}"
    );
    println!(
        "rescan for hidden files before a command (2,100 entries, {covered} covered, nothing changed), median of 20: {:.2?}",
        median(scans)
    );
    println!(
        "rescan after a command changed one folder, median of 20: {:.2?}",
        median(changed_scans)
    );
    println!("{}", on.describe());
    println!("process limit: {:?}", on.process_limit());
    println!("spawn `true`, median of {n}:");
    println!("  {:<34} {:>10.1?}", "plain", p);
    println!("  {:<34} {:>10.1?}", "sandbox off (env, rlimits, group)", e);
    println!("  {:<34} {:>10.1?}", "on, no namespaces (Landlock...)", w);
    println!("  {:<34} {:>10.1?}", "on (+ userns, mountns, covers)", s);
    println!(
        "  {:<34} {:>10.1?}",
        "on, control files + state guarded",
        median(with_control)
    );
    println!(
        "  {:<34} {:>10.1?}   ({:?})",
        "on, without the cgroup",
        median(without_cgroup),
        (no_cgroup.process_limit(), no_cgroup.memory_limit())
    );
    println!(
        "  {:<34} {:>10.1?}",
        "added by the namespaces",
        s.saturating_sub(w)
    );
    println!(
        "  {:<34} {:>10.1?}",
        "overhead of the sandbox",
        s.saturating_sub(p)
    );
    let (bo, bs) = (median(bash_off), median(bash_on));
    println!("spawn `bash -c 'echo 1 > /dev/null'`, median of {n}:");
    println!(
        "  {:<34} {:>10.1?}",
        "sandbox off (env, rlimits, group)", bo
    );
    println!("  {:<34} {:>10.1?}", "sandbox on", bs);
    println!(
        "  {:<34} {:>10.1?}",
        "Landlock + seccomp + caps",
        bs.saturating_sub(bo)
    );

    let turns = 20;
    let rounds = 15;
    let (mut off_t, mut on_t, mut no_ns_t) = (Vec::new(), Vec::new(), Vec::new());
    let off = Arc::new(off);
    let on = Arc::new(on);
    let no_cgroup = Arc::new(no_cgroup);
    for _ in 0..rounds {
        off_t.push(performance(None, ws.path(), turns).await);
        no_ns_t.push(performance(Some(no_cgroup.clone()), ws.path(), turns).await);
        on_t.push(performance(Some(on.clone()), ws.path(), turns).await);
    }
    let _ = off;
    let (o, s) = (median(off_t) / turns as u32, median(on_t) / turns as u32);
    println!("{turns}-turn `bash` performance, per turn (median of {rounds} runs):");
    println!(
        "  {:<34} {:>10.1?}",
        "no sandbox (bash as in improv-props)", o
    );
    println!(
        "  {:<34} {:>10.1?}",
        "on, no cgroup",
        median(no_ns_t) / turns as u32
    );
    println!("  {:<34} {:>10.1?}", "sandbox on", s);
    println!(
        "  {:<34} {:>10.1?}",
        "overhead per turn (one spawn)",
        s.saturating_sub(o)
    );
}
