//! Memory footprint of the crate's state and outputs, in bytes.
//!
//! `cargo run --release --example footprint` prints one `name=bytes` line per
//! figure, each computed with `core::mem::size_of` (nothing is constructed, so
//! no 256-vCPU chip is built on the stack). A figure includes any storage the
//! caller must provide for the thing to work; today every type keeps all of
//! its state inline (no heap, no caller-provided buffers), so `size_of` is the
//! whole footprint.
//!
//! The judged lines, with the targets of the upcoming redesign:
//!
//! - `exit_state_per_vcpu`: `EoiExitMap`, the EOI-exit state one vCPU needs
//!   under the default policy ([`Policy::Exact`](eoi_exit::Policy::Exact)),
//!   without its local APIC. Target: at most 128 bytes.
//! - `lapic_bytes`: one `LocalApic`. Target: at most 128 bytes.
//! - `ioapic_bytes`: one 24-pin `Ioapic<24>`. Target: at most 256 bytes.
//! - `irqchip_bytes_256`: an `Irqchip<256, 24>`, one I/O APIC and 256 vCPUs
//!   with every lock, map and counter it holds (all inline today). Target: at
//!   most 72 KiB (73728 bytes).
//!
//! Informative lines (outputs and per-vCPU state):
//!
//! - `vcpu_state_bytes`: `irqchip::Vcpu`, one vCPU inside an `Irqchip`
//!   (LAPIC + EOI-exit map + counters, without its lock).
//! - `effects_bytes`: `irqchip::Effects`, what every `Irqchip` input returns.
//! - `guest_eoi_bytes`: `irqchip::GuestEoi`, what `Irqchip::guest_eoi`
//!   returns.
//! - `irqchip_bytes_4`: an `Irqchip<4, 24>`.
//!
//! Target for outputs: every value an API call returns (`Effects`, `GuestEoi`,
//! ...) at most 64 bytes.

use core::mem::size_of;

use eoi_exit::irqchip::{Effects, GuestEoi, Vcpu};
use eoi_exit::{EoiExitMap, Ioapic, Irqchip, LocalApic};

fn main() {
    // `EoiExitMap` holds the state of every policy in an enum, so its size is
    // the same whatever the policy; the default one is `Exact`.
    let lines: [(&str, usize); 8] = [
        ("exit_state_per_vcpu", size_of::<EoiExitMap>()),
        ("lapic_bytes", size_of::<LocalApic>()),
        ("ioapic_bytes", size_of::<Ioapic<24>>()),
        // Everything is inline today: the I/O APIC, the physical-ID map and
        // the 256 vCPUs (each behind its own lock); no caller storage.
        ("irqchip_bytes_256", size_of::<Irqchip<256, 24>>()),
        ("vcpu_state_bytes", size_of::<Vcpu>()),
        ("effects_bytes", size_of::<Effects>()),
        ("guest_eoi_bytes", size_of::<GuestEoi>()),
        ("irqchip_bytes_4", size_of::<Irqchip<4, 24>>()),
    ];
    for (name, bytes) in lines {
        println!("{name}={bytes}");
    }
}
