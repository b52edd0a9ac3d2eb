//! Unit tests of the I/O APIC model, each named after the 82093AA or KVM
//! behaviour it checks.

use super::*;
use crate::types::{DeliveryMode, Destination, DestinationMode, TriggerMode};

type Io = Ioapic<24>;

fn p(n: u8) -> Pin {
    Pin::new(n)
}
fn v(n: u8) -> Vector {
    Vector::new(n)
}
fn level(vec: u8, dest: u32) -> u64 {
    RedirectionEntry::fixed(v(vec), TriggerMode::Level, dest).bits()
}
fn edge(vec: u8, dest: u32) -> u64 {
    RedirectionEntry::fixed(v(vec), TriggerMode::Edge, dest).bits()
}
fn only(pin: u8) -> PinSet {
    let mut s = PinSet::EMPTY;
    s.insert(p(pin));
    s
}
fn sel_write(io: &mut Io, reg: u8, val: u32) -> IoapicEffects {
    assert!(io.mmio_write(IOREGSEL, 4, reg as u64).is_empty());
    io.mmio_write(IOWIN, 4, val as u64)
}
fn sel_read(io: &mut Io, reg: u8) -> u32 {
    let _ = io.mmio_write(IOREGSEL, 4, reg as u64);
    io.mmio_read(IOWIN, 4) as u32
}
/// The guest writes the high half, then the low half (Linux's order).
fn guest_write(io: &mut Io, pin: u8, bits: u64) -> IoapicEffects {
    let reg = REG_REDTBL_BASE + 2 * pin;
    let mut a = sel_write(io, reg + 1, (bits >> 32) as u32);
    a.merge(sel_write(io, reg, bits as u32));
    a
}
fn rirr(io: &Io, pin: u8) -> bool {
    io.entry(p(pin)).unwrap().remote_irr()
}
fn phys(id: u32) -> Destination {
    Destination {
        id,
        mode: DestinationMode::Physical,
    }
}
fn logical(id: u32) -> Destination {
    Destination {
        id,
        mode: DestinationMode::Logical,
    }
}
/// A level pin 3, vector 0x40, delivered once: remote IRR set.
fn level_in_service() -> Io {
    let mut io = Io::default();
    let _ = io.write_entry(p(3), level(0x40, 1));
    assert_eq!(io.set_line(p(3), true).deliver, only(3));
    io
}

// ---- reset and MMIO decoding ----

#[test]
fn reset_masks_every_entry_and_lowers_every_line() {
    let io = Io::default();
    assert_eq!(io.pins(), 24);
    for (i, e) in io.entries().iter().enumerate() {
        assert_eq!(*e, RedirectionEntry::RESET);
        assert!(!io.line(p(i as u8)));
    }
    assert_eq!(io.config(), &IoapicConfig::default());
}

#[test]
fn ioregsel_is_8_bits_and_reads_back() {
    let mut io = Io::default();
    let _ = io.mmio_write(IOREGSEL, 4, 0xdead_be12);
    assert_eq!(io.ioregsel(), 0x12);
    assert_eq!(io.mmio_read(IOREGSEL, 4), 0x12);
}

#[test]
fn id_register_bits_24_to_27_are_writable_only() {
    let mut io = Io::new(IoapicConfig {
        id: 0x35,
        ..IoapicConfig::DEFAULT
    });
    assert_eq!(sel_read(&mut io, REG_ID), 0x5 << 24);
    let _ = sel_write(&mut io, REG_ID, 0xffff_ffff);
    assert_eq!(sel_read(&mut io, REG_ID), 0x0f00_0000);
    assert_eq!(io.id(), 0xf);
}

#[test]
fn version_register_reports_0x11_and_pins_minus_one() {
    let mut io = Io::default();
    assert_eq!(sel_read(&mut io, REG_VERSION), 0x0017_0011);
    let mut small = Ioapic::<8>::default();
    let _ = small.mmio_write(IOREGSEL, 4, 1);
    assert_eq!(small.mmio_read(IOWIN, 4), 0x0007_0011);
}

#[test]
fn version_0x20_is_selectable() {
    let mut io = Io::new(IoapicConfig {
        version: IoapicVersion::V20,
        ..IoapicConfig::DEFAULT
    });
    assert_eq!(sel_read(&mut io, REG_VERSION), 0x0017_0020);
    assert_eq!(IoapicVersion::try_from(0x20), Ok(IoapicVersion::V20));
    assert_eq!(IoapicVersion::try_from(0x11), Ok(IoapicVersion::V11));
    assert_eq!(
        IoapicVersion::try_from(0x12),
        Err(crate::InvalidValue(0x12))
    );
    assert_eq!(u8::from(IoapicVersion::V20), 0x20);
}

#[test]
fn version_and_arbitration_writes_are_ignored() {
    let mut io = Io::default();
    assert!(sel_write(&mut io, REG_VERSION, 0xffff_ffff).is_empty());
    assert!(sel_write(&mut io, REG_ARB, 0xffff_ffff).is_empty());
    assert_eq!(sel_read(&mut io, REG_VERSION), 0x0017_0011);
    assert_eq!(io.id(), 0);
}

