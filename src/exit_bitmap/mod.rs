//! Per-vCPU EOI-exit bitmaps and the interception policies.
//!
//! With APIC virtualization a guest EOI completes in hardware unless the
//! vector's bit is set in the VMCS `EOI_EXIT_BITMAP0..3`. An [`EoiExitMap`]
//! decides that bitmap for one vCPU under one [`Policy`].
//!
//! # Call order (one vCPU)
//!
//! 1. On a rescan request: [`EoiExitMap::begin_scan`], then
//!    [`EoiExitMap::scan_entry`] for every I/O APIC redirection entry (or every
//!    split-irqchip GSI route below the reserved pin count), then
//!    [`EoiExitMap::end_scan`].
//! 2. On every interrupt this vCPU's LAPIC accepts: [`EoiExitMap::on_accept`].
//! 3. On every EOI the hardware intercepts (the vector is in
//!    [`EoiExitMap::bitmap`]): [`EoiExitMap::send_eoi`], *after* the LAPIC
//!    has retired the vector. The VMM MUST act on the returned [`EoiExit`] in
//!    KVM's order: forward the EOI to the I/O APIC, then rescan this vCPU if
//!    asked, then load the VMCS words.
//! 4. Before every VM entry: [`EoiExitMap::take_vmcs_update`], and write the
//!    returned words to the VMCS.

use crate::RedirectionEntry;
use crate::lapic::LocalApic;
use crate::routes::Msi;
use crate::types::{Destination, TriggerMode};
use crate::vector::{Vector, VectorSet};

mod exact;
mod state;

pub use state::EoiExitMapState;

/// How a vCPU's EOI-exit bitmap is computed.
///
/// All policies share the scan and EOI entry points; the enum is matched in
/// each method, a branch the optimizer hoists or predicts perfectly.
///
/// The default is [`Policy::Exact`]: of the five it is the one that loses no
/// level EOI and takes no avoidable EOI exit, without rescanning on EOI. The
/// others are there to reproduce real hypervisors (KVM before and after 6.16,
/// Xen/ACRN, TDX) and compare exit counts against them.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default, PartialOrd, Ord)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[repr(u8)]
pub enum Policy {
    /// Linux up to 6.15: a vector is intercepted when a counted entry targets
    /// this vCPU, or when it is pending (IRR or ISR) here at scan time. Stale
    /// bits stay until some later rescan.
    KvmLegacy = 0,
    /// Linux 6.16+: as `KvmLegacy`, and the highest vector set only because it
    /// was pending is remembered; its EOI requests a rescan.
    KvmHighestStale = 1,
    /// Xen / ACRN: set on acceptance of a level interrupt (or one whose EOI
    /// an ack notifier or the RTC needs), cleared on acceptance of a plain
    /// edge one. Scans never clear a bit. Loses the EOI of a level instance in
    /// service when an edge instance of the same vector is accepted after it.
    TmrDriven = 2,
    /// This crate: per-vector reasons (routed here, a necessary instance in
    /// flight, RTC EOI owed). A stale reason drops with the EOI that retires
    /// it, without a rescan.
    #[default]
    Exact = 3,
    /// TDX-style: nothing is intercepted. [`EoiExit::missed_level`] reports
    /// the level EOIs this loses.
    NoIntercept = 4,
}

impl Policy {
    /// Every policy, in declaration order.
    pub const ALL: [Policy; 5] = [
        Policy::KvmLegacy,
        Policy::KvmHighestStale,
        Policy::TmrDriven,
        Policy::Exact,
        Policy::NoIntercept,
    ];

    /// One of the two policies that model KVM (`KvmLegacy`,
    /// `KvmHighestStale`), rescans included.
    pub const fn is_kvm(self) -> bool {
        matches!(self, Policy::KvmLegacy | Policy::KvmHighestStale)
    }

