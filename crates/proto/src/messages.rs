//! Message types of the local protocols. Structs with named fields and enums
//! only: no positional tuples, no strings standing in for types.

use crate::ErrorInfo;
pub use agentos_crdt::AgentState;
use serde::{Deserialize, Serialize};

/// Which state `agentos wait` blocks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum WaitTarget {
    Waiting,
    Idle,
    Exited,
}

/// Isolation level requested at creation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Isolation {
    /// The configured default: a worktree inside a git repository, else none.
    Auto,
    None,
    Worktree,
    Devcontainer,
    Docker,
}

/// How `agentos merge` combines an agent's branch into its base.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MergeMode {
    Merge,
    Squash,
    Rebase,
}

/// Everything the daemon needs to create one agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateSpec {
    pub name: String,
    /// Agent type (`claude`, `custom/foo`…); `None` with a `command` means a plain command.
    pub agent_type: Option<String>,
    /// Explicit command after `--`; overrides the definition's command and args.
    pub command: Vec<String>,
    /// Extra arguments appended to the definition's command (presets).
    pub extra_args: Vec<String>,
    pub cwd: String,
    pub isolation: Isolation,
    /// The client's environment, so the agent sees the user's PATH and keys.
    /// Stored only on this device (mode 0600), never in the replicated document.
    pub env: Vec<EnvVar>,
    pub cols: u16,
    pub rows: u16,
    /// `--allow-path <p>[:ro|:rw]` entries, added to the sandbox's allow-list.
    pub allow_paths: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvVar {
    pub key: String,
    pub value: String,
}

/// One agent as `list` and `status` show it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentInfo {
    pub id: String,
    pub name: String,
    pub agent_type: String,
    pub state: AgentState,
    /// Which ranked source decided the state (`hook:Stop`, `osc9`, `screen:prompt`, `process`).
    pub state_source: String,
    pub started_at_ms: Option<u64>,
    pub pid: Option<u32>,
    pub workspace: String,
    pub cwd: String,
    pub command: Vec<String>,
    pub resume_id: Option<String>,
    /// The device the agent runs on.
    pub host_device: String,
    /// The agent's git worktree and branch, when it has one.
    pub worktree: Option<String>,
    pub branch: Option<String>,
    /// False once the agent has been destroyed (shown by `list --all`).
    pub live: bool,
}

