//! Per-vCPU EOI-exit bitmaps and the interception policies.
//!
//! With APIC virtualization a guest EOI completes in hardware unless the
//! vector's bit is set in the VMCS `EOI_EXIT_BITMAP0..3`. An [`EoiExitMap`]
//! decides that bitmap for one vCPU under one [`Policy`].
//!
//! # Call order (one vCPU)
//!
//! 1. On a rescan request: [`EoiExitMap::scan`] of every I/O APIC
//!    redirection entry (or every split-irqchip GSI route below the reserved
//!    pin count), or ([`ScanEntry::from_redirection`]) of a redirection table.
//! 2. On every interrupt this vCPU's LAPIC accepts: [`EoiExitMap::on_accept`].
//! 3. On every EOI the hardware intercepts (the vector is in
//!    [`EoiExitMap::bitmap`]): [`EoiExitMap::send_eoi`], *after* the LAPIC
//!    has retired the vector. The VMM MUST act on the returned [`EoiExit`] in
//!    KVM's order: forward the EOI to the I/O APIC, then rescan this vCPU if
//!    asked, then load the VMCS words.
//! 4. Before every VM entry: [`EoiExitMap::take_vmcs_update`], and write the
//!    returned words to the VMCS.
//!
//! # Directed EOI
//!
//! The map does not read SVR bit 12. While a vCPU suppresses EOI broadcasts
//! and the VMM honours it, [`Irqchip`](crate::Irqchip) leaves the plain
//! level entries (no ack notifier, not the RTC) out of that vCPU's scans and
//! reports their acceptances as [`Source::Plain`], so `Exact` does not
//! intercept their EOIs; a VMM that drives an `EoiExitMap` itself does the
//! same (see [`EoiForwarding`](crate::irqchip::EoiForwarding)).

use crate::RedirectionEntry;
use crate::lapic::LocalApic;
use crate::routes::{Msi, MsiFormat};
use crate::types::{Destination, TriggerMode};
use crate::vector::{Vector, VectorSet};

mod exact;
mod line_aware;
mod state;

pub(crate) use line_aware::Line;

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
    /// Issue 15, only meaningful inside an [`Irqchip`](crate::Irqchip): the
    /// EOI of a level instance exits only when its line was asserted at this
    /// vCPU's last VM entry, when an ack notifier, a resampler or the RTC
    /// needs it, or when its vector is shared on this vCPU with another
    /// instance. Any other level EOI completes in hardware and the chip
    /// clears remote IRR lazily, when the VMM next sees something that could
    /// observe it (the line asserting again, an IOWIN read of the entry, a
    /// reprogram of the entry, a snapshot). A line that asserts while its
    /// instance is in service asks for an exit of the vCPU
    /// ([`Effects::exit`](crate::irqchip::Effects::exit)). A map driven
    /// without the chip sees every level instance as eager (its EOI exits,
    /// as under `Exact` without routes).
    LineAware = 5,
}

impl Policy {
    /// The five policies that decide at the EOI itself whether it reaches
    /// the I/O APIC, in declaration order. [`Policy::LineAware`], which
    /// defers remote IRR, is not in it: the testkit's checkers, which count
    /// an unintercepted necessary EOI as lost, iterate this list.
    pub const ALL: [Policy; 5] = [
        Policy::KvmLegacy,
        Policy::KvmHighestStale,
        Policy::TmrDriven,
        Policy::Exact,
        Policy::NoIntercept,
    ];

    /// One of the two policies that model KVM (`KvmLegacy`,
    /// `KvmHighestStale`), rescans included.
    pub(crate) const fn is_kvm(self) -> bool {
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
    /// assert_eq!(Policy::try_from(5), Ok(Policy::LineAware));
    /// assert!(Policy::try_from(6).is_err());
    /// ```
    pub const fn name(self) -> &'static str {
        match self {
            Policy::KvmLegacy => "KvmLegacy",
            Policy::KvmHighestStale => "KvmHighestStale",
            Policy::TmrDriven => "TmrDriven",
            Policy::Exact => "Exact",
            Policy::NoIntercept => "NoIntercept",
            Policy::LineAware => "LineAware",
        }
    }
}

