//! Snapshot round trips per component, and restore validation: every
//! contradictory or out-of-range snapshot gives a clear `SnapshotError`, and
//! the live object is untouched.

#[cfg(feature = "serde")]
use eoi_exit::VectorSet;
#[cfg(feature = "serde")]
use eoi_exit::exit_bitmap::EoiExitMapState;
use eoi_exit::irqchip::VcpuState;
#[cfg(feature = "serde")]
use eoi_exit::snapshot::{IoapicState, LocalApicState};
use eoi_exit::snapshot::{IrqchipState, SNAPSHOT_VERSION, SnapshotError};
use eoi_exit::{
    ApicId, ApicMode, Effects, EoiExitMap, Ioapic, IoapicConfig, Irqchip, IrqchipConfig, LocalApic,
    MaskedEdge, Pin, PinSet, Policy, RedirectionEntry, VcpuId, VcpuSlot, Vector,
};

fn v(x: u8) -> Vector {
    Vector::new(x)
}

/// Changes one set of a saved map's policy bookkeeping (`PolicyState` is
/// opaque; its serde encoding is the only way to write a state the model
/// would never produce). `variant` is the policy, `field` the set.
#[cfg(feature = "serde")]
fn tamper(m: &mut EoiExitMapState, variant: &str, field: &str, f: impl FnOnce(&mut VectorSet)) {
    let mut j = serde_json::to_value(*m).unwrap();
    let slot = &mut j["policy"][variant][field];
    let mut set: VectorSet = serde_json::from_value(slot.take()).expect("a saved set");
    f(&mut set);
    *slot = serde_json::to_value(set).unwrap();
    *m = serde_json::from_value(j).unwrap();
}

/// Reads one set of a saved map's policy bookkeeping (see [`tamper`]).
#[cfg(feature = "serde")]
fn saved_set(m: &EoiExitMapState, variant: &str, field: &str) -> VectorSet {
    serde_json::from_value(serde_json::to_value(*m).unwrap()["policy"][variant][field].take())
        .expect("a saved set")
}

type Chip = Irqchip<[VcpuSlot; 2]>;
type State = IrqchipState<Vec<VcpuState>>;

/// A chip with some of everything: remote IRR, a latched edge, in-flight
/// vectors, a stale vector, an RTC EOI owed, a pending VMCS update.
fn busy_chip(policy: Policy) -> Chip {
    let c = Irqchip::new(
        IrqchipConfig {
            policy,
            rtc_tracking: true,
            ..IrqchipConfig::default()
        },
        ApicMode::XApic,
        [const { VcpuSlot::new() }; 2],
    );
    c.write_entry(Pin::new(5), 0x40 | 1 << 15, &mut Effects::new()); // level -> APIC 0
    c.set_line(Pin::new(5), true, &mut Effects::new());
    c.write_entry(Pin::new(6), 0x50 | 1 << 16, &mut Effects::new()); // masked edge
    c.set_line(Pin::new(6), true, &mut Effects::new()); // latched
    c.write_entry(Pin::new(8), 0x38 | 1 << 56, &mut Effects::new()); // RTC edge -> APIC 1
    c.set_line(Pin::new(8), true, &mut Effects::new());
    let _ = c.ack(VcpuId::new(0));
    // Retarget pin 5 while 0x40 is in service on vCPU 0: stale there.
    c.write_entry(Pin::new(5), 0x40 | 1 << 15 | 1 << 56, &mut Effects::new());
    c
}

