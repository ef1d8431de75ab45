//! Per-agent HTTP/CONNECT egress proxy.
//!
//! A sandboxed agent lives in an empty network namespace, so this proxy is its
//! only way out. The node opens a listening socket on `127.0.0.1:3128` *inside*
//! the agent's namespace ([`listen_in_netns`]) and serves it from the node's own
//! namespace ([`spawn_proxy`]): upstream connections leave through the host
//! network, but only after the agent's [`HostPolicy`] has approved both the host
//! name and every address it resolves to. The proxy resolves names itself and
//! connects to exactly the addresses it checked, so DNS rebinding cannot reach
//! private addresses. Every request yields exactly one [`ProxyEvent`].
//!
//! Supported requests: `CONNECT host:port` tunnels and absolute-form plain HTTP
//! (`GET http://host[:port]/path`), which is rewritten to origin-form and sent
//! with `Connection: close` so the connection cannot be reused for another host.

use std::fs::File;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::timeout;

/// Port the proxy listens on inside each agent's network namespace.
pub const PROXY_PORT: u16 = 3128;
const MAX_HEAD: usize = 16 * 1024;
const MAX_HEADERS: usize = 100;
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// After refusing a request, drain at most this much for at most this long so
/// closing with unread input does not reset the connection and lose the reply.
const LINGER_TIMEOUT: Duration = Duration::from_secs(2);
const LINGER_MAX: usize = 256 * 1024;

/// Host policy for one agent. Host patterns: exact names ("github.com"), "*.github.com" (any subdomain, not the apex), or "*" (everything).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct HostPolicy {
    pub allow_outbound: bool,
    pub allowed_hosts: Vec<String>,
    pub blocked_hosts: Vec<String>,
}

/// Lower-case, without IPv6 brackets and without one trailing dot.
fn normalize(host: &str) -> String {
    let h = host.trim();
    let h = h
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(h);
    h.strip_suffix('.').unwrap_or(h).to_ascii_lowercase()
}

/// `host` must already be normalized.
fn pattern_matches(pattern: &str, host: &str) -> bool {
    let pattern = normalize(pattern);
    if pattern == "*" {
        return true;
    }
    if let Some(suffix) = pattern.strip_prefix("*.") {
        return host
            .strip_suffix(suffix)
            .and_then(|rest| rest.strip_suffix('.'))
            .is_some_and(|label| !label.is_empty());
    }
    match (pattern.parse::<IpAddr>(), host.parse::<IpAddr>()) {
        (Ok(a), Ok(b)) => a == b,
        _ => pattern == host,
    }
}

impl HostPolicy {
    /// Decide on a host name before resolution: Err(reason) when blocked.
    pub fn check_host(&self, host: &str) -> Result<(), String> {
        let h = normalize(host);
        if !self.allow_outbound {
            return Err("outbound network access is disabled for this agent".to_owned());
        }
        if h.is_empty() {
            return Err("empty host name".to_owned());
        }
        if let Some(p) = self.blocked_hosts.iter().find(|p| pattern_matches(p, &h)) {
            return Err(if normalize(p) == h {
                format!("host {h} is in blocked_hosts")
            } else {
                format!("host {h} matches blocked_hosts entry {p:?}")
            });
        }
        if !self.allowed_hosts.is_empty()
            && !self.allowed_hosts.iter().any(|p| pattern_matches(p, &h))
        {
            return Err(format!("host {h} is not in allowed_hosts"));
        }
        Ok(())
    }

    /// After resolution: refuse loopback, private (RFC1918, fc00::/7), link-local, unspecified, CGNAT 100.64/10, multicast addresses unless the host is matched by a non-"*" allowed_hosts entry.
    pub fn check_addrs(&self, host: &str, addrs: &[SocketAddr]) -> Result<(), String> {
        let h = normalize(host);
        if addrs.is_empty() {
            return Err(format!("host {h} resolved to no addresses"));
        }
        let explicit = || {
            self.allowed_hosts
                .iter()
                .any(|p| normalize(p) != "*" && pattern_matches(p, &h))
        };
        match addrs.iter().find(|a| !is_public(a.ip())) {
            Some(a) if !explicit() => Err(format!(
                "host {h} resolves to non-public address {}; list the host in allowed_hosts to allow it",
                a.ip()
            )),
            _ => Ok(()),
        }
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    !(ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_multicast()
        || ip.is_broadcast()
        || a == 0
        || (a == 100 && (b & 0xc0) == 64))
}

fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public_v4(v4);
            }
            let seg = v6.segments();
            if seg[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
                // NAT64 well-known prefix: judge the embedded IPv4 address.
                let [.., a, b, c, d] = v6.octets();
                return is_public_v4(Ipv4Addr::new(a, b, c, d));
            }
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (seg[0] & 0xfe00) == 0xfc00
                || (seg[0] & 0xffc0) == 0xfe80)
        }
    }
}

