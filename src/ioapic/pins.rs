//! [`PinSet`]: a 256-bit set of I/O APIC pins.

use crate::set::{Set256, Set256Iter};
use crate::types::Pin;

/// A set of I/O APIC pins (any [`Pin`], 0..=255): a [`Set256`] of [`Pin`].
/// Never allocates.
pub type PinSet = Set256<Pin>;

/// Ascending iterator over a [`PinSet`].
pub type PinSetIter = Set256Iter<Pin>;
