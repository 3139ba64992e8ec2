//! The texts a forced repair edit may put in place of a line: small mutations of the line as
//! first read in the performance, which the grammar offers as a closed set so that the model's
//! own token choices rank them and the checks judge each one.
//!
//! A 135M model that sees a line and may write any text copies it and changes only where the
//! copying runs out (a trailing `)` added or dropped), and each edit starts from the line it
//! edited last, so it walks instead of searching. Here every candidate is one mutation of the
//! line as first read, none that an edit already wrote (`tried`), and the line's current text is
//! never one:
//!
//! - a span of 1 to [`MAX_SPAN`] tokens deleted (a token keeps the blanks before it), but never
//!   the line's leading call or macro name (a word first, then `!` or `(`): without it
//!   `assert_eq!(a, b);` reads `(a, b);`, which compiles and checks nothing;
//! - an operator replaced by its sibling ([`SIBLINGS`]);
//! - a number `n` replaced by `n+1`, `n-1`, `0` or `1`, in its form (`1.0` → `2.0`, `3u8` → `4u8`);
//! - the first-read line itself (it reverts an earlier mutation).
//!
//! At most [`MAX_CANDIDATES`], in that order of kinds (reverts, operators, numbers, deletions
//! of one token, two, three), after the tried ones are left out. The lexer is written here: it
//! needs only to split a line of any language into words, numbers, operators and the rest, and
//! a language's own lexer would reject the half-written lines a search passes through.

/// The most candidates offered for one line: each is a branch of the grammar.
pub const MAX_CANDIDATES: usize = 256;

/// The most tokens one deletion removes.
pub const MAX_SPAN: usize = 3;

/// Operators and the one each may become (both ways).
pub const SIBLINGS: [(&str, &str); 6] = [
    ("+", "-"),
    ("*", "/"),
    ("<", "<="),
    (">", ">="),
    ("==", "!="),
    ("&&", "||"),
];

/// Operators of more than one character, longest first: a lexer takes the longest that fits.
const LONG_OPERATORS: [&str; 21] = [
    "<<=", ">>=", "...", "..=", "==", "!=", "<=", ">=", "&&", "||", "->", "=>", "::", "+=", "-=",
    "*=", "/=", "%=", "<<", ">>", "..",
];

/// Characters that make an operator on their own.
const OPERATOR_CHARS: &str = "+-*/%<>=!&|^";

/// What a token is: it decides which mutations apply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Word,
    Number,
    Operator,
    /// Brackets, separators, quoted strings and anything else.
    Other,
}

/// A token of a line: `line[start..end]`, the blanks before it included from `start`, its own
/// text from `text`.
#[derive(Clone, Copy, Debug)]
struct Token {
    start: usize,
    text: usize,
    end: usize,
    kind: Kind,
}

/// The mutations of `first` (the line as first read) not among `tried` and other than `now`
/// (the line as it reads now), at most [`MAX_CANDIDATES`], each without surrounding blanks and
/// none empty.
pub fn candidates(first: &str, now: &str, tried: &[String]) -> Vec<String> {
    let first = first.trim();
    let tokens = lex(first);
    let mut out: Vec<String> = Vec::new();
    let mut offer = |text: String| {
        let text = text.trim();
        if out.len() < MAX_CANDIDATES
            && !text.is_empty()
            && text != now
            && !tried.iter().any(|t| t == text)
            && !out.iter().any(|o| o == text)
        {
            out.push(text.to_string());
        }
    };
    offer(first.to_string());
    let replaced = |t: &Token, with: &str| format!("{}{with}{}", &first[..t.text], &first[t.end..]);
    for t in tokens.iter().filter(|t| t.kind == Kind::Operator) {
        let op = &first[t.text..t.end];
        for (a, b) in SIBLINGS {
            if op == a {
                offer(replaced(t, b));
            } else if op == b {
                offer(replaced(t, a));
            }
        }
    }
    for t in tokens.iter().filter(|t| t.kind == Kind::Number) {
        for number in numbers(&first[t.text..t.end]) {
            offer(replaced(t, &number));
        }
    }
    let called = leads_a_call(first, &tokens);
    for span in 1..=MAX_SPAN {
        for (at, window) in tokens.windows(span).enumerate() {
            if called && at == 0 {
                continue;
            }
            let (from, to) = (window[0].start, window[span - 1].end);
            offer(format!("{}{}", &first[..from], &first[to..]));
        }
    }
    out
}

