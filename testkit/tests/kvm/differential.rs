//! Differential tests: the same scenario on real Linux KVM and on this crate's model, side
//! by side, compared after every step (ARCHITECTURE.md section 8).
//!
//! 1. **Split irqchip** (`KVM_CAP_SPLIT_IRQCHIP`, LAPIC in the kernel): the EOIs KVM forwards
//!    (`KVM_EXIT_IOAPIC_EOI`, per vCPU, in order) equal the ones the model forwards with
//!    `Policy::KvmHighestStale` (`common::split::SplitVm`), and the LAPIC IRR/ISR/TMR read
//!    with `KVM_GET_LAPIC` equal the model's `LocalApic`. The kvm-oracle scenarios, then
//!    seeded random cases.
//! 2. **In-kernel irqchip** (`KVM_CREATE_IRQCHIP`): after every step the I/O APIC
//!    redirection table (all 64 bits of each of the 24 entries: remote IRR, delivery status,
//!    mask, ...) and its `irr` read with `KVM_GET_IRQCHIP` equal the model's `Ioapic`, and
//!    every LAPIC's IRR/ISR/TMR equal the model's. Seeded random cases.
//!
//! At the end it prints exactly one line:
//! `kvm_differential: N scenarios compared, M disagreements`. Where `/dev/kvm` is unusable
//! it prints `kvm_differential: skipped: no usable /dev/kvm: <why>` and passes
//! (`support::skip_without_kvm`).
//!
//! # How the model side mirrors KVM (and this host)
//!
//! * **Deferred rescans.** KVM rescans a vCPU (`KVM_REQ_SCAN_IOAPIC`) at its next entry, after
//!   the `KVM_REQ_IOAPIC_EOI_EXIT` check. Requests come from `KVM_SET_GSI_ROUTING` (all
//!   vCPUs), `KVM_SET_LAPIC` (APIC map recalculation: all vCPUs), a vCPU enabling its APIC
//!   (all), and the EOI of the highest stale vector (that vCPU). The model keeps one
//!   "rescan pending" flag per vCPU and services it each time the driver runs that vCPU, so
//!   interrupts the host injected while the vCPU was stopped are in IRR at the scan, as in
//!   KVM.
//! * **Host quirk 1 (this PVM host's LAPIC EOIs at delivery).** Probed once at start: if a
//!   handler does not see its own vector in ISR, every delivery is modelled as
//!   `ack` + `eoi` (the delivery's own EOI, with its exit and rescan serviced at the
//!   handler's first `out`), and the handler's EOI write as a second `eoi`, which retires the
//!   next in-service vector if any (a planted one). On a standard LAPIC the probe says so and
//!   the model does `ack` + one `eoi`.
//! * **Host quirk 2 (requests raised during emulation wait for the next `KVM_RUN`).** Every
//!   step that EOIs ends with a ping (one round trip with IF=0), so no host action is ever
//!   taken between an EOI and the servicing of the requests it raised.
//! * **The `iret` window.** A handler returns with `iret` (IF=1) and the idle loop then does
//!   `cli`; where an emulated batch ends between the two, KVM injects the next pending
//!   interrupt. So a step that stops after `max` interrupts may see the guest take one more
//!   before its ping: the model then takes it too (it must be the model's next deliverable
//!   vector), see `ping_after_handlers`.
//! * **In-kernel EOI path.** KVM clears remote IRR only for EOIs of vectors whose TMR bit is
//!   set (and that are in the vCPU's `ioapic_handled_vectors`, which every case here keeps
//!   true: level entries target existing vCPUs, planted vectors are rescanned); the model
//!   calls `Ioapic::eoi` for `Eoi::level` EOIs.
//! * **Polarity.** KVM's in-kernel I/O APIC ignores the polarity bit: `KVM_IRQ_LINE` takes the
//!   logical level. `Ioapic::set_line` takes the electrical level, so the driver passes
//!   `logical != active_low`. Entries get random polarities.
//! * **Redirection writes** go through `KVM_GET_IRQCHIP` / `KVM_SET_IRQCHIP` (a whole-state
//!   restore: KVM zeroes `irr`/`irr_delivered` and re-injects the `irr` it was given). The
//!   model side is `Ioapic::restore` of the state KVM reports: the new entry (writable bits
//!   from the op, remote IRR and delivery status kept, remote IRR cleared when the entry
//!   becomes edge, as a guest write would), pin lines = KVM's reported `irr` (level pins:
//!   the line; edge pins: an edge latched while masked), with polarity applied. Before each
//!   write the driver checks that the model predicts KVM's reported `irr`.
//!
//! # Cases kept out on purpose (documented KVM behaviours the model deliberately differs
//! from, see the table in `src/ioapic/mod.rs`)
//!
//! * An EOI re-delivers an *edge* entry of the same vector whose line is high (KVM). The
//!   in-kernel generator never leaves an unmasked edge pin's line high after a step.
//! * A level entry whose delivery reaches no LAPIC keeps remote IRR clear (KVM). In-kernel
//!   level entries target existing vCPUs (or broadcast).
//! * The RTC pin (GSI 8) with `KVM_IRQ_LINE_STATUS` has KVM's coalescing tracking: unused.
//! * Asserting a line that is already high re-arms KVM's `irr` for an edge pin: the driver
//!   only changes lines (low->high, high->low).
//! * The kvm-oracle "no ping" host property measures where this host's emulated batches end,
//!   not a model property: it is not replayed here (`oracle_scenarios` has it).

use std::fmt;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::common::split::{SplitVm, msi};
use crate::support::*;
use eoi_exit::lapic::ApicMode;
use eoi_exit::{
    ApicId, Ioapic, IoapicEffects, LocalApic, Pin, Policy, RedirectionEntry, Vector, VectorSet,
};
use eoi_exit_testkit::probe::plant;
use eoi_exit_testkit::race::SplitMix64;

/// A deliberate model error, to check that the differential notices (manual use only):
/// `KVM_DIFF_MUTATE=legacy` (split: `KvmLegacy` instead of `KvmHighestStale`),
/// `immediate-rescan` (split: no deferred rescans), `no-ioapic-eoi` (in-kernel: EOIs never
/// reach the I/O APIC), `ignore-polarity` (in-kernel: polarity not applied to lines).
fn mutation() -> String {
    std::env::var("KVM_DIFF_MUTATE").unwrap_or_default()
}

fn base_seed() -> u64 {
    std::env::var("KVM_DIFF_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5EED_E01E)
}

fn env_count(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// Coverage counters for `KVM_DIFF_VERBOSE`: EOI exits, handled interrupts, steps that saw
/// remote IRR set, latched edges, coalesced level assertions.
static STATS: [std::sync::atomic::AtomicUsize; 7] =
    [const { std::sync::atomic::AtomicUsize::new(0) }; 7];
const ST_EXITS: usize = 0;
const ST_HANDLED: usize = 1;
const ST_REMOTE_IRR: usize = 2;
const ST_LATCHED: usize = 3;
const ST_STEPS: usize = 4;
const ST_WINDOW: usize = 5;
const ST_COALESCED: usize = 6;

fn stat(i: usize, n: usize) {
    STATS[i].fetch_add(n, Ordering::Relaxed);
}

const LEVEL: bool = true;
const EDGE: bool = false;
/// Broadcast destination (x2APIC broadcast quirk: 0xFF in an xAPIC-format message).
const BROADCAST: u8 = 0xFF;

// ---- outcome bookkeeping ---------------------------------------------------------------

/// A disagreement between KVM and the model in one case.
struct Disagreement {
    case: String,
    seed: Option<u64>,
    step: usize,
    what: String,
    ops: String,
}

impl fmt::Display for Disagreement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DISAGREEMENT in {}", self.case)?;
        if let Some(s) = self.seed {
            write!(f, " (seed {s:#x})")?;
        }
        write!(
            f,
            " after step {}: {}\n  ops: {}",
            self.step, self.what, self.ops
        )
    }
}

