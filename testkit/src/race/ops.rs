//! The op language: [`Field`], [`Op`], [`Trace`] and [`RTC_PIN`].

use core::fmt;

use eoi_exit::ioapic::RedirectionEntry;
use eoi_exit::irqchip::LapicWrite;

/// One field of a redirection entry, with its new value.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum Field {
    /// Bits 7:0.
    Vector(u8),
    /// Bits 10:8 (only the low 3 bits are used).
    DeliveryMode(u8),
    /// Bit 11: logical destination mode.
    Logical(bool),
    /// Bit 13: active low.
    ActiveLow(bool),
    /// Bit 15: level triggered.
    Level(bool),
    /// Bit 16: masked.
    Masked(bool),
    /// Bits 63:56: destination.
    Dest(u8),
}

impl Field {
    /// `entry` with this field replaced.
    pub const fn apply(self, entry: u64) -> u64 {
        const fn bit(e: u64, b: u64, on: bool) -> u64 {
            if on { e | b } else { e & !b }
        }
        match self {
            Field::Vector(v) => (entry & !0xff) | v as u64,
            Field::DeliveryMode(m) => (entry & !(7 << 8)) | ((m as u64 & 7) << 8),
            Field::Logical(on) => bit(entry, 1 << 11, on), // destination mode
            Field::ActiveLow(on) => bit(entry, RedirectionEntry::POLARITY_LOW, on),
            Field::Level(on) => bit(entry, RedirectionEntry::LEVEL, on),
            Field::Masked(on) => bit(entry, RedirectionEntry::MASK, on),
            Field::Dest(d) => (entry & !(0xff << 56)) | (d as u64) << 56,
        }
    }
}

