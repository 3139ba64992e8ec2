//! Trimming a large text to its head and tail, with a marker that says how much was cut and
//! how to see it again.

/// Cuts the middle out of `text` when it is longer than `keep` bytes. What is left — head,
/// marker, tail — is at most `keep` bytes (or the marker alone, when `keep` is smaller), so a
/// trimmed text is never trimmed again. `None` when `text` already fits.
pub fn trim_middle(text: &str, keep: usize) -> Option<String> {
    if text.len() <= keep {
        return None;
    }
    let room = keep.saturating_sub(marker(text.len(), text.len(), usize::MAX / 2).len());
    let head = floor_boundary(text, room * 2 / 3);
    let tail = ceil_boundary(text, text.len() - (room - room * 2 / 3)).max(head);
    let cut = &text[head..tail];
    let lines = cut.matches('\n').count();
    Some(format!(
        "{}{}{}",
        &text[..head],
        marker(cut.len(), text.len(), lines),
        &text[tail..]
    ))
}

fn marker(cut: usize, total: usize, lines: usize) -> String {
    format!(
        "\n[… {cut} of {total} bytes ({lines} lines) cut here to save context; call again for a narrower range to see them …]\n"
    )
}

fn floor_boundary(text: &str, mut at: usize) -> usize {
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    at
}

fn ceil_boundary(text: &str, mut at: usize) -> usize {
    while !text.is_char_boundary(at) {
        at += 1;
    }
    at
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_text_is_left_alone() {
        assert_eq!(trim_middle("hello", 10), None);
    }

    #[test]
    fn long_text_keeps_head_and_tail_within_the_limit_and_says_what_was_cut() {
        let text: String = (0..1000).map(|i| format!("line {i}\n")).collect();
        let trimmed = trim_middle(&text, 600).unwrap();
        assert!(trimmed.len() <= 600, "{}", trimmed.len());
        assert!(trimmed.starts_with("line 0\nline 1\n"));
        assert!(trimmed.ends_with("line 999\n"));
        let head = trimmed.find("\n[…").unwrap();
        let tail = trimmed.len() - trimmed.find("…]\n").unwrap() - "…]\n".len();
        let kept = head + tail;
        let said = format!("… {} of {} bytes", text.len() - kept, text.len());
        assert!(trimmed.contains(&said), "{trimmed}");
        assert!(trimmed.contains("call again"));
        assert_eq!(trim_middle(&trimmed, 600), None, "trimmed twice");
    }

    #[test]
    fn multibyte_text_is_cut_on_char_boundaries() {
        let text = "é".repeat(500);
        let trimmed = trim_middle(&text, 300).unwrap();
        assert!(trimmed.len() <= 300);
        assert!(trimmed.starts_with('é') && trimmed.ends_with('é'));
    }
}
