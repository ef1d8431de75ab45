//! Share grants, web sessions and the guard against guessing.
//!
//! A share link carries a 256-bit secret in its `#fragment`. The node keeps
//! only the secret's SHA-256 (in the store's `web` tree, flushed), compares
//! hashes in constant time, counts uses, and honours expiry, use limits and
//! revocation. A secret is exchanged once for a **web session**: a person id,
//! a single-use ticket (redeemed for the HttpOnly cookie) and the cookie
//! itself, all held in memory as hashes. Revoking or expiring a grant ends
//! every web session that came from it. Wrong secrets are counted per
//! address; too many in a minute lock that address out for a minute.

use std::collections::HashMap;
use std::net::IpAddr;

use agentos_proto::ws::{Permission, PersonId};
use agentos_proto::{ErrorCode, ErrorInfo};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::store::Store;

/// Failed attempts an address may make per window before it is locked out.
pub const MAX_FAILURES: u32 = 5;
/// The failure window and the lockout, in milliseconds.
pub const LOCKOUT_MS: u64 = 60_000;
/// How long a ticket from `auth_ok` may wait to be redeemed for a cookie.
pub const TICKET_TTL_MS: u64 = 60_000;
/// Longest life of a web session (its cookie), capped by the grant's expiry.
pub const COOKIE_TTL_MS: u64 = 3_600_000;

/// What a grant opens.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Target {
    /// Everything on this node (the owner's own link, `agentos web`).
    All,
    Agent(String),
    Session(String),
}

impl Target {
    pub fn parse(s: &str) -> Option<Target> {
        if s == "*" {
            return Some(Target::All);
        }
        let (kind, name) = s.split_once(':')?;
        if name.is_empty() || name.len() > 64 {
            return None;
        }
        match kind {
            "agent" => Some(Target::Agent(name.to_string())),
            "session" => Some(Target::Session(name.to_string())),
            _ => None,
        }
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::All => f.write_str("*"),
            Target::Agent(n) => write!(f, "agent:{n}"),
            Target::Session(n) => write!(f, "session:{n}"),
        }
    }
}

/// A share grant as stored (the secret itself is never stored).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    pub id: String,
    pub target: String,
    pub permission: Permission,
    /// Hex SHA-256 of the secret.
    pub secret_sha256: String,
    pub created_at_ms: u64,
    pub expires_at_ms: Option<u64>,
    pub max_uses: Option<u32>,
    pub uses: u32,
    pub revoked_at_ms: Option<u64>,
}

impl Grant {
    pub fn target(&self) -> Target {
        Target::parse(&self.target).unwrap_or(Target::Agent(String::new()))
    }

    /// Why this grant can no longer be used, if it cannot.
    pub fn unusable(&self, now_ms: u64) -> Option<&'static str> {
        if self.revoked_at_ms.is_some() {
            Some("this link was revoked")
        } else if self.expires_at_ms.is_some_and(|e| now_ms >= e) {
            Some("this link has expired")
        } else {
            None
        }
    }

    fn used_up(&self) -> bool {
        self.max_uses.is_some_and(|m| self.uses >= m)
    }
}

/// A person's web session: what the cookie stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebSession {
    pub person: PersonId,
    pub grant_id: String,
    pub target: Target,
    pub permission: Permission,
    pub name: String,
    pub device: String,
    pub expires_at_ms: u64,
}

#[derive(Debug, Default)]
struct Attempts {
    window_start_ms: u64,
    failures: u32,
    locked_until_ms: u64,
}

/// All authentication state of the web server (behind one mutex).
#[derive(Debug)]
pub struct Auth {
    store: Store,
    grants: HashMap<String, Grant>,
    sessions: HashMap<PersonId, WebSession>,
    cookies: HashMap<[u8; 32], PersonId>,
    tickets: HashMap<[u8; 32], (PersonId, u64)>,
    attempts: HashMap<IpAddr, Attempts>,
}

fn sha256(b: &[u8]) -> [u8; 32] {
    Sha256::digest(b).into()
}

fn hex(b: &[u8]) -> String {
    data_encoding::HEXLOWER.encode(b)
}