/// What the proxy decided about one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Decision {
    Allowed,
    Blocked,
    Error,
}

/// One request seen by an agent's proxy.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct ProxyEvent {
    pub agent_id: String,
    /// Request method ("CONNECT", "GET", ...); empty when the head did not parse.
    pub method: String,
    /// Target host as requested (IPv6 without brackets); empty when unknown.
    pub host: String,
    pub port: u16,
    pub decision: Decision,
    /// Why the request was blocked or failed; empty when allowed.
    pub reason: String,
    /// Status the proxy itself answered: 200 for an established tunnel, the
    /// error status for refusals, 0 for a forwarded plain HTTP request (the
    /// upstream's status is not inspected).
    pub status: u16,
    pub ts_ms: u64,
}

/// Serve `listener` (already bound, possibly in another netns) until the returned handle is aborted. Must be called inside a tokio runtime (the node runs actix, which is tokio current-thread per arbiter; tokio::spawn works there). Every request produces exactly one ProxyEvent, sent with try_send (never block the proxy on a slow consumer).
///
/// Aborting the handle also ends every open connection and tunnel.
pub fn spawn_proxy(
    listener: std::net::TcpListener,
    agent_id: String,
    policy: HostPolicy,
    events: mpsc::Sender<ProxyEvent>,
) -> io::Result<JoinHandle<()>> {
    tokio::runtime::Handle::try_current().map_err(io::Error::other)?;
    listener.set_nonblocking(true)?;
    let listener = tokio::net::TcpListener::from_std(listener)?;
    let ctx = Arc::new(Ctx {
        agent_id,
        policy,
        events,
    });
    Ok(tokio::spawn(async move {
        // Connections live in this set: dropping it (on abort) aborts them all.
        let mut conns = JoinSet::new();
        loop {
            tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => {
                        conns.spawn(handle_connection(stream, Arc::clone(&ctx)));
                    }
                    Err(error) => {
                        tracing::warn!(agent = %ctx.agent_id, %error, "proxy accept failed");
                        // Back off (e.g. out of descriptors) instead of spinning.
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
                Some(_) = conns.join_next(), if !conns.is_empty() => {}
            }
        }
    }))
}

struct Ctx {
    agent_id: String,
    policy: HostPolicy,
    events: mpsc::Sender<ProxyEvent>,
}

#[derive(Default)]
struct RequestInfo {
    method: String,
    host: String,
    port: u16,
}

impl Ctx {
    fn emit(&self, req: &RequestInfo, decision: Decision, reason: &str, status: u16) {
        let ts_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        let event = ProxyEvent {
            agent_id: self.agent_id.clone(),
            method: req.method.clone(),
            host: req.host.clone(),
            port: req.port,
            decision,
            reason: reason.to_owned(),
            status,
            ts_ms,
        };
        if let Err(error) = self.events.try_send(event) {
            tracing::debug!(agent = %self.agent_id, %error, "proxy event dropped");
        }
    }
}

/// A request the proxy answers itself instead of forwarding.
#[derive(Debug)]
struct Refusal {
    status: u16,
    reason: String,
}

impl Refusal {
    fn new(status: u16, reason: impl Into<String>) -> Self {
        let reason = reason.into();
        Self { status, reason }
    }
    fn bad(reason: impl Into<String>) -> Self {
        Self::new(400, reason)
    }
    fn blocked(reason: String) -> Self {
        Self::new(403, reason)
    }
    fn upstream(reason: impl Into<String>) -> Self {
        Self::new(502, reason)
    }
}

struct Head {
    method: String,
    target: String,
    minor_version: u8,
    headers: Vec<(String, Vec<u8>)>,
    /// Bytes the client sent after the head (body, or early tunnel data).
    rest: Vec<u8>,
}

struct Target {
    host: String,
    port: u16,
    /// Origin-form path for plain HTTP; `None` for CONNECT.
    path: Option<String>,
}

struct Ready {
    upstream: TcpStream,
    connect: bool,
    to_upstream: Vec<u8>,
}

