//! The 14 scenarios of `tools/kvm-oracle` (README, "Scenario -> EOI exits"), replayed on
//! real KVM (split irqchip) through the `support` harness. Each assertion is the "Observed"
//! column of that table: Linux 6.18 + PVM, AMD EPYC, no APICv/AVIC, where every guest EOI
//! traps.
//!
//! Where `/dev/kvm` is unusable each test prints one
//! `kvm_oracle_scenarios: skipped: no usable /dev/kvm: ...` line and passes.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::support::*;

const STORM: u32 = 100;
const LEVEL: bool = true;
const EDGE: bool = false;

/// Run `f` on real KVM, or print the skip line and pass.
fn on_kvm(f: impl FnOnce() -> Result<()>) {
    if skip_without_kvm("kvm_oracle_scenarios") {
        return;
    }
    if let Err(e) = f() {
        panic!("{e}");
    }
}

/// A split-irqchip VM with `n` vCPUs.
fn split(n: usize) -> Result<TestVm> {
    TestVm::new(IrqChipMode::Split, n)
}

#[test]
fn guest_stubs_match_the_assembled_bytes() {
    // objdump of `pushal; movb $0x20,%bl; jmpw handler; nop` at 0x100 / 0x108.
    assert_eq!(
        guest_stub(0x20),
        [0x66, 0x60, 0xb3, 0x20, 0xe9, 0x6f, 0xff, 0x90]
    );
    assert_eq!(
        guest_stub(0x21),
        [0x66, 0x60, 0xb3, 0x21, 0xe9, 0x67, 0xff, 0x90]
    );
    // The same stub jumping to the INTx handler at 0x7c0 (`TestVm::use_intx_handler`).
    assert_eq!(
        intx_stub(0x20),
        [0x66, 0x60, 0xb3, 0x20, 0xe9, 0xb9, 0x06, 0x90]
    );
    let img = guest_image();
    assert_eq!(img.len(), STUBS_OFFSET + STUB_SIZE * 0xD0 + GUEST_EXT.len());
    assert_eq!(EXT_OFFSET, 0x780);
    // `more`'s last jump (at 0xab) reaches GUEST_EXT: e9 rel16 from 0xae.
    assert_eq!(&img[0xab..0xae], [0xe9, 0xd2, 0x06]);
}

/// Control: GSI5 -> 0x40 level -> vCPU0. Every EOI of 0x40 exits, edge MSIs of 0x40
/// included (the split-irqchip scan never looks at TMR); 0x41 has no route.
#[test]
fn level_route_to_this_vcpu_exits_on_every_eoi_of_its_vector() {
    on_kvm(|| {
        let mut t = split(1)?;
        t.vm.route_msi(5, 0, 0x40, LEVEL);
        t.vm.push_routes()?;
        t.vcpus[0].expect(Stop::Ready)?;
        let status = t.vm.pulse(5)?;
        t.vcpus[0].handle(0x40)?;
        println!(
            "note: KVM_IRQ_LINE_STATUS {status}; handler saw its own vector in ISR: {} \
             (this host's LAPIC EOIs at delivery: false)",
            t.vcpus[0].handlers_saw_own_isr > 0
        );
        t.check(
            "KVM_IRQ_LINE_STATUS of a delivered MSI route",
            status as u32,
            1,
        )?;
        t.trace().pause(true);
        for _ in 1..STORM {
            t.vm.pulse(5)?;
            t.vcpus[0].handle(0x40)?;
        }
        t.trace().pause(false);
        t.check(
            "100 x KVM_IRQ_LINE(GSI5) -> EOI exits",
            t.vcpus[0].eoi_exits(0x40),
            STORM,
        )?;
        let n = t.storm(0, 0x40, STORM)?;
        t.check("100 x edge MSI 0x40 under that level route", n, STORM)?;
        let n = t.storm(0, 0x41, STORM)?;
        t.check("100 x edge MSI 0x41 (no route)", n, 0)?;
        t.vcpus[0].settle()
    });
}