/// Known disagreements that are core-model bugs, each matched by a substring of the
/// disagreement text and explained. Empty: none found.
const KNOWN_DISAGREEMENTS: &[(&str, &str)] = &[];

#[derive(Default)]
struct Tally {
    compared: usize,
    split: usize,
    in_kernel: usize,
    disagreements: Vec<Disagreement>,
    known: Vec<(Disagreement, &'static str)>,
}

impl Tally {
    fn record(&mut self, r: Result<(), Disagreement>) {
        self.compared += 1;
        if let Err(d) = r {
            let text = d.to_string();
            match KNOWN_DISAGREEMENTS.iter().find(|(k, _)| text.contains(k)) {
                Some((_, why)) => self.known.push((d, why)),
                None => self.disagreements.push(d),
            }
        }
    }
}

// ---- host probe -------------------------------------------------------------------------

/// Does this host's LAPIC EOI at delivery (quirk 1)? One edge MSI, handled: the handler
/// reports whether it saw its own vector in ISR.
fn probe_auto_eoi() -> Result<bool> {
    let mut t = TestVm::new(IrqChipMode::Split, 1)?;
    t.vm.push_routes()?;
    t.vcpus[0].expect(Stop::Ready)?;
    t.vcpus[0].ping()?;
    t.vm.msi(0, 0x40, EDGE)?;
    t.vcpus[0].handle(0x40)?;
    t.vcpus[0].ping()?;
    Ok(t.vcpus[0].handlers_saw_own_isr == 0)
}

/// The eight 32-bit words of a LAPIC register page (IRR/ISR/TMR layout).
fn words(s: &VectorSet) -> [u32; 8] {
    let w = s.as_u64_words();
    core::array::from_fn(|i| (w[i / 2] >> (32 * (i % 2))) as u32)
}

fn fmt_words(w: &[u32; 8]) -> String {
    let set = VectorSet::from_u64_words(core::array::from_fn(|i| {
        u64::from(w[2 * i]) | u64::from(w[2 * i + 1]) << 32
    }));
    let v: Vec<String> = set.iter().map(|v| format!("{:#x}", v.get())).collect();
    format!("{{{}}}", v.join(","))
}

/// Compare one LAPIC's IRR/ISR/TMR with the model's.
fn compare_lapic(vcpu: usize, kvm: &LapicRegs, model: &LocalApic) -> Result<(), String> {
    let mut diffs = Vec::new();
    for (name, k, m) in [
        ("IRR", kvm.irr, words(model.irr())),
        ("ISR", kvm.isr, words(model.isr())),
        ("TMR", kvm.tmr, words(model.tmr())),
    ] {
        if k != m {
            diffs.push(format!(
                "vCPU{vcpu} {name}: KVM {} model {}",
                fmt_words(&k),
                fmt_words(&m)
            ));
        }
    }
    if diffs.is_empty() {
        Ok(())
    } else {
        Err(diffs.join("; "))
    }
}

// =========================================================================================
// Split irqchip
// =========================================================================================

/// One step of a split-irqchip case.
#[derive(Clone, Copy, Debug)]
enum SOp {
    /// Route `gsi` to an MSI (`vector` on APIC id `dest`, edge or level), then
    /// `KVM_SET_GSI_ROUTING`.
    Route {
        gsi: u32,
        dest: u8,
        vector: u8,
        level: bool,
    },
    /// Remove `gsi`'s route, then `KVM_SET_GSI_ROUTING`.
    Unroute { gsi: u32 },
    /// `KVM_SET_GSI_ROUTING` with the table unchanged (a rescan of every vCPU).
    Reinstall,
    /// `KVM_IRQ_LINE_STATUS` assert + deassert of `gsi`.
    Line { gsi: u32 },
    /// `KVM_SIGNAL_MSI`: an edge MSI.
    Msi { dest: u8, vector: u8 },
    /// `KVM_SET_LAPIC`: `vector` in service with TMR set (as a delivered level interrupt).
    PlantIsr { vcpu: usize, vector: u8 },
    /// `KVM_SET_LAPIC`: `vector` pending in IRR, TMR = `level`.
    PlantIrr {
        vcpu: usize,
        vector: u8,
        level: bool,
    },
    /// The idle loop writes one EOI, then a ping.
    Eoi { vcpu: usize },
    /// The guest takes up to `max` pending interrupts (handler, EOI), then a ping.
    Run { vcpu: usize, max: u8 },
    /// The guest takes one interrupt; inside its handler (after `out 0x11`) the host
    /// re-routes `gsi`; then the handler's EOI and a ping (the "natural seed").
    RunRerouteInHandler {
        vcpu: usize,
        gsi: u32,
        dest: u8,
        vector: u8,
        level: bool,
    },
    /// vCPU `vcpu` runs its setup (x2APIC enable, SVR) to "ready", then a ping: an APIC map
    /// change (the case must start it lazily).
    Start { vcpu: usize },
    /// vCPU0 halts inside `KVM_RUN` in a second thread while the host changes GSI5's route
    /// `n` times (ending with `gsi -> dest/vector/level`), then an edge MSI of `wake` wakes
    /// it; it runs that handler and pings.
    HaltedRouteStorm {
        n: u32,
        gsi: u32,
        dest: u8,
        vector: u8,
        level: bool,
        wake: u8,
    },
}

impl fmt::Display for SOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let lv = |l: bool| if l { "L" } else { "E" };
        match *self {
            SOp::Route {
                gsi,
                dest,
                vector,
                level,
            } => write!(f, "route(gsi{gsi}->{vector:#x}{}@{dest})", lv(level)),
            SOp::Unroute { gsi } => write!(f, "unroute(gsi{gsi})"),
            SOp::Reinstall => write!(f, "reinstall"),
            SOp::Line { gsi } => write!(f, "line(gsi{gsi})"),
            SOp::Msi { dest, vector } => write!(f, "msi({vector:#x}@{dest})"),
            SOp::PlantIsr { vcpu, vector } => write!(f, "v{vcpu}:plant-isr({vector:#x})"),
            SOp::PlantIrr {
                vcpu,
                vector,
                level,
            } => write!(f, "v{vcpu}:plant-irr({vector:#x}{})", lv(level)),
            SOp::Eoi { vcpu } => write!(f, "v{vcpu}:eoi"),
            SOp::Run { vcpu, max } => write!(f, "v{vcpu}:run({max})"),
            SOp::RunRerouteInHandler {
                vcpu,
                gsi,
                dest,
                vector,
                level,
            } => write!(
                f,
                "v{vcpu}:run-reroute-in-handler(gsi{gsi}->{vector:#x}{}@{dest})",
                lv(level)
            ),
            SOp::Start { vcpu } => write!(f, "v{vcpu}:start"),
            SOp::HaltedRouteStorm {
                n,
                gsi,
                dest,
                vector,
                level,
                wake,
            } => write!(
                f,
                "halted-route-storm({n}x, gsi{gsi}->{vector:#x}{}@{dest}, wake {wake:#x})",
                lv(level)
            ),
        }
    }
}

