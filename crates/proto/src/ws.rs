//! WebSocket protocol v3: what the node's web server and its clients (the
//! browser client in `web/`, `agentos join`) say to each other.
//!
//! One WebSocket carries two kinds of message:
//! - **control** messages as JSON text, `{"type": "...", ...}`
//!   ([`ClientMsg`] from the client, [`ServerMsg`] from the node), at most
//!   [`MAX_CONTROL`] bytes;
//! - **terminal** frames as binary messages, `[type u8][agent u8][len u32 BE][payload]`
//!   ([`Frame`]), one frame per message, at most [`MAX_PAYLOAD`] bytes of payload.
//!
//! The `agent` byte is a channel number the node assigns per connection when
//! the client subscribes to an agent's terminal (`terminal_subscribed`).
//!
//! The first message a client sends must be `auth`. Everything in this file
//! is pure: decoding never panics on any input (fuzzed in `fuzz/`).

use serde::{Deserialize, Serialize};

/// Version of this protocol, sent in `auth_ok`. Bump on any change below.
pub const WS_VERSION: u32 = 3;
/// Largest JSON control message accepted (bytes).
pub const MAX_CONTROL: usize = 64 * 1024;
/// Largest payload of one binary frame (bytes).
pub const MAX_PAYLOAD: usize = 1024 * 1024;
/// Largest input frame from a client (bytes): a paste, not a file.
pub const MAX_INPUT: usize = 64 * 1024;
/// Length of the binary frame header.
pub const HEADER: usize = 6;

/// Binary frame types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum FrameType {
    /// Node → client: terminal output. Payload: `[seq u64 BE][bytes]`, where
    /// `seq` is the sequence number (output-log offset) of the first byte.
    Output = 1,
    /// Node → client: a late-join or resync paint. Payload:
    /// `[seq u64 BE][cols u16 BE][rows u16 BE][first_line u64 BE][bytes]`.
    /// Writing `bytes` to a reset terminal of `cols`×`rows` shows recent
    /// scrollback (logical line `first_line` first, 1-based) followed by the
    /// current screen; the next output byte has sequence number `seq`.
    Snapshot = 2,
    /// Client → node: keystrokes for the agent. Payload: the bytes.
    Input = 3,
}

impl FrameType {
    pub fn from_u8(b: u8) -> Option<FrameType> {
        match b {
            1 => Some(FrameType::Output),
            2 => Some(FrameType::Snapshot),
            3 => Some(FrameType::Input),
            _ => None,
        }
    }
}

/// A channel number for one agent on one connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Channel(pub u8);

/// Why a binary frame was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("frame of {0} bytes is shorter than its 6-byte header")]
    Short(usize),
    #[error("unknown frame type {0}")]
    UnknownType(u8),
    #[error("frame says {claimed} payload bytes but carries {actual}")]
    LengthMismatch { claimed: usize, actual: usize },
    #[error("payload of {0} bytes exceeds the limit")]
    TooLarge(usize),
    #[error("{0} payload is truncated")]
    Truncated(&'static str),
}

/// A decoded binary frame (borrowing its payload).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame<'a> {
    Output {
        channel: Channel,
        seq: u64,
        data: &'a [u8],
    },
    Snapshot {
        channel: Channel,
        seq: u64,
        cols: u16,
        rows: u16,
        first_line: u64,
        data: &'a [u8],
    },
    Input {
        channel: Channel,
        data: &'a [u8],
    },
}

fn header(out: &mut Vec<u8>, ty: FrameType, channel: Channel, len: usize) {
    out.push(ty as u8);
    out.push(channel.0);
    out.extend_from_slice(&(len as u32).to_be_bytes());
}

/// Encode an output frame. Called once per output chunk, whatever the
/// number of viewers: the result is shared.
pub fn encode_output(channel: Channel, seq: u64, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER + 8 + data.len());
    header(&mut out, FrameType::Output, channel, 8 + data.len());
    out.extend_from_slice(&seq.to_be_bytes());
    out.extend_from_slice(data);
    out
}

