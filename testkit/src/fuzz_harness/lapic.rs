//! The `lapic` target: accept, ack, EOI and register writes on three local
//! APICs.

use arbitrary::{Arbitrary, Result, Unstructured};

use eoi_exit::Vector;
use eoi_exit::irqchip::{Effects, IrqchipState, VcpuEvents, VcpuState};
use eoi_exit::lapic::{self, ApicMode, LocalApic};
use eoi_exit::{ApicId, DeliveryMode, InterruptMessage, TriggerMode};
use eoi_exit::{Irqchip, IrqchipConfig, LapicWrite, Msi, MsiFormat, VcpuId, VcpuSlot};

use super::{MAX_OPS, gen_message, gen_vector};

/// A change to one LAPIC's registers, applied directly to a [`LocalApic`] (the
/// fuzz input's counterpart of [`LapicWrite`], which an `Irqchip` applies with
/// `Irqchip::write_lapic`).
#[derive(Clone, Copy, Debug, Arbitrary)]
pub enum LapicChange {
    /// Guest ID register write.
    WriteId(u32),
    /// Guest LDR write.
    WriteLdr(u32),
    /// Guest DFR write.
    WriteDfr(u32),
    /// Guest SVR write.
    WriteSvr(u32),
    /// Guest TPR write.
    WriteTpr(u8),
    /// IA32_APIC_BASE mode switch.
    SetMode(ApicMode),
    /// Host-side identity change.
    SetId(u32),
    /// Advertise directed EOI or not.
    SetDirectedEoi(bool),
}

impl From<LapicChange> for LapicWrite {
    fn from(c: LapicChange) -> LapicWrite {
        match c {
            LapicChange::WriteId(v) => LapicWrite::Register {
                offset: 0x20,
                value: v,
            },
            LapicChange::WriteLdr(v) => LapicWrite::Register {
                offset: 0xD0,
                value: v,
            },
            LapicChange::WriteDfr(v) => LapicWrite::Register {
                offset: 0xE0,
                value: v,
            },
            LapicChange::WriteSvr(v) => LapicWrite::Register {
                offset: 0xF0,
                value: v,
            },
            LapicChange::WriteTpr(v) => LapicWrite::Register {
                offset: 0x80,
                value: u32::from(v),
            },
            LapicChange::SetMode(m) => LapicWrite::Mode(m),
            LapicChange::SetId(id) => LapicWrite::SetId(ApicId::new(id)),
            LapicChange::SetDirectedEoi(on) => LapicWrite::DirectedEoi(on),
        }
    }
}

/// A register as the guest reads it (0 where the mode has none).
fn reg(a: &LocalApic, offset: u32) -> u32 {
    a.read_register(offset).unwrap_or(0)
}

fn apply_lapic_change(apic: &mut LocalApic, c: LapicChange) {
    match c {
        LapicChange::WriteId(v) => _ = apic.write_register(0x20, v),
        LapicChange::WriteLdr(v) => _ = apic.write_register(0xD0, v),
        LapicChange::WriteDfr(v) => _ = apic.write_register(0xE0, v),
        LapicChange::WriteSvr(v) => _ = apic.write_register(0xF0, v),
        LapicChange::WriteTpr(v) => _ = apic.write_register(0x80, u32::from(v)),
        LapicChange::SetMode(m) => apic.set_mode(m),
        LapicChange::SetId(id) => apic.set_id(ApicId::new(id)),
        LapicChange::SetDirectedEoi(on) => apic.set_directed_eoi_supported(on),
    }
}

/// Number of LAPICs in the `lapic` harness.
const LAPICS: usize = 3;

