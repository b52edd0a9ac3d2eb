//! Unit tests of the Irqchip wiring.

use super::*;
use crate::RedirectionEntry;
use crate::types::TriggerMode;

type Chip<const N: usize> = Irqchip<[VcpuSlot; N]>;

fn chip<const N: usize>() -> Chip<N> {
    Irqchip::new(
        IrqchipConfig::default(),
        ApicMode::XApic,
        [const { VcpuSlot::new() }; N],
    )
}

fn msg(dest: u32) -> InterruptMessage {
    InterruptMessage {
        destination: Destination {
            id: dest,
            mode: DestinationMode::Physical,
        },
        delivery_mode: DeliveryMode::Fixed,
        vector: Vector::new(0x40),
        trigger: TriggerMode::Edge,
    }
}

fn kicked<const N: usize>(c: &Chip<N>, m: &InterruptMessage) -> std::vec::Vec<u16> {
    let mut fx = Effects::new();
    c.send_msi(&Msi::from_message(m, MsiFormat::Xapic).unwrap(), &mut fx);
    fx.kick.iter().map(VcpuId::get).collect()
}

#[test]
fn physical_delivery_follows_an_apic_id_change() {
    let c = chip::<4>();
    let mut fx = Effects::new();
    c.write_lapic(VcpuId::new(3), LapicWrite::SetId(ApicId::new(9)), &mut fx);
    assert_eq!(kicked(&c, &msg(9)), [3]);
    assert!(kicked(&c, &msg(3)).is_empty(), "nobody has ID 3 any more");
}

#[test]
fn xapic_physical_broadcast_reaches_every_vcpu() {
    assert_eq!(kicked(&chip::<4>(), &msg(0xff)), [0, 1, 2, 3]);
}

#[test]
fn duplicate_apic_ids_both_accept_a_physical_message() {
    let c = chip::<4>();
    let mut fx = Effects::new();
    c.write_lapic(VcpuId::new(2), LapicWrite::SetId(ApicId::new(1)), &mut fx);
    assert_eq!(kicked(&c, &msg(1)), [1, 2]);
}

#[test]
fn an_addressing_write_rescans_every_vcpu_like_a_kvm_apic_map_change() {
    let c = chip::<3>();
    let rescans = |c: &Chip<3>| -> [u32; 3] {
        core::array::from_fn(|i| c.vcpu(VcpuId::new(i as u16)).unwrap().stats.rescans)
    };
    let before = rescans(&c);
    let mut fx = Effects::new();
    c.write_lapic(
        VcpuId::new(0),
        LapicWrite::Register {
            offset: 0xD0,
            value: 1 << 24,
        },
        &mut fx,
    );
    assert_eq!(fx.reload.len(), 3);
    let after = rescans(&c);
    for i in 0..3 {
        assert_eq!(after[i], before[i] + 1);
    }
    // TPR is not addressing: no rescan, nothing to reload.
    let mut fx = Effects::new();
    c.write_lapic(
        VcpuId::new(0),
        LapicWrite::Register {
            offset: 0x80,
            value: 0x20,
        },
        &mut fx,
    );
    assert!(fx.is_empty());
    assert_eq!(rescans(&c), after);
    assert_eq!(c.vcpu(VcpuId::new(0)).unwrap().apic.tpr(), 0x20);
}

#[test]
fn spurious_guest_eoi_does_nothing() {
    let c = chip::<1>();
    let mut fx = Effects::new();
    let e = c.guest_eoi(VcpuId::new(0), &mut fx);
    assert!(e.vector.is_none() && !e.intercepted);
    assert!(fx.is_empty());
}

#[test]
#[should_panic(expected = "vCPU 7 out of range")]
fn an_out_of_range_vcpu_is_a_documented_panic_not_a_spurious_eoi() {
    let _ = chip::<1>().guest_eoi(VcpuId::new(7), &mut Effects::new());
}

#[test]
#[should_panic(expected = "1..=4096 vCPUs")]
fn empty_storage_is_refused() {
    let _: Irqchip<[VcpuSlot; 0]> = Irqchip::new(IrqchipConfig::default(), ApicMode::XApic, []);
}