/// `status --explain`: every source's current opinion, highest rank first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StateExplain {
    pub info: AgentInfo,
    pub sources: Vec<SourceOpinion>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SourceOpinion {
    /// 1 = hooks, 2 = OSC/BEL, 3 = screen rules, 4 = process.
    pub rank: u8,
    pub source: String,
    pub opinion: Option<AgentState>,
    pub detail: String,
    pub decided: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DaemonStatus {
    pub pid: u32,
    pub version: String,
    pub started_at_ms: u64,
    pub home: String,
    pub socket: String,
    pub agents: u32,
    pub rss_bytes: u64,
    /// Problems found at start (a damaged store…), with their error codes.
    pub notices: Vec<String>,
    /// This device's id (Syncthing-style, with check characters).
    pub device: String,
    /// The web server's address (`http://127.0.0.1:7890`), when it runs.
    pub web: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionSummary {
    pub name: String,
    pub created_at_ms: u64,
    pub agents: Vec<String>,
}

/// Client → daemon requests.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Request {
    Ping,
    DaemonStatus,
    Shutdown {
        kill_agents: bool,
    },
    Create {
        spec: CreateSpec,
    },
    List {
        all: bool,
    },
    Status {
        name: String,
    },
    Destroy {
        name: String,
        force: bool,
    },
    Restart {
        name: String,
    },
    Send {
        name: String,
        text: String,
        enter: bool,
        /// The agent that typed (from `AGENTOS_AGENT_ID`), if an agent did:
        /// viewers see every input tagged with who sent it.
        from_agent: Option<String>,
    },
    Logs {
        name: String,
        lines: Option<u32>,
        follow: bool,
    },
    Attach {
        name: String,
        cols: u16,
        rows: u16,
        /// A local client that can reach the agent's holder: after the
        /// snapshot it streams output from the holder itself (fewer hops on
        /// the echo path) and the daemon only sends control frames.
        direct: bool,
    },
    /// `agentos detach` from inside an agent's terminal: detach its clients.
    Detach {
        agent_id: String,
    },
    Wait {
        name: String,
        until: WaitTarget,
        timeout_ms: u64,
    },
    /// Delivered by `agentos hook` when an agent's own hook fires.
    Hook {
        agent_id: String,
        event: String,
        payload: String,
    },
    Restore,
    /// From an agent's sandbox launcher on its restricted channel: the
    /// agent's namespaces exist (the node may now open the proxy inside).
    SandboxReady {
        agent_id: String,
        pid: u32,
        audit_session: Option<u32>,
        /// Without root the node cannot enter the agent's network
        /// namespace: the launcher opens the proxy's listening socket there
        /// and names its descriptor, which stays open in the agent so that
        /// a restarted node can take it again.
        proxy_fd: Option<i32>,
    },
    /// `agentos audit`: stored audit records, oldest first.
    Audit {
        agent: Option<String>,
        since_ms: Option<u64>,
        /// Only records after this cursor (for `--follow`).
        after: Option<u64>,
        limit: u32,
    },
    /// `agentos policy show <name>`.
    PolicyShow {
        name: String,
    },
    SessionSave {
        name: String,
        agents: Vec<String>,
    },
    SessionRestore {
        name: String,
        env: Vec<EnvVar>,
    },
    SessionList,
    Diff {
        name: String,
        stat: bool,
    },
    Merge {
        name: String,
        mode: MergeMode,
    },
    Overlaps,
    Gc,
    /// `agentos pair`: make an invite (at most 10 minutes).
    PairInvite {
        ttl_ms: u64,
    },
    /// `agentos pair`: wait for a device to present the invite's secret;
    /// answers with the SAS to compare.
    PairWait {
        timeout_ms: u64,
    },
    /// `agentos pair <invite>`: reach the inviter (payload address, the
    /// relay, or mDNS) and prove the secret; answers with the SAS.
    PairJoin {
        invite: String,
        timeout_ms: u64,
    },
    /// Either side: the user compared the SAS. Answers `Paired` once both
    /// devices confirmed.
    PairConfirm {
        accept: bool,
        timeout_ms: u64,
    },
    /// `agentos devices`.
    Devices,
    /// `agentos devices remove <id>`: remove and rotate the keys.
    DeviceRemove {
        device: String,
    },
    /// `agentos sync status`.
    SyncStatus,
    /// `agentos sync enable|disable [--workspace <path>]`.
    SyncSet {
        workspace: String,
        enabled: bool,
    },
    /// `agentos sync connect <addr>`: use this relay (or dial this peer).
    SyncConnect {
        addr: String,
    },
    /// `agentos handoff <name> --to <device>`.
    Handoff {
        name: String,
        to: String,
    },
    /// `agentos stop <name>`: SIGTERM, then SIGKILL after a grace period.
    Stop {
        name: String,
    },
    /// `agentos share <target>`; `target` is `agent:<name>`,
    /// `session:<name>`, or `*` (the owner's own link, `agentos web`).
    ShareCreate {
        target: String,
        permission: crate::ws::Permission,
        expires_in_secs: Option<u64>,
        max_uses: Option<u32>,
    },
    ShareList,
    ShareRevoke {
        id: String,
    },
    /// `agentos comment add <agent> --line N "text"`.
    CommentAdd {
        agent: String,
        line: u64,
        text: String,
        parent: Option<String>,
    },
    CommentList {
        agent: Option<String>,
    },
    CommentResolve {
        id: String,
        resolved: bool,
    },
    /// The workspace memory of the workspace at `workspace` (a directory in
    /// it): shown (`op: None`) or edited. `by` names who edits (an agent
    /// running the CLI, or the local user).
    Memory {
        workspace: String,
        op: Option<crate::memory::MemoryOp>,
        by: String,
    },
}

/// A share link just made (the secret is shown once and never stored).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShareCreated {
    pub id: String,
    pub target: String,
    pub permission: crate::ws::Permission,
    /// `agentos://host:port/s/<id>[?fp=<sha256>]#<secret>` for `agentos join`.
    pub link: String,
    /// `http(s)://host:port/s/<id>#<secret>` for a browser.
    pub url: String,
    pub expires_at_ms: Option<u64>,
    pub max_uses: Option<u32>,
}

