//! The HTTP routes: the REST API (`openapi.json` is its contract and a test
//! checks the server against it), `/health`, `/metrics`, the WebSocket
//! upgrade and the embedded web client.
//!
//! Every `/api/v1` route but the cookie exchange needs the session cookie;
//! what it returns is limited to what the person's link opens.

use std::net::SocketAddr;
use std::sync::Arc;

use agentos_proto::ws::{CommentView, Permission};
use agentos_proto::{AgentInfo, ErrorCode, ErrorInfo, Request, Response as NodeResponse};
use axum::Json;
use axum::Router;
use axum::body::Body as HttpBody;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use serde::{Deserialize, Serialize};

use super::auth::{Target, WebSession};
use super::{WebShared, now_ms};
use crate::registry::ClientRequest;
use crate::registry::web_ops::ListComments;

/// The REST API's contract (also served at `/api/v1/openapi.json`).
pub const OPENAPI: &str = include_str!("../../openapi.json");

#[derive(rust_embed::RustEmbed)]
#[folder = "../../web/dist"]
struct Assets;

type Shared = State<Arc<WebShared>>;

/// An API error: `{code, message, hint}` with a fitting status.
pub struct ApiError(ErrorInfo);

/// A JSON body, or a 400 with the API's error shape (not axum's text).
pub struct Body<T>(T);

impl<S, T> axum::extract::FromRequest<S> for Body<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;
    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, ApiError> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(Body(v)),
            Err(e) => Err(ApiError(
                ErrorInfo::new(
                    ErrorCode::InvalidArgument,
                    format!("bad request body: {}", e.body_text()),
                )
                .with_hint("see /api/v1/openapi.json for the body this route takes"),
            )),
        }
    }
}

impl From<ErrorInfo> for ApiError {
    fn from(e: ErrorInfo) -> Self {
        ApiError(e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = match self.0.code {
            ErrorCode::ShareInvalid => StatusCode::UNAUTHORIZED,
            ErrorCode::PermissionDenied => StatusCode::FORBIDDEN,
            ErrorCode::AgentNotFound | ErrorCode::SessionNotFound => StatusCode::NOT_FOUND,
            ErrorCode::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::InvalidArgument | ErrorCode::BadFrame => StatusCode::BAD_REQUEST,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        let body = serde_json::json!({
            "code": self.0.code.code(),
            "message": self.0.message,
            "hint": self.0.hint(),
        });
        (status, Json(body)).into_response()
    }
}

type ApiResult<T> = Result<T, ApiError>;

pub const COOKIE: &str = "agentos_session";

fn cookie_of(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v.to_string())
}

fn who(shared: &WebShared, headers: &HeaderMap) -> ApiResult<WebSession> {
    shared.metrics.http();
    let c = cookie_of(headers).ok_or_else(|| {
        ErrorInfo::new(ErrorCode::ShareInvalid, "not signed in")
            .with_hint("open a share link (or `agentos web`) first")
    })?;
    Ok(shared.auth().by_cookie(&c, now_ms()).ok_or_else(|| {
        ErrorInfo::new(ErrorCode::ShareInvalid, "your session has ended")
            .with_hint("open the share link again")
    })?)
}

fn owner(s: &WebSession) -> ApiResult<()> {
    if s.permission == Permission::Owner && s.target == Target::All {
        Ok(())
    } else {
        Err(ErrorInfo::new(
            ErrorCode::PermissionDenied,
            "only the node's owner may do this",
        )
        .into())
    }
}

async fn node(shared: &WebShared, req: Request) -> ApiResult<NodeResponse> {
    match shared.node.send(ClientRequest { req }).await {
        Ok(NodeResponse::Error { error }) => Err(error.into()),
        Ok(r) => Ok(r),
        Err(_) => Err(ErrorInfo::new(ErrorCode::Internal, "the node is busy").into()),
    }
}

/// The agent names a session may see (`None`: all).
async fn visible(shared: &WebShared, s: &WebSession) -> ApiResult<Option<Vec<String>>> {
    match &s.target {
        Target::All => Ok(None),
        Target::Agent(n) => Ok(Some(vec![n.clone()])),
        t @ Target::Session(_) => {
            let agents = shared
                .node
                .send(crate::registry::web_ops::ResolveTarget { target: t.clone() })
                .await
                .map_err(|_| ErrorInfo::new(ErrorCode::Internal, "the node is busy"))??;
            Ok(Some(agents.into_iter().map(|a| a.name).collect()))
        }
    }
}

#[derive(Serialize, Deserialize)]
pub struct AgentSummary {
    pub name: String,
    pub agent_type: String,
    pub state: String,
    pub device: String,
    pub branch: Option<String>,
    pub started_at_ms: Option<u64>,
}

fn summary(a: AgentInfo) -> AgentSummary {
    AgentSummary {
        name: a.name,
        agent_type: a.agent_type,
        state: a.state.label().to_string(),
        device: a.host_device,
        branch: a.branch,
        started_at_ms: a.started_at_ms,
    }
}

async fn agents_for(shared: &WebShared, s: &WebSession) -> ApiResult<Vec<AgentInfo>> {
    let vis = visible(shared, s).await?;
    let NodeResponse::Agents { agents } = node(shared, Request::List { all: false }).await? else {
        return Ok(Vec::new());
    };
    Ok(agents
        .into_iter()
        .filter(|a| vis.as_ref().is_none_or(|v| v.contains(&a.name)))
        .collect())
}

async fn health() -> impl IntoResponse {
    Json(serde_json::json!({
        "status": "ok",
        "version": env!("CARGO_PKG_VERSION"),
        "protocol": agentos_proto::ws::WS_VERSION,
    }))
}

async fn metrics(State(shared): Shared) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        shared.metrics.render(),
    )
}

