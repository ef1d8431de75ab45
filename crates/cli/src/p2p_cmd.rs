//! `agentos pair`, `devices`, `sync` and `handoff`: the CLI side of the
//! P2P layer. The daemon does the work; these commands print what the user
//! must compare (the SAS) and ask for the confirmation.

use crate::{Ctx, Failure, Res, local};
use agentos_proto::{DeviceView, ErrorCode, Request, Response};
use clap::{Args, Subcommand};
use std::io::{BufRead, IsTerminal, Write};

#[derive(Args, Debug)]
pub struct PairArgs {
    /// The other device's invite (its code or `agentos-pair:` payload).
    /// Without it, make an invite here.
    pub invite: Option<String>,
    /// Accept the SAS without asking (it is still printed).
    #[arg(long, short = 'y')]
    pub yes: bool,
    /// How long the invite stays valid (at most 10m).
    #[arg(long, default_value = "10m")]
    pub expires: String,
}

#[derive(Args, Debug)]
pub struct DevicesArgs {
    #[command(subcommand)]
    pub cmd: Option<DevicesCmd>,
}

#[derive(Subcommand, Debug)]
pub enum DevicesCmd {
    /// Remove a paired device and rotate the keys: it cannot read anything
    /// written afterwards.
    Remove { id: String },
}

#[derive(Subcommand, Debug)]
pub enum SyncCmd {
    /// Peers (LAN or relay), last sync, pending changes, the mode.
    Status,
    /// Sync this workspace (the default for every workspace).
    Enable {
        #[arg(long)]
        workspace: Option<std::path::PathBuf>,
    },
    /// Stop syncing this workspace: nothing of it is sent any more.
    Disable {
        #[arg(long)]
        workspace: Option<std::path::PathBuf>,
    },
    /// Use this relay (`/ip4/…/tcp/8765[/p2p/…]` or `host:port`).
    Connect { addr: String },
}

fn unexpected() -> Failure {
    local(ErrorCode::Internal, "unexpected reply from the daemon")
}

/// `10m`, `90s`, `1h` (capped by the daemon at 10 minutes).
pub fn parse_duration_ms(s: &str) -> Result<u64, Failure> {
    let s = s.trim();
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num
        .parse()
        .map_err(|_| local(ErrorCode::InvalidArgument, format!("bad duration '{s}'")))?;
    let mult = match unit {
        "" | "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        "ms" => 1,
        _ => {
            return Err(local(
                ErrorCode::InvalidArgument,
                format!("bad duration '{s}': use s, m or h"),
            ));
        }
    };
    Ok(n * mult)
}

fn confirm(ctx: &Ctx, sas: &str, yes: bool) -> Result<bool, Failure> {
    if yes {
        ctx.say("confirmed (--yes)");
        return Ok(true);
    }
    if !std::io::stdin().is_terminal() {
        return Err(local(
            ErrorCode::InvalidArgument,
            "no terminal to confirm the code on: compare it and pass --yes",
        ));
    }
    print!("Does the other screen show {sas}? [y/N] ");
    let _ = std::io::stdout().flush();
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .map_err(|e| local(ErrorCode::Internal, e))?;
    Ok(matches!(line.trim(), "y" | "Y" | "yes"))
}

fn short(id: &str) -> String {
    id.chars().take(7).collect()
}

