//! `agentos attach`: raw mode, the screen snapshot, then live output; the
//! client's window size follows SIGWINCH; a configurable key (default
//! `Ctrl-b d`) detaches. Three threads: socket → stdout, stdin → socket,
//! SIGWINCH → resize.

use crate::client::Client;
use agentos_proto::{
    AgentState, ClientFrame, DetachReason, ErrorCode, ErrorInfo, HOLDER_MAGIC, HolderCmd,
    HolderEvent, Request, Response, ServerFrame, handshake_blocking, read_frame, write_frame,
};
use std::io::{IsTerminal, Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex};

/// A direct client that falls this far behind the agent's output is resynced
/// from a snapshot instead of being sent the backlog.
const DIRECT_LAG_LIMIT: u64 = 4 * 1024 * 1024;

/// How an attach ended.
#[derive(Debug)]
pub enum AttachEnd {
    Detached,
    Exited(AgentState),
    Gone,
    Error(ErrorInfo),
}

struct RawGuard(bool);

impl Drop for RawGuard {
    fn drop(&mut self) {
        if self.0 {
            let _ = crossterm::terminal::disable_raw_mode();
        }
    }
}

fn term_size() -> (u16, u16) {
    crossterm::terminal::size().unwrap_or((80, 24))
}

/// Splits typed input into bytes for the agent and a detach request.
#[derive(Debug)]
pub struct DetachMatcher {
    key: Vec<u8>,
    matched: usize,
}

impl DetachMatcher {
    pub fn new(key: Vec<u8>) -> Self {
        DetachMatcher { key, matched: 0 }
    }

    /// Returns the bytes to forward and whether the detach key completed.
    pub fn feed(&mut self, input: &[u8]) -> (Vec<u8>, bool) {
        let mut out = Vec::with_capacity(input.len());
        for &b in input {
            if b == self.key[self.matched] {
                self.matched += 1;
                if self.matched == self.key.len() {
                    self.matched = 0;
                    return (out, true);
                }
                continue;
            }
            if self.matched > 0 {
                // Prefix twice sends the prefix itself (like tmux's `C-b C-b`).
                if self.matched == 1 && b == self.key[0] {
                    out.push(b);
                    self.matched = 0;
                    continue;
                }
                out.extend_from_slice(&self.key[..self.matched]);
                self.matched = 0;
                if b == self.key[0] {
                    self.matched = 1;
                    continue;
                }
            }
            out.push(b);
        }
        (out, false)
    }
}

pub fn attach(mut client: Client, name: &str, detach_key: Vec<u8>) -> Result<AttachEnd, ErrorInfo> {
    let tty = std::io::stdin().is_terminal() && std::io::stdout().is_terminal();
    let (cols, rows) = term_size();
    // Stream straight from the agent's holder unless told not to.
    let direct = std::env::var_os("AGENTOS_ATTACH_VIA_DAEMON").is_none();
    client.send(&ClientFrame::Request(Request::Attach {
        name: name.to_string(),
        cols,
        rows,
        direct,
    }))?;
    // The first frame is the snapshot, or an error.
    let first = client.recv()?;
    if let ServerFrame::Response(Response::Error { error }) = first {
        return Err(error);
    }
    let _raw = RawGuard(tty && crossterm::terminal::enable_raw_mode().is_ok());
    let io_err = |e: std::io::Error| ErrorInfo::new(ErrorCode::DaemonUnavailable, e.to_string());
    let daemon_w: Arc<Mutex<UnixStream>> =
        Arc::new(Mutex::new(client.stream.try_clone().map_err(io_err)?));
    let mut out = std::io::stdout().lock();
    if let ServerFrame::Snapshot { data, .. } = &first {
        let _ = out.write_all(data).and_then(|_| out.flush());
    }
    // A direct attach continues from the holder.
    let mut holder: Option<UnixStream> = None;
    let mut pending = None;
    if direct && matches!(first, ServerFrame::Snapshot { .. }) {
        match client.recv() {
            Ok(ServerFrame::Direct { socket, seq }) => match open_holder(&socket, seq) {
                Ok(h) => holder = Some(h),
                Err(e) => return Ok(AttachEnd::Error(e)),
            },
            Ok(other) => pending = Some(other),
            Err(_) => return Ok(AttachEnd::Gone),
        }
    }
    drop(out);
    let holder_w: Option<Arc<Mutex<UnixStream>>> = match &holder {
        Some(h) => Some(Arc::new(Mutex::new(h.try_clone().map_err(io_err)?))),
        None => None,
    };

    // stdin → agent (the holder directly, or through the daemon)
    {
        let daemon_w = daemon_w.clone();
        let holder_w = holder_w.clone();
        std::thread::spawn(move || {
            let mut m = DetachMatcher::new(detach_key);
            let mut stdin = std::io::stdin().lock();
            let mut buf = [0u8; 4096];
            let mut last_typed: Option<std::time::Instant> = None;
            loop {
                let n = match stdin.read(&mut buf) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                let (fwd, detach) = m.feed(&buf[..n]);
                if !fwd.is_empty() {
                    let sent = match &holder_w {
                        Some(h) => {
                            let mut h = h.lock().unwrap_or_else(|p| p.into_inner());
                            let mut ok =
                                write_frame(&mut *h, &HolderCmd::Input { data: fwd.clone() })
                                    .is_ok();
                            drop(h);
                            if !ok {
                                // Between holder streams (a resync): the daemon relays.
                                let mut d = daemon_w.lock().unwrap_or_else(|p| p.into_inner());
                                ok =
                                    write_frame(&mut *d, &ClientFrame::Input { data: fwd }).is_ok();
                            }
                            // The state engine only needs to know that the user typed,
                            // not every keystroke: tell the daemon at most twice a second.
                            if ok
                                && last_typed.is_none_or(|t: std::time::Instant| {
                                    t.elapsed().as_millis() >= 500
                                })
                            {
                                last_typed = Some(std::time::Instant::now());
                                let mut d = daemon_w.lock().unwrap_or_else(|p| p.into_inner());
                                let _ = write_frame(&mut *d, &ClientFrame::Typed);
                            }
                            ok
                        }
                        None => {
                            let mut d = daemon_w.lock().unwrap_or_else(|p| p.into_inner());
                            write_frame(&mut *d, &ClientFrame::Input { data: fwd }).is_ok()
                        }
                    };
                    if !sent {
                        return;
                    }
                }
                if detach {
                    let mut d = daemon_w.lock().unwrap_or_else(|p| p.into_inner());
                    let _ = write_frame(&mut *d, &ClientFrame::Detach);
                    return;
                }
            }
        });
    }
    // SIGWINCH → resize. A direct client resizes the PTY through the holder
    // first, so keystrokes typed after it see the new size; the daemon then
    // keeps its model in step.
    if tty
        && let Ok(mut signals) =
            signal_hook::iterator::Signals::new([signal_hook::consts::SIGWINCH])
    {
        let daemon_w = daemon_w.clone();
        let holder_w = holder_w.clone();
        std::thread::spawn(move || {
            for _ in signals.forever() {
                let (cols, rows) = term_size();
                if let Some(h) = &holder_w {
                    let mut h = h.lock().unwrap_or_else(|p| p.into_inner());
                    let _ = write_frame(&mut *h, &HolderCmd::Resize { cols, rows });
                }
                let mut w = daemon_w.lock().unwrap_or_else(|p| p.into_inner());
                if write_frame(&mut *w, &ClientFrame::Resize { cols, rows }).is_err() {
                    return;
                }
            }
        });
    }

    let Some(holder) = holder else {
        return Ok(via_daemon(client, pending));
    };
    Ok(direct_loop(client, holder, holder_w))
}

