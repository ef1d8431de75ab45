//! The workspace memory at the node's edges: applying a client's
//! [`MemoryOp`] to the document (ids, validation, error codes), the views
//! clients get, and the projections written to `<workspace>/.agentos/memory/`
//! (`tasks.jsonl`, `decisions.md`, `context.md`).
//!
//! The projections are views, never read back: the document is the source
//! of truth. They are written only once the memory holds something (or the
//! files already exist), atomically, and only when their text changes.
//! Nothing here commits to git.

use agentos_crdt::{CrdtError, Decision, Task, TaskEdit, TaskStatus, WorkspaceDoc};
use agentos_proto::memory::{ClaimView, DecisionView, MemoryOp, MemoryView, TaskView};
use agentos_proto::{ErrorCode, ErrorInfo};
use std::path::{Path, PathBuf};

/// `prefix` + 8 random base32 characters.
fn new_id(prefix: &str) -> String {
    let mut b = [0u8; 5];
    let _ = getrandom::fill(&mut b);
    format!(
        "{prefix}{}",
        data_encoding::BASE32_NOPAD.encode(&b).to_lowercase()
    )
}

fn error(e: CrdtError) -> ErrorInfo {
    match e {
        CrdtError::TaskClaimed { id, by } => {
            ErrorInfo::new(ErrorCode::TaskClaimed, format!("task {id} is held by {by}"))
        }
        CrdtError::TaskNotFound(id) => ErrorInfo::new(
            ErrorCode::MemoryNotFound,
            format!("no task {id} in this workspace"),
        ),
        CrdtError::DecisionNotFound(id) => ErrorInfo::new(
            ErrorCode::MemoryNotFound,
            format!("no decision {id} in this workspace"),
        ),
        CrdtError::Invalid(m) => ErrorInfo::new(ErrorCode::InvalidArgument, m),
        other => ErrorInfo::new(ErrorCode::Internal, other.to_string()),
    }
}

/// Apply `op` on behalf of `by` at `now_ms`. Returns the id it made or
/// touched.
pub fn apply(
    doc: &mut WorkspaceDoc,
    op: MemoryOp,
    by: &str,
    now_ms: u64,
) -> Result<Option<String>, ErrorInfo> {
    let r = match op {
        MemoryOp::TaskAdd { title, notes } => {
            let id = new_id("t-");
            doc.add_task(&Task {
                id: id.clone(),
                title: title.trim().to_string(),
                notes,
                status: TaskStatus::Open,
                created_by: by.to_string(),
                created_at_ms: now_ms,
                updated_at_ms: now_ms,
                closed_at_ms: None,
                close_reason: None,
                deleted_at_ms: None,
                claims: Vec::new(),
            })
            .map(|()| Some(id))
        }
        MemoryOp::TaskUpdate {
            id,
            title,
            notes,
            status,
        } => {
            let status = match status.as_deref().map(|s| (s, TaskStatus::parse(s))) {
                None => None,
                Some((_, Some(s))) => Some(s),
                Some((s, None)) => {
                    return Err(ErrorInfo::new(
                        ErrorCode::InvalidArgument,
                        format!("unknown task status {s:?}"),
                    )
                    .with_hint("use open, in_progress, blocked or closed"));
                }
            };
            let edit = TaskEdit {
                title: title.map(|t| t.trim().to_string()),
                notes,
                status,
            };
            doc.update_task(&id, &edit, now_ms).map(|()| Some(id))
        }
        MemoryOp::TaskClaim { id } => doc.claim_task(&id, by, now_ms).map(|t| Some(t.id)),
        MemoryOp::TaskRelease { id } => doc.release_task(&id, by, now_ms).map(|()| Some(id)),
        MemoryOp::TaskClose { id, reason } => doc
            .close_task(&id, reason.as_deref(), now_ms)
            .map(|()| Some(id)),
        MemoryOp::TaskDelete { id } => doc.delete_task(&id, now_ms).map(|()| Some(id)),
        MemoryOp::DecisionAdd { text } => {
            let id = new_id("d-");
            doc.add_decision(&Decision {
                id: id.clone(),
                text,
                by: by.to_string(),
                at_ms: now_ms,
                deleted_at_ms: None,
            })
            .map(|()| Some(id))
        }
        MemoryOp::DecisionDelete { id } => doc.delete_decision(&id, now_ms).map(|()| Some(id)),
        MemoryOp::ContextSet { text } => doc.set_context(&text).map(|()| None),
    };
    r.map_err(error)
}

