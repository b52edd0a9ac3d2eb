//! Criterion benches of the hot paths (ARCHITECTURE.md section 9).
//!
//! `cargo bench` runs everything; `cargo bench -- vector_set` one group.

use std::hint::black_box;

use bitvec::prelude::*;
use criterion::{Criterion, criterion_group, criterion_main};
use eoi_exit::exit_bitmap::{Accepted, ScanEntry, Source};
use eoi_exit::{
    ApicId, ApicMode, DeliveryMode, Destination, DestinationMode, EoiExitMap, InterruptMessage,
    Irqchip, IrqchipConfig, LocalApic, Pin, Policy, RedirectionEntry, TriggerMode, VcpuId, Vector,
    VectorSet,
};

/// The bitvec alternative VectorSet was measured against.
#[derive(Default, Clone, Copy)]
struct BitvecSet(BitArray<[u64; 4], Lsb0>);

impl BitvecSet {
    fn insert(&mut self, v: u8) {
        self.0.set(v as usize, true);
    }
    fn remove(&mut self, v: u8) {
        self.0.set(v as usize, false);
    }
    fn highest(&self) -> Option<u8> {
        self.0.last_one().map(|i| i as u8)
    }
}

fn vector_set(c: &mut Criterion) {
    let mut g = c.benchmark_group("vector_set");
    // A realistic ISR/IRR: a few vectors, the highest in word 0 or 3.
    let vs: [u8; 4] = [0x31, 0x41, 0x61, 0xef];
    let mut words = VectorSet::new();
    let mut bits = BitvecSet::default();
    for v in vs {
        words.insert(Vector::new(v));
        bits.insert(v);
    }
    g.bench_function("highest/words", |b| b.iter(|| black_box(&words).highest()));
    g.bench_function("highest/bitvec", |b| b.iter(|| black_box(&bits).highest()));
    let sparse_w: VectorSet = [Vector::new(0x21)].into_iter().collect();
    let mut sparse_b = BitvecSet::default();
    sparse_b.insert(0x21);
    g.bench_function("highest_low_only/words", |b| {
        b.iter(|| black_box(&sparse_w).highest())
    });
    g.bench_function("highest_low_only/bitvec", |b| {
        b.iter(|| black_box(&sparse_b).highest())
    });
    g.bench_function("insert_remove/words", |b| {
        let mut s = VectorSet::new();
        b.iter(|| {
            for v in black_box(vs) {
                s.insert(Vector::new(v));
            }
            for v in black_box(vs) {
                s.remove(Vector::new(v));
            }
            black_box(&s);
        })
    });
    g.bench_function("insert_remove/bitvec", |b| {
        let mut s = BitvecSet::default();
        b.iter(|| {
            for v in black_box(vs) {
                s.insert(v);
            }
            for v in black_box(vs) {
                s.remove(v);
            }
            black_box(&s);
        })
    });
    g.finish();
}

fn level(v: u8, dest: u32) -> RedirectionEntry {
    RedirectionEntry::fixed(Vector::new(v), TriggerMode::Level, dest)
}

/// 24 entries: 12 level entries for vCPU0 and 12 for other vCPUs.
fn table() -> [RedirectionEntry; 24] {
    core::array::from_fn(|i| level(0x30 + i as u8, if i % 2 == 0 { 0 } else { 1 + i as u32 }))
}

fn scanned(policy: Policy, apic: &LocalApic) -> EoiExitMap {
    let mut m = EoiExitMap::new(policy);
    m.scan_table(apic, &table(), |_| false, None);
    m
}

