//! Conversions between the model and KVM's in-kernel irqchip state
//! (`KVM_GET_IRQCHIP` / `KVM_SET_IRQCHIP` for the I/O APIC, `KVM_GET_LAPIC` /
//! `KVM_SET_LAPIC` for each vCPU), and migration of a whole [`Irqchip`] from
//! and to KVM's in-kernel irqchip. Feature `kvm`, Linux x86_64 only.
//!
//! # I/O APIC (`kvm_ioapic_state`, 24 pins)
//!
//! | KVM | model |
//! |---|---|
//! | `redirtbl[n].bits` | [`IoapicState::entries`] (all 64 bits, verbatim) |
//! | `irr` bit n, level entry | pin n asserted: [`IoapicState::line`] = asserted XOR active-low |
//! | `irr` bit n, edge entry | an undelivered (masked) edge: [`IoapicState::pending_edge`], and the line asserted |
//! | `ioregsel` | IOREGSEL (KVM masks guest writes to 8 bits) |
//! | `id` | ID (4 bits; KVM stores `(val >> 24) & 0xf`) |
//! | `base_address` | not modelled: passed through ([`KvmIoapic::base_address`]) |
//! | — | [`IoapicState::eoi_count`]: KVM's `irq_eoi[]` is not exported; imported as 0 |
//! | — | [`IoapicState::config`]: `IoapicConfig::default()`, KVM's I/O APIC (version 0x11, masked edges latched) |
//!
//! KVM's `KVM_GET_IRQCHIP` reports `irr & !irr_delivered`: an edge pin whose
//! edge was delivered and whose line is still high reads as low. The model
//! keeps the line ([`super`] lists everything KVM's formats drop), so a model
//! state converts to KVM and back unchanged exactly when its EOI-storm
//! counters are 0, no level pin has a latched edge, and every asserted edge pin
//! has a latched edge ([`kvm_representable`]).
//!
//! # Local APIC (`kvm_lapic_state`, the 1 KiB register page)
//!
//! | offset | register | model |
//! |---|---|---|
//! | 0x20 | ID | xAPIC: bits 31:24 = xAPIC ID; x2APIC: the 32-bit ID with `KVM_CAP_X2APIC_API` (`x2apic_format`), else `id << 24` |
//! | 0x30 | version | bit 24 = directed EOI advertised (KVM recomputes the rest) |
//! | 0x80 | TPR | bits 7:0 |
//! | 0xA0 | PPR | written on export (derived; KVM recomputes it on set) |
//! | 0xD0 | LDR | xAPIC mode: bits 31:24 (bits 23:0 are reserved and a guest write clears them; only `KVM_SET_LAPIC` can set them, and they are dropped on import, as ESR bits 31:8 are), or the x2APIC value kept from an x2APIC phase; x2APIC mode: derived from the ID |
//! | 0xE0 | DFR | verbatim |
//! | 0xF0 | SVR | verbatim |
//! | 0x100 + 0x10 n | ISR word n | vectors 32n..32n+31 |
//! | 0x180 + 0x10 n | TMR word n | |
//! | 0x200 + 0x10 n | IRR word n | |
//! | 0x280 | ESR | bits 7:0; the model's latch of errors since the last ESR write has no place here (KVM has none) and is dropped on export, 0 on import |
//! | 0x300 | ICR | bits 31:0 of [`LocalApicState::icr`] |
//! | 0x310 | ICR2 | bits 63:32 (x2APIC too: `KVM_GET_LAPIC` splits the 64-bit x2APIC ICR) |
//!
//! The page holds neither the mode nor the initial ID: they come from
//! `IA32_APIC_BASE` ([`apic_mode_from_base`]) and the vCPU ID, as
//! [`KvmLapicIdentity`]. Timer, LVT and the other registers are not
//! modelled: [`write_lapic`] patches only the registers above into a page
//! (keep the source page to carry the rest), [`lapic_to_kvm`] writes them into
//! a zeroed page.
//!
//! # Non-vectored events (`kvm_vcpu_events`, `kvm_mp_state`)
//!
//! [`events_to_kvm`] and [`events_from_kvm`] map a vCPU's pending
//! [`VcpuEvents`] (`KVM_GET_VCPU_EVENTS` / `KVM_SET_VCPU_EVENTS`,
//! `KVM_GET_MP_STATE` / `KVM_SET_MP_STATE`):
//!
//! | KVM | model |
//! |---|---|
//! | `nmi.pending` (with `KVM_VCPUEVENT_VALID_NMI_PENDING`) | [`VcpuEvents::nmi`] (0..=2) |
//! | `smi.pending` (with `KVM_VCPUEVENT_VALID_SMM`) | [`VcpuEvents::smi`] |
//! | `smi.latched_init` (with `KVM_VCPUEVENT_VALID_SMM`) | [`VcpuEvents::init`] |
//! | `mp_state` `KVM_MP_STATE_INIT_RECEIVED` | [`VcpuEvents::wait_for_sipi`]; every other state is "not waiting" (halt is the VMM's) |
//! | `nmi.injected`, `nmi.masked`, `smi.smm`, `smi.smm_inside_nmi` | not modelled: the VMM's CPU state (the `nmi_blocked` and `init_blocked` arguments of [`Irqchip::take_events`]); kept as the caller has them |
//! | — | [`VcpuEvents::sipi`]: KVM reports no latched SIPI (`KVM_GET_MP_STATE` takes or drops it first, and `sipi_vector` reads 0); not exported, imported as none |
//! | — | [`VcpuEvents::extint`]: KVM's ExtINT is the PIC's output, not vCPU state; not exported, imported as none |

