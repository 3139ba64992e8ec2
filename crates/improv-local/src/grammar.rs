//! Tool calls a tiny model cannot get wrong: a GBNF grammar built from the props' JSON schemas.
//!
//! # How a reply becomes either text or a valid call
//!
//! The system prompt gets a short added section ([`instructions`]) that lists the props and says:
//! to use one, reply with only `{"tool": "<name>", "arguments": {...}}`. Generation then runs
//! under the grammar from [`gbnf`]:
//!
//! ```text
//! root ::= lead (call | text)            # auto: the model may still answer in text
//! root ::= lead call                     # required: it must call a prop
//! text ::= [^{ \t\n\r] .*                # anything that does not open with `{`
//! call ::= "{\"tool\": " (call-0 | call-1 | ...)
//! call-0 ::= "\"list\", \"arguments\": " args-0 "}"
//! args-0 ::= "{" ws "\"path\":" ws string ... "}"   # from the prop's JSON schema
//! ```
//!
//! So the model's first visible character decides: `{` commits it to a call, which the grammar
//! then forces to name a real prop and to carry arguments of that prop's schema (its required
//! properties, their types, enums); anything else is text. The engine applies the grammar only
//! until that first character: once the reply is text it samples freely (no grammar cost per
//! token), and once it is a call the grammar stays on until the JSON closes, which ends the reply.
//!
//! We chose an eager grammar with a text branch over llama.cpp's lazy grammar (triggered by a
//! word): a lazy grammar only constrains what follows the trigger, so a model that writes
//! `{"tool":"lst"` or `{ "tool"` would slip past it; here every call, from its first byte, is one
//! the grammar accepts. The envelope is fixed byte for byte (`{"tool": "`, `", "arguments": `),
//! so [`parse`] reads it back exactly and the history renders the call as the model wrote it.
//!
//! Supported schema keywords: `type` (string, integer, number, boolean, null, array, object, or a
//! list of these), `properties`, `required`, `items`, `enum`, `const`, `anyOf`, `oneOf`. Other
//! keywords (lengths, patterns, formats) are not enforced; an unknown or missing type allows any
//! JSON value. Objects with `properties` allow only those properties, required ones first.

use crate::mutation;
use improv_kernel::ToolSpec;
use serde_json::Value;
use std::fmt::Write as _;

/// How a call opens, byte for byte.
pub const CALL_OPEN: &str = "{\"tool\": ";
/// What separates the prop's name from its arguments.
const CALL_ARGS: &str = ", \"arguments\": ";

/// The JSON of one call, exactly as the grammar makes the model write it.
pub fn call_json(name: &str, arguments: &str) -> String {
    let arguments = arguments.trim();
    let arguments = if arguments.is_empty() {
        "{}"
    } else {
        arguments
    };
    let name = serde_json::to_string(name).unwrap_or_else(|_| format!("\"{name}\""));
    format!("{CALL_OPEN}{name}{CALL_ARGS}{arguments}}}")
}

/// The short section added to the system prompt that teaches the call format and lists the props
/// as one-line signatures, e.g. `- read(path: string, limit?: integer): Read a file.`
pub fn instructions(tools: &[ToolSpec]) -> String {
    let mut out = String::from("You have these tools:");
    for tool in tools {
        let _ = write!(out, "\n- {}({})", tool.name, signature(&tool.parameters));
        let description = tool.description.trim();
        if !description.is_empty() {
            let _ = write!(out, ": {description}");
        }
    }
    out.push_str("\nTo use a tool, reply with only this JSON: {\"tool\": \"<name>\", \"arguments\": {...}}. Otherwise reply in plain text.");
    out
}

/// `path: string, limit?: integer` for an object schema.
fn signature(schema: &Value) -> String {
    let Some(props) = schema.get("properties").and_then(Value::as_object) else {
        return String::new();
    };
    let required = required(schema);
    let mut parts = Vec::new();
    for name in required.iter().filter(|n| props.contains_key(n.as_str())) {
        parts.push(format!("{name}: {}", type_name(&props[name.as_str()])));
    }
    for (name, sub) in props.iter().filter(|(n, _)| !required.contains(n)) {
        parts.push(format!("{name}?: {}", type_name(sub)));
    }
    parts.join(", ")
}

fn type_name(schema: &Value) -> String {
    if let Some(values) = schema.get("enum").and_then(Value::as_array) {
        return values
            .iter()
            .map(Value::to_string)
            .collect::<Vec<_>>()
            .join("|");
    }
    match schema.get("type") {
        Some(Value::String(t)) if t == "array" => {
            format!("{}[]", schema.get("items").map_or("any".into(), type_name))
        }
        Some(Value::String(t)) => t.clone(),
        Some(Value::Array(ts)) => ts
            .iter()
            .filter_map(Value::as_str)
            .collect::<Vec<_>>()
            .join("|"),
        _ => "any".into(),
    }
}

fn required(schema: &Value) -> Vec<String> {
    schema
        .get("required")
        .and_then(Value::as_array)
        .map(|r| {
            r.iter()
                .filter_map(Value::as_str)
                .map(String::from)
                .collect()
        })
        .unwrap_or_default()
}

/// The primitive rules every grammar shares.
const PRIMITIVES: &str = r#"ws ::= " "?
string ::= "\"" char* "\""
char ::= [^"\\\x7F\x00-\x1F] | "\\" (["\\/bfnrt] | "u" [0-9a-fA-F] [0-9a-fA-F] [0-9a-fA-F] [0-9a-fA-F])
integer ::= "-"? ([0-9] | [1-9] [0-9]{1,15})
number ::= integer ("." [0-9]{1,15})? ([eE] [-+]? [0-9]{1,3})?
boolean ::= "true" | "false"
null ::= "null"
value ::= object | array | string | number | boolean | null
object ::= "{" ws (string ":" ws value ("," ws string ":" ws value)*)? ws "}"
array ::= "[" ws (value ("," ws value)*)? ws "]"
"#;

/// What narrows a reply's grammar beyond the props' schemas.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Narrowing {
    /// The reply must be a call.
    pub required: bool,
    /// When not empty, every `path` argument of type string is one of these (JSON-escaped as
    /// needed), except a file-writing prop's ([`writes_files`]); see `LocalModel`'s
    /// `mentioned_paths`.
    pub paths: Vec<String>,
    /// Calls the reply must not make.
    pub avoid: Vec<Avoid>,
    /// Only required arguments, and the string arguments of props that do not write files at
    /// most [`LEAN_STRING`] characters long. A small model fills optional arguments with numbers
    /// it makes up (`read` with `limit: 1` shows one line of the file it needs), and a string it
    /// starts repeating (`stats::stats::…`) runs on to the output-token limit, minutes of
    /// decoding on a busy CPU for a call that is refused anyway.
    pub lean: bool,
    /// The files the model has seen, as it last saw them; with [`Narrowing::lean`], a prop that
    /// replaces `old` with `new` in `path` (`edit`) may only name one of them, its `old` is one
    /// of that file's [`Seen::lines`] and its `new` is a small change of that line (see
    /// [`Builder::small_change`]); with none, it is left out. A 135M model otherwise writes
    /// `old` texts it makes up (`#1`, `#2`…), which occur nowhere, turn after turn, and a `new`
    /// it starts repeating runs to the output-token limit, minutes on a busy CPU.
    pub seen: Vec<Seen>,
    /// Only props that write files (see [`writes_files`]) may be called, when one is left; with
    /// [`Narrowing::lean`] and [`Narrowing::seen`], a replacing prop's `new` is then one of the
    /// candidates of [`crate::mutation::candidates`] for the line it picks (see
    /// [`Builder::candidates`]): a forced repair searches small mutations of the line as first
    /// read, ranked by the model's own token choices, none an edit already wrote nor one this
    /// reply's retries refused (see [`avoided`]), the checks the judge; the caller leaves out
    /// of `seen` the files the failing checks point at (`LocalModel`'s `searched_files`).
    pub writes_only: bool,
}

