//! The adversarial suite: each test drives the real kernel loop with a scripted model making an
//! attack, and asserts it was contained and logged.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;

#[tokio::test]
async fn smoke() {
    let rig = Rig::new();
    let run = rig
        .perform(vec![bash("ls; echo hi; cat /etc/shadow; env")])
        .await;
    println!("{}", run.sandbox.describe());
    println!("{}", run.output(0));
}
