//! A workspace's membership: a signed, hash-linked log of entries (device
//! added, device removed, key rotated), sans IO. Every device replays the
//! same log and reaches the same members and the same epoch; a removal is
//! always followed by a rotation whose new epoch key is wrapped only for
//! the remaining devices.

use crate::identity::{DeviceIdentity, verify};
use crate::seal::{EpochKey, Wrapped, unwrap, wrap};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RosterError {
    #[error("entry {seq} does not follow the log head (expected seq {expected})")]
    OutOfOrder { seq: u64, expected: u64 },
    #[error("entry {0} does not link to the previous entry's hash")]
    BadLink(u64),
    #[error("entry {0} has a bad signature")]
    BadSignature(u64),
    #[error("entry {0} is signed by a device that is not a member")]
    NotMember(u64),
    #[error("entry {0}: {1}")]
    Invalid(u64, String),
}

/// What an entry does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    /// The first entry: the creating device, and epoch 0's key for it.
    Genesis { name: String, wrapped: Wrapped },
    /// A paired device joins and receives the current epoch key.
    Add {
        device: [u8; 32],
        name: String,
        wrapped: Wrapped,
    },
    /// A device leaves. Must be followed by a `Rotate` from the same author.
    Remove { device: [u8; 32] },
    /// A new epoch key for every remaining member.
    Rotate {
        epoch: u64,
        wrapped: Vec<([u8; 32], Wrapped)>,
    },
}

/// One signed, linked entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub seq: u64,
    /// SHA-256 of the previous entry's signed bytes (zero for genesis).
    pub prev: [u8; 32],
    pub author: [u8; 32],
    pub op: Op,
    pub signature: Vec<u8>,
}

fn body_bytes(seq: u64, prev: &[u8; 32], author: &[u8; 32], op: &Op) -> Vec<u8> {
    let mut b = b"agentos-roster-v1".to_vec();
    b.extend_from_slice(&seq.to_be_bytes());
    b.extend_from_slice(prev);
    b.extend_from_slice(author);
    b.extend(bincode::serde::encode_to_vec(op, bincode::config::standard()).unwrap_or_default());
    b
}

/// The largest roster log accepted from the wire.
pub const MAX_LOG: usize = 1 << 20;

/// A roster log as it travels (`PeerRequest::Roster`) and is stored.
pub fn encode_log(entries: &[Entry]) -> Vec<u8> {
    bincode::serde::encode_to_vec(entries, bincode::config::standard()).unwrap_or_default()
}

/// Decode a roster log, bounded; entries are checked by [`Roster::replay`].
pub fn decode_log(bytes: &[u8]) -> Result<Vec<Entry>, RosterError> {
    let bad = |m: String| RosterError::Invalid(0, format!("malformed roster log: {m}"));
    if bytes.len() > MAX_LOG {
        return Err(bad(format!("{} bytes is over the limit", bytes.len())));
    }
    let (v, used): (Vec<Entry>, usize) = bincode::serde::decode_from_slice(
        bytes,
        bincode::config::standard().with_limit::<MAX_LOG>(),
    )
    .map_err(|e| bad(e.to_string()))?;
    if used != bytes.len() {
        return Err(bad("trailing bytes".into()));
    }
    Ok(v)
}

impl Entry {
    pub fn hash(&self) -> [u8; 32] {
        Sha256::digest(body_bytes(self.seq, &self.prev, &self.author, &self.op)).into()
    }
}

/// The replayed state of a log, as one device sees it.
#[derive(Debug, Clone, Default)]
pub struct Roster {
    entries: Vec<Entry>,
    members: BTreeMap<[u8; 32], String>,
    epoch: u64,
    /// Keys this device could unwrap, by epoch.
    keys: BTreeMap<u64, EpochKey>,
    /// A removal waiting for its rotation.
    pending_removal: Option<[u8; 32]>,
    /// Everyone who was a member at some point of each epoch: they may
    /// author that epoch's envelopes (a device removed later keeps its
    /// earlier writes).
    epoch_members: BTreeMap<u64, BTreeSet<[u8; 32]>>,
}

