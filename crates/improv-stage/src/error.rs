//! The errors of loading a stage file: a missing or unreadable file, or a stage file that does
//! not parse or validate. The last are [`miette::Diagnostic`]s that point at the offending key or
//! value in the file and carry a hint.

use miette::{Diagnostic, LabeledSpan, NamedSource, SourceSpan};
use std::ops::Range;
use std::path::{Path, PathBuf};

/// Why a stage could not be loaded.
#[derive(Debug, thiserror::Error, Diagnostic)]
pub enum StageError {
    /// There is no stage file where one was looked for.
    #[error("no stage.toml in {}; run `improv init` to write one", dir.display())]
    #[diagnostic(code(improv::stage::missing))]
    Missing { dir: PathBuf },
    /// The stage file exists but cannot be read.
    #[error("cannot read {}: {source}", path.display())]
    #[diagnostic(code(improv::stage::read))]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The stage file does not parse or does not make sense; see [`Invalid`].
    #[error(transparent)]
    #[diagnostic(transparent)]
    Invalid(Box<Invalid>),
}

/// A problem in a stage file, pointing at where it is. Further problems found in the same file
/// are its related diagnostics.
#[derive(Debug, thiserror::Error, Diagnostic)]
#[error("{location}: {message}")]
#[diagnostic(code(improv::stage::invalid))]
pub struct Invalid {
    /// `FILE:LINE:COLUMN` of the first label.
    pub location: String,
    /// What is wrong, without the location.
    pub message: String,
    #[source_code]
    src: NamedSource<String>,
    #[label(collection)]
    labels: Vec<LabeledSpan>,
    #[help]
    help: Option<String>,
    #[related]
    more: Vec<Invalid>,
}

impl Invalid {
    /// The further problems found in the same file.
    pub fn more(&self) -> &[Invalid] {
        &self.more
    }
}

/// A problem found while parsing or validating, before it is tied to its file.
#[derive(Debug)]
pub(crate) struct Problem {
    pub message: String,
    /// Byte ranges in the file with what each marks; the first is the main one.
    pub labels: Vec<(Range<usize>, String)>,
    pub help: Option<String>,
}

impl Problem {
    pub fn new(message: impl Into<String>, span: Range<usize>, label: impl Into<String>) -> Self {
        Problem {
            message: message.into(),
            labels: vec![(span, label.into())],
            help: None,
        }
    }

    pub fn help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    pub fn also(mut self, span: Range<usize>, label: impl Into<String>) -> Self {
        self.labels.push((span, label.into()));
        self
    }

    fn into_invalid(self, path: &Path, text: &str) -> Invalid {
        let start = self.labels.first().map_or(0, |(r, _)| r.start);
        let (line, column) = line_column(text, start);
        let labels = self
            .labels
            .into_iter()
            .enumerate()
            .map(|(i, (r, label))| {
                let start = r.start.min(text.len());
                let span =
                    SourceSpan::new(start.into(), r.end.min(text.len()).saturating_sub(start));
                // The report's header shows the primary label's position: the problem's own.
                if i == 0 {
                    LabeledSpan::new_primary_with_span(Some(label), span)
                } else {
                    LabeledSpan::new_with_span(Some(label), span)
                }
            })
            .collect();
        Invalid {
            location: format!("{}:{line}:{column}", path.display()),
            message: self.message,
            src: NamedSource::new(path.display().to_string(), text.to_string())
                .with_language("toml"),
            labels,
            help: self.help,
            more: Vec::new(),
        }
    }
}

/// Ties problems (at least one) to their file: the first becomes the error, the rest its related
/// diagnostics.
pub(crate) fn invalid(mut problems: Vec<Problem>, path: &Path, text: &str) -> StageError {
    let rest = problems.split_off(1.min(problems.len()));
    let first = problems
        .pop()
        .unwrap_or_else(|| Problem::new("the stage file is not valid", 0..0, "here"));
    let mut main = first.into_invalid(path, text);
    main.more = rest
        .into_iter()
        .map(|p| p.into_invalid(path, text))
        .collect();
    StageError::Invalid(Box::new(main))
}

/// The 1-based line and column (in characters) of a byte offset.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, text[line_start..offset].chars().count() + 1)
}
