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
        self.push_indented(s, "");
    }

    /// As `push_str`, with `indent` after each escaped line break; `indent` is written as
    /// it is, so it must need no escaping.
    pub fn push_indented(&mut self, s: &str, indent: &str) {
        let out = &mut *self.0;
        // Escaping only lengthens: one reservation for the text, and more only for escapes.
        out.reserve(s.len());
        let mut start = 0;
        for_each_escape(s.as_bytes(), |i, b| {
            // Every byte escaped is ASCII, so `i` is on a character boundary.
            out.push_str(&s[start..i]);
            match b {
                b'"' => out.push_str("\\\""),
                b'\\' => out.push_str("\\\\"),
                b'\n' => {
                    out.push_str("\\n");
                    out.push_str(indent);
                }
                b'\r' => out.push_str("\\r"),
                b'\t' => out.push_str("\\t"),
                0x08 => out.push_str("\\b"),
                0x0c => out.push_str("\\f"),
                _ => {
                    const HEX: &[u8; 16] = b"0123456789abcdef";
                    out.push_str("\\u00");
                    out.push(char::from(HEX[usize::from(b >> 4)]));
                    out.push(char::from(HEX[usize::from(b & 0xf)]));
                }
            }
            start = i + 1;
        });
        out.push_str(&s[start..]);
    }

    /// As `push_indented`, for text fixed in the program (a check's fix YAML, the denial
    /// message's words around each violation): each thread escapes it once and copies it
    /// after that. Such texts are few and never change, so the memo is keyed by the texts
    /// themselves (address and length) and stays small.
    pub fn push_static_indented(&mut self, s: &'static str, indent: &'static str) {
        type Memo = Vec<((&'static str, &'static str), Box<str>)>;
        thread_local! {
            static MEMO: std::cell::RefCell<Memo> = const { std::cell::RefCell::new(Vec::new()) };
        }
        MEMO.with_borrow_mut(|memo| {
            let known = memo
                .iter()
                .find(|((text, ind), _)| std::ptr::eq(*text, s) && std::ptr::eq(*ind, indent));
            if let Some((_, escaped)) = known {
                self.0.push_str(escaped);
                return;
            }
            let start = self.0.len();
            self.push_indented(s, indent);
            memo.push(((s, indent), self.0[start..].into()));
        });
    }
}

/// Calls `hit` with the index and value of every byte a JSON string must escape (`"`, `\\`
/// or a control character), in order. A denial's text is long runs of plain words between
/// its line breaks and quotes, and escaping it was the largest share of writing the
/// response: on x86_64 sixteen bytes are tested at a time with SSE2 (part of its baseline),
/// elsewhere eight at a time in a `u64`, and every hit in a chunk is taken from the one
/// test, not by testing again from the byte after it. Most strings written are short
/// (names, keys, log fields), so the bytes left after the last whole chunk are tested as the
/// chunk that ends the text, overlapping bytes already tested, never one at a time.
fn for_each_escape(bytes: &[u8], hit: impl FnMut(usize, u8)) {
    #[cfg(target_arch = "x86_64")]
    if bytes.len() >= 16 {
        return for_each_escape_sse2(bytes, hit);
    }
    for_each_escape_swar(bytes, hit)
}

/// Calls `hit` for each set bit of `hits`, a mask of the chunk at `at` with `width` bits per
/// byte.
fn each_bit(bytes: &[u8], at: usize, mut hits: u64, width: u32, hit: &mut impl FnMut(usize, u8)) {
    while hits != 0 {
        let i = at + (hits.trailing_zeros() / width) as usize;
        hit(i, bytes[i]);
        // Clears the lowest set bit: a byte's hit is one bit in either width.
        hits &= hits - 1;
    }
}

/// As `for_each_escape`, for text of at least sixteen bytes.
#[cfg(target_arch = "x86_64")]
fn for_each_escape_sse2(bytes: &[u8], mut hit: impl FnMut(usize, u8)) {
    use std::arch::x86_64::{
        __m128i, _mm_cmpeq_epi8, _mm_loadu_si128, _mm_min_epu8, _mm_movemask_epi8, _mm_or_si128,
        _mm_set1_epi8,
    };
    // Bit `n` set where byte `n` of the sixteen must be escaped.
    let mask = |chunk: &[u8]| -> u64 {
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
        u64::from(hits as u16)
    };
    let mut i = 0;
    while let Some(chunk) = bytes.get(i..i + 16) {
        each_bit(bytes, i, mask(chunk), 1, &mut hit);
        i += 16;
    }
    if i < bytes.len() {
        let last = bytes.len() - 16;
        // The comparisons are exact per byte, so the bytes before `i` are simply masked off.
        each_bit(
            bytes,
            last,
            mask(&bytes[last..]) & (u64::MAX << (i - last)),
            1,
            &mut hit,
        );
    }
}

