//! `agentos`: the command-line client of an AgentOS node. The same binary is
//! re-executed as the daemon (`daemon start --foreground`), as each agent's
//! PTY holder (`shim`) and as the agents' hook callback (`hook`).

mod attach;
mod client;
mod container_run;
mod memory_cmd;
mod p2p_cmd;
mod relay_cmd;
mod security;
mod share_cmd;

use agentos_node::config;
use agentos_node::definitions::{Catalog, builtin_presets, find_preset, which};
use agentos_node::paths::Home;
use agentos_proto::{
    AgentInfo, AgentState, ClientFrame, CreateSpec, EnvVar, ErrorCode, ErrorInfo, Isolation,
    Request, Response, ServerFrame, WaitTarget,
};
use clap::{CommandFactory, Parser, Subcommand, ValueEnum};
use client::Client;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Parser, Debug)]
#[command(
    name = "agentos",
    version,
    about = "Run many AI coding agents side by side, each in its own terminal",
    long_about = "AgentOS runs AI coding agents (Claude Code, Codex, Gemini CLI, Aider, or any command) side by side, \
each in its own terminal that outlives the daemon. State comes from the agents' own hooks.\n\n\
Environment: AGENTOS_HOME (default ~/.agentos), AGENTOS_SOCKET, AGENTOS_LOG_LEVEL."
)]
struct Cli {
    /// More detail in the output.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    /// Print only what is asked for.
    #[arg(short, long, global = true)]
    quiet: bool,
    /// Machine-readable output (errors too).
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Start, stop and inspect the daemon.
    #[command(subcommand)]
    Daemon(DaemonCmd),
    /// Create an agent (or a preset of agents) and attach to it.
    Create {
        name: String,
        /// Agent type: claude, gemini, codex, aider, copilot, amp, opencode, shell, custom/<name>.
        #[arg(long = "agent", short = 'a')]
        agent: Option<String>,
        /// Start the agents of a preset, named <name>-<agent>.
        #[arg(long, conflicts_with = "agent")]
        preset: Option<String>,
        /// none | worktree (default inside a git repository) | devcontainer | docker.
        #[arg(long, value_enum, visible_alias = "sandbox")]
        isolation: Option<IsolationArg>,
        /// Working directory (default: the current one).
        #[arg(long)]
        cwd: Option<PathBuf>,
        /// Do not attach after creating.
        #[arg(long, short = 'd')]
        detach: bool,
        /// Extend the sandbox's allow-list: `<path>[:ro|:rw]` (read-only by
        /// default); repeatable.
        #[arg(long = "allow-path", value_name = "PATH[:ro|:rw]")]
        allow_path: Vec<String>,
        /// The command to run instead of the agent type's own.
        #[arg(last = true)]
        command: Vec<String>,
    },
    /// List agents: name, type, state, uptime, pid, workspace.
    #[command(alias = "ls")]
    List {
        /// Include destroyed agents.
        #[arg(long)]
        all: bool,
    },
    /// Attach to an agent's terminal (detach with Ctrl-b d).
    Attach {
        name: String,
        /// Detach key, tmux notation (default from config `general.detach_key`).
        #[arg(long)]
        detach_key: Option<String>,
    },
    /// Detach the clients of the agent whose terminal this runs in.
    Detach,
    /// Stop an agent and remove it from the list.
    #[command(alias = "rm")]
    Destroy {
        name: String,
        /// Kill at once (SIGKILL) instead of SIGTERM first.
        #[arg(long)]
        force: bool,
    },
    /// Restart an agent, resuming its own conversation when it can.
    Restart { name: String },
    /// Type text into an agent without attaching.
    Send {
        name: String,
        text: String,
        /// Press Enter after the text (after the agent's Enter delay).
        #[arg(long)]
        enter: bool,
    },
    /// An agent's scrollback as plain text.
    Logs {
        name: String,
        #[arg(long, short = 'n')]
        lines: Option<u32>,
        #[arg(long, short = 'f')]
        follow: bool,
        /// Prefix each line with its absolute line number (from the start of the session).
        #[arg(long)]
        numbers: bool,
    },
    /// Show an agent's state; --explain says which source decided it.
    Status {
        name: String,
        #[arg(long)]
        explain: bool,
    },
    /// Block until an agent is waiting, idle or exited (exit 124 on timeout).
    Wait {
        name: String,
        #[arg(long, value_enum)]
        until: WaitArg,
        /// Seconds (fractions allowed).
        #[arg(long)]
        timeout: Option<f64>,
    },
    /// Restart agents whose holders are gone (after a reboot), resuming each conversation.
    Restore,
    /// Show an agent's changes against the commit its worktree started from.
    Diff {
        name: String,
        #[arg(long)]
        stat: bool,
    },
    /// Merge an agent's branch into the branch it started from (refuses on conflicts).
    Merge {
        name: String,
        #[arg(long, conflicts_with = "rebase")]
        squash: bool,
        #[arg(long)]
        rebase: bool,
    },
    /// Warn when two agents have touched the same files.
    Overlaps,
    /// Find worktrees that no agent uses and the disk space they take.
    Gc,
    /// The sandbox policy in force for an agent.
    #[command(subcommand)]
    Policy(security::PolicyCmd),
    /// What sandboxed agents did and were stopped from doing.
    Audit(security::AuditArgs),
    /// Save and restore named sets of agents.
    #[command(subcommand)]
    Session(SessionCmd),
    /// Agent types: list them, check which are installed.
    #[command(subcommand)]
    Agents(AgentsCmd),
    /// This device's identity.
    #[command(subcommand)]
    Device(DeviceCmd),
    /// Pair this device with another: `agentos pair` shows an invite,
    /// `agentos pair <invite>` on the other device uses it.
    Pair(p2p_cmd::PairArgs),
    /// Paired devices; `devices remove <id>` removes one and rotates keys.
    Devices(p2p_cmd::DevicesArgs),
    /// Sync between paired devices: status, enable, disable, connect.
    #[command(subcommand)]
    Sync(p2p_cmd::SyncCmd),
    /// Move an agent to another paired device (its branch travels, it
    /// resumes its conversation there).
    Handoff {
        name: String,
        /// The device (id, or its first characters).
        #[arg(long)]
        to: String,
    },
    /// Share an agent (or `session:<name>`) live: prints an `agentos://`
    /// link and a web URL. `share list`, `share revoke <id>`.
    Share(share_cmd::ShareArgs),
    /// Open this node's web client: prints a fresh owner link.
    Web {
        /// How long the link works.
        #[arg(long, default_value = "12h")]
        expires: String,
    },
    /// Comments anchored to output lines: add, list, resolve.
    #[command(subcommand)]
    Comment(share_cmd::CommentCmd),
    /// The workspace's shared tasks: add, list, ready, claim, release,
    /// update, close, delete.
    Task(memory_cmd::TaskArgs),
    /// The workspace's decisions: add, list, delete.
    Decision(memory_cmd::DecisionArgs),
    /// The workspace's context: show, set.
    Context(memory_cmd::ContextArgs),
    /// The whole workspace memory: tasks, decisions, context.
    Memory(memory_cmd::Scope),
    /// Join a shared session from a link, in this terminal, with the
    /// link's rights. The detach key (or `agentos leave`) leaves.
    Join {
        link: String,
        /// Your name as others see it (default: $USER).
        #[arg(long)]
        name: Option<String>,
        /// Which agent of a shared session to show.
        #[arg(long)]
        agent: Option<String>,
        /// Detach key, tmux notation (default from config `general.detach_key`).
        #[arg(long)]
        detach_key: Option<String>,
    },
    /// Leave the sessions joined with `agentos join`.
    Leave,
    /// Stop an agent (SIGTERM, then SIGKILL after 3 s); `restart` starts it again.
    Stop { name: String },
    /// Run the home relay node in the foreground: relay v2 for devices
    /// behind NAT, plus store-and-forward of sealed envelopes it cannot read.
    Relay(relay_cmd::RelayArgs),
    /// The relay as a server (`server start --port 8765` = `relay`).
    #[command(subcommand)]
    Server(relay_cmd::ServerCmd),
    /// Read and change configuration.
    #[command(subcommand)]
    Config(ConfigCmd),
    /// Print shell completions.
    Completions { shell: clap_complete::Shell },
    /// Print the man page (roff).
    Man,
    /// Internal: the per-agent PTY holder.
    #[command(hide = true)]
    Shim {
        #[arg(long)]
        dir: PathBuf,
    },
    /// Internal: the sandbox launcher. With `--spec`, the whole sandbox
    /// (cgroup, namespaces, capabilities, Landlock, seccomp); with
    /// `--policy`, Landlock alone (inside a container). Then exec the command.
    #[command(hide = true)]
    SandboxExec {
        #[arg(long, conflicts_with = "spec", required_unless_present = "spec")]
        policy: Option<PathBuf>,
        #[arg(long)]
        spec: Option<PathBuf>,
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// Internal: run an agent's container on this terminal (the PTY holder's child).
    #[command(hide = true)]
    ContainerRun {
        #[arg(long)]
        plan: PathBuf,
    },
    /// Internal: called by an agent's own hooks.
    #[command(hide = true)]
    Hook {
        #[arg(long)]
        agent_id: String,
        #[arg(long)]
        event: String,
        /// Print `{}` (Gemini requires JSON from hooks).
        #[arg(long)]
        ack_json: bool,
        /// Payload as an argument (Codex `notify`); otherwise read from stdin.
        payload: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
enum DaemonCmd {
    /// Start the daemon (in the background unless --foreground).
    Start {
        #[arg(long)]
        foreground: bool,
    },
    /// Stop the daemon; agents keep running unless --kill-agents.
    Stop {
        #[arg(long)]
        kill_agents: bool,
    },
    /// Stop the daemon (agents keep running) and start it again: it
    /// re-reads its configuration and adopts the agents.
    Restart,
    /// Is it running? pid, uptime, memory, agents.
    Status,
    /// The daemon's JSON log.
    Logs {
        #[arg(long, short = 'f')]
        follow: bool,
        #[arg(long, short = 'n', default_value_t = 50)]
        lines: usize,
    },
}

#[derive(Subcommand, Debug)]
enum SessionCmd {
    /// Save the given agents (default: all) under a name.
    Save { name: String, agents: Vec<String> },
    /// Bring a saved set back: missing agents are re-created, resuming their conversations.
    Restore { name: String },
    /// List saved sessions.
    List,
}

#[derive(Subcommand, Debug)]
enum DeviceCmd {
    /// Print the device id (Syncthing-style, with check characters) and its
    /// 7-character short form.
    Show,
}

#[derive(Subcommand, Debug)]
enum AgentsCmd {
    /// Known agent types and presets.
    List,
    /// Which agents are installed, and how to install the others.
    Doctor,
}

#[derive(Subcommand, Debug)]
enum ConfigCmd {
    /// Print a value of the effective config (dotted key), or all of it.
    Get { key: Option<String> },
    /// Set a value in ~/.agentos/config.toml.
    Set { key: String, value: String },
    /// Open the config in $EDITOR.
    Edit,
    /// Print the config file's path.
    Path,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum IsolationArg {
    None,
    Worktree,
    Devcontainer,
    Docker,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum WaitArg {
    Waiting,
    Idle,
    Exited,
}

/// What a command failed with: a coded error, or a plain local failure.
enum Failure {
    Coded(ErrorInfo),
}

impl From<ErrorInfo> for Failure {
    fn from(e: ErrorInfo) -> Self {
        Failure::Coded(e)
    }
}

type Res = Result<i32, Failure>;

struct Ctx {
    home: Home,
    json: bool,
    quiet: bool,
    verbose: u8,
}

impl Ctx {
    fn client(&self) -> Result<Client, ErrorInfo> {
        Client::connect_or_start(&self.home)
    }

    fn say(&self, s: impl AsRef<str>) {
        if !self.quiet && !self.json {
            println!("{}", s.as_ref());
        }
    }

    fn json_out(&self, v: &impl serde::Serialize) {
        println!(
            "{}",
            serde_json::to_string_pretty(v).unwrap_or_else(|_| "null".into())
        );
    }
}

fn client_env() -> Vec<EnvVar> {
    std::env::vars()
        .map(|(key, value)| EnvVar { key, value })
        .collect()
}

/// Commands that only print: a closed pipe (`agentos list | head -1`) ends
/// them quietly, like any Unix tool. Long-lived roles (daemon, holder,
/// launcher, relay, attach, hooks) keep SIGPIPE ignored and handle EPIPE.
fn quiet_on_closed_pipe(cmd: &Cmd) {
    let long_lived = matches!(
        cmd,
        Cmd::Daemon(_)
            | Cmd::Shim { .. }
            | Cmd::SandboxExec { .. }
            | Cmd::ContainerRun { .. }
            | Cmd::Hook { .. }
            | Cmd::Attach { .. }
            | Cmd::Join { .. }
            | Cmd::Create { .. }
            | Cmd::Relay(_)
            | Cmd::Server(_)
    );
    if !long_lived {
        // SAFETY: setting a signal disposition to its default has no
        // preconditions; nothing else in this process handles SIGPIPE.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
}

fn main() {
    let cli = Cli::parse();
    quiet_on_closed_pipe(&cli.cmd);
    let ctx = Ctx {
        home: Home::from_env(),
        json: cli.json,
        quiet: cli.quiet,
        verbose: cli.verbose,
    };
    let code = match run(&ctx, cli.cmd) {
        Ok(c) => c,
        Err(Failure::Coded(e)) => {
            if ctx.json {
                ctx.json_out(&serde_json::json!({
                    "error": { "code": e.code.code(), "message": e.message, "hint": e.hint() }
                }));
            } else {
                eprintln!(
                    "error[{}]: {}\n  hint: {}",
                    e.code.code(),
                    e.message,
                    e.hint()
                );
            }
            e.code.exit_code()
        }
    };
    std::process::exit(code);
}

fn local(code: ErrorCode, msg: impl std::fmt::Display) -> Failure {
    Failure::Coded(ErrorInfo::new(code, msg.to_string()))
}

fn run(ctx: &Ctx, cmd: Cmd) -> Res {
    match cmd {
        Cmd::Shim { dir } => run_shim(&dir),
        Cmd::SandboxExec {
            policy,
            spec,
            command,
        } => match (spec, policy) {
            (Some(spec), _) => sandbox_launch(&spec, &command),
            (None, Some(policy)) => sandbox_exec(&policy, &command),
            (None, None) => Err(local(ErrorCode::InvalidArgument, "--spec or --policy")),
        },
        Cmd::ContainerRun { plan } => Ok(container_run::run(&plan)),
        Cmd::Hook {
            agent_id,
            event,
            ack_json,
            payload,
        } => Ok(run_hook(&ctx.home, &agent_id, &event, ack_json, payload)),
        Cmd::Daemon(d) => daemon_cmd(ctx, d),
        Cmd::Create {
            name,
            agent,
            preset,
            isolation,
            cwd,
            detach,
            allow_path,
            command,
        } => create(
            ctx, name, agent, preset, isolation, cwd, detach, allow_path, command,
        ),
        Cmd::List { all } => {
            let mut c = ctx.client()?;
            let Response::Agents { agents } = c.request(Request::List { all })? else {
                return Err(local(ErrorCode::Internal, "unexpected reply"));
            };
            if ctx.json {
                ctx.json_out(&agents);
            } else {
                let me = agentos_p2p::DeviceIdentity::load_or_create(&ctx.home.keys_dir())
                    .map(|d| d.device_id().to_string())
                    .unwrap_or_default();
                print_table(&agents, ctx.verbose > 0, &me);
            }
            Ok(0)
        }
        Cmd::Attach { name, detach_key } => {
            let key = detach_key_bytes(ctx, detach_key)?;
            do_attach(ctx, &name, key)
        }
        Cmd::Detach => {
            let id = std::env::var("AGENTOS_AGENT_ID").map_err(|_| {
                Failure::Coded(
                    ErrorInfo::new(
                        ErrorCode::InvalidArgument,
                        "not inside an agent's terminal (AGENTOS_AGENT_ID is not set)",
                    )
                    .with_hint("press the detach key (default Ctrl-b d) in the attached terminal"),
                )
            })?;
            let mut c = ctx.client()?;
            c.request(Request::Detach { agent_id: id })?;
            Ok(0)
        }
        Cmd::Destroy { name, force } => {
            let mut c = ctx.client()?;
            match c.request(Request::Destroy {
                name: name.clone(),
                force,
            })? {
                Response::Text { text } => ctx.say(text),
                _ => ctx.say(format!("destroyed {name}")),
            }
            Ok(0)
        }
        Cmd::Restart { name } => {
            let mut c = ctx.client()?;
            let r = c.request(Request::Restart { name })?;
            if let Response::Agent { info } = r {
                if ctx.json {
                    ctx.json_out(&info);
                } else {
                    ctx.say(format!(
                        "restarted {} (pid {})",
                        info.name,
                        fmt_pid(info.pid)
                    ));
                }
            }
            Ok(0)
        }
        Cmd::Send { name, text, enter } => {
            let mut c = ctx.client()?;
            let from_agent = std::env::var("AGENTOS_AGENT_ID")
                .ok()
                .filter(|s| !s.is_empty());
            c.request(Request::Send {
                name,
                text,
                enter,
                from_agent,
            })?;
            Ok(0)
        }
        Cmd::Logs {
            name,
            lines,
            follow,
            numbers,
        } => {
            let mut c = ctx.client()?;
            let r = c.request(Request::Logs {
                name,
                lines,
                follow,
            })?;
            let mut out = std::io::stdout().lock();
            let mut next = 1;
            if let Response::LogLines { first, lines } = r {
                if ctx.json && !follow {
                    ctx.json_out(&serde_json::json!({ "first": first, "lines": lines }));
                    return Ok(0);
                }
                for (i, l) in lines.iter().enumerate() {
                    let _ = if numbers {
                        writeln!(out, "{:>7}  {l}", first + i as u64)
                    } else {
                        writeln!(out, "{l}")
                    };
                }
                next = first + lines.len() as u64;
            }
            if follow {
                let _ = out.flush();
                loop {
                    match c.recv() {
                        Ok(ServerFrame::LogText { text }) => {
                            for l in text.lines() {
                                let _ = if numbers {
                                    writeln!(out, "{next:>7}  {l}")
                                } else {
                                    writeln!(out, "{l}")
                                };
                                next += 1;
                            }
                            let _ = out.flush();
                        }
                        Ok(ServerFrame::Exited { .. } | ServerFrame::Detached { .. }) | Err(_) => {
                            break;
                        }
                        Ok(_) => {}
                    }
                }
            }
            Ok(0)
        }
        Cmd::Status { name, explain } => {
            let mut c = ctx.client()?;
            let Response::Explain { explain: ex } = c.request(Request::Status { name })? else {
                return Err(local(ErrorCode::Internal, "unexpected reply"));
            };
            if ctx.json {
                ctx.json_out(&ex);
                return Ok(0);
            }
            println!("{}: {}", ex.info.name, state_text(&ex.info.state));
            println!("decided by: {}", ex.info.state_source);
            if explain {
                for s in &ex.sources {
                    let mark = if s.decided { "→" } else { " " };
                    let op = s
                        .opinion
                        .as_ref()
                        .map(state_text)
                        .unwrap_or_else(|| "-".into());
                    let rank = if s.rank == 0 {
                        "final".to_string()
                    } else {
                        format!("{}.", s.rank)
                    };
                    println!("{mark} {rank:<5} {:<13} {:<10} {}", s.source, op, s.detail);
                }
            }
            Ok(0)
        }
        Cmd::Wait {
            name,
            until,
            timeout,
        } => {
            let mut c = ctx.client()?;
            let until = match until {
                WaitArg::Waiting => WaitTarget::Waiting,
                WaitArg::Idle => WaitTarget::Idle,
                WaitArg::Exited => WaitTarget::Exited,
            };
            let timeout_ms = timeout.map(|s| (s * 1000.0) as u64).unwrap_or(u64::MAX / 4);
            let r = c.request(Request::Wait {
                name,
                until,
                timeout_ms,
            })?;
            if let Response::Text { text } = r {
                ctx.say(text);
            }
            Ok(0)
        }
        Cmd::Restore => {
            let mut c = ctx.client()?;
            let Response::Restored { agents } = c.request(Request::Restore)? else {
                return Err(local(ErrorCode::Internal, "unexpected reply"));
            };
            report_restored(ctx, &agents);
            Ok(0)
        }
        Cmd::Diff { name, stat } => {
            let mut c = ctx.client()?;
            if let Response::Text { text } = c.request(Request::Diff { name, stat })? {
                print!("{text}");
            }
            Ok(0)
        }
        Cmd::Merge {
            name,
            squash,
            rebase,
        } => {
            let mode = if squash {
                agentos_proto::MergeMode::Squash
            } else if rebase {
                agentos_proto::MergeMode::Rebase
            } else {
                agentos_proto::MergeMode::Merge
            };
            let mut c = ctx.client()?;
            if let Response::Text { text } = c.request(Request::Merge { name, mode })? {
                ctx.say(text);
            }
            Ok(0)
        }
        Cmd::Overlaps => {
            let mut c = ctx.client()?;
            if let Response::Text { text } = c.request(Request::Overlaps)? {
                print!("{text}");
            }
            Ok(0)
        }
        Cmd::Gc => {
            let mut c = ctx.client()?;
            if let Response::Text { text } = c.request(Request::Gc)? {
                print!("{text}");
            }
            Ok(0)
        }
        Cmd::Policy(p) => security::policy_cmd(ctx, p),
        Cmd::Audit(a) => security::audit_cmd(ctx, a),
        Cmd::Session(s) => session_cmd(ctx, s),
        Cmd::Agents(a) => agents_cmd(ctx, a),
        Cmd::Device(DeviceCmd::Show) => {
            let id = agentos_p2p::DeviceIdentity::load_or_create(&ctx.home.keys_dir())
                .map_err(|e| local(ErrorCode::Internal, e))?;
            let long = id.device_id().to_string();
            let short = id.device_id().short();
            if ctx.json {
                ctx.json_out(&serde_json::json!({
                    "device_id": long,
                    "short": short,
                    "public_key": id.public_key().iter().map(|b| format!("{b:02x}")).collect::<String>(),
                    "key_file": ctx.home.keys_dir().join("device.ed25519"),
                }));
            } else {
                println!("{long}");
                println!("short: {short}");
            }
            Ok(0)
        }
        Cmd::Config(c) => config_cmd(ctx, c),
        Cmd::Pair(a) => p2p_cmd::pair(ctx, a),
        Cmd::Devices(a) => p2p_cmd::devices(ctx, a),
        Cmd::Sync(c) => p2p_cmd::sync(ctx, c),
        Cmd::Handoff { name, to } => p2p_cmd::handoff(ctx, name, to),
        Cmd::Share(a) => share_cmd::share(ctx, a),
        Cmd::Web { expires } => share_cmd::web(ctx, expires),
        Cmd::Comment(c) => share_cmd::comment(ctx, c),
        Cmd::Task(a) => memory_cmd::task(ctx, a),
        Cmd::Decision(a) => memory_cmd::decision(ctx, a),
        Cmd::Context(a) => memory_cmd::context(ctx, a),
        Cmd::Memory(s) => memory_cmd::memory(ctx, s),
        Cmd::Join {
            link,
            name,
            agent,
            detach_key,
        } => {
            let key = detach_key_bytes(ctx, detach_key)?;
            share_cmd::join(ctx, link, name, agent, key)
        }
        Cmd::Leave => share_cmd::leave(ctx),
        Cmd::Stop { name } => {
            ctx.client()?
                .request(Request::Stop { name: name.clone() })?;
            ctx.say(format!("stopped {name}"));
            Ok(0)
        }
        Cmd::Relay(a) => Ok(relay_cmd::relay(&ctx.home, a, ctx.json)),
        Cmd::Server(c) => Ok(relay_cmd::server(&ctx.home, c, ctx.json)),
        Cmd::Completions { shell } => {
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "agentos",
                &mut std::io::stdout(),
            );
            Ok(0)
        }
        Cmd::Man => {
            let man = clap_mangen::Man::new(Cli::command());
            man.render(&mut std::io::stdout())
                .map_err(|e| local(ErrorCode::Internal, e))?;
            Ok(0)
        }
    }
}

fn report_restored(ctx: &Ctx, agents: &[AgentInfo]) {
    if ctx.json {
        ctx.json_out(&agents);
    } else if agents.is_empty() {
        ctx.say("nothing to restore");
    } else {
        for a in agents {
            let how = match &a.resume_id {
                Some(id) => format!("resuming conversation {id}"),
                None => "fresh start".into(),
            };
            ctx.say(format!("restored {} ({}, {how})", a.name, a.agent_type));
        }
    }
}

fn detach_key_bytes(ctx: &Ctx, over: Option<String>) -> Result<Vec<u8>, Failure> {
    let spec = match over {
        Some(s) => s,
        None => load_config(ctx)?.general.detach_key,
    };
    config::parse_detach_key(&spec).map_err(|e| local(ErrorCode::InvalidArgument, e))
}

fn load_config(ctx: &Ctx) -> Result<config::Config, Failure> {
    let cwd = std::env::current_dir().ok();
    config::load(&ctx.home.config_file(), cwd.as_deref())
        .map_err(|e| local(ErrorCode::ConfigInvalid, e))
}

fn do_attach(ctx: &Ctx, name: &str, key: Vec<u8>) -> Res {
    let c = ctx.client()?;
    let end = attach::attach(c, name, key)?;
    let (msg, code) = match end {
        attach::AttachEnd::Detached => (format!("[detached from {name}]"), 0),
        attach::AttachEnd::Exited(s) => (format!("[{name} {}]", state_text(&s)), 0),
        attach::AttachEnd::Gone => (format!("[{name} is gone]"), 0),
        attach::AttachEnd::Error(e) => return Err(e.into()),
    };
    if !ctx.quiet {
        eprintln!("\r\n{msg}");
    }
    Ok(code)
}

#[allow(clippy::too_many_arguments)]
fn create(
    ctx: &Ctx,
    name: String,
    agent: Option<String>,
    preset: Option<String>,
    isolation: Option<IsolationArg>,
    cwd: Option<PathBuf>,
    detach: bool,
    allow_paths: Vec<String>,
    command: Vec<String>,
) -> Res {
    let cwd = match cwd {
        Some(d) => d,
        None => std::env::current_dir().map_err(|e| local(ErrorCode::InvalidArgument, e))?,
    };
    let cwd = std::path::absolute(&cwd).unwrap_or(cwd);
    let isolation = match isolation {
        None => Isolation::Auto,
        Some(IsolationArg::None) => Isolation::None,
        Some(IsolationArg::Worktree) => Isolation::Worktree,
        Some(IsolationArg::Devcontainer) => Isolation::Devcontainer,
        Some(IsolationArg::Docker) => Isolation::Docker,
    };
    let (cols, rows) = if std::io::stdout().is_terminal() {
        crossterm::terminal::size().unwrap_or((0, 0))
    } else {
        (0, 0)
    };
    let mut specs = Vec::new();
    if let Some(p) = preset {
        let preset = find_preset(&p, &ctx.home.presets_dir(), Some(&cwd)).map_err(|e| match e {
            agentos_node::definitions::DefinitionError::UnknownPreset(_) => {
                local(ErrorCode::PresetNotFound, format!("no preset named '{p}'"))
            }
            other => local(ErrorCode::ConfigInvalid, other),
        })?;
        for a in preset.agents {
            specs.push(CreateSpec {
                name: format!("{name}-{}", a.name),
                agent_type: Some(a.agent),
                command: vec![],
                extra_args: a.args,
                cwd: a
                    .cwd
                    .map(|c| cwd.join(c))
                    .unwrap_or_else(|| cwd.clone())
                    .display()
                    .to_string(),
                isolation,
                env: client_env(),
                cols,
                rows,
                allow_paths: allow_paths.clone(),
            });
        }
    } else {
        specs.push(CreateSpec {
            name,
            agent_type: agent,
            command,
            extra_args: vec![],
            cwd: cwd.display().to_string(),
            isolation,
            env: client_env(),
            cols,
            rows,
            allow_paths,
        });
    }
    let mut c = ctx.client()?;
    let mut created = Vec::new();
    for spec in specs {
        match c.request(Request::Create { spec })? {
            Response::Agent { info } => {
                ctx.say(format!(
                    "created {} ({}) in {}",
                    info.name, info.agent_type, info.cwd
                ));
                created.push(info);
            }
            _ => return Err(local(ErrorCode::Internal, "unexpected reply")),
        }
    }
    if ctx.json {
        ctx.json_out(&created);
    }
    let interactive = std::io::stdin().is_terminal() && std::io::stdout().is_terminal();
    if detach || ctx.json || !interactive {
        if !detach && !interactive && !ctx.quiet && !ctx.json {
            eprintln!(
                "(not a terminal: not attaching; `agentos attach {}` later)",
                created[0].name
            );
        }
        return Ok(0);
    }
    let key = detach_key_bytes(ctx, None)?;
    do_attach(ctx, &created[0].name, key)
}

fn fmt_pid(p: Option<u32>) -> String {
    p.map(|p| p.to_string()).unwrap_or_else(|| "-".into())
}

fn state_text(s: &AgentState) -> String {
    match s {
        AgentState::Exited { code } => format!("exited ({code})"),
        AgentState::Error { message } => format!("error: {message}"),
        other => other.label().to_string(),
    }
}

fn uptime(started: Option<u64>) -> String {
    let Some(t) = started else { return "-".into() };
    let now = agentos_actors::holder::now_ms();
    let s = now.saturating_sub(t) / 1000;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{}s", s / 60, s % 60),
        3600..86400 => format!("{}h{}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d{}h", s / 86400, (s % 86400) / 3600),
    }
}

fn short_path(p: &str) -> String {
    let home = std::env::var("HOME").unwrap_or_default();
    match p.strip_prefix(&home) {
        Some(rest) if !home.is_empty() => format!("~{rest}"),
        _ => p.to_string(),
    }
}

fn print_table(agents: &[AgentInfo], verbose: bool, this_device: &str) {
    if agents.is_empty() {
        println!("no agents — create one with `agentos create <name> --agent claude`");
        return;
    }
    let rows: Vec<[String; 7]> = agents
        .iter()
        .map(|a| {
            let state = if a.live {
                state_text(&a.state)
            } else {
                "destroyed".into()
            };
            let state = if verbose {
                format!("{state} [{}]", a.state_source)
            } else {
                state
            };
            [
                a.name.clone(),
                a.agent_type.clone(),
                state,
                if a.live && !a.state.is_terminal() {
                    uptime(a.started_at_ms)
                } else {
                    "-".into()
                },
                fmt_pid(a.pid),
                if a.host_device.is_empty() || a.host_device == this_device {
                    "this".into()
                } else {
                    a.host_device.chars().take(7).collect()
                },
                short_path(&a.workspace),
            ]
        })
        .collect();
    let headers = [
        "NAME",
        "TYPE",
        "STATE",
        "UPTIME",
        "PID",
        "DEVICE",
        "WORKSPACE",
    ];
    let mut w = headers.map(|h| h.len());
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            w[i] = w[i].max(c.chars().count());
        }
    }
    let line = |cells: [&str; 7]| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i == 6 {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<width$}  ", width = w[i]));
            }
        }
        println!("{}", s.trim_end());
    };
    line(headers);
    for r in &rows {
        line([&r[0], &r[1], &r[2], &r[3], &r[4], &r[5], &r[6]]);
    }
}

