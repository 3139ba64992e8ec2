//! The director-note watchers of one SQLite store, woken by one poller: SQLite has no
//! cross-process notification, so something must look, but one look (a single query) every
//! [`POLL`] serves every watched performance at once and wakes only those whose notes went past
//! what their watcher saw (or that finished), as PostgreSQL's one listener routes NOTIFY. A
//! worker with 10,000 performances waiting on their model used to make 10,000 looks per
//! interval, each taking the store's one connection in turn.
//!
//! Written here rather than taken from a crate: the watchers are keyed by performance and the
//! look is this store's own SQL.

use super::{Db, POLL, not_found, ready};
use crate::rows::{Awaited, parse_state};
use crate::{State, StoreError};
use rusqlite::Connection;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::oneshot;

/// The note watchers of one store, and whether its poller runs.
#[derive(Default)]
pub(super) struct Watchers {
    state: Mutex<Watching>,
}

#[derive(Default)]
struct Watching {
    next: u64,
    by_token: HashMap<u64, Watcher>,
    /// Whether a poller task runs; it ends once nobody watches.
    polling: bool,
}

struct Watcher {
    performance: String,
    after: u64,
    /// Told that the notes went past `after` or the performance finished (`Ok`), or that it
    /// does not exist.
    wake: oneshot::Sender<Result<(), StoreError>>,
}

/// What the poller's look found for one watched performance.
struct Seen {
    finished: bool,
    last_note: u64,
}

impl Watchers {
    fn lock(&self) -> MutexGuard<'_, Watching> {
        // A poisoned lock needs a panic while a watcher was moved in or out; the map is whole.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits until performance `id` has a note after `after` or finished (true), or `timeout`
    /// passed (false, unless a last look finds it there), as [`crate::Store::wait_notes`] says.
    pub(super) async fn wait(
        self: &Arc<Self>,
        db: &Db,
        id: &str,
        after: u64,
        timeout: Duration,
    ) -> Result<bool, StoreError> {
        let what = Awaited::Notes { after };
        // Watched before the first look, so a note sent between the two still wakes it.
        let (token, woken) = self.watch(db, id, after);
        let _forget = Forget(self, token);
        let look = |id: String| db.call(move |store, conn| ready(store, conn, &id, what));
        if look(id.to_string()).await? {
            return Ok(true);
        }
        match tokio::time::timeout(timeout, woken).await {
            Ok(Ok(woken)) => woken.map(|()| true),
            // The poller went away (its runtime shut down): look once more and say what is.
            Ok(Err(_)) | Err(_) => look(id.to_string()).await,
        }
    }

    /// Adds a watcher of `id`'s notes after `after`, and starts the poller if none runs.
    fn watch(
        self: &Arc<Self>,
        db: &Db,
        id: &str,
        after: u64,
    ) -> (u64, oneshot::Receiver<Result<(), StoreError>>) {
        let (wake, woken) = oneshot::channel();
        let mut state = self.lock();
        let token = state.next;
        state.next += 1;
        let watcher = Watcher {
            performance: id.to_string(),
            after,
            wake,
        };
        state.by_token.insert(token, watcher);
        if !state.polling {
            state.polling = true;
            tokio::spawn(self.clone().poll(db.clone()));
        }
        (token, woken)
    }

    /// Looks every [`POLL`] for every watched performance in one query, until nobody watches.
    async fn poll(self: Arc<Self>, db: Db) {
        let mut stopped = Stopped {
            watchers: &self,
            armed: true,
        };
        loop {
            tokio::time::sleep(POLL).await;
            // `upto`: the watchers registered before this look; one registered during it was
            // not looked for, so its absence from what the look saw says nothing.
            let (ids, upto) = {
                let mut state = self.lock();
                if state.by_token.is_empty() {
                    state.polling = false;
                    stopped.armed = false;
                    return;
                }
                let mut ids: Vec<String> = state
                    .by_token
                    .values()
                    .map(|w| w.performance.clone())
                    .collect();
                ids.sort_unstable();
                ids.dedup();
                (ids, state.next)
            };
            match db.call(move |store, conn| look(store, conn, &ids)).await {
                Ok(seen) => self.wake(&db.name, &seen, upto),
                // The watchers stay; the next look tries again, and each watcher's own last
                // look at its deadline reports a lasting error.
                Err(e) => tracing::debug!("looking for director notes: {e}"),
            }
        }
    }