/// A share link as `share list` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShareView {
    pub id: String,
    pub target: String,
    pub permission: crate::ws::Permission,
    pub created_at_ms: u64,
    pub expires_at_ms: Option<u64>,
    pub max_uses: Option<u32>,
    pub uses: u32,
    pub revoked: bool,
    /// Sockets open through this link right now.
    pub active: u32,
}

/// One paired device, as `agentos devices` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceView {
    /// Syncthing-style id with check characters.
    pub id: String,
    pub short: String,
    pub name: String,
    /// This device.
    pub this_device: bool,
    /// `lan`, `direct` or `relay` when connected now.
    pub connection: Option<String>,
    pub addr: Option<String>,
    pub last_seen_ms: Option<u64>,
    pub last_sync_ms: Option<u64>,
}

/// One workspace's sync, as `agentos sync status` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkspaceSyncView {
    pub id: String,
    pub path: String,
    pub enabled: bool,
    /// Local changes not yet stored at the relay (or, without a relay,
    /// written while no peer was connected).
    pub pending: u64,
    pub last_sync_ms: Option<u64>,
}

/// `agentos sync status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncStatusView {
    pub device: String,
    /// `lan+relay`, `lan` or `relay`.
    pub mode: String,
    pub listen: Vec<String>,
    pub relay: Option<String>,
    pub relay_connected: bool,
    pub peers: Vec<DeviceView>,
    pub workspaces: Vec<WorkspaceSyncView>,
    pub accepted: u64,
    pub rejected: u64,
    pub duplicates: u64,
    pub epoch: u64,
    /// Devices seen on the LAN (`_agentos._tcp`), paired or not: long ids.
    pub lan: Vec<String>,
}

/// Daemon → client replies to a [`Request`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Response {
    Ok,
    Pong {
        pid: u32,
    },
    DaemonStatus {
        status: DaemonStatus,
    },
    Agent {
        info: AgentInfo,
    },
    Agents {
        agents: Vec<AgentInfo>,
    },
    Explain {
        explain: StateExplain,
    },
    Text {
        text: String,
    },
    /// Plain-text scrollback: `lines[0]` is absolute line `first` (1-based,
    /// counted from the start of the session).
    LogLines {
        first: u64,
        lines: Vec<String>,
    },
    Restored {
        agents: Vec<AgentInfo>,
    },
    Sessions {
        sessions: Vec<SessionSummary>,
    },
    Error {
        error: ErrorInfo,
    },
    AuditRecords {
        records: Vec<AuditRecord>,
    },
    Policy {
        policy: PolicyView,
    },
    PairInvite {
        code: String,
        payload: String,
        expires_at_ms: u64,
        relay: Option<String>,
    },
    /// The code both screens show; the user compares it.
    PairSas {
        sas: String,
        device: String,
        name: String,
    },
    Paired {
        device: String,
        name: String,
    },
    Devices {
        devices: Vec<DeviceView>,
    },
    SyncStatus {
        status: SyncStatusView,
    },
    Share {
        share: ShareCreated,
    },
    Shares {
        shares: Vec<ShareView>,
    },
    Comments {
        comments: Vec<crate::ws::CommentView>,
    },
    /// The memory after the request (`changed`: the id the edit made or
    /// touched, when it has one).
    Memory {
        memory: crate::memory::MemoryView,
        changed: Option<String>,
    },
}

/// Whether an audited action went through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Allowed,
    Blocked,
    Error,
}

impl Outcome {
    pub fn label(self) -> &'static str {
        match self {
            Outcome::Allowed => "allowed",
            Outcome::Blocked => "blocked",
            Outcome::Error => "error",
        }
    }
}

/// One audit record, as stored by the node and shown by `agentos audit`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// Store cursor: strictly increasing per node.
    pub seq: u64,
    pub ts_ms: u64,
    pub agent_id: String,
    pub agent: String,
    /// The agent run (kernel audit session, or launch number).
    pub session: String,
    pub pid: Option<u32>,
    pub exe: String,
    /// `file_read`, `file_write`, `file_delete`, `exec`, `net`, `socket`,
    /// `ptrace`, `signal`, `syscall`, `permission`, `limit`, `proxy`.
    pub kind: String,
    pub target: String,
    pub outcome: Outcome,
    /// `landlock`, `seccomp`, `audit`, `proxy`, `cgroup`, `sandbox`.
    pub source: String,
    pub detail: String,
}

