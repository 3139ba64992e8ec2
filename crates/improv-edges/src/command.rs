//! What a shell line would run, found before it runs, for the command rules to judge.
//!
//! The line is parsed by `brush-parser` (the parser of the brush shell: bash grammar, a typed
//! AST, pure Rust, MIT, released often); `yash-syntax` is GPL, `conch-parser` unmaintained since
//! 2019, and `tree-sitter-bash` builds C and yields an untyped tree. The whole tree is walked:
//! lists, pipelines, subshells, `{ }`, `if`/`while`/`for`/`case` bodies, function bodies, and
//! the commands inside words: `$(…)`, backquotes, `<(…)`, `${x:-$(…)}`, `$((…))`, here-strings
//! and here-documents.
//!
//! Each simple command becomes an [`Invocation`]: its words unquoted (`g"i"t` is `git`), leading
//! assignments skipped, and the commands it starts through the launchers that are only a prefix
//! (`env`, `command`, `exec`, `builtin`, `nice`, `nohup`, `time`, `timeout`, `stdbuf`, `setsid`,
//! `sudo`, `doas`, `busybox`, `xargs`, `find -exec`, `watch -x`) as further layers;
//! `sh|bash|… -c STRING`, `su -c STRING`, `trap STRING`, `watch CMD…` and a shell fed a
//! here-string have STRING parsed in turn, to [`MAX_DEPTH`]. git's global options are dropped
//! (`git -C . push` is `git push`), and a git alias made on the line is unresolved. Other
//! launchers (`parallel`, `flock`, `chroot`, `script -c`, …) are not known: the command they
//! start is judged only as their argument. A word computed
//! when the line runs (`$x`, `$(…)`, a glob, what `xargs` appends) is an [`Arg::Computed`]: the
//! command is known only up to it. What cannot be known at all is an [`Unresolved`]: a computed
//! program, `eval`, `source`, `alias`, `sh -c "$x"`, a shell reading its script from a pipe.
//!
//! This is static: it sees the line, not what runs later. Scripts (`bash deploy.sh`, `make`,
//! `npm run`) and programs that start other programs (`python -c` with `subprocess`, git's own
//! aliases and hooks from its config) are beyond the command rules; the sandbox is what holds
//! there.

use brush_parser::ast;
use brush_parser::word::{self, WordPiece, WordPieceWithSource};
use globset::{Glob, GlobMatcher};
use regex_automata::hybrid::dfa::DFA;
use regex_automata::nfa::thompson;
use regex_automata::util::syntax;
use regex_automata::{Anchored, Input, MatchKind};
use std::fmt;

/// How deeply `sh -c`, `$(…)` and the like may nest before the rest is left unresolved.
pub const MAX_DEPTH: usize = 8;

/// One word of a command, as far as it is known before the line runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Arg {
    /// Unquoted, as the program will receive it.
    Known(String),
    /// Computed when the line runs (an expansion, a glob, input `xargs` appends): `prefix` is
    /// how it surely starts, `source` how the line says it.
    Computed { prefix: String, source: String },
}

impl Arg {
    fn known(&self) -> Option<&str> {
        match self {
            Arg::Known(s) => Some(s),
            Arg::Computed { .. } => None,
        }
    }

    fn source(&self) -> &str {
        match self {
            Arg::Known(s) => s,
            Arg::Computed { source, .. } => source,
        }
    }
}

/// A program with its arguments, resolved before it runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResolvedCommand {
    /// Unquoted, as written: `git`, `/usr/bin/git`, `./deploy.sh`.
    pub program: String,
    pub args: Vec<Arg>,
}

/// A command text a rule is matched against.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Spelling {
    pub text: String,
    /// `false` when `text` is only how the command starts: a word after it is computed.
    pub complete: bool,
}

impl ResolvedCommand {
    /// The program's file name: `/usr/bin/git` is `git`.
    pub fn name(&self) -> &str {
        self.program.rsplit('/').next().unwrap_or(&self.program)
    }

    /// The texts a rule may match: as written (`/usr/bin/git -C . push`), and by the program's
    /// name with its global options dropped (`git push`).
    pub fn spellings(&self) -> Vec<Spelling> {
        let written = spell(&self.program, &self.args);
        let args = match self.name() {
            "git" => git_subcommand(&self.args),
            _ => &self.args[..],
        };
        let named = spell(self.name(), args);
        if named == written {
            vec![written]
        } else {
            vec![written, named]
        }
    }
}

fn spell(program: &str, args: &[Arg]) -> Spelling {
    let mut text = program.to_string();
    for arg in args {
        text.push(' ');
        match arg {
            Arg::Known(s) => text.push_str(s),
            Arg::Computed { prefix, .. } => {
                text.push_str(prefix);
                return Spelling {
                    text,
                    complete: false,
                };
            }
        }
    }
    Spelling {
        text,
        complete: true,
    }
}

/// git's arguments from its subcommand on: the options before it (`-C dir`, `-c k=v`,
/// `--git-dir=…`, `--no-pager`, …) only say where and how it runs.
fn git_subcommand(args: &[Arg]) -> &[Arg] {
    const WITH_VALUE: [&str; 7] = [
        "-C",
        "-c",
        "--git-dir",
        "--work-tree",
        "--namespace",
        "--config-env",
        "--attr-source",
    ];
    let mut i = 0;
    while let Some(arg) = args.get(i) {
        match arg.known() {
            Some("--") => return &args[i + 1..],
            Some(s) if WITH_VALUE.contains(&s) => i += 2,
            Some(s) if s.starts_with('-') => i += 1,
            _ => break,
        }
    }
    args.get(i..).unwrap_or(&[])
}

/// What cannot be known before the line runs: the command rules treat it as matching the
/// strictest of them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Unresolved {
    /// The program's name is computed: `$cmd`, `$(…)`, a glob, `xargs -I{} {}`.
    ComputedProgram { word: String },
    /// A builtin that runs text as commands, or makes a name run them later.
    RunsText { runner: TextRunner },
    /// The script given to a shell (or `trap`) is computed: `sh -c "$x"`.
    ComputedScript { word: String },
    /// A shell reading its commands from its input (a pipe).
    ScriptOnInput { shell: String },
    /// `git -c alias.…`, `git config alias.…`: a git alias, defined on the command line or
    /// for the commands after it.
    GitAlias { option: String },
    /// Nested deeper than [`MAX_DEPTH`].
    TooDeep,
    /// More tokens that may nest than [`MAX_NESTING_TOKENS`]: not parsed.
    TooComplex { tokens: usize },
    /// The line does not parse.
    Unparsable { error: String },
}

/// The builtins (and options) that run text as commands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TextRunner {
    Eval,
    Source,
    Alias,
    /// `hash -p PATH NAME`: NAME runs PATH.
    Hash,
    /// `mapfile -C CALLBACK`.
    Mapfile,
    /// `fc`: runs commands from the history.
    Fc,
    /// `env -S STRING`: STRING split into a command.
    EnvSplit,
}

