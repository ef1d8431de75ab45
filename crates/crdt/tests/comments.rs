//! Property tests for comments: replicas (fresh, or migrated from a v1
//! document) converge regardless of delivery order, duplication and
//! batching; reactions behave as a set per (emoji, person); resolutions are
//! atomic; deletions win.

use std::collections::{BTreeMap, BTreeSet};

use agentos_crdt::{ActorId, ChangeHash, Comment, CrdtError, SCHEMA_VERSION, WorkspaceDoc};
use proptest::prelude::*;

const CIDS: [&str; 3] = ["c-a", "c-b", "c-c"];
const EMOJIS: [&str; 2] = ["👍", "🎉"];
const PEOPLE: [&str; 3] = ["p0", "p1", "p2"];

#[derive(Debug, Clone)]
enum Op {
    Add {
        r: usize,
        cid: usize,
        text: u8,
        parent: Option<usize>,
    },
    Resolve {
        r: usize,
        cid: usize,
        resolved: bool,
        by: usize,
        at: u64,
    },
    Delete {
        r: usize,
        cid: usize,
        at: u64,
    },
    React {
        r: usize,
        cid: usize,
        emoji: usize,
        person: usize,
        on: bool,
    },
    /// Partial mid-run synchronisation between two replicas.
    Sync {
        from: usize,
        to: usize,
        merge: bool,
    },
}

fn op_strategy() -> impl Strategy<Value = Op> {
    let r = 0usize..3;
    let cid = 0..CIDS.len();
    prop_oneof![
        3 => (r.clone(), cid.clone(), 0u8..2, prop::option::of(0..CIDS.len()))
            .prop_map(|(r, cid, text, parent)| Op::Add { r, cid, text, parent }),
        2 => (r.clone(), cid.clone(), any::<bool>(), 0..PEOPLE.len(), 0u64..10).prop_map(
            |(r, cid, resolved, by, at)| Op::Resolve { r, cid, resolved, by, at }
        ),
        1 => (r.clone(), cid.clone(), 0u64..10).prop_map(|(r, cid, at)| Op::Delete { r, cid, at }),
        5 => (r.clone(), cid, 0..EMOJIS.len(), 0..PEOPLE.len(), any::<bool>()).prop_map(
            |(r, cid, emoji, person, on)| Op::React { r, cid, emoji, person, on }
        ),
        2 => (r.clone(), r, any::<bool>())
            .prop_map(|(from, to, merge)| Op::Sync { from, to, merge }),
    ]
}

fn name_of(person: usize) -> String {
    format!("Person {person}")
}

fn comment_for(cid: usize, text: u8, parent: Option<usize>) -> Comment {
    Comment {
        id: CIDS[cid].to_owned(),
        agent: "a1".to_owned(),
        line: 7 + cid as u64,
        line_hash: format!("{cid:02x}"),
        line_text: format!("line {cid}"),
        text: format!("text {text}"),
        author_id: "p0".to_owned(),
        author: name_of(0),
        // Ties on purpose: sorting falls back to the id.
        created_at_ms: (cid % 2) as u64,
        parent: parent.filter(|&p| p != cid).map(|p| CIDS[p].to_owned()),
        ..Comment::default()
    }
}

/// The v1 genesis as a v1 binary wrote it: a replica loading it migrates.
fn v1_bytes() -> Vec<u8> {
    use automerge::transaction::Transactable;
    let mut doc = automerge::AutoCommit::new().with_actor(automerge::ActorId::from([0u8; 16]));
    doc.put_object(automerge::ROOT, "agents", automerge::ObjType::Map)
        .unwrap();
    doc.put_object(automerge::ROOT, "sessions", automerge::ObjType::Map)
        .unwrap();
    doc.put(automerge::ROOT, "version", 1_u64).unwrap();
    doc.commit();
    doc.save()
}

/// `n` replicas; those whose bit is set in `migrated` start from a v1
/// document and migrate on load.
fn make_replicas(n: usize, migrated: u8) -> Vec<WorkspaceDoc> {
    let v1 = v1_bytes();
    (0..n)
        .map(|i| {
            let actor = ActorId([i as u8 + 1; 16]);
            if migrated & (1 << i) != 0 {
                WorkspaceDoc::load(&v1, actor).unwrap()
            } else {
                WorkspaceDoc::new(actor)
            }
        })
        .collect()
}

