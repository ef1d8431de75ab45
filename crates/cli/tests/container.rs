//! Container isolation against the real Docker engine: `agentos
//! container-run` on a real PTY, with plans built by
//! `agentos_node::devcontainer::PlanBuilder` and the image
//! `agentos-test-base:bookworm` (made by `.ci/docker-setup`).
//!
//! Without a reachable engine (or without the image) each test prints
//! `SKIP: <reason>` and returns, unless `AGENTOS_REQUIRE_DOCKER=1` (set by
//! `.ci/run`), which turns that into a failure. Tests wait on conditions
//! with timeouts; nothing sleeps to synchronise.

mod support;

use agentos_node::container;
use agentos_node::devcontainer::{self, ContainerPlan, Limits, PlanBuilder};
use portable_pty::{CommandBuilder, PtySize, native_pty_system};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::BIN;

const IMAGE: &str = "agentos-test-base:bookworm";
/// Container tests start an engine-side process: give them more room than T.
const LONG: Duration = Duration::from_secs(60);
/// The unprivileged user the tests' worktrees belong to.
const UID: u32 = 1000;

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// The engine, or `None` after a visible SKIP (a failure when Docker is required).
fn engine() -> Option<container::Docker> {
    let required = std::env::var("AGENTOS_REQUIRE_DOCKER").as_deref() == Ok("1");
    let skip = |why: String| {
        if required {
            panic!("AGENTOS_REQUIRE_DOCKER=1 but {why}");
        }
        eprintln!("SKIP: {why}");
        None
    };
    let rt = rt();
    let docker = match rt.block_on(container::connect()) {
        Ok(d) => d,
        Err(e) => return skip(e.to_string()),
    };
    if let Err(e) = rt.block_on(container::ensure_image(&docker, IMAGE)) {
        return skip(format!("{e} (run .ci/docker-setup)"));
    }
    Some(docker)
}

fn unique_id(tag: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!(
        "t{tag}{}x{}x{nanos:x}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    )
}

fn containers_of(docker: &container::Docker, agent: &str) -> Vec<String> {
    rt().block_on(container::list_by_label(
        docker,
        &format!("{}={agent}", devcontainer::AGENT_LABEL),
    ))
    .unwrap()
}

/// A temporary directory under /tmp owned by the test user (the container
/// never runs as root, and defaults to the worktree's owner).
struct Scratch {
    dir: tempfile::TempDir,
}

impl Scratch {
    fn new() -> Scratch {
        let dir = tempfile::Builder::new()
            .prefix("aosc")
            .tempdir_in("/tmp")
            .unwrap();
        Scratch { dir }
    }

    fn path(&self) -> PathBuf {
        self.dir.path().canonicalize().unwrap()
    }

    fn worktree(&self) -> PathBuf {
        let wt = self.path().join("wt");
        std::fs::create_dir_all(&wt).unwrap();
        chown_tree(&self.path());
        wt
    }
}

fn chown_tree(p: &Path) {
    let st = std::process::Command::new("chown")
        .args(["-R", &format!("{UID}:{UID}")])
        .arg(p)
        .status()
        .unwrap();
    assert!(st.success());
}

fn write_plan(s: &Scratch, plan: &ContainerPlan) -> PathBuf {
    let f = s.path().join("plan.json");
    plan.write(&f).unwrap();
    f
}

/// `agentos container-run` in a real PTY.
struct Run {
    agent_id: String,
    out: Arc<Mutex<Vec<u8>>>,
    writer: Box<dyn Write + Send>,
    master: Box<dyn portable_pty::MasterPty + Send>,
    child: Box<dyn portable_pty::Child + Send + Sync>,
}

impl Run {
    fn start(plan: &Path, env: &[(&str, &str)]) -> Run {
        let pair = native_pty_system()
            .openpty(PtySize {
                rows: 24,
                cols: 80,
                pixel_width: 0,
                pixel_height: 0,
            })
            .unwrap();
        let mut cmd = CommandBuilder::new(BIN);
        cmd.args(["container-run", "--plan"]);
        cmd.arg(plan);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = pair.slave.spawn_command(cmd).unwrap();
        drop(pair.slave);
        let mut reader = pair.master.try_clone_reader().unwrap();
        let writer = pair.master.take_writer().unwrap();
        let out = Arc::new(Mutex::new(Vec::new()));
        let o = out.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 16384];
            while let Ok(n) = reader.read(&mut buf) {
                if n == 0 {
                    break;
                }
                o.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
        Run {
            agent_id: ContainerPlan::read(plan).unwrap().agent_id,
            out,
            writer,
            master: pair.master,
            child,
        }
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.out.lock().unwrap()).into_owned()
    }

    fn expect(&self, needle: &str) {
        wait_until_or(
            &format!("terminal shows {needle:?}"),
            LONG,
            || self.text().contains(needle),
            || self.text(),
        );
    }

    fn write(&mut self, data: &[u8]) {
        self.writer.write_all(data).unwrap();
        self.writer.flush().unwrap();
    }

    fn pid(&self) -> i32 {
        self.child.process_id().unwrap() as i32
    }

    fn wait_exit(&mut self, within: Duration) -> u32 {
        let deadline = Instant::now() + within;
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s.exit_code();
            }
            assert!(
                Instant::now() < deadline,
                "container-run did not exit; terminal:\n{}",
                self.text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        let _ = self.child.kill();
        // A failed test must not leave its container running.
        let rt = rt();
        if let Ok(d) = rt.block_on(container::connect()) {
            let _ = rt.block_on(container::remove_by_label(&d, &self.agent_id));
        }
    }
}

