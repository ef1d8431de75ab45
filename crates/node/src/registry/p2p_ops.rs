//! The node's P2P requests: pairing, devices and sync switches go to the
//! `SwarmActor`; the node adds what only it knows (workspace paths) and
//! starts documents for workspaces that peers share with this device.

use super::*;
use crate::swarm::{EnsureDoc, SwarmRequest};
use crate::worktree;

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
    /// A's side of `agentos handoff <name> --to <device>`: commit the work
    /// in progress onto the agent's branch, send the branch as a bundle
    /// with the conversation id, and stop the agent here only once the
    /// other device answers that it runs there.
    pub(super) fn handoff(
        &mut self,
        name: String,
        to: String,
    ) -> ResponseActFuture<Self, Response> {
        let ready =
            |r: Response| -> ResponseActFuture<Self, Response> { Box::pin(actix::fut::ready(r)) };
        let Some(swarm) = self.swarm.clone() else {
            return ready(error_response(err(
                ErrorCode::PeerUnreachable,
                "p2p sync is off on this device",
            )));
        };
        let entry = match self.find(&name) {
            Ok(e) => e,
            Err(e) => return ready(error_response(e)),
        };
        let record = entry.record.clone();
        let ws_id = entry.ws_id.clone();
        let Some(wt) = record.worktree.clone() else {
            return ready(error_response(err(
                ErrorCode::InvalidArgument,
                format!(
                    "{name} has no worktree: only agents in a worktree can be handed off (their work travels as their branch)"
                ),
            )));
        };
        let me = self.me.clone();
        let label = name.clone();
        Box::pin(
            async move {
                let wt2 = wt.clone();
                let msg = format!("agentos handoff of {label}: work in progress");
                let (tip, bundle) = tokio::task::spawn_blocking(move || {
                    let tip = worktree::commit_wip(Path::new(&wt2.path), &msg)?;
                    let bundle =
                        worktree::bundle(Path::new(&wt2.repo_root), &wt2.branch, &wt2.base_sha)?;
                    Ok::<_, worktree::WorktreeError>((tip, bundle))
                })
                .await
                .map_err(|e| err(ErrorCode::Internal, e.to_string()))?
                .map_err(|e| err(ErrorCode::Git, e.to_string()))?;
                if bundle.len() > agentos_proto::peer::MAX_PEER_MESSAGE - 64 * 1024 {
                    return Err(err(
                        ErrorCode::InvalidArgument,
                        format!(
                            "the branch bundle is {} MiB, over the network limit: push {} to a shared remote instead",
                            bundle.len() >> 20,
                            wt.branch
                        ),
                    ));
                }
                let size = bundle.len();
                let request = agentos_proto::peer::PeerRequest::Handoff {
                    workspace: ws_id,
                    name: label.clone(),
                    agent_type: record.agent_type.clone(),
                    command: record.command.clone(),
                    branch: wt.branch.clone(),
                    base: wt.base_sha.clone(),
                    tip: tip.clone(),
                    bundle,
                    resume_id: record.resume_id.clone(),
                };
                let answer = swarm
                    .send(crate::swarm::SendToDevice {
                        device: to.clone(),
                        request,
                    })
                    .await
                    .map_err(|_| err(ErrorCode::Internal, "the p2p actor stopped"))??;
                match answer {
                    agentos_proto::peer::PeerResponse::HandedOff { .. } => {}
                    agentos_proto::peer::PeerResponse::Error { code, message } => {
                        return Err(err(
                            code,
                            format!("the other device refused: {message}; {label} keeps running here"),
                        ));
                    }
                    other => {
                        return Err(err(
                            ErrorCode::Internal,
                            format!("unexpected answer {other:?}; {label} keeps running here"),
                        ));
                    }
                }
                // B runs it now: stop it here (its committed work stays on
                // the branch, and B has the branch).
                if let Some(me) = me {
                    let _ = me
                        .send(ClientRequest {
                            req: Request::Destroy {
                                name: label.clone(),
                                force: true,
                            },
                        })
                        .await;
                }
                Ok(format!(
                    "handed {label} off to {to}: it runs there now on {} at {} ({size} bytes of git objects sent{})",
                    wt.branch,
                    &tip[..tip.len().min(12)],
                    match &record.resume_id {
                        Some(r) => format!(", resuming conversation {r}"),
                        None => String::new(),
                    }
                ))
            }
            .into_actor(self)
            .map(|r, _, _| match r {
                Ok(text) => Response::Text { text },
                Err(e) => error_response(e),
            }),
        )
    }
}

impl Handler<crate::swarm::AcceptHandoff> for NodeActor {
    type Result = Result<String, ErrorInfo>;

