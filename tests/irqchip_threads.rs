//! The real `Irqchip` called from several threads at once, as a VMM does: one
//! thread per vCPU (take interrupts, EOI, load the VMCS, write TPR and LDR)
//! and device threads (lines, MSIs, redirection writes over MMIO, snapshots
//! and clones). Every thread finishes (no deadlock: the test would hang), and
//! afterwards, with every line low and every vCPU drained, the chip is in a
//! state the single-threaded contract allows: the snapshot validates, no
//! level entry's remote IRR is left set without an instance in flight, and
//! every VMCS, loaded with only the reported words, equals its bitmap.

use std::sync::Arc;
use std::thread;

use eoi_exit::ioapic::{IOREGSEL, IOWIN, REG_REDTBL_BASE};
use eoi_exit::irqchip::{IrqchipState, VcpuState};
use eoi_exit::{
    ApicMode, DeliveryMode, Destination, DestinationMode, Effects, InterruptMessage, Irqchip,
    IrqchipConfig, LapicWrite, Pin, Policy, RedirectionEntry, TriggerMode, VcpuId, VcpuSlot,
    Vector,
};

const VCPUS: usize = 4;
const PINS: u8 = 6;
/// Operations per thread (the test runs a few hundred thousand in total).
const OPS: u32 = 40_000;

type Chip = Irqchip<Box<[VcpuSlot]>>;

/// SplitMix64: a tiny deterministic generator per thread.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn level_entry(pin: u8, dest: u32) -> u64 {
    RedirectionEntry::fixed(Vector::new(0x40 + pin), TriggerMode::Level, dest).0
}

/// One vCPU's thread: the guest takes and EOIs interrupts, the VMM loads
/// the VMCS before "entry", and now and then the guest writes TPR or LDR.
fn vcpu_thread(chip: Arc<Chip>, i: usize, hw: Arc<[std::sync::Mutex<[u64; 4]>]>) {
    let id = VcpuId::new(i as u16);
    let mut rng = Rng(i as u64 + 1);
    let mut fx = Effects::new();
    for _ in 0..OPS {
        match rng.below(10) {
            0..=3 => {
                let _ = chip.ack(id);
            }
            4..=6 => {
                let _ = chip.guest_eoi(id, &mut fx);
            }
            7 | 8 => {
                if let Some(u) = chip.vmcs_update(id) {
                    let mut words = hw[i].lock().unwrap();
                    for (n, w) in u.changed() {
                        words[n] = w;
                    }
                }
            }
            _ => {
                let write = if rng.below(2) == 0 {
                    LapicWrite::Register {
                        offset: 0x80,
                        value: rng.below(0x30) as u32,
                    }
                } else {
                    // Flat logical ID bit i, unchanged: still an addressing
                    // write, so every vCPU is rescanned.
                    LapicWrite::Register {
                        offset: 0xD0,
                        value: 1 << (24 + i),
                    }
                };
                chip.write_lapic(id, write, &mut fx);
            }
        }
        fx.clear();
    }
}

/// A device thread: raises and lowers lines, sends MSIs, retargets entries
/// through IOREGSEL/IOWIN, and takes snapshots and clones.
fn device_thread(chip: Arc<Chip>, seed: u64) {
    let mut rng = Rng(seed);
    let mut fx = Effects::new();
    for _ in 0..OPS {
        let pin = rng.below(u64::from(PINS)) as u8;
        match rng.below(12) {
            0..=4 => {
                chip.set_line(Pin::new(pin), rng.below(2) == 0, &mut fx);
            }
            5 | 6 => {
                let msg = InterruptMessage {
                    destination: Destination {
                        id: rng.below(VCPUS as u64) as u32,
                        mode: DestinationMode::Physical,
                    },
                    delivery_mode: if rng.below(3) == 0 {
                        DeliveryMode::LowestPriority
                    } else {
                        DeliveryMode::Fixed
                    },
                    vector: Vector::new(0x60 + rng.below(8) as u8),
                    trigger: TriggerMode::Edge,
                };
                chip.send_msi(
                    &eoi_exit::Msi::from_message(&msg, eoi_exit::MsiFormat::Xapic).unwrap(),
                    &mut fx,
                );
            }
            7..=9 => {
                // The guest retargets a pin, high half first, as Linux does.
                let e = level_entry(pin, rng.below(VCPUS as u64) as u32);
                let sel = u64::from(REG_REDTBL_BASE + 2 * pin);
                chip.mmio_write(IOREGSEL, 4, sel + 1, &mut fx);
                chip.mmio_write(IOWIN, 4, e >> 32, &mut fx);
                chip.mmio_write(IOREGSEL, 4, sel, &mut fx);
                chip.mmio_write(IOWIN, 4, e & 0xffff_ffff, &mut fx);
            }
            10 => {
                let s: IrqchipState<Vec<VcpuState>> = chip.state();
                assert!(s.validate().is_ok(), "a snapshot taken mid-flight is valid");
            }
            _ => {
                let copy = (*chip).clone();
                let s: IrqchipState<Vec<VcpuState>> = copy.state();
                assert!(s.validate().is_ok(), "a clone taken mid-flight is valid");
            }
        }
        fx.clear();
    }
}

