//! Plain data records (agents, sessions, states, comments) read from and
//! written to the document.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// Identity of one replica (device/process) writing to the document.
///
/// Every concurrently writing replica must use a distinct id. The all-zero id
/// is reserved for the deterministic genesis change and should not be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ActorId(pub [u8; 16]);

impl From<ActorId> for automerge::ActorId {
    fn from(a: ActorId) -> Self {
        automerge::ActorId::from(a.0)
    }
}

/// Stable, unique identifier of an agent (the key of the `agents` map).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct AgentId(pub String);

impl AgentId {
    /// Borrow the id as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for AgentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for AgentId {
    fn from(s: &str) -> Self {
        AgentId(s.to_owned())
    }
}

impl From<String> for AgentId {
    fn from(s: String) -> Self {
        AgentId(s)
    }
}

/// Lifecycle state of an agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AgentState {
    /// Process spawned, not yet known to be working.
    Starting,
    /// Actively working.
    Running,
    /// Done with its turn, waiting for new input.
    Idle,
    /// Blocked on the user (permission prompt, question, ...).
    Waiting,
    /// Process exited with the given code.
    Exited {
        /// Exit code of the process.
        code: i32,
    },
    /// Agent failed.
    Error {
        /// Human readable description.
        message: String,
    },
}

impl AgentState {
    /// Short lowercase label, also used as the `kind` stored in the document.
    pub fn label(&self) -> &'static str {
        match self {
            AgentState::Starting => "starting",
            AgentState::Running => "running",
            AgentState::Idle => "idle",
            AgentState::Waiting => "waiting",
            AgentState::Exited { .. } => "exited",
            AgentState::Error { .. } => "error",
        }
    }

    /// Whether the agent can no longer change state on its own
    /// ([`AgentState::Exited`] or [`AgentState::Error`]).
    pub fn is_terminal(&self) -> bool {
        matches!(self, AgentState::Exited { .. } | AgentState::Error { .. })
    }
}

impl fmt::Display for AgentState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AgentState::Exited { code } => write!(f, "exited({code})"),
            AgentState::Error { message } => write!(f, "error: {message}"),
            other => f.write_str(other.label()),
        }
    }
}

/// One observed state change of an agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StateTransition {
    /// The new state.
    pub state: AgentState,
    /// What detected it, e.g. `"hook:Stop"`, `"osc9"`, `"screen:rule-name"`, `"process"`.
    pub source: String,
    /// Wall clock time of the observation, in milliseconds since the Unix epoch.
    pub at_ms: u64,
}

impl StateTransition {
    /// The implicit state of an agent without any recorded transition:
    /// `Starting`, source `"process"`.
    pub fn initial(at_ms: u64) -> Self {
        StateTransition {
            state: AgentState::Starting,
            source: "process".to_owned(),
            at_ms,
        }
    }
}

/// The current state of an agent is simply its latest transition.
pub type StateRecord = StateTransition;

/// An agent as stored in the workspace document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentRecord {
    /// Unique id (map key in the document).
    pub id: AgentId,
    /// Human friendly name, unique among live agents by convention.
    pub name: String,
    /// Agent flavour, e.g. `"claude-code"`.
    pub agent_type: String,
    /// Command line (program and arguments).
    pub command: Vec<String>,
    /// Working directory.
    pub cwd: String,
    /// Workspace the agent belongs to.
    pub workspace: String,
    /// Device hosting the agent's process.
    pub host_device: String,
    /// Extra environment. Stored as a map: read back sorted by key, with
    /// duplicate keys collapsed (last one written wins).
    pub env: Vec<(String, String)>,
    /// Creation time, milliseconds since the Unix epoch.
    pub created_at_ms: u64,
    /// Process id on the host device, if running.
    pub pid: Option<u32>,
    /// Id used to resume the agent's conversation.
    pub resume_id: Option<String>,
    /// Tombstone: when the agent was removed. Agents are never deleted.
    pub removed_at_ms: Option<u64>,
    /// The git worktree the agent works in, when it has one.
    #[serde(default)]
    pub worktree: Option<WorktreeRecord>,
    /// Derived on read: the latest transition (or [`StateTransition::initial`]
    /// at `created_at_ms`). Ignored by [`crate::WorkspaceDoc::upsert_agent`].
    pub state: StateRecord,
    /// Derived on read: all transitions, stably sorted by `at_ms` (ties keep
    /// list order). Ignored by [`crate::WorkspaceDoc::upsert_agent`].
    pub transitions: Vec<StateTransition>,
}

