//! Criterion benches of the hot paths (DESIGN.md section 9).
//!
//! `cargo bench` runs everything; `cargo bench -- vector_set` one group.

use std::hint::black_box;

use bitvec::prelude::*;
use criterion::{Criterion, criterion_group, criterion_main};
use eoi_exit::{Vector, VectorSet};

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

criterion_group!(benches, vector_set);
criterion_main!(benches);
