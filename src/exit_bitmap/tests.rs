//! Unit tests of the EOI-exit maps, each named after the KVM or SDM behaviour
//! it checks.

use super::*;
use crate::lapic::ApicMode;
use crate::types::{ApicId, DestinationMode};

const V40: Vector = Vector::new(0x40);
const V50: Vector = Vector::new(0x50);

fn apic() -> LocalApic {
    LocalApic::new_enabled(ApicId::new(0), ApicMode::XApic)
}

fn level_to(dest: u32, v: Vector) -> ScanEntry {
    ScanEntry {
        destination: Destination {
            id: dest,
            mode: DestinationMode::Physical,
        },
        vector: v,
        level: true,
        ack_notifier: false,
        rtc: false,
        masked: false,
    }
}

fn scan(map: &mut EoiExitMap, apic: &LocalApic, entries: &[ScanEntry]) {
    map.begin_scan();
    for e in entries {
        map.scan_entry(apic, e);
    }
    map.end_scan(apic);
}

#[test]
fn level_entry_targeting_this_vcpu_is_intercepted_by_every_scanning_policy() {
    for p in [Policy::KvmLegacy, Policy::KvmHighestStale, Policy::Exact] {
        let mut m = EoiExitMap::new(p);
        scan(&mut m, &apic(), &[level_to(0, V40)]);
        assert!(m.intercepts(V40), "{p:?}");
        assert_eq!(m.highest_stale(), None);
    }
}

#[test]
fn edge_entry_without_notifier_or_rtc_does_not_count() {
    let e = ScanEntry {
        level: false,
        ack_notifier: false,
        rtc: false,
        masked: false,
        ..level_to(0, V40)
    };
    assert!(!e.counts_for_kvm() && !e.counts_for_exact());
    let n = ScanEntry {
        level: false,
        ack_notifier: true,
        rtc: false,
        masked: false,
        ..e
    };
    assert!(n.counts_for_kvm() && n.counts_for_exact());
}

#[test]
fn pending_vector_of_an_entry_routed_elsewhere_becomes_the_highest_stale() {
    let mut a = apic();
    a.set_in_service(V40, true);
    a.set_pending(V50, true);
    let mut m = EoiExitMap::new(Policy::KvmHighestStale);
    scan(&mut m, &a, &[level_to(1, V40), level_to(1, V50)]);
    assert!(m.intercepts(V40) && m.intercepts(V50));
    assert_eq!(m.highest_stale(), Some(V50));
}

#[test]
fn eoi_of_the_highest_stale_requests_a_rescan_and_a_lower_one_does_not() {
    let mut a = apic();
    a.set_in_service(V40, true);
    a.set_in_service(V50, true);
    let mut m = EoiExitMap::new(Policy::KvmHighestStale);
    scan(&mut m, &a, &[level_to(1, V40), level_to(1, V50)]);
    let eoi = a.eoi().unwrap();
    let x = m.send_eoi(&a, eoi.vector, eoi.level);
    assert!(x.intercepted && x.rescan);
    let mut l = EoiExitMap::new(Policy::KvmHighestStale);
    let mut b = apic();
    b.set_in_service(V40, true);
    b.set_pending(V50, true);
    scan(&mut l, &b, &[level_to(1, V40), level_to(1, V50)]);
    let eoi = b.eoi().unwrap();
    assert_eq!(eoi.vector, V40);
    let x = l.send_eoi(&b, eoi.vector, eoi.level);
    assert!(
        x.intercepted && !x.rescan,
        "0x40 is stale but not the highest"
    );
}

#[test]
fn exact_drops_a_stale_bit_with_the_eoi_that_retires_it_without_a_rescan() {
    let mut a = apic();
    a.set_in_service(V40, true);
    a.set_in_service(V50, true);
    let mut m = EoiExitMap::new(Policy::Exact);
    scan(&mut m, &a, &[level_to(1, V40), level_to(1, V50)]);
    assert!(m.intercepts(V40) && m.intercepts(V50));
    for v in [V50, V40] {
        let eoi = a.eoi().unwrap();
        assert_eq!(eoi.vector, v);
        let x = m.send_eoi(&a, eoi.vector, eoi.level);
        assert!(x.intercepted && !x.rescan);
        assert!(!m.intercepts(v));
    }
    assert!(m.bitmap().is_empty());
}

