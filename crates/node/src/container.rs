//! The Docker side of container isolation, through bollard: connect (and
//! negotiate the API version: the engine here speaks 1.41), make the plan's
//! image available, create/start/stop/remove the agent's container, find it
//! by its `agentos.agent` label, and read its pid (for entering its network
//! namespace).
//!
//! [`attach_raw`] is the one call that bypasses bollard: a TTY container's
//! attach stream is raw bytes, and bollard's decoder sniffs the first byte of
//! each read for a multiplexing header (a chunk that starts with `\0`, `\x01`
//! or `\x02` would be taken for one and the stream would stall), so the
//! hijacked connection is opened by hand on the same socket.

use crate::devcontainer::{AGENT_LABEL, ContainerPlan, ImageSource, resolve_container_env};
pub use bollard::Docker;
use bollard::errors::Error as BollardError;
use bollard::models::{ContainerCreateBody, HostConfig, Mount, MountType};
use bollard::query_parameters::{
    BuildImageOptionsBuilder, CreateContainerOptionsBuilder, ListContainersOptionsBuilder,
    RemoveContainerOptionsBuilder, ResizeContainerTTYOptionsBuilder, StopContainerOptionsBuilder,
    WaitContainerOptionsBuilder,
};
use futures_util::StreamExt;
use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The engine socket when `DOCKER_HOST` does not name another one.
pub const DEFAULT_SOCKET: &str = "/var/run/docker.sock";
/// The PATH the engine gives a container whose image sets none.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// A build context larger than this is refused.
pub const MAX_CONTEXT_BYTES: u64 = 512 << 20;

/// What went wrong talking to the engine. Every message says what to do.
#[derive(Debug, thiserror::Error)]
pub enum ContainerError {
    #[error(
        "cannot reach the Docker engine at {socket}: {message}; start dockerd (`.ci/docker-setup` does, \
         or `systemctl start docker`) or use --isolation worktree"
    )]
    Unreachable { socket: String, message: String },
    #[error(
        "the image {image} is not in the Docker engine and there is no registry to pull it from; provide it \
         locally with `docker import <rootfs.tar> {image}` or `docker build -t {image} <dir>`"
    )]
    ImageMissing { image: String },
    #[error("building {tag} from {} failed: {message}; fix the Dockerfile (builds have no network) and try again", dockerfile.display())]
    Build {
        tag: String,
        dockerfile: PathBuf,
        message: String,
    },
    #[error("the Docker engine could not {action}: {message}; {fix}")]
    Engine {
        action: String,
        message: String,
        fix: String,
    },
    #[error("{}: {message}; {fix}", path.display())]
    Io {
        path: PathBuf,
        message: String,
        fix: String,
    },
}

fn engine(
    action: impl Into<String>,
    fix: impl Into<String>,
) -> impl FnOnce(BollardError) -> ContainerError {
    let action = action.into();
    let fix = fix.into();
    move |e| match e {
        BollardError::HyperResponseError { .. } | BollardError::IOError { .. } => {
            ContainerError::Unreachable {
                socket: socket_path(),
                message: e.to_string(),
            }
        }
        e => ContainerError::Engine {
            action,
            message: e.to_string(),
            fix,
        },
    }
}

fn status_code(e: &BollardError) -> Option<u16> {
    match e {
        BollardError::DockerResponseServerError { status_code, .. } => Some(*status_code),
        _ => None,
    }
}

/// The engine's Unix socket: `DOCKER_HOST` when it is `unix://…`, else
/// [`DEFAULT_SOCKET`] (as bollard's `connect_with_local_defaults`).
pub fn socket_path() -> String {
    std::env::var("DOCKER_HOST")
        .ok()
        .and_then(|h| h.strip_prefix("unix://").map(str::to_string))
        .unwrap_or_else(|| DEFAULT_SOCKET.to_string())
}

