//! `agentos container-run --plan <file.json>`: the process a PTY holder runs
//! for an agent in a container (`--isolation docker|devcontainer`).
//!
//! Its stdin/stdout are the agent's PTY slave. It puts that terminal in raw
//! mode (the container has its own TTY, which does the line discipline),
//! creates the plan's container with a TTY, attaches to it before starting
//! it, relays bytes both ways, forwards SIGWINCH as a container resize, and
//! exits with the container's exit code. The container is removed on every
//! exit path of this process; SIGTERM/SIGHUP/SIGINT stop it first (2 s grace,
//! then SIGKILL). If this process is killed outright the container stays, and
//! the node removes it by its `agentos.agent` label.
//!
//! Exit status: the container's, or 125 when the container could not be run
//! (as `docker run`).

use agentos_node::container;
use agentos_node::devcontainer::{ContainerPlan, LifecycleCommand, shell_quote};
use anyhow::{Context, Result, bail};
use std::io::{Read, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

/// Exit status when the container could not be run at all.
const FAILED: i32 = 125;
/// How long a stopped container gets between its stop signal and SIGKILL;
/// the node's own grace (3 s) must be longer.
const STOP_GRACE: Duration = Duration::from_secs(2);

/// Run the plan; returns the exit status.
pub fn run(plan: &Path) -> i32 {
    match run_plan(plan) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("agentos container-run: {e:#}");
            FAILED
        }
    }
}

