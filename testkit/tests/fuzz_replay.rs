//! Replays the checked-in fuzz corpus (`fuzz/corpus/<target>/`) and a few
//! thousand deterministic pseudo-random inputs per target through the fuzz
//! harnesses, on stable, under `cargo test --features fuzzing`.
#![cfg(feature = "fuzzing")]

use std::path::Path;

use eoi_exit_testkit::fuzz_harness::{Harness, TARGETS};
use eoi_exit_testkit::race::SplitMix64;

/// Random inputs per target (fewer in debug builds, where the harnesses are
/// ~20x slower, and under Miri). Inputs run up to 4 KiB, i.e. past every
/// target's op cap (`MAX_OPS` and the lower per-target ones).
const RANDOM_INPUTS: usize = if cfg!(miri) {
    4
} else if cfg!(debug_assertions) {
    300
} else {
    3000
};

fn harness(name: &str) -> Harness {
    TARGETS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, h)| *h)
        .expect("known target")
}

/// Replays `fuzz/corpus/<name>/` and returns the number of inputs, or `None`
/// (after one line saying so) where the tree has no `fuzz/corpus` beside
/// `testkit/` at all: a published package has no `fuzz/`, which is a crate of
/// its own. A
/// checkout that has `fuzz/corpus` but not the target's folder fails.
fn replay_corpus(name: &str) -> Option<usize> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus");
    if !root.is_dir() {
        println!(
            "fuzz_replay: skipped: {name} corpus: no fuzz/corpus in this tree \
             (the packaged crate ships without fuzz/; a git checkout has it)"
        );
        return None;
    }
    let dir = root.join(name);
    let h = harness(name);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    for f in &files {
        let data = std::fs::read(f).expect("corpus file");
        let r = std::panic::catch_unwind(|| h(&data));
        assert!(r.is_ok(), "{name}: corpus input {} fails", f.display());
    }
    Some(files.len())
}

fn replay_random(name: &str, seed: u64) {
    let h = harness(name);
    let mut rng = SplitMix64::new(seed);
    for i in 0..RANDOM_INPUTS {
        // Mostly short inputs, some long enough to hit the op caps.
        let len = match rng.next_u64() % 8 {
            0 => (rng.next_u64() % 16) as usize,
            1..=5 => (rng.next_u64() % 512) as usize,
            _ => (rng.next_u64() % 4096) as usize,
        };
        let data: Vec<u8> = (0..len).map(|_| rng.next_u64() as u8).collect();
        let r = std::panic::catch_unwind(|| h(&data));
        if r.is_err() {
            // Keep the input for `cargo fuzz run TARGET FILE` and the corpus.
            let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("{name}-{seed:x}-{i}"));
            let _ = std::fs::write(&out, &data);
            panic!(
                "{name}: random input #{i} (seed {seed:#x}, {len} bytes) fails; saved to {}",
                out.display()
            );
        }
    }
}

macro_rules! target_tests {
    ($($name:ident => $seed:expr,)+) => {
        $(
            mod $name {
                #[test]
                fn corpus() {
                    if let Some(n) = super::replay_corpus(stringify!($name)) {
                        assert!(n > 0, "no corpus for {}", stringify!($name));
                    }
                }
                #[test]
                fn random_inputs() {
                    super::replay_random(stringify!($name), $seed);
                }
            }
        )+
        #[test]
        fn every_target_is_tested() {
            let tested = [$(stringify!($name)),+];
            for (n, _) in TARGETS {
                assert!(tested.contains(n), "target {n} has no replay test");
            }
        }
    };
}

target_tests! {
    ioapic_mmio => 0x10a9_1c00,
    routing_reconfig => 0x2047_1e00,
    lapic => 0x1a91_c000,
    snapshot => 0x5a95_0700,
}

/// The lost-EOI oracle of `routing_reconfig` (the race checker) is not
/// vacuous: random inputs reach EOIs of instances the checker follows.
#[test]
fn routing_reconfig_checks_necessary_eois() {
    let mut rng = SplitMix64::new(0x0e01_0e01);
    let mut total = eoi_exit_testkit::fuzz_harness::ChipStats::default();
    for _ in 0..200 {
        let data: Vec<u8> = (0..2048).map(|_| rng.next_u64() as u8).collect();
        let s = eoi_exit_testkit::fuzz_harness::run_routing_reconfig(&data).unwrap_or_default();
        total.eois += s.eois;
        total.necessary += s.necessary;
        total.exits += s.exits;
        total.tolerated_losses += s.tolerated_losses;
        total.capacity += s.capacity;
    }
    println!("{total:?}");
    assert!(
        total.eois > 0 && total.necessary > 0 && total.exits > 0,
        "{total:?}"
    );
}
