//! KVM state conversions (feature `kvm`): round-trip properties, and a real
//! migration from KVM's in-kernel irqchip into the model.
//!
//! The migration test runs a guest on KVM's in-kernel irqchip, takes its state
//! (`KVM_GET_IRQCHIP`, `KVM_GET_LAPIC`, `IA32_APIC_BASE`), imports it into an
//! `Irqchip` for every policy, then continues the same events on KVM and on
//! the model and compares the I/O APIC table and every LAPIC's IRR/ISR/TMR.
//! Where `/dev/kvm` is unusable it prints one
//! `snapshot_kvm: skipped: no usable /dev/kvm: ...` line and passes.
//!
//! Only compiled with feature `kvm` (see `main.rs`).

use eoi_exit::irqchip::Delivery;
use eoi_exit::snapshot::kvm::{
    IOAPIC_DEFAULT_BASE_ADDRESS, KVM_IOAPIC_NUM_PINS, KvmLapicIdentity, apic_mode_from_base,
    ioapic_from_kvm, ioapic_to_kvm, kvm_representable, lapic_from_kvm, lapic_to_kvm, write_lapic,
};
use eoi_exit::snapshot::{IoapicState, LocalApicState, SNAPSHOT_VERSION};
use eoi_exit::{
    ApicId, ApicMode, Effects, IoapicConfig, Irqchip, IrqchipConfig, LocalApic, Pin, PinSet,
    Policy, RedirectionEntry, VcpuId, VcpuSlot, Vector, VectorSet,
};
use kvm_bindings::{
    KVM_IRQCHIP_IOAPIC, kvm_ioapic_state, kvm_ioapic_state__bindgen_ty_1, kvm_irqchip,
    kvm_lapic_state,
};
use proptest::prelude::*;

/// Local APIC register offsets in the KVM register page (Intel SDM Vol. 3,
/// table "Local APIC Register Address Map").
mod reg {
    pub const ID: usize = 0x20;
    pub const VERSION: usize = 0x30;
    pub const TPR: usize = 0x80;
    pub const PPR: usize = 0xA0;
    pub const LDR: usize = 0xD0;
    pub const DFR: usize = 0xE0;
    pub const SVR: usize = 0xF0;
    pub const ISR: usize = 0x100;
    pub const TMR: usize = 0x180;
    pub const IRR: usize = 0x200;
    pub const ESR: usize = 0x280;
    pub const ICR: usize = 0x300;
    pub const ICR2: usize = 0x310;
    pub const STRIDE: usize = 0x10;
}

fn bits_of(k: &kvm_ioapic_state, i: usize) -> u64 {
    // SAFETY: every redirection entry is plain 64 bits.
    unsafe { k.redirtbl[i].bits }
}

fn get32(p: &kvm_lapic_state, off: usize) -> u32 {
    u32::from_le_bytes(core::array::from_fn(|i| p.regs[off + i] as u8))
}

// ---- strategies --------------------------------------------------------------

fn vector_set(legal_only: bool) -> impl Strategy<Value = VectorSet> {
    any::<[u64; 4]>().prop_map(move |mut w| {
        if legal_only {
            w[0] &= !0xffff;
        }
        VectorSet::from_u64_words(w)
    })
}

/// Any model I/O APIC state KVM can represent (see `kvm_representable`).
fn representable_ioapic() -> impl Strategy<Value = IoapicState<24>> {
    (
        proptest::array::uniform24(any::<u64>()),
        any::<u32>(),
        any::<u8>(),
        0u8..16,
    )
        .prop_map(|(raw, on, ioregsel, id)| {
            let entries = raw.map(|b| {
                let e = RedirectionEntry(b);
                if e.is_level() {
                    e
                } else {
                    RedirectionEntry(e.0 & !RedirectionEntry::REMOTE_IRR)
                }
            });
            let mut line = PinSet::EMPTY;
            let mut pending_edge = PinSet::EMPTY;
            for (i, e) in entries.iter().enumerate() {
                let asserted = on & (1 << i) != 0;
                let low = e.0 & RedirectionEntry::POLARITY_LOW != 0;
                if asserted != low {
                    line.insert(Pin::new(i as u8));
                }
                if asserted && !e.is_level() {
                    pending_edge.insert(Pin::new(i as u8));
                }
            }
            IoapicState {
                version: SNAPSHOT_VERSION,
                pins: 24,
                config: IoapicConfig::default(),
                entries,
                line,
                pending_edge,
                eoi_count: [0; 24],
                ioregsel,
                id,
            }
        })
}

