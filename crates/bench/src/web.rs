//! Web viewers under load (`--only web`): one agent prints ~10 MB/s while
//! N = 1, 10 and 50 WebSocket viewers (protocol v3, one view link) watch
//! it, against tmux with N `tmux attach` clients on the same output. Also
//! the owner's keystroke echo on a second agent, over its own WebSocket,
//! while the viewers watch the flood, and the same with one viewer that
//! reads slowly (it must not slow anyone else; it gets resync snapshots).
//!
//! The daemon is the harness's own (`AGENTOS_WEB_LISTEN=127.0.0.1:0`, set
//! by `main`); the base URL comes from `agentos web --json`. Each condition
//! connects its viewers, waits until every one has painted its first
//! snapshot, opens the flooder's gate (a file it polls: tmux resumes a
//! stopped pane by itself, so SIGSTOP cannot gate it) for a warm-up and a
//! measuring window, then closes the gate and the viewers. The flooder
//! reports how many bytes it wrote in a progress file, so the producer's
//! achieved rate is read the same way for both systems.
//!
//! All AgentOS viewers run in one current-thread tokio runtime on the
//! harness's main thread (at most one core); the owner's echo client runs
//! on a thread of its own so that its timing never waits behind the
//! viewers' reads. tmux clients are real `tmux attach` processes in PTYs,
//! each drained by a harness thread.

use crate::bench::{Ctx, progress};
use crate::report::Row;
use crate::stats::{Unit, fmt_bytes, fmt_time, median, percentile};
use crate::systems::{TIMEOUT, proc_kb, wait_until};
use crate::term::Term;
use agentos_proto::ws::{self, Channel, ClientMsg, Frame, ServerMsg};
use futures::{SinkExt, StreamExt};
use portable_pty::{CommandBuilder, PtySize, native_pty_system};
use std::io::{Read, Write};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message;

/// The flooder's target rate (bytes of program output per second).
const RATE: u64 = 10_000_000;
/// How long the flooder runs before a window starts.
const WARMUP: Duration = Duration::from_millis(500);
/// The slow viewer's pause between two reads.
const THROTTLE: Duration = Duration::from_millis(50);
/// Pause between two echo samples.
const ECHO_GAP: Duration = Duration::from_millis(10);

/// Writes `RATE` bytes/s of base64 lines in 64 KiB writes, paced, while
/// the gate file `argv[3]` exists (polled every 10 ms while closed); never
/// bursts to catch up after a pause or a stall. After each write it
/// records the bytes written so far at the start of `argv[2]`.
const FLOOD_PY: &str = r#"
import base64, os, sys, time
rate, prog, gate = float(sys.argv[1]), sys.argv[2], sys.argv[3]
raw = base64.b64encode(os.urandom(49152)).decode()
chunk = ('\n'.join(raw[i:i + 76] for i in range(0, len(raw), 76)) + '\n').encode()[:65536]
fd = os.open(prog, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
os.pwrite(fd, b'%20d\n' % 0, 0)
sent, base, t0, paused = 0, 0, time.monotonic(), True
while True:
    if not os.path.exists(gate):
        os.pwrite(fd, b'%20d\n' % sent, 0)
        paused = True
        time.sleep(0.01)
        continue
    if paused:
        t0, base, paused = time.monotonic(), sent, False
    mv = memoryview(chunk)
    while mv:
        mv = mv[os.write(1, mv):]
    sent += len(chunk)
    os.pwrite(fd, b'%20d\n' % sent, 0)
    now = time.monotonic()
    ahead = (sent - base) / rate - (now - t0)
    if ahead > 0:
        time.sleep(ahead)
    elif ahead < -0.2:
        t0, base = now, sent
"#;

/// One measured condition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Cond {
    /// Viewers reading as fast as they can.
    viewers: usize,
    /// Plus one viewer that sleeps [`THROTTLE`] between reads.
    throttled: bool,
    /// The flooder runs during the window.
    flood: bool,
}

impl Cond {
    fn label(self) -> String {
        match (self.flood, self.viewers, self.throttled) {
            (false, _, _) => "idle (no output, no viewers)".into(),
            (true, 0, _) => "flooding, no viewers".into(),
            (true, n, false) => format!("flooding, {n} viewer{}", if n == 1 { "" } else { "s" }),
            (true, n, true) => format!("flooding, {n} viewers + 1 throttled"),
        }
    }
}

const CONDS: [Cond; 6] = [
    Cond {
        viewers: 0,
        throttled: false,
        flood: false,
    },
    Cond {
        viewers: 0,
        throttled: false,
        flood: true,
    },
    Cond {
        viewers: 1,
        throttled: false,
        flood: true,
    },
    Cond {
        viewers: 10,
        throttled: false,
        flood: true,
    },
    Cond {
        viewers: 50,
        throttled: false,
        flood: true,
    },
    Cond {
        viewers: 10,
        throttled: true,
        flood: true,
    },
];

