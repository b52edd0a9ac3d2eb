//! Guest-visible equivalence of `Policy::LineAware` with the reference
//! semantics, over the race op language (issue 15).
//!
//! [`line_aware_divergence`] judges what the issue asks: what the guest
//! sees, step by step, with guest IOWIN reads as steps of their own (the
//! race [`Harness`](super::Harness) judges `LineAware` against the same
//! reference op by op, with the race checker's other invariants). The same steps run on two chips, one under `Exact` (every
//! necessary EOI exits: the reference) and one under `LineAware` with the
//! exit protocol: a vCPU named in `Effects::exit` exits before its next guest
//! op, or when that op is an EOI (the race window) before the step after it,
//! and at the exit calls `take_events` then `vmcs_update`. A step that saves
//! or restores the VM ([`Op::Snapshot`], [`Op::Restore`], [`Op::Migrate`],
//! and through KVM's formats `RestoreKvm` and `MigrateKvm` with the `kvm`
//! feature and 24 pins) lands no exit first: a snapshot may fall inside the
//! window, and a restored VM owes no exit. A kicked vCPU (an interrupt
//! or event to notice) exits at once on both sides. Every ack and every
//! guest IOWIN read must return the same value; so must a final read of every
//! entry. Both chips use the SDM's forwarding rule
//! ([`EoiForwarding::TmrLevel`]): under KVM's split-irqchip rule an
//! over-intercepted *edge* EOI clears a level entry's remote IRR, so the
//! reference itself depends on the bitmap.

use std::vec::Vec;

use eoi_exit::ioapic::{IOREGSEL, IOWIN, MMIO_LEN, REG_REDTBL_BASE};
use eoi_exit::irqchip::{Effects, EoiForwarding, IrqchipState, VcpuState};
use eoi_exit::{ApicMode, Irqchip, IrqchipConfig, Pin, Policy, VcpuId, VcpuSlot};

use super::{Op, fixed_msi};

/// One step of a [`line_aware_divergence`] run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GuestStep {
    /// A race op. `DirectedEoi` does nothing here, nor do `RestoreKvm` and
    /// `MigrateKvm` without the `kvm` feature or with another pin count
    /// than KVM's 24.
    Race(Op),
    /// The guest reads the low half of an entry through IOREGSEL/IOWIN.
    Read(u8),
}

fn read<const V: usize, const P: usize>(c: &Irqchip<[VcpuSlot; V], P>, pin: u8) -> u64 {
    let mut fx = Effects::new();
    let sel = u64::from(REG_REDTBL_BASE + 2 * (pin % P as u8));
    c.mmio_write(IOREGSEL, 4, sel, &mut fx);
    c.mmio_read(IOWIN, 4)
}

/// One side: a chip, its saved snapshot, the exits it owes.
#[derive(Clone)]
struct Side<const V: usize, const P: usize> {
    chip: Irqchip<[VcpuSlot; V], P>,
    saved: Option<IrqchipState<Vec<VcpuState>, P>>,
    owed: [bool; V],
    /// The vCPU's EOI came in the race window: its exit lands before the
    /// next step, unless that step saves or restores the VM.
    eoi_in_window: [bool; V],
}

impl<const V: usize, const P: usize> Side<V, P> {
    fn exit(&mut self, c: usize) {
        let mut fx = Effects::new();
        let id = VcpuId::new(c as u16);
        let _ = self.chip.take_events(id, false, false, &mut fx);
        self.owed[c] = false;
        self.eoi_in_window[c] = false;
        self.after(&fx);
        let _ = self.chip.vmcs_update(id);
    }

    /// The chip is replaced by `chip`, restored from a snapshot: its vCPUs
    /// owe no exit and load their whole VMCS.
    fn restored(&mut self, chip: Irqchip<[VcpuSlot; V], P>) {
        self.chip = chip;
        self.owed = [false; V];
        self.eoi_in_window = [false; V];
        for i in 0..V {
            let _ = self.chip.vmcs_update(VcpuId::new(i as u16));
        }
    }

    /// `s` restored into a fresh chip by the crate's restore.
    fn from_snapshot(s: &IrqchipState<Vec<VcpuState>, P>) -> Irqchip<[VcpuSlot; V], P> {
        Irqchip::from_state(s, [const { VcpuSlot::new() }; V]).expect("own snapshot")
    }

