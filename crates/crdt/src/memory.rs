//! The workspace memory every agent and collaborator shares: tasks,
//! decisions and the human-curated context (schema v3), plus their
//! deterministic text projections (`tasks.jsonl`, `decisions.md`,
//! `context.md`).
//!
//! Document layout (root keys created by the v3 genesis change):
//!
//! ```text
//! "tasks":     map task-id -> {
//!         title, notes, status, created_by: str, created_at_ms, updated_at_ms: uint
//!         closed_at_ms?: uint, close_reason?: str, deleted_at_ms?: uint
//!         claims: map person -> claimed_at_ms (uint)
//!     }
//! "decisions": map decision-id -> { text, by: str, at_ms: uint, deleted_at_ms?: uint }
//! "context":   text
//! ```
//!
//! Semantics:
//! - Task fields are last-writer-wins; closing writes status, time and
//!   reason in one change.
//! - A claim is a key in the task's `claims` map. Claims merge per person
//!   and the **earliest** claim (by time, then person id) holds the task: a
//!   lease across devices. Locally, [`WorkspaceDoc::claim_task`] is a true
//!   compare-and-swap (one writer per device): it refuses when someone
//!   else's claim holds.
//! - Nothing is ever removed: deleting writes `deleted_at_ms` (absent ->
//!   set; concurrent deletions keep the earliest time).
//! - The context is an Automerge text, edited by diff
//!   ([`WorkspaceDoc::set_context`]), so concurrent edits of different
//!   parts merge.

use automerge::transaction::Transactable;
use automerge::{AutoCommit, ObjId, ObjType, ROOT, ReadDoc};
use serde::{Deserialize, Serialize};

use crate::doc::WorkspaceDoc;
use crate::error::CrdtError;
use crate::schema::{self, *};

/// Largest task title, in bytes.
pub const MAX_TITLE_BYTES: usize = 500;
/// Largest task notes or decision text, in bytes.
pub const MAX_MEMORY_TEXT_BYTES: usize = 20_000;
/// Largest context, in bytes.
pub const MAX_CONTEXT_BYTES: usize = 256 * 1024;

/// Where a task stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskStatus {
    Open,
    InProgress,
    Blocked,
    Closed,
}

impl TaskStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            TaskStatus::Open => "open",
            TaskStatus::InProgress => "in_progress",
            TaskStatus::Blocked => "blocked",
            TaskStatus::Closed => "closed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "open" => TaskStatus::Open,
            "in_progress" => TaskStatus::InProgress,
            "blocked" => TaskStatus::Blocked,
            "closed" => TaskStatus::Closed,
            _ => return None,
        })
    }
}

/// One person's claim on a task.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Claim {
    pub at_ms: u64,
    pub by: String,
}

/// A task of the workspace memory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Task {
    /// `t-` + 8 base32 characters (random).
    pub id: String,
    pub title: String,
    pub notes: String,
    pub status: TaskStatus,
    pub created_by: String,
    pub created_at_ms: u64,
    pub updated_at_ms: u64,
    pub closed_at_ms: Option<u64>,
    pub close_reason: Option<String>,
    /// Tombstone: tasks are never removed.
    pub deleted_at_ms: Option<u64>,
    /// Every claim, earliest first; the first one holds the task.
    pub claims: Vec<Claim>,
}

impl Task {
    /// Who holds the task: the earliest claim.
    pub fn holder(&self) -> Option<&Claim> {
        self.claims.first()
    }

    /// Open, not deleted and not held by anyone: ready to be claimed.
    pub fn is_ready(&self) -> bool {
        self.status == TaskStatus::Open && self.deleted_at_ms.is_none() && self.claims.is_empty()
    }
}

/// A recorded decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    /// `d-` + 8 base32 characters (random).
    pub id: String,
    pub text: String,
    pub by: String,
    pub at_ms: u64,
    pub deleted_at_ms: Option<u64>,
}

/// A change to a task's fields (`None`: unchanged).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TaskEdit {
    pub title: Option<String>,
    pub notes: Option<String>,
    pub status: Option<TaskStatus>,
}

