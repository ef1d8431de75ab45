//! The P2P sync engine's costs: in process, bytes on the wire per small
//! change, sealing + opening + applying one change (p50/p95), and the
//! first sync of a workspace of 5,000 agents between two engines (bytes,
//! messages, time); over real libp2p swarms on loopback, the latency of
//! one change and the time two devices that wrote apart (a partition)
//! take to converge once they reconnect.

use crate::report::Row;
use crate::stats::{Unit, median, percentile, secs};
use agentos_crdt::{ActorId, AgentId, AgentRecord, StateTransition, WorkspaceDoc};
use agentos_p2p::DeviceIdentity;
use agentos_p2p::engine::{Engine, Out};
use agentos_p2p::roster::Roster;
use std::time::Instant;

fn record(i: usize) -> AgentRecord {
    AgentRecord {
        id: AgentId(format!("agent-{i}")),
        name: format!("task-{i}"),
        agent_type: "claude-code".into(),
        command: vec!["claude".into()],
        cwd: "/home/u/project/.shards/claude-x".into(),
        workspace: "/home/u/project/.git".into(),
        host_device: "ABCDEFG".into(),
        env: vec![],
        created_at_ms: 1_700_000_000_000 + i as u64,
        pid: Some(1000 + i as u32),
        resume_id: None,
        removed_at_ms: None,
        worktree: None,
        state: StateTransition::initial(1_700_000_000_000),
        transitions: vec![],
    }
}

fn pair() -> (Engine, Engine, [u8; 32], [u8; 32]) {
    let a = DeviceIdentity::from_seed([1; 32]);
    let b = DeviceIdentity::from_seed([2; 32]);
    let (ka, kb) = (a.public_key(), b.public_key());
    let mut roster = Roster::create(&a, "a");
    roster.add(&a, kb, "b").expect("pairing b");
    let entries = roster.entries().to_vec();
    let ra = Roster::replay(&entries, Some(&a)).expect("roster");
    let rb = Roster::replay(&entries, Some(&b)).expect("roster");
    let ea = Engine::new(a, "ws", WorkspaceDoc::new(ActorId([1; 16])), ra, 0);
    let eb = Engine::new(b, "ws", WorkspaceDoc::new(ActorId([2; 16])), rb, 0);
    (ea, eb, ka, kb)
}

/// Connect `a` (key `ka`) and `b` (key `kb`) in process and run Automerge
/// sync until neither has anything to send; returns (bytes, messages).
/// Both engines stay "connected" to each other afterwards.
fn sync_in_process(a: &mut Engine, b: &mut Engine, ka: [u8; 32], kb: [u8; 32]) -> (usize, usize) {
    let (mut bytes, mut messages) = (0usize, 0usize);
    let mut queue: Vec<(bool, Vec<u8>)> = Vec::new();
    for o in a.connected(kb) {
        if let Out::Sync { message, .. } = o {
            queue.push((true, message));
        }
    }
    for o in b.connected(ka) {
        if let Out::Sync { message, .. } = o {
            queue.push((false, message));
        }
    }
    while let Some((from_a, msg)) = queue.pop() {
        bytes += msg.len();
        messages += 1;
        let outs = if from_a {
            b.receive_sync(ka, &msg)
        } else {
            a.receive_sync(kb, &msg)
        };
        for o in outs {
            if let Out::Sync { message, .. } = o {
                queue.push((!from_a, message));
            }
        }
    }
    (bytes, messages)
}

pub fn p2p(n_changes: usize, n_agents: usize) -> Vec<Row> {
    crate::bench::progress(&format!(
        "p2p: {n_changes} small changes, first sync of {n_agents} agents"
    ));
    // 1. One small change (a state transition) from A to B as an envelope.
    let (mut a, mut b, _, _) = pair();
    a.write(|d| d.upsert_agent(&record(0))).expect("write");
    for out in a.write(|d| d.upsert_agent(&record(0))).unwrap_or_default() {
        if let Out::Gossip { envelope } = out {
            let _ = b.receive_envelope(&envelope);
        }
    }
    let mut sizes = Vec::new();
    let mut times = Vec::new();
    for i in 0..n_changes {
        let t = Instant::now();
        let outs = a
            .write(|d| {
                d.record_transition(
                    &AgentId("agent-0".into()),
                    &StateTransition {
                        state: if i % 2 == 0 {
                            agentos_crdt::AgentState::Running
                        } else {
                            agentos_crdt::AgentState::Idle
                        },
                        source: "hook:Stop".into(),
                        at_ms: 1_700_000_000_000 + i as u64,
                    },
                )
            })
            .expect("write");
        for out in outs {
            if let Out::Gossip { envelope } = out {
                sizes.push(envelope.len() as f64);
                b.receive_envelope(&envelope).expect("opens");
            }
        }
        times.push(secs(t.elapsed()));
    }
    // 2. First sync of a big workspace: A has n_agents, B nothing.
    let (mut a, mut b, ka, kb) = pair();
    a.write(|d| {
        for i in 0..n_agents {
            d.upsert_agent(&record(i))?;
        }
        Ok(())
    })
    .expect("write");
    let t = Instant::now();
    let (bytes, messages) = sync_in_process(&mut a, &mut b, ka, kb);
    let first = secs(t.elapsed());
    let converged = a.doc.heads() == b.doc.heads();
    vec![
        Row::new(
            "Bytes per small change on the wire (sealed envelope, median)",
            Unit::Bytes,
        )
        .agentos(median(&sizes))
        .note(format!(
            "max {:.0} B; gossipsub limit 64 KiB",
            percentile(&sizes, 100.0)
        )),
        Row::new(
            format!("Seal + open + apply one change in process, p50 (of {n_changes})"),
            Unit::Seconds,
        )
        .agentos(median(&times))
        .note(format!(
            "p95 {}; in process, no network",
            Unit::Seconds.fmt(percentile(&times, 95.0))
        )),
        Row::new(
            format!(
                "First sync of a workspace with {n_agents} agents (Automerge sync, in process)"
            ),
            Unit::Seconds,
        )
        .agentos(first)
        .note(format!(
            "{} on the wire in {messages} messages; converged: {converged}",
            Unit::Bytes.fmt(bytes as f64)
        )),
    ]
}

