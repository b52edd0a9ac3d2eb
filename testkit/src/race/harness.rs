//! [`Harness`]: one Irqchip under the invariant checker, and its step logic.

use core::fmt;
use core::hash::{Hash, Hasher};

use std::sync::{Arc, OnceLock};
use std::vec::Vec;

use eoi_exit::exit_bitmap::{ScanEntry, Source};
use eoi_exit::ioapic::{IOEOI, IoapicVersion, MMIO_LEN, PinSet, RedirectionEntry};
use eoi_exit::irqchip::{
    Delivery, Effects, EoiForwarding, IrqchipState, LapicWrite, Vcpu, VcpuState,
};
use eoi_exit::lapic::{ApicMode, LocalApic};
use eoi_exit::{
    DeliveryMode, Destination, DestinationMode, InterruptMessage, Pin, TriggerMode, VcpuId,
};
use eoi_exit::{Ioapic, Irqchip, VcpuSlot};
use eoi_exit::{Vector, VectorSet};

use super::lean::{changed_entries, each_pin, pins as lean_pins, remote_irr_pins};
use super::reference::References;
use super::{
    Checker, HarnessConfig, Instance, Kick, LossCause, Mutant, Need, Op, RTC_PIN, Saved, StepInfo,
    Tolerated, Violation,
};

/// The Irqchip a [`Harness`] drives: `VCPUS` vCPUs in an array.
pub type Chip<const VCPUS: usize, const PINS: usize = 24> = Irqchip<[VcpuSlot; VCPUS], PINS>;

/// What one op did, with every delivery logged in order.
type OpEffects = Effects<Vec<Delivery>>;

/// Copies of every vCPU of `chip`.
fn vcpus_of<const VCPUS: usize, const PINS: usize>(chip: &Chip<VCPUS, PINS>) -> [Vcpu; VCPUS] {
    core::array::from_fn(|i| chip.vcpu(VcpuId::new(i as u16)).expect("in range"))
}

/// A fixed-delivery message to physical APIC ID `dest` (an MSI, or an IPI
/// as the race ops send it).
pub fn fixed_physical(dest: u32, vector: u8, level: bool) -> InterruptMessage {
    InterruptMessage {
        destination: Destination {
            id: dest,
            mode: DestinationMode::Physical,
        },
        delivery_mode: DeliveryMode::Fixed,
        vector: Vector::new(vector),
        trigger: if level {
            TriggerMode::Level
        } else {
            TriggerMode::Edge
        },
    }
}

/// [`fixed_physical`] as the MSI a device writes, in the 8-bit form every
/// [`MsiFormat`](eoi_exit::MsiFormat) decodes alike.
///
/// # Panics
///
/// If `dest` is above 0xFF.
pub fn fixed_msi(dest: u32, vector: u8, level: bool) -> eoi_exit::Msi {
    eoi_exit::Msi::from_message(
        &fixed_physical(dest, vector, level),
        eoi_exit::MsiFormat::Xapic,
    )
    .expect("an 8-bit destination")
}

/// One Irqchip under the invariant checker.
pub struct Harness<const VCPUS: usize, const PINS: usize = 24> {
    pub(super) config: HarnessConfig,
    pub(super) chip: Chip<VCPUS, PINS>,
    checker: Checker<VCPUS>,
    /// The last snapshot, shared by every fork taken since (it never
    /// changes), with its fingerprint ([`Kept`]).
    saved: Option<Arc<Kept<VCPUS, PINS>>>,
    /// Copies of every vCPU taken after the last step changed them (the op,
    /// a planted rescan, a VM entry): the post-op checks and
    /// [`Harness::vcpus`] read these instead of copying each vCPU out of its
    /// lock once per check.
    post: [Vcpu; VCPUS],
    /// `LineAware`: the same chip under `Exact` (the reference semantics),
    /// fed the same ops, every vCPU's VMCS loaded after each op; one
    /// candidate per timing of the EOI broadcasts still in flight
    /// (`race::reference`).
    /// (Boxed: the other policies' harnesses, forked once per step of a
    /// model check, do not carry its room.)
    reference: Option<Box<References<VCPUS, PINS>>>,
}

impl<const VCPUS: usize, const PINS: usize> fmt::Debug for Harness<VCPUS, PINS> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Harness")
            .field("config", &self.config)
            .field("checker", &self.checker)
            .finish_non_exhaustive()
    }
}

impl<const VCPUS: usize, const PINS: usize> Harness<VCPUS, PINS> {
    /// A fresh Irqchip (every entry masked, vCPU `i` has xAPIC ID `i`).
    pub fn new(config: HarnessConfig) -> Self {
        Self::with_fresh_chip(
            config,
            Irqchip::new(
                config.chip,
                ApicMode::XApic,
                [const { VcpuSlot::new() }; VCPUS],
            ),
        )
    }

    /// Like [`Harness::new`], with the fresh chip given: `chip` must be what
    /// `Irqchip::new(config.chip, ApicMode::XApic, ..)` builds, untouched
    /// (or a clone of one), since the checker's bookkeeping starts from that
    /// state. For callers that keep pristine chips to clone, because building
    /// one rebuilds the routing caches (every APIC ID against every vCPU).
    ///
    /// # Panics
    ///
    /// If `chip`'s configuration is not `config.chip`.
    ///
    /// Under [`Policy::LineAware`](eoi_exit::Policy::LineAware) the harness
    /// also runs the reference semantics (the same chip under `Exact`) and
    /// checks what the guest sees against it (see [`Harness::step`]); the
    /// comparison needs the SDM's forwarding rule.
    ///
    /// # Panics
    ///
    /// If `chip`'s configuration is not `config.chip`, or under `LineAware`
    /// with another forwarding rule than [`EoiForwarding::TmrLevel`].
    pub fn with_fresh_chip(config: HarnessConfig, chip: Chip<VCPUS, PINS>) -> Self {
        assert_eq!(
            *chip.config(),
            config.chip,
            "a chip of another configuration"
        );
        let reference = (config.chip.policy == eoi_exit::Policy::LineAware).then(|| {
            assert_eq!(
                config.chip.eoi_forwarding,
                EoiForwarding::TmrLevel,
                "LineAware is compared with the reference under the SDM's forwarding rule \
                 (under KVM's the reference depends on the bitmap)"
            );
            Box::new(References::new(&config.chip))
        });
        if config.directed_eoi {
            // The VMM advertises directed EOI; each guest sets SVR bit 12.
            let mut fx = Effects::new();
            for c in core::iter::once(&chip).chain(reference.as_deref().map(References::chip)) {
                for i in 0..VCPUS {
                    let id = VcpuId::new(i as u16);
                    c.write_lapic(id, LapicWrite::DirectedEoi(true), &mut fx);
                    let svr = LapicWrite::Register {
                        offset: 0xF0,
                        value: 0x1FF | SVR_SUPPRESS_EOI_BROADCAST,
                    };
                    c.write_lapic(id, svr, &mut fx);
                }
            }
        }
        if let Some(r) = &reference {
            // Load what the SVR writes changed.
            r.load();
        }
        Harness {
            post: vcpus_of(&chip),
            config,
            chip,
            checker: Checker::default(),
            saved: None,
            reference,
        }
    }

