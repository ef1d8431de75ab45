//! Container isolation without Docker calls: a safe subset of
//! `devcontainer.json` (found with [`find`], read with [`parse`]) and the
//! [`ContainerPlan`] that both `--isolation docker` and
//! `--isolation devcontainer` run (built with [`PlanBuilder`]).
//!
//! The devcontainer file comes from the repository, so it is untrusted input:
//! - it is JSONC (comments, trailing commas) and at most 1 MiB;
//! - `runArgs`, `privileged`, `capAdd`, `securityOpt`, ports and features are
//!   ignored and listed in [`ContainerPlan::warnings`];
//! - a mount of the Docker socket, `$HOME`, `~/.ssh` or anything outside the
//!   worktree is dropped with a warning;
//! - `${localEnv:X}` only expands the variables of [`LOCAL_ENV_ALLOWED`];
//! - `initializeCommand` (the one command that would run on the host) is kept
//!   in the plan but only runs when [`ContainerPlan::approve_initialize_command`]
//!   is set;
//! - whatever the file says, the container gets the hardening of docker mode
//!   (all capabilities dropped, `no-new-privileges`, a non-root user,
//!   `network none`, memory/cpu/pids limits, `init`), except that its root
//!   filesystem stays writable.
//!
//! The image needs `/bin/sh`: the container starts with a small script that
//! waits for the TTY's size and runs the lifecycle commands before it execs
//! the agent.
//!
//! Git keeps working inside: the worktree is mounted at its host path (a
//! worktree's `.git` file holds an absolute `gitdir:`), and the repository's
//! common `.git` directory is mounted at its host path **read-only**, with
//! read-write mounts only where a commit on the agent's branch writes
//! (`objects/`, the worktree's own admin directory, and the directory of the
//! agent's branch under `refs/heads/` and `logs/refs/heads/`). Hooks, config
//! and the other branches stay out of the agent's reach, so nothing it does
//! in `.git` runs on the host later.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

/// Label put on every container, with the agent id as value; cleanup lists
/// containers by it.
pub const AGENT_LABEL: &str = "agentos.agent";
/// Where the host's `agentos` binary is mounted (read-only) when the agent
/// runs under `agentos sandbox-exec` inside the container.
pub const EXE_IN_CONTAINER: &str = "/usr/local/libexec/agentos";
/// Where the Landlock policy file is mounted (read-only).
pub const POLICY_IN_CONTAINER: &str = "/run/agentos/policy.json";
/// The agent's `HOME` inside the container: a tmpfs, since the root
/// filesystem is read-only in docker mode.
pub const CONTAINER_HOME: &str = "/home/agentos";
/// The user when the worktree's owner is root (the container never runs as root).
pub const FALLBACK_USER: &str = "65534:65534";
/// The only host variables `${localEnv:X}` expands; anything else (tokens,
/// keys) would leak host secrets into the container.
pub const LOCAL_ENV_ALLOWED: &[&str] = &[
    "TERM",
    "COLORTERM",
    "LANG",
    "LANGUAGE",
    "LC_ALL",
    "LC_CTYPE",
    "LC_MESSAGES",
    "TZ",
];
/// A devcontainer.json larger than this is refused.
pub const MAX_FILE_BYTES: u64 = 1 << 20;

/// Container paths the plan owns: no devcontainer mount may land on or above them.
const RESERVED_TARGETS: &[&str] = &[EXE_IN_CONTAINER, "/run/agentos", CONTAINER_HOME, "/tmp"];
/// Container paths that may not become the workspace folder.
const SYSTEM_DIRS: &[&str] = &[
    "/", "/bin", "/boot", "/dev", "/etc", "/lib", "/lib32", "/lib64", "/proc", "/run", "/sbin",
    "/sys", "/usr", "/var", "/tmp",
];

/// What went wrong with a devcontainer file or a plan. Every message names
/// the file (or the worktree) and says how to fix it.
#[derive(Debug, thiserror::Error)]
pub enum DevcontainerError {
    #[error("cannot read {}: {source}; check that the file exists and is readable", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{} is larger than 1 MiB; a devcontainer.json is a small config file, so trim it", path.display())]
    TooLarge { path: PathBuf },
    #[error(
        "{} is not valid JSONC: {message}; fix the syntax (// and /* */ comments and trailing commas are allowed)",
        path.display()
    )]
    Syntax { path: PathBuf, message: String },
    #[error("{}: `{field}` {problem}; {fix}", path.display())]
    Invalid {
        path: PathBuf,
        field: String,
        problem: String,
        fix: String,
    },
    #[error("{}: {what} is not supported; {fix}", path.display())]
    Unsupported {
        path: PathBuf,
        what: String,
        fix: String,
    },
    #[error("{}: {problem}; {fix}", path.display())]
    Plan {
        path: PathBuf,
        problem: String,
        fix: String,
    },
}

fn invalid(path: &Path, field: &str, problem: &str, fix: &str) -> DevcontainerError {
    DevcontainerError::Invalid {
        path: path.to_path_buf(),
        field: field.to_string(),
        problem: problem.to_string(),
        fix: fix.to_string(),
    }
}

fn plan_err(path: &Path, problem: impl Into<String>, fix: impl Into<String>) -> DevcontainerError {
    DevcontainerError::Plan {
        path: path.to_path_buf(),
        problem: problem.into(),
        fix: fix.into(),
    }
}

// ------------------------------------------------------------- discovery ---

/// The devcontainer file of a worktree or repository: `.devcontainer/devcontainer.json`,
/// then `.devcontainer.json`, then `.devcontainer/<name>/devcontainer.json`
/// when exactly one such folder has one.
pub fn find(worktree_or_repo: &Path) -> Option<PathBuf> {
    let dir = worktree_or_repo.join(".devcontainer");
    for p in [
        dir.join("devcontainer.json"),
        worktree_or_repo.join(".devcontainer.json"),
    ] {
        if p.is_file() {
            return Some(p);
        }
    }
    let mut nested: Vec<PathBuf> = std::fs::read_dir(&dir)
        .ok()?
        .flatten()
        .map(|e| e.path().join("devcontainer.json"))
        .filter(|p| p.is_file())
        .collect();
    if nested.len() == 1 {
        nested.pop()
    } else {
        None
    }
}

// ----------------------------------------------------------------- model ---

/// A lifecycle command: a string runs under `/bin/sh -c`, an array is
/// executed as is, an object runs its entries in parallel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LifecycleCommand {
    Shell(String),
    Exec(Vec<String>),
    Parallel(BTreeMap<String, LifecycleCommand>),
}

/// `build` of a devcontainer file, paths as written (relative to the file).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BuildConfig {
    pub dockerfile: String,
    pub context: Option<String>,
    pub args: BTreeMap<String, String>,
    pub target: Option<String>,
}

/// A mount as written in the file (`--mount` string or object).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawMount {
    pub kind: String,
    pub source: Option<String>,
    pub target: String,
    pub read_only: bool,
    /// The entry as written, for messages.
    pub text: String,
}

/// The supported part of a devcontainer.json. Strings are as written:
/// variables are expanded when a plan is built.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DevContainer {
    pub path: PathBuf,
    pub name: Option<String>,
    pub image: Option<String>,
    pub build: Option<BuildConfig>,
    pub container_env: BTreeMap<String, String>,
    /// `null` unsets a variable.
    pub remote_env: BTreeMap<String, Option<String>>,
    pub container_user: Option<String>,
    pub remote_user: Option<String>,
    pub workspace_folder: Option<String>,
    pub mounts: Vec<RawMount>,
    pub initialize_command: Option<LifecycleCommand>,
    pub on_create_command: Option<LifecycleCommand>,
    pub update_content_command: Option<LifecycleCommand>,
    pub post_create_command: Option<LifecycleCommand>,
    pub post_start_command: Option<LifecycleCommand>,
    /// Keys that were ignored or refused, as messages.
    pub warnings: Vec<String>,
}

// ----------------------------------------------------------------- parse ---

