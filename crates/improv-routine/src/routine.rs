//! A routine as the director reads it: `routines/NAME.toml` beside the stage, with its
//! parameters, intent template, steps (prop, argument templates, guard), the checks that vouched
//! for it, where it came from and its record. Read and written here, and nowhere else.

use crate::RoutineError;
use crate::file::{self, Decision};
use crate::guard::Guard;
use crate::template::Template;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// The folder of routines beside a stage file.
pub const DIR: &str = "routines";

/// The director's word on a routine.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Learned, waiting for the director.
    #[default]
    Proposed,
    /// Offered to actors as a prop and replayed for intents it matches.
    Approved,
    /// Not wanted: kept so the same skeleton is not proposed again.
    Rejected,
    /// Was approved; no longer used (by the director, or after repeated guard failures).
    Retired,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Proposed => "proposed",
            Status::Approved => "approved",
            Status::Rejected => "rejected",
            Status::Retired => "retired",
        }
    }
}

/// How settled the practice behind a routine is, like a ledger collection's shape.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stability {
    /// Two converged performances agree.
    #[default]
    Fluid,
    /// [`SETTLING_RUNS`] or more agree and none contradicted it since.
    Settling,
    /// [`STABLE_RUNS`] or more agree and none contradicted it since.
    Stable,
}

/// Converged runs that make a routine settling, and stable.
pub const SETTLING_RUNS: usize = 3;
pub const STABLE_RUNS: usize = 5;

impl Stability {
    /// The stability `runs` agreeing performances give, none contradicting since.
    pub fn of(runs: usize) -> Stability {
        match runs {
            n if n >= STABLE_RUNS => Stability::Stable,
            n if n >= SETTLING_RUNS => Stability::Settling,
            _ => Stability::Fluid,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Stability::Fluid => "fluid",
            Stability::Settling => "settling",
            Stability::Stable => "stable",
        }
    }
}

/// A parameter: a hole in the intent template and the steps.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Parameter {
    pub name: String,
    /// The values it had in the performances it was learned from.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub examples: Vec<String>,
}

/// One recorded step: a prop call with argument templates and what its result must look like.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Step {
    pub prop: String,
    pub guard: Guard,
    /// The call's arguments; every string may hold `{parameter}` holes.
    #[serde(default)]
    pub args: serde_json::Map<String, serde_json::Value>,
}

/// Where a routine came from.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Provenance {
    /// The fingerprint of the learned skeleton: how the learner finds this routine again, so an
    /// edited routine is not proposed a second time.
    pub skeleton: String,
    /// The converged performances that agree with it.
    pub performances: Vec<String>,
    /// Converged performances of an intent it matches that did something else.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub contradicted_by: Vec<String>,
}

/// How a routine has fared since it was approved.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Record {
    /// Times it was replayed.
    #[serde(default)]
    pub uses: u32,
    /// Times a step deviated from its guard or the checks failed, and an actor took over.
    #[serde(default)]
    pub fallbacks: u32,
    /// Fallbacks since the last success; at [`RETIRE_AFTER_FAILURES`] it is retired.
    #[serde(default)]
    pub failures_in_a_row: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_success: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_used: Option<String>,
    /// When the director approved it (or improv first saw it approved): where its disuse is
    /// counted from until it is first used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approved_at: Option<String>,
    /// Performances in a row whose intent it matched but that it did not serve: another routine
    /// was chosen, it could not be replayed, or its replay deviated or failed the checks. At
    /// `[routines] retire_unused` it is retired; a replay that holds starts the count again.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub unserved_matches: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// Fallbacks in a row that retire an approved routine.
pub const RETIRE_AFTER_FAILURES: u32 = 3;

/// A routine, as its file says it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Routine {
    pub name: String,
    pub description: String,
    pub status: Status,
    pub stability: Stability,
    /// The intents it serves, with `{parameter}` holes: an intent it matches is performed by
    /// replaying the steps.
    pub intent: String,
    #[serde(default)]
    pub parameters: Vec<Parameter>,
    /// The checks that passed in every performance it was learned from.
    #[serde(default)]
    pub checks: Vec<String>,
    /// Why it was retired, when it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retired_because: Option<String>,
    pub provenance: Provenance,
    #[serde(default)]
    pub record: Record,
    pub steps: Vec<Step>,
}

/// A step ready to run: the prop and its arguments with the parameters filled in.
#[derive(Clone, Debug, PartialEq)]
pub struct Call {
    pub prop: String,
    pub arguments: serde_json::Value,
    pub guard: Guard,
}

impl Routine {
    /// The parameters of the intent template when `intent` matches it.
    pub fn bind(&self, intent: &str) -> Option<BTreeMap<String, String>> {
        Template::parse(&self.intent).ok()?.bind(intent)
    }

