//! Past 255 vCPUs: 32-bit, sparse x2APIC IDs on up to 4096 vCPUs (issue
//! "Past 255 vCPUs"). Everything goes through the public API; the reference
//! for "who takes a message" is a walk of every vCPU with
//! [`LocalApic::matches`] and [`LocalApic::accept`], which is what KVM's slow
//! path (`kvm_irq_delivery_to_apic` without the APIC map) does.

use eoi_exit::irqchip::{Arbitration, Effects};
use eoi_exit::lapic::LocalApic;
use eoi_exit::{
    Acceptance, ApicId, ApicMode, DeliveryMode, Destination, DestinationMode, InterruptMessage,
    Irqchip, IrqchipConfig, LapicWrite, MAX_VCPUS, Msi, MsiFormat, Pin, RedirectionEntry,
    TriggerMode, VcpuId, VcpuSet, VcpuSlot, Vector,
};
use proptest::prelude::*;

type Chip = Irqchip<Box<[VcpuSlot]>, 24>;

/// MSIs with 32-bit destinations (KVM's x2APIC API); entries then carry 8
/// bits.
fn chip_with(n: usize, apic: impl FnMut(VcpuId) -> LocalApic) -> Chip {
    chip_in(n, MsiFormat::X2apicApi, apic)
}

fn chip_in(n: usize, format: MsiFormat, apic: impl FnMut(VcpuId) -> LocalApic) -> Chip {
    let slots: Box<[VcpuSlot]> = (0..n).map(|_| VcpuSlot::new()).collect();
    let mut config = IrqchipConfig::default();
    config.ioapic.msi_format = format;
    Irqchip::with_apics(config, slots, apic)
}

/// Sends `m` as the MSI the chip's format encodes it to.
fn send(chip: &Chip, m: &InterruptMessage, fx: &mut Effects) {
    let msi = Msi::from_message(m, chip.config().ioapic.msi_format).expect("encodable");
    chip.send_msi(&msi, fx);
}

fn x2(id: u32) -> LocalApic {
    LocalApic::new_enabled(ApicId::new(id), ApicMode::X2Apic)
}

fn msg(id: u32, mode: DestinationMode, dm: DeliveryMode, v: u8) -> InterruptMessage {
    InterruptMessage {
        destination: Destination { id, mode },
        delivery_mode: dm,
        vector: Vector::new(v),
        trigger: TriggerMode::Edge,
    }
}

/// The vCPUs a walk finds: destination matched and message accepted. Under
/// `MsiFormat::X2apicApi` the chip models KVM with
/// `KVM_X2APIC_API_DISABLE_BROADCAST_QUIRK` (`LocalApic::matches` models the
/// default quirk): 0xFF is then an ordinary x2APIC destination.
fn walk(chip: &Chip, m: &InterruptMessage) -> VcpuSet {
    let quirk = chip.config().ioapic.msi_format != MsiFormat::X2apicApi;
    (0..chip.vcpus())
        .map(|i| VcpuId::new(i as u16))
        .filter(|&v| {
            let mut a = chip.vcpu(v).unwrap().apic;
            let d = m.destination;
            let hit = if !quirk && d.id == 0xFF && a.mode() == ApicMode::X2Apic {
                match d.mode {
                    DestinationMode::Physical => a.id().get() == 0xFF,
                    // Cluster 0, members 0-7 (SDM x2APIC logical match).
                    DestinationMode::Logical => {
                        let ldr = a.read_register(0xD0).unwrap();
                        ldr >> 16 == 0 && ldr & 0xFF != 0
                    }
                }
            } else {
                a.matches(d)
            };
            hit && !matches!(a.accept(m), Acceptance::Ignored(_))
        })
        .collect()
}

