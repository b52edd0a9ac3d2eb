//! # eoi-exit
//!
//! A `no_std`, sans-IO model of the x86 interrupt path that decides **which guest
//! EOIs must cause a VM exit**: the I/O APIC redirection table ([`Ioapic`]), the
//! local APIC's IRR/ISR/TMR ([`LocalApic`]), and each vCPU's 256-bit EOI-exit
//! bitmap ([`EoiExitMap`]), composed by [`Irqchip`].
//!
//! Every type is a state machine: the VMM feeds it inputs (guest MMIO, pin
//! levels, EOIs) and acts on the `#[must_use]` values it returns. Nothing here
//! allocates, locks (except [`Irqchip`]'s shared I/O APIC), calls back or does I/O.
//!
//! Behaviour follows the Intel SDM (Vol. 3, "Advanced Programmable Interrupt
//! Controller" and "APIC Virtualization and Virtual Interrupts"), the 82093AA
//! I/O APIC datasheet and Linux KVM 6.16+.
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
pub mod routes;
pub mod set;
pub mod snapshot;
pub mod types;
pub mod vector;

pub use exit_bitmap::{EoiExit, EoiExitMap, Policy, VmcsUpdate};
pub use ioapic::{
    Ioapic, IoapicConfig, IoapicEffects, IoapicRegisters, IoapicVersion, MaskedEdge, PinSet,
    RedirectionEntry, Rescan,
};
pub use irqchip::VcpuSet;
pub use irqchip::{Irqchip, IrqchipConfig};
pub use lapic::{Acceptance, ApicMode, Eoi, LocalApic};
pub use routes::Msi;
pub use set::Set256;
pub use types::{
    ApicId, DeliveryMode, Destination, DestinationMode, Gsi, InterruptMessage, InvalidValue, Pin,
    Polarity, RTC_GSI, TriggerMode, VcpuId,
};
pub use vector::{Vector, VectorSet};