/// Connect to the local engine and negotiate the API version.
pub async fn connect() -> Result<Docker, ContainerError> {
    let socket = socket_path();
    if !Path::new(&socket).exists() {
        return Err(ContainerError::Unreachable {
            socket,
            message: "the socket does not exist".into(),
        });
    }
    let unreachable = |message: String| ContainerError::Unreachable {
        socket: socket_path(),
        message,
    };
    let docker = Docker::connect_with_local_defaults().map_err(|e| unreachable(e.to_string()))?;
    match tokio::time::timeout(Duration::from_secs(15), docker.negotiate_version()).await {
        Ok(Ok(d)) => Ok(d),
        Ok(Err(e)) => Err(unreachable(e.to_string())),
        Err(_) => Err(unreachable("no answer within 15 s".into())),
    }
}

/// Is `name` in the engine? A clear error when it is not (nothing is pulled).
pub async fn ensure_image(docker: &Docker, name: &str) -> Result<(), ContainerError> {
    match docker.inspect_image(name).await {
        Ok(_) => Ok(()),
        Err(e) if status_code(&e) == Some(404) => Err(ContainerError::ImageMissing {
            image: name.to_string(),
        }),
        Err(e) => Err(engine(
            format!("inspect the image {name}"),
            "check `docker image inspect` and the daemon's log",
        )(e)),
    }
}

/// Make the plan's image available: check a named image, or build the
/// Dockerfile (without network; `progress` gets the build's output lines).
/// Returns the image reference to create the container from (the built
/// image's id for a build).
pub async fn prepare_image(
    docker: &Docker,
    plan: &ContainerPlan,
    progress: &mut (dyn FnMut(&str) + Send),
) -> Result<String, ContainerError> {
    match &plan.image {
        ImageSource::Image { name } => {
            ensure_image(docker, name).await?;
            Ok(name.clone())
        }
        ImageSource::Build {
            dockerfile,
            context,
            args,
            target,
            tag,
        } => {
            build_image(
                docker,
                dockerfile,
                context,
                args,
                target.as_deref(),
                tag,
                progress,
            )
            .await
        }
    }
}

/// `docker build` with the context sent as a tar. `.git` is left out of the
/// context; a Dockerfile outside the context is added to it. Returns the
/// built image's id (the tag when the engine does not report one).
pub async fn build_image(
    docker: &Docker,
    dockerfile: &Path,
    context: &Path,
    args: &BTreeMap<String, String>,
    target: Option<&str>,
    tag: &str,
    progress: &mut (dyn FnMut(&str) + Send),
) -> Result<String, ContainerError> {
    let fail = |message: String| ContainerError::Build {
        tag: tag.to_string(),
        dockerfile: dockerfile.to_path_buf(),
        message,
    };
    let (tar, name) = {
        let dockerfile = dockerfile.to_path_buf();
        let context = context.to_path_buf();
        tokio::task::spawn_blocking(move || context_tar(&context, &dockerfile))
            .await
            .map_err(|e| fail(e.to_string()))??
    };
    let buildargs: HashMap<String, String> = args.clone().into_iter().collect();
    let options = BuildImageOptionsBuilder::default()
        .dockerfile(&name)
        .t(tag)
        .rm(true)
        .forcerm(true)
        .networkmode("none")
        .buildargs(&buildargs)
        .target(target.unwrap_or(""))
        .build();
    let mut stream = docker.build_image(options, None, Some(bollard::body_full(tar.into())));
    let mut built = None;
    while let Some(item) = stream.next().await {
        match item {
            Ok(info) => {
                if let Some(id) = info.aux.and_then(|a| a.id) {
                    built = Some(id);
                }
                if let Some(detail) = info.error_detail.and_then(|d| d.message) {
                    return Err(fail(detail));
                }
                if let Some(s) = info.stream {
                    for line in s.lines().filter(|l| !l.trim().is_empty()) {
                        progress(line);
                    }
                }
            }
            Err(BollardError::DockerStreamError { error }) => return Err(fail(error)),
            Err(e) => {
                return Err(engine(format!("build {tag}"), "check the daemon's log")(e));
            }
        }
    }
    Ok(built.unwrap_or_else(|| tag.to_string()))
}

