//! The outer terminal: a process in a real pseudo-terminal (portable-pty),
//! read synchronously with `ppoll(2)` on the master so that the thread that
//! times an event is the one that sees it (no hand-off between threads on
//! the measured path). Every wait has a deadline and panics with a message
//! that says what it was waiting for and what the terminal showed.

use portable_pty::{Child, CommandBuilder, MasterPty, PtySize, native_pty_system};
use std::io::Write;
use std::os::unix::io::RawFd;
use std::path::Path;
use std::time::{Duration, Instant};

/// Strips escape sequences from terminal output, byte by byte, keeping
/// printable ASCII/UTF-8 and newlines. Enough to find plain-text markers in
/// what tmux or `agentos attach` draw; it is not a terminal emulator.
#[derive(Debug, Default, Clone, Copy)]
pub struct Stripper {
    state: StripState,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum StripState {
    #[default]
    Ground,
    Esc,
    /// `ESC [` … final byte.
    Csi,
    /// OSC, DCS, APC, PM, SOS: a string ended by BEL or `ESC \`.
    Str,
    StrEsc,
    /// `ESC` followed by intermediate bytes (`ESC ( B`, `ESC # 8`).
    EscInter,
}

impl Stripper {
    /// Feeds one byte; returns it if it is text.
    pub fn feed(&mut self, b: u8) -> Option<u8> {
        use StripState::*;
        match self.state {
            Ground => match b {
                0x1b => {
                    self.state = Esc;
                    None
                }
                b'\n' => Some(b),
                0x00..=0x1f | 0x7f => None,
                _ => Some(b),
            },
            Esc => {
                self.state = match b {
                    b'[' => Csi,
                    b']' | b'P' | b'_' | b'^' | b'X' => Str,
                    0x20..=0x2f => EscInter,
                    _ => Ground,
                };
                None
            }
            Csi => {
                if b == 0x1b {
                    self.state = Esc;
                } else if (0x40..=0x7e).contains(&b) {
                    self.state = Ground;
                }
                None
            }
            Str => {
                if b == 0x07 {
                    self.state = Ground;
                } else if b == 0x1b {
                    self.state = StrEsc;
                }
                None
            }
            StrEsc => {
                self.state = if b == b'\\' { Ground } else { Str };
                None
            }
            EscInter => {
                if !(0x20..=0x2f).contains(&b) {
                    self.state = Ground;
                }
                None
            }
        }
    }
}

/// How much stripped text a [`Term`] keeps for marker searches.
const TEXT_KEEP: usize = 1 << 20;

/// A process running in a pseudo-terminal that the harness plays the outer
/// terminal of.
pub struct Term {
    label: String,
    master: Box<dyn MasterPty + Send>,
    writer: Box<dyn Write + Send>,
    child: Box<dyn Child + Send + Sync>,
    fd: RawFd,
    strip: Stripper,
    /// Stripped text read so far (tail only).
    text: Vec<u8>,
    /// Raw bytes read since the last [`Term::reset_count`].
    pub bytes_read: u64,
    buf: Vec<u8>,
    exited: bool,
}

impl std::fmt::Debug for Term {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Term").field("label", &self.label).finish()
    }
}

/// The result of one bounded read.
enum Read {
    Data(usize),
    TimedOut,
    Eof,
}

