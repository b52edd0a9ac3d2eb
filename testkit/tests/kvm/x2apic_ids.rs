//! x2APIC IDs above 255 on real KVM against the model (issue 16, item 6).
//!
//! Two split-irqchip VMs, their vCPUs never run: every LAPIC is put in x2APIC mode
//! (`IA32_APIC_BASE` with `KVM_SET_MSRS`) and software-enabled (SVR with
//! `KVM_SET_LAPIC`), and each case fires one MSI, as a GSI route (`KVM_SET_GSI_ROUTING`,
//! then `KVM_IRQ_LINE`) and as `KVM_SIGNAL_MSI`. KVM delivers into IRR/TMR, read back
//! with `KVM_GET_LAPIC` (which syncs a posted-interrupt descriptor into IRR first).
//!
//! * VM "api": `KVM_CAP_X2APIC_API` with `USE_32BIT_IDS | DISABLE_BROADCAST_QUIRK`
//!   (what QEMU enables), as many vCPUs as `KVM_CAP_MAX_VCPUS` allows, at sparse vCPU
//!   ids up to `KVM_CAP_MAX_VCPU_ID - 1` (the initial x2APIC ID is the vCPU id).
//!   Physical destinations above 255, x2APIC logical clusters above 15, the x2APIC
//!   broadcast, 0xFF without the broadcast quirk (APIC ID 255, logical cluster 0),
//!   lowest priority inside a cluster, the extended-destination-ID form (address bits
//!   11:5) and a route with `address_hi` bits 7:0 set.
//! * VM "legacy": no x2APIC API. The same vCPU ids; routes with `address_hi` set, the
//!   extended form, the 8-bit broadcast 0xFF (KVM's broadcast quirk, on by default).
//!
//! The model is an `Irqchip` built with `with_apics` and the same APIC IDs, fed the same
//! `Msi` with `send_msi`, its `IoapicConfig::msi_format` the decoding KVM applies
//! (`MsiFormat::X2apicApi` with the API, which also drops the broadcast quirk as the
//! "api" VM does; `MsiFormat::Xapic` without). The model holds every vCPU KVM created
//! (up to [`MODEL_VCPUS`]), each with the same APIC ID. Per case it compares, on every
//! vCPU, the case vector's IRR and TMR bits, and whether the message was refused
//! (`EINVAL`) on both sides. A second check runs over every KVM vCPU for fixed
//! delivery: KVM's IRR bit against `LocalApic::matches` of a LAPIC with that vCPU's ID
//! (which models the default quirk, so the "api" VM's 0xFF cases skip it).
//!
//! It prints progress, the vCPU counts and creation times, and one summary line:
//! `kvm_x2apic_ids: N cases compared, M disagreements`.

use std::time::Instant;

use eoi_exit::irqchip::Effects;
use eoi_exit::{
    ApicId, ApicMode, DeliveryMode, Destination, DestinationMode, InterruptMessage, Irqchip,
    IrqchipConfig, LocalApic, Msi, MsiFormat, TriggerMode, VcpuId, VcpuSlot, Vector,
};
use kvm_bindings::{
    KVM_CAP_SPLIT_IRQCHIP, KVM_CAP_X2APIC_API, KVM_X2APIC_API_DISABLE_BROADCAST_QUIRK,
    KVM_X2APIC_API_USE_32BIT_IDS, Msrs, kvm_enable_cap, kvm_msr_entry,
};
use kvm_ioctls::{Cap, Kvm, VcpuFd};

use crate::support::*;

/// How many vCPUs the model side may hold: as many as an `Irqchip` takes (4096), so
/// every vCPU KVM created (1024 here) is in the model and compared.
const MODEL_VCPUS: usize = eoi_exit::MAX_VCPUS;

/// The GSI the route cases use (above the 24 reserved I/O APIC pins).
const GSI: u32 = 40;

/// `IA32_APIC_BASE`: the default base, enabled, x2APIC (EXTD), BSP.
const APIC_BASE_MSR: u32 = 0x1B;
const APIC_BASE: u64 = 0xFEE0_0000 | 1 << 11 | 1 << 10;
const APIC_BASE_BSP: u64 = 1 << 8;

