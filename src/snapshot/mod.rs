//! Plain, versioned saved state of every state machine, and (feature `kvm`)
//! conversions to and from KVM's `kvm_ioapic_state` / `kvm_lapic_state`.
//!
//! Each type's saved state lives beside it (`ioapic/state.rs`,
//! `lapic/state.rs`, `exit_bitmap/state.rs`, `irqchip/state.rs`, like
//! vm-superio's `SerialState`) and is re-exported here. One naming scheme:
//! the data is `XState`, captured by `x.state()`, loaded by
//! `X::from_state(&s)` (and, for the chip that owns its vCPU storage, by
//! `chip.restore(&s)` in place). A VMM that live-migrates or snapshots a
//! guest saves:
//!
//! | type | saved state | capture | restore |
//! |---|---|---|---|
//! | [`Ioapic`] | [`IoapicState`] | [`Ioapic::state`] | [`Ioapic::from_state`] |
//! | [`LocalApic`] | [`LocalApicState`] | [`LocalApic::state`] | [`LocalApic::from_state`] |
//! | [`EoiExitMap`] | [`EoiExitMapState`] | [`EoiExitMap::state`] | [`EoiExitMap::from_state`] |
//! | [`Irqchip`] | [`IrqchipState`] | [`Irqchip::state`] | [`Irqchip::restore`], [`Irqchip::from_state`] |
//!
//! # Guarantees
//!
//! * **Plain data.** Every snapshot is a `Copy` struct of public fields, with
//!   a [`version`](IoapicState::version) field ([`SNAPSHOT_VERSION`]). No
//!   allocation; `serde::Serialize` / `Deserialize` behind the `serde` feature
//!   (no_std; const-generic arrays are encoded as fixed-length tuples, so
//!   postcard writes no length and JSON writes an array).
//! * **Lossless.** Restoring a snapshot gives an object equal (`==`) to the one
//!   captured, which then continues exactly as the original would have:
//!   remote IRR, line levels, latched edges, EOI-storm counters, the stale
//!   set and the highest stale vector, the RTC EOI owed, `Exact`'s per-instance
//!   tracking, `TmrDriven`'s adopted level vectors, the pending VMCS update
//!   (what the VMCS holds, `loaded`, against the bitmap), the configuration
//!   and the per-vCPU statistics are all saved.
//! * **Validated.** A restore checks the whole snapshot first and returns a
//!   [`SnapshotError`] for anything the model can never be in (unknown
//!   version, wrong pin or vCPU count, pins beyond `PINS`, ISR/IRR bits below
//!   16, a stale cache, instance tracking that contradicts the LAPIC, state a
//!   policy never has, a map whose policy is not the chip's...). On error the
//!   live object is untouched.
//! * **No side effects.** A restore re-injects nothing and requests no
//!   rescan: the object simply *is* the one captured. (This differs from
//!   [`Ioapic::set_registers`] and the KVM import, which behave like
//!   `KVM_SET_IRQCHIP`.) After a restore, the VMM MUST still write
//!   [`EoiExitMap::take_vmcs_update`]'s words (or the whole
//!   [`EoiExitMap::bitmap`]'s words, for a fresh VMCS) before the vCPU runs,
//!   and re-arm its `deliver_later` timers, which are VMM state.
//!
//! # What KVM's formats do not save
//!
//! `kvm_ioapic_state` and `kvm_lapic_state` (see the `kvm` submodule, feature
//! `kvm`) lack, and these snapshots keep:
//!
//! * the line level of an edge pin whose edge was delivered (KVM exports
//!   `irr & !irr_delivered`), and `irr_delivered` itself;
//! * the electrical level: KVM stores the logical level and ignores polarity;
//! * the EOI-storm counters (`irq_eoi[]`);
//! * the RTC EOI owed per vCPU (`rtc_status.dest_map` and `pending_eoi`);
//!   KVM rebuilds it from LAPIC IRR/ISR on restore, and so does the import;
//! * the whole EOI-exit state: policy, bitmap, pending VMCS update, routed and
//!   stale vectors, the highest stale vector, `Exact`'s instance tracking
//!   (which in-flight instance needs its EOI: rebuilt conservatively from
//!   TMR), `TmrDriven`'s adopted level vectors;
//! * the LAPIC mode and initial (x2APIC) ID, which live in `IA32_APIC_BASE`
//!   and the vCPU ID, not in the register page;
//! * the configuration (I/O APIC version 0x20, masked-edge behaviour, ack
//!   notifier pins, RTC tracking, EOI order, arbitration) and statistics.

#[cfg(all(feature = "kvm", target_os = "linux", target_arch = "x86_64"))]
pub mod kvm;

use core::fmt;