/// `n` random bytes as lowercase base32 without padding.
pub fn random_token(n: usize) -> String {
    let mut b = vec![0u8; n];
    // getrandom only fails when the OS has no entropy source at all.
    let _ = getrandom::fill(&mut b);
    data_encoding::BASE32_NOPAD.encode(&b).to_lowercase()
}

fn invalid(msg: &str) -> ErrorInfo {
    ErrorInfo::new(ErrorCode::ShareInvalid, msg)
}

impl Auth {
    /// Load the stored grants (damaged entries are skipped and logged).
    pub fn load(store: Store) -> Auth {
        let mut grants = HashMap::new();
        for (k, v) in store.web_scan() {
            match serde_json::from_slice::<Grant>(&v) {
                Ok(g) => {
                    grants.insert(g.id.clone(), g);
                }
                Err(e) => {
                    tracing::warn!(grant = %k, error = %e, "skipping an unreadable share grant")
                }
            }
        }
        Auth {
            store,
            grants,
            sessions: HashMap::new(),
            cookies: HashMap::new(),
            tickets: HashMap::new(),
            attempts: HashMap::new(),
        }
    }

    fn persist(&self, g: &Grant) -> Result<(), ErrorInfo> {
        let bytes = serde_json::to_vec(g)
            .map_err(|e| ErrorInfo::new(ErrorCode::Internal, e.to_string()))?;
        self.store
            .web_put(&g.id, &bytes)
            .map_err(|e| ErrorInfo::new(ErrorCode::StoreCorrupt, e.to_string()))
    }

    /// Mint a grant; returns it and its secret (shown once, never stored).
    pub fn create(
        &mut self,
        target: &Target,
        permission: Permission,
        ttl_ms: Option<u64>,
        max_uses: Option<u32>,
        now_ms: u64,
    ) -> Result<(Grant, String), ErrorInfo> {
        let secret = random_token(32);
        let id = format!("s-{}", random_token(5));
        let g = Grant {
            id: id.clone(),
            target: target.to_string(),
            permission,
            secret_sha256: hex(&sha256(secret.as_bytes())),
            created_at_ms: now_ms,
            expires_at_ms: ttl_ms.map(|t| now_ms.saturating_add(t)),
            max_uses,
            uses: 0,
            revoked_at_ms: None,
        };
        self.persist(&g)?;
        self.grants.insert(id, g.clone());
        Ok((g, secret))
    }

    pub fn grants(&self) -> Vec<Grant> {
        let mut v: Vec<Grant> = self.grants.values().cloned().collect();
        v.sort_by(|a, b| (a.created_at_ms, &a.id).cmp(&(b.created_at_ms, &b.id)));
        v
    }

    pub fn grant(&self, id: &str) -> Option<&Grant> {
        self.grants.get(id)
    }

    /// Revoke a grant and end its web sessions; returns the people whose
    /// sockets must close.
    pub fn revoke(&mut self, id: &str, now_ms: u64) -> Result<Vec<PersonId>, ErrorInfo> {
        let g = self.grants.get_mut(id).ok_or_else(|| {
            invalid(&format!("no share link with id '{id}'"))
                .with_hint("list the links with `agentos share list`")
        })?;
        if g.revoked_at_ms.is_none() {
            g.revoked_at_ms = Some(now_ms);
        }
        let g = g.clone();
        self.persist(&g)?;
        Ok(self.end_sessions_of(id))
    }

    fn end_sessions_of(&mut self, grant_id: &str) -> Vec<PersonId> {
        let people: Vec<PersonId> = self
            .sessions
            .values()
            .filter(|s| s.grant_id == grant_id)
            .map(|s| s.person.clone())
            .collect();
        for p in &people {
            self.end_session(p);
        }
        people
    }

    /// Forget a person's web session (kick, leave, expiry).
    pub fn end_session(&mut self, person: &PersonId) {
        self.sessions.remove(person);
        self.cookies.retain(|_, p| p != person);
        self.tickets.retain(|_, (p, _)| p != person);
    }