#[test]
fn reserved_delivery_mode_entry_delivers_nothing() {
    let c = chip::<1>();
    let mut fx = Effects::new();
    let e = RedirectionEntry::fixed(Vector::new(0x40), TriggerMode::Edge, 0).bits() | 3 << 8;
    c.write_entry(Pin::new(1), e, &mut fx);
    fx.clear();
    c.set_line(Pin::new(1), true, &mut fx);
    assert!(fx.kick.is_empty());
}

#[test]
fn a_write_that_changes_no_scanned_field_rescans_no_one_outside_kvm_policies() {
    for policy in Policy::ALL {
        let c: Chip<2> = Irqchip::new(
            IrqchipConfig {
                policy,
                ..IrqchipConfig::default()
            },
            ApicMode::XApic,
            [const { VcpuSlot::new() }; 2],
        );
        let e = RedirectionEntry::fixed(Vector::new(0x40), TriggerMode::Level, 1);
        let mut fx = Effects::new();
        c.write_entry(Pin::new(3), e.bits(), &mut fx);
        assert!(fx.reload.contains(VcpuId::new(1)), "{policy:?}");
        // Same entry, and then a delivery-mode change (lowest priority is not
        // something the scan reads).
        for again in [e.bits(), e.bits() | 1 << 8] {
            let mut fx = Effects::new();
            c.write_entry(Pin::new(3), again, &mut fx);
            assert!(fx.route_changed.contains(Pin::new(3)));
            assert_eq!(fx.reload.is_empty(), !policy.is_kvm(), "{policy:?}");
        }
    }
}

#[test]
fn a_256_vcpu_chip_is_built_snapshotted_and_restored_on_a_2_mib_stack() {
    let t = std::thread::Builder::new()
        .stack_size(2 << 20)
        .spawn(|| {
            let slots =
                || -> std::boxed::Box<[VcpuSlot]> { (0..256).map(|_| VcpuSlot::new()).collect() };
            let c = Irqchip::<_, 24>::new(IrqchipConfig::default(), ApicMode::X2Apic, slots());
            let mut fx = Effects::new();
            let e = RedirectionEntry::fixed(Vector::new(0x40), TriggerMode::Level, 200);
            c.write_entry(Pin::new(2), e.bits(), &mut fx);
            c.set_line(Pin::new(2), true, &mut fx);
            assert_eq!(
                fx.kick
                    .iter()
                    .map(VcpuId::get)
                    .collect::<std::vec::Vec<_>>(),
                [200]
            );
            let s: IrqchipState<std::vec::Vec<VcpuState>> = c.state();
            let copy = Irqchip::from_state(&s, slots()).unwrap();
            assert_eq!(copy.state::<std::vec::Vec<_>>(), s);
            let mut back =
                Irqchip::<_, 24>::new(IrqchipConfig::default(), ApicMode::XApic, slots());
            back.restore(&s).unwrap();
            assert_eq!(back.ack(VcpuId::new(200)), Some(Vector::new(0x40)));
        })
        .unwrap();
    t.join().unwrap();
}

/// The physical-ID table is built from each APIC's own ID and the broadcast:
/// no other physical destination 0..=255 matches, in any mode, for any IDs
/// (checked against matching every destination).
#[test]
fn phys_candidates_cover_every_matching_physical_id() {
    for mode in [ApicMode::XApic, ApicMode::X2Apic, ApicMode::Disabled] {
        for initial in [0u32, 1, 7, 0xFE, 0xFF, 0x100, 0x1234, u32::MAX] {
            for xapic in [0u8, 3, 0xFE, 0xFF] {
                let mut apic = LocalApic::new_enabled(ApicId::new(initial), mode);
                if mode == ApicMode::XApic {
                    apic.set_id(ApicId::new(u32::from(xapic)));
                }
                let all: std::vec::Vec<u32> = (0..256)
                    .filter(|&id| {
                        apic.matches(Destination {
                            id,
                            mode: DestinationMode::Physical,
                        })
                    })
                    .collect();
                let fast: std::vec::Vec<u32> = phys_candidates(&apic)
                    .filter(|&id| {
                        id < 256
                            && apic.matches(Destination {
                                id,
                                mode: DestinationMode::Physical,
                            })
                    })
                    .collect::<std::collections::BTreeSet<_>>()
                    .into_iter()
                    .collect();
                assert_eq!(all, fast, "{mode:?} initial {initial:#x} xAPIC {xapic:#x}");
            }
        }
    }
}