#[test]
fn every_component_round_trips_and_continues() {
    for policy in Policy::ALL {
        let c = busy_chip(policy);
        let s: State = c.state();
        assert_eq!(s.version, SNAPSHOT_VERSION);
        assert_eq!(s.vcpus.len(), 2);
        assert!(s.ioapic.entries[5].remote_irr());
        assert!(s.ioapic.pending_edge.contains(Pin::new(6)));
        if policy != Policy::NoIntercept {
            assert_eq!(s.vcpus[1].map.rtc_owed, Some(v(0x38)), "{policy:?}");
        }
        #[cfg(feature = "serde")]
        if matches!(policy, Policy::KvmLegacy | Policy::KvmHighestStale) {
            let stale = saved_set(&s.vcpus[0].map, policy.name(), "stale");
            assert_eq!(stale.highest(), Some(v(0x40)));
        }
        let d = Chip::from_state(&s, [const { VcpuSlot::new() }; 2]).unwrap();
        assert_eq!(d.state::<Vec<_>>(), s);
        // The stale vector came back: under KvmHighestStale its EOI rescans.
        let eoi = d.guest_eoi(VcpuId::new(0), &mut Effects::new());
        assert_eq!(eoi.vector, Some(v(0x40)));
        assert_eq!(
            eoi.rescanned,
            policy == Policy::KvmHighestStale,
            "{policy:?}"
        );

        // Components on their own.
        let io = c.ioapic();
        assert_eq!(Ioapic::from_state(&io.state()).unwrap(), io);
        let vc = c.vcpu(VcpuId::new(0)).unwrap();
        assert_eq!(LocalApic::from_state(&vc.apic.state()).unwrap(), vc.apic);
        assert_eq!(EoiExitMap::from_state(&vc.map.state()).unwrap(), vc.map);
        // The restored LAPIC's derived state (the highest-ISR cache) is
        // rebuilt: it survives a second round trip unchanged.
        let a = LocalApic::from_state(&vc.apic.state()).unwrap();
        assert_eq!(LocalApic::from_state(&a.state()), Ok(a));
    }
}

#[cfg(feature = "serde")]
#[test]
fn serde_round_trips_every_snapshot_type() {
    let c = busy_chip(Policy::Exact);
    let s: State = c.state();
    let json = serde_json::to_string_pretty(&s).unwrap();
    assert_eq!(serde_json::from_str::<State>(&json).unwrap(), s);
    let pc = postcard::to_allocvec(&s).unwrap();
    assert_eq!(postcard::from_bytes::<State>(&pc).unwrap(), s);
    let io = s.ioapic;
    assert_eq!(
        postcard::from_bytes::<IoapicState>(&postcard::to_allocvec(&io).unwrap()).unwrap(),
        io
    );
    let a = s.vcpus[0].apic;
    assert_eq!(
        serde_json::from_str::<LocalApicState>(&serde_json::to_string(&a).unwrap()).unwrap(),
        a
    );
    let m = s.vcpus[0].map;
    assert_eq!(
        serde_json::from_str::<EoiExitMapState>(&serde_json::to_string(&m).unwrap()).unwrap(),
        m
    );
}

#[cfg(feature = "serde")]
#[test]
fn serde_refuses_a_snapshot_of_another_size() {
    let c = busy_chip(Policy::Exact);
    // Two vCPUs read into three-vCPU storage: decoding fails, with the count.
    let json = serde_json::to_string(&c.state::<Vec<_>>()).unwrap();
    let e = serde_json::from_str::<IrqchipState<[VcpuState; 3]>>(&json).unwrap_err();
    assert!(
        e.to_string().contains("expected an array of length 3"),
        "{e}"
    );
    assert!(serde_json::from_str::<IrqchipState<[VcpuState; 1]>>(&json).is_err());
    // 24 pins read as 16.
    let io = serde_json::to_string(&c.ioapic().state()).unwrap();
    let e = serde_json::from_str::<IoapicState<16>>(&io).unwrap_err();
    assert!(e.to_string().contains("exactly 16"), "{e}");
    let pc = postcard::to_allocvec(&c.state::<Vec<_>>()).unwrap();
    assert!(postcard::from_bytes::<IrqchipState<[VcpuState; 3]>>(&pc).is_err());
}

/// Restoring `bad` into `chip` fails with `want`, and leaves the chip as it was.
fn refused(bad: &State, want: SnapshotError) {
    let mut chip = busy_chip(Policy::Exact);
    let before: State = chip.state();
    let got = chip.restore(bad).unwrap_err();
    assert_eq!(got, want);
    assert_eq!(
        chip.state::<Vec<_>>(),
        before,
        "live state changed on {want:?}"
    );
    assert!(Chip::from_state(bad, [const { VcpuSlot::new() }; 2]).is_err());
    let text = got.to_string();
    assert!(!text.is_empty());
    println!("{text}");
}

