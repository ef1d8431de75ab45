//! One simulated device: a [`WorkspaceDoc`] replica, its "disk" (the last
//! persisted snapshot) and the random operations a user performs on it.

use agentos_crdt::{
    ActorId, AgentId, AgentRecord, AgentState, ChangeHash, CrdtError, SavedAgent, SessionRecord,
    StateTransition, WorkspaceDoc,
};

use crate::net::Msg;
use crate::rng::Rng;

/// Agent ids and names the random operations draw from. The pool is small
/// on purpose so that devices keep touching the same agents concurrently.
const AGENTS: [(&str, &str); 5] = [
    ("ag-alpha", "alpha"),
    ("ag-beta", "beta"),
    ("ag-gamma", "gamma"),
    ("ag-delta", "delta"),
    ("ag-eps", "eps"),
];
const SESSIONS: [&str; 3] = ["morning", "review", "release"];
const AGENT_TYPES: [&str; 3] = ["claude-code", "codex", "shell"];
const CWDS: [&str; 3] = ["/w/api", "/w/web", "/w/infra"];
const SOURCES: [&str; 4] = ["hook:Stop", "osc9", "screen:prompt", "process"];
const ENV_KEYS: [&str; 3] = ["RUST_LOG", "MODE", "TOKEN_BUDGET"];

/// The actor id of `device` in its `incarnation`: never all-zero (the first
/// byte is at least 1) and distinct for every (device, incarnation) pair.
pub(crate) fn actor_id(device: usize, incarnation: u64) -> ActorId {
    let mut a = [0u8; 16];
    a[0] = 0xA5;
    a[1..9].copy_from_slice(&(device as u64).to_le_bytes());
    a[9..16].copy_from_slice(&incarnation.to_le_bytes()[..7]);
    ActorId(a)
}

/// How many earlier heads a device remembers and advertises in `have`.
const RECENT_HEADS: usize = 8;

/// What a random operation did.
#[derive(Debug, Clone)]
pub(crate) struct OpOutcome {
    /// Human readable description, for failure reports.
    pub(crate) label: String,
    /// The change it committed, `None` if it changed nothing.
    pub(crate) change: Option<ChangeHash>,
}

/// A device replicating the workspace document.
#[derive(Debug)]
pub(crate) struct Device {
    pub(crate) idx: usize,
    /// Number of crashes survived so far.
    pub(crate) incarnation: u64,
    pub(crate) doc: WorkspaceDoc,
    /// The last persisted snapshot (`WorkspaceDoc::save`): all that
    /// survives a crash.
    disk: Vec<u8>,
    /// Earlier heads of this incarnation (oldest first), all of which the
    /// document still contains: documents only grow until a crash, and a
    /// crash resets this list.
    recent: Vec<ChangeHash>,
}

impl Device {
    /// A fresh device whose initial (genesis) state is already on disk.
    pub(crate) fn new(idx: usize) -> Self {
        let mut doc = WorkspaceDoc::new(actor_id(idx, 0));
        let disk = doc.save();
        let recent = doc.heads();
        Device {
            idx,
            incarnation: 0,
            doc,
            disk,
            recent,
        }
    }

    /// Remember the current heads as "recent".
    fn note_heads(&mut self) {
        for h in self.doc.heads() {
            if !self.recent.contains(&h) {
                self.recent.push(h);
            }
        }
        if self.recent.len() > RECENT_HEADS {
            let excess = self.recent.len() - RECENT_HEADS;
            self.recent.drain(..excess);
        }
    }

    /// "I have heads H" for a peer.
    pub(crate) fn sync_msg(&mut self, reply: bool) -> Msg {
        let heads = self.doc.heads();
        let have = self
            .recent
            .iter()
            .filter(|h| !heads.contains(h))
            .copied()
            .collect();
        Msg::Sync { heads, have, reply }
    }

    /// Write a snapshot of the current state to disk; returns the heads it
    /// covers (everything they depend on is now durable).
    pub(crate) fn persist(&mut self) -> Vec<ChangeHash> {
        self.disk = self.doc.save();
        self.doc.heads()
    }

    /// Lose all in-memory state (including changes waiting for missing
    /// dependencies) and restart from the last snapshot. With
    /// `fresh_actor` the restarted replica writes as a new actor; otherwise
    /// it reuses its previous one.
    pub(crate) fn crash_and_restart(&mut self, fresh_actor: bool) -> Result<(), CrdtError> {
        self.incarnation += 1;
        let actor = if fresh_actor {
            actor_id(self.idx, self.incarnation)
        } else {
            self.doc.actor()
        };
        self.doc = WorkspaceDoc::load(&self.disk, actor)?;
        self.recent = self.doc.heads();
        Ok(())
    }

    /// Sorted heads, comparable between replicas.
    pub(crate) fn sorted_heads(&mut self) -> Vec<ChangeHash> {
        let mut h = self.doc.heads();
        h.sort();
        h
    }

    /// Handle one incoming message; returns the answers to send back.
    pub(crate) fn handle(&mut self, msg: &Msg) -> Result<Vec<Msg>, CrdtError> {
        match msg {
            Msg::Sync { heads, have, reply } => {
                let mut out = Vec::new();
                // Unknown hashes are ignored by `changes_since`, which
                // therefore returns a superset of what the sender lacks.
                let known: Vec<ChangeHash> = heads.iter().chain(have).copied().collect();
                let changes = self.doc.changes_since(&known);
                if !changes.is_empty() {
                    out.push(Msg::Changes { changes });
                }
                if !reply {
                    let mine = self.doc.heads();
                    if heads.iter().any(|h| !mine.contains(h)) {
                        out.push(self.sync_msg(true));
                    }
                }
                Ok(out)
            }
            Msg::Changes { changes } => {
                self.doc.apply_changes(changes)?;
                self.note_heads();
                Ok(Vec::new())
            }
        }
    }