/// One local APIC operation (`apic` indexes one of three APICs, modulo 3).
#[derive(Clone, Copy, Debug)]
pub enum LapicOp {
    /// Accept a message (already matched).
    Accept(u8, InterruptMessage),
    /// Route a message: every matching APIC accepts it (fixed), or the
    /// lowest-priority winner does (SDM or KVM arbitration).
    Route(InterruptMessage, bool),
    /// INTA.
    Ack(u8),
    /// EOI register write.
    Eoi(u8),
    /// Any register or mode change.
    Change(u8, LapicChange),
    /// Host-side injection into IRR (`probe::plant`, like `KVM_SET_LAPIC`).
    SetPending(u8, u8, bool),
    /// Host-side injection into ISR (`probe::plant`, like `KVM_SET_LAPIC`).
    SetInService(u8, u8, bool),
    /// On the chip: a guest ICR write by vCPU `.0` (the x2APIC MSR, or ICR2
    /// then ICR in xAPIC mode), any delivery mode, shorthand, level bits.
    Icr(u8, u64),
    /// On the chip: an MSI, often non-vectored (SMI, NMI, INIT, ExtINT).
    Msi(InterruptMessage),
    /// On the chip: `take_events(vcpu, init_blocked, nmi_blocked)`.
    Take(u8, bool, bool),
    /// On the chip: the guest takes an interrupt (`.1`) or writes EOI.
    ChipAckEoi(u8, bool),
}

impl LapicOp {
    fn generate(u: &mut Unstructured<'_>) -> Result<LapicOp> {
        let apic = u.int_in_range(0..=LAPICS as u8 - 1)?;
        Ok(match u.int_in_range(0u8..=21)? {
            16 | 17 => LapicOp::Icr(apic, gen_icr(u)?),
            18 => LapicOp::Msi(InterruptMessage {
                delivery_mode: [
                    DeliveryMode::Smi,
                    DeliveryMode::Nmi,
                    DeliveryMode::Init,
                    DeliveryMode::ExtInt,
                    DeliveryMode::StartUp,
                    DeliveryMode::Fixed,
                ][u.choose_index(6)?],
                ..gen_message(u)?
            }),
            19 | 20 => LapicOp::Take(apic, u.ratio(1u8, 4)?, u.ratio(1u8, 3)?),
            21 => LapicOp::ChipAckEoi(apic, u.arbitrary()?),
            0..=3 => LapicOp::Accept(apic, gen_message(u)?),
            4 | 5 => LapicOp::Route(gen_message(u)?, u.arbitrary()?),
            6..=8 => LapicOp::Ack(apic),
            9..=11 => LapicOp::Eoi(apic),
            12 => LapicOp::SetPending(apic, gen_vector(u)?, u.arbitrary()?),
            13 => LapicOp::SetInService(apic, gen_vector(u)?, u.arbitrary()?),
            _ => LapicOp::Change(
                apic,
                match u.int_in_range(0u8..=5)? {
                    0 => LapicChange::WriteTpr(u.arbitrary()?),
                    1 => LapicChange::WriteDfr(
                        // Flat, cluster (SDM DFR models), or anything.
                        [0xFFFF_FFFF, 0x0FFF_FFFF, u.arbitrary()?][u.choose_index(3)?],
                    ),
                    2 => LapicChange::WriteLdr(u32::from(u.arbitrary::<u8>()?) << 24),
                    3 => LapicChange::WriteSvr(
                        u.arbitrary::<u32>()? | if u.arbitrary()? { 0x100 } else { 0 },
                    ),
                    _ => u.arbitrary()?,
                },
            ),
        })
    }
}

/// An ICR value: mostly well-formed (a delivery mode, shorthand, APIC ID 0-2
/// or broadcast, level bits), sometimes any 64 bits.
fn gen_icr(u: &mut Unstructured<'_>) -> Result<u64> {
    if u.ratio(1u8, 8)? {
        return u.arbitrary();
    }
    let dm: u64 = [0, 1, 2, 4, 4, 5, 5, 6, 6, 3, 7][u.choose_index(11)?];
    let dest: u64 = [0, 1, 2, 0xFF, 0xFFFF_FFFF][u.choose_index(5)?];
    let shorthand: u64 = if u.ratio(1u8, 3)? {
        u.int_in_range(1..=3)?
    } else {
        0
    };
    let level = u64::from(u.ratio(1u8, 4)?);
    let assert = u64::from(level == 0 || u.arbitrary::<bool>()?);
    let logical = u64::from(u.ratio(1u8, 5)?);
    Ok(dest << 32
        | shorthand << 18
        | level << 15
        | assert << 14
        | logical << 11
        | dm << 8
        | u64::from(gen_vector(u)?))
}

