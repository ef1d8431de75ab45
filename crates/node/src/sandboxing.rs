//! From an agent and the `[security]` config to its sandbox: the
//! launcher's `SandboxSpec` (files, mounts, network, cgroup), the agent's
//! environment inside it, the proxy's host policy, and the human view that
//! `agentos policy show` prints. Planning touches the filesystem only to
//! look (and to create the agent's own HOME and cgroup); the launcher does
//! the enforcing.

use crate::config::Security;
use crate::proxy::{HostPolicy, PROXY_PORT};
use agentos_proto::{ErrorCode, ErrorInfo, PolicyView};
use agentos_sandbox::cgroup::{AgentCgroup, Limits, parse_size};
use agentos_sandbox::{Bind, FilePolicy, NetworkMode, SandboxSpec};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Everything the node keeps about one agent's sandbox (`sandbox.json` in
/// its run directory, mode 0600).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Plan {
    pub spec: SandboxSpec,
    pub cgroup: Option<AgentCgroup>,
    pub hosts: HostPolicy,
    /// Environment the agent gets on top of its usual one.
    pub env: Vec<(String, String)>,
    /// Variables removed from the agent's environment.
    pub scrub: Vec<String>,
    /// The worktree, for the audit rules.
    pub worktree: PathBuf,
    pub notes: Vec<String>,
}

/// The inputs of a plan.
#[derive(Debug)]
pub struct Inputs<'a> {
    pub agent_id: &'a str,
    pub user_home: &'a Path,
    pub node_home: &'a Path,
    pub agent_dir: &'a Path,
    pub exe: &'a Path,
    pub worktree: &'a Path,
    pub cwd: &'a Path,
    pub path_var: Option<&'a str>,
    pub home_paths: &'a [String],
    pub allow_paths: &'a [String],
    pub security: &'a Security,
}

fn err(msg: impl Into<String>) -> ErrorInfo {
    ErrorInfo::new(ErrorCode::IsolationUnavailable, msg)
}

/// Toolchains installed under the user's home, and the variable that tells
/// them where they live once HOME points elsewhere.
const TOOLCHAINS: &[(&str, &str)] = &[
    (".cargo", "CARGO_HOME"),
    (".rustup", "RUSTUP_HOME"),
    (".pyenv", "PYENV_ROOT"),
    (".nvm", "NVM_DIR"),
    (".bun", "BUN_INSTALL"),
    (".deno", "DENO_INSTALL"),
    (".volta", "VOLTA_HOME"),
    ("go", "GOPATH"),
    (".local", ""),
    (".npm-global", ""),
    ("bin", ""),
];

/// Variables that point at host sockets or agents outside the sandbox.
const SCRUB: &[&str] = &[
    "SSH_AUTH_SOCK",
    "SSH_AGENT_PID",
    "GPG_AGENT_INFO",
    "DBUS_SESSION_BUS_ADDRESS",
    "XDG_RUNTIME_DIR",
    "DOCKER_HOST",
    "TMUX",
    "TMUX_PANE",
    "STY",
    "WAYLAND_DISPLAY",
    "DISPLAY",
    "XAUTHORITY",
];

/// Parse `path[:ro|:rw]`, expanding a leading `~/`.
pub fn parse_allow(entry: &str, user_home: &Path) -> Result<(PathBuf, bool), ErrorInfo> {
    let (path, rw) = match entry.rsplit_once(':') {
        Some((p, "rw")) => (p, true),
        Some((p, "ro")) => (p, false),
        _ => (entry, false),
    };
    let path = if let Some(rest) = path.strip_prefix("~/") {
        user_home.join(rest)
    } else if path == "~" {
        user_home.to_path_buf()
    } else {
        PathBuf::from(path)
    };
    if !path.is_absolute() {
        return Err(ErrorInfo::new(
            ErrorCode::InvalidArgument,
            format!(
                "--allow-path {entry}: use an absolute path (or ~/...), optionally with :ro or :rw"
            ),
        ));
    }
    Ok((path, rw))
}

fn canonical(p: &Path) -> PathBuf {
    p.canonicalize().unwrap_or_else(|_| p.to_path_buf())
}

