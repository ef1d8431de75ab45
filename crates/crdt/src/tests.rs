//! Unit tests for the workspace document schema.

use crate::*;

fn actor(n: u8) -> ActorId {
    ActorId([n; 16])
}

fn rec(id: &str, name: &str, created: u64) -> AgentRecord {
    AgentRecord {
        id: AgentId(id.to_owned()),
        name: name.to_owned(),
        agent_type: "claude-code".to_owned(),
        command: vec!["claude".to_owned(), "--resume".to_owned(), "x y".to_owned()],
        cwd: "/home/u/proj".to_owned(),
        workspace: "ws".to_owned(),
        host_device: "laptop".to_owned(),
        env: vec![
            ("A".to_owned(), "1".to_owned()),
            ("B".to_owned(), "two".to_owned()),
        ],
        created_at_ms: created,
        pid: Some(4242),
        resume_id: Some("r-1".to_owned()),
        removed_at_ms: None,
        worktree: None,
        state: StateTransition::initial(created),
        transitions: Vec::new(),
    }
}

fn t(state: AgentState, source: &str, at_ms: u64) -> StateTransition {
    StateTransition {
        state,
        source: source.to_owned(),
        at_ms,
    }
}

fn session(name: &str) -> SessionRecord {
    SessionRecord {
        name: name.to_owned(),
        created_at_ms: 77,
        agents: vec![
            SavedAgent {
                name: "alpha".to_owned(),
                agent_type: "claude-code".to_owned(),
                command: vec!["claude".to_owned()],
                cwd: "/a".to_owned(),
                resume_id: Some("res".to_owned()),
                env: vec![("K".to_owned(), "V".to_owned())],
            },
            SavedAgent {
                name: "beta".to_owned(),
                agent_type: "shell".to_owned(),
                command: vec![],
                cwd: "/b".to_owned(),
                resume_id: None,
                env: vec![],
            },
        ],
    }
}

fn sorted(mut h: Vec<ChangeHash>) -> Vec<ChangeHash> {
    h.sort();
    h
}

#[test]
fn new_doc_has_schema() {
    let doc = WorkspaceDoc::new(actor(1));
    assert_eq!(doc.schema_version(), Some(SCHEMA_VERSION));
    assert!(doc.agents().is_empty());
    assert!(doc.sessions().is_empty());
    assert_eq!(doc.actor(), actor(1));
}

#[test]
fn agent_round_trip() {
    let mut doc = WorkspaceDoc::new(actor(1));
    let r = rec("a1", "alpha", 10);
    doc.upsert_agent(&r).unwrap();
    assert_eq!(doc.agent(&r.id), Some(r.clone()));
    assert_eq!(doc.agents(), vec![r.clone()]);
    assert_eq!(doc.agent(&AgentId("nope".to_owned())), None);
}

#[test]
fn upsert_updates_definition_but_keeps_transitions_and_runtime_fields() {
    let mut doc = WorkspaceDoc::new(actor(1));
    let mut r = rec("a1", "alpha", 10);
    doc.upsert_agent(&r).unwrap();
    doc.record_transition(&r.id, &t(AgentState::Running, "hook:Start", 20))
        .unwrap();
    doc.set_pid(&r.id, Some(7)).unwrap();

    r.cwd = "/elsewhere".to_owned();
    r.command = vec!["claude".to_owned()];
    r.env = vec![("B".to_owned(), "3".to_owned())];
    r.pid = None; // ignored on update
    r.resume_id = None; // ignored on update
    r.transitions.clear(); // ignored
    doc.upsert_agent(&r).unwrap();

    let got = doc.agent(&r.id).unwrap();
    assert_eq!(got.cwd, "/elsewhere");
    assert_eq!(got.command, vec!["claude".to_owned()]);
    assert_eq!(got.env, vec![("B".to_owned(), "3".to_owned())]);
    assert_eq!(got.pid, Some(7));
    assert_eq!(got.resume_id.as_deref(), Some("r-1"));
    assert_eq!(got.transitions.len(), 1);
    assert_eq!(got.state.state, AgentState::Running);
}

#[test]
fn identical_upsert_produces_no_change() {
    let mut doc = WorkspaceDoc::new(actor(1));
    let r = rec("a1", "alpha", 10);
    doc.upsert_agent(&r).unwrap();
    let heads = doc.heads();
    doc.upsert_agent(&r).unwrap();
    doc.upsert_session(&session("s")).unwrap();
    let heads2 = doc.heads();
    assert_ne!(heads, heads2);
    doc.upsert_session(&session("s")).unwrap();
    doc.mark_removed(&r.id, 5).unwrap();
    let heads3 = doc.heads();
    doc.mark_removed(&r.id, 6).unwrap();
    assert_eq!(doc.heads(), heads3);
    assert_eq!(doc.agent(&r.id).unwrap().removed_at_ms, Some(5));
}

#[test]
fn env_is_normalized_and_pruned() {
    let mut doc = WorkspaceDoc::new(actor(1));
    let mut r = rec("a1", "alpha", 10);
    r.env = vec![
        ("Z".to_owned(), "z".to_owned()),
        ("A".to_owned(), "old".to_owned()),
        ("A".to_owned(), "new".to_owned()),
    ];
    doc.upsert_agent(&r).unwrap();
    assert_eq!(
        doc.agent(&r.id).unwrap().env,
        vec![
            ("A".to_owned(), "new".to_owned()),
            ("Z".to_owned(), "z".to_owned())
        ]
    );
    r.env = vec![("Z".to_owned(), "z".to_owned())];
    doc.upsert_agent(&r).unwrap();
    assert_eq!(
        doc.agent(&r.id).unwrap().env,
        vec![("Z".to_owned(), "z".to_owned())]
    );
}