impl Roster {
    /// Start a workspace on this device.
    pub fn create(me: &DeviceIdentity, name: &str) -> Roster {
        let key = EpochKey::random();
        let wrapped = wrap(&key, 0, &me.public_key()).expect("our own key is valid");
        let mut r = Roster::default();
        let e = r.sign(
            me,
            Op::Genesis {
                name: name.to_string(),
                wrapped,
            },
        );
        r.apply(e, Some(me)).expect("a fresh genesis applies");
        r
    }

    fn sign(&self, me: &DeviceIdentity, op: Op) -> Entry {
        let seq = self.entries.len() as u64;
        let prev = self.entries.last().map(|e| e.hash()).unwrap_or([0; 32]);
        let author = me.public_key();
        let signature = me.sign(&body_bytes(seq, &prev, &author, &op)).to_vec();
        Entry {
            seq,
            prev,
            author,
            op,
            signature,
        }
    }

    /// Admit a device (after pairing): it gets the current epoch key.
    pub fn add(
        &mut self,
        me: &DeviceIdentity,
        device: [u8; 32],
        name: &str,
    ) -> Result<Vec<Entry>, RosterError> {
        let key = self.keys.get(&self.epoch).cloned().ok_or_else(|| {
            RosterError::Invalid(
                self.entries.len() as u64,
                "this device lacks the current key".into(),
            )
        })?;
        let wrapped = wrap(&key, self.epoch, &device).ok_or_else(|| {
            RosterError::Invalid(self.entries.len() as u64, "not a valid device key".into())
        })?;
        let e = self.sign(
            me,
            Op::Add {
                device,
                name: name.to_string(),
                wrapped,
            },
        );
        self.apply(e.clone(), Some(me))?;
        Ok(vec![e])
    }

    /// Remove a device and rotate the key (two entries).
    pub fn remove(
        &mut self,
        me: &DeviceIdentity,
        device: [u8; 32],
    ) -> Result<Vec<Entry>, RosterError> {
        let e1 = self.sign(me, Op::Remove { device });
        self.apply(e1.clone(), Some(me))?;
        let epoch = self.epoch + 1;
        let key = EpochKey::random();
        let wrapped = self
            .members
            .keys()
            .filter_map(|m| wrap(&key, epoch, m).map(|w| (*m, w)))
            .collect();
        let e2 = self.sign(me, Op::Rotate { epoch, wrapped });
        self.apply(e2.clone(), Some(me))?;
        Ok(vec![e1, e2])
    }

    /// Check and apply the next entry; `me` unwraps keys meant for it.
    pub fn apply(&mut self, e: Entry, me: Option<&DeviceIdentity>) -> Result<(), RosterError> {
        let expected = self.entries.len() as u64;
        if e.seq != expected {
            return Err(RosterError::OutOfOrder {
                seq: e.seq,
                expected,
            });
        }
        let prev = self.entries.last().map(|p| p.hash()).unwrap_or([0; 32]);
        if e.prev != prev {
            return Err(RosterError::BadLink(e.seq));
        }
        let sig: [u8; 64] = e
            .signature
            .as_slice()
            .try_into()
            .map_err(|_| RosterError::BadSignature(e.seq))?;
        if !verify(
            &e.author,
            &body_bytes(e.seq, &e.prev, &e.author, &e.op),
            &sig,
        ) {
            return Err(RosterError::BadSignature(e.seq));
        }
        let genesis = matches!(e.op, Op::Genesis { .. });
        if genesis != (e.seq == 0) {
            return Err(RosterError::Invalid(
                e.seq,
                "genesis must be first and only first".into(),
            ));
        }
        if !genesis && !self.members.contains_key(&e.author) {
            return Err(RosterError::NotMember(e.seq));
        }
        if let Some(removed) = self.pending_removal
            && !matches!(e.op, Op::Rotate { .. })
        {
            let _ = removed;
            return Err(RosterError::Invalid(
                e.seq,
                "a removal must be followed by a rotation".into(),
            ));
        }
        let mine = me.map(|m| m.public_key());
        match &e.op {
            Op::Genesis { name, wrapped } => {
                self.members.insert(e.author, name.clone());
                self.epoch = 0;
                if mine == Some(e.author)
                    && let Some(k) = me.and_then(|m| unwrap(wrapped, 0, m))
                {
                    self.keys.insert(0, k);
                }
            }
            Op::Add {
                device,
                name,
                wrapped,
            } => {
                if self.members.contains_key(device) {
                    return Err(RosterError::Invalid(e.seq, "already a member".into()));
                }
                self.members.insert(*device, name.clone());
                if mine == Some(*device)
                    && let Some(k) = me.and_then(|m| unwrap(wrapped, self.epoch, m))
                {
                    self.keys.insert(self.epoch, k);
                }
            }
            Op::Remove { device } => {
                if self.members.remove(device).is_none() {
                    return Err(RosterError::Invalid(e.seq, "not a member".into()));
                }
                self.pending_removal = Some(*device);
            }
            Op::Rotate { epoch, wrapped } => {
                if *epoch != self.epoch + 1 {
                    return Err(RosterError::Invalid(
                        e.seq,
                        format!("epoch {epoch} does not follow {}", self.epoch),
                    ));
                }
                let to: BTreeSet<[u8; 32]> = wrapped.iter().map(|(d, _)| *d).collect();
                let members: BTreeSet<[u8; 32]> = self.members.keys().copied().collect();
                if to != members {
                    return Err(RosterError::Invalid(
                        e.seq,
                        "the new key must go to exactly the members".into(),
                    ));
                }
                self.epoch = *epoch;
                self.pending_removal = None;
                if let Some(m) = me
                    && let Some((_, w)) = wrapped.iter().find(|(d, _)| Some(*d) == mine)
                    && let Some(k) = unwrap(w, *epoch, m)
                {
                    self.keys.insert(*epoch, k);
                }
            }
        }
        let current: BTreeSet<[u8; 32]> = self.members.keys().copied().collect();
        self.epoch_members
            .entry(self.epoch)
            .or_default()
            .extend(current);
        self.entries.push(e);
        Ok(())
    }

