//! JSON on a page: pretty-printed, and cut at [`PAGE_LIMIT`] bytes so a
//! 10 MB output never makes a 10 MB page (the serializer stops as soon as
//! the limit is reached; the full value has a link of its own).

use std::io::{self, Write};

use serde_json::Value;

/// The most bytes of one value a page shows.
pub const PAGE_LIMIT: usize = 16 << 10;

/// `value` pretty-printed, at most `limit` bytes (cut on a character
/// boundary); `true` when it was cut.
pub fn pretty(value: &Value, limit: usize) -> (String, bool) {
    let mut out = Capped {
        bytes: Vec::with_capacity(limit.min(4096)),
        limit,
        full: false,
    };
    let complete = serde_json::to_writer_pretty(&mut out, value).is_ok() && !out.full;
    let mut bytes = out.bytes;
    if !complete {
        bytes.truncate(limit);
        // Back to the last whole character.
        while !bytes.is_empty() && std::str::from_utf8(&bytes).is_err() {
            bytes.pop();
        }
    }
    (String::from_utf8(bytes).unwrap_or_default(), !complete)
}

/// A buffer that refuses to grow past `limit`.
struct Capped {
    bytes: Vec<u8>,
    limit: usize,
    full: bool,
}

impl Write for Capped {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let room = self.limit.saturating_sub(self.bytes.len());
        if buf.len() > room {
            self.bytes.extend_from_slice(&buf[..room]);
            self.full = true;
            return Err(io::Error::other("the page's limit is reached"));
        }
        self.bytes.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn small_values_are_whole() {
        let (text, cut) = pretty(&json!({"a": [1, 2]}), 100);
        assert!(!cut);
        assert_eq!(text, "{\n  \"a\": [\n    1,\n    2\n  ]\n}");
    }

    #[test]
    fn large_values_are_cut_at_the_limit_on_a_character_boundary() {
        let big = json!({"text": "é".repeat(5_000_000)});
        let (text, cut) = pretty(&big, 1001);
        assert!(cut);
        assert!(text.len() <= 1001 && text.len() >= 990, "{}", text.len());
        assert!(text.starts_with("{\n  \"text\": \"éé"));
    }
}
