//! `NodeActor`: the composition root of a running daemon. It knows every
//! agent of this node, starts PTY holders, routes requests to `AgentActor`s
//! and records what they report in the workspace documents (`DocActor`s).

use crate::config::Config;
use crate::definitions::{AgentDefinition, Catalog, DefinitionError, which};
use crate::doc_actor::{Apply, DocActor, DocOp, Flush, ListAgents, ListSessions};
use crate::paths::Home;
use crate::store::Store;
use crate::workspace;
use actix::prelude::*;
use agentos_actors::agent::{self as agent_msgs, AgentActor, AgentConfig, AgentEvent, LiveInfo};
use agentos_actors::holder::{AgentDir, HolderSpec, now_ms};
use agentos_crdt::{
    ActorId, AgentId, AgentRecord, AgentState, SavedAgent, SessionRecord, StateTransition,
};
use agentos_proto::{
    AgentInfo, CreateSpec, DaemonStatus, DetachReason, EnvVar, ErrorCode, ErrorInfo, Isolation,
    Request, Response, SessionSummary, SourceOpinion, StateExplain, WaitTarget,
};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tracing::{info, warn};

mod container_ops;
mod git_ops;
pub mod memory_ops;
mod p2p_ops;
mod sandbox_ops;
pub mod web_ops;

/// Seconds a polite stop (SIGTERM) gets before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(3);

struct AgentEntry {
    record: AgentRecord,
    ws_id: String,
    addr: Addr<AgentActor>,
}

pub struct NodeActor {
    home: Home,
    exe: PathBuf,
    store: Store,
    actor_id: ActorId,
    config: Config,
    docs: HashMap<String, Addr<DocActor>>,
    agents: HashMap<String, AgentEntry>,
    started_at_ms: u64,
    notices: Vec<String>,
    /// This device's id (Syncthing-style); recorded as each agent's host.
    device: String,
    /// Repositories that have (or had) agent worktrees, for `gc`.
    known_repo_roots: std::collections::BTreeSet<String>,
    /// Our own address (for the agents' channels).
    me: Option<Addr<NodeActor>>,
    /// The node side of each sandboxed agent.
    sandboxes: HashMap<String, sandbox_ops::SandboxRuntime>,
    audit: Addr<crate::audit_log::AuditActor>,
    kernel_audit: crate::audit_log::KernelAudit,
    proxy_events: tokio::sync::mpsc::Sender<crate::proxy::ProxyEvent>,
    proxy_events_rx: Option<tokio::sync::mpsc::Receiver<crate::proxy::ProxyEvent>>,
    /// This device's key (the engine seals with it).
    identity: agentos_p2p::DeviceIdentity,
    /// This device on the network (absent when `[sync] enabled = false`
    /// or the swarm could not start).
    swarm: Option<Addr<crate::swarm::SwarmActor>>,
    /// Opens remote-attach streams to other devices.
    streams: Option<libp2p_stream::Control>,
    /// The web server's shared state (absent when it is off or failed).
    web: Option<std::sync::Arc<crate::web::WebShared>>,
    /// The same, for the document actors (filled once it is up).
    web_slot: crate::doc_actor::WebSlot,
}

impl std::fmt::Debug for NodeActor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeActor")
            .field("agents", &self.agents.len())
            .finish()
    }
}

fn err(code: ErrorCode, msg: impl Into<String>) -> ErrorInfo {
    ErrorInfo::new(code, msg)
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('-')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
}

fn random_id() -> String {
    let mut b = [0u8; 5];
    let _ = getrandom::fill(&mut b);
    data_encoding::BASE32_NOPAD.encode(&b).to_lowercase()
}

fn env_get<'a>(env: &'a [(String, String)], key: &str) -> Option<&'a str> {
    env.iter()
        .rev()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .nth(1)
                .and_then(|p| p.parse::<u64>().ok())
        })
        .map(|pages| pages * 4096)
        .unwrap_or(0)
}

impl NodeActor {
    /// Build the node: open workspace documents, rebuild any agent that only
    /// exists in a run directory, and reconnect to every live holder.
    pub fn new(
        home: Home,
        exe: PathBuf,
        store: Store,
        config: Config,
        mut notices: Vec<String>,
        identity: agentos_p2p::DeviceIdentity,
    ) -> Self {
        let device = identity.device_id().to_string();
        // A fresh Automerge actor per daemon start: changes written just
        // before a crash may be lost locally (state transitions are not
        // flushed one by one), and reusing the actor afterwards would reuse
        // their sequence numbers, which replicas that saw them reject. The
        // install id stays in the store; see ARCHITECTURE.md.
        let _install = store.actor_id();
        let mut a = [0u8; 16];
        let _ = getrandom::fill(&mut a);
        a[0] |= 1;
        let actor_id = ActorId(a);
        let audit = crate::audit_log::AuditActor::new(store.clone()).start();
        let (proxy_events, proxy_events_rx) = tokio::sync::mpsc::channel(1024);
        NodeActor {
            home,
            exe,
            store,
            actor_id,
            config,
            docs: HashMap::new(),
            agents: HashMap::new(),
            started_at_ms: now_ms(),
            notices: std::mem::take(&mut notices),
            device,
            known_repo_roots: Default::default(),
            me: None,
            sandboxes: HashMap::new(),
            audit,
            kernel_audit: crate::audit_log::KernelAudit::Unavailable("not started".into()),
            proxy_events,
            proxy_events_rx: Some(proxy_events_rx),
            identity,
            swarm: None,
            streams: None,
            web: None,
            web_slot: Default::default(),
        }
    }

    /// Is this record an agent that runs on another device?
    fn is_remote(&self, r: &AgentRecord) -> bool {
        !r.host_device.is_empty() && r.host_device != self.device
    }

    fn catalog(&self) -> Catalog {
        Catalog::load(&self.home.custom_agents_dir())
    }

    fn doc(&mut self, ws_id: &str) -> Addr<DocActor> {
        if let Some(a) = self.docs.get(ws_id) {
            return a.clone();
        }
        self.start_doc(ws_id).0
    }

    /// Load a workspace document and start its actor; also returns the
    /// agents it held at load time (for recovery).
    fn start_doc(&mut self, ws_id: &str) -> (Addr<DocActor>, Vec<AgentRecord>) {
        let (mut actor, notice) = DocActor::load(
            ws_id,
            self.store.clone(),
            self.actor_id,
            self.identity.clone(),
        );
        actor.set_web(self.web_slot.clone());
        // The memory projections go to the workspace's directory.
        if let Some((_, path)) = self
            .store
            .workspaces()
            .into_iter()
            .find(|(id, _)| id == ws_id)
        {
            actor.set_root(crate::workspace::resolve(std::path::Path::new(&path)).root);
        }
        if let Some(n) = notice {
            self.notices.push(n);
        }
        let agents = actor.agents();
        let addr = actor.start();
        self.docs.insert(ws_id.to_string(), addr.clone());
        if let Some(s) = &self.swarm {
            s.do_send(crate::swarm::RegisterDoc {
                workspace: ws_id.to_string(),
                addr: addr.clone(),
            });
        }
        (addr, agents)
    }

    fn find(&self, name: &str) -> Result<&AgentEntry, ErrorInfo> {
        self.agents
            .values()
            .find(|e| e.record.name == name)
            .ok_or_else(|| err(ErrorCode::AgentNotFound, format!("no agent named '{name}'")))
    }