#[test]
fn current_state_is_last_by_time_then_list_order() {
    let mut doc = WorkspaceDoc::new(actor(1));
    let r = rec("a1", "alpha", 10);
    doc.upsert_agent(&r).unwrap();
    assert_eq!(
        doc.agent(&r.id).unwrap().state,
        StateTransition::initial(10)
    );

    doc.record_transition(&r.id, &t(AgentState::Running, "osc9", 30))
        .unwrap();
    doc.record_transition(&r.id, &t(AgentState::Waiting, "hook:Notification", 50))
        .unwrap();
    // Arrives late but happened earlier: must not become current.
    doc.record_transition(&r.id, &t(AgentState::Idle, "screen:prompt", 40))
        .unwrap();
    // Same timestamp as the current one: list order breaks the tie.
    doc.record_transition(
        &r.id,
        &t(
            AgentState::Error {
                message: "boom".to_owned(),
            },
            "process",
            50,
        ),
    )
    .unwrap();
    let got = doc.agent(&r.id).unwrap();
    let ats: Vec<u64> = got.transitions.iter().map(|t| t.at_ms).collect();
    assert_eq!(ats, vec![30, 40, 50, 50]);
    assert_eq!(
        got.state,
        t(
            AgentState::Error {
                message: "boom".to_owned()
            },
            "process",
            50
        )
    );
    assert!(got.state.state.is_terminal());

    doc.record_transition(&r.id, &t(AgentState::Exited { code: -9 }, "process", 60))
        .unwrap();
    let got = doc.agent(&r.id).unwrap();
    assert_eq!(got.state.state, AgentState::Exited { code: -9 });
    assert_eq!(got.state.state.label(), "exited");
}

#[test]
fn labels_and_terminality() {
    let all = [
        (AgentState::Starting, "starting", false),
        (AgentState::Running, "running", false),
        (AgentState::Idle, "idle", false),
        (AgentState::Waiting, "waiting", false),
        (AgentState::Exited { code: 0 }, "exited", true),
        (
            AgentState::Error {
                message: String::new(),
            },
            "error",
            true,
        ),
    ];
    for (s, label, terminal) in all {
        assert_eq!(s.label(), label);
        assert_eq!(s.is_terminal(), terminal, "{label}");
    }
}

#[test]
fn runtime_setters() {
    let mut doc = WorkspaceDoc::new(actor(1));
    let r = rec("a1", "alpha", 10);
    doc.upsert_agent(&r).unwrap();
    doc.set_pid(&r.id, None).unwrap();
    assert_eq!(doc.agent(&r.id).unwrap().pid, None);
    doc.set_pid(&r.id, Some(u32::MAX)).unwrap();
    assert_eq!(doc.agent(&r.id).unwrap().pid, Some(u32::MAX));
    doc.set_resume_id(&r.id, "r-2").unwrap();
    assert_eq!(doc.agent(&r.id).unwrap().resume_id.as_deref(), Some("r-2"));
}

#[test]
fn unknown_agent_is_an_error_and_changes_nothing() {
    let mut doc = WorkspaceDoc::new(actor(1));
    let heads = doc.heads();
    let ghost = AgentId("ghost".to_owned());
    let errs = [
        doc.record_transition(&ghost, &t(AgentState::Idle, "osc9", 1)),
        doc.set_pid(&ghost, Some(1)),
        doc.set_resume_id(&ghost, "x"),
        doc.mark_removed(&ghost, 1),
    ];
    for e in errs {
        assert!(matches!(e, Err(CrdtError::UnknownAgent(ref id)) if *id == ghost));
    }
    assert_eq!(doc.heads(), heads);
    assert!(doc.agents().is_empty());
}

#[test]
fn mark_removed_hides_from_find_by_name() {
    let mut doc = WorkspaceDoc::new(actor(1));
    let old = rec("a1", "alpha", 10);
    doc.upsert_agent(&old).unwrap();
    doc.upsert_agent(&rec("b1", "beta", 11)).unwrap();
    assert_eq!(doc.find_agent_by_name("alpha").unwrap().id, old.id);

    doc.mark_removed(&old.id, 99).unwrap();
    assert_eq!(doc.find_agent_by_name("alpha"), None);
    // Tombstoned, not deleted.
    assert_eq!(doc.agent(&old.id).unwrap().removed_at_ms, Some(99));
    assert_eq!(doc.agents().len(), 2);
    assert!(doc.find_agent_by_name("beta").is_some());

    // The name can be reused by a new agent.
    let new = rec("a2", "alpha", 20);
    doc.upsert_agent(&new).unwrap();
    assert_eq!(doc.find_agent_by_name("alpha").unwrap().id, new.id);
}

#[test]
fn agents_sorted_by_created_then_id() {
    let mut doc = WorkspaceDoc::new(actor(1));
    for (id, created) in [("c", 5), ("a", 9), ("b", 5), ("d", 1)] {
        doc.upsert_agent(&rec(id, id, created)).unwrap();
    }
    let ids: Vec<String> = doc.agents().into_iter().map(|a| a.id.0).collect();
    assert_eq!(ids, vec!["d", "b", "c", "a"]);
}