/// A split-irqchip case: vCPU count, which vCPUs start lazily, the ops.
#[derive(Clone)]
struct SplitCase {
    name: String,
    seed: Option<u64>,
    vcpus: usize,
    /// vCPU1 stays before "ready" until a [`SOp::Start`].
    lazy_vcpu1: bool,
    ops: Vec<SOp>,
}

fn render_ops<T: fmt::Display>(ops: &[T]) -> String {
    // Collapse runs of the same op: "msi(0x40@0) run(4) x100".
    let mut out: Vec<String> = Vec::new();
    let strs: Vec<String> = ops.iter().map(|o| o.to_string()).collect();
    let mut i = 0;
    while i < strs.len() {
        let mut done = false;
        for period in 1..=3 {
            let mut reps = 1;
            while i + (reps + 1) * period <= strs.len()
                && strs[i + reps * period..i + (reps + 1) * period] == strs[i..i + period]
            {
                reps += 1;
            }
            if reps >= 3 {
                out.push(format!("[{}] x{reps}", strs[i..i + period].join(" ")));
                i += reps * period;
                done = true;
                break;
            }
        }
        if !done {
            out.push(strs[i].clone());
            i += 1;
        }
    }
    out.join(" ")
}

/// The model side of a split-irqchip VM: `SplitVm` (KvmHighestStale) with KVM's deferred
/// rescans and, on this host, the LAPIC's EOI at delivery.
struct SplitModel {
    vm: SplitVm,
    /// A rescan is pending for the vCPU's next entry.
    pending: Vec<bool>,
    auto_eoi: bool,
    /// Forwarded EOIs per vCPU, in order.
    forwards: Vec<Vec<u8>>,
}

impl SplitModel {
    fn new(n: usize, auto_eoi: bool) -> Self {
        SplitModel {
            vm: SplitVm::new(
                if mutation() == "legacy" {
                    Policy::KvmLegacy
                } else {
                    Policy::KvmHighestStale
                },
                n,
            ),
            pending: vec![false; n],
            auto_eoi,
            forwards: vec![Vec::new(); n],
        }
    }

    /// vCPU `i` enters the guest: a pending rescan runs (after the EOI-exit check, which
    /// the model did at EOI time against the same bitmap).
    fn enter(&mut self, i: usize) {
        if std::mem::take(&mut self.pending[i]) {
            self.vm.rescan(i);
        }
    }

    fn request_all(&mut self) {
        self.pending.iter_mut().for_each(|p| *p = true);
        if mutation() == "immediate-rescan" {
            for i in 0..self.pending.len() {
                self.enter(i);
            }
        }
    }

    /// One EOI write (or this host's EOI at delivery) on vCPU `i`.
    fn eoi(&mut self, i: usize) {
        let v = &mut self.vm.vcpus[i];
        let Some(eoi) = v.apic.eoi() else { return };
        let exit = v.map.send_eoi(&v.apic, eoi.vector, eoi.level);
        if exit.intercepted {
            self.forwards[i].push(eoi.vector.get());
        }
        if exit.rescan {
            self.pending[i] = true;
        }
    }

    /// The guest on vCPU `i` takes one interrupt and runs its handler to its EOI write;
    /// `inside` runs at the handler's first `out` (the host acting on a stopped vCPU).
    fn take_one(&mut self, i: usize, inside: impl FnOnce(&mut Self)) -> Option<u8> {
        self.enter(i);
        let v = self.vm.vcpus[i].apic.ack()?;
        if self.auto_eoi {
            self.eoi(i);
        }
        inside(self); // stopped at out 0x11
        self.enter(i);
        self.eoi(i); // the handler's EOI write
        Some(v.get())
    }

    fn set_route(&mut self, gsi: u32, dest: u8, vector: u8, level: bool) {
        self.vm
            .routes
            .insert(gsi, msi(u32::from(dest), vector, level));
        self.request_all();
    }
}

/// Run one split case on KVM and on the model; compare after every step.
fn run_split_case(case: &SplitCase, auto_eoi: bool) -> Result<(), Disagreement> {
    let ops = render_ops(&case.ops);
    let fail = |step: usize, what: String| Disagreement {
        case: case.name.clone(),
        seed: case.seed,
        step,
        what,
        ops: ops.clone(),
    };
    let harness = |step: usize| {
        let fail = &fail;
        move |e: HarnessError| fail(step, format!("harness: {e}"))
    };

    let mut t = TestVm::new(IrqChipMode::Split, case.vcpus).map_err(harness(0))?;
    let mut m = SplitModel::new(case.vcpus, auto_eoi);
    t.vm.push_routes().map_err(harness(0))?;
    // Setup: every vCPU to "ready" (the last first), then a ping each so the re-scans
    // raised by the guest's own x2APIC/SVR writes are done (quirk 2).
    for i in (0..case.vcpus).rev() {
        if i == 1 && case.lazy_vcpu1 {
            continue;
        }
        t.vcpus[i].expect(Stop::Ready).map_err(harness(0))?;
    }
    for i in 0..case.vcpus {
        if i == 1 && case.lazy_vcpu1 {
            continue;
        }
        t.vcpus[i].ping().map_err(harness(0))?;
    }

    for (k, op) in case.ops.iter().enumerate() {
        let step = k + 1;
        stat(ST_STEPS, 1);
        split_step(&mut t, &mut m, *op).map_err(|e| match e {
            StepError::Harness(e) => fail(step, format!("at {op}: harness: {e}")),
            StepError::Differ(s) => fail(step, format!("at {op}: {s}")),
        })?;
        // Compare: forwarded EOIs per vCPU, in order; LAPIC registers.
        let events = t.trace().events();
        for i in 0..case.vcpus {
            let kvm: Vec<u8> = events
                .iter()
                .filter_map(|e| match *e {
                    Event::EoiExit { vcpu, vector } if vcpu == i => Some(vector),
                    _ => None,
                })
                .collect();
            if kvm != m.forwards[i] {
                return Err(fail(
                    step,
                    format!(
                        "after {op}: vCPU{i} forwarded EOIs: KVM {kvm:x?}, model {:x?}",
                        m.forwards[i]
                    ),
                ));
            }
            if i == 1 && case.lazy_vcpu1 && !started(&case.ops[..=k]) {
                continue;
            }
            let regs = t.vcpus[i].get_lapic_regs().map_err(harness(step))?;
            compare_lapic(i, &regs, &m.vm.vcpus[i].apic)
                .map_err(|s| fail(step, format!("after {op}: {s}")))?;
        }
    }
    stat(ST_EXITS, m.forwards.iter().map(Vec::len).sum());
    Ok(())
}

fn started(ops: &[SOp]) -> bool {
    ops.iter().any(|o| matches!(o, SOp::Start { vcpu: 1 }))
}

enum StepError {
    Harness(HarnessError),
    Differ(String),
}

impl From<HarnessError> for StepError {
    fn from(e: HarnessError) -> Self {
        StepError::Harness(e)
    }
}