fn two_mut<T>(v: &mut [T], a: usize, b: usize) -> (&mut T, &mut T) {
    assert_ne!(a, b);
    if a < b {
        let (l, r) = v.split_at_mut(b);
        (&mut l[a], &mut r[0])
    } else {
        let (l, r) = v.split_at_mut(a);
        (&mut r[0], &mut l[b])
    }
}

// ------------------------------------------------------------------ model

type Key = (usize, usize, usize); // (comment, emoji, person)

/// One write that reached the document, as the model sees it.
#[derive(Debug, Clone)]
enum Event {
    Create {
        cid: usize,
        text: String,
    },
    /// A reaction put (only issued while the key is absent, so it
    /// supersedes nothing).
    Put(Key),
    /// A reaction removal superseding the puts it observed.
    Del(BTreeSet<usize>),
    Resolve {
        cid: usize,
        triple: Triple,
    },
    Delete {
        cid: usize,
        at: u64,
    },
}

type Triple = (bool, Option<String>, Option<u64>);

/// Which events each replica knows. Automerge applies changes in causal
/// order and every sync here transfers everything the source has, so a
/// replica's knowledge is a plain set of events.
struct Model {
    events: Vec<Event>,
    known: Vec<BTreeSet<usize>>,
}

impl Model {
    fn new(n: usize) -> Self {
        Model {
            events: Vec::new(),
            known: vec![BTreeSet::new(); n],
        }
    }

    fn push(&mut self, r: usize, e: Event) {
        self.events.push(e);
        self.known[r].insert(self.events.len() - 1);
    }

    fn knows_comment(&self, r: usize, cid: usize) -> bool {
        self.known[r]
            .iter()
            .any(|&e| matches!(self.events[e], Event::Create { cid: c, .. } if c == cid))
    }

    fn knows_deletion(&self, r: usize, cid: usize) -> bool {
        self.known[r]
            .iter()
            .any(|&e| matches!(self.events[e], Event::Delete { cid: c, .. } if c == cid))
    }

    /// Puts of `key` that no known removal has observed (an OR-set).
    fn visible_puts(&self, known: &BTreeSet<usize>, key: Key) -> BTreeSet<usize> {
        let removed: BTreeSet<usize> = known
            .iter()
            .filter_map(|&e| match &self.events[e] {
                Event::Del(pred) => Some(pred.iter().copied()),
                _ => None,
            })
            .flatten()
            .collect();
        known
            .iter()
            .copied()
            .filter(|e| matches!(self.events[*e], Event::Put(k) if k == key))
            .filter(|e| !removed.contains(e))
            .collect()
    }
}

fn actual_present(doc: &WorkspaceDoc, (cid, emoji, person): Key) -> bool {
    doc.comment(CIDS[cid]).is_some_and(|c| {
        c.reactions
            .get(EMOJIS[emoji])
            .is_some_and(|p| p.contains_key(PEOPLE[person]))
    })
}