/// The chip half of the harness: three vCPUs behind an `Irqchip`, for what
/// only the chip does (ICR sends, non-vectored delivery, `take_events`).
type Chip = Irqchip<[VcpuSlot; LAPICS]>;

/// The chip's snapshot, without allocating (a `heapless::Vec` of the three vCPUs).
fn chip_state(chip: &Chip) -> IrqchipState<heapless::Vec<VcpuState, LAPICS>> {
    chip.state()
}

/// One chip op, checked against the state before it: non-vectored messages
/// never reach IRR/ISR/TMR; at most two NMIs pend; only kicked vCPUs gain
/// events; `take_events` follows KVM's INIT/SIPI/NMI rules; the snapshot
/// stays valid after an INIT reset.
fn chip_step(chip: &Chip, op: &LapicOp) {
    let mut fx = Effects::new();
    let vid = |i: u8| VcpuId::new(u16::from(i) % LAPICS as u16);
    if let LapicOp::ChipAckEoi(i, ack) = *op {
        // Fills IRR/ISR for an INIT to clear; checked by the other targets.
        if ack {
            let _ = chip.ack(vid(i));
        } else {
            let _ = chip.guest_eoi(vid(i), &mut fx);
        }
        return;
    }
    let b = chip_state(chip);
    let mut taken = None;
    let vectored;
    match *op {
        LapicOp::Icr(i, value) => {
            let from = vid(i);
            vectored = matches!((value >> 8) & 7, 0 | 1);
            if b.vcpus[from.index()].apic.mode == ApicMode::X2Apic {
                chip.write_lapic(from, LapicWrite::Icr(value), &mut fx);
            } else {
                let reg = |offset, value| LapicWrite::Register { offset, value };
                chip.write_lapic(from, reg(0x310, (value >> 32) as u32), &mut fx);
                chip.write_lapic(from, reg(0x300, value as u32), &mut fx);
            }
            let apic = chip.vcpu(from).expect("in range").apic;
            if apic.mode() != ApicMode::Disabled {
                assert_eq!(
                    apic.read_register(0x300),
                    Some(value as u32 & !(1 << 12)),
                    "ICR read-back"
                );
            }
        }
        LapicOp::Msi(msg) => {
            vectored = uses_vector(msg.delivery_mode);
            // The chip decodes the x2APIC API's form, which carries any
            // 32-bit destination (a start-up MSI is reserved: not delivered).
            let msi = Msi::from_message(&msg, MsiFormat::X2apicApi).expect("32-bit form");
            chip.send_msi(&msi, &mut fx);
        }
        LapicOp::Take(i, init_blocked, nmi_blocked) => {
            vectored = false;
            let v = vid(i);
            taken = Some((
                v,
                init_blocked,
                nmi_blocked,
                chip.take_events(v, init_blocked, nmi_blocked, &mut fx),
            ));
        }
        _ => unreachable!("not a chip op"),
    }
    let a = chip_state(chip);
    for (i, (va, vb)) in a.vcpus.iter().zip(&b.vcpus).enumerate() {
        let (ea, eb) = (va.events, vb.events);
        assert!(ea.nmi <= 2, "vCPU {i}: {} NMIs pending", ea.nmi);
        let id = VcpuId::new(i as u16);
        let init_taken = taken.is_some_and(|(v, .., t)| v == id && t.init);
        if !vectored && !init_taken {
            assert_eq!(
                (va.apic.irr, va.apic.isr, va.apic.tmr),
                (vb.apic.irr, vb.apic.isr, vb.apic.tmr),
                "vCPU {i}: a non-vectored op touched IRR/ISR/TMR ({op:?})"
            );
        }
        if taken.is_none() && ea != eb {
            assert!(
                fx.kick.contains(id),
                "vCPU {i}: events latched without a kick"
            );
            assert!(
                vb.apic.mode != ApicMode::Disabled,
                "a disabled APIC latched"
            );
        }
    }
    if let Some((v, init_blocked, nmi_blocked, t)) = taken {
        let (eb, ea) = (b.vcpus[v.index()].events, a.vcpus[v.index()].events);
        check_take(v, init_blocked, nmi_blocked, &t, &eb, &ea);
        if t.init {
            // The reset rebuilt the map: the whole snapshot stays consistent.
            a.validate()
                .expect("the chip's snapshot stays valid after an INIT");
            let ap = &a.vcpus[v.index()].apic;
            assert!(ap.irr.is_empty() && ap.isr.is_empty() && ap.tmr.is_empty());
            assert_eq!((ap.svr, ap.tpr, ap.icr), (0xFF, 0, 0), "INIT reset");
            assert_eq!(
                (ap.mode, ap.initial_id),
                (
                    b.vcpus[v.index()].apic.mode,
                    b.vcpus[v.index()].apic.initial_id
                )
            );
        }
    }
}

