//! Fuzz-target harnesses shared by cargo-fuzz (`fuzz/`) and `cargo test`
//! (`testkit/tests/fuzz_replay.rs`).
//!
//! Each harness takes raw bytes, decodes them with [`arbitrary::Unstructured`]
//! into a bounded sequence of operations, runs them against the model and
//! panics when an invariant of ARCHITECTURE.md section 7 breaks. Every harness returns
//! early (without panicking) when the bytes run out, so any input is valid.
//!
//! | harness | what it drives |
//! |---|---|
//! | [`ioapic_mmio`] | raw MMIO (offset, size, value), lines, EOIs on `Ioapic<24>` V11 and V20 (differentially), `Ioapic<240>` and `Ioapic<1>` |
//! | [`routing_reconfig`] | `race::Op` sequences on an `Irqchip<4>` under the race invariant checker, for every [`Policy`] |
//! | [`lapic()`] | accept, ack, EOI and register writes on three [`LocalApic`]s |
//! | [`snapshot`] | `Ioapic::state`/`restore` round trips, restores of arbitrary state, `snapshot`/`from_snapshot` round trips and the KVM state conversions |
//!
//! Run them with `cargo fuzz run -s none TARGET` (stable, no sanitizer) or
//! `cargo +nightly fuzz run TARGET` (ASan); see `fuzz/README.md`.

use std::vec::Vec;

use arbitrary::{Arbitrary, Result, Unstructured};

use crate::race::{
    Field, Harness as RaceHarness, HarnessConfig, IoapicStep, Kick, LossCause, Op,
    Trace as RaceTrace, Violation, check_ioapic_state, check_ioapic_step, expected_iowin,
};
use eoi_exit::exit_bitmap::{EoiExitMap, Policy};
use eoi_exit::ioapic::{
    IOEOI, IOREGSEL, IOWIN, IoapicEffects, MMIO_LEN, MaskedEdge, REG_ARB, REG_ID, REG_REDTBL_BASE,
    Rescan,
};
use eoi_exit::irqchip::{Arbitration, EoiOrder};
use eoi_exit::lapic::{self, ApicMode, LocalApic};
use eoi_exit::types::{
    ApicId, DeliveryMode, Destination, DestinationMode, InterruptMessage, Pin, Polarity, VcpuId,
};
use eoi_exit::vector::{Vector, VectorSet};
use eoi_exit::{Ioapic, IoapicConfig, IoapicVersion, PinSet, RedirectionEntry};

/// Operations per input: bounds the work of one run.
pub const MAX_OPS: usize = 256;

/// A harness: bytes in, panic on a broken invariant.
pub type Harness = fn(&[u8]);

/// Every target, by its cargo-fuzz name.
pub const TARGETS: &[(&str, Harness)] = &[
    ("ioapic_mmio", ioapic_mmio),
    ("routing_reconfig", routing_reconfig),
    ("lapic", lapic),
    ("snapshot", snapshot),
];

// ---------------------------------------------------------------------------
// Biased value generators: mostly interesting values, sometimes anything.
// ---------------------------------------------------------------------------

fn gen_offset(u: &mut Unstructured<'_>) -> Result<u64> {
    Ok(match u.int_in_range(0u8..=9)? {
        0 | 1 => IOREGSEL,
        2..=4 => IOWIN,
        5 => IOEOI,
        // Aliases of the registers in higher windows, and near misses.
        6 => {
            u64::from(u.arbitrary::<u8>()?) * MMIO_LEN
                + [IOREGSEL, IOWIN, IOEOI][u.choose_index(3)?]
        }
        7 => u64::from(u.arbitrary::<u8>()?),
        8 => u64::MAX - u64::from(u.arbitrary::<u8>()?),
        _ => u.arbitrary()?,
    })
}

fn gen_size(u: &mut Unstructured<'_>) -> Result<u32> {
    Ok(match u.int_in_range(0u8..=7)? {
        0..=2 => 4,
        3 => 1,
        4 => 2,
        5 => 8,
        6 => u.int_in_range(0..=16)?,
        _ => u.arbitrary()?,
    })
}

fn gen_vector(u: &mut Unstructured<'_>) -> Result<u8> {
    Ok(match u.int_in_range(0u8..=3)? {
        // A few shared vectors so that entries collide.
        0 | 1 => [0x20, 0x21, 0x30, 0x40][u.choose_index(4)?],
        _ => u.arbitrary()?,
    })
}

/// A destination ID that usually names one of the first few APICs.
fn gen_dest_id(u: &mut Unstructured<'_>) -> Result<u32> {
    Ok(match u.int_in_range(0u8..=7)? {
        0..=3 => u.int_in_range(0..=4)?,
        4 => 0xff,
        5 => u32::from(u.arbitrary::<u8>()?),
        6 => 0xffff_ffff,
        _ => u.arbitrary()?,
    })
}

/// A redirection entry: usually well-formed fields, sometimes raw bits
/// (read-only bits included, which a write must ignore).
fn gen_entry(u: &mut Unstructured<'_>) -> Result<u64> {
    if u.ratio(1u8, 5)? {
        return u.arbitrary();
    }
    let vector = u64::from(gen_vector(u)?);
    let delivery: u64 = if u.ratio(3u8, 4)? {
        0
    } else {
        u.int_in_range(0..=7)?
    };
    let logical = u64::from(u.ratio(1u8, 4)?);
    let low_active = u64::from(u.ratio(1u8, 6)?);
    let level = u64::from(u.arbitrary::<bool>()?);
    let masked = u64::from(u.ratio(1u8, 4)?);
    let ro = u64::from(u.ratio(1u8, 8)?) * RedirectionEntry::READ_ONLY;
    let dest = u64::from(gen_dest_id(u)? as u8);
    let ext = if u.ratio(1u8, 8)? {
        u64::from(u.int_in_range(0u8..=0x7f)?)
    } else {
        0
    };
    Ok(vector
        | delivery << 8
        | logical << 11
        | low_active << 13
        | level << 15
        | masked << 16
        | ro
        | ext << 49
        | dest << 56)
}

