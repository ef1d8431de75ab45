//! Integration tests of the node's web server: WebSocket protocol v3
//! (crates/proto/src/ws.rs), the permission table
//! (crates/node/src/web/permissions.rs), share links, presence, comments,
//! resume, and the REST API against crates/node/openapi.json. Everything
//! drives the real `agentos` binary and real agents (bash); every daemon
//! binds its web server on a free port (support::Node sets
//! `AGENTOS_WEB_LISTEN=127.0.0.1:0`). Waits poll with timeouts; nothing
//! sleeps to synchronise.

mod support;

use agentos_proto::memory::MemoryOp;
use agentos_proto::ws::{self, Channel, ClientMsg, CommentId, Frame, Permission, PersonId};
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use support::*;
use tungstenite::Message;

/// The timeout of every wait in this file.
const W: Duration = Duration::from_secs(10);

// ------------------------------------------------------------- the node ---

/// A node with its web server, a few agents and the owner's link.
struct Web {
    n: Node,
    /// `127.0.0.1:<port>`
    hostport: String,
    /// The owner link's secret (`agentos web`).
    owner: String,
}

fn json_of(o: &Out) -> Value {
    serde_json::from_str(&o.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {o:?}"))
}

fn secret_of(url: &str) -> String {
    url.split_once('#')
        .unwrap_or_else(|| panic!("no #secret in {url}"))
        .1
        .to_string()
}

impl Web {
    /// A fresh node running `agents` (interactive bash, prompt `$ `, exits
    /// on SIGTERM so `agent_stop` is quick).
    fn start(agents: &[&str]) -> Web {
        let mut w = Web::on(Node::new());
        for a in agents {
            w.create(a);
        }
        w.refresh();
        w
    }

    /// A node (not yet started) that will run such agents; `refresh` once
    /// its daemon runs.
    fn on(n: Node) -> Web {
        std::fs::write(n.work.join("rc.sh"), "PS1='$ '\ntrap 'exit 0' TERM\n").unwrap();
        Web {
            n,
            hostport: String::new(),
            owner: String::new(),
        }
    }

    fn create(&self, name: &str) {
        self.create_in(&self.n.work, name);
    }

    /// Create agent `name` with `dir` as its working directory (its workspace).
    fn create_in(&self, dir: &std::path::Path, name: &str) {
        let rc = self.n.work.join("rc.sh");
        self.n.ok_in(
            dir,
            &[
                "create",
                name,
                "--detach",
                "--isolation",
                "none",
                "--",
                "bash",
                "--rcfile",
                rc.to_str().unwrap(),
                "-i",
            ],
        );
        wait_until(&format!("{name} shows its prompt"), W, || {
            self.logs(name).contains('$')
        });
    }

    /// (Re)read the server's address and make an owner link.
    fn refresh(&mut self) {
        let v = json_of(&self.n.ok(&["web", "--json"]));
        let base = v["base"].as_str().expect("base").to_string();
        let st = json_of(&self.n.ok(&["daemon", "status", "--json"]));
        assert_eq!(
            st["web"].as_str(),
            Some(base.as_str()),
            "daemon status names the same server"
        );
        assert!(
            !base.ends_with(":7890") && base.starts_with("http://127.0.0.1:"),
            "a free loopback port, plain HTTP: {base}"
        );
        self.hostport = base.trim_start_matches("http://").to_string();
        self.owner = secret_of(v["url"].as_str().expect("url"));
    }

    /// `agentos share <agent> --permission <p> <extra> --json` → (id, secret).
    fn share(&self, agent: &str, permission: &str, extra: &[&str]) -> (String, String) {
        let mut args = vec!["share", agent, "--permission", permission];
        args.extend_from_slice(extra);
        args.push("--json");
        let v = json_of(&self.n.ok(&args));
        assert_eq!(v["permission"], permission);
        (
            v["id"].as_str().unwrap().to_string(),
            secret_of(v["url"].as_str().unwrap()),
        )
    }

    fn logs(&self, agent: &str) -> String {
        self.n.ok(&["logs", agent]).stdout
    }

    fn wait_logs(&self, agent: &str, needle: &str) {
        wait_until(&format!("{agent} prints {needle:?}"), W, || {
            self.logs(agent).contains(needle)
        });
    }

    fn send(&self, agent: &str, text: &str) {
        self.n.ok(&["send", agent, text, "--enter"]);
    }

    /// Everything typed into `agent` before this call has been processed:
    /// a fresh marker typed by the CLI shows up in its output.
    fn barrier(&self, agent: &str) {
        static N: AtomicU64 = AtomicU64::new(0);
        let k = N.fetch_add(1, Ordering::Relaxed);
        self.send(agent, &format!("echo BARRIER{k}-$((6*7))"));
        self.wait_logs(agent, &format!("BARRIER{k}-42"));
    }

    /// Join as the owner, on one agent's session.
    fn owner_join(&self, agent: &str, name: &str) -> Ws {
        join(self, &self.owner, Some(&format!("agent:{agent}")), name)
    }

    fn guest(&self, agent: &str, permission: &str, name: &str) -> Ws {
        let (_, secret) = self.share(agent, permission, &[]);
        join(self, &secret, None, name)
    }
}

// ------------------------------------------------------- the WS client ---

#[derive(Debug, Clone)]
enum Ev {
    Text(Value),
    Bin(Vec<u8>),
    /// A close frame's code (1006: the connection ended without one).
    Close(u16),
}

/// A frame from the node, owned.
#[derive(Debug, Clone)]
enum OFrame {
    Output {
        channel: u8,
        seq: u64,
        data: Vec<u8>,
    },
    Snapshot {
        channel: u8,
        seq: u64,
        cols: u16,
        rows: u16,
        data: Vec<u8>,
    },
}

fn decode(b: &[u8]) -> OFrame {
    match ws::decode_frame(b) {
        Ok(Frame::Output { channel, seq, data }) => OFrame::Output {
            channel: channel.0,
            seq,
            data: data.to_vec(),
        },
        Ok(Frame::Snapshot {
            channel,
            seq,
            cols,
            rows,
            data,
            ..
        }) => OFrame::Snapshot {
            channel: channel.0,
            seq,
            cols,
            rows,
            data: data.to_vec(),
        },
        other => panic!("the node sent a bad frame: {other:?}"),
    }
}

/// A blocking WebSocket client that keeps everything it received, in
/// order; waits scan that log from a mark.
struct Ws {
    sock: tungstenite::WebSocket<TcpStream>,
    log: Vec<Ev>,
    open: bool,
    label: String,
    /// `you.id` from `auth_ok`.
    me: String,
    ticket: String,
    /// Pings sent (each gets one pong).
    pings: usize,
}

fn is_type<'a>(ty: &'a str) -> impl Fn(&Value) -> bool + 'a {
    move |v| v["type"] == ty
}

impl Ws {
    fn connect(hostport: &str, cookie: Option<&str>, label: &str) -> Ws {
        use tungstenite::client::IntoClientRequest;
        let mut req = format!("ws://{hostport}/ws").into_client_request().unwrap();
        if let Some(c) = cookie {
            req.headers_mut()
                .insert("cookie", format!("agentos_session={c}").parse().unwrap());
        }
        let tcp = TcpStream::connect(hostport).unwrap();
        tcp.set_nodelay(true).unwrap();
        let (sock, _) = tungstenite::client(req, tcp)
            .unwrap_or_else(|e| panic!("WebSocket handshake with {hostport}: {e}"));
        sock.get_ref()
            .set_read_timeout(Some(Duration::from_millis(20)))
            .unwrap();
        Ws {
            sock,
            log: Vec::new(),
            open: true,
            label: label.to_string(),
            me: String::new(),
            ticket: String::new(),
            pings: 0,
        }
    }

    fn send(&mut self, v: Value) {
        self.send_text(&v.to_string());
    }

    fn send_msg(&mut self, m: &ClientMsg) {
        self.send_text(&serde_json::to_string(m).unwrap());
    }

    fn send_text(&mut self, s: &str) {
        if serde_json::from_str::<Value>(s).is_ok_and(|v| v == json!({"type": "ping"})) {
            self.pings += 1;
        }
        self.sock
            .send(Message::text(s.to_string()))
            .unwrap_or_else(|e| panic!("{}: send failed: {e}", self.label));
    }

    fn send_bin(&mut self, b: Vec<u8>) {
        self.sock
            .send(Message::binary(b))
            .unwrap_or_else(|e| panic!("{}: send failed: {e}", self.label));
    }

    fn type_in(&mut self, channel: u8, text: &str) {
        self.send_bin(ws::encode_input(Channel(channel), text.as_bytes()));
    }

    fn mark(&self) -> usize {
        self.log.len()
    }