/// Encode a snapshot frame.
pub fn encode_snapshot(
    channel: Channel,
    seq: u64,
    cols: u16,
    rows: u16,
    first_line: u64,
    data: &[u8],
) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER + 20 + data.len());
    header(&mut out, FrameType::Snapshot, channel, 20 + data.len());
    out.extend_from_slice(&seq.to_be_bytes());
    out.extend_from_slice(&cols.to_be_bytes());
    out.extend_from_slice(&rows.to_be_bytes());
    out.extend_from_slice(&first_line.to_be_bytes());
    out.extend_from_slice(data);
    out
}

/// Encode an input frame (client side).
pub fn encode_input(channel: Channel, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER + data.len());
    header(&mut out, FrameType::Input, channel, data.len());
    out.extend_from_slice(data);
    out
}

fn be_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_be_bytes(a)
}

fn be_u16(b: &[u8]) -> u16 {
    u16::from_be_bytes([b[0], b[1]])
}

/// Decode one binary WebSocket message. Never panics.
pub fn decode_frame(msg: &[u8]) -> Result<Frame<'_>, FrameError> {
    if msg.len() < HEADER {
        return Err(FrameError::Short(msg.len()));
    }
    let ty = FrameType::from_u8(msg[0]).ok_or(FrameError::UnknownType(msg[0]))?;
    let channel = Channel(msg[1]);
    let claimed = u32::from_be_bytes([msg[2], msg[3], msg[4], msg[5]]) as usize;
    let payload = &msg[HEADER..];
    if claimed > MAX_PAYLOAD {
        return Err(FrameError::TooLarge(claimed));
    }
    if claimed != payload.len() {
        return Err(FrameError::LengthMismatch {
            claimed,
            actual: payload.len(),
        });
    }
    match ty {
        FrameType::Output => {
            if payload.len() < 8 {
                return Err(FrameError::Truncated("output"));
            }
            Ok(Frame::Output {
                channel,
                seq: be_u64(payload),
                data: &payload[8..],
            })
        }
        FrameType::Snapshot => {
            if payload.len() < 20 {
                return Err(FrameError::Truncated("snapshot"));
            }
            Ok(Frame::Snapshot {
                channel,
                seq: be_u64(payload),
                cols: be_u16(&payload[8..]),
                rows: be_u16(&payload[10..]),
                first_line: be_u64(&payload[12..]),
                data: &payload[20..],
            })
        }
        FrameType::Input => {
            if payload.len() > MAX_INPUT {
                return Err(FrameError::TooLarge(payload.len()));
            }
            Ok(Frame::Input {
                channel,
                data: payload,
            })
        }
    }
}

/// A participant's rights in a shared session. Ordered: each level holds
/// every right of the levels below it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Permission {
    View,
    Comment,
    Edit,
    Owner,
}

impl Permission {
    pub fn as_str(self) -> &'static str {
        match self {
            Permission::View => "view",
            Permission::Comment => "comment",
            Permission::Edit => "edit",
            Permission::Owner => "owner",
        }
    }

    pub fn parse(s: &str) -> Option<Permission> {
        match s {
            "view" => Some(Permission::View),
            "comment" => Some(Permission::Comment),
            "edit" => Some(Permission::Edit),
            "owner" => Some(Permission::Owner),
            _ => None,
        }
    }
}

