//! MSI messages and split-irqchip GSI routes, in the three address formats
//! that carry a destination.
//!
//! With KVM's split irqchip the I/O APIC lives in the VMM, and each pin reaches
//! the in-kernel LAPICs as an MSI route installed with `KVM_SET_GSI_ROUTING`.
//! KVM scans the routes of GSIs below the reserved pin count
//! (`KVM_CAP_SPLIT_IRQCHIP`'s `args[0]`) whose data has the level bit set.
//!
//! # Who decodes which destination bits
//!
//! Read in Linux and QEMU (behaviour only):
//!
//! * **The guest.** Linux (`__irq_msi_compose_msg` in
//!   `arch/x86/kernel/apic/apic.c`) writes destination bits 7:0 to address
//!   bits 19:12 and, only when the hypervisor advertises
//!   `KVM_FEATURE_MSI_EXT_DEST_ID` (`kvm_msi_ext_dest_id` in
//!   `arch/x86/kernel/kvm.c`, behind `x86_msi_ext_dest_id()`) and the APIC ID
//!   is below 0x8000, bits 14:8 to address bits 11:5 (`virt_destid_8_14`).
//!   Otherwise it warns on an ID above 0xFF. `address_hi` stays 0 (only an
//!   IOMMU's own messages use it). Its I/O APIC entries are composed from
//!   the same message (`ioapic_setup_msg_from_msi` in `io_apic.c`): entry
//!   bits 55:49 are the address's bits 11:5, so the same seven bits
//!   (`IO_APIC_route_entry::virt_destid_8_14`) carry destination 14:8.
//! * **KVM** never decodes bits 11:5 or entry bits 55:49. A route or a
//!   `KVM_SIGNAL_MSI` is decoded by `kvm_msi_to_lapic_irq` (named
//!   `kvm_set_msi_irq` in older kernels; `arch/x86/kvm/irq.c`, formerly
//!   `irq_comm.c`) with
//!   `x86_msi_msg_get_destid(msg, kvm->arch.x2apic_format)`: address bits
//!   19:12, plus `address_hi` bits 31:8 as destination 31:8 only when
//!   userspace enabled `KVM_CAP_X2APIC_API` with
//!   `KVM_X2APIC_API_USE_32BIT_IDS` (`x2apic_format`). With that flag a
//!   route whose `address_hi` bits 7:0 are not zero is refused
//!   (`kvm_msi_route_invalid`: `-EINVAL` from `KVM_SET_GSI_ROUTING` and
//!   `KVM_SIGNAL_MSI`); without it `address_hi` is ignored whatever it holds.
//!   KVM's in-kernel I/O APIC has an 8-bit destination
//!   (`kvm_ioapic_redirect_entry::fields.dest_id`, bits 63:56).
//! * **The VMM** translates. QEMU's I/O APIC copies entry bits 63:48 to
//!   address bits 19:4 (`ioapic_entry_parse` in `hw/intc/ioapic.c`), and
//!   before it installs a route, `kvm_arch_fixup_msi_route` calls
//!   `kvm_swizzle_msi_ext_dest_id` (`target/i386/kvm/kvm.c`): when the guest
//!   has `KVM_FEATURE_MSI_EXT_DEST_ID` (QEMU offers it with the split
//!   irqchip only) and the address has extended bits, no remappable-format
//!   bit 4 and `address_hi` 0, it moves bits 11:5 to `address_hi` bits
//!   14:8, which KVM reads with the x2APIC API (QEMU enables it with
//!   `USE_32BIT_IDS | DISABLE_BROADCAST_QUIRK` in `kvm_enable_x2apic`).
//!
//! [`MsiFormat`] names the three decodings; [`Msi::message`] and
//! [`Msi::from_message`] take one, and
//! [`IoapicConfig::msi_format`](crate::IoapicConfig::msi_format) chooses the
//! one an [`Ioapic`](crate::Ioapic) and an [`Irqchip`](crate::Irqchip) apply.

