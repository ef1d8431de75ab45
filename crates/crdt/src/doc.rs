//! The [`WorkspaceDoc`]: typed access to the workspace Automerge document.

use automerge::transaction::{CommitOptions, Transactable};
use automerge::{AutoCommit, Change, ChangeHash, ObjId, ObjType, ROOT, ReadDoc, ScalarValue};

use crate::error::CrdtError;
use crate::model::{ActorId, AgentId, AgentRecord, Comment, SessionRecord, StateTransition};
use crate::schema::{self, *};

/// Version written to the root `"version"` key by the latest genesis change
/// (v1: `agents`, `sessions`; v2: `comments`; v3: `tasks`, `decisions`,
/// `context`).
pub const SCHEMA_VERSION: u64 = 3;

/// Largest [`Comment::text`], in bytes.
pub const MAX_COMMENT_TEXT_BYTES: usize = 10_000;
/// Largest [`Comment::line_text`], in characters.
pub const MAX_LINE_TEXT_CHARS: usize = 200;
/// Largest reaction emoji, in bytes (an emoji is at least one byte).
pub const MAX_EMOJI_BYTES: usize = 32;

/// Actor of the deterministic genesis changes. Every replica produces the
/// byte-identical genesis changes (same actor, seq, start op, timestamp,
/// dependencies and ops), so they all share the same root `agents` /
/// `sessions` / `comments` objects.
const GENESIS_ACTOR: [u8; 16] = [0; 16];

/// One workspace's replicated state: agents, sessions and comments.
///
/// All mutations are local and synchronous; exchange state with other
/// replicas via [`save`](Self::save) / [`load`](Self::load),
/// [`save_incremental`](Self::save_incremental),
/// [`changes_since`](Self::changes_since) / [`apply_changes`](Self::apply_changes)
/// or [`merge`](Self::merge).
///
/// # Genesis and schema versions
///
/// Root objects are never created lazily: two devices would create two
/// conflicting maps and one device's entries would be hidden. Instead, every
/// document starts from a chain of deterministic genesis changes by the
/// all-zero actor, at time 0:
///
/// 1. seq 1 (v1): root maps `agents`, `sessions`, `version = 1`;
/// 2. seq 2 (v2, depends on seq 1): root map `comments`, `version = 2`;
/// 3. seq 3 (v3, depends on seq 2): root maps `tasks`, `decisions`, root
///    text `context`, `version = 3` (the workspace memory, `memory.rs`).
///
/// [`new`](Self::new) contains both; [`load`](Self::load) applies both, so a
/// v1 document migrates when it is loaded (the migration reaches disk with
/// the next [`save_incremental`](Self::save_incremental)). Because the v2
/// change is byte-identical on every device, replicas that migrated
/// independently share one `comments` map and merge cleanly.
///
/// # Concurrency semantics
///
/// Agents and sessions:
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
///
/// Comments (one map per id under root `comments`; nothing is ever removed):
/// * fields are LWW; a comment's content is written once, by
///   [`add_comment`](Self::add_comment);
/// * resolution is LWW as a whole: [`resolve_comment`](Self::resolve_comment)
///   writes `resolved`, `resolved_by` and `resolved_at_ms` together, in one
///   change and in a fixed order, so concurrent resolutions never mix fields;
/// * reactions merge per (emoji, person): adding puts the person's key,
///   removing deletes it. Sequential add/remove: the later one wins.
///   Concurrent add and remove of the same (emoji, person): the add wins
///   (an Automerge delete only removes the values it has seen);
/// * delete wins: [`delete_comment`](Self::delete_comment) sets
///   `deleted_at_ms` (a scalar that only ever goes from absent to set) and
///   clears `text`. A comment is read as deleted if any replica deleted it
///   (the earliest deletion time is reported), and a deleted comment always
///   reads with empty text, whatever was written concurrently or later.
///   The old text stays in the document's history: a tombstone, not a
///   redaction;
/// * if two replicas concurrently create the same comment id (ids are
///   random, so only by accident), fields and resolution come from the
///   winning map while reactions and deletion are unioned over all copies.
pub struct WorkspaceDoc {
    pub(crate) doc: AutoCommit,
}