    fn agent_config(
        &self,
        def: Option<&AgentDefinition>,
        id: &str,
        name: &str,
        cols: u16,
        rows: u16,
    ) -> AgentConfig {
        AgentConfig {
            id: id.to_string(),
            name: name.to_string(),
            dir: AgentDir(self.home.agent_dir(id)),
            hook_map: def.and_then(|d| d.hook_map().ok()).unwrap_or_default(),
            rules: def.and_then(|d| d.screen_rules().ok()).unwrap_or_default(),
            cols,
            rows,
            enter_delay_ms: def.map(|d| d.enter_delay_ms).unwrap_or(0),
            resume_field: def.and_then(|d| d.resume.id_field.clone()),
            adopt: false,
        }
    }

    fn start_actor(
        &mut self,
        record: AgentRecord,
        ws_id: String,
        ctx: &mut Context<Self>,
        cols: u16,
        rows: u16,
    ) -> Addr<AgentActor> {
        let catalog = self.catalog();
        let def = catalog.resolve(&record.agent_type).ok();
        let mut cfg = self.agent_config(def, &record.id.0, &record.name, cols, rows);
        // Only used when recovering: the holder is running already, or gone.
        cfg.adopt = true;
        let addr = AgentActor::spawn(cfg, ctx.address().recipient());
        self.agents.insert(
            record.id.0.clone(),
            AgentEntry {
                record,
                ws_id,
                addr: addr.clone(),
            },
        );
        addr
    }

    /// At daemon start: load every workspace's live agents and reconnect.
    pub fn recover(&mut self, ctx: &mut Context<Self>) {
        let mut known: HashMap<String, String> = HashMap::new();
        for (ws_id, _) in self.store.workspaces() {
            let (_, agents) = self.start_doc(&ws_id);
            for rec in agents {
                known.insert(rec.id.0.clone(), ws_id.clone());
                if let Some(w) = &rec.worktree {
                    self.known_repo_roots.insert(w.repo_root.clone());
                }
                // Agents of other devices are listed, never adopted here.
                if rec.is_removed() || self.is_remote(&rec) {
                    continue;
                }
                self.start_actor(rec, ws_id.clone(), ctx, 0, 0);
            }
        }
        // Agents whose run directory exists but whose record is missing (a
        // damaged or lost store): rebuild the record from the spec.
        let entries = std::fs::read_dir(self.home.run_dir())
            .map(|rd| rd.filter_map(|e| e.ok()).collect::<Vec<_>>())
            .unwrap_or_default();
        for entry in entries {
            let id = entry.file_name().to_string_lossy().into_owned();
            if known.contains_key(&id) || entry.path().join("removed").exists() {
                continue;
            }
            let dir = AgentDir(entry.path());
            let Ok(spec) = dir.read_spec() else { continue };
            if spec.workspace_id.is_empty() {
                continue;
            }
            warn!(agent = %spec.name, "rebuilding agent record from its run directory");
            let record = AgentRecord {
                id: AgentId(spec.agent_id.clone()),
                name: spec.name.clone(),
                agent_type: spec.agent_type.clone(),
                command: if spec.base_command.is_empty() {
                    spec.command.clone()
                } else {
                    spec.base_command.clone()
                },
                cwd: spec.cwd.clone(),
                workspace: spec.workspace.clone(),
                host_device: self.device.clone(),
                env: vec![],
                created_at_ms: spec.created_at_ms,
                pid: None,
                resume_id: None,
                removed_at_ms: None,
                worktree: None,
                state: StateTransition::initial(spec.created_at_ms),
                transitions: vec![],
            };
            let _ = self
                .store
                .set_workspace(&spec.workspace_id, &spec.workspace);
            self.doc(&spec.workspace_id).do_send(Apply {
                op: DocOp::UpsertAgent {
                    record: Box::new(record.clone()),
                },
                durable: true,
            });
            self.start_actor(record, spec.workspace_id.clone(), ctx, 0, 0);
        }
        self.replay_hooks_later(ctx);
    }

