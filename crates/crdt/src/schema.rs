//! Low-level encoding helpers: typed reads and change-minimising writes of document values.

use std::collections::BTreeMap;

use automerge::transaction::Transactable;
use automerge::{AutoCommit, AutomergeError, ObjId, ObjType, ReadDoc, ScalarValue, Value};

use crate::model::{AgentState, Reactions, SavedAgent, StateTransition};

pub(crate) const VERSION: &str = "version";
pub(crate) const AGENTS: &str = "agents";
pub(crate) const SESSIONS: &str = "sessions";
pub(crate) const COMMENTS: &str = "comments";
pub(crate) const TASKS: &str = "tasks";
pub(crate) const DECISIONS: &str = "decisions";
pub(crate) const CONTEXT: &str = "context";

pub(crate) const NAME: &str = "name";
pub(crate) const AGENT_TYPE: &str = "agent_type";
pub(crate) const COMMAND: &str = "command";
pub(crate) const CWD: &str = "cwd";
pub(crate) const WORKSPACE: &str = "workspace";
pub(crate) const HOST_DEVICE: &str = "host_device";
pub(crate) const ENV: &str = "env";
pub(crate) const CREATED_AT_MS: &str = "created_at_ms";
pub(crate) const PID: &str = "pid";
pub(crate) const RESUME_ID: &str = "resume_id";
pub(crate) const REMOVED_AT_MS: &str = "removed_at_ms";
pub(crate) const TRANSITIONS: &str = "transitions";
pub(crate) const WORKTREE: &str = "worktree";

pub(crate) const STATE: &str = "state";
pub(crate) const KIND: &str = "kind";
pub(crate) const CODE: &str = "code";
pub(crate) const MESSAGE: &str = "message";
pub(crate) const SOURCE: &str = "source";
pub(crate) const AT_MS: &str = "at_ms";

pub(crate) const AGENT: &str = "agent";
pub(crate) const LINE: &str = "line";
pub(crate) const LINE_HASH: &str = "line_hash";
pub(crate) const LINE_TEXT: &str = "line_text";
pub(crate) const TEXT: &str = "text";
pub(crate) const AUTHOR_ID: &str = "author_id";
pub(crate) const AUTHOR: &str = "author";
pub(crate) const PARENT: &str = "parent";
pub(crate) const RESOLVED: &str = "resolved";
pub(crate) const RESOLVED_BY: &str = "resolved_by";
pub(crate) const RESOLVED_AT_MS: &str = "resolved_at_ms";
pub(crate) const DELETED_AT_MS: &str = "deleted_at_ms";
pub(crate) const REACTIONS: &str = "reactions";

// ---------------------------------------------------------------- reads

/// The winning value at `key` if it is an object of type `ty`.
pub(crate) fn get_obj(doc: &AutoCommit, obj: &ObjId, key: &str, ty: ObjType) -> Option<ObjId> {
    match doc.get(obj, key).ok().flatten()? {
        (Value::Object(t), id) if t == ty => Some(id),
        _ => None,
    }
}

/// All (possibly conflicting) values at `key` that are objects of type `ty`,
/// in Automerge's deterministic conflict order.
pub(crate) fn get_all_objs(doc: &AutoCommit, obj: &ObjId, key: &str, ty: ObjType) -> Vec<ObjId> {
    doc.get_all(obj, key)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|(v, id)| match v {
            Value::Object(t) if t == ty => Some(id),
            _ => None,
        })
        .collect()
}

/// Like [`get_all_objs`], but with the winning object (the one
/// [`get_obj`] returns) last, so that readers folding over the list let the
/// winner take precedence. Empty when the winner is not an object of type `ty`.
pub(crate) fn get_all_objs_winner_last(
    doc: &AutoCommit,
    obj: &ObjId,
    key: &str,
    ty: ObjType,
) -> Vec<ObjId> {
    let Some(winner) = get_obj(doc, obj, key, ty) else {
        return Vec::new();
    };
    let mut all: Vec<ObjId> = get_all_objs(doc, obj, key, ty)
        .into_iter()
        .filter(|o| *o != winner)
        .collect();
    all.push(winner);
    all
}

fn get_scalar(
    doc: &AutoCommit,
    obj: &ObjId,
    prop: impl Into<automerge::Prop>,
) -> Option<ScalarValue> {
    match doc.get(obj, prop).ok().flatten()? {
        (Value::Scalar(s), _) => Some(s.into_owned()),
        _ => None,
    }
}