fn wait_until_or(
    what: &str,
    timeout: Duration,
    mut cond: impl FnMut() -> bool,
    show: impl Fn() -> String,
) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        if Instant::now() > deadline {
            panic!(
                "timed out after {timeout:?} waiting for: {what}; terminal:\n{}",
                show()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn sh(script: &str) -> Vec<String> {
    vec!["/bin/sh".into(), "-c".into(), script.into()]
}

/// Run `script` in a docker-mode container on a PTY; its exit code and terminal text.
fn run_script(docker: &container::Docker, limits: Limits, script: &str) -> (u32, String) {
    let s = Scratch::new();
    let wt = s.worktree();
    let id = unique_id("s");
    let plan = PlanBuilder::docker(&id, IMAGE, &wt)
        .command(sh(script))
        .limits(limits)
        .build()
        .unwrap();
    let mut r = Run::start(&write_plan(&s, &plan), &[]);
    let code = r.wait_exit(LONG);
    let text = r.text();
    assert!(
        containers_of(docker, &id).is_empty(),
        "container left behind"
    );
    (code, text)
}

// ------------------------------------------------------------------ tests ---

#[test]
fn output_input_and_exit_code_cross_the_pty_and_the_container_is_removed() {
    let Some(docker) = engine() else { return };
    let s = Scratch::new();
    let wt = s.worktree();
    let id = unique_id("io");
    let plan = PlanBuilder::docker(&id, IMAGE, &wt)
        .command(sh("echo ready; read line; echo \"got:$line\"; exit 3"))
        .build()
        .unwrap();
    let mut r = Run::start(&write_plan(&s, &plan), &[]);
    r.expect("ready");
    assert_eq!(
        containers_of(&docker, &id).len(),
        1,
        "labelled while it runs"
    );
    r.write(b"hello container\r");
    r.expect("got:hello container");
    assert_eq!(r.wait_exit(LONG), 3);
    assert!(containers_of(&docker, &id).is_empty(), "removed on exit");
}

#[test]
fn sigwinch_resizes_the_container_tty() {
    let Some(_docker) = engine() else { return };
    let s = Scratch::new();
    let wt = s.worktree();
    let plan = PlanBuilder::docker(&unique_id("wz"), IMAGE, &wt)
        .command(sh(
            "echo \"size:$(stty size)\"; while read x; do [ \"$x\" = q ] && exit 0; echo \"size:$(stty size)\"; done",
        ))
        .build()
        .unwrap();
    let mut r = Run::start(&write_plan(&s, &plan), &[]);
    r.expect("size:24 80");
    r.master
        .resize(PtySize {
            rows: 40,
            cols: 120,
            pixel_width: 0,
            pixel_height: 0,
        })
        .unwrap();
    // The resize reaches the engine asynchronously (SIGWINCH → resize
    // request): ask for the size until the new one shows.
    let deadline = Instant::now() + LONG;
    while !r.text().contains("size:40 120") {
        assert!(Instant::now() < deadline, "no resize: {}", r.text());
        r.write(b"\r");
        let seen = r.text().matches("size:").count();
        wait_until_or(
            "the size is printed",
            LONG,
            || r.text().matches("size:").count() > seen,
            || r.text(),
        );
    }
    r.write(b"q\r");
    assert_eq!(r.wait_exit(LONG), 0);
}

#[test]
fn the_container_is_hardened() {
    let Some(docker) = engine() else { return };
    let (code, text) = run_script(
        &docker,
        Limits::default(),
        "touch /usr/x 2>/dev/null && echo ROOTFS-WRITABLE || echo rootfs-read-only; \
         echo \"uid:$(id -u)\"; \
         echo \"ifaces:$(tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' ' | tr '\\n' ,)\"; \
         grep -E '^(CapEff|NoNewPrivs)' /proc/self/status; \
         touch /tmp/ok && echo tmp-writable; \
         echo \"home:$HOME\"; touch \"$HOME/x\" && echo home-writable; \
         echo \"pid1:$(cat /proc/1/comm)\"",
    );
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("rootfs-read-only"), "{text}");
    assert!(text.contains("uid:1000"), "{text}");
    assert!(text.contains("ifaces:lo,\r"), "only loopback: {text}");
    assert!(text.contains("CapEff:\t0000000000000000"), "{text}");
    assert!(text.contains("NoNewPrivs:\t1"), "{text}");
    assert!(text.contains("tmp-writable"), "{text}");
    assert!(
        text.contains("home:/home/agentos") && text.contains("home-writable"),
        "{text}"
    );
    assert!(text.contains("pid1:docker-init"), "init: {text}");
}

#[test]
fn a_memory_hog_is_killed_with_137() {
    let Some(docker) = engine() else { return };
    let limits = Limits {
        memory_bytes: 64 << 20,
        ..Limits::default()
    };
    let (code, text) = run_script(
        &docker,
        limits,
        "echo hog; exec python3 -c 'x = b\"x\" * (512 << 20); print(\"SURVIVED\")'",
    );
    assert_eq!(code, 137, "{text}");
    assert!(text.contains("hog") && !text.contains("SURVIVED"), "{text}");
}

#[test]
fn the_pids_limit_stops_a_fork_flood() {
    let Some(docker) = engine() else { return };
    let limits = Limits {
        pids: 40,
        ..Limits::default()
    };
    let (code, text) = run_script(
        &docker,
        limits,
        "exec python3 -c '\nimport threading\nev = threading.Event()\nn = 0\ntry:\n    for _ in range(500):\n        threading.Thread(target=ev.wait).start()\n        n += 1\nexcept RuntimeError:\n    pass\nprint(\"threads:\", n)\nev.set()\n'",
    );
    assert_eq!(code, 0, "{text}");
    let n: u32 = text
        .split("threads: ")
        .nth(1)
        .and_then(|t| t.split_whitespace().next())
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("no count: {text}"));
    assert!(n < 40, "only {n} threads expected under pids 40: {text}");
}

