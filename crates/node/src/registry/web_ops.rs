//! The node's side of collaboration: resolving what a share link opens,
//! share links for the CLI (`share`, `share list`, `share revoke`, `web`),
//! and comments (stored in the workspace document, broadcast to every
//! session that shows the agent).

use std::collections::BTreeSet;

use actix::prelude::*;
use agentos_actors::agent::{self as agent_msgs, AgentActor};
use agentos_crdt::Comment;
use agentos_proto::ws::{CommentId, CommentView, Permission, PersonId};
use agentos_proto::{ErrorCode, ErrorInfo, Request, Response, ShareView};
use sha2::{Digest, Sha256};

use super::{NodeActor, err, error_response, now_ms, random_id};
use crate::doc_actor::{Apply, DocOp, ListComments as DocComments, ListSessions};
use crate::web::auth::Target;

/// An agent as a shared session sees it.
#[derive(Debug, Clone)]
pub struct SessionAgent {
    pub name: String,
    pub agent_type: String,
    pub addr: Addr<AgentActor>,
    /// The PTY's size as last set by the driver (viewers scale locally).
    pub size: (u16, u16),
}

/// Which agents does a target open?
#[derive(Message)]
#[rtype(result = "Result<Vec<SessionAgent>, ErrorInfo>")]
pub struct ResolveTarget {
    pub target: Target,
}

/// Comments on these agents (by name), tombstones included.
#[derive(Message)]
#[rtype(result = "Vec<CommentView>")]
pub struct ListComments {
    pub agents: Vec<String>,
}

/// A change to a comment.
#[derive(Debug, Clone)]
pub enum CommentEdit {
    Add {
        agent: String,
        line: u64,
        text: String,
        parent: Option<CommentId>,
    },
    Resolve {
        id: CommentId,
        resolved: bool,
    },
    React {
        id: CommentId,
        emoji: String,
        on: bool,
    },
    Delete {
        id: CommentId,
        /// The owner may delete anyone's comment; others only their own.
        any: bool,
    },
}

impl CommentEdit {
    pub fn kind(&self) -> &'static str {
        match self {
            CommentEdit::Add { .. } => "comment_add",
            CommentEdit::Resolve { .. } => "comment_resolve",
            CommentEdit::React { .. } => "comment_react",
            CommentEdit::Delete { .. } => "comment_delete",
        }
    }
}

/// Apply a comment change on behalf of `by`, limited to the agents in
/// `scope`: a session's agents, or `None` for the local owner (every agent
/// of this node's workspaces, also those on the owner's other devices).
#[derive(Message)]
#[rtype(result = "Result<CommentView, ErrorInfo>")]
pub struct CommentOp {
    pub edit: CommentEdit,
    pub by: PersonId,
    pub by_name: String,
    pub scope: Option<Vec<String>>,
}

/// Start (restart) or stop an agent for a web session.
#[derive(Message)]
#[rtype(result = "Result<(), ErrorInfo>")]
pub struct NodeStop {
    pub name: String,
    pub start: bool,
}

/// The person id comments from the local CLI carry.
pub const LOCAL_OWNER: &str = "owner";

pub(crate) fn local_owner_name() -> String {
    std::env::var("USER")
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| "owner".into())
}

/// Hex of the first 16 bytes of SHA-256 over a line's plain text.
pub fn line_hash(text: &str) -> String {
    data_encoding::HEXLOWER.encode(&Sha256::digest(text.as_bytes())[..16])
}

pub fn view(c: &Comment) -> CommentView {
    let mut reactions: Vec<(String, Vec<String>)> = c
        .reactions
        .iter()
        .filter(|(_, who)| !who.is_empty())
        .map(|(emoji, who)| {
            let mut names: Vec<String> = who.values().cloned().collect();
            names.sort();
            (emoji.clone(), names)
        })
        .collect();
    reactions.sort();
    CommentView {
        id: CommentId(c.id.clone()),
        agent: c.agent.clone(),
        line: c.line,
        line_hash: c.line_hash.clone(),
        line_text: c.line_text.clone(),
        text: c.text.clone(),
        author: c.author.clone(),
        author_id: c.author_id.clone(),
        created_at_ms: c.created_at_ms,
        parent: c.parent.clone().map(CommentId),
        resolved: c.resolved,
        deleted: c.deleted_at_ms.is_some(),
        reactions,
    }
}

