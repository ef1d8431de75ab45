//! The one versioned home of AgentOS's local wire protocols.
//!
//! Two conversations use it, both over Unix sockets:
//! - **client ⇄ daemon** ([`Request`], [`Response`], [`ClientFrame`], [`ServerFrame`]);
//! - **daemon ⇄ PTY holder** ([`HolderCmd`], [`HolderEvent`]);
//! - **device ⇄ device and device ⇄ relay** over libp2p ([`peer`]);
//! - **web client ⇄ node** over WebSocket, protocol v3 ([`ws`]): JSON control
//!   messages and binary terminal frames.
//!
//! Every connection opens with a fixed 8-byte hello (`b"AGOS"` + `u32` BE version,
//! or `b"AGSH"` for a holder) that never changes shape, so a peer speaking
//! another version gets a clear [`ErrorCode::ProtocolMismatch`] instead of garbage.
//! After the hello, every message is a frame: a `u32` big-endian length followed
//! by a bincode 2 (serde, standard config) payload of at most [`MAX_FRAME`] bytes.

mod errors;
pub mod memory;
mod messages;
pub mod peer;
pub mod ws;

pub use errors::{ErrorCode, ErrorInfo};
pub use messages::*;

use serde::{Serialize, de::DeserializeOwned};
use std::io::{Read, Write};

/// Version of the client ⇄ daemon and daemon ⇄ holder protocols. Bump on any
/// change to the message enums below.
pub const PROTOCOL_VERSION: u32 = 5;
/// Hello magic for a CLI (or any) client talking to the daemon.
pub const CLIENT_MAGIC: [u8; 4] = *b"AGOS";
/// Hello magic for the daemon talking to a PTY holder.
pub const HOLDER_MAGIC: [u8; 4] = *b"AGSH";
/// Largest payload we accept in one frame. Bigger claims are malformed input.
pub const MAX_FRAME: usize = 16 * 1024 * 1024;

/// Errors while reading or writing frames.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("connection closed")]
    Closed,
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    #[error("frame of {0} bytes exceeds the {MAX_FRAME}-byte limit")]
    TooLarge(usize),
    #[error("malformed frame: {0}")]
    Decode(String),
    #[error("could not encode frame: {0}")]
    Encode(String),
    #[error("bad hello: expected magic {expected:?}, got {got:?}")]
    BadMagic { expected: [u8; 4], got: [u8; 4] },
    #[error("protocol version mismatch: this side speaks v{ours}, the peer speaks v{theirs}")]
    Version { ours: u32, theirs: u32 },
}

impl WireError {
    /// Map a wire error onto the user-facing error table.
    pub fn to_info(&self) -> ErrorInfo {
        match self {
            WireError::Version { ours, theirs } => ErrorInfo::new(
                ErrorCode::ProtocolMismatch,
                format!("protocol mismatch: client v{ours}, daemon v{theirs}"),
            ),
            WireError::Closed | WireError::Io(_) => {
                ErrorInfo::new(ErrorCode::DaemonUnavailable, self.to_string())
            }
            _ => ErrorInfo::new(ErrorCode::BadFrame, self.to_string()),
        }
    }
}

fn config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<MAX_FRAME>()
}

/// Encode `msg` as one length-prefixed frame.
pub fn encode_frame<T: Serialize>(msg: &T) -> Result<Vec<u8>, WireError> {
    let mut out = vec![0u8; 4];
    bincode::serde::encode_into_std_write(msg, &mut out, config())
        .map_err(|e| WireError::Encode(e.to_string()))?;
    let len = out.len() - 4;
    if len > MAX_FRAME {
        return Err(WireError::TooLarge(len));
    }
    out[..4].copy_from_slice(&(len as u32).to_be_bytes());
    Ok(out)
}

/// Decode one frame payload (without its length prefix).
pub fn decode_payload<T: DeserializeOwned>(payload: &[u8]) -> Result<T, WireError> {
    let (msg, used) = bincode::serde::decode_from_slice(payload, config())
        .map_err(|e| WireError::Decode(e.to_string()))?;
    if used != payload.len() {
        return Err(WireError::Decode(format!(
            "{} trailing bytes after message",
            payload.len() - used
        )));
    }
    Ok(msg)
}

fn check_len(len: u32) -> Result<usize, WireError> {
    let len = len as usize;
    if len > MAX_FRAME {
        return Err(WireError::TooLarge(len));
    }
    Ok(len)
}

/// Blocking: write one frame.
pub fn write_frame<T: Serialize>(w: &mut impl Write, msg: &T) -> Result<(), WireError> {
    w.write_all(&encode_frame(msg)?)?;
    Ok(())
}

