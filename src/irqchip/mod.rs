//! One I/O APIC plus any number of local APICs and EOI-exit maps, wired
//! together.
//!
//! [`Irqchip`] is what a VMM embeds when it wants the whole path: guest MMIO
//! to the I/O APIC, pin lines, MSIs, interrupt acknowledge and EOI on each
//! vCPU. It keeps KVM's request order on an intercepted EOI (forward the EOI
//! to the I/O APIC, then rescan, then load the bitmap) and rescans only the
//! vCPUs a redirection-entry write names.
//!
//! # Storage
//!
//! The VMM learns its vCPU count at run time and provides one [`VcpuSlot`]
//! per vCPU: an array, a `heapless::Vec`, a `Box<[VcpuSlot]>` or a borrowed
//! `&mut [VcpuSlot]` (anything that is `AsRef<[VcpuSlot]>` and
//! `AsMut<[VcpuSlot]>`), in the spirit of smoltcp's caller-owned storage.
//! Memory grows with the vCPUs present: one slot is a few hundred bytes, the
//! shared part (I/O APIC, routing caches) under 2 KiB.
//!
//! Up to [`MAX_VCPUS`] (4096, KVM's `KVM_MAX_VCPUS`) vCPUs, indexed
//! 0..=4095. APIC IDs are 32-bit x2APIC IDs, sparse or topology-encoded as
//! the VMM likes: nothing is sized by the largest ID or the largest VM. The
//! routing cache lives in the slots (eight bytes each):
//!
//! * each vCPU's slot says which pins' destinations match it, so a rescan
//!   is one bit test per pin and a pin with one destination vCPU delivers
//!   with one load;
//! * a physical destination below 256 is a table load (KVM's optimized
//!   map); one above 255 is a load when every vCPU's x2APIC ID is its index,
//!   else a binary search of a sorted-ID index spread over the slots
//!   (O(log n));
//! * an x2APIC logical destination names at most 16 IDs of its cluster,
//!   each looked up, so lowest-priority arbitration among them never scans
//!   the VM;
//! * broadcasts (0xFF, 0xFFFF_FFFF), xAPIC logical IDs, shared IDs, and
//!   clusters that alias above 2^20 walk every vCPU, as KVM's slow path
//!   does. Duplicate IDs are legal: every vCPU with the ID matches, as in
//!   KVM once its map is disabled.
//!
//! How far a message reaches: an x2APIC ID above 255 is matched exactly by
//! physical and logical x2APIC destinations (MSIs under
//! [`MsiFormat::X2apicApi`], IPIs); an I/O APIC entry addresses 8 bits of
//! destination, 15 under [`MsiFormat::ExtDestId`]
//! ([`IoapicConfig::msi_format`](crate::IoapicConfig::msi_format)).
//!
//! # Threads
//!
//! Every method takes `&self`. The shared part (the I/O APIC and the routing
//! caches) sits behind one `spin::Mutex`, each vCPU behind its own. Lock
//! order: the shared lock first, then vCPUs one at a time. No method holds a
//! lock when it returns and none calls back into caller code, so no sequence
//! of calls can deadlock. Only [`Irqchip::ack`], [`Irqchip::vmcs_update`] and
//! [`Irqchip::take_events`] (unless it takes an INIT) take a vCPU lock alone.
//!
//! # Caller duties
//!
//! * Before a vCPU enters the guest, call [`Irqchip::vmcs_update`] and write
//!   the returned words to its VMCS, and [`Irqchip::take_events`] and act on
//!   the non-vectored events it returns ([`VcpuEvents`]: INIT reset, SIPI
//!   start, NMI, SMI, ExtINT). A vCPU in wait-for-SIPI does not run; call
//!   `take_events` again when it is kicked.
//! * After each input, act on the [`Effects`]: a redirection write rescans
//!   its old and new destinations *before* it delivers anything, so a
//!   multi-threaded VMM MUST kick the vCPUs in [`Effects::reload`] out of
//!   guest mode and let them load their VMCS update before it injects (posts)
//!   the interrupts accepted by the vCPUs in [`Effects::kick`].
//!
//! # Panics
//!
//! A [`VcpuId`] at or beyond [`Irqchip::vcpus`] is a bug in the VMM, like an
//! out-of-bounds slice index: the methods that take one panic (and say so).
//! Guest-controlled inputs (MMIO offsets, sizes and values, pins, EOIs at any
//! time) never panic.

use core::cell::Cell;

use spin::Mutex;

mod config;
mod effects;
mod events;
mod state;

pub use config::{Arbitration, EoiForwarding, IrqchipConfig};
pub use effects::{Delivery, DeliveryLog, Effects, GuestEoi};
pub(crate) use events::PackedEvents;
pub use events::VcpuEvents;
pub use state::{IrqchipState, VcpuState};

use crate::Ioapic;
use crate::exit_bitmap::{Accepted, EoiExitMap, Line, Policy, Source, VmcsUpdate};
use crate::ioapic::{IoapicEffects, REG_REDTBL_BASE, RedirectionEntry, Rescan};
use crate::lapic::{Acceptance, ApicMode, Ipi, LocalApic, Shorthand, X2APIC_BROADCAST};
use crate::routes::{Msi, MsiFormat};
use crate::types::{
    ApicId, DeliveryMode, Destination, DestinationMode, InterruptMessage, Pin, Polarity, RTC_GSI,
    VcpuId,
};
use crate::vector::{Vector, VectorSet};

/// Counters a VMM or the simulator can read per vCPU.
///
/// 32-bit and wrapping, like hardware event counters: read them often
/// enough and take differences (`wrapping_sub`). Sixteen bytes per vCPU
/// instead of thirty-two keep a 256-vCPU chip under 72 KiB.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct VcpuStats {
    /// Rescans of this vCPU.
    pub rescans: u32,
    /// Entries scanned in those rescans.
    pub entries_scanned: u32,
    /// VMCS `EOI_EXIT_BITMAPn` words written.
    pub vmcs_words: u32,
    /// Intercepted EOIs (VM exits).
    pub eoi_exits: u32,
}

impl VcpuStats {
    const ZERO: VcpuStats = VcpuStats {
        rescans: 0,
        entries_scanned: 0,
        vmcs_words: 0,
        eoi_exits: 0,
    };
}

/// A copy of one vCPU's interrupt state, as [`Irqchip::vcpu`] returns it.
///
/// It is a copy: changing it changes nothing in the chip. Host-side changes
/// go through [`Irqchip::write_lapic`] and [`Irqchip::load_vcpu`], which keep
/// the bitmaps consistent.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Vcpu {
    /// The chip's routing cache for this slot.
    pub(crate) route: Route,
    /// Counters.
    pub stats: VcpuStats,
    /// Its local APIC.
    pub apic: LocalApic,
    /// Its EOI-exit map.
    pub map: EoiExitMap,
}

impl Vcpu {
    const EMPTY: Vcpu = Vcpu {
        apic: LocalApic::new(ApicId::new(0)),
        map: EoiExitMap::new(Policy::Exact),
        stats: VcpuStats::ZERO,
        route: Route::EMPTY,
    };
}

/// The routing cache an [`Irqchip`] keeps in each vCPU slot, so that it
/// grows with the vCPUs present (eight bytes, in the room a 120-byte
/// `LocalApic` leaves in the slot).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub(crate) struct Route {
    /// Bit `p`: entry `p`'s destination matches this vCPU's LAPIC. A rescan
    /// reads these bits instead of matching destinations; a pin delivers to
    /// the vCPUs that have its bit.
    pins: u32,
    /// The physical-ID index, spread over the slots: slot `i` names the
    /// vCPU with the `i`-th smallest x2APIC ID (ties by index), so a lookup
    /// of an ID above 255 is a binary search, with no table indexed by a
    /// 32-bit ID.
    by_id: u16,
}

impl Route {
    const EMPTY: Route = Route { pins: 0, by_id: 0 };
}

/// Storage for one vCPU of an [`Irqchip`], provided by the VMM.
///
/// Opaque: a slot holds nothing the VMM can read or change except through the
/// chip that owns it. A fresh slot is blank; [`Irqchip::new`] initializes it.
///
/// ```
/// use eoi_exit::VcpuSlot;
///
/// let on_the_stack = [const { VcpuSlot::new() }; 4];
/// let on_the_heap: Box<[VcpuSlot]> = (0..64).map(|_| VcpuSlot::new()).collect();
/// # let _ = (on_the_stack, on_the_heap);
/// ```
pub struct VcpuSlot(pub(crate) Mutex<Vcpu>);

impl VcpuSlot {
    /// A blank slot.
    pub const fn new() -> Self {
        VcpuSlot(Mutex::new(Vcpu::EMPTY))
    }
}

impl Default for VcpuSlot {
    fn default() -> Self {
        VcpuSlot::new()
    }
}

/// A copy of the slot (taken under its lock).
impl Clone for VcpuSlot {
    fn clone(&self) -> Self {
        VcpuSlot(Mutex::new(*self.0.lock()))
    }
}

impl core::fmt::Debug for VcpuSlot {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("VcpuSlot")
    }
}

pub use crate::vcpu_set::{MAX_VCPUS, VcpuSet};

/// A trapped guest write to one local APIC, or a host-side change, applied
/// by [`Irqchip::write_lapic`].
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum LapicWrite {
    /// A guest write of the xAPIC register at `offset` (an APIC-write exit;
    /// x2APIC MSR `0x800 + offset / 16`), as [`LocalApic::write_register`]
    /// applies it: 0x20 ID, 0x80 TPR, 0xD0 LDR, 0xE0 DFR, 0xF0 SVR.
    Register {
        /// Offset from the APIC base.
        offset: u32,
        /// The value written.
        value: u32,
    },
    /// An `IA32_APIC_BASE` mode switch ([`LocalApic::set_mode`]).
    Mode(ApicMode),
    /// A host-side identity change ([`LocalApic::set_id`]).
    SetId(ApicId),
    /// Whether the version register advertises directed EOI (bit 24).
    DirectedEoi(bool),
    /// A guest write of the x2APIC ICR (MSR 0x830): one 64-bit write, the
    /// destination in bits 63:32, that sends the IPI. In xAPIC mode the ICR
    /// is two registers: `Register` at 0x310 (ICR2, the destination), then
    /// at 0x300 (which sends). The x2APIC SELF IPI MSR (0x83F) is `Register`
    /// at 0x3F0.
    Icr(u64),
}

/// The TPR's offset: a write there changes no routing.
const TPR: u32 = 0x80;
/// The ESR's offset.
const ESR: u32 = 0x280;
/// The ICR's offset (bits 31:0; the x2APIC MSR 0x830).
const ICR: u32 = 0x300;
/// ICR2's offset (xAPIC: the destination).
const ICR2: u32 = 0x310;
/// The x2APIC SELF IPI MSR (0x83F) as an offset.
const SELF_IPI: u32 = 0x3F0;

/// Vector-index entry: no redirection entry holds that vector.
const PIN_NONE: u8 = u8::MAX;
/// Vector-index entry: several do (or the pin number does not fit); the EOI
/// compares every entry.
const PIN_MANY: u8 = u8::MAX - 1;

/// `LineAware` pin owner: the pin has no lazy level instance.
const OWNER_NONE: u16 = u16::MAX;
/// `LineAware` pin owner: the lazy instance's vCPU retired it by an EOI that
/// did not exit (seen when another instance of the vector arrived there).
const OWNER_RETIRED: u16 = u16::MAX - 1;

/// The parts of a vectored message a LAPIC reads when it accepts it (its
/// destination was matched by the sender).
#[derive(Clone, Copy, Debug)]
struct Vectored {
    mode: DeliveryMode,
    vector: Vector,
    trigger: crate::TriggerMode,
}

impl Vectored {
    #[inline(always)]
    fn of(msg: &InterruptMessage) -> Vectored {
        Vectored {
            mode: msg.delivery_mode,
            vector: msg.vector,
            trigger: msg.trigger,
        }
    }
}

/// Physical-ID cache entry: no vCPU has that ID.
const PHYS_NONE: u16 = u16::MAX;
/// Physical-ID cache entry: several vCPUs match (shared ID, broadcast).
const PHYS_MANY: u16 = u16::MAX - 1;

/// How the chip finds the vCPUs of a destination above 255 or a logical one,
/// as KVM's `kvm_recalculate_apic_map` decides whether its map can be used.
#[derive(Clone, Copy, Debug, Default)]
struct IdLookup {
    /// vCPU `i` has x2APIC ID `i`, for every `i`: an ID is its own index.
    identity: bool,
    /// Every vCPU is in x2APIC mode with an ID below 2^20, so a logical
    /// destination (cluster in bits 31:16, members in 15:0) names at most 16
    /// x2APIC IDs, each one lookup. Otherwise (xAPIC logical IDs, or
    /// clusters that alias above 2^20) a logical destination walks every
    /// vCPU, as KVM's slow path does.
    x2_clusters: bool,
}

/// Who an interrupt goes to, resolved as far as the routing caches allow.
#[derive(Clone, Copy, Debug)]
enum Targets {
    /// Nobody.
    None,
    /// One vCPU (by index).
    One(usize),
    /// Pin `p`'s destination: the vCPUs whose route has bit `p`.
    Pin(usize),
    /// The vCPUs whose LAPIC matches, with KVM's x2APIC broadcast quirk
    /// on or off.
    Dest(Destination, bool),
    /// Every vCPU but `except`.
    All { except: Option<usize> },
}

/// What every vCPU shares, behind one lock.
#[derive(Clone)]
pub(crate) struct Shared<const PINS: usize> {
    pub(crate) ioapic: Ioapic<PINS>,
    /// Per pin: the one vCPU its entry's destination matches, or
    /// [`PHYS_NONE`] / [`PHYS_MANY`] (then the vCPUs whose [`Route::pins`]
    /// hold the pin). Kept current with those bits on every entry write and
    /// LAPIC addressing change, so a pin's delivery to one vCPU is a load.
    dest_one: [u16; PINS],
    /// Physical destinations 0..=255 -> the one matching vCPU, or
    /// [`PHYS_NONE`] / [`PHYS_MANY`] (KVM's optimized APIC map, with its
    /// slow path for conflicts), for MSIs.
    phys: [u16; 256],
    /// How IDs above 255 are looked up (see [`Route::by_id`]).
    ids: IdLookup,
    /// Pins a scan counts even when edge: the ack-notifier pins, and the RTC
    /// pin under `rtc_tracking` (KVM's `kvm_ioapic_scan_entry`).
    counted_edge: crate::PinSet,
    /// The same, one bit per pin (`PINS` <= 32).
    counted_edge_bits: u32,
    /// Bit `p`: entry `p` is level-triggered. Kept with the table (every
    /// entry write and load), so the rescan of a policy that reads only the
    /// unmasked routes visits only the pins that count for its vCPU.
    level_bits: u32,
    /// Bit `p`: entry `p` is unmasked.
    unmasked_bits: u32,
    /// Vector -> the one pin whose entry holds it, or [`PIN_NONE`] /
    /// [`PIN_MANY`]. Kept current on every entry write, so a forwarded EOI
    /// touches its entry instead of comparing all of them (KVM compares all
    /// 24; with one entry per vector, which is how guests program the I/O
    /// APIC, the result is the same).
    pin_of: [u8; 256],
    /// `LineAware`: per pin, the vCPU whose LAPIC holds the pin's *lazy*
    /// level instance (its EOI does not exit; remote IRR is cleared when the
    /// chip finds it retired), [`OWNER_RETIRED`], or [`OWNER_NONE`]. The
    /// instance may be of an earlier remote-IRR cycle than the current one
    /// (whose instances are then eager): its EOI, a broadcast of the vector,
    /// ends whichever cycle is current when it happens. While an owner is
    /// set, no other entry holds the pin's vector and the owner holds no
    /// other instance of it. Two bytes per pin; a `Cell` because deliveries
    /// hold the shared lock by shared reference.
    owner: [Cell<u16>; PINS],
}