/// Change → applied on a peer over real libp2p on loopback (gossip), p50
/// and p95 over `n` changes.
pub fn loopback_latency(n: usize) -> Vec<Row> {
    use agentos_p2p::net::{Node, run_all};
    crate::bench::progress(&format!("p2p: {n} changes over libp2p on loopback"));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    rt.block_on(async {
        let (ea, eb, _, _) = pair();
        let mut a = Node::new([1; 32], "ws", ea).expect("node a");
        let mut b = Node::new([2; 32], "ws", eb).expect("node b");
        a.listen("/ip4/127.0.0.1/tcp/0".parse().expect("addr"))
            .expect("listen");
        let t = std::time::Duration::from_secs(20);
        assert!(a.run_until(t, |n| !n.listeners().is_empty()).await);
        b.dial(a.listeners()[0].clone()).expect("dial");
        a.write(|d| d.upsert_agent(&record(0))).expect("write");
        assert!(
            run_all(&mut [&mut a, &mut b], t, |ns| ns[1].engine.doc.heads()
                == ns[0].engine.doc.heads())
            .await,
            "the peers never synced"
        );
        let mut lat = Vec::with_capacity(n);
        for i in 0..n {
            let start = Instant::now();
            a.write(|d| {
                d.record_transition(
                    &AgentId("agent-0".into()),
                    &StateTransition {
                        state: agentos_crdt::AgentState::Running,
                        source: "hook".into(),
                        at_ms: 1_700_000_000_000 + i as u64,
                    },
                )
            })
            .expect("write");
            let ok = run_all(&mut [&mut a, &mut b], t, |ns| {
                ns[1].engine.doc.heads() == ns[0].engine.doc.heads()
            })
            .await;
            assert!(ok, "change {i} never arrived");
            lat.push(secs(start.elapsed()));
        }
        let p95 = percentile(&lat, 95.0);
        vec![
            Row::new(
                format!(
                    "Sync latency, change → applied on a peer, libp2p on loopback (p50 of {n})"
                ),
                Unit::Seconds,
            )
            .agentos(median(&lat))
            .goal("p95 ≤ 50 ms", p95 <= 0.050)
            .note(format!("p95 {}", Unit::Seconds.fmt(p95))),
        ]
    })
}

/// One change a device makes while it is cut off: every fifth a new agent
/// of its own, the others a state transition of the agent both devices
/// share (concurrent edits of one object).
fn apart_change(
    d: &mut agentos_crdt::WorkspaceDoc,
    side: &str,
    i: usize,
) -> Result<(), agentos_crdt::CrdtError> {
    if i.is_multiple_of(5) {
        let mut r = record(i);
        r.id = AgentId(format!("{side}-{i}"));
        r.name = format!("{side}-task-{i}");
        d.upsert_agent(&r)
    } else {
        d.record_transition(
            &AgentId("agent-0".into()),
            &StateTransition {
                state: if i.is_multiple_of(2) {
                    agentos_crdt::AgentState::Running
                } else {
                    agentos_crdt::AgentState::Idle
                },
                source: format!("hook:{side}"),
                at_ms: 1_700_000_000_000 + i as u64,
            },
        )
    }
}