    /// A fresh Irqchip whose pins are then programmed with `entries` (host
    /// writes, in pin order; lines stay low).
    pub fn with_entries(config: HarnessConfig, entries: &[u64]) -> Self {
        Self::new(config).programmed(entries)
    }

    /// This harness after host writes of `entries` to pins `0..` in order
    /// (what [`Harness::with_entries`] does after [`Harness::new`]).
    ///
    /// # Panics
    ///
    /// If a write breaks an invariant.
    pub fn programmed(mut self, entries: &[u64]) -> Self {
        for (pin, &e) in entries.iter().enumerate().take(PINS) {
            self.step(Op::WriteEntry {
                pin: pin as u8,
                value: e,
            })
            .expect("programming entries cannot break an invariant");
        }
        self
    }

    /// The configuration.
    pub fn config(&self) -> &HarnessConfig {
        &self.config
    }

    /// The Irqchip under test. Read it; drive it only through
    /// [`Harness::step`], which keeps copies of its vCPUs between steps.
    pub fn chip(&self) -> &Chip<VCPUS, PINS> {
        &self.chip
    }

    /// The checker's bookkeeping.
    pub fn checker(&self) -> &Checker<VCPUS> {
        &self.checker
    }

    /// Every vCPU as the last [`Harness::step`] left it (copies: not updated
    /// when the chip is driven directly through [`Harness::chip`]).
    pub fn vcpus(&self) -> &[Vcpu; VCPUS] {
        &self.post
    }

    /// The current EOI-exit bitmap of `vcpu` (as the crate computes it).
    pub fn bitmap(&self, vcpu: usize) -> VectorSet {
        self.chip
            .vcpu(VcpuId::new(vcpu as u16))
            .map(|v| v.map.bitmap())
            .unwrap_or_default()
    }

    /// An exact copy (the chip cloned, its statistics counters included:
    /// they decide nothing and are not part of the [`Hash`]).
    pub fn fork(&self) -> Self {
        Harness {
            post: self.post,
            config: self.config,
            chip: self.chip.clone(),
            checker: self.checker.clone(),
            saved: self.saved.clone(),
            reference: self.reference.clone(),
        }
    }

    pub(super) fn vstate(&self, i: usize) -> Vcpu {
        self.chip.vcpu(VcpuId::new(i as u16)).expect("in range")
    }

    /// Applies every op in order; stops at the first violation and returns it
    /// with the index of the op that caused it.
    pub fn run(&mut self, ops: &[Op]) -> Result<(), (usize, Violation)> {
        for (i, op) in ops.iter().enumerate() {
            self.step(*op).map_err(|v| (i, v))?;
        }
        Ok(())
    }

    /// Whether [`Harness::step`] would leave this state as it is (everything
    /// its [`Hash`] covers) and pass, as this state did, when that is plain
    /// without running it: an ack with nothing pending, an EOI with nothing
    /// in service, each on a vCPU in guest mode, and an [`Op::Exit`] owed
    /// by no one. `false` when unsure. A model checker skips these steps
    /// (the state they reach is the one it has).
    ///
    /// Under `LineAware` with an EOI broadcast in flight in the reference,
    /// `false` (any op may be where it arrives).
    pub fn changes_nothing(&self, op: Op) -> bool {
        if self.reference.as_ref().is_some_and(|r| r.in_flight()) {
            return false;
        }
        match op {
            Op::Ack { vcpu } => {
                let c = vcpu as usize % VCPUS;
                !self.checker.kicked[c] && self.post[c].apic.irr().is_empty()
            }
            Op::Eoi { vcpu } => {
                let c = vcpu as usize % VCPUS;
                !self.checker.kicked[c] && self.post[c].apic.isr().is_empty()
            }
            Op::Exit { vcpu } => !self.checker.owed_exit[vcpu as usize % VCPUS],
            _ => false,
        }
    }

    /// Whether `op` is a guest op on a vCPU (it runs guest code).
    fn guest_vcpu(op: &Op) -> Option<usize> {
        match *op {
            Op::Ack { vcpu }
            | Op::Eoi { vcpu }
            | Op::Tpr { vcpu, .. }
            | Op::Ipi { vcpu, .. }
            | Op::DirectedEoi { vcpu, .. } => Some(vcpu as usize % VCPUS),
            _ => None,
        }
    }