#[test]
fn arbitration_register_reads_the_id_as_kvm_does() {
    let mut io = Io::default();
    let _ = sel_write(&mut io, REG_ID, 0x0a00_0000);
    assert_eq!(sel_read(&mut io, REG_ARB), 0x0a00_0000);
}

#[test]
fn redirection_registers_select_low_and_high_halves() {
    let mut io = Io::default();
    let bits = 0xab00_0000_0000_0000 | level(0x41, 0);
    let _ = io.write_entry(p(5), bits);
    assert_eq!(sel_read(&mut io, 0x10 + 10), bits as u32);
    assert_eq!(sel_read(&mut io, 0x11 + 10), (bits >> 32) as u32);
    let _ = sel_write(&mut io, 0x11 + 10, 0x0200_0000);
    assert_eq!(io.entry(p(5)).unwrap().destination_id(), 2);
    assert_eq!(io.entry(p(5)).unwrap().vector(), v(0x41));
}

#[test]
fn unimplemented_registers_and_entries_read_all_ones() {
    let mut io = Io::default();
    for reg in [3u8, 4, 0x0f, 0x10 + 48, 0x11 + 48, 0xfe, 0xff] {
        assert_eq!(sel_read(&mut io, reg), 0xffff_ffff, "reg {reg:#x}");
        assert!(sel_write(&mut io, reg, 0).is_empty());
    }
}

#[test]
fn unimplemented_mmio_offsets_read_zero_and_ignore_writes() {
    let mut io = Io::default();
    let _ = io.mmio_write(IOREGSEL, 4, 0x10);
    let before = io.clone();
    for off in [0x04u64, 0x08, 0x11, 0x13, 0x20, 0x30, 0x40, 0xf0] {
        assert_eq!(io.mmio_read(off, 4), 0, "offset {off:#x}");
        assert!(io.mmio_write(off, 4, u64::MAX).is_empty());
    }
    assert_eq!(io, before);
}

#[test]
fn unaligned_offsets_are_not_decoded() {
    let mut io = Io::default();
    assert!(io.mmio_write(0x01, 1, 0x12).is_empty());
    assert_eq!(io.ioregsel(), 0);
    let _ = io.mmio_write(IOREGSEL, 4, 0x10);
    assert_eq!(io.mmio_read(0x12, 2), 0);
}

#[test]
fn offsets_are_decoded_modulo_256() {
    let mut io = Io::default();
    let _ = io.mmio_write(0x100 + IOREGSEL, 4, 1);
    assert_eq!(io.ioregsel(), 1);
    assert_eq!(io.mmio_read(0xf10, 4), 0x0017_0011);
}

#[test]
fn narrow_iowin_write_zero_extends_to_32_bits() {
    let mut io = Io::default();
    let _ = io.write_entry(p(0), 0xffff_ffff_0001_0000 | 0x00ff);
    let _ = io.mmio_write(IOREGSEL, 1, 0x11);
    let _ = io.mmio_write(IOWIN, 1, 0xab);
    assert_eq!(io.entry(p(0)).unwrap().bits() >> 32, 0xab);
    let _ = io.mmio_write(IOREGSEL, 2, 0x10);
    let _ = io.mmio_write(IOWIN, 2, 0x1_0031);
    // 16 bits: the mask bit (16) is cut, so the entry is unmasked.
    assert_eq!(io.entry(p(0)).unwrap().bits() as u32, 0x31);
}

#[test]
fn eight_byte_accesses_use_the_low_32_bits() {
    let mut io = Io::default();
    let _ = io.mmio_write(IOREGSEL, 8, 0xffff_ffff_0000_0011);
    assert_eq!(io.ioregsel(), 0x11);
    let _ = io.mmio_write(IOWIN, 8, 0x1234_5678_0300_0000);
    assert_eq!(io.entry(p(0)).unwrap().destination_id(), 3);
    assert_eq!(io.entry(p(0)).unwrap().bits() >> 32, 0x0300_0000);
    assert_eq!(io.mmio_read(IOWIN, 8), 0x0300_0000);
}

#[test]
fn narrow_reads_return_the_low_bytes() {
    let mut io = Io::default();
    let _ = io.mmio_write(IOREGSEL, 4, 1);
    assert_eq!(io.mmio_read(IOWIN, 1), 0x11);
    assert_eq!(io.mmio_read(IOWIN, 2), 0x0011);
    assert_eq!(io.mmio_read(IOWIN, 4), 0x0017_0011);
}

#[test]
fn unsupported_sizes_read_zero_and_write_nothing() {
    let mut io = Io::default();
    let _ = io.mmio_write(IOREGSEL, 4, 1);
    for size in [0u32, 3, 5, 7, 16, u32::MAX] {
        assert_eq!(io.mmio_read(IOWIN, size), 0);
        assert!(io.mmio_write(IOREGSEL, size, 0x10).is_empty());
        assert_eq!(io.ioregsel(), 1);
    }
}