/// Any `kvm_ioapic_state` KVM can produce (no remote IRR on edge entries,
/// 8-bit IOREGSEL, 4-bit ID, 24 pins).
fn kvm_ioapic() -> impl Strategy<Value = kvm_ioapic_state> {
    (
        proptest::array::uniform24(any::<u64>()),
        0u32..(1 << 24),
        0u32..256,
        0u32..16,
        any::<u64>(),
    )
        .prop_map(|(raw, irr, ioregsel, id, base_address)| {
            let mut k = kvm_ioapic_state {
                base_address,
                ioregsel,
                id,
                irr,
                ..Default::default()
            };
            for (i, b) in raw.into_iter().enumerate() {
                let e = RedirectionEntry(b);
                let e = if e.is_level() {
                    e
                } else {
                    RedirectionEntry(e.0 & !RedirectionEntry::REMOTE_IRR)
                };
                k.redirtbl[i] = kvm_ioapic_state__bindgen_ty_1 { bits: e.0 };
            }
            k
        })
}

fn apic_mode() -> impl Strategy<Value = ApicMode> {
    prop_oneof![
        Just(ApicMode::XApic),
        Just(ApicMode::X2Apic),
        Just(ApicMode::Disabled)
    ]
}

/// Any model LAPIC state whose every field the register page carries.
fn page_lapic() -> impl Strategy<Value = (LocalApicState, bool)> {
    (
        (any::<u32>(), any::<u8>(), apic_mode(), any::<u32>()),
        (any::<u32>(), any::<u32>(), any::<u8>(), any::<bool>()),
        // IRR and ISR may hold vectors 0-15: KVM stores them verbatim.
        (vector_set(false), vector_set(false), vector_set(false)),
        (any::<bool>(), any::<u64>(), any::<u8>()),
    )
        .prop_map(
            |((id, xid, mode, ldr), (dfr, svr, tpr, deoi), (irr, isr, tmr), (fmt, icr, esr))| {
                let s = LocalApicState {
                    version: SNAPSHOT_VERSION,
                    initial_id: id,
                    // In x2APIC mode the xAPIC ID is not in the page.
                    xapic_id: if mode == ApicMode::X2Apic {
                        id as u8
                    } else {
                        xid
                    },
                    mode,
                    ldr: if mode == ApicMode::X2Apic {
                        (id >> 4) << 16 | 1 << (id & 0xf) // SDM x2APIC LDR
                    } else {
                        // Bits 23:0 are reserved: a guest write clears them.
                        ldr & 0xFF00_0000
                    },
                    dfr: dfr | 0x0FFF_FFFF,
                    svr: svr & 0x13FF,
                    tpr,
                    directed_eoi_supported: deoi,
                    irr,
                    isr,
                    tmr,
                    // KVM keeps any ICR value a page gives it; it has no
                    // ESR latch.
                    icr,
                    esr,
                    esr_pending: 0,
                };
                (s, fmt)
            },
        )
}

