//! `agentos task`, `decision`, `context` and `memory`: the workspace memory
//! shared by every agent and collaborator (tasks, decisions, context). The
//! daemon keeps it in the workspace document and writes the projections
//! `.agentos/memory/{tasks.jsonl,decisions.md,context.md}`; agents use these
//! commands (with `--json`) to find, claim and close work.

use crate::{Ctx, Failure, Res, local};
use agentos_proto::memory::{MemoryOp, MemoryView, TaskView};
use agentos_proto::{ErrorCode, Request, Response};
use clap::{Args, Subcommand};
use std::io::Read;
use std::path::PathBuf;

/// Where and as whom.
#[derive(Args, Debug, Clone)]
pub struct Scope {
    /// A directory of the workspace (default: the current directory).
    #[arg(long, global = true)]
    pub workspace: Option<PathBuf>,
    /// Who edits or claims (default: the agent running this command, else $USER).
    #[arg(long = "as", global = true, value_name = "NAME")]
    pub by: Option<String>,
}

#[derive(Args, Debug)]
pub struct TaskArgs {
    #[command(subcommand)]
    pub cmd: TaskCmd,
    #[command(flatten)]
    pub scope: Scope,
}

#[derive(Subcommand, Debug)]
pub enum TaskCmd {
    /// Add a task.
    Add {
        title: String,
        #[arg(long, default_value = "")]
        notes: String,
    },
    /// Open and in-progress tasks (`--all`: closed and deleted ones too).
    List {
        #[arg(long)]
        all: bool,
    },
    /// Tasks nobody holds: open, unclaimed.
    Ready,
    /// Take a task: refused (E028) when someone else holds it.
    Claim { id: String },
    /// Give a task back.
    Release { id: String },
    /// Change a task's title, notes or status.
    Update {
        id: String,
        #[arg(long)]
        title: Option<String>,
        #[arg(long)]
        notes: Option<String>,
        /// open, in_progress, blocked or closed.
        #[arg(long)]
        status: Option<String>,
    },
    /// Close a task.
    Close {
        id: String,
        #[arg(long)]
        reason: Option<String>,
    },
    /// Delete a task (it stays on record, marked deleted).
    Delete { id: String },
}

#[derive(Args, Debug)]
pub struct DecisionArgs {
    #[command(subcommand)]
    pub cmd: DecisionCmd,
    #[command(flatten)]
    pub scope: Scope,
}

#[derive(Subcommand, Debug)]
pub enum DecisionCmd {
    /// Record a decision.
    Add { text: String },
    /// Every decision, oldest first.
    List,
    /// Withdraw a decision (it stays on record, struck through).
    Delete { id: String },
}

#[derive(Args, Debug)]
pub struct ContextArgs {
    #[command(subcommand)]
    pub cmd: ContextCmd,
    #[command(flatten)]
    pub scope: Scope,
}

#[derive(Subcommand, Debug)]
pub enum ContextCmd {
    /// Print the context.
    Show,
    /// Replace the context with a file's text (`-`: standard input).
    Set { file: PathBuf },
}

fn workspace(scope: &Scope) -> Result<String, Failure> {
    let dir = match &scope.workspace {
        Some(d) => d.clone(),
        None => std::env::current_dir().map_err(|e| {
            local(
                ErrorCode::InvalidArgument,
                format!("no current directory: {e}"),
            )
        })?,
    };
    let dir = dir.canonicalize().map_err(|e| {
        local(
            ErrorCode::InvalidArgument,
            format!("{}: {e}", dir.display()),
        )
    })?;
    Ok(dir.display().to_string())
}

fn who(scope: &Scope) -> String {
    if let Some(b) = scope.by.as_ref().filter(|b| !b.trim().is_empty()) {
        return b.trim().to_string();
    }
    // Inside an agent's terminal: that agent.
    for var in ["AGENTOS_AGENT_NAME", "AGENTOS_AGENT_ID"] {
        if let Ok(a) = std::env::var(var)
            && !a.is_empty()
        {
            return format!("agent:{a}");
        }
    }
    std::env::var("USER")
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| "owner".into())
}

fn request(
    ctx: &Ctx,
    scope: &Scope,
    op: Option<MemoryOp>,
) -> Result<(MemoryView, Option<String>), Failure> {
    let mut c = ctx.client()?;
    match c.request(Request::Memory {
        workspace: workspace(scope)?,
        op,
        by: who(scope),
    })? {
        Response::Memory { memory, changed } => Ok((memory, changed)),
        _ => Err(local(
            ErrorCode::Internal,
            "unexpected reply from the daemon",
        )),
    }
}

fn task_line(t: &TaskView) -> String {
    let holder = t
        .holder
        .as_ref()
        .map(|h| format!(" @{h}"))
        .unwrap_or_default();
    let deleted = if t.deleted_at_ms.is_some() {
        " (deleted)"
    } else {
        ""
    };
    format!("{}  {:<11} {}{holder}{deleted}", t.id, t.status, t.title)
}

