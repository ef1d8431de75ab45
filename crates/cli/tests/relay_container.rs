//! The home relay as users run it: the real `agentos relay` binary, and the
//! container image of `deploy/relay/` built with that binary and run by the
//! real Docker engine (`--network host`: the engine here has no bridge).
//! Each time a libp2p device client pushes a roster and a sealed envelope,
//! a second member fetches it back and opens it.
//!
//! Without a reachable engine (or without the base image
//! `agentos-test-base:bookworm` made by `.ci/docker-setup`) the container
//! test prints `SKIP: <reason>` and returns, unless
//! `AGENTOS_REQUIRE_DOCKER=1` (set by `.ci/run`), which turns that into a
//! failure. Tests wait on conditions with timeouts; nothing sleeps to
//! synchronise.

mod support;

use agentos_node::container;
use agentos_p2p::DeviceIdentity;
use agentos_p2p::engine::KIND_CHANGE;
use agentos_p2p::roster::{Roster, encode_log};
use agentos_p2p::seal::{Envelope, ReplayGuard, open};
use agentos_proto::peer::{PeerRequest, PeerResponse};
use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use support::relay::{PeerClient, RelayProc, contains, files_under, listening};
use support::{BIN, try_wait};

const BASE: &str = "agentos-test-base:bookworm";
/// Building and starting an image takes longer than T.
const LONG: Duration = Duration::from_secs(120);
const WS: &str = "ws";

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn dev(n: u8) -> DeviceIdentity {
    DeviceIdentity::from_seed([n; 32])
}

/// Devices 1 and 2, paired.
fn roster() -> Roster {
    let mut r = Roster::create(&dev(1), "one");
    r.add(&dev(1), dev(2).public_key(), "two").unwrap();
    r
}

/// A device speaking the peer protocol to the relay.
struct Client(PeerClient);

impl std::ops::Deref for Client {
    type Target = PeerClient;
    fn deref(&self) -> &PeerClient {
        &self.0
    }
}

impl std::ops::DerefMut for Client {
    fn deref_mut(&mut self) -> &mut PeerClient {
        &mut self.0
    }
}

impl Client {
    async fn connect(n: u8, addr: &Multiaddr) -> Client {
        Client(PeerClient::connect([n; 32], addr).await)
    }

    async fn fetch(&mut self, r: &Roster) -> Vec<Vec<u8>> {
        match self
            .req(PeerRequest::Fetch {
                group: r.group_id(),
                workspace: WS.into(),
                cursors: vec![],
                limit: 100,
            })
            .await
        {
            PeerResponse::Envelopes { envelopes, .. } => envelopes,
            other => panic!("fetch: {other:?}"),
        }
    }
}

/// Device 1 pushes the roster and one envelope carrying `canary`; device
/// 2 fetches everything and opens it. Returns the plaintexts device 2 read.
async fn round_trip(addr: &Multiaddr, r: &Roster, canary: &str) -> Vec<String> {
    let mut a = Client::connect(1, addr).await;
    let res = a
        .req(PeerRequest::Roster {
            group: r.group_id(),
            log: encode_log(r.entries()),
        })
        .await;
    assert!(matches!(res, PeerResponse::Roster { .. }), "{res:?}");
    let mine = Roster::replay(r.entries(), Some(&dev(1))).unwrap();
    let seq = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let env = Envelope::seal(
        &dev(1),
        WS,
        mine.epoch(),
        mine.current_key().unwrap(),
        seq,
        KIND_CHANGE,
        canary.as_bytes(),
    )
    .to_bytes();
    let res = a
        .req(PeerRequest::Put {
            group: r.group_id(),
            workspace: WS.into(),
            envelopes: vec![env],
        })
        .await;
    assert_eq!(res, PeerResponse::Ok);
    read_all(addr, r).await
}

