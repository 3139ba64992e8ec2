//! Ledger benchmark: inference throughput, recording throughput with inference on, query latency
//! over 100k records, peak memory, the inferred shape of a real corpus, and (with `--compare`)
//! DuckDB's `read_json` full-file detection and genson on the same file.
//!
//! ```text
//! cargo run --release -p improv-ledger --example ledger-bench -- [--mb 100] [--records 100000]
//!     [--real /usr/lib/node_modules] [--compare] [--keep FILE]
//! ```
//!
//! `--compare` runs `examples/compare.py` (needs `pip install duckdb genson`).

use improv_ledger::shape::Kind;
use improv_ledger::{Input, Ledger, LedgerOptions, Op, Provenance, Query, Shape};
use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};
use serde_json::{Value, json};
use std::io::{BufRead, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

struct Args {
    mb: usize,
    records: usize,
    real: Option<PathBuf>,
    compare: bool,
    keep: Option<PathBuf>,
}

fn parse_args() -> Args {
    let mut args = Args {
        mb: 100,
        records: 100_000,
        real: Some(PathBuf::from("/usr/lib/node_modules")).filter(|p| p.exists()),
        compare: false,
        keep: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--mb" => args.mb = it.next().and_then(|v| v.parse().ok()).unwrap_or(args.mb),
            "--records" => {
                args.records = it
                    .next()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(args.records)
            }
            "--real" => args.real = it.next().map(PathBuf::from),
            "--compare" => args.compare = true,
            "--keep" => args.keep = it.next().map(PathBuf::from),
            other => {
                eprintln!(
                    "unknown argument {other}; see the doc comment of examples/ledger-bench.rs"
                );
                std::process::exit(2);
            }
        }
    }
    args
}

const COUNTRIES: [&str; 6] = ["NO", "IT", "DE", "US", "JP", "BR"];
const EVENTS: [&str; 5] = ["view", "cart", "order", "refund", "signup"];
const WORDS: [&str; 12] = [
    "red", "blue", "sale", "new", "gift", "eco", "bulk", "promo", "fast", "b2b", "trial", "vip",
];

/// One synthetic event: nested objects, arrays of objects, optional fields, a field with mixed
/// types, a renamed field, formats (uuid, date-time, date, email, uri) and free text.
fn event(rng: &mut SmallRng, i: u64) -> Value {
    let user_id: u32 = rng.random_range(1..50_000);
    let mut user = json!({
        "id": user_id,
        "name": format!("user {user_id}"),
        "country": COUNTRIES[rng.random_range(0..COUNTRIES.len())],
        "since": format!("20{:02}-{:02}-{:02}", rng.random_range(10..25), rng.random_range(1..13), rng.random_range(1..29)),
    });
    // The same field under two names, as different actors write it.
    let mail = format!("u{user_id}@example.org");
    if rng.random_bool(0.9) {
        user["email"] = json!(mail);
    } else {
        user["e_mail"] = json!(mail);
    }
    let n_items = rng.random_range(0..5);
    let items: Vec<Value> = (0..n_items)
        .map(|_| {
            json!({
                "sku": format!("SKU-{:05}", rng.random_range(0..20_000)),
                "qty": rng.random_range(1..6),
                "price": (rng.random_range(100..100_000) as f64) / 100.0,
            })
        })
        .collect();
    let tags: Vec<&str> = (0..rng.random_range(0..4))
        .map(|_| WORDS[rng.random_range(0..WORDS.len())])
        .collect();
    let mut e = json!({
        "id": format!("{:08x}-{:04x}-4{:03x}-a{:03x}-{:012x}", rng.random::<u32>(), rng.random::<u16>(), rng.random_range(0..0x1000), rng.random_range(0..0x1000), rng.random::<u64>() & 0xffff_ffff_ffff),
        "seq": i,
        "ts": format!("2025-{:02}-{:02}T{:02}:{:02}:{:02}Z", rng.random_range(1..13), rng.random_range(1..29), rng.random_range(0..24), rng.random_range(0..60), rng.random_range(0..60)),
        "event": EVENTS[rng.random_range(0..EVENTS.len())],
        "user": user,
        "items": items,
        "tags": tags,
        "amount": if rng.random_bool(0.2) { Value::Null } else { json!((rng.random_range(0..500_000) as f64) / 100.0) },
        "ok": rng.random_bool(0.95),
        "note": (0..rng.random_range(3..20)).map(|_| WORDS[rng.random_range(0..WORDS.len())]).collect::<Vec<_>>().join(" "),
    });
    if rng.random_bool(0.3) {
        e["referrer"] = json!(format!(
            "https://site{}.example/p/{}",
            rng.random_range(0..50),
            rng.random_range(0..1000)
        ));
    }
    if rng.random_bool(0.1) {
        e["coupon"] = json!(format!("C{}", rng.random_range(0..100)));
    }
    // Mixed types: a postal code, sometimes a number, sometimes text.
    e["zip"] = if rng.random_bool(0.6) {
        json!(rng.random_range(1000..99_999))
    } else {
        json!(format!(
            "{:05}-{}",
            rng.random_range(0..99_999),
            rng.random_range(0..9)
        ))
    };
    if rng.random_bool(0.05) {
        e["meta"] = json!({"ab": rng.random_range(0..3), "flags": {"beta": rng.random_bool(0.5)}});
    }
    e
}