/// The kvm-bindings crate (version 0.14) these conversions speak, re-exported
/// so a VMM names the same `kvm_ioapic_state` / `kvm_lapic_state` types.
pub use kvm_bindings;
use kvm_bindings::{
    KVM_MP_STATE_INIT_RECEIVED, KVM_MP_STATE_RUNNABLE, KVM_VCPUEVENT_VALID_NMI_PENDING,
    KVM_VCPUEVENT_VALID_SMM, kvm_ioapic_state, kvm_ioapic_state__bindgen_ty_1, kvm_lapic_state,
    kvm_mp_state, kvm_vcpu_events,
};

use super::{LocalApicState, SNAPSHOT_VERSION, SnapshotError};
use crate::exit_bitmap::Policy;
use crate::ioapic::validate_ioapic_state;
use crate::ioapic::{IoapicConfig, IoapicRegisters, IoapicState, PinSet, RedirectionEntry};
use crate::irqchip::{DeliveryLog, Effects, Irqchip, IrqchipConfig, VcpuEvents, VcpuSlot};
use crate::lapic::{ApicMode, LocalApic, x2apic_ldr};
use crate::types::{ApicId, Pin, Polarity, RTC_GSI};
use crate::vector::VectorSet;

/// Pins of KVM's in-kernel I/O APIC (`KVM_IOAPIC_NUM_PINS`).
pub const KVM_IOAPIC_NUM_PINS: usize = 24;
/// KVM's default I/O APIC base (`IOAPIC_DEFAULT_BASE_ADDRESS`).
pub const IOAPIC_DEFAULT_BASE_ADDRESS: u64 = 0xFEC0_0000;

/// LAPIC register offsets in `kvm_lapic_state::regs`.
pub(crate) mod reg {
    /// APIC ID.
    pub(crate) const ID: usize = 0x20;
    /// Version.
    pub(crate) const VERSION: usize = 0x30;
    /// Task priority.
    pub(crate) const TPR: usize = 0x80;
    /// Processor priority.
    pub(crate) const PPR: usize = 0xA0;
    /// Logical destination.
    pub(crate) const LDR: usize = 0xD0;
    /// Destination format.
    pub(crate) const DFR: usize = 0xE0;
    /// Spurious-interrupt vector.
    pub(crate) const SVR: usize = 0xF0;
    /// In-service, word 0.
    pub(crate) const ISR: usize = 0x100;
    /// Trigger mode, word 0.
    pub(crate) const TMR: usize = 0x180;
    /// Interrupt request, word 0.
    pub(crate) const IRR: usize = 0x200;
    /// Error status.
    pub(crate) const ESR: usize = 0x280;
    /// Interrupt command, bits 31:0.
    pub(crate) const ICR: usize = 0x300;
    /// Interrupt command, bits 63:32 (x2APIC too: KVM's `KVM_GET_LAPIC`
    /// splits the 64-bit x2APIC ICR into these two words).
    pub(crate) const ICR2: usize = 0x310;
    /// Distance between the eight words of ISR/TMR/IRR.
    pub(crate) const STRIDE: usize = 0x10;
}

