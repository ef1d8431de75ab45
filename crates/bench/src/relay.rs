//! The home relay's memory under a small household of devices: the real
//! `agentos relay` binary as a child process (its `relay listening on`
//! line parsed), idle right after start, then with 20 devices connected
//! at once over libp2p, each pushing the group's roster, putting its own
//! sealed envelopes and fetching everything the relay holds. Readings are
//! the relay's VmRSS and VmHWM (`/proc/<pid>/status`) and the size of its
//! store on disk.

use crate::report::Row;
use crate::stats::{Unit, fmt_bytes};
use crate::systems::{ENV_REMOVE, TIMEOUT, alive, proc_kb, signal, wait_until};
use agentos_p2p::DeviceIdentity;
use agentos_p2p::engine::KIND_CHANGE;
use agentos_p2p::net::{Behaviour, build_swarm, request_on};
use agentos_p2p::roster::{Roster, encode_log};
use agentos_p2p::seal::Envelope;
use agentos_proto::peer::{Cursor, PeerRequest, PeerResponse};
use futures::StreamExt;
use libp2p::multiaddr::Protocol;
use libp2p::swarm::SwarmEvent;
use libp2p::{Multiaddr, PeerId, Swarm};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const WS: &str = "ws";
/// Envelopes per `Put` request (a device catching up sends batches).
const PUT_BATCH: usize = 50;
/// The size to aim at for one envelope (a small change is ~340 B).
const ENVELOPE_TARGET: usize = 300;

fn dev(n: u8) -> DeviceIdentity {
    DeviceIdentity::from_seed([n; 32])
}

/// `agentos relay` as a child process; stopped (SIGTERM, then SIGKILL)
/// when dropped.
struct RelayProc {
    child: Child,
    out: Arc<Mutex<String>>,
    err: Arc<Mutex<String>>,
}

impl RelayProc {
    fn start(bin: &Path, home: &Path, data: &Path) -> RelayProc {
        let mut cmd = Command::new(bin);
        cmd.args(["relay", "--listen", "/ip4/127.0.0.1/tcp/0", "--data"])
            .arg(data)
            .env("AGENTOS_HOME", home)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for v in ENV_REMOVE {
            cmd.env_remove(v);
        }
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {} relay: {e}", bin.display()));
        let collect = |r: Box<dyn std::io::Read + Send>| {
            let buf = Arc::new(Mutex::new(String::new()));
            let b = buf.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(r).lines().map_while(Result::ok) {
                    let mut b = b.lock().expect("relay output buffer");
                    b.push_str(&line);
                    b.push('\n');
                }
            });
            buf
        };
        let out = collect(Box::new(child.stdout.take().expect("relay stdout")));
        let err = collect(Box::new(child.stderr.take().expect("relay stderr")));
        RelayProc { child, out, err }
    }

    fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// The address of its `relay listening on <addr>` line (with `/p2p/<id>`).
    fn address(&mut self) -> Multiaddr {
        let mut addr: Option<Multiaddr> = None;
        let pid = self.pid();
        wait_until("the relay's `relay listening on` line", TIMEOUT, || {
            addr = self
                .out
                .lock()
                .expect("relay stdout buffer")
                .lines()
                .find_map(|l| l.strip_prefix("relay listening on "))
                .and_then(|a| a.trim().parse().ok());
            if addr.is_none() && !alive(pid) {
                panic!(
                    "the relay exited before listening; stderr:\n{}",
                    self.err.lock().expect("relay stderr buffer")
                );
            }
            addr.is_some()
        });
        addr.expect("an address")
    }

    /// SIGTERM, then its stderr (which ends with its counters).
    fn stop(&mut self) -> String {
        signal(self.pid(), libc::SIGTERM);
        let deadline = Instant::now() + TIMEOUT;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        // The reader thread may still be copying the last lines.
        let mut err = String::new();
        wait_until("the relay's last words on stderr", TIMEOUT, || {
            err = self.err.lock().expect("relay stderr buffer").clone();
            err.contains("relay stopped")
        });
        err
    }
}

impl Drop for RelayProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// VmRSS and VmHWM of `pid`, bytes.
fn rss_hwm(pid: i32) -> (f64, f64) {
    let status = format!("/proc/{pid}/status");
    let kb =
        |key| proc_kb(&status, key).unwrap_or_else(|| panic!("no {key} for the relay (pid {pid})"));
    ((kb("VmRSS:") * 1024) as f64, (kb("VmHWM:") * 1024) as f64)
}

