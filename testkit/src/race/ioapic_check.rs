//! The one I/O APIC invariant check, shared by the `ioapic_mmio` fuzz
//! harness and the I/O APIC property tests.
//!
//! Both drive an [`Ioapic`] with their own op language (raw MMIO, lines,
//! EOIs, host entry writes) and call [`check_ioapic_step`] after every op:
//! the op language differs, the invariants do not. Each assertion names the
//! 82093AA rule it enforces.

use eoi_exit::Ioapic;
use eoi_exit::ioapic::{IOREGSEL, IOWIN, IoapicEffects, IoapicState, REG_REDTBL_BASE, Rescan};
use eoi_exit::{Msi, MsiFormat, RedirectionEntry, Vector};

/// I/O APIC register indices (82093AA) the crate keeps private: ID, version
/// and arbitration ID.
const REG_ID: u8 = 0x00;
const REG_VERSION: u8 = 0x01;
const REG_ARB: u8 = 0x02;

/// Redirection entry bit 12: delivery status (read-only; the model never sets
/// it, KVM neither).
const DELIVERY_STATUS: u64 = 1 << 12;

use super::lean::{changed_entries, each_pin, has_pin_from};

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
    expected_iowin_in(&io.state())
}

/// [`expected_iowin`] of a saved state (a state copy walks every pin: the
/// per-op checks take one and read it for everything).
fn expected_iowin_in<const P: usize>(st: &IoapicState<P>) -> u32 {
    match st.ioregsel {
        REG_ID | REG_ARB => u32::from(st.id) << 24,
        REG_VERSION => ((P as u32 - 1) & 0xff) << 16 | u32::from(u8::from(st.config.version)),
        sel if sel >= REG_REDTBL_BASE && usize::from((sel - REG_REDTBL_BASE) / 2) < P => {
            let bits = st.entries[usize::from((sel - REG_REDTBL_BASE) / 2)].0;
            if sel & 1 == 1 {
                (bits >> 32) as u32
            } else {
                bits as u32
            }
        }
        _ => u32::MAX,
    }
}

