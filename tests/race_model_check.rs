//! Exhaustive bounded model check of the EOI race space (issue 6).
//!
//! An explicit-state BFS with state hashing over 2 vCPUs x 2 pins x 2 vectors:
//! every interleaving of redirection-entry field writes (vector, trigger,
//! mask, destination), line changes, edge acceptances and guest ack/EOI on
//! each vCPU, to depth `RACE_DEPTH` (default 12), for every policy and both
//! EOI request orders. Every step runs the full invariant checker of
//! `eoi_exit::race`. BFS finds the shortest counterexample, which is printed
//! as a numbered op sequence.
//!
//! States are identified by a 128-bit fingerprint of the I/O APIC, the local
//! APICs, the EOI-exit maps and the checker's bookkeeping (not the counters).

use std::collections::HashMap;
use std::hash::{Hash, Hasher};

use eoi_exit::Policy;
use eoi_exit::irqchip::EoiOrder;
use eoi_exit::race::{
    Field, Harness, HarnessConfig, Kick, LossCause, Mutant, Op, Trace, Violation,
};

type H = Harness<2, 2>;

const V: [u8; 2] = [0x31, 0x41];

/// The main run: reroutes, masks, vector rewrites, lines, ack and EOI
/// (`RACE_DEPTH`, default 12).
const MAIN: &str = "vmdl";
/// The broad run adds trigger switches and edge acceptances
/// (`RACE_BROAD_DEPTH`, default 7).
const BROAD: &str = "vtmdla";

fn env_depth(var: &str, default: usize) -> usize {
    std::env::var(var)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

fn depth() -> usize {
    env_depth("RACE_DEPTH", 12)
}

fn broad_depth() -> usize {
    env_depth("RACE_BROAD_DEPTH", 7)
}

/// The op alphabet: field writes of both pins (families `v` vector, `t`
/// trigger, `m` mask, `d` destination), `l` line changes, `a` edge
/// acceptances, and ack/EOI on both vCPUs (always).
fn alphabet(families: &str) -> Vec<Op> {
    let mut ops = Vec::new();
    for pin in 0..2u8 {
        if families.contains('v') {
            for v in V {
                ops.push(Op::Write {
                    pin,
                    field: Field::Vector(v),
                });
            }
        }
        for b in [false, true] {
            if families.contains('t') {
                ops.push(Op::Write {
                    pin,
                    field: Field::Level(b),
                });
            }
            if families.contains('m') {
                ops.push(Op::Write {
                    pin,
                    field: Field::Masked(b),
                });
            }
            if families.contains('l') {
                ops.push(Op::SetLine { pin, high: b });
            }
        }
        if families.contains('d') {
            for d in 0..2u8 {
                ops.push(Op::Write {
                    pin,
                    field: Field::Dest(d),
                });
            }
        }
    }
    for vcpu in 0..2u8 {
        ops.push(Op::Ack { vcpu });
        ops.push(Op::Eoi { vcpu });
        if families.contains('a') {
            for v in V {
                ops.push(Op::Accept { vcpu, vector: v });
            }
        }
    }
    ops
}

/// pin0: level V0 -> vCPU0, pin1: level V1 -> vCPU1, both unmasked, lines low.
fn initial(cfg: HarnessConfig) -> H {
    let level = 1u64 << 15;
    H::with_entries(
        cfg.eager(),
        &[V[0] as u64 | level, V[1] as u64 | level | 1 << 56],
    )
}

/// A 128-bit fingerprint hasher (two multiply-rotate lanes, one pass). Not
/// cryptographic; a collision would merge two states, at odds of about
/// `states^2 / 2^129`.
struct Fp128 {
    a: u64,
    b: u64,
}

impl Hasher for Fp128 {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            self.word(u64::from_le_bytes(c.try_into().unwrap()));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut w = [0u8; 8];
            w[..rest.len()].copy_from_slice(rest);
            self.word(u64::from_le_bytes(w) ^ (rest.len() as u64) << 59);
        }
    }
    fn write_u8(&mut self, i: u8) {
        self.word(i as u64 | 1 << 62);
    }
    fn write_u16(&mut self, i: u16) {
        self.word(i as u64 | 2 << 62);
    }
    fn write_u32(&mut self, i: u32) {
        self.word(i as u64 | 3 << 62);
    }
    fn write_u64(&mut self, i: u64) {
        self.word(i);
    }
    fn write_usize(&mut self, i: usize) {
        self.word(i as u64 ^ 0x5bd1_e995);
    }
    fn finish(&self) -> u64 {
        self.a ^ self.b
    }
}

