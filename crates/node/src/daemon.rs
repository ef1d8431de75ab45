//! Running the daemon: one per `$AGENTOS_HOME` (an exclusive `flock` on
//! `daemon.lock`), a PID file, JSON logs in `logs/daemon.log`, the Unix
//! socket, and the actix system that hosts every actor.

use crate::config;
use crate::paths::Home;
use crate::registry::NodeActor;
use crate::store::Store;
use actix::prelude::*;
use nix::fcntl::{Flock, FlockArg};
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use tracing::{error, info};

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("a daemon is already running for {home} (pid {pid})")]
    AlreadyRunning { home: String, pid: String },
    #[error("cannot prepare {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot open the store: {0}")]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    Config(#[from] config::ConfigError),
}

/// Hold the home's daemon lock, or say who holds it.
pub fn lock_home(home: &Home) -> Result<Flock<File>, DaemonError> {
    let io = |path: PathBuf| move |source| DaemonError::Io { path, source };
    home.ensure().map_err(io(home.root.clone()))?;
    let f = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .read(true)
        .open(home.lock_file())
        .map_err(io(home.lock_file()))?;
    Flock::lock(f, FlockArg::LockExclusiveNonblock).map_err(|_| DaemonError::AlreadyRunning {
        home: home.root.display().to_string(),
        pid: std::fs::read_to_string(home.pid_file())
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| "unknown".into()),
    })
}

fn init_logging(home: &Home, level: &str, foreground: bool) -> Result<(), DaemonError> {
    use tracing_subscriber::prelude::*;
    let path = home.daemon_log();
    let file = File::options()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(|source| DaemonError::Io {
            path: path.clone(),
            source,
        })?;
    let level = std::env::var("AGENTOS_LOG_LEVEL")
        .ok()
        .filter(|l| !l.is_empty())
        .unwrap_or_else(|| level.to_string());
    let filter = tracing_subscriber::EnvFilter::try_new(&level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let json = tracing_subscriber::fmt::layer()
        .json()
        .with_current_span(true)
        .with_writer(std::sync::Mutex::new(file));
    let stderr = foreground.then(|| tracing_subscriber::fmt::layer().with_writer(std::io::stderr));
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(json)
        .with(stderr)
        .try_init();
    Ok(())
}

fn device_short(home: &Home) -> String {
    agentos_p2p::DeviceIdentity::load_or_create(&home.keys_dir())
        .map(|d| d.device_id().short())
        .unwrap_or_default()
}

/// Run the daemon in this process until it is told to stop.
pub fn run(home: Home, exe: PathBuf, foreground: bool) -> Result<(), DaemonError> {
    let _lock = lock_home(&home)?;
    let mut cfg = match config::load(&home.config_file(), None) {
        Ok(c) => c,
        Err(e) => {
            // A bad config must not keep agents unreachable: run on defaults and say so.
            eprintln!("agentos daemon: E009 {e}; using defaults");
            config::Config::default()
        }
    };
    init_logging(&home, &cfg.daemon.log_level, foreground)?;
    let io = |path: PathBuf| move |source| DaemonError::Io { path, source };
    {
        let mut f = File::create(home.pid_file()).map_err(io(home.pid_file()))?;
        writeln!(f, "{}", std::process::id()).map_err(io(home.pid_file()))?;
    }
    let (store, notice) = Store::open(&home.store_dir())?;
    let mut notices = Vec::new();
    // This device's identity (created on first run); its id names the host
    // of each agent and it is the libp2p key. A damaged key file is kept
    // (never overwritten) and this run uses a throwaway key with sync off.
    let identity = match agentos_p2p::DeviceIdentity::load_or_create(&home.keys_dir()) {
        Ok(id) => id,
        Err(e) => {
            error!(error = %e, "device identity unavailable");
            notices.push(format!(
                "E017 device identity unavailable: {e}; p2p sync is off until it is fixed"
            ));
            let mut seed = [0u8; 32];
            let _ = getrandom::fill(&mut seed);
            cfg.sync.enabled = false;
            agentos_p2p::DeviceIdentity::from_seed(seed)
        }
    };
    if let Some(n) = notice {
        error!(notice = %n, "store damaged");
        notices.push(n);
    }
    // We hold the lock, so any socket file left here is stale.
    let _ = std::fs::remove_file(&home.socket);
    if let Some(dir) = home.socket.parent() {
        std::fs::create_dir_all(dir).map_err(io(dir.to_path_buf()))?;
    }
    let std_listener =
        std::os::unix::net::UnixListener::bind(&home.socket).map_err(io(home.socket.clone()))?;
    let _ = std::fs::set_permissions(&home.socket, std::fs::Permissions::from_mode(0o600));
    std_listener
        .set_nonblocking(true)
        .map_err(io(home.socket.clone()))?;
    info!(pid = std::process::id(), device = %device_short(&home), home = %home.root.display(), socket = %home.socket.display(), "daemon starting");

    let sys = actix_rt::System::new();
    let home2 = home.clone();
    sys.block_on(async move {
        let web_cfg = cfg.web.clone();
        let web_store = store.clone();
        let node = NodeActor::new(home2.clone(), exe, store, cfg, notices, identity).start();
        if web_cfg.enabled {
            match crate::web::plan(&home2, &web_cfg)
                .and_then(|plan| crate::web::start(node.clone(), web_store, plan))
            {
                Ok(shared) => node.do_send(crate::registry::SetWeb { shared }),
                Err(e) => {
                    error!(error = %e.message, "web server unavailable");
                    node.do_send(crate::registry::Notice {
                        text: format!("{} {}; hint: {}", e.code.code(), e.message, e.hint()),
                    });
                }
            }
        }
        match tokio::net::UnixListener::from_std(std_listener) {
            Ok(listener) => {
                actix::spawn(crate::ipc::serve(listener, node, crate::ipc::Scope::Full));
            }
            Err(e) => {
                error!(error = %e, "cannot listen");
                System::current().stop();
            }
        }
        actix::spawn(async {
            use tokio::signal::unix::{SignalKind, signal};
            let (Ok(mut term), Ok(mut int)) = (
                signal(SignalKind::terminate()),
                signal(SignalKind::interrupt()),
            ) else {
                return;
            };
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
            info!("signal received; stopping (agents keep running)");
            System::current().stop();
        });
    });
    let r = sys.run();
    let _ = std::fs::remove_file(&home.socket);
    let _ = std::fs::remove_file(home.pid_file());
    info!("daemon stopped");
    r.map_err(io(home.root.clone()))
}
