//! [`VcpuEvents`]: the non-vectored events of one vCPU (SMI, NMI, INIT,
//! start-up, ExtINT), which never enter IRR/ISR.

use crate::vector::Vector;

#[cfg(doc)]
use super::{Effects, Irqchip, VcpuState};

/// The non-vectored events of one vCPU, in two roles (like KVM's
/// `kvm_vcpu_events`, one plain struct for both):
///
/// * **taken**: what [`Irqchip::take_events`] hands the VMM at a VM entry,
///   which it MUST act on (reset the vCPU, start it, inject, enter SMM, ask
///   the PIC);
/// * **pending**: what the chip holds between deliveries and that call, as
///   saved in [`VcpuState::events`].
///
/// Each field says what it means in each role. KVM's rules, which the chip
/// follows:
///
/// * an INIT is latched and taken at the next entry that INIT does not
///   block (KVM's `kvm_apic_init_sipi_allowed`: not in SMM, not in VMX
///   non-root); taking it resets the LAPIC (KVM's `kvm_lapic_reset` for
///   INIT), drops the pending NMIs, SMI and ExtINT (`kvm_vcpu_reset`) and
///   puts every vCPU but the BSP (vCPU 0, KVM's default `bsp_vcpu_id`) in
///   wait-for-SIPI (`KVM_MP_STATE_INIT_RECEIVED`);
/// * a start-up IPI is latched with its vector and taken only in
///   wait-for-SIPI; one found at an entry in any other state, or while INIT
///   is blocked, is dropped; a new INIT drops a latched SIPI;
/// * NMIs: at most two pending, and one once an NMI is in service or
///   injected (KVM's `process_nmi`); a vCPU in wait-for-SIPI takes none;
/// * an SMI is one pending flag (KVM's `smi_pending`); ExtINT (SDM: the vector
///   comes from the 8259A's interrupt acknowledge) is one pending flag too.
///   KVM drops an ExtINT message from an I/O APIC entry or MSI
///   (`__apic_accept_irq`: its ExtINT comes from the PIC output, wired to
///   LINT0); the model follows the SDM and hands it to the VMM.
///
/// # Examples
///
/// An AP started by INIT and SIPI from the BSP, through the x2APIC ICR.
///
/// ```
/// use eoi_exit::irqchip::{Effects, LapicWrite};
/// use eoi_exit::{ApicMode, Irqchip, IrqchipConfig, VcpuId, VcpuSlot, Vector};
///
/// let chip: Irqchip<_> =
///     Irqchip::new(IrqchipConfig::default(), ApicMode::X2Apic, [const { VcpuSlot::new() }; 2]);
/// let (bsp, ap) = (VcpuId::new(0), VcpuId::new(1));
/// let mut fx = Effects::new();
/// // INIT (delivery mode 5) to APIC ID 1, then SIPI (6) with start page 0x9A.
/// chip.write_lapic(bsp, LapicWrite::Icr(1 << 32 | 5 << 8), &mut fx);
/// assert!(fx.kick.contains(ap));
/// let taken = chip.take_events(ap, false, false, &mut fx);
/// assert!(taken.init && taken.wait_for_sipi); // reset; do not run it yet
///
/// chip.write_lapic(bsp, LapicWrite::Icr(1 << 32 | 6 << 8 | 0x9A), &mut fx);
/// let taken = chip.take_events(ap, false, false, &mut fx);
/// assert_eq!(taken.sipi, Some(Vector::new(0x9A))); // CS 0x9A00, IP 0
/// assert!(!taken.wait_for_sipi);
///
/// // A second SIPI finds the AP running: dropped.
/// chip.write_lapic(bsp, LapicWrite::Icr(1 << 32 | 6 << 8 | 0x9B), &mut fx);
/// assert_eq!(chip.take_events(ap, false, false, &mut fx).sipi, None);
/// ```
#[must_use = "a taken event is gone from the chip: the VMM must act on it"]
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct VcpuEvents {
    /// Taken: the vCPU took an INIT; its LAPIC was reset, and the VMM MUST
    /// reset the vCPU's registers to their INIT state (SDM "Processor State
    /// After Reset"). Pending: an INIT is latched (KVM's `KVM_APIC_INIT` in
    /// `pending_events`; `smi.latched_init` in `kvm_vcpu_events`).
    pub init: bool,
    /// Taken: a start-up IPI started the vCPU: the VMM MUST load CS selector
    /// `vector << 8`, CS base `vector << 12` and IP 0 (KVM's
    /// `kvm_vcpu_deliver_sipi_vector`) and run it. Pending: a latched SIPI
    /// and its vector (`KVM_APIC_SIPI`, `sipi_vector`).
    pub sipi: Option<Vector>,
    /// Both roles: the vCPU is in wait-for-SIPI (KVM's
    /// `KVM_MP_STATE_INIT_RECEIVED`): the VMM MUST NOT run it until a take
    /// reports a `sipi`.
    pub wait_for_sipi: bool,
    /// Taken: NMIs pending at this entry, after KVM's limit (0..=2). When
    /// the call said NMIs are not blocked and this is at least 1, the chip
    /// counted one as injected and the VMM MUST inject it now; any NMI left
    /// (this minus the injected one) stays pending and the VMM SHOULD open an
    /// NMI window (NMI-window exiting) to take it. Pending: NMIs received
    /// and not yet injected, at most 2 (KVM's `nmi_queued` + `nmi_pending`).
    pub nmi: u8,
    /// Taken: an SMI the VMM now holds and MUST deliver when the vCPU can
    /// enter SMM (KVM's `smi_pending`). Pending: an SMI received.
    pub smi: bool,
    /// Taken: an ExtINT the VMM now holds: the vCPU MUST take its vector from
    /// the 8259A (interrupt acknowledge) when interrupts are open. Pending:
    /// an ExtINT message received.
    pub extint: bool,
}

