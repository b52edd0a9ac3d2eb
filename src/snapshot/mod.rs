//! Plain, versioned snapshots of every state machine, and (feature `kvm`)
//! conversions to and from KVM's `kvm_ioapic_state` / `kvm_lapic_state`.
//!
//! A VMM that live-migrates or snapshots a guest saves:
//!
//! | type | snapshot | capture | restore |
//! |---|---|---|---|
//! | [`Ioapic`] | [`IoapicSnapshot`] | [`Ioapic::snapshot`] | [`Ioapic::restore_snapshot`], [`Ioapic::from_snapshot`] |
//! | [`LocalApic`] | [`LocalApicState`] | [`LocalApic::snapshot`] | [`LocalApic::restore_snapshot`], [`LocalApic::from_snapshot`] |
//! | [`EoiExitMap`] | [`EoiExitMapState`] | [`EoiExitMap::snapshot`] | [`EoiExitMap::restore_snapshot`], [`EoiExitMap::from_snapshot`] |
//! | [`Irqchip`] | [`IrqchipSnapshot`] | [`Irqchip::snapshot`] | [`Irqchip::restore_snapshot`], [`Irqchip::from_snapshot`] |
//!
//! # Guarantees
//!
//! * **Plain data.** Every snapshot is a `Copy` struct of public fields, with
//!   a [`version`](IoapicSnapshot::version) field ([`SNAPSHOT_VERSION`]). No
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
//!   [`Ioapic::restore`] and the KVM import, which behave like
//!   `KVM_SET_IRQCHIP`.) After a restore, the VMM MUST still write
//!   [`EoiExitMap::take_vmcs_update`]'s words (or the whole
//!   [`EoiExitMap::loaded`] bitmap, for a fresh VMCS) before the vCPU runs,
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

pub use crate::exit_bitmap::EoiExitMapState;
use crate::exit_bitmap::Policy;
use crate::ioapic::{
    Ioapic, IoapicConfig, IoapicState, MaskedEdge, PinSet, RedirectionEntry,
    SUCCESSIVE_IRQ_MAX_COUNT,
};
use crate::irqchip::{Irqchip, IrqchipConfig, VcpuState, VcpuStats};
use crate::lapic::{ApicMode, LocalApic, Svr, x2apic_ldr};
use crate::vector::VectorSet;

/// The snapshot format version this crate writes and reads.
pub const SNAPSHOT_VERSION: u16 = 1;

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
/// [`IrqchipSnapshot`] (or a KVM import), `None` for a standalone one.
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
    /// [`SUCCESSIVE_IRQ_MAX_COUNT`] (the model restarts it there).
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
fn first_pin_beyond(set: &PinSet, pins: usize) -> Option<u16> {
    set.iter()
        .map(|p| p.get() as u16)
        .find(|&p| p as usize >= pins)
}

// ---- serde helper for const-generic arrays ------------------------------------

/// `#[serde(with = "array")]` for `[T; N]` of any `N`, without alloc: a
/// fixed-length tuple (postcard writes no length, JSON an array); decoding
/// fails unless exactly `N` elements are present.
#[cfg(feature = "serde")]
mod array {
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

// ---- I/O APIC -----------------------------------------------------------------

/// Everything an [`Ioapic`] holds: configuration and state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct IoapicSnapshot<const PINS: usize = 24> {
    /// [`SNAPSHOT_VERSION`].
    pub version: u16,
    /// `PINS` when captured.
    pub pins: u16,
    /// The configuration (version register, masked-edge behaviour, reset ID).
    pub config: IoapicConfig,
    /// The redirection table, remote IRR and delivery status included.
    #[cfg_attr(feature = "serde", serde(with = "array"))]
    pub entries: [RedirectionEntry; PINS],
    /// Electrical level of each pin (before polarity).
    pub line: PinSet,
    /// Latched masked edges ([`MaskedEdge::Latch`]).
    pub pending_edge: PinSet,
    /// Successive EOIs that found the line still asserted, per pin.
    #[cfg_attr(feature = "serde", serde(with = "array"))]
    pub eoi_count: [u16; PINS],
    /// IOREGSEL.
    pub ioregsel: u8,
    /// I/O APIC ID (4 bits).
    pub id: u8,
}

