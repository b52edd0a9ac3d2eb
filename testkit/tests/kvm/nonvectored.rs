//! INIT, SIPI, NMI and SMI on real KVM against the model: the guest on vCPU 0 (the BSP)
//! writes the x2APIC ICR MSR (0x830) with `wrmsr`, targeting vCPU 1 (an AP that is not
//! run again), and the model applies the same writes with `Irqchip::write_lapic`. After
//! each round of 1-5 writes both sides are read, in KVM's order:
//!
//! 1. `KVM_GET_VCPU_EVENTS` (KVM runs `process_nmi` and `process_smi` first): NMIs
//!    pending, SMI pending, `smi.latched_init`; the model's pending [`VcpuEvents`] with
//!    KVM's NMI limit;
//! 2. `KVM_GET_MP_STATE` (KVM runs `kvm_apic_accept_events` first: INIT reset, SIPI):
//!    `KVM_MP_STATE_INIT_RECEIVED` or `RUNNABLE`; the model's `take_events(ap, in_smm,
//!    nmi_masked)` says `wait_for_sipi`;
//! 3. `KVM_GET_SREGS`: a taken SIPI's CS selector is `vector << 8` and its base
//!    `vector << 12`;
//! 4. `KVM_GET_VCPU_EVENTS` again: what the INIT reset dropped, and the NMIs and SMI the
//!    model handed to the VMM (KVM keeps them pending, since the AP does not run);
//! 5. `KVM_GET_LAPIC`: IRR, ISR, TMR, and after an INIT the SVR, TPR, LDR and ICR.
//!
//! Each case is two rounds on a fresh VM (so a SIPI can find the AP in wait-for-SIPI),
//! in both irqchip modes. Some cases first put the AP in SMM or mask its NMIs with
//! `KVM_SET_VCPU_EVENTS`: INIT is then latched (KVM's `kvm_apic_init_sipi_allowed`),
//! and the NMI limit is 1.
//!
//! Not compared: ExtINT (KVM drops an ExtINT IPI or MSI; the model hands it to the VMM,
//! as the SDM describes), a latched SIPI (KVM never reports one: `sipi_vector` reads
//! 0), and the vCPU registers an INIT resets (the VMM's duty; the CS after a SIPI is
//! checked).
//!
//! It prints one line: `kvm_nonvectored: N cases compared (...), M disagreements`.

use eoi_exit::irqchip::{Effects, IrqchipState, LapicWrite, VcpuEvents, VcpuState};
use eoi_exit::{ApicMode, Irqchip, IrqchipConfig, VcpuId, VcpuSlot};
use eoi_exit_testkit::race::SplitMix64;
use kvm_bindings::{
    KVM_MP_STATE_INIT_RECEIVED, KVM_MP_STATE_RUNNABLE, KVM_VCPUEVENT_VALID_SMM, kvm_vcpu_events,
};
use kvm_ioctls::{Cap, Kvm};

use crate::support::*;

const ICR_MSR: u32 = 0x830;
/// Random cases per irqchip mode.
const CASES: u64 = 40;

/// One ICR write from the BSP to the AP (APIC ID 1).
fn gen_write(rng: &mut SplitMix64, smm: bool) -> u64 {
    // Delivery mode: INIT, SIPI, NMI, SMI (with SMM support), or a fixed vector to
    // give INIT something to clear.
    let mut modes = vec![5u64, 5, 6, 6, 6, 4, 4, 4, 0];
    if smm {
        modes.push(2);
    }
    let dm = rng.pick(&modes);
    // Level-triggered INIT with and without assert (the de-assert is ignored).
    let (level, assert) = if dm == 5 && rng.chance(30) {
        (true, rng.chance(50))
    } else {
        (false, true)
    };
    // Physical APIC ID 1, logical cluster 0 bit 1, or the all-but-self shorthand.
    let (dest, logical, shorthand) = match rng.below(3) {
        0 => (1u64, false, 0u64),
        1 => (0x2, true, 0),
        _ => (0, false, 3),
    };
    let vector = match dm {
        0 => 0x20 + rng.below(0xD0),
        _ => rng.below(256),
    };
    dest << 32
        | shorthand << 18
        | u64::from(level) << 15
        | u64::from(assert) << 14
        | u64::from(logical) << 11
        | dm << 8
        | vector
}

#[derive(Clone, Debug)]
struct Case {
    /// The AP is in SMM (INIT blocked).
    smm: bool,
    /// The AP's NMIs are masked.
    nmi_masked: bool,
    rounds: [Vec<u64>; 2],
}

