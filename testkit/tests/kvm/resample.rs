//! KVM's ack-notifier order on real KVM (in-kernel irqchip): a resampling irqfd
//! (`KVM_IRQFD` with `KVM_IRQFD_FLAG_RESAMPLE`, what VFIO INTx uses) deasserts its GSI in
//! the ack notifier, which `kvm_ioapic_update_eoi_one` runs *before* it clears remote IRR
//! and re-services the pin, so the EOI re-delivers nothing and the resample eventfd
//! fires. A line held high through `KVM_IRQ_LINE` has no such notifier and is
//! re-delivered by the EOI. The model (`IrqchipConfig::resample_pins`) is run through the
//! same sequences and must end in the same state. (KVM refuses resampling irqfds with the
//! split irqchip, so only the in-kernel irqchip can show this.)

use eoi_exit::irqchip::Effects;
use eoi_exit::{
    ApicMode, Irqchip, IrqchipConfig, Pin, PinSet, RedirectionEntry, TriggerMode, VcpuId, VcpuSlot,
    Vector,
};
use vmm_sys_util::eventfd::{EFD_NONBLOCK, EventFd};

use crate::support::*;

const RESAMPLED: u8 = 5;
const HELD: u8 = 6;

fn level_entry(vector: u8) -> u64 {
    RedirectionEntry::fixed(Vector::new(vector), TriggerMode::Level, 0).0
}

fn vector_of(pin: u8) -> u8 {
    0x30 + pin
}

/// What KVM or the model shows after the sequence on one pin.
#[derive(Debug, PartialEq, Eq)]
struct After {
    /// A second interrupt of the pin's vector arrived after the EOI.
    redelivered: bool,
    /// Remote IRR of the pin after the EOI (and before any second interrupt's EOI).
    remote_irr: bool,
    /// The pin's line (KVM's `irr` bit) after the EOI.
    line: bool,
    /// The resample event fired (the model: the pin was reported in `acked_pins`).
    resampled: bool,
}

fn on_kvm(pin: u8) -> Result<After, String> {
    let h = |e: HarnessError| e.to_string();
    let mut t = TestVm::new(IrqChipMode::InKernel, 1).map_err(h)?;
    t.all_ready().map_err(h)?;
    t.vcpus[0].ping().map_err(h)?;
    let v = vector_of(pin);
    t.vm.set_ioapic_redirection(usize::from(pin), level_entry(v))
        .map_err(h)?;
    let trigger = EventFd::new(EFD_NONBLOCK).map_err(|e| e.to_string())?;
    let resample = EventFd::new(EFD_NONBLOCK).map_err(|e| e.to_string())?;
    if pin == RESAMPLED {
        t.vm.fd
            .register_irqfd_with_resample(&trigger, &resample, u32::from(pin))
            .map_err(|e| format!("KVM_IRQFD with KVM_IRQFD_FLAG_RESAMPLE: {e}"))?;
        trigger.write(1).map_err(|e| e.to_string())?;
    } else {
        t.vm.irq_line(u32::from(pin), true).map_err(h)?;
    }
    // The guest takes the interrupt and writes EOI in its handler.
    t.vcpus[0].handle(v).map_err(h)?;
    let io = t.vm.get_irqchip_ioapic().map_err(h)?;
    let remote_irr = io.redirtbl[usize::from(pin)] & RedirectionEntry::REMOTE_IRR != 0;
    let line = io.irr & (1 << pin) != 0;
    let resampled = resample.read().is_ok();
    // A re-delivered interrupt shows as the handler running again.
    let redelivered = match t.vcpus[0].next_stop().map_err(h)? {
        Stop::Handler(x) if x == v => {
            t.vcpus[0].expect(Stop::HandlerEoi(v)).map_err(h)?;
            true
        }
        Stop::Idle => false,
        s => return Err(format!("pin {pin}: unexpected stop {s:?}")),
    };
    if pin == HELD {
        t.vm.irq_line(u32::from(pin), false).map_err(h)?;
    }
    Ok(After {
        redelivered,
        remote_irr,
        line,
        resampled,
    })
}

fn on_model(pin: u8) -> After {
    let p = Pin::new(pin);
    let mut resample_pins = PinSet::EMPTY;
    if pin == RESAMPLED {
        resample_pins.insert(p);
    }
    let config = IrqchipConfig {
        resample_pins,
        ..IrqchipConfig::default()
    };
    let chip: Irqchip<[VcpuSlot; 1]> = Irqchip::new(config, ApicMode::XApic, [VcpuSlot::new()]);
    let vcpu = VcpuId::new(0);
    let v = Vector::new(vector_of(pin));
    let mut fx = Effects::with_log(Vec::new());
    chip.write_entry(p, level_entry(v.get()), &mut fx);
    chip.set_line(p, true, &mut fx);
    assert_eq!(chip.ack(vcpu), Some(v));
    fx.log.clear();
    let eoi = chip.guest_eoi(vcpu, &mut fx);
    let st = chip.ioapic().state();
    After {
        redelivered: !fx.log.is_empty(),
        remote_irr: st.entries[usize::from(pin)].remote_irr(),
        line: st.line.contains(p),
        resampled: eoi.acked_pins.contains(p) && resample_pins.contains(p),
    }
}

/// KVM's order: the resampler's notifier lowers the line before the EOI re-services
/// the pin; a line held high is re-delivered. The model agrees on both.
#[test]
fn kvm_resample_irqfd_deasserts_before_the_eoi_reservices_the_pin() {
    if skip_without_kvm("kvm_resample") {
        return;
    }
    let want = [
        (
            RESAMPLED,
            After {
                redelivered: false,
                remote_irr: false,
                line: false,
                resampled: true,
            },
        ),
        (
            HELD,
            After {
                redelivered: true,
                remote_irr: true,
                line: true,
                resampled: false,
            },
        ),
    ];
    for (pin, want) in want {
        let kvm = on_kvm(pin).unwrap_or_else(|e| panic!("pin {pin}: {e}"));
        let model = on_model(pin);
        println!("kvm_resample: pin {pin}: KVM {kvm:?}, model {model:?}");
        assert_eq!(kvm, want, "pin {pin}: KVM");
        assert_eq!(model, want, "pin {pin}: model");
    }
}
