//! JSON string text, escaped exactly as serde_json escapes it, for the two writers that build
//! JSON by hand on the hot path: the AdmissionReview response (`review`) and the JSON log line
//! (`logline`).

/// `s` as a quoted JSON string.
pub fn push(out: &mut String, s: &str) {
    out.push('"');
    Escaped(out).push_str(s);
    out.push('"');
}

/// Text written into a JSON string, escaped as serde_json escapes it (`\"`, `\\`, the short
/// forms of \b \f \n \r \t, `\u00XX` for other control characters; everything else as it
/// is).
pub struct Escaped<'a>(pub &'a mut String);

impl Escaped<'_> {
    pub fn push_str(&mut self, s: &str) {
        let bytes = s.as_bytes();
        let mut start = 0;
        loop {
            let i = next_escape(bytes, start);
            // Every byte escaped is ASCII, so `i` is on a character boundary.
            self.0.push_str(&s[start..i]);
            let Some(&b) = bytes.get(i) else { return };
            match b {
                b'"' => self.0.push_str("\\\""),
                b'\\' => self.0.push_str("\\\\"),
                b'\n' => self.0.push_str("\\n"),
                b'\r' => self.0.push_str("\\r"),
                b'\t' => self.0.push_str("\\t"),
                0x08 => self.0.push_str("\\b"),
                0x0c => self.0.push_str("\\f"),
                _ => {
                    const HEX: &[u8; 16] = b"0123456789abcdef";
                    self.0.push_str("\\u00");
                    self.0.push(char::from(HEX[usize::from(b >> 4)]));
                    self.0.push(char::from(HEX[usize::from(b & 0xf)]));
                }
            }
            start = i + 1;
        }
    }
}

/// The index of the first byte from `i` on that a JSON string must escape (`"`, `\\` or a
/// control character), or the length. Eight bytes are tested at a time: a denial's text is
/// long runs of plain words between its line breaks, and escaping it was the largest share
/// of writing the response.
fn next_escape(bytes: &[u8], mut i: usize) -> usize {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    // The high bit of each byte of `w` below `n` (n <= 0x80): exact up to the first such
    // byte, which is all that is read.
    let below = |w: u64, n: u8| w.wrapping_sub(ONES * u64::from(n)) & !w & HIGH;
    while let Some(chunk) = bytes.get(i..i + 8) {
        let w = u64::from_le_bytes(chunk.try_into().expect("eight bytes"));
        let hits = below(w, 0x20)
            | below(w ^ (ONES * u64::from(b'"')), 1)
            | below(w ^ (ONES * u64::from(b'\\')), 1);
        if hits != 0 {
            return i + (hits.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    bytes[i..]
        .iter()
        .position(|&b| b < 0x20 || b == b'"' || b == b'\\')
        .map_or(bytes.len(), |p| i + p)
}

impl std::fmt::Write for Escaped<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.push_str(s);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::Escaped;

    /// The response writer escapes exactly as serde_json does, for every ASCII character and
    /// for text beyond it.
    #[test]
    fn escaping_matches_serde_json() {
        let mut samples: Vec<String> = (0u8..=0x7f).map(|b| char::from(b).to_string()).collect();
        samples.push((0u8..=0x7f).map(char::from).collect());
        samples.push("container \"app\" á → 🚀 \\ end\n".to_owned());
        samples.push(String::new());
        // Each character that needs escaping at every offset of a word and beyond it.
        for special in ['"', '\\', '\n', '\u{1}', '\u{1f}', '\u{7f}', ' ', 'é'] {
            for at in 0..20 {
                let mut text: String = "abcdefghijklmnopqrst".into();
                text.insert(at, special);
                samples.push(text);
            }
        }
        for s in samples {
            let mut ours = String::from("\"");
            Escaped(&mut ours).push_str(&s);
            ours.push('"');
            assert_eq!(ours, serde_json::to_string(&s).unwrap(), "{s:?}");
        }
    }
}