/// The physical destinations below 256 that `apic` can match: its own ID
/// (the xAPIC ID, or the x2APIC ID) and the broadcast 0xFF, once each
/// ([`LocalApic::matches`] matches no other physical ID). Building the
/// physical-ID table from these costs two tests per vCPU, not 256.
fn phys_candidates(apic: &LocalApic) -> impl Iterator<Item = u32> {
    let own = apic.id().get();
    core::iter::once(own).chain((own != 0xFF).then_some(0xFF))
}

/// One I/O APIC and a run-time number of vCPUs in caller storage `S`. See
/// the module docs.
///
/// # Examples
///
/// Snapshot and restore ([`Irqchip::state`], [`Irqchip::from_state`]): the
/// state is plain data, so a copy taken mid-interrupt carries on exactly.
///
/// ```
/// use eoi_exit::irqchip::{Effects, IrqchipState, VcpuState};
/// use eoi_exit::{
///     ApicMode, Irqchip, IrqchipConfig, Pin, RedirectionEntry, TriggerMode, VcpuId, VcpuSlot,
///     Vector,
/// };
///
/// let vcpus = 2; // known at run time
/// let storage: Vec<VcpuSlot> = (0..vcpus).map(|_| VcpuSlot::new()).collect();
/// let chip: Irqchip<_> = Irqchip::new(IrqchipConfig::default(), ApicMode::XApic, storage);
/// let mut fx = Effects::new();
/// let (pin, v, vcpu1) = (Pin::new(3), Vector::new(0x40), VcpuId::new(1));
/// chip.write_entry(pin, RedirectionEntry::fixed(v, TriggerMode::Level, 1).0, &mut fx);
/// let _ = chip.vmcs_update(vcpu1);
/// chip.set_line(pin, true, &mut fx); // delivered to vCPU 1, remote IRR set
///
/// let snap: IrqchipState<Vec<VcpuState>> = chip.state();
/// let copy: Irqchip<_> =
///     Irqchip::from_state(&snap, [const { VcpuSlot::new() }; 2]).expect("a valid snapshot");
/// assert_eq!(copy.state::<Vec<_>>(), snap);
/// assert!(copy.ioapic().entry(pin).unwrap().remote_irr());
///
/// // A fresh VMCS on the destination gets the whole bitmap: `vmcs_update`
/// // reports only changes since the last load, which the snapshot says
/// // already happened.
/// let words = copy.vcpu(vcpu1).unwrap().map.bitmap().as_u64_words();
/// assert_eq!(words, [0, 1, 0, 0]); // vector 0x40
/// assert!(copy.vmcs_update(vcpu1).is_none());
///
/// // The interrupt completes on the copy.
/// assert_eq!(copy.ack(vcpu1), Some(v));
/// copy.set_line(pin, false, &mut fx);
/// assert!(copy.guest_eoi(vcpu1, &mut fx).reached_ioapic);
/// assert!(!copy.ioapic().entry(pin).unwrap().remote_irr());
/// ```
pub struct Irqchip<S, const PINS: usize = 24> {
    config: IrqchipConfig,
    /// `config.notified_mask()`, kept beside the config it derives from (set
    /// wherever the config is): the EOI and delivery paths test it without
    /// building the 256-bit union each time.
    notified: u32,
    pub(crate) shared: Mutex<Shared<PINS>>,
    pub(crate) vcpus: S,
}

impl<S, const PINS: usize> core::fmt::Debug for Irqchip<S, PINS> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Irqchip")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// A consistent copy: the shared lock is held while each vCPU is copied, so
/// no input is half-seen (only [`Irqchip::ack`] and [`Irqchip::vmcs_update`]
/// can interleave, and each is atomic on its vCPU).
impl<S: AsRef<[VcpuSlot]> + Clone, const PINS: usize> Clone for Irqchip<S, PINS> {
    fn clone(&self) -> Self {
        let sh = self.shared.lock();
        Irqchip {
            config: self.config,
            notified: self.notified,
            shared: Mutex::new(sh.clone()),
            vcpus: self.vcpus.clone(),
        }
    }
}

impl<S, const PINS: usize> Irqchip<S, PINS>
where
    S: AsRef<[VcpuSlot]> + AsMut<[VcpuSlot]>,
{
    /// The routing cache holds one bit per pin in a `u32` (KVM's I/O APIC
    /// has 24 pins).
    const PINS_FIT: () = assert!(PINS <= 32, "an Irqchip has at most 32 I/O APIC pins");

    /// One vCPU per slot of `storage`: vCPU `i` gets APIC ID `i`,
    /// software-enabled, in `mode` (the state the guest's firmware leaves).
    ///
    /// # Panics
    ///
    /// If `storage` holds no slot or more than [`MAX_VCPUS`] (4096).
    pub fn new(config: IrqchipConfig, mode: ApicMode, storage: S) -> Self {
        Self::with_apics(config, storage, |i| {
            LocalApic::new_enabled(ApicId::new(u32::from(i.get())), mode)
        })
    }

    /// With explicit local APICs (IDs, modes, LDRs set by the caller):
    /// `apic(i)` is vCPU `i`'s.
    ///
    /// # Panics
    ///
    /// If `storage` holds no slot or more than 256.
    pub fn with_apics(
        config: IrqchipConfig,
        mut storage: S,
        mut apic: impl FnMut(VcpuId) -> LocalApic,
    ) -> Self {
        let () = Self::PINS_FIT;
        let n = storage.as_ref().len();
        assert!(
            (1..=MAX_VCPUS).contains(&n),
            "an Irqchip has 1..={MAX_VCPUS} vCPUs, got {n}"
        );
        for (i, slot) in storage.as_mut().iter_mut().enumerate() {
            // A fresh vCPU: nothing pending, whatever chip the LAPIC was
            // copied from.
            let mut apic = apic(VcpuId::new(i as u16));
            apic.events = PackedEvents::NONE;
            *slot.0.get_mut() = Vcpu {
                apic,
                map: EoiExitMap::new(config.policy),
                stats: VcpuStats::ZERO,
                route: Route::EMPTY,
            };
        }
        let chip = Irqchip {
            config,
            notified: config.notified_mask(),
            shared: Mutex::new(Shared {
                ioapic: Ioapic::new(config.ioapic),
                dest_one: [PHYS_NONE; PINS],
                phys: [PHYS_NONE; 256],
                ids: IdLookup::default(),
                counted_edge: counted_edge(&config),
                counted_edge_bits: counted_edge(&config).as_u64_words()[0] as u32,
                level_bits: 0,
                unmasked_bits: 0,
                pin_of: [PIN_NONE; 256],
                owner: [const { Cell::new(OWNER_NONE) }; PINS],
            }),
            vcpus: storage,
        };
        {
            let mut sh = chip.shared.lock();
            chip.rebuild_routing(&mut sh);
            for i in 0..n {
                chip.rescan_locked(&sh, i, &mut chip.slot(i).lock());
            }
        }
        chip
    }
}

impl<S: AsRef<[VcpuSlot]>, const PINS: usize> Irqchip<S, PINS> {
    /// The configuration.
    pub fn config(&self) -> &IrqchipConfig {
        &self.config
    }

    /// Number of vCPUs.
    pub fn vcpus(&self) -> usize {
        self.vcpus.as_ref().len()
    }

    /// A copy of the I/O APIC, for inspection.
    pub fn ioapic(&self) -> Ioapic<PINS> {
        self.shared.lock().ioapic.clone()
    }

    /// A copy of one vCPU's state, for inspection; `None` for a vCPU out of
    /// range.
    pub fn vcpu(&self, vcpu: VcpuId) -> Option<Vcpu> {
        self.vcpus.as_ref().get(vcpu.index()).map(|s| *s.0.lock())
    }

    // ---- guest MMIO and host inputs ------------------------------------

    /// A guest read of the I/O APIC window.
    ///
    /// Under [`Policy::LineAware`] a read of a redirection entry whose lazy
    /// level instance has retired clears its remote IRR first, as the EOI
    /// would have (see [`Irqchip::set_line`]), so the guest reads what it
    /// would have read had that EOI exited.
    pub fn mmio_read(&self, offset: u64, size: u32) -> u64 {
        let mut sh = self.shared.lock();
        if self.line_aware()
            && let Some(i) = selected_pin::<PINS>(&sh)
        {
            self.settle_quiet(&mut sh, i);
        }
        sh.ioapic.mmio_read(offset, size)
    }

    /// A guest write to the I/O APIC window.
    #[inline]
    pub fn mmio_write<L: DeliveryLog>(
        &self,
        offset: u64,
        size: u32,
        value: u64,
        fx: &mut Effects<L>,
    ) {
        let reg = offset % crate::ioapic::MMIO_LEN;
        if reg == crate::ioapic::IOREGSEL && matches!(size, 1 | 2 | 4 | 8) {
            // Half of every guest access, and nothing to report: every
            // access size keeps the low byte (`Ioapic::mmio_write`). Inline
            // in the caller, without the frame of the other registers' path.
            self.shared.lock().ioapic.select(value as u8);
            return;
        }
        self.mmio_write_other(offset, reg, size, value, fx);
    }

    /// [`Irqchip::mmio_write`] of a register other than IOREGSEL (or of
    /// IOREGSEL with a size the I/O APIC ignores).
    #[inline(never)]
    fn mmio_write_other<L: DeliveryLog>(
        &self,
        offset: u64,
        reg: u64,
        size: u32,
        value: u64,
        fx: &mut Effects<L>,
    ) {
        let mut sh = self.shared.lock();
        // Only an IOWIN write can change an entry; the EOI register needs no
        // entry bookkeeping.
        let pin = if reg == crate::ioapic::IOWIN {
            selected_pin::<PINS>(&sh)
        } else {
            None
        };
        if let Some(i) = pin
            && !self.line_aware()
            && !self.config.policy.is_kvm()
            && let Some(data) = crate::ioapic::access_data(size, value)
            && let Some((_, new)) = sh.ioapic.iowin_entry(data)
        {
            let old = sh.ioapic.entries()[i];
            if new == old && !(new.is_level() && sh.ioapic.asserted(Pin::new(i as u8))) {
                // The entry keeps its bits (the half of a 64-bit update the
                // guest writes unchanged) and its pin is not to be serviced:
                // the write changes nothing but is still a route write.
                fx.route_changed.insert(Pin::new(i as u8));
            } else {
                // The entry is decoded once: stored as computed, as the
                // I/O APIC's own IOWIN write would store it.
                let a = sh.ioapic.store_entry(i, new);
                self.apply(&mut sh, a, Some((i, old)), fx);
            }
            // KVM's policies model KVM's rescan on every write and
            // `LineAware` settles on it: both take the general path below.
            return;
        }
        if self.line_aware()
            && let Some(i) = pin
        {
            // Event (c): a write of the entry. (Selecting one is not.)
            self.settle(&mut sh, i, fx);
        }
        let selected = pin.map(|i| (i, sh.ioapic.entries()[i]));
        let a = sh.ioapic.mmio_write(offset, size, value);
        if let Some((i, old)) = selected
            && self.line_aware()
        {
            self.lazy_rewrite(&mut sh, i, old, fx);
        }
        // Most writes (IOREGSEL, a read-only register) change nothing.
        if !a.is_empty() {
            self.apply(&mut sh, a, selected, fx);
        }
        if let Some((i, old)) = selected
            && self.line_aware()
        {
            self.lazy_shared(&mut sh, i, old, fx);
        }
    }

    /// A host-side write of a whole redirection entry.
    ///
    /// It behaves like a guest writing both halves: the entry's old and new
    /// destinations are rescanned (and listed in [`Effects::reload`]) before
    /// anything is delivered, and [`Effects::route_changed`] names the pin.
    /// A write that changes none of the fields a scan reads (vector, trigger
    /// mode, mask, destination and its mode) rescans no one, except under the
    /// two KVM policies, which model KVM's rescan on every write.
    ///
    /// # Examples
    ///
    /// Retargeting a level entry from APIC ID 2 to APIC ID 3 rescans exactly
    /// those two vCPUs: the bit moves with the route.
    ///
    /// ```
    /// use eoi_exit::irqchip::Effects;
    /// use eoi_exit::{
    ///     ApicMode, Irqchip, IrqchipConfig, Pin, RedirectionEntry, TriggerMode, VcpuId, VcpuSlot,
    ///     Vector,
    /// };
    ///
    /// let chip: Irqchip<_> =
    ///     Irqchip::new(IrqchipConfig::default(), ApicMode::XApic, [const { VcpuSlot::new() }; 4]);
    /// let (pin, v) = (Pin::new(9), Vector::new(0x51));
    /// let entry = |apic_id| RedirectionEntry::fixed(v, TriggerMode::Level, apic_id).0;
    ///
    /// // The reset entry (masked) points at APIC ID 0: vCPU 0 is rescanned too.
    /// let mut fx = Effects::new();
    /// chip.write_entry(pin, entry(2), &mut fx);
    /// assert_eq!(fx.reload.iter().map(VcpuId::get).collect::<Vec<_>>(), [0, 2]);
    ///
    /// let mut fx = Effects::new();
    /// chip.write_entry(pin, entry(3), &mut fx);
    /// assert_eq!(fx.reload.iter().map(VcpuId::get).collect::<Vec<_>>(), [2, 3]);
    /// assert!(fx.route_changed.contains(pin));
    /// assert!(fx.kick.is_empty()); // the line is low
    /// assert!(!chip.vcpu(VcpuId::new(2)).unwrap().map.intercepts(v));
    /// assert!(chip.vcpu(VcpuId::new(3)).unwrap().map.intercepts(v));
    ///
    /// // Writing the same entry again changes nothing a scan reads.
    /// let mut fx = Effects::new();
    /// chip.write_entry(pin, entry(3), &mut fx);
    /// assert!(fx.reload.is_empty());
    /// ```
    pub fn write_entry<L: DeliveryLog>(&self, pin: Pin, value: u64, fx: &mut Effects<L>) {
        let mut sh = self.shared.lock();
        if self.line_aware() && pin.index() < PINS {
            self.settle(&mut sh, pin.index(), fx);
        }
        let old = sh.ioapic.entry(pin).map(|e| (pin.index(), e));
        let a = sh.ioapic.write_entry(pin, value);
        if let Some((i, old)) = old
            && self.line_aware()
        {
            self.lazy_rewrite(&mut sh, i, old, fx);
        }
        self.apply(&mut sh, a, old, fx);
        if let Some((i, old)) = old
            && self.line_aware()
        {
            self.lazy_shared(&mut sh, i, old, fx);
        }
    }

