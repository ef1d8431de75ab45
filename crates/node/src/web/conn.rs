//! One WebSocket connection (protocol v3): authentication (the first
//! message), then a loop that forwards the client's messages to its
//! `SessionActor` and writes out control messages and terminal frames.
//!
//! Two bounded queues feed the socket: control messages from the session
//! (drained first, so `terminal_subscribed` always precedes its snapshot)
//! and terminal frames straight from the `AgentActor` (already encoded,
//! shared by every viewer). A close signal (revocation, expiry, kick)
//! interrupts everything and closes the socket at once.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use agentos_actors::agent::{WIRE_BACKLOG, WIRE_FRAMES, WireEvent};
use agentos_actors::wire_queue::wire_queue;
use agentos_proto::ws::{
    self, AgentView, ClientMsg, CloseReason, Frame, PersonView, ServerMsg, WS_VERSION,
};
use agentos_proto::{ErrorCode, ErrorInfo, Request, Response};
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use futures::{SinkExt, StreamExt};
use tokio::sync::mpsc;
use tracing::debug;

use super::auth::{Target, WebSession};
use super::session::{FromClient, Input, Join, Leave};
use super::{Outbound, WebShared, now_ms};

/// The client must authenticate within this time.
const AUTH_TIMEOUT: Duration = Duration::from_secs(10);
/// Control messages queued for one connection.
const CONTROL_QUEUE: usize = 256;
/// At most this many queued frames, or bytes, go out in one write.
const BATCH_FRAMES: usize = 64;
const BATCH_BYTES: usize = 256 * 1024;

fn close_msg(reason: CloseReason) -> Message {
    Message::Close(Some(CloseFrame {
        code: ws::close_code(reason),
        reason: Utf8Bytes::from(format!("{reason:?}").to_lowercase()),
    }))
}

async fn send_error(
    sink: &mut futures::stream::SplitSink<WebSocket, Message>,
    e: &ErrorInfo,
    refused: Option<&str>,
) {
    let _ = sink
        .send(Message::Text(ServerMsg::error(e, refused).to_json().into()))
        .await;
}

fn sanitize_name(name: Option<String>, fallback: &str) -> String {
    let n: String = name
        .unwrap_or_default()
        .chars()
        .filter(|c| !c.is_control())
        .take(40)
        .collect();
    let n = n.trim().to_string();
    if n.is_empty() {
        fallback.to_string()
    } else {
        n
    }
}

/// Who is this? (the first message).
fn identify(
    shared: &WebShared,
    msg: ClientMsg,
    cookie: Option<&str>,
    ip: IpAddr,
) -> Result<(WebSession, String, Target), ErrorInfo> {
    let ClientMsg::Auth {
        token,
        target,
        name,
        device,
    } = msg
    else {
        return Err(ErrorInfo::new(
            ErrorCode::ShareInvalid,
            "the first message must be `auth`",
        ));
    };
    let now = now_ms();
    let (session, ticket) = match (token, cookie) {
        (Some(t), _) => {
            let device = sanitize_name(device, "browser");
            let fallback = format!("guest-{}", &super::auth::random_token(2)[..3]);
            let r =
                shared
                    .auth()
                    .redeem_secret(&t, ip, sanitize_name(name, &fallback), device, now);
            shared.metrics.auth(r.is_ok());
            r?
        }
        (None, Some(c)) => {
            let mut a = shared.auth();
            let s = a.by_cookie(c, now).ok_or_else(|| {
                ErrorInfo::new(ErrorCode::ShareInvalid, "your session has ended")
                    .with_hint("open the share link again")
            })?;
            let t = a.new_ticket(&s.person, now);
            (s, t)
        }
        (None, None) => {
            return Err(ErrorInfo::new(
                ErrorCode::ShareInvalid,
                "no share secret and no session cookie",
            )
            .with_hint("open the full share link, including the part after #"));
        }
    };
    let target = match (&session.target, target) {
        (Target::All, Some(t)) => Target::parse(&t).ok_or_else(|| {
            ErrorInfo::new(ErrorCode::InvalidArgument, format!("bad target '{t}'"))
        })?,
        (t, _) => t.clone(),
    };
    Ok((session, ticket, target))
}

