//! `agentos-sim-p2p`: run the P2P sync-engine simulation over many seeds.
//!
//! ```text
//! agentos-sim-p2p [--seeds N] [--start N] [--devices N] [--steps N]
//!                 [--loss P] [--dup P] [--never-together] [--no-crashes]
//!                 [--no-partitions] [--no-rotate]
//! ```
//!
//! Prints `FAIL seed=<n>: <reason>` for every failing seed and a summary;
//! exits 1 if any seed failed, 2 on a usage error.

use agentos_simulations::p2p::{P2pConfig, run_p2p};
use std::process::ExitCode;

const USAGE: &str = "usage: agentos-sim-p2p [--seeds N] [--start N] [--devices N] [--steps N] \
[--loss P] [--dup P] [--never-together] [--no-crashes] [--no-partitions] [--no-rotate]";

fn main() -> ExitCode {
    let mut cfg = P2pConfig::default();
    let (mut seeds, mut start) = (500u64, 0u64);
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut num = |name: &str| -> Result<u64, String> {
            it.next()
                .ok_or(format!("{name} needs a value"))?
                .parse()
                .map_err(|_| format!("{name} needs a number"))
        };
        let r: Result<(), String> = match a.as_str() {
            "--seeds" => num("--seeds").map(|v| seeds = v),
            "--start" => num("--start").map(|v| start = v),
            "--devices" => num("--devices").map(|v| cfg.devices = (v as usize).clamp(2, 12)),
            "--steps" => num("--steps").map(|v| cfg.steps = v as usize),
            "--loss" => num("--loss").map(|v| cfg.loss_pct = v.min(100) as u32),
            "--dup" => num("--dup").map(|v| cfg.dup_pct = v.min(100) as u32),
            "--never-together" => {
                cfg.never_together = true;
                Ok(())
            }
            "--no-crashes" => {
                cfg.crashes = false;
                Ok(())
            }
            "--no-partitions" => {
                cfg.partitions = false;
                Ok(())
            }
            "--no-rotate" => {
                cfg.rotate = false;
                Ok(())
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            other => Err(format!("unknown argument {other}")),
        };
        if let Err(e) = r {
            eprintln!("agentos-sim-p2p: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    }
    let t = std::time::Instant::now();
    let (mut failed, mut writes, mut envelopes, mut sync) = (0u64, 0usize, 0u64, 0u64);
    for seed in start..start + seeds {
        match run_p2p(seed, &cfg) {
            Ok(r) => {
                writes += r.writes;
                envelopes += r.envelopes;
                sync += r.final_sync_messages;
            }
            Err(e) => {
                failed += 1;
                println!("FAIL seed={seed}: {e}");
            }
        }
    }
    println!(
        "agentos-sim-p2p: seeds {start}..{} {cfg:?}: {} passed, {failed} failed; writes={writes} envelopes={envelopes} final sync messages={sync}; {:.2}s",
        start + seeds,
        seeds - failed,
        t.elapsed().as_secs_f64()
    );
    if failed > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}