/// Read and check a devcontainer.json (JSONC).
pub fn parse(path: &Path) -> Result<DevContainer, DevcontainerError> {
    let read_err = |source| DevcontainerError::Read {
        path: path.to_path_buf(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(read_err)?;
    if meta.len() > MAX_FILE_BYTES {
        return Err(DevcontainerError::TooLarge {
            path: path.to_path_buf(),
        });
    }
    let text = std::fs::read_to_string(path).map_err(read_err)?;
    parse_str(path, &text)
}

/// [`parse`] on text already read; `path` is used in messages and to
/// resolve relative paths later.
pub fn parse_str(path: &Path, text: &str) -> Result<DevContainer, DevcontainerError> {
    let options = jsonc_parser::ParseOptions {
        allow_comments: true,
        allow_trailing_commas: true,
        allow_loose_object_property_names: false,
        allow_missing_commas: false,
        allow_single_quoted_strings: false,
        allow_hexadecimal_numbers: false,
        allow_unary_plus_numbers: false,
        allow_bare_decimal_point_numbers: false,
        allow_non_finite_numbers: false,
        allow_extended_string_escapes: false,
    };
    let value: Value = jsonc_parser::parse_to_serde_value(text, &options).map_err(|e| {
        DevcontainerError::Syntax {
            path: path.to_path_buf(),
            message: e.to_string(),
        }
    })?;
    let Value::Object(obj) = value else {
        return Err(invalid(
            path,
            "(top level)",
            "must be a JSON object",
            "start the file with `{` and put the settings inside",
        ));
    };
    let mut dc = DevContainer {
        path: path.to_path_buf(),
        ..Default::default()
    };
    for (key, v) in &obj {
        match key.as_str() {
            "$schema" => {}
            "name" => dc.name = opt_string(path, key, v)?,
            "image" => dc.image = opt_string(path, key, v)?,
            "build" => dc.build = Some(build_config(path, v)?),
            "dockerFile" => {
                // Legacy spelling: top-level dockerFile + context.
                let dockerfile = opt_string(path, key, v)?.unwrap_or_default();
                let context = match obj.get("context") {
                    Some(c) => opt_string(path, "context", c)?,
                    None => None,
                };
                dc.build.get_or_insert_with(BuildConfig::default).dockerfile = dockerfile;
                if let (Some(b), Some(c)) = (dc.build.as_mut(), context) {
                    b.context = Some(c);
                }
            }
            "context" => {}
            "containerEnv" => dc.container_env = string_map(path, key, v)?,
            "remoteEnv" => dc.remote_env = nullable_string_map(path, key, v)?,
            "containerUser" => dc.container_user = opt_string(path, key, v)?,
            "remoteUser" => dc.remote_user = opt_string(path, key, v)?,
            "workspaceFolder" => dc.workspace_folder = opt_string(path, key, v)?,
            "mounts" => dc.mounts = mounts(path, v)?,
            "initializeCommand" => dc.initialize_command = lifecycle(path, key, v)?,
            "onCreateCommand" => dc.on_create_command = lifecycle(path, key, v)?,
            "updateContentCommand" => dc.update_content_command = lifecycle(path, key, v)?,
            "postCreateCommand" => dc.post_create_command = lifecycle(path, key, v)?,
            "postStartCommand" => dc.post_start_command = lifecycle(path, key, v)?,
            "postAttachCommand" => dc.warnings.push(format!(
                "{}: postAttachCommand is ignored: an agent does not attach like an editor; use postStartCommand",
                path.display()
            )),
            "runArgs" | "privileged" | "capAdd" | "securityOpt" => dc.warnings.push(format!(
                "{}: `{key}` is refused and ignored: the container always gets AgentOS's hardening \
                 (no capabilities, no-new-privileges, no network)",
                path.display()
            )),
            "init" => {}
            "overrideCommand" => {
                if v == &Value::Bool(false) {
                    dc.warnings.push(format!(
                        "{}: overrideCommand false is ignored: the agent is the container's command",
                        path.display()
                    ));
                }
            }
            "workspaceMount" => dc.warnings.push(format!(
                "{}: workspaceMount is ignored: the worktree is always mounted at its host path \
                 (and at workspaceFolder when that is set)",
                path.display()
            )),
            "features" => {
                if v.as_object().is_none_or(|m| !m.is_empty()) {
                    dc.warnings.push(format!(
                        "{}: features are not supported (they need a registry) and are ignored; \
                         install the tools in the image or its Dockerfile instead",
                        path.display()
                    ));
                }
            }
            "dockerComposeFile" | "service" | "runServices" => {
                return Err(DevcontainerError::Unsupported {
                    path: path.to_path_buf(),
                    what: format!("`{key}` (Docker Compose)"),
                    fix: "use `image` or `build.dockerfile` for the agent's container".into(),
                });
            }
            "forwardPorts" | "appPort" | "portsAttributes" | "otherPortsAttributes" => {
                dc.warnings.push(format!(
                    "{}: `{key}` is ignored: the agent's container has no network",
                    path.display()
                ))
            }
            "updateRemoteUserUID" => dc.warnings.push(format!(
                "{}: updateRemoteUserUID is not applied; the user's uid is used as it is in the image",
                path.display()
            )),
            "customizations" | "hostRequirements" | "shutdownAction" | "waitFor"
            | "userEnvProbe" => dc.warnings.push(format!(
                "{}: `{key}` is ignored by AgentOS",
                path.display()
            )),
            other => dc.warnings.push(format!(
                "{}: unknown key `{other}` is ignored",
                path.display()
            )),
        }
    }
    match (&dc.image, &dc.build) {
        (None, None) => {
            return Err(invalid(
                path,
                "image",
                "is missing (and there is no `build.dockerfile`)",
                "add \"image\": \"<local image>\" or a \"build\": { \"dockerfile\": \"Dockerfile\" }",
            ));
        }
        (_, Some(b)) if b.dockerfile.is_empty() => {
            return Err(invalid(
                path,
                "build.dockerfile",
                "is missing",
                "name the Dockerfile, relative to the devcontainer.json",
            ));
        }
        (Some(_), Some(_)) => dc.warnings.push(format!(
            "{}: both `image` and `build` are set; `build` is used",
            path.display()
        )),
        _ => {}
    }
    Ok(dc)
}

fn opt_string(path: &Path, key: &str, v: &Value) -> Result<Option<String>, DevcontainerError> {
    match v {
        Value::Null => Ok(None),
        Value::String(s) if s.contains('\0') => {
            Err(invalid(path, key, "contains a NUL character", "remove it"))
        }
        Value::String(s) => Ok(Some(s.clone())),
        _ => Err(invalid(
            path,
            key,
            "must be a string",
            "write it in double quotes",
        )),
    }
}

fn object<'a>(
    path: &Path,
    key: &str,
    v: &'a Value,
) -> Result<&'a Map<String, Value>, DevcontainerError> {
    v.as_object().ok_or_else(|| {
        invalid(
            path,
            key,
            "must be an object",
            "write it as { \"NAME\": \"value\", … }",
        )
    })
}

fn check_env_name(path: &Path, key: &str, name: &str) -> Result<(), DevcontainerError> {
    if name.is_empty() || name.contains('=') || name.contains('\0') {
        return Err(invalid(
            path,
            &format!("{key}.{name}"),
            "is not a valid environment variable name",
            "use letters, digits and underscores",
        ));
    }
    Ok(())
}

fn string_map(
    path: &Path,
    key: &str,
    v: &Value,
) -> Result<BTreeMap<String, String>, DevcontainerError> {
    let mut out = BTreeMap::new();
    for (k, v) in object(path, key, v)? {
        check_env_name(path, key, k)?;
        let field = format!("{key}.{k}");
        match opt_string(path, &field, v)? {
            Some(s) => out.insert(k.clone(), s),
            None => {
                return Err(invalid(path, &field, "must be a string", "give it a value"));
            }
        };
    }
    Ok(out)
}

fn nullable_string_map(
    path: &Path,
    key: &str,
    v: &Value,
) -> Result<BTreeMap<String, Option<String>>, DevcontainerError> {
    let mut out = BTreeMap::new();
    for (k, v) in object(path, key, v)? {
        check_env_name(path, key, k)?;
        out.insert(k.clone(), opt_string(path, &format!("{key}.{k}"), v)?);
    }
    Ok(out)
}

fn build_config(path: &Path, v: &Value) -> Result<BuildConfig, DevcontainerError> {
    let obj = object(path, "build", v)?;
    let mut b = BuildConfig::default();
    for (k, v) in obj {
        let field = format!("build.{k}");
        match k.as_str() {
            "dockerfile" | "dockerFile" => {
                b.dockerfile = opt_string(path, &field, v)?.unwrap_or_default()
            }
            "context" => b.context = opt_string(path, &field, v)?,
            "target" => b.target = opt_string(path, &field, v)?,
            "args" => b.args = string_map(path, &field, v)?,
            _ => {}
        }
    }
    Ok(b)
}

fn lifecycle(
    path: &Path,
    key: &str,
    v: &Value,
) -> Result<Option<LifecycleCommand>, DevcontainerError> {
    fn one(path: &Path, key: &str, v: &Value) -> Result<LifecycleCommand, DevcontainerError> {
        match v {
            Value::String(s) if !s.contains('\0') => Ok(LifecycleCommand::Shell(s.clone())),
            Value::Array(items) if !items.is_empty() => {
                let mut argv = Vec::new();
                for i in items {
                    match i {
                        Value::String(s) if !s.contains('\0') => argv.push(s.clone()),
                        _ => {
                            return Err(invalid(
                                path,
                                key,
                                "has an array entry that is not a string",
                                "write every argument as a string",
                            ));
                        }
                    }
                }
                Ok(LifecycleCommand::Exec(argv))
            }
            _ => Err(invalid(
                path,
                key,
                "must be a string, a non-empty array of strings, or an object of those",
                "write the command as \"make setup\" or [\"make\", \"setup\"]",
            )),
        }
    }
    match v {
        Value::Null => Ok(None),
        Value::Object(m) => {
            let mut out = BTreeMap::new();
            for (name, c) in m {
                out.insert(name.clone(), one(path, &format!("{key}.{name}"), c)?);
            }
            Ok(Some(LifecycleCommand::Parallel(out)))
        }
        v => one(path, key, v).map(Some),
    }
}

fn mounts(path: &Path, v: &Value) -> Result<Vec<RawMount>, DevcontainerError> {
    let Value::Array(items) = v else {
        return Err(invalid(
            path,
            "mounts",
            "must be an array",
            "write [\"source=…,target=…,type=bind\", …]",
        ));
    };
    let mut out = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let field = format!("mounts[{i}]");
        let m = match item {
            Value::String(s) => parse_mount_string(path, &field, s)?,
            Value::Object(o) => {
                let get = |k: &str| -> Result<Option<String>, DevcontainerError> {
                    match o.get(k) {
                        Some(v) => opt_string(path, &format!("{field}.{k}"), v),
                        None => Ok(None),
                    }
                };
                let read_only = matches!(o.get("readonly"), Some(Value::Bool(true)))
                    || matches!(o.get("readOnly"), Some(Value::Bool(true)));
                RawMount {
                    kind: get("type")?.unwrap_or_else(|| "bind".into()),
                    source: get("source")?,
                    target: get("target")?.ok_or_else(|| {
                        invalid(path, &field, "has no target", "add \"target\": \"/path\"")
                    })?,
                    read_only,
                    text: serde_json::to_string(item).unwrap_or_default(),
                }
            }
            _ => {
                return Err(invalid(
                    path,
                    &field,
                    "must be a string or an object",
                    "write \"source=…,target=…,type=bind\"",
                ));
            }
        };
        out.push(m);
    }
    Ok(out)
}

/// `source=a,target=b,type=bind,readonly`, as `docker run --mount` takes it.
fn parse_mount_string(path: &Path, field: &str, s: &str) -> Result<RawMount, DevcontainerError> {
    let mut m = RawMount {
        kind: "volume".into(),
        source: None,
        target: String::new(),
        read_only: false,
        text: s.to_string(),
    };
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (k, v) = part.split_once('=').unwrap_or((part, ""));
        match k.to_ascii_lowercase().as_str() {
            "type" => m.kind = v.to_string(),
            "source" | "src" => m.source = Some(v.to_string()),
            "target" | "destination" | "dst" => m.target = v.to_string(),
            "readonly" | "ro" => m.read_only = !matches!(v, "false" | "0"),
            _ => {}
        }
    }
    if m.target.is_empty() {
        return Err(invalid(
            path,
            field,
            &format!("({s:?}) has no target"),
            "add target=/path",
        ));
    }
    Ok(m)
}

