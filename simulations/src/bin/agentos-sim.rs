//! `agentos-sim`: run the replication simulation over a range of seeds.
//!
//! ```text
//! agentos-sim --seeds 5000 [--start N] [--devices N] [--loss P] [--dup P]
//!             [--ops N] [--max-rounds N] [--no-partitions] [--no-crashes]
//!             [--reuse-actor] [--drop-all-from D] [--jobs N]
//! ```
//!
//! Prints `FAIL seed=<n>: <reason>` for every failing seed (in seed order)
//! and a one-line summary; exits with 1 if any seed failed, 2 on a usage
//! error. Seeds are independent, so they run on `--jobs` worker threads
//! (default: the available parallelism); each run itself is single
//! threaded and deterministic, so results do not depend on `--jobs`.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::process::ExitCode;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use agentos_simulations::{SimConfig, SimReport, run};

const USAGE: &str = "usage: agentos-sim [--seeds N] [--start N] [--devices N] [--loss P] [--dup P] \
[--ops N] [--max-rounds N] [--no-partitions] [--no-crashes] [--reuse-actor] [--drop-all-from D] \
[--jobs N]";

#[derive(Debug)]
struct Args {
    seeds: u64,
    start: u64,
    jobs: usize,
    cfg: SimConfig,
}

fn parse_args(mut it: impl Iterator<Item = String>) -> Result<Option<Args>, String> {
    let mut args = Args {
        seeds: 100,
        start: 0,
        jobs: std::thread::available_parallelism().map_or(1, |n| n.get()),
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
            "--jobs" => args.jobs = num::<usize>("--jobs", value("--jobs")?)?.max(1),
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
    let end = args.start.saturating_add(args.seeds);
    let outcomes = run_all(&args, end);

    let mut failed = 0u64;
    let mut total = SimReport::default();
    let mut max_rounds = 0;
    // Highest share of the message budget used by a passing seed.
    let mut peak_budget = 0.0f64;
    for (seed, outcome) in outcomes {
        match outcome {
            Ok(r) => {
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
            Err(reason) => {
                failed += 1;
                println!("FAIL seed={seed}: {reason}");
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

/// Run seeds `args.start..end` on `args.jobs` threads; results in seed order.
fn run_all(args: &Args, end: u64) -> Vec<(u64, Result<SimReport, String>)> {
    let next = AtomicU64::new(args.start);
    let results = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..args.jobs.min(args.seeds.max(1) as usize) {
            scope.spawn(|| {
                loop {
                    let seed = next.fetch_add(1, Ordering::Relaxed);
                    if seed >= end {
                        break;
                    }
                    let outcome = match catch_unwind(AssertUnwindSafe(|| run(seed, &args.cfg))) {
                        Ok(r) => r.map_err(|e| e.to_string()),
                        Err(p) => Err(format!("panic: {}", panic_message(p.as_ref()))),
                    };
                    if let Ok(mut v) = results.lock() {
                        v.push((seed, outcome));
                    }
                }
            });
        }
    });
    let mut v = results.into_inner().unwrap_or_else(|e| e.into_inner());
    v.sort_by_key(|(seed, _)| *seed);
    v
}

fn on_off(b: bool) -> &'static str {
    if b { "on" } else { "off" }
}
