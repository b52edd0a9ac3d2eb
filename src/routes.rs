//! MSI messages and split-irqchip GSI routes.
//!
//! With KVM's split irqchip the I/O APIC lives in the VMM, and each pin reaches
//! the in-kernel LAPICs as an MSI route installed with `KVM_SET_GSI_ROUTING`.
//! KVM scans the routes of GSIs below the reserved pin count
//! (`KVM_CAP_SPLIT_IRQCHIP`'s `args[0]`) whose data has the level bit set.

use crate::types::{DeliveryMode, Destination, DestinationMode, InterruptMessage, TriggerMode};
use crate::vector::Vector;

/// An MSI message: the address and data a device (or a KVM GSI route) writes.
///
/// Address (SDM "Message Signalled Interrupts"):
/// bits 31:20 = 0xFEE, 19:12 = destination ID 7:0, 11:5 = extended destination
/// ID (destination 14:8, the convention Linux and KVM use with
/// `KVM_FEATURE_MSI_EXT_DEST_ID`), 3 = redirection hint, 2 = destination mode.
/// `address_hi` bits 31:8 carry destination bits 31:8 for x2APIC
/// (`KVM_MSI_VALID_DEVID`-less x2APIC API).
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

    /// Encodes an interrupt message. Destination bits 14:8 go to address bits
    /// 11:5, bits 31:15 to `address_hi` (x2APIC).
    ///
    /// # Examples
    ///
    /// ```
    /// use eoi_exit::{
    ///     DeliveryMode, Destination, DestinationMode, InterruptMessage, Msi, TriggerMode, Vector,
    /// };
    ///
    /// let msg = InterruptMessage {
    ///     destination: Destination { id: 1, mode: DestinationMode::Physical },
    ///     delivery_mode: DeliveryMode::Fixed,
    ///     vector: Vector::new(0x40),
    ///     trigger: TriggerMode::Level,
    /// };
    /// let msi = Msi::from_message(&msg);
    /// assert_eq!(msi.address_lo, 0xfee0_1000); // 0xFEE, destination 1 in bits 19:12
    /// assert_eq!(msi.data, 0xc040); // trigger (15) and assert (14), vector 0x40
    /// assert_eq!(msi.message(), Some(msg));
    ///
    /// // APIC ID 0x123 needs the extended destination ID (address bits 11:5).
    /// let far = InterruptMessage {
    ///     destination: Destination { id: 0x123, mode: DestinationMode::Physical },
    ///     ..msg
    /// };
    /// assert_eq!(Msi::from_message(&far).address_lo, 0xfee2_3000 | 0x1 << 5);
    /// ```
    pub const fn from_message(msg: &InterruptMessage) -> Self {
        let d = msg.destination.id;
        let mut address_lo = Self::ADDRESS_BASE | (d & 0xff) << 12 | ((d >> 8) & 0x7f) << 5;
        if matches!(msg.destination.mode, DestinationMode::Logical) {
            address_lo |= Self::ADDR_LOGICAL;
        }
        let mut data = msg.vector.get() as u32 | (msg.delivery_mode as u32) << 8;
        if msg.trigger.is_level() {
            data |= Self::DATA_LEVEL_TRIGGER | Self::DATA_ASSERT;
        }
        Msi {
            address_lo,
            address_hi: d & 0xffff_8000,
            data,
        }
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

    /// The destination, decoded as KVM does with the extended destination ID
    /// enabled: address bits 19:12, plus bits 11:5 as destination 14:8, plus
    /// `address_hi` bits 31:8 (x2APIC).
    #[inline]
    pub(crate) const fn destination(&self) -> Destination {
        let id = (self.address_lo >> 12) & 0xff
            | ((self.address_lo >> 5) & 0x7f) << 8
            | (self.address_hi & 0xffff_ff00);
        Destination {
            id,
            mode: DestinationMode::from_bit(self.address_lo & Self::ADDR_LOGICAL != 0),
        }
    }

    /// The interrupt message, or `None` for a reserved delivery mode (3, 6).
    ///
    /// # Examples
    ///
    /// Decoding what a device wrote: lowest priority, logical destination 2,
    /// edge, vector 0x31.
    ///
    /// ```
    /// use eoi_exit::{DeliveryMode, DestinationMode, Msi, TriggerMode, Vector};
    ///
    /// let msi = Msi { address_lo: 0xfee0_2004, address_hi: 0, data: 0x0131 };
    /// let msg = msi.message().unwrap();
    /// assert_eq!(msg.delivery_mode, DeliveryMode::LowestPriority);
    /// assert_eq!((msg.destination.id, msg.destination.mode), (2, DestinationMode::Logical));
    /// assert_eq!((msg.vector, msg.trigger), (Vector::new(0x31), TriggerMode::Edge));
    /// assert_eq!(Msi { data: 0x0331, ..msi }.message(), None); // delivery mode 3
    /// ```
    pub fn message(&self) -> Option<InterruptMessage> {
        Some(InterruptMessage {
            destination: self.destination(),
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

    #[test]
    fn level_message_encodes_the_kvm_split_irqchip_route_layout() {
        let msg = InterruptMessage {
            destination: Destination {
                id: 1,
                mode: DestinationMode::Physical,
            },
            delivery_mode: DeliveryMode::Fixed,
            vector: Vector::new(0x40),
            trigger: TriggerMode::Level,
        };
        let m = Msi::from_message(&msg);
        // The kvm-oracle tool installs exactly this for "GSI5 -> 0x40 level -> id 1".
        assert_eq!(m.address_lo, 0xFEE0_0000 | 1 << 12);
        assert_eq!(m.data & 0x80ff, 0x8040);
        assert_eq!(m.message(), Some(msg));
    }

    #[test]
    fn extended_destination_id_goes_to_address_bits_11_to_5() {
        let msg = InterruptMessage {
            destination: Destination {
                id: 0x1234,
                mode: DestinationMode::Logical,
            },
            delivery_mode: DeliveryMode::LowestPriority,
            vector: Vector::new(0x31),
            trigger: TriggerMode::Edge,
        };
        let m = Msi::from_message(&msg);
        assert_eq!((m.address_lo >> 5) & 0x7f, 0x12);
        assert_eq!((m.address_lo >> 12) & 0xff, 0x34);
        assert_ne!(m.address_lo & Msi::ADDR_LOGICAL, 0);
        assert_eq!(m.message(), Some(msg));
    }

    #[test]
    fn reserved_delivery_mode_in_msi_data_gives_no_message() {
        let m = Msi {
            address_lo: 0xFEE0_0000,
            address_hi: 0,
            data: 0x40 | 3 << 8,
        };
        assert_eq!(m.message(), None);
    }
}
