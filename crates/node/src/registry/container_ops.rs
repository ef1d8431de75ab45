//! `--isolation docker|devcontainer`: the node's side of an agent that runs
//! in a container. The engine and image (or the devcontainer file) are
//! checked before the worktree exists; at launch the node writes the
//! container plan, and the PTY holder runs `agentos container-run --plan`;
//! once the container is up the node opens the agent's proxy inside its
//! network namespace; destroy and `daemon stop --kill-agents` remove the
//! containers by label.

use super::{NodeActor, err};
use crate::audit_log::RegisterRun;
use crate::container;
use crate::devcontainer::{self, CONTAINER_HOME, PlanBuilder};
use crate::proxy::PROXY_PORT;
use actix::prelude::*;
use agentos_crdt::AgentRecord;
use agentos_proto::{ErrorCode, ErrorInfo, Isolation};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tracing::{info, warn};

/// How an agent's container is chosen (`container.json` in its run dir).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ContainerMode {
    pub level: Isolation,
    /// The image of docker mode.
    pub image: String,
}

fn mode_file(dir: &Path) -> PathBuf {
    dir.join("container.json")
}

pub(super) fn save_mode(dir: &Path, mode: &ContainerMode) -> Result<(), ErrorInfo> {
    agentos_actors::holder::write_atomic(
        &mode_file(dir),
        &serde_json::to_vec(mode).unwrap_or_default(),
        0o600,
    )
    .map_err(|e| err(ErrorCode::SpawnFailed, e.to_string()))
}

pub(super) fn load_mode(dir: &Path) -> Option<ContainerMode> {
    serde_json::from_slice(&std::fs::read(mode_file(dir)).ok()?).ok()
}

/// Run a future to completion on a thread of its own (the node's actors
/// must not block their runtime on the engine).
fn on_thread<T: Send + 'static>(
    f: impl FnOnce() -> std::pin::Pin<Box<dyn std::future::Future<Output = T>>> + Send + 'static,
) -> Option<T> {
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .ok()?;
        Some(rt.block_on(f()))
    })
    .join()
    .ok()
    .flatten()
}

fn unavailable(msg: impl Into<String>) -> ErrorInfo {
    err(ErrorCode::IsolationUnavailable, msg)
}

/// Before anything is created: the engine answers, the image is there
/// (docker), the repository has a devcontainer file (devcontainer).
pub(super) fn precheck(level: Isolation, repo_root: &Path, image: &str) -> Result<(), ErrorInfo> {
    if level == Isolation::Devcontainer && devcontainer::find(repo_root).is_none() {
        return Err(unavailable(format!(
            "{} has no .devcontainer/devcontainer.json or .devcontainer.json; add one, or use `--isolation docker` or `worktree`",
            repo_root.display()
        )));
    }
    let image = (level == Isolation::Docker).then(|| image.to_string());
    let r = on_thread(move || {
        Box::pin(async move {
            let d = container::connect().await?;
            if let Some(i) = image {
                container::ensure_image(&d, &i).await?;
            }
            Ok::<(), container::ContainerError>(())
        })
    });
    match r {
        Some(Ok(())) => Ok(()),
        Some(Err(e)) => Err(unavailable(e.to_string())),
        None => Err(unavailable("could not reach the Docker engine")),
    }
}

/// Variables of the host that mean nothing (or leak) inside a container.
const HOST_ONLY: &[&str] = &[
    "PATH",
    "HOME",
    "PWD",
    "OLDPWD",
    "SHELL",
    "USER",
    "LOGNAME",
    "MAIL",
    "TMPDIR",
    "SHLVL",
    "_",
    "SSH_AUTH_SOCK",
    "SSH_AGENT_PID",
    "SSH_CONNECTION",
    "SSH_CLIENT",
    "SSH_TTY",
    "DBUS_SESSION_BUS_ADDRESS",
    "DISPLAY",
    "WAYLAND_DISPLAY",
    "XAUTHORITY",
    "DOCKER_HOST",
    "LS_COLORS",
];

/// The proxy of a container agent is open.
#[derive(Message)]
#[rtype(result = "()")]
struct ContainerUp {
    agent_id: String,
    pid: u32,
    proxy: Option<tokio::task::JoinHandle<()>>,
}

impl Handler<ContainerUp> for NodeActor {
    type Result = ();
    fn handle(&mut self, m: ContainerUp, _: &mut Context<Self>) {
        let name = self
            .agents
            .get(&m.agent_id)
            .map(|e| e.record.name.clone())
            .unwrap_or_default();
        self.audit.do_send(RegisterRun {
            agent_id: m.agent_id.clone(),
            name: name.clone(),
            audit_session: None,
            launcher_pid: m.pid,
        });
        let rt = self.sandboxes.entry(m.agent_id).or_default();
        rt.replace_proxy(m.proxy);
        info!(agent = %name, pid = m.pid, "container up");
    }
}

