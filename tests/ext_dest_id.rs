//! Destinations above 255 (issue 16, item 2): the three address formats of
//! `MsiFormat`, each named after the rule it follows.
//!
//! * Linux's extended destination ID (`KVM_FEATURE_MSI_EXT_DEST_ID`):
//!   destination 14:8 in MSI address bits 11:5 and in I/O APIC entry bits
//!   55:49 (`virt_destid_8_14`), read only when the VMM advertises it.
//! * KVM's x2APIC API (`KVM_X2APIC_API_USE_32BIT_IDS`): destination 31:8 in
//!   `address_hi` (`x86_msi_msg_get_destid`); `address_hi` bits 7:0 make the
//!   route invalid (`kvm_msi_route_invalid`); without the API `address_hi` is
//!   ignored. KVM never reads bits 11:5 (the VMM swizzles them into
//!   `address_hi`, as QEMU's `kvm_swizzle_msi_ext_dest_id` does).

use eoi_exit::exit_bitmap::ScanEntry;
use eoi_exit::irqchip::Effects;
use eoi_exit::{
    ApicId, ApicMode, DeliveryMode, Destination, DestinationMode, EoiExitMap, InterruptMessage,
    InvalidValue, IoapicConfig, Irqchip, IrqchipConfig, LocalApic, Msi, MsiFormat, Pin, Policy,
    RedirectionEntry, TriggerMode, VcpuId, VcpuSlot, Vector,
};
use proptest::prelude::*;

const FORMATS: [MsiFormat; 3] = [MsiFormat::Xapic, MsiFormat::ExtDestId, MsiFormat::X2apicApi];

/// vCPU `i`'s x2APIC ID: 0x05, 0x105 (what 0x05 plus extended bit 8 names),
/// 300, 0x7FFF and 4095 (destinations only the wider formats carry), and 44
/// (300's low byte).
const IDS: [u32; 6] = [0x05, 0x105, 300, 0x7FFF, 4095, 44];

type Chip = Irqchip<[VcpuSlot; IDS.len()]>;

fn chip(format: MsiFormat) -> Chip {
    let mut config = IrqchipConfig::default();
    config.ioapic.msi_format = format;
    Irqchip::with_apics(config, [const { VcpuSlot::new() }; IDS.len()], |i| {
        LocalApic::new_enabled(ApicId::new(IDS[i.index()]), ApicMode::X2Apic)
    })
}

fn msg(id: u32, mode: DestinationMode, trigger: TriggerMode) -> InterruptMessage {
    InterruptMessage {
        destination: Destination { id, mode },
        delivery_mode: DeliveryMode::Fixed,
        vector: Vector::new(0x61),
        trigger,
    }
}

fn phys(id: u32) -> InterruptMessage {
    msg(id, DestinationMode::Physical, TriggerMode::Edge)
}

/// The APIC IDs of the vCPUs `fx` kicked.
fn kicked(fx: &Effects) -> Vec<u32> {
    fx.kick.iter().map(|v| IDS[v.index()]).collect()
}

/// The APIC IDs an MSI reaches on a chip decoding `format`.
fn msi_reaches(format: MsiFormat, msi: Msi) -> Vec<u32> {
    let c = chip(format);
    let mut fx = Effects::new();
    c.send_msi(&msi, &mut fx);
    kicked(&fx)
}

/// The APIC IDs a level entry for `dest` (bits 63:56 and 55:49) reaches.
fn entry_reaches(format: MsiFormat, dest: u32) -> Vec<u32> {
    let c = chip(format);
    let pin = Pin::new(9);
    let e = RedirectionEntry::fixed(Vector::new(0x42), TriggerMode::Level, dest);
    let mut fx = Effects::new();
    c.write_entry(pin, e.0, &mut fx);
    c.set_line(pin, true, &mut fx);
    kicked(&fx)
}

