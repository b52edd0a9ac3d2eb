//! `LineAware`'s bookkeeping.
//!
//! Per legal vector (16-255) the map keeps whether a route needs every EOI
//! (an ack-notifier or resample pin, the RTC), and one of six states of the
//! outstanding instances it has seen, in three bit planes. A lazy
//! instance's bit follows its line *as loaded at the vCPU's last VM entry*:
//! a change while the vCPU runs reaches the bitmap the VMM loads
//! ([`EoiExitMap::bitmap`]) at once, and what the guest's EOI does
//! ([`EoiExitMap::intercepts`]) at the next
//! [`EoiExitMap::take_vmcs_update`].
//!
//! | code | planes `a b c` | meaning | to load | EOI exits now |
//! |--:|---|---|---|---|
//! | 0 | `0 0 0` | no instance seen outstanding | no | no |
//! | 1 | `0 0 1` | a lazy level instance (or plain ones), line low | no | no |
//! | 2 | `0 1 0` | a lazy level instance, line asserted | yes | yes |
//! | 3 | `0 1 1` | line asserted while the vCPU ran (the race) | yes | not yet |
//! | 4 | `1 0 0` | an instance whose EOI is always needed (eager) | yes | yes |
//! | 5 | `1 0 1` | line deasserted while the vCPU ran | no | until loaded |
//!
//! Loading turns 3 into 2 and 5 into 1.
//!
//! [`EoiExitMap::intercepts`]: super::EoiExitMap::intercepts Which instance is *lazy* (its remote IRR cleared later, by the
//! [`Irqchip`](crate::Irqchip), not by the EOI) only the chip knows: it
//! reports lazy instances as [`Source::Plain`] and sets the line state.
//!
//! [`EoiExitMap::bitmap`]: super::EoiExitMap::bitmap
//! [`EoiExitMap::take_vmcs_update`]: super::EoiExitMap::take_vmcs_update

use super::exact::{Legal, plane_code, plane_put};
use super::{Accepted, LineAwareTracking, Source};
use crate::lapic::LocalApic;
use crate::vector::{Vector, VectorSet};

/// The line state of a lazy instance, as the chip reports it.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Line {
    /// Deasserted (code 1): the EOI need not exit.
    Low,
    /// Asserted at this vCPU's last entry (code 2): the EOI exits.
    Asserted,
    /// Asserted while the vCPU ran with the bit clear (code 3): the bit is
    /// set at the next load, after the chip re-checked the instance.
    Raised,
}

/// `LineAware`'s live bookkeeping: 120 bytes, like `Exact`'s.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub(super) struct Packed {
    /// Counted, unmasked ack-notifier, resample and RTC entries that target
    /// this vCPU: every EOI of their vectors exits.
    pub(super) routed: Legal,
    planes: [Legal; 3],
}

const EAGER: u8 = 4;

impl Packed {
    pub(super) const EMPTY: Packed = Packed {
        routed: Legal::EMPTY,
        planes: [Legal::EMPTY; 3],
    };

    #[inline]
    fn code(&self, v: Vector) -> u8 {
        plane_code(&self.planes, v)
    }

    #[inline]
    fn put(&mut self, v: Vector, code: u8) {
        plane_put(&mut self.planes, v, code);
    }

    /// Vectors the next VMCS load must hold: codes 2, 3 and 4.
    #[inline]
    pub(super) fn loadable(&self) -> VectorSet {
        let [a, b, c] = &self.planes;
        Legal(core::array::from_fn(|i| b.0[i] | (a.0[i] & !c.0[i]))).set_of()
    }

    /// Vectors whose lazy instance's line is asserted (codes 2 and 3).
    #[inline]
    pub(super) fn held(&self) -> VectorSet {
        let [_, b, _] = &self.planes;
        b.set_of()
    }

    /// Whether an EOI of `v` exits with the VMCS as last loaded: routed, or
    /// codes 2, 4 and 5.
    #[inline]
    pub(super) fn exits(&self, v: Vector) -> bool {
        self.routed.contains(v) || matches!(self.code(v), 2 | EAGER | 5)
    }

    /// The VMCS was loaded: a raised bit (code 3) is now in it (code 2), a
    /// dropped one (code 5) out of it (code 1).
    #[inline]
    pub(super) fn loaded(&mut self) {
        let [a, b, c] = &mut self.planes;
        for i in 0..15 {
            a.0[i] &= !c.0[i];
            c.0[i] &= !b.0[i];
        }
    }

    /// Forgets `v`'s instances when the LAPIC holds none (retired by EOIs,
    /// intercepted or not), `extra` being instances about to be reported.
    #[inline]
    pub(super) fn sync(&mut self, apic: &LocalApic, v: Vector, extra: u8) {
        let lapic = u8::from(apic.irr().contains(v)) + u8::from(apic.isr().contains(v));
        if lapic <= extra && self.code(v) != 0 {
            self.put(v, 0);
        }
    }

    pub(super) fn on_accept(&mut self, apic: &LocalApic, a: Accepted) {
        self.sync(apic, a.vector, u8::from(!a.coalesced));
        let code = self.code(a.vector);
        let new = if a.source != Source::Plain {
            EAGER
        } else if code == 0 {
            1
        } else {
            code
        };
        self.put(a.vector, new);
    }

    /// The chip's line state for `v`'s lazy instance; nothing changes for an
    /// eager vector or one with no instance seen.
    pub(super) fn set_line(&mut self, v: Vector, line: Line) {
        let code = self.code(v);
        if matches!(code, 1..=3 | 5) {
            self.put(
                v,
                match (line, code) {
                    (Line::Low, 2) => 5,
                    (Line::Low, 3) => 1,
                    (Line::Low, c) => c,
                    (Line::Asserted, _) => 2,
                    (Line::Raised, 1) => 3,
                    // The VMCS still holds the bit: nothing to raise.
                    (Line::Raised, 5) => 2,
                    (Line::Raised, c) => c,
                },
            );
        }
    }

    /// Every EOI of `v`'s outstanding instances is needed from now on.
    pub(super) fn make_eager(&mut self, v: Vector) {
        self.put(v, EAGER);
    }

    /// A scan adopts instances the map never saw accepted (restored, planted)
    /// as eager: nothing tells whether they are lazy.
    pub(super) fn adopt(&mut self, apic: &LocalApic) {
        for v in apic.irr().union(apic.isr()).iter() {
            if self.code(v) == 0 {
                self.put(v, EAGER);
            }
        }
    }

    /// The saved form: every vector whose EOI exits or is about to is saved
    /// as eager, and lazy instances whose line is low are not saved at all:
    /// the chip's lazy ownership of a pin is not part of a snapshot, so a
    /// restored chip adopts every instance in flight as eager (one exit per
    /// instance, once).
    pub(super) fn tracking(&self) -> LineAwareTracking {
        LineAwareTracking {
            routed: self.routed.set_of(),
            eager: self.loadable(),
        }
    }

    pub(super) fn from_tracking(t: &LineAwareTracking) -> Packed {
        let mut p = Packed {
            routed: Legal::from_set(&t.routed),
            ..Packed::EMPTY
        };
        for v in t.eager.iter() {
            p.put(v, EAGER);
        }
        p
    }
}
