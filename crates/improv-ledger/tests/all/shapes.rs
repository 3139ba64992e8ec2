//! The ledger on two more real-world shapes: the metadata of every Python package installed here
//! (read at test time through `importlib.metadata`: core metadata with its multi-use fields as
//! lists, plus entry points, whose names are data) and GitHub-like event payloads from a seeded
//! generator (push, pull_request, issues, issue_comment, create, release and watch events: one
//! envelope, a payload whose fields depend on the event type, nested users, repositories, labels
//! and nullable fields as the GitHub events API sends them). For each: the settled schema is
//! small, the DDL has tens of columns, the SQLite view answers for every entry and every record
//! validates against the settled schema; the events' table is also created, loaded and queried
//! in a real PostgreSQL (started in a temporary folder; the test fails without its binaries).
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may unwrap

use improv_ledger::{Ledger, LedgerOptions, Provenance, Settlement};
use improv_store::testing::TempPostgres;
use serde_json::{Map, Value, json};
use std::path::Path;
use std::process::Command;

use crate::support;

/// Imports `records` as JSON lines into a fresh ledger under `dir`, settles, and checks what
/// every shape must give: all recorded, every record valid against the settled schema, the view
/// as wide as the Postgres table and answering one row per entry. Returns the settlement and
/// the number of columns.
fn import_and_settle(dir: &Path, collection: &str, records: &[Value]) -> (Ledger, Settlement) {
    let file = dir.join(format!("{collection}.jsonl"));
    let lines: Vec<String> = records.iter().map(Value::to_string).collect();
    std::fs::write(&file, lines.join("\n")).unwrap();
    let ledger = Ledger::open_in(dir, LedgerOptions::default()).unwrap();
    let report = ledger
        .import(collection, &file, &Provenance::new("t", "director"))
        .unwrap();
    assert_eq!(report.recorded, records.len() as u64, "{report:?}");
    assert_eq!(report.rejected, 0);
    let settlement = ledger.settle(collection).unwrap();
    let validator = jsonschema::draft202012::new(&settlement.schema).unwrap();
    for (i, record) in records.iter().enumerate() {
        let errors: Vec<String> = validator
            .iter_errors(record)
            .map(|e| e.to_string())
            .collect();
        assert!(errors.is_empty(), "record {} fails: {errors:?}", i + 1);
    }
    let conn = rusqlite::Connection::open(ledger.path()).unwrap();
    let mut select = conn
        .prepare(&format!("SELECT * FROM \"ledger_{collection}\""))
        .unwrap();
    assert_eq!(
        select.column_count(),
        columns(&settlement),
        "view and Postgres table differ"
    );
    let rows = select.query_map([], |_| Ok(())).unwrap().count();
    assert_eq!(rows, records.len());
    (ledger, settlement)
}

/// The columns of the settled Postgres table (one per line of its body).
fn columns(settlement: &Settlement) -> usize {
    settlement.postgres_ddl.matches("\n  ").count()
}

fn schema_bytes(settlement: &Settlement) -> usize {
    settlement.schema.to_string().len()
}

/// One JSON object per installed Python distribution: its core metadata as
/// `PackageMetadata.json` gives it, its entry points by group and name, and its file count.
fn pypi_metadata() -> Vec<Value> {
    const SCRIPT: &str = r#"
import importlib.metadata as m, json
for d in m.distributions():
    r = d.metadata.json
    eps = {}
    for ep in d.entry_points:
        eps.setdefault(ep.group, {})[ep.name] = ep.value
    if eps:
        r["entry_points"] = eps
    r["files"] = len(d.files or [])
    print(json.dumps(r))
"#;
    let output = Command::new("python3")
        .args(["-c", SCRIPT])
        .output()
        .expect("python3 is needed to read the installed packages' metadata: install Python 3.10+");
    assert!(
        output.status.success(),
        "python3 could not list the installed packages' metadata (needs Python 3.10+ for PackageMetadata.json): {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let records: Vec<Value> = String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert!(
        records.len() >= 20,
        "only {} Python packages installed: the test needs at least 20 (pip install a few)",
        records.len()
    );
    records
}