fn daemon_cmd(ctx: &Ctx, d: DaemonCmd) -> Res {
    match d {
        DaemonCmd::Start { foreground: true } => {
            let exe = std::env::current_exe().map_err(|e| local(ErrorCode::Internal, e))?;
            match agentos_node::daemon::run(ctx.home.clone(), exe, std::io::stderr().is_terminal())
            {
                Ok(()) => Ok(0),
                Err(agentos_node::daemon::DaemonError::AlreadyRunning { home, pid }) => Err(local(
                    ErrorCode::DaemonAlreadyRunning,
                    format!("a daemon is already running for {home} (pid {pid})"),
                )),
                Err(e) => Err(local(ErrorCode::DaemonUnavailable, e)),
            }
        }
        DaemonCmd::Start { foreground: false } => {
            if let Some(mut c) = Client::connect(&ctx.home)? {
                let r = c.request(Request::Ping)?;
                if let Response::Pong { pid } = r {
                    ctx.say(format!("daemon already running (pid {pid})"));
                }
                return Ok(0);
            }
            let mut c = Client::connect_or_start(&ctx.home)?;
            if let Response::Pong { pid } = c.request(Request::Ping)? {
                ctx.say(format!(
                    "daemon started (pid {pid}), socket {}",
                    ctx.home.socket.display()
                ));
            }
            Ok(0)
        }
        DaemonCmd::Restart => {
            daemon_cmd(ctx, DaemonCmd::Stop { kill_agents: false })?;
            daemon_cmd(ctx, DaemonCmd::Start { foreground: false })
        }
        DaemonCmd::Stop { kill_agents } => {
            let Some(mut c) = Client::connect(&ctx.home)? else {
                ctx.say("daemon is not running");
                return Ok(0);
            };
            let pid = match c.request(Request::Ping)? {
                Response::Pong { pid } => pid,
                _ => 0,
            };
            c.request(Request::Shutdown { kill_agents })?;
            // Wait until the process is gone (bounded).
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), None).is_ok()
                && std::time::Instant::now() < deadline
            {
                std::thread::sleep(Duration::from_millis(10));
            }
            ctx.say(if kill_agents {
                "daemon stopped; agents killed"
            } else {
                "daemon stopped; agents keep running"
            });
            Ok(0)
        }
        DaemonCmd::Status => {
            let Some(mut c) = Client::connect(&ctx.home)? else {
                if ctx.json {
                    ctx.json_out(&serde_json::json!({ "running": false }));
                } else {
                    ctx.say(format!(
                        "daemon is not running (home {})",
                        ctx.home.root.display()
                    ));
                }
                return Ok(3);
            };
            let Response::DaemonStatus { status } = c.request(Request::DaemonStatus)? else {
                return Err(local(ErrorCode::Internal, "unexpected reply"));
            };
            if ctx.json {
                ctx.json_out(&status);
            } else {
                println!(
                    "daemon running: pid {}, version {}",
                    status.pid, status.version
                );
                println!("uptime: {}", uptime(Some(status.started_at_ms)));
                println!("memory: {:.1} MB RSS", status.rss_bytes as f64 / 1e6);
                if let Some(w) = &status.web {
                    println!("web: {w} (`agentos web` prints an owner link)");
                }
                println!("agents: {}", status.agents);
                println!("home: {}", status.home);
                println!("socket: {}", status.socket);
                for n in &status.notices {
                    println!("notice: {n}");
                }
            }
            Ok(0)
        }
        DaemonCmd::Logs { follow, lines } => {
            let path = ctx.home.daemon_log();
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            let all: Vec<&str> = text.lines().collect();
            let mut out = std::io::stdout().lock();
            for l in &all[all.len().saturating_sub(lines)..] {
                let _ = writeln!(out, "{l}");
            }
            let _ = out.flush();
            if follow {
                let mut pos = text.len() as u64;
                loop {
                    let len = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
                    if len < pos {
                        pos = 0;
                    }
                    if len > pos {
                        use std::io::{Read, Seek, SeekFrom};
                        if let Ok(mut f) = std::fs::File::open(&path) {
                            let _ = f.seek(SeekFrom::Start(pos));
                            let mut buf = String::new();
                            let _ = f.take(len - pos).read_to_string(&mut buf);
                            let _ = out.write_all(buf.as_bytes());
                            let _ = out.flush();
                        }
                        pos = len;
                    }
                    std::thread::sleep(Duration::from_millis(200));
                }
            }
            Ok(0)
        }
    }
}