impl std::fmt::Display for Permission {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A participant id: stable for one web session (cookie), across reconnects.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PersonId(pub String);

/// A comment id (`c-` + random base32).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct CommentId(pub String);

/// Client → node control messages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ClientMsg {
    /// Must be the first message. `token` is a share secret (from the link's
    /// `#fragment`) or an owner token; it may be omitted when the upgrade
    /// request carried a valid session cookie. `target` picks the session
    /// for an owner (`agent:<name>` or `session:<name>`); a share link's
    /// target is fixed by the link.
    Auth {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        token: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        target: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        device: Option<String>,
    },
    /// Stream an agent's terminal. Without `since` (or when `since` has left
    /// the buffer) the node sends a snapshot first; with it, exactly the
    /// bytes from `since` on.
    TerminalSubscribe {
        agent: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        since: Option<u64>,
    },
    TerminalUnsubscribe {
        agent: String,
    },
    /// Only the driver (the owner, or whoever holds control) resizes the PTY.
    TerminalResize {
        agent: String,
        cols: u16,
        rows: u16,
    },
    /// A heartbeat with what the person looks at; refreshes `last_seen`.
    PresenceUpdate {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        focus: Option<String>,
    },
    ControlRequest {},
    ControlGrant {
        person: PersonId,
    },
    ControlDeny {
        person: PersonId,
    },
    /// The owner takes control back from `person`; a holder may release
    /// its own control by naming itself.
    ControlRevoke {
        person: PersonId,
    },
    PermissionChange {
        person: PersonId,
        permission: Permission,
    },
    Kick {
        person: PersonId,
    },
    TransferOwnership {
        person: PersonId,
    },
    /// End the shared session: revoke its links and disconnect everyone.
    SessionDelete {},
    SessionLeave {},
    CommentAdd {
        agent: String,
        /// Absolute output line, 1-based, counted from the session start.
        line: u64,
        text: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        parent: Option<CommentId>,
    },
    CommentResolve {
        id: CommentId,
        resolved: bool,
    },
    CommentDelete {
        id: CommentId,
    },
    CommentReact {
        id: CommentId,
        emoji: String,
        on: bool,
    },
    /// Edit the workspace memory (edit level and up).
    MemoryEdit {
        op: crate::memory::MemoryOp,
    },
    /// Restart an agent that has exited.
    AgentStart {
        agent: String,
    },
    AgentStop {
        agent: String,
    },
    Ping {},
}

impl ClientMsg {
    /// The `type` tag, for errors and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            ClientMsg::Auth { .. } => "auth",
            ClientMsg::TerminalSubscribe { .. } => "terminal_subscribe",
            ClientMsg::TerminalUnsubscribe { .. } => "terminal_unsubscribe",
            ClientMsg::TerminalResize { .. } => "terminal_resize",
            ClientMsg::PresenceUpdate { .. } => "presence_update",
            ClientMsg::ControlRequest {} => "control_request",
            ClientMsg::ControlGrant { .. } => "control_grant",
            ClientMsg::ControlDeny { .. } => "control_deny",
            ClientMsg::ControlRevoke { .. } => "control_revoke",
            ClientMsg::PermissionChange { .. } => "permission_change",
            ClientMsg::Kick { .. } => "kick",
            ClientMsg::TransferOwnership { .. } => "transfer_ownership",
            ClientMsg::SessionDelete {} => "session_delete",
            ClientMsg::SessionLeave {} => "session_leave",
            ClientMsg::CommentAdd { .. } => "comment_add",
            ClientMsg::CommentResolve { .. } => "comment_resolve",
            ClientMsg::CommentDelete { .. } => "comment_delete",
            ClientMsg::CommentReact { .. } => "comment_react",
            ClientMsg::MemoryEdit { .. } => "memory_edit",
            ClientMsg::AgentStart { .. } => "agent_start",
            ClientMsg::AgentStop { .. } => "agent_stop",
            ClientMsg::Ping {} => "ping",
        }
    }
}

/// One person in a shared session, as everyone sees them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PersonView {
    pub id: PersonId,
    pub name: String,
    pub permission: Permission,
    /// `browser`, `cli`, or a device name.
    pub device: String,
    pub last_seen_ms: u64,
    pub connected: bool,
    /// Holds the floor (granted control).
    pub control: bool,
}

/// An agent in a shared session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentView {
    pub name: String,
    pub agent_type: String,
    /// `running`, `waiting`, `idle`, `exited`, …
    pub state: String,
}

/// Who sent an input: a person, or an agent (`agentos send` from a script
/// or another agent).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum InputSource {
    Person { id: PersonId, name: String },
    Agent { name: String },
}

/// A comment (or reply) anchored to an output line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommentView {
    pub id: CommentId,
    pub agent: String,
    /// Absolute output line, 1-based.
    pub line: u64,
    /// Hex SHA-256 (first 16 bytes) of the line's plain text when the
    /// comment was made: tells whether the anchor still shows that text.
    pub line_hash: String,
    /// The line's text when the comment was made (at most 200 chars).
    pub line_text: String,
    pub text: String,
    pub author: String,
    pub author_id: String,
    pub created_at_ms: u64,
    /// The comment this one replies to (`null` for a top-level comment;
    /// never skipped, because this type also travels in bincode).
    #[serde(default)]
    pub parent: Option<CommentId>,
    pub resolved: bool,
    pub deleted: bool,
    /// Emoji → names of the people who reacted, sorted.
    pub reactions: Vec<(String, Vec<String>)>,
}

