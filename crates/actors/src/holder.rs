//! The per-agent PTY holder (`agentos shim`): a tiny process that owns the
//! PTY master, the agent's child process and its append-only output log, so
//! that agents outlive the daemon (the containerd-shim pattern).
//!
//! Files in the agent directory:
//! - `spec.json`   what to run (written by the daemon, mode 0600);
//! - `output.log`  every output byte, appended; a byte's offset is its sequence number;
//! - `holder.sock` where the daemon connects ([`agentos_proto::HolderCmd`]/[`HolderEvent`]);
//! - `holder.json` the holder's and the child's pids;
//! - `exit.json`   the child's exit status, once it has exited.
//!
//! Threads, no async runtime: one reads the PTY, one waits for the child,
//! one accepts; each connection has a reader and a writer that follows the
//! log (from the in-memory ring, or from the file when it fell behind), so a
//! slow or absent daemon never blocks the agent.

use agentos_proto::{
    HOLDER_MAGIC, HolderCmd, HolderEvent, PROTOCOL_VERSION, check_hello, hello_bytes, read_frame,
    write_frame,
};
use portable_pty::{CommandBuilder, MasterPty, PtySize, native_pty_system};
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// Bytes of recent output kept in memory for fast catch-up.
const RING_BYTES: usize = 1024 * 1024;
/// Largest output frame sent to the daemon: small enough that parsing one
/// never holds an agent's thread for long.
const MAX_CHUNK: usize = 64 * 1024;

/// What the holder runs. Written by the daemon to `spec.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HolderSpec {
    pub agent_id: String,
    pub name: String,
    pub command: Vec<String>,
    pub cwd: String,
    pub env: Vec<(String, String)>,
    pub cols: u16,
    pub rows: u16,
    /// Not used by the holder: lets the daemon rebuild its records from run
    /// directories if the store is lost.
    #[serde(default)]
    pub agent_type: String,
    #[serde(default)]
    pub workspace_id: String,
    #[serde(default)]
    pub workspace: String,
    #[serde(default)]
    pub base_command: Vec<String>,
    #[serde(default)]
    pub created_at_ms: u64,
}

/// `holder.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HolderRecord {
    pub holder_pid: u32,
    pub child_pid: Option<u32>,
    pub started_at_ms: u64,
    pub started_seq: u64,
}

/// `exit.json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ExitRecord {
    pub code: i32,
    pub signal: Option<i32>,
    pub at_ms: u64,
    /// Set when the command could not be started at all.
    #[serde(default)]
    pub error: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum HolderError {
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid spec {path}: {message}")]
    Spec { path: PathBuf, message: String },
    #[error("could not start `{command}`: {message}")]
    Spawn { command: String, message: String },
}

/// Paths of one agent directory.
#[derive(Debug, Clone)]
pub struct AgentDir(pub PathBuf);

impl AgentDir {
    pub fn spec(&self) -> PathBuf {
        self.0.join("spec.json")
    }
    pub fn socket(&self) -> PathBuf {
        self.0.join("holder.sock")
    }
    pub fn log(&self) -> PathBuf {
        self.0.join("output.log")
    }
    pub fn record(&self) -> PathBuf {
        self.0.join("holder.json")
    }
    pub fn exit(&self) -> PathBuf {
        self.0.join("exit.json")
    }
    pub fn read_exit(&self) -> Option<ExitRecord> {
        serde_json::from_slice(&fs::read(self.exit()).ok()?).ok()
    }
    pub fn read_record(&self) -> Option<HolderRecord> {
        serde_json::from_slice(&fs::read(self.record()).ok()?).ok()
    }
    pub fn read_spec(&self) -> Result<HolderSpec, HolderError> {
        let path = self.spec();
        let bytes = fs::read(&path).map_err(|source| HolderError::Io {
            what: "reading",
            path: path.clone(),
            source,
        })?;
        serde_json::from_slice(&bytes).map_err(|e| HolderError::Spec {
            path,
            message: e.to_string(),
        })
    }
    pub fn write_spec(&self, spec: &HolderSpec) -> Result<(), HolderError> {
        let data = serde_json::to_vec_pretty(spec).map_err(|e| HolderError::Spec {
            path: self.spec(),
            message: e.to_string(),
        })?;
        write_atomic(&self.spec(), &data, 0o600)
    }
    /// Length of the output log = the next sequence number.
    pub fn log_len(&self) -> u64 {
        fs::metadata(self.log()).map(|m| m.len()).unwrap_or(0)
    }
}