    /// Wakes the watchers older than token `upto` (those the look looked for) whose
    /// performance has a note past theirs, finished, or is gone.
    fn wake(&self, store: &str, seen: &HashMap<String, Seen>, upto: u64) {
        let mut state = self.lock();
        let due: Vec<u64> = state
            .by_token
            .iter()
            .filter(|(token, _)| **token < upto)
            .filter(|(_, w)| {
                seen.get(&w.performance)
                    .is_none_or(|s| s.finished || s.last_note > w.after)
            })
            .map(|(token, _)| *token)
            .collect();
        for token in due {
            if let Some(watcher) = state.by_token.remove(&token) {
                let woken = match seen.contains_key(&watcher.performance) {
                    true => Ok(()),
                    false => Err(not_found(store, &watcher.performance)),
                };
                // A watcher that went away meanwhile is forgotten by its own drop.
                let _ = watcher.wake.send(woken);
            }
        }
    }

    /// How many watchers wait now.
    #[cfg(test)]
    pub(super) fn watching(&self) -> usize {
        self.lock().by_token.len()
    }
}

/// Forgets a watcher when its wait ends or is dropped.
struct Forget<'a>(&'a Watchers, u64);

impl Drop for Forget<'_> {
    fn drop(&mut self) {
        self.0.lock().by_token.remove(&self.1);
    }
}

/// Marks the poller stopped when its task is dropped before it saw nobody watching (a runtime
/// shutting down drops it mid-sleep): the next watcher starts another, and the watchers it
/// leaves are told it is gone (their senders dropped) and look for themselves.
struct Stopped<'a> {
    watchers: &'a Watchers,
    armed: bool,
}

impl Drop for Stopped<'_> {
    fn drop(&mut self) {
        if self.armed {
            let mut state = self.watchers.lock();
            state.polling = false;
            state.by_token.clear();
        }
    }
}

