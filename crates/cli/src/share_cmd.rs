//! `agentos share`, `web`, `comment`, `join` and `leave`: the CLI side of
//! collaboration. Share links and comments are made by the daemon; `join`
//! is a WebSocket (protocol v3) client of another node's web server, with
//! the same rights as a browser holding the same link.

use crate::{Ctx, Failure, Res, local};
use agentos_proto::ws::{self, ClientMsg, Frame, Permission, ServerMsg};
use agentos_proto::{ErrorCode, Request, Response, ShareCreated};
use clap::{Args, Subcommand};
use std::io::{IsTerminal, Read, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

#[derive(Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub struct ShareArgs {
    #[command(subcommand)]
    pub cmd: Option<ShareCmd>,
    /// The agent to share, or `session:<name>` for a saved session.
    pub target: Option<String>,
    /// What the holder of the link may do.
    #[arg(long, short = 'p', default_value = "view", value_parser = ["view", "comment", "edit"])]
    pub permission: String,
    /// How long the link works (`30m`, `1h`, `2d`); none: until revoked.
    #[arg(long)]
    pub expires: Option<String>,
    /// How many times the link may be opened.
    #[arg(long)]
    pub max_uses: Option<u32>,
    /// The link works once.
    #[arg(long)]
    pub one_time: bool,
}

#[derive(Subcommand, Debug)]
pub enum ShareCmd {
    /// Every share link: target, permission, uses, expiry, open sockets.
    List,
    /// Revoke a link: every socket opened with it closes within a second.
    Revoke { id: String },
}

#[derive(Subcommand, Debug)]
pub enum CommentCmd {
    /// Comment on an output line (`agentos logs <agent> --numbers` shows them).
    Add {
        agent: String,
        #[arg(long)]
        line: u64,
        text: String,
        /// Reply to this comment.
        #[arg(long)]
        reply_to: Option<String>,
    },
    /// Comments with their line, author and state.
    List { agent: Option<String> },
    /// Mark a comment resolved (`--reopen` to undo).
    Resolve {
        id: String,
        #[arg(long)]
        reopen: bool,
    },
}

fn unexpected() -> Failure {
    local(ErrorCode::Internal, "unexpected reply from the daemon")
}

fn parse_age(s: &str) -> Result<u64, Failure> {
    let s = s.trim();
    if let Some(d) = s.strip_suffix('d') {
        return d
            .parse::<u64>()
            .map(|n| n * 86_400)
            .map_err(|_| local(ErrorCode::InvalidArgument, format!("bad duration '{s}'")));
    }
    Ok(crate::p2p_cmd::parse_duration_ms(s)?.div_ceil(1000))
}

fn print_share(ctx: &Ctx, s: &ShareCreated) {
    if ctx.json {
        ctx.json_out(s);
        return;
    }
    println!("{}", s.link);
    println!("{}", s.url);
    let mut notes = vec![format!("id {}", s.id), format!("{} access", s.permission)];
    if let Some(e) = s.expires_at_ms {
        let secs = e.saturating_sub(agentos_actors::holder::now_ms()) / 1000;
        notes.push(format!(
            "expires in {}",
            humantime::format_duration(Duration::from_secs(secs))
        ));
    }
    if let Some(m) = s.max_uses {
        notes.push(format!("{m} use{}", if m == 1 { "" } else { "s" }));
    }
    eprintln!(
        "{} · revoke with `agentos share revoke {}`",
        notes.join(" · "),
        s.id
    );
}