    /// Sets a pin's electrical level.
    ///
    /// # `LineAware`
    ///
    /// Under [`Policy::LineAware`] a level instance delivered to a single
    /// vCPU, from a pin whose vector no other entry holds, with no other
    /// instance of that vector outstanding there and no ack notifier, is
    /// *lazy*: its EOI exits only while its line is asserted, as this method
    /// last saw it before the vCPU's VM entry. A deassert drops the bit (the
    /// vCPU loads it at its next [`Irqchip::vmcs_update`]; no kick needed).
    /// An EOI that does not exit leaves remote IRR set; the chip clears it,
    /// as the EOI would have, when the VMM next sees something that could
    /// observe it and finds the instance retired (its vector neither in IRR
    /// nor in ISR of the vCPU that accepted it): the line asserting again
    /// (here, which then delivers), an IOWIN read or a write of the entry,
    /// [`Irqchip::state`], and the re-check below.
    ///
    /// The race: the line asserts again while the instance is still in
    /// flight and the vCPU runs with the bit clear. The bit is raised and
    /// the vCPU is put in [`Effects::exit`]: the VMM MUST make it leave
    /// guest mode (an IPI; it need not wait), and before it re-enters call
    /// [`Irqchip::take_events`], which re-checks: if the guest retired the
    /// instance in the window (its EOI completed in hardware), remote IRR is
    /// cleared and the line delivered again (effects in its `fx`); otherwise
    /// the bit stays, and the [`Irqchip::vmcs_update`] that follows loads it.
    ///
    /// ```
    /// use eoi_exit::irqchip::Effects;
    /// use eoi_exit::{
    ///     ApicMode, Irqchip, IrqchipConfig, Pin, Policy, RedirectionEntry, TriggerMode, VcpuId,
    ///     VcpuSlot, Vector,
    /// };
    ///
    /// let config = IrqchipConfig { policy: Policy::LineAware, ..IrqchipConfig::default() };
    /// let chip: Irqchip<_> = Irqchip::new(config, ApicMode::XApic, [VcpuSlot::new()]);
    /// let (pin, v, vcpu) = (Pin::new(10), Vector::new(0x50), VcpuId::new(0));
    /// let mut fx = Effects::new();
    /// chip.write_entry(pin, RedirectionEntry::fixed(v, TriggerMode::Level, 0).0, &mut fx);
    ///
    /// // INTx: delivered with the line asserted, so the bit is set ...
    /// chip.set_line(pin, true, &mut fx);
    /// assert!(chip.vcpu(vcpu).unwrap().map.intercepts(v));
    /// assert_eq!(chip.ack(vcpu), Some(v));
    /// // ... the handler reads the device's status (a VM exit): the line drops.
    /// chip.set_line(pin, false, &mut fx);
    /// let _ = chip.vmcs_update(vcpu); // the VM entry loads the bit clear
    /// let eoi = chip.guest_eoi(vcpu, &mut fx);
    /// assert!(eoi.level && !eoi.intercepted); // no EOI exit
    /// assert!(chip.ioapic().entry(pin).unwrap().remote_irr()); // not yet cleared
    ///
    /// // The device asserts again: remote IRR is cleared lazily, then delivered.
    /// fx.clear();
    /// chip.set_line(pin, true, &mut fx);
    /// assert!(fx.kick.contains(vcpu));
    /// assert_eq!(chip.ack(vcpu), Some(v));
    /// ```
    pub fn set_line<L: DeliveryLog>(&self, pin: Pin, level: bool, fx: &mut Effects<L>) {
        let mut sh = self.shared.lock();
        if !level && self.line_aware() && pin.index() < PINS {
            // The line drops: settle a lazy instance retired while it was
            // asserted (the race window) before it does.
            self.lazy_drop(&mut sh, pin.index(), fx);
        }
        if sh.ioapic.drive_line(pin, level) {
            self.deliver_pin(&sh, pin, fx);
        } else if self.line_aware() && pin.index() < PINS {
            self.lazy_line(&mut sh, pin.index(), fx);
        }
    }

    /// The delay after an EOI-storm throttle has elapsed for `pin`.
    pub fn deliver_later_elapsed<L: DeliveryLog>(&self, pin: Pin, fx: &mut Effects<L>) {
        let mut sh = self.shared.lock();
        let a = sh.ioapic.deliver_later_elapsed(pin);
        self.apply(&mut sh, a, None, fx);
    }

    /// Delivers an MSI the guest (a device) wrote, its destination decoded
    /// with [`IoapicConfig::msi_format`](crate::IoapicConfig::msi_format):
    /// address bits 11:5 count only under [`MsiFormat::ExtDestId`] and
    /// `address_hi` only under [`MsiFormat::X2apicApi`] (KVM's
    /// `KVM_SIGNAL_MSI` with the x2APIC API). A message that format refuses
    /// or with a reserved delivery mode delivers nothing ([`Msi::message`]
    /// is `None`; KVM returns `EINVAL` or drops it). Edge MSIs are the
    /// common case; their EOIs matter to nobody, so they are tagged
    /// [`Source::Plain`].
    ///
    /// # Examples
    ///
    /// ```
    /// use eoi_exit::irqchip::Effects;
    /// use eoi_exit::{
    ///     ApicMode, DeliveryMode, Destination, DestinationMode, InterruptMessage, Irqchip,
    ///     IrqchipConfig, Msi, MsiFormat, TriggerMode, VcpuId, VcpuSlot, Vector,
    /// };
    ///
    /// let chip: Irqchip<_> =
    ///     Irqchip::new(IrqchipConfig::default(), ApicMode::XApic, [const { VcpuSlot::new() }; 2]);
    /// let msg = InterruptMessage {
    ///     destination: Destination { id: 1, mode: DestinationMode::Physical },
    ///     delivery_mode: DeliveryMode::Fixed,
    ///     vector: Vector::new(0x61),
    ///     trigger: TriggerMode::Edge,
    /// };
    /// // A device's MSI write arrives as address/data.
    /// let msi = Msi::from_message(&msg, MsiFormat::Xapic).unwrap();
    /// let mut fx = Effects::new();
    /// chip.send_msi(&msi, &mut fx);
    /// assert_eq!(fx.kick.iter().collect::<Vec<_>>(), [VcpuId::new(1)]);
    /// // An edge MSI's EOI is nobody's business: nothing to intercept.
    /// assert!(chip.vmcs_update(VcpuId::new(1)).is_none());
    /// ```
    pub fn send_msi<L: DeliveryLog>(&self, msi: &Msi, fx: &mut Effects<L>) {
        let Some(msg) = msi.message(self.config.ioapic.msi_format) else {
            return;
        };
        let source = if msg.trigger.is_level() {
            Source::NeedsEoi
        } else {
            Source::Plain
        };
        let mut sh = self.shared.lock();
        if self.line_aware() && msg.delivery_mode.uses_vector() {
            self.lazy_message(&mut sh, msg.vector, fx);
        }
        let targets = self.resolve(&sh, msg.destination, self.broadcast_quirk());
        self.deliver(&sh, &msg, None, source, targets, fx);
    }

    /// Applies a write to one vCPU's LAPIC registers (a trapped guest write
    /// or a host-side change).
    ///
    /// A change of addressing (ID, LDR, DFR, SVR, mode, version) rebuilds the
    /// routing caches and, like KVM's APIC map recalculation, rescans every
    /// vCPU (all listed in [`Effects::reload`]). A TPR write, and a write to a
    /// register the model does not hold, rescans no one.
    ///
    /// # Panics
    ///
    /// If `vcpu` is out of range.
    pub fn write_lapic<L: DeliveryLog>(
        &self,
        vcpu: VcpuId,
        write: LapicWrite,
        fx: &mut Effects<L>,
    ) {
        let mut sh = self.shared.lock();
        let (ipi, now_directed) = {
            let mut v = self.slot(vcpu.index()).lock();
            let was_directed = v.apic.suppresses_eoi_broadcast();
            let apic = &mut v.apic;
            let x2apic = apic.mode() == ApicMode::X2Apic;
            let ipi = match write {
                // A WRMSR of the x2APIC ICR with EDX = 0, or the xAPIC ICR.
                LapicWrite::Register { offset: ICR, value } => {
                    apic.write_icr(u64::from(value), x2apic)
                }
                LapicWrite::Register {
                    offset: ICR2,
                    value,
                } => {
                    apic.write_icr2(value);
                    None
                }
                LapicWrite::Register {
                    offset: SELF_IPI,
                    value,
                } => apic.write_self_ipi(value),
                LapicWrite::Icr(value) => apic.write_icr(value, true),
                LapicWrite::Register { offset, value } => {
                    // Nothing else this model holds is writable; the TPR and
                    // the ESR change no routing.
                    if !apic.write_register(offset, value) || offset == TPR || offset == ESR {
                        return;
                    }
                    None
                }
                LapicWrite::Mode(m) => {
                    apic.set_mode(m);
                    None
                }
                LapicWrite::SetId(id) => {
                    apic.set_id(id);
                    None
                }
                LapicWrite::DirectedEoi(on) => {
                    apic.set_directed_eoi_supported(on);
                    None
                }
            };
            if was_directed
                && !v.apic.suppresses_eoi_broadcast()
                && self.config.eoi_forwarding.honours_suppression()
            {
                // Broadcasts resume: level instances accepted while they
                // were suppressed now need their EOI forwarded.
                let Vcpu { apic, map, .. } = &mut *v;
                map.adopt_in_flight(apic);
            }
            (
                ipi.map(|i| (i, x2apic)),
                !was_directed && v.apic.suppresses_eoi_broadcast(),
            )
        };
        if now_directed && self.line_aware() && self.config.eoi_forwarding.honours_suppression() {
            self.lazy_suppressed(&mut sh, vcpu, fx);
        }
        match (write, ipi) {
            (_, Some((ipi, x2apic))) => {
                if self.line_aware() && ipi.message.delivery_mode.uses_vector() {
                    self.lazy_message(&mut sh, ipi.message.vector, fx);
                }
                self.send_ipi(&sh, vcpu, x2apic, ipi, fx)
            }
            (
                LapicWrite::Icr(_)
                | LapicWrite::Register {
                    offset: ICR | ICR2 | SELF_IPI,
                    ..
                },
                None,
            ) => {}
            _ => {
                self.rebuild_routing(&mut sh);
                self.rescan_all(&sh, fx);
            }
        }
    }

    /// Delivers an IPI `from` sends, to its shorthand's vCPUs or to those
    /// its destination matches, as [`Irqchip::send_msi`] delivers a message
    /// (lowest priority arbitrated among them).
    ///
    /// KVM's x2APIC broadcast quirk never applies to an IPI from an
    /// x2APIC-mode LAPIC (`kvm_apic_mda`): its 0xFF is APIC ID 255.
    fn send_ipi<L: DeliveryLog>(
        &self,
        sh: &Shared<PINS>,
        from: VcpuId,
        from_x2apic: bool,
        ipi: Ipi,
        fx: &mut Effects<L>,
    ) {
        let quirk = self.broadcast_quirk() && !from_x2apic;
        let targets = match ipi.shorthand {
            Shorthand::None => self.resolve(sh, ipi.message.destination, quirk),
            Shorthand::SelfOnly => Targets::One(from.index()),
            Shorthand::AllIncludingSelf => Targets::All { except: None },
            Shorthand::AllExcludingSelf => Targets::All {
                except: Some(from.index()),
            },
        };
        let source = if ipi.message.trigger.is_level() {
            Source::NeedsEoi
        } else {
            Source::Plain
        };
        self.deliver(sh, &ipi.message, None, source, targets, fx);
    }

    // ---- the guest on one vCPU ----------------------------------------

    /// The guest takes an interrupt (INTA): highest deliverable IRR vector to
    /// ISR. `None` when nothing is deliverable.
    ///
    /// # Panics
    ///
    /// If `vcpu` is out of range.
    pub fn ack(&self, vcpu: VcpuId) -> Option<Vector> {
        self.slot(vcpu.index()).lock().apic.ack()
    }

