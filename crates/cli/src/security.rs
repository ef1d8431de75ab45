//! `agentos policy show` and `agentos audit`: what a sandboxed agent may
//! do, and what it did or was stopped from doing.

use crate::{Ctx, Res, local};
use agentos_proto::{AuditRecord, ErrorCode, Request, Response};
use clap::{Args, Subcommand};
use std::time::Duration;

#[derive(Subcommand, Debug)]
pub enum PolicyCmd {
    /// Print the sandbox policy in force for an agent.
    Show { name: String },
}

#[derive(Args, Debug)]
pub struct AuditArgs {
    /// Only this agent's records.
    #[arg(long)]
    pub agent: Option<String>,
    /// Only records newer than this: a duration (`10m`, `2h`) or a time
    /// (`2026-11-22T10:00:00Z`).
    #[arg(long)]
    pub since: Option<String>,
    /// Keep printing new records as they arrive.
    #[arg(long, short = 'f')]
    pub follow: bool,
    /// At most this many records (the newest).
    #[arg(long, default_value_t = 1000)]
    pub limit: u32,
}

pub fn policy_cmd(ctx: &Ctx, cmd: PolicyCmd) -> Res {
    let PolicyCmd::Show { name } = cmd;
    let mut c = ctx.client()?;
    let Response::Policy { policy } = c.request(Request::PolicyShow { name })? else {
        return Err(local(ErrorCode::Internal, "unexpected reply"));
    };
    if ctx.json {
        ctx.json_out(&policy);
        return Ok(0);
    }
    println!("agent      {}", policy.agent);
    if !policy.sandboxed {
        println!("sandbox    none — {}", policy.reason);
        return Ok(0);
    }
    if !policy.reason.is_empty() {
        println!("sandbox    {}", policy.reason);
    }
    println!(
        "sandbox    Landlock ABI {}, seccomp {}, namespaces (mount, ipc, net)",
        policy.landlock_abi,
        if policy.seccomp { "on" } else { "off" }
    );
    let list = |title: &str, v: &[String]| {
        println!("{title}");
        if v.is_empty() {
            println!("  (none)");
        }
        for p in v {
            println!("  {p}");
        }
    };
    list("read-write", &policy.read_write);
    list("read-only", &policy.read_only);
    list("blocked (denied and audited)", &policy.blocked);
    list("hidden (private tmpfs)", &policy.hidden);
    println!("network    {}", policy.network);
    if !policy.allowed_hosts.is_empty() {
        println!("  allowed hosts: {}", policy.allowed_hosts.join(", "));
    }
    if !policy.blocked_hosts.is_empty() {
        println!("  blocked hosts: {}", policy.blocked_hosts.join(", "));
    }
    println!("limits");
    for (k, v) in &policy.limits {
        println!("  {k:<16} {v}");
    }
    for n in &policy.notes {
        println!("note       {n}");
    }
    println!("audit      {}", policy.audit);
    Ok(0)
}

fn parse_since(s: &str) -> Result<u64, String> {
    let now = agentos_actors::holder::now_ms();
    if let Ok(d) = humantime::parse_duration(s) {
        return Ok(now.saturating_sub(d.as_millis() as u64));
    }
    humantime::parse_rfc3339_weak(s)
        .map(|t| {
            t.duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0)
        })
        .map_err(|_| {
            format!("--since {s}: use a duration (10m, 2h) or a time (2026-11-22T10:00:00Z)")
        })
}

fn print_record(ctx: &Ctx, r: &AuditRecord) {
    if ctx.json {
        println!("{}", serde_json::to_string(r).unwrap_or_default());
        return;
    }
    let t =
        humantime::format_rfc3339_millis(std::time::UNIX_EPOCH + Duration::from_millis(r.ts_ms));
    println!(
        "{t}  {:<12} {:<8} {:<11} {:<8} {} {}{}",
        r.agent,
        r.outcome.label(),
        r.kind,
        r.source,
        r.target,
        r.pid.map(|p| format!("pid={p} ")).unwrap_or_default(),
        if r.exe.is_empty() {
            r.detail.clone()
        } else {
            format!("exe={} {}", r.exe, r.detail)
        }
    );
}

pub fn audit_cmd(ctx: &Ctx, a: AuditArgs) -> Res {
    let since_ms = a
        .since
        .as_deref()
        .map(parse_since)
        .transpose()
        .map_err(|e| local(ErrorCode::InvalidArgument, e))?;
    let mut c = ctx.client()?;
    let mut after = None;
    let mut first = true;
    loop {
        let Response::AuditRecords { records } = c.request(Request::Audit {
            agent: a.agent.clone(),
            since_ms,
            after,
            limit: if first { a.limit } else { 100_000 },
        })?
        else {
            return Err(local(ErrorCode::Internal, "unexpected reply"));
        };
        first = false;
        for r in &records {
            print_record(ctx, r);
            after = Some(r.seq);
        }
        if !a.follow {
            return Ok(0);
        }
        use std::io::Write;
        let _ = std::io::stdout().flush();
        std::thread::sleep(Duration::from_millis(250));
    }
}
