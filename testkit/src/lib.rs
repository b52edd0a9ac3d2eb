//! # eoi-exit-testkit
//!
//! The test tooling of [`eoi_exit`], kept out of the core crate so that a VMM
//! that embeds the core pays for none of it in compile time, docs or semver:
//!
//! | module | what |
//! |---|---|
//! | [`race`] | the race op language, the invariant checker (`Harness`), the lockstep inclusion check, the shared test support (`SplitMix64`, the I/O APIC invariant check), proptest strategies (feature `proptest`) |
//! | [`sim`] | the deterministic multi-vCPU simulator, workloads, the necessary-exit oracle and the exit census (binary `census`) |
//! | [`fuzz_harness`] | the cargo-fuzz target bodies (feature `fuzzing`), replayed under `cargo test` |
//! | [`probe`] | views of the core built from its public API only (asserted pins, LAPIC consistency, host-side LAPIC state injection) |
//!
//! The integration tests of the crate family live here too: the race property
//! suites and the bounded model check, the census and snapshot-continuation
//! tests, the fuzz-corpus replay, the I/O APIC property tests, and the real-KVM
//! tests (one binary, `kvm`).
#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

#[cfg(feature = "fuzzing")]
pub mod fuzz_harness;
pub mod probe;
pub mod race;
pub mod sim;