/// The build context as a tar, and the Dockerfile's name inside it.
fn context_tar(context: &Path, dockerfile: &Path) -> Result<(Vec<u8>, String), ContainerError> {
    let io = |path: &Path, e: std::io::Error| ContainerError::Io {
        path: path.to_path_buf(),
        message: e.to_string(),
        fix: "check the build context's files and permissions".into(),
    };
    let mut b = tar::Builder::new(Vec::new());
    b.follow_symlinks(false);
    let mut total = 0u64;
    let mut stack = vec![context.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let mut entries: Vec<_> = std::fs::read_dir(&dir)
            .map_err(|e| io(&dir, e))?
            .flatten()
            .collect();
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let path = e.path();
            let rel = path.strip_prefix(context).unwrap_or(&path);
            if rel == Path::new(".git") {
                continue;
            }
            let meta = std::fs::symlink_metadata(&path).map_err(|e| io(&path, e))?;
            if meta.is_dir() {
                b.append_dir(rel, &path).map_err(|e| io(&path, e))?;
                stack.push(path);
            } else if meta.is_file() || meta.file_type().is_symlink() {
                total += meta.len();
                if total > MAX_CONTEXT_BYTES {
                    return Err(ContainerError::Io {
                        path: context.to_path_buf(),
                        message: "the build context is larger than 512 MiB".into(),
                        fix: "point build.context at a smaller directory".into(),
                    });
                }
                b.append_path_with_name(&path, rel)
                    .map_err(|e| io(&path, e))?;
            }
        }
    }
    let name = match dockerfile.strip_prefix(context) {
        Ok(rel) => rel.display().to_string(),
        Err(_) => {
            let name = ".agentos.Dockerfile".to_string();
            let text = std::fs::read(dockerfile).map_err(|e| io(dockerfile, e))?;
            let mut h = tar::Header::new_gnu();
            h.set_size(text.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            b.append_data(&mut h, &name, text.as_slice())
                .map_err(|e| io(dockerfile, e))?;
            name
        }
    };
    let data = b.into_inner().map_err(|e| io(context, e))?;
    Ok((data, name))
}

/// The engine's create request for a plan. `image_env` is the image's
/// `Env` (`KEY=value`), used to resolve `${containerEnv:X}` from `remoteEnv`.
pub fn create_body(plan: &ContainerPlan, image: &str, image_env: &[String]) -> ContainerCreateBody {
    let mut container_env: BTreeMap<String, String> = image_env
        .iter()
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    // An imported image has no Env; the engine then uses its default PATH.
    container_env
        .entry("PATH".into())
        .or_insert_with(|| DEFAULT_PATH.into());
    for (k, v) in &plan.env {
        if !v.contains("${containerEnv:") {
            container_env.insert(k.clone(), v.clone());
        }
    }
    let env = plan
        .env
        .iter()
        .map(|(k, v)| format!("{k}={}", resolve_container_env(v, &container_env)))
        .collect();
    let mounts = plan
        .mounts
        .iter()
        .map(|m| Mount {
            target: Some(m.target.display().to_string()),
            source: Some(m.source.display().to_string()),
            typ: Some(MountType::BIND),
            read_only: Some(m.read_only),
            ..Default::default()
        })
        .collect();
    let host = HostConfig {
        readonly_rootfs: Some(plan.readonly_rootfs),
        cap_drop: Some(vec!["ALL".into()]),
        cap_add: None,
        privileged: Some(false),
        security_opt: Some(vec!["no-new-privileges:true".into()]),
        network_mode: Some(plan.network_mode.clone()),
        memory: Some(plan.limits.memory_bytes),
        memory_swap: Some(plan.limits.memory_bytes),
        nano_cpus: Some(plan.limits.nano_cpus),
        pids_limit: Some(plan.limits.pids),
        tmpfs: Some(plan.tmpfs.clone().into_iter().collect()),
        init: Some(true),
        mounts: Some(mounts),
        auto_remove: Some(false),
        ..Default::default()
    };
    ContainerCreateBody {
        image: Some(image.to_string()),
        user: Some(plan.user.clone()),
        working_dir: Some(plan.working_dir.display().to_string()),
        env: Some(env),
        entrypoint: Some(plan.entrypoint.clone()),
        cmd: None,
        tty: Some(true),
        open_stdin: Some(true),
        stdin_once: Some(false),
        attach_stdin: Some(true),
        attach_stdout: Some(true),
        attach_stderr: Some(true),
        labels: Some(plan.labels.clone().into_iter().collect()),
        host_config: Some(host),
        ..Default::default()
    }
}

