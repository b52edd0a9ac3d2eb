//! Non-vectored delivery (SMI, NMI, INIT, SIPI, ExtINT) through the public API, from
//! I/O APIC entries, MSIs and IPIs, against the SDM and KVM's rules
//! (`__apic_accept_irq`, `kvm_apic_accept_events`, `process_nmi`, `kvm_lapic_reset`).

use eoi_exit::irqchip::{Effects, IrqchipState, LapicWrite, VcpuEvents, VcpuState};
use eoi_exit::{
    ApicMode, DeliveryMode, Destination, DestinationMode, InterruptMessage, Irqchip, IrqchipConfig,
    MsiFormat, Pin, RedirectionEntry, TriggerMode, VcpuId, VcpuSlot, Vector,
};

type Chip = Irqchip<[VcpuSlot; 3]>;

fn chip(mode: ApicMode) -> Chip {
    Irqchip::new(
        IrqchipConfig::default(),
        mode,
        [const { VcpuSlot::new() }; 3],
    )
}

const BSP: VcpuId = VcpuId::new(0);
const AP: VcpuId = VcpuId::new(1);

/// An x2APIC ICR value: physical destination `dest`, delivery mode `dm`, `vector`.
fn icr(dest: u32, dm: u64, vector: u8) -> u64 {
    u64::from(dest) << 32 | dm << 8 | u64::from(vector) | 1 << 14
}

/// Sends `value` (x2APIC ICR layout) from `from`: one MSR write in x2APIC mode, ICR2
/// then ICR in xAPIC mode.
fn send(c: &Chip, from: VcpuId, value: u64) -> Effects {
    let mut fx = Effects::new();
    if c.vcpu(from).unwrap().apic.mode() == ApicMode::X2Apic {
        c.write_lapic(from, LapicWrite::Icr(value), &mut fx);
    } else {
        let reg = |offset, value| LapicWrite::Register { offset, value };
        c.write_lapic(from, reg(0x310, ((value >> 32) as u32) << 24), &mut fx);
        c.write_lapic(from, reg(0x300, value as u32), &mut fx);
    }
    fx
}

fn take(c: &Chip, v: VcpuId) -> VcpuEvents {
    c.take_events(v, false, false, &mut Effects::new())
}

fn pending(c: &Chip, v: VcpuId) -> VcpuEvents {
    let s: IrqchipState<Vec<VcpuState>> = c.state();
    s.vcpus[v.index()].events
}

fn fixed(c: &Chip, v: VcpuId, vector: u8) {
    let fx = send(c, BSP, icr(c.vcpu(v).unwrap().apic.id().get(), 0, vector));
    assert!(fx.kick.contains(v));
}

/// The MSI a device writes (8-bit destination).
fn msg(dm: DeliveryMode, dest: u32, vector: u8, trigger: TriggerMode) -> eoi_exit::Msi {
    let m = InterruptMessage {
        destination: Destination {
            id: dest,
            mode: DestinationMode::Physical,
        },
        delivery_mode: dm,
        vector: Vector::new(vector),
        trigger,
    };
    eoi_exit::Msi::from_message(&m, eoi_exit::MsiFormat::Xapic).unwrap()
}

#[test]
fn sdm_init_resets_the_lapic_but_keeps_id_and_mode_as_kvm_lapic_reset() {
    for mode in [ApicMode::XApic, ApicMode::X2Apic] {
        let c = chip(mode);
        let mut fx = Effects::new();
        // Give the AP state INIT must clear: TPR, LDR (xAPIC), an IRR bit, an ISR bit.
        c.write_lapic(
            AP,
            LapicWrite::Register {
                offset: 0x80,
                value: 0x20,
            },
            &mut fx,
        );
        if mode == ApicMode::XApic {
            c.write_lapic(
                AP,
                LapicWrite::Register {
                    offset: 0xD0,
                    value: 0x02 << 24,
                },
                &mut fx,
            );
        }
        fixed(&c, AP, 0x41);
        assert_eq!(c.ack(AP), Some(Vector::new(0x41)));
        fixed(&c, AP, 0x52);
        let ldr_before = c.vcpu(AP).unwrap().apic.read_register(0xD0);

        let fx = send(&c, BSP, icr(1, 5, 0));
        assert!(fx.kick.contains(AP), "{mode:?}: INIT kicks its target");
        // Latched, not taken: KVM resets at the next accept_events.
        assert!(c.vcpu(AP).unwrap().apic.irr().contains(Vector::new(0x52)));
        let mut fx = Effects::new();
        let t = c.take_events(AP, false, false, &mut fx);
        assert!(t.init && t.wait_for_sipi, "{mode:?}: {t:?}");
        assert!(fx.reload.contains(AP), "the reset rescans");
        let a = c.vcpu(AP).unwrap().apic;
        assert!(a.irr().is_empty() && a.isr().is_empty() && a.tmr().is_empty());
        assert_eq!(a.mode(), mode);
        assert_eq!(a.id().get(), 1);
        assert_eq!(a.read_register(0x80), Some(0), "TPR");
        assert_eq!(a.read_register(0xF0), Some(0xFF), "SVR: software-disabled");
        assert_eq!(a.read_register(0x300), Some(0), "ICR");
        match mode {
            ApicMode::XApic => {
                assert_eq!(a.read_register(0xD0), Some(0), "LDR");
                assert_eq!(a.read_register(0xE0), Some(0xFFFF_FFFF), "DFR flat");
            }
            _ => assert_eq!(a.read_register(0xD0), ldr_before, "x2APIC LDR kept"),
        }
        // Software-disabled: a fixed IPI is no longer accepted.
        let fx = send(&c, BSP, icr(1, 0, 0x60));
        assert!(fx.kick.is_empty());
    }
}