/// The APIC IDs the cases name (physical targets and logical cluster members), looked
/// at first: clusters 0, 16, 18 and 63 whole, APIC IDs 44 and 255, and the highest.
fn named_ids(top: u32) -> Vec<u32> {
    let mut ids: Vec<u32> = (0..16)
        .chain(256..272)
        .chain(288..304)
        .chain(1008..1024)
        .collect();
    ids.extend([44, 255, top]);
    ids
}

/// The KVM vCPU ids (= initial x2APIC IDs): `n` of them below `max_id`, sparse: the
/// lowest ids but 777 (a destination that exists nowhere), and the highest id KVM allows.
fn kvm_ids(n: usize, max_id: u32) -> Vec<u32> {
    let top = max_id - 1;
    let mut ids: Vec<u32> = (0..top).filter(|&i| i != 777).take(n - 1).collect();
    ids.push(top);
    ids
}

struct KvmVm {
    vm: Vm,
    /// (APIC ID, vCPU) in creation order.
    vcpus: Vec<(u32, VcpuFd)>,
    _kvm: Kvm,
}

fn ioctl(what: &'static str) -> impl FnOnce(vmm_sys_util::errno::Error) -> HarnessError {
    move |e| HarnessError(format!("{what}: {e}"))
}

/// A split-irqchip VM with `ids` as vCPU ids, each LAPIC in x2APIC mode and enabled.
fn build(ids: &[u32], x2apic_api: bool) -> Result<KvmVm> {
    let kvm = Kvm::new().map_err(ioctl("open /dev/kvm"))?;
    let cpuid = supported_cpuid(&kvm).map_err(HarnessError)?;
    let fd = kvm.create_vm().map_err(ioctl("KVM_CREATE_VM"))?;
    let mut cap = kvm_enable_cap {
        cap: KVM_CAP_SPLIT_IRQCHIP,
        ..Default::default()
    };
    cap.args[0] = u64::from(NR_IOAPIC_PINS);
    fd.enable_cap(&cap)
        .map_err(ioctl("KVM_ENABLE_CAP(SPLIT_IRQCHIP)"))?;
    if x2apic_api {
        let mut cap = kvm_enable_cap {
            cap: KVM_CAP_X2APIC_API,
            ..Default::default()
        };
        cap.args[0] =
            u64::from(KVM_X2APIC_API_USE_32BIT_IDS | KVM_X2APIC_API_DISABLE_BROADCAST_QUIRK);
        fd.enable_cap(&cap)
            .map_err(ioctl("KVM_ENABLE_CAP(X2APIC_API)"))?;
    }
    let mut vcpus = Vec::with_capacity(ids.len());
    for &id in ids {
        let v = fd
            .create_vcpu(u64::from(id))
            .map_err(|e| HarnessError(format!("KVM_CREATE_VCPU({id}): {e}")))?;
        v.set_cpuid2(&cpuid).map_err(ioctl("KVM_SET_CPUID2"))?;
        let base = APIC_BASE | if id == 0 { APIC_BASE_BSP } else { 0 };
        let msrs = Msrs::from_entries(&[kvm_msr_entry {
            index: APIC_BASE_MSR,
            data: base,
            ..Default::default()
        }])
        .map_err(|e| HarnessError(format!("MSR list: {e:?}")))?;
        if v.set_msrs(&msrs).map_err(ioctl("KVM_SET_MSRS"))? != 1 {
            return Err(HarnessError(format!("vCPU {id}: IA32_APIC_BASE refused")));
        }
        // SVR: software-enabled, spurious vector 0xFF.
        let mut l = v.get_lapic().map_err(ioctl("KVM_GET_LAPIC"))?;
        for (i, b) in 0x1FFu32.to_le_bytes().into_iter().enumerate() {
            l.regs[0xF0 + i] = b as _;
        }
        v.set_lapic(&l).map_err(ioctl("KVM_SET_LAPIC"))?;
        vcpus.push((id, v));
    }
    let vm = Vm {
        fd,
        mode: IrqChipMode::Split,
        routes: Default::default(),
        trace: Trace::default(),
    };
    vm.trace.pause(true);
    Ok(KvmVm {
        vm,
        vcpus,
        _kvm: kvm,
    })
}

/// How a case reaches KVM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fire {
    /// `KVM_SET_GSI_ROUTING` of one MSI route on [`GSI`], then `KVM_IRQ_LINE` 1 and 0.
    Route,
    /// `KVM_SIGNAL_MSI`.
    Signal,
}