async fn openapi() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI)
}

#[derive(Deserialize)]
struct TicketBody {
    ticket: String,
}

async fn cookie(State(shared): Shared, Body(body): Body<TicketBody>) -> ApiResult<Response> {
    shared.metrics.http();
    let (value, max_age) = shared.auth().redeem_ticket(&body.ticket, now_ms())?;
    let secure = if shared.base_url.starts_with("https") {
        "; Secure"
    } else {
        ""
    };
    let c =
        format!("{COOKIE}={value}; HttpOnly; SameSite=Strict; Path=/; Max-Age={max_age}{secure}");
    let mut r = StatusCode::NO_CONTENT.into_response();
    if let Ok(v) = HeaderValue::from_str(&c) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    Ok(r)
}

#[derive(Serialize, Deserialize)]
pub struct Me {
    pub person: String,
    pub name: String,
    pub permission: Permission,
    pub target: String,
    pub expires_at_ms: u64,
}

async fn me(State(shared): Shared, headers: HeaderMap) -> ApiResult<Json<Me>> {
    let s = who(&shared, &headers)?;
    Ok(Json(Me {
        person: s.person.0,
        name: s.name,
        permission: s.permission,
        target: s.target.to_string(),
        expires_at_ms: s.expires_at_ms,
    }))
}

async fn agents(State(shared): Shared, headers: HeaderMap) -> ApiResult<Json<Vec<AgentSummary>>> {
    let s = who(&shared, &headers)?;
    Ok(Json(
        agents_for(&shared, &s)
            .await?
            .into_iter()
            .map(summary)
            .collect(),
    ))
}

fn not_found(name: &str) -> ApiError {
    ErrorInfo::new(
        ErrorCode::AgentNotFound,
        format!("no agent named '{name}' here"),
    )
    .into()
}