impl AgentRecord {
    /// Whether the agent has been tombstoned.
    pub fn is_removed(&self) -> bool {
        self.removed_at_ms.is_some()
    }
}

/// An agent's git worktree: where it is, its branch, and what it started from.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct WorktreeRecord {
    /// The repository's main work tree.
    pub repo_root: String,
    pub path: String,
    pub branch: String,
    /// The commit the worktree was created from (diffs are against it).
    pub base_sha: String,
    /// The branch checked out at creation: where `merge` goes.
    pub base_branch: Option<String>,
}

impl WorktreeRecord {
    pub(crate) fn to_pairs(&self) -> Vec<(String, String)> {
        let mut v = vec![
            ("repo_root".to_string(), self.repo_root.clone()),
            ("path".to_string(), self.path.clone()),
            ("branch".to_string(), self.branch.clone()),
            ("base_sha".to_string(), self.base_sha.clone()),
        ];
        if let Some(b) = &self.base_branch {
            v.push(("base_branch".to_string(), b.clone()));
        }
        v
    }

    pub(crate) fn from_pairs(pairs: &[(String, String)]) -> Option<Self> {
        let get = |k: &str| {
            pairs
                .iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.clone())
        };
        Some(WorktreeRecord {
            repo_root: get("repo_root")?,
            path: get("path")?,
            branch: get("branch")?,
            base_sha: get("base_sha")?,
            base_branch: get("base_branch"),
        })
    }
}

/// A named, saved group of agents that can be restored later.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionRecord {
    /// Session name (map key in the document).
    pub name: String,
    /// Creation time, milliseconds since the Unix epoch.
    pub created_at_ms: u64,
    /// The agents to restore, in order.
    pub agents: Vec<SavedAgent>,
}

/// The definition of an agent as saved in a session.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SavedAgent {
    /// Agent name.
    pub name: String,
    /// Agent flavour, e.g. `"claude-code"`.
    pub agent_type: String,
    /// Command line (program and arguments).
    pub command: Vec<String>,
    /// Working directory.
    pub cwd: String,
    /// Id used to resume the agent's conversation.
    pub resume_id: Option<String>,
    /// Extra environment; read back sorted by key (stored as a map).
    pub env: Vec<(String, String)>,
}

/// Reactions on a comment: emoji -> (person id -> display name).
pub type Reactions = BTreeMap<String, BTreeMap<String, String>>;

/// A comment on one line of an agent's output, or a reply to another comment.
///
/// Stored under the root `comments` map, keyed by [`Comment::id`]. Comments
/// are never removed from the document: deleting one leaves a tombstone
/// ([`Comment::deleted_at_ms`] set, [`Comment::text`] empty).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Comment {
    /// Unique id chosen by the caller (`"c-"` + random base32 by convention);
    /// the key of the `comments` map.
    pub id: String,
    /// The agent the comment is about (id or name, whatever the node uses as
    /// key; opaque here).
    pub agent: String,
    /// Absolute output line the comment is attached to, 1-based.
    pub line: u64,
    /// Hash of the line's content (hex; opaque here), to re-anchor the comment.
    pub line_hash: String,
    /// The commented line's text, at most [`crate::MAX_LINE_TEXT_CHARS`]
    /// characters (opaque here).
    pub line_text: String,
    /// The comment itself, at most [`crate::MAX_COMMENT_TEXT_BYTES`] bytes.
    /// Empty once the comment is deleted.
    pub text: String,
    /// Id of the person who wrote it.
    pub author_id: String,
    /// Display name of the person who wrote it.
    pub author: String,
    /// Creation time, milliseconds since the Unix epoch.
    pub created_at_ms: u64,
    /// The comment this one replies to.
    #[serde(default)]
    pub parent: Option<String>,
    /// Whether the thread is resolved.
    #[serde(default)]
    pub resolved: bool,
    /// Person id that resolved it (`None` when not resolved).
    #[serde(default)]
    pub resolved_by: Option<String>,
    /// When it was resolved (`None` when not resolved).
    #[serde(default)]
    pub resolved_at_ms: Option<u64>,
    /// Tombstone: when the comment was deleted.
    #[serde(default)]
    pub deleted_at_ms: Option<u64>,
    /// Reactions: emoji -> (person id -> display name). Emoji without any
    /// person are never returned.
    #[serde(default)]
    pub reactions: Reactions,
}

impl Comment {
    /// Whether the comment has been deleted (tombstoned).
    pub fn is_deleted(&self) -> bool {
        self.deleted_at_ms.is_some()
    }
}