/// Whether `id` is `prefix` + 8 lowercase base32 characters.
pub fn valid_memory_id(id: &str, prefix: &str) -> bool {
    id.strip_prefix(prefix).is_some_and(|rest| {
        rest.len() == 8
            && rest
                .bytes()
                .all(|b| b.is_ascii_lowercase() || (b'2'..=b'7').contains(&b))
    })
}

fn invalid(msg: impl Into<String>) -> CrdtError {
    CrdtError::Invalid(msg.into())
}

fn check_title(t: &str) -> Result<(), CrdtError> {
    if t.trim().is_empty() || t.len() > MAX_TITLE_BYTES {
        return Err(invalid(format!(
            "a task title needs 1 to {MAX_TITLE_BYTES} bytes"
        )));
    }
    Ok(())
}

fn check_text(what: &str, t: &str) -> Result<(), CrdtError> {
    if t.len() > MAX_MEMORY_TEXT_BYTES {
        return Err(invalid(format!(
            "{what} is {} bytes, at most {MAX_MEMORY_TEXT_BYTES} allowed",
            t.len()
        )));
    }
    Ok(())
}

const TITLE: &str = "title";
const NOTES: &str = "notes";
const STATUS: &str = "status";
const CREATED_BY: &str = "created_by";
const UPDATED_AT_MS: &str = "updated_at_ms";
const CLOSED_AT_MS: &str = "closed_at_ms";
const CLOSE_REASON: &str = "close_reason";
const CLAIMS: &str = "claims";
const BY: &str = "by";

fn root(doc: &AutoCommit, key: &str, what: &str) -> Result<ObjId, CrdtError> {
    schema::get_obj(doc, &ROOT, key, ObjType::Map).ok_or_else(|| {
        invalid(format!(
            "the document has no root {what} map (schema older than v3)"
        ))
    })
}

fn task_obj(doc: &AutoCommit, id: &str) -> Result<ObjId, CrdtError> {
    let tasks = root(doc, TASKS, "tasks")?;
    schema::get_obj(doc, &tasks, id, ObjType::Map).ok_or_else(|| CrdtError::TaskNotFound(id.into()))
}

/// The earliest of every (possibly conflicting) deletion time.
fn deleted_at(doc: &AutoCommit, obj: &ObjId) -> Option<u64> {
    schema::get_all_u64(doc, obj, DELETED_AT_MS)
        .into_iter()
        .min()
}

fn read_task(doc: &AutoCommit, tasks: &ObjId, id: &str) -> Option<Task> {
    let obj = schema::get_obj(doc, tasks, id, ObjType::Map)?;
    let mut claims: Vec<Claim> = schema::get_obj(doc, &obj, CLAIMS, ObjType::Map)
        .map(|m| {
            doc.keys(&m)
                .filter_map(|by| {
                    let at_ms = schema::get_u64(doc, &m, &by)?;
                    Some(Claim { at_ms, by })
                })
                .collect()
        })
        .unwrap_or_default();
    claims.sort();
    Some(Task {
        id: id.to_owned(),
        title: schema::get_str(doc, &obj, TITLE).unwrap_or_default(),
        notes: schema::get_str(doc, &obj, NOTES).unwrap_or_default(),
        status: schema::get_str(doc, &obj, STATUS)
            .and_then(|s| TaskStatus::parse(&s))
            .unwrap_or(TaskStatus::Open),
        created_by: schema::get_str(doc, &obj, CREATED_BY).unwrap_or_default(),
        created_at_ms: schema::get_u64(doc, &obj, CREATED_AT_MS).unwrap_or(0),
        updated_at_ms: schema::get_u64(doc, &obj, UPDATED_AT_MS).unwrap_or(0),
        closed_at_ms: schema::get_u64(doc, &obj, CLOSED_AT_MS),
        close_reason: schema::get_str(doc, &obj, CLOSE_REASON),
        deleted_at_ms: deleted_at(doc, &obj),
        claims,
    })
}

impl WorkspaceDoc {
    // --------------------------------------------------------------- tasks

