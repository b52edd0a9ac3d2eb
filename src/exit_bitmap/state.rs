//! [`EoiExitMapState`]: the saved state of an [`EoiExitMap`], beside it.

use super::exact::Packed;
use super::{Book, EoiExitMap, ExactTracking, Header, PolicyState, Saved, line_aware};
use crate::snapshot::{LocalApicState, SNAPSHOT_VERSION, SnapshotError, check_version};
use crate::vector::{Vector, VectorSet};

/// Everything an [`EoiExitMap`] holds, as plain data.
///
/// The policy's own bookkeeping is an opaque [`PolicyState`]: a state cannot
/// carry another policy's fields, and what each policy remembers is not API.
/// [`EoiExitMap::from_state`] validates the whole state first.
///
/// # Without serde
///
/// A VMM that persists snapshots in its own format, without the `serde`
/// feature, cannot write `policy` field by field. It does not need to: it
/// saves each vCPU's [`LocalApicState`] and the [`IoapicState`](crate::ioapic::IoapicState)
/// (whose fields are public), both taken from one
/// [`Irqchip::state`](crate::Irqchip::state) (under `LineAware` it settles in
/// its copy what the live chip settles at a vCPU's next exit; the copies
/// `Irqchip::ioapic` and `Irqchip::vcpu` return are the live chip), and on
/// restore gives every vCPU a fresh map,
/// `EoiExitMap::new(config.policy).state()`, in the
/// [`IrqchipState`](crate::irqchip::IrqchipState) it passes to
/// [`Irqchip::from_state`](crate::Irqchip::from_state) (or
/// [`Irqchip::restore`](crate::Irqchip::restore)), then calls
/// [`Irqchip::rescan`](crate::Irqchip::rescan) for every vCPU. The rescan
/// rebuilds each map from the redirection table and the LAPIC, as KVM's own
/// restore does: routed vectors from the table, in-flight instances (IRR,
/// ISR) adopted as needing their EOI, so no level EOI is lost. What it cannot
/// rebuild is the RTC EOI a vCPU owes: keep `rtc_owed` (a public field) and
/// put it back in the fresh map state with its vector in `bitmap`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct EoiExitMapState {
    /// [`SNAPSHOT_VERSION`].
    pub version: u16,
    /// The bitmap the hardware must use. Under `Exact` it follows from the
    /// bookkeeping (routes, needed instances, the RTC EOI owed) and must
    /// agree with it.
    pub bitmap: VectorSet,
    /// VMCS words changed since the last `take_vmcs_update` (bit `n` = word
    /// `n`): the pending VMCS update. A fresh VMCS needs all of `bitmap`.
    pub dirty: u8,
    /// The RTC vector whose EOI this vCPU owes.
    pub rtc_owed: Option<Vector>,
    /// The policy and its bookkeeping.
    pub policy: PolicyState,
}

impl EoiExitMapState {
    /// The policy.
    pub(crate) const fn policy(&self) -> crate::Policy {
        self.policy.policy()
    }

    /// Checks everything [`EoiExitMap::from_state`] checks (the checks against
    /// a LAPIC are `validate_with`): the version,
    /// `NoIntercept` intercepting nothing, and `Exact`'s instance queues being
    /// well formed.
    pub(crate) fn validate(&self) -> Result<(), SnapshotError> {
        check_version(self.version)?;
        match &self.policy.0 {
            Saved::NoIntercept => {
                if let Some(v) = self.bitmap.lowest() {
                    Err(SnapshotError::inconsistent(
                        Some(v.get()),
                        "a NoIntercept map with a non-empty bitmap",
                    ))
                } else if let Some(v) = self.rtc_owed {
                    Err(SnapshotError::inconsistent(
                        Some(v.get()),
                        "a NoIntercept map owing an RTC EOI",
                    ))
                } else {
                    Ok(())
                }
            }
            Saved::Exact(x) => {
                x.validate()?;
                let mut derived = x.routed.union(&x.needed_in_flight());
                if let Some(v) = self.rtc_owed {
                    derived.insert(v);
                }
                match derived
                    .difference(&self.bitmap)
                    .union(&self.bitmap.difference(&derived))
                    .lowest()
                {
                    Some(v) => Err(SnapshotError::inconsistent(
                        Some(v.get()),
                        "Exact: the bitmap disagrees with the routes, the needed instances and the RTC EOI owed",
                    )),
                    None => Ok(()),
                }
            }
            Saved::LineAware(t) => {
                let mut derived = t.routed.union(&t.eager);
                if let Some(v) = self.rtc_owed {
                    derived.insert(v);
                }
                let legal = VectorSet::from_u64_words([!0xFFFF, !0, !0, !0]);
                if let Some(v) = derived.difference(&legal).lowest() {
                    Err(SnapshotError::inconsistent(
                        Some(v.get()),
                        "LineAware: an illegal vector (0-15) is routed or tracked (no LAPIC accepts it)",
                    ))
                } else if let Some(v) = derived
                    .difference(&self.bitmap)
                    .union(&self.bitmap.difference(&derived))
                    .lowest()
                {
                    Err(SnapshotError::inconsistent(
                        Some(v.get()),
                        "LineAware: the bitmap disagrees with the routes, the eager instances and the RTC EOI owed",
                    ))
                } else {
                    Ok(())
                }
            }
            _ => Ok(()),
        }
    }

