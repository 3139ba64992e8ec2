//! The learner: practice abstracted into skeletons, skeletons that converged at least twice
//! proposed as routines, and every routine's provenance and stability brought up to date.
//!
//! A skeleton is the props in order with argument templates. A value becomes a parameter when
//! it came from the intent and differs between the runs compared (the file name in "Write
//! {file} …"); a value the runs share stays a constant; a value that differs but is not in the
//! intent becomes a parameter the intent cannot fill (the routine is then offered as a prop but
//! never replayed for an intent by itself). Done by hand rather than with a diff crate: the
//! units are words of the intent matched at word boundaries inside argument strings.

use crate::RoutineError;
use crate::guard::{Guard, Settled, Shape};
use crate::practice::Practice;
use crate::routine::{
    Added, Parameter, Provenance, Record, Repertoire, Routine, Stability, Status, Step,
};
use crate::template::{Piece, Template, escape};
use serde_json::{Map, Value};
use std::collections::{BTreeMap, BTreeSet};

/// Marks a hole while the text is still raw: private-use characters no intent contains.
const OPEN: char = '\u{E000}';
const CLOSE: char = '\u{E001}';

/// What one learning pass changed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Learned {
    /// Routines proposed (or approved, under `auto_approve`) for the first time.
    pub proposed: Vec<String>,
    /// Routines whose provenance or stability changed.
    pub updated: Vec<String>,
}

/// Learns from `practices` into `repertoire` and writes every routine that changed.
/// `settled` is the ledger's settled schemas, for guards on steps whose outputs were entries.
pub fn learn(
    repertoire: &mut Repertoire,
    practices: &[Practice],
    auto_approve: bool,
    settled: Option<&dyn Settled>,
) -> Result<Learned, RoutineError> {
    let mut learned = Learned::default();
    let existing = stems(repertoire);
    for candidate in propose(practices, settled) {
        if repertoire
            .routines
            .iter()
            .any(|r| r.provenance.skeleton == candidate.provenance.skeleton)
        {
            continue;
        }
        let mut routine = candidate;
        if auto_approve {
            routine.approve(&crate::now());
        }
        reconcile(&mut routine, practices);
        added(repertoire, routine, practices, &mut learned)?;
    }
    let updated = reconcile_all(repertoire, &existing, practices)?;
    learned.updated.extend(updated);
    Ok(learned)
}

/// Learns from one more converged practice, `new`, whose shape's earlier practices are
/// `group` (itself included); `all` gives every practice, read only when a routine is proposed
/// (it is reconciled with all of them, as [`learn`] does). The same routines as [`learn`] over
/// every practice, at the cost of one shape's practices.
pub fn learn_one(
    repertoire: &mut Repertoire,
    new: &Practice,
    group: &[Practice],
    all: &dyn Fn() -> Result<Vec<Practice>, RoutineError>,
    auto_approve: bool,
    settled: Option<&dyn Settled>,
) -> Result<Learned, RoutineError> {
    let mut learned = Learned::default();
    let existing = stems(repertoire);
    let mut everything: Option<Vec<Practice>> = None;
    for candidate in propose(group, settled) {
        let known = repertoire
            .routines
            .iter()
            .any(|r| r.provenance.skeleton == candidate.provenance.skeleton);
        if known {
            continue;
        }
        let mut routine = candidate;
        if auto_approve {
            routine.approve(&crate::now());
        }
        if everything.is_none() {
            everything = Some(all()?);
        }
        let everything = everything.as_deref().unwrap_or_default();
        reconcile(&mut routine, everything);
        added(repertoire, routine, everything, &mut learned)?;
    }
    let updated = reconcile_all(repertoire, &existing, std::slice::from_ref(new))?;
    learned.updated.extend(updated);
    Ok(learned)
}