fn gen_message(u: &mut Unstructured<'_>) -> Result<InterruptMessage> {
    if u.ratio(1u8, 6)? {
        return u.arbitrary();
    }
    Ok(InterruptMessage {
        destination: Destination {
            id: gen_dest_id(u)?,
            mode: if u.ratio(1u8, 4)? {
                DestinationMode::Logical
            } else {
                DestinationMode::Physical
            },
        },
        delivery_mode: if u.ratio(3u8, 4)? {
            DeliveryMode::Fixed
        } else {
            u.arbitrary()?
        },
        vector: Vector::new(gen_vector(u)?),
        trigger: u.arbitrary()?,
    })
}

fn pin_mask_to_set(mask: u32) -> PinSet {
    let mut s = PinSet::EMPTY;
    for i in 0..32 {
        if mask & (1 << i) != 0 {
            s.insert(Pin::new(i));
        }
    }
    s
}

// ---------------------------------------------------------------------------
// ioapic_mmio
// ---------------------------------------------------------------------------

/// One I/O APIC operation.
#[derive(Clone, Copy, Debug)]
pub enum IoOp {
    /// Raw guest MMIO write.
    MmioWrite {
        /// Offset from the base.
        offset: u64,
        /// Access size in bytes.
        size: u32,
        /// Value written.
        value: u64,
    },
    /// Raw guest MMIO read.
    MmioRead {
        /// Offset from the base.
        offset: u64,
        /// Access size in bytes.
        size: u32,
    },
    /// IOREGSEL then a 4-byte IOWIN write (the common guest pattern).
    SelWrite {
        /// IOREGSEL value.
        reg: u8,
        /// IOWIN value.
        value: u32,
    },
    /// Pin level.
    SetLine {
        /// Pin (may be out of range).
        pin: u8,
        /// Electrical level.
        level: bool,
    },
    /// Broadcast EOI.
    Eoi {
        /// Vector.
        vector: u8,
    },
    /// Host-side whole-entry write.
    WriteEntry {
        /// Pin (may be out of range).
        pin: u8,
        /// Entry bits.
        value: u64,
    },
    /// The storm-throttle timer fired.
    DeliverLater {
        /// Pin (may be out of range).
        pin: u8,
    },
}

fn gen_pin(u: &mut Unstructured<'_>, pins: u8) -> Result<u8> {
    Ok(if u.ratio(7u8, 8)? {
        u.int_in_range(0..=pins.saturating_sub(1))?
    } else {
        u.arbitrary()?
    })
}

impl IoOp {
    fn generate(u: &mut Unstructured<'_>) -> Result<IoOp> {
        Ok(match u.int_in_range(0u8..=11)? {
            0 | 1 => IoOp::MmioWrite {
                offset: gen_offset(u)?,
                size: gen_size(u)?,
                value: match u.int_in_range(0u8..=2)? {
                    0 => gen_entry(u)?,
                    1 => gen_entry(u)? >> 32,
                    _ => u.arbitrary()?,
                },
            },
            2 => IoOp::MmioRead {
                offset: gen_offset(u)?,
                size: gen_size(u)?,
            },
            3..=5 => {
                let reg = match u.int_in_range(0u8..=5)? {
                    0 => u.int_in_range(REG_ID..=REG_ARB)?,
                    1..=4 => REG_REDTBL_BASE + u.int_in_range(0..=2 * 24 + 1)?,
                    _ => u.arbitrary()?,
                };
                let e = gen_entry(u)?;
                let value = if reg & 1 == 1 { e >> 32 } else { e } as u32;
                IoOp::SelWrite { reg, value }
            }
            6 | 7 => IoOp::SetLine {
                pin: gen_pin(u, 24)?,
                level: u.arbitrary()?,
            },
            8 | 9 => IoOp::Eoi {
                vector: gen_vector(u)?,
            },
            10 => IoOp::WriteEntry {
                pin: gen_pin(u, 24)?,
                value: gen_entry(u)?,
            },
            _ => IoOp::DeliverLater {
                pin: gen_pin(u, 24)?,
            },
        })
    }
}

fn is_data_size(size: u32) -> bool {
    matches!(size, 1 | 2 | 4 | 8)
}

/// What a read of IOWIN must return, from the observable state.
fn expected_read<const P: usize>(io: &Ioapic<P>, offset: u64, size: u32) -> u64 {
    let reg = match offset % MMIO_LEN {
        IOREGSEL => u32::from(io.ioregsel()),
        IOWIN => expected_iowin(io),
        _ => 0,
    };
    match size {
        1 => u64::from(reg & 0xff),
        2 => u64::from(reg & 0xffff),
        4 | 8 => u64::from(reg),
        _ => 0,
    }
}

/// Runs [`IoOp`]s on one I/O APIC and checks every step.
struct IoChecker<const P: usize> {
    io: Ioapic<P>,
    /// Vectors of level deliveries seen (for the settle check).
    delivered: VectorSet,
}

impl<const P: usize> IoChecker<P> {
    fn new(config: IoapicConfig) -> Self {
        IoChecker {
            io: Ioapic::new(config),
            delivered: VectorSet::EMPTY,
        }
    }

    /// The entry a write op lands in (given IOREGSEL before it), if any.
    fn written_pin(&self, op: &IoOp) -> Option<usize> {
        let sel = match *op {
            IoOp::WriteEntry { pin, .. } => return (usize::from(pin) < P).then_some(pin.into()),
            IoOp::MmioWrite { offset, size, .. }
                if offset % MMIO_LEN == IOWIN && is_data_size(size) =>
            {
                self.io.ioregsel()
            }
            IoOp::SelWrite { reg, .. } => reg,
            _ => return None,
        };
        let i = usize::from(sel.checked_sub(REG_REDTBL_BASE)? / 2);
        (i < P).then_some(i)
    }

    /// The vector an op EOIs (broadcast or the EOI register), if any.
    fn eoi_vector(&self, op: &IoOp) -> Option<u8> {
        match *op {
            IoOp::Eoi { vector } => Some(vector),
            IoOp::MmioWrite {
                offset,
                size,
                value,
            } if offset % MMIO_LEN == IOEOI
                && is_data_size(size)
                && self.io.config().version == IoapicVersion::V20 =>
            {
                Some(value as u8)
            }
            _ => None,
        }
    }

