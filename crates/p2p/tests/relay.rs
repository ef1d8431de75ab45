//! The home relay against real device swarms on loopback: members push the
//! roster and sealed envelopes and read each other's back (the relay never
//! sees plaintext, in memory or on disk); strangers, tampered or
//! equivocating envelopes and removed devices are refused and counted; the
//! logs survive a restart on the same data directory. Everything waits on
//! conditions with timeouts; nothing sleeps.

use agentos_p2p::DeviceIdentity;
use agentos_p2p::engine::{KIND_CHANGE, KIND_SNAPSHOT};
use agentos_p2p::net::{Behaviour, BehaviourEvent, build_swarm, request_on};
use agentos_p2p::relay::{self, RelayHandle, RelayOptions};
use agentos_p2p::roster::{Roster, decode_log, encode_log};
use agentos_p2p::seal::{Envelope, ReplayGuard, open, open_snapshot};
use agentos_proto::ErrorCode;
use agentos_proto::peer::{Cursor, GroupId, PeerRequest, PeerResponse};
use futures::StreamExt;
use libp2p::multiaddr::Protocol;
use libp2p::swarm::SwarmEvent;
use libp2p::{Multiaddr, PeerId, Swarm};
use std::path::Path;
use std::time::Duration;

const T: Duration = Duration::from_secs(20);
const WS: &str = "ws";

fn seed(n: u8) -> [u8; 32] {
    [n; 32]
}

fn dev(n: u8) -> DeviceIdentity {
    DeviceIdentity::from_seed(seed(n))
}

/// A device speaking the peer protocol to the relay as a raw client.
struct Client {
    swarm: Swarm<Behaviour>,
    relay: PeerId,
}

impl Client {
    async fn connect(n: u8, addr: &Multiaddr) -> Client {
        let mut swarm = build_swarm(seed(n)).unwrap();
        let Some(Protocol::P2p(relay)) = addr.iter().last() else {
            panic!("{addr} has no /p2p part");
        };
        swarm.dial(addr.clone()).unwrap();
        let connected = tokio::time::timeout(T, async {
            loop {
                match swarm.select_next_some().await {
                    SwarmEvent::ConnectionEstablished { peer_id, .. } if peer_id == relay => break,
                    SwarmEvent::OutgoingConnectionError { error, .. } => {
                        panic!("dialing the relay failed: {error}")
                    }
                    _ => {}
                }
            }
        })
        .await;
        assert!(connected.is_ok(), "device {n} did not connect to the relay");
        Client { swarm, relay }
    }

    async fn req(&mut self, r: PeerRequest) -> PeerResponse {
        tokio::time::timeout(T, request_on(&mut self.swarm, &self.relay, r))
            .await
            .expect("the relay did not answer in time")
            .unwrap_or_else(|e| panic!("request failed: {e}"))
    }

    async fn push_roster(&mut self, r: &Roster) -> PeerResponse {
        self.req(PeerRequest::Roster {
            group: r.group_id(),
            log: encode_log(r.entries()),
        })
        .await
    }

    async fn put(&mut self, group: GroupId, envelopes: Vec<Vec<u8>>) -> PeerResponse {
        self.req(PeerRequest::Put {
            group,
            workspace: WS.into(),
            envelopes,
        })
        .await
    }

    async fn fetch(&mut self, group: GroupId, cursors: Vec<Cursor>, limit: u32) -> PeerResponse {
        self.req(PeerRequest::Fetch {
            group,
            workspace: WS.into(),
            cursors,
            limit,
        })
        .await
    }

    /// Everything after `cursors`, page by page.
    async fn fetch_all(&mut self, group: GroupId) -> Vec<Vec<u8>> {
        let mut cursors = vec![];
        let mut all = vec![];
        loop {
            match self.fetch(group, cursors.clone(), 0).await {
                PeerResponse::Envelopes {
                    envelopes,
                    cursors: c,
                } => {
                    if envelopes.is_empty() {
                        return all;
                    }
                    all.extend(envelopes);
                    cursors = c;
                }
                other => panic!("fetch: {other:?}"),
            }
        }
    }
}