    /// Read one message into the log; false on timeout or when closed.
    fn pump(&mut self, deadline: Instant) -> bool {
        while self.open {
            match self.sock.read() {
                Ok(Message::Text(t)) => {
                    // Every control message is one ws.rs defines.
                    if let Err(e) = ws::decode_server(&t) {
                        panic!(
                            "{}: the node sent a message outside ws.rs ({e}): {t}",
                            self.label
                        );
                    }
                    self.log.push(Ev::Text(serde_json::from_str(&t).unwrap()));
                    return true;
                }
                Ok(Message::Binary(b)) => {
                    self.log.push(Ev::Bin(b.to_vec()));
                    return true;
                }
                Ok(Message::Close(f)) => {
                    self.log
                        .push(Ev::Close(f.map(|f| u16::from(f.code)).unwrap_or(1005)));
                    self.open = false;
                    return true;
                }
                Ok(_) => {}
                Err(tungstenite::Error::Io(e))
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    if Instant::now() >= deadline {
                        return false;
                    }
                }
                Err(_) => {
                    self.log.push(Ev::Close(1006));
                    self.open = false;
                    return true;
                }
            }
        }
        false
    }

    /// Index of the first event at or after `from` that matches.
    fn wait(
        &mut self,
        from: usize,
        timeout: Duration,
        pred: impl Fn(&Ev) -> bool,
    ) -> Option<usize> {
        let deadline = Instant::now() + timeout;
        let mut i = from;
        loop {
            while i < self.log.len() {
                if pred(&self.log[i]) {
                    return Some(i);
                }
                i += 1;
            }
            if !self.pump(deadline) {
                return None;
            }
        }
    }

    fn wait_msg(
        &mut self,
        from: usize,
        timeout: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Option<usize> {
        self.wait(from, timeout, |e| matches!(e, Ev::Text(v) if pred(v)))
    }

    fn text(&self, i: usize) -> Value {
        match &self.log[i] {
            Ev::Text(v) => v.clone(),
            e => panic!("not a text message: {e:?}"),
        }
    }

    fn expect(&mut self, from: usize, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        match self.wait_msg(from, W, pred) {
            Some(i) => self.text(i),
            None => panic!(
                "{}: timed out waiting for {what}; received since then:\n{}",
                self.label,
                self.dump(from)
            ),
        }
    }

    fn expect_type(&mut self, from: usize, ty: &str) -> Value {
        self.expect(from, ty, is_type(ty))
    }

    fn dump(&self, from: usize) -> String {
        self.log[from.min(self.log.len())..]
            .iter()
            .map(|e| match e {
                Ev::Text(v) => v.to_string(),
                Ev::Bin(b) => format!(
                    "<binary {} bytes: {:?}>",
                    b.len(),
                    ws::decode_frame(b).map(|f| match f {
                        Frame::Output { seq, data, .. } =>
                            format!("output seq {seq} {:?}", String::from_utf8_lossy(data)),
                        Frame::Snapshot { seq, .. } => format!("snapshot seq {seq}"),
                        Frame::Input { .. } => "input".into(),
                    })
                ),
                Ev::Close(c) => format!("<close {c}>"),
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Ping and wait for its pong (pongs answer pings in order): everything
    /// the node queued for this connection before it handled the ping is
    /// in the log. Returns the pong's index.
    fn ping(&mut self) -> usize {
        let m = self.mark();
        self.send(json!({"type": "ping"}));
        let want = self.pings;
        let mut seen = 0;
        let mut i = 0;
        loop {
            match self.wait_msg(i, W, is_type("pong")) {
                Some(j) => {
                    seen += 1;
                    if seen == want {
                        return j;
                    }
                    i = j + 1;
                }
                None => panic!("{}: no pong; received:\n{}", self.label, self.dump(m)),
            }
        }
    }

    /// Two pings: terminal frames queued before the first pong (they ride
    /// a queue of their own) are in the log too.
    fn settle(&mut self) -> usize {
        self.ping();
        self.ping()
    }

    /// The error refusing a message of type `kind` in `[from, to)`.
    fn refusal(&self, from: usize, to: usize, kind: &str) -> Option<Value> {
        self.log[from..to].iter().find_map(|e| match e {
            Ev::Text(v) if v["type"] == "error" && v["refused"] == kind => Some(v.clone()),
            _ => None,
        })
    }

    /// Wait for the socket to close: (the `closed` message, if any, and
    /// the close code).
    fn expect_close(&mut self, from: usize) -> (Option<Value>, u16) {
        let Some(i) = self.wait(from, W, |e| matches!(e, Ev::Close(_))) else {
            panic!(
                "{}: the socket did not close; received:\n{}",
                self.label,
                self.dump(from)
            );
        };
        let Ev::Close(code) = self.log[i] else {
            unreachable!()
        };
        let closed = self.log[from..i].iter().rev().find_map(|e| match e {
            Ev::Text(v) if v["type"] == "closed" => Some(v.clone()),
            _ => None,
        });
        (closed, code)
    }

    /// `terminal_subscribe` → (channel, index of `terminal_subscribed`, it).
    fn subscribe(&mut self, agent: &str, since: Option<u64>) -> (u8, usize, Value) {
        let m = self.mark();
        self.send_msg(&ClientMsg::TerminalSubscribe {
            agent: agent.into(),
            since,
        });
        let i = match self.wait_msg(m, W, |v| {
            v["type"] == "terminal_subscribed" && v["agent"] == agent
        }) {
            Some(i) => i,
            None => panic!(
                "{}: not subscribed; received:\n{}",
                self.label,
                self.dump(m)
            ),
        };
        let v = self.text(i);
        (v["channel"].as_u64().unwrap() as u8, i, v)
    }

    fn frames(&self, from: usize) -> Vec<OFrame> {
        self.log[from..]
            .iter()
            .filter_map(|e| match e {
                Ev::Bin(b) => Some(decode(b)),
                _ => None,
            })
            .collect()
    }

    fn first_frame(&mut self, from: usize) -> OFrame {
        match self.wait(from, W, |e| matches!(e, Ev::Bin(_))) {
            Some(i) => match &self.log[i] {
                Ev::Bin(b) => decode(b),
                _ => unreachable!(),
            },
            None => panic!(
                "{}: no terminal frame; received:\n{}",
                self.label,
                self.dump(from)
            ),
        }
    }

    /// The output bytes after `from` (which must be contiguous, on one
    /// channel, with no snapshot among them): (seq of the first, bytes).
    fn output(&self, from: usize) -> (Option<u64>, Vec<u8>) {
        let mut first = None;
        let mut on = None;
        let mut bytes = Vec::new();
        for f in self.frames(from) {
            match f {
                OFrame::Output { channel, seq, data } => {
                    assert_eq!(
                        *on.get_or_insert(channel),
                        channel,
                        "{}: one channel",
                        self.label
                    );
                    let start = *first.get_or_insert(seq);
                    assert_eq!(
                        seq,
                        start + bytes.len() as u64,
                        "{}: output frames must be contiguous",
                        self.label
                    );
                    bytes.extend_from_slice(&data);
                }
                OFrame::Snapshot { seq, .. } => {
                    panic!(
                        "{}: unexpected snapshot (seq {seq}) among output frames",
                        self.label
                    )
                }
            }
        }
        (first, bytes)
    }

    /// Wait until the output after `from` reaches sequence number `end`.
    fn wait_output_end(&mut self, from: usize, start: u64, end: u64) {
        let deadline = Instant::now() + W;
        loop {
            let (first, bytes) = self.output(from);
            if first.unwrap_or(start) + bytes.len() as u64 >= end {
                return;
            }
            if !self.pump(deadline) {
                panic!(
                    "{}: output stopped at {} before {end}",
                    self.label,
                    first.unwrap_or(start) + bytes.len() as u64
                );
            }
        }
    }

    /// Wait until the terminal data after `from` contains `needle`.
    fn wait_screen(&mut self, from: usize, needle: &str) {
        let deadline = Instant::now() + W;
        let mut all: Vec<u8> = Vec::new();
        let mut i = from;
        loop {
            let before = all.len();
            while i < self.log.len() {
                if let Ev::Bin(b) = &self.log[i] {
                    match decode(b) {
                        OFrame::Output { data, .. } | OFrame::Snapshot { data, .. } => {
                            all.extend_from_slice(&data)
                        }
                    }
                }
                i += 1;
            }
            // Only the new bytes (and a needle's length before them) can hold it.
            let tail = &all[before.saturating_sub(needle.len())..];
            if tail.windows(needle.len()).any(|w| w == needle.as_bytes()) {
                return;
            }
            if !self.pump(deadline) {
                panic!("{}: the terminal never showed {needle:?}", self.label);
            }
        }
    }
}

fn auth_msg(secret: &str, target: Option<&str>, name: &str) -> ClientMsg {
    ClientMsg::Auth {
        token: Some(secret.to_string()),
        target: target.map(str::to_string),
        name: Some(name.to_string()),
        device: None,
    }
}

/// Authenticate; `Err` carries the node's `error`.
fn try_join(w: &Web, secret: &str, target: Option<&str>, name: &str) -> Result<Ws, Value> {
    let mut s = Ws::connect(&w.hostport, None, name);
    s.auth(secret, target, name)?;
    Ok(s)
}

impl Ws {
    /// Send `auth` on a fresh socket and read `auth_ok` + `session_state`;
    /// `Err` carries the node's `error` (and the socket is closed, 4005).
    fn auth(&mut self, secret: &str, target: Option<&str>, name: &str) -> Result<(), Value> {
        let m = self.mark();
        self.send_msg(&auth_msg(secret, target, name));
        let i = self
            .wait_msg(m, W, |v| v["type"] == "auth_ok" || v["type"] == "error")
            .unwrap_or_else(|| panic!("{name}: no answer to auth:\n{}", self.dump(m)));
        let v = self.text(i);
        if v["type"] == "error" {
            assert_eq!(v["refused"], "auth", "{v}");
            let (_, code) = self.expect_close(i);
            assert_eq!(code, ws::AUTH_FAILED, "a refused auth closes with 4005");
            return Err(v);
        }
        assert_eq!(v["protocol"], ws::WS_VERSION);
        assert_eq!(v["you"]["name"], name);
        self.me = v["you"]["id"].as_str().unwrap().to_string();
        self.ticket = v["ticket"].as_str().unwrap().to_string();
        self.expect_type(i, "session_state");
        Ok(())
    }
}

fn join(w: &Web, secret: &str, target: Option<&str>, name: &str) -> Ws {
    try_join(w, secret, target, name).unwrap_or_else(|e| panic!("{name}: auth refused: {e}"))
}

fn pid(p: &str) -> PersonId {
    PersonId(p.to_string())
}

// ------------------------------------------------------------ 1. matrix ---

const LEVELS: [&str; 4] = ["view", "comment", "edit", "owner"];

/// What each level may send while no one holds control, as the table in
/// crates/node/src/web/permissions.rs says. `input` is a binary input
/// frame; every other row is a `ClientMsg` type. Rows run in this order on
/// one session per level (kick, transfer, stop, leave and delete have
/// effects, so they come late; `session_leave` uses a second connection).
const MATRIX: &[(&str, [bool; 4])] = &[
    // message                view   comment edit   owner
    ("ping", [true, true, true, true]),
    ("terminal_subscribe", [true, true, true, true]),
    ("presence_update", [true, true, true, true]),
    ("input", [false, false, true, true]),
    ("terminal_resize", [false, false, false, true]),
    ("terminal_unsubscribe", [true, true, true, true]),
    ("comment_add", [false, true, true, true]),
    ("comment_react", [false, true, true, true]),
    ("comment_resolve", [false, true, true, true]),
    ("comment_delete", [false, true, true, true]), // one's own (view: someone else's)
    ("control_request", [false, true, true, false]),
    ("control_grant", [false, false, false, true]),
    ("control_revoke", [false, false, false, true]), // someone else's control
    ("control_deny", [false, false, false, true]),
    ("permission_change", [false, false, false, true]),
    ("transfer_ownership", [false, false, false, true]),
    ("kick", [false, false, false, true]),
    ("memory_edit", [false, false, true, true]),
    ("agent_stop", [false, false, true, true]),
    ("agent_start", [false, false, true, true]),
    ("session_leave", [true, true, true, true]),
    ("session_delete", [false, false, false, true]),
];

/// Does not compile when ws.rs gains a client message: add it to MATRIX.
fn matrix_row(m: &ClientMsg) -> Option<&'static str> {
    Some(match m {
        ClientMsg::Auth { .. } => return None, // a second auth: refused for everyone (E012)
        ClientMsg::TerminalSubscribe { .. } => "terminal_subscribe",
        ClientMsg::TerminalUnsubscribe { .. } => "terminal_unsubscribe",
        ClientMsg::TerminalResize { .. } => "terminal_resize",
        ClientMsg::PresenceUpdate { .. } => "presence_update",
        ClientMsg::ControlRequest {} => "control_request",
        ClientMsg::ControlGrant { .. } => "control_grant",
        ClientMsg::ControlDeny { .. } => "control_deny",
        ClientMsg::ControlRevoke { .. } => "control_revoke",
        ClientMsg::PermissionChange { .. } => "permission_change",
        ClientMsg::Kick { .. } => "kick",
        ClientMsg::TransferOwnership { .. } => "transfer_ownership",
        ClientMsg::SessionDelete {} => "session_delete",
        ClientMsg::SessionLeave {} => "session_leave",
        ClientMsg::CommentAdd { .. } => "comment_add",
        ClientMsg::CommentResolve { .. } => "comment_resolve",
        ClientMsg::CommentDelete { .. } => "comment_delete",
        ClientMsg::CommentReact { .. } => "comment_react",
        ClientMsg::AgentStart { .. } => "agent_start",
        ClientMsg::AgentStop { .. } => "agent_stop",
        ClientMsg::MemoryEdit { .. } => "memory_edit",
        ClientMsg::Ping {} => "ping",
    })
}

struct MatrixCtx {
    agent: String,
    /// A comment guest the moderation messages name.
    d1: String,
    /// A view guest for `kick`.
    d2: String,
    /// The subject's own comment (or, for view, the owner's).
    comment: String,
}

fn matrix_msg(kind: &str, c: &MatrixCtx) -> ClientMsg {
    let agent = c.agent.clone();
    let m = match kind {
        "ping" => ClientMsg::Ping {},
        "terminal_subscribe" => ClientMsg::TerminalSubscribe { agent, since: None },
        "terminal_unsubscribe" => ClientMsg::TerminalUnsubscribe { agent },
        "terminal_resize" => ClientMsg::TerminalResize {
            agent,
            cols: 101,
            rows: 31,
        },
        "presence_update" => ClientMsg::PresenceUpdate {
            focus: Some(c.agent.clone()),
        },
        "control_request" => ClientMsg::ControlRequest {},
        "control_grant" => ClientMsg::ControlGrant { person: pid(&c.d1) },
        "control_revoke" => ClientMsg::ControlRevoke { person: pid(&c.d1) },
        "control_deny" => ClientMsg::ControlDeny { person: pid(&c.d1) },
        "permission_change" => ClientMsg::PermissionChange {
            person: pid(&c.d1),
            permission: Permission::Edit,
        },
        "transfer_ownership" => ClientMsg::TransferOwnership { person: pid(&c.d1) },
        "kick" => ClientMsg::Kick { person: pid(&c.d2) },
        "session_delete" => ClientMsg::SessionDelete {},
        "session_leave" => ClientMsg::SessionLeave {},
        "comment_add" => ClientMsg::CommentAdd {
            agent,
            line: 1,
            text: "a subject's comment".into(),
            parent: None,
        },
        "comment_resolve" => ClientMsg::CommentResolve {
            id: CommentId(c.comment.clone()),
            resolved: true,
        },
        "comment_delete" => ClientMsg::CommentDelete {
            id: CommentId(c.comment.clone()),
        },
        "comment_react" => ClientMsg::CommentReact {
            id: CommentId(c.comment.clone()),
            emoji: "👍".into(),
            on: true,
        },
        "agent_start" => ClientMsg::AgentStart { agent },
        "agent_stop" => ClientMsg::AgentStop { agent },
        "memory_edit" => ClientMsg::MemoryEdit {
            op: MemoryOp::TaskAdd {
                title: format!("task of {agent}"),
                notes: String::new(),
            },
        },
        other => panic!("no message for {other}"),
    };
    assert_eq!(matrix_row(&m), Some(kind));
    assert_eq!(m.kind(), kind);
    m
}

fn comment_id(v: &Value) -> String {
    v["comment"]["id"].as_str().unwrap().to_string()
}

fn run_matrix_level(w: &Web, li: usize) {
    let level = LEVELS[li];
    let agent = format!("m-{level}");
    let owner_target = format!("agent:{agent}");
    let mut o = w.owner_join(&agent, &format!("owner-of-{level}"));
    let subject_secret = if level == "owner" {
        w.owner.clone()
    } else {
        w.share(&agent, level, &[]).1
    };
    let subject_target = (level == "owner").then_some(owner_target.as_str());
    let mut s = join(
        w,
        &subject_secret,
        subject_target,
        &format!("subject-{level}"),
    );
    assert_eq!(
        s.log.iter().find_map(|e| match e {
            Ev::Text(v) if v["type"] == "auth_ok" => Some(v["you"]["permission"].clone()),
            _ => None,
        }),
        Some(json!(level))
    );
    let mut d1 = w.guest(&agent, "comment", "d1");
    let mut d2 = w.guest(&agent, "view", "d2");
    // The owner's comment on line 1.
    let m = o.mark();
    o.send_msg(&ClientMsg::CommentAdd {
        agent: agent.clone(),
        line: 1,
        text: "seed".into(),
        parent: None,
    });
    let seed = comment_id(&o.expect(m, "the seed comment", |v| v["type"] == "comment_added"));
    let mut ctx = MatrixCtx {
        agent: agent.clone(),
        d1: d1.me.clone(),
        d2: d2.me.clone(),
        comment: seed,
    };
    // Whatever was broadcast while people joined is read.
    for c in [&mut o, &mut s, &mut d1, &mut d2] {
        c.ping();
    }
    // A second auth is refused for everyone, and not as a permission.
    let m = s.mark();
    s.send_msg(&auth_msg(&subject_secret, subject_target, "again"));
    let p = s.ping();
    let r = s
        .refusal(m, p, "auth")
        .unwrap_or_else(|| panic!("{level}: a second auth was accepted"));
    assert_eq!(r["code"], "E012", "{level}: {r}");

    let mut channel = 0u8;
    for (kind, row) in MATRIX {
        let expect = row[li];
        let what = format!(
            "{level} sends {kind}: expected {}",
            if expect { "accepted" } else { "refused" }
        );
        if *kind == "session_leave" {
            // On a second connection of the same level.
            let mut s2 = join(
                w,
                &subject_secret,
                subject_target,
                &format!("leaver-{level}"),
            );
            let m = s2.mark();
            let ms = s.mark();
            s2.send_msg(&matrix_msg(kind, &ctx));
            let (closed, code) = s2.expect_close(m);
            assert_eq!(
                closed.map(|c| c["reason"].clone()),
                Some(json!("left")),
                "{what}"
            );
            assert_eq!(code, 1000, "{what}");
            let gone = s2.me.clone();
            s.expect(ms, "person_left of the leaver", |v| {
                v["type"] == "person_left" && v["person"] == gone
            });
            continue;
        }
        let m = s.mark();
        let mo = o.mark();
        if *kind == "input" {
            s.type_in(channel, &format!("echo IN{level}-$((6*7))\r"));
        } else {
            let msg = matrix_msg(kind, &ctx);
            s.send_msg(&msg);
        }
        if *kind == "session_delete" && expect {
            let (closed, code) = s.expect_close(m);
            assert_eq!(
                closed.map(|c| c["reason"].clone()),
                Some(json!("session_deleted")),
                "{what}"
            );
            assert_eq!(code, 4004, "{what}");
            for other in [&mut o, &mut d1] {
                let (closed, code) = other.expect_close(0);
                assert_eq!(
                    closed.map(|c| c["reason"].clone()),
                    Some(json!("session_deleted")),
                    "{what}"
                );
                assert_eq!(code, 4004, "{what}");
            }
            continue;
        }
        let pong = s.ping();
        let refusal = s.refusal(m, pong, kind);
        match (&refusal, expect) {
            (None, true) => {}
            (Some(r), false) => {
                assert_eq!(r["code"], "E021", "{what}: {r}");
                assert!(
                    !r["hint"].as_str().unwrap_or("").is_empty(),
                    "{what}: refusals carry a hint: {r}"
                );
            }
            (Some(r), true) => panic!("{what}, got {r}"),
            (None, false) => panic!("{what}, but it was not; received:\n{}", s.dump(m)),
        }
        // The effect (or its absence).
        match *kind {
            "ping" => {}
            "terminal_subscribe" => {
                let v = s.expect_type(m, "terminal_subscribed");
                channel = v["channel"].as_u64().unwrap() as u8;
                assert!(
                    matches!(s.first_frame(m), OFrame::Snapshot { channel: c, .. } if c == channel),
                    "{what}: a snapshot first"
                );
            }
            "presence_update" => {
                s.expect_type(m, "presence");
            }
            "input" => {
                if expect {
                    w.wait_logs(&agent, &format!("IN{level}-42"));
                } else {
                    w.barrier(&agent);
                    assert!(
                        !w.logs(&agent).contains(&format!("IN{level}-")),
                        "{what}: the keystrokes reached the agent"
                    );
                }
            }
            "terminal_resize" => {
                // Whoever subscribes next is told the PTY's size.
                let (_, _, v) = o.subscribe(&agent, None);
                let size = (v["cols"].as_u64().unwrap(), v["rows"].as_u64().unwrap());
                assert_eq!(size == (101, 31), expect, "{what}: size now {size:?}");
            }
            "terminal_unsubscribe" => {
                // The owner (subscribed since the resize row) sees new
                // output; the subject no longer does.
                let mo = o.mark();
                w.send(&agent, "echo UNSUB-$((6*7))");
                o.wait_screen(mo, "UNSUB-42");
                let end = s.settle();
                let got: Vec<u8> = s
                    .frames(m)
                    .into_iter()
                    .flat_map(|f| match f {
                        OFrame::Output { data, .. } | OFrame::Snapshot { data, .. } => data,
                    })
                    .collect();
                assert!(
                    !String::from_utf8_lossy(&got).contains("UNSUB-42"),
                    "{what}: output still arrives after unsubscribing ({end})"
                );
            }
            "comment_add" => {
                if expect {
                    let me = s.me.clone();
                    let v = s.expect(m, "comment_added by the subject", |v| {
                        v["type"] == "comment_added" && v["comment"]["author_id"] == me.as_str()
                    });
                    ctx.comment = comment_id(&v);
                }
            }
            "comment_react" | "comment_resolve" | "comment_delete" => {
                if expect {
                    let id = ctx.comment.clone();
                    let v = s.expect(m, "comment_updated", |v| {
                        v["type"] == "comment_updated" && v["comment"]["id"] == id.as_str()
                    });
                    let c = &v["comment"];
                    match *kind {
                        "comment_react" => assert_eq!(c["reactions"][0][0], "👍", "{v}"),
                        "comment_resolve" => assert_eq!(c["resolved"], true, "{v}"),
                        _ => assert_eq!(c["deleted"], true, "{v}"),
                    }
                }
            }
            "control_request" => {
                if expect {
                    let me = s.me.clone();
                    s.expect(m, "control_requested (own)", |v| {
                        v["type"] == "control_requested" && v["person"] == me.as_str()
                    });
                    o.expect(mo, "control_requested (owner)", |v| {
                        v["type"] == "control_requested" && v["person"] == me.as_str()
                    });
                }
            }
            "control_grant" | "control_revoke" | "control_deny" => {
                let ty = match *kind {
                    "control_grant" => "control_granted",
                    "control_revoke" => "control_revoked",
                    _ => "control_denied",
                };
                let d = ctx.d1.clone();
                let seen = s.log[m..pong].iter().any(
                    |e| matches!(e, Ev::Text(v) if v["type"] == ty && v["person"] == d.as_str()),
                );
                assert_eq!(seen, expect, "{what}: {ty}\n{}", s.dump(m));
            }
            "permission_change" => {
                let d = ctx.d1.clone();
                let seen = s.log[m..pong].iter().any(|e| matches!(e, Ev::Text(v) if v["type"] == "permission_changed" && v["person"] == d.as_str() && v["permission"] == "edit"));
                assert_eq!(seen, expect, "{what}");
            }
            "transfer_ownership" => {
                let d = ctx.d1.clone();
                let seen = s.log[m..pong].iter().any(|e| matches!(e, Ev::Text(v) if v["type"] == "permission_changed" && v["person"] == d.as_str() && v["permission"] == "owner"));
                assert_eq!(seen, expect, "{what}");
                if expect {
                    let me = s.me.clone();
                    assert!(s.log[m..pong].iter().any(|e| matches!(e, Ev::Text(v) if v["type"] == "permission_changed" && v["person"] == me.as_str() && v["permission"] == "edit")));
                    // The new owner hands it back.
                    let m2 = s.mark();
                    d1.send_msg(&ClientMsg::TransferOwnership { person: pid(&me) });
                    s.expect(m2, "ownership back", |v| {
                        v["type"] == "permission_changed"
                            && v["person"] == me.as_str()
                            && v["permission"] == "owner"
                    });
                }
            }
            "kick" => {
                if expect {
                    let (closed, code) = d2.expect_close(0);
                    assert_eq!(
                        closed.map(|c| c["reason"].clone()),
                        Some(json!("kicked")),
                        "{what}"
                    );
                    assert_eq!(code, 4003, "{what}");
                } else {
                    d2.ping();
                }
            }
            "agent_stop" => {
                if expect {
                    s.expect(m, "terminal_exited", |v| {
                        v["type"] == "terminal_exited" && v["agent"] == agent.as_str()
                    });
                } else {
                    assert_ne!(w.n.state(&agent), "exited", "{what}");
                }
            }
            "agent_start" => {
                if expect {
                    s.expect(m, "agent_state after the start", |v| {
                        v["type"] == "agent_state"
                            && v["agent"]["name"] == agent.as_str()
                            && !["exited", "error", "unknown"]
                                .contains(&v["agent"]["state"].as_str().unwrap_or(""))
                    });
                    w.barrier(&agent);
                }
            }
            "session_delete" => {
                // Refused: the session and its links still work.
                o.ping();
            }
            "memory_edit" => {
                let title = format!("task of {agent}");
                if expect {
                    // Everyone in the session (the owner too) gets the memory.
                    for (who, log, from) in [("subject", &mut s, m), ("owner", &mut o, mo)] {
                        let t = title.clone();
                        log.expect(from, &format!("{who}: memory with the new task"), |v| {
                            v["type"] == "memory"
                                && v["memory"]["tasks"]
                                    .as_array()
                                    .is_some_and(|ts| ts.iter().any(|x| x["title"] == t.as_str()))
                        });
                    }
                } else {
                    let tasks = json_of(&w.n.ok(&["task", "list", "--all", "--json"]));
                    assert!(
                        !tasks
                            .as_array()
                            .unwrap()
                            .iter()
                            .any(|x| x["title"] == title.as_str()),
                        "{what}: the task was added: {tasks}"
                    );
                }
            }
            other => panic!("no effect check for {other}"),
        }
        let _ = mo;
    }
    if level == "owner" {
        // Deleting the session revoked its guest links (d1's, d2's); a new
        // link opens a new session.
        let (_, secret) = w.share(&agent, "view", &[]);
        join(w, &secret, None, "a new link still works");
        let shares = json_of(&w.n.ok(&["share", "list", "--json"]));
        let revoked = shares
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| s["target"] == owner_target.as_str() && s["revoked"] == true)
            .count();
        assert_eq!(revoked, 2, "d1's and d2's links are revoked: {shares}");
    }
}

#[test]
fn permission_matrix_holds_for_every_message_and_level() {
    // The table has one row per client message (and input), each buildable.
    let dummy = MatrixCtx {
        agent: "a".into(),
        d1: "p".into(),
        d2: "q".into(),
        comment: "c".into(),
    };
    let kinds: BTreeSet<&str> = MATRIX.iter().map(|(k, _)| *k).collect();
    assert_eq!(kinds.len(), MATRIX.len(), "one row per message");
    for k in kinds.iter().filter(|k| **k != "input") {
        matrix_msg(k, &dummy);
    }
    assert_eq!(kinds.len(), 21 + 1, "every ClientMsg but auth, and input");
    let agents: Vec<String> = LEVELS.iter().map(|l| format!("m-{l}")).collect();
    let names: Vec<&str> = agents.iter().map(String::as_str).collect();
    let w = Web::start(&names);
    std::thread::scope(|sc| {
        let w = &w;
        let hs: Vec<_> = (0..LEVELS.len())
            .map(|li| sc.spawn(move || run_matrix_level(w, li)))
            .collect();
        for h in hs {
            if let Err(e) = h.join() {
                std::panic::resume_unwind(e);
            }
        }
    });
}

// ----------------------------------------------------- 2. floor control ---

#[test]
fn every_input_is_tagged_with_who_sent_it() {
    let w = Web::start(&["tg"]);
    let mut v = w.guest("tg", "view", "watcher");
    v.ping();
    let by = |v: &mut Ws, m: usize, what: &str, pred: &dyn Fn(&Value) -> bool| -> Value {
        v.expect(m, what, |x| {
            x["type"] == "input_by" && x["agent"] == "tg" && pred(&x["by"])
        })["by"]
            .clone()
    };

    // The owner's `agentos send`: a person, the owner.
    let m = v.mark();
    w.send("tg", "echo OWNER-SEND");
    let b = by(&mut v, m, "the owner's send", &|b| b["kind"] == "person");
    assert_eq!(b["id"], "owner", "{b}");

    // Another agent's `agentos send` (from inside its terminal): that agent.
    let m = v.mark();
    let script = format!("{BIN} send tg 'echo FROM-AGENT' --enter; sleep 600");
    w.n.ok(&[
        "create",
        "sender",
        "--detach",
        "--isolation",
        "none",
        "--",
        "bash",
        "-c",
        &script,
    ]);
    let b = by(&mut v, m, "the agent's send", &|b| b["kind"] == "agent");
    assert_eq!(b["name"], "sender", "{b}");
    w.wait_logs("tg", "FROM-AGENT");

    // Typing in `agentos attach`: the owner at a terminal.
    let mut pty = w.n.attach(&["attach", "tg"], 80, 24);
    pty.expect("$");
    let m = v.mark();
    pty.write(b"echo ATTACHED-$((6*7))\r");
    let b = by(&mut v, m, "typing in attach", &|b| {
        b["kind"] == "person"
            && b["name"]
                .as_str()
                .is_some_and(|n| n.ends_with("(terminal)"))
    });
    assert_eq!(b["id"], "owner", "{b}");
    w.wait_logs("tg", "ATTACHED-42");
}

#[test]
fn floor_control_decides_who_types_and_who_resizes() {
    let w = Web::start(&["t1"]);
    let mut o = w.owner_join("t1", "olivia");
    let mut c = w.guest("t1", "comment", "carl");
    let mut e = w.guest("t1", "edit", "erin");
    let (och, ..) = o.subscribe("t1", None);
    let (cch, ..) = c.subscribe("t1", None);
    let (ech, ..) = e.subscribe("t1", None);
    let carl = c.me.clone();
    let erin = e.me.clone();

    let refused = |s: &mut Ws, kind: &str, send: &dyn Fn(&mut Ws)| -> Option<Value> {
        let m = s.mark();
        send(s);
        let p = s.ping();
        s.refusal(m, p, kind)
    };
    let resize = |cols: u16, rows: u16| {
        move |s: &mut Ws| {
            s.send_msg(&ClientMsg::TerminalResize {
                agent: "t1".into(),
                cols,
                rows,
            })
        }
    };

    // Before anyone holds the floor, the comment guest cannot type.
    let r = refused(&mut c, "input", &|s| {
        s.type_in(cch, "echo CARL0-$((6*7))\r")
    });
    assert_eq!(
        r.expect("comment guest typing without the floor")["code"],
        "E021"
    );

    // Carl asks; the owner hears it and grants.
    let mo = o.mark();
    c.send_msg(&ClientMsg::ControlRequest {});
    let req = o.expect(mo, "control_requested", |v| {
        v["type"] == "control_requested" && v["person"] == carl.as_str()
    });
    assert_eq!(req["name"], "carl");
    let (mo, mc, me) = (o.mark(), c.mark(), e.mark());
    o.send_msg(&ClientMsg::ControlGrant { person: pid(&carl) });
    for (s, m) in [(&mut o, mo), (&mut c, mc), (&mut e, me)] {
        s.expect(m, "control_granted to carl", |v| {
            v["type"] == "control_granted" && v["person"] == carl.as_str()
        });
        s.expect(m, "presence with carl driving", |v| {
            v["type"] == "presence"
                && v["people"].as_array().is_some_and(|p| {
                    p.iter()
                        .any(|x| x["id"] == carl.as_str() && x["control"] == true)
                })
        });
    }
    // Carl types; Erin (edit) cannot while Carl holds the floor; the owner always can.
    let m = o.mark();
    assert!(
        refused(&mut c, "input", &|s| s
            .type_in(cch, "echo CARL1-$((6*7))\r"))
        .is_none()
    );
    w.wait_logs("t1", "CARL1-42");
    o.expect(m, "input_by carl", |v| {
        v["type"] == "input_by" && v["by"]["id"] == carl.as_str()
    });
    let r = refused(&mut e, "input", &|s| {
        s.type_in(ech, "echo ERIN1-$((6*7))\r")
    })
    .expect("edit guest typing while the floor is held");
    assert_eq!(r["code"], "E021");
    assert!(r["message"].as_str().unwrap().contains("control"), "{r}");
    assert!(
        refused(&mut o, "input", &|s| s
            .type_in(och, "echo OWNER1-$((6*7))\r"))
        .is_none()
    );
    w.wait_logs("t1", "OWNER1-42");
    w.barrier("t1");
    let logs = w.logs("t1");
    assert!(
        !logs.contains("ERIN1") && !logs.contains("CARL0"),
        "refused keystrokes never reach the agent:\n{logs}"
    );

    // Only the driver resizes: not Erin, not even the owner while Carl drives.
    assert_eq!(
        refused(&mut e, "terminal_resize", &resize(70, 20)).expect("edit resizing")["code"],
        "E021"
    );
    assert_eq!(
        refused(&mut o, "terminal_resize", &resize(71, 21))
            .expect("owner resizing while carl drives")["code"],
        "E021"
    );
    assert!(refused(&mut c, "terminal_resize", &resize(72, 22)).is_none());
    let (_, _, v) = e.subscribe("t1", None);
    assert_eq!(
        (v["cols"].as_u64(), v["rows"].as_u64()),
        (Some(72), Some(22))
    );
    w.send("t1", "stty size");
    w.wait_logs("t1", "22 72");
    let ech = v["channel"].as_u64().unwrap() as u8;

    // The owner takes the floor back.
    let (mc, me) = (c.mark(), e.mark());
    o.send_msg(&ClientMsg::ControlRevoke { person: pid(&carl) });
    c.expect(mc, "control_revoked", |v| {
        v["type"] == "control_revoked" && v["person"] == carl.as_str()
    });
    e.expect(me, "control_revoked", |v| {
        v["type"] == "control_revoked" && v["person"] == carl.as_str()
    });
    assert_eq!(
        refused(&mut c, "input", &|s| s
            .type_in(cch, "echo CARL2-$((6*7))\r"))
        .expect("carl after revoke")["code"],
        "E021"
    );
    assert_eq!(
        refused(&mut c, "terminal_resize", &resize(73, 23)).expect("carl resizing after revoke")["code"],
        "E021"
    );
    assert!(
        refused(&mut e, "input", &|s| s
            .type_in(ech, "echo ERIN2-$((6*7))\r"))
        .is_none()
    );
    w.wait_logs("t1", "ERIN2-42");
    assert!(
        refused(&mut o, "terminal_resize", &resize(80, 24)).is_none(),
        "the owner drives again"
    );
    w.barrier("t1");
    assert!(!w.logs("t1").contains("CARL2"));

    // A holder may give the floor back itself; a request may be denied.
    o.send_msg(&ClientMsg::ControlGrant { person: pid(&erin) });
    e.expect(e.mark(), "control_granted to erin", |v| {
        v["type"] == "control_granted" && v["person"] == erin.as_str()
    });
    let mo = o.mark();
    assert!(
        refused(&mut e, "control_revoke", &|s| s
            .send_msg(&ClientMsg::ControlRevoke { person: pid(&erin) }))
        .is_none()
    );
    o.expect(mo, "erin released", |v| {
        v["type"] == "control_revoked" && v["person"] == erin.as_str()
    });
    // Releasing what one does not hold, or someone else's floor: refused.
    assert_eq!(
        refused(&mut c, "control_revoke", &|s| s
            .send_msg(&ClientMsg::ControlRevoke { person: pid(&erin) }))
        .expect("carl revoking erin")["code"],
        "E021"
    );
    let mc = c.mark();
    c.send_msg(&ClientMsg::ControlRequest {});
    o.expect(mo, "carl asks again", |v| {
        v["type"] == "control_requested" && v["person"] == carl.as_str()
    });
    o.send_msg(&ClientMsg::ControlDeny { person: pid(&carl) });
    c.expect(mc, "control_denied", |v| {
        v["type"] == "control_denied" && v["person"] == carl.as_str()
    });
    assert_eq!(
        refused(&mut c, "input", &|s| s.type_in(cch, "echo CARL3\r")).expect("carl after deny")["code"],
        "E021"
    );

    // A permission change sticks to the person's web session: lowered to
    // view, Erin cannot type, and her cookie reconnects her as the same
    // person, still view.
    let cookie = cookie_from_ticket(&w, &e.ticket);
    let m = e.mark();
    o.send_msg(&ClientMsg::PermissionChange {
        person: pid(&erin),
        permission: Permission::View,
    });
    e.expect(m, "permission_changed", |v| {
        v["type"] == "permission_changed"
            && v["person"] == erin.as_str()
            && v["permission"] == "view"
    });
    let r = refused(&mut e, "input", &|s| s.type_in(ech, "echo ERIN3\r")).expect("erin as view");
    assert!(r["message"].as_str().unwrap().contains("view-only"), "{r}");
    drop(e);
    let mut again = Ws::connect(&w.hostport, Some(&cookie), "erin-again");
    again.send(json!({"type": "auth", "name": "ignored"}));
    let ok = again.expect_type(0, "auth_ok");
    assert_eq!(
        ok["you"]["id"],
        erin.as_str(),
        "the same person across reconnects"
    );
    assert_eq!(ok["you"]["permission"], "view");
    assert_eq!(ok["you"]["name"], "erin");
}

// ----------------------------------------------------- 3. link lifetime ---

#[test]
fn share_links_expire_run_out_and_revoke_at_once() {
    let w = Web::start(&["t1"]);

    // --expires 2s: works, then the open socket closes with 4002 and the
    // link is refused.
    let (_, secret) = w.share("t1", "view", &["--expires", "2s"]);
    let mut a = join(&w, &secret, None, "ann");
    let (closed, code) = a.expect_close(0);
    assert_eq!(closed.map(|c| c["reason"].clone()), Some(json!("expired")));
    assert_eq!(code, 4002);
    let err = try_join(&w, &secret, None, "late")
        .err()
        .expect("an expired link is refused");
    assert_eq!(err["code"], "E025", "{err}");

    // --max-uses 2: twice, then refused.
    let (id2, secret) = w.share("t1", "comment", &["--max-uses", "2"]);
    let _u1 = join(&w, &secret, None, "u1");
    let _u2 = join(&w, &secret, None, "u2");
    let err = try_join(&w, &secret, None, "u3")
        .err()
        .expect("a used-up link is refused");
    assert_eq!(err["code"], "E025", "{err}");

    // --one-time: once.
    let (_, secret) = w.share("t1", "view", &["--one-time"]);
    let _o1 = join(&w, &secret, None, "once");
    let err = try_join(&w, &secret, None, "twice")
        .err()
        .expect("a one-time link is refused the second time");
    assert_eq!(err["code"], "E025", "{err}");

    // Revocation closes an open socket within a second.
    let (id, secret) = w.share("t1", "edit", &[]);
    let mut b = join(&w, &secret, None, "bea");
    b.subscribe("t1", None);
    b.ping();
    let m = b.mark();
    w.n.ok(&["share", "revoke", &id]);
    let t0 = Instant::now();
    let (closed, code) = b.expect_close(m);
    let took = t0.elapsed();
    assert_eq!(closed.map(|c| c["reason"].clone()), Some(json!("revoked")));
    assert_eq!(code, 4001);
    assert!(
        took < Duration::from_secs(1),
        "the socket closed {took:?} after the revoke returned"
    );
    let err = try_join(&w, &secret, None, "bea-again")
        .err()
        .expect("a revoked link is refused");
    assert_eq!(err["code"], "E025", "{err}");

    let shares = json_of(&w.n.ok(&["share", "list", "--json"]));
    let find = |id: &str| {
        shares
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["id"] == id)
            .cloned()
            .unwrap_or_else(|| panic!("{id} in {shares}"))
    };
    assert_eq!(find(&id)["revoked"], true);
    assert_eq!(find(&id)["active"], 0);
    assert_eq!(find(&id2)["uses"], 2);
    assert_eq!(find(&id2)["active"], 2, "u1 and u2 are still connected");
}