/// The most characters of a string argument in a [`Narrowing::lean`] grammar, except the text a
/// writing prop writes: enough for a command line or a search pattern.
pub const LEAN_STRING: usize = 160;

/// The most characters a small change (see [`Builder::small_change`]) puts in place of what
/// it removes: enough for an operator, a name or a short expression.
pub const MAX_CHANGE: usize = 40;

/// A file the model has seen (see [`Narrowing::seen`]): its path and the lines an `old` may be.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Seen {
    pub path: String,
    /// Texts that occur exactly once in the file as last seen: its lines, without their
    /// indentation and trailing blanks.
    pub lines: Vec<Line>,
}

/// A line an edit may replace (see [`Seen`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Line {
    /// The line as it is now: the edit's `old`.
    pub now: String,
    /// The line before this performance's edits changed it: the edit's `new` is a small
    /// change of this one. While the checks fail, every change made so far did not make them
    /// pass; changing a change again drifts away from the code the model read, each time
    /// further (a 135M model's near-copies drop a bracket here, a term there), where a change
    /// of the first line is one change away from it.
    pub first: String,
    /// The texts this performance's edits already put in place of [`Line::first`]: a forced
    /// edit (see [`Narrowing::writes_only`]) never writes one again (see
    /// [`crate::mutation::candidates`]).
    pub tried: Vec<String>,
}

impl Line {
    /// A line no edit has changed.
    pub fn new(text: &str) -> Line {
        Line {
            now: text.to_string(),
            first: text.to_string(),
            tried: Vec::new(),
        }
    }
}

/// A call refused for one reply: its prop, its `path` argument when it had one, and for a prop
/// that writes files ([`writes_files`]) the text it wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Avoid {
    pub prop: String,
    pub path: Option<String>,
    /// The refused call's `content` (or `new`), when the prop writes files: only that text is
    /// refused, not every write (see [`gbnf_narrowed`]).
    pub text: Option<String>,
    /// The refused call's `old`, for a prop that replaces text: a narrowed edit
    /// ([`Narrowing::seen`]) leaves out that line, or with a forced search its `text` only (see
    /// [`avoided`]).
    pub old: Option<String>,
}

/// The GBNF grammar (root rule `root`) for a reply to a request offering `tools`: text or one
/// call when `required` is false, always one call when it is true. With no `tools`, text only.
pub fn gbnf(tools: &[ToolSpec], required: bool) -> String {
    gbnf_narrowed(
        tools,
        &Narrowing {
            required,
            ..Narrowing::default()
        },
    )
}

/// [`gbnf`], narrowed: `path` arguments drawn from `narrowing.paths` when it has any, and the
/// avoided call left out. When the avoided call's path is one of several allowed, only that path
/// is left out of that prop's choices (the model may read another file). A prop that writes files
/// keeps every path and only the text it wrote is refused: its `content` (or `new`) must differ
/// from it, whatever the path (a fix is rarely the same text written to another file). Otherwise
/// the whole prop is left out (a grammar for "these arguments but not those" is as large as the
/// prop's schema again, and the exclusion lasts one reply). With no prop left the reply is text,
/// even where calls are required: a model left without a prop it may use can only answer.
pub fn gbnf_narrowed(tools: &[ToolSpec], narrowing: &Narrowing) -> String {
    let mut kept: Vec<(&ToolSpec, Top)> = Vec::new();
    for tool in tools {
        let writes = writes_files(&tool.parameters);
        // A prop that writes a file keeps any path: the file the check asks for may be one a
        // read found missing, or one nobody named yet.
        let mut top = Top {
            paths: if writes {
                Vec::new()
            } else {
                narrowing.paths.clone()
            },
            not_texts: Vec::new(),
            lean: narrowing.lean,
            bounded: narrowing.lean && !writes,
            seen: if narrowing.lean && replaces(&tool.parameters) {
                let seen = avoided(
                    &narrowing.seen,
                    &narrowing.avoid,
                    &tool.name,
                    narrowing.writes_only,
                );
                Some(if narrowing.writes_only {
                    searchable(&seen)
                } else {
                    seen
                })
            } else {
                None
            },
            search: narrowing.writes_only,
        };
        let mut left_out =
            (narrowing.writes_only && !writes) || top.seen.as_ref().is_some_and(Vec::is_empty);
        for avoid in narrowing.avoid.iter().filter(|a| a.prop == tool.name) {
            let narrowable = top.paths.len() > 1 && has_path(&tool.parameters);
            match (&avoid.path, &avoid.text) {
                (_, Some(text)) if writes && text.len() <= MAX_REFUSED_TEXT => {
                    top.not_texts.push(text.clone())
                }
                (Some(p), _) if narrowable && top.paths.contains(p) => top.paths.retain(|q| q != p),
                _ => left_out = true,
            }
        }
        if !left_out {
            kept.push((tool, top));
        }
    }
    if kept.is_empty() && narrowing.writes_only {
        // No writing prop can be called: the others are, rather than none.
        return gbnf_narrowed(
            tools,
            &Narrowing {
                writes_only: false,
                ..narrowing.clone()
            },
        );
    }
    if kept.is_empty() {
        return format!("root ::= lead text\n{TEXT}{LEAD}");
    }
    let required = narrowing.required;
    let mut b = Builder::default();
    let mut calls = Vec::new();
    for (i, (tool, top)) in kept.into_iter().enumerate() {
        b.top = Some(top);
        let args = b.arguments(&tool.parameters, &format!("args-{i}"));
        let name = serde_json::to_string(&tool.name).unwrap_or_default();
        let body = format!("{} {args} \"}}\"", literal(&format!("{name}{CALL_ARGS}")));
        calls.push(b.add(format!("call-{i}"), body));
    }
    let mut out = String::new();
    if required {
        out.push_str("root ::= lead call\n");
    } else {
        out.push_str("root ::= lead (call | text)\n");
        out.push_str(TEXT);
    }
    out.push_str(LEAD);
    let _ = writeln!(
        out,
        "call ::= {} ({})",
        literal(CALL_OPEN),
        calls.join(" | ")
    );
    for (name, body) in &b.rules {
        let _ = writeln!(out, "{name} ::= {body}");
    }
    out.push_str(PRIMITIVES);
    out
}

/// Anything that does not open a call.
const TEXT: &str = "text ::= [^{ \\t\\n\\r] .*\n";
/// Up to two blanks before the reply proper.
const LEAD: &str = "lead ::= [ \\t\\n]? [ \\t\\n]?\n";

/// The grammar for a reply that must not call the prop `avoid`: [`gbnf`] of the other props, or
/// text only when there are none, even when calls are `required` (a model left without a prop
/// it may use can only answer).
///
/// The whole prop is left out, not only the arguments the model must not repeat: a grammar for
/// "this prop with any arguments but these" is as large as the prop's schema again, and the
/// exclusion lasts one reply.
pub fn gbnf_without(tools: &[ToolSpec], required: bool, avoid: &str) -> String {
    gbnf_narrowed(
        tools,
        &Narrowing {
            required,
            avoid: vec![Avoid {
                prop: avoid.to_string(),
                path: None,
                text: None,
                old: None,
            }],
            ..Narrowing::default()
        },
    )
}

/// Whether a prop's schema has a string property `path`: the argument [`Narrowing::paths`]
/// draws from.
fn has_path(schema: &Value) -> bool {
    schema
        .get("properties")
        .and_then(|p| p.get(PATH))
        .is_some_and(is_string_schema)
}

/// Whether a prop's arguments carry a file's new text beside its `path` (a string `content`,
/// as `write` takes, or `old` and `new`, as `edit` does): such a prop writes the file, and its
/// path is left free. The schema tells it, as a [`ToolSpec`] says nothing of a prop's access.
pub(crate) fn writes_files(schema: &Value) -> bool {
    let string = |key: &str| {
        schema
            .get("properties")
            .and_then(|p| p.get(key))
            .is_some_and(is_string_schema)
    };
    has_path(schema) && (string("content") || (string("old") && string("new")))
}