// ---- I/O APIC -------------------------------------------------------------------

/// A `kvm_ioapic_state` in model terms.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct KvmIoapic {
    /// The model state, with KVM's configuration (`IoapicConfig::default()`).
    pub state: IoapicState<KVM_IOAPIC_NUM_PINS>,
    /// KVM's `base_address` (not modelled; the VMM decodes MMIO).
    pub base_address: u64,
}

fn entry_bits(e: &kvm_ioapic_state__bindgen_ty_1) -> u64 {
    zerocopy::transmute!(*e)
}

fn asserted(e: RedirectionEntry, line: bool) -> bool {
    line != matches!(e.polarity(), Polarity::ActiveLow)
}

/// Converts KVM's I/O APIC state. Fails for `irr` bits above pin 23, an
/// `ioregsel` above 0xFF, an `id` above 0xF and remote IRR on an edge entry,
/// none of which KVM produces.
pub fn ioapic_from_kvm(k: &kvm_ioapic_state) -> Result<KvmIoapic, SnapshotError> {
    if k.irr >> KVM_IOAPIC_NUM_PINS != 0 {
        return Err(SnapshotError::invalid(
            "kvm_ioapic_state.irr (a pin beyond 23)",
            (31 - k.irr.leading_zeros()).into(),
        ));
    }
    let bad = |register, value: u32| SnapshotError::invalid(register, value.into());
    if k.ioregsel > 0xFF {
        return Err(bad("kvm_ioapic_state.ioregsel", k.ioregsel));
    }
    if k.id > 0xF {
        return Err(bad("kvm_ioapic_state.id", k.id));
    }
    let entries: [RedirectionEntry; KVM_IOAPIC_NUM_PINS] =
        core::array::from_fn(|i| RedirectionEntry(entry_bits(&k.redirtbl[i])));
    let mut line = PinSet::EMPTY;
    let mut pending_edge = PinSet::EMPTY;
    for (i, e) in entries.iter().enumerate() {
        let pin = Pin::new(i as u8);
        let on = k.irr & (1 << i) != 0;
        // Logical level -> electrical level.
        line.set(pin, on != matches!(e.polarity(), Polarity::ActiveLow));
        if on && !e.is_level() {
            pending_edge.insert(pin);
        }
    }
    let state = IoapicRegisters {
        entries,
        line,
        pending_edge,
        eoi_count: [0; KVM_IOAPIC_NUM_PINS],
        ioregsel: k.ioregsel as u8,
        id: k.id as u8,
    };
    validate_ioapic_state(&IoapicConfig::DEFAULT, &state)?;
    Ok(KvmIoapic {
        state: IoapicState::new(IoapicConfig::DEFAULT, &state),
        base_address: k.base_address,
    })
}

/// Converts the model's I/O APIC state to KVM's (what `KVM_GET_IRQCHIP` would
/// report for it). `irr` holds the asserted level pins and the latched edges
/// of asserted edge pins; the EOI-storm counters are lost.
pub fn ioapic_to_kvm(
    state: &IoapicState<KVM_IOAPIC_NUM_PINS>,
    base_address: u64,
) -> kvm_ioapic_state {
    let mut k = kvm_ioapic_state {
        base_address,
        ioregsel: state.ioregsel as u32,
        id: state.id as u32,
        ..Default::default()
    };
    for (i, e) in state.entries.iter().enumerate() {
        let pin = Pin::new(i as u8);
        let on = asserted(*e, state.line.contains(pin));
        if on && (e.is_level() || state.pending_edge.contains(pin)) {
            k.irr |= 1 << i;
        }
        k.redirtbl[i] = kvm_ioapic_state__bindgen_ty_1 { bits: e.bits() };
    }
    k
}

