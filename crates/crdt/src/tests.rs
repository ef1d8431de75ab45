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