#[test]
fn kvm_sipi_is_taken_only_in_wait_for_sipi_and_starts_at_its_vector() {
    let c = chip(ApicMode::X2Apic);
    // SIPI without INIT: dropped at the next entry.
    assert!(send(&c, BSP, icr(1, 6, 0x10)).kick.contains(AP));
    assert_eq!(pending(&c, AP).sipi, Some(Vector::new(0x10)));
    assert_eq!(take(&c, AP), VcpuEvents::default());
    assert_eq!(pending(&c, AP), VcpuEvents::default());

    let _ = send(&c, BSP, icr(1, 5, 0));
    assert!(take(&c, AP).wait_for_sipi);
    // Waiting: entries take nothing.
    assert_eq!(
        take(&c, AP),
        VcpuEvents {
            wait_for_sipi: true,
            ..VcpuEvents::default()
        }
    );
    // Vectors 0-15 are legal start pages.
    let _ = send(&c, BSP, icr(1, 6, 0x08));
    let t = take(&c, AP);
    assert_eq!(t.sipi, Some(Vector::new(0x08)));
    assert!(!t.wait_for_sipi);
    // A second SIPI finds the AP running.
    let _ = send(&c, BSP, icr(1, 6, 0x09));
    assert_eq!(take(&c, AP).sipi, None);
}

#[test]
fn kvm_init_then_sipi_before_the_entry_are_taken_together() {
    let c = chip(ApicMode::X2Apic);
    let _ = send(&c, BSP, icr(1, 5, 0));
    let _ = send(&c, BSP, icr(1, 6, 0x9A));
    let t = take(&c, AP);
    assert!(t.init && !t.wait_for_sipi);
    assert_eq!(t.sipi, Some(Vector::new(0x9A)));
}

#[test]
fn kvm_init_drops_a_latched_sipi() {
    let c = chip(ApicMode::X2Apic);
    let _ = send(&c, BSP, icr(1, 6, 0x9A));
    let _ = send(&c, BSP, icr(1, 5, 0));
    let t = take(&c, AP);
    assert!(t.init && t.wait_for_sipi && t.sipi.is_none());
}

#[test]
fn kvm_bsp_stays_runnable_after_init() {
    let c = chip(ApicMode::X2Apic);
    let _ = send(&c, AP, icr(0, 5, 0));
    let t = take(&c, BSP);
    assert!(t.init && !t.wait_for_sipi);
}

#[test]
fn kvm_init_is_latched_while_blocked_and_sipis_are_eaten() {
    let c = chip(ApicMode::X2Apic);
    fixed(&c, AP, 0x44);
    let _ = send(&c, BSP, icr(1, 5, 0));
    let _ = send(&c, BSP, icr(1, 6, 0x20));
    let mut fx = Effects::new();
    // In SMM or VMX non-root: nothing happens to the LAPIC; the SIPI is dropped.
    let t = c.take_events(AP, true, false, &mut fx);
    assert!(!t.init && !t.wait_for_sipi && t.sipi.is_none());
    assert!(c.vcpu(AP).unwrap().apic.irr().contains(Vector::new(0x44)));
    assert!(pending(&c, AP).init, "INIT stays latched");
    assert_eq!(pending(&c, AP).sipi, None);
    // Unblocked (RSM, VM exit to L1): taken now, no SIPI with it.
    let t = c.take_events(AP, false, false, &mut fx);
    assert!(t.init && t.wait_for_sipi && t.sipi.is_none());
    assert!(c.vcpu(AP).unwrap().apic.irr().is_empty());
}

