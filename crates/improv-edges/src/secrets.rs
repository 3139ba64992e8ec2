//! Secret hygiene: known secret values (provider keys from the environment, values matched by
//! configurable patterns) are redacted from tool output before the model sees it ([`Redacted`])
//! and from every event before it is logged or shown ([`RedactingObserver`]).

use async_trait::async_trait;
use improv_kernel::prop::{Layer, Wrapped};
use improv_kernel::{Event, ObserveError, Observer, Prop, PropContext, PropError};
use regex::Regex;
use std::borrow::Cow;
use std::sync::Arc;

/// Values shorter than this are not treated as secrets: redacting `1` or `true` everywhere
/// would garble output and protect nothing.
pub const MIN_SECRET_LEN: usize = 8;

/// Patterns of well-known credential formats, redacted by [`Redactor::with_default_patterns`].
pub const DEFAULT_PATTERNS: [&str; 6] = [
    r"sk-(?:ant-|proj-)?[A-Za-z0-9_\-]{20,}",
    r"gh[pousr]_[A-Za-z0-9]{30,}",
    r"AKIA[0-9A-Z]{16}",
    r"xox[abposr]-[A-Za-z0-9\-]{10,}",
    r"AIza[0-9A-Za-z_\-]{35}",
    r"-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?-----END [A-Z ]*PRIVATE KEY-----",
];

/// Whether an environment variable's name says it holds a secret: `*_API_KEY`, `*_KEY`,
/// `*TOKEN*`, `*SECRET*`, `*PASSWORD*`, `*PASSWD*`, `*CREDENTIAL*`, `*_PAT`.
pub fn looks_secret(name: &str) -> bool {
    let upper = name.to_ascii_uppercase();
    upper.ends_with("_KEY")
        || upper.ends_with("_PAT")
        || [
            "API_KEY",
            "APIKEY",
            "TOKEN",
            "SECRET",
            "PASSWORD",
            "PASSWD",
            "CREDENTIAL",
            "PRIVATE_KEY",
        ]
        .iter()
        .any(|s| upper.contains(s))
}

/// A pattern that is not a valid regex.
#[derive(Debug, thiserror::Error)]
#[error("secret pattern `{pattern}` is not a valid regex: {source}")]
pub struct PatternError {
    pub pattern: String,
    #[source]
    pub source: regex::Error,
}

/// Replaces secrets in text with `[redacted:NAME]` (a known value) or `[redacted]` (a pattern).
#[derive(Clone, Debug, Default)]
pub struct Redactor {
    /// Known values and the name they are shown as, longest first.
    known: Vec<(String, String)>,
    /// Known values as they appear inside a JSON string, where escaping changes them.
    escaped: Vec<String>,
    /// Every pattern, as given.
    sources: Vec<String>,
    /// All patterns as one alternation: one pass over a text, and one lazy-DFA cache rather than
    /// one per pattern (each costs memory on first use).
    patterns: Option<Regex>,
}

impl Redactor {
    /// A redactor that redacts nothing yet.
    pub fn new() -> Self {
        Redactor::default()
    }

    /// Redacts the values of every variable of improv's environment whose name
    /// [looks secret](looks_secret), and the default patterns.
    pub fn from_env() -> Self {
        // The default patterns compiled once per process and shared (a `Regex` clone shares
        // its program): a worker builds a redactor per performance, and compiling them each
        // time cost CPU and most of a waiting performance's memory.
        static DEFAULTS: std::sync::OnceLock<Redactor> = std::sync::OnceLock::new();
        let mut r = DEFAULTS
            .get_or_init(|| Redactor::new().with_default_patterns())
            .clone();
        for (name, value) in std::env::vars_os() {
            if let (Some(name), Some(value)) = (name.to_str(), value.to_str())
                && looks_secret(name)
            {
                r = r.with_secret(name, value);
            }
        }
        r
    }

    /// Redacts `value`, shown as `[redacted:NAME]`. Values shorter than [`MIN_SECRET_LEN`] are
    /// ignored.
    pub fn with_secret(mut self, name: &str, value: &str) -> Self {
        let value = value.trim();
        if value.len() >= MIN_SECRET_LEN && !self.known.iter().any(|(_, v)| v == value) {
            self.known.push((name.to_string(), value.to_string()));
            self.known.sort_by_key(|(_, v)| std::cmp::Reverse(v.len()));
            if let Ok(quoted) = serde_json::to_string(value) {
                let inner = &quoted[1..quoted.len() - 1];
                if inner != value {
                    self.escaped.push(inner.to_string());
                }
            }
        }
        self
    }