impl TextRunner {
    fn of(name: &str, args: &[Arg]) -> Option<TextRunner> {
        let has = |flag: &str| args.iter().any(|a| a.known() == Some(flag));
        match name {
            "eval" => Some(TextRunner::Eval),
            "source" | "." => Some(TextRunner::Source),
            "alias"
                if args
                    .iter()
                    .any(|a| a.known().is_none_or(|s| s.contains('='))) =>
            {
                Some(TextRunner::Alias)
            }
            "hash" if has("-p") => Some(TextRunner::Hash),
            "mapfile" | "readarray" if has("-C") => Some(TextRunner::Mapfile),
            "fc" => Some(TextRunner::Fc),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            TextRunner::Eval => "eval",
            TextRunner::Source => "source",
            TextRunner::Alias => "alias",
            TextRunner::Hash => "hash -p",
            TextRunner::Mapfile => "mapfile -C",
            TextRunner::Fc => "fc",
            TextRunner::EnvSplit => "env -S",
        }
    }
}

impl fmt::Display for Unresolved {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Unresolved::ComputedProgram { word } => {
                write!(f, "the program `{word}` is computed when the line runs")
            }
            Unresolved::RunsText { runner } => write!(
                f,
                "`{}` runs text as commands, which cannot be judged before it runs",
                runner.name()
            ),
            Unresolved::ComputedScript { word } => {
                write!(f, "the script `{word}` is computed when the line runs")
            }
            Unresolved::ScriptOnInput { shell } => {
                write!(f, "`{shell}` reads its commands from its input")
            }
            Unresolved::GitAlias { option } => write!(f, "`git {option}` defines a git alias"),
            Unresolved::TooDeep => write!(f, "commands nest deeper than {MAX_DEPTH} levels"),
            Unresolved::TooComplex { tokens } => write!(
                f,
                "the line has {tokens} brackets, quotes and keywords, more than the {MAX_NESTING_TOKENS} it is parsed with; split it, or write a script and run that"
            ),
            Unresolved::Unparsable { error } => write!(f, "the line does not parse ({error})"),
        }
    }
}

/// One layer of what a simple command runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Resolution {
    Resolved(ResolvedCommand),
    Unresolved(Unresolved),
}

/// A simple command of the line and what it runs: the command as written, then each command a
/// launcher in it starts (`sudo env git push`: sudo's, env's, then git's).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Invocation {
    /// The command as the line has it.
    pub source: String,
    pub layers: Vec<Resolution>,
}

/// Lines with more tokens that may nest than this (see [`nesting_tokens`]) are not parsed.
pub const MAX_NESTING_TOKENS: usize = 8192;

/// Lines with at most this many tokens that may nest are parsed on the caller's stack.
const INLINE_TOKENS: usize = 16;

/// Stack for parsing, per token that may nest: brush-parser recurses once per level of
/// nesting, up to about 25 KiB a level in a debug build (measured with nested `$(`, `if`,
/// `{`, `${`).
const STACK_PER_TOKEN: usize = 32 << 10;

/// Every simple command `line` would run, wherever it stands in the line.
///
/// The parser recurses once per level of nesting, so a hostile line (`$($($(…` ten thousand
/// deep) would overflow a thread's stack and abort the process: a line that may nest beyond a
/// few levels is parsed on a thread of its own with a stack for its worst case, and one beyond
/// [`MAX_NESTING_TOKENS`] is not parsed at all. A parser panic leaves the line unparsable.
pub fn invocations(line: &str) -> Vec<Invocation> {
    let walk = || {
        let mut walker = Walker::default();
        walker.line(line, 0);
        walker.out
    };
    let failed = |why: Unresolved| {
        vec![Invocation {
            source: line.to_string(),
            layers: vec![Resolution::Unresolved(why)],
        }]
    };
    let parser_failed = || Unresolved::Unparsable {
        error: "the shell parser failed on it".into(),
    };
    let tokens = nesting_tokens(line);
    if tokens > MAX_NESTING_TOKENS {
        return failed(Unresolved::TooComplex { tokens });
    }
    if tokens <= INLINE_TOKENS {
        return std::panic::catch_unwind(std::panic::AssertUnwindSafe(walk))
            .unwrap_or_else(|_| failed(parser_failed()));
    }
    let stack = (1 << 20) + tokens * STACK_PER_TOKEN;
    std::thread::scope(|scope| {
        std::thread::Builder::new()
            .name("improv-shell-parse".into())
            .stack_size(stack)
            .spawn_scoped(scope, walk)
            .ok()
            .and_then(|handle| handle.join().ok())
    })
    .unwrap_or_else(|| failed(parser_failed()))
}

/// An upper bound on how deeply `line` nests: the brackets, quotes and keywords that open a
/// level (`(`, `{`, `[`, `` ` ``, `"`, `if`, `while`, `until`, `for`, `case`, `select`,
/// `function`, `coproc`), counted wherever they stand.
pub fn nesting_tokens(line: &str) -> usize {
    const KEYWORDS: [&str; 8] = [
        "if", "while", "until", "for", "case", "select", "function", "coproc",
    ];
    let brackets = line
        .bytes()
        .filter(|b| matches!(b, b'(' | b'{' | b'[' | b'`' | b'"'))
        .count();
    let keywords = line
        .split(|c: char| !c.is_ascii_alphanumeric() && c != '_')
        .filter(|w| KEYWORDS.contains(w))
        .count();
    brackets + keywords
}

/// A rule's command glob: matched against a whole command, or asked whether it could match a
/// command known only up to a computed word.
#[derive(Clone, Debug)]
pub(crate) struct CommandGlob {
    matcher: GlobMatcher,
    /// The glob as an anchored lazy DFA; `None` if it could not be built (then every prefix is
    /// taken to possibly match).
    dfa: Option<DFA>,
}

impl CommandGlob {
    pub(crate) fn new(text: &str) -> Result<Self, globset::Error> {
        let glob = Glob::new(text)?;
        let dfa = DFA::builder()
            .configure(DFA::config().match_kind(MatchKind::All))
            .syntax(syntax::Config::new().utf8(false).dot_matches_new_line(true))
            .thompson(thompson::Config::new().utf8(false))
            .build(glob.regex())
            .ok();
        Ok(CommandGlob {
            matcher: glob.compile_matcher(),
            dfa,
        })
    }

    pub(crate) fn is_match(&self, text: &str) -> bool {
        self.matcher.is_match(text)
    }

