//! Directed EOI ("suppress EOI broadcast", SVR bit 12) with a version-0x20
//! I/O APIC, in the three forwarding modes (SDM / KVM in-kernel, KVM's
//! split irqchip by default, and with `KVM_X2APIC_ENABLE_SUPPRESS_EOI_BROADCAST`),
//! and what each interception policy does with a suppressed level EOI.
//!
//! SDM Vol. 3, "EOI Register": with SVR bit 12 set, the EOI of a level
//! interrupt is not broadcast; software EOIs the I/O APIC through its EOI
//! register (82093AA successors, version 0x20, offset 0x40), which clears
//! remote IRR and re-delivers a line still asserted. KVM: `kvm_ioapic_send_eoi`
//! (`lapic.c`) and `kvm_lapic_suppress_eoi_broadcast` (Linux 6.18.17+).

use eoi_exit::irqchip::{Delivery, Effects, EoiForwarding, GuestEoi, LapicWrite};
use eoi_exit::{
    ApicMode, IoapicConfig, IoapicVersion, Irqchip, IrqchipConfig, Pin, PinSet, Policy,
    RedirectionEntry, TriggerMode, VcpuId, VcpuSlot, Vector,
};

const LEVEL: Pin = Pin::new(5);
const EDGE: Pin = Pin::new(6);
const VL: Vector = Vector::new(0x35);
const VE: Vector = Vector::new(0x36);
const VCPU: VcpuId = VcpuId::new(0);
/// The SVR: software enabled, spurious vector 0xFF, bit 12 on request.
const SVR: u32 = 0x1FF;
const SVR_DIRECTED: u32 = 1 << 12;
/// The I/O APIC's EOI register.
const IOEOI: u64 = 0x40;

type Chip = Irqchip<[VcpuSlot; 2]>;
type Fx = Effects<Vec<Delivery>>;

fn config(policy: Policy, fwd: EoiForwarding) -> IrqchipConfig {
    IrqchipConfig {
        policy,
        ioapic: IoapicConfig {
            version: IoapicVersion::V20,
            ..IoapicConfig::default()
        },
        eoi_forwarding: fwd,
        ..IrqchipConfig::default()
    }
}

/// Two x2APIC vCPUs; pin 5 level (0x35) and pin 6 edge (0x36), both to
/// APIC ID 0. `advertise`: the version register offers directed EOI;
/// `directed`: the guest then sets SVR bit 12.
fn chip(config: IrqchipConfig, advertise: bool, directed: bool) -> Chip {
    let chip = Irqchip::new(config, ApicMode::X2Apic, [VcpuSlot::new(), VcpuSlot::new()]);
    let mut fx = Effects::new();
    chip.write_lapic(VCPU, LapicWrite::DirectedEoi(advertise), &mut fx);
    let svr = SVR | if directed { SVR_DIRECTED } else { 0 };
    chip.write_lapic(
        VCPU,
        LapicWrite::Register {
            offset: 0xF0,
            value: svr,
        },
        &mut fx,
    );
    chip.write_entry(
        LEVEL,
        RedirectionEntry::fixed(VL, TriggerMode::Level, 0).0,
        &mut fx,
    );
    chip.write_entry(
        EDGE,
        RedirectionEntry::fixed(VE, TriggerMode::Edge, 0).0,
        &mut fx,
    );
    let _ = chip.vmcs_update(VCPU);
    chip
}

fn svr_bit_12(chip: &Chip) -> bool {
    chip.vcpu(VCPU).unwrap().apic.read_register(0xF0).unwrap() & SVR_DIRECTED != 0
}

fn remote_irr(chip: &Chip) -> bool {
    chip.ioapic().entry(LEVEL).unwrap().remote_irr()
}

fn pending(chip: &Chip, v: Vector) -> bool {
    chip.vcpu(VCPU).unwrap().apic.irr().contains(v)
}

