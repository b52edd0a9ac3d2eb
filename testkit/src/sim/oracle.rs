//! The necessary-exit oracle: interrupt instances tagged with their source,
//! and the classification of each EOI (see the module docs of [`crate::sim`]).

use std::vec::Vec;

use eoi_exit::Pin;
use eoi_exit::PinSet;
use eoi_exit::RedirectionEntry;
use eoi_exit::Vector;
use eoi_exit::lapic::LocalApic;

/// No pin.
const NONE: u8 = 0xFF;

/// One interrupt instance (possibly several coalesced acceptances) held in a
/// LAPIC's IRR or ISR, with where it came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Instance {
    /// The level-triggered I/O APIC pin that delivered it (`0xFF`: none).
    pub level_pin: u8,
    /// The pin with an ack notifier that delivered it (`0xFF`: none).
    pub notifier_pin: u8,
    /// It came from the RTC pin under RTC EOI tracking: this vCPU owes the EOI.
    pub rtc: bool,
    /// An acceptance whose EOI matters to nobody (MSI, edge pin without
    /// notifier) is part of it.
    pub plain: bool,
}

impl Instance {
    const EMPTY: Instance = Instance {
        level_pin: NONE,
        notifier_pin: NONE,
        rtc: false,
        plain: false,
    };

    /// Whether some part of it wants its EOI seen by the I/O APIC side.
    pub fn wants_eoi(&self) -> bool {
        self.level_pin != NONE || self.notifier_pin != NONE || self.rtc
    }

    fn merge(&mut self, o: Instance) {
        if o.level_pin != NONE {
            self.level_pin = o.level_pin;
        }
        if o.notifier_pin != NONE {
            self.notifier_pin = o.notifier_pin;
        }
        self.rtc |= o.rtc;
        self.plain |= o.plain;
    }
}

/// The source of one acceptance.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tag {
    /// The I/O APIC pin, `None` for an MSI.
    pub pin: Option<Pin>,
    /// The acceptance was level triggered.
    pub level: bool,
    /// The pin has an ack notifier.
    pub notifier: bool,
    /// The pin is the tracked RTC.
    pub rtc: bool,
}

impl Tag {
    fn instance(self) -> Instance {
        let mut i = Instance::EMPTY;
        if let Some(p) = self.pin {
            if self.level {
                i.level_pin = p.get();
            }
            if self.notifier {
                i.notifier_pin = p.get();
            }
            i.rtc = self.rtc;
        }
        i.plain = !i.wants_eoi();
        i
    }
}

/// Which pins have an ack notifier, and which is the tracked RTC.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PinRoles {
    /// Pins with an ack notifier.
    pub notifier: PinSet,
    /// The RTC pin under KVM's RTC EOI tracking.
    pub rtc: Option<u8>,
}

/// How one EOI is classified.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    /// The I/O APIC side needs it.
    Necessary,
    /// Not needed, but the bitmap cannot tell it from a needed one.
    Unavoidable,
    /// Not needed and distinguishable.
    Avoidable,
}

/// Instances in flight on every vCPU.
#[derive(Clone, Debug)]
pub struct Oracle {
    irr: Vec<[Option<Instance>; 256]>,
    isr: Vec<[Option<Instance>; 256]>,
    /// Inconsistencies between this bookkeeping and the LAPIC (must stay 0).
    pub mismatches: u64,
    /// Instances from the RTC pin not yet retired (KVM's `pending_eoi`).
    rtc_outstanding: u64,
}

impl Oracle {
    /// No instance on `vcpus` vCPUs.
    pub fn new(vcpus: usize) -> Self {
        Oracle {
            irr: std::vec![[None; 256]; vcpus],
            isr: std::vec![[None; 256]; vcpus],
            mismatches: 0,
            rtc_outstanding: 0,
        }
    }

    /// A LAPIC accepted `vector` (`coalesced`: its IRR bit was already set).
    pub fn accept(&mut self, vcpu: usize, vector: Vector, coalesced: bool, tag: Tag) {
        let slot = &mut self.irr[vcpu][vector.get() as usize];
        let new = tag.instance();
        if new.rtc && !slot.is_some_and(|i| i.rtc) {
            self.rtc_outstanding += 1;
        }
        match (slot.as_mut(), coalesced) {
            (Some(i), true) => i.merge(new),
            (None, false) => *slot = Some(new),
            (Some(i), false) => {
                self.mismatches += 1;
                i.merge(new);
            }
            (None, true) => {
                self.mismatches += 1;
                *slot = Some(new);
            }
        }
    }

    /// The guest acknowledged `vector` (IRR to ISR).
    pub fn ack(&mut self, vcpu: usize, vector: Vector) {
        let v = vector.get() as usize;
        let inst = self.irr[vcpu][v].take();
        if inst.is_none() || self.isr[vcpu][v].is_some() {
            self.mismatches += 1;
        }
        self.isr[vcpu][v] = Some(inst.unwrap_or(Instance::EMPTY));
    }