/// Did the OOM killer end it? The engine learns that from an event that
/// may arrive after the exit, so a 137 is looked at for a moment, in the
/// engine and in the container's memory cgroup.
fn oom_killed(
    handle: &tokio::runtime::Handle,
    docker: &container::Docker,
    id: &str,
    code: Option<i32>,
    event: &std::sync::atomic::AtomicBool,
) -> bool {
    let cgroup_says = || {
        [
            format!("/sys/fs/cgroup/memory/docker/{id}/memory.oom_control"),
            format!("/sys/fs/cgroup/docker/{id}/memory.events"),
            format!("/sys/fs/cgroup/system.slice/docker-{id}.scope/memory.events"),
        ]
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .any(|t| {
            t.lines().any(|l| {
                l.strip_prefix("oom_kill ")
                    .and_then(|n| n.trim().parse::<u64>().ok())
                    .is_some_and(|n| n > 0)
            })
        })
    };
    let tries = if code == Some(137) { 50 } else { 1 };
    for _ in 0..tries {
        if event.load(std::sync::atomic::Ordering::Relaxed)
            || cgroup_says()
            || handle.block_on(container::oom_killed(docker, id))
        {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

/// The container's `pids.events` (cgroup v1 or v2, cgroupfs or systemd).
fn pids_events(id: &str) -> Option<std::path::PathBuf> {
    [
        format!("/sys/fs/cgroup/pids/docker/{id}/pids.events"),
        format!("/sys/fs/cgroup/docker/{id}/pids.events"),
        format!("/sys/fs/cgroup/system.slice/docker-{id}.scope/pids.events"),
    ]
    .into_iter()
    .map(std::path::PathBuf::from)
    .find(|p| p.exists())
}

/// An agent that hits its process limit is stopped, and says why (the
/// node turns it to `error` with the reason).
fn watch_pids(
    handle: &tokio::runtime::Handle,
    docker: &container::Docker,
    id: &str,
    limit: &Path,
    max: i64,
    done: &std::sync::atomic::AtomicBool,
) {
    let mut events = None;
    while !done.load(std::sync::atomic::Ordering::Relaxed) {
        if events.is_none() {
            events = pids_events(id);
        }
        let hits = events
            .as_ref()
            .and_then(|p| std::fs::read_to_string(p).ok())
            .and_then(|t| {
                t.lines().find_map(|l| {
                    l.strip_prefix("max ")
                        .and_then(|n| n.trim().parse::<u64>().ok())
                })
            })
            .unwrap_or(0);
        if hits > 0 {
            let reason = format!("hit its process limit (max_processes = {max}); stopped");
            eprintln!("\r\nagentos: {reason}\r");
            let _ = std::fs::write(limit, serde_json::json!({ "reason": reason }).to_string());
            let _ = handle.block_on(container::stop(docker, id, STOP_GRACE));
            return;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Restores the terminal's modes when dropped.
struct RawMode {
    saved: Option<nix::sys::termios::Termios>,
}

impl RawMode {
    fn enter() -> RawMode {
        use nix::sys::termios::{SetArg, cfmakeraw, tcgetattr, tcsetattr};
        let stdin = std::io::stdin();
        let Ok(saved) = tcgetattr(stdin.as_fd()) else {
            return RawMode { saved: None };
        };
        let mut raw = saved.clone();
        cfmakeraw(&mut raw);
        let _ = tcsetattr(stdin.as_fd(), SetArg::TCSANOW, &raw);
        RawMode { saved: Some(saved) }
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        use nix::sys::termios::{SetArg, tcsetattr};
        if let Some(saved) = &self.saved {
            let _ = tcsetattr(std::io::stdin().as_fd(), SetArg::TCSANOW, saved);
        }
    }
}

/// The terminal size of `fd` (cols, rows), if it is a terminal.
fn term_size(fd: BorrowedFd<'_>) -> Option<(u16, u16)> {
    use std::os::fd::AsRawFd;
    let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
    // SAFETY: TIOCGWINSZ writes one winsize into the struct we own.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCGWINSZ, &mut ws) };
    (r == 0 && ws.ws_col > 0 && ws.ws_row > 0).then_some((ws.ws_col, ws.ws_row))
}

/// `initializeCommand` on the host, in the worktree (only when approved).
fn run_initialize(plan: &ContainerPlan) -> Result<()> {
    let Some(c) = &plan.initialize_command else {
        return Ok(());
    };
    if !plan.approve_initialize_command {
        return Ok(());
    }
    let script = match c {
        LifecycleCommand::Shell(s) => s.clone(),
        LifecycleCommand::Exec(argv) => argv
            .iter()
            .map(|a| shell_quote(a))
            .collect::<Vec<_>>()
            .join(" "),
        LifecycleCommand::Parallel(m) => m
            .values()
            .map(|c| match c {
                LifecycleCommand::Shell(s) => format!("( {s} ) &"),
                LifecycleCommand::Exec(argv) => format!(
                    "{} &",
                    argv.iter()
                        .map(|a| shell_quote(a))
                        .collect::<Vec<_>>()
                        .join(" ")
                ),
                LifecycleCommand::Parallel(_) => String::new(),
            })
            .chain(["wait".to_string()])
            .collect::<Vec<_>>()
            .join("\n"),
    };
    eprintln!("[agentos] initializeCommand (approved, on the host)");
    let status = std::process::Command::new("/bin/sh")
        .arg("-c")
        .arg(&script)
        .current_dir(&plan.host_workspace)
        .status()
        .context("cannot run initializeCommand with /bin/sh")?;
    if !status.success() {
        bail!(
            "initializeCommand of {} failed ({status}); fix it or remove it, then start the agent again",
            plan.config_file
                .as_deref()
                .unwrap_or(Path::new("devcontainer.json"))
                .display()
        );
    }
    Ok(())
}

fn run_plan(plan_path: &Path) -> Result<i32> {
    let plan = ContainerPlan::read(plan_path)?;
    for w in &plan.warnings {
        eprintln!("agentos: warning: {w}");
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let handle = rt.handle().clone();
    let docker = rt.block_on(container::connect())?;
    run_initialize(&plan)?;
    let mut progress = |line: &str| eprintln!("[build] {line}");
    let image = rt.block_on(container::prepare_image(&docker, &plan, &mut progress))?;
    let id = rt.block_on(container::create(&docker, &plan, &image))?;

    // From here on the container exists: remove it on every way out.
    let oom = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    {
        let (docker, id, oom) = (docker.clone(), id.clone(), oom.clone());
        rt.spawn(async move {
            if container::oom_event(&docker, &id).await {
                oom.store(true, std::sync::atomic::Ordering::Relaxed);
            }
        });
    }
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watcher = {
        let (handle, docker, id, done) = (handle.clone(), docker.clone(), id.clone(), done.clone());
        let limit = container::limit_file(plan_path);
        let max = plan.limits.pids;
        std::thread::spawn(move || watch_pids(&handle, &docker, &id, &limit, max, &done))
    };
    let result = relay(&rt, &docker, &id);
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = watcher.join();
    if oom_killed(&handle, &docker, &id, result.as_ref().ok().copied(), &oom) {
        let reason = format!(
            "out of memory: killed at its max_memory limit ({} MiB)",
            plan.limits.memory_bytes >> 20
        );
        eprintln!("\r\nagentos: {reason}\r");
        let _ = std::fs::write(
            container::limit_file(plan_path),
            serde_json::json!({ "reason": reason }).to_string(),
        );
    }
    let _ = handle.block_on(container::remove(&docker, &id));
    result
}

fn relay(rt: &tokio::runtime::Runtime, docker: &container::Docker, id: &str) -> Result<i32> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM, SIGWINCH};
    let stream = container::attach_raw(docker, id)?;
    let mut to_container = stream
        .try_clone()
        .context("cannot clone the attach stream")?;
    let mut from_container = stream;
    let is_tty = term_size(std::io::stdin().as_fd()).is_some()
        || nix::unistd::isatty(std::io::stdin().as_fd()).unwrap_or(false);
    let raw = is_tty.then(RawMode::enter);
    // Signals are registered before the start, so an early resize or stop is not lost.
    let mut signals = signal_hook::iterator::Signals::new([SIGWINCH, SIGTERM, SIGHUP, SIGINT])
        .context("cannot install signal handlers")?;
    rt.block_on(container::start(docker, id))?;
    if let Some((cols, rows)) = term_size(std::io::stdin().as_fd()) {
        let _ = rt.block_on(container::resize(docker, id, cols, rows));
    }

    // container → our stdout (the PTY).
    let (out_done_tx, out_done) = mpsc::channel::<()>();
    std::thread::spawn(move || {
        let mut stdout = std::io::stdout().lock();
        let mut buf = [0u8; 32 * 1024];
        loop {
            match from_container.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if stdout.write_all(&buf[..n]).is_err() || stdout.flush().is_err() {
                        break;
                    }
                }
            }
        }
        let _ = out_done_tx.send(());
    });
    // Our stdin (the PTY) → container.
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin().lock();
        let mut buf = [0u8; 8 * 1024];
        loop {
            match stdin.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if to_container.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            }
        }
    });
    // Resizes and stop requests.
    {
        let handle = rt.handle().clone();
        let docker = docker.clone();
        let id = id.to_string();
        std::thread::spawn(move || {
            for sig in signals.forever() {
                if sig == SIGWINCH {
                    if let Some((cols, rows)) = term_size(std::io::stdin().as_fd()) {
                        let _ = handle.block_on(container::resize(&docker, &id, cols, rows));
                    }
                } else {
                    // The container stops; wait_exit below returns and the
                    // main path removes it.
                    let _ = handle.block_on(container::stop(&docker, &id, STOP_GRACE));
                }
            }
        });
    }

    let code = rt.block_on(container::wait_exit(docker, id))?;
    // The attach stream ends when the container does: let its last bytes out.
    let _ = out_done.recv_timeout(Duration::from_secs(2));
    drop(raw);
    Ok(code.clamp(0, 255) as i32)
}