#[test]
fn git_works_inside_and_cannot_reach_hooks_or_other_branches() {
    let Some(docker) = engine() else { return };
    let s = Scratch::new();
    let root = s.path().join("repo");
    std::fs::create_dir_all(&root).unwrap();
    let repo = support::git_repo(&root);
    let head = repo.head().unwrap().peel_to_commit().unwrap();
    let branch = repo.branch("agentos/feat", &head, false).unwrap();
    let wt = root.join(".shards/shell-feat");
    std::fs::create_dir_all(wt.parent().unwrap()).unwrap();
    let mut o = git2::WorktreeAddOptions::new();
    o.reference(Some(branch.get()));
    repo.worktree("shell-feat", &wt, Some(&o)).unwrap();
    let master = repo.head().unwrap().name().unwrap().to_string();
    let base = head.id();
    chown_tree(&s.path());
    let git = root.join(".git");
    let id = unique_id("git");
    let script = format!(
        "git status --short && echo change > a.txt && git commit -qam inside && echo COMMITTED; \
         (echo evil > {hooks}/pre-commit) 2>/dev/null && echo HOOK-WRITTEN || echo hook-denied; \
         (echo '[core]' >> {config}) 2>/dev/null && echo CONFIG-WRITTEN || echo config-denied; \
         git update-ref {master} HEAD 2>/dev/null && echo BASE-MOVED || echo base-protected",
        hooks = git.join("hooks").display(),
        config = git.join("config").display(),
    );
    let plan = PlanBuilder::docker(&id, IMAGE, &wt)
        .command(sh(&script))
        .env("GIT_AUTHOR_NAME", "agent")
        .env("GIT_AUTHOR_EMAIL", "agent@example.invalid")
        .env("GIT_COMMITTER_NAME", "agent")
        .env("GIT_COMMITTER_EMAIL", "agent@example.invalid")
        .build()
        .unwrap();
    assert_eq!(plan.working_dir, wt.canonicalize().unwrap());
    let mut r = Run::start(&write_plan(&s, &plan), &[]);
    assert_eq!(r.wait_exit(LONG), 0, "{}", r.text());
    let text = r.text();
    for want in [
        "COMMITTED",
        "hook-denied",
        "config-denied",
        "base-protected",
    ] {
        assert!(text.contains(want), "{want}: {text}");
    }
    // The repository now belongs to the test user, not to this process.
    // SAFETY: a global libgit2 option, set before this thread opens the repository.
    unsafe { git2::opts::set_verify_owner_validation(false).unwrap() };
    let repo = git2::Repository::open(&root).unwrap();
    let feat = repo
        .find_branch("agentos/feat", git2::BranchType::Local)
        .unwrap()
        .get()
        .peel_to_commit()
        .unwrap();
    assert_eq!(
        feat.message(),
        Some("inside\n"),
        "the commit landed on the agent's branch"
    );
    assert_eq!(feat.parent_id(0).unwrap(), base);
    assert_eq!(
        repo.revparse_single(&master).unwrap().id(),
        base,
        "base branch untouched"
    );
    assert!(!git.join("hooks/pre-commit").exists());
    assert!(containers_of(&docker, &id).is_empty());
}