/// Whether `line` opens with a call or a macro: a word, then `!` or `(` (`assert!(x)`,
/// `check(x)`, `Some(x)`). Deleting that word switches the call off and may still compile.
fn leads_a_call(line: &str, tokens: &[Token]) -> bool {
    match tokens {
        [name, next, ..] => {
            name.kind == Kind::Word && matches!(&line[next.text..next.end], "!" | "(")
        }
        _ => false,
    }
}

/// The tokens of `line`: words, numbers (with a fraction and a suffix), operators (the longest
/// that fits), quoted strings, and single characters of anything else.
fn lex(line: &str) -> Vec<Token> {
    let mut tokens = Vec::new();
    let mut start = 0;
    let mut at = 0;
    while let Some(c) = line[at..].chars().next() {
        if c.is_whitespace() {
            at += c.len_utf8();
            continue;
        }
        let rest = &line[at..];
        let (len, kind) = if c.is_ascii_digit() {
            (number_len(rest), Kind::Number)
        } else if c.is_alphabetic() || c == '_' {
            (word_len(rest), Kind::Word)
        } else if c == '"' {
            (quoted_len(rest), Kind::Other)
        } else if let Some(op) = LONG_OPERATORS.iter().find(|op| rest.starts_with(**op)) {
            (op.len(), Kind::Operator)
        } else if OPERATOR_CHARS.contains(c) {
            (1, Kind::Operator)
        } else {
            (c.len_utf8(), Kind::Other)
        };
        tokens.push(Token {
            start,
            text: at,
            end: at + len,
            kind,
        });
        at += len;
        start = at;
    }
    tokens
}

fn word_len(text: &str) -> usize {
    text.find(|c: char| !(c.is_alphanumeric() || c == '_'))
        .unwrap_or(text.len())
}

/// `12`, `1_000`, `1.5`, `2.0f64`, `3u8`, `0x1F`: digits, a fraction when a digit follows the
/// point (`1..2` is a range), then any suffix.
fn number_len(text: &str) -> usize {
    let digits = |s: &str| {
        s.find(|c: char| !(c.is_ascii_digit() || c == '_'))
            .unwrap_or(s.len())
    };
    let mut len = digits(text);
    let rest = &text[len..];
    if rest.starts_with('.') && rest[1..].starts_with(|c: char| c.is_ascii_digit()) {
        len += 1 + digits(&rest[1..]);
    }
    len + word_len(&text[len..])
}

/// A quoted string with its escapes, to its closing quote or the line's end.
fn quoted_len(text: &str) -> usize {
    let mut escaped = false;
    for (i, c) in text.char_indices().skip(1) {
        match c {
            '\\' if !escaped => escaped = true,
            '"' if !escaped => return i + 1,
            _ => escaped = false,
        }
    }
    text.len()
}

