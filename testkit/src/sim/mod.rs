//! Deterministic multi-vCPU simulator, workloads and the necessary-exit oracle
//! (uses std).
//!
//! [`run`] drives one [`Irqchip`](eoi_exit::Irqchip) through a seeded stream of
//! events — devices raising INTx lines and sending MSIs, irqbalance moving
//! pins, drivers loading and unloading (mask churn), a driver that keeps its
//! line asserted (EOI storm), the RTC and an ack-notifier pin ticking — and a
//! guest on every vCPU that takes interrupts (honouring IF and the PPR),
//! runs handlers of configurable length, nests, quiets its device and EOIs at
//! the end of each handler. Every EOI is classified by the oracle below and
//! counted in a [`Census`].
//!
//! # Determinism
//!
//! Each event draws exactly four 64-bit numbers from a [`SplitMix64`] seeded
//! with the seed, whatever the state, so every policy sees the identical event
//! stream. Decisions that depend on state (which vector the LAPIC delivers,
//! whether a freed vector is free yet) are deterministic functions of it; the
//! state itself is identical across policies except where a policy loses an
//! EOI (a wedged line delivers no more) or rescans at a different time. The
//! same seed always gives the same [`Census`].
//!
//! # The oracle
//!
//! Every acceptance by a LAPIC is tagged with its source: a level-triggered
//! I/O APIC pin, a pin with an ack notifier, the RTC pin (with KVM's RTC EOI
//! tracking), or plain (MSI, edge pin). The oracle follows, per vCPU and
//! vector, the instance in IRR and the instance in ISR (one vector can have
//! one of each); an acceptance that coalesces into a set IRR bit merges into
//! the IRR instance, and a merged instance needs its EOI if any part does.
//! An EOI retires the instance in service for the highest ISR vector, and is
//! judged against the I/O APIC as it was just before the EOI:
//!
//! * **necessary** — forwarding it changes what the I/O APIC side must see:
//!   - the instance came from a level-triggered entry that is *still* level
//!     triggered, still has this vector and still has remote IRR set (the
//!     EOI is the one that clears it: KVM's `kvm_ioapic_update_eoi_one` is
//!     reached only for entries whose *current* vector matches);
//!   - or it came from a pin with an ack notifier whose entry still has this
//!     vector (the notifier runs from the same per-entry loop, edge or level);
//!   - or it came from the RTC pin, whose EOI this vCPU owes until the
//!     instance retires (KVM's `rtc_status.dest_map`), and pin 8 still has
//!     this vector.
//! * **unavoidable** — not necessary, but the bitmap, which is per vector,
//!   cannot tell it from a necessary one: a route that can deliver to this
//!   vCPU without a rescan first has this vector (an unmasked level entry, a
//!   masked level entry with remote IRR set, an unmasked notifier or RTC pin,
//!   each targeting this vCPU), or a newer instance of the same vector waits
//!   in this vCPU's IRR and needs its EOI (virtual-interrupt delivery moves it
//!   to ISR without an exit, so the bit must already be set).
//! * **avoidable** — intercepted, and neither of the above.
//! * **lost** — necessary but not intercepted: the I/O APIC never sees it.
//!
//! `exits = necessary + unavoidable + avoidable`.
//!
//! ## A vector rewritten while in service
//!
//! If the guest rewrites a level entry's vector (say 0x40 to 0x50) while an
//! instance of 0x40 is still in service, the EOI of 0x40 can no longer clear
//! that entry's remote IRR: KVM (and the 82093AA) match the EOI against each
//! entry's current vector, so the pin stays wedged however the EOI is
//! handled, and an EOI forwarded for 0x40 would only touch other entries that
//! happen to use 0x40. Such an EOI is therefore **not necessary**: a policy
//! that does not intercept it loses nothing (KVM's rescan after the rewrite
//! drops 0x40, and that is correct), and a policy that does intercept it pays
//! an exit that is unavoidable only if another route to this vCPU uses 0x40,
//! avoidable otherwise. Linux guests never do this: they move a level IRQ's
//! vector only from the ack path with the pin masked after the EOI, and
//! recover a stuck remote IRR by switching the entry to edge and back. The
//! simulator's irqbalance follows Linux (a new vector only while remote IRR is
//! clear); destination-only moves happen at any time, in service included.
//!
//! # What the simulator's VMM and guest do that the crate does not
//!
//! * **RTC coalescing.** KVM drops an RTC tick while an RTC EOI is owed
//!   (`rtc_irq_check_coalesced`); so does [`Irqchip`](eoi_exit::Irqchip) with
//!   `rtc_tracking` (counted in [`Census::rtc_coalesced`]).
//! * **Linux-like vector management.** A pin's vector changes, and a driver
//!   is unloaded (its vector freed) or reloaded, only when no interrupt of
//!   that pin is in flight; a mask while one is in flight is a
//!   `disable_irq` that keeps the vector (and the unmask that follows is an
//!   `enable_irq` that keeps it too). A freed vector is reused by an MSI
//!   only once the old vCPU holds no instance of it, and a pin is never given
//!   a vector an MSI holds on its new vCPU. So pins and MSIs never share a
//!   vector on one vCPU at the same time.
//! * **EOI forwarding.** The simulator uses the default
//!   [`EoiForwarding::TmrLevel`](eoi_exit::irqchip::EoiForwarding): an
//!   intercepted EOI reaches the I/O APIC only when its TMR bit says level, as
//!   on hardware and KVM's in-kernel I/O APIC. With KVM's split-irqchip rule
//!   (`AllIntercepted`) an over-intercepted MSI EOI would clear the remote IRR
//!   of a level pin still in service elsewhere; [`Census::edge_eoi_rirr_clears`]
//!   counts such forwards (0 under the default).
//! * **Directed EOI** (workload `directed-eoi`). The guest sets SVR bit 12
//!   (directed EOI advertised, x2APIC, version-0x20 I/O APIC) and ends each
//!   level handler with the LAPIC EOI and then a write of the vector to the
//!   I/O APIC's EOI register. `TmrLevel` honours bit 12, so the LAPIC EOI
//!   does not reach the I/O APIC; the oracle then judges no level EOI
//!   necessary and no level route a reason for an unavoidable exit (ack
//!   notifiers and the RTC still need theirs). [`Census::suppressed`] counts
//!   the level EOIs that would have cleared remote IRR had they been
//!   broadcast, [`Census::suppressed_exits`] those a policy intercepted
//!   anyway; a suppressed EOI that reached the I/O APIC counts as an oracle
//!   mismatch.
//!
//! # Other counters
//!
//! Rescans, entries scanned and VMCS words written come from the vCPUs'
//! [`VcpuStats`](eoi_exit::irqchip::VcpuStats) (the setup's initial scans
//! included). `stuck_remote_irr` counts entries with remote IRR set after a
//! drain phase (every line low, every driver fixed, every EOI-storm timer
//! fired, every vCPU's guest runs until IRR and ISR are empty).
//! `storms_throttled` counts pins the I/O APIC deferred after
//! 10,000 successive EOIs with the line asserted.

