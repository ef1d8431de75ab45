//! The kernel audit side of the sandbox: reading Landlock, seccomp and
//! syscall records over `NETLINK_AUDIT` (multicast group 1, so an auditd
//! that may be running keeps its place), turning them into one normalized
//! event each, and installing the per-agent rules that record process
//! spawns and writes in the worktree. Parsing is pure and unit-tested; the
//! socket code is thin.

use serde::{Deserialize, Serialize};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

pub const AUDIT_GET: u16 = 1000;
pub const AUDIT_SET: u16 = 1001;
pub const AUDIT_ADD_RULE: u16 = 1011;
pub const AUDIT_DEL_RULE: u16 = 1012;
pub const SYSCALL: u16 = 1300;
pub const PATH: u16 = 1302;
pub const CWD: u16 = 1307;
pub const EXECVE: u16 = 1309;
pub const EOE: u16 = 1320;
pub const SECCOMP: u16 = 1326;
pub const PROCTITLE: u16 = 1327;
pub const LANDLOCK_ACCESS: u16 = 1423;
pub const LANDLOCK_DOMAIN: u16 = 1424;

/// Filter keys of our rules.
pub const KEY_EXEC: &str = "agentos-exec";
pub const KEY_WRITE: &str = "agentos-write";

/// One audit record: its type, event serial, time and fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub msg_type: u16,
    pub serial: u64,
    pub ts_ms: u64,
    pub fields: Vec<(String, String)>,
}

impl Record {
    pub fn get(&self, key: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

fn hex_decode(s: &str) -> Option<String> {
    if !s.len().is_multiple_of(2) || s.is_empty() || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let bytes: Option<Vec<u8>> = (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok())
        .collect();
    let bytes = bytes?;
    // proctitle separates argv with NULs.
    Some(
        String::from_utf8_lossy(&bytes)
            .replace('\0', " ")
            .trim_end()
            .to_owned(),
    )
}

/// Fields whose unquoted value is hex-encoded by the kernel.
const HEX_FIELDS: &[&str] = &[
    "path",
    "name",
    "exe",
    "proctitle",
    "comm",
    "cwd",
    "ocomm",
    "key",
];

/// Parse `audit(1700000000.123:456): k=v k="v" ...`.
pub fn parse(msg_type: u16, text: &str) -> Option<Record> {
    let rest = text.trim_end_matches('\0').strip_prefix("audit(")?;
    let close = rest.find("):")?;
    let (stamp, body) = (&rest[..close], &rest[close + 2..]);
    let (time, serial) = stamp.split_once(':')?;
    let (secs, millis) = time.split_once('.').unwrap_or((time, "0"));
    let ts_ms = secs.parse::<u64>().ok()? * 1000 + millis.parse::<u64>().unwrap_or(0);
    let serial = serial.parse().ok()?;
    let mut fields = Vec::new();
    let b = body.as_bytes();
    let mut i = 0;
    while i < b.len() {
        while i < b.len() && b[i] == b' ' {
            i += 1;
        }
        let start = i;
        while i < b.len() && b[i] != b'=' && b[i] != b' ' {
            i += 1;
        }
        if i >= b.len() || b[i] != b'=' {
            continue;
        }
        let key = body[start..i].to_owned();
        i += 1;
        let value = if i < b.len() && b[i] == b'"' {
            let vs = i + 1;
            let ve = body[vs..].find('"').map(|p| vs + p).unwrap_or(b.len());
            i = (ve + 1).min(b.len());
            body[vs..ve].to_owned()
        } else {
            let vs = i;
            while i < b.len() && b[i] != b' ' {
                i += 1;
            }
            let raw = &body[vs..i];
            let argv = msg_type == EXECVE
                && key.len() > 1
                && key.starts_with('a')
                && key[1..].bytes().all(|b| b.is_ascii_digit());
            if (argv || HEX_FIELDS.contains(&key.as_str())) && raw != "(null)" {
                hex_decode(raw).unwrap_or_else(|| raw.to_owned())
            } else {
                raw.to_owned()
            }
        };
        fields.push((key, value));
    }
    Some(Record {
        msg_type,
        serial,
        ts_ms,
        fields,
    })
}

/// What an event was about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    FileRead,
    FileWrite,
    FileDelete,
    Exec,
    Net,
    Socket,
    Ptrace,
    Signal,
    Syscall,
    Permission,
    Limit,
    Proxy,
}

impl Kind {
    pub fn label(self) -> &'static str {
        match self {
            Kind::FileRead => "file_read",
            Kind::FileWrite => "file_write",
            Kind::FileDelete => "file_delete",
            Kind::Exec => "exec",
            Kind::Net => "net",
            Kind::Socket => "socket",
            Kind::Ptrace => "ptrace",
            Kind::Signal => "signal",
            Kind::Syscall => "syscall",
            Kind::Permission => "permission",
            Kind::Limit => "limit",
            Kind::Proxy => "proxy",
        }
    }
}

