//! `agentos join` and `agentos leave` against a node serving TLS (it binds
//! a non-loopback address, so it makes a self-signed certificate and the
//! link carries its fingerprint), driven as a user would.

mod support;

use std::io::{Read, Write};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use support::*;

fn collect(mut r: impl Read + Send + 'static) -> Arc<Mutex<Vec<u8>>> {
    let buf = Arc::new(Mutex::new(Vec::new()));
    let b = buf.clone();
    std::thread::spawn(move || {
        let mut chunk = [0u8; 4096];
        while let Ok(n) = r.read(&mut chunk) {
            if n == 0 {
                break;
            }
            b.lock().unwrap().extend_from_slice(&chunk[..n]);
        }
    });
    buf
}

fn text(b: &Arc<Mutex<Vec<u8>>>) -> String {
    String::from_utf8_lossy(&b.lock().unwrap()).into_owned()
}

#[test]
fn join_over_tls_sees_output_cannot_type_at_view_and_leaves() {
    let n = Node::new().env("AGENTOS_WEB_LISTEN", "0.0.0.0:0");
    n.ok(&[
        "create",
        "t1",
        "--detach",
        "--isolation",
        "none",
        "--",
        "bash",
        "--norc",
        "-i",
    ]);
    let share: serde_json::Value = serde_json::from_str(
        &n.ok(&["share", "t1", "--permission", "view", "--json"])
            .stdout,
    )
    .unwrap();
    let link = share["link"].as_str().unwrap().to_string();
    assert!(link.starts_with("agentoss://"), "TLS link: {link}");
    assert!(link.contains("?fp="), "pinned fingerprint: {link}");
    assert!(share["url"].as_str().unwrap().starts_with("https://"));

    // A link with a wrong fingerprint is refused before anything is sent.
    let forged = link.replace("?fp=", "?fp=00");
    let out = n.run(&["join", &forged]);
    assert_ne!(out.code, 0, "{out:?}");
    assert!(out.stderr.contains("E023"), "{out:?}");

    let mut join = n
        .command(&["join", &link, "--name", "tester"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = collect(join.stdout.take().unwrap());
    let stderr = collect(join.stderr.take().unwrap());
    wait_until("join reports it joined", Duration::from_secs(10), || {
        text(&stderr).contains("joined t1 with view access")
    });
    n.ok(&["send", "t1", "echo tls-$((6*7))", "--enter"]);
    wait_until(
        "live output reaches the joined terminal",
        Duration::from_secs(10),
        || text(&stdout).contains("tls-42"),
    );
    // Typing at view level is refused by the node, with its code.
    let mut stdin = join.stdin.take().unwrap();
    stdin.write_all(b"echo typed-$((2*3))\r").unwrap();
    stdin.flush().unwrap();
    wait_until(
        "the node refuses view-only input",
        Duration::from_secs(10),
        || text(&stderr).contains("E021"),
    );
    n.ok(&["send", "t1", "echo sync-$((5*5))", "--enter"]);
    wait_until("later output arrives", Duration::from_secs(10), || {
        text(&stdout).contains("sync-25")
    });
    let logs = n.ok(&["logs", "t1"]).stdout;
    assert!(
        !logs.contains("typed-6"),
        "view input reached the agent:\n{logs}"
    );

    // The owner sees the person in `share list` (one open socket).
    let list: serde_json::Value =
        serde_json::from_str(&n.ok(&["share", "list", "--json"]).stdout).unwrap();
    let row = list
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == share["id"])
        .unwrap()
        .clone();
    assert_eq!(row["uses"], 1);
    assert_eq!(row["active"], 1);

    n.ok(&["leave"]);
    let mut done = None;
    wait_until("join exits after leave", Duration::from_secs(10), || {
        done = join.try_wait().unwrap();
        done.is_some()
    });
    assert!(done.unwrap().success(), "stderr: {}", text(&stderr));
    assert!(text(&stderr).contains("left the session"));
    n.ok(&["daemon", "stop", "--kill-agents"]);
}
