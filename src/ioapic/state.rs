//! [`IoapicState`]: the saved state of an [`Ioapic`], beside it.

use super::{
    Ioapic, IoapicConfig, IoapicRegisters, MaskedEdge, PinSet, RedirectionEntry,
    SUCCESSIVE_IRQ_MAX_COUNT,
};
#[cfg(feature = "serde")]
use crate::snapshot::array;
use crate::snapshot::{SNAPSHOT_VERSION, SnapshotError, check_version, first_pin_beyond};

/// Everything an [`Ioapic`] holds: configuration and state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct IoapicState<const PINS: usize = 24> {
    /// [`SNAPSHOT_VERSION`].
    pub version: u16,
    /// `PINS` when captured.
    pub pins: u16,
    /// The configuration (version register, masked-edge behaviour, reset ID).
    pub config: IoapicConfig,
    /// The redirection table, remote IRR and delivery status included.
    #[cfg_attr(feature = "serde", serde(with = "array"))]
    pub entries: [RedirectionEntry; PINS],
    /// Electrical level of each pin (before polarity).
    pub line: PinSet,
    /// Latched masked edges ([`MaskedEdge::Latch`]).
    pub pending_edge: PinSet,
    /// Successive EOIs that found the line still asserted, per pin.
    #[cfg_attr(feature = "serde", serde(with = "array"))]
    pub eoi_count: [u16; PINS],
    /// IOREGSEL.
    pub ioregsel: u8,
    /// I/O APIC ID (4 bits).
    pub id: u8,
}

impl<const PINS: usize> IoapicState<PINS> {
    /// A snapshot of `config` and `state` (e.g. a state converted from KVM).
    pub(crate) fn new(config: IoapicConfig, state: &IoapicRegisters<PINS>) -> Self {
        IoapicState {
            version: SNAPSHOT_VERSION,
            pins: PINS as u16,
            config,
            entries: state.entries,
            line: state.line,
            pending_edge: state.pending_edge,
            eoi_count: state.eoi_count,
            ioregsel: state.ioregsel,
            id: state.id,
        }
    }

    /// The state part.
    pub(crate) fn registers(&self) -> IoapicRegisters<PINS> {
        IoapicRegisters {
            entries: self.entries,
            line: self.line,
            pending_edge: self.pending_edge,
            eoi_count: self.eoi_count,
            ioregsel: self.ioregsel,
            id: self.id,
        }
    }

    /// Checks everything [`Ioapic::from_state`] checks.
    pub(crate) fn validate(&self) -> Result<(), SnapshotError> {
        check_version(self.version)?;
        if self.pins as usize != PINS {
            return Err(SnapshotError::Shape {
                what: "I/O APIC pins",
                expected: PINS,
                found: self.pins as usize,
            });
        }
        validate_ioapic_state(&self.config, &self.registers())
    }
}

/// The state checks shared by snapshots and KVM imports.
pub(crate) fn validate_ioapic_state<const PINS: usize>(
    config: &IoapicConfig,
    st: &IoapicRegisters<PINS>,
) -> Result<(), SnapshotError> {
    for (what, set) in [
        ("line (a pin beyond the pin count)", &st.line),
        (
            "pending_edge (a pin beyond the pin count)",
            &st.pending_edge,
        ),
    ] {
        if let Some(pin) = first_pin_beyond(set, PINS) {
            return Err(SnapshotError::invalid(what, pin.into()));
        }
    }
    if st.id > 0xf {
        return Err(SnapshotError::invalid("I/O APIC ID", st.id.into()));
    }
    let at_pin = |pin: usize, what, value| SnapshotError::InvalidValue {
        vcpu: None,
        pin: Some(pin as u8),
        what,
        value,
    };
    for (i, e) in st.entries.iter().enumerate() {
        if !e.is_level() && e.remote_irr() {
            return Err(at_pin(
                i,
                "redirection entry (remote IRR set on an edge-triggered entry)",
                e.0,
            ));
        }
        if st.eoi_count[i] >= SUCCESSIVE_IRQ_MAX_COUNT {
            return Err(at_pin(
                i,
                "EOI-storm counter (at or above IOAPIC_SUCCESSIVE_IRQ_MAX_COUNT, 10000)",
                st.eoi_count[i].into(),
            ));
        }
    }
    if config.masked_edge == MaskedEdge::Drop
        && let Some(p) = st.pending_edge.iter().next()
    {
        return Err(at_pin(
            p.index(),
            "pending_edge (a masked edge latched although MaskedEdge::Drop drops them)",
            1,
        ));
    }
    Ok(())
}

impl<const PINS: usize> Ioapic<PINS> {
    /// A snapshot of the configuration and the whole state.
    pub fn state(&self) -> IoapicState<PINS> {
        IoapicState::new(*self.config(), &self.registers())
    }

    /// A new I/O APIC equal to the captured one (configuration included),
    /// verbatim: nothing is re-injected and no rescan is requested, because
    /// the restored object is exactly the captured one. To restore in place,
    /// assign: `io = Ioapic::from_state(&s)?` (on error `io` is untouched).
    pub fn from_state(s: &IoapicState<PINS>) -> Result<Self, SnapshotError> {
        s.validate()?;
        let mut io = Ioapic::new(s.config);
        io.restore_exact(s.config, &s.registers());
        Ok(io)
    }
}
