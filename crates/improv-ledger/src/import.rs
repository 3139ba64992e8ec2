//! Streaming import: JSON lines, a JSON array or CSV read from a file a piece at a time, recorded in
//! batches (one transaction each, shapes inferred as they are written), so memory stays the same
//! whatever the file's size. Two threads share the work: a reading thread reads, parses, checks
//! and encodes each entry and infers the collection's shape, while the importing thread stores
//! the previous batch; a bounded channel between them keeps memory at a few batches. The
//! writer takes the reader's shape only if nothing else wrote the collection since it was
//! started from and it is not settled; otherwise it checks and infers each entry itself, as
//! [`Ledger::record_batch`] does. While the reading thread infers, a JSON line is parsed once,
//! into a tape (`tape.rs`) that the stored JSONB and the shape are both made from, with no
//! `serde_json::Value` built; a line that would be refused, and every line once inference has
//! moved to the writer, goes through `Ledger::prepare`'s usual checks, which say why.
//!
//! An import into a ledger holding no entry at all drops the index of entries by collection and
//! builds it once at its end, which costs less than updating it row by row. Each batch commits
//! on its own, so a crash mid-import leaves every batch committed before it, with the shape as of
//! the last one, and at worst the index missing, which the next open builds again.
//!
//! A line that cannot be read (malformed JSON, not UTF-8, a CSV row with the wrong number of
//! fields) is kept in the rejects with its line number and the import goes on; a JSON array that
//! stops parsing ends the import with its line and column, after every item before it has been
//! recorded. CSV cells are typed the way a person reading the file would: an empty cell is left
//! out, `true`/`false` are booleans, numbers are numbers (integers when they have no fraction or
//! exponent and fit in 64 bits), anything else a string.

use crate::ledger::{
    Checked, Inferred, Input, Ledger, LedgerError, Origin, Prepared, Provenance, RecordOutcome,
    Result,
};
use crate::shape::Shape;
use crate::tape::Tape;
use serde::Serialize;
use serde::de::{DeserializeSeed, SeqAccess, Visitor};
use serde_json::{Map, Value};
use std::cell::Cell;
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{SyncSender, sync_channel};

/// Entries per write transaction, at most...
const BATCH_ENTRIES: usize = 5_000;
/// ...and bytes of entry text per transaction, at most (beyond one entry).
const BATCH_BYTES: usize = 2 << 20;
/// Bytes of write-ahead log between checkpoints while importing (SQLite's default is 4 MB). Each
/// checkpoint copies the log into the ledger file and waits for the disk (fsync); at the default
/// that wait was a third of an import's time. Spacing them 10x apart keeps every commit as
/// durable as before (WAL, synchronous=NORMAL: checkpoints only move committed pages), costs up
/// to about 40 MB of log on disk, not in memory, and the import checkpoints once at its end.
const IMPORT_CHECKPOINT_BYTES: u32 = 40 << 20;
/// Batches read ahead of the writer: the reading thread parses, checks and infers the next
/// batch while the writer stores this one, so memory stays at a few batches.
const BATCHES_IN_FLIGHT: usize = 1;
/// Read buffer size.
const READ_BUFFER: usize = 256 << 10;

/// The formats [`Ledger::import`] reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImportFormat {
    /// One JSON object per line.
    JsonLines,
    /// One JSON array of objects.
    JsonArray,
    /// A header row, then one entry per row.
    Csv,
}

impl ImportFormat {
    /// The format of `file`: CSV by its extension, else a JSON array when the first non-blank
    /// byte is `[`, else JSON lines.
    fn detect(file: &Path, reader: &mut impl BufRead) -> Result<ImportFormat> {
        let is_csv = file
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("csv"));
        if is_csv {
            return Ok(ImportFormat::Csv);
        }
        loop {
            let buffer = reader.fill_buf().map_err(io(file))?;
            let Some(&first) = buffer.first() else {
                return Ok(ImportFormat::JsonLines);
            };
            if first.is_ascii_whitespace() {
                reader.consume(1);
                continue;
            }
            return Ok(if first == b'[' {
                ImportFormat::JsonArray
            } else {
                ImportFormat::JsonLines
            });
        }
    }
}

