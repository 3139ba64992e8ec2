//! What goes back to the actor, and what the log records, from a set of verdicts.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use improv_feedback::{Verdict, attempt_event, note, write_note};
use improv_kernel::EventKind;
use improv_stage::CheckOn;

fn verdict(check: &str, passed: bool, output: &str) -> Verdict {
    Verdict {
        check: check.into(),
        passed,
        output: output.into(),
        duration_ms: 12.5,
    }
}

fn verdicts() -> Vec<Verdict> {
    vec![
        verdict("build", true, "Finished dev profile"),
        verdict(
            "tests",
            false,
            "test add ... FAILED\nassertion failed: add(2, 2) == 4\n[exit code 101]\n",
        ),
        verdict("review", false, ""),
    ]
}

#[test]
fn the_note_lists_the_failed_checks_with_their_output_and_what_to_do() {
    assert_eq!(
        note(&verdicts(), 1, 3),
        "Attempt 1 of 3: 2 of 3 checks failed: tests, review.\n\
         \n## tests\n\
         test add ... FAILED\nassertion failed: add(2, 2) == 4\n[exit code 101]\n\
         \n## review\n(no output)\n\
         \nFix what they report, then say you are done: the checks run again (2 attempts left)."
    );
}

#[test]
fn the_note_counts_down_the_attempts() {
    let second = note(&verdicts(), 2, 3);
    assert!(second.starts_with("Attempt 2 of 3: "), "{second}");
    assert!(second.ends_with("(1 attempt left)."), "{second}");
    let last = note(&verdicts(), 3, 3);
    assert!(last.ends_with("That was the last attempt."), "{last}");
    // Passing checks are not repeated to the actor: they cost tokens and say nothing.
    assert!(!second.contains("Finished dev profile"), "{second}");
}

#[test]
fn with_every_check_passed_the_note_says_so() {
    let passed = vec![verdict("build", true, "ok")];
    assert_eq!(
        note(&passed, 2, 3),
        "All 1 checks passed on attempt 2 of 3."
    );
}

#[test]
fn a_write_note_comes_only_when_a_write_check_fails() {
    assert_eq!(write_note(&[verdict("build", true, "ok")]), None);
    assert_eq!(
        write_note(&[verdict(
            "build",
            false,
            "error[E0425]: cannot find value `x`"
        )])
        .unwrap(),
        "After your last change, build fails:\n\n## build\nerror[E0425]: cannot find value `x`\n\nFix this before you go on."
    );
}

#[test]
fn verdicts_become_the_kernel_events_of_an_attempt() {
    let v = verdicts();
    assert_eq!(
        v[1].event(2, CheckOn::Write),
        EventKind::CheckFinished {
            attempt: 2,
            check: "tests".into(),
            on: "write".into(),
            passed: false,
            output: v[1].output.clone(),
            duration_ms: 12.5,
        }
    );
    assert_eq!(
        attempt_event(&v, 2, 4),
        EventKind::AttemptFinished {
            attempt: 2,
            max_attempts: 4,
            passed: false,
            failed: vec!["tests".into(), "review".into()],
        }
    );
    assert_eq!(
        attempt_event(&v[..1], 1, 4),
        EventKind::AttemptFinished {
            attempt: 1,
            max_attempts: 4,
            passed: true,
            failed: Vec::new(),
        }
    );
}