async fn handle_connection(mut client: TcpStream, ctx: Arc<Ctx>) {
    let mut req = RequestInfo::default();
    match prepare(&mut client, &ctx.policy, &mut req).await {
        Ok(None) => tracing::debug!(agent = %ctx.agent_id, "proxy client sent no request"),
        Ok(Some(ready)) => {
            let status = if ready.connect { 200 } else { 0 };
            ctx.emit(&req, Decision::Allowed, "", status);
            tracing::debug!(agent = %ctx.agent_id, method = %req.method, host = %req.host, port = req.port, "proxy request allowed");
            if let Err(error) = tunnel(client, ready).await {
                tracing::debug!(agent = %ctx.agent_id, host = %req.host, %error, "proxy tunnel ended with error");
            }
        }
        Err(refusal) => {
            let decision = if refusal.status == 403 {
                tracing::info!(agent = %ctx.agent_id, method = %req.method, host = %req.host, port = req.port, reason = %refusal.reason, "proxy request blocked");
                Decision::Blocked
            } else {
                tracing::debug!(agent = %ctx.agent_id, method = %req.method, host = %req.host, status = refusal.status, reason = %refusal.reason, "proxy request failed");
                Decision::Error
            };
            ctx.emit(&req, decision, &refusal.reason, refusal.status);
            respond(client, &refusal).await;
        }
    }
}

async fn prepare(
    client: &mut TcpStream,
    policy: &HostPolicy,
    req: &mut RequestInfo,
) -> Result<Option<Ready>, Refusal> {
    let Some(head) = read_head(client).await? else {
        return Ok(None);
    };
    req.method.clone_from(&head.method);
    let target = parse_target(&head.method, &head.target)?;
    req.host.clone_from(&target.host);
    req.port = target.port;

    policy.check_host(&target.host).map_err(Refusal::blocked)?;
    let addrs = resolve(&target.host, target.port).await?;
    policy
        .check_addrs(&target.host, &addrs)
        .map_err(Refusal::blocked)?;
    let upstream = connect_any(&addrs).await?;
    let _ = upstream.set_nodelay(true);

    let to_upstream = match &target.path {
        None => head.rest,
        Some(path) => {
            let mut out = rewrite_head(&head, path, &target);
            out.extend_from_slice(&head.rest);
            out
        }
    };
    Ok(Some(Ready {
        upstream,
        connect: target.path.is_none(),
        to_upstream,
    }))
}

/// Read until a complete request head, within [`MAX_HEAD`] bytes and
/// [`HEAD_TIMEOUT`]. `None` when the client closed, or stayed idle, without
/// sending anything: that is no request, so it gets no reply and no event.
async fn read_head(client: &mut TcpStream) -> Result<Option<Head>, Refusal> {
    let deadline = tokio::time::Instant::now() + HEAD_TIMEOUT;
    let mut buf = vec![0u8; MAX_HEAD];
    let mut filled = 0;
    loop {
        let n = match tokio::time::timeout_at(deadline, client.read(&mut buf[filled..])).await {
            Err(_) if filled == 0 => return Ok(None),
            Err(_) => return Err(Refusal::new(408, "timed out reading the request head")),
            Ok(read) => {
                read.map_err(|e| Refusal::bad(format!("reading the request failed: {e}")))?
            }
        };
        if n == 0 {
            if filled == 0 {
                return Ok(None);
            }
            return Err(Refusal::bad("connection closed inside the request head"));
        }
        let scan_from = filled.saturating_sub(3);
        filled += n;
        if has_head_end(&buf[scan_from..filled])
            && let Some(head) = parse_head(&buf[..filled])?
        {
            return Ok(Some(head));
        }
        if filled == MAX_HEAD {
            return Err(Refusal::new(
                431,
                format!("request head exceeds {MAX_HEAD} bytes"),
            ));
        }
    }
}

fn has_head_end(bytes: &[u8]) -> bool {
    bytes.windows(2).any(|w| w == b"\n\n") || bytes.windows(3).any(|w| w == b"\n\r\n")
}

fn parse_head(bytes: &[u8]) -> Result<Option<Head>, Refusal> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut headers);
    match parsed.parse(bytes) {
        Ok(httparse::Status::Partial) => Ok(None),
        Ok(httparse::Status::Complete(len)) => Ok(Some(Head {
            method: parsed.method.unwrap_or_default().to_owned(),
            target: parsed.path.unwrap_or_default().to_owned(),
            minor_version: parsed.version.unwrap_or(1),
            headers: parsed
                .headers
                .iter()
                .map(|h| (h.name.to_owned(), h.value.to_vec()))
                .collect(),
            rest: bytes.get(len..).unwrap_or_default().to_vec(),
        })),
        Err(httparse::Error::TooManyHeaders) => Err(Refusal::new(431, "too many header fields")),
        Err(e) => Err(Refusal::bad(format!("malformed request head: {e}"))),
    }
}