#[test]
fn sessions_round_trip() {
    let mut doc = WorkspaceDoc::new(actor(1));
    let s = session("work");
    doc.upsert_session(&s).unwrap();
    assert_eq!(doc.session("work"), Some(s.clone()));
    assert_eq!(doc.session("other"), None);

    let mut s2 = session("aaa");
    s2.agents.truncate(1);
    s2.agents[0].env = vec![
        ("Z".to_owned(), "1".to_owned()),
        ("A".to_owned(), "2".to_owned()),
    ];
    doc.upsert_session(&s2).unwrap();
    let got = doc.session("aaa").unwrap();
    assert_eq!(
        got.agents[0].env,
        vec![
            ("A".to_owned(), "2".to_owned()),
            ("Z".to_owned(), "1".to_owned())
        ]
    );

    // Update replaces the agent list.
    let mut s3 = s.clone();
    s3.agents.reverse();
    s3.created_at_ms = 1;
    doc.upsert_session(&s3).unwrap();
    assert_eq!(doc.session("work"), Some(s3.clone()));
    let names: Vec<String> = doc.sessions().into_iter().map(|s| s.name).collect();
    assert_eq!(names, vec!["aaa", "work"]);
}

#[test]
fn save_load_round_trip() {
    let mut doc = WorkspaceDoc::new(actor(1));
    let r = rec("a1", "alpha", 10);
    doc.upsert_agent(&r).unwrap();
    doc.record_transition(&r.id, &t(AgentState::Idle, "hook:Stop", 12))
        .unwrap();
    doc.upsert_session(&session("s")).unwrap();
    let bytes = doc.save();

    let mut loaded = WorkspaceDoc::load(&bytes, actor(2)).unwrap();
    assert_eq!(loaded.actor(), actor(2));
    assert_eq!(loaded.agents(), doc.agents());
    assert_eq!(loaded.sessions(), doc.sessions());
    assert_eq!(sorted(loaded.heads()), sorted(doc.heads()));
    // Loaded state counts as saved.
    assert!(loaded.save_incremental().is_empty());

    // The loaded replica keeps working and can sync back.
    loaded.set_pid(&r.id, Some(1)).unwrap();
    doc.merge(&mut loaded).unwrap();
    assert_eq!(doc.agent(&r.id).unwrap().pid, Some(1));
}

#[test]
fn incremental_chunks_concatenated_load() {
    let mut doc = WorkspaceDoc::new(actor(1));
    let mut file = Vec::new();
    let r = rec("a1", "alpha", 10);
    doc.upsert_agent(&r).unwrap();
    let first = doc.save_incremental();
    assert!(!first.is_empty());
    file.extend_from_slice(&first);
    assert!(doc.save_incremental().is_empty(), "nothing new");

    doc.record_transition(&r.id, &t(AgentState::Running, "osc9", 11))
        .unwrap();
    let second = doc.save_incremental();
    file.extend_from_slice(&second);
    doc.upsert_session(&session("s")).unwrap();
    doc.mark_removed(&r.id, 20).unwrap();
    file.extend_from_slice(&doc.save_incremental());

    let mut loaded = WorkspaceDoc::load(&file, actor(2)).unwrap();
    assert_eq!(loaded.agents(), doc.agents());
    assert_eq!(loaded.sessions(), doc.sessions());
    assert_eq!(sorted(loaded.heads()), sorted(doc.heads()));

    // A full save followed by later incremental chunks also loads.
    let mut snapshot = doc.save();
    doc.set_pid(&r.id, None).unwrap();
    snapshot.extend_from_slice(&doc.save_incremental());
    let loaded = WorkspaceDoc::load(&snapshot, actor(3)).unwrap();
    assert_eq!(loaded.agents(), doc.agents());

    // Chunks whose dependencies are missing are rejected.
    assert!(WorkspaceDoc::load(&second, actor(4)).is_err());
    // Garbage is rejected.
    assert!(WorkspaceDoc::load(b"definitely not automerge", actor(4)).is_err());
}

#[test]
fn load_empty_is_fresh_and_chunks_include_genesis() {
    let mut doc = WorkspaceDoc::load(&[], actor(1)).unwrap();
    assert_eq!(doc.schema_version(), Some(SCHEMA_VERSION));
    doc.upsert_agent(&rec("a1", "alpha", 1)).unwrap();
    let chunk = doc.save_incremental();
    let loaded = WorkspaceDoc::load(&chunk, actor(2)).unwrap();
    assert_eq!(loaded.agents(), doc.agents());
}

#[test]
fn independent_replicas_share_root_maps() {
    // Without a deterministic genesis, the two `agents` maps would conflict
    // and one replica's agents would vanish after merging.
    let mut a = WorkspaceDoc::new(actor(1));
    let mut b = WorkspaceDoc::new(actor(2));
    a.upsert_agent(&rec("a1", "alpha", 1)).unwrap();
    b.upsert_agent(&rec("b1", "beta", 2)).unwrap();
    a.upsert_session(&session("sa")).unwrap();
    b.upsert_session(&session("sb")).unwrap();
    a.merge(&mut b).unwrap();
    b.merge(&mut a).unwrap();
    assert_eq!(a.agents().len(), 2);
    assert_eq!(a.sessions().len(), 2);
    assert_eq!(a.agents(), b.agents());
    assert_eq!(sorted(a.heads()), sorted(b.heads()));
}

