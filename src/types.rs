//! Newtypes for identifiers and `repr(u8)` enums for the APIC modes.

use core::fmt;

use crate::vector::Vector;

/// Error returned by the `TryFrom<u8>` conversions of the mode enums and the
/// range-checked newtype constructors: the raw value that was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InvalidValue(pub u64);

impl fmt::Display for InvalidValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid value {:#x}", self.0)
    }
}

#[cfg(feature = "std")]
impl std::error::Error for InvalidValue {}

/// A local APIC ID: 8 bits in xAPIC mode, 32 bits in x2APIC mode.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct ApicId(u32);

impl ApicId {
    /// Wraps a raw APIC ID.
    #[inline]
    pub const fn new(id: u32) -> Self {
        ApicId(id)
    }
    /// The raw APIC ID.
    #[inline]
    pub const fn get(self) -> u32 {
        self.0
    }
}

impl fmt::Debug for ApicId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ApicId({})", self.0)
    }
}

/// An I/O APIC input pin (redirection-table index).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct Pin(u8);

impl Pin {
    /// Wraps a raw pin number. Range checks against the I/O APIC's pin count
    /// happen where the pin is used; an out-of-range pin is ignored there.
    #[inline]
    pub const fn new(pin: u8) -> Self {
        Pin(pin)
    }
    /// The raw pin number.
    #[inline]
    pub const fn get(self) -> u8 {
        self.0
    }
    /// The pin number as an index.
    #[inline]
    pub const fn index(self) -> usize {
        self.0 as usize
    }
}

impl fmt::Debug for Pin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Pin({})", self.0)
    }
}

/// A global system interrupt number (KVM GSI). GSIs below the I/O APIC's pin
/// count are its pins.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Debug)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub(crate) struct Gsi(u32);

impl Gsi {
    /// Wraps a raw GSI. (Crate-private, as the type: nothing in the API
    /// takes a GSI; the RTC's is pin 8.)
    #[inline]
    #[allow(dead_code)]
    pub(crate) const fn new(gsi: u32) -> Self {
        Gsi(gsi)
    }
    /// The raw GSI.
    #[inline]
    pub(crate) const fn get(self) -> u32 {
        self.0
    }
}

/// The RTC's GSI: KVM's in-kernel I/O APIC tracks EOIs of pin 8 specially.
pub(crate) const RTC_GSI: Gsi = Gsi(8);

/// Index of a vCPU inside an [`crate::Irqchip`] (not its APIC ID).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct VcpuId(u16);

impl VcpuId {
    /// Wraps a raw vCPU index.
    #[inline]
    pub const fn new(id: u16) -> Self {
        VcpuId(id)
    }
    /// The raw vCPU index.
    #[inline]
    pub const fn get(self) -> u16 {
        self.0
    }
    /// The vCPU index as a `usize`.
    #[inline]
    pub const fn index(self) -> usize {
        self.0 as usize
    }
}

impl fmt::Debug for VcpuId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "vCPU{}", self.0)
    }
}