/// How far an import has got, for a progress display.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ImportProgress {
    /// Bytes of the file read so far.
    pub bytes: u64,
    /// The file's size.
    pub total_bytes: u64,
    pub recorded: u64,
    pub rejected: u64,
}

fn io(file: &Path) -> impl Fn(std::io::Error) -> LedgerError + '_ {
    move |source| LedgerError::Io {
        path: file.to_path_buf(),
        source,
    }
}

/// What an import did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ImportReport {
    pub recorded: u64,
    pub rejected: u64,
    /// Fields proposed for a settled collection.
    pub proposed: Vec<String>,
}

/// Counts the bytes read through it, for progress.
struct Counting<R> {
    inner: R,
    bytes: Rc<Cell<u64>>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.bytes.set(self.bytes.get() + n as u64);
        Ok(n)
    }
}

/// A batch read, parsed and inferred by the reading thread, on its way to the writer.
struct Batch {
    entries: Vec<Prepared>,
    /// The collection's shape after these entries, while the reading thread infers it.
    shape: Option<Shape>,
    /// Bytes of the file read so far.
    bytes_read: u64,
}

/// The reading thread's side: parses and checks entries, infers the shape while the writer
/// takes it, and hands batches to the writer.
struct Batcher<'a> {
    ledger: &'a Ledger,
    /// The shape so far, while inference runs here; the values it absorbed are dropped here.
    shape: Option<Shape>,
    /// Set by the writer once it stops taking this thread's shapes (another writer came in
    /// between, or the collection got settled): entries then keep their values for it.
    inference_dropped: &'a AtomicBool,
    pending: Vec<Prepared>,
    pending_bytes: usize,
    /// The tape each line is parsed into, kept for its memory.
    tape: Tape<'static>,
    out: SyncSender<Batch>,
    read: Rc<Cell<u64>>,
    file: &'a Path,
}

impl Batcher<'_> {
    /// Takes one line of JSON text (without its line break). While this thread infers, a line
    /// that will be accepted is parsed once, into a tape that the JSONB and the shape are made
    /// from; anything else goes through [`Batcher::push`], the ledger's usual checks.
    fn push_line(&mut self, line: &[u8], origin: Origin, bytes: usize) -> Result<()> {
        if self.inference_dropped.load(Ordering::Relaxed) {
            self.shape = None;
        }
        if let Some(shape) = &mut self.shape {
            let mut tape = std::mem::take(&mut self.tape).recycle();
            let fast = self.ledger.prepare_inferring(line, &mut tape, shape);
            self.tape = tape.recycle();
            if let Some((checked, changed)) = fast {
                return self.enqueue(checked, origin, changed, bytes);
            }
        }
        let input = match std::str::from_utf8(line) {
            Ok(text) => Input::Text(text.to_owned()),
            Err(error) => Input::Unreadable {
                text: String::from_utf8_lossy(line).into_owned(),
                reason: format!("not UTF-8 text ({error}); save the file as UTF-8"),
            },
        };
        self.push(input, origin, bytes)
    }

    fn push(&mut self, input: Input, origin: Origin, bytes: usize) -> Result<()> {
        let mut checked = self.ledger.prepare(input);
        if self.inference_dropped.load(Ordering::Relaxed) {
            self.shape = None;
        }
        let mut changed = false;
        if let (Some(shape), Checked::Accepted { value, .. }) = (&mut self.shape, &mut checked)
            && let Some(value) = value.take()
        {
            changed = shape.absorb(&value);
        }
        self.enqueue(checked, origin, changed, bytes)
    }

    fn enqueue(
        &mut self,
        checked: Checked,
        origin: Origin,
        changed: bool,
        bytes: usize,
    ) -> Result<()> {
        self.pending.push(Prepared {
            checked,
            origin: Some(origin),
            changed,
        });
        self.pending_bytes += bytes;
        if self.pending.len() >= BATCH_ENTRIES || self.pending_bytes >= BATCH_BYTES {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let batch = Batch {
            entries: std::mem::take(&mut self.pending),
            shape: self.shape.clone(),
            bytes_read: self.read.get(),
        };
        self.pending_bytes = 0;
        // Fails only when the writer stopped on an error, which is the one reported.
        self.out.send(batch).map_err(|_| LedgerError::Io {
            path: self.file.to_path_buf(),
            source: std::io::Error::other("the ledger stopped writing"),
        })
    }
}