    /// Hook events recorded in `hooks.jsonl` while no daemon listened are
    /// replayed into each agent (those since its holder started).
    fn replay_hooks_later(&self, _ctx: &mut Context<Self>) {
        for e in self.agents.values() {
            let dir = AgentDir(self.home.agent_dir(&e.record.id.0));
            let since = dir.read_record().map(|r| r.started_at_ms).unwrap_or(0);
            let Ok(text) = std::fs::read_to_string(dir.0.join("hooks.jsonl")) else {
                continue;
            };
            for line in text.lines() {
                let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
                    continue;
                };
                let at = v["at_ms"].as_u64().unwrap_or(0);
                if at < since {
                    continue;
                }
                e.addr.do_send(agent_msgs::Hook {
                    event: v["event"].as_str().unwrap_or("").to_string(),
                    payload: v["payload"].as_str().unwrap_or("").to_string(),
                    at_ms: at,
                });
            }
        }
    }

    /// Start the holder for an agent directory (the holder daemonizes itself).
    fn spawn_holder(&self, dir: &Path) -> Result<(), ErrorInfo> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("holder.log"))
            .map_err(|e| err(ErrorCode::SpawnFailed, format!("holder log: {e}")))?;
        let log2 = log
            .try_clone()
            .map_err(|e| err(ErrorCode::SpawnFailed, format!("holder log: {e}")))?;
        let _ = std::fs::remove_file(dir.join("exit.json"));
        let mut child = std::process::Command::new(&self.exe)
            .arg("shim")
            .arg("--dir")
            .arg(dir)
            .stdin(std::process::Stdio::null())
            .stdout(log)
            .stderr(log2)
            .spawn()
            .map_err(|e| {
                err(
                    ErrorCode::SpawnFailed,
                    format!(
                        "could not start the PTY holder ({}): {e}",
                        self.exe.display()
                    ),
                )
            })?;
        // The shim forks and its first process exits at once.
        let _ = child.wait();
        Ok(())
    }

    /// Full argv for one run: base command + hook injection + resume args.
    fn launch(
        &mut self,
        record: &AgentRecord,
        def: Option<&AgentDefinition>,
        client_env: &[(String, String)],
        resume: bool,
        cols: u16,
        rows: u16,
    ) -> Result<(), ErrorInfo> {
        let dir = self.home.agent_dir(&record.id.0);
        std::fs::create_dir_all(&dir)
            .map_err(|e| err(ErrorCode::SpawnFailed, format!("{}: {e}", dir.display())))?;
        {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700));
        }
        let mut argv = record.command.clone();
        let mut env: Vec<(String, String)> = client_env.to_vec();
        if let Some(def) = def {
            for (k, v) in &def.env {
                env.push((k.clone(), v.clone()));
            }
            let inj = crate::hooks::inject(def, &dir, &record.id.0, &self.exe)
                .map_err(|e| err(ErrorCode::SpawnFailed, format!("hook settings: {e}")))?;
            argv.extend(inj.args);
            env.extend(inj.env);
            if resume {
                argv.extend(def.resume_args(record.resume_id.as_deref()));
            }
        }
        env.retain(|(k, _)| !k.starts_with("AGENTOS_") && k != "TMUX" && k != "TMUX_PANE");
        env.push(("TERM".into(), "xterm-256color".into()));
        env.push(("AGENTOS_HOME".into(), self.home.root.display().to_string()));
        env.push((
            "AGENTOS_SOCKET".into(),
            self.home.socket.display().to_string(),
        ));
        env.push(("AGENTOS_AGENT_ID".into(), record.id.0.clone()));
        env.push(("AGENTOS_AGENT_NAME".into(), record.name.clone()));
        // In a worktree the agent runs in its sandbox (the launcher wraps
        // it), or in its container.
        let dir_for_mode = self.home.agent_dir(&record.id.0);
        if let Some(mode) = container_ops::load_mode(&dir_for_mode) {
            self.container_launch(record, &mode, &mut argv, &mut env, client_env)?;
        } else {
            self.sandbox_launch(record, def, &mut argv, &mut env)?;
        }
        // Later entries win.
        let mut dedup: Vec<(String, String)> = Vec::new();
        for (k, v) in env {
            dedup.retain(|(k2, _)| *k2 != k);
            dedup.push((k, v));
        }
        let spec = HolderSpec {
            agent_id: record.id.0.clone(),
            name: record.name.clone(),
            command: argv,
            cwd: record.cwd.clone(),
            env: dedup,
            cols,
            rows,
            agent_type: record.agent_type.clone(),
            workspace_id: self
                .agents
                .get(&record.id.0)
                .map(|e| e.ws_id.clone())
                .unwrap_or_default(),
            workspace: record.workspace.clone(),
            base_command: record.command.clone(),
            created_at_ms: record.created_at_ms,
        };
        AgentDir(dir.clone())
            .write_spec(&spec)
            .map_err(|e| err(ErrorCode::SpawnFailed, e.to_string()))?;
        self.spawn_holder(&dir)
    }

    fn info(&self, e: &AgentEntry, live: Option<&LiveInfo>) -> AgentInfo {
        let r = &e.record;
        AgentInfo {
            id: r.id.0.clone(),
            name: r.name.clone(),
            agent_type: r.agent_type.clone(),
            state: live
                .map(|l| l.state.clone())
                .unwrap_or_else(|| r.state.state.clone()),
            state_source: live
                .map(|l| l.source.clone())
                .unwrap_or_else(|| r.state.source.clone()),
            started_at_ms: live.and_then(|l| l.started_at_ms),
            pid: live.and_then(|l| l.pid),
            workspace: r.workspace.clone(),
            cwd: r.cwd.clone(),
            command: r.command.clone(),
            resume_id: r.resume_id.clone(),
            host_device: r.host_device.clone(),
            worktree: r.worktree.as_ref().map(|w| w.path.clone()),
            branch: r.worktree.as_ref().map(|w| w.branch.clone()),
            live: r.removed_at_ms.is_none(),
        }
    }

    fn create(
        &mut self,
        spec: CreateSpec,
        resume_id: Option<String>,
        ctx: &mut Context<Self>,
    ) -> Result<(AgentRecord, Addr<AgentActor>), ErrorInfo> {
        if !valid_name(&spec.name) {
            return Err(err(
                ErrorCode::InvalidArgument,
                format!(
                    "invalid agent name '{}': use letters, digits, '.', '_' or '-' (at most 64)",
                    spec.name
                ),
            ));
        }
        if self.find(&spec.name).is_ok() {
            return Err(err(
                ErrorCode::NameInUse,
                format!("an agent named '{}' already exists", spec.name),
            ));
        }
        let cwd = PathBuf::from(&spec.cwd);
        if !cwd.is_dir() {
            return Err(err(
                ErrorCode::InvalidArgument,
                format!("working directory {} does not exist", cwd.display()),
            ));
        }
        let env: Vec<(String, String)> = spec
            .env
            .iter()
            .map(|e| (e.key.clone(), e.value.clone()))
            .collect();
        let catalog = self.catalog();
        // The project's `.agentos/config.toml` applies to agents created in it.
        let cfg = crate::config::load(&self.home.config_file(), Some(&cwd))
            .map_err(|e| err(ErrorCode::ConfigInvalid, e.to_string()))?;
        let type_name = match (&spec.agent_type, spec.command.is_empty()) {
            (Some(t), _) => Some(t.clone()),
            (None, true) => Some(cfg.general.default_agent.clone()),
            (None, false) => None,
        };
        let def = match &type_name {
            Some(t) => Some(catalog.resolve(t).map_err(|e| match e {
                DefinitionError::Unknown(_) => err(
                    ErrorCode::UnknownAgentType,
                    format!("unknown agent type '{t}'"),
                ),
                other => err(ErrorCode::ConfigInvalid, other.to_string()),
            })?),
            None => None,
        };
        let command: Vec<String> = if !spec.command.is_empty() {
            spec.command.clone()
        } else if let Some(d) = def {
            std::iter::once(d.program(&env))
                .chain(d.args.iter().cloned())
                .chain(spec.extra_args.iter().cloned())
                .collect()
        } else {
            return Err(err(ErrorCode::InvalidArgument, "nothing to run"));
        };
        let program = &command[0];
        let path_var = env_get(&env, "PATH");
        let resolved = if program.contains('/') {
            let p = cwd.join(program);
            which(&p.to_string_lossy(), None)
        } else {
            which(program, path_var)
        };
        if resolved.is_none() {
            let mut e = err(
                ErrorCode::CommandNotFound,
                format!("command not found: {program}"),
            );
            if let Some(d) = def.filter(|d| !d.install_hint.is_empty() && spec.command.is_empty()) {
                e = e.with_hint(format!(
                    "install it with `{}` (see `agentos agents doctor`)",
                    d.install_hint
                ));
            }
            return Err(e);
        }
        let agent_type_name = def
            .map(|d| d.name.clone())
            .unwrap_or_else(|| "command".into());
        let worktree_template = cfg.isolation.worktree_path.clone();
        let (worktree, cwd, level) =
            self.prepare_isolation(spec.isolation, &cwd, &agent_type_name, &spec.name, &cfg)?;
        let docker_image = cfg.isolation.docker_image.clone();
        if let Some(w) = &worktree {
            self.known_repo_roots.insert(w.repo_root.clone());
        }
        let ws = workspace::resolve(&cwd);
        let id = loop {
            let id = random_id();
            if !self.home.agent_dir(&id).exists() {
                break id;
            }
        };
        let now = now_ms();
        let record = AgentRecord {
            id: AgentId(id.clone()),
            name: spec.name.clone(),
            agent_type: agent_type_name,
            command,
            cwd: cwd.canonicalize().unwrap_or(cwd).display().to_string(),
            workspace: ws.path.display().to_string(),
            host_device: self.device.clone(),
            env: vec![],
            created_at_ms: now,
            pid: None,
            resume_id: resume_id.clone(),
            removed_at_ms: None,
            worktree: worktree.clone(),
            state: StateTransition::initial(now),
            transitions: vec![],
        };
        let _ = self
            .store
            .set_workspace(&ws.id, &ws.path.display().to_string());
        let (cols, rows) = if spec.cols > 0 && spec.rows > 0 {
            (spec.cols, spec.rows)
        } else {
            (
                self.config.terminal.default_cols,
                self.config.terminal.default_rows,
            )
        };
        // Reserve the name before anything else can interleave.
        let cfg = self.agent_config(def, &id, &spec.name, cols, rows);
        let placeholder_ws = ws.id.clone();
        std::fs::create_dir_all(self.home.agent_dir(&id))
            .map_err(|e| err(ErrorCode::SpawnFailed, e.to_string()))?;
        if !spec.allow_paths.is_empty() {
            sandbox_ops::save_allow_paths(&self.home.agent_dir(&id), &spec.allow_paths)?;
        }
        if matches!(level, Isolation::Docker | Isolation::Devcontainer) {
            container_ops::save_mode(
                &self.home.agent_dir(&id),
                &container_ops::ContainerMode {
                    level,
                    image: docker_image,
                },
            )?;
        }
        self.agents.insert(
            id.clone(),
            AgentEntry {
                record: record.clone(),
                ws_id: placeholder_ws,
                addr: AgentActor::spawn(cfg, ctx.address().recipient()),
            },
        );
        if let Err(e) = self.launch(&record, def, &env, resume_id.is_some(), cols, rows) {
            if let Some(entry) = self.agents.remove(&id) {
                entry.addr.do_send(agent_msgs::Shutdown {
                    reason: DetachReason::AgentGone,
                });
            }
            if let Some(w) = &worktree {
                // Fresh and empty: nothing to save.
                let _ = git_ops::teardown(&spec.name, w, &worktree_template);
            }
            return Err(e);
        }
        info!(agent = %record.name, id = %id, agent_type = %record.agent_type, "agent created");
        let addr = self.agents[&id].addr.clone();
        Ok((record, addr))
    }

    fn ws_doc_of(&mut self, id: &str) -> Option<Addr<DocActor>> {
        let ws = self.agents.get(id)?.ws_id.clone();
        Some(self.doc(&ws))
    }
}

