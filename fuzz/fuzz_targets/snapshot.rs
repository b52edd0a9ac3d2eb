#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| eoi_exit::fuzz_harness::snapshot(data));
