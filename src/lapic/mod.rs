//! The local APIC's interrupt state (SDM Vol. 3, "Advanced Programmable
//! Interrupt Controller"; Linux KVM `arch/x86/kvm/lapic.c`).
//!
//! [`LocalApic`] models what decides where an I/O APIC or MSI interrupt goes and
//! when its EOI must reach the I/O APIC: the APIC ID and logical addressing
//! (LDR/DFR, x2APIC), the spurious-vector register (software enable, suppress
//! EOI broadcast), TPR/PPR, the IRR/ISR/TMR bitmaps, and the ICR and ESR (IPIs
//! are sent by [`Irqchip::write_lapic`](crate::Irqchip::write_lapic), which
//! knows the other vCPUs). Timers and LVTs are not modelled. SMI, NMI, INIT,
//! start-up and ExtINT messages are not vectored: [`LocalApic::accept`]
//! ignores them, and [`Irqchip`](crate::Irqchip) keeps them pending per vCPU
//! beside the LAPIC ([`VcpuEvents`](crate::irqchip::VcpuEvents)).
//!
//! # Call order
//!
//! 1. The VMM routes a message: [`LocalApic::matches`] (or
//!    [`lowest_priority`]) picks the targets, then [`LocalApic::accept`]
//!    sets IRR and TMR on each.
//! 2. When the vCPU takes an interrupt (INTA, or hardware virtual-interrupt
//!    delivery), [`LocalApic::ack`] moves the highest deliverable IRR vector to
//!    ISR.
//! 3. When the guest writes the EOI register, [`LocalApic::eoi`] pops the
//!    highest ISR vector and says whether the I/O APIC must see the EOI.
//!
//! # Where the SDM and KVM differ
//!
//! The default is KVM's behaviour unless stated otherwise; each method's docs
//! say which applies. In short: illegal vectors 0..=15 follow the SDM (not
//! accepted; KVM accepts them), though a restored or KVM-imported state may
//! hold them in IRR/ISR/TMR as KVM stores them ([`LocalApicState`]); broadcast and physical matching follow KVM
//! (x2APIC broadcast quirk, hotplug hack); lowest-priority arbitration offers
//! both ([`lowest_priority`] with the SDM's APR or KVM's vector hashing); suppress-EOI-broadcast follows the SDM (KVM's split
//! irqchip ignores SVR bit 12 by default, see [`Eoi`] and
//! [`EoiForwarding`](crate::irqchip::EoiForwarding)).

mod dest;
mod state;

pub use state::LocalApicState;

pub use dest::lowest_priority;
pub(crate) use dest::{DFR_FLAT, X2APIC_BROADCAST, x2apic_ldr};

use crate::irqchip::PackedEvents;
use crate::types::{
    ApicId, DeliveryMode, Destination, DestinationMode, InterruptMessage, TriggerMode,
};
use crate::vector::{Vector, VectorSet};

/// The local APIC's mode (IA32_APIC_BASE bits 11:10).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum ApicMode {
    /// xAPIC: 8-bit ID in bits 31:24 of the ID register, writable LDR/DFR.
    #[default]
    XApic,
    /// x2APIC: 32-bit read-only ID, LDR derived from the ID.
    X2Apic,
    /// Hardware-disabled (IA32_APIC_BASE\[11\] clear): accepts nothing, matches
    /// nothing, delivers nothing and takes no EOI.
    Disabled,
}

bitflags::bitflags! {
    /// Flag bits of the spurious-interrupt vector register (SVR, offset 0xF0).
    /// The spurious vector in bits 7:0 is not a flag: read it with
    /// `svr & 0xFF`.
    #[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
    pub(crate) struct Svr: u32 {
        /// Bit 8: APIC software enable; clear = software-disabled.
        const APIC_SOFTWARE_ENABLE = 1 << 8;
        /// Bit 9: focus processor checking disabled (lowest-priority delivery).
        const FOCUS_CHECK_DISABLE = 1 << 9;
        /// Bit 12: suppress EOI broadcast (directed EOI); honoured only when
        /// the version register advertises it (bit 24).
        const SUPPRESS_EOI_BROADCAST = 1 << 12;
    }
}

impl Svr {
    /// SVR value at power-on and reset: vector 0xFF, software-disabled.
    pub const RESET: u32 = 0xFF;
}

/// Version register bit 24: "suppress EOI broadcast" supported.
pub(crate) const VERSION_DIRECTED_EOI: u32 = 1 << 24;
/// Version register bits 7:0: an integrated APIC (KVM's `APIC_VERSION`).
pub(crate) const APIC_VERSION: u32 = 0x14;
/// Max LVT entry (version register bits 23:16): 5, i.e. six LVT entries, what
/// KVM reports without CMCI in the guest's MCG_CAP.
pub(crate) const MAX_LVT: u32 = 5;

/// Writable SVR bits: vector, software enable, focus check (KVM masks SPIV
/// writes with `0x3ff`, plus bit 12 when directed EOI is advertised).
const SVR_WRITABLE: u32 = 0x3FF;

