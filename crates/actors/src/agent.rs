//! `AgentActor`: one per agent. It connects to the agent's PTY holder, feeds
//! output through the terminal model and the state engine, and fans output
//! out to its subscribers: attached CLI clients ([`Attach`]), `logs --follow`
//! readers ([`FollowLogs`]) and web viewers ([`WireSubscribe`]).
//!
//! Invariants:
//! - Attaching takes the snapshot and registers the subscriber in one actor
//!   step, so the subscriber gets every byte after the snapshot exactly once.
//!   A web viewer likewise gets its replay (`since`) or its paint and is
//!   registered in one step.
//! - Every subscriber has a bounded queue; a full queue marks it lagging and
//!   it is resynced with a fresh snapshot (a paint, for a web viewer) when
//!   room frees up. A web viewer's queue is also bounded in bytes not yet
//!   handed to its socket ([`crate::wire_queue`]), so a slow viewer lags
//!   after [`WIRE_BACKLOG`] bytes, not after seconds of frames. The agent
//!   never waits on a client.
//! - Web viewers get ready-made WebSocket v3 binary frames: each output chunk
//!   is encoded once per distinct channel, however many viewers, and shared
//!   ([`bytes::Bytes`]); [`GetWireStats`] counts the encodes.
//! - A web viewer never becomes the driver and never resizes; the node's
//!   session layer decides who resizes ([`ResizePty`]).
//! - Holder output is applied in sequence order; repeated bytes (a reconnect
//!   that overlaps) are trimmed by sequence number.

use crate::holder::AgentDir;
use crate::plaintext::PlainText;
use crate::state::{Explained, HookMapping, ScreenRule, StateEngine};
use crate::term::TermModel;
use crate::wire::{self, Paint, REPLAY_PIECE, ResumePlan, SCROLLBACK_READ};
pub use crate::wire::{RESUME_WINDOW, SCROLLBACK_LINES};
use crate::wire_queue::{Refused, WireTx};
pub use crate::wire_queue::{WIRE_BACKLOG, WIRE_FRAMES};
use actix::prelude::*;
use agentos_crdt::{AgentState, StateTransition};
use agentos_proto::ws::{self, Channel};
use agentos_proto::{
    DetachReason, ErrorCode, ErrorInfo, HOLDER_MAGIC, HolderCmd, HolderEvent, PROTOCOL_VERSION,
    ServerFrame, WaitTarget, check_hello, hello_bytes, read_frame_async, write_frame_async,
};
use bytes::Bytes;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info, warn};

/// Capacity of each subscriber's queue, in frames.
pub const SUBSCRIBER_QUEUE: usize = 256;
/// Capacity of the queue towards the holder.
const HOLDER_QUEUE: usize = 256;
/// When a fresh daemon reconnects to a running holder, this much recent
/// output is replayed into the terminal model to rebuild the screen.
pub const REPLAY_BYTES: u64 = 2 * 1024 * 1024;
/// Actor mailbox capacity (bounded).
const MAILBOX: usize = 64;

/// Newtype for a subscriber of one agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SubscriberId(pub u64);

/// Static configuration of an agent actor.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub id: String,
    pub name: String,
    pub dir: AgentDir,
    pub hook_map: Vec<HookMapping>,
    pub rules: Vec<ScreenRule>,
    pub cols: u16,
    pub rows: u16,
    pub enter_delay_ms: u64,
    /// Field of a hook payload that carries the agent's conversation id.
    pub resume_field: Option<String>,
    /// Adopting a holder that should already be running (daemon restart):
    /// one connection attempt, no waiting for a holder to come up.
    pub adopt: bool,
}

/// What the agent tells the node (which records it in the document).
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub enum AgentEvent {
    StateChanged {
        agent_id: String,
        transition: StateTransition,
    },
    ResumeId {
        agent_id: String,
        resume_id: String,
    },
    Pid {
        agent_id: String,
        pid: Option<u32>,
    },
    /// Someone typed from a terminal attached with `agentos attach` (the
    /// owner, on this device or another): at most one per
    /// [`LOCAL_INPUT_EVERY`], so web viewers can tag the input.
    LocalInput {
        agent_id: String,
    },
}

/// How often [`AgentEvent::LocalInput`] is reported while someone types.
pub const LOCAL_INPUT_EVERY: Duration = Duration::from_millis(500);

/// A live summary of the agent.
#[derive(Debug, Clone)]
pub struct LiveInfo {
    pub state: AgentState,
    pub source: String,
    pub pid: Option<u32>,
    pub started_at_ms: Option<u64>,
    pub connected: bool,
}

/// What a web viewer's queue carries.
#[derive(Debug, Clone)]
pub enum WireEvent {
    /// One WebSocket v3 binary frame, ready to send (output or snapshot).
    Frame(Bytes),
    /// The agent exited; nothing follows.
    Exited { state: AgentState },
}

/// Counters of the web viewers' stream (for tests and benchmarks).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WireStats {
    /// Output frames encoded by fanout: one per chunk per distinct channel.
    pub encodes: u64,
    /// Frames queued to web viewers (output, replay and snapshots).
    pub frames_sent: u64,
    /// Lagging viewers resynced with a fresh snapshot.
    pub resyncs: u64,
    /// Times a viewer's full queue marked it lagging (a frame dropped).
    pub lagged: u64,
}

enum SubKind {
    Attach(mpsc::Sender<ServerFrame>),
    /// A direct client: output comes from the holder; it only gets
    /// `Exited`/`Detached` from here.
    Control(mpsc::Sender<ServerFrame>),
    Logs(mpsc::Sender<ServerFrame>, Box<PlainText>),
    /// A web viewer: binary frames on its connection's channel.
    Wire(Channel, WireTx),
}

impl SubKind {
    /// Resynced with a snapshot when it lags.
    fn resyncs(&self) -> bool {
        matches!(self, SubKind::Attach(_) | SubKind::Wire(..))
    }
}

struct Subscriber {
    id: SubscriberId,
    kind: SubKind,
    lagging: bool,
}

struct Waiter {
    until: WaitTarget,
    tx: oneshot::Sender<AgentState>,
}

pub struct AgentActor {
    cfg: AgentConfig,
    events: Recipient<AgentEvent>,
    term: TermModel,
    engine: StateEngine,
    /// Connection generation: messages from an older holder connection are ignored.
    generation: u64,
    holder: Option<mpsc::Sender<HolderCmd>>,
    pid: Option<u32>,
    started_at_ms: Option<u64>,
    subs: Vec<Subscriber>,
    next_sub: u64,
    waiters: Vec<Waiter>,
    tick_pending: bool,
    /// Only the latest attached client (the driver) resizes the PTY.
    driver: Option<SubscriberId>,
    /// True while a holder connection is being set up.
    connecting: bool,
    /// Commands sent while connecting, delivered once connected (bounded).
    queued: Vec<HolderCmd>,
    /// Output below this sequence number is history replayed into a fresh
    /// model, not new activity.
    replay_until: u64,
    /// Resolved when the connection attempt settles.
    connect_waiters: Vec<oneshot::Sender<bool>>,
    /// A resync of lagging subscribers is scheduled.
    resync_pending: bool,
    /// Started by [`AgentActor::spawn`]: stop the arbiter with the actor.
    own_arbiter: bool,
    wire_stats: WireStats,
    /// When [`AgentEvent::LocalInput`] was last reported (ms).
    local_input_at: u64,
}

/// How often lagging subscribers are retried when no new output arrives.
const RESYNC_RETRY: Duration = Duration::from_millis(25);

/// Most commands queued while the holder connection is being set up.
const MAX_QUEUED: usize = 1024;

impl std::fmt::Debug for AgentActor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentActor")
            .field("name", &self.cfg.name)
            .finish()
    }
}

fn now_ms() -> u64 {
    crate::holder::now_ms()
}

impl AgentActor {
    /// Start an agent actor on an arbiter (thread) of its own, so that one
    /// agent parsing a flood of output never delays another agent's echo.
    /// The thread ends when the actor stops.
    pub fn spawn(cfg: AgentConfig, events: Recipient<AgentEvent>) -> Addr<AgentActor> {
        let arbiter = Arbiter::new();
        AgentActor::start_in_arbiter(&arbiter.handle(), move |_| {
            let mut a = AgentActor::new(cfg, events);
            a.own_arbiter = true;
            a
        })
    }

    pub fn new(cfg: AgentConfig, events: Recipient<AgentEvent>) -> Self {
        let now = now_ms();
        AgentActor {
            term: TermModel::new(cfg.cols, cfg.rows, 0),
            engine: StateEngine::new(cfg.hook_map.clone(), cfg.rules.clone(), now),
            cfg,
            events,
            generation: 0,
            holder: None,
            pid: None,
            started_at_ms: None,
            subs: Vec::new(),
            next_sub: 1,
            waiters: Vec::new(),
            tick_pending: false,
            driver: None,
            connecting: false,
            queued: Vec::new(),
            replay_until: 0,
            resync_pending: false,
            own_arbiter: false,
            connect_waiters: Vec::new(),
            wire_stats: WireStats::default(),
            local_input_at: 0,
        }
    }