fn scalar_str(s: ScalarValue) -> Option<String> {
    match s {
        ScalarValue::Str(s) => Some(s.to_string()),
        _ => None,
    }
}

fn scalar_u64(s: &ScalarValue) -> Option<u64> {
    match *s {
        ScalarValue::Uint(n) => Some(n),
        ScalarValue::Int(n) => u64::try_from(n).ok(),
        _ => None,
    }
}

fn scalar_i64(s: &ScalarValue) -> Option<i64> {
    match *s {
        ScalarValue::Int(n) => Some(n),
        ScalarValue::Uint(n) => i64::try_from(n).ok(),
        _ => None,
    }
}

pub(crate) fn get_str(doc: &AutoCommit, obj: &ObjId, key: &str) -> Option<String> {
    get_scalar(doc, obj, key).and_then(scalar_str)
}

pub(crate) fn get_u64(doc: &AutoCommit, obj: &ObjId, key: &str) -> Option<u64> {
    get_scalar(doc, obj, key).as_ref().and_then(scalar_u64)
}

pub(crate) fn get_bool(doc: &AutoCommit, obj: &ObjId, key: &str) -> Option<bool> {
    match get_scalar(doc, obj, key)? {
        ScalarValue::Boolean(b) => Some(b),
        _ => None,
    }
}

/// Every (possibly conflicting) unsigned value at `key`.
pub(crate) fn get_all_u64(doc: &AutoCommit, obj: &ObjId, key: &str) -> Vec<u64> {
    doc.get_all(obj, key)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|(v, _)| match v {
            Value::Scalar(s) => scalar_u64(&s),
            _ => None,
        })
        .collect()
}

pub(crate) fn get_i64(doc: &AutoCommit, obj: &ObjId, key: &str) -> Option<i64> {
    get_scalar(doc, obj, key).as_ref().and_then(scalar_i64)
}

/// A list of strings at `key`; missing or malformed elements are skipped.
pub(crate) fn get_str_list(doc: &AutoCommit, obj: &ObjId, key: &str) -> Option<Vec<String>> {
    let list = get_obj(doc, obj, key, ObjType::List)?;
    let len = doc.length(&list);
    Some(
        (0..len)
            .filter_map(|i| get_scalar(doc, &list, i).and_then(scalar_str))
            .collect(),
    )
}

/// A string map at `key`, sorted by key; non-string values are skipped.
pub(crate) fn get_str_map(
    doc: &AutoCommit,
    obj: &ObjId,
    key: &str,
) -> Option<Vec<(String, String)>> {
    let map = get_obj(doc, obj, key, ObjType::Map)?;
    let keys: Vec<String> = doc.keys(&map).collect();
    Some(
        keys.into_iter()
            .filter_map(|k| {
                let v = get_str(doc, &map, &k)?;
                Some((k, v))
            })
            .collect(),
    )
}

/// Decode an [`AgentState`] map (`kind` plus optional `code` / `message`).
pub(crate) fn read_state(doc: &AutoCommit, obj: &ObjId) -> Option<AgentState> {
    let kind = get_str(doc, obj, KIND)?;
    Some(match kind.as_str() {
        "starting" => AgentState::Starting,
        "running" => AgentState::Running,
        "idle" => AgentState::Idle,
        "waiting" => AgentState::Waiting,
        "exited" => AgentState::Exited {
            code: get_i64(doc, obj, CODE).and_then(|c| i32::try_from(c).ok())?,
        },
        "error" => AgentState::Error {
            message: get_str(doc, obj, MESSAGE).unwrap_or_default(),
        },
        // A kind from a newer schema: skip the entry rather than guess.
        _ => return None,
    })
}

/// Decode one element of a `transitions` list.
pub(crate) fn read_transition(doc: &AutoCommit, obj: &ObjId) -> Option<StateTransition> {
    let state_obj = get_obj(doc, obj, STATE, ObjType::Map)?;
    Some(StateTransition {
        state: read_state(doc, &state_obj)?,
        source: get_str(doc, obj, SOURCE).unwrap_or_default(),
        at_ms: get_u64(doc, obj, AT_MS)?,
    })
}

