//! `Exact`'s instance tracking.
//!
//! A vector has at most two outstanding instances on one vCPU: one in ISR
//! and a newer one in IRR. For each, the map remembers whether its EOI is
//! needed (it came from a level entry, an ack-notifier pin or the RTC). EOIs
//! the hardware did not intercept are learnt lazily, by comparing the queue
//! with the LAPIC's IRR and ISR.
//!
//! Live, the seven states a vector can be in (no instance; one, needed or
//! not; two, each needed or not) take three bits, in three bit planes
//! ([`Packed`]); the saved state ([`ExactTracking`]) spells them out as four
//! sets.

use super::{Accepted, ExactTracking, Source};
use crate::lapic::LocalApic;
use crate::vector::{Vector, VectorSet};

impl ExactTracking {
    /// Nothing routed, nothing in flight.
    pub(crate) const EMPTY: Self = ExactTracking {
        routed: VectorSet::EMPTY,
        inst_one: VectorSet::EMPTY,
        inst_two: VectorSet::EMPTY,
        need_old: VectorSet::EMPTY,
        need_new: VectorSet::EMPTY,
    };

    /// Vectors with an outstanding instance whose EOI is needed.
    #[inline]
    pub(crate) fn needed_in_flight(&self) -> VectorSet {
        self.need_old
            .intersection(&self.inst_one)
            .union(&self.need_new.intersection(&self.inst_two))
    }
}

/// One vector's outstanding instances, oldest first.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
struct Inst {
    /// 0, 1 or 2.
    n: u8,
    /// The oldest needs its EOI (meaningful when `n >= 1`).
    old: bool,
    /// The newer needs its EOI (meaningful when `n == 2`).
    new: bool,
}

impl Inst {
    /// State code 0..=6 (0 none; 1, 2 one not needed / needed; 3..=6 two,
    /// with (old, new) needed = (n, n), (y, n), (n, y), (y, y)).
    const fn code(self) -> u8 {
        match (self.n, self.old, self.new) {
            (0, ..) => 0,
            (1, false, _) => 1,
            (1, true, _) => 2,
            (_, false, false) => 3,
            (_, true, false) => 4,
            (_, false, true) => 5,
            (_, true, true) => 6,
        }
    }

    const fn from_code(c: u8) -> Inst {
        let (n, old, new) = match c {
            0 | 7 => (0, false, false),
            1 => (1, false, false),
            2 => (1, true, false),
            3 => (2, false, false),
            4 => (2, true, false),
            5 => (2, false, true),
            _ => (2, true, true),
        };
        Inst { n, old, new }
    }

    /// A newer instance arrives (the live path uses [`PUSH`], which the
    /// tests check against this).
    #[cfg(test)]
    fn push(&mut self, need: bool) {
        match self.n {
            0 => {
                *self = Inst {
                    n: 1,
                    old: need,
                    new: false,
                }
            }
            1 => {
                self.n = 2;
                self.new = need;
            }
            // A third instance cannot exist (IRR and ISR hold one each); if
            // the LAPIC says otherwise the sync step already shrank the queue.
            _ => self.new |= need,
        }
    }

    /// An instance the map never saw arrives in front (older).
    fn push_front_unknown(&mut self) {
        *self = match self.n {
            0 => Inst {
                n: 1,
                old: true,
                new: false,
            },
            _ => Inst {
                n: 2,
                old: true,
                new: self.old,
            },
        };
    }

    /// Retires the oldest instance.
    fn pop(&mut self) {
        *self = match self.n {
            0 | 1 => Inst::default(),
            _ => Inst {
                n: 1,
                old: self.new,
                new: false,
            },
        };
    }
}

/// A set of the legal vectors 16..=255 (vectors 0-15 are never accepted:
/// SDM illegal vectors), in 15 `u16` chunks: 30 bytes, 2-byte aligned, so
/// `Exact`'s four sets and the map's header fit in 128 bytes.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
pub(super) struct Legal(pub(super) [u16; 15]);

