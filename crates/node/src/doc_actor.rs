//! `DocActor`: owns one workspace's Automerge document, the source of truth
//! for its sessions and agents, inside that workspace's sync engine. Every
//! mutation is one transaction, followed by `save_incremental` into the
//! store; every 64 chunks the document is compacted into one full save.
//! When sync is on, a local change also becomes a sealed envelope (gossip
//! and relay) and sync messages for connected peers, handed to the
//! `SwarmActor`; remote envelopes and sync messages come back the same way.

use crate::store::Store;
use crate::swarm::FromDoc;
use actix::prelude::*;
use agentos_crdt::{
    ActorId, AgentId, AgentRecord, Comment, CrdtError, SessionRecord, StateTransition, WorkspaceDoc,
};
use agentos_p2p::DeviceIdentity;
use agentos_p2p::engine::{Engine, Out, PeerKey};
use agentos_p2p::roster::Roster;
use tracing::{debug, error, warn};

/// Sealing sequence numbers skipped at each load: the persisted value may
/// lag the last one used (it rides sled's periodic flush), and a number
/// must never be reused.
const SEQ_SKIP: u64 = 1000;

const COMPACT_EVERY: usize = 64;

/// A typed mutation of the workspace document.
#[derive(Debug, Clone)]
pub enum DocOp {
    UpsertAgent {
        record: Box<AgentRecord>,
    },
    Transition {
        agent: AgentId,
        transition: StateTransition,
    },
    ResumeId {
        agent: AgentId,
        resume_id: String,
    },
    Pid {
        agent: AgentId,
        pid: Option<u32>,
    },
    Removed {
        agent: AgentId,
        at_ms: u64,
    },
    UpsertSession {
        session: SessionRecord,
    },
    AddComment {
        comment: Box<Comment>,
    },
    ResolveComment {
        id: String,
        resolved: bool,
        by: String,
        at_ms: u64,
    },
    DeleteComment {
        id: String,
        at_ms: u64,
    },
    React {
        id: String,
        emoji: String,
        person: String,
        name: String,
        on: bool,
    },
}

pub struct DocActor {
    ws_id: String,
    engine: Engine,
    store: Store,
    chunks: usize,
    swarm: Option<Recipient<FromDoc>>,
    sync: bool,
    /// The web server, once it is up: told when a remote change lands, so
    /// live viewers see comments from other devices at once.
    web: WebSlot,
    /// The workspace's directory, where the memory projections go (known
    /// once a client names it, or from the store's workspace index).
    root: Option<std::path::PathBuf>,
    /// The projections last written there.
    projected: Option<crate::memory::Projections>,
}

/// Where the web server's shared state appears once it has started (it
/// starts after the documents are loaded).
pub type WebSlot = std::sync::Arc<std::sync::OnceLock<std::sync::Arc<crate::web::WebShared>>>;

fn hex(k: &PeerKey) -> String {
    k.iter().map(|b| format!("{b:02x}")).collect()
}

fn apply_op(doc: &mut WorkspaceDoc, op: DocOp) -> Result<(), CrdtError> {
    match op {
        DocOp::UpsertAgent { record } => doc.upsert_agent(&record),
        DocOp::Transition { agent, transition } => doc.record_transition(&agent, &transition),
        DocOp::ResumeId { agent, resume_id } => doc.set_resume_id(&agent, &resume_id),
        DocOp::Pid { agent, pid } => doc.set_pid(&agent, pid),
        DocOp::Removed { agent, at_ms } => doc.mark_removed(&agent, at_ms),
        DocOp::UpsertSession { session } => doc.upsert_session(&session),
        DocOp::AddComment { comment } => doc.add_comment(&comment),
        DocOp::ResolveComment {
            id,
            resolved,
            by,
            at_ms,
        } => doc.resolve_comment(&id, resolved, &by, at_ms),
        DocOp::DeleteComment { id, at_ms } => doc.delete_comment(&id, at_ms),
        DocOp::React {
            id,
            emoji,
            person,
            name,
            on,
        } => doc.react(&id, &emoji, &person, &name, on),
    }
}