/// All well-formed transitions of the agent map's `transitions` list, in list order.
pub(crate) fn read_transitions(doc: &AutoCommit, obj: &ObjId) -> Vec<StateTransition> {
    let Some(list) = get_obj(doc, obj, TRANSITIONS, ObjType::List) else {
        return Vec::new();
    };
    let len = doc.length(&list);
    (0..len)
        .filter_map(|i| match doc.get(&list, i).ok().flatten()? {
            (Value::Object(ObjType::Map), id) => read_transition(doc, &id),
            _ => None,
        })
        .collect()
}

pub(crate) fn read_saved_agent(doc: &AutoCommit, obj: &ObjId) -> SavedAgent {
    SavedAgent {
        name: get_str(doc, obj, NAME).unwrap_or_default(),
        agent_type: get_str(doc, obj, AGENT_TYPE).unwrap_or_default(),
        command: get_str_list(doc, obj, COMMAND).unwrap_or_default(),
        cwd: get_str(doc, obj, CWD).unwrap_or_default(),
        resume_id: get_str(doc, obj, RESUME_ID),
        env: get_str_map(doc, obj, ENV).unwrap_or_default(),
    }
}

pub(crate) fn read_saved_agents(
    doc: &AutoCommit,
    obj: &ObjId,
    key: &str,
) -> Option<Vec<SavedAgent>> {
    let list = get_obj(doc, obj, key, ObjType::List)?;
    let len = doc.length(&list);
    Some(
        (0..len)
            .filter_map(|i| match doc.get(&list, i).ok().flatten()? {
                (Value::Object(ObjType::Map), id) => Some(read_saved_agent(doc, &id)),
                _ => None,
            })
            .collect(),
    )
}

/// Every person map of `emoji` under the `reactions` maps of `comment_maps`
/// (all conflicting copies of one comment, winner last). Concurrent first
/// reactions with the same emoji create conflicting person maps; readers
/// union them and writers touch all of them.
pub(crate) fn emoji_maps(doc: &AutoCommit, comment_maps: &[ObjId], emoji: &str) -> Vec<ObjId> {
    comment_maps
        .iter()
        .flat_map(|c| get_all_objs_winner_last(doc, c, REACTIONS, ObjType::Map))
        .flat_map(|r| get_all_objs_winner_last(doc, &r, emoji, ObjType::Map))
        .collect()
}

/// The union of the reactions of all conflicting copies of one comment
/// (winner last, so winning maps decide a person's display name). Emoji
/// without any person are left out.
pub(crate) fn read_reactions(doc: &AutoCommit, comment_maps: &[ObjId]) -> Reactions {
    let mut out = Reactions::new();
    for c in comment_maps {
        for r in get_all_objs_winner_last(doc, c, REACTIONS, ObjType::Map) {
            let emojis: Vec<String> = doc.keys(&r).collect();
            for emoji in emojis {
                for m in get_all_objs_winner_last(doc, &r, &emoji, ObjType::Map) {
                    let people: Vec<String> = doc.keys(&m).collect();
                    for person in people {
                        if let Some(name) = get_str(doc, &m, &person) {
                            out.entry(emoji.clone()).or_default().insert(person, name);
                        }
                    }
                }
            }
        }
    }
    out
}

// ---------------------------------------------------------------- writes
//
// Every writer compares against the current value first and emits no
// operation when nothing changed, so re-upserting an identical record
// produces no Automerge change at all.

/// Put a scalar unless the winning value is already equal.
pub(crate) fn put_scalar(
    doc: &mut AutoCommit,
    obj: &ObjId,
    key: &str,
    value: impl Into<ScalarValue>,
) -> Result<(), AutomergeError> {
    let value = value.into();
    if get_scalar(doc, obj, key).as_ref() == Some(&value) {
        return Ok(());
    }
    doc.put(obj, key, value)
}

/// Put an optional scalar; `None` is stored as an explicit `null`.
pub(crate) fn put_opt<V: Into<ScalarValue>>(
    doc: &mut AutoCommit,
    obj: &ObjId,
    key: &str,
    value: Option<V>,
) -> Result<(), AutomergeError> {
    match value {
        Some(v) => put_scalar(doc, obj, key, v),
        None => put_scalar(doc, obj, key, ScalarValue::Null),
    }
}

