//! The bitmap inclusion check: [`NESTED`], [`Lockstep`], [`InclusionGap`].

use eoi_exit::Policy;
use eoi_exit::Vector;
use eoi_exit::{Pin, VcpuId};

use super::{Harness, HarnessConfig, Op, RTC_PIN, Violation};

/// The policies whose bitmaps must nest: `Exact ⊆ KvmHighestStale ⊆ KvmLegacy`.
pub const NESTED: [Policy; 3] = [Policy::Exact, Policy::KvmHighestStale, Policy::KvmLegacy];

/// Three Irqchips fed the same ops, one per policy of [`NESTED`], each under
/// its own [`Harness`]; after every op the bitmaps must nest.
pub struct Lockstep<const VCPUS: usize, const PINS: usize = 24> {
    /// `Exact`, `KvmHighestStale`, `KvmLegacy`, in that order.
    pub harnesses: [Harness<VCPUS, PINS>; 3],
}

impl<const VCPUS: usize, const PINS: usize> Lockstep<VCPUS, PINS> {
    /// Three harnesses from `base` with the policies of [`NESTED`], each
    /// programmed with `entries`.
    pub fn new(base: HarnessConfig, entries: &[u64]) -> Self {
        Lockstep {
            harnesses: NESTED.map(|p| {
                let mut c = base;
                c.chip.policy = p;
                Harness::with_entries(c, entries)
            }),
        }
    }

    /// Applies `op` to all three, then checks inclusion.
    pub fn step(&mut self, op: Op) -> Result<(), Violation> {
        for h in self.harnesses.iter_mut() {
            h.step(op)?;
        }
        self.check_inclusion()
    }

    /// Applies every op; the first violation and its op index.
    pub fn run(&mut self, ops: &[Op]) -> Result<(), (usize, Violation)> {
        for (i, op) in ops.iter().enumerate() {
            self.step(*op).map_err(|v| (i, v))?;
        }
        Ok(())
    }

    /// `Exact ⊆ KvmHighestStale ⊆ KvmLegacy` on every vCPU, except for the
    /// gaps [`Lockstep::explain`] accounts for (unless `strict`).
    pub fn check_inclusion(&self) -> Result<(), Violation> {
        self.check_inclusion_with(false)
    }

    /// As [`check_inclusion`](Self::check_inclusion); `strict` reports every gap.
    pub fn check_inclusion_with(&self, strict: bool) -> Result<(), Violation> {
        for c in 0..VCPUS {
            for k in 0..2 {
                if !strict && self.diverged(k, k + 1) {
                    // Different interception changed what the I/O APIC or
                    // the LAPICs saw (a forwarded EOI cleared a remote IRR
                    // and re-delivered): the histories are no longer the
                    // same, so inclusion is not expected.
                    continue;
                }
                let lo = self.harnesses[k].bitmap(c);
                let hi = self.harnesses[k + 1].bitmap(c);
                for v in lo.difference(&hi).iter() {
                    if strict || self.explain(k + 1, c, v).is_none() {
                        return Err(Violation::Inclusion {
                            vcpu: c as u16,
                            vector: v.get(),
                            lower: NESTED[k],
                            upper: NESTED[k + 1],
                        });
                    }
                }
            }
        }
        Ok(())
    }

    /// Whether harnesses `a` and `b` no longer hold the same I/O APIC and
    /// LAPIC interrupt state (their interception differed in a way the guest
    /// or the devices could observe).
    pub fn diverged(&self, a: usize, b: usize) -> bool {
        let (x, y) = (&self.harnesses[a], &self.harnesses[b]);
        if x.chip.ioapic().entries() != y.chip.ioapic().entries() {
            return true;
        }
        (0..VCPUS).any(|c| {
            let (p, q) = (x.vstate(c), y.vstate(c));
            p.apic.irr() != q.apic.irr() || p.apic.isr() != q.apic.isr()
        })
    }

    /// Why harness `upper` (1 = `KvmHighestStale`, 2 = `KvmLegacy`) lacks
    /// vector `v` on vCPU `c` that the policy below it has, if the reason is
    /// a known one.
    pub fn explain(&self, upper: usize, c: usize, v: Vector) -> Option<InclusionGap> {
        let h = &self.harnesses[upper];
        let probe = h.fork();
        probe
            .chip
            .rescan(VcpuId::new(c as u16), &mut eoi_exit::Effects::new());
        if probe.bitmap(c).contains(v) {
            return Some(InclusionGap::NotRescanned);
        }
        let apic = h.vstate(c).apic;
        let pending = apic.irr().contains(v) || apic.isr().contains(v);
        let in_entry = h
            .chip
            .ioapic()
            .entries()
            .iter()
            .enumerate()
            .any(|(pin, e)| {
                e.vector() == v && {
                    // KVM's scan counts level entries, ack-notifier pins
                    // and the RTC pin.
                    e.is_level()
                        || super::config::notified(&h.config.chip, Pin::new(pin as u8))
                        || (h.config.chip.rtc_tracking && pin == RTC_PIN as usize)
                }
            });
        (pending && !in_entry).then_some(InclusionGap::InFlightVectorInNoEntry)
    }
}

/// Known reasons why `Exact ⊆ KvmHighestStale ⊆ KvmLegacy` fails.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum InclusionGap {
    /// The upper policy has not rescanned this vCPU since the vector became
    /// pending here: a rescan now would add it. `KvmHighestStale` rescans on
    /// the EOI of its highest stale vector and then sees, as stale, a vector
    /// another source (an MSI, an IPI, an edge entry) made pending after
    /// `KvmLegacy`'s last scan of that vCPU.
    NotRescanned,
    /// The vector is pending (IRR or ISR) here but no counted entry (level,
    /// ack notifier, RTC) has it any more, so KVM's scan cannot see it:
    /// `Exact` keeps intercepting an in-flight instance whose entry's vector
    /// was rewritten, or a level MSI (which `Exact` treats as needing its EOI).
    InFlightVectorInNoEntry,
}