/// Run `ops`, checking every step against the model; returns the model.
fn run_ops(replicas: &mut [WorkspaceDoc], ops: &[Op]) -> Result<Model, TestCaseError> {
    let n = replicas.len();
    let mut m = Model::new(n);
    for op in ops {
        match *op {
            Op::Add {
                r,
                cid,
                text,
                parent,
            } => {
                let r = r % n;
                let c = comment_for(cid, text, parent);
                let known = m.knows_comment(r, cid);
                match replicas[r].add_comment(&c) {
                    Ok(()) if !known => m.push(
                        r,
                        Event::Create {
                            cid,
                            text: c.text.clone(),
                        },
                    ),
                    Ok(()) | Err(CrdtError::CommentExists(_)) => prop_assert!(known),
                    Err(e) => prop_assert!(false, "add: {e}"),
                }
            }
            Op::Resolve {
                r,
                cid,
                resolved,
                by,
                at,
            } => {
                let r = r % n;
                let before = replicas[r].comment(CIDS[cid]);
                match replicas[r].resolve_comment(CIDS[cid], resolved, PEOPLE[by], at) {
                    Ok(()) => {
                        prop_assert!(m.knows_comment(r, cid));
                        if before.is_some_and(|c| c.resolved != resolved) {
                            let triple = if resolved {
                                (true, Some(PEOPLE[by].to_owned()), Some(at))
                            } else {
                                (false, None, None)
                            };
                            m.push(r, Event::Resolve { cid, triple });
                        }
                    }
                    Err(CrdtError::CommentNotFound(_)) => prop_assert!(!m.knows_comment(r, cid)),
                    Err(e) => prop_assert!(false, "resolve: {e}"),
                }
            }
            Op::Delete { r, cid, at } => {
                let r = r % n;
                let before = replicas[r].comment(CIDS[cid]);
                if let Some(c) = &before {
                    prop_assert_eq!(c.is_deleted(), m.knows_deletion(r, cid));
                }
                match replicas[r].delete_comment(CIDS[cid], at) {
                    Ok(()) => {
                        prop_assert!(m.knows_comment(r, cid));
                        if !m.knows_deletion(r, cid) {
                            m.push(r, Event::Delete { cid, at });
                        }
                    }
                    Err(CrdtError::CommentNotFound(_)) => prop_assert!(!m.knows_comment(r, cid)),
                    Err(e) => prop_assert!(false, "delete: {e}"),
                }
            }
            Op::React {
                r,
                cid,
                emoji,
                person,
                on,
            } => {
                let r = r % n;
                let key = (cid, emoji, person);
                let visible = m.visible_puts(&m.known[r], key);
                // The replica agrees with the OR-set model before every write.
                prop_assert_eq!(actual_present(&replicas[r], key), !visible.is_empty());
                let res = replicas[r].react(
                    CIDS[cid],
                    EMOJIS[emoji],
                    PEOPLE[person],
                    &name_of(person),
                    on,
                );
                match res {
                    Ok(()) => {
                        prop_assert!(m.knows_comment(r, cid));
                        if on && visible.is_empty() {
                            m.push(r, Event::Put(key));
                        } else if !on && !visible.is_empty() {
                            m.push(r, Event::Del(visible));
                        }
                    }
                    Err(CrdtError::CommentNotFound(_)) => prop_assert!(!m.knows_comment(r, cid)),
                    Err(e) => prop_assert!(false, "react: {e}"),
                }
                prop_assert_eq!(
                    actual_present(&replicas[r], key),
                    !m.visible_puts(&m.known[r], key).is_empty()
                );
            }
            Op::Sync { from, to, merge } => {
                let (from, to) = (from % n, to % n);
                if from == to {
                    continue;
                }
                let (src, dst) = two_mut(replicas, from, to);
                if merge {
                    dst.merge(src).unwrap();
                } else {
                    let delta = src.changes_since(&dst.heads());
                    dst.apply_changes(&delta).unwrap();
                }
                let src_known = m.known[from].clone();
                m.known[to].extend(src_known);
            }
        }
    }
    Ok(m)
}

/// Check the converged comments against everything that was written.
fn check_final(m: &Model, comments: &[Comment]) -> Result<(), TestCaseError> {
    let all: BTreeSet<usize> = (0..m.events.len()).collect();
    let created: BTreeSet<&str> = m
        .events
        .iter()
        .filter_map(|e| match e {
            Event::Create { cid, .. } => Some(CIDS[*cid]),
            _ => None,
        })
        .collect();
    let present: BTreeSet<&str> = comments.iter().map(|c| c.id.as_str()).collect();
    prop_assert_eq!(&present, &created, "no comment shadowed or invented");

    for c in comments {
        let cid = CIDS.iter().position(|&id| id == c.id).unwrap();
        let deleted = m
            .events
            .iter()
            .filter_map(|e| match e {
                Event::Delete { cid: d, at } if *d == cid => Some(*at),
                _ => None,
            })
            .min();
        prop_assert_eq!(c.deleted_at_ms, deleted, "delete wins, earliest time");
        if deleted.is_some() {
            prop_assert_eq!(c.text.as_str(), "");
        } else {
            let texts: BTreeSet<&str> = m
                .events
                .iter()
                .filter_map(|e| match e {
                    Event::Create { cid: d, text } if *d == cid => Some(text.as_str()),
                    _ => None,
                })
                .collect();
            prop_assert!(texts.contains(c.text.as_str()), "{:?}", c.text);
        }

        // Resolution: the initial state or exactly one writer's triple.
        let mut allowed: Vec<Triple> = vec![(false, None, None)];
        allowed.extend(m.events.iter().filter_map(|e| match e {
            Event::Resolve { cid: d, triple } if *d == cid => Some(triple.clone()),
            _ => None,
        }));
        let got = (c.resolved, c.resolved_by.clone(), c.resolved_at_ms);
        prop_assert!(allowed.contains(&got), "{:?} not in {:?}", got, allowed);

        // Reactions: exactly the model's OR-set.
        let mut expected: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
        for (emoji, emoji_str) in EMOJIS.iter().enumerate() {
            for (person, person_id) in PEOPLE.iter().enumerate() {
                if !m.visible_puts(&all, (cid, emoji, person)).is_empty() {
                    expected
                        .entry((*emoji_str).to_owned())
                        .or_default()
                        .insert((*person_id).to_owned(), name_of(person));
                }
            }
        }
        prop_assert_eq!(&c.reactions, &expected);
    }
    let mut sorted = comments.to_vec();
    sorted.sort_by(|a, b| (a.created_at_ms, &a.id).cmp(&(b.created_at_ms, &b.id)));
    prop_assert_eq!(&sorted, &comments.to_vec(), "sorted by (created, id)");
    Ok(())
}