/// Device 2 fetches and opens everything the relay holds for the roster.
async fn read_all(addr: &Multiaddr, r: &Roster) -> Vec<String> {
    let mut b = Client::connect(2, addr).await;
    let theirs = Roster::replay(r.entries(), Some(&dev(2))).unwrap();
    let mut guard = ReplayGuard::default();
    b.fetch(r)
        .await
        .iter()
        .map(|e| {
            let (_, plain) =
                open(e, WS, theirs.authors_by_epoch(), theirs.keys(), &mut guard).unwrap();
            String::from_utf8(plain).unwrap()
        })
        .collect()
}

fn canary(tag: &str) -> String {
    format!(
        "CANARY-{tag}-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos()
    )
}

fn peer_of(addr: &Multiaddr) -> PeerId {
    match addr.iter().last() {
        Some(Protocol::P2p(p)) => p,
        _ => panic!("{addr} has no /p2p part"),
    }
}

#[test]
fn the_relay_binary_stores_and_forwards_and_keeps_its_identity() {
    let dir = tempfile::Builder::new()
        .prefix("aosrelay")
        .tempdir_in("/tmp")
        .unwrap();
    let home = dir.path().join("h");
    let data = dir.path().join("relay");
    let secret = canary("bin");
    let rt = rt();

    let mut p = RelayProc::start(&home, &data, "127.0.0.1:0");
    let addr = p.address();
    assert!(
        addr.to_string().starts_with("/ip4/127.0.0.1/tcp/"),
        "{addr}"
    );
    let r = roster();
    let read = rt.block_on(round_trip(&addr, &r, &secret));
    assert_eq!(read, std::slice::from_ref(&secret));
    assert_eq!(p.terminate(), 0, "stderr:\n{}", p.err.lock().unwrap());
    let err = p.err.lock().unwrap().clone();
    assert!(err.contains("relay stopped (SIGTERM)"), "{err}");
    assert!(err.contains("1 envelopes stored"), "{err}");

    // Ciphertext only, on disk.
    let files = files_under(&data);
    assert!(!files.is_empty());
    for f in &files {
        assert!(
            !contains(&std::fs::read(f).unwrap(), secret.as_bytes()),
            "plaintext in {}",
            f.display()
        );
    }
    // Its identity is the device key of its home (0600).
    let key = home.join("keys/device.ed25519");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );

    // Restarted on the same home and data: same PeerId, same logs.
    let mut p = RelayProc::start(&home, &data, "/ip4/127.0.0.1/tcp/0");
    let again = p.address();
    assert_eq!(peer_of(&again), peer_of(&addr));
    let read = rt.block_on(read_all(&again, &r));
    assert_eq!(read, [secret]);
    assert_eq!(p.terminate(), 0);

    // A bad address is refused with a clear message.
    let out = Command::new(BIN)
        .args(["relay", "--listen", "example.invalid:1"])
        .env("AGENTOS_HOME", &home)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("host:port"), "{err}");
}