    /// Whether some command starting with `prefix` matches.
    pub(crate) fn could_match(&self, prefix: &str) -> bool {
        let Some(dfa) = &self.dfa else {
            return true;
        };
        let mut cache = dfa.create_cache();
        let input = Input::new(prefix).anchored(Anchored::Yes);
        let Ok(mut state) = dfa.start_state_forward(&mut cache, &input) else {
            return true;
        };
        for &byte in prefix.as_bytes() {
            match dfa.next_state(&mut cache, state, byte) {
                Ok(next) if next.is_dead() => return false,
                Ok(next) if next.is_quit() => return true,
                Ok(next) => state = next,
                Err(_) => return true,
            }
        }
        true
    }
}

/// Walks the syntax tree, collecting invocations.
#[derive(Default)]
struct Walker {
    out: Vec<Invocation>,
}

impl Walker {
    /// Parses `text` as shell code and walks it.
    fn line(&mut self, text: &str, depth: usize) {
        if depth > MAX_DEPTH {
            self.unresolved(text, Unresolved::TooDeep);
            return;
        }
        let options = brush_parser::ParserOptions::default();
        match brush_parser::Parser::new(text.as_bytes(), &options).parse_program() {
            Ok(program) => {
                for list in &program.complete_commands {
                    self.list(list, depth);
                }
            }
            Err(e) => self.unresolved(
                text,
                Unresolved::Unparsable {
                    error: e.to_string(),
                },
            ),
        }
    }

    fn unresolved(&mut self, source: &str, why: Unresolved) {
        self.out.push(Invocation {
            source: source.to_string(),
            layers: vec![Resolution::Unresolved(why)],
        });
    }

    fn list(&mut self, list: &ast::CompoundList, depth: usize) {
        for ast::CompoundListItem(and_or, _) in &list.0 {
            self.pipeline(&and_or.first, depth);
            for next in &and_or.additional {
                match next {
                    ast::AndOr::And(p) | ast::AndOr::Or(p) => self.pipeline(p, depth),
                }
            }
        }
    }

    fn pipeline(&mut self, pipeline: &ast::Pipeline, depth: usize) {
        for command in &pipeline.seq {
            self.command(command, depth);
        }
    }

    fn command(&mut self, command: &ast::Command, depth: usize) {
        match command {
            ast::Command::Simple(simple) => self.simple(simple, depth),
            ast::Command::Compound(compound, redirects) => {
                self.compound(compound, depth);
                self.redirects(redirects.as_ref(), depth);
            }
            ast::Command::Function(function) => {
                let ast::FunctionBody(body, redirects) = &function.body;
                self.compound(body, depth);
                self.redirects(redirects.as_ref(), depth);
            }
            ast::Command::ExtendedTest(test, redirects) => {
                self.test(&test.expr, depth);
                self.redirects(redirects.as_ref(), depth);
            }
        }
    }

    fn compound(&mut self, compound: &ast::CompoundCommand, depth: usize) {
        use ast::CompoundCommand as C;
        match compound {
            C::Arithmetic(a) => self.arithmetic(Some(&a.expr), depth),
            C::ArithmeticForClause(f) => {
                for expr in [&f.initializer, &f.condition, &f.updater] {
                    self.arithmetic(expr.as_ref(), depth);
                }
                self.list(&f.body.list, depth);
            }
            C::BraceGroup(group) => self.list(&group.list, depth),
            C::Subshell(sub) => self.list(&sub.list, depth),
            C::ForClause(f) => {
                for w in f.values.iter().flatten() {
                    self.word(&w.value, depth);
                }
                self.list(&f.body.list, depth);
            }
            C::CaseClause(c) => {
                self.word(&c.value.value, depth);
                for item in &c.cases {
                    for w in &item.patterns {
                        self.word(&w.value, depth);
                    }
                    if let Some(list) = &item.cmd {
                        self.list(list, depth);
                    }
                }
            }
            C::IfClause(i) => {
                self.list(&i.condition, depth);
                self.list(&i.then, depth);
                for e in i.elses.iter().flatten() {
                    if let Some(condition) = &e.condition {
                        self.list(condition, depth);
                    }
                    self.list(&e.body, depth);
                }
            }
            C::WhileClause(w) | C::UntilClause(w) => {
                self.list(&w.0, depth);
                self.list(&w.1.list, depth);
            }
            C::Coprocess(c) => self.command(&c.body, depth),
        }
    }

    fn test(&mut self, expr: &ast::ExtendedTestExpr, depth: usize) {
        use ast::ExtendedTestExpr as T;
        match expr {
            T::And(a, b) | T::Or(a, b) => {
                self.test(a, depth);
                self.test(b, depth);
            }
            T::Not(a) | T::Parenthesized(a) => self.test(a, depth),
            T::UnaryTest(_, w) => {
                self.word(&w.value, depth);
            }
            T::BinaryTest(_, a, b) => {
                self.word(&a.value, depth);
                self.word(&b.value, depth);
            }
        }
    }

    /// `$((…))` and `((…))` may hold command substitutions.
    fn arithmetic(&mut self, expr: Option<&ast::UnexpandedArithmeticExpr>, depth: usize) {
        if let Some(expr) = expr {
            self.word(&expr.value, depth + 1);
        }
    }

    fn redirects(&mut self, list: Option<&ast::RedirectList>, depth: usize) {
        for r in list.iter().flat_map(|l| &l.0) {
            self.redirect(r, depth);
        }
    }

    /// Walks a redirection; returns what it feeds the command's input, when it is text given
    /// on the line (a here-string or here-document).
    fn redirect(&mut self, redirect: &ast::IoRedirect, depth: usize) -> Option<Arg> {
        use ast::IoFileRedirectTarget as T;
        match redirect {
            ast::IoRedirect::File(_, _, target) => match target {
                T::Filename(w) | T::Duplicate(w) => {
                    self.word(&w.value, depth);
                }
                T::ProcessSubstitution(_, sub) => self.list(&sub.list, depth + 1),
                T::Fd(_) => {}
            },
            ast::IoRedirect::HereDocument(fd, doc) => {
                let text = if doc.requires_expansion {
                    let options = brush_parser::ParserOptions::default();
                    match word::parse_heredoc(&doc.doc.value, &options) {
                        Ok(pieces) => self.pieces(&doc.doc.value, &pieces, true, depth),
                        Err(_) => computed("", &doc.doc.value),
                    }
                } else {
                    Arg::Known(doc.doc.value.clone())
                };
                return stdin(fd.as_ref(), text);
            }
            ast::IoRedirect::HereString(fd, w) => {
                let text = self.word(&w.value, depth);
                return stdin(fd.as_ref(), text);
            }
            ast::IoRedirect::OutputAndError(w, _) => {
                self.word(&w.value, depth);
            }
        }
        None
    }

