//! The event loop: devices, irqbalance, the guest, and the VMM glue around one
//! [`Irqchip`].

use std::boxed::Box;
use std::vec::Vec;

use super::Census;
use super::oracle::{Class, Oracle, PinRoles, Tag};
use super::workload::Workload;
use crate::race::SplitMix64;
use eoi_exit::Vector;
use eoi_exit::ioapic::{IOEOI, IOREGSEL, IOWIN, IoapicVersion, REG_REDTBL_BASE};
use eoi_exit::irqchip::{Delivery, Effects, Irqchip, IrqchipConfig, LapicWrite, VcpuSlot};
use eoi_exit::lapic::ApicMode;
use eoi_exit::{
    ApicId, DeliveryMode, Destination, DestinationMode, InterruptMessage, Pin, TriggerMode, VcpuId,
};
use eoi_exit::{Msi, MsiFormat, PinSet, Policy, RedirectionEntry};

/// Pin 0: the edge pin with an ack notifier.
const NOTIFIER_PIN: u8 = 0;
/// Pin 8: the RTC.
const RTC_PIN: u8 = 8;
/// SVR bit 12: suppress EOI broadcast.
const SVR_SUPPRESS_EOI_BROADCAST: u32 = 1 << 12;
/// Order in which level pins are handed out.
const LEVEL_ORDER: [u8; 22] = [
    16, 17, 18, 19, 20, 21, 22, 23, 1, 2, 3, 4, 5, 6, 7, 9, 10, 11, 12, 13, 14, 15,
];

/// Vector `off` (0..=3) of pin `p`'s four: `0x30 + 8p + off`. Offsets 4..=7
/// of each group of eight are the guest's own MSI vectors, so pins and MSIs
/// share a vector only when the guest reuses a freed one.
fn pin_vector(p: u8, off: u8) -> Vector {
    Vector::new(0x30 + 8 * p + (off & 3))
}

fn msi_vector(k: u8, j: u8) -> Vector {
    Vector::new(0x30 + 8 * (k % 24) + 4 + (j & 3))
}

/// How the simulated guest addresses destinations above 255: Linux's
/// extended destination ID, in its I/O APIC entries and its MSIs.
pub(crate) const FORMAT: MsiFormat = MsiFormat::ExtDestId;

/// The APIC ID of vCPU `i`. With 256 vCPUs or more the APICs are in x2APIC
/// mode and vCPUs from 255 on get ID `i + 1` (reached through the extended
/// destination ID, [`FORMAT`]), since destination 0xFF is KVM's broadcast;
/// the IDs are then not the indices, so the chip looks them up in its
/// sorted index.
fn apic_id(i: usize) -> u32 {
    if i >= 255 { i as u32 + 1 } else { i as u32 }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    Unused,
    Level { storm: bool },
    Notifier,
    Rtc,
}

#[derive(Clone, Copy, Debug)]
struct Handler {
    vector: Vector,
    remaining: u32,
    sti: bool,
}

#[derive(Clone, Debug, Default)]
struct Guest {
    stack: Vec<Handler>,
    /// Vectors freed on this vCPU (newest last), not yet reused.
    freed: Vec<Vector>,
    /// The freed vector this vCPU's reusing MSI device took over.
    reused: Option<Vector>,
}

/// The simulator's Irqchip: one slot per vCPU, on the heap.
pub(crate) type SimChip = Irqchip<Box<[VcpuSlot]>>;

/// What one input did, with every delivery logged in order (the oracle
/// follows each instance).
type SimEffects = Effects<Vec<Delivery>>;

fn new_fx() -> SimEffects {
    Effects::with_log(Vec::new())
}

