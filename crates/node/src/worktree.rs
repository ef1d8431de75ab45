//! Git worktree isolation (git2): one worktree per agent under
//! `.shards/<agent>-<name>/` on branch `agentos/<name>`, with the base SHA
//! recorded; diff against the base, merge back, overlap detection, and
//! cleanup that never destroys work (dirty or unmerged work is snapshotted to
//! `refs/agentos/snapshots/<name>/<ms>` first, and only paths inside the
//! shards directory are ever removed).

use git2::{BranchType, Repository, StatusOptions, WorktreeAddOptions};
use std::collections::BTreeSet;
use std::path::{Component, Path, PathBuf};

/// Default path template, relative to the repository's main work tree.
pub const DEFAULT_TEMPLATE: &str = ".shards/{agent}-{name}";

#[derive(Debug, thiserror::Error)]
pub enum WorktreeError {
    #[error("git: {0}")]
    Git(#[from] git2::Error),
    #[error("{0}")]
    Refused(String),
    #[error("i/o on {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// What is recorded about an agent's worktree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Worktree {
    /// The repository's main work tree.
    pub repo_root: PathBuf,
    pub path: PathBuf,
    pub branch: String,
    pub base_sha: String,
    /// The branch that was checked out when the agent was created (merge target).
    pub base_branch: Option<String>,
    /// `cwd` inside the worktree (the same relative directory the user was in).
    pub cwd: PathBuf,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> WorktreeError + '_ {
    move |source| WorktreeError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The main work tree of the repository containing `dir`, if any.
pub fn repo_root(dir: &Path) -> Option<PathBuf> {
    let repo = Repository::discover(dir).ok()?;
    if repo.is_bare() {
        return None;
    }
    let common = repo.commondir().canonicalize().ok()?;
    common.parent().map(Path::to_path_buf)
}

/// Short agent label for paths: `claude-code` → `claude`, `custom/x` → `x`.
pub fn agent_label(agent_type: &str) -> String {
    let base = agent_type.rsplit('/').next().unwrap_or(agent_type);
    match base {
        "claude-code" => "claude".into(),
        "gemini-cli" => "gemini".into(),
        "openai-codex" => "codex".into(),
        "gh-copilot" => "copilot".into(),
        "amp-code" => "amp".into(),
        other => other.to_string(),
    }
}

fn shards_dir(template: &str) -> Result<String, WorktreeError> {
    let rel = Path::new(template);
    let mut comps = rel.components();
    match (comps.next(), comps.next()) {
        (Some(Component::Normal(first)), Some(_)) => Ok(first.to_string_lossy().into_owned()),
        _ => Err(WorktreeError::Refused(format!(
            "worktree path template `{template}` must be relative and have a directory, like `.shards/{{agent}}-{{name}}`"
        ))),
    }
}

/// Add `/<dir>/` to `.git/info/exclude` (never the user's `.gitignore`).
fn exclude(repo: &Repository, dir: &str) -> Result<(), WorktreeError> {
    let info = repo.commondir().join("info");
    std::fs::create_dir_all(&info).map_err(io(&info))?;
    let file = info.join("exclude");
    let line = format!("/{dir}/");
    let cur = std::fs::read_to_string(&file).unwrap_or_default();
    if cur.lines().any(|l| l.trim() == line) {
        return Ok(());
    }
    let mut next = cur;
    if !next.is_empty() && !next.ends_with('\n') {
        next.push('\n');
    }
    next.push_str(&line);
    next.push('\n');
    std::fs::write(&file, next).map_err(io(&file))
}

/// Create (or reuse) the worktree for agent `name` of type `agent_type`,
/// starting from the commit checked out in `cwd`'s repository.
pub fn create(
    cwd: &Path,
    agent_type: &str,
    name: &str,
    template: &str,
) -> Result<Worktree, WorktreeError> {
    let cwd = cwd.canonicalize().map_err(io(cwd))?;
    let repo = Repository::discover(&cwd)?;
    if repo.is_bare() {
        return Err(WorktreeError::Refused(
            "a bare repository has no work tree to branch from".into(),
        ));
    }
    let here_root = repo
        .workdir()
        .ok_or_else(|| WorktreeError::Refused("no work tree".into()))?
        .canonicalize()
        .map_err(io(&cwd))?;
    let root = repo
        .commondir()
        .canonicalize()
        .map_err(io(repo.commondir()))?
        .parent()
        .map(Path::to_path_buf)
        .ok_or_else(|| WorktreeError::Refused("cannot find the main work tree".into()))?;
    let head = repo.head().map_err(|_| {
        WorktreeError::Refused(
            "the repository has no commits yet: commit once, or use `--isolation none`".into(),
        )
    })?;
    let base = head.peel_to_commit()?;
    let base_branch = if head.is_branch() {
        head.shorthand().map(str::to_string)
    } else {
        None
    };
    let shards = shards_dir(template)?;
    let rel = template
        .replace("{agent}", &agent_label(agent_type))
        .replace("{name}", name);
    let path = root.join(&rel);
    let main = Repository::open(&root)?;
    let base = main.find_commit(base.id())?;
    exclude(&main, &shards)?;
    let branch_name = format!("agentos/{name}");
    let branch = match main.find_branch(&branch_name, BranchType::Local) {
        Ok(b) => b,
        Err(_) => main.branch(&branch_name, &base, false)?,
    };
    let wt_name = format!("agentos-{name}");
    if path.exists() {
        return Err(WorktreeError::Refused(format!(
            "{} already exists: destroy the agent that used it, or run `agentos gc`",
            path.display()
        )));
    }
    // A stale registration (its directory is gone) would block the add.
    if let Ok(old) = main.find_worktree(&wt_name)
        && old.validate().is_err()
    {
        old.prune(Some(git2::WorktreePruneOptions::new().valid(true)))?;
    }
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(io(parent))?;
    }
    let reference = branch.into_reference();
    let mut opts = WorktreeAddOptions::new();
    opts.reference(Some(&reference));
    main.worktree(&wt_name, &path, Some(&opts))?;
    let sub = cwd.strip_prefix(&here_root).unwrap_or(Path::new(""));
    let agent_cwd = if path.join(sub).is_dir() {
        path.join(sub)
    } else {
        path.clone()
    };
    Ok(Worktree {
        repo_root: root,
        path,
        branch: branch_name,
        base_sha: base.id().to_string(),
        base_branch,
        cwd: agent_cwd,
    })
}

/// Files with uncommitted changes (including untracked) in a worktree.
pub fn dirty_files(path: &Path) -> Result<Vec<String>, WorktreeError> {
    let repo = Repository::open(path)?;
    let mut opts = StatusOptions::new();
    opts.include_untracked(true)
        .recurse_untracked_dirs(true)
        .include_ignored(false);
    let statuses = repo.statuses(Some(&mut opts))?;
    Ok(statuses
        .iter()
        .filter_map(|s| s.path().map(str::to_string))
        .collect())
}

/// Commits on the agent's branch that its base branch does not contain.
pub fn unmerged_commits(
    repo_root: &Path,
    branch: &str,
    base: &str,
) -> Result<usize, WorktreeError> {
    let repo = Repository::open(repo_root)?;
    let tip = repo
        .revparse_single(&format!("refs/heads/{branch}"))?
        .peel_to_commit()?
        .id();
    let base_tip = match repo.revparse_single(&format!("refs/heads/{base}")) {
        Ok(o) => o.peel_to_commit()?.id(),
        Err(_) => repo.revparse_single(base)?.peel_to_commit()?.id(),
    };
    let mut walk = repo.revwalk()?;
    walk.push(tip)?;
    walk.hide(base_tip)?;
    Ok(walk.count())
}

/// The diff of a worktree (committed and uncommitted) against `base_sha`.
pub fn diff(path: &Path, base_sha: &str, stat: bool) -> Result<String, WorktreeError> {
    let repo = Repository::open(path)?;
    let base = repo.revparse_single(base_sha)?.peel_to_tree()?;
    let mut opts = git2::DiffOptions::new();
    opts.include_untracked(true)
        .recurse_untracked_dirs(true)
        .show_untracked_content(true);
    let d = repo.diff_tree_to_workdir_with_index(Some(&base), Some(&mut opts))?;
    if stat {
        let s = d.stats()?;
        let buf = s.to_buf(git2::DiffStatsFormat::FULL, 80)?;
        return Ok(buf.as_str().unwrap_or("").to_string());
    }
    let mut out = Vec::new();
    d.print(git2::DiffFormat::Patch, |_, _, line| {
        match line.origin() {
            '+' | '-' | ' ' => out.push(line.origin() as u8),
            _ => {}
        }
        out.extend_from_slice(line.content());
        true
    })?;
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// Paths touched (committed or not) relative to `base_sha`.
pub fn changed_files(path: &Path, base_sha: &str) -> Result<BTreeSet<String>, WorktreeError> {
    let repo = Repository::open(path)?;
    let base = repo.revparse_single(base_sha)?.peel_to_tree()?;
    let mut opts = git2::DiffOptions::new();
    opts.include_untracked(true).recurse_untracked_dirs(true);
    let d = repo.diff_tree_to_workdir_with_index(Some(&base), Some(&mut opts))?;
    let mut set = BTreeSet::new();
    for delta in d.deltas() {
        for f in [delta.old_file().path(), delta.new_file().path()]
            .into_iter()
            .flatten()
        {
            set.insert(f.to_string_lossy().into_owned());
        }
    }
    Ok(set)
}

/// Save everything in the worktree (commits and uncommitted files) under
/// `refs/agentos/snapshots/<name>/<ms>`; returns the ref.
/// The tree of a worktree's current files (HEAD plus every dirty file),
/// staged in a separate index: the agent's own index is left alone.
fn worktree_tree<'r>(
    repo: &'r Repository,
    path: &Path,
) -> Result<(git2::Tree<'r>, git2::Commit<'r>), WorktreeError> {
    let head = repo.head()?.peel_to_commit()?;
    let mut index = git2::Index::new()?;
    let head_tree = head.tree()?;
    index.read_tree(&head_tree)?;
    let workdir = repo
        .workdir()
        .ok_or_else(|| WorktreeError::Refused("no work tree".into()))?
        .to_path_buf();
    for file in dirty_files(path)? {
        let full = workdir.join(&file);
        if full.is_file() {
            let content = std::fs::read(&full).map_err(io(&full))?;
            let oid = repo.blob(&content)?;
            let mode = {
                use std::os::unix::fs::PermissionsExt;
                let m = std::fs::metadata(&full)
                    .map_err(io(&full))?
                    .permissions()
                    .mode();
                if m & 0o111 != 0 { 0o100755 } else { 0o100644 }
            };
            let entry = git2::IndexEntry {
                ctime: git2::IndexTime::new(0, 0),
                mtime: git2::IndexTime::new(0, 0),
                dev: 0,
                ino: 0,
                mode,
                uid: 0,
                gid: 0,
                file_size: content.len() as u32,
                id: oid,
                flags: 0,
                flags_extended: 0,
                path: file.as_bytes().to_vec(),
            };
            index.add(&entry)?;
        } else {
            let _ = index.remove_path(Path::new(&file));
        }
    }
    let tree_id = index.write_tree_to(repo)?;
    Ok((repo.find_tree(tree_id)?, head))
}

fn signature(repo: &Repository) -> Result<git2::Signature<'static>, WorktreeError> {
    Ok(repo
        .signature()
        .or_else(|_| git2::Signature::now("agentos", "agentos@localhost"))?)
}