/// `take_events` against the events before (`b`) and after (`a`) it.
fn check_take(
    v: VcpuId,
    init_blocked: bool,
    nmi_blocked: bool,
    t: &VcpuEvents,
    b: &VcpuEvents,
    a: &VcpuEvents,
) {
    assert!(a.sipi.is_none(), "a SIPI outlived the entry");
    if init_blocked {
        assert!(!t.init && t.sipi.is_none() && a.init == b.init);
    } else {
        assert!(!a.init && t.init == b.init);
    }
    let waiting = if t.init {
        v.get() != 0
    } else {
        b.wait_for_sipi
    };
    assert_eq!(
        t.sipi.is_some(),
        waiting && b.sipi.is_some() && !init_blocked
    );
    assert_eq!(t.wait_for_sipi, a.wait_for_sipi);
    assert_eq!(a.wait_for_sipi, waiting && t.sipi.is_none());
    if t.wait_for_sipi {
        assert!(
            t.nmi == 0 && !t.smi && !t.extint,
            "a waiting vCPU took {t:?}"
        );
    } else {
        let had = if t.init { 0 } else { b.nmi };
        let limit = if nmi_blocked { 1 } else { 2 };
        assert_eq!(t.nmi, had.min(limit));
        assert_eq!(a.nmi, t.nmi - u8::from(!nmi_blocked && t.nmi > 0));
        assert!(!a.smi && !a.extint);
        assert_eq!((t.smi, t.extint), (b.smi && !t.init, b.extint && !t.init));
    }
}

/// Whether the delivery mode carries a vector into IRR (Fixed, lowest
/// priority).
fn uses_vector(m: DeliveryMode) -> bool {
    matches!(m, DeliveryMode::Fixed | DeliveryMode::LowestPriority)
}

