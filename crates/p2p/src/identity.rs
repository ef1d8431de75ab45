//! Device identity: load or create the Ed25519 key, derive the device id.

use ed25519_dalek::SigningKey;
use sha2::{Digest, Sha256};
use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

const KEY_FILE: &str = "device.ed25519";
const BASE32: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("could not read or write the device key at {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "the device key at {path} is damaged ({len} bytes, expected 32); move it aside to create a new identity"
    )]
    Damaged { path: PathBuf, len: usize },
    #[error("no randomness available from the OS: {0}")]
    Random(String),
}

/// This device's long-term signing identity.
#[derive(Clone)]
pub struct DeviceIdentity {
    key: SigningKey,
}

impl std::fmt::Debug for DeviceIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the secret.
        f.debug_struct("DeviceIdentity")
            .field("device_id", &self.device_id().to_string())
            .finish()
    }
}

impl DeviceIdentity {
    /// Load the key from `keys_dir`, creating it (mode 0600, dir 0700) on first run.
    pub fn load_or_create(keys_dir: &Path) -> Result<Self, IdentityError> {
        let io = |source| IdentityError::Io {
            path: keys_dir.to_path_buf(),
            source,
        };
        fs::create_dir_all(keys_dir).map_err(io)?;
        fs::set_permissions(keys_dir, fs::Permissions::from_mode(0o700)).map_err(io)?;
        let path = keys_dir.join(KEY_FILE);
        match fs::read(&path) {
            Ok(bytes) => {
                let seed: [u8; 32] =
                    bytes
                        .as_slice()
                        .try_into()
                        .map_err(|_| IdentityError::Damaged {
                            path: path.clone(),
                            len: bytes.len(),
                        })?;
                Ok(DeviceIdentity {
                    key: SigningKey::from_bytes(&seed),
                })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut seed = [0u8; 32];
                getrandom::fill(&mut seed).map_err(|e| IdentityError::Random(e.to_string()))?;
                let tmp = keys_dir.join(format!("{KEY_FILE}.tmp"));
                let ioerr = |source| IdentityError::Io {
                    path: tmp.clone(),
                    source,
                };
                let mut f = fs::OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .mode(0o600)
                    .open(&tmp)
                    .map_err(ioerr)?;
                f.write_all(&seed).map_err(ioerr)?;
                f.sync_all().map_err(ioerr)?;
                fs::rename(&tmp, &path).map_err(io)?;
                Ok(DeviceIdentity {
                    key: SigningKey::from_bytes(&seed),
                })
            }
            Err(e) => Err(IdentityError::Io { path, source: e }),
        }
    }

    pub fn public_key(&self) -> [u8; 32] {
        self.key.verifying_key().to_bytes()
    }

    pub fn device_id(&self) -> DeviceId {
        DeviceId::from_public_key(&self.public_key())
    }

    /// Sign `msg` with the device key.
    pub fn sign(&self, msg: &[u8]) -> [u8; 64] {
        use ed25519_dalek::Signer;
        self.key.sign(msg).to_bytes()
    }

    /// The device's X25519 secret (the Ed25519 key's scalar): epoch keys
    /// are wrapped to it, so one key pair serves signing and wrapping.
    pub fn x25519_secret(&self) -> x25519_dalek::StaticSecret {
        x25519_dalek::StaticSecret::from(self.key.to_scalar_bytes())
    }

    /// A throwaway identity (tests, simulations).
    /// The secret seed, for building the libp2p identity (never log it).
    pub fn seed(&self) -> [u8; 32] {
        self.key.to_bytes()
    }

    pub fn from_seed(seed: [u8; 32]) -> DeviceIdentity {
        DeviceIdentity {
            key: SigningKey::from_bytes(&seed),
        }
    }
}

/// Verify an Ed25519 signature by `public_key`.
pub fn verify(public_key: &[u8; 32], msg: &[u8], signature: &[u8; 64]) -> bool {
    use ed25519_dalek::{Signature, Verifier, VerifyingKey};
    let Ok(vk) = VerifyingKey::from_bytes(public_key) else {
        return false;
    };
    vk.verify(msg, &Signature::from_bytes(signature)).is_ok()
}