#[test]
fn installed_python_packages_metadata_settles_small_and_queryable() {
    let records = pypi_metadata();
    let dir = tempfile::tempdir().unwrap();
    let (ledger, settlement) = import_and_settle(dir.path(), "pypi", &records);
    let (bytes, width) = (schema_bytes(&settlement), columns(&settlement));
    eprintln!(
        "{} packages: schema {bytes} bytes, {width} columns",
        records.len()
    );
    assert!(bytes < 8 * 1024, "schema is {bytes} bytes");
    assert!((5..=40).contains(&width), "{}", settlement.postgres_ddl);
    let properties = &settlement.schema["properties"];
    // Multi-use fields are lists of strings.
    assert_eq!(properties["classifier"]["items"]["type"], "string");
    assert_eq!(properties["requires_dist"]["items"]["type"], "string");
    // Every distribution has a name and a version: required, with a column each.
    let required = settlement.schema["required"].as_array().unwrap();
    for field in ["name", "version", "metadata_version"] {
        assert!(required.contains(&json!(field)), "{field}: {required:?}");
    }
    let conn = rusqlite::Connection::open(ledger.path()).unwrap();
    let named: i64 = conn
        .query_row(
            "SELECT count(*) FROM ledger_pypi WHERE name IS NOT NULL AND version IS NOT NULL",
            [],
            |row| row.get(0),
        )
        .unwrap();
    assert_eq!(named, records.len() as i64);
}

#[test]
fn installed_python_packages_entry_points_settle_as_maps_of_names() {
    let records = pypi_metadata();
    let with_scripts = records
        .iter()
        .filter(|r| r.pointer("/entry_points/console_scripts").is_some())
        .count();
    assert!(
        with_scripts >= 3,
        "only {with_scripts} installed packages have console scripts: the test needs 3 (pip, setuptools and wheel have them)"
    );
    let dir = tempfile::tempdir().unwrap();
    let (ledger, settlement) = import_and_settle(dir.path(), "pypi", &records);
    // Group names and script names are data (pip, pip3, pip3.12, ...): entry points settle as a
    // map of maps of strings, not a record with a property per group and per script ever seen.
    let entry_points = &settlement.schema["properties"]["entry_points"];
    assert_eq!(
        entry_points["additionalProperties"]["additionalProperties"]["type"], "string",
        "{entry_points}"
    );
    assert!(
        !entry_points.to_string().contains("\"properties\""),
        "{entry_points}"
    );
    // The map is one JSON column the view answers from, key by key.
    let (name, script, target) = records
        .iter()
        .find_map(|r| {
            let (script, target) = r
                .pointer("/entry_points/console_scripts")?
                .as_object()?
                .iter()
                .next()?;
            Some((
                r["name"].as_str()?.to_owned(),
                script.clone(),
                target.clone(),
            ))
        })
        .unwrap();
    let conn = rusqlite::Connection::open(ledger.path()).unwrap();
    let found: String = conn
        .query_row(
            "SELECT json_extract(entry_points, '$.console_scripts.' || json_quote(?2)) FROM ledger_pypi WHERE name = ?1",
            [&name, &script],
            |row| row.get(0),
        )
        .unwrap();
    assert_eq!(found, target);
}

/// A seeded generator (SplitMix64), so the events are the same on every run and need no crate.
struct Gen(u64);

impl Gen {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn range(&mut self, low: u64, high: u64) -> u64 {
        low + self.below(high - low)
    }

    fn chance(&mut self, p: f64) -> bool {
        ((self.next() >> 11) as f64) < p * (1u64 << 53) as f64
    }

    fn sha(&mut self) -> String {
        format!(
            "{:016x}{:016x}{:08x}",
            self.next(),
            self.next(),
            self.next() as u32
        )
    }

    /// Up to `n` distinct items, in their order.
    fn some<T: Copy>(&mut self, items: &[T], n: u64) -> Vec<T> {
        let mut chosen: Vec<usize> = Vec::new();
        for _ in 0..n {
            let i = self.below(items.len() as u64) as usize;
            if !chosen.contains(&i) {
                chosen.push(i);
            }
        }
        chosen.sort();
        chosen.into_iter().map(|i| items[i]).collect()
    }
}

fn pick<T: Clone>(rng: &mut Gen, items: &[T]) -> T {
    items[rng.below(items.len() as u64) as usize].clone()
}