    /// B's side: import the branch, start the agent on it with its
    /// conversation id, and record it (host: this device).
    fn handle(
        &mut self,
        msg: crate::swarm::AcceptHandoff,
        ctx: &mut Context<Self>,
    ) -> Self::Result {
        let agentos_proto::peer::PeerRequest::Handoff {
            workspace: ws_id,
            name,
            agent_type,
            command,
            branch,
            tip,
            bundle,
            resume_id,
            ..
        } = msg.request
        else {
            return Err(err(ErrorCode::InvalidArgument, "not a handoff"));
        };
        let _span = tracing::info_span!("handoff", agent = %name).entered();
        let path = self
            .store
            .workspaces()
            .into_iter()
            .find(|(id, p)| *id == ws_id && !p.is_empty())
            .map(|(_, p)| p)
            .ok_or_else(|| {
                err(
                    ErrorCode::InvalidArgument,
                    format!(
                        "the receiving device has no clone of workspace {ws_id}: clone the repository there and run `agentos sync enable --workspace <clone>`"
                    ),
                )
            })?;
        let ws = workspace::resolve(Path::new(&path));
        if !valid_name(&name) || !branch.starts_with("agentos/") {
            return Err(err(ErrorCode::InvalidArgument, "bad agent name or branch"));
        }
        worktree::import_bundle(&ws.root, &bundle, &branch, &tip)
            .map_err(|e| err(ErrorCode::Git, e.to_string()))?;
        let spec = CreateSpec {
            name: name.clone(),
            agent_type: Some(agent_type.clone()).filter(|t| t != "command"),
            command: if agent_type == "command" {
                command
            } else {
                vec![]
            },
            extra_args: vec![],
            cwd: ws.root.display().to_string(),
            isolation: agentos_proto::Isolation::Auto,
            env: std::env::vars()
                .map(|(key, value)| EnvVar { key, value })
                .collect(),
            cols: 0,
            rows: 0,
            allow_paths: vec![],
        };
        let (record, _) = self.create(spec, resume_id, ctx)?;
        let rec_ws = self
            .agents
            .get(&record.id.0)
            .map(|e| e.ws_id.clone())
            .unwrap_or(ws.id);
        self.doc(&rec_ws).do_send(Apply {
            op: DocOp::UpsertAgent {
                record: Box::new(record.clone()),
            },
            durable: true,
        });
        info!(from = %agentos_p2p::DeviceId::from_public_key(&msg.from).short(), "took an agent over");
        Ok(record.name)
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

impl Handler<crate::registry::OpenRemoteAttach> for NodeActor {
    type Result = ResponseActFuture<Self, Result<libp2p::Stream, ErrorInfo>>;

    /// Find the device an agent runs on (from the workspace documents) and
    /// open the attach stream to it.
    fn handle(
        &mut self,
        msg: crate::registry::OpenRemoteAttach,
        _: &mut Context<Self>,
    ) -> Self::Result {
        let (Some(swarm), Some(control)) = (self.swarm.clone(), self.streams.clone()) else {
            return Box::pin(actix::fut::ready(Err(err(
                ErrorCode::AgentNotFound,
                format!("no agent named '{}'", msg.name),
            ))));
        };
        let docs: Vec<_> = self.docs.values().cloned().collect();
        let me = self.device.clone();
        let name = msg.name;
        Box::pin(actix::fut::wrap_future(async move {
            let mut host = None;
            for d in docs {
                if let Ok(records) = d.send(ListAgents).await
                    && let Some(r) = records.into_iter().find(|r| {
                        r.name == name
                            && !r.is_removed()
                            && !r.host_device.is_empty()
                            && r.host_device != me
                    })
                {
                    host = Some(r.host_device);
                    break;
                }
            }
            let host = host
                .ok_or_else(|| err(ErrorCode::AgentNotFound, format!("no agent named '{name}'")))?;
            let key = swarm
                .send(crate::swarm::MemberKey {
                    device: host.clone(),
                })
                .await
                .ok()
                .flatten()
                .ok_or_else(|| {
                    err(
                        ErrorCode::UnknownDevice,
                        format!("{name} runs on {host}, which is not a paired device"),
                    )
                })?;
            let peer = agentos_p2p::net::peer_id(&key)
                .ok_or_else(|| err(ErrorCode::Internal, "bad device key"))?;
            let mut control = control;
            tokio::time::timeout(
                Duration::from_secs(15),
                control.open_stream(peer, agentos_p2p::net::ATTACH_PROTOCOL),
            )
            .await
            .map_err(|_| {
                err(
                    ErrorCode::PeerUnreachable,
                    format!("{name} runs on device {}, which did not answer", &host[..7]),
                )
            })?
            .map_err(|e| {
                err(
                    ErrorCode::PeerUnreachable,
                    format!("{name} runs on device {}: {e}", &host[..7.min(host.len())]),
                )
            })
        }))
    }
}
