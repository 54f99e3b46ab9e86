//! Where the numeric entities can be: the runs of their byte class that
//! hold an ASCII digit and are long enough for a match.
//!
//! Phone numbers, IBANs, card numbers, BSNs, SSNs and IPv4 addresses are
//! digits and separators with no literal Hyperscan could search for, so a
//! database of them steps into its automaton at every digit of a text.
//! Ordinary prose has a digit every ~70 bytes (years, times, prices): one
//! such pattern alone scans it at 3-5 GiB/s, all ten together at under
//! 1 GiB/s, and mixed into one database with literal-anchored patterns
//! they pull the whole database down to ~0.4 GiB/s (docs/pii.md, "Database
//! layout"). So the scanner runs their database only over the windows this
//! module finds, at ~10 GiB/s: most prose has none.
//!
//! Exactness: every byte of a numeric match is in its pattern's class
//! (`OpenRule::Class`), so in the union of the classes, and a match holds a
//! digit and is at least `min_len` bytes long. It therefore lies inside a
//! maximal run of class bytes that holds a digit and is at least `min_len`
//! long, and every such run is in a window. A window adds the byte on
//! either side of its runs (not a class byte, so no match can include it)
//! so that `\b` is decided by the same neighbours as in the whole text.
//! Hyperscan thus reports in the windows exactly the matches (same start,
//! same end) it reports in the whole text.

use std::ops::Range;

/// Runs closer than this are scanned in one window: one Hyperscan call
/// costs about as much as scanning this many bytes of digits.
const MERGE_GAP: usize = 128;

/// The byte class of a set of numeric patterns and their shortest match.
pub struct DigitRuns {
    class: [bool; 256],
    min_len: usize,
}

impl DigitRuns {
    /// `classes`: each pattern's class (digits included); `min_len`: the
    /// shortest match of any of them.
    pub fn new(classes: &[fn(u8) -> bool], min_len: usize) -> Self {
        let mut class = [false; 256];
        for (b, slot) in class.iter_mut().enumerate() {
            *slot = classes.iter().any(|c| c(b as u8));
        }
        for d in b'0'..=b'9' {
            class[d as usize] = true;
        }
        Self {
            class,
            min_len: min_len.max(1),
        }
    }

    /// Calls `f` with each window to scan, in order, disjoint but for a
    /// shared context byte.
    pub fn windows(&self, text: &[u8], mut f: impl FnMut(Range<usize>)) {
        let n = text.len();
        if n < self.min_len {
            return;
        }
        let class = &self.class;
        // The window being grown, scanned when the next run is too far.
        let mut pending: Option<Range<usize>> = None;
        // Runs already seen end before this.
        let mut seen: usize = 0;
        let mut block = 0;
        while block < n {
            let mut mask = digit_mask(&text[block..(block + 64).min(n)]);
            mask &= skip_below(seen.saturating_sub(block));
            while mask != 0 {
                let d = block + mask.trailing_zeros() as usize;
                let mut start = d;
                while start > seen && class[text[start - 1] as usize] {
                    start -= 1;
                }
                let mut end = d + 1;
                while end < n && class[text[end] as usize] {
                    end += 1;
                }
                seen = end;
                mask &= skip_below(end.saturating_sub(block));
                if end - start < self.min_len {
                    continue;
                }
                let window = start.saturating_sub(1)..(end + 1).min(n);
                pending = match pending {
                    Some(p) if window.start < p.end + MERGE_GAP => Some(p.start..window.end),
                    Some(p) => {
                        f(p);
                        Some(window)
                    }
                    None => Some(window),
                };
            }
            block += 64;
        }
        if let Some(p) = pending {
            f(p);
        }
    }
}

/// Mask of the bit positions from `skip` on.
fn skip_below(skip: usize) -> u64 {
    if skip >= 64 {
        0
    } else {
        !0u64 << skip
    }
}

/// Bit i set when `chunk[i]` (at most 64 bytes) is an ASCII digit.
#[cfg(target_arch = "x86_64")]
fn digit_mask(chunk: &[u8]) -> u64 {
    use std::arch::x86_64::{
        __m128i, _mm_cmpeq_epi8, _mm_loadu_si128, _mm_min_epu8, _mm_movemask_epi8, _mm_set1_epi8,
        _mm_sub_epi8,
    };
    if chunk.len() < 64 {
        // The tail of a text (all of a short one): padded with non-digits.
        let mut padded = [0u8; 64];
        padded[..chunk.len()].copy_from_slice(chunk);
        return digit_mask(&padded);
    }
    let mut mask = 0u64;
    // SAFETY: SSE2 is part of the x86_64 baseline; each load reads 16
    // bytes at offsets 0, 16, 32, 48 of a chunk of at least 64 bytes.
    unsafe {
        let zero = _mm_set1_epi8(b'0' as i8);
        let nine = _mm_set1_epi8(9);
        for k in 0..4 {
            let v = _mm_loadu_si128(chunk.as_ptr().add(16 * k).cast::<__m128i>());
            // b - '0' <= 9 (unsigned) <=> b is a digit.
            let t = _mm_sub_epi8(v, zero);
            let is_digit = _mm_cmpeq_epi8(_mm_min_epu8(t, nine), t);
            mask |= u64::from(_mm_movemask_epi8(is_digit) as u16) << (16 * k);
        }
    }
    mask
}

#[cfg(not(target_arch = "x86_64"))]
fn digit_mask(chunk: &[u8]) -> u64 {
    digit_mask_scalar(chunk)
}

#[cfg(any(not(target_arch = "x86_64"), test))]
fn digit_mask_scalar(chunk: &[u8]) -> u64 {
    chunk
        .iter()
        .enumerate()
        .fold(0, |m, (i, b)| m | u64::from(b.is_ascii_digit()) << i)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn windows(runs: &DigitRuns, text: &str) -> Vec<String> {
        let mut out = Vec::new();
        runs.windows(text.as_bytes(), |w| out.push(text[w].to_string()));
        out
    }

    fn digitish(c: u8) -> bool {
        c.is_ascii_digit() || c == b' ' || c == b'-'
    }

    #[test]
    fn digit_mask_matches_scalar() {
        let text: Vec<u8> = (0..=255u8).chain(b"0123456789/:".iter().copied()).collect();
        for start in 0..text.len() {
            let chunk = &text[start..(start + 64).min(text.len())];
            assert_eq!(digit_mask(chunk), digit_mask_scalar(chunk), "at {start}");
        }
    }

    #[test]
    fn windows_hold_long_runs_with_a_digit_and_their_neighbours() {
        let runs = DigitRuns::new(&[digitish], 7);
        // Too short, no digit, long enough.
        let text = format!("a 12 b {} c x123-456y{}", "- - - -", "z".repeat(200));
        assert_eq!(windows(&runs, &text), ["x123-456y"]);
        // Runs at the ends of the text have no neighbour there.
        assert_eq!(windows(&runs, "1234567"), ["1234567"]);
        assert_eq!(windows(&runs, "ab 1234567"), ["b 1234567"]);
        // Close runs share a window; distant ones do not.
        let text = format!("x1234567y 1 z7654321w{}v1111111u", "q".repeat(200));
        assert_eq!(
            windows(&runs, &text),
            ["x1234567y 1 z7654321w", "v1111111u"]
        );
        // Runs across a 64-byte block boundary.
        let text = format!("{}1234567{}", "a".repeat(60), "b".repeat(100));
        assert_eq!(windows(&runs, &text), ["a1234567b"]);
        assert!(windows(&runs, "").is_empty());
    }
}
