//! `agentos-bench`: AgentOS and tmux side by side, in one run, with the
//! repetitions interleaved; prints a markdown table of medians with the
//! AgentOS/tmux and AgentOS/direct-PTY ratios (methods: `research/perf.md`
//! §B–D; targets: `DESIGN.md` §4).
//!
//! Build first, then run:
//!
//! ```text
//! cargo build --release -p agentos-cli -p agentos-bench
//! cargo run --release -p agentos-bench -- [--quick] [--out BENCHMARKS-results.md]
//! ```
//!
//! The harness uses the `agentos` binary next to its own executable
//! (`target/release/agentos`) and builds it with
//! `cargo build --release -p agentos-cli` when it is missing. It runs the
//! daemon with a temporary `AGENTOS_HOME` and a private tmux server
//! (`tmux -L bench-<pid> -f <conf>`, `history-limit 100000`), and stops
//! both at the end, on a panic, or on Ctrl-C.

mod bench;
mod p2p;
mod relay;
mod report;
mod stats;
mod systems;
mod term;
mod web;

use clap::Parser;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;
use systems::{AgentOs, Tmux};

#[derive(Parser, Debug)]
#[command(
    name = "agentos-bench",
    about = "Benchmark AgentOS against tmux, side by side in one run"
)]
struct Args {
    /// Fewer samples and a 50 MB file instead of 100 MB: a smoke test.
    #[arg(long)]
    quick: bool,
    /// Also write the results (header, table, method notes) to this file.
    #[arg(long)]
    out: Option<PathBuf>,
    /// The `agentos` binary (default: next to this executable).
    #[arg(long)]
    agentos: Option<PathBuf>,
    /// The tmux binary.
    #[arg(long, default_value = "/usr/bin/tmux")]
    tmux: PathBuf,
    /// Run only these measurements (comma-separated).
    #[arg(long, value_delimiter = ',', value_enum)]
    only: Vec<Which>,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum Which {
    Memory,
    Scrollback,
    Cli,
    Create,
    Attach,
    Echo,
    Cat,
    Worktree,
    Sandbox,
    P2p,
    /// Web viewers under load (WebSocket v3) against tmux clients.
    Web,
}

/// The workspace root, for building `agentos` when it is missing.
fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The `agentos` binary next to this one, built if missing.
fn find_agentos(given: Option<PathBuf>) -> PathBuf {
    if let Some(p) = given {
        assert!(p.exists(), "--agentos {} does not exist", p.display());
        return std::path::absolute(&p).unwrap_or(p);
    }
    let exe = std::env::current_exe().expect("cannot find this executable's path");
    let dir = exe.parent().expect("this executable has no directory");
    let bin = dir.join("agentos");
    let release = dir.file_name().is_some_and(|n| n == "release");
    if !bin.exists() {
        eprintln!(
            "[bench] {} is missing: building it (cargo build{} -p agentos-cli)",
            bin.display(),
            if release { " --release" } else { "" }
        );
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut c = Command::new(cargo);
        c.arg("build").current_dir(workspace_root());
        if release {
            c.arg("--release");
        }
        let st = c
            .args(["-p", "agentos-cli"])
            .status()
            .expect("cannot run cargo");
        assert!(st.success(), "building agentos failed");
        assert!(
            bin.exists(),
            "{} still missing after the build",
            bin.display()
        );
    }
    if !release || cfg!(debug_assertions) {
        eprintln!(
            "[bench] warning: this is not a release build; numbers will not be representative \
             (use `cargo run --release -p agentos-bench`)"
        );
    }
    bin
}

/// Owns the temporary directory, the daemon and the tmux server; stops
/// them when dropped (also while unwinding from a panic).
struct Lab {
    ctx: bench::Ctx,
    _tmp: tempfile::TempDir,
}

impl Drop for Lab {
    fn drop(&mut self) {
        eprintln!("[bench] cleaning up");
        self.ctx.aos.stop();
        self.ctx.tmux.kill_server();
    }
}

/// Set once a signal asked the harness to stop: from then on, the failures
/// that cleaning up causes in the measuring thread are not reported.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// On SIGINT/SIGTERM, stop the daemon and the tmux server, then exit.
fn cleanup_on_signal(ctx: &bench::Ctx) {
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if !INTERRUPTED.load(Ordering::SeqCst) {
            default_hook(info);
        }
    }));
    let aos = AgentOs {
        bin: ctx.aos.bin.clone(),
        home: ctx.aos.home.clone(),
        work: ctx.aos.work.clone(),
    };
    let tmux = Tmux {
        bin: ctx.tmux.bin.clone(),
        socket: ctx.tmux.socket.clone(),
        conf: ctx.tmux.conf.clone(),
        work: ctx.tmux.work.clone(),
    };
    let dir = ctx.dir.clone();
    let mut signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
    ])
    .expect("cannot install signal handlers");
    std::thread::spawn(move || {
        if let Some(sig) = signals.forever().next() {
            INTERRUPTED.store(true, Ordering::SeqCst);
            eprintln!("[bench] signal {sig}: cleaning up");
            aos.stop();
            tmux.kill_server();
            let _ = std::fs::remove_dir_all(dir);
            std::process::exit(130);
        }
    });
}