impl Legal {
    pub(super) const EMPTY: Legal = Legal([0; 15]);

    #[inline]
    pub(super) fn slot(v: Vector) -> Option<(usize, u16)> {
        let v = v.get();
        (v >= 16).then(|| (usize::from(v / 16) - 1, 1u16 << (v % 16)))
    }

    #[inline]
    pub(super) fn contains(&self, v: Vector) -> bool {
        Self::slot(v).is_some_and(|(i, b)| self.0[i] & b != 0)
    }

    #[inline]
    pub(super) fn set(&mut self, v: Vector, on: bool) {
        if let Some((i, b)) = Self::slot(v) {
            self.0[i] = if on { self.0[i] | b } else { self.0[i] & !b };
        }
    }

    #[inline]
    pub(super) fn insert(&mut self, v: Vector) {
        self.set(v, true);
    }

    /// The set as four VMCS words (vectors 0-15 clear).
    #[inline]
    pub(super) fn words(&self) -> [u64; 4] {
        let chunk = |k: usize| if k == 0 { 0 } else { u64::from(self.0[k - 1]) };
        core::array::from_fn(|w| (0..4).fold(0, |acc, j| acc | chunk(4 * w + j) << (16 * j)))
    }

    /// Whether `s` holds exactly these vectors, ignoring its vectors 0-15:
    /// word by word in registers, no copy of either set.
    #[inline(always)]
    pub(super) fn same_as(&self, s: &VectorSet) -> bool {
        let w = s.as_u64_words();
        let c = |k: usize| u64::from(self.0[k]);
        let mine = [
            c(0) << 16 | c(1) << 32 | c(2) << 48,
            c(3) | c(4) << 16 | c(5) << 32 | c(6) << 48,
            c(7) | c(8) << 16 | c(9) << 32 | c(10) << 48,
            c(11) | c(12) << 16 | c(13) << 32 | c(14) << 48,
        ];
        ((w[0] & !0xFFFF) ^ mine[0]) | (w[1] ^ mine[1]) | (w[2] ^ mine[2]) | (w[3] ^ mine[3]) == 0
    }

    /// The vectors in exactly one of `self` and `o`.
    #[inline]
    pub(super) fn xor(&self, o: &Legal) -> Legal {
        Legal(core::array::from_fn(|i| self.0[i] ^ o.0[i]))
    }

    #[inline]
    pub(super) fn set_of(&self) -> VectorSet {
        VectorSet::from_u64_words(self.words())
    }

    /// The legal vectors of `s` (vectors 0-15 dropped).
    #[inline]
    pub(super) fn from_set(s: &VectorSet) -> Legal {
        let w = s.as_u64_words();
        Legal(core::array::from_fn(|k| {
            (w[(k + 1) / 4] >> (16 * ((k + 1) % 4))) as u16
        }))
    }
}

/// The 3-bit state code of `v` in three bit planes (bits 2, 1, 0), 0 for an
/// illegal vector: one slot computation, three bit reads. `Exact` and
/// `LineAware` keep their per-vector states this way.
#[inline]
pub(super) fn plane_code(planes: &[Legal; 3], v: Vector) -> u8 {
    let Some((i, b)) = Legal::slot(v) else {
        return 0;
    };
    code_at(planes, i, b)
}

/// The 3-bit state code at chunk `k`, bit `b` of the three planes.
#[inline(always)]
fn code_at(planes: &[Legal; 3], k: usize, b: u16) -> u8 {
    let [pa, pb, pc] = planes;
    u8::from(pa.0[k] & b != 0) << 2 | u8::from(pb.0[k] & b != 0) << 1 | u8::from(pc.0[k] & b != 0)
}

/// Stores `code` as `v`'s state in the three planes (nothing for an illegal
/// vector).
#[inline]
pub(super) fn plane_put(planes: &mut [Legal; 3], v: Vector, code: u8) {
    if let Some((k, b)) = Legal::slot(v) {
        put_at(planes, k, b, code);
    }
}

