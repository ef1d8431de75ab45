//! The [`WorkspaceDoc`]: typed access to the workspace Automerge document.

use automerge::transaction::Transactable;
use automerge::{AutoCommit, Change, ChangeHash, ObjId, ObjType, ROOT, ReadDoc};

use crate::error::CrdtError;
use crate::model::{ActorId, AgentId, AgentRecord, SessionRecord, StateTransition};
use crate::schema::{self, *};

/// Version written to the root `"version"` key by the genesis change.
pub const SCHEMA_VERSION: u64 = 1;

/// Actor of the deterministic genesis change. Every replica produces the
/// byte-identical genesis change (same actor, seq, timestamp and ops), so
/// they all share the same root `agents` / `sessions` objects.
const GENESIS_ACTOR: [u8; 16] = [0; 16];

/// One workspace's replicated state: agents and sessions.
///
/// All mutations are local and synchronous; exchange state with other
/// replicas via [`save`](Self::save) / [`load`](Self::load),
/// [`save_incremental`](Self::save_incremental),
/// [`changes_since`](Self::changes_since) / [`apply_changes`](Self::apply_changes)
/// or [`merge`](Self::merge).
///
/// Concurrency semantics:
/// * scalar fields are last-writer-wins (Automerge's deterministic winner);
/// * `command` and session agent lists are replaced as a whole (LWW);
/// * `env` maps merge per key;
/// * transitions are append-only and merge by union. The list is not
///   trimmed: it may grow beyond a few hundred entries over an agent's
///   life, which is acceptable history; readers only need the latest
///   entry by `at_ms`;
/// * if two replicas concurrently *create* the same agent id, the agent
///   map conflicts: fields are read from Automerge's winning map and the
///   transitions of all conflicting maps are unioned.
pub struct WorkspaceDoc {
    doc: AutoCommit,
}

impl std::fmt::Debug for WorkspaceDoc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkspaceDoc")
            .field("actor", self.doc.get_actor())
            .finish_non_exhaustive()
    }
}

/// The deterministic genesis document (root maps and schema version).
fn genesis() -> AutoCommit {
    let mut doc = AutoCommit::new().with_actor(automerge::ActorId::from(GENESIS_ACTOR));
    // These cannot fail on a fresh document with ROOT as target.
    let ok = doc.put_object(ROOT, AGENTS, ObjType::Map).is_ok()
        && doc.put_object(ROOT, SESSIONS, ObjType::Map).is_ok()
        && doc.put(ROOT, VERSION, SCHEMA_VERSION).is_ok();
    debug_assert!(ok, "genesis ops on an empty document");
    // Default commit time is 0, which keeps the change hash deterministic.
    doc.commit();
    doc
}

impl WorkspaceDoc {
    /// A new document containing only the genesis change, writing as `actor`.
    pub fn new(actor: ActorId) -> Self {
        let mut doc = genesis();
        doc.set_actor(actor.into());
        WorkspaceDoc { doc }
    }

    /// Load a document from the output of [`save`](Self::save), from
    /// concatenated [`save_incremental`](Self::save_incremental) chunks, or
    /// from a full save followed by incremental chunks. Empty input yields a
    /// fresh document.
    ///
    /// The loaded state counts as already saved: the next
    /// `save_incremental` only returns changes made after loading.
    pub fn load(bytes: &[u8], actor: ActorId) -> Result<Self, CrdtError> {
        let mut doc = AutoCommit::load(bytes)?;
        doc.set_actor(actor.into());
        // Move the incremental-save cursor past what was just loaded.
        let _ = doc.save_incremental();
        // Make sure the genesis change is present (a no-op when it is).
        let genesis_changes = genesis().get_changes(&[]);
        doc.apply_changes(genesis_changes)?;
        Ok(WorkspaceDoc { doc })
    }

    /// The whole document in compact form.
    pub fn save(&mut self) -> Vec<u8> {
        self.doc.save()
    }

    /// The changes since the last [`save`](Self::save) or
    /// `save_incremental` (or since [`load`](Self::load)); empty if none.
    /// Chunks may be concatenated and passed to [`load`](Self::load).
    pub fn save_incremental(&mut self) -> Vec<u8> {
        self.doc.save_incremental()
    }

    /// Apply every change of `other` that this document lacks.
    pub fn merge(&mut self, other: &mut WorkspaceDoc) -> Result<(), CrdtError> {
        self.doc.merge(&mut other.doc)?;
        Ok(())
    }