/// One normalized event from a group of records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub ts_ms: u64,
    pub pid: Option<u32>,
    pub session: Option<u32>,
    pub exe: String,
    pub kind: Kind,
    pub target: String,
    pub blocked: bool,
    pub source: &'static str,
    pub detail: String,
    /// Landlock domain id (hex), to attribute records without a session.
    pub domain: Option<String>,
}

/// A Landlock domain's creation: which process (the launcher) owns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainAllocated {
    pub domain: String,
    pub pid: u32,
}

fn syscall_name(nr: i64) -> String {
    let name = match nr {
        x if x == libc::SYS_socket => "socket",
        x if x == libc::SYS_socketpair => "socketpair",
        x if x == libc::SYS_ptrace => "ptrace",
        x if x == libc::SYS_process_vm_readv => "process_vm_readv",
        x if x == libc::SYS_process_vm_writev => "process_vm_writev",
        x if x == libc::SYS_mount => "mount",
        x if x == libc::SYS_umount2 => "umount2",
        x if x == libc::SYS_pivot_root => "pivot_root",
        x if x == libc::SYS_chroot => "chroot",
        x if x == libc::SYS_unshare => "unshare",
        x if x == libc::SYS_setns => "setns",
        x if x == libc::SYS_clone => "clone",
        x if x == libc::SYS_clone3 => "clone3",
        x if x == libc::SYS_io_uring_setup => "io_uring_setup",
        x if x == libc::SYS_bpf => "bpf",
        x if x == libc::SYS_keyctl => "keyctl",
        x if x == libc::SYS_ioctl => "ioctl",
        x if x == libc::SYS_execve => "execve",
        x if x == libc::SYS_execveat => "execveat",
        x if x == libc::SYS_openat => "openat",
        x if x == libc::SYS_connect => "connect",
        x if x == libc::SYS_kill => "kill",
        x if x == libc::SYS_unlinkat => "unlinkat",
        x if x == libc::SYS_renameat2 => "renameat2",
        x if x == libc::SYS_linkat => "linkat",
        x if x == libc::SYS_fchmodat => "fchmodat",
        _ => return format!("syscall {nr}"),
    };
    name.to_owned()
}

fn num<T: std::str::FromStr>(r: &Record, k: &str) -> Option<T> {
    r.get(k)?.parse().ok()
}

/// Landlock blockers → kind.
fn blocker_kind(blockers: &str) -> Kind {
    let first = blockers.split(',').next().unwrap_or("");
    match first {
        "fs.execute" => Kind::Exec,
        b if b.starts_with("fs.read") => Kind::FileRead,
        "fs.remove_file" | "fs.remove_dir" => Kind::FileDelete,
        b if b.starts_with("fs.") => Kind::FileWrite,
        b if b.starts_with("net.") => Kind::Net,
        "scope.signal" => Kind::Signal,
        b if b.starts_with("scope.") => Kind::Socket,
        "ptrace" => Kind::Ptrace,
        _ => Kind::Syscall,
    }
}