    /// The policy's type-like name (`"KvmHighestStale"`, ...).
    ///
    /// # Examples
    ///
    /// ```
    /// use eoi_exit::Policy;
    ///
    /// let names: Vec<&str> = Policy::ALL.iter().map(|p| p.name()).collect();
    /// assert_eq!(
    ///     names,
    ///     ["KvmLegacy", "KvmHighestStale", "TmrDriven", "Exact", "NoIntercept"]
    /// );
    /// assert_eq!(Policy::default(), Policy::Exact);
    /// // The discriminant round-trips (snapshots store it as a byte).
    /// assert_eq!(Policy::try_from(Policy::Exact as u8), Ok(Policy::Exact));
    /// assert!(Policy::try_from(5).is_err());
    /// ```
    pub const fn name(self) -> &'static str {
        match self {
            Policy::KvmLegacy => "KvmLegacy",
            Policy::KvmHighestStale => "KvmHighestStale",
            Policy::TmrDriven => "TmrDriven",
            Policy::Exact => "Exact",
            Policy::NoIntercept => "NoIntercept",
        }
    }
}

impl TryFrom<u8> for Policy {
    type Error = crate::InvalidValue;
    fn try_from(v: u8) -> Result<Self, Self::Error> {
        Policy::ALL
            .get(v as usize)
            .copied()
            .ok_or(crate::InvalidValue(v as u64))
    }
}

/// One redirection entry or GSI route, as the scan sees it.
///
/// KVM's `kvm_ioapic_scan_entry` counts an entry for EOI interception when it
/// is level triggered, when its pin has an ack notifier, or when it is the
/// RTC pin; `Exact` additionally ignores masked entries.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct ScanEntry {
    /// Where the entry sends its interrupts.
    pub destination: Destination,
    /// Its vector.
    pub vector: Vector,
    /// Level triggered (redirection entry bit 15, MSI data bit 15).
    pub level: bool,
    /// The pin has an in-kernel ack notifier (assigned device, PIT reinject):
    /// its EOIs matter even when edge.
    pub ack_notifier: bool,
    /// The pin is the RTC (GSI 8), whose EOIs KVM tracks even when edge.
    pub rtc: bool,
    /// The entry is masked.
    pub masked: bool,
}

impl ScanEntry {
    /// From an I/O APIC redirection entry (in-kernel style scan).
    #[inline]
    pub const fn from_redirection(entry: RedirectionEntry, ack_notifier: bool, rtc: bool) -> Self {
        ScanEntry {
            destination: entry.destination(),
            vector: entry.vector(),
            level: entry.is_level(),
            ack_notifier,
            rtc,
            masked: entry.masked(),
        }
    }

    /// From a split-irqchip MSI route (KVM's `kvm_scan_ioapic_routes`: only the
    /// level bit of the data counts; the caller MUST pass only GSIs below the
    /// reserved I/O APIC pin count).
    #[inline]
    pub const fn from_msi_route(msi: &Msi) -> Self {
        ScanEntry {
            destination: msi.destination(),
            vector: msi.vector(),
            level: msi.is_level(),
            ack_notifier: false,
            rtc: false,
            masked: false,
        }
    }

    /// Whether KVM's scan counts the entry: level, ack notifier or RTC.
    #[inline]
    pub const fn counts_for_kvm(&self) -> bool {
        self.level || self.ack_notifier || self.rtc
    }

    /// Whether `Exact` counts it: as KVM, except that a masked entry never
    /// counts. A masked entry cannot deliver until a redirection write unmasks
    /// it, and that write rescans its destination before it delivers
    /// ([`crate::Irqchip`] guarantees the order; the race model check proves
    /// it). An instance it delivered before the mask is still in flight is
    /// tracked by its acceptance ([`Source::NeedsEoi`], the RTC's owed EOI),
    /// not by the route.
    #[inline]
    pub const fn counts_for_exact(&self) -> bool {
        self.counts_for_kvm() && !self.masked
    }
}

/// Where an accepted interrupt came from, as far as EOI interception cares.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum Source {
    /// Its EOI matters to nobody but the LAPIC (edge MSI, IPI, edge pin).
    #[default]
    Plain,
    /// Its EOI must reach the I/O APIC: a level entry (remote IRR), a pin with
    /// an ack notifier.
    NeedsEoi,
    /// The RTC pin under KVM's RTC EOI tracking: this vCPU owes an EOI.
    Rtc,
}

/// One acceptance by this vCPU's LAPIC, reported to [`EoiExitMap::on_accept`].
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct Accepted {
    /// The vector set in IRR.
    pub vector: Vector,
    /// Edge or level (what TMR now says).
    pub trigger: TriggerMode,
    /// The IRR bit was already set: the new instance merged into it.
    pub coalesced: bool,
    /// Whose EOI it is.
    pub source: Source,
}