/// Whether a prop replaces a string `old` with a string `new` in the file at `path` (as `edit`
/// does): the prop [`Narrowing::seen`] narrows.
fn replaces(schema: &Value) -> bool {
    let string = |key: &str| {
        schema
            .get("properties")
            .and_then(|p| p.get(key))
            .is_some_and(is_string_schema)
    };
    has_path(schema) && string(OLD) && string(NEW)
}

/// The text a replacing prop (see [`replaces`]) replaces.
const OLD: &str = "old";
/// The text a replacing prop puts in its place.
const NEW: &str = "new";

/// The property whose values [`Narrowing::paths`] narrows.
const PATH: &str = "path";

/// The argument that carries the text a writing prop writes: `content`, or `new` for a prop that
/// replaces `old` (see [`writes_files`]).
fn text_key(schema: &Value) -> &'static str {
    let has = |key: &str| schema.get("properties").and_then(|p| p.get(key)).is_some();
    if has("content") { "content" } else { "new" }
}

/// The longest written text (in bytes) a refusal leaves the prop in for: each character of a
/// refused text is a rule of the grammar. A longer refused write leaves the prop out for the
/// reply, as any other refused call.
const MAX_REFUSED_TEXT: usize = 4096;

fn is_string_schema(schema: &Value) -> bool {
    schema.get("type").and_then(Value::as_str) == Some("string")
        && schema.get("enum").is_none()
        && schema.get("const").is_none()
}