/// One event of the race language. Pin and vCPU numbers are taken modulo the
/// harness's `PINS` and `VCPUS`, so every value is valid.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum Op {
    /// The guest rewrites one field of a redirection entry (one IOWIN write).
    Write {
        /// The pin.
        pin: u8,
        /// The field and its new value.
        field: Field,
    },
    /// Host-side write of a whole entry (raw 64 bits, read-only bits included).
    WriteEntry {
        /// The pin.
        pin: u8,
        /// The raw value.
        value: u64,
    },
    /// Any guest MMIO write to the I/O APIC window.
    Mmio {
        /// Offset (decoded modulo the 256-byte window).
        offset: u8,
        /// Access size in bytes.
        size: u8,
        /// Value written.
        value: u32,
    },
    /// A device sets a pin's electrical level.
    SetLine {
        /// The pin.
        pin: u8,
        /// The level.
        high: bool,
    },
    /// An MSI, fixed delivery, physical destination.
    Msi {
        /// Destination APIC ID (0xFF broadcasts).
        dest: u8,
        /// Vector.
        vector: u8,
        /// Level-triggered MSI.
        level: bool,
    },
    /// vCPU `vcpu` accepts an edge interrupt (an IPI or edge MSI aimed at it).
    Accept {
        /// The vCPU.
        vcpu: u8,
        /// Vector.
        vector: u8,
    },
    /// The guest on `vcpu` takes its highest deliverable interrupt (INTA).
    Ack {
        /// The vCPU.
        vcpu: u8,
    },
    /// The guest on `vcpu` writes EOI.
    Eoi {
        /// The vCPU.
        vcpu: u8,
    },
    /// A pending rescan request (`KVM_REQ_SCAN_IOAPIC`) of `vcpu` is processed.
    Rescan {
        /// The vCPU.
        vcpu: u8,
    },
    /// `vcpu` enters the guest: it loads its VMCS update.
    Enter {
        /// The vCPU.
        vcpu: u8,
    },
    /// Save the architectural state (replaces an earlier snapshot).
    Snapshot,
    /// Restore the last snapshot into a fresh Irqchip (nothing without one).
    Restore,
    /// Restore the last snapshot through KVM's formats (nothing without one,
    /// or with `PINS` other than KVM's 24): the saved state is exported as
    /// `kvm_ioapic_state` and `kvm_lapic_state` pages and imported with
    /// `Irqchip::import_kvm`, as a migration through KVM does. KVM's state
    /// carries no EOI-exit bookkeeping and no EOI-storm counts, and its
    /// import re-injects asserted level pins without remote IRR.
    #[cfg(feature = "kvm")]
    RestoreKvm,
    /// A live migration: the architectural state is saved and restored into
    /// a fresh Irqchip in one step, as [`Op::Snapshot`] then [`Op::Restore`]
    /// would, without keeping the snapshot (the harness's state holds no
    /// second copy, so a model check's state space does not square).
    Migrate,
    /// [`Op::Migrate`] through KVM's formats, as [`Op::Snapshot`] then
    /// [`Op::RestoreKvm`] would (nothing with `PINS` other than 24).
    #[cfg(feature = "kvm")]
    MigrateKvm,
    /// The EOI-storm timer of `pin` fired.
    DeliverLater {
        /// The pin.
        pin: u8,
    },
    /// The guest writes `vcpu`'s LDR (logical ID in bits 31:24): the APIC map
    /// changes and every vCPU is rescanned (KVM's map recalculation).
    Ldr {
        /// The vCPU.
        vcpu: u8,
        /// The 8-bit logical ID.
        logical_id: u8,
    },
    /// The guest on `vcpu` sends a fixed edge IPI of `vector`: ICR2 with
    /// physical destination `dest` (0xFF broadcasts), then the ICR with
    /// destination shorthand `shorthand & 3` (0 none, 1 self, 2 all, 3 all
    /// but self).
    Ipi {
        /// The sender.
        vcpu: u8,
        /// Physical destination APIC ID.
        dest: u8,
        /// Vector.
        vector: u8,
        /// ICR bits 19:18.
        shorthand: u8,
    },
    /// The guest writes `vcpu`'s TPR (changes what `Ack` may take).
    Tpr {
        /// The vCPU.
        vcpu: u8,
        /// The TPR.
        tpr: u8,
    },
    /// The guest on `vcpu` writes its SVR (enabled, spurious vector 0xFF)
    /// with bit 12 ("suppress EOI broadcast") = `on`. The bit sticks only
    /// where directed EOI is advertised
    /// ([`HarnessConfig::directed_eoi`](super::HarnessConfig::directed_eoi)).
    DirectedEoi {
        /// The vCPU.
        vcpu: u8,
        /// SVR bit 12.
        on: bool,
    },
    /// `LineAware`: the exit `vcpu` owes since the chip named it in
    /// `Effects::exit` lands (the kick, an IPI, reaches it): the VMM calls
    /// `take_events`, and the vCPU loads its VMCS at its next entry.
    /// Nothing when it owes none. Until then the guest keeps running under
    /// the VMCS it last loaded (acks, EOIs that do not exit, TPR writes),
    /// and everything else may happen (see
    /// [`Harness::step`](super::Harness::step)).
    Exit {
        /// The vCPU.
        vcpu: u8,
    },
}

