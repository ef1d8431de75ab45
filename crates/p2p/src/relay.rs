//! The home relay node (`agentos relay`): a libp2p peer that devices of a
//! group can always reach, which helps them reach each other and keeps what
//! they wrote while they were apart. It never holds a workspace key and
//! never decrypts anything.
//!
//! - **Transport**: TCP + noise + yamux with a stable identity (a device
//!   key in `$AGENTOS_HOME/keys/`), identify (the observed address of a
//!   member becomes an external address, so reservations carry it), ping,
//!   and a relay v2 server with a home relay's limits (1 h circuits, 1 GiB
//!   per circuit). Only roster members may hold a reservation; anyone may
//!   open a circuit to a member (a device being paired is not one yet).
//! - **Store-and-forward** over the peer protocol (`/agentos/peer/1`),
//!   backed by sled: per group the roster log (validated without being a
//!   member; a new log is taken only if it extends the stored one); per
//!   (group, workspace, author) an append-only log of sealed envelopes
//!   (each decoded, of the right workspace, signed by an author of its
//!   epoch; duplicates ignored, the same `(author, seq)` with other bytes
//!   refused as equivocation) and the latest sealed snapshot.
//! - **Admission**: every request but `Roster` must come from a current
//!   member of the group it names (the requester is the noise-authenticated
//!   PeerId = device key). Everything bad is refused with a clear error,
//!   counted and logged (never its payload); nothing crashes the relay.
//!
//! The swarm runs on one tokio task; the store runs on its own thread
//! ("relay-store"), fed through bounded channels, and flushes (fsync) each
//! batch of writes before answering, so an acknowledged `Put` survives a
//! crash of the relay.

use crate::engine::{KIND_SNAPSHOT, PeerKey};
use crate::net::{IDENTIFY, PEER_PROTOCOL, PeerCodec, peer_id, peer_key};
use crate::roster::{self, Roster};
use crate::seal::Envelope;
use agentos_proto::ErrorCode;
use agentos_proto::peer::{Cursor, GroupId, PeerRequest, PeerResponse};
use futures::StreamExt;
use libp2p::multiaddr::Protocol;
use libp2p::request_response::{self, ResponseChannel};
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{Multiaddr, PeerId, Swarm, identify, identity, noise, ping, relay, tcp, yamux};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{debug, error, info, warn};

/// The relay's default TCP port (`agentos server start --port 8765`).
pub const DEFAULT_PORT: u16 = 8765;
/// The most envelopes one `Fetch` returns (a larger `limit` is capped; 0
/// means this cap).
pub const MAX_FETCH: u32 = 1000;
/// The longest workspace name the relay stores.
pub const MAX_WORKSPACE_NAME: usize = 256;
/// Envelope bytes per `Fetch` / `GetSnapshots` answer: half the peer
/// protocol's message bound, leaving room for framing and cursors.
const ANSWER_BUDGET: usize = agentos_proto::peer::MAX_PEER_MESSAGE / 2;
/// Requests waiting for the store thread; beyond it the relay answers "busy".
const QUEUE: usize = 256;
/// Requests the store thread handles before one flush.
const BATCH: usize = 64;
/// How long [`run`] waits for its listeners to report their addresses.
const LISTEN_TIMEOUT: Duration = Duration::from_secs(10);

/// The group id of a roster: the hash of its genesis entry (see
/// [`Roster::group_id`]).
pub fn group_id(roster: &Roster) -> GroupId {
    roster.group_id()
}

/// The default listen address: every IPv4 interface, [`DEFAULT_PORT`].
pub fn default_listen() -> Multiaddr {
    Multiaddr::empty()
        .with(Protocol::Ip4(std::net::Ipv4Addr::UNSPECIFIED))
        .with(Protocol::Tcp(DEFAULT_PORT))
}

/// The relay's identity seed: the device key in `keys_dir` (created, mode
/// 0600, on first run), so its PeerId is the same across restarts.
pub fn load_seed(keys_dir: &Path) -> Result<[u8; 32], RelayError> {
    crate::DeviceIdentity::load_or_create(keys_dir)
        .map(|id| id.seed())
        .map_err(RelayError::Identity)
}

#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("relay store at {path}: {source}")]
    Store { path: PathBuf, source: sled::Error },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("relay identity: {0}")]
    Identity(crate::IdentityError),
    #[error("cannot listen on {addr}: {message}")]
    Listen { addr: Multiaddr, message: String },
    #[error("libp2p: {0}")]
    Libp2p(String),
    #[error("the relay task failed: {0}")]
    Task(String),
}

/// How to run a relay.
#[derive(Clone)]
pub struct RelayOptions {
    /// The identity seed ([`load_seed`]); the PeerId follows from it.
    pub seed: [u8; 32],
    /// TCP addresses to listen on (`/ip4/…/tcp/PORT`; port 0 picks one).
    pub listen: Vec<Multiaddr>,
    /// The relay's directory; the sled store lives in `<data_dir>/store`.
    pub data_dir: PathBuf,
}

impl std::fmt::Debug for RelayOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the seed.
        f.debug_struct("RelayOptions")
            .field("listen", &self.listen)
            .field("data_dir", &self.data_dir)
            .finish_non_exhaustive()
    }
}

impl RelayOptions {
    /// Listen on [`default_listen`].
    pub fn new(seed: [u8; 32], data_dir: impl Into<PathBuf>) -> RelayOptions {
        RelayOptions {
            seed,
            listen: vec![default_listen()],
            data_dir: data_dir.into(),
        }
    }
}

/// Counters of a running relay (also its `--json` status).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct RelayStats {
    /// Envelopes in the store (all groups, workspaces and authors).
    pub stored: u64,
    /// Envelopes pushed again that the store already had (ignored).
    pub duplicates: u64,
    /// Snapshots accepted since start.
    pub snapshots: u64,
    /// Roster logs accepted (new or extended) since start.
    pub rosters: u64,
    /// Requests refused for any reason since start (malformed, tampered,
    /// equivocating, oversized, non-member…), `denied` included.
    pub rejected: u64,
    /// Of `rejected`: requests refused because the device is not a member.
    pub denied: u64,
    /// Requests answered since start.
    pub requests: u64,
}