    fn apply(&mut self, op: &IoOp) -> IoapicEffects {
        let io = &mut self.io;
        match *op {
            IoOp::MmioWrite {
                offset,
                size,
                value,
            } => io.mmio_write(offset, size, value),
            IoOp::MmioRead { offset, size } => {
                let before = io.clone();
                let expect = expected_read(io, offset, size);
                let r = io.mmio_read(offset, size);
                assert_eq!(r, expect, "read of {offset:#x}/{size}");
                assert!(*io == before, "an MMIO read changed the state");
                IoapicEffects::NONE
            }
            IoOp::SelWrite { reg, value } => {
                let a = io.mmio_write(IOREGSEL, 4, u64::from(reg));
                assert!(a.is_empty(), "an IOREGSEL write did something: {a:?}");
                io.mmio_write(IOWIN, 4, u64::from(value))
            }
            IoOp::SetLine { pin, level } => io.set_line(Pin::new(pin), level),
            IoOp::Eoi { vector } => io.eoi(Vector::new(vector)),
            IoOp::WriteEntry { pin, value } => io.write_entry(Pin::new(pin), value),
            IoOp::DeliverLater { pin } => io.deliver_later_elapsed(Pin::new(pin)),
        }
    }

    /// Invariants that hold in every state (the shared I/O APIC check).
    fn check_state(&self) {
        check_ioapic_state(&self.io);
    }

    /// Runs `op` and checks that every change is one the model allows (the
    /// shared I/O APIC check), then records the level vectors delivered.
    fn step(&mut self, op: &IoOp) -> IoapicEffects {
        let before = self.io.clone();
        let step = IoapicStep {
            written: self.written_pin(op),
            eoi: self.eoi_vector(op).map(Vector::new),
        };
        let actions = self.apply(op);
        check_ioapic_step(&before, &self.io, step, &actions);
        for pin in actions.deliver.iter() {
            let e = self.io.entries()[pin.index()];
            if e.is_level() {
                self.delivered.insert(e.vector());
            }
        }
        actions
    }

    /// Reads every indirect register through IOREGSEL/IOWIN (on a copy) and
    /// compares it with `entries()`, the ID and the version.
    fn check_full_readback(&self) {
        let mut io = self.io.clone();
        for sel in 0..=255u8 {
            let _ = io.mmio_write(IOREGSEL, 1, u64::from(sel));
            let expect = expected_iowin(&io);
            assert_eq!(
                io.mmio_read(IOWIN, 4),
                u64::from(expect),
                "register {sel:#x}"
            );
            assert_eq!(io.mmio_read(IOWIN, 2), u64::from(expect & 0xffff));
        }
        assert_eq!(io.entries(), self.io.entries(), "reads changed entries");
    }

    /// Lowers every line and EOIs every vector: no remote IRR may survive.
    fn settle(&mut self) {
        self.check_full_readback();
        // A latched edge may outlive its assertion when a polarity flip
        // deasserted the pin; lowering the line forgets it.
        let latched = self.io.state().pending_edge;
        for i in 0..P {
            let pin = Pin::new(i as u8);
            if !self.io.asserted(pin) && !latched.contains(pin) {
                continue;
            }
            let low_active = self.io.entries()[i].polarity() == Polarity::ActiveLow;
            let a = self.step(&IoOp::SetLine {
                pin: i as u8,
                level: low_active,
            });
            assert!(a.deliver.is_empty(), "deasserting delivered {a:?}");
            assert!(!self.io.asserted(Pin::new(i as u8)));
        }
        assert!(self.io.state().pending_edge.is_empty());
        let via_register = self.io.config().version == IoapicVersion::V20;
        // EOIs of other vectors do nothing to level entries: EOI every vector
        // delivered as level, and every vector a level entry holds now.
        let mut vectors = self.delivered;
        for e in self.io.entries().iter().filter(|e| e.is_level()) {
            vectors.insert(e.vector());
        }
        for v in vectors.iter().map(Vector::get) {
            let op = if via_register {
                IoOp::MmioWrite {
                    offset: IOEOI,
                    size: 4,
                    value: u64::from(v),
                }
            } else {
                IoOp::Eoi { vector: v }
            };
            let a = self.step(&op);
            assert!(a.deliver.is_empty() && a.deliver_later.is_empty());
        }
        for (i, e) in self.io.entries().iter().enumerate() {
            assert!(
                !e.remote_irr(),
                "pin {i}: remote IRR survives settle: {e:?}"
            );
        }
    }
}

/// Harness of the `ioapic_mmio` target: raw MMIO sequences, lines and EOIs.
///
/// The same ops run on a version 0x11 and a version 0x20 `Ioapic<24>`; a write
/// to the V20 EOI register is mirrored as a broadcast EOI on the V11 one, and
/// the two must then stay identical (state, actions, reads except the version
/// byte). `Ioapic<240>` (entries above 119 unreachable by MMIO) and
/// `Ioapic<1>` run the ops too. Every step checks the remote-IRR rules; the
/// run ends by lowering every line and EOIing every vector, after which no
/// remote IRR may remain.
pub fn ioapic_mmio(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let _ = run_ioapic_mmio(&mut u);
}

fn run_ioapic_mmio(u: &mut Unstructured<'_>) -> Result<()> {
    let masked_edge: MaskedEdge = u.arbitrary()?;
    let id: u8 = u.arbitrary()?;
    let cfg = |version| IoapicConfig {
        version,
        masked_edge,
        id,
    };
    let mut v11 = IoChecker::<24>::new(cfg(IoapicVersion::V11));
    let mut v20 = IoChecker::<24>::new(cfg(IoapicVersion::V20));
    let mut big = IoChecker::<240>::new(cfg(IoapicVersion::V20));
    let mut one = IoChecker::<1>::new(cfg(IoapicVersion::V11));
    let mut n = 0;
    while !u.is_empty() && n < MAX_OPS {
        n += 1;
        let op = IoOp::generate(u)?;
        let mirror = match v20.eoi_vector(&op) {
            Some(vector) if !matches!(op, IoOp::Eoi { .. }) => IoOp::Eoi { vector },
            _ => op,
        };
        let a20 = v20.step(&op);
        let a11 = v11.step(&mirror);
        assert_eq!(a11, a20, "V11 and V20 diverge on {op:?}");
        assert_eq!(
            v11.io.state(),
            v20.io.state(),
            "V11 and V20 diverge on {op:?}"
        );
        let _ = big.step(&op);
        let _ = one.step(&op);
    }
    v11.settle();
    v20.settle();
    big.settle();
    one.settle();
    Ok(())
}

