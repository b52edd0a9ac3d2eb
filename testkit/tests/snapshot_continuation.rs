//! A restored `Irqchip` continues exactly as the original would have.
//!
//! For every policy and several seeds: run N random events on a 4-vCPU chip,
//! snapshot it, serialize the snapshot with postcard and with serde_json,
//! restore each into a fresh chip (and into a chip that has run other events),
//! run M more events, and compare every observable (effects of each call, EOI
//! exits, acknowledged vectors, VMCS updates, final snapshots, statistics)
//! with the uninterrupted run.
#![cfg(feature = "serde")]

use eoi_exit::irqchip::{Arbitration, Delivery, VcpuState};
use eoi_exit::snapshot::IrqchipState;
use eoi_exit::{
    ApicId, ApicMode, DeliveryMode, Destination, DestinationMode, Effects, InterruptMessage,
    Irqchip, IrqchipConfig, LapicWrite, LocalApic, Pin, PinSet, Policy, TriggerMode, VcpuId,
    VcpuSlot, Vector,
};
use eoi_exit_testkit::race::SplitMix64;

const VCPUS: usize = 4;
type Chip = Irqchip<[VcpuSlot; VCPUS], 24>;
type State = IrqchipState<Vec<VcpuState>, 24>;

fn storage() -> [VcpuSlot; VCPUS] {
    [const { VcpuSlot::new() }; VCPUS]
}

/// A fresh sink per call: what that one call did, every delivery included.
fn fx() -> Effects<Vec<Delivery>> {
    Effects::with_log(Vec::new())
}

/// A small vector pool so vectors collide across pins, MSIs and vCPUs.
const VECTORS: [u8; 8] = [0x30, 0x31, 0x38, 0x40, 0x41, 0x50, 0x51, 0x60];
/// Pins in play (8 is the RTC, 3 has an ack notifier).
const PINS_USED: u64 = 10;

#[derive(Clone, Copy, Debug)]
enum Op {
    WriteEntry { pin: u8, bits: u64 },
    GuestWrite { reg: u8, value: u32 },
    SetLine { pin: u8, level: bool },
    Msi { msg: InterruptMessage },
    Ack(u16),
    Eoi(u16),
    Vmcs(u16),
    DeliverLater(u8),
    Rescan(u16),
    Tpr(u16, u8),
}

fn destination(r: &mut SplitMix64) -> (u64, bool) {
    if r.chance(25) {
        // Logical, flat: a bitmask of the four LDRs.
        (1 + r.below(15), true)
    } else if r.chance(5) {
        (0xff, false)
    } else {
        (r.below(VCPUS as u64 + 1), false) // sometimes a missing APIC ID
    }
}

fn entry_bits(r: &mut SplitMix64) -> u64 {
    let vector = VECTORS[r.below(VECTORS.len() as u64) as usize] as u64;
    let (dest, logical) = destination(r);
    let mut bits = vector | dest << 56;
    if r.chance(10) {
        bits |= 1 << 8; // lowest priority
    }
    if logical {
        bits |= 1 << 11;
    }
    if r.chance(10) {
        bits |= 1 << 13; // active low
    }
    if r.chance(55) {
        bits |= 1 << 15; // level
    }
    if r.chance(20) {
        bits |= 1 << 16; // masked
    }
    // Guest-written read-only bits (remote IRR, delivery status) are ignored.
    if r.chance(5) {
        bits |= 1 << 14 | 1 << 12;
    }
    bits
}

fn gen_op(r: &mut SplitMix64) -> Op {
    let vcpu = r.below(VCPUS as u64) as u16;
    let pin = r.below(PINS_USED) as u8;
    match r.below(100) {
        0..=9 => Op::WriteEntry {
            pin,
            bits: entry_bits(r),
        },
        10..=13 => {
            let bits = entry_bits(r);
            let high = r.chance(30);
            Op::GuestWrite {
                reg: 0x10 + 2 * pin + high as u8,
                value: if high {
                    (bits >> 32) as u32
                } else {
                    bits as u32
                },
            }
        }
        14..=30 => Op::SetLine {
            pin,
            level: r.chance(50),
        },
        31..=40 => {
            let (dest, logical) = destination(r);
            Op::Msi {
                msg: InterruptMessage {
                    destination: Destination {
                        id: dest as u32,
                        mode: if logical {
                            DestinationMode::Logical
                        } else {
                            DestinationMode::Physical
                        },
                    },
                    delivery_mode: if r.chance(10) {
                        DeliveryMode::LowestPriority
                    } else {
                        DeliveryMode::Fixed
                    },
                    vector: Vector::new(VECTORS[r.below(VECTORS.len() as u64) as usize]),
                    trigger: if r.chance(30) {
                        TriggerMode::Level
                    } else {
                        TriggerMode::Edge
                    },
                },
            }
        }
        41..=58 => Op::Ack(vcpu),
        59..=78 => Op::Eoi(vcpu),
        79..=90 => Op::Vmcs(vcpu),
        91..=93 => Op::DeliverLater(pin),
        94..=96 => Op::Rescan(vcpu),
        _ => Op::Tpr(vcpu, (r.below(5) as u8) << 4),
    }
}

