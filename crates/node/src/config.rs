//! Configuration: `$AGENTOS_HOME/config.toml`, overridden by a project's
//! `.agentos/config.toml`. Every key has an embedded default, so nothing needs
//! configuring. Unknown keys are errors (a typo must not pass silently).

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub general: General,
    pub terminal: Terminal,
    pub daemon: Daemon,
    /// A project's own `[workspace]` table (id shared by all clones).
    pub workspace: Workspace,
    pub isolation: IsolationConfig,
    pub security: Security,
    pub sync: SyncConfig,
    pub web: WebConfig,
}

/// `[web]`: the node's HTTP/WebSocket server (web client, REST API,
/// `/health`, `/metrics`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebConfig {
    /// Address to bind (`AGENTOS_WEB_LISTEN` overrides). Loopback is plain
    /// HTTP; any other address turns on TLS.
    pub listen: String,
    /// Turn the server off.
    pub enabled: bool,
    /// The address put into share links when it differs from `listen`
    /// (a LAN name, a reverse proxy): `https://host:port`.
    pub public_url: Option<String>,
    /// PEM certificate and key to use instead of the self-signed pair the
    /// node generates under `$AGENTOS_HOME/web/`.
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

impl Default for WebConfig {
    fn default() -> Self {
        WebConfig {
            listen: "127.0.0.1:7890".into(),
            enabled: true,
            public_url: None,
            cert: None,
            key: None,
        }
    }
}

/// `[sync]`: this device on the network.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SyncConfig {
    /// The libp2p listen address (`/ip4/0.0.0.0/tcp/0`: any free port).
    pub listen: String,
    /// Find paired devices on the LAN (mDNS, `_agentos._tcp`… as libp2p's
    /// `_p2p._udp` service). Discovery never grants trust.
    pub mdns: bool,
    /// A home relay (`/ip4/…/tcp/8765/p2p/…`, or `host:port`); `agentos
    /// sync connect` sets one too.
    pub relay: Option<String>,
    /// This device's name in `agentos devices` (default: the host name).
    pub device_name: Option<String>,
    /// Turn the P2P node off entirely.
    pub enabled: bool,
}

impl Default for SyncConfig {
    fn default() -> Self {
        SyncConfig {
            listen: "/ip4/0.0.0.0/tcp/0".into(),
            mdns: true,
            relay: None,
            device_name: None,
            enabled: true,
        }
    }
}

/// `[security]`: the sandbox of agents in worktrees. A project's own
/// `.agentos/config.toml` is repository content, so it may only tighten
/// this (add blocked hosts and paths, lower limits), never loosen it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Security {
    /// Extra allowed paths, `path[:ro|:rw]` (read-only by default).
    pub allow_paths: Vec<String>,
    /// Extra blocked paths, on top of the built-in list.
    pub blocked_paths: Vec<String>,
    /// `false` cuts agents off the network entirely.
    pub allow_outbound: bool,
    /// When not empty, the only hosts agents may reach (`github.com`, `*.npmjs.org`).
    pub allowed_hosts: Vec<String>,
    /// Hosts agents may never reach; wins over `allowed_hosts`.
    pub blocked_hosts: Vec<String>,
    /// `proxy` (an empty network namespace plus the node's filtering proxy)
    /// or `host` (the host's network, unfiltered; an explicit opt-out).
    pub network: String,
    /// Memory per agent (`2G`); empty for none.
    pub max_memory: String,
    /// CPU per agent in percent of one core (`150`); 0 for none.
    pub max_cpu_percent: u32,
    /// Processes per agent; 0 for none.
    pub max_processes: u64,
    /// Disk writes per agent per second (`50M`), where the kernel allows it.
    pub max_disk_write: String,
    /// Paths in the user's home each agent type sees in its own HOME, in
    /// addition to its definition's (`.config/foo`).
    pub home_paths: Vec<String>,
    /// File names an agent may not open inside its worktree (`*` matches
    /// anything): `.env`, `.env.*`, `*.pem`, `*.key`, `secrets.*`, …
    pub blocked_globs: Vec<String>,
}

impl Default for Security {
    fn default() -> Self {
        Security {
            allow_paths: vec![],
            blocked_paths: vec![],
            allow_outbound: true,
            allowed_hosts: vec![],
            blocked_hosts: vec![],
            network: "proxy".into(),
            max_memory: String::new(),
            max_cpu_percent: 0,
            max_processes: 4096,
            max_disk_write: String::new(),
            home_paths: vec![],
            blocked_globs: agentos_sandbox::fanotify::DEFAULT_GLOBS
                .iter()
                .map(|s| s.to_string())
                .collect(),
        }
    }
}

