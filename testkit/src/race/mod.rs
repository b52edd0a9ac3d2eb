//! The race operation language and the invariant checker.
//!
//! An [`Op`] is one thing that can happen to an [`Irqchip`]: a guest write of a
//! redirection-entry field, a device raising or lowering a line, an MSI, the
//! guest on vCPU `c` taking (ack) or finishing (EOI) an interrupt, a pending
//! rescan request being processed, a VM entry loading the VMCS, a snapshot and
//! its restore, and a few policy-specific events. A [`Harness`] applies ops to
//! one [`Irqchip`] and checks, after every op, the invariants of ARCHITECTURE.md
//! section 7 with bookkeeping of its own (it never trusts the crate's
//! [`EoiExitMap`](eoi_exit::EoiExitMap) internals):
//!
//! * **No lost EOI.** The checker tags every interrupt *instance* a vCPU accepts
//!   with its source. An instance from a level I/O APIC entry is *necessary*
//!   while it belongs to the pin's current remote-IRR cycle and the entry still
//!   waits for an EOI of that vector (level, same vector, remote IRR set); an
//!   instance from a pin with an ack notifier, or from the RTC pin under RTC
//!   tracking, is always necessary. A necessary instance retired by an EOI that
//!   did not exit is a [`Violation::LostEoi`]. Whether the EOI exits is decided
//!   as hardware decides it: by the bitmap last loaded into the VMCS.
//! * **Remote IRR consistency.** It is never set on an edge entry; it goes from
//!   clear to set only when the entry delivers (level, unmasked, asserted); it
//!   goes from set to clear only by a forwarded EOI of the entry's vector, a
//!   switch to edge, or a restore; and while set, some vCPU still holds an
//!   instance of the current cycle (unless the cycle was orphaned: delivered to
//!   no LAPIC, its vector rewritten in flight, or its EOI already reported lost).
//! * **TMR changes only on acceptance** of the vector on that vCPU.
//! * **VMCS updates are the diff**: `vmcs_update` returns exactly the 64-bit
//!   words that differ from what the checker knows is loaded, and a vCPU the
//!   VMM was not told to reload never runs with a bitmap different from the
//!   one the crate computed.
//! * **Bitmap inclusion** `Exact ⊆ KvmHighestStale ⊆ KvmLegacy`, checked by
//!   [`Lockstep`] over three Irqchips fed the same ops.
//!
//! Everything here is `no_std` without allocation: op sequences are slices,
//! the checker's state is fixed-size. The proptest `Strategy`
//! is behind feature `proptest` (module `proptest_support`), `arbitrary::Arbitrary` for [`Op`] behind
//! feature `arbitrary`.
//!
//! # Snapshot and restore
//!
//! [`Op::Snapshot`] copies the architectural state (the I/O APIC and every
//! local APIC, as `KVM_GET_IRQCHIP` / `KVM_GET_LAPIC` would) plus the checker's
//! bookkeeping. [`Op::Restore`] builds a fresh [`Irqchip`] from it the way a
//! VMM restores a migrated VM: the EOI-exit maps are *not* part of the
//! snapshot, they are rebuilt by a rescan of every vCPU, every VMCS starts
//! empty and every vCPU must load its bitmap before it runs.
//!
//! # Deferred rescans
//!
//! [`Irqchip`] rescans the targets of a redirection write before it delivers,
//! and the rescan an EOI requests inside [`Irqchip::guest_eoi`]. The harness
//! models the hardware side: a vCPU named in [`Effects::reload`] is *kicked*
//! (out of guest mode, as KVM's `KVM_REQ_SCAN_IOAPIC` with `KVM_REQUEST_WAIT`
//! guarantees) and loads its VMCS at its next [`Op::Enter`] (implied before its
//! next guest op). Interception is decided from the loaded VMCS words.
//! With [`Kick::Reload`] only the documented duty is followed (accepted
//! interrupts are posted to running vCPUs); the default
//! [`Kick::ReloadAndDeliveries`] also kicks every vCPU that accepted one.
//!
//! # Known losses and gaps (what the checker found)
//!
//! * [`LossCause::VectorRewrittenInFlight`] (`KvmLegacy`, `KvmHighestStale`,
//!   i.e. real KVM): pin 0 level `0x31` delivered to vCPU0; the guest writes
//!   vector `0x41` (vCPU0 rescanned, `0x31` is in no entry so KVM drops it),
//!   destination vCPU1 (vCPU0 rescanned again), vector `0x31` back (only
//!   vCPU1 is a target and rescanned); vCPU0's EOI of `0x31` no longer exits
//!   although a LAPIC broadcast would clear pin 0's remote IRR: it stays set.
//! * [`LossCause::SharedWithEdge`] (`TmrDriven`, by design): an edge interrupt
//!   of a vector whose level instance is in service clears the bit.
//! * [`InclusionGap`]: why `Exact ⊆ KvmHighestStale ⊆ KvmLegacy` fails.
//!
//! # The wrong request order cannot lose an EOI in this Irqchip
//!
//! [`EoiOrder::RescanThenForward`] rescans before [`Ioapic::eoi`]. Only
//! `KvmHighestStale` ever asks for a rescan on EOI. The scan reads the entries'
//! vector, trigger, destination and (for `Exact`'s masked rule, not used by
//! KVM policies) mask and remote IRR, and the LAPIC's IRR/ISR. Forwarding the
//! EOI changes only remote IRR and re-delivers level entries of that vector
//! to their *current* destinations. Every redirection write rescans its old
//! and new targets before it delivers, so every vCPU a level entry targets has
//! that vector routed at its last scan; a re-delivery therefore lands only
//! where the vector is already in the bitmap, whichever order ran. The orders
//! differ only in the `stale`/`highest_stale` bookkeeping (a re-delivered
//! vector shared with an entry routed elsewhere counts as stale only when the
//! rescan runs second), which changes when later rescans happen, not which
//! needed bits are set. The model check confirms it over every interleaving
//! it explores and shows the checker bites on [`Mutant::ScanIgnoresPending`].

use core::fmt;
use core::hash::{Hash, Hasher};

use eoi_exit::exit_bitmap::{ScanEntry, Source};
use eoi_exit::ioapic::{IOEOI, IoapicConfig, IoapicVersion, MMIO_LEN, PinSet, RedirectionEntry};
use eoi_exit::irqchip::{Arbitration, Effects, EoiForwarding, EoiOrder, VcpuState, VcpuStats};
use eoi_exit::lapic::{ApicMode, LocalApic};
use eoi_exit::types::{
    DeliveryMode, Destination, DestinationMode, InterruptMessage, Pin, RTC_GSI, TriggerMode, VcpuId,
};
use eoi_exit::vector::{Vector, VectorSet};
use eoi_exit::{Ioapic, Irqchip, IrqchipConfig, Policy};