    /// The steps with `values` filled in; a parameter without a value is an error naming it.
    pub fn calls(&self, values: &BTreeMap<String, String>) -> Result<Vec<Call>, RoutineError> {
        self.steps
            .iter()
            .map(|step| {
                let mut args = serde_json::Value::Object(step.args.clone());
                fill(&mut args, values)?;
                Ok(Call {
                    prop: step.prop.clone(),
                    arguments: args,
                    guard: step.guard.clone(),
                })
            })
            .collect()
    }

    /// Whether the intent template binds every parameter the steps use, so a matching intent can
    /// be performed without a model.
    pub fn replayable(&self) -> bool {
        let Ok(intent) = Template::parse(&self.intent) else {
            return false;
        };
        let bound = intent.holes();
        self.parameters
            .iter()
            .all(|p| bound.contains(&p.name.as_str()))
    }

    /// The prop name actors call it by.
    pub fn prop_name(&self) -> String {
        format!("routine.{}", self.name)
    }

    /// Notes a replay: `ok` when every step held and the checks passed. Retires it after
    /// [`RETIRE_AFTER_FAILURES`] fallbacks in a row, saying so.
    pub fn note_use(&mut self, ok: bool, now: &str) {
        self.record.uses += 1;
        self.record.last_used = Some(now.to_string());
        if ok {
            self.record.failures_in_a_row = 0;
            self.record.last_success = Some(now.to_string());
            return;
        }
        self.record.fallbacks += 1;
        self.record.failures_in_a_row += 1;
        if self.record.failures_in_a_row >= RETIRE_AFTER_FAILURES && self.status == Status::Approved
        {
            self.status = Status::Retired;
            self.retired_because = Some(format!(
                "{} replays in a row deviated or failed the checks (the last on {now})",
                self.record.failures_in_a_row
            ));
        }
    }

    /// Notes a performance whose intent it matched: `served` when it was replayed and held.
    /// Unserved, the count of such performances in a row grows, and at `retire_unused` an
    /// approved routine is retired, saying why; `true` then. A replay that holds resets it.
    pub fn note_match(&mut self, served: bool, retire_unused: u32, now: &str) -> bool {
        if served {
            self.record.unserved_matches = 0;
            return false;
        }
        self.record.unserved_matches += 1;
        if self.record.unserved_matches < retire_unused || self.status != Status::Approved {
            return false;
        }
        self.status = Status::Retired;
        self.retired_because = Some(format!(
            "its intent matched {} performances in a row that it did not serve: another routine was chosen, it could not be replayed, or its replay deviated or failed the checks (the last on {now}); `[routines] retire_unused` in the stage file sets how many",
            self.record.unserved_matches
        ));
        true
    }

    /// Approves it, starting the clock of its disuse now.
    pub fn approve(&mut self, now: &str) {
        self.status = Status::Approved;
        self.retired_because = None;
        self.record.approved_at = Some(now.to_string());
    }

    /// Whether an approved routine has gone unused for `after` by `now`: retired, saying since
    /// when, and `true`. An approved routine with no time to count from (approved by editing its
    /// file) starts counting now. A time that does not parse counts as none.
    pub fn retire_if_unused(&mut self, now: OffsetDateTime, after: Duration) -> bool {
        if self.status != Status::Approved {
            return false;
        }
        let since = [&self.record.last_used, &self.record.approved_at]
            .into_iter()
            .flatten()
            .find_map(|t| {
                OffsetDateTime::parse(t, &Rfc3339)
                    .ok()
                    .map(|at| (t.clone(), at))
            });
        let Some((since, at)) = since else {
            self.record.approved_at = Some(rfc3339(now));
            return false;
        };
        if now - at < after {
            return false;
        }
        let used = if self.record.last_used.is_some() {
            "last used"
        } else {
            "approved"
        };
        self.status = Status::Retired;
        self.retired_because = Some(format!(
            "unused for longer than {} ({used} {since}); `[routines] retire_after` in the stage file sets how long",
            humantime::format_duration(after)
        ));
        true
    }

    /// What a listing shows of it (`improv routines list --json`, the API's `GET /routines`):
    /// name, status, stability, intent, steps, the runs behind it and its record.
    pub fn summary(&self) -> serde_json::Value {
        serde_json::json!({
            "name": self.name,
            "status": self.status.as_str(),
            "stability": self.stability.as_str(),
            "intent": self.intent,
            "steps": self.steps.len(),
            "performances": self.provenance.performances.len(),
            "uses": self.record.uses,
            "fallbacks": self.record.fallbacks,
            "last_success": self.record.last_success,
            "last_used": self.record.last_used,
            "retired_because": self.retired_because,
        })
    }

    /// The file's text.
    pub fn to_toml(&self) -> Result<String, RoutineError> {
        let body = toml::to_string(self).map_err(|e| RoutineError::Write(e.to_string()))?;
        Ok(format!(
            "# A routine improv learned from converged performances. Edit freely; set status to\n# approved, rejected or retired (or use `improv routines approve|reject|retire`).\n{body}"
        ))
    }