    /// Redacts whatever matches `pattern` (a regex).
    pub fn with_pattern(mut self, pattern: &str) -> Result<Self, PatternError> {
        Regex::new(pattern).map_err(|source| PatternError {
            pattern: pattern.to_string(),
            source,
        })?;
        self.sources.push(pattern.to_string());
        let combined = self
            .sources
            .iter()
            .map(|p| format!("(?:{p})"))
            .collect::<Vec<_>>()
            .join("|");
        self.patterns = Some(Regex::new(&combined).map_err(|source| PatternError {
            pattern: pattern.to_string(),
            source,
        })?);
        Ok(self)
    }

    /// Adds [`DEFAULT_PATTERNS`].
    pub fn with_default_patterns(self) -> Self {
        DEFAULT_PATTERNS.iter().fold(self, |r, p| {
            // The defaults are constants checked by a test; a bad one is skipped, not fatal.
            let fallback = r.clone();
            r.with_pattern(p).unwrap_or(fallback)
        })
    }

    /// Whether there is anything to redact.
    pub fn is_empty(&self) -> bool {
        self.known.is_empty() && self.patterns.is_none()
    }

    /// Whether `text` holds anything to redact.
    pub fn finds(&self, text: &str) -> bool {
        self.known.iter().any(|(_, v)| text.contains(v.as_str()))
            || self.escaped.iter().any(|v| text.contains(v.as_str()))
            || self.patterns.as_ref().is_some_and(|re| re.is_match(text))
    }

    /// Whether any string in the event holds a secret. Serializes into a reused buffer, so the
    /// common case (nothing to redact) allocates nothing per event.
    pub fn finds_in_event(&self, event: &Event) -> bool {
        thread_local! {
            static BUFFER: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
        }
        BUFFER.with(|buffer| {
            let mut buffer = buffer.borrow_mut();
            buffer.clear();
            if serde_json::to_writer(&mut *buffer, event).is_err() {
                return true; // cannot tell: take the careful path
            }
            self.finds(&String::from_utf8_lossy(&buffer))
        })
    }

    /// The text with every secret replaced.
    pub fn redact<'a>(&self, text: &'a str) -> Cow<'a, str> {
        let mut out = Cow::Borrowed(text);
        for (name, value) in &self.known {
            if out.contains(value.as_str()) {
                out = Cow::Owned(out.replace(value.as_str(), &format!("[redacted:{name}]")));
            }
        }
        if let Some(re) = &self.patterns
            && re.is_match(&out)
        {
            out = Cow::Owned(re.replace_all(&out, "[redacted]").into_owned());
        }
        out
    }

    /// The event with every string in it redacted.
    pub fn redact_event(&self, event: &Event) -> Result<Event, ObserveError> {
        let mut value = serde_json::to_value(event)
            .map_err(|e| ObserveError(format!("could not redact an event: {e}")))?;
        if !self.redact_value(&mut value) {
            return Ok(event.clone());
        }
        serde_json::from_value(value)
            .map_err(|e| ObserveError(format!("could not redact an event: {e}")))
    }

    /// Redacts every string of a JSON value in place; true when something changed.
    pub fn redact_value(&self, value: &mut serde_json::Value) -> bool {
        match value {
            serde_json::Value::String(s) => match self.redact(s) {
                Cow::Owned(r) => {
                    *s = r;
                    true
                }
                Cow::Borrowed(_) => false,
            },
            serde_json::Value::Array(items) => items
                .iter_mut()
                .map(|v| self.redact_value(v))
                .fold(false, |a, b| a | b),
            serde_json::Value::Object(map) => map
                .values_mut()
                .map(|v| self.redact_value(v))
                .fold(false, |a, b| a | b),
            _ => false,
        }
    }
}

/// A prop whose output (and error text) is redacted before it goes back to the model:
/// `Redacted::new(prop, redactor)`.
pub type Redacted = Wrapped<Redaction>;

/// The [`Layer`] of [`Redacted`]: the redactor its calls' results pass through.
pub struct Redaction(Arc<Redactor>);

impl From<Arc<Redactor>> for Redaction {
    fn from(redactor: Arc<Redactor>) -> Self {
        Redaction(redactor)
    }
}