mod ioapic_check;
#[cfg(feature = "proptest")]
pub mod proptest_support;
mod rng;

pub use ioapic_check::{IoapicStep, check_ioapic_state, check_ioapic_step, expected_iowin};
pub use rng::SplitMix64;

/// One field of a redirection entry, with its new value.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum Field {
    /// Bits 7:0.
    Vector(u8),
    /// Bits 10:8 (only the low 3 bits are used).
    DeliveryMode(u8),
    /// Bit 11: logical destination mode.
    Logical(bool),
    /// Bit 13: active low.
    ActiveLow(bool),
    /// Bit 15: level triggered.
    Level(bool),
    /// Bit 16: masked.
    Masked(bool),
    /// Bits 63:56: destination.
    Dest(u8),
}

impl Field {
    /// `entry` with this field replaced.
    pub const fn apply(self, entry: u64) -> u64 {
        const fn bit(e: u64, b: u64, on: bool) -> u64 {
            if on { e | b } else { e & !b }
        }
        match self {
            Field::Vector(v) => (entry & !0xff) | v as u64,
            Field::DeliveryMode(m) => (entry & !(7 << 8)) | ((m as u64 & 7) << 8),
            Field::Logical(on) => bit(entry, RedirectionEntry::LOGICAL, on),
            Field::ActiveLow(on) => bit(entry, RedirectionEntry::POLARITY_LOW, on),
            Field::Level(on) => bit(entry, RedirectionEntry::LEVEL, on),
            Field::Masked(on) => bit(entry, RedirectionEntry::MASK, on),
            Field::Dest(d) => (entry & !(0xff << 56)) | (d as u64) << 56,
        }
    }
}

/// One event of the race language. Pin and vCPU numbers are taken modulo the
/// harness's `PINS` and `VCPUS`, so every value is valid.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum Op {
    /// The guest rewrites one field of a redirection entry (one IOWIN write).
    Write {
        /// The pin.
        pin: u8,
        /// The field and its new value.
        field: Field,
    },
    /// Host-side write of a whole entry (raw 64 bits, read-only bits included).
    WriteEntry {
        /// The pin.
        pin: u8,
        /// The raw value.
        value: u64,
    },
    /// Any guest MMIO write to the I/O APIC window.
    Mmio {
        /// Offset (decoded modulo the 256-byte window).
        offset: u8,
        /// Access size in bytes.
        size: u8,
        /// Value written.
        value: u32,
    },
    /// A device sets a pin's electrical level.
    SetLine {
        /// The pin.
        pin: u8,
        /// The level.
        high: bool,
    },
    /// An MSI, fixed delivery, physical destination.
    Msi {
        /// Destination APIC ID (0xFF broadcasts).
        dest: u8,
        /// Vector.
        vector: u8,
        /// Level-triggered MSI.
        level: bool,
    },
    /// vCPU `vcpu` accepts an edge interrupt (an IPI or edge MSI aimed at it).
    Accept {
        /// The vCPU.
        vcpu: u8,
        /// Vector.
        vector: u8,
    },
    /// The guest on `vcpu` takes its highest deliverable interrupt (INTA).
    Ack {
        /// The vCPU.
        vcpu: u8,
    },
    /// The guest on `vcpu` writes EOI.
    Eoi {
        /// The vCPU.
        vcpu: u8,
    },
    /// A pending rescan request (`KVM_REQ_SCAN_IOAPIC`) of `vcpu` is processed.
    Rescan {
        /// The vCPU.
        vcpu: u8,
    },
    /// `vcpu` enters the guest: it loads its VMCS update.
    Enter {
        /// The vCPU.
        vcpu: u8,
    },
    /// Save the architectural state (replaces an earlier snapshot).
    Snapshot,
    /// Restore the last snapshot into a fresh Irqchip (nothing without one).
    Restore,
    /// The EOI-storm timer of `pin` fired.
    DeliverLater {
        /// The pin.
        pin: u8,
    },
    /// The guest writes `vcpu`'s LDR (logical ID in bits 31:24): the APIC map
    /// changes and every vCPU is rescanned (KVM's map recalculation).
    Ldr {
        /// The vCPU.
        vcpu: u8,
        /// The 8-bit logical ID.
        logical_id: u8,
    },
    /// The guest writes `vcpu`'s TPR (changes what `Ack` may take).
    Tpr {
        /// The vCPU.
        vcpu: u8,
        /// The TPR.
        tpr: u8,
    },
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Field::Vector(v) => write!(f, "vector={v:#04x}"),
            Field::DeliveryMode(m) => write!(f, "delivery_mode={}", m & 7),
            Field::Logical(b) => write!(f, "dest_mode={}", if b { "logical" } else { "physical" }),
            Field::ActiveLow(b) => write!(f, "polarity={}", if b { "low" } else { "high" }),
            Field::Level(b) => write!(f, "trigger={}", if b { "level" } else { "edge" }),
            Field::Masked(b) => write!(f, "{}", if b { "masked" } else { "unmasked" }),
            Field::Dest(d) => write!(f, "dest={d}"),
        }
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Op::Write { pin, field } => write!(f, "write pin{pin} {field}"),
            Op::WriteEntry { pin, value } => write!(f, "write pin{pin} entry={value:#018x}"),
            Op::Mmio {
                offset,
                size,
                value,
            } => write!(f, "mmio write [{offset:#04x}]/{size} = {value:#x}"),
            Op::SetLine { pin, high } => {
                write!(f, "line pin{pin} {}", if high { "high" } else { "low" })
            }
            Op::Msi {
                dest,
                vector,
                level,
            } => write!(
                f,
                "msi {vector:#04x} {} -> apic {dest}",
                if level { "level" } else { "edge" }
            ),
            Op::Accept { vcpu, vector } => write!(f, "vCPU{vcpu} accepts edge {vector:#04x}"),
            Op::Ack { vcpu } => write!(f, "vCPU{vcpu} ack"),
            Op::Eoi { vcpu } => write!(f, "vCPU{vcpu} EOI"),
            Op::Rescan { vcpu } => write!(f, "vCPU{vcpu} rescan"),
            Op::Enter { vcpu } => write!(f, "vCPU{vcpu} enter (load VMCS)"),
            Op::Snapshot => write!(f, "snapshot"),
            Op::Restore => write!(f, "restore"),
            Op::DeliverLater { pin } => write!(f, "deliver-later timer pin{pin}"),
            Op::Ldr { vcpu, logical_id } => write!(f, "vCPU{vcpu} LDR={logical_id:#04x}"),
            Op::Tpr { vcpu, tpr } => write!(f, "vCPU{vcpu} TPR={tpr:#04x}"),
        }
    }
}

/// Displays an op sequence one numbered op per line.
pub struct Trace<'a>(pub &'a [Op]);