    fn settle_connect(&mut self, connected: bool) {
        self.connecting = false;
        if !connected {
            self.queued.clear();
        }
        for w in self.connect_waiters.drain(..) {
            let _ = w.send(connected);
        }
    }

    fn connect(&mut self, ctx: &mut Context<Self>, fresh: bool) {
        self.generation += 1;
        self.holder = None;
        self.connecting = true;
        let generation = self.generation;
        let addr = ctx.address();
        let dir = self.cfg.dir.clone();
        let known = if fresh { None } else { Some(self.term.seq()) };
        let name = self.cfg.name.clone();
        let attempts = if std::mem::take(&mut self.cfg.adopt) {
            1
        } else {
            100
        };
        actix::spawn(async move {
            match holder_session(&dir, generation, known, attempts, addr.clone()).await {
                Ok(()) => {}
                Err(e) => debug!(agent = %name, error = %e, "holder connection ended"),
            }
            addr.do_send(HolderLost { generation });
        });
    }

    fn emit_state(&mut self, ctx: &mut Context<Self>) {
        let now = now_ms();
        if let Some((state, source)) = self.engine.decide(now) {
            info!(agent = %self.cfg.name, state = state.label(), %source, "state changed");
            self.events.do_send(AgentEvent::StateChanged {
                agent_id: self.cfg.id.clone(),
                transition: StateTransition {
                    state: state.clone(),
                    source,
                    at_ms: now,
                },
            });
            let mut keep = Vec::new();
            for w in self.waiters.drain(..) {
                if reached(w.until, &state) {
                    let _ = w.tx.send(state.clone());
                } else {
                    keep.push(w);
                }
            }
            self.waiters = keep;
        }
        if !self.tick_pending
            && let Some(deadline) = self.engine.next_deadline_ms()
            && deadline > now
        {
            self.tick_pending = true;
            ctx.run_later(Duration::from_millis(deadline - now + 5), |act, ctx| {
                act.tick_pending = false;
                act.emit_state(ctx);
            });
        }
    }

    fn fanout(&mut self, seq: u64, data: &[u8]) {
        let term = &self.term;
        let dir = &self.cfg.dir;
        let stats = &mut self.wire_stats;
        // Web frames: encoded once per distinct channel for this chunk, and
        // one paint shared by every lagging viewer that has room again.
        let mut encoded: Vec<(Channel, Bytes)> = Vec::new();
        let mut resync: Option<Paint> = None;
        self.subs.retain_mut(|s| match &mut s.kind {
            SubKind::Control(tx) => !tx.is_closed(),
            SubKind::Attach(tx) => {
                if s.lagging {
                    if tx.capacity() == 0 {
                        return !tx.is_closed();
                    }
                    return match tx.try_send(term.snapshot().into()) {
                        Ok(()) => {
                            s.lagging = false;
                            true
                        }
                        Err(mpsc::error::TrySendError::Full(_)) => true,
                        Err(mpsc::error::TrySendError::Closed(_)) => false,
                    };
                }
                match tx.try_send(ServerFrame::Output {
                    seq,
                    data: data.to_vec(),
                }) {
                    Ok(()) => true,
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        s.lagging = true;
                        true
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => false,
                }
            }
            SubKind::Wire(channel, tx) => {
                if s.lagging {
                    return resync_wire(
                        term,
                        dir,
                        &mut resync,
                        stats,
                        *channel,
                        tx,
                        &mut s.lagging,
                    );
                }
                let frame = match encoded.iter().find(|(c, _)| c == channel) {
                    Some((_, f)) => f.clone(),
                    None => {
                        stats.encodes += 1;
                        let f = Bytes::from(ws::encode_output(*channel, seq, data));
                        encoded.push((*channel, f.clone()));
                        f
                    }
                };
                match tx.try_output(frame) {
                    Ok(()) => {
                        stats.frames_sent += 1;
                        true
                    }
                    Err(Refused::Full) => {
                        s.lagging = true;
                        stats.lagged += 1;
                        true
                    }
                    Err(Refused::Closed) => false,
                }
            }
            SubKind::Logs(tx, pt) => {
                pt.feed(data);
                let lines = pt.take_lines();
                if lines.is_empty() {
                    return !tx.is_closed();
                }
                let mut text = lines.join("\n");
                if s.lagging {
                    text = format!("[agentos: lines skipped, the reader was too slow]\n{text}");
                }
                match tx.try_send(ServerFrame::LogText { text }) {
                    Ok(()) => {
                        s.lagging = false;
                        true
                    }
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        s.lagging = true;
                        true
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => false,
                }
            }
        });
    }

    /// Resync lagging attach subscribers and web viewers whose queue has room
    /// again, even when the agent is quiet; retry while any is still lagging.
    fn schedule_resync(&mut self, ctx: &mut Context<Self>) {
        let lagging = self.subs.iter().any(|s| s.lagging && s.kind.resyncs());
        if !lagging || self.resync_pending {
            return;
        }
        self.resync_pending = true;
        ctx.run_later(RESYNC_RETRY, |act, ctx| {
            act.resync_pending = false;
            let term = &act.term;
            let dir = &act.cfg.dir;
            let stats = &mut act.wire_stats;
            let mut resync: Option<Paint> = None;
            act.subs.retain_mut(|s| {
                if !s.lagging {
                    return true;
                }
                match &s.kind {
                    SubKind::Attach(tx) => {
                        if tx.is_closed() {
                            return false;
                        }
                        if tx.capacity() > 0 && tx.try_send(term.snapshot().into()).is_ok() {
                            s.lagging = false;
                        }
                        true
                    }
                    SubKind::Wire(channel, tx) => {
                        resync_wire(term, dir, &mut resync, stats, *channel, tx, &mut s.lagging)
                    }
                    SubKind::Control(_) | SubKind::Logs(..) => true,
                }
            });
            act.schedule_resync(ctx);
        });
    }

    /// Tell every subscriber the stream ended (`frame`: `Exited` or
    /// `Detached`) and drop them. Web viewers get [`WireEvent::Exited`] on
    /// exit; otherwise their queue just closes (subscribe again).
    fn end_subscribers(&mut self, frame: ServerFrame) {
        for s in self.subs.drain(..) {
            // Best effort: a full queue means the client is gone or hopeless.
            match s.kind {
                SubKind::Attach(tx) | SubKind::Control(tx) | SubKind::Logs(tx, _) => {
                    let _ = tx.try_send(frame.clone());
                }
                SubKind::Wire(_, tx) => {
                    if let ServerFrame::Exited { state } = &frame {
                        let _ = tx.try_event(WireEvent::Exited {
                            state: state.clone(),
                        });
                    }
                }
            }
        }
        self.driver = None;
    }

    fn send_holder(&mut self, cmd: HolderCmd) -> Result<(), ErrorInfo> {
        if self.holder.is_none() && self.connecting && self.queued.len() < MAX_QUEUED {
            self.queued.push(cmd);
            return Ok(());
        }
        let tx = self.holder.as_ref().ok_or_else(|| {
            ErrorInfo::new(
                ErrorCode::AgentNotRunning,
                format!(
                    "agent '{}' is not running ({})",
                    self.cfg.name,
                    self.engine.current().0.label()
                ),
            )
        })?;
        tx.try_send(cmd).map_err(|_| {
            ErrorInfo::new(
                ErrorCode::AgentNotRunning,
                format!("agent '{}' is not accepting input right now", self.cfg.name),
            )
        })
    }
}

fn reached(until: WaitTarget, state: &AgentState) -> bool {
    // Any target is "reached" (with an error reported by the caller) when the
    // agent can no longer get there.
    let target = match until {
        WaitTarget::Waiting => *state == AgentState::Waiting,
        WaitTarget::Idle => *state == AgentState::Idle,
        WaitTarget::Exited => state.is_terminal(),
    };
    target || state.is_terminal()
}

