//! Test harness: a node with a temporary `AGENTOS_HOME`, driven through the
//! real `agentos` binary, plus a real PTY for attach tests. Everything waits
//! on conditions with a timeout; nothing sleeps to synchronise.

#![allow(dead_code)]

pub mod relay;

use portable_pty::{CommandBuilder, PtySize, native_pty_system};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_agentos");
pub const T: Duration = Duration::from_secs(20);

pub fn fixtures_bin() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/bin")
}

/// Poll `cond` until it holds or `timeout` passes; panics with `what`.
pub fn wait_until(what: &str, timeout: Duration, cond: impl FnMut() -> bool) {
    if !try_wait(timeout, cond) {
        panic!("timed out after {timeout:?} waiting for: {what}");
    }
}

/// Poll `cond` until it holds (true) or `timeout` passes (false).
#[allow(dead_code)]
pub fn try_wait(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(2);
    while !cond() {
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(50));
    }
    true
}

pub struct Node {
    pub dir: tempfile::TempDir,
    pub home: PathBuf,
    pub work: PathBuf,
    pub path: String,
    pub extra_env: Vec<(String, String)>,
    /// Run every command as this uid/gid (a node without root).
    pub as_user: Option<u32>,
}

pub struct Out {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl std::fmt::Debug for Out {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {}\n--- stdout\n{}\n--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

impl From<Output> for Out {
    fn from(o: Output) -> Self {
        Out {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

impl Node {
    pub fn new() -> Node {
        let dir = tempfile::Builder::new()
            .prefix("aos")
            .tempdir_in("/tmp")
            .unwrap();
        let home = dir.path().join("h");
        let work = dir.path().join("work");
        std::fs::create_dir_all(&work).unwrap();
        let path = format!(
            "{}:{}",
            fixtures_bin().display(),
            std::env::var("PATH").unwrap_or_default()
        );
        Node {
            home,
            work,
            path,
            extra_env: vec![],
            as_user: None,
            dir,
        }
    }

    pub fn env(mut self, k: &str, v: &str) -> Self {
        self.extra_env.push((k.into(), v.into()));
        self
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(BIN);
        c.args(args)
            .current_dir(&self.work)
            .env_remove("AGENTOS_SOCKET")
            .env_remove("AGENTOS_AGENT_ID")
            .env("AGENTOS_HOME", &self.home)
            .env("PATH", &self.path)
            .env("SHELL", "/bin/bash")
            .env("FAKE_ARGV_LOG", self.argv_log())
            // Every test daemon's web server on a port of its own.
            .env("AGENTOS_WEB_LISTEN", "127.0.0.1:0")
            .stdin(std::process::Stdio::null());
        for (k, v) in &self.extra_env {
            c.env(k, v);
        }
        if let Some(u) = self.as_user {
            use std::os::unix::process::CommandExt;
            c.uid(u).gid(u);
        }
        c
    }

    /// Run in another directory.
    pub fn run_in(&self, dir: &Path, args: &[&str]) -> Out {
        self.command(args).current_dir(dir).output().unwrap().into()
    }

    pub fn ok_in(&self, dir: &Path, args: &[&str]) -> Out {
        let o = self.run_in(dir, args);
        if o.code != 0 {
            panic!(
                "agentos {args:?} in {} failed: {o:?}\n--- daemon log tail\n{}",
                dir.display(),
                self.daemon_log_tail()
            );
        }
        o
    }

    pub fn run(&self, args: &[&str]) -> Out {
        self.command(args).output().unwrap().into()
    }

    /// Run and require success.
    pub fn ok(&self, args: &[&str]) -> Out {
        let o = self.run(args);
        if o.code != 0 {
            panic!(
                "agentos {args:?} failed: {o:?}\n--- daemon log tail\n{}",
                self.daemon_log_tail()
            );
        }
        o
    }

    pub fn daemon_log_tail(&self) -> String {
        let mut out = String::new();
        for f in ["logs/daemon.log", "logs/daemon.stderr"] {
            let t = std::fs::read_to_string(self.home.join(f)).unwrap_or_default();
            let lines: Vec<&str> = t.lines().collect();
            out.push_str(&lines[lines.len().saturating_sub(15)..].join("\n"));
            out.push('\n');
        }
        out
    }

    pub fn argv_log(&self) -> PathBuf {
        self.dir.path().join("argv.jsonl")
    }

    pub fn list_json(&self) -> Vec<serde_json::Value> {
        let o = self.ok(&["list", "--all", "--json"]);
        serde_json::from_str(&o.stdout).unwrap_or_else(|e| panic!("bad json {e}: {}", o.stdout))
    }

    pub fn agent(&self, name: &str) -> serde_json::Value {
        self.list_json()
            .into_iter()
            .find(|a| a["name"] == name && a["live"] == true)
            .unwrap_or_else(|| panic!("no agent {name}"))
    }

    pub fn state(&self, name: &str) -> String {
        let o = self.ok(&["status", name, "--json"]);
        let v: serde_json::Value = serde_json::from_str(&o.stdout).unwrap();
        let s = &v["info"]["state"];
        match s {
            serde_json::Value::String(s) => s.to_lowercase(),
            serde_json::Value::Object(m) => m.keys().next().unwrap().to_lowercase(),
            _ => panic!("state {s}"),
        }
    }

    pub fn status_json(&self, name: &str) -> serde_json::Value {
        serde_json::from_str(&self.ok(&["status", name, "--json"]).stdout).unwrap()
    }

    pub fn logs(&self, name: &str) -> String {
        self.ok(&["logs", name]).stdout
    }

    pub fn wait_log(&self, name: &str, needle: &str) {
        wait_until(&format!("{name} prints {needle:?}"), T, || {
            self.logs(name).contains(needle)
        });
    }

    pub fn daemon_pid(&self) -> Option<i32> {
        std::fs::read_to_string(self.home.join("daemon.pid"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
    }

    pub fn holder_pids(&self) -> Vec<(i32, i32)> {
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

    /// Attach in a real PTY.
    pub fn attach(&self, args: &[&str], cols: u16, rows: u16) -> Pty {
        let mut cmd = CommandBuilder::new(BIN);
        cmd.args(args);
        cmd.cwd(&self.work);
        cmd.env("AGENTOS_HOME", &self.home);
        cmd.env("PATH", &self.path);
        cmd.env("TERM", "xterm-256color");
        cmd.env("AGENTOS_WEB_LISTEN", "127.0.0.1:0");
        cmd.env_remove("AGENTOS_SOCKET");
        cmd.env_remove("AGENTOS_AGENT_ID");
        for (k, v) in &self.extra_env {
            cmd.env(k, v);
        }
        Pty::spawn(cmd, cols, rows)
    }
}

/// A node configured as a P2P device: its name, LAN discovery, the
/// address it listens on; its sandboxed fake agents may write their argv log.
pub fn p2p_node(name: &str, mdns: bool, listen: &str) -> Node {
    let n = Node::new();
    std::fs::create_dir_all(&n.home).unwrap();
    std::fs::write(n.argv_log(), "").unwrap();
    std::fs::write(
        n.home.join("config.toml"),
        format!(
            "[sync]\nmdns = {mdns}\nlisten = \"{listen}\"\ndevice_name = \"{name}\"\n\n[security]\nallow_paths = [\"{}:rw\"]\n",
            n.argv_log().display()
        ),
    )
    .unwrap();
    n
}

/// A git repository with one commit (a.txt, src/lib.rs) under `dir`.
pub fn git_repo(dir: &Path) -> git2::Repository {
    let repo = git2::Repository::init(dir).unwrap();
    {
        let mut cfg = repo.config().unwrap();
        cfg.set_str("user.name", "tester").unwrap();
        cfg.set_str("user.email", "tester@example.invalid").unwrap();
    }
    std::fs::write(dir.join("a.txt"), "one\n").unwrap();
    std::fs::create_dir_all(dir.join("src")).unwrap();
    std::fs::write(dir.join("src/lib.rs"), "fn x() {}\n").unwrap();
    git_commit_all(&repo, "init");
    repo
}

pub fn git_commit_all(repo: &git2::Repository, msg: &str) {
    let mut idx = repo.index().unwrap();
    idx.add_all(["*"], git2::IndexAddOption::DEFAULT, None)
        .unwrap();
    idx.write().unwrap();
    let tree = repo.find_tree(idx.write_tree().unwrap()).unwrap();
    let sig = git2::Signature::now("tester", "tester@example.invalid").unwrap();
    let parents: Vec<git2::Commit> = repo
        .head()
        .ok()
        .and_then(|h| h.peel_to_commit().ok())
        .into_iter()
        .collect();
    let refs: Vec<&git2::Commit> = parents.iter().collect();
    repo.commit(Some("HEAD"), &sig, &sig, msg, &tree, &refs)
        .unwrap();
}

pub fn alive(pid: i32) -> bool {
    pid > 0 && unsafe { libc::kill(pid, 0) } == 0 && !is_zombie(pid)
}

fn is_zombie(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            s.rsplit(')')
                .next()
                .unwrap_or("")
                .trim_start()
                .starts_with('Z')
        })
        .unwrap_or(true)
}

impl Node {
    /// Is `pid` one of this node's processes? PIDs are reused quickly here,
    /// so a recorded pid is only signalled after checking its environment.
    pub fn owns(&self, pid: i32) -> bool {
        let needle = format!("AGENTOS_HOME={}", self.home.display());
        pid > 0
            && std::fs::read(format!("/proc/{pid}/environ"))
                .map(|env| env.split(|b| *b == 0).any(|kv| kv == needle.as_bytes()))
                .unwrap_or(false)
    }

    /// SIGKILL `pid` (or its process group when `group`) if it is ours.
    pub fn kill9(&self, pid: i32, group: bool) {
        if self.owns(pid) {
            unsafe {
                libc::kill(if group { -pid } else { pid }, libc::SIGKILL);
            }
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self
            .command(&["daemon", "stop", "--kill-agents"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
        for (holder, child) in self.holder_pids() {
            self.kill9(child, true);
            self.kill9(child, false);
            self.kill9(holder, false);
        }
        if let Some(pid) = self.daemon_pid() {
            self.kill9(pid, false);
        }
    }
}

/// A process in a real pseudo-terminal, with its output collected.
pub struct Pty {
    pub out: Arc<Mutex<Vec<u8>>>,
    /// While set, the terminal stops reading (a slow or stalled client).
    pub paused: Arc<std::sync::atomic::AtomicBool>,
    writer: Box<dyn Write + Send>,
    master: Box<dyn portable_pty::MasterPty + Send>,
    child: Box<dyn portable_pty::Child + Send + Sync>,
}

impl Pty {
    pub fn spawn(cmd: CommandBuilder, cols: u16, rows: u16) -> Pty {
        let pair = native_pty_system()
            .openpty(PtySize {
                rows,
                cols,
                pixel_width: 0,
                pixel_height: 0,
            })
            .unwrap();
        let child = pair.slave.spawn_command(cmd).unwrap();
        drop(pair.slave);
        let mut reader = pair.master.try_clone_reader().unwrap();
        let writer = pair.master.take_writer().unwrap();
        let out = Arc::new(Mutex::new(Vec::new()));
        let o2 = out.clone();
        let paused = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let p2 = paused.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 65536];
            loop {
                while p2.load(std::sync::atomic::Ordering::SeqCst) {
                    std::thread::park_timeout(Duration::from_millis(10));
                }
                let Ok(n) = reader.read(&mut buf) else { break };
                if n == 0 {
                    break;
                }
                o2.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
        Pty {
            out,
            paused,
            writer,
            master: pair.master,
            child,
        }
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.out.lock().unwrap()).into_owned()
    }

    pub fn expect(&self, needle: &str) {
        let deadline = Instant::now() + T;
        while !self.text().contains(needle) {
            if Instant::now() > deadline {
                panic!(
                    "timed out waiting for the terminal to show {needle:?}; it shows:\n{:?}",
                    self.text()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Wait for `needle` to appear after byte offset `from`.
    pub fn expect_after(&self, from: usize, needle: &str) {
        wait_until(
            &format!("terminal shows {needle:?} after {from}"),
            T,
            || {
                let o = self.out.lock().unwrap();
                String::from_utf8_lossy(&o[from.min(o.len())..]).contains(needle)
            },
        );
    }

    pub fn len(&self) -> usize {
        self.out.lock().unwrap().len()
    }

    pub fn write(&mut self, data: &[u8]) {
        self.writer.write_all(data).unwrap();
        self.writer.flush().unwrap();
    }

    pub fn resize(&self, cols: u16, rows: u16) {
        self.master
            .resize(PtySize {
                rows,
                cols,
                pixel_width: 0,
                pixel_height: 0,
            })
            .unwrap();
    }

    pub fn wait_exit(&mut self) -> u32 {
        let deadline = Instant::now() + T;
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s.exit_code();
            }
            assert!(
                Instant::now() < deadline,
                "attach did not exit; output: {}",
                self.text()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Pty {
    fn drop(&mut self) {
        let _ = self.child.kill();
    }
}

/// The 7-character SAS a pairing screen shows.
pub fn sas_of(text: &str) -> String {
    text.lines()
        .find_map(|l| l.strip_prefix("SAS: "))
        .map(|l| l[..7].to_string())
        .unwrap_or_else(|| panic!("no SAS in {text}"))
}

/// `a pair --yes` and `b pair --yes <payload>`; both show the same SAS.
pub fn pair(a: &Node, b: &Node) -> String {
    a.ok(&["daemon", "start"]);
    b.ok(&["daemon", "start"]);
    let mut child = a
        .command(&["pair", "--yes"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut seen = String::new();
    let payload = loop {
        let mut line = String::new();
        assert!(
            out.read_line(&mut line).unwrap() > 0,
            "pair ended early: {seen}"
        );
        seen.push_str(&line);
        if let Some(p) = line.strip_prefix("invite: ") {
            break p.trim().to_string();
        }
    };
    assert!(seen.contains("code: "), "{seen}");
    let joined = b.ok(&["pair", "--yes", &payload]);
    out.read_to_string(&mut seen).unwrap();
    let status = child.wait().unwrap();
    let mut err = String::new();
    child.stderr.unwrap().read_to_string(&mut err).unwrap();
    assert!(status.success(), "inviter failed: {seen}\n{err}");
    assert_eq!(
        sas_of(&seen),
        sas_of(&joined.stdout),
        "both screens show one code"
    );
    assert!(seen.contains("paired with"), "{seen}");
    assert!(joined.stdout.contains("paired with"), "{joined:?}");
    payload
}

/// A repository whose clones share one workspace id.
pub fn shared_repo(dir: &Path, id: &str) -> git2::Repository {
    let repo = git_repo(dir);
    std::fs::create_dir_all(dir.join(".agentos")).unwrap();
    std::fs::write(
        dir.join(".agentos/config.toml"),
        format!("[workspace]\nid = \"{id}\"\n"),
    )
    .unwrap();
    git_commit_all(&repo, "workspace id");
    repo
}