    /// Applies one op and checks every invariant.
    ///
    /// # `LineAware`
    ///
    /// The exit protocol, asynchronous as on hardware: a vCPU named in
    /// `Effects::exit` owes an exit ([`Checker::owed_exit`]); the VMM kicks
    /// it with an IPI, which reaches it whenever [`Op::Exit`] says. Until
    /// then the vCPU stays in guest mode under the VMCS it last loaded: its
    /// acks (virtual interrupt delivery), TPR writes and EOIs that do not
    /// exit run without landing the exit, any number of them, while
    /// everything else happens too (lines, entry writes, MSIs, other vCPUs'
    /// ops). The exit also lands (`take_events`, then the VM entry loads the
    /// VMCS) at its [`Op::Enter`], whenever the vCPU leaves guest mode
    /// anyway (kicked for a reload or a delivery, an EOI that exits: at its
    /// next entry), after a LAPIC write that traps (an IPI's ICR write, an
    /// SVR write), and for every vCPU before a snapshot or migration (the
    /// VMM pauses the vCPUs, and the chip's contract wants the exit before
    /// the save). Level EOIs that do not exit are deferred, not lost
    /// ([`Checker::deferred`]). After every op each vCPU's IRR, ISR and TMR
    /// must equal the reference's (the same ops under `Exact`, every VMCS
    /// loaded after each op: [`Violation::GuestDivergence`]), and so must
    /// what a guest read of each entry through IOWIN would return now (on
    /// copies of both chips: [`Violation::IowinDivergence`]). An EOI that
    /// completes in hardware in a race window leaves the reference's EOI
    /// broadcast in flight until that vCPU's exit: the reference may
    /// deliver it to its I/O APIC at any point up to then, as hardware's
    /// EOI message may arrive late, and the check passes if some such
    /// timing gives what the guest saw (see `race::reference`).
    pub fn step(&mut self, op: Op) -> Result<StepInfo, Violation> {
        let la = self.reference.is_some();
        #[cfg_attr(not(feature = "kvm"), allow(unused_mut))]
        let mut pre_entries = *self.chip.ioapic().entries();
        // `post` is every vCPU as the last step left it.
        let pre_tmr: [VectorSet; VCPUS] = core::array::from_fn(|i| *self.post[i].apic.tmr());
        let mut info = StepInfo::default();
        let mut fx: OpEffects = Effects::with_log(Vec::new());
        let guest = Self::guest_vcpu(&op);
        // vCPUs whose LAPIC an INIT taken at an exit reset in this op.
        let mut reset = [false; VCPUS];
        // LineAware: the exits that land after the op, and whether it is
        // an EOI that completed in hardware in a race window, for the
        // reference.
        let mut exits_after = [false; VCPUS];
        let mut window_eoi = false;
        // A vCPU in guest mode owing an exit whose op traps (an APIC-write
        // exit after the write): the exit lands after the op.
        let mut trap = None;
        // A vCPU in guest mode owing an exit that EOIs (the race window).
        let mut window = None;
        if la {
            let owed = self.checker.owed_exit;
            let owes = |c: usize| owed[c];
            let mut now = [false; VCPUS];
            match op {
                Op::Enter { vcpu } | Op::Exit { vcpu } => now[vcpu as usize % VCPUS] = true,
                Op::Snapshot | Op::Migrate => now = [true; VCPUS],
                #[cfg(feature = "kvm")]
                Op::MigrateKvm => now = [true; VCPUS],
                _ => {
                    if let Some(c) = guest.filter(|&c| owes(c)) {
                        if self.checker.kicked[c] {
                            // Out of guest mode: its entry comes first.
                            now[c] = true;
                        } else {
                            match op {
                                Op::Ipi { .. } | Op::DirectedEoi { .. } => trap = Some(c),
                                Op::Eoi { .. } => window = Some(c),
                                _ => {}
                            }
                        }
                    }
                }
            }
            let mut exits = [false; VCPUS];
            for c in (0..VCPUS).filter(|&c| now[c] && owes(c)) {
                self.exit(c, &mut fx, &mut reset);
                exits[c] = true;
            }
            if let Some(r) = &mut self.reference {
                r.before(&exits);
            }
        }
        // A guest op on a kicked vCPU implies its VM entry first.
        if let Some(c) = guest
            && self.checker.kicked[c]
        {
            self.enter(c)?;
        }
        // The vector of an EOI forwarded to the I/O APIC by this op.
        let mut forwarded: Option<Vector> = None;
        let mut forwarded_edge = false;
        let mut restored = false;
        match op {
            Op::Write { pin, field } => {
                let p = Pin::new((pin as usize % PINS) as u8);
                let e = self.chip.ioapic().entry(p).map_or(0, |e| e.0);
                self.chip.write_entry(p, field.apply(e), &mut fx);
            }
            Op::WriteEntry { pin, value } => {
                self.chip
                    .write_entry(Pin::new((pin as usize % PINS) as u8), value, &mut fx);
            }
            Op::Mmio {
                offset,
                size,
                value,
            } => {
                let off = offset as u64 % MMIO_LEN;
                if off == IOEOI
                    && self.config.chip.ioapic.version == IoapicVersion::V20
                    && matches!(size, 1 | 2 | 4 | 8)
                {
                    forwarded = Some(Vector::new(value as u8));
                }
                self.chip
                    .mmio_write(off, size as u32, value as u64, &mut fx);
            }
            Op::SetLine { pin, high } => {
                self.chip
                    .set_line(Pin::new((pin as usize % PINS) as u8), high, &mut fx);
            }
            Op::Msi {
                dest,
                vector,
                level,
            } => {
                self.chip
                    .send_msi(&fixed_msi(dest as u32, vector, level), &mut fx);
            }
            Op::Accept { vcpu, vector } => {
                let id = self.vstate(vcpu as usize % VCPUS).apic.id();
                self.chip
                    .send_msi(&fixed_msi(id.get(), vector, false), &mut fx);
            }
            Op::Ack { vcpu } => {
                let c = vcpu as usize % VCPUS;
                if let Some(v) = self.chip.ack(VcpuId::new(c as u16)) {
                    for i in self.checker.instances[c].iter_mut() {
                        if !i.in_service && i.vector == v.get() {
                            i.in_service = true;
                        }
                    }
                }
            }
            Op::Eoi { vcpu } => {
                let c = vcpu as usize % VCPUS;
                let apic = self.vstate(c).apic;
                let isr = apic.isr().highest();
                let directed = self.config.directed_eoi && suppresses_broadcast(&apic);
                let at_eoi = *self.chip.ioapic().entries();
                let ge = self.chip.guest_eoi(VcpuId::new(c as u16), &mut fx);
                if let Some(v) = ge.vector {
                    debug_assert_eq!(Some(v), isr);
                    let hw = VectorSet::from_u64_words(self.checker.hw[c]).contains(v);
                    if hw != ge.intercepted {
                        return Err(Violation::InterceptMismatch {
                            vcpu: c as u16,
                            vector: v.get(),
                        });
                    }
                    info.eoi = Some((v, ge.intercepted));
                    // SDM: bit 12 stops a level EOI's broadcast; KVM's split
                    // irqchip with the ENABLE flag stops every EOI.
                    let suppressed = directed
                        && (ge.level
                            || self.config.chip.eoi_forwarding
                                == EoiForwarding::AllInterceptedUnlessSuppressed);
                    if suppressed && ge.reached_ioapic {
                        return Err(Violation::SuppressedEoiForwarded {
                            vcpu: c as u16,
                            vector: v.get(),
                        });
                    }
                    // (LineAware runs under the SDM's rule, where an
                    // intercepted edge EOI does not reach the I/O APIC.)
                    if ge.intercepted && !suppressed && (!la || ge.reached_ioapic) {
                        forwarded = Some(v);
                        forwarded_edge = !ge.level;
                    }
                    if la && !ge.intercepted && ge.level && !directed {
                        // The LAPIC broadcast it in the reference: every
                        // level entry of the vector that waited is done.
                        for (p, e) in at_eoi.iter().enumerate() {
                            if e.is_level() && e.remote_irr() && e.vector() == v {
                                self.checker.deferred.insert(Pin::new(p as u8));
                            }
                        }
                    }
                    info.suppressed =
                        self.retire(c, v, ge.intercepted, ge.level, suppressed, &pre_entries)?;
                    window_eoi = window == Some(c) && !ge.intercepted;
                }
            }
            Op::Rescan { vcpu } => {
                let c = vcpu as usize % VCPUS;
                self.chip.rescan(VcpuId::new(c as u16), &mut fx);
            }
            Op::Enter { vcpu } => {
                self.enter(vcpu as usize % VCPUS)?;
            }
            // Its exit landed above.
            Op::Exit { .. } => {}
            Op::Snapshot => {
                self.saved = Some(Arc::new(Kept::new(self.save())));
            }
            Op::Restore => {
                if let Some(kept) = self.saved.clone() {
                    // Built once per snapshot, cloned at every restore of it.
                    let r = kept.restore.get_or_init(|| self.rebuild(&kept.saved));
                    self.install(r.clone(), &kept.saved);
                    restored = true;
                }
            }
            #[cfg(feature = "kvm")]
            Op::RestoreKvm => {
                if let Some(kept) = self.saved.clone() {
                    let r = kept
                        .restore_kvm
                        .get_or_init(|| self.rebuild_through_kvm(&kept.saved));
                    if let Some((r, import_fx)) = r.clone() {
                        // The import's re-injections start cycles relative
                        // to the saved I/O APIC.
                        pre_entries = *kept.saved.ioapic.entries();
                        merge(&mut fx, import_fx);
                        self.install(r, &kept.saved);
                        restored = true;
                    }
                }
            }
            Op::Migrate => {
                let saved = self.save();
                let r = self.rebuild(&saved);
                self.install(r, &saved);
                restored = true;
            }
            #[cfg(feature = "kvm")]
            Op::MigrateKvm => {
                let saved = self.save();
                if let Some((r, import_fx)) = self.rebuild_through_kvm(&saved) {
                    pre_entries = *saved.ioapic.entries();
                    merge(&mut fx, import_fx);
                    self.install(r, &saved);
                    restored = true;
                }
            }
            Op::DeliverLater { pin } => {
                self.chip
                    .deliver_later_elapsed(Pin::new((pin as usize % PINS) as u8), &mut fx);
            }
            Op::Ldr { .. } | Op::Ipi { .. } | Op::DirectedEoi { .. } | Op::Tpr { .. } => {
                // Guest LAPIC writes (a TPR write changes no routing: no
                // rescan follows it).
                if let Some((vcpu, writes)) = op.lapic_writes() {
                    let c = VcpuId::new((vcpu as usize % VCPUS) as u16);
                    for w in writes.into_iter().flatten() {
                        self.chip.write_lapic(c, w, &mut fx);
                    }
                }
            }
        }
        if la {
            self.owe_exits(&fx);
            if let Some(c) = trap
                && self.checker.owed_exit[c]
            {
                let mut after = Effects::with_log(Vec::new());
                self.exit(c, &mut after, &mut reset);
                exits_after[c] = true;
                self.owe_exits(&after);
                merge(&mut fx, after);
            }
            if self.config.eager_enter {
                // Those that leave guest mode now and owe an exit take it
                // before they enter at the end of this op.
                while let Some(c) =
                    (0..VCPUS).find(|&c| self.checker.owed_exit[c] && self.kicked_after(&fx, c))
                {
                    let mut after = Effects::with_log(Vec::new());
                    self.exit(c, &mut after, &mut reset);
                    exits_after[c] = true;
                    self.owe_exits(&after);
                    merge(&mut fx, after);
                }
            }
            let eoi_register = self.config.chip.ioapic.version == IoapicVersion::V20;
            if let Some(r) = &mut self.reference {
                r.after(op, window_eoi, &exits_after, eoi_register)?;
            }
        }
        info.accepted = fx.log.len() as u32;
        if self.config.mutant == Some(Mutant::ScanIgnoresPending) {
            self.rescan_ignoring_pending(&fx);
        }
        // Nothing below changes the chip until the eager entries: one copy
        // of the I/O APIC and of each vCPU serves every check.
        for (i, v) in self.post.iter_mut().enumerate() {
            // In place: `array::from_fn` of 272-byte `Vcpu`s moved each
            // several times.
            *v = self.chip.vcpu(VcpuId::new(i as u16)).expect("in range");
        }
        let io = self.chip.ioapic();
        self.absorb(&fx, io.entries(), &pre_entries, forwarded)?;
        if !restored {
            self.check_tmr(&pre_tmr, &fx, &reset)?;
        }
        let clearing = match forwarded {
            Some(_) if forwarded_edge && !self.config.edge_eoi_clears_remote_irr => None,
            f => f,
        };
        self.check_remote_irr(&io, &pre_entries, clearing, restored)?;
        if self.config.eager_enter {
            for c in 0..VCPUS {
                if self.checker.kicked[c] {
                    self.enter(c)?;
                    self.post[c] = self.vstate(c);
                }
            }
        }
        self.check_vmcs_current()?;
        self.check_reference(&io)?;
        Ok(info)
    }