/// What the VMM must do after an intercepted EOI.
///
/// The caller MUST, in this order: forward the EOI to the I/O APIC when
/// `forward` is set (`Ioapic::eoi`, or for KVM's split irqchip the
/// `KVM_EXIT_IOAPIC_EOI` path), then rescan this vCPU when `rescan` is set,
/// then load [`EoiExitMap::take_vmcs_update`] before the next VM entry.
#[must_use = "an intercepted EOI must be forwarded to the I/O APIC, or its line stays wedged"]
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
pub struct EoiExit {
    /// The EOI causes a VM exit (its vector is in the bitmap): the VMM must
    /// pass it on to the I/O APIC.
    pub intercepted: bool,
    /// This vCPU must be rescanned (after forwarding).
    pub rescan: bool,
    /// `NoIntercept` only: the retired vector was level triggered (TMR), so an
    /// I/O APIC entry may now wait forever for this EOI.
    pub missed_level: bool,
}

/// The VMCS `EOI_EXIT_BITMAPn` words that changed since the last load.
///
/// Word `n` holds vectors `64n..=64n+63` (bit `v % 64` of word `v / 64`),
/// the layout of the VMCS fields `EOI_EXIT_BITMAP0..3`.
#[must_use = "the VMCS must be updated before the next VM entry"]
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct VmcsUpdate {
    /// Bit `n` set: word `n` changed and MUST be written.
    pub mask: u8,
    /// All four words (only those in `mask` need writing).
    pub words: [u64; 4],
}

impl VmcsUpdate {
    /// The `(index, value)` pairs to write, in index order.
    pub fn changed(&self) -> impl Iterator<Item = (usize, u64)> + '_ {
        (0..4)
            .filter(move |i| self.mask & (1 << i) != 0)
            .map(move |i| (i, self.words[i]))
    }
}

/// One vCPU's EOI-exit bitmap under one [`Policy`].
///
/// Fixed size, no allocation. What a policy needs beyond the bitmap lives in
/// its own [`PolicyState`] variant, so a map cannot hold another policy's
/// bookkeeping. See the module docs for the call order.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct EoiExitMap {
    /// The bitmap the hardware should use.
    bitmap: VectorSet,
    /// The bitmap last handed out by `take_vmcs_update`.
    loaded: VectorSet,
    /// RTC EOI owed by this vCPU (KVM's `rtc_status.dest_map`), and its vector.
    rtc_owed: Option<Vector>,
    /// Inside begin_scan/end_scan.
    scanning: bool,
    /// The policy and its own bookkeeping.
    policy: PolicyState,
}

/// A policy and the bookkeeping only it needs, one variant per [`Policy`].
///
/// Part of [`EoiExitMapState`]; inside an [`EoiExitMap`] it is private, so
/// only the map's own methods change it.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum PolicyState {
    /// [`Policy::KvmLegacy`].
    KvmLegacy(KvmScan),
    /// [`Policy::KvmHighestStale`].
    KvmHighestStale(KvmScan),
    /// [`Policy::TmrDriven`]: level vectors pending at the last scan (adopted
    /// from a LAPIC the map did not see accept them).
    TmrDriven {
        /// TMR ∩ (IRR ∪ ISR) at the last scan.
        adopted_level: VectorSet,
    },
    /// [`Policy::Exact`].
    Exact(ExactTracking),
    /// [`Policy::NoIntercept`]: nothing to remember.
    NoIntercept,
}

/// The scan result of KVM's policies (`vcpu_scan_ioapic`).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct KvmScan {
    /// Counted entries that target this vCPU.
    pub routed: VectorSet,
    /// Vectors set only because they were pending (IRR or ISR) here at scan
    /// time; the highest of them is KVM's
    /// `highest_stale_pending_ioapic_eoi`.
    pub stale: VectorSet,
}

/// `Exact`'s reasons: routes to this vCPU and the instances in flight.
///
/// A vector has at most two outstanding instances (one in ISR, a newer one in
/// IRR); for each the map remembers whether its EOI is needed.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct ExactTracking {
    /// Counted, unmasked entries that target this vCPU.
    pub routed: VectorSet,
    /// Vectors with at least one outstanding instance known to the map, ...
    pub inst_one: VectorSet,
    /// ... with two (one in ISR, a newer one in IRR), ...
    pub inst_two: VectorSet,
    /// ... whether the oldest one needs its EOI, ...
    pub need_old: VectorSet,
    /// ... and whether the newer one does (meaningful only in `inst_two`).
    pub need_new: VectorSet,
}