impl NodeActor {
    /// Write the container plan and make the holder run it.
    pub(super) fn container_launch(
        &mut self,
        record: &AgentRecord,
        mode: &ContainerMode,
        argv: &mut Vec<String>,
        env: &mut Vec<(String, String)>,
        client_env: &[(String, String)],
    ) -> Result<(), ErrorInfo> {
        let Some(w) = &record.worktree else {
            return Err(unavailable("a container agent needs its worktree"));
        };
        let id = record.id.0.clone();
        let dir = self.home.agent_dir(&id);
        let wt = Path::new(&w.path);
        let cfg = crate::config::load(&self.home.config_file(), Some(wt))
            .map_err(|e| err(ErrorCode::ConfigInvalid, e.to_string()))?;
        let sec = &cfg.security;
        let builder = match mode.level {
            Isolation::Devcontainer => {
                let file = devcontainer::find(wt).ok_or_else(|| {
                    unavailable(format!(
                        "{} has no .devcontainer/devcontainer.json or .devcontainer.json",
                        wt.display()
                    ))
                })?;
                let dc = devcontainer::parse(&file).map_err(|e| unavailable(e.to_string()))?;
                PlanBuilder::devcontainer(&id, dc, wt)
            }
            _ => PlanBuilder::docker(&id, &mode.image, wt),
        };
        // Landlock inside the container, on the container's own view.
        let hooks = dir.join("hooks.jsonl");
        if !hooks.exists() {
            let _ = std::fs::write(&hooks, b"");
        }
        let mut read_only: Vec<PathBuf> = agentos_sandbox::SYSTEM_READ_ONLY
            .iter()
            .map(PathBuf::from)
            .collect();
        read_only.push(dir.clone());
        if let Some(d) = self.exe.parent() {
            read_only.push(d.to_path_buf());
        }
        let mut read_write: Vec<PathBuf> = agentos_sandbox::DEVICES_READ_WRITE
            .iter()
            .map(PathBuf::from)
            .collect();
        read_write.extend([
            wt.to_path_buf(),
            PathBuf::from("/tmp"),
            PathBuf::from(CONTAINER_HOME),
            hooks,
        ]);
        if let Ok(repo) = git2::Repository::open(wt) {
            let common = repo.commondir().to_path_buf();
            read_only.push(common.clone());
            read_write.extend([
                common.join("objects"),
                common.join("refs/heads/agentos"),
                common.join("logs/refs/heads/agentos"),
                repo.path().to_path_buf(),
            ]);
        }
        let policy = agentos_sandbox::FilePolicy {
            read_only,
            read_write,
            blocked: vec![],
        };
        let policy_file = dir.join("container-policy.json");
        agentos_actors::holder::write_atomic(
            &policy_file,
            &serde_json::to_vec_pretty(&policy).unwrap_or_default(),
            0o600,
        )
        .map_err(|e| err(ErrorCode::SpawnFailed, e.to_string()))?;
        // The agent's environment, without what only means something on the host.
        let node_socket = dir.join("agent.sock");
        let mut agent_env: Vec<(String, String)> = env
            .iter()
            .filter(|(k, _)| !HOST_ONLY.contains(&k.as_str()) && !k.starts_with("XDG_"))
            .cloned()
            .collect();
        agent_env.retain(|(k, _)| k != "AGENTOS_SOCKET");
        agent_env.push(("AGENTOS_SOCKET".into(), node_socket.display().to_string()));
        agent_env.push(("AGENTOS_SANDBOX".into(), "container".into()));
        // The user's git identity (their ~/.gitconfig is not in the container).
        if let Ok(gc) = git2::Config::open_default() {
            for (key, vars) in [
                ("user.name", ["GIT_AUTHOR_NAME", "GIT_COMMITTER_NAME"]),
                ("user.email", ["GIT_AUTHOR_EMAIL", "GIT_COMMITTER_EMAIL"]),
            ] {
                if let Ok(v) = gc.get_string(key) {
                    for var in vars {
                        if !agent_env.iter().any(|(k, _)| k == var) {
                            agent_env.push((var.into(), v.clone()));
                        }
                    }
                }
            }
        }
        let network = sec.allow_outbound;
        if network {
            agent_env.extend(crate::sandboxing::proxy_env(PROXY_PORT));
        }
        let mut limits = devcontainer::Limits::default();
        let l = super::super::sandboxing::limits(sec)?;
        if let Some(m) = l.max_memory {
            limits.memory_bytes = m as i64;
        }
        if let Some(c) = l.max_cpu_percent {
            limits.nano_cpus = c as i64 * 10_000_000;
        }
        if let Some(p) = l.max_processes {
            limits.pids = p as i64;
        }
        let plan = builder
            .cwd(Path::new(&record.cwd))
            .command(std::mem::take(argv))
            .envs(agent_env)
            .local_env(client_env.iter().cloned())
            .limits(limits)
            .landlock_policy(&policy_file)
            .agentos_exe(&self.exe)
            // Hooks: the settings files, `agentos hook` and the agent's channel at their host paths.
            .bind(&dir, &dir, false)
            .bind(&self.exe, &self.exe, true)
            .build()
            .map_err(|e| unavailable(e.to_string()))?;
        for w in &plan.warnings {
            warn!(agent = %record.name, warning = %w, "container plan");
        }
        let plan_file = dir.join("container-plan.json");
        plan.write(&plan_file)
            .map_err(|e| err(ErrorCode::SpawnFailed, e.to_string()))?;
        let mut rt = super::sandbox_ops::SandboxRuntime::default();
        rt.set_server(self.serve_agent_channel_at(&id, &node_socket)?);
        self.sandboxes.insert(id.clone(), rt);
        *argv = vec![
            self.exe.display().to_string(),
            "container-run".into(),
            "--plan".into(),
            plan_file.display().to_string(),
        ];
        env.retain(|(k, _)| k == "TERM" || k == "LANG" || k == "TZ");
        if network {
            self.open_container_proxy(&id, sec);
        }
        Ok(())
    }

