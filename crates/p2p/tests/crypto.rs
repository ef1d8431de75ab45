//! The envelope, key wrapping and roster state machines: unit and property
//! tests (tampering, replay, rotation, removal).

use agentos_p2p::DeviceIdentity;
use agentos_p2p::roster::{Roster, RosterError};
use agentos_p2p::seal::{Envelope, EpochKey, ReplayGuard, SealError, open, unwrap, wrap};
use proptest::prelude::*;
use std::collections::{BTreeMap, BTreeSet};

fn dev(n: u8) -> DeviceIdentity {
    DeviceIdentity::from_seed([n; 32])
}

#[test]
fn the_x25519_key_matches_the_ed25519_key() {
    let d = dev(1);
    let from_secret = x25519_dalek::PublicKey::from(&d.x25519_secret()).to_bytes();
    let from_public = agentos_p2p::identity::x25519_public(&d.public_key())
        .unwrap()
        .to_bytes();
    assert_eq!(from_secret, from_public);
}

#[test]
fn a_wrapped_key_opens_only_for_its_device() {
    let k = EpochKey::random();
    let w = wrap(&k, 3, &dev(1).public_key()).unwrap();
    assert_eq!(unwrap(&w, 3, &dev(1)), Some(k.clone()));
    assert_eq!(unwrap(&w, 3, &dev(2)), None);
    assert_eq!(unwrap(&w, 4, &dev(1)), None, "the epoch is bound");
}

type Authors = BTreeMap<u64, BTreeSet<[u8; 32]>>;

fn setup() -> (DeviceIdentity, Authors, BTreeMap<u64, EpochKey>) {
    let a = dev(1);
    let mut keys = BTreeMap::new();
    keys.insert(0, EpochKey([7; 32]));
    let members: Authors = [(0, [a.public_key()].into())].into();
    (a, members, keys)
}

#[test]
fn seal_open_and_replay() {
    let (a, members, keys) = setup();
    let env = Envelope::seal(&a, "ws", 0, &keys[&0], 1, 0, b"hello").to_bytes();
    let mut guard = ReplayGuard::default();
    let (h, plain) = open(&env, "ws", &members, &keys, &mut guard).unwrap();
    assert_eq!(plain, b"hello");
    assert_eq!(h.seq, 1);
    assert_eq!(
        open(&env, "ws", &members, &keys, &mut guard).unwrap_err(),
        SealError::Replay(1)
    );
    assert_eq!(
        open(&env, "other", &members, &keys, &mut ReplayGuard::default()).unwrap_err(),
        SealError::WrongWorkspace
    );
    let stranger = dev(9);
    let forged = Envelope::seal(&stranger, "ws", 0, &keys[&0], 1, 0, b"x").to_bytes();
    assert_eq!(
        open(&forged, "ws", &members, &keys, &mut ReplayGuard::default()).unwrap_err(),
        SealError::NotMember
    );
    assert!(matches!(
        open(&vec![0u8; 70_000], "ws", &members, &keys, &mut guard),
        Err(SealError::TooLarge(_))
    ));
    assert!(matches!(
        open(b"garbage", "ws", &members, &keys, &mut guard),
        Err(SealError::Malformed(_))
    ));
}

