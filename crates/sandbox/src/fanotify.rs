//! Name rules inside an agent's worktree (`.env`, `*.pem`, `secrets.*`…),
//! which Landlock cannot express because it grants whole trees. As root,
//! the node watches the agent's own bind mount of its worktree with a
//! fanotify permission mark: every open through that mount waits for the
//! node's answer, and a matching name (or an inode known to carry one, so a
//! hardlink does not get around it) is denied and audited. Without root
//! the launcher covers the matching files that exist with `/dev/null`.

use std::collections::HashSet;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// The default blocked names (PRD §5.3.2), matched against the last path
/// component: `*` matches any run of characters.
pub const DEFAULT_GLOBS: &[&str] = &[
    ".env",
    ".env.*",
    "*.pem",
    "*.key",
    "secrets.*",
    "credentials",
    "credentials.*",
    "*.p12",
    "*.pfx",
    "id_rsa*",
    "id_ed25519*",
    "id_ecdsa*",
];

/// Does `name` match the glob (only `*` is special)?
pub fn glob_match(glob: &str, name: &str) -> bool {
    let (g, n) = (glob.as_bytes(), name.as_bytes());
    let (mut gi, mut ni) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while ni < n.len() {
        if gi < g.len() && g[gi] != b'*' && g[gi] == n[ni] {
            gi += 1;
            ni += 1;
        } else if gi < g.len() && g[gi] == b'*' {
            star = Some(gi);
            gi += 1;
            mark = ni;
        } else if let Some(s) = star {
            gi = s + 1;
            mark += 1;
            ni = mark;
        } else {
            return false;
        }
    }
    while gi < g.len() && g[gi] == b'*' {
        gi += 1;
    }
    gi == g.len()
}

pub fn matches_any(globs: &[String], name: &str) -> bool {
    globs.iter().any(|g| glob_match(g, name))
}

/// Files under `root` (not inside `.git`) whose name matches, to `depth`.
pub fn find_matches(root: &Path, globs: &[String], depth: u32, out: &mut Vec<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(root) else {
        return;
    };
    for e in rd.flatten() {
        let name = e.file_name();
        let name = name.to_string_lossy();
        let Ok(ft) = e.file_type() else { continue };
        if ft.is_dir() {
            if depth > 0 && name != ".git" {
                find_matches(&e.path(), globs, depth - 1, out);
            }
        } else if ft.is_file() && matches_any(globs, &name) {
            out.push(e.path());
        }
    }
}

/// One denied open.
#[derive(Debug, Clone)]
pub struct Denial {
    pub pid: i32,
    pub path: String,
}