    /// `LineAware`: the exit owed by `c` lands: `take_events` (which
    /// re-checks its lazy instances; effects to `fx`; the caller has the
    /// reference take its events at the same point, `References::before`
    /// and `after`); `c` is then out of guest mode and loads its VMCS
    /// before it runs again.
    ///
    /// A pending INIT is taken there too (the LAPIC reset wipes IRR, ISR and
    /// TMR): the instances `c` held will never be EOI'd, so their cycles are
    /// orphaned (remote IRR stays, as on hardware), and `reset[c]` tells the
    /// TMR check that no acceptance is needed for its change.
    fn exit(&mut self, c: usize, fx: &mut OpEffects, reset: &mut [bool; VCPUS]) {
        let id = VcpuId::new(c as u16);
        let init = self.config.mutant != Some(Mutant::ExitWithoutTakeEvents)
            && self.chip.take_events(id, false, false, fx).init;
        if init {
            reset[c] = true;
            for i in core::mem::take(&mut self.checker.instances[c]) {
                self.checker.orphan.insert(Pin::new(i.pin));
            }
        }
        self.checker.owed_exit[c] = false;
        self.checker.kicked[c] = true;
    }

    fn owe_exits(&mut self, fx: &OpEffects) {
        for id in fx.exit.iter() {
            if id.index() < VCPUS {
                self.checker.owed_exit[id.index()] = true;
            }
        }
    }

    /// Whether `c` is out of guest mode once `fx` is absorbed.
    fn kicked_after(&self, fx: &OpEffects, c: usize) -> bool {
        let id = VcpuId::new(c as u16);
        self.checker.kicked[c]
            || fx.reload.contains(id)
            || (self.config.kick == Kick::ReloadAndDeliveries
                && fx.log.iter().any(|d| d.vcpu == id))
    }

    /// `LineAware`: what the guest sees equals the reference's: every
    /// vCPU's IRR, ISR and TMR, and a read of every entry through IOWIN
    /// (the low dword; the high one holds the destination, written alike).
    /// A read may clear a lazily retired remote IRR, where nothing would be
    /// delivered (the entry masked or its line deasserted): there it reads a
    /// copy of the chip; elsewhere a read returns the entry as it is, and so
    /// does any read of the reference.
    ///
    /// Under the reference's candidates (see `race::reference`), the ones
    /// that disagree are dropped; none agreeing is the first candidate's
    /// difference.
    fn check_reference(&mut self, io: &Ioapic<PINS>) -> Result<(), Violation> {
        // Disjoint fields: the candidates are filtered against the chip.
        let (post, chip) = (&self.post, &self.chip);
        let Some(refs) = &mut self.reference else {
            return Ok(());
        };
        let lines = io.state();
        // What the chip reads, per pin, where a read may settle (computed
        // once, on one copy, for every candidate).
        let mut found = [None; PINS];
        let mut copy = None;
        refs.retain(|r| {
            for (c, v) in post.iter().enumerate() {
                let a = r.vcpu(VcpuId::new(c as u16)).expect("in range").apic;
                let b = &v.apic;
                let mut d = VectorSet::EMPTY;
                for (x, y) in [(a.irr(), b.irr()), (a.isr(), b.isr()), (a.tmr(), b.tmr())] {
                    d = d.union(&x.difference(y)).union(&y.difference(x));
                }
                if let Some(v) = d.iter().next() {
                    return Err(Violation::GuestDivergence {
                        vcpu: c as u16,
                        vector: v.get(),
                    });
                }
            }
            let ra = r.ioapic();
            for p in 0..PINS {
                let (x, y) = (ra.entries()[p], io.entries()[p]);
                let pin = Pin::new(p as u8);
                let may_settle =
                    y.remote_irr() && (y.masked() || !crate::probe::asserted_in(&lines, pin));
                if x == y && !may_settle {
                    continue;
                }
                let reference = x.0 as u32;
                let found = if may_settle {
                    *found[p].get_or_insert_with(|| {
                        iowin_low(copy.get_or_insert_with(|| chip.clone()), p)
                    })
                } else {
                    y.0 as u32
                };
                if reference != found {
                    return Err(Violation::IowinDivergence {
                        pin: p as u8,
                        reference,
                        found,
                    });
                }
            }
            Ok(())
        })
    }