#[derive(Debug, Default)]
struct Counters {
    stored: AtomicU64,
    duplicates: AtomicU64,
    snapshots: AtomicU64,
    rosters: AtomicU64,
    rejected: AtomicU64,
    denied: AtomicU64,
    requests: AtomicU64,
}

impl Counters {
    fn snapshot(&self) -> RelayStats {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        RelayStats {
            stored: g(&self.stored),
            duplicates: g(&self.duplicates),
            snapshots: g(&self.snapshots),
            rosters: g(&self.rosters),
            rejected: g(&self.rejected),
            denied: g(&self.denied),
            requests: g(&self.requests),
        }
    }
    fn add(a: &AtomicU64, n: u64) {
        a.fetch_add(n, Ordering::Relaxed);
    }
}

// ---------------------------------------------------------------------------
// The store (sled).

/// The relay's trees. Keys start with the group id, then the workspace
/// (`u16` BE length + bytes), then the author, so a prefix scan lists one
/// group's workspaces or one workspace's authors.
#[derive(Clone)]
struct Store {
    db: sled::Db,
    /// group → encoded roster log.
    rosters: sled::Tree,
    /// group ‖ workspace → ().
    workspaces: sled::Tree,
    /// group ‖ workspace ‖ author → entries in the log (`u64` BE).
    logs: sled::Tree,
    /// group ‖ workspace ‖ author ‖ index (`u64` BE) → envelope bytes.
    envelopes: sled::Tree,
    /// group ‖ workspace ‖ author ‖ seq (`u64` BE) → index (`u64` BE).
    seqs: sled::Tree,
    /// group ‖ workspace ‖ author → the latest snapshot envelope.
    snapshots: sled::Tree,
}

fn ws_key(group: &GroupId, workspace: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(34 + workspace.len());
    k.extend_from_slice(group);
    k.extend_from_slice(&(workspace.len() as u16).to_be_bytes());
    k.extend_from_slice(workspace.as_bytes());
    k
}

fn log_key(group: &GroupId, workspace: &str, author: &PeerKey) -> Vec<u8> {
    let mut k = ws_key(group, workspace);
    k.extend_from_slice(author);
    k
}

fn indexed(mut prefix: Vec<u8>, n: u64) -> Vec<u8> {
    prefix.extend_from_slice(&n.to_be_bytes());
    prefix
}

fn be_u64(v: &[u8]) -> u64 {
    v.try_into().map(u64::from_be_bytes).unwrap_or(0)
}

impl Store {
    fn open(dir: &Path) -> Result<Store, sled::Error> {
        let db = sled::Config::new()
            .path(dir)
            .flush_every_ms(Some(500))
            .open()?;
        Ok(Store {
            rosters: db.open_tree("rosters")?,
            workspaces: db.open_tree("workspaces")?,
            logs: db.open_tree("logs")?,
            envelopes: db.open_tree("envelopes")?,
            seqs: db.open_tree("seqs")?,
            snapshots: db.open_tree("snapshots")?,
            db,
        })
    }

    /// Entries in one author's log.
    fn log_len(&self, key: &[u8]) -> Result<u64, sled::Error> {
        Ok(self.logs.get(key)?.map(|v| be_u64(&v)).unwrap_or(0))
    }

    /// Every key and value of every tree, for checks that no plaintext is
    /// there.
    fn raw(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for name in self.db.tree_names() {
            let Ok(tree) = self.db.open_tree(&name) else {
                continue;
            };
            for (k, v) in tree.iter().flatten() {
                out.extend_from_slice(&k);
                out.extend_from_slice(&v);
            }
        }
        out
    }
}

// ---------------------------------------------------------------------------
// Request handling (the store thread).

/// A refusal: its code and the message the device sees.
struct Refusal {
    code: ErrorCode,
    message: String,
    /// How many items were refused (envelopes of one `Put`), for the counter.
    count: u64,
}

fn invalid(message: impl Into<String>) -> Refusal {
    Refusal {
        code: ErrorCode::InvalidArgument,
        message: message.into(),
        count: 1,
    }
}

fn denied(message: impl Into<String>) -> Refusal {
    Refusal {
        code: ErrorCode::PermissionDenied,
        message: message.into(),
        count: 1,
    }
}

impl From<sled::Error> for Refusal {
    fn from(e: sled::Error) -> Refusal {
        error!(error = %e, "relay store failed");
        Refusal {
            code: ErrorCode::Internal,
            message: "the relay's store failed".into(),
            count: 1,
        }
    }
}

/// A short, loggable form of a group id.
fn short(group: &GroupId) -> String {
    data_encoding::HEXLOWER.encode(&group[..6])
}

fn request_name(r: &PeerRequest) -> &'static str {
    match r {
        PeerRequest::Roster { .. } => "roster",
        PeerRequest::Sync { .. } => "sync",
        PeerRequest::PairHello { .. } => "pair-hello",
        PeerRequest::PairConfirm { .. } => "pair-confirm",
        PeerRequest::Put { .. } => "put",
        PeerRequest::Fetch { .. } => "fetch",
        PeerRequest::PutSnapshot { .. } => "put-snapshot",
        PeerRequest::GetSnapshots { .. } => "get-snapshots",
        PeerRequest::Workspaces { .. } => "workspaces",
        PeerRequest::Handoff { .. } => "handoff",
    }
}

fn check_workspace(workspace: &str) -> Result<(), Refusal> {
    if workspace.is_empty() || workspace.len() > MAX_WORKSPACE_NAME {
        return Err(invalid(format!(
            "a workspace name must have 1 to {MAX_WORKSPACE_NAME} bytes (got {})",
            workspace.len()
        )));
    }
    Ok(())
}

