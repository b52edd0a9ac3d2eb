//! The I/O APIC (82093AA datasheet, Linux KVM `arch/x86/kvm/ioapic.c`).
//!
//! [`Ioapic`] is a sans-IO model of one I/O APIC: the VMM forwards guest MMIO
//! ([`Ioapic::mmio_read`], [`Ioapic::mmio_write`]), pin levels
//! ([`Ioapic::set_line`]) and broadcast EOIs ([`Ioapic::eoi`]), and acts on the
//! returned [`IoapicEffects`] (deliver pins, rescan vCPUs, re-install routes).
//!
//! # Registers
//!
//! | MMIO offset | register |
//! |---|---|
//! | `0x00` | IOREGSEL (8 bits) |
//! | `0x10` | IOWIN: the register IOREGSEL selects |
//! | `0x40` | EOI (version 0x20 only): bits 7:0 = vector |
//!
//! | IOREGSEL | register |
//! |---|---|
//! | `0x00` | ID: bits 27:24 writable |
//! | `0x01` | version: bits 7:0 version, 23:16 `PINS - 1`; read-only |
//! | `0x02` | arbitration ID: reads the ID (as KVM does); read-only |
//! | `0x10 + 2n` / `0x11 + 2n` | redirection entry `n`, low / high half |
//! | anything else | reads all-ones, writes ignored (as KVM does) |
//!
//! With an 8-bit IOREGSEL the guest reaches entries 0..=119; entries above
//! that (`PINS` may be up to 240) are reachable only through
//! [`Ioapic::write_entry`].
//!
//! # Access sizes and offsets (KVM `ioapic_mmio_read` / `ioapic_mmio_write`)
//!
//! * The offset is decoded modulo 256 (KVM masks `addr & 0xff`; QEMU maps a
//!   4 KiB region and masks the same way). Only the exact offsets 0x00, 0x10
//!   and 0x40 are registers: an unaligned access such as 0x11 or 0x04 reads 0
//!   and writes nothing.
//! * Writes of 1, 2, 4 or 8 bytes take the low 8, 16, 32 or 32 bits of
//!   `value`, zero-extended to 32 bits, and write the whole register: a 1-byte
//!   write to IOWIN clears bits 31:8 of the selected register, and an 8-byte
//!   write ignores bits 63:32. Other sizes are ignored. (The 82093AA requires
//!   32-bit accesses; QEMU ignores IOWIN and EOI accesses that are not 4 bytes.)
//! * Reads of 1, 2 or 4 bytes return the low bytes of the 32-bit register; an
//!   8-byte read returns it zero-extended. Other sizes read 0 (KVM leaves the
//!   buffer untouched).
//!
//! # Where KVM and the 82093AA differ, and what this model does
//!
//! | behaviour | KVM | 82093AA / QEMU | this model |
//! |---|---|---|---|
//! | edge while masked | recorded in `irr` (not `irr_delivered`), **not** delivered on unmask; forgotten when the line drops; re-injected by `KVM_SET_IRQCHIP` | dropped (datasheet; QEMU "must ignore edge requests if the input pin is masked") | [`MaskedEdge::Latch`] (default) does what KVM does: the edge shows in [`IoapicState::pending_edge`] and [`Ioapic::restore`] delivers it; [`MaskedEdge::Drop`] forgets it |
//! | old destination for the rescan after a retarget | decoded with the **new** destination mode (a bug) | n/a | decoded with the old mode |
//! | rescan when the delivery mode is not Fixed | all vCPUs if the **new** mode is not Fixed | n/a | all vCPUs if the old **or** the new mode is not Fixed |
//! | remote IRR when delivery reaches no LAPIC | stays clear (`ret == 0`) | n/a | set: the model does not know the destinations, the VMM MUST deliver every pin in `deliver` |
//! | EOI of a vector shared by an edge entry whose line is high | re-delivers the edge entry | only level entries | only level entries |
//! | pin polarity | ignored: `kvm_set_irq` takes the logical level | applied | applied: [`Ioapic::set_line`] takes the electrical level |
//! | EOI-storm counter on an entry write | kept | QEMU resets it | kept |
//! | EOI register (0x40) | none (version 0x11) | version 0x20 | version 0x20 only |
//!
//! Redirection writes behave as in KVM otherwise: delivery status and remote
//! IRR are read-only, switching an entry to edge clears remote IRR (Linux and
//! Xen rely on it to emulate an EOI on I/O APICs without the EOI register),
//! and any write to a level entry whose line is asserted retries delivery (an
//! unmask delivers a pending level interrupt).
//!
//! Nothing here allocates or panics; every loop is bounded by `PINS`.

mod effects;
mod entry;
mod pins;

use crate::routes::Msi;
use crate::types::{InterruptMessage, InvalidValue, Pin, Polarity};
use crate::vector::Vector;

pub use effects::{IoapicEffects, Rescan};
pub use entry::RedirectionEntry;
pub use pins::{PinSet, PinSetIter};

/// MMIO offset of IOREGSEL.
pub const IOREGSEL: u64 = 0x00;
/// MMIO offset of IOWIN.
pub const IOWIN: u64 = 0x10;
/// MMIO offset of the EOI register (version 0x20 only).
pub const IOEOI: u64 = 0x40;
/// Size of the MMIO window KVM registers (`IOAPIC_MEM_LENGTH`); offsets are
/// decoded modulo this.
pub const MMIO_LEN: u64 = 0x100;

/// Indirect register: ID.
pub const REG_ID: u8 = 0x00;
/// Indirect register: version.
pub const REG_VERSION: u8 = 0x01;
/// Indirect register: arbitration ID.
pub const REG_ARB: u8 = 0x02;
/// Indirect register: low half of redirection entry 0.
pub const REG_REDTBL_BASE: u8 = 0x10;

/// KVM's `IOAPIC_SUCCESSIVE_IRQ_MAX_COUNT`: the EOI that finds a level line
/// still asserted for the 10,000th time in a row defers the re-delivery.
pub const SUCCESSIVE_IRQ_MAX_COUNT: u16 = 10_000;

/// The delay KVM waits before retrying a throttled pin (`HZ / 100`, 10 ms).
pub const DELIVER_LATER_DELAY_NS: u64 = 10_000_000;

/// The version register's low byte.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[repr(u8)]
pub enum IoapicVersion {
    /// 0x11: the 82093AA and KVM's in-kernel I/O APIC; no EOI register.
    #[default]
    V11 = 0x11,
    /// 0x20: ICH-style I/O APIC with the EOI register at 0x40 (QEMU's default).
    V20 = 0x20,
}

impl TryFrom<u8> for IoapicVersion {
    type Error = InvalidValue;
    fn try_from(v: u8) -> Result<Self, InvalidValue> {
        match v {
            0x11 => Ok(IoapicVersion::V11),
            0x20 => Ok(IoapicVersion::V20),
            _ => Err(InvalidValue(v as u64)),
        }
    }
}

impl From<IoapicVersion> for u8 {
    fn from(v: IoapicVersion) -> u8 {
        v as u8
    }
}

/// What happens to an edge that arrives on a masked pin.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum MaskedEdge {
    /// KVM: the edge is recorded (KVM's `irr` without `irr_delivered`, here
    /// [`IoapicState::pending_edge`]) while the line stays asserted, but an
    /// unmask does **not** deliver it; KVM only delivers it when the state is
    /// written back (`KVM_SET_IRQCHIP`, here [`Ioapic::restore`]). A deassert
    /// forgets it.
    #[default]
    Latch,
    /// 82093AA datasheet (and QEMU): the edge is ignored.
    Drop,
}

/// Static configuration of an [`Ioapic`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct IoapicConfig {
    /// Version register value (and whether the EOI register exists).
    pub version: IoapicVersion,
    /// Masked-edge behaviour.
    pub masked_edge: MaskedEdge,
    /// Initial I/O APIC ID (bits 3:0 are used).
    pub id: u8,
}