    /// A fresh chip holding the saved LAPICs and the saved I/O APIC
    /// verbatim; its maps are what the construction's scan left.
    fn chip_from_saved(config: HarnessConfig, s: &Saved<VCPUS, PINS>) -> Chip<VCPUS, PINS> {
        let mut chip = Irqchip::with_apics(config.chip, [const { VcpuSlot::new() }; VCPUS], |i| {
            s.apics[i.index()]
        });
        let mut st: IrqchipState<Vec<VcpuState>, PINS> = chip.state();
        st.ioapic = s.ioapic.state();
        chip.restore(&st)
            .expect("a saved I/O APIC restores into a chip of its configuration");
        chip
    }

    /// The saved state exported in KVM's formats (`KVM_GET_IRQCHIP`,
    /// `KVM_GET_LAPIC`) and imported into a fresh chip; the import's
    /// re-injections go to `fx`. `None` unless `PINS` is KVM's 24.
    #[cfg(feature = "kvm")]
    fn chip_through_kvm(
        config: HarnessConfig,
        s: &Saved<VCPUS, PINS>,
        fx: &mut OpEffects,
    ) -> Option<Chip<VCPUS, PINS>> {
        Self::kvm_round_trip(config, &Self::chip_from_saved(config, s), fx)
    }

    /// `source` exported in KVM's formats and imported into a fresh chip
    /// under `config`; the import's re-injections go to `fx`. `None` unless
    /// `PINS` is KVM's 24.
    #[cfg(feature = "kvm")]
    fn kvm_round_trip(
        config: HarnessConfig,
        source: &Chip<VCPUS, PINS>,
        fx: &mut OpEffects,
    ) -> Option<Chip<VCPUS, PINS>> {
        use core::any::Any;
        use eoi_exit::snapshot::kvm::kvm_bindings::kvm_lapic_state;
        use eoi_exit::snapshot::kvm::{IOAPIC_DEFAULT_BASE_ADDRESS, KvmLapicIdentity};
        let source: &dyn Any = source;
        let source = source.downcast_ref::<Chip<VCPUS, 24>>()?;
        let (ioapic, pages): (_, Vec<kvm_lapic_state>) =
            source.export_kvm(IOAPIC_DEFAULT_BASE_ADDRESS, true);
        let who: Vec<KvmLapicIdentity> = vcpus_of(source)
            .iter()
            .map(|v| KvmLapicIdentity {
                initial_id: eoi_exit::ApicId::new(v.apic.state().initial_id),
                mode: v.apic.mode(),
                x2apic_format: true,
            })
            .collect();
        let import = Irqchip::import_kvm(
            config.chip,
            &ioapic,
            &pages,
            &who,
            [const { VcpuSlot::new() }; VCPUS],
            fx,
        )
        .expect("KVM's formats of a valid state import");
        assert_eq!(import.base_address, IOAPIC_DEFAULT_BASE_ADDRESS);
        let chip: Box<dyn Any> = Box::new(import.chip);
        Some(*chip.downcast::<Chip<VCPUS, PINS>>().expect("PINS is 24"))
    }

    /// The architectural state and the checker's bookkeeping.
    fn save(&self) -> Saved<VCPUS, PINS> {
        let (ioapic, apics) = if self.reference.is_some() {
            Self::snapshot_of(&self.chip)
        } else {
            (
                self.chip.ioapic(),
                core::array::from_fn(|i| self.vstate(i).apic),
            )
        };
        Saved {
            ioapic,
            apics,
            checker: self.checker.clone(),
            reference: self.reference.as_ref().map_or_else(Vec::new, |r| r.saved()),
        }
    }

    /// `LineAware`: the architectural state a VMM saves of `chip` with the
    /// crate's snapshot (`Irqchip::state`, event (d), which also settles in
    /// its copy what the guest retired in the race window), as the chip a
    /// restore of it holds. Taken whenever the VMM likes: no exit owed is
    /// landed first.
    fn snapshot_of(chip: &Chip<VCPUS, PINS>) -> (Ioapic<PINS>, [LocalApic; VCPUS]) {
        let s: IrqchipState<Vec<VcpuState>, PINS> = chip.state();
        let live = |i: usize| chip.vcpu(VcpuId::new(i as u16)).expect("in range");
        let io = chip.ioapic();
        if io.state() == s.ioapic
            && (0..VCPUS).all(|i| {
                let v = live(i);
                v.apic.state() == s.vcpus[i].apic
            })
        {
            return (io, core::array::from_fn(|i| live(i).apic));
        }
        let copy: Chip<VCPUS, PINS> =
            Irqchip::from_state(&s, [const { VcpuSlot::new() }; VCPUS]).expect("own snapshot");
        let apics = core::array::from_fn(|i| copy.vcpu(VcpuId::new(i as u16)).expect("in range"));
        (copy.ioapic(), apics.map(|v: Vcpu| v.apic))
    }

    /// What a restore of `saved` builds: a fresh chip whose maps a rescan of
    /// every vCPU rebuilds (the restore's own duty: every vCPU is kicked),
    /// and under `LineAware` the reference restored the same way.
    fn rebuild(&self, saved: &Saved<VCPUS, PINS>) -> Restored<VCPUS, PINS> {
        let chip = Self::chip_from_saved(self.config, saved);
        let mut restore_fx = Effects::new();
        for i in 0..VCPUS {
            chip.rescan(VcpuId::new(i as u16), &mut restore_fx);
        }
        (chip, self.reference_from(saved, false))
    }

    /// [`Harness::rebuild`] through KVM's formats, with the import's
    /// re-injections. `None` unless `PINS` is 24.
    #[cfg(feature = "kvm")]
    fn rebuild_through_kvm(
        &self,
        saved: &Saved<VCPUS, PINS>,
    ) -> Option<(Restored<VCPUS, PINS>, OpEffects)> {
        let mut fx = Effects::with_log(Vec::new());
        let chip = Self::chip_through_kvm(self.config, saved, &mut fx)?;
        Some(((chip, self.reference_from(saved, true)), fx))
    }

