//! The sandbox, driven the way a user meets it: agents created in a git
//! repository run in their sandbox; secrets, host sockets, other branches
//! and the network outside the policy stay out of reach; every blocked
//! attempt appears in `agentos audit`; limits stop runaway agents. These
//! need root (namespaces, cgroups, kernel audit) and Landlock ABI 7; where
//! the runner lacks them each test says so and skips, unless
//! `AGENTOS_REQUIRE_SANDBOX=1` (set by `.ci/run`) makes that a failure.

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;
use support::{Node, git_repo, wait_until};

const CANARY: &str = "AGENTOS-CANARY-7f3a9c";

fn can_sandbox() -> bool {
    // SAFETY: geteuid never fails.
    let root = unsafe { libc::geteuid() } == 0;
    let landlock = agentos_sandbox::landlock_abi() >= 7;
    let why = if !root {
        Some("not root (namespaces, cgroups and kernel audit need it)")
    } else if !landlock {
        Some("this kernel lacks Landlock ABI 7 (audit of denials)")
    } else {
        None
    };
    if let Some(why) = why {
        if std::env::var("AGENTOS_REQUIRE_SANDBOX").as_deref() == Ok("1") {
            panic!("sandbox tests required but unavailable: {why}");
        }
        eprintln!("SKIP: {why}");
        return false;
    }
    true
}

/// A node whose user HOME holds a canary secret, and a repository.
struct Setup {
    node: Node,
    repo: PathBuf,
    home: PathBuf,
}

fn setup(config: &str) -> Setup {
    let node = Node::new();
    let home = node.dir.path().join("userhome");
    std::fs::create_dir_all(home.join(".ssh")).unwrap();
    std::fs::write(home.join(".ssh/id_rsa"), format!("{CANARY}\n")).unwrap();
    std::fs::create_dir_all(&node.home).unwrap();
    std::fs::write(node.home.join("config.toml"), config).unwrap();
    let node = node.env("HOME", &home.display().to_string());
    let repo = node.work.join("repo");
    std::fs::create_dir_all(&repo).unwrap();
    git_repo(&repo);
    Setup { node, repo, home }
}

impl Setup {
    fn shell(&self, name: &str) {
        self.node.ok_in(
            &self.repo,
            &["create", name, "-d", "--", "bash", "--norc", "-i"],
        );
        let ok = support::try_wait(support::T, || {
            let l = self.node.logs(name);
            let l = l.trim_end();
            l.ends_with('#') || l.ends_with('$')
        });
        assert!(
            ok,
            "no shell prompt from {name}:\n{}\n--- status\n{}\n--- daemon log\n{}",
            self.node.logs(name),
            self.node.status_json(name),
            self.node.daemon_log_tail()
        );
    }

    fn run(&self, name: &str, cmd: &str) {
        self.node.ok(&["send", name, "--enter", cmd]);
    }

