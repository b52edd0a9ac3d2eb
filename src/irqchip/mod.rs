//! One I/O APIC plus `VCPUS` local APICs and EOI-exit maps, wired together.
//!
//! [`Irqchip`] is what a VMM embeds when it wants the whole path: guest MMIO
//! to the I/O APIC, pin lines, MSIs, interrupt acknowledge and EOI on each
//! vCPU. It keeps KVM's request order on an intercepted EOI (forward the EOI
//! to the I/O APIC, then rescan, then load the bitmap) and rescans only the
//! vCPUs a redirection-entry write names.
//!
//! # Threads
//!
//! Every method takes `&self`. The I/O APIC sits behind a `spin::Mutex`, and
//! each vCPU's state behind its own; the lock order is I/O APIC first, then
//! the physical-ID map, then vCPUs in index order, so vCPU threads may call in
//! parallel.
//!
//! # Caller duties
//!
//! * Before a vCPU enters the guest, call [`Irqchip::vmcs_update`] and write
//!   the returned words to its VMCS.
//! * A redirection write rescans its old and new destinations *before* it
//!   delivers anything. A multi-threaded VMM MUST kick the vCPUs listed in
//!   [`Effects::reload`] out of guest mode and let them load their VMCS update
//!   before it injects (posts) the interrupts this crate accepted for them.

use spin::Mutex;

mod config;
mod effects;
mod state;

pub use config::{Arbitration, EoiForwarding, IrqchipConfig};
pub use effects::{Delivery, Effects, GuestEoi, MAX_DELIVERIES};
pub use state::{IrqchipState, VcpuState};

use crate::Ioapic;
use crate::exit_bitmap::{Accepted, EoiExitMap, ScanEntry, Source, VmcsUpdate};
use crate::ioapic::{IoapicEffects, PinSet, Rescan};
use crate::lapic::{self, Acceptance, ApicMode, LocalApic};
use crate::types::{
    ApicId, DeliveryMode, Destination, DestinationMode, InterruptMessage, Pin, RTC_GSI, VcpuId,
};
use crate::vector::Vector;

/// Counters a VMM or the simulator can read per vCPU.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct VcpuStats {
    /// Rescans of this vCPU.
    pub rescans: u64,
    /// Entries scanned in those rescans.
    pub entries_scanned: u64,
    /// VMCS `EOI_EXIT_BITMAPn` words written.
    pub vmcs_words: u64,
    /// Intercepted EOIs (VM exits).
    pub eoi_exits: u64,
}

/// One vCPU's interrupt state.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Vcpu {
    /// Its local APIC.
    pub apic: LocalApic,
    /// Its EOI-exit map.
    pub map: EoiExitMap,
    /// Counters.
    pub stats: VcpuStats,
}

/// A set of vCPUs (indices 0..=255): a [`Set256`](crate::Set256) of
/// [`VcpuId`].
pub type VcpuSet = crate::set::Set256<VcpuId>;