    /// The guest writes EOI on `vcpu`.
    ///
    /// The LAPIC retires its highest in-service vector; if the vCPU's bitmap
    /// has it, the EOI exits, is forwarded to the I/O APIC, and the vCPU is
    /// rescanned when its policy asks, in KVM's order (forward, then rescan).
    /// What the forwarded EOI causes (re-delivery of a line still asserted,
    /// an EOI-storm throttle) is added to `fx`.
    ///
    /// This models the guest's EOI write itself, intercepted or not, and
    /// [`GuestEoi::intercepted`] says whether the hardware would have exited.
    /// Under APIC virtualization only the intercepted ones reach a VMM, as
    /// EOI-induced VM exits (see [APIC
    /// virtualization](crate#apic-virtualization-what-a-vmm-sees)).
    ///
    /// # Panics
    ///
    /// If `vcpu` is out of range.
    ///
    /// # Examples
    ///
    /// An edge interrupt's EOI completes in hardware; a level one exits and
    /// clears remote IRR.
    ///
    /// ```
    /// use eoi_exit::irqchip::Effects;
    /// use eoi_exit::{
    ///     ApicMode, Irqchip, IrqchipConfig, Pin, RedirectionEntry, TriggerMode, VcpuId, VcpuSlot,
    ///     Vector,
    /// };
    ///
    /// let chip: Irqchip<_> = Irqchip::new(IrqchipConfig::default(), ApicMode::XApic, [VcpuSlot::new()]);
    /// let vcpu = VcpuId::new(0);
    /// let mut fx = Effects::new();
    /// let (edge, level) = (Pin::new(1), Pin::new(2));
    /// let entry = |v, trigger| RedirectionEntry::fixed(Vector::new(v), trigger, 0).0;
    /// chip.write_entry(edge, entry(0x31, TriggerMode::Edge), &mut fx);
    /// chip.write_entry(level, entry(0x32, TriggerMode::Level), &mut fx);
    ///
    /// chip.set_line(edge, true, &mut fx);
    /// assert_eq!(chip.ack(vcpu), Some(Vector::new(0x31)));
    /// let eoi = chip.guest_eoi(vcpu, &mut fx);
    /// assert!(!eoi.level && !eoi.intercepted && !eoi.reached_ioapic);
    ///
    /// chip.set_line(level, true, &mut fx);
    /// assert_eq!(chip.ack(vcpu), Some(Vector::new(0x32)));
    /// chip.set_line(level, false, &mut fx);
    /// let eoi = chip.guest_eoi(vcpu, &mut fx);
    /// assert!(eoi.level && eoi.intercepted && eoi.reached_ioapic);
    /// assert!(!chip.ioapic().entry(level).unwrap().remote_irr());
    ///
    /// // ISR is empty now: a spurious EOI retires nothing.
    /// assert_eq!(chip.guest_eoi(vcpu, &mut fx).vector, None);
    /// ```
    pub fn guest_eoi<L: DeliveryLog>(&self, vcpu: VcpuId, fx: &mut Effects<L>) -> GuestEoi {
        let i = vcpu.index();
        let slot = self.slot(i);
        let mut sh = self.shared.lock();
        let (eoi, exit, suppressed, load) = {
            let mut v = slot.lock();
            let Some(eoi) = v.apic.eoi() else {
                return GuestEoi::default();
            };
            let Vcpu {
                apic, map, stats, ..
            } = &mut *v;
            let exit = map.send_eoi(apic, eoi.vector, eoi.level);
            if exit.intercepted {
                stats.eoi_exits = stats.eoi_exits.wrapping_add(1);
            }
            (eoi, exit, apic.suppresses_eoi_broadcast(), map.needs_load())
        };
        let forward = exit.intercepted
            && match self.config.eoi_forwarding {
                EoiForwarding::TmrLevel => eoi.broadcast,
                EoiForwarding::AllIntercepted => true,
                // KVM_X2APIC_ENABLE_SUPPRESS_EOI_BROADCAST: SVR bit 12 stops
                // every EOI, edge or level, before the userspace exit.
                EoiForwarding::AllInterceptedUnlessSuppressed => !suppressed,
            };
        let mut out = GuestEoi {
            vector: Some(eoi.vector),
            level: eoi.level,
            intercepted: exit.intercepted,
            reached_ioapic: forward,
            rescanned: exit.rescan,
            // A level EOI the guest directs at the I/O APIC itself is not
            // missed by not reaching it.
            missed_level: exit.missed_level
                && !(suppressed && self.config.eoi_forwarding.honours_suppression()),
            acked_pins: crate::PinSet::EMPTY,
        };
        if !exit.intercepted {
            return out;
        }
        if self.notified != 0 {
            out.acked_pins = self.notify_ack(&mut sh, eoi.vector, fx);
        }
        if self.line_aware() {
            self.lazy_eoi(&mut sh, vcpu, eoi.vector, forward, fx);
        }
        if forward {
            let a = match sh.pin_of[usize::from(eoi.vector.get())] {
                PIN_NONE => None,
                PIN_MANY => Some(sh.ioapic.eoi(eoi.vector)),
                p => sh.ioapic.eoi_pin(usize::from(p), eoi.vector),
            };
            if let Some(a) = a
                && !a.is_empty()
            {
                self.apply(&mut sh, a, None, fx);
            }
        }
        // KVM's `vcpu_enter_guest` order: KVM_REQ_IOAPIC_EOI_EXIT (forward)
        // before KVM_REQ_SCAN_IOAPIC (rescan), then the bitmap load.
        if exit.rescan {
            self.rescan_locked(&sh, i, &mut slot.lock());
            fx.reload.insert(vcpu);
        } else if load {
            // Only when there is something to load: most intercepted EOIs
            // (a routed level vector's) leave the bitmap as it was.
            fx.reload.insert(vcpu);
        }
        out
    }

    /// What the VMM must write to `vcpu`'s VMCS before the next entry.
    ///
    /// `None` when the VMCS already holds the bitmap. Otherwise only the
    /// `EOI_EXIT_BITMAPn` words listed by [`VmcsUpdate::changed`] need a
    /// VMWRITE; the update counts as loaded once returned.
    ///
    /// # Panics
    ///
    /// If `vcpu` is out of range.
    ///
    /// # Examples
    ///
    /// ```
    /// use eoi_exit::irqchip::Effects;
    /// use eoi_exit::{
    ///     ApicMode, Irqchip, IrqchipConfig, Pin, RedirectionEntry, TriggerMode, VcpuId, VcpuSlot,
    ///     Vector,
    /// };
    ///
    /// let chip: Irqchip<_> = Irqchip::new(IrqchipConfig::default(), ApicMode::XApic, [VcpuSlot::new()]);
    /// let vcpu = VcpuId::new(0);
    /// assert!(chip.vmcs_update(vcpu).is_none()); // nothing routed yet
    ///
    /// let mut fx = Effects::new();
    /// let e = RedirectionEntry::fixed(Vector::new(0xe0), TriggerMode::Level, 0);
    /// chip.write_entry(Pin::new(0), e.0, &mut fx);
    /// let u = chip.vmcs_update(vcpu).unwrap();
    /// // 0xe0 = 224 = word 3, bit 32; words 0..=2 need no VMWRITE.
    /// assert_eq!(u.changed().collect::<Vec<_>>(), [(3, 1 << 32)]);
    /// assert!(chip.vmcs_update(vcpu).is_none()); // loaded
    ///
    /// // Masking the entry drops the bit under `Policy::Exact`.
    /// chip.write_entry(Pin::new(0), e.0 | RedirectionEntry::MASK, &mut fx);
    /// assert_eq!(chip.vmcs_update(vcpu).unwrap().words, [0; 4]);
    /// ```
    #[must_use = "the VMCS words must be written before the vCPU next enters the guest"]
    pub fn vmcs_update(&self, vcpu: VcpuId) -> Option<VmcsUpdate> {
        let mut v = self.slot(vcpu.index()).lock();
        let u = v.map.take_vmcs_update();
        if let Some(u) = &u {
            v.stats.vmcs_words = v.stats.vmcs_words.wrapping_add(u.mask.count_ones());
        }
        u
    }

    /// The non-vectored events `vcpu` takes at this VM entry (KVM's
    /// `kvm_apic_accept_events`, `process_nmi` and `process_smi` before
    /// `inject_pending_event`). Call it before each entry of a vCPU in
    /// [`Effects::kick`], and whenever a vCPU in wait-for-SIPI is kicked; act
    /// on every field of the result (see [`VcpuEvents`]).
    ///
    /// * `init_blocked`: the vCPU is in SMM or in VMX non-root operation
    ///   (KVM's `kvm_apic_init_sipi_allowed` is false): an INIT stays
    ///   latched and a latched SIPI is dropped.
    /// * `nmi_blocked`: an NMI is in service (blocking by NMI, until its
    ///   IRET) or was injected and not yet delivered (KVM's
    ///   `get_nmi_mask() || nmi_injected`): at most one NMI stays pending and
    ///   none is injected. Other reasons not to inject now (an interrupt
    ///   shadow) are the VMM's: it holds the NMI it was handed.
    ///
    /// Taking an INIT resets the LAPIC ([`VcpuEvents::init`]), which changes
    /// its addressing: every vCPU is rescanned and listed in
    /// [`Effects::reload`], as for an LDR write.
    ///
    /// # Panics
    ///
    /// If `vcpu` is out of range.
    ///
    /// # Examples
    ///
    /// KVM's NMI limit: three NMIs leave two pending; the first is injected,
    /// and while it is in service one more waits.
    ///
    /// ```
    /// use eoi_exit::irqchip::{Effects, LapicWrite};
    /// use eoi_exit::{ApicMode, Irqchip, IrqchipConfig, VcpuId, VcpuSlot};
    ///
    /// let chip: Irqchip<_> =
    ///     Irqchip::new(IrqchipConfig::default(), ApicMode::X2Apic, [const { VcpuSlot::new() }; 2]);
    /// let (v0, v1) = (VcpuId::new(0), VcpuId::new(1));
    /// let mut fx = Effects::new();
    /// for _ in 0..3 {
    ///     chip.write_lapic(v0, LapicWrite::Icr(1 << 32 | 4 << 8), &mut fx); // NMI to APIC 1
    /// }
    /// let taken = chip.take_events(v1, false, false, &mut fx);
    /// assert_eq!(taken.nmi, 2); // inject one now, open an NMI window for the other
    /// // Entries while the first NMI is in service inject nothing.
    /// assert_eq!(chip.take_events(v1, false, true, &mut fx).nmi, 1);
    /// // After its IRET, the second one.
    /// assert_eq!(chip.take_events(v1, false, false, &mut fx).nmi, 1);
    /// assert_eq!(chip.take_events(v1, false, false, &mut fx).nmi, 0);
    /// ```
    #[must_use = "a taken event is gone from the chip: the VMM must act on it"]
    pub fn take_events<L: DeliveryLog>(
        &self,
        vcpu: VcpuId,
        init_blocked: bool,
        nmi_blocked: bool,
        fx: &mut Effects<L>,
    ) -> VcpuEvents {
        let i = vcpu.index();
        let slot = self.slot(i);
        if self.line_aware() && !slot.lock().map.line_held().is_empty() {
            self.recheck(vcpu, fx);
        }
        {
            let mut v = slot.lock();
            let mut e = v.apic.events.get();
            if e.is_idle() {
                return VcpuEvents {
                    wait_for_sipi: e.wait_for_sipi,
                    ..VcpuEvents::NONE
                };
            }
            if !e.init || init_blocked {
                let out = take_events_locked(&mut e, i == 0, init_blocked, nmi_blocked);
                v.apic.events = PackedEvents::pack(e);
                return out;
            }
        }
        // An INIT to take. Its reset changes the LAPIC's addressing, so the
        // routing caches and every bitmap follow: the shared lock first.
        let mut sh = self.shared.lock();
        if self.line_aware() {
            // The reset wipes IRR and ISR: a lazy instance still in flight
            // will never be EOI'd (its pin stays wedged, as in the
            // reference); one already retired had its EOI first.
            for q in 0..PINS {
                if sh.owner[q].get() == vcpu.get() {
                    if self.lazy_retired(&sh, q) {
                        self.settle(&mut sh, q, fx);
                    } else {
                        sh.owner[q].set(OWNER_NONE);
                    }
                }
            }
        }
        let out = {
            let mut v = slot.lock();
            let mut e = v.apic.events.get();
            if e.init {
                v.apic.init_reset();
                v.map.forget_in_flight();
            }
            let out = take_events_locked(&mut e, i == 0, init_blocked, nmi_blocked);
            v.apic.events = PackedEvents::pack(e);
            out
        };
        if out.init {
            self.rebuild_routing(&mut sh);
            self.rescan_all(&sh, fx);
        }
        out
    }

    /// Rescans one vCPU now (KVM's `KVM_REQ_SCAN_IOAPIC`); its bitmap may
    /// change, so it is added to [`Effects::reload`].
    ///
    /// # Panics
    ///
    /// If `vcpu` is out of range.
    pub fn rescan<L: DeliveryLog>(&self, vcpu: VcpuId, fx: &mut Effects<L>) {
        let slot = self.slot(vcpu.index());
        let sh = self.shared.lock();
        self.rescan_locked(&sh, vcpu.index(), &mut slot.lock());
        fx.reload.insert(vcpu);
    }

    // ---- internals ------------------------------------------------------

    /// The ack notifiers of an intercepted EOI of `vector` (KVM's order in
    /// `kvm_ioapic_update_eoi_one`): they run before remote IRR is cleared
    /// and the pin re-serviced, and a resampler deasserts its line there, so
    /// a quiesced device's line is not re-delivered. Returns the pins
    /// notified. Out of line: most VMs have no notifier, and the EOI path
    /// stays small without it.
    #[cold]
    #[inline(never)]
    fn notify_ack<L: DeliveryLog>(
        &self,
        sh: &mut Shared<PINS>,
        vector: Vector,
        fx: &mut Effects<L>,
    ) -> crate::PinSet {
        let mut acked = crate::PinSet::EMPTY;
        for p in self.config.notified_pins().iter() {
            if sh.ioapic.entry(p).is_some_and(|e| e.vector() == vector) {
                acked.insert(p);
            }
        }
        for p in acked.intersection(&self.config.resample_pins).iter() {
            if let Some(e) = sh.ioapic.entry(p) {
                let a = sh.ioapic.set_line(p, e.polarity() == Polarity::ActiveLow);
                if !a.is_empty() {
                    self.apply(sh, a, None, fx);
                }
            }
        }
        acked
    }

    /// Whether pin `p` has an ack notifier (a resampler included).
    #[inline(always)]
    fn is_notified(&self, p: Pin) -> bool {
        (self.notified >> (p.get() & 31)) & 1 != 0 && p.index() < 32
    }

    #[inline]
    #[track_caller]
    fn slot(&self, i: usize) -> &Mutex<Vcpu> {
        match self.vcpus.as_ref().get(i) {
            Some(s) => &s.0,
            None => panic!("vCPU {i} out of range: this Irqchip has {}", self.vcpus()),
        }
    }

    /// Rescans vCPU `i` against the table, with its lock held (`v`). A bit
    /// test per pin: the destinations were matched when they last changed.
    fn rescan_locked(&self, sh: &Shared<PINS>, i: usize, v: &mut Vcpu) {
        let Vcpu {
            apic,
            map,
            stats,
            route,
        } = v;
        stats.rescans = stats.rescans.wrapping_add(1);
        stats.entries_scanned = stats.entries_scanned.wrapping_add(PINS as u32);
        // One bit test of the pin's cached destination set per counted
        // entry. The sets are built in registers (a memory read-modify-write
        // per entry would chain on store forwarding).
        let _ = i;
        let pins = route.pins;
        let kvm = self.config.policy.is_kvm();
        // Directed EOI in effect: a plain level entry's EOI never reaches
        // the I/O APIC from here (the guest writes the EOI register), so
        // `Exact` does not count its route; ack-notifier and RTC pins still
        // count. KVM's scans do not read SVR bit 12.
        let directed = self.directed(apic);
        // `LineAware` counts only the routes whose every EOI is needed (ack
        // notifier, resampler, RTC); a level instance's bit follows its line.
        let level_counts = !directed && !self.line_aware();
        let counted = |pin: usize, e: &RedirectionEntry| {
            (e.is_level() && level_counts) || sh.counted_edge.contains(Pin::new(pin as u8))
        };
        let mut matched = Words::default();
        let mut unmasked = Words::default();
        let mut unmatched = Words::default();
        let table = sh.ioapic.entries().iter().enumerate();
        let routed = |pin: usize| pins >> pin & 1 != 0;
        if kvm {
            for (pin, e) in table {
                if !counted(pin, e) {
                    continue;
                }
                let v = e.vector();
                if routed(pin) {
                    if !e.masked() {
                        unmasked.insert(v);
                    }
                    matched.insert(v);
                } else {
                    unmatched.insert(v);
                }
            }
        } else {
            // The other policies read only the unmasked matches: the pins
            // that count, route here and are unmasked, from three masks.
            debug_assert!(sh.ioapic.entries().iter().enumerate().all(|(p, e)| {
                (sh.level_bits >> p & 1 != 0) == e.is_level()
                    && (sh.unmasked_bits >> p & 1 != 0) != e.masked()
            }));
            let level = if level_counts { sh.level_bits } else { 0 };
            let mut live = pins & sh.unmasked_bits & (level | sh.counted_edge_bits);
            let entries = sh.ioapic.entries();
            while live != 0 {
                let pin = live.trailing_zeros() as usize;
                live &= live - 1;
                if let Some(e) = entries.get(pin) {
                    unmasked.insert(e.vector());
                }
            }
        }
        let [matched, unmasked, unmatched] = [matched, unmasked, unmatched].map(Words::set);
        map.rescan_sets(apic, &matched, &unmasked, &unmatched);
    }

