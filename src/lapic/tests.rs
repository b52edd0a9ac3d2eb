//! Unit tests, one per behaviour, named after the SDM / KVM rule they check.

extern crate std;

use super::*;
use crate::irqchip::Arbitration;
use crate::types::{Destination, DestinationMode};

fn v(n: u8) -> Vector {
    Vector::new(n)
}

fn msg(dm: DeliveryMode, vector: u8, trigger: TriggerMode) -> InterruptMessage {
    InterruptMessage {
        destination: phys(0),
        delivery_mode: dm,
        vector: v(vector),
        trigger,
    }
}

fn fixed(vector: u8, trigger: TriggerMode) -> InterruptMessage {
    msg(DeliveryMode::Fixed, vector, trigger)
}

fn phys(id: u32) -> Destination {
    Destination {
        id,
        mode: DestinationMode::Physical,
    }
}

fn logical(id: u32) -> Destination {
    Destination {
        id,
        mode: DestinationMode::Logical,
    }
}

fn enabled_xapic(id: u32) -> LocalApic {
    LocalApic::new_enabled(ApicId::new(id), ApicMode::XApic)
}

fn enabled_x2apic(id: u32) -> LocalApic {
    LocalApic::new_enabled(ApicId::new(id), ApicMode::X2Apic)
}

fn accept_ok(apic: &mut LocalApic, vector: u8, trigger: TriggerMode) {
    let r = apic.accept(&fixed(vector, trigger));
    assert!(r.is_pending(), "{r:?}");
}

// ----- reset and construction ------------------------------------------------

#[test]
fn new_is_the_power_on_reset_state() {
    let a = LocalApic::new(ApicId::new(3));
    assert_eq!(a.mode(), ApicMode::XApic);
    assert_eq!(a.id(), ApicId::new(3));
    assert_eq!(a.id_register(), 3 << 24);
    assert_eq!(a.svr(), 0xFF);
    assert!(!a.software_enabled());
    assert_eq!(a.tpr(), 0);
    assert_eq!(a.ppr(), 0);
    assert_eq!(a.ldr(), 0);
    assert_eq!(a.dfr(), DFR_FLAT);
    assert!(a.irr().is_empty() && a.isr().is_empty() && a.tmr().is_empty());
    assert_eq!(a.version() & 1 << 24, 0, "directed EOI not advertised");
    assert!(a.is_consistent());
}

#[test]
fn new_enabled_sets_svr_0x1ff() {
    let a = enabled_xapic(1);
    assert_eq!(a.svr(), 0x1FF);
    assert!(a.software_enabled());
    assert_eq!(a.svr_flags(), Svr::APIC_SOFTWARE_ENABLE);
    assert_eq!(a.svr() & 0xFF, 0xFF, "spurious vector");
}

#[test]
fn new_enabled_x2apic_derives_ldr_from_id() {
    let a = enabled_x2apic(0x35);
    assert_eq!(a.mode(), ApicMode::X2Apic);
    assert_eq!(a.id(), ApicId::new(0x35));
    assert_eq!(a.ldr(), 0x0003_0020);
}

// ----- IDs, LDR, DFR -----------------------------------------------------------

#[test]
fn x2apic_ldr_is_cluster_in_bits_31_16_and_member_bit_in_15_0() {
    assert_eq!(x2apic_ldr(0), 0x0000_0001);
    assert_eq!(x2apic_ldr(0xF), 0x0000_8000);
    assert_eq!(x2apic_ldr(0x10), 0x0001_0001);
    assert_eq!(x2apic_ldr(0xFFFF_FFFF), 0xFFFF_8000);
}

#[test]
fn xapic_id_register_write_keeps_bits_31_24_only() {
    let mut a = enabled_xapic(1);
    a.write_id_register(0x0A12_3456);
    assert_eq!(a.id(), ApicId::new(0x0A));
    assert_eq!(a.id_register(), 0x0A00_0000);
    assert_eq!(a.initial_id(), ApicId::new(1));
}

