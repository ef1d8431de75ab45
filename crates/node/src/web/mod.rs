//! The node's HTTP and WebSocket server (axum): the web client (built from
//! `web/` and embedded at compile time), the REST API (`openapi.json` in
//! this crate is its contract), WebSocket protocol v3 (`/ws`), `/health`
//! and Prometheus `/metrics`.
//!
//! It runs on its own tokio runtime (two worker threads) so that framing
//! output for many viewers never competes with the actors for a thread; it
//! reaches the actors through their addresses. Loopback binds are plain
//! HTTP; any other address is served over TLS ([`tls`]).

pub mod auth;
mod conn;
mod metrics;
pub mod permissions;
mod rest;
pub mod session;
pub mod tls;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use actix::prelude::*;
use agentos_proto::ws::{CloseReason, CommentView, Permission, PersonId};
use agentos_proto::{ErrorCode, ErrorInfo, ShareCreated, ShareView};
use tokio::sync::watch;
use tracing::{info, warn};

use crate::registry::NodeActor;
use auth::{Auth, Target};
pub use metrics::Metrics;
use session::SessionActor;

pub fn now_ms() -> u64 {
    agentos_actors::holder::now_ms()
}

/// One WebSocket connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConnId(pub u64);

/// What a connection's control queue carries.
#[derive(Debug)]
pub enum Outbound {
    Text(String),
    Close(CloseReason),
}

struct ConnEntry {
    person: PersonId,
    grant_id: String,
    close: watch::Sender<Option<CloseReason>>,
}

/// State shared by the server's handlers, the session actors and the node.
pub struct WebShared {
    pub node: Addr<NodeActor>,
    auth: Mutex<Auth>,
    sessions: Mutex<HashMap<Target, Addr<SessionActor>>>,
    conns: Mutex<HashMap<ConnId, ConnEntry>>,
    next_conn: AtomicU64,
    pub metrics: Metrics,
    /// `http://127.0.0.1:7890` or `https://host:port` (links use it).
    pub base_url: String,
    /// The TLS certificate's SHA-256, put into `agentos://` links.
    pub fingerprint: Option<String>,
}

