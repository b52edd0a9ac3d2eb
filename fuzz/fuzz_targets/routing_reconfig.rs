#![no_main]
//! The `routing_reconfig` harness, every policy included (`LineAware` with
//! its guest-visible comparison against `Exact`). Its fixed findings stay in
//! the corpus, which `fuzz_replay` replays under `cargo test`.

use eoi_exit_testkit::fuzz_harness::routing_reconfig;

libfuzzer_sys::fuzz_target!(|data: &[u8]| routing_reconfig(data));