impl fmt::Display for Trace<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, op) in self.0.iter().enumerate() {
            writeln!(f, "  {:2}. {op}", i + 1)?;
        }
        Ok(())
    }
}

/// When the harness's VMM kicks a vCPU out of guest mode (so that it loads
/// its VMCS update before it runs guest code again).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum Kick {
    /// Only the vCPUs in [`Effects::reload`] (the documented duty). Accepted
    /// interrupts are *posted* to a running vCPU without a VM entry.
    Reload,
    /// The reload vCPUs and every vCPU that accepted an interrupt.
    #[default]
    ReloadAndDeliveries,
}

/// What a [`Harness`] is built with.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct HarnessConfig {
    /// The Irqchip's configuration (policy, EOI order, ack notifiers, RTC).
    pub chip: IrqchipConfig,
    /// When vCPUs are kicked.
    pub kick: Kick,
    /// Whether an intercepted EOI of an *edge* vector (TMR clear) may clear
    /// remote IRR. `true` tolerates KVM split-irqchip + QEMU behaviour (KVM
    /// exits to userspace whatever TMR says, QEMU clears remote IRR); `false`
    /// holds ARCHITECTURE.md section 7 strictly (only a level EOI, which is what a
    /// LAPIC broadcasts, clears it).
    pub edge_eoi_clears_remote_irr: bool,
    /// A bug planted on purpose, to show the checker bites.
    pub mutant: Option<Mutant>,
    /// Lost EOIs of these causes are recorded in [`Checker::tolerated_loss`]
    /// instead of failing the step.
    pub tolerate: Tolerated,
    /// Every kicked vCPU re-enters (loads its VMCS) right after each op. A
    /// kicked vCPU runs no guest code until it enters and then loads the
    /// bitmap current at that time, so this loses no interception behaviour;
    /// it shrinks the state space of the model check.
    pub eager_enter: bool,
}

/// Bugs the harness can plant in the VMM around the Irqchip, so tests can show
/// that the checker finds them.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Mutant {
    /// Every rescan is redone without the "pending in IRR or ISR" check, as
    /// KVM scanned before commits 0fc5a36dd6b3 / fceb3a36c29a: an entry
    /// rerouted away while its interrupt is in flight loses that EOI (with the
    /// KVM policies; `Exact` keeps in-flight instances by its own tracking).
    ScanIgnoresPending,
}

impl HarnessConfig {
    /// KVM's request order, default I/O APIC, no ack notifier, no RTC
    /// tracking, vCPUs kicked on reload and on delivery.
    pub const fn new(policy: Policy) -> Self {
        HarnessConfig {
            chip: IrqchipConfig {
                policy,
                ioapic: IoapicConfig::DEFAULT,
                ack_notifier_pins: PinSet::EMPTY,
                rtc_tracking: false,
                eoi_order: EoiOrder::ForwardThenRescan,
                arbitration: Arbitration::KvmVectorHashing,
                // The checker's remote-IRR model follows KVM's split irqchip,
                // where every intercepted EOI reaches the I/O APIC.
                eoi_forwarding: EoiForwarding::AllIntercepted,
            },
            kick: Kick::ReloadAndDeliveries,
            edge_eoi_clears_remote_irr: true,
            mutant: None,
            tolerate: Tolerated::NONE,
            eager_enter: false,
        }
    }

    /// With every kicked vCPU entering right after each op.
    pub const fn eager(mut self) -> Self {
        self.eager_enter = true;
        self
    }

    /// Tolerating lost EOIs of `c`.
    pub const fn tolerating(mut self, c: LossCause) -> Self {
        self.tolerate = self.tolerate.with(c);
        self
    }

    /// Tolerates the loss causes the configured policy is known to have (see
    /// [`LossCause`]): `KvmLegacy` and `KvmHighestStale` lose EOIs of vectors
    /// rewritten in flight, `TmrDriven` those of vectors shared with an edge
    /// source, `NoIntercept` every kind, `Exact` none. The property tests,
    /// the model check and the fuzz harnesses all use this one list.
    pub const fn tolerating_known_losses(self) -> Self {
        match self.chip.policy {
            Policy::KvmLegacy | Policy::KvmHighestStale => {
                self.tolerating(LossCause::VectorRewrittenInFlight)
            }
            Policy::TmrDriven => self.tolerating(LossCause::SharedWithEdge),
            Policy::NoIntercept => self
                .tolerating(LossCause::Plain)
                .tolerating(LossCause::SharedWithEdge)
                .tolerating(LossCause::VectorRewrittenInFlight),
            Policy::Exact => self,
        }
    }

    /// With a planted bug.
    pub const fn with_mutant(mut self, m: Mutant) -> Self {
        self.mutant = Some(m);
        self
    }

    /// With remote IRR cleared only by level EOIs (ARCHITECTURE.md section 7).
    pub const fn strict_edge_eoi(mut self) -> Self {
        self.edge_eoi_clears_remote_irr = false;
        self
    }

    /// With another EOI order.
    pub const fn with_order(mut self, order: EoiOrder) -> Self {
        self.chip.eoi_order = order;
        self
    }

    /// With another kick rule.
    pub const fn with_kick(mut self, kick: Kick) -> Self {
        self.kick = kick;
        self
    }
}

/// What set a lost EOI up, so known policy limitations can be told apart
/// from plain losses.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum LossCause {
    /// Nothing unusual: the entry kept its vector, the vector's TMR bit still
    /// says level. No policy but `NoIntercept` may lose such an EOI.
    /// (When several conditions set a loss up, the first of
    /// `VectorRewrittenInFlight`, `SharedWithEdge` is reported.)
    Plain,
    /// The guest rewrote the entry's vector while the instance was in flight
    /// (remote IRR set) and later wrote it back, so the EOI matters again.
    /// KVM's scan only sees vectors of current entries and rescans only the
    /// write's old and new destination, so the vCPU holding the instance
    /// may not be rescanned when the vector comes back.
    VectorRewrittenInFlight,
    /// An edge interrupt with the same vector was accepted after the level
    /// instance, so TMR says edge at its EOI: a LAPIC would not broadcast
    /// that EOI either, and `TmrDriven` (set on level, clear on edge
    /// acceptance) has cleared the bit.
    SharedWithEdge,
}

impl LossCause {
    const fn bit(self) -> u8 {
        match self {
            LossCause::Plain => 1,
            LossCause::VectorRewrittenInFlight => 2,
            LossCause::SharedWithEdge => 4,
        }
    }
}

/// A set of [`LossCause`]s. A harness tolerates a lost EOI (records it
/// instead of failing) when any condition that set it up is tolerated, or,
/// for a plain loss, when [`LossCause::Plain`] is.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
pub struct Tolerated(u8);

