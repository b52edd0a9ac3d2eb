//! [`IrqchipState`]: the saved state of an [`Irqchip`], beside it.

use super::{Irqchip, IrqchipConfig, Shared, Vcpu, VcpuEvents, VcpuSlot, VcpuStats};
#[cfg(doc)]
use crate::EoiExitMap;
use crate::exit_bitmap::EoiExitMapState;
use crate::ioapic::IoapicState;
use crate::lapic::{LocalApic, LocalApicState};
use crate::snapshot::{SNAPSHOT_VERSION, SnapshotError, check_version, first_pin_beyond};
use crate::types::{ApicId, VcpuId};

/// One vCPU of an [`IrqchipState`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct VcpuState {
    /// Its local APIC.
    pub apic: LocalApicState,
    /// Its EOI-exit map.
    pub map: EoiExitMapState,
    /// Its counters.
    pub stats: VcpuStats,
    /// Its pending non-vectored events and wait-for-SIPI state (the
    /// pending role of [`VcpuEvents`]; at most 2 NMIs). Absent from
    /// snapshots before version 4 (nothing pending, running).
    #[cfg_attr(feature = "serde", serde(default))]
    pub events: VcpuEvents,
}

/// Everything an [`Irqchip`] holds: configuration, I/O APIC, every vCPU.
///
/// `V` holds the vCPUs, by index: a `Vec<VcpuState>`, a `Box<[VcpuState]>`,
/// an array or a `heapless::Vec`, whatever the VMM's storage is
/// ([`Irqchip::state`] collects into any `FromIterator`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct IrqchipState<V, const PINS: usize = 24> {
    /// [`SNAPSHOT_VERSION`].
    pub version: u16,
    /// The chip's configuration (policy, ack notifier pins, RTC tracking,
    /// arbitration, EOI forwarding, I/O APIC configuration).
    pub config: IrqchipConfig,
    /// The I/O APIC.
    pub ioapic: IoapicState<PINS>,
    /// Every vCPU, by index.
    pub vcpus: V,
}

impl<V: AsRef<[VcpuState]>, const PINS: usize> IrqchipState<V, PINS> {
    /// Checks everything [`Irqchip::restore`] checks, except the vCPU count
    /// of the chip restored into: 1..=[`MAX_VCPUS`](crate::MAX_VCPUS) vCPUs, each valid under the
    /// configuration's policy.
    pub fn validate(&self) -> Result<(), SnapshotError> {
        check_version(self.version)?;
        let vcpus = self.vcpus.as_ref();
        if !(1..=crate::MAX_VCPUS).contains(&vcpus.len()) {
            return Err(SnapshotError::Shape {
                what: "vCPUs",
                expected: vcpus.len().clamp(1, crate::MAX_VCPUS),
                found: vcpus.len(),
            });
        }
        self.ioapic.validate()?;
        if self.ioapic.config != self.config.ioapic {
            return Err(SnapshotError::inconsistent(
                None,
                "the I/O APIC snapshot's configuration differs from the irqchip's",
            ));
        }
        if let Some(pin) = first_pin_beyond(&self.config.notified_pins(), PINS) {
            return Err(SnapshotError::invalid(
                "ack_notifier_pins (a pin beyond the pin count)",
                pin.into(),
            ));
        }
        for (i, v) in vcpus.iter().enumerate() {
            v.validate(self.config.policy, i as u16)?;
        }
        Ok(())
    }
}

impl VcpuState {
    fn validate(&self, policy: crate::Policy, vcpu: u16) -> Result<(), SnapshotError> {
        let at = |e: SnapshotError| e.at_vcpu(vcpu);
        self.apic.validate().map_err(at)?;
        if self.events.nmi > VcpuEvents::NMI_MAX {
            return Err(at(SnapshotError::invalid(
                "events.nmi (KVM keeps at most 2 NMIs pending)",
                self.events.nmi.into(),
            )));
        }
        if self.map.policy() != policy {
            return Err(SnapshotError::PolicyMismatch {
                vcpu,
                expected: policy,
                found: self.map.policy(),
            });
        }
        self.map.validate_with(&self.apic).map_err(at)
    }
}

impl Vcpu {
    fn state(&self) -> VcpuState {
        VcpuState {
            apic: self.apic.state(),
            map: self.map.state(),
            stats: self.stats,
            events: self.apic.events.get(),
        }
    }

    fn set_state(&mut self, s: &VcpuState) {
        s.apic.apply(&mut self.apic);
        self.map.set_state(&s.map);
        self.stats = s.stats;
        self.apic.events = super::PackedEvents::pack(s.events);
    }
}

