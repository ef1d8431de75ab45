//! `DocActor`: owns one workspace's Automerge document, the source of truth
//! for its sessions and agents. Every mutation is one transaction, followed
//! by `save_incremental` into the store; every 64 chunks the document is
//! compacted into one full save.

use crate::store::Store;
use actix::prelude::*;
use agentos_crdt::{ActorId, AgentId, AgentRecord, SessionRecord, StateTransition, WorkspaceDoc};
use tracing::{error, warn};

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
}

pub struct DocActor {
    ws_id: String,
    doc: WorkspaceDoc,
    store: Store,
    chunks: usize,
}

impl std::fmt::Debug for DocActor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DocActor").field("ws", &self.ws_id).finish()
    }
}

impl DocActor {
    /// Load the workspace document from the store. A document that fails to
    /// load is quarantined (kept in the store) and the second value says so.
    pub fn load(ws_id: &str, store: Store, actor: ActorId) -> (DocActor, Option<String>) {
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
        let mut a = DocActor {
            ws_id: ws_id.to_string(),
            doc,
            store,
            chunks,
        };
        if bytes.is_empty() || notice.is_some() {
            a.persist(true);
        }
        (a, notice)
    }

    fn persist(&mut self, durable: bool) {
        let chunk = self.doc.save_incremental();
        if chunk.is_empty() {
            return;
        }
        let res = if self.chunks >= COMPACT_EVERY {
            let full = self.doc.save();
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
        self.doc.agents()
    }

    pub fn apply(&mut self, op: DocOp, durable: bool) -> Result<(), String> {
        let r = match op {
            DocOp::UpsertAgent { record } => self.doc.upsert_agent(&record),
            DocOp::Transition { agent, transition } => {
                self.doc.record_transition(&agent, &transition)
            }
            DocOp::ResumeId { agent, resume_id } => self.doc.set_resume_id(&agent, &resume_id),
            DocOp::Pid { agent, pid } => self.doc.set_pid(&agent, pid),
            DocOp::Removed { agent, at_ms } => self.doc.mark_removed(&agent, at_ms),
            DocOp::UpsertSession { session } => self.doc.upsert_session(&session),
        };
        match r {
            Ok(()) => {
                self.persist(durable);
                Ok(())
            }
            Err(e) => {
                warn!(workspace = %self.ws_id, error = %e, "document operation refused");
                Err(e.to_string())
            }
        }
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
        MessageResult(self.doc.agents())
    }
}

#[derive(Message)]
#[rtype(result = "Vec<SessionRecord>")]
pub struct ListSessions;

impl Handler<ListSessions> for DocActor {
    type Result = MessageResult<ListSessions>;
    fn handle(&mut self, _: ListSessions, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.doc.sessions())
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
