//! [`Set256`]: the one 256-bit set type behind [`VectorSet`](crate::VectorSet),
//! and [`PinSet`](crate::PinSet).
//!
//! Four `u64` words, bit `i % 64` of word `i / 64` for element index `i`: the
//! layout of the VMCS `EOI_EXIT_BITMAP0..3` words, so a vector set is loaded
//! into the VMCS as it is. One type means one API: `insert` and `remove` say
//! whether they changed the set, `len` is a `usize`, iteration yields the
//! element type (a [`Vector`](crate::Vector), a [`Pin`](crate::Pin)), in
//! ascending order.

use core::fmt;
use core::hash::{Hash, Hasher};
use core::marker::PhantomData;

mod sealed {
    pub trait Sealed {}
}

/// An element of a [`Set256`]: a value with an index below 256. Sealed:
/// implemented by [`Vector`](crate::Vector) and [`Pin`](crate::Pin).
pub trait SetElement: Copy + sealed::Sealed {
    /// The element's bit index (an index of 256 or more is never a member).
    fn index(self) -> usize;
    /// The element with index `i` (below 256).
    fn from_index(i: u8) -> Self;
}

impl sealed::Sealed for crate::Vector {}
impl SetElement for crate::Vector {
    #[inline]
    fn index(self) -> usize {
        self.get() as usize
    }
    #[inline]
    fn from_index(i: u8) -> Self {
        crate::Vector::new(i)
    }
}

impl sealed::Sealed for crate::Pin {}
impl SetElement for crate::Pin {
    #[inline]
    fn index(self) -> usize {
        self.get() as usize
    }
    #[inline]
    fn from_index(i: u8) -> Self {
        crate::Pin::new(i)
    }
}

/// A set of up to 256 elements of `T`, as four `u64` words.
pub struct Set256<T> {
    words: [u64; 4],
    _element: PhantomData<fn() -> T>,
}

impl<T> Clone for Set256<T> {
    #[inline]
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for Set256<T> {}
impl<T> PartialEq for Set256<T> {
    #[inline]
    fn eq(&self, other: &Self) -> bool {
        self.words == other.words
    }
}
impl<T> Eq for Set256<T> {}
impl<T> Hash for Set256<T> {
    fn hash<H: Hasher>(&self, h: &mut H) {
        self.words.hash(h);
    }
}
impl<T> Default for Set256<T> {
    #[inline]
    fn default() -> Self {
        Self::EMPTY
    }
}

impl<T> Set256<T> {
    /// The empty set.
    pub const EMPTY: Self = Self::from_u64_words([0; 4]);

    /// The empty set.
    #[inline]
    pub(crate) const fn new() -> Self {
        Self::EMPTY
    }

    /// The set whose members are the set bits of `words` (word 0 holds
    /// indices 0..=63; for vectors, the VMCS `EOI_EXIT_BITMAP0..3` order).
    #[inline]
    pub const fn from_u64_words(words: [u64; 4]) -> Self {
        Set256 {
            words,
            _element: PhantomData,
        }
    }

    /// The four 64-bit words (for vectors, in VMCS `EOI_EXIT_BITMAP0..3`
    /// order).
    #[inline]
    pub const fn as_u64_words(&self) -> [u64; 4] {
        self.words
    }

    /// Whether the set is empty.
    #[inline]
    pub const fn is_empty(&self) -> bool {
        (self.words[0] | self.words[1] | self.words[2] | self.words[3]) == 0
    }

    /// Number of members.
    #[inline]
    pub const fn len(&self) -> usize {
        (self.words[0].count_ones()
            + self.words[1].count_ones()
            + self.words[2].count_ones()
            + self.words[3].count_ones()) as usize
    }

    /// Removes every member.
    #[inline]
    pub(crate) fn clear(&mut self) {
        self.words = [0; 4];
    }

    /// Set union.
    #[inline]
    #[must_use]
    pub const fn union(&self, other: &Self) -> Self {
        let (a, b) = (self.words, other.words);
        Self::from_u64_words([a[0] | b[0], a[1] | b[1], a[2] | b[2], a[3] | b[3]])
    }

    /// Set intersection.
    #[inline]
    #[must_use]
    pub(crate) const fn intersection(&self, other: &Self) -> Self {
        let (a, b) = (self.words, other.words);
        Self::from_u64_words([a[0] & b[0], a[1] & b[1], a[2] & b[2], a[3] & b[3]])
    }

    /// Members of `self` that are not in `other`.
    #[inline]
    #[must_use]
    pub const fn difference(&self, other: &Self) -> Self {
        let (a, b) = (self.words, other.words);
        Self::from_u64_words([a[0] & !b[0], a[1] & !b[1], a[2] & !b[2], a[3] & !b[3]])
    }

    /// Adds every member of `other`.
    #[inline]
    pub(crate) fn union_with(&mut self, other: &Self) {
        *self = self.union(other);
    }
}

impl<T: SetElement> Set256<T> {
    #[inline]
    fn pos(e: T) -> Option<(usize, u64)> {
        let i = e.index();
        (i < 256).then(|| (i >> 6, 1u64 << (i & 63)))
    }

    /// Adds `e`; returns whether it was absent. An element with an index of
    /// 256 or more is not added.
    #[inline]
    pub fn insert(&mut self, e: T) -> bool {
        let Some((w, b)) = Self::pos(e) else {
            return false;
        };
        let was = self.words[w] & b;
        self.words[w] |= b;
        was == 0
    }