/// Adds a proposed routine; when another learner proposed the same skeleton since the
/// repertoire was read ([`Added::Known`]), `practices` are reconciled with that one instead.
fn added(
    repertoire: &mut Repertoire,
    routine: Routine,
    practices: &[Practice],
    learned: &mut Learned,
) -> Result<(), RoutineError> {
    match repertoire.add(routine)? {
        Added::New(name) => learned.proposed.push(name),
        Added::Known(name) => {
            if repertoire.update(&name, |known| reconciled(known, practices))? {
                learned.updated.push(name);
            }
        }
    }
    Ok(())
}

/// The file stems of `repertoire`'s routines: what each is found and written by (two files
/// may hold one `name`).
fn stems(repertoire: &Repertoire) -> Vec<String> {
    repertoire
        .entries()
        .map(|(stem, _)| stem.to_string())
        .collect()
}

/// Reconciles the routines in the files `stems` with `practices`, each on its file as it is now
/// ([`Repertoire::update`]: a retirement or count another writer made since the repertoire
/// was read is kept); returns the stems of those that changed. A routine the practices do not
/// change in this repertoire's copy is not read again (learning follows every performance).
fn reconcile_all(
    repertoire: &mut Repertoire,
    stems: &[String],
    practices: &[Practice],
) -> Result<Vec<String>, RoutineError> {
    let mut updated = Vec::new();
    for stem in stems {
        let Some(mut copy) = repertoire.get(stem).cloned() else {
            continue;
        };
        if !reconciled(&mut copy, practices) {
            continue;
        }
        if repertoire.update(stem, |routine| reconciled(routine, practices))? {
            updated.push(stem.clone());
        }
    }
    Ok(updated)
}

/// [`reconcile`], and whether it changed the routine's provenance or stability.
fn reconciled(routine: &mut Routine, practices: &[Practice]) -> bool {
    let before = (routine.provenance.clone(), routine.stability);
    reconcile(routine, practices);
    before != (routine.provenance.clone(), routine.stability)
}

/// Adds the practices that agree with `routine` (its template binds their intent and its steps,
/// filled in, are their calls) to its provenance, and those that did something else for an
/// intent it matches to its contradictions; then sets its stability.
fn reconcile(routine: &mut Routine, practices: &[Practice]) {
    if routine.replayable() {
        for p in practices {
            let Some(values) = routine.bind(&p.intent) else {
                continue;
            };
            let agrees = routine.calls(&values).is_ok_and(|calls| {
                calls.len() == p.calls.len()
                    && calls.iter().zip(&p.calls).all(|(c, o)| {
                        c.prop == o.prop && c.arguments == Value::Object(o.args.clone())
                    })
            });
            let list = if agrees {
                &mut routine.provenance.performances
            } else {
                &mut routine.provenance.contradicted_by
            };
            if !list.contains(&p.performance) {
                list.push(p.performance.clone());
            }
        }
    }
    routine.stability = if routine.provenance.contradicted_by.is_empty() {
        Stability::of(routine.provenance.performances.len())
    } else {
        Stability::Fluid
    };
}

/// The routines the practices propose: one per skeleton that converged in two or more of them.
/// A step whose outputs were all entries fitting a collection of `settled` guards that they
/// still do.
pub fn propose(practices: &[Practice], settled: Option<&dyn Settled>) -> Vec<Routine> {
    let mut by_shape: BTreeMap<String, Vec<&Practice>> = BTreeMap::new();
    for p in practices {
        by_shape.entry(shape(p)).or_default().push(p);
    }
    let mut out = Vec::new();
    for group in by_shape.values().filter(|g| g.len() >= 2) {
        let common = common_words(group);
        let mut by_template: BTreeMap<String, Vec<Abstracted>> = BTreeMap::new();
        for p in group {
            let a = abstract_practice(p, &common);
            by_template.entry(a.intent.clone()).or_default().push(a);
        }
        for runs in by_template.into_values().filter(|r| r.len() >= 2) {
            out.push(routine_of(&runs, settled));
        }
    }
    out
}