/// ESR bit 5: send illegal vector.
pub(crate) const ESR_SEND_ILLEGAL_VECTOR: u8 = 1 << 5;
/// `LocalApic::bits`: the LDR holds the x2APIC value derived from the
/// initial ID (x2APIC mode, or kept from it: KVM clears the LDR only at
/// reset).
const BIT_LDR_X2: u8 = 1 << 3;
/// `LocalApic::bits`: version bit 24 (directed EOI) advertised.
const BIT_DIRECTED_EOI: u8 = 1 << 2;
/// `LocalApic::bits`: the pending ESR errors (bits 6:5 of the ESR) in 1:0.
const ESR_PENDING_MASK: u8 = 0b11;
/// Shift from `LocalApic::bits` 1:0 to ESR bits 6:5.
const ESR_PENDING_SHIFT: u32 = 5;
/// `LocalApic::bits` of a reset APIC: DFR flat, nothing else.
const DFR_FLAT_BITS: u8 = ((DFR_FLAT >> 28) as u8) << 4;
/// ESR bit 6: receive illegal vector.
pub(crate) const ESR_RECEIVE_ILLEGAL_VECTOR: u8 = 1 << 6;
/// ICR bit 11: logical destination mode.
const ICR_LOGICAL: u32 = 1 << 11;
/// ICR bit 12: delivery status (send pending); always reads 0 here.
const ICR_BUSY: u32 = 1 << 12;
/// ICR bit 14: level (assert).
const ICR_ASSERT: u32 = 1 << 14;
/// ICR bit 15: level trigger mode.
const ICR_LEVEL_TRIGGER: u32 = 1 << 15;

/// Which APICs an ICR write addresses (ICR bits 19:18).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Shorthand {
    /// The destination field.
    None,
    /// The sender.
    SelfOnly,
    /// Every APIC, the sender included.
    AllIncludingSelf,
    /// Every APIC but the sender.
    AllExcludingSelf,
}

/// An interrupt an ICR (or SELF IPI) write sends.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) struct Ipi {
    /// The message (its destination counts only without a shorthand).
    pub(crate) message: InterruptMessage,
    /// The shorthand.
    pub(crate) shorthand: Shorthand,
}

/// The outcome of [`LocalApic::accept`].
#[must_use = "an ignored interrupt is lost; a coalesced one merged with a pending one"]
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Acceptance {
    /// IRR was clear and is now set; TMR now records `trigger`.
    Accepted {
        /// The vector now pending.
        vector: Vector,
        /// The trigger mode written to TMR.
        trigger: TriggerMode,
    },
    /// IRR was already set (the interrupt merged with the pending one); TMR is
    /// still updated to `trigger`, as KVM's `__apic_accept_irq` does. KVM no
    /// longer reports coalescing to its caller (it returns 1 either way).
    Coalesced {
        /// The vector that was already pending.
        vector: Vector,
        /// The trigger mode written to TMR.
        trigger: TriggerMode,
    },
    /// Nothing changed.
    Ignored(IgnoreReason),
}

impl Acceptance {
    /// Whether IRR holds the vector afterwards (accepted or coalesced).
    #[inline]
    #[cfg(test)]
    pub(crate) const fn is_pending(&self) -> bool {
        !matches!(self, Acceptance::Ignored(_))
    }
}

/// Why [`LocalApic::accept`] ignored a message.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum IgnoreReason {
    /// The APIC is hardware-disabled, or software-disabled (SVR bit 8 clear;
    /// KVM's `apic_enabled` check in `__apic_accept_irq`).
    Disabled,
    /// Vector 0..=15 (SDM: "receive illegal vector" error, IRR not set).
    /// KVM does not check and sets IRR; this model follows the SDM.
    IllegalVector,
    /// SMI, NMI, INIT, start-up or ExtINT: delivered outside IRR/ISR, by
    /// [`Irqchip`](crate::Irqchip) ([`VcpuEvents`](crate::irqchip::VcpuEvents)).
    NotVectored,
}

/// The result of a non-spurious EOI ([`LocalApic::eoi`]).
///
/// The caller MUST forward the EOI of `vector` to the I/O APIC when
/// `broadcast` is set (in-kernel-I/O-APIC rule). A split-irqchip VMM that
/// mirrors KVM MUST instead decide by its EOI-exit bitmap / handled vectors:
/// KVM exits to userspace for every EOI of a vector in `ioapic_handled_vectors`
/// whatever TMR says, and by default even when SVR bit 12 is set (with
/// `KVM_X2APIC_ENABLE_SUPPRESS_EOI_BROADCAST`, Linux 6.18.17+, it then
/// forwards none), which is why `vector` is always reported.
/// [`Irqchip`](crate::Irqchip) applies these rules by
/// [`EoiForwarding`](crate::irqchip::EoiForwarding).
#[must_use = "a level-triggered EOI that is not forwarded leaves Remote IRR set forever"]
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct Eoi {
    /// The vector that left ISR.
    pub vector: Vector,
    /// Its TMR bit: the interrupt was accepted as level-triggered.
    pub level: bool,
    /// The EOI must be broadcast to the I/O APIC(s): `level`, and not (directed
    /// EOI advertised in the version register and SVR bit 12 set).
    pub broadcast: bool,
}