/// One connection to the holder: hello, info, subscribe, then pump.
async fn holder_session(
    dir: &AgentDir,
    generation: u64,
    known_seq: Option<u64>,
    attempts: u32,
    addr: Addr<AgentActor>,
) -> Result<(), String> {
    let sock = dir.socket();
    let mut stream = None;
    // A holder just spawned may still be starting: retry (50 ms apart).
    for _ in 0..attempts {
        match tokio::net::UnixStream::connect(&sock).await {
            Ok(s) => {
                stream = Some(s);
                break;
            }
            Err(_) => {
                if dir.read_exit().is_some() && !sock.exists() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await
            }
        }
    }
    let mut stream = stream.ok_or_else(|| format!("no holder at {}", sock.display()))?;
    stream
        .write_all(&hello_bytes(HOLDER_MAGIC, PROTOCOL_VERSION))
        .await
        .map_err(|e| e.to_string())?;
    let mut hello = [0u8; 8];
    stream
        .read_exact(&mut hello)
        .await
        .map_err(|e| e.to_string())?;
    check_hello(HOLDER_MAGIC, hello).map_err(|e| e.to_string())?;
    let (mut rd, mut wr) = stream.into_split();
    let info: HolderEvent = read_frame_async(&mut rd).await.map_err(|e| e.to_string())?;
    let HolderEvent::Info {
        total,
        child_pid,
        started_at_ms,
        cols,
        rows,
        ..
    } = info
    else {
        return Err("holder did not introduce itself".into());
    };
    let since = match known_seq {
        Some(s) => s.min(total),
        None => total.saturating_sub(REPLAY_BYTES),
    };
    // Absolute line numbers: count the newlines before the replay point.
    let lines_before = if known_seq.is_none() && since > 0 {
        count_newlines(&dir.log(), since)
    } else {
        0
    };
    let (tx, mut rx) = mpsc::channel::<HolderCmd>(HOLDER_QUEUE);
    write_frame_async(
        &mut wr,
        &HolderCmd::Subscribe {
            since,
            lag_limit: None,
        },
    )
    .await
    .map_err(|e| e.to_string())?;
    addr.send(HolderConnected {
        generation,
        tx,
        since,
        total,
        fresh: known_seq.is_none(),
        lines_before,
        pid: child_pid,
        started_at_ms,
        cols,
        rows,
    })
    .await
    .map_err(|e| e.to_string())?;
    let writer = actix::spawn(async move {
        while let Some(cmd) = rx.recv().await {
            if write_frame_async(&mut wr, &cmd).await.is_err() {
                break;
            }
        }
    });
    let result = loop {
        match read_frame_async::<HolderEvent, _>(&mut rd).await {
            Ok(HolderEvent::Output { seq, data }) => {
                if addr
                    .send(HolderOutput {
                        generation,
                        seq,
                        data,
                    })
                    .await
                    .is_err()
                {
                    break Ok(());
                }
            }
            Ok(HolderEvent::Exited { code, signal }) => {
                addr.do_send(HolderExited {
                    generation,
                    code,
                    signal,
                });
                break Ok(());
            }
            Ok(HolderEvent::Info { .. } | HolderEvent::Lagged { .. } | HolderEvent::Ack { .. }) => {
            }
            Err(e) => break Err(e.to_string()),
        }
    };
    writer.abort();
    result
}

/// Newlines in the first `upto` bytes of a file (absolute line numbers).
pub fn count_newlines(path: &std::path::Path, upto: u64) -> u64 {
    use std::io::Read;
    let Ok(f) = std::fs::File::open(path) else {
        return 0;
    };
    let mut f = f.take(upto);
    let mut buf = vec![0u8; 1 << 20];
    let mut n = 0u64;
    while let Ok(k) = f.read(&mut buf) {
        if k == 0 {
            break;
        }
        n += memchr::memchr_iter(b'\n', &buf[..k]).count() as u64;
    }
    n
}

/// Bytes `[from, to)` of the output log at `path`: all of them, or an error.
fn read_log(path: &std::path::Path, from: u64, to: u64) -> std::io::Result<Vec<u8>> {
    use std::os::unix::fs::FileExt;
    let f = std::fs::File::open(path)?;
    let len = usize::try_from(to.saturating_sub(from)).map_err(std::io::Error::other)?;
    let mut buf = vec![0u8; len];
    f.read_exact_at(&mut buf, from)?;
    Ok(buf)
}

/// Most log bytes replayed to reflow the screen on a width change.
const REFLOW_READ: u64 = 256 * 1024;

impl AgentActor {
    /// Resize the terminal model; on a width change the main screen is
    /// reflowed from the log's tail ([`TermModel::reflow`]) so soft wraps,
    /// and with them absolute line numbers, survive.
    fn resize_term(&mut self, cols: u16, rows: u16) {
        let seq = self.term.seq();
        let start = seq.saturating_sub(REFLOW_READ);
        let reflowed = self.term.size().0 != cols
            && match read_log(&self.cfg.dir.log(), start, seq) {
                Ok(tail) => self.term.reflow(cols, rows, &tail, start),
                Err(e) => {
                    debug!(agent = %self.cfg.name, error = %e, "no reflow: log unreadable");
                    false
                }
            };
        if !reflowed {
            self.term.resize(cols, rows);
        }
    }
}

/// The paint of `term`, with history from the tail of the agent's log
/// (at most [`SCROLLBACK_READ`] bytes read). The log always holds at least
/// `term.seq()` bytes: the holder writes it before the daemon sees them.
fn paint_now(term: &TermModel, dir: &AgentDir) -> Paint {
    let seq = term.seq();
    let start = seq.saturating_sub(SCROLLBACK_READ);
    match read_log(&dir.log(), start, seq) {
        Ok(tail) => wire::paint(term, &tail, start),
        Err(e) => {
            debug!(error = %e, "paint without history: log unreadable");
            wire::paint(term, &[], seq)
        }
    }
}

/// Resync a lagging web viewer with a fresh paint once at least half its
/// queue (frames and bytes) is free (a viewer that just freed one slot
/// would lag again at once, and each paint reads the log's tail). The paint is built at most
/// once per pass (`paint`), whatever the number of viewers. Returns whether
/// to keep the subscriber.
fn resync_wire(
    term: &TermModel,
    dir: &AgentDir,
    paint: &mut Option<Paint>,
    stats: &mut WireStats,
    channel: Channel,
    tx: &WireTx,
    lagging: &mut bool,
) -> bool {
    if tx.is_closed() {
        return false;
    }
    if !tx.can_resync() {
        return true;
    }
    let p = paint.get_or_insert_with(|| paint_now(term, dir));
    match tx.try_force(Bytes::from(p.encode(channel))) {
        Ok(()) => {
            *lagging = false;
            stats.resyncs += 1;
            stats.frames_sent += 1;
            true
        }
        Err(Refused::Full) => true,
        Err(Refused::Closed) => false,
    }
}

/// Most raw bytes of one line that [`log_line_text`] renders.
const LINE_MAX: usize = 1024 * 1024;

/// The plain text (trimmed at the end) of absolute line `line` (1-based:
/// the text after the `line - 1`-th `\n`) of the output log at `path`,
/// streamed (never loaded whole): up to the next `\n`, or the end of the
/// log for the unfinished last line. `None` when `line` is 0 or no byte of
/// it has been written. Only the first [`LINE_MAX`] bytes of a line count.
pub fn log_line_text(path: &std::path::Path, line: u64) -> Option<String> {
    use std::io::Read;
    if line == 0 {
        return None;
    }
    let mut f = std::fs::File::open(path).ok()?;
    let mut buf = vec![0u8; 64 * 1024];
    // Newlines still to pass before the line starts.
    let mut skip = line - 1;
    let mut raw: Option<Vec<u8>> = (skip == 0).then(Vec::new);
    loop {
        let k = match f.read(&mut buf) {
            Ok(0) => break,
            Ok(k) => k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => return None,
        };
        let mut chunk = &buf[..k];
        let text = match raw.as_mut() {
            Some(text) => text,
            None => {
                let Some(p) = memchr::memchr_iter(b'\n', chunk).find(|_| {
                    skip -= 1;
                    skip == 0
                }) else {
                    continue;
                };
                chunk = &chunk[p + 1..];
                raw.insert(Vec::new())
            }
        };
        let (part, ended) = match memchr::memchr(b'\n', chunk) {
            Some(p) => (&chunk[..p], true),
            None => (chunk, false),
        };
        text.extend_from_slice(&part[..part.len().min(LINE_MAX - text.len())]);
        if ended || text.len() >= LINE_MAX {
            return Some(crate::plaintext::line_text(text));
        }
    }
    // The unfinished last line exists once it has a byte.
    raw.filter(|t| !t.is_empty())
        .map(|t| crate::plaintext::line_text(&t))
}

impl Actor for AgentActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(MAILBOX);
        let span = tracing::info_span!("agent", name = %self.cfg.name, id = %self.cfg.id);
        let _e = span.enter();
        self.connect(ctx, true);
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        self.end_subscribers(ServerFrame::Detached {
            reason: DetachReason::AgentGone,
        });
        if self.own_arbiter {
            Arbiter::current().stop();
        }
    }
}

#[derive(Message)]
#[rtype(result = "()")]
struct HolderConnected {
    generation: u64,
    tx: mpsc::Sender<HolderCmd>,
    since: u64,
    total: u64,
    fresh: bool,
    lines_before: u64,
    pid: Option<u32>,
    started_at_ms: u64,
    cols: u16,
    rows: u16,
}

