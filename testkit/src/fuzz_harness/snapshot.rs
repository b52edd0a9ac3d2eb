//! The `snapshot` target: I/O APIC state round trips, restores of arbitrary
//! state, chip snapshots and (on x86-64 Linux) the KVM state conversions.

use arbitrary::{Result, Unstructured};

use crate::race::lean::{changed_entries, each_pin, registers_eq};
use crate::race::{HarnessConfig, LossCause};
#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
use eoi_exit::ApicId;
use eoi_exit::exit_bitmap::{EoiExitMap, Policy};
use eoi_exit::ioapic::{IoapicState, MaskedEdge, Rescan};
use eoi_exit::irqchip::{IrqchipState, VcpuState};
use eoi_exit::lapic::LocalApic;
use eoi_exit::{Ioapic, IoapicConfig, RedirectionEntry, VcpuSlot};
use eoi_exit::{Pin, VcpuId};
use std::vec::Vec;

use super::ioapic_mmio::{IoChecker, IoOp};
#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
use super::kvm_input;
use super::routing_reconfig::{gen_op, narrow_op};
use super::{fresh_harness, gen_entry};

/// I/O APIC ops per `snapshot` input after a model-produced state (round
/// trips every 8 ops), half as many after an arbitrary one (see
/// [`crate::fuzz_harness::MAX_OPS`] for why the targets stop early).
pub const SNAPSHOT_OPS: usize = 64;

/// Checks an `Ioapic::registers` -> `set_registers` round trip of a model-produced state.
fn check_round_trip<const P: usize>(io: &Ioapic<P>) {
    let st = io.state();
    let mut fresh = Ioapic::<P>::new(io.state().config);
    let a = fresh.set_registers(&st);
    assert_eq!(a.rescan, Rescan::All, "restore must rescan every vCPU");
    let got = fresh.state();
    // Restore re-injects what KVM's kvm_ioapic_inject_all would: exactly the
    // delivered pins may differ (remote IRR now set, latched edge consumed).
    // A pin that was not delivered, whose entry and latched edge came back
    // unchanged, passes every rule below: only the others are visited (see
    // `race::lean` for why the pins are not walked one by one).
    let mut visit = changed_entries(&st.entries, &got.entries);
    visit = visit.union(&a.deliver);
    visit = visit.union(&st.pending_edge.difference(&got.pending_edge));
    visit = visit.union(&got.pending_edge.difference(&st.pending_edge));
    each_pin(&visit, |pin| {
        let i = pin.index();
        if i >= P {
            return;
        }
        let (s, g) = (st.entries[i], got.entries[i]);
        if a.deliver.contains(pin) {
            assert!(!s.masked());
            if s.is_level() {
                assert!(!s.remote_irr() && g.remote_irr());
                assert!(crate::probe::asserted(&fresh, pin));
            } else {
                assert!(st.pending_edge.contains(pin) && !got.pending_edge.contains(pin));
            }
            let rirr = RedirectionEntry::REMOTE_IRR;
            assert_eq!(s.0 & !rirr, g.0 & !rirr);
        } else {
            assert_eq!(s, g, "pin {i}: entry changed by a round trip");
            let (was, is) = (
                st.pending_edge.contains(pin),
                got.pending_edge.contains(pin),
            );
            if was && !is {
                // Consumed without a delivery: an unmasked entry with a
                // reserved delivery mode (documented in `Ioapic::service`).
                assert!(
                    !s.masked() && s.message(eoi_exit::MsiFormat::Xapic).is_none(),
                    "pin {i}: latched edge lost by a round trip: {s:?}"
                );
            } else {
                assert_eq!(was, is, "pin {i}: latched edge appeared in a round trip");
            }
        }
    });
    assert_eq!(st.line, got.line);
    assert_eq!(st.eoi_count, got.eoi_count);
    assert_eq!((st.ioregsel, st.id), (got.ioregsel, got.id));
    // A second round trip of a state with nothing left to inject is exact.
    let st2 = fresh.state();
    let mut again = Ioapic::<P>::new(io.state().config);
    let a2 = again.set_registers(&st2);
    if a2.deliver.is_empty() {
        let r2 = again.state();
        if !registers_eq(&r2, &st2) {
            assert_eq!(r2, st2, "second round trip not exact");
        }
    }
    // A restore applied to an equal instance is what restoring a fresh one
    // gives: restore does not depend on the old state.
    let mut copy = io.clone();
    let a3 = copy.set_registers(&st);
    assert_eq!(a3, a);
    let r3 = copy.state();
    if !registers_eq(&r3, &got) {
        assert_eq!(r3, got);
    }
}

