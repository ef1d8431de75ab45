//! Peer-to-peer between real daemons on loopback, driven through the CLI as
//! a user would: pairing with the SAS on both screens, devices, sync of the
//! workspace document (cross-device list, concurrent edits, disable),
//! removal with key rotation, handoff of an agent with its branch and
//! conversation, and remote attach over a libp2p stream.

mod support;

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;
use support::{Node, pair, shared_repo, try_wait, wait_until};

const T: Duration = Duration::from_secs(40);

/// A device whose P2P listens on loopback; `mdns` for LAN discovery.
fn p2p_node(name: &str, mdns: bool) -> Node {
    support::p2p_node(name, mdns, "/ip4/127.0.0.1/tcp/0")
}

fn device_id(n: &Node) -> String {
    let o = n.ok(&["device", "show", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&o.stdout).unwrap();
    v["device_id"].as_str().unwrap().to_string()
}

fn devices(n: &Node) -> Vec<serde_json::Value> {
    serde_json::from_str(&n.ok(&["devices", "--json"]).stdout).unwrap()
}

fn sync_status(n: &Node) -> serde_json::Value {
    serde_json::from_str(&n.ok(&["sync", "status", "--json"]).stdout).unwrap()
}

fn connected(n: &Node, other: &str) -> bool {
    devices(n)
        .iter()
        .any(|d| d["id"] == other && !d["connection"].is_null())
}

fn has_agent(n: &Node, name: &str) -> bool {
    n.list_json().iter().any(|a| a["name"] == name)
}

#[test]
fn pairing_shows_one_code_and_devices_list_both() {
    let a = p2p_node("laptop", false);
    let b = p2p_node("desktop", false);
    let payload = pair(&a, &b);
    let (ia, ib) = (device_id(&a), device_id(&b));
    for n in [&a, &b] {
        let d = devices(n);
        assert_eq!(d.len(), 2, "{d:?}");
        assert!(d.iter().any(|x| x["id"] == ia && x["name"] == "laptop"));
        assert!(d.iter().any(|x| x["id"] == ib && x["name"] == "desktop"));
    }
    let text = a.ok(&["devices"]).stdout;
    assert!(
        text.contains("desktop") && text.contains(&ib[..7]),
        "{text}"
    );
    wait_until("the paired devices connect", T, || connected(&a, &ib));
    // The invite is used up: it cannot pair a third device.
    let c = p2p_node("intruder", false);
    c.ok(&["daemon", "start"]);
    let o = c.run(&["pair", "--yes", &payload]);
    assert_ne!(o.code, 0, "{o:?}");
    assert!(o.stderr.contains("E022"), "{o:?}");
    assert_eq!(devices(&a).len(), 2);
    // Garbage is a clear error, not a hang.
    let o = c.run(&["pair", "--yes", "agentos-pair:NOTBASE32!"]);
    assert!(
        o.stderr.contains("E022") && o.stderr.contains("malformed"),
        "{o:?}"
    );
}

#[test]
fn wrong_codes_are_refused_then_the_invite_burns() {
    let a = p2p_node("a", false);
    let b = p2p_node("b", false);
    a.ok(&["daemon", "start"]);
    b.ok(&["daemon", "start"]);
    let mut child = a
        .command(&["pair", "--yes"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let payload = loop {
        let mut line = String::new();
        assert!(out.read_line(&mut line).unwrap() > 0);
        if let Some(p) = line.strip_prefix("invite: ") {
            break p.trim().to_string();
        }
    };
    // Same inviter and addresses, another secret: a wrong code.
    let forged = forge_secret(&payload);
    for i in 1..=5 {
        let o = b.run(&["pair", "--yes", &forged]);
        assert_ne!(o.code, 0, "attempt {i} must fail: {o:?}");
        assert!(o.stderr.contains("E022"), "{o:?}");
        if i < 5 {
            assert!(o.stderr.contains("wrong pairing code"), "{o:?}");
        }
    }
    // Burned: even the right payload fails now, and the inviter gave up.
    let o = b.run(&["pair", "--yes", &payload]);
    assert!(o.stderr.contains("E022"), "{o:?}");
    assert!(o.stderr.contains("too many wrong attempts"), "{o:?}");
    let status = child.wait().unwrap();
    assert!(!status.success());
    let mut err = String::new();
    child.stderr.unwrap().read_to_string(&mut err).unwrap();
    assert!(err.contains("E022"), "{err}");
    assert_eq!(devices(&a).len(), 1, "nobody was added");
}

/// The payload with its secret replaced (what a wrong code amounts to).
fn forge_secret(payload: &str) -> String {
    let body = payload.strip_prefix("agentos-pair:").unwrap();
    let mut bytes = data_encoding::BASE32_NOPAD.decode(body.as_bytes()).unwrap();
    // bincode (standard): 32 key bytes, then the 10 secret bytes.
    for b in &mut bytes[32..42] {
        *b ^= 0x5a;
    }
    format!(
        "agentos-pair:{}",
        data_encoding::BASE32_NOPAD.encode(&bytes)
    )
}

#[test]
fn agents_of_one_device_are_listed_on_the_other_and_concurrent_edits_converge() {
    let a = p2p_node("a", false);
    let b = p2p_node("b", false);
    pair(&a, &b);
    let ia = device_id(&a);
    let ib = device_id(&b);
    let ra = a.work.join("repo");
    shared_repo(&ra, "shared-ws-1");
    let rb = b.work.join("repo");
    git2::Repository::clone(ra.to_str().unwrap(), &rb).unwrap();
    b.ok_in(&rb, &["sync", "enable"]);

    a.ok_in(
        &ra,
        &[
            "create",
            "from-a",
            "--isolation",
            "none",
            "--detach",
            "--",
            "sleep",
            "600",
        ],
    );
    wait_until("B lists A's agent", T, || has_agent(&b, "from-a"));
    let seen = b.agent("from-a");
    assert_eq!(seen["host_device"], ia.as_str(), "{seen}");
    let table = b.ok(&["list"]).stdout;
    assert!(table.contains(&ia[..7]), "{table}");

    // Both devices edit while they cannot talk, then meet again.
    a.ok_in(&ra, &["sync", "disable"]);
    b.ok_in(&rb, &["sync", "disable"]);
    a.ok_in(
        &ra,
        &[
            "create",
            "a2",
            "--isolation",
            "none",
            "--detach",
            "--",
            "sleep",
            "600",
        ],
    );
    b.ok_in(
        &rb,
        &[
            "create",
            "b2",
            "--isolation",
            "none",
            "--detach",
            "--",
            "sleep",
            "600",
        ],
    );
    // A disabled workspace sends nothing.
    assert!(!try_wait(Duration::from_secs(3), || has_agent(&b, "a2")));
    assert!(!has_agent(&a, "b2"));
    a.ok_in(&ra, &["sync", "enable"]);
    b.ok_in(&rb, &["sync", "enable"]);
    wait_until("both see both", T, || {
        has_agent(&a, "b2") && has_agent(&b, "a2")
    });
    assert_eq!(b.agent("b2")["host_device"], ib.as_str());
    assert_eq!(a.agent("b2")["host_device"], ib.as_str());
    let st = sync_status(&a);
    assert!(
        st["peers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["id"] == ib),
        "{st}"
    );
    assert!(
        st["workspaces"]
            .as_array()
            .unwrap()
            .iter()
            .any(|w| w["id"] == "shared-ws-1" && w["enabled"] == true),
        "{st}"
    );
    // Per-peer state survives a restart: A comes back and still syncs.
    a.ok(&["daemon", "stop"]);
    a.ok(&["daemon", "start"]);
    if !try_wait(T, || connected(&a, &ib)) {
        panic!("A did not reconnect:\n{}", a.daemon_log_tail());
    }
    b.ok_in(
        &rb,
        &[
            "create",
            "b3",
            "--isolation",
            "none",
            "--detach",
            "--",
            "sleep",
            "600",
        ],
    );
    wait_until("A sees B's newest agent", T, || has_agent(&a, "b3"));
}

#[test]
fn a_removed_device_gets_nothing_written_after_the_rotation() {
    let a = p2p_node("a", false);
    let b = p2p_node("b", false);
    let c = p2p_node("c", false);
    pair(&a, &b);
    pair(&a, &c);
    let (ib, ic) = (device_id(&b), device_id(&c));
    let ra = a.work.join("repo");
    shared_repo(&ra, "shared-ws-2");
    a.ok_in(
        &ra,
        &[
            "create",
            "before",
            "--isolation",
            "none",
            "--detach",
            "--",
            "sleep",
            "600",
        ],
    );
    wait_until("B and C see the first agent", T, || {
        has_agent(&b, "before") && has_agent(&c, "before")
    });
    let o = a.ok(&["devices", "remove", &ic[..9]]);
    assert!(o.stdout.contains("rotated"), "{o:?}");
    assert_eq!(devices(&a).len(), 2);
    assert_eq!(sync_status(&a)["epoch"], 1);
    wait_until("B learns the new roster", T, || {
        sync_status(&b)["epoch"] == 1
    });
    a.ok_in(
        &ra,
        &[
            "create",
            "after",
            "--isolation",
            "none",
            "--detach",
            "--",
            "sleep",
            "600",
        ],
    );
    wait_until("B sees the new agent", T, || has_agent(&b, "after"));
    assert!(
        !try_wait(Duration::from_secs(4), || has_agent(&c, "after")),
        "the removed device must not get anything new"
    );
    assert!(
        !devices(&a).iter().any(|d| d["id"] == ic),
        "C is gone from A's roster"
    );
    assert!(devices(&b).iter().all(|d| d["id"] != ic));
    // Removing an unknown device is a clear error.
    let o = a.run(&["devices", "remove", "ZZZZZZZ"]);
    assert!(o.stderr.contains("E024"), "{o:?}");
    let _ = ib;
}

#[test]
fn handoff_moves_the_branch_and_resumes_the_conversation_on_the_other_device() {
    let a = p2p_node("a", false);
    let b = p2p_node("b", false);
    pair(&a, &b);
    let ib = device_id(&b);
    let ra = a.work.join("repo");
    shared_repo(&ra, "shared-ws-3");
    let rb = b.work.join("repo");
    git2::Repository::clone(ra.to_str().unwrap(), &rb).unwrap();
    b.ok_in(&rb, &["sync", "enable"]);
    a.ok_in(
        &ra,
        &[
            "create",
            "w1",
            "--agent",
            "claude",
            "--isolation",
            "worktree",
            "--detach",
        ],
    );
    if !try_wait(T, || a.agent("w1")["resume_id"].is_string()) {
        panic!(
            "conversation id not captured: {}\n{}\n{}",
            a.agent("w1"),
            a.logs("w1"),
            a.daemon_log_tail()
        );
    }
    let conv = a.agent("w1")["resume_id"].as_str().unwrap().to_string();
    let wt = a.agent("w1")["worktree"].as_str().unwrap().to_string();
    // Work in progress, not committed.
    std::fs::write(Path::new(&wt).join("wip.txt"), "half done\n").unwrap();

    let o = a.ok(&["handoff", "w1", "--to", &ib[..7]]);
    assert!(o.stdout.contains("runs there now"), "{o:?}");
    // B runs it, resuming the same conversation, on the same branch.
    let on_b = b.agent("w1");
    assert_eq!(on_b["host_device"], ib.as_str(), "{on_b}");
    assert_eq!(on_b["branch"], "agentos/w1");
    let wt_b = on_b["worktree"].as_str().unwrap().to_string();
    assert_eq!(
        std::fs::read_to_string(Path::new(&wt_b).join("wip.txt")).unwrap(),
        "half done\n"
    );
    wait_until("B's agent resumed the conversation", T, || {
        std::fs::read_to_string(b.argv_log())
            .map(|l| l.contains(&format!("\"--resume\", \"{conv}\"")))
            .unwrap_or(false)
    });
    // A stopped its copy only after B confirmed; A now lists it on B.
    wait_until("A lists w1 on B", T, || {
        a.list_json()
            .iter()
            .any(|x| x["name"] == "w1" && x["host_device"] == ib.as_str())
    });
    assert!(!Path::new(&wt).exists(), "A's worktree is gone");
    // The commit with the work in progress is in B's clone.
    let repo_b = git2::Repository::open(&rb).unwrap();
    let tip = repo_b
        .find_branch("agentos/w1", git2::BranchType::Local)
        .unwrap()
        .get()
        .peel_to_commit()
        .unwrap();
    assert!(tip.message().unwrap().contains("work in progress"));
}

#[test]
fn a_failed_handoff_leaves_the_agent_running_where_it_was() {
    let a = p2p_node("a", false);
    let b = p2p_node("b", false);
    pair(&a, &b);
    let ib = device_id(&b);
    let ra = a.work.join("repo");
    shared_repo(&ra, "shared-ws-4");
    // B has no clone of this workspace: it must refuse, and A keeps it.
    a.ok_in(
        &ra,
        &[
            "create",
            "w2",
            "--isolation",
            "worktree",
            "--detach",
            "--",
            "sleep",
            "600",
        ],
    );
    let o = a.run(&["handoff", "w2", "--to", &ib[..7]]);
    assert_ne!(o.code, 0, "{o:?}");
    assert!(o.stderr.contains("no clone of workspace"), "{o:?}");
    assert!(a.agent("w2")["pid"].is_number(), "still running on A");
    let o = a.run(&["handoff", "w2", "--to", "QQQQQQQ"]);
    assert!(o.stderr.contains("E024"), "{o:?}");
}

#[test]
fn attach_from_another_device_over_libp2p() {
    let a = p2p_node("a", false);
    let b = p2p_node("b", false);
    pair(&a, &b);
    let ib = device_id(&b);
    let rb = b.work.join("repo");
    shared_repo(&rb, "shared-ws-5");
    let ra = a.work.join("repo");
    git2::Repository::clone(rb.to_str().unwrap(), &ra).unwrap();
    a.ok_in(&ra, &["sync", "enable"]);
    b.ok_in(
        &rb,
        &[
            "create",
            "e1",
            "--agent",
            "claude",
            "--isolation",
            "none",
            "--detach",
        ],
    );
    wait_until("A lists B's agent", T, || has_agent(&a, "e1"));
    wait_until("connected", T, || connected(&a, &ib));
    let mut pty = a.attach(&["attach", "e1"], 100, 30);
    pty.expect("Claude Code (fake) session");
    pty.write(b"hello over libp2p\r");
    pty.expect("answer: hello over libp2p");
    pty.write(b"\x02d");
    pty.expect("[detached from e1]");
    assert_eq!(pty.wait_exit(), 0);
    // The agent kept running on B and saw the input.
    assert!(b.logs("e1").contains("answer: hello over libp2p"));
}

#[test]
fn devices_never_online_together_converge_through_a_relay_that_cannot_read() {
    use support::relay::{RelayProc, contains, files_under, memory_of};
    let relay_home = tempfile::tempdir().unwrap();
    let mut relay = RelayProc::start(
        relay_home.path(),
        &relay_home.path().join("data"),
        "/ip4/127.0.0.1/tcp/0",
    );
    let raddr = relay.address().to_string();
    let a = p2p_node("a", false);
    let b = p2p_node("b", false);
    pair(&a, &b);
    let ra = a.work.join("repo");
    shared_repo(&ra, "relay-ws");
    a.ok_in(&ra, &["sync", "enable"]);
    for n in [&a, &b] {
        n.ok(&["sync", "connect", &raddr]);
    }
    wait_until("both reach the relay", T, || {
        sync_status(&a)["relay_connected"] == true && sync_status(&b)["relay_connected"] == true
    });
    // B goes offline; A writes a secret into an agent's command.
    b.ok(&["daemon", "stop"]);
    let canary = format!("CANARY-{}-7f3a", std::process::id());
    a.ok_in(
        &ra,
        &[
            "create",
            "secret",
            "--isolation",
            "none",
            "--detach",
            "--",
            "echo",
            &canary,
        ],
    );
    wait_until("the relay has A's changes", T, || {
        sync_status(&a)["workspaces"]
            .as_array()
            .unwrap()
            .iter()
            .any(|w| w["id"] == "relay-ws" && w["pending"] == 0)
    });
    // A goes offline before B comes back: they are never online together.
    a.ok(&["daemon", "stop"]);
    b.ok(&["daemon", "start"]);
    wait_until("B got A's agent from the relay", T, || {
        has_agent(&b, "secret")
    });
    let cmd = b.agent("secret")["command"].to_string();
    assert!(cmd.contains(&canary), "B reads it: {cmd}");
    // B writes into the shared workspace from its own clone.
    let rb = b.work.join("repo");
    git2::Repository::clone(ra.to_str().unwrap(), &rb).unwrap();
    b.ok_in(
        &rb,
        &[
            "create",
            "b-shared",
            "--isolation",
            "none",
            "--detach",
            "--",
            "sleep",
            "600",
        ],
    );
    wait_until("the relay has B's changes", T, || {
        sync_status(&b)["workspaces"]
            .as_array()
            .unwrap()
            .iter()
            .any(|w| w["id"] == "relay-ws" && w["pending"] == 0)
    });
    b.ok(&["daemon", "stop"]);
    a.ok(&["daemon", "start"]);
    wait_until("A got B's agent from the relay", T, || {
        has_agent(&a, "b-shared")
    });
    // The relay stored and forwarded it all without being able to read it.
    let mut stored = 0;
    for f in files_under(&relay_home.path().join("data")) {
        let bytes = std::fs::read(&f).unwrap();
        stored += bytes.len();
        assert!(
            !contains(&bytes, canary.as_bytes()),
            "canary in {}",
            f.display()
        );
    }
    assert!(stored > 0);
    let mem = memory_of(relay.child.id());
    assert!(mem.len() > 1 << 20, "read the relay's memory");
    assert!(
        !contains(&mem, canary.as_bytes()),
        "the canary is in the relay's memory"
    );
}

#[test]
fn strangers_and_bad_messages_are_refused_and_counted_and_the_node_keeps_syncing() {
    use agentos_proto::ErrorCode;
    use agentos_proto::peer::{PeerRequest, PeerResponse};
    use support::relay::PeerClient;
    let a = p2p_node("a", false);
    let b = p2p_node("b", false);
    pair(&a, &b);
    let ra = a.work.join("repo");
    shared_repo(&ra, "bad-ws");
    a.ok_in(&ra, &["sync", "enable"]);
    // A's address, as a stranger would learn it.
    let v: serde_json::Value =
        serde_json::from_str(&a.ok(&["device", "show", "--json"]).stdout).unwrap();
    let hexkey = v["public_key"].as_str().unwrap();
    let key: [u8; 32] = (0..32)
        .map(|i| u8::from_str_radix(&hexkey[i * 2..i * 2 + 2], 16).unwrap())
        .collect::<Vec<u8>>()
        .try_into()
        .unwrap();
    let pid = agentos_p2p::net::peer_id(&key).unwrap();
    let listen = sync_status(&a)["listen"][0].as_str().unwrap().to_string();
    let addr: libp2p::Multiaddr = format!("{listen}/p2p/{pid}").parse().unwrap();
    let before = sync_status(&a)["rejected"].as_u64().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut stranger = PeerClient::connect([0x99; 32], &addr).await;
        let denied = |r: PeerResponse| {
            matches!(
                r,
                PeerResponse::Error {
                    code: ErrorCode::PermissionDenied,
                    ..
                }
            )
        };
        let r = stranger
            .req(PeerRequest::Sync {
                workspace: "bad-ws".into(),
                message: vec![0xde, 0xad],
            })
            .await;
        assert!(denied(r.clone()), "{r:?}");
        let r = stranger
            .req(PeerRequest::Roster {
                group: [0; 32],
                log: vec![1, 2, 3],
            })
            .await;
        assert!(denied(r.clone()), "{r:?}");
        let r = stranger
            .req(PeerRequest::PairConfirm { accepted: true })
            .await;
        assert!(
            matches!(
                r,
                PeerResponse::Error {
                    code: ErrorCode::Pairing,
                    ..
                }
            ),
            "{r:?}"
        );
        // Garbage and a forged envelope on the workspace's gossip topic.
        stranger
            .publish("bad-ws", b"not an envelope".to_vec())
            .await;
    });
    wait_until("the bad messages are counted", T, || {
        sync_status(&a)["rejected"].as_u64().unwrap() >= before + 3
    });
    // The node still works and still syncs with its real peer.
    a.ok_in(
        &ra,
        &[
            "create",
            "after-bad",
            "--isolation",
            "none",
            "--detach",
            "--",
            "sleep",
            "600",
        ],
    );
    wait_until("B still gets A's changes", T, || has_agent(&b, "after-bad"));
}