/// Limits from the config.
pub fn limits(sec: &Security) -> Result<Limits, ErrorInfo> {
    let size = |s: &str| -> Result<Option<u64>, ErrorInfo> {
        if s.is_empty() {
            return Ok(None);
        }
        parse_size(s)
            .map(Some)
            .map_err(|m| ErrorInfo::new(ErrorCode::ConfigInvalid, m))
    };
    Ok(Limits {
        max_memory: size(&sec.max_memory)?,
        max_cpu_percent: (sec.max_cpu_percent > 0).then_some(sec.max_cpu_percent),
        max_processes: (sec.max_processes > 0).then_some(sec.max_processes),
        max_disk_write: size(&sec.max_disk_write)?,
    })
}

/// Check the kernel can give what the sandbox needs; the error names the
/// missing feature and the way out.
pub fn preflight(network: NetworkMode) -> Result<u8, ErrorInfo> {
    let abi = agentos_sandbox::landlock_abi();
    if abi == 0 {
        return Err(err(
            "the sandbox needs Landlock, which this kernel does not offer (Linux 5.13+ with `landlock` in the `lsm=` boot list); the agent was not started",
        ));
    }
    let seccomp = std::fs::read_to_string("/proc/self/status")
        .map(|s| s.lines().any(|l| l.starts_with("Seccomp:")))
        .unwrap_or(false);
    if !seccomp {
        return Err(err(
            "the sandbox needs seccomp, which this kernel does not offer; the agent was not started",
        ));
    }
    // SAFETY: geteuid never fails.
    let root = unsafe { libc::geteuid() } == 0;
    if !root {
        let userns = std::fs::read_to_string("/proc/sys/user/max_user_namespaces")
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .unwrap_or(0);
        let allowed = std::fs::read_to_string("/proc/sys/kernel/unprivileged_userns_clone")
            .map(|s| s.trim() != "0")
            .unwrap_or(true);
        if userns == 0 || !allowed {
            return Err(err(
                "the sandbox needs user namespaces to build the agent's private view (run the node as root, or enable kernel.unprivileged_userns_clone); the agent was not started",
            ));
        }
    }
    // Below ABI 4 the empty network namespace still isolates; only the
    // audit of direct connections is lost, so that is not a refusal.
    let _ = network;
    Ok(abi)
}

/// The variables that send an agent's tools through the proxy on `port`.
pub fn proxy_env(port: u16) -> Vec<(String, String)> {
    let url = format!("http://127.0.0.1:{port}");
    let mut env: Vec<(String, String)> = [
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "http_proxy",
        "https_proxy",
        "all_proxy",
        "npm_config_proxy",
        "npm_config_https_proxy",
        "PIP_PROXY",
    ]
    .iter()
    .map(|k| (k.to_string(), url.clone()))
    .collect();
    env.push(("NO_PROXY".to_string(), String::new()));
    env.push(("no_proxy".to_string(), String::new()));
    env
}