/// Bytes of the files under `dir`: (apparent size, allocated blocks).
fn disk_usage(dir: &Path) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    let (mut len, mut blocks) = (0, 0);
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let Ok(m) = e.metadata() else { continue };
            if m.is_dir() {
                stack.push(e.path());
            } else {
                len += m.len();
                blocks += m.blocks() * 512;
            }
        }
    }
    (len, blocks)
}

/// A device speaking the peer protocol to the relay.
struct Client {
    n: u8,
    swarm: Swarm<Behaviour>,
    relay: PeerId,
}

impl Client {
    async fn connect(n: u8, addr: &Multiaddr) -> Client {
        let mut swarm = build_swarm([n; 32]).expect("a device swarm");
        let Some(Protocol::P2p(relay)) = addr.iter().last() else {
            panic!("{addr} has no /p2p part");
        };
        swarm.dial(addr.clone()).expect("dial the relay");
        tokio::time::timeout(TIMEOUT, async {
            loop {
                match swarm.select_next_some().await {
                    SwarmEvent::ConnectionEstablished { peer_id, .. } if peer_id == relay => break,
                    SwarmEvent::OutgoingConnectionError { error, .. } => {
                        panic!("device {n}: dialing the relay at {addr} failed: {error}")
                    }
                    _ => {}
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("device {n}: connecting to the relay timed out"));
        Client { n, swarm, relay }
    }

    async fn req(&mut self, r: PeerRequest) -> PeerResponse {
        tokio::time::timeout(TIMEOUT, request_on(&mut self.swarm, &self.relay, r))
            .await
            .unwrap_or_else(|_| panic!("device {}: the relay did not answer in time", self.n))
            .unwrap_or_else(|e| panic!("device {}: request failed: {e}", self.n))
    }

    /// Push the roster, then put `per_device` envelopes in batches.
    async fn push(&mut self, roster: &Roster, per_device: usize, payload: &[u8]) {
        let n = self.n;
        let res = self
            .req(PeerRequest::Roster {
                group: roster.group_id(),
                log: encode_log(roster.entries()),
            })
            .await;
        assert!(
            matches!(res, PeerResponse::Roster { .. }),
            "device {n}: roster: {res:?}"
        );
        let me = dev(n);
        let mine = Roster::replay(roster.entries(), Some(&me)).expect("the roster replays");
        let key = mine.current_key().expect("a member has the epoch key");
        let mut seq = 0u64;
        while (seq as usize) < per_device {
            let batch = PUT_BATCH.min(per_device - seq as usize);
            let envelopes = (0..batch)
                .map(|_| {
                    seq += 1;
                    Envelope::seal(&me, WS, mine.epoch(), key, seq, KIND_CHANGE, payload).to_bytes()
                })
                .collect();
            let res = self
                .req(PeerRequest::Put {
                    group: roster.group_id(),
                    workspace: WS.into(),
                    envelopes,
                })
                .await;
            assert_eq!(res, PeerResponse::Ok, "device {n}: put");
        }
    }

    /// Fetch everything the relay holds for the workspace (pages of at
    /// most 1,000); returns (envelopes, bytes).
    async fn fetch_all(&mut self, roster: &Roster) -> (usize, usize) {
        let mut cursors: Vec<Cursor> = vec![];
        let (mut count, mut bytes) = (0, 0);
        loop {
            let res = self
                .req(PeerRequest::Fetch {
                    group: roster.group_id(),
                    workspace: WS.into(),
                    cursors: cursors.clone(),
                    limit: 0,
                })
                .await;
            let PeerResponse::Envelopes {
                envelopes,
                cursors: next,
            } = res
            else {
                panic!("device {}: fetch: {res:?}", self.n);
            };
            if envelopes.is_empty() {
                return (count, bytes);
            }
            count += envelopes.len();
            bytes += envelopes.iter().map(Vec::len).sum::<usize>();
            for c in next {
                match cursors.iter_mut().find(|k| k.author == c.author) {
                    Some(k) => k.next = c.next,
                    None => cursors.push(c),
                }
            }
        }
    }
}

/// The payload that makes one sealed envelope about [`ENVELOPE_TARGET`]
/// bytes, and that envelope's size.
fn payload(roster: &Roster) -> (Vec<u8>, usize) {
    let me = dev(1);
    let key = roster.current_key().expect("the creator has the key");
    let size = |p: &[u8]| {
        Envelope::seal(&me, WS, roster.epoch(), key, 100, KIND_CHANGE, p)
            .to_bytes()
            .len()
    };
    let overhead = size(&[]);
    let p = vec![0x5a; ENVELOPE_TARGET.saturating_sub(overhead)];
    let s = size(&p);
    (p, s)
}

/// The relay idle, then with `devices` devices connected at once, each
/// putting `per_device` envelopes and fetching everything.
pub fn relay_memory(bin: &Path, dir: &Path, devices: u8, per_device: usize) -> Vec<Row> {
    let total = devices as usize * per_device;
    crate::bench::progress(&format!(
        "p2p: relay memory, {devices} devices × {per_device} envelopes"
    ));
    let root = dir.join("relay-bench");
    let (home, data) = (root.join("h"), root.join("data"));
    std::fs::create_dir_all(&home).expect("the relay's home");
    let mut relay = RelayProc::start(bin, &home, &data);
    let addr = relay.address();
    let pid = relay.pid();
    let (idle_rss, idle_hwm) = rss_hwm(pid);

    let mut roster = Roster::create(&dev(1), "device-1");
    for n in 2..=devices {
        roster
            .add(&dev(1), dev(n).public_key(), &format!("device-{n}"))
            .expect("adding a device");
    }
    let (payload, env_size) = payload(&roster);

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let (put_s, fetch_s, fetched, fetched_bytes, rss, hwm, clients) = rt.block_on(async {
        let mut clients: Vec<Client> =
            futures::future::join_all((1..=devices).map(|n| Client::connect(n, &addr))).await;
        let t = Instant::now();
        futures::future::join_all(
            clients
                .iter_mut()
                .map(|c| c.push(&roster, per_device, &payload)),
        )
        .await;
        let put_s = t.elapsed().as_secs_f64();
        let t = Instant::now();
        let got = futures::future::join_all(clients.iter_mut().map(|c| c.fetch_all(&roster))).await;
        let fetch_s = t.elapsed().as_secs_f64();
        for (i, (count, _)) in got.iter().enumerate() {
            assert_eq!(
                *count,
                total,
                "device {} fetched {count} of {total} envelopes",
                i + 1
            );
        }
        // Read while all the devices are still connected.
        let (rss, hwm) = rss_hwm(pid);
        let bytes: usize = got.iter().map(|(_, b)| b).sum();
        (put_s, fetch_s, got[0].0, bytes, rss, hwm, clients.len())
    });
    let (apparent, allocated) = disk_usage(&data);
    let err = relay.stop();
    let stored = format!("{total} envelopes stored");
    assert!(
        err.contains(&stored),
        "the relay did not report `{stored}`:\n{err}"
    );
    vec![
        Row::new(
            "Relay memory (RSS), idle right after start, no devices",
            Unit::Bytes,
        )
        .agentos(idle_rss)
        .note(format!(
            "VmHWM {}; the `agentos relay` binary, sled store",
            fmt_bytes(idle_hwm)
        )),
        Row::new(
            format!(
                "Relay memory (RSS), {devices} devices connected, {} envelopes stored",
                group_thousands(total)
            ),
            Unit::Bytes,
        )
        .agentos(rss)
        .note(format!(
            "VmHWM {}; store {} on disk ({} apparent); {clients} libp2p clients at once, \
             each put {per_device} envelopes of {env_size} B ({PUT_BATCH} per request, all \
             {devices} in {:.2} s) and fetched all {fetched} ({} in all, {:.2} s)",
            fmt_bytes(hwm),
            fmt_bytes(allocated as f64),
            fmt_bytes(apparent as f64),
            put_s,
            fmt_bytes(fetched_bytes as f64),
            fetch_s,
        )),
    ]
}

/// 10000 → "10,000".
fn group_thousands(n: usize) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn thousands_are_grouped() {
        assert_eq!(super::group_thousands(10_000), "10,000");
        assert_eq!(super::group_thousands(999), "999");
        assert_eq!(super::group_thousands(1_234_567), "1,234,567");
    }
}