proptest::proptest! {
    /// The vector index the forwarded EOI uses stays what a full table walk
    /// finds, whatever the guest writes (whole entries, MMIO halves, vectors
    /// shared by several pins), and an EOI through it does what KVM's
    /// compare-every-entry EOI does.
    #[test]
    fn the_eoi_vector_index_matches_a_walk_of_the_table(
        writes in proptest::collection::vec((0u8..26, 0u8..4, 0u32..3, proptest::bool::ANY, 0u8..3), 1..40),
    ) {
        let chip: Chip<2> = chip();
        let mut fx = Effects::new();
        for (pin, v, dest, level, how) in writes {
            let e = RedirectionEntry::fixed(
                Vector::new(0x40 + v),
                if level { TriggerMode::Level } else { TriggerMode::Edge },
                dest,
            );
            match how {
                0 => chip.write_entry(Pin::new(pin), e.0, &mut fx),
                1 => {
                    let sel = u64::from(REG_REDTBL_BASE) + 2 * u64::from(pin);
                    chip.mmio_write(0x00, 4, sel, &mut fx);
                    chip.mmio_write(0x10, 4, e.0 & 0xffff_ffff, &mut fx);
                }
                _ => chip.set_line(Pin::new(pin), level, &mut fx),
            }
            let sh = chip.shared.lock();
            for v in 0..=255u8 {
                let v = Vector::new(v);
                let pins: std::vec::Vec<usize> = (0..24)
                    .filter(|&i| sh.ioapic.entries()[i].vector() == v)
                    .collect();
                let want = match pins[..] {
                    [] => PIN_NONE,
                    [p] => p as u8,
                    _ => PIN_MANY,
                };
                proptest::prop_assert_eq!(sh.pin_of[usize::from(v.get())], want);
                let (mut walk, mut indexed) = (sh.ioapic.clone(), sh.ioapic.clone());
                let a = walk.eoi(v);
                let b = match want {
                    PIN_NONE => IoapicEffects::NONE,
                    PIN_MANY => indexed.eoi(v),
                    p => indexed.eoi_pin(usize::from(p), v).unwrap_or(IoapicEffects::NONE),
                };
                proptest::prop_assert_eq!(a, b);
                proptest::prop_assert_eq!(walk.state(), indexed.state());
            }
        }
    }
}

proptest::proptest! {
    /// Under `Exact`, an entry write updates its old and new destinations
    /// vector by vector instead of walking the table; every vCPU's routes
    /// must still be what a walk finds: the vectors of the counted (level,
    /// notified or RTC), unmasked entries whose destination its LAPIC
    /// matches (KVM's `kvm_scan_ioapic_routes` test, minus the masked).
    #[test]
    fn exact_routes_after_targeted_updates_match_a_walk_of_the_table(
        ops in proptest::collection::vec((0u8..7, 0u8..6, 0u8..4, 0u32..4, 0u8..8), 1..60),
        honour in proptest::bool::ANY,
    ) {
        let mut config = IrqchipConfig::default();
        if honour {
            config.eoi_forwarding = EoiForwarding::AllInterceptedUnlessSuppressed;
        }
        config.ack_notifier_pins.insert(Pin::new(3));
        let chip: Irqchip<[VcpuSlot; 3]> =
            Irqchip::new(config, ApicMode::XApic, [const { VcpuSlot::new() }; 3]);
        let mut fx = Effects::new();
        for (op, pin, v, dest, flags) in ops {
            let pin_ = Pin::new(pin);
            let vcpu = VcpuId::new(u16::from(pin % 3));
            let mut e = RedirectionEntry::fixed(
                Vector::new(0x40 + v),
                if flags & 1 != 0 { TriggerMode::Level } else { TriggerMode::Edge },
                dest,
            );
            if flags & 2 != 0 {
                e.0 |= RedirectionEntry::MASK;
            }
            if flags & 4 != 0 {
                e.0 |= RedirectionEntry::LOGICAL;
            }
            match op {
                0 => chip.write_entry(pin_, e.0, &mut fx),
                1 => {
                    let sel = u64::from(REG_REDTBL_BASE) + 2 * u64::from(pin);
                    let half = u64::from(flags & 1);
                    chip.mmio_write(0x00, 4, sel + half, &mut fx);
                    chip.mmio_write(0x10, 4, (e.0 >> (32 * half)) & 0xffff_ffff, &mut fx);
                }
                2 => chip.set_line(pin_, flags & 1 != 0, &mut fx),
                3 => {
                    let _ = chip.ack(vcpu);
                }
                4 => {
                    let _ = chip.guest_eoi(vcpu, &mut fx);
                }
                5 => chip.write_lapic(
                    vcpu,
                    LapicWrite::Register { offset: 0xD0, value: u32::from(1u8 << (dest % 3)) << 24 },
                    &mut fx,
                ),
                // Directed EOI on or off (advertised, then SVR bit 12).
                _ => {
                    chip.write_lapic(vcpu, LapicWrite::DirectedEoi(true), &mut fx);
                    let svr = 0x1FF | u32::from(flags & 1) << 12;
                    chip.write_lapic(vcpu, LapicWrite::Register { offset: 0xF0, value: svr }, &mut fx);
                }
            }
            let table = *chip.shared.lock().ioapic.entries();
            for i in 0..3u16 {
                let vc = chip.vcpu(VcpuId::new(i)).unwrap();
                // Under directed EOI a plain level entry's EOI goes to the
                // EOI register, not through this vCPU's exit.
                let directed = chip.config.eoi_forwarding.honours_suppression()
                    && vc.apic.suppresses_eoi_broadcast();
                let want: VectorSet = table
                    .iter()
                    .enumerate()
                    .filter(|(p, e)| {
                        ((e.is_level() && !directed) || *p == 3)
                            && !e.masked()
                            && e.vector().get() >= 16
                            && vc.apic.matches(e.destination(chip.config.ioapic.msi_format))
                    })
                    .map(|(_, e)| e.vector())
                    .collect();
                proptest::prop_assert_eq!(vc.map.exact_routes(), Some(want), "vCPU {}", i);
            }
        }
    }
}

