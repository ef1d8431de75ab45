//! Automerge schema for one AgentOS workspace document: sessions and agents
//! (their definitions and state transitions, never their output).
//!
//! Everything here is pure and synchronous: no IO, no async runtime. The
//! [`WorkspaceDoc`] wraps an [`automerge::AutoCommit`] and exposes typed
//! accessors; every mutating call produces exactly one Automerge change (or
//! none when nothing actually changed).
//!
//! # Document layout
//!
//! ```text
//! ROOT
//! ├── "version":  uint (schema version, currently 1)
//! ├── "agents":   map  agent-id -> {
//! │       name, agent_type, cwd, workspace, host_device: str
//! │       command: list<str>, env: map<str, str>
//! │       created_at_ms: uint
//! │       pid: uint | null, resume_id: str | null, removed_at_ms: uint | null
//! │       transitions: list<{ state: { kind: str, code?: int, message?: str },
//! │                           source: str, at_ms: uint }>
//! │   }
//! └── "sessions": map  session-name -> {
//!         name: str, created_at_ms: uint,
//!         agents: list<{ name, agent_type, cwd: str, command: list<str>,
//!                        resume_id: str | null, env: map<str, str> }>
//!     }
//! ```
//!
//! The root objects are created by a deterministic *genesis* change (fixed
//! actor, fixed timestamp), so independently created replicas share the same
//! `agents`/`sessions` maps instead of producing conflicting root objects.

mod doc;
mod error;
mod model;
mod schema;

pub use doc::{SCHEMA_VERSION, WorkspaceDoc};
pub use error::CrdtError;
pub use model::{
    ActorId, AgentId, AgentRecord, AgentState, SavedAgent, SessionRecord, StateRecord,
    StateTransition, WorktreeRecord,
};

/// Re-export of the hash type used by [`WorkspaceDoc::heads`] and
/// [`WorkspaceDoc::changes_since`].
pub use automerge::ChangeHash;
pub use automerge::sync::State as SyncState;

#[cfg(test)]
mod tests;