fn session_cmd(ctx: &Ctx, s: SessionCmd) -> Res {
    let mut c = ctx.client()?;
    match s {
        SessionCmd::Save { name, agents } => {
            if let Response::Sessions { sessions } =
                c.request(Request::SessionSave { name, agents })?
            {
                if ctx.json {
                    ctx.json_out(&sessions);
                } else if let Some(s) = sessions.first() {
                    ctx.say(format!(
                        "saved session {} ({})",
                        s.name,
                        s.agents.join(", ")
                    ));
                }
            }
        }
        SessionCmd::Restore { name } => {
            if let Response::Restored { agents } = c.request(Request::SessionRestore {
                name,
                env: client_env(),
            })? {
                report_restored(ctx, &agents);
            }
        }
        SessionCmd::List => {
            if let Response::Sessions { sessions } = c.request(Request::SessionList)? {
                if ctx.json {
                    ctx.json_out(&sessions);
                } else if sessions.is_empty() {
                    ctx.say("no saved sessions — save one with `agentos session save <name>`");
                } else {
                    for s in sessions {
                        println!("{}  {}", s.name, s.agents.join(", "));
                    }
                }
            }
        }
    }
    Ok(0)
}

fn agents_cmd(ctx: &Ctx, a: AgentsCmd) -> Res {
    let cat = Catalog::load(&ctx.home.custom_agents_dir());
    let env: Vec<(String, String)> = std::env::vars().collect();
    let path = std::env::var("PATH").ok();
    match a {
        AgentsCmd::List => {
            if ctx.json {
                let v: Vec<_> = cat
                    .agents
                    .iter()
                    .map(|d| {
                        serde_json::json!({
                            "name": d.name, "aliases": d.aliases, "description": d.description,
                            "command": d.program(&env), "args": d.args, "origin": d.origin,
                            "hooks": d.hooks.recipe, "installed": which(&d.binary(&env), path.as_deref()).is_some(),
                        })
                    })
                    .collect();
                ctx.json_out(&serde_json::json!({ "agents": v, "errors": cat.errors,
                    "presets": builtin_presets().iter().map(|p| &p.name).collect::<Vec<_>>() }));
                return Ok(0);
            }
            for d in &cat.agents {
                let aliases = if d.aliases.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", d.aliases.join(", "))
                };
                println!("{:<14}{:<22} {}", d.name, aliases, d.description);
            }
            println!();
            for p in builtin_presets() {
                println!("preset {:<8} {}", p.name, p.description);
            }
            for e in &cat.errors {
                eprintln!("warning: {e}");
            }
            Ok(0)
        }
        AgentsCmd::Doctor => {
            // Version checks run in parallel: some agents take ~1 s to start.
            let handles: Vec<_> = cat
                .agents
                .iter()
                .map(|d| {
                    let bin = d.binary(&env);
                    let found = which(&bin, path.as_deref());
                    let args = d.detect.version_args.clone();
                    let d = d.clone();
                    std::thread::spawn(move || {
                        let version = found.as_ref().filter(|_| !args.is_empty()).and_then(|p| {
                            std::process::Command::new(p)
                                .args(&args)
                                .stdin(std::process::Stdio::null())
                                .stderr(std::process::Stdio::null())
                                .output()
                                .ok()
                                .map(|o| {
                                    String::from_utf8_lossy(&o.stdout)
                                        .lines()
                                        .next()
                                        .unwrap_or("")
                                        .trim()
                                        .to_string()
                                })
                        });
                        (d, found, version)
                    })
                })
                .collect();
            let results: Vec<_> = handles.into_iter().filter_map(|h| h.join().ok()).collect();
            if ctx.json {
                let v: Vec<_> = results
                    .iter()
                    .map(|(d, found, version)| {
                        serde_json::json!({ "name": d.name, "installed": found.is_some(),
                            "path": found.as_ref().map(|p| p.display().to_string()),
                            "version": version, "install_hint": d.install_hint })
                    })
                    .collect();
                ctx.json_out(&v);
                return Ok(0);
            }
            let mut missing = 0;
            for (d, found, version) in &results {
                match found {
                    Some(p) => println!(
                        "ok       {:<14} {} {}",
                        d.name,
                        p.display(),
                        version.as_deref().unwrap_or("")
                    ),
                    None => {
                        missing += 1;
                        println!("missing  {:<14} install: {}", d.name, d.install_hint);
                    }
                }
            }
            for e in &cat.errors {
                println!("broken   {e}");
            }
            println!(
                "\n{} of {} agent types installed",
                results.len() - missing,
                results.len()
            );
            Ok(0)
        }
    }
}

