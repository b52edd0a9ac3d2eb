//! Every scenario measured on real KVM by `tools/kvm-oracle`, replayed on
//! the model, under every policy.
//!
//! `KvmHighestStale` must give the exit counts observed on Linux 6.18 (the
//! "Observed" column of the kvm-oracle README). The other policies' counts are
//! the expected differences: `KvmLegacy` keeps stale bits (Linux <= 6.15),
//! `TmrDriven` follows the last acceptance's trigger mode, `Exact` drops a
//! stale bit with the EOI that retires the last instance needing it, and
//! `NoIntercept` exits on nothing (and reports the level EOIs it loses).
//!
//! The model's LAPIC is a standard one. This host's PVM LAPIC EOIs at delivery;
//! where that changes a count, the scenario says so.

mod common;

use common::split::{SplitVm, msi};
use eoi_exit::Policy::{self, *};

/// Measurements of one scenario, in the order its doc comment lists.
type Counts = Vec<u32>;

fn check(name: &str, f: fn(Policy) -> (Counts, u32), expected: &[(Policy, &[u32])]) {
    for &(p, want) in expected {
        let (got, missed) = f(p);
        assert_eq!(got, want, "{name}: {p:?}");
        if p != NoIntercept {
            assert_eq!(missed, 0, "{name}: {p:?} missed level EOIs");
        }
    }
}

/// Control: GSI5 -> 0x40 level -> vCPU0. Measures: 100 x GSI5 -> EOI exits;
/// 100 x edge MSI 0x40 under that level route; 100 x edge MSI 0x41.
fn control_level(p: Policy) -> (Counts, u32) {
    let mut vm = SplitVm::new(p, 1);
    vm.route(5, msi(0, 0x40, true));
    for _ in 0..100 {
        vm.irq_line(5);
        vm.run_handlers(0);
    }
    let a = vm.exits(0, 0x40);
    for _ in 0..100 {
        vm.edge_msi(0, 0x40);
        vm.run_handlers(0);
    }
    let b = vm.exits(0, 0x40) - a;
    for _ in 0..100 {
        vm.edge_msi(0, 0x41);
        vm.run_handlers(0);
    }
    (vec![a, b, vm.exits(0, 0x41)], vm.vcpus[0].missed)
}

#[test]
fn level_route_intercepts_every_eoi_of_its_vector_even_from_edge_msis() {
    check(
        "control: level route",
        control_level,
        &[
            (KvmHighestStale, &[100, 100, 0]),
            (KvmLegacy, &[100, 100, 0]),
            // Each edge acceptance clears the bit: the edge EOIs do not exit.
            (TmrDriven, &[100, 0, 0]),
            // A current level route makes the edge EOIs unavoidable.
            (Exact, &[100, 100, 0]),
            (NoIntercept, &[0, 0, 0]),
        ],
    );
    assert_eq!(
        control_level(NoIntercept).1,
        100,
        "NoIntercept reports the 100 lost level EOIs"
    );
}

/// Control: GSI5 -> 0x40 edge route. Measures: 1 x GSI5; 100 x edge MSI 0x40.
fn control_edge(p: Policy) -> (Counts, u32) {
    let mut vm = SplitVm::new(p, 1);
    vm.route(5, msi(0, 0x40, false));
    vm.irq_line(5);
    vm.run_handlers(0);
    let a = vm.exits(0, 0x40);
    for _ in 0..100 {
        vm.edge_msi(0, 0x40);
        vm.run_handlers(0);
    }
    (vec![a, vm.exits(0, 0x40) - a], vm.vcpus[0].missed)
}

#[test]
fn edge_route_intercepts_nothing() {
    let all: Vec<(Policy, &[u32])> = Policy::ALL.iter().map(|&p| (p, &[0u32, 0][..])).collect();
    check("control: edge route", control_edge, &all);
}

/// Pin range: GSI23 -> 0x41 level, GSI24 -> 0x40 level, both -> vCPU0.
/// Measures: 100 x GSI23 -> exits of 0x41; 100 x GSI24 -> exits of 0x40.
fn pin_range(p: Policy) -> (Counts, u32) {
    let mut vm = SplitVm::new(p, 1);
    vm.route(23, msi(0, 0x41, true));
    vm.route(24, msi(0, 0x40, true));
    for _ in 0..100 {
        vm.irq_line(23);
        vm.run_handlers(0);
    }
    for _ in 0..100 {
        vm.irq_line(24);
        vm.run_handlers(0);
    }
    (
        vec![vm.exits(0, 0x41), vm.exits(0, 0x40)],
        vm.vcpus[0].missed,
    )
}

