//! The EOI-vs-reconfiguration races KVM fixed, and the Irqchip's rescan
//! targeting, on the whole path (I/O APIC -> LAPIC -> EOI-exit map).
//!
//! * 0fc5a36dd6b3 (in-kernel I/O APIC) and fceb3a36c29a (split irqchip): a
//!   level interrupt in flight on vCPU0 when the guest reroutes its entry. The
//!   rescan must keep the vector intercepted on vCPU0 (it is still pending
//!   there), or the EOI never reaches the I/O APIC and remote IRR stays set.
//! * db2bdcbbbd32 (edge EOI vs reconfigure): an edge instance in flight while
//!   the entry is reconfigured; its EOI must neither be lost where somebody
//!   needs it (ack notifier, RTC) nor leave the level entry wedged.
//!
//! Every policy but `NoIntercept` must lose no EOI; `NoIntercept` must report
//! the level EOI it loses.

use eoi_exit::ioapic::PinSet;
use eoi_exit::irqchip::Delivery;
use eoi_exit::{
    ApicMode, DeliveryMode, DestinationMode, Effects, Irqchip, IrqchipConfig, LapicWrite, Pin,
    Polarity, Policy, RedirectionEntry, TriggerMode, VcpuId, VcpuSlot, Vector,
};

const P5: Pin = Pin::new(5);
const V0: VcpuId = VcpuId::new(0);
const V1: VcpuId = VcpuId::new(1);

type Chip<const N: usize> = Irqchip<[VcpuSlot; N]>;

fn chip<const N: usize>(policy: Policy) -> Chip<N> {
    Irqchip::new(
        IrqchipConfig {
            policy,
            ..Default::default()
        },
        ApicMode::XApic,
        [const { VcpuSlot::new() }; N],
    )
}

/// Runs one input and returns what it did, each delivery logged.
fn run(f: impl FnOnce(&mut Effects<Vec<Delivery>>)) -> Effects<Vec<Delivery>> {
    let mut fx = Effects::with_log(Vec::new());
    f(&mut fx);
    fx
}

fn entry(vector: u8, trigger: TriggerMode, dest: u32) -> u64 {
    RedirectionEntry::fixed(Vector::new(vector), trigger, dest).0
}

fn remote_irr<const N: usize>(c: &Chip<N>, pin: Pin) -> bool {
    c.ioapic().entry(pin).unwrap().remote_irr()
}

fn level_in_flight_rerouted(policy: Policy, acked: bool, line_high_at_eoi: bool) {
    let c = chip::<2>(policy);
    c.write_entry(P5, entry(0x40, TriggerMode::Level, 0), &mut Effects::new());
    let fx = run(|fx| c.set_line(P5, true, fx));
    assert_eq!(fx.log.len(), 1);
    assert!(remote_irr(&c, P5));
    if acked {
        assert_eq!(c.ack(V0), Some(Vector::new(0x40)));
    }
    // The guest (on another vCPU) moves the pin to vCPU1.
    let fx = run(|fx| c.write_entry(P5, entry(0x40, TriggerMode::Level, 1), fx));
    assert!(
        fx.reload.contains(VcpuId::new(0)) && fx.reload.contains(VcpuId::new(1)),
        "old and new destination rescanned"
    );
    if !line_high_at_eoi {
        c.set_line(P5, false, &mut Effects::new());
    }
    if !acked {
        assert_eq!(c.ack(V0), Some(Vector::new(0x40)));
    }
    let mut eoi_fx = Effects::with_log(Vec::new());
    let eoi = c.guest_eoi(V0, &mut eoi_fx);
    assert_eq!(eoi.vector, Some(Vector::new(0x40)));
    if policy == Policy::NoIntercept {
        assert!(
            !eoi.intercepted && eoi.missed_level,
            "{policy:?}: the lost EOI is reported"
        );
        assert!(remote_irr(&c, P5), "{policy:?}: remote IRR stays wedged");
        return;
    }
    assert!(
        eoi.intercepted,
        "{policy:?}: EOI of the in-flight level vector must exit"
    );
    if line_high_at_eoi {
        // The forwarded EOI re-delivers to the new destination, which must
        // intercept it.
        assert_eq!(eoi_fx.log.len(), 1);
        assert_eq!(eoi_fx.log[0].vcpu, V1);
        assert!(remote_irr(&c, P5));
        assert!(
            c.vcpu(V1).unwrap().map.intercepts(Vector::new(0x40)),
            "{policy:?}"
        );
        c.set_line(P5, false, &mut Effects::new());
        assert_eq!(c.ack(V1), Some(Vector::new(0x40)));
        assert!(
            c.guest_eoi(V1, &mut Effects::new()).intercepted,
            "{policy:?}"
        );
    }
    assert!(
        !remote_irr(&c, P5),
        "{policy:?}: remote IRR cleared by the forwarded EOI"
    );
}