impl Handler<HolderConnected> for AgentActor {
    type Result = ();
    fn handle(&mut self, msg: HolderConnected, ctx: &mut Context<Self>) {
        if msg.generation != self.generation {
            return;
        }
        if msg.fresh {
            self.term = TermModel::new(msg.cols, msg.rows, msg.since);
            self.term.set_lines(msg.lines_before);
            // Web viewers that subscribed before the holder answered saw the
            // empty model: repaint them from the rebuilt one.
            for s in &mut self.subs {
                if matches!(s.kind, SubKind::Wire(..)) {
                    s.lagging = true;
                }
            }
            self.schedule_resync(ctx);
            self.replay_until = msg.total;
            let mtime = std::fs::metadata(self.cfg.dir.log())
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map(|d| d.as_millis() as u64);
            self.engine.adopt(if msg.total > 0 { mtime } else { None });
        }
        for cmd in self.queued.drain(..) {
            let _ = msg.tx.try_send(cmd);
        }
        self.holder = Some(msg.tx);
        self.settle_connect(true);
        self.pid = msg.pid;
        self.started_at_ms = Some(msg.started_at_ms);
        self.events.do_send(AgentEvent::Pid {
            agent_id: self.cfg.id.clone(),
            pid: msg.pid,
        });
        self.emit_state(ctx);
    }
}

#[derive(Message)]
#[rtype(result = "()")]
struct HolderOutput {
    generation: u64,
    seq: u64,
    data: Vec<u8>,
}

impl Handler<HolderOutput> for AgentActor {
    type Result = ();
    fn handle(&mut self, msg: HolderOutput, ctx: &mut Context<Self>) {
        if msg.generation != self.generation {
            return;
        }
        let cur = self.term.seq();
        let end = msg.seq + msg.data.len() as u64;
        if end <= cur {
            return;
        }
        let data = if msg.seq < cur {
            &msg.data[(cur - msg.seq) as usize..]
        } else {
            &msg.data[..]
        };
        let seq = cur;
        let signals = self.term.feed(data);
        let term = &self.term;
        self.engine.on_output(
            &signals,
            |n| {
                if n == 0 {
                    term.screen_text()
                } else {
                    term.bottom_text(n)
                }
            },
            now_ms(),
        );
        self.fanout(seq, data);
        self.schedule_resync(ctx);
        self.emit_state(ctx);
    }
}

#[derive(Message)]
#[rtype(result = "()")]
struct HolderExited {
    generation: u64,
    code: i32,
    signal: Option<i32>,
}

impl Handler<HolderExited> for AgentActor {
    type Result = ();
    fn handle(&mut self, msg: HolderExited, ctx: &mut Context<Self>) {
        if msg.generation != self.generation {
            return;
        }
        info!(agent = %self.cfg.name, code = msg.code, signal = ?msg.signal, "agent exited");
        self.holder = None;
        self.engine.on_exit(msg.code, now_ms());
        self.emit_state(ctx);
        let state = self.engine.current().0.clone();
        self.end_subscribers(ServerFrame::Exited { state });
    }
}

#[derive(Message)]
#[rtype(result = "()")]
struct HolderLost {
    generation: u64,
}

impl Handler<HolderLost> for AgentActor {
    type Result = ();
    fn handle(&mut self, msg: HolderLost, ctx: &mut Context<Self>) {
        if msg.generation != self.generation {
            return;
        }
        self.holder = None;
        self.settle_connect(false);
        if self.engine.current().0.is_terminal() {
            return;
        }
        match self.cfg.dir.read_exit() {
            Some(exit) => match exit.error {
                Some(message) => self.engine.on_error(message, exit.at_ms),
                // Exited while nobody listened: the log holds all its output.
                None => self.engine.on_exit(exit.code, exit.at_ms),
            },
            None => {
                warn!(agent = %self.cfg.name, "holder is gone without an exit record");
                self.engine.on_error(
                    "its holder process is gone (machine restarted?): run `agentos restore`".into(),
                    now_ms(),
                );
            }
        }
        self.emit_state(ctx);
        let state = self.engine.current().0.clone();
        self.end_subscribers(ServerFrame::Exited { state });
    }
}

/// Attach a client: it receives a snapshot, then every later byte.
#[derive(Message)]
#[rtype(result = "Result<Attached, ErrorInfo>")]
pub struct Attach {
    pub cols: u16,
    pub rows: u16,
    pub tx: mpsc::Sender<ServerFrame>,
    pub direct: bool,
}

/// What an attached client gets besides its stream: a direct line to the
/// holder for keystrokes (the echo path skips the actor hops), valid for
/// this holder connection only.
#[derive(Debug, Clone)]
pub struct Attached {
    pub sub: SubscriberId,
    pub input: Option<mpsc::Sender<HolderCmd>>,
}

impl Handler<Attach> for AgentActor {
    type Result = Result<Attached, ErrorInfo>;
    fn handle(&mut self, msg: Attach, _: &mut Context<Self>) -> Self::Result {
        let id = SubscriberId(self.next_sub);
        self.next_sub += 1;
        // The driver sizes the PTY; resize the model first so the snapshot
        // has the client's geometry.
        if self.holder.is_some() && (msg.cols, msg.rows) != self.term.size() && msg.cols > 0 {
            self.resize_term(msg.cols, msg.rows);
            let _ = self.send_holder(HolderCmd::Resize {
                cols: msg.cols,
                rows: msg.rows,
            });
        }
        let snap = self.term.snapshot();
        let seq = snap.seq;
        msg.tx
            .try_send(snap.into())
            .map_err(|_| ErrorInfo::new(ErrorCode::Internal, "attach queue unavailable"))?;
        if self.engine.current().0.is_terminal() {
            let _ = msg.tx.try_send(ServerFrame::Exited {
                state: self.engine.current().0.clone(),
            });
            return Ok(Attached {
                sub: id,
                input: None,
            });
        }
        let kind = if msg.direct && self.holder.is_some() {
            let _ = msg.tx.try_send(ServerFrame::Direct {
                socket: self.cfg.dir.socket().display().to_string(),
                seq,
            });
            SubKind::Control(msg.tx)
        } else {
            SubKind::Attach(msg.tx)
        };
        self.subs.push(Subscriber {
            id,
            kind,
            lagging: false,
        });
        self.driver = Some(id);
        Ok(Attached {
            sub: id,
            input: self.holder.clone(),
        })
    }
}

/// Follow the plain-text log.
#[derive(Message)]
#[rtype(result = "()")]
pub struct FollowLogs {
    pub tx: mpsc::Sender<ServerFrame>,
}

impl Handler<FollowLogs> for AgentActor {
    type Result = ();
    fn handle(&mut self, msg: FollowLogs, _: &mut Context<Self>) {
        let id = SubscriberId(self.next_sub);
        self.next_sub += 1;
        self.subs.push(Subscriber {
            id,
            kind: SubKind::Logs(msg.tx, Box::default()),
            lagging: false,
        });
    }
}

/// Detach one subscriber (an attached client or a web viewer, whose queue
/// then closes), or every attached CLI client when `sub` is `None` (web
/// viewers stay: their session layer manages them).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Detach {
    pub sub: Option<SubscriberId>,
}

impl Handler<Detach> for AgentActor {
    type Result = ();
    fn handle(&mut self, msg: Detach, _: &mut Context<Self>) {
        self.subs.retain(|s| match &s.kind {
            SubKind::Attach(tx) | SubKind::Control(tx) if msg.sub.is_none_or(|id| id == s.id) => {
                let _ = tx.try_send(ServerFrame::Detached {
                    reason: DetachReason::Requested,
                });
                false
            }
            SubKind::Wire(..) => msg.sub != Some(s.id),
            _ => true,
        });
    }
}

/// Stream this agent's terminal to a web viewer as WebSocket v3 binary
/// frames on `channel`, through its bounded queue `tx`
/// ([`crate::wire_queue::wire_queue`], for example [`WIRE_FRAMES`] frames
/// and [`WIRE_BACKLOG`] bytes).
///
/// In one actor step: with `since = Some(s)` where `s <= seq` and
/// `seq - s <=` [`RESUME_WINDOW`] (`seq`: the next output byte) the viewer
/// gets the log bytes `[s, seq)` as output frames (at most
/// [`REPLAY_PIECE`] bytes each; `resumed`); otherwise one snapshot frame
/// with the paint (recent scrollback, then the screen, see [`wire::paint`]).
/// Then every later chunk as an output frame, exactly once. A full queue
/// (or a backlog over its byte budget) drops frames and marks the viewer
/// lagging; it gets a fresh snapshot frame once half its queue is free, even if the agent has gone quiet. When the agent has exited (now or later) the
/// viewer gets [`WireEvent::Exited`] and is dropped. The queue closes
/// without `Exited` when the agent is restarted or its actor stops:
/// subscribe again, with `since`. Never makes the viewer the driver, never
/// resizes.
#[derive(Message)]
#[rtype(result = "Result<WireSubscribed, ErrorInfo>")]
pub struct WireSubscribe {
    pub channel: Channel,
    pub since: Option<u64>,
    pub tx: WireTx,
}