/// A GBNF string literal matching `s` exactly.
fn literal(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A GBNF literal matching the JSON text of `value`.
fn json_literal(value: &Value) -> String {
    literal(&value.to_string())
}

/// Collects the rules of one grammar.
#[derive(Default)]
struct Builder {
    rules: Vec<(String, String)>,
    /// How the arguments' own object of the prop being built is narrowed; taken by the first
    /// object built, so nested objects are not.
    top: Option<Top>,
}

/// How one prop's arguments are narrowed at their top level (see [`Narrowing`]).
#[derive(Default)]
struct Top {
    /// The values `path` may take; any when empty.
    paths: Vec<String>,
    /// Texts the written text (see [`text_key`]) may not be.
    not_texts: Vec<String>,
    /// Required arguments only.
    lean: bool,
    /// String arguments at most [`LEAN_STRING`] characters long.
    bounded: bool,
    /// For a replacing prop in a lean grammar, the files and lines it may replace (see
    /// [`Narrowing::seen`]).
    seen: Option<Vec<Seen>>,
    /// A replacing prop's `new` is one of the line's mutations (see [`Builder::candidates`]).
    search: bool,
}

impl Builder {
    fn add(&mut self, name: String, body: String) -> String {
        self.rules.push((name.clone(), body));
        name
    }

    /// A prop's arguments: always a JSON object.
    fn arguments(&mut self, schema: &Value, name: &str) -> String {
        if schema.get("properties").is_some() {
            self.object(schema, name)
        } else {
            "object".into()
        }
    }

    /// An expression matching the JSON values `schema` allows.
    fn value(&mut self, schema: &Value, name: &str) -> String {
        if !schema.is_object() {
            return "value".into();
        }
        if let Some(c) = schema.get("const") {
            return json_literal(c);
        }
        if let Some(values) = schema.get("enum").and_then(Value::as_array) {
            if values.is_empty() {
                return "value".into();
            }
            let alts: Vec<String> = values.iter().map(json_literal).collect();
            return format!("({})", alts.join(" | "));
        }
        for key in ["anyOf", "oneOf"] {
            if let Some(subs) = schema.get(key).and_then(Value::as_array) {
                let alts: Vec<String> = subs
                    .iter()
                    .enumerate()
                    .map(|(i, s)| self.value(s, &format!("{name}-{i}")))
                    .collect();
                if !alts.is_empty() {
                    return format!("({})", alts.join(" | "));
                }
            }
        }
        match schema.get("type") {
            Some(Value::String(t)) => self.typed(t, schema, name),
            Some(Value::Array(ts)) => {
                let alts: Vec<String> = ts
                    .iter()
                    .filter_map(Value::as_str)
                    .enumerate()
                    .map(|(i, t)| self.typed(t, schema, &format!("{name}-{i}")))
                    .collect();
                if alts.is_empty() {
                    "value".into()
                } else {
                    format!("({})", alts.join(" | "))
                }
            }
            _ if schema.get("properties").is_some() => self.object(schema, name),
            _ => "value".into(),
        }
    }

    fn typed(&mut self, t: &str, schema: &Value, name: &str) -> String {
        match t {
            "string" | "integer" | "number" | "boolean" | "null" => t.into(),
            "array" => {
                let item = match schema.get("items") {
                    Some(items) => self.value(items, &format!("{name}-item")),
                    None => "value".into(),
                };
                let body = format!("\"[\" ws ({item} (\",\" ws {item})*)? ws \"]\"");
                self.add(name.into(), body)
            }
            "object" if schema.get("properties").is_some() => self.object(schema, name),
            "object" => "object".into(),
            _ => "value".into(),
        }
    }

    /// An object with the schema's properties: required ones first, in the order `required`
    /// lists them, then each optional one at most once, in the order `properties` lists them.
    fn object(&mut self, schema: &Value, name: &str) -> String {
        let empty = serde_json::Map::new();
        let props = schema
            .get("properties")
            .and_then(Value::as_object)
            .unwrap_or(&empty);
        let required = required(schema);
        // Only the arguments' own object (built first) is narrowed, not nested ones.
        let top = self.top.take().unwrap_or_default();
        if let Some(seen) = &top.seen {
            return self.replacement(seen, top.search, name);
        }
        let text = text_key(schema);
        let member = |b: &mut Builder, i: usize, key: &str| {
            let sub = props.get(key).cloned().unwrap_or(Value::Bool(true));
            let rule = format!("{name}-{i}");
            let value = if key == PATH && is_string_schema(&sub) && !top.paths.is_empty() {
                let alts: Vec<String> = top
                    .paths
                    .iter()
                    .map(|p| json_literal(&Value::String(p.clone())))
                    .collect();
                format!("({})", alts.join(" | "))
            } else if key == text && is_string_schema(&sub) && !top.not_texts.is_empty() {
                b.not_among(&top.not_texts, &rule)
            } else if top.bounded && is_string_schema(&sub) {
                b.add(rule, format!("\"\\\"\" char{{0,{LEAN_STRING}}} \"\\\"\""))
            } else {
                b.value(&sub, &rule)
            };
            let key = Value::String(key.into());
            format!("{} ws {value}", literal(&format!("{key}:")))
        };
        let mut kv = Vec::new();
        for (i, key) in required.iter().enumerate() {
            kv.push((true, member(self, i, key)));
        }
        for (i, key) in props.keys().enumerate() {
            if !required.contains(key) && !top.lean {
                kv.push((false, member(self, required.len() + i, key)));
            }
        }
        let req: Vec<&String> = kv.iter().filter(|(r, _)| *r).map(|(_, m)| m).collect();
        let opt: Vec<&String> = kv.iter().filter(|(r, _)| !*r).map(|(_, m)| m).collect();
        let tail = |from: usize| -> String {
            opt[from..]
                .iter()
                .map(|m| format!(" (\",\" ws {m})?"))
                .collect()
        };
        let inner = if let Some((first, rest)) = req.split_first() {
            let mut s = (*first).clone();
            for m in rest {
                let _ = write!(s, " \",\" ws {m}");
            }
            s.push_str(&tail(0));
            s
        } else if opt.is_empty() {
            String::new()
        } else {
            let alts: Vec<String> = (0..opt.len())
                .map(|i| format!("{}{}", opt[i], tail(i + 1)))
                .collect();
            format!("({})?", alts.join(" | "))
        };
        let body = if inner.is_empty() {
            "\"{\" ws \"}\"".to_string()
        } else {
            format!("\"{{\" ws {inner} ws \"}}\"")
        };
        self.add(name.into(), body)
    }
}

impl Builder {
    /// The arguments of a replacing prop narrowed to the files seen (see [`Narrowing::seen`]):
    /// `{"path": P, "old": L, "new": N}` where `L` is one of `P`'s lines and `N` a small change
    /// ([`Self::small_change`]) of that line as first seen ([`Line::first`]), or with `search`
    /// one of its mutations ([`Self::candidates`]).
    fn replacement(&mut self, seen: &[Seen], search: bool, name: &str) -> String {
        let key = |k: &str| literal(&format!("\"{k}\":"));
        let mut files = Vec::new();
        for (f, file) in seen.iter().enumerate() {
            let mut olds = Vec::new();
            for (l, line) in file.lines.iter().enumerate() {
                let rule = format!("{name}-{f}-{l}");
                let new = if search {
                    self.candidates(line, &rule)
                } else {
                    self.small_change(&line.first, &rule)
                };
                let old = json_literal(&Value::String(line.now.clone()));
                olds.push(format!("{old} \",\" ws {} ws {new}", key(NEW)));
            }
            let path = json_literal(&Value::String(file.path.clone()));
            files.push(format!(
                "{} ws {path} \",\" ws {} ws ({})",
                key(PATH),
                key(OLD),
                olds.join(" | ")
            ));
        }
        let body = format!("\"{{\" ws ({}) ws \"}}\"", files.join(" | "));
        self.add(name.into(), body)
    }

    /// A JSON string that is `line` changed in one place, keeping at least half of it: copied
    /// up to a point, then either some text (at most [`MAX_CHANGE`] characters, opening with a
    /// character other than the line's next) or nothing but a part of the line left out, and
    /// the line again from a point on to its end. So never the line itself, never longer than
    /// twice the line and the change, and never a short text in place of the line (`None` for
    /// every line of a file, a fix-the-test run's 135M model wrote). A one-line fix is such a
    /// change (an operator, a term dropped, a name).
    ///
    /// Rules, for the line's JSON-escaped units `u0 … u(n-1)` and `h = n / 2`: `-p{k}`,
    /// `u0…u(k-1)` copied; `-s{k}`, the line from `u{k}` to its end and the closing quote;
    /// `-d{k}` any `-s{j}` with `j > k`; `-e{k}`, the same up to `j ≤ h`. After text put in
    /// at `k` the line resumes at `j ≥ k`, by `h` when `k < h`; a part left out from `k` ends
    /// anywhere when `k ≥ n - h`, else by `h`. Linear in the line.
    fn small_change(&mut self, line: &str, name: &str) -> String {
        let units = escaped_units(line);
        let n = units.len();
        let half = n / 2;
        let free = |first: Option<&str>, k: usize| {
            let plain = first
                .filter(|u| !u.starts_with('\\'))
                .and_then(|u| u.chars().next())
                .map(|c| format!("\\U{:08X}", u32::from(c)))
                .unwrap_or_default();
            // The line resumes where the text went in or later: by `h` from before `h`.
            let resume = if k >= n {
                format!("{name}-s{n}")
            } else if k < half {
                format!("({name}-s{k} | {name}-e{k})")
            } else {
                format!("({name}-s{k} | {name}-d{k})")
            };
            format!(
                r#"[^"\\\x7F\x00-\x1F{plain}] char{{0,{}}} {resume}"#,
                MAX_CHANGE - 1
            )
        };
        let rule = |b: &mut Builder, rule: String, body: String| b.rules.push((rule, body));
        for (k, unit) in units.iter().enumerate() {
            let next = k + 1;
            rule(
                self,
                format!("{name}-s{k}"),
                format!("{} {name}-s{next}", literal(unit)),
            );
            let skip = |chain: &str, last: usize| {
                if next == last {
                    format!("{name}-s{last}")
                } else {
                    format!("{name}-s{next} | {name}-{chain}{next}")
                }
            };
            rule(self, format!("{name}-d{k}"), skip("d", n));
            if k < half {
                rule(self, format!("{name}-e{k}"), skip("e", half));
            }
            let left_out = if k + half >= n {
                format!(" | {name}-d{k}")
            } else if k < half {
                format!(" | {name}-e{k}")
            } else {
                String::new()
            };
            rule(
                self,
                format!("{name}-p{k}"),
                format!(
                    "{} {name}-p{next} | {}{left_out}",
                    literal(unit),
                    free(Some(unit), k)
                ),
            );
        }
        rule(self, format!("{name}-s{n}"), r#""\"""#.to_string());
        rule(self, format!("{name}-p{n}"), free(None, n));
        self.add(name.into(), format!(r#""\"" {name}-p0"#))
    }

    /// A JSON string that is one of `line`'s mutations ([`mutation::candidates`]): a trie of
    /// their JSON-escaped characters, one rule per branching point, so the model's token
    /// choices rank them (copying the line goes furthest, so the first tries change its end).
    fn candidates(&mut self, line: &Line, name: &str) -> String {
        let texts = mutation::candidates(&line.first, &line.now, &line.tried);
        let units: Vec<Vec<String>> = texts.iter().map(|t| escaped_units(t)).collect();
        let all: Vec<&[String]> = units.iter().map(Vec::as_slice).collect();
        let mut count = 0;
        let root = self.trie(&all, name, &mut count);
        self.add(name.into(), format!(r#""\"" {root}"#))
    }

    /// The rule matching each of `texts` (units after a common prefix) and then the closing
    /// quote: their common prefix as one literal, then an alternation by next unit.
    fn trie(&mut self, texts: &[&[String]], name: &str, count: &mut usize) -> String {
        let shared = texts.first().map_or(0, |first| {
            (0..first.len())
                .take_while(|&i| texts.iter().all(|t| t.get(i) == first.get(i)))
                .count()
        });
        let prefix: String = texts
            .first()
            .map_or(String::new(), |t| t[..shared].concat());
        let mut alts = Vec::new();
        let mut groups: Vec<(&String, Vec<&[String]>)> = Vec::new();
        for text in texts.iter().map(|t| &t[shared..]) {
            match text.first() {
                None => alts.push(r#""\"""#.to_string()),
                Some(unit) => match groups.iter_mut().find(|(u, _)| *u == unit) {
                    Some((_, group)) => group.push(text),
                    None => groups.push((unit, vec![text])),
                },
            }
        }
        for (_, group) in groups {
            alts.push(self.trie(&group, name, count));
        }
        *count += 1;
        let rule = format!("{name}-t{count}");
        let body = match (prefix.is_empty(), alts.as_slice()) {
            (true, [one]) => one.clone(),
            (true, _) => alts.join(" | "),
            (false, [one]) => format!("{} {one}", literal(&prefix)),
            (false, _) => format!("{} ({})", literal(&prefix), alts.join(" | ")),
        };
        self.add(rule, body)
    }

    /// A JSON string other than each of `texts`: a trie of the texts' JSON-escaped characters,
    /// one rule per node, where the string may close (unless a text ends there), go on with a
    /// character no text has next (then anything), or follow a text one character further. An
    /// escape no text has next is allowed only where no text has an escape next (a `\\u`
    /// escape spelling the same character as a plain one would slip past otherwise).
    fn not_among(&mut self, texts: &[String], name: &str) -> String {
        let mut nodes: Vec<(Vec<(String, usize)>, bool)> = vec![(Vec::new(), false)];
        for text in texts {
            let mut at = 0;
            for unit in escaped_units(text) {
                at = match nodes[at].0.iter().find(|(u, _)| *u == unit) {
                    Some(&(_, next)) => next,
                    None => {
                        nodes.push((Vec::new(), false));
                        let next = nodes.len() - 1;
                        nodes[at].0.push((unit, next));
                        next
                    }
                };
            }
            nodes[at].1 = true;
        }
        for (k, (children, ends)) in nodes.iter().enumerate() {
            let mut alts = Vec::new();
            if !ends {
                alts.push(r#""\"""#.to_string());
            }
            let plain: String = children
                .iter()
                .filter(|(u, _)| !u.starts_with('\\'))
                .filter_map(|(u, _)| u.chars().next())
                .map(|c| format!("\\U{:08X}", u32::from(c)))
                .collect();
            alts.push(format!(r#"[^"\\\x7F\x00-\x1F{plain}] char* "\"""#));
            if children.iter().all(|(u, _)| !u.starts_with('\\')) {
                alts.push(
                    r#""\\" (["\\/bfnrt] | "u" [0-9a-fA-F] [0-9a-fA-F] [0-9a-fA-F] [0-9a-fA-F]) char* "\"""#
                        .to_string(),
                );
            }
            for (unit, next) in children {
                alts.push(format!("{} {name}-n{next}", literal(unit)));
            }
            self.rules.push((format!("{name}-n{k}"), alts.join(" | ")));
        }
        self.add(name.into(), format!(r#""\"" {name}-n0"#))
    }
}

/// `seen` less the refused edits of the prop `prop` among `avoid`: with `search` the refused
/// `new` counts as tried for every line of its file (it is no candidate again, see
/// [`mutation::candidates`]); without, the refused `old` line is left out (a small change of it
/// would be drawn from the same grammar, and greedy decoding writes the same one again). A
/// narrowed edit's grammar is built from `seen` alone, so a refusal must show here or the retry
/// makes the refused edit again.
fn avoided(seen: &[Seen], avoid: &[Avoid], prop: &str, search: bool) -> Vec<Seen> {
    let mut out = seen.to_vec();
    for avoid in avoid.iter().filter(|a| a.prop == prop) {
        let Some(file) = out
            .iter_mut()
            .find(|f| avoid.path.as_deref() == Some(f.path.as_str()))
        else {
            continue;
        };
        match (search, &avoid.text, &avoid.old) {
            (true, Some(text), _) => {
                for line in &mut file.lines {
                    line.tried.push(text.clone());
                }
            }
            (false, _, Some(old)) => file.lines.retain(|l| &l.now != old),
            _ => {}
        }
    }
    out.retain(|f| !f.lines.is_empty());
    out
}

/// `seen` less the lines a forced edit has no mutation left for (see [`Builder::candidates`]),
/// and the files left without lines; lines past [`MAX_SEARCH_BYTES`] of candidates in all
/// (files seen last first, as `seen` lists them) are left out too.
fn searchable(seen: &[Seen]) -> Vec<Seen> {
    let mut budget = MAX_SEARCH_BYTES;
    let mut out = Vec::new();
    for file in seen {
        let mut lines = Vec::new();
        for line in &file.lines {
            let size: usize = mutation::candidates(&line.first, &line.now, &line.tried)
                .iter()
                .map(String::len)
                .sum();
            if size > 0 && size <= budget {
                budget -= size;
                lines.push(line.clone());
            }
        }
        if !lines.is_empty() {
            out.push(Seen {
                path: file.path.clone(),
                lines,
            });
        }
    }
    out
}

/// The most bytes of candidates (see [`searchable`]) a forced edit's grammar offers: each is a
/// branch of the grammar, parsed for every reply.
pub const MAX_SEARCH_BYTES: usize = 64 * 1024;

/// The characters of `text` as JSON writes them inside a string: a plain character, or an
/// escape (`\\n`, `\\"`, `\\u001b`) as one unit.
fn escaped_units(text: &str) -> Vec<String> {
    let json = Value::String(text.to_string()).to_string();
    let inner = &json[1..json.len() - 1];
    let mut units = Vec::new();
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        let mut unit = c.to_string();
        if c == '\\' {
            let escape = chars.next().unwrap_or('\\');
            unit.push(escape);
            if escape == 'u' {
                unit.extend(chars.by_ref().take(4));
            }
        }
        units.push(unit);
    }
    units
}

/// A reply read back as a call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Parsed {
    /// A complete call: the prop's name and its arguments' JSON text.
    Call { name: String, arguments: String },
    /// A call cut off before its JSON closed (the output-token limit): the name when it was
    /// written in full, and the arguments so far.
    Partial {
        name: Option<String>,
        arguments: String,
    },
}

/// Reads a grammar-constrained call back: `{"tool": "<name>", "arguments": <json>}`.
pub fn parse(reply: &str) -> Parsed {
    let reply = reply.trim();
    let partial = |name: Option<String>, arguments: &str| Parsed::Partial {
        name,
        arguments: arguments.to_string(),
    };
    let Some(rest) = reply.strip_prefix(CALL_OPEN) else {
        return partial(None, "");
    };
    let mut names = serde_json::Deserializer::from_str(rest).into_iter::<String>();
    let Some(Ok(name)) = names.next() else {
        return partial(None, "");
    };
    let rest = &rest[names.byte_offset()..];
    let Some(arguments) = rest.strip_prefix(CALL_ARGS) else {
        return partial(Some(name), "");
    };
    let complete = serde_json::from_str::<Value>(reply).is_ok();
    match arguments.strip_suffix('}') {
        Some(arguments) if complete => Parsed::Call {
            name,
            arguments: arguments.to_string(),
        },
        _ => partial(Some(name), arguments),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec(name: &str, parameters: Value) -> ToolSpec {
        ToolSpec {
            name: name.into(),
            description: format!("The {name} prop."),
            parameters,
        }
    }

    #[test]
    fn the_call_envelope_round_trips() {
        let json = call_json("read", r#"{"path": "a.txt"}"#);
        assert_eq!(json, r#"{"tool": "read", "arguments": {"path": "a.txt"}}"#);
        assert_eq!(
            parse(&json),
            Parsed::Call {
                name: "read".into(),
                arguments: r#"{"path": "a.txt"}"#.into()
            }
        );
        assert_eq!(
            call_json("list", ""),
            r#"{"tool": "list", "arguments": {}}"#
        );
    }

    #[test]
    fn cut_off_calls_parse_as_partial() {
        assert_eq!(
            parse(r#"{"tool": "read", "arguments": {"path": "a.t"#),
            Parsed::Partial {
                name: Some("read".into()),
                arguments: r#"{"path": "a.t"#.into()
            }
        );
        assert_eq!(
            parse(r#"{"tool": "rea"#),
            Parsed::Partial {
                name: None,
                arguments: String::new()
            }
        );
        // The arguments' own closing brace is not the call's.
        assert!(matches!(
            parse(r#"{"tool": "read", "arguments": {"path": "a"}"#),
            Parsed::Partial { .. }
        ));
    }

    #[test]
    fn instructions_list_signatures_with_required_first() {
        let tools = [spec(
            "read",
            json!({"type": "object", "properties": {"limit": {"type": "integer"}, "path": {"type": "string"}}, "required": ["path"]}),
        )];
        let text = instructions(&tools);
        assert!(
            text.contains("- read(path: string, limit?: integer): The read prop."),
            "{text}"
        );
        assert!(text.contains(r#"{"tool": "<name>", "arguments": {...}}"#));
    }

    #[test]
    fn grammar_names_every_prop_and_follows_the_schema() {
        let tools = [
            spec(
                "read",
                json!({"type": "object", "properties": {"path": {"type": "string"}, "limit": {"type": "integer"}}, "required": ["path"]}),
            ),
            spec(
                "mode",
                json!({"type": "object", "properties": {"level": {"enum": ["low", "high"]}, "on": {"type": "boolean"}, "ratio": {"type": "number"}}}),
            ),
        ];
        let g = gbnf(&tools, false);
        assert!(g.starts_with("root ::= lead (call | text)\n"), "{g}");
        assert!(
            g.contains(r#"call ::= "{\"tool\": " (call-0 | call-1)"#),
            "{g}"
        );
        assert!(
            g.contains(r#"call-0 ::= "\"read\", \"arguments\": " args-0 "}""#),
            "{g}"
        );
        // Required `path` first, then optional `limit`.
        assert!(
            g.contains(
                r#"args-0 ::= "{" ws "\"path\":" ws string ("," ws "\"limit\":" ws integer)? ws "}""#
            ),
            "{g}"
        );
        // No required properties: any one optional may come first, each at most once.
        assert!(g.contains(r#"("\"low\"" | "\"high\"")"#), "{g}");
        assert!(g.contains(r#"args-1 ::= "{" ws ("\"level\":""#), "{g}");
        let required = gbnf(&tools, true);
        assert!(required.starts_with("root ::= lead call\n"));
        assert!(!required.contains("text ::="));
    }

    #[test]
    fn nested_arrays_objects_and_unions() {
        let tools = [spec(
            "edit",
            json!({"type": "object", "properties": {
                "edits": {"type": "array", "items": {"type": "object", "properties": {"old": {"type": "string"}, "new": {"type": "string"}}, "required": ["old", "new"]}},
                "note": {"type": ["string", "null"]},
                "any": {},
                "kind": {"const": "patch"},
                "either": {"anyOf": [{"type": "integer"}, {"type": "boolean"}]}
            }, "required": ["edits"]}),
        )];
        let g = gbnf(&tools, false);
        assert!(
            g.contains(r#"args-0-0 ::= "[" ws (args-0-0-item ("," ws args-0-0-item)*)? ws "]""#),
            "{g}"
        );
        assert!(
            g.contains(
                r#"args-0-0-item ::= "{" ws "\"old\":" ws string "," ws "\"new\":" ws string ws "}""#
            ),
            "{g}"
        );
        assert!(g.contains("(string | null)"), "{g}");
        assert!(g.contains(r#""\"kind\":" ws "\"patch\"""#), "{g}");
        assert!(g.contains(r#""\"any\":" ws value"#), "{g}");
        assert!(g.contains("(integer | boolean)"), "{g}");
        // Every rule referenced is defined.
        let defined: Vec<&str> = g
            .lines()
            .filter_map(|l| l.split_once(" ::= ").map(|(n, _)| n))
            .collect();
        for line in g.lines() {
            let body = line.split_once(" ::= ").map_or("", |(_, b)| b);
            let mut in_str = false;
            let mut in_class = false;
            let mut prev = ' ';
            let mut word = String::new();
            for c in body.chars().chain(std::iter::once(' ')) {
                if in_str {
                    in_str = !(c == '"' && prev != '\\');
                } else if in_class {
                    in_class = !(c == ']' && prev != '\\');
                } else if c == '"' {
                    in_str = true;
                } else if c == '[' {
                    in_class = true;
                } else if c.is_ascii_alphanumeric() || c == '-' {
                    word.push(c);
                } else {
                    if !word.is_empty() && !word.chars().all(|c| c.is_ascii_digit()) {
                        assert!(
                            defined.contains(&word.as_str()),
                            "`{word}` undefined in {g}"
                        );
                    }
                    word.clear();
                }
                prev = if prev == '\\' && c == '\\' { ' ' } else { c };
            }
        }
    }

    #[test]
    fn a_warned_prop_is_left_out_and_without_others_only_text_remains() {
        let tools = [
            spec(
                "read",
                json!({"type": "object", "properties": {"path": {"type": "string"}}}),
            ),
            spec("list", json!({"type": "object"})),
        ];
        let g = gbnf_without(&tools, true, "read");
        assert!(g.starts_with("root ::= lead call\n"), "{g}");
        assert!(g.contains(r#""\"list\", \"arguments\": ""#), "{g}");
        assert!(!g.contains(r#""\"read\""#), "{g}");
        // The only prop refused: text, even where calls are required.
        let g = gbnf_without(&tools[..1], true, "read");
        assert!(g.starts_with("root ::= lead text\n"), "{g}");
        assert!(!g.contains("call"), "{g}");
        assert!(g.contains("text ::= ") && g.contains("lead ::= "), "{g}");
    }

    #[test]
    fn paths_narrow_the_path_argument_and_a_refused_path_leaves_the_others() {
        let path_schema = json!({"type": "object", "properties": {
            "path": {"type": "string"},
            "items": {"type": "array", "items": {"type": "object", "properties": {"path": {"type": "string"}}}}
        }, "required": ["path"]});
        let tools = [
            spec("read", path_schema),
            spec(
                "bash",
                json!({"type": "object", "properties": {"command": {"type": "string"}}}),
            ),
        ];
        let mut narrowing = Narrowing {
            required: true,
            paths: vec!["src/lib.rs".into(), "tests/mean.rs".into()],
            avoid: Vec::new(),
            lean: false,
            ..Narrowing::default()
        };
        let g = gbnf_narrowed(&tools, &narrowing);
        assert!(
            g.contains(r#""\"path\":" ws ("\"src/lib.rs\"" | "\"tests/mean.rs\"")"#),
            "{g}"
        );
        // Only the arguments' own `path`: a nested one stays a free string.
        assert!(
            g.contains(r#"args-0-1-item ::= "{" ws ("\"path\":" ws string)? ws "}""#),
            "{g}"
        );
        narrowing.avoid = vec![Avoid {
            prop: "read".into(),
            path: Some("tests/mean.rs".into()),
            text: None,
            old: None,
        }];
        let g = gbnf_narrowed(&tools, &narrowing);
        assert!(g.contains(r#""\"path\":" ws ("\"src/lib.rs\"")"#), "{g}");
        assert!(!g.contains("tests/mean.rs"), "{g}");
        // The last path refused, or a call without one: the prop goes.
        narrowing.paths.truncate(1);
        narrowing.avoid = vec![Avoid {
            prop: "read".into(),
            path: Some("src/lib.rs".into()),
            text: None,
            old: None,
        }];
        let g = gbnf_narrowed(&tools, &narrowing);
        assert!(
            !g.contains(r#""\"read\""#) && g.contains(r#""\"bash\""#),
            "{g}"
        );
    }

    #[test]
    fn props_that_write_files_keep_any_path_while_reads_are_narrowed() {
        let tools = [
            spec(
                "read",
                json!({"type": "object", "properties": {"path": {"type": "string"}}}),
            ),
            spec(
                "write",
                json!({"type": "object", "properties": {
                    "path": {"type": "string"}, "content": {"type": "string"}}}),
            ),
            spec(
                "edit",
                json!({"type": "object", "properties": {
                    "path": {"type": "string"}, "old": {"type": "string"},
                    "new": {"type": "string"}}}),
            ),
        ];
        let narrowing = Narrowing {
            required: true,
            paths: vec!["src/lib.rs".into()],
            avoid: Vec::new(),
            lean: false,
            ..Narrowing::default()
        };
        let g = gbnf_narrowed(&tools, &narrowing);
        let rule = |name: &str| {
            g.lines()
                .find(|l| l.starts_with(&format!("{name} ::= ")))
                .unwrap_or_else(|| panic!("no rule {name} in {g}"))
                .to_string()
        };
        assert!(rule("args-0").contains(r#"("\"src/lib.rs\"")"#), "{g}");
        for args in ["args-1", "args-2"] {
            let rule = rule(args);
            assert!(rule.contains(r#""\"path\":" ws string"#), "{rule}");
            assert!(!rule.contains("src/lib.rs"), "{rule}");
        }
    }

    fn rule<'g>(g: &'g str, name: &str) -> &'g str {
        g.lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ::= ")))
            .unwrap_or_else(|| panic!("no rule {name} in {g}"))
    }

    #[test]
    fn a_repeated_write_refuses_only_the_text_it_wrote() {
        let tools = [spec(
            "write",
            json!({"type": "object", "properties": {
                "path": {"type": "string"}, "content": {"type": "string"}},
                "required": ["path", "content"]}),
        )];
        let mut narrowing = Narrowing {
            required: true,
            avoid: vec![Avoid {
                prop: "write".into(),
                path: Some("a.txt".into()),
                text: Some("h\"i".into()),
                old: None,
            }],
            ..Narrowing::default()
        };
        let g = gbnf_narrowed(&tools, &narrowing);
        assert!(g.contains(r#""\"write\", \"arguments\": ""#), "{g}");
        // `content` is any string but `h"i`: a trie of its escaped characters.
        assert!(
            rule(&g, "args-0").contains(r#""\"content\":" ws args-0-1"#),
            "{g}"
        );
        assert_eq!(rule(&g, "args-0-1"), r#""\"" args-0-1-n0"#);
        let root = rule(&g, "args-0-1-n0");
        assert!(
            root.starts_with(r#""\"" | [^"\\\x7F\x00-\x1F\U00000068] char* "\"""#),
            "{root}"
        );
        assert!(root.ends_with(r#""h" args-0-1-n1"#), "{root}");
        // After `h`, an escape is next: only other plain characters deviate.
        let after_h = rule(&g, "args-0-1-n1");
        assert!(after_h.contains(r#""\\\"" args-0-1-n2"#), "{after_h}");
        assert!(!after_h.contains(r#""\\" (["#), "{after_h}");
        // Where the refused text ends, the string may not close; it may go on.
        let end = rule(&g, "args-0-1-n3");
        assert!(!end.starts_with(r#""\"" |"#), "{end}");
        assert!(end.contains("char*"), "{end}");
        // A refused call of a prop that writes nothing, or without its text, leaves it out.
        narrowing.avoid[0].text = None;
        let g = gbnf_narrowed(&tools, &narrowing);
        assert!(!g.contains(r#""\"write\""#), "{g}");
    }

    #[test]
    fn lean_calls_take_required_arguments_and_short_strings() {
        let tools = [
            spec(
                "read",
                json!({"type": "object", "properties": {"path": {"type": "string"},
                    "limit": {"type": "integer"}}, "required": ["path"]}),
            ),
            spec(
                "write",
                json!({"type": "object", "properties": {"path": {"type": "string"},
                    "content": {"type": "string"}}, "required": ["path", "content"]}),
            ),
        ];
        let narrowing = Narrowing {
            required: true,
            lean: true,
            ..Narrowing::default()
        };
        let g = gbnf_narrowed(&tools, &narrowing);
        assert_eq!(
            rule(&g, "args-0"),
            r#""{" ws "\"path\":" ws args-0-0 ws "}""#
        );
        assert_eq!(
            rule(&g, "args-0-0"),
            format!(r#""\"" char{{0,{LEAN_STRING}}} "\"""#)
        );
        // What a writing prop writes is as long as it needs.
        assert!(
            rule(&g, "args-1").contains(r#""\"content\":" ws string"#),
            "{g}"
        );
        let full = gbnf(&tools, true);
        assert!(rule(&full, "args-0").contains("limit"), "{full}");
    }

    #[test]
    fn a_lean_edit_replaces_a_line_of_a_file_seen_with_other_text() {
        let tools = [
            spec(
                "read",
                json!({"type": "object", "properties": {"path": {"type": "string"}},
                    "required": ["path"]}),
            ),
            spec(
                "edit",
                json!({"type": "object", "properties": {"path": {"type": "string"},
                    "old": {"type": "string"}, "new": {"type": "string"},
                    "all": {"type": "boolean"}}, "required": ["path", "old", "new"]}),
            ),
        ];
        let mut narrowing = Narrowing {
            required: true,
            lean: true,
            seen: vec![Seen {
                path: "src/lib.rs".into(),
                lines: vec![Line::new("a + 1"), Line::new("say(\"hi\")")],
            }],
            ..Narrowing::default()
        };
        let g = gbnf_narrowed(&tools, &narrowing);
        assert_eq!(
            rule(&g, "args-1"),
            r#""{" ws ("\"path\":" ws "\"src/lib.rs\"" "," ws "\"old\":" ws ("\"a + 1\"" "," ws "\"new\":" ws args-1-0-0 | "\"say(\\\"hi\\\")\"" "," ws "\"new\":" ws args-1-0-1)) ws "}""#
        );
        // `new` is a small change of the line: copied up to a point, then other text or a
        // part left out, then the line again from any point to its end.
        assert_eq!(rule(&g, "args-1-0-0"), r#""\"" args-1-0-0-p0"#);
        // `a + 1`: five units, half is 2. Text put in at the start resumes by unit 2; a part
        // left out from the start ends by unit 2.
        assert_eq!(
            rule(&g, "args-1-0-0-p0"),
            format!(
                r#""a" args-1-0-0-p1 | [^"\\\x7F\x00-\x1F\U00000061] char{{0,{}}} (args-1-0-0-s0 | args-1-0-0-e0) | args-1-0-0-e0"#,
                MAX_CHANGE - 1
            )
        );
        assert_eq!(rule(&g, "args-1-0-0-e0"), "args-1-0-0-s1 | args-1-0-0-e1");
        assert_eq!(rule(&g, "args-1-0-0-e1"), "args-1-0-0-s2");
        // In the middle, nothing is left out: it would keep less than half.
        assert!(
            rule(&g, "args-1-0-0-p2").ends_with("(args-1-0-0-s2 | args-1-0-0-d2)"),
            "{g}"
        );
        // From unit 3 on, a part left out may end anywhere.
        assert!(
            rule(&g, "args-1-0-0-p3").ends_with(" | args-1-0-0-d3"),
            "{g}"
        );
        assert_eq!(rule(&g, "args-1-0-0-d3"), "args-1-0-0-s4 | args-1-0-0-d4");
        assert_eq!(rule(&g, "args-1-0-0-d4"), "args-1-0-0-s5");
        assert_eq!(rule(&g, "args-1-0-0-s4"), r#""1" args-1-0-0-s5"#);
        assert_eq!(rule(&g, "args-1-0-0-s5"), r#""\"""#);
        // Copied to its end, the line can only go on: it is never written unchanged.
        assert_eq!(
            rule(&g, "args-1-0-0-p5"),
            format!(
                r#"[^"\\\x7F\x00-\x1F] char{{0,{}}} args-1-0-0-s5"#,
                MAX_CHANGE - 1
            )
        );
        // Escapes are units: `\"` is copied as one.
        assert!(
            rule(&g, "args-1-0-1-p4").starts_with(r#""\\\"" args-1-0-1-p5"#),
            "{g}"
        );
        // Only required arguments, and the read stays as it was.
        assert!(!rule(&g, "args-1").contains("all"), "{g}");
        assert!(rule(&g, "call-0").contains("read"), "{g}");
        // A write forced: only the edit is offered.
        narrowing.writes_only = true;
        let g = gbnf_narrowed(&tools, &narrowing);
        assert!(
            !g.contains(r#""\"read\""#) && g.contains(r#""\"edit\""#),
            "{g}"
        );
        // No file seen: the edit cannot be made, and a forced write falls back to the others.
        narrowing.seen.clear();
        let g = gbnf_narrowed(&tools, &narrowing);
        assert!(
            g.contains(r#""\"read\""#) && !g.contains(r#""\"edit\""#),
            "{g}"
        );
        // Not lean (the checks pass): any text.
        let g = gbnf_narrowed(
            &tools,
            &Narrowing {
                seen: vec![Seen {
                    path: "src/lib.rs".into(),
                    lines: vec![Line::new("a + 1")],
                }],
                ..Narrowing::default()
            },
        );
        assert!(
            rule(&g, "args-1").contains(r#""\"old\":" ws string"#),
            "{g}"
        );
    }

    /// Every string the rule `name` of `g` matches, for rules of literals, rule names,
    /// parentheses and `|` only (a finite language, as a forced edit's `new` is).
    fn language(g: &str, name: &str) -> Vec<String> {
        fn tokens(body: &str) -> Vec<String> {
            let mut out = Vec::new();
            let mut chars = body.chars().peekable();
            while let Some(c) = chars.next() {
                match c {
                    ' ' => {}
                    '(' | ')' | '|' => out.push(c.to_string()),
                    '"' => {
                        let mut lit = String::from("\"");
                        while let Some(c) = chars.next() {
                            match c {
                                '\\' => {
                                    let next = chars.next().expect("escape");
                                    lit.push(match next {
                                        'n' => '\n',
                                        't' => '\t',
                                        'r' => '\r',
                                        other => other,
                                    });
                                }
                                '"' => break,
                                c => lit.push(c),
                            }
                        }
                        out.push(lit);
                    }
                    c => {
                        let mut word = String::from(c);
                        while chars.peek().is_some_and(|c| !" ()|".contains(*c)) {
                            word.extend(chars.next());
                        }
                        out.push(word);
                    }
                }
            }
            out
        }
        // seq := item*; alt := seq ("|" seq)*; item := literal | name | "(" alt ")".
        fn alt(g: &str, t: &[String], at: &mut usize) -> Vec<String> {
            let mut all = seq(g, t, at);
            while t.get(*at).is_some_and(|x| x == "|") {
                *at += 1;
                all.extend(seq(g, t, at));
            }
            all
        }
        fn seq(g: &str, t: &[String], at: &mut usize) -> Vec<String> {
            let mut all = vec![String::new()];
            while let Some(x) = t.get(*at).filter(|x| *x != "|" && *x != ")") {
                *at += 1;
                let item = if let Some(lit) = x.strip_prefix('"') {
                    vec![lit.to_string()]
                } else if x == "(" {
                    let inner = alt(g, t, at);
                    *at += 1;
                    inner
                } else {
                    language(g, x)
                };
                all = all
                    .iter()
                    .flat_map(|a| item.iter().map(move |b| format!("{a}{b}")))
                    .collect();
            }
            all
        }
        let t = tokens(rule(g, name));
        let mut at = 0;
        let all = alt(g, &t, &mut at);
        assert_eq!(at, t.len(), "{name} parsed to its end");
        all
    }

    #[test]
    fn a_forced_edit_writes_one_of_the_first_lines_mutations_not_yet_tried() {
        let tools = [spec(
            "edit",
            json!({"type": "object", "properties": {"path": {"type": "string"},
                "old": {"type": "string"}, "new": {"type": "string"}},
                "required": ["path", "old", "new"]}),
        )];
        let first = "f(\"a\", n + 1)";
        let line = Line {
            now: "f(\"a\", n + 2)".into(),
            first: first.into(),
            tried: vec!["f(\"a\", n + 2)".into(), "f(\"a\", n)".into()],
        };
        let mut narrowing = Narrowing {
            required: true,
            lean: true,
            writes_only: true,
            seen: vec![Seen {
                path: "src/lib.rs".into(),
                lines: vec![line.clone(), Line::new("}")],
            }],
            ..Narrowing::default()
        };
        let g = gbnf_narrowed(&tools, &narrowing);
        // The line's `new`: exactly its candidates, JSON-escaped, each closed by its quote.
        let expected: Vec<String> = mutation::candidates(first, &line.now, &line.tried)
            .iter()
            .map(|c| Value::String(c.clone()).to_string())
            .collect();
        assert!(
            expected.iter().any(|c| c == r#""f(\"a\", n - 1)""#),
            "{expected:?}"
        );
        assert!(
            expected.iter().any(|c| c == r#""f(\"a\", n + 1)""#),
            "the revert"
        );
        let mut got = language(&g, "args-0-0-0");
        got.sort();
        let mut sorted = expected.clone();
        sorted.sort();
        assert_eq!(got, sorted);
        // Neither the line as it reads now nor a tried text.
        for gone in line.tried.iter().chain([&line.now]) {
            let json = Value::String(gone.clone()).to_string();
            assert!(!got.contains(&json), "{json}");
        }
        // `}` has no mutation (deleting it leaves nothing): it is no `old` a forced edit picks.
        assert!(!rule(&g, "args-0").contains(r#""\"}\"""#), "{g}");
        // All tried: the search is over, and the write is no longer forced (as when no writing
        // prop is left): the edit's `new` is a small change of the line, as when not forced.
        narrowing.seen[0].lines[0].tried = mutation::candidates(first, &line.now, &[]);
        narrowing.seen[0].lines[0].tried.push(first.into());
        assert!(searchable(&narrowing.seen).is_empty());
        let g = gbnf_narrowed(&tools, &narrowing);
        assert!(rule(&g, "args-0-0-0").ends_with("-p0"), "{g}");
        narrowing.writes_only = false;
        assert_eq!(gbnf_narrowed(&tools, &narrowing), g);
    }

    fn edit_spec() -> ToolSpec {
        spec(
            "edit",
            json!({"type": "object", "properties": {"path": {"type": "string"},
                "old": {"type": "string"}, "new": {"type": "string"}},
                "required": ["path", "old", "new"]}),
        )
    }

    #[test]
    fn a_refused_edit_is_not_in_the_retrys_grammar() {
        let tools = [edit_spec()];
        let first = "n + 1";
        let mut narrowing = Narrowing {
            required: true,
            lean: true,
            writes_only: true,
            seen: vec![Seen {
                path: "src/lib.rs".into(),
                lines: vec![Line::new(first), Line::new("let m = 2;")],
            }],
            ..Narrowing::default()
        };
        let refused = "n - 1";
        let before = language(&gbnf_narrowed(&tools, &narrowing), "args-0-0-0");
        assert!(before.contains(&format!("\"{refused}\"")), "{before:?}");
        narrowing.avoid = vec![Avoid {
            prop: "edit".into(),
            path: Some("src/lib.rs".into()),
            text: Some(refused.into()),
            old: Some(first.into()),
        }];
        // Search: the refused `new` is a tried text, and only it goes.
        let after = language(&gbnf_narrowed(&tools, &narrowing), "args-0-0-0");
        assert!(!after.contains(&format!("\"{refused}\"")), "{after:?}");
        assert_eq!(after.len() + 1, before.len());
        // Small changes: the refused line is no `old` of the retry; the other lines are.
        narrowing.writes_only = false;
        let g = gbnf_narrowed(&tools, &narrowing);
        assert!(!rule(&g, "args-0").contains("n + 1"), "{g}");
        assert!(rule(&g, "args-0").contains("let m = 2;"), "{g}");
        // Another prop's refusal, or another file's, changes nothing.
        narrowing.avoid[0].path = Some("src/other.rs".into());
        assert!(gbnf_narrowed(&tools, &narrowing).contains("n + 1"));
    }

    #[test]
    fn the_search_offers_at_most_max_search_bytes_of_candidates() {
        // Lines of 40 numbers: each has some hundred candidates of its length.
        let lines: Vec<Line> = (0..100)
            .map(|i| {
                let line = (0..40)
                    .map(|k| format!("{}", i * 40 + k))
                    .collect::<Vec<_>>()
                    .join(" + ");
                Line::new(&line)
            })
            .collect();
        let seen = vec![Seen {
            path: "src/lib.rs".into(),
            lines,
        }];
        let size = |seen: &[Seen]| -> usize {
            seen.iter()
                .flat_map(|f| &f.lines)
                .flat_map(|l| mutation::candidates(&l.first, &l.now, &l.tried))
                .map(|c| c.len())
                .sum()
        };
        assert!(size(&seen) > 2 * MAX_SEARCH_BYTES, "{}", size(&seen));
        let kept = searchable(&seen);
        assert!(size(&kept) <= MAX_SEARCH_BYTES, "{}", size(&kept));
        assert!(!kept.is_empty(), "the first lines fit");
    }

    #[test]
    fn a_prop_without_properties_takes_any_object_and_odd_names_are_escaped() {
        let tools = [spec("say \"hi\"", json!({"type": "object"}))];
        let g = gbnf(&tools, true);
        assert!(
            g.contains(r#"call-0 ::= "\"say \\\"hi\\\"\", \"arguments\": " object "}""#),
            "{g}"
        );
    }
}
