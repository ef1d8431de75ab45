//! Where a node keeps its files: `$AGENTOS_HOME` (default `~/.agentos`) and
//! the daemon socket (`$AGENTOS_SOCKET`, default `$AGENTOS_HOME/agentos.sock`).

use std::path::{Path, PathBuf};

/// The node's home directory layout.
#[derive(Debug, Clone)]
pub struct Home {
    pub root: PathBuf,
    pub socket: PathBuf,
}

impl Home {
    /// Resolve from the environment.
    pub fn from_env() -> Home {
        let root = match std::env::var_os("AGENTOS_HOME") {
            Some(h) if !h.is_empty() => PathBuf::from(h),
            _ => {
                let home = std::env::var_os("HOME")
                    .map(PathBuf::from)
                    .unwrap_or_else(|| PathBuf::from("/tmp"));
                home.join(".agentos")
            }
        };
        let socket = match std::env::var_os("AGENTOS_SOCKET") {
            Some(s) if !s.is_empty() => PathBuf::from(s),
            _ => root.join("agentos.sock"),
        };
        Home { root, socket }
    }

    pub fn at(root: &Path) -> Home {
        Home {
            root: root.to_path_buf(),
            socket: root.join("agentos.sock"),
        }
    }

    pub fn pid_file(&self) -> PathBuf {
        self.root.join("daemon.pid")
    }
    pub fn lock_file(&self) -> PathBuf {
        self.root.join("daemon.lock")
    }
    pub fn logs_dir(&self) -> PathBuf {
        self.root.join("logs")
    }
    pub fn daemon_log(&self) -> PathBuf {
        self.logs_dir().join("daemon.log")
    }
    /// Runtime directories of agents (`run/<id>/`: spec, log, holder socket).
    pub fn run_dir(&self) -> PathBuf {
        self.root.join("run")
    }
    pub fn agent_dir(&self, id: &str) -> PathBuf {
        self.run_dir().join(id)
    }
    pub fn store_dir(&self) -> PathBuf {
        self.root.join("store")
    }
    pub fn keys_dir(&self) -> PathBuf {
        self.root.join("keys")
    }
    pub fn config_file(&self) -> PathBuf {
        self.root.join("config.toml")
    }
    /// User agent definitions (`agents/*.toml`, named `custom/<stem>`).
    pub fn custom_agents_dir(&self) -> PathBuf {
        self.root.join("agents")
    }
    pub fn presets_dir(&self) -> PathBuf {
        self.root.join("presets")
    }

    /// Create the home with private permissions.
    pub fn ensure(&self) -> std::io::Result<()> {
        use std::os::unix::fs::PermissionsExt;
        for d in [self.root.clone(), self.logs_dir(), self.run_dir()] {
            std::fs::create_dir_all(&d)?;
        }
        std::fs::set_permissions(&self.root, std::fs::Permissions::from_mode(0o700))?;
        Ok(())
    }
}