fn gen_case(rng: &mut SplitMix64, smm_supported: bool) -> Case {
    let smm = smm_supported && rng.chance(20);
    let nmi_masked = rng.chance(20);
    let mut round = || {
        (0..1 + rng.below(5))
            .map(|_| gen_write(rng, smm_supported))
            .collect()
    };
    Case {
        smm,
        nmi_masked,
        rounds: [round(), round()],
    }
}

/// What one round shows, on either side.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Seen {
    /// Before the INIT/SIPI processing: NMIs pending, SMI pending, INIT latched.
    nmi: u8,
    smi: bool,
    latched_init: bool,
    /// `KVM_MP_STATE_INIT_RECEIVED`.
    wait_for_sipi: bool,
    /// The AP's CS selector: 0 as the harness set it, F000 after an INIT reset,
    /// `vector << 8` after a SIPI.
    cs: u16,
    /// After it: NMIs and SMI still pending on KVM (handed to the VMM in the model).
    nmi_after: u8,
    smi_after: bool,
    /// IRR, ISR, TMR (8 words each).
    irr_isr_tmr: [[u32; 8]; 3],
    /// After an INIT: SVR, TPR, LDR, ICR (low word).
    reset_regs: Option<[u32; 4]>,
}

fn lapic_word(l: &kvm_bindings::kvm_lapic_state, off: usize) -> u32 {
    u32::from_le_bytes(std::array::from_fn(|i| l.regs[off + i] as u8))
}

fn on_kvm(mode: IrqChipMode, c: &Case) -> Result<[Seen; 2]> {
    let mut t = TestVm::new(mode, 2)?;
    t.all_ready()?;
    for v in &mut t.vcpus {
        v.ping()?;
    }
    if c.smm || c.nmi_masked {
        let fd = t.vcpus[1].fd();
        let mut ev = fd
            .get_vcpu_events()
            .map_err(|e| HarnessError(e.to_string()))?;
        ev.nmi.masked = u8::from(c.nmi_masked);
        if c.smm {
            ev.flags |= KVM_VCPUEVENT_VALID_SMM;
            ev.smi.smm = 1;
        }
        fd.set_vcpu_events(&ev)
            .map_err(|e| HarnessError(format!("KVM_SET_VCPU_EVENTS: {e}")))?;
    }
    let mut out = Vec::new();
    for round in &c.rounds {
        for &w in round {
            t.vcpus[0].wrmsr(ICR_MSR, w)?;
        }
        let fd = t.vcpus[1].fd();
        let err =
            |what: &'static str| move |e: kvm_ioctls::Error| HarnessError(format!("{what}: {e}"));
        let ev: kvm_vcpu_events = fd.get_vcpu_events().map_err(err("KVM_GET_VCPU_EVENTS"))?;
        let mp = fd.get_mp_state().map_err(err("KVM_GET_MP_STATE"))?;
        let sregs = fd.get_sregs().map_err(err("KVM_GET_SREGS"))?;
        let ev2: kvm_vcpu_events = fd.get_vcpu_events().map_err(err("KVM_GET_VCPU_EVENTS"))?;
        let l = fd.get_lapic().map_err(err("KVM_GET_LAPIC"))?;
        let r = t.vcpus[1].get_lapic_regs()?;
        // KVM's INIT reset leaves CS at F000 (base FFFF0000); a SIPI loads vector << 8.
        let init_now = ev.smi.latched_init != 0 && !c.smm;
        out.push(Seen {
            nmi: ev.nmi.pending,
            smi: ev.smi.pending != 0,
            latched_init: ev.smi.latched_init != 0,
            wait_for_sipi: match mp.mp_state {
                KVM_MP_STATE_INIT_RECEIVED => true,
                KVM_MP_STATE_RUNNABLE => false,
                s => return Err(HarnessError(format!("unexpected mp_state {s}"))),
            },
            cs: sregs.cs.selector,
            nmi_after: ev2.nmi.pending,
            smi_after: ev2.smi.pending != 0,
            irr_isr_tmr: [r.irr, r.isr, r.tmr],
            reset_regs: init_now.then(|| {
                [
                    lapic_word(&l, 0xF0),
                    lapic_word(&l, 0x80),
                    lapic_word(&l, 0xD0),
                    lapic_word(&l, 0x300),
                ]
            }),
        });
    }
    Ok([out[0], out[1]])
}