impl Actor for NodeActor {
    type Context = Context<Self>;
    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(4096);
        let _span = tracing::info_span!("node").entered();
        self.me = Some(ctx.address());
        self.kernel_audit = crate::audit_log::start_kernel_reader(self.audit.clone());
        if let crate::audit_log::KernelAudit::Unavailable(why) = &self.kernel_audit {
            info!(%why, "kernel audit records unavailable");
        }
        if let Some(rx) = self.proxy_events_rx.take() {
            self.start_proxy_forwarder(rx);
        }
        if self.config.sync.enabled {
            match crate::swarm::SwarmActor::start(
                self.store.clone(),
                self.identity.clone(),
                &self.config.sync,
                ctx.address().recipient(),
                ctx.address().recipient(),
            ) {
                Ok((s, control)) => {
                    crate::ipc::serve_peers(control.clone(), ctx.address(), s.clone());
                    self.swarm = Some(s);
                    self.streams = Some(control);
                }
                Err(e) => {
                    warn!(error = %e, "p2p sync unavailable");
                    self.notices.push(format!(
                        "E023 p2p sync unavailable: {e}; check [sync] in config.toml"
                    ));
                }
            }
        }
        self.recover(ctx);
        self.sandbox_recover();
        self.containers_recover();
        ctx.run_interval(Duration::from_millis(500), |act, _| act.sandbox_watch());
        info!(agents = self.agents.len(), "node started");
    }
}

impl Handler<AgentEvent> for NodeActor {
    type Result = ();
    fn handle(&mut self, msg: AgentEvent, _: &mut Context<Self>) {
        match msg {
            AgentEvent::StateChanged {
                agent_id,
                transition,
            } => {
                if let Some(e) = self.agents.get_mut(&agent_id) {
                    e.record.state = transition.clone();
                }
                if transition.state.is_terminal() {
                    self.sandbox_run_ended(&agent_id);
                }
                if let Some(doc) = self.ws_doc_of(&agent_id) {
                    let _ = doc.try_send(Apply {
                        op: DocOp::Transition {
                            agent: AgentId(agent_id),
                            transition,
                        },
                        durable: false,
                    });
                }
            }
            AgentEvent::ResumeId {
                agent_id,
                resume_id,
            } => {
                let changed = self.agents.get_mut(&agent_id).is_some_and(|e| {
                    let changed = e.record.resume_id.as_deref() != Some(&resume_id);
                    e.record.resume_id = Some(resume_id.clone());
                    changed
                });
                if changed && let Some(doc) = self.ws_doc_of(&agent_id) {
                    info!(agent = %agent_id, "conversation id captured");
                    doc.do_send(Apply {
                        op: DocOp::ResumeId {
                            agent: AgentId(agent_id),
                            resume_id,
                        },
                        durable: true,
                    });
                }
            }
            AgentEvent::LocalInput { agent_id } => {
                // Typed in `agentos attach`: the owner, at a terminal.
                if let (Some(w), Some(e)) = (&self.web, self.agents.get(&agent_id)) {
                    w.foreign_input(
                        &e.record.name,
                        agentos_proto::ws::InputSource::Person {
                            id: agentos_proto::ws::PersonId(web_ops::LOCAL_OWNER.into()),
                            name: format!("{} (terminal)", web_ops::local_owner_name()),
                        },
                    );
                }
            }
            AgentEvent::Pid { agent_id, pid } => {
                if let Some(e) = self.agents.get_mut(&agent_id) {
                    e.record.pid = pid;
                }
                if let Some(doc) = self.ws_doc_of(&agent_id) {
                    let _ = doc.try_send(Apply {
                        op: DocOp::Pid {
                            agent: AgentId(agent_id),
                            pid,
                        },
                        durable: false,
                    });
                }
            }
        }
    }
}

/// A request from a client connection.
#[derive(Message)]
#[rtype(result = "Response")]
pub struct ClientRequest {
    pub req: Request,
}

/// Open a remote-attach stream to the device an agent runs on.
#[derive(Message)]
#[rtype(result = "Result<libp2p::Stream, ErrorInfo>")]
pub struct OpenRemoteAttach {
    pub name: String,
}

/// The web server is up: share links and comments can be served.
#[derive(Message)]
#[rtype(result = "()")]
pub struct SetWeb {
    pub shared: std::sync::Arc<crate::web::WebShared>,
}

impl Handler<SetWeb> for NodeActor {
    type Result = ();
    fn handle(&mut self, msg: SetWeb, _: &mut Context<Self>) {
        let _ = self.web_slot.set(msg.shared.clone());
        self.web = Some(msg.shared);
    }
}

/// Record a start-up problem for `daemon status`.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Notice {
    pub text: String,
}

impl Handler<Notice> for NodeActor {
    type Result = ();
    fn handle(&mut self, msg: Notice, _: &mut Context<Self>) {
        self.notices.push(msg.text);
    }
}

/// Find an agent's actor by name (attach, logs --follow).
#[derive(Message)]
#[rtype(result = "Result<Addr<AgentActor>, ErrorInfo>")]
pub struct Lookup {
    pub name: String,
}

impl Handler<Lookup> for NodeActor {
    type Result = Result<Addr<AgentActor>, ErrorInfo>;
    fn handle(&mut self, msg: Lookup, _: &mut Context<Self>) -> Self::Result {
        self.find(&msg.name).map(|e| e.addr.clone())
    }
}

/// Wait (bounded) until the agent's holder connection settles.
async fn connected(addr: &Addr<AgentActor>) -> bool {
    let (tx, rx) = tokio::sync::oneshot::channel();
    if addr.send(agent_msgs::WhenConnected { tx }).await.is_err() {
        return false;
    }
    matches!(
        tokio::time::timeout(Duration::from_secs(10), rx).await,
        Ok(Ok(true))
    )
}

fn error_response(e: ErrorInfo) -> Response {
    Response::Error { error: e }
}

