//! The checker's verdicts and bookkeeping: [`Violation`], [`Need`],
//! [`Instance`], [`Checker`], [`Saved`], [`StepInfo`].

use core::fmt;

use eoi_exit::Vector;
use eoi_exit::ioapic::PinSet;
use eoi_exit::lapic::LocalApic;
use eoi_exit::{Ioapic, Policy};

use super::LossCause;
#[cfg(doc)]
use super::Op;

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
    /// `vmcs_update` missed a word that differs from the VMCS, or reported a
    /// word with a value that is not the bitmap's. (A word it reports that
    /// already holds that value is a harmless extra VMWRITE: the map tracks
    /// the words changed since the last load, and a bit set and cleared again
    /// in between reports its word.)
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
    /// An EOI the vCPU's LAPIC did not broadcast (SVR bit 12) reached the
    /// I/O APIC anyway.
    SuppressedEoiForwarded {
        /// The vCPU.
        vcpu: u16,
        /// The vector.
        vector: u8,
    },
    /// `LineAware`: after the same ops a vCPU's LAPIC holds other pending,
    /// in-service or trigger-mode bits than under the reference semantics
    /// (`Exact`, every necessary EOI exiting at once): a delivery missing,
    /// extra or out of order.
    GuestDivergence {
        /// The vCPU.
        vcpu: u16,
        /// The lowest vector whose IRR, ISR or TMR bit differs.
        vector: u8,
    },
    /// `LineAware`: a guest read of a redirection entry through IOWIN now
    /// would return another value than under the reference semantics: with
    /// remote IRR set where the reference has it clear, an EOI whose effect
    /// never reached the guest.
    IowinDivergence {
        /// The pin.
        pin: u8,
        /// The low dword the reference reads.
        reference: u32,
        /// The low dword `LineAware` reads.
        found: u32,
    },
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
                write!(
                    f,
                    "VMCS update of vCPU{vcpu} misses a changed word or writes a wrong one"
                )
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
            Violation::SuppressedEoiForwarded { vcpu, vector } => write!(
                f,
                "vCPU{vcpu}: EOI of {vector:#04x} reached the I/O APIC though SVR bit 12 suppresses it"
            ),
            Violation::GuestDivergence { vcpu, vector } => write!(
                f,
                "vCPU{vcpu}: IRR/ISR/TMR bit {vector:#04x} differs from the reference (Exact)"
            ),
            Violation::IowinDivergence {
                pin,
                reference,
                found,
            } => write!(
                f,
                "pin{pin} reads {found:#010x} through IOWIN where the reference (Exact) reads {reference:#010x}"
            ),
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
    /// Pins whose remote IRR waits for the guest's write of the I/O APIC
    /// EOI register: their instance's LAPIC EOI was suppressed (directed
    /// EOI), so the cycle is not stuck.
    pub awaiting_ioapic_eoi: PinSet,
    /// `LineAware`: vCPUs named in `Effects::exit` whose exit has not landed
    /// yet (they run guest code until their next guest op, and one EOI may
    /// complete in hardware before the exit: the race window).
    pub owed_exit: [bool; VCPUS],
    /// `LineAware`: pins whose remote IRR a broadcast EOI that did not exit
    /// has ended in the reference semantics; the chip clears it when it
    /// notices (so it may be set with no instance in flight, and clear
    /// without an EOI in that op).
    pub deferred: PinSet,
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
            awaiting_ioapic_eoi: PinSet::EMPTY,
            owed_exit: [false; VCPUS],
            deferred: PinSet::EMPTY,
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
    /// `LineAware`: the reference chip's I/O APIC and local APICs, one pair
    /// per candidate reference (see [`Harness::step`](super::Harness::step));
    /// empty for the other policies.
    pub reference: std::vec::Vec<(Ioapic<PINS>, [LocalApic; VCPUS])>,
}

/// What one op did (for reporting).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct StepInfo {
    /// For [`Op::Eoi`]: the vector retired and whether the EOI exited.
    pub eoi: Option<(Vector, bool)>,
    /// Number of interrupts accepted.
    pub accepted: u32,
    /// For [`Op::Eoi`] under directed EOI: the LAPIC did not broadcast a
    /// level EOI whose entry still waited on it (not lost: the guest writes
    /// the I/O APIC's EOI register).
    pub suppressed: bool,
}
