//! The practice index: each converged performance's practice, kept once in
//! `.improv/practice/<shape>.jsonl` (one file per skeleton shape, one line per performance), so
//! learning after a performance reads that performance's events and its shape's practices
//! rather than every converged log of the stage. Built from the log the first time it is needed
//! (a stage from before the index), then appended to by [`learn_after`].

use crate::RoutineError;
use crate::guard::Settled;
use crate::learn::{Learned, learn_one, shape};
use crate::practice::{Practice, from_log, practice_in};
use crate::routine::Repertoire;
use std::io::Write;
use std::path::{Path, PathBuf};

/// The folder of the index under a stage's state folder.
pub const DIR: &str = "practice";

/// The practice index of one stage.
pub struct Index {
    dir: PathBuf,
}

impl Index {
    /// The index under `state_dir` (the stage's `.improv/`); nothing is read yet.
    pub fn open(state_dir: &Path) -> Index {
        Index {
            dir: state_dir.join(DIR),
        }
    }

    fn io(&self, path: &Path) -> impl Fn(std::io::Error) -> RoutineError + '_ {
        let path = path.to_path_buf();
        move |e| RoutineError::Io {
            path: path.clone(),
            message: e.to_string(),
        }
    }

    /// The file of `p`'s shape: named by its FNV-1a fingerprint (it tells shapes apart only).
    fn file_of(&self, p: &Practice) -> PathBuf {
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for byte in shape(p).bytes() {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
        self.dir.join(format!("{hash:016x}.jsonl"))
    }

    fn read(&self, path: &Path) -> Result<Vec<Practice>, RoutineError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(self.io(path)(e)),
        };
        text.lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
            .map(|(i, l)| {
                serde_json::from_str(l).map_err(|e| RoutineError::Invalid {
                    path: path.to_path_buf(),
                    line: i + 1,
                    message: format!("{e}; delete the folder to rebuild it from the log"),
                })
            })
            .collect()
    }

    /// Adds `p` to its shape's file unless it is there; returns that shape's practices.
    pub fn add(&self, p: &Practice) -> Result<Vec<Practice>, RoutineError> {
        let path = self.file_of(p);
        let mut group = self.read(&path)?;
        if group.iter().any(|q| q.performance == p.performance) {
            return Ok(group);
        }
        std::fs::create_dir_all(&self.dir).map_err(self.io(&self.dir))?;
        let line = serde_json::to_string(p).map_err(|e| RoutineError::Write(e.to_string()))?;
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(self.io(&path))?;
        writeln!(file, "{line}").map_err(self.io(&path))?;
        group.push(p.clone());
        Ok(group)
    }

    /// Every practice in the index, oldest first within each shape.
    pub fn all(&self) -> Result<Vec<Practice>, RoutineError> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(self.io(&self.dir)(e)),
        };
        let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
        paths.sort();
        let mut all = Vec::new();
        for path in paths {
            all.extend(self.read(&path)?);
        }
        Ok(all)
    }
}

/// Learns after the performance `id` ended converged: its practice joins the index (built from
/// the log first when there is none) and the routines beside the stage learn from its shape's
/// practices. A performance that does not teach changes nothing.
pub fn learn_after(
    stage_dir: &Path,
    state_dir: &Path,
    id: &str,
    auto_approve: bool,
    settled: Option<&dyn Settled>,
) -> Result<Learned, RoutineError> {
    let log = improv_log::EventLog::open(state_dir)?;
    let Ok(new) = practice_in(&log, id)? else {
        return Ok(Learned::default());
    };
    let index = Index::open(state_dir);
    if !index.dir.exists() {
        for p in from_log(&log)? {
            index.add(&p)?;
        }
    }
    let group = index.add(&new)?;
    let mut repertoire = Repertoire::open(stage_dir)?;
    let all = || index.all();
    learn_one(&mut repertoire, &new, &group, &all, auto_approve, settled)
}