/// The props in order and the argument keys: what two runs must share to be compared at all.
pub fn shape(p: &Practice) -> String {
    let steps: Vec<Value> = p
        .calls
        .iter()
        .map(|c| {
            let mut args = Value::Object(c.args.clone());
            blank(&mut args);
            Value::Array(vec![Value::String(c.prop.clone()), args])
        })
        .collect();
    Value::Array(steps).to_string()
}

fn blank(v: &mut Value) {
    match v {
        Value::String(s) => s.clear(),
        Value::Array(items) => items.iter_mut().for_each(blank),
        Value::Object(map) => map.values_mut().for_each(blank),
        _ => {}
    }
}

/// The words every intent of the group has: constants, never parameters.
fn common_words(group: &[&Practice]) -> BTreeSet<String> {
    let mut sets = group
        .iter()
        .map(|p| words(&p.intent).collect::<BTreeSet<_>>());
    let first = sets.next().unwrap_or_default();
    sets.fold(first, |acc, s| acc.intersection(&s).cloned().collect())
}

/// The words of an intent, without the punctuation around them.
fn words(intent: &str) -> impl Iterator<Item = String> + '_ {
    intent
        .split_whitespace()
        .map(|w| w.trim_matches(|c: char| ",;:!?\"'`()[]".contains(c)))
        .map(|w| w.trim_end_matches('.'))
        .filter(|w| w.chars().count() >= 2)
        .map(str::to_string)
}

/// One run with its values turned into holes.
struct Abstracted {
    performance: String,
    /// The intent template (holes named, braces escaped).
    intent: String,
    /// The steps' argument templates.
    steps: Vec<(String, Value)>,
    /// Each hole's value in this run.
    values: BTreeMap<String, String>,
    outputs: Vec<String>,
    checks: Vec<String>,
}

/// Turns the values of `p` that came from its intent (and are not `common`) into holes.
fn abstract_practice(p: &Practice, common: &BTreeSet<String>) -> Abstracted {
    let mut leaves: Vec<(String, String)> = Vec::new();
    for c in &p.calls {
        collect_leaves(&Value::Object(c.args.clone()), "", &mut leaves);
    }
    // Candidates: whole argument values found in the intent, then the intent's words found in
    // the arguments; the longest first, so a file name wins over a word inside it.
    let mut candidates: Vec<String> = leaves
        .iter()
        .map(|(_, v)| v.trim().to_string())
        .filter(|v| v.chars().count() >= 2 && !common.contains(v) && find_word(&p.intent, v))
        .chain(words(&p.intent).filter(|w| !common.contains(w)))
        .collect();
    candidates.sort_by_key(|c| std::cmp::Reverse(c.len()));
    candidates.dedup();
    let mut intent = p.intent.trim().to_string();
    let mut steps: Vec<(String, Value)> = p
        .calls
        .iter()
        .map(|c| (c.prop.clone(), Value::Object(c.args.clone())))
        .collect();
    let mut holes: Vec<(String, String)> = Vec::new(); // (value, key)
    for value in candidates {
        if !find_word(&intent, &value) {
            continue;
        }
        let marker = format!("{OPEN}{}{CLOSE}", holes.len());
        let mut key = None;
        for (_, args) in &mut steps {
            replace_in(args, "", &value, &marker, &mut key);
        }
        let Some(key) = key else { continue };
        intent = replace_words(&intent, &value, &marker);
        holes.push((value, key));
    }
    // Name the holes in the order the intent shows them, after the argument they fill.
    let order = marker_order(&intent);
    let mut names: Vec<String> = vec![String::new(); holes.len()];
    let mut taken: Vec<String> = Vec::new();
    for i in order {
        let name = fresh(&holes[i].1, &taken);
        taken.push(name.clone());
        names[i] = name;
    }
    let values = holes
        .iter()
        .zip(&names)
        .map(|((v, _), n)| (n.clone(), v.clone()))
        .collect();
    let intent = to_template(&intent, &names);
    let steps = steps
        .into_iter()
        .map(|(prop, mut args)| {
            map_strings(&mut args, &|s| to_template(s, &names));
            (prop, args)
        })
        .collect();
    Abstracted {
        performance: p.performance.clone(),
        intent,
        steps,
        values,
        outputs: p.calls.iter().map(|c| c.output.clone()).collect(),
        checks: p.checks.clone(),
    }
}