pub fn share(ctx: &Ctx, a: ShareArgs) -> Res {
    let mut c = ctx.client()?;
    match a.cmd {
        Some(ShareCmd::List) => {
            let Response::Shares { shares } = c.request(Request::ShareList)? else {
                return Err(unexpected());
            };
            if ctx.json {
                ctx.json_out(&shares);
                return Ok(0);
            }
            if shares.is_empty() {
                ctx.say("no share links (make one with `agentos share <agent>`)");
                return Ok(0);
            }
            let now = agentos_actors::holder::now_ms();
            println!(
                "{:<12} {:<22} {:<8} {:<7} {:<10} {:<6} STATUS",
                "ID", "TARGET", "ACCESS", "USES", "EXPIRES", "OPEN"
            );
            for s in shares {
                let status = if s.revoked {
                    "revoked"
                } else if s.expires_at_ms.is_some_and(|e| now >= e) {
                    "expired"
                } else if s.max_uses.is_some_and(|m| s.uses >= m) {
                    "used up"
                } else {
                    "active"
                };
                let uses = match s.max_uses {
                    Some(m) => format!("{}/{m}", s.uses),
                    None => s.uses.to_string(),
                };
                let exp = s
                    .expires_at_ms
                    .map(|e| {
                        humantime::format_duration(Duration::from_secs(
                            e.saturating_sub(now) / 1000,
                        ))
                        .to_string()
                    })
                    .unwrap_or_else(|| "never".into());
                println!(
                    "{:<12} {:<22} {:<8} {:<7} {:<10} {:<6} {status}",
                    s.id, s.target, s.permission, uses, exp, s.active
                );
            }
            Ok(0)
        }
        Some(ShareCmd::Revoke { id }) => {
            c.request(Request::ShareRevoke { id: id.clone() })?;
            ctx.say(format!("revoked {id}; its sockets are closed"));
            Ok(0)
        }
        None => {
            let Some(t) = a.target else {
                return Err(local(
                    ErrorCode::InvalidArgument,
                    "name the agent to share: `agentos share <agent> --permission view|comment|edit`",
                ));
            };
            let target = if t.starts_with("session:") || t.starts_with("agent:") {
                t
            } else {
                format!("agent:{t}")
            };
            let permission = Permission::parse(&a.permission).ok_or_else(|| {
                local(
                    ErrorCode::InvalidArgument,
                    "permission is view, comment or edit",
                )
            })?;
            let expires_in_secs = a.expires.as_deref().map(parse_age).transpose()?;
            let max_uses = if a.one_time { Some(1) } else { a.max_uses };
            if max_uses == Some(0) {
                return Err(local(
                    ErrorCode::InvalidArgument,
                    "--max-uses must be at least 1",
                ));
            }
            let Response::Share { share } = c.request(Request::ShareCreate {
                target,
                permission,
                expires_in_secs,
                max_uses,
            })?
            else {
                return Err(unexpected());
            };
            print_share(ctx, &share);
            Ok(0)
        }
    }
}

/// `agentos web`: a fresh owner link to this node's web client.
pub fn web(ctx: &Ctx, expires: String) -> Res {
    let mut c = ctx.client()?;
    let secs = parse_age(&expires)?;
    let Response::Share { share } = c.request(Request::ShareCreate {
        target: "*".into(),
        permission: Permission::Owner,
        expires_in_secs: Some(secs),
        max_uses: None,
    })?
    else {
        return Err(unexpected());
    };
    let base = share
        .url
        .split("/s/")
        .next()
        .unwrap_or_default()
        .to_string();
    if ctx.json {
        ctx.json_out(&serde_json::json!({
            "url": share.url, "base": base, "id": share.id, "expires_at_ms": share.expires_at_ms,
        }));
    } else {
        println!("{}", share.url);
        eprintln!(
            "owner link (keep it to yourself) · id {} · revoke with `agentos share revoke {}`",
            share.id, share.id
        );
    }
    Ok(0)
}

pub fn comment(ctx: &Ctx, cmd: CommentCmd) -> Res {
    let mut c = ctx.client()?;
    let req = match cmd {
        CommentCmd::Add {
            agent,
            line,
            text,
            reply_to,
        } => Request::CommentAdd {
            agent,
            line,
            text,
            parent: reply_to,
        },
        CommentCmd::List { agent } => Request::CommentList { agent },
        CommentCmd::Resolve { id, reopen } => Request::CommentResolve {
            id,
            resolved: !reopen,
        },
    };
    let Response::Comments { comments } = c.request(req)? else {
        return Err(unexpected());
    };
    if ctx.json {
        ctx.json_out(&comments);
        return Ok(0);
    }
    for cm in comments.iter().filter(|c| !c.deleted) {
        let state = if cm.resolved { " [resolved]" } else { "" };
        let reply = cm
            .parent
            .as_ref()
            .map(|p| format!(" ↳ {}", p.0))
            .unwrap_or_default();
        println!(
            "{} {}:{} {}{reply}{state}: {}",
            cm.id.0, cm.agent, cm.line, cm.author, cm.text
        );
        if !cm.reactions.is_empty() {
            let r: Vec<String> = cm
                .reactions
                .iter()
                .map(|(e, who)| format!("{e} {}", who.len()))
                .collect();
            println!("    {}", r.join("  "));
        }
    }
    Ok(0)
}

// ------------------------------------------------------------------ join

/// A parsed share link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub tls: bool,
    pub hostport: String,
    pub fingerprint: Option<String>,
    pub secret: String,
}