// --------------------------------------------------------------- delivery

/// SplitMix64: tiny deterministic PRNG driven by a proptest-generated seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }

    fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = self.below(i + 1);
            v.swap(i, j);
        }
    }
}

/// Apply `changes` in random-sized batches.
fn apply_in_batches(doc: &mut WorkspaceDoc, changes: &[Vec<u8>], rng: &mut Rng) {
    let mut rest = changes;
    while !rest.is_empty() {
        let k = 1 + rng.below(rest.len());
        let (batch, tail) = rest.split_at(k);
        doc.apply_changes(batch).unwrap();
        rest = tail;
    }
}

/// Deliver `all` to `doc`: shuffled, with duplicates, a random prefix first
/// and then the rest (re-shuffled, again with duplicates of the prefix).
fn deliver(doc: &mut WorkspaceDoc, all: &[Vec<u8>], seed: u64) {
    let mut rng = Rng(seed);
    let mut msgs: Vec<Vec<u8>> = all.to_vec();
    for _ in 0..rng.below(all.len() + 1) {
        let i = rng.below(all.len());
        msgs.push(all[i].clone());
    }
    rng.shuffle(&mut msgs);
    let split = rng.below(msgs.len() + 1);
    let (prefix, rest) = msgs.split_at(split);
    apply_in_batches(doc, prefix, &mut rng);
    let mut rest = rest.to_vec();
    for _ in 0..rng.below(prefix.len() + 1) {
        let i = rng.below(prefix.len());
        rest.push(prefix[i].clone());
    }
    rng.shuffle(&mut rest);
    apply_in_batches(doc, &rest, &mut rng);
}

type Snapshot = (Vec<Comment>, Vec<ChangeHash>);

fn snapshot(doc: &mut WorkspaceDoc) -> Snapshot {
    let mut heads = doc.heads();
    heads.sort();
    (doc.comments(), heads)
}

// ------------------------------------------------------------ single model

