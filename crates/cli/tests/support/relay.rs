//! `agentos relay` as a child process (its `relay listening on` line
//! parsed), a raw libp2p peer-protocol client, and the byte searches of
//! the canary tests.

use super::{BIN, T, try_wait, wait_until};
use agentos_p2p::net::{Behaviour, build_swarm, request_on};
use agentos_proto::peer::{PeerRequest, PeerResponse};
use futures::StreamExt;
use libp2p::multiaddr::Protocol;
use libp2p::swarm::SwarmEvent;
use libp2p::{Multiaddr, PeerId, Swarm};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

pub fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![];
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}

/// The first `relay listening on <addr>` in `text`.
pub fn listening(text: &str) -> Option<Multiaddr> {
    text.lines()
        .find_map(|l| l.strip_prefix("relay listening on "))
        .map(|a| a.trim().parse().unwrap())
}

/// `agentos relay` as a child process, its stdout collected.
pub struct RelayProc {
    pub child: Child,
    pub out: Arc<Mutex<String>>,
    pub err: Arc<Mutex<String>>,
}

impl RelayProc {
    pub fn start(home: &Path, data: &Path, listen: &str) -> RelayProc {
        let mut cmd = Command::new(BIN);
        cmd.args(["relay", "--listen", listen, "--data"])
            .arg(data)
            .env("AGENTOS_HOME", home);
        Self::spawn(cmd)
    }

    /// Run `cmd` (an `agentos relay …`, perhaps wrapped in `ip netns exec`).
    pub fn spawn(mut cmd: Command) -> RelayProc {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let collect = |r: Box<dyn std::io::Read + Send>| {
            let buf = Arc::new(Mutex::new(String::new()));
            let b = buf.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(r).lines().map_while(Result::ok) {
                    let mut b = b.lock().unwrap();
                    b.push_str(&line);
                    b.push('\n');
                }
            });
            buf
        };
        let out = collect(Box::new(child.stdout.take().unwrap()));
        let err = collect(Box::new(child.stderr.take().unwrap()));
        RelayProc { child, out, err }
    }

    /// Everything it printed so far.
    pub fn stdout(&self) -> String {
        self.out.lock().unwrap().clone()
    }

    pub fn address(&mut self) -> Multiaddr {
        let mut addr = None;
        let ok = try_wait(T, || {
            addr = listening(&self.out.lock().unwrap());
            addr.is_some() || self.child.try_wait().unwrap().is_some()
        });
        addr.unwrap_or_else(|| {
            panic!(
                "no `relay listening on` line (waited: {ok}); stdout:\n{}\nstderr:\n{}",
                self.out.lock().unwrap(),
                self.err.lock().unwrap()
            )
        })
    }

    /// SIGTERM, then its exit status.
    pub fn terminate(&mut self) -> i32 {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
        let mut status = None;
        wait_until("the relay to exit after SIGTERM", T, || {
            status = self.child.try_wait().unwrap();
            status.is_some()
        });
        status.unwrap().code().unwrap_or(-1)
    }
}

impl Drop for RelayProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every readable, writable mapping of a live process (its heap and
/// stacks), for checks that a secret is not in its memory.
pub fn memory_of(pid: u32) -> Vec<u8> {
    use std::io::{Read, Seek, SeekFrom};
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    let mut mem = std::fs::File::open(format!("/proc/{pid}/mem")).unwrap();
    let mut out = Vec::new();
    for line in maps.lines() {
        let mut parts = line.split_whitespace();
        let (Some(range), Some(perms)) = (parts.next(), parts.next()) else {
            continue;
        };
        if !perms.starts_with("rw") {
            continue;
        }
        let (lo, hi) = range.split_once('-').unwrap();
        let lo = u64::from_str_radix(lo, 16).unwrap();
        let hi = u64::from_str_radix(hi, 16).unwrap();
        let mut buf = vec![0u8; (hi - lo) as usize];
        if mem.seek(SeekFrom::Start(lo)).is_ok() && mem.read_exact(&mut buf).is_ok() {
            out.extend_from_slice(&buf);
        }
    }
    out
}

/// A libp2p device (any seed: a member or a stranger) speaking the peer
/// protocol to one node or relay.
pub struct PeerClient {
    pub swarm: Swarm<Behaviour>,
    pub peer: PeerId,
}

impl PeerClient {
    /// Dial `addr` (ending in `/p2p/<id>`) and wait for the connection.
    pub async fn connect(seed: [u8; 32], addr: &Multiaddr) -> PeerClient {
        let mut swarm = build_swarm(seed).unwrap();
        let Some(Protocol::P2p(peer)) = addr.iter().last() else {
            panic!("{addr} has no /p2p part");
        };
        swarm.dial(addr.clone()).unwrap();
        tokio::time::timeout(T, async {
            loop {
                match swarm.select_next_some().await {
                    SwarmEvent::ConnectionEstablished { peer_id, .. } if peer_id == peer => break,
                    SwarmEvent::OutgoingConnectionError { error, .. } => {
                        panic!("dialing {addr} failed: {error}")
                    }
                    _ => {}
                }
            }
        })
        .await
        .expect("connecting");
        PeerClient { swarm, peer }
    }

    pub async fn req(&mut self, r: PeerRequest) -> PeerResponse {
        tokio::time::timeout(T, request_on(&mut self.swarm, &self.peer, r))
            .await
            .expect("no answer in time")
            .unwrap_or_else(|e| panic!("request failed: {e}"))
    }

    /// Publish `data` on a workspace's gossip topic once the peer is
    /// subscribed to it (it learns our subscription first).
    pub async fn publish(&mut self, workspace: &str, data: Vec<u8>) {
        let topic = agentos_p2p::net::topic(workspace);
        self.swarm
            .behaviour_mut()
            .gossipsub
            .subscribe(&topic)
            .unwrap();
        let swarm = &mut self.swarm;
        let peer = self.peer;
        tokio::time::timeout(T, async {
            loop {
                let subscribed = swarm
                    .behaviour()
                    .gossipsub
                    .all_peers()
                    .any(|(p, topics)| *p == peer && topics.contains(&&topic.hash()));
                if subscribed {
                    swarm
                        .behaviour_mut()
                        .gossipsub
                        .publish(topic.clone(), data.clone())
                        .unwrap();
                    // Let it go out.
                    let until = tokio::time::Instant::now() + std::time::Duration::from_millis(300);
                    while tokio::time::timeout_at(until, swarm.select_next_some())
                        .await
                        .is_ok()
                    {}
                    return;
                }
                let _ = swarm.select_next_some().await;
            }
        })
        .await
        .expect("the peer never subscribed to the topic");
    }
}