/// One local APIC's interrupt state. Small and `Copy`; no allocation.
///
/// Its saved state is [`LocalApicState`] ([`LocalApic::state`],
/// [`LocalApic::from_state`]).
///
/// Under APIC virtualization this stands for the virtual-APIC page: the CPU
/// itself acknowledges interrupts and retires EOIs that are not intercepted
/// (see [APIC virtualization](crate#apic-virtualization-what-a-vmm-sees)).
///
/// # Examples
///
/// One level interrupt: accept, acknowledge, EOI.
///
/// ```
/// use eoi_exit::{
///     Acceptance, ApicId, ApicMode, DeliveryMode, Destination, DestinationMode,
///     InterruptMessage, LocalApic, TriggerMode, Vector,
/// };
///
/// let mut apic = LocalApic::new_enabled(ApicId::new(0), ApicMode::XApic);
/// let v = Vector::new(0x40);
/// let msg = InterruptMessage {
///     destination: Destination { id: 0, mode: DestinationMode::Physical },
///     delivery_mode: DeliveryMode::Fixed,
///     vector: v,
///     trigger: TriggerMode::Level,
/// };
/// assert!(apic.matches(msg.destination));
/// let accepted = apic.accept(&msg);
/// assert_eq!(accepted, Acceptance::Accepted { vector: v, trigger: TriggerMode::Level });
/// assert!(apic.irr().contains(v) && apic.tmr().contains(v));
///
/// // INTA: IRR -> ISR; the processor priority rises to the vector's class.
/// assert_eq!(apic.ack(), Some(v));
/// assert_eq!(apic.read_register(0xA0), Some(0x40)); // PPR
///
/// // EOI: TMR says level, so the I/O APIC must see it (remote IRR).
/// let eoi = apic.eoi().expect("0x40 was in service");
/// assert_eq!(eoi.vector, v);
/// assert!(eoi.level && eoi.broadcast);
/// assert_eq!(apic.eoi(), None); // ISR empty: a spurious EOI
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct LocalApic {
    /// Initial APIC ID: the x2APIC ID, and what the xAPIC ID resets to.
    initial_id: u32,
    /// xAPIC ID register bits 31:24.
    xapic_id: u8,
    mode: ApicMode,
    /// The xAPIC logical ID, LDR bits 31:24 (bits 23:0 read as 0), unless
    /// [`BIT_LDR_X2`] says the LDR holds its x2APIC value.
    ldr_xapic: u8,
    /// Packed flags, so a `LocalApic` takes 120 bytes and the chip's
    /// per-vCPU routing cache fits beside it in the slot: the DFR model
    /// (bits 31:28 of the DFR; 27:0 always read as 1) in bits 7:4,
    /// [`BIT_LDR_X2`], [`BIT_DIRECTED_EOI`], and the two ESR errors waiting
    /// for the next ESR write in bits 1:0 ([`ESR_PENDING_SHIFT`]).
    bits: u8,
    /// Spurious-interrupt vector register (bits 9:0 and 12; the rest read 0).
    svr: u16,
    tpr: u8,
    irr: VectorSet,
    isr: VectorSet,
    tmr: VectorSet,
    /// Interrupt command register: bits 31:0 as last written (delivery
    /// status always 0: a send completes at once, as in KVM), bits 63:32 the
    /// destination (xAPIC: ICR2, with the ID in bits 63:56).
    icr: u64,
    /// Error status register as the guest reads it.
    esr: u8,
    /// Always equal to `isr.highest()` (KVM's `highest_isr_cache`, kept eager).
    highest_isr_cache: Option<Vector>,
    /// The non-vectored events the chip holds for this vCPU (INIT, SIPI,
    /// NMI, SMI, ExtINT), packed in two bytes: [`Irqchip`](crate::Irqchip)
    /// latches them and hands them over in `take_events`. A bare `LocalApic`
    /// never sets them (`accept` ignores non-vectored messages).
    pub(crate) events: PackedEvents,
}

impl LocalApic {
    /// Power-on reset state: xAPIC mode, ID `id` (the xAPIC ID is its low 8
    /// bits), SVR = 0xFF (software-disabled), TPR 0, LDR 0, DFR flat,
    /// IRR/ISR/TMR empty, directed EOI not advertised.
    pub const fn new(id: ApicId) -> Self {
        LocalApic {
            initial_id: id.get(),
            xapic_id: id.get() as u8,
            mode: ApicMode::XApic,
            ldr_xapic: 0,
            bits: DFR_FLAT_BITS,
            events: PackedEvents::NONE,
            svr: Svr::RESET as u16,
            tpr: 0,
            irr: VectorSet::EMPTY,
            isr: VectorSet::EMPTY,
            tmr: VectorSet::EMPTY,
            icr: 0,
            esr: 0,
            highest_isr_cache: None,
        }
    }

    /// Reset state, switched to `mode` and software-enabled (SVR = 0x1FF). In
    /// x2APIC mode the LDR is derived from `id`.
    pub fn new_enabled(id: ApicId, mode: ApicMode) -> Self {
        let mut apic = Self::new(id);
        apic.set_mode(mode);
        apic.svr = (Svr::RESET | Svr::APIC_SOFTWARE_ENABLE.bits()) as u16;
        apic
    }

    // ----- identity and addressing -------------------------------------------

    /// The APIC ID of the current mode: the 8-bit xAPIC ID in xAPIC mode, the
    /// 32-bit x2APIC ID in x2APIC mode, the initial ID when disabled.
    #[inline]
    pub fn id(&self) -> ApicId {
        match self.mode {
            ApicMode::XApic => ApicId::new(u32::from(self.xapic_id)),
            ApicMode::X2Apic | ApicMode::Disabled => ApicId::new(self.initial_id),
        }
    }

    /// The initial APIC ID (CPUID), which is also the x2APIC ID.
    #[inline]
    #[cfg(test)]
    pub(crate) fn initial_id(&self) -> ApicId {
        ApicId::new(self.initial_id)
    }

    /// The x2APIC (initial) ID: what a physical destination above 255
    /// matches, in either mode (KVM's `kvm_apic_match_physical_addr`).
    #[inline]
    pub(crate) fn x2apic_id(&self) -> u32 {
        self.initial_id
    }

    /// Host-side: gives this APIC a new identity. Sets the initial (x2APIC) ID
    /// to `id` and the xAPIC ID to its low 8 bits (the ID register holds only
    /// bits 31:24); in x2APIC mode the LDR is re-derived.
    pub fn set_id(&mut self, id: ApicId) {
        self.initial_id = id.get();
        self.xapic_id = id.get() as u8;
        // In x2APIC mode the LDR follows the ID; so does an x2APIC LDR an
        // xAPIC-mode APIC kept from an earlier x2APIC phase.
    }

    /// Guest write of the xAPIC ID register: bits 31:24 become the xAPIC ID;
    /// the initial ID is unchanged. Ignored in x2APIC mode (read-only, KVM
    /// injects #GP) and when disabled.
    pub(crate) fn write_id_register(&mut self, v: u32) {
        if self.mode == ApicMode::XApic {
            self.xapic_id = (v >> 24) as u8;
        }
    }

