use arbitrary::{Result, Unstructured};
use eoi_exit::snapshot::kvm::kvm_bindings::{
    kvm_ioapic_state, kvm_ioapic_state__bindgen_ty_1, kvm_lapic_state,
};

use eoi_exit::ApicId;
use eoi_exit::lapic::{ApicMode, LocalApic};
use eoi_exit::snapshot::IoapicState;
use eoi_exit::snapshot::kvm::{
    KVM_IOAPIC_NUM_PINS, KvmLapicIdentity, ioapic_from_kvm, ioapic_to_kvm, kvm_representable,
    lapic_from_kvm, lapic_to_kvm,
};
use eoi_exit::{Ioapic, IoapicConfig};

/// A `kvm_ioapic_state`: every field arbitrary, entries usually
/// well-formed (see `gen_entry`); with the entries' bits.
pub fn ioapic_state(u: &mut Unstructured<'_>) -> Result<(kvm_ioapic_state, [u64; 24])> {
    let mut bits = [0u64; 24];
    for b in bits.iter_mut() {
        *b = super::gen_entry(u)?;
    }
    // KVM never reports remote IRR on an edge entry: usually drop it, so
    // that most states import.
    if u.ratio(3u8, 4)? {
        for b in bits.iter_mut() {
            if *b & eoi_exit::RedirectionEntry::LEVEL == 0 {
                *b &= !eoi_exit::RedirectionEntry::REMOTE_IRR;
            }
        }
    }
    let redirtbl = bits.map(|bits| kvm_ioapic_state__bindgen_ty_1 { bits });
    let k = kvm_ioapic_state {
        base_address: if u.ratio(7u8, 8)? {
            0xFEC0_0000
        } else {
            u.arbitrary()?
        },
        ioregsel: if u.ratio(3u8, 4)? {
            u.arbitrary::<u8>()?.into()
        } else {
            u.arbitrary()?
        },
        id: if u.ratio(3u8, 4)? {
            u.int_in_range(0..=15)?
        } else {
            u.arbitrary()?
        },
        irr: if u.ratio(3u8, 4)? {
            u.arbitrary::<u32>()? & 0x00ff_ffff
        } else {
            u.arbitrary()?
        },
        pad: u.arbitrary()?,
        redirtbl,
    };
    Ok((k, bits))
}

/// APIC register offsets inside `kvm_lapic_state::regs`.
const APIC_ID: usize = 0x20;
const APIC_TASKPRI: usize = 0x80;
const APIC_LDR: usize = 0xD0;
const APIC_DFR: usize = 0xE0;
const APIC_SPIV: usize = 0xF0;
const APIC_ISR: usize = 0x100;
const APIC_TMR: usize = 0x180;
const APIC_IRR: usize = 0x200;

/// A `kvm_lapic_state`: either 1 KiB of raw bytes or the registers the
/// model has (ID, TPR, LDR, DFR, SVR, ISR/TMR/IRR) set from the input,
/// usually to values the model accepts.
pub fn lapic_state(u: &mut Unstructured<'_>) -> Result<kvm_lapic_state> {
    let mut regs = [0u8; 1024];
    if u.ratio(1u8, 4)? {
        u.fill_buffer(&mut regs)?;
    } else {
        let mut put = |off: usize, v: u32| regs[off..off + 4].copy_from_slice(&v.to_le_bytes());
        put(APIC_ID, u.arbitrary()?);
        put(APIC_TASKPRI, u.arbitrary::<u8>()?.into());
        put(APIC_LDR, u.arbitrary()?);
        let dfr = if u.ratio(3u8, 4)? {
            u.arbitrary::<u32>()? | 0x0FFF_FFFF
        } else {
            u.arbitrary()?
        };
        put(APIC_DFR, dfr);
        let svr = if u.ratio(3u8, 4)? {
            u.arbitrary::<u32>()? & 0x13FF
        } else {
            u.arbitrary()?
        };
        put(APIC_SPIV, svr);
        for base in [APIC_ISR, APIC_TMR, APIC_IRR] {
            for n in 0..8 {
                let w = if u.ratio(1u8, 3)? { u.arbitrary()? } else { 0 };
                // Vectors 0-15 are illegal in IRR/ISR: usually clear them.
                let w = if n == 0 && u.ratio(3u8, 4)? {
                    w & !0xffff
                } else {
                    w
                };
                put(base + 0x10 * n, w);
            }
        }
    }
    Ok(kvm_lapic_state {
        regs: regs.map(|b| b as core::ffi::c_char),
    })
}

