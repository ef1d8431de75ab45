//! Workspace keys and sealed envelopes, sans IO.
//!
//! - An **epoch key** (32 random bytes) encrypts a workspace's changes; it
//!   is replaced whenever a device leaves, so the removed device cannot read
//!   anything written afterwards.
//! - **Wrapping** gives an epoch key to one device: X25519 with a fresh
//!   ephemeral key against the device's key (its Ed25519 key's Montgomery
//!   form), HKDF-SHA256, ChaCha20-Poly1305.
//! - An **envelope** carries one change: its header is the AEAD's
//!   associated data and is signed with the author's Ed25519 key together
//!   with the nonce and ciphertext, so a relay can check who wrote it
//!   without being able to read it. Opening checks size, membership,
//!   signature, replay, then decrypts.

use crate::identity::{DeviceIdentity, verify, x25519_public};
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// The largest envelope accepted from anyone (gossipsub carries ≤ 64 KiB).
pub const MAX_ENVELOPE: usize = 64 * 1024;
/// The largest snapshot envelope (a whole document, relay upload only).
pub const MAX_SNAPSHOT: usize = 8 << 20;
/// Envelope format version.
pub const ENVELOPE_VERSION: u8 = 1;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    #[error(
        "envelope of {0} bytes is over the limit ({MAX_ENVELOPE} bytes, {MAX_SNAPSHOT} for a snapshot)"
    )]
    TooLarge(usize),
    #[error("malformed envelope: {0}")]
    Malformed(String),
    #[error("unsupported envelope version {0}")]
    Version(u8),
    #[error("the author is not a member of this workspace's roster")]
    NotMember,
    #[error("bad signature")]
    BadSignature,
    #[error("replayed envelope (author seq {0} already seen)")]
    Replay(u64),
    #[error("no key for epoch {0} (this device was not given it)")]
    NoKey(u64),
    #[error("decryption failed (tampered, or the wrong key)")]
    Decrypt,
    #[error("the envelope belongs to another workspace")]
    WrongWorkspace,
}

/// One epoch's symmetric key.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EpochKey(pub [u8; 32]);

impl std::fmt::Debug for EpochKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EpochKey(..)")
    }
}

impl EpochKey {
    pub fn random() -> EpochKey {
        let mut k = [0u8; 32];
        getrandom::fill(&mut k).expect("the OS has no randomness");
        EpochKey(k)
    }
}

fn random_bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    getrandom::fill(&mut b).expect("the OS has no randomness");
    b
}

/// An epoch key wrapped for one device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Wrapped {
    pub ephemeral: [u8; 32],
    pub nonce: [u8; 12],
    pub ciphertext: Vec<u8>,
}

fn wrap_key(shared: &[u8; 32], recipient: &[u8; 32], ephemeral: &[u8; 32], epoch: u64) -> Key {
    let hk = hkdf::Hkdf::<sha2::Sha256>::new(Some(b"agentos-wrap-v1"), shared);
    let mut info = Vec::with_capacity(72);
    info.extend_from_slice(recipient);
    info.extend_from_slice(ephemeral);
    info.extend_from_slice(&epoch.to_be_bytes());
    let mut okm = [0u8; 32];
    hk.expand(&info, &mut okm)
        .expect("32 bytes is a valid HKDF output length");
    Key::from(okm)
}

/// Wrap `key` (of `epoch`) for the device whose Ed25519 public key is
/// `recipient`.
pub fn wrap(key: &EpochKey, epoch: u64, recipient: &[u8; 32]) -> Option<Wrapped> {
    let their = x25519_public(recipient)?;
    let eph = x25519_dalek::StaticSecret::from(random_bytes::<32>());
    let eph_pub = x25519_dalek::PublicKey::from(&eph).to_bytes();
    let shared = eph.diffie_hellman(&their);
    let cipher = ChaCha20Poly1305::new(&wrap_key(shared.as_bytes(), recipient, &eph_pub, epoch));
    let nonce = random_bytes::<12>();
    let ciphertext = cipher
        .encrypt(
            Nonce::from_slice(&nonce),
            Payload {
                msg: &key.0,
                aad: &epoch.to_be_bytes(),
            },
        )
        .ok()?;
    Some(Wrapped {
        ephemeral: eph_pub,
        nonce,
        ciphertext,
    })
}