#[test]
fn concurrent_creation_of_same_agent_keeps_all_transitions() {
    let mut a = WorkspaceDoc::new(actor(1));
    let mut b = WorkspaceDoc::new(actor(2));
    let r = rec("x", "xeno", 1);
    a.upsert_agent(&r).unwrap();
    b.upsert_agent(&r).unwrap();
    a.record_transition(&r.id, &t(AgentState::Running, "osc9", 5))
        .unwrap();
    b.record_transition(&r.id, &t(AgentState::Idle, "hook:Stop", 7))
        .unwrap();
    a.merge(&mut b).unwrap();
    b.merge(&mut a).unwrap();
    let got = a.agent(&r.id).unwrap();
    assert_eq!(got.transitions.len(), 2);
    assert_eq!(got.state.state, AgentState::Idle);
    assert_eq!(Some(got), b.agent(&r.id));
}

#[test]
fn changes_since_and_apply() {
    let mut a = WorkspaceDoc::new(actor(1));
    let mut b = WorkspaceDoc::new(actor(2));
    a.upsert_agent(&rec("a1", "alpha", 1)).unwrap();
    let base = a.heads();
    b.apply_changes(&a.changes_since(&[])).unwrap();
    assert_eq!(b.agents(), a.agents());

    a.set_pid(&AgentId("a1".to_owned()), Some(9)).unwrap();
    let delta = a.changes_since(&base);
    assert_eq!(delta.len(), 1);
    // Twice, to check idempotence.
    b.apply_changes(&delta).unwrap();
    b.apply_changes(&delta).unwrap();
    assert_eq!(b.agents(), a.agents());
    assert_eq!(sorted(b.heads()), sorted(a.heads()));

    let before = b.heads();
    let err = b.apply_changes(&[vec![1, 2, 3]]);
    assert!(matches!(err, Err(CrdtError::InvalidChange(_))));
    assert_eq!(b.heads(), before);
}

#[test]
fn records_serde_round_trip() {
    let mut r = rec("a1", "alpha", 10);
    r.state = t(AgentState::Exited { code: 3 }, "process", 11);
    r.transitions = vec![r.state.clone()];
    let json = serde_json::to_string(&r).unwrap();
    assert_eq!(serde_json::from_str::<AgentRecord>(&json).unwrap(), r);
    let s = session("s");
    let json = serde_json::to_string(&s).unwrap();
    assert_eq!(serde_json::from_str::<SessionRecord>(&json).unwrap(), s);
}

// ------------------------------------------------------------ genesis v2

/// Hash of the v1 genesis change as every document since v1 holds it.
/// Must never change: a different v1 genesis would create a second set of
/// root maps next to the ones in every existing document.
const V1_GENESIS_HASH: &str = "92f5b5645477ae1a7c658cab9efcde29e4ce5a426ae59077b0709655b6c1889a";

/// The v1 genesis, rebuilt independently of the crate's code: what a v1
/// binary wrote.
fn v1_genesis() -> automerge::AutoCommit {
    use automerge::transaction::Transactable;
    let mut doc = automerge::AutoCommit::new().with_actor(automerge::ActorId::from([0u8; 16]));
    doc.put_object(automerge::ROOT, "agents", automerge::ObjType::Map)
        .unwrap();
    doc.put_object(automerge::ROOT, "sessions", automerge::ObjType::Map)
        .unwrap();
    doc.put(automerge::ROOT, "version", 1_u64).unwrap();
    doc.commit();
    doc
}

/// A v1-only document (no v2 genesis) writing as `a`.
fn v1_doc(a: ActorId) -> WorkspaceDoc {
    let mut raw = v1_genesis();
    raw.set_actor(a.into());
    WorkspaceDoc::from_raw_unmigrated(raw)
}

fn decode(bytes: &[u8]) -> automerge::Change {
    automerge::Change::try_from(bytes).unwrap()
}

