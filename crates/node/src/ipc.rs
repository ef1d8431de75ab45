//! The daemon's Unix-socket server. Each connection is a `ClientActor`: a
//! reader task feeds it frames through its bounded mailbox, and everything
//! it sends goes through one bounded queue drained by a writer task. An
//! attached client's queue is the same one the `AgentActor` fills, so a slow
//! client only ever delays itself.
//!
//! Remote attach uses the same conversation over a libp2p stream
//! (`/agentos/attach/1`, noise-encrypted end to end, direct or through a
//! relay circuit): the device that runs the agent serves the stream like a
//! local connection, limited to attaching ([`serve_peers`]); the device the
//! user sits at relays its local client's frames to it.

use crate::registry::{ClientRequest, Lookup, NodeActor};
use actix::prelude::*;
use agentos_actors::agent::{self as agent_msgs, AgentActor, SUBSCRIBER_QUEUE, SubscriberId};
use agentos_proto::{
    CLIENT_MAGIC, ClientFrame, ErrorCode, ErrorInfo, HolderCmd, PROTOCOL_VERSION, Request,
    Response, ServerFrame, WireError, check_hello, hello_bytes, read_frame_async,
    write_frame_async,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::mpsc;
use tokio_util::compat::FuturesAsyncReadCompatExt;
use tracing::{debug, warn};

/// Who is on the other end of a listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// The user (the node's own socket, mode 0600).
    Full,
    /// A sandboxed agent (its `agent.sock`): it may only report its own
    /// hooks and its launcher's handshake, always as itself.
    Agent { agent_id: String },
}

/// Accept connections forever.
pub async fn serve(listener: UnixListener, node: Addr<NodeActor>, scope: Scope) {
    let mut next_id = 1u64;
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let node = node.clone();
                let id = next_id;
                next_id += 1;
                let scope = scope.clone();
                actix::spawn(async move {
                    let r = match scope {
                        Scope::Full => connection(stream, node, id, false).await,
                        Scope::Agent { agent_id } => {
                            agent_connection(stream, node, id, agent_id).await
                        }
                    };
                    if let Err(e) = r {
                        debug!(conn = id, error = %e, "connection ended");
                    }
                });
            }
            Err(e) => warn!(error = %e, "accept failed"),
        }
    }
}

/// Serve remote-attach streams from paired devices (members only).
pub fn serve_peers(
    control: libp2p_stream::Control,
    node: Addr<NodeActor>,
    swarm: Addr<crate::swarm::SwarmActor>,
) {
    let mut control = control;
    let mut incoming = match control.accept(agentos_p2p::net::ATTACH_PROTOCOL) {
        Ok(i) => i,
        Err(e) => {
            warn!(error = %e, "remote attach unavailable");
            return;
        }
    };
    actix::spawn(async move {
        use futures_util::StreamExt;
        let mut next_id = 1u64 << 40;
        while let Some((peer, stream)) = incoming.next().await {
            let Some(key) = agentos_p2p::net::peer_key(&peer) else {
                continue;
            };
            if !swarm
                .send(crate::swarm::IsMember { peer: key })
                .await
                .unwrap_or(false)
            {
                warn!(%peer, "remote attach refused: not a paired device");
                continue;
            }
            let node = node.clone();
            let id = next_id;
            next_id += 1;
            actix::spawn(async move {
                if let Err(e) = connection(stream.compat(), node, id, true).await {
                    debug!(conn = id, error = %e, "remote attach ended");
                }
            });
        }
    });
}

async fn handshake<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    id: u64,
) -> Result<(), WireError> {
    let mut hello = [0u8; 8];
    stream.read_exact(&mut hello).await?;
    // Always answer with our own hello so the client can name the mismatch.
    stream
        .write_all(&hello_bytes(CLIENT_MAGIC, PROTOCOL_VERSION))
        .await?;
    if let Err(e) = check_hello(CLIENT_MAGIC, hello) {
        warn!(conn = id, error = %e, "client rejected at hello");
        return Err(e);
    }
    Ok(())
}