#[test]
fn kvm_ignores_an_init_level_deassert() {
    let c = chip(ApicMode::X2Apic);
    // Level trigger (bit 15), assert (bit 14) clear: the de-assert of the INIT pair.
    let deassert = 1u64 << 32 | 5 << 8 | 1 << 15;
    assert!(send(&c, BSP, deassert).kick.is_empty());
    assert_eq!(pending(&c, AP), VcpuEvents::default());
    // The level assert is an INIT.
    let _ = send(&c, BSP, deassert | 1 << 14);
    assert!(pending(&c, AP).init);
    // The xAPIC pair too (ICR2 then ICR).
    let c = chip(ApicMode::XApic);
    let mut fx = Effects::new();
    let reg = |offset, value| LapicWrite::Register { offset, value };
    c.write_lapic(BSP, reg(0x310, 1 << 24), &mut fx);
    c.write_lapic(BSP, reg(0x300, 5 << 8 | 1 << 15), &mut fx);
    assert!(fx.kick.is_empty() && !pending(&c, AP).init);
    c.write_lapic(BSP, reg(0x300, 5 << 8 | 1 << 15 | 1 << 14), &mut fx);
    assert!(pending(&c, AP).init);
}

#[test]
fn kvm_process_nmi_keeps_at_most_two_pending_under_a_flood() {
    let c = chip(ApicMode::X2Apic);
    for _ in 0..1000 {
        let _ = send(&c, BSP, icr(1, 4, 0));
    }
    assert_eq!(pending(&c, AP).nmi, 2);
    let mut fx = Effects::new();
    // Blocked (one in service): KVM's limit is 1, none injected.
    assert_eq!(c.take_events(AP, false, true, &mut fx).nmi, 1);
    assert_eq!(pending(&c, AP).nmi, 1);
    // Unblocked: one injected, none left.
    assert_eq!(c.take_events(AP, false, false, &mut fx).nmi, 1);
    assert_eq!(pending(&c, AP).nmi, 0);
    assert_eq!(c.take_events(AP, false, false, &mut fx).nmi, 0);
}

#[test]
fn kvm_process_nmi_with_two_pending_injects_one_and_keeps_one() {
    let c = chip(ApicMode::X2Apic);
    let _ = send(&c, BSP, icr(1, 4, 0));
    let _ = send(&c, BSP, icr(1, 4, 0));
    assert_eq!(take(&c, AP).nmi, 2);
    assert_eq!(pending(&c, AP).nmi, 1);
}

#[test]
fn kvm_vcpu_reset_on_init_drops_pending_nmi_smi_and_extint() {
    let c = chip(ApicMode::X2Apic);
    let _ = send(&c, BSP, icr(1, 4, 0));
    let _ = send(&c, BSP, icr(1, 2, 0));
    c.send_msi(
        &msg(DeliveryMode::ExtInt, 1, 0, TriggerMode::Edge),
        &mut Effects::new(),
    );
    let _ = send(&c, BSP, icr(1, 5, 0));
    let t = take(&c, AP);
    assert!(t.init && t.nmi == 0 && !t.smi && !t.extint);
    assert_eq!(
        pending(&c, AP),
        VcpuEvents {
            wait_for_sipi: true,
            ..VcpuEvents::default()
        }
    );
}

#[test]
fn kvm_wait_for_sipi_holds_nmi_and_smi_until_the_sipi() {
    let c = chip(ApicMode::X2Apic);
    let _ = send(&c, BSP, icr(1, 5, 0));
    assert!(take(&c, AP).wait_for_sipi);
    let _ = send(&c, BSP, icr(1, 4, 0));
    let _ = send(&c, BSP, icr(1, 2, 0));
    let t = take(&c, AP);
    assert!(t.wait_for_sipi && t.nmi == 0 && !t.smi);
    let _ = send(&c, BSP, icr(1, 6, 0x10));
    let t = take(&c, AP);
    assert_eq!(t.sipi, Some(Vector::new(0x10)));
    assert!(t.nmi == 1 && t.smi);
}