    /// Reads `path`; a problem names the file and the line.
    pub fn read(path: &Path) -> Result<Routine, RoutineError> {
        let text = std::fs::read_to_string(path).map_err(|e| RoutineError::Io {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        Routine::parse(&text, path)
    }

    /// Reads a routine from `text`, the content of `path`; a problem names the file and line.
    fn parse(text: &str, path: &Path) -> Result<Routine, RoutineError> {
        let invalid = |line: usize, message: String| RoutineError::Invalid {
            path: path.to_path_buf(),
            line,
            message,
        };
        let routine: Routine = toml::from_str(text).map_err(|e| {
            let line = e.span().map_or(1, |s| line_of(text, s.start));
            invalid(line, e.message().trim().to_string())
        })?;
        let line_of_key = |key: &str| {
            text.lines()
                .position(|l| l.trim_start().starts_with(key))
                .map_or(1, |i| i + 1)
        };
        if let Err(reason) = file::check_name(&routine.name) {
            return Err(invalid(
                line_of_key("name"),
                format!(
                    "the name `{}` cannot be a file name: {reason}; use letters, digits, `-` and `_`",
                    routine.name
                ),
            ));
        }
        if Template::parse(&routine.intent).is_err() || routine.intent.trim().is_empty() {
            return Err(invalid(
                line_of_key("intent"),
                "`intent` is not a template: write the intent with `{parameter}` holes, `{{`/`}}` for braces".into(),
            ));
        }
        if routine.steps.is_empty() {
            return Err(invalid(
                1,
                "a routine needs at least one `[[steps]]`".into(),
            ));
        }
        let known: Vec<&str> = routine.parameters.iter().map(|p| p.name.as_str()).collect();
        for hole in Template::parse(&routine.intent)
            .iter()
            .flat_map(|t| t.holes())
        {
            if !known.contains(&hole) {
                return Err(invalid(
                    line_of_key("intent"),
                    format!("`{{{hole}}}` is not among the `[[parameters]]`; add it there"),
                ));
            }
        }
        Ok(routine)
    }

    /// Writes the routine to `dir/NAME.toml`, replacing the file atomically under its lock
    /// (see [`crate::file`]). What the file held is replaced whatever it was: a change made
    /// from what the file holds now is [`Repertoire::update`].
    pub fn write(&self, dir: &Path) -> Result<PathBuf, RoutineError> {
        let text = self.to_toml()?;
        file::update(dir, &self.name, |_| Ok(Decision::Write(text.clone())))
    }
}

/// Fills the holes of every string in `value`.
fn fill(
    value: &mut serde_json::Value,
    values: &BTreeMap<String, String>,
) -> Result<(), RoutineError> {
    match value {
        serde_json::Value::String(s) => *s = Template::parse(s)?.render(values)?,
        serde_json::Value::Array(items) => {
            for v in items {
                fill(v, values)?;
            }
        }
        serde_json::Value::Object(map) => {
            for v in map.values_mut() {
                fill(v, values)?;
            }
        }
        _ => {}
    }
    Ok(())
}

/// `at` as the records write times: RFC 3339, UTC, milliseconds.
pub fn rfc3339(at: OffsetDateTime) -> String {
    let at = at.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        at.year(),
        at.month() as u8,
        at.day(),
        at.hour(),
        at.minute(),
        at.second(),
        at.millisecond()
    )
}

/// The 1-based line of byte offset `at`.
fn line_of(text: &str, at: usize) -> usize {
    text[..at.min(text.len())].matches('\n').count() + 1
}

/// The routines of a stage: every `routines/*.toml` beside its stage file.
#[derive(Debug, Default)]
pub struct Repertoire {
    pub dir: PathBuf,
    pub routines: Vec<Routine>,
    /// The file stem of each of `routines`, in the same order: `routines/STEM.toml`. A routine's
    /// file, not the `name` inside it, is what it is found and written by.
    stems: Vec<String>,
}

/// What [`Repertoire::add`] did with a proposal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Added {
    /// Written to a file of its own; the routine's name (its file's stem).
    New(String),
    /// A routine with the same skeleton was already on disk (another learner proposed it since
    /// this repertoire was read): nothing was written; the file stem of that routine, now in
    /// this repertoire.
    Known(String),
}

/// Every routine in `dir` (`*.toml`, not hidden), in file name order, with its file stem. A
/// missing folder has none; an unreadable file is an error naming it.
fn read_all(dir: &Path) -> Result<(Vec<Routine>, Vec<String>), RoutineError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok((Vec::new(), Vec::new()));
        }
        Err(e) => {
            return Err(RoutineError::Io {
                path: dir.to_path_buf(),
                message: e.to_string(),
            });
        }
    };
    let mut paths: Vec<(PathBuf, String)> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .filter_map(|p| {
            let stem = p.file_stem()?.to_str()?.to_string();
            (!stem.starts_with('.')).then_some((p, stem))
        })
        .collect();
    paths.sort();
    let mut routines = Vec::with_capacity(paths.len());
    let mut stems = Vec::with_capacity(paths.len());
    for (path, stem) in paths {
        routines.push(Routine::read(&path)?);
        stems.push(stem);
    }
    Ok((routines, stems))
}

