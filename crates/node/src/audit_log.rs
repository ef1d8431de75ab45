//! The node's audit log: one `AuditActor` receives kernel events (Landlock,
//! seccomp and the per-run syscall rules, read by a thread on the audit
//! netlink socket), proxy requests and limit breaches, attributes each to
//! an agent run, and stores them durably in the store's `audit` tree, which
//! `agentos audit` reads.

use crate::proxy::{Decision, ProxyEvent};
use crate::store::Store;
use actix::prelude::*;
use agentos_proto::{AuditRecord, Outcome};
use agentos_sandbox::audit::{self as kaudit, Assembler, Control, Event, Reader, Rule};
use std::collections::HashMap;
use tracing::{info, warn};

/// An agent run the log attributes events to.
#[derive(Debug, Clone)]
struct Run {
    agent_id: String,
    name: String,
    session: String,
}

/// Whether kernel events reach the log, and why not.
#[derive(Debug, Clone)]
pub enum KernelAudit {
    Netlink,
    Unavailable(String),
}

impl KernelAudit {
    pub fn describe(&self) -> String {
        match self {
            KernelAudit::Netlink => "kernel audit records over netlink (Landlock, seccomp, exec, writes) + proxy log + cgroup events".into(),
            KernelAudit::Unavailable(why) => format!(
                "seccomp user notification (supervised by each agent's holder: exec, opens of blocked paths, writes, connects) + proxy log + cgroup events; kernel records unavailable: {why}"
            ),
        }
    }
}

pub struct AuditActor {
    store: Store,
    sessions: HashMap<u32, Run>,
    pids: HashMap<u32, Run>,
    domains: HashMap<String, Run>,
    by_agent: HashMap<String, Run>,
    pending: Vec<AuditRecord>,
    dropped: u64,
}

impl AuditActor {
    pub fn new(store: Store) -> AuditActor {
        AuditActor {
            store,
            sessions: HashMap::new(),
            pids: HashMap::new(),
            domains: HashMap::new(),
            by_agent: HashMap::new(),
            pending: Vec::new(),
            dropped: 0,
        }
    }

    fn push(&mut self, r: AuditRecord) {
        if self.pending.len() >= 10_000 {
            self.dropped += 1;
            return;
        }
        self.pending.push(r);
    }

    fn flush(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let mut batch = std::mem::take(&mut self.pending);
        if let Err(e) = self.store.append_audit(&mut batch) {
            warn!(error = %e, records = batch.len(), "cannot store audit records");
        }
    }

    fn attribute(&self, ev: &Event) -> Option<Run> {
        if let Some(r) = ev.session.and_then(|s| self.sessions.get(&s)) {
            return Some(r.clone());
        }
        if let Some(r) = ev.domain.as_ref().and_then(|d| self.domains.get(d)) {
            return Some(r.clone());
        }
        // A process still alive: its cgroup names the agent.
        let pid = ev.pid?;
        let cg = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
        self.by_agent
            .iter()
            .find(|(id, _)| cg.contains(&format!("/agentos/{id}")))
            .map(|(_, r)| r.clone())
    }
}

impl Actor for AuditActor {
    type Context = Context<Self>;
    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(4096);
        let _span = tracing::info_span!("audit").entered();
        // Batch writes: one sled batch per 100 ms at most.
        ctx.run_interval(std::time::Duration::from_millis(100), |act, _| {
            act.flush();
            if act.dropped > 0 {
                warn!(dropped = act.dropped, "audit records dropped under load");
                act.dropped = 0;
            }
        });
    }
    fn stopped(&mut self, _: &mut Self::Context) {
        self.flush();
    }
}

/// A sandboxed agent run started.
#[derive(Message)]
#[rtype(result = "()")]
pub struct RegisterRun {
    pub agent_id: String,
    pub name: String,
    pub audit_session: Option<u32>,
    pub launcher_pid: u32,
}

impl Handler<RegisterRun> for AuditActor {
    type Result = ();
    fn handle(&mut self, m: RegisterRun, _: &mut Context<Self>) {
        let run = Run {
            agent_id: m.agent_id.clone(),
            name: m.name,
            session: m
                .audit_session
                .map(|s| s.to_string())
                .unwrap_or_else(|| format!("pid-{}", m.launcher_pid)),
        };
        if let Some(s) = m.audit_session {
            self.sessions.insert(s, run.clone());
        }
        self.pids.insert(m.launcher_pid, run.clone());
        self.by_agent.insert(m.agent_id, run);
    }
}

/// Something the node itself observed about an agent.
#[derive(Message)]
#[rtype(result = "()")]
pub struct NodeEvent {
    pub agent_id: String,
    pub name: String,
    pub pid: Option<u32>,
    pub kind: &'static str,
    pub target: String,
    pub outcome: Outcome,
    pub source: &'static str,
    pub detail: String,
}

impl Handler<NodeEvent> for AuditActor {
    type Result = ();
    fn handle(&mut self, m: NodeEvent, _: &mut Context<Self>) {
        let session = self
            .by_agent
            .get(&m.agent_id)
            .map(|r| r.session.clone())
            .unwrap_or_default();
        self.push(AuditRecord {
            seq: 0,
            ts_ms: agentos_actors::holder::now_ms(),
            agent_id: m.agent_id,
            agent: m.name,
            session,
            pid: m.pid,
            exe: String::new(),
            kind: m.kind.to_string(),
            target: m.target,
            outcome: m.outcome,
            source: m.source.to_string(),
            detail: m.detail,
        });
        // Limits and denials should be readable at once.
        self.flush();
    }
}

/// A request through an agent's proxy.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Proxied {
    pub event: ProxyEvent,
}