impl std::fmt::Debug for DocActor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DocActor").field("ws", &self.ws_id).finish()
    }
}

impl DocActor {
    /// Load the workspace document from the store. A document that fails to
    /// load is quarantined (kept in the store) and the second value says so.
    pub fn load(
        ws_id: &str,
        store: Store,
        actor: ActorId,
        me: DeviceIdentity,
    ) -> (DocActor, Option<String>) {
        let bytes = store.load_doc(ws_id).unwrap_or_default();
        let (doc, notice) = if bytes.is_empty() {
            (WorkspaceDoc::new(actor), None)
        } else {
            match WorkspaceDoc::load(&bytes, actor) {
                Ok(d) => (d, None),
                Err(e) => {
                    error!(workspace = ws_id, error = %e, "workspace document is damaged; quarantined");
                    let _ = store.quarantine_doc(ws_id);
                    (
                        WorkspaceDoc::new(actor),
                        Some(format!(
                            "E008 the document of workspace {ws_id} was damaged ({e}); it was kept in the store under corrupt/ and rebuilt from the agents' run directories"
                        )),
                    )
                }
            }
        };
        let chunks = store.chunk_count(ws_id);
        let seq = store
            .p2p_get(&format!("seq/{ws_id}"))
            .and_then(|b| <[u8; 8]>::try_from(b.as_slice()).ok())
            .map(|b| u64::from_be_bytes(b) + SEQ_SKIP)
            .unwrap_or(0);
        // The real roster arrives with `AttachSwarm`; until then nothing is sealed.
        let engine = Engine::new(me, ws_id, doc, Roster::default(), seq);
        let mut a = DocActor {
            ws_id: ws_id.to_string(),
            engine,
            store,
            chunks,
            swarm: None,
            sync: false,
            web: WebSlot::default(),
            root: None,
            projected: None,
        };
        if bytes.is_empty() || notice.is_some() {
            a.persist(true);
        }
        (a, notice)
    }

    fn persist(&mut self, durable: bool) {
        let chunk = self.engine.doc.save_incremental();
        if chunk.is_empty() {
            return;
        }
        let res = if self.chunks >= COMPACT_EVERY {
            let full = self.engine.doc.save();
            self.chunks = 1;
            self.store.replace_doc(&self.ws_id, &full)
        } else {
            self.chunks += 1;
            self.store
                .append_chunk(&self.ws_id, &chunk)
                .and_then(|_| if durable { self.store.flush() } else { Ok(()) })
        };
        if let Err(e) = res {
            error!(workspace = %self.ws_id, error = %e, "could not persist the workspace document");
        }
    }

    /// For tests and the synchronous startup path.
    pub fn agents(&self) -> Vec<AgentRecord> {
        self.engine.doc.agents()
    }

    fn sync_on(&self) -> bool {
        self.sync && self.swarm.is_some()
    }

    fn send(&mut self, outs: Vec<Out>) {
        if outs.is_empty() {
            return;
        }
        if let Some(s) = &self.swarm {
            // Low rate (one per document change or sync step); the swarm
            // actor never blocks on a document.
            s.do_send(FromDoc {
                workspace: self.ws_id.clone(),
                outs,
            });
        }
    }

    fn save_seq(&self) {
        let _ = self.store.p2p_put(
            &format!("seq/{}", self.ws_id),
            &self.engine.seq().to_be_bytes(),
        );
    }

    pub fn apply(&mut self, op: DocOp, durable: bool) -> Result<(), String> {
        self.write(|doc| apply_op(doc, op), durable).map_err(|e| {
            warn!(workspace = %self.ws_id, error = %e, "document operation refused");
            e.to_string()
        })
    }