fn identity(s: &LocalApicState, x2apic_format: bool) -> KvmLapicIdentity {
    KvmLapicIdentity {
        initial_id: ApicId::new(s.initial_id),
        mode: s.mode,
        x2apic_format,
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        failure_persistence: None,
        ..ProptestConfig::with_cases(512)
    })]

    /// model -> KVM -> model is the identity on every state KVM can represent.
    #[test]
    fn ioapic_model_kvm_model_identity(st in representable_ioapic(), base in any::<u64>()) {
        prop_assert!(kvm_representable(&st));
        let k = ioapic_to_kvm(&st, base);
        let back = ioapic_from_kvm(&k).unwrap();
        prop_assert_eq!(back.state, st);
        prop_assert_eq!(back.base_address, base);
    }

    /// KVM -> model -> KVM is the identity on every field (pad aside).
    #[test]
    fn ioapic_kvm_model_kvm_identity(k in kvm_ioapic()) {
        let m = ioapic_from_kvm(&k).unwrap();
        let k2 = ioapic_to_kvm(&m.state, m.base_address);
        prop_assert_eq!(k2.base_address, k.base_address);
        prop_assert_eq!(k2.ioregsel, k.ioregsel);
        prop_assert_eq!(k2.id, k.id);
        prop_assert_eq!(k2.irr, k.irr);
        for i in 0..KVM_IOAPIC_NUM_PINS {
            prop_assert_eq!(bits_of(&k2, i), bits_of(&k, i));
        }
    }

    /// What KVM cannot represent is lost exactly as documented: storm counters,
    /// and the line of an edge pin that was delivered.
    #[test]
    fn ioapic_loss_is_exactly_the_documented_one(st in representable_ioapic(), counts in proptest::array::uniform24(0u16..10_000)) {
        let mut s = st;
        s.eoi_count = counts;
        // Edge pins whose edge was delivered: line high, nothing latched.
        s.pending_edge = PinSet::EMPTY;
        let back = ioapic_from_kvm(&ioapic_to_kvm(&s, 0)).unwrap().state;
        prop_assert_eq!(back.eoi_count, [0; 24]);
        prop_assert_eq!(back.entries, s.entries);
        for i in 0..24 {
            let p = Pin::new(i as u8);
            if s.entries[i].is_level() {
                prop_assert_eq!(back.line.contains(p), s.line.contains(p));
            }
            prop_assert!(!back.pending_edge.contains(p) || !s.entries[i].is_level());
        }
    }

    /// model -> KVM page -> model is the identity, both ID formats.
    #[test]
    fn lapic_model_kvm_model_identity((s, fmt) in page_lapic()) {
        let page = lapic_to_kvm(&s, fmt);
        let back = lapic_from_kvm(&page, &identity(&s, fmt)).unwrap();
        prop_assert_eq!(back, s);
    }

    /// KVM page -> model -> KVM page is the identity on the registers the model
    /// covers, and leaves every other byte of the page alone.
    #[test]
    fn lapic_kvm_model_kvm_identity(
        raw in proptest::collection::vec(any::<u8>(), 1024),
        (s, fmt) in page_lapic(),
    ) {
        // A random page with the model's registers made valid.
        let mut page = kvm_lapic_state { regs: [0; 1024] };
        for (i, b) in raw.iter().enumerate() {
            page.regs[i] = *b as _;
        }
        let mut valid = lapic_to_kvm(&s, fmt);
        // Keep random bytes outside the covered registers.
        for off in (0..1024).step_by(16) {
            let covered = matches!(off, reg::ID | reg::TPR | reg::PPR | reg::LDR | reg::DFR | reg::SVR | reg::ESR | reg::ICR | reg::ICR2)
                || (reg::ISR..reg::IRR + 8 * reg::STRIDE).contains(&off);
            if !covered && off != reg::VERSION {
                valid.regs[off..off + 16].copy_from_slice(&page.regs[off..off + 16]);
            }
        }
        // The version register keeps its other bits.
        let ver = get32(&page, reg::VERSION) & !(1 << 24) | get32(&valid, reg::VERSION) & (1 << 24);
        for (i, b) in ver.to_le_bytes().into_iter().enumerate() {
            valid.regs[reg::VERSION + i] = b as _;
        }
        let m = lapic_from_kvm(&valid, &identity(&s, fmt)).unwrap();
        let mut out = valid;
        // Scribble over the covered registers first: write_lapic must restore them.
        for off in [reg::ID, reg::TPR, reg::LDR, reg::SVR, reg::ISR, reg::IRR] {
            out.regs[off] = !out.regs[off];
        }
        write_lapic(&m, fmt, &mut out);
        prop_assert_eq!(&out.regs[..], &valid.regs[..]);
    }
}