fn config_cmd(ctx: &Ctx, c: ConfigCmd) -> Res {
    let file = ctx.home.config_file();
    match c {
        ConfigCmd::Path => {
            println!("{}", file.display());
            Ok(0)
        }
        ConfigCmd::Get { key } => {
            let cfg = load_config(ctx)?;
            match key {
                None => {
                    print!("{}", toml::to_string_pretty(&cfg).unwrap_or_default());
                }
                Some(k) => {
                    let v = config::get(&cfg, &k).map_err(|e| {
                        Failure::Coded(
                            ErrorInfo::new(ErrorCode::InvalidArgument, e.to_string())
                                .with_hint("run `agentos config get` to see every key"),
                        )
                    })?;
                    if ctx.json {
                        ctx.json_out(&v);
                    } else {
                        match v {
                            toml::Value::String(s) => println!("{s}"),
                            other => println!("{other}"),
                        }
                    }
                }
            }
            Ok(0)
        }
        ConfigCmd::Set { key, value } => {
            config::set(&file, &key, &value).map_err(|e| match e {
                config::ConfigError::UnknownKey(_) => Failure::Coded(
                    ErrorInfo::new(ErrorCode::InvalidArgument, e.to_string())
                        .with_hint("run `agentos config get` to see every key"),
                ),
                other => local(ErrorCode::ConfigInvalid, other),
            })?;
            Ok(0)
        }
        ConfigCmd::Edit => {
            let editor = std::env::var("VISUAL")
                .or_else(|_| std::env::var("EDITOR"))
                .unwrap_or_else(|_| "vi".into());
            if !file.exists() {
                if let Some(d) = file.parent() {
                    let _ = std::fs::create_dir_all(d);
                }
                let _ = std::fs::write(
                    &file,
                    toml::to_string_pretty(&config::Config::default()).unwrap_or_default(),
                );
            }
            let status = std::process::Command::new("sh")
                .arg("-c")
                .arg(format!("{editor} \"$1\""))
                .arg("sh")
                .arg(&file)
                .status()
                .map_err(|e| {
                    local(
                        ErrorCode::InvalidArgument,
                        format!("cannot run editor `{editor}`: {e}"),
                    )
                })?;
            if !status.success() {
                return Ok(status.code().unwrap_or(1));
            }
            config::load(&file, None).map_err(|e| local(ErrorCode::ConfigInvalid, e))?;
            Ok(0)
        }
    }
}