/// Turn the records of one event into a normalized event, plus a domain
/// allocation when the group announces one.
pub fn normalize(records: &[Record]) -> (Option<Event>, Option<DomainAllocated>) {
    let find = |t: u16| records.iter().find(|r| r.msg_type == t);
    let syscall = find(SYSCALL);
    let pid = syscall.and_then(|s| num::<u32>(s, "pid"));
    let session = syscall
        .and_then(|s| num::<u32>(s, "ses"))
        .filter(|s| *s != u32::MAX);
    let exe = syscall.and_then(|s| s.get("exe")).unwrap_or("").to_owned();
    let ts_ms = records.first().map(|r| r.ts_ms).unwrap_or(0);
    let domain_alloc = find(LANDLOCK_DOMAIN).and_then(|d| {
        (d.get("status") == Some("allocated")).then(|| DomainAllocated {
            domain: d.get("domain").unwrap_or("").to_owned(),
            pid: num(d, "pid").unwrap_or(0),
        })
    });
    if let Some(ll) = find(LANDLOCK_ACCESS) {
        let blockers = ll.get("blockers").unwrap_or("").to_owned();
        let kind = blocker_kind(&blockers);
        let target = if let Some(p) = ll.get("path") {
            p.to_owned()
        } else if let Some(d) = ll.get("daddr") {
            format!("{d}:{}", ll.get("dest").unwrap_or("?"))
        } else if let Some(o) = ll.get("opid") {
            format!("pid {o} ({})", ll.get("ocomm").unwrap_or("?"))
        } else {
            blockers.clone()
        };
        let ev = Event {
            ts_ms,
            pid,
            session,
            exe,
            kind,
            target,
            blocked: true,
            source: "landlock",
            detail: blockers,
            domain: ll.get("domain").map(str::to_owned),
        };
        return (Some(ev), domain_alloc);
    }
    if let Some(sc) = find(SECCOMP) {
        let nr: i64 = num(sc, "syscall").unwrap_or(-1);
        let name = syscall_name(nr);
        let kind = match name.as_str() {
            "socket" | "socketpair" => Kind::Socket,
            "ptrace" | "process_vm_readv" | "process_vm_writev" => Kind::Ptrace,
            _ => Kind::Syscall,
        };
        let ev = Event {
            ts_ms,
            pid: num(sc, "pid"),
            session: num::<u32>(sc, "ses").filter(|s| *s != u32::MAX),
            exe: sc.get("exe").unwrap_or("").to_owned(),
            kind,
            target: name,
            blocked: true,
            source: "seccomp",
            detail: format!("code={}", sc.get("code").unwrap_or("?")),
            domain: None,
        };
        return (Some(ev), domain_alloc);
    }
    let Some(sys) = syscall else {
        return (None, domain_alloc);
    };
    let key = sys.get("key").unwrap_or("");
    let success = sys.get("success") != Some("no");
    let nr: i64 = num(sys, "syscall").unwrap_or(-1);
    let cwd = find(CWD).and_then(|c| c.get("cwd")).unwrap_or("");
    let abs = |name: &str| {
        if name.starts_with('/') || cwd.is_empty() {
            name.to_owned()
        } else {
            format!("{}/{}", cwd.trim_end_matches('/'), name)
        }
    };
    let exit: i64 = num(sys, "exit").unwrap_or(0);
    if key == KEY_EXEC {
        // A PATH search tries names that do not exist: not an event.
        if !success && exit == -(libc::ENOENT as i64) {
            return (None, domain_alloc);
        }
        let argv: Vec<String> = find(EXECVE)
            .map(|e| {
                let argc: usize = num(e, "argc").unwrap_or(0);
                (0..argc.min(16))
                    .filter_map(|i| e.get(&format!("a{i}")).map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        let target = if argv.is_empty() {
            exe.clone()
        } else {
            argv.join(" ")
        };
        let ev = Event {
            ts_ms,
            pid,
            session,
            exe,
            kind: Kind::Exec,
            target,
            blocked: !success,
            source: "audit",
            detail: if success {
                String::new()
            } else {
                format!("exit={exit}")
            },
            domain: None,
        };
        return (Some(ev), domain_alloc);
    }
    if key == KEY_WRITE {
        let name = syscall_name(nr);
        let paths: Vec<&Record> = records.iter().filter(|r| r.msg_type == PATH).collect();
        // The object: a deleted or created entry, else the last path.
        let obj = paths
            .iter()
            .find(|p| p.get("nametype") == Some("DELETE"))
            .or_else(|| paths.iter().find(|p| p.get("nametype") == Some("CREATE")))
            .or(paths.last());
        let target = obj.and_then(|p| p.get("name")).map(abs).unwrap_or_default();
        let kind = if name.contains("chmod") || name.contains("chown") || name.contains("xattr") {
            Kind::Permission
        } else if obj.and_then(|p| p.get("nametype")) == Some("DELETE") {
            Kind::FileDelete
        } else {
            Kind::FileWrite
        };
        let ev = Event {
            ts_ms,
            pid,
            session,
            exe,
            kind,
            target,
            blocked: false,
            source: "audit",
            detail: if success {
                name
            } else {
                format!("{name} failed")
            },
            domain: None,
        };
        return (Some(ev), domain_alloc);
    }
    (None, domain_alloc)
}

/// Groups consecutive records by serial; an event is complete at EOE or
/// when a record of another serial arrives.
#[derive(Debug, Default)]
pub struct Assembler {
    pending: Vec<Record>,
}

impl Assembler {
    /// Feed one record; returns a completed group, if any.
    pub fn push(&mut self, r: Record) -> Option<Vec<Record>> {
        if r.msg_type == EOE {
            if self.pending.first().is_some_and(|p| p.serial == r.serial) {
                return Some(std::mem::take(&mut self.pending));
            }
            return None;
        }
        let done = match self.pending.first() {
            Some(p) if p.serial != r.serial => Some(std::mem::take(&mut self.pending)),
            _ => None,
        };
        self.pending.push(r);
        done
    }

    /// Flush after a quiet period (events without EOE).
    pub fn flush(&mut self) -> Option<Vec<Record>> {
        (!self.pending.is_empty()).then(|| std::mem::take(&mut self.pending))
    }
}

// ---- netlink -----------------------------------------------------------

const NLMSG_HDRLEN: usize = 16;
const NLM_F_REQUEST: u16 = 1;
const NLM_F_ACK: u16 = 4;
const NLMSG_ERROR: u16 = 2;

fn netlink_socket(groups: u32) -> std::io::Result<OwnedFd> {
    // SAFETY: plain socket(2); the fd is owned right after.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::NETLINK_AUDIT,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fresh fd.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: sockaddr_nl is plain data.
    let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    addr.nl_family = libc::AF_NETLINK as u16;
    addr.nl_groups = groups;
    // SAFETY: valid address of the right size.
    let rc = unsafe {
        libc::bind(
            sock.as_raw_fd(),
            &addr as *const libc::sockaddr_nl as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_nl>() as u32,
        )
    };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(sock)
}

fn set_timeout(fd: &OwnedFd, ms: u64) {
    let tv = libc::timeval {
        tv_sec: (ms / 1000) as libc::time_t,
        tv_usec: ((ms % 1000) * 1000) as libc::suseconds_t,
    };
    // SAFETY: valid option pointer and size.
    unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            &tv as *const libc::timeval as *const libc::c_void,
            std::mem::size_of::<libc::timeval>() as u32,
        );
    }
}

fn recv(fd: &OwnedFd, buf: &mut [u8]) -> std::io::Result<usize> {
    // SAFETY: buf is valid for its length.
    let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(n as usize)
}

/// The multicast reader (needs CAP_AUDIT_READ).
#[derive(Debug)]
pub struct Reader {
    fd: OwnedFd,
    buf: Vec<u8>,
}

impl Reader {
    /// Join group 1 (`AUDIT_NLGRP_READLOG`); reads time out after `poll_ms`.
    pub fn open(poll_ms: u64) -> std::io::Result<Reader> {
        let fd = netlink_socket(1)?;
        set_timeout(&fd, poll_ms);
        // A big receive buffer rides out bursts of denials.
        let size: libc::c_int = 4 << 20;
        // SAFETY: valid option pointer and size.
        unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVBUFFORCE,
                &size as *const libc::c_int as *const libc::c_void,
                std::mem::size_of::<libc::c_int>() as u32,
            );
        }
        Ok(Reader {
            fd,
            buf: vec![0u8; 64 * 1024],
        })
    }

    /// The next record, or `Ok(None)` when the poll interval passed.
    pub fn next_record(&mut self) -> std::io::Result<Option<Record>> {
        let n = match recv(&self.fd, &mut self.buf) {
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return Ok(None);
            }
            Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => return Ok(None),
            Err(e) => return Err(e),
        };
        if n < NLMSG_HDRLEN {
            return Ok(None);
        }
        let len = (u32::from_ne_bytes(self.buf[0..4].try_into().unwrap_or_default()) as usize)
            .clamp(NLMSG_HDRLEN, n);
        let msg_type = u16::from_ne_bytes(self.buf[4..6].try_into().unwrap_or_default());
        let text = String::from_utf8_lossy(&self.buf[NLMSG_HDRLEN..len]);
        Ok(parse(msg_type, &text))
    }
}