impl Ledger {
    /// Imports a JSON lines, JSON array or CSV file into a collection, streaming (see the module
    /// docs). Lines that cannot be read are kept in the rejects with their line number; a JSON
    /// array that does not parse is an error naming the line and column, after the items before
    /// it were recorded.
    pub fn import(
        &self,
        collection: &str,
        file: &Path,
        provenance: &Provenance,
    ) -> Result<ImportReport> {
        self.import_with_progress(collection, file, provenance, &mut |_| {})
    }

    /// [`Ledger::import`], calling `progress` after every batch written.
    pub fn import_with_progress(
        &self,
        collection: &str,
        file: &Path,
        provenance: &Provenance,
        progress: &mut dyn FnMut(ImportProgress),
    ) -> Result<ImportReport> {
        let opened = File::open(file).map_err(io(file))?;
        let total_bytes = opened.metadata().map_err(io(file))?.len();
        let start = self.inference_start(collection)?;
        let inference_dropped = AtomicBool::new(start.is_none());
        let (chain, shape) = start.unzip();
        let checkpoint_pages = self.set_wal_autocheckpoint(IMPORT_CHECKPOINT_BYTES)?;
        let deferred_index = self.defer_entry_index()?;
        let (out, batches) = sync_channel(BATCHES_IN_FLIGHT);
        let mut writer = Writer {
            ledger: self,
            collection,
            provenance,
            chain,
            inference_dropped: &inference_dropped,
            report: ImportReport::default(),
        };
        let (read, written) = std::thread::scope(|scope| {
            let reader = scope.spawn(|| {
                read_file(
                    opened,
                    file,
                    Batcher {
                        ledger: self,
                        shape,
                        inference_dropped: &inference_dropped,
                        pending: Vec::new(),
                        pending_bytes: 0,
                        tape: Tape::default(),
                        out,
                        read: Rc::default(),
                        file,
                    },
                )
            });
            let mut written = Ok(());
            for batch in &batches {
                let bytes = batch.bytes_read;
                written = writer.write(batch);
                if written.is_err() {
                    break;
                }
                progress(ImportProgress {
                    bytes,
                    total_bytes,
                    recorded: writer.report.recorded,
                    rejected: writer.report.rejected,
                });
            }
            // A writer that stopped early lets the reader's next send fail, so it ends too.
            drop(batches);
            let read = reader
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
            (read, written)
        });
        let indexed = if deferred_index {
            self.ensure_tables()
        } else {
            Ok(())
        };
        let restored = indexed
            .and_then(|()| self.restore_wal_autocheckpoint(checkpoint_pages))
            .and_then(|_| self.checkpoint());
        written?;
        read?;
        restored?;
        let mut report = writer.report;
        report.proposed.sort();
        Ok(report)
    }
}

/// The writing side, on the importing thread: one transaction per batch.
struct Writer<'a> {
    ledger: &'a Ledger,
    collection: &'a str,
    provenance: &'a Provenance,
    /// The revision the reading thread's next shape continues from, while the writer takes its
    /// shapes; `None` once it does not (then each entry is inferred by the writer).
    chain: Option<i64>,
    inference_dropped: &'a AtomicBool,
    report: ImportReport,
}

