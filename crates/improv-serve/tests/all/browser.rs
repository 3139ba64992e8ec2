//! The web page end to end in headless Chromium (driven over chromedriver with fantoccini):
//! start a performance from the page, see its tool calls appear live, answer an approval, send a
//! director note and see it delivered, take a screenshot; then open a performance of more than
//! 10,000 events and check the page took them all while rendering a bounded number of rows;
//! then what a first-time user meets: a loading state (not an empty running card) before the
//! first answer, a deep link with its token that opens the performance, list rows that are links,
//! a tool call's arguments as `key: value`, the sandbox's description out of the way, no note or
//! stop controls once the performance ended, and the page as the only scroll container. Each
//! step saves a screenshot under target/improv-serve/ to be looked at.
//!
//! Needs `chromium` and `chromium-driver` (crates/improv-serve/ci-setup.sh installs them); fails,
//! not skips, without them. `IMPROV_CHROMIUM` and `IMPROV_CHROMEDRIVER` name other binaries.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use crate::common::{ASK_WRITE, TestStage, serve};
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

/// Saves a screenshot under target/improv-serve/ and says where.
async fn shot(c: &Client, name: &str) -> PathBuf {
    let path = artifacts().join(name);
    std::fs::write(&path, c.screenshot().await.unwrap()).unwrap();
    println!("screenshot: {}", path.display());
    path
}

/// Runs `script` in the page and returns what it returns.
async fn js(c: &Client, script: &str) -> Value {
    c.execute(script, vec![]).await.unwrap()
}

/// The elements other than the page that scroll vertically: a reader should meet one scroll bar.
async fn inner_scrollers(c: &Client) -> Value {
    js(
        c,
        "return [...document.querySelectorAll('body *')].filter(e => {
           const y = getComputedStyle(e).overflowY;
           return (y === 'auto' || y === 'scroll') && e.scrollHeight > e.clientHeight + 1;
         }).map(e => e.tagName + '.' + e.className + '#' + e.id);",
    )
    .await
}

/// Whether `css` matches an element the reader can see.
async fn shown(c: &Client, css: &str) -> bool {
    match c.find(Locator::Css(css)).await {
        Ok(e) => e.is_displayed().await.unwrap(),
        Err(_) => false,
    }
}

/// Holds every `fetch` the page makes from now on until [`release_fetch`]: the page as it is
/// before the server answered.
const HOLD_FETCH: &str = "window.__held = []; window.__fetch = window.fetch;
  window.fetch = (...a) => new Promise((ok, fail) => window.__held.push(() => window.__fetch(...a).then(ok, fail)));";