    /// Grants that expired since the last sweep: their people must go.
    /// A web session that reaches its end while its person is still
    /// connected slides on (a cookie is short-lived, a live session is not
    /// cut), but never past its grant's expiry.
    pub fn sweep(
        &mut self,
        now_ms: u64,
        connected: &std::collections::HashSet<PersonId>,
    ) -> Vec<(PersonId, &'static str)> {
        for s in self.sessions.values_mut() {
            if now_ms >= s.expires_at_ms && connected.contains(&s.person) {
                let cap = self
                    .grants
                    .get(&s.grant_id)
                    .and_then(|g| g.expires_at_ms)
                    .unwrap_or(u64::MAX);
                s.expires_at_ms = (now_ms + COOKIE_TTL_MS).min(cap);
            }
        }
        let mut out = Vec::new();
        let expired: Vec<String> = self
            .grants
            .values()
            .filter(|g| g.revoked_at_ms.is_none() && g.expires_at_ms.is_some_and(|e| now_ms >= e))
            .map(|g| g.id.clone())
            .collect();
        for id in expired {
            for p in self.end_sessions_of(&id) {
                out.push((p, "expired"));
            }
        }
        let stale: Vec<PersonId> = self
            .sessions
            .values()
            .filter(|s| now_ms >= s.expires_at_ms)
            .map(|s| s.person.clone())
            .collect();
        for p in stale {
            self.end_session(&p);
            out.push((p, "expired"));
        }
        self.tickets.retain(|_, (_, exp)| now_ms < *exp);
        self.attempts
            .retain(|_, a| now_ms < a.locked_until_ms.max(a.window_start_ms + LOCKOUT_MS));
        out
    }

    /// Refuse an address that failed too often recently.
    pub fn check_rate(&self, ip: IpAddr, now_ms: u64) -> Result<(), ErrorInfo> {
        match self.attempts.get(&ip) {
            Some(a) if now_ms < a.locked_until_ms => Err(ErrorInfo::new(
                ErrorCode::RateLimited,
                format!(
                    "too many wrong links from {ip}: try again in {} s",
                    (a.locked_until_ms - now_ms).div_ceil(1000)
                ),
            )),
            _ => Ok(()),
        }
    }

    fn fail(&mut self, ip: IpAddr, now_ms: u64) {
        let a = self.attempts.entry(ip).or_default();
        if now_ms >= a.window_start_ms + LOCKOUT_MS {
            a.window_start_ms = now_ms;
            a.failures = 0;
        }
        a.failures += 1;
        if a.failures >= MAX_FAILURES {
            a.locked_until_ms = now_ms + LOCKOUT_MS;
        }
    }

    /// Exchange a link's secret for a new web session (one use of the grant).
    /// Returns the session and a single-use ticket for the cookie.
    pub fn redeem_secret(
        &mut self,
        secret: &str,
        ip: IpAddr,
        name: String,
        device: String,
        now_ms: u64,
    ) -> Result<(WebSession, String), ErrorInfo> {
        self.check_rate(ip, now_ms)?;
        let h = sha256(secret.trim().as_bytes());
        // Compare against every grant in constant time (no early exit on
        // the first match, so timing says nothing about which one matched).
        let mut found: Option<String> = None;
        for g in self.grants.values() {
            let stored = data_encoding::HEXLOWER
                .decode(g.secret_sha256.as_bytes())
                .unwrap_or_default();
            if stored.len() == 32 && bool::from(stored.as_slice().ct_eq(&h)) {
                found = Some(g.id.clone());
            }
        }
        let Some(id) = found else {
            self.fail(ip, now_ms);
            return Err(invalid("this share link is not valid on this node"));
        };
        let g = self
            .grants
            .get_mut(&id)
            .ok_or_else(|| invalid("unknown link"))?;
        if let Some(why) = g.unusable(now_ms) {
            return Err(invalid(why));
        }
        if g.used_up() {
            return Err(invalid("this link has been used up"));
        }
        g.uses += 1;
        let g = g.clone();
        self.persist(&g)?;
        let expires = g
            .expires_at_ms
            .unwrap_or(u64::MAX)
            .min(now_ms + COOKIE_TTL_MS);
        let session = WebSession {
            person: PersonId(format!("p-{}", random_token(5))),
            grant_id: g.id.clone(),
            target: g.target(),
            permission: g.permission,
            name,
            device,
            expires_at_ms: expires,
        };
        self.sessions
            .insert(session.person.clone(), session.clone());
        let ticket = self.new_ticket(&session.person, now_ms);
        Ok((session, ticket))
    }

