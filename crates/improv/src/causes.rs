//! An error's chain of causes with each cause once. Many errors write their source into their
//! own message (`#[error("cannot read {path}: {source}")]`) and also return it from `source()`;
//! printing the message and then the chain would say the cause twice ("stream did not contain
//! valid UTF-8" under "cannot read stage.toml: stream did not contain valid UTF-8"). The rule
//! lives here, once, for every error the binary prints: a cause whose text an earlier message
//! already contains is left out, and the causes below it still count.

use std::error::Error;
use std::fmt;

/// The messages of `e` and its causes, outermost first, each cause once.
pub fn distinct(e: &dyn Error) -> Vec<String> {
    let mut said: Vec<String> = Vec::new();
    let mut next = Some(e);
    while let Some(cause) = next {
        let text = cause.to_string();
        if !text.is_empty() && !said.iter().any(|s| s.contains(&text)) {
            said.push(text);
        }
        next = cause.source();
    }
    said
}

/// The causes below `e` that its message does not already say, as an error chain (for report
/// renderers that walk `source()`), or `None` when there is none left.
pub fn below(e: &dyn Error) -> Option<Box<Cause>> {
    distinct(e)
        .into_iter()
        .skip(1)
        .rev()
        .fold(None, |next, text| Some(Box::new(Cause { text, next })))
}

/// One cause kept by [`below`]: its text and the next cause kept.
#[derive(Debug)]
pub struct Cause {
    text: String,
    next: Option<Box<Cause>>,
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl Error for Cause {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        self.next.as_deref().map(|c| c as &(dyn Error + 'static))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An error with a message and an optional source, as thiserror would derive.
    #[derive(Debug)]
    struct Failure {
        message: String,
        source: Option<Box<dyn Error + 'static>>,
    }

    impl fmt::Display for Failure {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(&self.message)
        }
    }

    impl Error for Failure {
        fn source(&self) -> Option<&(dyn Error + 'static)> {
            self.source.as_deref()
        }
    }

    fn missing() -> Box<dyn Error> {
        Box::new(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "No such file or directory",
        ))
    }

    fn failure(message: &str, source: Box<dyn Error>) -> Failure {
        Failure {
            message: message.into(),
            source: Some(source),
        }
    }

    #[test]
    fn a_cause_the_message_already_says_is_left_out_and_those_below_stay() {
        // `#[error("cannot read {path}: {source}")]` under a context that does not say it.
        let read = failure(
            "cannot read stage.toml: No such file or directory",
            missing(),
        );
        let e = failure("cannot load the stage", Box::new(read));
        assert_eq!(
            distinct(&e),
            [
                "cannot load the stage",
                "cannot read stage.toml: No such file or directory"
            ]
        );
        let chain = below(&e).unwrap();
        assert_eq!(
            chain.to_string(),
            "cannot read stage.toml: No such file or directory"
        );
        assert!(chain.source().is_none());
    }

    #[test]
    fn a_cause_the_message_does_not_say_is_kept() {
        let e = failure("cannot open the log", missing());
        assert_eq!(
            distinct(&e),
            ["cannot open the log", "No such file or directory"]
        );
        assert_eq!(below(&e).unwrap().to_string(), "No such file or directory");
    }
}
