//! Which workspace a directory belongs to: the git common dir when the
//! directory is inside a repository (so every worktree of a repository shares
//! one workspace), else the directory itself. The workspace id comes from the
//! tracked `.agentos/config.toml` (`[workspace] id`) when the project has one,
//! so clones on other devices share it; otherwise it is derived from the path.

use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Workspace {
    pub id: String,
    /// The git common dir, or the directory.
    pub path: PathBuf,
    /// Where `.agentos/` lives: the repository's work tree, or the directory.
    pub root: PathBuf,
}

pub fn resolve(dir: &Path) -> Workspace {
    let dir = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    let (path, root) = match git2::Repository::discover(&dir) {
        Ok(repo) => {
            let common = repo
                .commondir()
                .canonicalize()
                .unwrap_or_else(|_| repo.commondir().to_path_buf());
            // The main work tree is the parent of a non-bare common dir.
            let root = if repo.is_bare() {
                common.clone()
            } else {
                common
                    .parent()
                    .map(Path::to_path_buf)
                    .unwrap_or_else(|| dir.clone())
            };
            (common, root)
        }
        Err(_) => (dir.clone(), dir.clone()),
    };
    let id = project_id(&root).unwrap_or_else(|| {
        let h = Sha256::digest(path.to_string_lossy().as_bytes());
        format!(
            "ws-{}",
            data_encoding::BASE32_NOPAD.encode(&h[..10]).to_lowercase()
        )
    });
    Workspace { id, path, root }
}

fn project_id(root: &Path) -> Option<String> {
    let text = std::fs::read_to_string(root.join(".agentos").join("config.toml")).ok()?;
    let table: toml::Table = text.parse().ok()?;
    let id = table.get("workspace")?.get("id")?.as_str()?;
    let ok = !id.is_empty()
        && id.len() <= 64
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    ok.then(|| id.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_directory_and_git_repository() {
        let dir = tempfile::tempdir().unwrap();
        let plain = resolve(dir.path());
        assert_eq!(plain.path, dir.path().canonicalize().unwrap());
        assert!(plain.id.starts_with("ws-"));
        assert_eq!(resolve(dir.path()).id, plain.id, "stable");

        let repo_dir = dir.path().join("repo");
        let repo = git2::Repository::init(&repo_dir).unwrap();
        std::fs::create_dir_all(repo_dir.join("src/deep")).unwrap();
        let ws = resolve(&repo_dir.join("src/deep"));
        assert_eq!(ws.path, repo.commondir().canonicalize().unwrap());
        assert_eq!(ws.root, repo_dir.canonicalize().unwrap());

        std::fs::create_dir_all(repo_dir.join(".agentos")).unwrap();
        std::fs::write(
            repo_dir.join(".agentos/config.toml"),
            "[workspace]\nid = \"shared-42\"\n",
        )
        .unwrap();
        assert_eq!(resolve(&repo_dir).id, "shared-42");
    }
}