#[test]
fn lapic_from_kvm_refuses_what_kvm_refuses_and_takes_what_it_holds() {
    let s = LocalApic::new_enabled(ApicId::new(3), ApicMode::X2Apic).state();
    let who = identity(&s, true);
    let mut page = lapic_to_kvm(&s, true);
    page.regs[reg::ID] = 4; // x2APIC ID 4 on vCPU 3
    assert!(lapic_from_kvm(&page, &who).is_err());
    // Vector 2 pending, 0x0e in service: KVM stores such pages verbatim and
    // the import takes them as KVM holds them.
    let mut page = lapic_to_kvm(&s, true);
    page.regs[reg::IRR] = 0x04;
    page.regs[reg::ISR + 1] = 0x40;
    let m = lapic_from_kvm(&page, &who).expect("KVM holds this page");
    assert!(m.irr.contains(Vector::new(2)) && m.isr.contains(Vector::new(0x0e)));
    // Legacy ID format: the ID register is ignored in x2APIC mode, as KVM does.
    let mut page = lapic_to_kvm(&s, false);
    assert_eq!(get32(&page, reg::ID), 3 << 24);
    page.regs[reg::ID + 3] = 9;
    assert_eq!(
        lapic_from_kvm(&page, &identity(&s, false)).unwrap(),
        s,
        "legacy format"
    );
    // xAPIC LDR bits 23:0 are reserved (a guest write clears them; KVM's
    // logical match reads bits 31:24): a page holding them imports as the
    // logical ID alone.
    let x = LocalApic::new_enabled(ApicId::new(3), ApicMode::XApic).state();
    let mut page = lapic_to_kvm(&x, false);
    page.regs[reg::LDR] = 0x5a;
    page.regs[reg::LDR + 3] = 0x04;
    let m = lapic_from_kvm(&page, &identity(&x, false)).expect("KVM holds this page");
    assert_eq!(m.ldr, 0x0400_0000);
    assert_eq!(apic_mode_from_base(0xFEE0_0900), ApicMode::XApic);
    assert_eq!(apic_mode_from_base(0xFEE0_0D00), ApicMode::X2Apic);
    assert_eq!(apic_mode_from_base(0xFEE0_0000), ApicMode::Disabled);
}

#[test]
fn ioapic_from_kvm_refuses_out_of_range_state() {
    let k = kvm_ioapic_state {
        irr: 1 << 24,
        ..Default::default()
    };
    let e = ioapic_from_kvm(&k).unwrap_err();
    assert!(e.to_string().contains("a pin beyond 23): 24"), "{e}");
    let k = kvm_ioapic_state {
        id: 16,
        ..Default::default()
    };
    assert!(ioapic_from_kvm(&k).is_err());
    let k = kvm_ioapic_state {
        ioregsel: 0x100,
        ..Default::default()
    };
    assert!(ioapic_from_kvm(&k).is_err());
    let mut k = kvm_ioapic_state::default();
    k.redirtbl[3] = kvm_ioapic_state__bindgen_ty_1 {
        bits: RedirectionEntry::REMOTE_IRR,
    };
    assert!(ioapic_from_kvm(&k).is_err());
}

