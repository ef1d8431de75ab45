//! Peer-to-peer layer: a sans-IO core (identity, pairing, roster, seal,
//! engine) and its libp2p edges (`net`: the device swarm; `transport`: the
//! daemon's driver task).
//!
//! - `identity`: each device has one Ed25519 key, created on first run and
//!   kept in `$AGENTOS_HOME/keys/` with mode 0600. The same key becomes the
//!   libp2p identity (a PeerId is a device id) and, in its Montgomery form,
//!   the X25519 key that workspace keys are wrapped to. Device ids are shown
//!   Syncthing-style (base32 of the public key's SHA-256 with Luhn mod-32
//!   check characters) and as a 7-character short form.
//! - `pairing`: invites (short code or payload, expiry, relay address), a
//!   proof of the secret bound to both device keys, a 6-digit SAS, and
//!   confirmation on both sides; wrong codes burn the invite.
//! - `roster`: a workspace's signed, hash-linked membership log.
//! - `seal`: epoch keys, key wrapping and sealed envelopes (AAD header,
//!   Ed25519 signature a relay can check without the key, replay guard).
//! - `engine`: one device's sync engine for one workspace (gossip and relay
//!   envelopes out, point-to-point Automerge sync with per-peer state), and
//!   the relay's store of envelopes it cannot read.

pub mod engine;
pub mod identity;
pub mod lan;
pub mod net;
pub mod pairing;
pub mod relay;
pub mod roster;
pub mod seal;
pub mod transport;

pub use identity::{DeviceId, DeviceIdentity, IdentityError};
