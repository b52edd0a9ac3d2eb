//! `LineAware`'s reference semantics for [`Harness`](super::Harness): the
//! same ops on an `Exact` chip, with the EOI broadcasts that reach its I/O
//! APIC late.
//!
//! Under `LineAware` a vCPU named in `Effects::exit` keeps running guest
//! code until the kick (an IPI) reaches it: it may take pending interrupts
//! and EOI them under the VMCS it last loaded, and an EOI of a lazy instance
//! whose line re-asserted then completes in hardware. The chip learns of it
//! at the vCPU's exit (`take_events`) or at an earlier event that settles
//! the pin (the line dropping, a write of the entry, another vCPU's EOI of
//! the vector...), and only then clears remote IRR and re-delivers. The
//! reference's EOI exits, and in a model that forwards it at once the
//! re-delivery would land in IRR while the guest runs on without it.
//!
//! That lag is not a difference the guest can rely on: on hardware (the SDM
//! and the 82093AA) the LAPIC's EOI broadcast is a message to the I/O APIC,
//! and the re-delivery another, each arriving some time later, while the
//! CPU executes on; under KVM the exit handler forwards it while devices
//! and other vCPUs act. So the reference here is `Exact` with each EOI that
//! the `LineAware` guest retired in the window *in flight*: the reference's
//! LAPIC retires it at once (ISR, PPR: what the guest's next instructions
//! see), and the broadcast reaches its I/O APIC at some point between that
//! EOI and the end of the op in which the vCPU's exit lands, the deadline
//! the chip's contract sets (`take_events` re-checks there). The checker
//! keeps every candidate timing still consistent with what the guest has
//! seen ([`References`]): after each op, a candidate survives if every
//! vCPU's IRR, ISR and TMR and every IOWIN read equal the `LineAware`
//! chip's; none surviving is a divergence. An EOI broadcast is delivered to
//! the reference's I/O APIC through the version-0x20 EOI register (the same
//! `eoi` of the entries the LAPIC broadcast reaches), so the reference's
//! I/O APIC is version 0x20 whatever the chip's; guest writes of that
//! register reach it only when the chip has one too.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::vec::Vec;

use eoi_exit::Irqchip;
use eoi_exit::ioapic::{IOEOI, IoapicVersion, MMIO_LEN};
use eoi_exit::irqchip::{Effects, EoiForwarding, VcpuState};
use eoi_exit::lapic::ApicMode;
use eoi_exit::{IrqchipConfig, Pin, Policy, VcpuId, VcpuSlot};

use super::harness::{Chip, fixed_msi};
use super::{Op, Violation};

/// EOI broadcasts a candidate may have in flight at once (more is a
/// [`Violation::CheckerCapacity`]).
const MAX_IN_FLIGHT: usize = 4;

/// An EOI broadcast of the reference that has not reached its I/O APIC:
/// `vcpu` retired `vector` in its race window.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub(super) struct InFlight {
    vector: u8,
    vcpu: u8,
}

/// One candidate: the reference chip and its EOI broadcasts in flight.
#[derive(Clone)]
pub(super) struct Reference<const VCPUS: usize, const PINS: usize> {
    pub(super) chip: Chip<VCPUS, PINS>,
    in_flight: heapless::Vec<InFlight, MAX_IN_FLIGHT>,
}

/// Every candidate reference still consistent with what the guest saw: one,
/// except inside race windows with a broadcast in flight.
#[derive(Clone)]
pub(super) struct References<const VCPUS: usize, const PINS: usize> {
    first: Reference<VCPUS, PINS>,
    /// Further candidates (empty almost always: cloning an empty `Vec`
    /// allocates nothing).
    more: Vec<Reference<VCPUS, PINS>>,
}

/// The reference's configuration: `Exact`, the chip's other settings, and
/// an I/O APIC with the EOI register (see the module docs).
pub(super) fn reference_config(chip: &IrqchipConfig) -> IrqchipConfig {
    let mut c = IrqchipConfig {
        policy: Policy::Exact,
        ..*chip
    };
    c.ioapic.version = IoapicVersion::V20;
    c
}

impl<const VCPUS: usize, const PINS: usize> Reference<VCPUS, PINS> {
    fn of(chip: Chip<VCPUS, PINS>) -> Self {
        Reference {
            chip,
            in_flight: heapless::Vec::new(),
        }
    }

    /// The broadcast of `m` reaches the I/O APIC.
    fn deliver(&self, m: InFlight) {
        self.chip
            .mmio_write(IOEOI, 4, u64::from(m.vector), &mut Effects::new());
    }