/// The MSI address of `id` in Linux's extended form: 7:0 in bits 19:12,
/// 14:8 in bits 11:5 (built by hand, not by the crate's encoder).
fn ext_form(id: u32) -> Msi {
    Msi {
        address_lo: 0xFEE0_0000 | (id & 0xff) << 12 | (id >> 8 & 0x7f) << 5,
        address_hi: 0,
        data: 0x61,
    }
}

#[test]
fn ext_dest_id_off_ignores_rte_bits_55_49() {
    // 0x105: bits 63:56 = 0x05, bit 49 set. The default format reads 0x05.
    assert_eq!(IoapicConfig::default().msi_format, MsiFormat::Xapic);
    assert_eq!(entry_reaches(MsiFormat::Xapic, 0x105), [0x05]);
    // An entry's message has no address_hi: the x2APIC API reads 8 bits too.
    assert_eq!(entry_reaches(MsiFormat::X2apicApi, 0x105), [0x05]);
}

#[test]
fn ext_dest_id_on_reads_rte_bits_55_49_as_destination_14_8() {
    assert_eq!(entry_reaches(MsiFormat::ExtDestId, 0x105), [0x105]);
    assert_eq!(entry_reaches(MsiFormat::ExtDestId, 300), [300]);
    assert_eq!(entry_reaches(MsiFormat::ExtDestId, 0x7FFF), [0x7FFF]);
    assert_eq!(entry_reaches(MsiFormat::ExtDestId, 4095), [4095]);
}

#[test]
fn ext_dest_id_on_rescans_and_intercepts_at_the_extended_destination() {
    // The level route to 0x105 puts its vector in that vCPU's bitmap and in
    // no one else's; without the format, in 0x05's.
    for (format, target) in [(MsiFormat::ExtDestId, 1), (MsiFormat::Xapic, 0)] {
        let c = chip(format);
        let e = RedirectionEntry::fixed(Vector::new(0x42), TriggerMode::Level, 0x105);
        c.write_entry(Pin::new(9), e.0, &mut Effects::new());
        for i in 0..IDS.len() {
            let map = c.vcpu(VcpuId::new(i as u16)).unwrap().map;
            assert_eq!(
                map.bitmap().contains(Vector::new(0x42)),
                i == target,
                "{format:?} vCPU{i}"
            );
        }
    }
}

#[test]
fn ext_dest_id_off_ignores_msi_address_bits_11_5() {
    assert_eq!(msi_reaches(MsiFormat::Xapic, ext_form(0x105)), [0x05]);
    assert_eq!(msi_reaches(MsiFormat::Xapic, ext_form(300)), [44]);
}

#[test]
fn ext_dest_id_on_reads_msi_address_bits_11_5_as_destination_14_8() {
    assert_eq!(msi_reaches(MsiFormat::ExtDestId, ext_form(0x105)), [0x105]);
    assert_eq!(msi_reaches(MsiFormat::ExtDestId, ext_form(300)), [300]);
    assert_eq!(
        msi_reaches(MsiFormat::ExtDestId, ext_form(0x7FFF)),
        [0x7FFF]
    );
}

#[test]
fn kvm_x2apic_api_ignores_address_bits_11_5() {
    // KVM reads 19:12 and address_hi only: the ext form reaches the low byte.
    assert_eq!(msi_reaches(MsiFormat::X2apicApi, ext_form(300)), [44]);
}

#[test]
fn kvm_x2apic_api_reads_address_hi_bits_31_8_as_destination_31_8() {
    for id in [300u32, 4095, 0x7FFF] {
        let route = Msi {
            address_lo: 0xFEE0_0000 | (id & 0xff) << 12,
            address_hi: id & !0xff,
            data: 0x61,
        };
        assert_eq!(msi_reaches(MsiFormat::X2apicApi, route), [id]);
        // Without the API KVM ignores address_hi: the low byte is the ID.
        assert_eq!(
            route.message(MsiFormat::Xapic).unwrap().destination.id,
            id & 0xff
        );
        assert_eq!(
            route.message(MsiFormat::ExtDestId).unwrap().destination.id,
            id & 0xff
        );
    }
}

