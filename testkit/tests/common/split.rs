//! A model of KVM's split irqchip built from this crate's pieces, shaped like
//! the kvm-oracle harness in `tools/kvm-oracle`: MSI GSI routes
//! installed with `KVM_SET_GSI_ROUTING` (which rescans every vCPU), the
//! in-kernel LAPICs, and per-vCPU EOI-exit maps that scan the routes of GSIs
//! below the 24 reserved I/O APIC pins.
//!
//! The LAPIC is a standard one (no auto-EOI at delivery, unlike this host's
//! PVM LAPIC); tests say where that changes a count.
#![allow(dead_code)]

use std::collections::BTreeMap;

use eoi_exit::exit_bitmap::{Accepted, ScanEntry, Source};
use eoi_exit::lapic::{Acceptance, ApicMode};
use eoi_exit::{ApicId, EoiExitMap, LocalApic, Msi, MsiFormat, Policy, TriggerMode, Vector};

/// KVM_CAP_SPLIT_IRQCHIP args[0] in the oracle.
pub const RESERVED_PINS: u32 = 24;

/// How KVM decodes the routes: the oracle does not enable the x2APIC API.
pub const FORMAT: MsiFormat = MsiFormat::Xapic;

pub struct Vcpu {
    pub apic: LocalApic,
    pub map: EoiExitMap,
    /// EOI exits per vector.
    pub exits: BTreeMap<u8, u32>,
    pub rescans: u32,
    /// Level EOIs the policy did not intercept.
    pub missed: u32,
}

pub struct SplitVm {
    pub policy: Policy,
    pub routes: BTreeMap<u32, Msi>,
    pub vcpus: Vec<Vcpu>,
}

pub fn msi(dest: u32, vector: u8, level: bool) -> Msi {
    eoi_exit_testkit::race::fixed_msi(dest, vector, level)
}

impl SplitVm {
    /// `n` vCPUs with x2APIC IDs 0..n, enabled, as the oracle's guest leaves them.
    pub fn new(policy: Policy, n: usize) -> Self {
        let vcpus = (0..n)
            .map(|i| Vcpu {
                apic: LocalApic::new_enabled(ApicId::new(i as u32), ApicMode::X2Apic),
                map: EoiExitMap::new(policy),
                exits: BTreeMap::new(),
                rescans: 0,
                missed: 0,
            })
            .collect();
        let mut vm = SplitVm {
            policy,
            routes: BTreeMap::new(),
            vcpus,
        };
        for i in 0..n {
            vm.rescan(i);
        }
        vm
    }

    pub fn rescan(&mut self, i: usize) {
        let v = &mut self.vcpus[i];
        v.rescans += 1;
        let routes = self
            .routes
            .iter()
            .filter(|&(&gsi, _)| gsi < RESERVED_PINS)
            .filter_map(|(_, route)| ScanEntry::from_msi_route(route, FORMAT));
        v.map.scan(&v.apic, routes);
    }

    fn rescan_all(&mut self) {
        for i in 0..self.vcpus.len() {
            self.rescan(i);
        }
    }

    /// KVM_SET_GSI_ROUTING with one route changed: every vCPU is rescanned.
    pub fn route(&mut self, gsi: u32, m: Msi) {
        self.routes.insert(gsi, m);
        self.rescan_all();
    }

    /// KVM_SET_GSI_ROUTING with nothing changed (still a full rescan).
    pub fn reinstall_routes(&mut self) {
        self.rescan_all();
    }

    fn deliver(&mut self, m: &Msi, source: Source) {
        let msg = m.message(FORMAT).expect("valid MSI");
        for i in 0..self.vcpus.len() {
            let v = &mut self.vcpus[i];
            if !v.apic.matches(msg.destination) {
                continue;
            }
            let (vector, trigger, coalesced) = match v.apic.accept(&msg) {
                Acceptance::Accepted { vector, trigger } => (vector, trigger, false),
                Acceptance::Coalesced { vector, trigger } => (vector, trigger, true),
                Acceptance::Ignored(_) => continue,
            };
            v.map.on_accept(
                &v.apic,
                Accepted {
                    vector,
                    trigger,
                    coalesced,
                    source,
                },
            );
        }
    }

    /// KVM_IRQ_LINE on a GSI: its route's MSI (a level route's instance needs its EOI).
    pub fn irq_line(&mut self, gsi: u32) {
        if let Some(m) = self.routes.get(&gsi).copied() {
            let level = m
                .message(FORMAT)
                .is_some_and(|x| x.trigger == TriggerMode::Level);
            let src = if level && gsi < RESERVED_PINS {
                Source::NeedsEoi
            } else {
                Source::Plain
            };
            self.deliver(&m, src);
        }
    }

    /// KVM_SIGNAL_MSI of an edge MSI.
    pub fn edge_msi(&mut self, dest: u32, vector: u8) {
        self.deliver(&msi(dest, vector, false), Source::Plain);
    }

    /// KVM_SET_LAPIC planting `vector` in ISR with TMR set (KVM then rescans).
    pub fn plant_isr(&mut self, i: usize, vector: u8) {
        eoi_exit_testkit::probe::plant(&mut self.vcpus[i].apic, Vector::new(vector), true, true);
        self.rescan(i);
    }

    /// One guest EOI on vCPU `i` (the highest ISR vector): counts the exit and
    /// runs the requested rescan after forwarding (KVM's order).
    pub fn guest_eoi(&mut self, i: usize) -> Option<u8> {
        let v = &mut self.vcpus[i];
        let eoi = v.apic.eoi()?;
        let exit = v.map.send_eoi(&v.apic, eoi.vector, eoi.level);
        if exit.intercepted {
            *v.exits.entry(eoi.vector.get()).or_default() += 1;
        }
        if exit.missed_level {
            v.missed += 1;
        }
        if exit.rescan {
            self.rescan(i);
        }
        Some(eoi.vector.get())
    }

    /// The guest takes every deliverable interrupt on vCPU `i`, one at a time,
    /// runs its handler and EOIs it (the oracle's handler(v) ... eoi(v)).
    pub fn run_handlers(&mut self, i: usize) {
        for _ in 0..512 {
            if self.vcpus[i].apic.ack().is_none() {
                return;
            }
            self.guest_eoi(i);
        }
        panic!("interrupt loop did not settle");
    }

    pub fn exits(&self, i: usize, vector: u8) -> u32 {
        self.vcpus[i].exits.get(&vector).copied().unwrap_or(0)
    }

    pub fn total_exits(&self, i: usize) -> u32 {
        self.vcpus[i].exits.values().sum()
    }
}