impl<S: AsRef<[VcpuSlot]>, const PINS: usize> Irqchip<S, PINS> {
    /// A consistent snapshot, collected into `V` (a `Vec<VcpuState>`, a
    /// `Box<[VcpuState]>`, a `heapless::Vec`...): the shared lock is held
    /// while every vCPU is copied, so no input is half-seen.
    ///
    /// It may be taken at any moment. Under
    /// [`Policy::LineAware`](crate::Policy::LineAware) it is a state the
    /// reference semantics can be in: a lazy instance retired without an
    /// exit is settled first where its EOI would have delivered nothing
    /// (event (d)), and one the guest retired in the race window (the line
    /// asserted again, the vCPU named in [`Effects::exit`](super::Effects::exit)
    /// and not yet through [`Irqchip::take_events`]) is settled in the copy
    /// only: its EOI cleared remote IRR and re-delivered the line, as the
    /// live chip will do at that vCPU's re-check. The live chip keeps its
    /// pending re-check; the copy needs none.
    ///
    /// ```
    /// use eoi_exit::irqchip::{Effects, IrqchipState, VcpuState};
    /// use eoi_exit::{
    ///     ApicMode, Irqchip, IrqchipConfig, Pin, Policy, RedirectionEntry, TriggerMode, VcpuId,
    ///     VcpuSlot, Vector,
    /// };
    ///
    /// let config = IrqchipConfig { policy: Policy::LineAware, ..IrqchipConfig::default() };
    /// let chip: Irqchip<_> = Irqchip::new(config, ApicMode::XApic, [VcpuSlot::new()]);
    /// let (pin, v, vcpu) = (Pin::new(10), Vector::new(0x50), VcpuId::new(0));
    /// let mut fx = Effects::new();
    /// chip.write_entry(pin, RedirectionEntry::fixed(v, TriggerMode::Level, 0).0, &mut fx);
    /// chip.set_line(pin, true, &mut fx);
    /// assert_eq!(chip.ack(vcpu), Some(v));
    /// chip.set_line(pin, false, &mut fx); // the handler quiets the device
    /// let _ = chip.vmcs_update(vcpu); // the VM entry loads the bit clear
    /// chip.set_line(pin, true, &mut fx); // asserted again while in service
    /// assert!(fx.exit.contains(vcpu));
    /// assert!(!chip.guest_eoi(vcpu, &mut fx).intercepted); // before the kick lands
    ///
    /// // Saved in the window: the copy holds the EOI's re-delivery.
    /// let snap: IrqchipState<Vec<VcpuState>> = chip.state();
    /// let copy: Irqchip<_> = Irqchip::from_state(&snap, [VcpuSlot::new()]).unwrap();
    /// assert!(copy.ioapic().entry(pin).unwrap().remote_irr());
    /// assert_eq!(copy.ack(vcpu), Some(v));
    /// assert!(copy.guest_eoi(vcpu, &mut fx).reached_ioapic);
    /// ```
    pub fn state<V: FromIterator<VcpuState>>(&self) -> IrqchipState<V, PINS> {
        let mut sh = self.shared.lock();
        self.settle_all(&mut sh);
        let window = self.window(&sh);
        let ioapic = window.as_ref().map_or(&sh.ioapic, |w| &w.ioapic).state();
        IrqchipState {
            version: SNAPSHOT_VERSION,
            config: self.config,
            ioapic,
            vcpus: self
                .vcpus
                .as_ref()
                .iter()
                .enumerate()
                .map(|(i, s)| match &window {
                    None => s.0.lock().state(),
                    Some(w) => {
                        let mut v = *s.0.lock();
                        self.settle_copy(w, i, &mut v);
                        v.state()
                    }
                })
                .collect(),
        }
    }

    /// Loads one vCPU's saved state verbatim (like `KVM_SET_LAPIC`, plus the
    /// map): no rescan, as [`Irqchip::restore`] does for the whole chip. The
    /// routing caches follow its LAPIC addressing, and the vCPU is added to
    /// [`Effects::reload`](super::Effects::reload): its VMCS must load the
    /// loaded map. Load what this chip (or one with the same table) saved;
    /// [`Irqchip::rescan`] re-derives the map from the table if in doubt. On
    /// error nothing changes.
    ///
    /// # Panics
    ///
    /// If `vcpu` is out of range.
    pub fn load_vcpu<L: super::DeliveryLog>(
        &self,
        vcpu: VcpuId,
        state: &VcpuState,
        fx: &mut super::Effects<L>,
    ) -> Result<(), SnapshotError> {
        state.validate(self.config.policy, vcpu.get())?;
        let mut sh = self.shared.lock();
        {
            let mut v = self.slot(vcpu.index()).lock();
            v.set_state(state);
            adopt_line_aware(&mut v);
        }
        if self.config.policy == crate::Policy::LineAware {
            // Which pins this vCPU's lazy instances came from is not saved.
            for o in sh.owner.iter() {
                if o.get() == vcpu.get() {
                    o.set(super::OWNER_NONE);
                }
            }
        }
        self.rebuild_routing(&mut sh);
        fx.reload.insert(vcpu);
        Ok(())
    }
}

