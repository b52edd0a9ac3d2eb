//! Interrupt vectors and 256-bit vector sets.
//!
//! [`VectorSet`] is the one bitmap type of the crate: the local APIC's IRR, ISR
//! and TMR, and the VMX EOI-exit bitmap are all `VectorSet`s. It is four plain
//! `u64` words; `benches/main.rs` compares it with bitvec's `BitArray<[u64; 4]>`
//! (see the README for the numbers that chose it).

use core::fmt;

/// An x86 interrupt vector (0..=255).
///
/// Vectors 0..=15 are reserved by the architecture: the local APIC reports an
/// illegal-vector error for them and does not set IRR (SDM Vol. 3, "Error
/// Handling"). The newtype itself accepts every `u8`; the LAPIC enforces the rule.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct Vector(u8);

impl Vector {
    /// Wraps a raw vector number.
    #[inline]
    pub const fn new(v: u8) -> Self {
        Vector(v)
    }

    /// The raw vector number.
    #[inline]
    pub const fn get(self) -> u8 {
        self.0
    }

    /// The priority class: bits 7:4 of the vector (SDM "Interrupt, Task, and
    /// Processor Priority").
    #[inline]
    pub const fn priority_class(self) -> u8 {
        self.0 >> 4
    }

    /// Vectors 0..=15 are illegal for fixed and lowest-priority delivery.
    #[inline]
    pub const fn is_reserved(self) -> bool {
        self.0 < 16
    }
}

impl From<u8> for Vector {
    fn from(v: u8) -> Self {
        Vector(v)
    }
}

impl From<Vector> for u8 {
    fn from(v: Vector) -> u8 {
        v.0
    }
}

impl fmt::Debug for Vector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Vector({:#04x})", self.0)
    }
}

impl fmt::Display for Vector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#04x}", self.0)
    }
}

/// A set of 256 vectors, stored as four `u64` words (bit `v % 64` of word `v / 64`).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct VectorSet {
    words: [u64; 4],
}

impl VectorSet {
    /// The empty set.
    pub const EMPTY: VectorSet = VectorSet { words: [0; 4] };

    /// The empty set.
    #[inline]
    pub const fn new() -> Self {
        Self::EMPTY
    }

    /// Builds a set from the four VMCS `EOI_EXIT_BITMAP0..3` words (word 0 holds
    /// vectors 0..=63).
    #[inline]
    pub const fn from_u64_words(words: [u64; 4]) -> Self {
        VectorSet { words }
    }

    /// Builds a set from the eight 32-bit APIC register words (IRR/ISR/TMR
    /// layout: register `n` at offset `base + 0x10 * n` holds vectors `32n..32n+31`).
    pub const fn from_u32_words(regs: [u32; 8]) -> Self {
        let mut words = [0u64; 4];
        let mut i = 0;
        while i < 4 {
            words[i] = regs[2 * i] as u64 | (regs[2 * i + 1] as u64) << 32;
            i += 1;
        }
        VectorSet { words }
    }

    /// The four 64-bit words in VMCS `EOI_EXIT_BITMAP0..3` order.
    #[inline]
    pub const fn as_u64_words(&self) -> [u64; 4] {
        self.words
    }

    /// The eight 32-bit words in APIC register order (IRR0..IRR7).
    pub const fn as_u32_words(&self) -> [u32; 8] {
        let mut regs = [0u32; 8];
        let mut i = 0;
        while i < 4 {
            regs[2 * i] = self.words[i] as u32;
            regs[2 * i + 1] = (self.words[i] >> 32) as u32;
            i += 1;
        }
        regs
    }

    /// Adds `v`; returns whether it was absent.
    #[inline]
    pub fn insert(&mut self, v: Vector) -> bool {
        let (w, b) = Self::pos(v);
        let was = self.words[w] & b;
        self.words[w] |= b;
        was == 0
    }

    /// Removes `v`; returns whether it was present.
    #[inline]
    pub fn remove(&mut self, v: Vector) -> bool {
        let (w, b) = Self::pos(v);
        let was = self.words[w] & b;
        self.words[w] &= !b;
        was != 0
    }

    /// Sets or clears `v`.
    #[inline]
    pub fn set(&mut self, v: Vector, present: bool) {
        if present {
            self.insert(v);
        } else {
            self.remove(v);
        }
    }

    /// Whether `v` is in the set.
    #[inline]
    pub const fn contains(&self, v: Vector) -> bool {
        let (w, b) = Self::pos(v);
        self.words[w] & b != 0
    }

    /// The highest vector in the set, if any.
    #[inline]
    pub const fn highest(&self) -> Option<Vector> {
        let mut i = 4;
        while i > 0 {
            i -= 1;
            let w = self.words[i];
            if w != 0 {
                return Some(Vector((i as u32 * 64 + 63 - w.leading_zeros()) as u8));
            }
        }
        None
    }

    /// The lowest vector in the set, if any.
    #[inline]
    pub const fn lowest(&self) -> Option<Vector> {
        let mut i = 0;
        while i < 4 {
            let w = self.words[i];
            if w != 0 {
                return Some(Vector((i as u32 * 64 + w.trailing_zeros()) as u8));
            }
            i += 1;
        }
        None
    }

    /// Whether the set is empty.
    #[inline]
    pub const fn is_empty(&self) -> bool {
        (self.words[0] | self.words[1] | self.words[2] | self.words[3]) == 0
    }

    /// Number of vectors in the set.
    #[inline]
    pub const fn len(&self) -> u32 {
        self.words[0].count_ones()
            + self.words[1].count_ones()
            + self.words[2].count_ones()
            + self.words[3].count_ones()
    }

    /// Removes every vector.
    #[inline]
    pub fn clear(&mut self) {
        self.words = [0; 4];
    }