/// `agentos://host:port/s/<id>[?fp=…]#<secret>`, `agentoss://…` (TLS), or
/// the web URL `http(s)://host:port/s/<id>#<secret>`.
pub fn parse_link(s: &str) -> Option<Link> {
    let (scheme, rest) = s.trim().split_once("://")?;
    let tls = match scheme {
        "agentos" | "http" => false,
        "agentoss" | "https" => true,
        _ => return None,
    };
    let (before, secret) = rest.split_once('#')?;
    let (hostport, path) = before.split_once('/').unwrap_or((before, ""));
    let fingerprint = path
        .split_once("?")
        .and_then(|(_, q)| q.split('&').find_map(|kv| kv.strip_prefix("fp=")))
        .map(str::to_string);
    if hostport.is_empty() || secret.is_empty() {
        return None;
    }
    Some(Link {
        tls,
        hostport: hostport.to_string(),
        fingerprint,
        secret: secret.to_string(),
    })
}

fn joined_dir(ctx: &Ctx) -> std::path::PathBuf {
    ctx.home.root.join("joined")
}

/// Accept exactly the certificate whose SHA-256 the link carries.
#[derive(Debug)]
struct Pinned {
    fp: String,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl rustls::client::danger::ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        use sha2::Digest;
        let got = data_encoding::HEXLOWER.encode(&sha2::Sha256::digest(end_entity.as_ref()));
        if got == self.fp {
            Ok(rustls::client::danger::ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(
                "the node's certificate does not match the link's fingerprint".into(),
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

type Socket = tungstenite::WebSocket<tungstenite::stream::MaybeTlsStream<std::net::TcpStream>>;

fn connect(link: &Link) -> Result<Socket, Failure> {
    let scheme = if link.tls { "wss" } else { "ws" };
    let url = format!("{scheme}://{}/ws", link.hostport);
    let tcp = std::net::TcpStream::connect(&link.hostport).map_err(|e| {
        local(
            ErrorCode::PeerUnreachable,
            format!("cannot reach {}: {e}", link.hostport),
        )
    })?;
    let _ = tcp.set_nodelay(true);
    let connector = if link.tls {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let Some(fp) = link.fingerprint.clone() else {
            return Err(local(
                ErrorCode::InvalidArgument,
                "this https link has no certificate fingerprint: use the agentos:// link `agentos share` printed",
            ));
        };
        let cfg = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| local(ErrorCode::Internal, e))?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Pinned { fp, provider }))
            .with_no_client_auth();
        Some(tungstenite::Connector::Rustls(Arc::new(cfg)))
    } else {
        None
    };
    let (sock, _) = tungstenite::client_tls_with_config(url.as_str(), tcp, None, connector)
        .map_err(|e| {
            local(
                ErrorCode::PeerUnreachable,
                format!("WebSocket handshake failed: {e}"),
            )
        })?;
    Ok(sock)
}

fn set_read_timeout(sock: &Socket, d: Option<Duration>) {
    let tcp = match sock.get_ref() {
        tungstenite::stream::MaybeTlsStream::Plain(t) => t,
        tungstenite::stream::MaybeTlsStream::Rustls(t) => t.get_ref(),
        _ => return,
    };
    let _ = tcp.set_read_timeout(d);
}

fn send_json(sock: &mut Socket, m: &ClientMsg) -> Result<(), Failure> {
    let text = serde_json::to_string(m).map_err(|e| local(ErrorCode::Internal, e))?;
    sock.send(tungstenite::Message::text(text))
        .map_err(|e| local(ErrorCode::PeerUnreachable, format!("connection lost: {e}")))
}

/// Show a one-line notice without disturbing the agent's screen much.
fn notice(tty: bool, msg: &str) {
    if tty {
        eprint!("\x1b7\x1b[999;1H\x1b[7m agentos: {msg} \x1b[0m\x1b8");
    } else {
        eprintln!("agentos: {msg}");
    }
}

pub fn join(
    ctx: &Ctx,
    link: String,
    name: Option<String>,
    agent: Option<String>,
    detach_key: Vec<u8>,
) -> Res {
    let link = parse_link(&link).ok_or_else(|| {
        local(
            ErrorCode::InvalidArgument,
            "not a share link: expected agentos://host:port/s/<id>#<secret> or http(s)://…",
        )
    })?;
    let mut sock = connect(&link)?;
    let device = nix::unistd::gethostname()
        .map(|h| format!("cli@{}", h.to_string_lossy()))
        .unwrap_or_else(|_| "cli".into());
    let name = name.or_else(|| std::env::var("USER").ok());
    send_json(
        &mut sock,
        &ClientMsg::Auth {
            token: Some(link.secret.clone()),
            target: None,
            name,
            device: Some(device),
        },
    )?;
    // auth_ok, then session_state.
    let mut permission = Permission::View;
    let mut agents: Vec<String> = Vec::new();
    let mut me = String::new();
    while agents.is_empty() {
        let msg = sock
            .read()
            .map_err(|e| local(ErrorCode::PeerUnreachable, format!("connection lost: {e}")))?;
        let tungstenite::Message::Text(t) = msg else {
            if msg.is_close() {
                return Err(local(
                    ErrorCode::ShareInvalid,
                    "the node closed the connection",
                ));
            }
            continue;
        };
        match ws::decode_server(&t) {
            Ok(ServerMsg::AuthOk { you, .. }) => {
                permission = you.permission;
                me = you.id.0;
            }
            Ok(ServerMsg::SessionState { agents: a, .. }) => {
                agents = a.into_iter().map(|a| a.name).collect();
                if agents.is_empty() {
                    return Err(local(
                        ErrorCode::AgentNotFound,
                        "the shared session has no agents",
                    ));
                }
            }
            Ok(ServerMsg::Error {
                code,
                message,
                hint,
                ..
            }) => {
                return Err(Failure::Coded(
                    agentos_proto::ErrorInfo::new(code_of(&code), message).with_hint(hint),
                ));
            }
            _ => {}
        }
    }
    let agent = match agent {
        Some(a) if agents.contains(&a) => a,
        Some(a) => {
            return Err(local(
                ErrorCode::AgentNotFound,
                format!(
                    "'{a}' is not in this session (it has: {})",
                    agents.join(", ")
                ),
            ));
        }
        None => agents[0].clone(),
    };
    send_json(
        &mut sock,
        &ClientMsg::TerminalSubscribe {
            agent: agent.clone(),
            since: None,
        },
    )?;
    // `agentos leave` finds us here.
    let dir = joined_dir(ctx);
    let _ = std::fs::create_dir_all(&dir);
    let marker = dir.join(format!("{}.json", std::process::id()));
    let _ = std::fs::write(
        &marker,
        serde_json::json!({ "pid": std::process::id(), "host": link.hostport, "agent": agent, "person": me })
            .to_string(),
    );
    let stop = Arc::new(AtomicBool::new(false));
    let _ = signal_hook::flag::register(signal_hook::consts::SIGTERM, stop.clone());
    let _ = signal_hook::flag::register(signal_hook::consts::SIGHUP, stop.clone());
    let tty = std::io::stdin().is_terminal();
    let raw = tty && crossterm::terminal::enable_raw_mode().is_ok();
    notice(
        tty,
        &format!("joined {agent} with {permission} access; detach key leaves"),
    );
    if permission == Permission::View {
        notice(tty, "view-only: your keystrokes are not sent");
    }
    // Keystrokes come from a reader thread; the socket is polled.
    let (in_tx, in_rx) = std::sync::mpsc::sync_channel::<Option<Vec<u8>>>(64);
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        let mut stdin = std::io::stdin();
        loop {
            match stdin.read(&mut buf) {
                Ok(0) | Err(_) => {
                    let _ = in_tx.send(None);
                    break;
                }
                Ok(n) => {
                    if in_tx.send(Some(buf[..n].to_vec())).is_err() {
                        break;
                    }
                }
            }
        }
    });
    set_read_timeout(&sock, Some(Duration::from_millis(20)));
    let mut channel = None;
    let mut matcher = crate::attach::DetachMatcher::new(detach_key);
    let mut out = std::io::stdout().lock();
    let mut stdin_open = true;
    let result: Res = 'outer: loop {
        if stop.load(Ordering::Relaxed) {
            let _ = send_json(&mut sock, &ClientMsg::SessionLeave {});
            break Ok(0);
        }
        while stdin_open && let Ok(item) = in_rx.try_recv() {
            let Some(bytes) = item else {
                // Piped input ended: keep watching until the node or a signal ends it.
                stdin_open = false;
                break;
            };
            let (fwd, detach) = matcher.feed(&bytes);
            if !fwd.is_empty()
                && let Some(ch) = channel
            {
                let frame = ws::encode_input(ch, &fwd);
                if sock.send(tungstenite::Message::binary(frame)).is_err() {
                    break 'outer Err(local(ErrorCode::PeerUnreachable, "connection lost"));
                }
            }
            if detach {
                let _ = send_json(&mut sock, &ClientMsg::SessionLeave {});
                break 'outer Ok(0);
            }
        }
        match sock.read() {
            Ok(tungstenite::Message::Binary(b)) => match ws::decode_frame(&b) {
                Ok(Frame::Output { data, .. }) => {
                    let _ = out.write_all(data);
                    let _ = out.flush();
                }
                Ok(Frame::Snapshot { data, .. }) => {
                    if raw {
                        let _ = out.write_all(b"\x1bc");
                    }
                    let _ = out.write_all(data);
                    let _ = out.flush();
                }
                _ => {}
            },
            Ok(tungstenite::Message::Text(t)) => match ws::decode_server(&t) {
                Ok(ServerMsg::TerminalSubscribed { channel: ch, .. }) => channel = Some(ch),
                Ok(ServerMsg::Error { code, message, .. }) => {
                    notice(tty, &format!("{code} {message}"))
                }
                Ok(ServerMsg::PermissionChanged {
                    person,
                    permission: p,
                }) if person.0 == me => {
                    notice(tty, &format!("your access is now {p}"));
                }
                Ok(ServerMsg::ControlGranted { person }) if person.0 == me => {
                    notice(tty, "you have control: your keystrokes are sent")
                }
                Ok(ServerMsg::ControlRevoked { person }) if person.0 == me => {
                    notice(tty, "control returned to the owner")
                }
                Ok(ServerMsg::TerminalExited { state, .. }) => {
                    notice(tty, &format!("the agent is {state}"))
                }
                Ok(ServerMsg::Closed { reason }) => {
                    break Err(local(
                        ErrorCode::ShareInvalid,
                        format!("the node closed the session: {reason:?}").to_lowercase(),
                    ));
                }
                _ => {}
            },
            Ok(tungstenite::Message::Close(_)) => {
                break Err(local(
                    ErrorCode::ShareInvalid,
                    "the node closed the session",
                ));
            }
            Ok(_) => {}
            Err(tungstenite::Error::Io(e))
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed) => {
                break Err(local(ErrorCode::PeerUnreachable, "the connection closed"));
            }
            Err(e) => {
                break Err(local(
                    ErrorCode::PeerUnreachable,
                    format!("connection lost: {e}"),
                ));
            }
        }
    };
    let _ = sock.close(None);
    let _ = sock.flush();
    if raw {
        let _ = crossterm::terminal::disable_raw_mode();
    }
    let _ = std::fs::remove_file(&marker);
    if result.is_ok() {
        eprintln!("\r\nleft the session");
    }
    result
}