/// The kernel's audit status (the fields we use).
#[derive(Debug, Clone, Copy, Default)]
pub struct Status {
    pub enabled: u32,
    pub backlog_limit: u32,
    pub lost: u32,
}

/// The control channel (needs CAP_AUDIT_CONTROL).
#[derive(Debug)]
pub struct Control {
    fd: OwnedFd,
    seq: u32,
}

impl Control {
    pub fn open() -> std::io::Result<Control> {
        let fd = netlink_socket(0)?;
        set_timeout(&fd, 2000);
        Ok(Control { fd, seq: 0 })
    }

    fn send(&mut self, msg_type: u16, payload: &[u8]) -> std::io::Result<()> {
        self.seq += 1;
        let mut msg = Vec::with_capacity(NLMSG_HDRLEN + payload.len());
        msg.extend(((NLMSG_HDRLEN + payload.len()) as u32).to_ne_bytes());
        msg.extend(msg_type.to_ne_bytes());
        msg.extend((NLM_F_REQUEST | NLM_F_ACK).to_ne_bytes());
        msg.extend(self.seq.to_ne_bytes());
        msg.extend(0u32.to_ne_bytes());
        msg.extend(payload);
        // SAFETY: valid buffer.
        let n = unsafe { libc::send(self.fd.as_raw_fd(), msg.as_ptr().cast(), msg.len(), 0) };
        if n < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }

    /// Read replies until the ack of our last request; returns the payload
    /// of a non-ack reply of type `want`, if one came.
    fn wait_ack(&mut self, want: Option<u16>) -> std::io::Result<Option<Vec<u8>>> {
        let mut buf = vec![0u8; 16 * 1024];
        let mut data = None;
        for _ in 0..8 {
            let n = recv(&self.fd, &mut buf)?;
            let mut off = 0;
            while off + NLMSG_HDRLEN <= n {
                let len =
                    u32::from_ne_bytes(buf[off..off + 4].try_into().unwrap_or_default()) as usize;
                let t = u16::from_ne_bytes(buf[off + 4..off + 6].try_into().unwrap_or_default());
                if len < NLMSG_HDRLEN || off + len > n {
                    break;
                }
                let payload = &buf[off + NLMSG_HDRLEN..off + len];
                if t == NLMSG_ERROR && payload.len() >= 4 {
                    let errno = i32::from_ne_bytes(payload[0..4].try_into().unwrap_or_default());
                    if errno != 0 {
                        return Err(std::io::Error::from_raw_os_error(-errno));
                    }
                    if want.is_none() || data.is_some() {
                        return Ok(data);
                    }
                } else if Some(t) == want {
                    data = Some(payload.to_vec());
                    return Ok(data);
                }
                off += (len + 3) & !3;
            }
        }
        Ok(data)
    }

    pub fn status(&mut self) -> std::io::Result<Status> {
        self.send(AUDIT_GET, &[])?;
        let p = self.wait_ack(Some(AUDIT_GET))?.unwrap_or_default();
        let word = |i: usize| {
            p.get(i * 4..i * 4 + 4)
                .map(|b| u32::from_ne_bytes(b.try_into().unwrap_or_default()))
                .unwrap_or(0)
        };
        Ok(Status {
            enabled: word(1),
            backlog_limit: word(5),
            lost: word(6),
        })
    }

    /// Turn auditing on and give the kernel room for bursts.
    pub fn enable(&mut self, backlog_limit: u32) -> std::io::Result<()> {
        const MASK_ENABLED: u32 = 1;
        const MASK_BACKLOG: u32 = 0x10;
        let mut p = [0u32; 10];
        p[0] = MASK_ENABLED | MASK_BACKLOG;
        p[1] = 1;
        p[5] = backlog_limit;
        let bytes: Vec<u8> = p.iter().flat_map(|w| w.to_ne_bytes()).collect();
        self.send(AUDIT_SET, &bytes)?;
        self.wait_ack(None).map(|_| ())
    }