/// The import rebuilds what KVM's format lacks, as KVM's restore does: the RTC
/// EOI owed from LAPIC IRR/ISR, the bitmaps by a rescan, `Exact`'s in-flight
/// level instances from TMR; and it re-injects like `KVM_SET_IRQCHIP`.
#[test]
fn import_rebuilds_rtc_owed_and_bitmaps_and_reinjects() {
    // Source: a model chip with the RTC pending on vCPU 1, a level 0x40 in
    // service on vCPU 0, and an asserted level pin whose remote IRR is clear.
    let src: Irqchip<_> = Irqchip::new(
        IrqchipConfig {
            rtc_tracking: true,
            ..IrqchipConfig::default()
        },
        ApicMode::X2Apic,
        [const { VcpuSlot::new() }; 2],
    );
    let mut fx = Effects::new();
    src.write_entry(Pin::new(8), 0x38 | 1 << 56, &mut fx);
    src.set_line(Pin::new(8), true, &mut fx);
    src.set_line(Pin::new(8), false, &mut fx);
    src.write_entry(Pin::new(5), 0x40 | 1 << 15, &mut fx);
    src.set_line(Pin::new(5), true, &mut fx);
    let _ = src.ack(VcpuId::new(0));
    let (mut kio, pages) = src.export_kvm::<Vec<_>>(IOAPIC_DEFAULT_BASE_ADDRESS, true);
    // Pin 9: level, asserted, remote IRR clear (as after an EOI-storm throttle).
    kio.redirtbl[9] = kvm_ioapic_state__bindgen_ty_1 {
        bits: 0x59 | 1 << 15 | 1 << 56,
    };
    kio.irr |= 1 << 9;
    let who = [0, 1].map(|i| KvmLapicIdentity {
        initial_id: ApicId::new(i),
        mode: ApicMode::X2Apic,
        x2apic_format: true,
    });
    for policy in Policy::ALL {
        let cfg = IrqchipConfig {
            policy,
            rtc_tracking: true,
            ..IrqchipConfig::default()
        };
        let mut fx = Effects::with_log(Vec::<Delivery>::new());
        let storage = [const { VcpuSlot::new() }; 2];
        let imp = Irqchip::import_kvm(cfg, &kio, &pages, &who, storage, &mut fx).unwrap();
        let c = &imp.chip;
        // Re-injected: pin 9 to vCPU 1, remote IRR now set.
        assert_eq!(fx.log.len(), 1, "{policy:?}");
        assert_eq!(fx.log[0].pin, Some(Pin::new(9)));
        assert!(c.ioapic().entries()[9].remote_irr());
        assert!(c.ioapic().entries()[5].remote_irr());
        let v0 = c.vcpu(VcpuId::new(0)).unwrap();
        let v1 = c.vcpu(VcpuId::new(1)).unwrap();
        assert!(v1.apic.irr().contains(Vector::new(0x38)));
        if policy == Policy::NoIntercept {
            assert_eq!(v1.map.state().rtc_owed, None);
            continue;
        }
        assert_eq!(
            v1.map.state().rtc_owed,
            Some(Vector::new(0x38)),
            "{policy:?}"
        );
        if policy != Policy::TmrDriven {
            assert!(v1.map.intercepts(Vector::new(0x38)), "{policy:?}");
        }
        assert!(v0.map.intercepts(Vector::new(0x40)), "{policy:?}");
        assert!(v1.map.intercepts(Vector::new(0x59)), "{policy:?}");
        // The export gives KVM's state back, plus what the import did.
        let (k2, p2) = c.export_kvm::<Vec<_>>(imp.base_address, true);
        assert_eq!(k2.irr, kio.irr);
        assert_eq!(bits_of(&k2, 5), bits_of(&kio, 5));
        assert_eq!(get32(&p2[0], reg::ISR + 2 * reg::STRIDE), 1); // 0x40
        // The EOI of the in-service 0x40 exits and clears remote IRR.
        let mut fx = Effects::new();
        c.set_line(Pin::new(5), false, &mut fx);
        let g = c.guest_eoi(VcpuId::new(0), &mut fx);
        assert!(g.intercepted, "{policy:?}");
        assert!(!c.ioapic().entries()[5].remote_irr());
    }
}

// ---- real KVM --------------------------------------------------------------------

use crate::support::{self, IrqChipMode, Stop, TestVm};

const POLICIES: [Policy; 4] = [
    Policy::KvmLegacy,
    Policy::KvmHighestStale,
    Policy::TmrDriven,
    Policy::Exact,
];

fn raw_ioapic(t: &TestVm) -> support::Result<kvm_ioapic_state> {
    let mut chip = kvm_irqchip {
        chip_id: KVM_IRQCHIP_IOAPIC,
        ..Default::default()
    };
    t.vm.fd
        .get_irqchip(&mut chip)
        .map_err(|e| support::HarnessError(format!("KVM_GET_IRQCHIP: {e}")))?;
    // SAFETY: chip_id IOAPIC selects the `ioapic` member.
    Ok(unsafe { chip.chip.ioapic })
}

/// The migrated chip: two vCPUs.
type Chip = Irqchip<[VcpuSlot; 2]>;

struct KvmState {
    ioapic: kvm_ioapic_state,
    lapics: [kvm_lapic_state; 2],
    who: [KvmLapicIdentity; 2],
}