// ------------------------------------------------------------- variables ---

/// What `${…}` variables expand to.
#[derive(Debug, Clone)]
struct Vars {
    local_workspace: String,
    container_workspace: String,
    devcontainer_id: String,
    local_env: BTreeMap<String, String>,
}

impl Vars {
    /// Expand the variables in `s`. `${containerEnv:X}` is kept as written
    /// when `keep_container_env` (it is resolved against the image's
    /// environment when the container is created), else expands to nothing.
    fn expand(
        &self,
        s: &str,
        field: &str,
        keep_container_env: bool,
        warnings: &mut Vec<String>,
    ) -> String {
        let mut out = String::with_capacity(s.len());
        let mut rest = s;
        while let Some(start) = rest.find("${") {
            out.push_str(&rest[..start]);
            let after = &rest[start + 2..];
            let Some(end) = after.find('}') else {
                out.push_str(&rest[start..]);
                return out;
            };
            let inner = &after[..end];
            rest = &after[end + 1..];
            let (name, arg) = inner.split_once(':').unwrap_or((inner, ""));
            match name {
                "localWorkspaceFolder" => out.push_str(&self.local_workspace),
                "localWorkspaceFolderBasename" => out.push_str(basename(&self.local_workspace)),
                "containerWorkspaceFolder" => out.push_str(&self.container_workspace),
                "containerWorkspaceFolderBasename" => {
                    out.push_str(basename(&self.container_workspace))
                }
                "devcontainerId" => out.push_str(&self.devcontainer_id),
                "localEnv" | "env" => {
                    let (var, default) = arg.split_once(':').unwrap_or((arg, ""));
                    if LOCAL_ENV_ALLOWED.contains(&var) {
                        match self.local_env.get(var) {
                            Some(v) => out.push_str(v),
                            None => out.push_str(default),
                        }
                    } else {
                        warnings.push(format!(
                            "{field}: ${{{inner}}} expands to {default:?}: only {} are passed from the host",
                            LOCAL_ENV_ALLOWED.join(", ")
                        ));
                        out.push_str(default);
                    }
                }
                "containerEnv" if keep_container_env => {
                    out.push_str("${");
                    out.push_str(inner);
                    out.push('}');
                }
                _ => warnings.push(format!(
                    "{field}: unknown variable ${{{inner}}} expands to nothing"
                )),
            }
        }
        out.push_str(rest);
        out
    }
}

fn basename(p: &str) -> &str {
    p.trim_end_matches('/').rsplit('/').next().unwrap_or("")
}

/// Resolve the `${containerEnv:X}` references left in a plan's environment
/// (from `remoteEnv`), given the container's environment (the image's `Env`
/// with `containerEnv` applied). Unknown names expand to nothing.
pub fn resolve_container_env(value: &str, container_env: &BTreeMap<String, String>) -> String {
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(start) = rest.find("${containerEnv:") {
        out.push_str(&rest[..start]);
        let after = &rest[start + "${containerEnv:".len()..];
        let Some(end) = after.find('}') else {
            out.push_str(&rest[start..]);
            return out;
        };
        let (var, default) = after[..end].split_once(':').unwrap_or((&after[..end], ""));
        out.push_str(
            container_env
                .get(var)
                .map(String::as_str)
                .unwrap_or(default),
        );
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    out
}

// ------------------------------------------------------------------ plan ---

/// Which isolation level produced a plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PlanMode {
    Docker,
    Devcontainer,
}

/// Where the container's image comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum ImageSource {
    /// A local image (there is no registry to pull from).
    Image { name: String },
    /// Built from a Dockerfile; paths are absolute host paths inside the worktree.
    Build {
        dockerfile: PathBuf,
        context: PathBuf,
        args: BTreeMap<String, String>,
        target: Option<String>,
        /// The tag the built image gets.
        tag: String,
    },
}

impl ImageSource {
    /// The image name the container is created from.
    pub fn name(&self) -> &str {
        match self {
            ImageSource::Image { name } => name,
            ImageSource::Build { tag, .. } => tag,
        }
    }
}

/// A mount of the container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MountSpec {
    /// Absolute host path (bind mounts).
    pub source: PathBuf,
    /// Absolute container path.
    pub target: PathBuf,
    pub read_only: bool,
}

/// Resource limits (cgroup, applied by the engine).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// Memory and memory+swap (no swap), bytes.
    pub memory_bytes: i64,
    /// CPUs in units of 10⁻⁹ CPU.
    pub nano_cpus: i64,
    /// Maximum number of processes/threads.
    pub pids: i64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            memory_bytes: 4 << 30,
            nano_cpus: 2_000_000_000,
            pids: 1024,
        }
    }
}

/// Everything `agentos container-run` needs to start one agent's container.
/// Written by the node as JSON; holds no secrets beyond the agent's own
/// environment, so keep it in the agent's run directory (0600).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerPlan {
    pub agent_id: String,
    pub mode: PlanMode,
    /// `agentos-<agent id>`.
    pub container_name: String,
    pub image: ImageSource,
    /// The agent's command as given.
    pub command: Vec<String>,
    /// What the container runs: the lifecycle wrapper and `sandbox-exec`
    /// (when they apply) followed by `command`. Becomes the entrypoint.
    pub entrypoint: Vec<String>,
    /// `uid:gid` or a user name of the image; never root.
    pub user: String,
    /// Container working directory.
    pub working_dir: PathBuf,
    /// Environment, in order. Values from `remoteEnv` may still hold
    /// `${containerEnv:X}` (see [`resolve_container_env`]).
    pub env: Vec<(String, String)>,
    pub mounts: Vec<MountSpec>,
    /// tmpfs mounts: container path → mount options.
    pub tmpfs: BTreeMap<String, String>,
    pub readonly_rootfs: bool,
    pub limits: Limits,
    /// Always `none`: the node adds its proxy inside this network namespace.
    pub network_mode: String,
    pub labels: BTreeMap<String, String>,
    /// Host path of the Landlock policy (JSON `agentos_sandbox::FilePolicy`).
    pub landlock_policy: Option<PathBuf>,
    /// Host path of the `agentos` binary mounted for `sandbox-exec`.
    pub agentos_exe: Option<PathBuf>,
    /// The host worktree (where an approved `initializeCommand` runs).
    pub host_workspace: PathBuf,
    /// The devcontainer file the plan came from.
    pub config_file: Option<PathBuf>,
    /// `initializeCommand`: runs on the host, so only with approval.
    pub initialize_command: Option<LifecycleCommand>,
    /// Set (by the node, after asking the user) to run `initializeCommand`.
    pub approve_initialize_command: bool,
    /// What was ignored or refused, for the user.
    pub warnings: Vec<String>,
}

impl ContainerPlan {
    /// The label filter value for this plan's agent.
    pub fn agent_label(&self) -> (String, String) {
        (AGENT_LABEL.to_string(), self.agent_id.clone())
    }

    /// Read a plan written with [`ContainerPlan::write`].
    pub fn read(path: &Path) -> Result<ContainerPlan, DevcontainerError> {
        let text = std::fs::read(path).map_err(|source| DevcontainerError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        serde_json::from_slice(&text).map_err(|e| {
            plan_err(
                path,
                format!("is not a container plan: {e}"),
                "let the node write it (ContainerPlan::write)",
            )
        })
    }

    /// Write the plan as JSON, mode 0600 (it holds the agent's environment).
    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let text = serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?;
        let tmp = path.with_extension("json.tmp");
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(&text)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    }

    /// The plan as the user sees it before it runs.
    pub fn describe(&self) -> String {
        let mut s = format!(
            "container {} from {} as user {} in {} ({} mounts, network {}, memory {} MiB, pids {})",
            self.container_name,
            self.image.name(),
            self.user,
            self.working_dir.display(),
            self.mounts.len(),
            self.network_mode,
            self.limits.memory_bytes >> 20,
            self.limits.pids
        );
        for w in &self.warnings {
            s.push_str("\n  warning: ");
            s.push_str(w);
        }
        s
    }
}

/// How a plan is put together. `docker` mode takes an image; `devcontainer`
/// mode takes a parsed file. Both give the same hardening.
///
/// ```no_run
/// # use agentos_node::devcontainer::*;
/// # use std::path::Path;
/// let wt = Path::new("/repo/.shards/claude-x");
/// let plan = PlanBuilder::docker("a1b2c3", "agentos-test-base:bookworm", wt)
///     .command(vec!["claude".into()])
///     .env("TERM", "xterm-256color")
///     .build()?;
/// # Ok::<(), DevcontainerError>(())
/// ```
#[derive(Debug, Clone)]
pub struct PlanBuilder {
    agent_id: String,
    mode: PlanMode,
    image: Option<String>,
    devcontainer: Option<DevContainer>,
    worktree: PathBuf,
    cwd: Option<PathBuf>,
    command: Vec<String>,
    env: Vec<(String, String)>,
    user: Option<String>,
    limits: Limits,
    landlock_policy: Option<PathBuf>,
    agentos_exe: Option<PathBuf>,
    local_env: BTreeMap<String, String>,
    host_home: Option<PathBuf>,
    approve_initialize: bool,
    node_mounts: Vec<MountSpec>,
}

impl PlanBuilder {
    /// `--isolation docker`: a hardened container from `image`, with a
    /// read-only root filesystem.
    pub fn docker(agent_id: &str, image: &str, worktree: &Path) -> PlanBuilder {
        PlanBuilder::new(agent_id, PlanMode::Docker, worktree).with_image(image)
    }

    /// `--isolation devcontainer`: the image, environment, user, mounts and
    /// lifecycle commands of `dc`, with docker mode's hardening (the root
    /// filesystem stays writable).
    pub fn devcontainer(agent_id: &str, dc: DevContainer, worktree: &Path) -> PlanBuilder {
        let mut b = PlanBuilder::new(agent_id, PlanMode::Devcontainer, worktree);
        b.devcontainer = Some(dc);
        b
    }