#[test]
fn level_eoi_in_service_at_reroute_is_forwarded_under_every_intercepting_policy() {
    for p in Policy::ALL {
        level_in_flight_rerouted(p, true, false);
    }
}

#[test]
fn level_eoi_pending_in_irr_at_reroute_is_forwarded_under_every_intercepting_policy() {
    for p in Policy::ALL {
        level_in_flight_rerouted(p, false, false);
    }
}

#[test]
fn forwarded_eoi_with_the_line_still_high_redelivers_to_the_new_destination() {
    for p in Policy::ALL {
        level_in_flight_rerouted(p, true, true);
    }
}

#[test]
fn stale_bit_is_dropped_after_the_in_flight_eoi_except_by_kvm_legacy() {
    for p in Policy::ALL {
        let c = chip::<2>(p);
        c.write_entry(P5, entry(0x40, TriggerMode::Level, 0), &mut Effects::new());
        c.set_line(P5, true, &mut Effects::new());
        let _ = c.ack(V0);
        c.write_entry(P5, entry(0x40, TriggerMode::Level, 1), &mut Effects::new());
        c.set_line(P5, false, &mut Effects::new());
        let first = c.guest_eoi(V0, &mut Effects::new());
        // The guest reuses 0x40 for an edge MSI on vCPU0.
        let msg = eoi_exit::InterruptMessage {
            destination: eoi_exit::Destination {
                id: 0,
                mode: DestinationMode::Physical,
            },
            delivery_mode: DeliveryMode::Fixed,
            vector: Vector::new(0x40),
            trigger: TriggerMode::Edge,
        };
        c.send_msi(
            &eoi_exit::Msi::from_message(&msg, eoi_exit::MsiFormat::Xapic).unwrap(),
            &mut Effects::new(),
        );
        let _ = c.ack(V0);
        let second = c.guest_eoi(V0, &mut Effects::new());
        match p {
            Policy::KvmLegacy => assert!(
                first.intercepted && second.intercepted,
                "{p:?} keeps the stale bit"
            ),
            Policy::KvmHighestStale => {
                assert!(
                    first.intercepted && first.rescanned && !second.intercepted,
                    "{p:?}"
                )
            }
            Policy::Exact => assert!(
                first.intercepted && !first.rescanned && !second.intercepted,
                "{p:?}"
            ),
            Policy::TmrDriven => assert!(first.intercepted && !second.intercepted, "{p:?}"),
            Policy::NoIntercept => assert!(!first.intercepted && !second.intercepted, "{p:?}"),
            Policy::LineAware => unreachable!("not in Policy::ALL"),
        }
    }
}