impl TryFrom<u8> for Policy {
    type Error = crate::InvalidValue;
    fn try_from(v: u8) -> Result<Self, Self::Error> {
        match v {
            5 => Ok(Policy::LineAware),
            _ => Policy::ALL
                .get(v as usize)
                .copied()
                .ok_or(crate::InvalidValue(v as u64)),
        }
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
    pub(crate) destination: Destination,
    /// Its vector.
    pub(crate) vector: Vector,
    /// Level triggered (redirection entry bit 15, MSI data bit 15).
    pub(crate) level: bool,
    /// The pin has an in-kernel ack notifier (assigned device, PIT reinject):
    /// its EOIs matter even when edge.
    pub(crate) ack_notifier: bool,
    /// The pin is the RTC (GSI 8), whose EOIs KVM tracks even when edge.
    pub(crate) rtc: bool,
    /// The entry is masked.
    pub(crate) masked: bool,
}

impl ScanEntry {
    /// From an I/O APIC redirection entry (in-kernel style scan), its
    /// destination decoded with `format` (the I/O APIC's
    /// [`IoapicConfig::msi_format`](crate::IoapicConfig::msi_format); KVM's
    /// in-kernel I/O APIC is [`MsiFormat::Xapic`]).
    #[inline]
    pub const fn from_redirection(
        entry: RedirectionEntry,
        format: MsiFormat,
        ack_notifier: bool,
        rtc: bool,
    ) -> Self {
        ScanEntry {
            destination: entry.destination(format),
            vector: entry.vector(),
            level: entry.is_level(),
            ack_notifier,
            rtc,
            masked: entry.masked(),
        }
    }

    /// From a split-irqchip MSI route (KVM's `kvm_scan_ioapic_routes`: only the
    /// level bit of the data counts; the caller MUST pass only GSIs below the
    /// reserved I/O APIC pin count), its destination decoded as KVM decodes
    /// it: `format` is [`MsiFormat::X2apicApi`] when the VMM enabled
    /// `KVM_X2APIC_API_USE_32BIT_IDS`, [`MsiFormat::Xapic`] otherwise.
    /// `None` for a route KVM refuses to install (`address_hi` bits 7:0 set
    /// under the x2APIC API), which therefore never counts.
    #[inline]
    pub const fn from_msi_route(msi: &Msi, format: MsiFormat) -> Option<Self> {
        let Some(destination) = msi.destination(format) else {
            return None;
        };
        Some(ScanEntry {
            destination,
            vector: msi.vector(),
            level: msi.is_level(),
            ack_notifier: false,
            rtc: false,
            masked: false,
        })
    }

    /// Whether KVM's scan counts the entry: level, ack notifier or RTC.
    #[inline]
    pub(crate) const fn counts_for_kvm(&self) -> bool {
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
    #[cfg(test)]
    pub(crate) const fn counts_for_exact(&self) -> bool {
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
/// Fixed size, no allocation. What a policy needs lives in its own variant,
/// so a map cannot hold another policy's bookkeeping, and the bitmap is
/// stored only where it is state of its own (`TmrDriven`, and the KVM
/// policies, whose bitmap keeps a retired RTC vector until the next scan as
/// KVM's does); `Exact` derives it from its reasons. The VMCS is tracked as
/// the words changed since the last load, not as a copy. See the module docs
/// for the call order.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct EoiExitMap {
    book: Book,
}

/// What every policy keeps besides its own bookkeeping. Inside each variant
/// of [`Book`], where it fills the padding after the discriminant.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
struct Header {
    /// VMCS words changed since the last `take_vmcs_update` (bit `n` = word
    /// `n`).
    dirty: u8,
    /// RTC EOI owed by this vCPU (KVM's `rtc_status.dest_map`), and its vector.
    rtc_owed: Option<Vector>,
}

/// The live bookkeeping of each policy.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
enum Book {
    Kvm {
        hdr: Header,
        /// `KvmHighestStale` (else `KvmLegacy`).
        highest_stale: bool,
        bitmap: VectorSet,
        scan: KvmScan,
    },
    TmrDriven {
        hdr: Header,
        bitmap: VectorSet,
        /// TMR ∩ (IRR ∪ ISR) at the last scan.
        adopted_level: VectorSet,
    },
    Exact {
        hdr: Header,
        x: exact::Packed,
    },
    NoIntercept {
        hdr: Header,
    },
    LineAware {
        hdr: Header,
        x: line_aware::Packed,
    },
}

/// A policy and the bookkeeping only it needs, as an [`EoiExitMapState`]
/// saves it.
///
/// Opaque: what each policy remembers (KVM's routed and stale vectors,
/// `TmrDriven`'s adopted level vectors, `Exact`'s per-instance tracking) is
/// the model's business, not API, and may change with the snapshot version.
/// It is plain data all the same (`Copy`, `Eq`, `Hash`, and with the `serde`
/// feature `Serialize` / `Deserialize`), captured by [`EoiExitMap::state`],
/// checked and loaded by [`EoiExitMap::from_state`]; an empty one comes from
/// `EoiExitMap::new(policy).state().policy`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(transparent)
)]
pub struct PolicyState(pub(crate) Saved);

/// The bookkeeping of [`PolicyState`], one variant per [`Policy`]. Its serde
/// encoding is the snapshot format's (version 2).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub(crate) enum Saved {
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
    /// [`Policy::LineAware`] (snapshot version 5).
    LineAware(LineAwareTracking),
}

