//! Timed doors on a simulated clock through the real daemon and the SQLite store: every due time
//! fires exactly once across `kill -9` restarts of two daemons sharing the store, missed ones are recorded under `catch_up`, and
//! failures back off where `improv door status` shows them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use crate::common::{Counting, TestStage, context, store};
use improv_door::expiry::stage_key;
use improv_door::timed::Timed;
use improv_door::{Clock, Daemon, SimClock};
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

const MINUTE: i64 = 60_000;
const HALF_HOUR: i64 = 30 * MINUTE;
const HOUR: i64 = 60 * MINUTE;
/// A Sunday, 00:00 UTC plus 7 minutes (not a due time of a 30-minute door).
const START: i64 = 1_795_651_200_000 + 7 * MINUTE;

/// A small deterministic generator: the test is the same on every run, yet kills land all over
/// the daemon's work.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, below: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % below
    }
}

fn dues(from: i64, to: i64) -> Vec<i64> {
    let mut d = (from / HALF_HOUR + 1) * HALF_HOUR;
    let mut out = Vec::new();
    while d <= to {
        out.push(d);
        d += HALF_HOUR;
    }
    out
}

/// Runs a daemon life on its own runtime until the clock reaches `until`, moving the clock in
/// uneven steps; returns the runtime, still running, for the caller to kill or drain.
fn life(
    t: &TestStage,
    clock: &Arc<SimClock>,
    launcher: &Arc<Counting>,
    rng: &mut Lcg,
    until: i64,
) -> (tokio::runtime::Runtime, Arc<Daemon>) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let store = rt.block_on(store(&t.db()));
    let daemon = Daemon::new(
        t.stage.clone(),
        store,
        launcher.clone(),
        clock.clone(),
        None,
    );
    rt.block_on(daemon.start());
    // A second daemon on the same store at the same time (a second `improv serve`).
    let second = Daemon::new(
        t.stage.clone(),
        rt.block_on(common::store(&t.db())),
        launcher.clone(),
        clock.clone(),
        None,
    );
    rt.block_on(second.start());
    // The door's catch-up window starts at its first open (a door added later does not fire for
    // the times before it existed): the clock moves only once a daemon has opened it. Seen on a
    // loaded machine: the first open came 3.4 simulated hours in, and 7 due times were never due.
    rt.block_on(async {
        let store = common::store(&t.db()).await;
        let give_up = std::time::Instant::now() + Duration::from_secs(60);
        while store
            .get(
                improv_door::timed::SINCE,
                &improv_door::kept::key(&stage_key(&t.stage), "tick"),
            )
            .await
            .unwrap()
            .is_none()
        {
            assert!(
                std::time::Instant::now() < give_up,
                "no daemon opened the door in 60 s"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });
    while clock.now() < until {
        let step = (1 + rng.next(45) as i64) * MINUTE;
        clock.set((clock.now() + step).min(until));
        for _ in 0..rng.next(4) {
            std::thread::sleep(Duration::from_micros(300));
        }
    }
    (rt, daemon)
}

/// Whether a firing's performance ran: it ended (`fired`), or it started and the daemon was
/// killed before it could note the end.
fn settled(f: &improv_store::Firing, launcher: &Counting) -> bool {
    f.note.starts_with("fired")
        || (f.note.starts_with(improv_door::timed::PERFORMING)
            && f.performance
                .as_ref()
                .is_some_and(|p| launcher.ids().contains(p)))
}

#[test]
fn seventy_two_hours_two_daemons_twenty_kills_every_due_time_fires_exactly_once() {
    let t = TestStage::new(
        "[[door]]\nname = \"tick\"\nevery = \"30m\"\nintent = \"tick\"\ncatch_up = \"all\"\n",
    );
    let clock = Arc::new(SimClock::new(START));
    let launcher = Arc::new(Counting {
        yields: 0,
        ..Counting::default()
    });
    let mut rng = Lcg(7);
    let end = START + 72 * HOUR;
    let kills = 20;
    for n in 0..kills {
        let until = START + (n + 1) * (72 * HOUR) / (kills + 1);
        let (rt, _daemon) = life(&t, &clock, &launcher, &mut rng, until.max(clock.now()));
        // kill -9: the daemon's tasks stop wherever they are; a store write already handed to
        // SQLite commits or not, as it would when the process dies (no write lands later).
        rt.shutdown_timeout(Duration::from_secs(30));
        if rng.next(3) == 0 {
            // Downtime: nobody runs while the clock moves; catch_up = "all" performs it later.
            clock.set((clock.now() + (1 + rng.next(3) as i64) * HOUR).min(end));
        }
    }
    let (rt, daemon) = life(&t, &clock, &launcher, &mut rng, end);
    // A last due time after the abandoned claims' grace, so the last life's tick retakes them.
    let last = end + 45 * MINUTE;
    clock.set(last);
    let expected = dues(START, last);
    let rows = rt.block_on(async {
        let store = store(&t.db()).await;
        // A bound for a stuck daemon, not a timing: the last life catches up on the missed due
        // times and retakes the killed lives' claims, which took over 20 s on a loaded machine.
        let give_up = std::time::Instant::now() + Duration::from_secs(180);
        let mut i = 0;
        while std::time::Instant::now() < give_up {
            // Time goes on (short of the next due time), so a daemon waiting out a store error
            // tries again.
            clock.set(last + (i / 100).min(7) * MINUTE);
            i += 1;
            let rows = store
                .firings(&stage_key(&t.stage), "tick", 100_000)
                .await
                .unwrap();
            if rows.len() == expected.len() && rows.iter().all(|f| settled(f, &launcher)) {
                return rows;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let rows = store
            .firings(&stage_key(&t.stage), "tick", 100_000)
            .await
            .unwrap();
        let odd: Vec<_> = rows
            .iter()
            .filter(|f| !f.note.starts_with("fired"))
            .collect();
        panic!(
            "{} of {} due times recorded; not fired: {odd:#?}",
            rows.len(),
            expected.len()
        );
    });
    rt.block_on(daemon.drain());
    let mut seen: Vec<i64> = rows.iter().map(|f| f.due).collect();
    seen.sort();
    assert_eq!(seen, expected, "every due time once, none missing");
    let ids = launcher.ids();
    let unique: HashSet<&String> = ids.iter().collect();
    assert_eq!(unique.len(), ids.len(), "a performance was started twice");
    assert_eq!(ids.len(), expected.len(), "one performance per due time");
    let recorded: HashSet<&String> = rows.iter().filter_map(|f| f.performance.as_ref()).collect();
    assert_eq!(
        recorded, unique,
        "each firing names the performance it started"
    );
    let retaken = rows.iter().filter(|f| f.note.contains("retaken")).count();
    eprintln!(
        "{} due times over 72 h, {kills} kills, {retaken} firings retaken from a killed daemon",
        expected.len()
    );
}

#[tokio::test]
async fn after_downtime_latest_performs_once_and_lists_the_missed() {
    let t = TestStage::new("[[door]]\nname = \"tick\"\nevery = \"30m\"\nintent = \"tick\"\n");
    let clock = Arc::new(SimClock::new(START));
    let launcher = Arc::new(Counting::default());
    let store = store(&t.db()).await;
    let ctx = context(
        &t.stage,
        "tick",
        store.clone(),
        launcher.clone(),
        clock.clone(),
    );
    let mut timed = Timed::open(ctx.clone()).await.unwrap().unwrap();
    clock.set(START + 23 * MINUTE);
    timed.tick().await.unwrap();
    assert_eq!(launcher.ids().len(), 1, "on time: performed");
    // Five hours with no daemon, then a new one.
    clock.set(START + 5 * HOUR + 23 * MINUTE);
    let mut timed = Timed::open(ctx).await.unwrap().unwrap();
    timed.tick().await.unwrap();
    assert_eq!(
        launcher.ids().len(),
        2,
        "only the latest missed firing performs"
    );
    let rows = store
        .firings(&stage_key(&t.stage), "tick", 100)
        .await
        .unwrap();
    assert_eq!(rows.len(), 11, "{rows:#?}");
    assert!(rows[0].note.starts_with("fired"), "{:?}", rows[0]);
    for f in &rows[1..10] {
        assert!(
            f.note.starts_with("missed") && f.note.contains("catch_up = latest"),
            "{f:?}"
        );
        assert_eq!(f.performance, None);
    }
}

#[tokio::test]
async fn skip_records_the_missed_and_performs_none_of_them() {
    let t = TestStage::new(
        "[[door]]\nname = \"tick\"\nevery = \"1h\"\nintent = \"tick\"\ncatch_up = \"skip\"\n",
    );
    let clock = Arc::new(SimClock::new(START));
    let launcher = Arc::new(Counting::default());
    let store = store(&t.db()).await;
    let ctx = context(
        &t.stage,
        "tick",
        store.clone(),
        launcher.clone(),
        clock.clone(),
    );
    Timed::open(ctx.clone()).await.unwrap().unwrap();
    clock.set(START + 3 * HOUR);
    Timed::open(ctx)
        .await
        .unwrap()
        .unwrap()
        .tick()
        .await
        .unwrap();
    assert!(launcher.ids().is_empty());
    let rows = store
        .firings(&stage_key(&t.stage), "tick", 100)
        .await
        .unwrap();
    assert_eq!(rows.len(), 3);
    assert!(rows.iter().all(|f| f.note.contains("catch_up = skip")));
}

#[tokio::test]
async fn failures_back_off_exponentially_and_are_recorded() {
    let t = TestStage::new("[[door]]\nname = \"tick\"\nevery = \"1m\"\nintent = \"tick\"\n");
    let clock = Arc::new(SimClock::new(START));
    let launcher = Arc::new(Counting::default());
    launcher
        .fail
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let store = store(&t.db()).await;
    let ctx = context(
        &t.stage,
        "tick",
        store.clone(),
        launcher.clone(),
        clock.clone(),
    );
    let mut timed = Timed::open(ctx).await.unwrap().unwrap();
    for _ in 0..20 {
        clock.advance(Duration::from_secs(60));
        timed.tick().await.unwrap();
    }
    // Failures at minutes 1, 2 (after 1 m), 4 (after 2 m), 8 (after 4 m), 16 (after 8 m).
    assert_eq!(launcher.ids().len(), 5, "backed off between tries");
    let rows = store
        .firings(&stage_key(&t.stage), "tick", 100)
        .await
        .unwrap();
    assert_eq!(rows.len(), 20, "every due time is still recorded");
    let failed = rows.iter().filter(|f| f.note.starts_with("failed")).count();
    let skipped = rows
        .iter()
        .filter(|f| f.note.starts_with("skipped: backing off"))
        .count();
    assert_eq!((failed, skipped), (5, 15), "{rows:#?}");
    let status = improv_door::status::status(&t.stage, store.as_ref(), clock.now(), 3)
        .await
        .unwrap();
    assert_eq!(status[0].backoff.failures, 5);
    assert_eq!(status[0].firings.len(), 3);
    assert!(status[0].next_due.is_some());
    // A success resets the backoff.
    launcher
        .fail
        .store(false, std::sync::atomic::Ordering::SeqCst);
    clock.advance(Duration::from_secs(3600));
    timed.tick().await.unwrap();
    let status = improv_door::status::status(&t.stage, store.as_ref(), clock.now(), 1)
        .await
        .unwrap();
    assert_eq!(status[0].backoff.failures, 0, "{:?}", status[0]);
}

#[tokio::test]
async fn a_cron_door_fires_in_its_time_zone() {
    let t = TestStage::new(
        "[[door]]\nname = \"morning\"\nschedule = \"0 8 * * MON-FRI\"\ntimezone = \"Asia/Tokyo\"\nintent = \"hi\"\n",
    );
    let timing = improv_door::schedule::Timing::of(&t.stage.doors[0])
        .unwrap()
        .unwrap();
    // START is Sunday 00:07 UTC = Sunday 09:07 in Tokyo: next is Monday 08:00 JST = Sunday 23:00 UTC.
    let next = timing.next_after(START).unwrap();
    assert_eq!(next, START - 7 * MINUTE + 23 * HOUR);
}
