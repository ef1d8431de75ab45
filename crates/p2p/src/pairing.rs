//! Pairing, sans IO. Device A makes an invite (a secret with an expiry, at
//! most 10 minutes, and the relay address when there is one); device B,
//! connected to A over a noise-authenticated channel (so each side knows
//! the other's device key), proves it knows the secret; both then show the
//! same 6-digit SAS code, bound to both device keys and fresh nonces, and
//! the pairing completes only when the user confirmed on both sides.
//! Wrong codes count against the invite, which burns after a few failures;
//! an expired invite fails clearly.

use crate::identity::x25519_public;
use hkdf::Hkdf;
use serde::{Deserialize, Serialize};
use sha2::Sha256;

/// Invites live at most this long.
pub const MAX_INVITE_MS: u64 = 10 * 60 * 1000;
/// Wrong attempts after which an invite is burned.
pub const MAX_ATTEMPTS: u32 = 5;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PairError {
    #[error("the invite has expired; make a new one with `agentos pair`")]
    Expired,
    #[error("wrong pairing code; check it and try again")]
    WrongCode,
    #[error("too many wrong attempts: this invite is burned; make a new one with `agentos pair`")]
    RateLimited,
    #[error("malformed invite: {0}")]
    Malformed(String),
    #[error("the pairing was not confirmed on both devices")]
    NotConfirmed,
    #[error("unexpected pairing message in this state")]
    Unexpected,
}

/// What the inviting device hands out (as a payload or a short code).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Invite {
    /// The inviting device's Ed25519 public key.
    pub device: [u8; 32],
    pub secret: [u8; 10],
    pub expires_at_ms: u64,
    pub relay: Option<String>,
    /// The inviter's own addresses (for a direct dial when mDNS can't).
    pub addrs: Vec<String>,
}

impl Invite {
    pub fn new(device: [u8; 32], now_ms: u64, ttl_ms: u64, relay: Option<String>) -> Invite {
        let mut secret = [0u8; 10];
        getrandom::fill(&mut secret).expect("the OS has no randomness");
        Invite {
            device,
            secret,
            expires_at_ms: now_ms + ttl_ms.min(MAX_INVITE_MS),
            relay,
            addrs: Vec::new(),
        }
    }

    /// The short code a person types: the secret in base32, dashed.
    pub fn code(&self) -> String {
        let s = data_encoding::BASE32_NOPAD.encode(&self.secret);
        s.as_bytes()
            .chunks(4)
            .map(|c| String::from_utf8_lossy(c).into_owned())
            .collect::<Vec<_>>()
            .join("-")
    }

    /// Parse a typed short code back to the secret.
    pub fn parse_code(code: &str) -> Result<[u8; 10], PairError> {
        let clean: String = code
            .chars()
            .filter(|c| c.is_ascii_alphanumeric())
            .map(|c| c.to_ascii_uppercase())
            .collect();
        let bytes = data_encoding::BASE32_NOPAD
            .decode(clean.as_bytes())
            .map_err(|e| PairError::Malformed(e.to_string()))?;
        bytes
            .try_into()
            .map_err(|_| PairError::Malformed("a code has 16 characters".into()))
    }

    /// The copyable payload (carries the device, expiry and relay too).
    pub fn payload(&self) -> String {
        let bytes =
            bincode::serde::encode_to_vec(self, bincode::config::standard()).unwrap_or_default();
        format!(
            "agentos-pair:{}",
            data_encoding::BASE32_NOPAD.encode(&bytes)
        )
    }

    pub fn parse_payload(s: &str) -> Result<Invite, PairError> {
        let body = s
            .trim()
            .strip_prefix("agentos-pair:")
            .ok_or_else(|| PairError::Malformed("not an agentos-pair: payload".into()))?;
        let bytes = data_encoding::BASE32_NOPAD
            .decode(body.as_bytes())
            .map_err(|e| PairError::Malformed(e.to_string()))?;
        if bytes.len() > 4096 {
            return Err(PairError::Malformed("too long".into()));
        }
        let (inv, _): (Invite, usize) =
            bincode::serde::decode_from_slice(&bytes, bincode::config::standard())
                .map_err(|e| PairError::Malformed(e.to_string()))?;
        if x25519_public(&inv.device).is_none() {
            return Err(PairError::Malformed("not a device key".into()));
        }
        Ok(inv)
    }
}

fn prf(secret: &[u8], label: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let hk = Hkdf::<Sha256>::new(Some(b"agentos-pair-v1"), secret);
    let mut info = label.to_vec();
    for p in parts {
        info.extend_from_slice(&(p.len() as u32).to_be_bytes());
        info.extend_from_slice(p);
    }
    let mut out = [0u8; 32];
    hk.expand(&info, &mut out)
        .expect("32 bytes is a valid length");
    out
}

fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The 6-digit code both screens show.
pub fn sas(
    secret: &[u8],
    inviter: &[u8; 32],
    joiner: &[u8; 32],
    n_a: &[u8; 16],
    n_b: &[u8; 16],
) -> String {
    let h = prf(secret, b"sas", &[inviter, joiner, n_a, n_b]);
    let n = u32::from_be_bytes([h[0], h[1], h[2], h[3]]) % 1_000_000;
    format!("{:03} {:03}", n / 1000, n % 1000)
}

/// B → A: proof of the secret, bound to both device keys.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    pub nonce: [u8; 16],
    pub proof: [u8; 32],
}

/// A → B: the proof was right.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Accept {
    pub nonce: [u8; 16],
}

fn nonce() -> [u8; 16] {
    let mut n = [0u8; 16];
    getrandom::fill(&mut n).expect("the OS has no randomness");
    n
}

/// The inviting side.
#[derive(Debug)]
pub struct Inviter {
    invite: Invite,
    failures: u32,
    /// After a good proof: the peer, the SAS, and who confirmed.
    pending: Option<Pending>,
}

#[derive(Debug, Clone)]
struct Pending {
    peer: [u8; 32],
    sas: String,
    local_ok: bool,
    remote_ok: bool,
}

impl Inviter {
    pub fn new(invite: Invite) -> Inviter {
        Inviter {
            invite,
            failures: 0,
            pending: None,
        }
    }

    /// A request from `peer` (its key comes from the noise handshake).
    pub fn on_request(
        &mut self,
        peer: [u8; 32],
        req: &Request,
        now_ms: u64,
    ) -> Result<(Accept, String), PairError> {
        if self.failures >= MAX_ATTEMPTS {
            return Err(PairError::RateLimited);
        }
        if now_ms > self.invite.expires_at_ms {
            return Err(PairError::Expired);
        }
        let want = prf(
            &self.invite.secret,
            b"proof",
            &[&self.invite.device, &peer, &req.nonce],
        );
        if !ct_eq(&want, &req.proof) {
            self.failures += 1;
            return Err(if self.failures >= MAX_ATTEMPTS {
                PairError::RateLimited
            } else {
                PairError::WrongCode
            });
        }
        let accept = Accept { nonce: nonce() };
        let code = sas(
            &self.invite.secret,
            &self.invite.device,
            &peer,
            &accept.nonce,
            &req.nonce,
        );
        self.pending = Some(Pending {
            peer,
            sas: code.clone(),
            local_ok: false,
            remote_ok: false,
        });
        Ok((accept, code))
    }

    /// The user here confirmed the SAS; the other side confirmed.
    pub fn confirm_local(&mut self) -> Result<(), PairError> {
        self.pending.as_mut().ok_or(PairError::Unexpected)?.local_ok = true;
        Ok(())
    }
    pub fn confirm_remote(&mut self) -> Result<(), PairError> {
        self.pending
            .as_mut()
            .ok_or(PairError::Unexpected)?
            .remote_ok = true;
        Ok(())
    }

    /// The paired device, once both confirmed (then add it to the roster).
    pub fn paired(&self) -> Result<[u8; 32], PairError> {
        match &self.pending {
            Some(p) if p.local_ok && p.remote_ok => Ok(p.peer),
            _ => Err(PairError::NotConfirmed),
        }
    }

    pub fn sas(&self) -> Option<&str> {
        self.pending.as_ref().map(|p| p.sas.as_str())
    }

    /// The device that presented the secret, once one did.
    pub fn peer(&self) -> Option<[u8; 32]> {
        self.pending.as_ref().map(|p| p.peer)
    }

    pub fn invite(&self) -> &Invite {
        &self.invite
    }

    /// Burned by wrong codes, or expired.
    pub fn is_dead(&self, now_ms: u64) -> bool {
        self.failures >= MAX_ATTEMPTS || now_ms > self.invite.expires_at_ms
    }
}

/// The joining side.
#[derive(Debug)]
pub struct Joiner {
    me: [u8; 32],
    inviter: [u8; 32],
    secret: [u8; 10],
    nonce: [u8; 16],
    sas: Option<String>,
}

impl Joiner {
    /// From a parsed invite (or a typed code plus the inviter's key, which
    /// the noise channel found through mDNS).
    pub fn new(me: [u8; 32], inviter: [u8; 32], secret: [u8; 10]) -> (Joiner, Request) {
        let n = nonce();
        let proof = prf(&secret, b"proof", &[&inviter, &me, &n]);
        (
            Joiner {
                me,
                inviter,
                secret,
                nonce: n,
                sas: None,
            },
            Request { nonce: n, proof },
        )
    }