/// `LineAware`'s saved reasons. A lazy instance is saved as eager when its
/// EOI exits or is about to, and not at all otherwise: the pin it came from
/// is the chip's, not saved, so the restored chip adopts it as eager.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub(crate) struct LineAwareTracking {
    /// Counted, unmasked ack-notifier, resample and RTC entries that target
    /// this vCPU.
    pub(crate) routed: VectorSet,
    /// Vectors with an instance whose EOI exits.
    pub(crate) eager: VectorSet,
}

/// The scan result of KVM's policies (`vcpu_scan_ioapic`).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub(crate) struct KvmScan {
    /// Counted entries that target this vCPU.
    pub(crate) routed: VectorSet,
    /// Vectors set only because they were pending (IRR or ISR) here at scan
    /// time; the highest of them is KVM's
    /// `highest_stale_pending_ioapic_eoi`.
    pub(crate) stale: VectorSet,
}

/// `Exact`'s reasons: routes to this vCPU and the instances in flight.
///
/// A vector has at most two outstanding instances (one in ISR, a newer one in
/// IRR); for each the map remembers whether its EOI is needed.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub(crate) struct ExactTracking {
    /// Counted, unmasked entries that target this vCPU.
    pub(crate) routed: VectorSet,
    /// Vectors with at least one outstanding instance known to the map, ...
    pub(crate) inst_one: VectorSet,
    /// ... with two (one in ISR, a newer one in IRR), ...
    pub(crate) inst_two: VectorSet,
    /// ... whether the oldest one needs its EOI, ...
    pub(crate) need_old: VectorSet,
    /// ... and whether the newer one does (meaningful only in `inst_two`).
    pub(crate) need_new: VectorSet,
}

impl PolicyState {
    /// Which policy this is.
    pub const fn policy(&self) -> Policy {
        match self.0 {
            Saved::KvmLegacy(_) => Policy::KvmLegacy,
            Saved::KvmHighestStale(_) => Policy::KvmHighestStale,
            Saved::TmrDriven { .. } => Policy::TmrDriven,
            Saved::Exact(_) => Policy::Exact,
            Saved::NoIntercept => Policy::NoIntercept,
            Saved::LineAware(_) => Policy::LineAware,
        }
    }
}

impl Default for EoiExitMap {
    fn default() -> Self {
        Self::new(Policy::default())
    }
}

impl Book {
    #[inline]
    fn hdr(&self) -> &Header {
        match self {
            Book::Kvm { hdr, .. }
            | Book::TmrDriven { hdr, .. }
            | Book::Exact { hdr, .. }
            | Book::LineAware { hdr, .. }
            | Book::NoIntercept { hdr } => hdr,
        }
    }

    #[inline]
    fn hdr_mut(&mut self) -> &mut Header {
        match self {
            Book::Kvm { hdr, .. }
            | Book::TmrDriven { hdr, .. }
            | Book::Exact { hdr, .. }
            | Book::LineAware { hdr, .. }
            | Book::NoIntercept { hdr } => hdr,
        }
    }
}

/// The VMCS words in which `a` and `b` differ, as a mask.
#[inline]
fn words_differing(a: &VectorSet, b: &VectorSet) -> u8 {
    let (a, b) = (a.as_u64_words(), b.as_u64_words());
    (0..4).fold(0, |m, i| m | (u8::from(a[i] != b[i]) << i))
}

/// The VMCS words holding a set bit.
#[inline]
fn words_nonzero(a: &VectorSet) -> u8 {
    words_differing(a, &VectorSet::EMPTY)
}

impl EoiExitMap {
    /// An empty map under `policy`.
    pub const fn new(policy: Policy) -> Self {
        let hdr = Header {
            dirty: 0,
            rtc_owed: None,
        };
        let book = match policy {
            Policy::KvmLegacy | Policy::KvmHighestStale => Book::Kvm {
                hdr,
                highest_stale: matches!(policy, Policy::KvmHighestStale),
                bitmap: VectorSet::EMPTY,
                scan: KvmScan {
                    routed: VectorSet::EMPTY,
                    stale: VectorSet::EMPTY,
                },
            },
            Policy::TmrDriven => Book::TmrDriven {
                hdr,
                bitmap: VectorSet::EMPTY,
                adopted_level: VectorSet::EMPTY,
            },
            Policy::Exact => Book::Exact {
                hdr,
                x: exact::Packed::EMPTY,
            },
            Policy::NoIntercept => Book::NoIntercept { hdr },
            Policy::LineAware => Book::LineAware {
                hdr,
                x: line_aware::Packed::EMPTY,
            },
        };
        EoiExitMap { book }
    }