    /// [`validate`](Self::validate), plus the checks against the vCPU's
    /// LAPIC: under `Exact`, a vector whose EOI is intercepted and whose
    /// tracked instance needs that EOI must be pending or in service (its EOI
    /// would have retired the instance). (A needed instance whose vector is
    /// *not* intercepted may be stale: the map learns of unintercepted EOIs
    /// lazily.)
    pub(crate) fn validate_with(&self, apic: &LocalApicState) -> Result<(), SnapshotError> {
        self.validate()?;
        if let Saved::Exact(x) = &self.policy.0 {
            let orphan = x
                .needed_in_flight()
                .intersection(&self.bitmap)
                .difference(&apic.irr.union(&apic.isr));
            if let Some(v) = orphan.lowest() {
                return Err(SnapshotError::inconsistent(
                    Some(v.get()),
                    "Exact: an intercepted instance that needs its EOI is neither in IRR nor in ISR",
                ));
            }
        }
        Ok(())
    }
}

impl ExactTracking {
    fn validate(&self) -> Result<(), SnapshotError> {
        let tracking = |set: VectorSet, what| match set.lowest() {
            Some(v) => Err(SnapshotError::inconsistent(Some(v.get()), what)),
            None => Ok(()),
        };
        let illegal = VectorSet::from_u64_words([0xffff, 0, 0, 0]);
        tracking(
            [
                self.routed,
                self.inst_one,
                self.inst_two,
                self.need_old,
                self.need_new,
            ]
            .iter()
            .fold(VectorSet::EMPTY, |acc, s| acc.union(s))
            .intersection(&illegal),
            "Exact: an illegal vector (0-15) is routed or tracked (no LAPIC accepts it)",
        )?;
        tracking(
            self.inst_two.difference(&self.inst_one),
            "Exact: a second instance without a first",
        )?;
        tracking(
            self.need_old.difference(&self.inst_one),
            "Exact: an untracked instance needs its EOI",
        )?;
        tracking(
            self.need_new.difference(&self.inst_two),
            "Exact: an untracked second instance needs its EOI",
        )
    }
}

impl EoiExitMap {
    /// The whole state, as plain data.
    pub fn state(&self) -> EoiExitMapState {
        let policy = match &self.book {
            Book::Kvm {
                highest_stale: false,
                scan,
                ..
            } => Saved::KvmLegacy(*scan),
            Book::Kvm { scan, .. } => Saved::KvmHighestStale(*scan),
            Book::TmrDriven { adopted_level, .. } => Saved::TmrDriven {
                adopted_level: *adopted_level,
            },
            Book::Exact { x, .. } => Saved::Exact(x.tracking()),
            Book::NoIntercept { .. } => Saved::NoIntercept,
            Book::LineAware { x, .. } => Saved::LineAware(x.tracking()),
        };
        let hdr = self.book.hdr();
        EoiExitMapState {
            version: SNAPSHOT_VERSION,
            bitmap: self.bitmap(),
            dirty: hdr.dirty,
            rtc_owed: hdr.rtc_owed,
            policy: PolicyState(policy),
        }
    }

    /// A new map equal to the saved one, policy included (check
    /// `s.policy.policy()` first if the map must keep its policy: switching
    /// policy is a new map and a rescan, not a restore). To restore in place,
    /// assign: `map = EoiExitMap::from_state(&s)?`.
    pub fn from_state(s: &EoiExitMapState) -> Result<Self, SnapshotError> {
        s.validate()?;
        let mut m = EoiExitMap::new(s.policy());
        m.set_state(s);
        Ok(m)
    }

    /// KVM import: the RTC EOI this vCPU owes, recovered from the LAPIC as
    /// KVM's `kvm_rtc_eoi_tracking_restore_one` does (the next scan sets its
    /// bit).
    #[cfg_attr(not(feature = "kvm"), allow(dead_code))]
    pub(crate) fn set_rtc_owed(&mut self, v: Option<Vector>) {
        if !matches!(self.book, Book::NoIntercept { .. }) {
            let before = self.bitmap();
            self.book.hdr_mut().rtc_owed = v;
            self.mark(&before);
        }
    }

    /// Loads a state the caller validated.
    pub(crate) fn set_state(&mut self, s: &EoiExitMapState) {
        let hdr = Header {
            dirty: s.dirty & 0xf,
            rtc_owed: s.rtc_owed,
        };
        self.book = match &s.policy.0 {
            Saved::KvmLegacy(scan) | Saved::KvmHighestStale(scan) => Book::Kvm {
                hdr,
                highest_stale: matches!(s.policy.0, Saved::KvmHighestStale(_)),
                bitmap: s.bitmap,
                scan: *scan,
            },
            Saved::TmrDriven { adopted_level } => Book::TmrDriven {
                hdr,
                bitmap: s.bitmap,
                adopted_level: *adopted_level,
            },
            Saved::Exact(x) => Book::Exact {
                hdr,
                x: Packed::from_tracking(x),
            },
            Saved::NoIntercept => Book::NoIntercept { hdr },
            Saved::LineAware(t) => Book::LineAware {
                hdr,
                x: line_aware::Packed::from_tracking(t),
            },
        };
    }
}