/// IOREGSEL takes a short path through the chip; it must select exactly
/// what the bare I/O APIC selects for every access size (1, 2, 4 and 8 keep
/// the low byte, any other size is ignored) and at every alias of the
/// window (82093AA: the register decodes offset bits 7:0 only).
#[test]
fn ioregsel_writes_of_every_size_and_alias_select_like_the_bare_ioapic() {
    use crate::ioapic::{IOREGSEL, IOWIN, MMIO_LEN};
    let c = chip::<2>();
    let mut fx = Effects::new();
    for pin in 0..24u8 {
        let e = RedirectionEntry::fixed(Vector::new(0x30 + pin), TriggerMode::Level, 1);
        c.write_entry(Pin::new(pin), e.0, &mut fx);
    }
    let mut bare = c.ioapic();
    for size in 0..=9u32 {
        for alias in [0, MMIO_LEN, 7 * MMIO_LEN] {
            // 0x1B selects entry 5's high half; the upper bytes must not
            // leak into the selector.
            let value = 0xdead_be00_0000_1b00u64 | (u64::from(size) + 0x10);
            c.mmio_write(alias + IOREGSEL, size, value, &mut fx);
            let _ = bare.mmio_write(alias + IOREGSEL, size, value);
            assert_eq!(
                c.mmio_read(IOREGSEL, 4),
                bare.mmio_read(IOREGSEL, 4),
                "size {size}, alias {alias:#x}"
            );
            assert_eq!(c.mmio_read(IOWIN, 4), bare.mmio_read(IOWIN, 4));
        }
    }
    assert!(fx.kick.is_empty());
}