impl Tolerated {
    /// Nothing tolerated.
    pub const NONE: Tolerated = Tolerated(0);
    /// With `c` added.
    pub const fn with(self, c: LossCause) -> Self {
        Tolerated(self.0 | c.bit())
    }
    /// Whether `c` is tolerated.
    pub const fn contains(self, c: LossCause) -> bool {
        self.0 & c.bit() != 0
    }

    /// The cause reported for a loss set up by these conditions.
    const fn primary(self) -> LossCause {
        if self.contains(LossCause::VectorRewrittenInFlight) {
            LossCause::VectorRewrittenInFlight
        } else if self.contains(LossCause::SharedWithEdge) {
            LossCause::SharedWithEdge
        } else {
            LossCause::Plain
        }
    }
}

/// An invariant the checker found broken.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Violation {
    /// A necessary EOI did not exit: the I/O APIC (or ack notifier) never sees it.
    LostEoi {
        /// The vCPU.
        vcpu: u16,
        /// The vector retired.
        vector: u8,
        /// The pin the instance came from.
        pin: u8,
        /// What set the loss up.
        cause: LossCause,
    },
    /// Remote IRR is set on an edge entry.
    RemoteIrrOnEdge {
        /// The pin.
        pin: u8,
    },
    /// Remote IRR went from clear to set although the entry could not deliver.
    RemoteIrrSetWithoutDelivery {
        /// The pin.
        pin: u8,
    },
    /// Remote IRR went from set to clear without an EOI of its vector, a
    /// switch to edge or a restore.
    RemoteIrrClearedWithoutEoi {
        /// The pin.
        pin: u8,
    },
    /// Remote IRR is set but no vCPU holds an instance of its cycle.
    RemoteIrrStuck {
        /// The pin.
        pin: u8,
    },
    /// A TMR bit changed on a vCPU that did not accept that vector.
    TmrChangedWithoutAcceptance {
        /// The vCPU.
        vcpu: u16,
        /// The vector.
        vector: u8,
    },
    /// `vmcs_update` did not return exactly the changed words.
    VmcsUpdateNotDiff {
        /// The vCPU.
        vcpu: u16,
    },
    /// A vCPU that was not kicked has a bitmap that differs from its loaded
    /// VMCS words: its guest runs with a stale EOI-exit bitmap.
    StaleVmcs {
        /// The vCPU.
        vcpu: u16,
        /// The lowest vector that differs.
        vector: u8,
    },
    /// The crate's EOI decision differs from the loaded VMCS bitmap.
    InterceptMismatch {
        /// The vCPU.
        vcpu: u16,
        /// The vector.
        vector: u8,
    },
    /// `lower`'s bitmap has a vector that `upper`'s lacks, after the same ops.
    Inclusion {
        /// The vCPU.
        vcpu: u16,
        /// The vector.
        vector: u8,
        /// The policy that should be the subset.
        lower: Policy,
        /// The policy that should be the superset.
        upper: Policy,
    },
    /// The checker's fixed instance table overflowed (not a crate bug).
    CheckerCapacity,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Violation::LostEoi {
                vcpu,
                vector,
                pin,
                cause,
            } => write!(
                f,
                "lost EOI ({cause:?}): vCPU{vcpu} retired {vector:#04x} from pin{pin} without a VM exit"
            ),
            Violation::RemoteIrrOnEdge { pin } => write!(f, "remote IRR set on edge pin{pin}"),
            Violation::RemoteIrrSetWithoutDelivery { pin } => {
                write!(f, "remote IRR of pin{pin} set without a delivery")
            }
            Violation::RemoteIrrClearedWithoutEoi { pin } => {
                write!(f, "remote IRR of pin{pin} cleared without an EOI")
            }
            Violation::RemoteIrrStuck { pin } => {
                write!(f, "remote IRR of pin{pin} set with no instance in flight")
            }
            Violation::TmrChangedWithoutAcceptance { vcpu, vector } => {
                write!(
                    f,
                    "TMR bit {vector:#04x} of vCPU{vcpu} changed without acceptance"
                )
            }
            Violation::VmcsUpdateNotDiff { vcpu } => {
                write!(f, "VMCS update of vCPU{vcpu} is not the diff")
            }
            Violation::StaleVmcs { vcpu, vector } => write!(
                f,
                "vCPU{vcpu} runs with a stale VMCS bitmap (bit {vector:#04x}) it was never told to reload"
            ),
            Violation::InterceptMismatch { vcpu, vector } => write!(
                f,
                "vCPU{vcpu}: EOI of {vector:#04x} decided against the loaded VMCS bitmap"
            ),
            Violation::Inclusion {
                vcpu,
                vector,
                lower,
                upper,
            } => write!(
                f,
                "vCPU{vcpu}: {} has {vector:#04x}, {} does not",
                lower.name(),
                upper.name()
            ),
            Violation::CheckerCapacity => write!(f, "checker instance table full"),
        }
    }
}

/// Instances a vCPU may hold at once in the checker's table.
pub const MAX_INSTANCES: usize = 24;

/// Why an instance needs its EOI.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, PartialOrd, Ord)]
pub enum Need {
    /// A level entry's remote-IRR cycle waits for it (while the entry is
    /// level with that vector and remote IRR set).
    Level,
    /// The pin's ack notifier waits for it (while the entry has that vector:
    /// KVM calls ack notifiers from the I/O APIC's EOI path, which matches
    /// entries by their current vector).
    AckNotifier,
    /// KVM's RTC EOI tracking waits for it (always: KVM remembers the vector
    /// per vCPU at delivery, commit 4d99ba898dd0).
    Rtc,
}

/// One necessary interrupt instance the checker follows.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, PartialOrd, Ord)]
pub struct Instance {
    /// The vector it was accepted with.
    pub vector: u8,
    /// In ISR (acked) rather than IRR.
    pub in_service: bool,
    /// The pin it came from.
    pub pin: u8,
    /// Why it is necessary.
    pub need: Need,
    /// It belongs to the pin's current remote-IRR cycle.
    pub current: bool,
    /// The pin's vector was rewritten while it was outstanding.
    pub moved: bool,
}

/// The checker's own bookkeeping (fixed size, hashable).
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct Checker<const VCPUS: usize> {
    /// Necessary instances per vCPU, kept sorted.
    pub instances: [heapless::Vec<Instance, MAX_INSTANCES>; VCPUS],
    /// Pins whose current cycle is orphaned (remote IRR may stay set).
    pub orphan: PinSet,
    /// The VMCS EOI-exit bitmap words as loaded (what hardware uses).
    pub hw: [[u64; 4]; VCPUS],
    /// vCPUs out of guest mode that must load their VMCS before running.
    pub kicked: [bool; VCPUS],
    /// A lost EOI of a tolerated cause happened.
    pub tolerated_loss: bool,
}