impl VcpuEvents {
    /// Nothing pending, not in wait-for-SIPI.
    pub(crate) const NONE: VcpuEvents = VcpuEvents {
        init: false,
        sipi: None,
        wait_for_sipi: false,
        nmi: 0,
        smi: false,
        extint: false,
    };

    /// KVM's limit on pending NMIs: one running and one pending after it.
    pub(crate) const NMI_MAX: u8 = 2;

    /// Whether nothing is pending (wait-for-SIPI is a state, not an event).
    pub(crate) const fn is_idle(&self) -> bool {
        !self.init && self.sipi.is_none() && self.nmi == 0 && !self.smi && !self.extint
    }
}

/// [`VcpuEvents`] as the chip stores them, in the LAPIC's two spare bytes:
/// bit 0 INIT, bit 1 wait-for-SIPI, bit 2 SMI, bit 3 ExtINT, bits 4-5 the
/// NMI count (at most [`VcpuEvents::NMI_MAX`]), bit 6 a latched SIPI whose
/// vector is bits 15:8. Sixteen bytes per vCPU would have cost the slot
/// eight (alignment), 2 KiB at 256 vCPUs.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
pub(crate) struct PackedEvents(u16);

impl PackedEvents {
    /// Nothing pending, not in wait-for-SIPI.
    pub(crate) const NONE: PackedEvents = PackedEvents(0);

    const INIT: u16 = 1 << 0;
    const WAIT_FOR_SIPI: u16 = 1 << 1;
    const SMI: u16 = 1 << 2;
    const EXTINT: u16 = 1 << 3;
    const NMI_SHIFT: u16 = 4;
    const SIPI: u16 = 1 << 6;

    /// Packs `e`; an NMI count above the limit is cut to it (validated
    /// snapshots never hold one).
    #[inline]
    pub(crate) const fn pack(e: VcpuEvents) -> PackedEvents {
        let nmi = if e.nmi > VcpuEvents::NMI_MAX {
            VcpuEvents::NMI_MAX
        } else {
            e.nmi
        };
        let mut bits = (nmi as u16) << Self::NMI_SHIFT;
        if e.init {
            bits |= Self::INIT;
        }
        if e.wait_for_sipi {
            bits |= Self::WAIT_FOR_SIPI;
        }
        if e.smi {
            bits |= Self::SMI;
        }
        if e.extint {
            bits |= Self::EXTINT;
        }
        if let Some(v) = e.sipi {
            bits |= Self::SIPI | (v.get() as u16) << 8;
        }
        PackedEvents(bits)
    }

    /// The events.
    #[inline]
    pub(crate) const fn get(self) -> VcpuEvents {
        let b = self.0;
        VcpuEvents {
            init: b & Self::INIT != 0,
            sipi: if b & Self::SIPI != 0 {
                Some(Vector::new((b >> 8) as u8))
            } else {
                None
            },
            wait_for_sipi: b & Self::WAIT_FOR_SIPI != 0,
            nmi: ((b >> Self::NMI_SHIFT) & 3) as u8,
            smi: b & Self::SMI != 0,
            extint: b & Self::EXTINT != 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packed_events_round_trip_every_state_kvm_can_hold() {
        for bits in 0u32..1 << 6 {
            for nmi in 0..=VcpuEvents::NMI_MAX {
                for sipi in [
                    None,
                    Some(Vector::new(0)),
                    Some(Vector::new(0x9A)),
                    Some(Vector::new(0xFF)),
                ] {
                    let e = VcpuEvents {
                        init: bits & 1 != 0,
                        sipi: if bits & 2 != 0 { sipi } else { None },
                        wait_for_sipi: bits & 4 != 0,
                        nmi,
                        smi: bits & 8 != 0,
                        extint: bits & 16 != 0,
                    };
                    assert_eq!(PackedEvents::pack(e).get(), e);
                }
            }
        }
    }
}
