//! The daemon: every door of a stage at work at once — a task per timed door, a listener per
//! channel door, webhook doors answered on request — started, reloaded (SIGHUP: only the doors
//! that changed restart, and what changed is said) and drained (SIGTERM: no new firing starts,
//! the ones under way finish). The daemon's state lock is held only to read or change the map
//! of doors, never while a door stops: a reload waits for a changed door's firing under way
//! with the lock free, swapping each door in as soon as its own task ends, so the other doors
//! stay up and webhooks are answered meanwhile.

use crate::clock::Clock;
use crate::context::{DoorContext, Launcher, Listeners};
use crate::expiry::{StageRetention, stage_key};
use crate::limit::Limits;
use crate::timed::Timed;
use improv_stage::{Door, DoorKind, Stage};
use improv_store::{StageKey, Store};
use std::collections::BTreeMap;
use std::sync::Arc;
use tokio::sync::Mutex;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// The longest pause before a listener that stopped with an error is started again.
const LISTENER_BACKOFF_CAP: std::time::Duration = std::time::Duration::from_secs(300);

/// A stage's doors at work.
pub struct Daemon {
    store: Arc<dyn Store>,
    launcher: Arc<dyn Launcher>,
    clock: Arc<dyn Clock>,
    listeners: Option<Listeners>,
    inner: Mutex<Inner>,
    /// Held by a reload from start to end, and by the drain: one at a time.
    changing: Mutex<()>,
    /// Stops the sweep of expired webhook claims ([`crate::expiry`]) at the drain.
    sweeping: CancellationToken,
    /// The stage's identity and `[doors]` retention, read by the door tables' sweep at each
    /// pass.
    retention: tokio::sync::watch::Sender<StageRetention>,
}

struct Inner {
    stage: Arc<Stage>,
    /// The stage's key, worked out when it was loaded ([`DoorContext::stage_key`]).
    key: StageKey,
    running: BTreeMap<String, Running>,
    /// Set by the drain: nothing opens any more.
    drained: bool,
}

struct Running {
    door: Door,
    /// The stage the door was opened with, and its key: a webhook delivery is answered in it.
    stage: Arc<Stage>,
    key: StageKey,
    /// The door's `rate` and `max_running`, shared by every delivery while it stays open
    /// (a reload that changes the door starts them afresh).
    limits: Arc<Limits>,
    cancel: CancellationToken,
    task: Option<JoinHandle<()>>,
}

/// What a reload did to one door.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    Added(String),
    Removed(String),
    Changed(String),
}

impl std::fmt::Display for Change {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Change::Added(n) => write!(f, "door `{n}` added"),
            Change::Removed(n) => write!(f, "door `{n}` removed"),
            Change::Changed(n) => write!(f, "door `{n}` changed and restarted"),
        }
    }
}

impl Daemon {
    /// A daemon for `stage`'s doors; nothing runs before [`Daemon::start`]. `listeners` makes
    /// the listener of a channel door (`improv-channel`); without it channel doors stay shut.
    pub fn new(
        stage: Arc<Stage>,
        store: Arc<dyn Store>,
        launcher: Arc<dyn Launcher>,
        clock: Arc<dyn Clock>,
        listeners: Option<Listeners>,
    ) -> Arc<Daemon> {
        let key = stage_key(&stage);
        Arc::new(Daemon {
            retention: tokio::sync::watch::Sender::new(StageRetention::of(key.clone(), &stage)),
            store,
            launcher,
            clock,
            listeners,
            inner: Mutex::new(Inner {
                stage,
                key,
                running: BTreeMap::new(),
                drained: false,
            }),
            changing: Mutex::new(()),
            sweeping: CancellationToken::new(),
        })
    }

    /// Opens every door, and starts the periodic sweeps of expired webhook claims and of the
    /// door tables (outbox rows sent long ago, old firings).
    pub async fn start(&self) {
        tokio::spawn(crate::expiry::run_tables(
            self.store.clone(),
            self.clock.clone(),
            self.sweeping.clone(),
            self.retention.subscribe(),
        ));
        tokio::spawn(crate::expiry::run(
            self.store.clone(),
            crate::webhook::EXPIRY.to_vec(),
            self.clock.clone(),
            self.sweeping.clone(),
        ));
        let mut inner = self.inner.lock().await;
        let (stage, key) = (inner.stage.clone(), inner.key.clone());
        for door in &stage.doors {
            let running = self.open(&stage, &key, door);
            inner.running.insert(door.name.clone(), running);
        }
    }

