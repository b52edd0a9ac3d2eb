//! Snapshot, serialize, restore mid-run: the simulator's census must equal the
//! uninterrupted run's, for every workload, policy and several seeds.
//! The guest, devices and oracle carry on;
//! only the Irqchip goes through the snapshot.
#![cfg(feature = "serde")]

use eoi_exit::Policy;
use eoi_exit_testkit::sim::{self, AnySnapshot, WORKLOADS};

const SEEDS: [u64; 3] = [7, 0xE01E41, 0x5EED];

fn postcard_trip(s: AnySnapshot) -> AnySnapshot {
    let bytes = postcard::to_stdvec(&s).expect("postcard encodes");
    postcard::from_bytes(&bytes).expect("postcard decodes")
}

fn json_trip(s: AnySnapshot) -> AnySnapshot {
    let text = serde_json::to_string(&s).expect("json encodes");
    serde_json::from_str(&text).expect("json decodes")
}

#[test]
fn census_after_a_serialized_restore_equals_the_uninterrupted_run() {
    let mut compared = 0;
    for w in WORKLOADS.iter() {
        let events = 4_000;
        for seed in SEEDS {
            for p in Policy::ALL {
                let straight = sim::run(w, p, seed, events);
                let at = events / 2 + seed % 97;
                let via_postcard = sim::run_restored(w, p, seed, events, at, &mut postcard_trip);
                assert_eq!(
                    via_postcard, straight,
                    "{} {p:?} seed {seed:#x} (postcard)",
                    w.name
                );
                let via_json = sim::run_restored(w, p, seed, events, at, &mut json_trip);
                assert_eq!(via_json, straight, "{} {p:?} seed {seed:#x} (json)", w.name);
                compared += 1;
            }
        }
    }
    println!(
        "snapshot_census: {compared} runs restored mid-way, all equal to the uninterrupted run"
    );
}

#[test]
fn a_lossy_restore_is_detected_by_the_census() {
    // Dropping the EOI-exit state (a fresh map instead of the saved one) must
    // change the numbers, or the test above would prove nothing.
    let w = sim::workload("seed").unwrap();
    let p = Policy::KvmHighestStale;
    let straight = sim::run(w, p, 7, 4_000);
    let mut lossy = |mut s: AnySnapshot| {
        for v in s.vcpus.iter_mut() {
            v.map = eoi_exit::EoiExitMap::new(p).state();
        }
        s
    };
    let broken = sim::run_restored(w, p, 7, 4_000, 1_000, &mut lossy);
    assert_ne!(broken, straight);
}