impl<const PINS: usize> IoapicSnapshot<PINS> {
    /// A snapshot of `config` and `state` (e.g. a state converted from KVM).
    pub fn new(config: IoapicConfig, state: &IoapicState<PINS>) -> Self {
        IoapicSnapshot {
            version: SNAPSHOT_VERSION,
            pins: PINS as u16,
            config,
            entries: state.entries,
            line: state.line,
            pending_edge: state.pending_edge,
            eoi_count: state.eoi_count,
            ioregsel: state.ioregsel,
            id: state.id,
        }
    }

    /// The state part.
    pub fn state(&self) -> IoapicState<PINS> {
        IoapicState {
            entries: self.entries,
            line: self.line,
            pending_edge: self.pending_edge,
            eoi_count: self.eoi_count,
            ioregsel: self.ioregsel,
            id: self.id,
        }
    }

    /// Checks everything [`Ioapic::restore_snapshot`] checks.
    pub fn validate(&self) -> Result<(), SnapshotError> {
        check_version(self.version)?;
        if self.pins as usize != PINS {
            return Err(SnapshotError::PinCount {
                expected: PINS,
                found: self.pins as usize,
            });
        }
        validate_ioapic_state(&self.config, &self.state())
    }
}

/// The state checks shared by snapshots and KVM imports.
pub(crate) fn validate_ioapic_state<const PINS: usize>(
    config: &IoapicConfig,
    st: &IoapicState<PINS>,
) -> Result<(), SnapshotError> {
    for (what, set) in [("line", &st.line), ("pending_edge", &st.pending_edge)] {
        if let Some(pin) = first_pin_beyond(set, PINS) {
            return Err(SnapshotError::PinOutOfRange { what, pin });
        }
    }
    if st.id > 0xf {
        return Err(SnapshotError::InvalidRegister {
            vcpu: None,
            register: "I/O APIC ID",
            value: st.id as u64,
        });
    }
    for (i, e) in st.entries.iter().enumerate() {
        if !e.is_level() && e.remote_irr() {
            return Err(SnapshotError::RemoteIrrOnEdge { pin: i as u8 });
        }
        if st.eoi_count[i] >= SUCCESSIVE_IRQ_MAX_COUNT {
            return Err(SnapshotError::EoiCountOutOfRange {
                pin: i as u8,
                count: st.eoi_count[i],
            });
        }
    }
    if config.masked_edge == MaskedEdge::Drop
        && let Some(p) = st.pending_edge.iter().next()
    {
        return Err(SnapshotError::LatchedEdgeWithDrop { pin: p.get() });
    }
    Ok(())
}

impl<const PINS: usize> Ioapic<PINS> {
    /// A snapshot of the configuration and the whole state.
    pub fn snapshot(&self) -> IoapicSnapshot<PINS> {
        IoapicSnapshot::new(*self.config(), &self.state())
    }

    /// Replaces this I/O APIC (configuration included) with the snapshot,
    /// verbatim: nothing is re-injected and no rescan is requested, because
    /// the restored object is exactly the captured one. On error nothing
    /// changes.
    pub fn restore_snapshot(&mut self, s: &IoapicSnapshot<PINS>) -> Result<(), SnapshotError> {
        s.validate()?;
        self.restore_exact(s.config, &s.state());
        Ok(())
    }

    /// A new I/O APIC equal to the captured one.
    pub fn from_snapshot(s: &IoapicSnapshot<PINS>) -> Result<Self, SnapshotError> {
        let mut io = Ioapic::new(s.config);
        io.restore_snapshot(s)?;
        Ok(io)
    }
}

// ---- local APIC ---------------------------------------------------------------

/// Everything a [`LocalApic`] holds (the highest-ISR cache is derived and
/// recomputed on restore).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct LocalApicState {
    /// [`SNAPSHOT_VERSION`].
    pub version: u16,
    /// Initial APIC ID: the x2APIC ID (KVM: the vCPU ID).
    pub initial_id: u32,
    /// xAPIC ID register bits 31:24.
    pub xapic_id: u8,
    /// xAPIC, x2APIC or hardware-disabled (IA32_APIC_BASE bits 11:10).
    pub mode: ApicMode,
    /// Logical destination register.
    pub ldr: u32,
    /// Destination format register.
    pub dfr: u32,
    /// Spurious-interrupt vector register.
    pub svr: u32,
    /// Task priority register.
    pub tpr: u8,
    /// Directed EOI advertised (version register bit 24).
    pub directed_eoi_supported: bool,
    /// Interrupt request register.
    pub irr: VectorSet,
    /// In-service register.
    pub isr: VectorSet,
    /// Trigger mode register.
    pub tmr: VectorSet,
}

