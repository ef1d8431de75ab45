//! Automerge schema for one AgentOS workspace document: sessions, agents
//! (their definitions and state transitions, never their output),
//! comments on agents' output lines, and the workspace memory (tasks,
//! decisions, context; see `memory.rs`).
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
//! ├── "version":  uint (schema version, currently 3)
//! ├── "agents":   map  agent-id -> {
//! │       name, agent_type, cwd, workspace, host_device: str
//! │       command: list<str>, env: map<str, str>
//! │       created_at_ms: uint
//! │       pid: uint | null, resume_id: str | null, removed_at_ms: uint | null
//! │       transitions: list<{ state: { kind: str, code?: int, message?: str },
//! │                           source: str, at_ms: uint }>
//! │   }
//! ├── "sessions": map  session-name -> {
//! │       name: str, created_at_ms: uint,
//! │       agents: list<{ name, agent_type, cwd: str, command: list<str>,
//! │                      resume_id: str | null, env: map<str, str> }>
//! │   }
//! ├── "tasks", "decisions": maps, "context": text              (since v3,
//! │       see `memory.rs`)
//! └── "comments": map  comment-id -> {                        (since v2)
//!         agent, line_hash, line_text, text, author_id, author: str
//!         line, created_at_ms: uint
//!         parent: str | null
//!         resolved: bool, resolved_by: str | null, resolved_at_ms: uint | null
//!         deleted_at_ms?: uint            (absent until deleted; never null)
//!         reactions: map emoji -> map person-id -> display name
//!     }
//! ```
//!
//! # Genesis and migration
//!
//! Root objects are created by deterministic *genesis* changes (fixed
//! actor, fixed timestamp, fixed dependencies), so independently created
//! replicas share the same root maps instead of producing conflicting root
//! objects that would hide one replica's entries:
//!
//! * v1 (genesis actor seq 1): `agents`, `sessions`, `version = 1`;
//! * v2 (seq 2, depends on v1): `comments`, `version = 2`;
//! * v3 (seq 3, depends on v2): `tasks`, `decisions`, `context`, `version = 3`.
//!
//! [`WorkspaceDoc::load`] applies every genesis change that is missing, so a
//! v1 document migrates to v2 when it is loaded, and replicas that migrated
//! on their own hold the byte-identical v2 change (same hash, same
//! `comments` ObjId). A later schema version appends another genesis change;
//! existing ones are never edited.

mod doc;
mod error;
mod memory;
mod model;
mod schema;

pub use doc::{
    MAX_COMMENT_TEXT_BYTES, MAX_EMOJI_BYTES, MAX_LINE_TEXT_CHARS, SCHEMA_VERSION, WorkspaceDoc,
};
pub use error::CrdtError;
pub use memory::{
    Claim, Decision, MAX_CONTEXT_BYTES, MAX_MEMORY_TEXT_BYTES, MAX_TITLE_BYTES, Task, TaskEdit,
    TaskStatus, decisions_md, tasks_jsonl, valid_memory_id,
};
pub use model::{
    ActorId, AgentId, AgentRecord, AgentState, Comment, Reactions, SavedAgent, SessionRecord,
    StateRecord, StateTransition, WorktreeRecord,
};

/// Re-export of the hash type used by [`WorkspaceDoc::heads`] and
/// [`WorkspaceDoc::changes_since`].
pub use automerge::ChangeHash;
pub use automerge::sync::State as SyncState;

#[cfg(test)]
mod tests;