    /// Add a task (its claims are ignored: claim with
    /// [`claim_task`](Self::claim_task)). Refused when the id is taken.
    pub fn add_task(&mut self, t: &Task) -> Result<(), CrdtError> {
        if !valid_memory_id(&t.id, "t-") {
            return Err(invalid(format!(
                "task id {:?}: expected t- and 8 base32 characters",
                t.id
            )));
        }
        check_title(&t.title)?;
        check_text("the notes", &t.notes)?;
        self.write(|doc| {
            let tasks = root(doc, TASKS, "tasks")?;
            if schema::get_obj(doc, &tasks, &t.id, ObjType::Map).is_some() {
                return Err(invalid(format!("task {} already exists", t.id)));
            }
            let obj = doc.put_object(&tasks, t.id.as_str(), ObjType::Map)?;
            doc.put(&obj, TITLE, t.title.as_str())?;
            doc.put(&obj, NOTES, t.notes.as_str())?;
            doc.put(&obj, STATUS, t.status.as_str())?;
            doc.put(&obj, CREATED_BY, t.created_by.as_str())?;
            doc.put(&obj, CREATED_AT_MS, t.created_at_ms)?;
            doc.put(&obj, UPDATED_AT_MS, t.updated_at_ms)?;
            if let Some(at) = t.closed_at_ms {
                doc.put(&obj, CLOSED_AT_MS, at)?;
            }
            if let Some(r) = &t.close_reason {
                doc.put(&obj, CLOSE_REASON, r.as_str())?;
            }
            if let Some(at) = t.deleted_at_ms {
                doc.put(&obj, DELETED_AT_MS, at)?;
            }
            doc.put_object(&obj, CLAIMS, ObjType::Map)?;
            Ok(())
        })
    }

    /// Change a task's title, notes or status (LWW per field). Reopening a
    /// closed task clears its close time and reason.
    pub fn update_task(&mut self, id: &str, edit: &TaskEdit, at_ms: u64) -> Result<(), CrdtError> {
        if let Some(t) = &edit.title {
            check_title(t)?;
        }
        if let Some(n) = &edit.notes {
            check_text("the notes", n)?;
        }
        self.write(|doc| {
            let obj = task_obj(doc, id)?;
            let before = schema::get_str(doc, &obj, STATUS);
            let mut changed = false;
            if let Some(t) = &edit.title {
                changed |= schema::get_str(doc, &obj, TITLE).as_deref() != Some(t.as_str());
                schema::put_scalar(doc, &obj, TITLE, t.as_str())?;
            }
            if let Some(n) = &edit.notes {
                changed |= schema::get_str(doc, &obj, NOTES).as_deref() != Some(n.as_str());
                schema::put_scalar(doc, &obj, NOTES, n.as_str())?;
            }
            if let Some(s) = edit.status {
                changed |= before.as_deref() != Some(s.as_str());
                schema::put_scalar(doc, &obj, STATUS, s.as_str())?;
                if s == TaskStatus::Closed {
                    schema::put_scalar(doc, &obj, CLOSED_AT_MS, at_ms)?;
                } else if before.as_deref() == Some(TaskStatus::Closed.as_str()) {
                    doc.delete(&obj, CLOSED_AT_MS)?;
                    doc.delete(&obj, CLOSE_REASON)?;
                }
            }
            if changed {
                doc.put(&obj, UPDATED_AT_MS, at_ms)?;
            }
            Ok(())
        })
    }

    /// Claim a task for `by` (status `in_progress`). A compare-and-swap on
    /// this replica: refused with [`CrdtError::TaskClaimed`] when another
    /// person's claim holds it, or when it is closed or deleted. Claiming
    /// again is a no-op (the first claim time stays).
    pub fn claim_task(&mut self, id: &str, by: &str, at_ms: u64) -> Result<Task, CrdtError> {
        if by.is_empty() {
            return Err(invalid("a claim needs a person"));
        }
        let tasks = root(&self.doc, TASKS, "tasks")?;
        let t =
            read_task(&self.doc, &tasks, id).ok_or_else(|| CrdtError::TaskNotFound(id.into()))?;
        if t.deleted_at_ms.is_some() || t.status == TaskStatus::Closed {
            return Err(invalid(format!(
                "task {id} is {}",
                if t.deleted_at_ms.is_some() {
                    "deleted"
                } else {
                    "closed"
                }
            )));
        }
        if let Some(h) = t.holder().filter(|h| h.by != by) {
            return Err(CrdtError::TaskClaimed {
                id: id.into(),
                by: h.by.clone(),
            });
        }
        self.write(|doc| {
            let obj = task_obj(doc, id)?;
            let claims = match schema::get_obj(doc, &obj, CLAIMS, ObjType::Map) {
                Some(c) => c,
                None => doc.put_object(&obj, CLAIMS, ObjType::Map)?,
            };
            if schema::get_u64(doc, &claims, by).is_none() {
                doc.put(&claims, by, at_ms)?;
                schema::put_scalar(doc, &obj, STATUS, TaskStatus::InProgress.as_str())?;
                doc.put(&obj, UPDATED_AT_MS, at_ms)?;
            }
            Ok(())
        })?;
        self.task(id)
            .ok_or_else(|| CrdtError::TaskNotFound(id.into()))
    }

