//! The workspace memory on the wire (tasks, decisions, context): the views
//! every client gets and the edits it may ask for. Shared by the CLI
//! protocol (bincode: no field is ever skipped) and WebSocket v3 (JSON).

use serde::{Deserialize, Serialize};

/// One claim on a task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClaimView {
    pub by: String,
    pub at_ms: u64,
}

/// A task as clients see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskView {
    pub id: String,
    pub title: String,
    pub notes: String,
    /// `open`, `in_progress`, `blocked` or `closed`.
    pub status: String,
    pub created_by: String,
    pub created_at_ms: u64,
    pub updated_at_ms: u64,
    pub closed_at_ms: Option<u64>,
    pub close_reason: Option<String>,
    pub deleted_at_ms: Option<u64>,
    /// Who holds it: the earliest claim.
    pub holder: Option<String>,
    /// Every claim, earliest first.
    pub claims: Vec<ClaimView>,
}

/// A decision as clients see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DecisionView {
    pub id: String,
    pub text: String,
    pub by: String,
    pub at_ms: u64,
    pub deleted_at_ms: Option<u64>,
}

/// A workspace's whole memory.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemoryView {
    /// The workspace id.
    pub workspace: String,
    /// Every task (tombstones too), sorted by id.
    pub tasks: Vec<TaskView>,
    /// Every decision (withdrawn ones too), oldest first.
    pub decisions: Vec<DecisionView>,
    pub context: String,
}

/// An edit of the workspace memory. In JSON: `{"task_add": {"title": …}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MemoryOp {
    TaskAdd {
        title: String,
        #[serde(default)]
        notes: String,
    },
    /// Change the named fields (`null`: unchanged). `status`: `open`,
    /// `in_progress`, `blocked` or `closed`.
    TaskUpdate {
        id: String,
        #[serde(default)]
        title: Option<String>,
        #[serde(default)]
        notes: Option<String>,
        #[serde(default)]
        status: Option<String>,
    },
    /// Claim for the asking person: refused (E028) when someone else holds it.
    TaskClaim {
        id: String,
    },
    TaskRelease {
        id: String,
    },
    TaskClose {
        id: String,
        #[serde(default)]
        reason: Option<String>,
    },
    /// A tombstone: the task stays on record.
    TaskDelete {
        id: String,
    },
    DecisionAdd {
        text: String,
    },
    /// Withdraw a decision (it stays on record).
    DecisionDelete {
        id: String,
    },
    /// Replace the context (applied as a minimal text edit).
    ContextSet {
        text: String,
    },
}

impl MemoryOp {
    /// The op's name, for errors and audit.
    pub fn kind(&self) -> &'static str {
        match self {
            MemoryOp::TaskAdd { .. } => "task_add",
            MemoryOp::TaskUpdate { .. } => "task_update",
            MemoryOp::TaskClaim { .. } => "task_claim",
            MemoryOp::TaskRelease { .. } => "task_release",
            MemoryOp::TaskClose { .. } => "task_close",
            MemoryOp::TaskDelete { .. } => "task_delete",
            MemoryOp::DecisionAdd { .. } => "decision_add",
            MemoryOp::DecisionDelete { .. } => "decision_delete",
            MemoryOp::ContextSet { .. } => "context_set",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ops_in_json_and_bincode() {
        let op: MemoryOp = serde_json::from_str(r#"{"task_add":{"title":"x"}}"#).unwrap();
        assert_eq!(
            op,
            MemoryOp::TaskAdd {
                title: "x".into(),
                notes: String::new()
            }
        );
        let op: MemoryOp =
            serde_json::from_str(r#"{"task_update":{"id":"t-aaaaaaaa","status":"blocked"}}"#)
                .unwrap();
        let bytes = bincode::serde::encode_to_vec(&op, bincode::config::standard()).unwrap();
        let (back, _): (MemoryOp, usize) =
            bincode::serde::decode_from_slice(&bytes, bincode::config::standard()).unwrap();
        assert_eq!(back, op);
        assert!(serde_json::from_str::<MemoryOp>(r#"{"task_nuke":{}}"#).is_err());
    }
}