/// As `for_each_escape`, eight bytes at a time in a `u64`, the last eight overlapping; text
/// shorter than eight bytes byte by byte.
fn for_each_escape_swar(bytes: &[u8], mut hit: impl FnMut(usize, u8)) {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const LOW7: u64 = 0x7f7f_7f7f_7f7f_7f7f;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    // The high bit of each byte of `w` below `n` (n <= 0x80), exactly: no byte's result
    // depends on another's, so bytes already tested can be masked off.
    let below = |w: u64, n: u8| !(((w & LOW7) + ONES * u64::from(0x80 - n)) | w) & HIGH;
    let hits = |chunk: &[u8]| {
        let w = u64::from_le_bytes(chunk[..8].try_into().expect("eight bytes"));
        below(w, 0x20)
            | below(w ^ (ONES * u64::from(b'"')), 1)
            | below(w ^ (ONES * u64::from(b'\\')), 1)
    };
    let Some(last) = bytes.len().checked_sub(8) else {
        for (i, &b) in bytes.iter().enumerate() {
            if b < 0x20 || b == b'"' || b == b'\\' {
                hit(i, b);
            }
        }
        return;
    };
    let mut i = 0;
    while let Some(chunk) = bytes.get(i..i + 8) {
        each_bit(bytes, i, hits(chunk), 8, &mut hit);
        i += 8;
    }
    if i < bytes.len() {
        let found = hits(&bytes[last..]) & (u64::MAX << (8 * (i - last)));
        each_bit(bytes, last, found, 8, &mut hit);
    }
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

    /// Indenting while escaping is escaping the indented text: after every line break,
    /// wherever it falls in the chunks, and nowhere else.
    #[test]
    fn indenting_as_escaping_is_escaping_indented_text() {
        let samples = [
            "securityContext:\n  runAsNonRoot: true",
            "livenessProbe:\n  httpGet:\n    path: /healthz  # an endpoint of your app\n    port: 8080",
            "\n",
            "a\n\nb\n",
            "no line break at all, but \"quotes\" and \\ and \t",
            "",
        ];
        for text in samples {
            let mut ours = String::new();
            Escaped(&mut ours).push_indented(text, "    ");
            let mut expected = String::new();
            Escaped(&mut expected).push_str(&text.replace('\n', "\n    "));
            assert_eq!(ours, expected, "{text:?}");
        }
    }

    /// A static text comes out of the memo as it was escaped, however often it is asked
    /// for, and never as another text that starts at the same place or another indent.
    #[test]
    fn static_text_is_escaped_once_and_copied_alike() {
        const YAML: &str = "securityContext:\n  runAsNonRoot: \"yes\"\nother: 1";
        // The same address as YAML, but shorter.
        let head: &'static str = &YAML[..YAML.find('"').unwrap()];
        let asked = [
            (YAML, "    "),
            (head, "    "),
            (YAML, "  "),
            (YAML, "    "),
            (head, "    "),
        ];
        for (text, indent) in asked {
            let mut ours = String::from("before ");
            Escaped(&mut ours).push_static_indented(text, indent);
            let mut expected = String::from("before ");
            Escaped(&mut expected).push_indented(text, indent);
            assert_eq!(ours, expected, "{text:?} indented by {indent:?}");
        }
    }

    /// Every scanner hands out every byte to escape, once and in order, in text of every
    /// length around its chunks, and the portable one is checked on x86_64 too, where
    /// `for_each_escape` uses SSE2 first.
    #[test]
    fn scanners_find_every_byte_to_escape() {
        type Scanner = fn(&[u8], &mut dyn FnMut(usize, u8));
        let scanners: &[(&str, Scanner)] = &[
            ("for_each_escape", |bytes, hit| {
                super::for_each_escape(bytes, hit)
            }),
            ("swar", |bytes, hit| super::for_each_escape_swar(bytes, hit)),
            #[cfg(target_arch = "x86_64")]
            ("sse2", |bytes, hit| {
                if bytes.len() >= 16 {
                    super::for_each_escape_sse2(bytes, hit)
                } else {
                    super::for_each_escape_swar(bytes, hit)
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
                    // A byte to escape at `at`, and maybe more: a second one before it, one
                    // at the end, and one in each chunk, so that a chunk holds several hits
                    // and the last chunk overlaps hits already handed out.
                    for at in 0..=len {
                        let others = [
                            None,
                            Some(at / 2),
                            Some(len.saturating_sub(1)),
                            Some(at + 3),
                        ];
                        for other in others {
                            let mut text = filler.clone();
                            for p in [Some(at), other].into_iter().flatten() {
                                if p < len {
                                    text[p] = special;
                                }
                            }
                            for p in (at % 5..len).step_by(7) {
                                if other == Some(at / 2) {
                                    text[p] = special;
                                }
                            }
                            let direct: Vec<(usize, u8)> = text
                                .iter()
                                .enumerate()
                                .filter(|(_, b)| **b < 0x20 || **b == b'"' || **b == b'\\')
                                .map(|(i, b)| (i, *b))
                                .collect();
                            for (name, scan) in scanners {
                                let mut found = Vec::new();
                                scan(&text, &mut |i, b| found.push((i, b)));
                                assert_eq!(found, direct, "{name} on {text:?}");
                            }
                        }
                    }
                }
            }
        }
    }
}