impl Repertoire {
    /// Reads `stage_dir/routines/`. A missing folder is an empty repertoire; an unreadable file
    /// is an error naming it.
    pub fn open(stage_dir: &Path) -> Result<Repertoire, RoutineError> {
        let dir = stage_dir.join(DIR);
        let (routines, stems) = read_all(&dir)?;
        Ok(Repertoire {
            dir,
            routines,
            stems,
        })
    }

    /// The routine `given` names, and its file stem: the routine in `given.toml` when there is
    /// one, otherwise the one routine whose `name` is `given`. `Err` says when none is, or
    /// when several are and which files they are in. For a stem the program kept
    /// ([`Repertoire::entries`]); a name a director typed is [`Repertoire::find_named`]'s.
    pub fn find(&self, given: &str) -> Result<(&str, &Routine), RoutineError> {
        let both = || self.entries();
        if let Some(found) = both().find(|(stem, _)| *stem == given) {
            return Ok(found);
        }
        let named: Vec<(&str, &Routine)> = both().filter(|(_, r)| r.name == given).collect();
        match named.as_slice() {
            [one] => Ok(*one),
            [] => Err(RoutineError::NotFound {
                name: given.to_string(),
                dir: self.dir.clone(),
            }),
            several => Err(RoutineError::Ambiguous {
                name: given.to_string(),
                dir: self.dir.clone(),
                files: several.iter().map(|(s, _)| format!("{s}.toml")).collect(),
            }),
        }
    }

    /// The routine a director names `given` (`improv routines approve NAME`), as
    /// [`Repertoire::find`] finds it, but `Err` ([`RoutineError::Ambiguous`], naming the files)
    /// also when `given` is one file's stem and another file's `name`: `list` shows names, so
    /// either could be meant. `STEM.toml` names the routine in that file and nothing else: the
    /// address that stays unambiguous when files hold each other's names.
    pub fn find_named(&self, given: &str) -> Result<(&str, &Routine), RoutineError> {
        if let Some(stem) = given.strip_suffix(".toml") {
            return self.entries().find(|(s, _)| *s == stem).ok_or_else(|| {
                RoutineError::NotFound {
                    name: given.to_string(),
                    dir: self.dir.clone(),
                }
            });
        }
        let found = self.find(given)?;
        let mut files: Vec<String> = self
            .entries()
            .filter(|(stem, r)| *stem == given || r.name == given)
            .map(|(stem, _)| format!("{stem}.toml"))
            .collect();
        if files.len() > 1 {
            files.sort();
            return Err(RoutineError::Ambiguous {
                name: given.to_string(),
                dir: self.dir.clone(),
                files,
            });
        }
        Ok(found)
    }

    /// Every routine with its file stem (`routines/STEM.toml`), in file order: what a caller
    /// keeps to find or change that routine again, since two files may hold one `name`.
    pub fn entries(&self) -> impl Iterator<Item = (&str, &Routine)> {
        self.stems.iter().map(String::as_str).zip(&self.routines)
    }

    /// The file stem [`Repertoire::update`] writes for `given`: [`Repertoire::find`]'s, or
    /// `given` itself when it finds none (a file another writer may have made since this
    /// repertoire was read). `Err` when several files hold the name `given`: writing any one
    /// of them would be a guess.
    fn stem_for(&self, given: &str) -> Result<String, RoutineError> {
        match self.find(given) {
            Ok((stem, _)) => Ok(stem.to_string()),
            Err(RoutineError::NotFound { .. }) => Ok(given.to_string()),
            Err(e) => Err(e),
        }
    }

    /// Keeps `routine`, read from `stem`'s file, as this repertoire's copy of it.
    fn remember(&mut self, stem: &str, routine: Routine) {
        match self.stems.iter().position(|s| s == stem) {
            Some(i) => self.routines[i] = routine,
            None => {
                self.stems.push(stem.to_string());
                self.routines.push(routine);
            }
        }
    }

    /// The routine [`Repertoire::find`] finds for `given`; `None` when none or several are.
    pub fn get(&self, given: &str) -> Option<&Routine> {
        self.find(given).ok().map(|(_, r)| r)
    }

    /// [`Repertoire::get`], to change this repertoire's copy ([`Repertoire::save`] writes it).
    pub fn get_mut(&mut self, given: &str) -> Option<&mut Routine> {
        let stem = self.find(given).ok()?.0.to_string();
        let i = self.stems.iter().position(|s| *s == stem)?;
        self.routines.get_mut(i)
    }

    /// The approved routines.
    pub fn approved(&self) -> impl Iterator<Item = &Routine> {
        self.routines
            .iter()
            .filter(|r| r.status == Status::Approved)
    }