pub fn snapshot(path: &Path, name: &str, at_ms: u64) -> Result<String, WorktreeError> {
    let repo = Repository::open(path)?;
    let (tree, head) = worktree_tree(&repo, path)?;
    let sig = signature(&repo)?;
    let commit = repo.commit(
        None,
        &sig,
        &sig,
        &format!("agentos snapshot of {name}"),
        &tree,
        &[&head],
    )?;
    let refname = format!("refs/agentos/snapshots/{name}/{at_ms}");
    repo.reference(&refname, commit, true, "agentos snapshot")?;
    Ok(refname)
}

/// Commit the worktree's work in progress (every dirty file) onto its
/// branch, and line its index up with the new commit. Returns the branch's
/// tip (unchanged when nothing was dirty).
pub fn commit_wip(path: &Path, message: &str) -> Result<String, WorktreeError> {
    let repo = Repository::open(path)?;
    if dirty_files(path)?.is_empty() {
        return Ok(repo.head()?.peel_to_commit()?.id().to_string());
    }
    let (tree, head) = worktree_tree(&repo, path)?;
    let sig = signature(&repo)?;
    let commit = repo.commit(Some("HEAD"), &sig, &sig, message, &tree, &[&head])?;
    let mut idx = repo.index()?;
    idx.read_tree(&tree)?;
    idx.write()?;
    Ok(commit.to_string())
}

