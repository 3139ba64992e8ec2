//! Routine files changed by several writers at once: performances noting matches they did not
//! serve (each with the repertoire it read at its start) and a director retiring the routine.
//! Each change is decided on the file as it is at the write (review L3): no count is lost and
//! the director's retirement is not overwritten. Writers race in threads, a bounded number of
//! times, in a temporary stage folder.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use improv_routine::routine::{Parameter, Provenance, Record, Step};
use improv_routine::{Guard, Repertoire, Routine, Shape, Stability, Status};
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