/// `agentos sandbox-exec --spec`: build the agent's sandbox around this
/// process, tell the node (which opens the proxy inside the new network
/// namespace and starts auditing this run), lock it down, become the agent.
/// Fails closed: on any error nothing is executed.
fn sandbox_launch(spec_path: &std::path::Path, command: &[String]) -> Res {
    use agentos_sandbox::launch;
    use std::os::unix::process::CommandExt;
    let unavailable = |e: String| local(ErrorCode::IsolationUnavailable, e);
    let text = std::fs::read(spec_path).map_err(|e| {
        unavailable(format!(
            "cannot read the sandbox spec {}: {e}",
            spec_path.display()
        ))
    })?;
    let spec: agentos_sandbox::SandboxSpec = serde_json::from_slice(&text)
        .map_err(|e| unavailable(format!("invalid sandbox spec: {e}")))?;
    // SAFETY: geteuid never fails.
    let rootless = unsafe { libc::geteuid() } != 0;
    let entered = launch::enter(&spec).map_err(|e| unavailable(e.to_string()))?;
    // Without root the node cannot enter our network namespace: open the
    // proxy's socket here, at a fixed descriptor that stays open in the
    // agent (a restarted node takes it again).
    let proxy_fd = match spec.network {
        agentos_sandbox::NetworkMode::Proxy { port } if rootless => {
            let l = std::net::TcpListener::bind(("127.0.0.1", port))
                .map_err(|e| unavailable(format!("cannot open the proxy port {port}: {e}")))?;
            use std::os::fd::AsRawFd;
            const PROXY_FD: i32 = 1000;
            // SAFETY: dup2 onto a free, fixed number (without CLOEXEC).
            if unsafe { libc::dup2(l.as_raw_fd(), PROXY_FD) } < 0 {
                return Err(unavailable(format!(
                    "cannot keep the proxy socket: {}",
                    std::io::Error::last_os_error()
                )));
            }
            Some(PROXY_FD)
        }
        _ => None,
    };
    let node = Home {
        root: std::path::PathBuf::new(),
        socket: spec.node_socket.clone(),
    };
    let mut client = Client::connect(&node)?.ok_or_else(|| {
        unavailable(format!(
            "the node's channel {} is not there; the agent was not started",
            spec.node_socket.display()
        ))
    })?;
    let _ = client
        .stream
        .set_read_timeout(Some(Duration::from_secs(10)));
    client
        .request(Request::SandboxReady {
            agent_id: spec.agent_id.clone(),
            pid: std::process::id(),
            audit_session: entered.audit_session,
            proxy_fd,
        })
        .map_err(|e| {
            unavailable(format!(
                "the node did not set up the sandbox: {}",
                e.message
            ))
        })?;
    drop(client);
    // Without root there is no kernel audit for us: the holder (which
    // outlives any daemon) supervises a seccomp listener instead.
    let holder = if rootless {
        let sock = spec
            .node_socket
            .parent()
            .map(|d| d.join("holder.sock"))
            .unwrap_or_default();
        Some(std::os::unix::net::UnixStream::connect(&sock).map_err(|e| {
            unavailable(format!(
                "cannot reach the holder at {}: {e}",
                sock.display()
            ))
        })?)
    } else {
        None
    };
    launch::restrict(&spec).map_err(|e| unavailable(e.to_string()))?;
    if let Some(mut h) = holder {
        hand_listener_to_holder(&mut h).map_err(unavailable)?;
    }
    let err = std::process::Command::new(&command[0])
        .args(&command[1..])
        .exec();
    Err(local(
        ErrorCode::SpawnFailed,
        format!("cannot run {}: {err}", command[0]),
    ))
}

