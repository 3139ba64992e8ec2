//! What goes back to the actor, and what the log records, from a set of verdicts.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use improv_feedback::{Verdict, attempt_event, is_failing_note, note, write_note};
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

/// The output of `cargo test` when an assertion fails, backtrace on, as a check keeps it.
const CARGO_TEST_FAILED: &str = "\nrunning 2 tests\n.F\nfailures:\n\n---- mean_of_a_few_numbers stdout ----\n\
thread 'mean_of_a_few_numbers' (12424) panicked at tests/mean.rs:5:5:\n\
assertion `left == right` failed\n  left: Some(2.4)\n right: Some(3.0)\nstack backtrace:\n\
   0: __rustc::rust_begin_unwind\n             at /rustc/5980/library/std/src/panicking.rs:689:5\n\
   4: mean::mean_of_a_few_numbers\n             at ./tests/mean.rs:5:5\n\
note: Some details are omitted, run with `RUST_BACKTRACE=full` for a verbose backtrace.\n\n\n\
failures:\n    mean_of_a_few_numbers\n\n\
test result: FAILED. 1 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.08s\n\n\
error: test failed, to rerun pass `--test mean`\n[exit code 101]\n";

#[test]
fn a_panicking_test_run_is_sent_back_as_its_failed_assertion_only() {
    let v = [verdict("tests", false, CARGO_TEST_FAILED)];
    let expected = "thread 'mean_of_a_few_numbers' (12424) panicked at tests/mean.rs:5:5:\n\
                    assertion `left == right` failed\n  left: Some(2.4)\n right: Some(3.0)\n";
    let attempt = note(&v, 1, 3);
    assert!(
        attempt.contains(&format!("## tests\n{expected}\n")),
        "{attempt}"
    );
    assert!(!attempt.contains("backtrace"), "{attempt}");
    assert!(!attempt.contains("test result"), "{attempt}");
    let write = write_note(&v).unwrap();
    assert!(write.contains(expected), "{write}");
    assert!(!write.contains("rust_begin_unwind"), "{write}");
}

#[test]
fn failing_notes_are_told_from_other_notes() {
    assert!(is_failing_note(&note(&verdicts(), 1, 3)));
    assert!(is_failing_note(&note(&verdicts(), 3, 3)));
    assert!(is_failing_note(&write_note(&verdicts()).unwrap()));
    assert!(!is_failing_note(&note(&verdicts()[..1], 1, 3)));
    assert!(!is_failing_note("Attempt this task again, carefully."));
    assert!(!is_failing_note("Write hello.txt."));
}