/// Checks a restore of arbitrary state: it must normalise it.
fn check_arbitrary_restore<const P: usize>(io: &mut Ioapic<P>, st: &IoapicState<P>) {
    let a = io.set_registers(st);
    let got = io.state();
    assert!(got.id < 16);
    for p in got.line.iter().chain(got.pending_edge.iter()) {
        assert!(p.index() < P, "restored pin set holds {p:?}");
    }
    if io.state().config.masked_edge == MaskedEdge::Drop {
        assert!(got.pending_edge.is_empty());
    }
    for (i, e) in got.entries.iter().enumerate() {
        assert!(
            !e.remote_irr() || e.is_level(),
            "pin {i}: remote IRR on edge after restore"
        );
        let pin = Pin::new(i as u8);
        if a.deliver.contains(pin) {
            assert!(!e.masked());
        }
    }
    for p in a.deliver.iter() {
        assert!(p.index() < P);
    }
}

/// Harness of the `snapshot` target: I/O APIC state round trips.
///
/// 1. A state reached by guest ops (the `ioapic_mmio` op language) must
///    survive `state()` -> `restore()` on a fresh instance up to the
///    re-injection restore documents, and a second round trip is exact.
/// 2. An `IoapicState` built from arbitrary bytes (remote IRR on edge
///    entries, IDs above 15, pins above `PINS`) is normalised by `restore`,
///    and the ioapic_mmio invariants hold for the ops that follow.
///
/// 3. A `kvm_ioapic_state` and a `kvm_lapic_state` built from bytes go
///    through `src/snapshot/kvm.rs`: import never panics and fails exactly
///    on the documented inputs; accepted input is representable, export ->
///    import is the identity, and a `LocalApic` restored from it is
///    consistent.
/// 4. A chip reached by race ops: `Ioapic`, `LocalApic`, `EoiExitMap` and
///    `Irqchip` `state()` -> `from_state()` are exact, and the KVM
///    export of its I/O APIC and LAPICs imports back (exactly when
///    `kvm_representable`).
pub fn snapshot(data: &[u8]) {
    // The first half drives (3) and (4), the second half (1) or (2): the op
    // loop of (1)/(2) consumes every byte it gets.
    let (head, tail) = data.split_at(data.len() / 2);
    let _ = run_snapshot_conversions(&mut Unstructured::new(head));
    let _ = run_snapshot(&mut Unstructured::new(tail));
}

/// Parts (3) and (4) of the `snapshot` target.
fn run_snapshot_conversions(u: &mut Unstructured<'_>) -> Result<()> {
    #[cfg(all(target_os = "linux", target_arch = "x86_64"))]
    {
        let (k, bits) = kvm_input::ioapic_state(u)?;
        kvm_input::check_ioapic(&k, &bits);
        let page = kvm_input::lapic_state(u)?;
        kvm_input::check_lapic(&page, u)?;
    }
    check_chip_snapshots(u)
}

fn arbitrary_state<const P: usize>(u: &mut Unstructured<'_>) -> Result<IoapicState<P>> {
    let mut entries = [RedirectionEntry::default(); P];
    for e in entries.iter_mut() {
        *e = RedirectionEntry(gen_entry(u)?);
    }
    let mut eoi_count = [0u16; P];
    for c in eoi_count.iter_mut() {
        *c = if u.ratio(1u8, 8)? { u.arbitrary()? } else { 0 };
    }
    Ok(IoapicState {
        // Ignored by `set_registers`, which loads registers and pins only.
        version: u.arbitrary()?,
        pins: u.arbitrary()?,
        config: IoapicConfig::default(),
        entries,
        line: u.arbitrary()?,
        pending_edge: u.arbitrary()?,
        eoi_count,
        ioregsel: u.arbitrary()?,
        id: u.arbitrary()?,
    })
}