#[test]
fn kvm_x2apic_api_refuses_a_route_with_address_hi_bits_7_0_set() {
    let bad = Msi {
        address_lo: 0xFEE0_0000 | 0x2C << 12,
        address_hi: 0x100 | 0x01,
        data: 0x8061,
    };
    assert_eq!(bad.message(MsiFormat::X2apicApi), None);
    assert_eq!(ScanEntry::from_msi_route(&bad, MsiFormat::X2apicApi), None);
    assert!(msi_reaches(MsiFormat::X2apicApi, bad).is_empty());
    // Without the API the same route is valid and goes to APIC ID 0x2C.
    assert_eq!(msi_reaches(MsiFormat::Xapic, bad), [44]);
}

#[test]
fn kvm_x2apic_api_carries_the_x2apic_broadcast() {
    let all = phys(0xFFFF_FFFF);
    let route = Msi::from_message(&all, MsiFormat::X2apicApi).unwrap();
    assert_eq!(
        (route.address_lo >> 12 & 0xff, route.address_hi),
        (0xFF, 0xFFFF_FF00)
    );
    assert_eq!(route.message(MsiFormat::X2apicApi), Some(all));
    assert_eq!(msi_reaches(MsiFormat::X2apicApi, route), IDS);
}

#[test]
fn kvm_x2apic_api_carries_logical_cluster_destinations_above_cluster_15() {
    // x2APIC logical ID: cluster ID >> 4 in bits 31:16, bit ID & 0xF below.
    // 300 is cluster 18, bit 12; 4095 cluster 255, bit 15.
    for id in [300u32, 4095] {
        let ldr = (id >> 4) << 16 | 1 << (id & 0xf);
        let m = msg(ldr, DestinationMode::Logical, TriggerMode::Edge);
        let route = Msi::from_message(&m, MsiFormat::X2apicApi).unwrap();
        assert_eq!(msi_reaches(MsiFormat::X2apicApi, route), [id]);
        assert_eq!(
            Msi::from_message(&m, MsiFormat::ExtDestId),
            Err(InvalidValue(u64::from(ldr)))
        );
    }
}

#[test]
fn an_encoder_refuses_a_destination_its_form_cannot_carry() {
    assert_eq!(
        Msi::from_message(&phys(0x100), MsiFormat::Xapic),
        Err(InvalidValue(0x100))
    );
    assert_eq!(
        Msi::from_message(&phys(0x8000), MsiFormat::ExtDestId),
        Err(InvalidValue(0x8000))
    );
    assert!(Msi::from_message(&phys(0xFF), MsiFormat::Xapic).is_ok());
    assert!(Msi::from_message(&phys(0x7FFF), MsiFormat::ExtDestId).is_ok());
    assert!(Msi::from_message(&phys(u32::MAX), MsiFormat::X2apicApi).is_ok());
}

#[test]
fn a_split_irqchip_route_of_an_extended_entry_is_qemus_swizzle() {
    // The entry as the guest meant it, the route as KVM reads it.
    let e = RedirectionEntry::fixed(Vector::new(0x42), TriggerMode::Level, 0x1234);
    let route = Msi::from_message(
        &e.message(MsiFormat::ExtDestId).unwrap(),
        MsiFormat::X2apicApi,
    )
    .unwrap();
    // QEMU: the I/O APIC copies entry bits 63:48 to address bits 19:4, then
    // kvm_swizzle_msi_ext_dest_id moves address bits 11:5 to bits 46:40.
    let qemu_addr = 0xFEE0_0000u64 | (e.0 >> 48 & 0xffff) << 4;
    let ext = qemu_addr & 0xff << 4;
    let swizzled = (qemu_addr & !ext) | ext << 35;
    assert_eq!(
        u64::from(route.address_hi) << 32 | u64::from(route.address_lo),
        swizzled
    );
    assert_eq!(
        route.message(MsiFormat::X2apicApi).unwrap().destination.id,
        0x1234
    );
    // Without the API it cannot be installed without losing bits 14:8.
    let e_msg = e.message(MsiFormat::ExtDestId).unwrap();
    assert_eq!(
        Msi::from_message(&e_msg, MsiFormat::Xapic),
        Err(InvalidValue(0x1234))
    );
}

