//! `agentos relay` (and its alias `agentos server start --port N`): run the
//! home relay node of `agentos_p2p::relay` in the foreground, with its own
//! tokio runtime (the rest of the CLI has none), until SIGINT or SIGTERM.
//!
//! On stdout it prints one line `relay listening on <multiaddr>/p2p/<id>`
//! per address once listening (with `--json`, one JSON object per line
//! instead); logs go to stderr (`AGENTOS_LOG_LEVEL`, default `info`).

use agentos_node::paths::Home;
use agentos_p2p::relay::{self, RelayOptions};
use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use libp2p::Multiaddr;
use libp2p::multiaddr::Protocol;
use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct RelayArgs {
    /// Where to listen: a multiaddr (`/ip4/0.0.0.0/tcp/8765`) or
    /// `host:port` (`0.0.0.0:8765`, `[::]:8765`). Given twice, the last wins.
    #[arg(
        long,
        default_value = "/ip4/0.0.0.0/tcp/8765",
        overrides_with = "listen"
    )]
    pub listen: String,
    /// The relay's data directory (default: $AGENTOS_HOME/relay). Its
    /// identity is the device key in $AGENTOS_HOME/keys.
    #[arg(long, overrides_with = "data")]
    pub data: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
pub enum ServerCmd {
    /// Run the relay: the same as `agentos relay --listen /ip4/0.0.0.0/tcp/<port>`.
    Start {
        #[arg(long, default_value_t = relay::DEFAULT_PORT)]
        port: u16,
        /// The relay's data directory (default: $AGENTOS_HOME/relay).
        #[arg(long)]
        data: Option<PathBuf>,
    },
}

/// `agentos relay`: the exit status.
pub fn relay(home: &Home, args: RelayArgs, json: bool) -> i32 {
    report(run(home, &args.listen, args.data, json), json)
}

/// `agentos server start`: the exit status.
pub fn server(home: &Home, cmd: ServerCmd, json: bool) -> i32 {
    match cmd {
        ServerCmd::Start { port, data } => report(
            run(home, &format!("/ip4/0.0.0.0/tcp/{port}"), data, json),
            json,
        ),
    }
}

fn report(r: Result<()>, json: bool) -> i32 {
    match r {
        Ok(()) => 0,
        Err(e) => {
            if json {
                println!(
                    "{}",
                    serde_json::json!({ "error": { "message": format!("{e:#}") } })
                );
            } else {
                eprintln!("error: {e:#}");
            }
            1
        }
    }
}

/// A listen address from a multiaddr or `host:port` (IP literals only: the
/// relay binds, it does not resolve names).
pub fn parse_listen(s: &str) -> Result<Multiaddr> {
    let s = s.trim();
    let addr: Multiaddr = if s.starts_with('/') {
        s.parse()
            .with_context(|| format!("{s:?} is not a valid multiaddr"))?
    } else {
        let sa: SocketAddr = s.parse().with_context(|| {
            format!(
                "{s:?} is neither a multiaddr nor host:port with an IP address (e.g. 0.0.0.0:8765)"
            )
        })?;
        let ip = match sa.ip() {
            IpAddr::V4(v4) => Protocol::Ip4(v4),
            IpAddr::V6(v6) => Protocol::Ip6(v6),
        };
        Multiaddr::empty().with(ip).with(Protocol::Tcp(sa.port()))
    };
    let mut it = addr.iter();
    match (it.next(), it.next(), it.next()) {
        (Some(Protocol::Ip4(_) | Protocol::Ip6(_)), Some(Protocol::Tcp(_)), None) => Ok(addr),
        _ => bail!(
            "the relay listens on TCP: expected /ip4/<ip>/tcp/<port> or /ip6/<ip>/tcp/<port>, got {addr}"
        ),
    }
}

fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let level = std::env::var("AGENTOS_LOG_LEVEL").unwrap_or_else(|_| "info".into());
    // libp2p's own chatter stays at warn unless asked for.
    let filter = EnvFilter::try_new(format!("warn,agentos_p2p={level},agentos={level}"))
        .unwrap_or_else(|_| EnvFilter::new("warn,agentos_p2p=info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .try_init();
}

fn run(home: &Home, listen: &str, data: Option<PathBuf>, json: bool) -> Result<()> {
    let addr = parse_listen(listen)?;
    let data = data.unwrap_or_else(|| home.root.join("relay"));
    let keys = home.keys_dir();
    let seed = relay::load_seed(&keys)
        .with_context(|| format!("loading the relay's identity from {}", keys.display()))?;
    init_logging();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("agentos-relay")
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
        let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
        let handle = relay::run(RelayOptions {
            seed,
            listen: vec![addr.clone()],
            data_dir: data.clone(),
        })
        .await
        .with_context(|| format!("starting the relay on {addr} with data in {}", data.display()))?;
        let mut printed = BTreeSet::new();
        let print_new = |addrs: &[Multiaddr], printed: &mut BTreeSet<Multiaddr>| {
            for a in addrs {
                if printed.insert(a.clone()) {
                    if json {
                        println!(
                            "{}",
                            serde_json::json!({
                                "event": "listening",
                                "address": a.to_string(),
                                "peer_id": handle.peer_id().to_string(),
                            })
                        );
                    } else {
                        println!("relay listening on {a}");
                    }
                }
            }
        };
        let mut addrs = handle.watch_addresses();
        print_new(&addrs.borrow_and_update(), &mut printed);
        let signal = loop {
            tokio::select! {
                _ = term.recv() => break "SIGTERM",
                _ = int.recv() => break "SIGINT",
                changed = addrs.changed() => {
                    if changed.is_err() {
                        break "the relay task ended";
                    }
                    let now = addrs.borrow_and_update().clone();
                    print_new(&now, &mut printed);
                }
            }
        };
        tracing::info!(signal, "relay shutting down");
        let stats = handle.stats();
        handle.stop().await.context("stopping the relay")?;
        if json {
            println!(
                "{}",
                serde_json::json!({ "event": "stopped", "stats": stats })
            );
        } else {
            eprintln!(
                "relay stopped ({signal}): {} envelopes stored, {} requests refused ({} from non-members)",
                stats.stored, stats.rejected, stats.denied
            );
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::parse_listen;

    #[test]
    fn listen_addresses() {
        assert_eq!(
            parse_listen("0.0.0.0:8765").unwrap().to_string(),
            "/ip4/0.0.0.0/tcp/8765"
        );
        assert_eq!(
            parse_listen("[::1]:9").unwrap().to_string(),
            "/ip6/::1/tcp/9"
        );
        assert_eq!(
            parse_listen("/ip4/127.0.0.1/tcp/0").unwrap().to_string(),
            "/ip4/127.0.0.1/tcp/0"
        );
        assert!(parse_listen("example.com:80").is_err());
        assert!(parse_listen("/ip4/1.2.3.4/udp/5").is_err());
        assert!(parse_listen("/ip4/1.2.3.4").is_err());
    }
}