/// Control: GSI5 -> 0x40 EDGE route. Edge routes are not scanned: no exit at all.
#[test]
fn edge_route_never_exits() {
    on_kvm(|| {
        let mut t = split(1)?;
        t.vm.route_msi(5, 0, 0x40, EDGE);
        t.vm.push_routes()?;
        t.vcpus[0].expect(Stop::Ready)?;
        t.vm.pulse(5)?;
        t.vcpus[0].handle(0x40)?;
        t.check(
            "KVM_IRQ_LINE(GSI5), edge route",
            t.vcpus[0].eoi_exits(0x40),
            0,
        )?;
        let n = t.storm(0, 0x40, STORM)?;
        t.check("100 x edge MSI 0x40", n, 0)?;
        t.vcpus[0].settle()
    });
}

/// Only GSIs below the 24 reserved I/O APIC pins are scanned: GSI23 exits, GSI24 does not.
#[test]
fn only_gsis_below_the_reserved_pin_count_are_scanned() {
    on_kvm(|| {
        let mut t = split(1)?;
        t.vm.route_msi(23, 0, 0x41, LEVEL);
        t.vm.route_msi(24, 0, 0x40, LEVEL);
        t.vm.push_routes()?;
        t.vcpus[0].expect(Stop::Ready)?;
        for k in 0..STORM {
            t.vm.pulse(23)?;
            t.vcpus[0].handle(0x41)?;
            t.vm.pulse(24)?;
            t.vcpus[0].handle(0x40)?;
            t.trace().pause(k == 0);
        }
        t.trace().pause(false);
        let v = &t.vcpus[0];
        t.check(
            "100 x GSI23 (last reserved pin) -> exits 0x41",
            v.eoi_exits(0x41),
            STORM,
        )?;
        t.check(
            "100 x GSI24 (not a reserved pin) -> exits 0x40",
            v.eoi_exits(0x40),
            0,
        )?;
        t.vcpus[0].settle()
    });
}

/// Host property (quirk 1): 0x40 planted in ISR under a level route to vCPU0, edge 0x50
/// delivered on top. On this host the 0x50 handler's EOI pops the planted 0x40 (auto-EOI
/// at delivery); either way 0x40's EOI exits exactly once in total.
#[test]
fn planted_in_service_vector_exits_once_when_an_interrupt_is_delivered_on_top() {
    on_kvm(|| {
        let mut t = split(1)?;
        t.vm.route_msi(5, 0, 0x40, LEVEL);
        t.vm.push_routes()?;
        t.vcpus[0].expect(Stop::Ready)?;
        t.vcpus[0].plant_in_service(0x40)?;
        t.vm.msi(0, 0x50, EDGE)?;
        t.vcpus[0].handle(0x50)?;
        t.vcpus[0].ping()?;
        let word = t.vcpus[0].last_guest_isr.map_or(0, |(_, w)| w);
        let regs = t.vcpus[0].get_lapic_regs()?;
        println!(
            "note: in the 0x50 handler the guest read ISR 0x40={} 0x50={} (standard LAPIC: 1 1); \
             after its EOI: 0x40 in ISR {}, exits for 0x40 {} (standard: 1, 0)",
            word & 1,
            (word >> 16) & 1,
            u8::from(regs.isr_has(0x40)),
            t.vcpus[0].eoi_exits(0x40)
        );
        t.vcpus[0].guest_eoi()?;
        t.check(
            "exits for 0x40 after one more guest EOI",
            t.vcpus[0].eoi_exits(0x40),
            1,
        )?;
        t.vcpus[0].settle()
    });
}