/// Create the plan's container from `image`, the reference
/// [`prepare_image`] returned.
/// A container left over from an earlier run of the same agent is removed
/// first. Returns the container id.
pub async fn create(
    docker: &Docker,
    plan: &ContainerPlan,
    image: &str,
) -> Result<String, ContainerError> {
    remove_by_label(docker, &plan.agent_id).await?;
    let image_env = match docker.inspect_image(image).await {
        Ok(i) => i.config.and_then(|c| c.env).unwrap_or_default(),
        Err(e) if status_code(&e) == Some(404) => {
            return Err(ContainerError::ImageMissing {
                image: image.to_string(),
            });
        }
        Err(e) => {
            return Err(engine(
                format!("inspect the image {image}"),
                "check the daemon's log",
            )(e));
        }
    };
    let options = CreateContainerOptionsBuilder::default()
        .name(&plan.container_name)
        .build();
    let body = create_body(plan, image, &image_env);
    let created = docker
        .create_container(Some(options), body)
        .await
        .map_err(engine(
            format!("create the container {}", plan.container_name),
            "check the plan's mounts and user, and the daemon's log",
        ))?;
    Ok(created.id)
}

/// Start a created container.
pub async fn start(docker: &Docker, id: &str) -> Result<(), ContainerError> {
    docker.start_container(id, None).await.map_err(engine(
        format!("start the container {id}"),
        "check that the image has the agent's command (and /bin/sh for lifecycle commands), and the daemon's log",
    ))
}

/// [`prepare_image`], [`create`] and [`start`]: the container runs detached
/// (use `agentos container-run` for a terminal). Returns the container id.
pub async fn create_and_start(
    docker: &Docker,
    plan: &ContainerPlan,
) -> Result<String, ContainerError> {
    let image = prepare_image(docker, plan, &mut |_| {}).await?;
    let id = create(docker, plan, &image).await?;
    if let Err(e) = start(docker, &id).await {
        let _ = remove(docker, &id).await;
        return Err(e);
    }
    Ok(id)
}

/// Open the container's attach stream (stdin, stdout, stderr; raw bytes for
/// a TTY container) on a hijacked connection. Attach before [`start`] so no
/// output is missed.
pub fn attach_raw(docker: &Docker, id: &str) -> Result<UnixStream, ContainerError> {
    let socket = socket_path();
    let unreachable = |message: String| ContainerError::Unreachable {
        socket: socket.clone(),
        message,
    };
    let mut s = UnixStream::connect(&socket).map_err(|e| unreachable(e.to_string()))?;
    let _ = s.set_read_timeout(Some(Duration::from_secs(15)));
    let request = format!(
        "POST /v{}/containers/{id}/attach?stream=1&stdin=1&stdout=1&stderr=1 HTTP/1.1\r\n\
         Host: docker\r\nConnection: Upgrade\r\nUpgrade: tcp\r\nContent-Length: 0\r\n\r\n",
        docker.client_version()
    );
    s.write_all(request.as_bytes())
        .map_err(|e| unreachable(e.to_string()))?;
    // Read the response head one byte at a time: whatever follows it is the
    // container's output and must not be consumed here.
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match s.read(&mut b) {
            Ok(1) => head.push(b[0]),
            Ok(_) => break,
            Err(e) => return Err(unreachable(format!("attach: {e}"))),
        }
        if head.len() > 16 * 1024 {
            break;
        }
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let status = head.split_whitespace().nth(1).unwrap_or("");
    if status != "101" && status != "200" {
        let mut body = String::new();
        let _ = s.take(4096).read_to_string(&mut body);
        return Err(ContainerError::Engine {
            action: format!("attach to the container {id}"),
            message: format!("{} {}", head.lines().next().unwrap_or(""), body.trim()),
            fix: "check that the container exists and was created with a TTY".into(),
        });
    }
    let _ = s.set_read_timeout(None);
    Ok(s)
}