async fn agent(
    State(shared): Shared,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> ApiResult<Json<AgentSummary>> {
    let s = who(&shared, &headers)?;
    agents_for(&shared, &s)
        .await?
        .into_iter()
        .find(|a| a.name == name)
        .map(|a| Json(summary(a)))
        .ok_or_else(|| not_found(&name))
}

async fn comments(
    State(shared): Shared,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> ApiResult<Json<Vec<CommentView>>> {
    let s = who(&shared, &headers)?;
    if !agents_for(&shared, &s)
        .await?
        .iter()
        .any(|a| a.name == name)
    {
        return Err(not_found(&name));
    }
    let list = shared
        .node
        .send(ListComments { agents: vec![name] })
        .await
        .map_err(|_| ErrorInfo::new(ErrorCode::Internal, "the node is busy"))?;
    Ok(Json(list))
}

#[derive(Deserialize)]
struct FilesQuery {
    #[serde(default)]
    path: String,
}

#[derive(Serialize, Deserialize)]
pub struct FileEntry {
    pub name: String,
    pub kind: String,
    pub size: u64,
}

/// The agent's working tree, read-only (directories only list; `.git` is
/// left out; nothing outside the tree is reachable, links included).
async fn files(
    State(shared): Shared,
    headers: HeaderMap,
    Path(name): Path<String>,
    Query(q): Query<FilesQuery>,
) -> ApiResult<Json<Vec<FileEntry>>> {
    let s = who(&shared, &headers)?;
    let a = agents_for(&shared, &s)
        .await?
        .into_iter()
        .find(|a| a.name == name)
        .ok_or_else(|| not_found(&name))?;
    let root = std::path::PathBuf::from(a.worktree.clone().unwrap_or(a.cwd.clone()));
    let bad = || {
        ApiError(ErrorInfo::new(
            ErrorCode::InvalidArgument,
            "no such directory in the agent's tree",
        ))
    };
    let root = root.canonicalize().map_err(|_| bad())?;
    let dir = root
        .join(q.path.trim_start_matches('/'))
        .canonicalize()
        .map_err(|_| bad())?;
    if !dir.starts_with(&root) {
        return Err(bad());
    }
    let mut out = Vec::new();
    for e in std::fs::read_dir(&dir).map_err(|_| bad())?.flatten() {
        let n = e.file_name().to_string_lossy().into_owned();
        if n == ".git" {
            continue;
        }
        let md = match e.metadata() {
            Ok(m) => m,
            Err(_) => continue,
        };
        out.push(FileEntry {
            name: n,
            kind: if md.is_dir() { "dir" } else { "file" }.into(),
            size: md.len(),
        });
    }
    out.sort_by(|a, b| (a.kind != "dir", &a.name).cmp(&(b.kind != "dir", &b.name)));
    Ok(Json(out))
}

#[derive(Serialize, Deserialize)]
pub struct SessionItem {
    pub name: String,
    pub agents: Vec<String>,
}

async fn sessions(State(shared): Shared, headers: HeaderMap) -> ApiResult<Json<Vec<SessionItem>>> {
    let s = who(&shared, &headers)?;
    let NodeResponse::Sessions { sessions } = node(&shared, Request::SessionList).await? else {
        return Ok(Json(Vec::new()));
    };
    Ok(Json(
        sessions
            .into_iter()
            .filter(|x| match &s.target {
                Target::All => true,
                Target::Session(n) => *n == x.name,
                Target::Agent(_) => false,
            })
            .map(|x| SessionItem {
                name: x.name,
                agents: x.agents,
            })
            .collect(),
    ))
}

async fn shares(State(shared): Shared, headers: HeaderMap) -> ApiResult<Response> {
    let s = who(&shared, &headers)?;
    owner(&s)?;
    Ok(Json(shared.share_views()).into_response())
}

#[derive(Deserialize)]
struct NewShare {
    target: String,
    permission: Permission,
    #[serde(default)]
    expires_in_secs: Option<u64>,
    #[serde(default)]
    max_uses: Option<u32>,
    #[serde(default)]
    one_time: bool,
}

async fn share_create(
    State(shared): Shared,
    headers: HeaderMap,
    Body(b): Body<NewShare>,
) -> ApiResult<Response> {
    let s = who(&shared, &headers)?;
    owner(&s)?;
    let max_uses = if b.one_time { Some(1) } else { b.max_uses };
    let NodeResponse::Share { share } = node(
        &shared,
        Request::ShareCreate {
            target: b.target,
            permission: b.permission,
            expires_in_secs: b.expires_in_secs,
            max_uses,
        },
    )
    .await?
    else {
        return Err(ErrorInfo::new(ErrorCode::Internal, "unexpected reply").into());
    };
    Ok((StatusCode::CREATED, Json(share)).into_response())
}

async fn share_revoke(
    State(shared): Shared,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let s = who(&shared, &headers)?;
    owner(&s)?;
    if shared.auth().grant(&id).is_none() {
        let e = ErrorInfo::new(ErrorCode::ShareInvalid, format!("no share link '{id}'"))
            .with_hint("list the links with GET /api/v1/shares");
        let body =
            serde_json::json!({"code": e.code.code(), "message": e.message, "hint": e.hint()});
        return Ok((StatusCode::NOT_FOUND, Json(body)).into_response());
    }
    shared.revoke(&id)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Refuse cross-site WebSocket upgrades (the cookie would ride along).
fn same_origin(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return true; // not a browser
    };
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    origin
        .split_once("://")
        .is_some_and(|(_, h)| h.eq_ignore_ascii_case(host))
}

async fn ws_upgrade(
    State(shared): Shared,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    up: WebSocketUpgrade,
) -> Response {
    if !same_origin(&headers) {
        return ApiError(ErrorInfo::new(
            ErrorCode::PermissionDenied,
            "cross-origin WebSocket refused",
        ))
        .into_response();
    }
    let cookie = cookie_of(&headers);
    // Clients send small messages: a small read buffer (tungstenite zeroes
    // the whole buffer on every read of an idle socket; 128 KiB by default
    // cost ~12 % of the daemon's CPU with 50 viewers).
    up.max_message_size(agentos_proto::ws::MAX_CONTROL.max(agentos_proto::ws::MAX_INPUT) + 64)
        .read_buffer_size(8 * 1024)
        .on_upgrade(move |socket| super::conn::serve(shared, socket, peer.ip(), cookie))
}

fn asset(path: &str) -> Response {
    let (file, name) = match Assets::get(path) {
        Some(f) => (f, path),
        // The client routes (`/`, `/s/<id>`) all load the app.
        None => match Assets::get("index.html") {
            Some(f) => (f, "index.html"),
            None => {
                return (
                    StatusCode::NOT_FOUND,
                    "the web client was not built into this binary",
                )
                    .into_response();
            }
        },
    };
    let mime = mime_guess::from_path(name).first_or_octet_stream();
    let cache = if name == "index.html" {
        "no-store"
    } else {
        "public, max-age=31536000, immutable"
    };
    Response::builder()
        .header(header::CONTENT_TYPE, mime.as_ref())
        .header(header::CACHE_CONTROL, cache)
        .header(
            "content-security-policy",
            "default-src 'self'; connect-src 'self' ws: wss:; style-src 'self' 'unsafe-inline'; img-src 'self' data:; frame-ancestors 'none'",
        )
        .header("x-content-type-options", "nosniff")
        .header("referrer-policy", "no-referrer")
        .body(HttpBody::from(file.data.into_owned()))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

async fn static_file(uri: axum::http::Uri) -> Response {
    asset(uri.path().trim_start_matches('/'))
}

pub fn router(shared: Arc<WebShared>) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .route("/ws", get(ws_upgrade))
        .route("/api/v1/openapi.json", get(openapi))
        .route("/api/v1/auth/cookie", post(cookie))
        .route("/api/v1/me", get(me))
        .route("/api/v1/agents", get(agents))
        .route("/api/v1/agents/{name}", get(agent))
        .route("/api/v1/agents/{name}/comments", get(comments))
        .route("/api/v1/agents/{name}/files", get(files))
        .route("/api/v1/sessions", get(sessions))
        .route("/api/v1/shares", get(shares).post(share_create))
        .route("/api/v1/shares/{id}", delete(share_revoke))
        .route("/api/v1/{*rest}", axum::routing::any(|| async { (StatusCode::NOT_FOUND, Json(serde_json::json!({"code": "E012", "message": "no such API route", "hint": "see /api/v1/openapi.json"}))) }))
        .fallback(static_file)
        .with_state(shared)
}