/// Serve one upgraded socket until it closes.
pub async fn serve(shared: Arc<WebShared>, socket: WebSocket, ip: IpAddr, cookie: Option<String>) {
    let (mut sink, mut stream) = socket.split();
    let first = match tokio::time::timeout(AUTH_TIMEOUT, stream.next()).await {
        Ok(Some(Ok(Message::Text(t)))) => {
            ws::decode_client(&t).map_err(|e| ErrorInfo::new(ErrorCode::BadFrame, e.to_string()))
        }
        Ok(Some(Ok(_))) => Err(ErrorInfo::new(
            ErrorCode::BadFrame,
            "the first message must be a JSON `auth` message",
        )),
        _ => return,
    };
    let ident = first.and_then(|m| identify(&shared, m, cookie.as_deref(), ip));
    let (session, ticket, target) = match ident {
        Ok(x) => x,
        Err(e) => {
            shared.metrics.refused("auth");
            send_error(&mut sink, &e, Some("auth")).await;
            let _ = sink
                .send(Message::Close(Some(CloseFrame {
                    code: ws::AUTH_FAILED,
                    reason: Utf8Bytes::from_static("unauthorized"),
                })))
                .await;
            return;
        }
    };
    let (conn, mut close_rx) =
        shared.register_conn(session.person.clone(), session.grant_id.clone());
    let you = PersonView {
        id: session.person.clone(),
        name: session.name.clone(),
        permission: session.permission,
        device: session.device.clone(),
        last_seen_ms: now_ms(),
        connected: true,
        control: false,
    };
    let auth_ok = ServerMsg::AuthOk {
        protocol: WS_VERSION,
        you,
        target: target.to_string(),
        ticket,
    };
    debug!(conn = conn.0, person = %session.person.0, target = %target, "web client joined");
    if target == Target::All {
        lobby(&shared, &mut sink, &mut stream, &mut close_rx, auth_ok).await;
        shared.unregister_conn(conn);
        return;
    }
    let sess = match shared.session_for(&target).await {
        Ok(s) => s,
        Err(e) => {
            send_error(&mut sink, &e, Some("auth")).await;
            let _ = sink.send(Message::Close(None)).await;
            shared.unregister_conn(conn);
            return;
        }
    };
    let (ctl_tx, mut ctl_rx) = mpsc::channel::<Outbound>(CONTROL_QUEUE);
    let (wire_tx, mut wire_rx) = wire_queue(WIRE_FRAMES, WIRE_BACKLOG);
    if sess
        .send(Join {
            conn,
            session,
            tx: ctl_tx,
            wire: wire_tx,
            auth_ok,
        })
        .await
        .is_err()
    {
        shared.unregister_conn(conn);
        return;
    }
    let reason = loop {
        tokio::select! {
            biased;
            r = close_rx.changed() => {
                match (r, *close_rx.borrow()) {
                    (Ok(()), Some(reason)) => break Some(reason),
                    (Err(_), _) => break Some(CloseReason::ShuttingDown),
                    _ => continue,
                }
            }
            out = ctl_rx.recv() => match out {
                Some(Outbound::Text(t)) => {
                    if sink.send(Message::Text(t.into())).await.is_err() { break None; }
                }
                Some(Outbound::Close(reason)) => break Some(reason),
                None => break None,
            },
            ev = wire_rx.recv() => match ev {
                // Frames already queued behind this one go out in the same
                // write (one flush, one syscall). Each hold keeps its frame
                // in the viewer's backlog until the socket has taken it.
                Some(first) => {
                    let mut held = Vec::new();
                    let mut bytes = 0;
                    let mut next = Some(first);
                    while let Some((ev, hold)) = next.take() {
                        if let WireEvent::Frame(b) = ev {
                            shared.metrics.frame(b.len());
                            bytes += b.len();
                            if sink.feed(Message::Binary(b)).await.is_err() { break; }
                        }
                        // (The session reports exits as `terminal_exited`.)
                        held.push(hold);
                        if held.len() < BATCH_FRAMES && bytes < BATCH_BYTES {
                            next = wire_rx.try_recv();
                        }
                    }
                    if sink.flush().await.is_err() { break None; }
                    drop(held);
                }
                None => break None,
            },
            msg = stream.next() => match msg {
                Some(Ok(Message::Text(t))) => match ws::decode_client(&t) {
                    Ok(m) => {
                        if sess.send(FromClient { conn, msg: m }).await.is_err() { break None; }
                    }
                    Err(e) => {
                        shared.metrics.refused("malformed");
                        send_error(&mut sink, &ErrorInfo::new(ErrorCode::BadFrame, e.to_string()), None).await;
                    }
                },
                Some(Ok(Message::Binary(b))) => match ws::decode_frame(&b) {
                    Ok(Frame::Input { channel, data }) => {
                        let data = data.to_vec();
                        if sess.send(Input { conn, channel, data }).await.is_err() { break None; }
                    }
                    Ok(_) => {
                        shared.metrics.refused("frame");
                        send_error(&mut sink, &ErrorInfo::new(ErrorCode::BadFrame, "clients send only input frames"), None).await;
                    }
                    Err(e) => {
                        shared.metrics.refused("frame");
                        send_error(&mut sink, &ErrorInfo::new(ErrorCode::BadFrame, e.to_string()), None).await;
                    }
                },
                Some(Err(e)) if too_big(&e) => {
                    shared.metrics.refused("too_big");
                    send_error(&mut sink, &too_big_error(), None).await;
                    let _ = sink.send(Message::Close(Some(CloseFrame { code: ws::TOO_BIG, reason: Utf8Bytes::from_static("message too big") }))).await;
                    break None;
                }
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break None,
                Some(Ok(_)) => {}
            },
        }
    };
    sess.do_send(Leave { conn });
    shared.unregister_conn(conn);
    if let Some(reason) = reason {
        let _ = sink
            .send(Message::Text(ServerMsg::Closed { reason }.to_json().into()))
            .await;
        let _ = sink.send(close_msg(reason)).await;
    }
}