use crate::exit_bitmap::Policy;
use crate::ioapic::PinSet;

// The saved-state types live beside their types; they are re-exported here so
// one module lists everything a VMM saves.
pub use crate::exit_bitmap::EoiExitMapState;
pub use crate::ioapic::IoapicState;
pub use crate::irqchip::{IrqchipState, VcpuState};
pub use crate::lapic::LocalApicState;

#[cfg(doc)]
use crate::{EoiExitMap, Ioapic, Irqchip, LocalApic, MaskedEdge};

/// The snapshot format version this crate writes. Version 6 added
/// [`IoapicConfig::msi_format`](crate::IoapicConfig::msi_format); a version-5
/// or older snapshot has none and loads with
/// [`MsiFormat::ExtDestId`](crate::MsiFormat::ExtDestId), the decoding of
/// redirection-entry bits 55:49 those versions always applied. Version 5
/// added `Policy::LineAware`'s saved bookkeeping (an enum variant older
/// readers do not know; a version-4 snapshot reads unchanged). It also reads version 3,
/// whose `VcpuState` had no `events` (nothing pending), and version 2, whose
/// `LocalApicState` had no ICR and ESR either (they load as 0).
///
/// The older versions load from a self-describing encoding (JSON: the
/// missing fields take their defaults). A positional binary encoding such as
/// postcard has no field names to miss, so an older postcard snapshot does
/// not decode into this version's structs: convert it through JSON, or
/// decode it with the crate version that wrote it.
pub const SNAPSHOT_VERSION: u16 = 6;

/// The oldest snapshot format version this crate reads.
const OLDEST_READABLE: u16 = 2;

// ---- errors -----------------------------------------------------------------

/// Why a snapshot (or a KVM state) was refused. The live object is untouched.
///
/// Five kinds, each with the detail in its fields and in [`Display`](fmt::Display):
/// `what` names the field or the broken rule (tests and logs match on it),
/// `vcpu` is the vCPU index when the snapshot was part of an
/// [`IrqchipState`] (or a KVM import), `None` for a standalone one or the
/// I/O APIC.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SnapshotError {
    /// The `version` field is not one this crate reads.
    UnsupportedVersion {
        /// The version found.
        found: u16,
        /// The newest version this crate reads ([`SNAPSHOT_VERSION`]; it
        /// reads versions 2 to 5 too).
        supported: u16,
    },
    /// The snapshot was taken with another size: `what` is `"I/O APIC pins"`
    /// (`PINS`) or `"vCPUs"` (the chip restored into, or the vCPU arguments
    /// of a KVM import).
    Shape {
        /// What was counted.
        what: &'static str,
        /// The count of the object restored into.
        expected: usize,
        /// The count the snapshot records.
        found: usize,
    },
    /// A field holds a value the model can never be in. `what` names it and
    /// the rule: a pin set naming a pin at or above the pin count (`value`
    /// is the pin), remote IRR on an edge-triggered entry and a latched edge
    /// under [`MaskedEdge::Drop`] (`value` is the entry's bits or 1), an
    /// EOI-storm counter at or above KVM's `IOAPIC_SUCCESSIVE_IRQ_MAX_COUNT`
    /// (`value` is the count), a vector 0..=15 in IRR or ISR (the model never
    /// accepts illegal vectors, SDM "receive illegal vector"; `value` is the
    /// vector), a register value (`"SVR"`, `"DFR"`, `"LDR"`, `"I/O APIC
    /// ID"`, ...).
    InvalidValue {
        /// The vCPU, if known.
        vcpu: Option<u16>,
        /// The I/O APIC pin, for per-pin state.
        pin: Option<u8>,
        /// The field, and what is wrong with it.
        what: &'static str,
        /// The value found.
        value: u64,
    },
    /// Parts of the snapshot contradict each other: a cache and what it
    /// caches, `Exact`'s instance tracking and itself, its bitmap or the
    /// LAPIC (`vector` is the first vector concerned), state a policy never
    /// has (a bitmap under `NoIntercept`), an I/O APIC configuration that is
    /// not the chip's.
    Inconsistent {
        /// The vCPU, if known.
        vcpu: Option<u16>,
        /// The vector concerned, if one is.
        vector: Option<u8>,
        /// What disagrees.
        what: &'static str,
    },
    /// A vCPU's EOI-exit map has another policy than the chip's
    /// configuration (vCPU 0 for a standalone map).
    PolicyMismatch {
        /// The vCPU.
        vcpu: u16,
        /// The chip's policy.
        expected: Policy,
        /// The map's policy.
        found: Policy,
    },
}