pub fn pair(ctx: &Ctx, a: PairArgs) -> Res {
    let mut c = ctx.client()?;
    let (sas, device, name) = match &a.invite {
        None => {
            let ttl_ms = parse_duration_ms(&a.expires)?;
            let Response::PairInvite {
                code,
                payload,
                expires_at_ms,
                relay,
            } = c.request(Request::PairInvite { ttl_ms })?
            else {
                return Err(unexpected());
            };
            let secs = expires_at_ms.saturating_sub(agentos_actors::holder::now_ms()) / 1000;
            if ctx.json {
                ctx.json_out(&serde_json::json!({
                    "code": code, "payload": payload, "expires_at_ms": expires_at_ms, "relay": relay,
                }));
            } else {
                println!("code: {code}");
                println!("invite: {payload}");
                println!(
                    "On the other device run `agentos pair {code}` (same LAN) or `agentos pair <invite>`; valid for {}m{}s.",
                    secs / 60,
                    secs % 60
                );
                if let Some(r) = relay {
                    println!("relay: {r}");
                }
            }
            let _ = std::io::stdout().flush();
            let Response::PairSas { sas, device, name } = c.request(Request::PairWait {
                timeout_ms: secs * 1000 + 1000,
            })?
            else {
                return Err(unexpected());
            };
            (sas, device, name)
        }
        Some(invite) => {
            // A short code needs the inviter found on the LAN first: give
            // discovery a little time.
            let start = std::time::Instant::now();
            let r = loop {
                match c.request(Request::PairJoin {
                    invite: invite.clone(),
                    timeout_ms: 30_000,
                }) {
                    Err(e)
                        if e.code == ErrorCode::PeerUnreachable
                            && !invite.starts_with("agentos-pair:")
                            && start.elapsed() < std::time::Duration::from_secs(30) =>
                    {
                        std::thread::sleep(std::time::Duration::from_millis(500));
                    }
                    other => break other?,
                }
            };
            let Response::PairSas { sas, device, name } = r else {
                return Err(unexpected());
            };
            (sas, device, name)
        }
    };
    if !ctx.json {
        println!("SAS: {sas}   (device {} \"{name}\")", short(&device));
        println!("Check that both screens show the same code.");
        let _ = std::io::stdout().flush();
    }
    let accept = confirm(ctx, &sas, a.yes)?;
    let r = c.request(Request::PairConfirm {
        accept,
        timeout_ms: 300_000,
    })?;
    let Response::Paired { device, name } = r else {
        return Err(unexpected());
    };
    if ctx.json {
        ctx.json_out(&serde_json::json!({ "paired": device, "name": name, "sas": sas }));
    } else {
        println!("paired with \"{name}\" ({})", short(&device));
    }
    Ok(0)
}

fn ago(ms: Option<u64>) -> String {
    match ms {
        None => "never".into(),
        Some(t) => {
            let d = agentos_actors::holder::now_ms().saturating_sub(t) / 1000;
            match d {
                0..=1 => "now".into(),
                2..=119 => format!("{d}s ago"),
                120..=7199 => format!("{}m ago", d / 60),
                _ => format!("{}h ago", d / 3600),
            }
        }
    }
}

fn print_devices(devices: &[DeviceView]) {
    println!(
        "{:<9} {:<20} {:<10} {:<10} ID",
        "SHORT", "NAME", "LINK", "SEEN"
    );
    for d in devices {
        let link = if d.this_device {
            "this".to_string()
        } else {
            d.connection.clone().unwrap_or_else(|| "offline".into())
        };
        let seen = if d.this_device {
            "-".into()
        } else {
            ago(d.last_seen_ms)
        };
        println!(
            "{:<9} {:<20} {:<10} {:<10} {}",
            d.short, d.name, link, seen, d.id
        );
    }
}

pub fn devices(ctx: &Ctx, a: DevicesArgs) -> Res {
    let mut c = ctx.client()?;
    let req = match a.cmd {
        None => Request::Devices,
        Some(DevicesCmd::Remove { id }) => Request::DeviceRemove { device: id },
    };
    let removing = matches!(req, Request::DeviceRemove { .. });
    let Response::Devices { devices } = c.request(req)? else {
        return Err(unexpected());
    };
    if ctx.json {
        ctx.json_out(&devices);
    } else {
        if removing {
            println!("removed; the workspace keys were rotated");
        }
        print_devices(&devices);
    }
    Ok(0)
}

fn workspace_arg(p: Option<std::path::PathBuf>) -> Result<String, Failure> {
    let p = match p {
        Some(p) => p,
        None => std::env::current_dir().map_err(|e| local(ErrorCode::Internal, e))?,
    };
    Ok(p.canonicalize().unwrap_or(p).display().to_string())
}

