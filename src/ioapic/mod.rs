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
//! | edge while masked | recorded in `irr` (not `irr_delivered`), **not** delivered on unmask; forgotten when the line drops; re-injected by `KVM_SET_IRQCHIP` | dropped (datasheet; QEMU "must ignore edge requests if the input pin is masked") | [`MaskedEdge::Latch`] (default) does what KVM does: the edge shows in [`IoapicState::pending_edge`] and [`Ioapic::set_registers`] delivers it; [`MaskedEdge::Drop`] forgets it |
//! | old destination for the rescan after a retarget | decoded with the **new** destination mode (a bug) | n/a | decoded with the old mode |
//! | rescan when the delivery mode is not Fixed | all vCPUs if the **new** mode is not Fixed | n/a | all vCPUs if the old **or** the new mode is not Fixed |
//! | remote IRR when delivery reaches no LAPIC | stays clear (`ret == 0`) | n/a | set: the model does not know the destinations, the VMM MUST deliver every pin in `deliver` |
//! | EOI of a vector shared by an edge entry whose line is high | re-delivers the edge entry | only level entries | only level entries |
//! | pin polarity | ignored: `kvm_set_irq` takes the logical level | applied | applied: [`Ioapic::set_line`] takes the electrical level |
//! | EOI-storm counter on an entry write | kept | QEMU resets it | kept |
//! | EOI register (0x40) | none (version 0x11) | version 0x20 | version 0x20 only |
//! | entry bits 55:49 | reserved: an 8-bit `dest_id` (bits 63:56) | reserved (82093AA); QEMU copies them to MSI address bits 11:5 | destination bits 14:8 under [`MsiFormat::ExtDestId`] (Linux's `KVM_FEATURE_MSI_EXT_DEST_ID`), ignored by default ([`IoapicConfig::msi_format`]) |
//!
//! Redirection writes behave as in KVM otherwise: delivery status and remote
//! IRR are read-only, switching an entry to edge clears remote IRR (Linux and
//! Xen rely on it to emulate an EOI on I/O APICs without the EOI register),
//! and any write to a level entry whose line is asserted retries delivery (an
//! unmask delivers a pending level interrupt).
//!
//! Nothing here allocates or panics; every loop is bounded by `PINS`.

mod config;
mod effects;
mod entry;
mod pins;
mod state;

#[cfg(test)]
use crate::routes::Msi;
use crate::routes::MsiFormat;
#[cfg(test)]
use crate::types::InvalidValue;
use crate::types::{InterruptMessage, Pin, Polarity};
use crate::vector::Vector;

pub use config::{IoapicConfig, IoapicVersion, MaskedEdge};
pub use effects::{IoapicEffects, Rescan};
pub use entry::RedirectionEntry;
pub use pins::PinSet;
pub use state::IoapicState;
#[cfg(feature = "kvm")]
pub(crate) use state::validate_ioapic_state;

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
pub(crate) const REG_ID: u8 = 0x00;
/// Indirect register: version.
pub(crate) const REG_VERSION: u8 = 0x01;
/// Indirect register: arbitration ID.
pub(crate) const REG_ARB: u8 = 0x02;
/// Indirect register: low half of redirection entry 0.
pub const REG_REDTBL_BASE: u8 = 0x10;

/// KVM's `IOAPIC_SUCCESSIVE_IRQ_MAX_COUNT`: the EOI that finds a level line
/// still asserted for the 10,000th time in a row defers the re-delivery.
pub(crate) const SUCCESSIVE_IRQ_MAX_COUNT: u16 = 10_000;

/// What an EOI leaves to do for one entry it reached.
#[derive(Clone, Copy, PartialEq, Eq)]
enum AfterEoi {
    /// Nothing: remote IRR cleared, the line is low (or masked, or edge).
    Done,
    /// The line is still asserted: deliver again.
    Reservice,
    /// Asserted after too many EOIs in a row: deliver after a delay.
    Throttle,
}