#[test]
fn id_register_write_is_ignored_in_x2apic_mode() {
    let mut a = enabled_x2apic(7);
    a.write_id_register(0x0900_0000);
    assert_eq!(a.id(), ApicId::new(7));
}

#[test]
fn set_id_truncates_the_xapic_id_to_8_bits_and_keeps_the_x2apic_id() {
    let mut a = enabled_xapic(0);
    a.set_id(ApicId::new(0x1_23));
    assert_eq!(a.id(), ApicId::new(0x23));
    a.set_mode(ApicMode::X2Apic);
    assert_eq!(a.id(), ApicId::new(0x123));
    assert_eq!(a.ldr(), x2apic_ldr(0x123));
    a.set_id(ApicId::new(0x40));
    assert_eq!(a.ldr(), x2apic_ldr(0x40));
}

#[test]
fn entering_x2apic_uses_the_initial_id_not_the_written_xapic_id() {
    let mut a = enabled_xapic(5);
    a.write_id_register(9 << 24);
    a.set_mode(ApicMode::X2Apic);
    assert_eq!(a.id(), ApicId::new(5));
    assert_eq!(a.ldr(), x2apic_ldr(5));
}

#[test]
fn entering_xapic_resets_the_xapic_id_to_the_initial_id() {
    let mut a = enabled_xapic(5);
    a.write_id_register(9 << 24);
    a.set_mode(ApicMode::Disabled);
    a.set_mode(ApicMode::XApic);
    assert_eq!(a.id(), ApicId::new(5));
}

#[test]
fn ldr_write_keeps_bits_31_24_only() {
    let mut a = enabled_xapic(0);
    a.write_ldr(0x81FF_FFFF);
    assert_eq!(a.ldr(), 0x8100_0000);
}

#[test]
fn dfr_write_keeps_model_bits_31_28_only() {
    let mut a = enabled_xapic(0);
    a.write_dfr(0);
    assert_eq!(a.dfr(), super::dest::DFR_CLUSTER);
    a.write_dfr(0xF000_0000);
    assert_eq!(a.dfr(), DFR_FLAT);
}

#[test]
fn ldr_and_dfr_writes_are_ignored_in_x2apic_mode() {
    let mut a = enabled_x2apic(0x21);
    a.write_ldr(0xFF00_0000);
    a.write_dfr(0);
    assert_eq!(a.ldr(), x2apic_ldr(0x21));
    assert_eq!(a.dfr(), DFR_FLAT);
}

// ----- SVR and version ---------------------------------------------------------

#[test]
fn svr_write_keeps_bits_9_0_and_drops_reserved_bits() {
    let mut a = enabled_xapic(0);
    a.write_svr(0xFFFF_FFFF);
    assert_eq!(a.svr(), 0x3FF);
    assert_eq!(
        a.svr_flags(),
        Svr::APIC_SOFTWARE_ENABLE | Svr::FOCUS_CHECK_DISABLE
    );
}

#[test]
fn svr_bit_12_is_dropped_unless_directed_eoi_is_advertised() {
    let mut a = enabled_x2apic(0);
    a.write_svr(0x11FF);
    assert_eq!(a.svr(), 0x1FF);
    a.set_directed_eoi_supported(true);
    a.write_svr(0x11FF);
    assert_eq!(a.svr(), 0x11FF);
    assert!(a.svr_flags().contains(Svr::SUPPRESS_EOI_BROADCAST));
}

#[test]
fn version_register_is_0x14_with_max_lvt_and_bit_24_when_directed_eoi_advertised() {
    let mut a = enabled_xapic(0);
    assert_eq!(a.version(), 0x0005_0014);
    a.set_directed_eoi_supported(true);
    assert_eq!(a.version(), 0x0105_0014);
}

#[test]
fn software_disabled_apic_ignores_fixed_and_lowest_priority_interrupts() {
    let mut a = LocalApic::new(ApicId::new(0));
    for dm in [DeliveryMode::Fixed, DeliveryMode::LowestPriority] {
        assert_eq!(
            a.accept(&msg(dm, 0x40, TriggerMode::Level)),
            Acceptance::Ignored(IgnoreReason::Disabled)
        );
    }
    assert!(a.irr().is_empty() && a.tmr().is_empty());
}