/// One heal: two devices share a workspace (synced), lose each other,
/// write `changes` changes each, then B dials A over libp2p on loopback.
/// Returns the seconds from the dial until both documents have the same
/// heads, the seconds until both engines saw the connection, and the
/// number of agents after the merge. `polled`: drive the two swarms with
/// the test driver `run_all` (each polled in turn with 5 ms timeouts)
/// rather than both awaited at once, as the node's swarm task does.
async fn heal_once(changes: usize, polled: bool) -> (f64, f64, usize) {
    use agentos_p2p::net::{Node, run_all};
    use std::cell::{Cell, RefCell};
    let t = std::time::Duration::from_secs(30);
    let (mut ea, mut eb, ka, kb) = pair();
    // The common past: one agent, synced while connected.
    ea.write(|d| d.upsert_agent(&record(0))).expect("write");
    sync_in_process(&mut ea, &mut eb, ka, kb);
    assert_eq!(ea.doc.heads(), eb.doc.heads(), "the first sync failed");
    // The partition: the link drops (sync state reset, as on a closed
    // connection), and both sides keep writing.
    ea.disconnected(kb);
    eb.disconnected(ka);
    for i in 1..=changes {
        ea.write(|d| apart_change(d, "a", i)).expect("write");
        eb.write(|d| apart_change(d, "b", i)).expect("write");
    }
    assert_ne!(ea.doc.heads(), eb.doc.heads());
    let mut a = Node::new([1; 32], "ws", ea).expect("node a");
    let mut b = Node::new([2; 32], "ws", eb).expect("node b");
    a.listen("/ip4/127.0.0.1/tcp/0".parse().expect("addr"))
        .expect("listen");
    assert!(a.run_until(t, |n| !n.listeners().is_empty()).await);
    // The partition heals.
    let start = Instant::now();
    let (up_a, up_b) = (Cell::new(None), Cell::new(None));
    let seen = |n: &Node, peer: &[u8; 32], up: &Cell<Option<f64>>| {
        if up.get().is_none() && n.engine.is_connected(peer) {
            up.set(Some(secs(start.elapsed())));
        }
    };
    b.dial(a.listeners()[0].clone()).expect("dial");
    let ok = if polled {
        run_all(&mut [&mut a, &mut b], t, |ns| {
            seen(ns[0], &kb, &up_a);
            seen(ns[1], &ka, &up_b);
            ns[0].engine.doc.heads() == ns[1].engine.doc.heads()
        })
        .await
    } else {
        // Each node publishes its heads after every event it handles and
        // stops once they equal the other's.
        let (heads_a, heads_b) = (RefCell::new(a.engine.doc.heads()), RefCell::new(vec![]));
        let done = |n: &mut Node, peer, up, mine: &RefCell<_>, theirs: &RefCell<_>| {
            seen(n, peer, up);
            *mine.borrow_mut() = n.engine.doc.heads();
            *mine.borrow() == *theirs.borrow()
        };
        tokio::select! {
            ok = a.run_until(t, |n| done(n, &kb, &up_a, &heads_a, &heads_b)) => ok,
            ok = b.run_until(t, |n| done(n, &ka, &up_b, &heads_b, &heads_a)) => ok,
        }
    };
    assert!(ok, "the peers never converged");
    let total = secs(start.elapsed());
    assert_eq!(a.engine.doc.heads(), b.engine.doc.heads());
    let up = up_a.get().unwrap_or(total).max(up_b.get().unwrap_or(total));
    (total, up, a.engine.doc.agents().len())
}

/// A partition heals ([`heal_once`]): p50 and p95 over `reps` fresh pairs
/// of nodes with both swarms awaited at once, interleaved with as many
/// driven by the polling test driver of [`loopback_latency`].
pub fn partition_heal(reps: usize, changes: usize) -> Vec<Row> {
    crate::bench::progress(&format!(
        "p2p: {reps} partition heals, {changes} changes on each side, libp2p on loopback"
    ));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let (mut heal, mut up, mut polled) = (vec![], vec![], vec![]);
    let mut agents = 0;
    rt.block_on(async {
        for _ in 0..reps {
            let (total, connected, n) = heal_once(changes, false).await;
            heal.push(total);
            up.push(connected);
            agents = n;
            polled.push(heal_once(changes, true).await.0);
        }
    });
    let f = |v: &[f64], p: f64| Unit::Seconds.fmt(percentile(v, p));
    vec![
        Row::new(
            format!(
                "Converge after a partition heals ({changes} changes each side, \
                 libp2p loopback; p50 of {reps})"
            ),
            Unit::Seconds,
        )
        .agentos(median(&heal))
        .note(format!(
            "p95 {}, max {}; from the dial until both heads are equal, of which connection \
             set-up (TCP + noise + yamux) p50 {}; {changes} changes per side written apart \
             after a common sync ({agents} agents after the merge); fresh nodes each time; \
             with the latency row's polling driver p50 {} / p95 {}",
            f(&heal, 95.0),
            f(&heal, 100.0),
            Unit::Seconds.fmt(median(&up)),
            Unit::Seconds.fmt(median(&polled)),
            f(&polled, 95.0),
        )),
    ]
}