impl<const VCPUS: usize> Default for Checker<VCPUS> {
    fn default() -> Self {
        Checker {
            instances: core::array::from_fn(|_| heapless::Vec::new()),
            orphan: PinSet::EMPTY,
            hw: [[0; 4]; VCPUS],
            // The Irqchip scanned at construction: every vCPU starts out of
            // guest mode and loads before it runs.
            kicked: [true; VCPUS],
            tolerated_loss: false,
        }
    }
}

/// Architectural state saved by [`Op::Snapshot`].
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Saved<const VCPUS: usize, const PINS: usize> {
    /// The I/O APIC.
    pub ioapic: Ioapic<PINS>,
    /// The local APICs.
    pub apics: [LocalApic; VCPUS],
    /// The checker's bookkeeping.
    pub checker: Checker<VCPUS>,
}

/// What one op did (for reporting).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct StepInfo {
    /// For [`Op::Eoi`]: the vector retired and whether the EOI exited.
    pub eoi: Option<(Vector, bool)>,
    /// Number of interrupts accepted.
    pub accepted: u32,
}

/// One Irqchip under the invariant checker.
pub struct Harness<const VCPUS: usize, const PINS: usize = 24> {
    config: HarnessConfig,
    chip: Irqchip<VCPUS, PINS>,
    checker: Checker<VCPUS>,
    saved: Option<Saved<VCPUS, PINS>>,
}

impl<const VCPUS: usize, const PINS: usize> fmt::Debug for Harness<VCPUS, PINS> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Harness")
            .field("config", &self.config)
            .field("checker", &self.checker)
            .finish_non_exhaustive()
    }
}

impl<const VCPUS: usize, const PINS: usize> Harness<VCPUS, PINS> {
    /// A fresh Irqchip (every entry masked, vCPU `i` has xAPIC ID `i`).
    pub fn new(config: HarnessConfig) -> Self {
        Harness {
            config,
            chip: Irqchip::new(config.chip, ApicMode::XApic),
            checker: Checker::default(),
            saved: None,
        }
    }

    /// A fresh Irqchip whose pins are then programmed with `entries` (host
    /// writes, in pin order; lines stay low).
    pub fn with_entries(config: HarnessConfig, entries: &[u64]) -> Self {
        let mut h = Self::new(config);
        for (pin, &e) in entries.iter().enumerate().take(PINS) {
            h.step(Op::WriteEntry {
                pin: pin as u8,
                value: e,
            })
            .expect("programming entries cannot break an invariant");
        }
        h
    }

    /// The configuration.
    pub fn config(&self) -> &HarnessConfig {
        &self.config
    }

    /// The Irqchip under test.
    pub fn chip(&self) -> &Irqchip<VCPUS, PINS> {
        &self.chip
    }

    /// The checker's bookkeeping.
    pub fn checker(&self) -> &Checker<VCPUS> {
        &self.checker
    }

    /// The current EOI-exit bitmap of `vcpu` (as the crate computes it).
    pub fn bitmap(&self, vcpu: usize) -> VectorSet {
        self.chip
            .vcpu(VcpuId::new(vcpu as u16))
            .map(|v| *v.map.bitmap())
            .unwrap_or_default()
    }

    /// An exact copy (counters reset).
    pub fn fork(&self) -> Self {
        let chip = self.chip.clone();
        for i in 0..VCPUS {
            chip.vcpu(VcpuId::new(i as u16)).expect("in range").stats = VcpuStats::default();
        }
        Harness {
            config: self.config,
            chip,
            checker: self.checker.clone(),
            saved: self.saved.clone(),
        }
    }

    fn vstate(&self, i: usize) -> VcpuState {
        *self.chip.vcpu(VcpuId::new(i as u16)).expect("in range")
    }

    /// Applies every op in order; stops at the first violation and returns it
    /// with the index of the op that caused it.
    pub fn run(&mut self, ops: &[Op]) -> Result<(), (usize, Violation)> {
        for (i, op) in ops.iter().enumerate() {
            self.step(*op).map_err(|v| (i, v))?;
        }
        Ok(())
    }

    /// Whether `op` is a guest op on a vCPU (it runs guest code).
    fn guest_vcpu(op: &Op) -> Option<usize> {
        match *op {
            Op::Ack { vcpu } | Op::Eoi { vcpu } | Op::Tpr { vcpu, .. } => {
                Some(vcpu as usize % VCPUS)
            }
            _ => None,
        }
    }