/// The device asserts the level line (and keeps it asserted); the guest
/// takes the interrupt and EOIs its LAPIC.
fn level_interrupt_and_eoi(chip: &Chip) -> GuestEoi {
    let mut fx = Fx::with_log(Vec::new());
    chip.set_line(LEVEL, true, &mut fx);
    assert_eq!(fx.log.len(), 1, "the asserted level pin is delivered");
    assert_eq!(chip.ack(VCPU), Some(VL));
    let eoi = chip.guest_eoi(VCPU, &mut fx);
    assert_eq!(eoi.vector, Some(VL));
    assert!(eoi.level);
    eoi
}

/// SDM: the suppressed EOI leaves remote IRR set; the guest's write of the
/// vector to the EOI register clears it and, the line being still
/// asserted, re-delivers the interrupt.
#[test]
fn sdm_suppressed_level_eoi_is_not_broadcast_and_the_ioapic_eoi_register_redelivers() {
    for policy in Policy::ALL {
        let chip = chip(config(policy, EoiForwarding::TmrLevel), true, true);
        assert!(svr_bit_12(&chip), "bit 12 is writable once advertised");
        let eoi = level_interrupt_and_eoi(&chip);
        assert!(
            !eoi.reached_ioapic,
            "{policy:?}: a suppressed EOI is not broadcast"
        );
        assert!(!eoi.missed_level, "{policy:?}: nor is it missed");
        assert!(remote_irr(&chip), "{policy:?}");
        assert!(!pending(&chip, VL));

        let mut fx = Fx::with_log(Vec::new());
        chip.mmio_write(IOEOI, 4, u64::from(VL.get()), &mut fx);
        assert_eq!(
            fx.log.len(),
            1,
            "{policy:?}: the asserted line is re-delivered"
        );
        assert!(fx.kick.contains(VCPU));
        assert!(remote_irr(&chip), "set again by the re-delivery");
        assert!(pending(&chip, VL));
    }
}

/// `Exact` drops the exit of a level EOI that will not be forwarded; KVM's
/// policies keep it (KVM's scans do not read SVR bit 12: the EOI exits to
/// KVM, which then does not forward it), as does `TmrDriven` (Xen keys the
/// bit on TMR alone). The exit is the only difference: the I/O APIC sees
/// the same thing under every policy.
#[test]
fn exact_does_not_intercept_a_suppressed_level_eoi_and_kvm_policies_do() {
    for policy in Policy::ALL {
        for fwd in [
            EoiForwarding::TmrLevel,
            EoiForwarding::AllInterceptedUnlessSuppressed,
        ] {
            let chip = chip(config(policy, fwd), true, true);
            let routed = chip.vcpu(VCPU).unwrap().map.intercepts(VL);
            let eoi = level_interrupt_and_eoi(&chip);
            let expect = matches!(
                policy,
                Policy::KvmLegacy | Policy::KvmHighestStale | Policy::TmrDriven
            );
            assert_eq!(eoi.intercepted, expect, "{policy:?} {fwd:?}");
            assert!(!eoi.reached_ioapic, "{policy:?} {fwd:?}");
            assert!(remote_irr(&chip), "{policy:?} {fwd:?}");
            if policy == Policy::Exact {
                assert!(
                    !routed,
                    "{fwd:?}: a level route does not count under directed EOI"
                );
                assert_eq!(chip.vcpu(VCPU).unwrap().map.bitmap().len(), 0);
            }
        }
    }
}

/// KVM's split irqchip by default advertises directed EOI and ignores SVR
/// bit 12: every EOI of a handled vector exits to userspace, which clears
/// remote IRR.
#[test]
fn kvm_split_irqchip_default_quirk_forwards_a_suppressed_eoi() {
    for policy in Policy::ALL {
        if policy == Policy::NoIntercept {
            continue;
        }
        let chip = chip(config(policy, EoiForwarding::AllIntercepted), true, true);
        assert!(svr_bit_12(&chip));
        let eoi = level_interrupt_and_eoi(&chip);
        assert!(eoi.intercepted && eoi.reached_ioapic, "{policy:?}");
        assert!(
            pending(&chip, VL),
            "{policy:?}: the asserted line is re-delivered"
        );
    }
}

