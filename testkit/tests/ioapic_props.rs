//! Property tests of the I/O APIC model (ARCHITECTURE.md section 7): remote IRR is
//! set only by a delivered level interrupt and cleared only by an EOI of its
//! vector or a switch to edge; arbitrary guest MMIO never panics; once every
//! line is low and every delivered level vector is EOI'd, no remote IRR stays
//! set.
//!
//! Each property runs 1000 cases unless `PROPTEST_CASES` says otherwise.

use eoi_exit::ioapic::{IOEOI, IOREGSEL, IOWIN, MMIO_LEN, REG_REDTBL_BASE};
use eoi_exit::{
    Ioapic, IoapicConfig, IoapicEffects, IoapicVersion, MaskedEdge, MsiFormat, Pin, Polarity,
    RedirectionEntry, Vector,
};
use eoi_exit_testkit::race::{IoapicStep, check_ioapic_state, check_ioapic_step};
use proptest::prelude::*;

const PINS: usize = 24;
type Io = Ioapic<PINS>;

fn config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1000);
    ProptestConfig::with_cases(cases)
}

#[derive(Clone, Debug)]
enum Op {
    MmioWrite { offset: u64, size: u32, value: u64 },
    MmioRead { offset: u64, size: u32 },
    SetLine { pin: u8, level: bool },
    Eoi { vector: u8 },
    WriteEntry { pin: u8, value: u64 },
    DeliverLater { pin: u8 },
}

/// Vectors the generators favour, so EOIs hit programmed entries.
const VECTORS: core::ops::Range<u8> = 0x30..0x33;

fn vector() -> impl Strategy<Value = u8> {
    prop_oneof![4 => VECTORS, 1 => any::<u8>()]
}

/// Redirection-entry-like values: a favoured vector, random flags (including
/// the read-only bits, which the guest must not be able to set), random
/// destination.
fn entry_value() -> impl Strategy<Value = u64> {
    (vector(), any::<u64>(), 0u64..8, any::<bool>()).prop_map(|(vec, rand, dm, unmask)| {
        let mut bits = (rand & !0xfff) | dm << 8 | vec as u64;
        // Bias towards fixed delivery and unmasked entries.
        if dm >= 4 {
            bits &= !(7 << 8);
        }
        if unmask {
            bits &= !RedirectionEntry::MASK;
        }
        bits
    })
}

fn offset() -> impl Strategy<Value = u64> {
    prop_oneof![
        3 => Just(IOREGSEL),
        4 => Just(IOWIN),
        1 => Just(IOEOI),
        1 => 0u64..0x100,
        1 => any::<u64>(),
    ]
}

fn size() -> impl Strategy<Value = u32> {
    prop_oneof![6 => Just(4u32), 1 => Just(1u32), 1 => Just(2u32), 1 => Just(8u32), 1 => any::<u32>()]
}

fn mmio_value() -> impl Strategy<Value = u64> {
    prop_oneof![
        // Register selects: ID, version, arbitration, unimplemented, entries.
        1 => 0u64..(REG_REDTBL_BASE as u64 + 2 * PINS as u64 + 4),
        3 => REG_REDTBL_BASE as u64..REG_REDTBL_BASE as u64 + 2 * HOT_PINS as u64,
        4 => entry_value(),
        1 => entry_value().prop_map(|v| v >> 32),
        1 => any::<u64>(),
    ]
}

/// Most ops hit a few pins, so writes, lines and EOIs meet.
const HOT_PINS: u8 = 4;

fn pin() -> impl Strategy<Value = u8> {
    prop_oneof![12 => 0u8..HOT_PINS, 4 => 0u8..PINS as u8, 1 => any::<u8>()]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (offset(), size(), mmio_value())
            .prop_map(|(offset, size, value)| Op::MmioWrite { offset, size, value }),
        1 => (offset(), size()).prop_map(|(offset, size)| Op::MmioRead { offset, size }),
        8 => (pin(), any::<bool>()).prop_map(|(pin, level)| Op::SetLine { pin, level }),
        5 => vector().prop_map(|vector| Op::Eoi { vector }),
        2 => (pin(), entry_value()).prop_map(|(pin, value)| Op::WriteEntry { pin, value }),
        1 => pin().prop_map(|pin| Op::DeliverLater { pin }),
    ]
}