    /// Whether some vCPU still owes the EOI of an RTC interrupt.
    pub fn rtc_owed(&self) -> bool {
        self.rtc_outstanding != 0
    }

    /// The instance in service for `vector`.
    pub fn in_service(&self, vcpu: usize, vector: Vector) -> Option<Instance> {
        self.isr[vcpu][vector.get() as usize]
    }

    /// The instance pending (IRR) for `vector`.
    pub fn pending(&self, vcpu: usize, vector: Vector) -> Option<Instance> {
        self.irr[vcpu][vector.get() as usize]
    }

    /// Whether some vCPU holds an instance of `vector` that came from `pin`.
    pub fn from_pin_outstanding(&self, pin: u8, vector: Vector) -> bool {
        let v = vector.get() as usize;
        let from = |i: &Option<Instance>| {
            i.is_some_and(|i| i.level_pin == pin || i.notifier_pin == pin || i.rtc && pin == 8)
        };
        self.irr.iter().any(|s| from(&s[v])) || self.isr.iter().any(|s| from(&s[v]))
    }

    /// Whether `vcpu` has an instance of `vector` in IRR or ISR.
    pub fn outstanding(&self, vcpu: usize, vector: Vector) -> bool {
        let v = vector.get() as usize;
        self.irr[vcpu][v].is_some() || self.isr[vcpu][v].is_some()
    }

    /// Retires the in-service instance of `vector` (an EOI) and returns it.
    pub fn retire(&mut self, vcpu: usize, vector: Vector) -> Option<Instance> {
        let i = self.isr[vcpu][vector.get() as usize].take();
        match i {
            None => self.mismatches += 1,
            Some(i) if i.rtc => self.rtc_outstanding -= 1,
            Some(_) => {}
        }
        i
    }

    /// Whether the level EOI of `inst` would clear its entry's remote IRR
    /// if it reached the I/O APIC: the entry is still level, still has
    /// `vector` and still waits.
    pub fn level_waits(inst: &Instance, vector: Vector, entries: &[RedirectionEntry]) -> bool {
        inst.level_pin != NONE && {
            let e = entries[inst.level_pin as usize];
            e.is_level() && e.vector() == vector && e.remote_irr()
        }
    }