    /// One local change: sealed and sent when sync is on, then persisted.
    fn write(
        &mut self,
        f: impl FnOnce(&mut WorkspaceDoc) -> Result<(), CrdtError>,
        durable: bool,
    ) -> Result<(), CrdtError> {
        let r = if self.sync_on() {
            let before = self.engine.seq();
            let r = self.engine.write(f);
            if self.engine.seq() != before {
                self.save_seq();
            }
            r.map(|outs| self.send(outs))
        } else {
            f(&mut self.engine.doc)
        };
        if r.is_ok() {
            self.persist(durable);
        }
        r
    }
}

impl Actor for DocActor {
    type Context = Context<Self>;
    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(4096);
    }
}

/// Apply one mutation. `durable` flushes to disk before answering.
#[derive(Message)]
#[rtype(result = "Result<(), String>")]
pub struct Apply {
    pub op: DocOp,
    pub durable: bool,
}

impl Handler<Apply> for DocActor {
    type Result = Result<(), String>;
    fn handle(&mut self, msg: Apply, _: &mut Context<Self>) -> Self::Result {
        let _span = tracing::debug_span!("doc", ws = %self.ws_id).entered();
        self.apply(msg.op, msg.durable)
    }
}

#[derive(Message)]
#[rtype(result = "Vec<AgentRecord>")]
pub struct ListAgents;

impl Handler<ListAgents> for DocActor {
    type Result = MessageResult<ListAgents>;
    fn handle(&mut self, _: ListAgents, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.engine.doc.agents())
    }
}

#[derive(Message)]
#[rtype(result = "Vec<SessionRecord>")]
pub struct ListSessions;

impl Handler<ListSessions> for DocActor {
    type Result = MessageResult<ListSessions>;
    fn handle(&mut self, _: ListSessions, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.engine.doc.sessions())
    }
}

/// Every comment of the workspace, tombstones included.
#[derive(Message)]
#[rtype(result = "Vec<Comment>")]
pub struct ListComments;

impl Handler<ListComments> for DocActor {
    type Result = MessageResult<ListComments>;
    fn handle(&mut self, _: ListComments, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.engine.doc.comments())
    }
}

/// Edit the workspace memory on behalf of `by`; answers the memory after
/// the edit and the id the edit made or touched.
#[derive(Message)]
#[rtype(
    result = "Result<(agentos_proto::memory::MemoryView, Option<String>), agentos_proto::ErrorInfo>"
)]
pub struct MemoryApply {
    pub op: agentos_proto::memory::MemoryOp,
    pub by: String,
    pub at_ms: u64,
}

impl Handler<MemoryApply> for DocActor {
    type Result =
        Result<(agentos_proto::memory::MemoryView, Option<String>), agentos_proto::ErrorInfo>;
    fn handle(&mut self, msg: MemoryApply, _: &mut Context<Self>) -> Self::Result {
        let _span = tracing::debug_span!("doc", ws = %self.ws_id).entered();
        let mut out: Result<Option<String>, agentos_proto::ErrorInfo> = Ok(None);
        let kind = msg.op.kind();
        let r = self.write(
            |doc| {
                out = crate::memory::apply(doc, msg.op, &msg.by, msg.at_ms);
                Ok(())
            },
            true,
        );
        if let Err(e) = r {
            return Err(agentos_proto::ErrorInfo::new(
                agentos_proto::ErrorCode::Internal,
                e.to_string(),
            ));
        }
        let changed = out?;
        debug!(workspace = %self.ws_id, op = kind, by = %msg.by, "memory edited");
        self.project();
        Ok((crate::memory::view(&self.ws_id, &self.engine.doc), changed))
    }
}

/// The workspace memory.
#[derive(Message)]
#[rtype(result = "agentos_proto::memory::MemoryView")]
pub struct GetMemory;

