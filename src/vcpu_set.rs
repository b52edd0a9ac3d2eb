//! [`VcpuSet`]: the vCPUs an input concerns (to kick, to reload), exact at
//! any VM size the crate supports.

use core::fmt;

use crate::types::VcpuId;

/// The largest number of vCPUs an [`Irqchip`](crate::Irqchip) holds: KVM's
/// `KVM_MAX_VCPUS` on x86.
pub const MAX_VCPUS: usize = 4096;

const WORDS: usize = MAX_VCPUS / 64;

/// A set of vCPU indices below [`MAX_VCPUS`], as a two-level bitmap: 64
/// words of 64 bits, and a summary word whose bit `w` says word `w` is in
/// use (a word the summary does not name is garbage, never read).
///
/// Why two levels: the set is exact for a broadcast to 4096 vCPUs (no vCPU
/// to kick is ever dropped), while the common case, one or two vCPUs,
/// costs a few words. Clearing is one store (the summary; see
/// [`Effects::clear`](crate::irqchip::Effects::clear)),
/// [`is_empty`](Self::is_empty) one load, and iteration reads the summary
/// and only the words it names, so reusing
/// one [`Effects`](crate::irqchip::Effects) per vCPU thread costs nothing
/// per input however large the set could grow. The 520 bytes are the
/// caller's sink, passed by `&mut`, never returned by value.
///
/// # Examples
///
/// ```
/// use eoi_exit::{VcpuId, VcpuSet};
///
/// let reload: VcpuSet = [4095, 7, 4096].map(VcpuId::new).into_iter().collect();
/// // 4096 is beyond MAX_VCPUS: never a member.
/// assert_eq!(reload.iter().collect::<Vec<_>>(), [VcpuId::new(7), VcpuId::new(4095)]);
/// assert_eq!(reload.len(), 2);
/// assert!(reload.contains(VcpuId::new(4095)) && !VcpuSet::EMPTY.contains(VcpuId::new(7)));
/// for vcpu in &reload {
///     // kick `vcpu` so that it loads its VMCS update before it reenters
///     assert!(vcpu.index() < 4096);
/// }
/// ```
#[derive(Clone)]
pub struct VcpuSet {
    /// Bit `w`: `words[w]` is in use, and not 0.
    summary: u64,
    words: [u64; WORDS],
}

/// Equal members (words the summary does not name are not looked at).
impl PartialEq for VcpuSet {
    fn eq(&self, other: &Self) -> bool {
        self.summary == other.summary
            && self.word_indices().all(|w| self.words[w] == other.words[w])
    }
}

impl Eq for VcpuSet {}

impl core::hash::Hash for VcpuSet {
    fn hash<H: core::hash::Hasher>(&self, h: &mut H) {
        self.summary.hash(h);
        for w in self.word_indices() {
            self.words[w].hash(h);
        }
    }
}

impl Default for VcpuSet {
    #[inline]
    fn default() -> Self {
        Self::EMPTY
    }
}

impl VcpuSet {
    /// The empty set.
    pub const EMPTY: Self = VcpuSet {
        summary: 0,
        words: [0; WORDS],
    };

    /// Whether the set is empty.
    #[inline]
    pub const fn is_empty(&self) -> bool {
        self.summary == 0
    }

    /// Number of members.
    pub fn len(&self) -> usize {
        self.word_indices()
            .map(|w| self.words[w].count_ones() as usize)
            .sum()
    }

    /// Adds `vcpu`; whether it was absent. An index of [`MAX_VCPUS`] or more
    /// is never a member (`false`).
    #[inline]
    pub(crate) fn insert(&mut self, vcpu: VcpuId) -> bool {
        let i = vcpu.index();
        if i >= MAX_VCPUS {
            return false;
        }
        let (w, bit) = (i / 64, 1u64 << (i % 64));
        if self.summary & 1 << w == 0 {
            // A word not in use: overwrite whatever a clear left there.
            self.words[w] = bit;
            self.summary |= 1 << w;
            return true;
        }
        let was = self.words[w] & bit != 0;
        self.words[w] |= bit;
        !was
    }

    /// Removes `vcpu`; whether it was present.
    #[inline]
    #[cfg(test)]
    pub(crate) fn remove(&mut self, vcpu: VcpuId) -> bool {
        let i = vcpu.index();
        if i >= MAX_VCPUS {
            return false;
        }
        let (w, bit) = (i / 64, 1u64 << (i % 64));
        if self.summary & 1 << w == 0 {
            return false;
        }
        let was = self.words[w] & bit != 0;
        self.words[w] &= !bit;
        if self.words[w] == 0 {
            self.summary &= !(1 << w);
        }
        was
    }