#[test]
fn exact_keeps_a_stale_bit_while_a_newer_level_instance_is_pending() {
    let mut a = apic();
    let mut m = EoiExitMap::new(Policy::Exact);
    scan(&mut m, &a, &[]);
    // Level instance accepted, acked; a second level instance queued.
    let msg = crate::InterruptMessage {
        destination: Destination {
            id: 0,
            mode: DestinationMode::Physical,
        },
        delivery_mode: crate::DeliveryMode::Fixed,
        vector: V40,
        trigger: TriggerMode::Level,
    };
    let _ = a.accept(&msg);
    m.on_accept(
        &a,
        Accepted {
            vector: V40,
            trigger: TriggerMode::Level,
            coalesced: false,
            source: Source::NeedsEoi,
        },
    );
    assert_eq!(a.ack(), Some(V40));
    let _ = a.accept(&msg);
    m.on_accept(
        &a,
        Accepted {
            vector: V40,
            trigger: TriggerMode::Level,
            coalesced: false,
            source: Source::NeedsEoi,
        },
    );
    let eoi = a.eoi().unwrap();
    assert!(m.send_eoi(&a, eoi.vector, eoi.level).intercepted);
    assert!(m.intercepts(V40), "the IRR instance still needs its EOI");
    assert_eq!(a.ack(), Some(V40));
    let eoi = a.eoi().unwrap();
    assert!(m.send_eoi(&a, eoi.vector, eoi.level).intercepted);
    assert!(!m.intercepts(V40));
}

#[test]
fn exact_does_not_intercept_an_edge_instance_pending_at_scan() {
    let mut a = apic();
    let mut m = EoiExitMap::new(Policy::Exact);
    scan(&mut m, &a, &[]);
    let msg = crate::InterruptMessage {
        destination: Destination {
            id: 0,
            mode: DestinationMode::Physical,
        },
        delivery_mode: crate::DeliveryMode::Fixed,
        vector: V40,
        trigger: TriggerMode::Edge,
    };
    let _ = a.accept(&msg);
    m.on_accept(
        &a,
        Accepted {
            vector: V40,
            trigger: TriggerMode::Edge,
            coalesced: false,
            source: Source::Plain,
        },
    );
    scan(&mut m, &a, &[level_to(1, V40)]);
    assert!(!m.intercepts(V40));
    let mut k = EoiExitMap::new(Policy::KvmHighestStale);
    scan(&mut k, &a, &[level_to(1, V40)]);
    assert!(
        k.intercepts(V40),
        "KVM cannot tell an edge instance from a level one"
    );
}

#[test]
fn tmr_driven_follows_the_trigger_of_the_latest_acceptance_and_ignores_scans() {
    let a = apic();
    let mut m = EoiExitMap::new(Policy::TmrDriven);
    m.on_accept(
        &a,
        Accepted {
            vector: V40,
            trigger: TriggerMode::Level,
            coalesced: false,
            source: Source::NeedsEoi,
        },
    );
    assert!(m.intercepts(V40));
    scan(&mut m, &a, &[]);
    assert!(m.intercepts(V40), "scans do not clear in-flight bits");
    m.on_accept(
        &a,
        Accepted {
            vector: V40,
            trigger: TriggerMode::Edge,
            coalesced: false,
            source: Source::Plain,
        },
    );
    assert!(!m.intercepts(V40));
}

#[test]
fn no_intercept_never_exits_but_reports_level_eois() {
    let a = apic();
    let mut m = EoiExitMap::new(Policy::NoIntercept);
    scan(&mut m, &a, &[level_to(0, V40)]);
    assert!(m.bitmap().is_empty());
    let x = m.send_eoi(&a, V40, true);
    assert!(!x.intercepted && x.missed_level);
    assert!(!m.send_eoi(&a, V40, false).missed_level);
}

#[test]
fn take_vmcs_update_returns_only_changed_words_then_none() {
    let mut m = EoiExitMap::new(Policy::KvmLegacy);
    assert!(m.take_vmcs_update().is_none());
    scan(
        &mut m,
        &apic(),
        &[level_to(0, V40), level_to(0, Vector::new(0xfe))],
    );
    let u = m.take_vmcs_update().unwrap();
    assert_eq!(u.mask, 0b1010);
    assert_eq!(u.words, m.vmcs_words());
    assert!(m.take_vmcs_update().is_none());
}

#[test]
fn msi_route_scan_entry_counts_only_with_the_level_bit() {
    let lvl = Msi {
        address_lo: 0xFEE0_0000,
        address_hi: 0,
        data: 0x8040,
    };
    let edge = Msi { data: 0x40, ..lvl };
    for f in [MsiFormat::Xapic, MsiFormat::ExtDestId, MsiFormat::X2apicApi] {
        assert!(ScanEntry::from_msi_route(&lvl, f).unwrap().counts_for_kvm());
        assert!(
            !ScanEntry::from_msi_route(&edge, f)
                .unwrap()
                .counts_for_kvm()
        );
    }
    // KVM refuses an x2APIC-API route with address_hi bits 7:0 set: no entry.
    let bad = Msi {
        address_hi: 0x1,
        ..lvl
    };
    assert_eq!(ScanEntry::from_msi_route(&bad, MsiFormat::X2apicApi), None);
    assert!(ScanEntry::from_msi_route(&bad, MsiFormat::Xapic).is_some());
}

#[test]
fn policy_try_from_round_trips_and_rejects_unknown_values() {
    for p in Policy::ALL.into_iter().chain([Policy::LineAware]) {
        assert_eq!(Policy::try_from(p as u8), Ok(p));
    }
    assert!(Policy::try_from(6).is_err());
}