impl Security {
    /// Apply a project's `[security]` keys, only in the tightening direction.
    fn tighten(&mut self, project: &Security, keys: &toml::Table) {
        let set = |k: &str| keys.contains_key(k);
        if set("blocked_paths") {
            self.blocked_paths
                .extend(project.blocked_paths.iter().cloned());
        }
        if set("blocked_globs") {
            self.blocked_globs
                .extend(project.blocked_globs.iter().cloned());
        }
        if set("blocked_hosts") {
            self.blocked_hosts
                .extend(project.blocked_hosts.iter().cloned());
        }
        if set("allow_outbound") {
            self.allow_outbound &= project.allow_outbound;
        }
        if set("allowed_hosts") && self.allowed_hosts.is_empty() {
            // An allow-list where there was none narrows.
            self.allowed_hosts = project.allowed_hosts.clone();
        }
        if set("network") && project.network == "proxy" {
            self.network = "proxy".into();
        }
        let min = |a: u64, b: u64| match (a, b) {
            (0, b) => b,
            (a, 0) => a,
            (a, b) => a.min(b),
        };
        if set("max_processes") {
            self.max_processes = min(self.max_processes, project.max_processes);
        }
        if set("max_cpu_percent") {
            self.max_cpu_percent =
                min(self.max_cpu_percent as u64, project.max_cpu_percent as u64) as u32;
        }
        let size = |s: &str| agentos_sandbox::cgroup::parse_size(s).unwrap_or(0);
        if set("max_memory") && !project.max_memory.is_empty() {
            let (a, b) = (size(&self.max_memory), size(&project.max_memory));
            if a == 0 || (b > 0 && b < a) {
                self.max_memory = project.max_memory.clone();
            }
        }
        if set("max_disk_write") && !project.max_disk_write.is_empty() {
            let (a, b) = (size(&self.max_disk_write), size(&project.max_disk_write));
            if a == 0 || (b > 0 && b < a) {
                self.max_disk_write = project.max_disk_write.clone();
            }
        }
    }