    /// Drop `by`'s claim; a task nobody holds any more goes back to `open`
    /// (unless it was closed or blocked meanwhile).
    pub fn release_task(&mut self, id: &str, by: &str, at_ms: u64) -> Result<(), CrdtError> {
        self.write(|doc| {
            let obj = task_obj(doc, id)?;
            let Some(claims) = schema::get_obj(doc, &obj, CLAIMS, ObjType::Map) else {
                return Ok(());
            };
            if schema::get_u64(doc, &claims, by).is_none() {
                return Ok(());
            }
            doc.delete(&claims, by)?;
            if doc.length(&claims) == 0
                && schema::get_str(doc, &obj, STATUS).as_deref()
                    == Some(TaskStatus::InProgress.as_str())
            {
                doc.put(&obj, STATUS, TaskStatus::Open.as_str())?;
            }
            doc.put(&obj, UPDATED_AT_MS, at_ms)?;
            Ok(())
        })
    }

    /// Close a task: status, time and reason in one change.
    pub fn close_task(
        &mut self,
        id: &str,
        reason: Option<&str>,
        at_ms: u64,
    ) -> Result<(), CrdtError> {
        if let Some(r) = reason {
            check_text("the close reason", r)?;
        }
        self.write(|doc| {
            let obj = task_obj(doc, id)?;
            doc.put(&obj, STATUS, TaskStatus::Closed.as_str())?;
            doc.put(&obj, CLOSED_AT_MS, at_ms)?;
            match reason {
                Some(r) => doc.put(&obj, CLOSE_REASON, r)?,
                None => doc.delete(&obj, CLOSE_REASON)?,
            }
            doc.put(&obj, UPDATED_AT_MS, at_ms)?;
            Ok(())
        })
    }

    /// Tombstone a task (it stays in the document and the projection).
    pub fn delete_task(&mut self, id: &str, at_ms: u64) -> Result<(), CrdtError> {
        self.write(|doc| {
            let obj = task_obj(doc, id)?;
            if deleted_at(doc, &obj).is_none() {
                doc.put(&obj, DELETED_AT_MS, at_ms)?;
            }
            Ok(())
        })
    }

    /// One task.
    pub fn task(&self, id: &str) -> Option<Task> {
        let tasks = root(&self.doc, TASKS, "tasks").ok()?;
        read_task(&self.doc, &tasks, id)
    }

    /// Every task (deleted ones too), sorted by id.
    pub fn tasks(&self) -> Vec<Task> {
        let Ok(tasks) = root(&self.doc, TASKS, "tasks") else {
            return Vec::new();
        };
        let mut ids: Vec<String> = self.doc.keys(&tasks).collect();
        ids.sort();
        ids.iter()
            .filter_map(|id| read_task(&self.doc, &tasks, id))
            .collect()
    }

    // ----------------------------------------------------------- decisions