#[derive(Clone, Copy, Debug)]
struct Case {
    what: &'static str,
    msi: Msi,
    fire: Fire,
}

fn message(id: u32, logical: bool, lowest: bool, level: bool) -> InterruptMessage {
    InterruptMessage {
        destination: Destination {
            id,
            mode: if logical {
                DestinationMode::Logical
            } else {
                DestinationMode::Physical
            },
        },
        delivery_mode: if lowest {
            DeliveryMode::LowestPriority
        } else {
            DeliveryMode::Fixed
        },
        vector: Vector::new(0),
        trigger: if level {
            TriggerMode::Level
        } else {
            TriggerMode::Edge
        },
    }
}

/// `msg` encoded in `format`, with each trigger of `levels`, both ways in.
fn cases_for(
    out: &mut Vec<Case>,
    what: &'static str,
    msg: InterruptMessage,
    format: MsiFormat,
    levels: &[bool],
) {
    for &level in levels {
        let m = InterruptMessage {
            trigger: if level {
                TriggerMode::Level
            } else {
                TriggerMode::Edge
            },
            ..msg
        };
        let msi = Msi::from_message(&m, format).expect("the form carries it");
        for fire in [Fire::Route, Fire::Signal] {
            out.push(Case { what, msi, fire });
        }
    }
}

/// A raw address (`lo`, `hi`), edge and level (trigger and assert bits), both ways in.
fn raw_cases(out: &mut Vec<Case>, what: &'static str, lo: u32, hi: u32) {
    for level in [false, true] {
        let data = if level { 1 << 15 | 1 << 14 } else { 0 };
        let msi = Msi {
            address_lo: lo,
            address_hi: hi,
            data,
        };
        for fire in [Fire::Route, Fire::Signal] {
            out.push(Case { what, msi, fire });
        }
    }
}

/// An x2APIC logical destination: cluster in bits 31:16, member mask in 15:0.
fn cluster(c: u32, mask: u32) -> u32 {
    c << 16 | mask
}

/// The low address of `id` in Linux's extended-destination-ID form, built by hand:
/// bits 7:0 in address bits 19:12, bits 14:8 in address bits 11:5.
fn ext_form_lo(id: u32) -> u32 {
    0xFEE0_0000 | (id & 0xff) << 12 | (id >> 8 & 0x7f) << 5
}

fn api_cases(top: u32) -> Vec<Case> {
    let f = MsiFormat::X2apicApi;
    let both = &[false, true];
    let mut c = Vec::new();
    for (what, id) in [
        ("physical 0", 0),
        ("physical 1", 1),
        ("physical 44", 44),
        ("physical 256", 256),
        ("physical 300", 300),
        ("physical 1023", 1023),
        ("physical top", top),
        ("physical 777 (no such vCPU)", 777),
        ("physical 0x10000 (no such vCPU)", 0x1_0000),
        ("physical broadcast 0xffffffff", u32::MAX),
        // DISABLE_BROADCAST_QUIRK: an ordinary ID (the model's X2apicApi).
        ("physical 0xff (APIC ID 255: no broadcast quirk)", 0xFF),
    ] {
        cases_for(&mut c, what, message(id, false, false, false), f, both);
    }
    for (what, id) in [
        ("logical cluster 0 mask 0x3", cluster(0, 0x3)),
        ("logical cluster 16 mask 0x1 (256)", cluster(16, 0x1)),
        ("logical cluster 16 mask 0x8001", cluster(16, 0x8001)),
        ("logical cluster 16 mask 0xffff", cluster(16, 0xFFFF)),
        ("logical cluster 18 mask 0x1000 (300)", cluster(18, 0x1000)),
        ("logical cluster 18 mask 0x1001", cluster(18, 0x1001)),
        ("logical cluster 63 mask 0x8000 (1023)", cluster(63, 0x8000)),
        (
            "logical cluster of the top id",
            cluster(top >> 4, 1 << (top & 0xF)),
        ),
        (
            "logical cluster of the top id, mask 0xffff",
            cluster(top >> 4, 0xFFFF),
        ),
        ("logical broadcast 0xffffffff", u32::MAX),
        (
            "logical 0xff (cluster 0, members 0-7: no broadcast quirk)",
            0xFF,
        ),
    ] {
        cases_for(&mut c, what, message(id, true, false, false), f, both);
    }
    // Lowest priority (KVM's vector hashing): clusters the model holds whole.
    for (what, id, logical) in [
        (
            "lowest priority cluster 16 mask 0xffff",
            cluster(16, 0xFFFF),
            true,
        ),
        (
            "lowest priority cluster 18 mask 0x1001",
            cluster(18, 0x1001),
            true,
        ),
        ("lowest priority physical 300", 300, false),
    ] {
        cases_for(&mut c, what, message(id, logical, true, false), f, &[false]);
    }
    // What KVM does with the forms it does not read.
    ext_dest_cases(&mut c);
    raw_cases(
        &mut c,
        "address_hi bits 7:0 set (route invalid)",
        0xFEE0_0000 | 44 << 12,
        0x101,
    );
    c
}

