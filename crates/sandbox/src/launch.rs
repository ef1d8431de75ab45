//! The launcher's steps, in the order they must run in the single-threaded
//! `agentos sandbox-exec` process between the PTY holder and the agent:
//! [`enter`] joins the cgroup, starts a new audit session, and shapes the
//! view with namespaces; the caller then completes the node handshake (the
//! node needs the new network namespace to exist); [`restrict`] drops
//! capabilities and applies Landlock (with `log_new_exec`) and seccomp.
//! Every step fails closed: an error means the agent is not started.

use crate::spec::{NetworkMode, SandboxSpec};
use crate::{SandboxError, abi_for, landlock_abi};
use nix::mount::{MsFlags, mount};
use nix::sched::{CloneFlags, unshare};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

fn fail(step: &str, e: impl std::fmt::Display) -> SandboxError {
    SandboxError::NotEnforced(format!("{step}: {e}"))
}

/// What `enter` learned, for the handshake with the node.
#[derive(Debug, Clone, Copy)]
pub struct Entered {
    /// The kernel audit session of this agent run (`ses=` in audit records),
    /// when the launcher could start one.
    pub audit_session: Option<u32>,
}

/// Join the cgroup, start an audit session, unshare and mount.
pub fn enter(spec: &SandboxSpec) -> Result<Entered, SandboxError> {
    for procs in &spec.cgroup_procs {
        std::fs::write(procs, "0").map_err(|e| fail(&format!("joining {}", procs.display()), e))?;
    }
    let audit_session = new_audit_session();
    let mut flags = CloneFlags::CLONE_NEWNS | CloneFlags::CLONE_NEWIPC;
    if spec.network != NetworkMode::Host {
        flags |= CloneFlags::CLONE_NEWNET;
    }
    // SAFETY: these never fail.
    let (uid, gid, euid) = unsafe { (libc::getuid(), libc::getgid(), libc::geteuid()) };
    if euid != 0 {
        // Unprivileged: a user namespace that maps only ourselves gives the
        // rights to build the view, and nothing on the host.
        flags |= CloneFlags::CLONE_NEWUSER;
    }
    unshare(flags).map_err(|e| {
        fail(
            "creating namespaces (needs root or unprivileged user namespaces)",
            e,
        )
    })?;
    if euid != 0 {
        let w = |p: &str, v: String| std::fs::write(p, v).map_err(|e| fail(p, e));
        w("/proc/self/setgroups", "deny".into())?;
        w("/proc/self/uid_map", format!("{uid} {uid} 1"))?;
        w("/proc/self/gid_map", format!("{gid} {gid} 1"))?;
    }
    if spec.network != NetworkMode::Host {
        loopback_up().map_err(|e| fail("bringing up lo in the new network namespace", e))?;
    }
    shape_mounts(spec)?;
    std::env::set_current_dir(&spec.cwd)
        .map_err(|e| fail(&format!("entering {}", spec.cwd.display()), e))?;
    Ok(Entered { audit_session })
}

/// Set our login uid, which gives this process tree a fresh audit session
/// id that no other process shares (needs CAP_AUDIT_CONTROL; best effort).
fn new_audit_session() -> Option<u32> {
    // SAFETY: getuid never fails.
    let uid = unsafe { libc::getuid() };
    std::fs::write("/proc/self/loginuid", uid.to_string()).ok()?;
    std::fs::read_to_string("/proc/self/sessionid")
        .ok()?
        .trim()
        .parse()
        .ok()
        .filter(|s| *s != u32::MAX)
}

fn loopback_up() -> std::io::Result<()> {
    // SAFETY: a plain socket; the fd is owned below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh, valid descriptor we own.
    let sock = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    // SAFETY: ifreq is plain data; zeroed is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (i, b) in b"lo\0".iter().enumerate() {
        req.ifr_name[i] = *b as libc::c_char;
    }
    // SAFETY: valid socket and ifreq pointer.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the union's flags member was just filled by the kernel.
    unsafe {
        req.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
    }
    // SAFETY: as above.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

fn is_under(p: &Path, dir: &Path) -> bool {
    p.starts_with(dir)
}