/// SVR bits the model can hold (KVM's write mask plus bit 12).
const SVR_VALID: u32 = 0x3FF | Svr::SUPPRESS_EOI_BROADCAST.bits();

impl LocalApicState {
    /// Checks everything [`LocalApic::restore_snapshot`] checks.
    pub fn validate(&self) -> Result<(), SnapshotError> {
        check_version(self.version)?;
        for (register, set) in [
            (ApicRegister::Irr, &self.irr),
            (ApicRegister::Isr, &self.isr),
        ] {
            if let Some(v) = set.lowest().filter(|v| v.is_reserved()) {
                return Err(SnapshotError::IllegalVector {
                    vcpu: None,
                    register,
                    vector: v.get(),
                });
            }
        }
        let bad = |register, value: u32| {
            Err(SnapshotError::InvalidRegister {
                vcpu: None,
                register,
                value: value as u64,
            })
        };
        if self.svr & !SVR_VALID != 0 {
            return bad("SVR", self.svr);
        }
        if self.dfr & 0x0FFF_FFFF != 0x0FFF_FFFF {
            return bad("DFR", self.dfr);
        }
        if self.mode == ApicMode::X2Apic && self.ldr != x2apic_ldr(self.initial_id) {
            return bad("LDR", self.ldr);
        }
        Ok(())
    }

    fn apply(&self, apic: &mut LocalApic) {
        apic.initial_id = self.initial_id;
        apic.xapic_id = self.xapic_id;
        apic.mode = self.mode;
        apic.ldr = self.ldr;
        apic.dfr = self.dfr;
        apic.svr = self.svr;
        apic.tpr = self.tpr;
        apic.directed_eoi_supported = self.directed_eoi_supported;
        apic.irr = self.irr;
        apic.isr = self.isr;
        apic.tmr = self.tmr;
        apic.recompute_caches();
    }
}

impl LocalApic {
    /// A snapshot of the whole state.
    pub fn snapshot(&self) -> LocalApicState {
        LocalApicState {
            version: SNAPSHOT_VERSION,
            initial_id: self.initial_id,
            xapic_id: self.xapic_id,
            mode: self.mode,
            ldr: self.ldr,
            dfr: self.dfr,
            svr: self.svr,
            tpr: self.tpr,
            directed_eoi_supported: self.directed_eoi_supported,
            irr: self.irr,
            isr: self.isr,
            tmr: self.tmr,
        }
    }

    /// Replaces this LAPIC's state with the snapshot. On error nothing
    /// changes.
    pub fn restore_snapshot(&mut self, s: &LocalApicState) -> Result<(), SnapshotError> {
        s.validate()?;
        s.apply(self);
        Ok(())
    }

    /// A new LAPIC equal to the captured one.
    pub fn from_snapshot(s: &LocalApicState) -> Result<Self, SnapshotError> {
        let mut apic = LocalApic::new(crate::ApicId::new(s.initial_id));
        apic.restore_snapshot(s)?;
        Ok(apic)
    }
}

// ---- irqchip -----------------------------------------------------------------

/// One vCPU of an [`IrqchipSnapshot`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct VcpuSnapshot {
    /// Its local APIC.
    pub apic: LocalApicState,
    /// Its EOI-exit map.
    pub map: EoiExitMapState,
    /// Its counters.
    pub stats: VcpuStats,
}

/// Everything an [`Irqchip`] holds: configuration, I/O APIC, every vCPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct IrqchipSnapshot<const VCPUS: usize, const PINS: usize = 24> {
    /// [`SNAPSHOT_VERSION`].
    pub version: u16,
    /// `VCPUS` when captured.
    pub vcpus: u16,
    /// The chip's configuration (policy, ack notifier pins, RTC tracking,
    /// EOI order, arbitration, I/O APIC configuration).
    pub config: IrqchipConfig,
    /// The I/O APIC.
    pub ioapic: IoapicSnapshot<PINS>,
    /// Every vCPU, by index.
    #[cfg_attr(feature = "serde", serde(with = "array"))]
    pub vcpu: [VcpuSnapshot; VCPUS],
}