    /// Takes a new version of the stage: doors added or changed are (re)started, doors removed
    /// are drained. Returns what changed (nothing once drained). A door with nothing to wait
    /// for (added, or a webhook door) is swapped at once; one with a task is stopped (its
    /// firing under way finished) without the state lock, its old self serving meanwhile, and
    /// swapped under the lock as soon as its own task ends, so the doors that did not change
    /// stay up throughout.
    pub async fn reload(&self, stage: Arc<Stage>) -> Vec<Change> {
        let _one = self.changing.lock().await;
        // Worked out once for this version of the stage: every door opened with it, the
        // deliveries it answers and the sweep use this one.
        let key = stage_key(&stage);
        let Some((changes, stopping)) = self.plan(&stage, &key).await else {
            return Vec::new();
        };
        // Each door's task is awaited on its own, not in turn: a door whose task ends is
        // swapped at once, whatever another door's firing still takes.
        let mut ended: futures::stream::FuturesUnordered<_> = stopping
            .into_iter()
            .map(|(name, task)| async move {
                join(&name, task).await;
                name
            })
            .collect();
        while let Some(name) = futures::StreamExt::next(&mut ended).await {
            let mut inner = self.inner.lock().await;
            // Joined to the end even once drained: the drain waits for this reload.
            if !inner.drained {
                self.swap(&mut inner, &stage, &key, &name);
            }
        }
        let mut inner = self.inner.lock().await;
        if !inner.drained {
            self.retention
                .send_replace(StageRetention::of(key.clone(), &stage));
            inner.stage = stage;
            inner.key = key;
        }
        changes
    }

    /// What a reload to `stage` changes, and the tasks of the doors that go or restart, each
    /// cancelled (its entry stays, without its task, until [`Daemon::swap`]). Doors without a
    /// task are swapped here: a webhook door removed or changed stops answering with its old
    /// secret at once. `None` once drained.
    async fn plan(&self, stage: &Arc<Stage>, key: &StageKey) -> Option<(Vec<Change>, Stopping)> {
        let mut inner = self.inner.lock().await;
        if inner.drained {
            return None;
        }
        // A changed stage (budgets, intent) changes every door's firings; its doors are
        // compared one by one below.
        let stage_changed = !same_but_doors(&inner.stage, stage);
        let mut changes = Vec::new();
        let mut stopping = Vec::new();
        for (name, running) in &mut inner.running {
            let next = stage.doors.iter().find(|d| d.name == *name);
            match next {
                None => changes.push(Change::Removed(name.clone())),
                Some(door) if *door != running.door => changes.push(Change::Changed(name.clone())),
                Some(_) if stage_changed => {}
                Some(_) => continue,
            }
            running.cancel.cancel();
            stopping.push((name.clone(), running.task.take()));
        }
        for door in &stage.doors {
            if !inner.running.contains_key(&door.name) {
                changes.push(Change::Added(door.name.clone()));
                let running = self.open(stage, key, door);
                inner.running.insert(door.name.clone(), running);
            }
        }
        let (now, later): (Stopping, Stopping) =
            stopping.into_iter().partition(|(_, task)| task.is_none());
        for (name, _) in now {
            self.swap(&mut inner, stage, key, &name);
        }
        Some((changes, later))
    }

    /// Puts door `name` as `stage` has it in place of its stopped entry (or drops the entry
    /// when the stage no longer has it).
    fn swap(&self, inner: &mut Inner, stage: &Arc<Stage>, key: &StageKey, name: &str) {
        inner.running.remove(name);
        if let Some(door) = stage.doors.iter().find(|d| d.name == name) {
            let running = self.open(stage, key, door);
            inner.running.insert(name.to_string(), running);
        }
    }

    /// Stops opening doors and waits for the firings under way to finish (after a reload under
    /// way, if any).
    pub async fn drain(&self) {
        self.sweeping.cancel();
        {
            // Before waiting for a reload under way: it must open nothing once this is set.
            let mut inner = self.inner.lock().await;
            inner.drained = true;
            for r in inner.running.values() {
                r.cancel.cancel();
            }
        }
        let _one = self.changing.lock().await;
        let running = std::mem::take(&mut self.inner.lock().await.running);
        for (_, r) in running {
            stop(r).await;
        }
    }

    /// The context of door `name` (for a webhook delivery), when the stage has it.
    pub async fn context(&self, name: &str) -> Option<DoorContext> {
        let inner = self.inner.lock().await;
        let door = inner.stage.doors.iter().find(|d| d.name == name)?;
        Some(self.context_of(&inner.stage, &inner.key, door))
    }

    /// Door `name`'s context and limits (for a webhook delivery), when the stage has it open.
    pub async fn open_door(&self, name: &str) -> Option<(DoorContext, Arc<Limits>)> {
        let inner = self.inner.lock().await;
        let running = inner.running.get(name)?;
        Some((
            self.context_of(&running.stage, &running.key, &running.door),
            running.limits.clone(),
        ))
    }

    /// Whether the daemon answers: its store answers a read. The watchdog is fed only after it
    /// says yes. It does not take the daemon's state: a reload holds that while it waits for a
    /// changed door's running firing to finish (minutes for a long performance), and a watchdog
    /// starved meanwhile would have systemd kill a healthy server.
    pub async fn alive(&self) -> bool {
        self.store.get("door.alive", "watchdog").await.is_ok()
    }

    /// The stage as last loaded.
    pub async fn stage(&self) -> Arc<Stage> {
        self.inner.lock().await.stage.clone()
    }