fn code_of(code: &str) -> ErrorCode {
    match code {
        "E021" => ErrorCode::PermissionDenied,
        "E026" => ErrorCode::RateLimited,
        "E002" => ErrorCode::AgentNotFound,
        "E016" => ErrorCode::SessionNotFound,
        _ => ErrorCode::ShareInvalid,
    }
}

/// `agentos leave`: end every `agentos join` of this home.
pub fn leave(ctx: &Ctx) -> Res {
    let mut n = 0;
    if let Ok(rd) = std::fs::read_dir(joined_dir(ctx)) {
        for e in rd.flatten() {
            let pid: Option<i32> = e
                .file_name()
                .to_string_lossy()
                .strip_suffix(".json")
                .and_then(|p| p.parse().ok());
            let Some(pid) = pid else { continue };
            let alive = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGTERM,
            )
            .is_ok();
            if alive {
                n += 1;
            } else {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
    if n == 0 {
        ctx.say("not in any shared session");
    } else {
        ctx.say(format!("left {n} session{}", if n == 1 { "" } else { "s" }));
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_parse() {
        let l = parse_link("agentos://127.0.0.1:7890/s/s-abc#SECRET").unwrap();
        assert_eq!(
            l,
            Link {
                tls: false,
                hostport: "127.0.0.1:7890".into(),
                fingerprint: None,
                secret: "SECRET".into()
            }
        );
        let l = parse_link("agentoss://box:7890/s/s-abc?fp=ab12#k").unwrap();
        assert!(l.tls);
        assert_eq!(l.fingerprint.as_deref(), Some("ab12"));
        assert!(parse_link("https://h:1/s/x#k").unwrap().tls);
        assert!(parse_link("ftp://h/s/x#k").is_none());
        assert!(parse_link("agentos://h:1/s/x").is_none());
    }
}
