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

/// Like [`trim_middle`], but never cuts a fence line (a line of three or more backticks and
/// the identical line that closes it): the prose and the fenced contents between those lines
/// are trimmed instead, the longest first, so untrusted data trimmed still ends inside its
/// fence. Without fences it is [`trim_middle`]. The result is at most about `keep` bytes (more
/// only when the fence lines alone, or many pieces' markers, exceed it). `None` when `text`
/// already fits.
pub fn trim_fenced(text: &str, keep: usize) -> Option<String> {
    if text.len() <= keep {
        return None;
    }
    let pieces = fenced_pieces(text);
    let fences: usize = pieces
        .iter()
        .filter(|p| p.fence)
        .map(|p| p.text.len())
        .sum();
    let lengths: Vec<usize> = pieces
        .iter()
        .filter(|p| !p.fence)
        .map(|p| p.text.len())
        .collect();
    let cap = water_level(&lengths, keep.saturating_sub(fences));
    let mut out = String::with_capacity(keep);
    for piece in pieces {
        match trim_middle(piece.text, cap).filter(|_| !piece.fence) {
            Some(short) => out.push_str(&short),
            None => out.push_str(piece.text),
        }
    }
    Some(out)
}

/// A run of `text`: a fence line (with its line break) or what lies between two.
struct Piece<'a> {
    text: &'a str,
    fence: bool,
}

/// `text` cut at its fence lines: an opening line of three or more backticks alone, and the
/// next identical line that closes it. An unclosed fence's opening line is prose.
fn fenced_pieces(text: &str) -> Vec<Piece<'_>> {
    let is_fence = |line: &str| {
        let l = line.trim_end_matches(['\n', '\r']);
        l.len() >= 3 && l.bytes().all(|b| b == b'`')
    };
    let lines: Vec<(usize, &str)> = text
        .split_inclusive('\n')
        .scan(0, |at, line| {
            let start = *at;
            *at += line.len();
            Some((start, line))
        })
        .collect();
    let mut cuts = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let (start, line) = lines[i];
        let fence = line.trim_end_matches(['\n', '\r']);
        if is_fence(line)
            && let Some(j) = lines[i + 1..]
                .iter()
                .position(|(_, l)| l.trim_end_matches(['\n', '\r']) == fence)
        {
            let (end, closing) = lines[i + 1 + j];
            cuts.push((start, start + line.len()));
            cuts.push((end, end + closing.len()));
            i += j + 2;
        } else {
            i += 1;
        }
    }
    let mut pieces = Vec::new();
    let mut at = 0;
    for (start, end) in cuts {
        if start > at {
            pieces.push(Piece {
                text: &text[at..start],
                fence: false,
            });
        }
        pieces.push(Piece {
            text: &text[start..end],
            fence: true,
        });
        at = end;
    }
    if at < text.len() {
        pieces.push(Piece {
            text: &text[at..],
            fence: false,
        });
    }
    pieces
}

/// The largest cap such that the pieces, each cut to at most the cap, fill at most `room`.
pub(crate) fn water_level(lengths: &[usize], room: usize) -> usize {
    let mut sorted = lengths.to_vec();
    sorted.sort_unstable();
    let mut left = room;
    for (i, &len) in sorted.iter().enumerate() {
        let share = left / (sorted.len() - i);
        if len > share {
            return share;
        }
        left -= len;
    }
    usize::MAX
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

    #[test]
    fn a_fenced_trim_cuts_inside_the_fence_and_keeps_both_fence_lines() {
        let words: String = (0..2000).map(|i| format!("word {i}\n")).collect();
        let after: String = (0..100).map(|i| format!("then {i}\n")).collect();
        let text = format!("Do this.\n````\n{words}````\n{after}");
        let trimmed = trim_fenced(&text, 1000).unwrap();
        assert!(trimmed.len() <= 1000, "{}", trimmed.len());
        assert!(trimmed.starts_with("Do this.\n````\nword 0\n"), "{trimmed}");
        assert!(trimmed.contains("word 1999\n````\nthen 0\n"), "{trimmed}");
        assert!(trimmed.ends_with("then 99\n"), "{trimmed}");
        assert_eq!(trimmed.matches("cut here").count(), 2, "{trimmed}");
        assert_eq!(trim_fenced("short", 10), None);
        // A lone fence line is not a fence: trimmed like prose.
        let unclosed = format!("```\n{words}");
        assert!(trim_fenced(&unclosed, 500).unwrap().len() <= 500);
    }
}
