//! # eoi-exit
//!
//! A `no_std`, sans-IO model of the x86 interrupt path that decides **which guest
//! EOIs must cause a VM exit**: the I/O APIC redirection table ([`Ioapic`]), the
//! local APIC's IRR/ISR/TMR ([`LocalApic`]), and each vCPU's 256-bit EOI-exit
//! bitmap ([`EoiExitMap`]), composed by [`Irqchip`].
//!
//! Every type is a state machine: the VMM feeds it inputs (guest MMIO, pin
//! levels, EOIs) and acts on the `#[must_use]` values it returns. Nothing here
//! allocates, calls back or does I/O; only [`Irqchip`] locks (spin locks, never held
//! across a return).
//!
//! Behaviour follows the Intel SDM (Vol. 3, "Advanced Programmable Interrupt
//! Controller" and "APIC Virtualization and Virtual Interrupts"), the 82093AA
//! I/O APIC datasheet and Linux KVM 6.16+.
//!
//! # Example: one level interrupt through a VMM
//!
//! Two vCPUs (vCPU `i` has APIC ID `i`), the default configuration
//! ([`Policy::Exact`], a KVM-style version 0x11 I/O APIC). The comments name
//! the VM exit, or the host thread, each call runs on.
//!
//! ```
//! use eoi_exit::ioapic::{IOREGSEL, IOWIN, REG_REDTBL_BASE};
//! use eoi_exit::{
//!     ApicMode, Effects, Irqchip, IrqchipConfig, Pin, RedirectionEntry, TriggerMode, VcpuId,
//!     VcpuSlot, Vector,
//! };
//! # fn post(_: VcpuId) {}
//! # fn kick(_: VcpuId) {}
//! # fn vmwrite_eoi_exit_bitmap(_: usize, _: u64) {}
//!
//! // `-smp 2`, known at run time: the VMM provides one slot per vCPU.
//! let slots: Vec<VcpuSlot> = (0..2).map(|_| VcpuSlot::new()).collect();
//! let chip: Irqchip<_> = Irqchip::new(IrqchipConfig::default(), ApicMode::XApic, slots);
//! let (pin, vector, vcpu1) = (Pin::new(4), Vector::new(0x40), VcpuId::new(1));
//! // What the calls ask of the VMM accumulates here until it acts.
//! let mut fx = Effects::new();
//!
//! // MMIO exits on the I/O APIC page: the guest programs RTE 4 as level,
//! // vector 0x40, physical APIC ID 1, high half first (as Linux does).
//! let rte = RedirectionEntry::fixed(vector, TriggerMode::Level, 1).0;
//! let sel = REG_REDTBL_BASE + 2 * pin.get();
//! chip.mmio_write(IOREGSEL, 4, u64::from(sel + 1), &mut fx);
//! chip.mmio_write(IOWIN, 4, rte >> 32, &mut fx); // destination (entry still masked)
//! chip.mmio_write(IOREGSEL, 4, u64::from(sel), &mut fx);
//! chip.mmio_write(IOWIN, 4, rte & 0xffff_ffff, &mut fx); // vector, level, unmask
//! // The write rescanned the entry's destination: vCPU 1 must reload its bitmap
//! // before it next runs guest code.
//! assert!(fx.reload.contains(vcpu1));
//! fx.reload.iter().for_each(kick);
//! fx.clear();
//!
//! // Host side, no exit (a device thread, an irqfd): the device raises its line.
//! chip.set_line(pin, true, &mut fx);
//! // vCPU 1 accepted it into its LAPIC's IRR: post it to the virtual-APIC
//! // page (or queue it for injection) and kick the vCPU if it is in guest mode.
//! assert_eq!(fx.kick.iter().collect::<Vec<_>>(), [vcpu1]);
//! fx.kick.iter().for_each(post);
//! assert!(chip.vcpu(vcpu1).unwrap().apic.irr().contains(vector));
//! assert!(chip.ioapic().entry(pin).unwrap().remote_irr()); // awaits the EOI
//! fx.clear();
//!
//! // Before VM entry on vCPU 1 (KVM: KVM_REQ_LOAD_EOI_EXITMAP): write only the
//! // EOI_EXIT_BITMAPn words that changed. 0x40 is bit 0 of word 1.
//! let update = chip.vmcs_update(vcpu1).expect("0x40 was added to vCPU 1's bitmap");
//! assert_eq!(update.changed().collect::<Vec<_>>(), [(1, 1 << (0x40 - 64))]);
//! for (n, word) in update.changed() {
//!     vmwrite_eoi_exit_bitmap(n, word);
//! }
//! assert!(chip.vmcs_update(VcpuId::new(0)).is_none()); // vCPU 0: nothing to write
//!
//! // No exit: the CPU delivers the virtual interrupt (VIRR -> VISR). The VMM
//! // does not see this; `ack` keeps the model in step.
//! assert_eq!(chip.ack(vcpu1), Some(vector));
//! // MMIO exit into the device model: the handler quiets the device.
//! chip.set_line(pin, false, &mut fx);
//! // EOI-induced VM exit (0x40 is in vCPU 1's EOI-exit bitmap).
//! let eoi = chip.guest_eoi(vcpu1, &mut fx);
//! assert_eq!(eoi.vector, Some(vector));
//! assert!(eoi.intercepted && eoi.reached_ioapic);
//! assert!(!chip.ioapic().entry(pin).unwrap().remote_irr()); // the line is free again
//! assert!(fx.kick.is_empty()); // line low: nothing re-delivered
//! ```
//!
//! # APIC virtualization: what a VMM sees
//!
//! With APIC virtualization (Intel SDM Vol. 3, chapter "APIC Virtualization
//! and Virtual Interrupts": virtual-interrupt delivery, EOI virtualization,
//! posted-interrupt processing) the guest's local APIC lives on the
//! virtual-APIC page and the CPU runs most of it. [`LocalApic`] stands for
//! that page (KVM's `apic->regs` is the page itself); the other state
//! machines see only what reaches the VMM:
//!
//! | call | when it happens |
//! |---|---|
//! | [`Irqchip::mmio_read`], [`Irqchip::mmio_write`] | an MMIO exit on the I/O APIC page, on any vCPU |
//! | [`Irqchip::guest_eoi`] | an EOI-induced VM exit (basic exit reason 45, trap-like: the CPU has already cleared the VISR bit; the exit qualification holds the vector). A simulator calls it for every guest EOI and reads [`GuestEoi::intercepted`](irqchip::GuestEoi::intercepted) |
//! | [`Irqchip::set_line`], [`Irqchip::send_msi`], [`Irqchip::deliver_later_elapsed`], [`Irqchip::write_entry`] | host side, at any time: device models, irqfds, timers, restore |
//! | [`Irqchip::write_lapic`] | exits that change LAPIC addressing: APIC-access or APIC-write exits (xAPIC ID, LDR, DFR, SVR), WRMSR exits (x2APIC SVR, IA32_APIC_BASE); ICR and SELF IPI writes (IPIs) |
//! | [`Irqchip::vmcs_update`] | before every VM entry of that vCPU |
//! | [`Irqchip::take_events`] | before every VM entry of that vCPU (and when a vCPU waiting for SIPI is kicked): the non-vectored events (INIT, SIPI, NMI, SMI, ExtINT) it must take |
//! | [`Irqchip::ack`] | never an exit under APIC virtualization (see below) |
//!
//! What the VMM cannot observe:
//!
//! * **Interrupt acknowledge.** Virtual-interrupt delivery moves the vector
//!   from VIRR to VISR and updates RVI/SVI (the guest interrupt status) in
//!   hardware; posted interrupts reach VIRR (through the PIR) without any
//!   exit.
//!   [`Irqchip::ack`] models the guest taking the interrupt; a VMM mirrors
//!   that from the virtual-APIC page (VIRR/VISR, RVI/SVI) instead of seeing it.
//! * **EOIs that are not intercepted.** EOI virtualization clears the VISR
//!   bit, updates SVI and, only if the vector's bit is set in
//!   `EOI_EXIT_BITMAP0..3`, causes an EOI-induced VM exit; otherwise the EOI
//!   completes in hardware, reaches no I/O APIC and is never seen. The maps
//!   learn of such EOIs lazily, from IRR and ISR at the next scan,
//!   acceptance or intercepted EOI (as KVM's scan reads them with
//!   `kvm_apic_pending_eoi`, after folding posted interrupts into IRR with
//!   `sync_pir_to_irr`).
//!
//! So the EOI-exit bitmap is the VMM's only lever: a level-triggered EOI whose
//! bit is clear never reaches the I/O APIC, whose remote IRR then blocks the
//! pin for good; a bit set without need costs a VM exit on every EOI of the
//! vector. KVM recomputes the bitmap in `vcpu_scan_ioapic` (on
//! `KVM_REQ_SCAN_IOAPIC`) and writes all four words with the
//! `load_eoi_exitmap` hook before the next entry; here a rescan is
//! [`EoiExitMap::scan`] (driven by
//! [`Irqchip`] for the vCPUs a change names) and the load is
//! [`Irqchip::vmcs_update`] / [`EoiExitMap::take_vmcs_update`], with only the
//! words that changed.
#![no_std]
#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

#[cfg(any(test, feature = "std"))]
extern crate std;

pub mod exit_bitmap;
pub mod ioapic;
pub mod irqchip;
pub mod lapic;
mod routes;
mod set;
pub mod snapshot;
mod types;
mod vcpu_set;
mod vector;

pub use exit_bitmap::{EoiExit, EoiExitMap, Policy, VmcsUpdate};
pub use ioapic::{
    Ioapic, IoapicConfig, IoapicEffects, IoapicVersion, MaskedEdge, PinSet, RedirectionEntry,
    Rescan,
};
pub use irqchip::{Effects, GuestEoi, Irqchip, IrqchipConfig, LapicWrite, VcpuSlot};
pub use lapic::{Acceptance, ApicMode, Eoi, LocalApic};
pub use routes::{Msi, MsiFormat};
pub use set::{Set256, SetElement};
pub use types::{
    ApicId, DeliveryMode, Destination, DestinationMode, InterruptMessage, InvalidValue, Pin,
    Polarity, TriggerMode, VcpuId,
};
pub use vcpu_set::{MAX_VCPUS, VcpuSet};
pub use vector::{Vector, VectorSet};
