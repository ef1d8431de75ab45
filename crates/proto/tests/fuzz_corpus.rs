//! The fuzz targets of `fuzz/` (cargo-fuzz, nightly) on the stable
//! toolchain, so that CI exercises the WebSocket v3 decoders without
//! libFuzzer: the very same bodies (`fuzz/src/lib.rs`, included below) run
//! over the saved corpus (`fuzz/corpus/<target>/`: the seeds, plus whatever
//! a local `cargo fuzz run` added) and over a few thousand proptest inputs:
//! random bytes, valid frames and messages, and mutations of both.

#[path = "../../../fuzz/src/lib.rs"]
mod bodies;

use agentos_proto::ws::{self, Channel, HEADER};
use proptest::prelude::*;
use std::path::PathBuf;

/// Every file of `fuzz/corpus/<target>/` as (name, bytes), sorted by name.
fn corpus_files(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .map(|e| e.expect("a corpus entry").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
        .iter()
        .map(|p| {
            let name = p
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            let bytes =
                std::fs::read(p).unwrap_or_else(|e| panic!("cannot read {}: {e}", p.display()));
            (name, bytes)
        })
        .collect()
}

fn corpus(target: &str) -> Vec<Vec<u8>> {
    corpus_files(target).into_iter().map(|(_, b)| b).collect()
}

/// The seeds kept in git (`seed-*`; the rest is a local fuzzer's finds).
fn seeds(target: &str) -> Vec<(String, Vec<u8>)> {
    corpus_files(target)
        .into_iter()
        .filter(|(n, _)| n.starts_with("seed-"))
        .collect()
}

#[test]
fn ws_frame_corpus() {
    assert!(
        seeds("ws_frame").len() >= 10,
        "the ws_frame seeds are missing"
    );
    for input in corpus("ws_frame") {
        bodies::ws_frame(&input);
    }
}

#[test]
fn ws_control_corpus() {
    for input in corpus("ws_control") {
        bodies::ws_control(&input);
    }
    // Every seed but the refusals (`seed-bad-*`) is a valid message: the
    // seeds must follow the protocol, or they stop reaching the decoders'
    // deep paths.
    let seeds = seeds("ws_control");
    assert!(seeds.len() >= 30, "the ws_control seeds are missing");
    for (name, input) in &seeds {
        let t = String::from_utf8_lossy(input);
        let ok = ws::decode_client(&t).is_ok() || ws::decode_server(&t).is_ok();
        assert_eq!(ok, !name.starts_with("seed-bad-"), "seed {name}");
    }
}

/// One mutation of a byte string: flip, set, insert, remove, truncate or
/// splice in a length field.
#[derive(Debug, Clone)]
enum Mutation {
    Flip(usize, u8),
    Set(usize, u8),
    Insert(usize, Vec<u8>),
    Remove(usize, usize),
    Truncate(usize),
    Length(u32),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 1..=255u8).prop_map(|(i, b)| Mutation::Flip(i, b)),
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Set(i, b)),
        (any::<usize>(), proptest::collection::vec(any::<u8>(), 1..8))
            .prop_map(|(i, v)| Mutation::Insert(i, v)),
        (any::<usize>(), 1..8usize).prop_map(|(i, n)| Mutation::Remove(i, n)),
        any::<usize>().prop_map(Mutation::Truncate),
        prop_oneof![any::<u32>(), 0..64u32].prop_map(Mutation::Length),
    ]
}

