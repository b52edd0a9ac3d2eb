//! What the VMM must do after an [`Ioapic`](super::Ioapic) call.

use crate::types::{Destination, Pin};

use super::pins::PinSet;

/// Which vCPUs need their EOI-exit bitmap rescanned after a redirection-entry
/// write (KVM's `kvm_make_scan_ioapic_request_mask` /
/// `kvm_make_scan_ioapic_request`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum Rescan {
    /// No rescan needed.
    #[default]
    None,
    /// Rescan the vCPUs that `old` matches and the vCPUs that `new` matches.
    ///
    /// After a redirection write, `old` is the entry's destination *before*
    /// the write, decoded with the destination mode it had before the write
    /// (KVM decodes it with the new mode, which misses the old targets when
    /// only the mode changes); it is `None` when the destination and mode did
    /// not change. `new` is the destination after the write.
    Targets {
        /// The previous destination (old ID, old mode), if it differs.
        old: Option<Destination>,
        /// The current destination.
        new: Option<Destination>,
    },
    /// Rescan every vCPU: the old or the new delivery mode is not Fixed
    /// (lowest priority, SMI, NMI, INIT, ExtInt, reserved), or the whole
    /// table changed (restore).
    All,
}

impl Rescan {
    /// Whether no rescan is needed.
    #[inline]
    pub(crate) const fn is_none(&self) -> bool {
        matches!(
            self,
            Rescan::None
                | Rescan::Targets {
                    old: None,
                    new: None
                }
        )
    }

    /// The union of two rescan requests. Two `Targets` that name more than two
    /// distinct destinations together become `All` (never loses a target).
    #[must_use]
    pub(crate) fn merge(self, other: Rescan) -> Rescan {
        match (self, other) {
            (Rescan::All, _) | (_, Rescan::All) => Rescan::All,
            (Rescan::None, x) | (x, Rescan::None) => x,
            (Rescan::Targets { old: a, new: b }, Rescan::Targets { old: c, new: d }) => {
                // Latest first, so `new` keeps the most recent destination.
                let mut out: [Option<Destination>; 2] = [None, None];
                let mut n = 0;
                for d in [d, c, b, a].into_iter().flatten() {
                    if out[..n].contains(&Some(d)) {
                        continue;
                    }
                    if n == 2 {
                        return Rescan::All;
                    }
                    out[n] = Some(d);
                    n += 1;
                }
                Rescan::Targets {
                    old: out[1],
                    new: out[0],
                }
            }
        }
    }
}

/// What the VMM must do after an [`Ioapic`](super::Ioapic) call.
///
/// The caller MUST act on every field, in this order:
///
/// 1. `route_changed`: a split-irqchip VMM MUST re-install that pin's GSI
///    route before it delivers anything through it: the
///    [`Msi::from_message`](crate::Msi::from_message) of its entry's
///    [`message`](super::RedirectionEntry::message) (level entries get the
///    trigger and assert bits, destination bits 14:8 go to address bits 11:5;
///    masked entries too, since the model never delivers a masked pin; no
///    route for a reserved delivery mode).
/// 2. `rescan`: the named vCPUs MUST rescan their EOI-exit bitmaps before they
///    next enter the guest (KVM handles `KVM_REQ_SCAN_IOAPIC` in
///    `vcpu_enter_guest` before injecting events).
/// 3. `deliver`: every pin in it MUST be delivered, as
///    its entry's [`message`](super::RedirectionEntry::message) describes it. The model has
///    already set remote IRR for the level-triggered ones; dropping one wedges
///    that pin until an EOI of its vector.
/// 4. `deliver_later`: EOI-storm throttle. For each pin, the VMM MUST call
///    [`Ioapic::deliver_later_elapsed`](super::Ioapic::deliver_later_elapsed)
///    after a delay (10 ms, KVM's `IOAPIC_RECV_DELAY`,
///    KVM's `HZ / 100`); otherwise the still-asserted line is never re-delivered.
#[must_use = "the VMM must deliver every pin in `deliver`, schedule `deliver_later`, apply `rescan` and re-install `route_changed`"]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct IoapicEffects {
    /// Pins whose interrupt MUST be delivered now.
    pub deliver: PinSet,
    /// Pins whose re-delivery was throttled after an EOI storm: call
    /// `deliver_later_elapsed(pin)` when the VMM's timer fires.
    pub deliver_later: PinSet,
    /// vCPUs whose EOI-exit bitmap must be rescanned.
    pub rescan: Rescan,
    /// The pin whose redirection entry was written (either half): a
    /// split-irqchip VMM re-installs its route.
    pub route_changed: Option<Pin>,
}

impl IoapicEffects {
    /// Nothing to do.
    pub(crate) const NONE: IoapicEffects = IoapicEffects {
        deliver: PinSet::EMPTY,
        deliver_later: PinSet::EMPTY,
        rescan: Rescan::None,
        route_changed: None,
    };

    /// Whether there is nothing to do.
    #[inline]
    pub(crate) const fn is_empty(&self) -> bool {
        self.deliver.is_empty()
            && self.deliver_later.is_empty()
            && self.rescan.is_none()
            && self.route_changed.is_none()
    }

    /// Folds `other` (a later call's actions) into `self`: pin sets are
    /// united, rescans merged (two [`Rescan::Targets`] that name more than
    /// two distinct destinations together become [`Rescan::All`]: no target
    /// is ever lost).
    ///
    /// `route_changed` holds one pin: if both name a pin and they differ, the
    /// later one (`other`'s) is kept and the earlier is lost. Only redirection
    /// writes set it (one pin each), so handle each MMIO write's actions
    /// before merging them with another write's.
    pub(crate) fn merge(&mut self, other: IoapicEffects) {
        self.deliver = self.deliver.union(&other.deliver);
        self.deliver_later = self.deliver_later.union(&other.deliver_later);
        self.rescan = self.rescan.merge(other.rescan);
        if other.route_changed.is_some() {
            self.route_changed = other.route_changed;
        }
    }
}

/// `a |= b`: the actions of `a` then `b`, for a caller that batches several
/// writes before it acts. `route_changed` holds one pin: if both name a pin
/// and they differ, `b`'s is kept, so handle each MMIO write's route change
/// before merging it with another write's.
impl core::ops::BitOrAssign for IoapicEffects {
    fn bitor_assign(&mut self, other: IoapicEffects) {
        self.merge(other);
    }
}