    pub fn add_rule(&mut self, rule: &Rule) -> std::io::Result<()> {
        let data = rule.encode();
        self.send(AUDIT_ADD_RULE, &data)?;
        match self.wait_ack(None) {
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => Ok(()),
            other => other.map(|_| ()),
        }
    }

    pub fn del_rule(&mut self, rule: &Rule) -> std::io::Result<()> {
        let data = rule.encode();
        self.send(AUDIT_DEL_RULE, &data)?;
        self.wait_ack(None).map(|_| ())
    }
}

/// A per-agent audit rule, keyed by the agent run's audit session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rule {
    /// Every execve/execveat of the session.
    Exec { session: u32 },
    /// Every write, delete or attribute change under `dir` by the session.
    Writes { session: u32, dir: String },
}

impl Rule {
    fn encode(&self) -> Vec<u8> {
        const AUDIT_FILTER_EXIT: u32 = 0x04;
        const AUDIT_ALWAYS: u32 = 2;
        const AUDIT_EQUAL: u32 = 0x4000_0000;
        const AUDIT_ARCH: u32 = 11;
        const AUDIT_SESSIONID: u32 = 25;
        const AUDIT_DIR: u32 = 107;
        const AUDIT_PERM: u32 = 106;
        const AUDIT_FILTERKEY: u32 = 210;
        const PERM_WRITE: u32 = 2;
        const PERM_ATTR: u32 = 8;
        let mut mask = [0u32; 64];
        let mut fields: Vec<(u32, u32)> = Vec::new();
        let mut buf: Vec<u8> = Vec::new();
        let arch: u32 = if cfg!(target_arch = "aarch64") {
            0xc000_00b7
        } else {
            0xc000_003e
        };
        fields.push((AUDIT_ARCH, arch));
        let key = match self {
            Rule::Exec { session } => {
                for nr in [libc::SYS_execve, libc::SYS_execveat] {
                    mask[(nr / 32) as usize] |= 1 << (nr % 32);
                }
                fields.push((AUDIT_SESSIONID, *session));
                KEY_EXEC
            }
            Rule::Writes { session, dir } => {
                mask = [u32::MAX; 64];
                fields.push((AUDIT_SESSIONID, *session));
                fields.push((AUDIT_DIR, dir.len() as u32));
                buf.extend(dir.as_bytes());
                fields.push((AUDIT_PERM, PERM_WRITE | PERM_ATTR));
                KEY_WRITE
            }
        };
        fields.push((AUDIT_FILTERKEY, key.len() as u32));
        buf.extend(key.as_bytes());
        let mut out = Vec::new();
        let push = |out: &mut Vec<u8>, w: u32| out.extend(w.to_ne_bytes());
        push(&mut out, AUDIT_FILTER_EXIT);
        push(&mut out, AUDIT_ALWAYS);
        push(&mut out, fields.len() as u32);
        for m in mask {
            push(&mut out, m);
        }
        let mut f = [0u32; 64];
        let mut v = [0u32; 64];
        let mut ff = [0u32; 64];
        for (i, (field, value)) in fields.iter().enumerate() {
            f[i] = *field;
            v[i] = *value;
            ff[i] = AUDIT_EQUAL;
        }
        for w in f.iter().chain(&v).chain(&ff) {
            push(&mut out, *w);
        }
        push(&mut out, buf.len() as u32);
        out.extend(buf);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_landlock_denial_group() {
        let recs = [
            parse(LANDLOCK_ACCESS, "audit(1700000000.250:77): domain=1a2b3c blockers=fs.read_file path=\"/root/.ssh/id_rsa\" dev=\"vda\" ino=42").unwrap(),
            parse(LANDLOCK_DOMAIN, "audit(1700000000.250:77): domain=1a2b3c status=allocated mode=enforcing pid=4242 uid=0 exe=\"/usr/bin/agentos\" comm=\"agentos\"").unwrap(),
            parse(SYSCALL, "audit(1700000000.250:77): arch=c000003e syscall=257 success=no exit=-13 a0=ffffff9c ppid=4242 pid=4300 auid=0 uid=0 ses=9 comm=\"cat\" exe=\"/usr/bin/cat\" key=(null)").unwrap(),
            parse(PROCTITLE, "audit(1700000000.250:77): proctitle=636174002F726F6F742F2E7373682F69645F727361").unwrap(),
        ];
        assert_eq!(recs[3].get("proctitle"), Some("cat /root/.ssh/id_rsa"));
        let (ev, dom) = normalize(&recs);
        let ev = ev.unwrap();
        assert_eq!(ev.kind, Kind::FileRead);
        assert_eq!(ev.target, "/root/.ssh/id_rsa");
        assert!(ev.blocked);
        assert_eq!(ev.pid, Some(4300));
        assert_eq!(ev.session, Some(9));
        assert_eq!(ev.exe, "/usr/bin/cat");
        assert_eq!(ev.ts_ms, 1_700_000_000_250);
        assert_eq!(
            dom,
            Some(DomainAllocated {
                domain: "1a2b3c".into(),
                pid: 4242
            })
        );
    }

    #[test]
    fn parses_net_and_seccomp() {
        let net = parse(
            LANDLOCK_ACCESS,
            "audit(1.5:1): domain=9 blockers=net.connect_tcp daddr=127.0.0.1 dest=8080",
        )
        .unwrap();
        let (ev, _) = normalize(&[net]);
        let ev = ev.unwrap();
        assert_eq!(ev.kind, Kind::Net);
        assert_eq!(ev.target, "127.0.0.1:8080");
        let sc = parse(SECCOMP, &format!("audit(2.0:3): auid=0 uid=0 gid=0 ses=4 subj=unconfined pid=10 comm=\"unshare\" exe=\"/usr/bin/unshare\" sig=0 arch=c000003e syscall={} compat=0 ip=0x1 code=0x50001", libc::SYS_unshare)).unwrap();
        let (ev, _) = normalize(&[sc]);
        let ev = ev.unwrap();
        assert_eq!(ev.source, "seccomp");
        assert_eq!(ev.target, "unshare");
        assert_eq!(ev.session, Some(4));
    }

    #[test]
    fn parses_exec_and_writes() {
        let g = [
            parse(SYSCALL, &format!("audit(3.0:5): arch=c000003e syscall={} success=yes exit=0 ppid=1 pid=2 ses=7 comm=\"git\" exe=\"/usr/bin/git\" key=\"agentos-exec\"", libc::SYS_execve)).unwrap(),
            parse(EXECVE, "audit(3.0:5): argc=2 a0=\"git\" a1=\"status\"").unwrap(),
        ];
        let ev = normalize(&g).0.unwrap();
        assert_eq!(ev.kind, Kind::Exec);
        assert_eq!(ev.target, "git status");
        let g = [
            parse(SYSCALL, &format!("audit(3.0:6): arch=c000003e syscall={} success=yes exit=0 pid=2 ses=7 comm=\"rm\" exe=\"/usr/bin/rm\" key=\"agentos-write\"", libc::SYS_unlinkat)).unwrap(),
            parse(CWD, "audit(3.0:6): cwd=\"/w/tree\"").unwrap(),
            parse(PATH, "audit(3.0:6): item=0 name=\"/w/tree\" nametype=PARENT").unwrap(),
            parse(PATH, "audit(3.0:6): item=1 name=\"old.txt\" nametype=DELETE").unwrap(),
        ];
        let ev = normalize(&g).0.unwrap();
        assert_eq!(ev.kind, Kind::FileDelete);
        assert_eq!(ev.target, "/w/tree/old.txt");
    }

    #[test]
    fn assembler_groups_by_serial() {
        let mut a = Assembler::default();
        let r = |t, s: u64| parse(t, &format!("audit(1.0:{s}): x=1")).unwrap();
        assert!(a.push(r(LANDLOCK_ACCESS, 1)).is_none());
        assert!(a.push(r(SYSCALL, 1)).is_none());
        assert_eq!(a.push(r(EOE, 1)).unwrap().len(), 2);
        assert!(a.push(r(SECCOMP, 2)).is_none());
        assert_eq!(a.push(r(SECCOMP, 3)).unwrap().len(), 1);
        assert_eq!(a.flush().unwrap().len(), 1);
    }

    #[test]
    fn garbage_is_not_a_record() {
        assert!(parse(SYSCALL, "hello").is_none());
        assert!(parse(SYSCALL, "audit(x:y): a=b").is_none());
        let r = parse(SYSCALL, "audit(1.0:1): novalue key=\"unterminated").unwrap();
        assert_eq!(r.get("key"), Some("unterminated"));
    }
}