/// Round-trips the snapshots of every part of a chip reached by race ops:
/// `Ioapic`, `LocalApic` and `EoiExitMap` `state()` / `from_state()`,
/// the whole `Irqchip`, and the KVM export/import of its I/O APIC and LAPICs.
fn check_chip_snapshots(u: &mut Unstructured<'_>) -> Result<()> {
    const V: usize = 2;
    let policy: Policy = u.arbitrary()?;
    let cfg = HarnessConfig::new(policy)
        .tolerating_known_losses()
        .tolerating(LossCause::Plain)
        .tolerating(LossCause::SharedWithEdge)
        .tolerating(LossCause::VectorRewrittenInFlight);
    let mut h = fresh_harness::<V, 24>(cfg);
    let n = u.int_in_range(0..=48u8)?;
    for _ in 0..n {
        let op = narrow_op(gen_op(u)?, 4);
        // Invariants are the routing_reconfig target's job; this one only
        // needs reached states.
        let _ = h.step(op);
    }
    let chip = h.chip();
    // Each map against its LAPIC (and everything else a restore checks).
    chip.state::<Vec<VcpuState>>()
        .validate()
        .expect("chip snapshot validates");
    let io = chip.ioapic();
    let s = io.state();
    assert_eq!(
        Ioapic::from_state(&s).expect("Ioapic snapshot restores"),
        io
    );
    #[cfg(all(target_os = "linux", target_arch = "x86_64"))]
    kvm_input::check_ioapic_export(&io.state());
    for i in 0..V {
        let g = chip.vcpu(VcpuId::new(i as u16)).expect("vCPU exists");
        let (apic, map) = (g.apic, g.map);
        let a = apic.state();
        let back = LocalApic::from_state(&a).expect("LocalApic snapshot restores");
        assert!(crate::probe::lapic_consistent(&back));
        assert!(crate::probe::lapic_consistent(&apic));
        // The chip's pending non-vectored events live in the LAPIC but are
        // saved in `VcpuState::events` (the chip round trip checks them).
        assert_eq!(back.state(), a, "LocalApic snapshot round trip");
        let m = map.state();
        let back = EoiExitMap::from_state(&m).expect("map snapshot restores");
        if policy == Policy::LineAware {
            // Lossy by design: lazy instances are saved as eager or not at
            // all (their pin is the chip's). The saved form is a fixed point.
            assert_eq!(back.state(), m, "LineAware map snapshot round trip");
            assert_eq!(back.bitmap(), map.bitmap());
        } else {
            assert_eq!(back, map, "EoiExitMap snapshot round trip");
        }
        #[cfg(all(target_os = "linux", target_arch = "x86_64"))]
        {
            use eoi_exit::snapshot::kvm::{KvmLapicIdentity, lapic_from_kvm, lapic_to_kvm};
            for x2apic_format in [false, true] {
                let who = KvmLapicIdentity {
                    initial_id: ApicId::new(a.initial_id),
                    mode: a.mode,
                    x2apic_format,
                };
                let got = lapic_from_kvm(&lapic_to_kvm(&a, x2apic_format), &who)
                    .expect("a reached LAPIC state imports");
                // KVM's page has no latch of ESR errors since the last ESR
                // write: the round trip drops it, and only it.
                let want = eoi_exit::snapshot::LocalApicState {
                    esr_pending: 0,
                    ..a
                };
                assert_eq!(got, want, "reached LAPIC changed by KVM round trip");
            }
        }
    }
    let cs: IrqchipState<Vec<VcpuState>> = chip.state();
    let copy = eoi_exit::Irqchip::from_state(&cs, [const { VcpuSlot::new() }; V])
        .expect("Irqchip snapshot restores");
    let back: IrqchipState<Vec<VcpuState>> = copy.state();
    if policy == Policy::LineAware {
        // A restore adopts every instance in flight as eager (which pin a
        // lazy one came from is not saved): the maps may differ, the rest
        // may not, and a second round trip is a fixed point.
        assert_eq!(back.ioapic, cs.ioapic, "Irqchip snapshot round trip");
        for (b, c) in back.vcpus.iter().zip(&cs.vcpus) {
            assert_eq!(b.apic, c.apic, "Irqchip snapshot round trip");
        }
        let again = eoi_exit::Irqchip::from_state(&back, [const { VcpuSlot::new() }; V])
            .expect("Irqchip snapshot restores");
        let again: IrqchipState<Vec<VcpuState>> = again.state();
        assert_eq!(
            again.vcpus.iter().map(|v| v.map.bitmap).collect::<Vec<_>>(),
            back.vcpus.iter().map(|v| v.map.bitmap).collect::<Vec<_>>(),
            "LineAware second round trip"
        );
    } else {
        assert_eq!(back, cs, "Irqchip snapshot round trip");
    }
    Ok(())
}

fn run_snapshot(u: &mut Unstructured<'_>) -> Result<()> {
    // Read in the order the fields always were (inputs keep their meaning);
    // the destination format comes from the ID's unused bits 5:4.
    let (version, masked_edge, id): (_, _, u8) = (u.arbitrary()?, u.arbitrary()?, u.arbitrary()?);
    let cfg = IoapicConfig {
        version,
        masked_edge,
        id,
        msi_format: super::msi_format_from(id),
    };
    if u.arbitrary::<bool>()? {
        // (2) arbitrary state, then guest ops on top of it.
        let st = arbitrary_state::<24>(u)?;
        let mut c = IoChecker::<24>::new(cfg);
        check_arbitrary_restore(&mut c.io, &st);
        c.check_state();
        let small = arbitrary_state::<1>(u)?;
        check_arbitrary_restore(&mut Ioapic::<1>::new(cfg), &small);
        let mut n = 0;
        while !u.is_empty() && n < SNAPSHOT_OPS / 2 {
            n += 1;
            let op = IoOp::generate(u)?;
            let _ = c.step(&op);
        }
        check_round_trip(&c.io);
        c.settle();
    } else {
        // (1) model-produced states, round-tripped after every few ops.
        let mut c = IoChecker::<24>::new(cfg);
        let mut n = 0;
        while !u.is_empty() && n < SNAPSHOT_OPS {
            n += 1;
            let op = IoOp::generate(u)?;
            let _ = c.step(&op);
            if n % 8 == 0 || u.is_empty() {
                check_round_trip(&c.io);
            }
        }
        check_round_trip(&c.io);
    }
    Ok(())
}