impl PolicyState {
    /// The empty bookkeeping of `policy`.
    pub const fn new(policy: Policy) -> Self {
        const EMPTY: KvmScan = KvmScan {
            routed: VectorSet::EMPTY,
            stale: VectorSet::EMPTY,
        };
        match policy {
            Policy::KvmLegacy => PolicyState::KvmLegacy(EMPTY),
            Policy::KvmHighestStale => PolicyState::KvmHighestStale(EMPTY),
            Policy::TmrDriven => PolicyState::TmrDriven {
                adopted_level: VectorSet::EMPTY,
            },
            Policy::Exact => PolicyState::Exact(ExactTracking::EMPTY),
            Policy::NoIntercept => PolicyState::NoIntercept,
        }
    }

    /// Which policy this is.
    pub const fn policy(&self) -> Policy {
        match self {
            PolicyState::KvmLegacy(_) => Policy::KvmLegacy,
            PolicyState::KvmHighestStale(_) => Policy::KvmHighestStale,
            PolicyState::TmrDriven { .. } => Policy::TmrDriven,
            PolicyState::Exact(_) => Policy::Exact,
            PolicyState::NoIntercept => Policy::NoIntercept,
        }
    }
}

impl Default for EoiExitMap {
    fn default() -> Self {
        Self::new(Policy::default())
    }
}

impl EoiExitMap {
    /// An empty map under `policy`.
    pub const fn new(policy: Policy) -> Self {
        EoiExitMap {
            bitmap: VectorSet::EMPTY,
            loaded: VectorSet::EMPTY,
            rtc_owed: None,
            scanning: false,
            policy: PolicyState::new(policy),
        }
    }

    /// The policy.
    #[inline]
    pub const fn policy(&self) -> Policy {
        self.policy.policy()
    }

    /// The bitmap the hardware must use: a vector's EOI exits iff it is here.
    #[inline]
    pub const fn bitmap(&self) -> &VectorSet {
        &self.bitmap
    }

    /// Whether an EOI of `vector` is intercepted now.
    #[inline]
    pub fn intercepts(&self, vector: Vector) -> bool {
        self.bitmap.contains(vector)
    }

    /// The four VMCS `EOI_EXIT_BITMAP0..3` words.
    #[inline]
    pub const fn vmcs_words(&self) -> [u64; 4] {
        self.bitmap.as_u64_words()
    }

    /// KVM's policies: the highest vector set at the last scan only because
    /// it was pending (under `KvmHighestStale`, the vector whose EOI triggers
    /// a rescan).
    #[inline]
    pub fn highest_stale(&self) -> Option<Vector> {
        match &self.policy {
            PolicyState::KvmLegacy(k) | PolicyState::KvmHighestStale(k) => k.stale.highest(),
            _ => None,
        }
    }

    /// The RTC vector whose EOI this vCPU still owes, if any.
    #[inline]
    pub const fn rtc_owed(&self) -> Option<Vector> {
        self.rtc_owed
    }

    /// `Exact`: vectors with an outstanding instance whose EOI is needed
    /// (empty under the other policies).
    #[inline]
    pub fn needed_in_flight(&self) -> VectorSet {
        match &self.policy {
            PolicyState::Exact(x) => x.needed_in_flight(),
            _ => VectorSet::EMPTY,
        }
    }