/// A GitHub user as events carry it.
fn user(rng: &mut Gen) -> Value {
    let id = rng.range(1, 5_000_000);
    let login = format!("user{id}");
    json!({
        "login": login,
        "id": id,
        "node_id": format!("MDQ6VXNlcj{id}"),
        "avatar_url": format!("https://avatars.example/u/{id}?v=4"),
        "gravatar_id": "",
        "url": format!("https://api.example/users/{login}"),
        "type": if rng.chance(0.05) { "Bot" } else { "User" },
        "site_admin": false,
    })
}

fn repository(rng: &mut Gen, name: &str) -> Value {
    let id = rng.range(1, 900_000_000);
    let many = rng.range(0, 3);
    let topics = rng.some(&["cli", "web", "db", "ml"], many);
    json!({
        "id": id,
        "name": name.split('/').nth(1).unwrap(),
        "full_name": name,
        "private": false,
        "owner": user(rng),
        "html_url": format!("https://example.com/{name}"),
        "description": if rng.chance(0.3) { Value::Null } else { json!("a project") },
        "fork": rng.chance(0.1),
        "created_at": "2019-03-04T10:00:00Z",
        "pushed_at": "2026-11-01T08:30:00Z",
        "stargazers_count": rng.range(0, 90_000),
        "language": pick(rng, &[Value::Null, json!("Rust"), json!("Python"), json!("Go")]),
        "topics": topics,
        "default_branch": "main",
    })
}

fn labels(rng: &mut Gen) -> Value {
    let names = ["bug", "enhancement", "good first issue", "docs", "wontfix"];
    let many = rng.range(0, 3);
    Value::Array(
        rng.some(&names, many)
            .into_iter()
            .map(|name| json!({"id": rng.range(1, 1_000_000), "name": name, "color": "d73a4a", "default": rng.chance(0.5)}))
            .collect(),
    )
}

fn issue(rng: &mut Gen) -> Value {
    let number = rng.range(1, 9_000);
    let closed = rng.chance(0.4);
    json!({
        "id": rng.range(1, 2_000_000_000),
        "number": number,
        "title": "Something is off",
        "user": user(rng),
        "labels": labels(rng),
        "state": if closed { "closed" } else { "open" },
        "locked": false,
        "assignees": (0..rng.range(0, 3)).map(|_| user(rng)).collect::<Vec<_>>(),
        "milestone": if rng.chance(0.8) { Value::Null } else { json!({"number": 3, "title": "v1.0", "state": "open"}) },
        "comments": rng.range(0, 40),
        "created_at": "2026-10-01T12:00:00Z",
        "closed_at": if closed { json!("2026-11-02T09:00:00Z") } else { Value::Null },
        "body": if rng.chance(0.2) { Value::Null } else { json!("Steps to reproduce: ...") },
        "reactions": {"total_count": 2, "+1": 1, "-1": 0, "laugh": 0, "hooray": 1, "heart": 0},
    })
}