macro_rules! u8_enum {
    ($(#[$m:meta])* $name:ident { $($(#[$vm:meta])* $var:ident = $val:expr,)+ }) => {
        $(#[$m])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
        #[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
        #[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
        #[repr(u8)]
        pub enum $name {
            $($(#[$vm])* $var = $val,)+
        }

        impl TryFrom<u8> for $name {
            type Error = InvalidValue;
            #[inline]
            fn try_from(v: u8) -> Result<Self, InvalidValue> {
                match v {
                    $($val => Ok($name::$var),)+
                    _ => Err(InvalidValue(v as u64)),
                }
            }
        }

        impl From<$name> for u8 {
            #[inline]
            fn from(v: $name) -> u8 {
                v as u8
            }
        }
    };
}

u8_enum! {
    /// Trigger mode of an interrupt (redirection entry bit 15, MSI data bit 15,
    /// ICR bit 15).
    TriggerMode {
        /// Edge triggered: the interrupt is a one-shot message.
        Edge = 0,
        /// Level triggered: the source waits for an EOI (I/O APIC remote IRR).
        Level = 1,
    }
}

impl TriggerMode {
    /// `Level` for `true`.
    #[inline]
    pub(crate) const fn from_bit(level: bool) -> Self {
        if level {
            TriggerMode::Level
        } else {
            TriggerMode::Edge
        }
    }
    /// Whether this is `Level`.
    #[inline]
    pub(crate) const fn is_level(self) -> bool {
        matches!(self, TriggerMode::Level)
    }
}

u8_enum! {
    /// Delivery mode (redirection entry bits 10:8, MSI data bits 10:8, ICR
    /// bits 10:8). Encoding 3 is reserved and has no variant; 6 is the ICR's
    /// start-up (SIPI), reserved in redirection entries and MSIs.
    DeliveryMode {
        /// Deliver to every destination APIC.
        Fixed = 0,
        /// Deliver to the destination APIC with the lowest priority.
        LowestPriority = 1,
        /// System management interrupt (vector ignored, always edge).
        Smi = 2,
        /// Non-maskable interrupt (vector ignored, always edge).
        Nmi = 4,
        /// INIT (vector ignored; a level-triggered de-assert is ignored).
        Init = 5,
        /// Start-up IPI (ICR only): the vector is the start page (the vCPU
        /// starts at `vector << 12`), taken only in wait-for-SIPI.
        StartUp = 6,
        /// External interrupt (8259A-compatible; vector from the PIC).
        ExtInt = 7,
    }
}

impl DeliveryMode {
    /// Whether this mode goes through IRR/ISR (fixed and lowest priority).
    #[inline]
    pub(crate) const fn uses_vector(self) -> bool {
        matches!(self, DeliveryMode::Fixed | DeliveryMode::LowestPriority)
    }
}

u8_enum! {
    /// Destination mode (redirection entry bit 11, MSI address bit 2).
    DestinationMode {
        /// The destination is an APIC ID.
        Physical = 0,
        /// The destination is matched against the LDR (flat, cluster, x2APIC).
        Logical = 1,
    }
}

impl DestinationMode {
    /// `Logical` for `true`.
    #[inline]
    pub(crate) const fn from_bit(logical: bool) -> Self {
        if logical {
            DestinationMode::Logical
        } else {
            DestinationMode::Physical
        }
    }
}

u8_enum! {
    /// Interrupt input pin polarity (redirection entry bit 13).
    Polarity {
        /// The pin is asserted when high.
        ActiveHigh = 0,
        /// The pin is asserted when low.
        ActiveLow = 1,
    }
}

/// A destination: an APIC ID (or logical destination) plus the destination
/// mode that interprets it.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct Destination {
    /// Destination field: 8 bits (xAPIC, I/O APIC), 15 bits with the extended
    /// destination ID, 32 bits for x2APIC (IPIs, and MSIs under KVM's x2APIC
    /// API): see [`MsiFormat`](crate::MsiFormat).
    pub id: u32,
    /// How `id` is interpreted.
    pub mode: DestinationMode,
}

/// An interrupt message as it travels from the I/O APIC (or an MSI) to the
/// local APICs.
///
/// # Examples
///
/// ```
/// use eoi_exit::{
///     DeliveryMode, Destination, DestinationMode, InterruptMessage, MsiFormat, RedirectionEntry,
///     TriggerMode, Vector,
/// };
///
/// let e = RedirectionEntry::fixed(Vector::new(0x40), TriggerMode::Level, 3);
/// let msg = InterruptMessage {
///     destination: Destination { id: 3, mode: DestinationMode::Physical },
///     delivery_mode: DeliveryMode::Fixed,
///     vector: Vector::new(0x40),
///     trigger: TriggerMode::Level,
/// };
/// assert_eq!(e.message(MsiFormat::Xapic), Some(msg));
/// // The mode enums convert from their raw encodings; 3 is reserved.
/// assert_eq!(DeliveryMode::try_from(1), Ok(DeliveryMode::LowestPriority));
/// assert!(DeliveryMode::try_from(3).is_err());
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct InterruptMessage {
    /// Where the message goes.
    pub destination: Destination,
    /// How it is delivered.
    pub delivery_mode: DeliveryMode,
    /// The vector (ignored for SMI, NMI and INIT).
    pub vector: Vector,
    /// Edge or level.
    pub trigger: TriggerMode,
}