/// What one condition measured, for one system.
#[derive(Debug, Clone, Default)]
struct Outcome {
    /// Bytes/s received by each fast viewer during the window.
    per_viewer: Vec<f64>,
    /// Bytes/s received by the throttled viewer.
    throttled_rate: Option<f64>,
    /// Snapshot frames the throttled viewer got since it connected
    /// (the first paint included).
    throttled_snapshots: u64,
    /// How far (bytes of output) the throttled viewer was behind the
    /// fastest one at the end of the window.
    throttled_behind: u64,
    /// Frames the fast viewers received during the window.
    frames: u64,
    /// Resync snapshots (after the first) the fast viewers got.
    resyncs: u64,
    /// Output frames whose sequence number did not continue the stream
    /// without a snapshot in between (must be 0).
    gaps: u64,
    /// The flooder's achieved rate (bytes/s).
    producer: f64,
    /// Server CPU (daemon + holders / tmux server), in cores.
    server_cpu: f64,
    /// The clients' CPU (the harness / the `tmux attach` processes), in cores.
    client_cpu: f64,
    /// Echo samples (seconds).
    echo: Vec<f64>,
    /// The echo samples during which an `input_by` notice (a text message)
    /// arrived before the echo.
    echo_after_notice: Vec<f64>,
    /// Time to connect and paint every viewer.
    join: Duration,
    /// Server-side frames and bytes sent during the window (`/metrics`).
    frames_sent: u64,
    bytes_sent: u64,
    /// Bytes queued in the kernel for the throttled viewer at the end of
    /// the window: the server socket's send queue, the client's receive
    /// queue.
    send_queue: u64,
    recv_queue: u64,
    /// The window's length (s).
    dt: f64,
    /// When the throttled viewer got its first resync snapshot, counted
    /// from the moment the flood started; `None`: not within the wait.
    resync_after: Option<Duration>,
    /// How long the harness waited for that resync at most.
    resync_wait: Duration,
    /// Daemon VmRSS and VmHWM after the window (bytes).
    rss: u64,
    hwm: u64,
    /// tmux only: bytes the server discarded for clients it judged too
    /// slow (they get a redraw instead), per second.
    discarded: f64,
    /// Things that went wrong (closed viewers, errors).
    trouble: Vec<String>,
}

impl Outcome {
    fn total(&self) -> f64 {
        self.per_viewer.iter().sum()
    }
}

fn mbs(b: f64) -> String {
    format!("{:.1} MB/s", b / 1e6)
}

fn clk_tck() -> f64 {
    // SAFETY: sysconf(3) has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as f64 } else { 100.0 }
}

/// CPU ticks (user + system) of `pids` (`"self"` works too).
fn ticks(pids: &[String]) -> u64 {
    pids.iter()
        .filter_map(|p| std::fs::read_to_string(format!("/proc/{p}/stat")).ok())
        .map(|s| {
            let f: Vec<&str> = s
                .rsplit(')')
                .next()
                .unwrap_or("")
                .split_whitespace()
                .collect();
            f.get(11).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
                + f.get(12).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
        })
        .sum()
}

/// The flooder's gate: it writes while the file exists.
struct Gate(std::path::PathBuf);

impl Gate {
    fn open(&self) {
        std::fs::write(&self.0, b"").expect("cannot create the gate file");
    }

    fn close(&self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

impl Drop for Gate {
    fn drop(&mut self) {
        self.close();
    }
}

/// Waits until the flooder has written its progress file (it runs).
fn wait_flooder(prog: &Path) {
    wait_until(
        &format!("the flooder to write {}", prog.display()),
        TIMEOUT,
        || std::fs::read_to_string(prog).is_ok_and(|s| s.trim().parse::<u64>().is_ok()),
    );
}

fn read_progress(path: &Path) -> u64 {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

/// `GET /metrics` over plain HTTP/1.0: (frames sent, bytes sent).
fn ws_counters(hostport: &str) -> (u64, u64) {
    let get = || -> std::io::Result<String> {
        let mut s = std::net::TcpStream::connect(hostport)?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        s.write_all(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")?;
        let mut out = String::new();
        s.read_to_string(&mut out)?;
        Ok(out)
    };
    let text = get().unwrap_or_default();
    let val = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0) as u64
    };
    (
        val("agentos_ws_frames_sent_total"),
        val("agentos_ws_bytes_sent_total"),
    )
}

/// `(server send queue, client receive queue)` in bytes of the loopback
/// TCP connection whose client end has local port `port`, from
/// `/proc/net/tcp` (`tx_queue:rx_queue`, hex).
fn socket_queues(port: u16) -> (u64, u64) {
    let text = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    let port_of = |addr: &str| {
        addr.split_once(':')
            .and_then(|(_, p)| u16::from_str_radix(p, 16).ok())
    };
    let (mut send, mut recv) = (0, 0);
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 5 {
            continue;
        }
        let Some((tx, rx)) = f[4].split_once(':') else {
            continue;
        };
        let (tx, rx) = (
            u64::from_str_radix(tx, 16).unwrap_or(0),
            u64::from_str_radix(rx, 16).unwrap_or(0),
        );
        if port_of(f[1]) == Some(port) {
            recv = rx;
        } else if port_of(f[2]) == Some(port) {
            send = tx;
        }
    }
    (send, recv)
}

/// A fresh current-thread runtime.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Connect and authenticate; returns the socket after `auth_ok`.
async fn connect(url: &str, auth: &ClientMsg) -> Result<Ws, String> {
    // TCP_NODELAY on the client: only the server's own Nagle can delay a
    // small frame.
    let (mut ws, _) = tokio_tungstenite::connect_async_with_config(url, None, true)
        .await
        .map_err(|e| format!("connect {url}: {e}"))?;
    let json = serde_json::to_string(auth).expect("auth serialises");
    ws.send(Message::Text(json.into()))
        .await
        .map_err(|e| format!("send auth: {e}"))?;
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) => match ws::decode_server(&t) {
                Ok(ServerMsg::AuthOk { .. }) => return Ok(ws),
                Ok(ServerMsg::Error { code, message, .. }) => {
                    return Err(format!("auth refused: {code} {message}"));
                }
                _ => {}
            },
            Some(Ok(_)) => {}
            other => return Err(format!("socket ended during auth: {other:?}")),
        }
    }
}