#[test]
fn hardware_disabled_apic_accepts_nothing() {
    let mut a = enabled_xapic(0);
    a.set_mode(ApicMode::Disabled);
    for dm in [DeliveryMode::Fixed, DeliveryMode::Nmi, DeliveryMode::Init] {
        assert_eq!(
            a.accept(&msg(dm, 0x40, TriggerMode::Edge)),
            Acceptance::Ignored(IgnoreReason::Disabled)
        );
    }
}

#[test]
fn software_disable_keeps_pending_and_in_service_vectors() {
    let mut a = enabled_xapic(0);
    accept_ok(&mut a, 0x40, TriggerMode::Level);
    accept_ok(&mut a, 0x30, TriggerMode::Edge);
    assert_eq!(a.ack(), Some(v(0x40)));
    a.write_svr(0xFF);
    assert!(a.irr().contains(v(0x30)));
    assert!(a.isr().contains(v(0x40)));
    assert!(a.tmr().contains(v(0x40)));
}

#[test]
fn software_disabled_apic_still_delivers_and_retires_held_vectors() {
    let mut a = enabled_xapic(0);
    accept_ok(&mut a, 0x40, TriggerMode::Level);
    a.write_svr(0xFF);
    assert_eq!(a.ack(), Some(v(0x40)));
    let e = a.eoi().unwrap();
    assert_eq!(e.vector, v(0x40));
    assert!(e.broadcast);
}

// ----- TPR / PPR -----------------------------------------------------------------

#[test]
fn ppr_is_tpr_when_isr_is_empty() {
    let mut a = enabled_xapic(0);
    a.write_tpr(0x37);
    assert_eq!(a.ppr(), 0x37);
}

#[test]
fn ppr_is_the_full_tpr_when_tpr_class_is_at_or_above_isr_class() {
    let mut a = enabled_xapic(0);
    a.set_in_service(v(0x3A), false);
    a.write_tpr(0x35);
    assert_eq!(a.ppr(), 0x35);
    a.write_tpr(0x45);
    assert_eq!(a.ppr(), 0x45);
}

#[test]
fn ppr_is_the_isr_class_when_isr_class_is_above_tpr_class() {
    let mut a = enabled_xapic(0);
    a.set_in_service(v(0x5A), false);
    a.write_tpr(0x37);
    assert_eq!(a.ppr(), 0x50);
}

// ----- accept --------------------------------------------------------------------

#[test]
fn fixed_and_lowest_priority_set_irr_and_set_tmr_for_level() {
    let mut a = enabled_xapic(0);
    assert_eq!(
        a.accept(&fixed(0x41, TriggerMode::Level)),
        Acceptance::Accepted {
            vector: v(0x41),
            trigger: TriggerMode::Level
        }
    );
    assert_eq!(
        a.accept(&msg(DeliveryMode::LowestPriority, 0x42, TriggerMode::Edge)),
        Acceptance::Accepted {
            vector: v(0x42),
            trigger: TriggerMode::Edge
        }
    );
    assert!(a.irr().contains(v(0x41)) && a.irr().contains(v(0x42)));
    assert!(a.tmr().contains(v(0x41)) && !a.tmr().contains(v(0x42)));
    assert!(a.isr().is_empty());
}

#[test]
fn edge_acceptance_clears_a_stale_tmr_bit() {
    let mut a = enabled_xapic(0);
    accept_ok(&mut a, 0x41, TriggerMode::Level);
    assert_eq!(a.ack(), Some(v(0x41)));
    let _ = a.eoi();
    assert!(a.tmr().contains(v(0x41)));
    accept_ok(&mut a, 0x41, TriggerMode::Edge);
    assert!(!a.tmr().contains(v(0x41)));
}