/// The outcome of one request.
struct Outcome {
    response: PeerResponse,
    /// The store was written (flush before answering).
    wrote: bool,
    /// Peers that are no longer members of any group.
    disconnect: Vec<PeerId>,
    /// The member set changed.
    members_changed: bool,
}

/// What the store thread owns.
struct State {
    store: Store,
    /// Replayed rosters by group (without any key: the relay is no member).
    rosters: HashMap<GroupId, Roster>,
    /// Members of every group, as PeerIds (shared with the reservation gate).
    members: Arc<RwLock<HashSet<PeerId>>>,
    counters: Arc<Counters>,
}

impl State {
    fn load(store: Store, members: Arc<RwLock<HashSet<PeerId>>>, counters: Arc<Counters>) -> State {
        let mut rosters = HashMap::new();
        for (k, v) in store.rosters.iter().flatten() {
            let Ok(group) = <GroupId>::try_from(&k[..]) else {
                continue;
            };
            match roster::decode_log(&v)
                .map_err(|e| e.to_string())
                .and_then(|entries| Roster::replay(&entries, None).map_err(|e| e.to_string()))
            {
                Ok(r) => {
                    rosters.insert(group, r);
                }
                // Only logs that replayed are stored; a damaged one is set
                // aside (a member's next push restores it).
                Err(e) => {
                    error!(group = %short(&group), error = %e, "stored roster does not replay; ignored")
                }
            }
        }
        counters
            .stored
            .store(store.envelopes.len() as u64, Ordering::Relaxed);
        let mut s = State {
            store,
            rosters,
            members,
            counters,
        };
        s.refresh_members();
        s
    }

    /// Recompute the member set; returns who left it.
    fn refresh_members(&mut self) -> Vec<PeerId> {
        let now: HashSet<PeerId> = self
            .rosters
            .values()
            .flat_map(|r| r.members())
            .filter_map(|k| peer_id(&k))
            .collect();
        let mut set = self.members.write().unwrap_or_else(|p| p.into_inner());
        let gone = set.difference(&now).copied().collect();
        *set = now;
        gone
    }

    fn handle(&mut self, peer: PeerId, request: PeerRequest) -> Outcome {
        let what = request_name(&request);
        Counters::add(&self.counters.requests, 1);
        let mut wrote = false;
        let mut disconnect = Vec::new();
        let rosters = self.counters.rosters.load(Ordering::Relaxed);
        let result = match request {
            PeerRequest::Roster { group, log } => {
                self.roster(peer, group, &log, &mut wrote, &mut disconnect)
            }
            PeerRequest::Put {
                group,
                workspace,
                envelopes,
            } => self.put(peer, group, &workspace, &envelopes, &mut wrote),
            PeerRequest::Fetch {
                group,
                workspace,
                cursors,
                limit,
            } => self.fetch(peer, group, &workspace, &cursors, limit),
            PeerRequest::PutSnapshot {
                group,
                workspace,
                envelope,
            } => self.put_snapshot(peer, group, &workspace, &envelope, &mut wrote),
            PeerRequest::GetSnapshots { group, workspace } => {
                self.get_snapshots(peer, group, &workspace)
            }
            PeerRequest::Workspaces { group } => self.workspaces(peer, group),
            PeerRequest::Sync { .. }
            | PeerRequest::PairHello { .. }
            | PeerRequest::PairConfirm { .. }
            | PeerRequest::Handoff { .. } => Err(invalid(format!(
                "a relay does not take {what} requests; send them to a device"
            ))),
        };
        let response = match result {
            Ok(r) => {
                debug!(%peer, request = what, "relay request served");
                r
            }
            Err(Refusal {
                code,
                message,
                count,
            }) => {
                Counters::add(&self.counters.rejected, count);
                if code == ErrorCode::PermissionDenied {
                    Counters::add(&self.counters.denied, count);
                }
                warn!(%peer, request = what, code = code.code(), reason = %message, "relay refused a request");
                let message = format!("{message} (hint: {})", hint(code));
                PeerResponse::Error { code, message }
            }
        };
        Outcome {
            response,
            wrote,
            disconnect,
            members_changed: self.counters.rosters.load(Ordering::Relaxed) != rosters,
        }
    }

    /// The group's roster, if `peer` is one of its current members.
    fn admit(&self, peer: &PeerId, group: &GroupId) -> Result<&Roster, Refusal> {
        let Some(roster) = self.rosters.get(group) else {
            return Err(denied(format!(
                "this relay has no roster for group {}",
                short(group)
            )));
        };
        match peer_key(peer) {
            Some(k) if roster.members().contains(&k) => Ok(roster),
            _ => Err(denied(format!(
                "device {peer} is not a member of group {} (never paired, or removed)",
                short(group)
            ))),
        }
    }

