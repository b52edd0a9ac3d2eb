//! The `routing_reconfig` target: race ops under the race invariant checker,
//! for every policy.

use std::vec::Vec;

use arbitrary::{Result, Unstructured};

use crate::race::{
    Field, Harness as RaceHarness, HarnessConfig, Kick, Op, Trace as RaceTrace, Violation,
};
use eoi_exit::exit_bitmap::{EoiExitMap, Policy};
use eoi_exit::irqchip::Arbitration;
use eoi_exit::{IoapicConfig, PinSet};

use super::{MAX_OPS, gen_entry, pin_mask_to_set};

/// Number of vCPUs of the `routing_reconfig` irqchip.
pub const CHIP_VCPUS: usize = 4;

fn check_map(map: &EoiExitMap, policy: Policy) {
    assert_eq!(map.policy(), policy);
    if policy == Policy::NoIntercept {
        assert!(
            map.bitmap().is_empty(),
            "NoIntercept intercepts {:?}",
            map.bitmap()
        );
    }
}

/// Vectors `routing_reconfig` folds most vectors onto (so entries, MSIs and
/// IPIs collide), in two priority classes plus one low illegal-ish vector.
const SHARED_VECTORS: [u8; 4] = [0x31, 0x41, 0x51, 0x3f];

/// Folds the pins and vectors of an op into a small range, so that ops of a
/// sequence hit the same entries, vCPUs and vectors.
pub(super) fn narrow_op(op: Op, pins: u8) -> Op {
    let v = |x: u8| SHARED_VECTORS[usize::from(x) % SHARED_VECTORS.len()];
    let p = |x: u8| x % pins;
    match op {
        Op::Write { pin, field } => Op::Write {
            pin: p(pin),
            field: match field {
                Field::Vector(x) => Field::Vector(v(x)),
                // Destinations 0..=3 name the vCPUs (xAPIC IDs), 0xFF broadcasts.
                Field::Dest(d) if d != 0xff => Field::Dest(d % 4),
                f => f,
            },
        },
        Op::WriteEntry { pin, value } => Op::WriteEntry {
            pin: p(pin),
            value: (value & !0xff) | u64::from(v(value as u8)),
        },
        Op::SetLine { pin, high } => Op::SetLine { pin: p(pin), high },
        Op::Msi {
            dest,
            vector,
            level,
        } => Op::Msi {
            dest: if dest == 0xff { dest } else { dest % 4 },
            vector: v(vector),
            level,
        },
        Op::Accept { vcpu, vector } => Op::Accept {
            vcpu,
            vector: v(vector),
        },
        Op::DeliverLater { pin } => Op::DeliverLater { pin: p(pin) },
        op => op,
    }
}

/// The configuration of one `routing_reconfig` run (the policy is set per run).
fn race_config(u: &mut Unstructured<'_>) -> Result<HarnessConfig> {
    let mut cfg = HarnessConfig::new(Policy::Exact);
    cfg.chip.ioapic = IoapicConfig {
        version: u.arbitrary()?,
        masked_edge: u.arbitrary()?,
        id: u.arbitrary()?,
    };
    if u.ratio(1u8, 4)? {
        cfg.chip.ack_notifier_pins = pin_mask_to_set(u.arbitrary::<u32>()? & 0x00ff_ffff);
    }
    cfg.chip.rtc_tracking = u.ratio(1u8, 4)?;
    cfg.chip.arbitration = u.arbitrary::<Arbitration>()?;
    // The checker's remote-IRR model follows KVM's split irqchip, where every
    // intercepted EOI reaches the I/O APIC: `eoi_forwarding` stays
    // `AllIntercepted` (HarnessConfig::new).
    cfg.kick = u.arbitrary::<Kick>()?;
    cfg.eager_enter = u.ratio(1u8, 4)?;
    Ok(cfg)
}

/// What one [`run_routing_reconfig`] saw, summed over the policies.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ChipStats {
    /// Guest EOIs that retired a vector (not spurious).
    pub eois: u32,
    /// Of those, EOIs that retired an instance the race checker follows
    /// (level I/O APIC entry, ack notifier or RTC), i.e. that the lost-EOI
    /// oracle judged.
    pub necessary: u32,
    /// EOIs that exited (intercepted).
    pub exits: u32,
    /// Runs (one per policy) in which the checker recorded a lost EOI of a
    /// cause known for that policy ([`HarnessConfig::tolerating_known_losses`]).
    pub tolerated_losses: u32,
    /// Runs cut short by the checker's own instance-table capacity
    /// ([`Violation::CheckerCapacity`], not a crate bug).
    pub capacity: u32,
}

/// Checks the race checker does not make: LAPIC caches, the map's policy,
/// and that `NoIntercept` never intercepts.
fn check_race_extra<const V: usize, const P: usize>(h: &RaceHarness<V, P>, policy: Policy) {
    // The copies the race checker took after the step, not fresh ones.
    for (i, s) in h.vcpus().iter().enumerate() {
        assert!(s.apic.is_consistent(), "vCPU{i}: LAPIC caches inconsistent");
        check_map(&s.map, policy);
    }
}

