//! Integration tests: the real `agentos` binary against a daemon with a
//! temporary `AGENTOS_HOME`, real PTYs and fake agents that behave like the
//! real CLIs (tests/fixtures/bin).

mod support;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use support::*;

// ---------------------------------------------------------------- daemon ---

#[test]
fn daemon_autostarts_and_reports_status() {
    let n = Node::new();
    let o = n.run(&["daemon", "status"]);
    assert_eq!(o.code, 3, "not running yet: {o:?}");
    // The first command that needs the daemon starts it.
    let o = n.ok(&["list"]);
    assert!(o.stdout.contains("no agents"), "{o:?}");
    let pid = n.daemon_pid().expect("pid file");
    assert!(alive(pid));
    assert!(n.home.join("agentos.sock").exists());
    let o = n.ok(&["daemon", "status", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&o.stdout).unwrap();
    assert_eq!(v["pid"], pid);
    assert_eq!(v["agents"], 0);
    // JSON logs
    let logs = n.ok(&["daemon", "logs"]).stdout;
    let first = logs
        .lines()
        .find(|l| l.contains("daemon starting"))
        .expect("start logged");
    let j: serde_json::Value = serde_json::from_str(first).unwrap();
    assert_eq!(j["level"], "INFO");
    n.ok(&["daemon", "stop"]);
    wait_until("daemon exits", T, || !alive(pid));
    assert!(!n.home.join("daemon.pid").exists());
    assert!(!n.home.join("agentos.sock").exists());
}

#[test]
fn two_daemons_never_share_a_home() {
    let n = Node::new();
    n.ok(&["daemon", "start"]);
    let pid = n.daemon_pid().unwrap();
    let o = n.run(&["daemon", "start", "--foreground"]);
    assert_eq!(o.code, 21, "second daemon must refuse: {o:?}");
    assert!(
        o.stderr.contains("E011") && o.stderr.contains(&pid.to_string()),
        "{o:?}"
    );
    let o = n.ok(&["daemon", "start"]);
    assert!(o.stdout.contains("already running"), "{o:?}");
    assert_eq!(n.daemon_pid(), Some(pid));
}

#[test]
fn socket_path_and_log_level_come_from_the_environment() {
    let n = Node::new();
    let sock = n.dir.path().join("custom.sock");
    let n = n
        .env("AGENTOS_SOCKET", sock.to_str().unwrap())
        .env("AGENTOS_LOG_LEVEL", "debug");
    n.ok(&[
        "create",
        "e1",
        "--detach",
        "--",
        "bash",
        "--norc",
        "-c",
        "echo hi; exec sleep 600",
    ]);
    assert!(sock.exists(), "daemon listens on $AGENTOS_SOCKET");
    assert!(!n.home.join("agentos.sock").exists());
    n.ok(&["list"]);
    wait_until("debug lines in the log", T, || {
        std::fs::read_to_string(n.home.join("logs/daemon.log"))
            .unwrap_or_default()
            .contains("\"level\":\"DEBUG\"")
    });
}

#[test]
fn protocol_version_mismatch_is_a_clear_error() {
    let n = Node::new();
    n.ok(&["daemon", "start"]);
    let n = n.env("AGENTOS_TEST_PROTOCOL_VERSION", "99");
    let o = n.run(&["list"]);
    assert_eq!(o.code, 16, "{o:?}");
    assert!(
        o.stderr.contains("E006")
            && o.stderr.contains("v99")
            && o.stderr
                .contains(&format!("v{}", agentos_proto::PROTOCOL_VERSION)),
        "{o:?}"
    );
    assert!(o.stderr.contains("agentos daemon stop"), "hint: {o:?}");
}

#[test]
fn malformed_frames_get_an_error_and_the_daemon_keeps_running() {
    let n = Node::new();
    n.ok(&[
        "create",
        "keep",
        "--detach",
        "--",
        "bash",
        "--norc",
        "-c",
        "echo still-here; exec sleep 600",
    ]);
    let sock = n.home.join("agentos.sock");
    // 1. a correct hello, then garbage in a frame
    let mut s = UnixStream::connect(&sock).unwrap();
    let ours =
        agentos_proto::hello_bytes(agentos_proto::CLIENT_MAGIC, agentos_proto::PROTOCOL_VERSION);
    s.write_all(&ours).unwrap();
    let mut hello = [0u8; 8];
    s.read_exact(&mut hello).unwrap();
    assert_eq!(hello, ours);
    s.write_all(&[0, 0, 0, 5, 0xff, 0xfe, 0xfd, 0xfc, 0xfb])
        .unwrap();
    let mut reply = Vec::new();
    s.read_to_end(&mut reply).unwrap();
    let text = String::from_utf8_lossy(&reply);
    assert!(
        text.contains("malformed"),
        "daemon answers with a BadFrame error: {text:?}"
    );
    // 2. an absurd length prefix
    let mut s = UnixStream::connect(&sock).unwrap();
    s.write_all(&agentos_proto::hello_bytes(
        agentos_proto::CLIENT_MAGIC,
        agentos_proto::PROTOCOL_VERSION,
    ))
    .unwrap();
    s.read_exact(&mut hello).unwrap();
    s.write_all(&[0xff, 0xff, 0xff, 0xff]).unwrap();
    let mut reply = Vec::new();
    s.read_to_end(&mut reply).unwrap();
    // 3. not our protocol at all
    let mut s = UnixStream::connect(&sock).unwrap();
    s.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
    let mut reply = Vec::new();
    let _ = s.read_to_end(&mut reply);
    // Still alive, data intact.
    n.wait_log("keep", "still-here");
    assert_eq!(n.agent("keep")["live"], true);
    let errors = std::fs::read_to_string(n.home.join("logs/daemon.log")).unwrap();
    assert!(errors.contains("malformed frame"), "rejections are logged");
}

// ------------------------------------------------------- agent lifecycle ---

#[test]
fn create_list_send_logs_restart_destroy() {
    let n = Node::new();
    let o = n.ok(&["create", "w1", "--detach", "--", "bash", "--norc", "-i"]);
    assert!(o.stdout.contains("created w1"), "{o:?}");
    let a = n.agent("w1");
    assert_eq!(a["agent_type"], "command");
    assert!(a["pid"].as_u64().unwrap() > 0);
    assert_eq!(
        a["cwd"],
        n.work.canonicalize().unwrap().display().to_string()
    );
    assert_eq!(
        a["workspace"],
        n.work.canonicalize().unwrap().display().to_string()
    );
    let table = n.ok(&["list"]).stdout;
    for h in [
        "NAME",
        "TYPE",
        "STATE",
        "UPTIME",
        "PID",
        "WORKSPACE",
        "w1",
        "command",
    ] {
        assert!(table.contains(h), "{h} in {table}");
    }
    n.ok(&["send", "w1", "echo out-$((40+2))", "--enter"]);
    n.wait_log("w1", "out-42");
    let last = n.ok(&["logs", "w1", "--lines", "2"]).stdout;
    assert!(last.lines().count() <= 2, "{last}");
    let pid1 = n.agent("w1")["pid"].as_u64().unwrap();
    let o = n.ok(&["restart", "w1"]);
    assert!(o.stdout.contains("restarted w1"), "{o:?}");
    wait_until("new pid", T, || {
        n.agent("w1")["pid"].as_u64().is_some_and(|p| p != pid1)
    });
    assert!(!alive(pid1 as i32), "old process stopped");
    n.ok(&["send", "w1", "echo after-restart", "--enter"]);
    n.wait_log("w1", "after-restart");
    assert!(
        n.logs("w1").contains("out-42"),
        "scrollback continues across restart"
    );
    let pid2 = n.agent("w1")["pid"].as_u64().unwrap() as i32;
    n.ok(&["destroy", "w1"]);
    wait_until("process gone", T, || !alive(pid2));
    let o = n.ok(&["list"]);
    assert!(!o.stdout.contains("w1"), "{o:?}");
    let all = n.ok(&["list", "--all"]).stdout;
    assert!(all.contains("w1") && all.contains("destroyed"), "{all}");
    // The name is free again.
    n.ok(&["create", "w1", "--detach", "--", "sleep", "600"]);
}

#[test]
fn logs_follow_and_daemon_logs_follow_stream() {
    use std::io::BufRead;
    let n = Node::new();
    n.ok(&["create", "lf", "--detach", "--", "bash", "--norc", "-i"]);
    n.ok(&["send", "lf", "echo first-line", "--enter"]);
    n.wait_log("lf", "first-line");
    let mut follow = n
        .command(&["logs", "lf", "--follow"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(follow.stdout.take().unwrap()).lines();
    let mut seen = |needle: &str| {
        for l in lines.by_ref() {
            if l.unwrap().contains(needle) {
                return;
            }
        }
        panic!("stream ended before {needle}");
    };
    seen("first-line");
    n.ok(&["send", "lf", "echo streamed-$((3*3))", "--enter"]);
    seen("streamed-9");
    let _ = follow.kill();
    let _ = follow.wait();

    let mut dl = n
        .command(&["daemon", "logs", "--follow"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(dl.stdout.take().unwrap()).lines();
    n.ok(&["create", "later", "--detach", "--", "sleep", "600"]);
    let found = lines.by_ref().any(|l| {
        let l = l.unwrap();
        l.contains("agent created") && l.contains("later")
    });
    assert!(found);
    let _ = dl.kill();
    let _ = dl.wait();
}

#[test]
fn the_device_identity_is_created_once_and_names_the_host() {
    use std::os::unix::fs::PermissionsExt;
    let n = Node::new();
    n.ok(&["create", "h1", "--detach", "--", "sleep", "600"]);
    let key = n.home.join("keys/device.ed25519");
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let st: serde_json::Value =
        serde_json::from_str(&n.ok(&["daemon", "status", "--json"]).stdout).unwrap();
    let device = st["device"].as_str().unwrap().to_string();
    assert_eq!(device.len(), 63, "{device}");
    assert_eq!(n.agent("h1")["host_device"], device.as_str());
    n.ok(&["daemon", "stop"]);
    n.ok(&["list"]);
    let st: serde_json::Value =
        serde_json::from_str(&n.ok(&["daemon", "status", "--json"]).stdout).unwrap();
    assert_eq!(st["device"], device.as_str(), "same identity after restart");
}

#[test]
fn bad_input_gets_coded_errors_with_hints() {
    let n = Node::new();
    let o = n.run(&["create", "x", "--agent", "nonesuch", "--detach"]);
    assert_eq!(o.code, 14, "{o:?}");
    assert!(
        o.stderr.contains("E004") && o.stderr.contains("agentos agents list"),
        "{o:?}"
    );

    let o = n.run(&["create", "x", "--agent", "aider", "--detach"]);
    assert_eq!(o.code, 15, "{o:?}");
    assert!(
        o.stderr.contains("E005") && o.stderr.contains("aider-install"),
        "install hint: {o:?}"
    );

    let o = n.run(&["create", "x", "--detach", "--", "/no/such/binary"]);
    assert_eq!(o.code, 15, "{o:?}");

    n.ok(&["create", "x", "--detach", "--", "sleep", "600"]);
    let o = n.run(&["create", "x", "--detach", "--", "sleep", "600"]);
    assert_eq!(o.code, 13, "{o:?}");
    assert!(o.stderr.contains("E003"), "{o:?}");

    let o = n.run(&["attach", "ghost"]);
    assert_eq!(o.code, 12, "{o:?}");
    assert!(
        o.stderr.contains("E002") && o.stderr.contains("agentos list"),
        "{o:?}"
    );

    let o = n.run(&["--json", "send", "ghost", "hi"]);
    assert_eq!(o.code, 12);
    let v: serde_json::Value = serde_json::from_str(&o.stdout).unwrap();
    assert_eq!(v["error"]["code"], "E002");
    assert!(
        v["error"]["hint"]
            .as_str()
            .unwrap()
            .contains("agentos list")
    );

    let o = n.run(&["create", "bad name!", "--detach", "--", "true"]);
    assert_eq!(o.code, 2, "{o:?}");
    assert!(o.stderr.contains("E012"), "{o:?}");
    // Nothing stored was lost, and the daemon is still there.
    assert!(n.agent("x")["pid"].as_u64().is_some());
}

#[test]
fn custom_agents_and_doctor() {
    let n = Node::new();
    std::fs::create_dir_all(n.home.join("agents")).unwrap();
    std::fs::write(
        n.home.join("agents/echoer.toml"),
        r#"
name = "echoer"
description = "prints and waits"
command = "bash"
args = ["--norc", "-c", "echo 'Ready?' ; exec sleep 600"]
install_hint = "it is bash"

[[state_rules]]
name = "ready-prompt"
pattern = "Ready\\?"
state = "waiting"
"#,
    )
    .unwrap();
    let o = n.ok(&["agents", "list"]);
    for name in [
        "claude-code",
        "gemini-cli",
        "openai-codex",
        "aider",
        "gh-copilot",
        "amp-code",
        "opencode",
        "shell",
        "custom/echoer",
    ] {
        assert!(o.stdout.contains(name), "{name}: {o:?}");
    }
    let o = n.ok(&["agents", "doctor"]);
    assert!(o.stdout.contains("ok       claude-code"), "{o:?}");
    assert!(o.stdout.contains("missing  aider"), "{o:?}");
    assert!(o.stdout.contains("aider-install"), "install hint: {o:?}");
    n.ok(&["create", "c1", "--agent", "custom/echoer", "--detach"]);
    wait_until("screen rule decides waiting", T, || {
        n.state("c1") == "waiting"
    });
    let st = n.status_json("c1");
    assert_eq!(st["info"]["state_source"], "screen:ready-prompt");
    assert_eq!(n.agent("c1")["agent_type"], "custom/echoer");
}

#[test]
fn presets_start_several_agents() {
    let n = Node::new();
    let o = n.ok(&["create", "team", "--preset", "duo", "--detach"]);
    assert!(
        o.stdout.contains("team-impl") && o.stdout.contains("team-review"),
        "{o:?}"
    );
    assert_eq!(n.agent("team-impl")["agent_type"], "claude-code");
    assert_eq!(n.agent("team-review")["agent_type"], "openai-codex");
    let o = n.run(&["create", "x", "--preset", "nope", "--detach"]);
    assert_eq!(o.code, 25, "{o:?}");
    assert!(o.stderr.contains("E015"));
}

// ------------------------------------------------------------- attach ------

#[test]
fn attach_shows_snapshot_streams_resizes_and_detaches() {
    let n = Node::new();
    n.ok(&["create", "a1", "--detach", "--", "bash", "--norc", "-i"]);
    n.ok(&["send", "a1", "echo before-attach", "--enter"]);
    n.wait_log("a1", "before-attach");
    let mut p = n.attach(&["attach", "a1"], 100, 30);
    p.expect("before-attach"); // the snapshot of the current screen
    p.write(b"echo live-$((1+1))\r");
    p.expect("live-2");
    // The agent follows the client's window size.
    p.write(b"stty size\r");
    p.expect("30 100");
    p.resize(90, 25);
    // The resize travels through the daemon while keystrokes go straight to
    // the holder: ask again until the new size has arrived.
    let from = p.len();
    let mut asked = std::time::Instant::now() - std::time::Duration::from_secs(1);
    wait_until("the agent sees 25 90", T, || {
        if asked.elapsed() >= std::time::Duration::from_millis(500) {
            p.write(b"stty size\r");
            asked = std::time::Instant::now();
        }
        p.text().get(from..).unwrap_or("").contains("25 90")
    });
    // Ctrl-b d detaches; the agent keeps running.
    p.write(b"\x02d");
    assert_eq!(p.wait_exit(), 0);
    p.expect("[detached from a1]");
    assert_eq!(n.agent("a1")["live"], true);
    n.ok(&["send", "a1", "echo while-detached", "--enter"]);
    n.wait_log("a1", "while-detached");
    // Reattach: the snapshot has what happened meanwhile.
    let mut p = n.attach(&["attach", "a1"], 90, 25);
    p.expect("while-detached");
    // Ctrl-b Ctrl-b sends one Ctrl-b; a custom key detaches too.
    p.write(b"\x02\x02");
    p.write(b"\x03");
    drop(p);
    let mut p = n.attach(&["attach", "a1", "--detach-key", "C-a q"], 90, 25);
    p.expect("bash-");
    p.write(b"\x01q");
    assert_eq!(p.wait_exit(), 0);
}

#[test]
fn detach_from_inside_and_exit_while_attached() {
    let n = Node::new();
    n.ok(&["create", "in1", "--detach", "--", "bash", "--norc", "-i"]);
    let mut p = n.attach(&["attach", "in1"], 80, 24);
    p.expect("bash-");
    // `agentos detach` run inside the agent's own terminal.
    p.write(format!("{} detach\r", BIN).as_bytes());
    assert_eq!(p.wait_exit(), 0);
    p.expect("[detached from in1]");
    let mut p = n.attach(&["attach", "in1"], 80, 24);
    p.expect("bash-");
    p.write(b"exit 7\r");
    assert_eq!(p.wait_exit(), 0);
    p.expect("[in1 exited (7)]");
    wait_until("exited state", T, || n.state("in1") == "exited");
    assert_eq!(n.status_json("in1")["info"]["state"]["Exited"]["code"], 7);
}

#[test]
fn create_attaches_in_a_terminal() {
    let n = Node::new();
    let mut p = n.attach(&["create", "ca", "--", "bash", "--norc", "-i"], 80, 24);
    p.expect("created ca");
    p.write(b"echo inside-$((2*3))\r");
    p.expect("inside-6");
    p.write(b"\x02d");
    assert_eq!(p.wait_exit(), 0);
}

#[test]
fn a_client_that_stops_reading_never_stalls_the_agent() {
    let n = Node::new();
    n.ok(&["create", "flood", "--detach", "--", "bash", "--norc", "-i"]);
    // A raw client attaches and then never reads.
    let mut s = UnixStream::connect(n.home.join("agentos.sock")).unwrap();
    s.write_all(&agentos_proto::hello_bytes(
        agentos_proto::CLIENT_MAGIC,
        agentos_proto::PROTOCOL_VERSION,
    ))
    .unwrap();
    let mut hello = [0u8; 8];
    s.read_exact(&mut hello).unwrap();
    let frame = agentos_proto::encode_frame(&agentos_proto::ClientFrame::Request(
        agentos_proto::Request::Attach {
            direct: false,
            name: "flood".into(),
            cols: 80,
            rows: 24,
        },
    ))
    .unwrap();
    s.write_all(&frame).unwrap();
    // 30 MB of output while that client sleeps.
    n.ok(&[
        "send",
        "flood",
        "head -c 30000000 /dev/zero | tr '\\0' x | fold -w 100; echo FLOOD-DONE",
        "--enter",
    ]);
    wait_until(
        "agent finishes flooding",
        std::time::Duration::from_secs(60),
        || {
            n.ok(&["logs", "flood", "--lines", "3"])
                .stdout
                .contains("FLOOD-DONE")
        },
    );
    // Another client sees the current screen at once.
    let mut p = n.attach(&["attach", "flood"], 80, 24);
    p.expect("FLOOD-DONE");
    p.write(b"\x02d");
    p.wait_exit();
    // The slow client now reads: it was dropped from the stream while its
    // queue was full and is resynced by a snapshot of the current screen.
    let mut got = 0usize;
    let mut since_snapshot: Option<Vec<u8>> = None;
    while !since_snapshot
        .as_ref()
        .is_some_and(|b| String::from_utf8_lossy(b).contains("FLOOD-DONE"))
    {
        let frame: agentos_proto::ServerFrame =
            agentos_proto::read_frame(&mut s).expect("frames keep coming");
        match frame {
            agentos_proto::ServerFrame::Output { data, .. } => {
                got += data.len();
                if let Some(b) = since_snapshot.as_mut() {
                    b.extend_from_slice(&data);
                }
            }
            agentos_proto::ServerFrame::Snapshot { data, .. } => since_snapshot = Some(data),
            _ => {}
        }
    }
    assert!(
        got < 30_000_000,
        "the slow client was not sent everything ({got} bytes)"
    );
    // The daemon's memory stayed bounded.
    let st: serde_json::Value =
        serde_json::from_str(&n.ok(&["daemon", "status", "--json"]).stdout).unwrap();
    assert!(st["rss_bytes"].as_u64().unwrap() < 200_000_000, "{st}");
}

// ---------------------------------------------------------------- state ----

#[test]
fn claude_hooks_decide_state_and_capture_the_conversation_id() {
    let n = Node::new();
    n.ok(&["create", "cl", "--agent", "claude", "--detach"]);
    n.ok(&["wait", "cl", "--until", "idle", "--timeout", "20"]);
    assert_eq!(
        n.status_json("cl")["info"]["state_source"],
        "hook:SessionStart"
    );
    // The settings file is per session, never the user's global config.
    let argv = std::fs::read_to_string(n.argv_log()).unwrap();
    assert!(argv.contains("--settings"), "{argv}");
    assert!(!n.dir.path().join(".claude").exists());
    n.ok(&["send", "cl", "perm", "--enter"]);
    n.ok(&["wait", "cl", "--until", "waiting", "--timeout", "20"]);
    let o = n.ok(&["status", "cl", "--explain"]);
    assert!(o.stdout.contains("cl: waiting"), "{o:?}");
    assert!(o.stdout.contains("decided by: hook:Notification"), "{o:?}");
    assert!(o.stdout.contains("→ 1."), "rank 1 decided: {o:?}");
    n.ok(&["send", "cl", "hello", "--enter"]);
    n.wait_log("cl", "answer: hello");
    wait_until("Stop hook", T, || {
        n.status_json("cl")["info"]["state_source"] == "hook:Stop"
    });
    assert_eq!(n.state("cl"), "idle");
    // The conversation id from SessionStart is recorded.
    let logs = n.logs("cl");
    let session = logs
        .split("session ")
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();
    wait_until("resume id recorded", T, || {
        n.agent("cl")["resume_id"] == session.as_str()
    });
    // Hook events are also durable on disk.
    let id = n.agent("cl")["id"].as_str().unwrap().to_string();
    let hooks = std::fs::read_to_string(n.home.join("run").join(&id).join("hooks.jsonl")).unwrap();
    assert!(hooks.contains("\"event\":\"Notification\""), "{hooks}");
}

#[test]
fn gemini_and_codex_hooks() {
    let n = Node::new();
    n.ok(&["create", "ge", "--agent", "gemini", "--detach"]);
    n.ok(&["create", "cx", "--agent", "codex", "--detach"]);
    n.ok(&["wait", "ge", "--until", "idle", "--timeout", "20"]);
    n.ok(&["send", "ge", "hi", "--enter"]);
    wait_until("gemini AfterAgent hook", T, || {
        n.status_json("ge")["info"]["state_source"] == "hook:AfterAgent"
    });
    assert_eq!(n.state("ge"), "idle");
    assert!(
        !n.logs("ge").contains("not JSON"),
        "gemini hooks answer JSON: {}",
        n.logs("ge")
    );
    n.ok(&["send", "ge", "perm", "--enter"]);
    n.ok(&["wait", "ge", "--until", "waiting", "--timeout", "20"]);
    assert_eq!(
        n.status_json("ge")["info"]["state_source"],
        "hook:Notification"
    );

    n.ok(&["send", "cx", "build it", "--enter"]);
    n.ok(&["wait", "cx", "--until", "idle", "--timeout", "20"]);
    assert_eq!(
        n.status_json("cx")["info"]["state_source"],
        "hook:agent-turn-complete"
    );
    n.ok(&["send", "cx", "perm", "--enter"]);
    n.ok(&["wait", "cx", "--until", "waiting", "--timeout", "20"]);
    let logs = n.logs("cx");
    let thread = logs
        .split("thread ")
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();
    wait_until("codex thread id recorded", T, || {
        n.agent("cx")["resume_id"] == thread.as_str()
    });
}

#[test]
fn osc_bel_and_process_sources() {
    let n = Node::new();
    n.ok(&[
        "create",
        "o9",
        "--detach",
        "--",
        "bash",
        "--norc",
        "-c",
        "printf 'working\\n'; read x; printf '\\033]9;Need your input\\007'; exec sleep 600",
    ]);
    n.ok(&["send", "o9", "go", "--enter"]);
    n.ok(&["wait", "o9", "--until", "waiting", "--timeout", "20"]);
    assert_eq!(
        n.status_json("o9")["info"]["state_source"],
        "osc:Need your input"
    );

    n.ok(&[
        "create",
        "bel",
        "--detach",
        "--",
        "bash",
        "--norc",
        "-c",
        "read x; printf 'done\\a'; exec sleep 600",
    ]);
    n.ok(&["send", "bel", "go", "--enter"]);
    n.ok(&["wait", "bel", "--until", "waiting", "--timeout", "20"]);
    assert_eq!(n.status_json("bel")["info"]["state_source"], "bel");

    n.ok(&[
        "create",
        "quiet",
        "--detach",
        "--",
        "bash",
        "--norc",
        "-c",
        "echo hi; exec sleep 600",
    ]);
    n.ok(&["wait", "quiet", "--until", "idle", "--timeout", "20"]);
    assert_eq!(n.status_json("quiet")["info"]["state_source"], "process");

    n.ok(&[
        "create",
        "ex",
        "--detach",
        "--",
        "bash",
        "--norc",
        "-c",
        "read x; exit 3",
    ]);
    n.ok(&["send", "ex", "bye", "--enter"]);
    n.ok(&["wait", "ex", "--until", "exited", "--timeout", "20"]);
    let st = n.status_json("ex");
    assert_eq!(st["info"]["state"]["Exited"]["code"], 3);

    // A wait that times out has its own exit code.
    let o = n.run(&["wait", "quiet", "--until", "waiting", "--timeout", "0.3"]);
    assert_eq!(o.code, 124, "{o:?}");
    assert!(o.stderr.contains("E010"), "{o:?}");
    // Waiting for a state an exited agent can't reach fails fast.
    let o = n.run(&["wait", "ex", "--until", "idle", "--timeout", "20"]);
    assert_eq!(o.code, 24, "{o:?}");
}

// ------------------------------------------------- surviving the daemon ----

#[test]
fn agents_outlive_a_killed_daemon() {
    let n = Node::new();
    for i in 0..3 {
        let name = format!("s{i}");
        n.ok(&["create", &name, "--detach", "--", "bash", "--norc", "-i"]);
        n.ok(&["send", &name, &format!("echo mark-{i}"), "--enter"]);
        n.wait_log(&name, &format!("mark-{i}"));
    }
    n.ok(&["create", "cl", "--agent", "claude", "--detach"]);
    n.ok(&["send", "cl", "perm", "--enter"]);
    n.ok(&["wait", "cl", "--until", "waiting", "--timeout", "20"]);
    let before = n.list_json();
    let pids: Vec<i32> = before
        .iter()
        .map(|a| a["pid"].as_i64().unwrap() as i32)
        .collect();
    let daemon = n.daemon_pid().unwrap();
    n.kill9(daemon, false);
    wait_until("daemon dead", T, || !alive(daemon));
    for p in &pids {
        assert!(alive(*p), "agent {p} survived the daemon");
    }
    // The next command starts a new daemon that reattaches.
    let after = n.list_json();
    assert_ne!(n.daemon_pid().unwrap(), daemon);
    assert_eq!(after.len(), before.len());
    for a in &after {
        assert!(
            pids.contains(&(a["pid"].as_i64().unwrap() as i32)),
            "same process: {a}"
        );
    }
    assert_eq!(n.state("cl"), "waiting", "state intact");
    for i in 0..3 {
        assert!(
            n.logs(&format!("s{i}")).contains(&format!("mark-{i}")),
            "scrollback intact"
        );
    }
    // Fully usable: input, attach.
    n.ok(&["send", "s0", "echo after-crash", "--enter"]);
    n.wait_log("s0", "after-crash");
    let mut p = n.attach(&["attach", "s1"], 80, 24);
    p.expect("mark-1");
    p.write(b"\x02d");
    p.wait_exit();
}

#[test]
fn daemon_stop_keeps_agents_unless_told() {
    let n = Node::new();
    n.ok(&["create", "k1", "--detach", "--", "sleep", "600"]);
    let pid = n.agent("k1")["pid"].as_i64().unwrap() as i32;
    let o = n.ok(&["daemon", "stop"]);
    assert!(o.stdout.contains("agents keep running"));
    assert!(alive(pid));
    assert_eq!(n.agent("k1")["pid"].as_i64().unwrap() as i32, pid);
    n.ok(&["daemon", "stop", "--kill-agents"]);
    wait_until("agent killed", T, || !alive(pid));
}

#[test]
fn restore_after_holders_die_resumes_each_conversation() {
    let n = Node::new();
    n.ok(&["create", "r1", "--agent", "claude", "--detach"]);
    n.ok(&["create", "r2", "--agent", "claude", "--detach"]);
    n.ok(&["create", "plain", "--detach", "--", "sleep", "600"]);
    for r in ["r1", "r2"] {
        wait_until("resume id", T, || n.agent(r)["resume_id"].is_string());
    }
    let ids: Vec<String> = ["r1", "r2"]
        .iter()
        .map(|r| n.agent(r)["resume_id"].as_str().unwrap().to_string())
        .collect();
    assert_ne!(ids[0], ids[1]);
    // Simulate a reboot: the daemon and every holder and agent die.
    let daemon = n.daemon_pid().unwrap();
    for (holder, child) in n.holder_pids() {
        n.kill9(holder, false);
        n.kill9(child, true);
    }
    n.kill9(daemon, false);
    wait_until("all dead", T, || {
        n.holder_pids()
            .iter()
            .all(|(h, c)| !alive(*h) && !alive(*c))
            && !alive(daemon)
    });
    // Every lost agent (not just the first) must be seen as lost before
    // `restore`, which only brings back agents that are no longer running.
    wait_until("lost agents are reported", T, || {
        n.state("r1") == "error" && n.state("r2") == "error"
    });
    let o = n.ok(&["restore"]);
    assert!(
        o.stdout.contains("restored r1")
            && o.stdout.contains("restored r2")
            && o.stdout.contains("restored plain"),
        "{o:?}"
    );
    for (r, id) in ["r1", "r2"].iter().zip(&ids) {
        n.wait_log(r, &format!("resumed conversation {id}"));
    }
    let argv = std::fs::read_to_string(n.argv_log()).unwrap();
    let resumed: Vec<&str> = argv.lines().filter(|l| l.contains("--resume")).collect();
    assert_eq!(resumed.len(), 2, "{argv}");
    assert!(!argv.contains("--continue"), "{argv}");
    wait_until("plain restarted", T, || n.state("plain") == "idle");
    assert!(alive(n.agent("plain")["pid"].as_i64().unwrap() as i32));
}

#[test]
fn sessions_save_and_restore() {
    let n = Node::new();
    n.ok(&["create", "p1", "--agent", "claude", "--detach"]);
    n.ok(&["create", "p2", "--detach", "--", "bash", "--norc", "-i"]);
    wait_until("resume id", T, || n.agent("p1")["resume_id"].is_string());
    let rid = n.agent("p1")["resume_id"].as_str().unwrap().to_string();
    let o = n.ok(&["session", "save", "morning"]);
    assert!(o.stdout.contains("saved session morning (p1, p2)"), "{o:?}");
    assert!(n.ok(&["session", "list"]).stdout.contains("morning"));
    n.ok(&["destroy", "p1"]);
    n.ok(&["destroy", "p2"]);
    let o = n.ok(&["session", "restore", "morning"]);
    assert!(
        o.stdout.contains("restored p1") && o.stdout.contains("restored p2"),
        "{o:?}"
    );
    n.wait_log("p1", &format!("resumed conversation {rid}"));
    assert_eq!(n.agent("p2")["agent_type"], "command");
    let o = n.run(&["session", "restore", "nope"]);
    assert_eq!(o.code, 26, "{o:?}");
}

// ------------------------------------------------------ scrollback/store ----

#[test]
fn scrollback_of_100k_lines_survives_restarts() {
    let n = Node::new();
    n.ok(&[
        "create",
        "big",
        "--detach",
        "--",
        "bash",
        "--norc",
        "-c",
        "seq 1 120000; echo END-OF-SEQ; exec sleep 600",
    ]);
    n.wait_log("big", "END-OF-SEQ");
    let o = n.ok(&["logs", "big", "--lines", "3"]).stdout;
    assert_eq!(o.trim(), "119999\n120000\nEND-OF-SEQ", "{o}");
    let all = n.ok(&["logs", "big"]).stdout;
    assert!(all.starts_with("1\n2\n3\n"), "full history kept");
    // Absolute line numbers: `seq` printed N on line N.
    let numbered = n.ok(&["logs", "big", "--lines", "2", "--numbers"]).stdout;
    assert_eq!(
        numbered, " 120000  120000\n 120001  END-OF-SEQ\n",
        "{numbered}"
    );
    assert_eq!(all.lines().count(), 120001);
    let daemon = n.daemon_pid().unwrap();
    n.kill9(daemon, false);
    wait_until("daemon dead", T, || !alive(daemon));
    let all = n.ok(&["logs", "big"]).stdout;
    assert_eq!(all.lines().count(), 120001, "history survives the daemon");
    let mut p = n.attach(&["attach", "big"], 80, 24);
    p.expect("END-OF-SEQ");
    p.write(b"\x02d");
    p.wait_exit();
}

#[test]
fn a_corrupt_store_is_reported_backed_up_and_rebuilt() {
    let n = Node::new();
    n.ok(&["create", "keep1", "--detach", "--", "sleep", "600"]);
    n.ok(&["create", "keep2", "--detach", "--", "sleep", "600"]);
    n.ok(&["daemon", "stop"]);
    let store = n.home.join("store");
    for e in std::fs::read_dir(&store).unwrap().flatten() {
        if e.path().is_file() {
            std::fs::write(e.path(), vec![0xA5; 8192]).unwrap();
        }
    }
    let list = n.list_json();
    let names: Vec<&str> = list.iter().filter_map(|a| a["name"].as_str()).collect();
    assert!(
        names.contains(&"keep1") && names.contains(&"keep2"),
        "agents rebuilt: {list:?}"
    );
    let st = n.ok(&["daemon", "status"]).stdout;
    assert!(st.contains("E008"), "{st}");
    let backups = std::fs::read_dir(&n.home)
        .unwrap()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("store.corrupt-")
        })
        .count();
    assert_eq!(backups, 1);
    n.ok(&["send", "keep1", "x"]);
}

#[test]
fn list_reads_the_workspace_document() {
    let n = Node::new();
    let repo = n.work.join("repo");
    let r = git2::Repository::init(&repo).unwrap();
    std::fs::create_dir_all(repo.join("sub")).unwrap();
    let o = n
        .command(&[
            "create", "g1", "--detach", "--cwd", "repo/sub", "--", "sleep", "600",
        ])
        .output()
        .unwrap();
    assert!(o.status.success());
    let a = n.agent("g1");
    assert_eq!(
        a["workspace"],
        r.commondir().canonicalize().unwrap().display().to_string()
    );
    // The document is persisted in sled: a new daemon lists the same data.
    n.ok(&["daemon", "stop"]);
    let a2 = n.agent("g1");
    assert_eq!(a2["id"], a["id"]);
    assert_eq!(a2["workspace"], a["workspace"]);
}

// ---------------------------------------------------------- CLI habits -----

#[test]
fn config_get_set_edit() {
    let n = Node::new();
    assert_eq!(
        n.ok(&["config", "get", "general.detach_key"]).stdout.trim(),
        "C-b d"
    );
    n.ok(&["config", "set", "general.default_agent", "claude"]);
    assert_eq!(
        n.ok(&["config", "get", "general.default_agent"])
            .stdout
            .trim(),
        "claude"
    );
    let o = n.run(&["config", "set", "general.nope", "1"]);
    assert_eq!(o.code, 2, "{o:?}");
    // A project's .agentos/config.toml overrides the user's.
    std::fs::create_dir_all(n.work.join(".agentos")).unwrap();
    std::fs::write(
        n.work.join(".agentos/config.toml"),
        "[general]\ndefault_agent = \"codex\"\n",
    )
    .unwrap();
    assert_eq!(
        n.ok(&["config", "get", "general.default_agent"])
            .stdout
            .trim(),
        "codex"
    );
    // The default agent is used by `create` without --agent.
    n.ok(&["create", "d1", "--detach"]);
    assert_eq!(n.agent("d1")["agent_type"], "openai-codex");
    let n = n.env("EDITOR", "true");
    n.ok(&["config", "edit"]);
    std::fs::write(n.work.join(".agentos/config.toml"), "[general\n").unwrap();
    let o = n.run(&["config", "get"]);
    assert_eq!(o.code, 19, "{o:?}");
    assert!(o.stderr.contains("E009"));
}

#[test]
fn help_version_completions_and_man() {
    let n = Node::new();
    assert!(n.ok(&["--version"]).stdout.starts_with("agentos "));
    let h = n.ok(&["--help"]).stdout;
    for c in [
        "create", "attach", "wait", "restore", "session", "agents", "daemon",
    ] {
        assert!(h.contains(c), "{c} in help");
    }
    for sh in ["bash", "zsh", "fish"] {
        let o = n.ok(&["completions", sh]);
        assert!(
            o.stdout.contains("agentos") && o.stdout.len() > 1000,
            "{sh}"
        );
    }
    assert!(n.ok(&["man"]).stdout.contains(".TH agentos"));
    let q = n.ok(&["-q", "create", "qq", "--detach", "--", "sleep", "600"]);
    assert!(q.stdout.is_empty());
}

// ------------------------------------------------------------ worktrees ----

#[test]
fn agents_in_a_repository_get_their_own_worktree() {
    let n = Node::new();
    let root = n.work.join("repo");
    let repo = git_repo(&root);
    let base = repo
        .head()
        .unwrap()
        .peel_to_commit()
        .unwrap()
        .id()
        .to_string();
    let o = n.ok_in(
        &root.join("src"),
        &["create", "w1", "--agent", "claude", "--detach"],
    );
    assert!(o.stdout.contains("created w1"), "{o:?}");
    let a = n.agent("w1");
    let wt = root.canonicalize().unwrap().join(".shards/claude-w1");
    assert_eq!(a["worktree"], wt.display().to_string());
    assert_eq!(a["branch"], "agentos/w1");
    assert_eq!(
        a["cwd"],
        wt.join("src").display().to_string(),
        "same subdirectory as the user"
    );
    assert!(wt.join("a.txt").exists());
    let exclude = std::fs::read_to_string(root.join(".git/info/exclude")).unwrap();
    assert!(exclude.contains("/.shards/"));
    assert!(!root.join(".gitignore").exists());
    let br = repo
        .find_branch("agentos/w1", git2::BranchType::Local)
        .unwrap();
    assert_eq!(br.get().peel_to_commit().unwrap().id().to_string(), base);
    // --isolation none runs in place.
    n.ok_in(
        &root,
        &[
            "create",
            "plain",
            "--isolation",
            "none",
            "--detach",
            "--",
            "sleep",
            "600",
        ],
    );
    assert!(n.agent("plain")["worktree"].is_null());
    // Not available yet: a clear error, never a silent downgrade.
    let o = n.run_in(
        &root,
        &[
            "create",
            "dk",
            "--isolation",
            "docker",
            "--detach",
            "--",
            "true",
        ],
    );
    assert_eq!(o.code, 28, "{o:?}");
    assert!(
        o.stderr.contains("E018") && o.stderr.contains("--isolation none"),
        "{o:?}"
    );
}

#[test]
fn destroy_never_loses_work_and_merge_brings_it_home() {
    let n = Node::new();
    let root = n.work.join("repo");
    let repo = git_repo(&root);
    let base_branch = repo.head().unwrap().shorthand().unwrap().to_string();
    n.ok_in(
        &root,
        &["create", "m1", "--detach", "--", "bash", "--norc", "-i"],
    );
    let wt = std::path::PathBuf::from(n.agent("m1")["worktree"].as_str().unwrap());
    n.ok(&[
        "send",
        "m1",
        "echo changed > a.txt && echo new > b.txt && echo WRO$((0))TE",
        "--enter",
    ]);
    n.wait_log("m1", "WRO0TE");
    let st = n.ok(&["diff", "m1", "--stat"]).stdout;
    assert!(
        st.contains("a.txt") && st.contains("b.txt") && st.contains("2 files changed"),
        "{st}"
    );
    let d = n.ok(&["diff", "m1"]).stdout;
    assert!(d.contains("-one") && d.contains("+changed"), "{d}");
    // Dirty work: destroy refuses.
    let o = n.run(&["destroy", "m1"]);
    assert_eq!(o.code, 29, "{o:?}");
    assert!(
        o.stderr.contains("E019") && o.stderr.contains("uncommitted"),
        "{o:?}"
    );
    assert!(wt.exists());
    // Merge refuses uncommitted work too.
    let o = n.run(&["merge", "m1"]);
    assert_eq!(o.code, 29, "{o:?}");
    // The agent commits; merge brings it to the base branch.
    n.ok(&["send", "m1", "git add -A && git -c user.name=a -c user.email=a@b commit -qm work && echo COMMIT$((0))TED", "--enter"]);
    n.wait_log("m1", "COMMIT0TED");
    let o = n.ok(&["merge", "m1"]);
    assert!(
        o.stdout
            .contains(&format!("merged agentos/m1 into {base_branch}")),
        "{o:?}"
    );
    assert_eq!(
        std::fs::read_to_string(root.join("b.txt")).unwrap(),
        "new\n"
    );
    // Merged and clean: destroy removes the worktree and the branch.
    let o = n.ok(&["destroy", "m1"]);
    assert!(o.stdout.contains("removed"), "{o:?}");
    assert!(!wt.exists());
    assert!(
        repo.find_branch("agentos/m1", git2::BranchType::Local)
            .is_err()
    );

    // --force saves dirty work to refs/agentos/snapshots first.
    n.ok_in(
        &root,
        &["create", "f1", "--detach", "--", "bash", "--norc", "-i"],
    );
    let wt = std::path::PathBuf::from(n.agent("f1")["worktree"].as_str().unwrap());
    n.ok(&[
        "send",
        "f1",
        "echo precious > keep.txt && echo DO$((0))NE",
        "--enter",
    ]);
    n.wait_log("f1", "DO0NE");
    let o = n.ok(&["destroy", "f1", "--force"]);
    assert!(o.stdout.contains("refs/agentos/snapshots/f1/"), "{o:?}");
    assert!(!wt.exists());
    let r = o
        .stdout
        .split_whitespace()
        .find(|w| w.starts_with("refs/agentos/snapshots/f1/"))
        .unwrap();
    let tree = repo.revparse_single(r).unwrap().peel_to_tree().unwrap();
    let blob = tree
        .get_path(std::path::Path::new("keep.txt"))
        .unwrap()
        .to_object(&repo)
        .unwrap();
    assert_eq!(blob.as_blob().unwrap().content(), b"precious\n");
    assert!(
        root.join("a.txt").exists(),
        "nothing outside .shards was touched"
    );
}

#[test]
fn merge_conflicts_are_refused_and_overlaps_are_reported() {
    let n = Node::new();
    let root = n.work.join("repo");
    git_repo(&root);
    for a in ["c1", "c2"] {
        n.ok_in(
            &root,
            &["create", a, "--detach", "--", "bash", "--norc", "-i"],
        );
        n.ok(&["send", a, &format!("echo {a} > a.txt && git add -A && git -c user.name=a -c user.email=a@b commit -qm {a} && echo OK-$((0))-{a}"), "--enter"]);
        n.wait_log(a, &format!("OK-0-{a}"));
    }
    let o = n.ok(&["overlaps"]).stdout;
    assert!(o.contains("c1 and c2 both touched 1 file(s): a.txt"), "{o}");
    n.ok(&["merge", "c1", "--squash"]);
    let o = n.run(&["merge", "c2"]);
    assert_eq!(o.code, 30, "{o:?}");
    assert!(
        o.stderr.contains("E020") && o.stderr.contains("conflicts in: a.txt"),
        "{o:?}"
    );
    assert_eq!(std::fs::read_to_string(root.join("a.txt")).unwrap(), "c1\n");
    // A leftover directory nobody uses is an orphan.
    std::fs::create_dir_all(root.join(".shards/stray")).unwrap();
    std::fs::write(root.join(".shards/stray/big.bin"), vec![0u8; 300_000]).unwrap();
    let o = n.ok(&["gc"]).stdout;
    assert!(o.contains("stray") && o.contains("0.3 MB"), "{o}");
}

#[test]
fn attach_through_the_daemon_relay() {
    // Without a direct route to the holder the daemon relays the output.
    let n = Node::new().env("AGENTOS_ATTACH_VIA_DAEMON", "1");
    n.ok(&["create", "rl", "--detach", "--", "bash", "--norc", "-i"]);
    n.ok(&["send", "rl", "echo before-$((5+5))", "--enter"]);
    n.wait_log("rl", "before-10");
    let mut p = n.attach(&["attach", "rl"], 100, 30);
    p.expect("before-10");
    p.write(b"echo relayed-$((7*6))\r");
    p.expect("relayed-42");
    p.resize(90, 25);
    // The resize travels through the daemon while keystrokes go straight to
    // the holder: ask again until the new size has arrived.
    let from = p.len();
    let mut asked = std::time::Instant::now() - std::time::Duration::from_secs(1);
    wait_until("the agent sees 25 90", T, || {
        if asked.elapsed() >= std::time::Duration::from_millis(500) {
            p.write(b"stty size\r");
            asked = std::time::Instant::now();
        }
        p.text().get(from..).unwrap_or("").contains("25 90")
    });
    p.write(b"exit 4\r");
    assert_eq!(p.wait_exit(), 0);
    p.expect("[rl exited (4)]");
}

// -------------------------------------------------------------- sandbox ----

#[test]
fn the_sandbox_launcher_keeps_secrets_out_of_reach() {
    let n = Node::new();
    let user_home = n.dir.path().join("home");
    std::fs::create_dir_all(user_home.join(".ssh")).unwrap();
    let canary = "CANARY-5f3a9e-not-for-agents";
    std::fs::write(user_home.join(".ssh/id_rsa"), canary).unwrap();
    let worktree = n.dir.path().join("wt");
    let agent_home = n.dir.path().join("agent-home");
    let agent_tmp = n.dir.path().join("agent-tmp");
    for d in [&worktree, &agent_home, &agent_tmp] {
        std::fs::create_dir_all(d).unwrap();
    }
    std::fs::write(worktree.join("code.rs"), "fn main() {}").unwrap();
    std::os::unix::fs::symlink(user_home.join(".ssh/id_rsa"), worktree.join("link")).unwrap();
    let policy = agentos_sandbox::FilePolicy::default_for(
        &user_home,
        &worktree,
        &agent_home,
        &agent_tmp,
        &[],
    );
    let pfile = n.dir.path().join("policy.json");
    std::fs::write(&pfile, serde_json::to_vec(&policy).unwrap()).unwrap();
    if agentos_sandbox::landlock_abi() == 0 {
        // Fail closed: nothing runs, and the error says how to opt out.
        let o = n.run(&[
            "sandbox-exec",
            "--policy",
            pfile.to_str().unwrap(),
            "--",
            "cat",
            "/etc/hostname",
        ]);
        assert_eq!(o.code, 28, "{o:?}");
        assert!(o.stderr.contains("--isolation none"), "{o:?}");
        eprintln!("SKIPPED: the kernel has no Landlock; checked that the launcher fails closed");
        return;
    }
    let sh = |script: &str| {
        n.run(&[
            "sandbox-exec",
            "--policy",
            pfile.to_str().unwrap(),
            "--",
            "sh",
            "-c",
            script,
        ])
    };
    let secret = user_home.join(".ssh/id_rsa");
    let secret = secret.display();
    for attempt in [
        format!("cat {secret}"),
        format!("cat {}/link", worktree.display()),
        format!("cat /proc/self/root{secret}"),
        format!("cat /proc/1/root{secret}"),
        format!("cd {} && cat ../home/.ssh/id_rsa", worktree.display()),
        format!("ln {secret} {}/hard", worktree.display()),
        format!(
            "mv {}/.ssh {}/stolen",
            user_home.display(),
            worktree.display()
        ),
    ] {
        let o = sh(&attempt);
        assert_ne!(o.code, 0, "{attempt} must fail: {o:?}");
        assert!(
            !o.stdout.contains(canary) && !o.stderr.contains(canary),
            "{attempt} leaked the canary"
        );
    }
    assert!(user_home.join(".ssh/id_rsa").exists(), "nothing was moved");
    // The agent's own trees work.
    let o = sh(&format!(
        "cat {0}/code.rs && echo ok > {0}/new.txt && echo t > {1}/x && ls /usr/bin >/dev/null && echo FINE",
        worktree.display(),
        agent_tmp.display()
    ));
    assert!(
        o.stdout.contains("fn main() {}") && o.stdout.contains("FINE"),
        "{o:?}"
    );
    // Writing outside the allow-list is denied.
    let o = sh(&format!("echo x > {}/evil", user_home.display()));
    assert_ne!(o.code, 0, "{o:?}");
    assert!(!user_home.join("evil").exists());
}

#[test]
fn a_stalled_terminal_is_resynced_not_replayed() {
    let n = Node::new();
    n.ok(&["create", "st", "--detach", "--", "bash", "--norc", "-i"]);
    let mut p = n.attach(&["attach", "st"], 80, 24);
    p.expect("bash-");
    // The terminal stops reading while the agent prints 40 MB.
    p.paused.store(true, std::sync::atomic::Ordering::SeqCst);
    n.ok(&[
        "send",
        "st",
        "head -c 40000000 /dev/zero | tr '\\0' y | fold -w 100; echo STALL-$((2+2))-END",
        "--enter",
    ]);
    wait_until(
        "the agent finished, unhindered by the stalled client",
        std::time::Duration::from_secs(90),
        || {
            n.ok(&["logs", "st", "--lines", "2"])
                .stdout
                .contains("STALL-4-END")
        },
    );
    p.paused.store(false, std::sync::atomic::Ordering::SeqCst);
    p.expect("STALL-4-END");
    let got = p.len();
    assert!(
        got < 40_000_000,
        "resynced from a snapshot, not sent the backlog ({got} bytes)"
    );
    // Still fully interactive afterwards.
    p.write(b"echo after-$((3*3))\r");
    p.expect("after-9");
    p.write(b"\x02d");
    assert_eq!(p.wait_exit(), 0);
}

#[test]
fn device_show_prints_a_stable_checked_id_and_keeps_the_key_private() {
    use std::os::unix::fs::PermissionsExt;
    let n = Node::new();
    let a = n.ok(&["--json", "device", "show"]).stdout;
    let b = n.ok(&["--json", "device", "show"]).stdout;
    assert_eq!(a, b, "the identity is created once");
    let v: serde_json::Value = serde_json::from_str(&a).unwrap();
    let long = v["device_id"].as_str().unwrap();
    assert!(agentos_p2p::DeviceId::parse(long).is_some(), "{long}");
    assert_eq!(v["short"].as_str().unwrap(), &long[..7]);
    let mode = std::fs::metadata(n.home.join("keys/device.ed25519"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    // A typo in an id is caught by its check characters.
    let mut bad = long.to_string().into_bytes();
    bad[3] = if bad[3] == b'A' { b'B' } else { b'A' };
    assert!(agentos_p2p::DeviceId::parse(&String::from_utf8(bad).unwrap()).is_none());
    let text = n.ok(&["device", "show"]).stdout;
    assert!(text.starts_with(long) && text.contains("short: "), "{text}");
}