    /// `LineAware`: the reference restored from its part of `saved`, the
    /// way the chip was (through KVM's formats if `kvm`); `None` for the
    /// other policies.
    #[cfg_attr(not(feature = "kvm"), allow(unused_variables))]
    fn reference_from(
        &self,
        saved: &Saved<VCPUS, PINS>,
        kvm: bool,
    ) -> Option<Box<References<VCPUS, PINS>>> {
        let r = self.reference.as_ref()?;
        let config = HarnessConfig {
            chip: super::reference::reference_config(&self.config.chip),
            ..self.config
        };
        let chips = saved.reference.iter().map(|(ioapic, apics)| {
            let s = Saved {
                ioapic: ioapic.clone(),
                apics: *apics,
                checker: saved.checker.clone(),
                reference: Vec::new(),
            };
            #[cfg(feature = "kvm")]
            if kvm {
                let mut fx = Effects::with_log(Vec::new());
                return Self::chip_through_kvm(config, &s, &mut fx)
                    .expect("restored through KVM's formats like the chip");
            }
            let chip = Self::chip_from_saved(config, &s);
            for i in 0..VCPUS {
                chip.rescan(VcpuId::new(i as u16), &mut Effects::new());
            }
            chip
        });
        let chips: Vec<_> = chips.collect();
        if chips.is_empty() {
            return Some(r.clone());
        }
        let mut r = r.clone();
        r.replace(chips);
        Some(r)
    }

    /// Puts what a restore of `saved` built in place.
    fn install(&mut self, (chip, reference): Restored<VCPUS, PINS>, saved: &Saved<VCPUS, PINS>) {
        self.chip = chip;
        if reference.is_some() {
            self.reference = reference;
        }
        self.restored_from(saved);
    }

    /// The checker after a restore from `saved`: its bookkeeping as saved,
    /// every VMCS empty and every vCPU out of guest mode.
    fn restored_from(&mut self, saved: &Saved<VCPUS, PINS>) {
        self.checker = saved.checker.clone();
        self.checker.hw = [[0; 4]; VCPUS];
        self.checker.kicked = [true; VCPUS];
        // A restored VM's vCPUs owe no exit: they load their whole VMCS.
        self.checker.owed_exit = [false; VCPUS];
    }

    fn rescan_ignoring_pending(&self, fx: &OpEffects) {
        let io = self.chip.ioapic();
        // Loading a vCPU names it for a reload: it is in `fx.reload` already.
        let mut load_fx = Effects::new();
        for c in fx.reload.iter().map(VcpuId::index).filter(|&c| c < VCPUS) {
            let id = VcpuId::new(c as u16);
            let mut v = self.chip.vcpu(id).expect("in range");
            let (apic, map) = (&v.apic, &mut v.map);
            // The same LAPIC with nothing pending: what a scan without KVM's
            // pending check sees.
            let mut st = apic.state();
            st.irr = VectorSet::EMPTY;
            st.isr = VectorSet::EMPTY;
            let blind = LocalApic::from_state(&st).expect("a valid LAPIC state stays valid");
            let entries = io.entries().iter().enumerate().map(|(pin, e)| {
                ScanEntry::from_redirection(
                    *e,
                    self.config.chip.ioapic.msi_format,
                    super::config::notified(&self.config.chip, Pin::new(pin as u8)),
                    self.config.chip.rtc_tracking && pin == RTC_PIN as usize,
                )
            });
            // Only KVM's policies read the pending vectors while matching
            // entries; the others read the LAPIC as it is at the end of the
            // scan (adoption of in-flight instances), which stays.
            let kvm = matches!(
                map.policy(),
                eoi_exit::Policy::KvmLegacy | eoi_exit::Policy::KvmHighestStale
            );
            map.scan(if kvm { &blind } else { apic }, entries);
            let st = VcpuState {
                apic: v.apic.state(),
                map: v.map.state(),
                stats: v.stats,
                // Kept as they are (the race ops send no non-vectored IPI).
                events: self.chip.state::<Vec<_>>().vcpus[c].events,
            };
            self.chip
                .load_vcpu(id, &st, &mut load_fx)
                .expect("a map scanned by its own methods loads");
        }
    }

    /// VM entry of `c`: load the VMCS update, checking it is the diff.
    fn enter(&mut self, c: usize) -> Result<(), Violation> {
        let id = VcpuId::new(c as u16);
        let want = self.bitmap(c).as_u64_words();
        let old = self.checker.hw[c];
        let u = self.chip.vmcs_update(id);
        let mut mask = 0u8;
        for i in 0..4 {
            if want[i] != old[i] {
                mask |= 1 << i;
            }
        }
        let ok = match u {
            None => mask == 0,
            Some(u) => u.mask & mask == mask && u.changed().all(|(i, w)| w == want[i]),
        };
        if !ok {
            return Err(Violation::VmcsUpdateNotDiff { vcpu: c as u16 });
        }
        if let Some(u) = u {
            for (i, w) in u.changed() {
                self.checker.hw[c][i] = w;
            }
        }
        self.checker.kicked[c] = false;
        Ok(())
    }

    /// The guest on `c` retired `v`: drop its in-service instances, report
    /// the necessary ones whose EOI did not exit. `suppressed`: the LAPIC
    /// did not broadcast the EOI (directed EOI), so a level cycle waits for
    /// the guest's EOI-register write instead; returns whether one did.
    fn retire(
        &mut self,
        c: usize,
        v: Vector,
        exit: bool,
        tmr_level: bool,
        suppressed: bool,
        pre: &[RedirectionEntry; PINS],
    ) -> Result<bool, Violation> {
        let list = &mut self.checker.instances[c];
        let mut lost = None;
        let mut lost_pins = PinSet::EMPTY;
        let mut awaiting = false;
        let mut k = 0;
        while k < list.len() {
            let i = list[k];
            if i.in_service && i.vector == v.get() {
                list.remove(k);
                let e = pre[i.pin as usize % PINS];
                let level_waits = i.current && e.is_level() && e.vector() == v && e.remote_irr();
                let needed = match i.need {
                    Need::Rtc => true,
                    Need::AckNotifier => e.vector() == v,
                    Need::Level if suppressed => {
                        if level_waits {
                            awaiting = true;
                            self.checker.awaiting_ioapic_eoi.insert(Pin::new(i.pin));
                        }
                        false
                    }
                    Need::Level => level_waits,
                };
                if self.reference.is_some() && !tmr_level && level_waits {
                    // LineAware, under the SDM's rule: an EOI that TMR says
                    // is edge is broadcast by no LAPIC, so the cycle waits
                    // in the reference as well.
                    self.checker.orphan.insert(Pin::new(i.pin));
                }
                if needed && i.need == Need::Level && self.reference.is_some() {
                    // LineAware: one that did not exit is deferred (the
                    // caller marks the pins its broadcast reaches), judged
                    // by what the guest sees.
                } else if needed && !exit {
                    lost_pins.insert(Pin::new(i.pin));
                    let mut causes = Tolerated::NONE;
                    if i.moved {
                        causes = causes.with(LossCause::VectorRewrittenInFlight);
                    }
                    if i.need == Need::Level && !tmr_level {
                        causes = causes.with(LossCause::SharedWithEdge);
                    }
                    // Report the least excusable loss.
                    if lost.is_none_or(|(_, c): (u8, Tolerated)| causes.0 < c.0) {
                        lost = Some((i.pin, causes));
                    }
                }
            } else {
                k += 1;
            }
        }
        let Some((pin, causes)) = lost else {
            return Ok(awaiting);
        };
        for p in lost_pins.iter() {
            self.checker.orphan.insert(p);
        }
        let cause = causes.primary();
        if self.config.tolerate.0 & causes.0 != 0
            || (causes.0 == 0 && self.config.tolerate.contains(LossCause::Plain))
        {
            self.checker.tolerated_loss = true;
            return Ok(awaiting);
        }
        Err(Violation::LostEoi {
            vcpu: c as u16,
            vector: v.get(),
            pin,
            cause,
        })
    }