use crate::types::{
    DeliveryMode, Destination, DestinationMode, InterruptMessage, InvalidValue, TriggerMode,
};
use crate::vector::Vector;

/// How an MSI address (and an I/O APIC entry, whose message is one) carries
/// the destination bits above 7.
///
/// | format | destination bits | who decodes it this way |
/// |---|---|---|
/// | [`Xapic`](Self::Xapic) | 7:0 = address 19:12 (entry 63:56) | hardware without interrupt remapping; KVM's routes and `KVM_SIGNAL_MSI` without the x2APIC API; KVM's in-kernel I/O APIC |
/// | [`ExtDestId`](Self::ExtDestId) | and 14:8 = address 11:5 (entry 55:49) | a guest told `KVM_FEATURE_MSI_EXT_DEST_ID`, as Linux defines it; decoded by the VMM, never by KVM |
/// | [`X2apicApi`](Self::X2apicApi) | and 31:8 = `address_hi` 31:8 | KVM's routes and `KVM_SIGNAL_MSI` with `KVM_X2APIC_API_USE_32BIT_IDS` |
///
/// The default is [`Xapic`](Self::Xapic): the extended bits are reserved in
/// the SDM's and the 82093AA's layouts, a guest uses them only when its
/// hypervisor says so, and KVM itself never reads them, so decoding them
/// uninvited would deliver where neither hardware nor KVM does.
///
/// The module documentation lists the Linux, KVM and QEMU functions each
/// rule was read from.
///
/// # Examples
///
/// A guest told `KVM_FEATURE_MSI_EXT_DEST_ID` routes a pin to APIC ID 300
/// (0x12C): bits 63:56 hold 0x2C, bits 55:49 hold 1.
///
/// ```
/// use eoi_exit::{
///     Ioapic, IoapicConfig, MsiFormat, Pin, RedirectionEntry, Rescan, TriggerMode, Vector,
/// };
///
/// let e = RedirectionEntry::fixed(Vector::new(0x40), TriggerMode::Level, 300);
/// for (format, dest) in [(MsiFormat::Xapic, 0x2C), (MsiFormat::ExtDestId, 300)] {
///     let mut io: Ioapic = Ioapic::new(IoapicConfig { msi_format: format, ..IoapicConfig::default() });
///     // The vCPUs to rescan: the destination as this I/O APIC decodes it.
///     let Rescan::Targets { new: Some(d), .. } = io.write_entry(Pin::new(4), e.0).rescan else {
///         unreachable!("a fixed entry names its destination")
///     };
///     assert_eq!(d.id, dest);
/// }
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum MsiFormat {
    /// Destination 7:0 only: address bits 11:5 and `address_hi`, entry bits
    /// 55:49, are ignored. A route with `address_hi` set is still valid
    /// (KVM accepts it without the x2APIC API and ignores the high half).
    #[default]
    Xapic,
    /// Linux's extended destination ID (`KVM_FEATURE_MSI_EXT_DEST_ID`):
    /// destination 14:8 in address bits 11:5 and entry bits 55:49, up to
    /// APIC ID 0x7FFF. `address_hi` is ignored (a device's message to the
    /// `0xFEEx_xxxx` window has none) and so is address bit 4 (remappable
    /// format: interrupt remapping is not modelled).
    ExtDestId,
    /// KVM's x2APIC API (`KVM_X2APIC_API_USE_32BIT_IDS`): destination 31:8
    /// in `address_hi` bits 31:8, any 32-bit ID including the x2APIC
    /// broadcast `0xFFFF_FFFF`. Address bits 11:5 are ignored, and a message
    /// with `address_hi` bits 7:0 set is invalid (KVM refuses the route).
    /// An I/O APIC entry's message has no `address_hi`, so an entry decodes
    /// as under [`Xapic`](Self::Xapic). An [`Irqchip`](crate::Irqchip) with
    /// this format also drops KVM's x2APIC broadcast quirk, as VMMs enable
    /// the API (QEMU sets `USE_32BIT_IDS | DISABLE_BROADCAST_QUIRK`
    /// together): a message to `0xFF` is then APIC ID 255 (logically,
    /// cluster 0, members 0-7) for an x2APIC-mode LAPIC. Under the other
    /// formats the chip keeps KVM's default and rewrites it to the x2APIC
    /// broadcast.
    X2apicApi,
}