// ---- read-only fields ----

#[test]
fn guest_writes_preserve_remote_irr_and_delivery_status() {
    let mut io = level_in_service();
    // Try to clear remote IRR and set delivery status.
    let low = level(0x40, 1) as u32 | RedirectionEntry::DELIVERY_STATUS as u32;
    let _ = sel_write(
        &mut io,
        0x10 + 6,
        low & !(RedirectionEntry::REMOTE_IRR as u32),
    );
    assert!(rirr(&io, 3));
    assert!(!io.entry(p(3)).unwrap().delivery_status());
    // And cannot set remote IRR on an idle level entry.
    let _ = io.write_entry(p(4), level(0x41, 1) | RedirectionEntry::REMOTE_IRR);
    assert!(!rirr(&io, 4));
}

#[test]
fn write_entry_preserves_read_only_bits() {
    let mut io = level_in_service();
    let _ = io.write_entry(p(3), level(0x40, 2));
    assert!(rirr(&io, 3));
    let _ = io.write_entry(p(3), level(0x40, 2) | RedirectionEntry::DELIVERY_STATUS);
    assert!(!io.entry(p(3)).unwrap().delivery_status());
}

#[test]
fn switching_an_entry_to_edge_clears_remote_irr() {
    let mut io = level_in_service();
    let _ = sel_write(&mut io, 0x10 + 6, edge(0x40, 1) as u32);
    assert!(!rirr(&io, 3));
    // Back to level (Linux's EOI emulation: mask, edge, level, unmask).
    let masked = RedirectionEntry(level(0x40, 1)).with_mask(true).bits();
    let _ = io.write_entry(p(3), masked);
    assert!(!rirr(&io, 3));
    let a = io.write_entry(p(3), level(0x40, 1));
    assert_eq!(
        a.deliver,
        only(3),
        "line still high: re-delivered on unmask"
    );
    assert!(rirr(&io, 3));
}

// ---- pin lines ----

#[test]
fn edge_rising_edge_delivers() {
    let mut io = Io::default();
    let _ = io.write_entry(p(1), edge(0x30, 0));
    let a = io.set_line(p(1), true);
    assert_eq!(a.deliver, only(1));
    assert!(!rirr(&io, 1), "edge deliveries do not set remote IRR");
    assert!(io.set_line(p(1), false).is_empty());
    assert_eq!(io.set_line(p(1), true).deliver, only(1));
}

#[test]
fn edge_repeated_asserts_without_deassert_do_not_deliver() {
    let mut io = Io::default();
    let _ = io.write_entry(p(1), edge(0x30, 0));
    assert_eq!(io.set_line(p(1), true).deliver, only(1));
    assert!(io.set_line(p(1), true).is_empty());
    assert!(io.set_line(p(1), true).is_empty());
}

#[test]
fn active_low_pin_asserts_on_low_level() {
    let mut io = Io::default();
    let e = RedirectionEntry(edge(0x30, 0) | RedirectionEntry::POLARITY_LOW);
    let _ = io.write_entry(p(2), e.bits());
    assert!(io.set_line(p(2), true).is_empty());
    assert!(!io.asserted(p(2)));
    assert_eq!(io.set_line(p(2), false).deliver, only(2));
    assert!(io.asserted(p(2)));
    assert!(!io.line(p(2)));
    // Active-low level entry: electrically low means asserted, so the VMM
    // must raise an idle active-low line before the guest unmasks it.
    let l = RedirectionEntry(level(0x31, 0) | RedirectionEntry::POLARITY_LOW);
    let _ = io.set_line(p(4), true);
    assert!(io.write_entry(p(4), l.bits()).deliver.is_empty());
    assert_eq!(io.set_line(p(4), false).deliver, only(4));
    assert!(rirr(&io, 4));
    // A line left low at reset is asserted as soon as it is programmed.
    assert_eq!(io.write_entry(p(5), l.bits()).deliver, only(5));
}

#[test]
fn level_line_delivers_when_asserted_unmasked_and_remote_irr_clear() {
    let mut io = Io::default();
    let _ = io.write_entry(p(3), level(0x40, 1));
    let a = io.set_line(p(3), true);
    assert_eq!(a.deliver, only(3));
    assert_eq!(a.rescan, Rescan::None);
    assert_eq!(a.route_changed, None);
    let m = io.message(p(3)).unwrap();
    assert_eq!(m.vector, v(0x40));
    assert_eq!(m.trigger, TriggerMode::Level);
}

#[test]
fn level_delivery_sets_remote_irr() {
    let io = level_in_service();
    assert!(rirr(&io, 3));
}

#[test]
fn level_line_coalesces_while_remote_irr_is_set() {
    let mut io = level_in_service();
    assert!(io.set_line(p(3), true).is_empty());
    assert!(io.set_line(p(3), false).is_empty());
    assert!(io.set_line(p(3), true).is_empty());
    assert!(rirr(&io, 3));
}