/// Stores `code` at chunk `k`, bit `b` of the three planes.
#[inline(always)]
fn put_at(planes: &mut [Legal; 3], k: usize, b: u16, code: u8) {
    for (n, plane) in planes.iter_mut().enumerate() {
        let on = u16::from((code >> (2 - n)) & 1);
        plane.0[k] = (plane.0[k] & !b) | (b & 0u16.wrapping_sub(on));
    }
}

/// State `code` brought to `n` outstanding instances, as the LAPIC counts
/// them: EOIs the map did not see retire the oldest; instances it never saw
/// are adopted in front as needing their EOI.
fn sync_code(code: u8, n: u8) -> u8 {
    let mut i = Inst::from_code(code);
    while i.n > n {
        i.pop();
    }
    while i.n < n {
        i.push_front_unknown();
    }
    i.code()
}

/// Per state code ([`Inst::code`]): the instances outstanding.
const COUNT: [u8; 8] = [0, 1, 1, 2, 2, 2, 2, 0];
/// Per state code: the code once the oldest instance retires.
const POP: [u8; 8] = [0, 0, 0, 1, 1, 2, 2, 0];
/// Per need (not needed, needed) and state code: the code once a newer
/// instance arrives (a third one cannot exist: it merges into the newest).
const PUSH: [[u8; 8]; 2] = [[1, 3, 4, 3, 4, 5, 6, 1], [2, 5, 6, 5, 6, 5, 6, 2]];
/// Per need and state code: the code once an acceptance coalesces into the
/// newest instance's IRR bit (with none outstanding, it is pushed).
const MERGE: [[u8; 8]; 2] = [[1, 1, 2, 3, 4, 5, 6, 1], [2, 2, 2, 5, 6, 5, 6, 2]];
/// Bit `c` set: an outstanding instance of state code `c` needs its EOI
/// (codes 2, 4, 5 and 6).
const NEEDS: u8 = 0b0111_0100;

/// `Exact`'s live bookkeeping: the routes to this vCPU and the instance
/// states, legal vectors only, in 15 chunks of 16 vectors (120 bytes).
///
/// A chunk is one `u64` holding four 16-bit planes: bits 0-15 the routes
/// (counted, unmasked entries that target this vCPU), bits 16-31, 32-47 and
/// 48-63 bits 2, 1 and 0 of each vector's [`Inst::code`]. One load brings a
/// vector's route and state together, a multiply gathers them into a nibble
/// (see [`Packed::nibble`]) that indexes the transition tables, and the
/// planes stay whole 16-bit words for the bitmap, which is bitwise per chunk.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub(super) struct Packed {
    chunks: [u64; 15],
}

/// The bits of a vector's three state planes, at its offset 0.
const PLANE_BITS: u64 = 1 << 16 | 1 << 32 | 1 << 48;

/// Per state code: its three bits placed in the planes, at offset 0.
const SPREAD: [u64; 8] = {
    let mut t = [0u64; 8];
    let mut c = 0;
    while c < 8 {
        t[c] = ((c as u64 >> 2) & 1) << 16 | ((c as u64 >> 1) & 1) << 32 | (c as u64 & 1) << 48;
        c += 1;
    }
    t
};

/// Gathers bits 0, 16, 32 and 48 (route, code bits 2, 1, 0) into bits 51,
/// 50, 49 and 48 of the product: the partial products land on distinct bits,
/// so no carry disturbs them.
const GATHER: u64 = 1 << 51 | 1 << 34 | 1 << 17 | 1;

/// Per nibble (route << 3 | code): whether EOIs of the vector exit (routed
/// here, or an outstanding instance needs its EOI).
const EXITS: u16 = 0xFF00 | NEEDS as u16;

impl Packed {
    pub(super) const EMPTY: Packed = Packed { chunks: [0; 15] };