/// Unwrap a key given to `me`.
pub fn unwrap(w: &Wrapped, epoch: u64, me: &DeviceIdentity) -> Option<EpochKey> {
    let shared = me
        .x25519_secret()
        .diffie_hellman(&x25519_dalek::PublicKey::from(w.ephemeral));
    let cipher = ChaCha20Poly1305::new(&wrap_key(
        shared.as_bytes(),
        &me.public_key(),
        &w.ephemeral,
        epoch,
    ));
    let plain = cipher
        .decrypt(
            Nonce::from_slice(&w.nonce),
            Payload {
                msg: &w.ciphertext,
                aad: &epoch.to_be_bytes(),
            },
        )
        .ok()?;
    Some(EpochKey(plain.try_into().ok()?))
}

/// The signed, authenticated part of an envelope (the AEAD's AAD).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    pub version: u8,
    pub workspace: String,
    /// The author's Ed25519 public key.
    pub author: [u8; 32],
    pub epoch: u64,
    /// Strictly increasing per author (replay protection).
    pub seq: u64,
    /// What the payload is (a change, a heads notice, …).
    pub kind: u8,
}

/// A sealed change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    pub header: Header,
    pub nonce: [u8; 12],
    pub ciphertext: Vec<u8>,
    pub signature: Vec<u8>,
}

type Config<const N: usize> = bincode::config::Configuration<
    bincode::config::BigEndian,
    bincode::config::Fixint,
    bincode::config::Limit<N>,
>;

/// The limit only bounds decoding; the encoding is the same for every `N`.
fn config<const N: usize>() -> Config<N> {
    bincode::config::standard()
        .with_big_endian()
        .with_fixed_int_encoding()
        .with_limit::<N>()
}

fn header_bytes(h: &Header) -> Vec<u8> {
    bincode::serde::encode_to_vec(h, config::<MAX_ENVELOPE>()).unwrap_or_default()
}

fn signed_bytes(h: &[u8], nonce: &[u8; 12], ciphertext: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(h.len() + 12 + ciphertext.len() + 16);
    m.extend_from_slice(b"agentos-envelope-v1");
    m.extend_from_slice(&(h.len() as u32).to_be_bytes());
    m.extend_from_slice(h);
    m.extend_from_slice(nonce);
    m.extend_from_slice(ciphertext);
    m
}

impl Envelope {
    /// Encrypt and sign `plaintext`.
    pub fn seal(
        author: &DeviceIdentity,
        workspace: &str,
        epoch: u64,
        key: &EpochKey,
        seq: u64,
        kind: u8,
        plaintext: &[u8],
    ) -> Envelope {
        let header = Header {
            version: ENVELOPE_VERSION,
            workspace: workspace.to_string(),
            author: author.public_key(),
            epoch,
            seq,
            kind,
        };
        let aad = header_bytes(&header);
        let nonce = random_bytes::<12>();
        let ciphertext = ChaCha20Poly1305::new(&Key::from(key.0))
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad: &aad,
                },
            )
            .expect("ChaCha20-Poly1305 encryption does not fail for in-memory data");
        let signature = author
            .sign(&signed_bytes(&aad, &nonce, &ciphertext))
            .to_vec();
        Envelope {
            header,
            nonce,
            ciphertext,
            signature,
        }
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        bincode::serde::encode_to_vec(self, config::<MAX_SNAPSHOT>()).unwrap_or_default()
    }

    /// Decode, bounded: oversized or malformed input is an error, never a panic.
    pub fn from_bytes(b: &[u8]) -> Result<Envelope, SealError> {
        Self::decode_bounded::<MAX_ENVELOPE>(b)
    }

    /// Decode a snapshot envelope (bounded by [`MAX_SNAPSHOT`]).
    pub fn from_snapshot_bytes(b: &[u8]) -> Result<Envelope, SealError> {
        Self::decode_bounded::<MAX_SNAPSHOT>(b)
    }

    fn decode_bounded<const N: usize>(b: &[u8]) -> Result<Envelope, SealError> {
        if b.len() > N {
            return Err(SealError::TooLarge(b.len()));
        }
        let (env, used): (Envelope, usize) = bincode::serde::decode_from_slice(b, config::<N>())
            .map_err(|e| SealError::Malformed(e.to_string()))?;
        if used != b.len() {
            return Err(SealError::Malformed("trailing bytes".into()));
        }
        Ok(env)
    }

    /// What a relay can check without any key: version, author
    /// membership and signature.
    pub fn verify(&self, members: &BTreeSet<[u8; 32]>) -> Result<(), SealError> {
        if self.header.version != ENVELOPE_VERSION {
            return Err(SealError::Version(self.header.version));
        }
        if !members.contains(&self.header.author) {
            return Err(SealError::NotMember);
        }
        let sig: [u8; 64] = self
            .signature
            .as_slice()
            .try_into()
            .map_err(|_| SealError::BadSignature)?;
        let aad = header_bytes(&self.header);
        if !verify(
            &self.header.author,
            &signed_bytes(&aad, &self.nonce, &self.ciphertext),
            &sig,
        ) {
            return Err(SealError::BadSignature);
        }
        Ok(())
    }
}