    /// A fresh single-use ticket for an existing session (reconnects).
    pub fn new_ticket(&mut self, person: &PersonId, now_ms: u64) -> String {
        let t = random_token(20);
        self.tickets.insert(
            sha256(t.as_bytes()),
            (person.clone(), now_ms + TICKET_TTL_MS),
        );
        t
    }

    /// Redeem a ticket for the session cookie's value and its max age (s).
    pub fn redeem_ticket(&mut self, ticket: &str, now_ms: u64) -> Result<(String, u64), ErrorInfo> {
        let (person, exp) = self
            .tickets
            .remove(&sha256(ticket.as_bytes()))
            .ok_or_else(|| invalid("unknown or used ticket"))?;
        if now_ms >= exp {
            return Err(invalid("the ticket expired: reconnect with the link"));
        }
        let s = self
            .sessions
            .get(&person)
            .ok_or_else(|| invalid("the session has ended"))?;
        let cookie = random_token(32);
        let max_age = s.expires_at_ms.saturating_sub(now_ms) / 1000;
        self.cookies.insert(sha256(cookie.as_bytes()), person);
        Ok((cookie, max_age))
    }

    /// The live session a cookie stands for.
    pub fn by_cookie(&self, cookie: &str, now_ms: u64) -> Option<WebSession> {
        let person = self.cookies.get(&sha256(cookie.as_bytes()))?;
        let s = self.sessions.get(person)?;
        let g = self.grants.get(&s.grant_id)?;
        if g.unusable(now_ms).is_some() || now_ms >= s.expires_at_ms {
            return None;
        }
        Some(s.clone())
    }

    pub fn session(&self, person: &PersonId) -> Option<&WebSession> {
        self.sessions.get(person)
    }

    /// Permission changes made by the owner stick to the person's session.
    pub fn set_permission(&mut self, person: &PersonId, p: Permission) {
        if let Some(s) = self.sessions.get_mut(person) {
            s.permission = p;
        }
    }