#[test]
fn only_gsis_below_the_reserved_pin_count_are_scanned() {
    check(
        "pin range",
        pin_range,
        &[
            (KvmHighestStale, &[100, 0]),
            (KvmLegacy, &[100, 0]),
            // TmrDriven sees a level acceptance and intercepts GSI24 too.
            (TmrDriven, &[100, 100]),
            // GSI24 is no I/O APIC pin: nobody needs its EOI.
            (Exact, &[100, 0]),
            (NoIntercept, &[0, 0]),
        ],
    );
}

/// Host property: 0x40 in ISR (planted, level route GSI5 -> vCPU0), edge 0x50
/// delivered on top. Measures: exits of 0x40 after the 0x50 handler; exits
/// of 0x40 after one more guest EOI.
/// (On the PVM host the 0x50 handler's EOI pops 0x40: 1 then 1. A standard
/// LAPIC pops 0x50 first: 0 then 1.)
fn nested_edge_over_planted(p: Policy) -> (Counts, u32) {
    let mut vm = SplitVm::new(p, 1);
    vm.route(5, msi(0, 0x40, true));
    vm.plant_isr(0, 0x40);
    vm.edge_msi(0, 0x50);
    vm.run_handlers(0);
    let a = vm.exits(0, 0x40);
    vm.guest_eoi(0);
    (vec![a, vm.exits(0, 0x40)], vm.vcpus[0].missed)
}

#[test]
fn eoi_retires_the_highest_in_service_vector_first() {
    check(
        "nested edge over planted ISR",
        nested_edge_over_planted,
        &[
            (KvmHighestStale, &[0, 1]),
            (KvmLegacy, &[0, 1]),
            (TmrDriven, &[0, 1]),
            (Exact, &[0, 1]),
            (NoIntercept, &[0, 0]),
        ],
    );
}

/// Seed (natural): 0x40 delivered via GSI5, GSI5 rerouted to APIC id 1
/// (absent) inside the handler. Measures: EOI of the in-flight 0x40; then
/// 100 x edge MSI 0x40 -> vCPU0.
/// (On the PVM host the EOI happened at delivery, so nothing was pending at the
/// reroute and even Linux <= 6.15 shows 0; with a standard LAPIC it shows 100.)
fn seed_natural(p: Policy) -> (Counts, u32) {
    let mut vm = SplitVm::new(p, 1);
    vm.route(5, msi(0, 0x40, true));
    vm.irq_line(5);
    assert!(vm.vcpus[0].apic.ack().is_some());
    vm.route(5, msi(1, 0x40, true));
    vm.guest_eoi(0);
    let a = vm.exits(0, 0x40);
    for _ in 0..100 {
        vm.edge_msi(0, 0x40);
        vm.run_handlers(0);
    }
    (vec![a, vm.exits(0, 0x40) - a], vm.vcpus[0].missed)
}

#[test]
fn seed_in_flight_eoi_exits_once_then_the_reused_vector_does_not() {
    check(
        "seed (natural)",
        seed_natural,
        &[
            (KvmHighestStale, &[1, 0]),
            (KvmLegacy, &[1, 100]),
            (TmrDriven, &[1, 0]),
            (Exact, &[1, 0]),
            (NoIntercept, &[0, 0]),
        ],
    );
    assert_eq!(seed_natural(NoIntercept).1, 1);
}

/// Seed (planted), 1 vCPU: 0x40 in ISR, GSI5 rerouted to APIC id 1 (absent).
/// Measures: the guest EOI of the stale 0x40; then 100 x edge 0x40; then a
/// GSI5 assertion (goes nowhere) and vCPU0's total.
fn seed_planted(p: Policy) -> (Counts, u32) {
    let mut vm = SplitVm::new(p, 1);
    vm.route(5, msi(0, 0x40, true));
    vm.plant_isr(0, 0x40);
    vm.route(5, msi(1, 0x40, true));
    vm.guest_eoi(0);
    let a = vm.exits(0, 0x40);
    for _ in 0..100 {
        vm.edge_msi(0, 0x40);
        vm.run_handlers(0);
    }
    let b = vm.exits(0, 0x40) - a;
    vm.irq_line(5);
    vm.run_handlers(0);
    (vec![a, b, vm.exits(0, 0x40)], vm.vcpus[0].missed)
}

