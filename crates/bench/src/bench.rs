//! The measurements. Each one sets up its agents (AgentOS) and panes
//! (tmux) side by side, interleaves the repetitions between the systems,
//! tears down what it created, and returns report rows. Nothing sleeps to
//! synchronise: every wait is on a marker or a condition, with a deadline.

use crate::report::{Row, verdict};
use crate::stats::{Unit, median, percentile, secs};
use crate::systems::{AgentOs, Mem, TIMEOUT, Tmux, alive, signal, wait_until};
use crate::term::Term;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Everything a measurement needs.
#[derive(Debug)]
pub struct Ctx {
    pub dir: PathBuf,
    pub aos: AgentOs,
    pub tmux: Tmux,
    pub quick: bool,
}

/// Which system a sample belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sys {
    AgentOs,
    Tmux,
    Direct,
}

impl Sys {
    fn tag(self) -> &'static str {
        match self {
            Sys::AgentOs => "a",
            Sys::Tmux => "t",
            Sys::Direct => "d",
        }
    }
}

const SLEEP: [&str; 2] = ["sleep", "100000"];

pub(crate) fn progress(msg: &str) {
    eprintln!("[bench] {msg}");
}

/// Time one closure.
fn timed<T>(f: impl FnOnce() -> T) -> (Duration, T) {
    let t0 = Instant::now();
    let r = f();
    (t0.elapsed(), r)
}

/// Creates a FIFO at `path`.
pub fn mkfifo(path: &Path) {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())
        .expect("FIFO path contains NUL");
    // SAFETY: a valid NUL-terminated path.
    if unsafe { libc::mkfifo(c.as_ptr(), 0o600) } != 0 {
        panic!(
            "cannot create FIFO {}: {}",
            path.display(),
            std::io::Error::last_os_error()
        );
    }
}

/// Writes `token\n` into the FIFO once its reader has it open.
fn write_fifo(path: &Path, token: &str) {
    let deadline = Instant::now() + TIMEOUT;
    let mut pause = Duration::from_micros(100);
    loop {
        match std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(path)
        {
            Ok(mut f) => {
                f.write_all(format!("{token}\n").as_bytes())
                    .unwrap_or_else(|e| panic!("cannot write to FIFO {}: {e}", path.display()));
                return;
            }
            // ENXIO: nobody has the FIFO open for reading yet.
            Err(e) if e.raw_os_error() == Some(libc::ENXIO) => {
                if Instant::now() > deadline {
                    panic!(
                        "timed out after {TIMEOUT:?} waiting for a reader on FIFO {} (is the loop running?)",
                        path.display()
                    );
                }
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(5));
            }
            Err(e) => panic!("cannot open FIFO {}: {e}", path.display()),
        }
    }
}

/// Total CPU ticks (user + system) of `pids`.
fn cpu_ticks(pids: &[i32]) -> u64 {
    pids.iter()
        .filter_map(|p| std::fs::read_to_string(format!("/proc/{p}/stat")).ok())
        .map(|s| {
            let f: Vec<&str> = s
                .rsplit(')')
                .next()
                .unwrap_or("")
                .split_whitespace()
                .collect();
            // Fields after the comm: state is [0]; utime is field 14 → [11], stime [12].
            f.get(11).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
                + f.get(12).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
        })
        .sum()
}