    /// Perform one random user operation at logical time `now_ms`.
    pub(crate) fn random_op(&mut self, rng: &mut Rng, now_ms: u64) -> Result<OpOutcome, CrdtError> {
        let before = self.doc.heads();
        let roll = rng.below(100);
        // Target a random agent of the pool; create it if it does not exist
        // here yet.
        let (id, _) = *rng.pick(&AGENTS);
        let target = AgentId::from(id);
        let exists = self.doc.agent(&target).is_some();
        let label = if !exists || roll < 25 {
            self.create_agent(rng, &target, now_ms)?
        } else {
            match roll {
                25..=54 => {
                    let t = StateTransition {
                        state: random_state(rng),
                        source: (*rng.pick(&SOURCES)).to_owned(),
                        // Occasionally an observation arrives late.
                        at_ms: now_ms.saturating_sub(rng.range(0, 1) as u64 * 250),
                    };
                    self.doc.record_transition(&target, &t)?;
                    format!("transition {target} -> {}", t.state)
                }
                55..=69 => {
                    let resume = format!("resume-{}-{now_ms}", self.idx);
                    self.doc.set_resume_id(&target, &resume)?;
                    format!("resume id {target} = {resume}")
                }
                70..=74 => {
                    let pid = if rng.chance(25) {
                        None
                    } else {
                        Some(1 + rng.below(1 << 16) as u32)
                    };
                    self.doc.set_pid(&target, pid)?;
                    format!("pid {target} = {pid:?}")
                }
                75..=84 => {
                    self.doc.mark_removed(&target, now_ms)?;
                    format!("remove {target}")
                }
                _ => self.save_session(rng, now_ms)?,
            }
        };
        let after = self.doc.heads();
        let change = if after == before {
            None
        } else {
            // A local commit depends on every previous head, so it is now
            // the only head.
            self.note_heads();
            after.first().copied()
        };
        Ok(OpOutcome {
            label: format!(
                "device {} (incarnation {}) at {now_ms}: {label}",
                self.idx, self.incarnation
            ),
            change,
        })
    }

    fn create_agent(
        &mut self,
        rng: &mut Rng,
        id: &AgentId,
        now_ms: u64,
    ) -> Result<String, CrdtError> {
        let name = AGENTS
            .iter()
            .find(|(i, _)| *i == id.as_str())
            .map_or("unnamed", |(_, n)| *n);
        let agent_type = *rng.pick(&AGENT_TYPES);
        let env = (0..rng.range(0, 2))
            .map(|_| ((*rng.pick(&ENV_KEYS)).to_owned(), rng.below(10).to_string()))
            .collect();
        let rec = AgentRecord {
            id: id.clone(),
            name: name.to_owned(),
            agent_type: agent_type.to_owned(),
            command: vec![agent_type.to_owned(), format!("--v{}", rng.below(3))],
            cwd: (*rng.pick(&CWDS)).to_owned(),
            workspace: "ws".to_owned(),
            host_device: format!("device-{}", self.idx),
            env,
            created_at_ms: now_ms,
            pid: Some(1000 + rng.below(1000) as u32),
            resume_id: None,
            removed_at_ms: None,
            worktree: None,
            state: StateTransition::initial(now_ms),
            transitions: Vec::new(),
        };
        self.doc.upsert_agent(&rec)?;
        Ok(format!("upsert agent {id}"))
    }

    fn save_session(&mut self, rng: &mut Rng, now_ms: u64) -> Result<String, CrdtError> {
        let name = *rng.pick(&SESSIONS);
        let agents: Vec<SavedAgent> = (0..rng.range(1, 3))
            .filter_map(|_| self.doc.agent(&AgentId::from(rng.pick(&AGENTS).0)))
            .filter(|a| !a.is_removed())
            .map(|a| SavedAgent {
                name: a.name.clone(),
                agent_type: a.agent_type.clone(),
                command: a.command.clone(),
                cwd: a.cwd.clone(),
                resume_id: a.resume_id.clone(),
                env: a.env.clone(),
            })
            .collect();
        let n = agents.len();
        self.doc.upsert_session(&SessionRecord {
            name: name.to_owned(),
            created_at_ms: now_ms,
            agents,
        })?;
        Ok(format!("save session {name} with {n} agents"))
    }
}

fn random_state(rng: &mut Rng) -> AgentState {
    match rng.below(6) {
        0 => AgentState::Starting,
        1 => AgentState::Running,
        2 => AgentState::Idle,
        3 => AgentState::Waiting,
        4 => AgentState::Exited {
            code: rng.range(0, 2) as i32 - 1,
        },
        _ => AgentState::Error {
            message: format!("boom {}", rng.below(3)),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actor_ids_are_distinct_and_never_zero() {
        let mut seen = std::collections::BTreeSet::new();
        for d in 0..8 {
            for inc in 0..8 {
                let a = actor_id(d, inc);
                assert_ne!(a.0, [0; 16]);
                assert!(seen.insert(a));
            }
        }
    }

    #[test]
    fn crash_rolls_back_to_the_last_snapshot() {
        let mut rng = Rng::new(3);
        let mut d = Device::new(0);
        let first = d.random_op(&mut rng, 100).unwrap();
        assert!(first.change.is_some());
        let persisted = d.persist();
        d.random_op(&mut rng, 200).unwrap();
        d.crash_and_restart(true).unwrap();
        assert_eq!(d.doc.heads(), persisted);
        assert_eq!(d.doc.actor(), actor_id(0, 1));
    }
}