impl MsiFormat {
    /// The widest destination the address format carries.
    #[inline]
    pub(crate) const fn max_destination(self) -> u32 {
        match self {
            MsiFormat::Xapic => 0xFF,
            MsiFormat::ExtDestId => 0x7FFF,
            MsiFormat::X2apicApi => u32::MAX,
        }
    }
}

/// An MSI message: the address and data a device (or a KVM GSI route) writes.
///
/// Address (SDM "Message Signalled Interrupts"): bits 31:20 = 0xFEE, 19:12 =
/// destination ID 7:0, 11:5 = destination 14:8 under
/// [`MsiFormat::ExtDestId`], 3 = redirection hint, 2 = destination mode.
/// `address_hi` bits 31:8 = destination 31:8 under [`MsiFormat::X2apicApi`].
/// Which bits count is the [`MsiFormat`]'s choice, not the message's.
///
/// Data: bits 7:0 = vector, 10:8 = delivery mode, 14 = level (assert),
/// 15 = trigger mode.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct Msi {
    /// Low 32 bits of the address.
    pub address_lo: u32,
    /// High 32 bits of the address.
    pub address_hi: u32,
    /// The data word.
    pub data: u32,
}

impl Msi {
    /// The fixed upper bits of every MSI address.
    pub(crate) const ADDRESS_BASE: u32 = 0xFEE0_0000;
    /// Data bit 15: trigger mode.
    pub(crate) const DATA_LEVEL_TRIGGER: u32 = 1 << 15;
    /// Data bit 14: level (assert).
    pub(crate) const DATA_ASSERT: u32 = 1 << 14;
    /// Address bit 2: destination mode.
    pub(crate) const ADDR_LOGICAL: u32 = 1 << 2;