    /// Applies one op and checks every invariant.
    pub fn step(&mut self, op: Op) -> Result<StepInfo, Violation> {
        // A guest op on a kicked vCPU implies its VM entry first.
        if let Some(c) = Self::guest_vcpu(&op)
            && self.checker.kicked[c]
        {
            self.enter(c)?;
        }
        let pre_entries = *self.chip.ioapic().entries();
        let pre_tmr: [VectorSet; VCPUS] = core::array::from_fn(|i| *self.vstate(i).apic.tmr());
        let mut info = StepInfo::default();
        let mut fx = Effects::default();
        // The vector of an EOI forwarded to the I/O APIC by this op.
        let mut forwarded: Option<Vector> = None;
        let mut forwarded_edge = false;
        let mut restored = false;
        match op {
            Op::Write { pin, field } => {
                let p = Pin::new((pin as usize % PINS) as u8);
                let e = self.chip.ioapic().entry(p).map_or(0, |e| e.bits());
                fx = self.chip.write_entry(p, field.apply(e));
            }
            Op::WriteEntry { pin, value } => {
                fx = self
                    .chip
                    .write_entry(Pin::new((pin as usize % PINS) as u8), value);
            }
            Op::Mmio {
                offset,
                size,
                value,
            } => {
                let off = offset as u64 % MMIO_LEN;
                if off == IOEOI
                    && self.config.chip.ioapic.version == IoapicVersion::V20
                    && matches!(size, 1 | 2 | 4 | 8)
                {
                    forwarded = Some(Vector::new(value as u8));
                }
                fx = self.chip.mmio_write(off, size as u32, value as u64);
            }
            Op::SetLine { pin, high } => {
                fx = self
                    .chip
                    .set_line(Pin::new((pin as usize % PINS) as u8), high);
            }
            Op::Msi {
                dest,
                vector,
                level,
            } => {
                fx = self.chip.send_msi(&InterruptMessage {
                    destination: Destination {
                        id: dest as u32,
                        mode: DestinationMode::Physical,
                    },
                    delivery_mode: DeliveryMode::Fixed,
                    vector: Vector::new(vector),
                    trigger: TriggerMode::from_bit(level),
                });
            }
            Op::Accept { vcpu, vector } => {
                let id = self.vstate(vcpu as usize % VCPUS).apic.id();
                fx = self.chip.send_msi(&InterruptMessage {
                    destination: Destination {
                        id: id.get(),
                        mode: DestinationMode::Physical,
                    },
                    delivery_mode: DeliveryMode::Fixed,
                    vector: Vector::new(vector),
                    trigger: TriggerMode::Edge,
                });
            }
            Op::Ack { vcpu } => {
                let c = vcpu as usize % VCPUS;
                if let Some(v) = self.chip.ack(VcpuId::new(c as u16)) {
                    for i in self.checker.instances[c].iter_mut() {
                        if !i.in_service && i.vector == v.get() {
                            i.in_service = true;
                        }
                    }
                }
            }
            Op::Eoi { vcpu } => {
                let c = vcpu as usize % VCPUS;
                let isr = self.vstate(c).apic.isr().highest();
                let ge = self.chip.guest_eoi(VcpuId::new(c as u16));
                if let Some(v) = ge.vector {
                    debug_assert_eq!(Some(v), isr);
                    let hw = VectorSet::from_u64_words(self.checker.hw[c]).contains(v);
                    if hw != ge.intercepted {
                        return Err(Violation::InterceptMismatch {
                            vcpu: c as u16,
                            vector: v.get(),
                        });
                    }
                    info.eoi = Some((v, ge.intercepted));
                    if ge.intercepted {
                        forwarded = Some(v);
                        forwarded_edge = !ge.level;
                    }
                    self.retire(c, v, ge.intercepted, ge.level, &pre_entries)?;
                }
                fx = ge.effects;
            }
            Op::Rescan { vcpu } => {
                let c = vcpu as usize % VCPUS;
                self.chip.rescan(VcpuId::new(c as u16));
                fx.reload.insert(VcpuId::new(c as u16));
            }
            Op::Enter { vcpu } => {
                self.enter(vcpu as usize % VCPUS)?;
            }
            Op::Snapshot => {
                self.saved = Some(Saved {
                    ioapic: self.chip.ioapic().clone(),
                    apics: core::array::from_fn(|i| self.vstate(i).apic),
                    checker: self.checker.clone(),
                });
            }
            Op::Restore => {
                if let Some(s) = &self.saved {
                    let chip = Irqchip::with_apics(self.config.chip, s.apics);
                    *chip.ioapic() = s.ioapic.clone();
                    for i in 0..VCPUS {
                        chip.rescan(VcpuId::new(i as u16));
                    }
                    self.chip = chip;
                    self.checker = s.checker.clone();
                    self.checker.hw = [[0; 4]; VCPUS];
                    self.checker.kicked = [true; VCPUS];
                    restored = true;
                }
            }
            Op::DeliverLater { pin } => {
                fx = self
                    .chip
                    .deliver_later_elapsed(Pin::new((pin as usize % PINS) as u8));
            }
            Op::Ldr { vcpu, logical_id } => {
                let c = VcpuId::new((vcpu as usize % VCPUS) as u16);
                if let Some(((), f)) = self
                    .chip
                    .update_lapic(c, |a| a.write_ldr((logical_id as u32) << 24))
                {
                    fx = f;
                }
            }
            Op::Tpr { vcpu, tpr } => {
                // TPR is guest state with no effect on routing: write it
                // directly through the vCPU guard (no rescan).
                let c = VcpuId::new((vcpu as usize % VCPUS) as u16);
                if let Some(mut v) = self.chip.vcpu(c) {
                    v.apic.write_tpr(tpr);
                }
            }
        }
        info.accepted = fx.deliveries.len() as u32;
        if self.config.mutant == Some(Mutant::ScanIgnoresPending) {
            self.rescan_ignoring_pending(&fx);
        }
        self.absorb(&fx, &pre_entries, forwarded)?;
        if !restored {
            self.check_tmr(&pre_tmr, &fx)?;
        }
        let clearing = match forwarded {
            Some(_) if forwarded_edge && !self.config.edge_eoi_clears_remote_irr => None,
            f => f,
        };
        self.check_remote_irr(&pre_entries, clearing, restored)?;
        if self.config.eager_enter {
            for c in 0..VCPUS {
                if self.checker.kicked[c] {
                    self.enter(c)?;
                }
            }
        }
        self.check_vmcs_current()?;
        Ok(info)
    }

    fn rescan_ignoring_pending(&self, fx: &Effects) {
        let io = self.chip.ioapic().clone();
        for c in fx.reload.iter().map(VcpuId::index).filter(|&c| c < VCPUS) {
            let mut g = self.chip.vcpu(VcpuId::new(c as u16)).expect("in range");
            let VcpuState { apic, map, .. } = &mut *g;
            // The same LAPIC with nothing pending: what a scan without KVM's
            // pending check sees.
            let mut st = apic.snapshot();
            st.irr = VectorSet::EMPTY;
            st.isr = VectorSet::EMPTY;
            let blind = LocalApic::from_snapshot(&st).expect("a valid LAPIC state stays valid");
            map.begin_scan();
            for (pin, e) in io.entries().iter().enumerate() {
                let se = ScanEntry::from_redirection(
                    *e,
                    self.config
                        .chip
                        .ack_notifier_pins
                        .contains(Pin::new(pin as u8)),
                    self.config.chip.rtc_tracking && pin == RTC_PIN as usize,
                );
                map.scan_entry(&blind, &se);
            }
            map.end_scan(apic);
        }
    }

    /// VM entry of `c`: load the VMCS update, checking it is the diff.
    fn enter(&mut self, c: usize) -> Result<(), Violation> {
        let id = VcpuId::new(c as u16);
        let want = self.bitmap(c).as_u64_words();
        let old = self.checker.hw[c];
        let u = self.chip.vmcs_update(id);
        let mut mask = 0u8;
        for i in 0..4 {
            if want[i] != old[i] {
                mask |= 1 << i;
            }
        }
        let ok = match u {
            None => mask == 0,
            Some(u) => u.mask == mask && u.changed().all(|(i, w)| w == want[i]),
        };
        if !ok {
            return Err(Violation::VmcsUpdateNotDiff { vcpu: c as u16 });
        }
        if let Some(u) = u {
            for (i, w) in u.changed() {
                self.checker.hw[c][i] = w;
            }
        }
        self.checker.kicked[c] = false;
        Ok(())
    }