struct Sim {
    w: Workload,
    /// Number of vCPUs (`w.vcpus`).
    n: usize,
    chip: SimChip,
    oracle: Oracle,
    guests: Vec<Guest>,
    roles: [Role; 24],
    level_pins: Vec<u8>,
    special_pins: Vec<u8>,
    /// Current target vCPU of each pin.
    target: [usize; 24],
    /// Broken storm drivers: the line stays asserted.
    broken: PinSet,
    /// Pins masked with an interrupt in flight (`disable_irq`: vector kept).
    disabled: PinSet,
    timers: Vec<(u64, Pin)>,
    pin_roles: PinRoles,
    now: u64,
    c: Census,
    /// `LineAware`: vCPUs named in `Effects::exit` that have not exited yet.
    must_exit: Vec<bool>,
    /// `LineAware`: pins whose necessary EOI did not exit and whose remote
    /// IRR the chip has not been seen to clear yet.
    owed: [bool; 24],
    /// Per vCPU, the vectors acknowledged (the guest-visible trace).
    acks: Vec<Vec<u8>>,
    /// The drain phase has begun.
    draining: bool,
    /// `EOI_SIM_TRACE` set: every EOI and entry write is printed to stderr.
    trace: bool,
}

/// Runs one workload under one policy. `progress(done)` is called every 4096
/// events.
pub(crate) fn run_n(
    w: &Workload,
    policy: Policy,
    seed: u64,
    events: u64,
    progress: &mut dyn FnMut(u64),
) -> Census {
    run_hooked(w, policy, seed, events, progress, None).0
}

/// As [`run_n`], with the guest-visible trace.
pub(crate) fn run_traced(
    w: &Workload,
    policy: Policy,
    seed: u64,
    events: u64,
    progress: &mut dyn FnMut(u64),
) -> (Census, Vec<Vec<u8>>) {
    run_hooked(w, policy, seed, events, progress, None)
}

/// A snapshot/restore hook: after this many events, pass the Irqchip's
/// snapshot through the function and continue on a restored copy.
pub(crate) type RestoreHook<'a> = Option<(u64, &'a mut dyn FnMut(&mut SimChip))>;

/// Runs one workload under one policy, with an optional restore hook.
///
/// Panics unless `w.vcpus` is in 1..=4096.
pub(crate) fn run_hooked(
    w: &Workload,
    policy: Policy,
    seed: u64,
    events: u64,
    progress: &mut dyn FnMut(u64),
    mut hook: RestoreHook<'_>,
) -> (Census, Vec<Vec<u8>>) {
    let mut sim = Sim::new(w, policy);
    let mut rng = SplitMix64::new(seed ^ 0x5EED_0000_E0E1_u64);
    let total = w.weights.total().max(1);
    for e in 0..events {
        if let Some((at, swap)) = hook.as_mut()
            && *at == e
        {
            swap(&mut sim.chip);
        }
        sim.now = e;
        sim.fire_timers(false);
        let r = [
            rng.next_u64(),
            rng.next_u64(),
            rng.next_u64(),
            rng.next_u64(),
        ];
        sim.event(r, total);
        if e & 4095 == 4095 {
            progress(e + 1);
        }
    }
    progress(events);
    sim.drain();
    sim.finish(events)
}