    fn audit(&self, name: &str) -> Vec<serde_json::Value> {
        let out = self.node.ok(&["--json", "audit", "--agent", name]);
        out.stdout
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Wait for an audit record matching all of `fields`.
    fn expect_audit(&self, name: &str, within: Duration, fields: &[(&str, &str)]) {
        let mut last = Vec::new();
        let found = support::try_wait(within, || {
            last = self.audit(name);
            last.iter().any(|r| {
                fields.iter().all(|(k, v)| {
                    r[*k]
                        .as_str()
                        .is_some_and(|s| s == *v || (k == &"target" && s.contains(v)))
                })
            })
        });
        assert!(
            found,
            "no audit record with {fields:?} within {within:?}; have:\n{}",
            last.iter()
                .filter(|r| r["kind"] != "exec")
                .map(|r| r.to_string())
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
}

fn done_marker(s: &Setup, name: &str, marker: &str) {
    s.run(name, &format!("echo {marker}-$((6*7))"));
    s.node.wait_log(name, &format!("{marker}-42"));
}

#[test]
fn prd_11_3_reading_the_ssh_key_is_blocked_and_audited_within_2s() {
    if !can_sandbox() {
        return;
    }
    let s = setup("");
    s.shell("canary");
    // `audit --follow` sees it arrive.
    let follow_out = s.node.dir.path().join("follow.jsonl");
    let mut follow = s
        .node
        .command(&["--json", "audit", "--follow", "--agent", "canary"])
        .stdout(std::fs::File::create(&follow_out).unwrap())
        .spawn()
        .unwrap();
    s.run("canary", "cat ~/.ssh/id_rsa; echo rc=$?");
    s.node.wait_log("canary", "rc=1");
    let logs = s.node.logs("canary");
    assert!(logs.contains("Permission denied"), "{logs}");
    assert!(
        !logs.contains(CANARY),
        "the canary leaked into the terminal:\n{logs}"
    );
    s.expect_audit(
        "canary",
        Duration::from_secs(2),
        &[
            ("kind", "file_read"),
            ("outcome", "blocked"),
            ("source", "landlock"),
            ("target", &s.home.join(".ssh/id_rsa").display().to_string()),
        ],
    );
    // The record names the process.
    let rec = s
        .audit("canary")
        .into_iter()
        .find(|r| r["kind"] == "file_read" && r["outcome"] == "blocked")
        .unwrap();
    assert_eq!(rec["exe"], "/usr/bin/cat", "{rec}");
    assert!(rec["pid"].as_u64().is_some(), "{rec}");
    assert!(!rec["session"].as_str().unwrap_or("").is_empty(), "{rec}");
    wait_until(
        "audit --follow prints the denial",
        Duration::from_secs(5),
        || {
            std::fs::read_to_string(&follow_out)
                .unwrap_or_default()
                .lines()
                .any(|l| l.contains("\"file_read\"") && l.contains("\"blocked\""))
        },
    );
    let _ = follow.kill();
    let _ = follow.wait();
}

#[test]
fn escape_matrix_every_attempt_fails_and_is_audited() {
    if !can_sandbox() {
        return;
    }
    let s = setup("");
    // Host sockets the agent must not reach: a fake docker.sock and a
    // tmux server socket, both listening.
    let run_sock = PathBuf::from(format!("/run/agentos-test-{}.sock", std::process::id()));
    let tmux_dir = PathBuf::from(format!("/tmp/tmux-agentos-test-{}", std::process::id()));
    std::fs::create_dir_all(&tmux_dir).unwrap();
    let tmux_sock = tmux_dir.join("default");
    let _l1 = std::os::unix::net::UnixListener::bind(&run_sock).unwrap();
    let _l2 = std::os::unix::net::UnixListener::bind(&tmux_sock).unwrap();
    // A loopback server outside the policy.
    let server = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = server.local_addr().unwrap().port();
    s.shell("esc");
    let ssh = s.home.join(".ssh");
    let key = ssh.join("id_rsa");
    let cases: Vec<(&str, String)> = vec![
        ("symlink", format!("ln -s {} k1 && cat k1", key.display())),
        (
            "dotdot",
            format!("cat ../../../../../../../..{}", key.display()),
        ),
        ("procself", format!("cat /proc/self/root{}", key.display())),
        ("proc1", format!("cat /proc/1/root{}", key.display())),
        ("hardlink", format!("ln {} k2 && cat k2", key.display())),
        (
            "mvssh",
            format!("mv {} ./stolen && cat stolen/id_rsa", ssh.display()),
        ),
        ("mount", "mount -t tmpfs none /mnt".into()),
        ("unshare", "unshare -Urm true".into()),
        ("chroot", "chroot / true".into()),
        (
            "docker",
            format!(
                "curl -sS --max-time 3 --unix-socket {} http://x/",
                run_sock.display()
            ),
        ),
        (
            "tmux",
            format!(
                "curl -sS --max-time 3 --unix-socket {} http://x/",
                tmux_sock.display()
            ),
        ),
        ("hooks", "echo evil > ../../.git/hooks/pre-commit".into()),
        ("otherref", "git update-ref refs/heads/master HEAD".into()),
        ("gitconfig", "echo '[core]' >> ../../.git/config".into()),
        (
            "noproxy",
            format!("curl -sS --max-time 3 --noproxy '*' http://127.0.0.1:{port}/"),
        ),
    ];
    for (tag, cmd) in &cases {
        s.run("esc", &format!("{cmd}; echo {tag}-rc=$?"));
    }
    done_marker(&s, "esc", "matrix-done");
    let logs = s.node.logs("esc");
    assert!(!logs.contains(CANARY), "the canary leaked:\n{logs}");
    for (tag, _) in &cases {
        let codes = exit_codes(&logs, tag);
        assert!(!codes.is_empty(), "no result for {tag}:\n{logs}");
        assert!(codes.iter().all(|c| *c != "0"), "{tag} succeeded:\n{logs}");
    }
    // Nothing changed on the host side.
    assert!(key.exists(), "~/.ssh was moved");
    assert!(!s.repo.join(".git/hooks/pre-commit").exists());
    let master = git2::Repository::open(&s.repo)
        .unwrap()
        .revparse_single("master")
        .unwrap()
        .id();
    let head = git2::Repository::open(&s.repo)
        .unwrap()
        .head()
        .unwrap()
        .target()
        .unwrap();
    assert_eq!(master, head, "master moved");
    // And the kernel said so, wherever it can.
    let t = Duration::from_secs(5);
    let key_s = key.display().to_string();
    s.expect_audit("esc", t, &[("kind", "file_read"), ("target", &key_s)]);
    s.expect_audit("esc", t, &[("source", "seccomp"), ("target", "mount")]);
    s.expect_audit("esc", t, &[("source", "seccomp"), ("target", "unshare")]);
    s.expect_audit("esc", t, &[("source", "seccomp"), ("target", "chroot")]);
    s.expect_audit(
        "esc",
        t,
        &[
            ("kind", "file_write"),
            ("outcome", "blocked"),
            ("target", ".git/hooks"),
        ],
    );
    s.expect_audit(
        "esc",
        t,
        &[
            ("kind", "file_write"),
            ("outcome", "blocked"),
            ("target", ".git/refs/heads"),
        ],
    );
    s.expect_audit(
        "esc",
        t,
        &[
            ("kind", "net"),
            ("outcome", "blocked"),
            ("target", &format!("127.0.0.1:{port}")),
        ],
    );
    // Allowed work is recorded too: process spawns and writes in the worktree.
    s.expect_audit(
        "esc",
        t,
        &[
            ("kind", "exec"),
            ("outcome", "allowed"),
            ("target", "chroot"),
        ],
    );
    let _ = std::fs::remove_file(&run_sock);
    let _ = std::fs::remove_dir_all(&tmux_dir);
}

#[test]
fn the_agent_commits_to_its_own_branch_and_writes_are_audited() {
    if !can_sandbox() {
        return;
    }
    let s = setup("");
    s.shell("work");
    s.run(
        "work",
        "echo new > new.txt && git add new.txt && git commit -qm 'agent work' && echo commit-rc=$?",
    );
    s.node.wait_log("work", "commit-rc=0");
    s.run("work", "rm new.txt; chmod 600 a.txt; echo fs-done");
    s.node.wait_log("work", "fs-done");
    let t = Duration::from_secs(5);
    s.expect_audit("work", t, &[("kind", "file_write"), ("target", "new.txt")]);
    s.expect_audit("work", t, &[("kind", "file_delete"), ("target", "new.txt")]);
    s.expect_audit("work", t, &[("kind", "permission"), ("target", "a.txt")]);
    s.expect_audit("work", t, &[("kind", "exec"), ("target", "git commit")]);
    // The commit is on the agent's branch.
    let repo = git2::Repository::open(&s.repo).unwrap();
    let tip = repo
        .revparse_single("agentos/work")
        .unwrap()
        .peel_to_commit()
        .unwrap();
    assert_eq!(tip.summary(), Some("agent work"));
}

#[test]
fn network_goes_through_the_proxy_and_follows_the_host_policy() {
    if !can_sandbox() {
        return;
    }
    // An HTTP server on the host's loopback, allowed by name.
    let server = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = server.local_addr().unwrap().port();
    std::thread::spawn(move || {
        use std::io::{Read, Write};
        for mut c in server.incoming().flatten() {
            let mut buf = [0u8; 4096];
            let _ = c.read(&mut buf);
            let _ = c.write_all(
                b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello",
            );
        }
    });
    let s = setup(
        "[security]\nallowed_hosts = [\"localhost\"]\nblocked_hosts = [\"blocked.example\"]\n",
    );
    s.shell("net");
    s.run(
        "net",
        &format!("curl -s -o /dev/null -w 'allowed=%{{http_code}}\\n' http://localhost:{port}/"),
    );
    s.node.wait_log("net", "allowed=200");
    s.run(
        "net",
        "curl -s -o /dev/null -w 'blocked=%{http_code}\\n' http://blocked.example/",
    );
    s.node.wait_log("net", "blocked=403");
    // Not on the allow-list.
    s.run(
        "net",
        "curl -s -o /dev/null -w 'other=%{http_code}\\n' http://example.com/",
    );
    s.node.wait_log("net", "other=403");
    let t = Duration::from_secs(5);
    s.expect_audit(
        "net",
        t,
        &[
            ("kind", "proxy"),
            ("outcome", "allowed"),
            ("target", &format!("localhost:{port}")),
        ],
    );
    s.expect_audit(
        "net",
        t,
        &[
            ("kind", "proxy"),
            ("outcome", "blocked"),
            ("target", "blocked.example"),
        ],
    );
    let policy = s.node.ok(&["policy", "show", "net"]).stdout;
    assert!(policy.contains("blocked.example"), "{policy}");
    assert!(policy.contains(".ssh"), "{policy}");
    assert!(policy.contains("127.0.0.1:3128"), "{policy}");
}

#[test]
fn no_outbound_means_no_network_at_all() {
    if !can_sandbox() {
        return;
    }
    let s = setup("[security]\nallow_outbound = false\n");
    s.shell("off");
    s.run(
        "off",
        "curl -sS --max-time 3 http://example.com/; echo off-rc=$?",
    );
    s.node.wait_log("off", "off-rc=");
    assert!(!s.node.logs("off").contains("off-rc=0"));
    let policy = s.node.ok(&["policy", "show", "off"]).stdout;
    assert!(policy.contains("no way out"), "{policy}");
}

#[test]
fn a_fork_bomb_stops_at_the_process_limit_and_the_agent_turns_error() {
    if !can_sandbox() {
        return;
    }
    let s = setup("[security]\nmax_processes = 64\n");
    s.shell("bomb");
    s.run("bomb", "b(){ b|b & }; b");
    wait_until("error state", Duration::from_secs(30), || {
        s.node.state("bomb") == "error"
    });
    let st = s.node.status_json("bomb");
    assert!(
        st.to_string().contains("process limit"),
        "no reason given: {st}"
    );
    s.expect_audit(
        "bomb",
        Duration::from_secs(5),
        &[("kind", "limit"), ("target", "pids")],
    );
    // Nothing of it survives.
    let id = s.node.agent("bomb")["id"].as_str().unwrap().to_string();
    wait_until("cgroup empty", Duration::from_secs(20), || {
        cgroup_pids(&id).is_empty()
    });
}

#[test]
fn a_memory_hog_is_oom_killed_and_cleaned_up() {
    if !can_sandbox() {
        return;
    }
    let s = setup("[security]\nmax_memory = \"64M\"\n");
    s.shell("hog");
    s.run("hog", "/usr/bin/python3 -c \"b = b'x' * (1 << 30)\"");
    wait_until("error state", Duration::from_secs(60), || {
        s.node.state("hog") == "error"
    });
    let st = s.node.status_json("hog");
    assert!(st.to_string().contains("out of memory"), "{st}");
    s.expect_audit(
        "hog",
        Duration::from_secs(5),
        &[("kind", "limit"), ("target", "memory")],
    );
    let id = s.node.agent("hog")["id"].as_str().unwrap().to_string();
    wait_until("cgroup empty", Duration::from_secs(20), || {
        cgroup_pids(&id).is_empty()
    });
}

#[test]
fn unsafe_allow_paths_are_refused_before_anything_runs() {
    if !can_sandbox() {
        return;
    }
    let s = setup("");
    let home = s.home.display().to_string();
    let out = s.node.run_in(
        &s.repo,
        &["create", "bad", "-d", "--allow-path", &home, "--", "bash"],
    );
    assert_ne!(out.code, 0, "{out:?}");
    assert!(out.stderr.contains("E018"), "{out:?}");
    assert!(out.stderr.contains(".ssh"), "{out:?}");
    let out = s.node.run_in(
        &s.repo,
        &[
            "create",
            "bad2",
            "-d",
            "--allow-path",
            "relative/dir",
            "--",
            "bash",
        ],
    );
    assert_ne!(out.code, 0, "{out:?}");
    assert!(out.stderr.contains("absolute"), "{out:?}");
    // An allowed extra path is readable, and shown in the policy.
    let extra = s.node.dir.path().join("extra");
    std::fs::create_dir_all(&extra).unwrap();
    std::fs::write(extra.join("data.txt"), "extra-data-ok").unwrap();
    let spec = format!("{}:ro", extra.display());
    s.node.ok_in(
        &s.repo,
        &[
            "create",
            "good",
            "-d",
            "--allow-path",
            &spec,
            "--",
            "bash",
            "--norc",
            "-i",
        ],
    );
    s.run("good", &format!("cat {}/data.txt; echo", extra.display()));
    s.node.wait_log("good", "extra-data-ok");
    let policy = s.node.ok(&["policy", "show", "good"]).stdout;
    assert!(policy.contains(&extra.display().to_string()), "{policy}");
}

/// Pids in an agent's cgroups (v1 or v2).
fn cgroup_pids(agent_id: &str) -> Vec<String> {
    let mut out = Vec::new();
    for root in [
        "/sys/fs/cgroup",
        "/sys/fs/cgroup/pids",
        "/sys/fs/cgroup/memory",
    ] {
        for dir in find_dirs(Path::new(root), agent_id, 6) {
            if let Ok(s) = std::fs::read_to_string(dir.join("cgroup.procs")) {
                out.extend(s.lines().map(str::to_owned));
            }
        }
    }
    out
}

fn find_dirs(root: &Path, name: &str, depth: u32) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(root) else {
        return out;
    };
    for e in rd.flatten() {
        if !e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            continue;
        }
        let p = e.path();
        if e.file_name().to_string_lossy() == name {
            out.push(p);
        } else if depth > 0 {
            out.extend(find_dirs(&p, name, depth - 1));
        }
    }
    out
}

/// The exit codes printed as `<tag>-rc=N` in an agent's output. Looked for
/// anywhere, not at line starts: the echo of a command typed ahead can share
/// a line with the previous command's output.
fn exit_codes<'a>(logs: &'a str, tag: &str) -> Vec<&'a str> {
    let key = format!("{tag}-rc=");
    logs.match_indices(&key)
        .map(|(i, _)| {
            let rest = &logs[i + key.len()..];
            &rest[..rest
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(rest.len())]
        })
        .filter(|d| !d.is_empty())
        .collect()
}