/// Write a file by renaming a fully written temporary over it.
pub fn write_atomic(path: &Path, data: &[u8], mode: u32) -> Result<(), HolderError> {
    let tmp = path.with_extension("tmp");
    let io = |source| HolderError::Io {
        what: "writing",
        path: path.to_path_buf(),
        source,
    };
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .map_err(io)?;
    f.write_all(data).map_err(io)?;
    f.sync_data().map_err(io)?;
    fs::rename(&tmp, path).map_err(io)
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

struct LogState {
    ring: VecDeque<u8>,
    /// Sequence number of `ring[0]`.
    ring_start: u64,
    /// Total bytes written (next sequence number).
    total: u64,
    reader_eof: bool,
    exit: Option<ExitRecord>,
    /// Connections whose writer has not yet delivered `Exited`.
    open_writers: usize,
    /// The child has exited: its pid may be reused, so never signal it again.
    child_gone: bool,
}

struct Shared {
    state: Mutex<LogState>,
    cond: Condvar,
    log_path: PathBuf,
    info: HolderEvent,
    writer: Mutex<Box<dyn Write + Send>>,
    master: Mutex<Box<dyn MasterPty + Send>>,
    child_pid: Option<u32>,
    /// Seccomp supervisors of a rootless sandbox (kept alive here).
    supervisors: Mutex<Vec<agentos_sandbox::notify::Supervisor>>,
    /// `audit.jsonl`: the calls they observed.
    audit_path: PathBuf,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Record that the agent could not be started (the holder failed before or
/// while spawning it), so the daemon reports `error {message}`.
pub fn record_failure(dir: &Path, message: &str) {
    let exit = ExitRecord {
        code: 127,
        signal: None,
        at_ms: now_ms(),
        error: Some(message.to_string()),
    };
    let ad = AgentDir(dir.to_path_buf());
    let _ = write_atomic(
        &ad.exit(),
        &serde_json::to_vec(&exit).unwrap_or_default(),
        0o600,
    );
    let _ = fs::remove_file(ad.socket());
}

/// Run the holder for the agent in `dir` until its child exits and the
/// daemon (if connected) has been told. Blocking; call in a fresh process.
pub fn run(dir: &Path) -> Result<i32, HolderError> {
    let ad = AgentDir(dir.to_path_buf());
    let spec = ad.read_spec()?;
    let _ = fs::remove_file(ad.exit());
    let io = |what, path: PathBuf| move |source| HolderError::Io { what, path, source };

    let mut log = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(ad.log())
        .map_err(io("opening", ad.log()))?;
    let started_seq = log.metadata().map(|m| m.len()).unwrap_or(0);

    let pty = native_pty_system();
    let pair = pty
        .openpty(PtySize {
            rows: spec.rows.max(1),
            cols: spec.cols.max(1),
            pixel_width: 0,
            pixel_height: 0,
        })
        .map_err(|e| HolderError::Spawn {
            command: spec.command.join(" "),
            message: format!("openpty: {e}"),
        })?;
    let Some(program) = spec.command.first() else {
        return Err(HolderError::Spec {
            path: ad.spec(),
            message: "empty command".into(),
        });
    };
    let mut cmd = CommandBuilder::new(program);
    cmd.args(&spec.command[1..]);
    cmd.cwd(&spec.cwd);
    cmd.env_clear();
    for (k, v) in &spec.env {
        cmd.env(k, v);
    }
    let child = pair
        .slave
        .spawn_command(cmd)
        .map_err(|e| HolderError::Spawn {
            command: spec.command.join(" "),
            message: e.to_string(),
        })?;
    drop(pair.slave);
    let child_pid = child.process_id();
    let started_at_ms = now_ms();
    let record = HolderRecord {
        holder_pid: std::process::id(),
        child_pid,
        started_at_ms,
        started_seq,
    };
    let _ = write_atomic(
        &ad.record(),
        &serde_json::to_vec(&record).unwrap_or_default(),
        0o600,
    );

    let mut reader = pair
        .master
        .try_clone_reader()
        .map_err(|e| HolderError::Spawn {
            command: spec.command.join(" "),
            message: format!("pty reader: {e}"),
        })?;
    let writer = pair.master.take_writer().map_err(|e| HolderError::Spawn {
        command: spec.command.join(" "),
        message: format!("pty writer: {e}"),
    })?;

    let shared = Arc::new(Shared {
        state: Mutex::new(LogState {
            ring: VecDeque::with_capacity(64 * 1024),
            ring_start: started_seq,
            total: started_seq,
            reader_eof: false,
            exit: None,
            open_writers: 0,
            child_gone: false,
        }),
        cond: Condvar::new(),
        log_path: ad.log(),
        supervisors: Mutex::new(Vec::new()),
        audit_path: ad.0.join("audit.jsonl"),
        info: HolderEvent::Info {
            holder_pid: std::process::id(),
            child_pid,
            total: started_seq,
            started_seq,
            started_at_ms,
            cols: spec.cols,
            rows: spec.rows,
        },
        writer: Mutex::new(writer),
        master: Mutex::new(pair.master),
        child_pid,
    });

    // Listen before reading output so the daemon can connect at once.
    let sock = ad.socket();
    let _ = fs::remove_file(&sock);
    let listener = UnixListener::bind(&sock).map_err(io("binding", sock.clone()))?;

    // PTY reader: append to the log and the ring, wake followers.
    {
        let shared = shared.clone();
        std::thread::Builder::new()
            .name("pty-reader".into())
            .spawn(move || {
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    let n = match reader.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    // The log write happens before the bytes become visible, so
                    // a follower reading from the file never sees a gap.
                    if let Err(e) = log.write_all(&buf[..n]) {
                        eprintln!("agentos shim: writing output log: {e}");
                    }
                    let mut st = lock(&shared.state);
                    st.ring.extend(&buf[..n]);
                    st.total += n as u64;
                    let excess = st.ring.len().saturating_sub(RING_BYTES);
                    if excess > 0 {
                        st.ring.drain(..excess);
                        st.ring_start += excess as u64;
                    }
                    drop(st);
                    shared.cond.notify_all();
                }
                lock(&shared.state).reader_eof = true;
                shared.cond.notify_all();
            })
            .map_err(io("spawning thread", sock.clone()))?;
    }

    // Accept loop.
    {
        let shared = shared.clone();
        std::thread::Builder::new()
            .name("accept".into())
            .spawn(move || {
                for conn in listener.incoming() {
                    let Ok(conn) = conn else { continue };
                    let shared = shared.clone();
                    let _ = std::thread::Builder::new()
                        .name("conn".into())
                        .spawn(move || serve(conn, shared));
                }
            })
            .map_err(io("spawning thread", sock.clone()))?;
    }

    // Wait for the child without reaping it, mark it gone (so no signal can
    // reach a reused pid), then reap it ourselves to learn the status.
    wait_exit_noreap(child_pid);
    lock(&shared.state).child_gone = true;
    let (code, signal) = wait_child(child_pid);
    drop(child);
    // Let the reader drain what the child wrote (bounded: a grandchild may
    // keep the PTY open forever).
    {
        let deadline = Instant::now() + Duration::from_millis(500);
        let mut st = lock(&shared.state);
        while !st.reader_eof {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            st = shared
                .cond
                .wait_timeout(st, left)
                .map(|r| r.0)
                .unwrap_or_else(|p| p.into_inner().0);
        }
    }
    let exit = ExitRecord {
        code,
        signal,
        at_ms: now_ms(),
        error: None,
    };
    let _ = write_atomic(
        &ad.exit(),
        &serde_json::to_vec(&exit).unwrap_or_default(),
        0o600,
    );
    {
        let mut st = lock(&shared.state);
        st.exit = Some(exit);
        shared.cond.notify_all();
        // Give a connected daemon the chance to receive everything.
        let deadline = Instant::now() + Duration::from_secs(3);
        while st.open_writers > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            st = shared
                .cond
                .wait_timeout(st, left)
                .map(|r| r.0)
                .unwrap_or_else(|p| p.into_inner().0);
        }
    }
    let _ = fs::remove_file(&sock);
    Ok(code)
}

fn wait_exit_noreap(pid: Option<u32>) {
    use nix::sys::wait::{Id, WaitPidFlag, waitid};
    let Some(pid) = pid else { return };
    let pid = nix::unistd::Pid::from_raw(pid as i32);
    while let Err(nix::errno::Errno::EINTR) =
        waitid(Id::Pid(pid), WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT)
    {}
}

fn wait_child(pid: Option<u32>) -> (i32, Option<i32>) {
    use nix::sys::wait::{WaitStatus, waitpid};
    let Some(pid) = pid else { return (-1, None) };
    let pid = nix::unistd::Pid::from_raw(pid as i32);
    loop {
        match waitpid(pid, None) {
            Ok(WaitStatus::Exited(_, code)) => return (code, None),
            Ok(WaitStatus::Signaled(_, sig, _)) => return (128 + sig as i32, Some(sig as i32)),
            Ok(_) => continue,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => return (-1, None),
        }
    }
}

fn serve(mut conn: UnixStream, shared: Arc<Shared>) {
    let mut hello = [0u8; 8];
    if conn.read_exact(&mut hello).is_err() {
        return;
    }
    let _ = conn.write_all(&hello_bytes(HOLDER_MAGIC, PROTOCOL_VERSION));
    if check_hello(HOLDER_MAGIC, hello).is_err() {
        return;
    }
    let mut info = shared.info.clone();
    if let HolderEvent::Info { total, .. } = &mut info {
        *total = lock(&shared.state).total;
    }
    if write_frame(&mut conn, &info).is_err() {
        return;
    }
    let (since, lag_limit) = match read_frame::<HolderCmd>(&mut conn) {
        Ok(HolderCmd::Subscribe { since, lag_limit }) => (since, lag_limit),
        Ok(HolderCmd::Supervise { pid, fd }) => {
            let error = supervise(&shared, pid, fd).err();
            let _ = write_frame(&mut conn, &HolderEvent::Ack { error });
            return;
        }
        _ => return,
    };
    let Ok(out) = conn.try_clone() else { return };
    lock(&shared.state).open_writers += 1;
    let closed = Arc::new(AtomicBool::new(false));
    let follower = {
        let shared = shared.clone();
        let closed = closed.clone();
        std::thread::Builder::new()
            .name("follow".into())
            .spawn(move || follow(out, since, lag_limit, &shared, &closed))
    };
    // Commands from the daemon.
    while let Ok(cmd) = read_frame::<HolderCmd>(&mut conn) {
        match cmd {
            HolderCmd::Input { data } => {
                let mut w = lock(&shared.writer);
                let _ = w.write_all(&data);
                let _ = w.flush();
            }
            HolderCmd::Resize { cols, rows } => {
                let _ = lock(&shared.master).resize(PtySize {
                    rows: rows.max(1),
                    cols: cols.max(1),
                    pixel_width: 0,
                    pixel_height: 0,
                });
            }
            HolderCmd::Signal { signal } => {
                let st = lock(&shared.state);
                if let Some(pid) = shared.child_pid.filter(|_| !st.child_gone) {
                    // The child leads its own session: signal the whole group.
                    // Holding the lock keeps it from being reaped meanwhile.
                    unsafe {
                        libc::kill(-(pid as i32), signal);
                    }
                }
            }
            HolderCmd::Subscribe { .. } | HolderCmd::Supervise { .. } => {}
        }
    }
    let _ = conn.shutdown(std::net::Shutdown::Both);
    closed.store(true, Ordering::SeqCst);
    shared.cond.notify_all();
    if let Ok(handle) = follower {
        let _ = handle.join();
    } else {
        lock(&shared.state).open_writers -= 1;
    }
}

/// Take a rootless launcher's seccomp listener and record what it reports.
fn supervise(shared: &Arc<Shared>, pid: u32, fd: i32) -> Result<(), String> {
    // Only our own child (the launcher) may hand us a listener.
    if shared.child_pid != Some(pid) {
        return Err(format!("pid {pid} is not this holder's child"));
    }
    let listener = agentos_sandbox::notify::take_fd(pid, fd).map_err(|e| e.to_string())?;
    let path = shared.audit_path.clone();
    let file = std::sync::Mutex::new(
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| format!("{}: {e}", path.display()))?,
    );
    let sup = agentos_sandbox::notify::supervise(listener, move |c| {
        let line = serde_json::json!({
            "ts_ms": now_ms(),
            "pid": c.pid,
            "nr": c.nr,
            "path": c.path,
            "argv": c.argv,
            "addr": c.addr.map(|a| a.to_string()),
            "write": c.write,
            "exe": c.exe,
        });
        let mut f = lock(&file);
        let _ = writeln!(f, "{line}");
    });
    lock(&shared.supervisors).push(sup);
    Ok(())
}

