//! Inter-processor interrupts through the ICR (SDM Vol. 3, "Issuing
//! Interprocessor Interrupts", "Error Handling"), entering `Irqchip` the way
//! MSIs do: deliveries, kicks, lowest-priority arbitration.

use eoi_exit::irqchip::{Effects, LapicWrite};
use eoi_exit::{
    ApicMode, DeliveryMode, Destination, DestinationMode, InterruptMessage, Irqchip, IrqchipConfig,
    TriggerMode, VcpuId, VcpuSlot, Vector,
};

type Chip = Irqchip<[VcpuSlot; 3]>;

const ICR: u32 = 0x300;
const ICR2: u32 = 0x310;
const ESR: u32 = 0x280;
const SELF_IPI: u32 = 0x3F0;
const LOGICAL: u32 = 1 << 11;
const ASSERT: u32 = 1 << 14;
const LEVEL: u32 = 1 << 15;
const SELF: u32 = 1 << 18;
const ALL_INCLUDING_SELF: u32 = 2 << 18;
const ALL_EXCLUDING_SELF: u32 = 3 << 18;

/// Three vCPUs with APIC IDs 0, 1, 2, software-enabled.
fn chip(mode: ApicMode) -> Chip {
    Irqchip::new(
        IrqchipConfig::default(),
        mode,
        [const { VcpuSlot::new() }; 3],
    )
}

fn write(chip: &Chip, vcpu: u16, offset: u32, value: u32) -> Effects {
    let mut fx = Effects::new();
    chip.write_lapic(
        VcpuId::new(vcpu),
        LapicWrite::Register { offset, value },
        &mut fx,
    );
    fx
}

fn read(chip: &Chip, vcpu: u16, offset: u32) -> Option<u32> {
    chip.vcpu(VcpuId::new(vcpu))
        .unwrap()
        .apic
        .read_register(offset)
}

/// Which vCPUs hold `vector` in IRR.
fn pending(chip: &Chip, vector: u8) -> Vec<u16> {
    (0..3)
        .filter(|&i| {
            let apic = chip.vcpu(VcpuId::new(i)).unwrap().apic;
            apic.irr().contains(Vector::new(vector))
        })
        .collect()
}

fn kicked(fx: &Effects) -> Vec<u16> {
    fx.kick.iter().map(VcpuId::get).collect()
}

/// xAPIC: ICR2 holds the destination, the write of the ICR's low half
/// sends; the ICR reads back with delivery status 0 (the send completed, as
/// in KVM).
#[test]
fn sdm_xapic_icr_low_write_sends_a_fixed_ipi_to_the_icr2_destination() {
    let chip = chip(ApicMode::XApic);
    assert!(write(&chip, 0, ICR2, 2 << 24).kick.is_empty());
    assert!(pending(&chip, 0x50).is_empty(), "ICR2 alone sends nothing");
    let fx = write(&chip, 0, ICR, 0x50 | 1 << 12);
    assert_eq!(kicked(&fx), [2]);
    assert_eq!(pending(&chip, 0x50), [2]);
    assert_eq!(read(&chip, 0, ICR), Some(0x50), "delivery status reads 0");
    assert_eq!(read(&chip, 0, ICR2), Some(2 << 24));
    // An edge IPI leaves TMR clear.
    assert!(
        !chip
            .vcpu(VcpuId::new(2))
            .unwrap()
            .apic
            .tmr()
            .contains(Vector::new(0x50))
    );
}

/// The destination shorthands (ICR bits 19:18): self, all including self,
/// all excluding self; the destination field is ignored with any of them.
#[test]
fn sdm_icr_destination_shorthands() {
    for (shorthand, vector, want) in [
        (SELF, 0x51, vec![1]),
        (ALL_INCLUDING_SELF, 0x52, vec![0, 1, 2]),
        (ALL_EXCLUDING_SELF, 0x53, vec![0, 2]),
    ] {
        let chip = chip(ApicMode::XApic);
        let _ = write(&chip, 1, ICR2, 0xFF << 24);
        let fx = write(&chip, 1, ICR, vector | shorthand);
        assert_eq!(pending(&chip, vector as u8), want, "{shorthand:#x}");
        assert_eq!(kicked(&fx), want);
    }
}