    /// Check values a type cannot (sizes, the network mode).
    pub fn validate(&self) -> Result<(), String> {
        for s in [&self.max_memory, &self.max_disk_write] {
            if !s.is_empty() {
                agentos_sandbox::cgroup::parse_size(s)?;
            }
        }
        if self.network != "proxy" && self.network != "host" {
            return Err(format!(
                "security.network must be \"proxy\" or \"host\", not \"{}\"",
                self.network
            ));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IsolationConfig {
    /// `auto` (a worktree inside a git repository, else none), `none`,
    /// `worktree`, `devcontainer` or `docker`.
    pub default: String,
    /// Where worktrees go, relative to the repository's main work tree;
    /// `{agent}` and `{name}` are replaced.
    pub worktree_path: String,
    /// The image `--isolation docker` runs agents in (it must be in the
    /// local engine: nothing is pulled).
    pub docker_image: String,
}

impl Default for IsolationConfig {
    fn default() -> Self {
        IsolationConfig {
            default: "auto".into(),
            worktree_path: crate::worktree::DEFAULT_TEMPLATE.into(),
            docker_image: "debian:bookworm-slim".into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct General {
    /// Agent type used by `agentos create <name>` without `--agent` or `--`.
    pub default_agent: String,
    /// The detach key of `agentos attach`, tmux notation (`C-b d`, `C-a q`, `C-\`).
    pub detach_key: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Terminal {
    /// Size used when an agent is created without a terminal (`--detach` from a script).
    pub default_cols: u16,
    pub default_rows: u16,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Daemon {
    /// `error`, `warn`, `info`, `debug` or `trace`; `AGENTOS_LOG_LEVEL` overrides.
    pub log_level: String,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Workspace {
    pub id: Option<String>,
}

impl Default for General {
    fn default() -> Self {
        General {
            default_agent: "shell".into(),
            detach_key: "C-b d".into(),
        }
    }
}

impl Default for Terminal {
    fn default() -> Self {
        Terminal {
            default_cols: 120,
            default_rows: 40,
        }
    }
}

impl Default for Daemon {
    fn default() -> Self {
        Daemon {
            log_level: "info".into(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid config {path}: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("unknown config key `{0}`")]
    UnknownKey(String),
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

fn read_table(path: &Path) -> Result<Option<toml::Table>, ConfigError> {
    match std::fs::read_to_string(path) {
        Ok(s) => s
            .parse::<toml::Table>()
            .map(Some)
            .map_err(|e| ConfigError::Invalid {
                path: path.to_path_buf(),
                message: e.to_string(),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(ConfigError::Read {
            path: path.to_path_buf(),
            source,
        }),
    }
}

fn merge(base: &mut toml::Table, over: toml::Table) {
    for (k, v) in over {
        match (base.get_mut(&k), v) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge(b, o),
            (_, v) => {
                base.insert(k, v);
            }
        }
    }
}

fn parse(table: toml::Table, path: &Path) -> Result<Config, ConfigError> {
    toml::Value::Table(table)
        .try_into()
        .map_err(|e: toml::de::Error| ConfigError::Invalid {
            path: path.to_path_buf(),
            message: e.message().to_string(),
        })
}

/// The project config file for a directory: the nearest `.agentos/config.toml`
/// at or above `dir`.
pub fn project_config_path(dir: &Path) -> Option<PathBuf> {
    dir.ancestors()
        .map(|d| d.join(".agentos").join("config.toml"))
        .find(|p| p.is_file())
}

/// Load the global config, then the project override for `project_dir`.
/// The project's `[security]` can only tighten the global one.
pub fn load(global: &Path, project_dir: Option<&Path>) -> Result<Config, ConfigError> {
    let mut table = toml::Table::new();
    let mut global_cfg = Config::default();
    if let Some(t) = read_table(global)? {
        global_cfg = parse(t.clone(), global)?;
        merge(&mut table, t);
    }
    let invalid = |path: &Path, message: String| ConfigError::Invalid {
        path: path.to_path_buf(),
        message,
    };
    global_cfg
        .security
        .validate()
        .map_err(|m| invalid(global, m))?;
    if let Some(p) = project_dir.and_then(project_config_path) {
        let mut cfg = global_cfg.clone();
        if let Some(t) = read_table(&p)? {
            let project = parse(t.clone(), &p)?;
            project.security.validate().map_err(|m| invalid(&p, m))?;
            let mut t = t;
            let sec = match t.remove("security") {
                Some(toml::Value::Table(s)) => s,
                _ => toml::Table::new(),
            };
            merge(&mut table, t);
            table.remove("security");
            cfg = parse(table, &p)?;
            cfg.security = global_cfg.security.clone();
            cfg.security.tighten(&project.security, &sec);
        }
        return Ok(cfg);
    }
    parse(table, global)
}

/// `agentos config get <key>` on the effective config.
pub fn get(cfg: &Config, key: &str) -> Result<toml::Value, ConfigError> {
    let v = toml::Value::try_from(cfg).map_err(|e| ConfigError::Invalid {
        path: PathBuf::from("<effective>"),
        message: e.to_string(),
    })?;
    let mut cur = &v;
    for part in key.split('.') {
        cur = cur
            .get(part)
            .ok_or_else(|| ConfigError::UnknownKey(key.to_string()))?;
    }
    Ok(cur.clone())
}

/// `agentos config set <key> <value>` on the global file. The value is parsed
/// as TOML (so `42`, `true`, `"x"` work), falling back to a plain string.
pub fn set(global: &Path, key: &str, raw: &str) -> Result<(), ConfigError> {
    // The key must exist in the schema.
    get(&Config::default(), key)?;
    let mut table = read_table(global)?.unwrap_or_default();
    let value = format!("v = {raw}")
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_string()));
    let parts: Vec<&str> = key.split('.').collect();
    let mut cur = &mut table;
    for p in &parts[..parts.len() - 1] {
        let entry = cur
            .entry(p.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        cur = entry
            .as_table_mut()
            .ok_or_else(|| ConfigError::UnknownKey(key.to_string()))?;
    }
    cur.insert(parts[parts.len() - 1].to_string(), value);
    parse(table.clone(), global)?;
    if let Some(dir) = global.parent() {
        std::fs::create_dir_all(dir).map_err(|source| ConfigError::Write {
            path: global.to_path_buf(),
            source,
        })?;
    }
    std::fs::write(global, toml::to_string_pretty(&table).unwrap_or_default()).map_err(|source| {
        ConfigError::Write {
            path: global.to_path_buf(),
            source,
        }
    })
}

/// Parse a detach key like `C-b d` into the byte sequence typed for it.
pub fn parse_detach_key(spec: &str) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    for part in spec.split_whitespace() {
        if let Some(k) = part.strip_prefix("C-").or_else(|| part.strip_prefix("^")) {
            let c = k
                .chars()
                .next()
                .filter(|_| k.chars().count() == 1)
                .ok_or_else(|| format!("bad key `{part}` in `{spec}`: expected C-<char>"))?;
            let b = c.to_ascii_lowercase() as u32;
            let code = match c {
                '@' => 0,
                '[' => 0x1b,
                '\\' => 0x1c,
                ']' => 0x1d,
                _ if (b'a' as u32..=b'z' as u32).contains(&b) => b - b'a' as u32 + 1,
                _ => return Err(format!("unsupported control key `{part}`")),
            };
            out.push(code as u8);
        } else if part.chars().count() == 1 && part.is_ascii() {
            out.extend_from_slice(part.as_bytes());
        } else {
            return Err(format!("bad key `{part}` in `{spec}`"));
        }
    }
    if out.is_empty() {
        return Err("empty detach key".into());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_need_no_file() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = load(&dir.path().join("config.toml"), None).unwrap();
        assert_eq!(cfg, Config::default());
    }

    #[test]
    fn project_overrides_global_and_unknown_keys_fail() {
        let dir = tempfile::tempdir().unwrap();
        let global = dir.path().join("config.toml");
        std::fs::write(
            &global,
            "[general]\ndefault_agent = \"claude\"\ndetach_key = \"C-a d\"\n",
        )
        .unwrap();
        let proj = dir.path().join("proj");
        std::fs::create_dir_all(proj.join(".agentos")).unwrap();
        std::fs::write(
            proj.join(".agentos/config.toml"),
            "[general]\ndefault_agent = \"codex\"\n",
        )
        .unwrap();
        let cfg = load(&global, Some(&proj.join("sub"))).unwrap();
        assert_eq!(cfg.general.default_agent, "codex");
        assert_eq!(cfg.general.detach_key, "C-a d");
        std::fs::write(&global, "[general]\ndefualt_agent = 1\n").unwrap();
        let err = load(&global, None).unwrap_err().to_string();
        assert!(err.contains("defualt_agent"), "{err}");
    }

    #[test]
    fn a_project_can_only_tighten_security() {
        let dir = tempfile::tempdir().unwrap();
        let global = dir.path().join("config.toml");
        std::fs::write(
            &global,
            "[security]\nmax_processes = 100\nallowed_hosts = []\nallow_paths = [\"/opt/x\"]\n",
        )
        .unwrap();
        let proj = dir.path().join("proj");
        std::fs::create_dir_all(proj.join(".agentos")).unwrap();
        std::fs::write(
            proj.join(".agentos/config.toml"),
            "[security]\nmax_processes = 5000\nallow_paths = [\"/\"]\nnetwork = \"host\"\nblocked_hosts = [\"evil.com\"]\nmax_memory = \"1G\"\n",
        )
        .unwrap();
        let cfg = load(&global, Some(&proj)).unwrap();
        assert_eq!(cfg.security.max_processes, 100);
        assert_eq!(cfg.security.allow_paths, vec!["/opt/x".to_string()]);
        assert_eq!(cfg.security.network, "proxy");
        assert_eq!(cfg.security.blocked_hosts, vec!["evil.com".to_string()]);
        assert_eq!(cfg.security.max_memory, "1G");
        std::fs::write(&global, "[security]\nmax_memory = \"lots\"\n").unwrap();
        assert!(load(&global, None).is_err());
    }

    #[test]
    fn set_and_get() {
        let dir = tempfile::tempdir().unwrap();
        let global = dir.path().join("config.toml");
        set(&global, "terminal.default_cols", "100").unwrap();
        set(&global, "general.default_agent", "aider").unwrap();
        let cfg = load(&global, None).unwrap();
        assert_eq!(cfg.terminal.default_cols, 100);
        assert_eq!(
            get(&cfg, "general.default_agent").unwrap().as_str(),
            Some("aider")
        );
        assert!(set(&global, "nope.key", "1").is_err());
        assert!(set(&global, "terminal.default_cols", "\"wide\"").is_err());
    }

    #[test]
    fn detach_keys() {
        assert_eq!(parse_detach_key("C-b d").unwrap(), vec![2, b'd']);
        assert_eq!(parse_detach_key("C-\\").unwrap(), vec![0x1c]);
        assert!(parse_detach_key("Ctrl-b").is_err());
    }
}