impl Sim {
    fn new(w: &Workload, policy: Policy) -> Self {
        let mut roles = [Role::Unused; 24];
        let mut level_pins = Vec::new();
        for (k, &p) in LEVEL_ORDER.iter().take(w.level_pins as usize).enumerate() {
            roles[p as usize] = Role::Level {
                storm: k < w.storm_pins as usize,
            };
            level_pins.push(p);
        }
        let mut special_pins = Vec::new();
        let mut notifier_pins = PinSet::EMPTY;
        if w.notifier {
            roles[NOTIFIER_PIN as usize] = Role::Notifier;
            notifier_pins.insert(Pin::new(NOTIFIER_PIN));
            special_pins.push(NOTIFIER_PIN);
        }
        if w.rtc {
            roles[RTC_PIN as usize] = Role::Rtc;
            special_pins.push(RTC_PIN);
        }
        let mut config = IrqchipConfig {
            policy,
            ack_notifier_pins: notifier_pins,
            rtc_tracking: w.rtc,
            ..IrqchipConfig::default()
        };
        config.ioapic.msi_format = FORMAT;
        if w.directed_eoi {
            // The EOI register needs a version-0x20 I/O APIC; `TmrLevel`
            // (the default) honours SVR bit 12 as the SDM does.
            config.ioapic.version = IoapicVersion::V20;
        }
        let n = w.vcpus;
        assert!(
            (1..=eoi_exit::MAX_VCPUS).contains(&n),
            "sim: {n} vCPUs (a workload has 1..=4096)"
        );
        let mode = if n > 8 || w.directed_eoi {
            ApicMode::X2Apic
        } else {
            ApicMode::XApic
        };
        let storage: Box<[VcpuSlot]> = (0..n).map(|_| VcpuSlot::new()).collect();
        let chip = Irqchip::with_apics(config, storage, |i| {
            eoi_exit::lapic::LocalApic::new_enabled(ApicId::new(apic_id(i.index())), mode)
        });
        let mut sim = Sim {
            w: *w,
            n,
            chip,
            oracle: Oracle::new(n),
            guests: (0..n).map(|_| Guest::default()).collect(),
            roles,
            level_pins,
            special_pins,
            target: [0; 24],
            broken: PinSet::EMPTY,
            disabled: PinSet::EMPTY,
            timers: Vec::new(),
            pin_roles: PinRoles {
                notifier: notifier_pins,
                rtc: w.rtc.then_some(RTC_PIN),
            },
            now: 0,
            must_exit: std::vec![false; n],
            owed: [false; 24],
            acks: std::vec![Vec::new(); n],
            draining: false,
            trace: std::env::var_os("EOI_SIM_TRACE").is_some(),
            c: Census {
                workload: w.name,
                policy,
                ..Census::default()
            },
        };
        if w.directed_eoi {
            // The VMM advertises directed EOI (version bit 24; KVM does so
            // for x2APIC guests of a split irqchip), and the guest sets
            // SVR bit 12.
            for i in 0..n {
                let id = VcpuId::new(i as u16);
                let mut fx = new_fx();
                sim.chip
                    .write_lapic(id, LapicWrite::DirectedEoi(true), &mut fx);
                let svr = LapicWrite::Register {
                    offset: 0xF0,
                    value: 0x1FF | SVR_SUPPRESS_EOI_BROADCAST,
                };
                sim.chip.write_lapic(id, svr, &mut fx);
                sim.effects(fx);
            }
        }
        // Boot: level pins spread over the vCPUs, special pins on vCPU 0.
        for p in 0..24u8 {
            let (trigger, t) = match sim.roles[p as usize] {
                Role::Unused => continue,
                Role::Level { .. } => (TriggerMode::Level, p as usize % n),
                Role::Notifier | Role::Rtc => (TriggerMode::Edge, 0),
            };
            sim.target[p as usize] = t;
            let e = RedirectionEntry::fixed(pin_vector(p, 0), trigger, apic_id(t));
            let mut fx = new_fx();
            sim.chip.write_entry(Pin::new(p), e.0, &mut fx);
            sim.effects(fx);
        }
        sim
    }

    /// Pin `p`'s entry as the guest reads it (IOREGSEL, then IOWIN, for
    /// each half): under `LineAware` such a read resolves a deferred EOI.
    fn entry(&self, p: u8) -> RedirectionEntry {
        let half = |i: u8| {
            let mut fx = new_fx();
            let sel = u64::from(REG_REDTBL_BASE + 2 * p + i);
            self.chip.mmio_write(IOREGSEL, 4, sel, &mut fx);
            debug_assert!(fx == new_fx());
            self.chip.mmio_read(IOWIN, 4)
        };
        RedirectionEntry(half(0) | half(1) << 32)
    }

    fn tag(&self, pin: Option<Pin>, level: bool) -> Tag {
        Tag {
            pin,
            level,
            notifier: pin.is_some_and(|p| self.roles[p.index()] == Role::Notifier),
            rtc: pin.is_some_and(|p| self.roles[p.index()] == Role::Rtc),
        }
    }

