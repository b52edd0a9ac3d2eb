//! `Policy::LineAware` against the reference semantics over the race op
//! language (issue 15, item 4, in part).
//!
//! The race checker counts every unintercepted necessary EOI as lost, which
//! is what `LineAware` does by design, so it cannot judge it. This suite
//! judges what the issue asks instead: what the guest sees. The same random
//! op sequences (entry field writes, lines, MSIs, edge acceptances, IPIs,
//! acks, EOIs, rescans, VM entries, LDR and TPR writes, raw MMIO, EOI-storm
//! timers, snapshots and restores) run on two chips, one under `Exact` (every
//! necessary EOI exits: the reference) and one under `LineAware` with the
//! exit protocol (a vCPU named in `Effects::exit` exits before its next guest
//! op, or right after it when that op is an EOI: the race window; at the exit
//! `take_events` then `vmcs_update`). Interleaved guest IOWIN reads of the
//! entries and every ack must return the same values on both.

use eoi_exit::ioapic::{IOREGSEL, IOWIN, MMIO_LEN, REG_REDTBL_BASE};
use eoi_exit::irqchip::{Effects, EoiForwarding, IrqchipState, LapicWrite, VcpuState};
use eoi_exit::{Irqchip, IrqchipConfig, Pin, Policy, VcpuId, VcpuSlot};
use eoi_exit_testkit::race::proptest_support::{Shape, entries, op};
use eoi_exit_testkit::race::{Op, fixed_physical};
use proptest::prelude::*;

const VCPUS: usize = 2;
const PINS: usize = 4;
type Chip = Irqchip<[VcpuSlot; VCPUS], PINS>;

#[derive(Clone, Copy, Debug)]
enum Step {
    Race(Op),
    /// The guest reads the low half of an entry through IOREGSEL/IOWIN.
    Read(u8),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        8 => op(Shape::SMALL).prop_map(Step::Race),
        1 => (0..PINS as u8).prop_map(Step::Read),
    ]
}

fn chip(policy: Policy, forwarding: EoiForwarding) -> Chip {
    Irqchip::new(
        IrqchipConfig {
            policy,
            eoi_forwarding: forwarding,
            ..IrqchipConfig::default()
        },
        eoi_exit::ApicMode::XApic,
        [const { VcpuSlot::new() }; VCPUS],
    )
}

fn read(c: &Chip, pin: u8) -> u64 {
    let mut fx = Effects::new();
    let sel = u64::from(REG_REDTBL_BASE + 2 * (pin % PINS as u8));
    c.mmio_write(IOREGSEL, 4, sel, &mut fx);
    c.mmio_read(IOWIN, 4)
}

/// One side: a chip, its saved snapshot, the exits it owes.
struct Side {
    chip: Chip,
    saved: Option<IrqchipState<Vec<VcpuState>, PINS>>,
    owed: [bool; VCPUS],
}

impl Side {
    fn exit(&mut self, c: usize) {
        let mut fx = Effects::new();
        let id = VcpuId::new(c as u16);
        let _ = self.chip.take_events(id, false, false, &mut fx);
        self.owed[c] = false;
        self.after(&fx);
        let _ = self.chip.vmcs_update(id);
    }

    /// Duties: owed exits recorded; reloads land before the next guest
    /// instruction of a vCPU that owes no exit (it loads at that exit); a
    /// kicked vCPU (an interrupt or a non-vectored event to notice) exits at
    /// once, on both sides alike: `take_events`, then `vmcs_update`.
    fn after(&mut self, fx: &Effects) {
        for id in fx.exit.iter() {
            self.owed[id.index()] = true;
        }
        for id in fx.kick.iter() {
            self.exit(id.index());
        }
        for id in fx.reload.iter() {
            if !self.owed[id.index()] {
                let _ = self.chip.vmcs_update(id);
            }
        }
    }

