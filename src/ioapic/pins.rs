//! [`PinSet`]: a 256-bit set of I/O APIC pins.

use crate::set::Set256;
use crate::types::Pin;

/// A set of I/O APIC pins (any [`Pin`], 0..=255): a [`Set256`] of [`Pin`].
/// Never allocates.
pub type PinSet = Set256<Pin>;