    /// Set union.
    #[inline]
    #[must_use]
    pub const fn union(&self, other: &VectorSet) -> VectorSet {
        VectorSet {
            words: [
                self.words[0] | other.words[0],
                self.words[1] | other.words[1],
                self.words[2] | other.words[2],
                self.words[3] | other.words[3],
            ],
        }
    }

    /// Set intersection.
    #[inline]
    #[must_use]
    pub const fn intersection(&self, other: &VectorSet) -> VectorSet {
        VectorSet {
            words: [
                self.words[0] & other.words[0],
                self.words[1] & other.words[1],
                self.words[2] & other.words[2],
                self.words[3] & other.words[3],
            ],
        }
    }

    /// Vectors in `self` and not in `other`.
    #[inline]
    #[must_use]
    pub const fn difference(&self, other: &VectorSet) -> VectorSet {
        VectorSet {
            words: [
                self.words[0] & !other.words[0],
                self.words[1] & !other.words[1],
                self.words[2] & !other.words[2],
                self.words[3] & !other.words[3],
            ],
        }
    }

    /// Whether every vector of `self` is in `other`.
    #[inline]
    pub const fn is_subset(&self, other: &VectorSet) -> bool {
        self.difference(other).is_empty()
    }

    /// Iterates the vectors in ascending order.
    #[inline]
    pub fn iter(&self) -> VectorSetIter {
        VectorSetIter {
            words: self.words,
            word: 0,
        }
    }

    #[inline]
    const fn pos(v: Vector) -> (usize, u64) {
        ((v.0 >> 6) as usize, 1u64 << (v.0 & 63))
    }
}

impl fmt::Debug for VectorSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

impl FromIterator<Vector> for VectorSet {
    fn from_iter<I: IntoIterator<Item = Vector>>(iter: I) -> Self {
        let mut s = VectorSet::new();
        for v in iter {
            s.insert(v);
        }
        s
    }
}

impl IntoIterator for &VectorSet {
    type Item = Vector;
    type IntoIter = VectorSetIter;
    fn into_iter(self) -> VectorSetIter {
        self.iter()
    }
}

/// Ascending iterator over a [`VectorSet`].
#[derive(Clone, Debug)]
pub struct VectorSetIter {
    words: [u64; 4],
    word: usize,
}

impl Iterator for VectorSetIter {
    type Item = Vector;

    #[inline]
    fn next(&mut self) -> Option<Vector> {
        while self.word < 4 {
            let w = self.words[self.word];
            if w != 0 {
                let bit = w.trailing_zeros();
                self.words[self.word] = w & (w - 1);
                return Some(Vector((self.word as u32 * 64 + bit) as u8));
            }
            self.word += 1;
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    extern crate std;
    use std::vec::Vec;

    #[test]
    fn highest_is_none_for_the_empty_set_and_the_top_bit_otherwise() {
        let mut s = VectorSet::new();
        assert_eq!(s.highest(), None);
        s.insert(Vector(0x20));
        s.insert(Vector(0x41));
        assert_eq!(s.highest(), Some(Vector(0x41)));
        s.insert(Vector(0xff));
        assert_eq!(s.highest(), Some(Vector(0xff)));
        s.remove(Vector(0xff));
        assert_eq!(s.highest(), Some(Vector(0x41)));
        assert_eq!(s.lowest(), Some(Vector(0x20)));
    }

    #[test]
    fn vmcs_word_n_holds_vectors_64n_to_64n_plus_63() {
        let s: VectorSet = [0u8, 63, 64, 200, 255].into_iter().map(Vector).collect();
        assert_eq!(
            s.as_u64_words(),
            [1 | 1 << 63, 1, 0, 1 << (200 - 192) | 1 << 63]
        );
    }

    #[test]
    fn apic_register_n_holds_vectors_32n_to_32n_plus_31() {
        let s: VectorSet = [0x31u8, 0x40, 0xfe].into_iter().map(Vector).collect();
        let r = s.as_u32_words();
        assert_eq!(r[1], 1 << 0x11);
        assert_eq!(r[2], 1);
        assert_eq!(r[7], 1 << 30);
        assert_eq!(VectorSet::from_u32_words(r), s);
    }

    #[test]
    fn insert_and_remove_report_whether_the_set_changed() {
        let mut s = VectorSet::new();
        assert!(s.insert(Vector(7)));
        assert!(!s.insert(Vector(7)));
        assert!(s.remove(Vector(7)));
        assert!(!s.remove(Vector(7)));
    }

    #[test]
    fn iteration_is_ascending_and_complete() {
        let all: VectorSet = (0..=255u8).map(Vector).collect();
        assert_eq!(all.len(), 256);
        let got: Vec<u8> = all.iter().map(Vector::get).collect();
        assert_eq!(got, (0..=255u8).collect::<Vec<_>>());
    }

    proptest::proptest! {
        #[test]
        fn set_behaves_like_a_sorted_set(ops in proptest::collection::vec((proptest::bool::ANY, 0u8..=255), 0..64)) {
            let mut model = std::collections::BTreeSet::new();
            let mut s = VectorSet::new();
            for (ins, v) in ops {
                if ins { proptest::prop_assert_eq!(s.insert(Vector(v)), model.insert(v)); }
                else { proptest::prop_assert_eq!(s.remove(Vector(v)), model.remove(&v)); }
            }
            proptest::prop_assert_eq!(s.highest().map(Vector::get), model.iter().next_back().copied());
            proptest::prop_assert_eq!(s.iter().map(Vector::get).collect::<Vec<_>>(), model.into_iter().collect::<Vec<_>>());
            proptest::prop_assert_eq!(VectorSet::from_u32_words(s.as_u32_words()), s);
        }
    }
}
