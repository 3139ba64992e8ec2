//! What file descriptors one performance holds while it waits on a slow model in a worker
//! (issue 15: 10,000 waiting in one worker; the open-file limit is typically 1,024 to 20,000, so
//! a handful each stops the worker well short of it). The real leased worker on a real
//! PostgreSQL store in a temp folder (`improv_store::testing::TempPostgres`; without
//! PostgreSQL's binaries it fails, saying so) and an OpenAI-compatible model on localhost that
//! reads each request and never answers. Each waiting performance may hold its request's socket
//! and little else: no sandbox pipe, no temp folder, no per-performance file.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use improv_perform::leased::{self, WorkerSettings};
use improv_store::testing::TempPostgres;
use improv_store::{NewPerformance, StoreUrl};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::io::AsyncReadExt;
use tokio_util::sync::CancellationToken;

/// Performances waiting at once.
const WAITING: usize = 100;
/// The most descriptors one waiting performance may hold: its model request's socket, and
/// a little for the store's connections. 8.2 were measured before the sandbox opened its fds at
/// the first command (two pipes, the Landlock ruleset, two cgroup files, the socket).
const MAX_EACH: f64 = 1.5;

/// A model that reads each request and answers nothing for as long as the test runs; counts
/// the requests (each holds one accepted socket in this process).
async fn slow_model() -> (String, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/v1", listener.local_addr().unwrap());
    let asked = Arc::new(AtomicUsize::new(0));
    let count = asked.clone();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let count = count.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                if matches!(socket.read(&mut buf).await, Ok(n) if n > 0) {
                    count.fetch_add(1, Ordering::SeqCst);
                }
                std::future::pending::<()>().await;
                drop(socket);
            });
        }
    });
    (url, asked)
}

/// This process's open descriptors, by what they are (`socket`, `pipe`, `anon_inode:…`, or a
/// path's first two folders).
fn descriptors() -> BTreeMap<String, usize> {
    let mut kinds = BTreeMap::new();
    for fd in std::fs::read_dir("/proc/self/fd").unwrap().flatten() {
        let Ok(target) = std::fs::read_link(fd.path()) else {
            continue;
        };
        let target = target.display().to_string();
        let kind = match target.split_once(':') {
            Some((kind, _)) if !target.starts_with('/') => kind.to_string(),
            _ => target.split('/').take(3).collect::<Vec<_>>().join("/"),
        };
        *kinds.entry(kind).or_insert(0) += 1;
    }
    kinds
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_performance_waiting_on_its_model_holds_few_descriptors() {
    let server = TempPostgres::start_new();
    let url = server.create_database("waiting_fds");
    let pg = improv_store::open(&StoreUrl::parse(&url).unwrap()).unwrap();
    pg.migrate().await.unwrap();
    let (model, asked) = slow_model().await;
    // SAFETY: set before the worker starts, by the only test of this binary.
    unsafe {
        std::env::set_var("OPENAI_API_KEY", "sk-test");
        std::env::set_var("OPENAI_BASE_URL", &model);
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("stage.toml"),
        "[stage]\nname = \"waiting\"\n\n[[actor]]\nname = \"lead\"\nmodel = \"openai/mock\"\nprops = [\"bash\", \"read\"]\n\n[edges]\nworkspace = \".\"\n",
    )
    .unwrap();
    let stage = dir.path().join("stage.toml").display().to_string();
    let mut ids = Vec::new();
    for i in 0..WAITING {
        let id = pg
            .enqueue(&NewPerformance {
                id: None,
                stage: stage.clone(),
                stage_name: None,
                intent: format!("p{i}"),
                model: None,
                origin: "test".into(),
                budget: None,
            })
            .await
            .unwrap();
        ids.push(id);
    }
    let records = pg.clone();
    let before = descriptors();
    let settings = WorkerSettings {
        name: "test-worker".into(),
        lease: Duration::from_secs(600),
        concurrency: WAITING,
        idle_poll: Duration::from_millis(50),
        outside: leased::Outside::default(),
        ask_timeout: Duration::from_secs(1),
        store: Some(StoreUrl::parse(&url).unwrap()),
        stages: Default::default(),
    };
    let drain = CancellationToken::new();
    let worker = tokio::spawn(leased::work(pg, settings, drain.clone()));
    // Every performance asks within a few seconds alone; on a loaded machine (one CI run saw 99
    // of 100 after 120 s, not reproduced since) a straggler is allowed: the figure is per
    // performance waiting, so it holds for the 90 or more that ask. Its cause is still not
    // known: the blob deadlock fixed in ba75ec3 needs two new blobs in one append, and these
    // performances' first append holds one (the sandbox's description).
    let start = Instant::now();
    while asked.load(Ordering::SeqCst) < WAITING && start.elapsed() < Duration::from_secs(120) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let waiting = asked.load(Ordering::SeqCst);
    assert!(
        waiting * 10 >= WAITING * 9,
        "only {waiting} of {WAITING} performances asked the model in 120 s"
    );
    none_ended(&*records, &ids).await;
    let during = descriptors();
    worker.abort();
    let total = |d: &BTreeMap<String, usize>| d.values().sum::<usize>() as f64;
    // The model's end of each request is this process's too: not the performance's. A
    // straggler's descriptors count against those waiting (the figure errs high).
    let each = (total(&during) - total(&before) - waiting as f64) / waiting as f64;
    eprintln!("each waiting performance holds {each:.2} descriptors; while they wait {during:?}");
    assert!(
        each <= MAX_EACH,
        "each waiting performance holds {each:.1} descriptors (at most {MAX_EACH}); before \
         {before:?}, while {WAITING} wait {during:?}"
    );
}

/// No claimed performance ended before its first write: one that did failed to open (a SQLite
/// "database is locked" on the stage's log was one cause, fixed in improv-sqlite), and is named
/// here with its reason rather than counted among the stragglers.
async fn none_ended(records: &dyn improv_store::Store, ids: &[String]) {
    for id in ids {
        let record = records.performance(id).await.unwrap();
        assert_ne!(
            record.state,
            improv_store::State::Finished,
            "performance {id} ended before its first write: {:?}: {}",
            record.outcome,
            record.reason
        );
    }
}