impl Fp128 {
    #[inline]
    fn word(&mut self, w: u64) {
        self.a = (self.a ^ w)
            .wrapping_mul(0x9E37_79B9_7F4A_7C15)
            .rotate_left(29);
        self.b = (self.b.wrapping_add(w) ^ 0xD6E8_FEB8_6659_FD93)
            .wrapping_mul(0xBF58_476D_1CE4_E5B9)
            .rotate_left(31);
    }
    fn of(h: &H) -> u128 {
        let mut f = Fp128 {
            a: 0x243F_6A88_85A3_08D3,
            b: 0x1319_8A2E_0370_7344,
        };
        h.hash(&mut f);
        let (a, b) = (mix(f.a), mix(f.b ^ f.a.rotate_left(17)));
        (a as u128) << 64 | b as u128
    }
}

fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

struct Outcome {
    states: usize,
    depth_reached: usize,
    counterexample: Option<(Vec<Op>, Violation)>,
}

fn path(parents: &HashMap<u128, (u128, Op)>, mut fp: u128) -> Vec<Op> {
    let mut ops = Vec::new();
    while let Some(&(p, op)) = parents.get(&fp) {
        if p == fp {
            break;
        }
        ops.push(op);
        fp = p;
    }
    ops.reverse();
    ops
}

/// BFS to `max_depth`; stops at the first violation (a shortest one).
fn explore(cfg: HarnessConfig, max_depth: usize, families: &str) -> Outcome {
    let alphabet = alphabet(families);
    let root = initial(cfg);
    let root_fp = Fp128::of(&root);
    let mut parents: HashMap<u128, (u128, Op)> = HashMap::new();
    parents.insert(root_fp, (root_fp, Op::Snapshot));
    let mut frontier = vec![(root_fp, root)];
    let mut depth_reached = 0;
    for d in 1..=max_depth {
        let mut next = Vec::new();
        for (f, h) in &frontier {
            for &op in &alphabet {
                let mut g = h.fork();
                if let Err(v) = g.step(op) {
                    let mut ops = path(&parents, *f);
                    ops.push(op);
                    return Outcome {
                        states: parents.len(),
                        depth_reached: d,
                        counterexample: Some((ops, v)),
                    };
                }
                let g_fp = Fp128::of(&g);
                if let std::collections::hash_map::Entry::Vacant(e) = parents.entry(g_fp) {
                    e.insert((*f, op));
                    next.push((g_fp, g));
                }
            }
        }
        if std::env::var_os("RACE_VERBOSE").is_some() {
            eprintln!(
                "depth {d}: {} states, frontier {}",
                parents.len(),
                next.len()
            );
        }
        if next.is_empty() {
            break;
        }
        depth_reached = d;
        frontier = next;
    }
    Outcome {
        states: parents.len(),
        depth_reached,
        counterexample: None,
    }
}

fn report(name: &str, o: &Outcome) {
    println!(
        "{name}: states explored: {} (depth {})",
        o.states, o.depth_reached
    );
    if let Some((ops, v)) = &o.counterexample {
        println!(
            "{name}: counterexample ({} ops): {v}\n{}",
            ops.len(),
            Trace(ops)
        );
    }
}

fn must_hold(cfg: HarnessConfig, name: &str) {
    for (families, d) in [(MAIN, depth()), (BROAD, broad_depth())] {
        let name = format!("{name} [{families}]");
        let o = explore(cfg, d, families);
        report(&name, &o);
        if let Some((ops, v)) = &o.counterexample {
            panic!("{name}: {v} after\n{}", Trace(ops));
        }
        assert_eq!(
            o.depth_reached, d,
            "{name}: the state space ran out before depth {d}"
        );
    }
}

/// The shortest counterexample (broad alphabet, no tolerance); must be a lost
/// EOI of `cause`, at most `max_len` ops long.
fn must_lose(cfg: HarnessConfig, name: &str, cause: LossCause, max_len: usize) -> Vec<Op> {
    let o = explore(cfg, broad_depth(), BROAD);
    report(name, &o);
    let (ops, v) = o
        .counterexample
        .unwrap_or_else(|| panic!("{name}: expected a lost EOI ({cause:?})"));
    match v {
        Violation::LostEoi { cause: c, .. } if c == cause => {}
        _ => panic!("{name}: expected a lost EOI ({cause:?}), found {v}"),
    }
    assert!(ops.len() <= max_len, "{name}: not minimal\n{}", Trace(&ops));
    ops
}

#[test]
fn exact_loses_no_eoi() {
    must_hold(HarnessConfig::new(Policy::Exact), "Exact");
}

/// KVM's policies lose exactly one kind of EOI: an entry's vector rewritten
/// while its interrupt is in flight, the entry retargeted, and the vector
/// written back (the vCPU holding the instance is not a target of the last
/// write, so it is not rescanned, and its earlier rescan dropped the vector).
#[test]
fn kvm_legacy_loses_no_eoi_but_to_in_flight_vector_rewrites() {
    let cfg = HarnessConfig::new(Policy::KvmLegacy);
    must_hold(
        cfg.tolerating(LossCause::VectorRewrittenInFlight),
        "KvmLegacy (tolerating VectorRewrittenInFlight)",
    );
    must_lose(cfg, "KvmLegacy", LossCause::VectorRewrittenInFlight, 6);
}