#[test]
fn edge_eoi_of_an_ack_notifier_pin_rerouted_in_flight_is_not_lost() {
    for p in Policy::ALL {
        let mut ack_notifier_pins = PinSet::EMPTY;
        ack_notifier_pins.insert(P5);
        let c: Chip<2> = Irqchip::new(
            IrqchipConfig {
                policy: p,
                ack_notifier_pins,
                ..Default::default()
            },
            ApicMode::XApic,
            [const { VcpuSlot::new() }; 2],
        );
        c.write_entry(P5, entry(0x40, TriggerMode::Edge, 0), &mut Effects::new());
        c.set_line(P5, true, &mut Effects::new());
        let _ = c.ack(V0);
        c.write_entry(P5, entry(0x40, TriggerMode::Edge, 1), &mut Effects::new());
        let eoi = c.guest_eoi(V0, &mut Effects::new());
        assert_eq!(
            eoi.intercepted,
            p != Policy::NoIntercept,
            "{p:?}: the notifier needs this edge EOI"
        );
    }
}

#[test]
fn edge_eoi_in_service_when_the_entry_turns_level_leaves_no_remote_irr_stuck() {
    for p in Policy::ALL {
        let c = chip::<2>(p);
        c.write_entry(P5, entry(0x40, TriggerMode::Edge, 0), &mut Effects::new());
        c.set_line(P5, true, &mut Effects::new());
        assert_eq!(c.ack(V0), Some(Vector::new(0x40)));
        c.set_line(P5, false, &mut Effects::new());
        // Reconfigured to level, same vector; the device asserts again.
        c.write_entry(P5, entry(0x40, TriggerMode::Level, 0), &mut Effects::new());
        let fx = run(|fx| c.set_line(P5, true, fx));
        assert_eq!(fx.log.len(), 1);
        assert!(remote_irr(&c, P5));
        // The edge instance's EOI arrives first (it is in ISR).
        let e1 = c.guest_eoi(V0, &mut Effects::new());
        assert_eq!(e1.vector, Some(Vector::new(0x40)));
        // The level instance (IRR) is taken, the device deasserts, EOI.
        assert_eq!(c.ack(V0), Some(Vector::new(0x40)));
        c.set_line(P5, false, &mut Effects::new());
        let e2 = c.guest_eoi(V0, &mut Effects::new());
        if p == Policy::NoIntercept {
            assert!(remote_irr(&c, P5));
            assert!(e2.missed_level);
        } else {
            assert!(e2.intercepted, "{p:?}: the level instance's EOI exits");
            assert!(!remote_irr(&c, P5), "{p:?}");
        }
    }
}

#[test]
fn rtc_eoi_owed_by_the_old_destination_stays_intercepted() {
    for p in [
        Policy::KvmLegacy,
        Policy::KvmHighestStale,
        Policy::Exact,
        Policy::TmrDriven,
    ] {
        let c: Chip<2> = Irqchip::new(
            IrqchipConfig {
                policy: p,
                rtc_tracking: true,
                ..Default::default()
            },
            ApicMode::XApic,
            [const { VcpuSlot::new() }; 2],
        );
        let rtc = Pin::new(8);
        c.write_entry(rtc, entry(0x38, TriggerMode::Edge, 0), &mut Effects::new());
        c.set_line(rtc, true, &mut Effects::new());
        c.set_line(rtc, false, &mut Effects::new());
        let _ = c.ack(V0);
        assert_eq!(
            c.vcpu(V0).unwrap().map.state().rtc_owed,
            Some(Vector::new(0x38))
        );
        c.write_entry(rtc, entry(0x38, TriggerMode::Edge, 1), &mut Effects::new());
        let eoi = c.guest_eoi(V0, &mut Effects::new());
        assert!(eoi.intercepted, "{p:?}: the owed RTC EOI exits");
        assert_eq!(c.vcpu(V0).unwrap().map.state().rtc_owed, None);
    }
}

