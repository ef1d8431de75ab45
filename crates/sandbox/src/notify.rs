//! The audit source of a node without root: seccomp user notification.
//! The launcher installs a filter that reports `open*`, `exec*`,
//! `connect`, `unlink*`, `rename*` and `chmod*` to a listener; the node takes
//! the listener with `pidfd_getfd`, reads each call's arguments from
//! `/proc/<pid>/mem`, records it, and lets the call continue: Landlock still
//! decides (user notification is racy, so it only observes).

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// The calls reported to the node.
pub fn watched() -> Vec<i64> {
    vec![
        libc::SYS_openat,
        libc::SYS_openat2,
        #[cfg(target_arch = "x86_64")]
        libc::SYS_open,
        #[cfg(target_arch = "x86_64")]
        libc::SYS_creat,
        libc::SYS_execve,
        libc::SYS_execveat,
        libc::SYS_connect,
        libc::SYS_unlinkat,
        libc::SYS_renameat2,
        libc::SYS_fchmodat,
    ]
}

#[repr(C)]
struct SockFprog {
    len: u16,
    filter: *const libc::sock_filter,
}

fn stmt(code: u16, k: u32) -> libc::sock_filter {
    libc::sock_filter {
        code,
        jt: 0,
        jf: 0,
        k,
    }
}

fn jump(code: u16, k: u32, jt: u8, jf: u8) -> libc::sock_filter {
    libc::sock_filter { code, jt, jf, k }
}

/// Install the notifying filter and return its listener. `no_new_privs`
/// must be set.
pub fn install_listener() -> std::io::Result<OwnedFd> {
    const LD_W_ABS: u16 = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
    const JEQ_K: u16 = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
    const RET_K: u16 = (libc::BPF_RET | libc::BPF_K) as u16;
    let arch: u32 = if cfg!(target_arch = "aarch64") {
        0xc000_00b7
    } else {
        0xc000_003e
    };
    let calls = watched();
    let mut prog = vec![
        stmt(LD_W_ABS, 4), // seccomp_data.arch
        jump(JEQ_K, arch, 1, 0),
        stmt(RET_K, libc::SECCOMP_RET_ALLOW),
        stmt(LD_W_ABS, 0), // seccomp_data.nr
    ];
    for nr in &calls {
        prog.push(jump(JEQ_K, *nr as u32, 0, 1));
        prog.push(stmt(RET_K, libc::SECCOMP_RET_USER_NOTIF));
    }
    prog.push(stmt(RET_K, libc::SECCOMP_RET_ALLOW));
    let fprog = SockFprog {
        len: prog.len() as u16,
        filter: prog.as_ptr(),
    };
    // SAFETY: the kernel copies the program, which outlives the call.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            libc::SECCOMP_FILTER_FLAG_NEW_LISTENER,
            &fprog as *const SockFprog,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the kernel returned a fresh fd.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Take file descriptor `fd` of process `pid` (the launcher's listener).
pub fn take_fd(pid: u32, fd: i32) -> std::io::Result<OwnedFd> {
    // SAFETY: plain syscalls; results are checked and owned.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if pidfd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fresh fd.
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd as RawFd) };
    // SAFETY: as above.
    let got = unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), fd, 0) };
    if got < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fresh fd.
    Ok(unsafe { OwnedFd::from_raw_fd(got as RawFd) })
}

/// One observed call.
#[derive(Debug, Clone)]
pub struct Call {
    pub pid: u32,
    pub nr: i64,
    /// The path argument (made absolute with the caller's cwd).
    pub path: Option<String>,
    /// `execve`: the program's arguments.
    pub argv: Vec<String>,
    /// `connect`: the IPv4/IPv6 destination.
    pub addr: Option<std::net::SocketAddr>,
    /// `open*`: the flags ask for writing.
    pub write: bool,
    pub exe: String,
}

fn read_mem(mem: &std::fs::File, addr: u64, buf: &mut [u8]) -> usize {
    use std::os::unix::fs::FileExt;
    mem.read_at(buf, addr).unwrap_or(0)
}

fn read_cstr(mem: &std::fs::File, addr: u64) -> Option<String> {
    if addr == 0 {
        return None;
    }
    let mut buf = vec![0u8; 4096];
    let n = read_mem(mem, addr, &mut buf);
    let s = &buf[..n];
    let end = s.iter().position(|b| *b == 0)?;
    Some(String::from_utf8_lossy(&s[..end]).into_owned())
}

fn read_argv(mem: &std::fs::File, addr: u64) -> Vec<String> {
    let mut out = Vec::new();
    for i in 0..16u64 {
        let mut p = [0u8; 8];
        if read_mem(mem, addr + i * 8, &mut p) < 8 {
            break;
        }
        let ptr = u64::from_ne_bytes(p);
        if ptr == 0 {
            break;
        }
        match read_cstr(mem, ptr) {
            Some(s) => out.push(s),
            None => break,
        }
    }
    out
}

fn read_sockaddr(mem: &std::fs::File, addr: u64, len: u64) -> Option<std::net::SocketAddr> {
    let mut buf = [0u8; 28];
    let n = read_mem(mem, addr, &mut buf[..(len as usize).min(28)]);
    if n < 8 {
        return None;
    }
    let family = u16::from_ne_bytes([buf[0], buf[1]]) as i32;
    let port = u16::from_be_bytes([buf[2], buf[3]]);
    match family {
        libc::AF_INET => Some(std::net::SocketAddr::from((
            [buf[4], buf[5], buf[6], buf[7]],
            port,
        ))),
        libc::AF_INET6 if n >= 24 => {
            let mut a = [0u8; 16];
            a.copy_from_slice(&buf[8..24]);
            Some(std::net::SocketAddr::from((a, port)))
        }
        _ => None,
    }
}