/// Host property (quirk 2): requests an EOI raises wait for the next KVM_RUN. Without a
/// ping: an edge 0x40 sent at "ready" is intercepted once (setup re-scans still pending),
/// and a stale EOI followed at once by an edge 0x40 gives 2 exits. Where every EOI or
/// wrmsr exits immediately these would be 0 and 1, and so they are here too when an
/// emulated batch happens to end early (under heavy host load; see the notes below).
#[test]
fn eoi_requests_are_serviced_on_the_next_kvm_run_without_a_ping() {
    on_kvm(|| {
        let mut t = split(1)?;
        t.vm.route_msi(5, 1, 0x40, LEVEL); // level 0x40 belongs to APIC id 1
        t.vm.push_routes()?;
        t.vcpus[0].expect(Stop::Ready)?;
        t.vm.msi(0, 0x40, EDGE)?; // no settle: setup re-scans may pend
        t.vcpus[0].handle(0x40)?;
        let at_ready = t.vcpus[0].eoi_exits(0x40);
        t.vcpus[0].plant_in_service(0x40)?;
        t.vcpus[0].ping()?;
        let before = t.vcpus[0].eoi_exits(0x40);
        let mark = t.trace().len();
        t.vcpus[0].guest_eoi_no_ping()?;
        t.vm.msi(0, 0x40, EDGE)?;
        t.vcpus[0].handle(0x40)?;
        let after_stale = t.vcpus[0].eoi_exits(0x40) - before;
        // Where the emulated batch ends decides it, and the trace shows which case ran: if
        // the stale EOI's exit (and so its re-scan) came before the idle loop's `out 0x17`,
        // the edge was not yet queued at the re-scan: 1 exit. Otherwise (the usual case on
        // this host) the re-scan ran after the edge was queued: 2 exits.
        let events = t.trace().events();
        let since = &events[mark..];
        let exit_at = since
            .iter()
            .position(|e| matches!(e, Event::EoiExit { .. }));
        let out_at = since
            .iter()
            .position(|e| matches!(e, Event::IdleEoi { .. }));
        let batch_ended_early = matches!((exit_at, out_at), (Some(x), Some(o)) if x < o);
        println!(
            "note: edge at ready: {at_ready} exit(s); stale EOI + edge: {after_stale} \
             (batch ended before the out: {batch_ended_early})"
        );
        // 1 on this host when the re-scans raised by the guest's own x2APIC/SVR writes are
        // still pending at "ready" (the usual case); 0 when the emulated batch ended before
        // the `out 0x10` (seen in ~5% of runs only with the machine oversubscribed 3x),
        // as on a host where each wrmsr exits. No trace event tells the two apart.
        if at_ready > 1 {
            t.check("edge 0x40 sent at 'ready' (0 or 1)", at_ready, 1)?;
        }
        t.check(
            "stale EOI + edge 0x40 right after it (1 where each EOI write exits, or when \
             the batch ended before the out)",
            after_stale,
            if batch_ended_early { 1 } else { 2 },
        )?;
        t.vcpus[0].settle()
    });
}

/// The seed, natural: 0x40 delivered via GSI5, GSI5 rerouted to APIC id 1 inside the
/// handler. The in-flight EOI exits once (the EOI-exit request is checked before the
/// re-scan), then nothing.
#[test]
fn in_flight_eoi_exits_once_after_reroute_inside_its_handler() {
    on_kvm(|| {
        let mut t = split(1)?;
        t.vm.route_msi(5, 0, 0x40, LEVEL);
        t.vm.push_routes()?;
        t.vcpus[0].expect(Stop::Ready)?;
        t.vm.pulse(5)?;
        t.vcpus[0].expect(Stop::Handler(0x40))?;
        t.vm.route_msi(5, 1, 0x40, LEVEL);
        t.vm.push_routes()?;
        t.vcpus[0].expect(Stop::HandlerEoi(0x40))?;
        t.check("EOI of the in-flight 0x40", t.vcpus[0].eoi_exits(0x40), 1)?;
        let n = t.storm(0, 0x40, STORM)?;
        t.check(
            "then 100 x edge MSI 0x40 -> vCPU0 (100 with a standard LAPIC before 6.16)",
            n,
            0,
        )?;
        t.vcpus[0].settle()
    });
}