/// The registers and pin state of an [`Ioapic`] without its configuration,
/// as KVM's `kvm_ioapic_state` carries them (the public form is
/// [`IoapicState`], which adds the version, pin count and configuration).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct IoapicRegisters<const PINS: usize = 24> {
    /// The redirection table, remote IRR included.
    pub(crate) entries: [RedirectionEntry; PINS],
    /// Electrical level of each pin (before polarity).
    pub(crate) line: PinSet,
    /// Edges that arrived while masked and were not delivered
    /// ([`MaskedEdge::Latch`]; KVM's `irr & !irr_delivered` for edge pins).
    pub(crate) pending_edge: PinSet,
    /// Successive EOIs that found the line still asserted, per pin.
    pub(crate) eoi_count: [u16; PINS],
    /// IOREGSEL.
    pub(crate) ioregsel: u8,
    /// I/O APIC ID (4 bits).
    pub(crate) id: u8,
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
    /// Per pin: line level, latched edge and EOI-storm count in 16 bits.
    pins: [PinState; PINS],
    ioregsel: u8,
    id: u8,
}

/// One pin's state besides its entry: bit 15 the electrical level, bit 14 a
/// latched edge, bits 13:0 the successive EOIs that found the line asserted
/// (below [`SUCCESSIVE_IRQ_MAX_COUNT`], which is under 2^14).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
struct PinState(u16);

impl PinState {
    const LINE: u16 = 1 << 15;
    const PENDING: u16 = 1 << 14;
    const COUNT: u16 = (1 << 14) - 1;

    #[inline]
    const fn line(self) -> bool {
        self.0 & Self::LINE != 0
    }
    #[inline]
    const fn pending(self) -> bool {
        self.0 & Self::PENDING != 0
    }
    #[inline]
    const fn count(self) -> u16 {
        self.0 & Self::COUNT
    }
    #[inline]
    fn set_line(&mut self, on: bool) {
        self.0 = (self.0 & !Self::LINE) | if on { Self::LINE } else { 0 };
    }
    #[inline]
    fn set_pending(&mut self, on: bool) {
        self.0 = (self.0 & !Self::PENDING) | if on { Self::PENDING } else { 0 };
    }
    /// Counts at or above the threshold are kept just below it: the next
    /// asserted EOI reaches it, as it would have.
    #[inline]
    fn set_count(&mut self, n: u16) {
        let n = n.min(SUCCESSIVE_IRQ_MAX_COUNT - 1);
        self.0 = (self.0 & !Self::COUNT) | n;
    }
}

/// The data of a guest MMIO access of `size` bytes: 1 and 2 zero-extend,
/// 4 and 8 keep the low 32 bits, any other size is ignored (`None`).
#[inline(always)]
pub(crate) fn access_data(size: u32, value: u64) -> Option<u32> {
    match size {
        1 => Some(u32::from(value as u8)),
        2 => Some(u32::from(value as u16)),
        4 | 8 => Some(value as u32),
        _ => None,
    }
}