    /// Records what an op's effects did: kicks and new instances.
    fn absorb(
        &mut self,
        fx: &OpEffects,
        entries: &[RedirectionEntry; PINS],
        pre: &[RedirectionEntry; PINS],
        forwarded: Option<Vector>,
    ) -> Result<(), Violation> {
        for i in fx.reload.iter().map(VcpuId::index) {
            if i < VCPUS {
                self.checker.kicked[i] = true;
            }
        }
        // Pins that started a new remote-IRR cycle in this op: every older
        // instance of theirs stops being current.
        let mut new_cycle = PinSet::EMPTY;
        let mut accepted = PinSet::EMPTY;
        for d in fx.log.iter() {
            if let Some(p) = d.pin
                && d.accepted.trigger == TriggerMode::Level
            {
                accepted.insert(p);
            }
        }
        // Only a pin with remote IRR set now can start a cycle (see
        // `race::lean` for why the pins are not walked one by one).
        each_pin(&remote_irr_pins(entries), |p| {
            let a = pre[p.index()];
            let renewed = a.remote_irr() && a.is_level() && forwarded == Some(a.vector());
            if !a.remote_irr() || renewed || accepted.contains(p) {
                new_cycle.insert(p);
            }
        });
        for p in new_cycle.iter() {
            self.checker.awaiting_ioapic_eoi.remove(p);
            self.checker.deferred.remove(p);
            // A cycle no LAPIC accepted (no destination matched, or a
            // non-vectored delivery mode) is orphaned: its remote IRR stays.
            if accepted.contains(p) {
                self.checker.orphan.remove(p);
            } else {
                self.checker.orphan.insert(p);
            }
            for list in self.checker.instances.iter_mut() {
                for i in list.iter_mut() {
                    if i.pin == p.get() {
                        i.current = false;
                    }
                }
            }
        }
        for d in fx.log.iter() {
            let c = d.vcpu.index();
            if c < VCPUS && self.config.kick == Kick::ReloadAndDeliveries {
                self.checker.kicked[c] = true;
            }
            let Some(p) = d.pin else { continue };
            let need = if d.accepted.source == Source::Rtc {
                Need::Rtc
            } else if super::config::notified(&self.config.chip, p) {
                Need::AckNotifier
            } else if d.accepted.trigger == TriggerMode::Level {
                Need::Level
            } else {
                continue;
            };
            let inst = Instance {
                vector: d.accepted.vector.get(),
                in_service: false,
                pin: p.get(),
                need,
                current: true,
                moved: false,
            };
            let list = &mut self.checker.instances[c];
            if let Some(old) = list.iter_mut().find(|i| {
                !i.in_service && i.vector == inst.vector && i.pin == inst.pin && i.need == need
            }) {
                old.current = true;
            } else if list.push(inst).is_err() {
                return Err(Violation::CheckerCapacity);
            }
        }
        for list in self.checker.instances.iter_mut() {
            list.sort_unstable();
        }
        Ok(())
    }

    fn check_tmr(
        &self,
        pre: &[VectorSet; VCPUS],
        fx: &OpEffects,
        reset: &[bool; VCPUS],
    ) -> Result<(), Violation> {
        for (c, before) in pre.iter().enumerate().filter(|&(c, _)| !reset[c]) {
            let now = *self.post[c].apic.tmr();
            let mut changed = now.difference(before).union(&before.difference(&now));
            for d in fx.log.iter() {
                if d.vcpu.index() == c {
                    changed.remove(d.accepted.vector);
                }
            }
            // `is_empty` is one comparison, `lowest` one per word.
            if let Some(v) = (!changed.is_empty())
                .then(|| changed.iter().next())
                .flatten()
            {
                return Err(Violation::TmrChangedWithoutAcceptance {
                    vcpu: c as u16,
                    vector: v.get(),
                });
            }
        }
        Ok(())
    }

    fn check_remote_irr(
        &mut self,
        io: &Ioapic<PINS>,
        pre: &[RedirectionEntry; PINS],
        forwarded: Option<Vector>,
        restored: bool,
    ) -> Result<(), Violation> {
        // A pin whose entry did not change, without remote IRR and not
        // orphaned passes every rule below and has no bookkeeping to update:
        // only the others are visited, in pin order as before, so that the
        // first violation reported is the same (see `race::lean` for why the
        // pins are not walked one by one).
        let rirr = remote_irr_pins(io.entries());
        let mut visit = rirr;
        if !restored {
            visit = visit.union(&changed_entries(pre, io.entries()));
            visit = visit.union(&self.checker.orphan);
        }
        for p in lean_pins(&visit).filter(|p| p.index() < PINS) {
            let i = p.index();
            let (a, b) = (&pre[i], &io.entries()[i]);
            let pin = i as u8;
            if b.remote_irr() && !b.is_level() {
                return Err(Violation::RemoteIrrOnEdge { pin });
            }
            if restored {
                continue;
            }
            if b.remote_irr() && !a.remote_irr() && (b.masked() || !crate::probe::asserted(io, p)) {
                return Err(Violation::RemoteIrrSetWithoutDelivery { pin });
            }
            if a.remote_irr()
                && !b.remote_irr()
                && b.is_level()
                && forwarded != Some(a.vector())
                && !self.checker.deferred.contains(p)
            {
                return Err(Violation::RemoteIrrClearedWithoutEoi { pin });
            }
            if a.vector() != b.vector() {
                for list in self.checker.instances.iter_mut() {
                    for x in list.iter_mut().filter(|x| x.pin == pin) {
                        x.moved = true;
                    }
                }
            }
            if !b.remote_irr() {
                self.checker.orphan.remove(p);
                self.checker.awaiting_ioapic_eoi.remove(p);
                self.checker.deferred.remove(p);
                continue;
            }
            if a.remote_irr() && a.vector() != b.vector() {
                // The guest rewrote the vector of an entry in flight: its EOI
                // cannot match until the vector is written back (a wedge on
                // hardware too).
                self.checker.orphan.insert(p);
            }
            if self.checker.orphan.contains(p)
                || self.checker.awaiting_ioapic_eoi.contains(p)
                || self.checker.deferred.contains(p)
            {
                continue;
            }
            let live = self
                .checker
                .instances
                .iter()
                .flat_map(|l| l.iter())
                .any(|x| x.pin == pin && x.current && x.vector == b.vector().get());
            if !live {
                return Err(Violation::RemoteIrrStuck { pin });
            }
        }
        Ok(())
    }