/// The X25519 public key of a device, from its Ed25519 public key.
pub fn x25519_public(public_key: &[u8; 32]) -> Option<x25519_dalek::PublicKey> {
    let vk = ed25519_dalek::VerifyingKey::from_bytes(public_key).ok()?;
    Some(x25519_dalek::PublicKey::from(vk.to_montgomery().to_bytes()))
}

/// A device id: the SHA-256 of the Ed25519 public key.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct DeviceId([u8; 32]);

impl DeviceId {
    pub fn from_public_key(pk: &[u8; 32]) -> Self {
        DeviceId(Sha256::digest(pk).into())
    }

    /// The first 7 characters of the long form: enough to tell devices apart.
    pub fn short(&self) -> String {
        self.to_string()[..7].to_string()
    }

    /// Parse a long form (dashes and case ignored), verifying the check characters.
    pub fn parse(s: &str) -> Option<Self> {
        let chars: Vec<u8> = s
            .bytes()
            .filter(|b| *b != b'-' && *b != b' ')
            .map(|b| b.to_ascii_uppercase())
            .collect();
        if chars.len() != 56 {
            return None;
        }
        let mut plain = Vec::with_capacity(52);
        for group in chars.chunks(14) {
            let (body, check) = group.split_at(13);
            if luhn32(body)? != check[0] {
                return None;
            }
            plain.extend_from_slice(body);
        }
        let decoded = data_encoding::BASE32_NOPAD.decode(&plain).ok()?;
        Some(DeviceId(decoded.try_into().ok()?))
    }
}

fn luhn32(s: &[u8]) -> Option<u8> {
    let mut factor = 1;
    let mut sum = 0u32;
    for &c in s {
        let cp = BASE32.iter().position(|&b| b == c)? as u32;
        let mut addend = factor * cp;
        factor = if factor == 2 { 1 } else { 2 };
        addend = addend / 32 + addend % 32;
        sum += addend;
    }
    let check = (32 - sum % 32) % 32;
    Some(BASE32[check as usize])
}

impl std::fmt::Display for DeviceId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let b32 = data_encoding::BASE32_NOPAD.encode(&self.0);
        let mut with_check = String::with_capacity(56);
        for chunk in b32.as_bytes().chunks(13) {
            with_check.push_str(std::str::from_utf8(chunk).map_err(|_| std::fmt::Error)?);
            with_check.push(luhn32(chunk).ok_or(std::fmt::Error)? as char);
        }
        let groups: Vec<&str> = (0..8).map(|i| &with_check[i * 7..i * 7 + 7]).collect();
        write!(f, "{}", groups.join("-"))
    }
}

impl std::fmt::Debug for DeviceId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DeviceId({})", self.short())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn key_is_created_once_with_mode_0600() {
        let dir = tempfile::tempdir().unwrap();
        let keys = dir.path().join("keys");
        let a = DeviceIdentity::load_or_create(&keys).unwrap();
        let b = DeviceIdentity::load_or_create(&keys).unwrap();
        assert_eq!(a.device_id(), b.device_id());
        let mode = fs::metadata(keys.join(KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let dmode = fs::metadata(&keys).unwrap().permissions().mode();
        assert_eq!(dmode & 0o777, 0o700);
    }

    #[test]
    fn damaged_key_is_reported_not_replaced() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(KEY_FILE), b"short").unwrap();
        let err = DeviceIdentity::load_or_create(dir.path()).unwrap_err();
        assert!(matches!(err, IdentityError::Damaged { len: 5, .. }));
        assert_eq!(fs::read(dir.path().join(KEY_FILE)).unwrap(), b"short");
    }

    proptest! {
        #[test]
        fn device_id_round_trips_and_detects_typos(pk in any::<[u8; 32]>(), pos in 0usize..56) {
            let id = DeviceId::from_public_key(&pk);
            let s = id.to_string();
            prop_assert_eq!(s.len(), 63);
            prop_assert_eq!(DeviceId::parse(&s), Some(id));
            prop_assert_eq!(DeviceId::parse(&s.to_lowercase()), Some(id));
            // change one character: the check characters must catch it
            let mut plain: Vec<u8> = s.bytes().filter(|b| *b != b'-').collect();
            let old = plain[pos];
            plain[pos] = if old == b'A' { b'B' } else { b'A' };
            let typo = String::from_utf8(plain).unwrap();
            prop_assert_ne!(DeviceId::parse(&typo), Some(id));
        }
    }
}