/// One I/O APIC and `VCPUS` vCPUs. See the module docs.
///
/// # Examples
///
/// Snapshot and restore ([`Irqchip::state`], [`Irqchip::from_state`]): the
/// state is plain data, so a copy taken mid-interrupt carries on exactly.
///
/// ```
/// use eoi_exit::{
///     ApicMode, Irqchip, IrqchipConfig, Pin, RedirectionEntry, TriggerMode, VcpuId, Vector,
/// };
///
/// let chip: Irqchip<2> = Irqchip::new(IrqchipConfig::default(), ApicMode::XApic);
/// let (pin, v, vcpu1) = (Pin::new(3), Vector::new(0x40), VcpuId::new(1));
/// let _ = chip.write_entry(pin, RedirectionEntry::fixed(v, TriggerMode::Level, 1).bits());
/// let _ = chip.vmcs_update(vcpu1);
/// let _ = chip.set_line(pin, true); // delivered to vCPU 1, remote IRR set
///
/// let snap = chip.state();
/// let copy: Irqchip<2> = Irqchip::from_state(&snap).expect("a valid snapshot");
/// assert_eq!(copy.state(), snap);
/// assert!(copy.ioapic().entry(pin).unwrap().remote_irr());
///
/// // A fresh VMCS on the destination gets the whole loaded bitmap:
/// // `vmcs_update` reports only changes since the last load, which the
/// // snapshot says already happened.
/// let words = copy.vcpu(vcpu1).unwrap().map.loaded().as_u64_words();
/// assert_eq!(words, [0, 1, 0, 0]); // vector 0x40
/// assert!(copy.vmcs_update(vcpu1).is_none());
///
/// // The interrupt completes on the copy.
/// assert_eq!(copy.ack(vcpu1), Some(v));
/// let _ = copy.set_line(pin, false);
/// assert!(copy.guest_eoi(vcpu1).reached_ioapic);
/// assert!(!copy.ioapic().entry(pin).unwrap().remote_irr());
/// ```
pub struct Irqchip<const VCPUS: usize, const PINS: usize = 24> {
    config: IrqchipConfig,
    ioapic: Mutex<Ioapic<PINS>>,
    /// Physical destinations 0..=255 -> matching vCPUs (KVM's optimized APIC
    /// map): rebuilt whenever LAPIC addressing changes, so a redirection write
    /// or a delivery touches only the vCPUs it names.
    phys_map: Mutex<[VcpuSet; 256]>,
    vcpus: [Mutex<Vcpu>; VCPUS],
}

impl<const VCPUS: usize, const PINS: usize> core::fmt::Debug for Irqchip<VCPUS, PINS> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Irqchip")
            .field("config", &self.config)
            .field("vcpus", &VCPUS)
            .finish()
    }
}

/// A consistent copy: every lock is held at once, taken in the crate's lock
/// order (I/O APIC, physical-ID map, vCPUs in index order), so a clone made
/// while other threads call in is a state the chip actually passed through.
impl<const VCPUS: usize, const PINS: usize> Clone for Irqchip<VCPUS, PINS> {
    fn clone(&self) -> Self {
        let io = self.ioapic.lock();
        let map = self.phys_map.lock();
        let guards: [_; VCPUS] = core::array::from_fn(|i| self.vcpus[i].lock());
        Irqchip {
            config: self.config,
            ioapic: Mutex::new(io.clone()),
            phys_map: Mutex::new(*map),
            vcpus: core::array::from_fn(|i| Mutex::new(*guards[i])),
        }
    }
}

impl<const VCPUS: usize, const PINS: usize> Irqchip<VCPUS, PINS> {
    const CHECK: () = assert!(VCPUS >= 1 && VCPUS <= 256, "1..=256 vCPUs");

    /// vCPU `i` gets APIC ID `i`, software-enabled, in `mode`.
    pub fn new(config: IrqchipConfig, mode: ApicMode) -> Self {
        Self::with_apics(
            config,
            core::array::from_fn(|i| LocalApic::new_enabled(ApicId::new(i as u32), mode)),
        )
    }

    /// With explicit local APICs (IDs, modes, LDRs set by the caller).
    pub fn with_apics(config: IrqchipConfig, apics: [LocalApic; VCPUS]) -> Self {
        #[allow(clippy::let_unit_value)]
        let () = Self::CHECK;
        let chip = Irqchip {
            config,
            ioapic: Mutex::new(Ioapic::new(config.ioapic)),
            phys_map: Mutex::new([VcpuSet::default(); 256]),
            vcpus: apics.map(|apic| {
                Mutex::new(Vcpu {
                    apic,
                    map: EoiExitMap::new(config.policy),
                    stats: VcpuStats::default(),
                })
            }),
        };
        {
            let io = chip.ioapic.lock();
            chip.rebuild_phys_map();
            for i in 0..VCPUS {
                chip.rescan_locked(&io, &mut chip.vcpus[i].lock());
            }
        }
        chip
    }

    /// The configuration.
    pub fn config(&self) -> &IrqchipConfig {
        &self.config
    }