/// The seed, planted, one vCPU: 0x40 in ISR on vCPU0, GSI5 rerouted to the absent APIC
/// id 1. The stale EOI exits once and re-scans; 100 edges after it never exit.
#[test]
fn stale_in_service_vector_exits_once_then_never_after_reroute() {
    on_kvm(|| {
        let mut t = split(1)?;
        t.vm.route_msi(5, 0, 0x40, LEVEL);
        t.vm.push_routes()?;
        t.vcpus[0].expect(Stop::Ready)?;
        t.vcpus[0].plant_in_service(0x40)?;
        t.vm.route_msi(5, 1, 0x40, LEVEL);
        t.vm.push_routes()?;
        t.vcpus[0].guest_eoi()?;
        t.check(
            "guest EOI of stale in-service 0x40",
            t.vcpus[0].eoi_exits(0x40),
            1,
        )?;
        let n = t.storm(0, 0x40, STORM)?;
        t.check("then 100 x edge MSI 0x40 -> vCPU0 (pre-6.16: 100)", n, 0)?;
        t.vcpus[0].settle()?;
        let status = t.vm.pulse(5)?;
        t.check(
            "KVM_IRQ_LINE_STATUS for GSI5 routed to an absent APIC",
            status as u32,
            0,
        )?;
        t.vcpus[0].settle()?;
        t.check(
            "vCPU0 exits for 0x40 in total",
            t.vcpus[0].eoi_exits(0x40),
            1,
        )
    });
}

/// The seed, planted, two vCPUs: GSI5 rerouted to vCPU1. vCPU0's stale EOI exits once,
/// then never; vCPU1 now owns level 0x40 and exits on every EOI of it.
#[test]
fn stale_vector_stops_exiting_on_old_vcpu_and_exits_on_new_destination() {
    on_kvm(|| {
        let mut t = split(2)?;
        t.vm.route_msi(5, 0, 0x40, LEVEL);
        t.vm.push_routes()?;
        t.all_ready()?; // vCPU1, then vCPU0
        t.vcpus[0].plant_in_service(0x40)?;
        t.vm.route_msi(5, 1, 0x40, LEVEL);
        t.vm.push_routes()?;
        t.vcpus[0].guest_eoi()?;
        t.check(
            "vCPU0: guest EOI of stale 0x40",
            t.vcpus[0].eoi_exits(0x40),
            1,
        )?;
        let n = t.storm(0, 0x40, STORM)?;
        t.check("vCPU0: then 100 x edge MSI 0x40 (pre-6.16: 100)", n, 0)?;
        t.vcpus[0].settle()?;
        let status = t.vm.pulse(5)?;
        t.check("KVM_IRQ_LINE_STATUS for GSI5 -> vCPU1", status as u32, 1)?;
        t.vcpus[1].handle(0x40)?;
        t.check("vCPU1: GSI5 delivery exits", t.vcpus[1].eoi_exits(0x40), 1)?;
        let n = t.storm(1, 0x40, STORM)?;
        t.check(
            "vCPU1: 100 x edge MSI 0x40 (level destination now)",
            n,
            STORM,
        )?;
        t.vcpus[1].settle()?;
        t.vcpus[0].settle()?;
        t.check(
            "vCPU0 exits for 0x40 in total",
            t.vcpus[0].eoi_exits(0x40),
            1,
        )
    });
}

/// Reroute while 0x40 is only in IRR (IF=0): `kvm_apic_pending_eoi()` checks IRR too, so
/// it stays intercepted as the highest stale vector; its EOI exits once, then never.
#[test]
fn vector_pending_in_irr_at_reroute_exits_once_then_never() {
    on_kvm(|| {
        let mut t = split(1)?;
        t.vm.route_msi(5, 0, 0x40, LEVEL);
        t.vm.push_routes()?;
        t.vcpus[0].expect(Stop::Ready)?;
        t.vm.pulse(5)?;
        t.vm.route_msi(5, 1, 0x40, LEVEL);
        t.vm.push_routes()?;
        t.vcpus[0].handle(0x40)?;
        t.check(
            "EOI of 0x40 that was in IRR at the reroute",
            t.vcpus[0].eoi_exits(0x40),
            1,
        )?;
        let n = t.storm(0, 0x40, STORM)?;
        t.check("then 100 x edge MSI 0x40 (pre-6.16: 100)", n, 0)?;
        t.vcpus[0].settle()
    });
}