    fn effects(&mut self, fx: SimEffects) {
        if fx.rtc_coalesced {
            self.c.rtc_coalesced += 1;
        }
        for id in fx.exit.iter() {
            self.c.exit_kicks += 1;
            self.must_exit[id.index()] = true;
        }
        if self.owed.iter().any(|&o| o) {
            // A deferred EOI's effect reaches the guest when the chip clears
            // the pin's remote IRR (and, with the line up, delivers again).
            let entries = *self.chip.ioapic().entries();
            for (p, (owed, e)) in self.owed.iter_mut().zip(entries.iter()).enumerate() {
                let delivered = fx.log.iter().any(|d| d.pin == Some(Pin::new(p as u8)));
                if *owed && (!e.remote_irr() || delivered) {
                    *owed = false;
                    self.c.lazy_resolutions += 1;
                }
            }
        }
        for d in fx.log.iter() {
            let tag = self.tag(d.pin, d.accepted.trigger == TriggerMode::Level);
            self.oracle
                .accept(d.vcpu.index(), d.accepted.vector, d.accepted.coalesced, tag);
            self.c.deliveries += 1;
            if self.trace {
                std::eprintln!(
                    "{:>8} accept vcpu{} {:?} pin={:?} {:?} coalesced={}",
                    self.now,
                    d.vcpu.index(),
                    d.accepted.vector,
                    d.pin.map(|p| p.get()),
                    d.accepted.trigger,
                    d.accepted.coalesced
                );
            }
        }
        for p in fx.deliver_later.iter() {
            self.c.storms_throttled += 1;
            self.timers.push((self.now + self.w.deliver_later_delay, p));
        }
    }

    fn fire_timers(&mut self, all: bool) {
        if self.timers.is_empty() {
            return;
        }
        let now = self.now;
        let mut due = Vec::new();
        self.timers.retain(|&(t, p)| {
            if all || t <= now {
                due.push(p);
                false
            } else {
                true
            }
        });
        for p in due {
            let mut fx = new_fx();
            self.chip.deliver_later_elapsed(p, &mut fx);
            self.effects(fx);
        }
    }

    fn event(&mut self, r: [u64; 4], total: u64) {
        let w = self.w.weights;
        let mut pick = r[0] % total;
        let kinds = [
            w.step, w.assert, w.msi, w.reroute, w.mask, w.rtc, w.notifier, w.storm,
        ];
        let mut kind = 0;
        for (k, &wt) in kinds.iter().enumerate() {
            if pick < wt as u64 {
                kind = k;
                break;
            }
            pick -= wt as u64;
        }
        match kind {
            0 => self.step((r[1] % self.n as u64) as usize, r[2]),
            1 => self.assert(r[1]),
            2 => self.msi((r[1] % self.n as u64) as usize, r[2], r[3]),
            3 => self.reroute(r[1], r[2], r[3]),
            4 => self.mask(r[1], r[2]),
            5 => self.pulse(RTC_PIN),
            6 => self.pulse(NOTIFIER_PIN),
            _ => self.storm(r[1], r[2]),
        }
    }

    // ---- devices --------------------------------------------------------

    fn assert(&mut self, r: u64) {
        if self.level_pins.is_empty() {
            return;
        }
        let p = Pin::new(self.level_pins[(r % self.level_pins.len() as u64) as usize]);
        if !self.chip.ioapic().state().line.contains(p) {
            let mut fx = new_fx();
            self.chip.set_line(p, true, &mut fx);
            self.effects(fx);
        }
    }

    fn pulse(&mut self, p: u8) {
        if self.roles[p as usize] == Role::Unused {
            return;
        }
        let pin = Pin::new(p);
        let mut fx = new_fx();
        self.chip.set_line(pin, true, &mut fx);
        self.effects(fx);
        let mut fx = new_fx();
        self.chip.set_line(pin, false, &mut fx);
        self.effects(fx);
    }

    fn storm(&mut self, r1: u64, r2: u64) {
        let n = self.w.storm_pins.min(self.level_pins.len() as u8) as u64;
        if n == 0 {
            return;
        }
        let p = Pin::new(self.level_pins[(r1 % n) as usize]);
        if !self.broken.contains(p) {
            self.broken.insert(p);
            let mut fx = new_fx();
            self.chip.set_line(p, true, &mut fx);
            self.effects(fx);
        } else if r2.is_multiple_of(1024) {
            // The driver is fixed: its next handler deasserts the line.
            self.broken.remove(p);
        }
    }