#[test]
fn restore_refuses_contradictory_snapshots_and_changes_nothing() {
    let good: State = busy_chip(Policy::Exact).state();
    let mut s;

    s = good.clone();
    s.version = 7;
    refused(
        &s,
        SnapshotError::UnsupportedVersion {
            found: 7,
            supported: 6,
        },
    );
    s = good.clone();
    s.vcpus[1].apic.version = 1;
    refused(
        &s,
        SnapshotError::UnsupportedVersion {
            found: 1,
            supported: 6,
        },
    );
    s = good.clone();
    s.vcpus.push(s.vcpus[1]);
    refused(
        &s,
        SnapshotError::Shape {
            what: "vCPUs",
            expected: 2,
            found: 3,
        },
    );
    s = good.clone();
    s.ioapic.pins = 48;
    refused(
        &s,
        SnapshotError::Shape {
            what: "I/O APIC pins",
            expected: 24,
            found: 48,
        },
    );
    s = good.clone();
    s.ioapic.line.insert(Pin::new(30));
    refused(
        &s,
        SnapshotError::InvalidValue {
            vcpu: None,
            pin: None,
            what: "line (a pin beyond the pin count)",
            value: 30,
        },
    );
    s = good.clone();
    s.config.ack_notifier_pins = [Pin::new(200)].into_iter().collect::<PinSet>();
    refused(
        &s,
        SnapshotError::InvalidValue {
            vcpu: None,
            pin: None,
            what: "ack_notifier_pins (a pin beyond the pin count)",
            value: 200,
        },
    );
    s = good.clone();
    s.ioapic.entries[2] = RedirectionEntry(0x30 | RedirectionEntry::REMOTE_IRR);
    refused(
        &s,
        SnapshotError::InvalidValue {
            vcpu: None,
            pin: Some(2),
            what: "redirection entry (remote IRR set on an edge-triggered entry)",
            value: 0x30 | RedirectionEntry::REMOTE_IRR,
        },
    );
    s = good.clone();
    s.ioapic.eoi_count[4] = 10_000;
    refused(
        &s,
        SnapshotError::InvalidValue {
            vcpu: None,
            pin: Some(4),
            what: "EOI-storm counter (at or above IOAPIC_SUCCESSIVE_IRQ_MAX_COUNT, 10000)",
            value: 10_000,
        },
    );
    s = good.clone();
    s.ioapic.id = 0x10;
    refused(
        &s,
        SnapshotError::InvalidValue {
            vcpu: None,
            pin: None,
            what: "I/O APIC ID",
            value: 0x10,
        },
    );
    s = good.clone();
    s.config.ioapic.masked_edge = MaskedEdge::Drop;
    s.ioapic.config.masked_edge = MaskedEdge::Drop;
    refused(
        &s,
        SnapshotError::InvalidValue {
            vcpu: None,
            pin: Some(6),
            what: "pending_edge (a masked edge latched although MaskedEdge::Drop drops them)",
            value: 1,
        },
    );
    s = good.clone();
    s.ioapic.config = IoapicConfig {
        id: 3,
        ..IoapicConfig::default()
    };
    refused(
        &s,
        SnapshotError::Inconsistent {
            vcpu: None,
            vector: None,
            what: "the I/O APIC snapshot's configuration differs from the irqchip's",
        },
    );
    // LAPIC (IRR/ISR bits of vectors 0-15 are taken, as KVM stores them: see
    // `restore_takes_illegal_vectors_in_irr_and_isr_as_kvm_stores_them`).
    s = good.clone();
    s.vcpus[0].apic.svr = 0x1_01ff;
    refused(
        &s,
        SnapshotError::InvalidValue {
            vcpu: Some(0),
            pin: None,
            what: "SVR",
            value: 0x1_01ff,
        },
    );
    s = good.clone();
    s.vcpus[0].apic.dfr = 0;
    refused(
        &s,
        SnapshotError::InvalidValue {
            vcpu: Some(0),
            pin: None,
            what: "DFR",
            value: 0,
        },
    );
    s = good.clone();
    s.vcpus[1].apic.mode = ApicMode::X2Apic;
    s.vcpus[1].apic.ldr = 0x0100_0000;
    refused(
        &s,
        SnapshotError::InvalidValue {
            vcpu: Some(1),
            pin: None,
            what: "LDR",
            value: 0x0100_0000,
        },
    );
    // EOI-exit maps.
    s = good.clone();
    s.vcpus[0].map.policy = EoiExitMap::new(Policy::KvmLegacy).state().policy;
    refused(
        &s,
        SnapshotError::PolicyMismatch {
            vcpu: 0,
            expected: Policy::Exact,
            found: Policy::KvmLegacy,
        },
    );
    // Another policy's bookkeeping (a stale set under Exact, say) cannot be
    // written down: PolicyState holds one policy's. Bookkeeping the model
    // never produces can still be decoded from a tampered serde stream.
    #[cfg(feature = "serde")]
    refuses_tampered_exact_tracking(&good);
}

