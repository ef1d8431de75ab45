//! Per-agent resource limits with cgroups: v2 when its hierarchy has the
//! controllers, else v1 (this kind of machine is hybrid: the v2 tree holds
//! no controllers, v1 has memory, pids, cpu and blkio). Plain cgroupfs
//! writes, no systemd. The node creates the group; the launcher joins it by
//! writing itself into `cgroup.procs` before anything else.

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Limits of one agent (from `[security]` and the agent's flags).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// Bytes of memory (no swap on top).
    pub max_memory: Option<u64>,
    /// Percent of one CPU (200 = two CPUs).
    pub max_cpu_percent: Option<u32>,
    /// Processes and threads.
    pub max_processes: Option<u64>,
    /// Bytes per second written to the worktree's block device.
    pub max_disk_write: Option<u64>,
}

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error(
        "no cgroup hierarchy offers the {controller} controller here, so `{limit}` cannot be enforced; the agent was not started. Remove the limit, or use `--isolation none` explicitly"
    )]
    Missing {
        controller: &'static str,
        limit: &'static str,
    },
    #[error("cannot set up the agent's cgroup at {path}: {error}")]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Version {
    V1,
    V2,
}

/// The cgroup(s) of one agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentCgroup {
    pub version: Version,
    /// v2: one directory; v1: one per controller hierarchy.
    pub dirs: Vec<PathBuf>,
    pub limits: Limits,
    /// Limits that could not be applied here (shown by `policy show`).
    pub notes: Vec<String>,
}

/// Counters of limit breaches.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Breaches {
    pub oom_kills: u64,
    pub pids_max: u64,
}

const ROOT: &str = "/sys/fs/cgroup";

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CgroupError + '_ {
    move |error| CgroupError::Io {
        path: path.to_path_buf(),
        error,
    }
}

fn write(path: &Path, value: &str) -> Result<(), CgroupError> {
    std::fs::write(path, value).map_err(io(path))
}

/// The v2 mount point, if any (`/sys/fs/cgroup` or the hybrid `unified`).
fn v2_root() -> Option<PathBuf> {
    [PathBuf::from(ROOT), Path::new(ROOT).join("unified")]
        .into_iter()
        .find(|p| p.join("cgroup.controllers").exists())
}

fn v2_controllers(root: &Path) -> Vec<String> {
    std::fs::read_to_string(root.join("cgroup.controllers"))
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

/// This process's path in the v1 hierarchy of `controller`.
fn v1_self_path(controller: &str) -> Option<String> {
    let text = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    text.lines().find_map(|l| {
        let mut parts = l.splitn(3, ':');
        let _id = parts.next()?;
        let ctrls = parts.next()?;
        let path = parts.next()?;
        ctrls
            .split(',')
            .any(|c| c == controller)
            .then(|| path.to_owned())
    })
}

fn v1_dir(controller: &str, agent_id: &str) -> Option<PathBuf> {
    let mount = Path::new(ROOT).join(controller);
    if !mount.join("cgroup.procs").exists() {
        return None;
    }
    let own = v1_self_path(controller)?;
    Some(
        mount
            .join(own.trim_start_matches('/'))
            .join("agentos")
            .join(agent_id),
    )
}

/// Which version this machine would use, and the controllers it offers.
pub fn probe() -> (Option<Version>, Vec<String>) {
    if let Some(root) = v2_root() {
        let c = v2_controllers(&root);
        if c.iter().any(|c| c == "memory") && c.iter().any(|c| c == "pids") {
            return (Some(Version::V2), c);
        }
    }
    let v1: Vec<String> = ["memory", "pids", "cpu", "blkio"]
        .iter()
        .filter(|c| Path::new(ROOT).join(c).join("cgroup.procs").exists())
        .map(|c| c.to_string())
        .collect();
    if v1.is_empty() {
        (None, v1)
    } else {
        (Some(Version::V1), v1)
    }
}

/// `maj:min` of the block device holding `path`.
fn device_of(path: &Path) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let dev = std::fs::metadata(path).ok()?.dev();
    let (maj, min) = (libc::major(dev), libc::minor(dev));
    // Partitions throttle through their whole disk.
    let sys = format!("/sys/dev/block/{maj}:{min}");
    let whole = std::fs::read_link(&sys)
        .ok()
        .and_then(|target| {
            let parent = Path::new(&sys).join(target).join("..").join("dev");
            std::fs::read_to_string(parent).ok()
        })
        .map(|s| s.trim().to_owned());
    Some(whole.unwrap_or_else(|| format!("{maj}:{min}")))
}

