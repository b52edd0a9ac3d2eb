//! Directed EOI (SVR bit 12, "suppress EOI broadcast") on real KVM against the model.
//!
//! For each `KVM_CAP_X2APIC_API` setting this kernel accepts (none, the split irqchip's
//! default "quirk"; `KVM_X2APIC_ENABLE_SUPPRESS_EOI_BROADCAST`;
//! `KVM_X2APIC_DISABLE_SUPPRESS_EOI_BROADCAST`), with the guest's SVR write (x2APIC MSR
//! 0x80F) asking for bit 12 or not, and an in-service instance of a vector a level GSI
//! route targets at this vCPU (KVM's `ioapic_handled_vectors`), level (TMR set) or edge
//! (TMR clear), the guest writes EOI and three things are compared with the model
//! (`EoiForwarding::AllIntercepted` for none and DISABLE,
//! `AllInterceptedUnlessSuppressed` for ENABLE; `LapicWrite::DirectedEoi` off only for
//! DISABLE):
//!
//! * the LAPIC version register's bit 24 (`KVM_GET_LAPIC`), i.e. whether KVM
//!   advertises directed EOI;
//! * SVR bit 12 after the guest's write (KVM's SPIV write mask);
//! * whether the EOI exits to userspace (`KVM_EXIT_IOAPIC_EOI`) against
//!   `GuestEoi::reached_ioapic`.
//!
//! The in-kernel irqchip is checked for the first two (KVM advertises nothing there, so
//! the guest cannot set bit 12; its I/O APIC has no EOI register), and KVM must refuse
//! ENABLE there.
//!
//! Host quirk 1 of the harness applies: the in-service instance is planted with
//! `KVM_SET_LAPIC` (ISR, and TMR for level) while the guest sits at IF=0; the model gets
//! its instance by a delivery and an acknowledge.
//!
//! It prints one line: `kvm_directed_eoi: N cases compared (...), M disagreements`.

use eoi_exit::irqchip::{Effects, EoiForwarding, LapicWrite};
use eoi_exit::{
    ApicMode, IoapicConfig, IoapicVersion, Irqchip, IrqchipConfig, MaskedEdge, Pin, Policy,
    RedirectionEntry, TriggerMode, VcpuId, VcpuSlot, Vector,
};
use kvm_bindings::{KVM_CAP_SPLIT_IRQCHIP, KVM_CAP_X2APIC_API, kvm_enable_cap};
use kvm_ioctls::Kvm;

use crate::support::*;

/// `KVM_X2APIC_ENABLE_SUPPRESS_EOI_BROADCAST` (Linux 6.18.17+, not in kvm-bindings 0.14).
const ENABLE: u64 = 1 << 2;
/// `KVM_X2APIC_DISABLE_SUPPRESS_EOI_BROADCAST`.
const DISABLE: u64 = 1 << 3;
const SVR_MSR: u32 = 0x80F;
const SVR_BIT_12: u32 = 1 << 12;
const V: u8 = 0x61;
/// The GSI (an I/O APIC pin of the split irqchip) whose level route targets vCPU 0.
const GSI: u32 = 5;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Setting {
    Quirk,
    Enable,
    Disable,
}

impl Setting {
    fn flags(self) -> u64 {
        match self {
            Setting::Quirk => 0,
            Setting::Enable => ENABLE,
            Setting::Disable => DISABLE,
        }
    }

    fn forwarding(self) -> EoiForwarding {
        match self {
            Setting::Enable => EoiForwarding::AllInterceptedUnlessSuppressed,
            Setting::Quirk | Setting::Disable => EoiForwarding::AllIntercepted,
        }
    }
}

/// What one case observed: version bit 24, SVR bit 12, and the EOI reaching the
/// (userspace) I/O APIC (`None` for the in-kernel irqchip, where it is not compared).
type Seen = (bool, bool, Option<bool>);