/// The extended-destination form, which KVM never reads, with or without the
/// API: bits 11:5 are ignored.
fn ext_dest_cases(c: &mut Vec<Case>) {
    for (what, id) in [
        ("ext-dest form of 300 (bits 11:5 ignored: 44)", 300),
        ("ext-dest form of 0x105 (bits 11:5 ignored: 5)", 0x105),
    ] {
        raw_cases(c, what, ext_form_lo(id), 0);
    }
}

fn legacy_cases() -> Vec<Case> {
    let f = MsiFormat::Xapic;
    let both = &[false, true];
    let mut c = Vec::new();
    for (what, id, logical) in [
        ("physical 0", 0, false),
        ("physical 44", 44, false),
        ("physical 0xff (broadcast quirk)", 0xFF, false),
        ("logical cluster 0 mask 0x3", 0x3, true),
        ("logical 0xff (broadcast quirk)", 0xFF, true),
    ] {
        cases_for(&mut c, what, message(id, logical, false, false), f, both);
    }
    raw_cases(
        &mut c,
        "x2APIC-API form of 300 (address_hi ignored: 44)",
        0xFEE0_0000 | 44 << 12,
        0x100,
    );
    raw_cases(
        &mut c,
        "address_hi 0x101 (valid without the API: 44)",
        0xFEE0_0000 | 44 << 12,
        0x101,
    );
    ext_dest_cases(&mut c);
    c
}

/// Every observed vCPU's (IRR, TMR) bit of one vector.
type Seen = Vec<(bool, bool)>;

/// Fires `msi` on KVM: `Err` when KVM refuses it (the message says why).
fn fire_kvm(k: &mut KvmVm, msi: Msi, fire: Fire) -> std::result::Result<(), String> {
    let address = u64::from(msi.address_hi) << 32 | u64::from(msi.address_lo);
    match fire {
        Fire::Route => {
            k.vm.routes.clear();
            k.vm.set_route(
                GSI,
                Route::Msi {
                    address,
                    data: msi.data,
                },
            );
            k.vm.push_routes_quiet().map_err(|e| e.0)?;
            k.vm.irq_line(GSI, true).map_err(|e| e.0)?;
            k.vm.irq_line(GSI, false).map_err(|e| e.0)?;
        }
        Fire::Signal => {
            k.vm.signal_msi(address, msi.data).map_err(|e| e.0)?;
        }
    }
    Ok(())
}

struct Run {
    cases: usize,
    bad: Vec<String>,
    /// Fixed-delivery cases checked over every KVM vCPU.
    matched: usize,
    refused: usize,
    /// KVM's answers to the refused cases (one line each way in).
    why: Vec<String>,
}