async fn start(dir: &Path) -> RelayHandle {
    relay::run(RelayOptions {
        seed: seed(100),
        listen: vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()],
        data_dir: dir.to_path_buf(),
    })
    .await
    .unwrap()
}

/// Devices 1 (owner) and 2 in one roster.
fn roster() -> Roster {
    let mut r = Roster::create(&dev(1), "one");
    r.add(&dev(1), dev(2).public_key(), "two").unwrap();
    r
}

fn seal(by: u8, r: &Roster, seq: u64, text: &str) -> Vec<u8> {
    let me = Roster::replay(r.entries(), Some(&dev(by))).unwrap();
    Envelope::seal(
        &dev(by),
        WS,
        me.epoch(),
        me.current_key().unwrap(),
        seq,
        KIND_CHANGE,
        text.as_bytes(),
    )
    .to_bytes()
}

fn is_error(r: &PeerResponse, code: ErrorCode) -> bool {
    matches!(r, PeerResponse::Error { code: c, .. } if *c == code)
}

fn message(r: &PeerResponse) -> String {
    match r {
        PeerResponse::Error { message, .. } => message.clone(),
        other => format!("{other:?}"),
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Every byte of every file under `dir`.
fn files_contain(dir: &Path, needle: &[u8]) -> Vec<String> {
    let mut hits = vec![];
    let mut stack = vec![dir.to_path_buf()];
    let mut files = 0;
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                files += 1;
                if contains(&std::fs::read(&p).unwrap(), needle) {
                    hits.push(p.display().to_string());
                }
            }
        }
    }
    assert!(
        files > 0,
        "the relay wrote no files under {}",
        dir.display()
    );
    hits
}

fn addr(h: &RelayHandle) -> Multiaddr {
    let a = h.addresses();
    assert!(!a.is_empty());
    assert!(
        a.iter()
            .all(|x| matches!(x.iter().last(), Some(Protocol::P2p(p)) if p == h.peer_id()))
    );
    a[0].clone()
}

