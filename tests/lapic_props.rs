//! Property tests of the local APIC model (ARCHITECTURE.md section 7): TMR changes
//! only on acceptance, EOI pops the highest ISR vector, the highest-ISR cache
//! stays consistent, nothing panics, and destination matching agrees with a
//! reference written from the SDM text (plus KVM's two documented deviations).

use eoi_exit::irqchip::Arbitration;
use eoi_exit::lapic::{Acceptance, ApicMode, LocalApic, lowest_priority};
use eoi_exit::{
    ApicId, DeliveryMode, Destination, DestinationMode, InterruptMessage, TriggerMode, Vector,
};
use proptest::prelude::*;

const CASES: u32 = 1000;

/// A register as the guest reads it (DFR in x2APIC mode: its last xAPIC
/// value is not readable, so 0).
fn reg(a: &LocalApic, offset: u32) -> u32 {
    a.read_register(offset).unwrap_or(0)
}

/// The xAPIC and x2APIC broadcast destination IDs.
const XAPIC_BROADCAST: u32 = 0xFF;
const X2APIC_BROADCAST: u32 = 0xFFFF_FFFF;

/// Hardware- and software-enabled: can take fixed and lowest-priority
/// interrupts.
fn accepts_vectored(a: &LocalApic) -> bool {
    a.mode() != ApicMode::Disabled && reg(a, 0xF0) & 1 << 8 != 0
}

/// The derived state (the highest-ISR cache) agrees with the registers: a
/// restore, which recomputes it, changes nothing.
fn consistent(a: &LocalApic) -> bool {
    LocalApic::from_state(&a.state()).as_ref() == Ok(a)
}

/// Host-side injection (`KVM_SET_LAPIC`) through a snapshot: `v` in service
/// or pending with TMR = `level`. Vectors 0..=15, which no LAPIC holds, are
/// skipped.
fn plant(a: &mut LocalApic, v: u8, in_service: bool, level: bool) {
    let mut s = a.state();
    let v = Vector::new(v);
    if in_service {
        s.isr.insert(v);
    } else {
        s.irr.insert(v);
    }
    if level {
        s.tmr.insert(v);
    } else {
        s.tmr.remove(v);
    }
    if let Ok(b) = LocalApic::from_state(&s) {
        *a = b;
    }
}

#[derive(Clone, Debug)]
enum Op {
    Accept(InterruptMessage),
    Ack,
    Eoi,
    Tpr(u8),
    Svr(u32),
    Mode(ApicMode),
    Ldr(u32),
    Dfr(u32),
    IdRegister(u32),
    DirectedEoi(bool),
}

fn mode() -> impl Strategy<Value = ApicMode> {
    prop_oneof![
        4 => Just(ApicMode::XApic),
        4 => Just(ApicMode::X2Apic),
        1 => Just(ApicMode::Disabled),
    ]
}

fn delivery_mode() -> impl Strategy<Value = DeliveryMode> {
    prop_oneof![
        6 => Just(DeliveryMode::Fixed),
        3 => Just(DeliveryMode::LowestPriority),
        1 => Just(DeliveryMode::Nmi),
        1 => Just(DeliveryMode::Smi),
        1 => Just(DeliveryMode::Init),
        1 => Just(DeliveryMode::ExtInt),
    ]
}

/// Destination IDs biased towards the interesting ones.
fn dest_id() -> impl Strategy<Value = u32> {
    prop_oneof![
        2 => 0u32..16,
        2 => 0u32..=0xFF,
        1 => Just(XAPIC_BROADCAST),
        1 => Just(X2APIC_BROADCAST),
        1 => (0u32..4, 0u32..=0xFFFF).prop_map(|(c, m)| c << 16 | m),
        1 => any::<u32>(),
    ]
}

fn destination() -> impl Strategy<Value = Destination> {
    (dest_id(), any::<bool>()).prop_map(|(id, l)| Destination {
        id,
        mode: if l {
            DestinationMode::Logical
        } else {
            DestinationMode::Physical
        },
    })
}

fn message() -> impl Strategy<Value = InterruptMessage> {
    (destination(), delivery_mode(), any::<u8>(), any::<bool>()).prop_map(
        |(destination, delivery_mode, v, l)| InterruptMessage {
            destination,
            delivery_mode,
            vector: Vector::new(v),
            trigger: if l {
                TriggerMode::Level
            } else {
                TriggerMode::Edge
            },
        },
    )
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => message().prop_map(Op::Accept),
        6 => Just(Op::Ack),
        5 => Just(Op::Eoi),
        1 => any::<u8>().prop_map(Op::Tpr),
        1 => prop_oneof![Just(0x1FFu32), Just(0xFF), Just(0x11FF), any::<u32>()].prop_map(Op::Svr),
        1 => mode().prop_map(Op::Mode),
        1 => any::<u32>().prop_map(Op::Ldr),
        1 => prop_oneof![Just(0u32), Just(0xFFFF_FFFF), any::<u32>()].prop_map(Op::Dfr),
        1 => any::<u32>().prop_map(Op::IdRegister),
        1 => any::<bool>().prop_map(Op::DirectedEoi),
    ]
}