/// An IOWIN write that leaves an entry's bits as they are (the unchanged
/// half of a guest's 64-bit update) is a route write that rescans and
/// delivers nothing, except that, as KVM's `ioapic_write_indirect` does, it
/// services a level entry whose line is asserted and whose remote IRR is
/// clear: here a pin an EOI storm throttled (KVM's
/// `IOAPIC_SUCCESSIVE_IRQ_MAX_COUNT`).
#[test]
fn an_iowin_write_of_an_entry_s_own_bits_rescans_no_one_but_services_a_throttled_pin() {
    use crate::ioapic::{IOREGSEL, IOWIN, SUCCESSIVE_IRQ_MAX_COUNT};
    let c = chip::<2>();
    let (pin, vcpu, v) = (Pin::new(3), VcpuId::new(1), Vector::new(0x40));
    let e = RedirectionEntry::fixed(v, TriggerMode::Level, 1);
    let mut fx = Effects::new();
    c.write_entry(pin, e.bits(), &mut fx);
    let sel = u64::from(REG_REDTBL_BASE) + 2 * 3;
    let rewrite = |fx: &mut Effects| {
        c.mmio_write(IOREGSEL, 4, sel, fx);
        c.mmio_write(IOWIN, 4, e.bits() & 0xffff_ffff, fx);
    };
    let remote_irr = || c.ioapic().entry(pin).unwrap().remote_irr();

    let mut fx = Effects::new();
    rewrite(&mut fx);
    assert!(fx.route_changed.contains(pin));
    assert!(fx.reload.is_empty() && fx.kick.is_empty() && fx.deliver_later.is_empty());

    // The line stays up and every EOI re-delivers, until the storm guard
    // defers the 10,000th re-delivery with remote IRR clear.
    c.set_line(pin, true, &mut fx);
    let mut eois = 0;
    loop {
        assert_eq!(c.ack(vcpu), Some(v));
        let mut fx = Effects::new();
        assert!(c.guest_eoi(vcpu, &mut fx).reached_ioapic);
        eois += 1;
        if fx.deliver_later.contains(pin) {
            break;
        }
        assert!(fx.kick.contains(vcpu), "EOI {eois} re-delivers");
        assert!(eois < SUCCESSIVE_IRQ_MAX_COUNT);
    }
    assert_eq!(eois, SUCCESSIVE_IRQ_MAX_COUNT);
    assert!(!remote_irr());

    let mut fx = Effects::new();
    rewrite(&mut fx);
    assert!(fx.kick.contains(vcpu), "serviced by the rewrite");
    assert!(remote_irr());
    assert_eq!(c.ack(vcpu), Some(v));
}

/// The chip keeps the notified pins as a mask beside its config; a restore
/// that brings another config must bring the mask with it, or an EOI of a
/// notifier pin would report no `acked_pins` (the VMM's resamplefd never
/// fires) after a migration.
#[test]
fn a_restore_brings_the_snapshot_s_ack_notifier_pins_to_the_eoi_path() {
    let (pin, vcpu, v) = (Pin::new(3), VcpuId::new(1), Vector::new(0x40));
    let mut notified = IrqchipConfig::default();
    notified.ack_notifier_pins.insert(pin);
    let src: Chip<2> = Irqchip::new(notified, ApicMode::XApic, [const { VcpuSlot::new() }; 2]);
    let mut fx = Effects::new();
    src.write_entry(
        pin,
        RedirectionEntry::fixed(v, TriggerMode::Level, 1).bits(),
        &mut fx,
    );
    let snap = src.state::<std::vec::Vec<_>>();

    let mut dst = chip::<2>(); // no notifier pins
    dst.restore(&snap).unwrap();
    dst.set_line(pin, true, &mut fx);
    assert_eq!(dst.ack(vcpu), Some(v));
    dst.set_line(pin, false, &mut fx);
    let eoi = dst.guest_eoi(vcpu, &mut fx);
    assert!(eoi.intercepted);
    assert!(eoi.acked_pins.contains(pin));
}

/// `Effects::reload` lists the vCPUs whose bitmap changed. An intercepted
/// level EOI of a vector still routed to the vCPU changes nothing (no
/// VMWRITE, no kick); one that retires the last reason for the bit (the
/// entry moved away while the instance was in service) does.
#[test]
fn an_intercepted_eoi_lists_the_vcpu_for_reload_only_when_its_bitmap_changed() {
    let c = chip::<2>();
    let (pin, v0, v1) = (Pin::new(2), VcpuId::new(0), VcpuId::new(1));
    let level = |dest| RedirectionEntry::fixed(Vector::new(0x52), TriggerMode::Level, dest).0;
    let mut fx = Effects::new();
    c.write_entry(pin, level(0), &mut fx);
    let _ = (c.vmcs_update(v0), c.vmcs_update(v1));

    // Still routed here: the bit stays, nothing to load.
    c.set_line(pin, true, &mut fx);
    assert_eq!(c.ack(v0), Some(Vector::new(0x52)));
    c.set_line(pin, false, &mut fx);
    fx.clear();
    let eoi = c.guest_eoi(v0, &mut fx);
    assert!(eoi.intercepted && eoi.reached_ioapic);
    assert!(fx.reload.is_empty());
    assert!(c.vmcs_update(v0).is_none());

    // Moved to vCPU 1 while in service on vCPU 0: vCPU 0 keeps the bit for
    // that instance's EOI, which then clears it.
    c.set_line(pin, true, &mut fx);
    assert_eq!(c.ack(v0), Some(Vector::new(0x52)));
    c.write_entry(pin, level(1), &mut fx);
    let _ = (c.vmcs_update(v0), c.vmcs_update(v1));
    c.set_line(pin, false, &mut fx);
    fx.clear();
    let eoi = c.guest_eoi(v0, &mut fx);
    assert!(eoi.intercepted && eoi.reached_ioapic);
    assert_eq!(fx.reload.iter().collect::<std::vec::Vec<_>>(), [v0]);
    let u = c.vmcs_update(v0).expect("the bit of 0x52 cleared");
    assert_eq!(u.changed().collect::<std::vec::Vec<_>>(), [(1, 0)]);
}