    /// The words that changed since the last call, or `None` when the VMCS is
    /// current. Call before every VM entry.
    ///
    /// # Examples
    ///
    /// ```
    /// use eoi_exit::{
    ///     ApicId, ApicMode, EoiExitMap, LocalApic, Policy, RedirectionEntry, TriggerMode, Vector,
    /// };
    ///
    /// let apic = LocalApic::new_enabled(ApicId::new(0), ApicMode::XApic);
    /// let mut map = EoiExitMap::new(Policy::Exact);
    /// let table = [
    ///     RedirectionEntry::fixed(Vector::new(0x40), TriggerMode::Level, 0),
    ///     RedirectionEntry::fixed(Vector::new(0xfe), TriggerMode::Level, 0),
    /// ];
    /// map.scan_table(&apic, &table, |_| false, None);
    ///
    /// let u = map.take_vmcs_update().unwrap();
    /// assert_eq!(u.mask, 0b1010); // words 1 (0x40) and 3 (0xfe) changed
    /// assert_eq!(u.changed().collect::<Vec<_>>(), [(1, 1), (3, 1 << 62)]);
    /// assert_eq!(u.words, map.vmcs_words());
    /// assert!(map.take_vmcs_update().is_none()); // the VMCS is current
    /// ```
    #[inline]
    #[must_use = "the VMCS words must be written before the next VM entry"]
    pub fn take_vmcs_update(&mut self) -> Option<VmcsUpdate> {
        let new = self.bitmap.as_u64_words();
        let old = self.loaded.as_u64_words();
        let mut mask = 0u8;
        for i in 0..4 {
            if new[i] != old[i] {
                mask |= 1 << i;
            }
        }
        if mask == 0 {
            return None;
        }
        self.loaded = self.bitmap;
        Some(VmcsUpdate { mask, words: new })
    }

    /// The bitmap as last handed to the VMCS.
    #[inline]
    pub const fn loaded(&self) -> &VectorSet {
        &self.loaded
    }

    // ---- scanning -------------------------------------------------------

    /// Starts a rescan (KVM's `vcpu_scan_ioapic`: the bitmap and the highest
    /// stale vector are reset).
    pub fn begin_scan(&mut self) {
        self.scanning = true;
        match &mut self.policy {
            PolicyState::KvmLegacy(k) | PolicyState::KvmHighestStale(k) => {
                *k = KvmScan::default();
            }
            PolicyState::Exact(x) => x.routed.clear(),
            PolicyState::TmrDriven { .. } | PolicyState::NoIntercept => {}
        }
    }

    /// Scans one redirection entry or route against this vCPU's LAPIC.
    ///
    /// KVM policies follow `kvm_scan_ioapic_irq`: a counted entry whose
    /// destination matches sets the bit; one that does not match but whose
    /// vector is pending (IRR or ISR) sets it too and becomes a stale
    /// candidate.
    #[inline]
    pub fn scan_entry(&mut self, apic: &LocalApic, entry: &ScanEntry) {
        if entry.counts_for_kvm() {
            let matched = apic.matches(entry.destination);
            self.scan_matched(apic, entry.vector, entry.masked, matched);
        }
    }

    /// [`EoiExitMap::scan_entry`] for a counted entry (level, ack notifier or
    /// RTC) whose destination match the caller already knows (the
    /// [`Irqchip`](crate::Irqchip) caches each entry's destination set).
    #[inline]
    pub(crate) fn scan_matched(
        &mut self,
        apic: &LocalApic,
        vector: Vector,
        masked: bool,
        matched: bool,
    ) {
        match &mut self.policy {
            PolicyState::KvmLegacy(k) | PolicyState::KvmHighestStale(k) => {
                if matched {
                    k.routed.insert(vector);
                } else if apic.pending_eoi(vector) {
                    k.stale.insert(vector);
                }
            }
            PolicyState::Exact(x) => {
                if matched && !masked {
                    x.routed.insert(vector);
                }
            }
            PolicyState::TmrDriven { .. } | PolicyState::NoIntercept => {}
        }
    }

    /// A whole rescan from the scan's result as sets, for a caller that has
    /// already matched every counted entry (level, ack notifier, RTC) against
    /// this vCPU: `matched` holds the vectors of counted entries whose
    /// destination matches, `matched_unmasked` those of them that are
    /// unmasked, `unmatched` the vectors of counted entries that do not match.
    /// The same result as [`EoiExitMap::begin_scan`], one
    /// [`EoiExitMap::scan_entry`] per entry and [`EoiExitMap::end_scan`].
    #[inline]
    pub(crate) fn rescan_sets(
        &mut self,
        apic: &LocalApic,
        matched: &VectorSet,
        matched_unmasked: &VectorSet,
        unmatched: &VectorSet,
    ) {
        match &mut self.policy {
            PolicyState::KvmLegacy(k) | PolicyState::KvmHighestStale(k) => {
                // kvm_scan_ioapic_irq: a matching entry sets its bit; one
                // that does not match sets it only while the vector is
                // pending here (IRR or ISR), as a stale candidate.
                k.routed = *matched;
                k.stale = unmatched.intersection(&apic.irr().union(apic.isr()));
            }
            PolicyState::Exact(x) => x.routed = *matched_unmasked,
            PolicyState::TmrDriven { .. } | PolicyState::NoIntercept => {}
        }
        self.end_scan(apic);
    }

