//! The workspace memory through the node: `agentos task|decision|context`
//! requests (the workspace named by a directory) and the web sessions'
//! reads and edits (the workspace of the session's agents). Every edit is
//! one document change ([`crate::doc_actor::MemoryApply`]); afterwards every
//! web session re-reads the memory and viewers get a `memory` message.

use super::*;
use crate::doc_actor::{GetMemory, MemoryApply, SetRoot};
use agentos_proto::memory::{MemoryOp, MemoryView};

/// The memory of the workspace of a session's agents (the first one that
/// runs here); `None` when none does.
#[derive(Message)]
#[rtype(result = "Option<MemoryView>")]
pub struct SessionMemory {
    pub agents: Vec<String>,
}

/// Edit the memory of the workspace of a session's agents on behalf of `by`.
#[derive(Message)]
#[rtype(result = "Result<MemoryView, ErrorInfo>")]
pub struct SessionMemoryEdit {
    pub agents: Vec<String>,
    pub op: MemoryOp,
    pub by: String,
}

impl NodeActor {
    /// The document of the workspace at `ws` (its projections go there).
    fn memory_doc(&mut self, ws: &crate::workspace::Workspace) -> Addr<DocActor> {
        let _ = self
            .store
            .set_workspace(&ws.id, &ws.path.display().to_string());
        let doc = self.doc(&ws.id);
        doc.do_send(SetRoot {
            root: ws.root.clone(),
        });
        doc
    }

    /// The document holding the first of `agents` (in the session's order)
    /// that runs here.
    fn session_doc(&mut self, agents: &[String]) -> Option<Addr<DocActor>> {
        let ws_id = agents
            .iter()
            .find_map(|n| self.agents.values().find(|e| &e.record.name == n))
            .map(|e| e.ws_id.clone())?;
        Some(self.doc(&ws_id))
    }

    pub(super) fn memory_request(
        &mut self,
        workspace: String,
        op: Option<MemoryOp>,
        by: String,
    ) -> ResponseActFuture<Self, Response> {
        let dir = std::path::PathBuf::from(&workspace);
        if !dir.is_dir() {
            return Box::pin(actix::fut::ready(error_response(
                err(
                    ErrorCode::InvalidArgument,
                    format!("{workspace} is not a directory"),
                )
                .with_hint("run the command inside the workspace, or pass --workspace <dir>"),
            )));
        }
        let ws = crate::workspace::resolve(&dir);
        let doc = self.memory_doc(&ws);
        Box::pin(
            async move {
                match op {
                    None => doc
                        .send(GetMemory)
                        .await
                        .map(|memory| (Ok((memory, None)), false)),
                    Some(op) => doc
                        .send(MemoryApply {
                            op,
                            by,
                            at_ms: now_ms(),
                        })
                        .await
                        .map(|r| (r, true)),
                }
            }
            .into_actor(self)
            .map(|r, act, _| match r {
                Ok((Ok((memory, changed)), edited)) => {
                    if edited && let Some(w) = &act.web {
                        w.doc_changed();
                    }
                    Response::Memory { memory, changed }
                }
                Ok((Err(e), _)) => error_response(e),
                Err(_) => error_response(err(ErrorCode::Internal, "the document is busy")),
            }),
        )
    }
}

impl Handler<SessionMemory> for NodeActor {
    type Result = ResponseActFuture<Self, Option<MemoryView>>;
    fn handle(&mut self, msg: SessionMemory, _: &mut Context<Self>) -> Self::Result {
        let doc = self.session_doc(&msg.agents);
        Box::pin(
            async move {
                match doc {
                    Some(d) => d.send(GetMemory).await.ok(),
                    None => None,
                }
            }
            .into_actor(self),
        )
    }
}

impl Handler<SessionMemoryEdit> for NodeActor {
    type Result = ResponseActFuture<Self, Result<MemoryView, ErrorInfo>>;
    fn handle(&mut self, msg: SessionMemoryEdit, _: &mut Context<Self>) -> Self::Result {
        let Some(doc) = self.session_doc(&msg.agents) else {
            return Box::pin(actix::fut::ready(Err(err(
                ErrorCode::AgentNotRunning,
                "none of this session's agents runs on this node",
            ))));
        };
        let SessionMemoryEdit { op, by, .. } = msg;
        Box::pin(
            async move {
                doc.send(MemoryApply {
                    op,
                    by,
                    at_ms: now_ms(),
                })
                .await
                .unwrap_or_else(|_| Err(err(ErrorCode::Internal, "the document is busy")))
                .map(|(m, _)| m)
            }
            .into_actor(self)
            .map(|r, act, _| {
                if r.is_ok()
                    && let Some(w) = &act.web
                {
                    w.doc_changed();
                }
                r
            }),
        )
    }
}