impl IoapicConfig {
    /// Version 0x11, [`MaskedEdge::Latch`], ID 0: KVM's in-kernel I/O APIC.
    pub const DEFAULT: IoapicConfig = IoapicConfig {
        version: IoapicVersion::V11,
        masked_edge: MaskedEdge::Latch,
        id: 0,
    };
}

/// The mutable state of an [`Ioapic`], as plain data (for snapshots and for
/// other modules that inspect it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct IoapicState<const PINS: usize = 24> {
    /// The redirection table, remote IRR included.
    pub entries: [RedirectionEntry; PINS],
    /// Electrical level of each pin (before polarity).
    pub line: PinSet,
    /// Edges that arrived while masked and were not delivered
    /// ([`MaskedEdge::Latch`]; KVM's `irr & !irr_delivered` for edge pins).
    pub pending_edge: PinSet,
    /// Successive EOIs that found the line still asserted, per pin.
    pub eoi_count: [u16; PINS],
    /// IOREGSEL.
    pub ioregsel: u8,
    /// I/O APIC ID (4 bits).
    pub id: u8,
}

/// A model of one I/O APIC with `PINS` redirection entries (KVM: 24).
///
/// # Call order
///
/// The VMM calls in from its MMIO exit handler, its device models and its EOI
/// path, one call at a time (wrap it in a lock to share it), and acts on each
/// returned [`IoapicEffects`] as its documentation says before the affected
/// vCPUs next enter the guest.
///
/// `PINS` must be 1..=240; other values fail to compile.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Ioapic<const PINS: usize = 24> {
    config: IoapicConfig,
    entries: [RedirectionEntry; PINS],
    line: PinSet,
    pending_edge: PinSet,
    eoi_count: [u16; PINS],
    ioregsel: u8,
    id: u8,
}

impl<const PINS: usize> Default for Ioapic<PINS> {
    fn default() -> Self {
        Self::new(IoapicConfig::DEFAULT)
    }
}

impl<const PINS: usize> Ioapic<PINS> {
    const PINS_OK: () = assert!(
        PINS >= 1 && PINS <= 240,
        "Ioapic<PINS>: PINS must be 1..=240"
    );

    /// A reset I/O APIC: every entry masked, every line low, IOREGSEL 0.
    pub const fn new(config: IoapicConfig) -> Self {
        #[allow(clippy::let_unit_value)]
        let () = Self::PINS_OK;
        Ioapic {
            config,
            entries: [RedirectionEntry::RESET; PINS],
            line: PinSet::EMPTY,
            pending_edge: PinSet::EMPTY,
            eoi_count: [0; PINS],
            ioregsel: 0,
            id: config.id & 0xf,
        }
    }

    /// The configuration this I/O APIC was built with.
    #[inline]
    pub fn config(&self) -> &IoapicConfig {
        &self.config
    }

    /// Number of pins (`PINS`).
    #[inline]
    pub const fn pins(&self) -> usize {
        PINS
    }

    /// The redirection table.
    #[inline]
    pub fn entries(&self) -> &[RedirectionEntry; PINS] {
        &self.entries
    }

    /// One redirection entry; `None` for a pin out of range.
    #[inline]
    pub fn entry(&self, pin: Pin) -> Option<RedirectionEntry> {
        self.entries.get(pin.index()).copied()
    }

    /// The pin's electrical level as last set by [`Ioapic::set_line`]
    /// (`false` for a pin out of range).
    #[inline]
    pub fn line(&self, pin: Pin) -> bool {
        pin.index() < PINS && self.line.contains(pin)
    }

    /// Whether the pin is asserted: its level with the entry's polarity
    /// applied (`false` for a pin out of range).
    #[inline]
    pub fn asserted(&self, pin: Pin) -> bool {
        match self.entries.get(pin.index()) {
            Some(e) => self.line.contains(pin) != matches!(e.polarity(), Polarity::ActiveLow),
            None => false,
        }
    }

    /// The current IOREGSEL value.
    #[inline]
    pub fn ioregsel(&self) -> u8 {
        self.ioregsel
    }

    /// The current I/O APIC ID (4 bits).
    #[inline]
    pub fn id(&self) -> u8 {
        self.id
    }

    /// The interrupt the pin's entry sends now, or `None` for a reserved
    /// delivery mode (3, 6) or a pin out of range. For ExtInt the real vector
    /// comes from the 8259A; the entry's vector field is reported as is.
    #[inline]
    pub fn message(&self, pin: Pin) -> Option<InterruptMessage> {
        self.entry(pin)?.message()
    }

    /// The MSI address/data a split-irqchip VMM installs as the pin's GSI route
    /// (`KVM_SET_GSI_ROUTING`): level entries get the trigger and assert bits,
    /// destination bits 14:8 go to address bits 11:5 (extended destination ID).
    ///
    /// The route is returned for masked entries too: masking is enforced by
    /// this model never delivering a masked pin, so the VMM may keep the route
    /// installed (QEMU skips updating masked routes; either is correct).
    /// `None` for a reserved delivery mode or a pin out of range.
    #[inline]
    pub fn msi_route(&self, pin: Pin) -> Option<Msi> {
        Some(Msi::from_message(&self.message(pin)?))
    }

    /// A copy of the mutable state.
    pub fn state(&self) -> IoapicState<PINS> {
        IoapicState {
            entries: self.entries,
            line: self.line,
            pending_edge: self.pending_edge,
            eoi_count: self.eoi_count,
            ioregsel: self.ioregsel,
            id: self.id,
        }
    }

    /// Replaces the state (host side, like `KVM_SET_IRQCHIP`), then re-injects
    /// what is pending as KVM's `kvm_ioapic_inject_all` does: asserted level
    /// pins with remote IRR clear and latched edges of unmasked pins are
    /// delivered. Remote IRR is taken from `state` (cleared on edge entries),
    /// the ID is cut to 4 bits, bits above `PINS` in the pin sets are dropped,
    /// latched edges are dropped under [`MaskedEdge::Drop`].
    ///
    /// Every vCPU must rescan (`Rescan::All`) and a split-irqchip VMM must
    /// re-install every pin's route (`route_changed` cannot say "all").
    pub fn restore(&mut self, state: &IoapicState<PINS>) -> IoapicEffects {
        self.entries = state.entries;
        self.line = PinSet::EMPTY;
        self.pending_edge = PinSet::EMPTY;
        for i in 0..PINS {
            let pin = Pin::new(i as u8);
            let e = self.entries[i];
            if !e.is_level() {
                self.entries[i] = e.with_remote_irr(false);
            }
            self.line.set(pin, state.line.contains(pin));
            if self.config.masked_edge == MaskedEdge::Latch {
                self.pending_edge.set(pin, state.pending_edge.contains(pin));
            }
        }
        self.eoi_count = state.eoi_count;
        self.ioregsel = state.ioregsel;
        self.id = state.id & 0xf;

        let mut actions = IoapicEffects {
            rescan: Rescan::All,
            ..IoapicEffects::NONE
        };
        for i in 0..PINS {
            let pin = Pin::new(i as u8);
            let e = self.entries[i];
            if e.is_level() {
                if self.asserted(pin) {
                    self.service(i, &mut actions);
                }
            } else if self.pending_edge.contains(pin) && !e.masked() {
                self.service(i, &mut actions);
            }
        }
        actions
    }

    /// Guest MMIO read at `offset` from the I/O APIC base, `size` bytes. Never
    /// panics; see the module docs for odd sizes and offsets. Reads have no
    /// side effects.
    pub fn mmio_read(&mut self, offset: u64, size: u32) -> u64 {
        let reg = match offset % MMIO_LEN {
            IOREGSEL => self.ioregsel as u32,
            IOWIN => self.read_indirect(),
            _ => 0,
        };
        match size {
            1 => (reg & 0xff) as u64,
            2 => (reg & 0xffff) as u64,
            4 | 8 => reg as u64,
            _ => 0,
        }
    }

