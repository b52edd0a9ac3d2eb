//! Interrupt vectors and 256-bit vector sets.
//!
//! [`VectorSet`] is the one bitmap type of the crate: the local APIC's IRR, ISR
//! and TMR, and the VMX EOI-exit bitmap are all `VectorSet`s. It is four plain
//! `u64` words; `benches/main.rs` compares it with bitvec's `BitArray<[u64; 4]>`
//! (see the README for the numbers that chose it).

use core::fmt;

use crate::set::Set256;

/// An x86 interrupt vector (0..=255).
///
/// Vectors 0..=15 are reserved by the architecture: the local APIC reports an
/// illegal-vector error for them and does not set IRR (SDM Vol. 3, "Error
/// Handling"). The newtype itself accepts every `u8`; the LAPIC enforces the rule.
///
/// # Examples
///
/// ```
/// use eoi_exit::Vector;
///
/// let v = Vector::new(0x41);
/// assert_eq!(v.get(), 0x41);
/// assert_eq!(v.get() >> 4, 4); // its priority class, what TPR/PPR compare against
/// assert_eq!(format!("{v} {v:?}"), "0x41 Vector(0x41)");
/// ```
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
    pub(crate) const fn priority_class(self) -> u8 {
        self.0 >> 4
    }

    /// Vectors 0..=15 are illegal for fixed and lowest-priority delivery.
    #[inline]
    pub(crate) const fn is_reserved(self) -> bool {
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

/// A set of 256 vectors: a [`Set256`] of [`Vector`], four `u64` words in VMCS
/// `EOI_EXIT_BITMAP0..3` order (bit `v % 64` of word `v / 64`).
///
/// # Examples
///
/// ```
/// use eoi_exit::{Vector, VectorSet};
///
/// let mut s = VectorSet::EMPTY;
/// assert!(s.insert(Vector::new(0x40)));
/// assert!(!s.insert(Vector::new(0x40))); // already there
/// s.insert(Vector::new(0xfe));
/// assert_eq!(s.highest(), Some(Vector::new(0xfe))); // e.g. the ISR's in-service vector
/// assert_eq!(s.as_u64_words(), [0, 1, 0, 1 << 62]); // EOI_EXIT_BITMAP0..3
/// ```
pub type VectorSet = Set256<Vector>;

impl Set256<Vector> {
    /// Builds a set from the eight 32-bit APIC register words (IRR/ISR/TMR
    /// layout: register `n` at offset `base + 0x10 * n` holds vectors `32n..32n+31`).
    #[cfg_attr(not(feature = "kvm"), allow(dead_code))]
    pub(crate) const fn from_u32_words(regs: [u32; 8]) -> Self {
        let mut words = [0u64; 4];
        let mut i = 0;
        while i < 4 {
            words[i] = regs[2 * i] as u64 | (regs[2 * i + 1] as u64) << 32;
            i += 1;
        }
        Self::from_u64_words(words)
    }

    /// The eight 32-bit words in APIC register order (IRR0..IRR7).
    pub(crate) const fn as_u32_words(&self) -> [u32; 8] {
        let words = self.as_u64_words();
        let mut regs = [0u32; 8];
        let mut i = 0;
        while i < 4 {
            regs[2 * i] = words[i] as u32;
            regs[2 * i + 1] = (words[i] >> 32) as u32;
            i += 1;
        }
        regs
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    extern crate std;
    use std::vec::Vec;

    #[test]
    fn highest_is_none_for_the_empty_set_and_the_top_bit_otherwise() {
        let mut s = VectorSet::EMPTY;
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
    fn highest_below_is_the_highest_member_under_the_bound_at_every_bound() {
        let members = [0u8, 1, 63, 64, 65, 127, 128, 191, 192, 200, 254, 255];
        let s: VectorSet = members.into_iter().map(Vector).collect();
        for bound in 0..=255u8 {
            let want = members
                .iter()
                .rev()
                .find(|&&m| m < bound)
                .map(|&m| Vector(m));
            assert_eq!(s.highest_below(Vector(bound)), want, "below {bound:#x}");
        }
        assert_eq!(VectorSet::EMPTY.highest_below(Vector(0xff)), None);
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
        let mut s = VectorSet::EMPTY;
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
            let mut s = VectorSet::EMPTY;
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