impl AgentCgroup {
    /// Create the agent's group and apply `limits`. A limit that needs a
    /// controller this machine lacks fails (never a silent no-op), except
    /// the disk-write limit, which the kernel only offers for some devices.
    pub fn create(
        agent_id: &str,
        limits: &Limits,
        worktree: &Path,
    ) -> Result<AgentCgroup, CgroupError> {
        let (version, controllers) = probe();
        let has = |c: &str| controllers.iter().any(|x| x == c);
        let need = |cond: bool, controller: &'static str, limit: &'static str| {
            if cond && !has(controller) {
                Err(CgroupError::Missing { controller, limit })
            } else {
                Ok(())
            }
        };
        let Some(version) = version else {
            need(limits.max_memory.is_some(), "memory", "max_memory")?;
            need(limits.max_processes.is_some(), "pids", "max_processes")?;
            need(limits.max_cpu_percent.is_some(), "cpu", "max_cpu_percent")?;
            return Ok(AgentCgroup {
                version: Version::V1,
                dirs: vec![],
                limits: limits.clone(),
                notes: vec!["no cgroup hierarchy is available".into()],
            });
        };
        need(limits.max_memory.is_some(), "memory", "max_memory")?;
        need(limits.max_processes.is_some(), "pids", "max_processes")?;
        need(limits.max_cpu_percent.is_some(), "cpu", "max_cpu_percent")?;
        let mut notes = Vec::new();
        let mut cg = AgentCgroup {
            version,
            dirs: vec![],
            limits: limits.clone(),
            notes: vec![],
        };
        match version {
            Version::V2 => {
                let root = v2_root().unwrap_or_else(|| PathBuf::from(ROOT));
                let parent = root.join("agentos");
                std::fs::create_dir_all(&parent).map_err(io(&parent))?;
                let mut enable = vec!["+memory", "+pids"];
                if has("cpu") {
                    enable.push("+cpu");
                }
                if has("io") {
                    enable.push("+io");
                }
                for file in [
                    root.join("cgroup.subtree_control"),
                    parent.join("cgroup.subtree_control"),
                ] {
                    write(&file, &enable.join(" "))?;
                }
                let dir = parent.join(agent_id);
                std::fs::create_dir_all(&dir).map_err(io(&dir))?;
                cg.dirs.push(dir.clone());
                if let Some(m) = limits.max_memory {
                    write(&dir.join("memory.max"), &m.to_string())?;
                    let _ = std::fs::write(dir.join("memory.swap.max"), "0");
                    write(&dir.join("memory.oom.group"), "1")?;
                }
                if let Some(p) = limits.max_processes {
                    write(&dir.join("pids.max"), &p.to_string())?;
                }
                if let Some(c) = limits.max_cpu_percent {
                    write(&dir.join("cpu.max"), &format!("{} 100000", c * 1000))?;
                }
                if let Some(w) = limits.max_disk_write {
                    match device_of(worktree) {
                        Some(dev) if has("io") => {
                            if let Err(e) =
                                std::fs::write(dir.join("io.max"), format!("{dev} wbps={w}"))
                            {
                                notes.push(format!("max_disk_write not applied on {dev}: {e}"));
                            }
                        }
                        _ => notes.push("max_disk_write: no io controller here".into()),
                    }
                }
            }
            Version::V1 => {
                for ctrl in ["memory", "pids", "cpu", "blkio"] {
                    if !has(ctrl) {
                        continue;
                    }
                    let Some(dir) = v1_dir(ctrl, agent_id) else {
                        continue;
                    };
                    std::fs::create_dir_all(&dir).map_err(io(&dir))?;
                    match ctrl {
                        "memory" => {
                            if let Some(m) = limits.max_memory {
                                write(&dir.join("memory.limit_in_bytes"), &m.to_string())?;
                                // No swap on top, where the kernel accounts it.
                                let _ = std::fs::write(
                                    dir.join("memory.memsw.limit_in_bytes"),
                                    m.to_string(),
                                );
                            }
                        }
                        "pids" => {
                            if let Some(p) = limits.max_processes {
                                write(&dir.join("pids.max"), &p.to_string())?;
                            }
                        }
                        "cpu" => {
                            if let Some(c) = limits.max_cpu_percent {
                                write(&dir.join("cpu.cfs_period_us"), "100000")?;
                                write(
                                    &dir.join("cpu.cfs_quota_us"),
                                    &(c as u64 * 1000).to_string(),
                                )?;
                            }
                        }
                        _ => {
                            if let Some(w) = limits.max_disk_write {
                                match device_of(worktree) {
                                    Some(dev) => {
                                        if let Err(e) = std::fs::write(
                                            dir.join("blkio.throttle.write_bps_device"),
                                            format!("{dev} {w}"),
                                        ) {
                                            notes.push(format!(
                                                "max_disk_write not applied on {dev}: {e}"
                                            ));
                                        }
                                    }
                                    None => notes.push("max_disk_write: unknown device".into()),
                                }
                            }
                        }
                    }
                    cg.dirs.push(dir);
                }
            }
        }
        cg.notes = notes;
        Ok(cg)
    }