fn parse_target(method: &str, target: &str) -> Result<Target, Refusal> {
    if method == "CONNECT" {
        let (host, port) = parse_authority(target, None)?;
        return Ok(Target {
            host,
            port,
            path: None,
        });
    }
    if target.starts_with('/') || target == "*" {
        let reason =
            "origin-form request: this is a proxy, send an absolute http:// URL or use CONNECT";
        return Err(Refusal::bad(reason));
    }
    let rest = match target.get(..7) {
        Some(scheme) if scheme.eq_ignore_ascii_case("http://") => &target[7..],
        _ if target.contains("://") => {
            return Err(Refusal::bad(
                "only http:// URLs are forwarded; use CONNECT for TLS",
            ));
        }
        _ => return Err(Refusal::bad("malformed request target")),
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(end);
    let path = path.split('#').next().unwrap_or_default();
    let path = if path.starts_with('/') {
        path.to_owned()
    } else {
        format!("/{path}")
    };
    let (host, port) = parse_authority(authority, Some(80))?;
    Ok(Target {
        host,
        port,
        path: Some(path),
    })
}

/// `host[:port]` or `[v6][:port]`; returns the host without brackets.
fn parse_authority(authority: &str, default_port: Option<u16>) -> Result<(String, u16), Refusal> {
    if authority.contains('@') {
        return Err(Refusal::bad("credentials in the URL are not supported"));
    }
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        let (host, after) = rest
            .split_once(']')
            .ok_or_else(|| Refusal::bad("unterminated IPv6 literal"))?;
        if host.parse::<Ipv6Addr>().is_err() || !(after.is_empty() || after.starts_with(':')) {
            return Err(Refusal::bad("invalid IPv6 authority"));
        }
        (host, after.strip_prefix(':'))
    } else {
        let (host, port) = match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        };
        let valid = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_');
        if !host.chars().all(valid) || host.len() > 255 {
            return Err(Refusal::bad("invalid host name"));
        }
        (host, port)
    };
    if host.is_empty() {
        return Err(Refusal::bad("missing host"));
    }
    let port = match port {
        Some(p) => p
            .parse::<u16>()
            .ok()
            .filter(|n| *n != 0 && p.bytes().all(|b| b.is_ascii_digit()))
            .ok_or_else(|| Refusal::bad("bad port"))?,
        None => default_port.ok_or_else(|| Refusal::bad("missing port"))?,
    };
    Ok((host.to_ascii_lowercase(), port))
}

async fn resolve(host: &str, port: u16) -> Result<Vec<SocketAddr>, Refusal> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    match timeout(CONNECT_TIMEOUT, tokio::net::lookup_host((host, port))).await {
        Err(_) => Err(Refusal::upstream(format!("DNS lookup of {host} timed out"))),
        Ok(Err(e)) => Err(Refusal::upstream(format!(
            "DNS lookup of {host} failed: {e}"
        ))),
        Ok(Ok(found)) => Some(found.collect::<Vec<_>>())
            .filter(|addrs| !addrs.is_empty())
            .ok_or_else(|| Refusal::upstream(format!("DNS lookup of {host} found no addresses"))),
    }
}

async fn connect_any(addrs: &[SocketAddr]) -> Result<TcpStream, Refusal> {
    let attempt = async {
        let mut last = io::Error::other("no addresses");
        for addr in addrs {
            match TcpStream::connect(addr).await {
                Ok(stream) => return Ok(stream),
                Err(e) => last = e,
            }
        }
        Err(last)
    };
    match timeout(CONNECT_TIMEOUT, attempt).await {
        Err(_) => Err(Refusal::upstream("connecting to upstream timed out")),
        Ok(Err(e)) => Err(Refusal::upstream(format!(
            "connecting to upstream failed: {e}"
        ))),
        Ok(Ok(stream)) => Ok(stream),
    }
}