// ---------------------------------------------------------------------------
// routing_reconfig
// ---------------------------------------------------------------------------

/// Number of vCPUs of the `routing_reconfig` irqchip.
pub const CHIP_VCPUS: usize = 4;

/// A change to one vCPU's LAPIC, applied through `Irqchip::update_lapic`.
#[derive(Clone, Copy, Debug, Arbitrary)]
pub enum LapicChange {
    /// Guest ID register write.
    WriteId(u32),
    /// Guest LDR write.
    WriteLdr(u32),
    /// Guest DFR write.
    WriteDfr(u32),
    /// Guest SVR write.
    WriteSvr(u32),
    /// Guest TPR write.
    WriteTpr(u8),
    /// IA32_APIC_BASE mode switch.
    SetMode(ApicMode),
    /// Host-side identity change.
    SetId(u32),
    /// Advertise directed EOI or not.
    SetDirectedEoi(bool),
}

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

fn apply_lapic_change(apic: &mut LocalApic, c: LapicChange) {
    match c {
        LapicChange::WriteId(v) => apic.write_id_register(v),
        LapicChange::WriteLdr(v) => apic.write_ldr(v),
        LapicChange::WriteDfr(v) => apic.write_dfr(v),
        LapicChange::WriteSvr(v) => apic.write_svr(v),
        LapicChange::WriteTpr(v) => apic.write_tpr(v),
        LapicChange::SetMode(m) => apic.set_mode(m),
        LapicChange::SetId(id) => apic.set_id(ApicId::new(id)),
        LapicChange::SetDirectedEoi(on) => apic.set_directed_eoi_supported(on),
    }
}

/// Vectors `routing_reconfig` folds most vectors onto (so entries, MSIs and
/// IPIs collide), in two priority classes plus one low illegal-ish vector.
const SHARED_VECTORS: [u8; 4] = [0x31, 0x41, 0x51, 0x3f];