    /// The chunk and offset of a legal vector (`None` for 0-15).
    #[inline(always)]
    fn at(v: Vector) -> Option<(usize, u32)> {
        let v = v.get();
        (v >= 16).then(|| (usize::from(v / 16) - 1, u32::from(v % 16)))
    }

    /// Route << 3 | state code of the vector at chunk `k`, offset `o`: one
    /// load, a mask and a multiply.
    #[inline(always)]
    fn nibble(&self, k: usize, o: u32) -> u8 {
        let x = (self.chunks[k] >> o) & (PLANE_BITS | 1);
        (x.wrapping_mul(GATHER) >> 48) as u8 & 0xF
    }

    /// Stores state `code` at chunk `k`, offset `o` (the route is kept).
    #[inline(always)]
    fn put_at(&mut self, k: usize, o: u32, code: u8) {
        let c = &mut self.chunks[k];
        *c = (*c & !(PLANE_BITS << o)) | SPREAD[usize::from(code & 7)] << o;
    }

    /// The state code of `v` (0 for an illegal vector).
    #[inline]
    fn code(&self, v: Vector) -> u8 {
        Self::at(v).map_or(0, |(k, o)| self.nibble(k, o) & 7)
    }

    #[inline]
    fn get(&self, v: Vector) -> Inst {
        Inst::from_code(self.code(v))
    }

    #[inline]
    fn put(&mut self, v: Vector, i: Inst) {
        if let Some((k, o)) = Self::at(v) {
            self.put_at(k, o, i.code());
        }
    }

    /// Plane `n` (0 routes, 1-3 code bits 2, 1, 0) of chunk `k`.
    #[inline(always)]
    fn plane(&self, k: usize, n: u32) -> u16 {
        (self.chunks[k] >> (16 * n)) as u16
    }

    /// The routes: counted, unmasked entries that target this vCPU (their
    /// vectors 16-255: an illegal vector is never accepted, so its EOI
    /// never comes).
    #[inline]
    pub(super) fn routed(&self) -> Legal {
        Legal(core::array::from_fn(|k| self.plane(k, 0)))
    }

    /// Replaces the routes (the instance states are kept).
    #[inline]
    pub(super) fn set_routes(&mut self, r: &Legal) {
        for (c, &w) in self.chunks.iter_mut().zip(&r.0) {
            *c = (*c & !0xFFFF) | u64::from(w);
        }
    }

    /// Routes `v` here or not.
    #[inline]
    pub(super) fn route(&mut self, v: Vector, on: bool) {
        if let Some((k, o)) = Self::at(v) {
            let c = &mut self.chunks[k];
            *c = (*c & !(1 << o)) | u64::from(on) << o;
        }
    }

    /// Routes `v` here or not; returns whether that changed whether EOIs of
    /// `v` exit (the RTC aside). One load and one store.
    #[inline(always)]
    pub(super) fn reroute(&mut self, v: Vector, on: bool) -> bool {
        let Some((k, o)) = Self::at(v) else {
            return false;
        };
        let nib = self.nibble(k, o);
        let c = &mut self.chunks[k];
        *c = (*c & !(1 << o)) | u64::from(on) << o;
        let after = nib & 7 | u8::from(on) << 3;
        (EXITS >> nib) & 1 != (EXITS >> after) & 1
    }

    /// Whether the routes are exactly the legal vectors of `s`.
    #[inline(always)]
    pub(super) fn routes_same_as(&self, s: &VectorSet) -> bool {
        self.routed().same_as(s)
    }

    /// Whether EOIs of `v` exit (the RTC aside): routed here, or an
    /// outstanding instance needs its EOI. One load.
    #[inline(always)]
    pub(super) fn exits(&self, v: Vector) -> bool {
        Self::at(v).is_some_and(|(k, o)| (EXITS >> self.nibble(k, o)) & 1 != 0)
    }

