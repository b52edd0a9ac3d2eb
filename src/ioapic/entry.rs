//! The 64-bit I/O APIC redirection-table entry (82093AA datasheet, 3.2.4).

use core::fmt;

use crate::routes::MsiFormat;
use crate::types::{
    DeliveryMode, Destination, DestinationMode, InterruptMessage, InvalidValue, Polarity,
    TriggerMode,
};
use crate::vector::Vector;

/// One redirection-table entry.
///
/// | bits | field |
/// |---|---|
/// | 7:0 | vector |
/// | 10:8 | delivery mode |
/// | 11 | destination mode (1 = logical) |
/// | 12 | delivery status (read-only) |
/// | 13 | polarity (1 = active low) |
/// | 14 | remote IRR (read-only) |
/// | 15 | trigger mode (1 = level) |
/// | 16 | mask |
/// | 55:49 | extended destination ID: destination bits 14:8 under [`MsiFormat::ExtDestId`], reserved otherwise |
/// | 63:56 | destination bits 7:0 |
///
/// The reset value has only the mask bit set (datasheet: "all entries masked"),
/// and is the [`Default`].
///
/// The guest reads and writes the two 32-bit halves separately through
/// IOREGSEL/IOWIN (`0x10 + 2n` low, `0x11 + 2n` high); the model applies each
/// half as it arrives, so an entry the guest rewrites passes through a mix of
/// old and new halves (Linux writes the high half, then the low one).
///
/// # Examples
///
/// ```
/// use eoi_exit::{MsiFormat, RedirectionEntry, TriggerMode, Vector};
///
/// assert!(RedirectionEntry::default().masked());
///
/// let e = RedirectionEntry::fixed(Vector::new(0x40), TriggerMode::Level, 3);
/// let (low, high) = (e.0 as u32, (e.0 >> 32) as u32);
/// assert_eq!((low, high), (0x0000_8040, 0x0300_0000)); // what IOWIN carries
/// let msg = e.message(MsiFormat::Xapic).unwrap(); // what it sends when its pin fires
/// assert_eq!((msg.destination.id, msg.vector), (3, Vector::new(0x40)));
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct RedirectionEntry(pub u64);

impl Default for RedirectionEntry {
    fn default() -> Self {
        RedirectionEntry::RESET
    }
}

impl RedirectionEntry {
    /// Bit 12: delivery status (read-only to the guest).
    pub(crate) const DELIVERY_STATUS: u64 = 1 << 12;
    /// Bit 13: polarity, 1 = active low.
    pub const POLARITY_LOW: u64 = 1 << 13;
    /// Bit 14: remote IRR (read-only to the guest).
    pub const REMOTE_IRR: u64 = 1 << 14;
    /// Bit 15: trigger mode, 1 = level.
    pub const LEVEL: u64 = 1 << 15;
    /// Bit 16: interrupt mask.
    pub const MASK: u64 = 1 << 16;
    /// Bit 11: destination mode, 1 = logical.
    pub(crate) const LOGICAL: u64 = 1 << 11;
    /// Bits the guest cannot write: delivery status and remote IRR.
    pub(crate) const READ_ONLY: u64 = Self::DELIVERY_STATUS | Self::REMOTE_IRR;
    /// Value at reset: masked, everything else zero (the [`Default`]).
    pub(crate) const RESET: RedirectionEntry = RedirectionEntry(Self::MASK);

    /// Builds an entry from its fields: destination bits 7:0 in bits 63:56
    /// and bits 14:8 in bits 55:49, the extended destination ID (read only
    /// under [`MsiFormat::ExtDestId`]); bits above 14 are dropped, as no
    /// entry can hold them.
    ///
    /// # Examples
    ///
    /// ```
    /// use eoi_exit::{
    ///     DeliveryMode, DestinationMode, MsiFormat, Polarity, RedirectionEntry, TriggerMode,
    ///     Vector,
    /// };
    ///
    /// let e = RedirectionEntry::new(
    ///     Vector::new(0x31),
    ///     DeliveryMode::LowestPriority,
    ///     DestinationMode::Logical,
    ///     Polarity::ActiveLow, // PCI INTx
    ///     TriggerMode::Level,
    ///     true, // masked
    ///     0x1234,
    /// );
    /// let msg = e.message(MsiFormat::Xapic).unwrap();
    /// assert_eq!(msg.delivery_mode, DeliveryMode::LowestPriority);
    /// assert_eq!(e.0 >> 56, 0x34); // destination ID, bits 63:56
    /// assert_eq!(e.0 >> 49 & 0x7f, 0x12); // extended destination ID, bits 55:49
    /// let dest = |f| e.message(f).unwrap().destination.id;
    /// assert_eq!(dest(MsiFormat::ExtDestId), 0x1234);
    /// assert_eq!(dest(MsiFormat::Xapic), 0x34); // bits 55:49 are reserved there
    /// assert!(e.masked() && !RedirectionEntry(e.0 & !RedirectionEntry::MASK).masked());
    /// ```
    #[allow(clippy::too_many_arguments)]
    pub const fn new(
        vector: Vector,
        delivery_mode: DeliveryMode,
        destination_mode: DestinationMode,
        polarity: Polarity,
        trigger: TriggerMode,
        masked: bool,
        destination: u32,
    ) -> Self {
        let mut bits = vector.get() as u64
            | (delivery_mode as u64) << 8
            | (destination_mode as u64) << 11
            | (polarity as u64) << 13
            | (trigger as u64) << 15
            | (masked as u64) << 16;
        bits |= ((destination & 0xff) as u64) << 56;
        bits |= (((destination >> 8) & 0x7f) as u64) << 49;
        RedirectionEntry(bits)
    }