    fn read_indirect(&self) -> u32 {
        match self.ioregsel {
            REG_ID | REG_ARB => (self.id as u32) << 24,
            REG_VERSION => ((PINS as u32 - 1) & 0xff) << 16 | self.config.version as u32,
            sel => match Self::redir_index(sel) {
                Some((i, high)) => {
                    let bits = self.entries[i].bits();
                    if high {
                        (bits >> 32) as u32
                    } else {
                        bits as u32
                    }
                }
                None => u32::MAX,
            },
        }
    }

    /// The entry index and half (`true` = high) that IOREGSEL `sel` selects.
    #[inline]
    fn redir_index(sel: u8) -> Option<(usize, bool)> {
        let i = sel.checked_sub(REG_REDTBL_BASE)? as usize / 2;
        (i < PINS).then_some((i, sel & 1 == 1))
    }

    /// Guest MMIO write at `offset` from the I/O APIC base, `size` bytes. Never
    /// panics; see the module docs for odd sizes and offsets.
    pub fn mmio_write(&mut self, offset: u64, size: u32, value: u64) -> IoapicEffects {
        let data = match size {
            1 => value as u8 as u32,
            2 => value as u16 as u32,
            4 | 8 => value as u32,
            _ => return IoapicEffects::NONE,
        };
        match offset % MMIO_LEN {
            IOREGSEL => {
                self.ioregsel = data as u8;
                IoapicEffects::NONE
            }
            IOWIN => self.write_indirect(data),
            IOEOI if self.config.version == IoapicVersion::V20 => self.eoi(Vector::new(data as u8)),
            _ => IoapicEffects::NONE,
        }
    }

    fn write_indirect(&mut self, data: u32) -> IoapicEffects {
        match self.ioregsel {
            REG_ID => {
                self.id = ((data >> 24) & 0xf) as u8;
                IoapicEffects::NONE
            }
            REG_VERSION | REG_ARB => IoapicEffects::NONE,
            sel => match Self::redir_index(sel) {
                Some((i, high)) => {
                    let old = self.entries[i].bits();
                    let raw = if high {
                        (old & 0xffff_ffff) | (data as u64) << 32
                    } else {
                        (old & !0xffff_ffff) | data as u64
                    };
                    self.store_entry(i, raw)
                }
                None => IoapicEffects::NONE,
            },
        }
    }

    /// Host-side write of a whole redirection entry, with the semantics of a
    /// guest writing both halves at once: delivery status and remote IRR keep
    /// their values, a switch to edge clears remote IRR, the old and new
    /// targets are rescanned, and an asserted level pin that is now deliverable
    /// (e.g. just unmasked) is delivered. Out-of-range pins are ignored.
    pub fn write_entry(&mut self, pin: Pin, value: u64) -> IoapicEffects {
        if pin.index() >= PINS {
            return IoapicEffects::NONE;
        }
        self.store_entry(pin.index(), value)
    }

    fn store_entry(&mut self, i: usize, raw: u64) -> IoapicEffects {
        let pin = Pin::new(i as u8);
        let old = self.entries[i];
        let mut new = RedirectionEntry(
            (raw & !RedirectionEntry::READ_ONLY) | (old.bits() & RedirectionEntry::READ_ONLY),
        );
        if !new.is_level() {
            new = new.with_remote_irr(false);
        }
        self.entries[i] = new;

        let mut actions = IoapicEffects {
            route_changed: Some(pin),
            rescan: Self::rescan_for(old, new),
            ..IoapicEffects::NONE
        };
        if new.is_level() && self.asserted(pin) {
            self.service(i, &mut actions);
        }
        actions
    }

    fn rescan_for(old: RedirectionEntry, new: RedirectionEntry) -> Rescan {
        // Delivery mode 0 is Fixed.
        if old.delivery_mode_bits() != 0 || new.delivery_mode_bits() != 0 {
            return Rescan::All;
        }
        let (o, n) = (old.destination(), new.destination());
        Rescan::Targets {
            old: (o != n).then_some(o),
            new: Some(n),
        }
    }

    /// Sets the pin's electrical level; the entry's polarity decides whether
    /// that asserts it. Edge entries deliver on a rising (asserting) edge only;
    /// level entries deliver whenever asserted, unmasked and remote IRR is
    /// clear, and then set remote IRR. Out-of-range pins are ignored.
    ///
    /// Every line is low after reset. A pin wired active low (PCI INTx) idles
    /// high: the VMM MUST raise it before the guest programs the entry active
    /// low, or the entry is asserted as soon as it is unmasked. Unlike
    /// `kvm_set_irq`, whose level is the logical assertion (KVM ignores the
    /// polarity bit), `level` here is electrical; a VMM with logical levels
    /// passes `asserted != (entry polarity == ActiveLow)`.
    pub fn set_line(&mut self, pin: Pin, level: bool) -> IoapicEffects {
        let i = pin.index();
        if i >= PINS {
            return IoapicEffects::NONE;
        }
        let was_asserted = self.asserted(pin);
        self.line.set(pin, level);
        let e = self.entries[i];
        let mut actions = IoapicEffects::NONE;
        if !self.asserted(pin) {
            // KVM clears the pin's `irr`, which also forgets a latched edge.
            self.pending_edge.remove(pin);
        } else if e.is_level() {
            // KVM retries every assert of a level pin (it only succeeds when
            // remote IRR is clear and the entry unmasked).
            self.service(i, &mut actions);
        } else if !was_asserted {
            if e.masked() {
                if self.config.masked_edge == MaskedEdge::Latch {
                    self.pending_edge.insert(pin);
                }
            } else {
                self.service(i, &mut actions);
            }
        }
        actions
    }

    /// A broadcast EOI of `vector` from a local APIC (or KVM's
    /// `KVM_EXIT_IOAPIC_EOI` with the split irqchip). The caller MUST send only
    /// EOIs of level-triggered vectors (TMR set, no directed EOI), as the LAPIC
    /// broadcasts only those.
    ///
    /// For every level entry with this vector: remote IRR is cleared; if the
    /// entry is unmasked and its line still asserted it is re-delivered, except
    /// that the [`SUCCESSIVE_IRQ_MAX_COUNT`]th such EOI in a row puts the pin
    /// in `deliver_later` instead and restarts the count; an EOI that finds the
    /// line low (or the entry masked) restarts the count.
    pub fn eoi(&mut self, vector: Vector) -> IoapicEffects {
        let mut actions = IoapicEffects::NONE;
        for i in 0..PINS {
            let e = self.entries[i];
            if e.vector() != vector || !e.is_level() {
                continue;
            }
            let pin = Pin::new(i as u8);
            self.entries[i] = e.with_remote_irr(false);
            if !e.masked() && self.asserted(pin) {
                self.eoi_count[i] = self.eoi_count[i].saturating_add(1);
                if self.eoi_count[i] >= SUCCESSIVE_IRQ_MAX_COUNT {
                    self.eoi_count[i] = 0;
                    actions.deliver_later.insert(pin);
                } else {
                    self.service(i, &mut actions);
                }
            } else {
                self.eoi_count[i] = 0;
            }
        }
        actions
    }

    /// The VMM's timer for a throttled pin (`deliver_later`) fired: deliver it
    /// if it is still a level entry, asserted, unmasked and remote IRR is
    /// clear (KVM's `kvm_ioapic_eoi_inject_work`). Otherwise nothing.
    pub fn deliver_later_elapsed(&mut self, pin: Pin) -> IoapicEffects {
        let i = pin.index();
        let mut actions = IoapicEffects::NONE;
        if i < PINS && self.entries[i].is_level() && self.asserted(pin) {
            self.service(i, &mut actions);
        }
        actions
    }