    /// Classifies the EOI of `vector` on `vcpu` that retires `inst`, against
    /// the I/O APIC `entries` as they were *before* the EOI was forwarded.
    ///
    /// `directed`: the vCPU suppresses EOI broadcasts (SVR bit 12, honoured)
    /// and its guest EOIs the I/O APIC's EOI register itself, so no level
    /// EOI is necessary and no level route makes one unavoidable; ack
    /// notifiers and the RTC still need theirs (KVM runs them at the LAPIC
    /// EOI whatever bit 12 says).
    #[allow(clippy::too_many_arguments)]
    pub fn classify(
        &self,
        vcpu: usize,
        vector: Vector,
        inst: &Instance,
        apic: &LocalApic,
        entries: &[RedirectionEntry],
        roles: &PinRoles,
        directed: bool,
    ) -> Class {
        let rtc_pin = roles.rtc.map(|p| p as usize);
        let notifier = |p: usize| p < 256 && roles.notifier.contains(Pin::new(p as u8));
        let same = |p: u8| {
            entries
                .get(p as usize)
                .is_some_and(|e: &RedirectionEntry| e.vector() == vector)
        };
        let level_needed = !directed && Self::level_waits(inst, vector, entries);
        if level_needed
            || (inst.notifier_pin != NONE && same(inst.notifier_pin))
            || inst.rtc && rtc_pin.is_some_and(|p| same(p as u8))
        {
            return Class::Necessary;
        }
        let routed = entries.iter().enumerate().any(|(p, e)| {
            let to_here = e
                .message(super::engine::FORMAT)
                .is_some_and(|m| apic.matches(m.destination));
            if e.vector() != vector || !to_here {
                return false;
            }
            (!directed && e.is_level() && (!e.masked() || e.remote_irr()))
                || ((notifier(p) || rtc_pin == Some(p)) && !e.masked())
        });
        let newer_needs = self
            .pending(vcpu, vector)
            .is_some_and(|i| i.notifier_pin != NONE || i.rtc || (!directed && i.level_pin != NONE));
        if routed || newer_needs {
            Class::Unavoidable
        } else {
            Class::Avoidable
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use eoi_exit::lapic::ApicMode;
    use eoi_exit::{ApicId, TriggerMode};

    fn level_entry(vector: u8, dest: u32, rirr: bool) -> RedirectionEntry {
        let e = RedirectionEntry::fixed(Vector::new(vector), TriggerMode::Level, dest);
        RedirectionEntry(
            e.0 | if rirr {
                RedirectionEntry::REMOTE_IRR
            } else {
                0
            },
        )
    }

    fn in_service_from_pin3(o: &mut Oracle, vector: u8) -> Instance {
        let tag = Tag {
            pin: Some(Pin::new(3)),
            level: true,
            notifier: false,
            rtc: false,
        };
        o.accept(0, Vector::new(vector), false, tag);
        o.ack(0, Vector::new(vector));
        o.retire(0, Vector::new(vector)).expect("in service")
    }

    fn classify(o: &Oracle, inst: &Instance, entries: &[RedirectionEntry]) -> Class {
        let apic = LocalApic::new_enabled(ApicId::new(0), ApicMode::XApic);
        o.classify(
            0,
            Vector::new(0x40),
            inst,
            &apic,
            entries,
            &PinRoles::default(),
            false,
        )
    }

    #[test]
    fn level_instance_whose_entry_still_waits_is_necessary() {
        let mut o = Oracle::new(1);
        let inst = in_service_from_pin3(&mut o, 0x40);
        let mut entries = [RedirectionEntry::default(); 24];
        // Moved to vCPU 1 while in service: still necessary (the stale case).
        entries[3] = level_entry(0x40, 1, true);
        assert_eq!(classify(&o, &inst, &entries), Class::Necessary);
        assert_eq!(o.mismatches, 0);
    }

    #[test]
    fn vector_rewritten_while_in_service_is_not_necessary() {
        let mut o = Oracle::new(1);
        let inst = in_service_from_pin3(&mut o, 0x40);
        let mut entries = [RedirectionEntry::default(); 24];
        // The guest rewrote pin 3 to 0x50: an EOI of 0x40 cannot clear it.
        entries[3] = level_entry(0x50, 0, true);
        assert_eq!(classify(&o, &inst, &entries), Class::Avoidable);
        // Unless another level route to this vCPU uses 0x40.
        entries[5] = level_entry(0x40, 0, false);
        assert_eq!(classify(&o, &inst, &entries), Class::Unavoidable);
    }

    #[test]
    fn switched_to_edge_or_already_cleared_is_not_necessary() {
        let mut o = Oracle::new(1);
        let inst = in_service_from_pin3(&mut o, 0x40);
        let mut entries = [RedirectionEntry::default(); 24];
        entries[3] = RedirectionEntry::fixed(Vector::new(0x40), TriggerMode::Edge, 1);
        assert_eq!(classify(&o, &inst, &entries), Class::Avoidable);
        entries[3] = level_entry(0x40, 1, false);
        assert_eq!(classify(&o, &inst, &entries), Class::Avoidable);
    }

    #[test]
    fn a_needy_newer_instance_makes_a_plain_eoi_unavoidable() {
        let mut o = Oracle::new(1);
        let msi = Tag {
            pin: None,
            level: false,
            notifier: false,
            rtc: false,
        };
        o.accept(0, Vector::new(0x40), false, msi);
        o.ack(0, Vector::new(0x40));
        let level = Tag {
            pin: Some(Pin::new(3)),
            level: true,
            notifier: false,
            rtc: false,
        };
        o.accept(0, Vector::new(0x40), false, level);
        let inst = o.retire(0, Vector::new(0x40)).expect("in service");
        assert!(inst.plain && !inst.wants_eoi());
        let mut entries = [RedirectionEntry::default(); 24];
        entries[3] = level_entry(0x40, 1, true);
        assert_eq!(classify(&o, &inst, &entries), Class::Unavoidable);
    }

    #[test]
    fn under_directed_eoi_a_waiting_level_instance_is_not_necessary() {
        let mut o = Oracle::new(1);
        let inst = in_service_from_pin3(&mut o, 0x40);
        let mut entries = [RedirectionEntry::default(); 24];
        entries[3] = level_entry(0x40, 0, true);
        let apic = LocalApic::new_enabled(ApicId::new(0), ApicMode::XApic);
        let v = Vector::new(0x40);
        let roles = PinRoles::default();
        assert_eq!(
            o.classify(0, v, &inst, &apic, &entries, &roles, false),
            Class::Necessary
        );
        // The guest writes the EOI register: the routed level entry does
        // not make the LAPIC EOI unavoidable either.
        assert_eq!(
            o.classify(0, v, &inst, &apic, &entries, &roles, true),
            Class::Avoidable
        );
        assert!(Oracle::level_waits(&inst, v, &entries));
    }

    #[test]
    fn coalesced_acceptances_merge_their_needs() {
        let mut o = Oracle::new(1);
        let v = Vector::new(0x40);
        let msi = Tag {
            pin: None,
            level: false,
            notifier: false,
            rtc: true,
        };
        o.accept(0, v, false, Tag { rtc: false, ..msi });
        o.accept(
            0,
            v,
            true,
            Tag {
                pin: Some(Pin::new(8)),
                ..msi
            },
        );
        assert!(o.rtc_owed());
        o.ack(0, v);
        let i = o.retire(0, v).expect("in service");
        assert!(i.plain && i.rtc && i.wants_eoi());
        assert!(!o.rtc_owed());
        assert_eq!(o.mismatches, 0);
    }
}