#[tokio::test]
async fn members_exchange_envelopes_the_relay_cannot_read() {
    let dir = tempfile::tempdir().unwrap();
    let relay = start(dir.path()).await;
    let at = addr(&relay);
    let r = roster();
    let group = r.group_id();
    let canary = format!("CANARY-{:x}", std::process::id() as u64 * 7919 + 17);

    let mut a = Client::connect(1, &at).await;
    let mut b = Client::connect(2, &at).await;
    // The roster comes back as the relay's (here: the same) log.
    match a.push_roster(&r).await {
        PeerResponse::Roster { log } => assert_eq!(decode_log(&log).unwrap(), r.entries()),
        other => panic!("roster: {other:?}"),
    }
    let envs = vec![
        seal(1, &r, 1, &format!("{canary} one")),
        seal(1, &r, 2, &format!("{canary} two")),
    ];
    assert_eq!(a.put(group, envs.clone()).await, PeerResponse::Ok);
    // Pushing the same again is harmless (duplicates are ignored).
    assert_eq!(a.put(group, envs.clone()).await, PeerResponse::Ok);
    assert_eq!(relay.stats().stored, 2);
    assert_eq!(relay.stats().duplicates, 2);

    // Device B reads them back and, holding the key, opens them.
    let got = b.fetch_all(group).await;
    assert_eq!(got, envs);
    let mine = Roster::replay(r.entries(), Some(&dev(2))).unwrap();
    let mut guard = ReplayGuard::default();
    for (i, e) in got.iter().enumerate() {
        let (h, plain) = open(e, WS, mine.authors_by_epoch(), mine.keys(), &mut guard).unwrap();
        assert_eq!(h.author, dev(1).public_key());
        assert!(
            String::from_utf8(plain).unwrap().starts_with(&canary),
            "{i}"
        );
    }
    // Cursors page through, `limit` at a time.
    let PeerResponse::Envelopes { envelopes, cursors } = b.fetch(group, vec![], 1).await else {
        panic!("fetch");
    };
    assert_eq!(envelopes, envs[..1]);
    assert_eq!(
        cursors,
        [Cursor {
            author: dev(1).public_key(),
            next: 1
        }]
    );
    let PeerResponse::Envelopes { envelopes, cursors } = b.fetch(group, cursors, 1).await else {
        panic!("fetch");
    };
    assert_eq!(envelopes, envs[1..]);
    assert_eq!(cursors[0].next, 2);

    // A snapshot: stored, newer replaces older, read back and opened.
    let snap = |seq: u64, text: &str| {
        Envelope::seal(
            &dev(2),
            WS,
            mine.epoch(),
            mine.current_key().unwrap(),
            seq,
            KIND_SNAPSHOT,
            text.as_bytes(),
        )
        .to_bytes()
    };
    let put_snap = |e: Vec<u8>| PeerRequest::PutSnapshot {
        group,
        workspace: WS.into(),
        envelope: e,
    };
    assert_eq!(b.req(put_snap(snap(5, &canary))).await, PeerResponse::Ok);
    let newer = snap(6, &format!("{canary} newer"));
    assert_eq!(b.req(put_snap(newer.clone())).await, PeerResponse::Ok);
    assert_eq!(b.req(put_snap(snap(4, "older"))).await, PeerResponse::Ok);
    // A change is not a snapshot.
    let r2 = b.req(put_snap(seal(2, &r, 9, "not a snapshot"))).await;
    assert!(is_error(&r2, ErrorCode::InvalidArgument), "{r2:?}");
    let got = a
        .req(PeerRequest::GetSnapshots {
            group,
            workspace: WS.into(),
        })
        .await;
    assert_eq!(
        got,
        PeerResponse::Snapshots {
            envelopes: vec![newer.clone()]
        }
    );
    let them = Roster::replay(r.entries(), Some(&dev(1))).unwrap();
    let (_, plain) = open_snapshot(&newer, WS, them.authors_by_epoch(), them.keys()).unwrap();
    assert!(plain.starts_with(canary.as_bytes()));

    assert_eq!(
        a.req(PeerRequest::Workspaces { group }).await,
        PeerResponse::Workspaces {
            names: vec![WS.into()]
        }
    );

    // The relay holds ciphertext only: not in memory, not on disk.
    assert!(!contains(&relay.raw(), canary.as_bytes()));
    assert!(
        contains(&relay.raw(), &envs[0]),
        "the store holds the envelopes"
    );
    relay.stop().await.unwrap();
    assert_eq!(
        files_contain(dir.path(), canary.as_bytes()),
        Vec::<String>::new()
    );
    // (And the ciphertext did reach the disk.)
    assert!(!files_contain(dir.path(), &envs[0][envs[0].len() - 48..]).is_empty());
}