impl NodeActor {
    /// Workspaces holding these agents (all workspaces for `None`).
    fn docs_for(&self, agents: Option<&[String]>) -> Vec<Addr<crate::doc_actor::DocActor>> {
        let ws: BTreeSet<String> = match agents {
            None => self.docs.keys().cloned().collect(),
            Some(names) => self
                .agents
                .values()
                .filter(|e| names.contains(&e.record.name))
                .map(|e| e.ws_id.clone())
                .collect(),
        };
        ws.iter()
            .filter_map(|w| self.docs.get(w).cloned())
            .collect()
    }

    fn session_agent(&self, name: &str) -> Result<SessionAgent, ErrorInfo> {
        let e = self.find(name)?;
        Ok(SessionAgent {
            name: e.record.name.clone(),
            agent_type: e.record.agent_type.clone(),
            addr: e.addr.clone(),
            size: (
                self.config.terminal.default_cols,
                self.config.terminal.default_rows,
            ),
        })
    }

    fn broadcast_comment(&self, comment: CommentView, added: bool) {
        if let Some(w) = &self.web {
            w.comment_changed(comment, added);
        }
    }

    pub(super) fn web_request(&mut self, req: Request) -> ResponseActFuture<Self, Response> {
        let ready =
            |r: Response| -> ResponseActFuture<Self, Response> { Box::pin(actix::fut::ready(r)) };
        let Some(web) = self.web.clone() else {
            return ready(error_response(
                err(
                    ErrorCode::WebUnavailable,
                    "the web server is not running on this node",
                )
                .with_hint(
                    "see `agentos daemon status`; set `[web] listen` and restart the daemon",
                ),
            ));
        };
        match req {
            Request::ShareCreate {
                target,
                permission,
                expires_in_secs,
                max_uses,
            } => {
                let Some(t) = Target::parse(&target) else {
                    return ready(error_response(err(
                        ErrorCode::InvalidArgument,
                        format!("cannot share '{target}': name an agent, or session:<name>"),
                    )));
                };
                let check = match &t {
                    Target::Agent(n) => self.find(n).map(|_| ()),
                    Target::All if permission != Permission::Owner => Err(err(
                        ErrorCode::InvalidArgument,
                        "a link to everything must be an owner link (`agentos web`)",
                    )),
                    _ => Ok(()),
                };
                if let Err(e) = check {
                    return ready(error_response(e));
                }
                if permission == Permission::Owner && t != Target::All {
                    return ready(error_response(err(
                        ErrorCode::InvalidArgument,
                        "share links are view, comment or edit; ownership is transferred in the session",
                    )));
                }
                let docs = self.docs_for(None);
                let session_name = match &t {
                    Target::Session(n) => Some(n.clone()),
                    _ => None,
                };
                Box::pin(
                    async move {
                        if let Some(n) = session_name {
                            let mut found = false;
                            for d in docs {
                                if let Ok(s) = d.send(ListSessions).await {
                                    found |= s.iter().any(|s| s.name == n);
                                }
                            }
                            if !found {
                                return Err(err(
                                    ErrorCode::SessionNotFound,
                                    format!("no saved session named '{n}'"),
                                ));
                            }
                        }
                        Ok(())
                    }
                    .into_actor(self)
                    .map(move |r, _, _| {
                        match r.and_then(|()| {
                            web.create_share(&t, permission, expires_in_secs, max_uses)
                        }) {
                            Ok(share) => Response::Share { share },
                            Err(e) => error_response(e),
                        }
                    }),
                )
            }
            Request::ShareList => ready(Response::Shares {
                shares: web.share_views(),
            }),
            Request::ShareRevoke { id } => ready(match web.revoke(&id) {
                Ok(()) => Response::Ok,
                Err(e) => error_response(e),
            }),
            Request::CommentAdd {
                agent,
                line,
                text,
                parent,
            } => self.comment_request(CommentEdit::Add {
                agent,
                line,
                text,
                parent: parent.map(CommentId),
            }),
            Request::CommentResolve { id, resolved } => {
                self.comment_request(CommentEdit::Resolve {
                    id: CommentId(id),
                    resolved,
                })
            }
            Request::CommentList { agent } => {
                if let Some(a) = &agent
                    && let Err(e) = self.find(a)
                {
                    return ready(error_response(e));
                }
                let docs = self.docs_for(agent.as_ref().map(std::slice::from_ref));
                Box::pin(
                    async move {
                        let mut out = Vec::new();
                        for d in docs {
                            if let Ok(cs) = d.send(DocComments).await {
                                out.extend(
                                    cs.iter()
                                        .filter(|c| agent.as_ref().is_none_or(|a| &c.agent == a))
                                        .map(view),
                                );
                            }
                        }
                        out.sort_by(|a, b| (a.created_at_ms, &a.id).cmp(&(b.created_at_ms, &b.id)));
                        Response::Comments { comments: out }
                    }
                    .into_actor(self),
                )
            }
            _ => ready(error_response(err(
                ErrorCode::Internal,
                "not a web request",
            ))),
        }
    }