#[test]
fn sigterm_stops_and_removes_the_container() {
    let Some(docker) = engine() else { return };
    let s = Scratch::new();
    let wt = s.worktree();
    let id = unique_id("term");
    let plan = PlanBuilder::docker(&id, IMAGE, &wt)
        .command(sh("echo up; exec sleep 600"))
        .build()
        .unwrap();
    let mut r = Run::start(&write_plan(&s, &plan), &[]);
    r.expect("up");
    let started = Instant::now();
    unsafe {
        libc::kill(r.pid(), libc::SIGTERM);
    }
    let code = r.wait_exit(LONG);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "within the node's 3 s grace: {:?}",
        started.elapsed()
    );
    assert_ne!(code, 0);
    assert!(containers_of(&docker, &id).is_empty());
}

#[test]
fn a_killed_runner_leaves_a_container_that_cleanup_by_label_removes() {
    let Some(docker) = engine() else { return };
    let s = Scratch::new();
    let wt = s.worktree();
    let id = unique_id("kill");
    let plan = PlanBuilder::docker(&id, IMAGE, &wt)
        .command(sh("echo up; exec sleep 600"))
        .build()
        .unwrap();
    let mut r = Run::start(&write_plan(&s, &plan), &[]);
    r.expect("up");
    let cid = containers_of(&docker, &id);
    assert_eq!(cid.len(), 1);
    let rt = rt();
    let pid = rt
        .block_on(container::container_pid(&docker, &cid[0]))
        .unwrap()
        .expect("running");
    assert!(Path::new(&format!("/proc/{pid}/ns/net")).exists());
    unsafe {
        libc::kill(r.pid(), libc::SIGKILL);
    }
    r.wait_exit(LONG);
    assert_eq!(
        containers_of(&docker, &id).len(),
        1,
        "SIGKILL cannot clean up"
    );
    assert_eq!(
        rt.block_on(container::remove_by_label(&docker, &id))
            .unwrap(),
        1
    );
    assert!(containers_of(&docker, &id).is_empty());
}

