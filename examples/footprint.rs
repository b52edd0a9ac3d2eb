//! Memory footprint of the crate's state and outputs, in bytes.
//!
//! `cargo run --release --example footprint` prints one `name=bytes` line per
//! figure, each computed with `core::mem::size_of` (nothing is constructed).
//! A figure includes the storage the caller provides: an `Irqchip` is its
//! shared part (`size_of::<Irqchip<S>>()`, the I/O APIC and routing caches,
//! plus the storage handle `S`) and one [`VcpuSlot`] per vCPU.
//!
//! The judged lines:
//!
//! - `exit_state_per_vcpu`: `EoiExitMap`, the EOI-exit state one vCPU needs
//!   under the default policy ([`Policy::Exact`](eoi_exit::Policy::Exact)),
//!   without its local APIC. Target: at most 128 bytes.
//! - `lapic_bytes`: one `LocalApic`. Target: at most 128 bytes.
//! - `ioapic_bytes`: one 24-pin `Ioapic<24>`. Target: at most 256 bytes.
//! - `irqchip_bytes_256`: an `Irqchip` with 256 vCPUs and 24 pins: the chip
//!   (with a `Box<[VcpuSlot]>` handle) plus 256 slots. Target: at most 72 KiB
//!   (73728 bytes).
//! - `irqchip_bytes_4096`: the same with 4096 vCPUs (KVM's `KVM_MAX_VCPUS`).
//!   Target: at most 1.25 MiB (1310720 bytes). Nothing in the chip is sized
//!   by the largest VM or indexed by a 32-bit APIC ID: the slots carry the
//!   routing cache and the sorted-ID index.
//!
//! Informative lines:
//!
//! - `vcpu_slot_bytes`: one [`VcpuSlot`] (LAPIC + EOI-exit map + counters +
//!   its lock): what each vCPU adds.
//! - `irqchip_shared_bytes`: the chip without its vCPUs.
//! - `effects_bytes`: `Effects`, the caller-owned sink every input adds to
//!   (passed by `&mut`, never copied).
//! - `guest_eoi_bytes`: `GuestEoi`, what `Irqchip::guest_eoi` returns.
//! - `irqchip_bytes_4`: the same for 4 vCPUs.

use core::mem::size_of;

use eoi_exit::{Effects, EoiExitMap, GuestEoi, Ioapic, Irqchip, LocalApic, VcpuSlot};

fn main() {
    let shared = size_of::<Irqchip<Box<[VcpuSlot]>, 24>>();
    let slot = size_of::<VcpuSlot>();
    // `EoiExitMap` holds the state of every policy in an enum, so its size is
    // the same whatever the policy; the default one is `Exact`.
    let lines: [(&str, usize); 10] = [
        ("exit_state_per_vcpu", size_of::<EoiExitMap>()),
        ("lapic_bytes", size_of::<LocalApic>()),
        ("ioapic_bytes", size_of::<Ioapic<24>>()),
        ("irqchip_bytes_256", shared + 256 * slot),
        ("irqchip_bytes_4096", shared + 4096 * slot),
        ("vcpu_slot_bytes", slot),
        ("irqchip_shared_bytes", shared),
        ("effects_bytes", size_of::<Effects>()),
        ("guest_eoi_bytes", size_of::<GuestEoi>()),
        ("irqchip_bytes_4", shared + 4 * slot),
    ];
    for (name, bytes) in lines {
        println!("{name}={bytes}");
    }
}