/// Whether `ioapic_from_kvm` must accept `k` (its documented failures).
fn ioapic_acceptable(k: &kvm_ioapic_state, state_bits: &[u64; 24]) -> bool {
    k.irr >> 24 == 0
        && k.ioregsel <= 0xff
        && k.id <= 0xf
        && state_bits.iter().all(|&b| {
            b & eoi_exit::RedirectionEntry::LEVEL != 0
                || b & eoi_exit::RedirectionEntry::REMOTE_IRR == 0
        })
}

/// Imports an arbitrary `kvm_ioapic_state`: never panics, fails exactly
/// on what the docs list, and export -> import is the identity on
/// accepted input; the imported state restores into an `Ioapic`.
pub fn check_ioapic(k: &kvm_ioapic_state, bits: &[u64; 24]) {
    let r = ioapic_from_kvm(k);
    assert_eq!(
        r.is_ok(),
        ioapic_acceptable(k, bits),
        "ioapic_from_kvm accepted/refused wrongly: {r:?}"
    );
    let Ok(io) = r else { return };
    assert_eq!(io.base_address, k.base_address);
    assert!(
        kvm_representable(&io.state),
        "an import is not representable"
    );
    let back = ioapic_to_kvm(&io.state, io.base_address);
    assert_eq!(
        (back.irr, back.ioregsel, back.id, back.base_address),
        (k.irr, k.ioregsel, k.id, k.base_address),
        "export of an import differs"
    );
    let again = ioapic_from_kvm(&back).expect("re-import of an export");
    assert_eq!(again, io, "export -> import is not the identity");
    // The imported state is a valid model state, under KVM's configuration.
    assert_eq!(io.state.config, IoapicConfig::default());
    let restored =
        Ioapic::<KVM_IOAPIC_NUM_PINS>::from_state(&io.state).expect("an imported state restores");
    assert_eq!(restored.state(), io.state);
}

/// Exports a model-produced I/O APIC state: it always imports, and
/// exactly when `kvm_representable` says so, back to itself.
pub fn check_ioapic_export(st: &IoapicState<KVM_IOAPIC_NUM_PINS>) {
    let k = ioapic_to_kvm(st, 0xFEC0_0000);
    let io = ioapic_from_kvm(&k).expect("an export of a model state imports");
    if kvm_representable(st) {
        // KVM's format has no configuration: the import's is KVM's.
        let want = IoapicState {
            config: IoapicConfig::default(),
            ..*st
        };
        assert_eq!(
            io.state, want,
            "representable state changed by KVM round trip"
        );
    }
    // Whatever was lost, a second trip is exact.
    let k2 = ioapic_to_kvm(&io.state, 0xFEC0_0000);
    assert_eq!(ioapic_from_kvm(&k2).expect("re-import"), io);
}

/// Imports an arbitrary LAPIC page: never panics; on success the state
/// restores into a consistent `LocalApic` whose snapshot is the state,
/// and export -> import is the identity.
pub fn check_lapic(page: &kvm_lapic_state, u: &mut Unstructured<'_>) -> Result<()> {
    let who = KvmLapicIdentity {
        initial_id: ApicId::new(if u.ratio(3u8, 4)? {
            u.int_in_range(0..=4)?
        } else {
            u.arbitrary()?
        }),
        mode: u.arbitrary::<ApicMode>()?,
        x2apic_format: u.arbitrary()?,
    };
    let Ok(s) = lapic_from_kvm(page, &who) else {
        return Ok(());
    };
    let apic = LocalApic::from_state(&s).expect("an import restores");
    super::lapic::check_registers(&apic);
    assert_eq!(
        apic.state(),
        s,
        "LocalApic snapshot differs from the import"
    );
    let back = lapic_to_kvm(&s, who.x2apic_format);
    let again = lapic_from_kvm(&back, &who).expect("re-import of an export");
    assert_eq!(again, s, "LAPIC export -> import is not the identity");
    // Guest activity on the restored APIC keeps it consistent, and its
    // snapshot still round-trips through KVM's format.
    let mut a = apic;
    for _ in 0..u.int_in_range(0..=4u8)? {
        if u.arbitrary()? {
            let _ = a.ack();
        } else {
            let _ = a.eoi();
        }
        super::lapic::check_registers(&a);
    }
    let s2 = a.state();
    assert_eq!(LocalApic::from_state(&s2).expect("restores"), a);
    let again = lapic_from_kvm(&lapic_to_kvm(&s2, who.x2apic_format), &who)
        .expect("re-import after guest activity");
    assert_eq!(again, s2);
    Ok(())
}