/// Resize the container's TTY.
pub async fn resize(docker: &Docker, id: &str, cols: u16, rows: u16) -> Result<(), ContainerError> {
    let options = ResizeContainerTTYOptionsBuilder::default()
        .w(cols.max(1) as i32)
        .h(rows.max(1) as i32)
        .build();
    docker
        .resize_container_tty(id, options)
        .await
        .map_err(engine(
            format!("resize the container {id}"),
            "check that it is running",
        ))
}

/// Wait until the container stops; its exit code (137 when the OOM killer
/// or SIGKILL ended it).
pub async fn wait_exit(docker: &Docker, id: &str) -> Result<i64, ContainerError> {
    let options = WaitContainerOptionsBuilder::default()
        .condition("not-running")
        .build();
    let mut stream = docker.wait_container(id, Some(options));
    match stream.next().await {
        Some(Ok(r)) => Ok(r.status_code),
        Some(Err(BollardError::DockerContainerWaitError { code, .. })) => Ok(code),
        Some(Err(e)) => Err(engine(
            format!("wait for the container {id}"),
            "check the daemon's log",
        )(e)),
        None => Err(ContainerError::Engine {
            action: format!("wait for the container {id}"),
            message: "the engine closed the connection".into(),
            fix: "check the daemon's log".into(),
        }),
    }
}

/// Ask the container to stop (its stop signal, then SIGKILL after `grace`).
pub async fn stop(docker: &Docker, id: &str, grace: Duration) -> Result<(), ContainerError> {
    let options = StopContainerOptionsBuilder::default()
        .t(grace.as_secs().max(1) as i32)
        .build();
    match docker.stop_container(id, Some(options)).await {
        Ok(()) => Ok(()),
        Err(e) if matches!(status_code(&e), Some(304 | 404)) => Ok(()),
        Err(e) => Err(engine(
            format!("stop the container {id}"),
            "remove it with `docker rm -f`",
        )(e)),
    }
}

/// Remove a container (killing it if it runs). A missing one is not an error.
pub async fn remove(docker: &Docker, id: &str) -> Result<(), ContainerError> {
    let options = RemoveContainerOptionsBuilder::default()
        .force(true)
        .v(true)
        .build();
    match docker.remove_container(id, Some(options)).await {
        Ok(()) => Ok(()),
        Err(e) if matches!(status_code(&e), Some(404 | 409)) => Ok(()),
        Err(e) => Err(engine(
            format!("remove the container {id}"),
            "remove it with `docker rm -f`",
        )(e)),
    }
}

/// Ids of the containers (running or not) carrying `label` (`key` or `key=value`).
pub async fn list_by_label(docker: &Docker, label: &str) -> Result<Vec<String>, ContainerError> {
    let filters = HashMap::from([("label".to_string(), vec![label.to_string()])]);
    let options = ListContainersOptionsBuilder::default()
        .all(true)
        .filters(&filters)
        .build();
    let list = docker
        .list_containers(Some(options))
        .await
        .map_err(engine("list containers", "check the daemon's log"))?;
    Ok(list.into_iter().filter_map(|c| c.id).collect())
}

/// Remove every container of one agent; how many there were.
pub async fn remove_by_label(docker: &Docker, agent_id: &str) -> Result<usize, ContainerError> {
    let ids = list_by_label(docker, &format!("{AGENT_LABEL}={agent_id}")).await?;
    for id in &ids {
        remove(docker, id).await?;
    }
    Ok(ids.len())
}

/// Remove every AgentOS container (daemon shutdown with `--kill-agents`).
pub async fn remove_all_agentos(docker: &Docker) -> Result<usize, ContainerError> {
    let ids = list_by_label(docker, AGENT_LABEL).await?;
    for id in &ids {
        remove(docker, id).await?;
    }
    Ok(ids.len())
}

/// The host pid of the container's first process (`State.Pid`), to enter
/// its network namespace (`/proc/<pid>/ns/net`); `None` when not running.
pub async fn container_pid(docker: &Docker, id: &str) -> Result<Option<u32>, ContainerError> {
    let info = docker.inspect_container(id, None).await.map_err(engine(
        format!("inspect the container {id}"),
        "check that it exists",
    ))?;
    Ok(info
        .state
        .and_then(|s| s.pid)
        .filter(|p| *p > 0)
        .map(|p| p as u32))
}