    /// Once the container runs: the proxy inside its network namespace.
    fn open_container_proxy(&self, agent_id: &str, sec: &crate::config::Security) {
        let Some(me) = self.me.clone() else { return };
        let hosts = crate::proxy::HostPolicy {
            allow_outbound: sec.allow_outbound,
            allowed_hosts: sec.allowed_hosts.clone(),
            blocked_hosts: sec.blocked_hosts.clone(),
        };
        let events = self.proxy_events.clone();
        let id = agent_id.to_string();
        actix::spawn(async move {
            let Ok(d) = container::connect().await else {
                return;
            };
            let label = format!("{}={id}", devcontainer::AGENT_LABEL);
            let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
            let pid = loop {
                if tokio::time::Instant::now() > deadline {
                    warn!(agent = %id, "container did not start; no proxy");
                    return;
                }
                if let Ok(ids) = container::list_by_label(&d, &label).await
                    && let Some(cid) = ids.first()
                    && let Ok(Some(pid)) = container::container_pid(&d, cid).await
                    && pid > 0
                {
                    break pid;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            };
            let proxy = match crate::proxy::listen_in_netns(pid, PROXY_PORT) {
                Ok(l) => crate::proxy::spawn_proxy(l, id.clone(), hosts, events).ok(),
                Err(e) => {
                    warn!(agent = %id, error = %e, "cannot open the proxy in the container");
                    None
                }
            };
            me.do_send(ContainerUp {
                agent_id: id,
                pid,
                proxy,
            });
        });
    }

    /// At daemon start: containers of agents whose holder is gone (the
    /// machine rebooted, a runner was killed) are removed, in the background.
    pub(super) fn containers_recover(&self) {
        let orphans: Vec<String> = self
            .agents
            .keys()
            .filter(|id| {
                let dir = self.home.agent_dir(id);
                load_mode(&dir).is_some()
                    && !agentos_actors::holder::AgentDir(dir)
                        .read_record()
                        .is_some_and(|r| Path::new(&format!("/proc/{}", r.holder_pid)).exists())
            })
            .cloned()
            .collect();
        if orphans.is_empty() {
            return;
        }
        actix::spawn(async move {
            let Ok(d) = container::connect().await else {
                return;
            };
            for id in orphans {
                if let Ok(n) = container::remove_by_label(&d, &id).await
                    && n > 0
                {
                    info!(agent = %id, "removed the container of a stopped agent");
                }
            }
        });
    }

    /// Remove the agent's containers (destroy).
    pub(super) fn container_destroyed(&self, agent_id: &str) {
        if load_mode(&self.home.agent_dir(agent_id)).is_none() {
            return;
        }
        let id = agent_id.to_string();
        let r = on_thread(move || {
            Box::pin(async move {
                let d = container::connect().await?;
                container::remove_by_label(&d, &id).await
            })
        });
        if let Some(Err(e)) = r {
            warn!(agent = %agent_id, error = %e, "containers not removed");
        }
    }

    /// `daemon stop --kill-agents`: this node's containers go (only its
    /// own: other nodes on the machine keep theirs).
    pub(super) fn containers_shutdown(&self) {
        let ids: Vec<String> = self
            .agents
            .keys()
            .filter(|id| load_mode(&self.home.agent_dir(id)).is_some())
            .cloned()
            .collect();
        if ids.is_empty() {
            return;
        }
        let _ = on_thread(move || {
            Box::pin(async move {
                if let Ok(d) = container::connect().await {
                    for id in ids {
                        let _ = container::remove_by_label(&d, &id).await;
                    }
                }
            })
        });
    }
}
