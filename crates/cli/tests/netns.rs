//! Three hosts in Linux network namespaces, set up by the test itself: two
//! devices (A, B) and a home relay (R) on one bridge. It checks, through
//! the real CLI and daemons:
//! - LAN discovery (mDNS) pairs by short code and reconnects within 10 s;
//! - with A and B unable to reach each other (iptables), everything flows
//!   through the relay: sync, and attach over a relay circuit;
//! - a partition that isolates A entirely heals, and both sides converge.
//!
//! Needs root, `ip` and `iptables` (`.ci/run` installs them). Without them
//! it prints `SKIP: <reason>`, unless `AGENTOS_REQUIRE_SANDBOX=1` (CI as
//! root), which turns that into a failure.

mod support;

use std::io::{BufRead, BufReader};

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use support::relay::RelayProc;
use support::{BIN, Node, git_commit_all, git_repo, try_wait, wait_until};

const T: Duration = Duration::from_secs(60);

fn sh(args: &[&str]) {
    let o = Command::new(args[0]).args(&args[1..]).output().unwrap();
    assert!(
        o.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

fn missing() -> Option<String> {
    if unsafe { libc::geteuid() } != 0 {
        return Some("network namespaces need root".into());
    }
    for tool in ["ip", "iptables"] {
        let ok = Command::new(tool)
            .arg("-V")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if !ok {
            return Some(format!("`{tool}` is not installed"));
        }
    }
    None
}

/// The namespaces and the bridge; removed on drop.
struct Lan {
    p: String,
}

const HOSTS: [(&str, &str); 3] = [("a", "10.77.0.1"), ("b", "10.77.0.2"), ("r", "10.77.0.3")];

impl Lan {
    fn new() -> Lan {
        let p = format!("ao{}", std::process::id() % 100_000);
        let lan = Lan { p: p.clone() };
        let sw = format!("{p}s");
        sh(&["ip", "netns", "add", &sw]);
        sh(&[
            "ip", "netns", "exec", &sw, "ip", "link", "add", "br0", "type", "bridge",
        ]);
        sh(&["ip", "netns", "exec", &sw, "ip", "link", "set", "br0", "up"]);
        for (h, ip) in HOSTS {
            let ns = format!("{p}{h}");
            let (inner, outer) = (format!("{p}{h}0"), format!("{p}{h}1"));
            sh(&["ip", "netns", "add", &ns]);
            sh(&[
                "ip", "link", "add", &inner, "type", "veth", "peer", "name", &outer,
            ]);
            sh(&["ip", "link", "set", &inner, "netns", &ns]);
            sh(&["ip", "link", "set", &outer, "netns", &sw]);
            sh(&[
                "ip", "netns", "exec", &sw, "ip", "link", "set", &outer, "master", "br0",
            ]);
            sh(&[
                "ip", "netns", "exec", &sw, "ip", "link", "set", &outer, "up",
            ]);
            sh(&[
                "ip",
                "netns",
                "exec",
                &ns,
                "ip",
                "addr",
                "add",
                &format!("{ip}/24"),
                "dev",
                &inner,
            ]);
            sh(&[
                "ip", "netns", "exec", &ns, "ip", "link", "set", &inner, "up",
            ]);
            sh(&["ip", "netns", "exec", &ns, "ip", "link", "set", "lo", "up"]);
        }
        lan
    }

    fn ns(&self, h: &str) -> String {
        format!("{}{h}", self.p)
    }

    /// Run iptables inside host `h`'s namespace.
    fn iptables(&self, h: &str, args: &[&str]) {
        let ns = self.ns(h);
        let mut v = vec!["ip", "netns", "exec", &ns, "iptables"];
        v.extend_from_slice(args);
        sh(&v);
    }
}

impl Drop for Lan {
    fn drop(&mut self) {
        for h in ["a", "b", "r", "s"] {
            let _ = Command::new("ip")
                .args(["netns", "del", &self.ns(h)])
                .status();
        }
    }
}

/// A device whose daemon runs inside namespace `ns`.
struct Dev {
    node: Node,
    ns: String,
}

impl Dev {
    fn new(lan: &Lan, h: &str) -> Dev {
        let node = support::p2p_node(&format!("dev-{h}"), true, "/ip4/0.0.0.0/tcp/0");
        let d = Dev {
            node,
            ns: lan.ns(h),
        };
        d.start();
        d
    }

    /// `agentos daemon start` inside the namespace (the daemon stays there).
    fn start(&self) {
        let inner = self.node.command(&["daemon", "start"]);
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.ns, BIN, "daemon", "start"])
            .current_dir(&self.node.work)
            .stdin(Stdio::null());
        for (k, v) in inner.get_envs() {
            match v {
                Some(v) => c.env(k, v),
                None => c.env_remove(k),
            };
        }
        let o = c.output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }

    fn restart(&self) {
        self.node.ok(&["daemon", "stop"]);
        self.start();
    }

    fn id(&self) -> String {
        let o = self.node.ok(&["device", "show", "--json"]);
        let v: serde_json::Value = serde_json::from_str(&o.stdout).unwrap();
        v["device_id"].as_str().unwrap().to_string()
    }

    fn link_to(&self, other: &str) -> Option<String> {
        let o = self.node.ok(&["devices", "--json"]);
        let v: Vec<serde_json::Value> = serde_json::from_str(&o.stdout).unwrap();
        v.iter()
            .find(|d| d["id"] == other)
            .and_then(|d| d["connection"].as_str().map(str::to_string))
    }

    fn status(&self) -> serde_json::Value {
        serde_json::from_str(&self.node.ok(&["sync", "status", "--json"]).stdout).unwrap()
    }

    fn has(&self, name: &str) -> bool {
        self.node.list_json().iter().any(|a| a["name"] == name)
    }
}