    /// The ID register as the guest reads it: `id << 24` in xAPIC mode, the
    /// 32-bit ID in x2APIC mode (0 when disabled).
    pub(crate) fn id_register(&self) -> u32 {
        match self.mode {
            ApicMode::XApic => u32::from(self.xapic_id) << 24,
            ApicMode::X2Apic => self.initial_id,
            ApicMode::Disabled => 0,
        }
    }

    /// A read of the xAPIC register at `offset` from the APIC base (SDM
    /// Vol. 3, "Local APIC Register Address Map"; the x2APIC MSR is
    /// `0x800 + offset / 16`), as the guest sees it. The registers this model
    /// holds: 0x20 ID, 0x30 version, 0x80 TPR, 0x90 APR, 0xA0 PPR, 0xD0 LDR,
    /// 0xE0 DFR (xAPIC only: x2APIC has none), 0xF0 SVR, the 32-bit words
    /// of ISR (0x100..=0x170), TMR (0x180..=0x1F0) and IRR (0x200..=0x270),
    /// 0x280 ESR, 0x300 ICR (bits 31:0; delivery status always 0) and 0x310
    /// ICR2 (xAPIC only: the x2APIC ICR is one 64-bit MSR whose high half
    /// [`Irqchip::write_lapic`](crate::Irqchip::write_lapic) takes). `None`
    /// for any other offset (the LVTs and timer are not modelled).
    ///
    /// # Examples
    ///
    /// ```
    /// use eoi_exit::{ApicId, ApicMode, Destination, DestinationMode, LocalApic};
    ///
    /// let logical = |id| Destination { id, mode: DestinationMode::Logical };
    /// let mut apic = LocalApic::new_enabled(ApicId::new(2), ApicMode::XApic);
    /// assert_eq!(apic.read_register(0x20), Some(2 << 24)); // ID
    /// assert!(apic.write_register(0xD0, 0x04 << 24)); // LDR: logical ID bit 2
    /// assert!(apic.matches(logical(0x04)));
    /// assert!(apic.matches(logical(0x0f))); // a mask of CPUs 0-3
    /// assert!(!apic.matches(logical(0x08)));
    /// assert!(apic.matches(logical(0xff))); // broadcast
    ///
    /// // In x2APIC mode the LDR is derived from the ID (cluster 0, bit 2)
    /// // and guest writes are ignored; there is no DFR.
    /// apic.set_mode(ApicMode::X2Apic);
    /// apic.write_register(0xD0, 0x01 << 24);
    /// assert_eq!(apic.read_register(0xD0), Some(0x0000_0004));
    /// assert!(apic.matches(logical(0x0000_0004)));
    /// assert_eq!(apic.read_register(0xE0), None);
    /// ```
    pub fn read_register(&self, offset: u32) -> Option<u32> {
        let word = |set: &VectorSet, base: u32| set.as_u32_words()[((offset - base) / 16) as usize];
        Some(match offset {
            0x20 => self.id_register(),
            0x30 => self.version(),
            0x80 => u32::from(self.tpr()),
            0x90 => u32::from(self.apr()),
            0xA0 => u32::from(self.ppr()),
            0xD0 => self.ldr(),
            0xE0 if self.mode != ApicMode::X2Apic => self.dfr(),
            0xF0 => self.svr(),
            0x280 => u32::from(self.esr),
            0x300 => self.icr as u32,
            0x310 if self.mode != ApicMode::X2Apic => (self.icr >> 32) as u32,
            o if o % 16 != 0 => return None,
            0x100..=0x170 => word(&self.isr, 0x100),
            0x180..=0x1F0 => word(&self.tmr, 0x180),
            0x200..=0x270 => word(&self.irr, 0x200),
            _ => return None,
        })
    }

    /// A guest write of the xAPIC register at `offset` (see
    /// [`LocalApic::read_register`]): 0x20 ID, 0x80 TPR, 0xD0 LDR, 0xE0 DFR,
    /// 0xF0 SVR, each with the SDM's and KVM's write rules (read-only bits
    /// kept, x2APIC-mode ID and LDR writes ignored). Returns `false` for any
    /// other offset (read-only and unmodelled registers; the EOI register is
    /// [`LocalApic::eoi`]).
    pub fn write_register(&mut self, offset: u32, value: u32) -> bool {
        match offset {
            0x20 => self.write_id_register(value),
            0x80 => self.write_tpr(value as u8),
            0xD0 => self.write_ldr(value),
            0xE0 => self.write_dfr(value),
            0xF0 => self.write_svr(value),
            0x280 => return self.write_esr(value),
            _ => return false,
        }
        true
    }

    /// Guest write of the ESR (SDM "Error Handling"): the errors detected
    /// since the last write become readable and the latch clears; the value
    /// written does not matter, except that x2APIC mode takes only 0 (KVM
    /// injects #GP for any other value; here the write is refused).
    fn write_esr(&mut self, value: u32) -> bool {
        if self.mode == ApicMode::X2Apic && value != 0 {
            return false;
        }
        self.esr = self.esr_pending();
        self.set_esr_pending(0);
        true
    }

    /// Guest write of ICR2 (xAPIC 0x310): the destination, bits 31:24 kept
    /// (KVM masks the rest). Nothing in x2APIC mode (no such MSR).
    pub(crate) fn write_icr2(&mut self, value: u32) {
        if self.mode == ApicMode::XApic {
            self.icr = (self.icr & 0xFFFF_FFFF) | u64::from(value & 0xFF00_0000) << 32;
        }
    }

