//! The agent sandbox's file policy and its enforcement with Landlock.
//!
//! A policy is an allow-list: read-only trees (toolchains, system files) and
//! read-write trees (the agent's worktree, its own HOME and tmp). Everything
//! else is denied by the kernel, so the default blocked paths (`~/.ssh`,
//! `~/.aws`, `~/.gnupg`, `~/.config/agentos/keys`) are simply never granted;
//! a policy that would grant one of them (say, all of `$HOME`) is refused.
//! Landlock checks the real object, so symlinks, `../` chains and
//! `/proc/*/root` paths to a blocked file are denied too.
//!
//! Enforcement fails closed: when the kernel lacks Landlock the launcher
//! refuses to start the agent and names the way out (`--isolation none`).

pub mod audit;
pub mod cgroup;
pub mod fanotify;
pub mod launch;
pub mod notify;
pub mod seccomp;
pub mod spec;

pub use spec::{Bind, NetworkMode, SandboxSpec};

use landlock::{ABI, Access, AccessFs, CompatLevel, Compatible, Ruleset, RulesetAttr};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error(
        "Landlock is not available in this kernel (it needs Linux 5.13+ with `landlock` in the LSM list); the agent was not started. Use `--isolation none` to run it unsandboxed, explicitly"
    )]
    Unsupported,
    #[error(
        "the sandbox could not be fully enforced ({0}); the agent was not started. Use `--isolation none` to run it unsandboxed, explicitly"
    )]
    NotEnforced(String),
    #[error(
        "the policy would grant access to the protected path {blocked} through {granted}; narrow the allow-list"
    )]
    GrantsBlocked { granted: PathBuf, blocked: PathBuf },
    #[error("sandbox policy error: {0}")]
    Policy(String),
}

/// What an agent may touch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct FilePolicy {
    /// Readable (and executable) trees.
    pub read_only: Vec<PathBuf>,
    /// Readable and writable trees.
    pub read_write: Vec<PathBuf>,
    /// Never granted, for display and for refusing policies that cover them.
    pub blocked: Vec<PathBuf>,
}

/// System trees every agent may read (toolchains, libraries, config).
pub const SYSTEM_READ_ONLY: &[&str] = &[
    "/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/etc", "/opt", "/proc", "/sys", "/dev",
];
/// Device files an interactive program writes.
pub const DEVICES_READ_WRITE: &[&str] = &[
    "/dev/null",
    "/dev/zero",
    "/dev/tty",
    "/dev/pts",
    "/dev/ptmx",
    "/dev/full",
];

/// The default blocked paths under the user's home (PRD §5.3.2).
pub fn default_blocked(user_home: &Path) -> Vec<PathBuf> {
    [
        ".ssh",
        ".aws",
        ".gnupg",
        ".config/agentos/keys",
        ".config/gh",
        ".docker",
        ".netrc",
        ".git-credentials",
    ]
    .iter()
    .map(|p| user_home.join(p))
    .collect()
}

impl FilePolicy {
    /// The default policy: system trees and the agent's toolchain
    /// directories (`path_dirs`) read-only; worktree, agent home and agent
    /// tmp read-write; `extra` entries from `--allow-path`.
    pub fn default_for(
        user_home: &Path,
        worktree: &Path,
        agent_home: &Path,
        agent_tmp: &Path,
        path_dirs: &[PathBuf],
    ) -> FilePolicy {
        let mut read_only: Vec<PathBuf> = SYSTEM_READ_ONLY.iter().map(PathBuf::from).collect();
        read_only.extend(path_dirs.iter().cloned());
        let mut read_write: Vec<PathBuf> = DEVICES_READ_WRITE.iter().map(PathBuf::from).collect();
        read_write.extend([
            worktree.to_path_buf(),
            agent_home.to_path_buf(),
            agent_tmp.to_path_buf(),
        ]);
        FilePolicy {
            read_only,
            read_write,
            blocked: default_blocked(user_home),
        }
    }

    /// Refuse a policy whose allow-list covers a blocked path. Grants of
    /// `private` directories (a fresh tmpfs in the agent's view) cover
    /// nothing of the host and are exempt.
    pub fn check(&self, private: &[PathBuf]) -> Result<(), SandboxError> {
        for granted in self.read_only.iter().chain(&self.read_write) {
            if private.contains(granted) {
                continue;
            }
            let g = canonical(granted);
            for blocked in &self.blocked {
                let b = canonical(blocked);
                if b.starts_with(&g) {
                    return Err(SandboxError::GrantsBlocked {
                        granted: granted.clone(),
                        blocked: blocked.clone(),
                    });
                }
            }
        }
        Ok(())
    }
}

fn canonical(p: &Path) -> PathBuf {
    p.canonicalize().unwrap_or_else(|_| p.to_path_buf())
}

/// The Landlock ABI of the running kernel (0 when unsupported).
pub fn landlock_abi() -> u8 {
    // Tests of the fail-closed path stand in for a kernel without Landlock.
    if std::env::var_os("AGENTOS_TEST_NO_LANDLOCK").is_some() {
        return 0;
    }
    // The crate has no direct query; probe from the newest ABI down.
    for (abi, n) in [
        (ABI::V7, 7u8),
        (ABI::V6, 6),
        (ABI::V5, 5),
        (ABI::V4, 4),
        (ABI::V3, 3),
        (ABI::V2, 2),
        (ABI::V1, 1),
    ] {
        let created = Ruleset::default()
            .set_compatibility(CompatLevel::HardRequirement)
            .handle_access(AccessFs::from_all(abi))
            .and_then(|r| r.create());
        if created.is_ok() {
            return n;
        }
    }
    0
}

pub(crate) fn abi_for(n: u8) -> ABI {
    match n {
        7.. => ABI::V7,
        6 => ABI::V6,
        5 => ABI::V5,
        4 => ABI::V4,
        3 => ABI::V3,
        2 => ABI::V2,
        _ => ABI::V1,
    }
}

/// Restrict this process (and everything it execs) to `policy`. Denials are
/// logged by the kernel's audit subsystem after the next exec (ABI ≥ 7).
pub fn enforce(policy: &FilePolicy) -> Result<u8, SandboxError> {
    launch::landlock_restrict(policy, &[], None, false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_policy_covering_a_blocked_path_is_refused() {
        let home = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(home.path().join(".ssh")).unwrap();
        let mut p = FilePolicy::default_for(
            home.path(),
            Path::new("/w"),
            Path::new("/h"),
            Path::new("/t"),
            &[],
        );
        p.check(&[]).unwrap();
        p.read_only.push(home.path().to_path_buf());
        let err = p.check(&[]).unwrap_err().to_string();
        assert!(err.contains(".ssh"), "{err}");
    }

    #[test]
    fn the_kernel_speaks_landlock() {
        // Recorded so a CI log shows which ABI the sandbox tests ran against.
        eprintln!("landlock ABI {}", landlock_abi());
    }
}