fn ioapic_config() -> impl Strategy<Value = IoapicConfig> {
    let format = prop_oneof![
        Just(MsiFormat::Xapic),
        Just(MsiFormat::ExtDestId),
        Just(MsiFormat::X2apicApi)
    ];
    (any::<bool>(), any::<bool>(), any::<u8>(), format).prop_map(|(v20, drop, id, msi_format)| {
        IoapicConfig {
            version: if v20 {
                IoapicVersion::V20
            } else {
                IoapicVersion::V11
            },
            masked_edge: if drop {
                MaskedEdge::Drop
            } else {
                MaskedEdge::Latch
            },
            id,
            msi_format,
        }
    })
}

fn is_data_size(size: u32) -> bool {
    matches!(size, 1 | 2 | 4 | 8)
}

/// The entry a write op lands in, if any (given IOREGSEL before the op), and
/// whether it is the low half (which holds the vector).
fn written_pin(io: &Io, op: &Op) -> Option<(usize, bool)> {
    match *op {
        Op::WriteEntry { pin, .. } if (pin as usize) < PINS => Some((pin as usize, true)),
        Op::MmioWrite { offset, size, .. } if offset % MMIO_LEN == IOWIN && is_data_size(size) => {
            let sel = io.state().ioregsel.checked_sub(REG_REDTBL_BASE)?;
            let i = sel as usize / 2;
            (i < PINS).then_some((i, sel & 1 == 0))
        }
        _ => None,
    }
}

/// The vector an op EOIs, if it is an EOI (broadcast or the EOI register).
fn eoi_vector(io: &Io, op: &Op) -> Option<u8> {
    match *op {
        Op::Eoi { vector } => Some(vector),
        Op::MmioWrite {
            offset,
            size,
            value,
        } if offset % MMIO_LEN == IOEOI
            && is_data_size(size)
            && io.state().config.version == IoapicVersion::V20 =>
        {
            Some(value as u8)
        }
        _ => None,
    }
}

fn apply(io: &mut Io, op: &Op) -> IoapicEffects {
    match *op {
        Op::MmioWrite {
            offset,
            size,
            value,
        } => io.mmio_write(offset, size, value),
        Op::MmioRead { offset, size } => {
            let r = io.mmio_read(offset, size);
            let limit = match size {
                1 => 0xff,
                2 => 0xffff,
                4 | 8 => 0xffff_ffff,
                _ => 0,
            };
            assert!(r <= limit, "read {r:#x} wider than size {size}");
            IoapicEffects::default()
        }
        Op::SetLine { pin, level } => io.set_line(Pin::new(pin), level),
        Op::Eoi { vector } => io.eoi(Vector::new(vector)),
        Op::WriteEntry { pin, value } => io.write_entry(Pin::new(pin), value),
        Op::DeliverLater { pin } => io.deliver_later_elapsed(Pin::new(pin)),
    }
}

/// Invariants that hold in every state (the shared I/O APIC check).
fn check_state(io: &Io) {
    check_ioapic_state(io);
}

/// Runs `op` and checks that every change is one the model allows (the
/// shared I/O APIC check).
fn step_checked(io: &mut Io, op: &Op) -> IoapicEffects {
    let before = io.clone();
    let step = IoapicStep {
        written: written_pin(io, op).map(|(w, _)| w),
        eoi: eoi_vector(io, op).map(Vector::new),
    };
    let actions = apply(io, op);
    check_ioapic_step(&before, io, step, &actions);
    actions
}

/// Deasserts every line, then EOIs every vector in `delivered`.
fn settle(io: &mut Io, delivered: &[bool; 256]) {
    for i in 0..PINS {
        let pin = Pin::new(i as u8);
        let low_active = io.entries()[i].polarity() == Polarity::ActiveLow;
        let _ = step_checked(
            io,
            &Op::SetLine {
                pin: i as u8,
                level: low_active,
            },
        );
        assert!(!eoi_exit_testkit::probe::asserted(io, pin));
    }
    for (v, _) in delivered.iter().enumerate().filter(|(_, d)| **d) {
        let a = step_checked(io, &Op::Eoi { vector: v as u8 });
        assert!(a.deliver.is_empty() && a.deliver_later.is_empty());
    }
}