/// The socket refused a message over the size limit (tungstenite's
/// capacity error; axum does not expose its type).
fn too_big(e: &axum::Error) -> bool {
    let s = e.to_string();
    s.contains("Space limit exceeded") || s.contains("too long") || s.contains("too big")
}

fn too_big_error() -> ErrorInfo {
    ErrorInfo::new(
        ErrorCode::BadFrame,
        format!(
            "message over the limit ({} bytes of JSON, {} bytes of input per frame)",
            ws::MAX_CONTROL,
            ws::MAX_INPUT
        ),
    )
    .with_hint("send long input in pieces; the connection was closed, reconnect")
}

/// The owner's dashboard connection (`target = *`): authentication, the
/// agent list, pings; terminals are opened on a per-agent connection.
async fn lobby(
    shared: &Arc<WebShared>,
    sink: &mut futures::stream::SplitSink<WebSocket, Message>,
    stream: &mut futures::stream::SplitStream<WebSocket>,
    close_rx: &mut tokio::sync::watch::Receiver<Option<CloseReason>>,
    auth_ok: ServerMsg,
) {
    let _ = sink.send(Message::Text(auth_ok.to_json().into())).await;
    let agents = match shared
        .node
        .send(crate::registry::ClientRequest {
            req: Request::List { all: false },
        })
        .await
    {
        Ok(Response::Agents { agents }) => agents
            .into_iter()
            .map(|a| AgentView {
                name: a.name,
                agent_type: a.agent_type,
                state: a.state.label().to_string(),
            })
            .collect(),
        _ => Vec::new(),
    };
    let state = ServerMsg::SessionState {
        target: "*".into(),
        agents,
        people: Vec::new(),
        control_requests: Vec::new(),
        comments: Vec::new(),
    };
    let _ = sink.send(Message::Text(state.to_json().into())).await;
    let reason = loop {
        tokio::select! {
            r = close_rx.changed() => {
                if r.is_err() { break None; }
                if let Some(reason) = *close_rx.borrow() { break Some(reason); }
            }
            msg = stream.next() => match msg {
                Some(Ok(Message::Text(t))) => match ws::decode_client(&t) {
                    Ok(ClientMsg::Ping {}) => {
                        let _ = sink.send(Message::Text(ServerMsg::Pong {}.to_json().into())).await;
                    }
                    Ok(ClientMsg::SessionLeave {}) => break Some(CloseReason::Left),
                    Ok(m) => {
                        let e = ErrorInfo::new(ErrorCode::InvalidArgument, "open an agent first: reconnect with auth {target: \"agent:<name>\"}");
                        send_error(sink, &e, Some(m.kind())).await;
                    }
                    Err(e) => send_error(sink, &ErrorInfo::new(ErrorCode::BadFrame, e.to_string()), None).await,
                },
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break None,
                Some(Ok(_)) => {}
            },
        }
    };
    if let Some(reason) = reason {
        let _ = sink
            .send(Message::Text(ServerMsg::Closed { reason }.to_json().into()))
            .await;
        let _ = sink.send(close_msg(reason)).await;
    }
}