#[test]
fn wrong_secrets_lock_the_address_out() {
    let w = Web::start(&[]);
    for i in 0..5 {
        let err = try_join(&w, &format!("not-a-secret-{i}"), None, "guess")
            .err()
            .expect("a wrong secret is refused");
        assert_eq!(err["code"], "E025", "{err}");
    }
    let err = try_join(&w, &w.owner, None, "owner")
        .err()
        .expect("after 5 wrong secrets even the right one is refused");
    assert_eq!(err["code"], "E026", "{err}");
    let m = http(&w.hostport, "GET", "/metrics", None, None);
    let text = String::from_utf8_lossy(&m.body).into_owned();
    let failed = metric(&text, "agentos_share_auth_failed");
    assert!(failed >= 5.0, "failed auths are counted: {failed}\n{text}");
}

// --------------------------------------------------------- 4. presence ---

#[test]
fn presence_follows_joins_and_leaves_within_200ms() {
    let w = Web::start(&["t1"]);
    let (_, secret) = w.share("t1", "view", &[]);
    let mut a = join(&w, &secret, None, "ann");
    a.ping();

    // From bob's auth (on an open socket) to ann hearing of him.
    let mut b = Ws::connect(&w.hostport, None, "bob");
    let m = a.mark();
    let t0 = Instant::now();
    b.send_msg(&auth_msg(&secret, None, "bob"));
    let v = a.expect(m, "person_joined bob", |v| {
        v["type"] == "person_joined" && v["person"]["name"] == "bob"
    });
    let took = t0.elapsed();
    let i = b.wait_msg(0, W, is_type("auth_ok")).expect("bob's auth_ok");
    let bob = b.text(i)["you"]["id"].as_str().unwrap().to_string();
    assert_eq!(v["person"]["id"], bob.as_str());
    assert!(
        took < Duration::from_millis(200),
        "person_joined after {took:?}"
    );
    assert_eq!(v["person"]["name"], "bob");
    assert_eq!(v["person"]["permission"], "view");
    assert_eq!(v["person"]["connected"], true);
    a.expect(m, "presence with ann and bob", |v| {
        v["type"] == "presence"
            && v["people"]
                .as_array()
                .is_some_and(|p| p.len() == 2 && p.iter().any(|x| x["id"] == bob.as_str()))
    });

    // Leaving on purpose.
    let m = a.mark();
    let t0 = Instant::now();
    b.send_msg(&ClientMsg::SessionLeave {});
    a.expect(m, "person_left bob", |v| {
        v["type"] == "person_left" && v["person"] == bob.as_str()
    });
    let took = t0.elapsed();
    assert!(
        took < Duration::from_millis(200),
        "person_left after {took:?}"
    );
    a.expect(m, "presence without bob", |v| {
        v["type"] == "presence" && v["people"].as_array().is_some_and(|p| p.len() == 1)
    });

    // A closed socket is a leave too.
    let mut c = join(&w, &secret, None, "cid");
    let cid = c.me.clone();
    a.ping();
    let m = a.mark();
    let t0 = Instant::now();
    let _ = c.sock.close(None);
    let _ = c.sock.flush();
    a.expect(m, "person_left cid", |v| {
        v["type"] == "person_left" && v["person"] == cid.as_str()
    });
    let took = t0.elapsed();
    assert!(
        took < Duration::from_millis(200),
        "person_left after {took:?}"
    );
}

