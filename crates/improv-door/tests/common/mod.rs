//! What the door tests share: a stage with doors in a temp folder, the SQLite store on a file
//! in it, and a launcher that counts what it was asked to perform.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use async_trait::async_trait;
use futures::FutureExt;
use improv_door::{DoorContext, DoorError, Finished, LaunchRequest, Launcher, Started};
use improv_kernel::Outcome;
use improv_stage::Stage;
use improv_store::{SqliteStore, Store};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// A stage file with `doors` (and anything else) in a fresh temp folder.
pub struct TestStage {
    pub dir: tempfile::TempDir,
    pub stage: Arc<Stage>,
}

impl TestStage {
    pub fn new(text: &str) -> TestStage {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stage.toml");
        std::fs::write(&path, text).unwrap();
        let stage = Arc::new(Stage::load(&path).unwrap());
        TestStage { dir, stage }
    }

    pub fn db(&self) -> PathBuf {
        self.dir.path().join(".improv").join("store.db")
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

/// Opens (and migrates) the store file: each daemon life opens its own, as a process would.
pub async fn store(db: &Path) -> Arc<dyn Store> {
    let store = SqliteStore::open(db).unwrap();
    store.migrate().await.unwrap();
    Arc::new(store)
}

/// A launcher that records every request and ends each performance at once (`Done`), or with
/// `Failed` while `fail` is set.
#[derive(Default)]
pub struct Counting {
    pub requests: Mutex<Vec<LaunchRequest>>,
    pub fail: std::sync::atomic::AtomicBool,
    /// Yield this many times inside `start`, to widen the window a kill can land in.
    pub yields: usize,
    /// While set, `start` fails (a launcher error) and starts nothing.
    pub refuse_start: std::sync::atomic::AtomicBool,
    /// While a test holds this for writing, the performances started do not end.
    pub hold: Arc<tokio::sync::RwLock<()>>,
}

impl Counting {
    pub fn ids(&self) -> Vec<String> {
        self.requests
            .lock()
            .unwrap()
            .iter()
            .map(|r| r.id.clone())
            .collect()
    }
}

#[async_trait]
impl Launcher for Counting {
    async fn start(
        &self,
        _stage: Arc<Stage>,
        request: LaunchRequest,
    ) -> Result<Started, DoorError> {
        for _ in 0..self.yields {
            tokio::task::yield_now().await;
        }
        if self.refuse_start.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(DoorError::Launch {
                door: request.door,
                message: "the launcher is told to fail".into(),
            });
        }
        let performance = request.id.clone();
        {
            // Checked and recorded under one lock: an id starts once.
            let mut requests = self.requests.lock().unwrap();
            if requests.iter().any(|r| r.id == request.id) {
                return Err(DoorError::AlreadyStarted {
                    door: request.door,
                    id: request.id,
                });
            }
            requests.push(request);
        }
        let outcome = if self.fail.load(std::sync::atomic::Ordering::SeqCst) {
            Outcome::Failed
        } else {
            Outcome::Done
        };
        let hold = self.hold.clone();
        let done = async move {
            drop(hold.read().await);
            Ok(Finished {
                outcome,
                reason: "counted".into(),
                answer: String::new(),
            })
        }
        .boxed();
        Ok(Started { performance, done })
    }

    async fn started(&self, _stage: &Stage, id: &str) -> Result<bool, DoorError> {
        Ok(self.requests.lock().unwrap().iter().any(|r| r.id == id))
    }
}

/// The context of `stage`'s door `name`.
pub fn context(
    stage: &Arc<Stage>,
    name: &str,
    store: Arc<dyn Store>,
    launcher: Arc<dyn Launcher>,
    clock: Arc<dyn improv_door::Clock>,
) -> DoorContext {
    DoorContext {
        stage: stage.clone(),
        stage_key: improv_door::expiry::stage_key(stage),
        door: Arc::new(stage.doors.iter().find(|d| d.name == name).unwrap().clone()),
        store,
        launcher,
        clock,
    }
}

/// Opens `stage`'s door `name` as a daemon does when it starts, and runs one tick of it: what a
/// daemon started at `clock`'s time performs at once.
pub async fn open_and_tick(
    stage: &Arc<Stage>,
    name: &str,
    store: &Arc<dyn Store>,
    launcher: Arc<dyn Launcher>,
    clock: Arc<dyn improv_door::Clock>,
) {
    let ctx = context(stage, name, store.clone(), launcher, clock);
    let mut timed = improv_door::timed::Timed::open(ctx)
        .await
        .unwrap()
        .expect("a timed door");
    timed.tick().await.unwrap();
}