    /// The files the launcher writes `0` into to join.
    pub fn procs_files(&self) -> Vec<PathBuf> {
        self.dirs.iter().map(|d| d.join("cgroup.procs")).collect()
    }

    fn read_key(path: &Path, key: &str) -> u64 {
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .find_map(|l| {
                let mut it = l.split_whitespace();
                (it.next() == Some(key)).then(|| it.next()?.parse().ok())?
            })
            .unwrap_or(0)
    }

    /// How often the limits were hit so far.
    pub fn breaches(&self) -> Breaches {
        let mut b = Breaches::default();
        for dir in &self.dirs {
            match self.version {
                Version::V2 => {
                    b.oom_kills += Self::read_key(&dir.join("memory.events"), "oom_kill");
                    b.pids_max += Self::read_key(&dir.join("pids.events"), "max");
                }
                Version::V1 => {
                    b.oom_kills += Self::read_key(&dir.join("memory.oom_control"), "oom_kill");
                    b.pids_max += Self::read_key(&dir.join("pids.events"), "max");
                }
            }
        }
        b
    }

    /// Pids still in the group.
    pub fn pids(&self) -> Vec<i32> {
        let mut out: Vec<i32> = self
            .procs_files()
            .iter()
            .flat_map(|f| {
                std::fs::read_to_string(f)
                    .unwrap_or_default()
                    .lines()
                    .filter_map(|l| l.trim().parse().ok())
                    .collect::<Vec<i32>>()
            })
            .collect();
        out.sort_unstable();
        out.dedup();
        out
    }

    /// Kill everything in the group (a fork bomb keeps forking while we
    /// kill, so repeat until it is empty, bounded).
    pub fn kill_all(&self) {
        if self.version == Version::V2 {
            for d in &self.dirs {
                let _ = std::fs::write(d.join("cgroup.kill"), "1");
            }
        }
        // v1 (and a v2 kernel without cgroup.kill): freeze by pids limit,
        // then SIGKILL until empty.
        for dir in &self.dirs {
            if dir.join("pids.max").exists() {
                let _ = std::fs::write(dir.join("pids.max"), "1");
            }
        }
        for _ in 0..200 {
            let pids = self.pids();
            if pids.is_empty() {
                return;
            }
            for pid in pids {
                // SAFETY: plain kill(2).
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                }
            }
            std::thread::yield_now();
        }
    }

    /// Remove the (empty) groups.
    pub fn remove(&self) {
        for d in &self.dirs {
            let _ = std::fs::remove_dir(d);
        }
    }

    /// Restore the process limit after `kill_all` (for a restart).
    pub fn reset_limits(&self) {
        if let Some(p) = self.limits.max_processes {
            for d in &self.dirs {
                if d.join("pids.max").exists() {
                    let _ = std::fs::write(d.join("pids.max"), p.to_string());
                }
            }
        } else {
            for d in &self.dirs {
                if d.join("pids.max").exists() {
                    let _ = std::fs::write(d.join("pids.max"), "max");
                }
            }
        }
    }
}

/// Parse sizes like `512M`, `2G`, `1048576`, `10MB`.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("'{s}' is not a size (examples: 512M, 2G, 1048576)"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        _ => return Err(format!("'{s}' has an unknown unit (use K, M, G or T)")),
    };
    Ok((n * mult as f64) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("512M").unwrap(), 512 << 20);
        assert_eq!(parse_size("2G").unwrap(), 2 << 30);
        assert_eq!(parse_size("1048576").unwrap(), 1 << 20);
        assert_eq!(parse_size("1.5k").unwrap(), 1536);
        assert!(parse_size("lots").is_err());
        assert!(parse_size("5Q").is_err());
    }

    #[test]
    fn probe_reports_this_machine() {
        // Recorded so a CI log shows which hierarchy the limit tests used.
        eprintln!("cgroups: {:?}", probe());
    }
}