#[test]
fn coalesced_when_irr_already_set_and_tmr_still_updated() {
    let mut a = enabled_xapic(0);
    accept_ok(&mut a, 0x50, TriggerMode::Edge);
    assert_eq!(
        a.accept(&fixed(0x50, TriggerMode::Level)),
        Acceptance::Coalesced {
            vector: v(0x50),
            trigger: TriggerMode::Level
        }
    );
    assert!(a.tmr().contains(v(0x50)));
    assert_eq!(a.irr().len(), 1);
}

#[test]
fn vectors_0_to_15_are_illegal_and_not_accepted() {
    let mut a = enabled_xapic(0);
    for n in 0..16 {
        assert_eq!(
            a.accept(&fixed(n, TriggerMode::Level)),
            Acceptance::Ignored(IgnoreReason::IllegalVector)
        );
    }
    assert!(a.irr().is_empty() && a.tmr().is_empty());
    accept_ok(&mut a, 16, TriggerMode::Edge);
}

#[test]
fn nmi_smi_init_and_extint_are_not_vectored() {
    let mut a = enabled_xapic(0);
    for dm in [
        DeliveryMode::Nmi,
        DeliveryMode::Smi,
        DeliveryMode::Init,
        DeliveryMode::ExtInt,
    ] {
        assert_eq!(
            a.accept(&msg(dm, 0x40, TriggerMode::Level)),
            Acceptance::Ignored(IgnoreReason::NotVectored)
        );
    }
    assert!(a.irr().is_empty() && a.tmr().is_empty());
}

// ----- ack -------------------------------------------------------------------------

#[test]
fn ack_moves_the_highest_irr_vector_to_isr() {
    let mut a = enabled_xapic(0);
    accept_ok(&mut a, 0x31, TriggerMode::Edge);
    accept_ok(&mut a, 0x62, TriggerMode::Edge);
    assert_eq!(a.ack(), Some(v(0x62)));
    assert!(!a.irr().contains(v(0x62)));
    assert!(a.isr().contains(v(0x62)));
    assert_eq!(a.ppr(), 0x60);
}

#[test]
fn ack_skips_vectors_at_or_below_ppr_class() {
    let mut a = enabled_xapic(0);
    a.write_tpr(0x45);
    accept_ok(&mut a, 0x4F, TriggerMode::Edge);
    assert_eq!(a.highest_deliverable(), None);
    assert_eq!(a.ack(), None);
    assert!(a.irr().contains(v(0x4F)));
    accept_ok(&mut a, 0x50, TriggerMode::Edge);
    assert_eq!(a.ack(), Some(v(0x50)));
}

#[test]
fn ack_blocks_same_class_vectors_while_one_is_in_service() {
    let mut a = enabled_xapic(0);
    accept_ok(&mut a, 0x50, TriggerMode::Edge);
    assert_eq!(a.ack(), Some(v(0x50)));
    accept_ok(&mut a, 0x5F, TriggerMode::Edge);
    assert_eq!(a.ack(), None);
    accept_ok(&mut a, 0x61, TriggerMode::Edge);
    assert_eq!(a.ack(), Some(v(0x61)));
    assert_eq!(a.eoi().map(|e| e.vector), Some(v(0x61)));
    assert_eq!(a.eoi().map(|e| e.vector), Some(v(0x50)));
    assert_eq!(a.ack(), Some(v(0x5F)));
}

#[test]
fn ack_returns_none_when_irr_is_empty() {
    let mut a = enabled_xapic(0);
    assert_eq!(a.ack(), None);
    assert_eq!(a, enabled_xapic(0));
}

#[test]
fn highest_deliverable_is_what_ack_returns_without_changing_state() {
    let mut a = enabled_xapic(0);
    accept_ok(&mut a, 0x33, TriggerMode::Edge);
    let before = a;
    assert_eq!(a.highest_deliverable(), Some(v(0x33)));
    assert_eq!(a, before);
    assert_eq!(a.ack(), Some(v(0x33)));
}