    /// A guest write of the ICR that sends: in xAPIC mode `value` is ICR
    /// bits 31:0 and the destination comes from ICR2; in x2APIC mode it is
    /// the whole 64-bit MSR 0x830. Records the ICR (delivery status 0) and
    /// returns the interrupt to send, or `None` when nothing is sent:
    ///
    /// * a fixed or lowest-priority IPI with an illegal vector 0-15 (SDM:
    ///   "send illegal vector", ESR bit 5, and the message is not sent);
    /// * a level-triggered fixed, lowest-priority or INIT IPI with the level
    ///   bit (14) clear (KVM's `__apic_accept_irq` drops a de-assert; the
    ///   SDM's "INIT level de-assert" only resynchronizes arbitration IDs);
    /// * the reserved delivery modes 3 and 7 (KVM's remote read and ExtINT,
    ///   which it does not deliver from an ICR either);
    /// * a hardware-disabled APIC (the register is unreachable).
    ///
    /// SMI, NMI, INIT and start-up IPIs are sent with their vector field as
    /// written (the SIPI's start page; ignored by the others).
    pub(crate) fn write_icr(&mut self, value: u64, x2apic_msr: bool) -> Option<Ipi> {
        if self.mode == ApicMode::Disabled || x2apic_msr != (self.mode == ApicMode::X2Apic) {
            return None;
        }
        let low = value as u32 & !ICR_BUSY;
        self.icr = if x2apic_msr {
            (value & !0xFFFF_FFFF) | u64::from(low)
        } else {
            (self.icr & !0xFFFF_FFFF) | u64::from(low)
        };
        let delivery_mode = match (low >> 8) & 7 {
            0 => DeliveryMode::Fixed,
            1 => DeliveryMode::LowestPriority,
            2 => DeliveryMode::Smi,
            4 => DeliveryMode::Nmi,
            5 => DeliveryMode::Init,
            6 => DeliveryMode::StartUp,
            _ => return None,
        };
        let vector = Vector::new(low as u8);
        if delivery_mode.uses_vector() && vector.is_reserved() {
            self.set_esr_pending(self.esr_pending() | ESR_SEND_ILLEGAL_VECTOR);
            return None;
        }
        let level = low & ICR_LEVEL_TRIGGER != 0;
        if level
            && low & ICR_ASSERT == 0
            && (delivery_mode.uses_vector() || delivery_mode == DeliveryMode::Init)
        {
            return None;
        }
        let id = match self.mode {
            ApicMode::X2Apic => (self.icr >> 32) as u32,
            _ => (self.icr >> 56) as u32,
        };
        Some(Ipi {
            message: InterruptMessage {
                destination: Destination {
                    id,
                    mode: if low & ICR_LOGICAL != 0 {
                        DestinationMode::Logical
                    } else {
                        DestinationMode::Physical
                    },
                },
                delivery_mode,
                vector,
                trigger: if level {
                    TriggerMode::Level
                } else {
                    TriggerMode::Edge
                },
            },
            shorthand: match (low >> 18) & 3 {
                0 => Shorthand::None,
                1 => Shorthand::SelfOnly,
                2 => Shorthand::AllIncludingSelf,
                _ => Shorthand::AllExcludingSelf,
            },
        })
    }

    /// A write of the x2APIC SELF IPI MSR (0x83F): a fixed edge interrupt of
    /// `vector` to this APIC (SDM), `None` outside x2APIC mode or with an
    /// illegal vector (ESR bit 5, "send illegal vector").
    pub(crate) fn write_self_ipi(&mut self, value: u32) -> Option<Ipi> {
        if self.mode != ApicMode::X2Apic {
            return None;
        }
        let vector = Vector::new(value as u8);
        if vector.is_reserved() {
            self.set_esr_pending(self.esr_pending() | ESR_SEND_ILLEGAL_VECTOR);
            return None;
        }
        Some(Ipi {
            message: InterruptMessage {
                destination: Destination {
                    id: self.initial_id,
                    mode: DestinationMode::Physical,
                },
                delivery_mode: DeliveryMode::Fixed,
                vector,
                trigger: TriggerMode::Edge,
            },
            shorthand: Shorthand::SelfOnly,
        })
    }

    /// The current mode.
    #[inline]
    pub fn mode(&self) -> ApicMode {
        self.mode
    }

    /// Switches mode (IA32_APIC_BASE write), as KVM's `__kvm_apic_set_base`
    /// does for host-initiated writes: every transition is allowed (the guest
    /// may not go x2APIC to xAPIC or disabled to x2APIC directly; enforcing that
    /// is the caller's job).
    ///
    /// * Entering x2APIC: the ID becomes the initial ID, the LDR is derived from
    ///   it (read-only from then on).
    /// * Entering xAPIC from another mode: the xAPIC ID is reset to the low 8
    ///   bits of the initial ID. The LDR keeps its value (KVM clears it only at
    ///   reset).
    /// * Entering disabled: IRR/ISR/TMR are kept (KVM keeps them).
    pub fn set_mode(&mut self, mode: ApicMode) {
        if mode == self.mode {
            return;
        }
        match mode {
            ApicMode::X2Apic => {
                self.bits |= BIT_LDR_X2;
                self.ldr_xapic = 0;
            }
            ApicMode::XApic => self.xapic_id = self.initial_id as u8,
            ApicMode::Disabled => {}
        }
        self.mode = mode;
    }

    /// Guest write of the LDR: bits 31:24 are kept, the rest read as 0.
    /// Ignored in x2APIC mode (read-only, derived from the ID) and when
    /// disabled.
    ///
    pub(crate) fn write_ldr(&mut self, v: u32) {
        if self.mode == ApicMode::XApic {
            self.ldr_xapic = (v >> 24) as u8;
            self.bits &= !BIT_LDR_X2;
        }
    }