impl Handler<GetMemory> for DocActor {
    type Result = MessageResult<GetMemory>;
    fn handle(&mut self, _: GetMemory, _: &mut Context<Self>) -> Self::Result {
        MessageResult(crate::memory::view(&self.ws_id, &self.engine.doc))
    }
}

/// The workspace's directory (where `.agentos/memory/` goes).
#[derive(Message)]
#[rtype(result = "()")]
pub struct SetRoot {
    pub root: std::path::PathBuf,
}

impl Handler<SetRoot> for DocActor {
    type Result = ();
    fn handle(&mut self, msg: SetRoot, _: &mut Context<Self>) {
        if self.root.as_ref() != Some(&msg.root) {
            self.root = Some(msg.root);
            self.projected = None;
            self.project();
        }
    }
}

/// Flush before shutdown.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Flush;

impl Handler<Flush> for DocActor {
    type Result = ();
    fn handle(&mut self, _: Flush, _: &mut Context<Self>) {
        self.persist(true);
        let _ = self.store.flush();
    }
}

/// From the `SwarmActor`: where to send, the device group's roster, and
/// whether this workspace syncs.
#[derive(Message)]
#[rtype(result = "()")]
pub struct AttachSwarm {
    pub swarm: Recipient<FromDoc>,
    pub roster: Roster,
    pub enabled: bool,
}

impl Handler<AttachSwarm> for DocActor {
    type Result = ();
    fn handle(&mut self, msg: AttachSwarm, _: &mut Context<Self>) {
        self.swarm = Some(msg.swarm);
        self.sync = msg.enabled;
        self.engine.set_roster(msg.roster);
        if !self.sync {
            for p in self.engine.connected_peers() {
                self.peer_down(p);
            }
        }
    }
}

#[derive(Message)]
#[rtype(result = "()")]
pub struct SetRoster {
    pub roster: Roster,
}

impl Handler<SetRoster> for DocActor {
    type Result = ();
    fn handle(&mut self, msg: SetRoster, _: &mut Context<Self>) {
        self.engine.set_roster(msg.roster);
    }
}

impl DocActor {
    fn peer_key(&self, peer: &PeerKey) -> String {
        format!("peer/{}/{}", self.ws_id, hex(peer))
    }

    fn peer_up(&mut self, peer: PeerKey) {
        if !self.sync_on() || self.engine.is_connected(&peer) {
            return;
        }
        let saved = self.store.p2p_get(&self.peer_key(&peer));
        let outs = self.engine.connected_with(peer, saved.as_deref());
        self.send(outs);
    }

    fn peer_down(&mut self, peer: PeerKey) {
        if let Some(state) = self.engine.disconnected(peer) {
            let _ = self.store.p2p_put(&self.peer_key(&peer), &state);
        }
    }

    fn after_remote(&mut self, before: Vec<agentos_crdt::ChangeHash>) {
        if self.engine.doc.heads() != before {
            self.persist(false);
            self.project();
            if let Some(w) = self.web.get() {
                w.doc_changed();
            }
        }
    }

    /// Rewrite the memory projections if they changed (and the workspace's
    /// directory is known).
    fn project(&mut self) {
        let Some(root) = &self.root else { return };
        match crate::memory::project(root, &self.engine.doc, self.projected.as_ref()) {
            Ok(p) => self.projected = p,
            Err(e) => {
                warn!(workspace = %self.ws_id, dir = %root.display(), error = %e, "could not write the memory projections")
            }
        }
    }

    /// Where the memory projections go (before the actor starts).
    pub fn set_root(&mut self, root: std::path::PathBuf) {
        self.root = Some(root);
    }

    /// Tell the web server (once it is up) about remote changes.
    pub fn set_web(&mut self, web: WebSlot) {
        self.web = web;
    }
}

/// A member's connection is up (per-peer sync state starts from what was
/// persisted at its last disconnect).
#[derive(Message)]
#[rtype(result = "()")]
pub struct PeerUp {
    pub peer: PeerKey,
}