/// Which `(author, seq)` were accepted: a window per author, so reordered
/// delivery is fine and a replay is not.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct ReplayGuard {
    seen: BTreeMap<[u8; 32], (u64, BTreeSet<u64>)>,
}

/// How far behind an author's newest seq a late envelope may still arrive.
pub const REPLAY_WINDOW: u64 = 4096;

impl ReplayGuard {
    /// Record `seq` of `author`; false if it was seen (or is too old to tell).
    pub fn accept(&mut self, author: [u8; 32], seq: u64) -> bool {
        let (max, set) = self.seen.entry(author).or_default();
        if *max >= REPLAY_WINDOW && seq <= *max - REPLAY_WINDOW {
            return false;
        }
        if !set.insert(seq) {
            return false;
        }
        *max = (*max).max(seq);
        let floor = max.saturating_sub(REPLAY_WINDOW);
        while set
            .first()
            .is_some_and(|s| *s <= floor && *max >= REPLAY_WINDOW)
        {
            set.pop_first();
        }
        true
    }
}

/// Who may author each epoch's envelopes (from the roster).
pub type Authors = BTreeMap<u64, BTreeSet<[u8; 32]>>;

/// Check and decrypt an envelope for workspace `workspace`.
pub fn open(
    bytes: &[u8],
    workspace: &str,
    authors: &Authors,
    keys: &BTreeMap<u64, EpochKey>,
    replay: &mut ReplayGuard,
) -> Result<(Header, Vec<u8>), SealError> {
    open_envelope(
        Envelope::from_bytes(bytes)?,
        workspace,
        authors,
        keys,
        replay,
    )
}

/// Check and decrypt a snapshot envelope (no replay window: a snapshot is
/// a whole document, applying it twice changes nothing).
pub fn open_snapshot(
    bytes: &[u8],
    workspace: &str,
    authors: &Authors,
    keys: &BTreeMap<u64, EpochKey>,
) -> Result<(Header, Vec<u8>), SealError> {
    let env = Envelope::from_snapshot_bytes(bytes)?;
    let mut once = ReplayGuard::default();
    open_envelope(env, workspace, authors, keys, &mut once)
}

fn open_envelope(
    env: Envelope,
    workspace: &str,
    authors: &Authors,
    keys: &BTreeMap<u64, EpochKey>,
    replay: &mut ReplayGuard,
) -> Result<(Header, Vec<u8>), SealError> {
    if env.header.workspace != workspace {
        return Err(SealError::WrongWorkspace);
    }
    let empty = BTreeSet::new();
    env.verify(authors.get(&env.header.epoch).unwrap_or(&empty))?;
    let key = keys
        .get(&env.header.epoch)
        .ok_or(SealError::NoKey(env.header.epoch))?;
    let aad = header_bytes(&env.header);
    let plain = ChaCha20Poly1305::new(&Key::from(key.0))
        .decrypt(
            Nonce::from_slice(&env.nonce),
            Payload {
                msg: &env.ciphertext,
                aad: &aad,
            },
        )
        .map_err(|_| SealError::Decrypt)?;
    // Only a genuine, decryptable envelope consumes its sequence number.
    if !replay.accept(env.header.author, env.header.seq) {
        return Err(SealError::Replay(env.header.seq));
    }
    Ok((env.header, plain))
}