/// Events of a direct attach, from the daemon's control stream and from the
/// current holder stream.
enum Ev {
    Daemon(Box<ServerFrame>),
    DaemonGone,
    HolderExited { code: i32 },
    HolderLagged { generation: u64 },
    HolderGone { generation: u64 },
}

fn spawn_holder_reader(mut holder: UnixStream, generation: u64, tx: std::sync::mpsc::Sender<Ev>) {
    std::thread::spawn(move || {
        let mut out = std::io::stdout();
        let ev = loop {
            match read_frame::<HolderEvent>(&mut holder) {
                Ok(HolderEvent::Output { data, .. }) => {
                    if out.write_all(&data).and_then(|_| out.flush()).is_err() {
                        break Ev::HolderGone { generation };
                    }
                }
                Ok(HolderEvent::Exited { code, .. }) => break Ev::HolderExited { code },
                Ok(HolderEvent::Lagged { .. }) => break Ev::HolderLagged { generation },
                Ok(HolderEvent::Info { .. } | HolderEvent::Ack { .. }) => {}
                Err(_) => break Ev::HolderGone { generation },
            }
        };
        let _ = tx.send(ev);
    });
}

/// Output streams from the holder; the daemon sends control frames, and a
/// fresh snapshot whenever this client fell too far behind.
fn direct_loop(
    mut client: Client,
    holder: UnixStream,
    holder_w: Option<Arc<Mutex<UnixStream>>>,
) -> AttachEnd {
    let (tx, rx) = std::sync::mpsc::channel::<Ev>();
    let Ok(daemon_shut) = client.stream.try_clone() else {
        return AttachEnd::Gone;
    };
    {
        let tx = tx.clone();
        std::thread::spawn(move || {
            loop {
                match client.recv() {
                    Ok(f) => {
                        if tx.send(Ev::Daemon(Box::new(f))).is_err() {
                            return;
                        }
                    }
                    Err(_) => {
                        let _ = tx.send(Ev::DaemonGone);
                        return;
                    }
                }
            }
        });
    }
    let mut generation = 1u64;
    let mut current = holder.try_clone().ok();
    spawn_holder_reader(holder, generation, tx.clone());
    let mut exit_state: Option<AgentState> = None;
    let end = loop {
        let Ok(ev) = rx.recv() else {
            break AttachEnd::Gone;
        };
        match ev {
            Ev::HolderExited { code } => {
                break AttachEnd::Exited(exit_state.take().unwrap_or(AgentState::Exited { code }));
            }
            Ev::HolderLagged { generation: g } if g == generation => {
                // Too far behind: ask the daemon for the current screen.
                current = None;
                if let Some(w) = &holder_w
                    && let Ok(w) = w.lock()
                {
                    let _ = w.shutdown(std::net::Shutdown::Both);
                }
                if write_frame(&mut &daemon_shut, &ClientFrame::Resync).is_err() {
                    break AttachEnd::Gone;
                }
            }
            Ev::HolderGone { generation: g } if g == generation => current = None,
            Ev::HolderLagged { .. } | Ev::HolderGone { .. } => {}
            Ev::DaemonGone => break AttachEnd::Gone,
            Ev::Daemon(frame) => match *frame {
                ServerFrame::Snapshot { data, .. } => {
                    let mut out = std::io::stdout();
                    let _ = out.write_all(&data).and_then(|_| out.flush());
                }
                ServerFrame::Direct { socket, seq } => match open_holder(&socket, seq) {
                    Ok(h) => {
                        generation += 1;
                        if let (Some(w), Ok(clone)) = (&holder_w, h.try_clone())
                            && let Ok(mut w) = w.lock()
                        {
                            *w = clone;
                        }
                        current = h.try_clone().ok();
                        spawn_holder_reader(h, generation, tx.clone());
                    }
                    Err(e) => break AttachEnd::Error(e),
                },
                ServerFrame::Detached { reason } => {
                    break match reason {
                        DetachReason::Requested => AttachEnd::Detached,
                        DetachReason::AgentGone | DetachReason::Shutdown => AttachEnd::Gone,
                    };
                }
                // An exit is reported by the holder once its output is drained.
                ServerFrame::Exited { state } => {
                    if current.is_none() {
                        break AttachEnd::Exited(state);
                    }
                    exit_state = Some(state);
                }
                ServerFrame::Response(Response::Error { error }) => break AttachEnd::Error(error),
                ServerFrame::Response(_)
                | ServerFrame::Output { .. }
                | ServerFrame::LogText { .. } => {}
            },
        }
    };
    let _ = daemon_shut.shutdown(std::net::Shutdown::Both);
    if let Some(h) = current {
        let _ = h.shutdown(std::net::Shutdown::Both);
    }
    end
}