#[test]
fn hardware_disabled_apic_delivers_nothing() {
    let mut a = enabled_xapic(0);
    accept_ok(&mut a, 0x33, TriggerMode::Edge);
    a.set_mode(ApicMode::Disabled);
    assert_eq!(a.ack(), None);
    assert!(a.irr().contains(v(0x33)));
}

// ----- eoi ---------------------------------------------------------------------------

#[test]
fn eoi_pops_the_highest_isr_vector() {
    let mut a = enabled_xapic(0);
    a.set_in_service(v(0x30), false);
    a.set_in_service(v(0x90), true);
    a.set_in_service(v(0x60), false);
    let e = a.eoi().unwrap();
    assert_eq!(e.vector, v(0x90));
    assert!(a.isr().contains(v(0x30)) && a.isr().contains(v(0x60)));
    assert_eq!(a.ppr(), 0x60);
}

#[test]
fn spurious_eoi_changes_nothing() {
    let mut a = enabled_xapic(0);
    accept_ok(&mut a, 0x40, TriggerMode::Level);
    let before = a;
    assert_eq!(a.eoi(), None);
    assert_eq!(a, before);
}

#[test]
fn eoi_of_a_level_vector_is_broadcast() {
    let mut a = enabled_xapic(0);
    accept_ok(&mut a, 0x40, TriggerMode::Level);
    assert_eq!(a.ack(), Some(v(0x40)));
    assert_eq!(
        a.eoi(),
        Some(Eoi {
            vector: v(0x40),
            level: true,
            broadcast: true
        })
    );
}

#[test]
fn eoi_of_an_edge_vector_reports_the_vector_without_broadcast() {
    let mut a = enabled_xapic(0);
    accept_ok(&mut a, 0x40, TriggerMode::Edge);
    assert_eq!(a.ack(), Some(v(0x40)));
    assert_eq!(
        a.eoi(),
        Some(Eoi {
            vector: v(0x40),
            level: false,
            broadcast: false
        })
    );
}

#[test]
fn eoi_leaves_tmr_unchanged() {
    let mut a = enabled_xapic(0);
    accept_ok(&mut a, 0x40, TriggerMode::Level);
    assert_eq!(a.ack(), Some(v(0x40)));
    let _ = a.eoi();
    assert!(a.tmr().contains(v(0x40)));
}

#[test]
fn directed_eoi_suppresses_broadcast_only_when_advertised() {
    let mut a = enabled_x2apic(0);
    a.write_svr(0x11FF); // bit 12 dropped: not advertised
    a.set_in_service(v(0x40), true);
    assert!(a.eoi().unwrap().broadcast);

    a.set_directed_eoi_supported(true);
    a.write_svr(0x11FF);
    a.set_in_service(v(0x40), true);
    let e = a.eoi().unwrap();
    assert!(e.level && !e.broadcast);
}

#[test]
fn eoi_broadcasts_again_once_directed_eoi_support_is_withdrawn() {
    let mut a = enabled_x2apic(0);
    a.set_directed_eoi_supported(true);
    a.write_svr(0x11FF);
    a.set_directed_eoi_supported(false);
    assert_eq!(a.svr(), 0x11FF);
    a.set_in_service(v(0x40), true);
    assert!(a.eoi().unwrap().broadcast);
}

#[test]
fn eoi_on_a_hardware_disabled_apic_does_nothing() {
    let mut a = enabled_xapic(0);
    a.set_in_service(v(0x40), true);
    a.set_mode(ApicMode::Disabled);
    let before = a;
    assert_eq!(a.eoi(), None);
    assert_eq!(a, before);
}

// ----- pending_eoi and host-side injection -------------------------------------------

#[test]
fn pending_eoi_covers_irr_and_isr() {
    let mut a = enabled_xapic(0);
    assert!(!a.pending_eoi(v(0x40)));
    accept_ok(&mut a, 0x40, TriggerMode::Edge);
    assert!(a.pending_eoi(v(0x40)));
    assert_eq!(a.ack(), Some(v(0x40)));
    assert!(a.pending_eoi(v(0x40)));
    let _ = a.eoi();
    assert!(!a.pending_eoi(v(0x40)));
}