#[cfg(feature = "serde")]
fn refuses_tampered_exact_tracking(good: &State) {
    let mut s = good.clone();
    tamper(&mut s.vcpus[1].map, "Exact", "inst_two", |x| {
        x.insert(v(0x77));
    });
    refused(
        &s,
        SnapshotError::Inconsistent {
            vcpu: Some(1),
            vector: Some(0x77),
            what: "Exact: a second instance without a first",
        },
    );
    s = good.clone();
    tamper(&mut s.vcpus[1].map, "Exact", "need_old", |x| {
        x.insert(v(0x77));
    });
    refused(
        &s,
        SnapshotError::Inconsistent {
            vcpu: Some(1),
            vector: Some(0x77),
            what: "Exact: an untracked instance needs its EOI",
        },
    );
    s = good.clone();
    for field in ["inst_one", "inst_two", "need_new"] {
        tamper(&mut s.vcpus[1].map, "Exact", field, |x| {
            x.insert(v(0x77));
        });
    }
    s.vcpus[1].map.bitmap.insert(v(0x77));
    refused(
        &s,
        SnapshotError::Inconsistent {
            vcpu: Some(1),
            vector: Some(0x77),
            what: "Exact: an intercepted instance that needs its EOI is neither in IRR nor in ISR",
        },
    );
    // The LAPIC's own in-flight 0x40 on vCPU 0 is fine; drop it from ISR and
    // the tracked, intercepted, needed instance contradicts the LAPIC.
    s = good.clone();
    assert!(saved_set(&s.vcpus[0].map, "Exact", "need_old").contains(v(0x40)));
    s.vcpus[0].apic.isr.remove(v(0x40));
    refused(
        &s,
        SnapshotError::Inconsistent {
            vcpu: Some(0),
            vector: Some(0x40),
            what: "Exact: an intercepted instance that needs its EOI is neither in IRR nor in ISR",
        },
    );
}

/// KVM stores the IRR/ISR/TMR bits of the illegal vectors 0-15 as
/// `KVM_SET_LAPIC` gives them (its selftests round-trip them), so a restore
/// takes them and they behave as in KVM: the IRR bit is never delivered (its
/// priority class 0 never exceeds the PPR: `apic_has_interrupt_for_ppr`) and
/// stays; the ISR bit is retired by the EOI that finds it the highest in
/// service (`apic_set_eoi`). The state round-trips again.
#[test]
fn restore_takes_illegal_vectors_in_irr_and_isr_as_kvm_stores_them() {
    for policy in Policy::ALL {
        let config = IrqchipConfig {
            policy,
            ..IrqchipConfig::default()
        };
        let mut chip = Irqchip::new(config, ApicMode::XApic, [VcpuSlot::new()]);
        let mut s: State = chip.state();
        s.vcpus[0].apic.isr.insert(v(0x0e));
        s.vcpus[0].apic.tmr.insert(v(0x0e));
        s.vcpus[0].apic.irr.insert(v(0x02));
        chip.restore(&s).expect("a LAPIC KVM holds restores");
        let vcpu = VcpuId::new(0);
        assert_eq!(
            chip.ack(vcpu),
            None,
            "{policy:?}: vector 2 is never delivered"
        );
        let eoi = chip.guest_eoi(vcpu, &mut Effects::new());
        assert_eq!((eoi.vector, eoi.level), (Some(v(0x0e)), true), "{policy:?}");
        let apic = chip.vcpu(vcpu).unwrap().apic;
        assert!(
            apic.isr().is_empty() && apic.irr().contains(v(0x02)),
            "{policy:?}"
        );
        let again: State = chip.state();
        chip.restore(&again).expect("and round-trips");
    }
}

