//! `agentos attach`: raw mode, the screen snapshot, then live output; the
//! client's window size follows SIGWINCH; a configurable key (default
//! `Ctrl-b d`) detaches. Three threads: socket → stdout, stdin → socket,
//! SIGWINCH → resize.

use crate::client::Client;
use agentos_proto::{
    AgentState, ClientFrame, DetachReason, ErrorInfo, Request, Response, ServerFrame, write_frame,
};
use std::io::{IsTerminal, Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex};

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
    client.send(&ClientFrame::Request(Request::Attach {
        name: name.to_string(),
        cols,
        rows,
    }))?;
    // The first frame is the snapshot, or an error.
    let first = client.recv()?;
    if let ServerFrame::Response(Response::Error { error }) = first {
        return Err(error);
    }
    let _raw = RawGuard(tty && crossterm::terminal::enable_raw_mode().is_ok());
    let writer: Arc<Mutex<UnixStream>> =
        Arc::new(Mutex::new(client.stream.try_clone().map_err(|e| {
            ErrorInfo::new(agentos_proto::ErrorCode::DaemonUnavailable, e.to_string())
        })?));

    // stdin → agent
    {
        let writer = writer.clone();
        std::thread::spawn(move || {
            let mut m = DetachMatcher::new(detach_key);
            let mut stdin = std::io::stdin().lock();
            let mut buf = [0u8; 4096];
            loop {
                let n = match stdin.read(&mut buf) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                let (fwd, detach) = m.feed(&buf[..n]);
                let mut w = writer.lock().unwrap_or_else(|p| p.into_inner());
                if !fwd.is_empty()
                    && write_frame(&mut *w, &ClientFrame::Input { data: fwd }).is_err()
                {
                    return;
                }
                if detach {
                    let _ = write_frame(&mut *w, &ClientFrame::Detach);
                    return;
                }
            }
        });
    }
    // SIGWINCH → resize
    if tty
        && let Ok(mut signals) =
            signal_hook::iterator::Signals::new([signal_hook::consts::SIGWINCH])
    {
        let writer = writer.clone();
        std::thread::spawn(move || {
            for _ in signals.forever() {
                let (cols, rows) = term_size();
                let mut w = writer.lock().unwrap_or_else(|p| p.into_inner());
                if write_frame(&mut *w, &ClientFrame::Resize { cols, rows }).is_err() {
                    return;
                }
            }
        });
    }

    let mut out = std::io::stdout().lock();
    let mut frame = first;
    loop {
        match frame {
            ServerFrame::Snapshot { data, .. } | ServerFrame::Output { data, .. } => {
                if out.write_all(&data).and_then(|_| out.flush()).is_err() {
                    return Ok(AttachEnd::Gone);
                }
            }
            ServerFrame::Exited { state } => return Ok(AttachEnd::Exited(state)),
            ServerFrame::Detached { reason } => {
                return Ok(match reason {
                    DetachReason::Requested => AttachEnd::Detached,
                    DetachReason::AgentGone | DetachReason::Shutdown => AttachEnd::Gone,
                });
            }
            ServerFrame::Response(Response::Error { error }) => return Ok(AttachEnd::Error(error)),
            ServerFrame::Response(_) | ServerFrame::LogText { .. } => {}
        }
        frame = match client.recv() {
            Ok(f) => f,
            Err(_) => return Ok(AttachEnd::Gone),
        };
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
