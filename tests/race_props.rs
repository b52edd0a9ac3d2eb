//! Property tests of the race language (issue 6): random op sequences against
//! one Irqchip per policy under the full invariant checker of
//! `eoi_exit::race`, and three Irqchips in lockstep for bitmap inclusion.
//!
//! Each property runs `PROPTEST_CASES` cases (default 10,000 per policy in
//! these suites; CI may lower it with the variable).

use eoi_exit::race::proptest_support::{Shape, entries, ops};
use eoi_exit::race::{Harness, HarnessConfig, Lockstep, LossCause, Op, Trace, Violation};
use eoi_exit::{Pin, PinSet, Policy};
use proptest::prelude::*;

fn config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10_000);
    ProptestConfig {
        cases,
        max_shrink_iters: 20_000,
        ..ProptestConfig::default()
    }
}

const SHAPE: Shape = Shape::SMALL;

/// Pins 0-3, pin 2 with an ack notifier, pin 8 the RTC under RTC tracking.
const RTC_SHAPE: Shape = Shape {
    pins: &[0, 1, 2, 8],
    ..Shape::SMALL
};

/// The op language under which the bitmaps must nest (see `bitmaps_nest`).
const NEST_SHAPE: Shape = Shape::SMALL;

/// The loss causes a policy is known to have (see `LossCause`).
fn known(policy: Policy, mut cfg: HarnessConfig) -> HarnessConfig {
    match policy {
        Policy::KvmLegacy | Policy::KvmHighestStale => {
            cfg = cfg.tolerating(LossCause::VectorRewrittenInFlight)
        }
        Policy::TmrDriven => cfg = cfg.tolerating(LossCause::SharedWithEdge),
        Policy::NoIntercept => {
            cfg = cfg
                .tolerating(LossCause::Plain)
                .tolerating(LossCause::SharedWithEdge)
                .tolerating(LossCause::VectorRewrittenInFlight)
        }
        Policy::Exact => {}
    }
    cfg
}

fn run_policy(policy: Policy, init: &[u64], ops: &[Op]) -> Result<(), TestCaseError> {
    let cfg = known(policy, HarnessConfig::new(policy));
    let mut h = Harness::<2, 4>::with_entries(cfg, init);
    if let Err((i, v)) = h.run(ops) {
        return Err(TestCaseError::fail(format!(
            "{}: {v} at op {}\n{}",
            policy.name(),
            i + 1,
            Trace(&ops[..=i])
        )));
    }
    Ok(())
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn exact_holds_every_invariant(init in entries(SHAPE), ops in ops(SHAPE, 40)) {
        run_policy(Policy::Exact, &init, &ops)?;
    }

    #[test]
    fn kvm_highest_stale_holds_every_invariant(init in entries(SHAPE), ops in ops(SHAPE, 40)) {
        run_policy(Policy::KvmHighestStale, &init, &ops)?;
    }

    #[test]
    fn kvm_legacy_holds_every_invariant(init in entries(SHAPE), ops in ops(SHAPE, 40)) {
        run_policy(Policy::KvmLegacy, &init, &ops)?;
    }

    #[test]
    fn tmr_driven_holds_every_invariant(init in entries(SHAPE), ops in ops(SHAPE, 40)) {
        run_policy(Policy::TmrDriven, &init, &ops)?;
    }

    #[test]
    fn no_intercept_holds_every_invariant_but_lost_eois(
        init in entries(SHAPE),
        ops in ops(SHAPE, 40),
    ) {
        run_policy(Policy::NoIntercept, &init, &ops)?;
    }

    /// Ack notifier on pin 2 and the RTC pin (8) under RTC tracking.
    #[test]
    fn exact_and_kvm_hold_with_ack_notifiers_and_rtc(
        init in entries(RTC_SHAPE),
        ops in ops(RTC_SHAPE, 40),
        policy in prop_oneof![
            Just(Policy::Exact),
            Just(Policy::KvmHighestStale),
            Just(Policy::KvmLegacy),
        ],
    ) {
        let mut cfg = known(policy, HarnessConfig::new(policy));
        let mut acks = PinSet::EMPTY;
        acks.insert(Pin::new(2));
        cfg.chip.ack_notifier_pins = acks;
        cfg.chip.rtc_tracking = true;
        let mut h = Harness::<2, 24>::with_entries(cfg, &init);
        if let Err((i, v)) = h.run(&ops) {
            return Err(TestCaseError::fail(format!(
                "{}: {v} at op {}\n{}", policy.name(), i + 1, Trace(&ops[..=i])
            )));
        }
    }

    /// `Exact ⊆ KvmHighestStale ⊆ KvmLegacy` after the same history, up to
    /// the gaps `Lockstep::explain` names (`InclusionGap`).
    #[test]
    fn bitmaps_nest(init in entries(NEST_SHAPE), ops in ops(NEST_SHAPE, 40)) {
        let base = HarnessConfig::new(Policy::Exact)
            .tolerating(LossCause::VectorRewrittenInFlight);
        let mut l = Lockstep::<2, 4>::new(base, &init);
        if let Err((i, v)) = l.run(&ops) {
            return Err(TestCaseError::fail(format!("{v} at op {}\n{}", i + 1, Trace(&ops[..=i]))));
        }
    }
}

/// The harness's invariant checker itself: a plain lost EOI is reported.
#[test]
fn checker_reports_a_lost_eoi() {
    let mut h =
        Harness::<2, 4>::with_entries(HarnessConfig::new(Policy::NoIntercept), &[0x31 | 1 << 15]);
    let r = h.run(&[
        Op::SetLine { pin: 0, high: true },
        Op::Ack { vcpu: 0 },
        Op::Eoi { vcpu: 0 },
    ]);
    assert!(
        matches!(
            r,
            Err((
                2,
                Violation::LostEoi {
                    cause: LossCause::Plain,
                    ..
                }
            ))
        ),
        "{r:?}"
    );
}
