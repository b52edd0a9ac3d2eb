//! Helpers for checks that stay cheap under cargo-fuzz.
//!
//! cargo-fuzz builds with `-sanitizer-coverage-trace-compares`: every scalar
//! integer comparison left after optimisation becomes a call into libFuzzer
//! (`__sanitizer_cov_trace_cmp*`), which costs far more than the comparison.
//! A check that loops over a redirection table or walks a 256-bit set one
//! element at a time therefore dominated the fuzz targets' run time. These
//! helpers compute the same answers with bit arithmetic over whole words or
//! tables (XOR/OR folds, which have no comparison per element) and fall back
//! to a per-element walk only where the fold found something.

use eoi_exit::Pin;
use eoi_exit::ioapic::{IoapicState, PinSet, RedirectionEntry};

/// Calls `f` with the index of every member of the 256-bit set whose words
/// are `words`, in ascending order: one comparison for an empty set, one per
/// word and member otherwise (`Set256::iter` compares more per step).
#[inline]
pub(crate) fn each_index(words: [u64; 4], mut f: impl FnMut(usize)) {
    if words[0] | words[1] | words[2] | words[3] == 0 {
        return;
    }
    for (k, mut w) in words.into_iter().enumerate() {
        while w != 0 {
            f(64 * k + w.trailing_zeros() as usize);
            w &= w - 1;
        }
    }
}

/// Calls `f` with every pin of `set`, in ascending order (see [`each_index`]).
#[inline]
pub(crate) fn each_pin(set: &PinSet, mut f: impl FnMut(Pin)) {
    each_index(set.as_u64_words(), |i| f(Pin::new(i as u8)));
}

/// The pins of `set` in ascending order, as an iterator (for loops that
/// return early); see [`each_index`].
#[inline]
pub(crate) fn pins(set: &PinSet) -> Pins {
    let words = set.as_u64_words();
    let k = if words[0] | words[1] | words[2] | words[3] == 0 {
        4
    } else {
        0
    };
    Pins { words, k }
}

/// Iterator of [`pins`].
pub(crate) struct Pins {
    words: [u64; 4],
    k: usize,
}

impl Iterator for Pins {
    type Item = Pin;

    #[inline]
    fn next(&mut self) -> Option<Pin> {
        while self.k < 4 {
            let w = self.words[self.k];
            if w != 0 {
                self.words[self.k] = w & (w - 1);
                return Some(Pin::new((64 * self.k) as u8 + w.trailing_zeros() as u8));
            }
            self.k += 1;
        }
        None
    }
}

/// The words of the set of pins `0..pins` (so that "every member is below
/// `pins`" is one AND with the complement).
#[inline]
pub(crate) const fn pins_below(pins: usize) -> [u64; 4] {
    let mut w = [0u64; 4];
    let mut k = 0;
    while k < 4 {
        let lo = 64 * k;
        w[k] = if pins >= lo + 64 {
            u64::MAX
        } else if pins > lo {
            (1u64 << (pins - lo)) - 1
        } else {
            0
        };
        k += 1;
    }
    w
}

/// Whether `set` holds a pin at or above `pins`.
#[inline]
pub(crate) fn has_pin_from(set: &PinSet, pins: usize) -> bool {
    let (w, ok) = (set.as_u64_words(), pins_below(pins));
    (w[0] & !ok[0]) | (w[1] & !ok[1]) | (w[2] & !ok[2]) | (w[3] & !ok[3]) != 0
}

/// The pins whose entries have remote IRR set, gathered with shifts (no
/// comparison per entry).
#[inline]
pub(crate) fn remote_irr_pins(entries: &[RedirectionEntry]) -> PinSet {
    const SHIFT: u32 = RedirectionEntry::REMOTE_IRR.trailing_zeros();
    let mut w = [0u64; 4];
    for (i, e) in entries.iter().enumerate().take(256) {
        w[i / 64] |= ((e.0 >> SHIFT) & 1) << (i % 64);
    }
    PinSet::from_u64_words(w)
}

/// OR of `a[i] ^ b[i]` over the entries' bits: zero exactly when the tables
/// are equal.
#[inline]
pub(crate) fn entries_diff(a: &[RedirectionEntry], b: &[RedirectionEntry]) -> u64 {
    a.iter().zip(b).fold(0, |acc, (x, y)| acc | (x.0 ^ y.0))
}