#[test]
fn stale_in_service_vector_exits_once_then_never_after_reroute() {
    check(
        "seed (planted)",
        seed_planted,
        &[
            (KvmHighestStale, &[1, 0, 1]),
            (KvmLegacy, &[1, 100, 101]),
            (TmrDriven, &[1, 0, 1]),
            (Exact, &[1, 0, 1]),
            (NoIntercept, &[0, 0, 0]),
        ],
    );
}

/// Seed (planted), 2 vCPUs: 0x40 in ISR on vCPU0, GSI5 rerouted to vCPU1.
/// Measures: vCPU0 stale EOI; vCPU0 100 edges; GSI5 now delivered to vCPU1 ->
/// vCPU1 exits; 100 edge 0x40 -> vCPU1; vCPU0 total.
fn seed_planted_two(p: Policy) -> (Counts, u32) {
    let mut vm = SplitVm::new(p, 2);
    vm.route(5, msi(0, 0x40, true));
    vm.plant_isr(0, 0x40);
    vm.route(5, msi(1, 0x40, true));
    vm.guest_eoi(0);
    let a = vm.exits(0, 0x40);
    for _ in 0..100 {
        vm.edge_msi(0, 0x40);
        vm.run_handlers(0);
    }
    let b = vm.exits(0, 0x40) - a;
    vm.irq_line(5);
    vm.run_handlers(1);
    let c = vm.exits(1, 0x40);
    for _ in 0..100 {
        vm.edge_msi(1, 0x40);
        vm.run_handlers(1);
    }
    let d = vm.exits(1, 0x40) - c;
    (
        vec![a, b, c, d, vm.exits(0, 0x40)],
        vm.vcpus[0].missed + vm.vcpus[1].missed,
    )
}

#[test]
fn reroute_to_another_vcpu_moves_interception_with_the_route() {
    check(
        "seed (planted), 2 vCPUs",
        seed_planted_two,
        &[
            (KvmHighestStale, &[1, 0, 1, 100, 1]),
            (KvmLegacy, &[1, 100, 1, 100, 101]),
            (TmrDriven, &[1, 0, 1, 0, 1]),
            (Exact, &[1, 0, 1, 100, 1]),
            (NoIntercept, &[0, 0, 0, 0, 0]),
        ],
    );
}

/// Reroute while 0x40 is only in IRR (IF=0), then deliver. Measures: the EOI
/// of that 0x40; then 100 x edge 0x40.
fn reroute_in_irr(p: Policy) -> (Counts, u32) {
    let mut vm = SplitVm::new(p, 1);
    vm.route(5, msi(0, 0x40, true));
    vm.irq_line(5);
    vm.route(5, msi(1, 0x40, true));
    vm.run_handlers(0);
    let a = vm.exits(0, 0x40);
    for _ in 0..100 {
        vm.edge_msi(0, 0x40);
        vm.run_handlers(0);
    }
    (vec![a, vm.exits(0, 0x40) - a], vm.vcpus[0].missed)
}

#[test]
fn vector_pending_only_in_irr_at_reroute_stays_intercepted_until_its_eoi() {
    check(
        "reroute while in IRR",
        reroute_in_irr,
        &[
            (KvmHighestStale, &[1, 0]),
            (KvmLegacy, &[1, 100]),
            (TmrDriven, &[1, 0]),
            (Exact, &[1, 0]),
            (NoIntercept, &[0, 0]),
        ],
    );
}