#[test]
fn a_changed_header_fails_the_signature_and_the_aead() {
    let (a, members, keys) = setup();
    let mut env = Envelope::seal(&a, "ws", 0, &keys[&0], 5, 0, b"payload");
    env.header.seq = 6; // the AAD changed
    assert_eq!(
        open(
            &env.to_bytes(),
            "ws",
            &members,
            &keys,
            &mut ReplayGuard::default()
        )
        .unwrap_err(),
        SealError::BadSignature
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Any single bit flipped anywhere in an encoded envelope is rejected.
    #[test]
    fn any_bit_flip_is_rejected(payload in proptest::collection::vec(any::<u8>(), 0..300), bit in any::<usize>()) {
        let (a, members, keys) = setup();
        let mut bytes = Envelope::seal(&a, "ws", 0, &keys[&0], 1, 0, &payload).to_bytes();
        let i = bit % (bytes.len() * 8);
        bytes[i / 8] ^= 1 << (i % 8);
        let r = open(&bytes, "ws", &members, &keys, &mut ReplayGuard::default());
        prop_assert!(r.is_err(), "flip of bit {} accepted", i);
    }

    /// Reordered delivery is accepted once each; duplicates never.
    #[test]
    fn replay_guard_accepts_each_seq_once(seqs in proptest::collection::vec(0u64..500, 1..200)) {
        let mut g = ReplayGuard::default();
        let mut seen = BTreeSet::new();
        for s in seqs {
            prop_assert_eq!(g.accept([1; 32], s), seen.insert(s));
        }
    }

    /// Devices that replay the same log agree; removed devices lose access
    /// to every later epoch, remaining ones keep it.
    #[test]
    fn rotation_converges_and_removal_locks_out(ops in proptest::collection::vec((0u8..4, 2u8..6), 1..12)) {
        let owner = dev(1);
        let mut r = Roster::create(&owner, "owner");
        let mut present: BTreeSet<u8> = BTreeSet::new();
        let mut removed_at: BTreeMap<u8, u64> = BTreeMap::new();
        for (op, d) in ops {
            let device = dev(d);
            if op < 2 {
                if !present.contains(&d) && !removed_at.contains_key(&d) {
                    r.add(&owner, device.public_key(), &format!("d{d}")).unwrap();
                    present.insert(d);
                }
            } else if present.remove(&d) {
                r.remove(&owner, device.public_key()).unwrap();
                removed_at.insert(d, r.epoch());
            }
        }
        // Every member replays the log to the same head, epoch and key.
        for d in present.iter().copied().chain([1]) {
            let me = dev(d);
            let view = Roster::replay(r.entries(), Some(&me)).unwrap();
            prop_assert_eq!(view.head(), r.head());
            prop_assert_eq!(view.epoch(), r.epoch());
            prop_assert_eq!(view.current_key(), r.current_key());
        }
        // A removed device holds no key from its removal's epoch on.
        for (d, epoch) in removed_at {
            let view = Roster::replay(r.entries(), Some(&dev(d))).unwrap();
            prop_assert!(view.keys().keys().all(|e| *e < epoch));
            let env = Envelope::seal(&owner, "ws", r.epoch(), r.current_key().unwrap(), 1, 0, b"after").to_bytes();
            let res = open(&env, "ws", r.authors_by_epoch(), view.keys(), &mut ReplayGuard::default());
            prop_assert!(res.is_err());
        }
    }
}

#[test]
fn a_tampered_or_foreign_roster_entry_is_refused() {
    let owner = dev(1);
    let mut r = Roster::create(&owner, "owner");
    r.add(&owner, dev(2).public_key(), "laptop").unwrap();
    let mut entries = r.entries().to_vec();
    // A stranger cannot append.
    let mut other = Roster::replay(&entries[..1], None).unwrap();
    let stranger = dev(9);
    assert!(matches!(
        other.add(&stranger, dev(3).public_key(), "x"),
        Err(RosterError::Invalid(..) | RosterError::NotMember(_))
    ));
    // A changed entry breaks its signature; a reordered one its link.
    if let agentos_p2p::roster::Op::Add { name, .. } = &mut entries[1].op {
        *name = "evil".into();
    }
    assert_eq!(
        Roster::replay(&entries, None).unwrap_err(),
        RosterError::BadSignature(1)
    );
    let mut e2 = r.entries()[1].clone();
    e2.seq = 5;
    let mut g = Roster::replay(&r.entries()[..1], None).unwrap();
    assert!(matches!(
        g.apply(e2, None),
        Err(RosterError::OutOfOrder { .. })
    ));
}

#[test]
fn a_roster_extends_from_a_longer_log_but_never_merges_a_fork() {
    let (a, b, c) = (dev(1), dev(2), dev(3));
    let mut on_a = Roster::create(&a, "a");
    on_a.add(&a, b.public_key(), "b").unwrap();
    let mut on_b = Roster::replay(on_a.entries(), Some(&b)).unwrap();
    // A adds C; B learns it from A's log (and ignores a prefix of its own).
    on_a.add(&a, c.public_key(), "c").unwrap();
    assert_eq!(on_b.extend_from(&on_a.entries()[..2], Some(&b)), Ok(false));
    assert_eq!(on_b.extend_from(on_a.entries(), Some(&b)), Ok(true));
    assert_eq!(on_b.head(), on_a.head());
    assert!(on_b.members().contains(&c.public_key()));
    // A removes C (rotation); B follows and holds the new key, C's own copy cannot.
    on_a.remove(&a, c.public_key()).unwrap();
    let on_c_before = Roster::replay(&on_a.entries()[..3], Some(&c)).unwrap();
    on_b.extend_from(on_a.entries(), Some(&b)).unwrap();
    assert_eq!(on_b.epoch(), 1);
    assert!(on_b.current_key().is_some());
    let mut on_c = on_c_before.clone();
    on_c.extend_from(on_a.entries(), Some(&c)).unwrap();
    assert!(
        on_c.current_key().is_none(),
        "the removed device has no new key"
    );
    // Two devices that each appended something have forked: refused, unchanged.
    let mut fork_a = on_a.clone();
    let mut fork_b = on_b.clone();
    fork_a.add(&a, dev(4).public_key(), "d").unwrap();
    fork_b.add(&b, dev(5).public_key(), "e").unwrap();
    let head = fork_b.head();
    assert!(fork_b.extend_from(fork_a.entries(), Some(&b)).is_err());
    assert_eq!(fork_b.head(), head);
    // A log that is not even this group's genesis is refused.
    let stranger = Roster::create(&dev(9), "x");
    assert!(
        on_b.clone()
            .extend_from(stranger.entries(), Some(&b))
            .is_err()
    );
}