#[test]
fn kvm_split_scan_counts_an_x2apic_api_route_at_its_32_bit_destination() {
    // kvm_scan_ioapic_routes decodes the route as KVM_SIGNAL_MSI would.
    let level = msg(300, DestinationMode::Physical, TriggerMode::Level);
    let route = Msi::from_message(&level, MsiFormat::X2apicApi).unwrap();
    for (id, format, counted) in [
        (300, MsiFormat::X2apicApi, true),
        (44, MsiFormat::X2apicApi, false),
        (300, MsiFormat::Xapic, false),
        (44, MsiFormat::Xapic, true),
    ] {
        let apic = LocalApic::new_enabled(ApicId::new(id), ApicMode::X2Apic);
        let mut map = EoiExitMap::new(Policy::KvmHighestStale);
        map.scan(&apic, ScanEntry::from_msi_route(&route, format));
        assert_eq!(
            map.bitmap().contains(Vector::new(0x61)),
            counted,
            "{id} {format:?}"
        );
    }
}

fn any_message(id: u32) -> impl Strategy<Value = InterruptMessage> {
    (
        any::<bool>(),
        any::<bool>(),
        16u8..=255,
        prop::sample::select(vec![0u8, 1, 2, 4, 5, 7]),
    )
        .prop_map(move |(logical, level, v, dm)| InterruptMessage {
            destination: Destination {
                id,
                mode: if logical {
                    DestinationMode::Logical
                } else {
                    DestinationMode::Physical
                },
            },
            delivery_mode: DeliveryMode::try_from(dm).unwrap(),
            vector: Vector::new(v),
            trigger: if level {
                TriggerMode::Level
            } else {
                TriggerMode::Edge
            },
        })
}

proptest! {
    #[test]
    fn xapic_form_round_trips_every_8_bit_destination(m in (0u32..=0xFF).prop_flat_map(any_message)) {
        let msi = Msi::from_message(&m, MsiFormat::Xapic).unwrap();
        prop_assert_eq!(msi.address_hi, 0);
        prop_assert_eq!(msi.address_lo & 0x7f << 5, 0);
        // The 8-bit form means the same in every format.
        for f in FORMATS {
            prop_assert_eq!(msi.message(f), Some(m));
        }
    }

    #[test]
    fn ext_dest_id_form_round_trips_every_destination_up_to_0x7fff(
        m in (0u32..=0x7FFF).prop_flat_map(any_message),
    ) {
        let msi = Msi::from_message(&m, MsiFormat::ExtDestId).unwrap();
        prop_assert_eq!(msi, Msi { data: msi.data, ..ext_form(m.destination.id) }.with_mode(m));
        prop_assert_eq!(msi.message(MsiFormat::ExtDestId), Some(m));
        // An I/O APIC entry carries the same 15 bits.
        let e = RedirectionEntry::new(
            m.vector,
            m.delivery_mode,
            m.destination.mode,
            eoi_exit::Polarity::ActiveHigh,
            m.trigger,
            false,
            m.destination.id,
        );
        prop_assert_eq!(e.message(MsiFormat::ExtDestId), Some(m));
        prop_assert_eq!(
            e.message(MsiFormat::Xapic).unwrap().destination.id,
            m.destination.id & 0xff
        );
    }

    #[test]
    fn x2apic_api_form_round_trips_every_32_bit_destination(
        m in any::<u32>().prop_flat_map(any_message),
    ) {
        let msi = Msi::from_message(&m, MsiFormat::X2apicApi).unwrap();
        prop_assert_eq!(msi.address_hi & 0xff, 0);
        prop_assert_eq!(msi.address_lo & 0x7f << 5, 0);
        prop_assert_eq!(msi.message(MsiFormat::X2apicApi), Some(m));
    }

    #[test]
    fn a_destination_the_form_cannot_carry_is_an_error_not_a_truncation(id in any::<u32>()) {
        let m = phys(id);
        prop_assert_eq!(
            Msi::from_message(&m, MsiFormat::Xapic).is_ok(),
            id <= 0xFF
        );
        prop_assert_eq!(
            Msi::from_message(&m, MsiFormat::ExtDestId).is_ok(),
            id <= 0x7FFF
        );
        for f in FORMATS {
            match Msi::from_message(&m, f) {
                Ok(msi) => prop_assert_eq!(msi.message(f).unwrap().destination.id, id),
                Err(e) => prop_assert_eq!(e, InvalidValue(u64::from(id))),
            }
        }
    }
}