// --------------------------------------------------------- 5. comments ---

fn line_of(numbered: &str, text: &str) -> u64 {
    numbered
        .lines()
        .find_map(|l| {
            let (n, rest) = l.trim_start().split_once("  ")?;
            (rest.trim_end() == text).then(|| n.parse().ok()).flatten()
        })
        .unwrap_or_else(|| panic!("no line {text:?} in:\n{numbered}"))
}

#[test]
fn comments_reach_viewers_and_survive_a_daemon_restart() {
    let mut w = Web::start(&["t1"]);
    w.send("t1", "echo CMARK-$((6*7))");
    w.wait_logs("t1", "CMARK-42");
    let numbered = w.n.ok(&["logs", "t1", "--numbers"]).stdout;
    let line = line_of(&numbered, "CMARK-42");
    let mut v = w.guest("t1", "view", "vera");
    let mut cora = w.guest("t1", "comment", "cora");
    let mut dan = w.guest("t1", "comment", "dan");
    v.ping();

    // The CLI's comment reaches a viewer at once, anchored to the line.
    let m = v.mark();
    let out = w.n.ok(&[
        "comment",
        "add",
        "t1",
        "--line",
        &line.to_string(),
        "looks right",
        "--json",
    ]);
    let t0 = Instant::now();
    let added = v.expect(m, "comment_added", |v| v["type"] == "comment_added");
    let took = t0.elapsed();
    assert!(
        took < Duration::from_millis(200),
        "comment_added after {took:?}"
    );
    let c = &added["comment"];
    let id = c["id"].as_str().unwrap().to_string();
    assert_eq!(json_of(&out)[0]["id"], id.as_str());
    assert_eq!(c["line"], line);
    assert_eq!(c["line_text"], "CMARK-42");
    assert_eq!(c["text"], "looks right");
    assert_eq!(c["author_id"], "owner");
    assert_eq!(c["agent"], "t1");
    assert_eq!(c["line_hash"].as_str().unwrap().len(), 32);
    // A line that does not exist (yet) is refused.
    let o =
        w.n.run(&["comment", "add", "t1", "--line", "999999", "nope"]);
    assert_ne!(o.code, 0, "{o:?}");
    assert!(o.stderr.contains("E012"), "{o:?}");

    // A reply.
    let m = v.mark();
    w.n.ok(&[
        "comment",
        "add",
        "t1",
        "--line",
        &line.to_string(),
        "agreed",
        "--reply-to",
        &id,
    ]);
    let reply = v.expect(m, "the reply", |v| {
        v["type"] == "comment_added" && v["comment"]["parent"] == id.as_str()
    });
    let reply_id = comment_id(&reply);

    // Reactions from two people, one taken back.
    let m = v.mark();
    cora.send_msg(&ClientMsg::CommentReact {
        id: CommentId(id.clone()),
        emoji: "👍".into(),
        on: true,
    });
    v.expect(m, "cora's reaction", |v| {
        v["type"] == "comment_updated" && v["comment"]["reactions"] == json!([["👍", ["cora"]]])
    });
    dan.send_msg(&ClientMsg::CommentReact {
        id: CommentId(id.clone()),
        emoji: "👍".into(),
        on: true,
    });
    v.expect(m, "dan's reaction", |v| {
        v["type"] == "comment_updated"
            && v["comment"]["reactions"] == json!([["👍", ["cora", "dan"]]])
    });
    cora.send_msg(&ClientMsg::CommentReact {
        id: CommentId(id.clone()),
        emoji: "👍".into(),
        on: false,
    });
    v.expect(m, "cora takes hers back", |v| {
        v["type"] == "comment_updated" && v["comment"]["reactions"] == json!([["👍", ["dan"]]])
    });

    // Resolve and reopen from the CLI.
    let m = v.mark();
    w.n.ok(&["comment", "resolve", &id]);
    v.expect(m, "resolved", |v| {
        v["type"] == "comment_updated"
            && v["comment"]["id"] == id.as_str()
            && v["comment"]["resolved"] == true
    });
    let m = v.mark();
    w.n.ok(&["comment", "resolve", &id, "--reopen"]);
    v.expect(m, "reopened", |v| {
        v["type"] == "comment_updated"
            && v["comment"]["id"] == id.as_str()
            && v["comment"]["resolved"] == false
    });
    w.n.ok(&["comment", "resolve", &id]);

    // Only its author (or the owner) deletes a comment.
    let m = cora.mark();
    cora.send_msg(&ClientMsg::CommentAdd {
        agent: "t1".into(),
        line,
        text: "cora's note".into(),
        parent: None,
    });
    let mine = comment_id(&cora.expect(m, "cora's comment", |v| {
        v["type"] == "comment_added" && v["comment"]["text"] == "cora's note"
    }));
    for target in [&id, &mine] {
        let m = dan.mark();
        dan.send_msg(&ClientMsg::CommentDelete {
            id: CommentId(target.clone()),
        });
        let e = dan.expect(m, "refusal", |v| {
            v["type"] == "error" && v["refused"] == "comment_delete"
        });
        assert_eq!(e["code"], "E021", "{e}");
    }
    let m = v.mark();
    cora.send_msg(&ClientMsg::CommentDelete {
        id: CommentId(mine.clone()),
    });
    v.expect(m, "cora deleted hers", |v| {
        v["type"] == "comment_updated"
            && v["comment"]["id"] == mine.as_str()
            && v["comment"]["deleted"] == true
    });
    // A viewer may not comment at all.
    let m = v.mark();
    v.send_msg(&ClientMsg::CommentAdd {
        agent: "t1".into(),
        line,
        text: "x".into(),
        parent: None,
    });
    let e = v.expect(m, "refusal", |v| {
        v["type"] == "error" && v["refused"] == "comment_add"
    });
    assert_eq!(e["code"], "E021");

    let check = |list: &Value| {
        let all = list.as_array().unwrap();
        let get = |i: &str| {
            all.iter()
                .find(|c| c["id"] == i)
                .unwrap_or_else(|| panic!("{i} in {list}"))
        };
        assert_eq!(get(&id)["text"], "looks right");
        assert_eq!(get(&id)["line"], line);
        assert_eq!(get(&id)["resolved"], true);
        assert_eq!(get(&id)["reactions"], json!([["👍", ["dan"]]]));
        assert_eq!(get(&reply_id)["parent"], id.as_str());
        assert_eq!(get(&mine)["deleted"], true);
        assert_eq!(all.len(), 3, "{list}");
    };
    check(&json_of(&w.n.ok(&["comment", "list", "--json"])));
    check(&json_of(&w.n.ok(&["comment", "list", "t1", "--json"])));
    let human = w.n.ok(&["comment", "list"]).stdout;
    assert!(
        human.contains("looks right")
            && human.contains("[resolved]")
            && !human.contains("cora's note"),
        "{human}"
    );

    // Comments are in the workspace document: they survive the daemon.
    let pid = w.n.daemon_pid().unwrap();
    w.n.ok(&["daemon", "stop"]);
    wait_until("the daemon exits", W, || !alive(pid));
    check(&json_of(&w.n.ok(&["comment", "list", "--json"])));
    // And a viewer of the new daemon sees them in its session state.
    w.refresh();
    let (_, secret) = w.share("t1", "view", &[]);
    let s = join(&w, &secret, None, "after");
    let state = s
        .log
        .iter()
        .find_map(|e| match e {
            Ev::Text(v) if v["type"] == "session_state" => Some(v["comments"].clone()),
            _ => None,
        })
        .unwrap();
    check(&state);
}