    pub(crate) fn rescan_all<L>(&self, sh: &Shared<PINS>, fx: &mut Effects<L>) {
        for i in 0..self.vcpus() {
            self.rescan_locked(sh, i, &mut self.slot(i).lock());
            fx.reload.insert(VcpuId::new(i as u16));
        }
    }

    /// Whether any vCPU still owes an RTC EOI (KVM's `rtc_status.pending_eoi`).
    fn rtc_eoi_owed(&self) -> bool {
        self.vcpus
            .as_ref()
            .iter()
            .any(|v| v.0.lock().map.rtc_owed().is_some())
    }

    /// Rebuilds the routing caches from the LAPICs as they are now: the
    /// physical-ID table, each vCPU's pin bits, each pin's single vCPU, the
    /// sorted-ID index and the lookup mode (KVM's `kvm_recalculate_apic_map`:
    /// one pass over the vCPUs, plus a sort when the x2APIC IDs are not the
    /// indices).
    fn rebuild_routing(&self, sh: &mut Shared<PINS>) {
        sh.phys = [PHYS_NONE; 256];
        sh.dest_one = [PHYS_NONE; PINS];
        let entries = *sh.ioapic.entries();
        let format = self.config.ioapic.msi_format;
        let quirk = self.broadcast_quirk();
        for i in 0..PINS {
            Self::note_entry(sh, i);
        }
        sh.pin_of = [PIN_NONE; 256];
        for (pin, e) in entries.iter().enumerate() {
            let slot = &mut sh.pin_of[usize::from(e.vector().get())];
            *slot = match u8::try_from(pin) {
                Ok(p) if *slot == PIN_NONE && p < PIN_MANY => p,
                _ => PIN_MANY,
            };
        }
        let mut identity = true;
        let mut x2_clusters = true;
        for (i, slot) in self.vcpus.as_ref().iter().enumerate() {
            let mut v = slot.0.lock();
            let apic = v.apic;
            for id in phys_candidates(&apic) {
                let d = Destination {
                    id,
                    mode: DestinationMode::Physical,
                };
                if id < 256 && apic.matches_with(d, quirk) {
                    let e = &mut sh.phys[id as usize];
                    *e = if *e == PHYS_NONE { i as u16 } else { PHYS_MANY };
                }
            }
            let mut pins = 0;
            for (pin, e) in entries.iter().enumerate() {
                if apic.matches_with(e.destination(format), quirk) {
                    pins |= 1 << pin;
                    let one = &mut sh.dest_one[pin];
                    *one = if *one == PHYS_NONE {
                        i as u16
                    } else {
                        PHYS_MANY
                    };
                }
            }
            v.route = Route {
                pins,
                by_id: i as u16,
            };
            let id = apic.x2apic_id();
            identity &= id as usize == i;
            x2_clusters &= apic.mode() == ApicMode::X2Apic && id < 1 << 20;
        }
        sh.ids = IdLookup {
            identity,
            x2_clusters,
        };
        if !identity {
            self.sort_by_id();
        }
    }

    /// The sort key of sorted-index position `pos`: the x2APIC ID of the
    /// vCPU it names, then that vCPU's index.
    fn id_key(&self, pos: usize) -> (u32, usize) {
        let j = usize::from(self.slot(pos).lock().route.by_id);
        (self.slot(j).lock().apic.x2apic_id(), j)
    }

    /// Sorts the index spread over the slots' `by_id` (a heapsort in place:
    /// no allocation, O(n log n) whatever the IDs).
    fn sort_by_id(&self) {
        let n = self.vcpus();
        let swap = |a: usize, b: usize| {
            let x = self.slot(a).lock().route.by_id;
            let y = core::mem::replace(&mut self.slot(b).lock().route.by_id, x);
            self.slot(a).lock().route.by_id = y;
        };
        let sift = |mut root: usize, end: usize| loop {
            let mut child = 2 * root + 1;
            if child >= end {
                break;
            }
            if child + 1 < end && self.id_key(child) < self.id_key(child + 1) {
                child += 1;
            }
            if self.id_key(root) >= self.id_key(child) {
                break;
            }
            swap(root, child);
            root = child;
        };
        for root in (0..n / 2).rev() {
            sift(root, n);
        }
        for end in (1..n).rev() {
            swap(0, end);
            sift(0, end);
        }
    }