pub(super) fn check_registers(a: &LocalApic) {
    assert!(crate::probe::lapic_consistent(a), "highest-ISR cache stale");
    if let Some(dfr) = a.read_register(0xE0) {
        assert_eq!(dfr | 0x0FFF_FFFF, dfr, "DFR bits 27:0 not all ones");
    }
    let svr_mask = 0x3FF
        | if reg(a, 0x30) & 1 << 24 != 0 {
            1 << 12
        } else {
            0
        };
    assert_eq!(
        (reg(a, 0xF0)) & !(svr_mask | 1 << 12),
        0,
        "SVR reserved bits set"
    );
    let isrv = a.isr().highest().map_or(0, |v| v.get());
    let ppr = reg(a, 0xA0) as u8;
    assert_eq!(
        ppr >> 4,
        ((reg(a, 0x80) as u8) >> 4).max(isrv >> 4),
        "PPR class wrong"
    );
    let _ = reg(a, 0x90) as u8;
    let _ = reg(a, 0x30);
    match a.mode() {
        ApicMode::X2Apic => {
            // SDM: x2APIC LDR = cluster (ID[19:4]) << 16 | 1 << ID[3:0].
            let id = a.state().initial_id;
            assert_eq!((reg(a, 0xD0)), (id >> 4) << 16 | 1 << (id & 0xf));
            assert_eq!(a.id().get(), id);
            assert_eq!((reg(a, 0x20)), id);
        }
        ApicMode::XApic => {
            // The LDR may keep an x2APIC value after a host x2APIC -> xAPIC
            // switch (KVM clears it only at reset); guest writes keep 31:24.
            assert_eq!((reg(a, 0x20)), a.id().get() << 24);
        }
        ApicMode::Disabled => {
            assert_eq!(a.highest_deliverable(), None);
            assert!(!crate::probe::accepts_vectored(a));
        }
    }
    if let Some(v) = a.highest_deliverable() {
        assert_eq!(Some(v), a.irr().highest());
        assert!((v.get() >> 4) > ppr >> 4);
    }
}

/// Checks one `accept` against the state before it.
fn check_accept(b: &LocalApic, a: &LocalApic, msg: &InterruptMessage, r: lapic::Acceptance) {
    use eoi_exit::lapic::Acceptance;
    let v = msg.vector;
    match r {
        Acceptance::Ignored(why) => {
            // Nothing changes, but an illegal vector is logged (SDM "receive
            // illegal vector": ESR bit 6, readable after the next ESR write).
            let mut want = b.state();
            if why == lapic::IgnoreReason::IllegalVector {
                want.esr_pending |= 0x40;
            }
            assert_eq!(a.state(), want, "an ignored message changed the APIC");
            let enabled = b.mode() != ApicMode::Disabled && (reg(b, 0xF0) & 0x100 != 0);
            assert!(
                !enabled || !uses_vector(msg.delivery_mode) || v.get() < 16,
                "a legal vectored message was ignored by an enabled APIC"
            );
        }
        Acceptance::Accepted { vector, trigger } | Acceptance::Coalesced { vector, trigger } => {
            assert!(v.get() >= 16, "illegal vector {v:?} accepted");
            assert!(uses_vector(msg.delivery_mode));
            assert_eq!((vector, trigger), (v, msg.trigger));
            assert_eq!(
                matches!(r, Acceptance::Accepted { .. }),
                !b.irr().contains(v),
                "Accepted/Coalesced disagrees with IRR"
            );
            let mut irr = *b.irr();
            irr.insert(v);
            assert_eq!(*a.irr(), irr);
            let mut tmr = *b.tmr();
            if trigger == TriggerMode::Level {
                tmr.insert(v);
            } else {
                tmr.remove(v);
            }
            assert_eq!(*a.tmr(), tmr, "TMR changed beyond the accepted vector");
            assert_eq!(a.isr(), b.isr());
        }
    }
}