    /// Restores `s` through KVM's formats (`export_kvm` of it, then
    /// `import_kvm`, whose re-injections the restored vCPUs then notice);
    /// nothing unless `P` is KVM's 24.
    #[cfg(feature = "kvm")]
    fn restore_through_kvm(&mut self, s: &IrqchipState<Vec<VcpuState>, P>) {
        use core::any::Any;
        use eoi_exit::snapshot::kvm::kvm_bindings::kvm_lapic_state;
        use eoi_exit::snapshot::kvm::{IOAPIC_DEFAULT_BASE_ADDRESS, KvmLapicIdentity};
        let source = Self::from_snapshot(s);
        let source: &dyn Any = &source;
        let Some(source) = source.downcast_ref::<Irqchip<[VcpuSlot; V], 24>>() else {
            return;
        };
        let (ioapic, pages): (_, Vec<kvm_lapic_state>) =
            source.export_kvm(IOAPIC_DEFAULT_BASE_ADDRESS, true);
        let who: Vec<KvmLapicIdentity> = s
            .vcpus
            .iter()
            .map(|v| KvmLapicIdentity {
                initial_id: eoi_exit::ApicId::new(v.apic.initial_id),
                mode: v.apic.mode,
                x2apic_format: true,
            })
            .collect();
        let mut fx = Effects::new();
        let chip = Irqchip::import_kvm(
            s.config,
            &ioapic,
            &pages,
            &who,
            [const { VcpuSlot::new() }; V],
            &mut fx,
        )
        .expect("KVM's formats of a valid state import")
        .chip;
        let chip: Box<dyn Any> = Box::new(chip);
        self.restored(*chip.downcast().expect("P is 24"));
        self.after(&fx);
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
    fn step(&mut self, s: GuestStep) -> Option<u64> {
        let guest_vcpu = match s {
            GuestStep::Race(Op::Ack { vcpu } | Op::Eoi { vcpu } | Op::Tpr { vcpu, .. }) => {
                Some(usize::from(vcpu) % V)
            }
            GuestStep::Race(Op::Ldr { vcpu, .. } | Op::Ipi { vcpu, .. }) => {
                Some(usize::from(vcpu) % V)
            }
            _ => None,
        };
        let window = matches!(s, GuestStep::Race(Op::Eoi { .. }));
        let saves = match s {
            GuestStep::Race(Op::Snapshot | Op::Restore | Op::Migrate) => true,
            #[cfg(feature = "kvm")]
            GuestStep::Race(Op::RestoreKvm | Op::MigrateKvm) => true,
            _ => false,
        };
        // Owed exits land now, except the EOI's own vCPU, if it has not
        // EOI'd in the window yet, and except before a save or restore.
        for c in 0..V {
            let in_window = window && guest_vcpu == Some(c) && !self.eoi_in_window[c];
            if self.owed[c] && !in_window && !saves {
                self.exit(c);
            }
        }
        let mut fx = Effects::new();
        let c = &self.chip;
        let pin = |p: u8| Pin::new(p % P as u8);
        let mut seen = None;
        match s {
            GuestStep::Read(p) => seen = Some(read(c, p)),
            GuestStep::Race(op) => match op {
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
                } => c.send_msi(&fixed_msi(u32::from(dest), vector, level), &mut fx),
                Op::Accept { vcpu, vector } => c.send_msi(
                    &fixed_msi(u32::from(vcpu) % V as u32, vector, false),
                    &mut fx,
                ),
                Op::Ack { vcpu } => {
                    seen = Some(
                        c.ack(VcpuId::new(u16::from(vcpu) % V as u16))
                            .map_or(0, |v| u64::from(v.get()) | 0x100),
                    );
                }
                Op::Eoi { vcpu } => {
                    let _ = c.guest_eoi(VcpuId::new(u16::from(vcpu) % V as u16), &mut fx);
                }
                Op::Rescan { vcpu } => c.rescan(VcpuId::new(u16::from(vcpu) % V as u16), &mut fx),
                Op::Enter { vcpu } => {
                    let i = usize::from(vcpu) % V;
                    if self.owed[i] {
                        self.exit(i);
                    }
                    let _ = self.chip.vmcs_update(VcpuId::new(i as u16));
                }
                // Owed exits land before every step here (the window is
                // the EOI's alone), so this one finds none.
                Op::Exit { vcpu } => {
                    let i = usize::from(vcpu) % V;
                    if self.owed[i] {
                        self.exit(i);
                    }
                }
                Op::DeliverLater { pin: p } => c.deliver_later_elapsed(pin(p), &mut fx),
                Op::Ldr { .. } | Op::Tpr { .. } | Op::Ipi { .. } => {
                    if let Some((vcpu, writes)) = op.lapic_writes() {
                        let id = VcpuId::new(u16::from(vcpu) % V as u16);
                        for w in writes.into_iter().flatten() {
                            c.write_lapic(id, w, &mut fx);
                        }
                    }
                }
                Op::Snapshot => self.saved = Some(c.state()),
                Op::Restore => {
                    if let Some(s) = &self.saved {
                        self.restored(Self::from_snapshot(s));
                    }
                }
                Op::Migrate => {
                    let s = c.state();
                    self.restored(Self::from_snapshot(&s));
                }
                #[cfg(feature = "kvm")]
                Op::RestoreKvm => {
                    if let Some(s) = self.saved.clone() {
                        self.restore_through_kvm(&s);
                    }
                }
                #[cfg(feature = "kvm")]
                Op::MigrateKvm => {
                    let s = c.state();
                    self.restore_through_kvm(&s);
                }
                // Not part of this comparison.
                _ => {}
            },
        }
        self.after(&fx);
        if window
            && let Some(c) = guest_vcpu
            && self.owed[c]
        {
            self.eoi_in_window[c] = true;
        }
        seen
    }
}

