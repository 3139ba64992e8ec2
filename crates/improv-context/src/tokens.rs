//! Token estimates for a conversation, when no tokenizer is at hand: a token per four bytes of
//! text plus a few for each message's framing. It errs high for prose and code alike, which is
//! the safe side for staying inside a context window.

use improv_kernel::Message;

/// Tokens a provider spends on a message's framing (role, separators) besides its text.
const MESSAGE_FRAMING: u64 = 4;

/// The estimated tokens of one message.
pub fn estimate_message(message: &Message) -> u64 {
    (message.text_len() as u64).div_ceil(4) + MESSAGE_FRAMING
}

/// The estimated tokens of a run of messages.
pub fn estimate(messages: &[Message]) -> u64 {
    messages.iter().map(estimate_message).sum()
}

/// What the last request cost besides its messages (the system prompt, the tool specs, and the
/// estimate's own error on what was sent), from its measured input tokens. The last request
/// held every message before the last assistant reply.
pub(crate) fn overhead(context_tokens: u64, conversation: &[Message]) -> u64 {
    if context_tokens == 0 {
        return 0;
    }
    let sent = conversation
        .iter()
        .rposition(|m| matches!(m, Message::Assistant { .. }))
        .unwrap_or(conversation.len());
    context_tokens.saturating_sub(estimate(&conversation[..sent]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overhead_is_what_the_last_request_cost_beyond_its_estimated_messages() {
        let conversation = vec![
            Message::user("x".repeat(400)),
            Message::Assistant {
                text: "y".repeat(40),
                tool_calls: vec![],
            },
        ];
        // 400 bytes = 100 tokens + 4 framing; the request measured 150.
        assert_eq!(overhead(150, &conversation), 46);
        assert_eq!(overhead(0, &conversation), 0);
        assert_eq!(overhead(10, &conversation), 0);
    }
}