#[async_trait]
impl Layer for Redaction {
    async fn call(
        &self,
        inner: &dyn Prop,
        arguments: serde_json::Value,
        context: &PropContext,
    ) -> Result<String, PropError> {
        match inner.call(arguments, context).await {
            Ok(out) => Ok(self.0.redact(&out).into_owned()),
            Err(e) => Err(e.map(|m| self.0.redact(&m).into_owned())),
        }
    }
}

/// An observer that sees every event with its secrets redacted.
pub struct RedactingObserver {
    inner: Arc<dyn Observer>,
    redactor: Arc<Redactor>,
}

impl RedactingObserver {
    pub fn new(inner: Arc<dyn Observer>, redactor: Arc<Redactor>) -> Self {
        RedactingObserver { inner, redactor }
    }
}

impl Observer for RedactingObserver {
    fn observe(&self, event: &Event) -> Result<(), ObserveError> {
        if !self.redactor.finds_in_event(event) {
            return self.inner.observe(event);
        }
        let redacted = self.redactor.redact_event(event)?;
        self.inner.observe(&redacted)
    }

    fn settled(&self) -> improv_kernel::Settling<'_> {
        self.inner.settled()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use improv_kernel::EventKind;

    fn note(text: &str) -> Event {
        Event {
            seq: 0,
            at: "t".into(),
            actor: None,
            kind: EventKind::DirectorNote { text: text.into() },
        }
    }

    #[test]
    fn events_are_checked_in_their_json_form_escapes_included() {
        let r = Redactor::new()
            .with_secret("QUOTED_SECRET", "pa\"ss\\word-123")
            .with_pattern("tok_[0-9]{6}")
            .unwrap();
        assert!(!r.finds_in_event(&note("nothing to see")));
        assert!(r.finds_in_event(&note("x pa\"ss\\word-123 y")));
        assert!(r.finds_in_event(&note("tok_123456")));
        let clean = r
            .redact_event(&note("a pa\"ss\\word-123 b tok_123456"))
            .unwrap();
        assert_eq!(
            clean.kind,
            EventKind::DirectorNote {
                text: "a [redacted:QUOTED_SECRET] b [redacted]".into()
            }
        );
    }

    #[test]
    fn names_that_hold_secrets_are_recognized() {
        for name in [
            "OPENAI_API_KEY",
            "ANTHROPIC_API_KEY",
            "GITHUB_TOKEN",
            "AWS_SECRET_ACCESS_KEY",
            "DB_PASSWORD",
            "my_api_key",
        ] {
            assert!(looks_secret(name), "{name}");
        }
        for name in ["PATH", "HOME", "LANG", "TERM", "KEYBOARD"] {
            assert!(!looks_secret(name), "{name}");
        }
    }

    #[test]
    fn known_values_and_patterns_are_redacted() {
        let r = Redactor::new()
            .with_default_patterns()
            .with_secret("OPENAI_API_KEY", "not-a-pattern-value-42")
            .with_secret("SHORT", "abc");
        let text = "key=not-a-pattern-value-42 gh=ghp_abcdefghijklmnopqrstuvwxyz0123456789 abc AKIAABCDEFGHIJKLMNOP";
        let out = r.redact(text);
        assert_eq!(
            out,
            "key=[redacted:OPENAI_API_KEY] gh=[redacted] abc [redacted]"
        );
        assert!(matches!(r.redact("nothing here"), Cow::Borrowed(_)));
        let pem =
            "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNz\n-----END OPENSSH PRIVATE KEY-----\n";
        assert_eq!(r.redact(pem), "[redacted]\n");
        assert!(Redactor::new().with_pattern("(").is_err());
    }

    #[test]
    fn events_are_redacted_in_every_field() {
        let r = Redactor::new().with_secret("K", "supersecretvalue");
        let event = Event {
            seq: 1,
            at: "t".into(),
            actor: None,
            kind: EventKind::ToolCallStarted {
                call_id: "c".into(),
                name: "bash".into(),
                arguments: r#"{"command":"echo supersecretvalue"}"#.into(),
            },
        };
        let out = r.redact_event(&event).unwrap();
        let json = serde_json::to_string(&out).unwrap();
        assert!(!json.contains("supersecretvalue"), "{json}");
        assert!(json.contains("[redacted:K]"), "{json}");
    }
}
