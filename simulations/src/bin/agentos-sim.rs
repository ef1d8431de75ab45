//! `agentos-sim`: run the replication simulation over a range of seeds.
//!
//! ```text
//! agentos-sim --seeds 5000 [--start N] [--devices N] [--loss P] [--dup P]
//!             [--ops N] [--max-rounds N] [--no-partitions] [--no-crashes]
//!             [--reuse-actor] [--drop-all-from D]
//! ```
//!
//! Prints `FAIL seed=<n>: <reason>` for every failing seed and a one-line
//! summary; exits with 1 if any seed failed, 2 on a usage error.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::process::ExitCode;
use std::time::Instant;

use agentos_simulations::{SimConfig, SimReport, run};

const USAGE: &str = "usage: agentos-sim [--seeds N] [--start N] [--devices N] [--loss P] [--dup P] \
[--ops N] [--max-rounds N] [--no-partitions] [--no-crashes] [--reuse-actor] [--drop-all-from D]";

#[derive(Debug)]
struct Args {
    seeds: u64,
    start: u64,
    cfg: SimConfig,
}

fn parse_args(mut it: impl Iterator<Item = String>) -> Result<Option<Args>, String> {
    let mut args = Args {
        seeds: 100,
        start: 0,
        cfg: SimConfig::default(),
    };
    while let Some(arg) = it.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_owned(), Some(v.to_owned())),
            _ => (arg.clone(), None),
        };
        let mut value = |name: &str| -> Result<String, String> {
            inline
                .clone()
                .or_else(|| it.next())
                .ok_or_else(|| format!("{name} needs a value"))
        };
        fn num<T: std::str::FromStr>(name: &str, v: String) -> Result<T, String> {
            v.parse()
                .map_err(|_| format!("{name}: `{v}` is not a valid number"))
        }
        match flag.as_str() {
            "-h" | "--help" => return Ok(None),
            "--seeds" => args.seeds = num("--seeds", value("--seeds")?)?,
            "--start" => args.start = num("--start", value("--start")?)?,
            "--devices" => args.cfg.devices = num("--devices", value("--devices")?)?,
            "--loss" => args.cfg.loss_pct = num("--loss", value("--loss")?)?,
            "--dup" => args.cfg.dup_pct = num("--dup", value("--dup")?)?,
            "--ops" => args.cfg.ops = num("--ops", value("--ops")?)?,
            "--max-rounds" => args.cfg.max_rounds = num("--max-rounds", value("--max-rounds")?)?,
            "--drop-all-from" => {
                args.cfg.drop_all_from = Some(num("--drop-all-from", value("--drop-all-from")?)?)
            }
            "--no-partitions" => args.cfg.partitions = false,
            "--no-crashes" => args.cfg.crashes = false,
            "--reuse-actor" => args.cfg.fresh_actor_on_restart = false,
            other => return Err(format!("unknown argument `{other}`")),
        }
    }
    Ok(Some(args))
}

fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".to_owned())
}

fn main() -> ExitCode {
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(Some(a)) => a,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("agentos-sim: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    // Panics are reported as failing seeds, not as backtraces.
    std::panic::set_hook(Box::new(|_| {}));

    let started = Instant::now();
    let mut failed = 0u64;
    let mut total = SimReport::default();
    let mut max_rounds = 0;
    // Highest share of the message budget used by a passing seed.
    let mut peak_budget = 0.0f64;
    let end = args.start.saturating_add(args.seeds);
    for seed in args.start..end {
        match catch_unwind(AssertUnwindSafe(|| run(seed, &args.cfg))) {
            Ok(Ok(r)) => {
                total.ops += r.ops;
                total.changes += r.changes;
                total.messages += r.messages;
                total.bytes += r.bytes;
                total.changes_sent += r.changes_sent;
                total.rounds += r.rounds;
                total.crashes += r.crashes;
                total.partitions += r.partitions;
                max_rounds = max_rounds.max(r.rounds);
                let bound = args.cfg.message_bound(r.rounds as usize).max(1);
                peak_budget = peak_budget.max(r.messages as f64 / bound as f64);
            }
            Ok(Err(e)) => {
                failed += 1;
                println!("FAIL seed={seed}: {e}");
            }
            Err(p) => {
                failed += 1;
                println!("FAIL seed={seed}: panic: {}", panic_message(p.as_ref()));
            }
        }
    }
    let elapsed = started.elapsed();
    let c = &args.cfg;
    let passed = args.seeds - failed;
    println!(
        "agentos-sim: seeds {}..{end} devices={} ops={} loss={}% dup={}% partitions={} crashes={}: \
         {passed} passed, {failed} failed; ops={} changes={} messages={} bytes={} changes_sent={} crashes={} \
         partitions={} rounds max={max_rounds} avg={:.2} peak message budget={:.0}%; {:.2}s ({:.2} ms/seed)",
        args.start,
        c.devices,
        c.ops,
        c.loss_pct,
        c.dup_pct,
        on_off(c.partitions),
        on_off(c.crashes),
        total.ops,
        total.changes,
        total.messages,
        total.bytes,
        total.changes_sent,
        total.crashes,
        total.partitions,
        total.rounds as f64 / passed.max(1) as f64,
        peak_budget * 100.0,
        elapsed.as_secs_f64(),
        elapsed.as_secs_f64() * 1000.0 / args.seeds.max(1) as f64,
    );
    if failed > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

fn on_off(b: bool) -> &'static str {
    if b { "on" } else { "off" }
}