/// Did the kernel's OOM killer end the container (`State.OOMKilled`)?
pub async fn oom_killed(docker: &Docker, id: &str) -> bool {
    docker
        .inspect_container(id, None)
        .await
        .ok()
        .and_then(|i| i.state)
        .and_then(|s| s.oom_killed)
        .unwrap_or(false)
}

/// Resolves `true` when the engine reports an OOM kill in container `id`
/// (subscribe before the container starts; the event can come after the
/// container's exit).
pub async fn oom_event(docker: &Docker, id: &str) -> bool {
    let mut filters: HashMap<&str, Vec<&str>> = HashMap::new();
    filters.insert("container", vec![id]);
    filters.insert("event", vec!["oom"]);
    let options = bollard::query_parameters::EventsOptionsBuilder::default()
        .filters(&filters)
        .build();
    let mut events = docker.events(Some(options));
    matches!(events.next().await, Some(Ok(_)))
}

/// Where `container-run` leaves the reason a limit stopped the agent, for
/// the node to show it as the agent's `error` (next to the plan).
pub fn limit_file(plan: &Path) -> std::path::PathBuf {
    plan.with_file_name("limit.json")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devcontainer::PlanBuilder;

    #[test]
    fn the_create_request_carries_the_hardening() {
        let t = tempfile::tempdir().unwrap();
        let plan = PlanBuilder::docker("a1", "img", t.path())
            .command(vec!["sh".into()])
            .env("PATH2", "${containerEnv:PATH}")
            .build()
            .unwrap();
        let body = create_body(&plan, "img", &["PATH=/usr/bin".into()]);
        let h = body.host_config.as_ref().unwrap();
        assert_eq!(h.readonly_rootfs, Some(true));
        assert_eq!(h.cap_drop.as_deref(), Some(&["ALL".to_string()][..]));
        assert_eq!(
            h.security_opt.as_deref(),
            Some(&["no-new-privileges:true".to_string()][..])
        );
        assert_eq!(h.network_mode.as_deref(), Some("none"));
        assert_eq!(h.memory, h.memory_swap);
        assert!(h.pids_limit.unwrap() > 0 && h.nano_cpus.unwrap() > 0);
        assert_eq!(h.init, Some(true));
        assert!(h.tmpfs.as_ref().unwrap().contains_key("/tmp"));
        assert_eq!(body.labels.as_ref().unwrap()[AGENT_LABEL], "a1");
        assert_eq!(body.tty, Some(true));
        assert_eq!(body.open_stdin, Some(true));
        assert!(
            body.env
                .as_ref()
                .unwrap()
                .contains(&"PATH2=/usr/bin".to_string())
        );
        assert_eq!(body.entrypoint.as_ref().unwrap().last().unwrap(), "sh");
    }

    #[test]
    fn the_context_tar_leaves_out_git_and_carries_an_outside_dockerfile() {
        let t = tempfile::tempdir().unwrap();
        let ctx = t.path().join("ctx");
        std::fs::create_dir_all(ctx.join(".git")).unwrap();
        std::fs::create_dir_all(ctx.join("sub")).unwrap();
        std::fs::write(ctx.join(".git/config"), "x").unwrap();
        std::fs::write(ctx.join("sub/a"), "a").unwrap();
        std::fs::write(t.path().join("Dockerfile"), "FROM x\n").unwrap();
        let (tar, name) = context_tar(&ctx, &t.path().join("Dockerfile")).unwrap();
        assert_eq!(name, ".agentos.Dockerfile");
        let mut a = tar::Archive::new(tar.as_slice());
        let names: Vec<String> = a
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().display().to_string())
            .collect();
        assert!(names.contains(&"sub/a".to_string()), "{names:?}");
        assert!(
            names.contains(&".agentos.Dockerfile".to_string()),
            "{names:?}"
        );
        assert!(!names.iter().any(|n| n.starts_with(".git")), "{names:?}");
    }
}