/// Runs `ops` under the race checker for one policy, panicking on a
/// violation; adds what it saw to `stats`.
fn run_race_policy<const V: usize, const P: usize>(
    cfg: HarnessConfig,
    init: &[u64],
    ops: &[Op],
    stats: &mut ChipStats,
) {
    let policy = cfg.chip.policy;
    let mut h = RaceHarness::<V, P>::with_entries(cfg, init);
    check_race_extra(&h, policy);
    for (n, &op) in ops.iter().enumerate() {
        // What an EOI is about to retire: the highest ISR vector, and whether
        // the checker follows an in-service instance of it.
        let eoi_of = match op {
            Op::Eoi { vcpu } => {
                let c = usize::from(vcpu) % V;
                let top = h.vcpus()[c].apic.isr().highest();
                let followed = top.is_some_and(|v| {
                    h.checker().instances[c]
                        .iter()
                        .any(|i| i.in_service && i.vector == v.get())
                });
                Some((top, followed))
            }
            _ => None,
        };
        match h.step(op) {
            Ok(info) => {
                if let Some((top, followed)) = eoi_of {
                    assert_eq!(
                        info.eoi.map(|(v, _)| v),
                        top,
                        "{}: EOI did not retire the highest ISR vector",
                        policy.name()
                    );
                    if let Some((_, exit)) = info.eoi {
                        assert!(
                            !(exit && policy == Policy::NoIntercept),
                            "NoIntercept intercepted an EOI"
                        );
                        stats.eois += 1;
                        stats.necessary += u32::from(followed);
                        stats.exits += u32::from(exit);
                    }
                }
            }
            Err(Violation::CheckerCapacity) => {
                stats.capacity += 1;
                return;
            }
            Err(v) => panic!(
                "{}: {v} at op {} ({cfg:?})\ninitial entries: {init:x?}\n{}",
                policy.name(),
                n + 1,
                RaceTrace(&ops[..=n])
            ),
        }
        check_race_extra(&h, policy);
    }
    stats.tolerated_losses += u32::from(h.checker().tolerated_loss);
}

/// Harness of the `routing_reconfig` target: one [`race::Op`](Op) sequence,
/// run under the race invariant checker ([`race::Harness`](RaceHarness)) on
/// a 4-vCPU `Irqchip` with 24 pins for every [`Policy`].
///
/// The input picks the chip configuration (I/O APIC version and masked-edge
/// behaviour, ack notifier pins, RTC tracking, EOI order, arbitration), the
/// harness's kick rule, a few initial entries and whether pins and vectors are
/// folded into a small range (so that ops collide), then decodes the ops with
/// `Arbitrary`. Every [`Violation`] fails the run (no lost EOI, remote IRR
/// consistency, TMR changes only on acceptance, VMCS updates are the diff,
/// no stale VMCS, interception matches the loaded bitmap), except the lost
/// EOIs of the causes known for the policy ([`HarnessConfig::tolerating_known_losses`]) and the
/// checker's own capacity limit. On top: LAPIC caches stay consistent, every
/// map keeps its policy, `NoIntercept` intercepts nothing, and an EOI retires
/// the highest ISR vector.
pub fn routing_reconfig(data: &[u8]) {
    let _ = run_routing_reconfig(data);
}

/// Like [`routing_reconfig`], returning what it saw.
pub fn run_routing_reconfig(data: &[u8]) -> Result<ChipStats> {
    let mut u = Unstructured::new(data);
    let cfg = race_config(&mut u)?;
    let narrow = u.ratio(3u8, 4)?;
    let pins = u.int_in_range(1u8..=24)?;
    let n_init = u.int_in_range(0..=4usize)?;
    let mut init = Vec::with_capacity(n_init);
    for _ in 0..n_init {
        let e = gen_entry(&mut u)?;
        init.push(if narrow {
            (e & !0xff) | u64::from(SHARED_VECTORS[(e & 3) as usize])
        } else {
            e
        });
    }
    let mut ops = Vec::new();
    while !u.is_empty() && ops.len() < MAX_OPS {
        match u.arbitrary::<Op>() {
            Ok(op) => ops.push(if narrow { narrow_op(op, pins) } else { op }),
            Err(_) => break,
        }
    }
    let mut stats = ChipStats::default();
    for policy in Policy::ALL {
        let mut c = cfg;
        c.chip.policy = policy;
        if !matches!(policy, Policy::KvmLegacy | Policy::KvmHighestStale) {
            // Ack notifiers and RTC tracking are KVM mechanisms: `TmrDriven`
            // does not know them, and `Exact` loses an ack-notifier EOI across
            // a restore (tests/race_props.rs tests them with KVM policies only).
            c.chip.ack_notifier_pins = PinSet::EMPTY;
            c.chip.rtc_tracking = false;
        }
        run_race_policy::<CHIP_VCPUS, 24>(c.tolerating_known_losses(), &init, &ops, &mut stats);
    }
    Ok(stats)
}