/// End a run of a vCPU that has been handling interrupts with a ping (IF=0 round trip).
///
/// Between a handler's `iret` and the idle loop's `cli` the guest runs with IF=1. Where an
/// emulated batch ends in that window (host scheduling decides), KVM injects the next pending
/// interrupt at that entry: the guest really takes one more interrupt before it answers the
/// ping. `take` makes the model take it too (it must be the model's next deliverable vector).
fn ping_after_handlers(
    vcpu: &mut Vcpu,
    mut take: impl FnMut() -> Result<Option<u8>, String>,
) -> Result<(), StepError> {
    vcpu.command(Cmd::Ping)?;
    for _ in 0..32 {
        match vcpu.next_stop()? {
            Stop::Ping => return Ok(()),
            Stop::Handler(v) => {
                let want = take().map_err(StepError::Differ)?;
                if want != Some(v) {
                    return Err(StepError::Differ(format!(
                        "the guest took {v:#x} in the iret window; the model's next \
                         deliverable vector is {want:x?}"
                    )));
                }
                vcpu.expect(Stop::HandlerEoi(v))?;
                stat(ST_WINDOW, 1);
                stat(ST_HANDLED, 1);
            }
            other => {
                return Err(StepError::Differ(format!(
                    "expected the ping, got {other:?}"
                )));
            }
        }
    }
    Err(StepError::Differ(
        "interrupt storm in the iret window".into(),
    ))
}

fn split_step(t: &mut TestVm, m: &mut SplitModel, op: SOp) -> Result<(), StepError> {
    match op {
        SOp::Route {
            gsi,
            dest,
            vector,
            level,
        } => {
            t.vm.route_msi(gsi, dest, vector, level);
            t.vm.push_routes()?;
            m.set_route(gsi, dest, vector, level);
        }
        SOp::Unroute { gsi } => {
            t.vm.remove_route(gsi);
            t.vm.push_routes()?;
            m.vm.routes.remove(&gsi);
            m.request_all();
        }
        SOp::Reinstall => {
            t.vm.push_routes()?;
            m.request_all();
        }
        SOp::Line { gsi } => {
            t.vm.pulse(gsi)?;
            m.vm.irq_line(gsi);
        }
        SOp::Msi { dest, vector } => {
            t.vm.msi(dest, vector, EDGE)?;
            m.vm.edge_msi(u32::from(dest), vector);
        }
        SOp::PlantIsr { vcpu, vector } => {
            t.vcpus[vcpu].plant_in_service(vector)?;
            plant(&mut m.vm.vcpus[vcpu].apic, Vector::new(vector), true, true);
            m.request_all();
        }
        SOp::PlantIrr {
            vcpu,
            vector,
            level,
        } => {
            t.vcpus[vcpu]
                .set_lapic_bits(&[(ApicReg::Irr, vector, true), (ApicReg::Tmr, vector, level)])?;
            plant(
                &mut m.vm.vcpus[vcpu].apic,
                Vector::new(vector),
                false,
                level,
            );
            m.request_all();
        }
        SOp::Eoi { vcpu } => {
            m.enter(vcpu);
            t.vcpus[vcpu].guest_eoi_no_ping()?;
            m.eoi(vcpu);
            t.vcpus[vcpu].ping()?;
            m.enter(vcpu);
        }
        SOp::Run { vcpu, max } => {
            for _ in 0..max {
                let Some(v) = m.take_one(vcpu, |_| {}) else {
                    break;
                };
                t.vcpus[vcpu].handle(v)?;
                stat(ST_HANDLED, 1);
            }
            ping_after_handlers(&mut t.vcpus[vcpu], || Ok(m.take_one(vcpu, |_| {})))?;
            m.enter(vcpu);
        }
        SOp::RunRerouteInHandler {
            vcpu,
            gsi,
            dest,
            vector,
            level,
        } => {
            let Some(v) = m.take_one(vcpu, |m| m.set_route(gsi, dest, vector, level)) else {
                return Err(StepError::Differ(
                    "the model has nothing deliverable (bad case)".into(),
                ));
            };
            t.vcpus[vcpu].expect(Stop::Handler(v))?;
            t.vm.route_msi(gsi, dest, vector, level);
            t.vm.push_routes()?;
            t.vcpus[vcpu].expect(Stop::HandlerEoi(v))?;
            ping_after_handlers(&mut t.vcpus[vcpu], || Ok(m.take_one(vcpu, |_| {})))?;
            m.enter(vcpu);
        }
        SOp::Start { vcpu } => {
            t.vcpus[vcpu].expect(Stop::Ready)?;
            m.request_all(); // its APIC enable recalculates the map
            t.vcpus[vcpu].ping()?;
            m.enter(vcpu);
        }
        SOp::HaltedRouteStorm {
            n,
            gsi,
            dest,
            vector,
            level,
            wake,
        } => {
            halted_route_storm(t, n, (gsi, dest, vector, level), wake)?;
            for k in 0..n {
                m.vm.routes.insert(5, msi(k & 1, 0x40, LEVEL));
            }
            m.set_route(gsi, dest, vector, level);
            m.vm.edge_msi(0, wake);
            let got = m.take_one(0, |_| {});
            if got != Some(wake) {
                return Err(StepError::Differ(format!(
                    "the model takes {got:x?}, KVM took {wake:#x}"
                )));
            }
            ping_after_handlers(&mut t.vcpus[0], || Ok(m.take_one(0, |_| {})))?;
            m.enter(0);
        }
    }
    Ok(())
}

/// [`SOp::HaltedRouteStorm`] on KVM: vCPU0 blocks in `hlt` inside `KVM_RUN` in a second
/// thread; `KVM_RUN` must not return during the routing changes.
fn halted_route_storm(
    t: &mut TestVm,
    n: u32,
    (gsi, dest, vector, level): (u32, u8, u8, bool),
    wake: u8,
) -> Result<(), StepError> {
    let returns = t.vcpus[0].run_returns.clone();
    let before = returns.load(Ordering::SeqCst);
    let TestVm { vcpus, vm, .. } = t;
    let during = std::thread::scope(|s| -> Result<u64, StepError> {
        let v0 = &mut vcpus[0];
        let runner = s.spawn(move || -> Result<Vec<Stop>> {
            let limits = RunLimits {
                idle_after: None,
                deadline: Duration::from_secs(5),
            };
            let mut stops = Vec::new();
            loop {
                let st = v0.next_stop_with(limits)?;
                stops.push(st);
                if st == Stop::HandlerEoi(wake) || stops.len() > 8 {
                    return Ok(stops);
                }
            }
        });
        // The `in 0x16` (answered: halt) is its last exit before `sti; hlt`.
        let t0 = Instant::now();
        while returns.load(Ordering::SeqCst) == before && t0.elapsed() < Duration::from_secs(2) {
            std::thread::sleep(Duration::from_millis(1));
        }
        std::thread::sleep(Duration::from_millis(30));
        let base = returns.load(Ordering::SeqCst);
        for k in 0..n {
            vm.route_msi(5, (k & 1) as u8, 0x40, LEVEL);
            vm.push_routes_quiet()?;
        }
        vm.route_msi(gsi, dest, vector, level);
        vm.push_routes()?;
        std::thread::sleep(Duration::from_millis(30));
        let during = returns.load(Ordering::SeqCst) - base;
        vm.msi(0, wake, EDGE)?;
        let stops = runner.join().expect("vCPU thread panicked")?;
        if stops != [Stop::Handler(wake), Stop::HandlerEoi(wake)] {
            return Err(StepError::Differ(format!(
                "vCPU0 stops after waking: {stops:?}"
            )));
        }
        Ok(during)
    })?;
    if during != 0 {
        return Err(StepError::Differ(format!(
            "KVM_RUN returned {during} times during the routing changes (model: never)"
        )));
    }
    Ok(())
}