#[test]
fn masked_level_line_delivers_on_unmask() {
    let mut io = Io::default();
    let masked = RedirectionEntry(level(0x40, 1)).with_mask(true).bits();
    let _ = io.write_entry(p(3), masked);
    assert!(io.set_line(p(3), true).is_empty());
    assert!(!rirr(&io, 3));
    let a = guest_write(&mut io, 3, level(0x40, 1));
    assert_eq!(a.deliver, only(3));
    assert!(rirr(&io, 3));
}

#[test]
fn masked_level_line_that_dropped_does_not_deliver_on_unmask() {
    let mut io = Io::default();
    let masked = RedirectionEntry(level(0x40, 1)).with_mask(true).bits();
    let _ = io.write_entry(p(3), masked);
    let _ = io.set_line(p(3), true);
    let _ = io.set_line(p(3), false);
    assert!(io.write_entry(p(3), level(0x40, 1)).deliver.is_empty());
}

#[test]
fn any_write_to_an_asserted_deliverable_level_entry_delivers() {
    // KVM: ioapic_write_indirect services a level entry whose irr is set.
    let mut io = Io::default();
    let _ = io.write_entry(p(3), edge(0x40, 1));
    let _ = io.set_line(p(3), true);
    // Edge -> level while the line is high.
    assert_eq!(io.write_entry(p(3), level(0x40, 1)).deliver, only(3));
}

#[test]
fn masked_edge_latch_is_recorded_but_not_delivered_on_unmask() {
    let mut io = Io::default();
    assert_eq!(io.config().masked_edge, MaskedEdge::Latch);
    let masked = RedirectionEntry(edge(0x30, 0)).with_mask(true).bits();
    let _ = io.write_entry(p(1), masked);
    assert!(io.set_line(p(1), true).is_empty());
    assert!(io.registers().pending_edge.contains(p(1)));
    // KVM only services level entries on a redirection write.
    assert!(io.write_entry(p(1), edge(0x30, 0)).deliver.is_empty());
    assert!(io.registers().pending_edge.contains(p(1)));
    // A repeated assert is no new edge.
    assert!(io.set_line(p(1), true).is_empty());
    // KVM_SET_IRQCHIP re-injects it.
    let st = io.registers();
    assert_eq!(io.load_registers(&st).deliver, only(1));
    assert!(!io.registers().pending_edge.contains(p(1)));
}

#[test]
fn latched_edge_is_forgotten_when_the_line_drops() {
    let mut io = Io::default();
    let masked = RedirectionEntry(edge(0x30, 0)).with_mask(true).bits();
    let _ = io.write_entry(p(1), masked);
    let _ = io.set_line(p(1), true);
    let _ = io.set_line(p(1), false);
    assert!(io.registers().pending_edge.is_empty());
}

#[test]
fn masked_edge_drop_forgets_the_edge() {
    let mut io = Io::new(IoapicConfig {
        masked_edge: MaskedEdge::Drop,
        ..IoapicConfig::DEFAULT
    });
    let masked = RedirectionEntry(edge(0x30, 0)).with_mask(true).bits();
    let _ = io.write_entry(p(1), masked);
    assert!(io.set_line(p(1), true).is_empty());
    assert!(io.registers().pending_edge.is_empty());
    assert!(io.write_entry(p(1), edge(0x30, 0)).deliver.is_empty());
    let st = io.registers();
    assert!(io.load_registers(&st).deliver.is_empty());
    // Only a new rising edge delivers.
    let _ = io.set_line(p(1), false);
    assert_eq!(io.set_line(p(1), true).deliver, only(1));
}

#[test]
fn polarity_change_alone_does_not_make_an_edge() {
    let mut io = Io::default();
    let _ = io.write_entry(p(1), edge(0x30, 0));
    let low = RedirectionEntry(edge(0x30, 0) | RedirectionEntry::POLARITY_LOW);
    assert!(io.write_entry(p(1), low.bits()).deliver.is_empty());
    assert!(io.asserted(p(1)));
}

// ---- EOI ----

#[test]
fn eoi_clears_remote_irr_of_level_entries_with_that_vector() {
    let mut io = level_in_service();
    let _ = io.write_entry(p(7), level(0x40, 2));
    let _ = io.set_line(p(7), true);
    let _ = io.set_line(p(3), false);
    let _ = io.set_line(p(7), false);
    assert!(rirr(&io, 3) && rirr(&io, 7));
    assert!(io.eoi(v(0x40)).is_empty());
    assert!(!rirr(&io, 3) && !rirr(&io, 7));
}

#[test]
fn eoi_of_another_vector_leaves_remote_irr_set() {
    let mut io = level_in_service();
    assert!(io.eoi(v(0x41)).is_empty());
    assert!(rirr(&io, 3));
}