#[test]
fn x2apic_api_format_makes_0xff_apic_id_255_as_kvm_with_disable_broadcast_quirk() {
    let mut fx = Effects::new();
    for (format, phys, logical) in [
        // KVM's default: the quirk rewrites 0xFF to the x2APIC broadcast.
        (MsiFormat::Xapic, 300, 300),
        // `KVM_X2APIC_API_DISABLE_BROADCAST_QUIRK` (QEMU sets it with
        // `USE_32BIT_IDS`): APIC ID 255; logical cluster 0, members 0-7.
        (MsiFormat::X2apicApi, 1, 8),
    ] {
        let chip = chip_in(300, format, |v| x2(u32::from(v.get())));
        for (mode, want) in [
            (DestinationMode::Physical, phys),
            (DestinationMode::Logical, logical),
        ] {
            fx.clear();
            send(&chip, &msg(0xFF, mode, DeliveryMode::Fixed, 0x40), &mut fx);
            assert_eq!(fx.kick.len(), want, "{format:?} {mode:?}");
        }
        fx.clear();
        send(
            &chip,
            &msg(0xFF, DestinationMode::Physical, DeliveryMode::Fixed, 0x41),
            &mut fx,
        );
        if format == MsiFormat::X2apicApi {
            assert_eq!(fx.kick.iter().collect::<Vec<_>>(), [VcpuId::new(255)]);
        }
    }
}

#[test]
fn an_ipi_from_an_x2apic_lapic_to_0xff_is_apic_id_255_not_a_broadcast() {
    // KVM's `kvm_apic_mda`: the quirk never applies to an IPI whose source
    // is in x2APIC mode, whatever the VM's setting.
    let chip = chip_in(300, MsiFormat::Xapic, |v| x2(u32::from(v.get())));
    let mut fx = Effects::new();
    let icr = 0xFFu64 << 32 | 0x40; // fixed, physical, vector 0x40, to ID 0xFF
    chip.write_lapic(VcpuId::new(0), LapicWrite::Icr(icr), &mut fx);
    assert_eq!(fx.kick.iter().collect::<Vec<_>>(), [VcpuId::new(255)]);
}

#[test]
fn max_vcpus_is_kvms_4096_and_a_larger_storage_is_refused() {
    assert_eq!(MAX_VCPUS, 4096);
    let r = std::panic::catch_unwind(|| chip_with(4097, |v| x2(u32::from(v.get()))));
    assert!(r.is_err());
}

#[test]
fn x2apic_broadcast_to_4096_vcpus_kicks_every_one_of_them() {
    let chip = chip_with(4096, |v| x2(u32::from(v.get())));
    let mut fx = Effects::new();
    let m = msg(
        u32::MAX,
        DestinationMode::Physical,
        DeliveryMode::Fixed,
        0x61,
    );
    send(&chip, &m, &mut fx);
    assert_eq!(fx.kick.len(), 4096, "no vCPU to kick is lost");
    for v in [0u16, 255, 256, 4095] {
        assert!(
            chip.vcpu(VcpuId::new(v))
                .unwrap()
                .apic
                .irr()
                .contains(Vector::new(0x61))
        );
    }
}

/// Topology-encoded IDs: package in bits 12 and up, core in 5:1, SMT in 0,
/// with holes; vCPU `i` is not ID `i`.
fn topo(i: u16) -> u32 {
    let (pkg, core, smt) = (u32::from(i) / 64, u32::from(i) / 2 % 32, u32::from(i) % 2);
    pkg << 12 | core << 1 | smt
}

#[test]
fn physical_destination_above_255_reaches_the_vcpu_with_that_sparse_x2apic_id() {
    let chip = chip_with(1024, |v| x2(topo(v.get())));
    let mut fx = Effects::new();
    for i in [0u16, 63, 64, 700, 1023] {
        fx.clear();
        let m = msg(
            topo(i),
            DestinationMode::Physical,
            DeliveryMode::Fixed,
            0x40,
        );
        send(&chip, &m, &mut fx);
        assert_eq!(
            fx.kick.iter().collect::<Vec<_>>(),
            [VcpuId::new(i)],
            "ID {:#x}",
            topo(i)
        );
    }
    // A hole in the topology: nobody.
    fx.clear();
    send(
        &chip,
        &msg(0x80, DestinationMode::Physical, DeliveryMode::Fixed, 0x40),
        &mut fx,
    );
    assert!(fx.kick.is_empty());
}