#[test]
fn landlock_still_applies_inside_the_container() {
    let Some(docker) = engine() else { return };
    let s = Scratch::new();
    let wt = s.worktree();
    let policy = agentos_sandbox::FilePolicy {
        read_only: agentos_sandbox::SYSTEM_READ_ONLY
            .iter()
            .map(PathBuf::from)
            .collect(),
        read_write: agentos_sandbox::DEVICES_READ_WRITE
            .iter()
            .map(PathBuf::from)
            .chain([
                wt.clone(),
                "/tmp".into(),
                devcontainer::CONTAINER_HOME.into(),
            ])
            .collect(),
        blocked: vec![],
    };
    let pf = s.path().join("policy.json");
    std::fs::write(&pf, serde_json::to_vec(&policy).unwrap()).unwrap();
    let id = unique_id("ll");
    let plan = PlanBuilder::docker(&id, IMAGE, &wt)
        .command(sh(&format!(
            "cat /etc/os-release >/dev/null && echo etc-readable; \
             touch {}/made && echo worktree-writable; \
             cat {} >/dev/null 2>&1 && echo POLICY-READABLE || echo run-denied",
            wt.display(),
            devcontainer::POLICY_IN_CONTAINER
        )))
        .landlock_policy(&pf)
        .agentos_exe(Path::new(BIN))
        .build()
        .unwrap();
    let mut r = Run::start(&write_plan(&s, &plan), &[]);
    assert_eq!(r.wait_exit(LONG), 0, "{}", r.text());
    let text = r.text();
    for want in ["etc-readable", "worktree-writable", "run-denied"] {
        assert!(text.contains(want), "{want}: {text}");
    }
    assert!(wt.join("made").exists());
    assert!(containers_of(&docker, &id).is_empty());
}

#[test]
fn devcontainer_env_user_mounts_and_lifecycle_apply_but_initialize_does_not_run() {
    let Some(docker) = engine() else { return };
    let s = Scratch::new();
    let wt = s.worktree();
    std::fs::create_dir_all(wt.join("data")).unwrap();
    std::fs::write(wt.join("data/hello"), "from-data\n").unwrap();
    let canary = s.path().join("host-was-touched");
    std::fs::create_dir_all(wt.join(".devcontainer")).unwrap();
    std::fs::write(
        wt.join(".devcontainer/devcontainer.json"),
        format!(
            r#"{{
            // a JSONC file, as editors write them
            "image": "{IMAGE}",
            "containerEnv": {{ "GREETING": "hi-from-${{localWorkspaceFolderBasename}}" }},
            "remoteEnv": {{ "PATH": "${{containerEnv:PATH}}:/opt/extra" }},
            "remoteUser": "1234:1234",
            "mounts": [
                "source=${{localWorkspaceFolder}}/data,target=/data,type=bind,readonly",
                "source=/var/run/docker.sock,target=/var/run/docker.sock,type=bind",
            ],
            "runArgs": ["--privileged"],
            "capAdd": ["SYS_ADMIN"],
            "onCreateCommand": "echo created > /tmp/marker",
            "postStartCommand": ["sh", "-c", "echo started >> /tmp/marker"],
            "initializeCommand": "touch {canary}",
        }}"#,
            canary = canary.display()
        ),
    )
    .unwrap();
    chown_tree(&s.path());
    let file = devcontainer::find(&wt).expect("found");
    let dc = devcontainer::parse(&file).unwrap();
    let id = unique_id("dc");
    let plan = PlanBuilder::devcontainer(&id, dc, &wt)
        .command(sh(
            "echo \"greet:$GREETING\"; echo \"path:$PATH\"; echo \"uid:$(id -u)\"; \
             cat /data/hello; cat /tmp/marker | tr '\\n' +; echo; \
             ls /var/run/docker.sock 2>/dev/null && echo SOCKET || echo no-socket; \
             touch /data/x 2>/dev/null && echo DATA-WRITABLE || echo data-read-only; \
             touch /var/tmp/rootfs-ok && echo rootfs-writable",
        ))
        .build()
        .unwrap();
    let warnings = plan.warnings.join("\n");
    for w in [
        "runArgs",
        "capAdd",
        "Docker socket",
        "initializeCommand is skipped",
    ] {
        assert!(warnings.contains(w), "{w}: {warnings}");
    }
    let mut r = Run::start(&write_plan(&s, &plan), &[]);
    assert_eq!(r.wait_exit(LONG), 0, "{}", r.text());
    let text = r.text();
    let base = wt.file_name().unwrap().to_str().unwrap();
    for want in [
        format!("greet:hi-from-{base}"),
        format!("path:{}:/opt/extra", container::DEFAULT_PATH),
        "uid:1234".to_string(),
        "from-data".to_string(),
        "created+started+".to_string(),
        "no-socket".to_string(),
        "data-read-only".to_string(),
        "[agentos] onCreateCommand".to_string(),
        "warning: ".to_string(),
        "rootfs-writable".to_string(),
    ] {
        assert!(text.contains(&want), "{want}: {text}");
    }
    assert!(!canary.exists(), "initializeCommand ran on the host");
    assert!(containers_of(&docker, &id).is_empty());
}