#[test]
fn eoi_clears_remote_irr_of_masked_entries() {
    let mut io = level_in_service();
    let masked = RedirectionEntry(level(0x40, 1)).with_mask(true).bits();
    let _ = io.write_entry(p(3), masked);
    assert!(io.eoi(v(0x40)).deliver.is_empty());
    assert!(!rirr(&io, 3));
    // Unmasking with the line still high delivers.
    assert_eq!(io.write_entry(p(3), level(0x40, 1)).deliver, only(3));
}

#[test]
fn eoi_redelivers_when_line_still_asserted_and_unmasked() {
    let mut io = level_in_service();
    let a = io.eoi(v(0x40));
    assert_eq!(a.deliver, only(3));
    assert!(a.deliver_later.is_empty());
    assert!(rirr(&io, 3));
}

#[test]
fn eoi_does_not_redeliver_a_deasserted_line() {
    let mut io = level_in_service();
    let _ = io.set_line(p(3), false);
    assert!(io.eoi(v(0x40)).is_empty());
    assert!(!rirr(&io, 3));
}

#[test]
fn eoi_does_not_touch_edge_entries_sharing_the_vector() {
    // KVM would re-deliver pin 1 here (its EOI loop services any entry
    // with the vector whose irr is set); the model only handles level.
    let mut io = level_in_service();
    let _ = io.write_entry(p(1), edge(0x40, 1));
    assert_eq!(io.set_line(p(1), true).deliver, only(1));
    let a = io.eoi(v(0x40));
    assert_eq!(a.deliver, only(3));
}

#[test]
fn eoi_register_clears_remote_irr_on_version_0x20() {
    let mut io = Io::new(IoapicConfig {
        version: IoapicVersion::V20,
        ..IoapicConfig::DEFAULT
    });
    let _ = io.write_entry(p(3), level(0x40, 1));
    let _ = io.set_line(p(3), true);
    let _ = io.set_line(p(3), false);
    // Only bits 7:0 are the vector.
    let a = io.mmio_write(IOEOI, 4, 0xffff_ff40);
    assert!(a.is_empty());
    assert!(!rirr(&io, 3));
    // With the line high it re-delivers, like a broadcast EOI.
    let _ = io.set_line(p(3), true);
    assert_eq!(io.mmio_write(IOEOI, 4, 0x40).deliver, only(3));
    assert_eq!(io.mmio_read(IOEOI, 4), 0);
}

#[test]
fn eoi_register_is_ignored_on_version_0x11() {
    let mut io = level_in_service();
    let _ = io.set_line(p(3), false);
    assert!(io.mmio_write(IOEOI, 4, 0x40).is_empty());
    assert!(rirr(&io, 3));
}

#[test]
fn eoi_storm_defers_the_10000th_successive_redelivery() {
    let mut io = level_in_service();
    for k in 1..SUCCESSIVE_IRQ_MAX_COUNT {
        let a = io.eoi(v(0x40));
        assert_eq!(a.deliver, only(3), "EOI {k}");
        assert!(a.deliver_later.is_empty());
    }
    let a = io.eoi(v(0x40));
    assert!(a.deliver.is_empty());
    assert_eq!(a.deliver_later, only(3));
    assert!(!rirr(&io, 3));
    assert_eq!(io.registers().eoi_count[3], 0, "KVM restarts the count");
    // The timer fires: re-delivered.
    assert_eq!(io.deliver_later_elapsed(p(3)).deliver, only(3));
    assert!(rirr(&io, 3));
    // And the next 9,999 EOIs deliver immediately again.
    for _ in 1..SUCCESSIVE_IRQ_MAX_COUNT {
        assert_eq!(io.eoi(v(0x40)).deliver, only(3));
    }
    assert_eq!(io.eoi(v(0x40)).deliver_later, only(3));
}

#[test]
fn eoi_storm_counter_restarts_when_an_eoi_finds_the_line_low() {
    let mut io = level_in_service();
    for _ in 0..5000 {
        assert_eq!(io.eoi(v(0x40)).deliver, only(3));
    }
    let _ = io.set_line(p(3), false);
    assert!(io.eoi(v(0x40)).is_empty());
    assert_eq!(io.registers().eoi_count[3], 0);
    assert_eq!(io.set_line(p(3), true).deliver, only(3));
    for _ in 1..SUCCESSIVE_IRQ_MAX_COUNT {
        assert_eq!(io.eoi(v(0x40)).deliver, only(3));
    }
}

#[test]
fn deliver_later_elapsed_does_nothing_unless_still_pending() {
    let mut io = level_in_service();
    // In service: remote IRR set.
    assert!(io.deliver_later_elapsed(p(3)).is_empty());
    let _ = io.set_line(p(3), false);
    let _ = io.eoi(v(0x40));
    // Deasserted.
    assert!(io.deliver_later_elapsed(p(3)).is_empty());
    // Masked.
    let _ = io.write_entry(
        p(3),
        RedirectionEntry(level(0x40, 1)).with_mask(true).bits(),
    );
    io.pins[3].set_line(true);
    assert!(io.deliver_later_elapsed(p(3)).is_empty());
    // Edge entries are never retried.
    let _ = io.write_entry(p(3), edge(0x40, 1));
    assert!(io.deliver_later_elapsed(p(3)).is_empty());
    assert!(io.deliver_later_elapsed(p(200)).is_empty());
}