fn open_path(p: &Path) -> Result<OwnedFd, SandboxError> {
    nix::fcntl::open(
        p,
        nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(|e| fail(&format!("opening {}", p.display()), e))
}

fn make_mountpoint(target: &Path, dir: bool) -> Result<(), SandboxError> {
    let err = |e: std::io::Error| fail(&format!("creating {}", target.display()), e);
    if dir {
        std::fs::create_dir_all(target).map_err(err)?;
    } else {
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent).map_err(err)?;
        }
        if std::fs::symlink_metadata(target).is_err() {
            std::fs::File::create(target).map_err(err)?;
        }
    }
    Ok(())
}

fn bind(source: &Path, target: &Path, read_only: bool) -> Result<(), SandboxError> {
    mount(
        Some(source),
        target,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(|e| {
        fail(
            &format!("binding {} at {}", source.display(), target.display()),
            e,
        )
    })?;
    if read_only {
        mount(
            None::<&str>,
            target,
            None::<&str>,
            MsFlags::MS_REMOUNT | MsFlags::MS_BIND | MsFlags::MS_RDONLY,
            None::<&str>,
        )
        .map_err(|e| fail(&format!("making {} read-only", target.display()), e))?;
    }
    Ok(())
}

fn shape_mounts(spec: &SandboxSpec) -> Result<(), SandboxError> {
    // Nothing we mount may propagate back to the host.
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(|e| fail("making mounts private", e))?;
    let mut masks: Vec<&PathBuf> = spec
        .mask
        .iter()
        .filter(|m| std::fs::symlink_metadata(m).is_ok_and(|md| md.is_dir()))
        .collect();
    masks.sort_by_key(|m| m.components().count());
    // Keep paths that a mask will hide: hold them open, re-bind after.
    let mut keep: Vec<&PathBuf> = spec
        .keep
        .iter()
        .filter(|k| k.exists() && masks.iter().any(|m| is_under(k, m)))
        .collect();
    keep.sort_by_key(|k| k.components().count());
    let mut kept: Vec<(&PathBuf, OwnedFd, bool)> = Vec::new();
    for k in keep {
        if kept.iter().any(|(done, _, _)| is_under(k, done)) {
            continue;
        }
        kept.push((k, open_path(k)?, k.is_dir()));
    }
    // Sockets inside blocked directories: Landlock (before ABI 9) does not
    // check connect() to them, so null them.
    let mut sockets = Vec::new();
    for b in &spec.files.blocked {
        find_sockets(b, 4, &mut sockets);
    }
    let mut done: Vec<&PathBuf> = Vec::new();
    for m in masks {
        if done.iter().any(|d| is_under(m, d)) {
            continue; // already hidden by a parent mask
        }
        let mode = if m.as_path() == Path::new("/tmp") || m.as_path() == Path::new("/var/tmp") {
            "mode=1777"
        } else {
            "mode=0755"
        };
        mount(
            Some("tmpfs"),
            m.as_path(),
            Some("tmpfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some(mode),
        )
        .map_err(|e| fail(&format!("mounting a private tmpfs on {}", m.display()), e))?;
        done.push(m);
    }
    for (path, fd, is_dir) in &kept {
        make_mountpoint(path, *is_dir)?;
        let src = PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()));
        bind(&src, path, false)?;
    }
    drop(kept);
    for d in &spec.private_dirs {
        std::fs::create_dir_all(d).map_err(|e| fail(&format!("creating {}", d.display()), e))?;
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o1777));
    }
    for b in &spec.binds {
        if !b.source.exists() {
            continue;
        }
        make_mountpoint(&b.target, b.source.is_dir())?;
        bind(&b.source, &b.target, b.read_only)?;
    }
    // The worktree becomes a mount of its own, so that the node can watch
    // opens through it (fanotify mount mark) and nothing else.
    {
        if let Some(wt) = spec.worktree.as_ref().filter(|w| w.is_dir()) {
            bind(wt, wt, false)?;
            // SAFETY: geteuid never fails.
            if unsafe { libc::geteuid() } != 0 && !spec.blocked_globs.is_empty() {
                let mut found = Vec::new();
                crate::fanotify::find_matches(wt, &spec.blocked_globs, 12, &mut found);
                for f in found {
                    bind(Path::new("/dev/null"), &f, true)?;
                }
            }
        }
    }
    for p in &spec.read_only_binds {
        if p.exists() {
            bind(p, p, true)?;
        }
    }
    for s in sockets {
        if s.exists() {
            bind(Path::new("/dev/null"), &s, true)?;
        }
    }
    Ok(())
}