    fn roster(
        &mut self,
        peer: PeerId,
        group: GroupId,
        log: &[u8],
        wrote: &mut bool,
        disconnect: &mut Vec<PeerId>,
    ) -> Result<PeerResponse, Refusal> {
        // Devices push their roster every round: the same log as stored
        // needs no replay, only the membership check.
        if self.store.rosters.get(group)?.is_some_and(|b| b == log) {
            self.admit(&peer, &group)?;
            return Ok(PeerResponse::Roster { log: log.to_vec() });
        }
        let entries = roster::decode_log(log).map_err(|e| invalid(e.to_string()))?;
        if entries.is_empty() {
            return Err(invalid("the roster log is empty"));
        }
        let new = Roster::replay(&entries, None)
            .map_err(|e| invalid(format!("the roster log does not verify: {e}")))?;
        if new.group_id() != group {
            return Err(invalid(format!(
                "the roster log's genesis is group {}, not {}",
                short(&new.group_id()),
                short(&group)
            )));
        }
        let stored = self.rosters.get(&group);
        // Keep whichever of the two logs extends the other.
        let take_new = match stored {
            None => true,
            Some(old) => {
                let (o, n) = (old.entries(), new.entries());
                if n.len() >= o.len() && n[..o.len()] == *o {
                    n.len() > o.len()
                } else if o.len() > n.len() && o[..n.len()] == *n {
                    false
                } else {
                    let at = o.iter().zip(n).take_while(|(a, b)| a == b).count();
                    return Err(invalid(format!(
                        "the roster log conflicts with the relay's for group {} (they differ at entry {at})",
                        short(&group)
                    )));
                }
            }
        };
        let merged = if take_new {
            &new
        } else {
            stored.unwrap_or(&new)
        };
        let me = peer_key(&peer);
        if !me.is_some_and(|k| merged.members().contains(&k)) {
            return Err(denied(format!(
                "device {peer} is not a member of group {} (never paired, or removed)",
                short(&group)
            )));
        }
        let answer = roster::encode_log(merged.entries());
        if take_new {
            self.store.rosters.insert(&group[..], answer.as_slice())?;
            *wrote = true;
            info!(%peer, group = %short(&group), entries = new.entries().len(), members = new.members().len(), epoch = new.epoch(), "roster stored");
            self.rosters.insert(group, new);
            Counters::add(&self.counters.rosters, 1);
            *disconnect = self.refresh_members();
            for p in disconnect.iter() {
                info!(peer = %p, "device removed from every group: disconnecting it");
            }
        }
        Ok(PeerResponse::Roster { log: answer })
    }

    fn put(
        &mut self,
        peer: PeerId,
        group: GroupId,
        workspace: &str,
        envelopes: &[Vec<u8>],
        wrote: &mut bool,
    ) -> Result<PeerResponse, Refusal> {
        check_workspace(workspace)?;
        let roster = self.admit(&peer, &group)?;
        let authors = roster.authors_by_epoch();
        let empty = BTreeSet::new();
        // Valid envelopes are stored even when others of the batch are
        // refused: one bad envelope must not hold back a device's changes.
        let mut fresh: Vec<(PeerKey, u64, &[u8])> = Vec::new();
        let mut duplicates = 0u64;
        let mut refused: Vec<String> = Vec::new();
        for (i, bytes) in envelopes.iter().enumerate() {
            let env = match Envelope::from_bytes(bytes) {
                Ok(env) => env,
                Err(e) => {
                    refused.push(format!("envelope {i}: {e}"));
                    continue;
                }
            };
            let h = &env.header;
            if h.workspace != workspace {
                refused.push(format!(
                    "envelope {i} belongs to another workspace than {workspace:?}"
                ));
                continue;
            }
            if let Err(e) = env.verify(authors.get(&h.epoch).unwrap_or(&empty)) {
                refused.push(format!("envelope {i} (epoch {}): {e}", h.epoch));
                continue;
            }
            let key = log_key(&group, workspace, &h.author);
            let known = match self.store.seqs.get(indexed(key.clone(), h.seq))? {
                Some(idx) => self
                    .store
                    .envelopes
                    .get(indexed(key, be_u64(&idx)))?
                    .map(|b| b.to_vec()),
                None => fresh
                    .iter()
                    .find(|(a, s, _)| *a == h.author && *s == h.seq)
                    .map(|(_, _, b)| b.to_vec()),
            };
            match known {
                Some(b) if b == *bytes => duplicates += 1,
                Some(_) => refused.push(format!(
                    "envelope {i}: equivocation: its author already has a different envelope with seq {}",
                    h.seq
                )),
                None => fresh.push((h.author, h.seq, bytes)),
            }
        }
        if !fresh.is_empty() {
            // New entries go at the end of each author's log.
            let mut next: BTreeMap<PeerKey, u64> = BTreeMap::new();
            let mut env_batch = sled::Batch::default();
            let mut seq_batch = sled::Batch::default();
            let mut log_batch = sled::Batch::default();
            for (author, seq, bytes) in &fresh {
                let key = log_key(&group, workspace, author);
                let n = match next.get(author) {
                    Some(n) => *n,
                    None => self.store.log_len(&key)?,
                };
                env_batch.insert(indexed(key.clone(), n), *bytes);
                seq_batch.insert(indexed(key.clone(), *seq), &n.to_be_bytes());
                log_batch.insert(key, &(n + 1).to_be_bytes());
                next.insert(*author, n + 1);
            }
            use sled::Transactional;
            let s = &self.store;
            (&s.envelopes, &s.seqs, &s.logs, &s.workspaces)
                .transaction(|(e, q, l, w)| {
                    e.apply_batch(&env_batch)?;
                    q.apply_batch(&seq_batch)?;
                    l.apply_batch(&log_batch)?;
                    w.insert(ws_key(&group, workspace), &[] as &[u8])?;
                    Ok::<(), sled::transaction::ConflictableTransactionError<()>>(())
                })
                .map_err(|e| match e {
                    sled::transaction::TransactionError::Storage(e) => Refusal::from(e),
                    sled::transaction::TransactionError::Abort(()) => {
                        Refusal::from(sled::Error::Unsupported("transaction aborted".into()))
                    }
                })?;
            *wrote = true;
        }
        Counters::add(&self.counters.stored, fresh.len() as u64);
        Counters::add(&self.counters.duplicates, duplicates);
        debug!(%peer, group = %short(&group), workspace, stored = fresh.len(), duplicates, refused = refused.len(), "envelopes put");
        if let Some(first) = refused.first() {
            return Err(Refusal {
                code: ErrorCode::InvalidArgument,
                message: format!(
                    "refused {} of {} envelopes (the other {} were taken); first: {first}",
                    refused.len(),
                    envelopes.len(),
                    envelopes.len() - refused.len()
                ),
                count: refused.len() as u64,
            });
        }
        Ok(PeerResponse::Ok)
    }