/// Build the plan (creates the agent's HOME and cgroup).
pub fn plan(i: &Inputs<'_>) -> Result<Plan, ErrorInfo> {
    let sec = i.security;
    let network = if !sec.allow_outbound {
        NetworkMode::None
    } else if sec.network == "host" {
        NetworkMode::Host
    } else {
        NetworkMode::Proxy { port: PROXY_PORT }
    };
    preflight(network)?;
    let io = |what: &str, p: &Path, e: std::io::Error| err(format!("{what} {}: {e}", p.display()));
    let mut notes = Vec::new();
    let user_home = canonical(i.user_home);
    let agent_home = i.agent_dir.join("home");
    std::fs::create_dir_all(&agent_home).map_err(|e| io("creating", &agent_home, e))?;
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(&agent_home, std::fs::Permissions::from_mode(0o700));
    }
    let hooks_file = i.agent_dir.join("hooks.jsonl");
    if !hooks_file.exists() {
        std::fs::write(&hooks_file, b"").map_err(|e| io("creating", &hooks_file, e))?;
    }
    let worktree = canonical(i.worktree);
    let mut blocked = agentos_sandbox::default_blocked(&user_home);
    blocked.push(canonical(i.node_home).join("keys"));
    for b in &sec.blocked_paths {
        blocked.push(parse_allow(b, &user_home)?.0);
    }
    // The agent's HOME shows the user's secrets where tools look for them
    // (`~/.ssh`), as links to the real, denied paths: a read fails with
    // "Permission denied" and is audited, instead of a silent "not found".
    for b in &blocked {
        if let Ok(rel) = b.strip_prefix(&user_home) {
            let link = agent_home.join(rel);
            if std::fs::symlink_metadata(&link).is_err() && b.exists() {
                if let Some(parent) = link.parent() {
                    let _ = std::fs::create_dir_all(parent);
                }
                let _ = std::os::unix::fs::symlink(b, &link);
            }
        }
    }
    let mut read_only: Vec<PathBuf> = agentos_sandbox::SYSTEM_READ_ONLY
        .iter()
        .map(PathBuf::from)
        .collect();
    let mut read_write: Vec<PathBuf> = agentos_sandbox::DEVICES_READ_WRITE
        .iter()
        .map(PathBuf::from)
        .collect();
    read_write.extend([worktree.clone(), agent_home.clone(), hooks_file.clone()]);
    // The agent's run directory: its hook settings, read-only.
    read_only.push(i.agent_dir.to_path_buf());
    // The node binary (hooks run it).
    if let Some(dir) = i.exe.parent() {
        read_only.push(canonical(dir));
    }
    // Toolchains on PATH. Under the user's home, grant the toolchain's root
    // (`~/.cargo`), never the home itself.
    let mut env: Vec<(String, String)> = Vec::new();
    let mut toolchain_roots: Vec<PathBuf> = Vec::new();
    for dir in i
        .path_var
        .unwrap_or("")
        .split(':')
        .filter(|d| !d.is_empty())
    {
        let d = canonical(Path::new(dir));
        if !d.is_dir() {
            continue;
        }
        if let Ok(rel) = d.strip_prefix(&user_home) {
            let Some(first) = rel.components().next() else {
                continue; // $HOME itself on PATH: never granted
            };
            let root = user_home.join(first.as_os_str());
            if !toolchain_roots.contains(&root) {
                toolchain_roots.push(root);
            }
        } else {
            read_only.push(d);
        }
    }
    if toolchain_roots.contains(&user_home.join(".cargo")) {
        toolchain_roots.push(user_home.join(".rustup"));
    }
    for root in &toolchain_roots {
        if !root.exists() || blocked.iter().any(|b| b.starts_with(root)) {
            continue;
        }
        read_only.push(root.clone());
        let name = root
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default();
        if let Some((_, var)) = TOOLCHAINS.iter().find(|(n, _)| *n == name)
            && !var.is_empty()
        {
            env.push((var.to_string(), root.display().to_string()));
        }
    }
    // Git: the repository's common directory is readable; the agent may
    // write objects, its own worktree's admin files and the agentos/ refs
    // and their logs, but never hooks/, config, or other branches.
    let mut read_only_binds = Vec::new();
    let mut keep = vec![worktree.clone(), i.agent_dir.to_path_buf()];
    if let Ok(repo) = git2::Repository::open(&worktree) {
        let common = canonical(repo.commondir());
        let admin = canonical(repo.path());
        let own_ref = repo.head().ok().and_then(|h| h.name().map(str::to_owned));
        let agentos_refs = common.join("refs/heads/agentos");
        let agentos_logs = common.join("logs/refs/heads/agentos");
        for d in [&agentos_refs, &agentos_logs] {
            std::fs::create_dir_all(d).map_err(|e| io("creating", d, e))?;
        }
        read_only.push(common.clone());
        read_write.extend([
            common.join("objects"),
            agentos_refs.clone(),
            agentos_logs.clone(),
        ]);
        if admin != common {
            read_write.push(admin);
        }
        // Other agents' branches: make their ref files read-only.
        if let Ok(entries) = std::fs::read_dir(&agentos_refs) {
            for e in entries.flatten() {
                let p = e.path();
                let name = format!("refs/heads/agentos/{}", e.file_name().to_string_lossy());
                if Some(&name) != own_ref.as_ref() && p.is_file() {
                    read_only_binds.push(p);
                }
            }
        }
        keep.push(common);
    }
    // Allow-list extensions.
    for entry in sec.allow_paths.iter().chain(i.allow_paths) {
        let (p, rw) = parse_allow(entry, &user_home)?;
        let p = canonical(&p);
        if rw {
            read_write.push(p.clone());
        } else {
            read_only.push(p.clone());
        }
        keep.push(p);
    }
    // The agent tool's own configuration, seen in its HOME.
    let mut binds = Vec::new();
    for rel in i.home_paths.iter().chain(&sec.home_paths) {
        let source = user_home.join(rel);
        if blocked
            .iter()
            .any(|b| source.starts_with(b) || b.starts_with(&source))
        {
            notes.push(format!("home path {rel} is blocked; not shared"));
            continue;
        }
        if source.exists() {
            binds.push(Bind {
                source,
                target: agent_home.join(rel),
                read_only: false,
            });
        }
    }
    for rel in [".gitconfig", ".config/git"] {
        let source = user_home.join(rel);
        if source.exists() {
            binds.push(Bind {
                source,
                target: agent_home.join(rel),
                read_only: true,
            });
        }
    }
    // Blocked paths stay visible where they are, so that reaching for them
    // is denied and audited by Landlock rather than silently missing.
    keep.extend(blocked.iter().filter(|b| b.exists()).cloned());
    // Anything granted that a mask would hide stays visible.
    keep.extend(
        read_only
            .iter()
            .filter(|p| p.starts_with("/tmp") || p.starts_with("/run"))
            .cloned(),
    );
    // The private temporary directories. Landlock rules cover everything
    // mounted below them, so a private tmpfs that also re-exposes a kept
    // path (a repository under /tmp) is not granted whole: the agent gets
    // its own directory inside it instead.
    let mut private_dirs = Vec::new();
    let mut tmpdir = PathBuf::from("/tmp");
    for t in ["/tmp", "/var/tmp", "/dev/shm"] {
        let t = PathBuf::from(t);
        if keep.iter().any(|k| k.starts_with(&t)) {
            let own = t.join(format!("agentos-{}", i.agent_id));
            if t == Path::new("/tmp") {
                tmpdir = own.clone();
                notes.push(format!(
                    "a kept path lies under /tmp, so the agent's tmp is {} (TMPDIR)",
                    own.display()
                ));
            }
            private_dirs.push(own.clone());
            read_write.push(own);
        } else {
            read_write.push(t);
        }
    }
    let files = FilePolicy {
        read_only,
        read_write,
        blocked,
    };
    let mask: Vec<PathBuf> = ["/tmp", "/var/tmp", "/run", "/dev/shm"]
        .iter()
        .map(PathBuf::from)
        .chain([canonical(i.node_home)])
        .collect();
    files.check(&mask).map_err(|e| err(e.to_string()))?;
    let limits = limits(sec)?;
    // SAFETY: geteuid never fails.
    let root = unsafe { libc::geteuid() } == 0;
    let cgroup = match AgentCgroup::create(i.agent_id, &limits, &worktree) {
        Ok(c) => {
            notes.extend(c.notes.iter().cloned());
            Some(c)
        }
        // Without root and without a delegated cgroup, the built-in default
        // limit cannot apply; limits the user asked for fail closed.
        Err(e) if !root && limits == self::limits(&Security::default())? => {
            notes.push(format!(
                "no per-agent limits: {e} (the node is not root and has no delegated cgroup)"
            ));
            None
        }
        Err(e) => return Err(err(e.to_string())),
    };
    let node_socket = i.agent_dir.join("agent.sock");
    env.extend([
        ("HOME".to_string(), agent_home.display().to_string()),
        ("TMPDIR".to_string(), tmpdir.display().to_string()),
        (
            "AGENTOS_SOCKET".to_string(),
            node_socket.display().to_string(),
        ),
        ("AGENTOS_SANDBOX".to_string(), "1".to_string()),
    ]);
    if let NetworkMode::Proxy { port } = network {
        env.extend(proxy_env(port));
    }
    let hosts = HostPolicy {
        allow_outbound: sec.allow_outbound,
        allowed_hosts: sec.allowed_hosts.clone(),
        blocked_hosts: sec.blocked_hosts.clone(),
    };
    let spec = SandboxSpec {
        agent_id: i.agent_id.to_string(),
        files,
        mask,
        keep,
        private_dirs,
        blocked_globs: sec.blocked_globs.clone(),
        worktree: Some(worktree.clone()),
        binds,
        read_only_binds,
        network,
        cgroup_procs: cgroup.as_ref().map(|c| c.procs_files()).unwrap_or_default(),
        seccomp: true,
        node_socket,
        cwd: canonical(i.cwd),
    };
    Ok(Plan {
        spec,
        cgroup,
        hosts,
        env,
        scrub: SCRUB.iter().map(|s| s.to_string()).collect(),
        worktree,
        notes,
    })
}