/// A web viewer's subscription: `Detach { sub: Some(sub) }` ends it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WireSubscribed {
    pub sub: SubscriberId,
    /// The terminal's size when subscribing.
    pub cols: u16,
    pub rows: u16,
    /// Sequence number of the next output byte the viewer will get.
    pub seq: u64,
    /// `true` when the viewer got the bytes from `since` (no snapshot).
    pub resumed: bool,
}

impl Handler<WireSubscribe> for AgentActor {
    type Result = Result<WireSubscribed, ErrorInfo>;
    fn handle(&mut self, msg: WireSubscribe, _: &mut Context<Self>) -> Self::Result {
        let id = SubscriberId(self.next_sub);
        self.next_sub += 1;
        let seq = self.term.seq();
        let (cols, rows) = self.term.size();
        let exited = self.engine.current().0.is_terminal();
        // Room for what this step queues (the replay or the snapshot, and
        // `Exited`); the viewer only ever frees more.
        let room = msg.tx.capacity().saturating_sub(usize::from(exited));
        if room == 0 {
            return Err(ErrorInfo::new(
                ErrorCode::Internal,
                "viewer queue unavailable",
            ));
        }
        let replay = match wire::resume_plan(msg.since, seq, RESUME_WINDOW) {
            ResumePlan::Replay { from, to } => match read_log(&self.cfg.dir.log(), from, to) {
                Ok(bytes) => Some(wire::replay_frames(msg.channel, from, &bytes, REPLAY_PIECE))
                    .filter(|frames| frames.len() <= room),
                Err(e) => {
                    warn!(agent = %self.cfg.name, error = %e, "cannot replay the log: snapshot instead");
                    None
                }
            },
            ResumePlan::Snapshot => None,
        };
        let resumed = replay.is_some();
        let frames = replay
            .unwrap_or_else(|| vec![paint_now(&self.term, &self.cfg.dir).encode(msg.channel)]);
        for f in frames {
            msg.tx
                .try_force(Bytes::from(f))
                .map_err(|_| ErrorInfo::new(ErrorCode::Internal, "viewer queue unavailable"))?;
            self.wire_stats.frames_sent += 1;
        }
        debug!(agent = %self.cfg.name, sub = id.0, seq, resumed, since = ?msg.since, "web viewer subscribed");
        if exited {
            let _ = msg.tx.try_event(WireEvent::Exited {
                state: self.engine.current().0.clone(),
            });
        } else {
            self.subs.push(Subscriber {
                id,
                kind: SubKind::Wire(msg.channel, msg.tx),
                lagging: false,
            });
        }
        Ok(WireSubscribed {
            sub: id,
            cols,
            rows,
            seq,
            resumed,
        })
    }
}

/// The web viewers' counters.
#[derive(Message)]
#[rtype(result = "WireStats")]
pub struct GetWireStats;

impl Handler<GetWireStats> for AgentActor {
    type Result = MessageResult<GetWireStats>;
    fn handle(&mut self, _: GetWireStats, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.wire_stats)
    }
}

/// Resize the terminal model and the PTY, whoever asks: the node's session
/// layer decides who drives. Zero sizes are ignored.
#[derive(Message)]
#[rtype(result = "()")]
pub struct ResizePty {
    pub cols: u16,
    pub rows: u16,
}

impl Handler<ResizePty> for AgentActor {
    type Result = ();
    fn handle(&mut self, msg: ResizePty, ctx: &mut Context<Self>) {
        if msg.cols == 0 || msg.rows == 0 || (msg.cols, msg.rows) == self.term.size() {
            return;
        }
        self.resize_term(msg.cols, msg.rows);
        let _ = self.send_holder(HolderCmd::Resize {
            cols: msg.cols,
            rows: msg.rows,
        });
        // Web viewers learn the new size from a fresh paint (their xterm
        // takes the PTY's size from it; absolute line anchors are kept).
        for s in &mut self.subs {
            if matches!(s.kind, SubKind::Wire(..)) {
                s.lagging = true;
            }
        }
        self.schedule_resync(ctx);
    }
}

/// The plain text of absolute output line `line` (1-based, counted from the
/// start of the session's log), see [`log_line_text`]. The log is scanned
/// on a blocking thread, never on the agent's.
#[derive(Message)]
#[rtype(result = "Option<String>")]
pub struct LineText {
    pub line: u64,
}

impl Handler<LineText> for AgentActor {
    type Result = ResponseFuture<Option<String>>;
    fn handle(&mut self, msg: LineText, _: &mut Context<Self>) -> Self::Result {
        let path = self.cfg.dir.log();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || log_line_text(&path, msg.line))
                .await
                .ok()
                .flatten()
        })
    }
}

#[derive(Message)]
#[rtype(result = "Result<(), ErrorInfo>")]
pub struct Input {
    pub data: Vec<u8>,
}

impl Handler<Input> for AgentActor {
    type Result = Result<(), ErrorInfo>;
    fn handle(&mut self, msg: Input, _: &mut Context<Self>) -> Self::Result {
        self.send_holder(HolderCmd::Input { data: msg.data })?;
        self.engine.on_input(now_ms());
        Ok(())
    }
}

/// A direct client fell behind in the holder: send it a fresh snapshot and
/// the sequence number to resubscribe from.
#[derive(Message)]
#[rtype(result = "()")]
pub struct ResyncDirect {
    pub tx: mpsc::Sender<ServerFrame>,
}

impl Handler<ResyncDirect> for AgentActor {
    type Result = ();
    fn handle(&mut self, msg: ResyncDirect, _: &mut Context<Self>) {
        let snap = self.term.snapshot();
        let seq = snap.seq;
        let _ = msg.tx.try_send(snap.into());
        let _ = msg.tx.try_send(ServerFrame::Direct {
            socket: self.cfg.dir.socket().display().to_string(),
            seq,
        });
    }
}

/// Keystrokes from an attached terminal (`agentos attach`, here or from
/// another device) reached the holder: the state engine learns of it, and
/// the node tags the input for web viewers ([`AgentEvent::LocalInput`]).
#[derive(Message)]
#[rtype(result = "()")]
pub struct InputSeen;

impl Handler<InputSeen> for AgentActor {
    type Result = ();
    fn handle(&mut self, _: InputSeen, _: &mut Context<Self>) {
        let now = now_ms();
        self.engine.on_input(now);
        if now.saturating_sub(self.local_input_at) >= LOCAL_INPUT_EVERY.as_millis() as u64 {
            self.local_input_at = now;
            self.events.do_send(AgentEvent::LocalInput {
                agent_id: self.cfg.id.clone(),
            });
        }
    }
}

/// `agentos send`: type text, then Enter after the agent's Enter delay.
#[derive(Message)]
#[rtype(result = "Result<(), ErrorInfo>")]
pub struct SendText {
    pub text: String,
    pub enter: bool,
}

impl Handler<SendText> for AgentActor {
    type Result = Result<(), ErrorInfo>;
    fn handle(&mut self, msg: SendText, ctx: &mut Context<Self>) -> Self::Result {
        self.send_holder(HolderCmd::Input {
            data: msg.text.into_bytes(),
        })?;
        self.engine.on_input(now_ms());
        if msg.enter {
            if self.cfg.enter_delay_ms == 0 {
                self.send_holder(HolderCmd::Input {
                    data: b"\r".to_vec(),
                })?;
            } else {
                ctx.run_later(Duration::from_millis(self.cfg.enter_delay_ms), |act, _| {
                    let _ = act.send_holder(HolderCmd::Input {
                        data: b"\r".to_vec(),
                    });
                });
            }
        }
        Ok(())
    }
}

#[derive(Message)]
#[rtype(result = "()")]
pub struct Resize {
    pub sub: SubscriberId,
    pub cols: u16,
    pub rows: u16,
}

impl Handler<Resize> for AgentActor {
    type Result = ();
    fn handle(&mut self, msg: Resize, _: &mut Context<Self>) {
        if self.driver != Some(msg.sub) || msg.cols == 0 || msg.rows == 0 {
            return;
        }
        self.resize_term(msg.cols, msg.rows);
        let _ = self.send_holder(HolderCmd::Resize {
            cols: msg.cols,
            rows: msg.rows,
        });
    }
}

#[derive(Message)]
#[rtype(result = "LiveInfo")]
pub struct GetInfo;

impl Handler<GetInfo> for AgentActor {
    type Result = MessageResult<GetInfo>;
    fn handle(&mut self, _: GetInfo, _: &mut Context<Self>) -> Self::Result {
        let (state, source) = self.engine.current().clone();
        MessageResult(LiveInfo {
            state,
            source,
            pid: self.pid.filter(|_| self.holder.is_some()),
            started_at_ms: self.started_at_ms,
            connected: self.holder.is_some(),
        })
    }
}

#[derive(Message)]
#[rtype(result = "(LiveInfo, Vec<Explained>)")]
pub struct Explain;