#[test]
fn sdm_smi_and_extint_are_handed_to_the_vmm_once() {
    let c = chip(ApicMode::X2Apic);
    for _ in 0..3 {
        let _ = send(&c, BSP, icr(1, 2, 0));
    }
    c.send_msi(
        &msg(DeliveryMode::ExtInt, 1, 0, TriggerMode::Edge),
        &mut Effects::new(),
    );
    let t = take(&c, AP);
    assert!(t.smi && t.extint && t.nmi == 0);
    let t = take(&c, AP);
    assert!(!t.smi && !t.extint);
}

#[test]
fn sdm_non_vectored_messages_reach_a_software_disabled_apic_but_not_a_disabled_one() {
    let c = chip(ApicMode::XApic);
    let mut fx = Effects::new();
    c.write_lapic(
        AP,
        LapicWrite::Register {
            offset: 0xF0,
            value: 0xFF,
        },
        &mut fx,
    );
    c.write_lapic(
        VcpuId::new(2),
        LapicWrite::Mode(ApicMode::Disabled),
        &mut fx,
    );
    // NMI to all excluding self.
    let mut fx = Effects::new();
    c.write_lapic(
        BSP,
        LapicWrite::Register {
            offset: 0x300,
            value: 4 << 8 | 3 << 18 | 1 << 14,
        },
        &mut fx,
    );
    assert_eq!(fx.kick.iter().collect::<Vec<_>>(), [AP]);
    assert_eq!(pending(&c, AP).nmi, 1);
    assert_eq!(pending(&c, VcpuId::new(2)).nmi, 0);
}

#[test]
fn ioapic_nmi_and_init_entries_and_msis_deliver_to_every_matching_vcpu() {
    let c = chip(ApicMode::XApic);
    let mut fx = Effects::new();
    // An NMI entry (delivery mode 4) to APIC 1, edge; an INIT entry to APIC 2.
    let nmi = RedirectionEntry::fixed(Vector::new(0x30), TriggerMode::Edge, 1).0 | 4 << 8;
    let init = RedirectionEntry::fixed(Vector::new(0x31), TriggerMode::Edge, 2).0 | 5 << 8;
    c.write_entry(Pin::new(2), nmi, &mut fx);
    c.write_entry(Pin::new(3), init, &mut fx);
    let mut fx = Effects::new();
    c.set_line(Pin::new(2), true, &mut fx);
    c.set_line(Pin::new(3), true, &mut fx);
    assert_eq!(fx.kick.iter().collect::<Vec<_>>(), [AP, VcpuId::new(2)]);
    assert_eq!(pending(&c, AP).nmi, 1);
    assert!(pending(&c, VcpuId::new(2)).init);
    // No vector reached IRR.
    assert!(c.vcpu(AP).unwrap().apic.irr().is_empty());
    // A broadcast NMI MSI: every vCPU, no lowest-priority arbitration.
    let mut fx = Effects::new();
    c.send_msi(&msg(DeliveryMode::Nmi, 0xFF, 0, TriggerMode::Edge), &mut fx);
    assert_eq!(fx.kick.len(), 3);
    assert_eq!(pending(&c, AP).nmi, 2);
}

#[test]
fn sdm_start_up_is_reserved_in_ioapic_entries_and_msis() {
    let c = chip(ApicMode::XApic);
    let mut fx = Effects::new();
    let sipi = RedirectionEntry::fixed(Vector::new(0x30), TriggerMode::Edge, 1).0 | 6 << 8;
    c.write_entry(Pin::new(2), sipi, &mut fx);
    let mut fx = Effects::new();
    c.set_line(Pin::new(2), true, &mut fx);
    assert!(fx.kick.is_empty());
    let m = eoi_exit::Msi {
        address_hi: 0,
        address_lo: 0xFEE0_1000,
        data: 6 << 8 | 0x30,
    };
    for f in [MsiFormat::Xapic, MsiFormat::ExtDestId, MsiFormat::X2apicApi] {
        assert_eq!(m.message(f), None);
    }
}

#[test]
fn snapshot_saves_pending_events_and_rejects_more_than_two_nmis() {
    let c = chip(ApicMode::X2Apic);
    let _ = send(&c, BSP, icr(1, 5, 0));
    let _ = send(&c, BSP, icr(2, 4, 0));
    let _ = send(&c, BSP, icr(2, 6, 0x33));
    let s: IrqchipState<Vec<VcpuState>> = c.state();
    assert_eq!(s.version, 6); // version 4 added the events, 5 LineAware, 6 msi_format
    let copy = Irqchip::from_state(&s, [const { VcpuSlot::new() }; 3]).unwrap();
    assert_eq!(copy.state::<Vec<_>>(), s);
    assert!(take(&copy, AP).init);
    let mut bad = s.clone();
    bad.vcpus[2].events.nmi = 3;
    assert!(bad.validate().is_err());
    // A version-3 snapshot (no events) still loads.
    let mut v3 = s.clone();
    v3.version = 3;
    v3.vcpus
        .iter_mut()
        .for_each(|v| v.events = VcpuEvents::default());
    assert!(v3.validate().is_ok());
}