/// Folds the pins and vectors of an op into a small range, so that ops of a
/// sequence hit the same entries, vCPUs and vectors.
fn narrow_op(op: Op, pins: u8) -> Op {
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
    cfg.chip.eoi_order = u.arbitrary::<EoiOrder>()?;
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
    for i in 0..V {
        let s = h.chip().vcpu(VcpuId::new(i as u16)).expect("vCPU exists");
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
                let top = h
                    .chip()
                    .vcpu(VcpuId::new(c as u16))
                    .expect("vCPU exists")
                    .apic
                    .isr()
                    .highest();
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
/// an `Irqchip<4>` with 24 pins for every [`Policy`].
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

// ---------------------------------------------------------------------------
// lapic
// ---------------------------------------------------------------------------

/// Number of LAPICs in the `lapic` harness.
const LAPICS: usize = 3;

/// One local APIC operation (`apic` indexes one of three APICs, modulo 3).
#[derive(Clone, Copy, Debug)]
pub enum LapicOp {
    /// Accept a message (already matched).
    Accept(u8, InterruptMessage),
    /// Route a message: every matching APIC accepts it (fixed), or the
    /// lowest-priority winner does (SDM or KVM arbitration).
    Route(InterruptMessage, bool),
    /// INTA.
    Ack(u8),
    /// EOI register write.
    Eoi(u8),
    /// Any register or mode change.
    Change(u8, LapicChange),
    /// Host-side `set_pending`.
    SetPending(u8, u8, bool),
    /// Host-side `set_in_service`.
    SetInService(u8, u8, bool),
}

impl LapicOp {
    fn generate(u: &mut Unstructured<'_>) -> Result<LapicOp> {
        let apic = u.int_in_range(0..=LAPICS as u8 - 1)?;
        Ok(match u.int_in_range(0u8..=15)? {
            0..=3 => LapicOp::Accept(apic, gen_message(u)?),
            4 | 5 => LapicOp::Route(gen_message(u)?, u.arbitrary()?),
            6..=8 => LapicOp::Ack(apic),
            9..=11 => LapicOp::Eoi(apic),
            12 => LapicOp::SetPending(apic, gen_vector(u)?, u.arbitrary()?),
            13 => LapicOp::SetInService(apic, gen_vector(u)?, u.arbitrary()?),
            _ => LapicOp::Change(
                apic,
                match u.int_in_range(0u8..=5)? {
                    0 => LapicChange::WriteTpr(u.arbitrary()?),
                    1 => LapicChange::WriteDfr(
                        [lapic::DFR_FLAT, lapic::DFR_CLUSTER, u.arbitrary()?][u.choose_index(3)?],
                    ),
                    2 => LapicChange::WriteLdr(u32::from(u.arbitrary::<u8>()?) << 24),
                    3 => LapicChange::WriteSvr(
                        u.arbitrary::<u32>()? | if u.arbitrary()? { 0x100 } else { 0 },
                    ),
                    _ => u.arbitrary()?,
                },
            ),
        })
    }
}

fn check_registers(a: &LocalApic) {
    assert!(a.is_consistent(), "highest-ISR cache stale");
    assert_eq!(a.dfr() | 0x0FFF_FFFF, a.dfr(), "DFR bits 27:0 not all ones");
    let svr_mask = 0x3FF
        | if a.directed_eoi_supported() {
            1 << 12
        } else {
            0
        };
    assert_eq!(a.svr() & !(svr_mask | 1 << 12), 0, "SVR reserved bits set");
    let isrv = a.isr().highest().map_or(0, |v| v.get());
    let ppr = a.ppr();
    assert_eq!(ppr >> 4, (a.tpr() >> 4).max(isrv >> 4), "PPR class wrong");
    let _ = a.apr();
    let _ = a.version();
    match a.mode() {
        ApicMode::X2Apic => {
            assert_eq!(a.ldr(), lapic::x2apic_ldr(a.initial_id().get()));
            assert_eq!(a.id(), a.initial_id());
            assert_eq!(a.id_register(), a.initial_id().get());
        }
        ApicMode::XApic => {
            // The LDR may keep an x2APIC value after a host x2APIC -> xAPIC
            // switch (KVM clears it only at reset); guest writes keep 31:24.
            assert_eq!(a.id_register(), a.id().get() << 24);
        }
        ApicMode::Disabled => {
            assert_eq!(a.highest_deliverable(), None);
            assert!(!a.accepts_vectored());
        }
    }
    if let Some(v) = a.highest_deliverable() {
        assert_eq!(Some(v), a.irr().highest());
        assert!(v.priority_class() > ppr >> 4);
    }
}

/// Checks one `accept` against the state before it.
fn check_accept(b: &LocalApic, a: &LocalApic, msg: &InterruptMessage, r: lapic::Acceptance) {
    use eoi_exit::lapic::Acceptance;
    let v = msg.vector;
    match r {
        Acceptance::Ignored(_) => {
            assert_eq!(a, b, "an ignored message changed the APIC");
            let enabled = b.mode() != ApicMode::Disabled && b.software_enabled();
            assert!(
                !enabled || !msg.delivery_mode.uses_vector() || v.is_reserved(),
                "a legal vectored message was ignored by an enabled APIC"
            );
        }
        Acceptance::Accepted { vector, trigger } | Acceptance::Coalesced { vector, trigger } => {
            assert!(!v.is_reserved(), "illegal vector {v:?} accepted");
            assert!(msg.delivery_mode.uses_vector());
            assert_eq!((vector, trigger), (v, msg.trigger));
            assert_eq!(
                matches!(r, Acceptance::Accepted { .. }),
                !b.irr().contains(v),
                "Accepted/Coalesced disagrees with IRR"
            );
            let mut irr = *b.irr();
            irr.insert(v);
            assert_eq!(*a.irr(), irr);
            let mut tmr = *b.tmr();
            tmr.set(v, trigger.is_level());
            assert_eq!(*a.tmr(), tmr, "TMR changed beyond the accepted vector");
            assert_eq!(a.isr(), b.isr());
        }
    }
}

fn lapic_step(apics: &mut [LocalApic; LAPICS], op: &LapicOp) {
    let before = *apics;
    let idx = |i: u8| usize::from(i) % LAPICS;
    let mut touched_tmr: Option<usize> = None;
    match *op {
        LapicOp::Accept(i, msg) => {
            let i = idx(i);
            let r = apics[i].accept(&msg);
            check_accept(&before[i], &apics[i], &msg, r);
            touched_tmr = Some(i);
        }
        LapicOp::Route(msg, sdm) => {
            if msg.delivery_mode == DeliveryMode::LowestPriority {
                let c = apics.iter().enumerate();
                let w = if sdm {
                    lapic::lowest_priority(c, &msg)
                } else {
                    lapic::lowest_priority_kvm(c, &msg)
                };
                if let Some(w) = w {
                    assert!(w < LAPICS, "arbitration picked {w}");
                    assert!(apics[w].matches(msg.destination) && apics[w].accepts_vectored());
                    let r = apics[w].accept(&msg);
                    check_accept(&before[w], &apics[w], &msg, r);
                } else {
                    assert!(
                        !apics
                            .iter()
                            .any(|a| a.matches(msg.destination) && a.accepts_vectored()),
                        "arbitration found nobody but someone is eligible"
                    );
                }
                assert!(
                    apics
                        .iter()
                        .zip(&before)
                        .all(|(a, b)| a.tmr() == b.tmr() || a.irr().contains(msg.vector))
                );
            } else {
                for i in 0..LAPICS {
                    if apics[i].matches(msg.destination) {
                        assert!(apics[i].mode() != ApicMode::Disabled);
                        let r = apics[i].accept(&msg);
                        check_accept(&before[i], &apics[i], &msg, r);
                    }
                }
            }
            for (a, b) in apics.iter().zip(&before) {
                check_registers(a);
                let _ = b;
            }
            return;
        }
        LapicOp::Ack(i) => {
            let i = idx(i);
            let b = &before[i];
            let r = apics[i].ack();
            let a = &apics[i];
            assert_eq!(r, b.highest_deliverable());
            match r {
                Some(v) => {
                    assert!(v.priority_class() > b.ppr() >> 4, "acked below PPR");
                    let (mut irr, mut isr) = (*b.irr(), *b.isr());
                    irr.remove(v);
                    assert!(isr.insert(v), "acked {v:?} already in service");
                    assert_eq!((*a.irr(), *a.isr()), (irr, isr));
                    assert!(a.ppr() >= v.get() & 0xF0);
                }
                None => assert_eq!(a, b, "a failed ack changed the APIC"),
            }
        }
        LapicOp::Eoi(i) => {
            let i = idx(i);
            let b = &before[i];
            let r = apics[i].eoi();
            let a = &apics[i];
            if b.mode() == ApicMode::Disabled || b.isr().is_empty() {
                assert_eq!(r, None, "spurious EOI retired something");
                assert_eq!(a, b, "a spurious EOI changed the APIC");
            } else {
                let e = r.expect("non-spurious EOI");
                assert_eq!(
                    Some(e.vector),
                    b.isr().highest(),
                    "EOI did not pop the highest ISR"
                );
                let mut isr = *b.isr();
                isr.remove(e.vector);
                assert_eq!(*a.isr(), isr);
                assert_eq!(a.irr(), b.irr());
                assert_eq!(e.level, b.tmr().contains(e.vector));
                assert_eq!(e.broadcast, e.level && !b.suppresses_eoi_broadcast());
            }
        }
        LapicOp::Change(i, c) => {
            let i = idx(i);
            apply_lapic_change(&mut apics[i], c);
            let (a, b) = (&apics[i], &before[i]);
            assert_eq!((a.irr(), a.isr()), (b.irr(), b.isr()));
            if let LapicChange::WriteTpr(t) = c {
                assert_eq!(a.tpr(), t);
            }
        }
        LapicOp::SetPending(i, v, level) => {
            let i = idx(i);
            apics[i].set_pending(Vector::new(v), level);
            touched_tmr = Some(i);
        }
        LapicOp::SetInService(i, v, level) => {
            let i = idx(i);
            apics[i].set_in_service(Vector::new(v), level);
            assert_eq!(
                apics[i].isr().highest(),
                before[i].isr().highest().max(Some(Vector::new(v)))
            );
            touched_tmr = Some(i);
        }
    }
    for (i, (a, b)) in apics.iter().zip(&before).enumerate() {
        check_registers(a);
        if touched_tmr != Some(i) {
            assert_eq!(a.tmr(), b.tmr(), "APIC {i}: TMR changed by {op:?}");
        }
        if !matches!(op, LapicOp::Accept(..) | LapicOp::SetPending(..)) {
            assert!(
                a.irr().is_subset(b.irr()),
                "APIC {i}: IRR grew without acceptance"
            );
        }
    }
}

/// Harness of the `lapic` target: accept, ack, EOI and register writes (TPR,
/// ID, LDR, DFR, SVR, mode, directed EOI) on three local APICs.
///
/// Checks: `is_consistent()`; TMR changes only on acceptance (and host-side
/// injection) and only at the accepted vector; illegal vectors never reach
/// IRR; ack takes the highest deliverable vector above the PPR; EOI pops the
/// highest ISR vector with the right level/broadcast flags; a spurious EOI
/// changes nothing; register read-back rules; lowest-priority arbitration
/// picks an eligible APIC. The run ends by EOIing every APIC empty.
pub fn lapic(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let _ = run_lapic(&mut u);
}

fn run_lapic(u: &mut Unstructured<'_>) -> Result<()> {
    let mut apics = [LocalApic::new(ApicId::new(0)); LAPICS];
    for (i, a) in apics.iter_mut().enumerate() {
        let id = if u.ratio(3u8, 4)? {
            i as u32
        } else {
            u.arbitrary()?
        };
        let mode: ApicMode = u.arbitrary()?;
        *a = if u.ratio(3u8, 4)? {
            LocalApic::new_enabled(ApicId::new(id), mode)
        } else {
            LocalApic::new(ApicId::new(id))
        };
        a.set_directed_eoi_supported(u.arbitrary()?);
        check_registers(a);
    }
    let mut n = 0;
    while !u.is_empty() && n < MAX_OPS {
        n += 1;
        let op = LapicOp::generate(u)?;
        lapic_step(&mut apics, &op);
    }
    for i in 0..LAPICS {
        if apics[i].mode() == ApicMode::Disabled {
            continue;
        }
        for _ in 0..=256 {
            let had = !apics[i].isr().is_empty();
            lapic_step(&mut apics, &LapicOp::Eoi(i as u8));
            if !had {
                break;
            }
        }
        assert!(
            apics[i].isr().is_empty(),
            "APIC {i}: EOIs did not drain ISR"
        );
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// snapshot
// ---------------------------------------------------------------------------

/// Checks an `Ioapic::state` -> `restore` round trip of a model-produced state.
fn check_round_trip<const P: usize>(io: &Ioapic<P>) {
    let st = io.state();
    let mut fresh = Ioapic::<P>::new(*io.config());
    let a = fresh.restore(&st);
    assert_eq!(a.rescan, Rescan::All, "restore must rescan every vCPU");
    let got = fresh.state();
    // Restore re-injects what KVM's kvm_ioapic_inject_all would: exactly the
    // delivered pins may differ (remote IRR now set, latched edge consumed).
    for i in 0..P {
        let pin = Pin::new(i as u8);
        let (s, g) = (st.entries[i], got.entries[i]);
        if a.deliver.contains(pin) {
            assert!(!s.masked());
            if s.is_level() {
                assert!(!s.remote_irr() && g.remote_irr());
                assert!(fresh.asserted(pin));
            } else {
                assert!(st.pending_edge.contains(pin) && !got.pending_edge.contains(pin));
            }
            assert_eq!(s.with_remote_irr(false), g.with_remote_irr(false));
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
                    !s.masked() && s.delivery_mode().is_err(),
                    "pin {i}: latched edge lost by a round trip: {s:?}"
                );
            } else {
                assert_eq!(was, is, "pin {i}: latched edge appeared in a round trip");
            }
        }
    }
    assert_eq!(st.line, got.line);
    assert_eq!(st.eoi_count, got.eoi_count);
    assert_eq!((st.ioregsel, st.id), (got.ioregsel, got.id));
    // A second round trip of a state with nothing left to inject is exact.
    let st2 = fresh.state();
    let mut again = Ioapic::<P>::new(*io.config());
    let a2 = again.restore(&st2);
    if a2.deliver.is_empty() {
        assert_eq!(again.state(), st2, "second round trip not exact");
    }
    // A restore applied to an equal instance is what restoring a fresh one
    // gives: restore does not depend on the old state.
    let mut copy = io.clone();
    let a3 = copy.restore(&st);
    assert_eq!(a3, a);
    assert_eq!(copy.state(), got);
}

/// Checks a restore of arbitrary state: it must normalise it.
fn check_arbitrary_restore<const P: usize>(io: &mut Ioapic<P>, st: &eoi_exit::IoapicState<P>) {
    let a = io.restore(st);
    let got = io.state();
    assert!(got.id < 16);
    for p in got.line.iter().chain(got.pending_edge.iter()) {
        assert!(p.index() < P, "restored pin set holds {p:?}");
    }
    if io.config().masked_edge == MaskedEdge::Drop {
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
///    `Irqchip` `snapshot()` -> `from_snapshot()` are exact, and the KVM
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

fn arbitrary_state<const P: usize>(u: &mut Unstructured<'_>) -> Result<eoi_exit::IoapicState<P>> {
    let mut entries = [RedirectionEntry::RESET; P];
    for e in entries.iter_mut() {
        *e = RedirectionEntry(gen_entry(u)?);
    }
    let mut eoi_count = [0u16; P];
    for c in eoi_count.iter_mut() {
        *c = if u.ratio(1u8, 8)? { u.arbitrary()? } else { 0 };
    }
    Ok(eoi_exit::IoapicState {
        entries,
        line: u.arbitrary()?,
        pending_edge: u.arbitrary()?,
        eoi_count,
        ioregsel: u.arbitrary()?,
        id: u.arbitrary()?,
    })
}

/// KVM state structs built from fuzz bytes, and the checks of the
/// `src/snapshot/kvm.rs` conversions on them.
#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
pub mod kvm_input {
    use arbitrary::{Result, Unstructured};
    use eoi_exit::snapshot::kvm::kvm_bindings::{
        kvm_ioapic_state, kvm_ioapic_state__bindgen_ty_1, kvm_lapic_state,
    };

    use eoi_exit::lapic::{ApicMode, LocalApic};
    use eoi_exit::snapshot::IoapicSnapshot;
    use eoi_exit::snapshot::kvm::{
        KVM_IOAPIC_NUM_PINS, KvmLapicIdentity, ioapic_from_kvm, ioapic_to_kvm, kvm_representable,
        lapic_from_kvm, lapic_to_kvm,
    };
    use eoi_exit::types::ApicId;
    use eoi_exit::{Ioapic, IoapicConfig, IoapicState};

    /// A `kvm_ioapic_state`: every field arbitrary, entries usually
    /// well-formed (see `gen_entry`); with the entries' bits.
    pub fn ioapic_state(u: &mut Unstructured<'_>) -> Result<(kvm_ioapic_state, [u64; 24])> {
        let mut bits = [0u64; 24];
        for b in bits.iter_mut() {
            *b = super::gen_entry(u)?;
        }
        // KVM never reports remote IRR on an edge entry: usually drop it, so
        // that most states import.
        if u.ratio(3u8, 4)? {
            for b in bits.iter_mut() {
                if *b & eoi_exit::RedirectionEntry::LEVEL == 0 {
                    *b &= !eoi_exit::RedirectionEntry::REMOTE_IRR;
                }
            }
        }
        let redirtbl = bits.map(|bits| kvm_ioapic_state__bindgen_ty_1 { bits });
        let k = kvm_ioapic_state {
            base_address: if u.ratio(7u8, 8)? {
                0xFEC0_0000
            } else {
                u.arbitrary()?
            },
            ioregsel: if u.ratio(3u8, 4)? {
                u.arbitrary::<u8>()?.into()
            } else {
                u.arbitrary()?
            },
            id: if u.ratio(3u8, 4)? {
                u.int_in_range(0..=15)?
            } else {
                u.arbitrary()?
            },
            irr: if u.ratio(3u8, 4)? {
                u.arbitrary::<u32>()? & 0x00ff_ffff
            } else {
                u.arbitrary()?
            },
            pad: u.arbitrary()?,
            redirtbl,
        };
        Ok((k, bits))
    }

    /// APIC register offsets inside `kvm_lapic_state::regs`.
    const APIC_ID: usize = 0x20;
    const APIC_TASKPRI: usize = 0x80;
    const APIC_LDR: usize = 0xD0;
    const APIC_DFR: usize = 0xE0;
    const APIC_SPIV: usize = 0xF0;
    const APIC_ISR: usize = 0x100;
    const APIC_TMR: usize = 0x180;
    const APIC_IRR: usize = 0x200;

    /// A `kvm_lapic_state`: either 1 KiB of raw bytes or the registers the
    /// model has (ID, TPR, LDR, DFR, SVR, ISR/TMR/IRR) set from the input,
    /// usually to values the model accepts.
    pub fn lapic_state(u: &mut Unstructured<'_>) -> Result<kvm_lapic_state> {
        let mut regs = [0u8; 1024];
        if u.ratio(1u8, 4)? {
            u.fill_buffer(&mut regs)?;
        } else {
            let mut put = |off: usize, v: u32| regs[off..off + 4].copy_from_slice(&v.to_le_bytes());
            put(APIC_ID, u.arbitrary()?);
            put(APIC_TASKPRI, u.arbitrary::<u8>()?.into());
            put(APIC_LDR, u.arbitrary()?);
            let dfr = if u.ratio(3u8, 4)? {
                u.arbitrary::<u32>()? | 0x0FFF_FFFF
            } else {
                u.arbitrary()?
            };
            put(APIC_DFR, dfr);
            let svr = if u.ratio(3u8, 4)? {
                u.arbitrary::<u32>()? & 0x13FF
            } else {
                u.arbitrary()?
            };
            put(APIC_SPIV, svr);
            for base in [APIC_ISR, APIC_TMR, APIC_IRR] {
                for n in 0..8 {
                    let w = if u.ratio(1u8, 3)? { u.arbitrary()? } else { 0 };
                    // Vectors 0-15 are illegal in IRR/ISR: usually clear them.
                    let w = if n == 0 && u.ratio(3u8, 4)? {
                        w & !0xffff
                    } else {
                        w
                    };
                    put(base + 0x10 * n, w);
                }
            }
        }
        Ok(kvm_lapic_state {
            regs: regs.map(|b| b as core::ffi::c_char),
        })
    }

    /// Whether `ioapic_from_kvm` must accept `k` (its documented failures).
    fn ioapic_acceptable(k: &kvm_ioapic_state, state_bits: &[u64; 24]) -> bool {
        k.irr >> 24 == 0
            && k.ioregsel <= 0xff
            && k.id <= 0xf
            && state_bits.iter().all(|&b| {
                b & eoi_exit::RedirectionEntry::LEVEL != 0
                    || b & eoi_exit::RedirectionEntry::REMOTE_IRR == 0
            })
    }

    /// Imports an arbitrary `kvm_ioapic_state`: never panics, fails exactly
    /// on what the docs list, and export -> import is the identity on
    /// accepted input; the imported state restores into an `Ioapic`.
    pub fn check_ioapic(k: &kvm_ioapic_state, bits: &[u64; 24]) {
        let r = ioapic_from_kvm(k);
        assert_eq!(
            r.is_ok(),
            ioapic_acceptable(k, bits),
            "ioapic_from_kvm accepted/refused wrongly: {r:?}"
        );
        let Ok(io) = r else { return };
        assert_eq!(io.base_address, k.base_address);
        assert!(
            kvm_representable(&io.state),
            "an import is not representable"
        );
        let back = ioapic_to_kvm(&io.state, io.base_address);
        assert_eq!(
            (back.irr, back.ioregsel, back.id, back.base_address),
            (k.irr, k.ioregsel, k.id, k.base_address),
            "export of an import differs"
        );
        let again = ioapic_from_kvm(&back).expect("re-import of an export");
        assert_eq!(again, io, "export -> import is not the identity");
        // The imported state is a valid model state.
        let snap = IoapicSnapshot::new(IoapicConfig::DEFAULT, &io.state);
        let restored = Ioapic::<KVM_IOAPIC_NUM_PINS>::from_snapshot(&snap)
            .expect("an imported state restores");
        assert_eq!(restored.state(), io.state);
    }

    /// Exports a model-produced I/O APIC state: it always imports, and
    /// exactly when `kvm_representable` says so, back to itself.
    pub fn check_ioapic_export(st: &IoapicState<KVM_IOAPIC_NUM_PINS>) {
        let k = ioapic_to_kvm(st, 0xFEC0_0000);
        let io = ioapic_from_kvm(&k).expect("an export of a model state imports");
        if kvm_representable(st) {
            assert_eq!(
                io.state, *st,
                "representable state changed by KVM round trip"
            );
        }
        // Whatever was lost, a second trip is exact.
        let k2 = ioapic_to_kvm(&io.state, 0xFEC0_0000);
        assert_eq!(ioapic_from_kvm(&k2).expect("re-import"), io);
    }

    /// Imports an arbitrary LAPIC page: never panics; on success the state
    /// restores into a consistent `LocalApic` whose snapshot is the state,
    /// and export -> import is the identity.
    pub fn check_lapic(page: &kvm_lapic_state, u: &mut Unstructured<'_>) -> Result<()> {
        let who = KvmLapicIdentity {
            initial_id: ApicId::new(if u.ratio(3u8, 4)? {
                u.int_in_range(0..=4)?
            } else {
                u.arbitrary()?
            }),
            mode: u.arbitrary::<ApicMode>()?,
            x2apic_format: u.arbitrary()?,
        };
        let Ok(s) = lapic_from_kvm(page, &who) else {
            return Ok(());
        };
        s.validate().expect("an import validates");
        let apic = LocalApic::from_snapshot(&s).expect("an import restores");
        super::check_registers(&apic);
        assert_eq!(
            apic.snapshot(),
            s,
            "LocalApic snapshot differs from the import"
        );
        let back = lapic_to_kvm(&s, who.x2apic_format);
        let again = lapic_from_kvm(&back, &who).expect("re-import of an export");
        assert_eq!(again, s, "LAPIC export -> import is not the identity");
        // Guest activity on the restored APIC keeps it consistent, and its
        // snapshot still round-trips through KVM's format.
        let mut a = apic;
        for _ in 0..u.int_in_range(0..=4u8)? {
            if u.arbitrary()? {
                let _ = a.ack();
            } else {
                let _ = a.eoi();
            }
            super::check_registers(&a);
        }
        let s2 = a.snapshot();
        assert_eq!(LocalApic::from_snapshot(&s2).expect("restores"), a);
        let again = lapic_from_kvm(&lapic_to_kvm(&s2, who.x2apic_format), &who)
            .expect("re-import after guest activity");
        assert_eq!(again, s2);
        Ok(())
    }
}

/// Round-trips the snapshots of every part of a chip reached by race ops:
/// `Ioapic`, `LocalApic` and `EoiExitMap` `snapshot()` / `from_snapshot()`,
/// the whole `Irqchip`, and the KVM export/import of its I/O APIC and LAPICs.
fn check_chip_snapshots(u: &mut Unstructured<'_>) -> Result<()> {
    const V: usize = 2;
    let policy: Policy = u.arbitrary()?;
    let cfg = HarnessConfig::new(policy)
        .tolerating_known_losses()
        .tolerating(LossCause::Plain)
        .tolerating(LossCause::SharedWithEdge)
        .tolerating(LossCause::VectorRewrittenInFlight);
    let mut h = RaceHarness::<V, 24>::new(cfg);
    let n = u.int_in_range(0..=48u8)?;
    for _ in 0..n {
        let op = narrow_op(u.arbitrary::<Op>()?, 4);
        // Invariants are the routing_reconfig target's job; this one only
        // needs reached states.
        let _ = h.step(op);
    }
    let chip = h.chip();
    let io = chip.ioapic().clone();
    let s = io.snapshot();
    assert_eq!(
        Ioapic::from_snapshot(&s).expect("Ioapic snapshot restores"),
        io
    );
    #[cfg(all(target_os = "linux", target_arch = "x86_64"))]
    kvm_input::check_ioapic_export(&io.state());
    for i in 0..V {
        let g = chip.vcpu(VcpuId::new(i as u16)).expect("vCPU exists");
        let (apic, map) = (g.apic, g.map);
        drop(g);
        let a = apic.snapshot();
        let back = LocalApic::from_snapshot(&a).expect("LocalApic snapshot restores");
        assert!(back.is_consistent());
        assert_eq!(back, apic, "LocalApic snapshot round trip");
        let m = map.snapshot();
        m.validate_with(&a).expect("map snapshot validates");
        assert_eq!(
            EoiExitMap::from_snapshot(&m).expect("map snapshot restores"),
            map,
            "EoiExitMap snapshot round trip"
        );
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
                assert_eq!(got, a, "reached LAPIC changed by KVM round trip");
            }
        }
    }
    let cs = chip.snapshot();
    let copy = eoi_exit::Irqchip::<V, 24>::from_snapshot(&cs).expect("Irqchip snapshot restores");
    assert_eq!(copy.snapshot(), cs, "Irqchip snapshot round trip");
    Ok(())
}

fn run_snapshot(u: &mut Unstructured<'_>) -> Result<()> {
    let cfg = IoapicConfig {
        version: u.arbitrary()?,
        masked_edge: u.arbitrary()?,
        id: u.arbitrary()?,
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
        while !u.is_empty() && n < MAX_OPS / 2 {
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
        while !u.is_empty() && n < MAX_OPS {
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