    /// Replay a whole log (a device joining, or reading it from disk).
    pub fn replay(entries: &[Entry], me: Option<&DeviceIdentity>) -> Result<Roster, RosterError> {
        let mut r = Roster::default();
        for e in entries {
            r.apply(e.clone(), me)?;
        }
        Ok(r)
    }

    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }
    pub fn members(&self) -> BTreeSet<[u8; 32]> {
        self.members.keys().copied().collect()
    }
    pub fn names(&self) -> &BTreeMap<[u8; 32], String> {
        &self.members
    }
    /// Who may author envelopes of each epoch.
    pub fn authors_by_epoch(&self) -> &BTreeMap<u64, BTreeSet<[u8; 32]>> {
        &self.epoch_members
    }
    pub fn epoch(&self) -> u64 {
        self.epoch
    }
    pub fn keys(&self) -> &BTreeMap<u64, EpochKey> {
        &self.keys
    }
    pub fn current_key(&self) -> Option<&EpochKey> {
        self.keys.get(&self.epoch)
    }
    /// The device group's id: the hash of the genesis entry.
    pub fn group_id(&self) -> [u8; 32] {
        self.entries.first().map(|e| e.hash()).unwrap_or([0; 32])
    }

    /// Apply the entries of `log` that extend ours. `Ok(true)` if anything
    /// was new; an error if the logs diverge (a fork is never merged) or
    /// an entry is invalid — the roster is then unchanged.
    pub fn extend_from(
        &mut self,
        log: &[Entry],
        me: Option<&DeviceIdentity>,
    ) -> Result<bool, RosterError> {
        if log.len() <= self.entries.len() {
            // Ours is as long: theirs must be a prefix of ours.
            return match log.last() {
                Some(e) if self.entries[e.seq as usize].hash() != e.hash() => {
                    Err(RosterError::BadLink(e.seq))
                }
                _ => Ok(false),
            };
        }
        if let Some(mine) = self.entries.last()
            && log[mine.seq as usize].hash() != mine.hash()
        {
            return Err(RosterError::BadLink(mine.seq));
        }
        let mut next = self.clone();
        for e in &log[self.entries.len()..] {
            next.apply(e.clone(), me)?;
        }
        *self = next;
        Ok(true)
    }

    /// The hash of the head entry (two devices agree iff these match).
    pub fn head(&self) -> [u8; 32] {
        self.entries.last().map(|e| e.hash()).unwrap_or([0; 32])
    }
}