/// Whether `ioapic_from_kvm(ioapic_to_kvm(state))` gives `state` back: no
/// EOI-storm counts, no latched edge on a level pin or a deasserted pin, and
/// every asserted edge pin latched (KVM cannot say "high, already
/// delivered").
pub fn kvm_representable(state: &IoapicState<KVM_IOAPIC_NUM_PINS>) -> bool {
    state.eoi_count.iter().all(|&c| c == 0)
        && state.entries.iter().enumerate().all(|(i, e)| {
            let pin = Pin::new(i as u8);
            let on = asserted(*e, state.line.contains(pin));
            let latched = state.pending_edge.contains(pin);
            if e.is_level() {
                !latched
            } else {
                latched == on
            }
        })
        && state
            .line
            .iter()
            .chain(state.pending_edge.iter())
            .all(|p| p.index() < KVM_IOAPIC_NUM_PINS)
}

// ---- local APIC -------------------------------------------------------------------

/// What the register page does not hold about a LAPIC.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct KvmLapicIdentity {
    /// The initial APIC ID: KVM's vCPU ID (the x2APIC ID).
    pub initial_id: ApicId,
    /// The mode, from `IA32_APIC_BASE` ([`apic_mode_from_base`]).
    pub mode: ApicMode,
    /// `KVM_CAP_X2APIC_API` with `KVM_X2APIC_API_USE_32BIT_IDS` is enabled: in
    /// x2APIC mode the ID register holds the whole 32-bit ID (else `id << 24`).
    pub x2apic_format: bool,
}

/// The LAPIC mode from `IA32_APIC_BASE` (MSR 0x1B; `kvm_sregs::apic_base`):
/// bit 11 enable, bit 10 x2APIC.
pub const fn apic_mode_from_base(apic_base: u64) -> ApicMode {
    match (apic_base & (1 << 11) != 0, apic_base & (1 << 10) != 0) {
        (false, _) => ApicMode::Disabled,
        (true, false) => ApicMode::XApic,
        (true, true) => ApicMode::X2Apic,
    }
}

fn get32(p: &kvm_lapic_state, off: usize) -> u32 {
    u32::from_le_bytes(core::array::from_fn(|i| p.regs[off + i] as u8))
}

fn put32(p: &mut kvm_lapic_state, off: usize, v: u32) {
    for (i, b) in v.to_le_bytes().into_iter().enumerate() {
        p.regs[off + i] = b as _;
    }
}

fn get256(p: &kvm_lapic_state, base: usize) -> VectorSet {
    VectorSet::from_u32_words(core::array::from_fn(|w| get32(p, base + w * reg::STRIDE)))
}

fn put256(p: &mut kvm_lapic_state, base: usize, s: &VectorSet) {
    for (w, v) in s.as_u32_words().into_iter().enumerate() {
        put32(p, base + w * reg::STRIDE, v);
    }
}

/// Converts a KVM LAPIC register page. Fails where the model cannot hold the
/// value (as [`LocalApic::from_state`] would), and in x2APIC mode with
/// `x2apic_format` when the ID register is not the initial ID (KVM refuses
/// that page with `EINVAL` too).
pub fn lapic_from_kvm(
    page: &kvm_lapic_state,
    who: &KvmLapicIdentity,
) -> Result<LocalApicState, SnapshotError> {
    let initial_id = who.initial_id.get();
    let id_reg = get32(page, reg::ID);
    let (xapic_id, ldr) = match who.mode {
        ApicMode::X2Apic => {
            if who.x2apic_format && id_reg != initial_id {
                return Err(SnapshotError::invalid("x2APIC ID", id_reg.into()));
            }
            // KVM derives the LDR from the ID when it sets an x2APIC page.
            (initial_id as u8, x2apic_ldr(initial_id))
        }
        ApicMode::XApic | ApicMode::Disabled => {
            let ldr = get32(page, reg::LDR);
            // Reserved bits 23:0 mean nothing to KVM's logical match (it
            // reads the logical ID, bits 31:24); the model does not hold them.
            let ldr = if ldr == x2apic_ldr(initial_id) {
                ldr
            } else {
                ldr & 0xFF00_0000
            };
            ((id_reg >> 24) as u8, ldr)
        }
    };
    let s = LocalApicState {
        version: SNAPSHOT_VERSION,
        initial_id,
        xapic_id,
        mode: who.mode,
        ldr,
        dfr: get32(page, reg::DFR),
        svr: get32(page, reg::SVR),
        tpr: get32(page, reg::TPR) as u8,
        directed_eoi_supported: get32(page, reg::VERSION) & crate::lapic::VERSION_DIRECTED_EOI != 0,
        irr: get256(page, reg::IRR),
        isr: get256(page, reg::ISR),
        tmr: get256(page, reg::TMR),
        icr: u64::from(get32(page, reg::ICR)) | u64::from(get32(page, reg::ICR2)) << 32,
        esr: get32(page, reg::ESR) as u8,
        // KVM has no latch of errors since the last ESR write.
        esr_pending: 0,
    };
    s.validate()?;
    Ok(s)
}

