//! `AgentActor`: one per agent. It connects to the agent's PTY holder, feeds
//! output through the terminal model and the state engine, and fans output
//! out to attached clients.
//!
//! Invariants:
//! - Attaching takes the snapshot and registers the subscriber in one actor
//!   step, so the subscriber gets every byte after the snapshot exactly once.
//! - Every subscriber has a bounded queue; a full queue marks it lagging and
//!   it is resynced with a fresh snapshot when room frees up. The agent never
//!   waits on a client.
//! - Holder output is applied in sequence order; repeated bytes (a reconnect
//!   that overlaps) are trimmed by sequence number.

use crate::holder::AgentDir;
use crate::plaintext::PlainText;
use crate::state::{Explained, HookMapping, ScreenRule, StateEngine};
use crate::term::TermModel;
use actix::prelude::*;
use agentos_crdt::{AgentState, StateTransition};
use agentos_proto::{
    DetachReason, ErrorCode, ErrorInfo, HOLDER_MAGIC, HolderCmd, HolderEvent, PROTOCOL_VERSION,
    ServerFrame, WaitTarget, check_hello, hello_bytes, read_frame_async, write_frame_async,
};
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
}

/// A live summary of the agent.
#[derive(Debug, Clone)]
pub struct LiveInfo {
    pub state: AgentState,
    pub source: String,
    pub pid: Option<u32>,
    pub started_at_ms: Option<u64>,
    pub connected: bool,
}

enum SubKind {
    Attach,
    /// A direct client: output comes from the holder; it only gets
    /// `Exited`/`Detached` from here.
    Control,
    Logs(Box<PlainText>),
}

struct Subscriber {
    id: SubscriberId,
    tx: mpsc::Sender<ServerFrame>,
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
        self.subs.retain_mut(|s| match &mut s.kind {
            SubKind::Control => !s.tx.is_closed(),
            SubKind::Attach => {
                if s.lagging {
                    if s.tx.capacity() == 0 {
                        return !s.tx.is_closed();
                    }
                    return match s.tx.try_send(term.snapshot().into()) {
                        Ok(()) => {
                            s.lagging = false;
                            true
                        }
                        Err(mpsc::error::TrySendError::Full(_)) => true,
                        Err(mpsc::error::TrySendError::Closed(_)) => false,
                    };
                }
                match s.tx.try_send(ServerFrame::Output {
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
            SubKind::Logs(pt) => {
                pt.feed(data);
                let lines = pt.take_lines();
                if lines.is_empty() {
                    return !s.tx.is_closed();
                }
                let mut text = lines.join("\n");
                if s.lagging {
                    text = format!("[agentos: lines skipped, the reader was too slow]\n{text}");
                }
                match s.tx.try_send(ServerFrame::LogText { text }) {
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

    /// Resync lagging attach subscribers whose queue has room again, even
    /// when the agent is quiet; retry while any is still lagging.
    fn schedule_resync(&mut self, ctx: &mut Context<Self>) {
        let lagging = self
            .subs
            .iter()
            .any(|s| s.lagging && matches!(s.kind, SubKind::Attach));
        if !lagging || self.resync_pending {
            return;
        }
        self.resync_pending = true;
        ctx.run_later(RESYNC_RETRY, |act, ctx| {
            act.resync_pending = false;
            let term = &act.term;
            act.subs.retain_mut(|s| {
                if !s.lagging || !matches!(s.kind, SubKind::Attach) {
                    return true;
                }
                if s.tx.is_closed() {
                    return false;
                }
                if s.tx.capacity() > 0 && s.tx.try_send(term.snapshot().into()).is_ok() {
                    s.lagging = false;
                }
                true
            });
            act.schedule_resync(ctx);
        });
    }

    fn end_subscribers(&mut self, frame: ServerFrame) {
        for s in self.subs.drain(..) {
            // Best effort: a full queue means the client is gone or hopeless.
            let _ = s.tx.try_send(frame.clone());
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
            self.term.resize(msg.cols, msg.rows);
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
            SubKind::Control
        } else {
            SubKind::Attach
        };
        self.subs.push(Subscriber {
            id,
            tx: msg.tx,
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
            tx: msg.tx,
            kind: SubKind::Logs(Box::default()),
            lagging: false,
        });
    }
}

/// Detach one subscriber, or every attached client when `sub` is `None`.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Detach {
    pub sub: Option<SubscriberId>,
}

impl Handler<Detach> for AgentActor {
    type Result = ();
    fn handle(&mut self, msg: Detach, _: &mut Context<Self>) {
        self.subs.retain(|s| {
            let hit = matches!(s.kind, SubKind::Attach | SubKind::Control)
                && msg.sub.is_none_or(|id| id == s.id);
            if hit {
                let _ = s.tx.try_send(ServerFrame::Detached {
                    reason: DetachReason::Requested,
                });
            }
            !hit
        });
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

/// Keystrokes went straight to the holder: only the state engine needs to know.
#[derive(Message)]
#[rtype(result = "()")]
pub struct InputSeen;

impl Handler<InputSeen> for AgentActor {
    type Result = ();
    fn handle(&mut self, _: InputSeen, _: &mut Context<Self>) {
        self.engine.on_input(now_ms());
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
        self.term.resize(msg.cols, msg.rows);
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