#[test]
fn kvm_highest_stale_loses_no_eoi_but_to_in_flight_vector_rewrites() {
    let cfg = HarnessConfig::new(Policy::KvmHighestStale);
    must_hold(
        cfg.tolerating(LossCause::VectorRewrittenInFlight),
        "KvmHighestStale (tolerating VectorRewrittenInFlight)",
    );
    must_lose(
        cfg,
        "KvmHighestStale",
        LossCause::VectorRewrittenInFlight,
        6,
    );
}

/// `TmrDriven` loses the EOI of a level instance when an edge interrupt of
/// the same vector is accepted before that EOI (the acceptance clears the bit).
#[test]
fn tmr_driven_loses_no_eoi_but_to_vectors_shared_with_edge() {
    let cfg = HarnessConfig::new(Policy::TmrDriven);
    must_hold(
        cfg.tolerating(LossCause::SharedWithEdge),
        "TmrDriven (tolerating SharedWithEdge)",
    );
    must_lose(cfg, "TmrDriven", LossCause::SharedWithEdge, 4);
}

/// The wrong request order (rescan before forwarding the EOI). Only
/// `KvmHighestStale` requests a rescan on EOI (the other policies never set
/// `EoiExit::rescan`, so the order cannot matter for them). In this Irqchip
/// the order cannot lose an EOI either: see the `eoi_exit::race` module docs.
#[test]
fn rescan_then_forward_loses_no_more_than_forward_then_rescan() {
    must_hold(
        HarnessConfig::new(Policy::KvmHighestStale)
            .with_order(EoiOrder::RescanThenForward)
            .tolerating(LossCause::VectorRewrittenInFlight),
        "KvmHighestStale RescanThenForward (tolerating VectorRewrittenInFlight)",
    );
}

#[test]
fn no_intercept_loses_an_eoi() {
    let ops = must_lose(
        HarnessConfig::new(Policy::NoIntercept),
        "NoIntercept",
        LossCause::Plain,
        3,
    );
    // Line high, ack, EOI: the shortest loss.
    assert_eq!(ops.len(), 3, "{}", Trace(&ops));
}

/// The checker bites: a VMM that rescans without KVM's pending check (Linux
/// before 0fc5a36dd6b3) loses the EOI of an interrupt rerouted in flight.
#[test]
fn planted_scan_without_pending_check_loses_an_eoi() {
    for policy in [Policy::KvmLegacy, Policy::KvmHighestStale] {
        let cfg = HarnessConfig::new(policy).with_mutant(Mutant::ScanIgnoresPending);
        must_lose(
            cfg,
            &format!("{} + ScanIgnoresPending", policy.name()),
            LossCause::Plain,
            4,
        );
    }
}

/// With only the documented kick duty (vCPUs in `Effects::reload` are kicked;
/// accepted interrupts are posted to running vCPUs without a VM entry), no
/// policy whose bitmap changes only on rescans runs a guest with a stale VMCS.
#[test]
fn documented_kick_duty_holds_for_scan_driven_policies() {
    for policy in [
        Policy::Exact,
        Policy::KvmLegacy,
        Policy::KvmHighestStale,
        Policy::NoIntercept,
    ] {
        let mut cfg = HarnessConfig::new(policy)
            .with_kick(Kick::Reload)
            .tolerating(LossCause::VectorRewrittenInFlight);
        if policy == Policy::NoIntercept {
            cfg = cfg
                .tolerating(LossCause::Plain)
                .tolerating(LossCause::SharedWithEdge);
        }
        let d = broad_depth().min(6);
        let o = explore(cfg, d, BROAD);
        let name = format!("{} Kick::Reload [{BROAD}]", policy.name());
        report(&name, &o);
        if let Some((ops, v)) = &o.counterexample {
            panic!("{name}: {v} after\n{}", Trace(ops));
        }
    }
}

/// Core bug: `Irqchip::accept_on` changes the bitmap in `on_accept`
/// (`TmrDriven` sets the bit of an accepted level vector) but does not name
/// the vCPU in `Effects::reload`, so a VMM that follows the documented duties
/// and posts the interrupt to the running vCPU runs the guest with the old
/// VMCS bitmap, and that instance's EOI never exits.
#[test]
fn tmr_driven_acceptance_reloads_the_vcpu() {
    let cfg = HarnessConfig::new(Policy::TmrDriven)
        .with_kick(Kick::Reload)
        .tolerating(LossCause::SharedWithEdge);
    let o = explore(cfg, broad_depth().min(6), BROAD);
    report("TmrDriven Kick::Reload", &o);
    if let Some((ops, v)) = &o.counterexample {
        panic!("TmrDriven Kick::Reload: {v} after\n{}", Trace(ops));
    }
}