impl std::fmt::Debug for WebShared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebShared")
            .field("base_url", &self.base_url)
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding one of these locks leaves plain data behind.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl WebShared {
    pub fn auth(&self) -> MutexGuard<'_, Auth> {
        lock(&self.auth)
    }

    fn register_conn(
        &self,
        person: PersonId,
        grant_id: String,
    ) -> (ConnId, watch::Receiver<Option<CloseReason>>) {
        let id = ConnId(self.next_conn.fetch_add(1, Ordering::Relaxed));
        let (tx, rx) = watch::channel(None);
        lock(&self.conns).insert(
            id,
            ConnEntry {
                person,
                grant_id,
                close: tx,
            },
        );
        self.metrics.conn_opened();
        (id, rx)
    }

    fn unregister_conn(&self, id: ConnId) {
        if lock(&self.conns).remove(&id).is_some() {
            self.metrics.conn_closed();
        }
    }

    /// Close every socket of these people now.
    fn close_people(&self, people: &[PersonId], reason: CloseReason) {
        for c in lock(&self.conns).values() {
            if people.contains(&c.person) {
                let _ = c.close.send(Some(reason));
            }
        }
    }

    pub fn create_share(
        &self,
        target: &Target,
        permission: Permission,
        expires_in_secs: Option<u64>,
        max_uses: Option<u32>,
    ) -> Result<ShareCreated, ErrorInfo> {
        let (g, secret) = self.auth().create(
            target,
            permission,
            expires_in_secs.map(|s| s.saturating_mul(1000)),
            max_uses,
            now_ms(),
        )?;
        let url = format!("{}/s/{}#{}", self.base_url, g.id, secret);
        let hostport = self
            .base_url
            .split_once("://")
            .map(|(_, h)| h)
            .unwrap_or(&self.base_url);
        let scheme = if self.base_url.starts_with("https") {
            "s"
        } else {
            ""
        };
        let fp = self
            .fingerprint
            .as_ref()
            .map(|f| format!("?fp={f}"))
            .unwrap_or_default();
        let link = format!("agentos{scheme}://{hostport}/s/{}{fp}#{secret}", g.id);
        Ok(ShareCreated {
            id: g.id,
            target: g.target,
            permission: g.permission,
            link,
            url,
            expires_at_ms: g.expires_at_ms,
            max_uses: g.max_uses,
        })
    }

    pub fn share_views(&self) -> Vec<ShareView> {
        let mut active: HashMap<String, u32> = HashMap::new();
        for c in lock(&self.conns).values() {
            *active.entry(c.grant_id.clone()).or_default() += 1;
        }
        self.auth()
            .grants()
            .iter()
            .map(|g| {
                crate::registry::web_ops::share_view(g, active.get(&g.id).copied().unwrap_or(0))
            })
            .collect()
    }

    /// Revoke a link: its web sessions end and its sockets close now.
    pub fn revoke(&self, id: &str) -> Result<(), ErrorInfo> {
        let people = self.auth().revoke(id, now_ms())?;
        // Sockets opened through the link but not yet bound to a session.
        for c in lock(&self.conns).values() {
            if c.grant_id == id {
                let _ = c.close.send(Some(CloseReason::Revoked));
            }
        }
        self.close_people(&people, CloseReason::Revoked);
        info!(grant = %id, people = people.len(), "share link revoked");
        Ok(())
    }

    pub fn end_web_session(&self, person: &PersonId) {
        self.auth().end_session(person);
    }

    pub fn set_permission(&self, person: &PersonId, p: Permission) {
        self.auth().set_permission(person, p);
    }

    pub fn session_permission(&self, person: &PersonId) -> Option<Permission> {
        self.auth().session(person).map(|s| s.permission)
    }

    pub fn revoke_target(&self, target: &Target) {
        let people = self.auth().revoke_target(target, now_ms());
        self.close_people(&people, CloseReason::SessionDeleted);
    }

    pub fn forget_session(&self, target: &Target, addr: Addr<SessionActor>) {
        let mut s = lock(&self.sessions);
        if s.get(target).is_some_and(|a| *a == addr) {
            s.remove(target);
        }
    }

    /// The session actor of a target, started on first use.
    async fn session_for(
        self: &Arc<Self>,
        target: &Target,
    ) -> Result<Addr<SessionActor>, ErrorInfo> {
        if let Some(a) = lock(&self.sessions).get(target)
            && a.connected()
        {
            return Ok(a.clone());
        }
        let addr = self
            .node
            .send(OpenSession {
                target: target.clone(),
                shared: self.clone(),
            })
            .await
            .map_err(|_| ErrorInfo::new(ErrorCode::Internal, "the node is busy"))??;
        let mut s = lock(&self.sessions);
        // Another connection may have opened it meanwhile: keep the first.
        if let Some(a) = s.get(target)
            && a.connected()
        {
            addr.do_send(session::Stop);
            return Ok(a.clone());
        }
        s.insert(target.clone(), addr.clone());
        Ok(addr)
    }

    /// A comment changed: every session showing its agent hears of it.
    pub fn comment_changed(&self, comment: CommentView, added: bool) {
        for s in lock(&self.sessions).values() {
            s.do_send(session::CommentChanged {
                comment: comment.clone(),
                added,
            });
        }
    }

    /// The workspace document changed by sync from another device, or its
    /// memory was edited: every session re-reads its comments and memory and
    /// sends viewers what changed.
    pub fn doc_changed(&self) {
        for s in lock(&self.sessions).values() {
            s.do_send(session::DocChanged);
        }
    }

    /// Input that no web person typed (`agentos send`): viewers of the
    /// agent see who sent it.
    pub fn foreign_input(&self, agent: &str, by: agentos_proto::ws::InputSource) {
        for s in lock(&self.sessions).values() {
            s.do_send(session::ForeignInput {
                agent: agent.to_string(),
                by: by.clone(),
            });
        }
    }

    /// Close sockets of expired links and sessions (every 250 ms).
    fn sweep(&self) {
        let connected: std::collections::HashSet<PersonId> = lock(&self.conns)
            .values()
            .map(|c| c.person.clone())
            .collect();
        let gone = self.auth().sweep(now_ms(), &connected);
        if !gone.is_empty() {
            let people: Vec<PersonId> = gone.into_iter().map(|(p, _)| p).collect();
            self.close_people(&people, CloseReason::Expired);
        }
    }
}