    fn fetch(
        &self,
        peer: PeerId,
        group: GroupId,
        workspace: &str,
        cursors: &[Cursor],
        limit: u32,
    ) -> Result<PeerResponse, Refusal> {
        check_workspace(workspace)?;
        self.admit(&peer, &group)?;
        let limit = match limit {
            0 => MAX_FETCH,
            n => n.min(MAX_FETCH),
        } as usize;
        let given: BTreeMap<PeerKey, u64> = cursors.iter().map(|c| (c.author, c.next)).collect();
        let mut envelopes = Vec::new();
        let mut out_cursors = Vec::new();
        let mut budget = ANSWER_BUDGET;
        let prefix = ws_key(&group, workspace);
        for item in self.store.logs.scan_prefix(&prefix) {
            let (k, v) = item?;
            let Ok(author) = <PeerKey>::try_from(&k[prefix.len()..]) else {
                continue;
            };
            let len = be_u64(&v);
            let mut next = given.get(&author).copied().unwrap_or(0).min(len);
            if next < len && envelopes.len() < limit && budget > 0 {
                let key = k.to_vec();
                for item in self
                    .store
                    .envelopes
                    .range(indexed(key.clone(), next)..indexed(key, len))
                {
                    let (_, b) = item?;
                    if envelopes.len() >= limit || b.len() > budget {
                        budget = 0;
                        break;
                    }
                    budget -= b.len();
                    envelopes.push(b.to_vec());
                    next += 1;
                }
            }
            out_cursors.push(Cursor { author, next });
        }
        Ok(PeerResponse::Envelopes {
            envelopes,
            cursors: out_cursors,
        })
    }

    fn put_snapshot(
        &mut self,
        peer: PeerId,
        group: GroupId,
        workspace: &str,
        bytes: &[u8],
        wrote: &mut bool,
    ) -> Result<PeerResponse, Refusal> {
        check_workspace(workspace)?;
        let roster = self.admit(&peer, &group)?;
        let env =
            Envelope::from_snapshot_bytes(bytes).map_err(|e| invalid(format!("snapshot: {e}")))?;
        let h = &env.header;
        if h.kind != KIND_SNAPSHOT {
            return Err(invalid(format!(
                "snapshot: the envelope is of kind {}, not a snapshot ({KIND_SNAPSHOT})",
                h.kind
            )));
        }
        if h.workspace != workspace {
            return Err(invalid(format!(
                "snapshot: the envelope belongs to another workspace than {workspace:?}"
            )));
        }
        let empty = BTreeSet::new();
        env.verify(roster.authors_by_epoch().get(&h.epoch).unwrap_or(&empty))
            .map_err(|e| invalid(format!("snapshot (epoch {}): {e}", h.epoch)))?;
        let key = log_key(&group, workspace, &h.author);
        if let Some(old) = self.store.snapshots.get(&key)? {
            let old_seq = Envelope::from_snapshot_bytes(&old)
                .map(|o| o.header.seq)
                .unwrap_or(0);
            if old_seq == h.seq && old != bytes {
                return Err(invalid(format!(
                    "snapshot: equivocation: the author already has a different snapshot with seq {}",
                    h.seq
                )));
            }
            if old_seq >= h.seq {
                debug!(%peer, group = %short(&group), workspace, seq = h.seq, kept = old_seq, "snapshot not newer; kept the stored one");
                return Ok(PeerResponse::Ok);
            }
        }
        use sled::Transactional;
        let s = &self.store;
        (&s.snapshots, &s.workspaces)
            .transaction(|(sn, w)| {
                sn.insert(key.as_slice(), bytes)?;
                w.insert(ws_key(&group, workspace), &[] as &[u8])?;
                Ok::<(), sled::transaction::ConflictableTransactionError<()>>(())
            })
            .map_err(|e| match e {
                sled::transaction::TransactionError::Storage(e) => Refusal::from(e),
                sled::transaction::TransactionError::Abort(()) => {
                    Refusal::from(sled::Error::Unsupported("transaction aborted".into()))
                }
            })?;
        *wrote = true;
        Counters::add(&self.counters.snapshots, 1);
        info!(%peer, group = %short(&group), workspace, seq = h.seq, bytes = bytes.len(), "snapshot stored");
        Ok(PeerResponse::Ok)
    }

    fn get_snapshots(
        &self,
        peer: PeerId,
        group: GroupId,
        workspace: &str,
    ) -> Result<PeerResponse, Refusal> {
        check_workspace(workspace)?;
        self.admit(&peer, &group)?;
        let mut envelopes = Vec::new();
        let mut budget = ANSWER_BUDGET;
        let mut left = 0usize;
        for item in self.store.snapshots.scan_prefix(ws_key(&group, workspace)) {
            let (_, v) = item?;
            if v.len() > budget {
                left += 1;
                continue;
            }
            budget -= v.len();
            envelopes.push(v.to_vec());
        }
        if left > 0 {
            warn!(%peer, group = %short(&group), workspace, left, "snapshots over one answer's size were left out");
        }
        Ok(PeerResponse::Snapshots { envelopes })
    }

    fn workspaces(&self, peer: PeerId, group: GroupId) -> Result<PeerResponse, Refusal> {
        self.admit(&peer, &group)?;
        let mut names = Vec::new();
        for item in self.store.workspaces.scan_prefix(group) {
            let (k, _) = item?;
            if let Some(name) = k.get(34..).and_then(|b| std::str::from_utf8(b).ok()) {
                names.push(name.to_string());
            }
        }
        Ok(PeerResponse::Workspaces { names })
    }
}

fn hint(code: ErrorCode) -> &'static str {
    match code {
        ErrorCode::PermissionDenied => {
            "only current members of a group may use its relay: pair this device with a member, \
             and have a member push the roster to the relay"
        }
        ErrorCode::Internal => "see the relay's log",
        _ => "the relay checked the request and refused it; nothing was stored",
    }
}