/// Why the node closes a socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CloseReason {
    Revoked,
    Expired,
    Kicked,
    SessionDeleted,
    Left,
    ShuttingDown,
}

/// Close code after a refused `auth` (wrong, expired, used-up or revoked
/// link or cookie): the `error` before it says which.
pub const AUTH_FAILED: u16 = 4005;
/// Close code after a message over the size limit (RFC 6455 "message too
/// big"), preceded by an E007 `error`.
pub const TOO_BIG: u16 = 1009;

/// WebSocket close code the node uses for [`CloseReason`]s (4000–4999 are
/// for applications).
pub fn close_code(reason: CloseReason) -> u16 {
    match reason {
        CloseReason::Revoked => 4001,
        CloseReason::Expired => 4002,
        CloseReason::Kicked => 4003,
        CloseReason::SessionDeleted => 4004,
        CloseReason::Left => 1000,
        CloseReason::ShuttingDown => 1001,
    }
}

/// Node → client control messages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMsg {
    AuthOk {
        protocol: u32,
        you: PersonView,
        /// `agent:<name>` or `session:<name>`.
        target: String,
        /// Exchange with `POST /api/v1/auth/cookie` for the HttpOnly
        /// session cookie (single use, valid 60 s).
        ticket: String,
    },
    /// The whole session state: sent after `auth_ok` and after a change of
    /// the agent set.
    SessionState {
        target: String,
        agents: Vec<AgentView>,
        people: Vec<PersonView>,
        /// Requests waiting for the owner's answer.
        control_requests: Vec<PersonId>,
        comments: Vec<CommentView>,
    },
    /// Everyone in the session (sent on every join, leave, permission or
    /// control change, and heartbeat).
    Presence {
        people: Vec<PersonView>,
    },
    PersonJoined {
        person: PersonView,
    },
    PersonLeft {
        person: PersonId,
    },
    PermissionChanged {
        person: PersonId,
        permission: Permission,
    },
    ControlRequested {
        person: PersonId,
        name: String,
    },
    ControlGranted {
        person: PersonId,
    },
    ControlDenied {
        person: PersonId,
    },
    ControlRevoked {
        person: PersonId,
    },
    CommentAdded {
        comment: CommentView,
    },
    CommentUpdated {
        comment: CommentView,
    },
    AgentState {
        agent: AgentView,
    },
    /// The workspace memory of the session's agents: after `session_state`
    /// and after every change, from anyone on any device.
    Memory {
        memory: crate::memory::MemoryView,
    },
    TerminalSubscribed {
        agent: String,
        channel: Channel,
        /// The PTY's size (viewers scale locally; only the driver resizes).
        cols: u16,
        rows: u16,
    },
    TerminalExited {
        agent: String,
        state: String,
    },
    /// Who typed into an agent (at most a few per second per person).
    InputBy {
        agent: String,
        by: InputSource,
    },
    Error {
        code: String,
        message: String,
        hint: String,
        /// The refused message's `type`, when the error answers one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        refused: Option<String>,
    },
    /// Sent just before the node closes the socket.
    Closed {
        reason: CloseReason,
    },
    Pong {},
}

impl ServerMsg {
    pub fn error(info: &crate::ErrorInfo, refused: Option<&str>) -> ServerMsg {
        ServerMsg::Error {
            code: info.code.code().to_string(),
            message: info.message.clone(),
            hint: info.hint().to_string(),
            refused: refused.map(str::to_string),
        }
    }

    pub fn to_json(&self) -> String {
        // Serialising these plain data types cannot fail.
        serde_json::to_string(self).unwrap_or_else(|_| "{\"type\":\"pong\"}".into())
    }
}

/// Why a control message was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ControlError {
    #[error("control message of {0} bytes exceeds the {MAX_CONTROL}-byte limit")]
    TooLarge(usize),
    #[error("malformed control message: {0}")]
    Malformed(String),
}

/// Decode one JSON control message from a client. Never panics.
pub fn decode_client(text: &str) -> Result<ClientMsg, ControlError> {
    if text.len() > MAX_CONTROL {
        return Err(ControlError::TooLarge(text.len()));
    }
    serde_json::from_str(text).map_err(|e| ControlError::Malformed(e.to_string()))
}

