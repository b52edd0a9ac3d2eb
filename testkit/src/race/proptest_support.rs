//! proptest strategies for the race language (feature `proptest`).
//!
//! The generators favour a small set of vectors, pins and vCPUs so that
//! reroutes, shared vectors and EOIs actually collide.

use std::vec;
use std::vec::Vec;

use proptest::prelude::*;

use super::{Field, Op};

/// Shape of the generated ops.
#[derive(Clone, Copy, Debug)]
pub struct Shape {
    /// vCPUs addressed (`0..vcpus`; destinations may also be 0xFF).
    pub vcpus: u8,
    /// Pins addressed.
    pub pins: &'static [u8],
    /// Favoured vectors.
    pub vectors: &'static [u8],
    /// Generate MSIs, edge acceptances, raw entries and MMIO.
    pub foreign: bool,
    /// Generate snapshot and restore.
    pub snapshots: bool,
    /// Let generated MSIs be level-triggered.
    pub level_msi: bool,
    /// Generate SVR bit 12 toggles ([`Op::DirectedEoi`]) and guest writes of
    /// the I/O APIC's EOI register with the shape's vectors.
    pub directed_eoi: bool,
}

impl Shape {
    /// 2 vCPUs, 4 pins, three vectors in two priority classes, everything on.
    pub const SMALL: Shape = Shape {
        vcpus: 2,
        pins: &[0, 1, 2, 3],
        vectors: &[0x31, 0x32, 0x41],
        foreign: true,
        snapshots: true,
        level_msi: true,
        directed_eoi: false,
    };
}

fn vector(s: Shape) -> BoxedStrategy<u8> {
    prop_oneof![8 => proptest::sample::select(s.vectors), 1 => any::<u8>()].boxed()
}

fn field(s: Shape) -> BoxedStrategy<Field> {
    prop_oneof![
        3 => vector(s).prop_map(Field::Vector),
        1 => prop_oneof![4 => Just(0u8), 1 => 0u8..8].prop_map(Field::DeliveryMode),
        1 => any::<bool>().prop_map(Field::Logical),
        1 => any::<bool>().prop_map(Field::ActiveLow),
        3 => any::<bool>().prop_map(Field::Level),
        3 => any::<bool>().prop_map(Field::Masked),
        4 => prop_oneof![8 => 0..s.vcpus, 1 => Just(0xffu8), 1 => Just(1u8 << 0 | 1 << 1)]
            .prop_map(Field::Dest),
    ]
    .boxed()
}

/// One op of shape `s`.
pub fn op(s: Shape) -> BoxedStrategy<Op> {
    let pin = proptest::sample::select(s.pins);
    let vcpu = 0..s.vcpus;
    let mut arms: Vec<(u32, BoxedStrategy<Op>)> = vec![
        (
            6,
            (pin.clone(), field(s))
                .prop_map(|(pin, field)| Op::Write { pin, field })
                .boxed(),
        ),
        (
            5,
            (pin.clone(), any::<bool>())
                .prop_map(|(pin, high)| Op::SetLine { pin, high })
                .boxed(),
        ),
        (5, vcpu.clone().prop_map(|vcpu| Op::Ack { vcpu }).boxed()),
        (6, vcpu.clone().prop_map(|vcpu| Op::Eoi { vcpu }).boxed()),
        (1, vcpu.clone().prop_map(|vcpu| Op::Rescan { vcpu }).boxed()),
        (1, vcpu.clone().prop_map(|vcpu| Op::Enter { vcpu }).boxed()),
        (2, vcpu.clone().prop_map(|vcpu| Op::Exit { vcpu }).boxed()),
        (
            1,
            pin.clone().prop_map(|pin| Op::DeliverLater { pin }).boxed(),
        ),
        (
            1,
            (
                vcpu.clone(),
                prop_oneof![Just(0u8), Just(1), Just(2), any::<u8>()],
            )
                .prop_map(|(vcpu, logical_id)| Op::Ldr { vcpu, logical_id })
                .boxed(),
        ),
        (
            1,
            (
                vcpu.clone(),
                prop_oneof![Just(0u8), Just(0x35), any::<u8>()],
            )
                .prop_map(|(vcpu, tpr)| Op::Tpr { vcpu, tpr })
                .boxed(),
        ),
    ];
    if s.foreign {
        arms.push((
            2,
            (vcpu.clone(), vector(s))
                .prop_map(|(vcpu, vector)| Op::Accept { vcpu, vector })
                .boxed(),
        ));
        arms.push((
            1,
            (
                prop_oneof![vcpu.clone(), Just(0xffu8)],
                vector(s),
                any::<bool>(),
            )
                .prop_map(move |(dest, vector, level)| Op::Msi {
                    dest,
                    vector,
                    level: level && s.level_msi,
                })
                .boxed(),
        ));
        arms.push((
            1,
            (pin.clone(), any::<u64>())
                .prop_map(|(pin, value)| Op::WriteEntry { pin, value })
                .boxed(),
        ));
        arms.push((
            1,
            (
                vcpu.clone(),
                prop_oneof![vcpu.clone(), Just(0xffu8)],
                vector(s),
                0u8..4,
            )
                .prop_map(|(vcpu, dest, vector, shorthand)| Op::Ipi {
                    vcpu,
                    dest,
                    vector,
                    shorthand,
                })
                .boxed(),
        ));
        arms.push((
            1,
            (
                prop_oneof![Just(0u8), Just(0x10), Just(0x40), any::<u8>()],
                prop_oneof![Just(4u8), any::<u8>()],
                any::<u32>(),
            )
                .prop_map(|(offset, size, value)| Op::Mmio {
                    offset,
                    size,
                    value,
                })
                .boxed(),
        ));
    }
    if s.directed_eoi {
        arms.push((
            1,
            (vcpu.clone(), any::<bool>())
                .prop_map(|(vcpu, on)| Op::DirectedEoi { vcpu, on })
                .boxed(),
        ));
        arms.push((
            3,
            vector(s)
                .prop_map(|v| Op::Mmio {
                    offset: 0x40,
                    size: 4,
                    value: u32::from(v),
                })
                .boxed(),
        ));
    }
    if s.snapshots {
        arms.push((1, Just(Op::Snapshot).boxed()));
        arms.push((1, Just(Op::Restore).boxed()));
        #[cfg(feature = "kvm")]
        arms.push((1, Just(Op::RestoreKvm).boxed()));
    }
    proptest::strategy::Union::new_weighted(arms).boxed()
}

/// A sequence of `1..=max_len` ops of shape `s`.
pub fn ops(s: Shape, max_len: usize) -> impl Strategy<Value = Vec<Op>> {
    proptest::collection::vec(op(s), 1..=max_len)
}

/// Initial redirection entries for pins `0..=max(pins)`: level or edge, vectors from
/// the shape, unmasked, spread over the vCPUs.
pub fn entries(s: Shape) -> impl Strategy<Value = Vec<u64>> {
    proptest::collection::vec(
        (
            vector(s),
            any::<bool>(),
            0..s.vcpus,
            prop_oneof![4 => Just(false), 1 => Just(true)],
        ),
        s.pins.iter().copied().max().map_or(0, |m| m as usize + 1),
    )
    .prop_map(|v| {
        v.into_iter()
            .map(|(vec, level, dest, masked)| {
                let mut e = vec as u64 | (dest as u64) << 56;
                if level {
                    e |= eoi_exit::RedirectionEntry::LEVEL;
                }
                if masked {
                    e |= eoi_exit::RedirectionEntry::MASK;
                }
                e
            })
            .collect()
    })
}
