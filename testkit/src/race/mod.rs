//! The race operation language and the invariant checker.
//!
//! An [`Op`] is one thing that can happen to an [`Irqchip`]: a guest write of a
//! redirection-entry field, a device raising or lowering a line, an MSI, the
//! guest on vCPU `c` taking (ack) or finishing (EOI) an interrupt, a pending
//! rescan request being processed, a VM entry loading the VMCS, a snapshot and
//! its restore, and a few policy-specific events. A [`Harness`] applies ops to
//! one [`Irqchip`] and checks, after every op, the invariants of ARCHITECTURE.md
//! section 7 with bookkeeping of its own (it never trusts the crate's
//! [`EoiExitMap`](eoi_exit::EoiExitMap) internals):
//!
//! * **No lost EOI.** The checker tags every interrupt *instance* a vCPU accepts
//!   with its source. An instance from a level I/O APIC entry is *necessary*
//!   while it belongs to the pin's current remote-IRR cycle and the entry still
//!   waits for an EOI of that vector (level, same vector, remote IRR set); an
//!   instance from a pin with an ack notifier, or from the RTC pin under RTC
//!   tracking, is always necessary. A necessary instance retired by an EOI that
//!   did not exit is a [`Violation::LostEoi`]. Whether the EOI exits is decided
//!   as hardware decides it: by the bitmap last loaded into the VMCS.
//! * **Remote IRR consistency.** It is never set on an edge entry; it goes from
//!   clear to set only when the entry delivers (level, unmasked, asserted); it
//!   goes from set to clear only by a forwarded EOI of the entry's vector, a
//!   switch to edge, or a restore; and while set, some vCPU still holds an
//!   instance of the current cycle (unless the cycle was orphaned: delivered to
//!   no LAPIC, its vector rewritten in flight, or its EOI already reported lost).
//! * **TMR changes only on acceptance** of the vector on that vCPU.
//! * **VMCS updates are the diff**: `vmcs_update` returns exactly the 64-bit
//!   words that differ from what the checker knows is loaded, and a vCPU the
//!   VMM was not told to reload never runs with a bitmap different from the
//!   one the crate computed.
//! * **Bitmap inclusion** `Exact ⊆ KvmHighestStale ⊆ KvmLegacy`, checked by
//!   [`Lockstep`] over three Irqchips fed the same ops.
//! * **`LineAware` is the reference to the guest**: under that policy the
//!   harness follows the exit protocol, asynchronously (an owed exit lands at
//!   [`Op::Exit`], the guest running on until then), defers the level EOIs
//!   that do not exit instead of counting them lost, and checks every LAPIC
//!   and every IOWIN read against an `Exact` chip fed the same ops, whose EOI
//!   broadcasts from a race window may reach its I/O APIC late
//!   ([`Harness::step`]).
//!
//! Op sequences are slices and the checker's state is fixed-size; only the
//! log of one op's deliveries (a `Vec`) allocates. The proptest `Strategy`
//! is behind feature `proptest` (module `proptest_support`), `arbitrary::Arbitrary` for [`Op`] behind
//! feature `arbitrary`.
//!
//! # Snapshot and restore
//!
//! [`Op::Snapshot`] copies the architectural state (the I/O APIC and every
//! local APIC, as `KVM_GET_IRQCHIP` / `KVM_GET_LAPIC` would) plus the checker's
//! bookkeeping. [`Op::Restore`] builds a fresh [`Irqchip`] from it the way a
//! VMM restores a migrated VM: the EOI-exit maps are *not* part of the
//! snapshot, they are rebuilt by a rescan of every vCPU, every VMCS starts
//! empty and every vCPU must load its bitmap before it runs.
//! `Op::RestoreKvm` (feature `kvm`) restores the same snapshot through KVM's
//! formats: exported with `Irqchip::export_kvm`, imported with
//! `Irqchip::import_kvm`, whose re-injections the checker absorbs like any
//! other op's deliveries. Under `LineAware` the architectural state saved is
//! what `Irqchip::state` saves, with no owed exit landed first: with the
//! asynchronous window ([`Op::Exit`]) a snapshot op may fall between an EOI
//! that completed in hardware and its vCPU's exit, and the restored chip is
//! judged against the reference like any other.
//!
//! # Deferred rescans
//!
//! [`Irqchip`] rescans the targets of a redirection write before it delivers,
//! and the rescan an EOI requests inside [`Irqchip::guest_eoi`]. The harness
//! models the hardware side: a vCPU named in [`Effects::reload`] is *kicked*
//! (out of guest mode, as KVM's `KVM_REQ_SCAN_IOAPIC` with `KVM_REQUEST_WAIT`
//! guarantees) and loads its VMCS at its next [`Op::Enter`] (implied before its
//! next guest op). Interception is decided from the loaded VMCS words.
//! With [`Kick::Reload`] only the documented duty is followed (accepted
//! interrupts are posted to running vCPUs); the default
//! [`Kick::ReloadAndDeliveries`] also kicks every vCPU that accepted one.
//!
//! # Known losses and gaps (what the checker found)
//!
//! * [`LossCause::VectorRewrittenInFlight`] (`KvmLegacy`, `KvmHighestStale`,
//!   i.e. real KVM): pin 0 level `0x31` delivered to vCPU0; the guest writes
//!   vector `0x41` (vCPU0 rescanned, `0x31` is in no entry so KVM drops it),
//!   destination vCPU1 (vCPU0 rescanned again), vector `0x31` back (only
//!   vCPU1 is a target and rescanned); vCPU0's EOI of `0x31` no longer exits
//!   although a LAPIC broadcast would clear pin 0's remote IRR: it stays set.
//! * [`LossCause::SharedWithEdge`] (`TmrDriven`, by design): an edge interrupt
//!   of a vector whose level instance is in service clears the bit.
//! * [`InclusionGap`]: why `Exact ⊆ KvmHighestStale ⊆ KvmLegacy` fails.
//!
//! # The request order of an intercepted EOI
//!
//! [`Irqchip`] forwards an intercepted EOI to the I/O APIC before it rescans,
//! as KVM's `vcpu_enter_guest` does. The other order (rescan before
//! [`Ioapic::eoi`]) could not lose an EOI either, which is why the core no
//! longer carries it as a planted variant (the model check searched it to the
//! same depths and found nothing). Only
//! `KvmHighestStale` ever asks for a rescan on EOI. The scan reads the entries'
//! vector, trigger, destination and (for `Exact`'s masked rule, not used by
//! KVM policies) mask and remote IRR, and the LAPIC's IRR/ISR. Forwarding the
//! EOI changes only remote IRR and re-delivers level entries of that vector
//! to their *current* destinations. Every redirection write rescans its old
//! and new targets before it delivers, so every vCPU a level entry targets has
//! that vector routed at its last scan; a re-delivery therefore lands only
//! where the vector is already in the bitmap, whichever order ran. The orders
//! differ only in the `stale`/`highest_stale` bookkeeping (a re-delivered
//! vector shared with an entry routed elsewhere counts as stale only when the
//! rescan runs second), which changes when later rescans happen, not which
//! needed bits are set. The planted variant the checker does catch is
//! [`Mutant::ScanIgnoresPending`] (a scan without KVM's pending check).

// Only the intra-doc links of the module doc name these.
#[cfg(doc)]
use eoi_exit::irqchip::Effects;
#[cfg(doc)]
use eoi_exit::{Ioapic, Irqchip};

mod checker;
mod config;
mod fingerprint;
mod guest_view;
mod harness;
mod ioapic_check;
pub(crate) mod lean;
mod lockstep;
mod ops;
#[cfg(feature = "proptest")]
pub mod proptest_support;
mod reference;
mod rng;

pub use checker::{Checker, Instance, MAX_INSTANCES, Need, Saved, StepInfo, Violation};
pub use config::{HarnessConfig, Kick, LossCause, Mutant, Tolerated};
pub use fingerprint::Fingerprint;
pub use guest_view::{GuestStep, line_aware_divergence, line_aware_exhaustive};
pub use harness::{Chip, Harness, fixed_msi, fixed_physical};
pub use ioapic_check::{
    IoapicStep, check_ioapic_state, check_ioapic_step, expected_iowin, expected_iowin_table,
};
pub use lockstep::{InclusionGap, Lockstep, NESTED};
pub use ops::{Field, Op, RTC_PIN, Trace};
pub use rng::SplitMix64;
