//! The node's side of each agent's sandbox: planning it at launch, the
//! agent's restricted channel (`agent.sock`), the launcher handshake that
//! opens the proxy inside the agent's network namespace and starts the
//! run's audit rules, the watch on cgroup limits, and the cleanup when a
//! run ends or the agent is destroyed.

use super::{AgentEntry, NodeActor, err};
use crate::audit_log::{self, NodeEvent, Proxied, RegisterRun};
use crate::definitions::AgentDefinition;
use crate::sandboxing::{self, Inputs, Plan};
use agentos_actors::agent as agent_msgs;
use agentos_crdt::AgentRecord;
use agentos_proto::{ErrorCode, ErrorInfo, Outcome, PolicyView, Response};
use agentos_sandbox::NetworkMode;
use agentos_sandbox::cgroup::Breaches;
use std::path::{Path, PathBuf};
use tracing::{info, warn};

/// What runs on the node's side of one sandboxed agent.
#[derive(Debug, Default)]
pub(super) struct SandboxRuntime {
    server: Option<tokio::task::JoinHandle<()>>,
    proxy: Option<tokio::task::JoinHandle<()>>,
    /// The fanotify guard of the worktree's blocked names.
    names: Option<agentos_sandbox::fanotify::Guard>,
    session: Option<u32>,
    baseline: Breaches,
    /// A limit breach was handled for this run.
    tripped: bool,
    /// How far `audit.jsonl` (rootless audit, written by the holder) is read.
    audit_offset: u64,
}

impl SandboxRuntime {
    pub(super) fn replace_proxy(&mut self, proxy: Option<tokio::task::JoinHandle<()>>) {
        if let Some(old) = self.proxy.take() {
            old.abort();
        }
        self.proxy = proxy;
    }

    pub(super) fn set_server(&mut self, server: tokio::task::JoinHandle<()>) {
        if let Some(old) = self.server.replace(server) {
            old.abort();
        }
    }
}

impl Drop for SandboxRuntime {
    fn drop(&mut self) {
        if let Some(h) = self.server.take() {
            h.abort();
        }
        if let Some(h) = self.proxy.take() {
            h.abort();
        }
    }
}

fn allow_paths_file(dir: &Path) -> PathBuf {
    dir.join("allow-paths.json")
}

/// Remember `--allow-path` entries for later runs of the agent.
pub(super) fn save_allow_paths(dir: &Path, entries: &[String]) -> Result<(), ErrorInfo> {
    agentos_actors::holder::write_atomic(
        &allow_paths_file(dir),
        &serde_json::to_vec(entries).unwrap_or_default(),
        0o600,
    )
    .map_err(|e| err(ErrorCode::SpawnFailed, e.to_string()))
}