fn apply(mut v: Vec<u8>, muts: &[Mutation]) -> Vec<u8> {
    for m in muts {
        let at = |i: usize, len: usize| if len == 0 { 0 } else { i % len };
        match m {
            Mutation::Flip(i, b) if !v.is_empty() => {
                let i = at(*i, v.len());
                v[i] ^= b;
            }
            Mutation::Set(i, b) if !v.is_empty() => {
                let i = at(*i, v.len());
                v[i] = *b;
            }
            Mutation::Insert(i, bytes) => {
                let i = at(*i, v.len() + 1);
                v.splice(i..i, bytes.iter().copied());
            }
            Mutation::Remove(i, n) if !v.is_empty() => {
                let i = at(*i, v.len());
                let end = (i + n).min(v.len());
                v.drain(i..end);
            }
            Mutation::Truncate(i) => {
                let i = at(*i, v.len() + 1);
                v.truncate(i);
            }
            Mutation::Length(n) if v.len() >= HEADER => {
                v[2..6].copy_from_slice(&n.to_be_bytes());
            }
            _ => {}
        }
    }
    v
}

/// A valid frame of any type.
fn frame() -> impl Strategy<Value = Vec<u8>> {
    let data = || proptest::collection::vec(any::<u8>(), 0..300);
    prop_oneof![
        (any::<u8>(), any::<u64>(), data()).prop_map(|(c, s, d)| ws::encode_output(
            Channel(c),
            s,
            &d
        )),
        (
            any::<u8>(),
            any::<u64>(),
            any::<u16>(),
            any::<u16>(),
            any::<u64>(),
            data()
        )
            .prop_map(|(c, s, w, h, l, d)| ws::encode_snapshot(Channel(c), s, w, h, l, &d)),
        (any::<u8>(), data()).prop_map(|(c, d)| ws::encode_input(Channel(c), &d)),
    ]
}

/// Text that is often valid JSON of the protocol: a seed, unchanged or
/// mutated as bytes (then read as lossy UTF-8 by the body).
fn control_input() -> impl Strategy<Value = Vec<u8>> {
    let seeds: Vec<Vec<u8>> = seeds("ws_control").into_iter().map(|(_, b)| b).collect();
    (
        proptest::sample::select(seeds),
        proptest::collection::vec(mutation(), 0..4),
    )
        .prop_map(|(s, m)| apply(s, &m))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3000, ..ProptestConfig::default() })]

    #[test]
    fn ws_frame_random_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..80)) {
        bodies::ws_frame(&bytes);
    }

    /// Valid frames, then 0–3 mutations: most stay near the accepting
    /// paths (right type, plausible length) where a random string never is.
    #[test]
    fn ws_frame_mutated(f in frame(), muts in proptest::collection::vec(mutation(), 0..4)) {
        bodies::ws_frame(&f);
        bodies::ws_frame(&apply(f, &muts));
    }

    #[test]
    fn ws_control_random_text(s in "\\PC{0,80}") {
        bodies::ws_control(s.as_bytes());
    }

    #[test]
    fn ws_control_mutated(input in control_input()) {
        bodies::ws_control(&input);
    }

    /// JSON-shaped text: a `type` from the protocol with random fields.
    #[test]
    fn ws_control_json_shaped(
        ty in proptest::sample::select(vec![
            "auth", "terminal_subscribe", "terminal_resize", "comment_add", "comment_react",
            "permission_change", "ping", "auth_ok", "session_state", "terminal_subscribed",
            "input_by", "error", "closed",
        ]),
        fields in proptest::collection::vec(
            (
                proptest::sample::select(vec![
                    "agent", "since", "cols", "rows", "line", "text", "token", "target",
                    "person", "permission", "id", "emoji", "on", "channel", "reason", "by",
                ]),
                prop_oneof![
                    proptest::sample::select(vec![
                        "\"a\"", "0", "18446744073709551615", "18446744073709551616", "-1",
                        "65536", "true", "null", "\"edit\"", "{}", "[]",
                    ])
                    .prop_map(str::to_string),
                    "\"\\PC{0,12}\"",
                ],
            ),
            0..5,
        ),
    ) {
        let body: Vec<String> = fields.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
        let text = if body.is_empty() {
            format!("{{\"type\":\"{ty}\"}}")
        } else {
            format!("{{\"type\":\"{ty}\",{}}}", body.join(","))
        };
        bodies::ws_control(text.as_bytes());
    }
}