    /// The guest on `c` retired `v`: drop its in-service instances, report
    /// the necessary ones whose EOI did not exit.
    fn retire(
        &mut self,
        c: usize,
        v: Vector,
        exit: bool,
        tmr_level: bool,
        pre: &[RedirectionEntry; PINS],
    ) -> Result<(), Violation> {
        let list = &mut self.checker.instances[c];
        let mut lost = None;
        let mut lost_pins = PinSet::EMPTY;
        let mut k = 0;
        while k < list.len() {
            let i = list[k];
            if i.in_service && i.vector == v.get() {
                list.remove(k);
                let e = pre[i.pin as usize % PINS];
                let needed = match i.need {
                    Need::Rtc => true,
                    Need::AckNotifier => e.vector() == v,
                    Need::Level => i.current && e.is_level() && e.vector() == v && e.remote_irr(),
                };
                if needed && !exit {
                    lost_pins.insert(Pin::new(i.pin));
                    let mut causes = Tolerated::NONE;
                    if i.moved {
                        causes = causes.with(LossCause::VectorRewrittenInFlight);
                    }
                    if i.need == Need::Level && !tmr_level {
                        causes = causes.with(LossCause::SharedWithEdge);
                    }
                    // Report the least excusable loss.
                    if lost.is_none_or(|(_, c): (u8, Tolerated)| causes.0 < c.0) {
                        lost = Some((i.pin, causes));
                    }
                }
            } else {
                k += 1;
            }
        }
        let Some((pin, causes)) = lost else {
            return Ok(());
        };
        for p in lost_pins.iter() {
            self.checker.orphan.insert(p);
        }
        let cause = causes.primary();
        if self.config.tolerate.0 & causes.0 != 0
            || (causes.0 == 0 && self.config.tolerate.contains(LossCause::Plain))
        {
            self.checker.tolerated_loss = true;
            return Ok(());
        }
        Err(Violation::LostEoi {
            vcpu: c as u16,
            vector: v.get(),
            pin,
            cause,
        })
    }

    /// Records what an op's effects did: kicks and new instances.
    fn absorb(
        &mut self,
        fx: &Effects,
        pre: &[RedirectionEntry; PINS],
        forwarded: Option<Vector>,
    ) -> Result<(), Violation> {
        for i in fx.reload.iter().map(VcpuId::index) {
            if i < VCPUS {
                self.checker.kicked[i] = true;
            }
        }
        let entries = *self.chip.ioapic().entries();
        // Pins that started a new remote-IRR cycle in this op: every older
        // instance of theirs stops being current.
        let mut new_cycle = PinSet::EMPTY;
        let mut accepted = PinSet::EMPTY;
        for d in fx.deliveries.iter() {
            if let Some(p) = d.pin
                && d.accepted.trigger.is_level()
            {
                accepted.insert(p);
            }
        }
        for (i, (a, b)) in pre.iter().zip(entries.iter()).enumerate() {
            let p = Pin::new(i as u8);
            let renewed = a.remote_irr() && a.is_level() && forwarded == Some(a.vector());
            if b.remote_irr() && (!a.remote_irr() || renewed || accepted.contains(p)) {
                new_cycle.insert(p);
            }
        }
        for p in new_cycle.iter() {
            // A cycle no LAPIC accepted (no destination matched, or a
            // non-vectored delivery mode) is orphaned: its remote IRR stays.
            self.checker.orphan.set(p, !accepted.contains(p));
            for list in self.checker.instances.iter_mut() {
                for i in list.iter_mut() {
                    if i.pin == p.get() {
                        i.current = false;
                    }
                }
            }
        }
        for d in fx.deliveries.iter() {
            let c = d.vcpu.index();
            if c < VCPUS && self.config.kick == Kick::ReloadAndDeliveries {
                self.checker.kicked[c] = true;
            }
            let Some(p) = d.pin else { continue };
            let need = if d.accepted.source == Source::Rtc {
                Need::Rtc
            } else if self.config.chip.ack_notifier_pins.contains(p) {
                Need::AckNotifier
            } else if d.accepted.trigger.is_level() {
                Need::Level
            } else {
                continue;
            };
            let inst = Instance {
                vector: d.accepted.vector.get(),
                in_service: false,
                pin: p.get(),
                need,
                current: true,
                moved: false,
            };
            let list = &mut self.checker.instances[c];
            if let Some(old) = list.iter_mut().find(|i| {
                !i.in_service && i.vector == inst.vector && i.pin == inst.pin && i.need == need
            }) {
                old.current = true;
            } else if list.push(inst).is_err() {
                return Err(Violation::CheckerCapacity);
            }
        }
        for list in self.checker.instances.iter_mut() {
            list.sort_unstable();
        }
        Ok(())
    }

    fn check_tmr(&self, pre: &[VectorSet; VCPUS], fx: &Effects) -> Result<(), Violation> {
        for (c, before) in pre.iter().enumerate() {
            let now = *self.vstate(c).apic.tmr();
            let mut changed = now.difference(before).union(&before.difference(&now));
            for d in fx.deliveries.iter() {
                if d.vcpu.index() == c {
                    changed.remove(d.accepted.vector);
                }
            }
            if let Some(v) = changed.lowest() {
                return Err(Violation::TmrChangedWithoutAcceptance {
                    vcpu: c as u16,
                    vector: v.get(),
                });
            }
        }
        Ok(())
    }

    fn check_remote_irr(
        &mut self,
        pre: &[RedirectionEntry; PINS],
        forwarded: Option<Vector>,
        restored: bool,
    ) -> Result<(), Violation> {
        let io = self.chip.ioapic().clone();
        for (i, (a, b)) in pre.iter().zip(io.entries().iter()).enumerate() {
            let pin = i as u8;
            let p = Pin::new(pin);
            if b.remote_irr() && !b.is_level() {
                return Err(Violation::RemoteIrrOnEdge { pin });
            }
            if restored {
                continue;
            }
            if b.remote_irr() && !a.remote_irr() && (b.masked() || !io.asserted(p)) {
                return Err(Violation::RemoteIrrSetWithoutDelivery { pin });
            }
            if a.remote_irr() && !b.remote_irr() && b.is_level() && forwarded != Some(a.vector()) {
                return Err(Violation::RemoteIrrClearedWithoutEoi { pin });
            }
            if a.vector() != b.vector() {
                for list in self.checker.instances.iter_mut() {
                    for x in list.iter_mut().filter(|x| x.pin == pin) {
                        x.moved = true;
                    }
                }
            }
            if !b.remote_irr() {
                self.checker.orphan.remove(p);
                continue;
            }
            if a.remote_irr() && a.vector() != b.vector() {
                // The guest rewrote the vector of an entry in flight: its EOI
                // cannot match until the vector is written back (a wedge on
                // hardware too).
                self.checker.orphan.insert(p);
            }
            if self.checker.orphan.contains(p) {
                continue;
            }
            let live = self
                .checker
                .instances
                .iter()
                .flat_map(|l| l.iter())
                .any(|x| x.pin == pin && x.current && x.vector == b.vector().get());
            if !live {
                return Err(Violation::RemoteIrrStuck { pin });
            }
        }
        Ok(())
    }

    fn check_vmcs_current(&self) -> Result<(), Violation> {
        for c in 0..VCPUS {
            if self.checker.kicked[c] {
                continue;
            }
            let hw = VectorSet::from_u64_words(self.checker.hw[c]);
            let b = self.bitmap(c);
            let d = b.difference(&hw).union(&hw.difference(&b));
            if let Some(v) = d.lowest() {
                return Err(Violation::StaleVmcs {
                    vcpu: c as u16,
                    vector: v.get(),
                });
            }
        }
        Ok(())
    }
}