    /// A vector vCPU `v` may hand to one of its MSI devices: freed there,
    /// not routed there by an entry that is unmasked or has an interrupt in
    /// flight, and with no instance left on `v` (Linux frees a moved vector
    /// only after its last interrupt on the old CPU).
    fn take_freed(&mut self, v: usize) -> Option<Vector> {
        let entries = *self.chip.ioapic().entries();
        let g = &self.guests[v];
        let pos = g.freed.iter().rposition(|&x| {
            !self.oracle.outstanding(v, x)
                && !entries.iter().enumerate().any(|(p, e)| {
                    self.roles[p] != Role::Unused
                        && e.vector() == x
                        && self.target[p] == v
                        && (!e.masked() || self.in_flight(p as u8, *e))
                })
        })?;
        Some(self.guests[v].freed.remove(pos))
    }

    fn msi(&mut self, v: usize, r2: u64, r3: u64) {
        let native = msi_vector(r3 as u8, (r3 >> 8) as u8);
        let vector = if r2 % 100 < self.w.reuse_pct as u64 {
            // One MSI device per vCPU follows Linux's allocator onto the most
            // recently freed vector; it gives up the one it had.
            if let Some(x) = self.take_freed(v) {
                self.guests[v].reused = Some(x);
            }
            self.guests[v].reused.unwrap_or(native)
        } else {
            native
        };
        let msg = InterruptMessage {
            destination: Destination {
                id: apic_id(v),
                mode: DestinationMode::Physical,
            },
            delivery_mode: DeliveryMode::Fixed,
            vector,
            trigger: TriggerMode::Edge,
        };
        let mut fx = new_fx();
        let msi = Msi::from_message(&msg, FORMAT).expect("APIC IDs up to 256");
        self.chip.send_msi(&msi, &mut fx);
        self.effects(fx);
    }

    // ---- the guest's interrupt management -----------------------------------

    /// A vector for pin `p` on vCPU `t`: `cur` unless `change`, else another
    /// of the pin's four. Never one that `t`'s reusing MSI device holds or that
    /// has an instance of another source outstanding on `t` (Linux's allocator
    /// never hands out a vector in use). `None`: nothing fits, defer.
    fn allocate(&self, p: u8, t: usize, cur: Vector, change: bool, r: u64) -> Option<Vector> {
        let fits = |x: Vector| {
            self.guests[t].reused != Some(x)
                && [self.oracle.pending(t, x), self.oracle.in_service(t, x)]
                    .iter()
                    .flatten()
                    .all(|i| {
                        !i.plain
                            && (i.level_pin == p || i.notifier_pin == p || i.rtc && p == RTC_PIN)
                    })
        };
        if !change && fits(cur) {
            return Some(cur);
        }
        let cur_off = (cur.get() - 0x30) & 7;
        (0..4u8)
            .map(|k| pin_vector(p, cur_off + 1 + k + (r as u8 & 3)))
            .find(|&x| x != cur && fits(x))
    }

    /// Whether pin `p` has an interrupt the guest has not EOI'd yet: remote
    /// IRR for a level entry, an outstanding instance for an edge pin.
    fn in_flight(&self, p: u8, e: RedirectionEntry) -> bool {
        e.remote_irr() || self.oracle.from_pin_outstanding(p, e.vector())
    }

    fn write(&mut self, p: u8, e: RedirectionEntry) {
        if !e.masked() {
            // The vector is in use on its target again: no longer free there.
            let t = self.target[p as usize];
            self.guests[t].freed.retain(|&x| x != e.vector());
        }
        if self.trace {
            std::eprintln!("{:>8} write pin{p} {e:?}", self.now);
        }
        let mut fx = new_fx();
        self.chip.write_entry(Pin::new(p), e.0, &mut fx);
        self.effects(fx);
    }

    fn movable(&self) -> Vec<u8> {
        let mut pins = self.level_pins.clone();
        if self.w.reroute_special {
            pins.extend_from_slice(&self.special_pins);
        }
        pins
    }