/// [`expected_iowin`] for every IOREGSEL value at once: `table[sel]` is what
/// a 32-bit IOWIN read returns with IOREGSEL = `sel`. Built without a
/// comparison per register, for sweeps of the whole register space.
pub fn expected_iowin_table<const P: usize>(io: &Ioapic<P>) -> [u32; 256] {
    let mut t = [u32::MAX; 256];
    let st = io.state();
    let id = u32::from(st.id) << 24;
    t[usize::from(REG_ID)] = id;
    t[usize::from(REG_ARB)] = id;
    t[usize::from(REG_VERSION)] =
        ((P as u32 - 1) & 0xff) << 16 | u32::from(u8::from(st.config.version));
    let base = usize::from(REG_REDTBL_BASE);
    for (half, e) in t[base..].chunks_exact_mut(2).zip(io.entries().iter()) {
        half[0] = e.0 as u32;
        half[1] = (e.0 >> 32) as u32;
    }
    t
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
    let st = io.state();
    assert!(st.id < 16, "ID {:#x} wider than 4 bits", st.id);
    // Bit arithmetic over the whole table first: cargo-fuzz traces every
    // comparison (a call into libFuzzer each), and this fold has none. The
    // loop that names the pin runs only when the fold finds one.
    const LEVEL_SHIFT: u32 =
        RedirectionEntry::LEVEL.trailing_zeros() - RedirectionEntry::REMOTE_IRR.trailing_zeros();
    let edge_with_remote_irr = io
        .entries()
        .iter()
        .fold(0, |acc, e| acc | (e.0 & !(e.0 >> LEVEL_SHIFT)))
        & RedirectionEntry::REMOTE_IRR;
    if edge_with_remote_irr != 0 {
        for (i, e) in io.entries().iter().enumerate() {
            assert!(
                !e.remote_irr() || e.is_level(),
                "pin {i}: remote IRR on an edge entry {e:?}"
            );
        }
    }
    if has_pin_from(&st.line, P) || has_pin_from(&st.pending_edge, P) {
        for p in st.line.iter().chain(st.pending_edge.iter()) {
            assert!(p.index() < P, "pin set holds out-of-range {p:?}");
        }
    }
    // Reads have no side effects, so a copy answers as the original would.
    let mut copy = io.clone();
    assert_eq!(
        copy.mmio_read(IOWIN, 4),
        u64::from(expected_iowin_in(&st)),
        "IOWIN read disagrees with the entries"
    );
    assert_eq!(copy.mmio_read(IOREGSEL, 4), u64::from(st.ioregsel));
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
    // Every per-pin rule below holds trivially for a pin whose entry is
    // bit-for-bit unchanged and that no action names, so only the changed
    // and the named pins are visited (the set is found without a traced
    // comparison per entry, see `race::lean`).
    let mut visit = changed_entries(before.entries(), after.entries());
    visit = visit.union(&actions.deliver);
    visit = visit.union(&actions.deliver_later);
    each_pin(&visit, |pin| {
        let i = pin.index();
        if i >= P {
            // Named by an action: reported below.
            return;
        }
        let (b, a) = (before.entries()[i], after.entries()[i]);
        assert_eq!(
            b.0 & DELIVERY_STATUS,
            a.0 & DELIVERY_STATUS,
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
                b.0 & !RedirectionEntry::REMOTE_IRR,
                a.0 & !RedirectionEntry::REMOTE_IRR,
                "pin {i}: entry changed by an op that does not write it"
            );
        }
        if actions.deliver.contains(pin) {
            assert!(!a.masked(), "pin {i}: masked pin delivered");
            let format = after.state().config.msi_format;
            assert!(
                a.message(format).is_some(),
                "pin {i}: reserved mode delivered"
            );
            // Any entry's destination fits the x2APIC API's route.
            assert!(
                a.message(format)
                    .is_some_and(|m| Msi::from_message(&m, MsiFormat::X2apicApi).is_ok()),
                "pin {i}: no MSI route"
            );
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
                crate::probe::asserted(after, pin),
                "pin {i}: deferred delivery of a low line"
            );
        }
    });
    if has_pin_from(&actions.deliver, P) || has_pin_from(&actions.deliver_later, P) {
        for p in actions.deliver.iter().chain(actions.deliver_later.iter()) {
            assert!(p.index() < P, "out-of-range pin {p:?} in actions");
        }
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
        assert!(
            matches!(
                actions.rescan,
                Rescan::None
                    | Rescan::Targets {
                        old: None,
                        new: None
                    }
            ),
            "rescan without an entry write"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::race::SplitMix64;
    use eoi_exit::Pin;
    use eoi_exit::{IoapicConfig, IoapicVersion};

    fn agree<const P: usize>(rng: &mut SplitMix64) {
        for version in [IoapicVersion::V11, IoapicVersion::V20] {
            let mut io = Ioapic::<P>::new(IoapicConfig {
                version,
                id: rng.next_u64() as u8,
                ..IoapicConfig::default()
            });
            for pin in 0..P {
                let _ = io.write_entry(Pin::new(pin as u8), rng.next_u64());
            }
            let table = expected_iowin_table(&io);
            for sel in 0..=255u8 {
                let _ = io.mmio_write(IOREGSEL, 4, u64::from(sel));
                assert_eq!(
                    table[usize::from(sel)],
                    expected_iowin(&io),
                    "P={P} sel={sel:#x}"
                );
            }
        }
    }

    /// The panic message of `f`, which must panic.
    fn panic_of(f: impl FnOnce() + std::panic::UnwindSafe) -> String {
        let e = std::panic::catch_unwind(f).expect_err("the check must fail");
        e.downcast_ref::<String>()
            .cloned()
            .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default()
    }

    /// An I/O APIC with level entries (active high, unmasked, lines low) on
    /// every pin.
    fn level_table<const P: usize>() -> Ioapic<P> {
        let mut io = Ioapic::<P>::new(IoapicConfig::default());
        for pin in 0..P {
            let e = (0x30 + pin as u64 % 0x40) | RedirectionEntry::LEVEL | (pin as u64 % 4) << 56;
            let _ = io.write_entry(Pin::new(pin as u8), e);
        }
        io
    }

    /// `before` with entry `pin` replaced by `f(entry)` (through a register
    /// restore: nothing is asserted, so nothing is re-injected).
    fn with_entry<const P: usize>(
        before: &Ioapic<P>,
        pin: usize,
        f: impl Fn(u64) -> u64,
    ) -> Ioapic<P> {
        let mut st = before.state();
        st.entries[pin] = RedirectionEntry(f(st.entries[pin].0));
        let mut after = before.clone();
        let a = after.set_registers(&st);
        assert!(a.deliver.is_empty());
        after
    }

    /// Every per-pin rule of `check_ioapic_step` still fires on a pin that
    /// no action names and the op did not write, wherever it sits in the
    /// table (the check visits only changed and named pins).
    fn planted_violations<const P: usize>() {
        let before = level_table::<P>();
        let no_op = IoapicStep::default();
        let none = IoapicEffects::default();
        for pin in [0, P / 2, P - 1] {
            let after = with_entry(&before, pin, |e| e ^ RedirectionEntry::MASK);
            let msg = panic_of(|| check_ioapic_step(&before, &after, no_op, &none));
            assert!(msg.contains("does not write it"), "P={P} pin {pin}: {msg}");

            let after = with_entry(&before, pin, |e| e | RedirectionEntry::REMOTE_IRR);
            let msg = panic_of(|| check_ioapic_step(&before, &after, no_op, &none));
            assert!(
                msg.contains("set without a delivery"),
                "P={P} pin {pin}: {msg}"
            );
            // ... and cleared again by an EOI of another vector.
            let step = IoapicStep {
                eoi: Some(Vector::new(0xff)),
                ..no_op
            };
            let msg = panic_of(|| check_ioapic_step(&after, &before, step, &none));
            assert!(msg.contains("cleared by neither"), "P={P} pin {pin}: {msg}");
            // A written pin may change, and an EOI of its vector clears it.
            let step = IoapicStep {
                eoi: Some(before.entries()[pin].vector()),
                written: Some(pin),
            };
            check_ioapic_step(&after, &before, step, &none);

            // A delivery the op reports of a masked pin.
            let after = with_entry(&before, pin, |e| e | RedirectionEntry::MASK);
            let mut fx = IoapicEffects::default();
            fx.deliver.insert(Pin::new(pin as u8));
            let step = IoapicStep {
                written: Some(pin),
                ..no_op
            };
            let msg = panic_of(|| check_ioapic_step(&before, &after, step, &fx));
            assert!(
                msg.contains("masked pin delivered"),
                "P={P} pin {pin}: {msg}"
            );
        }
        if P < 256 {
            let mut fx = IoapicEffects::default();
            fx.deliver_later.insert(Pin::new(P as u8));
            let msg = panic_of(|| check_ioapic_step(&before, &before, no_op, &fx));
            assert!(msg.contains("out-of-range pin"), "P={P}: {msg}");
        }
        // The unchanged table passes.
        check_ioapic_step(&before, &before.clone(), no_op, &none);
    }

    #[test]
    fn planted_violations_are_caught_on_any_pin() {
        planted_violations::<1>();
        planted_violations::<24>();
        planted_violations::<240>();
    }

    #[test]
    fn expected_iowin_table_is_expected_iowin() {
        let mut rng = SplitMix64::new(0x10a9_7ab1e);
        for _ in 0..8 {
            agree::<1>(&mut rng);
            agree::<24>(&mut rng);
            agree::<119>(&mut rng);
            agree::<120>(&mut rng);
            agree::<121>(&mut rng);
            agree::<240>(&mut rng);
        }
    }
}