    /// The exits of `exits` land: each vCPU takes its non-vectored events
    /// (as the chip's does at `take_events`).
    fn take_events(&self, exits: &[bool; VCPUS]) {
        for c in (0..VCPUS).filter(|&c| exits[c]) {
            let _ = self
                .chip
                .take_events(VcpuId::new(c as u16), false, false, &mut Effects::new());
        }
    }

    /// Every timing of this candidate's broadcasts in flight, pushed to
    /// `out`: each arrives now or stays in flight, except that one whose
    /// vCPU's exit is in `exits` must arrive now; then those exits land
    /// (and with `load` every VMCS loads). Bit `i` of `now` set: broadcast
    /// `i` arrives now. The most arriving first, so the first candidate is
    /// what a reference that forwards every EOI at once has.
    fn split(&self, exits: &[bool; VCPUS], load: bool, out: &mut Vec<Self>) {
        let k = self.in_flight.len();
        for now in (0..1u32 << k).rev() {
            let mut r = Reference::of(self.chip.clone());
            let mut ok = true;
            for (i, m) in self.in_flight.iter().enumerate() {
                if now & 1 << i != 0 {
                    r.deliver(*m);
                } else {
                    ok &= !exits[m.vcpu as usize % VCPUS];
                    let _ = r.in_flight.push(*m);
                }
            }
            if ok {
                r.take_events(exits);
                if load {
                    r.load();
                }
                out.push(r);
            }
        }
    }

    /// Every vCPU loads its VMCS: under the reference semantics a necessary
    /// EOI exits the moment its bit is needed.
    fn load(&self) {
        for c in 0..VCPUS {
            let _ = self.chip.vmcs_update(VcpuId::new(c as u16));
        }
    }

    /// The guest on `c` EOIs. In the race window the LAPIC retires the
    /// vector and, if the reference's EOI would reach the I/O APIC, its
    /// broadcast is returned to put in flight; otherwise (or outside the
    /// window) the whole EOI, as `guest_eoi` does it.
    fn eoi(&self, c: usize, window: bool) -> Option<InFlight> {
        let id = VcpuId::new(c as u16);
        if window {
            let mut v = self.chip.vcpu(id).expect("in range");
            if let Some(e) = v.apic.eoi() {
                let exit = v.map.send_eoi(&v.apic, e.vector, e.level);
                let forwarded = exit.intercepted
                    && match self.chip.config().eoi_forwarding {
                        EoiForwarding::TmrLevel => e.broadcast,
                        // The harness runs `LineAware` under the SDM's rule
                        // only (`Harness::with_fresh_chip`).
                        _ => unreachable!("LineAware runs under TmrLevel"),
                    };
                let cfg = self.chip.config();
                let notified = cfg.ack_notifier_pins.union(&cfg.resample_pins);
                let acked = notified.iter().any(|p| {
                    self.chip
                        .ioapic()
                        .entry(p)
                        .is_some_and(|x| x.vector() == e.vector)
                });
                if forwarded && !acked && !exit.rescan {
                    // The LAPIC's part of `guest_eoi`, verbatim.
                    let events = self.chip.state::<Vec<VcpuState>>().vcpus[c].events;
                    let st = VcpuState {
                        apic: v.apic.state(),
                        map: v.map.state(),
                        stats: v.stats,
                        events,
                    };
                    self.chip
                        .load_vcpu(id, &st, &mut Effects::new())
                        .expect("a LAPIC and map changed by their own methods load");
                    return Some(InFlight {
                        vector: e.vector.get(),
                        vcpu: c as u8,
                    });
                }
            }
        }
        let _ = self.chip.guest_eoi(id, &mut Effects::new());
        None
    }