/// The hand-built address with `m`'s destination mode and data.
trait WithMode {
    fn with_mode(self, m: InterruptMessage) -> Msi;
}

impl WithMode for Msi {
    fn with_mode(self, m: InterruptMessage) -> Msi {
        let logical = u32::from(m.destination.mode == DestinationMode::Logical) << 2;
        Msi {
            address_lo: self.address_lo | logical,
            ..self
        }
    }
}

#[cfg(feature = "serde")]
mod snapshots {
    use super::*;
    use eoi_exit::irqchip::VcpuState;
    use eoi_exit::snapshot::{IrqchipState, SNAPSHOT_VERSION};

    /// Sets every snapshot `version` field under `v` to `n` (not the I/O
    /// APIC's version register, `config.version`, which is no number).
    fn set_versions(v: &mut serde_json::Value, n: u16) {
        match v {
            serde_json::Value::Object(m) => {
                for (k, x) in m.iter_mut() {
                    if k == "version" && x.is_u64() {
                        *x = n.into();
                    } else {
                        set_versions(x, n);
                    }
                }
            }
            serde_json::Value::Array(a) => a.iter_mut().for_each(|x| set_versions(x, n)),
            _ => {}
        }
    }

    #[test]
    fn snapshot_version_6_saves_the_destination_format() {
        assert_eq!(SNAPSHOT_VERSION, 6);
        let c = chip(MsiFormat::X2apicApi);
        let s: IrqchipState<Vec<VcpuState>> = c.state();
        let json = serde_json::to_string(&s).unwrap();
        let back: IrqchipState<Vec<VcpuState>> = serde_json::from_str(&json).unwrap();
        assert_eq!(back.config.ioapic.msi_format, MsiFormat::X2apicApi);
        assert_eq!(back, s);
    }

    /// A version-5 snapshot has no `msi_format`: it loads with the decoding
    /// version 5 applied to every entry (bits 55:49 are destination 14:8),
    /// and the restored chip delivers where the one that wrote it did.
    #[test]
    fn a_version_5_json_snapshot_loads_with_the_extended_destination_id() {
        let c = chip(MsiFormat::Xapic);
        let pin = Pin::new(9);
        let e = RedirectionEntry::fixed(Vector::new(0x42), TriggerMode::Level, 0x105);
        c.write_entry(pin, e.0, &mut Effects::new());
        let s: IrqchipState<Vec<VcpuState>> = c.state();
        let mut json = serde_json::to_value(&s).unwrap();
        set_versions(&mut json, 5);
        for path in [["config", "ioapic"], ["ioapic", "config"]] {
            let config = json[path[0]][path[1]].as_object_mut().unwrap();
            assert!(config.remove("msi_format").is_some());
        }
        let v5: IrqchipState<Vec<VcpuState>> = serde_json::from_value(json).unwrap();
        assert_eq!(v5.version, 5);
        assert_eq!(v5.config.ioapic.msi_format, MsiFormat::ExtDestId);
        assert_eq!(v5.ioapic.config.msi_format, MsiFormat::ExtDestId);
        let copy = Chip::from_state(&v5, [const { VcpuSlot::new() }; IDS.len()]).expect("v5 loads");
        let mut fx = Effects::new();
        copy.set_line(pin, true, &mut fx);
        assert_eq!(kicked(&fx), [0x105]);
        // A newer version refuses nothing it wrote: the copy saves as 6.
        assert_eq!(copy.state::<Vec<_>>().version, 6);
    }
}
