//! One level-triggered interrupt through I/O APIC -> local APIC -> EOI, then a
//! reroute while it is in service, printing what each step does.
//!
//! `cargo run --example quickstart`

use eoi_exit::irqchip::Delivery;
use eoi_exit::{
    ApicMode, Effects, Irqchip, IrqchipConfig, Pin, Policy, RedirectionEntry, TriggerMode, VcpuId,
    VcpuSlot, Vector,
};

type Chip = Irqchip<[VcpuSlot; 2]>;

fn main() {
    let pin = Pin::new(5);
    let v0 = VcpuId::new(0);
    let vector = Vector::new(0x40);
    for policy in [Policy::KvmHighestStale, Policy::Exact] {
        println!("== policy {}", policy.name());
        let chip: Chip = Irqchip::new(
            IrqchipConfig {
                policy,
                ..Default::default()
            },
            ApicMode::XApic,
            [const { VcpuSlot::new() }; 2],
        );
        // Each call's duties, with every delivery logged for printing.
        let mut fx: Effects<Vec<Delivery>> = Effects::with_log(Vec::new());

        // The guest programs pin 5: level, vector 0x40, physical APIC ID 0.
        let entry = RedirectionEntry::fixed(vector, TriggerMode::Level, 0);
        chip.write_entry(pin, entry.0, &mut fx);
        println!("write RTE5 = {entry:?}: rescanned vCPUs {:?}", fx.reload);
        report(&chip, v0);
        load_vmcs(&chip, v0);

        // The device raises its line: delivered, remote IRR set.
        fx.clear();
        chip.set_line(pin, true, &mut fx);
        for d in fx.log.drain(..) {
            println!(
                "line 5 high: {:?} accepts {} ({:?})",
                d.vcpu, d.accepted.vector, d.accepted.trigger
            );
        }
        println!(
            "  remote IRR = {}",
            chip.ioapic().entry(pin).unwrap().remote_irr()
        );

        // The guest takes it; while it is in service another vCPU moves the pin.
        println!("vCPU0 acks {:?}", chip.ack(v0));
        fx.clear();
        chip.write_entry(
            pin,
            RedirectionEntry::fixed(vector, TriggerMode::Level, 1).0,
            &mut fx,
        );
        println!("reroute RTE5 -> APIC ID 1: rescanned vCPUs {:?}", fx.reload);
        report(&chip, v0);

        // The handler quiets the device, then EOIs.
        chip.set_line(pin, false, &mut fx);
        let eoi = chip.guest_eoi(v0, &mut fx);
        println!(
            "vCPU0 EOI {:?}: VM exit {}, forwarded to the I/O APIC {}, rescan {}",
            eoi.vector, eoi.intercepted, eoi.reached_ioapic, eoi.rescanned
        );
        println!(
            "  remote IRR = {}",
            chip.ioapic().entry(pin).unwrap().remote_irr()
        );
        report(&chip, v0);
        load_vmcs(&chip, v0);
        println!();
    }
}

fn report(chip: &Chip, vcpu: VcpuId) {
    let v = chip.vcpu(vcpu).unwrap();
    let bits: Vec<String> = v.map.bitmap().iter().map(|v| v.to_string()).collect();
    println!(
        "  {vcpu:?}: IRR {:?} ISR {:?} EOI-exit bitmap [{}]",
        v.apic.irr(),
        v.apic.isr(),
        bits.join(" "),
    );
}

/// What the VMM writes to the VMCS before the next VM entry.
fn load_vmcs(chip: &Chip, vcpu: VcpuId) {
    match chip.vmcs_update(vcpu) {
        Some(u) => {
            for (i, w) in u.changed() {
                println!("  VMCS EOI_EXIT_BITMAP{i} <- {w:#018x}");
            }
        }
        None => println!("  VMCS EOI-exit bitmap unchanged"),
    }
}