/// Runs `cases` on one VM and its model; vector `0x20 + i` for case `i`.
fn run(name: &str, k: &mut KvmVm, format: MsiFormat, cases: &[Case]) -> Result<Run> {
    assert!(cases.len() <= usize::from(LAST_VECTOR - FIRST_VECTOR) + 1);
    let top = k.vcpus.last().expect("vCPUs").0;
    // The KVM vCPUs the model holds: the named ones first, then the lowest ids.
    let named = named_ids(top);
    let mut observed: Vec<usize> = Vec::new();
    for id in &named {
        if let Some(i) = k.vcpus.iter().position(|(x, _)| x == id)
            && !observed.contains(&i)
        {
            observed.push(i);
        }
    }
    for i in 0..k.vcpus.len() {
        if !observed.contains(&i) {
            observed.push(i);
        }
    }
    observed.truncate(MODEL_VCPUS);
    // `KVM_DIFF_MUTATE=ext-dest-everywhere` decodes as the model did before the
    // formats (bits 11:5 always read): the ext-dest cases must then disagree.
    let format = if std::env::var("KVM_DIFF_MUTATE").is_ok_and(|m| m == "ext-dest-everywhere") {
        MsiFormat::ExtDestId
    } else {
        format
    };
    let mut config = IrqchipConfig::default();
    config.ioapic.msi_format = format;
    let slots: Box<[VcpuSlot]> = observed.iter().map(|_| VcpuSlot::new()).collect();
    let chip: Irqchip<Box<[VcpuSlot]>> = Irqchip::with_apics(config, slots, |v| {
        LocalApic::new_enabled(
            ApicId::new(k.vcpus[observed[v.index()]].0),
            ApicMode::X2Apic,
        )
    });
    let all: Vec<LocalApic> = k
        .vcpus
        .iter()
        .map(|(id, _)| LocalApic::new_enabled(ApicId::new(*id), ApicMode::X2Apic))
        .collect();
    println!(
        "kvm_x2apic_ids: {name}: {} cases, the model holds {} of KVM's {} vCPUs",
        cases.len(),
        observed.len(),
        k.vcpus.len()
    );
    let mut r = Run {
        cases: 0,
        bad: Vec::new(),
        matched: 0,
        refused: 0,
        why: Vec::new(),
    };
    for (n, case) in cases.iter().enumerate() {
        let vector = FIRST_VECTOR + n as u8;
        let msi = Msi {
            data: (case.msi.data & !0xff) | u32::from(vector),
            ..case.msi
        };
        let kvm_refused = fire_kvm(k, msi, case.fire).err();
        let mut fx = Effects::new();
        chip.send_msi(&msi, &mut fx);
        let model_refused = msi.message(format).is_none();
        // Every KVM vCPU's IRR/TMR bit of this vector.
        let mut kvm_all: Seen = Vec::with_capacity(k.vcpus.len());
        for (_, v) in &k.vcpus {
            let l = v.get_lapic().map_err(ioctl("KVM_GET_LAPIC"))?;
            let regs = LapicRegs::from_state(&l);
            kvm_all.push((regs.irr_has(vector), regs.tmr_has(vector)));
        }
        let kvm: Seen = observed.iter().map(|&i| kvm_all[i]).collect();
        let v = Vector::new(vector);
        let model: Seen = (0..observed.len())
            .map(|i| {
                let a = chip.vcpu(VcpuId::new(i as u16)).expect("in range").apic;
                (a.irr().contains(v), a.tmr().contains(v))
            })
            .collect();
        let label = format!(
            "{name} {} {:?} [{:#x} {:#x} data {:#x}]",
            case.what, case.fire, msi.address_lo, msi.address_hi, msi.data
        );
        r.cases += 1;
        // What disagrees in this case (one disagreement per case, however many).
        let mut wrong: Vec<String> = Vec::new();
        if kvm_refused.is_some() != model_refused {
            wrong.push(format!(
                "{label}: KVM refused: {kvm_refused:?}, model refused: {model_refused}"
            ));
        } else if let Some(why) = kvm_refused {
            r.refused += 1;
            let w = format!("{:?}: {why}", case.fire);
            if !r.why.contains(&w) {
                r.why.push(w);
            }
        }
        if kvm != model {
            let ids = |s: &Seen| -> Vec<u32> {
                s.iter()
                    .zip(&observed)
                    .filter(|(x, _)| x.0)
                    .map(|(_, &i)| k.vcpus[i].0)
                    .collect()
            };
            wrong.push(format!(
                "{label}: IRR on KVM {:?}, model {:?} (TMR KVM {:?}, model {:?})",
                ids(&kvm),
                ids(&model),
                kvm.iter().filter(|x| x.1).count(),
                model.iter().filter(|x| x.1).count()
            ));
        }
        // Fixed delivery at full scale: every KVM vCPU against the model's matching.
        let fixed = msi.data >> 8 & 7 == 0;
        let dest = msi.message(format).map(|m| m.destination);
        // `LocalApic::matches` models KVM's default broadcast quirk; the "api"
        // VM disables it, so its 0xFF cases are compared with the chip only.
        let quirk_off_ff = format == MsiFormat::X2apicApi && dest.is_some_and(|d| d.id == 0xFF);
        if fixed && !quirk_off_ff {
            let want: Vec<u32> = all
                .iter()
                .filter(|a| dest.is_some_and(|d| a.matches(d)))
                .map(|a| a.state().initial_id)
                .collect();
            let got: Vec<u32> = kvm_all
                .iter()
                .zip(&k.vcpus)
                .filter(|(x, _)| x.0)
                .map(|(_, (id, _))| *id)
                .collect();
            r.matched += 1;
            if got != want {
                let show = |v: &[u32]| {
                    if v.len() > 8 {
                        format!("{} vCPUs", v.len())
                    } else {
                        format!("{v:?}")
                    }
                };
                wrong.push(format!(
                    "{label}: over all KVM vCPUs, KVM delivered to {}, LocalApic::matches names {}",
                    show(&got),
                    show(&want)
                ));
            }
        }
        if !wrong.is_empty() {
            r.bad.push(wrong.join("\n  "));
        }
        if (n + 1) % 20 == 0 {
            println!("kvm_x2apic_ids: {name}: {} cases done", n + 1);
        }
    }
    Ok(r)
}