#[test]
fn duplicate_x2apic_ids_all_take_a_physical_message_as_in_kvm_without_its_map() {
    // vCPUs 3 and 9 both claim ID 0x1000.
    let chip = chip_with(12, |v| {
        x2(if matches!(v.get(), 3 | 9) {
            0x1000
        } else {
            0x2000 + u32::from(v.get())
        })
    });
    let mut fx = Effects::new();
    send(
        &chip,
        &msg(0x1000, DestinationMode::Physical, DeliveryMode::Fixed, 0x40),
        &mut fx,
    );
    assert_eq!(
        fx.kick.iter().collect::<Vec<_>>(),
        [VcpuId::new(3), VcpuId::new(9)]
    );
}

#[test]
fn x2apic_cluster_destination_above_cluster_15_reaches_its_members_and_lowest_priority_picks_among_them()
 {
    // 1024 vCPUs, ID = index: cluster 40 holds IDs 640..=655.
    let chip = chip_with(1024, |v| x2(u32::from(v.get())));
    let mut fx = Effects::new();
    let cluster40 = 40 << 16 | 0b1000_0000_0000_0101; // members 0, 2, 15
    send(
        &chip,
        &msg(
            cluster40,
            DestinationMode::Logical,
            DeliveryMode::Fixed,
            0x50,
        ),
        &mut fx,
    );
    let ids: Vec<u16> = fx.kick.iter().map(VcpuId::get).collect();
    assert_eq!(ids, [640, 642, 655]);
    // Lowest priority under KVM's default vector hashing: the
    // (vector % 3)-th member; 0x51 % 3 = 0, so ID 640.
    let lowest = msg(
        cluster40,
        DestinationMode::Logical,
        DeliveryMode::LowestPriority,
        0x51,
    );
    fx.clear();
    send(&chip, &lowest, &mut fx);
    assert_eq!(fx.kick.iter().collect::<Vec<_>>(), [VcpuId::new(640)]);
    // SDM arbitration: the member with the lowest TPR.
    let slots: Box<[VcpuSlot]> = (0..1024).map(|_| VcpuSlot::new()).collect();
    let mut config = IrqchipConfig {
        arbitration: Arbitration::SdmPriority,
        ..IrqchipConfig::default()
    };
    config.ioapic.msi_format = MsiFormat::X2apicApi;
    let chip: Chip = Irqchip::with_apics(config, slots, |v| x2(u32::from(v.get())));
    for (v, tpr) in [(640u16, 0x20), (642, 0x10), (655, 0x30)] {
        let tpr = LapicWrite::Register {
            offset: 0x80,
            value: tpr,
        };
        chip.write_lapic(VcpuId::new(v), tpr, &mut fx);
    }
    fx.clear();
    send(&chip, &lowest, &mut fx);
    assert_eq!(fx.kick.iter().collect::<Vec<_>>(), [VcpuId::new(642)]);
}

#[test]
fn a_redirection_write_on_4096_vcpus_reloads_only_the_old_and_new_destinations() {
    // Entry destinations above 255: the extended destination ID.
    let chip = chip_in(4096, MsiFormat::ExtDestId, |v| x2(u32::from(v.get())));
    let mut fx = Effects::new();
    let pin = Pin::new(5);
    chip.write_entry(
        pin,
        RedirectionEntry::fixed(Vector::new(0x35), TriggerMode::Level, 1000).0,
        &mut fx,
    );
    fx.clear();
    chip.write_entry(
        pin,
        RedirectionEntry::fixed(Vector::new(0x35), TriggerMode::Level, 3000).0,
        &mut fx,
    );
    let reload: Vec<u16> = fx.reload.iter().map(VcpuId::get).collect();
    assert_eq!(reload, [1000, 3000]);
    assert!(
        chip.vcpu(VcpuId::new(3000))
            .unwrap()
            .map
            .intercepts(Vector::new(0x35))
    );
    assert!(
        !chip
            .vcpu(VcpuId::new(1000))
            .unwrap()
            .map
            .intercepts(Vector::new(0x35))
    );
}