#[test]
fn server_start_is_the_relay() {
    let out = Command::new(BIN)
        .args(["server", "start", "--help"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("--port"), "{help}");
    assert!(help.contains("8765"), "{help}");
}

// ---------------------------------------------------------------------------
// The container image.

/// The engine, or `None` after a visible SKIP (a failure when Docker is
/// required).
fn engine() -> Option<container::Docker> {
    let required = std::env::var("AGENTOS_REQUIRE_DOCKER").as_deref() == Ok("1");
    let skip = |why: String| {
        if required {
            panic!("AGENTOS_REQUIRE_DOCKER=1 but {why}");
        }
        eprintln!("SKIP: {why}");
        None
    };
    let rt = rt();
    let docker = match rt.block_on(container::connect()) {
        Ok(d) => d,
        Err(e) => return skip(e.to_string()),
    };
    if let Err(e) = rt.block_on(container::ensure_image(&docker, BASE)) {
        return skip(format!("{e} (run .ci/docker-setup)"));
    }
    match Command::new("docker").arg("version").output() {
        Ok(o) if o.status.success() => {}
        _ => return skip("the `docker` client does not answer".into()),
    }
    Some(docker)
}

fn docker(args: &[&str]) -> std::process::Output {
    Command::new("docker").args(args).output().unwrap()
}

fn text(o: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Removes the container (with its volume) and the image, however the test ends.
struct Cleanup {
    container: String,
    image: String,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = docker(&["rm", "-f", "-v", &self.container]);
        let _ = docker(&["rmi", "-f", &self.image]);
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `deploy/relay/` plus the freshly built binary (without its debug info).
fn build_context(dir: &Path) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/relay");
    let ctx = dir.join("ctx");
    std::fs::create_dir_all(ctx.join("data")).unwrap();
    std::fs::copy(src.join("Dockerfile"), ctx.join("Dockerfile")).unwrap();
    std::fs::copy(src.join("data/.keep"), ctx.join("data/.keep")).unwrap();
    let bin = ctx.join("agentos");
    let stripped = Command::new("objcopy")
        .args(["--strip-debug", BIN])
        .arg(&bin)
        .status()
        .is_ok_and(|s| s.success());
    if !stripped {
        std::fs::copy(BIN, &bin).unwrap();
    }
    ctx
}

#[test]
fn the_relay_image_runs_in_docker() {
    let Some(engine) = engine() else {
        return;
    };
    let dir = tempfile::Builder::new()
        .prefix("aosrelayimg")
        .tempdir_in("/tmp")
        .unwrap();
    let id = format!(
        "agentos-relay-test-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos()
    );
    let tag = format!("{id}:latest");
    let _cleanup = Cleanup {
        container: id.clone(),
        image: tag.clone(),
    };
    let ctx = build_context(dir.path());
    let rt = rt();
    rt.block_on(container::build_image(
        &engine,
        &ctx.join("Dockerfile"),
        &ctx,
        &Default::default(),
        None,
        &tag,
        &mut |_| {},
    ))
    .unwrap();
    // It runs as nobody, with /data as its volume.
    let user = docker(&[
        "image",
        "inspect",
        "-f",
        "{{.Config.User}} {{json .Config.Volumes}} {{json .Config.ExposedPorts}}",
        &tag,
    ]);
    let user = text(&user);
    assert!(user.starts_with("65534:65534 "), "{user}");
    assert!(user.contains("\"/data\""), "{user}");
    assert!(user.contains("8765/tcp"), "{user}");

    // Host networking (the engine has no bridge here) on a free port: a
    // later `--listen` replaces the image's.
    let port = free_port();
    let listen = format!("/ip4/127.0.0.1/tcp/{port}");
    let run = docker(&[
        "run",
        "-d",
        "--name",
        &id,
        "--network",
        "host",
        &tag,
        "--listen",
        &listen,
    ]);
    assert!(run.status.success(), "docker run: {}", text(&run));
    let mut addr = None;
    let up = try_wait(LONG, || {
        let logs = text(&docker(&["logs", &id]));
        addr = listening(&logs);
        addr.is_some() || logs.contains("error:")
    });
    let addr = addr.unwrap_or_else(|| {
        panic!(
            "no `relay listening on` in the container's log (waited: {up}):\n{}",
            text(&docker(&["logs", &id]))
        )
    });
    assert!(addr.to_string().starts_with(&listen), "{addr}");

    let secret = canary("img");
    let read = rt.block_on(round_trip(&addr, &roster(), &secret));
    assert_eq!(read, std::slice::from_ref(&secret));

    // The process is PID 1 in the container: SIGTERM still stops it cleanly.
    let stop = docker(&["stop", "-t", "20", &id]);
    assert!(stop.status.success(), "docker stop: {}", text(&stop));
    let code = text(&docker(&["inspect", "-f", "{{.State.ExitCode}}", &id]));
    let logs = text(&docker(&["logs", &id]));
    assert_eq!(code.trim(), "0", "{logs}");
    assert!(logs.contains("relay stopped (SIGTERM)"), "{logs}");
    assert!(!logs.contains(&secret), "{logs}");
}