    fn reroute(&mut self, r1: u64, r2: u64, r3: u64) {
        if self.n < 2 {
            return;
        }
        let pins = self.movable();
        if pins.is_empty() {
            return;
        }
        let first = pins[(r1 % pins.len() as u64) as usize];
        let from = self.target[first as usize];
        let mut to = (r2 % self.n as u64) as usize;
        if to == from {
            to = (to + 1) % self.n;
        }
        let group: Vec<u8> = if self.w.group_reroute {
            pins.iter()
                .copied()
                .filter(|&p| self.target[p as usize] == from)
                .collect()
        } else {
            std::vec![first]
        };
        for p in group {
            let e = self.entry(p);
            let change = r3 % 100 < self.w.vector_change_pct as u64;
            let Some(vector) = self.allocate(p, to, e.vector(), change, r3 >> 8) else {
                continue;
            };
            if vector != e.vector() && self.in_flight(p, e) {
                // Linux changes an IRQ's vector only once its interrupt has
                // been EOI'd (the move stays pending until then).
                continue;
            }
            let ne = RedirectionEntry::new(
                vector,
                DeliveryMode::Fixed,
                DestinationMode::Physical,
                e.polarity(),
                if e.is_level() {
                    TriggerMode::Level
                } else {
                    TriggerMode::Edge
                },
                e.masked(),
                apic_id(to),
            );
            self.guests[from].freed.push(e.vector());
            self.target[p as usize] = to;
            self.write(p, ne);
        }
    }

    fn mask(&mut self, r1: u64, r2: u64) {
        let pins = self.movable();
        if pins.is_empty() {
            return;
        }
        let p = pins[(r1 % pins.len() as u64) as usize];
        let e = self.entry(p);
        let t = self.target[p as usize];
        if !e.masked() {
            // Driver unload (free_irq): mask, and the vector is freed on its
            // vCPU. With an interrupt still in flight it is a disable_irq
            // instead: masked, the vector kept.
            if self.in_flight(p, e) {
                self.disabled.insert(Pin::new(p));
            } else {
                self.guests[t].freed.push(e.vector());
            }
            self.write(p, RedirectionEntry(e.0 | RedirectionEntry::MASK));
        } else {
            // Driver load: a fresh vector, unmasked. Not while an instance
            // is still in flight (Linux's free_irq waits for it).
            if self.in_flight(p, e) {
                return;
            }
            // enable_irq keeps the vector; a driver load allocates a new one.
            let fresh = !self.disabled.remove(Pin::new(p));
            let Some(vector) = self.allocate(p, t, e.vector(), fresh, r2) else {
                return;
            };
            let ne =
                RedirectionEntry((e.0 & !0xff & !RedirectionEntry::MASK) | vector.get() as u64);
            self.write(p, ne);
        }
    }

    // ---- the guest on one vCPU -------------------------------------------

    /// A VM entry of vCPU `v`. After an exit the VMM owed it
    /// (`Effects::exit`), `take_events` re-checks first, as documented.
    fn enter(&mut self, v: usize) {
        let id = VcpuId::new(v as u16);
        if self.must_exit[v] {
            self.must_exit[v] = false;
            let mut fx = new_fx();
            let _ = self.chip.take_events(id, false, false, &mut fx);
            self.effects(fx);
        }
        let _ = self.chip.vmcs_update(id);
    }

    fn step(&mut self, v: usize, r: u64) {
        // An owed exit lands before this step, or (half the time, when the
        // step is a handler's end) just after its EOI: the race window.
        let finishing = self.guests[v]
            .stack
            .last()
            .is_some_and(|t| t.remaining == 0);
        if !(self.must_exit[v] && finishing && r & (1 << 40) != 0) {
            self.enter(v);
        }
        match self.guests[v].stack.last_mut() {
            Some(top) if top.remaining > 0 => {
                top.remaining -= 1;
                if top.sti {
                    self.try_ack(v, r);
                }
            }
            Some(_) => self.finish_handler(v, r),
            None => self.try_ack(v, r),
        }
        if self.must_exit[v] {
            self.enter(v);
        }
    }

    fn try_ack(&mut self, v: usize, r: u64) {
        let Some(vector) = self.chip.ack(VcpuId::new(v as u16)) else {
            return;
        };
        self.oracle.ack(v, vector);
        self.acks[v].push(vector.get());
        let (lo, hi) = self.w.handler;
        let len = lo + (r % (hi.saturating_sub(lo) as u64 + 1)) as u32;
        let sti = (r >> 32) % 100 < self.w.nest_pct as u64;
        self.guests[v].stack.push(Handler {
            vector,
            remaining: len,
            sti,
        });
    }