#[test]
fn a_1024_vcpu_snapshot_with_sparse_ids_restores_to_the_same_state() {
    let chip = chip_with(1024, |v| x2(topo(v.get())));
    let mut fx = Effects::new();
    send(
        &chip,
        &msg(
            topo(700),
            DestinationMode::Physical,
            DeliveryMode::Fixed,
            0x40,
        ),
        &mut fx,
    );
    let snap: eoi_exit::irqchip::IrqchipState<Vec<_>> = chip.state();
    let slots: Box<[VcpuSlot]> = (0..1024).map(|_| VcpuSlot::new()).collect();
    let copy: Chip = Irqchip::from_state(&snap, slots).expect("valid");
    assert_eq!(copy.state::<Vec<_>>(), snap);
    // The copy's caches were rebuilt: the sparse ID still routes.
    fx.clear();
    send(
        &copy,
        &msg(
            topo(1023),
            DestinationMode::Physical,
            DeliveryMode::Fixed,
            0x41,
        ),
        &mut fx,
    );
    assert_eq!(fx.kick.iter().collect::<Vec<_>>(), [VcpuId::new(1023)]);
}

/// A pool of IDs with duplicates, large values, and 0xFF / 0xFFFF_FFFF.
fn id() -> impl Strategy<Value = u32> {
    prop_oneof![
        0u32..8,
        Just(0xFF),
        0x100u32..0x108,
        Just(0x1_0003),
        Just(0x10_0002), // above 2^20: its x2APIC cluster aliases
        Just(0xFFFF_FFFF),
        any::<u32>(),
    ]
}

fn mode() -> impl Strategy<Value = ApicMode> {
    prop_oneof![
        6 => Just(ApicMode::X2Apic),
        3 => Just(ApicMode::XApic),
        1 => Just(ApicMode::Disabled),
    ]
}