/// Start a session actor inside the actor system (the web runtime has no
/// actix context of its own).
#[derive(Message)]
#[rtype(result = "Result<Addr<SessionActor>, ErrorInfo>")]
pub struct OpenSession {
    pub target: Target,
    pub shared: Arc<WebShared>,
}

impl Handler<OpenSession> for NodeActor {
    type Result = ResponseActFuture<Self, Result<Addr<SessionActor>, ErrorInfo>>;
    fn handle(&mut self, msg: OpenSession, ctx: &mut Context<Self>) -> Self::Result {
        let me = ctx.address();
        let target = msg.target.clone();
        Box::pin(
            async move {
                me.send(crate::registry::web_ops::ResolveTarget { target })
                    .await
                    .map_err(|_| ErrorInfo::new(ErrorCode::Internal, "the node is busy"))?
            }
            .into_actor(self)
            .map(move |r, _, _| {
                let agents = r?;
                Ok(SessionActor::new(msg.target, msg.shared, agents).start())
            }),
        )
    }
}

/// Where the server listens and how.
#[derive(Debug, Clone)]
pub struct WebPlan {
    pub addr: SocketAddr,
    pub tls: Option<tls::TlsMaterial>,
    pub base_url: String,
}

/// Work out the listen address and TLS from the config (and
/// `AGENTOS_WEB_LISTEN`).
pub fn plan(
    home: &crate::paths::Home,
    cfg: &crate::config::WebConfig,
) -> Result<WebPlan, ErrorInfo> {
    let listen = std::env::var("AGENTOS_WEB_LISTEN")
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| cfg.listen.clone());
    let addr: SocketAddr = listen.parse().map_err(|_| {
        ErrorInfo::new(
            ErrorCode::ConfigInvalid,
            format!("[web] listen = '{listen}' is not an address like 127.0.0.1:7890"),
        )
    })?;
    let tls = if addr.ip().is_loopback() {
        None
    } else {
        let mut names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
        if !addr.ip().is_unspecified() {
            names.push(addr.ip().to_string());
        }
        if let Ok(h) = nix::unistd::gethostname() {
            names.push(h.to_string_lossy().into_owned());
        }
        Some(
            tls::load_or_create(
                &home.root.join("web"),
                cfg.cert.as_deref(),
                cfg.key.as_deref(),
                names,
            )
            .map_err(|e| ErrorInfo::new(ErrorCode::WebUnavailable, e.to_string()))?,
        )
    };
    let scheme = if tls.is_some() { "https" } else { "http" };
    let base_url = cfg.public_url.clone().unwrap_or_else(|| {
        let host = if addr.ip().is_unspecified() {
            nix::unistd::gethostname()
                .map(|h| h.to_string_lossy().into_owned())
                .unwrap_or_else(|_| "localhost".into())
        } else {
            addr.ip().to_string()
        };
        format!("{scheme}://{host}:{}", addr.port())
    });
    Ok(WebPlan {
        addr,
        tls,
        base_url,
    })
}

