//! Named workloads: the rates at which the simulator's actors act.

/// Relative weights of the event kinds. Each simulated event picks one kind
/// with probability `weight / sum of weights`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Weights {
    /// One guest step on a random vCPU: run a handler for one step, finish it
    /// (driver work, then EOI), or take an interrupt.
    pub step: u32,
    /// A device raises its INTx (level) line.
    pub assert: u32,
    /// A device sends an edge MSI.
    pub msi: u32,
    /// irqbalance moves a pin to another vCPU.
    pub reroute: u32,
    /// A driver is unloaded (pin masked, vector freed) or loaded (pin unmasked
    /// with a freshly allocated vector).
    pub mask: u32,
    /// The RTC ticks (an edge on pin 8).
    pub rtc: u32,
    /// The ack-notifier device ticks (an edge on pin 0).
    pub notifier: u32,
    /// A storm-prone driver breaks (keeps its line asserted) or is fixed.
    pub storm: u32,
}

impl Weights {
    pub(crate) fn total(&self) -> u64 {
        [
            self.step,
            self.assert,
            self.msi,
            self.reroute,
            self.mask,
            self.rtc,
            self.notifier,
            self.storm,
        ]
        .iter()
        .map(|&w| w as u64)
        .sum()
    }
}

/// One named workload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Workload {
    /// Short name (`--workload NAME`).
    pub name: &'static str,
    /// What it exercises, in one line.
    pub doc: &'static str,
    /// Number of vCPUs, 1..=256 (more than 8 run their APICs in x2APIC mode).
    pub vcpus: usize,
    /// Default number of events.
    pub events: u64,
    /// Level-triggered INTx pins driven by devices (taken from 16..=23, then
    /// 1..=7, then 9..=15; pins 0 and 8 are reserved for the notifier and RTC).
    pub level_pins: u8,
    /// The first `storm_pins` level pins have drivers that can keep the line
    /// asserted (EOI storm).
    pub storm_pins: u8,
    /// Pin 0 is an edge pin with an ack notifier (KVM's PIT reinjection or an
    /// assigned device).
    pub notifier: bool,
    /// Pin 8 is the RTC, with KVM's RTC EOI tracking.
    pub rtc: bool,
    /// Handler length in guest steps, inclusive range.
    pub handler: (u32, u32),
    /// Percent of handlers that re-enable interrupts (and so may nest).
    pub nest_pct: u32,
    /// Percent of MSIs that use a vector the guest freed on that vCPU (after a
    /// reroute or a driver unload), once no instance of it is left there.
    pub reuse_pct: u32,
    /// Percent of reroutes that also allocate a new vector (done, as Linux
    /// does, only when the entry's remote IRR is clear).
    pub vector_change_pct: u32,
    /// Reroutes evacuate a vCPU: every level pin routed to the chosen vCPU
    /// moves at once (several stale vectors at the same time).
    pub group_reroute: bool,
    /// The notifier and RTC pins are rerouted and masked too.
    pub reroute_special: bool,
    /// The guest uses directed EOI: x2APIC, directed EOI advertised, SVR
    /// bit 12 set, a version-0x20 I/O APIC, and every level handler ends
    /// with the LAPIC EOI and then a write of its vector to the I/O APIC's
    /// EOI register (Linux's `eoi_ioapic_pin` order).
    pub directed_eoi: bool,
    /// Guest steps the VMM's EOI-storm timer takes to fire (KVM: 10 ms).
    pub deliver_later_delay: u64,
    /// INTx drivers (workload `intx`): a level handler first reads its
    /// device's status register, a VM exit on that vCPU where the device
    /// model lowers the line (and the vCPU re-enters), then EOIs.
    pub status_read_exit: bool,
    /// Percent of those status reads that find the device still pending:
    /// the line stays asserted through the EOI.
    pub still_pending_pct: u32,
    /// Percent of handlers on a shared line (every other level pin has a
    /// second device) during which the other device asserts the line
    /// between the status read and the EOI.
    pub shared_assert_pct: u32,
    /// Event weights.
    pub weights: Weights,
}

const BASE: Workload = Workload {
    name: "",
    doc: "",
    vcpus: 8,
    events: 200_000,
    level_pins: 4,
    storm_pins: 0,
    notifier: false,
    rtc: false,
    handler: (0, 4),
    nest_pct: 10,
    reuse_pct: 50,
    vector_change_pct: 0,
    group_reroute: false,
    reroute_special: false,
    directed_eoi: false,
    deliver_later_delay: 200,
    status_read_exit: false,
    still_pending_pct: 0,
    shared_assert_pct: 0,
    weights: Weights {
        step: 80,
        assert: 8,
        msi: 8,
        reroute: 1,
        mask: 0,
        rtc: 0,
        notifier: 0,
        storm: 0,
    },
};