fn take_state(t: &TestVm) -> support::Result<KvmState> {
    let ioapic = raw_ioapic(t)?;
    let lapics = [t.vcpus[0].get_lapic()?, t.vcpus[1].get_lapic()?];
    let mut who = [KvmLapicIdentity {
        initial_id: ApicId::new(0),
        mode: ApicMode::XApic,
        x2apic_format: false,
    }; 2];
    for (i, w) in who.iter_mut().enumerate() {
        let sregs = t.vcpus[i]
            .fd()
            .get_sregs()
            .map_err(|e| support::HarnessError(format!("KVM_GET_SREGS: {e}")))?;
        *w = KvmLapicIdentity {
            initial_id: ApicId::new(i as u32),
            mode: apic_mode_from_base(sregs.apic_base),
            // The harness does not enable KVM_CAP_X2APIC_API.
            x2apic_format: false,
        };
    }
    Ok(KvmState {
        ioapic,
        lapics,
        who,
    })
}

/// Compares what both sides expose: the redirection table (remote IRR
/// included), KVM's `irr`, and each LAPIC's ID, LDR, DFR, SVR, TPR, IRR, ISR, TMR.
fn compare(kvm: &KvmState, model: &Chip, what: &str) -> Result<(), String> {
    let (mio, mpages) = model.export_kvm::<Vec<_>>(kvm.ioapic.base_address, false);
    let mut diffs = Vec::new();
    for i in 0..KVM_IOAPIC_NUM_PINS {
        if bits_of(&mio, i) != bits_of(&kvm.ioapic, i) {
            diffs.push(format!(
                "pin {i}: model {:#x} kvm {:#x}",
                bits_of(&mio, i),
                bits_of(&kvm.ioapic, i)
            ));
        }
    }
    if mio.irr != kvm.ioapic.irr {
        diffs.push(format!(
            "ioapic irr: model {:#x} kvm {:#x}",
            mio.irr, kvm.ioapic.irr
        ));
    }
    for (v, mpage) in mpages.iter().enumerate() {
        let mut regs = vec![
            ("ID", reg::ID),
            ("TPR", reg::TPR),
            ("LDR", reg::LDR),
            ("DFR", reg::DFR),
            ("SVR", reg::SVR),
        ];
        for w in 0..8 {
            regs.push(("ISR", reg::ISR + w * reg::STRIDE));
            regs.push(("TMR", reg::TMR + w * reg::STRIDE));
            regs.push(("IRR", reg::IRR + w * reg::STRIDE));
        }
        for (name, off) in regs {
            let (m, k) = (get32(mpage, off), get32(&kvm.lapics[v], off));
            if m != k {
                diffs.push(format!(
                    "vCPU {v} {name} @{off:#x}: model {m:#x} kvm {k:#x}"
                ));
            }
        }
    }
    if diffs.is_empty() {
        Ok(())
    } else {
        Err(format!("{what}:\n  {}", diffs.join("\n  ")))
    }
}

fn level(vector: u8, dest: u8) -> u64 {
    vector as u64 | 1 << 15 | (dest as u64) << 56
}