/// `KVM_X2APIC_ENABLE_SUPPRESS_EOI_BROADCAST`: `kvm_lapic_suppress_eoi_broadcast`
/// reads SVR bit 12 only, so an edge EOI of a vector the userspace I/O APIC
/// handles is not forwarded either (with bit 12 clear it is, as by
/// default).
#[test]
fn kvm_split_irqchip_enable_suppress_forwards_no_eoi_edge_or_level() {
    let split = config(
        Policy::KvmHighestStale,
        EoiForwarding::AllInterceptedUnlessSuppressed,
    );
    for directed in [false, true] {
        let chip = chip(split, true, directed);
        let eoi = level_interrupt_and_eoi(&chip);
        assert!(eoi.intercepted);
        assert_eq!(eoi.reached_ioapic, !directed, "level, directed={directed}");
    }
    // An edge interrupt of the vector a level entry waits on: the edge
    // acceptance clears the TMR bit, so the EOI is an edge one. By default
    // the split irqchip forwards it (and the userspace I/O APIC clears the
    // level entry's remote IRR); with bit 12 set it does not.
    for directed in [false, true] {
        let chip = chip(split, true, directed);
        let mut fx = Effects::new();
        let shared = RedirectionEntry::fixed(VL, TriggerMode::Edge, 0).0;
        chip.write_entry(EDGE, shared, &mut fx);
        let _ = chip.vmcs_update(VCPU);
        chip.set_line(LEVEL, true, &mut fx);
        chip.set_line(LEVEL, false, &mut fx);
        assert_eq!(chip.ack(VCPU), Some(VL));
        chip.set_line(EDGE, true, &mut fx);
        chip.set_line(EDGE, false, &mut fx);
        assert!(remote_irr(&chip) && pending(&chip, VL));
        let eoi = chip.guest_eoi(VCPU, &mut fx);
        assert!(eoi.intercepted && !eoi.level);
        assert_eq!(eoi.reached_ioapic, !directed, "edge, directed={directed}");
        assert_eq!(remote_irr(&chip), directed);
    }
}

/// `KVM_X2APIC_DISABLE_SUPPRESS_EOI_BROADCAST` (and KVM's in-kernel I/O
/// APIC): directed EOI is not advertised, the guest cannot set SVR bit 12
/// (KVM's SPIV write mask), and every level EOI is broadcast.
#[test]
fn svr_bit_12_cannot_be_set_unless_directed_eoi_is_advertised() {
    for fwd in [
        EoiForwarding::TmrLevel,
        EoiForwarding::AllIntercepted,
        EoiForwarding::AllInterceptedUnlessSuppressed,
    ] {
        let chip = chip(config(Policy::Exact, fwd), false, true);
        assert!(!svr_bit_12(&chip), "{fwd:?}");
        let version = chip.vcpu(VCPU).unwrap().apic.read_register(0x30).unwrap();
        assert_eq!(version & (1 << 24), 0);
        let eoi = level_interrupt_and_eoi(&chip);
        assert!(eoi.intercepted && eoi.reached_ioapic, "{fwd:?}");
    }
}

/// KVM's `kvm_ioapic_update_eoi_one` runs the ack notifiers before it
/// checks SVR bit 12: a level pin with a notifier (here a resampler) still
/// needs the LAPIC EOI to exit, under `Exact` too, while remote IRR is left
/// to the EOI register.
#[test]
fn ack_notifier_and_resample_pins_still_exit_under_directed_eoi() {
    let mut pins = PinSet::EMPTY;
    pins.insert(LEVEL);
    for resample in [false, true] {
        let mut c = config(Policy::Exact, EoiForwarding::TmrLevel);
        if resample {
            c.resample_pins = pins;
        } else {
            c.ack_notifier_pins = pins;
        }
        let chip = chip(c, true, true);
        assert!(chip.vcpu(VCPU).unwrap().map.intercepts(VL));
        let eoi = level_interrupt_and_eoi(&chip);
        assert!(
            eoi.intercepted && !eoi.reached_ioapic,
            "resample={resample}"
        );
        assert!(eoi.acked_pins.contains(LEVEL));
        assert!(remote_irr(&chip));
        let mut fx = Fx::with_log(Vec::new());
        chip.mmio_write(IOEOI, 4, u64::from(VL.get()), &mut fx);
        assert!(!remote_irr(&chip) || fx.log.len() == 1);
        // A resampler lowered the line at the LAPIC EOI: nothing comes back.
        assert_eq!(fx.log.len(), usize::from(!resample), "resample={resample}");
    }
}

