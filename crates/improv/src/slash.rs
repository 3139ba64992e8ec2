//! The interactive session's slash commands: what the director types at the prompt that is
//! meant for improv rather than for the cast. Everything else is a direction.

/// What a line typed at the session prompt is.
#[derive(Debug, PartialEq, Eq)]
pub enum Typed {
    /// Text for the lead: its next message.
    Direct(String),
    /// `/help` (or `/?`): the commands.
    Help,
    /// `/exit` (or `/quit`): end the session.
    Exit,
    /// `/status` (or `/cost`): the performance id and what it has spent.
    Status,
    /// A slash word improv does not know; it is not sent to the cast.
    Unknown(String),
}

/// The commands, as `/help` lists them.
pub const HELP: &str = "\
  /help            these commands
  /status, /cost   the performance id, turns, tokens, cost and time so far
  /exit, /quit     end the session (Ctrl-D too)
  //TEXT           send TEXT with one leading / to the cast
  Anything else is a direction for the lead. While a turn runs, a line you type reaches the
  lead as a note before its next model call; Ctrl-C stops the turn.";

/// Reads a trimmed, non-empty line. A command is one slash word (`/help`); a line whose first
/// word has more slashes (`/etc/hosts is wrong`) is a direction, and `//` escapes a leading `/`.
pub fn parse(line: &str) -> Typed {
    if let Some(escaped) = line.strip_prefix("//") {
        return Typed::Direct(format!("/{escaped}"));
    }
    let Some(rest) = line.strip_prefix('/') else {
        return Typed::Direct(line.to_string());
    };
    let word = rest.split_whitespace().next().unwrap_or_default();
    if word.contains('/') {
        return Typed::Direct(line.to_string());
    }
    match word.to_lowercase().as_str() {
        "help" | "?" => Typed::Help,
        "exit" | "quit" => Typed::Exit,
        "status" | "cost" => Typed::Status,
        _ => Typed::Unknown(format!("/{word}")),
    }
}

/// The `/status` line.
pub fn status(id: &str, spent: &improv_kernel::Spent) -> String {
    format!(
        "performance {id} · {} turns · {} in / {} out tokens · ${:.4} · {:.1} s",
        spent.turns,
        spent.input_tokens,
        spent.output_tokens,
        spent.cost_usd,
        spent.elapsed_ms as f64 / 1000.0
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_paths_and_escapes() {
        assert_eq!(parse("/help"), Typed::Help);
        assert_eq!(parse("/?"), Typed::Help);
        assert_eq!(parse("/QUIT"), Typed::Exit);
        assert_eq!(parse("/cost now"), Typed::Status);
        assert_eq!(parse("/nope"), Typed::Unknown("/nope".into()));
        assert_eq!(
            parse("/etc/hosts is wrong"),
            Typed::Direct("/etc/hosts is wrong".into())
        );
        assert_eq!(parse("//help me"), Typed::Direct("/help me".into()));
        assert_eq!(parse("fix it"), Typed::Direct("fix it".into()));
    }
}