fn hash_hex(h: &ChangeHash) -> String {
    h.0.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn genesis_v1_change_is_unchanged() {
    let mut raw = v1_genesis();
    let v1 = raw.get_heads();
    assert_eq!(v1.len(), 1);
    assert_eq!(hash_hex(&v1[0]), V1_GENESIS_HASH);

    let mut doc = WorkspaceDoc::new(actor(1));
    let changes: Vec<automerge::Change> =
        doc.changes_since(&[]).iter().map(|b| decode(b)).collect();
    assert_eq!(changes.len(), 3, "v1, v2 and v3 genesis");
    assert_eq!(changes[0].hash(), v1[0]);
}

#[test]
fn genesis_v2_change_is_deterministic() {
    let mut a = WorkspaceDoc::new(actor(1));
    let mut b = WorkspaceDoc::new(actor(2));
    let mut c = WorkspaceDoc::load(&[], actor(3)).unwrap();
    assert_eq!(a.heads(), b.heads());
    assert_eq!(a.heads(), c.heads());
    assert_eq!(a.changes_since(&[]), b.changes_since(&[]));

    let changes: Vec<automerge::Change> = a.changes_since(&[]).iter().map(|b| decode(b)).collect();
    let v2 = &changes[1];
    assert_eq!(v2.actor_id(), &automerge::ActorId::from([0u8; 16]));
    assert_eq!(v2.seq(), 2);
    assert_eq!(v2.timestamp(), 0);
    assert_eq!(v2.deps(), &[changes[0].hash()]);
    let v3 = &changes[2];
    assert_eq!((v3.seq(), v3.timestamp()), (3, 0));
    assert_eq!(v3.deps(), &[v2.hash()]);
    assert_eq!(a.heads(), vec![v3.hash()]);
    assert_eq!(a.schema_version(), Some(3));
    assert_eq!(SCHEMA_VERSION, 3);
    assert!(a.comments().is_empty());
    assert!(a.tasks().is_empty() && a.decisions().is_empty());
    assert_eq!(a.context(), "");
    // No local change was made: genesis is not this replica's.
    assert_eq!(a.last_local_change(), None);
}

#[test]
fn v1_document_migrates_on_load() {
    let mut v1 = v1_doc(actor(1));
    assert_eq!(v1.schema_version(), Some(1));
    assert_eq!(v1.comment("c-x"), None);
    // Without the `comments` root map nothing can be added (never lazily).
    let err = v1.add_comment(&comment("c-x", 1)).unwrap_err();
    assert!(matches!(err, CrdtError::Invalid(_)), "{err}");
    v1.upsert_agent(&rec("a1", "alpha", 1)).unwrap();
    let bytes = v1.save();

    let mut fresh = WorkspaceDoc::new(actor(9));
    let v2_hash = fresh.heads()[0];
    let mut loaded = WorkspaceDoc::load(&bytes, actor(2)).unwrap();
    assert_eq!(loaded.schema_version(), Some(SCHEMA_VERSION));
    assert_eq!(loaded.agents(), v1.agents());
    // The migration change is the very same change a fresh document has.
    let mut all: Vec<ChangeHash> = loaded
        .changes_since(&[])
        .iter()
        .map(|b| decode(b).hash())
        .collect();
    all.sort();
    assert!(all.contains(&v2_hash));
    assert_eq!(all.len(), 4, "v1 genesis, agent, v2 and v3 genesis");

    // The migration reaches disk with the next incremental save.
    let chunk = loaded.save_incremental();
    assert!(!chunk.is_empty());
    let mut file = bytes.clone();
    file.extend_from_slice(&chunk);
    let raw = automerge::AutoCommit::load(&file).unwrap();
    assert_eq!(
        automerge::ReadDoc::get(&raw, automerge::ROOT, "version")
            .unwrap()
            .map(|(v, _)| v.as_u64()),
        Some(Some(3))
    );
    // Loading an already migrated document adds nothing.
    let mut again = WorkspaceDoc::load(&file, actor(3)).unwrap();
    assert!(again.save_incremental().is_empty());
}

#[test]
fn independently_migrated_replicas_share_comments() {
    // A v1 document written by two v1 devices.
    let mut x = v1_doc(actor(1));
    let mut y = v1_doc(actor(2));
    x.upsert_agent(&rec("a1", "alpha", 1)).unwrap();
    y.upsert_agent(&rec("b1", "beta", 2)).unwrap();
    y.record_transition(&AgentId::from("b1"), &t(AgentState::Running, "osc9", 3))
        .unwrap();
    x.merge(&mut y).unwrap();
    assert_eq!(x.agents().len(), 2);
    let bytes = x.save();
    let agents = x.agents();

    // Two devices load (and migrate) it on their own.
    let mut r1 = WorkspaceDoc::load(&bytes, actor(3)).unwrap();
    let mut r2 = WorkspaceDoc::load(&bytes, actor(4)).unwrap();
    assert_eq!(sorted(r1.heads()), sorted(r2.heads()));
    let c1 = comment("c-one", 10);
    let mut c2 = comment("c-two", 11);
    c2.agent = "b1".to_owned();
    r1.add_comment(&c1).unwrap();
    r2.add_comment(&c2).unwrap();
    r2.react("c-two", "👍", "p2", "Pat", true).unwrap();

    r1.merge(&mut r2).unwrap();
    r2.merge(&mut r1).unwrap();
    let mut expected_c2 = c2.clone();
    expected_c2
        .reactions
        .entry("👍".to_owned())
        .or_default()
        .insert("p2".to_owned(), "Pat".to_owned());
    assert_eq!(r1.comments(), vec![c1.clone(), expected_c2]);
    assert_eq!(r1.comments(), r2.comments());
    assert_eq!(r1.agents(), agents);
    assert_eq!(r2.agents(), agents);
    assert_eq!(sorted(r1.heads()), sorted(r2.heads()));
    assert_eq!(r1.schema_version(), Some(SCHEMA_VERSION));

    // A replica that never saw v1 (fresh v2 document) merges too.
    let mut fresh = WorkspaceDoc::new(actor(5));
    fresh.add_comment(&comment("c-three", 12)).unwrap();
    fresh.merge(&mut r1).unwrap();
    assert_eq!(fresh.comments().len(), 3);
    assert_eq!(fresh.agents(), agents);
}

// --------------------------------------------------------------- comments

fn comment(id: &str, created: u64) -> Comment {
    Comment {
        id: id.to_owned(),
        agent: "a1".to_owned(),
        line: 42,
        line_hash: "deadbeef".to_owned(),
        line_text: "error: cannot borrow `x` as mutable".to_owned(),
        text: "this again?".to_owned(),
        author_id: "p1".to_owned(),
        author: "Ana".to_owned(),
        created_at_ms: created,
        ..Comment::default()
    }
}

fn people(pairs: &[(&str, &str)]) -> std::collections::BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

#[test]
fn comment_round_trip() {
    let mut doc = WorkspaceDoc::new(actor(1));
    let mut full = comment("c-full", 5);
    full.parent = Some("c-root".to_owned());
    full.resolved = true;
    full.resolved_by = Some("p2".to_owned());
    full.resolved_at_ms = Some(9);
    full.reactions
        .insert("🎉".to_owned(), people(&[("p1", "Ana"), ("p2", "Bo")]));
    full.reactions
        .insert("👍".to_owned(), people(&[("p3", "Cy")]));
    // Empty emoji entries are not stored.
    full.reactions.insert("👀".to_owned(), people(&[]));
    doc.add_comment(&full).unwrap();
    let root = comment("c-root", 5);
    doc.add_comment(&root).unwrap();
    let late = comment("c-a", 7);
    doc.add_comment(&late).unwrap();

    let mut expected = full.clone();
    expected.reactions.remove("👀");
    assert_eq!(doc.comment("c-full"), Some(expected.clone()));
    assert_eq!(doc.comment("c-nope"), None);
    // Sorted by (created_at_ms, id), tombstones included.
    assert_eq!(doc.comments(), vec![expected.clone(), root.clone(), late]);

    // A tombstone can be added as such (imported); its text is not stored.
    let mut dead = comment("c-dead", 1);
    dead.deleted_at_ms = Some(2);
    doc.add_comment(&dead).unwrap();
    let got = doc.comment("c-dead").unwrap();
    assert!(got.is_deleted());
    assert_eq!(got.text, "");

    // Persistence keeps them.
    let bytes = doc.save();
    let loaded = WorkspaceDoc::load(&bytes, actor(2)).unwrap();
    assert_eq!(loaded.comments(), doc.comments());
}

#[test]
fn add_comment_twice() {
    let mut doc = WorkspaceDoc::new(actor(1));
    let c = comment("c-1", 5);
    doc.add_comment(&c).unwrap();
    doc.react("c-1", "👍", "p1", "Ana", true).unwrap();
    let heads = doc.heads();
    // A retry (same content) is a no-op and keeps what happened since.
    let mut retry = c.clone();
    retry.resolved = true;
    doc.add_comment(&retry).unwrap();
    assert_eq!(doc.heads(), heads);
    assert!(!doc.comment("c-1").unwrap().resolved);
    assert_eq!(doc.comment("c-1").unwrap().reactions.len(), 1);

    let mut other = c.clone();
    other.text = "something else".to_owned();
    let err = doc.add_comment(&other).unwrap_err();
    assert!(matches!(err, CrdtError::CommentExists(ref id) if id == "c-1"));
    assert!(err.to_string().contains("c-1"), "{err}");
    assert_eq!(doc.heads(), heads);
}

#[test]
fn comment_limits_are_checked() {
    let mut doc = WorkspaceDoc::new(actor(1));
    doc.add_comment(&comment("c-ok", 1)).unwrap();
    let heads = doc.heads();

    let mut max = comment("c-max", 1);
    max.text = "é".repeat(MAX_COMMENT_TEXT_BYTES / 2);
    max.line_text = "é".repeat(MAX_LINE_TEXT_CHARS);
    max.reactions
        .insert("x".repeat(MAX_EMOJI_BYTES), people(&[("p", "P")]));
    let mut bad = Vec::new();
    let mut c = max.clone();
    c.text.push('x');
    bad.push(c);
    let mut c = max.clone();
    c.line_text.push('x');
    bad.push(c);
    let mut c = max.clone();
    c.id = String::new();
    bad.push(c);
    let mut c = max.clone();
    c.parent = Some(c.id.clone());
    bad.push(c);
    let mut c = max.clone();
    c.reactions.insert(String::new(), people(&[("p", "P")]));
    bad.push(c);
    let mut c = max.clone();
    c.reactions
        .insert("x".repeat(MAX_EMOJI_BYTES + 1), people(&[("p", "P")]));
    bad.push(c);
    let mut c = max.clone();
    c.reactions.insert("👍".to_owned(), people(&[("", "P")]));
    bad.push(c);
    for c in &bad {
        let err = doc.add_comment(c).unwrap_err();
        assert!(matches!(err, CrdtError::Invalid(_)), "{err}");
        assert!(err.to_string().starts_with("invalid input: "), "{err}");
    }
    let errs = [
        doc.react("c-ok", "", "p1", "Ana", true),
        doc.react("c-ok", &"x".repeat(MAX_EMOJI_BYTES + 1), "p1", "Ana", true),
        doc.react("c-ok", "👍", "", "Ana", false),
    ];
    for e in errs {
        assert!(matches!(e, Err(CrdtError::Invalid(_))), "{e:?}");
    }
    assert_eq!(doc.heads(), heads, "nothing written");
    assert_eq!(doc.comments().len(), 1);

    doc.add_comment(&max).unwrap();
    assert_eq!(doc.comment("c-max"), Some(max));
    // A four-byte emoji with a skin tone and joiners still fits.
    doc.react("c-ok", "👩🏽‍💻", "p1", "Ana", true).unwrap();
}

#[test]
fn unknown_comment_is_an_error_and_changes_nothing() {
    let mut doc = WorkspaceDoc::new(actor(1));
    let heads = doc.heads();
    let errs = [
        doc.resolve_comment("c-ghost", true, "p1", 1),
        doc.delete_comment("c-ghost", 1),
        doc.react("c-ghost", "👍", "p1", "Ana", true),
        doc.react("c-ghost", "👍", "p1", "Ana", false),
    ];
    for e in errs {
        let e = e.unwrap_err();
        assert!(matches!(e, CrdtError::CommentNotFound(ref id) if id == "c-ghost"));
        assert!(e.to_string().contains("unknown comment c-ghost"), "{e}");
    }
    assert_eq!(doc.heads(), heads);
}

#[test]
fn resolve_and_reopen() {
    let mut doc = WorkspaceDoc::new(actor(1));
    doc.add_comment(&comment("c-1", 1)).unwrap();
    doc.resolve_comment("c-1", true, "p2", 10).unwrap();
    let got = doc.comment("c-1").unwrap();
    assert!(got.resolved);
    assert_eq!(got.resolved_by.as_deref(), Some("p2"));
    assert_eq!(got.resolved_at_ms, Some(10));

    // Resolving again keeps the original resolver and writes nothing.
    let heads = doc.heads();
    doc.resolve_comment("c-1", true, "p3", 11).unwrap();
    assert_eq!(doc.heads(), heads);
    assert_eq!(
        doc.comment("c-1").unwrap().resolved_by.as_deref(),
        Some("p2")
    );

    doc.resolve_comment("c-1", false, "p3", 12).unwrap();
    let got = doc.comment("c-1").unwrap();
    assert_eq!(
        (got.resolved, got.resolved_by, got.resolved_at_ms),
        (false, None, None)
    );
    let heads = doc.heads();
    doc.resolve_comment("c-1", false, "p3", 13).unwrap();
    assert_eq!(doc.heads(), heads);
}

#[test]
fn delete_is_a_tombstone() {
    let mut doc = WorkspaceDoc::new(actor(1));
    doc.add_comment(&comment("c-1", 1)).unwrap();
    let mut reply = comment("c-2", 2);
    reply.parent = Some("c-1".to_owned());
    doc.add_comment(&reply).unwrap();
    doc.react("c-1", "👍", "p1", "Ana", true).unwrap();

    doc.delete_comment("c-1", 50).unwrap();
    let got = doc.comment("c-1").unwrap();
    assert_eq!(got.deleted_at_ms, Some(50));
    assert!(got.is_deleted());
    assert_eq!(got.text, "");
    assert_eq!(got.line_text, comment("c-1", 1).line_text);
    assert_eq!(got.reactions.len(), 1);
    assert_eq!(doc.comments().len(), 2, "still listed, reply intact");
    assert_eq!(doc.comment("c-2"), Some(reply));

    // Deleting again keeps the first time and writes nothing.
    let heads = doc.heads();
    doc.delete_comment("c-1", 60).unwrap();
    assert_eq!(doc.heads(), heads);
    // Later calls never bring it back.
    doc.resolve_comment("c-1", true, "p2", 70).unwrap();
    doc.react("c-1", "🎉", "p2", "Bo", true).unwrap();
    let got = doc.comment("c-1").unwrap();
    assert_eq!((got.deleted_at_ms, got.text.as_str()), (Some(50), ""));
    assert!(got.resolved);
}

#[test]
fn reactions_add_remove() {
    let mut doc = WorkspaceDoc::new(actor(1));
    doc.add_comment(&comment("c-1", 1)).unwrap();
    doc.react("c-1", "👍", "p1", "Ana", true).unwrap();
    doc.react("c-1", "👍", "p2", "Bo", true).unwrap();
    doc.react("c-1", "🎉", "p1", "Ana", true).unwrap();
    let heads = doc.heads();
    doc.react("c-1", "👍", "p1", "Ana", true).unwrap();
    doc.react("c-1", "👀", "p1", "Ana", false).unwrap();
    assert_eq!(doc.heads(), heads, "no-ops write nothing");

    let r = doc.comment("c-1").unwrap().reactions;
    assert_eq!(r["👍"], people(&[("p1", "Ana"), ("p2", "Bo")]));
    assert_eq!(r["🎉"], people(&[("p1", "Ana")]));

    // A new display name replaces the old one.
    doc.react("c-1", "👍", "p1", "Ana B.", true).unwrap();
    doc.react("c-1", "🎉", "p1", "Ana", false).unwrap();
    let r = doc.comment("c-1").unwrap().reactions;
    assert_eq!(r["👍"], people(&[("p1", "Ana B."), ("p2", "Bo")]));
    assert!(!r.contains_key("🎉"), "emptied emoji is not returned");
    // And it can come back.
    doc.react("c-1", "🎉", "p2", "Bo", true).unwrap();
    let r = doc.comment("c-1").unwrap().reactions;
    assert_eq!(r["🎉"], people(&[("p2", "Bo")]));
}

/// Two replicas sharing `c-1`.
fn pair_with_comment() -> (WorkspaceDoc, WorkspaceDoc) {
    let mut a = WorkspaceDoc::new(actor(1));
    let mut b = WorkspaceDoc::new(actor(2));
    a.add_comment(&comment("c-1", 1)).unwrap();
    b.merge(&mut a).unwrap();
    (a, b)
}

fn sync_both(a: &mut WorkspaceDoc, b: &mut WorkspaceDoc) {
    a.merge(b).unwrap();
    b.merge(a).unwrap();
    assert_eq!(a.comments(), b.comments());
}

#[test]
fn concurrent_first_reactions_with_one_emoji_union() {
    // Both replicas create the `👍` person map: the maps conflict, and
    // neither reaction may vanish.
    let (mut a, mut b) = pair_with_comment();
    a.react("c-1", "👍", "p1", "Ana", true).unwrap();
    b.react("c-1", "👍", "p2", "Bo", true).unwrap();
    sync_both(&mut a, &mut b);
    let r = a.comment("c-1").unwrap().reactions;
    assert_eq!(r["👍"], people(&[("p1", "Ana"), ("p2", "Bo")]));

    // Removing works whichever copy holds the key.
    b.react("c-1", "👍", "p1", "Ana", false).unwrap();
    a.react("c-1", "👍", "p2", "Bo", false).unwrap();
    sync_both(&mut a, &mut b);
    assert!(a.comment("c-1").unwrap().reactions.is_empty());
}

#[test]
fn concurrent_add_and_remove_of_a_reaction() {
    let (mut a, mut b) = pair_with_comment();
    a.react("c-1", "👍", "p1", "Ana", true).unwrap();
    sync_both(&mut a, &mut b);
    // Concurrent remove (b) and re-add with a new name (a): the add wins.
    b.react("c-1", "👍", "p1", "Ana", false).unwrap();
    a.react("c-1", "👍", "p1", "Ana B.", true).unwrap();
    sync_both(&mut a, &mut b);
    assert_eq!(
        a.comment("c-1").unwrap().reactions["👍"],
        people(&[("p1", "Ana B.")])
    );
    // Sequential: the later remove wins.
    b.react("c-1", "👍", "p1", "Ana", false).unwrap();
    sync_both(&mut a, &mut b);
    assert!(a.comment("c-1").unwrap().reactions.is_empty());
}

#[test]
fn delete_wins_over_concurrent_edits() {
    let (mut a, mut b) = pair_with_comment();
    a.delete_comment("c-1", 20).unwrap();
    b.resolve_comment("c-1", true, "p2", 30).unwrap();
    b.react("c-1", "👍", "p2", "Bo", true).unwrap();
    sync_both(&mut a, &mut b);
    let got = a.comment("c-1").unwrap();
    assert_eq!((got.deleted_at_ms, got.text.as_str()), (Some(20), ""));
    assert!(got.resolved);
    assert_eq!(got.reactions.len(), 1);

    // Concurrent deletions: deleted either way, at the earliest time.
    let (mut a, mut b) = pair_with_comment();
    a.delete_comment("c-1", 9).unwrap();
    b.delete_comment("c-1", 5).unwrap();
    sync_both(&mut a, &mut b);
    assert_eq!(a.comment("c-1").unwrap().deleted_at_ms, Some(5));
}

#[test]
fn concurrent_resolutions_never_mix_fields() {
    // Vary the op counters on each side so either writer can win.
    for extra_a in 0..3u64 {
        for extra_b in 0..3u64 {
            let (mut a, mut b) = pair_with_comment();
            for i in 0..extra_a {
                a.react("c-1", "👍", &format!("pa{i}"), "A", true).unwrap();
            }
            for i in 0..extra_b {
                b.react("c-1", "🎉", &format!("pb{i}"), "B", true).unwrap();
            }
            a.resolve_comment("c-1", true, "pa", 100).unwrap();
            b.resolve_comment("c-1", true, "pb", 200).unwrap();
            sync_both(&mut a, &mut b);
            let got = a.comment("c-1").unwrap();
            let pair = (got.resolved_by.as_deref(), got.resolved_at_ms);
            assert!(
                pair == (Some("pa"), Some(100)) || pair == (Some("pb"), Some(200)),
                "{pair:?}"
            );
            // Reopen on one side while the other resolves anew.
            a.resolve_comment("c-1", false, "pa", 300).unwrap();
            let winner_resolved_by = got.resolved_by.clone();
            sync_both(&mut a, &mut b);
            let got = b.comment("c-1").unwrap();
            assert_eq!(
                (got.resolved, got.resolved_by, got.resolved_at_ms),
                (false, None, None),
                "{winner_resolved_by:?}"
            );
        }
    }
}

#[test]
fn concurrent_creation_of_one_comment_id() {
    let mut a = WorkspaceDoc::new(actor(1));
    let mut b = WorkspaceDoc::new(actor(2));
    let c = comment("c-1", 1);
    a.add_comment(&c).unwrap();
    b.add_comment(&c).unwrap();
    a.react("c-1", "👍", "p1", "Ana", true).unwrap();
    b.react("c-1", "👍", "p2", "Bo", true).unwrap();
    b.delete_comment("c-1", 7).unwrap();
    sync_both(&mut a, &mut b);
    let got = a.comment("c-1").unwrap();
    assert_eq!(got.reactions["👍"], people(&[("p1", "Ana"), ("p2", "Bo")]));
    assert_eq!((got.deleted_at_ms, got.text.as_str()), (Some(7), ""));
    // Removal reaches every copy.
    b.react("c-1", "👍", "p1", "Ana", false).unwrap();
    sync_both(&mut a, &mut b);
    assert_eq!(
        a.comment("c-1").unwrap().reactions["👍"],
        people(&[("p2", "Bo")])
    );
}

#[test]
fn comment_serde_round_trip() {
    let mut c = comment("c-1", 1);
    c.parent = Some("c-0".to_owned());
    c.reactions
        .insert("👍".to_owned(), people(&[("p1", "Ana")]));
    let json = serde_json::to_string(&c).unwrap();
    assert_eq!(serde_json::from_str::<Comment>(&json).unwrap(), c);
    // Optional fields may be left out.
    let minimal = r#"{"id":"c-2","agent":"a","line":1,"line_hash":"00","line_text":"",
        "text":"hi","author_id":"p","author":"P","created_at_ms":3}"#;
    let c: Comment = serde_json::from_str(minimal).unwrap();
    assert!(!c.resolved && c.parent.is_none() && c.reactions.is_empty());
}