    /// Raw encoded changes that are not ancestors of `heads` (all changes
    /// for `&[]`), in causal order.
    pub fn changes_since(&mut self, heads: &[ChangeHash]) -> Vec<Vec<u8>> {
        self.doc
            .get_changes(heads)
            .into_iter()
            .map(|c| c.raw_bytes().to_vec())
            .collect()
    }

    /// Apply raw changes from [`changes_since`](Self::changes_since).
    /// Idempotent and order independent: known changes are skipped and
    /// changes with missing dependencies are queued until those arrive.
    /// All changes are decoded before any is applied.
    pub fn apply_changes(&mut self, changes: &[Vec<u8>]) -> Result<(), CrdtError> {
        let decoded = changes
            .iter()
            .map(|bytes| Change::try_from(bytes.as_slice()))
            .collect::<Result<Vec<_>, _>>()?;
        self.doc.apply_changes(decoded)?;
        Ok(())
    }

    /// The raw bytes of the last change this replica made (what a device
    /// gossips right after a local write).
    pub fn last_local_change(&mut self) -> Option<Vec<u8>> {
        self.doc
            .get_last_local_change()
            .map(|c| c.raw_bytes().to_vec())
    }

    /// The next Automerge sync protocol message for the peer whose state is
    /// `state` (`None`: nothing to send now). Point to point only.
    pub fn sync_message(&mut self, state: &mut automerge::sync::State) -> Option<Vec<u8>> {
        use automerge::sync::SyncDoc;
        self.doc
            .sync()
            .generate_sync_message(state)
            .map(|m| m.encode())
    }

    /// Apply a sync protocol message from the peer whose state is `state`.
    pub fn receive_sync_message(
        &mut self,
        state: &mut automerge::sync::State,
        message: &[u8],
    ) -> Result<(), CrdtError> {
        use automerge::sync::SyncDoc;
        let m = automerge::sync::Message::decode(message)
            .map_err(|e| CrdtError::InvalidSyncMessage(e.to_string()))?;
        self.doc.sync().receive_sync_message(state, m)?;
        Ok(())
    }

    /// Current heads of the document (changes still waiting for missing
    /// dependencies are not included).
    pub fn heads(&mut self) -> Vec<ChangeHash> {
        self.doc.get_heads()
    }

    /// The root `"version"` value.
    pub fn schema_version(&self) -> Option<u64> {
        schema::get_u64(&self.doc, &ROOT, VERSION)
    }

    /// The actor this replica writes as.
    pub fn actor(&self) -> ActorId {
        let mut out = [0u8; 16];
        let bytes = self.doc.get_actor().to_bytes();
        let n = bytes.len().min(16);
        out[..n].copy_from_slice(&bytes[..n]);
        ActorId(out)
    }

    // ------------------------------------------------------------ helpers

    /// Run `f` as one change: committed on success, rolled back on error.
    fn write<T>(
        &mut self,
        f: impl FnOnce(&mut AutoCommit) -> Result<T, CrdtError>,
    ) -> Result<T, CrdtError> {
        match f(&mut self.doc) {
            Ok(v) => {
                self.doc.commit();
                Ok(v)
            }
            Err(e) => {
                self.doc.rollback();
                Err(e)
            }
        }
    }

    fn root_map(doc: &AutoCommit, key: &str) -> Option<ObjId> {
        schema::get_obj(doc, &ROOT, key, ObjType::Map)
    }

    /// The map of an existing agent (the winning one if conflicted).
    fn agent_obj(doc: &AutoCommit, id: &AgentId) -> Result<ObjId, CrdtError> {
        Self::root_map(doc, AGENTS)
            .and_then(|agents| schema::get_obj(doc, &agents, id.as_str(), ObjType::Map))
            .ok_or_else(|| CrdtError::UnknownAgent(id.clone()))
    }