/// The entry a write of `raw` leaves over `old`: delivery status and remote
/// IRR are read-only, and an edge entry has no remote IRR.
#[inline(always)]
fn merged_entry(old: RedirectionEntry, raw: u64) -> RedirectionEntry {
    let new = RedirectionEntry(
        (raw & !RedirectionEntry::READ_ONLY) | (old.bits() & RedirectionEntry::READ_ONLY),
    );
    if new.is_level() {
        new
    } else {
        new.with_remote_irr(false)
    }
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
            pins: [PinState(0); PINS],
            ioregsel: 0,
            id: config.id & 0xf,
        }
    }

    /// The configuration this I/O APIC was built with.
    #[inline]
    pub(crate) fn config(&self) -> &IoapicConfig {
        &self.config
    }

    /// Number of pins (`PINS`).
    #[inline]
    #[cfg(test)]
    pub(crate) const fn pins(&self) -> usize {
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
    #[cfg(test)]
    pub(crate) fn line(&self, pin: Pin) -> bool {
        self.pins.get(pin.index()).is_some_and(|p| p.line())
    }

    /// Whether the pin is asserted: its level with the entry's polarity
    /// applied (`false` for a pin out of range).
    #[inline]
    pub(crate) fn asserted(&self, pin: Pin) -> bool {
        match self.entries.get(pin.index()) {
            Some(e) => self.pins[pin.index()].line() != matches!(e.polarity(), Polarity::ActiveLow),
            None => false,
        }
    }

    /// The current IOREGSEL value.
    #[inline]
    pub(crate) fn ioregsel(&self) -> u8 {
        self.ioregsel
    }

    /// A guest write of IOREGSEL, `data` already cut to the access size
    /// ([`Ioapic::mmio_write`] with nothing to report).
    #[inline]
    pub(crate) fn select(&mut self, data: u8) {
        self.ioregsel = data;
    }

    /// The current I/O APIC ID (4 bits).
    #[inline]
    #[cfg(test)]
    pub(crate) fn id(&self) -> u8 {
        self.id
    }

    /// The interrupt the pin's entry sends now, its destination decoded
    /// with this I/O APIC's [`IoapicConfig::msi_format`], or `None` for a
    /// reserved delivery mode (3, 6) or a pin out of range. For ExtInt the
    /// real vector comes from the 8259A; the entry's vector field is
    /// reported as is.
    #[inline]
    pub(crate) fn message(&self, pin: Pin) -> Option<InterruptMessage> {
        self.entry(pin)?.message(self.config.msi_format)
    }

    /// The MSI address/data a split-irqchip VMM installs as the pin's GSI
    /// route (`KVM_SET_GSI_ROUTING`), in `format` (what KVM reads): the
    /// entry's message as this I/O APIC decodes it, encoded with
    /// [`Msi::from_message`]. The public spelling is that composition.
    #[cfg(test)]
    #[inline]
    pub(crate) fn msi_route(
        &self,
        pin: Pin,
        format: MsiFormat,
    ) -> Option<Result<Msi, InvalidValue>> {
        Some(Msi::from_message(&self.message(pin)?, format))
    }

    /// The registers and pin state (`KVM_GET_IRQCHIP`; public through
    /// [`Ioapic::state`]).
    pub(crate) fn registers(&self) -> IoapicRegisters<PINS> {
        IoapicRegisters {
            entries: self.entries,
            line: self.pin_set(15),
            pending_edge: self.pin_set(14),
            eoi_count: core::array::from_fn(|i| self.pins[i].count()),
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
    ///
    /// Only the register and pin fields of `state` are read: its `version`,
    /// `pins` and `config` are ignored (the configuration stays this I/O
    /// APIC's), and nothing is validated. [`Ioapic::from_state`] is the
    /// verbatim, validated restore.
    pub fn set_registers(&mut self, state: &IoapicState<PINS>) -> IoapicEffects {
        self.load_registers(&state.registers())
    }

    /// [`Ioapic::set_registers`] from the bare registers (the KVM import).
    pub(crate) fn load_registers(&mut self, state: &IoapicRegisters<PINS>) -> IoapicEffects {
        self.entries = state.entries;
        for i in 0..PINS {
            let pin = Pin::new(i as u8);
            let e = self.entries[i];
            if !e.is_level() {
                self.entries[i] = e.with_remote_irr(false);
            }
            let mut p = PinState::default();
            p.set_line(state.line.contains(pin));
            p.set_pending(
                self.config.masked_edge == MaskedEdge::Latch && state.pending_edge.contains(pin),
            );
            p.set_count(state.eoi_count[i]);
            self.pins[i] = p;
        }
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
            } else if self.pins[i].pending() && !e.masked() {
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
    ///
    /// # Examples
    ///
    /// The guest selects a register through IOREGSEL and reads or writes it
    /// through IOWIN.
    ///
    /// ```
    /// use eoi_exit::ioapic::{IOREGSEL, IOWIN, REG_REDTBL_BASE};
    /// use eoi_exit::{Ioapic, IoapicConfig, Pin, RedirectionEntry, TriggerMode, Vector};
    ///
    /// let mut io: Ioapic = Ioapic::new(IoapicConfig::default()); // 24 pins
    /// // Version register (index 1): highest entry index 23 in bits 23:16, version 0x11.
    /// let _ = io.mmio_write(IOREGSEL, 4, 0x01);
    /// assert_eq!(io.mmio_read(IOWIN, 4), 0x0017_0011);
    ///
    /// // Low half of entry 2: vector 0x40, level, unmasked.
    /// let pin = Pin::new(2);
    /// let e = RedirectionEntry::fixed(Vector::new(0x40), TriggerMode::Level, 0);
    /// let _ = io.mmio_write(IOREGSEL, 4, u64::from(REG_REDTBL_BASE + 2 * pin.get()));
    /// let fx = io.mmio_write(IOWIN, 4, e.0 & 0xffff_ffff);
    /// assert_eq!(fx.route_changed, Some(pin)); // fx.rescan names its destination
    /// assert_eq!(io.mmio_read(IOWIN, 4), e.0 & 0xffff_ffff);
    /// assert_eq!(io.entry(pin), Some(e));
    ///
    /// // Remote IRR is read-only to the guest.
    /// let _ = io.mmio_write(IOWIN, 4, (e.0 | RedirectionEntry::REMOTE_IRR) & 0xffff_ffff);
    /// assert!(!io.entry(pin).unwrap().remote_irr());
    /// ```
    #[inline]
    pub fn mmio_write(&mut self, offset: u64, size: u32, value: u64) -> IoapicEffects {
        let Some(data) = access_data(size, value) else {
            return IoapicEffects::NONE;
        };
        match offset % MMIO_LEN {
            IOREGSEL => {
                self.select(data as u8);
                IoapicEffects::NONE
            }
            IOWIN => self.write_indirect(data),
            IOEOI if self.config.version == IoapicVersion::V20 => self.eoi(Vector::new(data as u8)),
            _ => IoapicEffects::NONE,
        }
    }

    #[inline]
    fn write_indirect(&mut self, data: u32) -> IoapicEffects {
        match self.ioregsel {
            REG_ID => {
                self.id = ((data >> 24) & 0xf) as u8;
                IoapicEffects::NONE
            }
            REG_VERSION | REG_ARB => IoapicEffects::NONE,
            _ => match self.iowin_entry(data) {
                Some((i, new)) => self.store_entry(i, new),
                None => IoapicEffects::NONE,
            },
        }
    }

    /// Host-side write of a whole redirection entry, with the semantics of a
    /// guest writing both halves at once: delivery status and remote IRR keep
    /// their values, a switch to edge clears remote IRR, the old and new
    /// targets are rescanned, and an asserted level pin that is now deliverable
    /// (e.g. just unmasked) is delivered. Out-of-range pins are ignored.
    #[inline]
    pub fn write_entry(&mut self, pin: Pin, value: u64) -> IoapicEffects {
        if pin.index() >= PINS {
            return IoapicEffects::NONE;
        }
        let i = pin.index();
        self.store_entry(i, merged_entry(self.entries[i], value))
    }

    /// What an IOWIN write of `data` (cut to the access size) leaves in the
    /// redirection entry IOREGSEL selects, and that entry's index; `None`
    /// when IOREGSEL selects no entry. The written half replaces its 32
    /// bits; delivery status and remote IRR are read-only, and an edge entry
    /// has no remote IRR.
    #[inline]
    pub(crate) fn iowin_entry(&self, data: u32) -> Option<(usize, RedirectionEntry)> {
        let (i, high) = Self::redir_index(self.ioregsel)?;
        let old = self.entries[i];
        let raw = if high {
            (old.bits() & 0xffff_ffff) | u64::from(data) << 32
        } else {
            (old.bits() & !0xffff_ffff) | u64::from(data)
        };
        Some((i, merged_entry(old, raw)))
    }

    /// Stores `new` (already merged with the read-only bits) in entry `i`.
    #[inline]
    pub(crate) fn store_entry(&mut self, i: usize, new: RedirectionEntry) -> IoapicEffects {
        let pin = Pin::new(i as u8);
        let old = self.entries[i];
        self.entries[i] = new;

        let mut actions = IoapicEffects {
            route_changed: Some(pin),
            rescan: Self::rescan_for(old, new, self.config.msi_format),
            ..IoapicEffects::NONE
        };
        if new.is_level() && self.asserted(pin) {
            self.service(i, &mut actions);
        }
        actions
    }

    #[inline(always)]
    fn rescan_for(old: RedirectionEntry, new: RedirectionEntry, format: MsiFormat) -> Rescan {
        // Delivery mode 0 is Fixed.
        if old.delivery_mode_bits() != 0 || new.delivery_mode_bits() != 0 {
            return Rescan::All;
        }
        let (o, n) = (old.destination(format), new.destination(format));
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
    ///
    /// # Examples
    ///
    /// ```
    /// use eoi_exit::{Ioapic, MsiFormat, Pin, RedirectionEntry, TriggerMode, Vector};
    ///
    /// let mut io: Ioapic = Ioapic::default();
    /// let pin = Pin::new(5);
    /// let e = RedirectionEntry::fixed(Vector::new(0x40), TriggerMode::Level, 0);
    /// let _ = io.write_entry(pin, e.0);
    ///
    /// let fx = io.set_line(pin, true);
    /// assert!(fx.deliver.contains(pin)); // the VMM MUST deliver the entry's message
    /// assert_eq!(io.entry(pin).unwrap().message(MsiFormat::Xapic).unwrap().vector, Vector::new(0x40));
    /// assert!(io.entry(pin).unwrap().remote_irr());
    ///
    /// // Remote IRR holds further deliveries until the EOI.
    /// assert!(io.set_line(pin, true).deliver.is_empty());
    /// ```
    #[inline]
    pub fn set_line(&mut self, pin: Pin, level: bool) -> IoapicEffects {
        let mut actions = IoapicEffects::NONE;
        if self.drive_line(pin, level) {
            actions.deliver.insert(pin);
        }
        actions
    }

    /// [`Ioapic::set_line`], whose only possible effect is to deliver `pin`:
    /// whether it does.
    #[inline]
    pub(crate) fn drive_line(&mut self, pin: Pin, level: bool) -> bool {
        let i = pin.index();
        if i >= PINS {
            return false;
        }
        let was_asserted = self.asserted(pin);
        self.pins[i].set_line(level);
        let e = self.entries[i];
        if !self.asserted(pin) {
            // KVM clears the pin's `irr`, which also forgets a latched edge.
            self.pins[i].set_pending(false);
            false
        } else if e.is_level() {
            // KVM retries every assert of a level pin (it only succeeds when
            // remote IRR is clear and the entry unmasked).
            self.try_service(i)
        } else if !was_asserted {
            if e.masked() {
                if self.config.masked_edge == MaskedEdge::Latch {
                    self.pins[i].set_pending(true);
                }
                false
            } else {
                self.try_service(i)
            }
        } else {
            false
        }
    }

    /// A broadcast EOI of `vector` from a local APIC (or KVM's
    /// `KVM_EXIT_IOAPIC_EOI` with the split irqchip). The caller MUST send only
    /// EOIs of level-triggered vectors (TMR set, no directed EOI), as the LAPIC
    /// broadcasts only those.
    ///
    /// For every level entry with this vector: remote IRR is cleared; if the
    /// entry is unmasked and its line still asserted it is re-delivered, except
    /// that the 10,000th (KVM's `IOAPIC_SUCCESSIVE_IRQ_MAX_COUNT`) such EOI in a row puts the pin
    /// in `deliver_later` instead and restarts the count; an EOI that finds the
    /// line low (or the entry masked) restarts the count.
    ///
    /// # Examples
    ///
    /// ```
    /// use eoi_exit::{Ioapic, IoapicEffects, Pin, RedirectionEntry, TriggerMode, Vector};
    ///
    /// let mut io: Ioapic = Ioapic::default();
    /// let (pin, v) = (Pin::new(5), Vector::new(0x40));
    /// let _ = io.write_entry(pin, RedirectionEntry::fixed(v, TriggerMode::Level, 0).0);
    /// let _ = io.set_line(pin, true);
    ///
    /// // The EOI finds the line still asserted: the pin is delivered again
    /// // and remote IRR is set again.
    /// let fx = io.eoi(v);
    /// assert!(fx.deliver.contains(pin));
    /// assert!(io.entry(pin).unwrap().remote_irr());
    ///
    /// // Once the device is quiet, the EOI clears remote IRR for good.
    /// let _ = io.set_line(pin, false);
    /// assert_eq!(io.eoi(v), IoapicEffects::default());
    /// assert!(!io.entry(pin).unwrap().remote_irr());
    /// ```
    #[inline]
    pub fn eoi(&mut self, vector: Vector) -> IoapicEffects {
        let mut actions = IoapicEffects::NONE;
        for i in 0..PINS {
            if self.entries[i].vector() == vector {
                let after = self.eoi_entry(i);
                self.after_eoi(i, after, &mut actions);
            }
        }
        actions
    }

    /// [`Ioapic::eoi`] when the caller knows that pin `i` is the only one
    /// whose entry may hold `vector` (an index kept beside the table).
    /// `None` when the EOI leaves nothing to do, the common case: the
    /// handler quieted the device before its EOI.
    #[inline(always)]
    pub(crate) fn eoi_pin(&mut self, i: usize, vector: Vector) -> Option<IoapicEffects> {
        if self.entries.get(i).is_none_or(|e| e.vector() != vector) {
            return None;
        }
        match self.eoi_entry(i) {
            AfterEoi::Done => None,
            after => {
                let mut actions = IoapicEffects::NONE;
                self.after_eoi(i, after, &mut actions);
                Some(actions)
            }
        }
    }

    /// The EOI reaches entry `i`, whose vector matched: a level entry's
    /// remote IRR clears, and an asserted line is to be re-serviced, or
    /// throttled after an EOI storm (KVM's `kvm_ioapic_update_eoi_one`).
    #[inline(always)]
    fn eoi_entry(&mut self, i: usize) -> AfterEoi {
        let e = self.entries[i];
        if !e.is_level() {
            return AfterEoi::Done;
        }
        self.entries[i] = e.with_remote_irr(false);
        if !e.masked() && self.asserted(Pin::new(i as u8)) {
            let n = self.pins[i].count() + 1;
            if n >= SUCCESSIVE_IRQ_MAX_COUNT {
                self.pins[i].set_count(0);
                AfterEoi::Throttle
            } else {
                self.pins[i].set_count(n);
                AfterEoi::Reservice
            }
        } else {
            self.pins[i].set_count(0);
            AfterEoi::Done
        }
    }

    fn after_eoi(&mut self, i: usize, after: AfterEoi, actions: &mut IoapicEffects) {
        match after {
            AfterEoi::Done => {}
            AfterEoi::Throttle => {
                actions.deliver_later.insert(Pin::new(i as u8));
            }
            AfterEoi::Reservice => {
                self.service(i, actions);
            }
        }
    }

    /// The VMM's timer for a throttled pin (`deliver_later`) fired: deliver it
    /// if it is still a level entry, asserted, unmasked and remote IRR is
    /// clear (KVM's `kvm_ioapic_eoi_inject_work`). Otherwise nothing.
    #[inline]
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
    #[inline]
    fn service(&mut self, i: usize, actions: &mut IoapicEffects) -> bool {
        let delivered = self.try_service(i);
        if delivered {
            actions.deliver.insert(Pin::new(i as u8));
        }
        delivered
    }

    /// [`Ioapic::service`] without the effects: whether pin `i` delivers.
    #[inline]
    fn try_service(&mut self, i: usize) -> bool {
        let e = self.entries[i];
        if e.masked() || (e.is_level() && e.remote_irr()) {
            return false;
        }
        self.pins[i].set_pending(false);
        if e.delivery_mode().is_err() {
            return false;
        }
        if e.is_level() {
            self.entries[i] = e.with_remote_irr(true);
        }
        true
    }
}

// ---- snapshot hook (used by src/snapshot; keep additive) -------------------

impl<const PINS: usize> Ioapic<PINS> {
    /// Snapshot restore: replaces the configuration and the state verbatim,
    /// without re-injecting anything (unlike [`Ioapic::set_registers`], which
    /// mirrors `KVM_SET_IRQCHIP`). The caller has validated `state`.
    pub(crate) fn restore_exact(&mut self, config: IoapicConfig, state: &IoapicRegisters<PINS>) {
        self.config = config;
        self.entries = state.entries;
        for i in 0..PINS {
            let pin = Pin::new(i as u8);
            let mut p = PinState::default();
            p.set_line(state.line.contains(pin));
            p.set_pending(state.pending_edge.contains(pin));
            p.set_count(state.eoi_count[i]);
            self.pins[i] = p;
        }
        self.ioregsel = state.ioregsel;
        self.id = state.id;
    }

    /// The pins whose state has bit `shift` set: eight pins per step with
    /// shifts only (a per-pin comparison is a libFuzzer callback per pin
    /// under cargo-fuzz, and `registers` runs after every fuzzed op).
    fn pin_set(&self, shift: u32) -> PinSet {
        let mut words = [0u64; 4];
        let bit = |p: &PinState| u64::from((p.0 >> shift) & 1);
        let mut chunks = self.pins.chunks_exact(8);
        for (k, c) in chunks.by_ref().enumerate() {
            let byte = bit(&c[0])
                | bit(&c[1]) << 1
                | bit(&c[2]) << 2
                | bit(&c[3]) << 3
                | bit(&c[4]) << 4
                | bit(&c[5]) << 5
                | bit(&c[6]) << 6
                | bit(&c[7]) << 7;
            words[k / 8] |= byte << (k % 8 * 8);
        }
        let base = PINS / 8 * 8;
        for (j, p) in chunks.remainder().iter().enumerate() {
            let i = base + j;
            words[i / 64] |= bit(p) << (i % 64);
        }
        PinSet::from_u64_words(words)
    }
}

#[cfg(test)]
mod tests;
