//! Export: every entry of a collection written out as JSON lines or CSV, read row by row so
//! memory stays flat whatever the collection's size.

use super::{Entry, Ledger, LedgerError, Result, check_collection_name, query::row_to_entry};
use serde_json::Value;
use std::io::Write;
use std::path::PathBuf;

impl Ledger {
    /// Writes every entry of a collection as JSON lines; returns how many.
    pub fn export_jsonl(&self, collection: &str, out: &mut dyn Write) -> Result<u64> {
        let mut n = 0;
        self.for_each_entry(collection, |entry| {
            // Valid JSON text has no raw newlines inside strings, so joining lines is safe.
            let line = entry.text.replace(['\n', '\r'], " ");
            out.write_all(line.as_bytes())?;
            out.write_all(b"\n")?;
            n += 1;
            Ok(())
        })?;
        Ok(n)
    }

    /// Writes every entry of a collection as CSV: provenance columns, then one column per
    /// top-level field (most present first); nested values as JSON text. Returns how many.
    pub fn export_csv(&self, collection: &str, out: &mut dyn Write) -> Result<u64> {
        let info = self.collection(collection)?;
        let mut fields: Vec<(String, u64)> = info
            .shape
            .object
            .as_ref()
            .map(|o| o.fields.iter().map(|(k, s)| (k.clone(), s.count)).collect())
            .unwrap_or_default();
        fields.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        let mut writer = csv::Writer::from_writer(out);
        let mut header = vec!["id", "performance", "actor", "at"];
        header.extend(fields.iter().map(|(k, _)| k.as_str()));
        writer.write_record(&header)?;
        let mut n = 0;
        self.for_each_entry(collection, |entry| {
            let mut record = vec![
                entry.id.to_string(),
                entry.performance.clone(),
                entry.actor.clone(),
                entry.at.clone(),
            ];
            for (key, _) in &fields {
                record.push(match entry.value.get(key) {
                    None | Some(Value::Null) => String::new(),
                    Some(Value::String(s)) => s.clone(),
                    Some(other) => other.to_string(),
                });
            }
            writer
                .write_record(&record)
                .map_err(std::io::Error::other)?;
            n += 1;
            Ok(())
        })?;
        writer.flush().map_err(|source| LedgerError::Io {
            path: PathBuf::from("(export)"),
            source,
        })?;
        Ok(n)
    }

    fn for_each_entry(
        &self,
        collection: &str,
        mut each: impl FnMut(&Entry) -> std::io::Result<()>,
    ) -> Result<()> {
        check_collection_name(collection)?;
        let guard = self.lock();
        let mut statement = guard.conn.prepare(
            "SELECT id, json(body), raw, performance, actor, at FROM ledger_entries WHERE collection = ?1 ORDER BY id",
        )?;
        let rows = statement.query_map([collection], row_to_entry(collection))?;
        for row in rows {
            each(&row??).map_err(|source| LedgerError::Io {
                path: PathBuf::from("(export)"),
                source,
            })?;
        }
        Ok(())
    }
}