    fn simple(&mut self, simple: &ast::SimpleCommand, depth: usize) {
        use ast::CommandPrefixOrSuffixItem as Item;
        let mut words = Vec::new();
        let mut input = None;
        for item in simple.prefix.iter().flat_map(|p| &p.0) {
            match item {
                Item::IoRedirect(r) => input = self.redirect(r, depth).or(input),
                // Assignments before the program only set its environment.
                Item::AssignmentWord(_, w) => {
                    self.word(&w.value, depth);
                }
                Item::Word(w) => words.push(self.word(&w.value, depth)),
                Item::ProcessSubstitution(_, sub) => self.list(&sub.list, depth + 1),
            }
        }
        if let Some(w) = &simple.word_or_name {
            words.push(self.word(&w.value, depth));
        }
        for item in simple.suffix.iter().flat_map(|s| &s.0) {
            match item {
                Item::IoRedirect(r) => input = self.redirect(r, depth).or(input),
                Item::AssignmentWord(_, w) | Item::Word(w) => {
                    words.push(self.word(&w.value, depth));
                }
                Item::ProcessSubstitution(_, sub) => {
                    self.list(&sub.list, depth + 1);
                    words.push(computed("", "<(…)"));
                }
            }
        }
        if words.is_empty() {
            return;
        }
        let source = simple.to_string();
        let layers = self.layers(&source, words, input.as_ref(), depth);
        self.out.push(Invocation { source, layers });
    }
}

/// A here-text feeds the command's input when it is on fd 0 (or none named).
fn stdin(fd: Option<&ast::IoFd>, text: Arg) -> Option<Arg> {
    fd.is_none_or(|fd| *fd == 0).then_some(text)
}

fn computed(prefix: &str, source: &str) -> Arg {
    Arg::Computed {
        prefix: prefix.to_string(),
        source: source.to_string(),
    }
}

// ---- words ----

impl Walker {
    /// Resolves a word, walking the commands inside it.
    fn word(&mut self, raw: &str, depth: usize) -> Arg {
        let options = brush_parser::ParserOptions::default();
        match word::parse(raw, &options) {
            Ok(pieces) => self.pieces(raw, &pieces, false, depth),
            Err(_) => computed("", raw),
        }
    }

    /// Joins a word's pieces (their indices are into `raw`); the first computed piece ends what
    /// is known of it.
    fn pieces(
        &mut self,
        raw: &str,
        pieces: &[WordPieceWithSource],
        quoted: bool,
        depth: usize,
    ) -> Arg {
        let mut known = String::new();
        let mut prefix: Option<String> = None;
        for p in pieces {
            let text = self.piece(raw, p, quoted, depth);
            match text {
                Some(t) if prefix.is_none() => known.push_str(&t),
                Some(_) => {}
                None => {
                    prefix.get_or_insert_with(|| known.clone());
                }
            }
        }
        match prefix {
            None => Arg::Known(known),
            Some(prefix) => computed(&prefix, raw),
        }
    }

    /// A piece's text, or `None` when it is computed (its commands walked).
    fn piece(
        &mut self,
        raw: &str,
        piece: &WordPieceWithSource,
        quoted: bool,
        depth: usize,
    ) -> Option<String> {
        let source = raw.get(piece.start_index..piece.end_index).unwrap_or(raw);
        match &piece.piece {
            WordPiece::Text(s) if !quoted && expands(s) => None,
            WordPiece::Text(s) | WordPiece::SingleQuotedText(s) => Some(s.clone()),
            WordPiece::AnsiCQuotedText(s) => Some(ansi_c(s)),
            WordPiece::DoubleQuotedSequence(inner)
            | WordPiece::GettextDoubleQuotedSequence(inner) => {
                match self.pieces(raw, inner, true, depth) {
                    Arg::Known(s) => Some(s),
                    Arg::Computed { .. } => None,
                }
            }
            WordPiece::TildeExpansion(_) => Some("~".into()),
            WordPiece::EscapeSequence(s) => {
                let escaped = s.strip_prefix('\\').unwrap_or(s);
                Some(if escaped == "\n" { "" } else { escaped }.to_string())
            }
            WordPiece::ParameterExpansion(_) => {
                // `${x:-$(…)}`, `${a[$(…)]}`: the inside as a word, for its commands.
                if let Some(inside) = source.strip_prefix("${").and_then(|s| s.strip_suffix('}')) {
                    self.nested_word(inside, depth);
                }
                None
            }
            WordPiece::CommandSubstitution(s) => {
                self.line(s, depth + 1);
                None
            }
            WordPiece::BackquotedCommandSubstitution(s) => {
                self.line(&unbackquote(s), depth + 1);
                None
            }
            WordPiece::ArithmeticExpression(e) => {
                self.nested_word(&e.value, depth);
                None
            }
        }
    }

    fn nested_word(&mut self, text: &str, depth: usize) {
        if depth >= MAX_DEPTH {
            self.unresolved(text, Unresolved::TooDeep);
        } else {
            self.word(text, depth + 1);
        }
    }
}

/// Whether unquoted text is expanded by the shell: a glob (`*`, `?`, `[…]`, `@(…)`) or a brace
/// expansion (`{a,b}`, `{1..3}`).
fn expands(text: &str) -> bool {
    let glob = text.contains(['*', '?'])
        || text
            .find('[')
            .is_some_and(|open| text[open + 1..].contains(']'))
        || ["@(", "+(", "!("].iter().any(|e| text.contains(e));
    let brace = text.find('{').is_some_and(|open| {
        text[open..].find('}').is_some_and(|close| {
            text[open..open + close].contains([',']) || text[open..open + close].contains("..")
        })
    });
    glob || brace
}

/// Inside backquotes `\$`, `` \` `` and `\\` stand for the character.
fn unbackquote(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\\'
            && let Some(&n) = chars.peek()
            && matches!(n, '$' | '`' | '\\')
        {
            out.push(n);
            chars.next();
        } else {
            out.push(c);
        }
    }
    out
}

/// Decodes the inside of `$'…'`: bash's backslash escapes.
fn ansi_c(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        let Some(e) = chars.next() else {
            out.push('\\');
            break;
        };
        let mut number = |radix: u32, max: usize, first: Option<char>| {
            let mut digits: String = first.into_iter().collect();
            while digits.len() < max
                && let Some(&d) = chars.peek()
                && d.is_digit(radix)
            {
                digits.push(d);
                chars.next();
            }
            u32::from_str_radix(&digits, radix)
                .ok()
                .and_then(char::from_u32)
        };
        let decoded = match e {
            'a' => Some('\x07'),
            'b' => Some('\x08'),
            'e' | 'E' => Some('\x1b'),
            'f' => Some('\x0c'),
            'n' => Some('\n'),
            'r' => Some('\r'),
            't' => Some('\t'),
            'v' => Some('\x0b'),
            '\\' | '\'' | '"' | '?' => Some(e),
            '0'..='7' => number(8, 3, Some(e)),
            'x' => number(16, 2, None),
            'u' => number(16, 4, None),
            'U' => number(16, 8, None),
            'c' => chars.next().map(|c| char::from((c as u8) & 0x1f)),
            _ => None,
        };
        match decoded {
            Some(d) => out.push(d),
            None => {
                out.push('\\');
                out.push(e);
            }
        }
    }
    out
}