/// The mixed workload, which `directed-eoi` repeats with directed EOI.
const MIXED: Workload = Workload {
    name: "mixed",
    doc: "all of the above at realistic rates on 8 vCPUs",
    level_pins: 6,
    storm_pins: 1,
    notifier: true,
    rtc: true,
    reroute_special: true,
    vector_change_pct: 25,
    weights: Weights {
        step: 80,
        assert: 8,
        msi: 8,
        reroute: 1,
        mask: 1,
        rtc: 2,
        notifier: 2,
        storm: 1,
    },
    ..BASE
};

/// 256 vCPUs, x2APIC: the `large` workload (the mixed one, scaled up, with
/// twice the reroutes).
const LARGE: Workload = Workload {
    name: "large",
    doc: "256 vCPUs (x2APIC), 22 level pins plus the notifier and RTC, 10^6 events of the mixed kind",
    vcpus: 256,
    events: 1_000_000,
    level_pins: 22,
    weights: Weights {
        reroute: 2,
        ..MIXED.weights
    },
    ..MIXED
};

/// Every workload, in census order.
pub const WORKLOADS: [Workload; 12] = [
    Workload {
        name: "seed",
        doc: "the Linux 6.16 patch's scenario: a level pin moves while in service, its old vector is reused for an MSI",
        vcpus: 2,
        level_pins: 1,
        reuse_pct: 90,
        weights: Weights {
            reroute: 1,
            ..BASE.weights
        },
        ..BASE
    },
    Workload {
        name: "irqbalance",
        doc: "irqbalance moves 8 level pins between 8 vCPUs often (a quarter with a new vector); MSIs reuse freed vectors",
        level_pins: 8,
        vector_change_pct: 25,
        weights: Weights {
            reroute: 4,
            ..BASE.weights
        },
        ..BASE
    },
    Workload {
        name: "lower-stale-first",
        doc: "vCPUs are evacuated with several level vectors in flight and long non-nesting handlers: a lower stale vector retires before the highest",
        level_pins: 8,
        handler: (2, 12),
        nest_pct: 0,
        group_reroute: true,
        weights: Weights {
            assert: 16,
            msi: 4,
            reroute: 2,
            ..BASE.weights
        },
        ..BASE
    },
    Workload {
        name: "masked-level",
        doc: "drivers unload (level pin masked, its vector freed and reused by MSIs) and reload with a new vector",
        level_pins: 8,
        weights: Weights {
            reroute: 0,
            mask: 2,
            ..BASE.weights
        },
        ..BASE
    },
    Workload {
        name: "notifier",
        doc: "an edge pin with an ack notifier (PIT-style) ticks, moves and is masked; MSIs reuse its freed vectors",
        level_pins: 2,
        notifier: true,
        reroute_special: true,
        weights: Weights {
            notifier: 10,
            mask: 1,
            ..BASE.weights
        },
        ..BASE
    },
    Workload {
        name: "rtc",
        doc: "the RTC (pin 8, KVM EOI tracking) ticks, moves and is masked; MSIs reuse its freed vectors",
        level_pins: 2,
        rtc: true,
        reroute_special: true,
        weights: Weights {
            rtc: 10,
            mask: 1,
            ..BASE.weights
        },
        ..BASE
    },
    Workload {
        name: "storm",
        doc: "a driver keeps its level line asserted: EOI storms until KVM's throttle defers the pin",
        vcpus: 2,
        events: 400_000,
        level_pins: 2,
        storm_pins: 1,
        handler: (0, 1),
        weights: Weights {
            step: 80,
            assert: 5,
            msi: 5,
            reroute: 1,
            storm: 1,
            ..BASE.weights
        },
        ..BASE
    },
    MIXED,
    Workload {
        name: "directed-eoi",
        doc: "the mixed workload with directed EOI (SVR bit 12, I/O APIC EOI register after the LAPIC EOI): level EOIs need no exit",
        directed_eoi: true,
        ..MIXED
    },
    LARGE,
    Workload {
        name: "large-1024",
        doc: "the large workload on 1024 vCPUs (x2APIC IDs up to 1024, KVM's vCPU limit on this host)",
        vcpus: 1024,
        ..LARGE
    },
    Workload {
        name: "intx",
        doc: "legacy INTx: handlers read the device status (an exit that lowers the line) before the EOI; 10% still pending; shared lines reassert",
        vcpus: 4,
        level_pins: 8,
        status_read_exit: true,
        still_pending_pct: 10,
        shared_assert_pct: 10,
        handler: (1, 4),
        weights: Weights {
            step: 80,
            assert: 16,
            msi: 4,
            reroute: 1,
            mask: 0,
            rtc: 0,
            notifier: 0,
            storm: 0,
        },
        ..BASE
    },
];

/// The workload called `name`.
pub fn workload(name: &str) -> Option<&'static Workload> {
    WORKLOADS.iter().find(|w| w.name == name)
}
