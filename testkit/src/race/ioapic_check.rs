//! The one I/O APIC invariant check, shared by the `ioapic_mmio` fuzz
//! harness and the I/O APIC property tests.
//!
//! Both drive an [`Ioapic`] with their own op language (raw MMIO, lines,
//! EOIs, host entry writes) and call [`check_ioapic_step`] after every op:
//! the op language differs, the invariants do not. Each assertion names the
//! 82093AA rule it enforces.

use eoi_exit::Ioapic;
use eoi_exit::Pin;
use eoi_exit::ioapic::{
    IOREGSEL, IOWIN, IoapicEffects, REG_ARB, REG_ID, REG_REDTBL_BASE, REG_VERSION,
};
use eoi_exit::{RedirectionEntry, Vector};

/// What one op did to the I/O APIC, as its caller decodes it from the op.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct IoapicStep {
    /// The redirection entry the op wrote (a host entry write, or an IOWIN
    /// data write while IOREGSEL selects a redirection register).
    pub written: Option<usize>,
    /// The vector the op EOIed (a broadcast EOI, or the version-0x20 EOI
    /// register).
    pub eoi: Option<Vector>,
}

/// What a 32-bit IOWIN read returns for the current IOREGSEL: the ID in bits
/// 24-27 (the arbitration register reads as the ID), the version with the
/// maximum redirection entry `PINS - 1` in bits 16-23, the selected half of a
/// redirection entry, and all ones for unimplemented registers.
pub fn expected_iowin<const P: usize>(io: &Ioapic<P>) -> u32 {
    match io.ioregsel() {
        REG_ID | REG_ARB => u32::from(io.id()) << 24,
        REG_VERSION => ((P as u32 - 1) & 0xff) << 16 | u32::from(u8::from(io.config().version)),
        sel if sel >= REG_REDTBL_BASE && usize::from((sel - REG_REDTBL_BASE) / 2) < P => {
            let bits = io.entries()[usize::from((sel - REG_REDTBL_BASE) / 2)].bits();
            if sel & 1 == 1 {
                (bits >> 32) as u32
            } else {
                bits as u32
            }
        }
        _ => u32::MAX,
    }
}

/// Invariants of every I/O APIC state.
///
/// # Panics
///
/// When one breaks: the ID is wider than 4 bits, an edge entry holds remote
/// IRR (the 82093AA defines remote IRR for level entries only), a pin set
/// holds an out-of-range pin, or what the guest reads through IOREGSEL and
/// IOWIN differs from the model's entries.
pub fn check_ioapic_state<const P: usize>(io: &Ioapic<P>) {
    let st = io.registers();
    assert!(st.id < 16, "ID {:#x} wider than 4 bits", st.id);
    for (i, e) in io.entries().iter().enumerate() {
        assert!(
            !e.remote_irr() || e.is_level(),
            "pin {i}: remote IRR on an edge entry {e:?}"
        );
    }
    for p in st.line.iter().chain(st.pending_edge.iter()) {
        assert!(p.index() < P, "pin set holds out-of-range {p:?}");
    }
    // Reads have no side effects, so a copy answers as the original would.
    let mut copy = io.clone();
    assert_eq!(
        copy.mmio_read(IOWIN, 4),
        u64::from(expected_iowin(io)),
        "IOWIN read disagrees with the entries"
    );
    assert_eq!(copy.mmio_read(IOREGSEL, 4), u64::from(io.ioregsel()));
}

/// Checks the state after an op ([`check_ioapic_state`]) and that every
/// change from `before` is one the 82093AA allows.
///
/// # Panics
///
/// When a change is not allowed:
/// - delivery status changed (the model delivers synchronously, so it never
///   shows a pending delivery);
/// - remote IRR was set without a delivery of that pin, or cleared other
///   than by an EOI of the entry's vector or by switching the entry to edge;
/// - an entry the op did not write changed other than in remote IRR;
/// - a masked pin, a reserved delivery mode or a level entry without remote
///   IRR was delivered;
/// - a deferred delivery names a pin that is not level, asserted, unmasked
///   and without remote IRR;
/// - an action names an out-of-range pin, or a route change or rescan comes
///   from an op that wrote no entry.
pub fn check_ioapic_step<const P: usize>(
    before: &Ioapic<P>,
    after: &Ioapic<P>,
    step: IoapicStep,
    actions: &IoapicEffects,
) {
    check_ioapic_state(after);
    for i in 0..P {
        let pin = Pin::new(i as u8);
        let (b, a) = (before.entries()[i], after.entries()[i]);
        assert_eq!(
            b.delivery_status(),
            a.delivery_status(),
            "pin {i}: delivery status changed"
        );
        if !b.remote_irr() && a.remote_irr() {
            assert!(
                actions.deliver.contains(pin),
                "pin {i}: remote IRR set without a delivery"
            );
        }
        if b.remote_irr() && !a.remote_irr() {
            let by_eoi = step.eoi == Some(b.vector());
            let by_edge = step.written == Some(i) && !a.is_level();
            assert!(
                by_eoi || by_edge,
                "pin {i}: remote IRR cleared by neither an EOI of {:?} nor a switch to edge",
                b.vector()
            );
        }
        if step.written != Some(i) {
            assert_eq!(
                b.bits() & !RedirectionEntry::REMOTE_IRR,
                a.bits() & !RedirectionEntry::REMOTE_IRR,
                "pin {i}: entry changed by an op that does not write it"
            );
        }
        if actions.deliver.contains(pin) {
            assert!(!a.masked(), "pin {i}: masked pin delivered");
            assert!(
                after.message(pin).is_some(),
                "pin {i}: reserved mode delivered"
            );
            assert!(after.msi_route(pin).is_some(), "pin {i}: no MSI route");
            assert!(
                !a.is_level() || a.remote_irr(),
                "pin {i}: level delivered without remote IRR"
            );
        }
        if actions.deliver_later.contains(pin) {
            assert!(
                a.is_level() && !a.remote_irr() && !a.masked(),
                "pin {i}: deferred delivery of a pin that cannot deliver"
            );
            assert!(
                after.asserted(pin),
                "pin {i}: deferred delivery of a low line"
            );
        }
    }
    for p in actions.deliver.iter().chain(actions.deliver_later.iter()) {
        assert!(p.index() < P, "out-of-range pin {p:?} in actions");
    }
    if let Some(p) = actions.route_changed {
        assert_eq!(
            step.written,
            Some(p.index()),
            "route_changed for an unwritten pin"
        );
    }
    if step.written.is_none() {
        assert!(actions.route_changed.is_none());
        assert!(actions.rescan.is_none(), "rescan without an entry write");
    }
}
