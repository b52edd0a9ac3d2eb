//! What a [`Harness`] is built with: [`HarnessConfig`], [`Kick`], [`Mutant`],
//! and the lost-EOI causes it may tolerate ([`LossCause`], [`Tolerated`]).

use eoi_exit::MsiFormat;
use eoi_exit::ioapic::{IoapicConfig, IoapicVersion, MaskedEdge, PinSet};
#[cfg(doc)]
use eoi_exit::irqchip::Effects;
use eoi_exit::irqchip::{Arbitration, EoiForwarding};
use eoi_exit::{IrqchipConfig, Pin, Policy};

#[cfg(doc)]
use super::{Checker, Harness};

/// When the harness's VMM kicks a vCPU out of guest mode (so that it loads
/// its VMCS update before it runs guest code again).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum Kick {
    /// Only the vCPUs in [`Effects::reload`] (the documented duty). Accepted
    /// interrupts are *posted* to a running vCPU without a VM entry.
    Reload,
    /// The reload vCPUs and every vCPU that accepted an interrupt.
    #[default]
    ReloadAndDeliveries,
}

/// What a [`Harness`] is built with.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct HarnessConfig {
    /// The Irqchip's configuration (policy, EOI order, ack notifiers, RTC).
    pub chip: IrqchipConfig,
    /// When vCPUs are kicked.
    pub kick: Kick,
    /// Whether an intercepted EOI of an *edge* vector (TMR clear) may clear
    /// remote IRR. `true` tolerates KVM split-irqchip + QEMU behaviour (KVM
    /// exits to userspace whatever TMR says, QEMU clears remote IRR); `false`
    /// holds ARCHITECTURE.md section 7 strictly (only a level EOI, which is what a
    /// LAPIC broadcasts, clears it).
    pub edge_eoi_clears_remote_irr: bool,
    /// A bug planted on purpose, to show the checker bites.
    pub mutant: Option<Mutant>,
    /// Lost EOIs of these causes are recorded in [`Checker::tolerated_loss`]
    /// instead of failing the step.
    pub tolerate: Tolerated,
    /// Every kicked vCPU re-enters (loads its VMCS) right after each op. A
    /// kicked vCPU runs no guest code until it enters and then loads the
    /// bitmap current at that time, so this loses no interception behaviour;
    /// it shrinks the state space of the model check.
    pub eager_enter: bool,
    /// Directed EOI: every vCPU advertises it and its guest sets SVR bit 12
    /// at construction, and the I/O APIC is version 0x20 (the guest EOIs it
    /// through the EOI register, [`Op::Mmio`](super::Op::Mmio) at 0x40).
    /// The checker then expects no suppressed EOI to reach the I/O APIC
    /// (a level one, or under the split irqchip's
    /// `AllInterceptedUnlessSuppressed` any), and counts a suppressed EOI
    /// whose entry still waited as suppressed, not lost, until the EOI
    /// register clears that remote IRR.
    pub directed_eoi: bool,
}

/// Bugs the harness can plant in the VMM around the Irqchip, so tests can show
/// that the checker finds them.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Mutant {
    /// Every rescan is redone without the "pending in IRR or ISR" check, as
    /// KVM scanned before commits 0fc5a36dd6b3 / fceb3a36c29a: an entry
    /// rerouted away while its interrupt is in flight loses that EOI (with the
    /// KVM policies; `Exact` keeps in-flight instances by its own tracking).
    ScanIgnoresPending,
    /// `LineAware`: the VMM skips `take_events` when a vCPU's owed exit
    /// lands (it only loads the VMCS), so the chip never re-checks the lazy
    /// instances the guest retired in the race window: their pins keep
    /// remote IRR set with the line asserted, where the reference's EOI
    /// re-delivered.
    ExitWithoutTakeEvents,
}

impl HarnessConfig {
    /// KVM's request order, default I/O APIC, no ack notifier, no RTC
    /// tracking, vCPUs kicked on reload and on delivery; KVM's split-irqchip
    /// forwarding rule, except under `LineAware`, which the harness compares
    /// with the reference under the SDM's ([`EoiForwarding::TmrLevel`]).
    pub const fn new(policy: Policy) -> Self {
        HarnessConfig {
            chip: IrqchipConfig {
                policy,
                // KVM's in-kernel I/O APIC (`IoapicConfig::default()`,
                // spelled out: this is a `const fn`).
                ioapic: IoapicConfig {
                    version: IoapicVersion::V11,
                    masked_edge: MaskedEdge::Latch,
                    id: 0,
                    msi_format: MsiFormat::Xapic,
                },
                ack_notifier_pins: PinSet::EMPTY,
                resample_pins: PinSet::EMPTY,
                rtc_tracking: false,
                arbitration: Arbitration::KvmVectorHashing,
                // The checker's remote-IRR model follows KVM's split irqchip,
                // where every intercepted EOI reaches the I/O APIC.
                // `LineAware` cannot run there (ARCHITECTURE.md), and under
                // that rule the reference depends on the bitmap.
                eoi_forwarding: match policy {
                    Policy::LineAware => EoiForwarding::TmrLevel,
                    _ => EoiForwarding::AllIntercepted,
                },
            },
            kick: Kick::ReloadAndDeliveries,
            edge_eoi_clears_remote_irr: true,
            mutant: None,
            tolerate: Tolerated::NONE,
            eager_enter: false,
            directed_eoi: false,
        }
    }

