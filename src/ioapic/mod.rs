//! The I/O APIC (82093AA datasheet, Linux KVM `ioapic.c`).

mod entry;

pub use entry::RedirectionEntry;

/// Placeholder, replaced by the full model.
pub struct Ioapic;