    /// The policy.
    #[inline]
    pub const fn policy(&self) -> Policy {
        match &self.book {
            Book::Kvm {
                highest_stale: false,
                ..
            } => Policy::KvmLegacy,
            Book::Kvm { .. } => Policy::KvmHighestStale,
            Book::TmrDriven { .. } => Policy::TmrDriven,
            Book::Exact { .. } => Policy::Exact,
            Book::NoIntercept { .. } => Policy::NoIntercept,
            Book::LineAware { .. } => Policy::LineAware,
        }
    }

    /// The bitmap the hardware must use: a vector's EOI exits iff it is here.
    #[inline]
    pub fn bitmap(&self) -> VectorSet {
        match &self.book {
            Book::Kvm { bitmap, .. } | Book::TmrDriven { bitmap, .. } => *bitmap,
            Book::Exact { hdr, x } => {
                let mut b = x.exit_set();
                if let Some(v) = hdr.rtc_owed {
                    b.insert(v);
                }
                b
            }
            Book::NoIntercept { .. } => VectorSet::EMPTY,
            Book::LineAware { hdr, x } => {
                let mut b = x.routed.set_of().union(&x.loadable());
                if let Some(v) = hdr.rtc_owed {
                    b.insert(v);
                }
                b
            }
        }
    }

    /// Whether an EOI of `vector` is intercepted now.
    ///
    /// The same as `bitmap().contains(vector)`, except under
    /// [`Policy::LineAware`] for a bit raised while the vCPU ran: it is in
    /// the bitmap (the VMM must load it) but not in the VMCS the guest runs
    /// with until [`EoiExitMap::take_vmcs_update`] hands it over.
    #[inline]
    pub fn intercepts(&self, vector: Vector) -> bool {
        match &self.book {
            Book::Kvm { bitmap, .. } | Book::TmrDriven { bitmap, .. } => bitmap.contains(vector),
            Book::Exact { hdr, x } => x.exits(vector) || hdr.rtc_owed == Some(vector),
            Book::NoIntercept { .. } => false,
            Book::LineAware { hdr, x } => x.exits(vector) || hdr.rtc_owed == Some(vector),
        }
    }

    /// The four VMCS `EOI_EXIT_BITMAP0..3` words.
    #[inline]
    pub(crate) fn vmcs_words(&self) -> [u64; 4] {
        self.bitmap().as_u64_words()
    }

    /// KVM's policies: the highest vector set at the last scan only because
    /// it was pending (under `KvmHighestStale`, the vector whose EOI triggers
    /// a rescan).
    #[inline]
    #[cfg(test)]
    pub(crate) fn highest_stale(&self) -> Option<Vector> {
        match &self.book {
            Book::Kvm { scan, .. } => scan.stale.highest(),
            _ => None,
        }
    }

    /// The RTC vector whose EOI this vCPU still owes, if any.
    #[inline]
    pub(crate) fn rtc_owed(&self) -> Option<Vector> {
        self.book.hdr().rtc_owed
    }

    /// Whether [`EoiExitMap::take_vmcs_update`] has work: words changed
    /// since the last update, or (`LineAware`) the load itself moves lazy
    /// instances on.
    #[inline]
    pub(crate) fn needs_load(&self) -> bool {
        matches!(self.book, Book::LineAware { .. }) || self.book.hdr().dirty != 0
    }

    /// The words that changed since the last call, or `None` when none did.
    /// Call before every VM entry.
    ///
    /// A word is reported when the bitmap changed in it since the last load;
    /// a bit set and cleared again in between reports its word with the value
    /// it already had (one harmless VMWRITE; KVM writes all four every time).
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
    /// map.scan(&apic, table.map(|e| eoi_exit::exit_bitmap::ScanEntry::from_redirection(e, eoi_exit::MsiFormat::Xapic, false, false)));
    ///
    /// let u = map.take_vmcs_update().unwrap();
    /// assert_eq!(u.mask, 0b1010); // words 1 (0x40) and 3 (0xfe) changed
    /// assert_eq!(u.changed().collect::<Vec<_>>(), [(1, 1), (3, 1 << 62)]);
    /// assert_eq!(u.words, map.bitmap().as_u64_words());
    /// assert!(map.take_vmcs_update().is_none()); // the VMCS is current
    /// ```
    #[inline]
    #[must_use = "the VMCS words must be written before the next VM entry"]
    pub fn take_vmcs_update(&mut self) -> Option<VmcsUpdate> {
        if let Book::LineAware { x, .. } = &mut self.book {
            x.loaded();
        }
        let hdr = self.book.hdr_mut();
        let mask = core::mem::take(&mut hdr.dirty);
        if mask == 0 {
            return None;
        }
        Some(VmcsUpdate {
            mask,
            words: self.vmcs_words(),
        })
    }

