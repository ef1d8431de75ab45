//! The sync engine of one device for one workspace, sans IO: inputs are
//! local writes, envelopes (from gossip or the relay), peer connections and
//! point-to-point sync messages; outputs are what to gossip, what to hand
//! the relay, and what to send to whom. The transport (libp2p gossipsub and
//! request-response) only moves these bytes.
//!
//! Rules (DESIGN.md §3):
//! - a local change is sealed into an envelope and gossiped, and also
//!   stored at the relay for devices that are offline;
//! - Automerge sync messages travel point to point only, one exchange per
//!   peer, with per-peer state that is reset on every disconnect;
//! - only roster members are synced with or believed; anything bad is
//!   rejected and counted, never a panic.

use crate::identity::DeviceIdentity;
use crate::roster::Roster;
use crate::seal::{Envelope, ReplayGuard, SealError, open};
use agentos_crdt::{CrdtError, SyncState, WorkspaceDoc};
use std::collections::{BTreeMap, BTreeSet};

pub type PeerKey = [u8; 32];

/// Envelope kinds.
pub const KIND_CHANGE: u8 = 1;
/// A whole-document snapshot (`WorkspaceDoc::save`), uploaded to the relay.
pub const KIND_SNAPSHOT: u8 = 2;

/// What the engine asks the transport to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Out {
    /// Publish on the workspace's gossip topic.
    Gossip { envelope: Vec<u8> },
    /// Append to this device's log at the relay.
    Relay { envelope: Vec<u8> },
    /// Send a sync message to one peer (over its authenticated stream).
    Sync { to: PeerKey, message: Vec<u8> },
}

/// What was rejected, for `sync status` and the logs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    pub accepted: u64,
    pub duplicates: u64,
    pub rejected: u64,
    pub sync_sent: u64,
    pub sync_received: u64,
}

/// The engine.
#[derive(Debug)]
pub struct Engine {
    workspace: String,
    me: DeviceIdentity,
    pub doc: WorkspaceDoc,
    roster: Roster,
    replay: ReplayGuard,
    /// The last sequence number sealed (persist it: it must never go back).
    seq: u64,
    peers: BTreeMap<PeerKey, SyncState>,
    pub counters: Counters,
}

impl Engine {
    pub fn new(
        me: DeviceIdentity,
        workspace: &str,
        doc: WorkspaceDoc,
        roster: Roster,
        seq: u64,
    ) -> Engine {
        Engine {
            workspace: workspace.to_string(),
            me,
            doc,
            roster,
            replay: ReplayGuard::default(),
            seq,
            peers: BTreeMap::new(),
            counters: Counters::default(),
        }
    }

    pub fn seq(&self) -> u64 {
        self.seq
    }

    pub fn roster(&self) -> &Roster {
        &self.roster
    }

    /// Replace the roster (after new entries were applied).
    pub fn set_roster(&mut self, roster: Roster) {
        // Peers that left are dropped at once.
        let members = roster.members();
        self.peers.retain(|p, _| members.contains(p));
        self.roster = roster;
    }

    /// Make a local change; returns what to send.
    pub fn write(
        &mut self,
        f: impl FnOnce(&mut WorkspaceDoc) -> Result<(), CrdtError>,
    ) -> Result<Vec<Out>, CrdtError> {
        let before = self.doc.heads();
        f(&mut self.doc)?;
        if self.doc.heads() == before {
            return Ok(vec![]);
        }
        let mut out = Vec::new();
        if let (Some(change), Some(key)) = (self.doc.last_local_change(), self.roster.current_key())
        {
            self.seq += 1;
            let env = Envelope::seal(
                &self.me,
                &self.workspace,
                self.roster.epoch(),
                key,
                self.seq,
                KIND_CHANGE,
                &change,
            )
            .to_bytes();
            out.push(Out::Gossip {
                envelope: env.clone(),
            });
            out.push(Out::Relay { envelope: env });
        }
        // Connected peers hear about the new heads through sync as well.
        let peers: Vec<PeerKey> = self.peers.keys().copied().collect();
        for p in peers {
            out.extend(self.step(p));
        }
        Ok(out)
    }

    /// An envelope from gossip or the relay.
    pub fn receive_envelope(&mut self, bytes: &[u8]) -> Result<(), SealError> {
        match open(
            bytes,
            &self.workspace,
            self.roster.authors_by_epoch(),
            self.roster.keys(),
            &mut self.replay,
        ) {
            Ok((header, change)) => {
                if header.kind != KIND_CHANGE {
                    self.counters.rejected += 1;
                    return Err(SealError::Malformed("not a change".into()));
                }
                if self.doc.apply_changes(&[change]).is_err() {
                    self.counters.rejected += 1;
                    return Err(SealError::Malformed("not an Automerge change".into()));
                }
                self.counters.accepted += 1;
                Ok(())
            }
            Err(SealError::Replay(s)) => {
                self.counters.duplicates += 1;
                Err(SealError::Replay(s))
            }
            Err(e) => {
                self.counters.rejected += 1;
                Err(e)
            }
        }
    }

    /// A peer's authenticated connection is up. Discovery never grants
    /// trust: non-members get nothing.
    pub fn connected(&mut self, peer: PeerKey) -> Vec<Out> {
        self.connected_with(peer, None)
    }

