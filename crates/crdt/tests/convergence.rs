//! Property tests: replicas converge regardless of delivery order, duplication and batching.

use std::collections::BTreeMap;

use agentos_crdt::{
    ActorId, AgentId, AgentRecord, AgentState, ChangeHash, CrdtError, SavedAgent, SessionRecord,
    StateTransition, WorkspaceDoc,
};
use proptest::prelude::*;

const IDS: [&str; 4] = ["a0", "a1", "a2", "a3"];
const NAMES: [&str; 3] = ["alpha", "beta", "gamma"];
const SESSIONS: [&str; 2] = ["morning", "night"];
const SOURCES: [&str; 4] = ["hook:Stop", "osc9", "screen:prompt", "process"];

#[derive(Debug, Clone)]
enum Op {
    Upsert {
        r: usize,
        id: usize,
        name: usize,
        created: u64,
        cwd: u8,
        env: Vec<(u8, u8)>,
        pid: Option<u32>,
    },
    Transition {
        r: usize,
        id: usize,
        state: AgentState,
        source: usize,
        at: u64,
    },
    Resume {
        r: usize,
        id: usize,
        resume: u8,
    },
    Pid {
        r: usize,
        id: usize,
        pid: Option<u32>,
    },
    Remove {
        r: usize,
        id: usize,
        at: u64,
    },
    Session {
        r: usize,
        name: usize,
        created: u64,
        agents: Vec<(usize, Option<u8>)>,
    },
    /// Partial mid-run synchronisation between two replicas.
    Sync {
        from: usize,
        to: usize,
        merge: bool,
    },
}

fn state_strategy() -> impl Strategy<Value = AgentState> {
    prop_oneof![
        Just(AgentState::Starting),
        Just(AgentState::Running),
        Just(AgentState::Idle),
        Just(AgentState::Waiting),
        (-3i32..3).prop_map(|code| AgentState::Exited { code }),
        "[a-z]{0,3}".prop_map(|message| AgentState::Error { message }),
    ]
}

fn op_strategy() -> impl Strategy<Value = Op> {
    let r = 0usize..3;
    let id = 0..IDS.len();
    prop_oneof![
        3 => (
            r.clone(),
            id.clone(),
            0..NAMES.len(),
            0u64..5,
            0u8..3,
            prop::collection::vec((0u8..3, 0u8..3), 0..3),
            prop::option::of(0u32..4),
        )
            .prop_map(|(r, id, name, created, cwd, env, pid)| Op::Upsert {
                r,
                id,
                name,
                created,
                cwd,
                env,
                pid
            }),
        4 => (r.clone(), id.clone(), state_strategy(), 0..SOURCES.len(), 0u64..6).prop_map(
            |(r, id, state, source, at)| Op::Transition {
                r,
                id,
                state,
                source,
                at
            }
        ),
        1 => (r.clone(), id.clone(), 0u8..3)
            .prop_map(|(r, id, resume)| Op::Resume { r, id, resume }),
        1 => (r.clone(), id.clone(), prop::option::of(0u32..4))
            .prop_map(|(r, id, pid)| Op::Pid { r, id, pid }),
        1 => (r.clone(), id.clone(), 0u64..10).prop_map(|(r, id, at)| Op::Remove { r, id, at }),
        1 => (
            r.clone(),
            0..SESSIONS.len(),
            0u64..5,
            prop::collection::vec((0..NAMES.len(), prop::option::of(0u8..3)), 0..3),
        )
            .prop_map(|(r, name, created, agents)| Op::Session {
                r,
                name,
                created,
                agents
            }),
        1 => (r.clone(), r, any::<bool>())
            .prop_map(|(from, to, merge)| Op::Sync { from, to, merge }),
    ]
}

fn agent_record(
    id: usize,
    name: usize,
    created: u64,
    cwd: u8,
    env: &[(u8, u8)],
    pid: Option<u32>,
) -> AgentRecord {
    AgentRecord {
        id: AgentId(IDS[id].to_owned()),
        name: NAMES[name].to_owned(),
        agent_type: "claude-code".to_owned(),
        command: vec!["claude".to_owned(), format!("--cwd={cwd}")],
        cwd: format!("/w/{cwd}"),
        workspace: "ws".to_owned(),
        host_device: format!("dev{cwd}"),
        env: env
            .iter()
            .map(|(k, v)| (format!("K{k}"), format!("v{v}")))
            .collect(),
        created_at_ms: created,
        pid,
        resume_id: None,
        removed_at_ms: None,
        worktree: None,
        state: StateTransition::initial(created),
        transitions: Vec::new(),
    }
}

