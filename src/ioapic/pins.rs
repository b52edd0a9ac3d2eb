//! [`PinSet`]: a fixed 256-bit set of I/O APIC pins.

use core::fmt;

use crate::types::Pin;

/// A set of I/O APIC pins (any [`Pin`], 0..=255), stored as four plain `u64`
/// words (bit `p % 64` of word `p / 64`). Never allocates.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct PinSet([u64; 4]);

impl PinSet {
    /// The empty set.
    pub const EMPTY: PinSet = PinSet([0; 4]);

    /// The empty set.
    #[inline]
    pub const fn new() -> Self {
        Self::EMPTY
    }

    #[inline]
    const fn pos(pin: Pin) -> (usize, u64) {
        (pin.index() / 64, 1u64 << (pin.index() % 64))
    }

    /// Adds `pin`; returns whether it was absent.
    #[inline]
    pub fn insert(&mut self, pin: Pin) -> bool {
        let (w, b) = Self::pos(pin);
        let absent = self.0[w] & b == 0;
        self.0[w] |= b;
        absent
    }

    /// Removes `pin`; returns whether it was present.
    #[inline]
    pub fn remove(&mut self, pin: Pin) -> bool {
        let (w, b) = Self::pos(pin);
        let present = self.0[w] & b != 0;
        self.0[w] &= !b;
        present
    }

    /// Adds or removes `pin`.
    #[inline]
    pub fn set(&mut self, pin: Pin, present: bool) {
        if present {
            self.insert(pin);
        } else {
            self.remove(pin);
        }
    }

    /// Whether `pin` is in the set.
    #[inline]
    pub const fn contains(&self, pin: Pin) -> bool {
        let (w, b) = Self::pos(pin);
        self.0[w] & b != 0
    }

    /// Whether the set is empty.
    #[inline]
    pub const fn is_empty(&self) -> bool {
        (self.0[0] | self.0[1] | self.0[2] | self.0[3]) == 0
    }

    /// Number of pins in the set.
    #[inline]
    pub const fn len(&self) -> usize {
        (self.0[0].count_ones()
            + self.0[1].count_ones()
            + self.0[2].count_ones()
            + self.0[3].count_ones()) as usize
    }

    /// Set union.
    #[inline]
    #[must_use]
    pub const fn union(&self, other: &PinSet) -> PinSet {
        PinSet([
            self.0[0] | other.0[0],
            self.0[1] | other.0[1],
            self.0[2] | other.0[2],
            self.0[3] | other.0[3],
        ])
    }

    /// The four words (word 0 holds pins 0..=63).
    #[inline]
    pub const fn as_u64_words(&self) -> [u64; 4] {
        self.0
    }

    /// Builds a set from four words (word 0 holds pins 0..=63).
    #[inline]
    pub const fn from_u64_words(words: [u64; 4]) -> Self {
        PinSet(words)
    }

    /// The pins in ascending order (at most 256 steps).
    #[inline]
    pub fn iter(&self) -> PinSetIter {
        PinSetIter {
            words: self.0,
            word: 0,
        }
    }
}

impl fmt::Debug for PinSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter().map(|p| p.get())).finish()
    }
}

impl IntoIterator for PinSet {
    type Item = Pin;
    type IntoIter = PinSetIter;
    fn into_iter(self) -> PinSetIter {
        self.iter()
    }
}

impl IntoIterator for &PinSet {
    type Item = Pin;
    type IntoIter = PinSetIter;
    fn into_iter(self) -> PinSetIter {
        self.iter()
    }
}

impl FromIterator<Pin> for PinSet {
    fn from_iter<I: IntoIterator<Item = Pin>>(iter: I) -> Self {
        let mut s = PinSet::EMPTY;
        for p in iter {
            s.insert(p);
        }
        s
    }
}

/// Iterator over a [`PinSet`], ascending.
#[derive(Clone, Debug)]
pub struct PinSetIter {
    words: [u64; 4],
    word: usize,
}

impl Iterator for PinSetIter {
    type Item = Pin;

    fn next(&mut self) -> Option<Pin> {
        while self.word < 4 {
            let w = self.words[self.word];
            if w != 0 {
                let bit = w.trailing_zeros();
                self.words[self.word] = w & (w - 1);
                return Some(Pin::new((self.word as u32 * 64 + bit) as u8));
            }
            self.word += 1;
        }
        None
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = PinSet(self.words).len();
        (n, Some(n))
    }
}

impl ExactSizeIterator for PinSetIter {}