fn ops(seed: u64, n: usize) -> Vec<Op> {
    let mut r = SplitMix64::new(seed);
    (0..n).map(|_| gen_op(&mut r)).collect()
}

fn config(policy: Policy, seed: u64) -> IrqchipConfig {
    IrqchipConfig {
        policy,
        ack_notifier_pins: [Pin::new(3)].into_iter().collect::<PinSet>(),
        rtc_tracking: true,
        arbitration: if seed.is_multiple_of(2) {
            Arbitration::KvmVectorHashing
        } else {
            Arbitration::SdmPriority
        },
        ..IrqchipConfig::default()
    }
}

fn chip(policy: Policy, seed: u64) -> Chip {
    Irqchip::with_apics(config(policy, seed), storage(), |i| {
        let mut a = LocalApic::new_enabled(ApicId::new(u32::from(i.get())), ApicMode::XApic);
        a.write_register(0xD0, 1 << (24 + i.index())); // LDR
        a
    })
}

/// Runs one op and returns what it did, as text (every observable).
fn run(c: &Chip, op: Op) -> String {
    let v = |i: u16| VcpuId::new(i);
    let mut fx = fx();
    match op {
        Op::WriteEntry { pin, bits } => {
            c.write_entry(Pin::new(pin), bits, &mut fx);
            format!("{fx:?}")
        }
        Op::GuestWrite { reg, value } => {
            c.mmio_write(0x00, 4, reg as u64, &mut fx);
            let mut b = self::fx();
            c.mmio_write(0x10, 4, value as u64, &mut b);
            format!("{fx:?} {b:?}")
        }
        Op::SetLine { pin, level } => {
            c.set_line(Pin::new(pin), level, &mut fx);
            format!("{fx:?}")
        }
        Op::Msi { msg } => {
            let msi = eoi_exit::Msi::from_message(&msg, eoi_exit::MsiFormat::Xapic);
            c.send_msi(&msi.expect("an 8-bit destination"), &mut fx);
            format!("{fx:?}")
        }
        Op::Ack(i) => format!("{:?}", c.ack(v(i))),
        Op::Eoi(i) => {
            let g = c.guest_eoi(v(i), &mut fx);
            format!("{g:?} {fx:?}")
        }
        Op::Vmcs(i) => format!("{:?}", c.vmcs_update(v(i))),
        Op::DeliverLater(pin) => {
            c.deliver_later_elapsed(Pin::new(pin), &mut fx);
            format!("{fx:?}")
        }
        Op::Rescan(i) => {
            c.rescan(v(i), &mut fx);
            format!("{fx:?}")
        }
        Op::Tpr(i, tpr) => {
            c.write_lapic(
                v(i),
                LapicWrite::Register {
                    offset: 0x80,
                    value: u32::from(tpr),
                },
                &mut fx,
            );
            format!("{fx:?}")
        }
    }
}

fn run_all(c: &Chip, ops: &[Op]) -> Vec<String> {
    ops.iter().map(|&op| run(c, op)).collect()
}

/// Counts of what the run did, to make sure the workload exercises the paths.
#[derive(Default, Debug)]
struct Coverage {
    eoi_exits: u64,
    rescans: u64,
    remote_irr_at_snapshot: u64,
    in_flight_at_snapshot: u64,
}