fn session_record(name: usize, created: u64, agents: &[(usize, Option<u8>)]) -> SessionRecord {
    SessionRecord {
        name: SESSIONS[name].to_owned(),
        created_at_ms: created,
        agents: agents
            .iter()
            .map(|&(n, resume)| SavedAgent {
                name: NAMES[n].to_owned(),
                agent_type: "claude-code".to_owned(),
                command: vec!["claude".to_owned()],
                cwd: format!("/s/{n}"),
                resume_id: resume.map(|r| format!("res{r}")),
                env: vec![("S".to_owned(), format!("{n}"))],
            })
            .collect(),
    }
}

/// Operations on agents the replica does not know (yet) fail with
/// `UnknownAgent`; anything else is a bug.
fn tolerate_unknown(res: Result<(), CrdtError>) {
    match res {
        Ok(()) | Err(CrdtError::UnknownAgent(_)) => {}
        Err(e) => panic!("unexpected error: {e}"),
    }
}

fn two_mut<T>(v: &mut [T], a: usize, b: usize) -> (&mut T, &mut T) {
    assert_ne!(a, b);
    if a < b {
        let (l, r) = v.split_at_mut(b);
        (&mut l[a], &mut r[0])
    } else {
        let (l, r) = v.split_at_mut(a);
        (&mut r[0], &mut l[b])
    }
}

fn run_ops(replicas: &mut [WorkspaceDoc], ops: &[Op]) {
    let n = replicas.len();
    for op in ops {
        match op {
            Op::Upsert {
                r,
                id,
                name,
                created,
                cwd,
                env,
                pid,
            } => replicas[r % n]
                .upsert_agent(&agent_record(*id, *name, *created, *cwd, env, *pid))
                .unwrap(),
            Op::Transition {
                r,
                id,
                state,
                source,
                at,
            } => {
                let t = StateTransition {
                    state: state.clone(),
                    source: SOURCES[*source].to_owned(),
                    at_ms: *at,
                };
                tolerate_unknown(
                    replicas[r % n].record_transition(&AgentId(IDS[*id].to_owned()), &t),
                );
            }
            Op::Resume { r, id, resume } => tolerate_unknown(
                replicas[r % n]
                    .set_resume_id(&AgentId(IDS[*id].to_owned()), &format!("res{resume}")),
            ),
            Op::Pid { r, id, pid } => {
                tolerate_unknown(replicas[r % n].set_pid(&AgentId(IDS[*id].to_owned()), *pid))
            }
            Op::Remove { r, id, at } => {
                tolerate_unknown(replicas[r % n].mark_removed(&AgentId(IDS[*id].to_owned()), *at))
            }
            Op::Session {
                r,
                name,
                created,
                agents,
            } => replicas[r % n]
                .upsert_session(&session_record(*name, *created, agents))
                .unwrap(),
            Op::Sync { from, to, merge } => {
                let (from, to) = (from % n, to % n);
                if from == to {
                    continue;
                }
                let (src, dst) = two_mut(replicas, from, to);
                if *merge {
                    dst.merge(src).unwrap();
                } else {
                    let delta = src.changes_since(&dst.heads());
                    dst.apply_changes(&delta).unwrap();
                }
            }
        }
    }
}

/// SplitMix64: tiny deterministic PRNG driven by a proptest-generated seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }

    fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = self.below(i + 1);
            v.swap(i, j);
        }
    }
}

/// Apply `changes` in random-sized batches.
fn apply_in_batches(doc: &mut WorkspaceDoc, changes: &[Vec<u8>], rng: &mut Rng) {
    let mut rest = changes;
    while !rest.is_empty() {
        let k = 1 + rng.below(rest.len());
        let (batch, tail) = rest.split_at(k);
        doc.apply_changes(batch).unwrap();
        rest = tail;
    }
}

/// Deliver `all` to `doc`: shuffled, with duplicates, a random prefix first
/// and then the rest (re-shuffled, again with duplicates of the prefix).
fn deliver(doc: &mut WorkspaceDoc, all: &[Vec<u8>], seed: u64) {
    let mut rng = Rng(seed);
    let mut msgs: Vec<Vec<u8>> = all.to_vec();
    for _ in 0..rng.below(all.len() + 1) {
        let i = rng.below(all.len());
        msgs.push(all[i].clone());
    }
    rng.shuffle(&mut msgs);
    let split = rng.below(msgs.len() + 1);
    let (prefix, rest) = msgs.split_at(split);
    apply_in_batches(doc, prefix, &mut rng);
    let mut rest = rest.to_vec();
    for _ in 0..rng.below(prefix.len() + 1) {
        let i = rng.below(prefix.len());
        rest.push(prefix[i].clone());
    }
    rng.shuffle(&mut rest);
    apply_in_batches(doc, &rest, &mut rng);
}