    fn new(agent_id: &str, mode: PlanMode, worktree: &Path) -> PlanBuilder {
        PlanBuilder {
            agent_id: agent_id.to_string(),
            mode,
            image: None,
            devcontainer: None,
            worktree: worktree.to_path_buf(),
            cwd: None,
            command: Vec::new(),
            env: Vec::new(),
            user: None,
            limits: Limits::default(),
            landlock_policy: None,
            agentos_exe: None,
            local_env: std::env::vars()
                .filter(|(k, _)| LOCAL_ENV_ALLOWED.contains(&k.as_str()))
                .collect(),
            host_home: std::env::var_os("HOME").map(PathBuf::from),
            approve_initialize: false,
            node_mounts: Vec::new(),
        }
    }

    fn with_image(mut self, image: &str) -> Self {
        self.image = Some(image.to_string());
        self
    }

    /// Where the agent starts (inside the worktree; default: its root).
    pub fn cwd(mut self, cwd: &Path) -> Self {
        self.cwd = Some(cwd.to_path_buf());
        self
    }

    /// The agent's command.
    pub fn command(mut self, argv: Vec<String>) -> Self {
        self.command = argv;
        self
    }

    /// One variable of the agent's environment; the devcontainer file cannot
    /// override it.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_string(), value.to_string()));
        self
    }

    /// Several variables (see [`PlanBuilder::env`]).
    pub fn envs(mut self, vars: impl IntoIterator<Item = (String, String)>) -> Self {
        self.env.extend(vars);
        self
    }

    /// The container user (`uid:gid` or a name); default: the worktree's
    /// owner (uid 0 without capabilities when the node runs as root). An
    /// explicit root user (repository input) is refused.
    pub fn user(mut self, user: &str) -> Self {
        self.user = Some(user.to_string());
        self
    }

    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Run the agent under `agentos sandbox-exec --policy <file>` inside the
    /// container (host path of a JSON `FilePolicy`).
    pub fn landlock_policy(mut self, policy: &Path) -> Self {
        self.landlock_policy = Some(policy.to_path_buf());
        self
    }

    /// The `agentos` binary to mount for `sandbox-exec` (default: this process's).
    pub fn agentos_exe(mut self, exe: &Path) -> Self {
        self.agentos_exe = Some(exe.to_path_buf());
        self
    }

    /// The host variables `${localEnv:X}` may read (default: this process's,
    /// filtered by [`LOCAL_ENV_ALLOWED`]); pass the client's environment.
    pub fn local_env(mut self, vars: impl IntoIterator<Item = (String, String)>) -> Self {
        self.local_env = vars
            .into_iter()
            .filter(|(k, _)| LOCAL_ENV_ALLOWED.contains(&k.as_str()))
            .collect();
        self
    }

    /// The user's home on the host, never mountable (default: `$HOME`).
    pub fn host_home(mut self, home: &Path) -> Self {
        self.host_home = Some(home.to_path_buf());
        self
    }

    /// A bind mount the node itself needs (for example the agent's run
    /// directory, for hook settings and `agentos hook`). Trusted: it is not
    /// held to the devcontainer mount rules, so never pass repository input.
    pub fn bind(mut self, source: &Path, target: &Path, read_only: bool) -> Self {
        self.node_mounts.push(MountSpec {
            source: source.to_path_buf(),
            target: target.to_path_buf(),
            read_only,
        });
        self
    }

    /// Allow `initializeCommand` to run on the host (after the user agreed).
    pub fn approve_initialize_command(mut self, yes: bool) -> Self {
        self.approve_initialize = yes;
        self
    }

    /// Check everything and produce the plan. Reads the worktree's git
    /// layout and may create the empty git directories that get mounted
    /// read-write (`refs/heads/<prefix>/`, `logs/refs/heads/<prefix>/`).
    pub fn build(self) -> Result<ContainerPlan, DevcontainerError> {
        let file = self
            .devcontainer
            .as_ref()
            .map(|d| d.path.clone())
            .unwrap_or_else(|| self.worktree.clone());
        if self.agent_id.is_empty()
            || !self
                .agent_id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(plan_err(
                &file,
                format!("agent id {:?} cannot name a container", self.agent_id),
                "use letters, digits, '-' and '_'",
            ));
        }
        if self.command.is_empty() {
            return Err(plan_err(
                &file,
                "the agent has no command",
                "pass the agent's argv to PlanBuilder::command",
            ));
        }
        let worktree = self.worktree.canonicalize().map_err(|e| {
            plan_err(
                &self.worktree,
                format!("the worktree cannot be used: {e}"),
                "create the worktree before planning its container",
            )
        })?;
        let cwd = match &self.cwd {
            Some(c) => c.canonicalize().map_err(|e| {
                plan_err(
                    c,
                    format!("the working directory cannot be used: {e}"),
                    "pass a directory inside the worktree",
                )
            })?,
            None => worktree.clone(),
        };
        let Ok(cwd_rel) = cwd.strip_prefix(&worktree).map(Path::to_path_buf) else {
            return Err(plan_err(
                &cwd,
                format!("is outside the worktree {}", worktree.display()),
                "start the agent inside its worktree",
            ));
        };
        let mut warnings = Vec::new();
        let mut env: Vec<(String, String)> = vec![("HOME".into(), CONTAINER_HOME.into())];
        let mut mounts = Vec::new();
        let host_ws = worktree.display().to_string();
        mounts.push(MountSpec {
            source: worktree.clone(),
            target: worktree.clone(),
            read_only: false,
        });
        mounts.extend(git_mounts(&worktree, &mut warnings)?);
        mounts.extend(self.node_mounts.iter().cloned());

        let dc = self.devcontainer.clone();
        let devcontainer_id = short_hash(&format!(
            "{}\0{}",
            host_ws,
            dc.as_ref()
                .map(|d| d.path.display().to_string())
                .unwrap_or_default()
        ));
        // The container's workspace folder: the host path, or workspaceFolder.
        let mut container_ws = worktree.clone();
        if let Some(wf) = dc.as_ref().and_then(|d| d.workspace_folder.clone()) {
            let vars = Vars {
                local_workspace: host_ws.clone(),
                container_workspace: host_ws.clone(),
                devcontainer_id: devcontainer_id.clone(),
                local_env: self.local_env.clone(),
            };
            let wf = vars.expand(&wf, "workspaceFolder", false, &mut warnings);
            match check_container_path(&wf) {
                Ok(p) if SYSTEM_DIRS.iter().any(|s| Path::new(s) == p)
                    || reserved_overlap(&p) =>
                {
                    warnings.push(format!(
                        "{}: workspaceFolder {wf:?} would hide a system directory; the worktree stays at {host_ws}",
                        file.display()
                    ))
                }
                Ok(p) => container_ws = p,
                Err(why) => warnings.push(format!(
                    "{}: workspaceFolder {wf:?} {why}; the worktree stays at {host_ws}",
                    file.display()
                )),
            }
        }
        if container_ws != worktree {
            mounts.push(MountSpec {
                source: worktree.clone(),
                target: container_ws.clone(),
                read_only: false,
            });
        }
        let working_dir = if cwd_rel.as_os_str().is_empty() {
            container_ws.clone()
        } else {
            container_ws.join(&cwd_rel)
        };
        let vars = Vars {
            local_workspace: host_ws.clone(),
            container_workspace: container_ws.display().to_string(),
            devcontainer_id: devcontainer_id.clone(),
            local_env: self.local_env.clone(),
        };

        let mut labels = BTreeMap::new();
        labels.insert(AGENT_LABEL.to_string(), self.agent_id.clone());
        labels.insert("agentos.worktree".to_string(), host_ws.clone());

        let mut lifecycle: Vec<(&'static str, LifecycleCommand)> = Vec::new();
        let mut initialize_command = None;
        let mut dc_user = None;
        let image = match &dc {
            None => ImageSource::Image {
                name: self.image.clone().unwrap_or_default(),
            },
            Some(dc) => {
                let f = dc.path.display().to_string();
                warnings.extend(dc.warnings.iter().cloned());
                labels.insert("devcontainer.local_folder".into(), host_ws.clone());
                labels.insert("devcontainer.config_file".into(), f.clone());
                for (k, v) in &dc.container_env {
                    let v = vars.expand(v, &format!("{f}: containerEnv.{k}"), false, &mut warnings);
                    env.push((k.clone(), v));
                }
                for (k, v) in &dc.remote_env {
                    match v {
                        Some(v) => {
                            let v =
                                vars.expand(v, &format!("{f}: remoteEnv.{k}"), true, &mut warnings);
                            env.push((k.clone(), v));
                        }
                        None => env.retain(|(key, _)| key != k),
                    }
                }
                for m in &dc.mounts {
                    match check_mount(
                        m,
                        &vars,
                        &worktree,
                        self.host_home.as_deref(),
                        &mut warnings,
                    ) {
                        Ok(Some(spec)) => mounts.push(spec),
                        Ok(None) => {}
                        Err(why) => warnings.push(format!(
                            "{f}: mount {:?} is refused and ignored: {why}",
                            m.text
                        )),
                    }
                }
                dc_user = match (&dc.remote_user, &dc.container_user) {
                    (Some(r), Some(c)) if r != c => {
                        warnings.push(format!(
                            "{f}: containerUser {c:?} is not used: the agent and the lifecycle commands run as remoteUser {r:?}"
                        ));
                        Some(r.clone())
                    }
                    (Some(u), _) | (None, Some(u)) => Some(u.clone()),
                    (None, None) => None,
                };
                let expand_cmd = |c: &LifecycleCommand, field: &str, w: &mut Vec<String>| {
                    expand_lifecycle(c, &vars, &format!("{f}: {field}"), w)
                };
                for (name, c) in [
                    ("onCreateCommand", &dc.on_create_command),
                    ("updateContentCommand", &dc.update_content_command),
                    ("postCreateCommand", &dc.post_create_command),
                    ("postStartCommand", &dc.post_start_command),
                ] {
                    if let Some(c) = c {
                        lifecycle.push((name, expand_cmd(c, name, &mut warnings)));
                    }
                }
                if let Some(c) = &dc.initialize_command {
                    let c = expand_cmd(c, "initializeCommand", &mut warnings);
                    if !self.approve_initialize {
                        warnings.push(format!(
                            "{f}: initializeCommand is skipped: it would run on the host, outside the container; \
                             approve it explicitly to run it"
                        ));
                    }
                    initialize_command = Some(c);
                }
                match &dc.build {
                    Some(b) => build_source(dc, b, &vars, &worktree, &mut warnings)?,
                    None => ImageSource::Image {
                        name: vars.expand(
                            dc.image.as_deref().unwrap_or_default(),
                            &format!("{f}: image"),
                            false,
                            &mut warnings,
                        ),
                    },
                }
            }
        };
        if image.name().trim().is_empty() {
            return Err(plan_err(
                &file,
                "no image is named",
                "name a local image (docker mode) or set `image` in the devcontainer file",
            ));
        }

        // The agent's own variables win over the file's.
        for (k, v) in &self.env {
            env.retain(|(key, _)| key != k);
            env.push((k.clone(), v.clone()));
        }
        for (k, _) in &env {
            if k.is_empty() || k.contains('=') || k.contains('\0') {
                return Err(plan_err(
                    &file,
                    format!("environment variable name {k:?} is invalid"),
                    "use letters, digits and underscores",
                ));
            }
        }
        if env.iter().any(|(_, v)| v.contains('\0')) {
            return Err(plan_err(
                &file,
                "an environment value contains a NUL character",
                "remove it",
            ));
        }

        let user = match self.user.clone().or(dc_user) {
            Some(u) if is_root(&u) => {
                let d = default_user(&worktree, &mut warnings);
                warnings.push(format!(
                    "{}: user {u:?} is root, which is refused; the agent runs as {d}",
                    file.display()
                ));
                d
            }
            Some(u) if u.trim().is_empty() => default_user(&worktree, &mut warnings),
            Some(u) => u,
            None => default_user(&worktree, &mut warnings),
        };

        // The container's command: lifecycle wrapper, sandbox-exec, agent.
        let mut entrypoint = vec![
            "/bin/sh".to_string(),
            "-c".to_string(),
            entry_script(&lifecycle, &container_ws),
            "agentos-entry".to_string(),
        ];
        let mut agentos_exe = None;
        if let Some(policy) = &self.landlock_policy {
            let policy = policy.canonicalize().map_err(|e| {
                plan_err(
                    policy,
                    format!("the Landlock policy cannot be read: {e}"),
                    "write the policy file before planning the container",
                )
            })?;
            let exe = match &self.agentos_exe {
                Some(e) => e.clone(),
                None => std::env::current_exe().map_err(|e| {
                    plan_err(
                        &file,
                        format!("cannot find the agentos binary: {e}"),
                        "pass it with PlanBuilder::agentos_exe",
                    )
                })?,
            };
            mounts.push(MountSpec {
                source: exe.clone(),
                target: EXE_IN_CONTAINER.into(),
                read_only: true,
            });
            mounts.push(MountSpec {
                source: policy.clone(),
                target: POLICY_IN_CONTAINER.into(),
                read_only: true,
            });
            entrypoint.extend([
                EXE_IN_CONTAINER.to_string(),
                "sandbox-exec".to_string(),
                "--policy".to_string(),
                POLICY_IN_CONTAINER.to_string(),
                "--".to_string(),
            ]);
            agentos_exe = Some(exe);
        }
        entrypoint.extend(self.command.iter().cloned());

        let tmpfs_opts = "rw,nosuid,nodev,exec,size=1g,mode=1777".to_string();
        let tmpfs = BTreeMap::from([
            ("/tmp".to_string(), tmpfs_opts.clone()),
            (CONTAINER_HOME.to_string(), tmpfs_opts),
        ]);

        Ok(ContainerPlan {
            container_name: format!("agentos-{}", self.agent_id),
            agent_id: self.agent_id,
            mode: self.mode,
            image,
            command: self.command,
            entrypoint,
            user,
            working_dir,
            env,
            mounts,
            tmpfs,
            readonly_rootfs: self.mode == PlanMode::Docker,
            limits: self.limits,
            network_mode: "none".into(),
            labels,
            landlock_policy: self.landlock_policy.and_then(|p| p.canonicalize().ok()),
            agentos_exe,
            host_workspace: worktree,
            config_file: dc.map(|d| d.path),
            initialize_command,
            approve_initialize_command: self.approve_initialize,
            warnings,
        })
    }
}