fn absolute(pid: u32, dirfd: i64, p: String) -> String {
    if p.starts_with('/') {
        return p;
    }
    let base = if dirfd as i32 == libc::AT_FDCWD {
        std::fs::read_link(format!("/proc/{pid}/cwd"))
    } else {
        std::fs::read_link(format!("/proc/{pid}/fd/{}", dirfd as i32))
    };
    match base {
        Ok(b) => b.join(p).display().to_string(),
        Err(_) => p,
    }
}

/// A running supervisor; dropping it stops the thread. A stopped
/// supervisor closes the listener, and the kernel then fails pending and
/// later watched calls (so the node's death does not leave an agent
/// unwatched).
#[derive(Debug)]
pub struct Supervisor {
    stop: Arc<AtomicBool>,
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Serve the listener: record every call, let it continue.
pub fn supervise(listener: OwnedFd, on_call: impl Fn(Call) + Send + 'static) -> Supervisor {
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = stop.clone();
    let _ = std::thread::Builder::new()
        .name("seccomp-notify".into())
        .spawn(move || {
            while !stop2.load(Ordering::Relaxed) {
                let mut pfd = libc::pollfd {
                    fd: listener.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                };
                // SAFETY: one valid pollfd.
                let r = unsafe { libc::poll(&mut pfd, 1, 250) };
                if r <= 0 {
                    continue;
                }
                if pfd.revents & libc::POLLHUP != 0 {
                    return; // every process of the sandbox is gone
                }
                // SAFETY: zeroed is valid for this plain struct.
                let mut req: libc::seccomp_notif = unsafe { std::mem::zeroed() };
                // SAFETY: valid fd and struct.
                if unsafe {
                    libc::ioctl(
                        listener.as_raw_fd(),
                        libc::SECCOMP_IOCTL_NOTIF_RECV,
                        &mut req,
                    )
                } < 0
                {
                    continue;
                }
                let call = describe(&req);
                // Let it continue (Landlock decides) before anything slow.
                // SAFETY: zeroed is valid for this plain struct.
                let mut resp: libc::seccomp_notif_resp = unsafe { std::mem::zeroed() };
                resp.id = req.id;
                resp.flags = libc::SECCOMP_USER_NOTIF_FLAG_CONTINUE as u32;
                // SAFETY: valid fd and struct.
                unsafe {
                    libc::ioctl(
                        listener.as_raw_fd(),
                        libc::SECCOMP_IOCTL_NOTIF_SEND,
                        &mut resp,
                    );
                }
                if let Some(c) = call {
                    on_call(c);
                }
            }
        });
    Supervisor { stop }
}

fn describe(req: &libc::seccomp_notif) -> Option<Call> {
    let pid = req.pid;
    let mem = std::fs::File::open(format!("/proc/{pid}/mem")).ok()?;
    let a = req.data.args;
    let nr = req.data.nr as i64;
    let exe = std::fs::read_link(format!("/proc/{pid}/exe"))
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    let mut call = Call {
        pid,
        nr,
        path: None,
        argv: vec![],
        addr: None,
        write: false,
        exe,
    };
    let wflags = (libc::O_WRONLY | libc::O_RDWR | libc::O_CREAT | libc::O_TRUNC) as u64;
    #[cfg(target_arch = "x86_64")]
    {
        if nr == libc::SYS_open {
            call.path = read_cstr(&mem, a[0]).map(|p| absolute(pid, libc::AT_FDCWD as i64, p));
            call.write = a[1] & wflags != 0;
            return Some(call);
        }
        if nr == libc::SYS_creat {
            call.path = read_cstr(&mem, a[0]).map(|p| absolute(pid, libc::AT_FDCWD as i64, p));
            call.write = true;
            return Some(call);
        }
    }
    match nr {
        x if x == libc::SYS_openat => {
            call.path = read_cstr(&mem, a[1]).map(|p| absolute(pid, a[0] as i64, p));
            call.write = a[2] & wflags != 0;
        }
        x if x == libc::SYS_openat2 => {
            call.path = read_cstr(&mem, a[1]).map(|p| absolute(pid, a[0] as i64, p));
            let mut how = [0u8; 8];
            read_mem(&mem, a[2], &mut how);
            call.write = u64::from_ne_bytes(how) & wflags != 0;
        }
        x if x == libc::SYS_execve => {
            call.path = read_cstr(&mem, a[0]).map(|p| absolute(pid, libc::AT_FDCWD as i64, p));
            call.argv = read_argv(&mem, a[1]);
        }
        x if x == libc::SYS_execveat => {
            call.path = read_cstr(&mem, a[1]).map(|p| absolute(pid, a[0] as i64, p));
            call.argv = read_argv(&mem, a[2]);
        }
        x if x == libc::SYS_connect => {
            call.addr = read_sockaddr(&mem, a[1], a[2]);
            call.addr?;
        }
        x if x == libc::SYS_unlinkat || x == libc::SYS_fchmodat => {
            call.path = read_cstr(&mem, a[1]).map(|p| absolute(pid, a[0] as i64, p));
            call.write = true;
        }
        x if x == libc::SYS_renameat2 => {
            call.path = read_cstr(&mem, a[1]).map(|p| absolute(pid, a[0] as i64, p));
            call.write = true;
        }
        _ => return None,
    }
    Some(call)
}