fn sorted_heads(doc: &mut WorkspaceDoc) -> Vec<ChangeHash> {
    let mut h = doc.heads();
    h.sort();
    h
}

type Snapshot = (Vec<AgentRecord>, Vec<SessionRecord>, Vec<ChangeHash>);

fn snapshot(doc: &mut WorkspaceDoc) -> Snapshot {
    (doc.agents(), doc.sessions(), sorted_heads(doc))
}

fn make_replicas(n: usize) -> Vec<WorkspaceDoc> {
    (0..n)
        .map(|i| WorkspaceDoc::new(ActorId([i as u8 + 1; 16])))
        .collect()
}

fn all_changes(replicas: &mut [WorkspaceDoc]) -> Vec<Vec<u8>> {
    replicas
        .iter_mut()
        .flat_map(|r| r.changes_since(&[]))
        .collect()
}

/// Apply `ops` to one replica and to a plain in-memory model; compare.
fn check_against_model(ops: &[Op]) -> Result<(), TestCaseError> {
    let mut one = vec![WorkspaceDoc::new(ActorId([1; 16]))];
    let mut agents: BTreeMap<AgentId, AgentRecord> = BTreeMap::new();
    let mut sessions: BTreeMap<String, SessionRecord> = BTreeMap::new();
    for op in ops {
        // Route everything to the single replica.
        let op = match op.clone() {
            Op::Sync { .. } => continue,
            Op::Upsert {
                id,
                name,
                created,
                cwd,
                env,
                pid,
                ..
            } => Op::Upsert {
                r: 0,
                id,
                name,
                created,
                cwd,
                env,
                pid,
            },
            Op::Transition {
                id,
                state,
                source,
                at,
                ..
            } => Op::Transition {
                r: 0,
                id,
                state,
                source,
                at,
            },
            Op::Resume { id, resume, .. } => Op::Resume { r: 0, id, resume },
            Op::Pid { id, pid, .. } => Op::Pid { r: 0, id, pid },
            Op::Remove { id, at, .. } => Op::Remove { r: 0, id, at },
            Op::Session {
                name,
                created,
                agents,
                ..
            } => Op::Session {
                r: 0,
                name,
                created,
                agents,
            },
        };
        run_ops(&mut one, std::slice::from_ref(&op));

        match op {
            Op::Upsert {
                id,
                name,
                created,
                cwd,
                env,
                pid,
                ..
            } => {
                let mut rec = agent_record(id, name, created, cwd, &env, pid);
                rec.env = rec
                    .env
                    .into_iter()
                    .collect::<BTreeMap<_, _>>()
                    .into_iter()
                    .collect();
                match agents.get_mut(&rec.id) {
                    Some(cur) => {
                        rec.pid = cur.pid;
                        rec.resume_id = cur.resume_id.clone();
                        rec.removed_at_ms = cur.removed_at_ms;
                        rec.transitions = cur.transitions.clone();
                        *cur = rec;
                    }
                    None => {
                        agents.insert(rec.id.clone(), rec);
                    }
                }
            }
            Op::Transition {
                id,
                state,
                source,
                at,
                ..
            } => {
                if let Some(a) = agents.get_mut(&AgentId(IDS[id].to_owned())) {
                    a.transitions.push(StateTransition {
                        state,
                        source: SOURCES[source].to_owned(),
                        at_ms: at,
                    });
                    a.transitions.sort_by_key(|t| t.at_ms);
                }
            }
            Op::Resume { id, resume, .. } => {
                if let Some(a) = agents.get_mut(&AgentId(IDS[id].to_owned())) {
                    a.resume_id = Some(format!("res{resume}"));
                }
            }
            Op::Pid { id, pid, .. } => {
                if let Some(a) = agents.get_mut(&AgentId(IDS[id].to_owned())) {
                    a.pid = pid;
                }
            }
            Op::Remove { id, at, .. } => {
                if let Some(a) = agents.get_mut(&AgentId(IDS[id].to_owned())) {
                    a.removed_at_ms.get_or_insert(at);
                }
            }
            Op::Session {
                name,
                created,
                agents: sa,
                ..
            } => {
                let s = session_record(name, created, &sa);
                sessions.insert(s.name.clone(), s);
            }
            Op::Sync { .. } => unreachable!("filtered above"),
        }
    }
    let mut expected: Vec<AgentRecord> = agents
        .into_values()
        .map(|mut a| {
            a.state = a
                .transitions
                .last()
                .cloned()
                .unwrap_or_else(|| StateTransition::initial(a.created_at_ms));
            a
        })
        .collect();
    expected.sort_by(|a, b| (a.created_at_ms, &a.id).cmp(&(b.created_at_ms, &b.id)));
    let doc = &one[0];
    prop_assert_eq!(doc.agents(), expected.clone());
    for name in NAMES {
        let live = expected
            .iter()
            .rfind(|a| a.name == name && a.removed_at_ms.is_none());
        let found = doc.find_agent_by_name(name);
        prop_assert_eq!(found.as_ref(), live);
    }
    prop_assert_eq!(doc.sessions(), sessions.into_values().collect::<Vec<_>>());
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn replicas_converge(
        n in 2usize..=3,
        ops in prop::collection::vec(op_strategy(), 0..40),
        seeds in prop::collection::vec(any::<u64>(), 3),
    ) {
        let mut replicas = make_replicas(n);
        run_ops(&mut replicas, &ops);
        let all = all_changes(&mut replicas);

        for (i, doc) in replicas.iter_mut().enumerate() {
            deliver(doc, &all, seeds[i]);
        }

        // Reference: a fresh replica that merges everyone.
        let mut reference = WorkspaceDoc::new(ActorId([9; 16]));
        for doc in replicas.iter_mut() {
            reference.merge(doc).unwrap();
        }
        let expected = snapshot(&mut reference);
        // Everything that was written is visible somewhere.
        let touched = ops.iter().any(|o| matches!(o, Op::Upsert { .. } | Op::Session { .. }));
        prop_assert_eq!(touched, !expected.0.is_empty() || !expected.1.is_empty());

        // Nothing written on any replica is shadowed by a conflict.
        let upserted: std::collections::BTreeSet<&str> = ops
            .iter()
            .filter_map(|o| match o {
                Op::Upsert { id, .. } => Some(IDS[*id]),
                _ => None,
            })
            .collect();
        let present: std::collections::BTreeSet<&str> =
            expected.0.iter().map(|a| a.id.as_str()).collect();
        prop_assert_eq!(&present, &upserted);
        let saved: std::collections::BTreeSet<&str> = ops
            .iter()
            .filter_map(|o| match o {
                Op::Session { name, .. } => Some(SESSIONS[*name]),
                _ => None,
            })
            .collect();
        let present: std::collections::BTreeSet<&str> =
            expected.1.iter().map(|s| s.name.as_str()).collect();
        prop_assert_eq!(&present, &saved);

        for doc in replicas.iter_mut() {
            prop_assert_eq!(&snapshot(doc), &expected);
        }

        // Persistence preserves the converged state.
        let bytes = replicas[0].save();
        let mut loaded = WorkspaceDoc::load(&bytes, ActorId([8; 16])).unwrap();
        prop_assert_eq!(&snapshot(&mut loaded), &expected);
    }

    #[test]
    fn applying_changes_twice_is_a_noop(
        n in 2usize..=3,
        ops in prop::collection::vec(op_strategy(), 0..30),
        seed in any::<u64>(),
    ) {
        let mut replicas = make_replicas(n);
        run_ops(&mut replicas, &ops);
        let all = all_changes(&mut replicas);

        // Partial batch applied twice (some changes may be queued for
        // missing dependencies) equals applying it once.
        let mut rng = Rng(seed);
        let mut subset = all.clone();
        rng.shuffle(&mut subset);
        subset.truncate(rng.below(all.len() + 1));

        let mut once = WorkspaceDoc::new(ActorId([7; 16]));
        once.apply_changes(&subset).unwrap();
        let mut twice = WorkspaceDoc::new(ActorId([7; 16]));
        twice.apply_changes(&subset).unwrap();
        let after_first = snapshot(&mut twice);
        twice.apply_changes(&subset).unwrap();
        prop_assert_eq!(&snapshot(&mut twice), &after_first);
        prop_assert_eq!(&snapshot(&mut once), &after_first);

        // Fully synced replica: re-applying everything changes nothing.
        let target = &mut replicas[0];
        target.apply_changes(&all).unwrap();
        let before = snapshot(target);
        let count = target.changes_since(&[]).len();
        let mut again = all.clone();
        rng.shuffle(&mut again);
        target.apply_changes(&again).unwrap();
        target.apply_changes(&all).unwrap();
        prop_assert_eq!(&snapshot(target), &before);
        prop_assert_eq!(target.changes_since(&[]).len(), count);
    }

    /// A single replica behaves like a plain in-memory model.
    #[test]
    fn single_replica_matches_model(ops in prop::collection::vec(op_strategy(), 0..40)) {
        check_against_model(&ops)?;
    }
}