// ---- the kvm-oracle scenarios as op lists ----------------------------------------------

fn storm(ops: &mut Vec<SOp>, vcpu: usize, vector: u8, n: usize) {
    for _ in 0..n {
        ops.push(SOp::Msi {
            dest: vcpu as u8,
            vector,
        });
        ops.push(SOp::Run { vcpu, max: 4 });
    }
}

fn route(gsi: u32, dest: u8, vector: u8, level: bool) -> SOp {
    SOp::Route {
        gsi,
        dest,
        vector,
        level,
    }
}

const RUN0: SOp = SOp::Run { vcpu: 0, max: 4 };

fn oracle_scenarios() -> Vec<SplitCase> {
    const N: usize = 100;
    let mut cases = Vec::new();
    let mut add = |name: &str, vcpus: usize, lazy: bool, ops: Vec<SOp>| {
        cases.push(SplitCase {
            name: format!("oracle: {name}"),
            seed: None,
            vcpus,
            lazy_vcpu1: lazy,
            ops,
        })
    };

    let mut ops = vec![route(5, 0, 0x40, LEVEL)];
    for _ in 0..N {
        ops.extend([SOp::Line { gsi: 5 }, RUN0]);
    }
    storm(&mut ops, 0, 0x40, N);
    storm(&mut ops, 0, 0x41, N);
    add("control, GSI5 -> 0x40 level -> vCPU0", 1, false, ops);

    let mut ops = vec![route(5, 0, 0x40, EDGE), SOp::Line { gsi: 5 }, RUN0];
    storm(&mut ops, 0, 0x40, N);
    add("control, GSI5 -> 0x40 edge route", 1, false, ops);

    let mut ops = vec![route(23, 0, 0x41, LEVEL), route(24, 0, 0x40, LEVEL)];
    for _ in 0..N {
        ops.extend([SOp::Line { gsi: 23 }, RUN0, SOp::Line { gsi: 24 }, RUN0]);
    }
    add("pin range, GSI23 and GSI24", 1, false, ops);

    add(
        "host property, planted 0x40, edge 0x50 on top",
        1,
        false,
        vec![
            route(5, 0, 0x40, LEVEL),
            SOp::PlantIsr {
                vcpu: 0,
                vector: 0x40,
            },
            SOp::Msi {
                dest: 0,
                vector: 0x50,
            },
            RUN0,
            SOp::Eoi { vcpu: 0 },
        ],
    );

    let mut ops = vec![
        route(5, 0, 0x40, LEVEL),
        SOp::Line { gsi: 5 },
        SOp::RunRerouteInHandler {
            vcpu: 0,
            gsi: 5,
            dest: 1,
            vector: 0x40,
            level: LEVEL,
        },
    ];
    storm(&mut ops, 0, 0x40, N);
    add("seed (natural), reroute inside the handler", 1, false, ops);

    let mut ops = vec![
        route(5, 0, 0x40, LEVEL),
        SOp::PlantIsr {
            vcpu: 0,
            vector: 0x40,
        },
        route(5, 1, 0x40, LEVEL),
        SOp::Eoi { vcpu: 0 },
    ];
    storm(&mut ops, 0, 0x40, N);
    ops.extend([SOp::Line { gsi: 5 }, RUN0]);
    add("seed (planted), reroute to absent APIC id 1", 1, false, ops);

    let mut ops = vec![
        route(5, 0, 0x40, LEVEL),
        SOp::PlantIsr {
            vcpu: 0,
            vector: 0x40,
        },
        route(5, 1, 0x40, LEVEL),
        SOp::Eoi { vcpu: 0 },
    ];
    storm(&mut ops, 0, 0x40, N);
    ops.extend([SOp::Line { gsi: 5 }, SOp::Run { vcpu: 1, max: 4 }]);
    storm(&mut ops, 1, 0x40, N);
    add("seed (planted), 2 vCPUs, reroute to vCPU1", 2, false, ops);

    let mut ops = vec![
        route(5, 0, 0x40, LEVEL),
        SOp::Line { gsi: 5 },
        route(5, 1, 0x40, LEVEL),
        RUN0,
    ];
    storm(&mut ops, 0, 0x40, N);
    add("reroute while 0x40 only in IRR", 1, false, ops);

    let mut ops = vec![
        route(5, 0, 0x40, LEVEL),
        route(6, 0, 0x50, LEVEL),
        SOp::PlantIsr {
            vcpu: 0,
            vector: 0x40,
        },
        SOp::PlantIsr {
            vcpu: 0,
            vector: 0x50,
        },
        route(5, 1, 0x40, LEVEL),
        route(6, 1, 0x50, LEVEL),
        SOp::Eoi { vcpu: 0 },
        SOp::Eoi { vcpu: 0 },
    ];
    storm(&mut ops, 0, 0x40, N);
    storm(&mut ops, 0, 0x50, N);
    add("two stale in ISR", 1, false, ops);

    let mut ops = vec![
        route(5, 0, 0x40, LEVEL),
        route(6, 0, 0x50, LEVEL),
        SOp::PlantIsr {
            vcpu: 0,
            vector: 0x40,
        },
        SOp::Line { gsi: 6 },
        route(5, 1, 0x40, LEVEL),
        route(6, 1, 0x50, LEVEL),
        SOp::Eoi { vcpu: 0 },
        SOp::Msi {
            dest: 0,
            vector: 0x40,
        },
        RUN0,
    ];
    storm(&mut ops, 0, 0x40, N);
    storm(&mut ops, 0, 0x50, N);
    add(
        "stale ISR 0x40 + stale IRR 0x50, edge in between",
        1,
        false,
        ops,
    );

    let edge0 = SOp::Msi {
        dest: 0,
        vector: 0x40,
    };
    let mut ops = vec![
        route(5, 1, 0x40, LEVEL),
        edge0,
        RUN0,
        edge0,
        route(7, 0, 0x41, EDGE),
        RUN0,
    ];
    storm(&mut ops, 0, 0x40, N);
    add(
        "edge pending at an unrelated KVM_SET_GSI_ROUTING",
        1,
        false,
        ops,
    );

    let mut ops = vec![
        route(5, 1, 0x40, LEVEL),
        edge0,
        RUN0,
        edge0,
        SOp::Start { vcpu: 1 },
        RUN0,
    ];
    storm(&mut ops, 0, 0x40, N);
    add("edge pending while vCPU1 enables its APIC", 2, true, ops);

    let mut ops = vec![
        route(5, 0, 0x40, LEVEL),
        SOp::HaltedRouteStorm {
            n: 1000,
            gsi: 5,
            dest: 1,
            vector: 0x40,
            level: LEVEL,
            wake: 0x40,
        },
    ];
    storm(&mut ops, 0, 0x40, N);
    add("KVM_SET_GSI_ROUTING against a halted vCPU", 1, false, ops);

    cases
}

