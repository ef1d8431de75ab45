//! The results: one row per figure, rendered as a markdown table with the
//! AgentOS/tmux and AgentOS/direct ratios (lower is better everywhere),
//! under a header that says which machine, when, and with what command.

use crate::stats::Unit;

/// One measured figure for AgentOS, tmux and (where the method has one) a
/// direct PTY.
#[derive(Debug, Clone)]
pub struct Row {
    pub what: String,
    pub unit: Unit,
    pub agentos: Option<f64>,
    pub tmux: Option<f64>,
    pub direct: Option<f64>,
    /// The target from DESIGN.md §4 and whether this run met it.
    pub goal: Option<(String, String)>,
    pub note: String,
}

impl Row {
    pub fn new(what: impl Into<String>, unit: Unit) -> Row {
        Row {
            what: what.into(),
            unit,
            agentos: None,
            tmux: None,
            direct: None,
            goal: None,
            note: String::new(),
        }
    }

    pub fn agentos(mut self, v: f64) -> Row {
        self.agentos = Some(v);
        self
    }

    pub fn tmux(mut self, v: f64) -> Row {
        self.tmux = Some(v);
        self
    }

    pub fn direct(mut self, v: f64) -> Row {
        self.direct = Some(v);
        self
    }

    /// The design target `text`, met or not.
    pub fn goal(mut self, text: impl Into<String>, met: bool) -> Row {
        self.goal = Some((text.into(), verdict(met).into()));
        self
    }

    /// The design target `text` with a verdict of the caller's wording.
    pub fn goal_verdict(mut self, text: impl Into<String>, verdict: impl Into<String>) -> Row {
        self.goal = Some((text.into(), verdict.into()));
        self
    }

    pub fn note(mut self, n: impl Into<String>) -> Row {
        self.note = n.into();
        self
    }
}

pub fn verdict(met: bool) -> &'static str {
    if met { "met" } else { "missed" }
}

fn ratio(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 && a >= 0.0 => {
            let r = a / b;
            if r < 10.0 {
                format!("{r:.2}×")
            } else if r < 100.0 {
                format!("{r:.1}×")
            } else {
                format!("{r:.0}×")
            }
        }
        _ => "–".into(),
    }
}

/// The markdown table.
pub fn table(rows: &[Row]) -> String {
    let mut s = String::from(
        "| Measurement | AgentOS | tmux | AgentOS / tmux | direct PTY | AgentOS / direct | Goal (DESIGN.md §4) | Notes |\n\
         |---|---:|---:|---:|---:|---:|---|---|\n",
    );
    for r in rows {
        let f = |v: Option<f64>| v.map(|v| r.unit.fmt(v)).unwrap_or_else(|| "–".into());
        let goal = match &r.goal {
            Some((t, v)) => format!("{t}: {v}"),
            None => "–".into(),
        };
        s.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} |\n",
            r.what,
            f(r.agentos),
            f(r.tmux),
            ratio(r.agentos, r.tmux),
            f(r.direct),
            ratio(r.agentos, r.direct),
            goal,
            r.note
        ));
    }
    s
}

/// Facts about the machine and the run, for the header.
#[derive(Debug, Clone)]
pub struct RunInfo {
    pub date: String,
    pub command: String,
    pub nproc: usize,
    pub cpu: String,
    pub kernel: String,
    pub tmux_version: String,
    pub agentos_version: String,
    pub agentos_bin: String,
    pub quick: bool,
    pub load_before: String,
    pub load_after: String,
    pub elapsed_s: f64,
}

impl RunInfo {
    /// Reads what it can from /proc and the tools themselves.
    pub fn gather(command: String, tmux: &std::path::Path, agentos: &std::path::Path) -> RunInfo {
        let out = |p: &std::path::Path, a: &[&str]| {
            std::process::Command::new(p)
                .args(a)
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
                .unwrap_or_else(|e| format!("unknown ({e})"))
        };
        let cpu = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|t| {
                t.lines()
                    .find(|l| l.starts_with("model name"))
                    .and_then(|l| l.split_once(':'))
                    .map(|(_, v)| v.trim().to_string())
            })
            .unwrap_or_else(|| "unknown".into());
        RunInfo {
            date: out(std::path::Path::new("date"), &["-u", "+%Y-%m-%d %H:%M UTC"]),
            command,
            nproc: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(0),
            cpu,
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .map(|s| s.trim().to_string())
                .unwrap_or_else(|_| "unknown".into()),
            tmux_version: out(tmux, &["-V"]),
            agentos_version: out(agentos, &["--version"]),
            agentos_bin: agentos.display().to_string(),
            quick: false,
            load_before: loadavg(),
            load_after: String::new(),
            elapsed_s: 0.0,
        }
    }
}

/// `/proc/loadavg`'s first three fields.
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