// ----------------------------------------------------------- 6. resume ---

#[test]
fn comments_sync_between_the_owners_devices_and_reach_live_viewers() {
    const SYNC: Duration = Duration::from_secs(40);
    let a = p2p_node("a", false, "/ip4/127.0.0.1/tcp/0");
    let b = p2p_node("b", false, "/ip4/127.0.0.1/tcp/0");
    pair(&a, &b);
    let ra = a.work.join("repo");
    shared_repo(&ra, "shared-ws-comments");
    let rb = b.work.join("repo");
    git2::Repository::clone(ra.to_str().unwrap(), &rb).unwrap();
    b.ok_in(&rb, &["sync", "enable"]);
    let mut w = Web::on(a);
    w.create_in(&ra, "talk");
    w.refresh();
    w.send("talk", "echo XMARK-$((6*7))");
    w.wait_logs("talk", "XMARK-42");
    let line = line_of(&w.n.ok(&["logs", "talk", "--numbers"]).stdout, "XMARK-42");
    let mut v = w.owner_join("talk", "watcher");

    // A comment made on A is in the workspace document: B lists it.
    let out = w.n.ok(&[
        "comment",
        "add",
        "talk",
        "--line",
        &line.to_string(),
        "from a",
        "--json",
    ]);
    let id = json_of(&out)[0]["id"].as_str().unwrap().to_string();
    wait_until("B lists the comment made on A", SYNC, || {
        json_of(&b.ok(&["comment", "list", "--json"]))
            .as_array()
            .is_some_and(|l| {
                l.iter()
                    .any(|c| c["id"] == id.as_str() && c["line"] == line)
            })
    });

    // B resolves it: A's live viewer hears of it as soon as the change
    // arrives by sync (the sessions' safety poll runs every 30 s).
    let m = v.mark();
    let t0 = Instant::now();
    b.ok(&["comment", "resolve", &id]);
    v.expect(m, "the resolve made on B", |x| {
        x["type"] == "comment_updated"
            && x["comment"]["id"] == id.as_str()
            && x["comment"]["resolved"] == true
    });
    let took = t0.elapsed();
    eprintln!("resolve on B -> A's viewer: {took:?}");
    assert!(took < Duration::from_secs(1), "{took:?}");
    let listed = json_of(&w.n.ok(&["comment", "list", "talk", "--json"]));
    assert_eq!(listed[0]["resolved"], true, "{listed}");

    // Adding needs the agent's output lines, which live on A.
    let o = b.run(&["comment", "add", "talk", "--line", "1", "from b"]);
    assert_ne!(o.code, 0, "{o:?}");
    assert!(o.stderr.contains("device the agent runs on"), "{o:?}");
}

/// The memory message whose tasks include one titled `title`.
fn has_task(title: &str) -> impl Fn(&Value) -> bool + '_ {
    move |v| {
        v["type"] == "memory"
            && v["memory"]["tasks"]
                .as_array()
                .is_some_and(|ts| ts.iter().any(|t| t["title"] == title))
    }
}

#[test]
fn the_shared_memory_is_edited_at_edit_level_and_reaches_everyone() {
    let w = Web::start(&["mem"]);
    let mut v = w.guest("mem", "view", "vic");
    let mut e1 = w.guest("mem", "edit", "eve");
    let mut e2 = w.guest("mem", "edit", "ed");
    v.ping();

    // A task added from the CLI (by an agent or the owner) reaches a
    // view-level viewer at once.
    let m = v.mark();
    let t0 = Instant::now();
    let out = w.n.ok(&["task", "add", "review the diff", "--json"]);
    let id = json_of(&out)["id"].as_str().unwrap().to_string();
    v.expect(m, "the CLI's task", has_task("review the diff"));
    let took = t0.elapsed();
    assert!(took < Duration::from_millis(200), "memory after {took:?}");

    // Edit level claims it; a second claim by someone else is refused.
    let m = v.mark();
    e1.send_msg(&ClientMsg::MemoryEdit {
        op: MemoryOp::TaskClaim { id: id.clone() },
    });
    let got = v.expect(m, "eve's claim", |x| {
        x["type"] == "memory"
            && x["memory"]["tasks"]
                .as_array()
                .is_some_and(|ts| ts.iter().any(|t| t["holder"] == "web:eve"))
    });
    assert_eq!(got["memory"]["tasks"][0]["status"], "in_progress");
    let m2 = e2.mark();
    e2.send_msg(&ClientMsg::MemoryEdit {
        op: MemoryOp::TaskClaim { id: id.clone() },
    });
    // Answered once the document has refused it (after any pong).
    let r = e2.expect(m2, "a refused claim", |x| {
        x["type"] == "error" && x["refused"] == "memory_edit"
    });
    assert_eq!(r["code"], "E028", "{r}");
    assert!(r["message"].as_str().unwrap().contains("eve"), "{r}");

    // Decisions and the context, from the browser's side; the CLI and the
    // projections in the workspace see them.
    let m = v.mark();
    e2.send_msg(&ClientMsg::MemoryEdit {
        op: MemoryOp::DecisionAdd {
            text: "Merge after review".into(),
        },
    });
    e2.send_msg(&ClientMsg::MemoryEdit {
        op: MemoryOp::ContextSet {
            text: "# Shared context\n".into(),
        },
    });
    v.expect(m, "the context", |x| {
        x["type"] == "memory" && x["memory"]["context"] == "# Shared context\n"
    });
    let decisions = json_of(&w.n.ok(&["decision", "list", "--json"]));
    assert_eq!(decisions[0]["text"], "Merge after review");
    assert_eq!(decisions[0]["by"], "web:ed");
    let dir = w.n.work.join(".agentos/memory");
    wait_until("the projections are written", W, || {
        std::fs::read_to_string(dir.join("context.md")).is_ok_and(|c| c == "# Shared context\n")
    });
    assert!(
        std::fs::read_to_string(dir.join("tasks.jsonl"))
            .unwrap()
            .contains("review the diff")
    );

    // View level cannot edit; nothing changes.
    let m = v.mark();
    v.send_msg(&ClientMsg::MemoryEdit {
        op: MemoryOp::TaskAdd {
            title: "sneaky".into(),
            notes: String::new(),
        },
    });
    let pong = v.ping();
    let r = v.refusal(m, pong, "memory_edit").expect("view is refused");
    assert_eq!(r["code"], "E021");
    let all = json_of(&w.n.ok(&["task", "list", "--all", "--json"]));
    assert!(!all.to_string().contains("sneaky"), "{all}");

    // A late joiner gets the memory right after the session state.
    let mut late = w.guest("mem", "view", "late");
    let i = late
        .wait_msg(0, W, has_task("review the diff"))
        .expect("the memory for a late joiner");
    assert!(matches!(&late.log[i], Ev::Text(_)));
}