/// A sandboxed agent's connection: hooks and the launcher handshake only.
async fn agent_connection(
    mut stream: UnixStream,
    node: Addr<NodeActor>,
    id: u64,
    agent_id: String,
) -> Result<(), WireError> {
    handshake(&mut stream, id).await?;
    loop {
        let frame = match read_frame_async::<ClientFrame, _>(&mut stream).await {
            Ok(f) => f,
            Err(WireError::Closed) => return Ok(()),
            Err(e) => {
                warn!(conn = id, agent = %agent_id, error = %e, "malformed frame from a sandboxed agent");
                let _ = write_frame_async(
                    &mut stream,
                    &ServerFrame::Response(Response::Error {
                        error: ErrorInfo::new(ErrorCode::BadFrame, e.to_string()),
                    }),
                )
                .await;
                return Err(e);
            }
        };
        let req = match frame {
            // Whatever id the agent claims, it speaks for itself.
            ClientFrame::Request(Request::Hook { event, payload, .. }) => Request::Hook {
                agent_id: agent_id.clone(),
                event,
                payload,
            },
            ClientFrame::Request(Request::SandboxReady {
                pid,
                audit_session,
                proxy_fd,
                ..
            }) => Request::SandboxReady {
                agent_id: agent_id.clone(),
                pid,
                audit_session,
                proxy_fd,
            },
            ClientFrame::Request(Request::Ping) => Request::Ping,
            other => {
                warn!(conn = id, agent = %agent_id, frame = ?std::mem::discriminant(&other), "sandboxed agent tried a request it may not make");
                write_frame_async(
                    &mut stream,
                    &ServerFrame::Response(Response::Error {
                        error: ErrorInfo::new(
                            ErrorCode::PermissionDenied,
                            "a sandboxed agent's channel only carries its own hooks",
                        ),
                    }),
                )
                .await?;
                continue;
            }
        };
        let r = node
            .send(ClientRequest { req })
            .await
            .unwrap_or(Response::Error {
                error: ErrorInfo::new(ErrorCode::Internal, "the node is shutting down"),
            });
        write_frame_async(&mut stream, &ServerFrame::Response(r)).await?;
    }
}

/// A client conversation. `peer`: a paired device's remote attach, which
/// may only attach (and type, resize, detach once attached).
async fn connection<S: AsyncRead + AsyncWrite + Unpin + Send + 'static>(
    mut stream: S,
    node: Addr<NodeActor>,
    id: u64,
    peer: bool,
) -> Result<(), WireError> {
    handshake(&mut stream, id).await?;
    let (mut rd, mut wr) = tokio::io::split(stream);
    let (tx, mut rx) = mpsc::channel::<ServerFrame>(SUBSCRIBER_QUEUE);
    let writer = actix::spawn(async move {
        while let Some(frame) = rx.recv().await {
            if write_frame_async(&mut wr, &frame).await.is_err() {
                break;
            }
        }
        let _ = wr.shutdown().await;
    });
    let fast: FastInput = Default::default();
    let client = ClientActor {
        id,
        node: node.clone(),
        tx: tx.clone(),
        attached: None,
        fast: fast.clone(),
    }
    .start();
    // Set when this client attached to an agent on another device: its
    // frames go there.
    let mut remote: Option<tokio::io::WriteHalf<tokio_util::compat::Compat<libp2p::Stream>>> = None;
    let result = loop {
        match read_frame_async::<ClientFrame, _>(&mut rd).await {
            Ok(frame) if remote.is_some() => {
                let w = remote.as_mut().expect("checked");
                if write_frame_async(w, &frame).await.is_err() {
                    break Ok(());
                }
            }
            Ok(ClientFrame::Request(req)) if peer && !matches!(req, Request::Attach { .. }) => {
                let _ = tx
                    .send(ServerFrame::Response(Response::Error {
                        error: ErrorInfo::new(
                            ErrorCode::PermissionDenied,
                            "a paired device may only attach over this stream",
                        ),
                    }))
                    .await;
            }
            Ok(ClientFrame::Request(Request::Attach {
                name,
                cols,
                rows,
                direct,
            })) if !peer => {
                // Here, or on another device?
                let local = matches!(node.send(Lookup { name: name.clone() }).await, Ok(Ok(_)));
                let frame = ClientFrame::Request(Request::Attach {
                    name: name.clone(),
                    cols,
                    rows,
                    direct,
                });
                if local {
                    if client.send(Incoming { frame }).await.is_err() {
                        break Ok(());
                    }
                    continue;
                }
                match node.send(crate::registry::OpenRemoteAttach { name }).await {
                    Ok(Ok(stream)) => {
                        match remote_attach(stream, direct, tx.clone(), frame).await {
                            Ok(w) => remote = Some(w),
                            Err(e) => {
                                let _ = tx
                                    .send(ServerFrame::Response(Response::Error { error: e }))
                                    .await;
                            }
                        }
                    }
                    Ok(Err(e)) => {
                        let _ = tx
                            .send(ServerFrame::Response(Response::Error { error: e }))
                            .await;
                    }
                    Err(_) => break Ok(()),
                }
            }
            Ok(ClientFrame::Request(Request::Attach {
                name, cols, rows, ..
            })) => {
                // A remote client never reads the holder directly.
                let frame = ClientFrame::Request(Request::Attach {
                    name,
                    cols,
                    rows,
                    direct: false,
                });
                if client.send(Incoming { frame }).await.is_err() {
                    break Ok(());
                }
            }
            Ok(ClientFrame::Input { data })
                if fast.lock().map(|f| f.is_some()).unwrap_or(false) =>
            {
                // Keystrokes of an attached client go straight to the holder.
                let route = fast.lock().ok().and_then(|f| f.clone());
                if let Some((holder, agent)) = route {
                    if holder.send(HolderCmd::Input { data }).await.is_err() {
                        continue;
                    }
                    let _ = agent.try_send(agent_msgs::InputSeen);
                }
            }
            Ok(frame) => {
                if client.send(Incoming { frame }).await.is_err() {
                    break Ok(());
                }
            }
            Err(WireError::Closed) => break Ok(()),
            Err(e @ (WireError::Decode(_) | WireError::TooLarge(_))) => {
                warn!(conn = id, error = %e, "malformed frame; closing this connection");
                let _ = tx
                    .send(ServerFrame::Response(Response::Error {
                        error: ErrorInfo::new(ErrorCode::BadFrame, e.to_string()),
                    }))
                    .await;
                break Err(e);
            }
            Err(e) => break Err(e),
        }
    };
    client.do_send(Disconnected);
    drop(tx);
    let _ = writer.await;
    result
}