    /// The approved routine that performs `intent` without a model, its file stem and its
    /// parameters: the most settled of those whose template matches and binds every parameter.
    pub fn for_intent(&self, intent: &str) -> Option<(&str, &Routine, BTreeMap<String, String>)> {
        self.entries()
            .filter(|(_, r)| r.status == Status::Approved && r.replayable())
            .filter_map(|(stem, r)| r.bind(intent).map(|v| (stem, r, v)))
            .max_by_key(|(_, r, _)| (r.stability, r.provenance.performances.len()))
    }

    /// Notes a performance of `intent` for every approved routine whose template matches it,
    /// other than the one in the file stem `chosen`, the one replayed (which notes its own
    /// outcome with [`Routine::note_match`]): none of them served it. Writes each one noted;
    /// returns the file stems of those retired by it (see [`Routine::note_match`]).
    pub fn note_unserved(
        &mut self,
        intent: &str,
        chosen: Option<&str>,
        retire_unused: u32,
        now: &str,
    ) -> Result<Vec<String>, RoutineError> {
        let matches = |routine: &Routine| {
            routine.status == Status::Approved
                && routine.replayable()
                && routine.bind(intent).is_some()
        };
        let mut retired = Vec::new();
        let candidates: Vec<String> = self
            .entries()
            .filter(|(stem, r)| Some(*stem) != chosen && matches(r))
            .map(|(stem, _)| stem.to_string())
            .collect();
        for name in candidates {
            // Decided again on the file as it is now: another writer may have counted,
            // retired or edited it since this repertoire was read.
            let mut retired_now = false;
            self.update(&name, |routine| {
                let matched = matches(routine);
                retired_now = matched && routine.note_match(false, retire_unused, now);
                matched
            })?;
            if retired_now {
                retired.push(name);
            }
        }
        Ok(retired)
    }

    /// Changes routine `name` (found as [`Repertoire::find`] does) as its file holds it now,
    /// not as this repertoire read it:
    /// `change` is run on the file's current content (again, when the file changes before
    /// the write; see [`crate::file`]) and returns whether it changed anything; if so the
    /// file is rewritten. This repertoire's copy becomes the file's. `Ok(false)` when the
    /// routine has no file (any more); `Err` when `name` is no file's stem and several files
    /// hold that name (pass the stem, from [`Repertoire::entries`] or [`Repertoire::find`]).
    pub fn update(
        &mut self,
        name: &str,
        mut change: impl FnMut(&mut Routine) -> bool,
    ) -> Result<bool, RoutineError> {
        let stem = self.stem_for(name)?;
        let path = self.dir.join(format!("{stem}.toml"));
        let mut result = None;
        file::update(&self.dir, &stem, |bytes| {
            result = None;
            let Some(bytes) = bytes else {
                return Ok(Decision::Keep);
            };
            let text = String::from_utf8_lossy(bytes);
            let mut routine = Routine::parse(&text, &path)?;
            let changed = change(&mut routine);
            let decision = if changed {
                Decision::Write(routine.to_toml()?)
            } else {
                Decision::Keep
            };
            result = Some((routine, changed));
            Ok(decision)
        })?;
        let Some((routine, changed)) = result else {
            if let Some(i) = self.stems.iter().position(|s| *s == stem) {
                self.stems.remove(i);
                self.routines.remove(i);
            }
            return Ok(false);
        };
        self.remember(&stem, routine);
        Ok(changed)
    }

    /// Retires the approved routines unused for `after` by `now`, writing each file (with why)
    /// and every routine whose clock started now; returns the file stems of those retired.
    pub fn retire_unused(
        &mut self,
        now: OffsetDateTime,
        after: Duration,
    ) -> Result<Vec<String>, RoutineError> {
        let mut retired = Vec::new();
        let approved: Vec<String> = self
            .routines
            .iter()
            .zip(&self.stems)
            .filter(|(r, _)| r.status == Status::Approved)
            .map(|(_, stem)| stem.clone())
            .collect();
        for name in approved {
            // Decided on the file as it is now (see `update`): a director's approval or
            // retirement made since this repertoire was read is not overwritten.
            let mut retired_now = false;
            self.update(&name, |routine| {
                let before = routine.record.approved_at.clone();
                retired_now = routine.retire_if_unused(now, after);
                retired_now || routine.record.approved_at != before
            })?;
            if retired_now {
                retired.push(name);
            }
        }
        Ok(retired)
    }