/// A tag shared by the worktrees of one repository whose build inputs are
/// the same (so images do not pile up per agent). Containers are created
/// from the built image's id, so two builds racing for a tag cannot swap
/// images.
fn build_tag(
    dockerfile: &Path,
    context: &Path,
    worktree: &Path,
    args: &BTreeMap<String, String>,
    target: Option<&str>,
) -> String {
    let rel = |p: &Path| p.strip_prefix(worktree).unwrap_or(p).display().to_string();
    let text = std::fs::read(dockerfile).unwrap_or_default();
    short_hash(&format!(
        "{}\0{}\0{}\0{args:?}\0{target:?}",
        rel(dockerfile),
        rel(context),
        String::from_utf8_lossy(&text)
    ))
}

fn short_hash(s: &str) -> String {
    use sha2::{Digest, Sha256};
    let h = Sha256::digest(s.as_bytes());
    data_encoding::BASE32_NOPAD.encode(&h[..10]).to_lowercase()
}

fn is_root(user: &str) -> bool {
    let name = user.split(':').next().unwrap_or("").trim();
    name == "root" || name == "0"
}

/// The worktree owner's `uid:gid`: the agent writes its worktree with
/// exactly the rights of the user who owns it. That is root only when the
/// node itself runs as root; then the container runs as uid 0 *without any
/// capability*, with no-new-privileges, a read-only root and read-only
/// `.git` mounts (said in a warning), because any other uid could not
/// write the worktree. [`FALLBACK_USER`] when the owner cannot be read.
fn default_user(worktree: &Path, warnings: &mut Vec<String>) -> String {
    use std::os::unix::fs::MetadataExt;
    match std::fs::metadata(worktree) {
        Ok(m) if m.uid() != 0 => format!("{}:{}", m.uid(), m.gid()),
        Ok(_) => {
            let w = format!(
                "{} is owned by root (the node runs as root), so the agent runs as uid 0 with every \
                 capability dropped; run AgentOS as a regular user for a non-root container user",
                worktree.display()
            );
            if !warnings.contains(&w) {
                warnings.push(w);
            }
            "0:0".to_string()
        }
        Err(_) => FALLBACK_USER.to_string(),
    }
}

/// An absolute, normalised container path without `..`.
fn check_container_path(p: &str) -> Result<PathBuf, String> {
    let path = Path::new(p);
    if !path.is_absolute() {
        return Err("is not an absolute path".into());
    }
    let mut out = PathBuf::from("/");
    for c in path.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::RootDir | Component::CurDir => {}
            Component::ParentDir | Component::Prefix(_) => {
                return Err("contains `..`".into());
            }
        }
    }
    Ok(out)
}

/// Would a mount at `target` cover, or sit inside, one of the plan's own mounts?
fn reserved_overlap(target: &Path) -> bool {
    RESERVED_TARGETS
        .iter()
        .any(|r| Path::new(r).starts_with(target) || target.starts_with(r))
}

fn expand_lifecycle(
    c: &LifecycleCommand,
    vars: &Vars,
    field: &str,
    warnings: &mut Vec<String>,
) -> LifecycleCommand {
    match c {
        LifecycleCommand::Shell(s) => {
            LifecycleCommand::Shell(vars.expand(s, field, false, warnings))
        }
        LifecycleCommand::Exec(argv) => LifecycleCommand::Exec(
            argv.iter()
                .map(|a| vars.expand(a, field, false, warnings))
                .collect(),
        ),
        LifecycleCommand::Parallel(m) => LifecycleCommand::Parallel(
            m.iter()
                .map(|(k, c)| {
                    (
                        k.clone(),
                        expand_lifecycle(c, vars, &format!("{field}.{k}"), warnings),
                    )
                })
                .collect(),
        ),
    }
}

/// Single-quote for `/bin/sh`.
pub fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

fn shell_line(c: &LifecycleCommand) -> String {
    match c {
        LifecycleCommand::Shell(s) => format!("/bin/sh -c {}", shell_quote(s)),
        LifecycleCommand::Exec(argv) => argv
            .iter()
            .map(|a| shell_quote(a))
            .collect::<Vec<_>>()
            .join(" "),
        // Nested objects are refused by the parser; run entries one by one.
        LifecycleCommand::Parallel(m) => {
            m.values().map(shell_line).collect::<Vec<_>>().join(" && ")
        }
    }
}

/// Waits (at most 2 s) until the container's TTY has a size. An API 1.41
/// engine cannot size a TTY before the container starts, so
/// `container-run` resizes it just after; without this the agent could
/// start on a 0×0 terminal.
const TTY_SIZE_GATE: &str = "i=0; while [ \"$(stty size 2>/dev/null)\" = '0 0' ] && [ $i -lt 200 ]; do \
sleep 0.01 2>/dev/null || sleep 1; i=$((i+1)); done\n";

/// The `/bin/sh -c` script the container starts with: wait for the TTY's
/// size, run the lifecycle commands in order in the workspace folder
/// (stopping at the first failure), then exec the agent (`"$@"`).
fn entry_script(steps: &[(&str, LifecycleCommand)], workspace: &Path) -> String {
    let mut s = String::from(TTY_SIZE_GATE);
    if steps.is_empty() {
        s.push_str("exec \"$@\"\n");
        return s;
    }
    s.push_str(&format!(
        "cd {} || exit 1\n",
        shell_quote(&workspace.display().to_string())
    ));
    for (name, c) in steps {
        s.push_str(&format!("echo '[agentos] {name}' >&2\n"));
        match c {
            LifecycleCommand::Parallel(m) => {
                for (i, c) in m.values().enumerate() {
                    s.push_str(&format!("( {} ) & p{i}=$!\n", shell_line(c)));
                }
                for (i, label) in m.keys().enumerate() {
                    s.push_str(&format!(
                        "wait $p{i} || {{ rc=$?; echo {} >&2; exit $rc; }}\n",
                        shell_quote(&format!(
                            "[agentos] {name}.{label} failed; the agent is not started"
                        ))
                    ));
                }
            }
            c => s.push_str(&format!(
                "{} || {{ rc=$?; echo {} >&2; exit $rc; }}\n",
                shell_line(c),
                shell_quote(&format!(
                    "[agentos] {name} failed; the agent is not started"
                ))
            )),
        }
    }
    s.push_str("exec \"$@\"\n");
    s
}