/// Two stale vectors in ISR (0x40 and 0x50, both rerouted away): the first EOI pops 0x50,
/// the highest stale, exits and re-scans; the re-scan makes 0x40 the highest stale, so its
/// EOI exits once too. Then neither is intercepted.
#[test]
fn two_stale_in_service_vectors_each_exit_once_highest_first() {
    on_kvm(|| {
        let mut t = split(1)?;
        t.vm.route_msi(5, 0, 0x40, LEVEL);
        t.vm.route_msi(6, 0, 0x50, LEVEL);
        t.vm.push_routes()?;
        t.vcpus[0].expect(Stop::Ready)?;
        t.vcpus[0].plant_in_service(0x40)?;
        t.vcpus[0].plant_in_service(0x50)?;
        t.vm.route_msi(5, 1, 0x40, LEVEL);
        t.vm.route_msi(6, 1, 0x50, LEVEL);
        t.vm.push_routes()?;
        t.vcpus[0].guest_eoi()?;
        t.check(
            "1st guest EOI pops 0x50 -> exits 0x50",
            t.vcpus[0].eoi_exits(0x50),
            1,
        )?;
        t.check("  ... and 0x40 not yet", t.vcpus[0].eoi_exits(0x40), 0)?;
        t.vcpus[0].guest_eoi()?;
        t.check(
            "2nd guest EOI pops 0x40 -> exits 0x40",
            t.vcpus[0].eoi_exits(0x40),
            1,
        )?;
        let n = t.storm(0, 0x40, STORM)?;
        t.check("then 100 x edge MSI 0x40 (pre-6.16: 100)", n, 0)?;
        let n = t.storm(0, 0x50, STORM)?;
        t.check("then 100 x edge MSI 0x50 (pre-6.16: 100)", n, 0)?;
        t.vcpus[0].settle()
    });
}

/// 0x40 stale in ISR, 0x50 stale in IRR (highest stale = 0x50): the EOI of 0x40 exits
/// without a re-scan; an edge 0x40 sent before 0x50 is EOIed is pending at that re-scan
/// and is intercepted once. Then neither is intercepted.
#[test]
fn edge_sent_between_stale_eois_is_pending_at_rescan_and_exits_once() {
    on_kvm(|| {
        let mut t = split(1)?;
        t.vm.route_msi(5, 0, 0x40, LEVEL);
        t.vm.route_msi(6, 0, 0x50, LEVEL);
        t.vm.push_routes()?;
        t.vcpus[0].expect(Stop::Ready)?;
        t.vcpus[0].plant_in_service(0x40)?;
        t.vm.pulse(6)?; // IF=0: 0x50 waits in IRR
        t.vm.route_msi(5, 1, 0x40, LEVEL);
        t.vm.route_msi(6, 1, 0x50, LEVEL);
        t.vm.push_routes()?;
        t.vcpus[0].guest_eoi()?;
        t.check(
            "guest EOI pops 0x40 (stale, not highest)",
            t.vcpus[0].eoi_exits(0x40),
            1,
        )?;
        t.vm.msi(0, 0x40, EDGE)?; // joins 0x50 in IRR
        t.vcpus[0].handle(0x50)?;
        t.check(
            "0x50 delivered from IRR, EOIed",
            t.vcpus[0].eoi_exits(0x50),
            1,
        )?;
        t.vcpus[0].handle(0x40)?;
        t.check(
            "the edge 0x40 sent in between",
            t.vcpus[0].eoi_exits(0x40) - 1,
            1,
        )?;
        let n = t.storm(0, 0x40, STORM)?;
        t.check("then 100 x edge MSI 0x40 (pre-6.16: 100)", n, 0)?;
        let n = t.storm(0, 0x50, STORM)?;
        t.check("then 100 x edge MSI 0x50 (pre-6.16: 100)", n, 0)?;
        t.vcpus[0].settle()
    });
}