/// Install the seccomp listener and give it to the holder (rootless audit).
fn hand_listener_to_holder(h: &mut std::os::unix::net::UnixStream) -> Result<(), String> {
    use agentos_proto::{
        HOLDER_MAGIC, HolderCmd, HolderEvent, PROTOCOL_VERSION, check_hello, hello_bytes,
        read_frame, write_frame,
    };
    use std::io::{Read, Write as _};
    use std::os::fd::AsRawFd;
    let _ = h.set_read_timeout(Some(Duration::from_secs(10)));
    let e =
        |w: &str, x: &dyn std::fmt::Display| format!("audit handshake with the holder ({w}): {x}");
    h.write_all(&hello_bytes(HOLDER_MAGIC, PROTOCOL_VERSION))
        .map_err(|x| e("hello", &x))?;
    let mut hello = [0u8; 8];
    h.read_exact(&mut hello).map_err(|x| e("hello", &x))?;
    check_hello(HOLDER_MAGIC, hello).map_err(|x| e("hello", &x))?;
    let _info: HolderEvent = read_frame(h).map_err(|x| e("info", &x))?;
    let listener =
        agentos_sandbox::notify::install_listener().map_err(|x| e("seccomp listener", &x))?;
    write_frame(
        h,
        &HolderCmd::Supervise {
            pid: std::process::id(),
            fd: listener.as_raw_fd(),
        },
    )
    .map_err(|x| e("supervise", &x))?;
    match read_frame::<HolderEvent>(h) {
        Ok(HolderEvent::Ack { error: None }) => Ok(()),
        Ok(HolderEvent::Ack { error: Some(x) }) => Err(e("refused", &x)),
        Ok(_) => Err(e("reply", &"unexpected")),
        Err(x) => Err(e("reply", &x)),
    }
}