    /// The LDR: logical ID in bits 31:24 (xAPIC), or cluster in 31:16 and
    /// member bit in 15:0 (x2APIC).
    #[inline]
    pub(crate) fn ldr(&self) -> u32 {
        if self.bits & BIT_LDR_X2 != 0 {
            x2apic_ldr(self.initial_id)
        } else {
            u32::from(self.ldr_xapic) << 24
        }
    }

    /// Sets the LDR from a validated snapshot value: the x2APIC value of the
    /// initial ID, or an xAPIC value (bits 23:0 zero).
    pub(crate) fn load_ldr(&mut self, ldr: u32) {
        if ldr == x2apic_ldr(self.initial_id) {
            self.bits |= BIT_LDR_X2;
            self.ldr_xapic = 0;
        } else {
            self.bits &= !BIT_LDR_X2;
            self.ldr_xapic = (ldr >> 24) as u8;
        }
    }

    /// The DFR model, bits 31:28.
    #[inline]
    fn dfr_model(&self) -> u8 {
        self.bits >> 4
    }

    /// Whether the version register advertises directed EOI.
    #[inline]
    pub(crate) fn directed_eoi(&self) -> bool {
        self.bits & BIT_DIRECTED_EOI != 0
    }

    /// Errors detected since the last ESR write (SDM: a write of the ESR
    /// moves them into it): only the illegal-vector ones can be.
    #[inline]
    pub(crate) fn esr_pending(&self) -> u8 {
        (self.bits & ESR_PENDING_MASK) << ESR_PENDING_SHIFT
    }

    /// Sets the errors waiting for the next ESR write (a validated value).
    #[inline]
    pub(crate) fn set_esr_pending(&mut self, v: u8) {
        self.bits = self.bits & !ESR_PENDING_MASK | (v >> ESR_PENDING_SHIFT) & ESR_PENDING_MASK;
    }

    /// Sets the DFR model bits 31:28.
    #[inline]
    pub(crate) fn set_dfr_model(&mut self, model: u8) {
        self.bits = self.bits & 0x0F | model << 4;
    }

    /// Guest write of the DFR: only the model bits 31:28 are writable, bits
    /// 27:0 read as 1 (KVM stores `v | 0x0FFF_FFFF`). `0xFFFF_FFFF` selects the
    /// flat model, `0x0FFF_FFFF` the cluster model; any other value matches
    /// no logical destination. Ignored in x2APIC mode (no DFR) and when
    /// disabled.
    pub(crate) fn write_dfr(&mut self, v: u32) {
        if self.mode == ApicMode::XApic {
            self.set_dfr_model((v >> 28) as u8);
        }
    }

    /// The DFR (its last xAPIC value in x2APIC mode, where it does not exist).
    #[inline]
    pub(crate) fn dfr(&self) -> u32 {
        u32::from(self.dfr_model()) << 28 | 0x0FFF_FFFF
    }

    // ----- SVR and version ---------------------------------------------------

    /// Guest write of the SVR. Bits 9:0 are kept; bit 12 only when the version
    /// register advertises directed EOI (KVM's SPIV write mask); the rest read
    /// as 0. Clearing bit 8 software-disables the APIC: pending IRR/ISR bits
    /// are kept (SDM) but nothing new is accepted.
    pub(crate) fn write_svr(&mut self, v: u32) {
        let mut mask = SVR_WRITABLE;
        if self.directed_eoi() {
            mask |= Svr::SUPPRESS_EOI_BROADCAST.bits();
        }
        self.svr = (v & mask) as u16;
    }

    /// The raw SVR.
    #[inline]
    pub(crate) fn svr(&self) -> u32 {
        u32::from(self.svr)
    }

    /// The SVR flag bits.
    #[inline]
    #[cfg(test)]
    pub(crate) fn svr_flags(&self) -> Svr {
        Svr::from_bits_truncate(self.svr())
    }

    /// SVR bit 8.
    #[inline]
    pub(crate) fn software_enabled(&self) -> bool {
        self.svr() & Svr::APIC_SOFTWARE_ENABLE.bits() != 0
    }

    /// Whether the version register advertises "suppress EOI broadcast"
    /// (bit 24). KVM advertises it only to guests with x2APIC in CPUID and a
    /// userspace (split) I/O APIC. Turning it off leaves an already-set SVR
    /// bit 12 in place but no longer honoured.
    pub fn set_directed_eoi_supported(&mut self, on: bool) {
        if on {
            self.bits |= BIT_DIRECTED_EOI;
        } else {
            self.bits &= !BIT_DIRECTED_EOI;
        }
    }

    /// The version register: version 0x14 (an integrated APIC, KVM's
    /// `APIC_VERSION`), max LVT entry 5 in bits 23:16, and bit 24 when
    /// directed EOI is advertised.
    pub(crate) fn version(&self) -> u32 {
        let mut v = APIC_VERSION | (MAX_LVT << 16);
        if self.directed_eoi() {
            v |= VERSION_DIRECTED_EOI;
        }
        v
    }

    /// Whether EOIs are currently not broadcast: directed EOI advertised and
    /// SVR bit 12 set.
    #[inline]
    pub(crate) fn suppresses_eoi_broadcast(&self) -> bool {
        self.directed_eoi() && self.svr() & Svr::SUPPRESS_EOI_BROADCAST.bits() != 0
    }

    // ----- priorities --------------------------------------------------------

    /// Guest write of the TPR (all 8 bits are kept, as KVM does; CR8 writes
    /// are `cr8 << 4`).
    #[inline]
    pub(crate) fn write_tpr(&mut self, v: u8) {
        self.tpr = v;
    }

    /// The TPR.
    #[inline]
    pub(crate) fn tpr(&self) -> u8 {
        self.tpr
    }

