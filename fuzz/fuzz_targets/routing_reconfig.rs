#![no_main]
//! The `routing_reconfig` harness: race ops under the invariant checker for
//! the policy the input names; inputs that name `Policy::LineAware` run the
//! guest-visible comparison with `Exact` (issue 15). Its fixed findings stay
//! in the corpus, which `fuzz_replay` replays.

use eoi_exit_testkit::fuzz_harness::routing_reconfig;

libfuzzer_sys::fuzz_target!(|data: &[u8]| routing_reconfig(data));