impl<const V: usize, const P: usize> Side<V, P> {
    fn new(config: IrqchipConfig, policy: Policy, init: &[u64]) -> Self {
        let config = IrqchipConfig {
            policy,
            eoi_forwarding: EoiForwarding::TmrLevel,
            ..config
        };
        let mut side = Side::<V, P> {
            chip: Irqchip::new(config, ApicMode::XApic, [const { VcpuSlot::new() }; V]),
            saved: None,
            owed: [false; V],
            eoi_in_window: [false; V],
        };
        // The writes' duties are followed as any step's: a vCPU an initial
        // entry delivered a non-vectored event to (an INIT) takes it now, on
        // both sides alike, not at whichever later exit one side owes.
        let mut fx = Effects::new();
        for (p, &e) in init.iter().enumerate().take(P) {
            side.chip.write_entry(Pin::new(p as u8), e, &mut fx);
        }
        side.after(&fx);
        for i in 0..V {
            let _ = side.chip.vmcs_update(VcpuId::new(i as u16));
        }
        side
    }

    /// The end of a run: owed exits happen, then the guest reads every
    /// entry.
    fn finish(mut self) -> Vec<Option<u64>> {
        for c in 0..V {
            if self.owed[c] {
                self.exit(c);
            }
        }
        (0..P as u8).map(|p| Some(read(&self.chip, p))).collect()
    }
}

fn run<const V: usize, const P: usize>(
    config: IrqchipConfig,
    policy: Policy,
    init: &[u64],
    steps: &[GuestStep],
) -> Vec<Option<u64>> {
    let mut side = Side::<V, P>::new(config, policy, init);
    let mut seen: Vec<Option<u64>> = steps.iter().map(|&s| side.step(s)).collect();
    seen.extend(side.finish());
    seen
}

/// Every sequence of up to `depth` steps from `alphabet`, after the steps
/// of `prefix`, depth first with the two chips cloned at each prefix: each
/// step's guest-visible result, and the final reads after every prefix, must
/// agree between `Exact` and `LineAware`. Returns the number of sequences
/// checked, or the first counterexample found (`prefix` not included).
pub fn line_aware_exhaustive<const V: usize, const P: usize>(
    config: IrqchipConfig,
    init: &[u64],
    prefix: &[GuestStep],
    alphabet: &[GuestStep],
    depth: usize,
) -> Result<u64, Vec<GuestStep>> {
    fn go<const V: usize, const P: usize>(
        a: &Side<V, P>,
        b: &Side<V, P>,
        alphabet: &[GuestStep],
        left: usize,
        path: &mut Vec<GuestStep>,
        count: &mut u64,
    ) -> Result<(), Vec<GuestStep>> {
        *count += 1;
        if a.clone().finish() != b.clone().finish() {
            return Err(path.clone());
        }
        if left == 0 {
            return Ok(());
        }
        for &s in alphabet {
            let (mut a2, mut b2) = (a.clone(), b.clone());
            path.push(s);
            if a2.step(s) != b2.step(s) {
                return Err(path.clone());
            }
            go(&a2, &b2, alphabet, left - 1, path, count)?;
            path.pop();
        }
        Ok(())
    }
    let mut a = Side::<V, P>::new(config, Policy::Exact, init);
    let mut b = Side::<V, P>::new(config, Policy::LineAware, init);
    for &s in prefix {
        if a.step(s) != b.step(s) {
            return Err(Vec::new());
        }
    }
    let mut count = 0;
    go(&a, &b, alphabet, depth, &mut Vec::new(), &mut count)?;
    Ok(count)
}

/// Runs `steps` after host-writing `init` to pins `0..` on a `V`-vCPU,
/// `P`-pin chip with `config` (its policy and EOI forwarding replaced) under
/// `Exact` and under `LineAware`; the index of the first step whose
/// guest-visible result differs (`steps.len() + p` for the final read of pin
/// `p`), with both values, or `None` when the guest cannot tell them apart.
pub fn line_aware_divergence<const V: usize, const P: usize>(
    config: IrqchipConfig,
    init: &[u64],
    steps: &[GuestStep],
) -> Option<(usize, Option<u64>, Option<u64>)> {
    let reference = run::<V, P>(config, Policy::Exact, init, steps);
    let lazy = run::<V, P>(config, Policy::LineAware, init, steps);
    reference
        .iter()
        .zip(&lazy)
        .position(|(a, b)| a != b)
        .map(|i| (i, reference[i], lazy[i]))
}