#[test]
fn blocked_names_in_the_worktree_are_denied_even_through_links() {
    if !can_sandbox() {
        return;
    }
    let s = setup("");
    // Tracked secrets in the repository itself.
    std::fs::write(s.repo.join(".env"), format!("TOKEN={CANARY}\n")).unwrap();
    std::fs::create_dir_all(s.repo.join("config")).unwrap();
    std::fs::write(s.repo.join("config/server.pem"), format!("{CANARY}\n")).unwrap();
    std::fs::write(s.repo.join("config/app.toml"), "name = 'fine'\n").unwrap();
    let repo = git2::Repository::open(&s.repo).unwrap();
    support::git_commit_all(&repo, "secrets");
    s.shell("names");
    let cases = [
        ("dotenv", "cat .env"),
        ("pem", "cat config/server.pem"),
        ("symlink", "ln -s .env s && cat s"),
        ("hardlink", "ln .env h && cat h"),
        ("newkey", "echo x > fresh.key && cat fresh.key"),
    ];
    for (tag, cmd) in cases {
        s.run("names", &format!("{cmd}; echo {tag}-rc=$?"));
    }
    s.run("names", "cat config/app.toml; echo ok-rc=$?");
    done_marker(&s, "names", "names-done");
    let logs = s.node.logs("names");
    assert!(!logs.contains(CANARY), "a secret leaked:\n{logs}");
    for (tag, _) in cases {
        let codes = exit_codes(&logs, tag);
        assert!(
            !codes.is_empty() && codes.iter().all(|c| *c != "0"),
            "{tag} was not refused ({codes:?}):\n{logs}"
        );
    }
    assert!(
        logs.contains("name = 'fine'") && logs.contains("ok-rc=0"),
        "{logs}"
    );
    let t = Duration::from_secs(5);
    s.expect_audit(
        "names",
        t,
        &[
            ("kind", "file_read"),
            ("outcome", "blocked"),
            ("target", ".env"),
        ],
    );
    s.expect_audit(
        "names",
        t,
        &[("outcome", "blocked"), ("target", "server.pem")],
    );
}

