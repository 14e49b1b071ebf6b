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
/// eight at a time in a `u64`. Most strings written are short (names, keys, log fields),
/// so the bytes left after the last whole chunk are tested as the chunk that ends the
/// text, overlapping bytes already tested, never one at a time.
fn next_escape(bytes: &[u8], i: usize) -> usize {
    #[cfg(target_arch = "x86_64")]
    if bytes.len() >= 16 {
        return next_escape_sse2(bytes, i);
    }
    next_escape_swar(bytes, i)
}

/// As `next_escape`, for text of at least sixteen bytes.
#[cfg(target_arch = "x86_64")]
fn next_escape_sse2(bytes: &[u8], mut i: usize) -> usize {
    use std::arch::x86_64::{
        __m128i, _mm_cmpeq_epi8, _mm_loadu_si128, _mm_min_epu8, _mm_movemask_epi8, _mm_or_si128,
        _mm_set1_epi8,
    };
    // Bit `n` set where byte `n` of the sixteen must be escaped.
    let mask = |chunk: &[u8]| -> u32 {
        assert!(chunk.len() >= 16, "a chunk is sixteen bytes");
        // SAFETY: SSE2 is part of the x86_64 baseline, so these intrinsics are always
        // available; the load reads sixteen bytes of `chunk`, which has at least that many
        // (asserted above), and `loadu` takes any alignment.
        let hits = unsafe {
            let v = _mm_loadu_si128(chunk.as_ptr().cast::<__m128i>());
            // A byte is a control character when the smaller of it and 0x1f is itself.
            let hits = _mm_or_si128(
                _mm_cmpeq_epi8(_mm_min_epu8(v, _mm_set1_epi8(0x1f)), v),
                _mm_or_si128(
                    _mm_cmpeq_epi8(v, _mm_set1_epi8(b'"' as i8)),
                    _mm_cmpeq_epi8(v, _mm_set1_epi8(b'\\' as i8)),
                ),
            );
            _mm_movemask_epi8(hits)
        };
        // Only the low sixteen bits can be set.
        hits as u32
    };
    while let Some(chunk) = bytes.get(i..i + 16) {
        let hits = mask(chunk);
        if hits != 0 {
            return i + hits.trailing_zeros() as usize;
        }
        i += 16;
    }
    let last = bytes.len() - 16;
    if i >= bytes.len() {
        return bytes.len();
    }
    // The comparisons are exact per byte, so the bytes before `i` are simply masked off.
    let hits = mask(&bytes[last..]) & (u32::MAX << (i - last));
    if hits != 0 {
        last + hits.trailing_zeros() as usize
    } else {
        bytes.len()
    }
}

/// As `next_escape`, eight bytes at a time in a `u64`, the last eight overlapping; text
/// shorter than eight bytes byte by byte.
fn next_escape_swar(bytes: &[u8], mut i: usize) -> usize {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const LOW7: u64 = 0x7f7f_7f7f_7f7f_7f7f;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    // The high bit of each byte of `w` below `n` (n <= 0x80), exactly: no byte's result
    // depends on another's, so bytes already tested can be masked off.
    let below = |w: u64, n: u8| !(((w & LOW7) + ONES * u64::from(0x80 - n)) | w) & HIGH;
    let hits = |w: u64| {
        below(w, 0x20)
            | below(w ^ (ONES * u64::from(b'"')), 1)
            | below(w ^ (ONES * u64::from(b'\\')), 1)
    };
    let word = |chunk: &[u8]| u64::from_le_bytes(chunk[..8].try_into().expect("eight bytes"));
    while let Some(chunk) = bytes.get(i..i + 8) {
        let found = hits(word(chunk));
        if found != 0 {
            return i + (found.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    if i >= bytes.len() {
        return bytes.len();
    }
    if let Some(last) = bytes.len().checked_sub(8) {
        let found = hits(word(&bytes[last..])) & (u64::MAX << (8 * (i - last)));
        return if found != 0 {
            last + (found.trailing_zeros() / 8) as usize
        } else {
            bytes.len()
        };
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
            #[cfg(target_arch = "x86_64")]
            ("sse2", |bytes, i| {
                if bytes.len() >= 16 {
                    super::next_escape_sse2(bytes, i)
                } else {
                    super::next_escape_swar(bytes, i)
                }
            }),
        ];
        // Plain bytes next to the ones to escape, the neighbours a borrow between bytes
        // would turn into false hits: 0x21 and 0x23 around `"`, 0x5b and 0x5d around `\\`,
        // 0x20 above the control characters, and bytes with the high bit set.
        let plain = [
            b'a', 0x20, 0x21, 0x23, 0x5b, 0x5d, 0x7f, 0x80, 0xff, b'z', 0x3f,
        ];
        for special in [b'"', b'\\', b'\n', 0x00, 0x1f] {
            for len in [0, 1, 7, 8, 9, 15, 16, 17, 24, 31, 33, 40] {
                for shift in 0..plain.len() {
                    let filler: Vec<u8> =
                        (0..len).map(|i| plain[(i + shift) % plain.len()]).collect();
                    // A byte to escape at `at`, and maybe a second one at `other`: the scan
                    // from any start must find the first at or after it, whichever bytes
                    // before the start were tested already.
                    for at in 0..=len {
                        for other in [None, Some(at / 2), Some(len.saturating_sub(1))] {
                            let mut text = filler.clone();
                            for p in [Some(at), other].into_iter().flatten() {
                                if p < len {
                                    text[p] = special;
                                }
                            }
                            for start in 0..=len {
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
    }
}