pub fn task_view(t: &Task) -> TaskView {
    TaskView {
        id: t.id.clone(),
        title: t.title.clone(),
        notes: t.notes.clone(),
        status: t.status.as_str().to_string(),
        created_by: t.created_by.clone(),
        created_at_ms: t.created_at_ms,
        updated_at_ms: t.updated_at_ms,
        closed_at_ms: t.closed_at_ms,
        close_reason: t.close_reason.clone(),
        deleted_at_ms: t.deleted_at_ms,
        holder: t.holder().map(|c| c.by.clone()),
        claims: t
            .claims
            .iter()
            .map(|c| ClaimView {
                by: c.by.clone(),
                at_ms: c.at_ms,
            })
            .collect(),
    }
}

/// The whole memory of `doc` (workspace `ws_id`).
pub fn view(ws_id: &str, doc: &WorkspaceDoc) -> MemoryView {
    MemoryView {
        workspace: ws_id.to_string(),
        tasks: doc.tasks().iter().map(task_view).collect(),
        decisions: doc
            .decisions()
            .into_iter()
            .map(|d| DecisionView {
                id: d.id,
                text: d.text,
                by: d.by,
                at_ms: d.at_ms,
                deleted_at_ms: d.deleted_at_ms,
            })
            .collect(),
        context: doc.context(),
    }
}

/// The three projection files' texts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Projections {
    pub tasks_jsonl: String,
    pub decisions_md: String,
    pub context_md: String,
}

impl Projections {
    pub fn of(doc: &WorkspaceDoc) -> Projections {
        Projections {
            tasks_jsonl: agentos_crdt::tasks_jsonl(&doc.tasks()),
            decisions_md: agentos_crdt::decisions_md(&doc.decisions()),
            context_md: doc.context(),
        }
    }

    fn is_empty(&self, doc: &WorkspaceDoc) -> bool {
        self.tasks_jsonl.is_empty() && doc.decisions().is_empty() && self.context_md.is_empty()
    }
}

/// `<root>/.agentos/memory`.
pub fn memory_dir(root: &Path) -> PathBuf {
    root.join(".agentos").join("memory")
}

/// Write the projections of `doc` under `root` unless they equal `last`
/// (what was written before). An empty memory writes nothing unless the
/// directory already exists. Returns what is now on disk.
pub fn project(
    root: &Path,
    doc: &WorkspaceDoc,
    last: Option<&Projections>,
) -> std::io::Result<Option<Projections>> {
    let p = Projections::of(doc);
    if last == Some(&p) {
        return Ok(Some(p));
    }
    let dir = memory_dir(root);
    if p.is_empty(doc) && !dir.exists() {
        return Ok(None);
    }
    // The repository decides what `.agentos/` holds: never follow a link it
    // planted there (a write through it could land anywhere).
    for d in [root.join(".agentos"), dir.clone()] {
        match std::fs::symlink_metadata(&d) {
            Ok(m) if m.file_type().is_symlink() || !m.is_dir() => {
                return Err(std::io::Error::other(format!(
                    "{} is not a plain directory; not writing the memory there",
                    d.display()
                )));
            }
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => std::fs::create_dir(&d)?,
            Err(e) => return Err(e),
        }
    }
    for (name, text) in [
        ("tasks.jsonl", &p.tasks_jsonl),
        ("decisions.md", &p.decisions_md),
        ("context.md", &p.context_md),
    ] {
        let path = dir.join(name);
        let current = std::fs::symlink_metadata(&path)
            .ok()
            .filter(|m| m.is_file())
            .and_then(|_| std::fs::read_to_string(&path).ok());
        if current.as_deref() == Some(text.as_str()) {
            continue;
        }
        write_new_then_rename(&dir, name, text)?;
    }
    Ok(Some(p))
}