    /// Writes a new routine to a file of its own and adds it to this repertoire: under its
    /// name, or the next free one (`NAME-2`, `NAME-3`, …) when that is taken, which another
    /// learner may have done since this repertoire was read. Never replaces a file. Under the
    /// routines' lock the folder is read again first: a routine with the same skeleton already
    /// there (two learners proposing at once) is [`Added::Known`] and nothing is written.
    pub fn add(&mut self, mut routine: Routine) -> Result<Added, RoutineError> {
        let dir = self.dir.clone();
        let (on_disk, stem) = file::locked(&dir, || {
            let (on_disk, stems) = read_all(&dir)?;
            let skeleton = &routine.provenance.skeleton;
            if let Some(i) = on_disk
                .iter()
                .position(|r| r.provenance.skeleton == *skeleton)
            {
                return Ok((Some(on_disk[i].clone()), stems[i].clone()));
            }
            let base = routine.name.clone();
            for n in 1.. {
                if n > 1 {
                    routine.name = format!("{base}-{n}");
                }
                let name = &routine.name;
                let taken = on_disk.iter().any(|r| r.name == *name) || stems.contains(name);
                if !taken && file::create(&dir, name, &routine.to_toml()?)? {
                    break;
                }
            }
            Ok((None, routine.name.clone()))
        })?;
        Ok(match on_disk {
            Some(known) => {
                self.remember(&stem, known);
                Added::Known(stem)
            }
            None => {
                self.remember(&stem, routine);
                Added::New(stem)
            }
        })
    }

    /// Writes one routine back to the file it was read from, found as [`Repertoire::find`]
    /// finds `given`.
    pub fn save(&self, given: &str) -> Result<PathBuf, RoutineError> {
        let (stem, routine) = self.find(given)?;
        let text = routine.to_toml()?;
        file::update(&self.dir, stem, |_| Ok(Decision::Write(text.clone())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::guard::Shape;

    fn routine() -> Routine {
        let mut args = serde_json::Map::new();
        args.insert("path".into(), "{file}".into());
        args.insert("content".into(), "fn main() {{}}".into());
        Routine {
            name: "write-file".into(),
            description: "Write {file}".into(),
            status: Status::Proposed,
            stability: Stability::Fluid,
            intent: "Write {file}".into(),
            parameters: vec![Parameter {
                name: "file".into(),
                examples: vec!["a.rs".into(), "b.rs".into()],
            }],
            checks: vec!["build".into()],
            retired_because: None,
            provenance: Provenance {
                skeleton: "00".into(),
                performances: vec!["p1".into(), "p2".into()],
                contradicted_by: Vec::new(),
            },
            record: Record::default(),
            steps: vec![Step {
                prop: "write".into(),
                guard: Guard {
                    ok: true,
                    output: Shape::NonEmpty,
                    settled: None,
                },
                args,
            }],
        }
    }

    /// `stage/routines/FILE.toml` holding [`routine`] named `name` with skeleton `skeleton`.
    fn filed(stage: &Path, file: &str, name: &str, skeleton: &str) {
        let mut r = routine();
        r.name = name.into();
        r.provenance.skeleton = skeleton.into();
        let dir = stage.join(DIR);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("{file}.toml")), r.to_toml().unwrap()).unwrap();
    }

    #[test]
    fn a_routine_is_found_by_its_file_first_then_by_the_name_inside() {
        let stage = tempfile::tempdir().unwrap();
        // `deploy.toml` names itself `build`; `build.toml` is another routine.
        filed(stage.path(), "deploy", "build", "01");
        filed(stage.path(), "build", "other", "02");
        filed(stage.path(), "x1", "twice", "03");
        filed(stage.path(), "x2", "twice", "04");
        let mut repertoire = Repertoire::open(stage.path()).unwrap();
        assert_eq!(
            repertoire.find("build").unwrap().0,
            "build",
            "the file wins"
        );
        assert_eq!(repertoire.find("deploy").unwrap().0, "deploy");
        assert_eq!(repertoire.find("other").unwrap().0, "build");
        let none = repertoire.find("nothing").unwrap_err().to_string();
        assert!(none.contains("no routine named `nothing`"), "{none}");
        let several = repertoire.find("twice").unwrap_err().to_string();
        assert!(several.contains("x1.toml, x2.toml"), "{several}");
        // A change by the file's name reaches that file and no other is written.
        let changed = repertoire
            .update("deploy", |r| {
                r.status = Status::Approved;
                true
            })
            .unwrap();
        assert!(changed);
        let on_disk = Repertoire::open(stage.path()).unwrap();
        assert_eq!(on_disk.find("deploy").unwrap().1.status, Status::Approved);
        assert_eq!(on_disk.find("build").unwrap().1.status, Status::Proposed);
        assert_eq!(on_disk.routines.len(), 4);
    }

    #[test]
    fn a_name_that_cannot_be_a_file_name_is_refused_where_it_would_become_one() {
        let stage = tempfile::tempdir().unwrap();
        let dir = stage.path().join(DIR);
        for bad in ["../escaped", "a/b", ".hidden", "", "nul\0byte"] {
            let mut r = routine();
            r.name = bad.into();
            let err = r.write(&dir).unwrap_err().to_string();
            assert!(
                err.contains("cannot be the name of a routine file"),
                "{bad:?}: {err}"
            );
            let mut repertoire = Repertoire::open(stage.path()).unwrap();
            let err = repertoire.add(r.clone()).unwrap_err().to_string();
            assert!(
                err.contains("cannot be the name of a routine file"),
                "{bad:?}: {err}"
            );
        }
        assert!(!stage.path().join("escaped.toml").exists());
        // A file whose `name` would be refused is named with its line when read.
        let mut r = routine();
        r.name = "../escaped".into();
        let text = toml::to_string(&r).unwrap();
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("edited.toml"), text).unwrap();
        let err = Repertoire::open(stage.path()).unwrap_err().to_string();
        assert!(err.contains("edited.toml:1:"), "{err}");
        assert!(err.contains("cannot be a file name"), "{err}");
    }