/// The pins whose entries differ between `a` and `b`.
///
/// Compared 16 entries at a time with [`entries_diff`]; only a block that
/// differs is scanned entry by entry.
pub(crate) fn changed_entries<const P: usize>(
    a: &[RedirectionEntry; P],
    b: &[RedirectionEntry; P],
) -> PinSet {
    const BLOCK: usize = 16;
    let mut out = PinSet::EMPTY;
    // Most ops change no entry.
    if entries_diff(a, b) == 0 {
        return out;
    }
    for (k, (x, y)) in a.chunks(BLOCK).zip(b.chunks(BLOCK)).enumerate() {
        if entries_diff(x, y) != 0 {
            for (j, (x, y)) in x.iter().zip(y).enumerate() {
                if x != y {
                    out.insert(Pin::new((k * BLOCK + j) as u8));
                }
            }
        }
    }
    out
}

/// `a == b` on the registers and pin state (the derived equality without the
/// version, pin count and configuration), with the redirection tables
/// compared by one [`entries_diff`] fold instead of a comparison per entry.
#[cfg_attr(not(feature = "fuzzing"), allow(dead_code))]
pub(crate) fn registers_eq<const P: usize>(a: &IoapicState<P>, b: &IoapicState<P>) -> bool {
    // The registers and pins only, as `KVM_GET_IRQCHIP` carries them: the
    // version, pin count and configuration are not state that ops change.
    let IoapicState {
        version: _,
        pins: _,
        config: _,
        entries,
        line,
        pending_edge,
        eoi_count,
        ioregsel,
        id,
    } = a;
    // `[u16; P] ==` compiles to one memcmp.
    entries_diff(entries, &b.entries) == 0
        && *line == b.line
        && *pending_edge == b.pending_edge
        && *eoi_count == b.eoi_count
        && *ioregsel == b.ioregsel
        && *id == b.id
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pins_below_masks() {
        assert_eq!(pins_below(0), [0; 4]);
        assert_eq!(pins_below(1), [1, 0, 0, 0]);
        assert_eq!(pins_below(24), [0xff_ffff, 0, 0, 0]);
        assert_eq!(pins_below(64), [u64::MAX, 0, 0, 0]);
        assert_eq!(
            pins_below(240),
            [u64::MAX, u64::MAX, u64::MAX, 0xffff_ffff_ffff]
        );
        assert_eq!(pins_below(256), [u64::MAX; 4]);
    }

    #[test]
    fn each_index_is_the_set() {
        let words = [1 | 1 << 63, 0, 1 << 5, u64::MAX << 62];
        let mut got = Vec::new();
        each_index(words, |i| got.push(i));
        assert_eq!(got, [0, 63, 133, 254, 255]);
        let set = PinSet::from_u64_words(words);
        assert_eq!(got, set.iter().map(|p| p.index()).collect::<Vec<_>>());
        assert_eq!(got, pins(&set).map(|p| p.index()).collect::<Vec<_>>());
        assert_eq!(pins(&PinSet::EMPTY).count(), 0);
        each_index([0; 4], |_| panic!("empty"));
    }

    #[test]
    fn changed_entries_finds_every_change() {
        let a = [RedirectionEntry::default(); 40];
        for i in [0usize, 15, 16, 17, 31, 32, 39] {
            let mut b = a;
            b[i] = RedirectionEntry(b[i].0 ^ 1 << (i % 64));
            let mut want = PinSet::EMPTY;
            want.insert(Pin::new(i as u8));
            assert_eq!(changed_entries(&a, &b), want);
            b[39 - i] = RedirectionEntry(7);
            want.insert(Pin::new((39 - i) as u8));
            assert_eq!(changed_entries(&a, &b), want);
        }
        assert!(changed_entries(&a, &a).is_empty());
    }

    #[test]
    fn remote_irr_pins_is_the_filter() {
        let mut t = [RedirectionEntry::default(); 240];
        for i in [0usize, 5, 63, 64, 200, 239] {
            t[i] = RedirectionEntry(RedirectionEntry::REMOTE_IRR | RedirectionEntry::LEVEL);
        }
        t[7] = RedirectionEntry(!RedirectionEntry::REMOTE_IRR);
        let want: PinSet = (0..240u8)
            .filter(|&i| t[usize::from(i)].remote_irr())
            .map(Pin::new)
            .collect();
        assert_eq!(remote_irr_pins(&t), want);
        assert_eq!(remote_irr_pins(&t[..24]).len(), 2);
    }

    #[test]
    fn has_pin_from_bounds() {
        let mut s = PinSet::EMPTY;
        assert!(!has_pin_from(&s, 0));
        s.insert(Pin::new(23));
        assert!(has_pin_from(&s, 23) && !has_pin_from(&s, 24));
        s.insert(Pin::new(239));
        assert!(has_pin_from(&s, 239) && !has_pin_from(&s, 240));
    }
}
