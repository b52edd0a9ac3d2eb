//! What an [`Irqchip`](super::Irqchip) call tells the VMM to do: the vCPUs to
//! kick and to reload, the pins to re-service later, and the outcome of a
//! guest EOI.
//!
//! Outputs are caller-owned: every input takes `&mut Effects` and adds to it,
//! so nothing is copied when nothing happens, and a VMM can batch several
//! inputs before it acts. The duties are sets, exact at any VM size.

use crate::exit_bitmap::Accepted;
use crate::ioapic::PinSet;
use crate::types::{Pin, VcpuId};
use crate::vector::Vector;

use super::VcpuSet;
#[cfg(doc)]
use super::{EoiForwarding, Irqchip};

/// One interrupt accepted by one vCPU, for a [`DeliveryLog`].
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct Delivery {
    /// The accepting vCPU.
    pub vcpu: VcpuId,
    /// What it accepted.
    pub accepted: Accepted,
    /// The I/O APIC pin it came from, `None` for an MSI.
    pub pin: Option<Pin>,
}

/// Where [`Effects`] records each [`Delivery`], if anywhere.
///
/// A VMM needs no log: [`Effects::kick`] names every vCPU that accepted an
/// interrupt and the vectors are in its LAPIC's IRR. Tools that follow each
/// interrupt instance (an oracle, a trace) log them; the default `()` drops
/// them at no cost. The core never allocates: a log that grows is the
/// caller's (`Vec<Delivery>` under `std`).
pub trait DeliveryLog {
    /// One delivery, in the order the chip made them.
    fn record(&mut self, delivery: Delivery);
}

impl DeliveryLog for () {
    #[inline(always)]
    fn record(&mut self, _: Delivery) {}
}

/// Every delivery, in order.
#[cfg(feature = "std")]
impl DeliveryLog for std::vec::Vec<Delivery> {
    fn record(&mut self, delivery: Delivery) {
        self.push(delivery);
    }
}

/// What [`Irqchip`] inputs did, accumulated until the VMM clears it.
///
/// Every input method adds to the `Effects` it is given and never clears it.
/// Act on it (kick, reload, arm timers), then [`Effects::clear`] it.
///
/// # Examples
///
/// ```
/// use eoi_exit::irqchip::Effects;
/// use eoi_exit::{ApicMode, Irqchip, IrqchipConfig, Pin, RedirectionEntry, TriggerMode, VcpuSlot};
/// use eoi_exit::{VcpuId, Vector};
///
/// let slots = [VcpuSlot::new(), VcpuSlot::new()];
/// let chip: Irqchip<_> = Irqchip::new(IrqchipConfig::default(), ApicMode::XApic, slots);
/// let mut fx = Effects::new();
/// let level = RedirectionEntry::fixed(Vector::new(0x40), TriggerMode::Level, 1);
/// chip.write_entry(Pin::new(4), level.0, &mut fx);
/// chip.set_line(Pin::new(4), true, &mut fx);
/// let vcpu1 = VcpuId::new(1);
/// assert!(fx.reload.contains(vcpu1)); // the route put 0x40 in its bitmap
/// assert!(fx.kick.contains(vcpu1)); // and it accepted the interrupt
/// fx.clear();
/// assert!(fx.kick.is_empty() && fx.reload.is_empty());
/// ```
#[must_use = "accepted interrupts must be noticed and rescanned vCPUs reloaded"]
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Effects<L = ()> {
    /// vCPUs that accepted an interrupt or latched a non-vectored event: the
    /// VMM MUST make each notice it (post it, or kick the vCPU out of guest
    /// mode so it injects on entry and calls
    /// [`Irqchip::take_events`](super::Irqchip::take_events)).
    pub kick: VcpuSet,
    /// vCPUs whose EOI-exit bitmap changed: each MUST load its VMCS update
    /// ([`Irqchip::vmcs_update`]) before it next runs guest code, so a running
    /// one MUST be kicked out of guest mode first.
    pub reload: VcpuSet,
    /// `LineAware`: vCPUs whose EOI-exit bit was raised while they may be
    /// running (a lazy instance's line asserted again while it is in
    /// service). The VMM MUST make each leave guest mode (an IPI; no need to
    /// wait for it) and, before it re-enters, call
    /// [`Irqchip::take_events`](super::Irqchip::take_events) (which re-checks
    /// the instance and may deliver) and then
    /// [`Irqchip::vmcs_update`](super::Irqchip::vmcs_update).
    pub exit: VcpuSet,
    /// Pins the I/O APIC throttled (EOI storm): call
    /// [`Irqchip::deliver_later_elapsed`] for each after a delay (KVM: 10 ms).
    pub deliver_later: PinSet,
    /// Pins whose redirection entry changed: a split-irqchip VMM re-installs
    /// their routes.
    pub route_changed: PinSet,
    /// An RTC interrupt was dropped because a vCPU still owes the previous
    /// one's EOI (KVM's `rtc_irq_check_coalesced`, with `rtc_tracking`).
    pub rtc_coalesced: bool,
    /// Each delivery, if the caller keeps them (see [`DeliveryLog`]).
    pub log: L,
}

impl Effects {
    /// Nothing to do, and no delivery log.
    pub const fn new() -> Self {
        Effects::with_log(())
    }
}

impl<L> Effects<L> {
    /// Nothing to do, recording each delivery in `log`.
    pub const fn with_log(log: L) -> Self {
        Effects {
            kick: VcpuSet::EMPTY,
            reload: VcpuSet::EMPTY,
            exit: VcpuSet::EMPTY,
            deliver_later: PinSet::EMPTY,
            route_changed: PinSet::EMPTY,
            rtc_coalesced: false,
            log,
        }
    }

    /// No duty left (the log is not looked at). Crate-private: each field
    /// is its own duty, and a VMM acts on them one by one.
    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.kick.is_empty()
            && self.reload.is_empty()
            && self.exit.is_empty()
            && self.deliver_later.is_empty()
            && self.route_changed.is_empty()
            && !self.rtc_coalesced
    }

    /// Forgets every duty, keeping the log as it is.
    pub fn clear(&mut self) {
        self.kick.clear();
        self.reload.clear();
        self.exit.clear();
        self.deliver_later.clear();
        self.route_changed.clear();
        self.rtc_coalesced = false;
    }
}

/// The outcome of a guest EOI on one vCPU. What forwarding it to the I/O APIC
/// caused (re-deliveries, throttled pins) goes to the [`Effects`] passed in.
#[must_use = "check `intercepted` to know whether this EOI caused a VM exit"]
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
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
    /// The vCPU was rescanned because of it.
    pub rescanned: bool,
    /// `NoIntercept`: a level EOI the I/O APIC never saw.
    pub missed_level: bool,
    /// Ack-notifier pins whose entry has this vector: the VMM MUST run their
    /// notifiers (KVM's `kvm_notify_acked_irq`, for edge and level alike).
    /// Those in [`IrqchipConfig::resample_pins`](super::IrqchipConfig) had
    /// their line deasserted before the EOI reached the I/O APIC: the VMM
    /// MUST signal their devices' resample events (a device still needing
    /// service reasserts its line).
    pub acked_pins: PinSet,
}