fn lapic_step(apics: &mut [LocalApic; LAPICS], chip: &Chip, op: &LapicOp) {
    if matches!(
        op,
        LapicOp::Icr(..) | LapicOp::Msi(..) | LapicOp::Take(..) | LapicOp::ChipAckEoi(..)
    ) {
        chip_step(chip, op);
        return;
    }
    let before = *apics;
    let idx = |i: u8| usize::from(i) % LAPICS;
    let mut touched_tmr: Option<usize> = None;
    match *op {
        LapicOp::Accept(i, msg) => {
            let i = idx(i);
            let r = apics[i].accept(&msg);
            check_accept(&before[i], &apics[i], &msg, r);
            touched_tmr = Some(i);
        }
        LapicOp::Route(msg, sdm) => {
            if msg.delivery_mode == DeliveryMode::LowestPriority {
                let c = apics.iter().enumerate();
                let w = lapic::lowest_priority(
                    c,
                    &msg,
                    if sdm {
                        eoi_exit::irqchip::Arbitration::SdmPriority
                    } else {
                        eoi_exit::irqchip::Arbitration::KvmVectorHashing
                    },
                );
                if let Some(w) = w {
                    assert!(w < LAPICS, "arbitration picked {w}");
                    assert!(
                        apics[w].matches(msg.destination)
                            && crate::probe::accepts_vectored(&apics[w])
                    );
                    let r = apics[w].accept(&msg);
                    check_accept(&before[w], &apics[w], &msg, r);
                } else {
                    assert!(
                        !apics.iter().any(
                            |a| a.matches(msg.destination) && crate::probe::accepts_vectored(a)
                        ),
                        "arbitration found nobody but someone is eligible"
                    );
                }
                assert!(
                    apics
                        .iter()
                        .zip(&before)
                        .all(|(a, b)| a.tmr() == b.tmr() || a.irr().contains(msg.vector))
                );
            } else {
                for i in 0..LAPICS {
                    if apics[i].matches(msg.destination) {
                        assert!(apics[i].mode() != ApicMode::Disabled);
                        let r = apics[i].accept(&msg);
                        check_accept(&before[i], &apics[i], &msg, r);
                    }
                }
            }
            for (a, b) in apics.iter().zip(&before) {
                // An unchanged APIC passed these checks after the last op.
                if a != b {
                    check_registers(a);
                }
            }
            return;
        }
        LapicOp::Ack(i) => {
            let i = idx(i);
            let b = &before[i];
            let r = apics[i].ack();
            let a = &apics[i];
            assert_eq!(r, b.highest_deliverable());
            match r {
                Some(v) => {
                    assert!(
                        (v.get() >> 4) > (reg(b, 0xA0) as u8) >> 4,
                        "acked below PPR"
                    );
                    let (mut irr, mut isr) = (*b.irr(), *b.isr());
                    irr.remove(v);
                    assert!(isr.insert(v), "acked {v:?} already in service");
                    assert_eq!((*a.irr(), *a.isr()), (irr, isr));
                    assert!((reg(a, 0xA0) as u8) >= v.get() & 0xF0);
                }
                None => assert_eq!(a, b, "a failed ack changed the APIC"),
            }
        }
        LapicOp::Eoi(i) => {
            let i = idx(i);
            let b = &before[i];
            let r = apics[i].eoi();
            let a = &apics[i];
            if b.mode() == ApicMode::Disabled || b.isr().is_empty() {
                assert_eq!(r, None, "spurious EOI retired something");
                assert_eq!(a, b, "a spurious EOI changed the APIC");
            } else {
                let e = r.expect("non-spurious EOI");
                assert_eq!(
                    Some(e.vector),
                    b.isr().highest(),
                    "EOI did not pop the highest ISR"
                );
                let mut isr = *b.isr();
                isr.remove(e.vector);
                assert_eq!(*a.isr(), isr);
                assert_eq!(a.irr(), b.irr());
                assert_eq!(e.level, b.tmr().contains(e.vector));
                assert_eq!(
                    e.broadcast,
                    e.level && !(reg(b, 0x30) & 1 << 24 != 0 && reg(b, 0xF0) & 1 << 12 != 0)
                );
            }
        }
        LapicOp::Change(i, c) => {
            let i = idx(i);
            apply_lapic_change(&mut apics[i], c);
            let (a, b) = (&apics[i], &before[i]);
            assert_eq!((a.irr(), a.isr()), (b.irr(), b.isr()));
            if let LapicChange::WriteTpr(t) = c {
                assert_eq!((reg(a, 0x80) as u8), t);
            }
        }
        LapicOp::SetPending(i, v, level) => {
            let i = idx(i);
            // Through a snapshot, as KVM_SET_LAPIC would; a vector 0..=15
            // cannot be planted (no LAPIC holds one) and changes nothing.
            crate::probe::plant(&mut apics[i], Vector::new(v), false, level);
            touched_tmr = Some(i);
        }
        LapicOp::Icr(..) | LapicOp::Msi(..) | LapicOp::Take(..) | LapicOp::ChipAckEoi(..) => {
            unreachable!("chip ops return above")
        }
        LapicOp::SetInService(i, v, level) => {
            let i = idx(i);
            if crate::probe::plant(&mut apics[i], Vector::new(v), true, level) {
                assert_eq!(
                    apics[i].isr().highest(),
                    before[i].isr().highest().max(Some(Vector::new(v)))
                );
            }
            touched_tmr = Some(i);
        }
    }
    for (i, (a, b)) in apics.iter().zip(&before).enumerate() {
        // Every check below holds for an APIC the op left unchanged (it
        // passed `check_registers` after the last op, or at the start): skip
        // it rather than recompute the PPR, APR and highest vectors of all
        // three per op under cargo-fuzz's comparison tracing.
        if a == b {
            continue;
        }
        check_registers(a);
        if touched_tmr != Some(i) {
            assert_eq!(a.tmr(), b.tmr(), "APIC {i}: TMR changed by {op:?}");
        }
        if !matches!(op, LapicOp::Accept(..) | LapicOp::SetPending(..)) {
            assert!(
                a.irr().difference(b.irr()).is_empty(),
                "APIC {i}: IRR grew without acceptance"
            );
        }
    }
}