    fn comment_request(&mut self, edit: CommentEdit) -> ResponseActFuture<Self, Response> {
        let fut = self.comment_op(CommentOp {
            edit,
            by: PersonId(LOCAL_OWNER.into()),
            by_name: local_owner_name(),
            scope: None,
        });
        Box::pin(fut.map(|r, _, _| match r {
            Ok(c) => Response::Comments { comments: vec![c] },
            Err(e) => error_response(e),
        }))
    }

    fn comment_op(
        &mut self,
        op: CommentOp,
    ) -> ResponseActFuture<Self, Result<CommentView, ErrorInfo>> {
        let ready = |r: Result<CommentView, ErrorInfo>| -> ResponseActFuture<Self, _> {
            Box::pin(actix::fut::ready(r))
        };
        let CommentOp {
            edit,
            by,
            by_name,
            scope,
        } = op;
        if let CommentEdit::Add {
            agent,
            line,
            text,
            parent,
        } = edit
        {
            let text = text.trim().to_string();
            if text.is_empty() || text.len() > 10_000 {
                return ready(Err(err(
                    ErrorCode::InvalidArgument,
                    "a comment needs 1 to 10,000 bytes of text",
                )));
            }
            if scope.as_ref().is_some_and(|s| !s.contains(&agent)) {
                return ready(Err(err(
                    ErrorCode::PermissionDenied,
                    format!("'{agent}' is not in this session"),
                )));
            }
            let entry = match self.find(&agent) {
                Ok(e) => e,
                Err(e) => {
                    return ready(Err(e.with_hint(
                        "a comment is added on the device the agent runs on (its output lines are there); resolve works from any of your devices",
                    )));
                }
            };
            let addr = entry.addr.clone();
            let doc = self.doc(&entry.ws_id.clone());
            return Box::pin(
                async move {
                    if line == 0 {
                        return Err(err(ErrorCode::InvalidArgument, "lines count from 1"));
                    }
                    let line_text = addr
                        .send(agent_msgs::LineText { line })
                        .await
                        .map_err(|_| err(ErrorCode::AgentNotFound, "the agent is gone"))?
                        .ok_or_else(|| {
                            err(
                                ErrorCode::InvalidArgument,
                                format!("'{agent}' has no output line {line}"),
                            )
                            .with_hint("`agentos logs <agent>` shows the lines with their numbers")
                        })?;
                    if let Some(p) = &parent {
                        let all = doc.send(DocComments).await.unwrap_or_default();
                        if !all.iter().any(|c| c.id == p.0 && c.agent == agent) {
                            return Err(err(
                                ErrorCode::InvalidArgument,
                                format!("no comment '{}' on '{agent}' to reply to", p.0),
                            ));
                        }
                    }
                    let comment = Comment {
                        id: format!("c-{}", random_id()),
                        agent: agent.clone(),
                        line,
                        line_hash: line_hash(&line_text),
                        line_text: line_text.chars().take(200).collect(),
                        text,
                        author_id: by.0.clone(),
                        author: by_name,
                        created_at_ms: now_ms(),
                        parent: parent.map(|p| p.0),
                        resolved: false,
                        resolved_by: None,
                        resolved_at_ms: None,
                        deleted_at_ms: None,
                        reactions: Default::default(),
                    };
                    let v = view(&comment);
                    doc.send(Apply {
                        op: DocOp::AddComment {
                            comment: Box::new(comment),
                        },
                        durable: true,
                    })
                    .await
                    .map_err(|_| err(ErrorCode::Internal, "the document is busy"))?
                    .map_err(|e| err(ErrorCode::InvalidArgument, e))?;
                    Ok(v)
                }
                .into_actor(self)
                .map(|r: Result<CommentView, ErrorInfo>, act, _| {
                    if let Ok(v) = &r {
                        act.broadcast_comment(v.clone(), true);
                    }
                    r
                }),
            );
        }
        let docs = self.docs_for(scope.as_deref());
        Box::pin(
            async move {
                let id = match &edit {
                    CommentEdit::Resolve { id, .. }
                    | CommentEdit::React { id, .. }
                    | CommentEdit::Delete { id, .. } => id.0.clone(),
                    CommentEdit::Add { .. } => String::new(),
                };
                let mut found = None;
                for d in docs {
                    if let Ok(cs) = d.send(DocComments).await
                        && let Some(c) = cs.into_iter().find(|c| c.id == id)
                    {
                        found = Some((d, c));
                        break;
                    }
                }
                let (doc, c) = found
                    .filter(|(_, c)| scope.as_ref().is_none_or(|s| s.contains(&c.agent)))
                    .ok_or_else(|| {
                        err(
                            ErrorCode::InvalidArgument,
                            format!("no comment '{id}' here"),
                        )
                    })?;
                if c.deleted_at_ms.is_some() {
                    return Err(err(
                        ErrorCode::InvalidArgument,
                        format!("comment '{id}' was deleted"),
                    ));
                }
                let now = now_ms();
                let op = match edit {
                    CommentEdit::Resolve { resolved, .. } => DocOp::ResolveComment {
                        id: id.clone(),
                        resolved,
                        by: by.0.clone(),
                        at_ms: now,
                    },
                    CommentEdit::React { emoji, on, .. } => {
                        if emoji.is_empty()
                            || emoji.len() > 32
                            || emoji.chars().any(char::is_control)
                        {
                            return Err(err(ErrorCode::InvalidArgument, "a reaction is one emoji"));
                        }
                        DocOp::React {
                            id: id.clone(),
                            emoji,
                            person: by.0.clone(),
                            name: by_name,
                            on,
                        }
                    }
                    CommentEdit::Delete { any, .. } => {
                        if !any && c.author_id != by.0 {
                            return Err(err(
                                ErrorCode::PermissionDenied,
                                "only its author or the owner may delete a comment",
                            ));
                        }
                        DocOp::DeleteComment {
                            id: id.clone(),
                            at_ms: now,
                        }
                    }
                    CommentEdit::Add { .. } => unreachable_add(),
                };
                doc.send(Apply { op, durable: true })
                    .await
                    .map_err(|_| err(ErrorCode::Internal, "the document is busy"))?
                    .map_err(|e| err(ErrorCode::InvalidArgument, e))?;
                let cs = doc.send(DocComments).await.unwrap_or_default();
                cs.iter()
                    .find(|c| c.id == id)
                    .map(view)
                    .ok_or_else(|| err(ErrorCode::Internal, "the comment vanished"))
            }
            .into_actor(self)
            .map(|r: Result<CommentView, ErrorInfo>, act, _| {
                if let Ok(v) = &r {
                    act.broadcast_comment(v.clone(), false);
                }
                r
            }),
        )
    }
}