    /// The inviter accepted: the SAS to show.
    pub fn on_accept(&mut self, acc: &Accept) -> String {
        let code = sas(
            &self.secret,
            &self.inviter,
            &self.me,
            &acc.nonce,
            &self.nonce,
        );
        self.sas = Some(code.clone());
        code
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::DeviceIdentity;

    fn keys() -> ([u8; 32], [u8; 32]) {
        (
            DeviceIdentity::from_seed([1; 32]).public_key(),
            DeviceIdentity::from_seed([2; 32]).public_key(),
        )
    }

    #[test]
    fn both_screens_show_the_same_code_and_both_must_confirm() {
        let (a, b) = keys();
        let inv = Invite::new(a, 0, 60_000, Some("/ip4/10.0.0.1/tcp/8765".into()));
        let parsed = Invite::parse_payload(&inv.payload()).unwrap();
        assert_eq!(parsed, inv);
        assert_eq!(Invite::parse_code(&inv.code()).unwrap(), inv.secret);
        let mut inviter = Inviter::new(inv.clone());
        let (mut joiner, req) = Joiner::new(b, a, inv.secret);
        let (acc, sas_a) = inviter.on_request(b, &req, 1000).unwrap();
        let sas_b = joiner.on_accept(&acc);
        assert_eq!(sas_a, sas_b);
        assert_eq!(sas_a.len(), 7);
        assert_eq!(inviter.paired(), Err(PairError::NotConfirmed));
        inviter.confirm_local().unwrap();
        assert_eq!(inviter.paired(), Err(PairError::NotConfirmed));
        inviter.confirm_remote().unwrap();
        assert_eq!(inviter.paired(), Ok(b));
    }

    #[test]
    fn a_man_in_the_middle_sees_a_different_code() {
        let (a, b) = keys();
        let m = DeviceIdentity::from_seed([3; 32]).public_key();
        let inv = Invite::new(a, 0, 60_000, None);
        // M learned the code and pairs with A as itself; B believes it talks to A.
        let mut inviter = Inviter::new(inv.clone());
        let (_, req_m) = Joiner::new(m, a, inv.secret);
        let (acc, sas_a) = inviter.on_request(m, &req_m, 1).unwrap();
        let (mut joiner_b, _) = Joiner::new(b, a, inv.secret);
        let sas_b = joiner_b.on_accept(&acc);
        assert_ne!(sas_a, sas_b, "the codes differ, so the users refuse");
    }

    #[test]
    fn wrong_codes_expiry_and_rate_limit() {
        let (a, b) = keys();
        let inv = Invite::new(a, 0, 60_000, None);
        let mut inviter = Inviter::new(inv.clone());
        let (_, wrong) = Joiner::new(b, a, [9; 10]);
        for i in 1..MAX_ATTEMPTS {
            assert_eq!(
                inviter.on_request(b, &wrong, 10).unwrap_err(),
                PairError::WrongCode,
                "attempt {i}"
            );
        }
        assert_eq!(
            inviter.on_request(b, &wrong, 10).unwrap_err(),
            PairError::RateLimited
        );
        // Even the right code is refused now.
        let (_, right) = Joiner::new(b, a, inv.secret);
        assert_eq!(
            inviter.on_request(b, &right, 10).unwrap_err(),
            PairError::RateLimited
        );
        // Expiry, capped at 10 minutes.
        let long = Invite::new(a, 0, 3_600_000, None);
        assert_eq!(long.expires_at_ms, MAX_INVITE_MS);
        let mut i2 = Inviter::new(long.clone());
        let (_, r2) = Joiner::new(b, a, long.secret);
        assert_eq!(
            i2.on_request(b, &r2, MAX_INVITE_MS + 1).unwrap_err(),
            PairError::Expired
        );
        // Garbage payloads are clear errors.
        assert!(matches!(
            Invite::parse_payload("hello"),
            Err(PairError::Malformed(_))
        ));
        assert!(matches!(
            Invite::parse_code("short"),
            Err(PairError::Malformed(_))
        ));
    }

    #[test]
    fn a_proof_for_another_device_key_is_wrong() {
        let (a, b) = keys();
        let c = DeviceIdentity::from_seed([4; 32]).public_key();
        let inv = Invite::new(a, 0, 60_000, None);
        let mut inviter = Inviter::new(inv.clone());
        // B computed its proof for itself; it arrives on C's channel.
        let (_, req) = Joiner::new(b, a, inv.secret);
        assert_eq!(
            inviter.on_request(c, &req, 1).unwrap_err(),
            PairError::WrongCode
        );
    }
}