    /// Removes `e`; returns whether it was present.
    #[inline]
    pub fn remove(&mut self, e: T) -> bool {
        let Some((w, b)) = Self::pos(e) else {
            return false;
        };
        let was = self.words[w] & b;
        self.words[w] &= !b;
        was != 0
    }

    /// Adds or removes `e`.
    #[inline]
    pub(crate) fn set(&mut self, e: T, present: bool) {
        if present {
            self.insert(e);
        } else {
            self.remove(e);
        }
    }

    /// Whether `e` is a member.
    #[inline]
    pub fn contains(&self, e: T) -> bool {
        Self::pos(e).is_some_and(|(w, b)| self.words[w] & b != 0)
    }

    /// The highest member below `e`, if any: only `e`'s word and the ones
    /// under it are read (a LAPIC EOI retires the highest in-service vector,
    /// so the next one is below it).
    #[inline]
    pub(crate) fn highest_below(&self, e: T) -> Option<T> {
        let i = e.index().min(255);
        let mut w = i / 64;
        let mut word = self.words[w] & ((1u64 << (i % 64)) - 1);
        loop {
            if word != 0 {
                return Some(T::from_index(
                    (w as u32 * 64 + 63 - word.leading_zeros()) as u8,
                ));
            }
            if w == 0 {
                return None;
            }
            w -= 1;
            word = self.words[w];
        }
    }

    /// The highest member, if any.
    #[inline]
    pub fn highest(&self) -> Option<T> {
        let mut i = 4;
        while i > 0 {
            i -= 1;
            let w = self.words[i];
            if w != 0 {
                return Some(T::from_index(
                    (i as u32 * 64 + 63 - w.leading_zeros()) as u8,
                ));
            }
        }
        None
    }

    /// The lowest member, if any.
    #[inline]
    pub(crate) fn lowest(&self) -> Option<T> {
        self.words
            .iter()
            .enumerate()
            .find(|(_, w)| **w != 0)
            .map(|(i, w)| T::from_index((i as u32 * 64 + w.trailing_zeros()) as u8))
    }

    /// The members in ascending order.
    ///
    /// # Examples
    ///
    /// ```
    /// use eoi_exit::{Vector, VectorSet};
    ///
    /// let mut pending = VectorSet::EMPTY;
    /// pending.insert(Vector::new(0x71));
    /// pending.insert(Vector::new(0x30));
    /// assert_eq!(pending.iter().collect::<Vec<_>>(), [Vector::new(0x30), Vector::new(0x71)]);
    /// assert_eq!(pending.len(), 2);
    /// ```
    #[inline]
    pub fn iter(&self) -> Set256Iter<T> {
        Set256Iter {
            words: self.words,
            word: 0,
            _element: PhantomData,
        }
    }
}

impl<T: SetElement + fmt::Debug> fmt::Debug for Set256<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

impl<T: SetElement> FromIterator<T> for Set256<T> {
    fn from_iter<I: IntoIterator<Item = T>>(iter: I) -> Self {
        let mut s = Self::new();
        for e in iter {
            s.insert(e);
        }
        s
    }
}

impl<T: SetElement> IntoIterator for Set256<T> {
    type Item = T;
    type IntoIter = Set256Iter<T>;
    fn into_iter(self) -> Set256Iter<T> {
        self.iter()
    }
}

impl<T: SetElement> IntoIterator for &Set256<T> {
    type Item = T;
    type IntoIter = Set256Iter<T>;
    fn into_iter(self) -> Set256Iter<T> {
        self.iter()
    }
}

/// Ascending iterator over a [`Set256`].
pub struct Set256Iter<T> {
    words: [u64; 4],
    word: usize,
    _element: PhantomData<fn() -> T>,
}

impl<T> Clone for Set256Iter<T> {
    fn clone(&self) -> Self {
        Set256Iter {
            words: self.words,
            word: self.word,
            _element: PhantomData,
        }
    }
}

impl<T> fmt::Debug for Set256Iter<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Set256Iter")
            .field("words", &self.words)
            .finish()
    }
}

impl<T: SetElement> Iterator for Set256Iter<T> {
    type Item = T;

    #[inline]
    fn next(&mut self) -> Option<T> {
        while self.word < 4 {
            let w = self.words[self.word];
            if w != 0 {
                let bit = w.trailing_zeros();
                self.words[self.word] = w & (w - 1);
                return Some(T::from_index((self.word as u32 * 64 + bit) as u8));
            }
            self.word += 1;
        }
        None
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = self.words[self.word.min(4)..]
            .iter()
            .map(|w| w.count_ones() as usize)
            .sum();
        (n, Some(n))
    }
}

impl<T: SetElement> ExactSizeIterator for Set256Iter<T> {}

#[cfg(feature = "serde")]
impl<T> serde::Serialize for Set256<T> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.words.serialize(s)
    }
}

#[cfg(feature = "serde")]
impl<'de, T> serde::Deserialize<'de> for Set256<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        <[u64; 4]>::deserialize(d).map(Self::from_u64_words)
    }
}

#[cfg(feature = "arbitrary")]
impl<'a, T> arbitrary::Arbitrary<'a> for Set256<T> {
    fn arbitrary(u: &mut arbitrary::Unstructured<'a>) -> arbitrary::Result<Self> {
        Ok(Self::from_u64_words(u.arbitrary()?))
    }
}
