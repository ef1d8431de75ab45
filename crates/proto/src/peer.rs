//! The device ⇄ device and device ⇄ relay protocol, carried by libp2p
//! request-response on [`PEER_PROTOCOL`] (noise-authenticated, so the
//! sender of every request is a known PeerId = device key). Payloads are
//! bincode 2 (serde, standard config) with the same [`crate::MAX_FRAME`]
//! bound as the local protocols. Envelopes and roster entries travel as
//! opaque bytes: their format belongs to `agentos-p2p` (`seal`, `roster`),
//! which signs and versions them itself.

use serde::{Deserialize, Serialize};

/// The request-response protocol name; the number is [`PEER_VERSION`].
pub const PEER_PROTOCOL: &str = "/agentos/peer/1";
/// Bump on any change to [`PeerRequest`] or [`PeerResponse`].
pub const PEER_VERSION: u32 = 1;
/// The largest request or response accepted on the wire.
pub const MAX_PEER_MESSAGE: usize = crate::MAX_FRAME;

/// A 32-byte device key (Ed25519 public key).
pub type DeviceKey = [u8; 32];
/// A device group id: the hash of its roster's genesis entry.
pub type GroupId = [u8; 32];

/// How far a reader got in one author's log at the relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cursor {
    pub author: DeviceKey,
    /// Entries already read.
    pub next: u64,
}

/// A request from one device (or a relay client) to another.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PeerRequest {
    /// "Here is my roster" (the whole signed log, bincode of entries). The
    /// answer is the responder's roster, so both learn newer entries.
    Roster { group: GroupId, log: Vec<u8> },
    /// One Automerge sync message for one workspace (point to point).
    Sync { workspace: String, message: Vec<u8> },
    /// Pairing, joiner → inviter: proof of the invite secret.
    PairHello {
        nonce: [u8; 16],
        proof: [u8; 32],
        name: String,
    },
    /// Pairing, joiner → inviter: the joiner's user accepted (or refused)
    /// the SAS. The inviter answers with its roster once both confirmed.
    PairConfirm { accepted: bool },
    /// Relay: append envelopes to their authors' logs.
    Put {
        group: GroupId,
        workspace: String,
        envelopes: Vec<Vec<u8>>,
    },
    /// Relay: envelopes after the cursors (at most `limit`).
    Fetch {
        group: GroupId,
        workspace: String,
        cursors: Vec<Cursor>,
        limit: u32,
    },
    /// Relay: store this author's latest encrypted snapshot of a workspace.
    PutSnapshot {
        group: GroupId,
        workspace: String,
        envelope: Vec<u8>,
    },
    /// Relay: the latest snapshot of each author for a workspace.
    GetSnapshots { group: GroupId, workspace: String },
    /// Relay: which workspaces it holds logs for (names only).
    Workspaces { group: GroupId },
    /// Handoff, A → B: take over an agent. `bundle` is a git bundle of the
    /// agent's branch down to `base` (empty when the branch has no commits
    /// of its own); `tip` is the commit the branch must point at.
    Handoff {
        workspace: String,
        name: String,
        agent_type: String,
        command: Vec<String>,
        branch: String,
        base: String,
        tip: String,
        bundle: Vec<u8>,
        resume_id: Option<String>,
    },
}

/// The answer to a [`PeerRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PeerResponse {
    Ok,
    Roster {
        log: Vec<u8>,
    },
    PairAccept {
        nonce: [u8; 16],
        name: String,
    },
    Envelopes {
        envelopes: Vec<Vec<u8>>,
        cursors: Vec<Cursor>,
    },
    Snapshots {
        envelopes: Vec<Vec<u8>>,
    },
    Workspaces {
        names: Vec<String>,
    },
    /// The handoff was taken: the agent runs on the responder now.
    HandedOff {
        agent: String,
    },
    Error {
        code: crate::ErrorCode,
        message: String,
    },
}

/// Encode a peer message (no length prefix: the transport frames it).
pub fn encode<T: Serialize>(msg: &T) -> Result<Vec<u8>, crate::WireError> {
    let mut v = crate::encode_frame(msg)?;
    v.drain(..4);
    Ok(v)
}

/// Decode a peer message, refusing trailing bytes and oversized input.
pub fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, crate::WireError> {
    if bytes.len() > MAX_PEER_MESSAGE {
        return Err(crate::WireError::TooLarge(bytes.len()));
    }
    crate::decode_payload(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn round_trip() {
        let m = PeerRequest::Fetch {
            group: [7; 32],
            workspace: "w".into(),
            cursors: vec![Cursor {
                author: [1; 32],
                next: 3,
            }],
            limit: 100,
        };
        assert_eq!(decode::<PeerRequest>(&encode(&m).unwrap()).unwrap(), m);
    }

    proptest! {
        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode::<PeerRequest>(&bytes);
            let _ = decode::<PeerResponse>(&bytes);
        }
    }
}
