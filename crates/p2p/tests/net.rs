//! Real libp2p swarms on loopback: a change reaches a connected member by
//! gossip, a member that connects later catches up by Automerge sync over
//! request-response, and a device outside the roster gets nothing.

use agentos_crdt::{ActorId, AgentId, AgentRecord, StateTransition, WorkspaceDoc};
use agentos_p2p::DeviceIdentity;
use agentos_p2p::engine::Engine;
use agentos_p2p::net::{Node, run_all};
use agentos_p2p::roster::Roster;
use std::time::Duration;

const T: Duration = Duration::from_secs(20);

fn record(name: &str) -> AgentRecord {
    AgentRecord {
        id: AgentId(format!("id-{name}")),
        name: name.into(),
        agent_type: "shell".into(),
        command: vec!["bash".into()],
        cwd: "/w".into(),
        workspace: "ws".into(),
        host_device: "x".into(),
        env: vec![],
        created_at_ms: 1,
        pid: None,
        resume_id: None,
        removed_at_ms: None,
        worktree: None,
        state: StateTransition::initial(1),
        transitions: vec![],
    }
}

fn seed(n: u8) -> [u8; 32] {
    [n; 32]
}

/// Nodes for devices 1..=members (paired), plus strangers.
fn nodes(members: u8, strangers: &[u8]) -> Vec<Node> {
    let owner = DeviceIdentity::from_seed(seed(1));
    let mut roster = Roster::create(&owner, "d1");
    for d in 2..=members {
        roster
            .add(
                &owner,
                DeviceIdentity::from_seed(seed(d)).public_key(),
                &format!("d{d}"),
            )
            .unwrap();
    }
    let entries = roster.entries().to_vec();
    (1..=members)
        .chain(strangers.iter().copied())
        .map(|d| {
            let me = DeviceIdentity::from_seed(seed(d));
            // A stranger has its own, different workspace roster.
            let r = if d <= members {
                Roster::replay(&entries, Some(&me)).unwrap()
            } else {
                Roster::create(&me, "stranger")
            };
            let engine = Engine::new(me, "ws", WorkspaceDoc::new(ActorId([d; 16])), r, 0);
            let mut n = Node::new(seed(d), "ws", engine).unwrap();
            n.listen("/ip4/127.0.0.1/tcp/0".parse().unwrap()).unwrap();
            n
        })
        .collect()
}

fn has(n: &mut Node, name: &str) -> bool {
    n.engine.doc.agents().iter().any(|a| a.name == name)
}

#[tokio::test]
async fn gossip_and_catch_up_between_members_only() {
    let mut v = nodes(2, &[9]);
    let (a, rest) = v.split_at_mut(1);
    let (b, c) = rest.split_at_mut(1);
    let (a, b, c) = (&mut a[0], &mut b[0], &mut c[0]);
    // Listening addresses appear once the swarms run.
    assert!(a.run_until(T, |n| !n.listeners().is_empty()).await);
    let addr = a.listeners()[0].clone();
    // A writes before anyone is connected: B must catch up by sync.
    a.write(|d| d.upsert_agent(&record("before"))).unwrap();
    b.dial(addr.clone()).unwrap();
    c.dial(addr).unwrap();
    let ok = run_all(&mut [&mut *a, &mut *b, &mut *c], T, |ns| {
        ns[1].engine.doc.agents().iter().any(|x| x.name == "before")
    })
    .await;
    assert!(ok, "B did not catch up by sync");
    // Now a live change travels by gossip (and sync) to B.
    a.write(|d| d.upsert_agent(&record("live"))).unwrap();
    let ok = run_all(&mut [&mut *a, &mut *b, &mut *c], T, |ns| {
        ns[1].engine.doc.agents().iter().any(|x| x.name == "live")
    })
    .await;
    assert!(ok, "B did not receive the live change");
    // B's own change reaches A.
    b.write(|d| d.upsert_agent(&record("from-b"))).unwrap();
    let ok = run_all(&mut [&mut *a, &mut *b, &mut *c], T, |ns| {
        ns[0].engine.doc.agents().iter().any(|x| x.name == "from-b")
    })
    .await;
    assert!(ok, "A did not receive B's change");
    // The stranger, connected the whole time, learned nothing.
    assert!(!has(c, "before") && !has(c, "live") && !has(c, "from-b"));
    assert_eq!(a.engine.doc.heads(), b.engine.doc.heads());
}