use std::boxed::Box;
use std::vec::Vec;

mod engine;
mod oracle;
mod workload;

pub use crate::race::SplitMix64;
pub use oracle::{Class, Instance, Oracle, PinRoles, Tag};
pub use workload::{WORKLOADS, Weights, Workload, workload};

use eoi_exit::{Policy, VcpuSlot};

/// The default seed of the census.
pub const DEFAULT_SEED: u64 = 0x00E0_1E41;

/// What one run counted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Census {
    /// Workload name.
    pub workload: &'static str,
    /// Policy.
    pub policy: Policy,
    /// Events simulated (the drain phase not included).
    pub events: u64,
    /// Interrupts accepted by LAPICs.
    pub deliveries: u64,
    /// Guest EOIs (drain phase included).
    pub eois: u64,
    /// EOIs that exited (`necessary + unavoidable + avoidable`).
    pub exits: u64,
    /// Exits the I/O APIC side needed.
    pub necessary: u64,
    /// Exits not needed but indistinguishable in a per-vector bitmap.
    pub unavoidable: u64,
    /// Exits not needed and avoidable.
    pub avoidable: u64,
    /// Necessary EOIs that did not exit.
    pub lost: u64,
    /// Rescans of vCPU EOI-exit bitmaps.
    pub rescans: u64,
    /// Redirection entries scanned in those rescans.
    pub entries_scanned: u64,
    /// VMCS `EOI_EXIT_BITMAPn` words written.
    pub vmcs_words: u64,
    /// Entries with remote IRR still set after the drain phase.
    pub stuck_remote_irr: u64,
    /// EOI storms throttled by the I/O APIC (`deliver_later`).
    pub storms_throttled: u64,
    /// Diagnostic: avoidable exits of a vector that a *masked* entry
    /// targeting this vCPU still carries (a masked entry cannot deliver
    /// before the unmasking write rescans its destination).
    pub avoidable_masked_route: u64,
    /// RTC ticks coalesced because an RTC EOI was still owed (KVM's
    /// `rtc_irq_check_coalesced`, done by the Irqchip with `rtc_tracking`).
    pub rtc_coalesced: u64,
    /// Diagnostic: level entries with remote IRR set that an intercepted
    /// *edge* EOI of their vector was forwarded to (KVM ignores such EOIs for
    /// remote IRR; see the crate's `Irqchip::guest_eoi`).
    pub edge_eoi_rirr_clears: u64,
    /// Directed EOI: level EOIs the LAPIC did not broadcast although the
    /// entry still waited on them (remote IRR set, same vector); the guest's
    /// EOI register write clears it instead. Not necessary, so not lost.
    pub suppressed: u64,
    /// Of those, the ones the policy intercepted anyway (exits directed EOI
    /// could have saved: `suppressed - suppressed_exits` were saved).
    pub suppressed_exits: u64,
    /// The guest's writes of the I/O APIC EOI register (directed EOI).
    pub ioapic_eoi_writes: u64,
    /// Disagreements between the oracle's bookkeeping and the LAPICs (0
    /// unless the simulator or the crate is wrong).
    pub oracle_mismatches: u64,
    /// `LineAware`: necessary EOIs that did not exit, left for the chip to
    /// resolve lazily (not lost unless never resolved).
    pub deferred: u64,
    /// `LineAware`: deferred EOIs whose effect reached the guest later (the
    /// pin's remote IRR found clear, or the pin delivered again). Each cost
    /// the VMM a lock of the vCPU whose LAPIC it read, at an event it
    /// handled anyway.
    pub lazy_resolutions: u64,
    /// `LineAware`: vCPUs named in `Effects::exit` (a line asserted while
    /// its lazy instance was in service): each an IPI and a VM exit that
    /// the EOI-exit bitmap alone would not have caused.
    pub exit_kicks: u64,
    /// Acknowledged interrupts, summed over vCPUs, from the first point
    /// where a vCPU's sequence of acknowledged vectors departs from the
    /// reference run's (`Exact`) to the end: what the guest could tell.
    /// Filled by [`run_traced`]'s caller ([`divergences`]); 0 from [`run`].
    pub divergences: u64,
}