/// Open the attach conversation on the device that runs the agent and
/// relay its frames to our client; returns where to write our client's
/// frames.
async fn remote_attach(
    stream: libp2p::Stream,
    client_direct: bool,
    tx: mpsc::Sender<ServerFrame>,
    attach: ClientFrame,
) -> Result<tokio::io::WriteHalf<tokio_util::compat::Compat<libp2p::Stream>>, ErrorInfo> {
    let mut s = stream.compat();
    let fail = |e: WireError| e.to_info();
    s.write_all(&hello_bytes(CLIENT_MAGIC, PROTOCOL_VERSION))
        .await
        .map_err(|e| fail(e.into()))?;
    let mut hello = [0u8; 8];
    s.read_exact(&mut hello).await.map_err(|e| fail(e.into()))?;
    check_hello(CLIENT_MAGIC, hello).map_err(fail)?;
    let (mut rd, mut wr) = tokio::io::split(s);
    write_frame_async(&mut wr, &attach).await.map_err(fail)?;
    actix::spawn(async move {
        // Every frame is decoded (bounded) before it reaches our client.
        let mut ended = false;
        let mut first = true;
        while let Ok(f) = read_frame_async::<ServerFrame, _>(&mut rd).await {
            ended = matches!(f, ServerFrame::Detached { .. } | ServerFrame::Exited { .. });
            // A client that asked for the holder's direct route learns at
            // once that output comes through us instead.
            let follow = match (&f, first && client_direct) {
                (ServerFrame::Snapshot { seq, .. }, true) => Some(ServerFrame::Output {
                    seq: *seq,
                    data: Vec::new(),
                }),
                _ => None,
            };
            first = false;
            if tx.send(f).await.is_err() {
                return;
            }
            if let Some(x) = follow
                && tx.send(x).await.is_err()
            {
                return;
            }
        }
        if !ended {
            // The other device went away mid-session.
            let _ = tx
                .send(ServerFrame::Detached {
                    reason: agentos_proto::DetachReason::AgentGone,
                })
                .await;
        }
    });
    Ok(wr)
}

/// The direct keystroke route of an attached client: the holder's command
/// queue and the agent to notify.
type FastInput =
    std::sync::Arc<std::sync::Mutex<Option<(mpsc::Sender<HolderCmd>, Addr<AgentActor>)>>>;

pub struct ClientActor {
    id: u64,
    node: Addr<NodeActor>,
    tx: mpsc::Sender<ServerFrame>,
    attached: Option<(Addr<AgentActor>, SubscriberId)>,
    fast: FastInput,
}

impl ClientActor {
    fn clear_fast(&self) {
        if let Ok(mut f) = self.fast.lock() {
            *f = None;
        }
    }
}

impl Actor for ClientActor {
    type Context = Context<Self>;
    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(64);
    }
}

#[derive(Message)]
#[rtype(result = "()")]
struct Incoming {
    frame: ClientFrame,
}

#[derive(Message)]
#[rtype(result = "()")]
struct Disconnected;

impl Handler<Disconnected> for ClientActor {
    type Result = ();
    fn handle(&mut self, _: Disconnected, ctx: &mut Context<Self>) {
        self.clear_fast();
        if let Some((agent, sub)) = self.attached.take() {
            let _ = agent.try_send(agent_msgs::Detach { sub: Some(sub) });
        }
        ctx.stop();
    }
}