/// Two stale in ISR: 0x40 and 0x50 planted, GSI5/GSI6 rerouted to APIC id 1.
/// Measures: 1st EOI (pops 0x50) -> exits of 0x50; exits of 0x40 so far; 2nd
/// EOI (pops 0x40) -> exits of 0x40; then 100 edges of 0x40; of 0x50.
fn two_stale_in_isr(p: Policy) -> (Counts, u32) {
    let mut vm = SplitVm::new(p, 1);
    vm.route(5, msi(0, 0x40, true));
    vm.route(6, msi(0, 0x50, true));
    vm.plant_isr(0, 0x40);
    vm.plant_isr(0, 0x50);
    vm.route(5, msi(1, 0x40, true));
    vm.route(6, msi(1, 0x50, true));
    assert_eq!(vm.guest_eoi(0), Some(0x50));
    let a = vm.exits(0, 0x50);
    let b = vm.exits(0, 0x40);
    assert_eq!(vm.guest_eoi(0), Some(0x40));
    let c = vm.exits(0, 0x40);
    for _ in 0..100 {
        vm.edge_msi(0, 0x40);
        vm.run_handlers(0);
    }
    for _ in 0..100 {
        vm.edge_msi(0, 0x50);
        vm.run_handlers(0);
    }
    (
        vec![a, b, c, vm.exits(0, 0x40) - c, vm.exits(0, 0x50) - a],
        vm.vcpus[0].missed,
    )
}

#[test]
fn lower_stale_vector_exits_once_after_the_highest_stale_rescan() {
    check(
        "two stale in ISR",
        two_stale_in_isr,
        &[
            (KvmHighestStale, &[1, 0, 1, 0, 0]),
            (KvmLegacy, &[1, 0, 1, 100, 100]),
            (TmrDriven, &[1, 0, 1, 0, 0]),
            (Exact, &[1, 0, 1, 0, 0]),
            (NoIntercept, &[0, 0, 0, 0, 0]),
        ],
    );
    // KVM rescans twice (once per stale EOI); Exact needs no rescan at all.
    let mut hs = SplitVm::new(KvmHighestStale, 1);
    let mut ex = SplitVm::new(Exact, 1);
    for vm in [&mut hs, &mut ex] {
        vm.route(5, msi(0, 0x40, true));
        vm.route(6, msi(0, 0x50, true));
        vm.plant_isr(0, 0x40);
        vm.plant_isr(0, 0x50);
        vm.route(5, msi(1, 0x40, true));
        vm.route(6, msi(1, 0x50, true));
    }
    let (h0, e0) = (hs.vcpus[0].rescans, ex.vcpus[0].rescans);
    for vm in [&mut hs, &mut ex] {
        vm.guest_eoi(0);
        vm.guest_eoi(0);
    }
    assert_eq!(hs.vcpus[0].rescans - h0, 2);
    assert_eq!(ex.vcpus[0].rescans - e0, 0);
}

/// 0x40 stale in ISR + 0x50 stale in IRR; an edge 0x40 sent between their
/// EOIs. Measures: idle EOI pops 0x40 -> exits; 0x50 delivered and EOIed ->
/// exits; the edge 0x40 -> exits; then 100 edges of 0x40; of 0x50.
fn stale_isr_and_irr(p: Policy) -> (Counts, u32) {
    let mut vm = SplitVm::new(p, 1);
    vm.route(5, msi(0, 0x40, true));
    vm.route(6, msi(0, 0x50, true));
    vm.plant_isr(0, 0x40);
    vm.irq_line(6);
    vm.route(5, msi(1, 0x40, true));
    vm.route(6, msi(1, 0x50, true));
    assert_eq!(vm.guest_eoi(0), Some(0x40));
    let a = vm.exits(0, 0x40);
    vm.edge_msi(0, 0x40);
    // The guest takes 0x50 (higher) first, then the edge 0x40.
    assert_eq!(vm.vcpus[0].apic.ack().map(|v| v.get()), Some(0x50));
    vm.guest_eoi(0);
    let b = vm.exits(0, 0x50);
    vm.run_handlers(0);
    let c = vm.exits(0, 0x40) - a;
    let (x40, x50) = (vm.exits(0, 0x40), vm.exits(0, 0x50));
    for _ in 0..100 {
        vm.edge_msi(0, 0x40);
        vm.run_handlers(0);
    }
    for _ in 0..100 {
        vm.edge_msi(0, 0x50);
        vm.run_handlers(0);
    }
    (
        vec![a, b, c, vm.exits(0, 0x40) - x40, vm.exits(0, 0x50) - x50],
        vm.vcpus[0].missed,
    )
}

#[test]
fn edge_instance_pending_at_a_stale_rescan_is_intercepted_once_by_kvm() {
    check(
        "stale ISR + stale IRR",
        stale_isr_and_irr,
        &[
            (KvmHighestStale, &[1, 1, 1, 0, 0]),
            (KvmLegacy, &[1, 1, 1, 100, 100]),
            // The edge 0x40 acceptance cleared its bit.
            (TmrDriven, &[1, 1, 0, 0, 0]),
            // Exact knows the pending 0x40 is an edge instance: no exit.
            (Exact, &[1, 1, 0, 0, 0]),
            (NoIntercept, &[0, 0, 0, 0, 0]),
        ],
    );
}