impl Writer<'_> {
    fn write(&mut self, batch: Batch) -> Result<()> {
        let inferred = match (self.chain, batch.shape) {
            (Some(from_rev), Some(shape)) => Some(Inferred { from_rev, shape }),
            _ => None,
        };
        let written =
            self.ledger
                .write(self.collection, batch.entries, inferred, self.provenance)?;
        self.chain = written.used_inferred.then_some(written.rev);
        if self.chain.is_none() {
            self.inference_dropped.store(true, Ordering::Relaxed);
        }
        for outcome in written.outcomes {
            match outcome {
                RecordOutcome::Recorded { proposed, .. } => {
                    self.report.recorded += 1;
                    for field in proposed {
                        if !self.report.proposed.contains(&field) {
                            self.report.proposed.push(field);
                        }
                    }
                }
                RecordOutcome::Rejected { .. } => self.report.rejected += 1,
            }
        }
        Ok(())
    }
}

/// The reading thread: detects the format, reads every entry into `batcher`, and hands over
/// what was read before an error too.
fn read_file(opened: File, file: &Path, mut batcher: Batcher) -> Result<()> {
    let mut reader = BufReader::with_capacity(
        READ_BUFFER,
        Counting {
            inner: opened,
            bytes: batcher.read.clone(),
        },
    );
    let format = ImportFormat::detect(file, &mut reader)?;
    let outcome = match format {
        ImportFormat::JsonLines => json_lines(&mut reader, file, &mut batcher),
        ImportFormat::JsonArray => json_array(&mut reader, file, &mut batcher),
        ImportFormat::Csv => csv_rows(&mut reader, &mut batcher),
    };
    // What was read before an error is recorded, not lost.
    let flushed = batcher.flush();
    outcome.and(flushed)
}

/// Reads JSON lines, each handed over where it lies in the read buffer: only a line that spans
/// two fills of the buffer is copied (into `spanning`), which spares a copy of the whole file.
fn json_lines(reader: &mut impl BufRead, file: &Path, batcher: &mut Batcher) -> Result<()> {
    let mut spanning = Vec::new();
    let mut number = 0usize;
    loop {
        let buffer = reader.fill_buf().map_err(io(file))?;
        if buffer.is_empty() {
            // The last line, without a line break.
            if spanning.is_empty() {
                return Ok(());
            }
            return json_line(&spanning, number + 1, batcher);
        }
        let Some(end) = memchr::memchr(b'\n', buffer) else {
            spanning.extend_from_slice(buffer);
            let read = buffer.len();
            reader.consume(read);
            continue;
        };
        number += 1;
        if spanning.is_empty() {
            json_line(&buffer[..=end], number, batcher)?;
        } else {
            spanning.extend_from_slice(&buffer[..=end]);
            json_line(&spanning, number, batcher)?;
            spanning.clear();
        }
        reader.consume(end + 1);
    }
}

/// One line of a JSON lines file, its line break included (when it has one): blank lines are
/// skipped.
fn json_line(line: &[u8], number: usize, batcher: &mut Batcher) -> Result<()> {
    if line.iter().all(u8::is_ascii_whitespace) {
        return Ok(());
    }
    let end = line
        .iter()
        .rposition(|b| !matches!(b, b'\n' | b'\r'))
        .map_or(0, |last| last + 1);
    batcher.push_line(&line[..end], Origin::Line(number), line.len())
}

fn json_array(reader: &mut impl Read, file: &Path, batcher: &mut Batcher) -> Result<()> {
    let mut deserializer = serde_json::Deserializer::from_reader(reader);
    let mut failed = None;
    let parsed = Items {
        batcher,
        failed: &mut failed,
    }
    .deserialize(&mut deserializer)
    .and_then(|()| deserializer.end());
    if let Some(error) = failed {
        return Err(error);
    }
    parsed.map_err(|error| LedgerError::Import {
        file: file.to_path_buf(),
        line: error.line(),
        column: error.column(),
        message: format!(
            "not a valid JSON array ({error}); the items before it were recorded; for one entry per line, use JSON lines"
        ),
    })
}

