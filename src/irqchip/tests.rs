//! Unit tests of the Irqchip wiring.

use super::*;
use crate::RedirectionEntry;
use crate::types::TriggerMode;

fn msg(dest: u32) -> InterruptMessage {
    InterruptMessage {
        destination: Destination {
            id: dest,
            mode: DestinationMode::Physical,
        },
        delivery_mode: DeliveryMode::Fixed,
        vector: Vector::new(0x40),
        trigger: TriggerMode::Edge,
    }
}

#[test]
fn physical_delivery_follows_an_apic_id_change() {
    let c: Irqchip<4> = Irqchip::new(IrqchipConfig::default(), ApicMode::XApic);
    let _ = c.update_lapic(VcpuId::new(3), |a| a.set_id(ApicId::new(9)));
    let fx = c.send_msi(&msg(9));
    assert_eq!(fx.deliveries.len(), 1);
    assert_eq!(fx.deliveries[0].vcpu, VcpuId::new(3));
    assert!(
        c.send_msi(&msg(3)).deliveries.is_empty(),
        "nobody has ID 3 any more"
    );
}

#[test]
fn xapic_physical_broadcast_reaches_every_vcpu() {
    let c: Irqchip<4> = Irqchip::new(IrqchipConfig::default(), ApicMode::XApic);
    assert_eq!(c.send_msi(&msg(0xff)).deliveries.len(), 4);
}

#[test]
fn duplicate_apic_ids_both_accept_a_physical_message() {
    let c: Irqchip<4> = Irqchip::new(IrqchipConfig::default(), ApicMode::XApic);
    let _ = c.update_lapic(VcpuId::new(2), |a| a.set_id(ApicId::new(1)));
    let fx = c.send_msi(&msg(1));
    let got: heapless::Vec<u16, 4> = fx.deliveries.iter().map(|d| d.vcpu.get()).collect();
    assert_eq!(&got[..], &[1, 2]);
}

#[test]
fn update_lapic_rescans_every_vcpu_like_a_kvm_apic_map_change() {
    let c: Irqchip<3> = Irqchip::new(IrqchipConfig::default(), ApicMode::XApic);
    let before: [u64; 3] = core::array::from_fn(|i| c.vcpus[i].lock().stats.rescans);
    let (_, fx) = c
        .update_lapic(VcpuId::new(0), |a| a.write_tpr(0x20))
        .unwrap();
    assert_eq!(fx.reload.len(), 3);
    for (i, b) in before.iter().enumerate() {
        assert_eq!(c.vcpus[i].lock().stats.rescans, b + 1);
    }
}

#[test]
fn spurious_guest_eoi_does_nothing() {
    let c: Irqchip<1> = Irqchip::new(IrqchipConfig::default(), ApicMode::XApic);
    let e = c.guest_eoi(VcpuId::new(0));
    assert!(e.vector.is_none() && !e.intercepted);
    assert!(
        c.guest_eoi(VcpuId::new(7)).vector.is_none(),
        "out-of-range vCPU ignored"
    );
}

#[test]
fn reserved_delivery_mode_entry_delivers_nothing() {
    let c: Irqchip<1> = Irqchip::new(IrqchipConfig::default(), ApicMode::XApic);
    let e = RedirectionEntry::fixed(Vector::new(0x40), TriggerMode::Edge, 0).bits() | 3 << 8;
    let _ = c.write_entry(Pin::new(1), e);
    assert!(c.set_line(Pin::new(1), true).deliveries.is_empty());
}
