//! The two systems under test, driven through their own command lines:
//! AgentOS (the `agentos` binary with a private `AGENTOS_HOME`) and tmux (a
//! private server: `tmux -L bench-<pid> -f <conf>`). Also the memory
//! readings (`/proc/<pid>/status` VmRSS, `/proc/<pid>/smaps_rollup` Pss).

use crate::term::Term;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Environment variables that must not leak from the harness's own session.
pub const ENV_REMOVE: &[&str] = &["AGENTOS_SOCKET", "AGENTOS_AGENT_ID", "TMUX", "TMUX_PANE"];

/// Poll `cond` until it holds; panics with `what` after `timeout`.
pub fn wait_until(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(1);
    while !cond() {
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for: {what}");
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

fn run_ok(mut cmd: Command, what: &str) -> Output {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
    if !out.status.success() {
        panic!(
            "{what} failed ({}):\n--- stdout\n{}\n--- stderr\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    out
}

/// Resident memory of a set of processes.
#[derive(Debug, Clone, Copy, Default)]
pub struct Mem {
    /// Sum of VmRSS, bytes.
    pub rss: u64,
    /// Sum of Pss (shared pages split between their users), bytes.
    pub pss: u64,
}

impl Mem {
    pub fn of(pids: &[i32]) -> Mem {
        let mut m = Mem::default();
        for &pid in pids {
            m.rss += proc_kb(&format!("/proc/{pid}/status"), "VmRSS:")
                .unwrap_or_else(|| panic!("no VmRSS for pid {pid} (is it running?)"))
                * 1024;
            m.pss += proc_kb(&format!("/proc/{pid}/smaps_rollup"), "Pss:").unwrap_or(0) * 1024;
        }
        m
    }
}

pub fn proc_kb(path: &str, key: &str) -> Option<u64> {
    let text = std::fs::read_to_string(path).ok()?;
    let line = text.lines().find(|l| l.starts_with(key))?;
    line[key.len()..].split_whitespace().next()?.parse().ok()
}

/// Is `pid` a live (non-zombie) process?
pub fn alive(pid: i32) -> bool {
    pid > 0
        && std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| {
                let st = s.rsplit(')').next().unwrap_or("").trim_start();
                !st.starts_with('Z') && !st.starts_with('X')
            })
            .unwrap_or(false)
}

pub fn signal(pid: i32, sig: libc::c_int) {
    if pid > 0 {
        // SAFETY: plain kill(2).
        unsafe {
            libc::kill(pid, sig);
        }
    }
}

/// An AgentOS node with a private home.
#[derive(Debug)]
pub struct AgentOs {
    pub bin: PathBuf,
    pub home: PathBuf,
    pub work: PathBuf,
}

impl AgentOs {
    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.bin);
        c.args(args)
            .current_dir(&self.work)
            .env("AGENTOS_HOME", &self.home);
        for k in ENV_REMOVE {
            c.env_remove(k);
        }
        c
    }

    /// Runs `agentos ARGS` and requires success.
    pub fn run(&self, args: &[&str]) -> String {
        let out = run_ok(self.command(args), &format!("agentos {}", args.join(" ")));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn start(&self) {
        self.run(&["daemon", "start"]);
        wait_until("the AgentOS daemon to write its pid", TIMEOUT, || {
            self.daemon_pid().is_some_and(alive)
        });
    }

    pub fn daemon_pid(&self) -> Option<i32> {
        std::fs::read_to_string(self.home.join("daemon.pid"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
    }

    /// `agentos create NAME --detach -- ARGV`.
    pub fn create(&self, name: &str, argv: &[&str]) {
        let mut args = vec!["create", name, "--detach", "--"];
        args.extend_from_slice(argv);
        self.run(&args);
    }

    pub fn destroy(&self, name: &str) {
        self.run(&["destroy", name, "--force"]);
    }

    /// The pid of an agent's own process (from `agentos list --json`).
    pub fn agent_pid(&self, name: &str) -> i32 {
        let mut pid = 0;
        wait_until(&format!("agent {name} to have a pid"), TIMEOUT, || {
            let v: serde_json::Value = serde_json::from_str(&self.run(&["list", "--json"]))
                .expect("`agentos list --json` printed invalid JSON");
            pid = v
                .as_array()
                .into_iter()
                .flatten()
                .find(|a| a["name"] == name)
                .and_then(|a| a["pid"].as_i64())
                .unwrap_or(0) as i32;
            pid > 0
        });
        pid
    }

    /// `(holder_pid, child_pid)` of every agent directory.
    pub fn holder_records(&self) -> Vec<(i32, i32)> {
        let mut v = Vec::new();
        if let Ok(rd) = std::fs::read_dir(self.home.join("run")) {
            for e in rd.flatten() {
                if let Ok(t) = std::fs::read_to_string(e.path().join("holder.json"))
                    && let Ok(j) = serde_json::from_str::<serde_json::Value>(&t)
                {
                    v.push((
                        j["holder_pid"].as_i64().unwrap_or(0) as i32,
                        j["child_pid"].as_i64().unwrap_or(0) as i32,
                    ));
                }
            }
        }
        v
    }

    /// Pids of the live holders (`agentos shim`).
    pub fn live_holders(&self) -> Vec<i32> {
        self.holder_records()
            .into_iter()
            .map(|(h, _)| h)
            .filter(|&h| alive(h))
            .collect()
    }

    /// Waits until `n` holders are alive.
    pub fn wait_holders(&self, n: usize) {
        wait_until(&format!("{n} live AgentOS holders"), TIMEOUT, || {
            self.live_holders().len() == n
        });
    }

    /// The daemon alone.
    pub fn mem_daemon(&self) -> Mem {
        Mem::of(&[self.daemon_pid().expect("the daemon has no pid file")])
    }

    /// The daemon plus every live holder (agents excluded).
    pub fn mem_with_holders(&self) -> Mem {
        let mut pids = vec![self.daemon_pid().expect("the daemon has no pid file")];
        pids.extend(self.live_holders());
        Mem::of(&pids)
    }

    /// `agentos attach NAME` in a fresh `cols`×`rows` PTY.
    pub fn attach(&self, name: &str, cols: u16, rows: u16) -> Term {
        let bin = self.bin.to_string_lossy().into_owned();
        let home = self.home.to_string_lossy().into_owned();
        Term::spawn(
            &format!("agentos attach {name}"),
            &[&bin, "attach", name],
            &[("AGENTOS_HOME", &home), ("TERM", "xterm-256color")],
            ENV_REMOVE,
            &self.work,
            cols,
            rows,
        )
    }

    /// Stops the daemon and kills every agent and holder it left.
    pub fn stop(&self) {
        let _ = self
            .command(&["daemon", "stop", "--kill-agents"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        for (holder, child) in self.holder_records() {
            if alive(child) {
                signal(-child, libc::SIGKILL);
                signal(child, libc::SIGKILL);
            }
            if alive(holder) {
                signal(holder, libc::SIGKILL);
            }
        }
        if let Some(pid) = self.daemon_pid()
            && alive(pid)
        {
            signal(pid, libc::SIGKILL);
        }
    }
}

/// A private tmux server.
#[derive(Debug)]
pub struct Tmux {
    pub bin: PathBuf,
    pub socket: String,
    pub conf: PathBuf,
    pub work: PathBuf,
}

/// Where tmux puts the socket of `-L name` (tmux 3.3: `$TMUX_TMPDIR` or
/// `/tmp`, then `tmux-<uid>/<name>`).
fn tmux_socket_path(name: &str) -> PathBuf {
    let base = std::env::var_os("TMUX_TMPDIR")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/tmp"));
    // SAFETY: getuid(2) cannot fail.
    let uid = unsafe { libc::getuid() };
    base.join(format!("tmux-{uid}")).join(name)
}

impl Tmux {
    /// Writes the config (history-limit 100000, status line off).
    pub fn new(bin: &Path, dir: &Path, work: &Path) -> Tmux {
        let conf = dir.join("tmux.conf");
        std::fs::write(
            &conf,
            "set -g history-limit 100000\n\
             # Off so that the clock cannot be mistaken for an echo.\n\
             set -g status off\n",
        )
        .expect("cannot write tmux.conf");
        Tmux {
            bin: bin.to_path_buf(),
            socket: format!("bench-{}", std::process::id()),
            conf,
            work: work.to_path_buf(),
        }
    }

    fn base_args(&self) -> Vec<String> {
        vec![
            "-L".into(),
            self.socket.clone(),
            "-f".into(),
            self.conf.to_string_lossy().into_owned(),
        ]
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.bin);
        c.args(self.base_args()).args(args).current_dir(&self.work);
        for k in ENV_REMOVE {
            c.env_remove(k);
        }
        c
    }

    pub fn run(&self, args: &[&str]) -> String {
        let out = run_ok(self.command(args), &format!("tmux {}", args.join(" ")));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// A detached session of `cols`×`rows` running `argv`.
    pub fn new_session(&self, name: &str, cols: u16, rows: u16, argv: &[&str]) {
        let (c, r) = (cols.to_string(), rows.to_string());
        let mut args = vec![
            "new-session",
            "-d",
            "-s",
            name,
            "-n",
            name,
            "-x",
            &c,
            "-y",
            &r,
        ];
        args.extend_from_slice(argv);
        self.run(&args);
    }

    /// A detached window `name` in `session`, running `argv`.
    pub fn new_window(&self, session: &str, name: &str, argv: &[&str]) {
        let target = format!("{session}:");
        let mut args = vec!["new-window", "-d", "-t", &target, "-n", name];
        args.extend_from_slice(argv);
        self.run(&args);
    }

    pub fn kill_session(&self, name: &str) {
        self.run(&["kill-session", "-t", name]);
    }

    pub fn server_pid(&self) -> i32 {
        self.run(&["display-message", "-p", "#{pid}"])
            .trim()
            .parse()
            .expect("tmux printed no server pid")
    }

    /// The pid of the process in pane `target` (`session:window`).
    pub fn pane_pid(&self, target: &str) -> i32 {
        self.run(&["display-message", "-p", "-t", target, "#{pane_pid}"])
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("tmux printed no pane pid for {target}"))
    }

    pub fn mem_server(&self) -> Mem {
        Mem::of(&[self.server_pid()])
    }

    /// `tmux attach -t SESSION` in a fresh `cols`×`rows` PTY.
    pub fn attach(&self, session: &str, cols: u16, rows: u16) -> Term {
        let bin = self.bin.to_string_lossy().into_owned();
        let base = self.base_args();
        let mut argv: Vec<&str> = vec![&bin];
        argv.extend(base.iter().map(String::as_str));
        argv.extend(["attach-session", "-t", session]);
        Term::spawn(
            &format!("tmux attach -t {session}"),
            &argv,
            &[("TERM", "xterm-256color")],
            ENV_REMOVE,
            &self.work,
            cols,
            rows,
        )
    }

    /// Kills the server and removes its socket file.
    pub fn kill_server(&self) {
        let _ = self
            .command(&["kill-server"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = std::fs::remove_file(tmux_socket_path(&self.socket));
    }
}

/// The default deadline for setup steps.
pub const TIMEOUT: Duration = Duration::from_secs(30);