    /// Marks the words where the bitmap now differs from `before`.
    #[inline]
    fn mark(&mut self, before: &VectorSet) {
        let now = self.bitmap();
        self.book.hdr_mut().dirty |= words_differing(before, &now);
    }

    /// An INIT reset cleared the LAPIC's IRR, ISR and TMR: no instance is in
    /// flight any more and no RTC EOI can come. The map starts over under its
    /// policy (the routes come back with the rescan that must follow); every
    /// VMCS word that held a bit is marked, so the next update rewrites it.
    pub(crate) fn forget_in_flight(&mut self) {
        let before = words_nonzero(&self.bitmap());
        let dirty = self.book.hdr().dirty;
        *self = EoiExitMap::new(self.policy());
        self.book.hdr_mut().dirty = dirty | before;
    }

    // ---- scanning -------------------------------------------------------

    /// Starts a rescan (KVM's `vcpu_scan_ioapic`: the bitmap and the highest
    /// stale vector are reset).
    ///
    /// The three-call scan cannot compare the bitmap before and after, so it
    /// reports every word that held a bit before or after it as changed;
    /// [`EoiExitMap::scan`] and [`Irqchip`](crate::Irqchip)'s rescans
    /// report only the words that changed.
    #[cfg(test)]
    pub(crate) fn begin_scan(&mut self) {
        let before = words_nonzero(&self.bitmap());
        self.book.hdr_mut().dirty |= before;
        self.clear_scan();
    }

    fn clear_scan(&mut self) {
        match &mut self.book {
            Book::Kvm { scan, .. } => *scan = KvmScan::default(),
            Book::Exact { x, .. } => x.set_routes(&exact::Legal::EMPTY),
            Book::LineAware { x, .. } => x.routed = exact::Legal::default(),
            Book::TmrDriven { .. } | Book::NoIntercept { .. } => {}
        }
    }

    /// Scans one redirection entry or route against this vCPU's LAPIC.
    ///
    /// KVM policies follow `kvm_scan_ioapic_irq`: a counted entry whose
    /// destination matches sets the bit; one that does not match but whose
    /// vector is pending (IRR or ISR) sets it too and becomes a stale
    /// candidate.
    #[inline]
    pub(crate) fn scan_entry(&mut self, apic: &LocalApic, entry: &ScanEntry) {
        if !entry.counts_for_kvm() {
            return;
        }
        let matched = apic.matches(entry.destination);
        match &mut self.book {
            Book::Kvm { scan, .. } => {
                if matched {
                    scan.routed.insert(entry.vector);
                } else if apic.pending_eoi(entry.vector) {
                    scan.stale.insert(entry.vector);
                }
            }
            Book::Exact { x, .. } => {
                if matched && !entry.masked {
                    x.route(entry.vector, true);
                }
            }
            Book::LineAware { x, .. } => {
                if matched && !entry.masked && (entry.ack_notifier || entry.rtc) {
                    x.routed.insert(entry.vector);
                }
            }
            Book::TmrDriven { .. } | Book::NoIntercept { .. } => {}
        }
    }

    /// A whole rescan from the scan's result as sets, for a caller that has
    /// already matched every counted entry (level, ack notifier, RTC) against
    /// this vCPU: `matched` holds the vectors of counted entries whose
    /// destination matches, `matched_unmasked` those of them that are
    /// unmasked, `unmatched` the vectors of counted entries that do not match.
    /// The same result as [`EoiExitMap::scan`] of every entry, with
    /// only the words that changed marked for the VMCS.
    #[inline(always)]
    pub(crate) fn rescan_sets(
        &mut self,
        apic: &LocalApic,
        matched: &VectorSet,
        matched_unmasked: &VectorSet,
        unmatched: &VectorSet,
    ) {
        if let Book::Exact { x, .. } = &self.book
            && apic.irr().is_empty()
            && apic.isr().is_empty()
        {
            // Nothing in flight, so nothing to adopt: only the routes can
            // change the bitmap, and only where no instance or RTC EOI
            // keeps a bit set. Most rescans change nothing, which a word
            // compare in registers tells (inlined into the caller, which
            // built the set in registers).
            if !x.routes_same_as(matched_unmasked) {
                self.reroute_exact(matched_unmasked);
            }
            return;
        }
        self.rescan_slow(apic, matched, matched_unmasked, unmatched);
    }