    /// Record a decision (append-only; refused when the id is taken).
    pub fn add_decision(&mut self, d: &Decision) -> Result<(), CrdtError> {
        if !valid_memory_id(&d.id, "d-") {
            return Err(invalid(format!(
                "decision id {:?}: expected d- and 8 base32 characters",
                d.id
            )));
        }
        if d.text.trim().is_empty() {
            return Err(invalid("a decision needs text"));
        }
        check_text("the decision", &d.text)?;
        self.write(|doc| {
            let decisions = root(doc, DECISIONS, "decisions")?;
            if schema::get_obj(doc, &decisions, &d.id, ObjType::Map).is_some() {
                return Err(invalid(format!("decision {} already exists", d.id)));
            }
            let obj = doc.put_object(&decisions, d.id.as_str(), ObjType::Map)?;
            doc.put(&obj, TEXT, d.text.as_str())?;
            doc.put(&obj, BY, d.by.as_str())?;
            doc.put(&obj, AT_MS, d.at_ms)?;
            if let Some(at) = d.deleted_at_ms {
                doc.put(&obj, DELETED_AT_MS, at)?;
            }
            Ok(())
        })
    }

    /// Withdraw a decision (a tombstone: it stays on record).
    pub fn delete_decision(&mut self, id: &str, at_ms: u64) -> Result<(), CrdtError> {
        self.write(|doc| {
            let decisions = root(doc, DECISIONS, "decisions")?;
            let obj = schema::get_obj(doc, &decisions, id, ObjType::Map)
                .ok_or_else(|| CrdtError::DecisionNotFound(id.into()))?;
            if deleted_at(doc, &obj).is_none() {
                doc.put(&obj, DELETED_AT_MS, at_ms)?;
            }
            Ok(())
        })
    }

    /// Every decision (withdrawn ones too), oldest first.
    pub fn decisions(&self) -> Vec<Decision> {
        let Ok(decisions) = root(&self.doc, DECISIONS, "decisions") else {
            return Vec::new();
        };
        let mut out: Vec<Decision> = self
            .doc
            .keys(&decisions)
            .filter_map(|id| {
                let obj = schema::get_obj(&self.doc, &decisions, &id, ObjType::Map)?;
                Some(Decision {
                    text: schema::get_str(&self.doc, &obj, TEXT).unwrap_or_default(),
                    by: schema::get_str(&self.doc, &obj, BY).unwrap_or_default(),
                    at_ms: schema::get_u64(&self.doc, &obj, AT_MS).unwrap_or(0),
                    deleted_at_ms: deleted_at(&self.doc, &obj),
                    id,
                })
            })
            .collect();
        out.sort_by(|a, b| (a.at_ms, &a.id).cmp(&(b.at_ms, &b.id)));
        out
    }

    // ------------------------------------------------------------- context

    /// The human-curated context.
    pub fn context(&self) -> String {
        match schema::get_obj(&self.doc, &ROOT, CONTEXT, ObjType::Text) {
            Some(t) => self.doc.text(&t).unwrap_or_default(),
            None => String::new(),
        }
    }

    /// Replace the context by a minimal edit (a diff against the current
    /// text), so concurrent edits of different parts both survive.
    pub fn set_context(&mut self, text: &str) -> Result<(), CrdtError> {
        if text.len() > MAX_CONTEXT_BYTES {
            return Err(invalid(format!(
                "the context is {} bytes, at most {MAX_CONTEXT_BYTES} allowed",
                text.len()
            )));
        }
        self.write(|doc| {
            let t = schema::get_obj(doc, &ROOT, CONTEXT, ObjType::Text).ok_or_else(|| {
                invalid("the document has no root context text (schema older than v3)")
            })?;
            doc.update_text(&t, text)?;
            Ok(())
        })
    }
}

// ---------------------------------------------------------- projections

/// `tasks.jsonl`: one task per line, sorted by id, tombstones included.
/// Byte-identical on every replica holding the same changes.
pub fn tasks_jsonl(tasks: &[Task]) -> String {
    let mut sorted: Vec<&Task> = tasks.iter().collect();
    sorted.sort_by(|a, b| a.id.cmp(&b.id));
    let mut out = String::new();
    for t in sorted {
        // A struct of strings, numbers and enums always serialises.
        if let Ok(line) = serde_json::to_string(t) {
            out.push_str(&line);
            out.push('\n');
        }
    }
    out
}