    fn finish_handler(&mut self, v: usize, r: u64) {
        let Some(h) = self.guests[v].stack.pop() else {
            return;
        };
        // The driver quiets its device before the EOI (unless it is broken,
        // or, with `status_read_exit`, the status read finds it still
        // pending).
        let mut level_pin = None;
        if let Some(inst) = self.oracle.in_service(v, h.vector) {
            let p = inst.level_pin;
            if (p as usize) < 24 {
                level_pin = Some(p);
            }
            // Draining: every device is quiet and stays so.
            let live = self.w.status_read_exit && !self.draining;
            let pending = live && (r >> 8) % 100 < u64::from(self.w.still_pending_pct);
            if (p as usize) < 24 && !self.broken.contains(Pin::new(p)) && !pending {
                let mut fx = new_fx();
                self.chip.set_line(Pin::new(p), false, &mut fx);
                self.effects(fx);
            }
            if (p as usize) < 24 && self.w.status_read_exit {
                // The status read was a VM exit on this vCPU: it re-enters.
                self.enter(v);
                // A shared line: the other device asserts before the EOI.
                let shared = self
                    .level_pins
                    .iter()
                    .position(|&q| q == p)
                    .is_some_and(|k| k % 2 == 1);
                if live && shared && (r >> 16) % 100 < u64::from(self.w.shared_assert_pct) {
                    let mut fx = new_fx();
                    self.chip.set_line(Pin::new(p), true, &mut fx);
                    self.effects(fx);
                }
            }
        }
        self.eoi(v, h.vector);
        if self.w.directed_eoi && level_pin.is_some() {
            // A level handler's directed EOI: after the LAPIC EOI the guest
            // writes the vector to the I/O APIC's EOI register.
            let mut fx = new_fx();
            self.chip
                .mmio_write(IOEOI, 4, u64::from(h.vector.get()), &mut fx);
            self.c.ioapic_eoi_writes += 1;
            if self.trace {
                std::eprintln!("{:>8} ioapic eoi {:?}", self.now, h.vector);
            }
            self.effects(fx);
        }
    }

    fn eoi(&mut self, v: usize, expect: Vector) {
        let id = VcpuId::new(v as u16);
        let entries = *self.chip.ioapic().entries();
        let (vector, apic) = {
            let g = self.chip.vcpu(id).expect("vcpu");
            (g.apic.isr().highest(), g.apic)
        };
        if vector != Some(expect) {
            self.oracle.mismatches += 1;
        }
        let Some(vector) = vector else { return };
        let inst = self
            .oracle
            .retire(v, vector)
            .unwrap_or(super::oracle::Instance {
                level_pin: 0xFF,
                notifier_pin: 0xFF,
                rtc: false,
                plain: true,
            });
        // The LAPIC suppresses the broadcast (SVR bit 12 with version bit
        // 24; the simulator's `TmrLevel` forwarding honours it).
        let directed = apic
            .read_register(0xF0)
            .is_some_and(|r| r & SVR_SUPPRESS_EOI_BROADCAST != 0)
            && apic.read_register(0x30).is_some_and(|r| r & (1 << 24) != 0);
        let class =
            self.oracle
                .classify(v, vector, &inst, &apic, &entries, &self.pin_roles, directed);
        let suppressed = directed && Oracle::level_waits(&inst, vector, &entries);
        let mut fx = new_fx();
        let ge = self.chip.guest_eoi(id, &mut fx);
        if self.trace {
            std::eprintln!(
                "{:>8} eoi vcpu{v} {vector:?} {inst:?} {class:?} exit={} level={}",
                self.now,
                ge.intercepted,
                ge.level
            );
        }
        if ge.vector != Some(vector) {
            self.oracle.mismatches += 1;
        }
        self.c.eois += 1;
        if suppressed {
            self.c.suppressed += 1;
            if ge.intercepted {
                self.c.suppressed_exits += 1;
            }
            if ge.reached_ioapic {
                // A suppressed EOI must not clear remote IRR.
                self.oracle.mismatches += 1;
            }
        }
        match (ge.intercepted, class) {
            (true, Class::Necessary) => self.c.necessary += 1,
            (true, Class::Unavoidable) => self.c.unavoidable += 1,
            (true, Class::Avoidable) => {
                self.c.avoidable += 1;
                if entries.iter().any(|e| {
                    e.masked()
                        && e.vector() == vector
                        && e.message(FORMAT)
                            .is_some_and(|m| apic.matches(m.destination))
                }) {
                    self.c.avoidable_masked_route += 1;
                }
            }
            (false, Class::Necessary) if self.c.policy == Policy::LineAware => {
                // Deferred: lost only if the chip never resolves it.
                self.c.deferred += 1;
                if (inst.level_pin as usize) < 24 {
                    self.owed[inst.level_pin as usize] = true;
                } else {
                    self.c.lost += 1;
                }
            }
            (false, Class::Necessary) => self.c.lost += 1,
            (false, _) => {}
        }
        if ge.intercepted {
            self.c.exits += 1;
            if !ge.level {
                // An edge EOI forwarded to the I/O APIC. KVM ignores it for
                // remote IRR (kvm_ioapic_update_eoi_one returns early unless
                // the trigger mode is level); count the level entries that
                // `Irqchip::guest_eoi` nevertheless hands it to.
                self.c.edge_eoi_rirr_clears += entries
                    .iter()
                    .filter(|b| b.is_level() && b.remote_irr() && b.vector() == vector)
                    .count() as u64;
            }
        }
        self.effects(fx);
    }