#[test]
fn lan_discovery_relay_only_path_and_partition_heal() {
    if let Some(why) = missing() {
        if std::env::var_os("AGENTOS_REQUIRE_SANDBOX").is_some() {
            panic!("the network-namespace test cannot run: {why}");
        }
        println!("SKIP: {why}");
        return;
    }
    let lan = Lan::new();
    // The relay host.
    let relay_home = tempfile::tempdir().unwrap();
    let mut cmd = Command::new("ip");
    cmd.args([
        "netns",
        "exec",
        &lan.ns("r"),
        BIN,
        "relay",
        "--listen",
        "/ip4/0.0.0.0/tcp/8765",
        "--data",
    ])
    .arg(relay_home.path().join("data"))
    .env("AGENTOS_HOME", relay_home.path());
    let mut relay = RelayProc::spawn(cmd);
    let any = relay.address();
    let peer = any.iter().last().unwrap();
    let raddr = format!("/ip4/10.77.0.3/tcp/8765{peer}");

    let a = Dev::new(&lan, "a");
    let b = Dev::new(&lan, "b");
    let (ia, ib) = (a.id(), b.id());

    // Pair by short code: B finds A on the LAN by mDNS.
    wait_until("B sees A on the LAN", T, || {
        b.status()["lan"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d == &ia)
    });
    let mut inviter = a
        .node
        .command(&["pair", "--yes"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(inviter.stdout.take().unwrap());
    let code = loop {
        let mut line = String::new();
        assert!(out.read_line(&mut line).unwrap() > 0, "pair ended early");
        if let Some(c) = line.strip_prefix("code: ") {
            break c.trim().to_string();
        }
    };
    let joined = b.node.ok(&["pair", "--yes", &code]);
    assert!(
        joined.stdout.contains("paired with \"dev-a\""),
        "{joined:?}"
    );
    assert!(inviter.wait().unwrap().success());

    // Both restart: mDNS finds the other within 10 s.
    a.restart();
    b.restart();
    let t0 = Instant::now();
    wait_until(
        "A and B find each other on the LAN",
        Duration::from_secs(10),
        || a.link_to(&ib).as_deref() == Some("lan") && b.link_to(&ia).as_deref() == Some("lan"),
    );
    println!(
        "mDNS discovery and connection after a restart: {:?}",
        t0.elapsed()
    );

    // A shared project, and the relay.
    let ra = a.node.work.join("repo");
    let repo = git_repo(&ra);
    std::fs::create_dir_all(ra.join(".agentos")).unwrap();
    std::fs::write(
        ra.join(".agentos/config.toml"),
        "[workspace]\nid = \"netns-ws\"\n",
    )
    .unwrap();
    git_commit_all(&repo, "workspace id");
    let rb = b.node.work.join("repo");
    git2::Repository::clone(ra.to_str().unwrap(), &rb).unwrap();
    a.node.ok_in(&ra, &["sync", "enable"]);
    b.node.ok_in(&rb, &["sync", "enable"]);
    for d in [&a, &b] {
        d.node.ok(&["sync", "connect", &raddr]);
    }
    wait_until("both reach the relay", T, || {
        a.status()["relay_connected"] == true && b.status()["relay_connected"] == true
    });
    a.node.ok_in(
        &ra,
        &[
            "create",
            "n1",
            "--isolation",
            "none",
            "--detach",
            "--",
            "sleep",
            "600",
        ],
    );
    wait_until("B sees A's agent over the LAN", T, || b.has("n1"));

    // A and B cannot reach each other any more; both still reach R.
    lan.iptables("a", &["-A", "INPUT", "-s", "10.77.0.2", "-j", "DROP"]);
    lan.iptables("a", &["-A", "OUTPUT", "-d", "10.77.0.2", "-j", "DROP"]);
    wait_until("A and B reconnect through the relay", T, || {
        a.link_to(&ib).as_deref() == Some("relay") && b.link_to(&ia).as_deref() == Some("relay")
    });
    a.node.ok_in(
        &ra,
        &[
            "create",
            "n2",
            "--agent",
            "claude",
            "--isolation",
            "none",
            "--detach",
        ],
    );
    wait_until("B sees A's new agent through the relay", T, || b.has("n2"));
    // Attach from B to the agent on A, over the relay circuit.
    let mut pty = b.node.attach(&["attach", "n2"], 100, 30);
    pty.expect("Claude Code (fake) session");
    pty.write(b"through the relay\r");
    pty.expect("answer: through the relay");
    pty.write(b"\x02d");
    pty.expect("[detached from n2]");
    assert_eq!(pty.wait_exit(), 0);

    // A is cut off from everyone; both sides write; the partition heals.
    lan.iptables("a", &["-F"]);
    lan.iptables("a", &["-A", "INPUT", "-s", "10.77.0.0/24", "-j", "DROP"]);
    lan.iptables("a", &["-A", "OUTPUT", "-d", "10.77.0.0/24", "-j", "DROP"]);
    a.node.ok_in(
        &ra,
        &[
            "create",
            "iso-a",
            "--isolation",
            "none",
            "--detach",
            "--",
            "sleep",
            "600",
        ],
    );
    b.node.ok_in(
        &rb,
        &[
            "create",
            "iso-b",
            "--isolation",
            "none",
            "--detach",
            "--",
            "sleep",
            "600",
        ],
    );
    assert!(!try_wait(Duration::from_secs(3), || b.has("iso-a")));
    lan.iptables("a", &["-F"]);
    let t1 = Instant::now();
    wait_until("both sides converge after the partition heals", T, || {
        a.has("iso-b") && b.has("iso-a")
    });
    println!("converged {:?} after the partition healed", t1.elapsed());
}