impl SnapshotError {
    /// The same error, attributed to vCPU `vcpu`.
    #[must_use]
    pub(crate) fn at_vcpu(self, vcpu: u16) -> Self {
        use SnapshotError::*;
        match self {
            InvalidValue {
                pin, what, value, ..
            } => InvalidValue {
                vcpu: Some(vcpu),
                pin,
                what,
                value,
            },
            Inconsistent { vector, what, .. } => Inconsistent {
                vcpu: Some(vcpu),
                vector,
                what,
            },
            other => other,
        }
    }

    /// An out-of-range or illegal value, not tied to a vCPU or a pin.
    pub(crate) const fn invalid(what: &'static str, value: u64) -> Self {
        SnapshotError::InvalidValue {
            vcpu: None,
            pin: None,
            what,
            value,
        }
    }

    /// A contradiction, not tied to a vCPU.
    pub(crate) const fn inconsistent(vector: Option<u8>, what: &'static str) -> Self {
        SnapshotError::Inconsistent {
            vcpu: None,
            vector,
            what,
        }
    }
}

impl fmt::Display for SnapshotError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use SnapshotError::*;
        if let InvalidValue { vcpu: Some(v), .. } | Inconsistent { vcpu: Some(v), .. } = *self {
            write!(f, "vCPU {v}: ")?;
        }
        match *self {
            UnsupportedVersion { found, supported } => write!(
                f,
                "snapshot version {found} is not supported (this crate reads version {supported})"
            ),
            Shape {
                what,
                expected,
                found,
            } => write!(
                f,
                "snapshot has {found} {what}, the object restored into has {expected}"
            ),
            InvalidValue {
                pin, what, value, ..
            } => {
                if let Some(p) = pin {
                    write!(f, "pin {p}: ")?;
                }
                write!(f, "invalid {what}: {value} ({value:#x})")
            }
            Inconsistent { vector, what, .. } => {
                if let Some(v) = vector {
                    write!(f, "vector {v:#04x}: ")?;
                }
                write!(f, "inconsistent snapshot: {what}")
            }
            PolicyMismatch {
                vcpu,
                expected,
                found,
            } => write!(
                f,
                "vCPU {vcpu}: EOI-exit map policy {} differs from the irqchip's {}",
                found.name(),
                expected.name()
            ),
        }
    }
}

impl core::error::Error for SnapshotError {}

pub(crate) fn check_version(found: u16) -> Result<(), SnapshotError> {
    if (OLDEST_READABLE..=SNAPSHOT_VERSION).contains(&found) {
        Ok(())
    } else {
        Err(SnapshotError::UnsupportedVersion {
            found,
            supported: SNAPSHOT_VERSION,
        })
    }
}

/// The first pin of `set` at or above `pins`.
pub(crate) fn first_pin_beyond(set: &PinSet, pins: usize) -> Option<u16> {
    set.iter()
        .map(|p| p.get() as u16)
        .find(|&p| p as usize >= pins)
}

// ---- serde helper for const-generic arrays ------------------------------------

/// `#[serde(with = "array")]` for `[T; N]` of any `N`, without alloc: a
/// fixed-length tuple (postcard writes no length, JSON an array); decoding
/// fails unless exactly `N` elements are present.
#[cfg(feature = "serde")]
pub(crate) mod array {
    use core::fmt;
    use core::marker::PhantomData;

    use serde::de::{self, Deserialize, Deserializer, SeqAccess, Visitor};
    use serde::ser::{Serialize, SerializeTuple, Serializer};

    pub fn serialize<S: Serializer, T: Serialize, const N: usize>(
        a: &[T; N],
        s: S,
    ) -> Result<S::Ok, S::Error> {
        let mut t = s.serialize_tuple(N)?;
        for x in a {
            t.serialize_element(x)?;
        }
        t.end()
    }

    struct ArrayVisitor<T, const N: usize>(PhantomData<T>);

    impl<'de, T: Deserialize<'de>, const N: usize> Visitor<'de> for ArrayVisitor<T, N> {
        type Value = [T; N];

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "an array of exactly {N} elements")
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<[T; N], A::Error> {
            let mut v: heapless::Vec<T, N> = heapless::Vec::new();
            for i in 0..N {
                match seq.next_element::<T>()? {
                    Some(x) => {
                        // Cannot fail: at most N pushes.
                        let _ = v.push(x);
                    }
                    None => return Err(de::Error::invalid_length(i, &self)),
                }
            }
            if seq.next_element::<de::IgnoredAny>()?.is_some() {
                return Err(de::Error::invalid_length(N + 1, &self));
            }
            v.into_array()
                .map_err(|_| de::Error::invalid_length(N, &self))
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>, T: Deserialize<'de>, const N: usize>(
        d: D,
    ) -> Result<[T; N], D::Error> {
        d.deserialize_tuple(N, ArrayVisitor::<T, N>(PhantomData))
    }
}