impl std::fmt::Debug for WorkspaceDoc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkspaceDoc")
            .field("actor", self.doc.get_actor())
            .finish_non_exhaustive()
    }
}

/// The deterministic genesis document: the v1 change (root maps `agents`,
/// `sessions`, `version = 1`) followed by the v2 change (root map
/// `comments`, `version = 2`).
///
/// Never edit an existing genesis change: its bytes (hence its hash and the
/// root ObjIds) are shared by every document ever created. A new schema
/// version appends one more change here.
fn genesis() -> AutoCommit {
    let mut doc = AutoCommit::new().with_actor(automerge::ActorId::from(GENESIS_ACTOR));
    // These cannot fail on a fresh document with ROOT as target.
    // v1. Keep byte-identical: `version` is an unsigned 1, default commit.
    let ok = doc.put_object(ROOT, AGENTS, ObjType::Map).is_ok()
        && doc.put_object(ROOT, SESSIONS, ObjType::Map).is_ok()
        && doc.put(ROOT, VERSION, 1_u64).is_ok();
    debug_assert!(ok, "genesis v1 ops on an empty document");
    // Default commit time is 0, which keeps the change hash deterministic.
    doc.commit();
    // v2: seq 2 of the genesis actor, depending only on the v1 change.
    let ok = doc.put_object(ROOT, COMMENTS, ObjType::Map).is_ok()
        && doc.put(ROOT, VERSION, 2_u64).is_ok();
    debug_assert!(ok, "genesis v2 ops on the v1 genesis");
    doc.commit_with(CommitOptions::default().with_time(0));
    // v3: seq 3, depending only on the v2 change: the workspace memory.
    let ok = doc.put_object(ROOT, TASKS, ObjType::Map).is_ok()
        && doc.put_object(ROOT, DECISIONS, ObjType::Map).is_ok()
        && doc.put_object(ROOT, CONTEXT, ObjType::Text).is_ok()
        && doc.put(ROOT, VERSION, 3_u64).is_ok();
    debug_assert!(ok, "genesis v3 ops on the v2 genesis");
    doc.commit_with(CommitOptions::default().with_time(0));
    debug_assert_eq!(schema::get_u64(&doc, &ROOT, VERSION), Some(SCHEMA_VERSION));
    doc
}

/// Check a comment's documented limits.
fn validate_comment(c: &Comment) -> Result<(), CrdtError> {
    if c.id.is_empty() {
        return Err(CrdtError::Invalid("comment id is empty".into()));
    }
    validate_text(&c.text)?;
    let chars = c.line_text.chars().count();
    if chars > MAX_LINE_TEXT_CHARS {
        return Err(CrdtError::Invalid(format!(
            "comment line_text is {chars} characters, at most {MAX_LINE_TEXT_CHARS} allowed \
             (truncate the quoted line)"
        )));
    }
    if c.parent.as_deref() == Some(c.id.as_str()) {
        return Err(CrdtError::Invalid(format!(
            "comment {} cannot reply to itself",
            c.id
        )));
    }
    for (emoji, people) in &c.reactions {
        validate_emoji(emoji)?;
        for person in people.keys() {
            validate_person(person)?;
        }
    }
    Ok(())
}

fn validate_text(text: &str) -> Result<(), CrdtError> {
    if text.len() > MAX_COMMENT_TEXT_BYTES {
        return Err(CrdtError::Invalid(format!(
            "comment text is {} bytes, at most {MAX_COMMENT_TEXT_BYTES} allowed",
            text.len()
        )));
    }
    Ok(())
}

fn validate_emoji(emoji: &str) -> Result<(), CrdtError> {
    if emoji.is_empty() {
        return Err(CrdtError::Invalid("reaction emoji is empty".into()));
    }
    if emoji.len() > MAX_EMOJI_BYTES {
        return Err(CrdtError::Invalid(format!(
            "reaction emoji is {} bytes, at most {MAX_EMOJI_BYTES} allowed",
            emoji.len()
        )));
    }
    Ok(())
}

fn validate_person(person_id: &str) -> Result<(), CrdtError> {
    if person_id.is_empty() {
        return Err(CrdtError::Invalid("reaction person id is empty".into()));
    }
    Ok(())
}

