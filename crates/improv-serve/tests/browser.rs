//! The web page end to end in headless Chromium (driven over chromedriver with fantoccini):
//! start a performance from the page, see its tool calls appear live, answer an approval, send a
//! director note and see it delivered, take a screenshot; then open a performance of more than
//! 10,000 events and check the page took them all while rendering a bounded number of rows.
//!
//! Needs `chromium` and `chromium-driver` (crates/improv-serve/ci-setup.sh installs them); fails,
//! not skips, without them. `IMPROV_CHROMIUM` and `IMPROV_CHROMEDRIVER` name other binaries.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{ASK_WRITE, TestStage, serve};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const FLAGS: [&str; 7] = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
];

fn binary(var: &str, default: &str) -> String {
    let path = std::env::var(var).unwrap_or_else(|_| default.to_string());
    assert!(
        Path::new(&path).exists(),
        "{path} is missing: run crates/improv-serve/ci-setup.sh (it installs chromium and chromium-driver), or set {var}"
    );
    path
}

/// chromedriver on a free loopback port, killed when dropped.
struct Driver {
    child: Child,
    url: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn driver(home: &Path) -> Driver {
    let exe = binary("IMPROV_CHROMEDRIVER", "/usr/bin/chromedriver");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(exe)
        .arg(format!("--port={port}"))
        .env("HOME", home)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("cannot start chromedriver: run crates/improv-serve/ci-setup.sh");
    let driver = Driver {
        child,
        url: format!("http://127.0.0.1:{port}"),
    };
    // Wait until it listens; it exits on its own if it cannot start.
    for _ in 0..300 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return driver;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("chromedriver never listened on port {port}");
}

async fn browser(driver: &Driver, profile: &Path) -> Client {
    let chromium = binary("IMPROV_CHROMIUM", "/usr/bin/chromium");
    let mut args: Vec<String> = FLAGS.iter().map(|s| s.to_string()).collect();
    args.push(format!("--user-data-dir={}", profile.display()));
    args.push("--window-size=1440,960".into());
    let caps = json!({"goog:chromeOptions": {"binary": chromium, "args": args}});
    let Value::Object(caps) = caps else {
        unreachable!()
    };
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&driver.url)
        .await
        .expect("chromedriver refused the session")
}

/// Waits (the driver's default, 30 s, bounds it) for an element.
async fn wait_for(c: &Client, css: &str) -> fantoccini::elements::Element {
    c.wait()
        .at_most(Duration::from_secs(60))
        .for_element(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("`{css}` never appeared: {e}"))
}

async fn wait_xpath(c: &Client, xpath: &str) -> fantoccini::elements::Element {
    c.wait()
        .at_most(Duration::from_secs(60))
        .for_element(Locator::XPath(xpath))
        .await
        .unwrap_or_else(|e| panic!("`{xpath}` never appeared: {e}"))
}

