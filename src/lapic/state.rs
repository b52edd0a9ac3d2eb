//! [`LocalApicState`]: the saved state of a [`LocalApic`], beside it.

use super::{
    ApicMode, ESR_RECEIVE_ILLEGAL_VECTOR, ESR_SEND_ILLEGAL_VECTOR, LocalApic, Svr, x2apic_ldr,
};
use crate::snapshot::{SNAPSHOT_VERSION, SnapshotError, check_version};
use crate::vector::VectorSet;

/// Everything a [`LocalApic`] holds (the highest-ISR cache is derived and
/// recomputed on restore).
///
/// `irr`, `isr` and `tmr` may hold the illegal vectors 0-15, as KVM's
/// `kvm_lapic_state` may: such an IRR bit is never delivered (its priority
/// class 0 never exceeds the PPR), and such an ISR bit is retired by the EOI
/// that finds it the highest in service, as in KVM. The model itself never
/// accepts them.
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
    /// Interrupt command register: bits 31:0 as last written (delivery
    /// status 0), bits 63:32 the destination (xAPIC: ICR2, ID in 63:56).
    /// Absent from version-2 snapshots (0).
    #[cfg_attr(feature = "serde", serde(default))]
    pub icr: u64,
    /// Error status register as the guest reads it (bit 5 send illegal
    /// vector, bit 6 receive illegal vector).
    #[cfg_attr(feature = "serde", serde(default))]
    pub esr: u8,
    /// Errors detected since the last ESR write, which the next write makes
    /// readable (KVM has no such latch: 0 after a KVM import).
    #[cfg_attr(feature = "serde", serde(default))]
    pub esr_pending: u8,
}

/// SVR bits the model can hold (KVM's write mask plus bit 12).
const SVR_VALID: u32 = 0x3FF | Svr::SUPPRESS_EOI_BROADCAST.bits();

impl LocalApicState {
    /// Checks everything [`LocalApic::from_state`] checks.
    pub(crate) fn validate(&self) -> Result<(), SnapshotError> {
        check_version(self.version)?;
        // IRR, ISR and TMR bits of the illegal vectors 0-15 are accepted: the
        // model never sets them (the SDM's "receive illegal vector"), but KVM
        // stores whatever `KVM_SET_LAPIC` gives it and its selftests
        // round-trip such pages, so a migrated LAPIC may hold them. They
        // behave as in KVM: an IRR bit of priority class 0 never exceeds the
        // PPR, so it is never delivered and stays; an ISR bit is retired by
        // an EOI when it is the highest in service (see `LocalApic::eoi`).
        let bad = |register, value: u32| Err(SnapshotError::invalid(register, value.into()));
        if self.svr & !SVR_VALID != 0 {
            return bad("SVR", self.svr);
        }
        if self.dfr & 0x0FFF_FFFF != 0x0FFF_FFFF {
            return bad("DFR", self.dfr);
        }
        // x2APIC mode: the LDR follows the ID. Otherwise an xAPIC LDR (bits
        // 23:0 read as 0), or the x2APIC one kept from an x2APIC phase.
        let x2_ldr = x2apic_ldr(self.initial_id);
        let ldr_ok = match self.mode {
            ApicMode::X2Apic => self.ldr == x2_ldr,
            ApicMode::XApic | ApicMode::Disabled => {
                self.ldr == x2_ldr || self.ldr & 0x00FF_FFFF == 0
            }
        };
        if !ldr_ok {
            return bad("LDR", self.ldr);
        }
        // Only the illegal-vector errors are ever pending (see `LocalApic::eoi`
        // and the ICR send path).
        if self.esr_pending & !(ESR_SEND_ILLEGAL_VECTOR | ESR_RECEIVE_ILLEGAL_VECTOR) != 0 {
            return bad("pending ESR", self.esr_pending.into());
        }
        Ok(())
    }

    pub(crate) fn apply(&self, apic: &mut LocalApic) {
        apic.initial_id = self.initial_id;
        apic.xapic_id = self.xapic_id;
        apic.mode = self.mode;
        apic.load_ldr(self.ldr);
        apic.set_dfr_model((self.dfr >> 28) as u8);
        // Validated: bits 9:0 and 12 only.
        apic.svr = self.svr as u16;
        apic.tpr = self.tpr;
        apic.set_directed_eoi_supported(self.directed_eoi_supported);
        apic.irr = self.irr;
        apic.isr = self.isr;
        apic.tmr = self.tmr;
        // Verbatim, as `KVM_SET_LAPIC` keeps it (a guest write clears the
        // delivery status bit).
        apic.icr = self.icr;
        apic.esr = self.esr;
        apic.set_esr_pending(self.esr_pending);
        apic.recompute_caches();
    }
}

impl LocalApic {
    /// A snapshot of the whole state. The non-vectored events an
    /// [`Irqchip`](crate::Irqchip) latches in the LAPIC (INIT, SIPI, NMI,
    /// SMI, ExtINT) are saved beside it, in `VcpuState::events`.
    pub fn state(&self) -> LocalApicState {
        LocalApicState {
            version: SNAPSHOT_VERSION,
            initial_id: self.initial_id,
            xapic_id: self.xapic_id,
            mode: self.mode,
            ldr: self.ldr(),
            dfr: self.dfr(),
            svr: self.svr(),
            tpr: self.tpr,
            directed_eoi_supported: self.directed_eoi(),
            irr: self.irr,
            isr: self.isr,
            tmr: self.tmr,
            icr: self.icr,
            esr: self.esr,
            esr_pending: self.esr_pending(),
        }
    }

    /// A new LAPIC equal to the captured one. To restore in place, assign:
    /// `apic = LocalApic::from_state(&s)?`.
    pub fn from_state(s: &LocalApicState) -> Result<Self, SnapshotError> {
        s.validate()?;
        let mut apic = LocalApic::new(crate::ApicId::new(s.initial_id));
        s.apply(&mut apic);
        Ok(apic)
    }
}

impl LocalApicState {
    /// The PPR a LAPIC in this state reads (TPR against the highest ISR
    /// class), for the KVM register page.
    #[cfg_attr(not(feature = "kvm"), allow(dead_code))]
    pub(crate) fn ppr(&self) -> u8 {
        let mut a = LocalApic::new(crate::ApicId::new(self.initial_id));
        a.tpr = self.tpr;
        a.isr = self.isr;
        a.recompute_caches();
        a.ppr()
    }

    /// The version register a LAPIC in this state reads.
    #[cfg_attr(not(feature = "kvm"), allow(dead_code))]
    pub(crate) fn version_register(&self) -> u32 {
        let mut a = LocalApic::new(crate::ApicId::new(self.initial_id));
        a.set_directed_eoi_supported(self.directed_eoi_supported);
        a.version()
    }
}