/// Blocking: read one frame. `Err(Closed)` on a clean EOF before the prefix.
pub fn read_frame<T: DeserializeOwned>(r: &mut impl Read) -> Result<T, WireError> {
    let mut len = [0u8; 4];
    if let Err(e) = r.read_exact(&mut len) {
        return Err(if e.kind() == std::io::ErrorKind::UnexpectedEof {
            WireError::Closed
        } else {
            WireError::Io(e)
        });
    }
    let len = check_len(u32::from_be_bytes(len))?;
    let mut buf = vec![0u8; len];
    r.read_exact(&mut buf)?;
    decode_payload(&buf)
}

/// Async: write one frame.
pub async fn write_frame_async<T: Serialize, W: tokio::io::AsyncWrite + Unpin>(
    w: &mut W,
    msg: &T,
) -> Result<(), WireError> {
    use tokio::io::AsyncWriteExt;
    w.write_all(&encode_frame(msg)?).await?;
    Ok(())
}

/// Async: read one frame. `Err(Closed)` on a clean EOF before the prefix.
pub async fn read_frame_async<T: DeserializeOwned, R: tokio::io::AsyncRead + Unpin>(
    r: &mut R,
) -> Result<T, WireError> {
    use tokio::io::AsyncReadExt;
    let mut len = [0u8; 4];
    if let Err(e) = r.read_exact(&mut len).await {
        return Err(if e.kind() == std::io::ErrorKind::UnexpectedEof {
            WireError::Closed
        } else {
            WireError::Io(e)
        });
    }
    let len = check_len(u32::from_be_bytes(len))?;
    let mut buf = vec![0u8; len];
    r.read_exact(&mut buf).await?;
    decode_payload(&buf)
}

/// The fixed-shape hello: magic + version. Both sides send one.
pub fn hello_bytes(magic: [u8; 4], version: u32) -> [u8; 8] {
    let mut b = [0u8; 8];
    b[..4].copy_from_slice(&magic);
    b[4..].copy_from_slice(&version.to_be_bytes());
    b
}

/// Check a received hello against what we expect.
pub fn check_hello(magic: [u8; 4], got: [u8; 8]) -> Result<(), WireError> {
    let mut m = [0u8; 4];
    m.copy_from_slice(&got[..4]);
    if m != magic {
        return Err(WireError::BadMagic {
            expected: magic,
            got: m,
        });
    }
    let theirs = u32::from_be_bytes([got[4], got[5], got[6], got[7]]);
    if theirs != PROTOCOL_VERSION {
        return Err(WireError::Version {
            ours: PROTOCOL_VERSION,
            theirs,
        });
    }
    Ok(())
}

/// Blocking client side of the hello: send ours, read theirs.
pub fn handshake_blocking<S: Read + Write>(s: &mut S, magic: [u8; 4]) -> Result<(), WireError> {
    s.write_all(&hello_bytes(magic, PROTOCOL_VERSION))?;
    let mut got = [0u8; 8];
    s.read_exact(&mut got).map_err(|e| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            WireError::Closed
        } else {
            WireError::Io(e)
        }
    })?;
    check_hello(magic, got)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn request_round_trip() {
        let req = ClientFrame::Request(Request::Send {
            name: "a".into(),
            text: "hi".into(),
            enter: true,
            from_agent: None,
        });
        let bytes = encode_frame(&req).unwrap();
        let back: ClientFrame = read_frame(&mut &bytes[..]).unwrap();
        assert_eq!(back, req);
    }

    #[test]
    fn oversized_length_is_rejected_before_allocating() {
        let mut bytes = (u32::MAX).to_be_bytes().to_vec();
        bytes.extend_from_slice(&[0; 16]);
        let err = read_frame::<ClientFrame>(&mut &bytes[..]).unwrap_err();
        assert!(matches!(err, WireError::TooLarge(_)), "{err}");
    }

    #[test]
    fn version_mismatch_is_named() {
        let err = check_hello(CLIENT_MAGIC, hello_bytes(CLIENT_MAGIC, 99)).unwrap_err();
        assert!(matches!(err, WireError::Version { theirs: 99, .. }));
        assert_eq!(err.to_info().code, ErrorCode::ProtocolMismatch);
        let err = check_hello(CLIENT_MAGIC, hello_bytes(HOLDER_MAGIC, 1)).unwrap_err();
        assert!(matches!(err, WireError::BadMagic { .. }));
    }

    proptest! {
        #[test]
        fn garbage_never_panics(data in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode_payload::<ClientFrame>(&data);
            let _ = decode_payload::<ServerFrame>(&data);
            let _ = decode_payload::<HolderCmd>(&data);
            let _ = decode_payload::<HolderEvent>(&data);
        }

        #[test]
        fn holder_events_round_trip(seq in any::<u64>(), data in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let ev = HolderEvent::Output { seq, data };
            let bytes = encode_frame(&ev).unwrap();
            let back: HolderEvent = read_frame(&mut &bytes[..]).unwrap();
            prop_assert_eq!(back, ev);
        }
    }
}