fn generate(path: &Path, target_bytes: usize) -> std::io::Result<(u64, u64)> {
    let mut rng = SmallRng::seed_from_u64(7);
    let mut out = BufWriter::new(std::fs::File::create(path)?);
    let (mut bytes, mut n) = (0u64, 0u64);
    while (bytes as usize) < target_bytes {
        let line = event(&mut rng, n).to_string();
        out.write_all(line.as_bytes())?;
        out.write_all(b"\n")?;
        bytes += line.len() as u64 + 1;
        n += 1;
    }
    out.flush()?;
    Ok((n, bytes))
}

fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

/// Parse only, then parse and infer: the difference is the inference cost.
fn infer_file(path: &Path) -> std::io::Result<(Shape, Duration, Duration, u64)> {
    let read = |infer: bool| -> std::io::Result<(Shape, Duration, u64)> {
        let file = std::io::BufReader::with_capacity(1 << 20, std::fs::File::open(path)?);
        let mut shape = Shape::default();
        let mut n = 0u64;
        let start = Instant::now();
        for line in file.lines() {
            let line = line?;
            if let Ok(value) = serde_json::from_str::<Value>(&line) {
                if infer {
                    shape.absorb(&value);
                } else {
                    std::hint::black_box(&value);
                }
                n += 1;
            }
        }
        Ok((shape, start.elapsed(), n))
    };
    let (_, parse_only, _) = read(false)?;
    let (shape, with_inference, n) = read(true)?;
    Ok((shape, parse_only, with_inference, n))
}

/// Inference straight from the text, without building values (the fast path).
fn infer_file_streaming(path: &Path) -> std::io::Result<(Shape, Duration, u64)> {
    let file = std::io::BufReader::with_capacity(1 << 20, std::fs::File::open(path)?);
    let mut shape = Shape::default();
    let mut n = 0u64;
    let start = Instant::now();
    for line in file.lines() {
        if shape.absorb_json(&line?).is_ok() {
            n += 1;
        }
    }
    Ok((shape, start.elapsed(), n))
}