fn respond(tx: &mpsc::Sender<ServerFrame>, r: Response) -> impl Future<Output = ()> + use<> {
    let tx = tx.clone();
    async move {
        let _ = tx.send(ServerFrame::Response(r)).await;
    }
}

impl Handler<Incoming> for ClientActor {
    type Result = ();

    fn handle(&mut self, msg: Incoming, ctx: &mut Context<Self>) {
        let _span = tracing::debug_span!("client", conn = self.id).entered();
        match msg.frame {
            ClientFrame::Request(Request::Attach {
                name,
                cols,
                rows,
                direct,
            }) => {
                let node = self.node.clone();
                let tx = self.tx.clone();
                // `wait`: no other frame of this client is handled until attached.
                ctx.wait(
                    async move {
                        let agent = node
                            .send(Lookup { name })
                            .await
                            .map_err(|e| ErrorInfo::new(ErrorCode::Internal, e.to_string()))??;
                        let attached = agent
                            .send(agent_msgs::Attach {
                                cols,
                                rows,
                                tx,
                                direct,
                            })
                            .await
                            .map_err(|e| ErrorInfo::new(ErrorCode::Internal, e.to_string()))??;
                        Ok::<_, ErrorInfo>((agent, attached))
                    }
                    .into_actor(self)
                    .then(|r, act, _| {
                        let fut: std::pin::Pin<Box<dyn Future<Output = ()>>> = match r {
                            Ok((agent, attached)) => {
                                if let (Some(input), Ok(mut f)) = (attached.input, act.fast.lock())
                                {
                                    *f = Some((input, agent.clone()));
                                }
                                act.attached = Some((agent, attached.sub));
                                Box::pin(async {})
                            }
                            Err(e) => Box::pin(respond(&act.tx, Response::Error { error: e })),
                        };
                        fut.into_actor(act)
                    }),
                );
            }
            ClientFrame::Request(Request::Logs {
                name,
                lines,
                follow: true,
            }) => {
                let node = self.node.clone();
                let tx = self.tx.clone();
                ctx.wait(
                    async move {
                        let text = node
                            .send(ClientRequest {
                                req: Request::Logs {
                                    name: name.clone(),
                                    lines,
                                    follow: false,
                                },
                            })
                            .await
                            .unwrap_or(Response::Error {
                                error: ErrorInfo::new(ErrorCode::Internal, "node unavailable"),
                            });
                        let failed = matches!(text, Response::Error { .. });
                        let _ = tx.send(ServerFrame::Response(text)).await;
                        if failed {
                            return;
                        }
                        if let Ok(Ok(agent)) = node.send(Lookup { name }).await {
                            let _ = agent.send(agent_msgs::FollowLogs { tx }).await;
                        }
                    }
                    .into_actor(self),
                );
            }
            ClientFrame::Request(req) => {
                let node = self.node.clone();
                let tx = self.tx.clone();
                ctx.wait(
                    async move {
                        let r = node
                            .send(ClientRequest { req })
                            .await
                            .unwrap_or(Response::Error {
                                error: ErrorInfo::new(
                                    ErrorCode::Internal,
                                    "the node is shutting down",
                                ),
                            });
                        let _ = tx.send(ServerFrame::Response(r)).await;
                    }
                    .into_actor(self),
                );
            }
            ClientFrame::Input { data } => {
                if let Some((agent, _)) = &self.attached {
                    let agent = agent.clone();
                    // `wait` keeps keystrokes in order.
                    ctx.wait(
                        async move {
                            if agent.send(agent_msgs::Input { data }).await.is_ok() {
                                // Tagged for web viewers as typed at a terminal.
                                let _ = agent.try_send(agent_msgs::InputSeen);
                            }
                        }
                        .into_actor(self),
                    );
                }
            }
            ClientFrame::Resize { cols, rows } => {
                if let Some((agent, sub)) = &self.attached {
                    let _ = agent.try_send(agent_msgs::Resize {
                        sub: *sub,
                        cols,
                        rows,
                    });
                }
            }
            ClientFrame::Resync => {
                if let Some((agent, _)) = &self.attached {
                    let _ = agent.try_send(agent_msgs::ResyncDirect {
                        tx: self.tx.clone(),
                    });
                }
            }
            ClientFrame::Typed => {
                if let Some((agent, _)) = &self.attached {
                    let _ = agent.try_send(agent_msgs::InputSeen);
                }
            }
            ClientFrame::Detach => {
                self.clear_fast();
                if let Some((agent, sub)) = self.attached.take() {
                    let _ = agent.try_send(agent_msgs::Detach { sub: Some(sub) });
                }
            }
        }
    }
}