    /// `Exact` with nothing in flight: the routes changed.
    #[inline(never)]
    fn reroute_exact(&mut self, matched_unmasked: &VectorSet) {
        if let Book::Exact { hdr, x } = &mut self.book {
            let routed = exact::Legal::from_set(matched_unmasked);
            let mut keep = x.needed_in_flight();
            if let Some(v) = hdr.rtc_owed {
                keep.insert(v);
            }
            hdr.dirty |= words_nonzero(&routed.xor(&x.routed()).set_of().difference(&keep));
            x.set_routes(&routed);
        }
    }

    #[inline(never)]
    fn rescan_slow(
        &mut self,
        apic: &LocalApic,
        matched: &VectorSet,
        matched_unmasked: &VectorSet,
        unmatched: &VectorSet,
    ) {
        let before = self.bitmap();
        match &mut self.book {
            Book::Kvm { scan, .. } => {
                // kvm_scan_ioapic_irq: a matching entry sets its bit; one
                // that does not match sets it only while the vector is
                // pending here (IRR or ISR), as a stale candidate.
                scan.routed = *matched;
                scan.stale = unmatched.intersection(&apic.irr().union(apic.isr()));
            }
            Book::Exact { x, .. } => x.set_routes(&exact::Legal::from_set(matched_unmasked)),
            Book::LineAware { x, .. } => x.routed = exact::Legal::from_set(matched_unmasked),
            Book::TmrDriven { .. } | Book::NoIntercept { .. } => {}
        }
        self.finish_scan(apic);
        self.mark(&before);
    }

    /// One entry write changed whether a counted, unmasked entry with vector
    /// `v` targets this vCPU (`routed`): what a rescan would find, for that
    /// vector alone. `false` when the map needs a whole rescan instead:
    /// another policy than `Exact`, or an interrupt in flight (whose
    /// instances a rescan may adopt). With nothing in flight a rescan only
    /// compares the routes, vector by vector, so this is the same result
    /// without walking the table.
    #[inline(always)]
    pub(crate) fn reroute(&mut self, apic: &LocalApic, v: Vector, routed: bool) -> bool {
        let Book::Exact { hdr, x } = &mut self.book else {
            return false;
        };
        if !apic.idle() {
            return false;
        }
        if x.reroute(v, routed) && hdr.rtc_owed != Some(v) {
            hdr.dirty |= 1 << (v.get() >> 6);
        }
        true
    }

    /// `Exact`'s routes (tests compare them with a walk of the table).
    #[cfg(test)]
    pub(crate) fn exact_routes(&self) -> Option<VectorSet> {
        match &self.book {
            Book::Exact { x, .. } => Some(x.routed().set_of()),
            _ => None,
        }
    }

    /// Ends a rescan and recomputes the bitmap.
    #[cfg(test)]
    pub(crate) fn end_scan(&mut self, apic: &LocalApic) {
        self.finish_scan(apic);
        let after = words_nonzero(&self.bitmap());
        self.book.hdr_mut().dirty |= after;
    }

    fn finish_scan(&mut self, apic: &LocalApic) {
        let rtc = self.rtc_owed();
        match &mut self.book {
            Book::Kvm { bitmap, scan, .. } => {
                *bitmap = scan.routed.union(&scan.stale);
                if let Some(v) = rtc {
                    bitmap.insert(v);
                }
            }
            Book::TmrDriven {
                bitmap,
                adopted_level,
                ..
            } => {
                // A scan never clears a TmrDriven bit; it adopts level
                // instances the map did not see accepted (state planted or
                // restored).
                *adopted_level = apic.tmr().intersection(&apic.irr().union(apic.isr()));
                bitmap.union_with(adopted_level);
                if let Some(v) = rtc {
                    bitmap.insert(v);
                }
            }
            Book::Exact { x, .. } => {
                // Instances the map never saw accepted (state planted by the
                // host, restored without a map, imported from KVM) are
                // adopted as needing their EOI.
                for v in apic.irr().union(apic.isr()).iter() {
                    x.sync_instances(apic, v, 0);
                }
            }
            Book::LineAware { x, .. } => x.adopt(apic),
            Book::NoIntercept { .. } => {}
        }
    }

    /// Rescans this vCPU (KVM's `vcpu_scan_ioapic`) against `entries`: every
    /// redirection entry, or every split-irqchip GSI route below the
    /// reserved pin count ([`ScanEntry::from_msi_route`]). The stale set and
    /// the routes are recomputed from scratch; only the VMCS words that
    /// changed are marked for [`EoiExitMap::take_vmcs_update`].
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
    /// map.scan(&apic, (0..).zip(table).map(|(pin, e)| eoi_exit::exit_bitmap::ScanEntry::from_redirection(e, eoi_exit::MsiFormat::Xapic, pin == 3, false)));
    /// let bits: Vec<u8> = map.bitmap().iter().map(Vector::get).collect();
    /// assert_eq!(bits, [0x40, 0x43]); // not 0x41 (APIC ID 1), not 0x42 (plain edge)
    /// ```
    pub fn scan<I: IntoIterator<Item = ScanEntry>>(&mut self, apic: &LocalApic, entries: I) {
        let before = self.bitmap();
        self.clear_scan();
        for e in entries {
            self.scan_entry(apic, &e);
        }
        self.finish_scan(apic);
        self.mark(&before);
    }