#[test]
fn a_missing_image_and_a_missing_engine_say_how_to_fix_them() {
    // The engine being absent needs no engine.
    let s = Scratch::new();
    let wt = s.worktree();
    let plan = PlanBuilder::docker(&unique_id("ne"), "agentos-no-such-image:1", &wt)
        .command(sh("true"))
        .build()
        .unwrap();
    let f = write_plan(&s, &plan);
    let mut r = Run::start(&f, &[("DOCKER_HOST", "unix:///nonexistent/docker.sock")]);
    assert_eq!(r.wait_exit(LONG), 125);
    let text = r.text();
    assert!(text.contains("/nonexistent/docker.sock"), "{text}");
    assert!(text.contains("--isolation worktree"), "{text}");

    let Some(_docker) = engine() else { return };
    let mut r = Run::start(&f, &[]);
    assert_eq!(r.wait_exit(LONG), 125);
    let text = r.text();
    assert!(text.contains("agentos-no-such-image:1"), "{text}");
    assert!(text.contains("docker import"), "{text}");
}

#[test]
fn a_devcontainer_dockerfile_is_built_without_network() {
    let Some(docker) = engine() else { return };
    let s = Scratch::new();
    let wt = s.worktree();
    std::fs::create_dir_all(wt.join(".devcontainer")).unwrap();
    std::fs::write(
        wt.join(".devcontainer/Dockerfile"),
        format!("FROM {IMAGE}\nARG WHO\nRUN echo \"built-for-$WHO\" > /etc/built\n"),
    )
    .unwrap();
    std::fs::write(
        wt.join(".devcontainer/devcontainer.json"),
        r#"{ "build": { "dockerfile": "Dockerfile", "args": { "WHO": "agentos" } } }"#,
    )
    .unwrap();
    chown_tree(&s.path());
    let dc = devcontainer::parse(&devcontainer::find(&wt).unwrap()).unwrap();
    let id = unique_id("bd");
    let plan = PlanBuilder::devcontainer(&id, dc, &wt)
        .command(sh("cat /etc/built"))
        .build()
        .unwrap();
    let mut r = Run::start(&write_plan(&s, &plan), &[]);
    assert_eq!(r.wait_exit(LONG), 0, "{}", r.text());
    assert!(r.text().contains("built-for-agentos"), "{}", r.text());
    assert!(containers_of(&docker, &id).is_empty());
}

/// The whole path a user takes: `agentos create --isolation docker` in a
/// repository, work inside, the proxy as the only way out, `destroy`.
#[test]
fn create_with_docker_isolation_runs_the_agent_in_its_container() {
    let Some(docker) = engine() else { return };
    let server = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = server.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut c in server.incoming().flatten() {
            let mut buf = [0u8; 4096];
            let _ = c.read(&mut buf);
            let _ =
                c.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok");
        }
    });
    let (n, repo) = docker_node("[security]\nallowed_hosts = [\"localhost\"]\n");
    n.ok_in(
        &repo,
        &[
            "create",
            "dock",
            "-d",
            "--isolation",
            "docker",
            "--",
            "bash",
            "--norc",
            "-i",
        ],
    );
    let id = n.agent("dock")["id"].as_str().unwrap().to_string();
    support::wait_until("the container", LONG, || {
        !containers_of(&docker, &id).is_empty()
    });
    support::wait_until("a prompt", LONG, || {
        n.logs("dock").trim_end().ends_with('#')
    });
    n.ok(&[
        "send",
        "dock",
        "--enter",
        &format!(
            "grep CapEff /proc/self/status; touch /usr/x; echo x > d.txt && git add d.txt && git commit -qm 'in container' && echo COMMITTED; \
             python3 -c \"import urllib.request as u; print('proxy', u.urlopen('http://localhost:{port}/').status)\"; echo ALL-DONE"
        ),
    ]);
    support::wait_until("the commands ran", LONG, || {
        n.logs("dock").contains("ALL-DONE\n")
    });
    support::wait_until("the proxy answer", LONG, || {
        let l = n.logs("dock");
        l.contains("proxy 200")
            || l.lines()
                .last()
                .is_some_and(|x| x.trim_end().ends_with('#') && l.contains("Traceback"))
    });
    let logs = n.logs("dock");
    assert!(no_caps(&logs), "{logs}");
    assert!(logs.contains("Read-only file system"), "{logs}");
    assert!(logs.contains("COMMITTED"), "{logs}");
    assert!(logs.contains("proxy 200"), "{logs}");
    let repo2 = git2::Repository::open(&repo).unwrap();
    let tip = repo2
        .revparse_single("agentos/dock")
        .unwrap()
        .peel_to_commit()
        .unwrap();
    assert_eq!(tip.summary(), Some("in container"));
    n.ok(&["destroy", "dock", "--force"]);
    support::wait_until("container removed", LONG, || {
        containers_of(&docker, &id).is_empty()
    });
}