// ---- random split cases -----------------------------------------------------------------

const SPLIT_VECTORS: &[u8] = &[0x40, 0x41, 0x50, 0x51, 0x60, 0x70, 0xE0];
const SPLIT_GSIS: &[u32] = &[0, 3, 5, 6, 11, 16, 22, 23, 24, 25, 31];

fn random_split_case(seed: u64) -> SplitCase {
    let mut r = SplitMix64::new(seed);
    let vcpus = 1 + r.below(2) as usize;
    let dests: &[u8] = if vcpus == 1 {
        &[0, 0, 0, 1, BROADCAST]
    } else {
        &[0, 0, 1, 1, 2, BROADCAST]
    };
    let n_ops = 12 + r.below(20) as usize;
    let mut ops = Vec::with_capacity(n_ops);
    let mut routed: Vec<u32> = Vec::new();
    // Routes first so lines have somewhere to go.
    for _ in 0..1 + r.below(3) {
        let gsi = r.pick(SPLIT_GSIS);
        ops.push(route(
            gsi,
            r.pick(dests),
            r.pick(SPLIT_VECTORS),
            r.chance(70),
        ));
        routed.push(gsi);
    }
    while ops.len() < n_ops {
        let vcpu = r.below(vcpus as u64) as usize;
        let op = match r.below(100) {
            0..=14 => {
                let gsi = if !routed.is_empty() && r.chance(60) {
                    r.pick(&routed)
                } else {
                    r.pick(SPLIT_GSIS)
                };
                routed.push(gsi);
                route(gsi, r.pick(dests), r.pick(SPLIT_VECTORS), r.chance(70))
            }
            15..=17 => SOp::Unroute {
                gsi: r.pick(SPLIT_GSIS),
            },
            18..=20 => SOp::Reinstall,
            21..=37 if !routed.is_empty() => SOp::Line {
                gsi: r.pick(&routed),
            },
            21..=47 => SOp::Msi {
                dest: r.pick(dests),
                vector: r.pick(SPLIT_VECTORS),
            },
            48..=55 => SOp::PlantIsr {
                vcpu,
                vector: r.pick(SPLIT_VECTORS),
            },
            56..=60 => SOp::PlantIrr {
                vcpu,
                vector: r.pick(SPLIT_VECTORS),
                level: r.chance(50),
            },
            61..=72 => SOp::Eoi { vcpu },
            _ => SOp::Run {
                vcpu,
                max: 1 + r.below(4) as u8,
            },
        };
        ops.push(op);
    }
    // Drain: every vCPU takes what is pending and retires what is in service.
    for vcpu in 0..vcpus {
        ops.push(SOp::Run { vcpu, max: 8 });
        ops.push(SOp::Eoi { vcpu });
        ops.push(SOp::Eoi { vcpu });
        ops.push(SOp::Run { vcpu, max: 8 });
    }
    SplitCase {
        name: format!("split random #{seed:#x}"),
        seed: Some(seed),
        vcpus,
        lazy_vcpu1: false,
        ops,
    }
}

// =========================================================================================
// In-kernel irqchip
// =========================================================================================

/// A redirection entry as the ops write it (writable bits only).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Entry {
    vector: u8,
    level: bool,
    active_low: bool,
    masked: bool,
    dest: u8,
}

impl Entry {
    fn bits(self) -> u64 {
        u64::from(self.vector)
            | if self.active_low {
                RedirectionEntry::POLARITY_LOW
            } else {
                0
            }
            | if self.level {
                RedirectionEntry::LEVEL
            } else {
                0
            }
            | if self.masked {
                RedirectionEntry::MASK
            } else {
                0
            }
            | u64::from(self.dest) << 56
    }
}

/// One step of an in-kernel case.
#[derive(Clone, Copy, Debug)]
enum KOp {
    /// Write pin `pin`'s entry with `KVM_GET_IRQCHIP` + `KVM_SET_IRQCHIP`.
    Write { pin: u8, entry: Entry },
    /// `KVM_IRQ_LINE_STATUS(pin, level)`: a line change (low->high or high->low).
    Line { pin: u8, high: bool },
    /// Assert then deassert.
    Pulse { pin: u8 },
    /// The guest takes up to `max` interrupts, then a ping.
    Run { vcpu: usize, max: u8 },
    /// `KVM_SET_LAPIC`: `vector` in service with TMR set.
    PlantIsr { vcpu: usize, vector: u8 },
    /// The idle loop writes one EOI, then a ping.
    Eoi { vcpu: usize },
}

impl fmt::Display for KOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            KOp::Write { pin, entry: e } => write!(
                f,
                "pin{pin}={:#x}{}{}{}@{}",
                e.vector,
                if e.level { "L" } else { "E" },
                if e.active_low { "lo" } else { "" },
                if e.masked { "M" } else { "" },
                e.dest
            ),
            KOp::Line { pin, high } => write!(f, "line{pin}={}", u8::from(high)),
            KOp::Pulse { pin } => write!(f, "pulse{pin}"),
            KOp::Run { vcpu, max } => write!(f, "v{vcpu}:run({max})"),
            KOp::PlantIsr { vcpu, vector } => write!(f, "v{vcpu}:plant-isr({vector:#x})"),
            KOp::Eoi { vcpu } => write!(f, "v{vcpu}:eoi"),
        }
    }
}

/// The model side of an in-kernel irqchip: one `Ioapic` and the LAPICs.
struct KernelModel {
    io: Ioapic,
    apics: Vec<LocalApic>,
    auto_eoi: bool,
    /// Logical line levels (what `KVM_IRQ_LINE` was last told).
    lines: [bool; 24],
}

impl KernelModel {
    fn new(n: usize, auto_eoi: bool) -> Self {
        KernelModel {
            io: Ioapic::default(),
            apics: (0..n)
                .map(|i| LocalApic::new_enabled(ApicId::new(i as u32), ApicMode::X2Apic))
                .collect(),
            auto_eoi,
            lines: [false; 24],
        }
    }

    /// Act on the I/O APIC's actions: deliver every pin to the LAPICs it matches.
    fn act(&mut self, a: IoapicEffects) -> Result<(), String> {
        if !a.deliver_later.is_empty() {
            return Err("EOI storm throttle in a test case".into());
        }
        for pin in a.deliver.iter() {
            let msg = self
                .io
                .entry(pin)
                // KVM's in-kernel I/O APIC reads an 8-bit destination.
                .and_then(|e| e.message(eoi_exit::MsiFormat::Xapic))
                .ok_or("reserved delivery mode")?;
            for apic in &mut self.apics {
                if apic.matches(msg.destination)
                    && matches!(apic.accept(&msg), eoi_exit::Acceptance::Coalesced { .. })
                {
                    stat(ST_COALESCED, 1);
                }
            }
        }
        Ok(())
    }

    fn active_low(&self, pin: u8) -> bool {
        if mutation() == "ignore-polarity" {
            return false;
        }
        self.io.entries()[usize::from(pin)].0 & RedirectionEntry::POLARITY_LOW != 0
    }

    fn set_line(&mut self, pin: u8, high: bool) -> Result<(), String> {
        self.lines[usize::from(pin)] = high;
        let elec = high != self.active_low(pin);
        let a = self.io.set_line(Pin::new(pin), elec);
        self.act(a)
    }