// ---- launchers ----

/// git's global options that take the next word as their value.
const GIT_WITH_VALUE: [&str; 7] = [
    "-C",
    "-c",
    "--git-dir",
    "--work-tree",
    "--namespace",
    "--config-env",
    "--attr-source",
];

/// The programs whose arguments hold another command to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Launcher {
    Env,
    Command,
    Exec,
    Builtin,
    Nice,
    Nohup,
    Time,
    Timeout,
    Stdbuf,
    Setsid,
    Sudo,
    Doas,
    Busybox,
    Xargs,
    Find,
    Trap,
    /// `su`, `runuser`: `-c STRING` runs STRING in the user's shell.
    Su,
    /// `watch CMD…`: the words joined and run by `sh -c` (or run as they are with `-x`).
    Watch,
    /// `sh`, `bash`, `dash`, `zsh`, …: `-c STRING`, or commands on their input.
    Shell,
}

impl Launcher {
    fn of(name: &str) -> Option<Launcher> {
        Some(match name {
            "env" => Launcher::Env,
            "command" => Launcher::Command,
            "exec" => Launcher::Exec,
            "builtin" => Launcher::Builtin,
            "nice" => Launcher::Nice,
            "nohup" => Launcher::Nohup,
            "time" => Launcher::Time,
            "timeout" => Launcher::Timeout,
            "stdbuf" => Launcher::Stdbuf,
            "setsid" => Launcher::Setsid,
            "sudo" => Launcher::Sudo,
            "doas" => Launcher::Doas,
            "busybox" => Launcher::Busybox,
            "xargs" => Launcher::Xargs,
            "find" => Launcher::Find,
            "trap" => Launcher::Trap,
            "su" | "runuser" => Launcher::Su,
            "watch" => Launcher::Watch,
            "sh" | "bash" | "dash" | "zsh" | "ksh" | "mksh" | "ash" | "yash" | "posh" => {
                Launcher::Shell
            }
            _ => return None,
        })
    }

    /// Its short options that take a value, and its long ones that take the next word.
    fn options(self) -> (&'static str, &'static [&'static str]) {
        match self {
            Launcher::Env => ("uCSP", &["--unset", "--chdir", "--split-string"]),
            Launcher::Exec => ("a", &[]),
            Launcher::Nice => ("n", &["--adjustment"]),
            Launcher::Time => ("fo", &["--format", "--output"]),
            Launcher::Timeout => ("sk", &["--signal", "--kill-after"]),
            Launcher::Stdbuf => ("ioe", &["--input", "--output", "--error"]),
            Launcher::Sudo => (
                "ugCDhprtTUR",
                &[
                    "--user",
                    "--group",
                    "--close-from",
                    "--chdir",
                    "--host",
                    "--prompt",
                    "--role",
                    "--type",
                    "--command-timeout",
                    "--other-user",
                    "--chroot",
                ],
            ),
            Launcher::Doas => ("uC", &[]),
            Launcher::Watch => ("nq", &["--interval", "--equexit"]),
            Launcher::Xargs => (
                "adEILnPs",
                &[
                    "--arg-file",
                    "--delimiter",
                    "--eof",
                    "--max-lines",
                    "--max-args",
                    "--max-procs",
                    "--max-chars",
                    "--process-slot-var",
                ],
            ),
            _ => ("", &[]),
        }
    }
}

/// What a layer leads to.
enum Next {
    /// Another command: these words.
    Run(Vec<Arg>),
    Done,
    Unresolved(Unresolved),
}

/// The index of the first word after a launcher's options: its command (a computed word may
/// be an option or the command, so it ends the options).
fn after_options(args: &[Arg], launcher: Launcher) -> usize {
    let (short_values, long_values) = launcher.options();
    let mut i = 0;
    while let Some(arg) = args.get(i) {
        let Some(s) = arg.known() else {
            return i;
        };
        if s == "--" {
            return i + 1;
        }
        if s.starts_with("--") {
            i += if long_values.contains(&s) { 2 } else { 1 };
        } else if let Some(flags) = s.strip_prefix('-').filter(|f| !f.is_empty()) {
            // In a cluster the first flag taking a value takes the rest, or the next word.
            let takes = flags
                .char_indices()
                .find(|(_, c)| short_values.contains(*c));
            i += match takes {
                Some((at, c)) if at + c.len_utf8() == flags.len() => 2,
                _ => 1,
            };
        } else {
            return i;
        }
    }
    i
}

/// Whether a launcher's options (before its command) include one of `flags`.
fn has_flag(options: &[Arg], flags: &[char]) -> bool {
    options.iter().any(|a| {
        a.known().is_some_and(|s| {
            s.strip_prefix('-')
                .is_some_and(|f| !f.starts_with('-') && f.contains(flags))
        })
    })
}

/// Skips `NAME=value` words (`env A=1 git`).
fn after_assignments(args: &[Arg]) -> &[Arg] {
    let n = args
        .iter()
        .take_while(|a| {
            a.known().is_some_and(|s| {
                s.split_once('=').is_some_and(|(name, _)| {
                    !name.is_empty()
                        && !name.starts_with(|c: char| c.is_ascii_digit())
                        && name.chars().all(|c| c == '_' || c.is_ascii_alphanumeric())
                })
            })
        })
        .count();
    &args[n..]
}

/// The command after a launcher that is only a prefix (`env`, `sudo`, `nice`, …): `rest`, its
/// words after the options.
fn prefix(launcher: Launcher, name: &str, options: &[Arg], rest: &[Arg]) -> Next {
    match launcher {
        Launcher::Env
            if has_flag(options, &['S'])
                || options
                    .iter()
                    .any(|o| o.known().is_some_and(|s| s.starts_with("--split-string"))) =>
        {
            Next::Unresolved(Unresolved::RunsText {
                runner: TextRunner::EnvSplit,
            })
        }
        Launcher::Env | Launcher::Sudo => match after_assignments(rest) {
            [] if launcher == Launcher::Sudo && has_flag(options, &['s', 'i']) => {
                Next::Unresolved(Unresolved::ScriptOnInput { shell: name.into() })
            }
            rest => run(rest),
        },
        Launcher::Doas if rest.is_empty() && has_flag(options, &['s']) => {
            Next::Unresolved(Unresolved::ScriptOnInput { shell: name.into() })
        }
        Launcher::Command if has_flag(options, &['v', 'V']) => Next::Done,
        Launcher::Timeout => run(rest.get(1..).unwrap_or(&[])),
        _ => run(rest),
    }
}

fn run(args: &[Arg]) -> Next {
    if args.is_empty() {
        Next::Done
    } else {
        Next::Run(args.to_vec())
    }
}

/// `git -c alias.x=… x` or `git config alias.x …`: a git alias, which no rule sees through.
fn git_alias(args: &[Arg]) -> Option<String> {
    let alias = |v: Option<&Arg>| {
        v.is_none_or(|v| {
            v.known()
                .is_none_or(|v| v.to_ascii_lowercase().starts_with("alias."))
        })
    };
    let mut i = 0;
    while let Some(s) = args.get(i).and_then(Arg::known) {
        if let Some(v) = s.strip_prefix("--config-env=") {
            if alias(Some(&Arg::Known(v.into()))) {
                return Some(s.into());
            }
        } else if s == "-c" || s == "--config-env" {
            let value = args.get(i + 1);
            if alias(value) {
                return Some(format!("{s} {}", value.map(Arg::source).unwrap_or("")));
            }
        }
        i += match s {
            s if GIT_WITH_VALUE.contains(&s) => 2,
            s if s.starts_with('-') => 1,
            // `git config [--global] alias.p push` makes `git p` a push from then on.
            "config" => {
                return args[i + 1..]
                    .iter()
                    .find(|a| alias(Some(a)) && !a.known().is_some_and(|k| k.starts_with('-')))
                    .map(|a| format!("config {}", a.source()));
            }
            _ => return None,
        };
    }
    None
}

impl Walker {
    /// What a simple command runs, layer by layer through its launchers.
    fn layers(
        &mut self,
        source: &str,
        mut words: Vec<Arg>,
        input: Option<&Arg>,
        depth: usize,
    ) -> Vec<Resolution> {
        let mut layers = Vec::new();
        while let Some((first, args)) = words.split_first() {
            let program = match first {
                Arg::Known(p) => p.clone(),
                Arg::Computed { source, .. } => {
                    let word = source.clone();
                    layers.push(Resolution::Unresolved(Unresolved::ComputedProgram { word }));
                    break;
                }
            };
            let command = ResolvedCommand {
                program,
                args: args.to_vec(),
            };
            let next = self.next(source, &command, input, depth);
            layers.push(Resolution::Resolved(command));
            match next {
                Next::Run(next) => words = next,
                Next::Done => break,
                Next::Unresolved(why) => {
                    layers.push(Resolution::Unresolved(why));
                    break;
                }
            }
        }
        layers
    }