fn send_eoi(c: &mut Criterion) {
    let mut g = c.benchmark_group("send_eoi");
    let apic = LocalApic::new_enabled(ApicId::new(0), ApicMode::XApic);
    for policy in [Policy::KvmHighestStale, Policy::Exact] {
        let name = policy.name();
        // Not intercepted: an edge vector nobody routes.
        let mut m = scanned(policy, &apic);
        g.bench_function(format!("not_intercepted/{name}"), |b| {
            b.iter(|| m.send_eoi(black_box(&apic), black_box(Vector::new(0xa0)), false))
        });
        // Intercepted: a level vector routed here (0x30).
        let mut m = scanned(policy, &apic);
        g.bench_function(format!("intercepted/{name}"), |b| {
            b.iter(|| m.send_eoi(black_box(&apic), black_box(Vector::new(0x30)), true))
        });
        // Retires a stale vector: 0x31 (routed elsewhere) was in service at
        // scan; the EOI retires it. Each iteration restores the scanned map.
        let mut stale_apic = apic;
        stale_apic.set_in_service(Vector::new(0x31), true);
        let template = scanned(policy, &stale_apic);
        g.bench_function(format!("retires_stale/{name}"), |b| {
            b.iter_batched_ref(
                || (template, apic),
                |(m, a)| m.send_eoi(black_box(a), black_box(Vector::new(0x31)), true),
                criterion::BatchSize::SmallInput,
            )
        });
    }
    g.finish();
}

fn rescan(c: &mut Criterion) {
    let mut g = c.benchmark_group("rescan");
    let mut apic = LocalApic::new_enabled(ApicId::new(0), ApicMode::XApic);
    apic.set_in_service(Vector::new(0x31), true);
    let entries = table();
    for policy in [Policy::KvmHighestStale, Policy::Exact] {
        let mut m = EoiExitMap::new(policy);
        g.bench_function(format!("24_pins/{}", policy.name()), |b| {
            b.iter(|| {
                m.begin_scan();
                for (pin, e) in entries.iter().enumerate() {
                    m.scan_entry(&apic, &ScanEntry::from_redirection(*e, false, pin == 8));
                }
                m.end_scan(&apic);
                black_box(m.bitmap());
            })
        });
    }
    g.finish();
}

fn reroute(c: &mut Criterion) {
    let mut g = c.benchmark_group("reroute_256_vcpus");
    let chip: Box<Irqchip<256>> =
        Box::new(Irqchip::new(IrqchipConfig::default(), ApicMode::X2Apic));
    for (pin, e) in table().iter().enumerate() {
        let _ = chip.write_entry(Pin::new(pin as u8), e.bits());
    }
    let mut dest = 0u32;
    g.bench_function("targeted", |b| {
        b.iter(|| {
            dest = (dest + 7) % 256;
            black_box(chip.write_entry(Pin::new(5), level(0x35, dest).bits()))
        })
    });
    g.bench_function("naive_rescan_all", |b| {
        b.iter(|| {
            dest = (dest + 7) % 256;
            let _ = chip
                .ioapic()
                .write_entry(Pin::new(5), level(0x35, dest).bits());
            for i in 0..256u16 {
                chip.rescan(VcpuId::new(i));
            }
        })
    });
    g.finish();
}

fn lapic(c: &mut Criterion) {
    let mut g = c.benchmark_group("lapic");
    let msg = InterruptMessage {
        destination: Destination {
            id: 0,
            mode: DestinationMode::Physical,
        },
        delivery_mode: DeliveryMode::Fixed,
        vector: Vector::new(0x41),
        trigger: TriggerMode::Level,
    };
    let mut apic = LocalApic::new_enabled(ApicId::new(0), ApicMode::XApic);
    apic.set_in_service(Vector::new(0x31), false);
    g.bench_function("accept_ack_eoi", |b| {
        b.iter(|| {
            let _ = apic.accept(black_box(&msg));
            let v = apic.ack();
            let e = apic.eoi();
            black_box((v, e))
        })
    });
    let mut m = EoiExitMap::new(Policy::Exact);
    m.scan_table(&apic, &table(), |_| false, None);
    g.bench_function("on_accept_exact", |b| {
        let a = Accepted {
            vector: Vector::new(0x41),
            trigger: TriggerMode::Level,
            coalesced: true,
            source: Source::NeedsEoi,
        };
        b.iter(|| m.on_accept(black_box(&apic), black_box(a)))
    });
    g.finish();
}

criterion_group!(benches, vector_set, send_eoi, rescan, reroute, lapic);
criterion_main!(benches);