#[tokio::test]
async fn strangers_tampering_and_equivocation_are_refused_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let relay = start(dir.path()).await;
    let at = addr(&relay);
    let r = roster();
    let group = r.group_id();
    let mut a = Client::connect(1, &at).await;
    let mut stranger = Client::connect(9, &at).await;

    // Before any roster: even a member is refused (unknown group).
    let before = a.fetch(group, vec![], 0).await;
    assert!(is_error(&before, ErrorCode::PermissionDenied), "{before:?}");
    assert!(message(&before).contains("hint:"), "{}", message(&before));

    // A stranger cannot push someone else's roster, nor read or write.
    let s = stranger.push_roster(&r).await;
    assert!(is_error(&s, ErrorCode::PermissionDenied), "{s:?}");
    assert!(matches!(
        a.push_roster(&r).await,
        PeerResponse::Roster { .. }
    ));
    let s = stranger.fetch(group, vec![], 0).await;
    assert!(is_error(&s, ErrorCode::PermissionDenied), "{s:?}");
    assert!(message(&s).contains("not a member"), "{}", message(&s));
    let s = stranger.put(group, vec![seal(1, &r, 1, "x")]).await;
    assert!(is_error(&s, ErrorCode::PermissionDenied), "{s:?}");
    let s = stranger.req(PeerRequest::Workspaces { group }).await;
    assert!(is_error(&s, ErrorCode::PermissionDenied), "{s:?}");
    // Its own group is its business, but its envelopes are not ours.
    let own = Roster::create(&dev(9), "stranger");
    assert!(matches!(
        stranger.push_roster(&own).await,
        PeerResponse::Roster { .. }
    ));
    let theirs = Envelope::seal(
        &dev(9),
        WS,
        0,
        own.current_key().unwrap(),
        1,
        KIND_CHANGE,
        b"x",
    )
    .to_bytes();
    let s = a.put(group, vec![theirs]).await;
    assert!(is_error(&s, ErrorCode::InvalidArgument), "{s:?}");
    assert!(message(&s).contains("not a member"), "{}", message(&s));
    let denied = relay.stats().denied;
    assert_eq!(denied, 5);

    // Tampered: a ciphertext byte, a signature byte, the header (seq).
    let good = seal(1, &r, 1, "hello");
    let mut env = Envelope::from_bytes(&good).unwrap();
    env.ciphertext[0] ^= 1;
    let flipped_ct = env.to_bytes();
    let mut env = Envelope::from_bytes(&good).unwrap();
    env.signature[3] ^= 0x80;
    let flipped_sig = env.to_bytes();
    let mut env = Envelope::from_bytes(&good).unwrap();
    env.header.seq += 1;
    let moved = env.to_bytes();
    let rejected = relay.stats().rejected;
    for bad in [flipped_ct, flipped_sig, moved] {
        let res = a.put(group, vec![bad]).await;
        assert!(is_error(&res, ErrorCode::InvalidArgument), "{res:?}");
        assert!(message(&res).contains("bad signature"), "{}", message(&res));
    }
    // Malformed bytes and an envelope of another workspace.
    let res = a.put(group, vec![b"garbage".to_vec()]).await;
    assert!(message(&res).contains("malformed"), "{}", message(&res));
    let other_ws = {
        let me = Roster::replay(r.entries(), Some(&dev(1))).unwrap();
        Envelope::seal(
            &dev(1),
            "other",
            0,
            me.current_key().unwrap(),
            1,
            KIND_CHANGE,
            b"x",
        )
        .to_bytes()
    };
    let res = a.put(group, vec![other_ws]).await;
    assert!(
        message(&res).contains("another workspace"),
        "{}",
        message(&res)
    );
    assert_eq!(relay.stats().rejected, rejected + 5);
    assert_eq!(relay.stats().stored, 0, "nothing bad was stored");

    // Equivocation: the same (author, seq) with other bytes. In a mixed
    // batch the good envelope is still taken.
    assert_eq!(a.put(group, vec![good.clone()]).await, PeerResponse::Ok);
    let twin = seal(1, &r, 1, "hello, differently");
    let next = seal(1, &r, 2, "next");
    let res = a.put(group, vec![twin, next.clone()]).await;
    assert!(is_error(&res, ErrorCode::InvalidArgument), "{res:?}");
    assert!(message(&res).contains("equivocation"), "{}", message(&res));
    assert!(
        message(&res).contains("refused 1 of 2"),
        "{}",
        message(&res)
    );
    assert_eq!(a.fetch_all(group).await, vec![good, next]);

    // Rosters: someone else's genesis under our group id, a fork, garbage.
    let res = a
        .req(PeerRequest::Roster {
            group,
            log: encode_log(own.entries()),
        })
        .await;
    assert!(message(&res).contains("genesis"), "{}", message(&res));
    let mut fork = roster();
    fork.add(&dev(1), dev(3).public_key(), "three").unwrap();
    let fork_group = fork.group_id();
    assert_ne!(fork_group, group, "a new genesis is a new group");
    let mut ours = Roster::replay(r.entries(), Some(&dev(1))).unwrap();
    ours.add(&dev(1), dev(4).public_key(), "four").unwrap();
    assert!(matches!(
        a.push_roster(&ours).await,
        PeerResponse::Roster { .. }
    ));
    let mut forked = Roster::replay(r.entries(), Some(&dev(1))).unwrap();
    forked.add(&dev(1), dev(5).public_key(), "five").unwrap();
    let res = a.push_roster(&forked).await;
    assert!(message(&res).contains("conflicts"), "{}", message(&res));
    let res = a
        .req(PeerRequest::Roster {
            group,
            log: vec![0xff; 64],
        })
        .await;
    assert!(is_error(&res, ErrorCode::InvalidArgument), "{res:?}");
    // A device that is behind gets the relay's longer log.
    match a.push_roster(&r).await {
        PeerResponse::Roster { log } => assert_eq!(decode_log(&log).unwrap(), ours.entries()),
        other => panic!("{other:?}"),
    }
    // Not a relay request.
    let res = a
        .req(PeerRequest::Sync {
            workspace: WS.into(),
            message: vec![1],
        })
        .await;
    assert!(is_error(&res, ErrorCode::InvalidArgument), "{res:?}");
    // The relay is still serving.
    assert_eq!(a.fetch_all(group).await.len(), 2);
    relay.stop().await.unwrap();
}