    /// Locks and returns the I/O APIC (for reads and host-side inspection).
    pub fn ioapic(&self) -> spin::MutexGuard<'_, Ioapic<PINS>> {
        self.ioapic.lock()
    }

    /// Locks and returns one vCPU's state. Do not hold it across other calls.
    pub fn vcpu(&self, vcpu: VcpuId) -> Option<spin::MutexGuard<'_, Vcpu>> {
        self.vcpus.get(vcpu.index()).map(|m| m.lock())
    }

    /// Number of vCPUs.
    pub const fn vcpus(&self) -> usize {
        VCPUS
    }

    // ---- guest MMIO and host inputs ------------------------------------

    /// A guest read of the I/O APIC window.
    pub fn mmio_read(&self, offset: u64, size: u32) -> u64 {
        self.ioapic.lock().mmio_read(offset, size)
    }

    /// A guest write to the I/O APIC window.
    pub fn mmio_write(&self, offset: u64, size: u32, value: u64) -> Effects {
        let mut io = self.ioapic.lock();
        let a = io.mmio_write(offset, size, value);
        self.apply(&mut io, a)
    }

    /// A host-side write of a whole redirection entry.
    ///
    /// It behaves like a guest writing both halves: the entry's old and new
    /// destinations are rescanned (and listed in [`Effects::reload`]) before
    /// anything is delivered, and [`Effects::route_changed`] names the pin.
    ///
    /// # Examples
    ///
    /// Retargeting a level entry from APIC ID 2 to APIC ID 3 rescans exactly
    /// those two vCPUs: the bit moves with the route.
    ///
    /// ```
    /// use eoi_exit::{
    ///     ApicMode, Irqchip, IrqchipConfig, Pin, RedirectionEntry, TriggerMode, VcpuId, Vector,
    /// };
    ///
    /// let chip: Irqchip<4> = Irqchip::new(IrqchipConfig::default(), ApicMode::XApic);
    /// let (pin, v) = (Pin::new(9), Vector::new(0x51));
    /// let entry = |apic_id| RedirectionEntry::fixed(v, TriggerMode::Level, apic_id).bits();
    ///
    /// // The reset entry (masked) points at APIC ID 0: vCPU 0 is rescanned too.
    /// let fx = chip.write_entry(pin, entry(2));
    /// assert_eq!(fx.reload.iter().map(VcpuId::get).collect::<Vec<_>>(), [0, 2]);
    ///
    /// let fx = chip.write_entry(pin, entry(3));
    /// assert_eq!(fx.reload.iter().map(VcpuId::get).collect::<Vec<_>>(), [2, 3]);
    /// assert_eq!(fx.route_changed, Some(pin));
    /// assert!(fx.deliveries.is_empty()); // the line is low
    /// assert!(!chip.vcpu(VcpuId::new(2)).unwrap().map.intercepts(v));
    /// assert!(chip.vcpu(VcpuId::new(3)).unwrap().map.intercepts(v));
    /// ```
    pub fn write_entry(&self, pin: Pin, value: u64) -> Effects {
        let mut io = self.ioapic.lock();
        let a = io.write_entry(pin, value);
        self.apply(&mut io, a)
    }

    /// Sets a pin's electrical level.
    pub fn set_line(&self, pin: Pin, level: bool) -> Effects {
        let mut io = self.ioapic.lock();
        let a = io.set_line(pin, level);
        self.apply(&mut io, a)
    }

    /// The delay after an EOI-storm throttle has elapsed for `pin`.
    pub fn deliver_later_elapsed(&self, pin: Pin) -> Effects {
        let mut io = self.ioapic.lock();
        let a = io.deliver_later_elapsed(pin);
        self.apply(&mut io, a)
    }

    /// Delivers an MSI (edge MSIs are the common case; their EOIs matter to
    /// nobody, so they are tagged [`Source::Plain`]).
    ///
    /// # Examples
    ///
    /// ```
    /// use eoi_exit::{
    ///     ApicMode, DeliveryMode, Destination, DestinationMode, InterruptMessage, Irqchip,
    ///     IrqchipConfig, Msi, TriggerMode, VcpuId, Vector,
    /// };
    ///
    /// let chip: Irqchip<2> = Irqchip::new(IrqchipConfig::default(), ApicMode::XApic);
    /// let msg = InterruptMessage {
    ///     destination: Destination { id: 1, mode: DestinationMode::Physical },
    ///     delivery_mode: DeliveryMode::Fixed,
    ///     vector: Vector::new(0x61),
    ///     trigger: TriggerMode::Edge,
    /// };
    /// // A device's MSI write arrives as address/data; decode it first.
    /// let msi = Msi::from_message(&msg);
    /// let fx = chip.send_msi(&msi.message().unwrap());
    /// assert_eq!(fx.deliveries[0].vcpu, VcpuId::new(1));
    /// assert!(fx.deliveries[0].pin.is_none()); // not from an I/O APIC pin
    /// // An edge MSI's EOI is nobody's business: nothing to intercept.
    /// assert!(chip.vmcs_update(VcpuId::new(1)).is_none());
    /// ```
    pub fn send_msi(&self, msg: &InterruptMessage) -> Effects {
        let mut fx = Effects::default();
        let source = if msg.trigger.is_level() {
            Source::NeedsEoi
        } else {
            Source::Plain
        };
        self.deliver(msg, None, source, &mut fx);
        fx
    }

    /// Applies a change to a vCPU's LAPIC addressing (ID, LDR, DFR, mode,
    /// SVR). Like KVM's APIC map recalculation, every vCPU is rescanned.
    #[must_use = "the effects name every vCPU that must reload its VMCS"]
    pub fn update_lapic<R>(
        &self,
        vcpu: VcpuId,
        f: impl FnOnce(&mut LocalApic) -> R,
    ) -> Option<(R, Effects)> {
        let io = self.ioapic.lock();
        let r = {
            let mut v = self.vcpus.get(vcpu.index())?.lock();
            f(&mut v.apic)
        };
        self.rebuild_phys_map();
        let mut fx = Effects::default();
        for i in 0..VCPUS {
            self.rescan_locked(&io, &mut self.vcpus[i].lock());
            fx.reload.insert(VcpuId::new(i as u16));
        }
        Some((r, fx))
    }

    // ---- the guest on one vCPU ----------------------------------------

    /// The guest takes an interrupt (INTA): highest deliverable IRR vector to
    /// ISR. `None` when nothing is deliverable.
    pub fn ack(&self, vcpu: VcpuId) -> Option<Vector> {
        self.vcpus.get(vcpu.index())?.lock().apic.ack()
    }

    /// The guest writes EOI on `vcpu`.
    ///
    /// The LAPIC retires its highest in-service vector; if the vCPU's bitmap
    /// has it, the EOI exits, is forwarded to the I/O APIC, and the vCPU is
    /// rescanned when its policy asks, in KVM's order (forward, then rescan).
    ///
    /// This models the guest's EOI write itself, intercepted or not, and
    /// [`GuestEoi::intercepted`] says whether the hardware would have exited.
    /// Under APIC virtualization only the intercepted ones reach a VMM, as
    /// EOI-induced VM exits (see [APIC
    /// virtualization](crate#apic-virtualization-what-a-vmm-sees)).
    ///
    /// # Examples
    ///
    /// An edge interrupt's EOI completes in hardware; a level one exits and
    /// clears remote IRR.
    ///
    /// ```
    /// use eoi_exit::{
    ///     ApicMode, Irqchip, IrqchipConfig, Pin, RedirectionEntry, TriggerMode, VcpuId, Vector,
    /// };
    ///
    /// let chip: Irqchip<1> = Irqchip::new(IrqchipConfig::default(), ApicMode::XApic);
    /// let vcpu = VcpuId::new(0);
    /// let (edge, level) = (Pin::new(1), Pin::new(2));
    /// let entry = |v, trigger| RedirectionEntry::fixed(Vector::new(v), trigger, 0).bits();
    /// let _ = chip.write_entry(edge, entry(0x31, TriggerMode::Edge));
    /// let _ = chip.write_entry(level, entry(0x32, TriggerMode::Level));
    ///
    /// let _ = chip.set_line(edge, true);
    /// assert_eq!(chip.ack(vcpu), Some(Vector::new(0x31)));
    /// let eoi = chip.guest_eoi(vcpu);
    /// assert!(!eoi.level && !eoi.intercepted && !eoi.reached_ioapic);
    ///
    /// let _ = chip.set_line(level, true);
    /// assert_eq!(chip.ack(vcpu), Some(Vector::new(0x32)));
    /// let _ = chip.set_line(level, false);
    /// let eoi = chip.guest_eoi(vcpu);
    /// assert!(eoi.level && eoi.intercepted && eoi.reached_ioapic);
    /// assert!(!chip.ioapic().entry(level).unwrap().remote_irr());
    ///
    /// // ISR is empty now: a spurious EOI retires nothing.
    /// assert_eq!(chip.guest_eoi(vcpu).vector, None);
    /// ```
    pub fn guest_eoi(&self, vcpu: VcpuId) -> GuestEoi {
        let Some(slot) = self.vcpus.get(vcpu.index()) else {
            return GuestEoi::default();
        };
        let (eoi, exit) = {
            let mut v = slot.lock();
            let Some(eoi) = v.apic.eoi() else {
                return GuestEoi::default();
            };
            let Vcpu { apic, map, stats } = &mut *v;
            let exit = map.send_eoi(apic, eoi.vector, eoi.level);
            if exit.intercepted {
                stats.eoi_exits += 1;
            }
            (eoi, exit)
        };
        let forward = exit.intercepted
            && match self.config.eoi_forwarding {
                EoiForwarding::TmrLevel => eoi.broadcast,
                EoiForwarding::AllIntercepted => true,
            };
        let mut out = GuestEoi {
            vector: Some(eoi.vector),
            level: eoi.level,
            intercepted: exit.intercepted,
            reached_ioapic: forward,
            acked_pins: PinSet::new(),
            rescanned: exit.rescan,
            missed_level: exit.missed_level,
            effects: Effects::default(),
        };
        if !exit.intercepted {
            return out;
        }
        let mut io = self.ioapic.lock();
        if !self.config.ack_notifier_pins.is_empty() {
            for p in self.config.ack_notifier_pins.iter() {
                if io.entry(p).is_some_and(|e| e.vector() == eoi.vector) {
                    out.acked_pins.insert(p);
                }
            }
        }
        if forward {
            let a = io.eoi(eoi.vector);
            out.effects = self.apply(&mut io, a);
        }
        // KVM's `vcpu_enter_guest` order: KVM_REQ_IOAPIC_EOI_EXIT (forward)
        // before KVM_REQ_SCAN_IOAPIC (rescan), then the bitmap load.
        if exit.rescan {
            self.rescan_locked(&io, &mut slot.lock());
        }
        out.effects.reload.insert(vcpu);
        out
    }

    /// What the VMM must write to `vcpu`'s VMCS before the next entry.
    ///
    /// `None` when the VMCS already holds the bitmap (and for a vCPU out of
    /// range). Otherwise only the `EOI_EXIT_BITMAPn` words listed by
    /// [`VmcsUpdate::changed`] need a VMWRITE; the update counts as loaded
    /// once returned.
    ///
    /// # Examples
    ///
    /// ```
    /// use eoi_exit::{
    ///     ApicMode, Irqchip, IrqchipConfig, Pin, RedirectionEntry, TriggerMode, VcpuId, Vector,
    /// };
    ///
    /// let chip: Irqchip<1> = Irqchip::new(IrqchipConfig::default(), ApicMode::XApic);
    /// let vcpu = VcpuId::new(0);
    /// assert!(chip.vmcs_update(vcpu).is_none()); // nothing routed yet
    ///
    /// let e = RedirectionEntry::fixed(Vector::new(0xe0), TriggerMode::Level, 0);
    /// let _ = chip.write_entry(Pin::new(0), e.bits());
    /// let u = chip.vmcs_update(vcpu).unwrap();
    /// // 0xe0 = 224 = word 3, bit 32; words 0..=2 need no VMWRITE.
    /// assert_eq!(u.changed().collect::<Vec<_>>(), [(3, 1 << 32)]);
    /// assert!(chip.vmcs_update(vcpu).is_none()); // loaded
    ///
    /// // Masking the entry drops the bit under `Policy::Exact`.
    /// let _ = chip.write_entry(Pin::new(0), e.with_mask(true).bits());
    /// assert_eq!(chip.vmcs_update(vcpu).unwrap().words, [0; 4]);
    /// ```
    #[must_use = "the VMCS words must be written before the vCPU next enters the guest"]
    pub fn vmcs_update(&self, vcpu: VcpuId) -> Option<VmcsUpdate> {
        let mut v = self.vcpus.get(vcpu.index())?.lock();
        let u = v.map.take_vmcs_update();
        if let Some(u) = &u {
            v.stats.vmcs_words += u.mask.count_ones() as u64;
        }
        u
    }

    /// Rescans one vCPU now (KVM's `KVM_REQ_SCAN_IOAPIC`).
    pub fn rescan(&self, vcpu: VcpuId) {
        if let Some(slot) = self.vcpus.get(vcpu.index()) {
            let io = self.ioapic.lock();
            self.rescan_locked(&io, &mut slot.lock());
        }
    }

    // ---- internals ------------------------------------------------------

    fn rescan_locked(&self, io: &Ioapic<PINS>, v: &mut Vcpu) {
        let Vcpu { apic, map, stats } = v;
        stats.rescans += 1;
        stats.entries_scanned += PINS as u64;
        map.begin_scan();
        for (pin, e) in io.entries().iter().enumerate() {
            let se = ScanEntry::from_redirection(
                *e,
                self.config.ack_notifier_pins.contains(Pin::new(pin as u8)),
                self.config.rtc_tracking && pin == RTC_GSI.get() as usize,
            );
            map.scan_entry(apic, &se);
        }
        map.end_scan(apic);
    }

    /// Whether any vCPU still owes an RTC EOI (KVM's `rtc_status.pending_eoi`).
    fn rtc_eoi_owed(&self) -> bool {
        self.vcpus.iter().any(|v| v.lock().map.rtc_owed().is_some())
    }

    pub(crate) fn rebuild_phys_map(&self) {
        let mut map = self.phys_map.lock();
        for (id, set) in map.iter_mut().enumerate() {
            *set = VcpuSet::default();
            let d = Destination {
                id: id as u32,
                mode: DestinationMode::Physical,
            };
            for (i, slot) in self.vcpus.iter().enumerate() {
                if slot.lock().apic.matches(d) {
                    set.insert(VcpuId::new(i as u16));
                }
            }
        }
    }

    /// The vCPUs whose LAPIC matches `dest`: a table lookup for physical
    /// destinations 0..=255, a walk over every vCPU otherwise.
    fn vcpus_matching(&self, dest: Destination, out: &mut VcpuSet) {
        if dest.mode == DestinationMode::Physical && dest.id < 256 {
            out.union_with(&self.phys_map.lock()[dest.id as usize]);
            return;
        }
        for (i, slot) in self.vcpus.iter().enumerate() {
            if slot.lock().apic.matches(dest) {
                out.insert(VcpuId::new(i as u16));
            }
        }
    }

    /// Applies I/O APIC actions: rescans first (so a newly routed or
    /// unmasked entry is in the bitmap before it can deliver), then deliveries.
    fn apply(&self, io: &mut Ioapic<PINS>, a: IoapicEffects) -> Effects {
        let mut fx = Effects {
            deliver_later: a.deliver_later,
            route_changed: a.route_changed,
            ..Effects::default()
        };
        let mut targets = VcpuSet::default();
        match a.rescan {
            Rescan::None => {}
            Rescan::Targets { old, new } => {
                for d in [old, new].into_iter().flatten() {
                    self.vcpus_matching(d, &mut targets);
                }
            }
            Rescan::All => {
                for i in 0..VCPUS {
                    targets.insert(VcpuId::new(i as u16));
                }
            }
        }
        for i in targets.iter().map(VcpuId::index).take_while(|&i| i < VCPUS) {
            self.rescan_locked(io, &mut self.vcpus[i].lock());
        }
        fx.reload.union_with(&targets);
        for p in a.deliver.iter() {
            let Some(msg) = io.message(p) else { continue };
            if self.config.rtc_tracking && p.get() as u32 == RTC_GSI.get() && self.rtc_eoi_owed() {
                fx.rtc_coalesced = true;
                continue;
            }
            let source = if msg.trigger.is_level() || self.config.ack_notifier_pins.contains(p) {
                Source::NeedsEoi
            } else if self.config.rtc_tracking && p.get() as u32 == RTC_GSI.get() {
                Source::Rtc
            } else {
                Source::Plain
            };
            self.deliver(&msg, Some(p), source, &mut fx);
        }
        fx
    }

    fn deliver(&self, msg: &InterruptMessage, pin: Option<Pin>, source: Source, fx: &mut Effects) {
        if !msg.delivery_mode.uses_vector() {
            return;
        }
        if msg.delivery_mode == DeliveryMode::LowestPriority {
            let target = {
                // All vCPU locks, in index order (the documented lock order).
                let guards: [_; VCPUS] = core::array::from_fn(|i| self.vcpus[i].lock());
                let apics = guards.iter().map(|v| &v.apic).enumerate();
                match self.config.arbitration {
                    Arbitration::KvmVectorHashing => lapic::lowest_priority_kvm(apics, msg),
                    Arbitration::SdmPriority => lapic::lowest_priority(apics, msg),
                }
            };
            if let Some(i) = target {
                self.accept_on(i, msg, pin, source, fx);
            }
            return;
        }
        let mut targets = VcpuSet::default();
        self.vcpus_matching(msg.destination, &mut targets);
        for i in targets.iter().map(VcpuId::index).take_while(|&i| i < VCPUS) {
            self.accept_on(i, msg, pin, source, fx);
        }
    }

    fn accept_on(
        &self,
        i: usize,
        msg: &InterruptMessage,
        pin: Option<Pin>,
        source: Source,
        fx: &mut Effects,
    ) {
        let mut v = self.vcpus[i].lock();
        let Vcpu { apic, map, .. } = &mut *v;
        let (vector, trigger, coalesced) = match apic.accept(msg) {
            Acceptance::Accepted { vector, trigger } => (vector, trigger, false),
            Acceptance::Coalesced { vector, trigger } => (vector, trigger, true),
            Acceptance::Ignored(_) => return,
        };
        let accepted = Accepted {
            vector,
            trigger,
            coalesced,
            source,
        };
        let before = *map.bitmap();
        map.on_accept(apic, accepted);
        if *map.bitmap() != before {
            // The VMCS must hold the new bit before the guest can take this
            // interrupt (TmrDriven sets it here; Exact for RTC and untracked
            // level sources).
            fx.reload.insert(VcpuId::new(i as u16));
        }
        let d = Delivery {
            vcpu: VcpuId::new(i as u16),
            accepted,
            pin,
        };
        if fx.deliveries.push(d).is_err() {
            fx.overflow += 1;
        }
    }
}

