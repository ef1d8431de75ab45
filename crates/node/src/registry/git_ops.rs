//! The git side of the node: choosing the isolation level at create time,
//! and `diff`, `merge`, `overlaps`, `gc` and the destroy safety checks for
//! agents that work in worktrees. git2 calls are blocking, so the request
//! handlers run them on tokio's blocking pool.

use super::*;
use crate::worktree::{self, WorktreeError};
use agentos_crdt::WorktreeRecord;
use agentos_proto::{Isolation, MergeMode};

fn git_err(e: WorktreeError) -> ErrorInfo {
    match e {
        WorktreeError::Refused(m) => err(ErrorCode::Git, m),
        other => err(ErrorCode::Git, other.to_string()),
    }
}

/// Uncommitted files and unmerged commits of an agent's worktree.
pub(super) fn pending_work(wt: &WorktreeRecord) -> Result<(Vec<String>, usize), ErrorInfo> {
    let path = Path::new(&wt.path);
    if !path.exists() {
        return Ok((vec![], 0));
    }
    let dirty = worktree::dirty_files(path).map_err(git_err)?;
    let base = wt
        .base_branch
        .clone()
        .unwrap_or_else(|| wt.base_sha.clone());
    let unmerged =
        worktree::unmerged_commits(Path::new(&wt.repo_root), &wt.branch, &base).map_err(git_err)?;
    Ok((dirty, unmerged))
}

/// Refuse to destroy unsaved work unless forced.
pub(super) fn check_destroy(name: &str, wt: &WorktreeRecord) -> Result<(), ErrorInfo> {
    let (dirty, unmerged) = pending_work(wt)?;
    if dirty.is_empty() && unmerged == 0 {
        return Ok(());
    }
    let mut what = Vec::new();
    if !dirty.is_empty() {
        what.push(format!(
            "{} uncommitted file(s) ({})",
            dirty.len(),
            dirty.iter().take(3).cloned().collect::<Vec<_>>().join(", ")
        ));
    }
    if unmerged > 0 {
        what.push(format!(
            "{unmerged} commit(s) not merged into {}",
            wt.base_branch.as_deref().unwrap_or("its base")
        ));
    }
    Err(err(
        ErrorCode::UnmergedWork,
        format!("agent '{name}' has {} in {}", what.join(" and "), wt.path),
    ))
}

/// After the agent stopped: snapshot any work, then remove the worktree and
/// its branch. Returns the snapshot ref when one was made.
pub(super) fn teardown(
    name: &str,
    wt: &WorktreeRecord,
    template: &str,
) -> Result<Option<String>, ErrorInfo> {
    let (dirty, unmerged) = pending_work(wt)?;
    let snapshot = if !dirty.is_empty() || unmerged > 0 {
        Some(worktree::snapshot(Path::new(&wt.path), name, now_ms()).map_err(git_err)?)
    } else {
        None
    };
    worktree::remove(
        Path::new(&wt.repo_root),
        Path::new(&wt.path),
        name,
        template,
        true,
    )
    .map_err(git_err)?;
    Ok(snapshot)
}

impl NodeActor {
    /// Decide the isolation for a new agent; creates its worktree when needed.
    /// Returns the worktree record and the directory the agent starts in.
    pub(super) fn prepare_isolation(
        &self,
        requested: Isolation,
        cwd: &Path,
        agent_type: &str,
        name: &str,
        cfg: &crate::config::Config,
    ) -> Result<(Option<WorktreeRecord>, PathBuf, Isolation), ErrorInfo> {
        let repo_root = worktree::repo_root(cwd);
        let in_repo = repo_root.is_some();
        let level = match requested {
            Isolation::Auto => match cfg.isolation.default.as_str() {
                "none" => Isolation::None,
                "worktree" => Isolation::Worktree,
                "devcontainer" if in_repo => Isolation::Devcontainer,
                "docker" if in_repo => Isolation::Docker,
                _ if in_repo => Isolation::Worktree,
                _ => Isolation::None,
            },
            other => other,
        };
        match level {
            Isolation::None | Isolation::Auto => Ok((None, cwd.to_path_buf(), Isolation::None)),
            Isolation::Worktree | Isolation::Devcontainer | Isolation::Docker => {
                if !in_repo {
                    return Err(err(
                        ErrorCode::IsolationUnavailable,
                        format!(
                            "{} is not inside a git repository, so there is no worktree to create",
                            cwd.display()
                        ),
                    ));
                }
                // Containers: check the engine (and the file) before any worktree exists.
                if let (Isolation::Docker | Isolation::Devcontainer, Some(root)) =
                    (level, &repo_root)
                {
                    super::container_ops::precheck(level, root, &cfg.isolation.docker_image)?;
                }
                match worktree::create(cwd, agent_type, name, &cfg.isolation.worktree_path) {
                    Ok(w) => Ok((
                        Some(WorktreeRecord {
                            repo_root: w.repo_root.display().to_string(),
                            path: w.path.display().to_string(),
                            branch: w.branch,
                            base_sha: w.base_sha,
                            base_branch: w.base_branch,
                        }),
                        w.cwd,
                        level,
                    )),
                    // Auto on a repository without commits: run in place.
                    Err(WorktreeError::Refused(m))
                        if requested == Isolation::Auto && m.contains("no commits") =>
                    {
                        Ok((None, cwd.to_path_buf(), Isolation::None))
                    }
                    Err(e) => Err(git_err(e)),
                }
            }
        }
    }