impl Term {
    /// Spawns `argv` in a new `cols`×`rows` PTY. `env` is added to the
    /// harness's environment, `env_remove` taken out of it.
    pub fn spawn(
        label: &str,
        argv: &[&str],
        env: &[(&str, &str)],
        env_remove: &[&str],
        cwd: &Path,
        cols: u16,
        rows: u16,
    ) -> Term {
        let pair = native_pty_system()
            .openpty(PtySize {
                rows,
                cols,
                pixel_width: 0,
                pixel_height: 0,
            })
            .unwrap_or_else(|e| panic!("{label}: cannot open a PTY: {e}"));
        let mut cmd = CommandBuilder::new(argv[0]);
        cmd.args(&argv[1..]);
        cmd.cwd(cwd);
        for k in env_remove {
            cmd.env_remove(k);
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = pair
            .slave
            .spawn_command(cmd)
            .unwrap_or_else(|e| panic!("{label}: cannot spawn {argv:?}: {e}"));
        drop(pair.slave);
        let writer = pair
            .master
            .take_writer()
            .unwrap_or_else(|e| panic!("{label}: no PTY writer: {e}"));
        let fd = pair
            .master
            .as_raw_fd()
            .unwrap_or_else(|| panic!("{label}: the PTY master has no file descriptor"));
        Term {
            label: label.to_string(),
            master: pair.master,
            writer,
            child,
            fd,
            strip: Stripper::default(),
            text: Vec::new(),
            bytes_read: 0,
            buf: vec![0; 256 * 1024],
            exited: false,
        }
    }

    pub fn label(&self) -> &str {
        &self.label
    }

    /// The pid of the process in the terminal.
    pub fn pid(&self) -> i32 {
        self.child.process_id().map(|p| p as i32).unwrap_or(0)
    }

    pub fn write(&mut self, data: &[u8]) {
        let label = &self.label;
        self.writer
            .write_all(data)
            .and_then(|_| self.writer.flush())
            .unwrap_or_else(|e| panic!("{label}: cannot write to the terminal: {e}"));
    }

    /// One `read(2)` of the master, waiting at most `wait` for data.
    fn read_once(&mut self, wait: Duration) -> Read {
        let mut pfd = libc::pollfd {
            fd: self.fd,
            events: libc::POLLIN,
            revents: 0,
        };
        let ts = libc::timespec {
            tv_sec: wait.as_secs() as libc::time_t,
            tv_nsec: wait.subsec_nanos() as libc::c_long,
        };
        loop {
            // SAFETY: one valid pollfd, a valid timespec, no signal mask.
            let r = unsafe { libc::ppoll(&mut pfd, 1, &ts, std::ptr::null()) };
            if r < 0 {
                if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                panic!(
                    "{}: ppoll failed: {}",
                    self.label,
                    std::io::Error::last_os_error()
                );
            }
            if r == 0 {
                return Read::TimedOut;
            }
            break;
        }
        loop {
            // SAFETY: `buf` is valid for `buf.len()` bytes; `fd` is the open master.
            let n = unsafe {
                libc::read(
                    self.fd,
                    self.buf.as_mut_ptr().cast::<libc::c_void>(),
                    self.buf.len(),
                )
            };
            if n > 0 {
                self.bytes_read += n as u64;
                return Read::Data(n as usize);
            }
            if n == 0 {
                return Read::Eof;
            }
            let err = std::io::Error::last_os_error();
            match err.kind() {
                std::io::ErrorKind::Interrupted => continue,
                std::io::ErrorKind::WouldBlock => return Read::TimedOut,
                // EIO: the slave side is closed (the process exited).
                _ => return Read::Eof,
            }
        }
    }

    /// Feeds `buf[..n]` through the stripper into `text`.
    fn absorb(&mut self, n: usize) {
        for i in 0..n {
            if let Some(c) = self.strip.feed(self.buf[i]) {
                self.text.push(c);
            }
        }
        if self.text.len() > 2 * TEXT_KEEP {
            self.text.drain(..self.text.len() - TEXT_KEEP);
        }
    }

    fn eof_panic(&mut self, what: &str) -> ! {
        self.exited = true;
        panic!(
            "{}: the process exited while waiting for {what}; the terminal showed (tail):\n{}",
            self.label,
            self.tail_text()
        );
    }

    /// The last stripped text, for error messages.
    pub fn tail_text(&self) -> String {
        let from = self.text.len().saturating_sub(2000);
        String::from_utf8_lossy(&self.text[from..]).into_owned()
    }

    /// Reads everything already pending, without waiting.
    pub fn drain(&mut self) {
        loop {
            match self.read_once(Duration::ZERO) {
                Read::Data(n) => self.absorb(n),
                Read::TimedOut => return,
                Read::Eof => self.eof_panic("a drain"),
            }
        }
    }

    /// Reads until the stripped text contains `needle`; returns when it was
    /// seen. Panics after `timeout`.
    pub fn wait_text(&mut self, needle: &str, timeout: Duration, what: &str) -> Instant {
        let deadline = Instant::now() + timeout;
        let needle_b = needle.as_bytes();
        let mut searched = 0usize;
        loop {
            let from = searched.saturating_sub(needle_b.len());
            if memchr::memmem::find(&self.text[from.min(self.text.len())..], needle_b).is_some() {
                return Instant::now();
            }
            searched = self.text.len();
            let now = Instant::now();
            if now >= deadline {
                panic!(
                    "{}: timed out after {timeout:?} waiting for {what} ({needle:?}); the terminal showed (tail):\n{}",
                    self.label,
                    self.tail_text()
                );
            }
            match self.read_once(deadline - now) {
                Read::Data(n) => {
                    let before = self.text.len();
                    self.absorb(n);
                    if self.text.len() < before {
                        searched = 0;
                    }
                }
                Read::TimedOut => {}
                Read::Eof => self.eof_panic(what),
            }
        }
    }

    /// Reads (and discards) raw output until `needle` appears in it; cheap
    /// enough for 100 MB. Returns when it was seen. Panics after `timeout`.
    pub fn wait_raw(&mut self, needle: &[u8], timeout: Duration, what: &str) -> Instant {
        let deadline = Instant::now() + timeout;
        let mut tail: Vec<u8> = Vec::with_capacity(needle.len() * 2);
        loop {
            let now = Instant::now();
            if now >= deadline {
                panic!(
                    "{}: timed out after {timeout:?} waiting for {what} ({:?}); last bytes: {:?}",
                    self.label,
                    String::from_utf8_lossy(needle),
                    String::from_utf8_lossy(&tail)
                );
            }
            match self.read_once(deadline - now) {
                Read::Data(n) => {
                    let chunk = &self.buf[..n];
                    // The needle may straddle two reads: search the joint too.
                    tail.extend_from_slice(&chunk[..n.min(needle.len())]);
                    if memchr::memmem::find(&tail, needle).is_some()
                        || memchr::memmem::find(chunk, needle).is_some()
                    {
                        return Instant::now();
                    }
                    tail.clear();
                    tail.extend_from_slice(&chunk[n.saturating_sub(needle.len())..]);
                }
                Read::TimedOut => {}
                Read::Eof => self.eof_panic(what),
            }
        }
    }

    /// One keystroke round trip: write `ch`, wait until it is echoed as
    /// text. Pending output is drained first so it cannot count.
    pub fn echo(&mut self, ch: u8, timeout: Duration) -> Duration {
        self.drain();
        let t0 = Instant::now();
        self.write(&[ch]);
        let deadline = t0 + timeout;
        loop {
            let now = Instant::now();
            if now >= deadline {
                panic!(
                    "{}: timed out after {timeout:?} waiting for the echo of {:?}; the terminal showed (tail):\n{}",
                    self.label,
                    ch as char,
                    self.tail_text()
                );
            }
            match self.read_once(deadline - now) {
                Read::Data(n) => {
                    let mut hit = false;
                    for i in 0..n {
                        if self.strip.feed(self.buf[i]) == Some(ch) {
                            hit = true;
                        }
                    }
                    if hit {
                        return t0.elapsed();
                    }
                }
                Read::TimedOut => {}
                Read::Eof => self.eof_panic("an echo"),
            }
        }
    }

    /// Starts a thread that reads and discards everything the process
    /// writes, so that it never blocks on a full PTY (the direct flooder).
    pub fn drain_in_background(&self) {
        let mut reader = self
            .master
            .try_clone_reader()
            .unwrap_or_else(|e| panic!("{}: cannot clone the PTY reader: {e}", self.label));
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 256 * 1024];
            while let Ok(n) = std::io::Read::read(&mut reader, &mut buf) {
                if n == 0 {
                    break;
                }
            }
        });
    }

    /// Kills the process (SIGKILL) and reaps it.
    pub fn kill(&mut self) {
        if self.exited {
            return;
        }
        self.exited = true;
        let pid = self.pid();
        if pid > 0 {
            // SAFETY: plain kill(2) on our own child.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
        }
        let _ = self.child.wait();
    }
}