/// `decisions.md`: every decision, oldest first; withdrawn ones stay,
/// struck through.
pub fn decisions_md(decisions: &[Decision]) -> String {
    let mut sorted: Vec<&Decision> = decisions.iter().collect();
    sorted.sort_by(|a, b| (a.at_ms, &a.id).cmp(&(b.at_ms, &b.id)));
    let mut out = String::from(
        "# Decisions\n\n<!-- Generated by AgentOS from the workspace document; record one with `agentos decision add`. -->\n",
    );
    for d in sorted {
        out.push_str(&format!("\n## {} · {} · {}\n\n", d.id, utc(d.at_ms), d.by));
        match d.deleted_at_ms {
            Some(at) => {
                for line in d.text.lines() {
                    out.push_str(&format!("~~{line}~~\n"));
                }
                out.push_str(&format!("\n*Withdrawn {}.*\n", utc(at)));
            }
            None => {
                out.push_str(d.text.trim_end());
                out.push('\n');
            }
        }
    }
    out
}

/// `YYYY-MM-DD HH:MM UTC` of a Unix time in milliseconds.
fn utc(ms: u64) -> String {
    let secs = ms / 1000;
    let days = (secs / 86_400) as i64;
    let (h, m) = ((secs % 86_400) / 3600, (secs % 3600) / 60);
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let mo = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(mo <= 2);
    format!("{y:04}-{mo:02}-{d:02} {h:02}:{m:02} UTC")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ActorId;

    fn actor(n: u8) -> ActorId {
        ActorId([n; 16])
    }

    fn task(id: &str, title: &str) -> Task {
        Task {
            id: id.into(),
            title: title.into(),
            notes: String::new(),
            status: TaskStatus::Open,
            created_by: "ann".into(),
            created_at_ms: 1,
            updated_at_ms: 1,
            closed_at_ms: None,
            close_reason: None,
            deleted_at_ms: None,
            claims: Vec::new(),
        }
    }

    #[test]
    fn utc_dates() {
        assert_eq!(utc(0), "1970-01-01 00:00 UTC");
        assert_eq!(utc(951_782_400_000), "2000-02-29 00:00 UTC");
        assert_eq!(utc(1_796_212_800_000), "2026-12-02 12:00 UTC");
    }

    #[test]
    fn ids_are_checked() {
        assert!(valid_memory_id("t-abcd2345", "t-"));
        assert!(!valid_memory_id("t-abcd234", "t-"));
        assert!(!valid_memory_id("t-ABCD2345", "t-"));
        assert!(!valid_memory_id("d-abcd2345", "t-"));
        let mut d = WorkspaceDoc::new(actor(1));
        assert!(d.add_task(&task("t-1", "x")).is_err());
        assert!(d.add_task(&task("t-aaaaaaaa", " ")).is_err());
    }

    #[test]
    fn task_lifecycle() {
        let mut d = WorkspaceDoc::new(actor(1));
        d.add_task(&task("t-aaaaaaaa", "write the parser")).unwrap();
        assert!(d.add_task(&task("t-aaaaaaaa", "again")).is_err());
        assert!(d.tasks()[0].is_ready());
        let t = d.claim_task("t-aaaaaaaa", "bob", 5).unwrap();
        assert_eq!(t.status, TaskStatus::InProgress);
        assert_eq!(t.holder().unwrap().by, "bob");
        // Compare-and-swap: someone else is refused, bob again is a no-op.
        assert!(matches!(
            d.claim_task("t-aaaaaaaa", "cat", 6),
            Err(CrdtError::TaskClaimed { by, .. }) if by == "bob"
        ));
        assert_eq!(
            d.claim_task("t-aaaaaaaa", "bob", 7).unwrap().claims[0].at_ms,
            5
        );
        d.release_task("t-aaaaaaaa", "bob", 8).unwrap();
        assert_eq!(d.task("t-aaaaaaaa").unwrap().status, TaskStatus::Open);
        d.update_task(
            "t-aaaaaaaa",
            &TaskEdit {
                notes: Some("see RFC".into()),
                ..Default::default()
            },
            9,
        )
        .unwrap();
        d.close_task("t-aaaaaaaa", Some("done"), 10).unwrap();
        let t = d.task("t-aaaaaaaa").unwrap();
        assert_eq!(
            (t.status, t.closed_at_ms, t.close_reason.as_deref()),
            (TaskStatus::Closed, Some(10), Some("done"))
        );
        assert_eq!(t.notes, "see RFC");
        assert!(d.claim_task("t-aaaaaaaa", "cat", 11).is_err(), "closed");
        // Reopening clears the close fields.
        d.update_task(
            "t-aaaaaaaa",
            &TaskEdit {
                status: Some(TaskStatus::Open),
                ..Default::default()
            },
            12,
        )
        .unwrap();
        let t = d.task("t-aaaaaaaa").unwrap();
        assert_eq!((t.closed_at_ms, t.close_reason), (None, None));
        d.delete_task("t-aaaaaaaa", 13).unwrap();
        d.delete_task("t-aaaaaaaa", 14).unwrap();
        assert_eq!(d.tasks()[0].deleted_at_ms, Some(13), "kept as a tombstone");
        assert!(matches!(
            d.claim_task("t-zzzzzzzz", "x", 1),
            Err(CrdtError::TaskNotFound(_))
        ));
    }

    #[test]
    fn across_replicas_the_earliest_claim_holds() {
        let mut a = WorkspaceDoc::new(actor(1));
        a.add_task(&task("t-bbbbbbbb", "race")).unwrap();
        let mut b = WorkspaceDoc::new(actor(2));
        b.merge(&mut a).unwrap();
        // Both claim while apart; each local CAS succeeds.
        a.claim_task("t-bbbbbbbb", "ann", 20).unwrap();
        b.claim_task("t-bbbbbbbb", "bob", 10).unwrap();
        a.merge(&mut b).unwrap();
        b.merge(&mut a).unwrap();
        let (ta, tb) = (a.task("t-bbbbbbbb").unwrap(), b.task("t-bbbbbbbb").unwrap());
        assert_eq!(ta, tb);
        assert_eq!(ta.holder().unwrap().by, "bob", "the earliest lease wins");
        assert!(a.claim_task("t-bbbbbbbb", "ann", 30).is_err());
    }

    #[test]
    fn decisions_and_context() {
        let mut a = WorkspaceDoc::new(actor(1));
        let d = Decision {
            id: "d-cccccccc".into(),
            text: "Use sled for the store".into(),
            by: "ann".into(),
            at_ms: 1_796_212_800_000,
            deleted_at_ms: None,
        };
        a.add_decision(&d).unwrap();
        assert!(a.add_decision(&d).is_err());
        a.set_context("# Context\n\nThe parser lives in src/parse.rs.\n")
            .unwrap();
        let mut b = WorkspaceDoc::new(actor(2));
        b.merge(&mut a).unwrap();
        // Concurrent edits of different lines both survive.
        a.set_context("# Context\n\nThe parser lives in src/parse.rs.\nTests: cargo nextest.\n")
            .unwrap();
        b.set_context("# Project context\n\nThe parser lives in src/parse.rs.\n")
            .unwrap();
        a.merge(&mut b).unwrap();
        b.merge(&mut a).unwrap();
        assert_eq!(a.context(), b.context());
        assert_eq!(
            a.context(),
            "# Project context\n\nThe parser lives in src/parse.rs.\nTests: cargo nextest.\n"
        );
        a.delete_decision("d-cccccccc", 1_796_216_400_000).unwrap();
        let md = decisions_md(&a.decisions());
        assert!(
            md.contains("## d-cccccccc · 2026-12-02 12:00 UTC · ann"),
            "{md}"
        );
        assert!(md.contains("~~Use sled for the store~~"), "{md}");
        assert!(md.contains("*Withdrawn 2026-12-02 13:00 UTC.*"), "{md}");
        assert!(a.set_context(&"x".repeat(MAX_CONTEXT_BYTES + 1)).is_err());
    }

    #[test]
    fn the_jsonl_projection_is_sorted_and_keeps_tombstones() {
        let mut a = WorkspaceDoc::new(actor(1));
        a.add_task(&task("t-zzzzzzzz", "last")).unwrap();
        a.add_task(&task("t-aaaaaaaa", "first")).unwrap();
        a.delete_task("t-zzzzzzzz", 3).unwrap();
        let text = tasks_jsonl(&a.tasks());
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["id"], "t-aaaaaaaa");
        assert_eq!(lines[1]["deleted_at_ms"], 3);
        assert_eq!(lines[0]["status"], "open");
    }
}