#[tokio::test]
async fn a_removed_device_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let relay = start(dir.path()).await;
    let at = addr(&relay);
    let mut r = roster();
    let group = r.group_id();
    let mut a = Client::connect(1, &at).await;
    let mut b = Client::connect(2, &at).await;
    assert!(matches!(
        b.push_roster(&r).await,
        PeerResponse::Roster { .. }
    ));
    assert_eq!(
        b.put(group, vec![seal(2, &r, 1, "from b")]).await,
        PeerResponse::Ok
    );
    assert_eq!(a.fetch_all(group).await.len(), 1);

    let before = Roster::replay(r.entries(), None).unwrap();
    r.remove(&dev(1), dev(2).public_key()).unwrap();
    assert!(matches!(
        a.push_roster(&r).await,
        PeerResponse::Roster { .. }
    ));
    let denied = relay.stats().denied;
    // B's requests are refused, whatever it tries (the relay may also have
    // closed its connection: reconnect to ask).
    let mut b = Client::connect(2, &at).await;
    for res in [
        b.fetch(group, vec![], 0).await,
        b.put(group, vec![seal(2, &before, 2, "late")]).await,
        b.req(PeerRequest::Workspaces { group }).await,
        b.push_roster(&before).await,
        b.push_roster(&r).await,
    ] {
        assert!(is_error(&res, ErrorCode::PermissionDenied), "{res:?}");
    }
    assert_eq!(relay.stats().denied, denied + 5);
    // A still works, and B's earlier envelope stays readable for members.
    assert_eq!(a.fetch_all(group).await.len(), 1);
    let next = seal(1, &r, 1, "after the rotation");
    assert_eq!(a.put(group, vec![next]).await, PeerResponse::Ok);
    relay.stop().await.unwrap();
}

#[tokio::test]
async fn logs_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let r = roster();
    let group = r.group_id();
    let envs: Vec<Vec<u8>> = (1..=3).map(|s| seal(1, &r, s, "kept")).collect();
    let first_id = {
        let relay = start(dir.path()).await;
        let mut a = Client::connect(1, &addr(&relay)).await;
        assert!(matches!(
            a.push_roster(&r).await,
            PeerResponse::Roster { .. }
        ));
        assert_eq!(a.put(group, envs.clone()).await, PeerResponse::Ok);
        let id = relay.peer_id();
        relay.stop().await.unwrap();
        id
    };
    let relay = start(dir.path()).await;
    assert_eq!(relay.peer_id(), first_id);
    assert_eq!(relay.stats().stored, 3, "counted from the store");
    let mut b = Client::connect(2, &addr(&relay)).await;
    // The roster is still there: B is admitted without anyone pushing it.
    assert_eq!(b.fetch_all(group).await, envs);
    assert_eq!(
        b.req(PeerRequest::Workspaces { group }).await,
        PeerResponse::Workspaces {
            names: vec![WS.into()]
        }
    );
    // Duplicates are still recognised after the restart.
    assert_eq!(b.put(group, envs.clone()).await, PeerResponse::Ok);
    assert_eq!(relay.stats().stored, 3);
    relay.stop().await.unwrap();
}