    /// As [`Engine::connected`], starting from the shared heads persisted
    /// at the last disconnect (`saved`, from [`Engine::disconnected`]), so
    /// a reconnect does not resend what the peer already has.
    pub fn connected_with(&mut self, peer: PeerKey, saved: Option<&[u8]>) -> Vec<Out> {
        if peer == self.me.public_key() || !self.roster.members().contains(&peer) {
            return vec![];
        }
        let state = saved
            .and_then(|b| SyncState::decode(b).ok())
            .unwrap_or_default();
        self.peers.insert(peer, state);
        self.step(peer)
    }

    /// Disconnect, timeout or failure: the in-flight sync state is dropped.
    /// Returns what to persist for the peer (its shared heads only: the
    /// encoded form is exactly a reset state).
    pub fn disconnected(&mut self, peer: PeerKey) -> Option<Vec<u8>> {
        self.peers.remove(&peer).map(|s| s.encode())
    }

    /// Whether any connected peer may still lack something of ours.
    pub fn is_connected(&self, peer: &PeerKey) -> bool {
        self.peers.contains_key(peer)
    }

    /// Seal the whole document for the relay (kind [`KIND_SNAPSHOT`]).
    pub fn snapshot(&mut self) -> Option<Vec<u8>> {
        let key = self.roster.current_key()?.clone();
        self.seq += 1;
        let save = self.doc.save();
        Some(
            Envelope::seal(
                &self.me,
                &self.workspace,
                self.roster.epoch(),
                &key,
                self.seq,
                KIND_SNAPSHOT,
                &save,
            )
            .to_bytes(),
        )
    }

    /// A snapshot from the relay: checked, decrypted and merged.
    pub fn receive_snapshot(&mut self, bytes: &[u8]) -> Result<(), SealError> {
        let (header, plain) = crate::seal::open_snapshot(
            bytes,
            &self.workspace,
            self.roster.authors_by_epoch(),
            self.roster.keys(),
        )
        .inspect_err(|_| self.counters.rejected += 1)?;
        if header.kind != KIND_SNAPSHOT {
            self.counters.rejected += 1;
            return Err(SealError::Malformed("not a snapshot".into()));
        }
        let mut other = WorkspaceDoc::load(&plain, agentos_crdt::ActorId([0xfe; 16]))
            .map_err(|e| SealError::Malformed(e.to_string()))
            .inspect_err(|_| self.counters.rejected += 1)?;
        self.doc
            .merge(&mut other)
            .map_err(|e| SealError::Malformed(e.to_string()))?;
        self.counters.accepted += 1;
        Ok(())
    }

    pub fn connected_peers(&self) -> BTreeSet<PeerKey> {
        self.peers.keys().copied().collect()
    }

    /// A sync message from `from`.
    pub fn receive_sync(&mut self, from: PeerKey, message: &[u8]) -> Vec<Out> {
        let Some(state) = self.peers.get_mut(&from) else {
            self.counters.rejected += 1;
            return vec![];
        };
        self.counters.sync_received += 1;
        if self.doc.receive_sync_message(state, message).is_err() {
            // A bad message resets the exchange, as a failure must.
            self.counters.rejected += 1;
            self.peers.insert(from, SyncState::new());
        }
        self.step(from)
    }

    /// Our heads changed outside a sync exchange (an envelope arrived):
    /// tell a connected peer by sync if it still lacks something.
    pub fn nudge(&mut self, peer: PeerKey) -> Vec<Out> {
        self.step(peer)
    }

    fn step(&mut self, peer: PeerKey) -> Vec<Out> {
        let Some(state) = self.peers.get_mut(&peer) else {
            return vec![];
        };
        match self.doc.sync_message(state) {
            Some(message) => {
                self.counters.sync_sent += 1;
                vec![Out::Sync { to: peer, message }]
            }
            None => vec![],
        }
    }
}

/// The relay's store: per-author append-only logs of envelopes it cannot
/// read. It checks each author's signature against the roster it was given
/// and refuses everything else.
#[derive(Debug, Default, Clone)]
pub struct RelayStore {
    logs: BTreeMap<PeerKey, Vec<Vec<u8>>>,
    pub rejected: u64,
}

impl RelayStore {
    pub fn put(
        &mut self,
        envelope: &[u8],
        authors: &crate::seal::Authors,
    ) -> Result<(), SealError> {
        let env = Envelope::from_bytes(envelope).inspect_err(|_| self.rejected += 1)?;
        let empty = BTreeSet::new();
        env.verify(authors.get(&env.header.epoch).unwrap_or(&empty))
            .inspect_err(|_| self.rejected += 1)?;
        let log = self.logs.entry(env.header.author).or_default();
        if !log.iter().any(|e| e.as_slice() == envelope) {
            log.push(envelope.to_vec());
        }
        Ok(())
    }

    /// Envelopes after `cursors` (entries already read per author); the
    /// cursors are advanced.
    pub fn fetch(&self, cursors: &mut BTreeMap<PeerKey, usize>) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        for (author, log) in &self.logs {
            let c = cursors.entry(*author).or_default();
            out.extend(log.iter().skip(*c).cloned());
            *c = log.len();
        }
        out
    }

    /// Everything stored, for checks that no plaintext is there.
    pub fn raw(&self) -> Vec<u8> {
        self.logs.values().flatten().flatten().copied().collect()
    }
}