    /// Encodes an interrupt message in `format`: destination 7:0 in address
    /// bits 19:12, and bits 14:8 in address bits 11:5
    /// ([`MsiFormat::ExtDestId`]) or bits 31:8 in `address_hi`
    /// ([`MsiFormat::X2apicApi`]). A destination the format cannot carry
    /// (above 0xFF for [`MsiFormat::Xapic`], above 0x7FFF for
    /// [`MsiFormat::ExtDestId`]) is refused with the destination as the
    /// error, never truncated: a truncated destination reaches another vCPU.
    ///
    /// A split-irqchip VMM installs a pin's GSI route as
    /// `Msi::from_message(&entry.message(io_format)?, route_format)`: the
    /// entry decoded as the guest meant it, encoded as KVM reads it. With
    /// `io_format` [`MsiFormat::ExtDestId`] and `route_format`
    /// [`MsiFormat::X2apicApi`] that is QEMU's
    /// `kvm_swizzle_msi_ext_dest_id`.
    ///
    /// # Examples
    ///
    /// ```
    /// use eoi_exit::{
    ///     DeliveryMode, Destination, DestinationMode, InterruptMessage, InvalidValue, Msi,
    ///     MsiFormat, TriggerMode, Vector,
    /// };
    ///
    /// let msg = InterruptMessage {
    ///     destination: Destination { id: 1, mode: DestinationMode::Physical },
    ///     delivery_mode: DeliveryMode::Fixed,
    ///     vector: Vector::new(0x40),
    ///     trigger: TriggerMode::Level,
    /// };
    /// let msi = Msi::from_message(&msg, MsiFormat::Xapic).unwrap();
    /// assert_eq!(msi.address_lo, 0xfee0_1000); // 0xFEE, destination 1 in bits 19:12
    /// assert_eq!(msi.data, 0xc040); // trigger (15) and assert (14), vector 0x40
    /// assert_eq!(msi.message(MsiFormat::Xapic), Some(msg));
    ///
    /// // APIC ID 0x123 in each format.
    /// let far = InterruptMessage {
    ///     destination: Destination { id: 0x123, mode: DestinationMode::Physical },
    ///     ..msg
    /// };
    /// assert_eq!(Msi::from_message(&far, MsiFormat::Xapic), Err(InvalidValue(0x123)));
    /// let ext = Msi::from_message(&far, MsiFormat::ExtDestId).unwrap();
    /// assert_eq!((ext.address_lo, ext.address_hi), (0xfee2_3000 | 0x1 << 5, 0));
    /// let api = Msi::from_message(&far, MsiFormat::X2apicApi).unwrap();
    /// assert_eq!((api.address_lo, api.address_hi), (0xfee2_3000, 0x100));
    /// // KVM reads neither form without its own: the ID shrinks to 0x23.
    /// assert_eq!(ext.message(MsiFormat::X2apicApi).unwrap().destination.id, 0x23);
    /// assert_eq!(api.message(MsiFormat::Xapic).unwrap().destination.id, 0x23);
    /// ```
    pub const fn from_message(
        msg: &InterruptMessage,
        format: MsiFormat,
    ) -> Result<Self, InvalidValue> {
        let d = msg.destination.id;
        if d > format.max_destination() {
            return Err(InvalidValue(d as u64));
        }
        let mut address_lo = Self::ADDRESS_BASE | (d & 0xff) << 12;
        let mut address_hi = 0;
        match format {
            MsiFormat::Xapic => {}
            MsiFormat::ExtDestId => address_lo |= (d >> 8) << 5,
            MsiFormat::X2apicApi => address_hi = d & 0xffff_ff00,
        }
        if matches!(msg.destination.mode, DestinationMode::Logical) {
            address_lo |= Self::ADDR_LOGICAL;
        }
        let mut data = msg.vector.get() as u32 | (msg.delivery_mode as u32) << 8;
        if msg.trigger.is_level() {
            data |= Self::DATA_LEVEL_TRIGGER | Self::DATA_ASSERT;
        }
        Ok(Msi {
            address_lo,
            address_hi,
            data,
        })
    }

    /// The vector (data bits 7:0).
    #[inline]
    pub(crate) const fn vector(&self) -> Vector {
        Vector::new(self.data as u8)
    }

    /// Whether data bit 15 says level.
    #[inline]
    pub(crate) const fn is_level(&self) -> bool {
        self.data & Self::DATA_LEVEL_TRIGGER != 0
    }

    /// The destination as `format` decodes it, or `None` when the format
    /// refuses the address ([`MsiFormat::X2apicApi`] with `address_hi` bits
    /// 7:0 set: KVM's `kvm_msi_route_invalid`).
    #[inline]
    pub(crate) const fn destination(&self, format: MsiFormat) -> Option<Destination> {
        let mut id = (self.address_lo >> 12) & 0xff;
        match format {
            MsiFormat::Xapic => {}
            MsiFormat::ExtDestId => id |= ((self.address_lo >> 5) & 0x7f) << 8,
            MsiFormat::X2apicApi => {
                if self.address_hi & 0xff != 0 {
                    return None;
                }
                id |= self.address_hi;
            }
        }
        Some(Destination {
            id,
            mode: DestinationMode::from_bit(self.address_lo & Self::ADDR_LOGICAL != 0),
        })
    }