/// The sandbox policy in force for one agent (`agentos policy show`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyView {
    pub agent: String,
    pub sandboxed: bool,
    /// Why not, when it is not (`--isolation none`, outside a repository).
    pub reason: String,
    pub read_only: Vec<String>,
    pub read_write: Vec<String>,
    pub blocked: Vec<String>,
    pub hidden: Vec<String>,
    pub network: String,
    pub allowed_hosts: Vec<String>,
    pub blocked_hosts: Vec<String>,
    pub limits: Vec<(String, String)>,
    pub notes: Vec<String>,
    pub landlock_abi: u8,
    pub seccomp: bool,
    pub audit: String,
}

/// Frames a client sends. After `Request::Attach` the client may send the
/// input-side frames; after `Request::Logs{follow}` it only listens.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ClientFrame {
    Request(Request),
    Input {
        data: Vec<u8>,
    },
    Resize {
        cols: u16,
        rows: u16,
    },
    Detach,
    /// A direct client typed (its keystrokes went to the holder): user
    /// input makes earlier hook and OSC opinions stale.
    Typed,
    /// A direct client fell behind: send a fresh `Snapshot` + `Direct`.
    Resync,
}

/// Why an attach stream ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum DetachReason {
    /// The user pressed the detach key or ran `agentos detach`.
    Requested,
    /// The agent was destroyed or restarted.
    AgentGone,
    /// The daemon is shutting down.
    Shutdown,
}

/// Frames the daemon sends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[allow(clippy::large_enum_variant)] // responses are rare; output frames dominate and are small structs
pub enum ServerFrame {
    Response(Response),
    /// Full screen state at output sequence `seq`; deltas continue from `seq`.
    Snapshot {
        seq: u64,
        cols: u16,
        rows: u16,
        data: Vec<u8>,
    },
    /// Raw output bytes `[seq, seq + data.len())`.
    Output {
        seq: u64,
        data: Vec<u8>,
    },
    /// Plain-text log lines (`logs --follow`).
    LogText {
        text: String,
    },
    Exited {
        state: AgentState,
    },
    Detached {
        reason: DetachReason,
    },
    /// Follows the snapshot of a direct attach: continue from the holder at
    /// `socket` with `Subscribe { since: seq }`.
    Direct {
        socket: String,
        seq: u64,
    },
}

/// Daemon → holder commands (after the holder hello).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum HolderCmd {
    /// Start streaming output from byte offset `since` (clamped to what
    /// exists). With `lag_limit`, a reader that falls further behind than
    /// that many bytes gets `Lagged` instead of the backlog (it resyncs from
    /// a snapshot); without, it gets every byte (the daemon).
    Subscribe {
        since: u64,
        lag_limit: Option<u64>,
    },
    Input {
        data: Vec<u8>,
    },
    Resize {
        cols: u16,
        rows: u16,
    },
    /// Send a signal to the agent's process group.
    Signal {
        signal: i32,
    },
    /// From the sandbox launcher of a node without root, instead of
    /// `Subscribe`: take descriptor `fd` of process `pid` (its seccomp
    /// listener) and record the calls it reports in `audit.jsonl`. The
    /// holder lives as long as the agent, so the agent never depends on the
    /// daemon being up. Answered with `Ack`.
    Supervise {
        pid: u32,
        fd: i32,
    },
}

/// Holder → daemon events.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum HolderEvent {
    /// First message on every connection.
    Info {
        holder_pid: u32,
        child_pid: Option<u32>,
        /// Total output bytes ever written to the log (the next sequence number).
        total: u64,
        /// Output offset at which this holder's child started (restarts append).
        started_seq: u64,
        started_at_ms: u64,
        cols: u16,
        rows: u16,
    },
    Output {
        seq: u64,
        data: Vec<u8>,
    },
    /// The child exited; no more output follows.
    Exited {
        code: i32,
        signal: Option<i32>,
    },
    /// This reader fell more than its `lag_limit` behind: the stream stops
    /// here; resync from a snapshot at `total` or later.
    Lagged {
        total: u64,
    },
    /// The answer to `Supervise`.
    Ack {
        error: Option<String>,
    },
}