    // ---- end of run ------------------------------------------------------

    /// Lines low, drivers fixed, timers run, the guest EOIs everything.
    fn drain(&mut self) {
        self.draining = true;
        self.broken = PinSet::EMPTY;
        for p in 0..24u8 {
            if self.roles[p as usize] != Role::Unused {
                let mut fx = new_fx();
                self.chip.set_line(Pin::new(p), false, &mut fx);
                self.effects(fx);
            }
        }
        for _round in 0..64 {
            self.fire_timers(true);
            let mut busy = false;
            for v in 0..self.n {
                for h in self.guests[v].stack.iter_mut() {
                    h.remaining = 0;
                }
                for _ in 0..1024 {
                    let pending = !self.guests[v].stack.is_empty()
                        || !self
                            .chip
                            .vcpu(VcpuId::new(v as u16))
                            .expect("vcpu")
                            .apic
                            .irr()
                            .is_empty();
                    if !pending {
                        break;
                    }
                    busy = true;
                    self.enter(v);
                    if self.guests[v].stack.is_empty() {
                        self.try_ack(v, 0);
                        if self.guests[v].stack.is_empty() {
                            break;
                        }
                    } else {
                        self.finish_handler(v, 0);
                    }
                }
            }
            if !busy && self.timers.is_empty() {
                break;
            }
        }
    }

    fn finish(mut self, events: u64) -> (Census, Vec<Vec<u8>>) {
        self.c.events = events;
        for v in 0..self.n {
            if self.must_exit[v] {
                self.enter(v);
            }
        }
        // A snapshot is event (d): it resolves every deferred EOI whose
        // effect was still pending (lines are low after the drain).
        let _ = self.chip.state::<Vec<_>>();
        let entries = *self.chip.ioapic().entries();
        for (owed, e) in self.owed.iter().zip(entries.iter()) {
            if *owed {
                if e.remote_irr() {
                    self.c.lost += 1;
                } else {
                    self.c.lazy_resolutions += 1;
                }
            }
        }
        for v in 0..self.n {
            let s = self.chip.vcpu(VcpuId::new(v as u16)).expect("vcpu").stats;
            self.c.rescans += u64::from(s.rescans);
            self.c.entries_scanned += u64::from(s.entries_scanned);
            self.c.vmcs_words += u64::from(s.vmcs_words);
        }
        self.c.stuck_remote_irr = self
            .chip
            .ioapic()
            .entries()
            .iter()
            .filter(|e| e.remote_irr())
            .count() as u64;
        self.c.oracle_mismatches = self.oracle.mismatches;
        (self.c, self.acks)
    }
}