/// Writes the registers the model covers into `page` (ID, version bit 24,
/// TPR, PPR, LDR, DFR, SVR, ISR, TMR, IRR, ESR, ICR), leaving every other
/// byte as it is. Start from the source's page to carry timer and LVT state.
/// The model's pending ESR errors have no place in KVM's page: they are
/// dropped (KVM does not log them).
pub fn write_lapic(state: &LocalApicState, x2apic_format: bool, page: &mut kvm_lapic_state) {
    let id = match state.mode {
        ApicMode::X2Apic if x2apic_format => state.initial_id,
        ApicMode::X2Apic => state.initial_id << 24,
        ApicMode::XApic | ApicMode::Disabled => (state.xapic_id as u32) << 24,
    };
    put32(page, reg::ID, id);
    let mut version = get32(page, reg::VERSION) & !crate::lapic::VERSION_DIRECTED_EOI;
    if state.directed_eoi_supported {
        version |= crate::lapic::VERSION_DIRECTED_EOI;
    }
    put32(page, reg::VERSION, version);
    put32(page, reg::TPR, state.tpr as u32);
    put32(page, reg::PPR, state.ppr() as u32);
    put32(page, reg::LDR, state.ldr);
    put32(page, reg::DFR, state.dfr);
    put32(page, reg::SVR, state.svr);
    put256(page, reg::ISR, &state.isr);
    put256(page, reg::TMR, &state.tmr);
    put256(page, reg::IRR, &state.irr);
    put32(page, reg::ESR, u32::from(state.esr));
    put32(page, reg::ICR, state.icr as u32);
    put32(page, reg::ICR2, (state.icr >> 32) as u32);
}

/// The model's LAPIC as a fresh KVM register page: the covered registers
/// ([`write_lapic`]) and the version register (offset 0x30 of [`LocalApic::read_register`]);
/// every other register is 0.
pub fn lapic_to_kvm(state: &LocalApicState, x2apic_format: bool) -> kvm_lapic_state {
    let mut page = kvm_lapic_state { regs: [0; 1024] };
    put32(&mut page, reg::VERSION, state.version_register());
    write_lapic(state, x2apic_format, &mut page);
    page
}

// ---- non-vectored events ---------------------------------------------------------------

/// Writes a vCPU's pending [`VcpuEvents`] into `events` (for
/// `KVM_SET_VCPU_EVENTS`) and returns its `kvm_mp_state` (for
/// `KVM_SET_MP_STATE`): NMIs pending, SMI pending and the latched INIT, with
/// the `KVM_VCPUEVENT_VALID_NMI_PENDING` and `KVM_VCPUEVENT_VALID_SMM` flags;
/// every other field (`nmi.injected`, `nmi.masked`, `smi.smm`, exceptions,
/// interrupts) is left as the caller set it. A latched SIPI and an ExtINT
/// have no place in KVM's formats and are dropped (see the module docs).
/// `KVM_SET_VCPU_EVENTS` refuses SMM or a pending SMI on a vCPU whose
/// current `mp_state` is `KVM_MP_STATE_INIT_RECEIVED`: set the events before
/// the mp_state.
pub fn events_to_kvm(e: &VcpuEvents, events: &mut kvm_vcpu_events) -> kvm_mp_state {
    events.nmi.pending = e.nmi;
    events.smi.pending = u8::from(e.smi);
    events.smi.latched_init = u8::from(e.init);
    events.flags |= KVM_VCPUEVENT_VALID_NMI_PENDING | KVM_VCPUEVENT_VALID_SMM;
    kvm_mp_state {
        mp_state: if e.wait_for_sipi {
            KVM_MP_STATE_INIT_RECEIVED
        } else {
            KVM_MP_STATE_RUNNABLE
        },
    }
}