/// Replace the string list at `key` (as a whole new list object, so that
/// concurrent rewrites resolve last-writer-wins instead of interleaving).
pub(crate) fn put_str_list(
    doc: &mut AutoCommit,
    obj: &ObjId,
    key: &str,
    items: &[String],
) -> Result<(), AutomergeError> {
    if get_str_list(doc, obj, key).as_deref() == Some(items) {
        return Ok(());
    }
    let list = doc.put_object(obj, key, ObjType::List)?;
    for (i, item) in items.iter().enumerate() {
        doc.insert(&list, i, item.as_str())?;
    }
    Ok(())
}

/// Update the string map at `key` in place (per-key merge under concurrency).
/// Duplicate keys in `entries`: the last one wins.
pub(crate) fn put_str_map(
    doc: &mut AutoCommit,
    obj: &ObjId,
    key: &str,
    entries: &[(String, String)],
) -> Result<(), AutomergeError> {
    let desired: BTreeMap<&str, &str> = entries
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let map = match get_obj(doc, obj, key, ObjType::Map) {
        Some(m) => m,
        None => doc.put_object(obj, key, ObjType::Map)?,
    };
    let stale: Vec<String> = doc
        .keys(&map)
        .filter(|k| !desired.contains_key(k.as_str()))
        .collect();
    for k in stale {
        doc.delete(&map, k.as_str())?;
    }
    for (k, v) in desired {
        put_scalar(doc, &map, k, v)?;
    }
    Ok(())
}

/// Write an [`AgentState`] into an (empty) map.
pub(crate) fn write_state(
    doc: &mut AutoCommit,
    obj: &ObjId,
    state: &AgentState,
) -> Result<(), AutomergeError> {
    doc.put(obj, KIND, state.label())?;
    match state {
        AgentState::Exited { code } => doc.put(obj, CODE, i64::from(*code))?,
        AgentState::Error { message } => doc.put(obj, MESSAGE, message.as_str())?,
        _ => {}
    }
    Ok(())
}

/// Append a transition to the list (created if missing) at `transitions`.
pub(crate) fn append_transition(
    doc: &mut AutoCommit,
    agent: &ObjId,
    t: &StateTransition,
) -> Result<(), AutomergeError> {
    let list = match get_obj(doc, agent, TRANSITIONS, ObjType::List) {
        Some(l) => l,
        None => doc.put_object(agent, TRANSITIONS, ObjType::List)?,
    };
    let len = doc.length(&list);
    let entry = doc.insert_object(&list, len, ObjType::Map)?;
    let state = doc.put_object(&entry, STATE, ObjType::Map)?;
    write_state(doc, &state, &t.state)?;
    doc.put(&entry, SOURCE, t.source.as_str())?;
    doc.put(&entry, AT_MS, t.at_ms)?;
    Ok(())
}

/// Replace the saved-agent list at `key` as a whole (last writer wins).
pub(crate) fn put_saved_agents(
    doc: &mut AutoCommit,
    obj: &ObjId,
    key: &str,
    agents: &[SavedAgent],
) -> Result<(), AutomergeError> {
    let normalized: Vec<SavedAgent> = agents.iter().map(normalize_saved_agent).collect();
    if read_saved_agents(doc, obj, key).as_deref() == Some(normalized.as_slice()) {
        return Ok(());
    }
    let list = doc.put_object(obj, key, ObjType::List)?;
    for (i, a) in agents.iter().enumerate() {
        let m = doc.insert_object(&list, i, ObjType::Map)?;
        doc.put(&m, NAME, a.name.as_str())?;
        doc.put(&m, AGENT_TYPE, a.agent_type.as_str())?;
        put_str_list(doc, &m, COMMAND, &a.command)?;
        doc.put(&m, CWD, a.cwd.as_str())?;
        put_opt(doc, &m, RESUME_ID, a.resume_id.as_deref())?;
        put_str_map(doc, &m, ENV, &a.env)?;
    }
    Ok(())
}

/// An env list as it reads back from the document: sorted, last duplicate wins.
pub(crate) fn normalize_env(env: &[(String, String)]) -> Vec<(String, String)> {
    env.iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect::<BTreeMap<_, _>>()
        .into_iter()
        .collect()
}

fn normalize_saved_agent(a: &SavedAgent) -> SavedAgent {
    SavedAgent {
        env: normalize_env(&a.env),
        ..a.clone()
    }
}