#[test]
fn kvm_highest_stale_is_the_highest_stale_vector_of_a_restored_map() {
    // KVM keeps `highest_stale_pending_ioapic_eoi` beside the scan result;
    // here it is derived from the stale set, so a saved state cannot
    // contradict it.
    #[cfg(feature = "serde")]
    {
        let mut s: State = busy_chip(Policy::KvmHighestStale).state();
        let m = &mut s.vcpus[0].map;
        tamper(m, "KvmHighestStale", "stale", |x| {
            x.insert(v(0x30));
        });
        assert_eq!(
            saved_set(m, "KvmHighestStale", "stale").highest(),
            Some(v(0x40))
        );
        let chip = Chip::from_state(&s, [const { VcpuSlot::new() }; 2]).unwrap();
        // 0x40 (in service) is the highest stale vector: its EOI rescans.
        let eoi = chip.guest_eoi(VcpuId::new(0), &mut Effects::new());
        assert_eq!(eoi.vector, Some(v(0x40)));
        assert!(eoi.intercepted && eoi.rescanned);
    }
    // NoIntercept never has a bitmap.
    let mut m = EoiExitMap::new(Policy::NoIntercept).state();
    m.bitmap.insert(v(0x40));
    assert_eq!(
        EoiExitMap::from_state(&m),
        Err(SnapshotError::Inconsistent {
            vcpu: None,
            vector: Some(0x40),
            what: "a NoIntercept map with a non-empty bitmap",
        })
    );
}

#[test]
fn standalone_from_state_refuses_bad_states_and_restores_verbatim() {
    // EoiExitMap: the state's policy comes with it.
    let other = EoiExitMap::new(Policy::TmrDriven).state();
    assert_eq!(other.policy.policy(), Policy::TmrDriven);
    assert_eq!(
        EoiExitMap::from_state(&other).unwrap().policy(),
        Policy::TmrDriven
    );
    // LocalApic.
    let mut a = LocalApic::new_enabled(ApicId::new(1), ApicMode::XApic);
    let _ = a.accept(&eoi_exit::InterruptMessage {
        destination: eoi_exit::Destination {
            id: 1,
            mode: eoi_exit::DestinationMode::Physical,
        },
        delivery_mode: eoi_exit::DeliveryMode::Fixed,
        vector: v(0x40),
        trigger: eoi_exit::TriggerMode::Level,
    });
    let mut bad = a.state();
    bad.svr = 0x1_01ff; // a bit KVM's SVR write mask never keeps
    assert!(LocalApic::from_state(&bad).is_err());
    assert_eq!(LocalApic::from_state(&a.state()), Ok(a));
    // Ioapic.
    let mut io = Ioapic::<24>::default();
    let _ = io.write_entry(Pin::new(1), 0x41 | 1 << 15);
    let _ = io.set_line(Pin::new(1), true);
    let mut bad = io.state();
    bad.pending_edge.insert(Pin::new(99));
    assert!(Ioapic::from_state(&bad).is_err());
    // A good one brings its configuration, verbatim, with no re-injection.
    let mut src = Ioapic::<24>::new(IoapicConfig {
        masked_edge: MaskedEdge::Drop,
        ..IoapicConfig::default()
    });
    let _ = src.write_entry(Pin::new(2), 0x42 | 1 << 15 | 1 << 16); // masked level
    let _ = src.set_line(Pin::new(2), true);
    io = Ioapic::from_state(&src.state()).unwrap();
    assert_eq!(io, src);
}