/// A plain edge 0x40 pending on vCPU0 while something unrelated re-scans (level 0x40
/// routed to APIC id 1) is caught as stale once; without a re-scan it never exits.
fn edge_pending_at_an_unrelated_rescan(n_vcpus: usize) -> Result<()> {
    let mut t = split(n_vcpus)?;
    t.vm.route_msi(5, 1, 0x40, LEVEL);
    t.vm.push_routes()?;
    t.vcpus[0].expect(Stop::Ready)?;
    t.vcpus[0].settle()?; // flush re-scans still pending from setup
    t.vm.msi(0, 0x40, EDGE)?;
    t.vcpus[0].handle(0x40)?;
    t.check(
        "edge 0x40, no re-scan while pending",
        t.vcpus[0].eoi_exits(0x40),
        0,
    )?;
    t.vm.msi(0, 0x40, EDGE)?; // vCPU0 sits after its EOI with IF=0
    if n_vcpus == 1 {
        t.vm.route_msi(7, 0, 0x41, EDGE);
        t.vm.push_routes()?;
    } else {
        t.vcpus[1].expect(Stop::Ready)?; // vCPU1 enables its APIC: map change
    }
    t.vcpus[0].handle(0x40)?;
    t.check(
        "edge 0x40 pending during the re-scan",
        t.vcpus[0].eoi_exits(0x40),
        1,
    )?;
    let n = t.storm(0, 0x40, STORM)?;
    t.check("then 100 x edge MSI 0x40 (pre-6.16: 100)", n, 0)?;
    t.vcpus[0].settle()
}

#[test]
fn edge_pending_during_unrelated_gsi_routing_change_exits_once() {
    on_kvm(|| edge_pending_at_an_unrelated_rescan(1));
}

#[test]
fn edge_pending_while_another_vcpu_enables_its_apic_exits_once() {
    on_kvm(|| edge_pending_at_an_unrelated_rescan(2));
}

/// `KVM_SET_GSI_ROUTING` x1001 while vCPU0 is halted inside `KVM_RUN` in a second thread:
/// `KVM_RUN` does not return (no exit, no wake-up). The re-scan runs when the waking edge
/// 0x40 is already in IRR, so that one is caught as stale (1 exit), then nothing.
#[test]
fn routing_changes_do_not_wake_a_halted_vcpu_and_the_deferred_rescan_catches_the_waker() {
    on_kvm(|| {
        let mut t = split(1)?;
        t.vm.route_msi(5, 0, 0x40, LEVEL);
        t.vm.push_routes()?;
        t.vcpus[0].expect(Stop::Ready)?;
        let stopped = time_routing(&mut t.vm, 1000)?;
        let returns = t.vcpus[0].run_returns.clone();
        let before = returns.load(Ordering::SeqCst);
        let TestVm { vcpus, vm, .. } = &mut t;
        let (halted, during) = std::thread::scope(|s| -> Result<(Duration, u64)> {
            let v0 = &mut vcpus[0];
            let runner = s.spawn(move || -> Result<Vec<Stop>> {
                // Blocking run: a halted guest is not a stop; bounded by the deadline.
                let limits = RunLimits {
                    idle_after: None,
                    deadline: Duration::from_secs(5),
                };
                let mut stops = Vec::new();
                loop {
                    let s = v0.next_stop_with(limits)?;
                    stops.push(s);
                    if s == Stop::HandlerEoi(0x40) || stops.len() > 8 {
                        return Ok(stops);
                    }
                }
            });
            // The guest's `in 0x16` (answered: halt) is its last exit before `sti; hlt`;
            // wait for it, then give it time to block in hlt inside KVM_RUN.
            let t0 = Instant::now();
            while returns.load(Ordering::SeqCst) == before && t0.elapsed() < Duration::from_secs(2)
            {
                std::thread::sleep(Duration::from_millis(1));
            }
            std::thread::sleep(Duration::from_millis(50));
            let base = returns.load(Ordering::SeqCst);
            let halted = time_routing(vm, 1000)?;
            vm.route_msi(5, 1, 0x40, LEVEL); // the last change: level 0x40 -> APIC id 1
            vm.push_routes()?;
            std::thread::sleep(Duration::from_millis(60));
            let during = returns.load(Ordering::SeqCst) - base;
            vm.msi(0, 0x40, EDGE)?; // wake it; the runner ends after 0x40's EOI
            let stops = runner.join().expect("vCPU thread panicked")?;
            if stops != [Stop::Handler(0x40), Stop::HandlerEoi(0x40)] {
                return Err(HarnessError(format!("vCPU0 stops after waking: {stops:?}")));
            }
            Ok((halted, during))
        })?;
        println!(
            "note: KVM_SET_GSI_ROUTING x1000: avg {:?} with the vCPU stopped in userspace, \
             {:?} with it halted in KVM_RUN",
            stopped / 1000,
            halted / 1000
        );
        t.check(
            "KVM_RUN returns during 1001 routing changes",
            during as u32,
            0,
        )?;
        t.check(
            "waking edge 0x40 (deferred re-scan sees it in IRR)",
            t.vcpus[0].eoi_exits(0x40),
            1,
        )?;
        let n = t.storm(0, 0x40, STORM)?;
        t.check("then 100 x edge MSI 0x40 (pre-6.16: 100)", n, 0)
    });
}