#[test]
fn set_in_service_plants_isr_and_tmr_and_updates_the_cache() {
    let mut a = LocalApic::new(ApicId::new(0));
    a.set_in_service(v(0x20), true);
    a.set_in_service(v(0x80), false);
    a.set_in_service(v(0x50), true);
    assert_eq!(a.highest_isr_cache, Some(v(0x80)));
    assert!(a.tmr().contains(v(0x20)) && !a.tmr().contains(v(0x80)));
    assert!(a.is_consistent());
}

#[test]
fn set_pending_plants_irr_and_tmr() {
    let mut a = LocalApic::new(ApicId::new(0));
    a.set_pending(v(0x44), true);
    assert!(a.irr().contains(v(0x44)) && a.tmr().contains(v(0x44)));
    a.set_pending(v(0x44), false);
    assert!(!a.tmr().contains(v(0x44)));
}

#[test]
fn recompute_caches_restores_consistency_after_direct_field_writes() {
    let mut a = enabled_xapic(0);
    a.isr.insert(v(0x70));
    assert!(!a.is_consistent());
    a.recompute_caches();
    assert!(a.is_consistent());
}

// ----- destination matching -----------------------------------------------------------

#[test]
fn physical_matches_own_xapic_id_only() {
    let a = enabled_xapic(3);
    assert!(a.matches(phys(3)));
    assert!(!a.matches(phys(4)));
}

#[test]
fn physical_xapic_broadcast_ff_matches_xapic_mode_apic() {
    assert!(enabled_xapic(3).matches(phys(0xFF)));
}

#[test]
fn xapic_broadcast_ff_matches_x2apic_mode_apic() {
    let a = enabled_x2apic(0x300);
    assert!(a.matches(phys(0xFF)));
    assert!(a.matches(logical(0xFF)));
}

#[test]
fn xapic_broadcast_ff_is_an_ordinary_destination_without_the_broadcast_quirk() {
    let a = enabled_x2apic(0x300);
    assert!(!a.matches_with(phys(0xFF), false));
    assert!(enabled_x2apic(0xFF).matches_with(phys(0xFF), false));
    // Logical 0xFF = cluster 0, members 0..=7.
    assert!(enabled_x2apic(5).matches_with(logical(0xFF), false));
    assert!(!enabled_x2apic(9).matches_with(logical(0xFF), false));
}

#[test]
fn x2apic_broadcast_ffffffff_matches_x2apic_mode_apic() {
    let a = enabled_x2apic(0x1234);
    assert!(a.matches(phys(super::dest::X2APIC_BROADCAST)));
    assert!(a.matches(logical(super::dest::X2APIC_BROADCAST)));
}

#[test]
fn x2apic_broadcast_ffffffff_does_not_match_xapic_mode_apic() {
    let a = enabled_xapic(3);
    assert!(!a.matches(phys(super::dest::X2APIC_BROADCAST)));
}

#[test]
fn physical_x2apic_matches_the_32_bit_id() {
    let a = enabled_x2apic(0x1_0003);
    assert!(a.matches(phys(0x1_0003)));
    assert!(!a.matches(phys(0x3)));
}

#[test]
fn hotplug_hack_xapic_mode_apic_matches_its_x2apic_id_above_0xff() {
    let a = enabled_xapic(0x103);
    assert_eq!(a.id(), ApicId::new(0x03));
    assert!(a.matches(phys(0x103)));
    assert!(a.matches(phys(0x03)));
}

#[test]
fn xapic_mode_apic_does_not_alias_the_low_8_bits_of_large_destinations() {
    let a = enabled_xapic(3);
    assert!(!a.matches(phys(0x103)));
}

#[test]
fn logical_flat_matches_when_ldr_bits_overlap_the_destination() {
    let mut a = enabled_xapic(0);
    a.write_ldr(0x0400_0000);
    assert!(a.matches(logical(0x04)));
    assert!(a.matches(logical(0x0C)));
    assert!(!a.matches(logical(0x0B)));
}