/// Waits until `pids` stop using CPU (a backlog drained), so that one
/// system's leftover work does not land in the next system's samples.
/// Gives up with a warning rather than failing the run.
fn wait_quiet(pids: &[i32], what: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut last = cpu_ticks(pids);
    let mut still = 0;
    while still < 2 {
        if Instant::now() > deadline {
            progress(&format!(
                "warning: {what} still busy after 20 s; continuing"
            ));
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
        let now = cpu_ticks(pids);
        // One tick (10 ms) of slack for timers.
        if now <= last + 1 {
            still += 1;
        } else {
            still = 0;
        }
        last = now;
    }
}

impl Ctx {
    fn aos_pids(&self) -> Vec<i32> {
        let mut v: Vec<i32> = self.aos.daemon_pid().into_iter().collect();
        v.extend(self.aos.live_holders());
        v
    }

    fn server_pids(&self, sys: Sys) -> Vec<i32> {
        match sys {
            Sys::AgentOs => self.aos_pids(),
            Sys::Tmux => vec![self.tmux.server_pid()],
            Sys::Direct => vec![],
        }
    }

    /// Attaches a client to `name`, waits for `marker` on its screen, and
    /// detaches (kills the client): proves the server has processed the
    /// agent's output up to the marker.
    fn peek(&self, sys: Sys, name: &str, marker: &str, timeout: Duration) {
        let mut t = match sys {
            Sys::AgentOs => self.aos.attach(name, 80, 24),
            Sys::Tmux => self.tmux.attach(name, 80, 24),
            Sys::Direct => unreachable!("no server to peek at"),
        };
        t.wait_text(marker, timeout, &format!("{name} to show {marker}"));
        t.kill();
    }
}

/// Memory of idle servers: AgentOS with 0, 1 and 5 idle agents, tmux with
/// 1 and 5 idle panes.
pub fn memory(ctx: &Ctx) -> Vec<Row> {
    progress("memory: idle servers");
    let (aos, tmux) = (&ctx.aos, &ctx.tmux);
    aos.run(&["list"]);
    let a0 = aos.mem_daemon();
    tmux.new_session("mem", 80, 24, &SLEEP);
    let t1 = tmux.mem_server();
    aos.create("mem1", &SLEEP);
    aos.wait_holders(1);
    let a1 = aos.mem_with_holders();
    for i in 2..=5 {
        aos.create(&format!("mem{i}"), &SLEEP);
        tmux.new_window("mem", &format!("mem{i}"), &SLEEP);
    }
    aos.wait_holders(5);
    let a5 = aos.mem_with_holders();
    let a5d = aos.mem_daemon();
    let t5 = tmux.mem_server();
    let mib = |m: Mem| format!("{:.1}", m.pss as f64 / (1024.0 * 1024.0));
    vec![
        Row::new(
            "Idle RSS: daemon with no agents / tmux server with 1 pane",
            Unit::Bytes,
        )
        .agentos(a0.rss as f64)
        .tmux(t1.rss as f64)
        .goal("≤ 15 MB", a0.rss as f64 <= 15e6)
        .note(format!("PSS {} / {} MiB", mib(a0), mib(t1))),
        Row::new("RSS, 1 idle agent/pane (holder included)", Unit::Bytes)
            .agentos(a1.rss as f64)
            .tmux(t1.rss as f64)
            .note(format!("PSS {} / {} MiB", mib(a1), mib(t1))),
        Row::new("RSS, 5 idle agents/panes (holders included)", Unit::Bytes)
            .agentos(a5.rss as f64)
            .tmux(t5.rss as f64)
            .goal("≤ 40 MB", a5.rss as f64 <= 40e6)
            .note(format!(
                "PSS {} / {} MiB; daemon alone {:.1} MiB RSS",
                mib(a5),
                mib(t5),
                a5d.rss as f64 / (1024.0 * 1024.0)
            )),
        Row::new("RSS per extra idle agent/pane", Unit::Bytes)
            .agentos((a5.rss as f64 - a1.rss as f64) / 4.0)
            .tmux((t5.rss as f64 - t1.rss as f64) / 4.0)
            .note(format!(
                "PSS {:.0} / {:.0} KiB",
                (a5.pss as f64 - a1.pss as f64) / 4096.0,
                (t5.pss as f64 - t1.pss as f64) / 4096.0
            )),
    ]
}

/// 100,000 lines of 79 plain characters.
pub fn write_lines_file(path: &Path) {
    let alphabet: Vec<u8> = (b'!'..=b'~').collect();
    let mut s = Vec::with_capacity(100_000 * 80);
    for i in 0..100_000usize {
        s.extend_from_slice(format!("{i:06} ").as_bytes());
        for j in 0..72 {
            s.push(alphabet[(i * 7 + j) % alphabet.len()]);
        }
        s.push(b'\n');
    }
    std::fs::write(path, s).expect("cannot write the scrollback file");
}

/// Resident memory per line of scrollback.
pub fn scrollback(ctx: &Ctx, lines_file: &Path) -> Vec<Row> {
    progress("scrollback: 100,000 lines of 79 characters");
    let (aos, tmux) = (&ctx.aos, &ctx.tmux);
    let script =
        "printf 'SB-READY\\n'; read x < \"$1\"; cat \"$2\"; printf 'SB-DONE\\n'; exec sleep 100000";
    let lines = lines_file.to_string_lossy().into_owned();
    let fa = ctx.dir.join("sb-a.fifo");
    let ft = ctx.dir.join("sb-t.fifo");
    mkfifo(&fa);
    mkfifo(&ft);
    let (fa_s, ft_s) = (
        fa.to_string_lossy().into_owned(),
        ft.to_string_lossy().into_owned(),
    );
    aos.create("sb", &["sh", "-c", script, "sh", &fa_s, &lines]);
    tmux.new_session("sb", 80, 24, &["sh", "-c", script, "sh", &ft_s, &lines]);
    ctx.peek(Sys::AgentOs, "sb", "SB-READY", TIMEOUT);
    ctx.peek(Sys::Tmux, "sb", "SB-READY", TIMEOUT);
    wait_quiet(&ctx.aos_pids(), "AgentOS");
    let a0 = aos.mem_with_holders();
    let ad0 = aos.mem_daemon();
    let t0 = tmux.mem_server();

    write_fifo(&fa, "go");
    ctx.peek(Sys::AgentOs, "sb", "SB-DONE", Duration::from_secs(120));
    wait_quiet(&ctx.aos_pids(), "AgentOS");
    let a1 = aos.mem_with_holders();
    let ad1 = aos.mem_daemon();

    write_fifo(&ft, "go");
    ctx.peek(Sys::Tmux, "sb", "SB-DONE", Duration::from_secs(120));
    let t1 = tmux.mem_server();
    aos.destroy("sb");
    tmux.kill_session("sb");

    let per = |a: u64, b: u64| (b as f64 - a as f64) / 100_000.0;
    vec![
        Row::new(
            "Scrollback RSS per line (100k × 79-char plain lines, 80×24)",
            Unit::BytesPerLine,
        )
        .agentos(per(a0.rss, a1.rss))
        .tmux(per(t0.rss, t1.rss))
        .goal("≤ 150 B/line", per(a0.rss, a1.rss) <= 150.0)
        .note(format!(
            "AgentOS includes the holders (daemon alone {:.0} B/line); PSS {:.0} / {:.0} B/line",
            per(ad0.rss, ad1.rss),
            per(a0.pss, a1.pss),
            per(t0.pss, t1.pss)
        )),
    ]
}

/// `agentos list` vs `tmux ls`, daemon and server warm.
pub fn cli(ctx: &Ctx, n: usize) -> Vec<Row> {
    progress(&format!("CLI warm start: {n} runs each"));
    let (aos, tmux) = (&ctx.aos, &ctx.tmux);
    let run = |mut c: std::process::Command, what: &str| {
        let (d, out) = timed(|| c.stdin(std::process::Stdio::null()).output());
        let out = out.unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
        assert!(out.status.success(), "{what} failed: {out:?}");
        secs(d)
    };
    run(aos.command(&["list"]), "agentos list");
    run(tmux.command(&["ls"]), "tmux ls");
    let (mut a, mut t) = (Vec::new(), Vec::new());
    for i in 0..n {
        if i % 2 == 0 {
            a.push(run(aos.command(&["list"]), "agentos list"));
            t.push(run(tmux.command(&["ls"]), "tmux ls"));
        } else {
            t.push(run(tmux.command(&["ls"]), "tmux ls"));
            a.push(run(aos.command(&["list"]), "agentos list"));
        }
    }
    vec![
        Row::new(
            format!("CLI warm start: `agentos list` vs `tmux ls` (median of {n})"),
            Unit::Seconds,
        )
        .agentos(median(&a))
        .tmux(median(&t))
        .goal("≤ 20 ms", median(&a) <= 0.020)
        .note(format!(
            "p90 {} / {}",
            Unit::Seconds.fmt(percentile(&a, 90.0)),
            Unit::Seconds.fmt(percentile(&t, 90.0))
        )),
    ]
}

/// `agentos create --detach` vs `tmux new-window -d`.
pub fn create(ctx: &Ctx, n: usize) -> Vec<Row> {
    progress(&format!("create: {n} agents/windows each"));
    let (aos, tmux) = (&ctx.aos, &ctx.tmux);
    tmux.new_session("cr", 80, 24, &SLEEP);
    let (mut a, mut t) = (Vec::new(), Vec::new());
    for i in 0..n {
        let name = format!("cr{i}");
        let one_a = || secs(timed(|| aos.create(&name, &SLEEP)).0);
        let one_t = || secs(timed(|| tmux.new_window("cr", &name, &SLEEP)).0);
        if i % 2 == 0 {
            a.push(one_a());
            t.push(one_t());
        } else {
            t.push(one_t());
            a.push(one_a());
        }
    }
    for i in 0..n {
        aos.destroy(&format!("cr{i}"));
    }
    tmux.kill_session("cr");
    vec![
        Row::new(
            format!("Create an agent/window running `sleep` (median of {n})"),
            Unit::Seconds,
        )
        .agentos(median(&a))
        .tmux(median(&t))
        .goal("≤ 150 ms", median(&a) <= 0.150)
        .note(format!(
            "max {} / {}",
            Unit::Seconds.fmt(percentile(&a, 100.0)),
            Unit::Seconds.fmt(percentile(&t, 100.0))
        )),
    ]
}

/// Attach to first paint with 100,000 lines of history.
pub fn attach(ctx: &Ctx, reps: usize) -> Vec<Row> {
    progress(&format!("attach to first paint: {reps} reps each"));
    let (aos, tmux) = (&ctx.aos, &ctx.tmux);
    let script = "seq 1 100000; printf 'PAINT-MARK\\n'; exec sleep 100000";
    aos.create("paint", &["sh", "-c", script]);
    tmux.new_session("paint", 80, 24, &["sh", "-c", script]);
    // Warm-up, and proof that both have the whole history.
    ctx.peek(Sys::AgentOs, "paint", "PAINT-MARK", Duration::from_secs(60));
    ctx.peek(Sys::Tmux, "paint", "PAINT-MARK", Duration::from_secs(60));
    wait_quiet(&ctx.aos_pids(), "AgentOS");
    let (mut a, mut t) = (Vec::new(), Vec::new());
    for rep in 0..reps {
        let order = if rep % 2 == 0 {
            [Sys::AgentOs, Sys::Tmux]
        } else {
            [Sys::Tmux, Sys::AgentOs]
        };
        for sys in order {
            let t0 = Instant::now();
            let mut term = match sys {
                Sys::AgentOs => aos.attach("paint", 80, 24),
                _ => tmux.attach("paint", 80, 24),
            };
            let seen = term.wait_text("PAINT-MARK", TIMEOUT, "the first paint");
            term.kill();
            let d = secs(seen - t0);
            match sys {
                Sys::AgentOs => a.push(d),
                _ => t.push(d),
            }
        }
    }
    aos.destroy("paint");
    tmux.kill_session("paint");
    vec![
        Row::new(
            format!("Attach to first paint, 100k lines of history (median of {reps})"),
            Unit::Seconds,
        )
        .agentos(median(&a))
        .tmux(median(&t))
        .goal("≤ 15 ms", median(&a) <= 0.015)
        .note(format!(
            "max {} / {}",
            Unit::Seconds.fmt(percentile(&a, 100.0)),
            Unit::Seconds.fmt(percentile(&t, 100.0))
        )),
    ]
}

/// One system's echo terminal and, under flood, its flooder's gate.
struct EchoTarget {
    sys: Sys,
    term: Term,
    /// The flooder writes while this file exists (tmux resumes a stopped
    /// pane by itself, so `SIGSTOP` cannot hold a flooder still).
    gate: Option<std::path::PathBuf>,
}

/// Kills flooders even if a measurement panics.
struct Flooders(Vec<i32>);

impl Drop for Flooders {
    fn drop(&mut self) {
        for &p in &self.0 {
            signal(p, libc::SIGKILL);
        }
    }
}

/// A flooder that runs `yes` in bursts while `gate` exists.
fn gated_yes(gate: &std::path::Path) -> String {
    format!(
        "while :; do if [ -e '{}' ]; then yes | head -n 100000; else sleep 0.005; fi; done",
        gate.display()
    )
}

/// Echo samples for every target, in blocks that rotate between the
/// systems; under flood only the measured system's flooder runs.
fn echo_samples(ctx: &Ctx, targets: &mut [EchoTarget], n: usize) -> Vec<Vec<f64>> {
    let blocks = n.clamp(1, 10);
    let per = n.div_ceil(blocks);
    let mut out = vec![Vec::with_capacity(n); targets.len()];
    let mut letter = 0usize;
    let mut next = || {
        letter += 1;
        b'a' + (letter % 26) as u8
    };
    let timeout = Duration::from_secs(10);
    for t in targets.iter_mut() {
        for _ in 0..20 {
            t.term.echo(next(), timeout);
        }
    }
    for b in 0..blocks {
        for k in 0..targets.len() {
            let i = (b + k) % targets.len();
            let t = &mut targets[i];
            let warm = if let Some(g) = &t.gate {
                let _ = std::fs::write(g, b"");
                10
            } else {
                3
            };
            for _ in 0..warm {
                t.term.echo(next(), timeout);
            }
            for _ in 0..per {
                if out[i].len() < n {
                    out[i].push(secs(t.term.echo(next(), timeout)));
                }
            }
            if let Some(g) = &t.gate {
                let _ = std::fs::remove_file(g);
                wait_quiet(&ctx.server_pids(t.sys), t.term.label());
            }
        }
    }
    out
}

/// Keystroke → echo round trip, idle and with a flooding sibling.
pub fn echo(ctx: &Ctx, n: usize) -> Vec<Row> {
    progress(&format!(
        "keystroke echo: {n} samples each, idle and under flood"
    ));
    let (aos, tmux) = (&ctx.aos, &ctx.tmux);
    let script = "stty raw -echo; printf 'RTT-READY\\n'; exec cat";
    let direct = Term::spawn(
        "direct cat",
        &["sh", "-c", script],
        &[("TERM", "xterm-256color")],
        &[],
        &ctx.dir,
        80,
        24,
    );
    aos.create("rtt", &["sh", "-c", script]);
    tmux.new_session("rtt", 80, 24, &["sh", "-c", script]);
    let mut targets = vec![
        EchoTarget {
            sys: Sys::AgentOs,
            term: aos.attach("rtt", 80, 24),
            gate: None,
        },
        EchoTarget {
            sys: Sys::Tmux,
            term: tmux.attach("rtt", 80, 24),
            gate: None,
        },
        EchoTarget {
            sys: Sys::Direct,
            term: direct,
            gate: None,
        },
    ];
    for t in targets.iter_mut() {
        t.term
            .wait_text("RTT-READY", TIMEOUT, "the echo loop to start");
    }
    let idle = echo_samples(ctx, &mut targets, n);

    progress("keystroke echo under flood");
    let gates: Vec<std::path::PathBuf> = ["aos", "tmux", "direct"]
        .iter()
        .map(|s| ctx.dir.join(format!("flood-gate-{s}")))
        .collect();
    let script = |i: usize| gated_yes(&gates[i]);
    let (s0, s1, s2) = (script(0), script(1), script(2));
    let direct_yes = Term::spawn("direct yes", &["sh", "-c", &s2], &[], &[], &ctx.dir, 80, 24);
    direct_yes.drain_in_background();
    aos.create("flood", &["sh", "-c", &s0]);
    tmux.new_window("rtt", "flood", &["sh", "-c", &s1]);
    let pids = [
        aos.agent_pid("flood"),
        tmux.pane_pid("rtt:flood"),
        direct_yes.pid(),
    ];
    let _guard = Flooders(pids.to_vec());
    for &p in &pids {
        wait_until("the flooder to run", TIMEOUT, || alive(p));
    }
    for (t, g) in targets.iter_mut().zip(gates) {
        t.gate = Some(g);
    }
    for t in &targets {
        wait_quiet(&ctx.server_pids(t.sys), t.term.label());
    }
    let flooded = echo_samples(ctx, &mut targets, n);
    drop(_guard);
    drop(targets);
    drop(direct_yes);
    aos.destroy("flood");
    aos.destroy("rtt");
    tmux.kill_session("rtt");

    let row = |what: String, s: &[Vec<f64>], p: f64| {
        let f = |q: f64| {
            let v: Vec<String> = s
                .iter()
                .map(|x| Unit::Seconds.fmt(percentile(x, q)))
                .collect();
            v.join(" / ")
        };
        let note = if p < 90.0 {
            format!("p90 {}", f(90.0))
        } else {
            format!("max {}", f(100.0))
        };
        Row::new(what, Unit::Seconds)
            .agentos(percentile(&s[0], p))
            .tmux(percentile(&s[1], p))
            .direct(percentile(&s[2], p))
            .note(note)
    };
    let le_tmux = |s: &[Vec<f64>], p: f64| percentile(&s[0], p) <= percentile(&s[1], p);
    vec![
        row(
            format!("Keystroke → echo p50, idle ({n} samples)"),
            &idle,
            50.0,
        )
        .goal("≤ 1.0× tmux", le_tmux(&idle, 50.0)),
        row(
            format!("Keystroke → echo p99, idle ({n} samples)"),
            &idle,
            99.0,
        )
        .goal("≤ 1 ms", percentile(&idle[0], 99.0) <= 1e-3),
        row(
            format!("Keystroke → echo p50, sibling flooding (`yes`, {n} samples)"),
            &flooded,
            50.0,
        )
        .goal("≤ tmux", le_tmux(&flooded, 50.0)),
        row(
            format!("Keystroke → echo p99, sibling flooding (`yes`, {n} samples)"),
            &flooded,
            99.0,
        )
        .goal("≤ tmux", le_tmux(&flooded, 99.0)),
    ]
}

/// The loop the `cat` agents run: `loop.sh FIFO FILE`.
pub const LOOP_SH: &str = "#!/bin/sh
# loop.sh FIFO FILE: for each token read from FIFO, cat FILE, then print DONE-<token>.
printf 'LOOP-READY\\n'
while :; do
  read tok < \"$1\" || continue
  cat \"$2\"
  printf 'DONE-%s\\n' \"$tok\"
done
";

/// `cat` of a big file through an attached client at 200×50.
pub fn throughput(ctx: &Ctx, file: &Path, reps: usize, warmup: bool) -> Vec<Row> {
    let size = std::fs::metadata(file)
        .unwrap_or_else(|e| panic!("no data file {}: {e}", file.display()))
        .len();
    let mb = size as f64 / 1e6;
    progress(&format!(
        "cat {mb:.0} MB through an attached client: {reps} reps each"
    ));
    let (aos, tmux) = (&ctx.aos, &ctx.tmux);
    let loop_sh = ctx.dir.join("loop.sh");
    std::fs::write(&loop_sh, LOOP_SH).expect("cannot write loop.sh");
    let loop_s = loop_sh.to_string_lossy().into_owned();
    let file_s = file.to_string_lossy().into_owned();
    let fifo = |s: Sys| {
        let p = ctx.dir.join(format!("cat-{}.fifo", s.tag()));
        mkfifo(&p);
        p
    };
    let fifos = [fifo(Sys::AgentOs), fifo(Sys::Tmux), fifo(Sys::Direct)];
    let fs: Vec<String> = fifos
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    aos.create("cat", &["sh", &loop_s, &fs[0], &file_s]);
    tmux.new_session("cat", 200, 50, &["sh", &loop_s, &fs[1], &file_s]);
    let direct = Term::spawn(
        "direct cat-loop",
        &["sh", &loop_s, &fs[2], &file_s],
        &[("TERM", "xterm-256color")],
        &[],
        &ctx.dir,
        200,
        50,
    );
    let mut terms = [
        (Sys::AgentOs, aos.attach("cat", 200, 50)),
        (Sys::Tmux, tmux.attach("cat", 200, 50)),
        (Sys::Direct, direct),
    ];
    for (_, t) in terms.iter_mut() {
        t.wait_text("LOOP-READY", TIMEOUT, "the cat loop to start");
    }
    let mut times = vec![Vec::new(); 3];
    let mut bytes = vec![Vec::new(); 3];
    let total = reps + usize::from(warmup);
    for rep in 0..total {
        for k in 0..3 {
            let i = (rep + k) % 3;
            let (sys, term) = &mut terms[i];
            let mut servers = ctx.server_pids(Sys::AgentOs);
            servers.extend(ctx.server_pids(Sys::Tmux));
            wait_quiet(&servers, "the servers");
            term.drain();
            term.bytes_read = 0;
            let token = format!("{}{rep}", sys.tag());
            let t0 = Instant::now();
            write_fifo(&fifos[i], &token);
            let seen = term.wait_raw(
                format!("DONE-{token}").as_bytes(),
                Duration::from_secs(600),
                "the end of the cat",
            );
            if rep >= usize::from(warmup) {
                times[i].push(secs(seen - t0));
                bytes[i].push(term.bytes_read as f64);
            }
            progress(&format!(
                "  {}: {:.3} s{}",
                term.label(),
                secs(seen - t0),
                if rep < usize::from(warmup) {
                    " (warm-up)"
                } else {
                    ""
                }
            ));
        }
    }
    let after_a = aos.mem_with_holders();
    let after_t = tmux.mem_server();
    drop(terms);
    aos.destroy("cat");
    tmux.kill_session("cat");

    let med: Vec<f64> = times.iter().map(|v| median(v)).collect();
    let client: Vec<f64> = bytes.iter().map(|v| median(v) / 1e6).collect();
    vec![
        Row::new(
            format!("`cat` {mb:.0} MB, client attached at 200×50 (median of {reps})"),
            Unit::Seconds,
        )
        .agentos(med[0])
        .tmux(med[1])
        .direct(med[2])
        .goal_verdict(
            "≤ 1.0× tmux; stretch ≤ 1.3× direct",
            format!(
                "{}; stretch {}",
                verdict(med[0] <= med[1]),
                verdict(med[0] <= 1.3 * med[2])
            ),
        )
        .note(format!(
            "{:.1} / {:.1} / {:.1} MB/s; client received {:.1} / {:.1} / {:.1} MB per run",
            mb / med[0],
            mb / med[1],
            mb / med[2],
            client[0],
            client[1],
            client[2]
        )),
        Row::new(
            "RSS after the `cat` runs (daemon + holders / tmux server)",
            Unit::Bytes,
        )
        .agentos(after_a.rss as f64)
        .tmux(after_t.rss as f64)
        .note("tmux holds 100k lines × 200 columns of history"),
    ]
}

/// A committed git repository of `dirs` × 100 small files, and a function
/// that runs git in it.
fn file_repo(repo: &Path, dirs: usize) -> (PathBuf, impl Fn(&[&str]) + use<>) {
    for d in 0..dirs {
        let dir = repo.join(format!("d{d}"));
        std::fs::create_dir_all(&dir).expect("cannot create the repository");
        for f in 0..100 {
            std::fs::write(dir.join(format!("f{f}.txt")), format!("file {d} {f}\n"))
                .expect("cannot write a file");
        }
    }
    let at = repo.to_path_buf();
    let git = move |args: &[&str]| {
        let st = std::process::Command::new("git")
            .args(["-c", "user.name=bench", "-c", "user.email=bench@localhost"])
            .args(args)
            .current_dir(&at)
            .stdout(std::process::Stdio::null())
            .status()
            .expect("cannot run git");
        assert!(st.success(), "git {args:?} failed");
    };
    git(&["init", "-q"]);
    git(&["add", "-A"]);
    git(&["commit", "-qm", &format!("{} files", dirs * 100)]);
    (repo.to_path_buf(), git)
}

/// Creating an agent with its own git worktree in a repository of 10,000
/// files (issue goal: under 1 s), against `git worktree add` by hand and
/// against an agent without isolation.
pub fn worktree(ctx: &Ctx, n: usize) -> Vec<Row> {
    progress(&format!("worktree: {n} agents in a 10k-file repository"));
    let (repo, git) = file_repo(&ctx.dir.join("wt-repo"), 100);
    let aos = &ctx.aos;
    let create = |name: &str, isolation: &str| {
        let mut c = aos.command(&[
            "create",
            name,
            "--isolation",
            isolation,
            "--detach",
            "--",
            "sleep",
            "100000",
        ]);
        c.current_dir(&repo);
        let out = c.output().expect("cannot run agentos create");
        assert!(
            out.status.success(),
            "agentos create {name} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let (mut w, mut plain, mut by_hand) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..n {
        w.push(secs(timed(|| create(&format!("wt{i}"), "worktree")).0));
        plain.push(secs(timed(|| create(&format!("np{i}"), "none")).0));
        by_hand.push(secs(
            timed(|| {
                git(&[
                    "worktree",
                    "add",
                    "-q",
                    "-b",
                    &format!("hand/{i}"),
                    &format!("../hand-{i}"),
                ])
            })
            .0,
        ));
    }
    for i in 0..n {
        aos.destroy(&format!("wt{i}"));
        aos.destroy(&format!("np{i}"));
    }
    let m = median(&w);
    vec![
        Row::new(
            format!("Create an agent with a worktree, 10k-file repository (median of {n}); direct = `git worktree add`"),
            Unit::Seconds,
        )
        .agentos(m)
        .direct(median(&by_hand))
        .goal("< 1 s", m < 1.0)
        .note(format!(
            "without isolation {}; max {}",
            Unit::Seconds.fmt(median(&plain)),
            Unit::Seconds.fmt(percentile(&w, 100.0))
        )),
    ]
}

/// What the sandbox costs: agent start (create → first output) and a
/// `git status` over 20,000 files, each inside an agent's PTY, sandboxed
/// (in its worktree) against unsandboxed (`--isolation none`, in place).
pub fn sandbox(ctx: &Ctx, n: usize) -> Vec<Row> {
    progress(&format!(
        "sandbox: {n} agents each way, 20k-file repository"
    ));
    let (repo, _) = file_repo(&ctx.dir.join("sbx-repo"), 200);
    let aos = &ctx.aos;
    let logs = |name: &str| {
        let out = aos
            .command(&["logs", name])
            .output()
            .expect("cannot run agentos logs");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let script = "echo STARTED; for i in 1 2 3 4 5 6; do s=$(date +%s%N); git status --porcelain >/dev/null; e=$(date +%s%N); echo GS=$(( (e-s)/1000 ))us; done; echo BENCH-DONE; exec sleep 100000";
    // Returns (seconds to first output, git status samples in seconds).
    let run = |name: &str, isolation: &str| -> (f64, Vec<f64>) {
        let t0 = std::time::Instant::now();
        let mut c = aos.command(&[
            "create",
            name,
            "--isolation",
            isolation,
            "--detach",
            "--",
            "bash",
            "-c",
            script,
        ]);
        c.current_dir(&repo);
        let out = c.output().expect("cannot run agentos create");
        assert!(
            out.status.success(),
            "agentos create {name} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        while !logs(name).contains("STARTED") {
            assert!(t0.elapsed().as_secs() < 60, "{name} never started");
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        let start = t0.elapsed().as_secs_f64();
        let t1 = std::time::Instant::now();
        let text = loop {
            let l = logs(name);
            if l.contains("BENCH-DONE") {
                break l;
            }
            assert!(t1.elapsed().as_secs() < 300, "{name} never finished");
            std::thread::sleep(std::time::Duration::from_millis(20));
        };
        let gs: Vec<f64> = text
            .lines()
            .filter_map(|l| {
                l.trim()
                    .strip_prefix("GS=")?
                    .strip_suffix("us")?
                    .parse::<f64>()
                    .ok()
            })
            .skip(1) // the first one refreshes a fresh index
            .map(|us| us / 1e6)
            .collect();
        aos.destroy(name);
        (start, gs)
    };
    let (mut start_s, mut start_p, mut gs_s, mut gs_p) = (vec![], vec![], vec![], vec![]);
    for i in 0..n {
        let (a, b) = run(&format!("sbx{i}"), "worktree");
        start_s.push(a);
        gs_s.extend(b);
        let (a, b) = run(&format!("plain{i}"), "none");
        start_p.push(a);
        gs_p.extend(b);
    }
    let (ms, mp) = (median(&start_s), median(&start_p));
    let (gs, gp) = (median(&gs_s), median(&gs_p));
    vec![
        Row::new(
            format!("Agent start, create → first output (median of {n}); direct = unsandboxed agent"),
            Unit::Seconds,
        )
        .agentos(ms)
        .direct(mp)
        .note(format!(
            "sandboxed includes creating the worktree; ratio {:.2}×",
            ms / mp.max(1e-9)
        )),
        Row::new(
            format!("`git status` over 20k files inside the agent (median of {}); direct = unsandboxed agent", gs_s.len()),
            Unit::Seconds,
        )
        .agentos(gs)
        .direct(gp)
        .note(format!("ratio {:.2}× (Landlock + seccomp on every file access)", gs / gp.max(1e-9))),
    ]
}