#[test]
fn vcpu_and_device_threads_never_deadlock_and_leave_a_consistent_chip() {
    for policy in [Policy::Exact, Policy::KvmHighestStale] {
        let slots: Box<[VcpuSlot]> = (0..VCPUS).map(|_| VcpuSlot::new()).collect();
        let chip = Arc::new(Chip::new(
            IrqchipConfig {
                policy,
                ..IrqchipConfig::default()
            },
            ApicMode::XApic,
            slots,
        ));
        let mut fx = Effects::new();
        for i in 0..VCPUS {
            // Flat logical mode, logical ID bit i.
            let id = VcpuId::new(i as u16);
            let ldr = LapicWrite::Register {
                offset: 0xD0,
                value: 1 << (24 + i),
            };
            chip.write_lapic(id, ldr, &mut fx);
        }
        for pin in 0..PINS {
            chip.write_entry(Pin::new(pin), level_entry(pin, u32::from(pin) % 4), &mut fx);
        }
        let hw: Arc<[std::sync::Mutex<[u64; 4]>]> =
            (0..VCPUS).map(|_| std::sync::Mutex::new([0; 4])).collect();
        // Every VMCS starts loaded.
        for i in 0..VCPUS {
            if let Some(u) = chip.vmcs_update(VcpuId::new(i as u16)) {
                *hw[i].lock().unwrap() = u.words;
            }
        }
        let mut threads = Vec::new();
        for i in 0..VCPUS {
            let (c, hw) = (Arc::clone(&chip), Arc::clone(&hw));
            threads.push(thread::spawn(move || vcpu_thread(c, i, hw)));
        }
        for seed in [101, 202] {
            let c = Arc::clone(&chip);
            threads.push(thread::spawn(move || device_thread(c, seed)));
        }
        for t in threads {
            t.join().expect("a thread panicked");
        }

        // Quiesce: every line low, every vCPU loads its VMCS and takes and
        // EOIs what is pending, until nothing is left.
        for pin in 0..PINS {
            chip.set_line(Pin::new(pin), false, &mut fx);
        }
        for _ in 0..512 {
            for i in 0..VCPUS {
                let id = VcpuId::new(i as u16);
                if let Some(u) = chip.vmcs_update(id) {
                    let mut words = hw[i].lock().unwrap();
                    for (n, w) in u.changed() {
                        words[n] = w;
                    }
                }
                let _ = chip.ack(id);
                let _ = chip.guest_eoi(id, &mut fx);
            }
        }
        let s: IrqchipState<Vec<VcpuState>> = chip.state();
        assert!(s.validate().is_ok(), "{policy:?}: {:?}", s.validate());
        for i in 0..VCPUS {
            let v = chip.vcpu(VcpuId::new(i as u16)).unwrap();
            assert!(
                v.apic.irr().is_empty() && v.apic.isr().is_empty(),
                "{policy:?}: vCPU{i} drained"
            );
            if let Some(u) = chip.vmcs_update(VcpuId::new(i as u16)) {
                let mut words = hw[i].lock().unwrap();
                for (n, w) in u.changed() {
                    words[n] = w;
                }
            }
            assert_eq!(
                *hw[i].lock().unwrap(),
                v.map.bitmap().as_u64_words(),
                "{policy:?}: vCPU{i}'s VMCS follows its bitmap"
            );
        }
        // Nothing is in flight any more, so no entry may wait for an EOI:
        // a remote IRR left set here is a lost EOI.
        let io = chip.ioapic();
        for pin in 0..PINS {
            let e = io.entry(Pin::new(pin)).unwrap();
            assert!(
                !e.remote_irr(),
                "{policy:?}: pin {pin} wedged (remote IRR set with nothing in flight)"
            );
        }
    }
}
