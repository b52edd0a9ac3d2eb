//! Plain, versioned saved state of every state machine, and (feature `kvm`)
//! conversions to and from KVM's `kvm_ioapic_state` / `kvm_lapic_state`.
//!
//! Each type's saved state lives beside it (`ioapic/state.rs`,
//! `lapic/state.rs`, `exit_bitmap/state.rs`, `irqchip/state.rs`, like
//! vm-superio's `SerialState`) and is re-exported here. One naming scheme:
//! the data is `XState`, captured by `x.state()`, loaded by `x.restore(&s)`
//! or `X::from_state(&s)`. A VMM that live-migrates or snapshots a guest
//! saves:
//!
//! | type | saved state | capture | restore |
//! |---|---|---|---|
//! | [`Ioapic`] | [`IoapicState`] | [`Ioapic::state`] | [`Ioapic::restore`], [`Ioapic::from_state`] |
//! | [`LocalApic`] | [`LocalApicState`] | [`LocalApic::state`] | [`LocalApic::restore`], [`LocalApic::from_state`] |
//! | [`EoiExitMap`] | [`EoiExitMapState`] | [`EoiExitMap::state`] | [`EoiExitMap::restore`], [`EoiExitMap::from_state`] |
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
//!   [`EoiExitMap::vmcs_words`], for a fresh VMCS) before the vCPU runs,
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
use crate::ioapic::{PinSet, SUCCESSIVE_IRQ_MAX_COUNT};

// The saved-state types live beside their types; they are re-exported here so
// one module lists everything a VMM saves.
pub use crate::exit_bitmap::EoiExitMapState;
pub use crate::ioapic::IoapicState;
pub use crate::irqchip::{IrqchipState, VcpuState};
pub use crate::lapic::LocalApicState;

#[cfg(doc)]
use crate::{EoiExitMap, Ioapic, Irqchip, LocalApic, MaskedEdge};

/// The snapshot format version this crate writes and reads.
pub const SNAPSHOT_VERSION: u16 = 2;

// ---- errors -----------------------------------------------------------------

/// Which 256-bit LAPIC register.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ApicRegister {
    /// Interrupt request register.
    Irr,
    /// In-service register.
    Isr,
    /// Trigger mode register.
    Tmr,
}

impl fmt::Display for ApicRegister {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ApicRegister::Irr => "IRR",
            ApicRegister::Isr => "ISR",
            ApicRegister::Tmr => "TMR",
        })
    }
}

/// Why a snapshot (or a KVM state) was refused. The live object is untouched.
///
/// `vcpu` is the vCPU index when the snapshot was part of an
/// [`IrqchipState`] (or a KVM import), `None` for a standalone one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SnapshotError {
    /// The `version` field is not one this crate reads.
    UnsupportedVersion {
        /// The version found.
        found: u16,
        /// The version this crate reads ([`SNAPSHOT_VERSION`]).
        supported: u16,
    },
    /// The snapshot was taken with another pin count.
    PinCount {
        /// `PINS` of the object restored into.
        expected: usize,
        /// The count the snapshot records.
        found: usize,
    },
    /// The snapshot was taken with another vCPU count.
    VcpuCount {
        /// `VCPUS` of the object restored into.
        expected: usize,
        /// The count the snapshot records.
        found: usize,
    },
    /// A pin set (or KVM's `irr`) names a pin at or above the pin count.
    PinOutOfRange {
        /// Which set.
        what: &'static str,
        /// The first offending pin.
        pin: u16,
    },
    /// An edge-triggered redirection entry has remote IRR set (the model
    /// clears it on every switch to edge; KVM does too).
    RemoteIrrOnEdge {
        /// The pin.
        pin: u8,
    },
    /// A masked edge is latched although the configuration drops them
    /// ([`MaskedEdge::Drop`]).
    LatchedEdgeWithDrop {
        /// The pin.
        pin: u8,
    },
    /// An EOI-storm counter at or above
    /// `IOAPIC_SUCCESSIVE_IRQ_MAX_COUNT` (the model restarts it there).
    EoiCountOutOfRange {
        /// The pin.
        pin: u8,
        /// The count.
        count: u16,
    },
    /// A vector 0..=15 is pending or in service: the model never accepts
    /// illegal vectors (SDM "receive illegal vector").
    IllegalVector {
        /// The vCPU, if known.
        vcpu: Option<u16>,
        /// IRR or ISR.
        register: ApicRegister,
        /// The vector.
        vector: u8,
    },
    /// A register holds a value the model can never produce.
    InvalidRegister {
        /// The vCPU, if known (`None` also for I/O APIC registers).
        vcpu: Option<u16>,
        /// The register (`"SVR"`, `"DFR"`, `"LDR"`, `"I/O APIC ID"`, ...).
        register: &'static str,
        /// Its value.
        value: u64,
    },
    /// A derived value disagrees with what it is derived from.
    CacheMismatch {
        /// The vCPU, if known.
        vcpu: Option<u16>,
        /// Which cache (`"highest_stale"`).
        what: &'static str,
    },
    /// `Exact`'s instance tracking is inconsistent with itself or with the
    /// LAPIC.
    InstanceTracking {
        /// The vCPU, if known.
        vcpu: Option<u16>,
        /// The vector.
        vector: u8,
        /// What is wrong.
        what: &'static str,
    },
    /// An EOI-exit map holds state its policy never has (e.g. a stale set
    /// under `Exact`, a bitmap under `NoIntercept`).
    PolicyState {
        /// The vCPU, if known.
        vcpu: Option<u16>,
        /// The map's policy.
        policy: Policy,
        /// The field that should be empty.
        field: &'static str,
    },
    /// A vCPU's EOI-exit map has another policy than the chip's
    /// configuration.
    PolicyMismatch {
        /// The vCPU.
        vcpu: u16,
        /// The chip's policy.
        expected: Policy,
        /// The map's policy.
        found: Policy,
    },
    /// Two parts of the snapshot disagree about the configuration.
    ConfigMismatch {
        /// What disagrees.
        what: &'static str,
    },
}