/// x2APIC: the ICR is one 64-bit MSR (0x830) with a 32-bit destination in
/// bits 63:32, and the SELF IPI MSR (0x83F) sends a fixed edge interrupt to
/// the writer.
#[test]
fn sdm_x2apic_icr_is_one_64_bit_write_and_self_ipi_targets_the_writer() {
    let chip = chip(ApicMode::X2Apic);
    let mut fx = Effects::new();
    chip.write_lapic(VcpuId::new(0), LapicWrite::Icr(2 << 32 | 0x61), &mut fx);
    assert_eq!(pending(&chip, 0x61), [2]);
    assert_eq!(kicked(&fx), [2]);
    let fx = write(&chip, 1, SELF_IPI, 0x62);
    assert_eq!(pending(&chip, 0x62), [1]);
    assert_eq!(kicked(&fx), [1]);
    // There is no ICR2 in x2APIC mode; in xAPIC mode there is no SELF IPI.
    assert_eq!(read(&chip, 0, ICR2), None);
    let xapic = self::chip(ApicMode::XApic);
    let _ = write(&xapic, 1, SELF_IPI, 0x62);
    assert!(pending(&xapic, 0x62).is_empty());
}

/// Logical destinations (flat model): every APIC whose logical ID has a bit
/// of the mask; lowest priority delivers to exactly one of them.
#[test]
fn sdm_icr_logical_destination_and_lowest_priority() {
    let chip = chip(ApicMode::XApic);
    for (vcpu, bit) in [(0, 0x01), (1, 0x02), (2, 0x04)] {
        let _ = write(&chip, vcpu, 0xD0, bit << 24);
    }
    let _ = write(&chip, 0, ICR2, 0x06 << 24);
    let fx = write(&chip, 0, ICR, 0x70 | LOGICAL);
    assert_eq!(pending(&chip, 0x70), [1, 2]);
    assert_eq!(kicked(&fx), [1, 2]);
    let fx = write(&chip, 0, ICR, 0x71 | LOGICAL | 1 << 8);
    assert_eq!(pending(&chip, 0x71).len(), 1, "lowest priority: one target");
    assert_eq!(kicked(&fx).len(), 1);
    assert!([1, 2].contains(&pending(&chip, 0x71)[0]));
}

/// SDM "Error Handling": an ICR write of a fixed IPI with an illegal vector
/// (0-15) sets ESR bit 5 (send illegal vector) and sends nothing; the error
/// reads back only after the next ESR write, which also clears the latch.
#[test]
fn sdm_send_illegal_vector_sets_esr_bit_5_and_sends_nothing() {
    let chip = chip(ApicMode::XApic);
    let _ = write(&chip, 0, ICR2, 1 << 24);
    let fx = write(&chip, 0, ICR, 0x05);
    assert!(fx.kick.is_empty() && pending(&chip, 0x05).is_empty());
    assert_eq!(
        read(&chip, 0, ESR),
        Some(0),
        "not readable before an ESR write"
    );
    let _ = write(&chip, 0, ESR, 0);
    assert_eq!(read(&chip, 0, ESR), Some(0x20));
    let _ = write(&chip, 0, ESR, 0);
    assert_eq!(read(&chip, 0, ESR), Some(0), "the write cleared the latch");
}