/// Origin-form request line, the client's headers minus Proxy-*, Host and
/// hop-by-hop connection headers, then our own Host and Connection.
fn rewrite_head(head: &Head, path: &str, target: &Target) -> Vec<u8> {
    let mut out = format!("{} {path} HTTP/1.{}\r\n", head.method, head.minor_version).into_bytes();
    let mut upgrade = false;
    for (name, value) in &head.headers {
        let lower = name.to_ascii_lowercase();
        if lower == "connection" {
            upgrade |= value
                .split(|b| *b == b',')
                .any(|token| token.trim_ascii().eq_ignore_ascii_case(b"upgrade"));
            continue;
        }
        if lower.starts_with("proxy-") || lower == "host" || lower == "keep-alive" {
            continue;
        }
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value);
        out.extend_from_slice(b"\r\n");
    }
    let (open, close) = if target.host.contains(':') {
        ("[", "]")
    } else {
        ("", "")
    };
    let port = Some(target.port)
        .filter(|p| *p != 80)
        .map(|p| format!(":{p}"));
    let connection = if upgrade { "upgrade" } else { "close" };
    let host = format!("{open}{}{close}{}", target.host, port.unwrap_or_default());
    out.extend_from_slice(format!("Host: {host}\r\nConnection: {connection}\r\n\r\n").as_bytes());
    out
}

async fn tunnel(mut client: TcpStream, mut ready: Ready) -> io::Result<()> {
    if ready.connect {
        client
            .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
            .await?;
    }
    ready.upstream.write_all(&ready.to_upstream).await?;
    tokio::io::copy_bidirectional(&mut client, &mut ready.upstream).await?;
    Ok(())
}

async fn respond(mut client: TcpStream, refusal: &Refusal) {
    let phrase = match refusal.status {
        400 => "Bad Request",
        403 => "Forbidden",
        408 => "Request Timeout",
        431 => "Request Header Fields Too Large",
        _ => "Bad Gateway",
    };
    let body = if refusal.status == 403 {
        format!("blocked by agent policy: {}\n", refusal.reason)
    } else {
        format!("{}\n", refusal.reason)
    };
    let reply = format!(
        "HTTP/1.1 {} {phrase}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        refusal.status,
        body.len()
    );
    if client.write_all(reply.as_bytes()).await.is_err() {
        return;
    }
    let _ = client.shutdown().await;
    let drain = async {
        let mut sink = [0u8; 4096];
        let mut total = 0;
        while total < LINGER_MAX {
            match client.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => total += n,
            }
        }
    };
    let _ = timeout(LINGER_TIMEOUT, drain).await;
}

/// Create a TCP listener on 127.0.0.1:<port> inside the network namespace of process `pid` (open /proc/<pid>/ns/net, setns(CLONE_NEWNET) on a short-lived dedicated std::thread, bind, return the listener; the socket stays in that namespace). Also bring the namespace's `lo` up first if it is down (SIOCGIFFLAGS/SIOCSIFFLAGS ioctl on an AF_INET dgram socket created in that thread), since a fresh netns has lo down.
pub fn listen_in_netns(pid: u32, port: u16) -> io::Result<std::net::TcpListener> {
    let ns = File::open(format!("/proc/{pid}/ns/net"))?;
    std::thread::Builder::new()
        .name(format!("netns-listen-{pid}"))
        .spawn(move || {
            // SAFETY: plain syscall on a descriptor we own; it only changes the
            // namespace of this thread, which exits right after binding.
            if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                return Err(io::Error::last_os_error());
            }
            bring_loopback_up()?;
            std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, port))
        })?
        .join()
        .map_err(|_| io::Error::other("netns listener thread panicked"))?
}