    /// The processor priority (SDM "Processor Priority Register"): TPR when
    /// `TPR[7:4] >= ISRV[7:4]`, else `ISRV & 0xF0`, where ISRV is the highest
    /// ISR vector (0 if none).
    #[inline]
    pub(crate) fn ppr(&self) -> u8 {
        let isrv = match self.highest_isr_cache {
            Some(v) => v.get(),
            None => 0,
        };
        if self.tpr >> 4 >= isrv >> 4 {
            self.tpr
        } else {
            isrv & 0xF0
        }
    }

    /// The arbitration priority (SDM "Arbitration Priority Register", used for
    /// lowest-priority arbitration): TPR when `TPR[7:4] >= IRRV[7:4]` and
    /// `TPR[7:4] > ISRV[7:4]`, else `max(TPR[7:4], ISRV[7:4], IRRV[7:4]) << 4`,
    /// with IRRV/ISRV the highest IRR/ISR vectors (0 if none).
    pub(crate) fn apr(&self) -> u8 {
        let tpr = self.tpr >> 4;
        let isrv = self.highest_isr_cache.map_or(0, |v| v.priority_class());
        let irrv = self.irr.highest().map_or(0, |v| v.priority_class());
        if tpr >= irrv && tpr > isrv {
            self.tpr
        } else {
            tpr.max(isrv).max(irrv) << 4
        }
    }

    // ----- IRR / ISR / TMR ---------------------------------------------------

    /// Interrupt request register.
    #[inline]
    pub fn irr(&self) -> &VectorSet {
        &self.irr
    }

    /// In-service register.
    #[inline]
    pub fn isr(&self) -> &VectorSet {
        &self.isr
    }

    /// Trigger mode register.
    #[inline]
    pub fn tmr(&self) -> &VectorSet {
        &self.tmr
    }

    /// Accepts a message that already matched this APIC.
    ///
    /// Fixed and lowest-priority messages with a legal vector set IRR and set
    /// (level) or clear (edge) the vector's TMR bit; TMR changes nowhere else
    /// (except a host-side restore, [`LocalApic::from_state`]). Checks, in order:
    /// hardware-disabled ([`IgnoreReason::Disabled`]), not vectored
    /// ([`IgnoreReason::NotVectored`]), software-disabled
    /// ([`IgnoreReason::Disabled`], KVM `__apic_accept_irq`), vector 0..=15
    /// ([`IgnoreReason::IllegalVector`], SDM; KVM would accept it).
    ///
    /// # Examples
    ///
    /// ```
    /// use eoi_exit::lapic::IgnoreReason;
    /// use eoi_exit::{
    ///     Acceptance, ApicId, ApicMode, DeliveryMode, Destination, DestinationMode,
    ///     InterruptMessage, LocalApic, TriggerMode, Vector,
    /// };
    ///
    /// let mut apic = LocalApic::new_enabled(ApicId::new(0), ApicMode::XApic);
    /// let mut msg = InterruptMessage {
    ///     destination: Destination { id: 0, mode: DestinationMode::Physical },
    ///     delivery_mode: DeliveryMode::Fixed,
    ///     vector: Vector::new(0x30),
    ///     trigger: TriggerMode::Edge,
    /// };
    /// assert!(matches!(apic.accept(&msg), Acceptance::Accepted { .. }));
    /// // IRR already set: the second interrupt merges into the first.
    /// assert!(matches!(apic.accept(&msg), Acceptance::Coalesced { .. }));
    /// assert_eq!(apic.irr().len(), 1);
    ///
    /// msg.vector = Vector::new(0x0e); // vectors 0..=15 are illegal
    /// let ignored = Acceptance::Ignored(IgnoreReason::IllegalVector);
    /// assert_eq!(apic.accept(&msg), ignored);
    /// ```
    #[inline]
    pub fn accept(&mut self, msg: &InterruptMessage) -> Acceptance {
        self.accept_parts(msg.delivery_mode, msg.vector, msg.trigger)
    }

    /// [`LocalApic::accept`] of a message given by the parts the LAPIC
    /// reads (its destination was matched by the sender).
    #[inline]
    pub(crate) fn accept_parts(
        &mut self,
        mode: DeliveryMode,
        vector: Vector,
        trigger: TriggerMode,
    ) -> Acceptance {
        if self.mode == ApicMode::Disabled {
            return Acceptance::Ignored(IgnoreReason::Disabled);
        }
        if !matches!(mode, DeliveryMode::Fixed | DeliveryMode::LowestPriority) {
            return Acceptance::Ignored(IgnoreReason::NotVectored);
        }
        if !self.software_enabled() {
            return Acceptance::Ignored(IgnoreReason::Disabled);
        }
        if vector.is_reserved() {
            // SDM "receive illegal vector": logged, not delivered.
            self.set_esr_pending(self.esr_pending() | ESR_RECEIVE_ILLEGAL_VECTOR);
            return Acceptance::Ignored(IgnoreReason::IllegalVector);
        }
        self.tmr.set(vector, trigger.is_level());
        if self.irr.insert(vector) {
            Acceptance::Accepted { vector, trigger }
        } else {
            Acceptance::Coalesced { vector, trigger }
        }
    }

    /// The vector [`ack`](Self::ack) would return: the highest IRR vector
    /// whose priority class is above the PPR's (`vector[7:4] > PPR[7:4]`).
    /// `None` when nothing is deliverable or the APIC is hardware-disabled.
    /// Software disable does not block delivery of what is already pending
    /// (SDM; KVM's `kvm_apic_has_interrupt`).
    #[inline]
    pub fn highest_deliverable(&self) -> Option<Vector> {
        if self.mode == ApicMode::Disabled {
            return None;
        }
        let v = self.irr.highest()?;
        if v.priority_class() > self.ppr() >> 4 {
            Some(v)
        } else {
            None
        }
    }