/// `agentos sandbox-exec --policy`: restrict this process, then become the agent.
/// Fails closed: if the policy cannot be enforced, nothing is executed.
fn sandbox_exec(policy: &std::path::Path, command: &[String]) -> Res {
    use std::os::unix::process::CommandExt;
    let text = std::fs::read(policy).map_err(|e| {
        local(
            ErrorCode::IsolationUnavailable,
            format!("cannot read the sandbox policy {}: {e}", policy.display()),
        )
    })?;
    let policy: agentos_sandbox::FilePolicy = serde_json::from_slice(&text).map_err(|e| {
        local(
            ErrorCode::IsolationUnavailable,
            format!("invalid sandbox policy: {e}"),
        )
    })?;
    agentos_sandbox::enforce(&policy).map_err(|e| local(ErrorCode::IsolationUnavailable, e))?;
    let err = std::process::Command::new(&command[0])
        .args(&command[1..])
        .exec();
    Err(local(
        ErrorCode::SpawnFailed,
        format!("cannot run {}: {err}", command[0]),
    ))
}

/// `agentos shim`: detach from the daemon (fork + setsid) and hold the PTY.
fn run_shim(dir: &std::path::Path) -> Res {
    use nix::unistd::{ForkResult, fork, setsid};
    // Single-threaded here, so fork is safe. The parent returns at once; the
    // child is re-parented to init and outlives the daemon.
    match unsafe { fork() } {
        Ok(ForkResult::Parent { .. }) => return Ok(0),
        Ok(ForkResult::Child) => {}
        Err(e) => {
            agentos_actors::holder::record_failure(dir, &format!("fork failed: {e}"));
            return Ok(1);
        }
    }
    let _ = setsid();
    // Ignore the terminal signals a daemon might pass on.
    unsafe {
        libc::signal(libc::SIGHUP, libc::SIG_IGN);
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
    }
    match agentos_actors::holder::run(dir) {
        Ok(_) => Ok(0),
        Err(e) => {
            eprintln!("agentos shim: {e}");
            agentos_actors::holder::record_failure(dir, &e.to_string());
            Ok(1)
        }
    }
}