fn load_allow_paths(dir: &Path) -> Vec<String> {
    std::fs::read(allow_paths_file(dir))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

fn user_home() -> PathBuf {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/root"))
}

impl NodeActor {
    /// For an agent in a worktree: plan its sandbox, serve its channel,
    /// and wrap its command in the launcher. Fails closed.
    pub(super) fn sandbox_launch(
        &mut self,
        record: &AgentRecord,
        def: Option<&AgentDefinition>,
        argv: &mut Vec<String>,
        env: &mut Vec<(String, String)>,
    ) -> Result<(), ErrorInfo> {
        let Some(w) = &record.worktree else {
            self.sandboxes.remove(&record.id.0);
            return Ok(());
        };
        let dir = self.home.agent_dir(&record.id.0);
        let cfg = crate::config::load(&self.home.config_file(), Some(Path::new(&w.path)))
            .map_err(|e| err(ErrorCode::ConfigInvalid, e.to_string()))?;
        let allow = load_allow_paths(&dir);
        let path_var = env
            .iter()
            .rev()
            .find(|(k, _)| k == "PATH")
            .map(|(_, v)| v.clone());
        let home_paths = def.map(|d| d.home_paths.clone()).unwrap_or_default();
        let user_home = user_home();
        let plan = sandboxing::plan(&Inputs {
            agent_id: &record.id.0,
            user_home: &user_home,
            node_home: &self.home.root,
            agent_dir: &dir,
            exe: &self.exe,
            worktree: Path::new(&w.path),
            cwd: Path::new(&record.cwd),
            path_var: path_var.as_deref(),
            home_paths: &home_paths,
            allow_paths: &allow,
            security: &cfg.security,
        })?;
        plan.save(&dir)?;
        // Make sure nothing from an earlier run is still in the group.
        if let Some(cg) = &plan.cgroup {
            cg.kill_all();
            cg.reset_limits();
        }
        let mut rt = SandboxRuntime::default();
        rt.baseline = plan
            .cgroup
            .as_ref()
            .map(|c| c.breaches())
            .unwrap_or_default();
        rt.server = Some(self.serve_agent_channel(&record.id.0, &plan.spec.node_socket)?);
        self.sandboxes.insert(record.id.0.clone(), rt);
        env.retain(|(k, _)| !plan.scrub.contains(k));
        env.extend(plan.env.iter().cloned());
        let mut wrapped = vec![
            self.exe.display().to_string(),
            "sandbox-exec".to_string(),
            "--spec".to_string(),
            Plan::spec_path(&dir).display().to_string(),
            "--".to_string(),
        ];
        wrapped.append(argv);
        *argv = wrapped;
        Ok(())
    }

    /// Listen on the agent's own `agent.sock`.
    pub(super) fn serve_agent_channel_at(
        &self,
        agent_id: &str,
        socket: &Path,
    ) -> Result<tokio::task::JoinHandle<()>, ErrorInfo> {
        self.serve_agent_channel(agent_id, socket)
    }

    fn serve_agent_channel(
        &self,
        agent_id: &str,
        socket: &Path,
    ) -> Result<tokio::task::JoinHandle<()>, ErrorInfo> {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::remove_file(socket);
        let l = std::os::unix::net::UnixListener::bind(socket).map_err(|e| {
            err(
                ErrorCode::SpawnFailed,
                format!("cannot listen on {}: {e}", socket.display()),
            )
        })?;
        let _ = std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o600));
        l.set_nonblocking(true)
            .map_err(|e| err(ErrorCode::SpawnFailed, e.to_string()))?;
        let l = tokio::net::UnixListener::from_std(l)
            .map_err(|e| err(ErrorCode::SpawnFailed, e.to_string()))?;
        let node = self
            .me
            .clone()
            .ok_or_else(|| err(ErrorCode::Internal, "node not started"))?;
        Ok(actix::spawn(crate::ipc::serve(
            l,
            node,
            crate::ipc::Scope::Agent {
                agent_id: agent_id.to_string(),
            },
        )))
    }

    /// The launcher's handshake: namespaces exist; open the proxy inside
    /// and start auditing the run.
    pub(super) fn sandbox_ready(
        &mut self,
        agent_id: &str,
        pid: u32,
        audit_session: Option<u32>,
        proxy_fd: Option<i32>,
    ) -> Response {
        let Some(entry) = self.agents.get(agent_id) else {
            return Response::Error {
                error: err(
                    ErrorCode::AgentNotFound,
                    format!("no agent with id {agent_id}"),
                ),
            };
        };
        let name = entry.record.name.clone();
        let dir = self.home.agent_dir(agent_id);
        let Some(plan) = Plan::load(&dir) else {
            return Response::Error {
                error: err(
                    ErrorCode::IsolationUnavailable,
                    "the sandbox plan is missing",
                ),
            };
        };
        if let Err(e) = self.start_run(agent_id, &name, &plan, pid, audit_session, proxy_fd) {
            return Response::Error { error: e };
        }
        let _ = std::fs::write(
            dir.join("audit-session"),
            format!(
                "{} {} {}",
                pid,
                audit_session
                    .map(|s| s.to_string())
                    .unwrap_or_else(|| "-".into()),
                proxy_fd
                    .map(|s| s.to_string())
                    .unwrap_or_else(|| "-".into())
            ),
        );
        info!(agent = %name, pid, session = ?audit_session, "sandbox ready");
        Response::Ok
    }

    fn start_run(
        &mut self,
        agent_id: &str,
        name: &str,
        plan: &Plan,
        pid: u32,
        audit_session: Option<u32>,
        proxy_fd: Option<i32>,
    ) -> Result<(), ErrorInfo> {
        let proxy = match plan.spec.network {
            NetworkMode::Proxy { port } => {
                let listener = match proxy_fd {
                    // Rootless: the launcher opened it; take it from the process.
                    Some(fd) => {
                        agentos_sandbox::notify::take_fd(pid, fd).map(std::net::TcpListener::from)
                    }
                    None => crate::proxy::listen_in_netns(pid, port),
                }
                .map_err(|e| {
                    err(
                        ErrorCode::IsolationUnavailable,
                        format!("cannot open the agent's proxy in its network namespace: {e}"),
                    )
                })?;
                let _ = listener.set_nonblocking(true);
                Some(
                    crate::proxy::spawn_proxy(
                        listener,
                        agent_id.to_string(),
                        plan.hosts.clone(),
                        self.proxy_events.clone(),
                    )
                    .map_err(|e| err(ErrorCode::IsolationUnavailable, e.to_string()))?,
                )
            }
            _ => None,
        };
        self.audit.do_send(RegisterRun {
            agent_id: agent_id.to_string(),
            name: name.to_string(),
            audit_session,
            launcher_pid: pid,
        });
        if let (Some(s), audit_log::KernelAudit::Netlink) = (audit_session, &self.kernel_audit)
            && let Err(e) = audit_log::add_rules(s, &plan.worktree)
        {
            warn!(agent = %name, error = %e, "audit rules for exec and writes not installed");
        }
        let names = self.guard_names(agent_id, name, plan, pid)?;
        let rt = self.sandboxes.entry(agent_id.to_string()).or_default();
        if let Some(old) = rt.proxy.take() {
            old.abort();
        }
        rt.proxy = proxy;
        rt.names = names;
        rt.session = audit_session;
        rt.tripped = false;
        Ok(())
    }

    /// As root: deny blocked names in the worktree through the agent's own
    /// mount of it (fails closed: without the guard the agent does not run).
    fn guard_names(
        &self,
        agent_id: &str,
        name: &str,
        plan: &Plan,
        pid: u32,
    ) -> Result<Option<agentos_sandbox::fanotify::Guard>, ErrorInfo> {
        // SAFETY: geteuid never fails.
        if plan.spec.blocked_globs.is_empty() || unsafe { libc::geteuid() } != 0 {
            return Ok(None);
        }
        let mount = PathBuf::from(format!("/proc/{pid}/root"))
            .join(plan.worktree.strip_prefix("/").unwrap_or(&plan.worktree));
        let audit = self.audit.clone();
        let (id, n) = (agent_id.to_string(), name.to_string());
        agentos_sandbox::fanotify::guard(
            &mount,
            &plan.worktree,
            plan.spec.blocked_globs.clone(),
            move |d| {
                audit.do_send(NodeEvent {
                    agent_id: id.clone(),
                    name: n.clone(),
                    pid: u32::try_from(d.pid).ok(),
                    kind: "file_read",
                    target: d.path,
                    outcome: Outcome::Blocked,
                    source: "fanotify",
                    detail: "blocked name in the worktree".into(),
                });
            },
        )
        .map(Some)
        .map_err(|e| {
            err(
                ErrorCode::IsolationUnavailable,
                format!("cannot guard the worktree's blocked names with fanotify: {e}"),
            )
        })
    }

    /// After a daemon restart: serve the channels of live sandboxed agents
    /// again and reopen their proxies.
    pub(super) fn sandbox_recover(&mut self) {
        let ids: Vec<(String, String)> = self
            .agents
            .values()
            .filter(|e| e.record.worktree.is_some() && e.record.removed_at_ms.is_none())
            .map(|e| (e.record.id.0.clone(), e.record.name.clone()))
            .collect();
        for (id, name) in ids {
            let dir = self.home.agent_dir(&id);
            let Some(plan) = Plan::load(&dir) else {
                continue;
            };
            let mut rt = SandboxRuntime::default();
            rt.baseline = plan
                .cgroup
                .as_ref()
                .map(|c| c.breaches())
                .unwrap_or_default();
            match self.serve_agent_channel(&id, &plan.spec.node_socket) {
                Ok(h) => rt.server = Some(h),
                Err(e) => warn!(agent = %name, error = %e.message, "agent channel not restored"),
            }
            self.sandboxes.insert(id.clone(), rt);
            let run = std::fs::read_to_string(dir.join("audit-session")).unwrap_or_default();
            let mut parts = run.split_whitespace();
            let pid: Option<u32> = parts.next().and_then(|p| p.parse().ok());
            let session: Option<u32> = parts.next().and_then(|s| s.parse().ok());
            let proxy_fd: Option<i32> = parts.next().and_then(|s| s.parse().ok());
            let alive = pid.is_some_and(|p| Path::new(&format!("/proc/{p}")).exists());
            if let (Some(pid), true) = (pid, alive)
                && let Err(e) = self.start_run(&id, &name, &plan, pid, session, proxy_fd)
            {
                warn!(agent = %name, error = %e.message, "sandbox run not restored");
            }
        }
    }

    /// Rootless audit: the calls the holder's seccomp supervisor recorded,
    /// judged against the agent's policy.
    fn ingest_notified(&mut self) {
        let ids: Vec<String> = self.sandboxes.keys().cloned().collect();
        for id in ids {
            let dir = self.home.agent_dir(&id);
            let path = dir.join("audit.jsonl");
            let Ok(meta) = std::fs::metadata(&path) else {
                continue;
            };
            let Some(rt) = self.sandboxes.get_mut(&id) else {
                continue;
            };
            let offset_file = dir.join("audit.offset");
            if rt.audit_offset == 0 {
                // Where an earlier daemon stopped reading.
                rt.audit_offset = std::fs::read_to_string(&offset_file)
                    .ok()
                    .and_then(|s| s.trim().parse().ok())
                    .unwrap_or(0);
            }
            if meta.len() <= rt.audit_offset {
                continue;
            }
            let Ok(mut f) = std::fs::File::open(&path) else {
                continue;
            };
            use std::io::{Read, Seek, SeekFrom};
            if f.seek(SeekFrom::Start(rt.audit_offset)).is_err() {
                continue;
            }
            let mut text = String::new();
            let _ = f.take(4 << 20).read_to_string(&mut text);
            // Only whole lines.
            let upto = text.rfind('\n').map(|i| i + 1).unwrap_or(0);
            rt.audit_offset += upto as u64;
            let _ = std::fs::write(&offset_file, rt.audit_offset.to_string());
            let Some(plan) = Plan::load(&dir) else {
                continue;
            };
            let name = self
                .agents
                .get(&id)
                .map(|e| e.record.name.clone())
                .unwrap_or_default();
            for line in text[..upto].lines() {
                let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
                    continue;
                };
                if let Some(ev) = judge(&plan, &v) {
                    self.audit.do_send(NodeEvent {
                        agent_id: id.clone(),
                        name: name.clone(),
                        pid: v["pid"].as_u64().map(|p| p as u32),
                        kind: ev.0,
                        target: ev.1,
                        outcome: ev.2,
                        source: "seccomp-notify",
                        detail: v["exe"].as_str().unwrap_or("").to_string(),
                    });
                }
            }
        }
    }

    /// Every half second: limit breaches become audit events, stop the
    /// agent, and put it in `error` with the reason.
    pub(super) fn sandbox_watch(&mut self) {
        self.ingest_notified();
        let mut hits = Vec::new();
        for (id, rt) in &mut self.sandboxes {
            if rt.tripped {
                continue;
            }
            let Some(plan) = Plan::load(&self.home.agent_dir(id)) else {
                continue;
            };
            let Some(cg) = &plan.cgroup else { continue };
            let now = cg.breaches();
            let reason = if now.oom_kills > rt.baseline.oom_kills {
                Some(format!(
                    "out of memory: killed at its max_memory limit ({} MiB)",
                    cg.limits.max_memory.unwrap_or(0) >> 20
                ))
            } else if now.pids_max > rt.baseline.pids_max {
                Some(format!(
                    "hit its process limit (max_processes = {}); stopped",
                    cg.limits.max_processes.unwrap_or(0)
                ))
            } else {
                None
            };
            if let Some(reason) = reason {
                rt.tripped = true;
                rt.baseline = now;
                hits.push((id.clone(), reason, cg.clone()));
            }
        }
        for (id, reason, cg) in hits {
            let Some(AgentEntry { record, addr, .. }) = self.agents.get(&id) else {
                continue;
            };
            warn!(agent = %record.name, %reason, "limit reached");
            limit_hit(&self.audit, addr, &id, &record.name, "cgroup", reason);
            // Clean up everything the agent started.
            std::thread::spawn(move || {
                cg.kill_all();
                cg.reset_limits();
            });
        }
    }

    /// A run ended: kill what it left behind, close its proxy, drop its rules.
    pub(super) fn sandbox_run_ended(&mut self, agent_id: &str) {
        // A container stopped by a limit says so next to its plan.
        let limit = crate::container::limit_file(
            &self.home.agent_dir(agent_id).join("container-plan.json"),
        );
        if let Ok(text) = std::fs::read_to_string(&limit) {
            let _ = std::fs::remove_file(&limit);
            let reason = serde_json::from_str::<serde_json::Value>(&text)
                .ok()
                .and_then(|v| v["reason"].as_str().map(str::to_owned))
                .unwrap_or_else(|| "stopped by a resource limit".into());
            if let Some(e) = self.agents.get(agent_id) {
                limit_hit(
                    &self.audit,
                    &e.addr,
                    agent_id,
                    &e.record.name,
                    "docker",
                    reason,
                );
            }
        }
        let Some(rt) = self.sandboxes.get_mut(agent_id) else {
            return;
        };
        if let Some(p) = rt.proxy.take() {
            p.abort();
        }
        rt.names = None;
        let session = rt.session.take();
        let dir = self.home.agent_dir(agent_id);
        if let Some(plan) = Plan::load(&dir) {
            if let Some(s) = session {
                audit_log::remove_rules(s, &plan.worktree);
            }
            if let Some(cg) = plan.cgroup {
                // Not on the actor's thread: a fork bomb takes a moment to kill.
                std::thread::spawn(move || cg.kill_all());
            }
        }
    }

    /// The agent is destroyed: also remove its cgroup and channel.
    pub(super) fn sandbox_destroyed(&mut self, agent_id: &str) {
        self.container_destroyed(agent_id);
        self.sandbox_run_ended(agent_id);
        self.sandboxes.remove(agent_id);
        let dir = self.home.agent_dir(agent_id);
        if let Some(plan) = Plan::load(&dir)
            && let Some(cg) = plan.cgroup
        {
            cg.kill_all();
            cg.remove();
        }
        let _ = std::fs::remove_file(dir.join("agent.sock"));
    }

    /// `agentos policy show <name>`.
    pub(super) fn policy_view(&self, name: &str) -> Result<PolicyView, ErrorInfo> {
        let e = self.find(name)?;
        let audit = self.kernel_audit.describe();
        if let Some(plan) = Plan::load(&self.home.agent_dir(&e.record.id.0)) {
            return Ok(plan.view(name, &audit));
        }
        let dir = self.home.agent_dir(&e.record.id.0);
        if let (Some(mode), Ok(plan)) = (
            super::container_ops::load_mode(&dir),
            crate::devcontainer::ContainerPlan::read(&dir.join("container-plan.json")),
        ) {
            let policy: Option<agentos_sandbox::FilePolicy> = plan
                .landlock_policy
                .as_ref()
                .and_then(|p| std::fs::read(p).ok())
                .and_then(|b| serde_json::from_slice(&b).ok());
            let show = |v: &[PathBuf]| v.iter().map(|p| p.display().to_string()).collect();
            return Ok(PolicyView {
                agent: name.to_string(),
                sandboxed: true,
                reason: format!("{:?} container: {}", mode.level, plan.describe()),
                read_only: policy
                    .as_ref()
                    .map(|p| show(&p.read_only))
                    .unwrap_or_default(),
                read_write: policy
                    .as_ref()
                    .map(|p| show(&p.read_write))
                    .unwrap_or_default(),
                blocked: vec!["everything of the host that is not mounted".into()],
                hidden: vec![],
                network: format!(
                    "network none; only the node's proxy at 127.0.0.1:{}",
                    crate::proxy::PROXY_PORT
                ),
                allowed_hosts: vec![],
                blocked_hosts: vec![],
                limits: vec![
                    (
                        "max_memory".into(),
                        format!("{} MiB", plan.limits.memory_bytes >> 20),
                    ),
                    (
                        "cpus".into(),
                        format!("{:.2}", plan.limits.nano_cpus as f64 / 1e9),
                    ),
                    ("max_processes".into(), plan.limits.pids.to_string()),
                ],
                notes: plan.warnings.clone(),
                landlock_abi: agentos_sandbox::landlock_abi(),
                seccomp: true,
                audit,
            });
        }
        let reason = if e.record.worktree.is_none() {
            "not sandboxed: it runs without a worktree (`--isolation none`, or outside a git repository)"
        } else {
            "not sandboxed yet: it has not been started since sandboxing was enabled; `agentos restart` it"
        };
        Ok(PolicyView {
            agent: name.to_string(),
            sandboxed: false,
            reason: reason.to_string(),
            read_only: vec![],
            read_write: vec![],
            blocked: vec![],
            hidden: vec![],
            network: "host network, unfiltered".into(),
            allowed_hosts: vec![],
            blocked_hosts: vec![],
            limits: vec![],
            notes: vec![],
            landlock_abi: agentos_sandbox::landlock_abi(),
            seccomp: false,
            audit,
        })
    }

    /// Forward proxy events into the audit log.
    pub(super) fn start_proxy_forwarder(
        &self,
        mut rx: tokio::sync::mpsc::Receiver<crate::proxy::ProxyEvent>,
    ) {
        let audit = self.audit.clone();
        actix::spawn(async move {
            while let Some(event) = rx.recv().await {
                audit.do_send(Proxied { event });
            }
        });
    }
}