/// `n` routing changes (GSI5's level 0x40 alternating between APIC ids 0 and 1).
fn time_routing(vm: &mut Vm, n: u32) -> Result<Duration> {
    let start = Instant::now();
    for k in 0..n {
        vm.route_msi(5, (k & 1) as u8, 0x40, LEVEL);
        vm.push_routes_quiet()?;
    }
    Ok(start.elapsed())
}

/// Harness self-test of the in-kernel irqchip path used by later state comparisons: an
/// I/O APIC pin programmed with `KVM_SET_IRQCHIP`, a level interrupt delivered and EOIed,
/// remote IRR read back with `KVM_GET_IRQCHIP`, LAPIC bits with `KVM_GET_LAPIC`.
#[test]
fn in_kernel_irqchip_state_reads_back_through_the_harness() {
    on_kvm(|| {
        let mut t = TestVm::new(IrqChipMode::InKernel, 1)?;
        t.vcpus[0].expect(Stop::Ready)?;
        let io = t.vm.get_irqchip_ioapic()?;
        t.check(
            "pin 5 masked at reset",
            ((io.redirtbl[5] >> 16) & 1) as u32,
            1,
        )?;
        // vector 0x40, fixed, physical, level (bit 15), unmasked, destination APIC id 0.
        t.vm.set_ioapic_redirection(5, 0x40 | (1 << 15))?;
        t.vm.irq_line(5, true)?;
        let io = t.vm.get_irqchip_ioapic()?;
        t.check(
            "remote IRR while 0x40 is unacknowledged",
            ((io.redirtbl[5] >> 14) & 1) as u32,
            1,
        )?;
        t.check(
            "LAPIC IRR has 0x40",
            u32::from(t.vcpus[0].get_lapic_regs()?.irr_has(0x40)),
            1,
        )?;
        t.vm.irq_line(5, false)?;
        t.vcpus[0].handle(0x40)?;
        t.vcpus[0].settle()?;
        let io = t.vm.get_irqchip_ioapic()?;
        t.check(
            "remote IRR after the EOI",
            ((io.redirtbl[5] >> 14) & 1) as u32,
            0,
        )?;
        t.check(
            "no KVM_EXIT_IOAPIC_EOI in-kernel",
            t.vcpus[0].total_eoi_exits(),
            0,
        )?;
        t.vcpus[0].plant_in_service(0x45)?;
        let regs = t.vcpus[0].get_lapic_regs()?;
        t.check(
            "planted ISR 0x45 reads back",
            u32::from(regs.isr_has(0x45)),
            1,
        )?;
        t.check(
            "planted TMR 0x45 reads back",
            u32::from(regs.tmr_has(0x45)),
            1,
        )?;
        t.vcpus[0].guest_eoi()?;
        let regs = t.vcpus[0].get_lapic_regs()?;
        t.check(
            "ISR 0x45 after the guest EOI",
            u32::from(regs.isr_has(0x45)),
            0,
        )
    });
}