    fn check_vmcs_current(&self) -> Result<(), Violation> {
        for c in 0..VCPUS {
            if self.checker.kicked[c] {
                continue;
            }
            let hw = VectorSet::from_u64_words(self.checker.hw[c]);
            let b = self.post[c].map.bitmap();
            let d = if self.reference.is_some() {
                // LineAware: a bit raised while the vCPU runs waits for its
                // owed exit (the map does not count it in effect yet), and
                // a dropped one stays loaded until its next entry (the EOI
                // exits once more than needed). Any other bit to load on a
                // vCPU in guest mode is a reload the VMM was not told of.
                let mut d = b.difference(&hw);
                if self.checker.owed_exit[c] && !d.is_empty() {
                    let map = &self.post[c].map;
                    for v in b.difference(&hw).iter() {
                        if !map.intercepts(v) {
                            d.remove(v);
                        }
                    }
                }
                d
            } else {
                b.difference(&hw).union(&hw.difference(&b))
            };
            if let Some(v) = (!d.is_empty()).then(|| d.iter().next()).flatten() {
                return Err(Violation::StaleVmcs {
                    vcpu: c as u16,
                    vector: v.get(),
                });
            }
        }
        Ok(())
    }
}

impl<const VCPUS: usize, const PINS: usize> Hash for Harness<VCPUS, PINS> {
    /// Hashes the state that decides future behaviour (not the counters),
    /// as far as `Irqchip`'s `Hash` sees it: not the vCPUs' pending
    /// non-vectored events (INIT, SIPI, NMI, SMI, ExtINT), which neither it
    /// nor `LocalApicState` covers and which the model check's alphabets
    /// never deliver.
    fn hash<H: Hasher>(&self, h: &mut H) {
        if let Some(r) = &self.reference {
            // LineAware's pin owners too (in the chip's own hash), and the
            // reference's I/O APIC (its remote IRR is not the lazy chip's)
            // and maps. Not its LAPICs: the same LAPIC writes reach both,
            // and `check_reference` holds their IRR, ISR and TMR equal.
            // Every candidate, with its EOI broadcasts in flight.
            self.chip.hash(h);
            r.hash_into(h);
        } else {
            // The I/O APIC, every LAPIC and map (under their locks, with no
            // copy), and the pin owners, which only `LineAware` sets.
            self.chip.hash(h);
        }
        self.checker.hash(h);
        match &self.saved {
            None => 0u8.hash(h),
            Some(k) => {
                1u8.hash(h);
                k.fingerprint.hash(h);
            }
        }
    }
}

/// What a restore builds: the chip and (`LineAware`) the reference.
type Restored<const VCPUS: usize, const PINS: usize> =
    (Chip<VCPUS, PINS>, Option<Box<References<VCPUS, PINS>>>);

/// A snapshot kept by [`Op::Snapshot`], its fingerprint and what restoring
/// it builds, each computed once: a model check reaches the same snapshot
/// from many states, hashes it in each, and restores it from many.
struct Kept<const VCPUS: usize, const PINS: usize> {
    saved: Saved<VCPUS, PINS>,
    fingerprint: u128,
    restore: OnceLock<Restored<VCPUS, PINS>>,
    #[cfg(feature = "kvm")]
    restore_kvm: OnceLock<Option<(Restored<VCPUS, PINS>, OpEffects)>>,
}

impl<const VCPUS: usize, const PINS: usize> Kept<VCPUS, PINS> {
    fn new(saved: Saved<VCPUS, PINS>) -> Self {
        struct S<'a, const VCPUS: usize, const PINS: usize>(&'a Saved<VCPUS, PINS>);
        impl<const VCPUS: usize, const PINS: usize> Hash for S<'_, VCPUS, PINS> {
            fn hash<H: Hasher>(&self, h: &mut H) {
                hash_saved(self.0, h);
            }
        }
        let fingerprint = super::Fingerprint::of(&S(&saved));
        Kept {
            saved,
            fingerprint,
            restore: OnceLock::new(),
            #[cfg(feature = "kvm")]
            restore_kvm: OnceLock::new(),
        }
    }
}

/// Hashes a snapshot: everything a restore reads.
fn hash_saved<const VCPUS: usize, const PINS: usize, H: Hasher>(s: &Saved<VCPUS, PINS>, h: &mut H) {
    s.ioapic.hash(h);
    for a in &s.apics {
        hash_apic(a, h);
    }
    s.checker.hash(h);
    for (io, apics) in &s.reference {
        io.hash(h);
        for a in apics {
            hash_apic(a, h);
        }
    }
}

/// Appends what `later` did to `fx` (its deliveries after `fx`'s).
fn merge(fx: &mut OpEffects, later: OpEffects) {
    fx.kick.extend(later.kick.iter());
    fx.reload.extend(later.reload.iter());
    fx.exit.extend(later.exit.iter());
    for p in later.deliver_later.iter() {
        fx.deliver_later.insert(p);
    }
    for p in later.route_changed.iter() {
        fx.route_changed.insert(p);
    }
    fx.rtc_coalesced |= later.rtc_coalesced;
    fx.log.extend(later.log);
}

/// The low dword of entry `p` as a guest reads it (IOREGSEL, then IOWIN).
fn iowin_low<const VCPUS: usize, const PINS: usize>(c: &Chip<VCPUS, PINS>, p: usize) -> u32 {
    use eoi_exit::ioapic::{IOREGSEL, IOWIN, REG_REDTBL_BASE};
    let sel = u64::from(REG_REDTBL_BASE) + 2 * p as u64;
    c.mmio_write(IOREGSEL, 4, sel, &mut Effects::new());
    c.mmio_read(IOWIN, 4) as u32
}

/// SVR bit 12: suppress EOI broadcast.
const SVR_SUPPRESS_EOI_BROADCAST: u32 = 1 << 12;

/// Whether `a` does not broadcast level EOIs: SVR bit 12 set while the
/// version register advertises it (bit 24), read through its registers.
fn suppresses_broadcast(a: &LocalApic) -> bool {
    a.read_register(0xF0)
        .is_some_and(|r| r & SVR_SUPPRESS_EOI_BROADCAST != 0)
        && a.read_register(0x30).is_some_and(|r| r & (1 << 24) != 0)
}

fn hash_apic<H: Hasher>(a: &LocalApic, h: &mut H) {
    // Everything the LAPIC holds, hidden registers (an x2APIC-mode DFR)
    // included.
    a.state().hash(h);
}