    /// The interrupt message as `format` decodes it; `None` for a reserved
    /// delivery mode (3, 6) or an address the format refuses
    /// ([`MsiFormat::X2apicApi`] with `address_hi` bits 7:0 set, which KVM
    /// rejects with `EINVAL`).
    ///
    /// # Examples
    ///
    /// Decoding what a device wrote: lowest priority, logical destination 2,
    /// edge, vector 0x31.
    ///
    /// ```
    /// use eoi_exit::{DeliveryMode, DestinationMode, Msi, MsiFormat, TriggerMode, Vector};
    ///
    /// let msi = Msi { address_lo: 0xfee0_2004, address_hi: 0, data: 0x0131 };
    /// let msg = msi.message(MsiFormat::Xapic).unwrap();
    /// assert_eq!(msg.delivery_mode, DeliveryMode::LowestPriority);
    /// assert_eq!((msg.destination.id, msg.destination.mode), (2, DestinationMode::Logical));
    /// assert_eq!((msg.vector, msg.trigger), (Vector::new(0x31), TriggerMode::Edge));
    /// assert_eq!(Msi { data: 0x0331, ..msi }.message(MsiFormat::Xapic), None); // mode 3
    ///
    /// // Extended bits 11:5 = 1 count only under the extended destination ID.
    /// let ext = Msi { address_lo: 0xfee0_2004 | 1 << 5, ..msi };
    /// assert_eq!(ext.message(MsiFormat::Xapic).unwrap().destination.id, 2);
    /// assert_eq!(ext.message(MsiFormat::ExtDestId).unwrap().destination.id, 0x102);
    /// // The x2APIC API reads address_hi; bits 7:0 there make the route invalid.
    /// let hi = Msi { address_hi: 0x0001_2300, ..msi };
    /// assert_eq!(hi.message(MsiFormat::X2apicApi).unwrap().destination.id, 0x0001_2302);
    /// assert_eq!(Msi { address_hi: 0x1, ..msi }.message(MsiFormat::X2apicApi), None);
    /// assert_eq!(hi.message(MsiFormat::Xapic).unwrap().destination.id, 2);
    /// ```
    pub fn message(&self, format: MsiFormat) -> Option<InterruptMessage> {
        Some(InterruptMessage {
            destination: self.destination(format)?,
            // 6 (start-up) is reserved in MSIs (SDM); KVM would send a SIPI.
            delivery_mode: match DeliveryMode::try_from(((self.data >> 8) & 7) as u8).ok()? {
                DeliveryMode::StartUp => return None,
                m => m,
            },
            vector: self.vector(),
            trigger: TriggerMode::from_bit(self.is_level()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(id: u32, mode: DestinationMode) -> InterruptMessage {
        InterruptMessage {
            destination: Destination { id, mode },
            delivery_mode: DeliveryMode::Fixed,
            vector: Vector::new(0x40),
            trigger: TriggerMode::Level,
        }
    }

    #[test]
    fn level_message_encodes_the_kvm_split_irqchip_route_layout() {
        let m = msg(1, DestinationMode::Physical);
        let r = Msi::from_message(&m, MsiFormat::Xapic).unwrap();
        // The kvm-oracle tool installs exactly this for "GSI5 -> 0x40 level -> id 1".
        assert_eq!(r.address_lo, 0xFEE0_0000 | 1 << 12);
        assert_eq!(r.data & 0x80ff, 0x8040);
        assert_eq!(r.message(MsiFormat::Xapic), Some(m));
    }

    #[test]
    fn extended_destination_id_goes_to_address_bits_11_to_5() {
        let m = msg(0x1234, DestinationMode::Logical);
        let r = Msi::from_message(&m, MsiFormat::ExtDestId).unwrap();
        assert_eq!((r.address_lo >> 5) & 0x7f, 0x12);
        assert_eq!((r.address_lo >> 12) & 0xff, 0x34);
        assert_eq!(r.address_hi, 0);
        assert_ne!(r.address_lo & Msi::ADDR_LOGICAL, 0);
        assert_eq!(r.message(MsiFormat::ExtDestId), Some(m));
    }

    #[test]
    fn reserved_delivery_mode_in_msi_data_gives_no_message() {
        let m = Msi {
            address_lo: 0xFEE0_0000,
            address_hi: 0,
            data: 0x40 | 3 << 8,
        };
        for f in [MsiFormat::Xapic, MsiFormat::ExtDestId, MsiFormat::X2apicApi] {
            assert_eq!(m.message(f), None);
        }
    }
}