impl SnapshotError {
    /// The same error, attributed to vCPU `vcpu`.
    #[must_use]
    pub fn at_vcpu(self, vcpu: u16) -> Self {
        use SnapshotError::*;
        match self {
            IllegalVector {
                register, vector, ..
            } => IllegalVector {
                vcpu: Some(vcpu),
                register,
                vector,
            },
            InvalidRegister {
                register, value, ..
            } => InvalidRegister {
                vcpu: Some(vcpu),
                register,
                value,
            },
            CacheMismatch { what, .. } => CacheMismatch {
                vcpu: Some(vcpu),
                what,
            },
            InstanceTracking { vector, what, .. } => InstanceTracking {
                vcpu: Some(vcpu),
                vector,
                what,
            },
            PolicyState { policy, field, .. } => PolicyState {
                vcpu: Some(vcpu),
                policy,
                field,
            },
            other => other,
        }
    }
}

struct OnVcpu(Option<u16>);

impl fmt::Display for OnVcpu {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(v) => write!(f, "vCPU {v}: "),
            None => Ok(()),
        }
    }
}

impl fmt::Display for SnapshotError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use SnapshotError::*;
        match *self {
            UnsupportedVersion { found, supported } => write!(
                f,
                "snapshot version {found} is not supported (this crate reads version {supported})"
            ),
            PinCount { expected, found } => write!(
                f,
                "snapshot has {found} I/O APIC pins, the I/O APIC restored into has {expected}"
            ),
            VcpuCount { expected, found } => write!(
                f,
                "snapshot has {found} vCPUs, the irqchip restored into has {expected}"
            ),
            PinOutOfRange { what, pin } => {
                write!(f, "{what} names pin {pin}, beyond the I/O APIC's pins")
            }
            RemoteIrrOnEdge { pin } => write!(
                f,
                "pin {pin}: remote IRR set on an edge-triggered redirection entry"
            ),
            LatchedEdgeWithDrop { pin } => write!(
                f,
                "pin {pin}: masked edge latched although the configuration drops masked edges"
            ),
            EoiCountOutOfRange { pin, count } => write!(
                f,
                "pin {pin}: EOI-storm counter {count} is not below {SUCCESSIVE_IRQ_MAX_COUNT}"
            ),
            IllegalVector {
                vcpu,
                register,
                vector,
            } => write!(
                f,
                "{}illegal vector {vector:#04x} in {register} (vectors 0-15 are never accepted)",
                OnVcpu(vcpu)
            ),
            InvalidRegister {
                vcpu,
                register,
                value,
            } => write!(
                f,
                "{}{register} value {value:#x} is not one the model can hold",
                OnVcpu(vcpu)
            ),
            CacheMismatch { vcpu, what } => write!(
                f,
                "{}{what} disagrees with the state it caches",
                OnVcpu(vcpu)
            ),
            InstanceTracking { vcpu, vector, what } => write!(
                f,
                "{}Exact instance tracking of vector {vector:#04x}: {what}",
                OnVcpu(vcpu)
            ),
            PolicyState {
                vcpu,
                policy,
                field,
            } => write!(
                f,
                "{}EOI-exit map under {} has a non-empty {field}, which that policy never sets",
                OnVcpu(vcpu),
                policy.name()
            ),
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
            ConfigMismatch { what } => write!(f, "configuration mismatch: {what}"),
        }
    }
}

impl core::error::Error for SnapshotError {}

pub(crate) fn check_version(found: u16) -> Result<(), SnapshotError> {
    if found == SNAPSHOT_VERSION {
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