impl<const VCPUS: usize, const PINS: usize> Hash for Harness<VCPUS, PINS> {
    /// Hashes the state that decides future behaviour (not the counters).
    fn hash<H: Hasher>(&self, h: &mut H) {
        self.chip.ioapic().hash(h);
        for c in 0..VCPUS {
            let s = self.vstate(c);
            hash_apic(&s.apic, h);
            s.map.hash(h);
        }
        self.checker.hash(h);
        match &self.saved {
            None => 0u8.hash(h),
            Some(s) => {
                1u8.hash(h);
                s.ioapic.hash(h);
                for a in &s.apics {
                    hash_apic(a, h);
                }
                s.checker.hash(h);
            }
        }
    }
}

fn hash_apic<H: Hasher>(a: &LocalApic, h: &mut H) {
    a.irr().hash(h);
    a.isr().hash(h);
    a.tmr().hash(h);
    a.tpr().hash(h);
    a.ldr().hash(h);
    a.dfr().hash(h);
    a.svr().hash(h);
    a.id_register().hash(h);
    (a.mode() as u8).hash(h);
}

/// The policies whose bitmaps must nest: `Exact ⊆ KvmHighestStale ⊆ KvmLegacy`.
pub const NESTED: [Policy; 3] = [Policy::Exact, Policy::KvmHighestStale, Policy::KvmLegacy];

/// Three Irqchips fed the same ops, one per policy of [`NESTED`], each under
/// its own [`Harness`]; after every op the bitmaps must nest.
pub struct Lockstep<const VCPUS: usize, const PINS: usize = 24> {
    /// `Exact`, `KvmHighestStale`, `KvmLegacy`, in that order.
    pub harnesses: [Harness<VCPUS, PINS>; 3],
}

impl<const VCPUS: usize, const PINS: usize> Lockstep<VCPUS, PINS> {
    /// Three harnesses from `base` with the policies of [`NESTED`], each
    /// programmed with `entries`.
    pub fn new(base: HarnessConfig, entries: &[u64]) -> Self {
        Lockstep {
            harnesses: NESTED.map(|p| {
                let mut c = base;
                c.chip.policy = p;
                Harness::with_entries(c, entries)
            }),
        }
    }

    /// Applies `op` to all three, then checks inclusion.
    pub fn step(&mut self, op: Op) -> Result<(), Violation> {
        for h in self.harnesses.iter_mut() {
            h.step(op)?;
        }
        self.check_inclusion()
    }

    /// Applies every op; the first violation and its op index.
    pub fn run(&mut self, ops: &[Op]) -> Result<(), (usize, Violation)> {
        for (i, op) in ops.iter().enumerate() {
            self.step(*op).map_err(|v| (i, v))?;
        }
        Ok(())
    }

    /// `Exact ⊆ KvmHighestStale ⊆ KvmLegacy` on every vCPU, except for the
    /// gaps [`Lockstep::explain`] accounts for (unless `strict`).
    pub fn check_inclusion(&self) -> Result<(), Violation> {
        self.check_inclusion_with(false)
    }

    /// As [`check_inclusion`](Self::check_inclusion); `strict` reports every gap.
    pub fn check_inclusion_with(&self, strict: bool) -> Result<(), Violation> {
        for c in 0..VCPUS {
            for k in 0..2 {
                if !strict && self.diverged(k, k + 1) {
                    // Different interception changed what the I/O APIC or
                    // the LAPICs saw (a forwarded EOI cleared a remote IRR
                    // and re-delivered): the histories are no longer the
                    // same, so inclusion is not expected.
                    continue;
                }
                let lo = self.harnesses[k].bitmap(c);
                let hi = self.harnesses[k + 1].bitmap(c);
                for v in lo.difference(&hi).iter() {
                    if strict || self.explain(k + 1, c, v).is_none() {
                        return Err(Violation::Inclusion {
                            vcpu: c as u16,
                            vector: v.get(),
                            lower: NESTED[k],
                            upper: NESTED[k + 1],
                        });
                    }
                }
            }
        }
        Ok(())
    }

    /// Whether harnesses `a` and `b` no longer hold the same I/O APIC and
    /// LAPIC interrupt state (their interception differed in a way the guest
    /// or the devices could observe).
    pub fn diverged(&self, a: usize, b: usize) -> bool {
        let (x, y) = (&self.harnesses[a], &self.harnesses[b]);
        if x.chip.ioapic().entries() != y.chip.ioapic().entries() {
            return true;
        }
        (0..VCPUS).any(|c| {
            let (p, q) = (x.vstate(c), y.vstate(c));
            p.apic.irr() != q.apic.irr() || p.apic.isr() != q.apic.isr()
        })
    }

    /// Why harness `upper` (1 = `KvmHighestStale`, 2 = `KvmLegacy`) lacks
    /// vector `v` on vCPU `c` that the policy below it has, if the reason is
    /// a known one.
    pub fn explain(&self, upper: usize, c: usize, v: Vector) -> Option<InclusionGap> {
        let h = &self.harnesses[upper];
        let probe = h.fork();
        probe.chip.rescan(VcpuId::new(c as u16));
        if probe.bitmap(c).contains(v) {
            return Some(InclusionGap::NotRescanned);
        }
        let pending = h.vstate(c).apic.pending_eoi(v);
        let in_entry = h
            .chip
            .ioapic()
            .entries()
            .iter()
            .enumerate()
            .any(|(pin, e)| {
                e.vector() == v
                    && ScanEntry::from_redirection(
                        *e,
                        h.config
                            .chip
                            .ack_notifier_pins
                            .contains(Pin::new(pin as u8)),
                        h.config.chip.rtc_tracking && pin == RTC_PIN as usize,
                    )
                    .counts_for_kvm()
            });
        (pending && !in_entry).then_some(InclusionGap::InFlightVectorInNoEntry)
    }
}

/// Known reasons why `Exact ⊆ KvmHighestStale ⊆ KvmLegacy` fails.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum InclusionGap {
    /// The upper policy has not rescanned this vCPU since the vector became
    /// pending here: a rescan now would add it. `KvmHighestStale` rescans on
    /// the EOI of its highest stale vector and then sees, as stale, a vector
    /// another source (an MSI, an IPI, an edge entry) made pending after
    /// `KvmLegacy`'s last scan of that vCPU.
    NotRescanned,
    /// The vector is pending (IRR or ISR) here but no counted entry (level,
    /// ack notifier, RTC) has it any more, so KVM's scan cannot see it:
    /// `Exact` keeps intercepting an in-flight instance whose entry's vector
    /// was rewritten, or a level MSI (which `Exact` treats as needing its EOI).
    InFlightVectorInNoEntry,
}

/// The RTC pin number, for op generators.
pub const RTC_PIN: u8 = RTC_GSI.get() as u8;