    /// Ends a rescan and recomputes the bitmap.
    pub fn end_scan(&mut self, apic: &LocalApic) {
        self.scanning = false;
        match &mut self.policy {
            PolicyState::TmrDriven { adopted_level } => {
                *adopted_level = apic.tmr().intersection(&apic.irr().union(apic.isr()));
            }
            PolicyState::Exact(x) => {
                // Instances the map never saw accepted (state planted by the
                // host, restored without a map, imported from KVM) are
                // adopted as needing their EOI.
                for v in apic.irr().union(apic.isr()).iter() {
                    x.sync_instances(apic, v, 0);
                }
            }
            _ => {}
        }
        self.recompute();
    }

    /// Convenience: a full scan of a redirection table.
    ///
    /// `ack_notifier(pin)` says whether a pin has an ack notifier; `rtc_pin`
    /// is the pin whose EOIs KVM's RTC tracking follows (8), if enabled.
    ///
    /// # Examples
    ///
    /// Only entries whose EOI matters (level, ack notifier, RTC) and that
    /// target this vCPU's APIC count.
    ///
    /// ```
    /// use eoi_exit::{
    ///     ApicId, ApicMode, EoiExitMap, LocalApic, Policy, RedirectionEntry, TriggerMode, Vector,
    /// };
    ///
    /// let apic = LocalApic::new_enabled(ApicId::new(0), ApicMode::XApic);
    /// let level = |v, id| RedirectionEntry::fixed(Vector::new(v), TriggerMode::Level, id);
    /// let edge = |v, id| RedirectionEntry::fixed(Vector::new(v), TriggerMode::Edge, id);
    /// let table = [level(0x40, 0), level(0x41, 1), edge(0x42, 0), edge(0x43, 0)];
    ///
    /// let mut map = EoiExitMap::new(Policy::Exact);
    /// // Pin 3 has an ack notifier (say, an assigned device's INTx).
    /// map.scan_table(&apic, &table, |pin| pin == 3, None);
    /// let bits: Vec<u8> = map.bitmap().iter().map(Vector::get).collect();
    /// assert_eq!(bits, [0x40, 0x43]); // not 0x41 (APIC ID 1), not 0x42 (plain edge)
    /// ```
    pub fn scan_table<F: Fn(usize) -> bool>(
        &mut self,
        apic: &LocalApic,
        entries: &[RedirectionEntry],
        ack_notifier: F,
        rtc_pin: Option<usize>,
    ) {
        self.begin_scan();
        for (pin, e) in entries.iter().enumerate() {
            let se = ScanEntry::from_redirection(*e, ack_notifier(pin), rtc_pin == Some(pin));
            self.scan_entry(apic, &se);
        }
        self.end_scan(apic);
    }

    fn recompute(&mut self) {
        let mut b = match &self.policy {
            PolicyState::KvmLegacy(k) | PolicyState::KvmHighestStale(k) => k.routed.union(&k.stale),
            PolicyState::Exact(x) => x.routed.union(&x.needed_in_flight()),
            // A scan never clears a TmrDriven bit; it adopts level instances
            // the map did not see accepted (state planted or restored).
            PolicyState::TmrDriven { adopted_level } => self.bitmap.union(adopted_level),
            PolicyState::NoIntercept => return self.bitmap.clear(),
        };
        if let Some(v) = self.rtc_owed {
            b.insert(v);
        }
        self.bitmap = b;
    }

    // ---- acceptance -------------------------------------------------------

    /// Reports an interrupt this vCPU's LAPIC accepted (call after
    /// `LocalApic::accept`, with the LAPIC in its new state).
    #[inline]
    pub fn on_accept(&mut self, apic: &LocalApic, a: Accepted) {
        match &mut self.policy {
            PolicyState::TmrDriven { .. } => {
                // Xen/ACRN key the bit on the trigger mode of the latest
                // acceptance. A KVM ack-notifier or RTC pin is treated like a
                // level source: its EOI is needed even though it is edge.
                self.bitmap
                    .set(a.vector, a.trigger.is_level() || a.source != Source::Plain);
            }
            PolicyState::Exact(x) => {
                if x.on_accept(apic, a) {
                    self.bitmap.insert(a.vector);
                }
            }
            PolicyState::NoIntercept => return,
            PolicyState::KvmLegacy(_) | PolicyState::KvmHighestStale(_) => {}
        }
        if a.source == Source::Rtc {
            // KVM records the owed EOI in the RTC dest_map; its scans read it.
            // `Exact` sets the bit at once so the owed EOI is never missed.
            self.rtc_owed = Some(a.vector);
            if matches!(self.policy, PolicyState::Exact(_)) {
                self.bitmap.insert(a.vector);
            }
        }
    }