    /// With directed EOI (see [`HarnessConfig::directed_eoi`]) under KVM's
    /// split irqchip with `KVM_X2APIC_ENABLE_SUPPRESS_EOI_BROADCAST`
    /// (`EoiForwarding::AllInterceptedUnlessSuppressed`) and a version-0x20
    /// I/O APIC.
    /// (`LineAware` keeps the SDM's rule, under which SVR bit 12 stops a
    /// level EOI's broadcast.)
    pub const fn with_directed_eoi(mut self) -> Self {
        self.directed_eoi = true;
        if !matches!(self.chip.policy, Policy::LineAware) {
            self.chip.eoi_forwarding = EoiForwarding::AllInterceptedUnlessSuppressed;
        }
        self.chip.ioapic.version = eoi_exit::IoapicVersion::V20;
        self
    }

    /// With every kicked vCPU entering right after each op.
    pub const fn eager(mut self) -> Self {
        self.eager_enter = true;
        self
    }

    /// Tolerating lost EOIs of `c`.
    pub const fn tolerating(mut self, c: LossCause) -> Self {
        self.tolerate = self.tolerate.with(c);
        self
    }

    /// Tolerates the loss causes the configured policy is known to have (see
    /// [`LossCause`]): `KvmLegacy` and `KvmHighestStale` lose EOIs of vectors
    /// rewritten in flight, `TmrDriven` those of vectors shared with an edge
    /// source, `NoIntercept` every kind, `Exact` none. The property tests,
    /// the model check and the fuzz harnesses all use this one list.
    pub const fn tolerating_known_losses(self) -> Self {
        match self.chip.policy {
            Policy::KvmLegacy | Policy::KvmHighestStale => {
                self.tolerating(LossCause::VectorRewrittenInFlight)
            }
            Policy::TmrDriven => self.tolerating(LossCause::SharedWithEdge),
            Policy::NoIntercept => self
                .tolerating(LossCause::Plain)
                .tolerating(LossCause::SharedWithEdge)
                .tolerating(LossCause::VectorRewrittenInFlight),
            // `LineAware`'s level EOIs that do not exit are deferred, and
            // judged against the reference (see `Harness::step`).
            Policy::LineAware | Policy::Exact => self,
        }
    }

    /// With a planted bug.
    pub const fn with_mutant(mut self, m: Mutant) -> Self {
        self.mutant = Some(m);
        self
    }

    /// With remote IRR cleared only by level EOIs (ARCHITECTURE.md section 7).
    pub const fn strict_edge_eoi(mut self) -> Self {
        self.edge_eoi_clears_remote_irr = false;
        self
    }

    /// With another kick rule.
    pub const fn with_kick(mut self, kick: Kick) -> Self {
        self.kick = kick;
        self
    }
}

/// What set a lost EOI up, so known policy limitations can be told apart
/// from plain losses.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum LossCause {
    /// Nothing unusual: the entry kept its vector, the vector's TMR bit still
    /// says level. No policy but `NoIntercept` may lose such an EOI.
    /// (When several conditions set a loss up, the first of
    /// `VectorRewrittenInFlight`, `SharedWithEdge` is reported.)
    Plain,
    /// The guest rewrote the entry's vector while the instance was in flight
    /// (remote IRR set) and later wrote it back, so the EOI matters again.
    /// KVM's scan only sees vectors of current entries and rescans only the
    /// write's old and new destination, so the vCPU holding the instance
    /// may not be rescanned when the vector comes back.
    VectorRewrittenInFlight,
    /// An edge interrupt with the same vector was accepted after the level
    /// instance, so TMR says edge at its EOI: a LAPIC would not broadcast
    /// that EOI either, and `TmrDriven` (set on level, clear on edge
    /// acceptance) has cleared the bit.
    SharedWithEdge,
}

impl LossCause {
    const fn bit(self) -> u8 {
        match self {
            LossCause::Plain => 1,
            LossCause::VectorRewrittenInFlight => 2,
            LossCause::SharedWithEdge => 4,
        }
    }
}

/// A set of [`LossCause`]s. A harness tolerates a lost EOI (records it
/// instead of failing) when any condition that set it up is tolerated, or,
/// for a plain loss, when [`LossCause::Plain`] is.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
pub struct Tolerated(pub(super) u8);

impl Tolerated {
    /// Nothing tolerated.
    pub const NONE: Tolerated = Tolerated(0);
    /// With `c` added.
    pub const fn with(self, c: LossCause) -> Self {
        Tolerated(self.0 | c.bit())
    }
    /// Whether `c` is tolerated.
    pub const fn contains(self, c: LossCause) -> bool {
        self.0 & c.bit() != 0
    }

    /// The cause reported for a loss set up by these conditions.
    pub(super) const fn primary(self) -> LossCause {
        if self.contains(LossCause::VectorRewrittenInFlight) {
            LossCause::VectorRewrittenInFlight
        } else if self.contains(LossCause::SharedWithEdge) {
            LossCause::SharedWithEdge
        } else {
            LossCause::Plain
        }
    }
}

/// Whether `pin` has an ack notifier in `chip`: listed in
/// `ack_notifier_pins`, or a resampler (`resample_pins`), which is one.
pub(crate) fn notified(chip: &IrqchipConfig, pin: Pin) -> bool {
    chip.ack_notifier_pins.contains(pin) || chip.resample_pins.contains(pin)
}