const RELEASE_FETCH: &str =
    "window.fetch = window.__fetch; const held = window.__held; window.__held = [];
  held.forEach(go => go()); return held.length;";

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
    // Arguments read as `key: value`, not as raw JSON.
    let args = tool.find(Locator::Css("dl.args")).await.unwrap();
    assert_eq!(
        args.find(Locator::Css("dt"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
        "path"
    );
    assert_eq!(
        args.find(Locator::Css("dd"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
        "a.txt"
    );
    assert!(
        !tool.text().await.unwrap().contains('{'),
        "{}",
        tool.text().await.unwrap()
    );
    // A short output is shown at once.
    let output = tool.find(Locator::Css("details.row-detail")).await.unwrap();
    assert!(output.prop("open").await.unwrap().as_deref() == Some("true"));
    assert!(tool.text().await.unwrap().contains("alpha"));
    assert!(shown(&c, "#send-note").await && shown(&c, "#stop").await);
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

    // Once it ended there is nothing to note or stop.
    wait_for(&c, "#perf-view[data-state='over']").await;
    assert!(!shown(&c, "#send-note").await, "Send note after the end");
    assert!(!shown(&c, "#stop").await, "Stop after the end");
    assert!(!shown(&c, "#note").await);
    assert_eq!(inner_scrollers(&c).await, json!([]));

    let done = shot(&c, "stage-view.png").await;
    assert!(std::fs::metadata(&done).unwrap().len() > 10_000);

    // The list shows it, finished, as a link.
    c.goto(&format!("{}/#/", server.base)).await.unwrap();
    let row = wait_for(&c, "tr.perf-row").await;
    assert!(row.text().await.unwrap().contains("done"));
    let id = row.attr("data-id").await.unwrap().unwrap();
    let link = row.find(Locator::Css("a.perf-link")).await.unwrap();
    assert_eq!(
        link.attr("href").await.unwrap().unwrap(),
        format!("#/p/{id}")
    );
    assert_eq!(link.text().await.unwrap(), "Copy a.txt to b.txt");
    shot(&c, "stage-view-list.png").await;
    link.click().await.unwrap();
    wait_for(&c, "#perf-view[data-state='over'] #perf-status.done").await;

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
    // The replay ends with the outcome's row.
    wait_for(&c, "#perf-status.done").await;
    wait_for(&c, ".row.end.ok").await;
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
    // A finished performance opens at its start, in one scroll container: the page.
    assert_eq!(js(&c, "return window.scrollY;").await, json!(0));
    assert_eq!(inner_scrollers(&c).await, json!([]));
    assert!(!shown(&c, "#stop").await && !shown(&c, "#send-note").await);
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_time_user_gets_a_loading_state_a_working_deep_link_and_a_quiet_sandbox_line() {
    let mut stage = TestStage::new(
        json!([
            {"calls": [{"name": "write", "arguments": {"path": "c.txt", "content": "one\ntwo\n"}}]},
            {"say": "Wrote c.txt."}
        ]),
        "",
    );
    // The sandbox on, so that the performance logs its (long) description.
    let file = stage.path().join("stage.toml");
    let text = std::fs::read_to_string(&file).unwrap();
    std::fs::write(&file, text.replace("sandbox = \"off\"", "sandbox = \"on\"")).unwrap();
    stage.stage = std::sync::Arc::new(improv_stage::Stage::load(&file).unwrap());
    let server = serve(&stage).await;
    let id = server.start(json!({"intent": "Write c.txt."})).await;
    let frames = common::drain(&mut server.events(&id, None).await).await;
    assert_eq!(frames.last().unwrap().data["outcome"], "done");

    // A link with the token, in a browser that never saw it, opens the performance.
    let home = tempfile::tempdir().unwrap();
    let driver = driver(home.path()).await;
    let c = browser(&driver, &home.path().join("profile")).await;
    c.goto(&format!("{}/#/p/{id}&token={}", server.base, server.token))
        .await
        .unwrap();
    wait_for(&c, "#perf-view:not([hidden]) #perf-status.done").await;
    wait_for(&c, ".row.end.ok").await;
    assert_eq!(
        c.find(Locator::Css("#perf-id"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
        id
    );
    let url = c.current_url().await.unwrap();
    assert_eq!(url.fragment(), Some(format!("/p/{id}").as_str()), "{url}");

    // Arguments with a multi-line string read as `key: value`, the text as it is.
    let write = wait_xpath(
        &c,
        "//div[contains(@class,'row') and contains(@class,'tool')][.//span[text()='write']]",
    )
    .await;
    let keys: Vec<String> = js(
        &c,
        "return [...document.querySelectorAll('.row.tool dl.args dt')].map(e => e.textContent);",
    )
    .await
    .as_array()
    .unwrap()
    .iter()
    .map(|v| v.as_str().unwrap().to_string())
    .collect();
    assert_eq!(keys, ["content", "path"]);
    assert!(write.text().await.unwrap().contains("one\ntwo"));

    // The sandbox's description is there for who asks, not the loudest text on the page.
    let sandbox = wait_xpath(
        &c,
        "//div[contains(@class,'row')][./div/span[@class='kind' and text()='sandbox']]",
    )
    .await;
    let details = sandbox.find(Locator::Css("details")).await.unwrap();
    assert_eq!(
        details.prop("open").await.unwrap().as_deref(),
        Some("false")
    );
    assert!(sandbox.find(Locator::Css(".row-body")).await.is_err());
    let sizes = js(
        &c,
        "const px = (s) => parseFloat(getComputedStyle(document.querySelector(s)).fontSize);
         return [px('.row.sandbox'), px('.row.text .row-body')];",
    )
    .await;
    assert!(sizes[0].as_f64() < sizes[1].as_f64(), "{sizes}");
    assert_eq!(inner_scrollers(&c).await, json!([]));
    assert!(!shown(&c, "#stop").await && !shown(&c, "#send-note").await);
    shot(&c, "stage-view-deep-link.png").await;

    // Before the server answers, the page says it is loading: no running badge, no empty meters.
    c.goto(&format!("{}/#/ledger", server.base)).await.unwrap();
    wait_for(&c, "#ledger-view:not([hidden])").await;
    js(&c, HOLD_FETCH).await;
    js(&c, &format!("location.hash = '#/p/{id}';")).await;
    wait_for(&c, "#perf-view:not([hidden])[data-state='loading']").await;
    let status = c.find(Locator::Css("#perf-status")).await.unwrap();
    assert_eq!(status.text().await.unwrap(), "loading");
    assert!(!shown(&c, ".badge.running").await);
    assert!(!shown(&c, "#meters").await, "meters before any data");
    assert!(!shown(&c, "#stop").await && !shown(&c, "#send-note").await);
    assert!(
        c.find(Locator::Css("#perf-intent"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
            .starts_with("Loading")
    );
    shot(&c, "stage-view-loading.png").await;
    assert_eq!(js(&c, RELEASE_FETCH).await, json!(1));
    wait_for(&c, "#perf-view[data-state='over'] #perf-status.done").await;
    assert!(shown(&c, "#meters").await);

    c.close().await.unwrap();
    server.stop_server().await;
}