fn id() -> impl Strategy<Value = u32> {
    prop_oneof![4 => 0u32..=0xFF, 1 => any::<u32>()]
}

fn apic() -> impl Strategy<Value = LocalApic> {
    (id(), mode(), proptest::collection::vec(op(), 0..16)).prop_map(|(id, m, ops)| {
        let mut a = LocalApic::new_enabled(ApicId::new(id), m);
        for o in &ops {
            apply(&mut a, o);
        }
        a
    })
}

fn apply(a: &mut LocalApic, op: &Op) {
    match *op {
        Op::Accept(ref m) => {
            let _ = a.accept(m);
        }
        Op::Ack => {
            let _ = a.ack();
        }
        Op::Eoi => {
            let _ = a.eoi();
        }
        Op::Tpr(t) => _ = a.write_register(0x80, u32::from(t)),
        Op::Svr(s) => _ = a.write_register(0xF0, s),
        Op::Mode(m) => a.set_mode(m),
        Op::Ldr(v) => _ = a.write_register(0xD0, v),
        Op::Dfr(v) => _ = a.write_register(0xE0, v),
        Op::IdRegister(v) => _ = a.write_register(0x20, v),
        Op::DirectedEoi(on) => a.set_directed_eoi_supported(on),
    }
}

/// Destination matching written from the SDM ("Physical Destination Mode",
/// "Logical Destination Mode", "x2APIC Logical Destination Mode"), with KVM's
/// two deviations the crate documents as its default: the I/O APIC broadcast
/// 0xFF reaches x2APIC-mode APICs, and an xAPIC-mode APIC matches a physical
/// destination above 0xFF equal to its x2APIC ID (hotplug hack).
fn reference_matches(a: &LocalApic, dest: Destination) -> bool {
    match a.mode() {
        ApicMode::Disabled => false,
        ApicMode::XApic => {
            // 8-bit message destination address; 0xFF is "all".
            if dest.id == 0xFF {
                return true;
            }
            match dest.mode {
                DestinationMode::Physical => {
                    if dest.id > 0xFF {
                        dest.id == a.state().initial_id
                    } else {
                        dest.id == a.id().get()
                    }
                }
                DestinationMode::Logical => {
                    let logical_id = ((reg(a, 0xD0)) >> 24) as u8;
                    let model = (reg(a, 0xE0)) >> 28;
                    if model == 0b1111 {
                        // Flat: bitwise AND of MDA and logical APIC ID.
                        logical_id & (dest.id as u8) != 0
                    } else if model == 0 {
                        // Cluster: bits 7:4 select the cluster, 3:0 the members.
                        dest.id <= 0xFF
                            && dest.id >> 4 == u32::from(logical_id >> 4)
                            && (dest.id & 0xF) & u32::from(logical_id & 0xF) != 0
                    } else {
                        false
                    }
                }
            }
        }
        ApicMode::X2Apic => {
            let id = a.id().get();
            if dest.id == 0xFFFF_FFFF || dest.id == 0xFF {
                return true;
            }
            match dest.mode {
                DestinationMode::Physical => dest.id == id,
                DestinationMode::Logical => {
                    let cluster = id >> 4;
                    let member = 1u32 << (id & 0xF);
                    dest.id >> 16 == cluster && dest.id & 0xFFFF & member != 0
                }
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    /// ARCHITECTURE.md section 7: TMR changes only on acceptance, and then only the message's
    /// vector, set for level and clear for edge.
    #[test]
    fn tmr_changes_only_on_acceptance(start in apic(), ops in proptest::collection::vec(op(), 0..48)) {
        let mut a = start;
        for o in &ops {
            let before = *a.tmr();
            match o {
                Op::Accept(m) => {
                    let r = a.accept(m);
                    if matches!(r, Acceptance::Accepted { .. } | Acceptance::Coalesced { .. }) {
                        let mut expect = before;
                        if m.trigger == TriggerMode::Level {
                            expect.insert(m.vector);
                        } else {
                            expect.remove(m.vector);
                        }
                        prop_assert_eq!(*a.tmr(), expect);
                    } else {
                        prop_assert_eq!(*a.tmr(), before);
                    }
                }
                other => {
                    apply(&mut a, other);
                    prop_assert_eq!(*a.tmr(), before, "op {:?}", other);
                }
            }
        }
    }

    /// ARCHITECTURE.md section 7: EOI pops the highest ISR vector and touches nothing else; a
    /// spurious EOI (or one on a disabled APIC) does nothing.
    #[test]
    fn eoi_pops_the_highest_isr_vector(
        start in apic(),
        planted in proptest::collection::vec((any::<u8>(), any::<bool>()), 0..8),
        eois in 1usize..10,
    ) {
        let mut a = start;
        for (v, l) in planted {
            plant(&mut a, v, true, l);
        }
        for _ in 0..eois {
            let before = a;
            let got = a.eoi();
            match (before.mode(), before.isr().highest()) {
                (ApicMode::Disabled, _) | (_, None) => {
                    prop_assert_eq!(got, None);
                    prop_assert_eq!(a, before);
                }
                (_, Some(h)) => {
                    let e = got.expect("non-spurious EOI");
                    prop_assert_eq!(e.vector, h);
                    prop_assert_eq!(e.level, before.tmr().contains(h));
                    prop_assert_eq!(e.broadcast, e.level && !(reg(&before, 0x30) & 1 << 24 != 0 && reg(&before, 0xF0) & 1 << 12 != 0));
                    let mut isr = *before.isr();
                    isr.remove(h);
                    prop_assert_eq!(*a.isr(), isr);
                    prop_assert_eq!(a.irr(), before.irr());
                    prop_assert_eq!(a.tmr(), before.tmr());
                }
            }
        }
    }

    /// The highest-ISR cache (which drives PPR and EOI) equals ISR's highest
    /// vector after every operation.
    #[test]
    fn highest_isr_cache_stays_consistent(start in apic(), ops in proptest::collection::vec(op(), 0..64)) {
        let mut a = start;
        prop_assert!(consistent(&a));
        for o in &ops {
            apply(&mut a, o);
            prop_assert!(consistent(&a), "after {:?}", o);
        }
    }

    /// Any input: no panic, and ack only ever returns a vector above the PPR
    /// class that was in IRR.
    #[test]
    fn no_panic_for_arbitrary_inputs(
        id in any::<u32>(),
        m in mode(),
        ops in proptest::collection::vec(op(), 0..64),
        extra in proptest::collection::vec((any::<u8>(), any::<bool>(), any::<bool>()), 0..8),
        dests in proptest::collection::vec(destination(), 0..4),
        msg in message(),
        others in proptest::collection::vec(apic(), 0..4),
    ) {
        let mut a = LocalApic::new(ApicId::new(id));
        a.set_mode(m);
        for (v, l, isr) in extra {
            plant(&mut a, v, isr, l);
        }
        for o in &ops {
            let before = a;
            apply(&mut a, o);
            if let Op::Ack = o
                && let Some(v) = before.highest_deliverable()
            {
                prop_assert!(before.irr().contains(v));
                prop_assert!((v.get() >> 4) > (reg(&before, 0xA0) as u8) >> 4);
                prop_assert!(a.isr().contains(v));
            }
            let _ = ((reg(&a, 0xA0) as u8), (reg(&a, 0x90) as u8), (reg(&a, 0x30)), a.id(), (reg(&a, 0x20)), (reg(&a, 0xF0)));
        }
        for d in dests {
            let _ = a.matches(d);
        }
        let all: Vec<LocalApic> = others.into_iter().chain([a]).collect();
        if let Some(i) = lowest_priority(all.iter().enumerate(), &msg, Arbitration::SdmPriority) {
            prop_assert!(all[i].matches(msg.destination) && accepts_vectored(&all[i]));
        }
        if let Some(i) = lowest_priority(all.iter().enumerate(), &msg, Arbitration::KvmVectorHashing) {
            prop_assert!(all[i].matches(msg.destination) && accepts_vectored(&all[i]));
        }
    }

    /// matches() agrees with the SDM-text reference above.
    #[test]
    fn matches_agrees_with_the_sdm_reference(a in apic(), d in destination()) {
        prop_assert_eq!(a.matches(d), reference_matches(&a, d), "apic {:?} dest {:?}", a, d);
    }

    /// Lowest-priority arbitration picks a matching, enabled APIC whose APR is
    /// minimal, the first such in iteration order.
    #[test]
    fn lowest_priority_picks_the_first_minimal_apr(all in proptest::collection::vec(apic(), 0..6), msg in message()) {
        let eligible: Vec<usize> = (0..all.len())
            .filter(|&i| accepts_vectored(&all[i]) && all[i].matches(msg.destination))
            .collect();
        let expect = eligible.iter().copied().min_by_key(|&i| ((reg(&all[i], 0x90) as u8), i));
        prop_assert_eq!(lowest_priority(all.iter().enumerate(), &msg, Arbitration::SdmPriority), expect);
    }
}
