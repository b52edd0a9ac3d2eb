//! `Exact`'s instance tracking.
//!
//! A vector has at most two outstanding instances on one vCPU: one in ISR
//! and a newer one in IRR. For each, the map remembers whether its EOI is
//! needed (it came from a level entry, an ack-notifier pin or the RTC). EOIs
//! the hardware did not intercept are learnt lazily, by comparing the queue
//! with the LAPIC's IRR and ISR.

use super::{Accepted, ExactTracking, Source};
use crate::lapic::LocalApic;
use crate::vector::{Vector, VectorSet};

impl ExactTracking {
    /// Nothing routed, nothing in flight.
    pub const EMPTY: Self = ExactTracking {
        routed: VectorSet::EMPTY,
        inst_one: VectorSet::EMPTY,
        inst_two: VectorSet::EMPTY,
        need_old: VectorSet::EMPTY,
        need_new: VectorSet::EMPTY,
    };

    /// Vectors with an outstanding instance whose EOI is needed.
    #[inline]
    pub fn needed_in_flight(&self) -> VectorSet {
        self.need_old
            .intersection(&self.inst_one)
            .union(&self.need_new.intersection(&self.inst_two))
    }

    /// Records an acceptance; returns whether its EOI is needed (the caller
    /// then sets the vector's bit).
    pub(super) fn on_accept(&mut self, apic: &LocalApic, a: Accepted) -> bool {
        // Instances before this one: IRR+ISR count, minus this one unless it
        // merged into an existing IRR bit.
        self.sync_instances(apic, a.vector, if a.coalesced { 0 } else { 1 });
        let need = a.source != Source::Plain;
        let v = a.vector;
        if a.coalesced {
            // Merge into the newest instance.
            if self.inst_two.contains(v) {
                if need {
                    self.need_new.insert(v);
                }
            } else if self.inst_one.contains(v) {
                if need {
                    self.need_old.insert(v);
                }
            } else {
                self.push_instance(v, need);
            }
        } else {
            self.push_instance(v, need);
        }
        need
    }

    fn push_instance(&mut self, v: Vector, need: bool) {
        if !self.inst_one.contains(v) {
            self.inst_one.insert(v);
            self.need_old.set(v, need);
            self.need_new.remove(v);
        } else {
            // A third instance cannot exist (IRR and ISR hold one each); if
            // the LAPIC says otherwise the sync step already shrank the queue.
            self.inst_two.insert(v);
            let keep = self.need_new.contains(v) && self.inst_two.contains(v);
            self.need_new.set(v, need || keep);
        }
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
    pub(super) fn sync_instances(&mut self, apic: &LocalApic, v: Vector, extra: u8) {
        let lapic = apic.irr().contains(v) as u8 + apic.isr().contains(v) as u8;
        let lapic = lapic.saturating_sub(extra);
        let mut known = self.inst_one.contains(v) as u8 + self.inst_two.contains(v) as u8;
        while known > lapic {
            self.pop_instance(v);
            known -= 1;
        }
        while known < lapic {
            // Unknown older instances: conservative.
            self.push_front_unknown(v, true);
            known += 1;
        }
    }

    fn push_front_unknown(&mut self, v: Vector, need: bool) {
        if !self.inst_one.contains(v) {
            self.inst_one.insert(v);
            self.need_old.set(v, need);
        } else {
            // The known one becomes the newer instance.
            self.inst_two.insert(v);
            let old = self.need_old.contains(v);
            self.need_new.set(v, old);
            self.need_old.set(v, need);
        }
    }

    /// Retires the oldest instance; returns whether it needed its EOI.
    fn pop_instance(&mut self, v: Vector) -> bool {
        if !self.inst_one.contains(v) {
            return false;
        }
        let needed = self.need_old.contains(v);
        if self.inst_two.remove(v) {
            let n = self.need_new.remove(v);
            self.need_old.set(v, n);
        } else {
            self.inst_one.remove(v);
            self.need_old.remove(v);
        }
        needed
    }
}
