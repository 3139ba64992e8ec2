//! The improv ledger: collections of JSON entries that actors record with no schema declared,
//! whose shape is inferred on every write and, once stable, settled into an enforced schema that
//! flows back into the actors' context. "The schema is not the starting point, it precipitates
//! from practice."
//!
//! Reading order: [`path`] (how fields are named), [`shape`] (inference and its merge),
//! [`schema`] (a shape precipitated into JSON Schema, DDL and context text), [`ledger`] (the
//! SQLite-backed store: record, query, settle, evolve, export), [`import`] (streaming import of
//! JSON lines, JSON arrays and CSV), [`props`] (the `record`
//! and `query` props actors use) and, with the `cli` feature, [`cli`] (`improv ledger`).
//!
//! ```no_run
//! use improv_ledger::{Ledger, Provenance, Query, Op};
//! use serde_json::json;
//! # fn main() -> Result<(), improv_ledger::LedgerError> {
//! let ledger = Ledger::open(".improv/ledger.db")?;
//! let who = Provenance::new("perf-1", "lead");
//! ledger.record("leads", json!({"name": "Ada", "email": "ada@example.org"}), &who)?;
//! let found = ledger.query("leads", &Query::new().filter("name", Op::Eq, json!("Ada"))?)?;
//! # Ok(()) }
//! ```

#[cfg(feature = "cli")]
pub mod cli;
pub mod clock;
pub mod import;
mod jsonb;
pub mod ledger;
pub mod path;
pub mod postgres;
pub mod props;
pub mod schema;
pub mod shape;
mod tape;

pub use clock::{Clock, ManualClock, SystemClock};
pub use import::{ImportFormat, ImportProgress};
pub use ledger::{
    CollectionInfo, Decision, Entry, Evolution, Filter, ImportReport, Input, LEDGER_FILE, Ledger,
    LedgerError, LedgerOptions, Op, Proposal, Provenance, Query, RecordOutcome, Reject, Settlement,
    Stability,
};
pub use path::{FieldPath, PathError};
pub use props::{props, props_in_store};
pub use shape::{RenameSuspect, Shape, rename_suspects};