    /// `op` on this candidate's chip; the EOI broadcast it puts in flight.
    fn apply(&self, op: Op, window_eoi: bool, eoi_register: bool) -> Option<InFlight> {
        let r = &self.chip;
        let mut fx = Effects::new();
        let pin = |p: u8| Pin::new((p as usize % PINS) as u8);
        let vcpu = |c: u8| VcpuId::new((c as usize % VCPUS) as u16);
        match op {
            Op::Write { pin: p, field } => {
                let e = r.ioapic().entry(pin(p)).map_or(0, |e| e.0);
                r.write_entry(pin(p), field.apply(e), &mut fx);
            }
            Op::WriteEntry { pin: p, value } => r.write_entry(pin(p), value, &mut fx),
            Op::Mmio {
                offset,
                size,
                value,
            } => {
                let off = offset as u64 % MMIO_LEN;
                // The chip's I/O APIC has no EOI register: the write hits
                // nothing there either.
                if off != IOEOI || eoi_register {
                    r.mmio_write(off, size as u32, value as u64, &mut fx);
                }
            }
            Op::SetLine { pin: p, high } => r.set_line(pin(p), high, &mut fx),
            Op::Msi {
                dest,
                vector,
                level,
            } => r.send_msi(&fixed_msi(dest as u32, vector, level), &mut fx),
            Op::Accept { vcpu: c, vector } => {
                let id = r.vcpu(vcpu(c)).expect("in range").apic.id();
                r.send_msi(&fixed_msi(id.get(), vector, false), &mut fx);
            }
            Op::Ack { vcpu: c } => {
                let _ = r.ack(vcpu(c));
            }
            Op::Eoi { vcpu: c } => return self.eoi(c as usize % VCPUS, window_eoi),
            Op::Rescan { vcpu: c } => r.rescan(vcpu(c), &mut fx),
            Op::DeliverLater { pin: p } => r.deliver_later_elapsed(pin(p), &mut fx),
            Op::Ldr { .. } | Op::Ipi { .. } | Op::DirectedEoi { .. } | Op::Tpr { .. } => {
                if let Some((c, writes)) = op.lapic_writes() {
                    for w in writes.into_iter().flatten() {
                        r.write_lapic(vcpu(c), w, &mut fx);
                    }
                }
            }
            // Exits are the harness's; snapshots and restores rebuild the
            // reference with the chip.
            Op::Enter { .. } | Op::Exit { .. } | Op::Snapshot | Op::Restore | Op::Migrate => {}
            #[cfg(feature = "kvm")]
            Op::RestoreKvm | Op::MigrateKvm => {}
        }
        None
    }

    /// A key that tells candidates apart: 64 bits of their [`Hash`] and of
    /// every vCPU's whole state, the LAPIC (candidates not yet checked
    /// against the chip may differ there: a restore rebuilds them from
    /// their saved LAPICs) and its pending non-vectored events, which
    /// neither `LocalApicState` nor `Irqchip`'s `Hash` covers (a broadcast
    /// arriving before or after an entry's delivery mode changes latches an
    /// ExtINT or an INIT). The reference is `Exact`: its `state()` settles
    /// nothing.
    fn key(&self) -> u64 {
        let mut h = DefaultHasher::new();
        self.hash(&mut h);
        let st = self.chip.state::<Vec<VcpuState>>();
        for v in &st.vcpus {
            v.apic.hash(&mut h);
            v.events.hash(&mut h);
        }
        h.finish()
    }
}

impl<const VCPUS: usize, const PINS: usize> Hash for Reference<VCPUS, PINS> {
    /// The I/O APIC, the maps and the broadcasts in flight: not the LAPICs,
    /// which the same writes reach on both chips and whose IRR, ISR and TMR
    /// the checker holds equal to the chip's.
    fn hash<H: Hasher>(&self, h: &mut H) {
        self.chip.ioapic().hash(h);
        for c in 0..VCPUS {
            self.chip
                .vcpu(VcpuId::new(c as u16))
                .expect("in range")
                .map
                .hash(h);
        }
        self.in_flight.hash(h);
    }
}

impl<const VCPUS: usize, const PINS: usize> References<VCPUS, PINS> {
    /// A fresh reference for a `LineAware` chip of `config`.
    pub(super) fn new(config: &IrqchipConfig) -> Self {
        Self::of(Irqchip::new(
            reference_config(config),
            ApicMode::XApic,
            [const { VcpuSlot::new() }; VCPUS],
        ))
    }

    /// `chip` as the one candidate, its VMCS loaded.
    pub(super) fn of(chip: Chip<VCPUS, PINS>) -> Self {
        let r = References {
            first: Reference::of(chip),
            more: Vec::new(),
        };
        r.first.load();
        r
    }

    /// Every candidate loads its VMCS.
    pub(super) fn load(&self) {
        for r in self.iter() {
            r.load();
        }
    }

    /// Every candidate (the first one first).
    pub(super) fn iter(&self) -> impl Iterator<Item = &Reference<VCPUS, PINS>> {
        core::iter::once(&self.first).chain(&self.more)
    }

    /// The first candidate's chip (for setup that every candidate shares).
    pub(super) fn chip(&self) -> &Chip<VCPUS, PINS> {
        &self.first.chip
    }

    /// Replaces the candidates with `chips` (at least one), broadcasts
    /// delivered, duplicates dropped.
    pub(super) fn replace(&mut self, chips: impl IntoIterator<Item = Chip<VCPUS, PINS>>) {
        let mut all: Vec<_> = chips.into_iter().map(Reference::of).collect();
        for r in &all {
            r.load();
        }
        dedup(&mut all);
        let mut it = all.into_iter();
        self.first = it.next().expect("a candidate");
        self.more = it.collect();
    }

    /// Whether there is one candidate with nothing in flight (the common
    /// case, stepped in place).
    fn simple(&self) -> bool {
        self.more.is_empty() && self.first.in_flight.is_empty()
    }