pub fn task(ctx: &Ctx, a: TaskArgs) -> Res {
    let op = match a.cmd {
        TaskCmd::Add {
            ref title,
            ref notes,
        } => Some(MemoryOp::TaskAdd {
            title: title.clone(),
            notes: notes.clone(),
        }),
        TaskCmd::List { .. } | TaskCmd::Ready => None,
        TaskCmd::Claim { ref id } => Some(MemoryOp::TaskClaim { id: id.clone() }),
        TaskCmd::Release { ref id } => Some(MemoryOp::TaskRelease { id: id.clone() }),
        TaskCmd::Update {
            ref id,
            ref title,
            ref notes,
            ref status,
        } => Some(MemoryOp::TaskUpdate {
            id: id.clone(),
            title: title.clone(),
            notes: notes.clone(),
            status: status.clone(),
        }),
        TaskCmd::Close { ref id, ref reason } => Some(MemoryOp::TaskClose {
            id: id.clone(),
            reason: reason.clone(),
        }),
        TaskCmd::Delete { ref id } => Some(MemoryOp::TaskDelete { id: id.clone() }),
    };
    let listing = op.is_none();
    let (memory, changed) = request(ctx, &a.scope, op)?;
    if !listing {
        // The task the edit made or touched.
        let t = memory
            .tasks
            .iter()
            .find(|t| Some(&t.id) == changed.as_ref())
            .ok_or_else(|| local(ErrorCode::Internal, "the task is missing after the edit"))?;
        if ctx.json {
            ctx.json_out(t);
        } else {
            println!("{}", task_line(t));
        }
        return Ok(0);
    }
    let tasks: Vec<&TaskView> = memory
        .tasks
        .iter()
        .filter(|t| match &a.cmd {
            TaskCmd::Ready => t.status == "open" && t.holder.is_none() && t.deleted_at_ms.is_none(),
            TaskCmd::List { all: true } => true,
            _ => t.status != "closed" && t.deleted_at_ms.is_none(),
        })
        .collect();
    if ctx.json {
        ctx.json_out(&tasks);
    } else if tasks.is_empty() {
        println!("no tasks");
    } else {
        for t in tasks {
            println!("{}", task_line(t));
        }
    }
    Ok(0)
}

pub fn decision(ctx: &Ctx, a: DecisionArgs) -> Res {
    let op = match &a.cmd {
        DecisionCmd::Add { text } => Some(MemoryOp::DecisionAdd { text: text.clone() }),
        DecisionCmd::List => None,
        DecisionCmd::Delete { id } => Some(MemoryOp::DecisionDelete { id: id.clone() }),
    };
    let (memory, changed) = request(ctx, &a.scope, op)?;
    let shown: Vec<_> = match &changed {
        Some(id) => memory.decisions.iter().filter(|d| &d.id == id).collect(),
        None => memory.decisions.iter().collect(),
    };
    if ctx.json {
        match (&a.cmd, shown.first()) {
            (DecisionCmd::List, _) | (_, None) => ctx.json_out(&shown),
            (_, Some(d)) => ctx.json_out(d),
        }
        return Ok(0);
    }
    for d in shown {
        let withdrawn = if d.deleted_at_ms.is_some() {
            " (withdrawn)"
        } else {
            ""
        };
        println!("{}  {}{withdrawn}: {}", d.id, d.by, d.text);
    }
    Ok(0)
}

pub fn context(ctx: &Ctx, a: ContextArgs) -> Res {
    let op = match &a.cmd {
        ContextCmd::Show => None,
        ContextCmd::Set { file } => {
            let text = if file.as_os_str() == "-" {
                let mut s = String::new();
                std::io::stdin().read_to_string(&mut s).map_err(|e| {
                    local(
                        ErrorCode::InvalidArgument,
                        format!("reading standard input: {e}"),
                    )
                })?;
                s
            } else {
                std::fs::read_to_string(file).map_err(|e| {
                    local(
                        ErrorCode::InvalidArgument,
                        format!("{}: {e}", file.display()),
                    )
                })?
            };
            Some(MemoryOp::ContextSet { text })
        }
    };
    let (memory, _) = request(ctx, &a.scope, op)?;
    if ctx.json {
        ctx.json_out(&serde_json::json!({ "context": memory.context }));
    } else if matches!(a.cmd, ContextCmd::Show) {
        print!("{}", memory.context);
    }
    Ok(0)
}

/// `agentos memory`: everything at once.
pub fn memory(ctx: &Ctx, scope: Scope) -> Res {
    let (memory, _) = request(ctx, &scope, None)?;
    if ctx.json {
        ctx.json_out(&memory);
        return Ok(0);
    }
    println!("workspace {}", memory.workspace);
    println!("\ntasks:");
    for t in memory.tasks.iter().filter(|t| t.deleted_at_ms.is_none()) {
        println!("  {}", task_line(t));
    }
    println!("\ndecisions:");
    for d in memory
        .decisions
        .iter()
        .filter(|d| d.deleted_at_ms.is_none())
    {
        println!("  {}  {}: {}", d.id, d.by, d.text);
    }
    println!("\ncontext:\n{}", memory.context);
    Ok(0)
}