/// The Dockerfile build of a devcontainer file, with paths checked to stay
/// inside the worktree.
fn build_source(
    dc: &DevContainer,
    b: &BuildConfig,
    vars: &Vars,
    worktree: &Path,
    warnings: &mut Vec<String>,
) -> Result<ImageSource, DevcontainerError> {
    let f = dc.path.display().to_string();
    let base = dc.path.parent().unwrap_or(Path::new("/"));
    let inside = |field: &str, rel: &str| -> Result<PathBuf, DevcontainerError> {
        let p = base.join(rel);
        let c = p.canonicalize().map_err(|e| {
            invalid(
                &dc.path,
                field,
                &format!("({}) cannot be used: {e}", p.display()),
                "point it at a path inside the repository, relative to the devcontainer.json",
            )
        })?;
        if !c.starts_with(worktree) {
            return Err(invalid(
                &dc.path,
                field,
                &format!(
                    "({}) is outside the worktree {}",
                    c.display(),
                    worktree.display()
                ),
                "keep the Dockerfile and its context inside the repository",
            ));
        }
        Ok(c)
    };
    let dockerfile = inside(
        "build.dockerfile",
        &vars.expand(
            &b.dockerfile,
            &format!("{f}: build.dockerfile"),
            false,
            warnings,
        ),
    )?;
    let context = inside(
        "build.context",
        &vars.expand(
            b.context.as_deref().unwrap_or("."),
            &format!("{f}: build.context"),
            false,
            warnings,
        ),
    )?;
    let args = b
        .args
        .iter()
        .map(|(k, v)| {
            (
                k.clone(),
                vars.expand(v, &format!("{f}: build.args.{k}"), false, warnings),
            )
        })
        .collect();
    let tag = format!(
        "agentos-devcontainer:{}",
        build_tag(&dockerfile, &context, worktree, &args, b.target.as_deref())
    );
    Ok(ImageSource::Build {
        dockerfile,
        context,
        args,
        target: b.target.clone(),
        tag,
    })
}

/// Turn a devcontainer mount into a plan mount, or say why it is refused.
/// `Ok(None)`: accepted but nothing to mount (tmpfs are added separately).
fn check_mount(
    m: &RawMount,
    vars: &Vars,
    worktree: &Path,
    home: Option<&Path>,
    warnings: &mut Vec<String>,
) -> Result<Option<MountSpec>, String> {
    let target = vars.expand(&m.target, "mounts.target", false, warnings);
    let target = check_container_path(&target).map_err(|w| format!("target {target:?} {w}"))?;
    if reserved_overlap(&target) || target == Path::new("/") {
        return Err(format!(
            "target {} is reserved by AgentOS",
            target.display()
        ));
    }
    match m.kind.as_str() {
        "bind" => {}
        "volume" => {
            return Err("named volumes are shared between containers and outlive the agent; only binds inside the worktree are allowed".into());
        }
        other => {
            return Err(format!(
                "mount type {other:?} is not supported; use a bind inside the worktree"
            ));
        }
    }
    let source = m.source.as_deref().unwrap_or("");
    let source = vars.expand(source, "mounts.source", false, warnings);
    if source.is_empty() {
        return Err("it has no source".into());
    }
    let raw = Path::new(&source);
    if !raw.is_absolute() {
        return Err(format!(
            "source {source:?} is not absolute; write ${{localWorkspaceFolder}}/…"
        ));
    }
    let name = raw.file_name().and_then(|n| n.to_str()).unwrap_or("");
    if name.ends_with("docker.sock") {
        return Err("the Docker socket gives root on the host".into());
    }
    let canon = raw
        .canonicalize()
        .map_err(|e| format!("source {source} cannot be used: {e}"))?;
    if canon
        .file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.ends_with("docker.sock"))
    {
        return Err("the Docker socket gives root on the host".into());
    }
    if let Some(home) = home.and_then(|h| h.canonicalize().ok()) {
        if canon.starts_with(home.join(".ssh")) {
            return Err("~/.ssh holds the user's keys".into());
        }
        if home.starts_with(&canon) {
            return Err("it would expose the user's home directory".into());
        }
    }
    if !canon.starts_with(worktree) {
        return Err(format!(
            "{} is outside the worktree {}",
            canon.display(),
            worktree.display()
        ));
    }
    Ok(Some(MountSpec {
        source: canon,
        target,
        read_only: m.read_only,
    }))
}