    /// Applies one step; returns what the guest saw.
    fn step(&mut self, s: Step) -> Option<u64> {
        let guest_vcpu = match s {
            Step::Race(Op::Ack { vcpu } | Op::Eoi { vcpu } | Op::Tpr { vcpu, .. }) => {
                Some(usize::from(vcpu) % VCPUS)
            }
            Step::Race(Op::Ldr { vcpu, .. } | Op::Ipi { vcpu, .. }) => {
                Some(usize::from(vcpu) % VCPUS)
            }
            _ => None,
        };
        let window = matches!(s, Step::Race(Op::Eoi { .. }));
        // Owed exits land now, except the EOI's own vCPU (the window).
        for c in 0..VCPUS {
            if self.owed[c] && !(window && guest_vcpu == Some(c)) {
                self.exit(c);
            }
        }
        let mut fx = Effects::new();
        let c = &self.chip;
        let pin = |p: u8| Pin::new(p % PINS as u8);
        let mut seen = None;
        match s {
            Step::Read(p) => seen = Some(read(c, p)),
            Step::Race(op) => match op {
                Op::Write { pin: p, field } => {
                    let e = c.ioapic().entry(pin(p)).map_or(0, |e| e.0);
                    // As the guest writes it: both halves through IOWIN.
                    let v = field.apply(e);
                    for (half, val) in [(1u8, v >> 32), (0, v & 0xffff_ffff)] {
                        let sel = u64::from(REG_REDTBL_BASE + 2 * pin(p).get() + half);
                        c.mmio_write(IOREGSEL, 4, sel, &mut fx);
                        c.mmio_write(IOWIN, 4, val, &mut fx);
                    }
                }
                Op::WriteEntry { pin: p, value } => c.write_entry(pin(p), value, &mut fx),
                Op::Mmio {
                    offset,
                    size,
                    value,
                } => c.mmio_write(
                    u64::from(offset) % MMIO_LEN,
                    u32::from(size),
                    u64::from(value),
                    &mut fx,
                ),
                Op::SetLine { pin: p, high } => c.set_line(pin(p), high, &mut fx),
                Op::Msi {
                    dest,
                    vector,
                    level,
                } => c.send_msi(&fixed_physical(u32::from(dest), vector, level), &mut fx),
                Op::Accept { vcpu, vector } => c.send_msi(
                    &fixed_physical(u32::from(vcpu) % VCPUS as u32, vector, false),
                    &mut fx,
                ),
                Op::Ack { vcpu } => {
                    seen = Some(
                        c.ack(VcpuId::new(u16::from(vcpu) % VCPUS as u16))
                            .map_or(0, |v| u64::from(v.get()) | 0x100),
                    );
                }
                Op::Eoi { vcpu } => {
                    let _ = c.guest_eoi(VcpuId::new(u16::from(vcpu) % VCPUS as u16), &mut fx);
                }
                Op::Rescan { vcpu } => {
                    c.rescan(VcpuId::new(u16::from(vcpu) % VCPUS as u16), &mut fx)
                }
                Op::Enter { vcpu } => {
                    let i = usize::from(vcpu) % VCPUS;
                    if self.owed[i] {
                        self.exit(i);
                    }
                    let _ = self.chip.vmcs_update(VcpuId::new(i as u16));
                }
                Op::DeliverLater { pin: p } => c.deliver_later_elapsed(pin(p), &mut fx),
                Op::Ldr { vcpu, logical_id } => c.write_lapic(
                    VcpuId::new(u16::from(vcpu) % VCPUS as u16),
                    LapicWrite::Register {
                        offset: 0xD0,
                        value: u32::from(logical_id) << 24,
                    },
                    &mut fx,
                ),
                Op::Tpr { vcpu, tpr } => c.write_lapic(
                    VcpuId::new(u16::from(vcpu) % VCPUS as u16),
                    LapicWrite::Register {
                        offset: 0x80,
                        value: u32::from(tpr),
                    },
                    &mut fx,
                ),
                Op::Ipi {
                    vcpu,
                    dest,
                    vector,
                    shorthand,
                } => {
                    let id = VcpuId::new(u16::from(vcpu) % VCPUS as u16);
                    for (offset, value) in [
                        (0x310, u32::from(dest) << 24),
                        (0x300, u32::from(vector) | u32::from(shorthand & 3) << 18),
                    ] {
                        c.write_lapic(id, LapicWrite::Register { offset, value }, &mut fx);
                    }
                }
                Op::Snapshot => self.saved = Some(c.state()),
                Op::Restore => {
                    if let Some(s) = &self.saved {
                        self.chip.restore(s).expect("own snapshot");
                        // A restored VM's vCPUs load their whole VMCS.
                        self.owed = [false; VCPUS];
                        for i in 0..VCPUS {
                            let _ = self.chip.vmcs_update(VcpuId::new(i as u16));
                        }
                    }
                }
                // Not generated by Shape::SMALL without the `kvm` feature, or
                // not part of this comparison.
                _ => {}
            },
        }
        self.after(&fx);
        if window
            && let Some(c) = guest_vcpu
            && self.owed[c]
        {
            self.exit(c);
        }
        seen
    }
}

fn run(policy: Policy, fwd: EoiForwarding, init: &[u64], steps: &[Step]) -> Vec<Option<u64>> {
    let mut side = Side {
        chip: chip(policy, fwd),
        saved: None,
        owed: [false; VCPUS],
    };
    for (p, &e) in init.iter().enumerate().take(PINS) {
        side.chip
            .write_entry(Pin::new(p as u8), e, &mut Effects::new());
    }
    for i in 0..VCPUS {
        let _ = side.chip.vmcs_update(VcpuId::new(i as u16));
    }
    let mut seen: Vec<Option<u64>> = steps.iter().map(|&s| side.step(s)).collect();
    for c in 0..VCPUS {
        if side.owed[c] {
            side.exit(c);
        }
    }
    for p in 0..PINS as u8 {
        seen.push(Some(read(&side.chip, p)));
    }
    seen
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(4000)
    ))]

    /// The guest cannot tell `LineAware` from the reference: every ack and
    /// every IOWIN read returns the same value, under the SDM's forwarding
    /// rule (`TmrLevel`: an EOI reaches the I/O APIC when TMR says level).
    /// Under KVM's split-irqchip rule (`AllIntercepted`) the reference itself
    /// depends on the bitmap: an intercepted *edge* EOI clears the remote IRR
    /// of a level entry with the same vector, so `Exact`, which intercepts an
    /// MSI's EOI on a vector a level route targets, clears it where
    /// `LineAware` does not (the first counterexample this test found); that
    /// mode is not compared.
    #[test]
    fn line_aware_race_ops_are_guest_indistinguishable_from_exact(
        init in entries(Shape::SMALL),
        steps in proptest::collection::vec(step(), 1..48),
    ) {
        let fwd = EoiForwarding::TmrLevel;
        let reference = run(Policy::Exact, fwd, &init, &steps);
        let lazy = run(Policy::LineAware, fwd, &init, &steps);
        let first = reference.iter().zip(&lazy).position(|(a, b)| a != b);
        prop_assert!(first.is_none(), "first difference at step {:?}: {:?} vs {:?}",
            first, first.map(|i| reference[i]), first.map(|i| lazy[i]));
    }
}