    /// KVM's reported `irr` (`irr & ~irr_delivered`): level pins their line, edge pins an
    /// edge latched while masked.
    fn reported_irr(&self) -> u32 {
        let st = self.io.state();
        (0..24u8)
            .filter(|&p| {
                let pin = Pin::new(p);
                if st.entries[usize::from(p)].is_level() {
                    eoi_exit_testkit::probe::asserted_in(&st, pin)
                } else {
                    st.pending_edge.contains(pin)
                }
            })
            .fold(0, |acc, p| acc | 1 << p)
    }

    /// `KVM_SET_IRQCHIP` of KVM's own state with pin `pin`'s entry replaced: `restore` of
    /// that state (see the module docs).
    fn write(&mut self, pin: u8, new: u64) -> Result<(), String> {
        let irr = self.reported_irr();
        let mut st = self.io.state();
        st.entries[usize::from(pin)] = RedirectionEntry(new);
        for p in 0..24u8 {
            let pn = Pin::new(p);
            let logical = irr & (1 << p) != 0;
            let e = st.entries[usize::from(p)];
            let low = mutation() != "ignore-polarity" && e.0 & RedirectionEntry::POLARITY_LOW != 0;
            for (set, on) in [
                (&mut st.line, logical != low),
                (&mut st.pending_edge, logical && !e.is_level()),
            ] {
                if on {
                    set.insert(pn);
                } else {
                    set.remove(pn);
                }
            }
            self.lines[usize::from(p)] = logical;
        }
        let a = self.io.set_registers(&st);
        self.act(a)
    }

    fn eoi(&mut self, i: usize) -> Result<(), String> {
        if let Some(e) = self.apics[i].eoi()
            && e.level
            && mutation() != "no-ioapic-eoi"
        {
            let a = self.io.eoi(e.vector);
            self.act(a)?;
        }
        Ok(())
    }

    fn take_one(&mut self, i: usize) -> Result<Option<u8>, String> {
        let Some(v) = self.apics[i].ack() else {
            return Ok(None);
        };
        if self.auto_eoi {
            self.eoi(i)?;
        }
        self.eoi(i)?;
        Ok(Some(v.get()))
    }
}

#[derive(Clone)]
struct KernelCase {
    seed: u64,
    vcpus: usize,
    ops: Vec<KOp>,
}

/// The new raw entry for a redirection write: writable bits from the op, remote IRR and
/// delivery status kept, remote IRR cleared when the entry is edge (a guest write's rules).
fn merged_entry(old: u64, e: Entry) -> u64 {
    let ro = RedirectionEntry::REMOTE_IRR | 1 << 12; // delivery status, remote IRR
    let mut bits = (e.bits() & !ro) | (old & ro);
    if !e.level {
        bits &= !RedirectionEntry::REMOTE_IRR;
    }
    bits
}

fn run_kernel_case(case: &KernelCase, auto_eoi: bool) -> Result<(), Disagreement> {
    let ops = render_ops(&case.ops);
    let fail = |step: usize, what: String| Disagreement {
        case: format!("in-kernel random #{:#x}", case.seed),
        seed: Some(case.seed),
        step,
        what,
        ops: ops.clone(),
    };
    let harness = |step: usize| {
        let fail = &fail;
        move |e: HarnessError| fail(step, format!("harness: {e}"))
    };
    let mut t = TestVm::new(IrqChipMode::InKernel, case.vcpus).map_err(harness(0))?;
    let mut m = KernelModel::new(case.vcpus, auto_eoi);
    t.all_ready().map_err(harness(0))?;
    for v in &mut t.vcpus {
        v.ping().map_err(harness(0))?;
    }
    compare_kernel(&t, &m).map_err(|s| fail(0, format!("initial state: {s}")))?;

    for (k, op) in case.ops.iter().enumerate() {
        let step = k + 1;
        kernel_step(&mut t, &mut m, *op).map_err(|e| match e {
            StepError::Harness(e) => fail(step, format!("at {op}: harness: {e}")),
            StepError::Differ(s) => fail(step, format!("at {op}: {s}")),
        })?;
        compare_kernel(&t, &m).map_err(|s| fail(step, format!("after {op}: {s}")))?;
    }
    if t.vcpus.iter().any(|v| v.total_eoi_exits() != 0) {
        return Err(fail(
            case.ops.len(),
            "KVM_EXIT_IOAPIC_EOI with the in-kernel I/O APIC".into(),
        ));
    }
    Ok(())
}

fn compare_kernel(t: &TestVm, m: &KernelModel) -> Result<(), String> {
    let io = t.vm.get_irqchip_ioapic().map_err(|e| e.to_string())?;
    let mut diffs = Vec::new();
    for (pin, (k, me)) in io.redirtbl.iter().zip(m.io.entries().iter()).enumerate() {
        if *k != me.0 {
            diffs.push(format!(
                "pin{pin} entry: KVM {k:#018x} model {:#018x} (xor {:#x})",
                me.0,
                k ^ me.0
            ));
        }
    }
    stat(ST_STEPS, 1);
    if io
        .redirtbl
        .iter()
        .any(|e| e & RedirectionEntry::REMOTE_IRR != 0)
    {
        stat(ST_REMOTE_IRR, 1);
    }
    if !m.io.state().pending_edge.is_empty() {
        stat(ST_LATCHED, 1);
    }
    let irr = m.reported_irr();
    if io.irr != irr {
        diffs.push(format!(
            "I/O APIC irr: KVM {:#08x} model {irr:#08x}",
            io.irr
        ));
    }
    for (i, apic) in m.apics.iter().enumerate() {
        let regs = t.vcpus[i].get_lapic_regs().map_err(|e| e.to_string())?;
        if let Err(s) = compare_lapic(i, &regs, apic) {
            diffs.push(s);
        }
    }
    if diffs.is_empty() {
        Ok(())
    } else {
        Err(diffs.join("; "))
    }
}

fn kernel_step(t: &mut TestVm, m: &mut KernelModel, op: KOp) -> Result<(), StepError> {
    let differ = StepError::Differ;
    match op {
        KOp::Write { pin, entry } => {
            let chip = t.vm.get_irqchip_ioapic()?;
            let model_irr = m.reported_irr();
            if chip.irr != model_irr {
                return Err(differ(format!(
                    "I/O APIC irr before the write: KVM {:#x} model {model_irr:#x}",
                    chip.irr
                )));
            }
            let new = merged_entry(chip.redirtbl[usize::from(pin)], entry);
            t.vm.set_ioapic_redirection(usize::from(pin), new)?;
            m.write(pin, new).map_err(differ)?;
        }
        KOp::Line { pin, high } => {
            t.vm.irq_line(u32::from(pin), high)?;
            m.set_line(pin, high).map_err(differ)?;
        }
        KOp::Pulse { pin } => {
            t.vm.irq_line(u32::from(pin), true)?;
            m.set_line(pin, true).map_err(differ)?;
            t.vm.irq_line(u32::from(pin), false)?;
            m.set_line(pin, false).map_err(differ)?;
        }
        KOp::Run { vcpu, max } => {
            for _ in 0..max {
                let Some(v) = m.take_one(vcpu).map_err(differ)? else {
                    break;
                };
                t.vcpus[vcpu].handle(v)?;
                stat(ST_HANDLED, 1);
            }
            ping_after_handlers(&mut t.vcpus[vcpu], || m.take_one(vcpu))?;
        }
        KOp::PlantIsr { vcpu, vector } => {
            t.vcpus[vcpu].plant_in_service(vector)?;
            plant(&mut m.apics[vcpu], Vector::new(vector), true, true);
        }
        KOp::Eoi { vcpu } => {
            t.vcpus[vcpu].guest_eoi()?;
            m.eoi(vcpu).map_err(differ)?;
        }
    }
    Ok(())
}