/// Whether `new` is a re-send of the stored comment `old` (same content).
fn same_content(old: &Comment, new: &Comment) -> bool {
    old.agent == new.agent
        && old.line == new.line
        && old.line_hash == new.line_hash
        && old.line_text == new.line_text
        && (old.is_deleted() || old.text == new.text)
        && old.author_id == new.author_id
        && old.author == new.author
        && old.created_at_ms == new.created_at_ms
        && old.parent == new.parent
}

impl WorkspaceDoc {
    /// A new document containing only the genesis changes, writing as `actor`.
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
    /// `save_incremental` only returns changes made after loading, plus the
    /// genesis changes the bytes lacked.
    ///
    /// Migration: every genesis change is applied (a no-op for those already
    /// present), so an older document is brought to [`SCHEMA_VERSION`] here.
    pub fn load(bytes: &[u8], actor: ActorId) -> Result<Self, CrdtError> {
        let mut doc = AutoCommit::load(bytes)?;
        doc.set_actor(actor.into());
        // Move the incremental-save cursor past what was just loaded.
        let _ = doc.save_incremental();
        // Make sure the genesis changes are present (a no-op when they are).
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
    pub(crate) fn write<T>(
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

    /// All copies of an existing comment's map (more than one only after a
    /// concurrent creation of the same id), the winning one last.
    fn comment_objs(doc: &AutoCommit, id: &str) -> Result<Vec<ObjId>, CrdtError> {
        let maps = Self::root_map(doc, COMMENTS)
            .map(|comments| schema::get_all_objs_winner_last(doc, &comments, id, ObjType::Map))
            .unwrap_or_default();
        if maps.is_empty() {
            return Err(CrdtError::CommentNotFound(id.to_owned()));
        }
        Ok(maps)
    }

    fn read_comment(doc: &AutoCommit, comments: &ObjId, key: &str) -> Option<Comment> {
        let maps = schema::get_all_objs_winner_last(doc, comments, key, ObjType::Map);
        let obj = maps.last()?;
        // Deleted if any copy was deleted by anyone; the earliest time wins.
        let deleted_at_ms = maps
            .iter()
            .flat_map(|m| schema::get_all_u64(doc, m, DELETED_AT_MS))
            .min();
        let text = match deleted_at_ms {
            Some(_) => String::new(),
            None => get_str(doc, obj, TEXT).unwrap_or_default(),
        };
        Some(Comment {
            id: key.to_owned(),
            agent: get_str(doc, obj, AGENT).unwrap_or_default(),
            line: get_u64(doc, obj, LINE).unwrap_or(0),
            line_hash: get_str(doc, obj, LINE_HASH).unwrap_or_default(),
            line_text: get_str(doc, obj, LINE_TEXT).unwrap_or_default(),
            text,
            author_id: get_str(doc, obj, AUTHOR_ID).unwrap_or_default(),
            author: get_str(doc, obj, AUTHOR).unwrap_or_default(),
            created_at_ms: get_u64(doc, obj, CREATED_AT_MS).unwrap_or(0),
            parent: get_str(doc, obj, PARENT),
            resolved: schema::get_bool(doc, obj, RESOLVED).unwrap_or(false),
            resolved_by: get_str(doc, obj, RESOLVED_BY),
            resolved_at_ms: get_u64(doc, obj, RESOLVED_AT_MS),
            deleted_at_ms,
            reactions: schema::read_reactions(doc, &maps),
        })
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

    // ----------------------------------------------------------- comments

    /// Add a comment (one map under root `comments`, keyed by `c.id`) with
    /// everything `c` holds: content, resolution, reactions and, if set, the
    /// deletion tombstone (then the text is stored empty).
    ///
    /// Re-adding an id whose stored content (`agent`, `line`, `line_hash`,
    /// `line_text`, `text` unless deleted, `author_id`, `author`,
    /// `created_at_ms`, `parent`) equals `c`'s is a no-op, so a retried
    /// request is harmless; the stored resolution, reactions and tombstone
    /// are left alone. Any other existing id is
    /// [`CrdtError::CommentExists`].
    ///
    /// Limits ([`CrdtError::Invalid`], nothing written): a non-empty id,
    /// `text` at most [`MAX_COMMENT_TEXT_BYTES`] bytes, `line_text` at most
    /// [`MAX_LINE_TEXT_CHARS`] characters, no reply to itself, reaction
    /// emoji non-empty and at most [`MAX_EMOJI_BYTES`] bytes, person ids
    /// non-empty.
    pub fn add_comment(&mut self, c: &Comment) -> Result<(), CrdtError> {
        validate_comment(c)?;
        self.write(|doc| {
            let Some(comments) = Self::root_map(doc, COMMENTS) else {
                // Unreachable for documents from `new`/`load`, which carry
                // the v2 genesis; never create the root map lazily.
                return Err(CrdtError::Invalid(
                    "the document has no root comments map (schema older than v2)".into(),
                ));
            };
            if let Some(old) = Self::read_comment(doc, &comments, &c.id) {
                return if same_content(&old, c) {
                    Ok(())
                } else {
                    Err(CrdtError::CommentExists(c.id.clone()))
                };
            }
            let obj = doc.put_object(&comments, c.id.as_str(), ObjType::Map)?;
            doc.put(&obj, AGENT, c.agent.as_str())?;
            doc.put(&obj, LINE, c.line)?;
            doc.put(&obj, LINE_HASH, c.line_hash.as_str())?;
            doc.put(&obj, LINE_TEXT, c.line_text.as_str())?;
            let text = if c.is_deleted() { "" } else { c.text.as_str() };
            doc.put(&obj, TEXT, text)?;
            doc.put(&obj, AUTHOR_ID, c.author_id.as_str())?;
            doc.put(&obj, AUTHOR, c.author.as_str())?;
            doc.put(&obj, CREATED_AT_MS, c.created_at_ms)?;
            put_opt(doc, &obj, PARENT, c.parent.as_deref())?;
            doc.put(&obj, RESOLVED, c.resolved)?;
            put_opt(doc, &obj, RESOLVED_BY, c.resolved_by.as_deref())?;
            put_opt(doc, &obj, RESOLVED_AT_MS, c.resolved_at_ms)?;
            // Never written as null: the tombstone only goes absent -> set.
            if let Some(at) = c.deleted_at_ms {
                doc.put(&obj, DELETED_AT_MS, at)?;
            }
            let reactions = doc.put_object(&obj, REACTIONS, ObjType::Map)?;
            for (emoji, people) in c.reactions.iter().filter(|(_, p)| !p.is_empty()) {
                let m = doc.put_object(&reactions, emoji.as_str(), ObjType::Map)?;
                for (person, name) in people {
                    doc.put(&m, person.as_str(), name.as_str())?;
                }
            }
            Ok(())
        })
    }

    /// Resolve (`resolved = true`: by `by` at `at_ms`) or reopen
    /// (`resolved = false`: `resolved_by` and `resolved_at_ms` cleared) the
    /// comment. A no-op when it already is in that state (the original
    /// resolver is kept). Works on deleted comments too.
    ///
    /// The three fields are written together in a fixed order, so
    /// concurrent calls resolve LWW as a whole.
    pub fn resolve_comment(
        &mut self,
        id: &str,
        resolved: bool,
        by: &str,
        at_ms: u64,
    ) -> Result<(), CrdtError> {
        self.write(|doc| {
            let maps = Self::comment_objs(doc, id)?;
            let Some(obj) = maps.last() else {
                return Err(CrdtError::CommentNotFound(id.to_owned()));
            };
            if schema::get_bool(doc, obj, RESOLVED).unwrap_or(false) == resolved {
                return Ok(());
            }
            // Unconditional puts (no per-field minimising): every writer's
            // three op ids are consecutive, so the same writer wins all three.
            let (by, at) = if resolved {
                (ScalarValue::from(by), ScalarValue::from(at_ms))
            } else {
                (ScalarValue::Null, ScalarValue::Null)
            };
            doc.put(obj, RESOLVED, resolved)?;
            doc.put(obj, RESOLVED_BY, by)?;
            doc.put(obj, RESOLVED_AT_MS, at)?;
            Ok(())
        })
    }

    /// Tombstone the comment: set `deleted_at_ms` (kept if it is already
    /// deleted) and clear its text. Nothing is removed from the document;
    /// replies, resolution and reactions stay readable.
    pub fn delete_comment(&mut self, id: &str, at_ms: u64) -> Result<(), CrdtError> {
        self.write(|doc| {
            let maps = Self::comment_objs(doc, id)?;
            let deleted = maps
                .iter()
                .any(|m| !schema::get_all_u64(doc, m, DELETED_AT_MS).is_empty());
            if let (false, Some(obj)) = (deleted, maps.last()) {
                doc.put(obj, DELETED_AT_MS, at_ms)?;
            }
            for m in &maps {
                put_scalar(doc, m, TEXT, "")?;
            }
            Ok(())
        })
    }

    /// Add (`on`) or remove (`!on`) `person_id`'s `emoji` reaction, showing
    /// them as `name`. Adding an existing reaction only updates a changed
    /// name; removing a missing one is a no-op. Emoji maps left empty by
    /// removals stay in the document (and are not returned by readers).
    ///
    /// `emoji` must be non-empty and at most [`MAX_EMOJI_BYTES`] bytes and
    /// `person_id` non-empty ([`CrdtError::Invalid`]).
    pub fn react(
        &mut self,
        id: &str,
        emoji: &str,
        person_id: &str,
        name: &str,
        on: bool,
    ) -> Result<(), CrdtError> {
        validate_emoji(emoji)?;
        validate_person(person_id)?;
        self.write(|doc| {
            let maps = Self::comment_objs(doc, id)?;
            // Every copy of this emoji's person map (concurrent first
            // reactions with one emoji create conflicting maps).
            let emoji_maps = schema::emoji_maps(doc, &maps, emoji);
            if !on {
                for m in &emoji_maps {
                    if doc.get(m, person_id)?.is_some() {
                        doc.delete(m, person_id)?;
                    }
                }
                return Ok(());
            }
            let holding: Vec<&ObjId> = emoji_maps
                .iter()
                .filter(|m| get_str(doc, m, person_id).is_some())
                .collect();
            if !holding.is_empty() {
                for m in holding {
                    put_scalar(doc, m, person_id, name)?;
                }
                return Ok(());
            }
            let Some(obj) = maps.last() else {
                return Err(CrdtError::CommentNotFound(id.to_owned()));
            };
            let reactions = match schema::get_obj(doc, obj, REACTIONS, ObjType::Map) {
                Some(r) => r,
                None => doc.put_object(obj, REACTIONS, ObjType::Map)?,
            };
            let m = match schema::get_obj(doc, &reactions, emoji, ObjType::Map) {
                Some(m) => m,
                None => doc.put_object(&reactions, emoji, ObjType::Map)?,
            };
            doc.put(&m, person_id, name)?;
            Ok(())
        })
    }

    /// The hydrated comment `id` (deleted ones included, with empty text).
    pub fn comment(&self, id: &str) -> Option<Comment> {
        let comments = Self::root_map(&self.doc, COMMENTS)?;
        Self::read_comment(&self.doc, &comments, id)
    }

    /// All comments including deleted ones, sorted by `created_at_ms`,
    /// then id.
    pub fn comments(&self) -> Vec<Comment> {
        let Some(comments) = Self::root_map(&self.doc, COMMENTS) else {
            return Vec::new();
        };
        let keys: Vec<String> = self.doc.keys(&comments).collect();
        let mut out: Vec<Comment> = keys
            .iter()
            .filter_map(|k| Self::read_comment(&self.doc, &comments, k))
            .collect();
        out.sort_by(|a, b| (a.created_at_ms, &a.id).cmp(&(b.created_at_ms, &b.id)));
        out
    }
}

#[cfg(test)]
impl WorkspaceDoc {
    /// Wrap a raw document as is, without applying the genesis changes
    /// (tests build v1 documents with it).
    pub(crate) fn from_raw_unmigrated(doc: AutoCommit) -> Self {
        WorkspaceDoc { doc }
    }
}