fn main() {
    let args = Args::parse();
    // Every daemon the harness starts serves its web client on a free
    // loopback port (never the user's 7890); `agentos web --json` names it.
    // SAFETY: no other thread exists yet.
    unsafe { std::env::set_var("AGENTOS_WEB_LISTEN", "127.0.0.1:0") };
    let started = Instant::now();
    let agentos = find_agentos(args.agentos.clone());
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let mut info = report::RunInfo::gather(
        format!("cargo run --release -p agentos-bench -- {}", argv.join(" "))
            .trim_end()
            .to_string(),
        &args.tmux,
        &agentos,
    );
    info.quick = args.quick;
    let want = |w: Which| args.only.is_empty() || args.only.contains(&w);

    let tmp = tempfile::Builder::new()
        .prefix("agentos-bench.")
        .tempdir_in("/tmp")
        .expect("cannot create a temporary directory in /tmp");
    let dir = tmp.path().to_path_buf();
    let work = dir.join("work");
    std::fs::create_dir_all(&work).expect("cannot create the work directory");
    let ctx = bench::Ctx {
        aos: AgentOs {
            bin: agentos.clone(),
            home: dir.join("h"),
            work: work.clone(),
        },
        tmux: Tmux::new(&args.tmux, &dir, &work),
        dir: dir.clone(),
        quick: args.quick,
    };
    cleanup_on_signal(&ctx);
    let lab = Lab { ctx, _tmp: tmp };
    let ctx = &lab.ctx;

    let (echo_n, file_bytes, cat_reps, attach_reps) = if ctx.quick {
        (100, 37_500_000u64, 1, 5)
    } else {
        (300, 75_000_000u64, 3, 5)
    };
    let (cli_n, create_n) = (20, 10);
    let data = dir.join("data.txt");
    let lines = dir.join("lines80.txt");
    if want(Which::Cat) {
        eprintln!("[bench] generating the data file ({file_bytes} random bytes, base64)");
        let st = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "head -c {file_bytes} /dev/urandom | base64 -w 76 > '{}'",
                data.display()
            ))
            .status()
            .expect("cannot run sh");
        assert!(st.success(), "generating the data file failed");
    }
    if want(Which::Scrollback) {
        bench::write_lines_file(&lines);
    }

    eprintln!(
        "[bench] agentos {}, tmux socket {}, home {}",
        agentos.display(),
        ctx.tmux.socket,
        ctx.aos.home.display()
    );
    ctx.aos.start();

    let mut rows = Vec::new();
    if want(Which::Memory) {
        rows.extend(bench::memory(ctx));
    }
    if want(Which::Scrollback) {
        rows.extend(bench::scrollback(ctx, &lines));
    }
    if want(Which::Echo) {
        rows.extend(bench::echo(ctx, echo_n));
    }
    if want(Which::Cat) {
        rows.extend(bench::throughput(ctx, &data, cat_reps, !ctx.quick));
    }
    if want(Which::Attach) {
        rows.extend(bench::attach(ctx, attach_reps));
    }
    if want(Which::Cli) {
        rows.extend(bench::cli(ctx, cli_n));
    }
    if want(Which::Create) {
        rows.extend(bench::create(ctx, create_n));
    }
    if want(Which::Worktree) {
        rows.extend(bench::worktree(ctx, 5));
    }
    if want(Which::Sandbox) {
        rows.extend(bench::sandbox(ctx, 5));
    }
    if want(Which::P2p) {
        rows.extend(p2p::p2p(if ctx.quick { 100 } else { 1000 }, 5000));
        rows.extend(p2p::loopback_latency(if ctx.quick { 50 } else { 300 }));
        rows.extend(p2p::partition_heal(if ctx.quick { 5 } else { 20 }, 50));
        rows.extend(relay::relay_memory(
            &ctx.aos.bin,
            &ctx.dir,
            20,
            if ctx.quick { 100 } else { 500 },
        ));
    }

    if want(Which::Web) {
        rows.extend(web::web(ctx));
    }

    info.load_after = report::loadavg();
    info.elapsed_s = started.elapsed().as_secs_f64();
    let params = format!(
        "{echo_n} echo samples per system and condition; `cat` of {:.0} MB × {cat_reps}{}; \
         attach × {attach_reps}; CLI × {cli_n}; create × {create_n}",
        (file_bytes as f64 * 4.0 / 3.0 * 77.0 / 76.0) / 1e6,
        if ctx.quick { "" } else { " after 1 warm-up" },
    );
    let doc = report::document(&info, &rows, &params);
    println!("{}", report::table(&rows));
    if let Some(out) = &args.out {
        std::fs::write(out, &doc).unwrap_or_else(|e| panic!("cannot write {}: {e}", out.display()));
        eprintln!("[bench] wrote {}", out.display());
    }
    drop(lab);
}