#[test]
fn reassert_during_the_deliver_later_window_delivers_immediately() {
    let mut io = level_in_service();
    io.pins[3].set_count(SUCCESSIVE_IRQ_MAX_COUNT - 1);
    assert_eq!(io.eoi(v(0x40)).deliver_later, only(3));
    // KVM services every assert of a level pin.
    assert_eq!(io.set_line(p(3), true).deliver, only(3));
    assert!(io.deliver_later_elapsed(p(3)).is_empty());
}

// ---- rescans and routes ----

#[test]
fn rescan_targets_old_and_new_destination_on_retarget() {
    let mut io = Io::default();
    let _ = io.write_entry(p(3), level(0x40, 1));
    let a = io.write_entry(p(3), level(0x40, 2));
    assert_eq!(
        a.rescan,
        Rescan::Targets {
            old: Some(phys(1)),
            new: Some(phys(2))
        }
    );
}

#[test]
fn rescan_uses_old_destination_mode_for_old_destination() {
    // Same destination ID 1, physical -> logical. KVM decodes the old ID
    // with the new (logical) mode, so it never rescans APIC ID 1, which
    // may still intercept the vector. The model reports physical 1.
    let mut io = Io::default();
    let _ = io.write_entry(p(3), level(0x40, 1));
    let logical_entry = level(0x40, 1) | RedirectionEntry::LOGICAL;
    let a = guest_write(&mut io, 3, logical_entry);
    assert_eq!(
        a.rescan,
        Rescan::Targets {
            old: Some(phys(1)),
            new: Some(logical(1))
        }
    );
    assert_ne!(
        a.rescan,
        Rescan::Targets {
            old: Some(logical(1)),
            new: Some(logical(1))
        }
    );
}

#[test]
fn rescan_old_destination_includes_the_extended_destination_id() {
    let mut io = Io::new(IoapicConfig {
        msi_format: MsiFormat::ExtDestId,
        ..IoapicConfig::DEFAULT
    });
    let _ = io.write_entry(p(3), level(0x40, 0x1_05));
    let a = io.write_entry(p(3), level(0x40, 0x05));
    assert_eq!(
        a.rescan,
        Rescan::Targets {
            old: Some(phys(0x105)),
            new: Some(phys(0x05))
        }
    );
}

#[test]
fn rescan_ignores_bits_55_49_without_the_extended_destination_id() {
    // Bits 55:49 are reserved in the default format: a write that changes
    // only them moves no destination.
    let mut io = Io::default();
    let _ = io.write_entry(p(3), level(0x40, 0x1_05));
    let a = io.write_entry(p(3), level(0x40, 0x05));
    assert_eq!(
        a.rescan,
        Rescan::Targets {
            old: None,
            new: Some(phys(0x05))
        }
    );
}

#[test]
fn rescan_same_destination_names_only_the_new_one() {
    let mut io = Io::default();
    let _ = io.write_entry(p(3), level(0x40, 1));
    let a = io.write_entry(p(3), level(0x41, 1));
    assert_eq!(
        a.rescan,
        Rescan::Targets {
            old: None,
            new: Some(phys(1))
        }
    );
}

#[test]
fn rescan_all_when_old_or_new_delivery_mode_is_not_fixed() {
    let mut io = Io::default();
    let lowest = RedirectionEntry::new(
        v(0x40),
        DeliveryMode::LowestPriority,
        DestinationMode::Logical,
        Polarity::ActiveHigh,
        TriggerMode::Level,
        false,
        0xff,
    )
    .bits();
    let _ = io.write_entry(p(3), level(0x40, 1));
    assert_eq!(io.write_entry(p(3), lowest).rescan, Rescan::All);
    // Old mode lowest priority, new fixed: still all (KVM: targeted).
    assert_eq!(io.write_entry(p(3), level(0x40, 1)).rescan, Rescan::All);
    let nmi = RedirectionEntry(level(0x40, 1) | (DeliveryMode::Nmi as u64) << 8);
    assert_eq!(io.write_entry(p(3), nmi.bits()).rescan, Rescan::All);
    let reserved = RedirectionEntry(level(0x40, 1) | 3 << 8);
    assert_eq!(io.write_entry(p(3), reserved.bits()).rescan, Rescan::All);
}