/// The mounts that let git work inside the container (see the module doc).
/// The layout is read from the files themselves, not through libgit2: its
/// ownership check refuses repositories of other users, and nothing here
/// needs the repository's configuration.
fn git_mounts(
    worktree: &Path,
    warnings: &mut Vec<String>,
) -> Result<Vec<MountSpec>, DevcontainerError> {
    let dot_git = worktree.join(".git");
    let Ok(meta) = std::fs::symlink_metadata(&dot_git) else {
        return Ok(Vec::new());
    };
    let broken = |problem: String| {
        plan_err(
            &dot_git,
            problem,
            "repair the worktree (`git worktree repair`) or recreate it",
        )
    };
    let canon = |p: &Path| {
        p.canonicalize().map_err(|e| {
            broken(format!(
                "points at {} which cannot be used: {e}",
                p.display()
            ))
        })
    };
    let ro = |p: PathBuf| MountSpec {
        source: p.clone(),
        target: p,
        read_only: true,
    };
    let rw = |p: PathBuf| MountSpec {
        source: p.clone(),
        target: p,
        read_only: false,
    };
    // Hooks and config are what would run on the host later.
    let protect = |git_dir: &Path, out: &mut Vec<MountSpec>| {
        let hooks = git_dir.join("hooks");
        let _ = std::fs::create_dir_all(&hooks);
        out.push(ro(hooks));
        if git_dir.join("config").is_file() {
            out.push(ro(git_dir.join("config")));
        }
    };
    let mut out = Vec::new();
    if meta.is_dir() {
        // The agent works in the main checkout: `.git` is inside the
        // read-write worktree mount.
        warnings.push(format!(
            "{} is the repository's main checkout, so its .git is writable except hooks/ and config; \
             give the agent a worktree to protect the other branches",
            worktree.display()
        ));
        protect(&dot_git, &mut out);
        return Ok(out);
    }
    let text =
        std::fs::read_to_string(&dot_git).map_err(|e| broken(format!("cannot be read: {e}")))?;
    let Some(gitdir) = text.trim().strip_prefix("gitdir:").map(str::trim) else {
        return Err(broken("is neither a directory nor a `gitdir:` file".into()));
    };
    let admin = canon(&worktree.join(gitdir))?;
    let Ok(commondir) = std::fs::read_to_string(admin.join("commondir")) else {
        // A separate git directory (a submodule, `--separate-git-dir`).
        warnings.push(format!(
            "{} keeps its git directory at {}, which is writable except hooks/ and config",
            worktree.display(),
            admin.display()
        ));
        out.push(rw(admin.clone()));
        protect(&admin, &mut out);
        return Ok(out);
    };
    let common = canon(&admin.join(commondir.trim()))?;
    out.push(ro(common.clone()));
    out.push(rw(common.join("objects")));
    out.push(rw(admin.clone()));
    // A per-worktree config could set core.fsmonitor or core.hooksPath when
    // the repository enables extensions.worktreeConfig: keep it read-only.
    let worktree_config = admin.join("config.worktree");
    if !worktree_config.exists() {
        let _ = std::fs::write(&worktree_config, "");
    }
    if worktree_config.is_file() {
        out.push(ro(worktree_config));
    }
    let head = std::fs::read_to_string(admin.join("HEAD")).unwrap_or_default();
    match head.trim().strip_prefix("ref:").map(str::trim) {
        Some(b) if b.starts_with("refs/heads/") && !b.contains("..") => {
            let parent = Path::new(b).parent().unwrap_or(Path::new("refs/heads"));
            if parent == Path::new("refs/heads") {
                warnings.push(format!(
                    "the branch {b} has no prefix directory, so the agent can move every branch of the repository"
                ));
            }
            for dir in [common.join(parent), common.join("logs").join(parent)] {
                std::fs::create_dir_all(&dir).map_err(|e| {
                    plan_err(
                        &dir,
                        format!("cannot be created: {e}"),
                        "check the permissions of the repository's .git",
                    )
                })?;
                out.push(rw(dir));
            }
        }
        _ => warnings.push(format!(
            "{} has no branch checked out, so the agent cannot commit inside the container",
            worktree.display()
        )),
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, rel: &str, text: &str) -> PathBuf {
        let p = dir.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, text).unwrap();
        p
    }

    fn dc(text: &str) -> Result<DevContainer, DevcontainerError> {
        parse_str(Path::new("/r/.devcontainer/devcontainer.json"), text)
    }

    #[test]
    fn jsonc_comments_and_trailing_commas() {
        let d = dc(r#"{
            // the image
            "image": "agentos-test-base:bookworm", /* block */
            "containerEnv": { "A": "1", },
            "postCreateCommand": ["make", "setup",],
        }"#)
        .unwrap();
        assert_eq!(d.image.as_deref(), Some("agentos-test-base:bookworm"));
        assert_eq!(d.container_env["A"], "1");
        assert_eq!(
            d.post_create_command,
            Some(LifecycleCommand::Exec(vec!["make".into(), "setup".into()]))
        );
        assert!(d.warnings.is_empty(), "{:?}", d.warnings);
    }

    #[test]
    fn a_comment_marker_inside_a_string_is_text() {
        let d = dc(r#"{ "image": "x", "containerEnv": { "URL": "http://a//b/*c*/" } }"#).unwrap();
        assert_eq!(d.container_env["URL"], "http://a//b/*c*/");
    }

    #[test]
    fn syntax_errors_name_the_file_and_the_line() {
        let e = dc("{\n \"image\": \"x\"\n \"name\": 1 }")
            .unwrap_err()
            .to_string();
        assert!(e.contains("/r/.devcontainer/devcontainer.json"), "{e}");
        assert!(e.contains("line"), "{e}");
        assert!(e.contains("comments"), "{e}");
        // Not JSON5: single quotes are refused.
        assert!(dc("{ 'image': 'x' }").is_err());
    }

    #[test]
    fn type_errors_name_the_field_and_the_fix() {
        let e = dc(r#"{ "image": 3 }"#).unwrap_err().to_string();
        assert!(e.contains("`image` must be a string"), "{e}");
        let e = dc(r#"{ "image": "x", "containerEnv": { "A": 1 } }"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("containerEnv.A"), "{e}");
        let e = dc(r#"{ "image": "x", "postStartCommand": 7 }"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("postStartCommand"), "{e}");
        let e = dc(r#"{ "name": "no image" }"#).unwrap_err().to_string();
        assert!(e.contains("add \"image\""), "{e}");
        let e = dc(r#"{ "dockerComposeFile": "c.yml" }"#)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("not supported") && e.contains("use `image`"),
            "{e}"
        );
        let e = dc("[1]").unwrap_err().to_string();
        assert!(e.contains("must be a JSON object"), "{e}");
    }

    #[test]
    fn dangerous_keys_are_ignored_with_warnings() {
        let d = dc(r#"{
            "image": "x",
            "runArgs": ["--privileged", "-v", "/:/host"],
            "privileged": true,
            "capAdd": ["SYS_ADMIN"],
            "securityOpt": ["seccomp=unconfined"],
            "forwardPorts": [3000],
            "features": { "ghcr.io/devcontainers/features/node:1": {} },
            "mystery": 1
        }"#)
        .unwrap();
        for k in [
            "runArgs",
            "privileged",
            "capAdd",
            "securityOpt",
            "forwardPorts",
            "features",
            "mystery",
        ] {
            assert!(
                d.warnings.iter().any(|w| w.contains(k)),
                "{k}: {:?}",
                d.warnings
            );
        }
    }

    #[test]
    fn mount_strings_and_objects() {
        let d = dc(r#"{ "image": "x", "mounts": [
            "source=${localWorkspaceFolder}/data,target=/data,type=bind,readonly",
            { "source": "/s", "target": "/t", "type": "bind" }
        ] }"#)
        .unwrap();
        assert_eq!(d.mounts[0].kind, "bind");
        assert_eq!(d.mounts[0].target, "/data");
        assert!(d.mounts[0].read_only);
        assert_eq!(d.mounts[1].source.as_deref(), Some("/s"));
        assert!(!d.mounts[1].read_only);
    }

    fn vars() -> Vars {
        Vars {
            local_workspace: "/home/u/repo".into(),
            container_workspace: "/workspaces/repo".into(),
            devcontainer_id: "abc".into(),
            local_env: BTreeMap::from([
                ("TERM".into(), "xterm".into()),
                ("GITHUB_TOKEN".into(), "secret".into()),
            ]),
        }
    }

    #[test]
    fn variables_expand() {
        let v = vars();
        let mut w = Vec::new();
        assert_eq!(
            v.expand("${localWorkspaceFolder}:${localWorkspaceFolderBasename}:${containerWorkspaceFolder}:${devcontainerId}", "f", false, &mut w),
            "/home/u/repo:repo:/workspaces/repo:abc"
        );
        assert_eq!(
            v.expand("t=${localEnv:TERM}", "f", false, &mut w),
            "t=xterm"
        );
        assert_eq!(v.expand("${localEnv:TZ:UTC}", "f", false, &mut w), "UTC");
        assert!(w.is_empty(), "{w:?}");
        assert_eq!(
            v.expand("unterminated ${x", "f", false, &mut w),
            "unterminated ${x"
        );
    }

    #[test]
    fn local_env_outside_the_allow_list_is_empty_with_a_warning() {
        let v = vars();
        let mut w = Vec::new();
        assert_eq!(
            v.expand(
                "[${localEnv:GITHUB_TOKEN}]",
                "containerEnv.T",
                false,
                &mut w
            ),
            "[]"
        );
        assert_eq!(
            v.expand("[${env:GITHUB_TOKEN}]", "containerEnv.T", false, &mut w),
            "[]"
        );
        assert_eq!(w.len(), 2);
        assert!(
            w[0].contains("containerEnv.T") && w[0].contains("TERM"),
            "{w:?}"
        );
        let mut w = Vec::new();
        assert_eq!(v.expand("${nope}", "f", false, &mut w), "");
        assert_eq!(w.len(), 1);
    }

    #[test]
    fn container_env_references_are_kept_for_later() {
        let v = vars();
        let mut w = Vec::new();
        let s = v.expand("${containerEnv:PATH}:/x", "remoteEnv.PATH", true, &mut w);
        assert_eq!(s, "${containerEnv:PATH}:/x");
        let env = BTreeMap::from([("PATH".to_string(), "/usr/bin".to_string())]);
        assert_eq!(resolve_container_env(&s, &env), "/usr/bin:/x");
        assert_eq!(resolve_container_env("${containerEnv:NOPE:d}", &env), "d");
    }

    /// A repository with one commit and a worktree on `agentos/feat`.
    fn repo_with_worktree(dir: &Path) -> (PathBuf, PathBuf) {
        let root = dir.join("repo");
        std::fs::create_dir_all(&root).unwrap();
        let repo = git2::Repository::init(&root).unwrap();
        write(&root, "a.txt", "a\n");
        let mut idx = repo.index().unwrap();
        idx.add_path(Path::new("a.txt")).unwrap();
        let tree = repo.find_tree(idx.write_tree().unwrap()).unwrap();
        let sig = git2::Signature::now("t", "t@example.invalid").unwrap();
        let c = repo
            .commit(Some("HEAD"), &sig, &sig, "init", &tree, &[])
            .unwrap();
        let commit = repo.find_commit(c).unwrap();
        let branch = repo.branch("agentos/feat", &commit, false).unwrap();
        let wt = root.join(".shards/shell-feat");
        std::fs::create_dir_all(wt.parent().unwrap()).unwrap();
        let mut opts = git2::WorktreeAddOptions::new();
        opts.reference(Some(branch.get()));
        repo.worktree("shell-feat", &wt, Some(&opts)).unwrap();
        (root.canonicalize().unwrap(), wt.canonicalize().unwrap())
    }

    #[test]
    fn docker_plan_is_hardened_and_mounts_git() {
        let t = tempfile::tempdir().unwrap();
        let (root, wt) = repo_with_worktree(t.path());
        std::fs::create_dir_all(wt.join("src")).unwrap();
        std::os::unix::fs::chown(&wt, Some(1000), Some(1000)).unwrap();
        let p = PlanBuilder::docker("a1", "img:1", &wt)
            .cwd(&wt.join("src"))
            .command(vec!["sh".into()])
            .env("TERM", "xterm")
            .build()
            .unwrap();
        assert_eq!(p.container_name, "agentos-a1");
        assert_eq!(p.labels[AGENT_LABEL], "a1");
        assert!(p.readonly_rootfs);
        assert_eq!(p.network_mode, "none");
        assert_eq!(p.working_dir, wt.join("src"));
        assert_eq!(p.entrypoint[..2], ["/bin/sh", "-c"]);
        assert_eq!(p.entrypoint[3..], ["agentos-entry", "sh"]);
        assert!(!is_root(&p.user));
        assert!(p.tmpfs.contains_key("/tmp"));
        assert!(p.env.contains(&("HOME".into(), CONTAINER_HOME.into())));
        let m = |target: &Path| p.mounts.iter().find(|m| m.target == target).cloned();
        assert!(!m(&wt).unwrap().read_only);
        let git = root.join(".git");
        assert!(m(&git).unwrap().read_only, "{:?}", p.mounts);
        assert!(!m(&git.join("objects")).unwrap().read_only);
        assert!(!m(&git.join("worktrees/shell-feat")).unwrap().read_only);
        assert!(!m(&git.join("refs/heads/agentos")).unwrap().read_only);
        assert!(!m(&git.join("logs/refs/heads/agentos")).unwrap().read_only);
        assert!(
            m(&git.join("hooks")).is_none(),
            "hooks stay read-only via .git"
        );
        // The plan survives a round trip through its file.
        let f = t.path().join("plan.json");
        p.write(&f).unwrap();
        assert_eq!(ContainerPlan::read(&f).unwrap(), p);
    }

    #[test]
    fn root_users_are_refused() {
        let t = tempfile::tempdir().unwrap();
        std::os::unix::fs::chown(t.path(), Some(1000), Some(1000)).unwrap();
        let p = PlanBuilder::docker("a1", "img", t.path())
            .command(vec!["sh".into()])
            .user("root")
            .build()
            .unwrap();
        assert!(!is_root(&p.user));
        assert!(
            p.warnings.iter().any(|w| w.contains("root")),
            "{:?}",
            p.warnings
        );
        assert!(is_root("0:0") && is_root("root") && !is_root("1000:1000") && !is_root("vscode"));
    }

    #[test]
    fn landlock_runs_sandbox_exec_from_a_read_only_mount() {
        let t = tempfile::tempdir().unwrap();
        let pol = write(t.path(), "policy.json", "{}");
        let exe = write(t.path(), "agentos", "");
        let p = PlanBuilder::docker("a1", "img", t.path())
            .command(vec!["claude".into(), "-p".into()])
            .landlock_policy(&pol)
            .agentos_exe(&exe)
            .bind(t.path(), Path::new("/run/agentos-run"), false)
            .build()
            .unwrap();
        assert!(
            p.mounts
                .iter()
                .any(|m| m.target == Path::new("/run/agentos-run") && !m.read_only)
        );
        assert_eq!(
            p.entrypoint[4..],
            [
                EXE_IN_CONTAINER,
                "sandbox-exec",
                "--policy",
                POLICY_IN_CONTAINER,
                "--",
                "claude",
                "-p"
            ]
        );
        let exe_m = p
            .mounts
            .iter()
            .find(|m| m.target == Path::new(EXE_IN_CONTAINER))
            .unwrap();
        assert!(exe_m.read_only);
        let pol_m = p
            .mounts
            .iter()
            .find(|m| m.target == Path::new(POLICY_IN_CONTAINER))
            .unwrap();
        assert!(pol_m.read_only);
    }

    #[test]
    fn devcontainer_plan_applies_the_file() {
        let t = tempfile::tempdir().unwrap();
        let wt = t.path().canonicalize().unwrap();
        std::fs::create_dir_all(wt.join("data")).unwrap();
        let f = write(
            &wt,
            ".devcontainer/devcontainer.json",
            r#"{
                "image": "img:${localWorkspaceFolderBasename}",
                "workspaceFolder": "/workspaces/${localWorkspaceFolderBasename}",
                "containerEnv": { "A": "${containerWorkspaceFolder}", "TERM": "dumb", "PATH": "/usr/bin" },
                "remoteEnv": { "PATH": "${containerEnv:PATH}:/opt/x", "A": null, "T": "${localEnv:TERM}" },
                "remoteUser": "1000:1000",
                "mounts": ["source=${localWorkspaceFolder}/data,target=/data,type=bind"],
                "onCreateCommand": "echo made > /tmp/x",
                "postStartCommand": { "a": "true", "b": ["echo", "it's"] },
                "initializeCommand": "touch /tmp/host-was-touched",
            }"#,
        );
        assert_eq!(find(&wt), Some(f.clone()));
        let d = parse(&f).unwrap();
        let p = PlanBuilder::devcontainer("a2", d, &wt)
            .command(vec!["bash".into()])
            .env("TERM", "xterm-256color")
            .local_env([("TERM".to_string(), "screen".to_string())])
            .build()
            .unwrap();
        let base = wt.file_name().unwrap().to_str().unwrap();
        assert_eq!(p.image.name(), format!("img:{base}"));
        let ws = PathBuf::from(format!("/workspaces/{base}"));
        assert_eq!(p.working_dir, ws);
        assert!(p.mounts.iter().any(|m| m.target == ws && m.source == wt));
        assert!(p.mounts.iter().any(|m| m.target == wt), "host path too");
        assert!(p.mounts.iter().any(|m| m.target == Path::new("/data")));
        let env: BTreeMap<_, _> = p.env.iter().cloned().collect();
        assert!(!env.contains_key("A"), "remoteEnv null unsets");
        assert_eq!(env["PATH"], "${containerEnv:PATH}:/opt/x");
        assert_eq!(env["T"], "screen");
        assert_eq!(env["TERM"], "xterm-256color", "the agent's env wins");
        assert_eq!(p.user, "1000:1000");
        assert!(!p.readonly_rootfs);
        assert_eq!(p.network_mode, "none");
        assert_eq!(p.entrypoint[0], "/bin/sh");
        let script = &p.entrypoint[2];
        assert!(
            script.contains("onCreateCommand") && script.contains("postStartCommand"),
            "{script}"
        );
        assert!(script.contains(r#"'echo' 'it'\''s'"#), "{script}");
        assert!(script.ends_with("exec \"$@\"\n"));
        assert_eq!(p.entrypoint.last().unwrap(), "bash");
        assert!(p.initialize_command.is_some() && !p.approve_initialize_command);
        assert!(
            p.warnings
                .iter()
                .any(|w| w.contains("initializeCommand is skipped")),
            "{:?}",
            p.warnings
        );
        assert_eq!(
            p.labels["devcontainer.config_file"],
            f.display().to_string()
        );
    }

    #[test]
    fn the_lifecycle_script_runs_in_order_and_stops_at_a_failure() {
        let t = tempfile::tempdir().unwrap();
        let log = t.path().join("log");
        let l = log.display();
        let steps = vec![
            (
                "onCreateCommand",
                LifecycleCommand::Shell(format!("echo one >> {l}")),
            ),
            (
                "postCreateCommand",
                LifecycleCommand::Exec(vec![
                    "sh".into(),
                    "-c".into(),
                    format!("echo two >> {l}; exit 3"),
                ]),
            ),
            (
                "postStartCommand",
                LifecycleCommand::Shell(format!("echo three >> {l}")),
            ),
        ];
        let script = entry_script(&steps, t.path());
        let out = std::process::Command::new("/bin/sh")
            .args(["-c", &script, "x", "echo", "agent"])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(3));
        assert_eq!(std::fs::read_to_string(&log).unwrap(), "one\ntwo\n");
        assert!(String::from_utf8_lossy(&out.stderr).contains("postCreateCommand failed"));
        let ok = entry_script(&steps[..1], t.path());
        let out = std::process::Command::new("/bin/sh")
            .args(["-c", &ok, "x", "echo", "agent"])
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), "agent\n");
    }

    #[test]
    fn unsafe_mounts_are_refused() {
        let t = tempfile::tempdir().unwrap();
        let home = t.path().join("home");
        let wt = home.join("repo");
        std::fs::create_dir_all(home.join(".ssh")).unwrap();
        std::fs::create_dir_all(wt.join("ok")).unwrap();
        std::fs::create_dir_all(t.path().join("elsewhere")).unwrap();
        std::os::unix::fs::symlink(home.join(".ssh"), wt.join("sneaky")).unwrap();
        let sock = t.path().join("docker.sock");
        std::fs::write(&sock, "").unwrap();
        let h = home.display();
        let text = format!(
            r#"{{ "image": "x", "mounts": [
                "source={h}/.ssh,target=/k,type=bind",
                "source={h},target=/h,type=bind",
                "source=/var/run/docker.sock,target=/var/run/docker.sock,type=bind",
                "source={},target=/s,type=bind",
                "source={},target=/e,type=bind",
                "source=${{localWorkspaceFolder}}/sneaky,target=/l,type=bind",
                "source=cache,target=/cache,type=volume",
                "source=${{localWorkspaceFolder}}/ok,target=/usr/local/libexec,type=bind",
                "source=relative,target=/r,type=bind",
                "source=${{localWorkspaceFolder}}/ok,target=/ok,type=bind"
            ] }}"#,
            sock.display(),
            t.path().join("elsewhere").display()
        );
        let f = write(&wt, ".devcontainer.json", &text);
        let p = PlanBuilder::devcontainer("a3", parse(&f).unwrap(), &wt)
            .command(vec!["sh".into()])
            .host_home(&home)
            .build()
            .unwrap();
        let refused: Vec<&String> = p
            .warnings
            .iter()
            .filter(|w| w.contains("refused"))
            .collect();
        assert_eq!(refused.len(), 9, "{refused:#?}");
        for needle in [
            ".ssh",
            "home directory",
            "Docker socket",
            "outside the worktree",
            "named volumes",
            "reserved",
            "not absolute",
        ] {
            assert!(
                refused.iter().any(|w| w.contains(needle)),
                "{needle}: {refused:#?}"
            );
        }
        assert!(p.mounts.iter().any(|m| m.target == Path::new("/ok")));
        for t in [
            "/k",
            "/h",
            "/var/run/docker.sock",
            "/s",
            "/e",
            "/l",
            "/cache",
            "/r",
        ] {
            assert!(
                !p.mounts.iter().any(|m| m.target == Path::new(t)),
                "{t} mounted"
            );
        }
    }

    #[test]
    fn build_paths_must_stay_inside_the_worktree() {
        let t = tempfile::tempdir().unwrap();
        let wt = t.path().join("wt");
        write(&wt, ".devcontainer/Dockerfile", "FROM x\n");
        write(t.path(), "outside/Dockerfile", "FROM x\n");
        let f = write(
            &wt,
            ".devcontainer/devcontainer.json",
            r#"{ "build": { "dockerfile": "Dockerfile", "context": "..", "args": { "V": "${localWorkspaceFolderBasename}" } } }"#,
        );
        let p = PlanBuilder::devcontainer("a4", parse(&f).unwrap(), &wt)
            .command(vec!["sh".into()])
            .build()
            .unwrap();
        let wt = wt.canonicalize().unwrap();
        match &p.image {
            ImageSource::Build {
                dockerfile,
                context,
                args,
                tag,
                ..
            } => {
                assert_eq!(dockerfile, &wt.join(".devcontainer/Dockerfile"));
                assert_eq!(context, &wt);
                assert_eq!(args["V"], "wt");
                assert!(tag.starts_with("agentos-devcontainer:"));
            }
            other => panic!("{other:?}"),
        }
        // Another worktree with the same build inputs shares the tag.
        let u = tempfile::tempdir().unwrap();
        let wt2 = u.path().join("wt");
        write(&wt2, ".devcontainer/Dockerfile", "FROM x\n");
        let f2 = write(
            &wt2,
            ".devcontainer/devcontainer.json",
            r#"{ "build": { "dockerfile": "Dockerfile", "context": "..", "args": { "V": "wt" } } }"#,
        );
        let p2 = PlanBuilder::devcontainer("a5", parse(&f2).unwrap(), &wt2)
            .command(vec!["sh".into()])
            .build()
            .unwrap();
        assert_eq!(p2.image.name(), p.image.name());
        let f = write(
            &wt,
            ".devcontainer/devcontainer.json",
            r#"{ "build": { "dockerfile": "../../outside/Dockerfile" } }"#,
        );
        let e = PlanBuilder::devcontainer("a4", parse(&f).unwrap(), &wt)
            .command(vec!["sh".into()])
            .build()
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("devcontainer.json") && e.contains("outside the worktree"),
            "{e}"
        );
    }

    #[test]
    fn find_prefers_the_devcontainer_folder() {
        let t = tempfile::tempdir().unwrap();
        assert_eq!(find(t.path()), None);
        let b = write(t.path(), ".devcontainer.json", "{}");
        assert_eq!(find(t.path()), Some(b));
        let a = write(t.path(), ".devcontainer/devcontainer.json", "{}");
        assert_eq!(find(t.path()), Some(a));
        let u = tempfile::tempdir().unwrap();
        let n = write(u.path(), ".devcontainer/py/devcontainer.json", "{}");
        assert_eq!(find(u.path()), Some(n));
        write(u.path(), ".devcontainer/go/devcontainer.json", "{}");
        assert_eq!(find(u.path()), None, "two candidates: none is guessed");
    }

    #[test]
    fn oversized_files_are_refused() {
        let t = tempfile::tempdir().unwrap();
        let f = write(
            t.path(),
            "devcontainer.json",
            &" ".repeat(MAX_FILE_BYTES as usize + 1),
        );
        let e = parse(&f).unwrap_err().to_string();
        assert!(e.contains("larger than 1 MiB"), "{e}");
    }
}
