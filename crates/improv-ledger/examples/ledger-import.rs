//! `improv ledger import` end to end on one file, for bench/ledger: parse, infer, store into a
//! fresh ledger in a temporary folder, then settle. Prints one JSON object: seconds, CPU seconds
//! (user and system, all threads: the import reads on one thread and writes on another), MiB/s,
//! peak RSS (VmHWM), entries, and the settled columns with their PostgreSQL and SQLite types.
//!
//! ```text
//! cargo run --release -p improv-ledger --example ledger-import -- FILE
//! ```

use improv_ledger::schema::{self, ColumnKind};
use improv_ledger::{Ledger, LedgerOptions, Provenance};
use serde_json::json;
use std::path::PathBuf;
use std::time::Instant;

fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// User and system CPU seconds of this process so far, all threads (from /proc/self/stat).
fn cpu_seconds() -> f64 {
    let ticks = std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|stat| {
            // The fields after the command name (which may hold spaces) in parentheses.
            let rest = stat.rsplit_once(')')?.1.to_owned();
            let fields: Vec<&str> = rest.split_whitespace().collect();
            Some(fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?)
        })
        .unwrap_or(0.0);
    // Linux reports these in USER_HZ, 100 per second on every architecture it runs on.
    ticks / 100.0
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let file = PathBuf::from(std::env::args().nth(1).ok_or("usage: ledger-import FILE")?);
    let bytes = std::fs::metadata(&file)?.len();
    let dir = tempfile::tempdir()?;
    let ledger = Ledger::open_in(dir.path(), LedgerOptions::default())?;
    let start = Instant::now();
    let cpu_start = cpu_seconds();
    let report = ledger.import("bench", &file, &Provenance::new("bench", "director"))?;
    let seconds = start.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu_start;
    let settled = ledger.settle("bench")?;
    let shape = ledger.collection("bench")?.shape;
    // Each column's type on both sides improv writes DDL for, for the bench's side-by-side table.
    let columns: serde_json::Map<String, serde_json::Value> = schema::columns(&shape)
        .into_iter()
        .map(|c| {
            let mut postgres = schema::postgres_type("bench", &c);
            if c.kind == ColumnKind::Records {
                let fields: Vec<String> = c
                    .fields
                    .iter()
                    .map(|f| format!("{} {}", f.name, f.kind.postgres()))
                    .collect();
                postgres = format!("{postgres} ({})", fields.join(", "));
            }
            let label = match c.kind {
                ColumnKind::Json(_) => c.label.clone(),
                _ => String::new(),
            };
            let types = json!({"postgres": postgres, "sqlite": c.kind.sqlite(), "label": label});
            (c.path.to_string(), types)
        })
        .collect();
    println!(
        "{}",
        json!({
            "seconds": seconds,
            "cpu_seconds": cpu,
            "mib_per_s": bytes as f64 / (1 << 20) as f64 / seconds,
            "peak_rss_mb": peak_rss_mb(),
            "recorded": report.recorded,
            "rejected": report.rejected,
            "schema_bytes": settled.schema.to_string().len(),
            "columns": columns,
        })
    );
    Ok(())
}