    // ---- acceptance -------------------------------------------------------

    /// Reports an interrupt this vCPU's LAPIC accepted (call after
    /// `LocalApic::accept`, with the LAPIC in its new state).
    #[inline]
    pub fn on_accept(&mut self, apic: &LocalApic, a: Accepted) {
        let _ = self.accept(apic, a);
    }

    /// [`EoiExitMap::on_accept`], returning whether the bitmap or the owed
    /// RTC vector changed (only the accepted vector's bit can change, and
    /// the previous RTC vector's when the owed RTC EOI moves).
    #[inline(always)]
    pub(crate) fn accept(&mut self, apic: &LocalApic, a: Accepted) -> bool {
        let v = a.vector;
        if let Book::Exact { hdr, x } = &mut self.book
            && a.source != Source::Rtc
        {
            // `Exact` (the default), no RTC change: one slot computation for
            // the bit before, the queue update and the bit after.
            let rtc = hdr.rtc_owed == Some(v);
            let (was, now) = x.on_accept(apic, a);
            let changed = !rtc && was != now;
            if changed {
                hdr.dirty |= 1 << (v.get() >> 6);
            }
            return changed;
        }
        self.accept_general(apic, a)
    }

    /// [`EoiExitMap::accept`] under the other policies, or of the RTC's
    /// interrupt: out of line, so `Exact`'s common case inlines into the
    /// delivery path with a small frame.
    #[inline(never)]
    fn accept_general(&mut self, apic: &LocalApic, a: Accepted) -> bool {
        let v = a.vector;
        let was = self.intercepts(v);
        let old_rtc = self.rtc_owed();
        match &mut self.book {
            Book::TmrDriven { bitmap, .. } => {
                // Xen/ACRN key the bit on the trigger mode of the latest
                // acceptance. A KVM ack-notifier or RTC pin is treated like a
                // level source: its EOI is needed even though it is edge.
                bitmap.set(v, a.trigger.is_level() || a.source != Source::Plain);
            }
            Book::Exact { x, .. } => {
                let _ = x.on_accept(apic, a);
            }
            Book::LineAware { x, .. } => x.on_accept(apic, a),
            Book::NoIntercept { .. } => return false,
            Book::Kvm { .. } => {}
        }
        if a.source == Source::Rtc {
            // KVM records the owed EOI in the RTC dest_map; its scans read it.
            // `Exact` sets the bit at once so the owed EOI is never missed.
            self.book.hdr_mut().rtc_owed = Some(v);
        }
        self.mark_vector(v, was);
        if let (Book::Exact { .. } | Book::LineAware { .. }, Some(r)) = (&self.book, old_rtc)
            && r != v
            && a.source == Source::Rtc
        {
            // The previous owed vector may have lost its last reason.
            self.mark_vector(r, true);
        }
        self.intercepts(v) != was || self.rtc_owed() != old_rtc
    }

    /// Directed EOI stopped on this vCPU (SVR bit 12 cleared, or no longer
    /// advertised): level instances accepted while their EOIs were not
    /// broadcast now need them. `Exact` marks every outstanding instance as
    /// needed, as it adopts instances it never saw accepted: TMR cannot tell
    /// (an edge acceptance that coalesces into a level instance's IRR bit
    /// clears it), so an edge instance in flight at that moment costs one
    /// exit. The other policies track no instances.
    pub(crate) fn adopt_in_flight(&mut self, apic: &LocalApic) {
        let before = self.bitmap();
        match &mut self.book {
            Book::Exact { x, .. } => {
                for v in apic.irr().union(apic.isr()).iter() {
                    x.sync_instances(apic, v, 0);
                    x.need_all(v);
                }
            }
            Book::LineAware { x, .. } => {
                for v in apic.irr().union(apic.isr()).iter() {
                    x.make_eager(v);
                }
            }
            _ => {}
        }
        self.mark(&before);
    }