    /// A fixed, physical, active-high, unmasked entry: the common case.
    ///
    /// # Examples
    ///
    /// ```
    /// use eoi_exit::{
    ///     DeliveryMode, DestinationMode, MsiFormat, Polarity, RedirectionEntry, TriggerMode,
    ///     Vector,
    /// };
    ///
    /// let e = RedirectionEntry::fixed(Vector::new(0x40), TriggerMode::Level, 1);
    /// assert_eq!(e.vector(), Vector::new(0x40));
    /// assert_eq!(e.message(MsiFormat::Xapic).unwrap().delivery_mode, DeliveryMode::Fixed);
    /// assert_eq!(e.polarity(), Polarity::ActiveHigh);
    /// assert!(e.is_level() && !e.masked() && !e.remote_irr());
    /// let dest = e.message(MsiFormat::Xapic).unwrap().destination;
    /// assert_eq!((dest.id, dest.mode), (1, DestinationMode::Physical));
    /// ```
    pub const fn fixed(vector: Vector, trigger: TriggerMode, apic_id: u32) -> Self {
        Self::new(
            vector,
            DeliveryMode::Fixed,
            DestinationMode::Physical,
            Polarity::ActiveHigh,
            trigger,
            false,
            apic_id,
        )
    }

    /// The raw 64 bits.
    #[inline]
    pub(crate) const fn bits(self) -> u64 {
        self.0
    }
    /// Bits 7:0.
    #[inline]
    pub const fn vector(self) -> Vector {
        Vector::new(self.0 as u8)
    }
    /// Bits 10:8 as a raw number (0..=7).
    #[inline]
    pub(crate) const fn delivery_mode_bits(self) -> u8 {
        ((self.0 >> 8) & 7) as u8
    }
    /// Bits 10:8; `Err` for the reserved encodings 3 and 6.
    #[inline]
    pub(crate) fn delivery_mode(self) -> Result<DeliveryMode, InvalidValue> {
        // 6 (start-up) is an ICR encoding only; the 82093AA reserves it. KVM
        // would deliver it as a SIPI; the model follows the datasheet.
        match DeliveryMode::try_from(self.delivery_mode_bits())? {
            DeliveryMode::StartUp => Err(InvalidValue(6)),
            m => Ok(m),
        }
    }
    /// Bit 11.
    #[inline]
    pub(crate) const fn destination_mode(self) -> DestinationMode {
        DestinationMode::from_bit(self.0 & Self::LOGICAL != 0)
    }
    /// Bit 12: delivery status (the 82093AA sets it while a message is pending).
    #[inline]
    pub(crate) const fn delivery_status(self) -> bool {
        self.0 & Self::DELIVERY_STATUS != 0
    }
    /// Bit 13.
    #[inline]
    pub const fn polarity(self) -> Polarity {
        if self.0 & Self::POLARITY_LOW != 0 {
            Polarity::ActiveLow
        } else {
            Polarity::ActiveHigh
        }
    }
    /// Bit 14: remote IRR.
    #[inline]
    pub const fn remote_irr(self) -> bool {
        self.0 & Self::REMOTE_IRR != 0
    }
    /// Bit 15.
    #[inline]
    pub(crate) const fn trigger_mode(self) -> TriggerMode {
        TriggerMode::from_bit(self.0 & Self::LEVEL != 0)
    }
    /// Whether bit 15 says level.
    #[inline]
    pub const fn is_level(self) -> bool {
        self.0 & Self::LEVEL != 0
    }
    /// Bit 16.
    #[inline]
    pub const fn masked(self) -> bool {
        self.0 & Self::MASK != 0
    }
    /// Bits 63:56: the 8-bit destination.
    #[inline]
    pub(crate) const fn destination_id(self) -> u8 {
        (self.0 >> 56) as u8
    }
    /// Bits 55:49: the extended destination ID (destination bits 14:8).
    #[inline]
    pub(crate) const fn extended_destination_id(self) -> u8 {
        ((self.0 >> 49) & 0x7f) as u8
    }
    /// The raw destination bits: bits 63:56 plus bits 55:49 as bits 14:8,
    /// whatever the format (for `Debug`).
    #[inline]
    pub(crate) const fn destination_id_full(self) -> u32 {
        self.destination_id() as u32 | (self.extended_destination_id() as u32) << 8
    }
    /// Destination plus mode, as `format` decodes the entry's message: bits
    /// 55:49 count under [`MsiFormat::ExtDestId`] only (an entry's message
    /// has no `address_hi`, so [`MsiFormat::X2apicApi`] reads 8 bits, as
    /// [`MsiFormat::Xapic`] does).
    #[inline]
    pub(crate) const fn destination(self, format: MsiFormat) -> Destination {
        let id = match format {
            MsiFormat::ExtDestId => self.destination_id_full(),
            MsiFormat::Xapic | MsiFormat::X2apicApi => self.destination_id() as u32,
        };
        Destination {
            id,
            mode: self.destination_mode(),
        }
    }