fn payload(rng: &mut Gen, kind: &str, repo: &str) -> Value {
    match kind {
        "PushEvent" => {
            let commits: Vec<Value> = (0..rng.range(1, 5))
                .map(|_| {
                    json!({
                        "sha": rng.sha(),
                        "author": {"email": "dev@example.org", "name": "Dev"},
                        "message": "Fix the thing",
                        "distinct": rng.chance(0.9),
                        "url": format!("https://api.example/repos/{repo}/commits/1"),
                    })
                })
                .collect();
            json!({
                "repository_id": rng.range(1, 900_000_000),
                "push_id": rng.below(u32::MAX as u64),
                "size": commits.len(),
                "distinct_size": commits.len(),
                "ref": "refs/heads/main",
                "head": rng.sha(),
                "before": rng.sha(),
                "commits": commits,
            })
        }
        "PullRequestEvent" => {
            let number = rng.range(1, 9_000);
            let merged = rng.chance(0.3);
            json!({
                "action": pick(rng, &["opened", "closed", "reopened", "synchronize"]),
                "number": number,
                "pull_request": {
                    "id": rng.below(u32::MAX as u64),
                    "number": number,
                    "state": if merged { "closed" } else { "open" },
                    "title": "Add a feature",
                    "user": user(rng),
                    "body": if rng.chance(0.3) { Value::Null } else { json!("This adds ...") },
                    "labels": labels(rng),
                    "draft": rng.chance(0.1),
                    "merged": merged,
                    "merged_at": if merged { json!("2026-11-03T10:00:00Z") } else { Value::Null },
                    "requested_reviewers": (0..rng.range(0, 2)).map(|_| user(rng)).collect::<Vec<_>>(),
                    "head": {"ref": "feature", "sha": rng.sha(), "repo": repository(rng, repo)},
                    "base": {"ref": "main", "sha": rng.sha(), "repo": repository(rng, repo)},
                    "additions": rng.range(0, 2_000),
                    "deletions": rng.range(0, 2_000),
                    "changed_files": rng.range(1, 60),
                },
            })
        }
        "IssuesEvent" => json!({
            "action": pick(rng, &["opened", "closed", "labeled", "assigned"]),
            "issue": issue(rng),
        }),
        "IssueCommentEvent" => json!({
            "action": "created",
            "issue": issue(rng),
            "comment": {
                "id": rng.below(u32::MAX as u64),
                "user": user(rng),
                "body": "Thanks!",
                "created_at": "2026-11-04T11:00:00Z",
                "author_association": pick(rng, &["OWNER", "MEMBER", "CONTRIBUTOR", "NONE"]),
            },
        }),
        "CreateEvent" => {
            let tag = rng.chance(0.3);
            json!({
                "ref": if rng.chance(0.1) { Value::Null } else if tag { json!("v1.2.3") } else { json!("feature-x") },
                "ref_type": if tag { "tag" } else { "branch" },
                "master_branch": "main",
                "description": if rng.chance(0.5) { Value::Null } else { json!("a project") },
                "pusher_type": "user",
            })
        }
        "ReleaseEvent" => json!({
            "action": "published",
            "release": {
                "id": rng.below(u32::MAX as u64),
                "tag_name": "v1.2.3",
                "name": if rng.chance(0.2) { Value::Null } else { json!("Release 1.2.3") },
                "draft": false,
                "prerelease": rng.chance(0.2),
                "author": user(rng),
                "assets": (0..rng.range(0, 4)).map(|i| json!({"id": i, "name": format!("tool-{i}.tar.gz"), "size": rng.range(1_000, 9_000_000), "download_count": rng.range(0, 5_000), "content_type": "application/gzip"})).collect::<Vec<_>>(),
                "published_at": "2026-11-05T12:00:00Z",
            },
        }),
        _ => json!({"action": "started"}),
    }
}

/// One of `items`, each as likely as its weight.
fn weighted<'a>(rng: &mut Gen, items: &[(&'a str, u64)]) -> &'a str {
    let mut left = rng.below(items.iter().map(|i| i.1).sum());
    for (item, weight) in items {
        if left < *weight {
            return item;
        }
        left -= weight;
    }
    items[0].0
}

/// `count` events as the GitHub events API lists them, from a seeded generator.
fn github_events(count: usize) -> Vec<Value> {
    let mut rng = Gen(18);
    let kinds = [
        ("PushEvent", 40),
        ("PullRequestEvent", 15),
        ("IssuesEvent", 10),
        ("IssueCommentEvent", 12),
        ("CreateEvent", 10),
        ("ReleaseEvent", 3),
        ("WatchEvent", 10),
    ];
    let repos = ["acme/rocket", "acme/anvil", "octo/cat", "tool/box"];
    (0..count)
        .map(|i| {
            let kind = weighted(&mut rng, &kinds);
            let repo = pick(&mut rng, &repos);
            let actor = user(&mut rng);
            let mut event = Map::new();
            event.insert("id".into(), json!(format!("{}", 40_000_000_000u64 + i as u64)));
            event.insert("type".into(), json!(kind));
            event.insert(
                "actor".into(),
                json!({"id": actor["id"], "login": actor["login"], "display_login": actor["login"], "gravatar_id": "", "url": actor["url"], "avatar_url": actor["avatar_url"]}),
            );
            event.insert(
                "repo".into(),
                json!({"id": rng.range(1, 900_000_000), "name": repo, "url": format!("https://api.example/repos/{repo}")}),
            );
            event.insert("payload".into(), payload(&mut rng, kind, repo));
            event.insert("public".into(), json!(true));
            event.insert("created_at".into(), json!("2026-11-29T10:00:00Z"));
            if repo.starts_with("acme/") {
                event.insert(
                    "org".into(),
                    json!({"id": 42, "login": "acme", "gravatar_id": "", "url": "https://api.example/orgs/acme", "avatar_url": "https://avatars.example/u/42"}),
                );
            }
            Value::Object(event)
        })
        .collect()
}