/// `agentos hook`: record the event durably, tell the daemon, never fail.
fn run_hook(
    home: &Home,
    agent_id: &str,
    event: &str,
    ack_json: bool,
    payload: Option<String>,
) -> i32 {
    use std::io::Read;
    let payload = payload.unwrap_or_else(|| {
        let mut s = String::new();
        if !std::io::stdin().is_terminal() {
            let _ = std::io::stdin().take(1 << 20).read_to_string(&mut s);
        }
        s
    });
    // Codex `notify`: the event is the payload's "type".
    let event = if event == "notify" {
        serde_json::from_str::<serde_json::Value>(&payload)
            .ok()
            .and_then(|v| v.get("type").and_then(|t| t.as_str()).map(str::to_string))
            .unwrap_or_else(|| event.to_string())
    } else {
        event.to_string()
    };
    let valid_id = !agent_id.is_empty() && agent_id.chars().all(|c| c.is_ascii_alphanumeric());
    if valid_id {
        let line = serde_json::json!({
            "event": event, "payload": payload, "at_ms": agentos_actors::holder::now_ms()
        });
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(home.agent_dir(agent_id).join("hooks.jsonl"))
        {
            let _ = writeln!(f, "{line}");
        }
        // A transient failure (a daemon restarting) is retried briefly; the
        // event is in hooks.jsonl either way, and a new daemon replays it.
        let client = (0..3).find_map(|i| {
            if i > 0 {
                std::thread::sleep(Duration::from_millis(50));
            }
            Client::connect(home).ok()
        });
        if let Some(Some(mut c)) = client {
            let _ = c.stream.set_read_timeout(Some(Duration::from_secs(2)));
            let _ = c.send(&ClientFrame::Request(Request::Hook {
                agent_id: agent_id.to_string(),
                event,
                payload,
            }));
            let _ = c.recv();
        }
    }
    if ack_json {
        println!("{{}}");
    }
    0
}