fn subscribe(agent: &str) -> Message {
    let m = ClientMsg::TerminalSubscribe {
        agent: agent.into(),
        since: None,
    };
    Message::Text(serde_json::to_string(&m).expect("serialises").into())
}

/// Counters of one viewer, updated as it reads.
#[derive(Debug, Default)]
struct ViewerStats {
    /// Binary message bytes (frames with their headers).
    bytes: AtomicU64,
    frames: AtomicU64,
    /// Sequence number just past the last output byte read.
    end_seq: AtomicU64,
    snapshots: AtomicU64,
    gaps: AtomicU64,
    painted: AtomicBool,
    /// The client socket's local port (to find it in `/proc/net/tcp`).
    port: AtomicU64,
    trouble: Mutex<Vec<String>>,
}

impl ViewerStats {
    fn trouble(&self, what: String) {
        self.trouble.lock().expect("viewer stats").push(what);
    }
}

/// One web viewer: authenticates with the view link, subscribes to
/// `agent`, and reads until `stop` (sleeping `throttle` between reads).
async fn viewer(
    url: String,
    secret: String,
    agent: String,
    throttle: Option<Duration>,
    st: Arc<ViewerStats>,
    mut stop: watch::Receiver<bool>,
) {
    let auth = ClientMsg::Auth {
        token: Some(secret),
        target: None,
        name: Some("bench-viewer".into()),
        device: Some("bench".into()),
    };
    let mut ws = match connect(&url, &auth).await {
        Ok(ws) => ws,
        Err(e) => return st.trouble(e),
    };
    if let tokio_tungstenite::MaybeTlsStream::Plain(s) = ws.get_ref()
        && let Ok(a) = s.local_addr()
    {
        st.port.store(u64::from(a.port()), Ordering::Relaxed);
    }
    if let Err(e) = ws.send(subscribe(&agent)).await {
        return st.trouble(format!("subscribe: {e}"));
    }
    let mut next_seq: Option<u64> = None;
    loop {
        if *stop.borrow() {
            break;
        }
        let msg = tokio::select! {
            m = ws.next() => m,
            _ = stop.changed() => break,
        };
        match msg {
            Some(Ok(Message::Binary(b))) => {
                st.bytes.fetch_add(b.len() as u64, Ordering::Relaxed);
                st.frames.fetch_add(1, Ordering::Relaxed);
                match ws::decode_frame(&b) {
                    Ok(Frame::Snapshot { seq, .. }) => {
                        st.snapshots.fetch_add(1, Ordering::Relaxed);
                        next_seq = Some(seq);
                        st.painted.store(true, Ordering::Release);
                    }
                    Ok(Frame::Output { seq, data, .. }) => {
                        if next_seq.is_some_and(|n| n != seq) {
                            st.gaps.fetch_add(1, Ordering::Relaxed);
                        }
                        next_seq = Some(seq + data.len() as u64);
                        st.end_seq.store(seq + data.len() as u64, Ordering::Relaxed);
                    }
                    Ok(Frame::Input { .. }) => st.trouble("the node sent an input frame".into()),
                    Err(e) => st.trouble(format!("bad frame: {e}")),
                }
            }
            Some(Ok(Message::Text(t))) => {
                if let Ok(ServerMsg::Error { code, message, .. }) = ws::decode_server(&t) {
                    st.trouble(format!("{code} {message}"));
                }
            }
            Some(Ok(Message::Close(c))) => {
                st.trouble(format!("closed by the node: {c:?}"));
                return;
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => return st.trouble(format!("read: {e}")),
            None => return st.trouble("socket ended".into()),
        }
        if let Some(d) = throttle {
            tokio::select! {
                _ = tokio::time::sleep(d) => {}
                _ = stop.changed() => break,
            }
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(2), ws.close(None)).await;
}

/// The owner's echo client: its own thread and runtime, an owner
/// WebSocket on `agent:<echo>`. Each request is a deadline; the answer is
/// the echo samples (seconds) taken until then.
struct Owner {
    cmd: tokio::sync::mpsc::Sender<Instant>,
    res: std::sync::mpsc::Receiver<Result<Vec<(f64, bool)>, String>>,
}

impl Owner {
    fn start(url: String, secret: String, agent: String) -> Owner {
        let (cmd, mut cmd_rx) = tokio::sync::mpsc::channel::<Instant>(1);
        let (res_tx, res) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("web-owner".into())
            .spawn(move || {
                runtime().block_on(async move {
                    let auth = ClientMsg::Auth {
                        token: Some(secret),
                        target: Some(format!("agent:{agent}")),
                        name: Some("bench-owner".into()),
                        device: Some("bench".into()),
                    };
                    let ready = async {
                        let mut ws = connect(&url, &auth).await?;
                        ws.send(subscribe(&agent))
                            .await
                            .map_err(|e| e.to_string())?;
                        let mut channel = None;
                        loop {
                            match ws.next().await {
                                Some(Ok(Message::Text(t))) => {
                                    if let Ok(ServerMsg::TerminalSubscribed {
                                        channel: c, ..
                                    }) = ws::decode_server(&t)
                                    {
                                        channel = Some(c);
                                    }
                                }
                                Some(Ok(Message::Binary(b))) => {
                                    if let (Ok(Frame::Snapshot { .. }), Some(c)) =
                                        (ws::decode_frame(&b), channel)
                                    {
                                        return Ok::<_, String>((ws, c));
                                    }
                                }
                                Some(Ok(_)) => {}
                                other => return Err(format!("owner socket ended: {other:?}")),
                            }
                        }
                    };
                    let (mut ws, channel) = match tokio::time::timeout(TIMEOUT, ready).await {
                        Ok(Ok(x)) => x,
                        Ok(Err(e)) => {
                            let _ = res_tx.send(Err(e));
                            return;
                        }
                        Err(_) => {
                            let _ = res_tx.send(Err("owner: no snapshot in time".into()));
                            return;
                        }
                    };
                    let _ = res_tx.send(Ok(Vec::new()));
                    let mut i = 0u32;
                    while let Some(deadline) = cmd_rx.recv().await {
                        let mut v = Vec::new();
                        let mut err = None;
                        while Instant::now() < deadline {
                            let ch = b'a' + (i % 26) as u8;
                            i += 1;
                            match echo_once(&mut ws, channel, ch).await {
                                Ok((d, notice)) => v.push((d.as_secs_f64(), notice)),
                                Err(e) => {
                                    err = Some(e);
                                    break;
                                }
                            }
                            tokio::time::sleep(ECHO_GAP).await;
                        }
                        let _ = res_tx.send(match err {
                            Some(e) => Err(e),
                            None => Ok(v),
                        });
                    }
                    let _ = ws.close(None).await;
                });
            })
            .expect("cannot start the owner thread");
        let o = Owner { cmd, res };
        match o.res.recv_timeout(TIMEOUT * 2) {
            Ok(Ok(_)) => o,
            Ok(Err(e)) => panic!("web: the owner's echo client failed: {e}"),
            Err(e) => panic!("web: the owner's echo client never got ready: {e}"),
        }
    }

    /// Ask for echo samples until `deadline`.
    fn request(&self, deadline: Instant) {
        self.cmd
            .try_send(deadline)
            .expect("the owner's echo client is busy or gone");
    }

    /// The samples of the last request (polled, so that the viewers on the
    /// caller's runtime keep reading meanwhile).
    async fn collect(&self) -> Vec<(f64, bool)> {
        let deadline = Instant::now() + TIMEOUT * 2;
        loop {
            match self.res.try_recv() {
                Ok(Ok(v)) => return v,
                Ok(Err(e)) => panic!("web: echo through the owner's WebSocket failed: {e}"),
                Err(std::sync::mpsc::TryRecvError::Disconnected) => {
                    panic!("web: the owner's echo client is gone")
                }
                Err(std::sync::mpsc::TryRecvError::Empty) => {
                    assert!(Instant::now() < deadline, "web: no echo samples in time");
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            }
        }
    }
}

/// One keystroke through the owner's socket: an input frame, then read
/// until an output frame carries it back.
async fn echo_once(ws: &mut Ws, channel: Channel, ch: u8) -> Result<(Duration, bool), String> {
    let t0 = Instant::now();
    let mut notice = false;
    ws.send(Message::Binary(ws::encode_input(channel, &[ch]).into()))
        .await
        .map_err(|e| format!("send input: {e}"))?;
    let wait = async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Binary(b))) => match ws::decode_frame(&b) {
                    Ok(Frame::Output { data, .. }) if data.contains(&ch) => {
                        return Ok((t0.elapsed(), notice));
                    }
                    _ => {}
                },
                Some(Ok(Message::Text(t))) => match ws::decode_server(&t) {
                    Ok(ServerMsg::Error { code, message, .. }) => {
                        return Err(format!("{code} {message}"));
                    }
                    _ => notice = true,
                },
                Some(Ok(_)) => {}
                other => return Err(format!("owner socket ended: {other:?}")),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), wait)
        .await
        .map_err(|_| format!("no echo of {:?} within 10 s", ch as char))?
}