/// The one query of a look: each of `ids`' state and last note number; a performance that is
/// not in the store is absent.
fn look(
    store: &str,
    conn: &Connection,
    ids: &[String],
) -> Result<HashMap<String, Seen>, StoreError> {
    let err = |e| super::sql_error(store, e);
    let ids = serde_json::Value::from(ids).to_string();
    let mut statement = conn
        .prepare_cached(
            "SELECT p.id, p.state, (SELECT COALESCE(MAX(n), 0) FROM notes WHERE performance = p.id) \
             FROM json_each(?1) w JOIN performances p ON p.id = w.value",
        )
        .map_err(err)?;
    let rows = statement
        .query_map([ids], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, i64>(2)?,
            ))
        })
        .map_err(err)?;
    let mut seen = HashMap::new();
    for row in rows {
        let (id, state, last_note) = row.map_err(err)?;
        let finished = parse_state(store, &state)? == State::Finished;
        let last_note = crate::rows::unsigned(last_note);
        seen.insert(
            id,
            Seen {
                finished,
                last_note,
            },
        );
    }
    Ok(seen)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)] // tests may unwrap

    use crate::{NewPerformance, SqliteStore, Store};
    use std::sync::Arc;
    use std::sync::atomic::Ordering;
    use std::time::{Duration, Instant};

    const WATCHERS: usize = 40;
    const NEVER: Duration = Duration::from_secs(3600);
    /// The bound on a wait for the poller to act: not a timing.
    const PATIENCE: Duration = Duration::from_secs(30);

    fn new(n: usize) -> NewPerformance {
        NewPerformance {
            id: None,
            stage: "/stage.toml".into(),
            stage_name: None,
            intent: format!("intent {n}"),
            model: None,
            origin: "cli".into(),
            budget: None,
        }
    }

    async fn until(what: &str, done: impl Fn() -> bool) {
        let start = Instant::now();
        while !done() {
            assert!(start.elapsed() < PATIENCE, "{what}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Many note watchers on one store: the store is looked at once per interval for all of
    /// them, not once per watcher; a note wakes its own performance's watcher and no other,
    /// and watchers that go away are forgotten (the looks stop).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn one_look_per_interval_serves_every_note_watcher() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(SqliteStore::open(&dir.path().join("store.db")).unwrap());
        let mut ids = Vec::new();
        for n in 0..WATCHERS {
            ids.push(store.enqueue(&new(n)).await.unwrap());
        }
        let enqueued = store.calls.load(Ordering::Relaxed);
        let waiting: Vec<_> = ids
            .iter()
            .map(|id| {
                let (store, id) = (store.clone(), id.clone());
                tokio::spawn(async move { store.wait_notes(&id, 0, NEVER).await })
            })
            .collect();
        // Each watcher looks once for itself when it starts, as on PostgreSQL.
        until("the watchers did not all look", || {
            store.calls.load(Ordering::Relaxed) >= enqueued + WATCHERS as u64
        })
        .await;

        // Quiet: nothing to find, and the store is looked at about once per interval.
        let (before, start) = (store.calls.load(Ordering::Relaxed), Instant::now());
        tokio::time::sleep(super::POLL * 10).await;
        let looks = store.calls.load(Ordering::Relaxed) - before;
        let intervals = (start.elapsed().as_millis() / super::POLL.as_millis()) as u64;
        assert!(
            looks <= intervals + 1,
            "{looks} looks in {intervals} intervals for {WATCHERS} watchers"
        );
        assert!(looks >= 1, "nobody looked");
        assert!(waiting.iter().all(|w| !w.is_finished()), "woken by nothing");
        assert_eq!(store.notes.watching(), WATCHERS);

        // A note to every other performance wakes its watcher, and only those.
        for id in ids.iter().step_by(2) {
            store.send_note(id, "turn left").await.unwrap();
        }
        let mut waiting = waiting.into_iter();
        let mut still = Vec::new();
        while let (Some(noted), Some(other)) = (waiting.next(), waiting.next()) {
            let woken = tokio::time::timeout(PATIENCE, noted)
                .await
                .expect("a watcher was not woken by its note");
            assert!(woken.unwrap().unwrap(), "woken without its note there");
            still.push(other);
        }
        assert_eq!(store.notes.watching(), WATCHERS / 2);
        assert!(
            still.iter().all(|w| !w.is_finished()),
            "woken by another's note"
        );

        // The others go away: they are forgotten, and nobody looks any more.
        for other in &still {
            other.abort();
        }
        until("the watchers that went away are still watched", || {
            store.notes.watching() == 0
        })
        .await;
        tokio::time::sleep(super::POLL * 3).await;
        let settled = store.calls.load(Ordering::Relaxed);
        tokio::time::sleep(super::POLL * 5).await;
        assert_eq!(
            store.calls.load(Ordering::Relaxed),
            settled,
            "looked for nobody"
        );
    }

    /// A watcher registered while the poller's look runs was not looked for: the look must not
    /// take its performance's absence from what it saw as the performance being gone.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_watcher_registered_during_a_look_is_not_told_its_performance_is_gone() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(SqliteStore::open(&dir.path().join("store.db")).unwrap());
        let (a, b) = (
            store.enqueue(&new(0)).await.unwrap(),
            store.enqueue(&new(1)).await.unwrap(),
        );
        let calls = || store.calls.load(Ordering::Relaxed);
        let before = calls();
        let watching_a = {
            let (store, a) = (store.clone(), a.clone());
            tokio::spawn(async move { store.wait_notes(&a, 0, NEVER).await })
        };
        until("A did not look for itself", || calls() > before).await;

        // The store's connection is held, so the poller's next look (for A only) waits.
        let (hold, held) = std::sync::mpsc::channel::<()>();
        let (taken, connection_taken) = std::sync::mpsc::channel::<()>();
        let conn = store.conn.clone();
        let holder = std::thread::spawn(move || {
            let _conn = conn.lock().unwrap();
            taken.send(()).unwrap();
            held.recv().unwrap();
        });
        connection_taken.recv().unwrap();
        let looked = calls();
        until("the poller did not look", || calls() > looked).await;

        // B registers during that look, then its own first look waits for the connection too.
        let registering = calls();
        let watching_b = {
            let (store, b) = (store.clone(), b.clone());
            tokio::spawn(async move { store.wait_notes(&b, 0, NEVER).await })
        };
        until("B did not register", || calls() > registering).await;
        hold.send(()).unwrap();
        holder.join().unwrap();

        // B goes on waiting for its note, and its note wakes it.
        store.send_note(&b, "turn left").await.unwrap();
        let woken = tokio::time::timeout(PATIENCE, watching_b)
            .await
            .expect("B was not woken by its note");
        assert!(woken.unwrap().unwrap(), "B woken without its note there");
        assert!(!watching_a.is_finished(), "A woken by B's note");
        watching_a.abort();
    }
}