    /// Whether `vcpu` is a member.
    #[inline]
    pub fn contains(&self, vcpu: VcpuId) -> bool {
        let i = vcpu.index();
        i < MAX_VCPUS
            && self.summary & 1 << (i / 64) != 0
            && self.words[i / 64] & 1 << (i % 64) != 0
    }

    /// Empties the set: one store (the words are left as garbage, which
    /// nothing reads until an insert overwrites them).
    #[inline]
    pub(crate) fn clear(&mut self) {
        self.summary = 0;
    }

    /// Adds every member of `other`.
    pub(crate) fn union_with(&mut self, other: &VcpuSet) {
        for w in other.word_indices() {
            if self.summary & 1 << w == 0 {
                self.words[w] = other.words[w];
            } else {
                self.words[w] |= other.words[w];
            }
        }
        self.summary |= other.summary;
    }

    /// The members in ascending order.
    #[inline]
    pub fn iter(&self) -> VcpuSetIter<'_> {
        VcpuSetIter {
            set: self,
            summary: self.summary,
            word: 0,
            bits: 0,
        }
    }

    fn word_indices(&self) -> impl Iterator<Item = usize> {
        let mut s = self.summary;
        core::iter::from_fn(move || {
            (s != 0).then(|| {
                let w = s.trailing_zeros() as usize;
                s &= s - 1;
                w
            })
        })
    }
}

impl fmt::Debug for VcpuSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

impl FromIterator<VcpuId> for VcpuSet {
    fn from_iter<I: IntoIterator<Item = VcpuId>>(iter: I) -> Self {
        let mut s = Self::EMPTY;
        for v in iter {
            s.insert(v);
        }
        s
    }
}

/// Adds the members (a tool merging two `Effects`, say).
impl Extend<VcpuId> for VcpuSet {
    fn extend<I: IntoIterator<Item = VcpuId>>(&mut self, iter: I) {
        for v in iter {
            self.insert(v);
        }
    }
}

impl<'a> IntoIterator for &'a VcpuSet {
    type Item = VcpuId;
    type IntoIter = VcpuSetIter<'a>;
    fn into_iter(self) -> VcpuSetIter<'a> {
        self.iter()
    }
}

/// Ascending iterator over a [`VcpuSet`] ([`VcpuSet::iter`]; not
/// re-exported: nameable only as `impl Iterator`).
#[derive(Clone, Debug)]
pub struct VcpuSetIter<'a> {
    set: &'a VcpuSet,
    /// Words not yet started.
    summary: u64,
    /// The current word's index and its members not yet yielded.
    word: usize,
    bits: u64,
}

impl Iterator for VcpuSetIter<'_> {
    type Item = VcpuId;

    #[inline]
    fn next(&mut self) -> Option<VcpuId> {
        while self.bits == 0 {
            if self.summary == 0 {
                return None;
            }
            self.word = self.summary.trailing_zeros() as usize;
            self.summary &= self.summary - 1;
            self.bits = self.set.words[self.word];
        }
        let b = self.bits.trailing_zeros() as usize;
        self.bits &= self.bits - 1;
        Some(VcpuId::new((self.word * 64 + b) as u16))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_tracks_words_in_use_through_insert_remove_and_clear() {
        let mut s = VcpuSet::EMPTY;
        assert!(s.insert(VcpuId::new(0)));
        assert!(s.insert(VcpuId::new(4095)));
        assert!(!s.insert(VcpuId::new(4095)));
        assert_eq!(s.summary, 1 | 1 << 63);
        assert!(s.remove(VcpuId::new(0)));
        assert_eq!(s.summary, 1 << 63);
        let mut t = VcpuSet::EMPTY;
        t.insert(VcpuId::new(4095));
        assert_eq!(s, t, "equal members, equal sets");
        s.clear();
        assert_eq!(s, VcpuSet::EMPTY);
        // The garbage a clear leaves is never a member.
        assert!(!s.contains(VcpuId::new(4095)));
        assert!(s.insert(VcpuId::new(4094)));
        assert_eq!(s.iter().collect::<std::vec::Vec<_>>(), [VcpuId::new(4094)]);
        assert!(!s.remove(VcpuId::new(4095)));
        let all: VcpuSet = (0..4096).map(VcpuId::new).collect();
        assert_eq!(all.len(), 4096);
        assert!(all.iter().map(VcpuId::index).eq(0..4096));
    }
}