/// Stop an agent's process: SIGTERM, then SIGKILL after the grace period.
async fn stop_agent(addr: &Addr<AgentActor>, force: bool) {
    let wait_exit = |t: Duration| {
        let addr = addr.clone();
        async move {
            let (tx, rx) = tokio::sync::oneshot::channel();
            if addr
                .send(agent_msgs::Wait {
                    until: WaitTarget::Exited,
                    tx,
                })
                .await
                .is_err()
            {
                return true;
            }
            tokio::time::timeout(t, rx).await.is_ok()
        }
    };
    let live = addr.send(agent_msgs::GetInfo).await.ok();
    if live.as_ref().is_none_or(|l| !l.connected) {
        return;
    }
    if !force {
        let _ = addr
            .send(agent_msgs::Kill {
                signal: libc::SIGTERM,
            })
            .await;
        if wait_exit(STOP_GRACE).await {
            return;
        }
    }
    let _ = addr
        .send(agent_msgs::Kill {
            signal: libc::SIGKILL,
        })
        .await;
    let _ = wait_exit(STOP_GRACE).await;
}

/// The last `lines` lines (all when `None`) of an agent's output as plain
/// text, with the absolute number of the first one.
fn read_log_lines(dir: &AgentDir, lines: Option<u32>) -> (u64, Vec<String>) {
    use std::io::{Read, Seek, SeekFrom};
    let Ok(mut f) = std::fs::File::open(dir.log()) else {
        return (1, Vec::new());
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let Some(n) = lines.map(|n| n as usize) else {
        let mut buf = Vec::new();
        let _ = f.read_to_end(&mut buf);
        return (1, agentos_actors::plaintext::last_lines(&buf, usize::MAX));
    };
    let mut window = (n as u64 * 256).max(64 * 1024);
    loop {
        let start = len.saturating_sub(window);
        let mut buf = Vec::new();
        if f.seek(SeekFrom::Start(start)).is_err()
            || (&mut f).take(len - start).read_to_end(&mut buf).is_err()
        {
            return (1, Vec::new());
        }
        let mut out = agentos_actors::plaintext::last_lines(&buf, n + 1);
        if start > 0 {
            if out.len() <= n {
                window = window.saturating_mul(4);
                continue;
            }
            // The window began mid-line: that first line is partial.
            out.remove(0);
        }
        let skip = out.len().saturating_sub(n);
        let out = out.split_off(skip);
        // Lines end with '\n'; an unfinished last line counts too.
        let newlines_before = agentos_actors::agent::count_newlines(&dir.log(), start)
            + buf.iter().filter(|b| **b == b'\n').count() as u64;
        let total = newlines_before + u64::from(buf.last().is_some_and(|b| *b != b'\n'));
        return (total + 1 - out.len() as u64, out);
    }
}

impl Handler<ClientRequest> for NodeActor {
    type Result = ResponseActFuture<Self, Response>;

    fn handle(&mut self, msg: ClientRequest, ctx: &mut Context<Self>) -> Self::Result {
        let ready =
            |r: Response| -> ResponseActFuture<Self, Response> { Box::pin(actix::fut::ready(r)) };
        match msg.req {
            req @ (Request::Diff { .. }
            | Request::Merge { .. }
            | Request::Overlaps
            | Request::Gc) => self.git_request(req),
            Request::Ping => ready(Response::Pong {
                pid: std::process::id(),
            }),
            Request::DaemonStatus => ready(Response::DaemonStatus {
                status: DaemonStatus {
                    pid: std::process::id(),
                    version: env!("CARGO_PKG_VERSION").to_string(),
                    started_at_ms: self.started_at_ms,
                    home: self.home.root.display().to_string(),
                    socket: self.home.socket.display().to_string(),
                    agents: self.agents.len() as u32,
                    rss_bytes: rss_bytes(),
                    notices: self.notices.clone(),
                    device: self.device.clone(),
                    web: self.web.as_ref().map(|w| w.base_url.clone()),
                },
            }),
            Request::Shutdown { kill_agents } => {
                let addrs: Vec<_> = self.agents.values().map(|e| e.addr.clone()).collect();
                let docs: Vec<_> = self.docs.values().cloned().collect();
                Box::pin(
                    async move {
                        if kill_agents {
                            for a in &addrs {
                                stop_agent(a, false).await;
                            }
                        }
                        for d in &docs {
                            let _ = d.send(Flush).await;
                        }
                    }
                    .into_actor(self)
                    .map(move |_, act, ctx| {
                        info!("daemon stopping on request");
                        if kill_agents {
                            act.containers_shutdown();
                        }
                        let _ = act.store.flush();
                        for e in act.agents.values() {
                            e.addr.do_send(agent_msgs::Shutdown {
                                reason: DetachReason::Shutdown,
                            });
                        }
                        // Let the reply reach the client, then stop.
                        ctx.run_later(Duration::from_millis(50), |_, _| System::current().stop());
                        Response::Ok
                    }),
                )
            }
            Request::Create { spec } => match self.create(spec, None, ctx) {
                Err(e) => ready(error_response(e)),
                Ok((record, addr)) => {
                    let ws = self.agents[&record.id.0].ws_id.clone();
                    let doc = self.doc(&ws);
                    Box::pin(
                        async move {
                            let _ = doc
                                .send(Apply {
                                    op: DocOp::UpsertAgent {
                                        record: Box::new(record.clone()),
                                    },
                                    durable: true,
                                })
                                .await;
                            connected(&addr).await;
                            let live = addr.send(agent_msgs::GetInfo).await.ok();
                            (record, live)
                        }
                        .into_actor(self)
                        .map(|(record, live), act, _| {
                            match act.agents.get(&record.id.0) {
                                Some(e) => Response::Agent {
                                    info: act.info(e, live.as_ref()),
                                },
                                None => error_response(err(
                                    ErrorCode::Internal,
                                    "agent vanished while starting",
                                )),
                            }
                        }),
                    )
                }
            },
            Request::List { all } => {
                let docs: Vec<_> = self.docs.values().cloned().collect();
                let live: Vec<(String, Addr<AgentActor>)> = self
                    .agents
                    .iter()
                    .map(|(id, e)| (id.clone(), e.addr.clone()))
                    .collect();
                Box::pin(
                    async move {
                        let mut records = Vec::new();
                        for d in docs {
                            if let Ok(r) = d.send(ListAgents).await {
                                records.extend(r);
                            }
                        }
                        let mut lives = HashMap::new();
                        for (id, a) in live {
                            // Right after a daemon start, adoption is in flight.
                            connected(&a).await;
                            if let Ok(l) = a.send(agent_msgs::GetInfo).await {
                                lives.insert(id, l);
                            }
                        }
                        (records, lives)
                    }
                    .into_actor(self)
                    .map(move |(records, lives), act, _| {
                        let mut out = Vec::new();
                        for r in records {
                            if r.is_removed() && !all {
                                continue;
                            }
                            let live = lives.get(&r.id.0);
                            // The document is the source of truth; the actor adds pid and uptime.
                            let mut info = act.info(
                                &AgentEntry {
                                    record: r.clone(),
                                    ws_id: String::new(),
                                    addr: match act.agents.get(&r.id.0) {
                                        Some(e) => e.addr.clone(),
                                        None => {
                                            let mut i = act.info_removed(&r);
                                            i.live = act.is_remote(&r) && !r.is_removed();
                                            out.push(i);
                                            continue;
                                        }
                                    },
                                },
                                live,
                            );
                            info.state = r.state.state.clone();
                            info.state_source = r.state.source.clone();
                            out.push(info);
                        }
                        out.sort_by(|a, b| a.name.cmp(&b.name).then(a.id.cmp(&b.id)));
                        Response::Agents { agents: out }
                    }),
                )
            }
            Request::Status { name } => match self.find(&name) {
                Err(e) => ready(error_response(e)),
                Ok(e) => {
                    let addr = e.addr.clone();
                    let id = e.record.id.0.clone();
                    Box::pin(
                        async move { addr.send(agent_msgs::Explain).await.ok() }
                            .into_actor(self)
                            .map(move |r, act, _| match (r, act.agents.get(&id)) {
                                (Some((live, ex)), Some(e)) => Response::Explain {
                                    explain: StateExplain {
                                        info: act.info(e, Some(&live)),
                                        sources: ex
                                            .into_iter()
                                            .map(|x| SourceOpinion {
                                                rank: x.rank,
                                                source: x.source,
                                                opinion: x.opinion,
                                                detail: x.detail,
                                                decided: x.decided,
                                            })
                                            .collect(),
                                    },
                                },
                                _ => error_response(err(ErrorCode::AgentNotFound, "agent is gone")),
                            }),
                    )
                }
            },
            Request::Destroy { name, force } => match self.find(&name) {
                Err(e) => ready(error_response(e)),
                Ok(e) => {
                    let addr = e.addr.clone();
                    let id = e.record.id.0.clone();
                    let worktree = e.record.worktree.clone();
                    if let Some(w) = &worktree
                        && !force
                        && let Err(e) = git_ops::check_destroy(&name, w)
                    {
                        return ready(error_response(e));
                    }
                    let template = self.config.isolation.worktree_path.clone();
                    Box::pin(
                        async move { stop_agent(&addr, force).await }
                            .into_actor(self)
                            .then(move |_, act, _| {
                                // Save any work (even what the agent wrote while stopping), then remove.
                                let mut note = format!("destroyed {name}");
                                if let Some(w) = &worktree {
                                    match git_ops::teardown(&name, w, &template) {
                                        Ok(Some(r)) => {
                                            note.push_str(&format!("; its work is saved in {r}"))
                                        }
                                        Ok(None) => note.push_str(&format!("; removed {}", w.path)),
                                        Err(e) => {
                                            let fut: std::pin::Pin<
                                                Box<dyn Future<Output = Response>>,
                                            > = Box::pin(async move { error_response(e) });
                                            return fut.into_actor(act);
                                        }
                                    }
                                }
                                act.sandbox_destroyed(&id);
                                let doc = act.ws_doc_of(&id);
                                let entry = act.agents.remove(&id);
                                let dir = act.home.agent_dir(&id);
                                let _ = std::fs::write(dir.join("removed"), b"");
                                let fut: std::pin::Pin<Box<dyn Future<Output = Response>>> =
                                    Box::pin(async move {
                                        if let Some(doc) = doc {
                                            let _ = doc
                                                .send(Apply {
                                                    op: DocOp::Removed {
                                                        agent: AgentId(id.clone()),
                                                        at_ms: now_ms(),
                                                    },
                                                    durable: true,
                                                })
                                                .await;
                                        }
                                        if let Some(e) = entry {
                                            let _ = e
                                                .addr
                                                .send(agent_msgs::Shutdown {
                                                    reason: DetachReason::AgentGone,
                                                })
                                                .await;
                                            info!(agent = %e.record.name, "agent destroyed");
                                        }
                                        Response::Text { text: note }
                                    });
                                fut.into_actor(act)
                            }),
                    )
                }
            },
            Request::Restart { name } => match self.find(&name) {
                Err(e) => ready(error_response(e)),
                Ok(e) => {
                    let addr = e.addr.clone();
                    let id = e.record.id.0.clone();
                    Box::pin(
                        async move { stop_agent(&addr, false).await }
                            .into_actor(self)
                            .then(move |_, act, _| {
                                let r = act.relaunch(&id, None);
                                let addr = act.agents.get(&id).map(|e| e.addr.clone());
                                async move {
                                    match (r, addr) {
                                        (Ok(()), Some(addr)) => {
                                            let _ = addr.send(agent_msgs::Reconnect).await;
                                            connected(&addr).await;
                                            let live = addr.send(agent_msgs::GetInfo).await.ok();
                                            (Ok(()), live)
                                        }
                                        (Err(e), _) => (Err(e), None),
                                        (Ok(()), None) => (
                                            Err(err(ErrorCode::AgentNotFound, "agent is gone")),
                                            None,
                                        ),
                                    }
                                }
                                .into_actor(act)
                                .map(move |(r, live), act, _| match (r, act.agents.get(&id)) {
                                    (Ok(()), Some(e)) => Response::Agent {
                                        info: act.info(e, live.as_ref()),
                                    },
                                    (Err(e), _) => error_response(e),
                                    _ => error_response(err(
                                        ErrorCode::AgentNotFound,
                                        "agent is gone",
                                    )),
                                })
                            }),
                    )
                }
            },
            Request::Send {
                name,
                text,
                enter,
                from_agent,
            } => match self.find(&name) {
                Err(e) => ready(error_response(e)),
                Ok(e) => {
                    let addr = e.addr.clone();
                    if let Some(w) = &self.web {
                        // Tag the input for viewers: another agent, or the
                        // owner's own CLI.
                        let by = match from_agent
                            .as_deref()
                            .and_then(|id| self.agents.get(id))
                            .map(|a| a.record.name.clone())
                        {
                            Some(agent) => agentos_proto::ws::InputSource::Agent { name: agent },
                            None => agentos_proto::ws::InputSource::Person {
                                id: agentos_proto::ws::PersonId(web_ops::LOCAL_OWNER.into()),
                                name: std::env::var("USER").unwrap_or_else(|_| "owner".into()),
                            },
                        };
                        w.foreign_input(&name, by);
                    }
                    Box::pin(
                        async move {
                            match addr.send(agent_msgs::SendText { text, enter }).await {
                                Ok(Ok(())) => Response::Ok,
                                Ok(Err(e)) => error_response(e),
                                Err(_) => {
                                    error_response(err(ErrorCode::AgentNotFound, "agent is gone"))
                                }
                            }
                        }
                        .into_actor(self),
                    )
                }
            },
            Request::Logs { name, lines, .. } => match self.find(&name) {
                Err(e) => ready(error_response(e)),
                Ok(e) => {
                    let dir = AgentDir(self.home.agent_dir(&e.record.id.0));
                    let (first, lines) = read_log_lines(&dir, lines);
                    ready(Response::LogLines { first, lines })
                }
            },
            Request::Attach { .. } => ready(error_response(err(
                ErrorCode::Internal,
                "attach is handled by the connection",
            ))),
            Request::Detach { agent_id } => match self.agents.get(&agent_id) {
                None => ready(error_response(err(
                    ErrorCode::AgentNotFound,
                    format!("no agent with id {agent_id}"),
                ))),
                Some(e) => {
                    e.addr.do_send(agent_msgs::Detach { sub: None });
                    ready(Response::Ok)
                }
            },
            Request::Wait {
                name,
                until,
                timeout_ms,
            } => match self.find(&name) {
                Err(e) => ready(error_response(e)),
                Ok(e) => {
                    let addr = e.addr.clone();
                    Box::pin(
                        async move {
                            let (tx, rx) = tokio::sync::oneshot::channel();
                            if addr.send(agent_msgs::Wait { until, tx }).await.is_err() {
                                return error_response(err(
                                    ErrorCode::AgentNotFound,
                                    "agent is gone",
                                ));
                            }
                            match tokio::time::timeout(Duration::from_millis(timeout_ms), rx).await
                            {
                                Ok(Ok(state)) => {
                                    let wanted_exit = until == WaitTarget::Exited;
                                    if state.is_terminal() && !wanted_exit {
                                        error_response(err(
                                            ErrorCode::AgentNotRunning,
                                            format!(
                                                "agent '{name}' ended ({}) before it got there",
                                                state.label()
                                            ),
                                        ))
                                    } else {
                                        Response::Text {
                                            text: state.label().to_string(),
                                        }
                                    }
                                }
                                Ok(Err(_)) => {
                                    error_response(err(ErrorCode::AgentNotFound, "agent is gone"))
                                }
                                Err(_) => error_response(err(
                                    ErrorCode::WaitTimeout,
                                    format!(
                                        "timed out after {:.1}s waiting for '{name}'",
                                        timeout_ms as f64 / 1000.0
                                    ),
                                )),
                            }
                        }
                        .into_actor(self),
                    )
                }
            },
            Request::SandboxReady {
                agent_id,
                pid,
                audit_session,
                proxy_fd,
            } => ready(self.sandbox_ready(&agent_id, pid, audit_session, proxy_fd)),
            req @ (Request::PairInvite { .. }
            | Request::PairWait { .. }
            | Request::PairJoin { .. }
            | Request::PairConfirm { .. }
            | Request::Devices
            | Request::DeviceRemove { .. }
            | Request::SyncStatus
            | Request::SyncSet { .. }
            | Request::SyncConnect { .. }) => self.p2p_request(req),
            Request::Handoff { name, to } => self.handoff(name, to),
            req @ (Request::ShareCreate { .. }
            | Request::ShareList
            | Request::ShareRevoke { .. }
            | Request::CommentAdd { .. }
            | Request::CommentList { .. }
            | Request::CommentResolve { .. }) => self.web_request(req),
            Request::Memory { workspace, op, by } => self.memory_request(workspace, op, by),
            Request::Stop { name } => match self.find(&name) {
                Err(e) => ready(error_response(e)),
                Ok(e) => {
                    let addr = e.addr.clone();
                    Box::pin(
                        async move {
                            stop_agent(&addr, false).await;
                            Response::Ok
                        }
                        .into_actor(self),
                    )
                }
            },
            Request::PolicyShow { name } => ready(match self.policy_view(&name) {
                Ok(policy) => Response::Policy { policy },
                Err(e) => error_response(e),
            }),
            Request::Audit {
                agent,
                since_ms,
                after,
                limit,
            } => {
                let agent_id = match agent.as_deref().map(|n| self.find(n)) {
                    None => None,
                    Some(Ok(e)) => Some(e.record.id.0.clone()),
                    Some(Err(e)) => return ready(error_response(e)),
                };
                let audit = self.audit.clone();
                Box::pin(
                    async move {
                        let records = audit
                            .send(crate::audit_log::Query {
                                agent_id,
                                since_ms,
                                after,
                                limit: limit.clamp(1, 100_000) as usize,
                            })
                            .await
                            .unwrap_or_default();
                        Response::AuditRecords { records }
                    }
                    .into_actor(self),
                )
            }
            Request::Hook {
                agent_id,
                event,
                payload,
            } => match self.agents.get(&agent_id) {
                None => ready(error_response(err(
                    ErrorCode::AgentNotFound,
                    format!("no agent with id {agent_id}"),
                ))),
                Some(e) => {
                    e.addr.do_send(agent_msgs::Hook {
                        event,
                        payload,
                        at_ms: now_ms(),
                    });
                    ready(Response::Ok)
                }
            },
            Request::Restore => {
                let candidates: Vec<(String, Addr<AgentActor>)> = self
                    .agents
                    .iter()
                    .map(|(id, e)| (id.clone(), e.addr.clone()))
                    .collect();
                Box::pin(
                    async move {
                        let mut lost = Vec::new();
                        for (id, a) in candidates {
                            if let Ok(l) = a.send(agent_msgs::GetInfo).await
                                && !l.connected
                                && matches!(
                                    l.state,
                                    AgentState::Error { .. } | AgentState::Starting
                                )
                            {
                                lost.push(id);
                            }
                        }
                        lost
                    }
                    .into_actor(self)
                    .then(|lost, act, _| {
                        let mut started = Vec::new();
                        let mut failures = Vec::new();
                        for id in lost {
                            let dir = AgentDir(act.home.agent_dir(&id));
                            // Only agents that did not exit on their own: no exit record.
                            if dir.read_exit().is_some_and(|x| x.error.is_none()) {
                                continue;
                            }
                            match act.relaunch(&id, None) {
                                Ok(()) => started.push(id),
                                Err(e) => failures.push(e),
                            }
                        }
                        let addrs: Vec<_> = started
                            .iter()
                            .filter_map(|id| {
                                act.agents.get(id).map(|e| (id.clone(), e.addr.clone()))
                            })
                            .collect();
                        async move {
                            let mut lives = Vec::new();
                            for (id, a) in addrs {
                                let _ = a.send(agent_msgs::Reconnect).await;
                                connected(&a).await;
                                lives.push((id, a.send(agent_msgs::GetInfo).await.ok()));
                            }
                            (lives, failures)
                        }
                        .into_actor(act)
                        .map(|(lives, failures), act, _| {
                            if let Some(f) = failures.into_iter().next() {
                                return error_response(f);
                            }
                            let agents = lives
                                .iter()
                                .filter_map(|(id, l)| {
                                    act.agents.get(id).map(|e| act.info(e, l.as_ref()))
                                })
                                .collect();
                            Response::Restored { agents }
                        })
                    }),
                )
            }
            Request::SessionSave { name, agents } => {
                if !valid_name(&name) {
                    return ready(error_response(err(
                        ErrorCode::InvalidArgument,
                        format!("invalid session name '{name}'"),
                    )));
                }
                let mut chosen: Vec<&AgentEntry> = if agents.is_empty() {
                    self.agents.values().collect()
                } else {
                    let mut v = Vec::new();
                    for n in &agents {
                        match self.find(n) {
                            Ok(e) => v.push(e),
                            Err(e) => return ready(error_response(e)),
                        }
                    }
                    v
                };
                if chosen.is_empty() {
                    return ready(error_response(err(
                        ErrorCode::InvalidArgument,
                        "there are no agents to save",
                    )));
                }
                chosen.sort_by(|a, b| a.record.name.cmp(&b.record.name));
                let ws = chosen[0].ws_id.clone();
                let session = SessionRecord {
                    name: name.clone(),
                    created_at_ms: now_ms(),
                    agents: chosen
                        .iter()
                        .map(|e| SavedAgent {
                            name: e.record.name.clone(),
                            agent_type: e.record.agent_type.clone(),
                            command: e.record.command.clone(),
                            cwd: e.record.cwd.clone(),
                            resume_id: e.record.resume_id.clone(),
                            env: vec![],
                        })
                        .collect(),
                };
                let doc = self.doc(&ws);
                Box::pin(
                    async move {
                        match doc
                            .send(Apply {
                                op: DocOp::UpsertSession {
                                    session: session.clone(),
                                },
                                durable: true,
                            })
                            .await
                        {
                            Ok(Ok(())) => Response::Sessions {
                                sessions: vec![SessionSummary {
                                    name: session.name,
                                    created_at_ms: session.created_at_ms,
                                    agents: session.agents.into_iter().map(|a| a.name).collect(),
                                }],
                            },
                            Ok(Err(e)) => error_response(err(ErrorCode::Internal, e)),
                            Err(e) => error_response(err(ErrorCode::Internal, e.to_string())),
                        }
                    }
                    .into_actor(self),
                )
            }
            Request::SessionList => {
                let docs: Vec<_> = self.docs.values().cloned().collect();
                Box::pin(
                    async move {
                        let mut all = Vec::new();
                        for d in docs {
                            if let Ok(s) = d.send(ListSessions).await {
                                all.extend(s.into_iter().map(|s| SessionSummary {
                                    name: s.name,
                                    created_at_ms: s.created_at_ms,
                                    agents: s.agents.into_iter().map(|a| a.name).collect(),
                                }));
                            }
                        }
                        all.sort_by(|a, b| a.name.cmp(&b.name));
                        Response::Sessions { sessions: all }
                    }
                    .into_actor(self),
                )
            }
            Request::SessionRestore { name, env } => {
                let docs: Vec<_> = self.docs.values().cloned().collect();
                let wanted = name.clone();
                Box::pin(
                    async move {
                        let mut found = None;
                        for d in docs {
                            if let Ok(s) = d.send(ListSessions).await
                                && let Some(s) = s.into_iter().find(|s| s.name == wanted)
                            {
                                found = Some(s);
                                break;
                            }
                        }
                        found
                    }
                    .into_actor(self)
                    .then(move |found, act, ctx| {
                        let result = match found {
                            None => Err(err(
                                ErrorCode::SessionNotFound,
                                format!("no saved session named '{name}'"),
                            )),
                            Some(s) => act.restore_session(s, env, ctx),
                        };
                        let addrs: Vec<_> = match &result {
                            Ok(ids) => ids
                                .iter()
                                .filter_map(|(id, reconnect)| {
                                    act.agents
                                        .get(id)
                                        .map(|e| (id.clone(), e.addr.clone(), *reconnect))
                                })
                                .collect(),
                            Err(_) => vec![],
                        };
                        let docs: Vec<_> = addrs
                            .iter()
                            .filter_map(|(id, _, _)| {
                                let ws = act.agents.get(id)?.ws_id.clone();
                                Some((act.doc(&ws), act.agents.get(id)?.record.clone()))
                            })
                            .collect();
                        async move {
                            for (doc, record) in docs {
                                let _ = doc
                                    .send(Apply {
                                        op: DocOp::UpsertAgent {
                                            record: Box::new(record),
                                        },
                                        durable: true,
                                    })
                                    .await;
                            }
                            let mut lives = Vec::new();
                            for (id, a, reconnect) in addrs {
                                if reconnect {
                                    let _ = a.send(agent_msgs::Reconnect).await;
                                }
                                connected(&a).await;
                                lives.push((id, a.send(agent_msgs::GetInfo).await.ok()));
                            }
                            (result.map(|_| ()), lives)
                        }
                        .into_actor(act)
                        .map(|(result, lives), act, _| match result {
                            Err(e) => error_response(e),
                            Ok(()) => Response::Restored {
                                agents: lives
                                    .iter()
                                    .filter_map(|(id, l)| {
                                        act.agents.get(id).map(|e| act.info(e, l.as_ref()))
                                    })
                                    .collect(),
                            },
                        })
                    }),
                )
            }
        }
    }
}

impl NodeActor {
    fn info_removed(&self, r: &AgentRecord) -> AgentInfo {
        AgentInfo {
            id: r.id.0.clone(),
            name: r.name.clone(),
            agent_type: r.agent_type.clone(),
            state: r.state.state.clone(),
            state_source: r.state.source.clone(),
            started_at_ms: None,
            pid: None,
            workspace: r.workspace.clone(),
            cwd: r.cwd.clone(),
            command: r.command.clone(),
            resume_id: r.resume_id.clone(),
            host_device: r.host_device.clone(),
            worktree: r.worktree.as_ref().map(|w| w.path.clone()),
            branch: r.worktree.as_ref().map(|w| w.branch.clone()),
            live: r.removed_at_ms.is_none(),
        }
    }

    /// Start a new run of an existing agent (restart/restore), resuming its
    /// own conversation when its definition knows how.
    fn relaunch(
        &mut self,
        id: &str,
        env_override: Option<Vec<(String, String)>>,
    ) -> Result<(), ErrorInfo> {
        let entry = self
            .agents
            .get(id)
            .ok_or_else(|| err(ErrorCode::AgentNotFound, format!("no agent with id {id}")))?;
        let record = entry.record.clone();
        let dir = AgentDir(self.home.agent_dir(id));
        let old = dir.read_spec().ok();
        let env: Vec<(String, String)> = match env_override {
            Some(e) => e,
            None => old
                .as_ref()
                .map(|s| {
                    s.env
                        .iter()
                        .filter(|(k, _)| {
                            !k.starts_with("AGENTOS_") && k != "GEMINI_CLI_SYSTEM_SETTINGS_PATH"
                        })
                        .cloned()
                        .collect()
                })
                .unwrap_or_default(),
        };
        let (cols, rows) = old.as_ref().map(|s| (s.cols, s.rows)).unwrap_or((
            self.config.terminal.default_cols,
            self.config.terminal.default_rows,
        ));
        let catalog = self.catalog();
        let def = catalog.resolve(&record.agent_type).ok();
        info!(agent = %record.name, resume_id = ?record.resume_id, "relaunching agent");
        self.launch(&record, def, &env, true, cols, rows)
    }

    /// Bring back a saved session: re-create missing agents (resuming their
    /// conversations) and restart stopped ones; running ones are left alone.
    /// Returns the agent ids touched and whether each needs a reconnect.
    fn restore_session(
        &mut self,
        s: SessionRecord,
        env: Vec<EnvVar>,
        ctx: &mut Context<Self>,
    ) -> Result<Vec<(String, bool)>, ErrorInfo> {
        let env: Vec<(String, String)> = env.into_iter().map(|e| (e.key, e.value)).collect();
        let mut out = Vec::new();
        for saved in s.agents {
            if let Ok(e) = self.find(&saved.name) {
                let id = e.record.id.0.clone();
                let holder_alive = !e.record.state.state.is_terminal()
                    && std::os::unix::net::UnixStream::connect(
                        AgentDir(self.home.agent_dir(&id)).socket(),
                    )
                    .is_ok();
                if holder_alive {
                    out.push((id, false));
                    continue;
                }
                if e.record.resume_id.is_none() && saved.resume_id.is_some() {
                    let rid = saved.resume_id.clone();
                    if let Some(e) = self.agents.get_mut(&id) {
                        e.record.resume_id = rid;
                    }
                }
                self.relaunch(&id, None)?;
                out.push((id, true));
                continue;
            }
            let spec = CreateSpec {
                name: saved.name.clone(),
                agent_type: Some(saved.agent_type.clone()).filter(|t| t != "command"),
                command: if saved.agent_type == "command" {
                    saved.command.clone()
                } else {
                    vec![]
                },
                extra_args: vec![],
                cwd: saved.cwd.clone(),
                isolation: agentos_proto::Isolation::None,
                allow_paths: vec![],
                env: env
                    .iter()
                    .map(|(k, v)| EnvVar {
                        key: k.clone(),
                        value: v.clone(),
                    })
                    .collect(),
                cols: 0,
                rows: 0,
            };
            let (record, _) = self.create(spec, saved.resume_id.clone(), ctx)?;
            let id = record.id.0.clone();
            out.push((id, false));
        }
        Ok(out)
    }
}
