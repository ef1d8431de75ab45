//! The user-facing error table: every failure a user can meet has a code, a
//! one-line hint and its own process exit code. The daemon sends these over
//! the wire; the CLI prints them (or emits them as JSON with `--json`).

use serde::{Deserialize, Serialize};

/// Stable error codes. The numbering is part of the public interface: never
/// renumber, only append.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ErrorCode {
    /// E001: the daemon could not be reached or started.
    DaemonUnavailable,
    /// E002: no agent with that name.
    AgentNotFound,
    /// E003: an agent with that name already exists.
    NameInUse,
    /// E004: `--agent` names no known agent type.
    UnknownAgentType,
    /// E005: the agent's command is not installed / not on PATH.
    CommandNotFound,
    /// E006: client and daemon speak different protocol versions.
    ProtocolMismatch,
    /// E007: a malformed or oversized frame was received.
    BadFrame,
    /// E008: the store (sled database) is corrupt; a backup was kept.
    StoreCorrupt,
    /// E009: a config file is invalid.
    ConfigInvalid,
    /// E010: `agentos wait` timed out.
    WaitTimeout,
    /// E011: another daemon already runs on this home.
    DaemonAlreadyRunning,
    /// E012: an argument is invalid (bad name, bad value).
    InvalidArgument,
    /// E013: the agent process could not be spawned.
    SpawnFailed,
    /// E014: the agent is not running (exited) so it cannot take input.
    AgentNotRunning,
    /// E015: no preset with that name.
    PresetNotFound,
    /// E016: no saved session with that name.
    SessionNotFound,
    /// E017: an internal error (a bug): the daemon keeps running.
    Internal,
    /// E018: the requested isolation level is not available.
    IsolationUnavailable,
    /// E019: the agent's worktree holds work that is not merged or committed.
    UnmergedWork,
    /// E020: a git operation (worktree, diff, merge) failed or was refused.
    Git,
    /// E021: the caller may not do this (a sandboxed agent's channel, a
    /// share link without the permission).
    PermissionDenied,
    /// E022: pairing failed (wrong or expired code, too many attempts,
    /// refused SAS).
    Pairing,
    /// E023: no paired device or relay could be reached.
    PeerUnreachable,
    /// E024: no paired device with that id.
    UnknownDevice,
    /// E025: a share link or web session is unknown, expired, used up or
    /// revoked.
    ShareInvalid,
    /// E026: too many failed attempts from this address; wait and retry.
    RateLimited,
    /// E027: the web server could not start (address in use, bad TLS files).
    WebUnavailable,
    /// E028: a task is held by someone else's claim (or is closed).
    TaskClaimed,
    /// E029: no task or decision with this id in the workspace memory.
    MemoryNotFound,
}