/// A version-3 snapshot written as JSON has no `events`: it loads with nothing
/// pending, and the chip it restores runs as the one that wrote it.
#[cfg(feature = "serde")]
#[test]
fn a_version_3_json_snapshot_without_events_loads_with_nothing_pending() {
    let c = chip(ApicMode::X2Apic);
    fixed(&c, AP, 0x41);
    let s: IrqchipState<Vec<VcpuState>> = c.state();
    let mut json: serde_json::Value = serde_json::to_value(&s).unwrap();
    json["version"] = 3.into();
    for v in json["vcpus"].as_array_mut().unwrap() {
        assert!(v.as_object_mut().unwrap().remove("events").is_some());
    }
    let v3: IrqchipState<Vec<VcpuState>> = serde_json::from_value(json).unwrap();
    assert_eq!(v3.version, 3);
    assert!(v3.vcpus.iter().all(|v| v.events == VcpuEvents::default()));
    let copy = Irqchip::from_state(&v3, [const { VcpuSlot::new() }; 3]).expect("v3 loads");
    assert_eq!(copy.ack(AP), Some(Vector::new(0x41)));
}

#[cfg(all(feature = "kvm", target_os = "linux", target_arch = "x86_64"))]
#[test]
fn kvm_vcpu_events_and_mp_state_round_trip_the_pending_events() {
    use eoi_exit::snapshot::kvm::kvm_bindings::{
        KVM_MP_STATE_INIT_RECEIVED, KVM_VCPUEVENT_VALID_NMI_PENDING, kvm_vcpu_events,
    };
    use eoi_exit::snapshot::kvm::{events_from_kvm, events_to_kvm};
    let e = VcpuEvents {
        init: true,
        sipi: None,
        wait_for_sipi: true,
        nmi: 2,
        smi: true,
        extint: false,
    };
    let mut ev = kvm_vcpu_events::default();
    ev.nmi.masked = 1; // the VMM's, kept
    let mp = events_to_kvm(&e, &mut ev);
    assert_eq!(mp.mp_state, KVM_MP_STATE_INIT_RECEIVED);
    assert_eq!(
        (
            ev.nmi.pending,
            ev.nmi.masked,
            ev.smi.pending,
            ev.smi.latched_init
        ),
        (2, 1, 1, 1)
    );
    assert_eq!(events_from_kvm(&ev, &mp), Ok(e));
    // A latched SIPI and an ExtINT have no place in KVM's formats.
    let lost = VcpuEvents {
        sipi: Some(Vector::new(0x10)),
        extint: true,
        ..e
    };
    let mp = events_to_kvm(&lost, &mut ev);
    assert_eq!(events_from_kvm(&ev, &mp), Ok(e));
    // More than KVM's two pending NMIs is refused; an old kernel's flag is one NMI.
    ev.nmi.pending = 3;
    assert!(events_from_kvm(&ev, &mp).is_err());
    ev.flags &= !KVM_VCPUEVENT_VALID_NMI_PENDING;
    assert_eq!(events_from_kvm(&ev, &mp).unwrap().nmi, 1);
}

/// `Irqchip`'s `Hash` covers what decides its behaviour, pending events
/// included: a chip with an INIT latched answers `take_events` differently
/// from one without, so the two must not hash alike (a model checker that
/// fingerprints states would merge them; found by the race checker's
/// reference candidates, which differ only in such an event).
#[test]
fn chips_that_differ_only_in_a_latched_init_hash_apart() {
    use std::hash::{BuildHasher, RandomState};
    let (a, b) = (chip(ApicMode::XApic), chip(ApicMode::XApic));
    let s = RandomState::new();
    assert_eq!(s.hash_one(&a), s.hash_one(&b));
    // An INIT MSI to APIC ID 1 (no sender LAPIC changes).
    let mut fx = Effects::new();
    a.send_msi(&msg(DeliveryMode::Init, 1, 0, TriggerMode::Edge), &mut fx);
    assert!(fx.kick.contains(AP));
    let saved: IrqchipState<Vec<VcpuState>> = a.state();
    assert!(saved.vcpus[1].events.init);
    assert_ne!(s.hash_one(&a), s.hash_one(&b));
}