#[test]
fn resume_from_since_replays_exactly_the_missed_bytes() {
    let w = Web::start(&["t1"]);
    let mut v1 = w.guest("t1", "view", "first");
    let (_, i1, _) = v1.subscribe("t1", None);
    let OFrame::Snapshot { seq: start, .. } = v1.first_frame(i1) else {
        panic!("a fresh subscriber gets a snapshot first");
    };
    let snap_at = v1.wait(i1, W, |e| matches!(e, Ev::Bin(_))).unwrap();
    w.send(
        "t1",
        "for i in $(seq 1 300); do echo resume-line-$i; done; echo RDONE-$((6*7))",
    );
    v1.wait_screen(snap_at + 1, "RDONE-42");
    w.barrier("t1");
    v1.settle();
    let (first, bytes) = v1.output(snap_at + 1);
    assert_eq!(
        first,
        Some(start),
        "output continues right after the snapshot"
    );
    let end = start + bytes.len() as u64;
    assert!(bytes.len() > 3000, "{} bytes", bytes.len());

    let len = end - start;
    for cut in [
        start,
        start + 1,
        start + len / 3,
        start + len / 2 + 7,
        end - 1,
        end,
    ] {
        let mut v2 = w.guest("t1", "view", &format!("resume-{cut}"));
        let (_, i2, _) = v2.subscribe("t1", Some(cut));
        if cut < end {
            v2.wait_output_end(i2, cut, end);
        }
        v2.settle();
        let (f2, got) = v2.output(i2);
        if cut == end {
            // Nothing missed: no snapshot, and whatever came later starts at `end`.
            assert!(f2.is_none() || f2 == Some(end), "{f2:?}");
            continue;
        }
        assert_eq!(f2, Some(cut), "replay starts at since");
        let want = &bytes[(cut - start) as usize..];
        assert_eq!(
            String::from_utf8_lossy(&got[..want.len()]),
            String::from_utf8_lossy(want),
            "resume from {cut}: the bytes differ"
        );
        assert_eq!(&got[..want.len()], want);
    }

    // Live output after a resume at the end arrives to both identically.
    let mut v3 = w.guest("t1", "view", "at-the-end");
    let (_, i3, _) = v3.subscribe("t1", Some(end));
    v3.settle();
    let m1 = v1.mark();
    w.send("t1", "echo LIVE-$((6*7))");
    v1.wait_screen(m1, "LIVE-42");
    v3.wait_screen(i3, "LIVE-42");
    w.barrier("t1");
    v1.settle();
    v3.settle();
    let (a, live1) = v1.output(m1);
    let (b, live3) = v3.output(i3);
    assert_eq!((a, b), (Some(end), Some(end)));
    let n = live1.len().min(live3.len());
    assert!(n > 0);
    assert_eq!(&live1[..n], &live3[..n]);
    drop(v1);
    drop(v3);

    // More than 1 MiB later, `since` has left the window: a snapshot. A
    // live viewer tells when the agent has taken in the whole flood.
    let mut live = w.guest("t1", "view", "live");
    let (_, il, _) = live.subscribe("t1", None);
    w.send(
        "t1",
        "yes 0123456789abcdefghijklmnopqrstuvwxyz | head -n 32000; echo BIG-$((6*7))",
    );
    live.wait_screen(il, "BIG-42");
    drop(live);
    for since in [Some(start), Some(0), Some(u64::MAX / 2), None] {
        let mut v4 = w.guest("t1", "view", "late");
        let (ch, i4, _) = v4.subscribe("t1", since);
        match v4.first_frame(i4) {
            OFrame::Snapshot {
                channel,
                seq,
                cols,
                rows,
                ..
            } => {
                assert_eq!(channel, ch);
                assert!(seq > end + 1024 * 1024, "snapshot at {seq}");
                assert!(cols > 0 && rows > 0);
            }
            f => panic!("since {since:?}: expected a snapshot, got {f:?}"),
        }
    }
}

/// Cap a client socket's receive buffer (no autotuning to megabytes), as a
/// viewer on a slow link would have.
fn small_rcvbuf(ws: &Ws, bytes: libc::c_int) {
    use std::os::fd::AsRawFd;
    let fd = ws.sock.get_ref().as_raw_fd();
    // SAFETY: a valid socket fd and a c_int option value of the right size.
    let r = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&bytes as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(r, 0, "setsockopt SO_RCVBUF");
}

#[test]
fn a_stalled_viewer_is_resynced_by_a_snapshot_and_slows_no_one() {
    let w = Web::start(&["f1"]);
    let mut fast = w.guest("f1", "view", "fast");
    let (_, fi, _) = fast.subscribe("f1", None);
    let mut slow = w.guest("f1", "view", "slow");
    small_rcvbuf(&slow, 64 * 1024);
    let (_, si, _) = slow.subscribe("f1", None);
    assert!(matches!(slow.first_frame(si), OFrame::Snapshot { .. }));
    let after_first = slow.wait(si, W, |e| matches!(e, Ev::Bin(_))).unwrap() + 1;

    // About 7.4 MB of output while the slow viewer reads nothing.
    let flood: u64 = 200_000 * 37;
    w.send(
        "f1",
        "yes 0123456789abcdefghijklmnopqrstuvwxyz | head -n 200000; echo FLOOD-$((6*7))",
    );
    // The fast viewer gets to the end without waiting for the stalled one.
    fast.wait_screen(fi, "FLOOD-42");

    // The stalled viewer reads again: a little old output (what its socket
    // and its byte budget held), then a snapshot that shows the end.
    let deadline = Instant::now() + W;
    let mut i = after_first;
    let mut stale = 0u64;
    loop {
        while i < slow.log.len() {
            if let Ev::Bin(b) = &slow.log[i] {
                match decode(b) {
                    OFrame::Output { data, .. } => stale += data.len() as u64,
                    OFrame::Snapshot { data, .. } => {
                        let text = String::from_utf8_lossy(&data);
                        assert!(
                            text.contains("FLOOD-42"),
                            "the resync snapshot shows the current screen"
                        );
                        // Bounded by buffers and the 256 KiB budget, not by
                        // the flood (before: megabytes of kernel buffers).
                        assert!(
                            stale < 2 * 1024 * 1024 && stale < flood / 3,
                            "{stale} bytes of stale output before the resync"
                        );
                        let m = slow.mark();
                        w.send("f1", "echo AFTER-$((6*7))");
                        slow.wait_screen(m, "AFTER-42");
                        return;
                    }
                }
            }
            i += 1;
        }
        assert!(
            slow.pump(deadline),
            "no resync snapshot after {stale} bytes of output"
        );
    }
}

// ------------------------------------------------- 7. OpenAPI conformance ---

struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Resp {
    fn header(&self, k: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(h, _)| h.eq_ignore_ascii_case(k))
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
}

/// A minimal HTTP/1.1 client (one request per connection).
fn http(
    hostport: &str,
    method: &str,
    path: &str,
    cookie: Option<&str>,
    body: Option<&str>,
) -> Resp {
    let mut s = TcpStream::connect(hostport).unwrap();
    s.set_read_timeout(Some(W)).unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {hostport}\r\nConnection: close\r\n");
    if let Some(c) = cookie {
        req.push_str(&format!("Cookie: agentos_session={c}\r\n"));
    }
    match body {
        Some(b) => req.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{b}",
            b.len()
        )),
        None => req.push_str("Content-Length: 0\r\n\r\n"),
    }
    s.write_all(req.as_bytes()).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no HTTP head in {:?}", String::from_utf8_lossy(&raw)));
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("bad status line: {head}"));
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    if headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"))
    {
        let mut out = Vec::new();
        let mut rest = &body[..];
        loop {
            let nl = rest.windows(2).position(|w| w == b"\r\n").unwrap();
            let size =
                usize::from_str_radix(String::from_utf8_lossy(&rest[..nl]).trim(), 16).unwrap();
            rest = &rest[nl + 2..];
            if size == 0 {
                break;
            }
            out.extend_from_slice(&rest[..size]);
            rest = &rest[size + 2..];
        }
        body = out;
    }
    Resp {
        status,
        headers,
        body,
    }
}

/// The value of a Prometheus sample (summed over labels).
fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.strip_prefix(name).is_some_and(|r| {
                r.starts_with(' ') || r.starts_with('{') || r.starts_with("_total")
            })
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Exchange a link's secret for the session cookie (auth on a socket, then
/// `POST /api/v1/auth/cookie` with the ticket).
fn cookie_for(w: &Web, secret: &str) -> String {
    let s = join(w, secret, None, "cookie");
    cookie_from_ticket(w, &s.ticket)
}

fn cookie_from_ticket(w: &Web, ticket: &str) -> String {
    let r = http(
        &w.hostport,
        "POST",
        "/api/v1/auth/cookie",
        None,
        Some(&json!({ "ticket": ticket }).to_string()),
    );
    assert_eq!(r.status, 204, "{}", String::from_utf8_lossy(&r.body));
    let c = r.header("set-cookie").expect("Set-Cookie").to_string();
    assert!(
        c.contains("HttpOnly") && c.contains("SameSite=Strict"),
        "{c}"
    );
    c.strip_prefix("agentos_session=")
        .and_then(|v| v.split(';').next())
        .expect("agentos_session=")
        .to_string()
}

/// Check `v` against an OpenAPI schema (the subset openapi.json uses:
/// type, required, properties, additionalProperties, items, minItems,
/// maxItems, enum, nullable, minimum, $ref).
fn validate(spec: &Value, schema: &Value, v: &Value, at: &str) -> Result<(), String> {
    if let Some(r) = schema.get("$ref").and_then(Value::as_str) {
        let target = spec
            .pointer(r.trim_start_matches('#'))
            .ok_or_else(|| format!("{at}: dangling $ref {r}"))?;
        return validate(spec, target, v, at);
    }
    if v.is_null() {
        return if schema["nullable"] == true || schema.get("type").is_none() {
            Ok(())
        } else {
            Err(format!("{at}: null but not nullable"))
        };
    }
    if let Some(en) = schema.get("enum").and_then(Value::as_array)
        && !en.contains(v)
    {
        return Err(format!("{at}: {v} is not one of {en:?}"));
    }
    if let Some(min) = schema.get("minimum").and_then(Value::as_f64)
        && v.as_f64().is_some_and(|x| x < min)
    {
        return Err(format!("{at}: {v} < {min}"));
    }
    match schema.get("type").and_then(Value::as_str) {
        None => Ok(()),
        Some("object") => {
            let o = v
                .as_object()
                .ok_or_else(|| format!("{at}: {v} is not an object"))?;
            for r in schema["required"].as_array().into_iter().flatten() {
                let r = r.as_str().unwrap();
                if !o.contains_key(r) {
                    return Err(format!("{at}: required property {r} is missing from {v}"));
                }
            }
            let props = schema.get("properties").and_then(Value::as_object);
            for (k, x) in o {
                match props.and_then(|p| p.get(k)) {
                    Some(ps) => validate(spec, ps, x, &format!("{at}.{k}"))?,
                    None if schema["additionalProperties"] == false => {
                        return Err(format!("{at}: property {k} is not in the schema"));
                    }
                    None => {}
                }
            }
            Ok(())
        }
        Some("array") => {
            let a = v
                .as_array()
                .ok_or_else(|| format!("{at}: {v} is not an array"))?;
            if let Some(n) = schema.get("minItems").and_then(Value::as_u64)
                && (a.len() as u64) < n
            {
                return Err(format!("{at}: fewer than {n} items"));
            }
            if let Some(n) = schema.get("maxItems").and_then(Value::as_u64)
                && (a.len() as u64) > n
            {
                return Err(format!("{at}: more than {n} items"));
            }
            if let Some(items) = schema.get("items") {
                for (i, x) in a.iter().enumerate() {
                    validate(spec, items, x, &format!("{at}[{i}]"))?;
                }
            }
            Ok(())
        }
        Some("string") => v
            .is_string()
            .then_some(())
            .ok_or_else(|| format!("{at}: {v} is not a string")),
        Some("integer") => (v.is_u64() || v.is_i64())
            .then_some(())
            .ok_or_else(|| format!("{at}: {v} is not an integer")),
        Some("number") => v
            .is_number()
            .then_some(())
            .ok_or_else(|| format!("{at}: {v} is not a number")),
        Some("boolean") => v
            .is_boolean()
            .then_some(())
            .ok_or_else(|| format!("{at}: {v} is not a boolean")),
        Some(t) => Err(format!("{at}: the checker does not know type {t}")),
    }
}