#[test]
fn every_redirection_write_reports_route_changed() {
    let mut io = Io::default();
    let high = sel_write(&mut io, 0x11 + 2 * 9, 0x0100_0000);
    assert_eq!(high.route_changed, Some(p(9)));
    assert!(!high.rescan.is_none());
    let low = sel_write(&mut io, 0x10 + 2 * 9, 0x0001_0040);
    assert_eq!(low.route_changed, Some(p(9)));
    // Even an identical rewrite.
    assert_eq!(
        sel_write(&mut io, 0x10 + 2 * 9, 0x0001_0040).route_changed,
        Some(p(9))
    );
    assert_eq!(io.write_entry(p(9), 0).route_changed, Some(p(9)));
}

#[test]
fn non_redirection_writes_change_no_route() {
    let mut io = Io::default();
    assert!(sel_write(&mut io, REG_ID, 0x0100_0000).is_empty());
    assert!(sel_write(&mut io, REG_VERSION, 0).is_empty());
    assert!(io.mmio_write(IOREGSEL, 4, 0x10).is_empty());
}

#[test]
fn write_entry_matches_two_guest_half_writes() {
    let bits = 0x0500_0000_0000_0000 | level(0x47, 0) | RedirectionEntry::LOGICAL;
    let mut a = level_in_service();
    let mut b = level_in_service();
    let wa = a.write_entry(p(3), bits);
    let _ = b.mmio_write(IOREGSEL, 4, 0x17);
    let _ = b.mmio_write(IOWIN, 4, bits >> 32);
    let _ = b.mmio_write(IOREGSEL, 4, 0x16);
    let wb = b.mmio_write(IOWIN, 4, bits & 0xffff_ffff);
    assert_eq!(a.entries(), b.entries());
    assert_eq!(wa.route_changed, wb.route_changed);
    assert_eq!(wa.deliver, wb.deliver);
    assert_eq!(
        wa.rescan,
        Rescan::Targets {
            old: Some(phys(1)),
            new: Some(logical(5))
        }
    );
}

#[test]
fn write_entry_unmask_delivers_an_asserted_level_pin() {
    let mut io = Io::default();
    let _ = io.set_line(p(6), true);
    // Reset entry is masked edge; a level unmasked write delivers.
    let a = io.write_entry(p(6), level(0x50, 0));
    assert_eq!(a.deliver, only(6));
    assert!(rirr(&io, 6));
}

#[test]
fn out_of_range_pins_are_ignored() {
    let mut io = Io::default();
    let before = io.clone();
    for n in [24u8, 100, 255] {
        assert!(io.set_line(p(n), true).is_empty());
        assert!(io.write_entry(p(n), level(0x40, 0)).is_empty());
        assert!(io.deliver_later_elapsed(p(n)).is_empty());
        assert_eq!(io.entry(p(n)), None);
        assert_eq!(io.message(p(n)), None);
        assert_eq!(io.msi_route(p(n), MsiFormat::X2apicApi), None);
        assert!(!io.line(p(n)));
        assert!(!io.asserted(p(n)));
    }
    assert_eq!(io, before);
}

#[test]
fn message_reports_destination_mode_vector_and_trigger() {
    let mut io = Io::new(IoapicConfig {
        msi_format: MsiFormat::ExtDestId,
        ..IoapicConfig::DEFAULT
    });
    let e = RedirectionEntry::new(
        v(0x66),
        DeliveryMode::LowestPriority,
        DestinationMode::Logical,
        Polarity::ActiveLow,
        TriggerMode::Level,
        true,
        0x0203,
    );
    let _ = io.write_entry(p(2), e.bits());
    let m = io.message(p(2)).unwrap();
    assert_eq!(m.destination, logical(0x0203));
    // The default format reads bits 63:56 only.
    assert_eq!(
        e.message(MsiFormat::Xapic).unwrap().destination,
        logical(0x03)
    );
    assert_eq!(m.delivery_mode, DeliveryMode::LowestPriority);
    assert_eq!(m.vector, v(0x66));
    assert_eq!(m.trigger, TriggerMode::Level);
}

#[test]
fn reserved_delivery_mode_is_not_delivered_and_sets_no_remote_irr() {
    let mut io = Io::default();
    let reserved = RedirectionEntry(level(0x40, 1) | 6 << 8);
    let _ = io.write_entry(p(3), reserved.bits());
    assert_eq!(io.message(p(3)), None);
    assert!(io.set_line(p(3), true).deliver.is_empty());
    assert!(!rirr(&io, 3));
    // Fixing the delivery mode delivers the still-asserted line.
    assert_eq!(io.write_entry(p(3), level(0x40, 1)).deliver, only(3));
}