    /// Marks `v`'s word if its bit changed from `was`.
    #[inline]
    fn mark_vector(&mut self, v: Vector, was: bool) {
        if self.intercepts(v) != was {
            self.book.hdr_mut().dirty |= 1 << (v.get() >> 6);
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
    ///     // Level 0x40 in service here (restored, as KVM_SET_LAPIC would) ...
    ///     let mut s = apic.state();
    ///     s.isr.insert(v);
    ///     s.tmr.insert(v);
    ///     apic = LocalApic::from_state(&s).unwrap();
    ///     // ... while its entry now targets APIC ID 1.
    ///     let table = [RedirectionEntry::fixed(v, TriggerMode::Level, 1)];
    ///     let mut map = EoiExitMap::new(policy);
    ///     map.scan(&apic, table.map(|e| eoi_exit::exit_bitmap::ScanEntry::from_redirection(e, eoi_exit::MsiFormat::Xapic, false, false)));
    ///     assert!(map.intercepts(v), "{policy:?}: the in-service EOI is needed");
    ///
    ///     let eoi = apic.eoi().unwrap(); // the LAPIC retires it first
    ///     let exit = map.send_eoi(&apic, eoi.vector, eoi.level);
    ///     assert!(exit.intercepted); // forward it to the I/O APIC
    ///     assert_eq!(exit.rescan, policy == Policy::KvmHighestStale);
    ///     assert_eq!(map.intercepts(v), policy != Policy::Exact, "{policy:?}");
    ///     if exit.rescan {
    ///         map.scan(&apic, table.map(|e| eoi_exit::exit_bitmap::ScanEntry::from_redirection(e, eoi_exit::MsiFormat::Xapic, false, false)));
    ///         assert!(!map.intercepts(v));
    ///     }
    /// }
    /// ```
    #[inline(always)]
    pub fn send_eoi(&mut self, apic: &LocalApic, vector: Vector, level: bool) -> EoiExit {
        // `Exact` (the default) on its own: one slot computation for the
        // interception test, the queue update and the bit's new value.
        if let Book::Exact { hdr, x } = &mut self.book {
            let rtc = hdr.rtc_owed == Some(vector);
            let Some(still) = x.on_eoi(apic, vector, rtc) else {
                return EoiExit {
                    intercepted: false,
                    rescan: false,
                    missed_level: false,
                };
            };
            if rtc {
                hdr.rtc_owed = None;
            }
            if !still {
                hdr.dirty |= 1 << (vector.get() >> 6);
            }
            return EoiExit {
                intercepted: true,
                rescan: false,
                missed_level: false,
            };
        }
        if !self.intercepts(vector) {
            return EoiExit {
                intercepted: false,
                rescan: false,
                missed_level: level && matches!(self.book, Book::NoIntercept { .. }),
            };
        }
        let mut exit = EoiExit {
            intercepted: true,
            rescan: false,
            missed_level: false,
        };
        let hdr = self.book.hdr_mut();
        if hdr.rtc_owed == Some(vector) {
            hdr.rtc_owed = None;
        }
        match &mut self.book {
            Book::Kvm {
                highest_stale: true,
                scan,
                ..
            } => {
                exit.rescan = scan.stale.highest() == Some(vector);
            }
            Book::Exact { x, .. } => {
                // The EOI retired the oldest instance (the LAPIC already
                // popped it: one more existed before).
                x.sync_instances(apic, vector, 0);
                self.mark_vector(vector, true);
            }
            Book::LineAware { x, .. } => {
                x.sync(apic, vector, 0);
                self.mark_vector(vector, true);
            }
            // An RTC EOI owed only shows in the next scan's result, as in KVM.
            Book::Kvm { .. } | Book::TmrDriven { .. } | Book::NoIntercept { .. } => {}
        }
        exit
    }
}

impl EoiExitMap {
    /// `LineAware`: the chip's line state for the lazy instance of `v` on
    /// this vCPU. Marks the word when the bitmap changes. Other policies:
    /// nothing.
    #[inline]
    pub(crate) fn set_line(&mut self, v: Vector, line: Line) {
        let before = self.bitmap().contains(v);
        if let Book::LineAware { x, .. } = &mut self.book {
            x.set_line(v, line);
        }
        if self.bitmap().contains(v) != before {
            self.book.hdr_mut().dirty |= 1 << (v.get() >> 6);
        }
    }

    /// `LineAware`: another instance shares `v` with a lazy one here, so
    /// every EOI of `v` exits until none is outstanding.
    #[inline]
    pub(crate) fn make_eager(&mut self, v: Vector) {
        let before = self.bitmap().contains(v);
        if let Book::LineAware { x, .. } = &mut self.book {
            x.make_eager(v);
        }
        if self.bitmap().contains(v) != before {
            self.book.hdr_mut().dirty |= 1 << (v.get() >> 6);
        }
    }

    /// `LineAware`: the vectors of lazy instances whose line is asserted
    /// (loaded into the bitmap or raised while the vCPU ran).
    #[inline]
    pub(crate) fn line_held(&self) -> VectorSet {
        match &self.book {
            Book::LineAware { x, .. } => x.held(),
            _ => VectorSet::EMPTY,
        }
    }
}

#[cfg(test)]
mod tests;