/// The guest-visible trace of a run: per vCPU, the vectors it acknowledged,
/// in order.
pub type Trace = Vec<Vec<u8>>;

/// How far `t` departs from `reference`: per vCPU, the longer length minus
/// the common prefix, summed.
pub fn divergences(t: &Trace, reference: &Trace) -> u64 {
    t.iter()
        .zip(reference)
        .map(|(a, b)| {
            let common = a.iter().zip(b).take_while(|(x, y)| x == y).count();
            (a.len().max(b.len()) - common) as u64
        })
        .sum()
}

/// As [`run_with_progress`], also returning the guest-visible [`Trace`].
pub fn run_traced(
    w: &Workload,
    policy: Policy,
    seed: u64,
    events: u64,
    progress: &mut dyn FnMut(u64),
) -> (Census, Trace) {
    engine::run_traced(w, policy, seed, events, progress)
}

/// Runs workload `w` under `policy` for `events` events from `seed`.
pub fn run(w: &Workload, policy: Policy, seed: u64, events: u64) -> Census {
    run_with_progress(w, policy, seed, events, &mut |_| {})
}

/// An [`IrqchipState`](eoi_exit::snapshot::IrqchipState) of the simulator's
/// Irqchip, of any vCPU count: what [`run_restored`] hands its `through`
/// function (serializable with the `serde` feature).
pub type AnySnapshot = eoi_exit::snapshot::IrqchipState<Vec<eoi_exit::irqchip::VcpuState>>;

/// As [`run`], but after `at` events the Irqchip is snapshotted, handed to
/// `through` (which may serialize and deserialize it), and replaced by a fresh
/// Irqchip restored from what `through` returns; the guest, devices and
/// oracle carry on. A lossless snapshot gives the same census as [`run`].
///
/// Panics if `through` returns a snapshot of another vCPU count or one that
/// does not validate.
pub fn run_restored(
    w: &Workload,
    policy: Policy,
    seed: u64,
    events: u64,
    at: u64,
    through: &mut dyn FnMut(AnySnapshot) -> AnySnapshot,
) -> Census {
    let mut swap = |chip: &mut engine::SimChip| {
        let back = through(chip.state());
        let storage: Box<[VcpuSlot]> = (0..chip.vcpus()).map(|_| VcpuSlot::new()).collect();
        *chip = eoi_exit::Irqchip::from_state(&back, storage)
            .unwrap_or_else(|e| panic!("sim: restored snapshot is invalid: {e}"));
    };
    engine::run_hooked(w, policy, seed, events, &mut |_| {}, Some((at, &mut swap))).0
}

/// As [`run`], calling `progress(events_done)` every few thousand events.
///
/// Panics unless `w.vcpus` is in 1..=256.
pub fn run_with_progress(
    w: &Workload,
    policy: Policy,
    seed: u64,
    events: u64,
    progress: &mut dyn FnMut(u64),
) -> Census {
    engine::run_n(w, policy, seed, events, progress)
}
