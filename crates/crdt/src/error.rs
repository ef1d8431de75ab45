//! Error type for workspace document operations.

use crate::model::AgentId;

/// Errors returned by [`crate::WorkspaceDoc`].
#[derive(Debug, thiserror::Error)]
pub enum CrdtError {
    /// The underlying Automerge document rejected an operation, or the
    /// bytes given to [`crate::WorkspaceDoc::load`] were not a valid
    /// document (including incremental chunks with missing dependencies).
    #[error("automerge: {0}")]
    Automerge(#[from] automerge::AutomergeError),
    /// A raw change passed to [`crate::WorkspaceDoc::apply_changes`] could
    /// not be decoded.
    #[error("invalid encoded change: {0}")]
    InvalidChange(#[from] automerge::LoadChangeError),
    /// The operation refers to an agent that does not exist in the document.
    #[error("unknown agent {0}")]
    UnknownAgent(AgentId),
    /// A sync message from a peer could not be decoded.
    #[error("invalid sync message: {0}")]
    InvalidSyncMessage(String),
    /// The operation refers to a comment id that is not in the document.
    #[error(
        "unknown comment {0}: no comment with this id in the workspace document \
         (a comment written on another device appears here only once it has synced)"
    )]
    CommentNotFound(String),
    /// [`crate::WorkspaceDoc::add_comment`] with an id that is already taken
    /// by a comment with different content.
    #[error("comment {0} already exists with different content; use a new id")]
    CommentExists(String),
    /// No task with this id in the document.
    #[error("unknown task {0} (a task made on another device appears here once it has synced)")]
    TaskNotFound(String),
    /// No decision with this id in the document.
    #[error("unknown decision {0}")]
    DecisionNotFound(String),
    /// [`crate::WorkspaceDoc::claim_task`] while someone else's claim holds
    /// the task.
    #[error("task {id} is claimed by {by}")]
    TaskClaimed { id: String, by: String },
    /// An argument breaks a documented limit (empty id, oversized text,
    /// empty or oversized emoji, ...). Nothing was written.
    #[error("invalid input: {0}")]
    Invalid(String),
}