/// Records the items of a JSON array as they are parsed.
struct Items<'b, 'a> {
    batcher: &'b mut Batcher<'a>,
    /// A ledger error met while writing, which ends the parse.
    failed: &'b mut Option<LedgerError>,
}

impl<'de> DeserializeSeed<'de> for Items<'_, '_> {
    type Value = ();

    fn deserialize<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for Items<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON array of entries")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let mut number = 0usize;
        while let Some(value) = seq.next_element::<Value>()? {
            number += 1;
            // Roughly the item's size, for batching by bytes; exact size costs a serialization.
            let bytes = approximate_size(&value);
            if let Err(error) = self
                .batcher
                .push(Input::Value(value), Origin::Item(number), bytes)
            {
                *self.failed = Some(error);
                return Err(serde::de::Error::custom("the ledger refused a write"));
            }
        }
        Ok(())
    }
}

fn csv_rows(reader: &mut impl Read, batcher: &mut Batcher) -> Result<()> {
    let mut csv = csv::ReaderBuilder::new().flexible(true).from_reader(reader);
    let headers = csv.headers()?.clone();
    let mut record = csv::StringRecord::new();
    loop {
        match csv.read_record(&mut record) {
            Ok(false) => return Ok(()),
            Ok(true) => {}
            Err(error) => {
                let line = error.position().map_or(0, |p| p.line());
                let reason = format!("not a readable CSV row ({error})");
                batcher.push(
                    Input::Unreadable {
                        text: String::new(),
                        reason,
                    },
                    Origin::Line(line as usize),
                    0,
                )?;
                continue;
            }
        }
        let line = record.position().map_or(0, |p| p.line());
        let bytes = record.as_slice().len();
        let input = if record.len() == headers.len() {
            let mut entry = Map::new();
            for (name, cell) in headers.iter().zip(record.iter()) {
                if let Some(value) = csv_cell(cell) {
                    entry.insert(name.to_owned(), value);
                }
            }
            Input::Value(Value::Object(entry))
        } else {
            Input::Unreadable {
                text: record.iter().collect::<Vec<_>>().join(","),
                reason: format!(
                    "the row has {} fields, the header {}; quote cells that contain commas",
                    record.len(),
                    headers.len()
                ),
            }
        };
        batcher.push(input, Origin::Line(line as usize), bytes)?;
    }
}

/// About how many bytes of JSON text a value takes, without writing it.
fn approximate_size(value: &Value) -> usize {
    match value {
        Value::String(s) => s.len() + 2,
        Value::Array(items) => 2 + items.iter().map(approximate_size).sum::<usize>(),
        Value::Object(map) => {
            2 + map
                .iter()
                .map(|(k, v)| k.len() + 4 + approximate_size(v))
                .sum::<usize>()
        }
        _ => 8,
    }
}

/// A CSV cell as a JSON value (see the module docs); `None` for an empty cell.
fn csv_cell(cell: &str) -> Option<Value> {
    if cell.is_empty() {
        return None;
    }
    Some(match cell {
        "true" => Value::Bool(true),
        "false" => Value::Bool(false),
        _ => match serde_json::from_str::<serde_json::Number>(cell) {
            // Only plain JSON numbers: "007" or "1e999" stay strings.
            Ok(number) if number.to_string() == cell || number.is_f64() => match number.as_f64() {
                Some(f) if f.is_finite() => Value::Number(number),
                _ => Value::String(cell.to_owned()),
            },
            _ => Value::String(cell.to_owned()),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn csv_cells_are_typed_as_a_reader_would() {
        assert_eq!(csv_cell(""), None);
        assert_eq!(csv_cell("42"), Some(json!(42)));
        assert_eq!(csv_cell("-1.5"), Some(json!(-1.5)));
        assert_eq!(csv_cell("true"), Some(json!(true)));
        assert_eq!(csv_cell("007"), Some(json!("007")));
        assert_eq!(csv_cell("Ada"), Some(json!("Ada")));
        assert_eq!(csv_cell("1e999"), Some(json!("1e999")));
    }
}