/// KVM's RTC EOI tracking (`rtc_irq_eoi`) settles on the LAPIC EOI whatever
/// SVR bit 12 says: the owed RTC EOI still exits under `Exact`.
#[test]
fn an_owed_rtc_eoi_still_exits_under_directed_eoi() {
    let rtc = Pin::new(8);
    let c = IrqchipConfig {
        rtc_tracking: true,
        ..config(Policy::Exact, EoiForwarding::TmrLevel)
    };
    let chip = chip(c, true, true);
    let mut fx = Effects::new();
    let v = Vector::new(0x38);
    chip.write_entry(
        rtc,
        RedirectionEntry::fixed(v, TriggerMode::Edge, 0).0,
        &mut fx,
    );
    chip.set_line(rtc, true, &mut fx);
    chip.set_line(rtc, false, &mut fx);
    assert_eq!(chip.ack(VCPU), Some(v));
    let eoi = chip.guest_eoi(VCPU, &mut fx);
    assert!(eoi.intercepted, "the RTC EOI is owed");
}

/// A level interrupt accepted while EOIs were suppressed, still in service
/// when the guest clears SVR bit 12 (or the host stops advertising directed
/// EOI): its EOI is broadcast now, so `Exact` intercepts it, even when its
/// entry was meanwhile moved to another vCPU (no route keeps the bit).
#[test]
fn ending_directed_eoi_with_a_level_interrupt_in_service_makes_its_eoi_exit() {
    for (withdraw, moved) in [(false, false), (true, false), (false, true), (true, true)] {
        let chip = chip(config(Policy::Exact, EoiForwarding::TmrLevel), true, true);
        let mut fx = Effects::new();
        chip.set_line(LEVEL, true, &mut fx);
        assert_eq!(chip.ack(VCPU), Some(VL));
        assert!(!chip.vcpu(VCPU).unwrap().map.intercepts(VL));
        if moved {
            let to_1 = RedirectionEntry::fixed(VL, TriggerMode::Level, 1).0;
            chip.write_entry(LEVEL, to_1, &mut fx);
        }
        let write = if withdraw {
            LapicWrite::DirectedEoi(false)
        } else {
            LapicWrite::Register {
                offset: 0xF0,
                value: SVR,
            }
        };
        fx.clear();
        chip.write_lapic(VCPU, write, &mut fx);
        assert!(fx.reload.contains(VCPU));
        let at = format!("withdraw={withdraw} moved={moved}");
        assert!(chip.vcpu(VCPU).unwrap().map.intercepts(VL), "{at}");
        let _ = chip.vmcs_update(VCPU);
        chip.set_line(LEVEL, false, &mut fx);
        let eoi = chip.guest_eoi(VCPU, &mut fx);
        assert!(eoi.intercepted && eoi.reached_ioapic, "{at}");
        assert!(!remote_irr(&chip), "{at}");
    }
}

/// KVM 6.16+ requests the stale-vector rescan in `kvm_ioapic_send_eoi`
/// before it checks SVR bit 12: a suppressed EOI of the highest stale
/// vector still rescans.
#[test]
fn kvm_highest_stale_rescan_happens_even_when_the_eoi_is_suppressed() {
    let chip = chip(
        config(
            Policy::KvmHighestStale,
            EoiForwarding::AllInterceptedUnlessSuppressed,
        ),
        true,
        true,
    );
    let mut fx = Effects::new();
    chip.set_line(LEVEL, true, &mut fx);
    assert_eq!(chip.ack(VCPU), Some(VL));
    // irqbalance moves the pin to APIC ID 1 while 0x35 is in service.
    chip.write_entry(
        LEVEL,
        RedirectionEntry::fixed(VL, TriggerMode::Level, 1).0,
        &mut fx,
    );
    let _ = chip.vmcs_update(VCPU);
    let eoi = chip.guest_eoi(VCPU, &mut fx);
    assert!(eoi.intercepted && eoi.rescanned && !eoi.reached_ioapic);
    assert!(!chip.vcpu(VCPU).unwrap().map.intercepts(VL));
}