    /// Vectors with an outstanding instance whose EOI is needed: codes 2, 4,
    /// 5, 6, i.e. `(a | b) & !c | a & (b ^ c)`.
    #[inline]
    pub(super) fn needed_in_flight(&self) -> VectorSet {
        Legal(core::array::from_fn(|k| {
            let (a, b, c) = (self.plane(k, 1), self.plane(k, 2), self.plane(k, 3));
            ((a | b) & !c) | (a & (b ^ c))
        }))
        .set_of()
    }

    /// The vectors whose EOIs exit (the RTC aside): routed here or needed
    /// in flight, chunk by chunk.
    #[inline]
    pub(super) fn exit_set(&self) -> VectorSet {
        Legal(core::array::from_fn(|k| {
            let (a, b, c) = (self.plane(k, 1), self.plane(k, 2), self.plane(k, 3));
            self.plane(k, 0) | ((a | b) & !c) | (a & (b ^ c))
        }))
        .set_of()
    }

    /// Every outstanding instance of `v` needs its EOI.
    pub(super) fn need_all(&mut self, v: Vector) {
        let mut i = self.get(v);
        i.old = i.n >= 1;
        i.new = i.n == 2;
        self.put(v, i);
    }

    /// Records an acceptance; returns whether EOIs of its vector exited
    /// before it and whether they do after it (the RTC aside).
    ///
    /// Before the acceptance, the queue is brought in line with the LAPIC:
    /// the instances before this one are the IRR+ISR count, minus this one
    /// unless it merged into an existing IRR bit. Then the instance is
    /// pushed, or merged into the newest one when it coalesced. One load
    /// and one store of the vector's chunk; the common transitions are
    /// table lookups.
    #[inline(always)]
    pub(super) fn on_accept(&mut self, apic: &LocalApic, a: Accepted) -> (bool, bool) {
        let v = a.vector;
        let Some((k, o)) = Self::at(v) else {
            // An illegal vector is never accepted by a LAPIC; nothing to track.
            return (false, false);
        };
        let lapic = u8::from(apic.irr().contains(v)) + u8::from(apic.isr().contains(v));
        let before = lapic.saturating_sub(u8::from(!a.coalesced));
        let nib = self.nibble(k, o);
        let code = nib & 7;
        let synced = if COUNT[usize::from(code)] == before {
            code
        } else {
            sync_code(code, before)
        };
        let need = usize::from(a.source != Source::Plain);
        let new = if a.coalesced {
            MERGE[need][usize::from(synced)]
        } else {
            PUSH[need][usize::from(synced)]
        };
        self.put_at(k, o, new);
        ((EXITS >> nib) & 1 != 0, (EXITS >> (nib & 8 | new)) & 1 != 0)
    }

    /// Brings the instance queue of `v` in line with the LAPIC, where `extra`
    /// instances in the LAPIC are ones the caller is about to report.
    ///
    /// EOIs the map did not see (not intercepted) retire only instances that
    /// did not need their EOI, oldest first. Instances the LAPIC holds that
    /// the map never saw are adopted as needing their EOI: nothing the map
    /// can read proves them edge. TMR does not (an edge acceptance that
    /// coalesces into a level instance's IRR bit clears it), and neither do
    /// the entries (one may have been rewritten while the instance was in
    /// flight). The cost is one exit per such instance, once.
    #[inline(always)]
    pub(super) fn sync_instances(&mut self, apic: &LocalApic, v: Vector, extra: u8) {
        let Some((k, o)) = Self::at(v) else {
            return;
        };
        let lapic = u8::from(apic.irr().contains(v)) + u8::from(apic.isr().contains(v));
        let lapic = lapic.saturating_sub(extra);
        let code = self.nibble(k, o) & 7;
        if COUNT[usize::from(code)] != lapic {
            self.put_at(k, o, sync_code(code, lapic));
        }
    }