const KERNEL_PINS: &[u8] = &[1, 3, 4, 5, 9, 10, 16, 23];
const KERNEL_VECTORS: &[u8] = &[0x40, 0x41, 0x50, 0x60, 0x61, 0x70];

/// A random in-kernel case. Invariants the generator keeps (see the module docs): lines
/// only change (never re-asserted while high); an unmasked edge pin's line is low after
/// every step; level entries target existing vCPUs or broadcast; no pin 8.
fn random_kernel_case(seed: u64) -> KernelCase {
    let mut r = SplitMix64::new(seed);
    let vcpus = 1 + r.below(2) as usize;
    let dests: Vec<u8> = if vcpus == 1 {
        vec![0, 0, 0, BROADCAST]
    } else {
        vec![0, 1, 0, 1, BROADCAST]
    };
    let pins: Vec<u8> = (0..2 + r.below(3)).map(|_| r.pick(KERNEL_PINS)).collect();
    let mut entries: [Option<Entry>; 24] = [None; 24];
    let mut lines = [false; 24];
    let mut ops = Vec::new();
    let write = |ops: &mut Vec<KOp>,
                 entries: &mut [Option<Entry>; 24],
                 lines: &mut [bool; 24],
                 pin: u8,
                 e: Entry| {
        let p = usize::from(pin);
        ops.push(KOp::Write { pin, entry: e });
        entries[p] = Some(e);
        if !e.level && !e.masked && lines[p] {
            ops.push(KOp::Line { pin, high: false });
            lines[p] = false;
        }
    };
    for &pin in &pins {
        let e = Entry {
            vector: r.pick(KERNEL_VECTORS),
            level: r.chance(65),
            active_low: r.chance(30),
            masked: r.chance(20),
            dest: r.pick(&dests),
        };
        write(&mut ops, &mut entries, &mut lines, pin, e);
    }
    let n_ops = ops.len() + 14 + r.below(20) as usize;
    while ops.len() < n_ops {
        let pin = r.pick(&pins);
        let p = usize::from(pin);
        let e = entries[p].expect("programmed");
        let vcpu = r.below(vcpus as u64) as usize;
        match r.below(100) {
            // Reprogram, mask/unmask, switch trigger, reroute.
            0..=7 => {
                let e = Entry {
                    vector: r.pick(KERNEL_VECTORS),
                    level: r.chance(65),
                    active_low: r.chance(30),
                    masked: r.chance(20),
                    dest: r.pick(&dests),
                };
                write(&mut ops, &mut entries, &mut lines, pin, e);
            }
            8..=15 => {
                let e = Entry {
                    masked: !e.masked,
                    ..e
                };
                write(&mut ops, &mut entries, &mut lines, pin, e);
            }
            16..=21 => {
                let e = Entry {
                    level: !e.level,
                    ..e
                };
                write(&mut ops, &mut entries, &mut lines, pin, e);
            }
            22..=27 => {
                let e = Entry {
                    dest: r.pick(&dests),
                    ..e
                };
                write(&mut ops, &mut entries, &mut lines, pin, e);
            }
            28..=31 => {
                let e = Entry {
                    active_low: !e.active_low,
                    ..e
                };
                write(&mut ops, &mut entries, &mut lines, pin, e);
            }
            // Lines.
            32..=51 => {
                if lines[p] {
                    ops.push(KOp::Line { pin, high: false });
                    lines[p] = false;
                } else if e.level || e.masked {
                    ops.push(KOp::Line { pin, high: true });
                    lines[p] = true;
                } else {
                    ops.push(KOp::Pulse { pin });
                }
            }
            52..=59 if !lines[p] => ops.push(KOp::Pulse { pin }),
            52..=59 => {
                ops.push(KOp::Line { pin, high: false });
                lines[p] = false;
            }
            60..=67 => ops.push(KOp::PlantIsr {
                vcpu,
                vector: r.pick(KERNEL_VECTORS),
            }),
            68..=77 => ops.push(KOp::Eoi { vcpu }),
            _ => ops.push(KOp::Run {
                vcpu,
                max: 1 + r.below(3) as u8,
            }),
        }
    }
    for vcpu in 0..vcpus {
        ops.push(KOp::Run { vcpu, max: 4 });
        ops.push(KOp::Eoi { vcpu });
    }
    KernelCase { seed, vcpus, ops }
}

// =========================================================================================

#[test]
fn kvm_differential() {
    if skip_without_kvm("kvm_differential") {
        return;
    }
    let start = Instant::now();
    let auto_eoi = probe_auto_eoi().unwrap_or_else(|e| panic!("host probe: {e}"));
    let n_split = env_count("KVM_DIFF_SPLIT_CASES", 200);
    let n_kernel = env_count("KVM_DIFF_KERNEL_CASES", 120);
    let seed = base_seed();
    let mut tally = Tally::default();

    for case in oracle_scenarios() {
        tally.record(run_split_case(&case, auto_eoi));
        tally.split += 1;
    }
    for k in 0..n_split as u64 {
        let case = random_split_case(seed.wrapping_add(k));
        tally.record(run_split_case(&case, auto_eoi));
        tally.split += 1;
    }
    for k in 0..n_kernel as u64 {
        let case = random_kernel_case(seed.wrapping_add(0x1_0000 + k));
        tally.record(run_kernel_case(&case, auto_eoi));
        tally.in_kernel += 1;
    }

    for d in &tally.disagreements {
        println!("{d}");
    }
    for (d, why) in &tally.known {
        println!("known disagreement (core-model bug, see KNOWN_DISAGREEMENTS): {why}\n  {d}");
    }
    if std::env::var_os("KVM_DIFF_VERBOSE").is_some() {
        eprintln!(
            "kvm_differential: {} split ({} oracle) + {} in-kernel, host LAPIC EOIs at delivery: {auto_eoi}, {:?}",
            tally.split,
            tally.split - n_split,
            tally.in_kernel,
            start.elapsed()
        );
        let st: Vec<usize> = STATS.iter().map(|a| a.load(Ordering::Relaxed)).collect();
        eprintln!(
            "kvm_differential: {} steps, {} split EOI exits, {} interrupts handled, \
             {} in-kernel states with remote IRR set, {} with a latched edge, \
             {} interrupts taken in the iret window, {} in-kernel deliveries coalesced in IRR",
            st[ST_STEPS],
            st[ST_EXITS],
            st[ST_HANDLED],
            st[ST_REMOTE_IRR],
            st[ST_LATCHED],
            st[ST_WINDOW],
            st[ST_COALESCED]
        );
    }
    println!(
        "kvm_differential: {} scenarios compared, {} disagreements",
        tally.compared,
        tally.disagreements.len() + tally.known.len()
    );
    assert!(
        tally.disagreements.is_empty(),
        "{} unexpected disagreement(s) between KVM and the model (see above)",
        tally.disagreements.len()
    );
}