fn resolve<'a>(spec: &'a Value, v: &'a Value) -> &'a Value {
    match v.get("$ref").and_then(Value::as_str) {
        Some(r) => spec
            .pointer(r.trim_start_matches('#'))
            .unwrap_or_else(|| panic!("dangling $ref {r}")),
        None => v,
    }
}

/// The routes the server declares in rest.rs: (path, method).
fn server_routes() -> BTreeSet<(String, String)> {
    let src = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../node/src/web/rest.rs"),
    )
    .unwrap();
    let router = &src[src.find("pub fn router").expect("router() in rest.rs")..];
    let mut out = BTreeSet::new();
    for part in router.split(".route(\"").skip(1) {
        let (path, rest) = part.split_once('"').unwrap();
        let rest = rest.split(".route(").next().unwrap();
        let rest = rest.split(".fallback(").next().unwrap();
        for m in ["get", "post", "put", "patch", "delete"] {
            if rest.contains(&format!("{m}(")) {
                out.insert((path.to_string(), m.to_string()));
            }
        }
    }
    out
}

fn load_spec() -> Value {
    serde_json::from_str(
        &std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../node/openapi.json"),
        )
        .unwrap(),
    )
    .unwrap()
}

/// Calls the server and checks each answer against openapi.json: the
/// status is one the operation lists, the body fits that response's schema.
struct Conformance {
    spec: Value,
    hostport: String,
    /// (spec path, method) answered with a 2xx.
    seen_ok: BTreeSet<(String, String)>,
}

/// A request body that is not JSON of the spec's schema (sent raw).
enum Body<'a> {
    None,
    Json(&'a Value),
    Raw(&'a str),
}

impl Conformance {
    fn call(
        &mut self,
        method: &str,
        spec_path: &str,
        path: &str,
        cookie: Option<&str>,
        body: Body,
    ) -> Resp {
        let spec = &self.spec;
        let op = &spec["paths"][spec_path][method.to_lowercase()];
        assert!(
            op.is_object(),
            "{method} {spec_path} is not in openapi.json"
        );
        let text = match body {
            Body::None => None,
            Body::Json(b) => {
                if let Some(schema) = op.pointer("/requestBody/content/application~1json/schema") {
                    validate(spec, schema, b, "request").unwrap_or_else(|e| {
                        panic!("our {method} {path} body breaks the spec: {e}")
                    });
                }
                Some(b.to_string())
            }
            Body::Raw(s) => Some(s.to_string()),
        };
        let r = http(&self.hostport, method, path, cookie, text.as_deref());
        let listed: Vec<&String> = op["responses"].as_object().unwrap().keys().collect();
        let Some(resp) = op["responses"].get(r.status.to_string()) else {
            panic!(
                "{method} {path} answered {} which openapi.json does not list for it ({listed:?}); content-type {:?}, body {:?}",
                r.status,
                r.header("content-type").unwrap_or(""),
                String::from_utf8_lossy(&r.body)
            );
        };
        let resp = resolve(spec, resp);
        match resp.get("content").and_then(Value::as_object) {
            None => assert!(
                r.body.is_empty(),
                "{method} {path} {}: the spec has no body",
                r.status
            ),
            Some(content) => {
                let ct = r.header("content-type").unwrap_or("");
                let Some((media, schema)) =
                    content.iter().find(|(k, _)| ct.starts_with(k.as_str()))
                else {
                    panic!(
                        "{method} {path} {}: content-type {ct:?} is not one of {:?}; body {:?}",
                        r.status,
                        content.keys().collect::<Vec<_>>(),
                        String::from_utf8_lossy(&r.body)
                    );
                };
                let schema = &schema["schema"];
                if media == "application/json" {
                    let v = r.json();
                    validate(spec, schema, &v, "$")
                        .unwrap_or_else(|e| panic!("{method} {path} {}: {e}\nbody: {v}", r.status));
                    if r.status >= 400 {
                        let code = v["code"].as_str().unwrap();
                        assert!(
                            code.len() == 4
                                && code.starts_with('E')
                                && code[1..].bytes().all(|b| b.is_ascii_digit()),
                            "{code}"
                        );
                    }
                } else {
                    assert_eq!(schema["type"], "string");
                    assert!(std::str::from_utf8(&r.body).is_ok());
                }
            }
        }
        if (200..300).contains(&r.status) {
            self.seen_ok
                .insert((spec_path.to_string(), method.to_lowercase()));
        }
        r
    }

    /// Every (path, method) of the spec.
    fn ops(&self) -> BTreeSet<(String, String)> {
        let mut ops = BTreeSet::new();
        for (p, item) in self.spec["paths"].as_object().unwrap() {
            for m in item
                .as_object()
                .unwrap()
                .keys()
                .filter(|k| *k != "parameters")
            {
                ops.insert((p.clone(), m.clone()));
            }
        }
        ops
    }
}

#[test]
fn the_rest_api_matches_openapi_json() {
    let w = Web::start(&["t1", "t2"]);
    let spec = load_spec();

    // The checker itself rejects what it should.
    let health = &spec["components"]["schemas"]["Health"];
    assert!(
        validate(
            &spec,
            health,
            &json!({"status": "ok", "version": "1", "protocol": 3}),
            "$"
        )
        .is_ok()
    );
    assert!(
        validate(
            &spec,
            health,
            &json!({"status": "ok", "version": "1", "protocol": 3, "x": 1}),
            "$"
        )
        .is_err()
    );
    assert!(validate(&spec, health, &json!({"status": "ok", "version": "1"}), "$").is_err());
    assert!(
        validate(
            &spec,
            health,
            &json!({"status": "bad", "version": "1", "protocol": 3}),
            "$"
        )
        .is_err()
    );
    assert!(
        validate(
            &spec,
            &json!({"type": "array", "items": {"$ref": "#/components/schemas/Agent"}}),
            &json!([{"name": 1}]),
            "$"
        )
        .is_err()
    );
    assert!(validate(&spec, &spec["components"]["schemas"]["Share"], &json!({"id": "s", "target": "*", "permission": "owner", "created_at_ms": 1, "expires_at_ms": null, "max_uses": null, "uses": 0, "revoked": false, "active": 0}), "$").is_ok());

    // Something to list: a comment with a reply and a reaction, a saved session.
    let mut g = w.guest("t1", "comment", "reactor");
    let m = g.mark();
    g.send_msg(&ClientMsg::CommentAdd {
        agent: "t1".into(),
        line: 1,
        text: "first".into(),
        parent: None,
    });
    let cid = comment_id(&g.expect(m, "comment", |v| v["type"] == "comment_added"));
    g.send_msg(&ClientMsg::CommentAdd {
        agent: "t1".into(),
        line: 1,
        text: "reply".into(),
        parent: Some(CommentId(cid.clone())),
    });
    g.expect(m, "reply", |v| {
        v["type"] == "comment_added" && v["comment"]["parent"] == cid.as_str()
    });
    let m = g.mark();
    g.send_msg(&ClientMsg::CommentReact {
        id: CommentId(cid.clone()),
        emoji: "🎉".into(),
        on: true,
    });
    g.expect(m, "reaction", |v| v["type"] == "comment_updated");
    w.n.ok(&["session", "save", "s1"]);

    let owner = cookie_for(&w, &w.owner);
    let (_, gsecret) = w.share("t1", "view", &[]);
    let guest = cookie_for(&w, &gsecret);
    let o = Some(owner.as_str());
    let gst = Some(guest.as_str());
    let mut c = Conformance {
        spec: spec.clone(),
        hostport: w.hostport.clone(),
        seen_ok: BTreeSet::new(),
    };
    use Body::{Json, None as NoBody};

    // Unauthenticated.
    let r = c.call("GET", "/health", "/health", None, NoBody);
    assert_eq!(r.json()["status"], "ok");
    assert_eq!(r.json()["protocol"], ws::WS_VERSION);
    let r = c.call("GET", "/metrics", "/metrics", None, NoBody);
    let text = String::from_utf8(r.body.clone()).unwrap();
    assert!(text.contains("agentos_ws_connections"), "{text}");
    assert!(
        metric(&text, "agentos_ws_connections") >= 1.0,
        "the reactor's socket is open: {text}"
    );
    let r = c.call(
        "GET",
        "/api/v1/openapi.json",
        "/api/v1/openapi.json",
        None,
        NoBody,
    );
    assert_eq!(r.json(), spec, "the server serves this very document");

    // The cookie exchange.
    let s = join(&w, &w.owner, None, "ticket");
    let ticket = json!({"ticket": s.ticket});
    c.call(
        "POST",
        "/api/v1/auth/cookie",
        "/api/v1/auth/cookie",
        None,
        Json(&ticket),
    );
    let r = c.call(
        "POST",
        "/api/v1/auth/cookie",
        "/api/v1/auth/cookie",
        None,
        Json(&ticket),
    );
    assert_eq!(r.status, 401, "tickets are single use");
    c.call(
        "POST",
        "/api/v1/auth/cookie",
        "/api/v1/auth/cookie",
        None,
        Json(&json!({"ticket": "nope"})),
    );

    // Who am I.
    let me = c.call("GET", "/api/v1/me", "/api/v1/me", o, NoBody).json();
    assert_eq!(
        (me["permission"].as_str(), me["target"].as_str()),
        (Some("owner"), Some("*"))
    );
    let me = c
        .call("GET", "/api/v1/me", "/api/v1/me", gst, NoBody)
        .json();
    assert_eq!(
        (me["permission"].as_str(), me["target"].as_str()),
        (Some("view"), Some("agent:t1"))
    );
    assert_eq!(
        c.call("GET", "/api/v1/me", "/api/v1/me", None, NoBody)
            .status,
        401
    );
    assert_eq!(
        c.call("GET", "/api/v1/me", "/api/v1/me", Some("forged"), NoBody)
            .status,
        401
    );

    // Agents: the owner sees both, the guest only t1.
    let names = |v: Value| -> Vec<String> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|a| a["name"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(
        names(
            c.call("GET", "/api/v1/agents", "/api/v1/agents", o, NoBody)
                .json()
        ),
        ["t1", "t2"]
    );
    assert_eq!(
        names(
            c.call("GET", "/api/v1/agents", "/api/v1/agents", gst, NoBody)
                .json()
        ),
        ["t1"]
    );
    assert_eq!(
        c.call("GET", "/api/v1/agents", "/api/v1/agents", None, NoBody)
            .status,
        401
    );
    let a = c
        .call(
            "GET",
            "/api/v1/agents/{name}",
            "/api/v1/agents/t1",
            o,
            NoBody,
        )
        .json();
    assert_eq!(a["agent_type"], "command");
    assert_eq!(
        c.call(
            "GET",
            "/api/v1/agents/{name}",
            "/api/v1/agents/t2",
            gst,
            NoBody
        )
        .status,
        404
    );
    assert_eq!(
        c.call(
            "GET",
            "/api/v1/agents/{name}",
            "/api/v1/agents/nope",
            o,
            NoBody
        )
        .status,
        404
    );
    assert_eq!(
        c.call(
            "GET",
            "/api/v1/agents/{name}",
            "/api/v1/agents/t1",
            None,
            NoBody
        )
        .status,
        401
    );

    // Comments (with a reply and a reaction: `parent`, `reactions`).
    let cs = c
        .call(
            "GET",
            "/api/v1/agents/{name}/comments",
            "/api/v1/agents/t1/comments",
            gst,
            NoBody,
        )
        .json();
    assert_eq!(cs.as_array().unwrap().len(), 2, "{cs}");
    assert!(
        cs[1]["parent"] == cid.as_str() && cs[0]["reactions"] == json!([["🎉", ["reactor"]]]),
        "{cs}"
    );
    assert_eq!(
        c.call(
            "GET",
            "/api/v1/agents/{name}/comments",
            "/api/v1/agents/t2/comments",
            gst,
            NoBody
        )
        .status,
        404
    );
    assert_eq!(
        c.call(
            "GET",
            "/api/v1/agents/{name}/comments",
            "/api/v1/agents/t1/comments",
            None,
            NoBody
        )
        .status,
        401
    );

    // Files: the agent's working tree, nothing outside it.
    std::fs::create_dir_all(w.n.work.join("sub")).unwrap();
    std::fs::write(w.n.work.join("sub/f.txt"), "hello").unwrap();
    let fs = c
        .call(
            "GET",
            "/api/v1/agents/{name}/files",
            "/api/v1/agents/t1/files",
            gst,
            NoBody,
        )
        .json();
    assert!(
        fs.as_array()
            .unwrap()
            .iter()
            .any(|f| f["name"] == "rc.sh" && f["kind"] == "file"),
        "{fs}"
    );
    assert_eq!(fs[0]["kind"], "dir", "directories first: {fs}");
    let fs = c
        .call(
            "GET",
            "/api/v1/agents/{name}/files",
            "/api/v1/agents/t1/files?path=sub",
            gst,
            NoBody,
        )
        .json();
    assert_eq!(fs, json!([{"name": "f.txt", "kind": "file", "size": 5}]));
    for bad in ["../..", "missing", "/../../etc"] {
        let p = format!("/api/v1/agents/t1/files?path={bad}");
        assert_eq!(
            c.call("GET", "/api/v1/agents/{name}/files", &p, gst, NoBody)
                .status,
            400,
            "{p}"
        );
    }
    assert_eq!(
        c.call(
            "GET",
            "/api/v1/agents/{name}/files",
            "/api/v1/agents/t2/files",
            gst,
            NoBody
        )
        .status,
        404
    );
    assert_eq!(
        c.call(
            "GET",
            "/api/v1/agents/{name}/files",
            "/api/v1/agents/t1/files",
            None,
            NoBody
        )
        .status,
        401
    );

    // Sessions.
    let ss = c
        .call("GET", "/api/v1/sessions", "/api/v1/sessions", o, NoBody)
        .json();
    assert_eq!(ss[0]["name"], "s1", "{ss}");
    assert_eq!(
        c.call("GET", "/api/v1/sessions", "/api/v1/sessions", gst, NoBody)
            .json(),
        json!([])
    );
    assert_eq!(
        c.call("GET", "/api/v1/sessions", "/api/v1/sessions", None, NoBody)
            .status,
        401
    );

    // Shares: the owner's only.
    let shares = c
        .call("GET", "/api/v1/shares", "/api/v1/shares", o, NoBody)
        .json();
    assert!(shares.as_array().unwrap().len() >= 3, "{shares}");
    assert_eq!(
        c.call("GET", "/api/v1/shares", "/api/v1/shares", gst, NoBody)
            .status,
        403
    );
    assert_eq!(
        c.call("GET", "/api/v1/shares", "/api/v1/shares", None, NoBody)
            .status,
        401
    );
    let new = json!({"target": "agent:t1", "permission": "comment", "expires_in_secs": 600, "max_uses": 3});
    let r = c.call("POST", "/api/v1/shares", "/api/v1/shares", o, Json(&new));
    assert_eq!(r.status, 201);
    let created = r.json();
    assert_eq!(
        (created["permission"].as_str(), created["max_uses"].as_u64()),
        (Some("comment"), Some(3))
    );
    let sid = created["id"].as_str().unwrap().to_string();
    // The link it returns works.
    join(
        &w,
        &secret_of(created["url"].as_str().unwrap()),
        None,
        "via-rest",
    );
    let one = json!({"target": "agent:t2", "permission": "view", "one_time": true});
    assert_eq!(
        c.call("POST", "/api/v1/shares", "/api/v1/shares", o, Json(&one))
            .json()["max_uses"],
        1
    );
    let nope = json!({"target": "agent:nope", "permission": "view"});
    assert_eq!(
        c.call("POST", "/api/v1/shares", "/api/v1/shares", o, Json(&nope))
            .status,
        404
    );
    let bad_target = json!({"target": "disk:/", "permission": "view"});
    assert_eq!(
        c.call(
            "POST",
            "/api/v1/shares",
            "/api/v1/shares",
            o,
            Json(&bad_target)
        )
        .status,
        400
    );
    assert_eq!(
        c.call("POST", "/api/v1/shares", "/api/v1/shares", gst, Json(&new))
            .status,
        403
    );
    assert_eq!(
        c.call("POST", "/api/v1/shares", "/api/v1/shares", None, Json(&new))
            .status,
        401
    );
    let path = format!("/api/v1/shares/{sid}");
    assert_eq!(
        c.call("DELETE", "/api/v1/shares/{id}", &path, gst, NoBody)
            .status,
        403
    );
    assert_eq!(
        c.call("DELETE", "/api/v1/shares/{id}", &path, None, NoBody)
            .status,
        401
    );
    assert_eq!(
        c.call("DELETE", "/api/v1/shares/{id}", &path, o, NoBody)
            .status,
        204
    );
    let shares = c
        .call("GET", "/api/v1/shares", "/api/v1/shares", o, NoBody)
        .json();
    assert!(
        shares
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["id"] == sid.as_str() && s["revoked"] == true)
    );
    // The guest's cookie stops working when its link is revoked.
    let gid = shares
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["target"] == "agent:t1" && s["permission"] == "view")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    c.call(
        "DELETE",
        "/api/v1/shares/{id}",
        &format!("/api/v1/shares/{gid}"),
        o,
        NoBody,
    );
    assert_eq!(
        c.call("GET", "/api/v1/me", "/api/v1/me", gst, NoBody)
            .status,
        401
    );

    // Every operation of the spec answered with success at least once.
    let ops = c.ops();
    let missing: Vec<_> = ops.difference(&c.seen_ok).collect();
    assert!(missing.is_empty(), "never called successfully: {missing:?}");

    // The server's routes are exactly the spec's (the WebSocket is ws.rs's).
    let mut routes = server_routes();
    assert!(
        routes.remove(&("/ws".to_string(), "get".to_string())),
        "the WebSocket route"
    );
    assert_eq!(routes, ops, "routes in rest.rs vs paths in openapi.json");
    // Methods the spec does not list are refused.
    for (p, item) in spec["paths"].as_object().unwrap() {
        let path = p.replace("{name}", "t1").replace("{id}", &sid);
        for m in ["get", "post", "put", "patch", "delete"] {
            if item.get(m).is_none() {
                let r = http(&w.hostport, &m.to_uppercase(), &path, o, None);
                assert_eq!(r.status, 405, "{m} {path}");
            }
        }
    }
    drop(g);
}