/// A DuckDB-like name for a shape's type, for comparing with `read_json`'s detection.
fn duck_type(shape: &Shape) -> String {
    let kinds = shape.non_null_kinds();
    match kinds.as_slice() {
        [] => "NULL".into(),
        [Kind::Boolean] => "BOOLEAN".into(),
        [Kind::Integer] => "BIGINT".into(),
        [Kind::Number] | [Kind::Integer, Kind::Number] => "DOUBLE".into(),
        [Kind::String] => match shape.string_format().map(|f| f.name()) {
            // RFC 3339 date-times always carry an offset.
            Some("date-time") => "TIMESTAMP WITH TIME ZONE".into(),
            Some("date") => "DATE".into(),
            Some("uuid") => "UUID".into(),
            _ => "VARCHAR".into(),
        },
        [Kind::Array] => match &shape.array {
            Some(a) if a.items.count > 0 => format!("{}[]", duck_type(&a.items)),
            _ => "NULL[]".into(),
        },
        [Kind::Object] => "STRUCT".into(),
        _ => format!(
            "union({})",
            kinds.iter().map(|k| k.name()).collect::<Vec<_>>().join("|")
        ),
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = parse_args();
    let dir = tempfile::tempdir()?;
    let data = args
        .keep
        .clone()
        .unwrap_or_else(|| dir.path().join("events.jsonl"));
    let (lines, bytes) = generate(&data, args.mb << 20)?;
    let mb = bytes as f64 / (1 << 20) as f64;
    println!(
        "data: {} ({lines} records, {mb:.1} MB, synthetic events, seed 7)",
        data.display()
    );
    println!();

    // 1. Inference alone over the whole file.
    let (shape, parse_only, with_inference, n) = infer_file(&data)?;
    let (streamed, streaming, _) = infer_file_streaming(&data)?;
    assert_eq!(streamed, shape, "both inference paths must agree");
    let infer_s = streaming.as_secs_f64();
    let dom_s = with_inference.as_secs_f64();
    let cost_ns = (with_inference.saturating_sub(parse_only)).as_nanos() as f64 / n as f64;
    println!("| measure | value |");
    println!("|---|---|");
    println!(
        "| inference from text (Shape::absorb_json), whole file, one core | {:.0} records/s, {:.1} MB/s |",
        n as f64 / infer_s,
        mb / infer_s
    );
    println!(
        "| parse to serde_json::Value + Shape::absorb | {:.0} records/s, {:.1} MB/s |",
        n as f64 / dom_s,
        mb / dom_s
    );
    println!(
        "| parse only (serde_json) | {:.0} records/s |",
        n as f64 / parse_only.as_secs_f64()
    );
    println!("| inference cost per record (absorb of a parsed value) | {cost_ns:.0} ns |");

    // 2. Recording into the ledger (SQLite, WAL) with inference on.
    let ledger = Ledger::open_in(dir.path().join("state"), LedgerOptions::default())?;
    let who = Provenance::new("bench", "bench");
    let file = std::io::BufReader::new(std::fs::File::open(&data)?);
    let mut batch = Vec::with_capacity(10_000);
    let mut recorded = 0usize;
    let mut recorded_bytes = 0usize;
    let start = Instant::now();
    for line in file.lines() {
        let line = line?;
        recorded_bytes += line.len() + 1;
        batch.push(Input::Text(line));
        recorded += 1;
        if batch.len() == 10_000 || recorded == args.records {
            ledger.record_batch("events", std::mem::take(&mut batch), &who)?;
        }
        if recorded == args.records {
            break;
        }
    }
    if !batch.is_empty() {
        ledger.record_batch("events", batch, &who)?;
    }
    let record_s = start.elapsed().as_secs_f64();
    println!(
        "| record into the ledger, batches of 10k, inference on | {:.0} records/s, {:.1} MB/s ({recorded} records) |",
        recorded as f64 / record_s,
        recorded_bytes as f64 / (1 << 20) as f64 / record_s
    );
    let start = Instant::now();
    let singles = 2_000;
    for i in 0..singles {
        ledger.record(
            "singles",
            json!({"n": i, "event": "view", "user": {"id": i}}),
            &who,
        )?;
    }
    println!(
        "| record one at a time (one transaction each) | {:.0} records/s |",
        singles as f64 / start.elapsed().as_secs_f64()
    );

    // 3. Query latency over the recorded records.
    let queries: Vec<(&str, Query)> = vec![
        (
            "event = \"refund\", limit 20",
            Query::new()
                .filter("event", Op::Eq, json!("refund"))?
                .limit(20),
        ),
        (
            "user.country = \"JP\" and amount > 4000, count all",
            Query::new()
                .filter("user.country", Op::Eq, json!("JP"))?
                .filter("amount", Op::Gt, json!(4000))?,
        ),
        (
            "tags contains \"vip\", -amount, limit 10",
            Query::new()
                .filter("tags", Op::Contains, json!("vip"))?
                .order_by("-amount")?
                .limit(10),
        ),
        (
            "items[0].sku = \"SKU-00042\"",
            Query::new().filter("items[0].sku", Op::Eq, json!("SKU-00042"))?,
        ),
        (
            "coupon exists, limit 50",
            Query::new()
                .filter("coupon", Op::Exists, json!(true))?
                .limit(50),
        ),
    ];
    for (name, query) in &queries {
        let mut samples = Vec::new();
        let mut found = 0;
        for _ in 0..7 {
            let start = Instant::now();
            found = ledger.query("events", query)?.len();
            samples.push(start.elapsed());
        }
        println!(
            "| query over {recorded}: {name} | {:.1} ms median of 7 ({found} found) |",
            median(samples).as_secs_f64() * 1000.0
        );
    }
    let start = Instant::now();
    let settled = ledger.settle("events")?;
    println!(
        "| settle (schema, DDL, view) | {:.1} ms |",
        start.elapsed().as_secs_f64() * 1000.0
    );
    println!("| peak RSS of this process | {:.0} MB |", peak_rss_mb());
    println!();
    println!("inferred shape of the generated file:");
    print!("{}", shape.tree(8, 20));
    let info = ledger.collection("events")?;
    for s in &info.rename_suspects {
        println!(
            "rename suspect: {} ({}) / {} ({})",
            s.first, s.first_count, s.second, s.second_count
        );
    }
    println!();
    println!(
        "context text for actors ({} bytes):",
        ledger.context_for(&["events"])?.len()
    );
    print!("{}", ledger.context_for(&["events"])?);
    let _ = settled;

    // 4. A real corpus nobody here wrote.
    if let Some(root) = &args.real {
        let mut files = Vec::new();
        collect_package_json(root, &mut files);
        let mut real = Shape::default();
        let mut parsed = 0;
        let start = Instant::now();
        for file in &files {
            if let Ok(text) = std::fs::read_to_string(file)
                && let Ok(value) = serde_json::from_str::<Value>(&text)
            {
                real.absorb(&value);
                parsed += 1;
            }
        }
        println!();
        println!(
            "real data: {parsed} package.json files under {} ({:.1} ms); top-level fields in at least 10% of them:",
            root.display(),
            start.elapsed().as_secs_f64() * 1000.0
        );
        if let Some(object) = &real.object {
            let mut fields: Vec<(&String, &Shape)> = object.fields.iter().collect();
            fields.sort_by(|a, b| b.1.count.cmp(&a.1.count).then(a.0.cmp(b.0)));
            for (key, field) in fields
                .into_iter()
                .filter(|(_, f)| f.count * 10 >= object.count)
            {
                println!(
                    "  {key:<16} {:>5.1}%  {}",
                    100.0 * field.count as f64 / object.count as f64,
                    field.label()
                );
            }
        }
    }

    // 5. DuckDB and genson on the same file.
    if args.compare {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/compare.py");
        let output = std::process::Command::new("python3")
            .arg(&script)
            .arg(&data)
            .output()?;
        if !output.status.success() {
            eprintln!(
                "{} failed: {}",
                script.display(),
                String::from_utf8_lossy(&output.stderr)
            );
            return Ok(());
        }
        let report: Value = serde_json::from_slice(&output.stdout)?;
        let duck_s = report["duckdb_seconds"].as_f64().unwrap_or(f64::NAN);
        let genson_s = report["genson_seconds"].as_f64().unwrap_or(f64::NAN);
        let genson_n = report["genson_records"].as_f64().unwrap_or(f64::NAN);
        println!();
        println!("| one core, same file ({mb:.0} MB) | records/s | MB/s | improv is |");
        println!("|---|---|---|---|");
        println!(
            "| improv inference | {:.0} | {:.1} | 1.0x |",
            n as f64 / infer_s,
            mb / infer_s
        );
        println!(
            "| DuckDB {} read_json detection, sample_size=-1, threads=1 | {:.0} | {:.1} | {:.1}x faster |",
            report["duckdb_version"].as_str().unwrap_or("?"),
            n as f64 / duck_s,
            mb / duck_s,
            duck_s / infer_s
        );
        println!(
            "| genson {} (first {genson_n:.0} records) | {:.0} | {:.1} | {:.1}x faster |",
            report["genson_version"].as_str().unwrap_or("?"),
            genson_n / genson_s,
            report["genson_mb"].as_f64().unwrap_or(f64::NAN) / genson_s,
            (n as f64 / infer_s) / (genson_n / genson_s)
        );
        println!(
            "| DuckDB peak RSS of its process | {:.0} MB | | |",
            report["peak_rss_mb"].as_f64().unwrap_or(f64::NAN)
        );
        println!();
        println!("| top-level field | improv | DuckDB | agree |");
        println!("|---|---|---|---|");
        if let (Some(object), Some(types)) = (&shape.object, report["duckdb_types"].as_object()) {
            for (key, field) in &object.fields {
                let mine = duck_type(field);
                let theirs = types.get(key).and_then(Value::as_str).unwrap_or("-");
                let agree = agreement(&mine, theirs);
                println!("| {key} | {mine} | {} | {agree} |", truncate(theirs, 48));
            }
        }
    }
    Ok(())
}

/// Whether improv's type and DuckDB's agree; DuckDB's `JSON` is its union fallback.
fn agreement(mine: &str, theirs: &str) -> &'static str {
    let theirs_plain = if theirs.starts_with("STRUCT(") {
        if theirs.ends_with("[]") {
            "STRUCT[]"
        } else {
            "STRUCT"
        }
    } else {
        theirs
    };
    if theirs_plain == mine {
        "yes"
    } else if theirs == "JSON" {
        "DuckDB falls back to JSON"
    } else if mine.starts_with("union") {
        "improv keeps the union"
    } else {
        "no"
    }
}

fn truncate(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        text.to_owned()
    } else {
        format!("{}…", text.chars().take(max).collect::<String>())
    }
}

fn collect_package_json(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        if kind.is_dir() {
            collect_package_json(&path, out);
        } else if kind.is_file() && entry.file_name() == "package.json" {
            out.push(path);
        }
    }
}