impl Op {
    /// The guest's LAPIC register writes this op stands for, on its vCPU (the
    /// op's raw index; callers reduce it modulo their vCPU count): the LDR,
    /// the TPR, SVR bit 12 (directed EOI; the APIC stays software-enabled with
    /// vector 0xFF), or an xAPIC IPI as ICR2 then ICR (which sends). `None`
    /// for every other op. One translation for every harness that drives an
    /// `Irqchip` with ops.
    pub fn lapic_writes(self) -> Option<(u8, [Option<LapicWrite>; 2])> {
        let reg = |offset, value| Some(LapicWrite::Register { offset, value });
        Some(match self {
            Op::Ldr { vcpu, logical_id } => (vcpu, [reg(0xD0, u32::from(logical_id) << 24), None]),
            Op::Tpr { vcpu, tpr } => (vcpu, [reg(0x80, u32::from(tpr)), None]),
            Op::DirectedEoi { vcpu, on } => (
                vcpu,
                [reg(0xF0, 0x1FF | if on { 1 << 12 } else { 0 }), None],
            ),
            Op::Ipi {
                vcpu,
                dest,
                vector,
                shorthand,
            } => (
                vcpu,
                [
                    reg(0x310, u32::from(dest) << 24),
                    reg(0x300, u32::from(vector) | u32::from(shorthand & 3) << 18),
                ],
            ),
            _ => return None,
        })
    }
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Field::Vector(v) => write!(f, "vector={v:#04x}"),
            Field::DeliveryMode(m) => write!(f, "delivery_mode={}", m & 7),
            Field::Logical(b) => write!(f, "dest_mode={}", if b { "logical" } else { "physical" }),
            Field::ActiveLow(b) => write!(f, "polarity={}", if b { "low" } else { "high" }),
            Field::Level(b) => write!(f, "trigger={}", if b { "level" } else { "edge" }),
            Field::Masked(b) => write!(f, "{}", if b { "masked" } else { "unmasked" }),
            Field::Dest(d) => write!(f, "dest={d}"),
        }
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Op::Write { pin, field } => write!(f, "write pin{pin} {field}"),
            Op::WriteEntry { pin, value } => write!(f, "write pin{pin} entry={value:#018x}"),
            Op::Mmio {
                offset,
                size,
                value,
            } => write!(f, "mmio write [{offset:#04x}]/{size} = {value:#x}"),
            Op::SetLine { pin, high } => {
                write!(f, "line pin{pin} {}", if high { "high" } else { "low" })
            }
            Op::Msi {
                dest,
                vector,
                level,
            } => write!(
                f,
                "msi {vector:#04x} {} -> apic {dest}",
                if level { "level" } else { "edge" }
            ),
            Op::Accept { vcpu, vector } => write!(f, "vCPU{vcpu} accepts edge {vector:#04x}"),
            Op::Ack { vcpu } => write!(f, "vCPU{vcpu} ack"),
            Op::Eoi { vcpu } => write!(f, "vCPU{vcpu} EOI"),
            Op::Rescan { vcpu } => write!(f, "vCPU{vcpu} rescan"),
            Op::Enter { vcpu } => write!(f, "vCPU{vcpu} enter (load VMCS)"),
            Op::Snapshot => write!(f, "snapshot"),
            Op::Restore => write!(f, "restore"),
            #[cfg(feature = "kvm")]
            Op::RestoreKvm => write!(f, "restore through KVM's formats"),
            Op::Migrate => write!(f, "migrate (snapshot and restore)"),
            #[cfg(feature = "kvm")]
            Op::MigrateKvm => write!(f, "migrate through KVM's formats"),
            Op::DeliverLater { pin } => write!(f, "deliver-later timer pin{pin}"),
            Op::Ldr { vcpu, logical_id } => write!(f, "vCPU{vcpu} LDR={logical_id:#04x}"),
            Op::Tpr { vcpu, tpr } => write!(f, "vCPU{vcpu} TPR={tpr:#04x}"),
            Op::DirectedEoi { vcpu, on } => {
                write!(
                    f,
                    "vCPU{vcpu} SVR bit 12 {}",
                    if on { "set" } else { "clear" }
                )
            }
            Op::Exit { vcpu } => write!(f, "vCPU{vcpu} takes its owed exit (take_events)"),
            Op::Ipi {
                vcpu,
                dest,
                vector,
                shorthand,
            } => {
                let to = match shorthand & 3 {
                    0 => format!("apic {dest}"),
                    1 => "self".into(),
                    2 => "all".into(),
                    _ => "all but self".into(),
                };
                write!(f, "vCPU{vcpu} IPI {vector:#04x} -> {to}")
            }
        }
    }
}

/// Displays an op sequence one numbered op per line.
pub struct Trace<'a>(pub &'a [Op]);

impl fmt::Display for Trace<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, op) in self.0.iter().enumerate() {
            writeln!(f, "  {:2}. {op}", i + 1)?;
        }
        Ok(())
    }
}

/// The RTC pin number, for op generators.
pub const RTC_PIN: u8 = 8; // KVM's RTC GSI (`RTC_GSI`), pin 8 of its I/O APIC