/// `Add` is handled before the generic path; this keeps the match total
/// without a panic.
fn unreachable_add() -> DocOp {
    DocOp::DeleteComment {
        id: String::new(),
        at_ms: 0,
    }
}

impl Handler<ResolveTarget> for NodeActor {
    type Result = ResponseActFuture<Self, Result<Vec<SessionAgent>, ErrorInfo>>;
    fn handle(&mut self, msg: ResolveTarget, _: &mut Context<Self>) -> Self::Result {
        match msg.target {
            Target::All => Box::pin(actix::fut::ready(Ok(Vec::new()))),
            Target::Agent(name) => Box::pin(actix::fut::ready(
                self.session_agent(&name).map(|a| vec![a]),
            )),
            Target::Session(name) => {
                let docs = self.docs_for(None);
                Box::pin(
                    async move {
                        for d in docs {
                            if let Ok(ss) = d.send(ListSessions).await
                                && let Some(s) = ss.into_iter().find(|s| s.name == name)
                            {
                                return Ok(s
                                    .agents
                                    .into_iter()
                                    .map(|a| a.name)
                                    .collect::<Vec<_>>());
                            }
                        }
                        Err(err(
                            ErrorCode::SessionNotFound,
                            format!("no saved session named '{name}'"),
                        ))
                    }
                    .into_actor(self)
                    .map(|r, act, _| {
                        let names = r?;
                        Ok(names
                            .iter()
                            .filter_map(|n| act.session_agent(n).ok())
                            .collect())
                    }),
                )
            }
        }
    }
}

