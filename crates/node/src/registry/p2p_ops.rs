//! The node's P2P requests: pairing, devices and sync switches go to the
//! `SwarmActor`; the node adds what only it knows (workspace paths) and
//! starts documents for workspaces that peers share with this device.

use super::*;
use crate::swarm::{EnsureDoc, SwarmRequest};

impl NodeActor {
    pub(super) fn p2p_request(&mut self, req: Request) -> ResponseActFuture<Self, Response> {
        let Some(swarm) = self.swarm.clone() else {
            return Box::pin(actix::fut::ready(error_response(err(
                ErrorCode::PeerUnreachable,
                "p2p sync is off on this device ([sync] enabled = false, or it failed to start: see `agentos daemon status`)",
            ))));
        };
        let msg = match req {
            Request::PairInvite { ttl_ms } => SwarmRequest::PairInvite { ttl_ms },
            Request::PairWait { timeout_ms } => SwarmRequest::PairWait { timeout_ms },
            Request::PairJoin { invite, timeout_ms } => {
                SwarmRequest::PairJoin { invite, timeout_ms }
            }
            Request::PairConfirm { accept, timeout_ms } => {
                SwarmRequest::PairConfirm { accept, timeout_ms }
            }
            Request::Devices => SwarmRequest::Devices,
            Request::DeviceRemove { device } => SwarmRequest::DeviceRemove { device },
            Request::SyncStatus => SwarmRequest::Status {
                paths: self.store.workspaces().into_iter().collect(),
            },
            Request::SyncSet { workspace, enabled } => {
                let ws = workspace::resolve(Path::new(&workspace));
                let _ = self
                    .store
                    .set_workspace(&ws.id, &ws.path.display().to_string());
                // The document exists (and is registered) before the switch.
                self.doc(&ws.id);
                SwarmRequest::SetSync {
                    workspace: ws.id,
                    enabled,
                }
            }
            Request::SyncConnect { addr } => SwarmRequest::Connect { addr },
            other => {
                return Box::pin(actix::fut::ready(error_response(err(
                    ErrorCode::Internal,
                    format!("not a p2p request: {other:?}"),
                ))));
            }
        };
        Box::pin(
            async move {
                swarm.send(msg).await.unwrap_or_else(|_| {
                    error_response(err(ErrorCode::Internal, "the p2p actor stopped"))
                })
            }
            .into_actor(self),
        )
    }
}

impl NodeActor {
    pub(super) fn handoff(
        &mut self,
        _name: String,
        _to: String,
    ) -> ResponseActFuture<Self, Response> {
        // TODO(before commit): implement.
        Box::pin(actix::fut::ready(error_response(err(
            ErrorCode::Internal,
            "handoff",
        ))))
    }
}

impl Handler<EnsureDoc> for NodeActor {
    type Result = MessageResult<EnsureDoc>;
    fn handle(&mut self, msg: EnsureDoc, _: &mut Context<Self>) -> Self::Result {
        if !self
            .store
            .workspaces()
            .iter()
            .any(|(id, _)| *id == msg.workspace)
        {
            // A workspace a peer shares: known here only by its document.
            let _ = self.store.set_workspace(&msg.workspace, "");
        }
        MessageResult(self.doc(&msg.workspace))
    }
}