#[test]
fn display_names_the_problem() {
    let e = SnapshotError::InvalidValue {
        vcpu: Some(3),
        pin: None,
        what: "SVR",
        value: 0x1_01ff,
    };
    assert_eq!(e.to_string(), "vCPU 3: invalid SVR: 66047 (0x101ff)");
    let e = SnapshotError::InvalidValue {
        vcpu: None,
        pin: Some(4),
        what: "EOI-storm counter (at or above IOAPIC_SUCCESSIVE_IRQ_MAX_COUNT, 10000)",
        value: 10_000,
    };
    assert_eq!(
        e.to_string(),
        "pin 4: invalid EOI-storm counter (at or above IOAPIC_SUCCESSIVE_IRQ_MAX_COUNT, 10000): 10000 (0x2710)"
    );
    let e = SnapshotError::Inconsistent {
        vcpu: Some(1),
        vector: Some(0x77),
        what: "Exact: a second instance without a first",
    };
    assert_eq!(
        e.to_string(),
        "vCPU 1: vector 0x77: inconsistent snapshot: Exact: a second instance without a first"
    );
    let e = SnapshotError::Shape {
        what: "vCPUs",
        expected: 2,
        found: 3,
    };
    assert_eq!(
        e.to_string(),
        "snapshot has 3 vCPUs, the object restored into has 2"
    );
    let e = SnapshotError::PolicyMismatch {
        vcpu: 1,
        expected: Policy::Exact,
        found: Policy::KvmLegacy,
    };
    assert_eq!(
        e.to_string(),
        "vCPU 1: EOI-exit map policy KvmLegacy differs from the irqchip's Exact"
    );
    let _: &dyn core::error::Error = &e;
}

#[test]
fn restore_rebuilds_the_physical_destination_table() {
    use eoi_exit::{Destination, DestinationMode, InterruptMessage, Irqchip, IrqchipConfig};
    let slots = || [const { VcpuSlot::new() }; 4];
    let a = Irqchip::<_>::new(IrqchipConfig::default(), eoi_exit::ApicMode::XApic, slots());
    let id = eoi_exit::LapicWrite::SetId(eoi_exit::ApicId::new(9));
    a.write_lapic(eoi_exit::VcpuId::new(3), id, &mut Effects::new());
    let snap: State = a.state();
    let mut b = Irqchip::<_>::new(IrqchipConfig::default(), eoi_exit::ApicMode::XApic, slots());
    b.restore(&snap).unwrap();
    let msg = InterruptMessage {
        destination: Destination {
            id: 9,
            mode: DestinationMode::Physical,
        },
        delivery_mode: eoi_exit::DeliveryMode::Fixed,
        vector: eoi_exit::Vector::new(0x40),
        trigger: eoi_exit::TriggerMode::Edge,
    };
    let mut fx = Effects::new();
    b.send_msi(
        &eoi_exit::Msi::from_message(&msg, eoi_exit::MsiFormat::Xapic).unwrap(),
        &mut fx,
    );
    assert_eq!(
        fx.kick.iter().collect::<Vec<_>>(),
        [eoi_exit::VcpuId::new(3)]
    );
}

/// The restore of a VMM that saves no maps (`EoiExitMapState`'s docs, "Without
/// serde"): the LAPICs and the I/O APIC come back, every vCPU gets a fresh map
/// (keeping the RTC EOI it owes) and is rescanned. The rebuilt maps intercept
/// what the saved ones did, so no level EOI is lost.
#[test]
fn a_restore_without_saved_maps_rebuilds_them_by_rescan() {
    for policy in Policy::ALL {
        let c = busy_chip(policy);
        let mut lean: State = c.state();
        for v in &mut lean.vcpus {
            let owed = v.map.rtc_owed;
            v.map = EoiExitMap::new(policy).state();
            if let Some(rtc) = owed {
                v.map.rtc_owed = Some(rtc);
                v.map.bitmap.insert(rtc);
            }
        }
        let d = Chip::from_state(&lean, [const { VcpuSlot::new() }; 2]).unwrap();
        let mut fx = Effects::new();
        for i in 0..2 {
            d.rescan(VcpuId::new(i), &mut fx);
        }
        for i in 0..2 {
            let (was, now) = (
                c.vcpu(VcpuId::new(i)).unwrap().map,
                d.vcpu(VcpuId::new(i)).unwrap().map,
            );
            assert_eq!(now.bitmap(), was.bitmap(), "{policy:?}: vCPU {i}");
            assert_eq!(
                now.state().rtc_owed,
                was.state().rtc_owed,
                "{policy:?}: vCPU {i}"
            );
        }
        // vCPU 0's level 0x40 (in service, rerouted away) still reaches the
        // I/O APIC.
        let eoi = d.guest_eoi(VcpuId::new(0), &mut fx);
        assert_eq!(eoi.vector, Some(v(0x40)));
        assert_eq!(
            eoi.reached_ioapic,
            policy != Policy::NoIntercept,
            "{policy:?}"
        );
    }
}