#[test]
fn create_with_devcontainer_isolation_uses_the_projects_file() {
    let Some(docker) = engine() else { return };
    let n = support::Node::new();
    let repo = n.work.join("repo");
    std::fs::create_dir_all(repo.join(".devcontainer")).unwrap();
    std::fs::write(
        repo.join(".devcontainer/devcontainer.json"),
        format!(
            "// comments are fine\n{{ \"image\": \"{IMAGE}\", \"containerEnv\": {{ \"FROM_DC\": \"dc-ok\" }}, \"runArgs\": [\"--privileged\"], }}\n"
        ),
    )
    .unwrap();
    support::git_repo(&repo);
    n.ok_in(
        &repo,
        &[
            "create",
            "dev",
            "-d",
            "--isolation",
            "devcontainer",
            "--",
            "bash",
            "-c",
            "echo VAR=$FROM_DC; grep CapEff /proc/self/status; exec sleep 600",
        ],
    );
    let ok = support::try_wait(LONG, || n.logs("dev").contains("VAR=dc-ok"));
    assert!(
        ok,
        "no output from the devcontainer agent:\n{}\n--- status\n{}\n--- daemon\n{}",
        n.logs("dev"),
        n.status_json("dev"),
        n.daemon_log_tail()
    );
    support::wait_until("caps line", LONG, || n.logs("dev").contains("CapEff"));
    assert!(no_caps(&n.logs("dev")), "{}", n.logs("dev"));
    let id = n.agent("dev")["id"].as_str().unwrap().to_string();
    n.ok(&["destroy", "dev", "--force"]);
    support::wait_until("container removed", LONG, || {
        containers_of(&docker, &id).is_empty()
    });
    // Without a devcontainer file: a clear refusal before anything exists.
    let bare = n.work.join("bare");
    std::fs::create_dir_all(&bare).unwrap();
    support::git_repo(&bare);
    let o = n.run_in(
        &bare,
        &[
            "create",
            "nodc",
            "-d",
            "--isolation",
            "devcontainer",
            "--",
            "true",
        ],
    );
    assert_ne!(o.code, 0);
    assert!(
        o.stderr.contains("E018") && o.stderr.contains("devcontainer.json"),
        "{o:?}"
    );
    assert!(!bare.join(".shards").join("command-nodc").exists());
}

/// The agent's `grep CapEff /proc/self/status` shows an empty set.
fn no_caps(logs: &str) -> bool {
    logs.lines()
        .any(|l| l.starts_with("CapEff:") && l.trim_end().ends_with("0000000000000000"))
}

#[test]
fn an_oom_killed_container_agent_turns_error_with_the_reason() {
    let Some(docker) = engine() else { return };
    let (n, repo) = docker_node("[security]\nmax_memory = \"64M\"\n");
    n.ok_in(
        &repo,
        &[
            "create",
            "hog",
            "-d",
            "--sandbox=docker",
            "--",
            "python3",
            "-c",
            "b = b'x' * (1 << 30)",
        ],
    );
    let id = n.agent("hog")["id"].as_str().unwrap().to_string();
    let ok = support::try_wait(LONG, || n.state("hog") == "error");
    assert!(
        ok,
        "not in error:\n{}\n--- status\n{}\n--- daemon\n{}",
        n.logs("hog"),
        n.status_json("hog"),
        n.daemon_log_tail()
    );
    let st = n.status_json("hog").to_string();
    assert!(st.contains("out of memory"), "{st}");
    let audit = n.ok(&["--json", "audit", "--agent", "hog"]).stdout;
    assert!(audit.contains("\"limit\""), "{audit}");
    support::wait_until("container removed", LONG, || {
        containers_of(&docker, &id).is_empty()
    });
}