/// Decode one JSON control message from the node (client side). Never panics.
pub fn decode_server(text: &str) -> Result<ServerMsg, ControlError> {
    if text.len() > 4 * MAX_PAYLOAD {
        return Err(ControlError::TooLarge(text.len()));
    }
    serde_json::from_str(text).map_err(|e| ControlError::Malformed(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn frames_round_trip() {
        let out = encode_output(Channel(3), 42, b"hello");
        assert_eq!(&out[..6], &[1, 3, 0, 0, 0, 13]);
        assert_eq!(
            decode_frame(&out),
            Ok(Frame::Output {
                channel: Channel(3),
                seq: 42,
                data: b"hello"
            })
        );
        let snap = encode_snapshot(Channel(0), 7, 80, 24, 100, b"\x1b[H");
        assert_eq!(
            decode_frame(&snap),
            Ok(Frame::Snapshot {
                channel: Channel(0),
                seq: 7,
                cols: 80,
                rows: 24,
                first_line: 100,
                data: b"\x1b[H"
            })
        );
        let input = encode_input(Channel(1), b"ls\r");
        assert_eq!(
            decode_frame(&input),
            Ok(Frame::Input {
                channel: Channel(1),
                data: b"ls\r"
            })
        );
    }

    #[test]
    fn bad_frames_are_refused() {
        assert_eq!(decode_frame(&[1, 0, 0]), Err(FrameError::Short(3)));
        assert_eq!(
            decode_frame(&[9, 0, 0, 0, 0, 0]),
            Err(FrameError::UnknownType(9))
        );
        assert!(matches!(
            decode_frame(&[3, 0, 0, 0, 0, 5, 1]),
            Err(FrameError::LengthMismatch { .. })
        ));
        assert_eq!(
            decode_frame(&[1, 0, 0, 0, 0, 2, 0, 0]),
            Err(FrameError::Truncated("output"))
        );
        assert!(matches!(
            decode_frame(&[1, 0, 0xff, 0xff, 0xff, 0xff]),
            Err(FrameError::TooLarge(_))
        ));
    }

    #[test]
    fn control_messages_use_the_documented_json() {
        let m =
            decode_client(r#"{"type":"comment_add","agent":"a","line":12,"text":"hi"}"#).unwrap();
        assert_eq!(
            m,
            ClientMsg::CommentAdd {
                agent: "a".into(),
                line: 12,
                text: "hi".into(),
                parent: None
            }
        );
        assert_eq!(
            decode_client(r#"{"type":"control_request"}"#).unwrap(),
            ClientMsg::ControlRequest {}
        );
        assert!(decode_client(r#"{"type":"format_disk"}"#).is_err());
        assert!(decode_client(r#"{"type":"ping","extra":1}"#).is_err());
        assert!(decode_client(&" ".repeat(MAX_CONTROL + 1)).is_err());
        let s = ServerMsg::PermissionChanged {
            person: PersonId("p1".into()),
            permission: Permission::Edit,
        }
        .to_json();
        assert_eq!(
            s,
            r#"{"type":"permission_changed","person":"p1","permission":"edit"}"#
        );
        assert_eq!(decode_server(&s).unwrap().to_json(), s);
    }

    #[test]
    fn permissions_are_ordered() {
        assert!(Permission::View < Permission::Comment);
        assert!(Permission::Comment < Permission::Edit);
        assert!(Permission::Edit < Permission::Owner);
        for p in [
            Permission::View,
            Permission::Comment,
            Permission::Edit,
            Permission::Owner,
        ] {
            assert_eq!(Permission::parse(p.as_str()), Some(p));
        }
    }

    proptest! {
        #[test]
        fn decoders_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = decode_frame(&bytes);
            let _ = decode_client(&String::from_utf8_lossy(&bytes));
        }

        #[test]
        fn output_round_trips(ch in any::<u8>(), seq in any::<u64>(), data in proptest::collection::vec(any::<u8>(), 0..512)) {
            let enc = encode_output(Channel(ch), seq, &data);
            prop_assert_eq!(decode_frame(&enc), Ok(Frame::Output { channel: Channel(ch), seq, data: &data }));
        }
    }
}