/// One request on its way to the store thread and back.
struct Job {
    peer: PeerId,
    request: PeerRequest,
    channel: ResponseChannel<PeerResponse>,
}

struct Done {
    channel: ResponseChannel<PeerResponse>,
    response: PeerResponse,
    disconnect: Vec<PeerId>,
    members_changed: bool,
}

/// The store thread: handle queued requests in batches, flush once per
/// batch that wrote, then answer.
fn store_loop(mut state: State, mut jobs: mpsc::Receiver<Job>, done: mpsc::Sender<Done>) {
    while let Some(first) = jobs.blocking_recv() {
        let mut batch = vec![first];
        while batch.len() < BATCH {
            match jobs.try_recv() {
                Ok(j) => batch.push(j),
                Err(_) => break,
            }
        }
        let mut answers = Vec::with_capacity(batch.len());
        let mut wrote = false;
        for job in batch {
            let (peer, request) = (job.peer, job.request);
            // A bug must cost one answer, not the relay.
            let o = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                state.handle(peer, request)
            }))
            .unwrap_or_else(|_| {
                error!(%peer, "relay request handler panicked");
                Counters::add(&state.counters.rejected, 1);
                Outcome {
                    response: PeerResponse::Error {
                        code: ErrorCode::Internal,
                        message: "the relay failed on this request (hint: see the relay's log)"
                            .into(),
                    },
                    wrote: true,
                    disconnect: vec![],
                    members_changed: false,
                }
            });
            wrote |= o.wrote;
            answers.push((job.channel, o));
        }
        let flushed = !wrote || {
            match state.store.db.flush() {
                Ok(_) => true,
                Err(e) => {
                    error!(error = %e, "relay store flush failed");
                    false
                }
            }
        };
        for (channel, o) in answers {
            let response = if o.wrote && !flushed {
                PeerResponse::Error {
                    code: ErrorCode::Internal,
                    message:
                        "the relay could not save the request; retry (hint: see the relay's log)"
                            .into(),
                }
            } else {
                o.response
            };
            let d = Done {
                channel,
                response,
                disconnect: o.disconnect,
                members_changed: o.members_changed,
            };
            if done.blocking_send(d).is_err() {
                break;
            }
        }
    }
    if let Err(e) = state.store.db.flush() {
        error!(error = %e, "relay store flush at stop failed");
    }
}

// ---------------------------------------------------------------------------
// The swarm.

/// The relay's behaviour: relay v2 server, the peer protocol (inbound),
/// identify and ping.
#[derive(NetworkBehaviour)]
struct RelayBehaviour {
    relay: relay::Behaviour,
    peer: request_response::Behaviour<PeerCodec>,
    identify: identify::Behaviour,
    ping: ping::Behaviour,
}

/// Reservations only for roster members (of any group the relay holds).
struct MembersOnly(Arc<RwLock<HashSet<PeerId>>>);

impl relay::RateLimiter for MembersOnly {
    fn try_next(&mut self, peer: PeerId, _: &Multiaddr, _: std::time::Instant) -> bool {
        self.0.read().map(|m| m.contains(&peer)).unwrap_or(false)
    }
}

fn build(
    seed: [u8; 32],
    members: Arc<RwLock<HashSet<PeerId>>>,
) -> Result<Swarm<RelayBehaviour>, RelayError> {
    let e = |x: &dyn std::fmt::Display| RelayError::Libp2p(x.to_string());
    let mut secret = seed;
    let keypair = identity::Keypair::ed25519_from_bytes(&mut secret).map_err(|x| e(&x))?;
    let swarm = libp2p::SwarmBuilder::with_existing_identity(keypair)
        .with_tokio()
        .with_tcp(
            tcp::Config::default().nodelay(true),
            noise::Config::new,
            yamux::Config::default,
        )
        .map_err(|x| e(&x))?
        .with_behaviour(|key| {
            // A home relay serves a handful of devices: long, large circuits.
            let mut cfg = relay::Config {
                max_reservations: 128,
                max_reservations_per_peer: 4,
                reservation_duration: Duration::from_secs(60 * 60),
                max_circuits: 64,
                max_circuits_per_peer: 8,
                max_circuit_duration: Duration::from_secs(60 * 60),
                max_circuit_bytes: 1 << 30,
                ..Default::default()
            };
            cfg.reservation_rate_limiters
                .push(Box::new(MembersOnly(members)));
            let peer = request_response::Behaviour::new(
                [(PEER_PROTOCOL, request_response::ProtocolSupport::Inbound)],
                request_response::Config::default()
                    .with_request_timeout(Duration::from_secs(60))
                    .with_max_concurrent_streams(64),
            );
            RelayBehaviour {
                relay: relay::Behaviour::new(key.public().to_peer_id(), cfg),
                peer,
                identify: identify::Behaviour::new(
                    identify::Config::new(IDENTIFY.into(), key.public())
                        .with_agent_version(format!("agentos-relay/{}", env!("CARGO_PKG_VERSION"))),
                ),
                ping: ping::Behaviour::new(ping::Config::new()),
            }
        })
        .map_err(|x| e(&x))?
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(120)))
        .build();
    Ok(swarm)
}

/// What the swarm task publishes about its listeners.
#[derive(Debug, Clone, Default)]
struct Listening {
    /// Full addresses (with `/p2p/<peer id>`).
    addrs: Vec<Multiaddr>,
    /// Every listener reported at least one address.
    ready: bool,
    error: Option<String>,
}

struct Driver {
    swarm: Swarm<RelayBehaviour>,
    jobs: mpsc::Sender<Job>,
    done: mpsc::Receiver<Done>,
    listening: watch::Sender<Listening>,
    /// Listeners that have not reported an address yet.
    pending: HashSet<libp2p::core::transport::ListenerId>,
    /// How each connected peer sees us (identify), until it disconnects.
    observed: HashMap<PeerId, Multiaddr>,
    members: Arc<RwLock<HashSet<PeerId>>>,
    counters: Arc<Counters>,
}