/// A single replica behaves like a plain map of comments.
fn check_single_replica(ops: &[Op]) -> Result<(), TestCaseError> {
    let mut doc = WorkspaceDoc::new(ActorId([1; 16]));
    let mut model: BTreeMap<usize, Comment> = BTreeMap::new();
    for op in ops {
        match *op {
            Op::Add {
                cid, text, parent, ..
            } => {
                let c = comment_for(cid, text, parent);
                let res = doc.add_comment(&c);
                match model.get(&cid) {
                    None => {
                        prop_assert!(res.is_ok());
                        model.insert(cid, c);
                    }
                    Some(old) => {
                        let same =
                            (old.is_deleted() || old.text == c.text) && old.parent == c.parent;
                        prop_assert_eq!(res.is_ok(), same, "retry ok, conflicting content refused");
                    }
                }
            }
            Op::Resolve {
                cid,
                resolved,
                by,
                at,
                ..
            } => {
                let res = doc.resolve_comment(CIDS[cid], resolved, PEOPLE[by], at);
                prop_assert_eq!(res.is_ok(), model.contains_key(&cid));
                if let Some(c) = model.get_mut(&cid).filter(|c| c.resolved != resolved) {
                    c.resolved = resolved;
                    c.resolved_by = resolved.then(|| PEOPLE[by].to_owned());
                    c.resolved_at_ms = resolved.then_some(at);
                }
            }
            Op::Delete { cid, at, .. } => {
                let res = doc.delete_comment(CIDS[cid], at);
                prop_assert_eq!(res.is_ok(), model.contains_key(&cid));
                if let Some(c) = model.get_mut(&cid) {
                    c.deleted_at_ms.get_or_insert(at);
                    c.text.clear();
                }
            }
            Op::React {
                cid,
                emoji,
                person,
                on,
                ..
            } => {
                let res = doc.react(
                    CIDS[cid],
                    EMOJIS[emoji],
                    PEOPLE[person],
                    &name_of(person),
                    on,
                );
                prop_assert_eq!(res.is_ok(), model.contains_key(&cid));
                if let Some(c) = model.get_mut(&cid) {
                    let e = EMOJIS[emoji].to_owned();
                    if on {
                        c.reactions
                            .entry(e)
                            .or_default()
                            .insert(PEOPLE[person].to_owned(), name_of(person));
                    } else if let Some(p) = c.reactions.get_mut(&e) {
                        p.remove(PEOPLE[person]);
                        if p.is_empty() {
                            c.reactions.remove(&e);
                        }
                    }
                }
            }
            Op::Sync { .. } => {}
        }
    }
    let mut expected: Vec<Comment> = model.into_values().collect();
    expected.sort_by(|a, b| (a.created_at_ms, &a.id).cmp(&(b.created_at_ms, &b.id)));
    prop_assert_eq!(doc.comments(), expected);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn comment_replicas_converge(
        n in 2usize..=3,
        migrated in 0u8..8,
        ops in prop::collection::vec(op_strategy(), 0..40),
        seeds in prop::collection::vec(any::<u64>(), 3),
    ) {
        let mut replicas = make_replicas(n, migrated);
        let model = run_ops(&mut replicas, &ops)?;
        let all: Vec<Vec<u8>> = replicas
            .iter_mut()
            .flat_map(|r| r.changes_since(&[]))
            .collect();

        for (i, doc) in replicas.iter_mut().enumerate() {
            deliver(doc, &all, seeds[i]);
        }

        // Reference: a fresh replica that merges everyone.
        let mut reference = WorkspaceDoc::new(ActorId([9; 16]));
        for doc in replicas.iter_mut() {
            reference.merge(doc).unwrap();
        }
        let expected = snapshot(&mut reference);
        check_final(&model, &expected.0)?;
        for doc in replicas.iter_mut() {
            prop_assert_eq!(&snapshot(doc), &expected);
            prop_assert_eq!(doc.schema_version(), Some(SCHEMA_VERSION));
        }

        // Persistence preserves the converged state.
        let bytes = replicas[0].save();
        let mut loaded = WorkspaceDoc::load(&bytes, ActorId([8; 16])).unwrap();
        prop_assert_eq!(&snapshot(&mut loaded), &expected);
    }

    /// Every comment change delivered twice, in any order and in partial
    /// batches (some queued for missing dependencies), equals once.
    #[test]
    fn comment_changes_are_idempotent(
        n in 2usize..=3,
        ops in prop::collection::vec(op_strategy(), 0..30),
        seed in any::<u64>(),
    ) {
        let mut replicas = make_replicas(n, 0);
        run_ops(&mut replicas, &ops)?;
        let all: Vec<Vec<u8>> = replicas
            .iter_mut()
            .flat_map(|r| r.changes_since(&[]))
            .collect();
        let mut rng = Rng(seed);
        let mut subset = all.clone();
        rng.shuffle(&mut subset);
        subset.truncate(rng.below(all.len() + 1));

        let mut once = WorkspaceDoc::new(ActorId([7; 16]));
        once.apply_changes(&subset).unwrap();
        let mut twice = WorkspaceDoc::new(ActorId([7; 16]));
        twice.apply_changes(&subset).unwrap();
        twice.apply_changes(&subset).unwrap();
        prop_assert_eq!(snapshot(&mut twice), snapshot(&mut once));
    }

    /// A single replica behaves like a plain in-memory model.
    #[test]
    fn comments_single_replica_matches_model(
        ops in prop::collection::vec(op_strategy(), 0..40),
    ) {
        check_single_replica(&ops)?;
    }
}