#[test]
fn logical_with_ldr_zero_matches_only_the_broadcast() {
    let a = enabled_xapic(0);
    assert!(!a.matches(logical(0x7F)));
    assert!(a.matches(logical(0xFF)));
}

#[test]
fn logical_cluster_matches_same_cluster_and_overlapping_member_bits() {
    let mut a = enabled_xapic(0);
    a.write_dfr(0);
    a.write_ldr(0x2400_0000); // cluster 2, member bit 2
    assert!(a.matches(logical(0x24)));
    assert!(a.matches(logical(0x2F)));
    assert!(!a.matches(logical(0x2B)));
    assert!(!a.matches(logical(0x34)));
}

#[test]
fn logical_cluster_15_is_not_a_broadcast_unless_the_destination_is_ff() {
    let mut a = enabled_xapic(0);
    a.write_dfr(0);
    a.write_ldr(0x2400_0000);
    assert!(!a.matches(logical(0xF4)));
    assert!(a.matches(logical(0xFF)));
}

#[test]
fn logical_with_a_reserved_dfr_model_matches_nothing_but_broadcast() {
    let mut a = enabled_xapic(0);
    a.write_dfr(0x5000_0000);
    a.write_ldr(0xFF00_0000);
    assert!(!a.matches(logical(0x01)));
    assert!(a.matches(logical(0xFF)));
}

#[test]
fn x2apic_logical_matches_cluster_and_member_bits() {
    let a = enabled_x2apic(0x35); // cluster 3, bit 5
    assert!(a.matches(logical(0x0003_0020)));
    assert!(a.matches(logical(0x0003_FFFF)));
    assert!(!a.matches(logical(0x0003_0010)));
    assert!(!a.matches(logical(0x0002_0020)));
}

#[test]
fn disabled_apic_matches_nothing() {
    let mut a = enabled_xapic(3);
    a.set_mode(ApicMode::Disabled);
    assert!(!a.matches(phys(3)));
    assert!(!a.matches(phys(0xFF)));
    assert!(!a.matches(logical(0xFF)));
}

// ----- lowest priority -------------------------------------------------------------------

fn lowest_msg(vector: u8) -> InterruptMessage {
    InterruptMessage {
        destination: logical(0xFF),
        delivery_mode: DeliveryMode::LowestPriority,
        vector: v(vector),
        trigger: TriggerMode::Edge,
    }
}

#[test]
fn apr_follows_the_sdm_formula() {
    let mut a = enabled_xapic(0);
    a.write_tpr(0x45);
    assert_eq!(a.apr(), 0x45);
    a.set_pending(v(0x52), false);
    assert_eq!(a.apr(), 0x50);
    let mut b = enabled_xapic(0);
    b.write_tpr(0x45);
    b.set_in_service(v(0x41), false);
    assert_eq!(b.apr(), 0x40);
}

#[test]
fn lowest_priority_picks_the_lowest_arbitration_priority_among_matching() {
    let mut apics = [enabled_xapic(0), enabled_xapic(1), enabled_xapic(2)];
    apics[0].write_tpr(0x50);
    apics[1].write_tpr(0x20);
    apics[2].write_tpr(0x30);
    let got = lowest_priority(
        apics.iter().enumerate(),
        &lowest_msg(0x60),
        Arbitration::SdmPriority,
    );
    assert_eq!(got, Some(1));
}

#[test]
fn lowest_priority_breaks_ties_by_lowest_index() {
    let apics = [enabled_xapic(0), enabled_xapic(1), enabled_xapic(2)];
    let got = lowest_priority(
        apics.iter().enumerate().rev(),
        &lowest_msg(0x60),
        Arbitration::SdmPriority,
    );
    assert_eq!(got, Some(0));
}