#[derive(Clone, Debug)]
enum Step {
    Msi {
        id: u32,
        logical: bool,
        lowest: bool,
        v: u8,
    },
    Pin {
        dest: u32,
        logical: bool,
        v: u8,
    },
    SetId {
        vcpu: usize,
        id: u32,
    },
    Mode {
        vcpu: usize,
        mode: ApicMode,
    },
    Ldr {
        vcpu: usize,
        ldr: u8,
    },
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => (id(), any::<bool>(), any::<bool>(), 0x20u8..0xF0).prop_map(|(id, logical, lowest, v)| Step::Msi { id, logical, lowest, v }),
        3 => (prop_oneof![0u32..8, 0x100u32..0x108, Just(0xFF)], any::<bool>(), 0x20u8..0xF0).prop_map(|(dest, logical, v)| Step::Pin { dest, logical, v }),
        1 => (0usize..40, id()).prop_map(|(vcpu, id)| Step::SetId { vcpu, id }),
        1 => (0usize..40, mode()).prop_map(|(vcpu, mode)| Step::Mode { vcpu, mode }),
        1 => (0usize..40, any::<u8>()).prop_map(|(vcpu, ldr)| Step::Ldr { vcpu, ldr }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// The routing caches (the physical table, the sorted-ID index, the
    /// x2APIC cluster lookups, each pin's vCPUs) deliver to exactly the
    /// vCPUs a walk of every LAPIC finds, whatever the IDs (sparse,
    /// duplicated, above 2^20), modes and LDRs, and after host changes of
    /// them. Lowest priority delivers to one of them.
    #[test]
    fn cached_routing_delivers_to_exactly_the_vcpus_a_walk_of_every_lapic_finds(
        apics in proptest::collection::vec((id(), mode()), 1..40),
        steps in proptest::collection::vec(step(), 1..40),
    ) {
        let chip = chip_with(apics.len(), |v| {
            let (id, mode) = apics[v.index()];
            LocalApic::new_enabled(ApicId::new(id), mode)
        });
        let n = chip.vcpus();
        let mut fx = Effects::new();
        for s in steps {
            fx.clear();
            match s {
                Step::Msi { id, logical, lowest, v } => {
                    let dm = if lowest { DeliveryMode::LowestPriority } else { DeliveryMode::Fixed };
                    let mode = if logical { DestinationMode::Logical } else { DestinationMode::Physical };
                    let m = msg(id, mode, dm, v);
                    let want = walk(&chip, &m);
                    send(&chip, &m, &mut fx);
                    if lowest {
                        prop_assert!(fx.kick.len() <= 1 && fx.kick.iter().all(|k| want.contains(k)));
                        prop_assert_eq!(fx.kick.is_empty(), want.is_empty());
                    } else {
                        prop_assert_eq!(&fx.kick, &want, "{:?}", m);
                    }
                }
                Step::Pin { dest, logical, v } => {
                    let mode = if logical { DestinationMode::Logical } else { DestinationMode::Physical };
                    let e = RedirectionEntry::new(Vector::new(v), DeliveryMode::Fixed, mode,
                        eoi_exit::Polarity::ActiveHigh, TriggerMode::Edge, false, dest);
                    chip.write_entry(Pin::new(3), e.0, &mut fx);
                    let format = chip.config().ioapic.msi_format;
                    let m = msg(e.message(format).unwrap().destination.id, mode, DeliveryMode::Fixed, v);
                    let want = walk(&chip, &m);
                    fx.clear();
                    chip.set_line(Pin::new(3), true, &mut fx);
                    chip.set_line(Pin::new(3), false, &mut fx);
                    prop_assert_eq!(&fx.kick, &want, "pin to {:?}", m.destination);
                }
                Step::SetId { vcpu, id } => chip.write_lapic(VcpuId::new((vcpu % n) as u16), LapicWrite::SetId(ApicId::new(id)), &mut fx),
                Step::Mode { vcpu, mode } => chip.write_lapic(VcpuId::new((vcpu % n) as u16), LapicWrite::Mode(mode), &mut fx),
                Step::Ldr { vcpu, ldr } => chip.write_lapic(
                    VcpuId::new((vcpu % n) as u16),
                    LapicWrite::Register { offset: 0xD0, value: u32::from(ldr) << 24 },
                    &mut fx,
                ),
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// With every vCPU in x2APIC mode, a logical destination is looked up
    /// member by member in its cluster (no walk of the VM): the vCPUs found
    /// are exactly those a walk finds, with sparse and duplicated IDs, and
    /// after an ID changes.
    #[test]
    fn x2apic_cluster_lookups_find_exactly_the_members_a_walk_finds(
        ids in proptest::collection::vec(0u32..80, 1..64),
        dests in proptest::collection::vec((0u32..6, any::<u16>(), any::<bool>()), 1..16),
        moves in proptest::collection::vec((0usize..64, 0u32..80), 0..4),
    ) {
        let chip = chip_with(ids.len(), |v| x2(ids[v.index()]));
        let n = chip.vcpus();
        let mut fx = Effects::new();
        for (k, (cluster, members, lowest)) in dests.into_iter().enumerate() {
            if let Some(&(vcpu, id)) = moves.get(k) {
                chip.write_lapic(VcpuId::new((vcpu % n) as u16), LapicWrite::SetId(ApicId::new(id)), &mut fx);
            }
            let dm = if lowest { DeliveryMode::LowestPriority } else { DeliveryMode::Fixed };
            let m = msg(cluster << 16 | u32::from(members), DestinationMode::Logical, dm, 0x40);
            let want = walk(&chip, &m);
            fx.clear();
            send(&chip, &m, &mut fx);
            if lowest {
                prop_assert!(fx.kick.len() <= 1 && fx.kick.iter().all(|k| want.contains(k)));
                prop_assert_eq!(fx.kick.is_empty(), want.is_empty());
            } else {
                prop_assert_eq!(&fx.kick, &want, "{:?}", m.destination);
            }
        }
    }
}