    // ---- EOI ----------------------------------------------------------------

    /// Handles an EOI of `vector` that the LAPIC has just retired (`apic` is
    /// the LAPIC after the EOI; `level` is the TMR bit the EOI reported).
    ///
    /// Call it for every EOI the hardware intercepts; calling it for a vector
    /// not in the bitmap is harmless and returns `intercepted: false`.
    ///
    /// # Examples
    ///
    /// A level interrupt is in service on this vCPU when its entry is moved
    /// to another APIC (a stale vector). Every scanning policy keeps the bit
    /// until the in-service instance's EOI; after it, `KvmLegacy` keeps the
    /// bit until some later rescan (an avoidable exit per EOI of the vector
    /// meanwhile), `KvmHighestStale` asks for that rescan, and `Exact` drops
    /// the bit at once.
    ///
    /// ```
    /// use eoi_exit::{
    ///     ApicId, ApicMode, EoiExitMap, LocalApic, Policy, RedirectionEntry, TriggerMode, Vector,
    /// };
    ///
    /// let v = Vector::new(0x40);
    /// for policy in [Policy::KvmLegacy, Policy::KvmHighestStale, Policy::Exact] {
    ///     let mut apic = LocalApic::new_enabled(ApicId::new(0), ApicMode::XApic);
    ///     apic.set_in_service(v, true); // level 0x40 in service here ...
    ///     // ... while its entry now targets APIC ID 1.
    ///     let table = [RedirectionEntry::fixed(v, TriggerMode::Level, 1)];
    ///     let mut map = EoiExitMap::new(policy);
    ///     map.scan_table(&apic, &table, |_| false, None);
    ///     assert!(map.intercepts(v), "{policy:?}: the in-service EOI is needed");
    ///
    ///     let eoi = apic.eoi().unwrap(); // the LAPIC retires it first
    ///     let exit = map.send_eoi(&apic, eoi.vector, eoi.level);
    ///     assert!(exit.intercepted); // forward it to the I/O APIC
    ///     assert_eq!(exit.rescan, policy == Policy::KvmHighestStale);
    ///     assert_eq!(map.intercepts(v), policy != Policy::Exact, "{policy:?}");
    ///     if exit.rescan {
    ///         map.scan_table(&apic, &table, |_| false, None);
    ///         assert!(!map.intercepts(v));
    ///     }
    /// }
    /// ```
    #[inline]
    pub fn send_eoi(&mut self, apic: &LocalApic, vector: Vector, level: bool) -> EoiExit {
        if !self.bitmap.contains(vector) {
            return EoiExit {
                intercepted: false,
                rescan: false,
                missed_level: level && matches!(self.policy, PolicyState::NoIntercept),
            };
        }
        let mut exit = EoiExit {
            intercepted: true,
            rescan: false,
            missed_level: false,
        };
        if self.rtc_owed == Some(vector) {
            self.rtc_owed = None;
        }
        match &mut self.policy {
            PolicyState::KvmHighestStale(k) => {
                exit.rescan = k.stale.highest() == Some(vector);
            }
            PolicyState::Exact(x) => {
                // The EOI retired the oldest instance (the LAPIC already
                // popped it: one more existed before).
                x.sync_instances(apic, vector, 0);
                let keep = x.routed.contains(vector)
                    || x.needed_in_flight().contains(vector)
                    || self.rtc_owed == Some(vector);
                self.bitmap.set(vector, keep);
            }
            // An RTC EOI owed only shows in the next scan's result, as in KVM.
            PolicyState::KvmLegacy(_) => {}
            PolicyState::TmrDriven { .. } | PolicyState::NoIntercept => {}
        }
        exit
    }
}

#[cfg(test)]
mod tests;