    #[test]
    fn a_routine_file_round_trips_and_its_steps_fill_in() {
        let dir = tempfile::tempdir().unwrap();
        let r = routine();
        let path = r.write(dir.path()).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("[[steps]]"), "{text}");
        assert_eq!(Routine::read(&path).unwrap(), r);
        let calls = r.calls(&r.bind("Write x.rs").unwrap()).unwrap();
        assert_eq!(calls[0].arguments["path"], "x.rs");
        assert_eq!(calls[0].arguments["content"], "fn main() {}");
    }

    #[test]
    fn a_bad_file_is_named_with_its_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = routine().write(dir.path()).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(
            &path,
            text.replace("status = \"proposed\"", "status = \"maybe\""),
        )
        .unwrap();
        let err = Routine::read(&path).unwrap_err().to_string();
        let line = text.lines().position(|l| l.starts_with("status")).unwrap() + 1;
        assert!(
            err.starts_with(&format!("{}:{line}:", path.display())),
            "{err}"
        );
    }

    #[test]
    fn an_approved_routine_unused_for_retire_after_is_retired_and_says_since_when() {
        let dir = tempfile::tempdir().unwrap();
        let mut r = routine();
        let t0 = OffsetDateTime::parse("2026-10-01T12:00:00.000Z", &Rfc3339).unwrap();
        let day = Duration::from_secs(86_400);
        r.approve(&rfc3339(t0));
        r.write(&dir.path().join(DIR)).unwrap();
        let mut proposed = routine();
        proposed.name = "other".into();
        proposed.write(&dir.path().join(DIR)).unwrap();
        let mut repertoire = Repertoire::open(dir.path()).unwrap();
        assert!(
            repertoire
                .retire_unused(t0 + 29 * day, 30 * day)
                .unwrap()
                .is_empty()
        );
        // A use restarts the clock.
        // (Retirement decides on the file as it is now, so the use is written, as a replay does.)
        repertoire.routines[1].note_use(true, &rfc3339(t0 + 20 * day));
        repertoire.save("write-file").unwrap();
        assert!(
            repertoire
                .retire_unused(t0 + 31 * day, 30 * day)
                .unwrap()
                .is_empty()
        );
        let retired = repertoire.retire_unused(t0 + 51 * day, 30 * day).unwrap();
        assert_eq!(
            retired,
            vec!["write-file".to_string()],
            "proposed ones are not retired"
        );
        let kept = Repertoire::open(dir.path()).unwrap();
        let r = kept.get("write-file").unwrap();
        assert_eq!(r.status, Status::Retired);
        let why = r.retired_because.as_deref().unwrap();
        assert!(
            why.contains("30days") && why.contains("last used 2026-10-21T12:00:00.000Z"),
            "{why}"
        );
        assert_eq!(kept.get("other").unwrap().status, Status::Proposed);
    }

    #[test]
    fn an_approved_routine_with_no_time_starts_its_clock_when_first_seen() {
        let dir = tempfile::tempdir().unwrap();
        let mut r = routine();
        r.status = Status::Approved;
        r.write(&dir.path().join(DIR)).unwrap();
        let now = OffsetDateTime::parse("2026-10-01T12:00:00.000Z", &Rfc3339).unwrap();
        let mut repertoire = Repertoire::open(dir.path()).unwrap();
        let day = Duration::from_secs(86_400);
        assert!(repertoire.retire_unused(now, day).unwrap().is_empty());
        let kept = Repertoire::open(dir.path()).unwrap();
        let r = kept.get("write-file").unwrap();
        assert_eq!(
            r.record.approved_at.as_deref(),
            Some("2026-10-01T12:00:00.000Z")
        );
        assert_eq!(r.status, Status::Approved);
    }

    #[test]
    fn an_approved_routine_matched_n_times_in_a_row_unserved_is_retired_and_says_why() {
        let dir = tempfile::tempdir().unwrap();
        let mut a = routine();
        a.approve("t0");
        a.write(&dir.path().join(DIR)).unwrap();
        let mut b = routine();
        b.name = "write-file-too".into();
        b.approve("t0");
        b.write(&dir.path().join(DIR)).unwrap();
        let mut other = routine();
        other.name = "read-file".into();
        other.intent = "Read {file}".into();
        other.approve("t0");
        other.write(&dir.path().join(DIR)).unwrap();
        let mut repertoire = Repertoire::open(dir.path()).unwrap();
        // `b` is chosen each time: `a` matched and went unserved; `read-file` did not match.
        for t in ["t1", "t2"] {
            let retired = repertoire
                .note_unserved("Write x.rs", Some("write-file-too"), 3, t)
                .unwrap();
            assert!(retired.is_empty());
        }
        // A replay that held resets its count; one that deviated counts.
        let a = repertoire.get_mut("write-file").unwrap();
        assert!(!a.note_match(true, 3, "t3"));
        assert!(!a.note_match(false, 3, "t4"));
        repertoire.save("write-file").unwrap();
        let retired = repertoire
            .note_unserved("Write y.rs", None, 3, "t5")
            .unwrap();
        assert!(retired.is_empty(), "2 in a row since the use");
        let retired = repertoire
            .note_unserved("Write z.rs", None, 3, "t6")
            .unwrap();
        assert_eq!(retired, vec!["write-file".to_string()]);
        let kept = Repertoire::open(dir.path()).unwrap();
        let a = kept.get("write-file").unwrap();
        assert_eq!(a.status, Status::Retired);
        let why = a.retired_because.as_deref().unwrap();
        assert!(
            why.contains("matched 3 performances in a row") && why.contains("retire_unused"),
            "{why}"
        );
        assert_eq!(kept.get("write-file-too").unwrap().status, Status::Approved);
        let other = kept.get("read-file").unwrap();
        assert_eq!(
            (other.status, other.record.unserved_matches),
            (Status::Approved, 0)
        );
    }

    #[test]
    fn two_files_holding_one_name_are_changed_by_stem_and_the_name_alone_is_an_error() {
        // A director copied `write-file.toml` to `copy.toml` to edit it: both say
        // `name = "write-file"`.
        let dir = tempfile::tempdir().unwrap();
        let folder = dir.path().join(DIR);
        routine().write(&folder).unwrap();
        std::fs::copy(folder.join("write-file.toml"), folder.join("copy.toml")).unwrap();
        std::fs::rename(folder.join("write-file.toml"), folder.join("original.toml")).unwrap();
        let mut repertoire = Repertoire::open(dir.path()).unwrap();
        let err = repertoire.update("write-file", |_| true).unwrap_err();
        assert!(
            matches!(&err, RoutineError::Ambiguous { files, .. } if files.len() == 2),
            "{err}"
        );
        assert!(!folder.join("write-file.toml").exists(), "no file guessed");
        assert!(
            repertoire
                .update("copy", |r| {
                    r.description = "edited".into();
                    true
                })
                .unwrap()
        );
        repertoire.get_mut("original").unwrap().description = "saved".into();
        repertoire.save("original").unwrap();
        let kept = Repertoire::open(dir.path()).unwrap();
        assert_eq!(kept.find("copy").unwrap().1.description, "edited");
        assert_eq!(kept.find("original").unwrap().1.description, "saved");
        assert!(
            !folder.join("write-file.toml").exists(),
            "saved by its file"
        );
    }

    #[test]
    fn a_file_named_with_toml_is_found_when_files_hold_each_others_names() {
        // `a.toml` holds the routine named `b`, and `b.toml` the one named `a`.
        let dir = tempfile::tempdir().unwrap();
        let folder = dir.path().join(DIR);
        for (name, file) in [("b", "a"), ("a", "b")] {
            let mut r = routine();
            r.name = name.into();
            r.write(&folder).unwrap();
            let (written, aside) = (format!("{name}.toml"), format!("{file}.toml.new"));
            std::fs::rename(folder.join(written), folder.join(aside)).unwrap();
        }
        for file in ["a", "b"] {
            let new = folder.join(format!("{file}.toml.new"));
            std::fs::rename(&new, folder.join(format!("{file}.toml"))).unwrap();
        }
        let repertoire = Repertoire::open(dir.path()).unwrap();
        for given in ["a", "b"] {
            let err = repertoire.find_named(given).unwrap_err();
            assert!(matches!(err, RoutineError::Ambiguous { .. }), "{err}");
            assert!(err.to_string().contains("by its file, as listed"), "{err}");
        }
        let (stem, r) = repertoire.find_named("a.toml").unwrap();
        assert_eq!((stem, r.name.as_str()), ("a", "b"));
        let (stem, r) = repertoire.find_named("b.toml").unwrap();
        assert_eq!((stem, r.name.as_str()), ("b", "a"));
        let err = repertoire.find_named("c.toml").unwrap_err();
        assert!(matches!(err, RoutineError::NotFound { .. }), "{err}");
    }

    #[test]
    fn three_fallbacks_in_a_row_retire_an_approved_routine_and_say_why() {
        let mut r = routine();
        r.status = Status::Approved;
        r.note_use(false, "t1");
        r.note_use(true, "t2");
        r.note_use(false, "t3");
        r.note_use(false, "t4");
        assert_eq!(r.status, Status::Approved);
        r.note_use(false, "t5");
        assert_eq!(r.status, Status::Retired);
        assert!(r.retired_because.unwrap().contains("3 replays in a row"));
        assert_eq!((r.record.uses, r.record.fallbacks), (5, 4));
    }
}