/// A resource limit stopped an agent: audit it (memory or pids, from the
/// reason) and turn the agent to `error` with the reason.
fn limit_hit(
    audit: &actix::Addr<crate::audit_log::AuditActor>,
    agent: &actix::Addr<agent_msgs::AgentActor>,
    agent_id: &str,
    name: &str,
    source: &'static str,
    reason: String,
) {
    audit.do_send(NodeEvent {
        agent_id: agent_id.to_string(),
        name: name.to_string(),
        pid: None,
        kind: "limit",
        target: if reason.contains("process limit") {
            "pids".into()
        } else {
            "memory".into()
        },
        outcome: Outcome::Blocked,
        source,
        detail: reason.clone(),
    });
    agent.do_send(agent_msgs::Fail { message: reason });
}

/// What a call observed by seccomp notification means under `plan`
/// (Landlock decides; this predicts its answer for the record):
/// `(kind, target, outcome)`, or `None` for calls not worth a record
/// (reads of allowed files).
fn judge(plan: &Plan, v: &serde_json::Value) -> Option<(&'static str, String, Outcome)> {
    let nr = v["nr"].as_i64()?;
    let write = v["write"].as_bool().unwrap_or(false);
    let path = v["path"].as_str().map(str::to_owned);
    let spec = &plan.spec;
    let under = |p: &str, roots: &[PathBuf]| roots.iter().any(|r| Path::new(p).starts_with(r));
    let blocked_path = |p: &str| {
        under(p, &spec.files.blocked)
            || Path::new(p)
                .file_name()
                .map(|n| {
                    agentos_sandbox::fanotify::matches_any(
                        &spec.blocked_globs,
                        &n.to_string_lossy(),
                    )
                })
                .unwrap_or(false)
    };
    let in_worktree = |p: &str| Path::new(p).starts_with(&plan.worktree);
    if nr == libc::SYS_execve || nr == libc::SYS_execveat {
        let argv: Vec<String> = v["argv"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        let target = if argv.is_empty() {
            path.unwrap_or_default()
        } else {
            argv.join(" ")
        };
        return Some(("exec", target, Outcome::Allowed));
    }
    if nr == libc::SYS_connect {
        let addr: std::net::SocketAddr = v["addr"].as_str()?.parse().ok()?;
        if let NetworkMode::Proxy { port } = spec.network
            && addr.ip().is_loopback()
            && addr.port() == port
        {
            return None; // the proxy logs the request itself
        }
        let outcome = if spec.network == NetworkMode::Host {
            Outcome::Allowed
        } else {
            Outcome::Blocked
        };
        return Some(("net", addr.to_string(), outcome));
    }
    let p = path?;
    if blocked_path(&p) {
        return Some((
            if write { "file_write" } else { "file_read" },
            p,
            Outcome::Blocked,
        ));
    }
    if !in_worktree(&p) {
        return None;
    }
    let kind = if nr == libc::SYS_unlinkat {
        "file_delete"
    } else if nr == libc::SYS_fchmodat {
        "permission"
    } else if write {
        "file_write"
    } else {
        return None;
    };
    Some((kind, p, Outcome::Allowed))
}