/// Harness of the `lapic` target: accept, ack, EOI and register writes (TPR,
/// ID, LDR, DFR, SVR, mode, directed EOI) on three local APICs.
///
/// Checks: LAPIC consistency (`probe::lapic_consistent`); TMR changes only on acceptance (and host-side
/// injection) and only at the accepted vector; illegal vectors never reach
/// IRR; ack takes the highest deliverable vector above the PPR; EOI pops the
/// highest ISR vector with the right level/broadcast flags; a spurious EOI
/// changes nothing; register read-back rules; lowest-priority arbitration
/// picks an eligible APIC. Beside them, a three-vCPU `Irqchip` takes ICR
/// writes (every delivery mode, shorthand and level bit), non-vectored MSIs
/// and `take_events` (see `chip_step`). The run ends by EOIing every APIC
/// empty.
pub fn lapic(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let _ = run_lapic(&mut u);
}

fn run_lapic(u: &mut Unstructured<'_>) -> Result<()> {
    let mut apics = [LocalApic::new(ApicId::new(0)); LAPICS];
    for (i, a) in apics.iter_mut().enumerate() {
        let id = if u.ratio(3u8, 4)? {
            i as u32
        } else {
            u.arbitrary()?
        };
        let mode: ApicMode = u.arbitrary()?;
        *a = if u.ratio(3u8, 4)? {
            LocalApic::new_enabled(ApicId::new(id), mode)
        } else {
            LocalApic::new(ApicId::new(id))
        };
        a.set_directed_eoi_supported(u.arbitrary()?);
        check_registers(a);
    }
    let chip_mode = if u.arbitrary()? {
        ApicMode::X2Apic
    } else {
        ApicMode::XApic
    };
    let mut config = IrqchipConfig::default();
    config.ioapic.msi_format = MsiFormat::X2apicApi;
    let chip: Chip = Irqchip::new(config, chip_mode, [const { VcpuSlot::new() }; LAPICS]);
    let mut n = 0;
    while !u.is_empty() && n < MAX_OPS {
        n += 1;
        let op = LapicOp::generate(u)?;
        lapic_step(&mut apics, &chip, &op);
    }
    for i in 0..LAPICS {
        if apics[i].mode() == ApicMode::Disabled {
            continue;
        }
        for _ in 0..=256 {
            let had = !apics[i].isr().is_empty();
            lapic_step(&mut apics, &chip, &LapicOp::Eoi(i as u8));
            if !had {
                break;
            }
        }
        assert!(
            apics[i].isr().is_empty(),
            "APIC {i}: EOIs did not drain ISR"
        );
    }
    Ok(())
}