#[test]
fn unknown_routes_and_bad_bodies_get_answers_the_spec_lists() {
    let w = Web::start(&["t1"]);
    let owner = cookie_for(&w, &w.owner);
    let o = Some(owner.as_str());
    let mut c = Conformance {
        spec: load_spec(),
        hostport: w.hostport.clone(),
        seen_ok: BTreeSet::new(),
    };
    // Every problem is collected, then reported together.
    let mut problems: Vec<String> = Vec::new();
    let mut check = |what: &str, f: &mut dyn FnMut()| {
        if let Err(e) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
            let msg = e
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            problems.push(format!("{what}: {msg}"));
        }
    };
    // Request bodies that break the spec's schema get one of the
    // operation's listed statuses, with the Error schema.
    use Body::Raw;
    for body in [
        r#"{"target": "agent:t1"}"#,
        r#"{"target": "agent:t1", "permission": "root"}"#,
        r#"{"target": "agent:t1", "permission": "view", "max_uses": -1}"#,
        "not json",
    ] {
        check(&format!("POST /api/v1/shares {body}"), &mut || {
            c.call("POST", "/api/v1/shares", "/api/v1/shares", o, Raw(body));
        });
    }
    for body in [r#"{"ticket": 5}"#, "{}", ""] {
        check(&format!("POST /api/v1/auth/cookie {body:?}"), &mut || {
            c.call(
                "POST",
                "/api/v1/auth/cookie",
                "/api/v1/auth/cookie",
                None,
                Raw(body),
            );
        });
    }
    // Paths under /api/v1 the spec does not have are not answered as if
    // they existed (index.html is for the web client's own routes).
    for path in ["/api/v1/nope", "/api/v1/agents/t1/nope", "/api/v1/me/x"] {
        check(&format!("GET {path}"), &mut || {
            let r = http(&w.hostport, "GET", path, o, None);
            assert_eq!(
                r.status,
                404,
                "not in openapi.json but answers {} ({})",
                r.status,
                r.header("content-type").unwrap_or("")
            );
            let spec = load_spec();
            validate(
                &spec,
                &spec["components"]["schemas"]["Error"],
                &r.json(),
                "$",
            )
            .unwrap();
        });
    }
    assert!(
        problems.is_empty(),
        "{} problems:\n{}",
        problems.len(),
        problems.join("\n")
    );
}

// ------------------------------------------------------ 8. bad input ---

#[test]
fn malformed_input_gets_e007_and_nothing_breaks() {
    let w = Web::start(&["t1"]);
    let pid = w.n.daemon_pid().unwrap();
    let mut e = w.guest("t1", "edit", "erin");
    let (ch, ..) = e.subscribe("t1", None);
    let mut bystander = w.guest("t1", "view", "bystander");

    let mut garbage: Vec<u8> = (0..200u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    garbage[0] = 0xab;
    let binary: Vec<(&str, Vec<u8>)> = vec![
        ("shorter than a header", vec![3, 0, 0]),
        ("unknown frame type", vec![9, 0, 0, 0, 0, 0]),
        ("length mismatch", vec![3, ch, 0, 0, 0, 5, b'x']),
        (
            "claims more than MAX_PAYLOAD",
            vec![3, ch, 0xff, 0xff, 0xff, 0xff],
        ),
        (
            "input over MAX_INPUT",
            ws::encode_input(Channel(ch), &vec![b'a'; ws::MAX_INPUT + 1]),
        ),
        (
            "an output frame from a client",
            ws::encode_output(Channel(ch), 0, b"x"),
        ),
        (
            "a snapshot frame from a client",
            ws::encode_snapshot(Channel(ch), 0, 80, 24, 1, b"x"),
        ),
        ("garbage", garbage),
    ];
    for (what, b) in binary {
        let m = e.mark();
        e.send_bin(b);
        let p = e.ping();
        let err = e.log[m..p]
            .iter()
            .find_map(|x| match x {
                Ev::Text(v) if v["type"] == "error" => Some(v.clone()),
                _ => None,
            })
            .unwrap_or_else(|| panic!("{what}: no error; received:\n{}", e.dump(m)));
        assert_eq!(err["code"], "E007", "{what}: {err}");
    }
    let mut big = String::from(r#"{"type":"ping","pad":""#);
    big.push_str(&"x".repeat(ws::MAX_CONTROL));
    big.push_str("\"}");
    let text: Vec<(&str, String)> = vec![
        ("unknown type", r#"{"type":"format_disk"}"#.into()),
        ("unknown field", r#"{"type":"ping","extra":1}"#.into()),
        ("no type", r#"{"agent":"t1"}"#.into()),
        (
            "a field of the wrong type",
            r#"{"type":"terminal_resize","agent":"t1","cols":"wide","rows":1}"#.into(),
        ),
        ("not JSON", "{{{".into()),
        ("over MAX_CONTROL", big),
    ];
    for (what, t) in text {
        let m = e.mark();
        e.send_text(&t);
        let p = e.ping();
        let err = e.log[m..p]
            .iter()
            .find_map(|x| match x {
                Ev::Text(v) if v["type"] == "error" => Some(v.clone()),
                _ => None,
            })
            .unwrap_or_else(|| panic!("{what}: no error; received:\n{}", e.dump(m)));
        assert_eq!(err["code"], "E007", "{what}: {err}");
    }
    // The socket still works: input reaches the agent.
    e.type_in(ch, "echo STILL-$((6*7))\r");
    w.wait_logs("t1", "STILL-42");

    // Well-formed but pointless: an agent not in the session, a channel
    // with no terminal.
    let m = e.mark();
    e.send_msg(&ClientMsg::TerminalSubscribe {
        agent: "nope".into(),
        since: None,
    });
    let p = e.ping();
    assert_eq!(
        e.refusal(m, p, "terminal_subscribe")
            .expect("unknown agent")["code"],
        "E002"
    );
    let m = e.mark();
    e.type_in(200, "x");
    let p = e.ping();
    assert_eq!(
        e.refusal(m, p, "input").expect("no such channel")["code"],
        "E012"
    );

    // A cross-site page cannot open a socket (the cookie would ride along).
    {
        use tungstenite::client::IntoClientRequest;
        let mut req = format!("ws://{}/ws", w.hostport)
            .into_client_request()
            .unwrap();
        req.headers_mut()
            .insert("origin", "http://evil.example".parse().unwrap());
        let tcp = TcpStream::connect(&w.hostport).unwrap();
        match tungstenite::client(req, tcp) {
            Err(tungstenite::HandshakeError::Failure(tungstenite::Error::Http(r))) => {
                assert_eq!(r.status(), 403)
            }
            Err(e) => panic!("cross-origin upgrade: {e}"),
            Ok(_) => panic!("a cross-origin upgrade was accepted"),
        }
    }

    // Before auth: a bad first message is E007 and the socket closes.
    for first in [Message::binary(vec![1u8, 2, 3]), Message::text("{{{")] {
        let mut s = Ws::connect(&w.hostport, None, "pre-auth");
        s.sock.send(first).unwrap();
        let err = s.expect_type(0, "error");
        assert_eq!(err["code"], "E007", "{err}");
        let (_, code) = s.expect_close(0);
        assert_eq!(code, ws::AUTH_FAILED);
    }

    // Far beyond the WebSocket's message limit: that socket goes, nothing else.
    let mut huge = join(&w, &w.owner, Some("agent:t1"), "huge");
    let _ = huge.sock.send(Message::text("x".repeat(4 * 1024 * 1024)));
    let (_, code) = huge.expect_close(0);
    assert_eq!(code, ws::TOO_BIG, "closed as too big");
    let err = huge.log.iter().find_map(|e| match e {
        Ev::Text(v) if v["type"] == "error" => Some(v.clone()),
        _ => None,
    });
    let err = err.expect("an error before the close");
    assert_eq!(err["code"], "E007", "{err}");
    assert!(err["message"].as_str().unwrap().contains("limit"), "{err}");
    e.ping();
    bystander.ping();
    let mut fresh = w.guest("t1", "view", "fresh");
    fresh.ping();
    assert_eq!(w.n.daemon_pid(), Some(pid));
    assert!(alive(pid));
    assert_eq!(http(&w.hostport, "GET", "/health", None, None).status, 200);
    assert_eq!(w.n.agent("t1")["live"], true);
}