/// The same guarantees from a node without root: user namespaces build the
/// view, the proxy socket comes from the launcher, and the audit comes from
/// seccomp user notification supervised by the agent's holder.
#[test]
fn a_node_without_root_sandboxes_and_audits_through_seccomp_notification() {
    if !can_sandbox() {
        return;
    }
    const NOBODY: u32 = 65534;
    let mut s = setup("");
    s.node.as_user = Some(NOBODY);
    // Everything the unprivileged node owns.
    let st = std::process::Command::new("chown")
        .args(["-R", "65534:65534"])
        .arg(s.node.dir.path())
        .status()
        .unwrap();
    assert!(st.success());
    std::os::unix::fs::chown(s.node.dir.path(), Some(NOBODY), Some(NOBODY)).unwrap();
    s.shell("rootless");
    s.run(
        "rootless",
        "cat ~/.ssh/id_rsa; echo made > made.txt; curl -s -o /dev/null -w 'proxy=%{http_code}\\n' http://blocked.invalid/; echo rl-done-$((2*3))",
    );
    s.node.wait_log("rootless", "rl-done-6");
    let logs = s.node.logs("rootless");
    assert!(logs.contains("Permission denied"), "{logs}");
    assert!(!logs.contains(CANARY), "{logs}");
    assert!(
        logs.contains("proxy=502") || logs.contains("proxy=403"),
        "{logs}"
    );
    let t = Duration::from_secs(2);
    s.expect_audit(
        "rootless",
        t,
        &[
            ("kind", "file_read"),
            ("outcome", "blocked"),
            ("source", "seccomp-notify"),
            ("target", ".ssh/id_rsa"),
        ],
    );
    s.expect_audit(
        "rootless",
        t,
        &[
            ("kind", "file_write"),
            ("outcome", "allowed"),
            ("target", "made.txt"),
        ],
    );
    s.expect_audit("rootless", t, &[("kind", "exec"), ("target", "curl")]);
    s.expect_audit(
        "rootless",
        t,
        &[("kind", "proxy"), ("target", "blocked.invalid")],
    );
    let policy = s.node.ok(&["policy", "show", "rootless"]).stdout;
    assert!(policy.contains("seccomp user notification"), "{policy}");
}

