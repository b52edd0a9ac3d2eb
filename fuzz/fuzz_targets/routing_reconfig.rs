#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| eoi_exit_testkit::fuzz_harness::routing_reconfig(data));
