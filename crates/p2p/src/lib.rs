//! Peer-to-peer layer. For now: the device identity. Each device has one
//! Ed25519 key, created on first run and kept in `$AGENTOS_HOME/keys/` with
//! mode 0600. The same key becomes the libp2p identity, so a PeerId is a
//! device id. Device ids are shown Syncthing-style (base32 of the public key's
//! SHA-256 with Luhn mod-32 check characters) and as a 7-character short form.

pub mod identity;

pub use identity::{DeviceId, DeviceIdentity, IdentityError};