fn git(repo: &Path, args: &[&str]) -> Result<std::process::Output, WorktreeError> {
    let out = std::process::Command::new("git")
        .arg("-C")
        .arg(repo)
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| {
            WorktreeError::Refused(format!(
                "cannot run git (needed for bundles): {e}; install git"
            ))
        })?;
    if !out.status.success() {
        return Err(WorktreeError::Refused(format!(
            "git {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(out)
}

/// A git bundle of `branch` down to `base` (empty when they are equal).
/// libgit2 has no bundles, so this runs `git bundle`.
pub fn bundle(repo_root: &Path, branch: &str, base: &str) -> Result<Vec<u8>, WorktreeError> {
    let repo = Repository::open(repo_root)?;
    let tip = repo
        .find_branch(branch, BranchType::Local)?
        .get()
        .peel_to_commit()?
        .id();
    if tip.to_string() == base {
        return Ok(Vec::new());
    }
    let file = tempfile_path(repo_root, "bundle");
    let range = format!("^{base}");
    let r = git(
        repo_root,
        &[
            "bundle",
            "create",
            &file.display().to_string(),
            branch,
            &range,
        ],
    );
    let bytes = r.and_then(|_| std::fs::read(&file).map_err(io(&file)));
    let _ = std::fs::remove_file(&file);
    bytes
}

/// Bring a bundle's branch into this repository: `branch` points at `tip`
/// afterwards. Refuses when the repository lacks the bundle's base commit.
pub fn import_bundle(
    repo_root: &Path,
    bundle: &[u8],
    branch: &str,
    tip: &str,
) -> Result<(), WorktreeError> {
    let file = tempfile_path(repo_root, "bundle");
    if !bundle.is_empty() {
        std::fs::write(&file, bundle).map_err(io(&file))?;
        let f = file.display().to_string();
        let r = git(repo_root, &["bundle", "verify", &f]).and_then(|_| {
            git(
                repo_root,
                &[
                    "fetch",
                    "--no-tags",
                    "--quiet",
                    &f,
                    &format!("{branch}:refs/agentos/handoff/{branch}"),
                ],
            )
        });
        let _ = std::fs::remove_file(&file);
        r.map_err(|e| {
            WorktreeError::Refused(format!(
                "{e}; this clone may lack the base commit: pull the repository here first"
            ))
        })?;
    }
    let repo = Repository::open(repo_root)?;
    let oid = git2::Oid::from_str(tip).map_err(WorktreeError::Git)?;
    let commit = repo.find_commit(oid).map_err(|_| {
        WorktreeError::Refused(format!(
            "commit {tip} is not in this clone: pull the repository here first"
        ))
    })?;
    if let Ok(b) = repo.find_branch(branch, BranchType::Local)
        && b.is_head()
    {
        return Err(WorktreeError::Refused(format!(
            "{branch} is checked out here; switch away from it first"
        )));
    }
    repo.branch(branch, &commit, true)?;
    let _ = repo
        .find_reference(&format!("refs/agentos/handoff/{branch}"))
        .and_then(|mut r| r.delete());
    Ok(())
}

fn tempfile_path(repo_root: &Path, what: &str) -> PathBuf {
    let mut b = [0u8; 6];
    let _ = getrandom::fill(&mut b);
    let n: String = b.iter().map(|x| format!("{x:02x}")).collect();
    let dir = Repository::open(repo_root)
        .map(|r| r.commondir().to_path_buf())
        .unwrap_or_else(|_| std::env::temp_dir());
    dir.join(format!("agentos-{what}-{n}"))
}

/// Remove the worktree directory (only inside the shards directory) and its
/// registration; delete the branch when `delete_branch`.
pub fn remove(
    repo_root: &Path,
    path: &Path,
    name: &str,
    template: &str,
    delete_branch: bool,
) -> Result<(), WorktreeError> {
    let shards = repo_root.join(shards_dir(template)?);
    let canon = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
    let shards_canon = shards.canonicalize().unwrap_or(shards.clone());
    if !canon.starts_with(&shards_canon) || canon == shards_canon {
        return Err(WorktreeError::Refused(format!(
            "refusing to delete {}: it is not inside {}",
            canon.display(),
            shards_canon.display()
        )));
    }
    if canon.exists() {
        std::fs::remove_dir_all(&canon).map_err(io(&canon))?;
    }
    let repo = Repository::open(repo_root)?;
    if let Ok(wt) = repo.find_worktree(&format!("agentos-{name}")) {
        wt.prune(Some(
            git2::WorktreePruneOptions::new()
                .valid(true)
                .working_tree(false),
        ))?;
    }
    if delete_branch
        && let Ok(mut b) = repo.find_branch(&format!("agentos/{name}"), BranchType::Local)
    {
        b.delete()?;
    }
    Ok(())
}

/// How `merge` combines the agent's branch into its base.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MergeMode {
    Merge,
    Squash,
    Rebase,
}

/// Merge `agentos/<name>` into `base_branch`. Refuses on conflicts (listing
/// the files) and when the base branch's checked-out work tree is dirty.
pub fn merge(
    repo_root: &Path,
    name: &str,
    base_branch: &str,
    mode: MergeMode,
) -> Result<String, WorktreeError> {
    let repo = Repository::open(repo_root)?;
    let branch = format!("agentos/{name}");
    let theirs = repo
        .find_branch(&branch, BranchType::Local)?
        .get()
        .peel_to_commit()?;
    let base_ref = format!("refs/heads/{base_branch}");
    let ours = repo.revparse_single(&base_ref)?.peel_to_commit()?;
    if repo.graph_descendant_of(ours.id(), theirs.id())? || ours.id() == theirs.id() {
        return Ok(format!("{base_branch} already contains {branch}"));
    }
    let checked_out_here =
        repo.head().ok().and_then(|h| h.name().map(str::to_string)) == Some(base_ref.clone());
    if checked_out_here {
        let mut opts = StatusOptions::new();
        opts.include_untracked(false);
        if !repo.statuses(Some(&mut opts))?.is_empty() {
            return Err(WorktreeError::Refused(format!(
                "{} has uncommitted changes on {base_branch}: commit or stash them first",
                repo_root.display()
            )));
        }
    }
    let sig = repo
        .signature()
        .or_else(|_| git2::Signature::now("agentos", "agentos@localhost"))?;
    let conflicts = |idx: &git2::Index| -> Vec<String> {
        idx.conflicts()
            .map(|cs| {
                cs.filter_map(|c| c.ok())
                    .filter_map(|c| {
                        c.our
                            .or(c.their)
                            .map(|e| String::from_utf8_lossy(&e.path).into_owned())
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    let new_tip = match mode {
        MergeMode::Merge | MergeMode::Squash => {
            let mut idx = repo.merge_commits(&ours, &theirs, None)?;
            if idx.has_conflicts() {
                return Err(WorktreeError::Refused(format!(
                    "merging {branch} into {base_branch} conflicts in: {}; resolve on the agent's branch and retry",
                    conflicts(&idx).join(", ")
                )));
            }
            let tree = repo.find_tree(idx.write_tree_to(&repo)?)?;
            if mode == MergeMode::Merge && repo.graph_descendant_of(theirs.id(), ours.id())? {
                theirs.id() // fast-forward
            } else if mode == MergeMode::Merge {
                repo.commit(
                    None,
                    &sig,
                    &sig,
                    &format!("Merge {branch} into {base_branch}"),
                    &tree,
                    &[&ours, &theirs],
                )?
            } else {
                let summary = theirs.summary().unwrap_or("agent work").to_string();
                repo.commit(
                    None,
                    &sig,
                    &sig,
                    &format!("{summary} (squashed {branch})"),
                    &tree,
                    &[&ours],
                )?
            }
        }
        MergeMode::Rebase => {
            // Replay the branch's commits (oldest first) on top of the base.
            let mut walk = repo.revwalk()?;
            walk.push(theirs.id())?;
            walk.hide(ours.id())?;
            walk.set_sorting(git2::Sort::TOPOLOGICAL | git2::Sort::REVERSE)?;
            let mut tip = ours.clone();
            for oid in walk {
                let c = repo.find_commit(oid?)?;
                let mut idx = repo.cherrypick_commit(&c, &tip, 0, None)?;
                if idx.has_conflicts() {
                    return Err(WorktreeError::Refused(format!(
                        "rebasing {branch} onto {base_branch} conflicts in: {}",
                        conflicts(&idx).join(", ")
                    )));
                }
                let tree = repo.find_tree(idx.write_tree_to(&repo)?)?;
                let id = repo.commit(
                    None,
                    &c.author(),
                    &sig,
                    c.message().unwrap_or(""),
                    &tree,
                    &[&tip],
                )?;
                tip = repo.find_commit(id)?;
            }
            tip.id()
        }
    };
    if checked_out_here {
        // Check out first (the baseline is still the old HEAD), then move the ref.
        let obj = repo.find_object(new_tip, None)?;
        repo.checkout_tree(&obj, Some(git2::build::CheckoutBuilder::new().safe()))?;
    }
    repo.reference(&base_ref, new_tip, true, &format!("agentos merge {branch}"))?;
    Ok(format!(
        "merged {branch} into {base_branch} ({})",
        &new_tip.to_string()[..10]
    ))
}

/// Directories under the shards directory that no live agent uses, with
/// their size in bytes.
pub fn orphans(
    repo_root: &Path,
    template: &str,
    live: &[PathBuf],
) -> Result<Vec<(PathBuf, u64)>, WorktreeError> {
    let shards = repo_root.join(shards_dir(template)?);
    let Ok(rd) = std::fs::read_dir(&shards) else {
        return Ok(vec![]);
    };
    let live: Vec<PathBuf> = live
        .iter()
        .map(|p| p.canonicalize().unwrap_or(p.clone()))
        .collect();
    let mut out = Vec::new();
    for e in rd.flatten() {
        let p = e.path().canonicalize().unwrap_or(e.path());
        if p.is_dir() && !live.contains(&p) {
            out.push((p.clone(), dir_size(&p)));
        }
    }
    out.sort();
    Ok(out)
}

fn dir_size(p: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![p.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            match e.file_type() {
                Ok(t) if t.is_dir() => stack.push(e.path()),
                Ok(t) if t.is_file() => total += e.metadata().map(|m| m.len()).unwrap_or(0),
                _ => {}
            }
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo_with_commit(dir: &Path) -> Repository {
        let repo = Repository::init(dir).unwrap();
        {
            let mut cfg = repo.config().unwrap();
            cfg.set_str("user.name", "t").unwrap();
            cfg.set_str("user.email", "t@t").unwrap();
        }
        std::fs::write(dir.join("a.txt"), "one\n").unwrap();
        std::fs::create_dir_all(dir.join("src")).unwrap();
        std::fs::write(dir.join("src/lib.rs"), "fn x() {}\n").unwrap();
        commit_all(&repo, "init");
        repo
    }

    fn commit_all(repo: &Repository, msg: &str) {
        let mut idx = repo.index().unwrap();
        idx.add_all(["*"], git2::IndexAddOption::DEFAULT, None)
            .unwrap();
        idx.write().unwrap();
        let tree = repo.find_tree(idx.write_tree().unwrap()).unwrap();
        let sig = repo.signature().unwrap();
        let parents: Vec<git2::Commit> = repo
            .head()
            .ok()
            .and_then(|h| h.peel_to_commit().ok())
            .into_iter()
            .collect();
        let refs: Vec<&git2::Commit> = parents.iter().collect();
        repo.commit(Some("HEAD"), &sig, &sig, msg, &tree, &refs)
            .unwrap();
    }

    #[test]
    fn create_diff_merge_and_safe_removal() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("r");
        let repo = repo_with_commit(&root);
        let wt = create(&root.join("src"), "claude-code", "fix", DEFAULT_TEMPLATE).unwrap();
        assert_eq!(
            wt.path,
            root.canonicalize().unwrap().join(".shards/claude-fix")
        );
        assert_eq!(wt.branch, "agentos/fix");
        assert_eq!(wt.cwd, wt.path.join("src"));
        assert_eq!(
            wt.base_branch.as_deref(),
            Some(repo.head().unwrap().shorthand().unwrap())
        );
        let exclude = std::fs::read_to_string(root.join(".git/info/exclude")).unwrap();
        assert!(exclude.contains("/.shards/"));
        assert!(
            !root.join(".gitignore").exists(),
            "the user's .gitignore is never edited"
        );
        // The main tree does not see the worktree as untracked.
        assert!(dirty_files(&root).unwrap().is_empty());

        std::fs::write(wt.path.join("a.txt"), "two\n").unwrap();
        std::fs::write(wt.path.join("new.txt"), "new\n").unwrap();
        assert_eq!(dirty_files(&wt.path).unwrap(), vec!["a.txt", "new.txt"]);
        let d = diff(&wt.path, &wt.base_sha, false).unwrap();
        assert!(
            d.contains("-one") && d.contains("+two") && d.contains("+new"),
            "{d}"
        );
        let st = diff(&wt.path, &wt.base_sha, true).unwrap();
        assert!(st.contains("2 files changed"), "{st}");
        assert_eq!(changed_files(&wt.path, &wt.base_sha).unwrap().len(), 2);

        // Snapshot keeps uncommitted work.
        let r = snapshot(&wt.path, "fix", 42).unwrap();
        let snap = repo.revparse_single(&r).unwrap().peel_to_tree().unwrap();
        let blob = snap
            .get_path(Path::new("new.txt"))
            .unwrap()
            .to_object(&repo)
            .unwrap();
        assert_eq!(blob.as_blob().unwrap().content(), b"new\n");

        // Commit on the agent branch, then merge into the base.
        let wrepo = Repository::open(&wt.path).unwrap();
        commit_all(&wrepo, "agent work");
        assert_eq!(
            unmerged_commits(&root, "agentos/fix", wt.base_branch.as_deref().unwrap()).unwrap(),
            1
        );
        let base = wt.base_branch.clone().unwrap();
        let msg = merge(&root, "fix", &base, MergeMode::Merge).unwrap();
        assert!(msg.contains("merged"), "{msg}");
        assert_eq!(
            std::fs::read_to_string(root.join("a.txt")).unwrap(),
            "two\n",
            "fast-forwarded the checkout"
        );
        assert_eq!(unmerged_commits(&root, "agentos/fix", &base).unwrap(), 0);

        // Removal only inside .shards.
        assert!(remove(&root, &root, "fix", DEFAULT_TEMPLATE, false).is_err());
        remove(&root, &wt.path, "fix", DEFAULT_TEMPLATE, true).unwrap();
        assert!(!wt.path.exists());
        assert!(root.join("a.txt").exists());
        assert!(repo.find_branch("agentos/fix", BranchType::Local).is_err());
    }

    #[test]
    fn conflicts_are_refused_and_rebase_works() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("r");
        let repo = repo_with_commit(&root);
        let base = repo.head().unwrap().shorthand().unwrap().to_string();
        let a = create(&root, "shell", "a", DEFAULT_TEMPLATE).unwrap();
        let b = create(&root, "shell", "b", DEFAULT_TEMPLATE).unwrap();
        std::fs::write(a.path.join("a.txt"), "from a\n").unwrap();
        commit_all(&Repository::open(&a.path).unwrap(), "a");
        std::fs::write(b.path.join("a.txt"), "from b\n").unwrap();
        std::fs::write(b.path.join("b.txt"), "b\n").unwrap();
        commit_all(&Repository::open(&b.path).unwrap(), "b");
        merge(&root, "a", &base, MergeMode::Squash).unwrap();
        let err = merge(&root, "b", &base, MergeMode::Merge)
            .unwrap_err()
            .to_string();
        assert!(err.contains("conflicts in: a.txt"), "{err}");
        assert_eq!(
            std::fs::read_to_string(root.join("a.txt")).unwrap(),
            "from a\n",
            "nothing changed on refusal"
        );
        // A non-conflicting branch rebases.
        let c = create(&root, "shell", "c", DEFAULT_TEMPLATE).unwrap();
        std::fs::write(c.path.join("c.txt"), "c\n").unwrap();
        commit_all(&Repository::open(&c.path).unwrap(), "c");
        merge(&root, "c", &base, MergeMode::Rebase).unwrap();
        assert!(root.join("c.txt").exists());
        let orphans = orphans(&root, DEFAULT_TEMPLATE, std::slice::from_ref(&a.path)).unwrap();
        assert_eq!(orphans.len(), 2, "{orphans:?}");
        assert!(orphans.iter().all(|(_, size)| *size > 0));
    }
}