    /// Calls `f` with each vCPU whose x2APIC ID is `id`, in index order.
    fn by_x2apic_id(&self, sh: &Shared<PINS>, id: u32, mut f: impl FnMut(usize)) {
        let n = self.vcpus();
        if sh.ids.identity {
            if (id as usize) < n {
                f(id as usize);
            }
            return;
        }
        let (mut lo, mut hi) = (0, n);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if self.id_key(mid).0 < id {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        while lo < n {
            let (key, j) = self.id_key(lo);
            if key != id {
                break;
            }
            f(j);
            lo += 1;
        }
    }

    /// Calls `f` with each vCPU whose LAPIC matches `dest`: a table load for
    /// a physical destination below 256 with one owner, a binary search (or
    /// a load) for a physical one above, up to 16 of those for an x2APIC
    /// cluster, and a walk over every vCPU otherwise (broadcasts, xAPIC
    /// logical IDs, conflicts), as KVM's slow path walks them. Every
    /// candidate is checked with [`LocalApic::matches`], so the caches only
    /// ever narrow the search.
    fn for_each_match(
        &self,
        sh: &Shared<PINS>,
        dest: Destination,
        quirk: bool,
        mut f: impl FnMut(usize),
    ) {
        let mut check = |i: usize| {
            if self.slot(i).lock().apic.matches_with(dest, quirk) {
                f(i);
            }
        };
        // The physical-ID table holds 0xFF as the chip's quirk reads it.
        let table = dest.id != 0xFF || quirk == self.broadcast_quirk();
        match dest.mode {
            DestinationMode::Physical if dest.id < 256 && table => {
                match sh.phys[dest.id as usize] {
                    PHYS_NONE => {}
                    PHYS_MANY => (0..self.vcpus()).for_each(check),
                    i => f(usize::from(i)),
                }
            }
            DestinationMode::Physical if dest.id != X2APIC_BROADCAST => {
                self.by_x2apic_id(sh, dest.id, check);
            }
            DestinationMode::Logical
                if sh.ids.x2_clusters && dest.id != X2APIC_BROADCAST && dest.id != 0xFF =>
            {
                let cluster = dest.id >> 16;
                let mut members = dest.id & 0xFFFF;
                while members != 0 {
                    let bit = members.trailing_zeros();
                    members &= members - 1;
                    self.by_x2apic_id(sh, cluster << 4 | bit, &mut check);
                }
            }
            _ => (0..self.vcpus()).for_each(check),
        }
    }

    /// Whether KVM's x2APIC broadcast quirk applies to the chip's I/O APIC
    /// and MSI messages: off under [`MsiFormat::X2apicApi`], which models
    /// `KVM_CAP_X2APIC_API` as VMMs enable it (QEMU's `kvm_enable_x2apic`
    /// sets `USE_32BIT_IDS | DISABLE_BROADCAST_QUIRK` together), so a
    /// physical or logical 0xFF is then APIC ID 255 / cluster 0 for an
    /// x2APIC-mode LAPIC; on otherwise (KVM's default).
    #[inline]
    fn broadcast_quirk(&self) -> bool {
        self.config.ioapic.msi_format != MsiFormat::X2apicApi
    }

    /// The vCPUs `dest` names, for a message sent now.
    fn resolve(&self, sh: &Shared<PINS>, dest: Destination, quirk: bool) -> Targets {
        if dest.mode == DestinationMode::Physical
            && dest.id < 256
            && (dest.id != 0xFF || quirk == self.broadcast_quirk())
        {
            match sh.phys[dest.id as usize] {
                PHYS_NONE => return Targets::None,
                PHYS_MANY => {}
                i => return Targets::One(usize::from(i)),
            }
        }
        Targets::Dest(dest, quirk)
    }

    /// Calls `f` with each of `t`'s vCPUs, in index order where the cache
    /// allows it (see [`Irqchip::for_each_match`]).
    fn each_target(&self, sh: &Shared<PINS>, t: Targets, mut f: impl FnMut(usize)) {
        match t {
            Targets::None => {}
            Targets::One(i) => f(i),
            Targets::Pin(p) => {
                for i in 0..self.vcpus() {
                    let hit = self.slot(i).lock().route.pins >> p & 1 != 0;
                    if hit {
                        f(i);
                    }
                }
            }
            Targets::Dest(d, quirk) => self.for_each_match(sh, d, quirk, f),
            Targets::All { except } => (0..self.vcpus()).filter(|&i| Some(i) != except).for_each(f),
        }
    }

    /// The vCPUs of pin `p`'s destination.
    #[inline]
    fn pin_targets(sh: &Shared<PINS>, p: usize) -> Targets {
        match sh.dest_one[p] {
            PHYS_NONE => Targets::None,
            PHYS_MANY => Targets::Pin(p),
            i => Targets::One(usize::from(i)),
        }
    }

    /// Brings entry `i`'s trigger and mask bits up to date.
    #[inline]
    fn note_entry(sh: &mut Shared<PINS>, i: usize) {
        let e = sh.ioapic.entries()[i];
        let bit = 1u32 << i;
        sh.level_bits = sh.level_bits & !bit | if e.is_level() { bit } else { 0 };
        sh.unmasked_bits = sh.unmasked_bits & !bit | if e.masked() { 0 } else { bit };
    }

    /// Recomputes the vector index for `v` from the table.
    fn index_vector(sh: &mut Shared<PINS>, v: Vector) {
        let mut found = PIN_NONE;
        for (pin, e) in sh.ioapic.entries().iter().enumerate() {
            if e.vector() == v {
                found = match u8::try_from(pin) {
                    Ok(p) if found == PIN_NONE && p < PIN_MANY => p,
                    _ => PIN_MANY,
                };
            }
        }
        sh.pin_of[usize::from(v.get())] = found;
    }

    /// Applies I/O APIC actions: routing caches and rescans first (so a newly
    /// routed or unmasked entry is in the bitmap before it can deliver), then
    /// deliveries. `written` is the entry a redirection write may have
    /// changed, as it was before the write.
    #[inline(always)]
    pub(crate) fn apply<L: DeliveryLog>(
        &self,
        sh: &mut Shared<PINS>,
        a: IoapicEffects,
        written: Option<(usize, RedirectionEntry)>,
        fx: &mut Effects<L>,
    ) {
        if let Some((i, _)) = written {
            Self::note_entry(sh, i);
        }
        // Touch the caller's sink only for what happened: its words were
        // likely just cleared, and re-reading them costs a store-forwarding
        // stall on every call.
        if !a.deliver_later.is_empty() {
            fx.deliver_later.union_with(&a.deliver_later);
        }
        if let Some(p) = a.route_changed {
            fx.route_changed.insert(p);
        }
        match (a.rescan, a.route_changed, written) {
            (Rescan::None, ..) => {}
            // The entry was rewritten with the bits it had (the half of a
            // 64-bit update that the guest writes unchanged): no route, no
            // index and no bit can change. KVM's policies model KVM's rescan
            // on every write, so they go on.
            (_, Some(p), Some((i, old)))
                if p.index() == i
                    && sh.ioapic.entries()[i] == old
                    && !self.config.policy.is_kvm() => {}
            (_, Some(p), Some((i, old))) if p.index() == i => {
                let new = sh.ioapic.entries()[i];
                if new.vector() != old.vector() {
                    Self::index_vector(sh, old.vector());
                    Self::index_vector(sh, new.vector());
                }
                let before = sh.dest_one[i];
                let format = self.config.ioapic.msi_format;
                let rescan =
                    scan_key(new, format) != scan_key(old, format) || self.config.policy.is_kvm();
                if new.destination(format) != old.destination(format)
                    && rescan
                    && a.rescan != Rescan::All
                    && before != PHYS_MANY
                    && self.move_single(sh, i, before, new.destination(format), old.vector(), fx)
                {
                    // One vCPU before and one after, at most: moved and
                    // rerouted under one lock each.
                } else {
                    self.reroute_after_write(sh, i, old, new, before, rescan, a.rescan, fx);
                }
            }
            _ => {
                // The whole table changed (a register restore), or a write we
                // cannot attribute: refresh everything, rescan everyone.
                self.rebuild_routing(sh);
                self.rescan_all(sh, fx);
            }
        }
        if !a.deliver.is_empty() {
            for p in a.deliver.iter() {
                self.deliver_pin(sh, p, fx);
            }
        }
    }

    /// The general case of [`Irqchip::apply`] after a write to entry `i`:
    /// refresh its destination if it changed, then reroute (or rescan) the
    /// vCPUs it left and joined.
    #[allow(clippy::too_many_arguments)]
    fn reroute_after_write<L>(
        &self,
        sh: &mut Shared<PINS>,
        i: usize,
        old: RedirectionEntry,
        new: RedirectionEntry,
        before: u16,
        rescan: bool,
        kind: Rescan,
        fx: &mut Effects<L>,
    ) {
        let mut both = None;
        let format = self.config.ioapic.msi_format;
        if new.destination(format) != old.destination(format) {
            both = self.refresh_dest(sh, i, new.destination(format));
        }
        if !rescan {
            return;
        }
        let vectors = [old.vector(), new.vector()];
        if kind == Rescan::All {
            self.rescan_set(sh, 0..self.vcpus(), fx);
        } else if let Some(set) = &both {
            self.reroute_set(sh, set.iter().map(VcpuId::index), vectors, fx);
        } else if before == PHYS_MANY {
            // The same several vCPUs before and after: its members.
            self.each_target(sh, Targets::Pin(i), |m| {
                self.reroute_set(sh, [m], vectors, fx)
            });
        } else {
            // One vCPU before and after, at most: no set to build.
            let one = |d: u16| (d < PHYS_MANY).then_some(usize::from(d));
            let (a, b) = (one(before), one(sh.dest_one[i]));
            let b = b.filter(|&b| Some(b) != a);
            self.reroute_set(sh, a.into_iter().chain(b), vectors, fx);
        }
    }

    /// Moves entry `pin` from the one vCPU `before` names (or none) to the
    /// one `dest` matches (or none), updating each vCPU's pin bit under the
    /// lock its reroute takes anyway. `false`, with nothing changed, when
    /// `dest` matches several vCPUs (the general path handles it).
    fn move_single<L>(
        &self,
        sh: &mut Shared<PINS>,
        pin: usize,
        before: u16,
        dest: Destination,
        old_vector: Vector,
        fx: &mut Effects<L>,
    ) -> bool {
        let mut first = None;
        let mut several = false;
        self.for_each_match(sh, dest, self.broadcast_quirk(), |i| match first {
            None => first = Some(i),
            Some(_) => several = true,
        });
        if several {
            return false;
        }
        sh.dest_one[pin] = first.map_or(PHYS_NONE, |i| i as u16);
        let new_vector = sh.ioapic.entries()[pin].vector();
        let vectors = [old_vector, new_vector];
        let bit = 1u32 << pin;
        let old = (before < PHYS_MANY).then_some(usize::from(before));
        match (old, first) {
            (Some(a), Some(b)) if a == b => self.reroute_one(sh, a, vectors, 0, 0, fx),
            (old, new) => {
                if let Some(a) = old {
                    self.reroute_one(sh, a, vectors, bit, 0, fx);
                }
                if let Some(b) = new {
                    self.reroute_one(sh, b, vectors, 0, bit, fx);
                }
            }
        }
        true
    }

    /// Delivers pin `p`'s message, which the I/O APIC has just sent, to the
    /// vCPUs its cached destination set names.
    #[inline]
    fn deliver_pin<L: DeliveryLog>(&self, sh: &Shared<PINS>, p: Pin, fx: &mut Effects<L>) {
        let i = p.index();
        if let Some(&e) = sh.ioapic.entries().get(i)
            && e.delivery_mode_bits() == 0
            && let one = sh.dest_one[i]
            && one < PHYS_MANY
            && !self.line_aware()
        {
            // The common case, without building the message: a fixed entry
            // whose destination the cache resolved to one vCPU, what
            // `deliver` would do with it.
            let Some(source) = self.pin_source(p, e.trigger_mode()) else {
                fx.rtc_coalesced = true;
                return;
            };
            let msg = Vectored {
                mode: DeliveryMode::Fixed,
                vector: e.vector(),
                trigger: e.trigger_mode(),
            };
            self.accept_on(sh, VcpuId::new(one), msg, Some(p), source, true, fx);
            return;
        }
        self.deliver_pin_general(sh, p, fx);
    }

    /// [`Irqchip::deliver_pin`] of any other entry: the message is decoded
    /// and delivered as an MSI would be.
    #[inline(never)]
    fn deliver_pin_general<L: DeliveryLog>(&self, sh: &Shared<PINS>, p: Pin, fx: &mut Effects<L>) {
        let Some(msg) = sh.ioapic.message(p) else {
            return;
        };
        let Some(source) = self.pin_source(p, msg.trigger) else {
            fx.rtc_coalesced = true;
            return;
        };
        if self.line_aware() {
            self.lazy_new_cycle(sh, p.index(), fx);
        }
        self.deliver(
            sh,
            &msg,
            Some(p),
            source,
            Self::pin_targets(sh, p.index()),
            fx,
        );
    }

    fn rescan_set<L>(
        &self,
        sh: &Shared<PINS>,
        targets: impl IntoIterator<Item = usize>,
        fx: &mut Effects<L>,
    ) {
        for i in targets {
            if let Some(slot) = self.vcpus.as_ref().get(i) {
                self.rescan_locked(sh, i, &mut slot.0.lock());
                fx.reload.insert(VcpuId::new(i as u16));
            }
        }
    }

    /// Moves pin `pin`'s destination to `dest`: its bit leaves the old
    /// vCPUs' routes and joins the new ones'. Touches only those vCPUs when
    /// each side is one vCPU (the physical case); returns the old and new
    /// vCPUs together when either side was several (a walk).
    fn refresh_dest(
        &self,
        sh: &mut Shared<PINS>,
        pin: usize,
        dest: Destination,
    ) -> Option<VcpuSet> {
        let bit = 1u32 << pin;
        let old = sh.dest_one[pin];
        let mut both = None;
        match old {
            PHYS_NONE => {}
            PHYS_MANY => {
                let mut set = VcpuSet::EMPTY;
                for i in 0..self.vcpus() {
                    let mut v = self.slot(i).lock();
                    if v.route.pins & bit != 0 {
                        v.route.pins &= !bit;
                        set.insert(VcpuId::new(i as u16));
                    }
                }
                both = Some(set);
            }
            i => self.slot(usize::from(i)).lock().route.pins &= !bit,
        }
        let mut first = None;
        let mut many: Option<VcpuSet> = None;
        self.for_each_match(sh, dest, self.broadcast_quirk(), |i| {
            self.slot(i).lock().route.pins |= bit;
            match first {
                None => first = Some(i),
                Some(f) => {
                    let set = many.get_or_insert_with(|| {
                        let mut s = VcpuSet::EMPTY;
                        s.insert(VcpuId::new(f as u16));
                        s
                    });
                    set.insert(VcpuId::new(i as u16));
                }
            }
        });
        sh.dest_one[pin] = match (first, &many) {
            (None, _) => PHYS_NONE,
            (Some(f), None) => f as u16,
            (Some(_), Some(_)) => PHYS_MANY,
        };
        if both.is_none() && many.is_none() {
            return None;
        }
        let mut set = both.unwrap_or_default();
        if let Some(m) = &many {
            set.union_with(m);
        }
        for i in [old, sh.dest_one[pin]] {
            if i < PHYS_MANY {
                set.insert(VcpuId::new(i));
            }
        }
        Some(set)
    }

    /// After one entry's write, brings each of `targets` up to date for the
    /// entry's old and new vectors alone where its map allows (`Exact` with
    /// nothing in flight: two bit tests instead of a walk of the table), and
    /// rescans it otherwise. The result is the rescan's either way.
    fn reroute_set<L>(
        &self,
        sh: &Shared<PINS>,
        targets: impl IntoIterator<Item = usize>,
        vectors: [Vector; 2],
        fx: &mut Effects<L>,
    ) {
        for i in targets {
            self.reroute_one(sh, i, vectors, 0, 0, fx);
        }
    }

    /// [`Irqchip::reroute_set`] for one vCPU, first clearing and setting
    /// `clear` / `set` in its pin bits.
    #[inline]
    fn reroute_one<L>(
        &self,
        sh: &Shared<PINS>,
        i: usize,
        vectors: [Vector; 2],
        clear: u32,
        set: u32,
        fx: &mut Effects<L>,
    ) {
        let Some(slot) = self.vcpus.as_ref().get(i) else {
            return;
        };
        let id = VcpuId::new(i as u16);
        let mut guard = slot.0.lock();
        let v = &mut *guard;
        v.route.pins = v.route.pins & !clear | set;
        let [a, b] = vectors;
        let pins = v.route.pins;
        let done = v
            .map
            .reroute(&v.apic, a, self.routed_to(sh, pins, &v.apic, a))
            && (a == b
                || v.map
                    .reroute(&v.apic, b, self.routed_to(sh, pins, &v.apic, b)));
        if done {
            // Counted as a rescan that read one entry per vector.
            v.stats.rescans = v.stats.rescans.wrapping_add(1);
            v.stats.entries_scanned = v.stats.entries_scanned.wrapping_add(1 + u32::from(a != b));
        } else {
            self.rescan_locked(sh, id.index(), v);
        }
        fx.reload.insert(id);
    }

    /// Whether directed EOI is in effect on `apic` for the rescans of a
    /// policy that reads it (not KVM's: its scans ignore SVR bit 12).
    #[inline]
    fn directed(&self, apic: &LocalApic) -> bool {
        !self.config.policy.is_kvm()
            && self.config.eoi_forwarding.honours_suppression()
            && apic.suppresses_eoi_broadcast()
    }

    /// Whether a counted, unmasked entry with vector `u` targets `me`: what
    /// a rescan of `me` finds for `u`, from the vector index.
    #[inline(always)]
    fn routed_to(&self, sh: &Shared<PINS>, pins: u32, apic: &LocalApic, u: Vector) -> bool {
        let level_counts = !self.directed(apic) && !self.line_aware();
        let live = |p: usize| {
            let e = sh.ioapic.entries()[p];
            e.vector() == u
                && !e.masked()
                && ((e.is_level() && level_counts) || sh.counted_edge.contains(Pin::new(p as u8)))
                && pins >> p & 1 != 0
        };
        match sh.pin_of[usize::from(u.get())] {
            PIN_NONE => false,
            PIN_MANY => (0..PINS).any(live),
            p => live(usize::from(p)),
        }
    }

    /// Delivers `msg` to the vCPUs in `targets` (those its destination
    /// matches), or to the lowest-priority winner among them.
    fn deliver<L: DeliveryLog>(
        &self,
        sh: &Shared<PINS>,
        msg: &InterruptMessage,
        pin: Option<Pin>,
        source: Source,
        targets: Targets,
        fx: &mut Effects<L>,
    ) {
        // The common case first, inline: a fixed message to one vCPU.
        if let (DeliveryMode::Fixed, Targets::One(i)) = (msg.delivery_mode, targets) {
            self.accept_on(
                sh,
                VcpuId::new(i as u16),
                Vectored::of(msg),
                pin,
                source,
                true,
                fx,
            );
            return;
        }
        self.deliver_general(sh, msg, pin, source, targets, fx);
    }

    /// [`Irqchip::deliver`] of a non-vectored or lowest-priority message,
    /// or one to several vCPUs: out of line, so the common case keeps a
    /// small frame.
    #[inline(never)]
    fn deliver_general<L: DeliveryLog>(
        &self,
        sh: &Shared<PINS>,
        msg: &InterruptMessage,
        pin: Option<Pin>,
        source: Source,
        targets: Targets,
        fx: &mut Effects<L>,
    ) {
        let id = |i: usize| VcpuId::new(i as u16);
        if !msg.delivery_mode.uses_vector() {
            // SMI, NMI, INIT, SIPI, ExtINT: every matching vCPU (no
            // arbitration), outside IRR/ISR.
            self.each_target(sh, targets, |i| self.latch_event_on(id(i), msg, fx));
            return;
        }
        if msg.delivery_mode == DeliveryMode::LowestPriority {
            if let Some(w) = self.arbitrate(sh, targets, msg.vector) {
                self.accept_on(sh, w, Vectored::of(msg), pin, source, true, fx);
            }
            return;
        }
        if let Targets::One(i) = targets {
            self.accept_on(sh, id(i), Vectored::of(msg), pin, source, true, fx);
            return;
        }
        // Several, or one: whether a vCPU takes the message alone is known
        // only at the second match, so the first waits for it (one pass).
        let mut first = None;
        let mut several = false;
        self.each_target(sh, targets, |i| {
            if !several {
                match first.take() {
                    None => {
                        first = Some(i);
                        return;
                    }
                    Some(f) => {
                        several = true;
                        self.accept_on(sh, id(f), Vectored::of(msg), pin, source, false, fx);
                    }
                }
            }
            self.accept_on(sh, id(i), Vectored::of(msg), pin, source, false, fx);
        });
        if let Some(f) = first {
            self.accept_on(sh, id(f), Vectored::of(msg), pin, source, !several, fx);
        }
    }

    /// The lowest-priority winner among `targets` for a message of
    /// `vector`. Eligible: matching (the targets), hardware- and
    /// software-enabled. KVM's vector hashing takes the (vector % n)-th
    /// eligible vCPU; the SDM's rule the lowest arbitration priority, the
    /// lowest index among equals.
    fn arbitrate(&self, sh: &Shared<PINS>, targets: Targets, vector: Vector) -> Option<VcpuId> {
        let mut eligible = VcpuSet::EMPTY;
        let mut count = 0;
        let mut best: Option<(u8, usize)> = None;
        self.each_target(sh, targets, |i| {
            let apic = self.slot(i).lock().apic;
            if !apic.accepts_vectored() {
                return;
            }
            eligible.insert(VcpuId::new(i as u16));
            count += 1;
            let prio = apic.apr();
            if best.is_none_or(|(p, b)| prio < p || (prio == p && i < b)) {
                best = Some((prio, i));
            }
        });
        match self.config.arbitration {
            Arbitration::KvmVectorHashing => match count {
                0 => None,
                n => eligible.iter().nth(usize::from(vector.get()) % n),
            },
            Arbitration::SdmPriority => best.map(|(_, i)| VcpuId::new(i as u16)),
        }
    }

    /// What pin `p`'s message (of trigger mode `trigger`) is to the maps: a level or ack-notifier
    /// pin's needs its EOI, a tracked RTC pin's is the RTC's, any other is
    /// plain. `None` while the RTC's EOI is owed: the RTC interrupt is
    /// coalesced (KVM's `rtc_irq_check_coalesced`).
    #[inline]
    fn pin_source(&self, p: Pin, trigger: crate::TriggerMode) -> Option<Source> {
        if self.config.rtc_tracking && p.get() as u32 == RTC_GSI.get() {
            return self.rtc_pin_source(p, trigger);
        }
        Some(if trigger.is_level() || self.is_notified(p) {
            Source::NeedsEoi
        } else {
            Source::Plain
        })
    }

    /// [`Irqchip::pin_source`] of the tracked RTC pin, out of line: it
    /// reads every vCPU's owed RTC EOI.
    #[cold]
    #[inline(never)]
    fn rtc_pin_source(&self, p: Pin, trigger: crate::TriggerMode) -> Option<Source> {
        if self.rtc_eoi_owed() {
            return None;
        }
        Some(if trigger.is_level() || self.is_notified(p) {
            Source::NeedsEoi
        } else {
            Source::Rtc
        })
    }

    /// Latches a non-vectored message on one vCPU, as KVM's
    /// `__apic_accept_irq` does (see [`VcpuEvents`]), and kicks it. A
    /// hardware-disabled APIC takes nothing (KVM leaves it out of the APIC
    /// map); a software-disabled one takes them all (SDM).
    fn latch_event_on<L>(&self, id: VcpuId, msg: &InterruptMessage, fx: &mut Effects<L>) {
        let Some(slot) = self.vcpus.as_ref().get(id.index()) else {
            return;
        };
        let mut v = slot.0.lock();
        if v.apic.mode() == ApicMode::Disabled {
            return;
        }
        let mut e = v.apic.events.get();
        match msg.delivery_mode {
            // KVM: `pending_events = INIT`, dropping a latched SIPI.
            DeliveryMode::Init => {
                e.init = true;
                e.sipi = None;
            }
            DeliveryMode::StartUp => e.sipi = Some(msg.vector),
            // `kvm_inject_nmi` queues; `process_nmi` caps the count at 2
            // whatever the blocking state, and `take_events` at 1 when blocked.
            DeliveryMode::Nmi => e.nmi = (e.nmi + 1).min(VcpuEvents::NMI_MAX),
            DeliveryMode::Smi => e.smi = true,
            DeliveryMode::ExtInt => e.extint = true,
            DeliveryMode::Fixed | DeliveryMode::LowestPriority => return,
        }
        v.apic.events = PackedEvents::pack(e);
        fx.kick.insert(id);
    }

    #[allow(clippy::too_many_arguments)]
    fn accept_on<L: DeliveryLog>(
        &self,
        sh: &Shared<PINS>,
        id: VcpuId,
        msg: Vectored,
        pin: Option<Pin>,
        source: Source,
        alone: bool,
        fx: &mut Effects<L>,
    ) {
        let Some(slot) = self.vcpus.as_ref().get(id.index()) else {
            return;
        };
        let mut v = slot.0.lock();
        let Vcpu { apic, map, .. } = &mut *v;
        // Read before the acceptance, by `LineAware` only.
        let had = self.line_aware() && apic.pending_eoi(msg.vector);
        let (vector, trigger, coalesced) =
            match apic.accept_parts(msg.mode, msg.vector, msg.trigger) {
                Acceptance::Accepted { vector, trigger } => (vector, trigger, false),
                Acceptance::Coalesced { vector, trigger } => (vector, trigger, true),
                Acceptance::Ignored(_) => return,
            };
        let accepted = Accepted {
            vector,
            trigger,
            coalesced,
            source,
        };
        // Under directed EOI a level pin's EOI does not reach the I/O APIC
        // from this vCPU: to the map it is plain (an ack notifier's is not).
        // The log keeps the pin's own source.
        let mut to_map = accepted;
        if source == Source::NeedsEoi
            && self.config.eoi_forwarding.honours_suppression()
            && apic.suppresses_eoi_broadcast()
            && !pin.is_some_and(|p| self.is_notified(p))
        {
            to_map.source = Source::Plain;
        }
        let changed = if self.line_aware() {
            self.line_aware_accept(sh, id, had, pin, alone, to_map, apic, map)
        } else {
            map.accept(apic, to_map)
        };
        if changed {
            // The VMCS must hold the new bit before the guest can take this
            // interrupt (TmrDriven sets it here; Exact for RTC and untracked
            // level sources).
            fx.reload.insert(id);
        }
        fx.kick.insert(id);
        fx.log.record(Delivery {
            vcpu: id,
            accepted,
            pin,
        });
    }
}

impl<S: AsRef<[VcpuSlot]>, const PINS: usize> Irqchip<S, PINS> {
    /// [`Irqchip::accept_on`]'s map update under `LineAware`; returns
    /// whether the bitmap changed. Only this vector's bit can change, and
    /// the previous RTC vector's when the owed RTC EOI moves to this one.
    #[allow(clippy::too_many_arguments)]
    #[inline(never)]
    fn line_aware_accept(
        &self,
        sh: &Shared<PINS>,
        id: VcpuId,
        had: bool,
        pin: Option<Pin>,
        alone: bool,
        mut to_map: Accepted,
        apic: &LocalApic,
        map: &mut EoiExitMap,
    ) -> bool {
        let vector = to_map.vector;
        let before = (map.intercepts(vector), map.rtc_owed());
        let lazy = self.lazy_accept(sh, id, had, pin, alone, &mut to_map, map);
        map.on_accept(apic, to_map);
        if lazy {
            // Delivered because its line is asserted: asserted at entry.
            map.set_line(vector, Line::Asserted);
        }
        (map.intercepts(vector), map.rtc_owed()) != before
    }
}

/// The pin whose redirection entry IOREGSEL selects, if any.
fn selected_pin<const PINS: usize>(sh: &Shared<PINS>) -> Option<usize> {
    sh.ioapic
        .ioregsel()
        .checked_sub(REG_REDTBL_BASE)
        .map(|i| usize::from(i / 2))
        .filter(|&i| i < PINS)
}

// ---- LineAware: lazy remote IRR ------------------------------------------

impl<S: AsRef<[VcpuSlot]>, const PINS: usize> Irqchip<S, PINS> {
    #[inline(always)]
    fn line_aware(&self) -> bool {
        self.config.policy == Policy::LineAware
    }