impl ErrorCode {
    /// `E001`…: the code printed to users.
    pub fn code(self) -> &'static str {
        match self {
            ErrorCode::DaemonUnavailable => "E001",
            ErrorCode::AgentNotFound => "E002",
            ErrorCode::NameInUse => "E003",
            ErrorCode::UnknownAgentType => "E004",
            ErrorCode::CommandNotFound => "E005",
            ErrorCode::ProtocolMismatch => "E006",
            ErrorCode::BadFrame => "E007",
            ErrorCode::StoreCorrupt => "E008",
            ErrorCode::ConfigInvalid => "E009",
            ErrorCode::WaitTimeout => "E010",
            ErrorCode::DaemonAlreadyRunning => "E011",
            ErrorCode::InvalidArgument => "E012",
            ErrorCode::SpawnFailed => "E013",
            ErrorCode::AgentNotRunning => "E014",
            ErrorCode::PresetNotFound => "E015",
            ErrorCode::SessionNotFound => "E016",
            ErrorCode::Internal => "E017",
            ErrorCode::IsolationUnavailable => "E018",
            ErrorCode::UnmergedWork => "E019",
            ErrorCode::Git => "E020",
            ErrorCode::PermissionDenied => "E021",
            ErrorCode::Pairing => "E022",
            ErrorCode::PeerUnreachable => "E023",
            ErrorCode::UnknownDevice => "E024",
            ErrorCode::ShareInvalid => "E025",
            ErrorCode::RateLimited => "E026",
            ErrorCode::WebUnavailable => "E027",
            ErrorCode::TaskClaimed => "E028",
            ErrorCode::MemoryNotFound => "E029",
        }
    }

    /// The process exit code `agentos` uses for this error. 124 for a wait
    /// timeout mirrors `timeout(1)`.
    pub fn exit_code(self) -> i32 {
        match self {
            ErrorCode::WaitTimeout => 124,
            ErrorCode::InvalidArgument => 2,
            other => 10 + other.index() as i32,
        }
    }

    fn index(self) -> u8 {
        // E001 → 1 … so exit codes are 11, 12, … and stable.
        self.code()[1..].parse().unwrap_or(17)
    }

    /// A one-line hint telling the user how to get unstuck.
    pub fn hint(self) -> &'static str {
        match self {
            ErrorCode::DaemonUnavailable => {
                "check `agentos daemon status` and `agentos daemon logs`; start it with `agentos daemon start`"
            }
            ErrorCode::AgentNotFound => "run `agentos list --all` to see the agents on this node",
            ErrorCode::NameInUse => {
                "pick another name, or `agentos destroy <name>` the existing agent first"
            }
            ErrorCode::UnknownAgentType => {
                "run `agentos agents list` for the known types, or add ~/.agentos/agents/<name>.toml"
            }
            ErrorCode::CommandNotFound => {
                "install the agent (see `agentos agents doctor`) or put its command on PATH"
            }
            ErrorCode::ProtocolMismatch => {
                "the daemon runs another agentos version: run `agentos daemon stop` (agents keep running) and retry"
            }
            ErrorCode::BadFrame => {
                "the peer sent a malformed message; upgrade both sides to the same version"
            }
            ErrorCode::StoreCorrupt => {
                "the damaged store was moved aside as a backup; agents were rebuilt from their on-disk specs"
            }
            ErrorCode::ConfigInvalid => "fix the file named above, or run `agentos config edit`",
            ErrorCode::WaitTimeout => {
                "raise --timeout, or check the agent with `agentos status <name> --explain`"
            }
            ErrorCode::DaemonAlreadyRunning => {
                "use the running daemon, or stop it with `agentos daemon stop`"
            }
            ErrorCode::InvalidArgument => "see `agentos <command> --help`",
            ErrorCode::SpawnFailed => {
                "check the command and working directory; see `agentos daemon logs`"
            }
            ErrorCode::AgentNotRunning => "restart it with `agentos restart <name>`",
            ErrorCode::PresetNotFound => {
                "presets live in ~/.agentos/presets/*.toml or .agentos/presets/*.toml; built-ins: `agentos agents list`"
            }
            ErrorCode::SessionNotFound => "list saved sessions with `agentos session list`",
            ErrorCode::Internal => {
                "this is a bug: please report it with `agentos daemon logs` attached"
            }
            ErrorCode::IsolationUnavailable => "use `--isolation none` explicitly",
            ErrorCode::UnmergedWork => {
                "merge it with `agentos merge <name>`, or `--force` (the work is saved under refs/agentos/snapshots/ first)"
            }
            ErrorCode::Git => {
                "see the message above; `agentos diff <name>` shows the agent's changes"
            }
            ErrorCode::PermissionDenied => {
                "ask the owner for the permission; sandboxed agents may only report hooks"
            }
            ErrorCode::Pairing => {
                "make a fresh invite with `agentos pair` on the other device and type its code again"
            }
            ErrorCode::PeerUnreachable => {
                "check `agentos sync status`; put both devices on one LAN or point them at a relay with `agentos sync connect <addr>`"
            }
            ErrorCode::UnknownDevice => "list paired devices with `agentos devices`",
            ErrorCode::ShareInvalid => {
                "ask the owner for a fresh link (`agentos share <agent>`); links expire, run out of uses and can be revoked"
            }
            ErrorCode::RateLimited => {
                "too many wrong links from this address: wait a minute and retry"
            }
            ErrorCode::WebUnavailable => {
                "set another address in `[web] listen` of ~/.agentos/config.toml (or `AGENTOS_WEB_LISTEN`), then `agentos daemon restart`"
            }
            ErrorCode::TaskClaimed => {
                "pick a free one with `agentos task ready`, or ask its holder to `agentos task release <id>`"
            }
            ErrorCode::MemoryNotFound => {
                "list them with `agentos task list --all` or `agentos decision list`; ids from another device appear once it has synced"
            }
        }
    }
}

/// An error as it travels over the wire and is shown to the user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorInfo {
    pub code: ErrorCode,
    pub message: String,
    /// Overrides [`ErrorCode::hint`] when the situation knows better (e.g. an install hint).
    pub hint: Option<String>,
}

impl ErrorInfo {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ErrorInfo {
            code,
            message: message.into(),
            hint: None,
        }
    }

    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    pub fn hint(&self) -> &str {
        self.hint.as_deref().unwrap_or(self.code.hint())
    }
}

impl std::fmt::Display for ErrorInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.code.code(), self.message)
    }
}

impl std::error::Error for ErrorInfo {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_are_distinct() {
        let all = [
            ErrorCode::DaemonUnavailable,
            ErrorCode::AgentNotFound,
            ErrorCode::NameInUse,
            ErrorCode::UnknownAgentType,
            ErrorCode::CommandNotFound,
            ErrorCode::ProtocolMismatch,
            ErrorCode::BadFrame,
            ErrorCode::StoreCorrupt,
            ErrorCode::ConfigInvalid,
            ErrorCode::WaitTimeout,
            ErrorCode::DaemonAlreadyRunning,
            ErrorCode::InvalidArgument,
            ErrorCode::SpawnFailed,
            ErrorCode::AgentNotRunning,
            ErrorCode::PresetNotFound,
            ErrorCode::SessionNotFound,
            ErrorCode::Internal,
            ErrorCode::IsolationUnavailable,
            ErrorCode::UnmergedWork,
            ErrorCode::Git,
            ErrorCode::PermissionDenied,
            ErrorCode::Pairing,
            ErrorCode::PeerUnreachable,
            ErrorCode::UnknownDevice,
            ErrorCode::ShareInvalid,
            ErrorCode::RateLimited,
            ErrorCode::WebUnavailable,
            ErrorCode::TaskClaimed,
            ErrorCode::MemoryNotFound,
        ];
        let mut codes: Vec<i32> = all.iter().map(|c| c.exit_code()).collect();
        codes.sort();
        codes.dedup();
        assert_eq!(codes.len(), all.len());
        assert_eq!(ErrorCode::AgentNotFound.exit_code(), 12);
        assert_eq!(ErrorCode::WaitTimeout.exit_code(), 124);
    }
}