    /// The command that `command` starts, if it is a launcher.
    fn next(
        &mut self,
        source: &str,
        command: &ResolvedCommand,
        input: Option<&Arg>,
        depth: usize,
    ) -> Next {
        let name = command.name();
        let args = &command.args[..];
        if let Some(runner) = TextRunner::of(name, args) {
            return Next::Unresolved(Unresolved::RunsText { runner });
        }
        if name == "git" {
            return match git_alias(args) {
                Some(option) => Next::Unresolved(Unresolved::GitAlias { option }),
                None => Next::Done,
            };
        }
        let Some(launcher) = Launcher::of(name) else {
            return Next::Done;
        };
        let at = after_options(args, launcher).min(args.len());
        let (options, rest) = args.split_at(at);
        match launcher {
            Launcher::Shell => self.shell(name, args, input, depth),
            Launcher::Trap => self.script(
                args.first()
                    .filter(|a| a.known().is_none_or(|s| !s.starts_with('-'))),
                depth,
            ),
            Launcher::Find => {
                self.find(source, args, depth);
                Next::Done
            }
            Launcher::Xargs => xargs(options, rest),
            Launcher::Su => self.su(args, depth),
            Launcher::Watch => self.watch(options, rest, depth),
            _ => prefix(launcher, name, options, rest),
        }
    }

    /// `su … -c STRING`, `runuser --command=STRING`.
    fn su(&mut self, args: &[Arg], depth: usize) -> Next {
        for (i, a) in args.iter().enumerate() {
            if matches!(a.known(), Some("-c" | "--command")) {
                return self.script(args.get(i + 1), depth);
            }
            if let Some(c) = a.known().and_then(|s| s.strip_prefix("--command=")) {
                return self.script(Some(&Arg::Known(c.into())), depth);
            }
        }
        Next::Done
    }

    /// `watch CMD…` runs the words joined by `sh -c`; `watch -x CMD…` runs them as they are.
    fn watch(&mut self, options: &[Arg], rest: &[Arg], depth: usize) -> Next {
        if has_flag(options, &['x']) || options.iter().any(|o| o.known() == Some("--exec")) {
            return run(rest);
        }
        match rest.iter().map(Arg::known).collect::<Option<Vec<_>>>() {
            Some(words) if words.is_empty() => Next::Done,
            Some(words) => self.script(Some(&Arg::Known(words.join(" "))), depth),
            None => Next::Unresolved(Unresolved::ComputedScript {
                word: rest.iter().map(Arg::source).collect::<Vec<_>>().join(" "),
            }),
        }
    }

    /// Parses a script given as a word (`trap 'git push' EXIT`).
    fn script(&mut self, word: Option<&Arg>, depth: usize) -> Next {
        match word {
            Some(Arg::Known(script)) => {
                self.line(script, depth + 1);
                Next::Done
            }
            Some(Arg::Computed { source, .. }) => Next::Unresolved(Unresolved::ComputedScript {
                word: source.clone(),
            }),
            None => Next::Done,
        }
    }

    /// `sh -c STRING`, or a shell reading its commands from its input; a script file is beyond
    /// the rules.
    fn shell(&mut self, name: &str, args: &[Arg], input: Option<&Arg>, depth: usize) -> Next {
        let (mut i, mut dash_c, mut reads_input) = (0, false, false);
        while let Some(s) = args.get(i).and_then(Arg::known) {
            if s == "--" || s == "-" {
                i += 1;
                break;
            }
            if s.starts_with("--") {
                i += if matches!(s, "--rcfile" | "--init-file") {
                    2
                } else {
                    1
                };
                continue;
            }
            let Some(flags) = s.strip_prefix(['-', '+']).filter(|f| !f.is_empty()) else {
                break;
            };
            dash_c |= s.starts_with('-') && flags.contains('c');
            reads_input |= flags.contains('s');
            i += if flags.ends_with(['o', 'O']) { 2 } else { 1 };
        }
        let operand = args.get(i);
        // `bash /dev/stdin <<< …` reads its input too; `bash <(…)` a script the line computes.
        let from_input = operand
            .and_then(Arg::known)
            .is_some_and(|o| o == "/dev/stdin" || o.starts_with("/dev/fd/"));
        if dash_c {
            self.script(operand, depth)
        } else if let Some(Arg::Computed { source, .. }) = operand {
            Next::Unresolved(Unresolved::ComputedScript {
                word: source.clone(),
            })
        } else if reads_input || from_input || operand.is_none() {
            match input {
                Some(text) => self.script(Some(text), depth),
                None => Next::Unresolved(Unresolved::ScriptOnInput { shell: name.into() }),
            }
        } else {
            Next::Done
        }
    }