    /// Whether vCPU `o` (an owner, not a marker) holds `v` in IRR or ISR.
    fn holds(&self, o: u16, v: Vector) -> bool {
        self.vcpus.as_ref().get(usize::from(o)).is_some_and(|slot| {
            let g = slot.0.lock();
            g.apic.irr().contains(v) || g.apic.isr().contains(v)
        })
    }

    /// Whether pin `i` holds a lazy level instance that its vCPU has retired
    /// (an EOI that did not exit) while the pin waits for an EOI: remote IRR
    /// set, and the vector neither in IRR nor in ISR of the owner (or the
    /// owner was seen retiring it).
    fn lazy_retired(&self, sh: &Shared<PINS>, i: usize) -> bool {
        let e = sh.ioapic.entries()[i];
        if !e.remote_irr() || !e.is_level() {
            return false;
        }
        match sh.owner[i].get() {
            OWNER_NONE => false,
            OWNER_RETIRED => true,
            o => !self.holds(o, e.vector()),
        }
    }

    /// Clears pin `i`'s remote IRR if its lazy instance retired, as the EOI
    /// would have, and applies what that EOI causes (a line still asserted is
    /// delivered again).
    fn settle<L: DeliveryLog>(&self, sh: &mut Shared<PINS>, i: usize, fx: &mut Effects<L>) {
        if !self.lazy_retired(sh, i) {
            return;
        }
        sh.owner[i].set(OWNER_NONE);
        let v = sh.ioapic.entries()[i].vector();
        if let Some(a) = sh.ioapic.eoi_pin(i, v)
            && !a.is_empty()
        {
            self.apply(sh, a, None, fx);
        }
    }

    /// [`Irqchip::settle`] where nothing can be delivered (a read, a
    /// snapshot): only when the EOI would have delivered nothing either (the
    /// entry masked or its line deasserted). A retired instance whose line is
    /// asserted exists only in the race window, where the EOI would have
    /// re-delivered and set remote IRR again: leaving it set reads the same,
    /// and the vCPU's re-check delivers.
    fn settle_quiet(&self, sh: &mut Shared<PINS>, i: usize) {
        let e = sh.ioapic.entries()[i];
        if (e.masked() || !sh.ioapic.asserted(Pin::new(i as u8))) && self.lazy_retired(sh, i) {
            sh.owner[i].set(OWNER_NONE);
            let _ = sh.ioapic.eoi_pin(i, e.vector());
        }
    }

    /// The line of owner `o`'s lazy instance of `v` is asserted while `o` may
    /// run with the bit clear: raise the bit and make `o` exit;
    /// [`Irqchip::take_events`] re-checks at that exit.
    fn raise<L>(&self, o: u16, v: Vector, fx: &mut Effects<L>) {
        if let Some(slot) = self.vcpus.as_ref().get(usize::from(o)) {
            let mut g = slot.0.lock();
            g.map.set_line(v, Line::Raised);
            if !g.map.intercepts(v) {
                fx.exit.insert(VcpuId::new(o));
            }
        }
    }

    /// Every EOI of `o`'s instances of `v` exits from now on (the VMCS holds
    /// the bit before `o` next runs guest code).
    fn make_eager<L>(&self, o: u16, v: Vector, fx: &mut Effects<L>) {
        if let Some(slot) = self.vcpus.as_ref().get(usize::from(o)) {
            slot.0.lock().map.make_eager(v);
            fx.reload.insert(VcpuId::new(o));
        }
    }

    /// Pin `i` is about to deliver (a new remote-IRR cycle, or an edge
    /// message). A lazy instance of an earlier cycle that its vCPU retired
    /// had its EOI before this cycle began: forgotten. One still in flight
    /// keeps the pin: its EOI, a broadcast of the vector, will end this
    /// cycle as the reference's EOI would (so this cycle's instances are
    /// eager, the pin having one lazy owner), and since the line is asserted
    /// that EOI must exit: the bit is raised, with the exit kick.
    fn lazy_new_cycle<L>(&self, sh: &Shared<PINS>, i: usize, fx: &mut Effects<L>) {
        let o = sh.owner[i].get();
        if o == OWNER_NONE {
            return;
        }
        let e = sh.ioapic.entries()[i];
        if o == OWNER_RETIRED || !self.holds(o, e.vector()) {
            sh.owner[i].set(OWNER_NONE);
        } else if e.is_level() {
            self.raise(o, e.vector(), fx);
        }
    }

    /// A line change the I/O APIC did not deliver, on a pin that may hold a
    /// lazy instance: event (a) when it asserts, and the race.
    fn lazy_line<L: DeliveryLog>(&self, sh: &mut Shared<PINS>, i: usize, fx: &mut Effects<L>) {
        let owner = sh.owner[i].get();
        if owner == OWNER_NONE {
            return;
        }
        let e = sh.ioapic.entries()[i];
        let asserted = sh.ioapic.asserted(Pin::new(i as u8));
        if asserted && self.lazy_retired(sh, i) {
            self.settle(sh, i, fx);
            return;
        }
        if asserted && e.remote_irr() {
            self.raise(owner, e.vector(), fx);
        } else if !asserted && let Some(slot) = self.vcpus.as_ref().get(usize::from(owner)) {
            // Also between cycles (remote IRR clear): the EOI has nothing
            // to end until the next one, whose delivery raises the bit.
            slot.0.lock().map.set_line(e.vector(), Line::Low);
        }
    }

    /// Pin `i`'s line is about to drop. A lazy instance that has retired by
    /// now retired while the line was asserted: any retirement before the
    /// line last asserted was settled then ([`Irqchip::lazy_line`]), so this
    /// is the race window, where the vCPU was told to exit and has not yet.
    /// The reference's EOI re-delivered then, with the line high; settling
    /// now, before the drop, does the same. Waiting for the vCPU's exit would
    /// find the line low and deliver nothing.
    fn lazy_drop<L: DeliveryLog>(&self, sh: &mut Shared<PINS>, i: usize, fx: &mut Effects<L>) {
        if sh.owner[i].get() != OWNER_NONE
            && sh.ioapic.asserted(Pin::new(i as u8))
            && self.lazy_retired(sh, i)
        {
            self.settle(sh, i, fx);
        }
    }

    /// A write to pin `i` (which was `old`), before its effects (rescans,
    /// deliveries) apply: a lazy instance still in flight whose entry
    /// changed vector becomes eager, so its EOI is forwarded as the
    /// reference forwards it (matching whatever entries hold the vector
    /// then); a polarity flip is a line change.
    fn lazy_rewrite<L: DeliveryLog>(
        &self,
        sh: &mut Shared<PINS>,
        i: usize,
        old: RedirectionEntry,
        fx: &mut Effects<L>,
    ) {
        let owner = sh.owner[i].get();
        let new = sh.ioapic.entries()[i];
        if owner == OWNER_NONE {
            return;
        }
        if new.vector() != old.vector() {
            // The write settled a retired instance first (event (c)). One
            // in flight, of this cycle or an earlier one: its EOI reaches
            // whatever entries hold the old vector when it happens.
            sh.owner[i].set(OWNER_NONE);
            if owner != OWNER_RETIRED && self.holds(owner, old.vector()) {
                self.make_eager(owner, old.vector(), fx);
            }
        } else if new.polarity() != old.polarity() && (old.remote_irr() || !new.remote_irr()) {
            // A polarity flip asserts or deasserts the pin without a line
            // change: the same as `set_line` for the lazy instance. Unless
            // the flip itself began a new cycle (remote IRR was clear and the
            // write delivered), as `set_line` does when the I/O APIC
            // delivers: that delivery settles the owner
            // (`lazy_new_cycle`). Taking the new cycle's remote IRR for
            // the old instance's would settle it at once and deliver twice
            // (found by the routing_reconfig fuzz target).
            self.lazy_line(sh, i, fx);
        }
    }

    /// After a write to pin `i` (which was `old`) applied: a lazy instance
    /// whose vector the written entry now shares becomes eager.
    fn lazy_shared<L: DeliveryLog>(
        &self,
        sh: &mut Shared<PINS>,
        i: usize,
        old: RedirectionEntry,
        fx: &mut Effects<L>,
    ) {
        let new = sh.ioapic.entries()[i];
        if new.vector() == old.vector() || sh.pin_of[usize::from(new.vector().get())] != PIN_MANY {
            return;
        }
        // The written entry now shares its vector with another: an EOI of
        // that vector clears every such entry's remote IRR, so a lazy
        // instance of it turns eager (its EOI is the reference's again),
        // whether or not its own entry still has remote IRR set: one
        // switched to edge since keeps the instance in flight, and its EOI
        // now reaches the written entry (found by the routing_reconfig
        // fuzz target: a level SMI entry rewritten to the vector).
        for q in 0..PINS {
            let o = sh.owner[q].get();
            let e = sh.ioapic.entries()[q];
            if q != i && o != OWNER_NONE && e.vector() == new.vector() {
                if self.lazy_retired(sh, q) {
                    // Retired before the write: its EOI came first.
                    self.settle(sh, q, fx);
                    continue;
                }
                sh.owner[q].set(OWNER_NONE);
                if o != OWNER_RETIRED && self.holds(o, e.vector()) {
                    self.make_eager(o, e.vector(), fx);
                }
            }
        }
    }

    /// A message of vector `v` (an MSI or an IPI) is about to be delivered.
    /// A lazy instance of `v` that its vCPU retired while its line was
    /// asserted (the race window, its exit not yet taken) had its EOI before
    /// this message: it is settled first, as the reference's EOI cleared
    /// remote IRR and re-delivered the line then. Left for the exit's
    /// re-check, the new instance's acceptance on that vCPU would reset the
    /// vector's line state there and hide the retirement from the re-check,
    /// and the asserted line would wait for its next edge (found by the race
    /// model checker once the owed exit became an op of its own).
    fn lazy_message<L: DeliveryLog>(&self, sh: &mut Shared<PINS>, v: Vector, fx: &mut Effects<L>) {
        let pin = (0..PINS)
            .find(|&q| sh.owner[q].get() != OWNER_NONE && sh.ioapic.entries()[q].vector() == v);
        if let Some(q) = pin
            && sh.ioapic.asserted(Pin::new(q as u8))
            && self.lazy_retired(sh, q)
        {
            self.settle(sh, q, fx);
        }
    }

