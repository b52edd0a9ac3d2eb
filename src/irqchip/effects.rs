//! What an [`Irqchip`](super::Irqchip) call tells the VMM to do: the
//! deliveries to inject, the vCPUs to reload, and the outcome of a guest EOI.

use crate::exit_bitmap::Accepted;
use crate::ioapic::PinSet;
use crate::types::{Pin, VcpuId};
use crate::vector::Vector;

use super::VcpuSet;
#[cfg(doc)]
use super::{EoiForwarding, Irqchip};

/// One interrupt accepted by one vCPU.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct Delivery {
    /// The accepting vCPU.
    pub vcpu: VcpuId,
    /// What it accepted.
    pub accepted: Accepted,
    /// The I/O APIC pin it came from, `None` for an MSI.
    pub pin: Option<Pin>,
}

/// Deliveries from one call: at most one per vCPU per pin in practice, bounded
/// here so nothing allocates; `overflow` counts any that did not fit (they
/// were still accepted).
pub const MAX_DELIVERIES: usize = 64;

/// What one [`Irqchip`] call did.
#[must_use = "accepted interrupts must be injected and rescanned vCPUs reloaded"]
#[derive(Clone, Debug, Default)]
pub struct Effects {
    /// Interrupts accepted into LAPIC IRRs; the VMM MUST make each vCPU
    /// notice (inject, post or kick).
    pub deliveries: heapless::Vec<Delivery, MAX_DELIVERIES>,
    /// Deliveries that did not fit in `deliveries` (still accepted).
    pub overflow: u32,
    /// vCPUs rescanned by this call: they MUST load their VMCS update before
    /// they next run guest code.
    pub reload: VcpuSet,
    /// Pins the I/O APIC throttled (EOI storm): call
    /// [`Irqchip::deliver_later_elapsed`] for each after a delay (KVM: 10 ms).
    pub deliver_later: PinSet,
    /// A redirection entry changed: a split-irqchip VMM re-installs its route.
    pub route_changed: Option<Pin>,
    /// An RTC interrupt was dropped because a vCPU still owes the previous
    /// one's EOI (KVM's `rtc_irq_check_coalesced`, with `rtc_tracking`).
    pub rtc_coalesced: bool,
}

/// The outcome of a guest EOI on one vCPU.
#[must_use = "check `intercepted` to know whether this EOI caused a VM exit"]
#[derive(Clone, Debug, Default)]
pub struct GuestEoi {
    /// The vector retired, `None` for a spurious EOI (ISR empty).
    pub vector: Option<Vector>,
    /// The TMR bit of the retired vector.
    pub level: bool,
    /// The EOI caused a VM exit: its vector was in the bitmap the VMCS held.
    pub intercepted: bool,
    /// The intercepted EOI was passed on to the I/O APIC, which cleared remote
    /// IRR of the entries with that vector (see [`EoiForwarding`]). An EOI can
    /// be intercepted without reaching the I/O APIC (an edge vector under
    /// [`EoiForwarding::TmrLevel`], or directed EOI).
    pub reached_ioapic: bool,
    /// Ack-notifier pins whose entry has this vector: the VMM MUST run their
    /// notifiers (KVM's `kvm_notify_acked_irq`, for edge and level alike).
    pub acked_pins: PinSet,
    /// The vCPU was rescanned because of it.
    pub rescanned: bool,
    /// `NoIntercept`: a level EOI the I/O APIC never saw.
    pub missed_level: bool,
    /// What forwarding the EOI to the I/O APIC caused.
    pub effects: Effects,
}
