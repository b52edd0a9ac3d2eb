//! The local APIC's interrupt state (SDM Vol. 3, "Advanced Programmable
//! Interrupt Controller").

/// Placeholder, replaced by the full model.
pub struct LocalApic;