impl<S, const PINS: usize> Irqchip<S, PINS>
where
    S: AsRef<[VcpuSlot]> + AsMut<[VcpuSlot]>,
{
    /// Replaces the whole chip (configuration included) with the snapshot,
    /// verbatim: no re-injection, no rescan. The VMM MUST load each vCPU's
    /// VMCS bitmap ([`Irqchip::vmcs_update`], or the whole
    /// [`EoiExitMap::bitmap`] into a fresh VMCS) before it runs, and
    /// re-arm its `deliver_later` timers. The snapshot must have as many vCPUs
    /// as the chip. On error nothing changes.
    pub fn restore<V: AsRef<[VcpuState]>>(
        &mut self,
        s: &IrqchipState<V, PINS>,
    ) -> Result<(), SnapshotError> {
        s.validate()?;
        if s.vcpus.as_ref().len() != self.vcpus() {
            return Err(SnapshotError::Shape {
                what: "vCPUs",
                expected: self.vcpus(),
                found: s.vcpus.as_ref().len(),
            });
        }
        self.config = s.config;
        self.notified = s.config.notified_mask();
        let sh = self.shared.get_mut();
        sh.ioapic
            .restore_exact(s.ioapic.config, &s.ioapic.registers());
        for (slot, v) in self.vcpus.as_mut().iter_mut().zip(s.vcpus.as_ref()) {
            slot.0.get_mut().set_state(v);
            adopt_line_aware(slot.0.get_mut());
        }
        // APIC IDs, logical addressing and entries came back verbatim: the
        // routing caches must follow them.
        let mut sh: Shared<PINS> = self.shared.get_mut().clone();
        sh.counted_edge = super::counted_edge(&s.config);
        for o in sh.owner.iter() {
            o.set(super::OWNER_NONE);
        }
        self.rebuild_routing(&mut sh);
        *self.shared.get_mut() = sh;
        Ok(())
    }

    /// A new chip in `storage` (as many slots as the snapshot has vCPUs),
    /// equal to the captured one.
    pub fn from_state<V: AsRef<[VcpuState]>>(
        s: &IrqchipState<V, PINS>,
        storage: S,
    ) -> Result<Self, SnapshotError> {
        s.validate()?;
        let found = s.vcpus.as_ref().len();
        if storage.as_ref().len() != found {
            return Err(SnapshotError::Shape {
                what: "vCPUs",
                expected: storage.as_ref().len(),
                found,
            });
        }
        let mut chip = Irqchip::with_apics(s.config, storage, |i| {
            LocalApic::new(ApicId::new(u32::from(i.get())))
        });
        chip.restore(s)?;
        Ok(chip)
    }
}

/// `LineAware`: a snapshot does not say which pin a lazy instance came from,
/// so a loaded vCPU's instances in flight are all adopted as eager (their
/// EOIs exit and reach the I/O APIC, once each).
fn adopt_line_aware(v: &mut Vcpu) {
    if v.map.policy() == crate::Policy::LineAware {
        v.map.adopt_in_flight(&v.apic);
    }
}

/// Hashes what decides the chip's behaviour from here on: the I/O APIC,
/// every vCPU's LAPIC (all of its state, its pending non-vectored events
/// included) and EOI-exit map, and under
/// [`Policy::LineAware`](crate::Policy::LineAware) which vCPU holds each
/// pin's lazy instance, which neither a snapshot nor any accessor shows.
/// Not the configuration, the counters or the routing caches (which follow
/// from the rest). Two chips of one configuration that hash alike (bar
/// collisions) answer every input alike, which is what a model checker that
/// fingerprints states needs.
impl<S: AsRef<[VcpuSlot]>, const PINS: usize> core::hash::Hash for Irqchip<S, PINS> {
    fn hash<H: core::hash::Hasher>(&self, h: &mut H) {
        let sh = self.shared.lock();
        sh.ioapic.hash(h);
        for o in &sh.owner {
            o.get().hash(h);
        }
        for slot in self.vcpus.as_ref() {
            let v = slot.0.lock();
            v.apic.state().hash(h);
            v.apic.events.get().hash(h);
            v.map.hash(h);
        }
    }
}