    /// Whether some candidate has an EOI broadcast in flight.
    pub(super) fn in_flight(&self) -> bool {
        self.iter().any(|r| !r.in_flight.is_empty())
    }

    /// Every candidate, taken out of `self` (to step into new ones).
    fn take_all(&mut self) -> impl Iterator<Item = Reference<VCPUS, PINS>> + use<VCPUS, PINS> {
        let more = core::mem::take(&mut self.more);
        let first = core::mem::replace(&mut self.first.in_flight, heapless::Vec::new());
        let chip = self.first.chip.clone();
        core::iter::once(Reference {
            chip,
            in_flight: first,
        })
        .chain(more)
    }

    /// Puts the candidates `out` (at least one) in place.
    fn set(&mut self, out: Vec<Reference<VCPUS, PINS>>) {
        let mut it = out.into_iter();
        self.first = it
            .next()
            .expect("every broadcast may arrive at once: a timing survives");
        self.more = it.collect();
    }

    /// The first half of an op: the exits in `exits` land before it. Each
    /// broadcast in flight arrives now (it must, if its vCPU's exit is
    /// among them) or later, and then those vCPUs take their events.
    pub(super) fn before(&mut self, exits: &[bool; VCPUS]) {
        if self.simple() {
            self.first.take_events(exits);
            return;
        }
        let mut out = Vec::new();
        for cand in self.take_all() {
            cand.split(exits, false, &mut out);
        }
        self.set(out);
    }

    /// The second half: `op` on every candidate (a window EOI puts its
    /// broadcast in flight), then the exits in `exits` land. Each broadcast
    /// in flight arrives right after the op or later; one whose vCPU's exit
    /// is among them must arrive now.
    pub(super) fn after(
        &mut self,
        op: Op,
        window_eoi: bool,
        exits: &[bool; VCPUS],
        eoi_register: bool,
    ) -> Result<(), Violation> {
        if self.simple() && !window_eoi {
            let r = &self.first;
            let _ = r.apply(op, false, eoi_register);
            r.take_events(exits);
            r.load();
            return Ok(());
        }
        let mut out = Vec::new();
        for mut cand in self.take_all() {
            if let Some(m) = cand.apply(op, window_eoi, eoi_register)
                && cand.in_flight.push(m).is_err()
            {
                return Err(Violation::CheckerCapacity);
            }
            cand.split(exits, true, &mut out);
        }
        self.set(out);
        Ok(())
    }

    /// Keeps the candidates `ok` accepts; the first rejection when it
    /// accepts none.
    pub(super) fn retain(
        &mut self,
        mut ok: impl FnMut(&Chip<VCPUS, PINS>) -> Result<(), Violation>,
    ) -> Result<(), Violation> {
        if self.more.is_empty() {
            return ok(&self.first.chip);
        }
        let old = core::mem::take(&mut self.more);
        let mut first_err = None;
        let mut keep = Vec::new();
        for r in core::iter::once(self.first.clone()).chain(old) {
            match ok(&r.chip) {
                Ok(()) => keep.push(r),
                Err(v) => {
                    first_err.get_or_insert(v);
                }
            }
        }
        if keep.is_empty() {
            return Err(first_err.expect("a candidate was checked"));
        }
        dedup(&mut keep);
        let mut it = keep.into_iter();
        self.first = it.next().expect("kept one");
        self.more = it.collect();
        Ok(())
    }

    /// Each candidate's saved I/O APIC and LAPICs.
    pub(super) fn saved(&self) -> Vec<(eoi_exit::Ioapic<PINS>, [eoi_exit::LocalApic; VCPUS])> {
        self.iter()
            .map(|r| {
                let apics = core::array::from_fn(|i| {
                    r.chip.vcpu(VcpuId::new(i as u16)).expect("in range").apic
                });
                (r.chip.ioapic(), apics)
            })
            .collect()
    }

    /// Hashes every candidate, in the canonical order `dedup` leaves.
    pub(super) fn hash_into<H: Hasher>(&self, h: &mut H) {
        self.first.hash(h);
        self.more.len().hash(h);
        for r in &self.more {
            r.hash(h);
        }
    }
}

/// Sorts candidates into a canonical order (by key) and drops duplicates.
fn dedup<const VCPUS: usize, const PINS: usize>(all: &mut Vec<Reference<VCPUS, PINS>>) {
    if all.len() < 2 {
        return;
    }
    let mut keyed: Vec<(u64, Reference<VCPUS, PINS>)> =
        all.drain(..).map(|r| (r.key(), r)).collect();
    keyed.sort_by_key(|(k, _)| *k);
    keyed.dedup_by_key(|(k, _)| *k);
    all.extend(keyed.into_iter().map(|(_, r)| r));
}