// ---- snapshot hooks (used by src/snapshot; keep additive) ------------------

impl<const VCPUS: usize, const PINS: usize> Irqchip<VCPUS, PINS> {
    /// Locks the I/O APIC, then every vCPU in index order (the documented lock
    /// order), for a consistent snapshot.
    pub(crate) fn lock_all(
        &self,
    ) -> (
        spin::MutexGuard<'_, Ioapic<PINS>>,
        [spin::MutexGuard<'_, Vcpu>; VCPUS],
    ) {
        let io = self.ioapic.lock();
        let vcpus = core::array::from_fn(|i| self.vcpus[i].lock());
        (io, vcpus)
    }

    /// Exclusive access to every part, for a snapshot restore.
    pub(crate) fn parts_mut(
        &mut self,
    ) -> (
        &mut IrqchipConfig,
        &mut Ioapic<PINS>,
        &mut [Mutex<Vcpu>; VCPUS],
    ) {
        (&mut self.config, self.ioapic.get_mut(), &mut self.vcpus)
    }

    /// Host-side I/O APIC restore as `KVM_SET_IRQCHIP` does it
    /// ([`Ioapic::set_registers`]: every vCPU rescans, pending pins are re-injected).
    #[cfg_attr(not(feature = "kvm"), allow(dead_code))]
    pub(crate) fn restore_ioapic_reinject(&self, state: &crate::IoapicRegisters<PINS>) -> Effects {
        let mut io = self.ioapic.lock();
        let a = io.set_registers(state);
        self.apply(&mut io, a)
    }
}

#[cfg(test)]
mod tests;
