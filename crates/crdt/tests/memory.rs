//! Property tests for the workspace memory (tasks, decisions, context):
//! replicas that make concurrent changes and merge in any order converge
//! to the same tasks, decisions, context and projections; the earliest
//! claim always holds a task; nothing is ever removed.

use agentos_crdt::{
    ActorId, CrdtError, Decision, Task, TaskEdit, TaskStatus, WorkspaceDoc, decisions_md,
    tasks_jsonl,
};
use proptest::prelude::*;

const TIDS: [&str; 3] = ["t-aaaaaaaa", "t-bbbbbbbb", "t-cccccccc"];
const DIDS: [&str; 2] = ["d-aaaaaaaa", "d-bbbbbbbb"];
const PEOPLE: [&str; 3] = ["ann", "bob", "cat"];
const LINES: [&str; 4] = ["goal: ship", "tests: nextest", "style: small commits", ""];

#[derive(Debug, Clone)]
enum Op {
    AddTask {
        r: usize,
        t: usize,
    },
    Claim {
        r: usize,
        t: usize,
        p: usize,
        at: u64,
    },
    Release {
        r: usize,
        t: usize,
        p: usize,
    },
    Status {
        r: usize,
        t: usize,
        s: u8,
    },
    Close {
        r: usize,
        t: usize,
    },
    DeleteTask {
        r: usize,
        t: usize,
        at: u64,
    },
    AddDecision {
        r: usize,
        d: usize,
    },
    DeleteDecision {
        r: usize,
        d: usize,
        at: u64,
    },
    Context {
        r: usize,
        lines: Vec<usize>,
    },
    Sync {
        from: usize,
        to: usize,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let r = 0usize..3;
    let t = 0..TIDS.len();
    let p = 0..PEOPLE.len();
    prop_oneof![
        3 => (r.clone(), t.clone()).prop_map(|(r, t)| Op::AddTask { r, t }),
        4 => (r.clone(), t.clone(), p.clone(), 1u64..50).prop_map(|(r, t, p, at)| Op::Claim { r, t, p, at }),
        2 => (r.clone(), t.clone(), p).prop_map(|(r, t, p)| Op::Release { r, t, p }),
        2 => (r.clone(), t.clone(), 0u8..3).prop_map(|(r, t, s)| Op::Status { r, t, s }),
        1 => (r.clone(), t.clone()).prop_map(|(r, t)| Op::Close { r, t }),
        1 => (r.clone(), t, 1u64..50).prop_map(|(r, t, at)| Op::DeleteTask { r, t, at }),
        2 => (r.clone(), 0..DIDS.len()).prop_map(|(r, d)| Op::AddDecision { r, d }),
        1 => (r.clone(), 0..DIDS.len(), 1u64..50).prop_map(|(r, d, at)| Op::DeleteDecision { r, d, at }),
        3 => (r.clone(), prop::collection::vec(0..LINES.len(), 0..4)).prop_map(|(r, lines)| Op::Context { r, lines }),
        4 => (r.clone(), r).prop_map(|(from, to)| Op::Sync { from, to }),
    ]
}

fn task(id: &str) -> Task {
    Task {
        id: id.into(),
        title: format!("title of {id}"),
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

/// Errors an operation may legitimately get (unknown id on this replica,
/// taken id, someone else's claim, closed task).
fn expected(e: &CrdtError) -> bool {
    matches!(
        e,
        CrdtError::TaskNotFound(_)
            | CrdtError::DecisionNotFound(_)
            | CrdtError::TaskClaimed { .. }
            | CrdtError::Invalid(_)
    )
}

fn run(replicas: &mut [WorkspaceDoc], ops: &[Op]) -> Result<(), TestCaseError> {
    let mut clock = 100;
    for op in ops {
        clock += 1;
        let res = match op {
            Op::AddTask { r, t } => replicas[*r].add_task(&task(TIDS[*t])),
            Op::Claim { r, t, p, at } => {
                let before = replicas[*r].task(TIDS[*t]);
                let res = replicas[*r]
                    .claim_task(TIDS[*t], PEOPLE[*p], *at)
                    .map(|_| ());
                // The local compare-and-swap: refused exactly when someone
                // else holds it (or it is closed, deleted, unknown).
                if let Some(b) = before {
                    let other = b.holder().is_some_and(|h| h.by != PEOPLE[*p]);
                    let dead = b.deleted_at_ms.is_some() || b.status == TaskStatus::Closed;
                    prop_assert_eq!(res.is_err(), other || dead, "{:?}", b);
                }
                res
            }
            Op::Release { r, t, p } => replicas[*r].release_task(TIDS[*t], PEOPLE[*p], clock),
            Op::Status { r, t, s } => {
                let status = [
                    TaskStatus::Open,
                    TaskStatus::Blocked,
                    TaskStatus::InProgress,
                ][*s as usize];
                let edit = TaskEdit {
                    status: Some(status),
                    ..Default::default()
                };
                replicas[*r].update_task(TIDS[*t], &edit, clock)
            }
            Op::Close { r, t } => replicas[*r].close_task(TIDS[*t], Some("done"), clock),
            Op::DeleteTask { r, t, at } => replicas[*r].delete_task(TIDS[*t], *at),
            Op::AddDecision { r, d } => replicas[*r].add_decision(&Decision {
                id: DIDS[*d].into(),
                text: format!("decided {d}"),
                by: "ann".into(),
                at_ms: 10 + *d as u64,
                deleted_at_ms: None,
            }),
            Op::DeleteDecision { r, d, at } => replicas[*r].delete_decision(DIDS[*d], *at),
            Op::Context { r, lines } => {
                let text: String = lines.iter().map(|i| format!("{}\n", LINES[*i])).collect();
                replicas[*r].set_context(&text)
            }
            Op::Sync { from, to } => {
                if from != to {
                    let (a, b) = if from < to {
                        let (l, h) = replicas.split_at_mut(*to);
                        (&mut l[*from], &mut h[0])
                    } else {
                        let (l, h) = replicas.split_at_mut(*from);
                        (&mut h[0], &mut l[*to])
                    };
                    b.merge(a).unwrap();
                }
                Ok(())
            }
        };
        if let Err(e) = res {
            prop_assert!(expected(&e), "unexpected error {e}");
        }
    }
    Ok(())
}

fn state(d: &WorkspaceDoc) -> (Vec<Task>, Vec<Decision>, String, String, String) {
    let tasks = d.tasks();
    let decisions = d.decisions();
    let jsonl = tasks_jsonl(&tasks);
    let md = decisions_md(&decisions);
    (tasks, decisions, d.context(), jsonl, md)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn memory_replicas_converge(ops in prop::collection::vec(op(), 0..50)) {
        let mut replicas: Vec<WorkspaceDoc> =
            (1..=3u8).map(|i| WorkspaceDoc::new(ActorId([i; 16]))).collect();
        run(&mut replicas, &ops)?;
        // Every replica's history: the tasks and decisions ever added stay.
        let added: std::collections::BTreeSet<String> = replicas
            .iter()
            .flat_map(|r| r.tasks().into_iter().map(|t| t.id))
            .collect();
        let mut reference = WorkspaceDoc::new(ActorId([9; 16]));
        for r in replicas.iter_mut() {
            reference.merge(r).unwrap();
        }
        for r in replicas.iter_mut() {
            r.merge(&mut reference).unwrap();
        }
        let want = state(&reference);
        for r in &replicas {
            prop_assert_eq!(&state(r), &want);
        }
        let ids: std::collections::BTreeSet<String> = want.0.iter().map(|t| t.id.clone()).collect();
        prop_assert_eq!(ids, added, "nothing is removed");
        for t in &want.0 {
            // Claims are sorted: the holder is the earliest lease.
            let mut sorted = t.claims.clone();
            sorted.sort();
            prop_assert_eq!(&sorted, &t.claims);
            prop_assert_eq!(tasks_jsonl(std::slice::from_ref(t)).lines().count(), 1);
        }
        // Persistence keeps it.
        let bytes = reference.save();
        let loaded = WorkspaceDoc::load(&bytes, ActorId([8; 16])).unwrap();
        prop_assert_eq!(state(&loaded), want);
    }
}