/// A running guard; dropping it stops the thread (pending opens are then
/// allowed by the kernel, so a stopped node never wedges an agent).
#[derive(Debug)]
pub struct Guard {
    stop: Arc<AtomicBool>,
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn last_err() -> std::io::Error {
    std::io::Error::last_os_error()
}

/// Watch opens through the mount at `mount_path` (as seen by this process,
/// e.g. `/proc/<agent pid>/root/<worktree>`) and deny matching names.
pub fn guard(
    mount_path: &Path,
    worktree: &Path,
    globs: Vec<String>,
    on_denied: impl Fn(Denial) + Send + 'static,
) -> std::io::Result<Guard> {
    use std::os::unix::ffi::OsStrExt;
    // SAFETY: plain syscall; the fd is owned right after.
    let fd = unsafe {
        libc::fanotify_init(
            libc::FAN_CLASS_CONTENT
                | libc::FAN_CLOEXEC
                | libc::FAN_NONBLOCK
                | libc::FAN_ENABLE_AUDIT,
            (libc::O_RDONLY | libc::O_LARGEFILE | libc::O_CLOEXEC) as u32,
        )
    };
    if fd < 0 {
        return Err(last_err());
    }
    // SAFETY: fresh fd.
    let fan = unsafe { OwnedFd::from_raw_fd(fd) };
    let c = std::ffi::CString::new(mount_path.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::other("path with NUL"))?;
    // SAFETY: valid fd and C string.
    let rc = unsafe {
        libc::fanotify_mark(
            fan.as_raw_fd(),
            libc::FAN_MARK_ADD | libc::FAN_MARK_MOUNT,
            libc::FAN_OPEN_PERM,
            libc::AT_FDCWD,
            c.as_ptr(),
        )
    };
    if rc < 0 {
        return Err(last_err());
    }
    // Inodes that carry a blocked name now: a later hardlink shares them.
    let mut existing = Vec::new();
    find_matches(worktree, &globs, 12, &mut existing);
    let mut inodes: HashSet<(u64, u64)> = HashSet::new();
    for p in existing {
        use std::os::unix::fs::MetadataExt;
        if let Ok(m) = std::fs::metadata(&p) {
            inodes.insert((m.dev(), m.ino()));
        }
    }
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = stop.clone();
    std::thread::Builder::new()
        .name("fanotify".into())
        .spawn(move || serve(fan, globs, inodes, stop2, on_denied))?;
    Ok(Guard { stop })
}

fn serve(
    fan: OwnedFd,
    globs: Vec<String>,
    mut inodes: HashSet<(u64, u64)>,
    stop: Arc<AtomicBool>,
    on_denied: impl Fn(Denial),
) {
    let meta_len = std::mem::size_of::<libc::fanotify_event_metadata>();
    let mut buf = vec![0u8; 64 * 1024];
    while !stop.load(Ordering::Relaxed) {
        let mut pfd = libc::pollfd {
            fd: fan.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let r = unsafe { libc::poll(&mut pfd, 1, 250) };
        if r <= 0 {
            continue;
        }
        // SAFETY: buf is valid for its length.
        let n = unsafe { libc::read(fan.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if n <= 0 {
            continue;
        }
        let n = n as usize;
        let mut off = 0;
        while off + meta_len <= n {
            // SAFETY: the kernel wrote whole records; read unaligned.
            let m: libc::fanotify_event_metadata =
                unsafe { std::ptr::read_unaligned(buf[off..].as_ptr().cast()) };
            if m.event_len as usize == 0 {
                break;
            }
            off += m.event_len as usize;
            if m.fd < 0 {
                continue;
            }
            // SAFETY: the event's fd is ours to close.
            let file = unsafe { OwnedFd::from_raw_fd(m.fd) };
            let path = std::fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd()))
                .map(|p| p.display().to_string())
                .unwrap_or_default();
            let name = path.rsplit('/').next().unwrap_or("");
            let mut deny = matches_any(&globs, name);
            // SAFETY: stat into a zeroed struct.
            let mut st: libc::stat = unsafe { std::mem::zeroed() };
            // SAFETY: valid fd and out pointer.
            let have_stat = unsafe { libc::fstat(file.as_raw_fd(), &mut st) } == 0;
            let key = (st.st_dev, st.st_ino);
            if have_stat {
                if deny {
                    inodes.insert(key);
                } else if inodes.contains(&key) {
                    deny = true;
                }
            }
            let resp = libc::fanotify_response {
                fd: file.as_raw_fd(),
                response: if deny {
                    libc::FAN_DENY | libc::FAN_AUDIT
                } else {
                    libc::FAN_ALLOW
                },
            };
            // SAFETY: a valid response struct.
            unsafe {
                libc::write(
                    fan.as_raw_fd(),
                    (&resp as *const libc::fanotify_response).cast(),
                    std::mem::size_of::<libc::fanotify_response>(),
                );
            }
            if deny {
                on_denied(Denial { pid: m.pid, path });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob_match(".env", ".env"));
        assert!(!glob_match(".env", ".envrc"));
        assert!(glob_match(".env.*", ".env.local"));
        assert!(glob_match("*.pem", "server.pem"));
        assert!(!glob_match("*.pem", "server.pem.txt"));
        assert!(glob_match("secrets.*", "secrets.yaml"));
        assert!(glob_match("id_rsa*", "id_rsa.pub"));
        assert!(glob_match("*", "anything"));
        assert!(!glob_match("*.key", "keyboard"));
        let g: Vec<String> = DEFAULT_GLOBS.iter().map(|s| s.to_string()).collect();
        assert!(matches_any(&g, "prod.key"));
        assert!(!matches_any(&g, "main.rs"));
    }
}