impl Driver {
    async fn run(mut self, mut stop: oneshot::Receiver<()>) {
        loop {
            tokio::select! {
                _ = &mut stop => break,
                Some(d) = self.done.recv() => self.answer(d),
                ev = self.swarm.select_next_some() => self.event(ev),
            }
        }
        info!("relay stopping");
    }

    fn answer(&mut self, d: Done) {
        for p in d.disconnect {
            let _ = self.swarm.disconnect_peer_id(p);
        }
        if d.members_changed {
            // A device that just became a member may have told us our
            // address before it was one.
            let seen: Vec<(PeerId, Multiaddr)> =
                self.observed.iter().map(|(p, a)| (*p, a.clone())).collect();
            for (peer, addr) in seen {
                self.observed_by(peer, addr);
            }
        }
        if self
            .swarm
            .behaviour_mut()
            .peer
            .send_response(d.channel, d.response)
            .is_err()
        {
            debug!("the requester left before its answer");
        }
    }

    /// As rust-libp2p's relay-server example: what a peer sees us as is an
    /// external address (the relay protocol is only offered once there is
    /// one, and reservations carry them). Only members' observations count,
    /// so strangers cannot poison the addresses handed out.
    fn observed_by(&mut self, peer: PeerId, addr: Multiaddr) {
        if self.is_member(&peer) && !self.swarm.external_addresses().any(|a| *a == addr) {
            info!(address = %addr, "external address observed by a member");
            self.swarm.add_external_address(addr);
        }
    }

    fn is_member(&self, peer: &PeerId) -> bool {
        self.members
            .read()
            .map(|m| m.contains(peer))
            .unwrap_or(false)
    }

    fn event(&mut self, ev: SwarmEvent<RelayBehaviourEvent>) {
        let local = *self.swarm.local_peer_id();
        match ev {
            SwarmEvent::NewListenAddr {
                listener_id,
                address,
            } => {
                let full = address.with(Protocol::P2p(local));
                info!(address = %full, "relay listening");
                self.pending.remove(&listener_id);
                let ready = self.pending.is_empty();
                self.listening.send_modify(|l| {
                    l.addrs.push(full);
                    l.ready |= ready;
                });
            }
            SwarmEvent::ExpiredListenAddr { address, .. } => {
                let full = address.with(Protocol::P2p(local));
                self.listening
                    .send_modify(|l| l.addrs.retain(|a| *a != full));
            }
            SwarmEvent::ListenerClosed {
                listener_id,
                reason,
                ..
            } => {
                warn!(?reason, "relay listener closed");
                if self.pending.remove(&listener_id) {
                    let why = format!("{reason:?}");
                    self.listening.send_modify(|l| l.error = Some(why));
                }
            }
            SwarmEvent::ListenerError { error, .. } => warn!(%error, "relay listener error"),
            SwarmEvent::ConnectionEstablished {
                peer_id, endpoint, ..
            } => {
                debug!(peer = %peer_id, addr = %endpoint.get_remote_address(), "connection")
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                cause,
                num_established,
                ..
            } => {
                if num_established == 0 {
                    self.observed.remove(&peer_id);
                }
                debug!(peer = %peer_id, ?cause, "connection closed")
            }
            SwarmEvent::IncomingConnectionError { error, .. } => {
                debug!(%error, "incoming connection failed")
            }
            SwarmEvent::Behaviour(RelayBehaviourEvent::Identify(identify::Event::Received {
                peer_id,
                info,
                ..
            })) => {
                self.observed.insert(peer_id, info.observed_addr.clone());
                self.observed_by(peer_id, info.observed_addr);
            }
            SwarmEvent::Behaviour(RelayBehaviourEvent::Peer(ev)) => self.peer_event(ev),
            SwarmEvent::Behaviour(RelayBehaviourEvent::Relay(ev)) => relay_event(ev),
            _ => {}
        }
    }

    fn peer_event(&mut self, ev: request_response::Event<PeerRequest, PeerResponse>) {
        match ev {
            request_response::Event::Message {
                peer,
                message:
                    request_response::Message::Request {
                        request, channel, ..
                    },
                ..
            } => {
                if let Err(e) = self.jobs.try_send(Job {
                    peer,
                    request,
                    channel,
                }) {
                    let (job, message) = match e {
                        mpsc::error::TrySendError::Full(j) => {
                            (j, "the relay is busy; retry shortly".to_string())
                        }
                        mpsc::error::TrySendError::Closed(j) => {
                            (j, "the relay is stopping".to_string())
                        }
                    };
                    warn!(%peer, reason = %message, "request not queued");
                    let _ = self.swarm.behaviour_mut().peer.send_response(
                        job.channel,
                        PeerResponse::Error {
                            code: ErrorCode::Internal,
                            message,
                        },
                    );
                }
            }
            request_response::Event::InboundFailure { peer, error, .. } => match error {
                request_response::InboundFailure::Io(e) => {
                    // Malformed or oversized: the codec refused it.
                    Counters::add(&self.counters.rejected, 1);
                    warn!(%peer, error = %e, "relay refused an unreadable request");
                }
                other => debug!(%peer, error = %other, "inbound request failed"),
            },
            request_response::Event::ResponseSent { .. } => {}
            other => debug!(?other, "peer protocol event"),
        }
    }
}