/// Bind and serve on a runtime of its own; returns the shared state (with
/// the real port in `base_url` when the port was 0).
pub fn start(
    node: Addr<NodeActor>,
    store: crate::store::Store,
    mut plan: WebPlan,
) -> Result<Arc<WebShared>, ErrorInfo> {
    let listener = std::net::TcpListener::bind(plan.addr).map_err(|e| {
        ErrorInfo::new(
            ErrorCode::WebUnavailable,
            format!("cannot listen on {}: {e}", plan.addr),
        )
    })?;
    let _ = listener.set_nonblocking(true);
    let real = listener
        .local_addr()
        .map_err(|e| ErrorInfo::new(ErrorCode::WebUnavailable, e.to_string()))?;
    if plan.addr.port() == 0 {
        plan.base_url = match plan.base_url.rsplit_once(':') {
            Some((head, _)) => format!("{head}:{}", real.port()),
            None => plan.base_url,
        };
    }
    let shared = Arc::new(WebShared {
        node,
        auth: Mutex::new(Auth::load(store)),
        sessions: Mutex::new(HashMap::new()),
        conns: Mutex::new(HashMap::new()),
        next_conn: AtomicU64::new(1),
        metrics: Metrics::new(),
        base_url: plan.base_url.clone(),
        fingerprint: plan.tls.as_ref().map(|t| t.fingerprint.clone()),
    });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("agentos-web")
        .enable_all()
        .build()
        .map_err(|e| ErrorInfo::new(ErrorCode::WebUnavailable, e.to_string()))?;
    let app = rest::router(shared.clone());
    let tls = plan.tls.clone();
    let sweeper = shared.clone();
    std::thread::Builder::new()
        .name("agentos-web".into())
        .spawn(move || {
            rt.block_on(async move {
                tokio::spawn(async move {
                    let mut t = tokio::time::interval(std::time::Duration::from_millis(250));
                    loop {
                        t.tick().await;
                        sweeper.sweep();
                    }
                });
                let make = app.into_make_service_with_connect_info::<SocketAddr>();
                let r = match tls {
                    None => match tokio::net::TcpListener::from_std(listener) {
                        Ok(l) => {
                            use axum::serve::ListenerExt;
                            let l = l.tap_io(tune_socket);
                            axum::serve(l, make).await.map_err(|e| e.to_string())
                        }
                        Err(e) => Err(e.to_string()),
                    },
                    Some(t) => {
                        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
                        match axum_server::tls_rustls::RustlsConfig::from_pem(t.cert_pem, t.key_pem)
                            .await
                        {
                            Ok(cfg) => axum_server::from_tcp(listener)
                                .acceptor(
                                    axum_server::tls_rustls::RustlsAcceptor::new(cfg)
                                        .acceptor(TunedAcceptor),
                                )
                                .serve(make)
                                .await
                                .map_err(|e| e.to_string()),
                            Err(e) => Err(format!("bad TLS certificate or key: {e}")),
                        }
                    }
                };
                if let Err(e) = r {
                    warn!(error = %e, "web server stopped");
                }
            });
        })
        .map_err(|e| ErrorInfo::new(ErrorCode::WebUnavailable, e.to_string()))?;
    info!(url = %plan.base_url, tls = plan.tls.is_some(), "web server listening");
    Ok(shared)
}

/// Unsent bytes a viewer's socket holds at most
/// ([`tune_socket`]); bytes in flight are not limited by it.
const NOTSENT_LOWAT: u32 = 64 * 1024;

/// Every accepted connection:
/// - `TCP_NODELAY`: a keystroke's echo must not wait for a delayed ACK
///   (40 ms here);
/// - `TCP_NOTSENT_LOWAT`: the kernel keeps at most [`NOTSENT_LOWAT`] unsent
///   bytes, so a slow viewer's backlog stays in its queue, where the agent
///   sees it and resyncs the viewer with a snapshot, instead of megabytes of
///   stale output waiting in the socket's send buffer.
fn tune_socket(s: &mut tokio::net::TcpStream) {
    let _ = s.set_nodelay(true);
    let _ = socket2::SockRef::from(&*s).set_tcp_notsent_lowat(NOTSENT_LOWAT);
}

/// [`tune_socket`] for the TLS server (under rustls).
#[derive(Debug, Clone, Copy)]
struct TunedAcceptor;

impl<S> axum_server::accept::Accept<tokio::net::TcpStream, S> for TunedAcceptor {
    type Stream = tokio::net::TcpStream;
    type Service = S;
    type Future = std::future::Ready<std::io::Result<(Self::Stream, Self::Service)>>;

    fn accept(&self, mut stream: tokio::net::TcpStream, service: S) -> Self::Future {
        tune_socket(&mut stream);
        std::future::ready(Ok((stream, service)))
    }
}
