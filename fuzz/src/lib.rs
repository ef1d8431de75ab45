//! The bodies of the fuzz targets, shared by `cargo fuzz` (nightly,
//! libFuzzer: `fuzz_targets/*.rs`) and by the stable smoke test
//! `crates/proto/tests/fuzz_corpus.rs`, which includes this file as a
//! module. It depends on `agentos_proto` and `serde_json` only.
//!
//! Each body panics (a crash, for libFuzzer) when a decoder breaks one of
//! its promises:
//! - [`ws_frame`]: `decode_frame` never panics; a frame it accepts
//!   re-encodes (`encode_output` / `encode_snapshot` / `encode_input`) to
//!   exactly the input; a refusal names the right reason.
//! - [`ws_control`]: `decode_client` / `decode_server` never panic; a
//!   message they accept survives a JSON round trip unchanged.

use agentos_proto::ws::{
    self, ClientMsg, ControlError, Frame, FrameError, FrameType, HEADER, MAX_CONTROL, MAX_INPUT,
    MAX_PAYLOAD,
};

/// `decode_frame` on arbitrary bytes, and the re-encode round trip.
pub fn ws_frame(data: &[u8]) {
    match ws::decode_frame(data) {
        Ok(frame) => {
            let again = match frame {
                Frame::Output { channel, seq, data } => {
                    assert!(
                        data.len() + 8 <= MAX_PAYLOAD,
                        "output payload over the limit"
                    );
                    ws::encode_output(channel, seq, data)
                }
                Frame::Snapshot {
                    channel,
                    seq,
                    cols,
                    rows,
                    first_line,
                    data,
                } => {
                    assert!(
                        data.len() + 20 <= MAX_PAYLOAD,
                        "snapshot payload over the limit"
                    );
                    ws::encode_snapshot(channel, seq, cols, rows, first_line, data)
                }
                Frame::Input { channel, data } => {
                    assert!(data.len() <= MAX_INPUT, "input over MAX_INPUT accepted");
                    ws::encode_input(channel, data)
                }
            };
            assert_eq!(again, data, "re-encoding {frame:?} differs from its input");
        }
        Err(e) => check_refusal(data, &e),
    }
}

/// A refusal must give the reason that applies to `data`, checked against
/// the header read here independently of the decoder.
fn check_refusal(data: &[u8], e: &FrameError) {
    // The message must render (it goes into an error reply).
    let _ = e.to_string();
    if data.len() < HEADER {
        assert_eq!(*e, FrameError::Short(data.len()));
        return;
    }
    let Some(ty) = FrameType::from_u8(data[0]) else {
        assert_eq!(*e, FrameError::UnknownType(data[0]));
        return;
    };
    let claimed = u32::from_be_bytes([data[2], data[3], data[4], data[5]]) as usize;
    let actual = data.len() - HEADER;
    let expected = if claimed > MAX_PAYLOAD {
        FrameError::TooLarge(claimed)
    } else if claimed != actual {
        FrameError::LengthMismatch { claimed, actual }
    } else {
        match ty {
            FrameType::Output if actual < 8 => FrameError::Truncated("output"),
            FrameType::Snapshot if actual < 20 => FrameError::Truncated("snapshot"),
            FrameType::Input if actual > MAX_INPUT => FrameError::TooLarge(actual),
            _ => panic!("{ty:?} frame of {} bytes refused: {e}", data.len()),
        }
    };
    assert_eq!(*e, expected, "wrong refusal for a {ty:?} frame");
}

/// The text a fuzz input stands for: itself when it is UTF-8, else its
/// lossy decoding (so that no input is wasted).
fn text_of(data: &[u8]) -> std::borrow::Cow<'_, str> {
    String::from_utf8_lossy(data)
}

/// `decode_client` and `decode_server` on arbitrary text, and the JSON
/// round trip of what they accept.
pub fn ws_control(data: &[u8]) {
    let text = text_of(data);
    match ws::decode_client(&text) {
        Ok(m) => {
            assert!(
                text.len() <= MAX_CONTROL,
                "oversized control message accepted"
            );
            let json = serde_json::to_string(&m).expect("a ClientMsg always serialises");
            let back: ClientMsg = serde_json::from_str(&json)
                .unwrap_or_else(|e| panic!("{m:?} re-encoded as {json} does not decode: {e}"));
            assert_eq!(
                back, m,
                "client message changed in a round trip through {json}"
            );
            // `kind` is the `type` tag it was decoded from.
            let v: serde_json::Value = serde_json::from_str(&json).expect("valid JSON");
            assert_eq!(
                v["type"].as_str(),
                Some(m.kind()),
                "kind() differs from the tag"
            );
        }
        Err(ControlError::TooLarge(n)) => assert!(n > MAX_CONTROL && n == text.len()),
        Err(e) => {
            let _ = e.to_string();
        }
    }
    match ws::decode_server(&text) {
        Ok(m) => {
            let json = m.to_json();
            let back = ws::decode_server(&json)
                .unwrap_or_else(|e| panic!("{m:?} re-encoded as {json} does not decode: {e}"));
            assert_eq!(
                back, m,
                "server message changed in a round trip through {json}"
            );
        }
        Err(ControlError::TooLarge(n)) => assert!(n > 4 * MAX_PAYLOAD && n == text.len()),
        Err(e) => {
            let _ = e.to_string();
        }
    }
}