    /// A guest EOI of `v`, which the LAPIC (`apic`, after the EOI) has
    /// already retired. `None` when it does not exit: not routed here, no
    /// outstanding instance needs it, and it is not the owed RTC EOI
    /// (`rtc`). Otherwise the queue of `v` is brought in line with the
    /// LAPIC, as [`Packed::sync_instances`] does, and the answer is whether
    /// EOIs of `v` are still needed (routed here or needed in flight).
    ///
    /// The hot path of every guest EOI: one load of the vector's chunk
    /// serves the interception test and the queue update, and the common
    /// case (the map knew one more instance than the LAPIC now holds) is one
    /// table pop and one store.
    #[inline(always)]
    pub(super) fn on_eoi(&mut self, apic: &LocalApic, v: Vector, rtc: bool) -> Option<bool> {
        let Some((k, o)) = Self::at(v) else {
            // Vectors 0-15 are never accepted, so no instance is tracked.
            return rtc.then_some(false);
        };
        let nib = self.nibble(k, o);
        if !rtc && (EXITS >> nib) & 1 == 0 {
            return None;
        }
        let code = nib & 7;
        let lapic = u8::from(apic.irr().contains(v)) + u8::from(apic.isr().contains(v));
        let n = COUNT[usize::from(code)];
        let new = if n == lapic {
            code
        } else {
            let new = if n == lapic + 1 {
                POP[usize::from(code)]
            } else {
                // A mismatch the EOI alone does not explain: the general
                // rule.
                sync_code(code, lapic)
            };
            self.put_at(k, o, new);
            new
        };
        Some((EXITS >> (nib & 8 | new)) & 1 != 0)
    }

    /// The saved form.
    pub(super) fn tracking(&self) -> ExactTracking {
        let mut t = ExactTracking {
            routed: self.routed().set_of(),
            ..ExactTracking::EMPTY
        };
        let occupied = Legal(core::array::from_fn(|k| {
            self.plane(k, 1) | self.plane(k, 2) | self.plane(k, 3)
        }));
        for v in occupied.set_of().iter() {
            let i = self.get(v);
            t.inst_one.set(v, i.n >= 1);
            t.inst_two.set(v, i.n == 2);
            t.need_old.set(v, i.n >= 1 && i.old);
            t.need_new.set(v, i.n == 2 && i.new);
        }
        t
    }

    /// From the saved form (validated: `inst_two ⊆ inst_one`, needs within).
    pub(super) fn from_tracking(t: &ExactTracking) -> Packed {
        let mut p = Packed::EMPTY;
        p.set_routes(&Legal::from_set(&t.routed));
        for v in t.inst_one.iter() {
            let i = Inst {
                n: 1 + u8::from(t.inst_two.contains(v)),
                old: t.need_old.contains(v),
                new: t.need_new.contains(v),
            };
            p.put(v, i);
        }
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The EOI fast path's tables say what `Inst` says, for every state code.
    #[test]
    fn state_code_tables_agree_with_the_instance_queue() {
        for c in 0..8u8 {
            let i = Inst::from_code(c);
            assert_eq!(COUNT[usize::from(c)], i.n, "count of code {c}");
            let needs = (i.n >= 1 && i.old) || (i.n == 2 && i.new);
            assert_eq!((NEEDS >> c) & 1 != 0, needs, "needs of code {c}");
            if i.n >= 1 {
                let mut p = i;
                p.pop();
                assert_eq!(POP[usize::from(c)], p.code(), "pop of code {c}");
            }
            for need in [false, true] {
                let mut p = i;
                p.push(need);
                assert_eq!(
                    PUSH[usize::from(need)][usize::from(c)],
                    p.code(),
                    "push {need} onto {c}"
                );
                let mut m = i;
                match m.n {
                    2 => m.new |= need,
                    1 => m.old |= need,
                    _ => m.push(need),
                }
                assert_eq!(
                    MERGE[usize::from(need)][usize::from(c)],
                    m.code(),
                    "merge {need} into {c}"
                );
            }
        }
    }
}