impl Handler<PeerUp> for DocActor {
    type Result = ();
    fn handle(&mut self, msg: PeerUp, _: &mut Context<Self>) {
        self.peer_up(msg.peer);
    }
}

/// Disconnect, timeout or failure: the sync state is reset (and its shared
/// heads persisted).
#[derive(Message)]
#[rtype(result = "()")]
pub struct PeerDown {
    pub peer: PeerKey,
}

impl Handler<PeerDown> for DocActor {
    type Result = ();
    fn handle(&mut self, msg: PeerDown, _: &mut Context<Self>) {
        self.peer_down(msg.peer);
    }
}

/// A point-to-point sync message from a member.
#[derive(Message)]
#[rtype(result = "()")]
pub struct RemoteSync {
    pub from: PeerKey,
    pub message: Vec<u8>,
}

impl Handler<RemoteSync> for DocActor {
    type Result = ();
    fn handle(&mut self, msg: RemoteSync, _: &mut Context<Self>) {
        let _span = tracing::debug_span!("doc", ws = %self.ws_id).entered();
        if !self.sync_on() {
            return;
        }
        self.peer_up(msg.from);
        let before = self.engine.doc.heads();
        let outs = self.engine.receive_sync(msg.from, &msg.message);
        self.after_remote(before);
        self.send(outs);
    }
}

/// A sealed change from gossip or the relay.
#[derive(Message)]
#[rtype(result = "()")]
pub struct RemoteEnvelope {
    pub bytes: Vec<u8>,
}

impl Handler<RemoteEnvelope> for DocActor {
    type Result = ();
    fn handle(&mut self, msg: RemoteEnvelope, _: &mut Context<Self>) {
        let _span = tracing::debug_span!("doc", ws = %self.ws_id).entered();
        if !self.sync_on() {
            return;
        }
        let before = self.engine.doc.heads();
        match self.engine.receive_envelope(&msg.bytes) {
            Ok(()) => {
                self.after_remote(before);
                // Connected peers learn the new heads by sync.
                let mut outs = Vec::new();
                for p in self.engine.connected_peers() {
                    outs.extend(self.engine.nudge(p));
                }
                self.send(outs);
            }
            Err(agentos_p2p::seal::SealError::Replay(_)) => {}
            Err(e) => warn!(workspace = %self.ws_id, error = %e, "envelope rejected"),
        }
    }
}

/// A sealed snapshot from the relay.
#[derive(Message)]
#[rtype(result = "()")]
pub struct RemoteSnapshot {
    pub bytes: Vec<u8>,
}

impl Handler<RemoteSnapshot> for DocActor {
    type Result = ();
    fn handle(&mut self, msg: RemoteSnapshot, _: &mut Context<Self>) {
        if !self.sync_on() {
            return;
        }
        let before = self.engine.doc.heads();
        match self.engine.receive_snapshot(&msg.bytes) {
            Ok(()) => self.after_remote(before),
            Err(e) => debug!(workspace = %self.ws_id, error = %e, "snapshot not applied"),
        }
    }
}

/// Seal the whole document for the relay.
#[derive(Message)]
#[rtype(result = "Option<Vec<u8>>")]
pub struct TakeSnapshot;

impl Handler<TakeSnapshot> for DocActor {
    type Result = Option<Vec<u8>>;
    fn handle(&mut self, _: TakeSnapshot, _: &mut Context<Self>) -> Option<Vec<u8>> {
        if !self.sync_on() {
            return None;
        }
        let s = self.engine.snapshot();
        self.save_seq();
        s
    }
}

/// What this workspace's engine accepted, refused and saw twice.
#[derive(Message)]
#[rtype(result = "agentos_p2p::engine::Counters")]
pub struct EngineCounters;

impl Handler<EngineCounters> for DocActor {
    type Result = MessageResult<EngineCounters>;
    fn handle(&mut self, _: EngineCounters, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.engine.counters)
    }
}