#[test]
fn exact_leaves_out_a_masked_idle_level_entry_and_unmask_rescans_before_delivering() {
    let c = chip::<2>(Policy::Exact);
    let masked = RedirectionEntry(
        RedirectionEntry::fixed(Vector::new(0x40), TriggerMode::Level, 0).0
            | RedirectionEntry::MASK,
    );
    c.write_entry(P5, masked.0, &mut Effects::new());
    assert!(
        !c.vcpu(V0).unwrap().map.intercepts(Vector::new(0x40)),
        "masked, remote IRR clear"
    );
    let k = chip::<2>(Policy::KvmHighestStale);
    k.write_entry(P5, masked.0, &mut Effects::new());
    assert!(
        k.vcpu(V0).unwrap().map.intercepts(Vector::new(0x40)),
        "KVM counts masked entries"
    );
    // The line rises while masked: nothing is delivered.
    assert!(run(|fx| c.set_line(P5, true, fx)).log.is_empty());
    // Unmask: the same write rescans vCPU0 and then delivers.
    let fx = run(|fx| c.write_entry(P5, entry(0x40, TriggerMode::Level, 0), fx));
    assert!(fx.reload.contains(VcpuId::new(0)));
    assert_eq!(fx.log.len(), 1);
    assert!(c.vcpu(V0).unwrap().map.intercepts(Vector::new(0x40)));
    let _ = c.ack(V0);
    c.set_line(P5, false, &mut Effects::new());
    assert!(c.guest_eoi(V0, &mut Effects::new()).intercepted);
    assert!(!remote_irr(&c, P5));
}

#[test]
fn masked_entry_in_service_stays_intercepted_under_exact_until_its_eoi() {
    let c = chip::<2>(Policy::Exact);
    c.write_entry(P5, entry(0x40, TriggerMode::Level, 0), &mut Effects::new());
    c.set_line(P5, true, &mut Effects::new());
    let _ = c.ack(V0);
    // The guest masks the pin while its interrupt is in service.
    let masked = RedirectionEntry(
        RedirectionEntry::fixed(Vector::new(0x40), TriggerMode::Level, 0).0
            | RedirectionEntry::MASK,
    );
    c.write_entry(P5, masked.0, &mut Effects::new());
    assert!(c.vcpu(V0).unwrap().map.intercepts(Vector::new(0x40)));
    c.set_line(P5, false, &mut Effects::new());
    assert!(c.guest_eoi(V0, &mut Effects::new()).intercepted);
    assert!(!remote_irr(&c, P5));
    // The in-flight instance was the only reason: the bit drops with its EOI,
    // without a rescan.
    assert!(!c.vcpu(V0).unwrap().map.intercepts(Vector::new(0x40)));
}

fn rescans<const N: usize>(c: &Chip<N>) -> [u32; N] {
    core::array::from_fn(|i| c.vcpu(VcpuId::new(i as u16)).unwrap().stats.rescans)
}

#[test]
fn entry_write_rescans_only_the_old_and_new_destination() {
    let c = chip::<8>(Policy::Exact);
    c.write_entry(P5, entry(0x40, TriggerMode::Level, 2), &mut Effects::new());
    let before = rescans(&c);
    let fx = run(|fx| c.write_entry(P5, entry(0x40, TriggerMode::Level, 5), fx));
    let after = rescans(&c);
    for i in 0..8 {
        let want = u32::from(i == 2 || i == 5);
        assert_eq!(after[i] - before[i], want, "vCPU{i}");
    }
    assert_eq!(fx.reload.len(), 2);
}