impl Handler<Explain> for AgentActor {
    type Result = MessageResult<Explain>;
    fn handle(&mut self, _: Explain, ctx: &mut Context<Self>) -> Self::Result {
        let MessageResult(info) = self.handle(GetInfo, ctx);
        MessageResult((info, self.engine.explain(now_ms())))
    }
}

/// Resolve `tx` once the state reaches `until` (or can no longer).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Wait {
    pub until: WaitTarget,
    pub tx: oneshot::Sender<AgentState>,
}

impl Handler<Wait> for AgentActor {
    type Result = ();
    fn handle(&mut self, msg: Wait, _: &mut Context<Self>) {
        let cur = &self.engine.current().0;
        if reached(msg.until, cur) {
            let _ = msg.tx.send(cur.clone());
        } else {
            self.waiters.retain(|w| !w.tx.is_closed());
            self.waiters.push(Waiter {
                until: msg.until,
                tx: msg.tx,
            });
        }
    }
}

/// One of the agent's own hooks fired.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Hook {
    pub event: String,
    pub payload: String,
    pub at_ms: u64,
}

impl Handler<Hook> for AgentActor {
    type Result = ();
    fn handle(&mut self, msg: Hook, ctx: &mut Context<Self>) {
        if let Some(field) = &self.cfg.resume_field
            && let Ok(v) = serde_json::from_str::<serde_json::Value>(&msg.payload)
            && let Some(id) = v.get(field).and_then(|x| x.as_str())
            && !id.is_empty()
        {
            self.events.do_send(AgentEvent::ResumeId {
                agent_id: self.cfg.id.clone(),
                resume_id: id.to_string(),
            });
        }
        if self.engine.current().0.is_terminal() {
            return;
        }
        if self.engine.on_hook(&msg.event, msg.at_ms) {
            self.emit_state(ctx);
        }
    }
}

/// The node stopped the agent for a reason (a resource limit): it becomes
/// `error` with that reason, whatever its exit code will be.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Fail {
    pub message: String,
}

impl Handler<Fail> for AgentActor {
    type Result = ();
    fn handle(&mut self, msg: Fail, ctx: &mut Context<Self>) {
        warn!(agent = %self.cfg.name, reason = %msg.message, "agent failed");
        self.engine.on_error(msg.message, now_ms());
        self.emit_state(ctx);
    }
}

/// Signal the agent's process group.
#[derive(Message)]
#[rtype(result = "Result<(), ErrorInfo>")]
pub struct Kill {
    pub signal: i32,
}

impl Handler<Kill> for AgentActor {
    type Result = Result<(), ErrorInfo>;
    fn handle(&mut self, msg: Kill, _: &mut Context<Self>) -> Self::Result {
        self.send_holder(HolderCmd::Signal { signal: msg.signal })
    }
}

/// A new holder was started for this agent (restart/restore): reconnect and
/// continue the same log.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Reconnect;

impl Handler<Reconnect> for AgentActor {
    type Result = ();
    fn handle(&mut self, _: Reconnect, ctx: &mut Context<Self>) {
        self.engine.restart(now_ms());
        self.end_subscribers(ServerFrame::Detached {
            reason: DetachReason::AgentGone,
        });
        self.connect(ctx, false);
        self.emit_state(ctx);
    }
}

/// Resolves `true` once the holder is connected (at once if it is), `false`
/// if the connection attempt failed.
#[derive(Message)]
#[rtype(result = "()")]
pub struct WhenConnected {
    pub tx: oneshot::Sender<bool>,
}

impl Handler<WhenConnected> for AgentActor {
    type Result = ();
    fn handle(&mut self, msg: WhenConnected, _: &mut Context<Self>) {
        if self.connecting {
            self.connect_waiters.push(msg.tx);
        } else {
            let _ = msg.tx.send(self.holder.is_some());
        }
    }
}

/// Stop the actor; clients are told the agent is gone.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Shutdown {
    pub reason: DetachReason,
}

impl Handler<Shutdown> for AgentActor {
    type Result = ();
    fn handle(&mut self, msg: Shutdown, ctx: &mut Context<Self>) {
        self.end_subscribers(ServerFrame::Detached { reason: msg.reason });
        ctx.stop();
    }
}