/// The `KVM_CAP_X2APIC_API` flags a split-irqchip VM of this kernel accepts.
fn split_x2apic_api_flags() -> Result<u64> {
    let kvm = Kvm::new().map_err(|e| HarnessError(format!("open /dev/kvm: {e}")))?;
    let fd = kvm
        .create_vm()
        .map_err(|e| HarnessError(format!("KVM_CREATE_VM: {e}")))?;
    let mut cap = kvm_enable_cap {
        cap: KVM_CAP_SPLIT_IRQCHIP,
        ..Default::default()
    };
    cap.args[0] = u64::from(NR_IOAPIC_PINS);
    fd.enable_cap(&cap)
        .map_err(|e| HarnessError(format!("KVM_ENABLE_CAP(SPLIT_IRQCHIP): {e}")))?;
    Ok(fd.check_extension_raw(u64::from(KVM_CAP_X2APIC_API)).max(0) as u64)
}

fn on_kvm(mode: IrqChipMode, s: Setting, bit12: bool, level: bool) -> Result<Seen> {
    let mut t = TestVm::with_x2apic_api(mode, 1, s.flags())?;
    t.all_ready()?;
    t.vcpus[0].ping()?;
    let svr = apic_word_at(&t.vcpus[0].get_lapic()?, 0xF0);
    let want = svr | if bit12 { SVR_BIT_12 } else { 0 };
    t.vcpus[0].wrmsr(SVR_MSR, u64::from(want))?;
    let l = t.vcpus[0].get_lapic()?;
    let version_bit_24 = apic_word_at(&l, 0x30) & (1 << 24) != 0;
    let svr_bit_12 = apic_word_at(&l, 0xF0) & SVR_BIT_12 != 0;
    if mode == IrqChipMode::InKernel {
        return Ok((version_bit_24, svr_bit_12, None));
    }
    t.vm.route_msi(GSI, 0, V, true);
    t.vm.push_routes()?;
    t.vcpus[0].ping()?;
    if level {
        t.vcpus[0].plant_in_service(V)?;
    } else {
        t.vcpus[0].set_lapic_bits(&[(ApicReg::Isr, V, true)])?;
    }
    t.vcpus[0].ping()?;
    let before = t.vcpus[0].eoi_exits(V);
    t.vcpus[0].guest_eoi()?;
    let exits = t.vcpus[0].eoi_exits(V) - before;
    Ok((version_bit_24, svr_bit_12, Some(exits == 1)))
}

fn on_model(mode: IrqChipMode, s: Setting, bit12: bool, level: bool) -> Seen {
    let split = mode == IrqChipMode::Split;
    let config = IrqchipConfig {
        policy: Policy::KvmHighestStale,
        ioapic: IoapicConfig {
            version: IoapicVersion::V20,
            masked_edge: MaskedEdge::Drop,
            ..IoapicConfig::default()
        },
        eoi_forwarding: if split {
            s.forwarding()
        } else {
            EoiForwarding::TmrLevel
        },
        ..IrqchipConfig::default()
    };
    let chip: Irqchip<[VcpuSlot; 1]> = Irqchip::new(config, ApicMode::X2Apic, [VcpuSlot::new()]);
    let id = VcpuId::new(0);
    let mut fx = Effects::new();
    // KVM advertises directed EOI to an x2APIC guest of a split irqchip unless DISABLE.
    let advertise = split && s != Setting::Disable;
    chip.write_lapic(id, LapicWrite::DirectedEoi(advertise), &mut fx);
    let svr = 0x1FF | if bit12 { SVR_BIT_12 } else { 0 };
    chip.write_lapic(
        id,
        LapicWrite::Register {
            offset: 0xF0,
            value: svr,
        },
        &mut fx,
    );
    let apic = chip.vcpu(id).unwrap().apic;
    let version_bit_24 = apic.read_register(0x30).unwrap() & (1 << 24) != 0;
    let svr_bit_12 = apic.read_register(0xF0).unwrap() & SVR_BIT_12 != 0;
    if !split {
        return (version_bit_24, svr_bit_12, None);
    }
    // The level route of V to this vCPU (the split irqchip's GSI = I/O APIC pin).
    let route = Pin::new(GSI as u8);
    let v = Vector::new(V);
    chip.write_entry(
        route,
        RedirectionEntry::fixed(v, TriggerMode::Level, 0).0,
        &mut fx,
    );
    if level {
        chip.set_line(route, true, &mut fx);
        chip.set_line(route, false, &mut fx);
    } else {
        let edge = Pin::new(GSI as u8 + 1);
        chip.write_entry(
            edge,
            RedirectionEntry::fixed(v, TriggerMode::Edge, 0).0,
            &mut fx,
        );
        chip.set_line(edge, true, &mut fx);
        chip.set_line(edge, false, &mut fx);
    }
    assert_eq!(chip.ack(id), Some(v));
    let _ = chip.vmcs_update(id);
    let eoi = chip.guest_eoi(id, &mut fx);
    assert_eq!(eoi.level, level);
    (version_bit_24, svr_bit_12, Some(eoi.reached_ioapic))
}