    /// `find … -exec CMD … ;` (and `-execdir`, `-ok`, `-okdir`): each CMD, with `{}` computed.
    fn find(&mut self, source: &str, args: &[Arg], depth: usize) {
        let mut i = 0;
        while i < args.len() {
            let exec = args[i]
                .known()
                .is_some_and(|s| matches!(s, "-exec" | "-execdir" | "-ok" | "-okdir"));
            i += 1;
            if !exec {
                continue;
            }
            let end = args[i..]
                .iter()
                .position(|a| matches!(a.known(), Some(";" | "+")))
                .map_or(args.len(), |n| i + n);
            let words = args[i..end].iter().map(|a| placeholder(a, "{}")).collect();
            if depth >= MAX_DEPTH {
                self.unresolved(source, Unresolved::TooDeep);
            } else {
                let layers = self.layers(source, words, None, depth + 1);
                self.out.push(Invocation {
                    source: source.to_string(),
                    layers,
                });
            }
            i = end + 1;
        }
    }
}

/// A word holding `mark` (`{}`), which the launcher replaces by what it reads or finds.
fn placeholder(arg: &Arg, mark: &str) -> Arg {
    match arg {
        Arg::Known(s) if !mark.is_empty() && s.contains(mark) => {
            computed(s.split(mark).next().unwrap_or(""), s)
        }
        other => other.clone(),
    }
}

/// `xargs CMD`: CMD with what xargs reads appended, or put where `-I R` says.
fn xargs(options: &[Arg], rest: &[Arg]) -> Next {
    let mut replace = None;
    for (i, o) in options.iter().enumerate() {
        let Some(s) = o.known() else { continue };
        replace = match s {
            "-I" => options.get(i + 1).map(|v| v.source().to_string()),
            "-i" | "--replace" => Some("{}".into()),
            _ => match s
                .strip_prefix("-I")
                .or_else(|| s.strip_prefix("--replace="))
            {
                Some(r) => Some(r.to_string()),
                None if s.starts_with("-i") && !s.starts_with("--") => Some(s[2..].to_string()),
                None => replace,
            },
        };
    }
    let mut words: Vec<Arg> = if rest.is_empty() {
        vec![Arg::Known("echo".into())]
    } else {
        rest.to_vec()
    };
    match replace {
        Some(mark) => words = words.iter().map(|a| placeholder(a, &mark)).collect(),
        None => words.push(computed("", "(the arguments xargs reads)")),
    }
    Next::Run(words)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `line` runs, each layer by its spellings (`…` after one known only so far), or
    /// `?` for what cannot be known.
    fn runs(line: &str) -> Vec<Vec<String>> {
        invocations(line)
            .into_iter()
            .map(|i| {
                i.layers
                    .iter()
                    .flat_map(|l| match l {
                        Resolution::Resolved(c) => c
                            .spellings()
                            .into_iter()
                            .map(|s| format!("{}{}", s.text, if s.complete { "" } else { "…" }))
                            .collect(),
                        Resolution::Unresolved(_) => vec!["?".to_string()],
                    })
                    .collect()
            })
            .collect()
    }

    /// Whether some layer of `line` is spelled `spelling`.
    fn runs_as(line: &str, spelling: &str) -> bool {
        runs(line).iter().flatten().any(|s| s == spelling)
    }

    #[test]
    fn words_are_unquoted_and_programs_named_without_their_path() {
        for line in [
            "git push",
            "g\"i\"t push",
            "'git' \"push\"",
            "\\git pu\\sh",
            "git $'\\x70ush'",
            "/usr/bin/git push",
            "FOO=1 BAR=$(id) git push",
            "git  push",
        ] {
            assert!(runs_as(line, "git push"), "{line}: {:?}", runs(line));
        }
        assert_eq!(runs("./x a"), [["./x a", "x a"]]);
        assert_eq!(runs("x=1"), Vec::<Vec<String>>::new());
    }

    #[test]
    fn every_command_in_the_tree_is_found() {
        let line = "if a; then b | c; elif d; then e; else f; fi; while g; do (h); done; \
                    for x in $(i); do { j; }; done; case $(k) in *) l;; esac; m() { n; }; \
                    o <(p) >(q) <<< \"$(r)\" > \"$(s)\"; [[ $(t) ]]; (( $(u) )); \
                    echo \"a ${x:-$(v)}\" $((1 + $(w))) `y`; coproc z";
        let found: Vec<String> = runs(line).into_iter().flatten().collect();
        for name in [
            "a", "b", "c", "d", "e", "f", "g", "h", "i", "j", "k", "l", "n", "p", "q", "r", "s",
            "t", "u", "v", "w", "y", "z",
        ] {
            assert!(found.iter().any(|f| f == name), "{name} not in {found:?}");
        }
    }

    #[test]
    fn here_documents_and_strings_are_walked_and_feed_shells() {
        assert!(runs_as("cat <<EOF\n$(git push)\nEOF", "git push"));
        assert!(runs_as("bash <<EOF\ngit push\nEOF", "git push"));
        assert!(runs_as("bash <<< 'git push'", "git push"));
        assert!(!runs_as("cat <<'EOF'\n$(git push)\nEOF", "git push"));
    }

    #[test]
    fn launchers_are_seen_through() {
        for line in [
            "env git push",
            "env -i -u HOME -C /tmp A=1 git push",
            "command git push",
            "command -p git push",
            "exec -a x git push",
            "builtin command git push",
            "nice -n 5 git push",
            "nice -5 git push",
            "nohup git push &",
            "time -p git push",
            "/usr/bin/time -f %e git push",
            "timeout -s KILL 10 git push",
            "timeout --foreground 10s git push",
            "stdbuf -o0 -eL git push",
            "setsid -w git push",
            "sudo -u root -E git push",
            "sudo HOME=/ git push",
            "doas -u root git push",
            "busybox env git push",
            "find . -name x -exec git push \\;",
            "find . -name x -ok git push ';' -delete",
            "sh -c 'git push'",
            "bash -lc \"git push\"",
            "/bin/dash -e -c 'git push'",
            "bash -o pipefail -c 'git push'",
            "zsh -c 'sudo sh -c \"git push\"'",
            "trap 'git push' EXIT",
            "su -c 'git push' root",
            "runuser -u x --command='git push'",
            "watch -n 1 git push",
            "watch -x git push",
        ] {
            assert!(runs_as(line, "git push"), "{line}: {:?}", runs(line));
        }
        assert_eq!(runs("command -v git"), [["command -v git"]]);
        // A script file is beyond the rules: nothing further is known.
        assert_eq!(runs("bash deploy.sh"), [["bash deploy.sh"]]);
    }

    #[test]
    fn what_xargs_and_find_put_in_is_computed() {
        assert!(runs_as("echo push | xargs git", "git …"));
        assert!(runs_as("xargs -n1 -P4 git", "git …"));
        assert!(runs_as("xargs -I{} git {} origin", "git …"));
        assert!(runs_as("xargs -I % git pu% origin", "git pu…"));
        assert!(runs_as("xargs", "echo …"));
        assert!(runs_as("find . -exec git {} \\;", "git …"));
        assert_eq!(runs("xargs -I{} {} push")[0][1], "?");
    }

    #[test]
    fn git_is_named_by_its_subcommand() {
        for line in [
            "git -C . push",
            "git -c user.name=x push",
            "git --git-dir=.git --work-tree=. --no-pager push",
            "git --git-dir .git -P push",
            "git -- push",
        ] {
            assert!(runs_as(line, "git push"), "{line}: {:?}", runs(line));
        }
        assert_eq!(runs("git -c alias.p=push p")[0].last().unwrap(), "?");
        assert_eq!(runs("git --config-env=alias.p=X p")[0].last().unwrap(), "?");
        assert_eq!(
            runs("git config --global alias.p push")[0].last().unwrap(),
            "?"
        );
        assert_eq!(runs("git config user.name x"), [["git config user.name x"]]);
        assert!(runs_as("git -C $dir push", "git push"));
    }

    #[test]
    fn computed_words_end_what_is_known() {
        assert!(runs_as("git $sub", "git …"));
        assert!(runs_as("git pu$x origin", "git pu…"));
        assert!(runs_as("git pu*", "git …"));
        assert!(runs_as("git p[u]sh", "git …"));
        assert!(runs_as("git {push,x}", "git …"));
        assert!(runs_as("ls *.rs", "ls …"));
        assert!(runs_as("[ -f x ]", "[ -f x ]"));
        assert!(runs_as("echo '*' \"$(id)\"", "echo * …"));
    }

    #[test]
    fn what_cannot_be_known_is_unresolved_with_the_reason() {
        let reason = |line: &str| {
            invocations(line)
                .into_iter()
                .flat_map(|i| i.layers)
                .find_map(|l| match l {
                    Resolution::Unresolved(u) => Some(u),
                    Resolution::Resolved(_) => None,
                })
                .unwrap_or_else(|| panic!("{line} resolved: {:?}", runs(line)))
        };
        let computed = |w: &str| Unresolved::ComputedProgram { word: w.into() };
        let text = |runner| Unresolved::RunsText { runner };
        assert_eq!(reason("$cmd push"), computed("$cmd"));
        assert_eq!(reason("$(echo git) push"), computed("$(echo git)"));
        assert_eq!(reason("`echo git` push"), computed("`echo git`"));
        assert_eq!(reason("{git,push}"), computed("{git,push}"));
        assert_eq!(reason("./gi? push"), computed("./gi?"));
        assert_eq!(reason("env $x push"), computed("$x"));
        assert_eq!(reason("eval \"git push\""), text(TextRunner::Eval));
        assert_eq!(reason("builtin eval x"), text(TextRunner::Eval));
        assert_eq!(reason("source x.sh"), text(TextRunner::Source));
        assert_eq!(reason(". x.sh"), text(TextRunner::Source));
        assert_eq!(reason("alias p='git push'; p"), text(TextRunner::Alias));
        assert_eq!(reason("hash -p /usr/bin/git p"), text(TextRunner::Hash));
        assert_eq!(reason("mapfile -C f -c 1 a"), text(TextRunner::Mapfile));
        assert_eq!(reason("env -S 'git push'"), text(TextRunner::EnvSplit));
        assert_eq!(
            reason("sh -c \"$x\""),
            Unresolved::ComputedScript {
                word: "\"$x\"".into()
            }
        );
        assert_eq!(
            reason("bash <(echo git push)"),
            Unresolved::ComputedScript {
                word: "<(…)".into()
            }
        );
        assert_eq!(
            reason("echo 'git push' | bash /dev/stdin"),
            Unresolved::ScriptOnInput {
                shell: "bash".into()
            }
        );
        assert_eq!(
            reason("echo 'git push' | bash"),
            Unresolved::ScriptOnInput {
                shell: "bash".into()
            }
        );
        assert!(matches!(
            reason("echo 'unterminated"),
            Unresolved::Unparsable { .. }
        ));
        let deep = (0..=MAX_DEPTH).fold("git push".to_string(), |l, _| format!("$({l})"));
        assert_eq!(reason(&deep), Unresolved::TooDeep);
        let nested = format!("echo {}x{}", "$(".repeat(9000), ")".repeat(9000));
        assert_eq!(reason(&nested), Unresolved::TooComplex { tokens: 9000 });
        assert!(
            reason("$cmd").to_string().contains("computed"),
            "the reason says what could not be resolved"
        );
        // Listing aliases and looking a program up run nothing.
        assert_eq!(runs("alias; hash git"), [["alias"], ["hash git"]]);
    }

    /// Nesting as deep as is parsed, of each kind that makes the parser recurse, parses on its
    /// own thread instead of overflowing the caller's stack (which aborts the process).
    #[test]
    fn deeply_nested_lines_do_not_overflow_the_stack() {
        let n = MAX_NESTING_TOKENS / 2 - 1;
        let lines = [
            format!("echo {}git push{}", "$(".repeat(n), ")".repeat(n)),
            format!(
                "{}git push;{}",
                "if true; then ".repeat(n),
                " fi;".repeat(n)
            ),
            format!("{}git push;{}", "{ ".repeat(n), " }".repeat(n)),
            format!("echo {}x{}", "${a:-".repeat(n), "}".repeat(n)),
        ];
        // On a thread with the stack a tokio worker has.
        std::thread::Builder::new()
            .stack_size(2 << 20)
            .spawn(move || {
                for line in &lines {
                    assert!(!invocations(line).is_empty(), "{}", &line[..40]);
                }
            })
            .unwrap()
            .join()
            .unwrap();
    }

    #[test]
    fn a_glob_could_match_a_command_known_only_so_far() {
        let glob = CommandGlob::new("git push*").unwrap();
        assert!(glob.could_match(""));
        assert!(glob.could_match("git "));
        assert!(glob.could_match("git pu"));
        assert!(glob.could_match("git push --force "));
        assert!(!glob.could_match("git status "));
        assert!(!glob.could_match("echo "));
        let exact = CommandGlob::new("rm -rf /").unwrap();
        assert!(exact.could_match("rm -rf"));
        assert!(!exact.could_match("rm -rf /x"));
        assert!(glob.is_match("git push\norigin"));
    }

    #[test]
    fn ansi_c_quotes_decode_as_bash_does() {
        assert_eq!(ansi_c(r"\x67it"), "git");
        assert_eq!(ansi_c(r"\147\151t"), "git");
        assert_eq!(ansi_c(r"\u0067\U00000069t"), "git");
        assert_eq!(ansi_c(r"a\tb\'\\\q"), "a\tb'\\\\q");
    }
}
