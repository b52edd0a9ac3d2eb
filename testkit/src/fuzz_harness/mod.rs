//! Fuzz-target harnesses shared by cargo-fuzz (`fuzz/`) and `cargo test`
//! (`testkit/tests/fuzz_replay.rs`).
//!
//! Each harness takes raw bytes, decodes them with [`arbitrary::Unstructured`]
//! into a bounded sequence of operations ([`MAX_OPS`]), runs them against the
//! model and panics when an invariant of ARCHITECTURE.md section 7 breaks.
//! Every harness returns early (without panicking) when the bytes run out, so
//! any input is valid. The checks are written for cargo-fuzz's
//! instrumentation, where every comparison costs a call into libFuzzer: they
//! look at what an op changed and compare whole tables with bit arithmetic
//! (`race::lean`).
//!
//! | harness | what it drives |
//! |---|---|
//! | [`ioapic_mmio`] | raw MMIO (offset, size, value), lines, EOIs on `Ioapic<24>` V11 and V20 (differentially), `Ioapic<240>` and `Ioapic<1>` |
//! | [`routing_reconfig`] | `race::Op` sequences on a 4-vCPU `Irqchip` under the race invariant checker, for the [`Policy`] the input names |
//! | [`lapic()`] | accept, ack, EOI and register writes on three [`LocalApic`]s |
//! | [`snapshot`] | `Ioapic::state`/`set_registers` round trips, loads of arbitrary registers, `state`/`from_state` round trips and the KVM state conversions |
//!
//! Run them with `cargo fuzz run -s none TARGET` (stable, no sanitizer) or
//! `cargo +nightly fuzz run TARGET` (ASan); see `fuzz/README.md`.

use std::any::Any;
use std::cell::RefCell;

use arbitrary::{Result, Unstructured};

use eoi_exit::Vector;
#[cfg(doc)]
use eoi_exit::exit_bitmap::Policy;
use eoi_exit::ioapic::{IOEOI, IOREGSEL, IOWIN, MMIO_LEN};
use eoi_exit::lapic::ApicMode;
#[cfg(doc)]
use eoi_exit::lapic::LocalApic;
use eoi_exit::{DeliveryMode, Destination, DestinationMode, InterruptMessage, Pin};
use eoi_exit::{Irqchip, IrqchipConfig, PinSet, RedirectionEntry, VcpuSlot};

use crate::race::{Chip, Harness as RaceHarness, HarnessConfig};

mod ioapic_mmio;
/// KVM state structs built from fuzz bytes, and the checks of the
/// `src/snapshot/kvm.rs` conversions on them.
#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
pub mod kvm_input;
mod lapic;
mod routing_reconfig;
mod snapshot;

pub use ioapic_mmio::{IOAPIC_MMIO_OPS, IoOp, ioapic_mmio};
pub use lapic::{LapicChange, LapicOp, lapic};
pub use routing_reconfig::{
    CHIP_VCPUS, ChipStats, ROUTING_OPS, decode_routing_reconfig, routing_reconfig,
    run_routing_reconfig,
};
pub use snapshot::{SNAPSHOT_OPS, snapshot};

/// Operations per input, the most any target runs (the `lapic` target's
/// cap): bounds the work of one run.
///
/// The other targets stop earlier ([`IOAPIC_MMIO_OPS`], [`ROUTING_OPS`],
/// [`SNAPSHOT_OPS`]): under cargo-fuzz every comparison the code makes is a
/// call into libFuzzer's comparison tracing, which puts an op of theirs at
/// about a microsecond (four I/O APICs per op for `ioapic_mmio`, a whole
/// `Irqchip` and the race checker for `routing_reconfig`) against a budget
/// of 100 µs per run for 10,000 runs per second. Their bugs so far took a
/// few to a dozen ops.
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
    let ro = u64::from(u.ratio(1u8, 8)?) * (RedirectionEntry::REMOTE_IRR | 1 << 12);
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

/// The destination format of a fuzzed I/O APIC, from bits 5:4 of its ID
/// byte (the ID keeps bits 3:0), so a corpus input written before the format
/// existed keeps its byte layout: 0 is the default (8-bit), 1 and 3 the
/// extended destination ID, 2 the x2APIC API. (Before the format, bits 55:49
/// were always decoded; the race harness's xAPIC IDs are below 256, so an
/// extended destination reached no vCPU then, and its low byte may now.)
fn msi_format_from(id: u8) -> eoi_exit::MsiFormat {
    match (id >> 4) & 3 {
        0 => eoi_exit::MsiFormat::Xapic,
        2 => eoi_exit::MsiFormat::X2apicApi,
        _ => eoi_exit::MsiFormat::ExtDestId,
    }
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

/// A fresh race harness for `config`, its chip cloned from a per-thread cache
/// of pristine chips (the last [`PRISTINE_CHIPS`] configurations) rather than
/// built: building one rebuilds the routing caches, every APIC ID against
/// every vCPU, which under cargo-fuzz's comparison tracing cost about as much
/// as 15 ops of a run. A clone is the same chip (`Irqchip::new` is
/// deterministic), so the run is the same.
fn fresh_harness<const V: usize, const P: usize>(config: HarnessConfig) -> RaceHarness<V, P> {
    type Pristine = Vec<(IrqchipConfig, Box<dyn Any>)>;
    thread_local! {
        static CACHE: RefCell<Pristine> = const { RefCell::new(Vec::new()) };
    }
    let chip = CACHE.with_borrow_mut(|cache| {
        let hit = cache
            .iter()
            .filter(|(c, _)| *c == config.chip)
            .find_map(|(_, chip)| chip.downcast_ref::<Chip<V, P>>());
        if let Some(chip) = hit {
            return chip.clone();
        }
        let chip: Chip<V, P> =
            Irqchip::new(config.chip, ApicMode::XApic, [const { VcpuSlot::new() }; V]);
        if cache.len() == PRISTINE_CHIPS {
            cache.remove(0);
        }
        cache.push((config.chip, Box::new(chip.clone())));
        chip
    });
    RaceHarness::with_fresh_chip(config, chip)
}

/// How many configurations [`fresh_harness`] keeps a pristine chip of.
const PRISTINE_CHIPS: usize = 64;

fn pin_mask_to_set(mask: u32) -> PinSet {
    let mut s = PinSet::EMPTY;
    for i in 0..32 {
        if mask & (1 << i) != 0 {
            s.insert(Pin::new(i));
        }
    }
    s
}