/// SDM "Error Handling": a LAPIC that receives an interrupt with an illegal
/// vector (an MSI here) logs ESR bit 6 (receive illegal vector) and never
/// sets the IRR bit.
#[test]
fn sdm_receive_illegal_vector_sets_esr_bit_6() {
    let chip = chip(ApicMode::XApic);
    let mut fx = Effects::new();
    chip.send_msi(
        &eoi_exit::Msi::from_message(
            &InterruptMessage {
                destination: Destination {
                    id: 1,
                    mode: DestinationMode::Physical,
                },
                delivery_mode: DeliveryMode::Fixed,
                vector: Vector::new(0x07),
                trigger: TriggerMode::Edge,
            },
            eoi_exit::MsiFormat::Xapic,
        )
        .unwrap(),
        &mut fx,
    );
    assert!(fx.kick.is_empty() && pending(&chip, 0x07).is_empty());
    let _ = write(&chip, 1, ESR, 0);
    assert_eq!(read(&chip, 1, ESR), Some(0x40));
    assert_eq!(read(&chip, 0, ESR), Some(0), "only the receiver logs it");
}

/// x2APIC takes only 0 as an ESR write (KVM injects #GP for any other
/// value): the model refuses the write and the latch stays.
#[test]
fn sdm_x2apic_esr_write_takes_only_zero() {
    let chip = chip(ApicMode::X2Apic);
    let _ = write(&chip, 0, SELF_IPI, 0x03); // send illegal vector: latched
    let _ = write(&chip, 0, ESR, 1);
    assert_eq!(read(&chip, 0, ESR), Some(0));
    let _ = write(&chip, 0, ESR, 0);
    assert_eq!(read(&chip, 0, ESR), Some(0x20));
}

/// A level-triggered fixed IPI is delivered with its TMR bit set when the
/// level bit (14) asserts; KVM's `__apic_accept_irq` drops a de-assert.
#[test]
fn kvm_level_triggered_ipi_deassert_is_dropped() {
    let chip = chip(ApicMode::XApic);
    let _ = write(&chip, 0, ICR2, 1 << 24);
    let fx = write(&chip, 0, ICR, 0x80 | LEVEL);
    assert!(fx.kick.is_empty() && pending(&chip, 0x80).is_empty());
    let fx = write(&chip, 0, ICR, 0x80 | LEVEL | ASSERT);
    assert_eq!(kicked(&fx), [1]);
    let apic = chip.vcpu(VcpuId::new(1)).unwrap().apic;
    assert!(apic.irr().contains(Vector::new(0x80)) && apic.tmr().contains(Vector::new(0x80)));
}

/// SMI, NMI, INIT and SIPI IPIs are recorded in the ICR, kick their target
/// and put no vector in IRR: they are non-vectored (`tests/nonvectored.rs`
/// checks what each does).
#[test]
fn icr_non_vectored_modes_are_recorded_kick_and_put_nothing_in_irr() {
    let chip = chip(ApicMode::XApic);
    let _ = write(&chip, 0, ICR2, 1 << 24);
    for mode in [2u32, 4, 5, 6] {
        let low = 0x90 | mode << 8 | ASSERT;
        let fx = write(&chip, 0, ICR, low);
        assert!(
            fx.kick.iter().map(VcpuId::get).eq([1]) && pending(&chip, 0x90).is_empty(),
            "mode {mode}"
        );
        assert_eq!(read(&chip, 0, ICR), Some(low));
    }
}

/// The ICR and ESR are part of the saved state and survive a restore.
#[test]
fn icr_and_esr_survive_a_snapshot() {
    let chip = chip(ApicMode::XApic);
    let _ = write(&chip, 0, ICR2, 2 << 24);
    let _ = write(&chip, 0, ICR, 0x05); // illegal: latched
    let _ = write(&chip, 0, ESR, 0); // now readable
    let _ = write(&chip, 0, ICR, 0x44);
    let st = chip.state::<Vec<_>>();
    let copy: Chip = Irqchip::from_state(&st, [const { VcpuSlot::new() }; 3]).unwrap();
    for offset in [ICR, ICR2, ESR] {
        assert_eq!(
            read(&copy, 0, offset),
            read(&chip, 0, offset),
            "{offset:#x}"
        );
    }
    assert_eq!(read(&copy, 0, ESR), Some(0x20));
    assert_eq!(read(&copy, 0, ICR), Some(0x44));
}