#[test]
fn limits_are_written_to_the_agents_cgroups() {
    if !can_sandbox() {
        return;
    }
    let s = setup(
        "[security]\nmax_memory = \"256M\"\nmax_cpu_percent = 50\nmax_processes = 100\nmax_disk_write = \"10M\"\n",
    );
    s.shell("lim");
    let id = s.node.agent("lim")["id"].as_str().unwrap().to_string();
    let read = |file: &str| -> Vec<String> {
        find_dirs(Path::new("/sys/fs/cgroup"), &id, 6)
            .into_iter()
            .filter_map(|d| std::fs::read_to_string(d.join(file)).ok())
            .map(|s| s.trim().to_string())
            .collect()
    };
    let v2 = !read("memory.max").is_empty();
    if v2 {
        assert_eq!(read("memory.max"), vec!["268435456"]);
        assert_eq!(read("pids.max"), vec!["100"]);
        assert!(read("cpu.max").iter().any(|c| c.starts_with("50000 ")));
    } else {
        assert_eq!(read("memory.limit_in_bytes"), vec!["268435456"]);
        assert_eq!(read("pids.max"), vec!["100"]);
        assert_eq!(read("cpu.cfs_quota_us"), vec!["50000"]);
        let blk = read("blkio.throttle.write_bps_device");
        assert!(blk.iter().any(|b| b.ends_with(" 10485760")), "{blk:?}");
    }
    // The agent's shell is inside them.
    let pid = s.node.agent("lim")["pid"].as_u64().unwrap().to_string();
    assert!(cgroup_pids(&id).contains(&pid), "{:?}", cgroup_pids(&id));
}

#[test]
fn without_landlock_creation_fails_closed_and_names_the_way_out() {
    // Runs everywhere: the missing feature is simulated for the daemon.
    let n = Node::new().env("AGENTOS_TEST_NO_LANDLOCK", "1");
    let repo = n.work.join("repo");
    std::fs::create_dir_all(&repo).unwrap();
    git_repo(&repo);
    let o = n.run_in(
        &repo,
        &["create", "nolock", "-d", "--", "bash", "--norc", "-i"],
    );
    assert_eq!(o.code, 28, "{o:?}");
    assert!(
        o.stderr.contains("E018") && o.stderr.contains("Landlock"),
        "{o:?}"
    );
    assert!(o.stderr.contains("--isolation none"), "{o:?}");
    // Nothing was started and no worktree is left behind.
    assert!(n.list_json().is_empty());
    assert!(!repo.join(".shards/command-nolock").exists());
    // The explicit way out works.
    n.ok_in(
        &repo,
        &[
            "create",
            "nolock",
            "-d",
            "--isolation",
            "none",
            "--",
            "bash",
            "--norc",
            "-i",
        ],
    );
    assert_eq!(n.agent("nolock")["live"], true);
}