pub fn sync(ctx: &Ctx, cmd: SyncCmd) -> Res {
    let mut c = ctx.client()?;
    match cmd {
        SyncCmd::Status => {
            let Response::SyncStatus { status } = c.request(Request::SyncStatus)? else {
                return Err(unexpected());
            };
            if ctx.json {
                ctx.json_out(&status);
                return Ok(0);
            }
            println!("device:  {} ({})", status.device, short(&status.device));
            println!("mode:    {}   key epoch {}", status.mode, status.epoch);
            for l in &status.listen {
                println!("listen:  {l}");
            }
            match &status.relay {
                Some(r) => println!(
                    "relay:   {r} ({})",
                    if status.relay_connected {
                        "connected"
                    } else {
                        "not connected"
                    }
                ),
                None => println!("relay:   none (`agentos sync connect <addr>`)"),
            }
            println!(
                "received: {} accepted, {} rejected",
                status.accepted, status.rejected
            );
            if !status.lan.is_empty() {
                let seen: Vec<String> = status.lan.iter().map(|d| short(d)).collect();
                println!("on the LAN: {}", seen.join(" "));
            }
            println!();
            if status.peers.is_empty() {
                println!("no paired devices: pair one with `agentos pair`");
            } else {
                println!(
                    "{:<9} {:<20} {:<10} {:<10} LAST SYNC",
                    "PEER", "NAME", "LINK", "SEEN"
                );
                for p in &status.peers {
                    println!(
                        "{:<9} {:<20} {:<10} {:<10} {}",
                        p.short,
                        p.name,
                        p.connection.clone().unwrap_or_else(|| "offline".into()),
                        ago(p.last_seen_ms),
                        ago(p.last_sync_ms)
                    );
                }
            }
            println!();
            println!(
                "{:<8} {:<8} {:<10} WORKSPACE",
                "SYNC", "PENDING", "LAST SYNC"
            );
            for w in &status.workspaces {
                println!(
                    "{:<8} {:<8} {:<10} {}",
                    if w.enabled { "on" } else { "off" },
                    w.pending,
                    ago(w.last_sync_ms),
                    if w.path.is_empty() { &w.id } else { &w.path }
                );
            }
            Ok(0)
        }
        SyncCmd::Enable { workspace } => {
            let w = workspace_arg(workspace)?;
            c.request(Request::SyncSet {
                workspace: w.clone(),
                enabled: true,
            })?;
            ctx.say(format!("sync on for {w}"));
            let ws = agentos_node::workspace::resolve(std::path::Path::new(&w));
            if ws.id.starts_with("ws-") {
                // A path-derived id differs on every device.
                ctx.say(format!(
                    "note: this workspace's id ({}) comes from its path, so a clone on another device is a different workspace; to share it, add\n  [workspace]\n  id = \"my-project\"\nto {} and commit it",
                    ws.id,
                    ws.root.join(".agentos/config.toml").display()
                ));
            }
            Ok(0)
        }
        SyncCmd::Disable { workspace } => {
            let w = workspace_arg(workspace)?;
            c.request(Request::SyncSet {
                workspace: w.clone(),
                enabled: false,
            })?;
            ctx.say(format!(
                "sync off for {w}: nothing of it leaves this device"
            ));
            Ok(0)
        }
        SyncCmd::Connect { addr } => {
            c.request(Request::SyncConnect { addr: addr.clone() })?;
            ctx.say(format!("using {addr}; see `agentos sync status`"));
            Ok(0)
        }
    }
}

pub fn handoff(ctx: &Ctx, name: String, to: String) -> Res {
    let mut c = ctx.client()?;
    match c.request(Request::Handoff {
        name: name.clone(),
        to,
    })? {
        Response::Text { text } => ctx.say(text),
        _ => ctx.say(format!("handed {name} off")),
    }
    Ok(0)
}