impl Plan {
    /// Where the plan lives.
    pub fn path(agent_dir: &Path) -> PathBuf {
        agent_dir.join("sandbox.json")
    }

    pub fn load(agent_dir: &Path) -> Option<Plan> {
        serde_json::from_slice(&std::fs::read(Self::path(agent_dir)).ok()?).ok()
    }

    /// The launcher's own file (just the spec).
    pub fn spec_path(agent_dir: &Path) -> PathBuf {
        agent_dir.join("sandbox-spec.json")
    }

    pub fn save(&self, agent_dir: &Path) -> Result<(), ErrorInfo> {
        let write = |p: PathBuf, data: Vec<u8>| {
            agentos_actors::holder::write_atomic(&p, &data, 0o600)
                .map_err(|e| err(format!("writing {}: {e}", p.display())))
        };
        write(
            Self::path(agent_dir),
            serde_json::to_vec_pretty(self).unwrap_or_default(),
        )?;
        write(
            Self::spec_path(agent_dir),
            serde_json::to_vec_pretty(&self.spec).unwrap_or_default(),
        )
    }

    /// What `agentos policy show` prints.
    pub fn view(&self, agent: &str, audit: &str) -> PolicyView {
        let show = |v: &[PathBuf]| v.iter().map(|p| p.display().to_string()).collect();
        let mut limits = Vec::new();
        if let Some(cg) = &self.cgroup {
            let l = &cg.limits;
            let mib = |b: u64| format!("{} MiB", b >> 20);
            limits.push((
                "max_memory".into(),
                l.max_memory.map(mib).unwrap_or_else(|| "none".into()),
            ));
            limits.push((
                "max_cpu_percent".into(),
                l.max_cpu_percent
                    .map(|c| format!("{c}%"))
                    .unwrap_or_else(|| "none".into()),
            ));
            limits.push((
                "max_processes".into(),
                l.max_processes
                    .map(|p| p.to_string())
                    .unwrap_or_else(|| "none".into()),
            ));
            limits.push((
                "max_disk_write".into(),
                l.max_disk_write
                    .map(|b| format!("{}/s", mib(b)))
                    .unwrap_or_else(|| "none".into()),
            ));
            limits.push((
                "cgroup".into(),
                format!(
                    "{:?} {}",
                    cg.version,
                    cg.dirs
                        .iter()
                        .map(|d| d.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
        }
        PolicyView {
            agent: agent.to_string(),
            sandboxed: true,
            reason: String::new(),
            read_only: show(&self.spec.files.read_only),
            read_write: show(&self.spec.files.read_write),
            blocked: show(&self.spec.files.blocked),
            hidden: show(&self.spec.mask),
            network: match self.spec.network {
                NetworkMode::Host => "host network, unfiltered".into(),
                NetworkMode::Proxy { port } => {
                    format!("empty network namespace; only the node's proxy at 127.0.0.1:{port}")
                }
                NetworkMode::None => "empty network namespace; no way out".into(),
            },
            allowed_hosts: self.hosts.allowed_hosts.clone(),
            blocked_hosts: self.hosts.blocked_hosts.clone(),
            limits,
            notes: self.notes.clone(),
            landlock_abi: agentos_sandbox::landlock_abi(),
            seccomp: self.spec.seccomp,
            audit: audit.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allow_path_syntax() {
        let h = Path::new("/home/u");
        assert_eq!(
            parse_allow("~/data:rw", h).unwrap(),
            (PathBuf::from("/home/u/data"), true)
        );
        assert_eq!(
            parse_allow("/opt/x", h).unwrap(),
            (PathBuf::from("/opt/x"), false)
        );
        assert_eq!(
            parse_allow("/opt/x:ro", h).unwrap(),
            (PathBuf::from("/opt/x"), false)
        );
        assert!(parse_allow("rel/path", h).is_err());
    }
}