#[test]
fn kvm_x2apic_ids_above_255_match_the_model() {
    if skip_without_kvm("kvm_x2apic_ids") {
        return;
    }
    let kvm = Kvm::new().expect("/dev/kvm");
    let max_vcpus = kvm.get_max_vcpus();
    let max_id = kvm.get_max_vcpu_id();
    let api = kvm.check_extension_int(Cap::X2ApicApi);
    println!(
        "kvm_x2apic_ids: KVM_CAP_MAX_VCPUS {max_vcpus}, KVM_CAP_MAX_VCPU_ID {max_id}, \
         KVM_CAP_X2APIC_API flags {api:#x}"
    );
    let needed = u64::from(KVM_X2APIC_API_USE_32BIT_IDS | KVM_X2APIC_API_DISABLE_BROADCAST_QUIRK);
    if (api as u64) & needed != needed || max_id <= 1024 || max_vcpus < 2 {
        println!("kvm_x2apic_ids: skipped: this KVM lacks the x2APIC API or vCPU ids above 1023");
        return;
    }
    let ids = kvm_ids(max_vcpus, max_id as u32);
    let top = *ids.last().unwrap();
    drop(kvm);

    let t = Instant::now();
    let mut api_vm = build(&ids, true).unwrap_or_else(|e| panic!("x2APIC-API VM: {e}"));
    println!(
        "kvm_x2apic_ids: api: {} vCPUs created (ids 0..={} but 777, and {top}), x2APIC on, in {:.2?}",
        ids.len(),
        ids[ids.len() - 2],
        t.elapsed()
    );
    let a = run("api", &mut api_vm, MsiFormat::X2apicApi, &api_cases(top)).unwrap();
    drop(api_vm);

    let t = Instant::now();
    let mut legacy_vm = build(&ids, false).unwrap_or_else(|e| panic!("legacy VM: {e}"));
    println!(
        "kvm_x2apic_ids: legacy: {} vCPUs created in {:.2?}",
        ids.len(),
        t.elapsed()
    );
    let l = run("legacy", &mut legacy_vm, MsiFormat::Xapic, &legacy_cases()).unwrap();
    drop(legacy_vm);
    for w in a.why.iter().chain(&l.why) {
        println!("kvm_x2apic_ids: refused: {w}");
    }

    let cases = a.cases + l.cases;
    let bad: Vec<&String> = a.bad.iter().chain(&l.bad).collect();
    println!(
        "kvm_x2apic_ids: {cases} cases compared ({} refused by both, {} fixed ones also over \
         all {} KVM vCPUs), {} disagreements",
        a.refused + l.refused,
        a.matched + l.matched,
        ids.len(),
        bad.len()
    );
    // The invalid x2APIC-API address, both triggers, both ways in; nothing else.
    assert_eq!((a.refused, l.refused), (4, 0), "refused cases");
    assert!(
        bad.is_empty(),
        "{}",
        bad.iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    );
}