#[test]
fn msi_route_encodes_level_assert_and_extended_destination() {
    let mut io = Io::new(IoapicConfig {
        msi_format: MsiFormat::ExtDestId,
        ..IoapicConfig::DEFAULT
    });
    let _ = io.write_entry(p(5), level(0x40, 0x1_23));
    let m = io.msi_route(p(5), MsiFormat::ExtDestId).unwrap().unwrap();
    assert_eq!(m.address_lo, 0xFEE0_0000 | 0x23 << 12 | 0x01 << 5);
    assert_eq!(m.data, 0x40 | Msi::DATA_LEVEL_TRIGGER | Msi::DATA_ASSERT);
    // QEMU's swizzle: the same destination in address_hi for KVM's x2APIC API.
    let k = io.msi_route(p(5), MsiFormat::X2apicApi).unwrap().unwrap();
    assert_eq!(
        (k.address_lo, k.address_hi),
        (0xFEE0_0000 | 0x23 << 12, 0x100)
    );
    // KVM without the API cannot carry it: an error, not a truncated route.
    assert_eq!(
        io.msi_route(p(5), MsiFormat::Xapic),
        Some(Err(InvalidValue(0x123)))
    );
    let _ = io.write_entry(p(6), edge(0x41, 2));
    assert_eq!(
        io.msi_route(p(6), MsiFormat::Xapic).unwrap().unwrap().data,
        0x41
    );
}

#[test]
fn msi_route_is_returned_for_masked_entries() {
    let mut io = Io::default();
    let masked = RedirectionEntry(level(0x40, 1)).with_mask(true);
    let _ = io.write_entry(p(5), masked.bits());
    let m = io.msi_route(p(5), MsiFormat::Xapic).unwrap().unwrap();
    assert_eq!(m.vector(), v(0x40));
    assert!(m.is_level());
}

// ---- state ----

#[test]
fn restore_round_trips_and_reinjects_asserted_level_pins() {
    let mut io = level_in_service();
    let _ = io.write_entry(p(8), level(0x48, 0));
    io.pins[8].set_line(true); // asserted but not yet serviced (as after a throttle)
    let st = io.registers();
    let mut other = Io::default();
    let a = other.load_registers(&st);
    assert_eq!(a.rescan, Rescan::All);
    assert_eq!(a.deliver, only(8));
    assert!(other.entry(p(3)).unwrap().remote_irr());
    assert!(other.entry(p(8)).unwrap().remote_irr());
    assert_eq!(other.registers().line, st.line);
}

#[test]
fn restore_clears_remote_irr_of_edge_entries() {
    let mut io = Io::default();
    let mut st = io.registers();
    st.entries[0] = RedirectionEntry(edge(0x30, 0) | RedirectionEntry::REMOTE_IRR);
    st.id = 0xff;
    let _ = io.load_registers(&st);
    assert!(!rirr(&io, 0));
    assert_eq!(io.id(), 0xf);
}

// ---- PinSet and actions ----

#[test]
fn pinset_insert_remove_contains_iter_len() {
    let mut s = PinSet::default();
    assert!(s.is_empty());
    assert!(s.insert(p(0)));
    assert!(s.insert(p(63)));
    assert!(s.insert(p(64)));
    assert!(s.insert(p(255)));
    assert!(!s.insert(p(255)));
    assert_eq!(s.len(), 4);
    assert!(s.contains(p(64)) && !s.contains(p(65)));
    let got: [u8; 4] = {
        let mut it = s.iter().map(|x| x.get());
        [(); 4].map(|_| it.next().unwrap())
    };
    assert_eq!(got, [0, 63, 64, 255]);
    assert_eq!(s.iter().len(), 4);
    assert!(s.remove(p(63)));
    assert!(!s.remove(p(63)));
    assert_eq!(s.len(), 3);
    assert_eq!(s.iter().collect::<PinSet>(), s);
}

#[test]
fn actions_merge_unites_pins_and_rescans() {
    let mut a = IoapicEffects::NONE;
    assert!(a.is_empty());
    a.merge(IoapicEffects {
        deliver: only(1),
        ..IoapicEffects::NONE
    });
    a.merge(IoapicEffects {
        deliver: only(2),
        deliver_later: only(3),
        rescan: Rescan::Targets {
            old: None,
            new: Some(phys(1)),
        },
        route_changed: Some(p(2)),
    });
    assert_eq!(a.deliver.len(), 2);
    assert_eq!(a.deliver_later, only(3));
    assert_eq!(a.route_changed, Some(p(2)));
    a.merge(IoapicEffects {
        rescan: Rescan::Targets {
            old: Some(phys(1)),
            new: Some(phys(2)),
        },
        ..IoapicEffects::NONE
    });
    assert_eq!(
        a.rescan,
        Rescan::Targets {
            old: Some(phys(1)),
            new: Some(phys(2))
        }
    );
}

#[test]
fn rescan_merge_falls_back_to_all_beyond_two_destinations() {
    let t = |o, n| Rescan::Targets {
        old: Some(phys(o)),
        new: Some(phys(n)),
    };
    assert_eq!(t(1, 2).merge(t(3, 2)), Rescan::All);
    assert_eq!(t(1, 2).merge(t(2, 1)), t(2, 1));
    assert_eq!(Rescan::None.merge(t(1, 2)), t(1, 2));
    assert_eq!(t(1, 2).merge(Rescan::All), Rescan::All);
    assert!(
        Rescan::Targets {
            old: None,
            new: None
        }
        .is_none()
    );
}
