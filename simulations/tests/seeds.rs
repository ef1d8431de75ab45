//! Seed sweeps of the replication simulation, plus proof that the checker
//! actually catches a broken network.

use agentos_simulations::{SimConfig, SimFailure, SimReport, run};

/// Run `seeds` consecutive seeds from `start`; panic listing every failure.
fn sweep(start: u64, seeds: u64, cfg: &SimConfig) -> Vec<SimReport> {
    let mut reports = Vec::new();
    let mut failures = Vec::new();
    for seed in start..start + seeds {
        match run(seed, cfg) {
            Ok(r) => reports.push(r),
            Err(e) => failures.push(format!("FAIL seed={seed}: {e}")),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {seeds} seeds failed with {cfg:?}:\n{}",
        failures.len(),
        failures.join("\n")
    );
    reports
}

#[test]
fn two_hundred_seeds_with_all_faults() {
    let cfg = SimConfig::default();
    assert!(cfg.loss_pct > 0 && cfg.dup_pct > 0 && cfg.partitions && cfg.crashes);
    let reports = sweep(0, 200, &cfg);
    // The faults were actually exercised.
    let sum = |f: fn(&SimReport) -> u64| reports.iter().map(f).sum::<u64>();
    assert!(sum(|r| r.crashes) > 0, "no crash happened");
    assert!(sum(|r| r.partitions) > 0, "no partition happened");
    assert!(sum(|r| r.duplicated) > 0, "no duplicate was delivered");
    assert!(sum(|r| r.dropped) > 0, "no message was dropped");
    assert!(sum(|r| r.acked) > 0, "no operation was acknowledged");
    assert!(sum(|r| r.changes) > 0);
    for r in &reports {
        assert_eq!(r.ops, cfg.ops as u64);
        assert!(r.messages <= cfg.message_bound(r.rounds as usize));
    }
}

#[test]
fn two_devices_without_loss() {
    let cfg = SimConfig {
        devices: 2,
        loss_pct: 0,
        dup_pct: 0,
        partitions: false,
        crashes: false,
        ..SimConfig::default()
    };
    for r in sweep(1_000, 50, &cfg) {
        assert_eq!(r.dropped, 0);
        assert_eq!(r.duplicated, 0);
        assert_eq!(r.crashes, 0);
        assert!(r.rounds <= 1, "{r:?}");
    }
}

#[test]
fn six_devices_with_thirty_percent_loss() {
    let cfg = SimConfig {
        devices: 6,
        loss_pct: 30,
        ..SimConfig::default()
    };
    let reports = sweep(2_000, 30, &cfg);
    assert!(reports.iter().any(|r| r.dropped > 0));
}

#[test]
fn runs_are_deterministic() {
    let cfg = SimConfig::default();
    for seed in [3, 77, 12_345] {
        assert_eq!(run(seed, &cfg), run(seed, &cfg));
    }
    assert_ne!(run(1, &cfg), run(2, &cfg));
}

#[test]
fn a_black_holed_sender_is_detected() {
    // Device 1 never gets anything out, even after healing: its operations
    // can never reach the others, so the run must not converge.
    let cfg = SimConfig {
        devices: 3,
        crashes: false,
        drop_all_from: Some(1),
        ..SimConfig::default()
    };
    for seed in 0..10 {
        match run(seed, &cfg) {
            Err(SimFailure::NotConverged { rounds, detail }) => {
                assert_eq!(rounds, cfg.max_rounds as u64);
                assert!(detail.contains("device 1"), "{detail}");
            }
            other => panic!("seed {seed}: expected NotConverged, got {other:?}"),
        }
    }
}

#[test]
fn reusing_the_actor_after_a_crash_is_detected() {
    // A device that crashes after sending changes it never persisted, and
    // then keeps writing as the same actor, reuses sequence numbers; the
    // other replicas refuse its new changes. The simulation must notice.
    let cfg = SimConfig {
        fresh_actor_on_restart: false,
        ..SimConfig::default()
    };
    let failure = (0..40)
        .find_map(|seed| run(seed, &cfg).err())
        .expect("some seed reuses a sequence number");
    match failure {
        SimFailure::Crdt { error, .. } => assert!(error.contains("duplicate seq"), "{error}"),
        other => panic!("expected a crdt error, got {other}"),
    }
}

#[test]
fn an_idle_workspace_converges_without_messages() {
    let cfg = SimConfig {
        ops: 0,
        ..SimConfig::default()
    };
    let r = run(5, &cfg).expect("an idle workspace converges trivially");
    assert_eq!(r.messages, 0);
    assert_eq!(r.rounds, 0);
}

#[test]
fn invalid_configs_are_rejected() {
    for cfg in [
        SimConfig {
            devices: 1,
            ..SimConfig::default()
        },
        SimConfig {
            loss_pct: 101,
            ..SimConfig::default()
        },
        SimConfig {
            drop_all_from: Some(4),
            ..SimConfig::default()
        },
    ] {
        assert!(matches!(run(0, &cfg), Err(SimFailure::InvalidConfig(_))));
    }
}