#[test]
fn a_container_agent_at_its_process_limit_is_stopped_with_the_reason() {
    let Some(docker) = engine() else { return };
    let (n, repo) = docker_node("[security]\nmax_processes = 32\n");
    n.ok_in(
        &repo,
        &[
            "create",
            "bomb",
            "-d",
            "--isolation",
            "docker",
            "--",
            "bash",
            "-c",
            "b(){ b|b & }; b; sleep 600",
        ],
    );
    let id = n.agent("bomb")["id"].as_str().unwrap().to_string();
    support::wait_until("error state", LONG, || n.state("bomb") == "error");
    let st = n.status_json("bomb").to_string();
    assert!(st.contains("process limit"), "{st}");
    let audit = n.ok(&["--json", "audit", "--agent", "bomb"]).stdout;
    assert!(audit.contains("\"pids\""), "{audit}");
    support::wait_until("container removed", LONG, || {
        containers_of(&docker, &id).is_empty()
    });
}

#[test]
fn a_restarted_daemon_removes_containers_whose_agent_died() {
    let Some(docker) = engine() else { return };
    let (n, repo) = docker_node("");
    n.ok_in(
        &repo,
        &[
            "create",
            "orphan",
            "-d",
            "--isolation",
            "docker",
            "--",
            "sleep",
            "600",
        ],
    );
    let id = n.agent("orphan")["id"].as_str().unwrap().to_string();
    support::wait_until("the container", LONG, || {
        !containers_of(&docker, &id).is_empty()
    });
    // The machine "crashes": holder and runner die at once, the container stays.
    n.ok(&["daemon", "stop"]);
    for (holder, child) in n.holder_pids() {
        n.kill9(child, false);
        n.kill9(holder, false);
    }
    assert!(!containers_of(&docker, &id).is_empty());
    n.ok(&["list"]); // starts a fresh daemon
    support::wait_until("orphan removed", LONG, || {
        containers_of(&docker, &id).is_empty()
    });
}

#[test]
fn a_project_can_make_its_devcontainer_the_default() {
    let Some(docker) = engine() else { return };
    let n = support::Node::new();
    let repo = n.work.join("repo");
    std::fs::create_dir_all(repo.join(".agentos")).unwrap();
    std::fs::write(
        repo.join(".devcontainer.json"),
        format!("{{ \"image\": \"{IMAGE}\" }}"),
    )
    .unwrap();
    std::fs::write(
        repo.join(".agentos/config.toml"),
        "[isolation]\ndefault = \"devcontainer\"\n",
    )
    .unwrap();
    support::git_repo(&repo);
    n.ok_in(
        &repo,
        &[
            "create",
            "dflt",
            "-d",
            "--",
            "bash",
            "-c",
            "echo IN-$((40+2)); exec sleep 600",
        ],
    );
    n.wait_log("dflt", "IN-42");
    let id = n.agent("dflt")["id"].as_str().unwrap().to_string();
    assert!(
        !containers_of(&docker, &id).is_empty(),
        "not in a container"
    );
    let policy = n.ok(&["policy", "show", "dflt"]).stdout;
    assert!(policy.contains("Devcontainer container"), "{policy}");
    n.ok(&["destroy", "dflt", "--force"]);
    support::wait_until("container removed", LONG, || {
        containers_of(&docker, &id).is_empty()
    });
}

/// A node whose docker image is the test image, with `extra` config (a
/// `[security]` table), and a repository to create agents in.
fn docker_node(extra: &str) -> (support::Node, PathBuf) {
    let n = support::Node::new();
    std::fs::create_dir_all(&n.home).unwrap();
    std::fs::write(
        n.home.join("config.toml"),
        format!("[isolation]\ndocker_image = \"{IMAGE}\"\n{extra}"),
    )
    .unwrap();
    let repo = n.work.join("repo");
    std::fs::create_dir_all(&repo).unwrap();
    support::git_repo(&repo);
    (n, repo)
}