fn artifacts() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    let dir = target.join("improv-serve");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_starts_a_performance_shows_tool_calls_live_and_sends_a_note() {
    let stage = TestStage::new(
        json!([
            {"say": "Reading a.txt first. ", "calls": [{"name": "read", "arguments": {"path": "a.txt"}}]},
            {"calls": [{"name": "write", "arguments": {"path": "b.txt", "content": "beta\n"}}]},
            {"say": "Wrote b.txt, briefly."}
        ]),
        ASK_WRITE,
    );
    let server = serve(&stage).await;
    let home = tempfile::tempdir().unwrap();
    let driver = driver(home.path()).await;
    let c = browser(&driver, &home.path().join("profile")).await;

    c.goto(&format!("{}/#token={}", server.base, server.token))
        .await
        .unwrap();
    wait_for(&c, "#list-view:not([hidden]) #intent")
        .await
        .send_keys("Copy a.txt to b.txt")
        .await
        .unwrap();
    c.find(Locator::Css("#start"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();

    // The read appears live, then the write waits for the director.
    let tool = wait_xpath(
        &c,
        "//div[contains(@class,'row') and contains(@class,'tool') and contains(@class,'ok')][.//span[text()='read']]",
    )
    .await;
    assert!(tool.text().await.unwrap().contains("a.txt"));
    let approve = wait_for(&c, ".approval button[data-answer='once']").await;
    let question = c
        .find(Locator::Css(".approval"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        question.contains("write") && question.contains("b.txt"),
        "{question}"
    );
    assert!(!stage.path().join("b.txt").exists());
    let waiting = artifacts().join("stage-view-approval.png");
    std::fs::write(&waiting, c.screenshot().await.unwrap()).unwrap();
    println!("screenshot: {}", waiting.display());

    c.find(Locator::Css("#note"))
        .await
        .unwrap()
        .send_keys("Keep it brief.")
        .await
        .unwrap();
    c.find(Locator::Css("#send-note"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    // The note box empties once the server took the note.
    wait_for(&c, "#note:placeholder-shown").await;
    approve.click().await.unwrap();

    wait_xpath(
        &c,
        "//div[contains(@class,'row') and contains(@class,'note')][contains(., 'Keep it brief.')]",
    )
    .await;
    wait_for(&c, "#perf-status.done").await;
    wait_xpath(&c, "//div[contains(@class,'row') and contains(@class,'text')][contains(., 'Wrote b.txt, briefly.')]").await;
    assert!(
        c.find_all(Locator::Css(".approval"))
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        std::fs::read_to_string(stage.path().join("b.txt")).unwrap(),
        "beta\n"
    );

    let shot = artifacts().join("stage-view.png");
    std::fs::write(&shot, c.screenshot().await.unwrap()).unwrap();
    println!("screenshot: {}", shot.display());
    assert!(std::fs::metadata(&shot).unwrap().len() > 10_000);

    // The list shows it, finished.
    c.goto(&format!("{}/#/", server.base)).await.unwrap();
    let row = wait_for(&c, "tr.perf-row").await;
    assert!(row.text().await.unwrap().contains("done"));

    c.close().await.unwrap();
    server.stop_server().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_takes_a_performance_of_ten_thousand_events_and_renders_a_bounded_window() {
    // One reply of 5,200 reads: more than 10,000 logged events.
    let calls: Vec<Value> = (0..5200)
        .map(|_| json!({"name": "read", "arguments": {"path": "a.txt"}}))
        .collect();
    let stage = TestStage::new(json!([{"calls": calls}, {"say": "Read it all."}]), "");
    let server = serve(&stage).await;
    let id = server.start(json!({"intent": "Read a lot."})).await;
    let frames = common::drain(&mut server.events(&id, None).await).await;
    assert_eq!(frames.last().unwrap().data["outcome"], "done");
    let events = frames.iter().filter(|f| f.seq().is_some()).count();
    assert!(events > 10_000, "{events}");

    let home = tempfile::tempdir().unwrap();
    let driver = driver(home.path()).await;
    let c = browser(&driver, &home.path().join("profile")).await;
    c.goto(&format!("{}/#token={}", server.base, server.token))
        .await
        .unwrap();
    wait_for(&c, "#list-view:not([hidden])").await;
    c.goto(&format!("{}/#/p/{id}", server.base)).await.unwrap();
    wait_for(&c, "#perf-status.done").await;
    let counted = wait_for(&c, "#lanes[data-events]").await;
    let counted: usize = counted
        .attr("data-events")
        .await
        .unwrap()
        .unwrap()
        .parse()
        .unwrap();
    // The replay comes from the log, which leaves out text deltas.
    assert!(counted > 10_000, "{counted}");
    let rows = c.find_all(Locator::Css(".row")).await.unwrap().len();
    assert!(rows <= 300, "{rows} rows rendered for {counted} events");
    let more = c.find(Locator::Css("button.more")).await.unwrap();
    assert!(more.text().await.unwrap().contains("hidden"));
    more.click().await.unwrap();
    // Showing earlier rows adds a bounded page of them.
    c.wait()
        .at_most(Duration::from_secs(60))
        .for_element(Locator::XPath("(//div[contains(@class,'row')])[301]"))
        .await
        .unwrap();
    let rows = c.find_all(Locator::Css(".row")).await.unwrap().len();
    assert!((301..=600).contains(&rows), "{rows}");
    let shot = artifacts().join("stage-view-10k.png");
    std::fs::write(&shot, c.screenshot().await.unwrap()).unwrap();
    println!("screenshot: {}", shot.display());
    c.close().await.unwrap();
    server.stop_server().await;
}