    fn read_agent(doc: &AutoCommit, agents: &ObjId, key: &str) -> Option<AgentRecord> {
        let obj = schema::get_obj(doc, agents, key, ObjType::Map)?;
        let created_at_ms = get_u64(doc, &obj, CREATED_AT_MS).unwrap_or(0);
        // Union of the transitions of all conflicting maps, in Automerge's
        // deterministic conflict order, then stable-sorted by time.
        let mut transitions: Vec<StateTransition> =
            schema::get_all_objs(doc, agents, key, ObjType::Map)
                .iter()
                .flat_map(|o| schema::read_transitions(doc, o))
                .collect();
        transitions.sort_by_key(|t| t.at_ms);
        let state = transitions
            .last()
            .cloned()
            .unwrap_or_else(|| StateTransition::initial(created_at_ms));
        Some(AgentRecord {
            id: AgentId(key.to_owned()),
            name: get_str(doc, &obj, NAME).unwrap_or_default(),
            agent_type: get_str(doc, &obj, AGENT_TYPE).unwrap_or_default(),
            command: get_str_list(doc, &obj, COMMAND).unwrap_or_default(),
            cwd: get_str(doc, &obj, CWD).unwrap_or_default(),
            workspace: get_str(doc, &obj, WORKSPACE).unwrap_or_default(),
            host_device: get_str(doc, &obj, HOST_DEVICE).unwrap_or_default(),
            env: get_str_map(doc, &obj, ENV).unwrap_or_default(),
            created_at_ms,
            pid: get_u64(doc, &obj, PID).and_then(|p| u32::try_from(p).ok()),
            resume_id: get_str(doc, &obj, RESUME_ID),
            removed_at_ms: get_u64(doc, &obj, REMOVED_AT_MS),
            worktree: get_str_map(doc, &obj, WORKTREE)
                .and_then(|pairs| crate::model::WorktreeRecord::from_pairs(&pairs)),
            state,
            transitions,
        })
    }

    // ------------------------------------------------------------- agents

    /// Create the agent, or update its definition fields (`name`,
    /// `agent_type`, `command`, `cwd`, `workspace`, `host_device`, `env`,
    /// `created_at_ms`). Only changed fields are written.
    ///
    /// The runtime fields `pid`, `resume_id` and `removed_at_ms` are taken
    /// from `rec` only when the agent is created; afterwards use
    /// [`set_pid`](Self::set_pid), [`set_resume_id`](Self::set_resume_id)
    /// and [`mark_removed`](Self::mark_removed). `state` and `transitions`
    /// are always ignored; existing transitions are kept.
    pub fn upsert_agent(&mut self, rec: &AgentRecord) -> Result<(), CrdtError> {
        self.write(|doc| {
            let agents = match Self::root_map(doc, AGENTS) {
                Some(a) => a,
                None => doc.put_object(ROOT, AGENTS, ObjType::Map)?,
            };
            let key = rec.id.as_str();
            let (obj, created) = match schema::get_obj(doc, &agents, key, ObjType::Map) {
                Some(o) => (o, false),
                None => (doc.put_object(&agents, key, ObjType::Map)?, true),
            };
            put_scalar(doc, &obj, NAME, rec.name.as_str())?;
            put_scalar(doc, &obj, AGENT_TYPE, rec.agent_type.as_str())?;
            put_str_list(doc, &obj, COMMAND, &rec.command)?;
            put_scalar(doc, &obj, CWD, rec.cwd.as_str())?;
            put_scalar(doc, &obj, WORKSPACE, rec.workspace.as_str())?;
            put_scalar(doc, &obj, HOST_DEVICE, rec.host_device.as_str())?;
            put_str_map(doc, &obj, ENV, &rec.env)?;
            let wt = rec
                .worktree
                .as_ref()
                .map(|w| w.to_pairs())
                .unwrap_or_default();
            put_str_map(doc, &obj, WORKTREE, &wt)?;
            put_scalar(doc, &obj, CREATED_AT_MS, rec.created_at_ms)?;
            if created {
                put_opt(doc, &obj, PID, rec.pid)?;
                put_opt(doc, &obj, RESUME_ID, rec.resume_id.as_deref())?;
                put_opt(doc, &obj, REMOVED_AT_MS, rec.removed_at_ms)?;
                doc.put_object(&obj, TRANSITIONS, ObjType::List)?;
            }
            Ok(())
        })
    }

    /// Append a state transition to the agent's `transitions` list.
    ///
    /// Transitions are never overwritten in place (repeatedly re-putting
    /// one scalar is a known Automerge pathology, automerge#946); the
    /// current state is derived on read.
    pub fn record_transition(
        &mut self,
        agent: &AgentId,
        t: &StateTransition,
    ) -> Result<(), CrdtError> {
        self.write(|doc| {
            let obj = Self::agent_obj(doc, agent)?;
            schema::append_transition(doc, &obj, t)?;
            Ok(())
        })
    }

