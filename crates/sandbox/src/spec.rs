//! What the launcher is told to do: the whole sandbox of one agent, written
//! by the node as `sandbox.json` in the agent's run directory and read by
//! `agentos sandbox-exec` before it execs the agent.

use crate::FilePolicy;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// The network the agent sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NetworkMode {
    /// The host's network, unfiltered (`allow_outbound` with `[security]
    /// network = "host"`; never the default).
    Host,
    /// An empty network namespace whose only way out is the node's proxy on
    /// `127.0.0.1:<port>`, created inside it by the node.
    Proxy { port: u16 },
    /// An empty network namespace with nothing in it (`allow_outbound = false`).
    None,
}

/// A path bound into the agent's view at another place (its own HOME holds
/// the agent tool's configuration from the user's HOME).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bind {
    pub source: PathBuf,
    pub target: PathBuf,
    pub read_only: bool,
}

/// The complete description of one agent's sandbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SandboxSpec {
    pub agent_id: String,
    /// Landlock: what may be read and written; everything else is denied
    /// (and each denial is logged by the kernel's audit).
    pub files: FilePolicy,
    /// Directories hidden behind an empty tmpfs (`/tmp`, `/run`, the node's
    /// home): their Unix sockets (docker.sock, tmux, D-Bus, the node's own
    /// control socket) disappear, which Landlock alone cannot do.
    pub mask: Vec<PathBuf>,
    /// Paths under a masked directory that stay visible at the same place
    /// (the worktree, the repository's `.git`, the agent's run directory).
    pub keep: Vec<PathBuf>,
    /// Directories the launcher creates after masking (the agent's own
    /// tmp inside a private tmpfs that also re-exposes kept paths).
    #[serde(default)]
    pub private_dirs: Vec<PathBuf>,
    /// Blocked file names inside the worktree (`.env`, `*.pem`…). As root
    /// the node enforces them with fanotify on the worktree's own mount;
    /// otherwise the launcher covers existing matches with `/dev/null`.
    #[serde(default)]
    pub blocked_globs: Vec<String>,
    /// The agent's worktree (made a mount of its own).
    #[serde(default)]
    pub worktree: Option<PathBuf>,
    /// Extra binds, made after masking.
    pub binds: Vec<Bind>,
    /// Paths made read-only by a bind mount (other agents' branch refs).
    pub read_only_binds: Vec<PathBuf>,
    pub network: NetworkMode,
    /// `cgroup.procs` files the launcher writes itself into, first.
    pub cgroup_procs: Vec<PathBuf>,
    /// Install the seccomp filter.
    pub seccomp: bool,
    /// The agent's restricted channel to the node (hooks and the start
    /// handshake), bound at `$AGENTOS_SOCKET` inside the sandbox.
    pub node_socket: PathBuf,
    /// Working directory of the agent.
    pub cwd: PathBuf,
}