    /// An acceptance on `id` under `LineAware`, before the map hears of it.
    /// Another instance of a vector whose lazy instance `id` holds makes it
    /// eager (the in-flight test would be ambiguous), or, when `id` has
    /// already retired the lazy one (`had` is false), records that. Returns
    /// whether this acceptance is itself lazy (then reported to the map as
    /// plain): a level pin's, delivered to this vCPU `alone`, from the only
    /// entry holding its vector, no ack notifier or resampler on the pin.
    #[allow(clippy::too_many_arguments)]
    fn lazy_accept(
        &self,
        sh: &Shared<PINS>,
        id: VcpuId,
        had: bool,
        pin: Option<Pin>,
        alone: bool,
        to_map: &mut Accepted,
        map: &mut EoiExitMap,
    ) -> bool {
        let v = to_map.vector;
        if let Some(q) = Self::owned_pin(sh, id, v) {
            if had {
                // From now on its EOI is the reference's EOI: it exits and
                // reaches the I/O APIC (or not) exactly as there. (Also a
                // new cycle of its own pin: that one is eager anyway.)
                map.make_eager(v);
                sh.owner[q].set(OWNER_NONE);
            } else if sh.ioapic.entries()[q].remote_irr() {
                sh.owner[q].set(OWNER_RETIRED);
            } else {
                // Retired between cycles: nothing left for its EOI to end.
                sh.owner[q].set(OWNER_NONE);
            }
        }
        let Some(p) = pin else {
            return false;
        };
        let lazy = to_map.source == Source::NeedsEoi
            && to_map.trigger.is_level()
            && !had
            && alone
            && sh.pin_of[usize::from(v.get())] == p.get()
            && !self.is_notified(p)
            && sh.owner[p.index()].get() == OWNER_NONE;
        if lazy && !sh.ioapic.entries()[p.index()].remote_irr() {
            return false;
        }
        if lazy {
            sh.owner[p.index()].set(id.get());
            to_map.source = Source::Plain;
        }
        lazy
    }

    /// The pin whose lazy instance of `v` vCPU `id` holds, if any: its owner
    /// is `id` and its entry has vector `v` now (remote IRR set, or clear
    /// between cycles). (Not the vector index: the entry's vector may have
    /// become shared since.)
    fn owned_pin(sh: &Shared<PINS>, id: VcpuId, v: Vector) -> Option<usize> {
        (0..PINS).find(|&q| sh.owner[q].get() == id.get() && sh.ioapic.entries()[q].vector() == v)
    }

    /// An EOI of `v` on `id` that exited, before it is forwarded (`forward`)
    /// or not. If it retires `id`'s own lazy instance, that instance is done:
    /// the EOI does what the reference's does. Otherwise, if it reaches a
    /// pin whose lazy instance another vCPU retired, that EOI came first:
    /// it is settled before this one is applied. (A pin with an owner is the
    /// only entry holding its vector: sharing makes lazy instances eager.)
    fn lazy_eoi<L: DeliveryLog>(
        &self,
        sh: &mut Shared<PINS>,
        id: VcpuId,
        v: Vector,
        forward: bool,
        fx: &mut Effects<L>,
    ) {
        let q = usize::from(sh.pin_of[usize::from(v.get())]);
        if q >= PINS {
            return;
        }
        let o = sh.owner[q].get();
        if o == id.get() {
            sh.owner[q].set(OWNER_NONE);
        } else if forward && o != OWNER_NONE {
            self.settle(sh, q, fx);
        }
    }

    /// `id` stopped broadcasting level EOIs (SVR bit 12): a lazy instance
    /// it retired had its EOI broadcast first (settled); one still in
    /// flight will not reach the I/O APIC (the guest writes its EOI
    /// register instead), so nothing is left to clear lazily.
    fn lazy_suppressed<L: DeliveryLog>(
        &self,
        sh: &mut Shared<PINS>,
        id: VcpuId,
        fx: &mut Effects<L>,
    ) {
        for q in 0..PINS {
            if sh.owner[q].get() == id.get() {
                self.settle(sh, q, fx);
                sh.owner[q].set(OWNER_NONE);
            }
        }
    }

    /// The re-check at a vCPU's exit ([`Irqchip::take_events`]): each lazy
    /// instance whose line is asserted and that the guest retired since (in
    /// the race window) is resolved as its EOI would have been; one whose
    /// pin no longer waits for an EOI (remote IRR clear) needs no exit.
    fn recheck<L: DeliveryLog>(&self, vcpu: VcpuId, fx: &mut Effects<L>) {
        let mut sh = self.shared.lock();
        let slot = self.slot(vcpu.index());
        let held = slot.lock().map.line_held();
        for v in held.iter() {
            let owned = Self::owned_pin(&sh, vcpu, v);
            if owned
                .is_some_and(|q| sh.ioapic.entries()[q].remote_irr() && !self.lazy_retired(&sh, q))
            {
                continue;
            }
            slot.lock().map.set_line(v, Line::Low);
            fx.reload.insert(vcpu);
            if let Some(q) = owned {
                self.settle(&mut sh, q, fx);
            }
        }
    }

    /// Before a snapshot: every lazy instance that retired and whose EOI
    /// would have delivered nothing is resolved (event (d)).
    pub(crate) fn settle_all(&self, sh: &mut Shared<PINS>) {
        if self.line_aware() {
            for i in 0..PINS {
                self.settle_quiet(sh, i);
            }
        }
    }

    /// What a snapshot taken now records beyond the live chip: the lazy
    /// instances the guest retired in the race window (after
    /// [`Irqchip::settle_all`], those whose line is asserted on an unmasked
    /// entry), settled in the copy as the owner's re-check will settle them
    /// in the live chip. `None` (the common case) when there are none.
    ///
    /// The live chip is left alone: it settles at the owner's
    /// [`Irqchip::take_events`] or at a line drop, with the effects (kicks)
    /// that a snapshot cannot hand out. A copy has no exit to come, so it
    /// records the EOI done: remote IRR cleared and the line re-delivered
    /// (remote IRR set again, the message accepted by the LAPICs it
    /// reaches). That is the reference's state once its EOI exited. A
    /// lowest-priority re-delivery is arbitrated now, over the LAPICs as
    /// they are now, where the live chip arbitrates at the re-check: both
    /// deliver the EOI's re-delivery later than the reference, each
    /// arbitrating when it delivers, as an I/O APIC message sent then would.
    /// A re-delivery that an EOI storm throttles is delivered in the copy
    /// (its delay taken as over), since no VMM holds a timer for it.
    pub(crate) fn window(&self, sh: &Shared<PINS>) -> Option<Window<PINS>> {
        if !self.line_aware() {
            return None;
        }
        let mut window: Option<Window<PINS>> = None;
        for q in 0..PINS {
            let owner = sh.owner[q].get();
            if owner == OWNER_NONE || !self.lazy_retired(sh, q) {
                continue;
            }
            let w = window.get_or_insert_with(|| Window {
                ioapic: sh.ioapic.clone(),
                settled: [None; PINS],
            });
            // As `settle`: the EOI of the retired instance, then what it
            // causes (an EOI re-services its own pin, or throttles it).
            let vector = w.ioapic.entries()[q].vector();
            let delivery = w
                .ioapic
                .eoi_pin(q, vector)
                .map(|a| {
                    if a.deliver_later.is_empty() {
                        a
                    } else {
                        // An EOI storm throttles the re-delivery (KVM's
                        // 10,000th in a row). The copy's VMM has no timer
                        // for it: the copy takes the delay as over at the
                        // save, as `KVM_SET_IRQCHIP` re-injects the pin.
                        w.ioapic.deliver_later_elapsed(Pin::new(q as u8))
                    }
                })
                .and_then(|a| a.deliver.iter().next())
                .and_then(|p| self.redelivery(sh, &w.ioapic, p));
            w.settled[q] = Some(Settled {
                owner,
                vector,
                delivery,
            });
        }
        window
    }

    /// Pin `p`'s delivery from `io` as [`Irqchip::deliver_pin`] and
    /// [`Irqchip::deliver`] would make it now, with the lowest-priority
    /// winner chosen; `None` when nothing would be accepted.
    fn redelivery(&self, sh: &Shared<PINS>, io: &Ioapic<PINS>, p: Pin) -> Option<Redelivery> {
        let msg = io.message(p)?;
        let source = self.pin_source(p, msg.trigger)?;
        // A lazy instance came from a vectored entry, and a write of the
        // entry settles it first (event (c)): the entry is unchanged.
        if !msg.delivery_mode.uses_vector() {
            return None;
        }
        let mut targets = Self::pin_targets(sh, p.index());
        if msg.delivery_mode == DeliveryMode::LowestPriority {
            // As `deliver` arbitrates.
            targets = self
                .arbitrate(sh, targets, msg.vector)
                .map_or(Targets::None, |w| Targets::One(w.index()));
        }
        Some(Redelivery {
            msg,
            pin: p,
            source,
            targets,
        })
    }

    /// vCPU `i` (`v`, a copy of its slot) as the snapshot records it after
    /// `w`: a retired instance it owned is re-checked (its line state
    /// dropped, as [`Irqchip::recheck`] does), and it accepts each
    /// re-delivery that reaches it, in pin order, as
    /// [`Irqchip::accept_on`] would. The map hears of it as an instance
    /// needing its EOI: a restored chip adopts every instance in flight as
    /// eager anyway, and the saved form is the same.
    pub(crate) fn settle_copy(&self, w: &Window<PINS>, i: usize, v: &mut Vcpu) {
        for s in w.settled.iter().flatten() {
            if usize::from(s.owner) == i {
                v.map.set_line(s.vector, Line::Low);
            }
            let Some(r) = s.delivery else { continue };
            let reached = match r.targets {
                Targets::None => false,
                Targets::One(j) => j == i,
                Targets::Pin(p) => v.route.pins >> p & 1 != 0,
                Targets::Dest(d, quirk) => v.apic.matches_with(d, quirk),
                Targets::All { except } => except != Some(i),
            };
            if !reached {
                continue;
            }
            let (vector, trigger, coalesced) = match v.apic.accept(&r.msg) {
                Acceptance::Accepted { vector, trigger } => (vector, trigger, false),
                Acceptance::Coalesced { vector, trigger } => (vector, trigger, true),
                Acceptance::Ignored(_) => continue,
            };
            let mut source = r.source;
            if source == Source::NeedsEoi
                && self.config.eoi_forwarding.honours_suppression()
                && v.apic.suppresses_eoi_broadcast()
                && !self.config.notified_pins().contains(r.pin)
            {
                source = Source::Plain;
            }
            v.map.on_accept(
                &v.apic,
                Accepted {
                    vector,
                    trigger,
                    coalesced,
                    source,
                },
            );
        }
    }
}

/// `LineAware`: a snapshot's copy of the chip where it differs from the
/// live one ([`Irqchip::window`]).
pub(crate) struct Window<const PINS: usize> {
    /// The I/O APIC after the EOIs of the instances retired in the window
    /// and their re-deliveries.
    pub(crate) ioapic: Ioapic<PINS>,
    /// Per pin: the instance retired in the window, if any.
    settled: [Option<Settled>; PINS],
}

/// A lazy instance retired in the race window, settled in a copy.
#[derive(Clone, Copy)]
struct Settled {
    /// The vCPU it was delivered to, or [`OWNER_RETIRED`].
    owner: u16,
    vector: Vector,
    /// What its EOI re-delivered, if anything.
    delivery: Option<Redelivery>,
}

/// A pin's delivery, its lowest-priority winner chosen.
#[derive(Clone, Copy)]
struct Redelivery {
    msg: InterruptMessage,
    pin: Pin,
    source: Source,
    targets: Targets,
}

/// A vector set being built in four locals.
#[derive(Default, Clone, Copy)]
struct Words(u64, u64, u64, u64);

impl Words {
    #[inline(always)]
    fn insert(&mut self, v: Vector) {
        let bit = 1u64 << (v.get() & 63);
        match v.get() >> 6 {
            0 => self.0 |= bit,
            1 => self.1 |= bit,
            2 => self.2 |= bit,
            _ => self.3 |= bit,
        }
    }

    fn set(self) -> VectorSet {
        VectorSet::from_u64_words([self.0, self.1, self.2, self.3])
    }
}

/// [`Irqchip::take_events`] on one vCPU's pending events, the LAPIC already
/// reset if an INIT is taken (`init` set and not `init_blocked`). `bsp`: the
/// vCPU is the BSP, which an INIT leaves runnable (KVM's `kvm_vcpu_is_bsp`).
fn take_events_locked(
    e: &mut VcpuEvents,
    bsp: bool,
    init_blocked: bool,
    nmi_blocked: bool,
) -> VcpuEvents {
    let mut out = VcpuEvents::NONE;
    if init_blocked {
        // KVM: "INITs are latched while in SMM"; SIPIs are eaten.
        e.sipi = None;
    } else {
        if e.init {
            // `kvm_vcpu_reset(vcpu, true)`: pending NMIs and SMI go; the
            // interrupt queue (here, the ExtINT) is cleared.
            *e = VcpuEvents {
                sipi: e.sipi,
                wait_for_sipi: !bsp,
                ..VcpuEvents::NONE
            };
            out.init = true;
        }
        if let Some(v) = e.sipi.take()
            && e.wait_for_sipi
        {
            e.wait_for_sipi = false;
            out.sipi = Some(v);
        }
    }
    out.wait_for_sipi = e.wait_for_sipi;
    if e.wait_for_sipi {
        // Not running: NMI, SMI and ExtINT wait for the SIPI.
        return out;
    }
    out.smi = core::mem::take(&mut e.smi);
    out.extint = core::mem::take(&mut e.extint);
    // `process_nmi`: one running and one pending at most, so one while an
    // NMI is in service or injected.
    e.nmi = e.nmi.min(if nmi_blocked { 1 } else { VcpuEvents::NMI_MAX });
    out.nmi = e.nmi;
    if !nmi_blocked && e.nmi > 0 {
        e.nmi -= 1;
    }
    out
}

/// Pins whose entries a scan counts even when edge triggered.
fn counted_edge(config: &IrqchipConfig) -> crate::PinSet {
    let mut pins = config.notified_pins();
    if config.rtc_tracking {
        pins.insert(Pin::new(RTC_GSI.get() as u8));
    }
    pins
}

/// The fields of a redirection entry that a rescan reads: vector, trigger
/// mode, mask, destination and destination mode.
#[inline(always)]
fn scan_key(e: RedirectionEntry, format: MsiFormat) -> (Vector, bool, bool, Destination) {
    (e.vector(), e.is_level(), e.masked(), e.destination(format))
}

#[cfg(test)]
mod tests;
