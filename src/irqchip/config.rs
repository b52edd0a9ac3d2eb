//! [`IrqchipConfig`] and the choices it makes: EOI forwarding and
//! lowest-priority arbitration.

use crate::exit_bitmap::Policy;
use crate::ioapic::{IoapicConfig, PinSet};

#[cfg(doc)]
use super::Irqchip;

/// Which intercepted EOIs reach the I/O APIC, and whether the guest's
/// directed EOI (SVR bit 12, "suppress EOI broadcast") is honoured.
///
/// The default is [`EoiForwarding::TmrLevel`], the rule of the SDM and of
/// KVM's in-kernel I/O APIC: an EOI goes to the I/O APIC only when it retires
/// a level-triggered interrupt and the vCPU has not suppressed EOI
/// broadcasts. Choose [`EoiForwarding::AllIntercepted`] to model KVM's split
/// irqchip, where the userspace I/O APIC sees every intercepted EOI, or
/// [`EoiForwarding::AllInterceptedUnlessSuppressed`] for the split irqchip
/// with `KVM_X2APIC_ENABLE_SUPPRESS_EOI_BROADCAST`.
///
/// # Directed EOI (suppress EOI broadcast)
///
/// A guest sets SVR bit 12 only when the LAPIC version register advertises
/// it (bit 24: [`LapicWrite::DirectedEoi`](super::LapicWrite::DirectedEoi),
/// per vCPU, off by default). It then EOIs level interrupts at the I/O
/// APIC's EOI register itself (offset 0x40, version 0x20:
/// [`IoapicVersion::V20`](crate::IoapicVersion::V20)), and the LAPIC EOI of
/// a level interrupt is not broadcast (SDM Vol. 3, "EOI Register"). KVM
/// (Linux 6.18.17 and later, `KVM_CAP_X2APIC_API`) maps to this model as
/// follows:
///
/// | KVM | advertises bit 24 | SVR bit 12 | `eoi_forwarding` | `DirectedEoi` |
/// |---|---|---|---|---|
/// | in-kernel I/O APIC (0x11, no EOI register) | no | cannot be set by the guest | `TmrLevel` | `false` |
/// | split, neither flag (KVM's default, "quirked") | with x2APIC in CPUID | ignored: every EOI of a handled vector exits to userspace | `AllIntercepted` | `true` |
/// | split, `KVM_X2APIC_ENABLE_SUPPRESS_EOI_BROADCAST` | with x2APIC in CPUID | honoured: no exit to userspace, edge or level | `AllInterceptedUnlessSuppressed` | `true` |
/// | split, `KVM_X2APIC_DISABLE_SUPPRESS_EOI_BROADCAST` | no | cannot be set | `AllIntercepted` | `false` |
///
/// `TmrLevel` with a version-0x20 I/O APIC and `DirectedEoi(true)` is the
/// SDM's behaviour (KVM's in-kernel I/O APIC has no EOI register, so there
/// the guest could not complete a suppressed EOI). One KVM corner is not
/// modelled: a host that plants SVR bit 12 with `KVM_SET_LAPIC` into an
/// in-kernel irqchip, which does not advertise it, has it honoured by KVM
/// (remote IRR then stays set); the model honours bit 12 only while
/// directed EOI is advertised. In every mode the EOI
/// still runs the ack notifiers and settles an owed RTC EOI (KVM's
/// `kvm_ioapic_update_eoi_one` runs the notifiers before it checks bit 12),
/// so an EOI that one of them needs is still intercepted; and KVM's
/// policies still intercept it (KVM's scans do not read SVR bit 12), which
/// the census counts as avoidable exits. [`Policy::Exact`] drops them.
///
/// # Examples
///
/// A directed-EOI guest (SDM): the LAPIC EOI of a level interrupt neither
/// exits under `Exact` nor reaches the I/O APIC; the guest's write of the
/// vector to the EOI register clears remote IRR and re-delivers the line,
/// still asserted.
///
/// ```
/// use eoi_exit::irqchip::{Effects, LapicWrite};
/// use eoi_exit::{
///     ApicMode, IoapicConfig, IoapicVersion, Irqchip, IrqchipConfig, Pin, RedirectionEntry,
///     TriggerMode, VcpuId, VcpuSlot, Vector,
/// };
///
/// let config = IrqchipConfig {
///     ioapic: IoapicConfig { version: IoapicVersion::V20, ..IoapicConfig::default() },
///     ..IrqchipConfig::default() // Policy::Exact, EoiForwarding::TmrLevel
/// };
/// let chip: Irqchip<_> = Irqchip::new(config, ApicMode::X2Apic, [VcpuSlot::new()]);
/// let (vcpu, pin, v) = (VcpuId::new(0), Pin::new(10), Vector::new(0x4a));
/// let mut fx = Effects::new();
/// chip.write_lapic(vcpu, LapicWrite::DirectedEoi(true), &mut fx); // version bit 24
/// let svr = LapicWrite::Register { offset: 0xF0, value: 0x1FF | 1 << 12 };
/// chip.write_lapic(vcpu, svr, &mut fx); // the guest sets SVR bit 12
/// chip.write_entry(pin, RedirectionEntry::fixed(v, TriggerMode::Level, 0).0, &mut fx);
///
/// chip.set_line(pin, true, &mut fx);
/// assert_eq!(chip.ack(vcpu), Some(v));
/// let eoi = chip.guest_eoi(vcpu, &mut fx);
/// assert!(eoi.level && !eoi.intercepted && !eoi.reached_ioapic && !eoi.missed_level);
/// assert!(chip.ioapic().entry(pin).unwrap().remote_irr());
///
/// fx.clear();
/// chip.mmio_write(0x40, 4, 0x4a, &mut fx); // the I/O APIC's EOI register
/// assert!(fx.kick.contains(vcpu)); // the asserted line is delivered again
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum EoiForwarding {
    /// The SDM and KVM's in-kernel I/O APIC (`kvm_ioapic_update_eoi_one`):
    /// only an EOI whose TMR bit is set is broadcast, and not when the guest
    /// enabled directed EOI (SVR bit 12); it then writes the I/O APIC's EOI
    /// register itself.
    #[default]
    TmrLevel,
    /// KVM's split irqchip (by default, and with
    /// `KVM_X2APIC_DISABLE_SUPPRESS_EOI_BROADCAST`): every intercepted EOI
    /// exits to userspace (`KVM_EXIT_IOAPIC_EOI` carries only the vector),
    /// and the userspace I/O APIC clears remote IRR of every level entry
    /// with that vector, even for an edge instance's EOI. SVR bit 12 is
    /// ignored (KVM's "quirk": it advertises directed EOI and broadcasts
    /// anyway).
    AllIntercepted,
    /// KVM's split irqchip with `KVM_X2APIC_ENABLE_SUPPRESS_EOI_BROADCAST`:
    /// as `AllIntercepted`, except that while the vCPU has SVR bit 12 set
    /// (and directed EOI advertised) no EOI reaches the I/O APIC, edge or
    /// level (`kvm_ioapic_send_eoi` returns before the userspace exit).
    AllInterceptedUnlessSuppressed,
}

