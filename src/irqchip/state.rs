//! [`IrqchipState`]: the saved state of an [`Irqchip`], beside it.

use super::{Irqchip, IrqchipConfig, Vcpu, VcpuStats};
#[cfg(doc)]
use crate::EoiExitMap;
use crate::exit_bitmap::EoiExitMapState;
use crate::ioapic::IoapicState;
use crate::lapic::{LocalApic, LocalApicState};
#[cfg(feature = "serde")]
use crate::snapshot::array;
use crate::snapshot::{SNAPSHOT_VERSION, SnapshotError, check_version, first_pin_beyond};

/// One vCPU of an [`IrqchipState`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct VcpuState {
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
pub struct IrqchipState<const VCPUS: usize, const PINS: usize = 24> {
    /// [`SNAPSHOT_VERSION`].
    pub version: u16,
    /// `VCPUS` when captured.
    pub vcpus: u16,
    /// The chip's configuration (policy, ack notifier pins, RTC tracking,
    /// EOI order, arbitration, I/O APIC configuration).
    pub config: IrqchipConfig,
    /// The I/O APIC.
    pub ioapic: IoapicState<PINS>,
    /// Every vCPU, by index.
    #[cfg_attr(feature = "serde", serde(with = "array"))]
    pub vcpu: [VcpuState; VCPUS],
}

impl<const VCPUS: usize, const PINS: usize> IrqchipState<VCPUS, PINS> {
    /// Checks everything [`Irqchip::restore`] checks.
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

impl Vcpu {
    fn state(&self) -> VcpuState {
        VcpuState {
            apic: self.apic.state(),
            map: self.map.state(),
            stats: self.stats,
        }
    }
}

impl<const VCPUS: usize, const PINS: usize> Irqchip<VCPUS, PINS> {
    /// A consistent snapshot: takes the I/O APIC lock, then every vCPU's in
    /// index order (the documented lock order), so no call is half-seen.
    pub fn state(&self) -> IrqchipState<VCPUS, PINS> {
        let (io, vcpus) = self.lock_all();
        IrqchipState {
            version: SNAPSHOT_VERSION,
            vcpus: VCPUS as u16,
            config: *self.config(),
            ioapic: io.state(),
            vcpu: core::array::from_fn(|i| vcpus[i].state()),
        }
    }

    /// Replaces the whole chip (configuration included) with the snapshot,
    /// verbatim: no re-injection, no rescan. The VMM MUST load each vCPU's
    /// VMCS bitmap ([`Irqchip::vmcs_update`], or the whole
    /// [`EoiExitMap::loaded`] bitmap into a fresh VMCS) before it runs, and
    /// re-arm its `deliver_later` timers. On error nothing changes.
    pub fn restore(&mut self, s: &IrqchipState<VCPUS, PINS>) -> Result<(), SnapshotError> {
        s.validate()?;
        let (config, io, vcpus) = self.parts_mut();
        *config = s.config;
        io.restore_exact(s.ioapic.config, &s.ioapic.registers());
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
    pub fn from_state(s: &IrqchipState<VCPUS, PINS>) -> Result<Self, SnapshotError> {
        s.validate()?;
        let mut chip = Irqchip::with_apics(
            s.config,
            core::array::from_fn(|i| LocalApic::new(crate::ApicId::new(i as u32))),
        );
        chip.restore(s)?;
        Ok(chip)
    }
}