/// The 32-bit LAPIC register at `offset` of a `kvm_lapic_state` page.
fn apic_word_at(l: &kvm_bindings::kvm_lapic_state, offset: usize) -> u32 {
    let b = |i: usize| l.regs[offset + i] as u8;
    u32::from_le_bytes([b(0), b(1), b(2), b(3)])
}

#[test]
fn kvm_directed_eoi_advertisement_svr_mask_and_userspace_eoi_exits_match_the_model() {
    if skip_without_kvm("kvm_directed_eoi") {
        return;
    }
    let flags = split_x2apic_api_flags().unwrap_or_else(|e| panic!("harness: {e}"));
    let mut settings = vec![Setting::Quirk];
    if flags & ENABLE != 0 {
        settings.push(Setting::Enable);
    }
    if flags & DISABLE != 0 {
        settings.push(Setting::Disable);
    }
    let (mut cases, mut suppressed, mut bad) = (0, 0, Vec::new());
    for &s in &settings {
        for bit12 in [false, true] {
            for level in [true, false] {
                let at = format!("split {s:?} svr_bit_12={bit12} level={level}");
                let kvm = on_kvm(IrqChipMode::Split, s, bit12, level)
                    .unwrap_or_else(|e| panic!("{at}: harness: {e}"));
                let model = on_model(IrqChipMode::Split, s, bit12, level);
                cases += 1;
                suppressed += usize::from(kvm.2 == Some(false));
                if kvm != model {
                    bad.push(format!("{at}: KVM {kvm:?}, model {model:?}"));
                }
            }
        }
    }
    for bit12 in [false, true] {
        let at = format!("in-kernel svr_bit_12={bit12}");
        let kvm = on_kvm(IrqChipMode::InKernel, Setting::Quirk, bit12, true)
            .unwrap_or_else(|e| panic!("{at}: harness: {e}"));
        let model = on_model(IrqChipMode::InKernel, Setting::Quirk, bit12, true);
        cases += 1;
        if kvm != model {
            bad.push(format!("{at}: KVM {kvm:?}, model {model:?}"));
        }
    }
    // ENABLE needs the split irqchip (the `EoiForwarding` table's in-kernel row).
    let in_kernel_enable =
        flags & ENABLE != 0 && TestVm::with_x2apic_api(IrqChipMode::InKernel, 1, ENABLE).is_ok();
    assert!(
        !in_kernel_enable,
        "KVM accepted KVM_X2APIC_ENABLE_SUPPRESS_EOI_BROADCAST with an in-kernel irqchip"
    );
    println!(
        "kvm_directed_eoi: {cases} cases compared (KVM_CAP_X2APIC_API flags {flags:#x}: \
         ENABLE {}, DISABLE {}; {suppressed} EOIs not forwarded to userspace), {} disagreements",
        if flags & ENABLE != 0 {
            "supported"
        } else {
            "not supported"
        },
        if flags & DISABLE != 0 {
            "supported"
        } else {
            "not supported"
        },
        bad.len()
    );
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}