/// `n+1`, `n-1`, `0` and `1` for the number `text`, in its form: the same digits after the
/// point and the same suffix. None for a number of another base (`0x1F`) or with `_`.
fn numbers(text: &str) -> Vec<String> {
    let int_len = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (int, rest) = text.split_at(int_len);
    let (fraction, suffix) = match rest.strip_prefix('.') {
        Some(after) => {
            let n = after
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(after.len());
            (&after[..n], &after[n..])
        }
        None => ("", rest),
    };
    let other_base = int == "0" && suffix.starts_with(['x', 'o', 'b']);
    let Ok(n) = int.parse::<u128>() else {
        return Vec::new();
    };
    if other_base || suffix.starts_with('_') {
        return Vec::new();
    }
    let form = |n: u128| {
        if rest.starts_with('.') {
            format!("{n}.{}{suffix}", "0".repeat(fraction.len()))
        } else {
            format!("{n}{suffix}")
        }
    };
    let mut out = Vec::new();
    let point = |n: u128| {
        if fraction.chars().all(|c| c == '0') {
            form(n)
        } else {
            // `0.5` + 1 is `1.5`: the fraction stays, only the whole part moves.
            format!("{n}.{fraction}{suffix}")
        }
    };
    out.push(point(n.saturating_add(1)));
    if let Some(less) = n.checked_sub(1) {
        out.push(point(less));
    }
    out.push(form(0));
    out.push(form(1));
    let mut unique: Vec<String> = Vec::new();
    for m in out {
        if m != text && !unique.contains(&m) {
            unique.push(m);
        }
    }
    unique
}

#[cfg(test)]
mod tests {
    use super::*;

    const LINE: &str = "Some(xs.iter().sum::<f64>() / (xs.len() as f64 + 1.0))";

    fn texts(line: &str) -> Vec<(&str, Kind)> {
        lex(line)
            .iter()
            .map(|t| (&line[t.text..t.end], t.kind))
            .collect()
    }

    #[test]
    fn the_lexer_splits_words_numbers_operators_and_keeps_blanks_with_the_next_token() {
        let line = "if a.0 <= 1..2 && s == \"a \\\" b\" { x += 2.5f32; }";
        assert_eq!(
            texts(line),
            [
                ("if", Kind::Word),
                ("a", Kind::Word),
                (".", Kind::Other),
                ("0", Kind::Number),
                ("<=", Kind::Operator),
                ("1", Kind::Number),
                ("..", Kind::Operator),
                ("2", Kind::Number),
                ("&&", Kind::Operator),
                ("s", Kind::Word),
                ("==", Kind::Operator),
                ("\"a \\\" b\"", Kind::Other),
                ("{", Kind::Other),
                ("x", Kind::Word),
                ("+=", Kind::Operator),
                ("2.5f32", Kind::Number),
                (";", Kind::Other),
                ("}", Kind::Other),
            ]
        );
        let tokens = lex(line);
        // The blank before `<=` is its own.
        assert_eq!(&line[tokens[4].start..tokens[4].end], " <=");
        // Tokens cover the line, in order.
        assert_eq!(tokens.last().map(|t| t.end), Some(line.len()));
        assert!(tokens.windows(2).all(|w| w[0].end == w[1].start));
    }

    #[test]
    fn numbers_move_in_their_form() {
        assert_eq!(numbers("1.0"), ["2.0", "0.0"]);
        assert_eq!(numbers("3u8"), ["4u8", "2u8", "0u8", "1u8"]);
        assert_eq!(numbers("0"), ["1"]);
        assert_eq!(numbers("0.5"), ["1.5", "0.0", "1.0"]);
        assert!(numbers("0x1F").is_empty());
        assert!(numbers("1_000").is_empty());
    }