    fn worktree_of(&self, name: &str) -> Result<WorktreeRecord, ErrorInfo> {
        let e = self.find(name)?;
        e.record.worktree.clone().ok_or_else(|| {
            err(
                ErrorCode::Git,
                format!("agent '{name}' has no worktree (it was created with --isolation none)"),
            )
        })
    }

    pub(super) fn git_request(&self, req: Request) -> ResponseActFuture<Self, Response> {
        let blocking = |f: Box<dyn FnOnce() -> Result<String, ErrorInfo> + Send>| -> ResponseActFuture<Self, Response> {
            Box::pin(
                async move {
                    match tokio::task::spawn_blocking(f).await {
                        Ok(Ok(text)) => Response::Text { text },
                        Ok(Err(e)) => error_response(e),
                        Err(e) => error_response(err(ErrorCode::Internal, e.to_string())),
                    }
                }
                .into_actor(self),
            )
        };
        let ready =
            |r: Response| -> ResponseActFuture<Self, Response> { Box::pin(actix::fut::ready(r)) };
        match req {
            Request::Diff { name, stat } => match self.worktree_of(&name) {
                Err(e) => ready(error_response(e)),
                Ok(wt) => blocking(Box::new(move || {
                    worktree::diff(Path::new(&wt.path), &wt.base_sha, stat).map_err(git_err)
                })),
            },
            Request::Merge { name, mode } => {
                match self.worktree_of(&name) {
                    Err(e) => ready(error_response(e)),
                    Ok(wt) => {
                        blocking(Box::new(move || {
                            let dirty =
                                worktree::dirty_files(Path::new(&wt.path)).map_err(git_err)?;
                            if !dirty.is_empty() {
                                return Err(err(
                                    ErrorCode::UnmergedWork,
                                    format!(
                                        "agent '{name}' has uncommitted changes ({}): commit them on {} first",
                                        dirty.join(", "),
                                        wt.branch
                                    ),
                                ));
                            }
                            let base = wt.base_branch.clone().ok_or_else(|| {
                        err(ErrorCode::Git, format!("agent '{name}' started from a detached HEAD: merge {} by hand", wt.branch))
                    })?;
                            let mode = match mode {
                                MergeMode::Merge => worktree::MergeMode::Merge,
                                MergeMode::Squash => worktree::MergeMode::Squash,
                                MergeMode::Rebase => worktree::MergeMode::Rebase,
                            };
                            worktree::merge(Path::new(&wt.repo_root), &name, &base, mode)
                                .map_err(git_err)
                        }))
                    }
                }
            }
            Request::Overlaps => {
                let mut agents: Vec<(String, WorktreeRecord)> = self
                    .agents
                    .values()
                    .filter_map(|e| {
                        e.record
                            .worktree
                            .clone()
                            .map(|w| (e.record.name.clone(), w))
                    })
                    .collect();
                agents.sort_by(|a, b| a.0.cmp(&b.0));
                blocking(Box::new(move || {
                    let mut touched = Vec::new();
                    for (name, wt) in &agents {
                        if let Ok(files) =
                            worktree::changed_files(Path::new(&wt.path), &wt.base_sha)
                        {
                            touched.push((name.clone(), wt.repo_root.clone(), files));
                        }
                    }
                    let mut out = String::new();
                    for (i, (a, ra, fa)) in touched.iter().enumerate() {
                        for (b, rb, fb) in &touched[i + 1..] {
                            if ra != rb {
                                continue;
                            }
                            let both: Vec<&String> = fa.intersection(fb).collect();
                            if !both.is_empty() {
                                out.push_str(&format!(
                                    "warning: {a} and {b} both touched {} file(s): {}\n",
                                    both.len(),
                                    both.iter()
                                        .map(|s| s.as_str())
                                        .collect::<Vec<_>>()
                                        .join(", ")
                                ));
                            }
                        }
                    }
                    if out.is_empty() {
                        out.push_str("no overlaps: no two agents have touched the same file\n");
                    }
                    Ok(out)
                }))
            }
            Request::Gc => {
                let template = self.config.isolation.worktree_path.clone();
                let live: Vec<PathBuf> = self
                    .agents
                    .values()
                    .filter_map(|e| e.record.worktree.as_ref().map(|w| PathBuf::from(&w.path)))
                    .collect();
                let mut roots: Vec<String> = self
                    .agents
                    .values()
                    .filter_map(|e| e.record.worktree.as_ref().map(|w| w.repo_root.clone()))
                    .collect();
                roots.extend(self.known_repo_roots.iter().cloned());
                roots.sort();
                roots.dedup();
                blocking(Box::new(move || {
                    let mut out = String::new();
                    let mut total = 0u64;
                    for root in roots {
                        for (path, bytes) in worktree::orphans(Path::new(&root), &template, &live)
                            .map_err(git_err)?
                        {
                            total += bytes;
                            out.push_str(&format!(
                                "orphan {}  {:.1} MB\n",
                                path.display(),
                                bytes as f64 / 1e6
                            ));
                        }
                    }
                    if out.is_empty() {
                        out.push_str("no orphan worktrees\n");
                    } else {
                        out.push_str(&format!(
                            "{:.1} MB in orphan worktrees; inspect them, then remove them with `git worktree remove <path>`\n",
                            total as f64 / 1e6
                        ));
                    }
                    Ok(out)
                }))
            }
            _ => ready(error_response(err(
                ErrorCode::Internal,
                "not a git request",
            ))),
        }
    }
}