/// The whole results file: header, table, method notes.
pub fn document(info: &RunInfo, rows: &[Row], params: &str) -> String {
    format!(
        "# AgentOS vs tmux: side-by-side benchmark results\n\
\n\
Produced by `crates/bench` (`agentos-bench`), which runs AgentOS and tmux in the same run, \
interleaving their repetitions, and reports medians with the ratios AgentOS / tmux and \
AgentOS / direct PTY (**lower is better in every row**). Read ratios, not absolutes: \
absolute times depend on the machine and its load.\n\
\n\
- **Machine:** {nproc} CPUs, {cpu}; Linux {kernel}; {tmux}; {aos} (`{bin}`)\n\
- **Date:** {date}; load average {lb} before, {la} after; the run took {el:.0} s\n\
- **Command:** `{cmd}`{quick}\n\
- **Parameters:** {params}\n\
\n\
To reproduce: `cargo build --release -p agentos-cli -p agentos-bench && \
cargo run --release -p agentos-bench -- [--quick] [--out FILE]`. The harness runs the `agentos` \
binary next to its own executable (`target/release/agentos`; it builds it with \
`cargo build --release -p agentos-cli` if it is missing), a daemon with a temporary \
`AGENTOS_HOME`, and a private tmux server (`tmux -L bench-<pid> -f <conf>` with \
`history-limit 100000` and `status off`); it stops both at the end.\n\
\n\
{table}\n\
## What each row means\n\
\n\
- **Keystroke → echo**: the agent/pane runs `stty raw -echo; exec cat`; the harness is the outer \
terminal of `agentos attach` / `tmux attach` (a real PTY, 80×24), writes one letter and times \
until it reads it back (escape sequences stripped). Samples are taken in blocks that rotate \
between the systems, after a warm-up. *direct PTY*: the harness runs the same `cat` in a PTY of \
its own, the floor for one PTY hop.\n\
- **… sibling flooding**: the same while a second agent / a second (hidden) tmux window runs \
`yes` into its own terminal; for direct, a second PTY running `yes` drained by a harness thread. \
Only the flooder of the system being measured runs (each flooder loops `yes | head -n 100000` while its gate file exists; tmux resumes a stopped pane by itself, so `SIGSTOP` could not hold one still).\n\
- **`cat` of a file through an attached client (200×50)**: the agent/pane loops on reading a \
token from a FIFO, then `cat FILE; echo DONE-<token>`; timed from writing the token until \
`DONE-<token>` appears in the client's drained output. The file is base64 text \
(`head -c N /dev/urandom | base64 -w 76`). Client bytes: what the outer terminal received.\n\
- **RSS**: the sum of VmRSS (`/proc/<pid>/status`) of the daemon plus every live `agentos shim` \
holder (pids from `run/*/holder.json`); agents themselves excluded. tmux: the server process. \
Notes give the PSS sum too (shared pages split between processes: the holders share the \
`agentos` binary's pages with the daemon).\n\
- **Scrollback per line**: RSS delta after the agent/pane prints 100,000 lines of 79 plain \
characters (80×24), divided by 100,000. Read after a client attached and saw the end marker \
(so the server processed all of it), then detached. AgentOS keeps history in an on-disk log \
(page cache, not RSS).\n\
- **Attach to first paint**: the agent/pane printed `seq 1 100000` and a marker, then idles; \
timed from spawning the attach client in a PTY (80×24) until the marker is visible.\n\
- **CLI warm start**: wall time of `agentos list` (daemon running) vs `tmux ls`, \
interleaved.\n\
- **Create**: wall time of `agentos create NAME --detach -- sleep 100000` vs \
`tmux new-window -d sleep 100000`, interleaved (the agent's own start-up is not included).\n",
        nproc = info.nproc,
        cpu = info.cpu,
        kernel = info.kernel,
        tmux = info.tmux_version,
        aos = info.agentos_version,
        bin = info.agentos_bin,
        date = info.date,
        lb = info.load_before,
        la = info.load_after,
        el = info.elapsed_s,
        cmd = info.command,
        quick = if info.quick {
            " (quick mode: fewer samples and a smaller file, for a smoke test)"
        } else {
            ""
        },
        params = params,
        table = table(rows),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_has_ratios_and_dashes() {
        let rows = vec![
            Row::new("echo p50", Unit::Seconds)
                .agentos(0.0005)
                .tmux(0.00025)
                .direct(0.0001),
            Row::new("rss", Unit::Bytes)
                .agentos(2.0 * 1024.0 * 1024.0)
                .goal("≤ 15 MB", true),
        ];
        let t = table(&rows);
        assert!(t.contains("| echo p50 | 500 µs | 250 µs | 2.00× | 100 µs | 5.00× | – |"));
        assert!(t.contains("| rss | 2.0 MiB | – | – | – | – | ≤ 15 MB: met |"));
    }
}