impl<const VCPUS: usize, const PINS: usize> IrqchipSnapshot<VCPUS, PINS> {
    /// Checks everything [`Irqchip::restore_snapshot`] checks.
    pub fn validate(&self) -> Result<(), SnapshotError> {
        check_version(self.version)?;
        if self.vcpus as usize != VCPUS {
            return Err(SnapshotError::VcpuCount {
                expected: VCPUS,
                found: self.vcpus as usize,
            });
        }
        self.ioapic.validate()?;
        if self.ioapic.config != self.config.ioapic {
            return Err(SnapshotError::ConfigMismatch {
                what: "the I/O APIC snapshot's configuration differs from the irqchip's",
            });
        }
        if let Some(pin) = first_pin_beyond(&self.config.ack_notifier_pins, PINS) {
            return Err(SnapshotError::PinOutOfRange {
                what: "ack_notifier_pins",
                pin,
            });
        }
        for (i, v) in self.vcpu.iter().enumerate() {
            let at = |e: SnapshotError| e.at_vcpu(i as u16);
            v.apic.validate().map_err(at)?;
            if v.map.policy() != self.config.policy {
                return Err(SnapshotError::PolicyMismatch {
                    vcpu: i as u16,
                    expected: self.config.policy,
                    found: v.map.policy(),
                });
            }
            v.map.validate_with(&v.apic).map_err(at)?;
        }
        Ok(())
    }
}

impl VcpuState {
    fn snapshot(&self) -> VcpuSnapshot {
        VcpuSnapshot {
            apic: self.apic.snapshot(),
            map: self.map.state(),
            stats: self.stats,
        }
    }
}

impl<const VCPUS: usize, const PINS: usize> Irqchip<VCPUS, PINS> {
    /// A consistent snapshot: takes the I/O APIC lock, then every vCPU's in
    /// index order (the documented lock order), so no call is half-seen.
    pub fn snapshot(&self) -> IrqchipSnapshot<VCPUS, PINS> {
        let (io, vcpus) = self.lock_all();
        IrqchipSnapshot {
            version: SNAPSHOT_VERSION,
            vcpus: VCPUS as u16,
            config: *self.config(),
            ioapic: io.snapshot(),
            vcpu: core::array::from_fn(|i| vcpus[i].snapshot()),
        }
    }

    /// Replaces the whole chip (configuration included) with the snapshot,
    /// verbatim: no re-injection, no rescan. The VMM MUST load each vCPU's
    /// VMCS bitmap ([`Irqchip::vmcs_update`], or the whole
    /// [`EoiExitMap::loaded`] bitmap into a fresh VMCS) before it runs, and
    /// re-arm its `deliver_later` timers. On error nothing changes.
    pub fn restore_snapshot(
        &mut self,
        s: &IrqchipSnapshot<VCPUS, PINS>,
    ) -> Result<(), SnapshotError> {
        s.validate()?;
        let (config, io, vcpus) = self.parts_mut();
        *config = s.config;
        io.restore_exact(s.ioapic.config, &s.ioapic.state());
        for (slot, v) in vcpus.iter_mut().zip(s.vcpu.iter()) {
            let st = slot.get_mut();
            v.apic.apply(&mut st.apic);
            st.map.set_state(&v.map);
            st.stats = v.stats;
        }
        // APIC IDs and logical addressing came back verbatim: the physical
        // destination table must follow them.
        self.rebuild_phys_map();
        Ok(())
    }

    /// A new chip equal to the captured one.
    pub fn from_snapshot(s: &IrqchipSnapshot<VCPUS, PINS>) -> Result<Self, SnapshotError> {
        s.validate()?;
        let mut chip = Irqchip::with_apics(
            s.config,
            core::array::from_fn(|i| LocalApic::new(crate::ApicId::new(i as u32))),
        );
        chip.restore_snapshot(s)?;
        Ok(chip)
    }
}