/// Write `text` to a fresh file (random name, `O_EXCL`: never through an
/// existing file or link) in `dir`, then rename it over `dir/name` (which
/// replaces a link rather than following it).
fn write_new_then_rename(dir: &Path, name: &str, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut b = [0u8; 6];
    let _ = getrandom::fill(&mut b);
    let tmp = dir.join(format!(
        ".{name}.{}.tmp",
        data_encoding::HEXLOWER.encode(&b)
    ));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&tmp)?;
    if let Err(e) = f.write_all(text.as_bytes()) {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    drop(f);
    std::fs::rename(&tmp, dir.join(name)).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use agentos_crdt::ActorId;

    #[test]
    fn ops_get_ids_codes_and_projections() {
        let mut doc = WorkspaceDoc::new(ActorId([1; 16]));
        let id = apply(
            &mut doc,
            MemoryOp::TaskAdd {
                title: "  parse the config ".into(),
                notes: String::new(),
            },
            "ann",
            10,
        )
        .unwrap()
        .unwrap();
        assert!(agentos_crdt::valid_memory_id(&id, "t-"), "{id}");
        apply(&mut doc, MemoryOp::TaskClaim { id: id.clone() }, "ann", 11).unwrap();
        let e = apply(&mut doc, MemoryOp::TaskClaim { id: id.clone() }, "bob", 12).unwrap_err();
        assert_eq!(e.code, ErrorCode::TaskClaimed);
        let e = apply(
            &mut doc,
            MemoryOp::TaskClose {
                id: "t-zzzzzzzz".into(),
                reason: None,
            },
            "ann",
            13,
        )
        .unwrap_err();
        assert_eq!(e.code, ErrorCode::MemoryNotFound);
        let e = apply(
            &mut doc,
            MemoryOp::TaskUpdate {
                id: id.clone(),
                title: None,
                notes: None,
                status: Some("done".into()),
            },
            "ann",
            14,
        )
        .unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidArgument);
        let v = view("ws-1", &doc);
        assert_eq!(v.tasks[0].title, "parse the config");
        assert_eq!(v.tasks[0].holder.as_deref(), Some("ann"));
        assert_eq!(v.tasks[0].status, "in_progress");

        let dir = tempfile::tempdir().unwrap();
        let empty = WorkspaceDoc::new(ActorId([2; 16]));
        assert_eq!(project(dir.path(), &empty, None).unwrap(), None);
        assert!(
            !memory_dir(dir.path()).exists(),
            "an empty memory writes nothing"
        );
        let p = project(dir.path(), &doc, None).unwrap().unwrap();
        let jsonl = std::fs::read_to_string(memory_dir(dir.path()).join("tasks.jsonl")).unwrap();
        assert_eq!(jsonl, p.tasks_jsonl);
        assert!(jsonl.contains("\"holder\"") || jsonl.contains("\"claims\""));
        assert!(memory_dir(dir.path()).join("decisions.md").exists());
        assert!(memory_dir(dir.path()).join("context.md").exists());

        // A repository that plants links: nothing is written through them.
        let evil = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path(), evil.path().join(".agentos")).unwrap();
        assert!(project(evil.path(), &doc, None).is_err());
        assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0);
        let evil = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(memory_dir(evil.path())).unwrap();
        let target = outside.path().join("victim");
        std::fs::write(&target, "keep").unwrap();
        std::os::unix::fs::symlink(&target, memory_dir(evil.path()).join("context.md")).unwrap();
        project(evil.path(), &doc, None).unwrap();
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep");
        let ctx = memory_dir(evil.path()).join("context.md");
        assert!(
            !std::fs::symlink_metadata(&ctx)
                .unwrap()
                .file_type()
                .is_symlink()
        );
    }
}