fn relay_event(ev: relay::Event) {
    match ev {
        relay::Event::ReservationReqAccepted {
            src_peer_id,
            renewed,
        } => info!(peer = %src_peer_id, renewed, "relay reservation accepted"),
        relay::Event::ReservationReqDenied {
            src_peer_id,
            status,
        } => info!(peer = %src_peer_id, ?status, "relay reservation denied (members only)"),
        relay::Event::CircuitReqAccepted {
            src_peer_id,
            dst_peer_id,
        } => info!(src = %src_peer_id, dst = %dst_peer_id, "relay circuit opened"),
        relay::Event::CircuitReqDenied {
            src_peer_id,
            dst_peer_id,
            status,
        } => info!(src = %src_peer_id, dst = %dst_peer_id, ?status, "relay circuit denied"),
        relay::Event::CircuitClosed {
            src_peer_id,
            dst_peer_id,
            error,
        } => debug!(src = %src_peer_id, dst = %dst_peer_id, ?error, "relay circuit closed"),
        other => debug!(?other, "relay event"),
    }
}

// ---------------------------------------------------------------------------
// Running it.

/// A running relay: its addresses, counters, and how to stop it.
pub struct RelayHandle {
    peer_id: PeerId,
    listening: watch::Receiver<Listening>,
    counters: Arc<Counters>,
    store: Store,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for RelayHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RelayHandle")
            .field("peer_id", &self.peer_id)
            .field("addresses", &self.addresses())
            .finish()
    }
}

impl RelayHandle {
    /// The relay's PeerId (stable: it comes from the seed).
    pub fn peer_id(&self) -> PeerId {
        self.peer_id
    }

    /// The addresses it listens on, each ending in `/p2p/<peer id>`.
    pub fn addresses(&self) -> Vec<Multiaddr> {
        self.listening.borrow().addrs.clone()
    }

    /// Changes of [`RelayHandle::addresses`] (interfaces come and go).
    /// Call it inside the tokio runtime that runs the relay.
    pub fn watch_addresses(&self) -> watch::Receiver<Vec<Multiaddr>> {
        let (tx, rx) = watch::channel(self.addresses());
        let mut src = self.listening.clone();
        tokio::spawn(async move {
            while src.changed().await.is_ok() {
                let addrs = src.borrow_and_update().addrs.clone();
                if tx.send(addrs).is_err() {
                    break;
                }
            }
        });
        rx
    }

    /// The relay's counters.
    pub fn stats(&self) -> RelayStats {
        self.counters.snapshot()
    }

    /// Every key and value the store holds, in memory: for checks that no
    /// plaintext ever reaches the relay.
    pub fn raw(&self) -> Vec<u8> {
        self.store.raw()
    }

    /// Stop listening, finish the queued requests, flush and close the
    /// store. The data directory can be opened again once this returns.
    pub async fn stop(mut self) -> Result<(), RelayError> {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            t.await.map_err(|e| RelayError::Task(e.to_string()))?;
        }
        Ok(())
    }
}

impl Drop for RelayHandle {
    fn drop(&mut self) {
        // Dropped without `stop`: the task still shuts down on its own.
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

/// Start a relay: open the store, listen, and serve until the handle stops
/// it. Returns once every listen address has been reported.
pub async fn run(opts: RelayOptions) -> Result<RelayHandle, RelayError> {
    let dir = opts.data_dir.join("store");
    if !opts.data_dir.exists() {
        // Ours: only the relay's user reads it (group ids, workspace names).
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&opts.data_dir)
            .map_err(|source| RelayError::Io {
                path: opts.data_dir.clone(),
                source,
            })?;
    }
    let store = {
        let d = dir.clone();
        tokio::task::spawn_blocking(move || Store::open(&d))
            .await
            .map_err(|e| RelayError::Task(e.to_string()))?
            .map_err(|source| RelayError::Store { path: dir, source })?
    };
    let members = Arc::new(RwLock::new(HashSet::new()));
    let counters = Arc::new(Counters::default());
    let state = State::load(store.clone(), members.clone(), counters.clone());
    let mut swarm = build(opts.seed, members.clone())?;
    let peer_id = *swarm.local_peer_id();
    let mut pending = HashSet::new();
    for addr in &opts.listen {
        let id = swarm
            .listen_on(addr.clone())
            .map_err(|e| RelayError::Listen {
                addr: addr.clone(),
                message: e.to_string(),
            })?;
        pending.insert(id);
    }
    let (jobs_tx, jobs_rx) = mpsc::channel(QUEUE);
    let (done_tx, done_rx) = mpsc::channel(QUEUE);
    let worker = std::thread::Builder::new()
        .name("relay-store".into())
        .spawn(move || store_loop(state, jobs_rx, done_tx))
        .map_err(|e| RelayError::Task(e.to_string()))?;
    let (listening_tx, mut listening) = watch::channel(Listening {
        ready: pending.is_empty(),
        ..Default::default()
    });
    let driver = Driver {
        swarm,
        jobs: jobs_tx,
        done: done_rx,
        listening: listening_tx,
        pending,
        observed: HashMap::new(),
        members,
        counters: counters.clone(),
    };
    let (stop_tx, stop_rx) = oneshot::channel();
    let task = tokio::spawn(async move {
        driver.run(stop_rx).await;
        // The driver (and its job sender) is gone: the store thread drains,
        // flushes and ends.
        let _ = tokio::task::spawn_blocking(move || worker.join()).await;
    });
    info!(peer = %peer_id, data = %opts.data_dir.display(), "relay started");
    let handle = RelayHandle {
        peer_id,
        listening: listening.clone(),
        counters,
        store,
        stop: Some(stop_tx),
        task: Some(task),
    };
    let waited = tokio::time::timeout(
        LISTEN_TIMEOUT,
        listening.wait_for(|l| l.ready || l.error.is_some()),
    )
    .await;
    let failure = match waited {
        Ok(Ok(l)) => l.error.clone(),
        Ok(Err(_)) => Some("the relay task ended".to_string()),
        Err(_) => Some("no listen address was reported in time".to_string()),
    };
    if let Some(message) = failure {
        let addr = opts
            .listen
            .first()
            .cloned()
            .unwrap_or_else(Multiaddr::empty);
        let _ = handle.stop().await;
        return Err(RelayError::Listen { addr, message });
    }
    Ok(handle)
}