impl EoiForwarding {
    /// Whether SVR bit 12 stops the broadcast in this mode.
    #[inline]
    pub(crate) const fn honours_suppression(self) -> bool {
        !matches!(self, EoiForwarding::AllIntercepted)
    }
}

/// How a lowest-priority message picks its vCPU.
///
/// The default is [`Arbitration::KvmVectorHashing`], what a guest gets from
/// KVM out of the box (module parameter `vector_hashing=1`), so runs compare
/// directly with real KVM; [`Arbitration::SdmPriority`] is the SDM's
/// arbitration-priority rule for hardware semantics. Both are deterministic.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum Arbitration {
    /// KVM's default (`vector_hashing=1`): the `(vector % n)`-th of the `n`
    /// matching, enabled vCPUs.
    #[default]
    KvmVectorHashing,
    /// The SDM's arbitration priority; ties go to the lowest vCPU index.
    SdmPriority,
}

/// Configuration of an [`Irqchip`].
///
/// `IrqchipConfig::default()` is:
///
/// | field | default | why |
/// |---|---|---|
/// | `policy` | [`Policy::Exact`] | loses no EOI and makes no avoidable exit |
/// | `ioapic` | `IoapicConfig::default()` (version 0x11, [`MaskedEdge::Latch`](crate::MaskedEdge::Latch), ID 0) | KVM's in-kernel I/O APIC |
/// | `ack_notifier_pins` | empty | notifiers belong to the VMM's devices (INTx of assigned devices, PIT reinjection) |
/// | `resample_pins` | empty | resamplers belong to the VMM's devices (VFIO INTx) |
/// | `rtc_tracking` | `false` | GSI 8 is an ordinary pin; KVM's RTC tracking is a Windows time-drift workaround |
/// | `arbitration` | [`Arbitration::KvmVectorHashing`] | KVM's default (`vector_hashing=1`) |
/// | `eoi_forwarding` | [`EoiForwarding::TmrLevel`] | the SDM and KVM's in-kernel I/O APIC |
///
/// KVM's in-kernel I/O APIC always counts GSI 8 in its scans
/// (`kvm_ioapic_scan_entry`) and drops an RTC interrupt raised with line
/// status while an earlier one's EOI is owed; set `rtc_tracking` to model it.
///
/// # Examples
///
/// ```
/// use eoi_exit::irqchip::{Arbitration, EoiForwarding};
/// use eoi_exit::{IoapicConfig, IoapicVersion, IrqchipConfig, MaskedEdge, Policy};
///
/// let c = IrqchipConfig::default();
/// assert_eq!(c.policy, Policy::Exact);
/// assert_eq!(c.ioapic, IoapicConfig::default());
/// assert!(c.ack_notifier_pins.is_empty() && c.resample_pins.is_empty() && !c.rtc_tracking);
/// assert_eq!(c.arbitration, Arbitration::KvmVectorHashing);
/// assert_eq!(c.eoi_forwarding, EoiForwarding::TmrLevel);
///
/// // Linux 6.16's in-kernel irqchip, for comparing exit counts with KVM.
/// let kvm = IrqchipConfig {
///     policy: Policy::KvmHighestStale,
///     rtc_tracking: true,
///     ..IrqchipConfig::default()
/// };
/// assert_eq!(kvm.arbitration, Arbitration::KvmVectorHashing);
///
/// // KVM's split irqchip with QEMU's I/O APIC (version 0x20, masked edges
/// // dropped): every intercepted EOI exits to the userspace I/O APIC.
/// let split = IrqchipConfig {
///     policy: Policy::KvmHighestStale,
///     ioapic: IoapicConfig {
///         version: IoapicVersion::V20,
///         masked_edge: MaskedEdge::Drop,
///         ..IoapicConfig::default()
///     },
///     eoi_forwarding: EoiForwarding::AllIntercepted,
///     ..IrqchipConfig::default()
/// };
/// assert!(!split.rtc_tracking); // the RTC is in userspace too
/// ```
///
/// A passed-through INTx line (VFIO) with a resampler: the device's handler
/// quiets it, the EOI lowers the line before the I/O APIC sees the EOI, so
/// nothing is re-delivered, and the VMM tells the device to resample.
///
/// ```
/// use eoi_exit::irqchip::Effects;
/// use eoi_exit::{
///     ApicMode, Irqchip, IrqchipConfig, Pin, PinSet, RedirectionEntry, TriggerMode, VcpuId,
///     VcpuSlot, Vector,
/// };
///
/// let intx = Pin::new(11);
/// let mut resample_pins = PinSet::EMPTY;
/// resample_pins.insert(intx);
/// let config = IrqchipConfig { resample_pins, ..IrqchipConfig::default() };
/// let chip: Irqchip<_> = Irqchip::new(config, ApicMode::XApic, [VcpuSlot::new()]);
/// let (vcpu, v) = (VcpuId::new(0), Vector::new(0x3b));
/// let mut fx = Effects::new();
/// chip.write_entry(intx, RedirectionEntry::fixed(v, TriggerMode::Level, 0).0, &mut fx);
///
/// chip.set_line(intx, true, &mut fx); // the device's eventfd fired
/// assert_eq!(chip.ack(vcpu), Some(v));
/// fx.clear();
/// let eoi = chip.guest_eoi(vcpu, &mut fx);
/// assert!(eoi.acked_pins.contains(intx)); // signal the resample eventfd
/// assert!(fx.kick.is_empty()); // nothing re-delivered
/// assert!(!chip.ioapic().entry(intx).unwrap().remote_irr());
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct IrqchipConfig {
    /// The interception policy of every vCPU.
    pub policy: Policy,
    /// The I/O APIC's configuration.
    pub ioapic: IoapicConfig,
    /// Pins with an ack notifier: their EOIs count even when edge.
    pub ack_notifier_pins: PinSet,
    /// Pins whose ack notifier is a *resampler*, as KVM's irqfd with
    /// `KVM_IRQFD_FLAG_RESAMPLE` (VFIO INTx) installs: an intercepted EOI of
    /// the pin's vector deasserts the pin's line *before* the I/O APIC clears
    /// remote IRR and re-services the pin, in KVM's order
    /// (`kvm_ioapic_update_eoi_one` runs the notifiers first), so a device
    /// that was quiesced in its handler gets no spurious second interrupt.
    /// The pin is reported in [`GuestEoi::acked_pins`](super::GuestEoi); the
    /// VMM then signals the device's resample event, and the device
    /// reasserts the line ([`Irqchip::set_line`](super::Irqchip::set_line))
    /// if it still needs service. A resample pin is an ack-notifier pin
    /// whether or not it is also in `ack_notifier_pins`.
    #[cfg_attr(feature = "serde", serde(default))]
    pub resample_pins: PinSet,
    /// KVM's in-kernel RTC EOI tracking on GSI 8.
    pub rtc_tracking: bool,
    /// Lowest-priority arbitration.
    pub arbitration: Arbitration,
    /// Which intercepted EOIs reach the I/O APIC.
    pub eoi_forwarding: EoiForwarding,
}

impl IrqchipConfig {
    /// The pins with an ack notifier, resamplers included.
    pub(crate) fn notified_pins(&self) -> PinSet {
        self.ack_notifier_pins.union(&self.resample_pins)
    }

    /// [`IrqchipConfig::notified_pins`] below 32 as a mask: an `Irqchip` has
    /// at most 32 pins, and its EOI and delivery paths test this one word.
    pub(crate) fn notified_mask(&self) -> u32 {
        self.notified_pins().as_u64_words()[0] as u32
    }
}