impl Drop for Term {
    fn drop(&mut self) {
        self.kill();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strip(s: &[u8]) -> String {
        let mut st = Stripper::default();
        String::from_utf8(s.iter().filter_map(|&b| st.feed(b)).collect()).unwrap()
    }

    #[test]
    fn strips_csi_osc_and_charset() {
        assert_eq!(strip(b"a\x1b[1;2Hb\x1b[?25lc"), "abc");
        assert_eq!(strip(b"\x1b]0;title\x07x\x1b]2;t\x1b\\y"), "xy");
        assert_eq!(strip(b"\x1b(Bq\x1b=r\r\n"), "qr\n");
    }

    #[test]
    fn echo_and_markers_through_a_real_pty() {
        let dir = std::env::temp_dir();
        let mut t = Term::spawn(
            "test",
            &["sh", "-c", "stty raw -echo; printf 'READY\\n'; exec cat"],
            &[],
            &[],
            &dir,
            80,
            24,
        );
        t.wait_text("READY", Duration::from_secs(10), "the ready marker");
        for c in b"abc" {
            let d = t.echo(*c, Duration::from_secs(5));
            assert!(d < Duration::from_secs(5));
        }
        t.write(b"MARK-1");
        t.wait_raw(b"MARK-1", Duration::from_secs(5), "a raw marker");
    }
}