fn migrate_from_kvm_in_kernel_irqchip() -> support::Result<String> {
    let mut t = TestVm::new(IrqChipMode::InKernel, 2)?;
    t.all_ready()?;
    // Routes in the in-kernel I/O APIC.
    let masked = 1 << 16;
    t.vm.set_ioapic_redirection(5, level(0x51, 0))?;
    t.vm.set_ioapic_redirection(6, level(0x62, 1))?;
    t.vm.set_ioapic_redirection(7, 0x70 | masked)?; // masked edge -> APIC 0
    t.vm.set_ioapic_redirection(8, 0x38 | 1 << 56)?; // RTC, edge -> APIC 1
    t.vm.set_ioapic_redirection(9, level(0x59, 1) | masked)?;
    // Lines; the guests sit in userspace exits, so everything stays pending.
    t.vm.irq_line(5, true)?; // 0x51 -> vCPU 0 IRR, remote IRR
    t.vm.irq_line(6, true)?; // 0x62 -> vCPU 1 IRR, remote IRR
    t.vm.irq_line(7, true)?; // masked edge: latched in KVM's irr
    t.vm.irq_line(9, true)?; // masked level: asserted, not delivered
    t.vm.pulse(8)?; // RTC 0x38 -> vCPU 1 IRR, EOI owed
    // A level interrupt in service on vCPU 0 (quirk 1: planted).
    t.vcpus[0].plant_in_service(0x45)?;

    // Migrate: take KVM's state and import it, for every policy.
    let src = take_state(&t)?;
    let mut report = String::new();
    let mut chips = Vec::new();
    for policy in POLICIES.into_iter().chain([Policy::NoIntercept]) {
        let cfg = IrqchipConfig {
            policy,
            rtc_tracking: true,
            ..IrqchipConfig::default()
        };
        let mut fx = Effects::new();
        let storage = [const { VcpuSlot::new() }; 2];
        let imp: eoi_exit::snapshot::kvm::KvmImport<[VcpuSlot; 2]> =
            Irqchip::import_kvm(cfg, &src.ioapic, &src.lapics, &src.who, storage, &mut fx)
                .map_err(|e| support::HarnessError(format!("import ({policy:?}): {e}")))?;
        // Nothing is re-injected: both level pins wait for their EOI, the
        // others are masked.
        assert!(fx.kick.is_empty(), "{policy:?}");
        compare(&src, &imp.chip, &format!("{policy:?}: right after import"))
            .map_err(support::HarnessError)?;
        if policy != Policy::NoIntercept {
            let v1 = imp.chip.vcpu(VcpuId::new(1)).unwrap();
            assert_eq!(
                v1.map.state().rtc_owed,
                Some(Vector::new(0x38)),
                "{policy:?}"
            );
        }
        chips.push((policy, imp.chip));
    }

    // Continue on KVM.
    t.vm.irq_line(5, false)?;
    t.vm.irq_line(6, false)?;
    t.vcpus[0].handle(0x51)?;
    t.vcpus[0].expect(Stop::Idle)?;
    // On a host without quirk 1 the handler's EOI retired 0x51 and 0x45 is
    // still in service: retire it from the idle loop.
    if t.vcpus[0].get_lapic_regs()?.isr_has(0x45) {
        t.vcpus[0].command(support::Cmd::Eoi)?;
        t.vcpus[0].expect(Stop::IdleEoi)?;
        report.push_str("(0x45 retired by an idle EOI) ");
    }
    t.vcpus[1].handle(0x62)?;
    t.vcpus[1].handle(0x38)?;
    t.vcpus[1].expect(Stop::Idle)?;
    // Unmask pin 9 (KVM_SET_IRQCHIP re-injects it), and the RTC fires again.
    t.vm.set_ioapic_redirection(9, level(0x59, 1))?;
    let rtc_status = t.vm.pulse(8)?;
    let dst = take_state(&t)?;

    // The same events on the model.
    for (policy, c) in &chips {
        let (v0, v1) = (VcpuId::new(0), VcpuId::new(1));
        let mut fx = Effects::new();
        c.set_line(Pin::new(5), false, &mut fx);
        c.set_line(Pin::new(6), false, &mut fx);
        assert_eq!(c.ack(v0), Some(Vector::new(0x51)));
        let e51 = c.guest_eoi(v0, &mut fx);
        let e45 = c.guest_eoi(v0, &mut fx);
        assert_eq!(c.ack(v1), Some(Vector::new(0x62)));
        let e62 = c.guest_eoi(v1, &mut fx);
        assert_eq!(c.ack(v1), Some(Vector::new(0x38)));
        let e38 = c.guest_eoi(v1, &mut fx);
        c.write_entry(Pin::new(9), level(0x59, 1), &mut fx);
        c.set_line(Pin::new(8), true, &mut fx);
        c.set_line(Pin::new(8), false, &mut fx);
        if *policy == Policy::NoIntercept {
            // TDX-style: the level EOIs never reach the I/O APIC, so remote
            // IRR stays set where KVM cleared it. The model says so.
            assert!(e51.missed_level && e62.missed_level, "{e51:?} {e62:?}");
            assert!(compare(&dst, c, "NoIntercept").is_err());
            continue;
        }
        assert!(
            e51.intercepted && e62.intercepted,
            "{policy:?}: {e51:?} {e62:?}"
        );
        // The planted 0x45 was level (TMR): its EOI is forwarded too, except
        // by the KVM policies, which intercept only routed or stale vectors.
        let e45_exits = e45.intercepted;
        if *policy != Policy::TmrDriven {
            assert!(e38.intercepted, "{policy:?}: the RTC EOI owed must exit");
        }
        compare(&dst, c, &format!("{policy:?}: after continuing"))
            .map_err(support::HarnessError)?;
        report.push_str(&format!(
            "{}: 0x51/0x62/0x38 EOIs exit, 0x45 {}; ",
            policy.name(),
            if e45_exits { "exits" } else { "does not" }
        ));
    }
    report.push_str(&format!("RTC re-fire status {rtc_status}"));
    Ok(report)
}