impl Handler<Proxied> for AuditActor {
    type Result = ();
    fn handle(&mut self, m: Proxied, _: &mut Context<Self>) {
        let e = m.event;
        let run = self.by_agent.get(&e.agent_id).cloned();
        self.push(AuditRecord {
            seq: 0,
            ts_ms: e.ts_ms,
            agent: run.as_ref().map(|r| r.name.clone()).unwrap_or_default(),
            session: run.map(|r| r.session).unwrap_or_default(),
            agent_id: e.agent_id,
            pid: None,
            exe: String::new(),
            kind: "proxy".into(),
            target: format!("{} {}:{}", e.method, e.host, e.port),
            outcome: match e.decision {
                Decision::Allowed => Outcome::Allowed,
                Decision::Blocked => Outcome::Blocked,
                Decision::Error => Outcome::Error,
            },
            source: "proxy".into(),
            detail: format!("{} {}", e.status, e.reason).trim().to_string(),
        });
    }
}

/// A normalized kernel event from the reader thread.
#[derive(Message)]
#[rtype(result = "()")]
struct Kernel {
    event: Option<Event>,
    domain: Option<kaudit::DomainAllocated>,
}

impl Handler<Kernel> for AuditActor {
    type Result = ();
    fn handle(&mut self, m: Kernel, _: &mut Context<Self>) {
        if let Some(d) = m.domain
            && let Some(run) = self.pids.get(&d.pid).cloned()
        {
            self.domains.insert(d.domain, run);
        }
        let Some(ev) = m.event else { return };
        let Some(run) = self.attribute(&ev) else {
            return; // not one of our agents
        };
        let blocked = ev.blocked;
        self.push(AuditRecord {
            seq: 0,
            ts_ms: ev.ts_ms,
            agent_id: run.agent_id,
            agent: run.name,
            session: ev.session.map(|s| s.to_string()).unwrap_or(run.session),
            pid: ev.pid,
            exe: ev.exe,
            kind: ev.kind.label().to_string(),
            target: ev.target,
            outcome: if blocked {
                Outcome::Blocked
            } else {
                Outcome::Allowed
            },
            source: ev.source.to_string(),
            detail: ev.detail,
        });
        if blocked {
            self.flush();
        }
    }
}

/// Read stored records.
#[derive(Message)]
#[rtype(result = "Vec<AuditRecord>")]
pub struct Query {
    pub agent_id: Option<String>,
    pub since_ms: Option<u64>,
    pub after: Option<u64>,
    pub limit: usize,
}

impl Handler<Query> for AuditActor {
    type Result = Vec<AuditRecord>;
    fn handle(&mut self, q: Query, _: &mut Context<Self>) -> Self::Result {
        self.flush();
        self.store
            .audit_records(q.agent_id.as_deref(), q.since_ms, q.after, q.limit)
    }
}

/// Start reading kernel audit records, when this process may.
pub fn start_kernel_reader(addr: Addr<AuditActor>) -> KernelAudit {
    let mut control = match Control::open() {
        Ok(c) => c,
        Err(e) => return KernelAudit::Unavailable(format!("no audit netlink socket: {e}")),
    };
    match control.status() {
        Ok(s) if s.enabled == 0 => {
            // Off (no auditd): turn it on, with room for bursts of denials.
            if let Err(e) = control.enable(8192) {
                return KernelAudit::Unavailable(format!(
                    "kernel audit is off and could not be enabled ({e}); run the node as root or `auditctl -e 1`"
                ));
            }
            info!("kernel audit enabled for sandbox denials");
        }
        Ok(s) if s.backlog_limit < 1024 => {
            let _ = control.enable(8192);
        }
        Ok(_) => {}
        Err(e) => {
            return KernelAudit::Unavailable(format!("cannot query kernel audit: {e}"));
        }
    }
    let mut reader = match Reader::open(200) {
        Ok(r) => r,
        Err(e) => {
            return KernelAudit::Unavailable(format!(
                "cannot join the audit log group ({e}); the node needs root or CAP_AUDIT_READ"
            ));
        }
    };
    let spawned = std::thread::Builder::new()
        .name("audit-netlink".into())
        .spawn(move || {
            let mut asm = Assembler::default();
            loop {
                let group = match reader.next_record() {
                    Ok(Some(rec)) => asm.push(rec),
                    Ok(None) => asm.flush(),
                    Err(e) => {
                        warn!(error = %e, "audit reader stopped");
                        return;
                    }
                };
                if let Some(g) = group {
                    let (event, domain) = kaudit::normalize(&g);
                    if event.is_some() || domain.is_some() {
                        // Bounded: under a flood, records are dropped, never queued without end.
                        if let Err(SendError::Closed(_)) = addr.try_send(Kernel { event, domain }) {
                            return;
                        }
                    }
                }
            }
        });
    match spawned {
        Ok(_) => KernelAudit::Netlink,
        Err(e) => KernelAudit::Unavailable(e.to_string()),
    }
}

/// Install the per-run rules: exec and writes under the worktree.
pub fn add_rules(session: u32, worktree: &std::path::Path) -> Result<(), String> {
    let mut c = Control::open().map_err(|e| e.to_string())?;
    c.add_rule(&Rule::Exec { session })
        .map_err(|e| format!("exec rule: {e}"))?;
    c.add_rule(&Rule::Writes {
        session,
        dir: worktree.display().to_string(),
    })
    .map_err(|e| format!("write rule: {e}"))
}

/// Remove them when the run ends.
pub fn remove_rules(session: u32, worktree: &std::path::Path) {
    if let Ok(mut c) = Control::open() {
        let _ = c.del_rule(&Rule::Exec { session });
        let _ = c.del_rule(&Rule::Writes {
            session,
            dir: worktree.display().to_string(),
        });
    }
}