#[test]
fn lowest_priority_skips_disabled_and_non_matching_apics() {
    let mut apics = [
        LocalApic::new(ApicId::new(0)),
        enabled_xapic(1),
        enabled_xapic(2),
    ];
    apics[1].write_tpr(0x80);
    apics[2].write_ldr(0x0100_0000);
    apics[1].write_ldr(0x0200_0000);
    let mut m = lowest_msg(0x60);
    m.destination = logical(0x03);
    assert_eq!(
        lowest_priority(apics.iter().enumerate(), &m, Arbitration::SdmPriority),
        Some(2)
    );
    m.destination = logical(0x02);
    assert_eq!(
        lowest_priority(apics.iter().enumerate(), &m, Arbitration::SdmPriority),
        Some(1)
    );
    m.destination = logical(0x04);
    assert_eq!(
        lowest_priority(apics.iter().enumerate(), &m, Arbitration::SdmPriority),
        None
    );
}

#[test]
fn lowest_priority_kvm_hashes_the_vector_over_matching_enabled_apics() {
    let apics = [
        enabled_xapic(0),
        LocalApic::new(ApicId::new(1)),
        enabled_xapic(2),
        enabled_xapic(3),
    ];
    // Eligible: 0, 2, 3. 0x61 % 3 = 1 -> index 2.
    assert_eq!(
        lowest_priority(
            apics.iter().enumerate(),
            &lowest_msg(0x61),
            Arbitration::KvmVectorHashing
        ),
        Some(2)
    );
    assert_eq!(
        lowest_priority(
            apics.iter().enumerate(),
            &lowest_msg(0x60),
            Arbitration::KvmVectorHashing
        ),
        Some(0)
    );
    let none: [LocalApic; 0] = [];
    assert_eq!(
        lowest_priority(
            none.iter().enumerate(),
            &lowest_msg(0x60),
            Arbitration::KvmVectorHashing
        ),
        None
    );
}

// ----- the highest-ISR cache --------------------------------------------------------------

#[derive(Clone, Debug)]
enum Op {
    Accept(u8, u8, bool),
    Ack,
    Eoi,
    Tpr(u8),
    Svr(u32),
    Mode(u8),
    InService(u8, bool),
    Pending(u8, bool),
}

fn op() -> impl proptest::strategy::Strategy<Value = Op> {
    use proptest::prelude::*;
    prop_oneof![
        (0u8..8, any::<u8>(), any::<bool>()).prop_map(|(d, v, l)| Op::Accept(d, v, l)),
        Just(Op::Ack),
        Just(Op::Eoi),
        any::<u8>().prop_map(Op::Tpr),
        any::<u32>().prop_map(Op::Svr),
        (0u8..3).prop_map(Op::Mode),
        (any::<u8>(), any::<bool>()).prop_map(|(v, l)| Op::InService(v, l)),
        (any::<u8>(), any::<bool>()).prop_map(|(v, l)| Op::Pending(v, l)),
    ]
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(1000))]

    #[test]
    fn highest_isr_cache_equals_isr_highest_after_every_operation(
        ops in proptest::collection::vec(op(), 0..64)
    ) {
        let mut a = enabled_xapic(1);
        for o in ops {
            match o {
                Op::Accept(d, vec, l) => {
                    let dm = DeliveryMode::try_from(d).unwrap_or(DeliveryMode::Fixed);
                    let _ = a.accept(&msg(dm, vec, TriggerMode::from_bit(l)));
                }
                Op::Ack => { let _ = a.ack(); }
                Op::Eoi => { let _ = a.eoi(); }
                Op::Tpr(t) => a.write_tpr(t),
                Op::Svr(s) => a.write_svr(s),
                Op::Mode(m) => a.set_mode([ApicMode::XApic, ApicMode::X2Apic, ApicMode::Disabled][usize::from(m % 3)]),
                Op::InService(vec, l) => a.set_in_service(v(vec), l),
                Op::Pending(vec, l) => a.set_pending(v(vec), l),
            }
            proptest::prop_assert_eq!(a.highest_isr_cache, a.isr().highest());
        }
    }
}
