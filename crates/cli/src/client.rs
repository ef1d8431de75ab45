//! The CLI's side of the local protocol: connect to the daemon (starting it
//! when needed), send a request, read frames. Blocking std IO: the CLI needs
//! no async runtime, which keeps `agentos list` fast.

use agentos_node::paths::Home;
use agentos_proto::{
    CLIENT_MAGIC, ClientFrame, ErrorCode, ErrorInfo, PROTOCOL_VERSION, Request, Response,
    ServerFrame, WireError, check_hello, hello_bytes, read_frame, write_frame,
};
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::time::{Duration, Instant};

pub struct Client {
    pub stream: UnixStream,
}

fn unavailable(home: &Home, why: impl std::fmt::Display) -> ErrorInfo {
    ErrorInfo::new(
        ErrorCode::DaemonUnavailable,
        format!(
            "cannot reach the daemon at {}: {why}",
            home.socket.display()
        ),
    )
}

/// The protocol version this client announces (overridable for tests of the
/// mismatch path).
fn our_version() -> u32 {
    std::env::var("AGENTOS_TEST_PROTOCOL_VERSION")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(PROTOCOL_VERSION)
}

impl Client {
    /// Connect to a running daemon; `Ok(None)` when none is running.
    pub fn connect(home: &Home) -> Result<Option<Client>, ErrorInfo> {
        let mut stream = match UnixStream::connect(&home.socket) {
            Ok(s) => s,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
                ) =>
            {
                return Ok(None);
            }
            Err(e) => return Err(unavailable(home, e)),
        };
        let ours = our_version();
        stream
            .write_all(&hello_bytes(CLIENT_MAGIC, ours))
            .map_err(|e| unavailable(home, e))?;
        let mut got = [0u8; 8];
        stream
            .read_exact(&mut got)
            .map_err(|e| unavailable(home, e))?;
        match check_hello(CLIENT_MAGIC, got) {
            Ok(()) if ours == PROTOCOL_VERSION => Ok(Some(Client { stream })),
            Ok(()) | Err(WireError::Version { .. }) => {
                let theirs = u32::from_be_bytes([got[4], got[5], got[6], got[7]]);
                Err(ErrorInfo::new(
                    ErrorCode::ProtocolMismatch,
                    format!(
                        "protocol mismatch: this agentos speaks v{ours}, the daemon speaks v{theirs}"
                    ),
                ))
            }
            Err(e) => Err(e.to_info()),
        }
    }

    /// Connect, starting the daemon first when it is not running. A daemon
    /// that is still dying (its socket accepts, then resets) counts as not
    /// running; a freshly started daemon that lost the lock race is started
    /// again until one answers.
    pub fn connect_or_start(home: &Home) -> Result<Client, ErrorInfo> {
        let deadline = Instant::now() + Duration::from_secs(15);
        let mut child: Option<std::process::Child> = None;
        let mut last: Option<ErrorInfo> = None;
        let mut last_spawn = Instant::now();
        loop {
            match Client::connect(home) {
                Ok(Some(c)) => return Ok(c),
                Ok(None) => {}
                Err(e) if e.code == ErrorCode::ProtocolMismatch => return Err(e),
                Err(e) => last = Some(e),
            }
            let need_start = match child.as_mut() {
                None => true,
                // Lost the lock to a daemon that was still exiting: try again,
                // at most every 100 ms.
                Some(c) => {
                    matches!(c.try_wait(), Ok(Some(_)))
                        && last_spawn.elapsed() >= Duration::from_millis(100)
                }
            };
            if need_start {
                child = Some(start_daemon(home)?);
                last_spawn = Instant::now();
            }
            if Instant::now() > deadline {
                let stderr = std::fs::read_to_string(home.logs_dir().join("daemon.stderr"))
                    .unwrap_or_default();
                let tail: Vec<&str> = stderr.lines().rev().take(3).collect();
                let why = match (last, tail.is_empty()) {
                    (_, false) => format!(
                        "it did not come up within 15 s: {}",
                        tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
                    ),
                    (Some(e), true) => format!("it did not come up within 15 s: {}", e.message),
                    (None, true) => "it did not come up within 15 s".to_string(),
                };
                return Err(unavailable(home, why));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    pub fn send(&mut self, frame: &ClientFrame) -> Result<(), ErrorInfo> {
        write_frame(&mut self.stream, frame).map_err(|e| e.to_info())
    }

    pub fn recv(&mut self) -> Result<ServerFrame, ErrorInfo> {
        read_frame(&mut self.stream).map_err(|e| match e {
            WireError::Closed => ErrorInfo::new(
                ErrorCode::DaemonUnavailable,
                "the daemon closed the connection",
            ),
            other => other.to_info(),
        })
    }

    /// One request, one response; errors become `Err`.
    pub fn request(&mut self, req: Request) -> Result<Response, ErrorInfo> {
        self.send(&ClientFrame::Request(req))?;
        loop {
            match self.recv()? {
                ServerFrame::Response(Response::Error { error }) => return Err(error),
                ServerFrame::Response(r) => return Ok(r),
                _ => continue,
            }
        }
    }
}

/// Spawn `agentos daemon start --foreground` detached from this terminal.
pub fn start_daemon(home: &Home) -> Result<std::process::Child, ErrorInfo> {
    let exe = std::env::current_exe().map_err(|e| unavailable(home, e))?;
    home.ensure().map_err(|e| unavailable(home, e))?;
    let err = std::fs::File::options()
        .create(true)
        .append(true)
        .open(home.logs_dir().join("daemon.stderr"))
        .map_err(|e| unavailable(home, e))?;
    let mut cmd = std::process::Command::new(exe);
    cmd.args(["daemon", "start", "--foreground"])
        .env("AGENTOS_HOME", &home.root)
        .env("AGENTOS_SOCKET", &home.socket)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(err);
    // A new session: no terminal signals reach the daemon.
    unsafe {
        cmd.pre_exec(|| {
            nix::unistd::setsid().map_err(std::io::Error::from)?;
            Ok(())
        });
    }
    cmd.spawn().map_err(|e| unavailable(home, e))
}