/// Stream output from `cursor` onward, then `Exited`.
fn follow(
    mut out: UnixStream,
    mut cursor: u64,
    lag_limit: Option<u64>,
    shared: &Shared,
    closed: &AtomicBool,
) {
    let file = File::open(&shared.log_path).ok();
    let done = |shared: &Shared| {
        lock(&shared.state).open_writers -= 1;
        shared.cond.notify_all();
    };
    loop {
        let mut st = lock(&shared.state);
        cursor = cursor.min(st.total);
        while cursor == st.total && st.exit.is_none() && !closed.load(Ordering::SeqCst) {
            st = shared.cond.wait(st).unwrap_or_else(|p| p.into_inner());
        }
        if closed.load(Ordering::SeqCst) {
            drop(st);
            done(shared);
            return;
        }
        if cursor == st.total {
            let exit = st.exit.clone();
            drop(st);
            if let Some(e) = exit {
                let _ = write_frame(
                    &mut out,
                    &HolderEvent::Exited {
                        code: e.code,
                        signal: e.signal,
                    },
                );
            }
            done(shared);
            return;
        }
        if let Some(limit) = lag_limit
            && st.total - cursor > limit
        {
            // Too far behind: a snapshot is cheaper than the backlog.
            let total = st.total;
            drop(st);
            let _ = write_frame(&mut out, &HolderEvent::Lagged { total });
            done(shared);
            return;
        }
        let want = ((st.total - cursor) as usize).min(MAX_CHUNK);
        let data = if cursor >= st.ring_start {
            let off = (cursor - st.ring_start) as usize;
            let (a, b) = st.ring.as_slices();
            let mut v = Vec::with_capacity(want);
            if off < a.len() {
                let take = want.min(a.len() - off);
                v.extend_from_slice(&a[off..off + take]);
                v.extend_from_slice(&b[..want - take]);
            } else {
                v.extend_from_slice(&b[off - a.len()..off - a.len() + want]);
            }
            drop(st);
            v
        } else {
            drop(st);
            let mut v = vec![0u8; want];
            match file.as_ref().map(|f| f.read_at(&mut v, cursor)) {
                Some(Ok(n)) if n > 0 => {
                    v.truncate(n);
                    v
                }
                _ => {
                    done(shared);
                    return;
                }
            }
        };
        let len = data.len() as u64;
        if write_frame(&mut out, &HolderEvent::Output { seq: cursor, data }).is_err() {
            done(shared);
            return;
        }
        cursor += len;
    }
}