/// The routine that runs with the same intent template agree on; arguments that still differ
/// become parameters of their own.
fn routine_of(runs: &[Abstracted], settled: Option<&dyn Settled>) -> Routine {
    let first = &runs[0];
    let mut names: Vec<String> = Template::parse(&first.intent)
        .map(|t| t.holes().into_iter().map(str::to_string).collect())
        .unwrap_or_default();
    let mut examples: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for r in runs {
        for (n, v) in &r.values {
            examples.entry(n.clone()).or_default().push(v.clone());
        }
    }
    let mut steps = Vec::new();
    for (i, (prop, args)) in first.steps.iter().enumerate() {
        let mut args = args.clone();
        let others: Vec<&Value> = runs[1..].iter().map(|r| &r.steps[i].1).collect();
        free_holes(&mut args, &others, "", &mut names, &mut examples);
        let outputs = runs.iter().map(|r| r.outputs[i].as_str());
        let guard = Guard {
            ok: true,
            output: Shape::common(outputs.clone()),
            settled: settled.and_then(|s| crate::guard::settled_shape(s, outputs)),
        };
        let args = match args {
            Value::Object(map) => without_nulls(map),
            _ => Map::new(),
        };
        steps.push(Step {
            prop: prop.clone(),
            guard,
            args,
        });
    }
    let checks: BTreeSet<String> = runs.iter().flat_map(|r| r.checks.clone()).collect();
    let skeleton = fingerprint(&first.intent, &steps);
    Routine {
        name: slug(&first.intent, &steps),
        description: format!(
            "{} ({} steps: {})",
            first.intent,
            steps.len(),
            steps
                .iter()
                .map(|s| s.prop.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
        status: Status::Proposed,
        stability: Stability::of(runs.len()),
        intent: first.intent.clone(),
        parameters: names
            .iter()
            .map(|n| Parameter {
                name: n.clone(),
                examples: examples.remove(n).unwrap_or_default(),
            })
            .collect(),
        checks: checks.into_iter().collect(),
        retired_because: None,
        provenance: Provenance {
            skeleton,
            performances: runs.iter().map(|r| r.performance.clone()).collect(),
            contradicted_by: Vec::new(),
        },
        record: Record::default(),
        steps,
    }
}

/// Where the same string argument differs between the runs, a parameter of its own.
fn free_holes(
    value: &mut Value,
    others: &[&Value],
    key: &str,
    names: &mut Vec<String>,
    examples: &mut BTreeMap<String, Vec<String>>,
) {
    match value {
        Value::String(s) => {
            let theirs: Vec<&str> = others.iter().filter_map(|o| o.as_str()).collect();
            if theirs.iter().any(|t| t != s) {
                let name = fresh(key, names);
                let mut seen = vec![s.clone()];
                seen.extend(theirs.iter().map(|t| t.to_string()));
                examples.insert(name.clone(), seen);
                *s = format!("{{{name}}}");
                names.push(name);
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter_mut().enumerate() {
                let theirs: Vec<&Value> = others.iter().filter_map(|o| o.get(i)).collect();
                free_holes(v, &theirs, key, names, examples);
            }
        }
        Value::Object(map) => {
            for (k, v) in map.iter_mut() {
                let theirs: Vec<&Value> = others.iter().filter_map(|o| o.get(k)).collect();
                free_holes(v, &theirs, k, names, examples);
            }
        }
        _ => {}
    }
}

/// TOML has no null: an argument given as null is left out, which props read the same way.
fn without_nulls(map: Map<String, Value>) -> Map<String, Value> {
    map.into_iter().filter(|(_, v)| !v.is_null()).collect()
}

fn collect_leaves(v: &Value, key: &str, out: &mut Vec<(String, String)>) {
    match v {
        Value::String(s) => out.push((key.to_string(), s.clone())),
        Value::Array(items) => items.iter().for_each(|i| collect_leaves(i, key, out)),
        Value::Object(map) => map.iter().for_each(|(k, i)| collect_leaves(i, k, out)),
        _ => {}
    }
}

/// Replaces `value` at word boundaries in every string of `v`; `key` is set to the argument
/// where it was first found.
fn replace_in(v: &mut Value, here: &str, value: &str, marker: &str, key: &mut Option<String>) {
    match v {
        Value::String(s) if find_word(s, value) => {
            *s = replace_words(s, value, marker);
            key.get_or_insert_with(|| here.to_string());
        }
        Value::Array(items) => items
            .iter_mut()
            .for_each(|i| replace_in(i, here, value, marker, key)),
        Value::Object(map) => map
            .iter_mut()
            .for_each(|(k, i)| replace_in(i, k, value, marker, key)),
        _ => {}
    }
}

fn map_strings(v: &mut Value, f: &dyn Fn(&str) -> String) {
    match v {
        Value::String(s) => *s = f(s),
        Value::Array(items) => items.iter_mut().for_each(|i| map_strings(i, f)),
        Value::Object(map) => map.values_mut().for_each(|i| map_strings(i, f)),
        _ => {}
    }
}

/// Whether a character continues a word (so a match next to it is inside a word).
fn wordy(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// The byte offsets where `needle` occurs in `hay` at word boundaries.
fn word_matches(hay: &str, needle: &str) -> Vec<usize> {
    if needle.is_empty() {
        return Vec::new();
    }
    hay.match_indices(needle)
        .map(|(at, _)| at)
        .filter(|&at| {
            let before = hay[..at].chars().next_back();
            let after = hay[at + needle.len()..].chars().next();
            let starts_wordy = needle.chars().next().is_some_and(wordy);
            let ends_wordy = needle.chars().next_back().is_some_and(wordy);
            // Never inside the marker of a hole already made.
            let in_marker = before == Some(OPEN) || after == Some(CLOSE);
            let joins_before = starts_wordy && before.is_some_and(wordy);
            let joins_after = ends_wordy && after.is_some_and(wordy);
            !(in_marker || joins_before || joins_after)
        })
        .collect()
}

fn find_word(hay: &str, needle: &str) -> bool {
    !word_matches(hay, needle).is_empty()
}

fn replace_words(hay: &str, needle: &str, with: &str) -> String {
    let mut out = String::new();
    let mut last = 0;
    for at in word_matches(hay, needle) {
        if at < last {
            continue;
        }
        out.push_str(&hay[last..at]);
        out.push_str(with);
        last = at + needle.len();
    }
    out.push_str(&hay[last..]);
    out
}

/// The hole numbers in the order `text` shows them.
fn marker_order(text: &str) -> Vec<usize> {
    let mut order = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find(OPEN) {
        let after = &rest[start + OPEN.len_utf8()..];
        let Some(end) = after.find(CLOSE) else { break };
        if let Ok(i) = after[..end].parse::<usize>()
            && !order.contains(&i)
        {
            order.push(i);
        }
        rest = &after[end + CLOSE.len_utf8()..];
    }
    order
}

/// Raw text with markers made into a template: literal text escaped, markers named.
fn to_template(text: &str, names: &[String]) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(start) = rest.find(OPEN) {
        out.push_str(&escape(&rest[..start]));
        let after = &rest[start + OPEN.len_utf8()..];
        let Some(end) = after.find(CLOSE) else {
            rest = after;
            continue;
        };
        match after[..end]
            .parse::<usize>()
            .ok()
            .and_then(|i| names.get(i))
        {
            Some(n) => out.push_str(&format!("{{{n}}}")),
            None => out.push_str(&escape(&after[..end])),
        }
        rest = &after[end + CLOSE.len_utf8()..];
    }
    out.push_str(&escape(rest));
    out
}

/// A parameter name from an argument's key, not yet in `taken`.
fn fresh(key: &str, taken: &[String]) -> String {
    let base: String = key
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect();
    let base = if base.is_empty() {
        "value".to_string()
    } else {
        base
    };
    let mut name = base.clone();
    let mut n = 2;
    while taken.contains(&name) {
        name = format!("{base}_{n}");
        n += 1;
    }
    name
}

/// A file name from the intent's first words, or the props: only ASCII letters, digits and
/// `-` (a prop such as an MCP tool may hold `/` or `.`), at most [`MAX_SLUG`] bytes, never
/// empty, so that [`Repertoire::add`] never refuses it and a proposal is never lost.
fn slug(intent: &str, steps: &[Step]) -> String {
    let raw = raw_slug(intent, steps);
    let mut name = String::with_capacity(raw.len().min(MAX_SLUG));
    for c in raw.chars() {
        let c = if c.is_ascii_alphanumeric() { c } else { '-' };
        if c == '-' && (name.is_empty() || name.ends_with('-')) {
            continue;
        }
        if name.len() == MAX_SLUG {
            break;
        }
        name.push(c);
    }
    let name = name.trim_end_matches('-');
    if name.is_empty() {
        "routine".to_string()
    } else {
        name.to_string()
    }
}

/// The longest learned name: room for `-N` within the file names allowed (200 bytes), and
/// short enough to type in `improv routines approve NAME`.
const MAX_SLUG: usize = 64;

/// [`slug`]'s words, before they are cleaned.
fn raw_slug(intent: &str, steps: &[Step]) -> String {
    let literal: String = Template::parse(intent)
        .map(|t| {
            t.0.iter()
                .filter_map(|p| match p {
                    Piece::Text(s) => Some(s.as_str()),
                    Piece::Hole(_) => None,
                })
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default();
    let words: Vec<String> = literal
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| w.len() >= 2)
        .take(3)
        .map(str::to_ascii_lowercase)
        .collect();
    if words.is_empty() {
        steps
            .iter()
            .map(|s| s.prop.replace('.', "-"))
            .collect::<Vec<_>>()
            .join("-")
    } else {
        words.join("-")
    }
}

/// The skeleton's fingerprint: the intent template and the steps, hashed with 64-bit FNV-1a,
/// written by hand because it is six lines and must stay the same across Rust releases (std's
/// hasher does not promise that); it tells skeletons apart, it protects nothing.
fn fingerprint(intent: &str, steps: &[Step]) -> String {
    let steps: Vec<Value> = steps
        .iter()
        .map(|s| {
            Value::Array(vec![
                Value::String(s.prop.clone()),
                Value::Object(s.args.clone()),
            ])
        })
        .collect();
    let text = Value::Array(vec![Value::String(intent.into()), Value::Array(steps)]).to_string();
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in text.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{hash:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::practice::Observed;
    use serde_json::json;

    fn run(id: &str, intent: &str, calls: &[(&str, Value)]) -> Practice {
        Practice {
            performance: id.into(),
            intent: intent.into(),
            calls: calls
                .iter()
                .map(|(p, a)| Observed {
                    prop: p.to_string(),
                    args: a.as_object().unwrap().clone(),
                    output: "created".into(),
                })
                .collect(),
            checks: vec!["file".into()],
        }
    }

    #[test]
    fn two_runs_with_different_values_make_one_parameterised_routine() {
        let a = run(
            "p1",
            "Write hello.txt containing hi there",
            &[
                ("write", json!({"path": "hello.txt", "content": "hi there"})),
                ("bash", json!({"command": "wc -c hello.txt"})),
            ],
        );
        let b = run(
            "p2",
            "Write notes.md containing buy {milk}",
            &[
                (
                    "write",
                    json!({"path": "notes.md", "content": "buy {milk}"}),
                ),
                ("bash", json!({"command": "wc -c notes.md"})),
            ],
        );
        let routines = propose(&[a, b], None);
        assert_eq!(routines.len(), 1, "{routines:#?}");
        let r = &routines[0];
        assert_eq!(r.intent, "Write {path} containing {content}");
        assert_eq!(r.steps[1].args["command"], "wc -c {path}");
        assert!(r.replayable());
        let values = r.bind("Write x.rs containing fn main() {}").unwrap();
        let calls = r.calls(&values).unwrap();
        assert_eq!(calls[0].arguments["content"], "fn main() {}");
        assert_eq!(calls[1].arguments["command"], "wc -c x.rs");
        assert_eq!(r.name, "write-containing");
    }

    #[test]
    fn names_from_props_a_file_cannot_hold_are_cleaned_and_no_proposal_is_lost() {
        // No ASCII word in the intent: the name comes from the props, MCP tools with `/`,
        // joined past the 200 bytes a routine's file name may have.
        let calls: Vec<(String, Value)> = (0..12)
            .map(|i| (format!("srv/a_rather_long_tool_name_{i}"), json!({"n": i})))
            .collect();
        let calls: Vec<(&str, Value)> =
            calls.iter().map(|(p, a)| (p.as_str(), a.clone())).collect();
        let plain = [("write", json!({"path": "a.txt", "content": "x"}))];
        let practices = [
            run("p1", "日志を整える", &calls),
            run("p2", "日志を整える", &calls),
            run("p3", "Write the notes", &plain),
            run("p4", "Write the notes", &plain),
        ];
        let dir = tempfile::tempdir().unwrap();
        let mut repertoire = Repertoire::open(dir.path()).unwrap();
        let learned = learn(&mut repertoire, &practices, false, None).unwrap();
        assert_eq!(learned.proposed.len(), 2, "{learned:?}");
        let long = learned
            .proposed
            .iter()
            .find(|n| n.starts_with("srv"))
            .unwrap();
        assert!(long.len() <= MAX_SLUG, "{long}");
        assert!(
            long.starts_with("srv-a-rather-long-tool-name-0-srv"),
            "{long}"
        );
        let file = dir
            .path()
            .join(crate::routine::DIR)
            .join(format!("{long}.toml"));
        assert!(file.exists(), "{}", file.display());
        assert!(learned.proposed.contains(&"write-the-notes".to_string()));
    }

    #[test]
    fn one_run_or_different_props_propose_nothing() {
        let a = run(
            "p1",
            "Write a.txt containing x1",
            &[("write", json!({"path": "a.txt", "content": "x1"}))],
        );
        let b = run(
            "p2",
            "Write b.txt containing x2",
            &[("edit", json!({"path": "b.txt", "content": "x2"}))],
        );
        assert!(propose(std::slice::from_ref(&a), None).is_empty());
        assert!(propose(&[a, b], None).is_empty());
    }

    #[test]
    fn a_value_that_differs_but_is_not_in_the_intent_is_a_parameter_the_intent_cannot_fill() {
        let a = run(
            "p1",
            "Stamp the log",
            &[("write", json!({"path": "log", "content": "13:00"}))],
        );
        let b = run(
            "p2",
            "Stamp the log",
            &[("write", json!({"path": "log", "content": "14:00"}))],
        );
        let r = &propose(&[a, b], None)[0];
        assert_eq!(r.steps[0].args["content"], "{content}");
        assert_eq!(r.steps[0].args["path"], "log");
        assert!(!r.replayable());
    }
}