/// Pause until the server's processes stop using CPU (a backlog drained).
fn settle(pids: &[String]) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut last = ticks(pids);
    let mut still = 0;
    while still < 2 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
        let now = ticks(pids);
        if now <= last + 1 {
            still += 1;
        } else {
            still = 0;
        }
        last = now;
    }
}

fn aos_pids(ctx: &Ctx) -> Vec<String> {
    let mut v: Vec<String> = ctx
        .aos
        .daemon_pid()
        .into_iter()
        .map(|p| p.to_string())
        .collect();
    v.extend(ctx.aos.live_holders().into_iter().map(|p| p.to_string()));
    v
}

/// The AgentOS side: every condition in turn.
fn agentos_side(ctx: &Ctx, window: Duration) -> Vec<(Cond, Outcome)> {
    let aos = &ctx.aos;
    let dir = ctx.dir.join("web");
    std::fs::create_dir_all(&dir).expect("cannot create the web bench directory");
    let script = dir.join("flood.py");
    std::fs::write(&script, FLOOD_PY).expect("cannot write flood.py");
    let prog = dir.join("aos-progress");
    let gate = Gate(dir.join("aos-gate"));
    gate.close();
    let (s, p, r, g) = (
        script.to_string_lossy().into_owned(),
        prog.to_string_lossy().into_owned(),
        RATE.to_string(),
        gate.0.to_string_lossy().into_owned(),
    );
    aos.create("wflood", &["python3", &s, &r, &p, &g]);
    aos.create("wecho", &["sh", "-c", "stty raw -echo; exec cat"]);
    wait_flooder(&prog);
    let web: serde_json::Value = serde_json::from_str(&aos.run(&["web", "--json"]))
        .expect("`agentos web --json` printed invalid JSON");
    let base = web["base"]
        .as_str()
        .expect("no base URL from `agentos web`")
        .to_string();
    let owner_secret = web["url"]
        .as_str()
        .and_then(|u| u.split_once('#'))
        .map(|(_, s)| s.to_string())
        .expect("the owner link has no secret");
    let share: serde_json::Value =
        serde_json::from_str(&aos.run(&["share", "wflood", "--permission", "view", "--json"]))
            .expect("`agentos share --json` printed invalid JSON");
    let view_secret = share["link"]
        .as_str()
        .and_then(|u| u.split_once('#'))
        .map(|(_, s)| s.to_string())
        .expect("the view link has no secret");
    let hostport = base
        .split_once("://")
        .map(|(_, h)| h.to_string())
        .expect("base URL without a scheme");
    let url = format!("ws://{hostport}/ws");
    progress(&format!("web: daemon's web server at {base}"));
    let owner = Owner::start(url.clone(), owner_secret, "wecho".into());
    let rt = runtime();
    let tck = clk_tck();
    let mut out = Vec::new();
    for cond in CONDS {
        progress(&format!("web: AgentOS, {}", cond.label()));
        let server = aos_pids(ctx);
        let daemon = aos.daemon_pid().expect("the daemon has no pid").to_string();
        let o = rt.block_on(async {
            let (stop_tx, stop_rx) = watch::channel(false);
            let n = cond.viewers + usize::from(cond.throttled);
            let stats: Vec<Arc<ViewerStats>> = (0..n).map(|_| Arc::default()).collect();
            let t_join = Instant::now();
            let tasks: Vec<_> = stats
                .iter()
                .enumerate()
                .map(|(i, st)| {
                    let throttle = (cond.throttled && i == n - 1).then_some(THROTTLE);
                    tokio::spawn(viewer(
                        url.clone(),
                        view_secret.clone(),
                        "wflood".into(),
                        throttle,
                        st.clone(),
                        stop_rx.clone(),
                    ))
                })
                .collect();
            let deadline = Instant::now() + TIMEOUT;
            while !stats.iter().all(|s| s.painted.load(Ordering::Acquire)) {
                if let Some(e) = stats
                    .iter()
                    .find_map(|s| s.trouble.lock().unwrap().first().cloned())
                {
                    panic!("web: a viewer failed before its first paint: {e}");
                }
                assert!(
                    Instant::now() < deadline,
                    "web: viewers got no snapshot within {TIMEOUT:?}"
                );
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            let join = t_join.elapsed();
            let t_flood = Instant::now();
            if cond.flood {
                gate.open();
                tokio::time::sleep(WARMUP).await;
            }
            let snap = |s: &ViewerStats| {
                (
                    s.bytes.load(Ordering::Relaxed),
                    s.snapshots.load(Ordering::Relaxed),
                    s.gaps.load(Ordering::Relaxed),
                    s.frames.load(Ordering::Relaxed),
                    s.end_seq.load(Ordering::Relaxed),
                )
            };
            let before: Vec<_> = stats.iter().map(|s| snap(s)).collect();
            let (p0, c0, h0) = (
                read_progress(&prog),
                ticks(&server),
                ticks(&["self".into()]),
            );
            let (f0, b0) = ws_counters(&hostport);
            let t0 = Instant::now();
            owner.request(t0 + window);
            tokio::time::sleep(window).await;
            let dt = t0.elapsed().as_secs_f64();
            let after: Vec<_> = stats.iter().map(|s| snap(s)).collect();
            let queues = if cond.throttled {
                socket_queues(stats[n - 1].port.load(Ordering::Relaxed) as u16)
            } else {
                (0, 0)
            };
            let (p1, c1, h1) = (
                read_progress(&prog),
                ticks(&server),
                ticks(&["self".into()]),
            );
            let (f1, b1) = ws_counters(&hostport);
            // A throttled viewer: how long until the node resyncs it?
            let resync_wait = if ctx.quick {
                Duration::from_secs(5)
            } else {
                Duration::from_secs(20)
            };
            let mut resync_after = None;
            if cond.throttled {
                let slow = &stats[n - 1];
                let until = Instant::now() + resync_wait;
                while Instant::now() < until {
                    if slow.snapshots.load(Ordering::Relaxed) >= 2 {
                        resync_after = Some(t_flood.elapsed());
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
            gate.close();
            // The owner finishes its last sample; keep the viewers reading.
            let samples = owner.collect().await;
            let _ = stop_tx.send(true);
            for t in tasks {
                let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
            }
            let mut o = Outcome {
                producer: (p1.saturating_sub(p0)) as f64 / dt,
                server_cpu: (c1 - c0) as f64 / tck / dt,
                client_cpu: (h1 - h0) as f64 / tck / dt,
                echo: samples.iter().map(|(d, _)| *d).collect(),
                echo_after_notice: samples
                    .iter()
                    .filter(|(_, n)| *n)
                    .map(|(d, _)| *d)
                    .collect(),
                join,
                frames_sent: f1.saturating_sub(f0),
                bytes_sent: b1.saturating_sub(b0),
                dt,
                resync_after,
                resync_wait,
                send_queue: queues.0,
                recv_queue: queues.1,
                ..Outcome::default()
            };
            let newest = after.iter().map(|a| a.4).max().unwrap_or(0);
            for (i, st) in stats.iter().enumerate() {
                let rate = (after[i].0 - before[i].0) as f64 / dt;
                let snaps = after[i].1 - before[i].1;
                o.gaps += after[i].2;
                if cond.throttled && i == n - 1 {
                    o.throttled_rate = Some(rate);
                    o.throttled_snapshots = st.snapshots.load(Ordering::Relaxed);
                    o.throttled_behind = newest.saturating_sub(after[i].4);
                } else {
                    o.per_viewer.push(rate);
                    o.resyncs += snaps;
                    o.frames += after[i].3 - before[i].3;
                }
                for t in st.trouble.lock().unwrap().iter() {
                    o.trouble.push(format!("viewer {i}: {t}"));
                }
            }
            o
        });
        let mut o = o;
        o.rss = proc_kb(&format!("/proc/{daemon}/status"), "VmRSS:").unwrap_or(0) * 1024;
        o.hwm = proc_kb(&format!("/proc/{daemon}/status"), "VmHWM:").unwrap_or(0) * 1024;
        report_progress("AgentOS", &o);
        out.push((cond, o));
        settle(&aos_pids(ctx));
    }
    drop(owner);
    aos.destroy("wflood");
    aos.destroy("wecho");
    out
}

fn report_progress(sys: &str, o: &Outcome) {
    let e = if o.echo.is_empty() {
        "no echo samples".into()
    } else {
        format!(
            "echo p50 {} p99 {} ({} samples)",
            fmt_time(percentile(&o.echo, 50.0)),
            fmt_time(percentile(&o.echo, 99.0)),
            o.echo.len()
        )
    };
    let v = if o.per_viewer.is_empty() {
        String::new()
    } else {
        format!(
            "; viewers {} total, min {}, median {}; resyncs {}",
            mbs(o.total()),
            mbs(o.per_viewer.iter().copied().fold(f64::INFINITY, f64::min)),
            mbs(median(&o.per_viewer)),
            o.resyncs
        )
    };
    let t = o
        .throttled_rate
        .map(|r| {
            format!(
                "; throttled {} with {} snapshots since it joined, {:.1} MB behind \
                 (kernel: {:.2} MB in the server's send queue, {:.2} MB in its receive queue); \
                 first resync {}",
                mbs(r),
                o.throttled_snapshots,
                o.throttled_behind as f64 / 1e6,
                o.send_queue as f64 / 1e6,
                o.recv_queue as f64 / 1e6,
                match o.resync_after {
                    Some(d) => format!("{:.1} s after the flood began", d.as_secs_f64()),
                    None => format!("none within {:?} after the window", o.resync_wait),
                }
            )
        })
        .unwrap_or_default();
    let slow = o.echo.iter().filter(|d| **d > 0.02).count();
    let slow_notice = o.echo_after_notice.iter().filter(|d| **d > 0.02).count();
    let e = format!(
        "{e}, {slow} over 20 ms ({slow_notice} of them after an input_by notice); join {}",
        fmt_time(o.join.as_secs_f64())
    );
    let e = if o.discarded > 0.0 {
        format!("{e}; tmux discarded {} for slow clients", mbs(o.discarded))
    } else {
        e
    };
    progress(&format!(
        "web:   {sys}: producer {}, server CPU {:.0} %, client CPU {:.0} %; {e}{v}{t}{}",
        mbs(o.producer),
        o.server_cpu * 100.0,
        o.client_cpu * 100.0,
        if o.trouble.is_empty() {
            String::new()
        } else {
            format!("; TROUBLE: {}", o.trouble.join(" | "))
        }
    ));
}

/// A `tmux attach` client in its own PTY, drained by a thread that
/// counts the bytes (sleeping `throttle` after each read).
struct TmuxClient {
    child: Box<dyn portable_pty::Child + Send + Sync>,
    bytes: Arc<AtomicU64>,
    /// Why the reader stopped, once it has.
    ended: Arc<Mutex<Option<String>>>,
    _master: Box<dyn portable_pty::MasterPty + Send>,
}

impl TmuxClient {
    fn spawn(ctx: &Ctx, session: &str, throttle: Option<Duration>) -> TmuxClient {
        let pair = native_pty_system()
            .openpty(PtySize {
                rows: 24,
                cols: 80,
                pixel_width: 0,
                pixel_height: 0,
            })
            .expect("cannot open a PTY");
        let mut cmd = CommandBuilder::new(&ctx.tmux.bin);
        cmd.args(["-L", &ctx.tmux.socket, "-f"]);
        cmd.arg(&ctx.tmux.conf);
        cmd.args(["attach-session", "-t", session]);
        cmd.cwd(&ctx.tmux.work);
        cmd.env("TERM", "xterm-256color");
        for k in crate::systems::ENV_REMOVE {
            cmd.env_remove(k);
        }
        let child = pair
            .slave
            .spawn_command(cmd)
            .expect("cannot spawn tmux attach");
        drop(pair.slave);
        let mut reader = pair.master.try_clone_reader().expect("PTY reader");
        let bytes = Arc::new(AtomicU64::new(0));
        let b = bytes.clone();
        let ended = Arc::new(Mutex::new(None));
        let e = ended.clone();
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 64 * 1024];
            let why = loop {
                match reader.read(&mut buf) {
                    Ok(0) => break "end of file".to_string(),
                    Ok(n) => {
                        b.fetch_add(n as u64, Ordering::Relaxed);
                        if let Some(d) = throttle {
                            std::thread::sleep(d);
                        }
                    }
                    Err(err) if err.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(err) => break err.to_string(),
                }
            };
            *e.lock().expect("reader state") = Some(why);
        });
        TmuxClient {
            child,
            bytes,
            ended,
            _master: pair.master,
        }
    }

    fn pid(&self) -> Option<u32> {
        self.child.process_id()
    }
}

impl Drop for TmuxClient {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Bytes tmux discarded so far for the clients of `session`
/// (`#{client_discarded}`: output dropped while a client was too slow).
fn tmux_discarded(ctx: &Ctx, session: &str) -> u64 {
    ctx.tmux
        .run(&[
            "list-clients",
            "-F",
            "#{client_session} #{client_discarded}",
        ])
        .lines()
        .filter_map(|l| l.split_once(' '))
        .filter(|(s, _)| *s == session)
        .filter_map(|(_, d)| d.trim().parse::<u64>().ok())
        .sum()
}

/// The tmux side: the same flooder in one session, `cat` in another with
/// the "owner" client attached, N clients attached to the flooder.
fn tmux_side(ctx: &Ctx, window: Duration) -> Vec<(Cond, Outcome)> {
    let tmux = &ctx.tmux;
    let dir = ctx.dir.join("web");
    let script = dir.join("flood.py");
    let prog = dir.join("tmux-progress");
    let gate = Gate(dir.join("tmux-gate"));
    gate.close();
    let (s, p, r, g) = (
        script.to_string_lossy().into_owned(),
        prog.to_string_lossy().into_owned(),
        RATE.to_string(),
        gate.0.to_string_lossy().into_owned(),
    );
    tmux.new_session("wflood", 80, 24, &["python3", &s, &r, &p, &g]);
    tmux.new_session(
        "wecho",
        80,
        24,
        &["sh", "-c", "stty raw -echo; printf 'READY\\n'; exec cat"],
    );
    wait_flooder(&prog);
    let mut owner: Term = tmux.attach("wecho", 80, 24);
    owner.wait_text("READY", TIMEOUT, "the tmux echo pane");
    let server = vec![tmux.server_pid().to_string()];
    let tck = clk_tck();
    let mut out = Vec::new();
    for cond in CONDS {
        progress(&format!("web: tmux, {}", cond.label()));
        let n = cond.viewers + usize::from(cond.throttled);
        let t_join = Instant::now();
        let clients: Vec<TmuxClient> = (0..n)
            .map(|i| {
                let throttle = (cond.throttled && i == n - 1).then_some(THROTTLE);
                TmuxClient::spawn(ctx, "wflood", throttle)
            })
            .collect();
        wait_until("every tmux client to draw", TIMEOUT, || {
            clients.iter().all(|c| c.bytes.load(Ordering::Relaxed) > 0)
        });
        let join = t_join.elapsed();
        if cond.flood {
            gate.open();
            std::thread::sleep(WARMUP);
        }
        let cpids: Vec<String> = clients
            .iter()
            .filter_map(|c| c.pid())
            .map(|p| p.to_string())
            .collect();
        let before: Vec<u64> = clients
            .iter()
            .map(|c| c.bytes.load(Ordering::Relaxed))
            .collect();
        // Client CPU: the `tmux attach` processes (idle: the server writes to
        // their terminals itself) and the harness threads draining them.
        let mut cpids = cpids;
        cpids.push("self".into());
        let (p0, c0, k0) = (read_progress(&prog), ticks(&server), ticks(&cpids));
        let d0 = tmux_discarded(ctx, "wflood");
        let t0 = Instant::now();
        let mut echo = Vec::new();
        let mut i = 0u32;
        while t0.elapsed() < window {
            let ch = b'a' + (i % 26) as u8;
            i += 1;
            echo.push(owner.echo(ch, Duration::from_secs(10)).as_secs_f64());
            std::thread::sleep(ECHO_GAP);
        }
        let dt = t0.elapsed().as_secs_f64();
        let after: Vec<u64> = clients
            .iter()
            .map(|c| c.bytes.load(Ordering::Relaxed))
            .collect();
        let (p1, c1, k1) = (read_progress(&prog), ticks(&server), ticks(&cpids));
        let d1 = tmux_discarded(ctx, "wflood");
        gate.close();
        let mut o = Outcome {
            producer: (p1.saturating_sub(p0)) as f64 / dt,
            server_cpu: (c1 - c0) as f64 / tck / dt,
            client_cpu: (k1 - k0) as f64 / tck / dt,
            dt,
            discarded: d1.saturating_sub(d0) as f64 / dt,
            echo,
            join,
            ..Outcome::default()
        };
        for i in 0..n {
            let rate = (after[i] - before[i]) as f64 / dt;
            if cond.throttled && i == n - 1 {
                o.throttled_rate = Some(rate);
            } else {
                o.per_viewer.push(rate);
            }
        }
        for (i, c) in clients.iter().enumerate() {
            if let Some(why) = c.ended.lock().expect("reader state").as_ref() {
                o.trouble.push(format!("client {i} stopped reading: {why}"));
            }
        }
        drop(clients);
        report_progress("tmux", &o);
        out.push((cond, o));
        settle(&server);
    }
    owner.kill();
    tmux.kill_session("wflood");
    tmux.kill_session("wecho");
    out
}

fn echo_note(a: &Outcome, t: &Outcome) -> String {
    format!(
        "p99 {} / {}; max {} / {}; {} / {} samples",
        fmt_time(percentile(&a.echo, 99.0)),
        fmt_time(percentile(&t.echo, 99.0)),
        fmt_time(percentile(&a.echo, 100.0)),
        fmt_time(percentile(&t.echo, 100.0)),
        a.echo.len(),
        t.echo.len()
    )
}

/// The web measurements: AgentOS first, then tmux, then the rows.
pub fn web(ctx: &Ctx) -> Vec<Row> {
    let window = if ctx.quick {
        Duration::from_secs(2)
    } else {
        Duration::from_secs(5)
    };
    let a = agentos_side(ctx, window);
    let t = tmux_side(ctx, window);
    let mut rows = Vec::new();
    let find = |v: &[(Cond, Outcome)], c: Cond| {
        v.iter()
            .find(|(k, _)| *k == c)
            .map(|(_, o)| o.clone())
            .expect("every condition was measured")
    };
    // Throughput to viewers.
    for cond in CONDS.iter().copied().filter(|c| c.viewers > 0) {
        let (ao, to) = (find(&a, cond), find(&t, cond));
        let mut row = Row::new(
            format!(
                "Received by {} (total per second)",
                if cond.throttled {
                    format!(
                        "{} fast viewers/clients while 1 more is throttled",
                        cond.viewers
                    )
                } else {
                    format!(
                        "{} viewer{}/client{} of a 10 MB/s agent",
                        cond.viewers,
                        if cond.viewers == 1 { "" } else { "s" },
                        if cond.viewers == 1 { "" } else { "s" }
                    )
                }
            ),
            Unit::Bytes,
        )
        .agentos(ao.total())
        .tmux(to.total());
        if cond.viewers == 10 && !cond.throttled {
            row = row.goal("≥ 50 MB/s to 10 viewers", ao.total() >= 50e6);
        }
        let min = |o: &Outcome| o.per_viewer.iter().copied().fold(f64::INFINITY, f64::min);
        let mut note = format!(
            "{} / {}; per viewer min {} / {}, median {} / {}; producer {} / {}; \
             server CPU {:.0} / {:.0} %, clients {:.0} / {:.0} %; resync snapshots {}, \
             tmux discarded {}; join {} / {}",
            mbs(ao.total()),
            mbs(to.total()),
            mbs(min(&ao)),
            mbs(min(&to)),
            mbs(median(&ao.per_viewer)),
            mbs(median(&to.per_viewer)),
            mbs(ao.producer),
            mbs(to.producer),
            ao.server_cpu * 100.0,
            to.server_cpu * 100.0,
            ao.client_cpu * 100.0,
            to.client_cpu * 100.0,
            ao.resyncs,
            mbs(to.discarded),
            fmt_time(ao.join.as_secs_f64()),
            fmt_time(to.join.as_secs_f64()),
        );
        if let (Some(ar), Some(tr)) = (ao.throttled_rate, to.throttled_rate) {
            note.push_str(&format!(
                "; throttled one {} / {}, {:.0} MB behind after the window with {:.1} MB \
                 queued in the kernel, first resync {}; daemon RSS {} (peak {})",
                mbs(ar),
                mbs(tr),
                ao.throttled_behind as f64 / 1e6,
                (ao.send_queue + ao.recv_queue) as f64 / 1e6,
                match ao.resync_after {
                    Some(d) => format!("{:.1} s after the flood began", d.as_secs_f64()),
                    None => format!(
                        "not within {} s",
                        (ao.resync_wait.as_secs_f64() + WARMUP.as_secs_f64() + ao.dt).round()
                    ),
                },
                fmt_bytes(ao.rss as f64),
                fmt_bytes(ao.hwm as f64),
            ));
        }
        if ao.gaps > 0 {
            note.push_str(&format!("; {} STREAM GAPS", ao.gaps));
        }
        if !ao.trouble.is_empty() {
            note.push_str(&format!("; {} viewer errors", ao.trouble.len()));
        }
        rows.push(row.note(note));
    }
    // The owner's echo.
    for cond in CONDS {
        let (ao, to) = (find(&a, cond), find(&t, cond));
        if ao.echo.is_empty() || to.echo.is_empty() {
            continue;
        }
        let label = cond.label();
        rows.push(
            Row::new(
                format!("Owner's keystroke → echo p50, {label}"),
                Unit::Seconds,
            )
            .agentos(percentile(&ao.echo, 50.0))
            .tmux(percentile(&to.echo, 50.0))
            .note(echo_note(&ao, &to)),
        );
        rows.push(
            Row::new(
                format!("Owner's keystroke → echo p99, {label}"),
                Unit::Seconds,
            )
            .agentos(percentile(&ao.echo, 99.0))
            .tmux(percentile(&to.echo, 99.0)),
        );
    }
    for (cond, o) in &a {
        if o.frames_sent > 0 {
            progress(&format!(
                "web: /metrics during \"{}\": {:.0} frames/s, {} sent ({:.1} KiB per frame)",
                cond.label(),
                o.frames_sent as f64 / o.dt,
                mbs(o.bytes_sent as f64 / o.dt),
                o.bytes_sent as f64 / o.frames_sent as f64 / 1024.0
            ));
        }
    }
    rows
}