/// Edge 0x40 pending on vCPU0 at a rescan (level 0x40 routed to id 1).
/// Measures: an edge 0x40 with no rescan while pending; an edge 0x40 pending
/// during the rescan; then 100 x edge 0x40. With one vCPU the rescan is an
/// unrelated KVM_SET_GSI_ROUTING; with two it is vCPU1 enabling its APIC (an
/// APIC map change rescans every vCPU, like a routing change).
fn edge_pending_at_rescan(p: Policy, vcpus: usize) -> (Counts, u32) {
    let mut vm = SplitVm::new(p, vcpus);
    vm.route(5, msi(1, 0x40, true));
    vm.edge_msi(0, 0x40);
    vm.run_handlers(0);
    let a = vm.exits(0, 0x40);
    vm.edge_msi(0, 0x40);
    vm.reinstall_routes();
    vm.run_handlers(0);
    let b = vm.exits(0, 0x40) - a;
    for _ in 0..100 {
        vm.edge_msi(0, 0x40);
        vm.run_handlers(0);
    }
    (vec![a, b, vm.exits(0, 0x40) - a - b], vm.vcpus[0].missed)
}

const EDGE_PENDING_AT_RESCAN: [(Policy, &[u32]); 5] = [
    (KvmHighestStale, &[0, 1, 0]),
    (KvmLegacy, &[0, 1, 100]),
    (TmrDriven, &[0, 0, 0]),
    (Exact, &[0, 0, 0]),
    (NoIntercept, &[0, 0, 0]),
];

#[test]
fn edge_vector_pending_at_any_rescan_is_treated_as_stale_by_kvm() {
    check(
        "edge pending at rescan",
        |p| edge_pending_at_rescan(p, 1),
        &EDGE_PENDING_AT_RESCAN,
    );
}

#[test]
fn apic_map_change_rescan_behaves_like_a_routing_rescan() {
    check(
        "edge pending at map change",
        |p| edge_pending_at_rescan(p, 2),
        &EDGE_PENDING_AT_RESCAN,
    );
}

/// 1001 x KVM_SET_GSI_ROUTING while vCPU0 halts, then an edge 0x40 wakes it
/// (level 0x40 routed to id 1). The rescans raised while halted are serviced
/// at the next entry, after the edge is in IRR. Measures: exits while halted;
/// the waking edge; then 100 edges.
fn routing_storm_while_halted(p: Policy) -> (Counts, u32) {
    let mut vm = SplitVm::new(p, 1);
    for i in 0..1001u32 {
        vm.routes.insert(5, msi(1 + (i & 1), 0x40, true));
    }
    let a = vm.total_exits(0);
    vm.edge_msi(0, 0x40);
    vm.reinstall_routes(); // the deferred KVM_REQ_SCAN_IOAPIC at the next entry
    vm.run_handlers(0);
    let b = vm.exits(0, 0x40);
    for _ in 0..100 {
        vm.edge_msi(0, 0x40);
        vm.run_handlers(0);
    }
    (vec![a, b, vm.exits(0, 0x40) - b], vm.vcpus[0].missed)
}

#[test]
fn deferred_rescan_after_a_halt_sees_the_waking_edge_as_stale() {
    check(
        "routing storm while halted",
        routing_storm_while_halted,
        &[
            (KvmHighestStale, &[0, 1, 0]),
            (KvmLegacy, &[0, 1, 100]),
            (TmrDriven, &[0, 0, 0]),
            (Exact, &[0, 0, 0]),
            (NoIntercept, &[0, 0, 0]),
        ],
    );
}

#[test]
fn seed_counts_per_policy_for_the_readme() {
    // The numbers the README and the closing note quote: (stale EOI, 100 reused
    // edge MSIs) on the planted seed, per policy.
    for p in Policy::ALL {
        let (c, missed) = seed_planted(p);
        std::println!(
            "seed(planted) {:<16} stale-EOI exits {} + reuse exits {} (missed level EOIs {missed})",
            p.name(),
            c[0],
            c[1]
        );
    }
}