/// An IOWIN write that changes an entry is decoded once by the chip and
/// stored as computed: it must leave the entry the bare I/O APIC leaves
/// (read-only delivery status and remote IRR kept, an edge entry's remote
/// IRR cleared, sizes other than 1, 2, 4 and 8 ignored) and deliver what the
/// bare I/O APIC delivers, here with one level line asserted.
/// (`route_changed` names the pin after every IOWIN write that selects an
/// entry, as the bare I/O APIC's effects do.)
#[test]
fn iowin_writes_leave_the_entries_the_bare_ioapic_leaves_and_deliver_what_it_delivers() {
    use crate::ioapic::{IOREGSEL, IOWIN, REG_REDTBL_BASE};
    let c = chip::<4>();
    let mut fx = Effects::new();
    for pin in 0..4u8 {
        let e = RedirectionEntry::fixed(Vector::new(0x30 + pin), TriggerMode::Level, 1);
        c.write_entry(Pin::new(pin), e.0, &mut fx);
    }
    c.set_line(Pin::new(2), true, &mut fx);
    let mut bare = c.ioapic();
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for step in 0..4000 {
        let r = next();
        let reg = u64::from(REG_REDTBL_BASE) + r % 8;
        let size = [1, 2, 4, 8, 3][(r >> 8) as usize % 5];
        // Vectors 0x30-0x3f to vCPUs 0-3, any flag bits: mask, trigger,
        // polarity, the read-only ones, delivery modes.
        let low = 0x30 | (r >> 16) & 0xf | (r >> 20) & 0x1_ff00;
        let value = if reg % 2 == 0 {
            low
        } else {
            ((r >> 40) % 4) << 24
        };
        c.mmio_write(IOREGSEL, 4, reg, &mut fx);
        let _ = bare.mmio_write(IOREGSEL, 4, reg);
        fx.clear();
        c.mmio_write(IOWIN, size, value, &mut fx);
        let a = bare.mmio_write(IOWIN, size, value);
        // Equal entries include remote IRR, which servicing the asserted
        // level pin sets.
        assert_eq!(c.ioapic().entries(), bare.entries(), "step {step}");
        assert_eq!(
            fx.route_changed.iter().next(),
            a.route_changed,
            "step {step}"
        );
        if a.deliver.is_empty() {
            // Nothing serviced: the write delivers nothing.
            assert!(
                fx.kick.is_empty(),
                "step {step}: delivered without the I/O APIC"
            );
        } else {
            // The written pin was serviced (pin 2's line is high, and an
            // active-low entry is asserted by a low line): a fixed message to
            // APIC ID 0-3 in physical mode reaches a vCPU.
            for p in a.deliver.iter() {
                let e = c.ioapic().entries()[p.index()];
                if e.delivery_mode_bits() == 0 && e.0 & 1 << 11 == 0 {
                    assert!(!fx.kick.is_empty(), "step {step}: {e:?} not delivered");
                }
            }
        }
        // Keep the bare copy's lines, remote IRR and throttle counts in step
        // with the chip's (deliveries and EOIs change them).
        for v in 0..4u16 {
            while c.ack(VcpuId::new(v)).is_some() {}
            while c.guest_eoi(VcpuId::new(v), &mut fx).vector.is_some() {}
        }
        bare = c.ioapic();
    }
}
