//! The P2P sync engine under chaos: 200 seeds of the default scenario
//! (loss, duplication, partitions, churn, crashes, a removal with key
//! rotation), plus devices that are never online together, which must
//! converge through the relay alone.

use agentos_simulations::p2p::{P2pConfig, run_p2p};

#[test]
fn two_hundred_seeds_converge_with_all_faults() {
    let cfg = P2pConfig::default();
    let mut failed = Vec::new();
    for seed in 0..200 {
        if let Err(e) = run_p2p(seed, &cfg) {
            failed.push(format!("seed={seed}: {e}"));
        }
    }
    assert!(failed.is_empty(), "failing seeds:\n{}", failed.join("\n"));
}

#[test]
fn devices_never_online_together_converge_through_the_relay() {
    let cfg = P2pConfig {
        never_together: true,
        partitions: false,
        ..P2pConfig::default()
    };
    for seed in 0..100 {
        let r = run_p2p(seed, &cfg).unwrap_or_else(|e| panic!("seed={seed}: {e}"));
        assert!(r.writes > 0);
    }
}

#[test]
fn a_lossless_run_converges_too() {
    let cfg = P2pConfig {
        loss_pct: 0,
        dup_pct: 0,
        crashes: false,
        partitions: false,
        rotate: false,
        ..P2pConfig::default()
    };
    for seed in 0..50 {
        run_p2p(seed, &cfg).unwrap_or_else(|e| panic!("seed={seed}: {e}"));
    }
}