    /// Set the id used to resume the agent's conversation.
    pub fn set_resume_id(&mut self, agent: &AgentId, resume_id: &str) -> Result<(), CrdtError> {
        self.write(|doc| {
            let obj = Self::agent_obj(doc, agent)?;
            put_scalar(doc, &obj, RESUME_ID, resume_id)?;
            Ok(())
        })
    }

    /// Set (or clear, with `None`) the agent's process id.
    pub fn set_pid(&mut self, agent: &AgentId, pid: Option<u32>) -> Result<(), CrdtError> {
        self.write(|doc| {
            let obj = Self::agent_obj(doc, agent)?;
            put_opt(doc, &obj, PID, pid)?;
            Ok(())
        })
    }

    /// Tombstone the agent at `at_ms`. The agent is never deleted; if it is
    /// already removed the original removal time is kept.
    pub fn mark_removed(&mut self, agent: &AgentId, at_ms: u64) -> Result<(), CrdtError> {
        self.write(|doc| {
            let obj = Self::agent_obj(doc, agent)?;
            if get_u64(doc, &obj, REMOVED_AT_MS).is_none() {
                put_scalar(doc, &obj, REMOVED_AT_MS, at_ms)?;
            }
            Ok(())
        })
    }

    /// The hydrated agent (including removed ones).
    pub fn agent(&self, id: &AgentId) -> Option<AgentRecord> {
        let agents = Self::root_map(&self.doc, AGENTS)?;
        Self::read_agent(&self.doc, &agents, id.as_str())
    }

    /// All agents including removed ones, sorted by `created_at_ms`, then id.
    pub fn agents(&self) -> Vec<AgentRecord> {
        let Some(agents) = Self::root_map(&self.doc, AGENTS) else {
            return Vec::new();
        };
        let keys: Vec<String> = self.doc.keys(&agents).collect();
        let mut out: Vec<AgentRecord> = keys
            .iter()
            .filter_map(|k| Self::read_agent(&self.doc, &agents, k))
            .collect();
        out.sort_by(|a, b| (a.created_at_ms, &a.id).cmp(&(b.created_at_ms, &b.id)));
        out
    }

    /// The live (not removed) agent called `name`. If several live agents
    /// share the name, the most recently created one (by `created_at_ms`,
    /// then id) is returned.
    pub fn find_agent_by_name(&self, name: &str) -> Option<AgentRecord> {
        self.agents()
            .into_iter()
            .rfind(|a| a.name == name && !a.is_removed())
    }

    // ----------------------------------------------------------- sessions

    /// Create or update a session. `created_at_ms` is LWW; the agent list
    /// is replaced as a whole when it differs.
    pub fn upsert_session(&mut self, s: &SessionRecord) -> Result<(), CrdtError> {
        self.write(|doc| {
            let sessions = match Self::root_map(doc, SESSIONS) {
                Some(m) => m,
                None => doc.put_object(ROOT, SESSIONS, ObjType::Map)?,
            };
            let obj = match schema::get_obj(doc, &sessions, &s.name, ObjType::Map) {
                Some(o) => o,
                None => doc.put_object(&sessions, s.name.as_str(), ObjType::Map)?,
            };
            put_scalar(doc, &obj, NAME, s.name.as_str())?;
            put_scalar(doc, &obj, CREATED_AT_MS, s.created_at_ms)?;
            schema::put_saved_agents(doc, &obj, AGENTS, &s.agents)?;
            Ok(())
        })
    }

    /// The session called `name`.
    pub fn session(&self, name: &str) -> Option<SessionRecord> {
        let sessions = Self::root_map(&self.doc, SESSIONS)?;
        let obj = schema::get_obj(&self.doc, &sessions, name, ObjType::Map)?;
        Some(SessionRecord {
            name: name.to_owned(),
            created_at_ms: get_u64(&self.doc, &obj, CREATED_AT_MS).unwrap_or(0),
            agents: schema::read_saved_agents(&self.doc, &obj, AGENTS).unwrap_or_default(),
        })
    }

    /// All sessions, sorted by name.
    pub fn sessions(&self) -> Vec<SessionRecord> {
        let Some(sessions) = Self::root_map(&self.doc, SESSIONS) else {
            return Vec::new();
        };
        // Map keys iterate in sorted order.
        let keys: Vec<String> = self.doc.keys(&sessions).collect();
        keys.iter().filter_map(|k| self.session(k)).collect()
    }
}