    /// The stage as last loaded and its key, worked out then ([`DoorContext::stage_key`]).
    pub async fn stage_and_key(&self) -> (Arc<Stage>, StageKey) {
        let inner = self.inner.lock().await;
        (inner.stage.clone(), inner.key.clone())
    }

    fn context_of(&self, stage: &Arc<Stage>, key: &StageKey, door: &Door) -> DoorContext {
        DoorContext {
            stage: stage.clone(),
            stage_key: key.clone(),
            door: Arc::new(door.clone()),
            store: self.store.clone(),
            launcher: self.launcher.clone(),
            clock: self.clock.clone(),
        }
    }

    fn open(&self, stage: &Arc<Stage>, key: &StageKey, door: &Door) -> Running {
        let ctx = self.context_of(stage, key, door);
        let cancel = CancellationToken::new();
        let token = cancel.clone();
        let task = match &door.kind {
            DoorKind::Schedule { .. } | DoorKind::Every(_) => Some(tokio::spawn(async move {
                match Timed::open(ctx.clone()).await {
                    Ok(Some(timed)) => timed.run(token).await,
                    Ok(None) => {}
                    Err(e) => tracing::error!("door `{}` cannot open: {e}", ctx.door.name),
                }
            })),
            DoorKind::Webhook { .. } => None,
            DoorKind::Channel(c) => match self.listeners.as_ref().and_then(|make| make(door)) {
                Some(listener) => Some(tokio::spawn(async move {
                    let mut pause = std::time::Duration::from_secs(1);
                    loop {
                        match listener.run(ctx.clone(), token.clone()).await {
                            Ok(()) => return,
                            Err(e) => tracing::warn!(
                                "door `{}` stopped: {e}; starting it again in {}s",
                                ctx.door.name,
                                pause.as_secs()
                            ),
                        }
                        tokio::select! {
                            _ = token.cancelled() => return,
                            _ = tokio::time::sleep(pause) => {}
                        }
                        pause = (pause * 2).min(LISTENER_BACKOFF_CAP);
                    }
                })),
                None => {
                    tracing::warn!(
                        "door `{}`: this improv has no {} channel; the door stays shut",
                        door.name,
                        c.channel.as_str()
                    );
                    None
                }
            },
        };
        Running {
            door: door.clone(),
            stage: stage.clone(),
            key: key.clone(),
            limits: Arc::new(Limits::of(door)),
            cancel,
            task,
        }
    }
}

/// What to warn about, once at the daemon's start, when `stage` has doors but its file gives
/// no `[stage] name` and its store is `shared` by other machines (`--store`): daemons of one
/// stage meet on a firing only under one key, and an unnamed stage's key is its file's
/// canonical path, so a daemon of it started from another path (another host, a symlinked
/// release folder) claims every due time again. `None` when there is nothing to say.
pub fn unnamed_on_a_shared_store(stage: &Stage, shared: bool) -> Option<String> {
    if !shared || stage.doors.is_empty() || stage.stage.identity().is_some() {
        return None;
    }
    Some(format!(
        "{} has doors but no `[stage] name`: on a shared store its firings are keyed by this \
         file's path, so a daemon of this stage started from another path or machine performs \
         each due time again; add `name = \"...\"` under `[stage]` (the same in every copy)",
        stage.path.display()
    ))
}

/// Doors whose tasks a reload waits for, by name.
type Stopping = Vec<(String, Option<JoinHandle<()>>)>;

/// Whether two versions of a stage differ only in their doors.
fn same_but_doors(a: &Stage, b: &Stage) -> bool {
    // `[doors]` retention is read by the sweep at each pass: no door restarts for it.
    let bare = |s: &Stage| Stage {
        doors: Vec::new(),
        door_retention: Default::default(),
        ..s.clone()
    };
    bare(a) == bare(b)
}

async fn stop(r: Running) {
    r.cancel.cancel();
    join(&r.door.name, r.task).await;
}

/// Waits for a cancelled door's task to end.
async fn join(door: &str, task: Option<JoinHandle<()>>) {
    if let Some(task) = task
        && let Err(e) = task.await
        && e.is_panic()
    {
        tracing::error!("door `{door}` panicked: {e}");
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn stage(text: &str) -> (tempfile::TempDir, Stage) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stage.toml");
        std::fs::write(&path, text).unwrap();
        let stage = Stage::load(&path).unwrap();
        (dir, stage)
    }

    #[test]
    fn an_unnamed_stage_with_doors_on_a_shared_store_is_told_to_take_a_name() {
        let door = "[[door]]\nname = \"tick\"\nevery = \"1h\"\nintent = \"tick\"\n";
        let (_dir, unnamed) = stage(door);
        let warning = unnamed_on_a_shared_store(&unnamed, true).unwrap();
        assert!(warning.contains("[stage] name"), "{warning}");
        assert_eq!(unnamed_on_a_shared_store(&unnamed, false), None);
        let (_dir, named) = stage(&format!("[stage]\nname = \"app\"\n{door}"));
        assert_eq!(unnamed_on_a_shared_store(&named, true), None);
        let (_dir, no_doors) = stage("");
        assert_eq!(unnamed_on_a_shared_store(&no_doors, true), None);
    }
}
