//! KVM's order at an intercepted EOI (`kvm_ioapic_update_eoi_one`): the ack
//! notifiers run first (`kvm_notify_acked_irq`), and only then is remote IRR
//! cleared and the pin re-serviced if its line is still asserted. A resampler
//! (KVM's irqfd with `KVM_IRQFD_FLAG_RESAMPLE`, as VFIO INTx uses) is such a
//! notifier: it deasserts the line, so a device quiesced by its handler gets
//! no second interrupt, and it signals the resample event, on which a device
//! still needing service reasserts the line. `tests/kvm` in the testkit runs
//! the same sequence on real KVM.

use eoi_exit::irqchip::Effects;
use eoi_exit::{
    ApicMode, Irqchip, IrqchipConfig, Pin, PinSet, RedirectionEntry, TriggerMode, VcpuId, VcpuSlot,
    Vector,
};

const PIN: Pin = Pin::new(5);
const V: Vector = Vector::new(0x35);
const VCPU: VcpuId = VcpuId::new(0);

/// One vCPU; pin 5 level, vector 0x35, to APIC ID 0, with an ack notifier
/// that resamples (or not), and the given polarity.
fn chip(resample: bool, active_low: bool) -> Irqchip<[VcpuSlot; 1]> {
    let mut pins = PinSet::EMPTY;
    pins.insert(PIN);
    let config = if resample {
        IrqchipConfig {
            resample_pins: pins,
            ..IrqchipConfig::default()
        }
    } else {
        IrqchipConfig {
            ack_notifier_pins: pins,
            ..IrqchipConfig::default()
        }
    };
    let chip = Irqchip::new(config, ApicMode::XApic, [VcpuSlot::new()]);
    let mut e = RedirectionEntry::fixed(V, TriggerMode::Level, 0).0;
    if active_low {
        e |= RedirectionEntry::POLARITY_LOW;
    }
    let mut fx = Effects::new();
    // The line starts deasserted under either polarity.
    chip.set_line(PIN, active_low, &mut fx);
    chip.write_entry(PIN, e, &mut fx);
    let _ = chip.vmcs_update(VCPU);
    chip
}

/// Asserts the pin (electrically high, or low when active low), takes the
/// interrupt and EOIs it; returns what the EOI did.
fn interrupt_and_eoi(
    chip: &Irqchip<[VcpuSlot; 1]>,
    active_low: bool,
) -> (
    eoi_exit::irqchip::GuestEoi,
    Effects<Vec<eoi_exit::irqchip::Delivery>>,
) {
    let mut fx = Effects::with_log(Vec::new());
    chip.set_line(PIN, !active_low, &mut fx);
    assert_eq!(fx.log.len(), 1, "the asserted level pin is delivered");
    assert_eq!(chip.ack(VCPU), Some(V));
    let mut fx = Effects::with_log(Vec::new());
    let eoi = chip.guest_eoi(VCPU, &mut fx);
    assert_eq!(eoi.vector, Some(V));
    assert!(eoi.intercepted && eoi.reached_ioapic);
    assert!(eoi.acked_pins.contains(PIN), "the notifier must run");
    (eoi, fx)
}

fn remote_irr(chip: &Irqchip<[VcpuSlot; 1]>) -> bool {
    chip.ioapic().entry(PIN).unwrap().remote_irr()
}

fn pending(chip: &Irqchip<[VcpuSlot; 1]>) -> bool {
    chip.vcpu(VCPU).unwrap().apic.irr().contains(V)
}

/// A resampler deasserts the line before the EOI clears remote IRR, so the
/// EOI re-delivers nothing; the device, told through the resample event that
/// it still needs service, reasserts the line and gets its next interrupt.
#[test]
fn kvm_resampler_deasserts_the_line_before_the_eoi_reservices_the_pin() {
    for active_low in [false, true] {
        let chip = chip(true, active_low);
        let (_, fx) = interrupt_and_eoi(&chip, active_low);
        assert!(
            fx.log.is_empty(),
            "re-delivered after the resample: {:?}",
            fx.log
        );
        assert!(!remote_irr(&chip) && !pending(&chip));
        // Deasserted: the electrical level is the polarity's inactive one.
        let line = chip.ioapic().state().line.contains(PIN);
        assert_eq!(line, active_low, "active_low {active_low}");
        // The device still needs service: it reasserts on the resample event.
        let mut fx = Effects::with_log(Vec::new());
        chip.set_line(PIN, !active_low, &mut fx);
        assert_eq!(fx.log.len(), 1);
        assert!(remote_irr(&chip) && pending(&chip));
    }
}

/// An ack notifier that does not resample leaves the line as it is: the EOI
/// then clears remote IRR and re-delivers the still-asserted pin (the
/// 82093AA's level semantics, and KVM's).
#[test]
fn kvm_plain_ack_notifier_leaves_the_line_and_the_eoi_redelivers() {
    for active_low in [false, true] {
        let chip = chip(false, active_low);
        let (_, fx) = interrupt_and_eoi(&chip, active_low);
        assert_eq!(fx.log.len(), 1, "the asserted pin is re-delivered");
        assert!(remote_irr(&chip) && pending(&chip));
    }
}

/// A resampler acts only on the EOI of its pin's vector: an EOI of another
/// vector neither reports the pin nor touches its line.
#[test]
fn kvm_resampler_ignores_eois_of_other_vectors() {
    let chip = chip(true, false);
    let mut fx = Effects::new();
    // An edge MSI of another vector, taken and EOIed while pin 5 is pending.
    chip.set_line(PIN, true, &mut fx);
    chip.send_msi(
        &eoi_exit::Msi::from_message(
            &eoi_exit::InterruptMessage {
                destination: eoi_exit::Destination {
                    id: 0,
                    mode: eoi_exit::DestinationMode::Physical,
                },
                delivery_mode: eoi_exit::DeliveryMode::Fixed,
                vector: Vector::new(0x61),
                trigger: TriggerMode::Edge,
            },
            eoi_exit::MsiFormat::Xapic,
        )
        .unwrap(),
        &mut fx,
    );
    assert_eq!(chip.ack(VCPU), Some(Vector::new(0x61)));
    let eoi = chip.guest_eoi(VCPU, &mut fx);
    assert!(eoi.acked_pins.is_empty());
    assert!(chip.ioapic().state().line.contains(PIN));
    assert!(remote_irr(&chip) && pending(&chip));
}