fn find_sockets(dir: &Path, depth: u32, out: &mut Vec<PathBuf>) {
    use std::os::unix::fs::FileTypeExt;
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let Ok(ft) = e.file_type() else { continue };
        if ft.is_socket() {
            out.push(e.path());
        } else if ft.is_dir() && depth > 0 {
            find_sockets(&e.path(), depth - 1, out);
        }
    }
}

/// Drop every capability, then apply Landlock and seccomp. After this the
/// process can only exec the agent.
pub fn restrict(spec: &SandboxSpec) -> Result<u8, SandboxError> {
    drop_capabilities()?;
    let abi = apply_landlock(spec)?;
    if spec.seccomp {
        crate::seccomp::install().map_err(|e| fail("seccomp", e))?;
    }
    Ok(abi)
}

fn drop_capabilities() -> Result<(), SandboxError> {
    use caps::CapSet;
    caps::clear(None, CapSet::Ambient).map_err(|e| fail("clearing ambient capabilities", e))?;
    caps::clear(None, CapSet::Bounding).map_err(|e| fail("clearing the bounding set", e))?;
    caps::clear(None, CapSet::Inheritable).map_err(|e| fail("clearing capabilities", e))?;
    // Effective before permitted: the permitted set bounds the effective one.
    caps::clear(None, CapSet::Effective).map_err(|e| fail("clearing capabilities", e))?;
    caps::clear(None, CapSet::Permitted).map_err(|e| fail("clearing capabilities", e))?;
    // SAFETY: plain prctl.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return Err(fail("no_new_privs", std::io::Error::last_os_error()));
    }
    Ok(())
}

fn apply_landlock(spec: &SandboxSpec) -> Result<u8, SandboxError> {
    let connect_port = match spec.network {
        NetworkMode::Host => None,
        NetworkMode::Proxy { port } => Some(Some(port)),
        NetworkMode::None => Some(None),
    };
    landlock_restrict(&spec.files, &spec.mask, connect_port, true)
}

/// Restrict this process with Landlock: `policy`'s trees; with
/// `connect_port = Some(p)`, TCP connect is filtered (allowed only to `p`,
/// when given); `scopes` adds the signal and abstract-socket scopes.
/// Denials are logged after the next exec (ABI ≥ 7). `private` lists grants
/// that are fresh tmpfs mounts (see [`FilePolicy::check`]).
pub(crate) fn landlock_restrict(
    policy: &crate::FilePolicy,
    private: &[PathBuf],
    connect_port: Option<Option<u16>>,
    scopes: bool,
) -> Result<u8, SandboxError> {
    use landlock::{
        Access, AccessFs, AccessNet, CompatLevel, Compatible, NetPort, Ruleset, RulesetAttr,
        RulesetCreatedAttr, RulesetStatus, Scope, path_beneath_rules,
    };
    policy.check(private)?;
    let n = landlock_abi();
    if n == 0 {
        return Err(SandboxError::Unsupported);
    }
    let abi = abi_for(n);
    let err = |e: landlock::RulesetError| SandboxError::NotEnforced(e.to_string());
    let existing = |v: &[PathBuf]| v.iter().filter(|p| p.exists()).cloned().collect::<Vec<_>>();
    let mut ruleset = Ruleset::default()
        .set_compatibility(CompatLevel::HardRequirement)
        .handle_access(AccessFs::from_all(abi))
        .map_err(err)?;
    let filter_net = connect_port.is_some() && n >= 4;
    if filter_net {
        ruleset = ruleset.handle_access(AccessNet::ConnectTcp).map_err(err)?;
    }
    if scopes && n >= 6 {
        ruleset = ruleset.scope(Scope::from_all(abi)).map_err(err)?;
    }
    let mut created = ruleset
        .create()
        .map_err(err)?
        .add_rules(path_beneath_rules(
            existing(&policy.read_only),
            AccessFs::from_read(abi),
        ))
        .map_err(err)?
        .add_rules(path_beneath_rules(
            existing(&policy.read_write),
            AccessFs::from_all(abi),
        ))
        .map_err(err)?;
    if let (true, Some(Some(port))) = (filter_net, connect_port) {
        created = created
            .add_rule(NetPort::new(port, AccessNet::ConnectTcp))
            .map_err(err)?;
    }
    if n >= 7 {
        created = created.log_new_exec(true).map_err(err)?;
    }
    let status = created.restrict_self().map_err(err)?;
    match status.ruleset {
        RulesetStatus::FullyEnforced => Ok(n),
        other => Err(SandboxError::NotEnforced(format!("{other:?}"))),
    }
}
