//! The file props against a command that swaps a folder for a symlink while they work: through
//! the real loop (a kernel performance with the scripted model), a background thread exchanges
//! `ws/d` between a real folder and a symlink to an outside folder as fast as it can, and the
//! actor reads, writes, edits and greps under `d` hundreds of times. Nothing from outside may
//! reach a tool result, and nothing may be written outside.

use improv_kernel::{Actor, Budget, Message, Performance, Prop, ScriptedModel, ScriptedTurn};
use improv_props::{Edit, Find, Grep, Read, Write};
use serde_json::json;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use tokio_util::sync::CancellationToken;

const SECRET: &str = "OUTSIDE-SECRET-51c9";
const TURNS: usize = 400;

/// Exchanges `a` and `b` atomically (`renameat2(RENAME_EXCHANGE)`), so `a` is always there: one
/// moment a folder, the next a symlink.
fn exchange(a: &Path, b: &Path) -> bool {
    use rustix::fs::{CWD, RenameFlags, renameat_with};
    renameat_with(CWD, a, CWD, b, RenameFlags::EXCHANGE).is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_folder_swapped_for_a_symlink_never_leads_the_props_outside() {
    let base = tempfile::tempdir().unwrap();
    let base = base.path().canonicalize().unwrap();
    let (ws, outside) = (base.join("ws"), base.join("outside"));
    std::fs::create_dir_all(ws.join("d")).unwrap();
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(ws.join("d/secret.txt"), "inside\n").unwrap();
    std::fs::write(ws.join("d/target.txt"), "keep a\n").unwrap();
    std::fs::write(outside.join("secret.txt"), format!("{SECRET}\n")).unwrap();
    std::fs::write(outside.join("target.txt"), format!("{SECRET} a\n")).unwrap();
    // A name only the outside folder has: `find` must never list it.
    std::fs::write(outside.join("outside-only.txt"), "").unwrap();
    std::os::unix::fs::symlink(&outside, ws.join("swap")).unwrap();
    let target_inode = std::fs::metadata(outside.join("target.txt")).unwrap().ino();

    let stop = Arc::new(AtomicBool::new(false));
    let swaps = Arc::new(AtomicU64::new(0));
    let swapper = {
        let (stop, swaps, ws) = (stop.clone(), swaps.clone(), ws.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                if exchange(&ws.join("d"), &ws.join("swap")) {
                    swaps.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
    };

    let turns = (0..TURNS).map(|i| {
        ScriptedTurn::call("read", json!({"path": "d/secret.txt"}))
            .and_call("grep", json!({"pattern": "SECRET|inside", "path": "d"}))
            .and_call("find", json!({"pattern": "*.txt", "path": "d"}))
            .and_call(
                "write",
                json!({"path": "d/out.txt", "content": format!("write {i}\n")}),
            )
            .and_call(
                "edit",
                json!({"path": "d/target.txt", "old": "a", "new": "b", "all": true}),
            )
            .and_call(
                "edit",
                json!({"path": "d/target.txt", "old": "b", "new": "a", "all": true}),
            )
    });
    let model = Arc::new(ScriptedModel::new(turns.chain([ScriptedTurn::say("done")])));
    let props: Vec<Arc<dyn Prop>> = vec![
        Arc::new(Read::new(50 * 1024)),
        Arc::new(Grep::new(30 * 1024)),
        Arc::new(Find::new()),
        Arc::new(Write::new()),
        Arc::new(Edit::new()),
    ];
    let actor = Actor {
        name: "lead".into(),
        system: "race".into(),
        model,
        props,
        max_output_tokens: None,
    };
    let mut performance = Performance::builder(actor)
        .workspace(&ws)
        .budget(Budget::default())
        .start("race the props")
        .unwrap();
    performance.act(&CancellationToken::new()).await;
    stop.store(true, Ordering::Relaxed);
    swapper.join().unwrap();

    let results: Vec<(String, bool)> = performance
        .conversation()
        .iter()
        .filter_map(|m| match m {
            Message::Tool {
                content, is_error, ..
            } => Some((content.clone(), *is_error)),
            _ => None,
        })
        .collect();
    assert_eq!(results.len(), TURNS * 6, "every call was made");
    let refused = results.iter().filter(|(_, err)| *err).count();
    let leaked: Vec<&String> = results
        .iter()
        .map(|(c, _)| c)
        .filter(|c| c.contains(SECRET) || c.contains("outside-only"))
        .collect();
    println!(
        "{} swaps, {} calls, {refused} refused, {} leaked",
        swaps.load(Ordering::Relaxed),
        results.len(),
        leaked.len()
    );
    assert!(
        swaps.load(Ordering::Relaxed) > TURNS as u64,
        "the swapper ran"
    );
    assert!(
        refused > 0,
        "some calls met the symlink: the race was really run"
    );
    assert!(
        results.iter().any(|(c, err)| !err && c.contains("inside")),
        "some calls met the folder"
    );
    assert!(
        leaked.is_empty(),
        "outside text reached the model: {leaked:?}"
    );
    let names: Vec<_> = std::fs::read_dir(&outside)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names.len(),
        3,
        "nothing was written outside the workspace: {names:?}"
    );
    assert_eq!(
        std::fs::read_to_string(outside.join("target.txt")).unwrap(),
        format!("{SECRET} a\n"),
        "the outside file was not edited"
    );
    assert_eq!(
        std::fs::metadata(outside.join("target.txt")).unwrap().ino(),
        target_inode,
        "the outside file was not replaced"
    );
    assert!(
        !outside.join("out.txt").exists(),
        "write created a file outside"
    );
}