/// A vCPU's pending [`VcpuEvents`] from `KVM_GET_VCPU_EVENTS` and
/// `KVM_GET_MP_STATE`. The SMI and the latched INIT count only with
/// `KVM_VCPUEVENT_VALID_SMM`, the NMIs with
/// `KVM_VCPUEVENT_VALID_NMI_PENDING` (else `nmi.pending` is a flag, as in
/// old kernels, read as one NMI). Refused
/// ([`SnapshotError::InvalidValue`]): more than KVM's two pending NMIs. Put
/// the result in [`VcpuState::events`](crate::irqchip::VcpuState::events).
pub fn events_from_kvm(
    events: &kvm_vcpu_events,
    mp_state: &kvm_mp_state,
) -> Result<VcpuEvents, SnapshotError> {
    let nmi = if events.flags & KVM_VCPUEVENT_VALID_NMI_PENDING != 0 {
        events.nmi.pending
    } else {
        u8::from(events.nmi.pending != 0)
    };
    if nmi > VcpuEvents::NMI_MAX {
        return Err(SnapshotError::invalid(
            "nmi.pending (KVM keeps at most 2 NMIs pending)",
            nmi.into(),
        ));
    }
    let smm = events.flags & KVM_VCPUEVENT_VALID_SMM != 0;
    Ok(VcpuEvents {
        init: smm && events.smi.latched_init != 0,
        sipi: None,
        wait_for_sipi: mp_state.mp_state == KVM_MP_STATE_INIT_RECEIVED,
        nmi,
        smi: smm && events.smi.pending != 0,
        extint: false,
    })
}

// ---- migration -----------------------------------------------------------------------

/// What a migration import produced.
#[derive(Debug)]
pub struct KvmImport<S> {
    /// The chip, in the state KVM's restore would leave it. What the import's
    /// re-injection did (as `KVM_SET_IRQCHIP` re-injects asserted level pins
    /// without remote IRR and latched edges) went to the `Effects` passed in:
    /// the VMM MUST act on it, and load every vCPU's VMCS bitmap.
    pub chip: Irqchip<S, KVM_IOAPIC_NUM_PINS>,
    /// KVM's `base_address`, for the export back.
    pub base_address: u64,
}