impl Handler<ListComments> for NodeActor {
    type Result = ResponseActFuture<Self, Vec<CommentView>>;
    fn handle(&mut self, msg: ListComments, _: &mut Context<Self>) -> Self::Result {
        let docs = self.docs_for(Some(&msg.agents));
        let agents = msg.agents;
        Box::pin(
            async move {
                let mut out = Vec::new();
                for d in docs {
                    if let Ok(cs) = d.send(DocComments).await {
                        out.extend(cs.iter().filter(|c| agents.contains(&c.agent)).map(view));
                    }
                }
                out.sort_by(|a, b| (a.created_at_ms, &a.id).cmp(&(b.created_at_ms, &b.id)));
                out
            }
            .into_actor(self),
        )
    }
}

impl Handler<CommentOp> for NodeActor {
    type Result = ResponseActFuture<Self, Result<CommentView, ErrorInfo>>;
    fn handle(&mut self, msg: CommentOp, _: &mut Context<Self>) -> Self::Result {
        self.comment_op(msg)
    }
}

impl Handler<NodeStop> for NodeActor {
    type Result = ResponseActFuture<Self, Result<(), ErrorInfo>>;
    fn handle(&mut self, msg: NodeStop, ctx: &mut Context<Self>) -> Self::Result {
        let me = ctx.address();
        let req = if msg.start {
            Request::Restart { name: msg.name }
        } else {
            Request::Stop { name: msg.name }
        };
        Box::pin(
            async move {
                match me.send(super::ClientRequest { req }).await {
                    Ok(Response::Error { error }) => Err(error),
                    Ok(_) => Ok(()),
                    Err(_) => Err(err(ErrorCode::Internal, "the node is busy")),
                }
            }
            .into_actor(self),
        )
    }
}

/// The grants as `share list` shows them, with live socket counts.
pub fn share_view(g: &crate::web::auth::Grant, active: u32) -> ShareView {
    ShareView {
        id: g.id.clone(),
        target: g.target.clone(),
        permission: g.permission,
        created_at_ms: g.created_at_ms,
        expires_at_ms: g.expires_at_ms,
        max_uses: g.max_uses,
        uses: g.uses,
        revoked: g.revoked_at_ms.is_some(),
        active,
    }
}
