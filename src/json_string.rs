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
/// control character), or the length. A denial's text is long runs of plain words between
/// its line breaks, and escaping it was the largest share of writing the response: on
/// x86_64 sixteen bytes are tested at a time with SSE2 (part of its baseline), elsewhere
/// eight at a time in a `u64`.
fn next_escape(bytes: &[u8], i: usize) -> usize {
    #[cfg(target_arch = "x86_64")]
    let i = next_escape_sse2(bytes, i);
    next_escape_swar(bytes, i)
}

/// As `next_escape`, sixteen bytes at a time while sixteen remain; returns where the
/// remainder starts when no byte before it needs escaping.
#[cfg(target_arch = "x86_64")]
fn next_escape_sse2(bytes: &[u8], mut i: usize) -> usize {
    use std::arch::x86_64::{
        __m128i, _mm_cmpeq_epi8, _mm_loadu_si128, _mm_min_epu8, _mm_movemask_epi8, _mm_or_si128,
        _mm_set1_epi8,
    };
    // SAFETY: SSE2 is part of the x86_64 baseline, so these intrinsics are always
    // available; each load reads `chunk`, sixteen readable bytes, and `loadu` takes any
    // alignment.
    unsafe {
        let control = _mm_set1_epi8(0x1f);
        let quote = _mm_set1_epi8(b'"' as i8);
        let backslash = _mm_set1_epi8(b'\\' as i8);
        while let Some(chunk) = bytes.get(i..i + 16) {
            let v = _mm_loadu_si128(chunk.as_ptr().cast::<__m128i>());
            // A byte is a control character when the smaller of it and 0x1f is itself.
            let hits = _mm_or_si128(
                _mm_cmpeq_epi8(_mm_min_epu8(v, control), v),
                _mm_or_si128(_mm_cmpeq_epi8(v, quote), _mm_cmpeq_epi8(v, backslash)),
            );
            let mask = _mm_movemask_epi8(hits);
            if mask != 0 {
                return i + mask.trailing_zeros() as usize;
            }
            i += 16;
        }
    }
    i
}

/// As `next_escape`, eight bytes at a time in a `u64`, then byte by byte.
fn next_escape_swar(bytes: &[u8], mut i: usize) -> usize {
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

    /// Both scanners find the first byte to escape at every offset of text longer than
    /// their chunks, and the portable one is checked on x86_64 too, where `next_escape`
    /// uses SSE2 first.
    #[test]
    fn scanners_find_the_first_byte_to_escape() {
        type Scanner = fn(&[u8], usize) -> usize;
        let scanners: &[(&str, Scanner)] = &[
            ("next_escape", super::next_escape),
            ("swar", super::next_escape_swar),
        ];
        for special in [b'"', b'\\', b'\n', 0x00, 0x1f] {
            for len in [0, 1, 7, 8, 15, 16, 17, 31, 33, 40] {
                for at in 0..=len {
                    let mut text: Vec<u8> = (0..len).map(|i| b'a' + (i % 26) as u8).collect();
                    // Bytes that must not stop the scan, among plain ones.
                    if len > 3 {
                        text[len / 2] = 0x7f;
                        text[1] = 0x20;
                        text[len - 1] = 0xff;
                        text[len - 2] = 0x80;
                    }
                    if at < len {
                        text[at] = special;
                    }
                    for start in [0, at.min(3)] {
                        let direct = text[start..]
                            .iter()
                            .position(|&b| b < 0x20 || b == b'"' || b == b'\\')
                            .map_or(len, |p| start + p);
                        for (name, scan) in scanners {
                            assert_eq!(
                                scan(&text, start),
                                direct,
                                "{name} on {text:?} from {start}"
                            );
                        }
                    }
                }
            }
        }
    }
}