    /// Returns the entry with remote IRR set or cleared.
    #[inline]
    #[must_use]
    pub(crate) const fn with_remote_irr(self, on: bool) -> Self {
        if on {
            RedirectionEntry(self.0 | Self::REMOTE_IRR)
        } else {
            RedirectionEntry(self.0 & !Self::REMOTE_IRR)
        }
    }
    /// Returns the entry with the mask bit set or cleared.
    #[cfg(test)]
    #[inline]
    #[must_use]
    pub(crate) const fn with_mask(self, on: bool) -> Self {
        if on {
            RedirectionEntry(self.0 | Self::MASK)
        } else {
            RedirectionEntry(self.0 & !Self::MASK)
        }
    }

    /// The interrupt message this entry sends, its destination decoded as
    /// `format` decodes it (bits 55:49 count under
    /// [`MsiFormat::ExtDestId`] only; pass the I/O APIC's
    /// [`IoapicConfig::msi_format`](crate::IoapicConfig::msi_format)), or
    /// `None` for a reserved delivery mode (KVM drops those).
    #[inline]
    pub fn message(self, format: MsiFormat) -> Option<InterruptMessage> {
        Some(InterruptMessage {
            destination: self.destination(format),
            delivery_mode: self.delivery_mode().ok()?,
            vector: self.vector(),
            trigger: self.trigger_mode(),
        })
    }
}

impl fmt::Debug for RedirectionEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedirectionEntry")
            .field("vector", &self.vector())
            .field("delivery_mode", &self.delivery_mode_bits())
            .field("dest_mode", &self.destination_mode())
            .field("delivery_status", &self.delivery_status())
            .field("polarity", &self.polarity())
            .field("remote_irr", &self.remote_irr())
            .field("trigger", &self.trigger_mode())
            .field("masked", &self.masked())
            .field("dest", &self.destination_id_full())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reset_entry_is_masked_and_otherwise_zero() {
        let e = RedirectionEntry::default();
        assert!(e.masked());
        assert_eq!(e.bits(), 1 << 16);
    }

    #[test]
    fn field_accessors_decode_the_82093aa_layout() {
        let e = RedirectionEntry(
            0x41 | 1 << 8
                | 1 << 11
                | 1 << 12
                | 1 << 13
                | 1 << 14
                | 1 << 15
                | 1 << 16
                | 0x7f << 49
                | 0xab << 56,
        );
        assert_eq!(e.vector(), Vector::new(0x41));
        assert_eq!(e.delivery_mode(), Ok(DeliveryMode::LowestPriority));
        assert_eq!(e.destination_mode(), DestinationMode::Logical);
        assert!(e.delivery_status());
        assert_eq!(e.polarity(), Polarity::ActiveLow);
        assert!(e.remote_irr());
        assert_eq!(e.trigger_mode(), TriggerMode::Level);
        assert!(e.masked());
        assert_eq!(e.destination_id(), 0xab);
        assert_eq!(e.extended_destination_id(), 0x7f);
        assert_eq!(e.destination_id_full(), 0x7fab);
        assert_eq!(e.destination(MsiFormat::Xapic).id, 0xab);
        assert_eq!(e.destination(MsiFormat::X2apicApi).id, 0xab);
        assert_eq!(e.destination(MsiFormat::ExtDestId).id, 0x7fab);
    }

    #[test]
    fn reserved_delivery_modes_decode_as_errors_and_send_no_message() {
        for raw in [3u64, 6] {
            let e = RedirectionEntry(0x30 | raw << 8);
            assert!(e.delivery_mode().is_err());
            assert!(e.message(MsiFormat::Xapic).is_none());
        }
    }

    #[test]
    fn new_round_trips_through_the_accessors() {
        let e = RedirectionEntry::new(
            Vector::new(0x99),
            DeliveryMode::Fixed,
            DestinationMode::Physical,
            Polarity::ActiveHigh,
            TriggerMode::Level,
            false,
            0x1234,
        );
        assert_eq!(e.vector().get(), 0x99);
        assert_eq!(e.destination_id_full(), 0x1234);
        assert!(e.is_level() && !e.masked());
    }
}