impl<S> Irqchip<S, KVM_IOAPIC_NUM_PINS>
where
    S: AsRef<[VcpuSlot]> + AsMut<[VcpuSlot]>,
{
    /// Imports KVM's in-kernel irqchip into `storage`: the I/O APIC state and
    /// one LAPIC page per vCPU (vCPU `i` is `lapics[i]`, with `who[i]` giving
    /// what the page lacks), under the model `config`. `lapics`, `who` and
    /// `storage` must have the same length.
    ///
    /// What KVM's formats lack is rebuilt the way KVM's own restore does it:
    ///
    /// 1. the LAPICs are set (`KVM_SET_LAPIC`), every vCPU is rescanned
    ///    (`KVM_REQ_SCAN_IOAPIC`); `Exact` adopts the in-flight instances
    ///    conservatively (TMR set = needs its EOI), `TmrDriven` adopts the
    ///    pending level vectors;
    /// 2. the I/O APIC is set like `KVM_SET_IRQCHIP`: every vCPU rescans, and
    ///    asserted level pins without remote IRR and latched edges of unmasked
    ///    pins are re-injected (`kvm_ioapic_inject_all`); the EOI-storm
    ///    counters start at 0;
    /// 3. with `config.rtc_tracking`, the RTC EOI owed by each vCPU is rebuilt
    ///    from its LAPIC as `kvm_rtc_eoi_tracking_restore_all` does: owed
    ///    when the RTC entry (pin 8) targets the vCPU and its vector is in IRR
    ///    or ISR there;
    /// 4. every vCPU is rescanned once more so the bitmaps include the RTC
    ///    EOIs owed. The VMCS of every vCPU is taken to hold an empty bitmap
    ///    (a fresh VMCS): [`Irqchip::vmcs_update`] returns every non-zero word.
    ///
    /// Statistics count the import's rescans. KVM's in-kernel I/O APIC reads
    /// 8 destination bits (bits 55:49 are reserved there): import with
    /// `config.ioapic.msi_format` [`MsiFormat::Xapic`](crate::MsiFormat::Xapic),
    /// the default, for the entries to keep KVM's destinations.
    pub fn import_kvm<L: DeliveryLog>(
        config: IrqchipConfig,
        ioapic: &kvm_ioapic_state,
        lapics: &[kvm_lapic_state],
        who: &[KvmLapicIdentity],
        storage: S,
        fx: &mut Effects<L>,
    ) -> Result<KvmImport<S>, SnapshotError> {
        let io = ioapic_from_kvm(ioapic)?;
        validate_ioapic_state(&config.ioapic, &io.state.registers())?;
        if let Some(pin) = super::first_pin_beyond(&config.notified_pins(), KVM_IOAPIC_NUM_PINS) {
            return Err(SnapshotError::invalid(
                "ack_notifier_pins (a pin beyond the pin count)",
                pin.into(),
            ));
        }
        let n = storage.as_ref().len();
        for found in [lapics.len(), who.len()] {
            if found != n || !(1..=crate::MAX_VCPUS).contains(&n) {
                return Err(SnapshotError::Shape {
                    what: "vCPUs",
                    expected: n,
                    found,
                });
            }
        }
        for (i, (page, id)) in lapics.iter().zip(who).enumerate() {
            lapic_from_kvm(page, id).map_err(|e| e.at_vcpu(i as u16))?;
        }
        // 1. LAPICs set, every vCPU scanned (with_apics rescans all).
        let chip = Irqchip::with_apics(config, storage, |i| {
            let mut apic = LocalApic::new(ApicId::new(0));
            lapic_from_kvm(&lapics[i.index()], &who[i.index()])
                .expect("validated above")
                .apply(&mut apic);
            apic
        });
        {
            let mut sh = chip.shared.lock();
            // 2. KVM_SET_IRQCHIP: rescans all, re-injects.
            let a = sh.ioapic.load_registers(&io.state.registers());
            chip.apply(&mut sh, a, None, fx);
            // 3. RTC EOI tracking restore.
            if config.rtc_tracking && config.policy != Policy::NoIntercept {
                let rtc = sh.ioapic.entries()[RTC_GSI.get() as usize];
                for slot in chip.vcpus.as_ref() {
                    let mut v = slot.0.lock();
                    let owed = v.apic.matches(rtc.destination(config.ioapic.msi_format))
                        && v.apic.pending_eoi(rtc.vector());
                    v.map.set_rtc_owed(owed.then_some(rtc.vector()));
                }
            }
            // 4. Rescan so the bitmaps carry the RTC EOIs owed.
            chip.rescan_all(&sh, fx);
        }
        Ok(KvmImport {
            chip,
            base_address: io.base_address,
        })
    }
}

impl<S: AsRef<[VcpuSlot]>> Irqchip<S, KVM_IOAPIC_NUM_PINS> {
    /// Exports the chip as KVM's in-kernel irqchip state: the I/O APIC
    /// (`KVM_SET_IRQCHIP`) and one LAPIC page per vCPU (`KVM_SET_LAPIC`;
    /// covered registers only, see [`lapic_to_kvm`]; patch them into the
    /// source pages with [`write_lapic`] to keep the timer and LVTs),
    /// collected into `V` (a `Vec`, a `Box<[_]>`...). Consistent: the shared
    /// lock is held while the pages are written.
    pub fn export_kvm<V: FromIterator<kvm_lapic_state>>(
        &self,
        base_address: u64,
        x2apic_format: bool,
    ) -> (kvm_ioapic_state, V) {
        let mut sh = self.shared.lock();
        // `LineAware`: resolve the lazy remote IRRs first, and settle what
        // the guest retired in the race window in the copy, as `state` does.
        self.settle_all(&mut sh);
        let window = self.window(&sh);
        let io = window.as_ref().map_or(&sh.ioapic, |w| &w.ioapic);
        let k = ioapic_to_kvm(&io.state(), base_address);
        let pages = self
            .vcpus
            .as_ref()
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let mut v = *s.0.lock();
                if let Some(w) = &window {
                    self.settle_copy(w, i, &mut v);
                }
                lapic_to_kvm(&v.apic.state(), x2apic_format)
            })
            .collect();
        (k, pages)
    }
}