/// Set IFF_UP on `lo` in the current thread's network namespace.
fn bring_loopback_up() -> io::Result<()> {
    // SAFETY: socket(2) has no memory-safety preconditions.
    let raw = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `raw` is a fresh descriptor that nothing else owns.
    let sock = unsafe { OwnedFd::from_raw_fd(raw) };
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in ifr.ifr_name.iter_mut().zip(b"lo") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS reads the name and writes the flags of `ifr`, which
    // is a valid, live ifreq.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut ifr) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just filled in the flags member of the union.
    let flags = unsafe { ifr.ifr_ifru.ifru_flags };
    if flags & libc::IFF_UP as libc::c_short != 0 {
        return Ok(());
    }
    ifr.ifr_ifru.ifru_flags = flags | libc::IFF_UP as libc::c_short;
    // SAFETY: as above; SIOCSIFFLAGS only reads `ifr`.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &ifr) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const WAIT: Duration = Duration::from_secs(10);

    fn policy(allowed: &[&str], blocked: &[&str]) -> HostPolicy {
        HostPolicy {
            allow_outbound: true,
            allowed_hosts: allowed.iter().map(|s| s.to_string()).collect(),
            blocked_hosts: blocked.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn addr(s: &str) -> SocketAddr {
        SocketAddr::new(s.parse().expect("ip"), 443)
    }

    #[test]
    fn patterns_match_exact_wildcard_and_star() {
        let p = policy(&["GitHub.com.", "*.example.org"], &[]);
        for ok in [
            "github.com",
            "GITHUB.COM.",
            "api.example.org",
            "a.b.example.org",
        ] {
            assert!(p.check_host(ok).is_ok(), "{ok}");
        }
        for no in [
            "api.github.com",
            "example.org",
            "badexample.org",
            "evil.com",
        ] {
            assert!(p.check_host(no).is_err(), "{no}");
        }
        assert!(policy(&["*"], &[]).check_host("anything.net").is_ok());
        assert!(policy(&["::1"], &[]).check_host("[0:0::1]").is_ok());
    }

    #[test]
    fn deny_wins_and_empty_allow_list_allows_all() {
        let p = policy(&["*", "evil.com"], &["evil.com", "*.corp"]);
        let reason = p.check_host("evil.com").expect_err("blocked");
        assert_eq!(reason, "host evil.com is in blocked_hosts");
        assert!(p.check_host("x.corp").is_err());
        assert!(p.check_host("good.com").is_ok());
        let open = policy(&[], &["evil.com"]);
        assert!(open.check_host("crates.io").is_ok());
        assert!(open.check_host("evil.com.").is_err());
    }

    #[test]
    fn outbound_disabled_blocks_everything() {
        let p = HostPolicy {
            allow_outbound: false,
            ..policy(&["*"], &[])
        };
        assert!(p.check_host("github.com").is_err());
        assert!(HostPolicy::default().check_host("github.com").is_err());
    }

    #[test]
    fn private_addresses_refused_unless_explicitly_allowed() {
        let open = policy(&["*"], &[]);
        let refused = "127.0.0.1 10.1.2.3 172.16.0.1 192.168.1.1 169.254.169.254 100.64.0.1 0.0.0.0 \
                       224.0.0.1 ::1 :: fc00::1 fd12::1 fe80::1 ff02::1 ::ffff:127.0.0.1 64:ff9b::10.0.0.1";
        for ip in refused.split_whitespace() {
            assert!(open.check_addrs("h.com", &[addr(ip)]).is_err(), "{ip}");
        }
        for ip in "8.8.8.8 100.128.0.1 2606:4700::1111 64:ff9b::8.8.8.8".split(' ') {
            assert!(open.check_addrs("h.com", &[addr(ip)]).is_ok(), "{ip}");
        }
        let mixed = [addr("8.8.8.8"), addr("10.0.0.1")];
        assert!(open.check_addrs("h.com", &mixed).is_err());
        let local = policy(&["localhost", "*.internal"], &[]);
        assert!(local.check_addrs("localhost", &[addr("127.0.0.1")]).is_ok());
        assert!(
            local
                .check_addrs("db.internal", &[addr("10.0.0.5")])
                .is_ok()
        );
        assert!(local.check_addrs("other", &[addr("10.0.0.5")]).is_err());
    }

    async fn start_proxy(policy: HostPolicy) -> (SocketAddr, mpsc::Receiver<ProxyEvent>) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        let addr = listener.local_addr().expect("proxy addr");
        let (tx, rx) = mpsc::channel(16);
        spawn_proxy(listener, "agent-1".to_owned(), policy, tx).expect("spawn proxy");
        (addr, rx)
    }

    /// HTTP server that answers every request with "hello" and reports the
    /// request head it received.
    async fn http_upstream() -> (u16, mpsc::Receiver<String>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await;
        let listener = listener.expect("bind upstream");
        let port = listener.local_addr().expect("upstream addr").port();
        let (tx, rx) = mpsc::channel(4);
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let tx = tx.clone();
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut chunk = [0u8; 1024];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match stream.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&chunk[..n]),
                        }
                    }
                    let _ = tx.send(String::from_utf8_lossy(&head).into_owned()).await;
                    let reply =
                        "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello";
                    let _ = stream.write_all(reply.as_bytes()).await;
                });
            }
        });
        (port, rx)
    }

    /// Send `request` and read the whole reply until the proxy closes.
    async fn exchange(proxy: SocketAddr, request: impl AsRef<[u8]>) -> String {
        let io = async {
            let mut stream = TcpStream::connect(proxy).await.expect("connect proxy");
            stream.write_all(request.as_ref()).await.expect("send");
            let mut reply = Vec::new();
            stream.read_to_end(&mut reply).await.expect("read reply");
            String::from_utf8_lossy(&reply).into_owned()
        };
        timeout(WAIT, io).await.expect("proxy reply in time")
    }

    async fn next<T>(rx: &mut mpsc::Receiver<T>) -> T {
        let received = timeout(WAIT, rx.recv()).await.expect("in time");
        received.expect("channel open")
    }

    #[track_caller]
    fn assert_starts(text: &str, prefix: &str) {
        assert!(
            text.starts_with(prefix),
            "expected {prefix:?}, got {text:?}"
        );
    }

    type Summary = (Decision, u16, String, String, u16);

    /// (decision, status, method, host, port) of the next event.
    async fn next_event(rx: &mut mpsc::Receiver<ProxyEvent>) -> Summary {
        let e = next(rx).await;
        (e.decision, e.status, e.method, e.host, e.port)
    }

    #[tokio::test]
    async fn connect_tunnels_to_explicitly_allowed_loopback() {
        let (port, mut seen) = http_upstream().await;
        let (proxy, mut events) = start_proxy(policy(&["localhost"], &[])).await;
        let io = async {
            let mut stream = TcpStream::connect(proxy).await.expect("connect proxy");
            let connect = format!("CONNECT localhost:{port} HTTP/1.1\r\nHost: x\r\n\r\n");
            stream.write_all(connect.as_bytes()).await.expect("send");
            let mut head = [0u8; 39];
            stream.read_exact(&mut head).await.expect("read reply");
            assert_eq!(&head, b"HTTP/1.1 200 Connection established\r\n\r\n");
            let request = b"GET /through HTTP/1.1\r\nHost: x\r\n\r\n";
            stream.write_all(request).await.expect("send");
            let mut reply = String::new();
            stream.read_to_string(&mut reply).await.expect("read");
            reply
        };
        let reply = timeout(WAIT, io).await.expect("tunnel in time");
        assert!(
            reply.starts_with("HTTP/1.1 200 OK") && reply.ends_with("hello"),
            "{reply}"
        );
        assert_starts(&next(&mut seen).await, "GET /through HTTP/1.1\r\n");
        let event = next_event(&mut events).await;
        let host = "localhost".to_owned();
        assert_eq!(
            event,
            (Decision::Allowed, 200, "CONNECT".to_owned(), host, port)
        );
    }

    #[tokio::test]
    async fn loopback_refused_by_default() {
        let (port, _seen) = http_upstream().await;
        let (proxy, mut events) = start_proxy(policy(&[], &[])).await;
        let reply = exchange(proxy, format!("CONNECT localhost:{port} HTTP/1.1\r\n\r\n")).await;
        assert_starts(&reply, "HTTP/1.1 403 Forbidden");
        assert!(reply.contains("non-public address"), "{reply}");
        assert_eq!(next(&mut events).await.decision, Decision::Blocked);
    }

    #[tokio::test]
    async fn absolute_form_get_is_forwarded() {
        let (port, mut seen) = http_upstream().await;
        let (proxy, mut events) = start_proxy(policy(&["localhost"], &[])).await;
        let request = format!(
            "GET http://LocalHost:{port}/path?q=1#frag HTTP/1.1\r\nHost: evil.com\r\n\
             Proxy-Authorization: Basic c2VjcmV0\r\nProxy-Connection: keep-alive\r\nX-Keep: yes\r\n\r\n"
        );
        let reply = exchange(proxy, request).await;
        assert!(
            reply.starts_with("HTTP/1.1 200 OK") && reply.ends_with("hello"),
            "{reply}"
        );
        let head = next(&mut seen).await;
        assert_starts(&head, "GET /path?q=1 HTTP/1.1\r\n");
        let host_line = format!("Host: localhost:{port}");
        for line in [host_line.as_str(), "X-Keep: yes", "Connection: close"] {
            assert!(
                head.contains(&format!("\r\n{line}\r\n")),
                "{line} missing: {head}"
            );
        }
        let lower = head.to_ascii_lowercase();
        assert!(
            !lower.contains("evil.com") && !lower.contains("proxy-"),
            "{head}"
        );
        let event = next_event(&mut events).await;
        let host = "localhost".to_owned();
        assert_eq!(event, (Decision::Allowed, 0, "GET".to_owned(), host, port));
    }

    #[tokio::test]
    async fn blocked_host_gets_403_and_one_event() {
        let (proxy, mut events) = start_proxy(policy(&[], &["evil.com"])).await;
        let request = "GET http://evil.com/x HTTP/1.1\r\nHost: evil.com\r\n\r\n";
        let reply = exchange(proxy, request).await;
        assert_starts(&reply, "HTTP/1.1 403 Forbidden\r\n");
        let body = "\r\n\r\nblocked by agent policy: host evil.com is in blocked_hosts\n";
        assert!(reply.ends_with(body), "{reply}");
        let event = next_event(&mut events).await;
        let host = "evil.com".to_owned();
        assert_eq!(event, (Decision::Blocked, 403, "GET".to_owned(), host, 80));
        assert!(events.try_recv().is_err(), "exactly one event per request");
    }

    #[tokio::test]
    async fn malformed_requests_get_400() {
        let (proxy, mut events) = start_proxy(policy(&[], &[])).await;
        for request in [
            "this is not http\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: example.com\r\n\r\n",
            "CONNECT example.com HTTP/1.1\r\n\r\n",
            "CONNECT example.com:99999 HTTP/1.1\r\n\r\n",
            "CONNECT :443 HTTP/1.1\r\n\r\n",
            "GET http://user@example.com/ HTTP/1.1\r\n\r\n",
            "GET ftp://example.com/ HTTP/1.1\r\n\r\n",
        ] {
            assert_starts(&exchange(proxy, request).await, "HTTP/1.1 400 Bad Request");
            assert_eq!(next(&mut events).await.decision, Decision::Error);
        }
    }

    #[tokio::test]
    async fn oversized_head_gets_431() {
        let (proxy, mut events) = start_proxy(policy(&[], &[])).await;
        let big = "a".repeat(2 * MAX_HEAD);
        let request = format!("GET http://example.com/ HTTP/1.1\r\nX-Big: {big}\r\n\r\n");
        assert_starts(&exchange(proxy, request).await, "HTTP/1.1 431 ");
        assert_eq!(next(&mut events).await.status, 431);
    }

    #[tokio::test]
    async fn closed_port_gets_502() {
        let free = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr());
        let port = free.expect("free port").port();
        let (proxy, mut events) = start_proxy(policy(&["127.0.0.1"], &[])).await;
        let reply = exchange(proxy, format!("CONNECT 127.0.0.1:{port} HTTP/1.1\r\n\r\n")).await;
        assert_starts(&reply, "HTTP/1.1 502 Bad Gateway");
        let event = next(&mut events).await;
        assert_eq!((event.decision, event.status), (Decision::Error, 502));
    }

    /// Kills and reaps the namespace holder even when the test fails.
    struct KillOnDrop(std::process::Child);
    impl Drop for KillOnDrop {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    #[tokio::test]
    async fn serves_a_listener_inside_another_netns() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipping listen_in_netns test: unshare -n and setns need root");
            return;
        }
        let child = std::process::Command::new("unshare")
            .args(["-n", "sleep", "60"])
            .spawn();
        let holder = KillOnDrop(child.expect("spawn unshare -n sleep 60"));
        let pid = holder.0.id();
        let own_ns = std::fs::read_link("/proc/self/ns/net").expect("own netns");
        let deadline = tokio::time::Instant::now() + WAIT;
        while std::fs::read_link(format!("/proc/{pid}/ns/net")).ok() == Some(own_ns.clone()) {
            assert!(tokio::time::Instant::now() < deadline, "no new netns");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }

        let (upstream_port, mut seen) = http_upstream().await;
        let listener = listen_in_netns(pid, PROXY_PORT).expect("listen in netns");
        let (tx, mut events) = mpsc::channel(16);
        let allow_localhost = policy(&["localhost"], &[]);
        let handle = spawn_proxy(listener, "ns-agent".into(), allow_localhost, tx);
        let handle = handle.expect("spawn proxy");
        let args =
            format!("-t {pid} -n curl -s -o /dev/null -w %{{http_code}} -x 127.0.0.1:{PROXY_PORT}");
        let curl = tokio::process::Command::new("nsenter")
            .args(args.split(' '))
            .args([
                "--noproxy",
                "",
                &format!("http://localhost:{upstream_port}/"),
            ])
            .kill_on_drop(true)
            .output();
        let out = timeout(WAIT, curl).await.expect("curl in time");
        let out = out.expect("run nsenter curl");
        assert_eq!(String::from_utf8_lossy(&out.stdout), "200", "{out:?}");
        assert_starts(&next(&mut seen).await, "GET / HTTP/1.1\r\n");
        assert_eq!(next(&mut events).await.decision, Decision::Allowed);
        handle.abort();
    }
}
