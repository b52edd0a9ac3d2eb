//! [`IoapicConfig`]: the version register, the masked-edge rule and the
//! destination format, the places where KVM, QEMU and the 82093AA differ.

use crate::routes::MsiFormat;
use crate::types::InvalidValue;

#[cfg(doc)]
use super::{Ioapic, IoapicRegisters};

/// The version register's low byte.
///
/// The default is [`IoapicVersion::V11`], the version of the 82093AA and of
/// KVM's in-kernel I/O APIC: guests EOI its level interrupts only through the
/// local APIC's broadcast, which is the path the EOI-exit bitmap governs.
/// [`IoapicVersion::V20`] adds the EOI register (QEMU's userspace I/O APIC,
/// used with KVM's split irqchip).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[repr(u8)]
pub enum IoapicVersion {
    /// 0x11: the 82093AA and KVM's in-kernel I/O APIC; no EOI register.
    #[default]
    V11 = 0x11,
    /// 0x20: ICH-style I/O APIC with the EOI register at 0x40 (QEMU's default).
    V20 = 0x20,
}

impl TryFrom<u8> for IoapicVersion {
    type Error = InvalidValue;
    fn try_from(v: u8) -> Result<Self, InvalidValue> {
        match v {
            0x11 => Ok(IoapicVersion::V11),
            0x20 => Ok(IoapicVersion::V20),
            _ => Err(InvalidValue(v as u64)),
        }
    }
}

impl From<IoapicVersion> for u8 {
    fn from(v: IoapicVersion) -> u8 {
        v as u8
    }
}

/// What happens to an edge that arrives on a masked pin.
///
/// The default is [`MaskedEdge::Latch`], KVM's behaviour, so saved state and
/// `KVM_SET_IRQCHIP` re-injection match a real KVM guest; [`MaskedEdge::Drop`]
/// follows the datasheet and QEMU.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum MaskedEdge {
    /// KVM: the edge is recorded (KVM's `irr` without `irr_delivered`, here
    /// [`IoapicState::pending_edge`](super::IoapicState::pending_edge)) while the line stays asserted, but an
    /// unmask does **not** deliver it; KVM only delivers it when the state is
    /// written back (`KVM_SET_IRQCHIP`, here [`Ioapic::set_registers`]). A deassert
    /// forgets it.
    #[default]
    Latch,
    /// 82093AA datasheet (and QEMU): the edge is ignored.
    Drop,
}

/// Static configuration of an [`Ioapic`].
///
/// `IoapicConfig::default()` is version 0x11, [`MaskedEdge::Latch`], ID 0,
/// [`MsiFormat::Xapic`], i.e. KVM's in-kernel I/O APIC.
///
/// # Examples
///
/// A version 0x20 I/O APIC has an EOI register: the guest clears remote IRR
/// by writing the vector to it (Linux does with directed EOI).
///
/// ```
/// use eoi_exit::ioapic::IOEOI;
/// use eoi_exit::{
///     Ioapic, IoapicConfig, IoapicVersion, Pin, RedirectionEntry, TriggerMode, Vector,
/// };
///
/// assert_eq!(IoapicConfig::default().version, IoapicVersion::V11);
///
/// let (pin, v) = (Pin::new(10), Vector::new(0x40));
/// for version in [IoapicVersion::V11, IoapicVersion::V20] {
///     let config = IoapicConfig { version, ..IoapicConfig::default() };
///     let mut io: Ioapic = Ioapic::new(config);
///     let e = RedirectionEntry::fixed(v, TriggerMode::Level, 0);
///     let _ = io.write_entry(pin, e.0);
///     let _ = io.set_line(pin, true);
///     let _ = io.set_line(pin, false);
///     let _ = io.mmio_write(IOEOI, 4, 0x40);
///     // Version 0x11 has no EOI register: the write is ignored.
///     let cleared = version == IoapicVersion::V20;
///     assert_eq!(io.entry(pin).unwrap().remote_irr(), !cleared);
/// }
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct IoapicConfig {
    /// Version register value (and whether the EOI register exists).
    pub version: IoapicVersion,
    /// Masked-edge behaviour.
    pub masked_edge: MaskedEdge,
    /// Initial I/O APIC ID (bits 3:0 are used).
    pub id: u8,
    /// How destinations above 7 are carried, on the interrupt bus this I/O
    /// APIC sends on: whether redirection-entry bits 55:49 are destination
    /// bits 14:8 ([`MsiFormat::ExtDestId`], Linux's
    /// `KVM_FEATURE_MSI_EXT_DEST_ID`) or reserved ([`MsiFormat::Xapic`], the
    /// default, and [`MsiFormat::X2apicApi`]). An
    /// [`Irqchip`](crate::Irqchip) decodes the guest's MSIs
    /// ([`Irqchip::send_msi`](crate::Irqchip::send_msi)) with the same
    /// format: Linux's one CPUID bit covers both.
    ///
    /// The default is [`MsiFormat::Xapic`], what the guest sees from
    /// hardware, from KVM's in-kernel I/O APIC (an 8-bit `dest_id`) and from
    /// a VMM that does not advertise the feature: a guest writes the bits
    /// only when told it may. Choose [`MsiFormat::ExtDestId`] when the VMM
    /// sets `KVM_FEATURE_MSI_EXT_DEST_ID` in the guest's CPUID (QEMU does
    /// with the split irqchip) and the guest has APIC IDs above 255.
    ///
    /// A snapshot written before this field existed (version 5 and older)
    /// loads with [`MsiFormat::ExtDestId`], the decoding those versions
    /// always applied.
    #[cfg_attr(feature = "serde", serde(default = "format_before_v6"))]
    pub msi_format: MsiFormat,
}

/// The destination format of a snapshot older than version 6: entry bits
/// 55:49 were always decoded.
#[cfg(feature = "serde")]
fn format_before_v6() -> MsiFormat {
    MsiFormat::ExtDestId
}

impl IoapicConfig {
    /// Version 0x11, [`MaskedEdge::Latch`], ID 0, [`MsiFormat::Xapic`]:
    /// KVM's in-kernel I/O APIC.
    pub(crate) const DEFAULT: IoapicConfig = IoapicConfig {
        version: IoapicVersion::V11,
        masked_edge: MaskedEdge::Latch,
        id: 0,
        msi_format: MsiFormat::Xapic,
    };
}