    /// End every session that targets `target` except the owner's own.
    pub fn revoke_target(&mut self, target: &Target, now_ms: u64) -> Vec<PersonId> {
        let ids: Vec<String> = self
            .grants
            .values()
            .filter(|g| g.target() == *target && g.revoked_at_ms.is_none())
            .map(|g| g.id.clone())
            .collect();
        let mut people = Vec::new();
        for id in ids {
            if let Ok(p) = self.revoke(&id, now_ms) {
                people.extend(p);
            }
        }
        people
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth() -> (Auth, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = Store::open(&dir.path().join("s")).unwrap();
        (Auth::load(store), dir)
    }

    const IP: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    #[test]
    fn secrets_are_stored_hashed_and_redeemed_once_per_use() {
        let (mut a, dir) = auth();
        let t = Target::Agent("w1".into());
        let (g, secret) = a.create(&t, Permission::View, None, Some(1), 0).unwrap();
        assert!(secret.len() >= 52, "≥ 256 bits in base32");
        assert_ne!(g.secret_sha256, secret);
        let stored = a.store.web_get(&g.id).unwrap();
        assert!(!String::from_utf8_lossy(&stored).contains(&secret));
        let (s, ticket) = a
            .redeem_secret(&secret, IP, "ann".into(), "browser".into(), 1)
            .unwrap();
        assert_eq!(s.permission, Permission::View);
        assert_eq!(s.target, t);
        let err = a
            .redeem_secret(&secret, IP, "bob".into(), "browser".into(), 2)
            .unwrap_err();
        assert_eq!(err.code, ErrorCode::ShareInvalid);
        let (cookie, _) = a.redeem_ticket(&ticket, 3).unwrap();
        assert!(
            a.redeem_ticket(&ticket, 3).is_err(),
            "tickets are single use"
        );
        assert_eq!(a.by_cookie(&cookie, 4).unwrap().person, s.person);
        // Grants survive a restart (uses included); sessions do not.
        let store = a.store.clone();
        drop(a);
        let b = Auth::load(store);
        assert_eq!(b.grant(&g.id).unwrap().uses, 1);
        assert!(b.by_cookie(&cookie, 5).is_none());
        drop(dir);
    }

    #[test]
    fn revocation_and_expiry_end_sessions() {
        let (mut a, _d) = auth();
        let t = Target::Agent("w1".into());
        let (g, secret) = a.create(&t, Permission::Edit, Some(1000), None, 0).unwrap();
        let (s, ticket) = a
            .redeem_secret(&secret, IP, "ann".into(), "cli".into(), 1)
            .unwrap();
        let (cookie, _) = a.redeem_ticket(&ticket, 1).unwrap();
        assert_eq!(a.revoke(&g.id, 2).unwrap(), vec![s.person.clone()]);
        assert!(a.by_cookie(&cookie, 3).is_none());
        assert!(
            a.redeem_secret(&secret, IP, "x".into(), "cli".into(), 3)
                .is_err()
        );

        let (_, secret2) = a.create(&t, Permission::View, Some(1000), None, 0).unwrap();
        let (s2, _) = a
            .redeem_secret(&secret2, IP, "bo".into(), "cli".into(), 10)
            .unwrap();
        assert_eq!(
            a.sweep(1000, &Default::default()),
            vec![(s2.person, "expired")]
        );
        let err = a
            .redeem_secret(&secret2, IP, "bo".into(), "cli".into(), 1001)
            .unwrap_err();
        assert!(err.message.contains("expired"));
    }

    #[test]
    fn live_sessions_slide_past_the_cookie_lifetime_but_not_the_link() {
        let (mut a, _d) = auth();
        let t = Target::Agent("w1".into());
        let (_, secret) = a.create(&t, Permission::View, None, None, 0).unwrap();
        let (s, _) = a
            .redeem_secret(&secret, IP, "ann".into(), "cli".into(), 0)
            .unwrap();
        let online: std::collections::HashSet<PersonId> = [s.person.clone()].into();
        assert!(a.sweep(COOKIE_TTL_MS, &online).is_empty());
        assert!(a.session(&s.person).is_some(), "a connected person stays");
        assert_eq!(
            a.sweep(3 * COOKIE_TTL_MS, &Default::default()),
            vec![(s.person.clone(), "expired")]
        );
        // With an expiring link, sliding stops at the link's end.
        let (_, secret) = a.create(&t, Permission::View, Some(10), None, 0).unwrap();
        let (s, _) = a
            .redeem_secret(&secret, IP, "bo".into(), "cli".into(), 0)
            .unwrap();
        let online: std::collections::HashSet<PersonId> = [s.person.clone()].into();
        assert_eq!(a.sweep(10, &online), vec![(s.person, "expired")]);
    }

    #[test]
    fn wrong_secrets_are_rate_limited_per_address() {
        let (mut a, _d) = auth();
        let (_, secret) = a
            .create(&Target::All, Permission::Owner, None, None, 0)
            .unwrap();
        for i in 0..MAX_FAILURES {
            let e = a
                .redeem_secret("nope", IP, "x".into(), "cli".into(), u64::from(i))
                .unwrap_err();
            assert_eq!(e.code, ErrorCode::ShareInvalid);
        }
        // Locked out, even with the right secret.
        let e = a
            .redeem_secret(&secret, IP, "x".into(), "cli".into(), 10)
            .unwrap_err();
        assert_eq!(e.code, ErrorCode::RateLimited);
        // Another address is not affected; the lock lifts after a minute.
        let other: IpAddr = "10.0.0.2".parse().unwrap();
        assert!(
            a.redeem_secret(&secret, other, "y".into(), "cli".into(), 10)
                .is_ok()
        );
        assert!(
            a.redeem_secret(&secret, IP, "x".into(), "cli".into(), 10 + LOCKOUT_MS)
                .is_ok()
        );
    }

    #[test]
    fn targets_parse() {
        assert_eq!(Target::parse("*"), Some(Target::All));
        assert_eq!(Target::parse("agent:w1"), Some(Target::Agent("w1".into())));
        assert_eq!(
            Target::parse("session:s").map(|t| t.to_string()),
            Some("session:s".into())
        );
        assert_eq!(Target::parse("agent:"), None);
        assert_eq!(Target::parse("disk:/"), None);
    }
}