/// Connect to an agent's holder and subscribe from `seq`.
fn open_holder(socket: &str, seq: u64) -> Result<UnixStream, ErrorInfo> {
    let err = |e: String| {
        ErrorInfo::new(
            ErrorCode::AgentNotRunning,
            format!("cannot reach the agent's holder at {socket}: {e}"),
        )
    };
    let mut s = UnixStream::connect(socket).map_err(|e| err(e.to_string()))?;
    handshake_blocking(&mut s, HOLDER_MAGIC).map_err(|e| err(e.to_string()))?;
    match read_frame::<HolderEvent>(&mut s) {
        Ok(HolderEvent::Info { .. }) => {}
        Ok(_) => return Err(err("unexpected first message".into())),
        Err(e) => return Err(err(e.to_string())),
    }
    write_frame(
        &mut s,
        &HolderCmd::Subscribe {
            since: seq,
            lag_limit: Some(DIRECT_LAG_LIMIT),
        },
    )
    .map_err(|e| err(e.to_string()))?;
    Ok(s)
}

/// The daemon relays output (no direct route to the holder).
fn via_daemon(mut client: Client, pending: Option<ServerFrame>) -> AttachEnd {
    let mut out = std::io::stdout().lock();
    let mut next = pending;
    loop {
        let frame = match next.take() {
            Some(f) => f,
            None => match client.recv() {
                Ok(f) => f,
                Err(_) => return AttachEnd::Gone,
            },
        };
        match frame {
            ServerFrame::Snapshot { data, .. } | ServerFrame::Output { data, .. } => {
                if out.write_all(&data).and_then(|_| out.flush()).is_err() {
                    return AttachEnd::Gone;
                }
            }
            ServerFrame::Exited { state } => return AttachEnd::Exited(state),
            ServerFrame::Detached { reason } => {
                return match reason {
                    DetachReason::Requested => AttachEnd::Detached,
                    DetachReason::AgentGone | DetachReason::Shutdown => AttachEnd::Gone,
                };
            }
            ServerFrame::Response(Response::Error { error }) => return AttachEnd::Error(error),
            ServerFrame::Response(_) | ServerFrame::LogText { .. } | ServerFrame::Direct { .. } => {
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detach_key_matching() {
        let mut m = DetachMatcher::new(vec![2, b'd']);
        assert_eq!(m.feed(b"abc"), (b"abc".to_vec(), false));
        assert_eq!(m.feed(&[2]), (vec![], false));
        assert_eq!(m.feed(b"x"), (vec![2, b'x'], false));
        assert_eq!(m.feed(&[2, 2]), (vec![2], false));
        assert_eq!(m.feed(&[b'q', 2, b'd', b'z']), (vec![b'q'], true));
        let mut single = DetachMatcher::new(vec![0x1c]);
        assert_eq!(single.feed(&[b'a', 0x1c]), (vec![b'a'], true));
    }
}