#[test]
fn github_events_settle_small_with_every_payload_valid_and_queryable() {
    let events = github_events(3_000);
    let dir = tempfile::tempdir().unwrap();
    let (ledger, settlement) = import_and_settle(dir.path(), "events", &events);
    let (bytes, width) = (schema_bytes(&settlement), columns(&settlement));
    eprintln!(
        "{} events: schema {bytes} bytes, {width} columns",
        events.len()
    );
    assert!(bytes < 32 * 1024, "schema is {bytes} bytes");
    // Tens of columns: the envelope's fields, and the payload (whose fields depend on the event
    // type, each in a few of the events) as one JSON column. A column per payload field was 141.
    assert!((10..=40).contains(&width), "{}", settlement.postgres_ddl);
    assert!(
        settlement
            .postgres_ddl
            .contains("\"payload\" JSONB NOT NULL, -- object: a sparse record"),
        "{}",
        settlement.postgres_ddl
    );
    let properties = &settlement.schema["properties"];
    // The event type is an enum; the payload a record whose fields depend on it, their union
    // kept in the JSON Schema.
    assert_eq!(properties["type"]["enum"].as_array().unwrap().len(), 7);
    assert!(properties["payload"]["properties"]["action"].is_object());
    assert!(properties["payload"]["properties"]["commits"]["items"].is_object());
    // Nullable fields keep null as a variant.
    let reference = &properties["payload"]["properties"]["ref"]["type"];
    assert!(
        reference.as_array().unwrap().contains(&json!("null")),
        "{reference}"
    );
    let conn = rusqlite::Connection::open(ledger.path()).unwrap();
    let pushes: i64 = conn
        .query_row(
            "SELECT count(*) FROM ledger_events WHERE type = 'PushEvent'",
            [],
            |row| row.get(0),
        )
        .unwrap();
    let expected = events.iter().filter(|e| e["type"] == "PushEvent").count();
    assert_eq!(pushes, expected as i64);
    // The payload column answers JSON queries, in SQLite...
    let commits: i64 = conn
        .query_row(
            "SELECT sum(json_array_length(payload, '$.commits')) FROM ledger_events WHERE type = 'PushEvent'",
            [],
            |row| row.get(0),
        )
        .unwrap();
    let expected_commits: usize = events
        .iter()
        .filter_map(|e| e["payload"]["commits"].as_array())
        .map(Vec::len)
        .sum();
    assert_eq!(commits, expected_commits as i64);
    // ...and in the Postgres table the DDL creates, loaded with the same events.
    let shape = ledger.collection("events").unwrap().shape;
    let columns = improv_ledger::schema::columns(&shape);
    let server = TempPostgres::start_new();
    let out = support::load(
        &server,
        dir.path(),
        "events",
        &settlement.postgres_ddl,
        &columns,
        &dir.path().join("events.jsonl"),
        "SELECT count(*), count(*) FILTER (WHERE type = 'PushEvent'),
       sum(jsonb_array_length(payload -> 'commits')), count(DISTINCT payload ->> 'action')
FROM events;
SELECT count(*) FROM information_schema.columns WHERE table_name = 'events';",
    );
    let lines: Vec<&str> = out.lines().filter(|l| !l.is_empty()).collect();
    let counts: Vec<i64> = lines[0].split('|').map(|n| n.parse().unwrap()).collect();
    assert_eq!(
        counts[..3],
        [
            events.len() as i64,
            expected as i64,
            expected_commits as i64
        ],
        "{out}"
    );
    assert!(counts[3] >= 5, "payload actions: {out}");
    assert_eq!(lines[1].parse::<usize>().unwrap(), width, "{out}");
}