fn on_model(c: &Case) -> [Seen; 2] {
    let chip: Irqchip<[VcpuSlot; 2]> = Irqchip::new(
        IrqchipConfig::default(),
        ApicMode::X2Apic,
        [const { VcpuSlot::new() }; 2],
    );
    let (bsp, ap) = (VcpuId::new(0), VcpuId::new(1));
    let mut fx = Effects::new();
    // The VMM's side of the AP, which never runs again: its CS, NMI blocking (which
    // KVM's INIT reset clears), and the NMI the model handed it to inject, which is
    // never delivered (KVM's `nmi_injected`; KVM itself keeps it pending).
    let (mut cs, mut masked, mut held) = (0u16, c.nmi_masked, 0u8);
    c.rounds.clone().map(|round| {
        for w in round {
            chip.write_lapic(bsp, LapicWrite::Icr(w), &mut fx);
        }
        let s: IrqchipState<Vec<VcpuState>> = chip.state();
        let p: VcpuEvents = s.vcpus[1].events;
        // KVM's `process_nmi` at `KVM_GET_VCPU_EVENTS`: nothing injected there.
        let nmi = (p.nmi + held).min(if masked { 1 } else { 2 });
        let t = chip.take_events(ap, c.smm, masked || held > 0, &mut fx);
        if t.init {
            cs = 0xF000; // the VMM's INIT reset of the registers
            (masked, held) = (false, 0);
        }
        if let Some(v) = t.sipi {
            cs = u16::from(v.get()) << 8;
        }
        if !(masked || held > 0) && t.nmi > 0 && !t.wait_for_sipi {
            held = 1;
        }
        let after: VcpuEvents = chip.state::<Vec<_>>().vcpus[1].events;
        let apic = chip.vcpu(ap).unwrap().apic;
        let words = |set: &eoi_exit::VectorSet| {
            let w = set.as_u64_words();
            std::array::from_fn(|i| (w[i / 2] >> (32 * (i % 2))) as u32)
        };
        Seen {
            nmi,
            smi: p.smi,
            latched_init: p.init,
            wait_for_sipi: t.wait_for_sipi,
            cs,
            // The model handed the VMM what it took; KVM keeps it pending.
            nmi_after: after.nmi + held,
            smi_after: after.smi || t.smi,
            irr_isr_tmr: [words(apic.irr()), words(apic.isr()), words(apic.tmr())],
            reset_regs: t
                .init
                .then(|| [0xF0, 0x80, 0xD0, 0x300].map(|o| apic.read_register(o).unwrap_or(0))),
        }
    })
}

#[test]
fn kvm_init_sipi_nmi_smi_through_the_x2apic_icr_match_the_model() {
    if skip_without_kvm("kvm_nonvectored") {
        return;
    }
    let smm = Kvm::new().is_ok_and(|k| k.check_extension(Cap::X86Smm));
    let mut rng = SplitMix64::new(0x5_1b1);
    let (mut cases, mut rounds, mut bad) = (0, 0, Vec::new());
    let (mut inits, mut sipis, mut nmis, mut smis, mut latched) = (0, 0, 0, 0, 0);
    for mode in [IrqChipMode::Split, IrqChipMode::InKernel] {
        for _ in 0..CASES {
            let c = gen_case(&mut rng, smm);
            let kvm = on_kvm(mode, &c).unwrap_or_else(|e| panic!("{mode:?} {c:x?}: harness: {e}"));
            let model = on_model(&c);
            cases += 1;
            for (r, (k, m)) in kvm.iter().zip(&model).enumerate() {
                rounds += 1;
                inits += usize::from(k.reset_regs.is_some());
                sipis += usize::from(!k.wait_for_sipi && k.cs != 0 && k.cs != 0xF000);
                nmis += usize::from(k.nmi > 0);
                smis += usize::from(k.smi);
                latched += usize::from(c.smm && k.latched_init);
                if k != m {
                    bad.push(format!(
                        "{mode:?} round {r} {c:x?}:\n  KVM   {k:x?}\n  model {m:x?}"
                    ));
                }
            }
        }
    }
    println!(
        "kvm_nonvectored: {rounds} cases compared ({cases} VMs x 2 rounds; {inits} INIT \
         resets, {sipis} SIPIs taken, {nmis} with NMIs pending, {smis} with an SMI, \
         {latched} INITs latched in SMM; SMM {}), {} disagreements",
        if smm { "supported" } else { "not supported" },
        bad.len()
    );
    assert!(inits > 0 && sipis > 0 && nmis > 0, "every kind must occur");
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}