/// Runs `f` on real KVM and prints its report after `what`, or prints the skip line.
fn on_kvm(what: &str, f: fn() -> support::Result<String>) {
    if support::skip_without_kvm("snapshot_kvm") {
        return;
    }
    match f() {
        Ok(r) => println!("snapshot_kvm: {what}: {r}"),
        Err(e) => panic!("{e}"),
    }
}

#[test]
fn migration_from_kvm_in_kernel_irqchip_continues_identically() {
    on_kvm(
        "migration from KVM's in-kernel irqchip: agree",
        migrate_from_kvm_in_kernel_irqchip,
    );
}

/// KVM stores IRR/ISR/TMR bits of the illegal vectors 0-15 as `KVM_SET_LAPIC` gives them
/// and returns them from `KVM_GET_LAPIC` (its selftests round-trip such pages). The
/// import takes the page as KVM holds it, and both then agree: a guest EOI retires the
/// in-service vector 0x0e (`apic_set_eoi` takes the highest ISR bit), and pending vector 2
/// stays pending and undelivered (class 0 never exceeds the PPR).
fn illegal_vectors_as_kvm_holds_them() -> support::Result<String> {
    let mut t = TestVm::new(IrqChipMode::InKernel, 1)?;
    t.all_ready()?;
    t.vcpus[0].set_lapic_bits(&[
        (support::ApicReg::Isr, 0x0e, true),
        (support::ApicReg::Tmr, 0x0e, true),
        (support::ApicReg::Irr, 0x02, true),
    ])?;
    let page = t.vcpus[0].get_lapic()?;
    let who = KvmLapicIdentity {
        initial_id: ApicId::new(0),
        mode: ApicMode::XApic,
        x2apic_format: false,
    };
    let s = lapic_from_kvm(&page, &who)
        .map_err(|e| support::HarnessError(format!("import refused KVM's page: {e}")))?;
    let kept = s.isr.contains(Vector::new(0x0e))
        && s.tmr.contains(Vector::new(0x0e))
        && s.irr.contains(Vector::new(2));
    if !kept {
        return Err(support::HarnessError(format!(
            "KVM_GET_LAPIC did not return the bits KVM_SET_LAPIC set: {s:?}"
        )));
    }
    let mut model =
        LocalApic::from_state(&s).map_err(|e| support::HarnessError(format!("from_state: {e}")))?;
    t.vcpus[0].guest_eoi()?;
    let regs = t.vcpus[0].get_lapic_regs()?;
    let eoi = model.eoi();
    let kvm = (regs.isr_has(0x0e), regs.irr_has(2));
    let ours = (
        model.isr().contains(Vector::new(0x0e)),
        model.irr().contains(Vector::new(2)),
    );
    if kvm != (false, true) || ours != kvm || eoi.map(|e| e.vector) != Some(Vector::new(0x0e)) {
        return Err(support::HarnessError(format!(
            "after the EOI: KVM (ISR 0x0e, IRR 2) = {kvm:?}, model {ours:?}, model EOI {eoi:?}"
        )));
    }
    if model.highest_deliverable().is_some() {
        return Err(support::HarnessError(
            "the model would deliver vector 2".into(),
        ));
    }
    Ok(format!(
        "KVM and the model: ISR 0x0e retired, IRR 2 kept, {kvm:?}"
    ))
}

#[test]
fn kvm_lapic_pages_with_illegal_vectors_import_as_kvm_holds_them() {
    on_kvm("illegal vectors", illegal_vectors_as_kvm_holds_them);
}