#[cfg(test)]
mod tests {
    //! The web viewers' stream against a fake holder speaking the real
    //! holder protocol over `holder.sock`.
    use super::*;
    use crate::wire_queue::{WireRx, wire_queue};
    use agentos_proto::ws::{Frame, decode_frame};
    use tokio::net::UnixListener;
    use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};

    struct Sink;
    impl Actor for Sink {
        type Context = Context<Self>;
    }
    impl Handler<AgentEvent> for Sink {
        type Result = ();
        fn handle(&mut self, _: AgentEvent, _: &mut Context<Self>) {}
    }

    enum Fake {
        Output(Vec<u8>),
        Exit(i32),
    }

    struct Harness {
        _tmp: tempfile::TempDir,
        dir: AgentDir,
        addr: Addr<AgentActor>,
        fake: UnboundedSender<Fake>,
        cmds: UnboundedReceiver<HolderCmd>,
    }

    impl Harness {
        /// A fake holder whose log already holds `history`, and an agent
        /// actor connected to it (with the history replayed).
        async fn start(history: &[u8]) -> Harness {
            let tmp = tempfile::tempdir().unwrap();
            let dir = AgentDir(tmp.path().to_path_buf());
            std::fs::write(dir.log(), history).unwrap();
            let listener = UnixListener::bind(dir.socket()).unwrap();
            let (fake, mut fake_rx) = unbounded_channel::<Fake>();
            let (cmd_tx, cmds) = unbounded_channel::<HolderCmd>();
            let log = dir.log();
            actix::spawn(async move {
                let (mut stream, _) = listener.accept().await.unwrap();
                let mut hello = [0u8; 8];
                stream.read_exact(&mut hello).await.unwrap();
                stream
                    .write_all(&hello_bytes(HOLDER_MAGIC, PROTOCOL_VERSION))
                    .await
                    .unwrap();
                let (mut rd, mut wr) = stream.into_split();
                let mut total = std::fs::metadata(&log).unwrap().len();
                let info = HolderEvent::Info {
                    holder_pid: 1,
                    child_pid: Some(2),
                    total,
                    started_seq: 0,
                    started_at_ms: 0,
                    cols: 80,
                    rows: 24,
                };
                write_frame_async(&mut wr, &info).await.unwrap();
                let HolderCmd::Subscribe { since, .. } = read_frame_async(&mut rd).await.unwrap()
                else {
                    panic!("no subscribe");
                };
                let all = std::fs::read(&log).unwrap();
                for (i, c) in all[since as usize..].chunks(64 * 1024).enumerate() {
                    let seq = since + (i * 64 * 1024) as u64;
                    let ev = HolderEvent::Output {
                        seq,
                        data: c.to_vec(),
                    };
                    write_frame_async(&mut wr, &ev).await.unwrap();
                }
                actix::spawn(async move {
                    while let Ok(cmd) = read_frame_async::<HolderCmd, _>(&mut rd).await {
                        let _ = cmd_tx.send(cmd);
                    }
                });
                while let Some(f) = fake_rx.recv().await {
                    match f {
                        Fake::Output(data) => {
                            // Like the holder: the log first, then the daemon.
                            use std::io::Write;
                            let mut f =
                                std::fs::OpenOptions::new().append(true).open(&log).unwrap();
                            f.write_all(&data).unwrap();
                            let ev = HolderEvent::Output { seq: total, data };
                            total += ev_len(&ev);
                            write_frame_async(&mut wr, &ev).await.unwrap();
                        }
                        Fake::Exit(code) => {
                            let ev = HolderEvent::Exited { code, signal: None };
                            write_frame_async(&mut wr, &ev).await.unwrap();
                            break;
                        }
                    }
                }
            });
            let cfg = AgentConfig {
                id: "a1".into(),
                name: "fake".into(),
                dir: dir.clone(),
                hook_map: Vec::new(),
                rules: Vec::new(),
                cols: 80,
                rows: 24,
                enter_delay_ms: 0,
                resume_field: None,
                adopt: false,
            };
            let addr = AgentActor::new(cfg, Sink.start().recipient()).start();
            let (tx, rx) = oneshot::channel();
            addr.send(WhenConnected { tx }).await.unwrap();
            assert!(rx.await.unwrap(), "connected to the fake holder");
            let h = Harness {
                _tmp: tmp,
                dir,
                addr,
                fake,
                cmds,
            };
            h.wait_seq(history.len() as u64).await;
            h
        }

        /// Until the model has seen `n` bytes.
        async fn wait_seq(&self, n: u64) {
            for _ in 0..500 {
                let (tx, _rx) = wire_queue(4, WIRE_BACKLOG);
                let got = self.subscribe_with(Channel(99), None, tx).await.unwrap();
                self.addr.send(Detach { sub: Some(got.sub) }).await.unwrap();
                if got.seq >= n {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            panic!("the agent never reached sequence number {n}");
        }

        async fn subscribe_with(
            &self,
            channel: Channel,
            since: Option<u64>,
            tx: WireTx,
        ) -> Result<WireSubscribed, ErrorInfo> {
            self.addr
                .send(WireSubscribe { channel, since, tx })
                .await
                .unwrap()
        }

        async fn subscribe(
            &self,
            channel: Channel,
            since: Option<u64>,
            queue: usize,
        ) -> (WireSubscribed, WireRx) {
            self.subscribe_budget(channel, since, queue, WIRE_BACKLOG)
                .await
        }

        async fn subscribe_budget(
            &self,
            channel: Channel,
            since: Option<u64>,
            queue: usize,
            budget: u64,
        ) -> (WireSubscribed, WireRx) {
            let (tx, rx) = wire_queue(queue, budget);
            (self.subscribe_with(channel, since, tx).await.unwrap(), rx)
        }

        fn emit(&self, data: &[u8]) {
            self.fake.send(Fake::Output(data.to_vec())).unwrap();
        }

        async fn stats(&self) -> WireStats {
            self.addr.send(GetWireStats).await.unwrap()
        }
    }

    fn ev_len(ev: &HolderEvent) -> u64 {
        match ev {
            HolderEvent::Output { data, .. } => data.len() as u64,
            _ => 0,
        }
    }

    /// The next event; its bytes count as written at once.
    async fn next(rx: &mut WireRx) -> Option<WireEvent> {
        tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .expect("a viewer event in time")
            .map(|(ev, _written)| ev)
    }

    /// What a viewer sees, decoded.
    #[derive(Debug, PartialEq)]
    enum Seen {
        Output {
            channel: u8,
            seq: u64,
            data: Vec<u8>,
        },
        Snapshot {
            channel: u8,
            seq: u64,
            first_line: u64,
            data: Vec<u8>,
        },
        Exited,
    }

    async fn seen(rx: &mut WireRx) -> Option<Seen> {
        Some(match next(rx).await? {
            WireEvent::Frame(b) => match decode_frame(&b).unwrap() {
                Frame::Output { channel, seq, data } => Seen::Output {
                    channel: channel.0,
                    seq,
                    data: data.to_vec(),
                },
                Frame::Snapshot {
                    channel,
                    seq,
                    first_line,
                    data,
                    ..
                } => Seen::Snapshot {
                    channel: channel.0,
                    seq,
                    first_line,
                    data: data.to_vec(),
                },
                Frame::Input { .. } => panic!("input frame to a viewer"),
            },
            WireEvent::Exited { state } => {
                assert!(state.is_terminal());
                Seen::Exited
            }
        })
    }

    /// Output bytes from `from` until `until` (exclusive), checking that the
    /// frames are contiguous.
    async fn output_until(rx: &mut WireRx, from: u64, until: u64) -> Vec<u8> {
        let mut next_seq = from;
        let mut out = Vec::new();
        while next_seq < until {
            match seen(rx).await {
                Some(Seen::Output { seq, data, .. }) => {
                    assert_eq!(seq, next_seq, "contiguous output");
                    next_seq += data.len() as u64;
                    out.extend_from_slice(&data);
                }
                other => panic!("expected output at {next_seq}, got {other:?}"),
            }
        }
        out
    }

    fn numbered(n: usize) -> Vec<u8> {
        (1..=n)
            .flat_map(|i| format!("line {i}\r\n").into_bytes())
            .collect()
    }

    #[actix_rt::test]
    async fn wire_encodes_each_chunk_once_for_many_viewers() {
        let h = Harness::start(b"hello\r\n").await;
        let mut viewers = Vec::new();
        for i in 0..40u8 {
            let channel = Channel(if i < 30 { 0 } else { 1 });
            let (got, mut rx) = h.subscribe(channel, None, SUBSCRIBER_QUEUE).await;
            assert_eq!((got.seq, got.resumed), (7, false));
            assert_eq!((got.cols, got.rows), (80, 24));
            match seen(&mut rx).await {
                Some(Seen::Snapshot {
                    channel: c,
                    seq,
                    first_line,
                    ..
                }) => {
                    assert_eq!((c, seq, first_line), (channel.0, 7, 1));
                }
                other => panic!("expected a snapshot, got {other:?}"),
            }
            viewers.push((channel, rx));
        }
        let before = h.stats().await;
        let mut sent = Vec::new();
        for i in 0..20 {
            let chunk = format!("chunk {i}\r\n").into_bytes();
            h.emit(&chunk);
            sent.extend_from_slice(&chunk);
        }
        let end = 7 + sent.len() as u64;
        for (channel, rx) in &mut viewers {
            let mut next_seq = 7;
            let mut got = Vec::new();
            while next_seq < end {
                match seen(rx).await {
                    Some(Seen::Output {
                        channel: c,
                        seq,
                        data,
                    }) => {
                        assert_eq!((c, seq), (channel.0, next_seq));
                        next_seq += data.len() as u64;
                        got.extend_from_slice(&data);
                    }
                    other => panic!("{other:?}"),
                }
            }
            assert_eq!(got, sent);
        }
        let after = h.stats().await;
        // Each chunk encoded once per distinct channel (2), not per viewer (40).
        assert_eq!(after.encodes - before.encodes, 20 * 2);
        assert_eq!(after.frames_sent - before.frames_sent, 20 * 40);
        assert_eq!(after.lagged, 0);
    }

    #[actix_rt::test]
    async fn wire_resume_from_since_is_exact() {
        let history = numbered(300);
        let len = history.len() as u64;
        let h = Harness::start(&history).await;

        let (got, mut rx) = h.subscribe(Channel(3), Some(100), SUBSCRIBER_QUEUE).await;
        assert_eq!((got.seq, got.resumed), (len, true));
        h.emit(b"more\r\n");
        let bytes = output_until(&mut rx, 100, len + 6).await;
        let mut want = history[100..].to_vec();
        want.extend_from_slice(b"more\r\n");
        assert_eq!(bytes, want);
        h.wait_seq(len + 6).await;

        // Up to date: nothing to replay, then the live stream.
        let (got, mut rx) = h.subscribe(Channel(3), Some(len + 6), 4).await;
        assert_eq!((got.seq, got.resumed), (len + 6, true));
        h.emit(b"x");
        assert_eq!(output_until(&mut rx, len + 6, len + 7).await, b"x");
        h.wait_seq(len + 7).await;

        // Beyond the end, or no since: a snapshot (with scrollback).
        for since in [Some(len + 100), None] {
            let (got, mut rx) = h.subscribe(Channel(3), since, 4).await;
            assert_eq!((got.seq, got.resumed), (len + 7, false));
            match seen(&mut rx).await {
                Some(Seen::Snapshot {
                    seq,
                    first_line,
                    data,
                    ..
                }) => {
                    assert_eq!((seq, first_line), (len + 7, 1));
                    assert!(data.starts_with(b"line 1\r\nline 2\r\n"));
                }
                other => panic!("{other:?}"),
            }
        }
    }

    #[actix_rt::test]
    async fn wire_resume_window_and_queue_room() {
        // More than the resume window of history.
        let history = numbered(130_000);
        let len = history.len() as u64;
        assert!(len > RESUME_WINDOW + 1000);
        let h = Harness::start(&history).await;

        let (got, mut rx) = h.subscribe(Channel(0), Some(0), SUBSCRIBER_QUEUE).await;
        assert!(!got.resumed, "too far back: snapshot");
        assert!(matches!(seen(&mut rx).await, Some(Seen::Snapshot { .. })));

        let since = len - RESUME_WINDOW;
        let (got, mut rx) = h.subscribe(Channel(0), Some(since), SUBSCRIBER_QUEUE).await;
        assert!(got.resumed);
        let bytes = output_until(&mut rx, since, len).await;
        assert_eq!(bytes, &history[since as usize..]);

        // A queue without room for the 16 pieces gets a snapshot instead.
        let (got, mut rx) = h.subscribe(Channel(0), Some(since), 8).await;
        assert!(!got.resumed);
        match seen(&mut rx).await {
            Some(Seen::Snapshot {
                seq, first_line, ..
            }) => {
                assert_eq!(seq, len);
                assert_eq!(first_line, 130_000 - 23 - SCROLLBACK_LINES_U64 + 1);
            }
            other => panic!("{other:?}"),
        }
    }

    const SCROLLBACK_LINES_U64: u64 = SCROLLBACK_LINES as u64;

    #[actix_rt::test]
    async fn wire_lagging_viewer_is_resynced_without_slowing_others() {
        let h = Harness::start(b"").await;
        let (_, mut slow) = h.subscribe(Channel(0), None, 3).await;
        let (_, mut fast) = h.subscribe(Channel(0), None, SUBSCRIBER_QUEUE).await;
        assert!(matches!(
            seen(&mut fast).await,
            Some(Seen::Snapshot { seq: 0, .. })
        ));
        let mut sent = Vec::new();
        for i in 0..10 {
            let chunk = format!("c{i}\r\n").into_bytes();
            h.emit(&chunk);
            sent.extend_from_slice(&chunk);
        }
        let total = sent.len() as u64;
        // The fast viewer gets everything while the slow one does not read.
        assert_eq!(output_until(&mut fast, 0, total).await, sent);
        let stats = h.stats().await;
        assert!(stats.lagged >= 1);

        // The slow viewer: its snapshot, the two chunks that fit, then — once
        // it has room, with the agent quiet — a fresh snapshot at the end.
        assert!(matches!(
            seen(&mut slow).await,
            Some(Seen::Snapshot { seq: 0, .. })
        ));
        assert_eq!(output_until(&mut slow, 0, 8).await, &sent[..8]);
        match seen(&mut slow).await {
            Some(Seen::Snapshot {
                seq,
                first_line,
                data,
                ..
            }) => {
                assert_eq!((seq, first_line), (total, 1));
                let mut v = vt100::Parser::new(24, 80, 100);
                v.process(&data);
                assert!(v.screen().contents().starts_with("c0\nc1\n"));
            }
            other => panic!("expected a resync snapshot, got {other:?}"),
        }
        assert_eq!(h.stats().await.resyncs, 1);
        // And then the live stream again.
        h.emit(b"after");
        assert_eq!(output_until(&mut slow, total, total + 5).await, b"after");
        assert_eq!(output_until(&mut fast, total, total + 5).await, b"after");
    }

    #[actix_rt::test]
    async fn wire_viewer_over_its_byte_budget_lags_and_is_resynced() {
        let h = Harness::start(b"").await;
        // Room for many frames but only 64 bytes of unsent output.
        let (_, mut slow) = h.subscribe_budget(Channel(0), None, 1000, 64).await;
        let (_, mut fast) = h.subscribe(Channel(0), None, SUBSCRIBER_QUEUE).await;
        // The slow viewer holds its snapshot (unwritten).
        let (ev, held) = slow.rx_next().await;
        assert!(matches!(ev, WireEvent::Frame(_)));
        let mut sent = Vec::new();
        for i in 0..10 {
            let chunk = format!("chunk number {i}\r\n").into_bytes();
            h.emit(&chunk);
            sent.extend_from_slice(&chunk);
        }
        let total = sent.len() as u64;
        assert!(matches!(
            seen(&mut fast).await,
            Some(Seen::Snapshot { seq: 0, .. })
        ));
        assert_eq!(output_until(&mut fast, 0, total).await, sent);
        // 64 bytes of live output fit (the unwritten snapshot has a budget
        // of its own); the rest was refused: lagging.
        let stats = h.stats().await;
        assert!(stats.lagged >= 1, "{stats:?}");
        assert_eq!(stats.resyncs, 0);
        // Once the socket takes what was queued, a fresh snapshot follows.
        drop(held);
        let mut live = 0;
        loop {
            match seen(&mut slow).await {
                Some(Seen::Output { data, .. }) => live += data.len(),
                Some(Seen::Snapshot { seq, data, .. }) => {
                    assert_eq!(seq, total);
                    let mut v = vt100::Parser::new(24, 80, 100);
                    v.process(&data);
                    assert!(v.screen().contents().contains("chunk number 9"));
                    break;
                }
                other => panic!("expected output then a resync snapshot, got {other:?}"),
            }
        }
        assert!(live > 0 && live <= 64, "{live} bytes of live output");
        assert_eq!(h.stats().await.resyncs, 1);
    }

    impl WireRx {
        /// The next event with its hold on the bytes (not yet written).
        async fn rx_next(&mut self) -> (WireEvent, crate::wire_queue::Backlog) {
            tokio::time::timeout(Duration::from_secs(10), self.recv())
                .await
                .expect("a viewer event in time")
                .expect("open queue")
        }
    }

    #[actix_rt::test]
    async fn wire_viewers_learn_of_exit() {
        let h = Harness::start(b"hi\r\n").await;
        let (_, mut rx) = h.subscribe(Channel(0), None, SUBSCRIBER_QUEUE).await;
        assert!(matches!(seen(&mut rx).await, Some(Seen::Snapshot { .. })));
        h.emit(b"bye\r\n");
        h.fake.send(Fake::Exit(3)).unwrap();
        assert_eq!(output_until(&mut rx, 4, 9).await, b"bye\r\n");
        assert_eq!(seen(&mut rx).await, Some(Seen::Exited));
        assert_eq!(seen(&mut rx).await, None, "dropped after exit");

        // Joining after the exit: the paint (or the replay), then `Exited`.
        let (got, mut rx) = h.subscribe(Channel(0), None, 4).await;
        assert!(!got.resumed);
        assert!(matches!(
            seen(&mut rx).await,
            Some(Seen::Snapshot { seq: 9, .. })
        ));
        assert_eq!(seen(&mut rx).await, Some(Seen::Exited));
        assert_eq!(seen(&mut rx).await, None);
        let (got, mut rx) = h.subscribe(Channel(0), Some(4), 4).await;
        assert!(got.resumed);
        assert_eq!(output_until(&mut rx, 4, 9).await, b"bye\r\n");
        assert_eq!(seen(&mut rx).await, Some(Seen::Exited));
        // No room for `Exited` besides the paint: refused.
        let (tx, _rx) = wire_queue(1, WIRE_BACKLOG);
        assert!(h.subscribe_with(Channel(0), None, tx).await.is_err());
    }

    #[actix_rt::test]
    async fn wire_detach_and_resize() {
        let mut h = Harness::start(b"").await;
        let (a, mut rx_a) = h.subscribe(Channel(0), None, 8).await;
        let (b, mut rx_b) = h.subscribe(Channel(1), None, 8).await;
        // `Detach { sub: None }` is for CLI clients: viewers stay.
        h.addr.send(Detach { sub: None }).await.unwrap();
        h.addr.send(Detach { sub: Some(a.sub) }).await.unwrap();
        assert!(matches!(seen(&mut rx_a).await, Some(Seen::Snapshot { .. })));
        assert_eq!(
            seen(&mut rx_a).await,
            None,
            "detached viewer's queue closes"
        );
        h.emit(b"x");
        assert!(matches!(seen(&mut rx_b).await, Some(Seen::Snapshot { .. })));
        assert_eq!(output_until(&mut rx_b, 0, 1).await, b"x");

        // A viewer is never the driver: its `Resize` is ignored.
        h.addr
            .send(Resize {
                sub: b.sub,
                cols: 50,
                rows: 10,
            })
            .await
            .unwrap();
        // `ResizePty` resizes whoever asks.
        h.addr
            .send(ResizePty {
                cols: 100,
                rows: 30,
            })
            .await
            .unwrap();
        let cmd = tokio::time::timeout(Duration::from_secs(10), h.cmds.recv())
            .await
            .unwrap();
        assert_eq!(
            cmd,
            Some(HolderCmd::Resize {
                cols: 100,
                rows: 30
            })
        );
        let (got, _rx) = h.subscribe(Channel(0), None, 4).await;
        assert_eq!((got.cols, got.rows), (100, 30));
        assert!(
            h.cmds.try_recv().is_err(),
            "no other resize reached the PTY"
        );
    }

    #[actix_rt::test]
    async fn line_text_finds_absolute_lines() {
        // Long enough to cross the 64 KiB read buffer many times.
        let mut history = Vec::new();
        for i in 1..=20_000 {
            history.extend_from_slice(format!("\x1b[1mline\x1b[0m {i}   \r\n").as_bytes());
        }
        history.extend_from_slice(b"\r\n50%\rdone");
        let h = Harness::start(&history).await;
        let log = h.dir.log();
        assert_eq!(log_line_text(&log, 0), None);
        assert_eq!(log_line_text(&log, 1).as_deref(), Some("line 1"));
        assert_eq!(log_line_text(&log, 4321).as_deref(), Some("line 4321"));
        assert_eq!(log_line_text(&log, 20_000).as_deref(), Some("line 20000"));
        assert_eq!(log_line_text(&log, 20_001).as_deref(), Some(""));
        assert_eq!(log_line_text(&log, 20_002).as_deref(), Some("done"));
        assert_eq!(log_line_text(&log, 20_003), None);
        let got = h.addr.send(LineText { line: 777 }).await.unwrap();
        assert_eq!(got.as_deref(), Some("line 777"));
        assert_eq!(h.addr.send(LineText { line: 0 }).await.unwrap(), None);
        // A log that ends with a newline has no line after it yet.
        h.emit(b"\n");
        h.wait_seq(history.len() as u64 + 1).await;
        assert_eq!(log_line_text(&log, 20_002).as_deref(), Some("done"));
        assert_eq!(log_line_text(&log, 20_003), None);
        assert_eq!(log_line_text(&h.dir.0.join("missing"), 1), None);
    }
}