    /// Interrupt acknowledge: moves [`highest_deliverable`](Self::highest_deliverable)
    /// from IRR to ISR and returns it (the PPR rises accordingly).
    ///
    /// Under APIC virtualization the CPU does this itself on virtual-interrupt
    /// delivery (VIRR to VISR, RVI/SVI updated), without a VM exit.
    ///
    /// # Examples
    ///
    /// The TPR holds back vectors whose priority class is not above its own.
    ///
    /// ```
    /// use eoi_exit::{ApicId, ApicMode, LocalApic, Vector};
    ///
    /// let mut apic = LocalApic::new_enabled(ApicId::new(0), ApicMode::XApic);
    /// let mut s = apic.state(); // host side, as KVM_SET_LAPIC
    /// s.irr.insert(Vector::new(0x45));
    /// apic = LocalApic::from_state(&s).unwrap();
    /// apic.write_register(0x80, 0x50); // TPR
    /// assert_eq!(apic.ack(), None); // class 4 <= TPR class 5
    /// apic.write_register(0x80, 0x30);
    /// assert_eq!(apic.ack(), Some(Vector::new(0x45)));
    /// assert!(apic.isr().contains(Vector::new(0x45)) && apic.irr().is_empty());
    /// ```
    #[inline]
    pub fn ack(&mut self) -> Option<Vector> {
        let v = self.highest_deliverable()?;
        self.irr.remove(v);
        self.isr_insert(v);
        Some(v)
    }

    /// Guest write of the EOI register: clears the highest ISR bit.
    ///
    /// Returns `None`, changing nothing, for a spurious EOI (ISR empty) and
    /// when the APIC is hardware-disabled (the register is unreachable).
    /// Otherwise the [`Eoi`] says which vector retired, whether it was level
    /// (TMR) and whether it must be broadcast to the I/O APIC.
    #[must_use = "the EOI may have to be forwarded to the I/O APIC"]
    #[inline]
    pub fn eoi(&mut self) -> Option<Eoi> {
        if self.mode == ApicMode::Disabled {
            return None;
        }
        let vector = self.highest_isr_cache?;
        // The highest in-service vector retires: the next is below it.
        self.isr.remove(vector);
        self.highest_isr_cache = self.isr.highest_below(vector);
        let level = self.tmr.contains(vector);
        Some(Eoi {
            vector,
            level,
            broadcast: level && !self.suppresses_eoi_broadcast(),
        })
    }

    /// The reset an INIT causes (SDM "Local APIC State After an INIT
    /// Reset"; KVM's `kvm_lapic_reset` with `init_event`): the APIC ID and the
    /// mode (`IA32_APIC_BASE`) and the version register are kept; IRR, ISR,
    /// TMR, TPR, ESR and the ICR are cleared; the DFR goes back to flat, the
    /// LDR to 0 (xAPIC; x2APIC keeps the LDR derived from the ID), and the SVR
    /// to 0xFF, which software-disables the APIC until the guest enables it.
    pub(crate) fn init_reset(&mut self) {
        self.set_dfr_model((DFR_FLAT >> 28) as u8);
        if self.mode != ApicMode::X2Apic {
            self.ldr_xapic = 0;
            self.bits &= !BIT_LDR_X2;
        }
        self.svr = Svr::RESET as u16;
        self.tpr = 0;
        self.irr = VectorSet::EMPTY;
        self.isr = VectorSet::EMPTY;
        self.tmr = VectorSet::EMPTY;
        self.icr = 0;
        self.esr = 0;
        self.set_esr_pending(0);
        self.highest_isr_cache = None;
    }

    /// Nothing pending or in service (IRR and ISR empty); ISR through its
    /// cached highest vector.
    #[inline(always)]
    pub(crate) fn idle(&self) -> bool {
        self.highest_isr_cache.is_none() && self.irr.is_empty()
    }

    /// Whether `vector` is pending or in service (IRR or ISR): its EOI is
    /// still to come (KVM `kvm_apic_pending_eoi`).
    #[inline]
    pub(crate) fn pending_eoi(&self, vector: Vector) -> bool {
        self.irr.contains(vector) || self.isr.contains(vector)
    }

    /// Host-side state injection: puts `vector` in service (ISR) with TMR =
    /// `level`, like `KVM_SET_LAPIC` restoring a snapshot. No checks: any
    /// vector, any mode. Used by tests that mirror real-KVM scenarios.
    #[cfg(test)]
    pub(crate) fn set_in_service(&mut self, vector: Vector, level: bool) {
        self.isr_insert(vector);
        self.tmr.set(vector, level);
    }

    /// Host-side state injection: makes `vector` pending (IRR) with TMR =
    /// `level`, like `KVM_SET_LAPIC`. No checks: any vector, any mode.
    #[cfg(test)]
    pub(crate) fn set_pending(&mut self, vector: Vector, level: bool) {
        self.irr.insert(vector);
        self.tmr.set(vector, level);
    }

    /// Whether the internal caches agree with the registers (the highest-ISR
    /// cache equals `isr().highest()`). Always true through the public API;
    /// for fuzzers and restored snapshots.
    #[inline]
    #[cfg(test)]
    pub(crate) fn is_consistent(&self) -> bool {
        self.highest_isr_cache == self.isr.highest()
    }

    /// Recomputes the caches after the crate wrote fields directly (snapshot
    /// restore).
    #[allow(dead_code)]
    fn recompute_caches(&mut self) {
        self.highest_isr_cache = self.isr.highest();
    }

    #[inline]
    fn isr_insert(&mut self, v: Vector) {
        self.isr.insert(v);
        match self.highest_isr_cache {
            Some(h) if h >= v => {}
            _ => self.highest_isr_cache = Some(v),
        }
    }
}

#[cfg(test)]
mod tests;