fn record(
    io: &Io,
    actions: &IoapicEffects,
    delivered: &mut [bool; 256],
    last: &mut [Option<u8>; PINS],
) {
    for p in actions.deliver.iter() {
        let e = io.entries()[p.index()];
        if e.is_level() {
            delivered[e.vector().get() as usize] = true;
            last[p.index()] = Some(e.vector().get());
        }
    }
}

proptest! {
    #![proptest_config(config())]

    /// (1) Remote IRR is set only by a delivered level interrupt, cleared only
    /// by an EOI of its vector or a switch to edge; the guest cannot write it.
    #[test]
    fn remote_irr_changes_only_by_delivery_eoi_or_edge_switch(
        cfg in ioapic_config(),
        ops in prop::collection::vec(op(), 0..160),
    ) {
        let mut io = Io::new(cfg);
        for op in &ops {
            let _ = step_checked(&mut io, op);
        }
    }

    /// (2) Arbitrary MMIO (any offset, size, value, order) never panics, reads
    /// stay within the access size, and the state stays valid.
    #[test]
    fn arbitrary_mmio_never_panics(
        cfg in ioapic_config(),
        ops in prop::collection::vec(
            (any::<bool>(), any::<u64>(), any::<u32>(), any::<u64>(), offset(), size(), mmio_value()),
            0..200,
        ),
    ) {
        let mut io = Io::new(cfg);
        for (wild, o, s, v, o2, s2, v2) in ops {
            let (offset, size, value) = if wild { (o, s, v) } else { (o2, s2, v2) };
            if value & 1 == 0 {
                let _ = step_checked(&mut io, &Op::MmioWrite { offset, size, value });
            } else {
                let _ = apply(&mut io, &Op::MmioRead { offset, size });
            }
        }
        check_state(&io);
    }

    /// (3a) With each pin's vector fixed, once every line is low and every
    /// delivered level vector is EOI'd, no remote IRR stays set.
    #[test]
    fn no_remote_irr_survives_lines_low_and_all_eois(
        cfg in ioapic_config(),
        ops in prop::collection::vec(op(), 0..160),
    ) {
        let fixed_vector = |i: usize| 0x30 + (i % 3) as u8;
        let mut io = Io::new(cfg);
        let mut delivered = [false; 256];
        let mut last = [None; PINS];
        for op in &ops {
            // Keep every entry's vector fixed (vectors may be shared by pins).
            let op = match (op.clone(), written_pin(&io, op)) {
                (Op::WriteEntry { pin, value }, Some((i, _))) => Op::WriteEntry {
                    pin,
                    value: (value & !0xff) | fixed_vector(i) as u64,
                },
                (Op::MmioWrite { offset, size, value }, Some((i, true))) => Op::MmioWrite {
                    offset,
                    size,
                    value: (value & !0xff) | fixed_vector(i) as u64,
                },
                (op, _) => op,
            };
            let a = step_checked(&mut io, &op);
            record(&io, &a, &mut delivered, &mut last);
        }
        settle(&mut io, &delivered);
        for (i, e) in io.entries().iter().enumerate() {
            prop_assert!(!e.remote_irr(), "pin {} still has remote IRR: {:?}", i, e);
        }
    }

    /// (3b) Without that restriction, a remote IRR that survives belongs to an
    /// entry whose vector the guest rewrote while it was in service (the EOI
    /// carries the delivered vector; the 82093AA and KVM match the entry's
    /// current one, so such a pin stays wedged on both).
    #[test]
    fn surviving_remote_irr_means_the_vector_was_rewritten_in_service(
        cfg in ioapic_config(),
        ops in prop::collection::vec(op(), 0..160),
    ) {
        let mut io = Io::new(cfg);
        let mut delivered = [false; 256];
        let mut last = [None; PINS];
        for op in &ops {
            let a = step_checked(&mut io, op);
            record(&io, &a, &mut delivered, &mut last);
        }
        settle(&mut io, &delivered);
        for (i, e) in io.entries().iter().enumerate() {
            if e.remote_irr() {
                let v = e.vector().get();
                prop_assert!(!delivered[v as usize]);
                prop_assert!(last[i].is_some() && last[i] != Some(v));
            }
        }
    }
}
