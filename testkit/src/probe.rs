//! Views of the core's state machines built from their public API only, for
//! the checkers, harnesses and tests (the core keeps its test knobs private).

use eoi_exit::ioapic::IoapicState;
use eoi_exit::lapic::{ApicMode, LocalApic};
use eoi_exit::{Ioapic, Pin, Polarity, Vector};

/// SVR bit 8: software enable.
const SVR_ENABLE: u32 = 1 << 8;
/// SVR register offset.
const SVR: u32 = 0xF0;

/// Whether `pin` is asserted in `s`: its electrical level with its entry's
/// polarity applied (`false` for a pin out of range).
pub fn asserted_in<const P: usize>(s: &IoapicState<P>, pin: Pin) -> bool {
    match s.entries.get(pin.index()) {
        Some(e) => s.line.contains(pin) != (e.polarity() == Polarity::ActiveLow),
        None => false,
    }
}

/// Whether `pin` of `io` is asserted (see [`asserted_in`]).
pub fn asserted<const P: usize>(io: &Ioapic<P>, pin: Pin) -> bool {
    asserted_in(&io.state(), pin)
}

/// Whether the APIC can take part in fixed or lowest-priority delivery:
/// hardware-enabled and software-enabled (SVR bit 8).
pub fn accepts_vectored(a: &LocalApic) -> bool {
    a.mode() != ApicMode::Disabled && a.read_register(SVR).unwrap_or(0) & SVR_ENABLE != 0
}

/// Whether the LAPIC's derived state (the highest-ISR cache) agrees with its
/// registers: its snapshot restores, and EOIs retire ISR from the highest
/// vector down (SDM: the EOI clears the highest-priority ISR bit), which the
/// cache decides. Read through behaviour, not by comparing with a restored
/// copy: the copy would not hold the non-vectored events the chip keeps in
/// the LAPIC, which its snapshot carries elsewhere (`VcpuState::events`).
pub fn lapic_consistent(a: &LocalApic) -> bool {
    let Ok(restored) = LocalApic::from_state(&a.state()) else {
        return false;
    };
    if restored.state() != a.state() {
        return false;
    }
    if a.mode() == ApicMode::Disabled {
        return true;
    }
    let mut b = *a;
    let mut want: Vec<Vector> = a.isr().iter().collect();
    while let Some(eoi) = b.eoi() {
        if want.pop() != Some(eoi.vector) {
            return false;
        }
    }
    want.is_empty()
}

/// Host-side state injection, like `KVM_SET_LAPIC`: puts `vector` in service
/// (`isr`) or pending, with TMR = `level`, through a snapshot. Returns
/// `false` and changes nothing when the LAPIC cannot hold the result (a
/// vector 0..=15).
pub fn plant(a: &mut LocalApic, vector: Vector, in_service: bool, level: bool) -> bool {
    let mut s = a.state();
    if in_service {
        s.isr.insert(vector);
    } else {
        s.irr.insert(vector);
    }
    if level {
        s.tmr.insert(vector);
    } else {
        s.tmr.remove(vector);
    }
    match LocalApic::from_state(&s) {
        Ok(b) => {
            *a = b;
            true
        }
        Err(_) => false,
    }
}