fn continuation(policy: Policy, seed: u64, n: usize, m: usize, cov: &mut Coverage) {
    let all = ops(seed, n + m);
    let (before, after) = all.split_at(n);

    // The uninterrupted run.
    let a = chip(policy, seed);
    let log_a = run_all(&a, &all);
    let end_a: State = a.state();

    // Run N, snapshot, serialize both ways.
    let b = chip(policy, seed);
    let log_b = run_all(&b, before);
    assert_eq!(log_b[..], log_a[..n]);
    let snap: State = b.state();
    cov.remote_irr_at_snapshot += snap
        .ioapic
        .entries
        .iter()
        .filter(|e| e.remote_irr())
        .count() as u64;
    cov.in_flight_at_snapshot += snap
        .vcpus
        .iter()
        .map(|v| v.apic.irr.union(&v.apic.isr).len() as u64)
        .sum::<u64>();

    let bytes = postcard::to_allocvec(&snap).unwrap();
    let from_postcard: State = postcard::from_bytes(&bytes).unwrap();
    let json = serde_json::to_string(&snap).unwrap();
    let from_json: State = serde_json::from_str(&json).unwrap();
    assert_eq!(from_postcard, snap);
    assert_eq!(from_json, snap);

    // Restore three ways.
    let c = Chip::from_state(&from_postcard, storage()).unwrap();
    let d = Chip::from_state(&from_json, storage()).unwrap();
    let mut e = chip(policy, seed ^ 0xdead);
    let _ = run_all(&e, &ops(seed ^ 0xbeef, 50));
    e.restore(&from_json).unwrap();
    for (name, x) in [
        ("postcard", &c),
        ("json", &d),
        ("restore into used chip", &e),
    ] {
        assert_eq!(
            x.state::<Vec<_>>(),
            snap,
            "{} seed {seed} via {name}: restored snapshot differs",
            policy.name()
        );
        let log_x = run_all(x, after);
        for (k, (got, want)) in log_x.iter().zip(&log_a[n..]).enumerate() {
            assert_eq!(
                got,
                want,
                "{} seed {seed} via {name}: event {} ({:?}) differs after restore",
                policy.name(),
                n + k,
                after[k]
            );
        }
        assert_eq!(
            x.state::<Vec<_>>(),
            end_a,
            "{} seed {seed} via {name}: final state differs",
            policy.name()
        );
    }
    for v in &end_a.vcpus {
        cov.eoi_exits += u64::from(v.stats.eoi_exits);
        cov.rescans += u64::from(v.stats.rescans);
    }
}

#[test]
fn restored_irqchip_continues_like_the_uninterrupted_run_for_every_policy() {
    let mut cases = 0;
    for policy in Policy::ALL {
        let mut cov = Coverage::default();
        for seed in 0..8u64 {
            for (n, m) in [(400, 400), (37, 800)] {
                continuation(policy, seed * 1000 + n as u64, n, m, &mut cov);
                cases += 1;
            }
        }
        // The workload must reach the interesting state, or the test proves little.
        if policy != Policy::NoIntercept {
            assert!(cov.eoi_exits > 100, "{}: {cov:?}", policy.name());
        }
        assert!(cov.remote_irr_at_snapshot > 0, "{}: {cov:?}", policy.name());
        assert!(cov.in_flight_at_snapshot > 10, "{}: {cov:?}", policy.name());
        println!("{}: {cov:?}", policy.name());
    }
    println!("snapshot_continuation: {cases} cases, each restored 3 ways, 0 differences");
}

/// The EOI-storm counter survives: 9,990 EOIs before the snapshot, and the
/// 10,000th successive one after the restore is still the one throttled.
#[test]
fn eoi_storm_counter_survives_a_snapshot() {
    for policy in [Policy::Exact, Policy::KvmHighestStale] {
        let run_storm = |c: &Chip, eois: usize| -> Vec<bool> {
            let mut throttled = Vec::new();
            for _ in 0..eois {
                let _ = c.ack(VcpuId::new(0));
                let mut fx = Effects::new();
                let _ = c.guest_eoi(VcpuId::new(0), &mut fx);
                throttled.push(!fx.deliver_later.is_empty());
            }
            throttled
        };
        let mut fx = Effects::new();
        let a = chip(policy, 0);
        a.write_entry(Pin::new(5), 0x40 | 1 << 15, &mut fx);
        a.set_line(Pin::new(5), true, &mut fx);
        let b = chip(policy, 0);
        b.write_entry(Pin::new(5), 0x40 | 1 << 15, &mut fx);
        b.set_line(Pin::new(5), true, &mut fx);
        let full = run_storm(&a, 10_005);
        assert_eq!(full.iter().position(|&t| t), Some(9_999));
        let first = run_storm(&b, 9_990);
        let snap: State = b.state();
        assert_eq!(snap.ioapic.eoi_count[5], 9_990);
        let bytes = postcard::to_allocvec(&snap).unwrap();
        let back: State = postcard::from_bytes(&bytes).unwrap();
        let c = Chip::from_state(&back, storage()).unwrap();
        let rest = run_storm(&c, 15);
        assert_eq!([first, rest].concat(), full);
    }
}

/// A pending VMCS update (bitmap changed, not yet loaded) survives.
#[test]
fn pending_vmcs_update_survives_a_snapshot() {
    let a = chip(Policy::Exact, 0);
    a.write_entry(Pin::new(5), 0x40 | 1 << 15, &mut Effects::new());
    let snap: State = a.state();
    assert_eq!(snap.vcpus[0].map.dirty, 0b0010); // 0x40: word 1, not yet loaded
    let json = serde_json::to_string(&snap).unwrap();
    let back: State = serde_json::from_str(&json).unwrap();
    let c = Chip::from_state(&back, storage()).unwrap();
    let want = a.vmcs_update(VcpuId::new(0));
    assert!(want.is_some());
    assert_eq!(c.vmcs_update(VcpuId::new(0)), want);
    assert_eq!(c.vmcs_update(VcpuId::new(0)), None);
}