    #[test]
    fn candidates_are_small_mutations_of_the_first_line() {
        let all = candidates(LINE, LINE, &[]);
        // Never the line as it reads now, never empty, never twice.
        assert!(!all.iter().any(|c| c == LINE || c.is_empty()));
        let mut unique = all.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), all.len());
        assert!(all.len() <= MAX_CANDIDATES);
        for expected in [
            // ` + 1.0` deleted: two tokens, each with the blank before it.
            "Some(xs.iter().sum::<f64>() / (xs.len() as f64))",
            // An operator's sibling.
            "Some(xs.iter().sum::<f64>() / (xs.len() as f64 - 1.0))",
            "Some(xs.iter().sum::<f64>() * (xs.len() as f64 + 1.0))",
            // A number moved, in its form.
            "Some(xs.iter().sum::<f64>() / (xs.len() as f64 + 0.0))",
            "Some(xs.iter().sum::<f64>() / (xs.len() as f64 + 2.0))",
            // One token and three deleted.
            "Some(xs.iter().sum::<f64>() / (xs.len() as f64 + 1.0)",
            "Some(xs.iter().sum::<f64>() / (xs.len() as f64 +",
            // A token deleted after a blank: the blank goes with it.
            "Some(xs.iter().sum::<f64>() / (xs.len() f64 + 1.0))",
        ] {
            assert!(all.iter().any(|c| c == expected), "{expected} in {all:#?}");
        }
        // Nothing longer than the line but by a digit or an operator's second character.
        assert!(all.iter().all(|c| c.len() <= LINE.len() + 1), "{all:#?}");
    }

    #[test]
    fn the_base_is_the_first_line_and_tried_candidates_never_come_back() {
        let deleted = "Some(xs.iter().sum::<f64>() / (xs.len() as f64 + 1.0)";
        // The line now reads as an earlier mutation: the first-read line is offered (a
        // revert), the mutation it reads as is not, and every other candidate is a mutation
        // of the first line, not of the current one.
        let now = candidates(LINE, deleted, &[deleted.to_string()]);
        assert_eq!(now.first().map(String::as_str), Some(LINE));
        assert!(!now.iter().any(|c| c == deleted));
        let mut expected = vec![LINE.to_string()];
        expected.extend(candidates(LINE, LINE, &[deleted.to_string()]));
        assert_eq!(now, expected);
        // A mutation of the current line that is no mutation of the first is never offered.
        assert!(
            !now.iter()
                .any(|c| c == "(xs.iter().sum::<f64>() / (xs.len() as f64 + 1.0)")
        );
        // Each tried candidate is left out; trying all leaves none.
        let mut tried: Vec<String> = Vec::new();
        loop {
            let left = candidates(LINE, LINE, &tried);
            assert!(!left.iter().any(|c| tried.contains(c)));
            let Some(next) = left.into_iter().next() else {
                break;
            };
            tried.push(next);
            assert!(tried.len() <= 2 * MAX_CANDIDATES, "the search ends");
        }
        assert!(tried.len() > 80, "{}", tried.len());
        // The reverted line, once tried, is not offered again.
        assert!(candidates(LINE, deleted, &[]).iter().any(|c| c == LINE));
        assert!(
            !candidates(LINE, deleted, &[LINE.to_string()])
                .iter()
                .any(|c| c == LINE)
        );
    }

    #[test]
    fn a_leading_call_or_macro_name_is_never_deleted() {
        for (line, switched_off) in [
            (
                "assert_eq!(mean(&[1.0]), Some(1.0));",
                "(mean(&[1.0]), Some(1.0));",
            ),
            ("assert!(ok);", "(ok);"),
            ("check(x == 1);", "(x == 1);"),
        ] {
            let all = candidates(line, line, &[]);
            assert!(!all.is_empty());
            assert!(!all.iter().any(|c| c == switched_off), "{line}: {all:#?}");
            // Nothing that starts after the name's place: `!(…)`, `(…)`, `mean(…)…`.
            let name = line.split(['!', '(']).next().unwrap_or_default();
            assert!(all.iter().all(|c| c.starts_with(name)), "{line}: {all:#?}");
        }
        // A line that opens otherwise keeps its first-token deletions.
        let line = "x = f(1);";
        assert!(candidates(line, line, &[]).iter().any(|c| c == "= f(1);"));
    }

    #[test]
    fn the_set_is_bounded() {
        let long = (0..200)
            .map(|i| format!("a{i}"))
            .collect::<Vec<_>>()
            .join(" + ");
        assert_eq!(candidates(&long, &long, &[]).len(), MAX_CANDIDATES);
    }
}
