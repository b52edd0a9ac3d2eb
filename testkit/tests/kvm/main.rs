//! The real-KVM integration tests, as one test binary so the KVM harness (`support`,
//! about 1,600 lines) is compiled once instead of once per test crate:
//!
//! * `support`: the harness, a tiny real-mode guest driven through Linux KVM with the split
//!   or the in-kernel irqchip, and `skip_without_kvm`, the one skip check;
//! * `differential`: the same scenarios on KVM and on the model, compared after every step
//!   (`cargo test --release --test kvm differential`);
//! * `oracle_scenarios`: the 14 `tools/kvm-oracle` scenarios on KVM's split irqchip
//!   (`cargo test --release --test kvm oracle_scenarios`);
//! * `snapshot` (feature `kvm`): KVM state conversions and a migration from KVM's
//!   in-kernel irqchip into the model (`cargo test --release --features kvm --test kvm snapshot`);
//! * `ipi`: IPIs written by the guest to the x2APIC ICR and SELF IPI MSRs, KVM against the model;
//! * `nonvectored`: INIT, SIPI, NMI and SMI IPIs from the guest's x2APIC ICR, read back with
//!   `KVM_GET_VCPU_EVENTS`, `KVM_GET_MP_STATE`, `KVM_GET_SREGS` and `KVM_GET_LAPIC`;
//! * `resample`: a resampling irqfd (in-kernel irqchip) against `IrqchipConfig::resample_pins`;
//! * `directed_eoi`: SVR bit 12 under each `KVM_CAP_X2APIC_API` setting, KVM against the model;
//! * `intx_trace`: the legacy INTx pattern (status read, EOI; still pending, shared line,
//!   the line re-asserting in service) recorded on KVM's split irqchip and replayed on the
//!   model under `Exact` and `LineAware`: the guest sees the same, `Exact` exits where KVM did;
//! * `x2apic_ids`: 1,024 vCPUs with x2APIC IDs up to 4095, MSIs and GSI routes above APIC ID
//!   255 with and without `KVM_CAP_X2APIC_API`, KVM against the model;
//! * `common`: the split-irqchip model `common::split`, shared with `kvm_oracle_model`.
//!
//! Where `/dev/kvm` is unusable every KVM test prints one
//! `<test>: skipped: no usable /dev/kvm: <why>` line and passes.
#![cfg(all(target_os = "linux", target_arch = "x86_64"))]

// Shared with the `kvm_oracle_model` test binary, which includes it as `mod common;`.
#[path = "../common/mod.rs"]
mod common;

mod differential;
mod directed_eoi;
mod intx_trace;
mod ipi;
mod nonvectored;
mod oracle_scenarios;
mod resample;
#[cfg(feature = "kvm")]
mod snapshot;
mod support;
mod x2apic_ids;
