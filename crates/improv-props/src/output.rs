//! Bounded output: a head-and-tail buffer for command output of any size, and line clipping.
//! What a prop returns is sent to the model, so it is always capped.

use std::collections::VecDeque;

/// Keeps the first third and the last two thirds of a byte stream up to `max` bytes in all,
/// counting what falls in between. Memory stays bounded by `max` whatever the stream's size.
#[derive(Debug)]
pub struct HeadTail {
    head: Vec<u8>,
    tail: VecDeque<u8>,
    head_max: usize,
    tail_max: usize,
    total: usize,
}

impl HeadTail {
    pub fn new(max: usize) -> Self {
        let head_max = max / 3;
        HeadTail {
            head: Vec::new(),
            tail: VecDeque::new(),
            head_max,
            tail_max: max - head_max,
            total: 0,
        }
    }

    pub fn push(&mut self, mut chunk: &[u8]) {
        self.total += chunk.len();
        if self.head.len() < self.head_max {
            let take = chunk.len().min(self.head_max - self.head.len());
            self.head.extend_from_slice(&chunk[..take]);
            chunk = &chunk[take..];
        }
        if chunk.len() >= self.tail_max {
            self.tail.clear();
            chunk = &chunk[chunk.len() - self.tail_max..];
        } else {
            let overflow = (self.tail.len() + chunk.len()).saturating_sub(self.tail_max);
            self.tail.drain(..overflow);
        }
        self.tail.extend(chunk);
    }

    pub fn is_empty(&self) -> bool {
        self.total == 0
    }

    /// The text kept, with a `[… N bytes omitted …]` line where the middle was dropped. Cuts fall
    /// on line ends when one is near, so the model sees whole lines.
    pub fn finish(self) -> String {
        let tail = Vec::from(self.tail);
        let omitted = self.total - self.head.len() - tail.len();
        if omitted == 0 {
            let mut all = self.head;
            all.extend_from_slice(&tail);
            return lossy(all);
        }
        const NEAR: usize = 1024;
        let head_cut = match self.head.iter().rposition(|&b| b == b'\n') {
            Some(i) if self.head.len() - i <= NEAR => i + 1,
            _ => self.head.len(),
        };
        let tail_cut = match tail.iter().position(|&b| b == b'\n') {
            Some(i) if i < NEAR => i + 1,
            _ => 0,
        };
        let omitted = omitted + (self.head.len() - head_cut) + tail_cut;
        let mut text = String::from_utf8_lossy(&self.head[..head_cut]).into_owned();
        if !text.is_empty() && !text.ends_with('\n') {
            text.push('\n');
        }
        text.push_str(&format!("[… {omitted} bytes omitted …]\n"));
        text.push_str(&String::from_utf8_lossy(&tail[tail_cut..]));
        text
    }
}

fn lossy(bytes: Vec<u8>) -> String {
    String::from_utf8(bytes).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// Clips `line` to at most `max` bytes on a character boundary; says how much was cut.
pub fn clip_line(line: &str, max: usize) -> std::borrow::Cow<'_, str> {
    if line.len() <= max {
        return line.into();
    }
    let cut = floor_char_boundary(line, max);
    format!("{}… [{} more bytes]", &line[..cut], line.len() - cut).into()
}

/// The largest character boundary at or below `index` (`str::floor_char_boundary` is newer than
/// the workspace's minimum Rust).
pub fn floor_char_boundary(text: &str, index: usize) -> usize {
    if index >= text.len() {
        return text.len();
    }
    (0..=index)
        .rev()
        .find(|&i| text.is_char_boundary(i))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_output_is_kept_whole() {
        let mut out = HeadTail::new(30);
        out.push(b"hello ");
        out.push(b"world\n");
        assert_eq!(out.finish(), "hello world\n");
    }

    #[test]
    fn large_output_keeps_head_and_tail_and_counts_the_middle() {
        let mut out = HeadTail::new(3000);
        let mut all = String::new();
        for i in 0..10_000 {
            let line = format!("line {i}\n");
            all.push_str(&line);
            out.push(line.as_bytes());
        }
        let text = out.finish();
        assert!(text.starts_with("line 0\nline 1\n"), "{}", &text[..40]);
        assert!(text.ends_with("line 9999\n"));
        assert!(text.len() <= 3000 + 40, "{}", text.len());
        let marker = text.lines().find(|l| l.starts_with("[…")).unwrap();
        let omitted: usize = marker.split(' ').nth(1).unwrap().parse().unwrap();
        let kept = text.len() - marker.len() - 1;
        assert_eq!(kept + omitted, all.len(), "every byte is kept or counted");
        // Whole lines on both sides of the cut.
        let before = text.split("[…").next().unwrap();
        assert!(before.ends_with('\n'));
        let after = text.split("…]\n").nth(1).unwrap();
        assert!(after.starts_with("line "));
    }

    #[test]
    fn one_huge_chunk_is_bounded() {
        let mut out = HeadTail::new(100);
        out.push(&vec![b'x'; 1_000_000]);
        let text = out.finish();
        assert!(text.contains("[… 999900 bytes omitted …]"), "{text}");
    }

    #[test]
    fn clipping_respects_characters() {
        assert_eq!(clip_line("short", 10), "short");
        let clipped = clip_line("ééééé", 3);
        assert!(clipped.starts_with("é…"), "{clipped}");
        assert!(clipped.contains("8 more bytes"), "{clipped}");
    }
}