#[test]
fn old_destination_is_computed_with_the_old_destination_mode() {
    // xAPIC logical flat: vCPU i has LDR bit i. Logical destination 0x04 is
    // vCPU2; read as a physical ID (KVM's bug) it would be vCPU4.
    let c = chip::<8>(Policy::Exact);
    for i in 0..8u16 {
        let mut fx = Effects::new();
        c.write_lapic(
            VcpuId::new(i),
            LapicWrite::Register {
                offset: 0xE0,
                value: 0xFFFF_FFFF,
            },
            &mut fx,
        );
        c.write_lapic(
            VcpuId::new(i),
            LapicWrite::Register {
                offset: 0xD0,
                value: 1 << (24 + i),
            },
            &mut fx,
        );
    }
    let logical = RedirectionEntry::new(
        Vector::new(0x40),
        DeliveryMode::Fixed,
        DestinationMode::Logical,
        Polarity::ActiveHigh,
        TriggerMode::Level,
        false,
        0x04,
    );
    c.write_entry(P5, logical.0, &mut Effects::new());
    let before = rescans(&c);
    c.write_entry(P5, entry(0x40, TriggerMode::Level, 6), &mut Effects::new());
    let after = rescans(&c);
    assert_eq!(
        after[2] - before[2],
        1,
        "old logical destination (vCPU2) rescanned"
    );
    assert_eq!(
        after[6] - before[6],
        1,
        "new physical destination rescanned"
    );
    assert_eq!(after[4] - before[4], 0, "vCPU4 is not the old destination");
}

#[test]
fn lowest_priority_entry_write_rescans_every_vcpu() {
    let c = chip::<4>(Policy::Exact);
    let before = rescans(&c);
    let lp = RedirectionEntry::new(
        Vector::new(0x40),
        DeliveryMode::LowestPriority,
        DestinationMode::Physical,
        Polarity::ActiveHigh,
        TriggerMode::Level,
        false,
        0,
    );
    c.write_entry(P5, lp.0, &mut Effects::new());
    let after = rescans(&c);
    assert!((0..4).all(|i| after[i] - before[i] == 1));
}

#[test]
fn vmcs_update_carries_only_changed_words() {
    let c = chip::<1>(Policy::Exact);
    let _ = c.vmcs_update(V0);
    c.write_entry(P5, entry(0x40, TriggerMode::Level, 0), &mut Effects::new());
    let u = c.vmcs_update(V0).expect("0x40 added");
    assert_eq!(u.mask, 0b0010, "vector 0x40 lives in EOI_EXIT_BITMAP1");
    assert_eq!(u.words[1], 1);
    assert!(c.vmcs_update(V0).is_none(), "nothing changed since");
    c.write_entry(P5, entry(0xc1, TriggerMode::Level, 0), &mut Effects::new());
    let u = c.vmcs_update(V0).unwrap();
    assert_eq!(u.mask, 0b1010);
    assert_eq!(u.changed().collect::<Vec<_>>(), vec![(1, 0), (3, 1 << 1)]);
}

/// Linux 6.16: a vector stays intercepted on a vCPU only because it was
/// pending when an entry was rerouted away; its EOI is forwarded to the I/O
/// APIC (remote IRR clears) and requests a rescan, which drops the stale bit.
#[test]
fn highest_stale_eoi_is_forwarded_and_its_rescan_drops_the_stale_bit() {
    let c: Chip<2> = Irqchip::new(
        IrqchipConfig {
            policy: Policy::KvmHighestStale,
            ..Default::default()
        },
        ApicMode::XApic,
        [const { VcpuSlot::new() }; 2],
    );
    c.write_entry(P5, entry(0x40, TriggerMode::Level, 0), &mut Effects::new());
    c.set_line(P5, true, &mut Effects::new());
    let _ = c.ack(V0);
    c.write_entry(P5, entry(0x40, TriggerMode::Level, 1), &mut Effects::new());
    assert!(
        c.vcpu(V0).unwrap().map.intercepts(Vector::new(0x40)),
        "rerouted while in service: stale on vCPU0"
    );
    c.set_line(P5, false, &mut Effects::new());
    let e = c.guest_eoi(V0, &mut Effects::new());
    assert!(e.intercepted && e.reached_ioapic && e.rescanned);
    assert!(!remote_irr(&c, P5));
    assert!(!c.vcpu(V0).unwrap().map.intercepts(Vector::new(0x40)));
}