/// Drive two swarms until `done` says so (or panic after T).
async fn drive2(
    x: &mut Swarm<Behaviour>,
    y: &mut Swarm<Behaviour>,
    what: &str,
    mut done: impl FnMut(bool, SwarmEvent<BehaviourEvent>) -> bool,
) {
    let r = tokio::time::timeout(T, async {
        loop {
            let stop = tokio::select! {
                e = x.select_next_some() => done(true, e),
                e = y.select_next_some() => done(false, e),
            };
            if stop {
                break;
            }
        }
    })
    .await;
    assert!(r.is_ok(), "timed out waiting for: {what}");
}

#[tokio::test]
async fn members_reserve_and_anyone_reaches_a_member_through_the_relay() {
    let dir = tempfile::tempdir().unwrap();
    let relay = start(dir.path()).await;
    let at = addr(&relay);
    let r = roster();
    let mut a = Client::connect(1, &at).await;
    let mut s = Client::connect(9, &at).await;
    assert!(matches!(
        a.push_roster(&r).await,
        PeerResponse::Roster { .. }
    ));
    let circuit = at.clone().with(Protocol::P2pCircuit);

    // A member gets a reservation with a home relay's limits.
    a.swarm.listen_on(circuit.clone()).unwrap();
    let mut limit = None;
    drive2(&mut a.swarm, &mut s.swarm, "a's reservation", |is_a, e| {
        if let (
            true,
            SwarmEvent::Behaviour(BehaviourEvent::Relay(
                libp2p::relay::client::Event::ReservationReqAccepted { limit: l, .. },
            )),
        ) = (is_a, e)
        {
            limit = Some(l);
            return true;
        }
        false
    })
    .await;
    let limit = limit.unwrap().expect("the relay states its limits");
    assert_eq!(limit.duration(), Some(Duration::from_secs(3600)));
    assert_eq!(limit.data_in_bytes(), Some(1 << 30));

    // A stranger does not.
    s.swarm.listen_on(circuit.clone()).unwrap();
    drive2(
        &mut a.swarm,
        &mut s.swarm,
        "the stranger's refusal",
        |is_a, e| match (is_a, e) {
            (
                false,
                SwarmEvent::Behaviour(BehaviourEvent::Relay(
                    libp2p::relay::client::Event::ReservationReqAccepted { .. },
                )),
            ) => panic!("a stranger got a reservation"),
            (false, SwarmEvent::ListenerClosed { reason, .. }) => {
                assert!(reason.is_err(), "{reason:?}");
                true
            }
            _ => false,
        },
    )
    .await;

    // But it can open a circuit to the member (a device being paired is
    // not a member yet).
    let a_id = *a.swarm.local_peer_id();
    let s_id = *s.swarm.local_peer_id();
    s.swarm.dial(circuit.with(Protocol::P2p(a_id))).unwrap();
    let (mut s_side, mut a_side) = (false, false);
    drive2(
        &mut a.swarm,
        &mut s.swarm,
        "a circuit from the stranger to a",
        |is_a, e| {
            if let SwarmEvent::ConnectionEstablished {
                peer_id, endpoint, ..
            } = e
            {
                let via = match &endpoint {
                    libp2p::core::ConnectedPoint::Dialer { address, .. } => address,
                    libp2p::core::ConnectedPoint::Listener { local_addr, .. } => local_addr,
                };
                let relayed = via.iter().any(|p| p == Protocol::P2pCircuit);
                if is_a && relayed && peer_id == s_id {
                    a_side = true;
                }
                if !is_a && peer_id == a_id && relayed {
                    s_side = true;
                }
            }
            a_side && s_side
        },
    )
    .await;
    relay.stop().await.unwrap();
}

#[test]
fn roster_logs_round_trip_and_garbage_is_refused() {
    let r = roster();
    assert_eq!(decode_log(&encode_log(r.entries())).unwrap(), r.entries());
    assert!(decode_log(&[0xff; 16]).is_err());
    let mut trailing = encode_log(r.entries());
    trailing.push(0);
    assert!(decode_log(&trailing).is_err());
    assert_eq!(relay::group_id(&r), r.group_id());
    assert_ne!(r.group_id(), [0; 32]);
}
