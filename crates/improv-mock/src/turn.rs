//! A provider-neutral model turn that the wire-format builders render as a recorded-shape stream.

/// One tool call in a [`Turn`]. `arguments` is the JSON text the model writes.
#[derive(Clone, Debug, PartialEq)]
pub struct Call {
    pub id: String,
    pub name: String,
    pub arguments: String,
}

/// What a model says in one turn: text, tool calls, why it stopped and what it used.
/// `stop` is the provider's own word (`"length"`, `"max_tokens"`, `"max_output_tokens"`…);
/// when absent, each builder picks the natural one (end of turn, or tool use when there are
/// calls).
#[derive(Clone, Debug, PartialEq)]
pub struct Turn {
    pub model: String,
    pub text: String,
    pub calls: Vec<Call>,
    pub stop: Option<String>,
    /// Total input tokens, including the cached ones.
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cached_tokens: u64,
}

impl Default for Turn {
    fn default() -> Self {
        Turn {
            model: "mock-model".into(),
            text: String::new(),
            calls: Vec::new(),
            stop: None,
            input_tokens: 12,
            output_tokens: 5,
            cached_tokens: 0,
        }
    }
}

impl Turn {
    /// A turn that says `text`.
    pub fn text(text: &str) -> Self {
        Turn {
            text: text.into(),
            ..Turn::default()
        }
    }

    /// A turn that calls tools: `(id, name, arguments JSON)`.
    pub fn calls(calls: &[(&str, &str, &str)]) -> Self {
        calls.iter().fold(Turn::default(), |t, (id, name, args)| {
            t.call(id, name, args)
        })
    }

    /// Adds a tool call.
    pub fn call(mut self, id: &str, name: &str, arguments: &str) -> Self {
        self.calls.push(Call {
            id: id.into(),
            name: name.into(),
            arguments: arguments.into(),
        });
        self
    }

    /// Sets the text.
    pub fn say(mut self, text: &str) -> Self {
        self.text = text.into();
        self
    }

    /// Sets the provider's stop word.
    pub fn stop(mut self, reason: &str) -> Self {
        self.stop = Some(reason.into());
        self
    }

    /// Sets the usage: total input tokens, output tokens and the cached part of the input.
    pub fn usage(mut self, input: u64, output: u64, cached: u64) -> Self {
        self.input_tokens = input;
        self.output_tokens = output;
        self.cached_tokens = cached;
        self
    }

    /// Sets the model name the stream reports.
    pub fn model(mut self, model: &str) -> Self {
        self.model = model.into();
        self
    }

    /// The text in word-sized pieces, as providers stream it.
    pub(crate) fn text_pieces(&self) -> Vec<&str> {
        self.text.split_inclusive(' ').collect()
    }
}