    /// Delivers the pin if its entry allows it (KVM's `ioapic_service`):
    /// unmasked, and for level entries remote IRR clear. Sets remote IRR for
    /// level entries. A reserved delivery mode delivers nothing and sets no
    /// remote IRR (KVM: no LAPIC accepts it, `ret == 0`); an edge is consumed.
    fn service(&mut self, i: usize, actions: &mut IoapicEffects) -> bool {
        let e = self.entries[i];
        let pin = Pin::new(i as u8);
        if e.masked() || (e.is_level() && e.remote_irr()) {
            return false;
        }
        self.pending_edge.remove(pin);
        if e.delivery_mode().is_err() {
            return false;
        }
        if e.is_level() {
            self.entries[i] = e.with_remote_irr(true);
        }
        actions.deliver.insert(pin);
        true
    }
}

// ---- snapshot hook (used by src/snapshot; keep additive) -------------------

impl<const PINS: usize> Ioapic<PINS> {
    /// Snapshot restore: replaces the configuration and the state verbatim,
    /// without re-injecting anything (unlike [`Ioapic::restore`], which mirrors
    /// `KVM_SET_IRQCHIP`). The caller has validated `state`.
    pub(crate) fn restore_exact(&mut self, config: IoapicConfig, state: &IoapicState<PINS>) {
        self.config = config;
        self.entries = state.entries;
        self.line = state.line;
        self.pending_edge = state.pending_edge;
        self.eoi_count = state.eoi_count;
        self.ioregsel = state.ioregsel;
        self.id = state.id;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{DeliveryMode, Destination, DestinationMode, TriggerMode};

    type Io = Ioapic<24>;

    fn p(n: u8) -> Pin {
        Pin::new(n)
    }
    fn v(n: u8) -> Vector {
        Vector::new(n)
    }
    fn level(vec: u8, dest: u32) -> u64 {
        RedirectionEntry::fixed(v(vec), TriggerMode::Level, dest).bits()
    }
    fn edge(vec: u8, dest: u32) -> u64 {
        RedirectionEntry::fixed(v(vec), TriggerMode::Edge, dest).bits()
    }
    fn only(pin: u8) -> PinSet {
        let mut s = PinSet::EMPTY;
        s.insert(p(pin));
        s
    }
    fn sel_write(io: &mut Io, reg: u8, val: u32) -> IoapicEffects {
        assert!(io.mmio_write(IOREGSEL, 4, reg as u64).is_empty());
        io.mmio_write(IOWIN, 4, val as u64)
    }
    fn sel_read(io: &mut Io, reg: u8) -> u32 {
        let _ = io.mmio_write(IOREGSEL, 4, reg as u64);
        io.mmio_read(IOWIN, 4) as u32
    }
    /// The guest writes the high half, then the low half (Linux's order).
    fn guest_write(io: &mut Io, pin: u8, bits: u64) -> IoapicEffects {
        let reg = REG_REDTBL_BASE + 2 * pin;
        let mut a = sel_write(io, reg + 1, (bits >> 32) as u32);
        a.merge(sel_write(io, reg, bits as u32));
        a
    }
    fn rirr(io: &Io, pin: u8) -> bool {
        io.entry(p(pin)).unwrap().remote_irr()
    }
    fn phys(id: u32) -> Destination {
        Destination {
            id,
            mode: DestinationMode::Physical,
        }
    }
    fn logical(id: u32) -> Destination {
        Destination {
            id,
            mode: DestinationMode::Logical,
        }
    }
    /// A level pin 3, vector 0x40, delivered once: remote IRR set.
    fn level_in_service() -> Io {
        let mut io = Io::default();
        let _ = io.write_entry(p(3), level(0x40, 1));
        assert_eq!(io.set_line(p(3), true).deliver, only(3));
        io
    }

    // ---- reset and MMIO decoding ----

    #[test]
    fn reset_masks_every_entry_and_lowers_every_line() {
        let io = Io::default();
        assert_eq!(io.pins(), 24);
        for (i, e) in io.entries().iter().enumerate() {
            assert_eq!(*e, RedirectionEntry::RESET);
            assert!(!io.line(p(i as u8)));
        }
        assert_eq!(io.config(), &IoapicConfig::default());
    }

    #[test]
    fn ioregsel_is_8_bits_and_reads_back() {
        let mut io = Io::default();
        let _ = io.mmio_write(IOREGSEL, 4, 0xdead_be12);
        assert_eq!(io.ioregsel(), 0x12);
        assert_eq!(io.mmio_read(IOREGSEL, 4), 0x12);
    }

    #[test]
    fn id_register_bits_24_to_27_are_writable_only() {
        let mut io = Io::new(IoapicConfig {
            id: 0x35,
            ..IoapicConfig::DEFAULT
        });
        assert_eq!(sel_read(&mut io, REG_ID), 0x5 << 24);
        let _ = sel_write(&mut io, REG_ID, 0xffff_ffff);
        assert_eq!(sel_read(&mut io, REG_ID), 0x0f00_0000);
        assert_eq!(io.id(), 0xf);
    }

    #[test]
    fn version_register_reports_0x11_and_pins_minus_one() {
        let mut io = Io::default();
        assert_eq!(sel_read(&mut io, REG_VERSION), 0x0017_0011);
        let mut small = Ioapic::<8>::default();
        let _ = small.mmio_write(IOREGSEL, 4, 1);
        assert_eq!(small.mmio_read(IOWIN, 4), 0x0007_0011);
    }

    #[test]
    fn version_0x20_is_selectable() {
        let mut io = Io::new(IoapicConfig {
            version: IoapicVersion::V20,
            ..IoapicConfig::DEFAULT
        });
        assert_eq!(sel_read(&mut io, REG_VERSION), 0x0017_0020);
        assert_eq!(IoapicVersion::try_from(0x20), Ok(IoapicVersion::V20));
        assert_eq!(IoapicVersion::try_from(0x11), Ok(IoapicVersion::V11));
        assert_eq!(IoapicVersion::try_from(0x12), Err(InvalidValue(0x12)));
        assert_eq!(u8::from(IoapicVersion::V20), 0x20);
    }

    #[test]
    fn version_and_arbitration_writes_are_ignored() {
        let mut io = Io::default();
        assert!(sel_write(&mut io, REG_VERSION, 0xffff_ffff).is_empty());
        assert!(sel_write(&mut io, REG_ARB, 0xffff_ffff).is_empty());
        assert_eq!(sel_read(&mut io, REG_VERSION), 0x0017_0011);
        assert_eq!(io.id(), 0);
    }

    #[test]
    fn arbitration_register_reads_the_id_as_kvm_does() {
        let mut io = Io::default();
        let _ = sel_write(&mut io, REG_ID, 0x0a00_0000);
        assert_eq!(sel_read(&mut io, REG_ARB), 0x0a00_0000);
    }

    #[test]
    fn redirection_registers_select_low_and_high_halves() {
        let mut io = Io::default();
        let bits = 0xab00_0000_0000_0000 | level(0x41, 0);
        let _ = io.write_entry(p(5), bits);
        assert_eq!(sel_read(&mut io, 0x10 + 10), bits as u32);
        assert_eq!(sel_read(&mut io, 0x11 + 10), (bits >> 32) as u32);
        let _ = sel_write(&mut io, 0x11 + 10, 0x0200_0000);
        assert_eq!(io.entry(p(5)).unwrap().destination_id(), 2);
        assert_eq!(io.entry(p(5)).unwrap().vector(), v(0x41));
    }

    #[test]
    fn unimplemented_registers_and_entries_read_all_ones() {
        let mut io = Io::default();
        for reg in [3u8, 4, 0x0f, 0x10 + 48, 0x11 + 48, 0xfe, 0xff] {
            assert_eq!(sel_read(&mut io, reg), 0xffff_ffff, "reg {reg:#x}");
            assert!(sel_write(&mut io, reg, 0).is_empty());
        }
    }

    #[test]
    fn unimplemented_mmio_offsets_read_zero_and_ignore_writes() {
        let mut io = Io::default();
        let _ = io.mmio_write(IOREGSEL, 4, 0x10);
        let before = io.clone();
        for off in [0x04u64, 0x08, 0x11, 0x13, 0x20, 0x30, 0x40, 0xf0] {
            assert_eq!(io.mmio_read(off, 4), 0, "offset {off:#x}");
            assert!(io.mmio_write(off, 4, u64::MAX).is_empty());
        }
        assert_eq!(io, before);
    }

    #[test]
    fn unaligned_offsets_are_not_decoded() {
        let mut io = Io::default();
        assert!(io.mmio_write(0x01, 1, 0x12).is_empty());
        assert_eq!(io.ioregsel(), 0);
        let _ = io.mmio_write(IOREGSEL, 4, 0x10);
        assert_eq!(io.mmio_read(0x12, 2), 0);
    }

    #[test]
    fn offsets_are_decoded_modulo_256() {
        let mut io = Io::default();
        let _ = io.mmio_write(0x100 + IOREGSEL, 4, 1);
        assert_eq!(io.ioregsel(), 1);
        assert_eq!(io.mmio_read(0xf10, 4), 0x0017_0011);
    }

    #[test]
    fn narrow_iowin_write_zero_extends_to_32_bits() {
        let mut io = Io::default();
        let _ = io.write_entry(p(0), 0xffff_ffff_0001_0000 | 0x00ff);
        let _ = io.mmio_write(IOREGSEL, 1, 0x11);
        let _ = io.mmio_write(IOWIN, 1, 0xab);
        assert_eq!(io.entry(p(0)).unwrap().bits() >> 32, 0xab);
        let _ = io.mmio_write(IOREGSEL, 2, 0x10);
        let _ = io.mmio_write(IOWIN, 2, 0x1_0031);
        // 16 bits: the mask bit (16) is cut, so the entry is unmasked.
        assert_eq!(io.entry(p(0)).unwrap().bits() as u32, 0x31);
    }

    #[test]
    fn eight_byte_accesses_use_the_low_32_bits() {
        let mut io = Io::default();
        let _ = io.mmio_write(IOREGSEL, 8, 0xffff_ffff_0000_0011);
        assert_eq!(io.ioregsel(), 0x11);
        let _ = io.mmio_write(IOWIN, 8, 0x1234_5678_0300_0000);
        assert_eq!(io.entry(p(0)).unwrap().destination_id(), 3);
        assert_eq!(io.entry(p(0)).unwrap().bits() >> 32, 0x0300_0000);
        assert_eq!(io.mmio_read(IOWIN, 8), 0x0300_0000);
    }

    #[test]
    fn narrow_reads_return_the_low_bytes() {
        let mut io = Io::default();
        let _ = io.mmio_write(IOREGSEL, 4, 1);
        assert_eq!(io.mmio_read(IOWIN, 1), 0x11);
        assert_eq!(io.mmio_read(IOWIN, 2), 0x0011);
        assert_eq!(io.mmio_read(IOWIN, 4), 0x0017_0011);
    }

    #[test]
    fn unsupported_sizes_read_zero_and_write_nothing() {
        let mut io = Io::default();
        let _ = io.mmio_write(IOREGSEL, 4, 1);
        for size in [0u32, 3, 5, 7, 16, u32::MAX] {
            assert_eq!(io.mmio_read(IOWIN, size), 0);
            assert!(io.mmio_write(IOREGSEL, size, 0x10).is_empty());
            assert_eq!(io.ioregsel(), 1);
        }
    }

    // ---- read-only fields ----

    #[test]
    fn guest_writes_preserve_remote_irr_and_delivery_status() {
        let mut io = level_in_service();
        // Try to clear remote IRR and set delivery status.
        let low = level(0x40, 1) as u32 | RedirectionEntry::DELIVERY_STATUS as u32;
        let _ = sel_write(
            &mut io,
            0x10 + 6,
            low & !(RedirectionEntry::REMOTE_IRR as u32),
        );
        assert!(rirr(&io, 3));
        assert!(!io.entry(p(3)).unwrap().delivery_status());
        // And cannot set remote IRR on an idle level entry.
        let _ = io.write_entry(p(4), level(0x41, 1) | RedirectionEntry::REMOTE_IRR);
        assert!(!rirr(&io, 4));
    }

    #[test]
    fn write_entry_preserves_read_only_bits() {
        let mut io = level_in_service();
        let _ = io.write_entry(p(3), level(0x40, 2));
        assert!(rirr(&io, 3));
        let _ = io.write_entry(p(3), level(0x40, 2) | RedirectionEntry::DELIVERY_STATUS);
        assert!(!io.entry(p(3)).unwrap().delivery_status());
    }

    #[test]
    fn switching_an_entry_to_edge_clears_remote_irr() {
        let mut io = level_in_service();
        let _ = sel_write(&mut io, 0x10 + 6, edge(0x40, 1) as u32);
        assert!(!rirr(&io, 3));
        // Back to level (Linux's EOI emulation: mask, edge, level, unmask).
        let masked = RedirectionEntry(level(0x40, 1)).with_mask(true).bits();
        let _ = io.write_entry(p(3), masked);
        assert!(!rirr(&io, 3));
        let a = io.write_entry(p(3), level(0x40, 1));
        assert_eq!(
            a.deliver,
            only(3),
            "line still high: re-delivered on unmask"
        );
        assert!(rirr(&io, 3));
    }

    // ---- pin lines ----

    #[test]
    fn edge_rising_edge_delivers() {
        let mut io = Io::default();
        let _ = io.write_entry(p(1), edge(0x30, 0));
        let a = io.set_line(p(1), true);
        assert_eq!(a.deliver, only(1));
        assert!(!rirr(&io, 1), "edge deliveries do not set remote IRR");
        assert!(io.set_line(p(1), false).is_empty());
        assert_eq!(io.set_line(p(1), true).deliver, only(1));
    }

    #[test]
    fn edge_repeated_asserts_without_deassert_do_not_deliver() {
        let mut io = Io::default();
        let _ = io.write_entry(p(1), edge(0x30, 0));
        assert_eq!(io.set_line(p(1), true).deliver, only(1));
        assert!(io.set_line(p(1), true).is_empty());
        assert!(io.set_line(p(1), true).is_empty());
    }

    #[test]
    fn active_low_pin_asserts_on_low_level() {
        let mut io = Io::default();
        let e = RedirectionEntry(edge(0x30, 0) | RedirectionEntry::POLARITY_LOW);
        let _ = io.write_entry(p(2), e.bits());
        assert!(io.set_line(p(2), true).is_empty());
        assert!(!io.asserted(p(2)));
        assert_eq!(io.set_line(p(2), false).deliver, only(2));
        assert!(io.asserted(p(2)));
        assert!(!io.line(p(2)));
        // Active-low level entry: electrically low means asserted, so the VMM
        // must raise an idle active-low line before the guest unmasks it.
        let l = RedirectionEntry(level(0x31, 0) | RedirectionEntry::POLARITY_LOW);
        let _ = io.set_line(p(4), true);
        assert!(io.write_entry(p(4), l.bits()).deliver.is_empty());
        assert_eq!(io.set_line(p(4), false).deliver, only(4));
        assert!(rirr(&io, 4));
        // A line left low at reset is asserted as soon as it is programmed.
        assert_eq!(io.write_entry(p(5), l.bits()).deliver, only(5));
    }

    #[test]
    fn level_line_delivers_when_asserted_unmasked_and_remote_irr_clear() {
        let mut io = Io::default();
        let _ = io.write_entry(p(3), level(0x40, 1));
        let a = io.set_line(p(3), true);
        assert_eq!(a.deliver, only(3));
        assert_eq!(a.rescan, Rescan::None);
        assert_eq!(a.route_changed, None);
        let m = io.message(p(3)).unwrap();
        assert_eq!(m.vector, v(0x40));
        assert_eq!(m.trigger, TriggerMode::Level);
    }

    #[test]
    fn level_delivery_sets_remote_irr() {
        let io = level_in_service();
        assert!(rirr(&io, 3));
    }

    #[test]
    fn level_line_coalesces_while_remote_irr_is_set() {
        let mut io = level_in_service();
        assert!(io.set_line(p(3), true).is_empty());
        assert!(io.set_line(p(3), false).is_empty());
        assert!(io.set_line(p(3), true).is_empty());
        assert!(rirr(&io, 3));
    }

    #[test]
    fn masked_level_line_delivers_on_unmask() {
        let mut io = Io::default();
        let masked = RedirectionEntry(level(0x40, 1)).with_mask(true).bits();
        let _ = io.write_entry(p(3), masked);
        assert!(io.set_line(p(3), true).is_empty());
        assert!(!rirr(&io, 3));
        let a = guest_write(&mut io, 3, level(0x40, 1));
        assert_eq!(a.deliver, only(3));
        assert!(rirr(&io, 3));
    }

    #[test]
    fn masked_level_line_that_dropped_does_not_deliver_on_unmask() {
        let mut io = Io::default();
        let masked = RedirectionEntry(level(0x40, 1)).with_mask(true).bits();
        let _ = io.write_entry(p(3), masked);
        let _ = io.set_line(p(3), true);
        let _ = io.set_line(p(3), false);
        assert!(io.write_entry(p(3), level(0x40, 1)).deliver.is_empty());
    }

    #[test]
    fn any_write_to_an_asserted_deliverable_level_entry_delivers() {
        // KVM: ioapic_write_indirect services a level entry whose irr is set.
        let mut io = Io::default();
        let _ = io.write_entry(p(3), edge(0x40, 1));
        let _ = io.set_line(p(3), true);
        // Edge -> level while the line is high.
        assert_eq!(io.write_entry(p(3), level(0x40, 1)).deliver, only(3));
    }

    #[test]
    fn masked_edge_latch_is_recorded_but_not_delivered_on_unmask() {
        let mut io = Io::default();
        assert_eq!(io.config().masked_edge, MaskedEdge::Latch);
        let masked = RedirectionEntry(edge(0x30, 0)).with_mask(true).bits();
        let _ = io.write_entry(p(1), masked);
        assert!(io.set_line(p(1), true).is_empty());
        assert!(io.state().pending_edge.contains(p(1)));
        // KVM only services level entries on a redirection write.
        assert!(io.write_entry(p(1), edge(0x30, 0)).deliver.is_empty());
        assert!(io.state().pending_edge.contains(p(1)));
        // A repeated assert is no new edge.
        assert!(io.set_line(p(1), true).is_empty());
        // KVM_SET_IRQCHIP re-injects it.
        let st = io.state();
        assert_eq!(io.restore(&st).deliver, only(1));
        assert!(!io.state().pending_edge.contains(p(1)));
    }

    #[test]
    fn latched_edge_is_forgotten_when_the_line_drops() {
        let mut io = Io::default();
        let masked = RedirectionEntry(edge(0x30, 0)).with_mask(true).bits();
        let _ = io.write_entry(p(1), masked);
        let _ = io.set_line(p(1), true);
        let _ = io.set_line(p(1), false);
        assert!(io.state().pending_edge.is_empty());
    }

    #[test]
    fn masked_edge_drop_forgets_the_edge() {
        let mut io = Io::new(IoapicConfig {
            masked_edge: MaskedEdge::Drop,
            ..IoapicConfig::DEFAULT
        });
        let masked = RedirectionEntry(edge(0x30, 0)).with_mask(true).bits();
        let _ = io.write_entry(p(1), masked);
        assert!(io.set_line(p(1), true).is_empty());
        assert!(io.state().pending_edge.is_empty());
        assert!(io.write_entry(p(1), edge(0x30, 0)).deliver.is_empty());
        let st = io.state();
        assert!(io.restore(&st).deliver.is_empty());
        // Only a new rising edge delivers.
        let _ = io.set_line(p(1), false);
        assert_eq!(io.set_line(p(1), true).deliver, only(1));
    }

    #[test]
    fn polarity_change_alone_does_not_make_an_edge() {
        let mut io = Io::default();
        let _ = io.write_entry(p(1), edge(0x30, 0));
        let low = RedirectionEntry(edge(0x30, 0) | RedirectionEntry::POLARITY_LOW);
        assert!(io.write_entry(p(1), low.bits()).deliver.is_empty());
        assert!(io.asserted(p(1)));
    }

    // ---- EOI ----

    #[test]
    fn eoi_clears_remote_irr_of_level_entries_with_that_vector() {
        let mut io = level_in_service();
        let _ = io.write_entry(p(7), level(0x40, 2));
        let _ = io.set_line(p(7), true);
        let _ = io.set_line(p(3), false);
        let _ = io.set_line(p(7), false);
        assert!(rirr(&io, 3) && rirr(&io, 7));
        assert!(io.eoi(v(0x40)).is_empty());
        assert!(!rirr(&io, 3) && !rirr(&io, 7));
    }

    #[test]
    fn eoi_of_another_vector_leaves_remote_irr_set() {
        let mut io = level_in_service();
        assert!(io.eoi(v(0x41)).is_empty());
        assert!(rirr(&io, 3));
    }

    #[test]
    fn eoi_clears_remote_irr_of_masked_entries() {
        let mut io = level_in_service();
        let masked = RedirectionEntry(level(0x40, 1)).with_mask(true).bits();
        let _ = io.write_entry(p(3), masked);
        assert!(io.eoi(v(0x40)).deliver.is_empty());
        assert!(!rirr(&io, 3));
        // Unmasking with the line still high delivers.
        assert_eq!(io.write_entry(p(3), level(0x40, 1)).deliver, only(3));
    }

    #[test]
    fn eoi_redelivers_when_line_still_asserted_and_unmasked() {
        let mut io = level_in_service();
        let a = io.eoi(v(0x40));
        assert_eq!(a.deliver, only(3));
        assert!(a.deliver_later.is_empty());
        assert!(rirr(&io, 3));
    }

    #[test]
    fn eoi_does_not_redeliver_a_deasserted_line() {
        let mut io = level_in_service();
        let _ = io.set_line(p(3), false);
        assert!(io.eoi(v(0x40)).is_empty());
        assert!(!rirr(&io, 3));
    }

    #[test]
    fn eoi_does_not_touch_edge_entries_sharing_the_vector() {
        // KVM would re-deliver pin 1 here (its EOI loop services any entry
        // with the vector whose irr is set); the model only handles level.
        let mut io = level_in_service();
        let _ = io.write_entry(p(1), edge(0x40, 1));
        assert_eq!(io.set_line(p(1), true).deliver, only(1));
        let a = io.eoi(v(0x40));
        assert_eq!(a.deliver, only(3));
    }

    #[test]
    fn eoi_register_clears_remote_irr_on_version_0x20() {
        let mut io = Io::new(IoapicConfig {
            version: IoapicVersion::V20,
            ..IoapicConfig::DEFAULT
        });
        let _ = io.write_entry(p(3), level(0x40, 1));
        let _ = io.set_line(p(3), true);
        let _ = io.set_line(p(3), false);
        // Only bits 7:0 are the vector.
        let a = io.mmio_write(IOEOI, 4, 0xffff_ff40);
        assert!(a.is_empty());
        assert!(!rirr(&io, 3));
        // With the line high it re-delivers, like a broadcast EOI.
        let _ = io.set_line(p(3), true);
        assert_eq!(io.mmio_write(IOEOI, 4, 0x40).deliver, only(3));
        assert_eq!(io.mmio_read(IOEOI, 4), 0);
    }

    #[test]
    fn eoi_register_is_ignored_on_version_0x11() {
        let mut io = level_in_service();
        let _ = io.set_line(p(3), false);
        assert!(io.mmio_write(IOEOI, 4, 0x40).is_empty());
        assert!(rirr(&io, 3));
    }

    #[test]
    fn eoi_storm_defers_the_10000th_successive_redelivery() {
        let mut io = level_in_service();
        for k in 1..SUCCESSIVE_IRQ_MAX_COUNT {
            let a = io.eoi(v(0x40));
            assert_eq!(a.deliver, only(3), "EOI {k}");
            assert!(a.deliver_later.is_empty());
        }
        let a = io.eoi(v(0x40));
        assert!(a.deliver.is_empty());
        assert_eq!(a.deliver_later, only(3));
        assert!(!rirr(&io, 3));
        assert_eq!(io.state().eoi_count[3], 0, "KVM restarts the count");
        // The timer fires: re-delivered.
        assert_eq!(io.deliver_later_elapsed(p(3)).deliver, only(3));
        assert!(rirr(&io, 3));
        // And the next 9,999 EOIs deliver immediately again.
        for _ in 1..SUCCESSIVE_IRQ_MAX_COUNT {
            assert_eq!(io.eoi(v(0x40)).deliver, only(3));
        }
        assert_eq!(io.eoi(v(0x40)).deliver_later, only(3));
    }

    #[test]
    fn eoi_storm_counter_restarts_when_an_eoi_finds_the_line_low() {
        let mut io = level_in_service();
        for _ in 0..5000 {
            assert_eq!(io.eoi(v(0x40)).deliver, only(3));
        }
        let _ = io.set_line(p(3), false);
        assert!(io.eoi(v(0x40)).is_empty());
        assert_eq!(io.state().eoi_count[3], 0);
        assert_eq!(io.set_line(p(3), true).deliver, only(3));
        for _ in 1..SUCCESSIVE_IRQ_MAX_COUNT {
            assert_eq!(io.eoi(v(0x40)).deliver, only(3));
        }
    }

    #[test]
    fn deliver_later_elapsed_does_nothing_unless_still_pending() {
        let mut io = level_in_service();
        // In service: remote IRR set.
        assert!(io.deliver_later_elapsed(p(3)).is_empty());
        let _ = io.set_line(p(3), false);
        let _ = io.eoi(v(0x40));
        // Deasserted.
        assert!(io.deliver_later_elapsed(p(3)).is_empty());
        // Masked.
        let _ = io.write_entry(
            p(3),
            RedirectionEntry(level(0x40, 1)).with_mask(true).bits(),
        );
        io.line.insert(p(3));
        assert!(io.deliver_later_elapsed(p(3)).is_empty());
        // Edge entries are never retried.
        let _ = io.write_entry(p(3), edge(0x40, 1));
        assert!(io.deliver_later_elapsed(p(3)).is_empty());
        assert!(io.deliver_later_elapsed(p(200)).is_empty());
    }

    #[test]
    fn reassert_during_the_deliver_later_window_delivers_immediately() {
        let mut io = level_in_service();
        io.eoi_count[3] = SUCCESSIVE_IRQ_MAX_COUNT - 1;
        assert_eq!(io.eoi(v(0x40)).deliver_later, only(3));
        // KVM services every assert of a level pin.
        assert_eq!(io.set_line(p(3), true).deliver, only(3));
        assert!(io.deliver_later_elapsed(p(3)).is_empty());
    }

    // ---- rescans and routes ----

    #[test]
    fn rescan_targets_old_and_new_destination_on_retarget() {
        let mut io = Io::default();
        let _ = io.write_entry(p(3), level(0x40, 1));
        let a = io.write_entry(p(3), level(0x40, 2));
        assert_eq!(
            a.rescan,
            Rescan::Targets {
                old: Some(phys(1)),
                new: Some(phys(2))
            }
        );
    }

    #[test]
    fn rescan_uses_old_destination_mode_for_old_destination() {
        // Same destination ID 1, physical -> logical. KVM decodes the old ID
        // with the new (logical) mode, so it never rescans APIC ID 1, which
        // may still intercept the vector. The model reports physical 1.
        let mut io = Io::default();
        let _ = io.write_entry(p(3), level(0x40, 1));
        let logical_entry = level(0x40, 1) | RedirectionEntry::LOGICAL;
        let a = guest_write(&mut io, 3, logical_entry);
        assert_eq!(
            a.rescan,
            Rescan::Targets {
                old: Some(phys(1)),
                new: Some(logical(1))
            }
        );
        assert_ne!(
            a.rescan,
            Rescan::Targets {
                old: Some(logical(1)),
                new: Some(logical(1))
            }
        );
    }

    #[test]
    fn rescan_old_destination_includes_the_extended_destination_id() {
        let mut io = Io::default();
        let _ = io.write_entry(p(3), level(0x40, 0x1_05));
        let a = io.write_entry(p(3), level(0x40, 0x05));
        assert_eq!(
            a.rescan,
            Rescan::Targets {
                old: Some(phys(0x105)),
                new: Some(phys(0x05))
            }
        );
    }

    #[test]
    fn rescan_same_destination_names_only_the_new_one() {
        let mut io = Io::default();
        let _ = io.write_entry(p(3), level(0x40, 1));
        let a = io.write_entry(p(3), level(0x41, 1));
        assert_eq!(
            a.rescan,
            Rescan::Targets {
                old: None,
                new: Some(phys(1))
            }
        );
    }

    #[test]
    fn rescan_all_when_old_or_new_delivery_mode_is_not_fixed() {
        let mut io = Io::default();
        let lowest = RedirectionEntry::new(
            v(0x40),
            DeliveryMode::LowestPriority,
            DestinationMode::Logical,
            Polarity::ActiveHigh,
            TriggerMode::Level,
            false,
            0xff,
        )
        .bits();
        let _ = io.write_entry(p(3), level(0x40, 1));
        assert_eq!(io.write_entry(p(3), lowest).rescan, Rescan::All);
        // Old mode lowest priority, new fixed: still all (KVM: targeted).
        assert_eq!(io.write_entry(p(3), level(0x40, 1)).rescan, Rescan::All);
        let nmi = RedirectionEntry(level(0x40, 1) | (DeliveryMode::Nmi as u64) << 8);
        assert_eq!(io.write_entry(p(3), nmi.bits()).rescan, Rescan::All);
        let reserved = RedirectionEntry(level(0x40, 1) | 3 << 8);
        assert_eq!(io.write_entry(p(3), reserved.bits()).rescan, Rescan::All);
    }

    #[test]
    fn every_redirection_write_reports_route_changed() {
        let mut io = Io::default();
        let high = sel_write(&mut io, 0x11 + 2 * 9, 0x0100_0000);
        assert_eq!(high.route_changed, Some(p(9)));
        assert!(!high.rescan.is_none());
        let low = sel_write(&mut io, 0x10 + 2 * 9, 0x0001_0040);
        assert_eq!(low.route_changed, Some(p(9)));
        // Even an identical rewrite.
        assert_eq!(
            sel_write(&mut io, 0x10 + 2 * 9, 0x0001_0040).route_changed,
            Some(p(9))
        );
        assert_eq!(io.write_entry(p(9), 0).route_changed, Some(p(9)));
    }

    #[test]
    fn non_redirection_writes_change_no_route() {
        let mut io = Io::default();
        assert!(sel_write(&mut io, REG_ID, 0x0100_0000).is_empty());
        assert!(sel_write(&mut io, REG_VERSION, 0).is_empty());
        assert!(io.mmio_write(IOREGSEL, 4, 0x10).is_empty());
    }

    #[test]
    fn write_entry_matches_two_guest_half_writes() {
        let bits = 0x0500_0000_0000_0000 | level(0x47, 0) | RedirectionEntry::LOGICAL;
        let mut a = level_in_service();
        let mut b = level_in_service();
        let wa = a.write_entry(p(3), bits);
        let _ = b.mmio_write(IOREGSEL, 4, 0x17);
        let _ = b.mmio_write(IOWIN, 4, bits >> 32);
        let _ = b.mmio_write(IOREGSEL, 4, 0x16);
        let wb = b.mmio_write(IOWIN, 4, bits & 0xffff_ffff);
        assert_eq!(a.entries(), b.entries());
        assert_eq!(wa.route_changed, wb.route_changed);
        assert_eq!(wa.deliver, wb.deliver);
        assert_eq!(
            wa.rescan,
            Rescan::Targets {
                old: Some(phys(1)),
                new: Some(logical(5))
            }
        );
    }

    #[test]
    fn write_entry_unmask_delivers_an_asserted_level_pin() {
        let mut io = Io::default();
        let _ = io.set_line(p(6), true);
        // Reset entry is masked edge; a level unmasked write delivers.
        let a = io.write_entry(p(6), level(0x50, 0));
        assert_eq!(a.deliver, only(6));
        assert!(rirr(&io, 6));
    }

    #[test]
    fn out_of_range_pins_are_ignored() {
        let mut io = Io::default();
        let before = io.clone();
        for n in [24u8, 100, 255] {
            assert!(io.set_line(p(n), true).is_empty());
            assert!(io.write_entry(p(n), level(0x40, 0)).is_empty());
            assert!(io.deliver_later_elapsed(p(n)).is_empty());
            assert_eq!(io.entry(p(n)), None);
            assert_eq!(io.message(p(n)), None);
            assert_eq!(io.msi_route(p(n)), None);
            assert!(!io.line(p(n)));
            assert!(!io.asserted(p(n)));
        }
        assert_eq!(io, before);
    }

    #[test]
    fn message_reports_destination_mode_vector_and_trigger() {
        let mut io = Io::default();
        let e = RedirectionEntry::new(
            v(0x66),
            DeliveryMode::LowestPriority,
            DestinationMode::Logical,
            Polarity::ActiveLow,
            TriggerMode::Level,
            true,
            0x0203,
        );
        let _ = io.write_entry(p(2), e.bits());
        let m = io.message(p(2)).unwrap();
        assert_eq!(m.destination, logical(0x0203));
        assert_eq!(m.delivery_mode, DeliveryMode::LowestPriority);
        assert_eq!(m.vector, v(0x66));
        assert_eq!(m.trigger, TriggerMode::Level);
    }

    #[test]
    fn reserved_delivery_mode_is_not_delivered_and_sets_no_remote_irr() {
        let mut io = Io::default();
        let reserved = RedirectionEntry(level(0x40, 1) | 6 << 8);
        let _ = io.write_entry(p(3), reserved.bits());
        assert_eq!(io.message(p(3)), None);
        assert!(io.set_line(p(3), true).deliver.is_empty());
        assert!(!rirr(&io, 3));
        // Fixing the delivery mode delivers the still-asserted line.
        assert_eq!(io.write_entry(p(3), level(0x40, 1)).deliver, only(3));
    }

    #[test]
    fn msi_route_encodes_level_assert_and_extended_destination() {
        let mut io = Io::default();
        let _ = io.write_entry(p(5), level(0x40, 0x1_23));
        let m = io.msi_route(p(5)).unwrap();
        assert_eq!(m.address_lo, 0xFEE0_0000 | 0x23 << 12 | 0x01 << 5);
        assert_eq!(m.data, 0x40 | Msi::DATA_LEVEL_TRIGGER | Msi::DATA_ASSERT);
        let _ = io.write_entry(p(6), edge(0x41, 2));
        assert_eq!(io.msi_route(p(6)).unwrap().data, 0x41);
    }

    #[test]
    fn msi_route_is_returned_for_masked_entries() {
        let mut io = Io::default();
        let masked = RedirectionEntry(level(0x40, 1)).with_mask(true);
        let _ = io.write_entry(p(5), masked.bits());
        let m = io.msi_route(p(5)).unwrap();
        assert_eq!(m.vector(), v(0x40));
        assert!(m.is_level());
    }

    // ---- state ----

    #[test]
    fn restore_round_trips_and_reinjects_asserted_level_pins() {
        let mut io = level_in_service();
        let _ = io.write_entry(p(8), level(0x48, 0));
        io.line.insert(p(8)); // asserted but not yet serviced (as after a throttle)
        let st = io.state();
        let mut other = Io::default();
        let a = other.restore(&st);
        assert_eq!(a.rescan, Rescan::All);
        assert_eq!(a.deliver, only(8));
        assert!(other.entry(p(3)).unwrap().remote_irr());
        assert!(other.entry(p(8)).unwrap().remote_irr());
        assert_eq!(other.state().line, st.line);
    }

    #[test]
    fn restore_clears_remote_irr_of_edge_entries() {
        let mut io = Io::default();
        let mut st = io.state();
        st.entries[0] = RedirectionEntry(edge(0x30, 0) | RedirectionEntry::REMOTE_IRR);
        st.id = 0xff;
        let _ = io.restore(&st);
        assert!(!rirr(&io, 0));
        assert_eq!(io.id(), 0xf);
    }

    // ---- PinSet and actions ----

    #[test]
    fn pinset_insert_remove_contains_iter_len() {
        let mut s = PinSet::default();
        assert!(s.is_empty());
        assert!(s.insert(p(0)));
        assert!(s.insert(p(63)));
        assert!(s.insert(p(64)));
        assert!(s.insert(p(255)));
        assert!(!s.insert(p(255)));
        assert_eq!(s.len(), 4);
        assert!(s.contains(p(64)) && !s.contains(p(65)));
        let got: [u8; 4] = {
            let mut it = s.iter().map(|x| x.get());
            [(); 4].map(|_| it.next().unwrap())
        };
        assert_eq!(got, [0, 63, 64, 255]);
        assert_eq!(s.iter().len(), 4);
        assert!(s.remove(p(63)));
        assert!(!s.remove(p(63)));
        assert_eq!(s.len(), 3);
        assert_eq!(s.iter().collect::<PinSet>(), s);
    }

    #[test]
    fn actions_merge_unites_pins_and_rescans() {
        let mut a = IoapicEffects::NONE;
        assert!(a.is_empty());
        a.merge(IoapicEffects {
            deliver: only(1),
            ..IoapicEffects::NONE
        });
        a.merge(IoapicEffects {
            deliver: only(2),
            deliver_later: only(3),
            rescan: Rescan::Targets {
                old: None,
                new: Some(phys(1)),
            },
            route_changed: Some(p(2)),
        });
        assert_eq!(a.deliver.len(), 2);
        assert_eq!(a.deliver_later, only(3));
        assert_eq!(a.route_changed, Some(p(2)));
        a.merge(IoapicEffects {
            rescan: Rescan::Targets {
                old: Some(phys(1)),
                new: Some(phys(2)),
            },
            ..IoapicEffects::NONE
        });
        assert_eq!(
            a.rescan,
            Rescan::Targets {
                old: Some(phys(1)),
                new: Some(phys(2))
            }
        );
    }

    #[test]
    fn rescan_merge_falls_back_to_all_beyond_two_destinations() {
        let t = |o, n| Rescan::Targets {
            old: Some(phys(o)),
            new: Some(phys(n)),
        };
        assert_eq!(t(1, 2).merge(t(3, 2)), Rescan::All);
        assert_eq!(t(1, 2).merge(t(2, 1)), t(2, 1));
        assert_eq!(Rescan::None.merge(t(1, 2)), t(1, 2));
        assert_eq!(t(1, 2).merge(Rescan::All), Rescan::All);
        assert!(
            Rescan::Targets {
                old: None,
                new: None
            }
            .is_none()
        );
    }
}
