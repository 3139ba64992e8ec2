//! Routine files changed by several writers at once: performances noting matches they did not
//! serve (each with the repertoire it read at its start) and a director retiring the routine.
//! Each change is decided on the file as it is at the write (review L3): no count is lost and
//! the director's retirement is not overwritten, not by a learner either; learners proposing
//! the same skeleton at once write one routine; the lock is a file in `.improv/`. Writers race in threads, a bounded number of
//! times, in a temporary stage folder.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use improv_routine::practice::Observed;
use improv_routine::routine::{Parameter, Provenance, Record, Step};
use improv_routine::{Guard, Practice, Repertoire, Routine, Shape, Stability, Status, learn};
use std::path::Path;
use std::sync::{Arc, Barrier};

const NAME: &str = "write-file";

/// An approved routine whose intent is `Write {file}`, written to `stage/routines/`.
fn approved(stage: &Path) {
    let mut args = serde_json::Map::new();
    args.insert("path".into(), "{file}".into());
    let routine = Routine {
        name: NAME.into(),
        description: "Write {file}".into(),
        status: Status::Approved,
        stability: Stability::Fluid,
        intent: "Write {file}".into(),
        parameters: vec![Parameter {
            name: "file".into(),
            examples: vec!["a.rs".into()],
        }],
        checks: Vec::new(),
        retired_because: None,
        provenance: Provenance {
            skeleton: "00".into(),
            performances: vec!["p1".into()],
            contradicted_by: Vec::new(),
        },
        record: Record::default(),
        steps: vec![Step {
            prop: "write".into(),
            guard: Guard {
                ok: true,
                output: Shape::NonEmpty,
                settled: None,
            },
            args,
        }],
    };
    routine.write(&stage.join("routines")).unwrap();
}

fn on_disk(stage: &Path) -> Routine {
    Repertoire::open(stage).unwrap().get(NAME).unwrap().clone()
}

#[test]
fn performances_noting_at_once_lose_no_count() {
    let stage = tempfile::tempdir().unwrap();
    approved(stage.path());
    let (writers, each) = (4, 40);
    let start = Arc::new(Barrier::new(writers));
    let threads: Vec<_> = (0..writers)
        .map(|_| {
            let (stage, start) = (stage.path().to_path_buf(), start.clone());
            std::thread::spawn(move || {
                start.wait();
                for _ in 0..each {
                    let mut repertoire = Repertoire::open(&stage).unwrap();
                    repertoire
                        .note_unserved("Write b.rs", None, 1_000, "2026-11-29T00:00:00Z")
                        .unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(
        on_disk(stage.path()).record.unserved_matches,
        (writers * each) as u32
    );
}

#[test]
fn a_performance_does_not_overwrite_the_directors_retirement() {
    for _ in 0..20 {
        let stage = tempfile::tempdir().unwrap();
        approved(stage.path());
        // The performance read the repertoire when it started, before the director acted.
        let mut repertoire = Repertoire::open(stage.path()).unwrap();
        let director = {
            let stage = stage.path().to_path_buf();
            std::thread::spawn(move || {
                let mut theirs = Repertoire::open(&stage).unwrap();
                theirs
                    .update(NAME, |r| {
                        r.status = Status::Retired;
                        r.retired_because = Some("retired by the director".into());
                        true
                    })
                    .unwrap();
            })
        };
        for _ in 0..20 {
            repertoire
                .note_unserved("Write b.rs", None, 1_000, "2026-11-29T00:00:00Z")
                .unwrap();
        }
        director.join().unwrap();
        repertoire
            .note_unserved("Write c.rs", None, 1_000, "2026-11-29T00:00:00Z")
            .unwrap();
        let routine = on_disk(stage.path());
        assert_eq!(routine.status, Status::Retired, "{:?}", routine.record);
        assert_eq!(
            routine.retired_because.as_deref(),
            Some("retired by the director")
        );
    }
}

/// A converged practice of `Write FILE` that agrees with the routine of [`approved`].
fn practice(id: &str, file: &str) -> Practice {
    let mut args = serde_json::Map::new();
    args.insert("path".into(), file.into());
    Practice {
        performance: id.into(),
        intent: format!("Write {file}"),
        calls: vec![Observed {
            prop: "write".into(),
            args,
            output: "written".into(),
        }],
        checks: Vec::new(),
    }
}

#[test]
fn learning_with_a_stale_copy_keeps_the_directors_retirement() {
    let stage = tempfile::tempdir().unwrap();
    approved(stage.path());
    // The learner read the repertoire when the performance started, before the director acted.
    let mut stale = Repertoire::open(stage.path()).unwrap();
    Repertoire::open(stage.path())
        .unwrap()
        .update(NAME, |r| {
            r.status = Status::Retired;
            r.retired_because = Some("retired by the director".into());
            true
        })
        .unwrap();
    let learned = learn(&mut stale, &[practice("p2", "b.rs")], false, None).unwrap();
    assert_eq!(learned.updated, vec![NAME.to_string()]);
    let routine = on_disk(stage.path());
    assert_eq!(routine.status, Status::Retired);
    assert_eq!(
        routine.retired_because.as_deref(),
        Some("retired by the director")
    );
    assert_eq!(routine.provenance.performances, ["p1", "p2"]);
}

#[test]
fn learners_proposing_the_same_skeleton_at_once_write_one_routine() {
    let practices = [
        practice("p1", "a.rs"),
        practice("p2", "b.rs"),
        practice("p3", "c.rs"),
    ];
    for _ in 0..100 {
        let stage = tempfile::tempdir().unwrap();
        let learners = 4;
        let start = Arc::new(Barrier::new(learners));
        let threads: Vec<_> = (0..learners)
            .map(|_| {
                let (stage, start, practices) =
                    (stage.path().to_path_buf(), start.clone(), practices.clone());
                std::thread::spawn(move || {
                    // Each read the (empty) repertoire before any of them wrote.
                    let mut repertoire = Repertoire::open(&stage).unwrap();
                    start.wait();
                    learn(&mut repertoire, &practices, false, None).unwrap()
                })
            })
            .collect();
        let learned: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        let proposed: Vec<&String> = learned.iter().flat_map(|l| &l.proposed).collect();
        assert_eq!(proposed.len(), 1, "one learner proposes it: {learned:?}");
        let on_disk = Repertoire::open(stage.path()).unwrap();
        assert_eq!(on_disk.routines.len(), 1, "{:#?}", on_disk.routines);
        assert_eq!(
            on_disk.routines[0].provenance.performances,
            ["p1", "p2", "p3"]
        );
    }
}

#[test]
fn the_lock_is_a_file_in_the_state_folder_not_among_the_routines() {
    let stage = tempfile::tempdir().unwrap();
    approved(stage.path());
    let lock = stage.path().join(".improv").join("routines.lock");
    assert!(std::fs::metadata(&lock).unwrap().is_file());
    let listed: Vec<String> = std::fs::read_dir(stage.path().join("routines"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(listed, [format!("{NAME}.toml")]);
}
