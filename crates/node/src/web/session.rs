//! `SessionActor`: one live shared session (an agent, or a saved session's
//! agents) and everyone connected to it. It owns presence, floor control
//! and the permission checks: every message a web client sends passes
//! [`permissions::allowed`](super::permissions::allowed) here before it
//! touches an agent, a comment or another person.
//!
//! Terminal output does not pass through this actor: a viewer's connection
//! subscribes to the `AgentActor` directly (one encode per chunk, a bounded
//! queue per viewer). Keystrokes do pass through it, because only here is
//! it known whether this person may type right now.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use agentos_actors::agent::{self as agent_msgs, AgentActor, SubscriberId};
use agentos_actors::wire_queue::WireTx;
use agentos_proto::memory::MemoryView;
use agentos_proto::ws::{
    AgentView, Channel, ClientMsg, CloseReason, CommentView, InputSource, Permission, PersonId,
    PersonView, ServerMsg,
};
use agentos_proto::{ErrorCode, ErrorInfo};
use tokio::sync::mpsc;
use tracing::{debug, info_span};

use super::permissions::{Action, Floor, allowed};
use super::{ConnId, Outbound, WebShared, now_ms};
use crate::registry::web_ops::{CommentEdit, CommentOp, NodeStop, ResolveTarget, SessionAgent};

/// Actor mailbox capacity (bounded).
const MAILBOX: usize = 256;
/// `input_by` notices: at most one per person and agent in this interval.
const INPUT_BY_EVERY_MS: u64 = 1000;

struct Person {
    name: String,
    permission: Permission,
    device: String,
    last_seen_ms: u64,
    conns: Vec<ConnId>,
}

struct Conn {
    person: PersonId,
    tx: mpsc::Sender<Outbound>,
    wire: WireTx,
    /// agent name → (channel, subscription)
    subs: BTreeMap<String, (Channel, SubscriberId)>,
}

pub struct SessionActor {
    target: super::auth::Target,
    shared: Arc<WebShared>,
    agents: Vec<SessionAgent>,
    /// Last state sent for each agent (for `agent_state` changes).
    states: HashMap<String, String>,
    people: BTreeMap<PersonId, Person>,
    conns: HashMap<ConnId, Conn>,
    floor: Option<PersonId>,
    requests: Vec<PersonId>,
    last_input_by: HashMap<(String, PersonId), u64>,
    /// Comments as last sent to viewers (to spot changes synced in from
    /// other devices).
    comments: HashMap<String, CommentView>,
    /// A comment read is in flight / another was asked for meanwhile.
    comments_reading: bool,
    comments_stale: bool,
    /// The workspace memory viewers were sent last.
    memory: Option<MemoryView>,
    memory_reading: bool,
    memory_stale: bool,
    /// Bumped when an edit's result is applied (reads started before are stale).
    memory_gen: u64,
    span: tracing::Span,
}

impl std::fmt::Debug for SessionActor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionActor")
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}

impl SessionActor {
    pub fn new(
        target: super::auth::Target,
        shared: Arc<WebShared>,
        agents: Vec<SessionAgent>,
    ) -> Self {
        let span = info_span!("session", target = %target);
        SessionActor {
            target,
            shared,
            agents,
            states: HashMap::new(),
            people: BTreeMap::new(),
            conns: HashMap::new(),
            floor: None,
            requests: Vec::new(),
            last_input_by: HashMap::new(),
            comments: HashMap::new(),
            comments_reading: false,
            comments_stale: false,
            memory: None,
            memory_reading: false,
            memory_stale: false,
            memory_gen: 0,
            span,
        }
    }

    fn person_view(&self, id: &PersonId) -> Option<PersonView> {
        let p = self.people.get(id)?;
        Some(PersonView {
            id: id.clone(),
            name: p.name.clone(),
            permission: p.permission,
            device: p.device.clone(),
            last_seen_ms: p.last_seen_ms,
            connected: !p.conns.is_empty(),
            control: self.floor.as_ref() == Some(id),
        })
    }

    fn people_views(&self) -> Vec<PersonView> {
        self.people
            .keys()
            .filter_map(|id| self.person_view(id))
            .collect()
    }

    fn agent_views(&self) -> Vec<AgentView> {
        self.agents
            .iter()
            .map(|a| AgentView {
                name: a.name.clone(),
                agent_type: a.agent_type.clone(),
                state: self
                    .states
                    .get(&a.name)
                    .cloned()
                    .unwrap_or_else(|| "unknown".into()),
            })
            .collect()
    }

    /// Queue a control message for one connection. A viewer whose control
    /// queue is full is too far behind to follow the session: close it (it
    /// reconnects and gets a fresh state) rather than let it hold memory.
    fn send_to(&self, conn: ConnId, msg: &ServerMsg) {
        if let Some(c) = self.conns.get(&conn)
            && c.tx.try_send(Outbound::Text(msg.to_json())).is_err()
        {
            debug!(conn = conn.0, "control queue full: closing the viewer");
            let _ = c.tx.try_send(Outbound::Close(CloseReason::ShuttingDown));
        }
    }

    fn send_person(&self, person: &PersonId, msg: &ServerMsg) {
        if let Some(p) = self.people.get(person) {
            for c in &p.conns {
                self.send_to(*c, msg);
            }
        }
    }

    fn broadcast(&self, msg: &ServerMsg) {
        let text = msg.to_json();
        for (id, c) in &self.conns {
            if c.tx.try_send(Outbound::Text(text.clone())).is_err() {
                debug!(conn = id.0, "control queue full: closing the viewer");
                let _ = c.tx.try_send(Outbound::Close(CloseReason::ShuttingDown));
            }
        }
    }

    fn broadcast_presence(&self) {
        self.broadcast(&ServerMsg::Presence {
            people: self.people_views(),
        });
    }

    fn refuse(&self, conn: ConnId, e: ErrorInfo, refused: &str) {
        self.shared.metrics.refused(refused);
        self.send_to(conn, &ServerMsg::error(&e, Some(refused)));
    }

    fn floor_for(&self, person: &PersonId) -> Floor {
        match &self.floor {
            None => Floor::Free,
            Some(p) if p == person => Floor::Mine,
            Some(_) => Floor::Other,
        }
    }

    fn check(&self, person: &PersonId, action: Action) -> Result<Permission, ErrorInfo> {
        let level = self
            .people
            .get(person)
            .map(|p| p.permission)
            .unwrap_or(Permission::View);
        if allowed(level, action, self.floor_for(person)) {
            Ok(level)
        } else {
            Err(denied(level, action, self.floor.is_some()))
        }
    }

    fn agent(&self, name: &str) -> Result<&SessionAgent, ErrorInfo> {
        self.agents.iter().find(|a| a.name == name).ok_or_else(|| {
            ErrorInfo::new(
                ErrorCode::AgentNotFound,
                format!("no agent named '{name}' in this session"),
            )
        })
    }

    fn set_floor(&mut self, holder: Option<PersonId>) {
        let old = std::mem::replace(&mut self.floor, holder.clone());
        if let Some(o) = old
            && Some(&o) != holder.as_ref()
        {
            self.broadcast(&ServerMsg::ControlRevoked { person: o });
        }
        if let Some(h) = holder {
            self.requests.retain(|r| *r != h);
            self.broadcast(&ServerMsg::ControlGranted { person: h });
        }
        self.broadcast_presence();
    }

    /// Close every connection of `person` with `reason`.
    fn close_person(&mut self, person: &PersonId, reason: CloseReason) {
        if let Some(p) = self.people.get(person) {
            for c in p.conns.clone() {
                if let Some(conn) = self.conns.get(&c) {
                    let _ = conn.tx.try_send(Outbound::Close(reason));
                }
            }
        }
    }

    fn drop_conn(&mut self, conn: ConnId) {
        let Some(c) = self.conns.remove(&conn) else {
            return;
        };
        for (agent, (_, sub)) in &c.subs {
            if let Some(a) = self.agents.iter().find(|a| &a.name == agent) {
                a.addr.do_send(agent_msgs::Detach { sub: Some(*sub) });
            }
        }
        let gone = match self.people.get_mut(&c.person) {
            Some(p) => {
                p.conns.retain(|x| *x != conn);
                p.last_seen_ms = now_ms();
                p.conns.is_empty()
            }
            None => false,
        };
        if gone {
            // The floor and pending requests go with the person.
            self.requests.retain(|r| *r != c.person);
            if self.floor.as_ref() == Some(&c.person) {
                self.floor = None;
                self.broadcast(&ServerMsg::ControlRevoked {
                    person: c.person.clone(),
                });
            }
            self.people.remove(&c.person);
            self.broadcast(&ServerMsg::PersonLeft {
                person: c.person.clone(),
            });
            self.broadcast_presence();
        }
    }

    fn subscribe(
        &mut self,
        conn: ConnId,
        agent: String,
        since: Option<u64>,
        ctx: &mut Context<Self>,
    ) {
        let a = match self.agent(&agent) {
            Ok(a) => a.clone(),
            Err(e) => return self.refuse(conn, e, "terminal_subscribe"),
        };
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        if let Some((_, old)) = c.subs.remove(&agent) {
            a.addr.do_send(agent_msgs::Detach { sub: Some(old) });
        }
        let used: Vec<u8> = c.subs.values().map(|(ch, _)| ch.0).collect();
        let Some(ch) = (0..=u8::MAX).find(|n| !used.contains(n)) else {
            return self.refuse(
                conn,
                ErrorInfo::new(
                    ErrorCode::InvalidArgument,
                    "too many terminals on one connection",
                ),
                "terminal_subscribe",
            );
        };
        let channel = Channel(ch);
        let wire = c.wire.clone();
        let tx = c.tx.clone();
        let addr = a.addr.clone();
        let target = a.addr.clone();
        async move {
            target
                .send(agent_msgs::WireSubscribe {
                    channel,
                    since,
                    tx: wire,
                })
                .await
        }
        .into_actor(self)
        .map(move |res, act, _| {
            let res = res.unwrap_or_else(|_| {
                Err(ErrorInfo::new(
                    ErrorCode::AgentNotRunning,
                    "the agent is gone",
                ))
            });
            match res {
                Ok(s) => match act.conns.get_mut(&conn) {
                    Some(c) => {
                        c.subs.insert(agent.clone(), (channel, s.sub));
                    }
                    None => addr.do_send(agent_msgs::Detach { sub: Some(s.sub) }),
                },
                Err(e) => {
                    let _ = tx.try_send(Outbound::Text(
                        ServerMsg::error(&e, Some("terminal_subscribe")).to_json(),
                    ));
                }
            }
        })
        .wait(ctx);
        // `terminal_subscribed` goes out before the first frame can: the
        // connection drains its control queue first.
        let size = a.size;
        self.send_to(
            conn,
            &ServerMsg::TerminalSubscribed {
                agent: a.name.clone(),
                channel,
                cols: size.0,
                rows: size.1,
            },
        );
    }

    fn handle_client(&mut self, conn: ConnId, msg: ClientMsg, ctx: &mut Context<Self>) {
        let Some(person) = self.conns.get(&conn).map(|c| c.person.clone()) else {
            return;
        };
        let kind = msg.kind();
        self.shared.metrics.message(kind);
        if let Some(p) = self.people.get_mut(&person) {
            p.last_seen_ms = now_ms();
        }
        let action = match &msg {
            ClientMsg::Auth { .. } => {
                return self.refuse(
                    conn,
                    ErrorInfo::new(ErrorCode::InvalidArgument, "already authenticated"),
                    kind,
                );
            }
            ClientMsg::TerminalSubscribe { .. }
            | ClientMsg::TerminalUnsubscribe { .. }
            | ClientMsg::PresenceUpdate { .. }
            | ClientMsg::SessionLeave {}
            | ClientMsg::Ping {} => Action::Watch,
            ClientMsg::TerminalResize { .. } => Action::Resize,
            ClientMsg::ControlRequest {} => Action::RequestControl,
            ClientMsg::ControlRevoke { person: p } if *p == person => Action::ReleaseControl,
            ClientMsg::ControlGrant { .. }
            | ClientMsg::ControlDeny { .. }
            | ClientMsg::ControlRevoke { .. }
            | ClientMsg::PermissionChange { .. }
            | ClientMsg::Kick { .. }
            | ClientMsg::TransferOwnership { .. }
            | ClientMsg::SessionDelete {} => Action::Moderate,
            ClientMsg::CommentAdd { .. }
            | ClientMsg::CommentResolve { .. }
            | ClientMsg::CommentReact { .. } => Action::Comment,
            ClientMsg::CommentDelete { .. } => Action::DeleteOwnComment,
            ClientMsg::AgentStart { .. } | ClientMsg::AgentStop { .. } => Action::StartStopAgents,
            ClientMsg::MemoryEdit { .. } => Action::EditMemory,
        };
        let level = match self.check(&person, action) {
            Ok(l) => l,
            Err(e) => return self.refuse(conn, e, kind),
        };
        match msg {
            ClientMsg::Auth { .. } => {}
            ClientMsg::Ping {} => self.send_to(conn, &ServerMsg::Pong {}),
            ClientMsg::PresenceUpdate { .. } => self.broadcast_presence(),
            ClientMsg::SessionLeave {} => {
                if let Some(c) = self.conns.get(&conn) {
                    let _ = c.tx.try_send(Outbound::Close(CloseReason::Left));
                }
                self.shared.end_web_session(&person);
            }
            ClientMsg::TerminalSubscribe { agent, since } => {
                self.subscribe(conn, agent, since, ctx)
            }
            ClientMsg::TerminalUnsubscribe { agent } => {
                if let Some(c) = self.conns.get_mut(&conn)
                    && let Some((_, sub)) = c.subs.remove(&agent)
                    && let Some(a) = self.agents.iter().find(|a| a.name == agent)
                {
                    a.addr.do_send(agent_msgs::Detach { sub: Some(sub) });
                }
            }
            ClientMsg::TerminalResize { agent, cols, rows } => match self.agent(&agent) {
                Ok(a) if cols > 0 && rows > 0 && cols <= 1000 && rows <= 500 => {
                    a.addr.do_send(agent_msgs::ResizePty { cols, rows });
                    if let Some(a) = self.agents.iter_mut().find(|a| a.name == agent) {
                        a.size = (cols, rows);
                    }
                }
                Ok(_) => self.refuse(
                    conn,
                    ErrorInfo::new(ErrorCode::InvalidArgument, "size out of range"),
                    kind,
                ),
                Err(e) => self.refuse(conn, e, kind),
            },
            ClientMsg::ControlRequest {} => {
                if !self.requests.contains(&person) {
                    self.requests.push(person.clone());
                }
                let name = self
                    .people
                    .get(&person)
                    .map(|p| p.name.clone())
                    .unwrap_or_default();
                let req = ServerMsg::ControlRequested {
                    person: person.clone(),
                    name,
                };
                // Owners decide; the asker sees its request is pending.
                let owners: Vec<PersonId> = self
                    .people
                    .iter()
                    .filter(|(_, p)| p.permission == Permission::Owner)
                    .map(|(id, _)| id.clone())
                    .collect();
                for o in owners.iter().chain(std::iter::once(&person)) {
                    self.send_person(o, &req);
                }
            }
            ClientMsg::ControlGrant { person: p } => {
                if !self.people.contains_key(&p) {
                    return self.refuse(conn, not_here(&p), kind);
                }
                if self
                    .people
                    .get(&p)
                    .is_some_and(|x| x.permission == Permission::View)
                {
                    return self.refuse(
                        conn,
                        ErrorInfo::new(
                            ErrorCode::PermissionDenied,
                            "a view-only person cannot take control",
                        )
                        .with_hint("raise them to comment or edit first"),
                        kind,
                    );
                }
                self.set_floor(Some(p));
            }
            ClientMsg::ControlDeny { person: p } => {
                self.requests.retain(|r| *r != p);
                self.broadcast(&ServerMsg::ControlDenied { person: p });
            }
            ClientMsg::ControlRevoke { person: p } => {
                if self.floor.as_ref() == Some(&p) {
                    self.set_floor(None);
                } else {
                    self.requests.retain(|r| *r != p);
                    self.broadcast(&ServerMsg::ControlRevoked { person: p });
                }
            }
            ClientMsg::PermissionChange {
                person: p,
                permission,
            } => {
                let Some(x) = self.people.get_mut(&p) else {
                    return self.refuse(conn, not_here(&p), kind);
                };
                x.permission = permission;
                self.shared.set_permission(&p, permission);
                if permission == Permission::View && self.floor.as_ref() == Some(&p) {
                    self.set_floor(None);
                }
                self.broadcast(&ServerMsg::PermissionChanged {
                    person: p,
                    permission,
                });
                self.broadcast_presence();
            }
            ClientMsg::TransferOwnership { person: p } => {
                if !self.people.contains_key(&p) || p == person {
                    return self.refuse(conn, not_here(&p), kind);
                }
                for (who, level) in [(p, Permission::Owner), (person, Permission::Edit)] {
                    if let Some(x) = self.people.get_mut(&who) {
                        x.permission = level;
                    }
                    self.shared.set_permission(&who, level);
                    self.broadcast(&ServerMsg::PermissionChanged {
                        person: who,
                        permission: level,
                    });
                }
                self.broadcast_presence();
            }
            ClientMsg::Kick { person: p } => {
                if !self.people.contains_key(&p) || p == person {
                    return self.refuse(conn, not_here(&p), kind);
                }
                self.close_person(&p, CloseReason::Kicked);
                self.shared.end_web_session(&p);
            }
            ClientMsg::SessionDelete {} => {
                let people: Vec<PersonId> = self.people.keys().cloned().collect();
                self.shared.revoke_target(&self.target);
                for p in people {
                    self.close_person(&p, CloseReason::SessionDeleted);
                }
            }
            ClientMsg::CommentAdd {
                agent,
                line,
                text,
                parent,
            } => self.comment(
                conn,
                &person,
                CommentEdit::Add {
                    agent,
                    line,
                    text,
                    parent,
                },
                ctx,
            ),
            ClientMsg::CommentResolve { id, resolved } => {
                self.comment(conn, &person, CommentEdit::Resolve { id, resolved }, ctx)
            }
            ClientMsg::CommentReact { id, emoji, on } => {
                self.comment(conn, &person, CommentEdit::React { id, emoji, on }, ctx)
            }
            ClientMsg::CommentDelete { id } => {
                let any = level == Permission::Owner;
                self.comment(conn, &person, CommentEdit::Delete { id, any }, ctx)
            }
            ClientMsg::AgentStart { agent } | ClientMsg::AgentStop { agent }
                if self.agent(&agent).is_err() =>
            {
                let e = self
                    .agent(&agent)
                    .err()
                    .unwrap_or_else(|| not_here(&person));
                self.refuse(conn, e, kind)
            }
            ClientMsg::MemoryEdit { op } => {
                // `web:` + the chosen name: a guest cannot pass for an agent
                // (`agent:<name>`) or the owner at the CLI.
                let by = format!(
                    "web:{}",
                    self.people
                        .get(&person)
                        .map(|p| p.name.clone())
                        .unwrap_or_else(|| person.0.clone())
                );
                let msg = crate::registry::memory_ops::SessionMemoryEdit {
                    agents: self.agents.iter().map(|a| a.name.clone()).collect(),
                    op,
                    by,
                };
                let node = self.shared.node.clone();
                async move { node.send(msg).await }
                    .into_actor(self)
                    .map(move |res, act, _| match answered(res) {
                        Ok(memory) => {
                            // Newer than any read still in flight.
                            act.memory_gen += 1;
                            act.set_memory(memory);
                        }
                        Err(e) => act.refuse(conn, e, kind),
                    })
                    .spawn(ctx);
            }
            ClientMsg::AgentStart { agent } => self.node_call(
                conn,
                kind,
                NodeStop {
                    name: agent,
                    start: true,
                },
                ctx,
            ),
            ClientMsg::AgentStop { agent } => self.node_call(
                conn,
                kind,
                NodeStop {
                    name: agent,
                    start: false,
                },
                ctx,
            ),
        }
    }

    fn node_call(
        &mut self,
        conn: ConnId,
        kind: &'static str,
        msg: NodeStop,
        ctx: &mut Context<Self>,
    ) {
        let node = self.shared.node.clone();
        async move { node.send(msg).await }
            .into_actor(self)
            .map(move |res, act, _| {
                if let Err(e) = answered(res) {
                    act.refuse(conn, e, kind);
                }
            })
            .spawn(ctx);
    }

    fn comment(
        &mut self,
        conn: ConnId,
        person: &PersonId,
        edit: CommentEdit,
        ctx: &mut Context<Self>,
    ) {
        if let CommentEdit::Add { agent, .. } = &edit
            && let Err(e) = self.agent(agent)
        {
            return self.refuse(conn, e, "comment_add");
        }
        let name = self
            .people
            .get(person)
            .map(|p| p.name.clone())
            .unwrap_or_default();
        let kind = edit.kind();
        let op = CommentOp {
            edit,
            by: person.clone(),
            by_name: name,
            scope: Some(self.agents.iter().map(|a| a.name.clone()).collect()),
        };
        let node = self.shared.node.clone();
        async move { node.send(op).await }
            .into_actor(self)
            .map(move |res, act, _| {
                // On success the node broadcasts the change to every session
                // showing the agent.
                if let Err(e) = answered(res) {
                    act.refuse(conn, e, kind);
                }
            })
            .spawn(ctx);
    }

    /// Comments can also change on another device and arrive by sync
    /// ([`DocChanged`], and a slow poll as a safety net): compare with
    /// what viewers were sent and send the difference. One read at a time;
    /// a refresh asked for during a read runs right after it.
    fn poll_comments(&mut self, ctx: &mut Context<Self>) {
        if self.comments_reading {
            self.comments_stale = true;
            return;
        }
        self.comments_reading = true;
        let agents = self.agents.iter().map(|a| a.name.clone()).collect();
        let node = self.shared.node.clone();
        async move {
            node.send(crate::registry::web_ops::ListComments { agents })
                .await
                .unwrap_or_default()
        }
        .into_actor(self)
        .map(|list: Vec<CommentView>, act, ctx| {
            act.comments_reading = false;
            if std::mem::take(&mut act.comments_stale) {
                act.poll_comments(ctx);
            }
            for c in list {
                match act.comments.get(&c.id.0) {
                    Some(old) if *old == c => {}
                    seen => {
                        let added = seen.is_none();
                        act.comments.insert(c.id.0.clone(), c.clone());
                        act.broadcast(&if added {
                            ServerMsg::CommentAdded { comment: c }
                        } else {
                            ServerMsg::CommentUpdated { comment: c }
                        });
                    }
                }
            }
        })
        .spawn(ctx);
    }

    /// The workspace memory changed (or was read): viewers get it when it
    /// differs from what they have.
    fn set_memory(&mut self, memory: MemoryView) {
        if self.memory.as_ref() != Some(&memory) {
            self.memory = Some(memory.clone());
            self.broadcast(&ServerMsg::Memory { memory });
        }
    }

    /// Re-read the workspace memory (one read at a time, like comments).
    fn poll_memory(&mut self, ctx: &mut Context<Self>) {
        if self.memory_reading {
            self.memory_stale = true;
            return;
        }
        self.memory_reading = true;
        let gen_at_start = self.memory_gen;
        let agents = self.agents.iter().map(|a| a.name.clone()).collect();
        let node = self.shared.node.clone();
        async move {
            node.send(crate::registry::memory_ops::SessionMemory { agents })
                .await
                .ok()
                .flatten()
        }
        .into_actor(self)
        .map(move |m: Option<MemoryView>, act, ctx| {
            act.memory_reading = false;
            if std::mem::take(&mut act.memory_stale) {
                act.poll_memory(ctx);
            }
            // A read that started before an edit's own result was applied
            // is older than it: drop it (the edit's DocChanged reads again).
            if let Some(m) = m.filter(|_| act.memory_gen == gen_at_start) {
                act.set_memory(m);
            }
        })
        .spawn(ctx);
    }

    fn poll_states(&mut self, ctx: &mut Context<Self>) {
        let agents: Vec<(String, Addr<AgentActor>)> = self
            .agents
            .iter()
            .map(|a| (a.name.clone(), a.addr.clone()))
            .collect();
        async move {
            let mut out = Vec::new();
            for (name, addr) in agents {
                if let Ok(info) = addr.send(agent_msgs::GetInfo).await {
                    out.push((name, info.state.label().to_string()));
                }
            }
            out
        }
        .into_actor(self)
        .map(|states, act, _| {
            for (name, state) in states {
                if act.states.get(&name) != Some(&state) {
                    let exited = state == "exited" || state == "error";
                    act.states.insert(name.clone(), state.clone());
                    if let Some(view) = act.agent_views().into_iter().find(|v| v.name == name) {
                        act.broadcast(&ServerMsg::AgentState { agent: view });
                    }
                    if exited {
                        act.broadcast(&ServerMsg::TerminalExited { agent: name, state });
                    }
                }
            }
        })
        .wait(ctx);
    }
}

fn not_here(p: &PersonId) -> ErrorInfo {
    ErrorInfo::new(
        ErrorCode::InvalidArgument,
        format!("'{}' is not in this session", p.0),
    )
}

/// The node's answer to a request, or why there is none.
fn answered<T>(r: Result<Result<T, ErrorInfo>, MailboxError>) -> Result<T, ErrorInfo> {
    r.unwrap_or_else(|_| Err(ErrorInfo::new(ErrorCode::Internal, "the node is busy")))
}

fn denied(level: Permission, action: Action, floor_taken: bool) -> ErrorInfo {
    let (msg, hint) = match action {
        Action::Input if level == Permission::View => (
            "view-only: your keystrokes are not sent",
            "ask the owner for comment or edit access",
        ),
        Action::Input if floor_taken => (
            "someone else has control of this terminal",
            "ask for control; the owner grants it",
        ),
        Action::Input => (
            "you may not type in this session",
            "ask for control; the owner grants it",
        ),
        Action::Resize => (
            "only the driver resizes the terminal",
            "your view scales locally; the owner or whoever holds control sets the size",
        ),
        Action::Comment | Action::DeleteOwnComment => (
            "view-only: comments need comment access",
            "ask the owner for comment access",
        ),
        Action::RequestControl if level == Permission::Owner => {
            ("the owner always has control", "nothing to ask for")
        }
        Action::RequestControl => (
            "view-only people cannot ask for control",
            "ask the owner for comment access first",
        ),
        Action::ReleaseControl => ("you do not hold control", "nothing to release"),
        Action::StartStopAgents => (
            "starting and stopping agents needs edit access",
            "ask the owner for edit access",
        ),
        Action::EditMemory => (
            "editing the shared memory (tasks, decisions, context) needs edit access",
            "ask the owner for edit access",
        ),
        Action::DeleteAnyComment | Action::Moderate => {
            ("only the owner may do this", "ask the owner")
        }
        Action::Watch => ("not allowed", "ask the owner"),
    };
    ErrorInfo::new(
        ErrorCode::PermissionDenied,
        format!("{msg} (your permission: {level})"),
    )
    .with_hint(hint)
}

impl Actor for SessionActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(MAILBOX);
        self.span.in_scope(|| tracing::info!("session opened"));
        self.poll_states(ctx);
        ctx.run_interval(Duration::from_millis(500), |act, ctx| act.poll_states(ctx));
        self.poll_memory(ctx);
        ctx.run_interval(Duration::from_secs(30), |act, ctx| {
            act.poll_comments(ctx);
            act.poll_memory(ctx);
        });
    }

    fn stopped(&mut self, _: &mut Context<Self>) {
        let _g = self.span.enter();
        tracing::info!("session closed");
    }
}

/// A connection joins (after `auth`).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Join {
    pub conn: ConnId,
    pub session: super::auth::WebSession,
    pub tx: mpsc::Sender<Outbound>,
    pub wire: WireTx,
    pub auth_ok: ServerMsg,
}

impl Handler<Join> for SessionActor {
    type Result = ();
    fn handle(&mut self, msg: Join, ctx: &mut Context<Self>) {
        let _g = self.span.clone().entered();
        let id = msg.session.person.clone();
        let fresh = !self.people.contains_key(&id);
        let p = self.people.entry(id.clone()).or_insert_with(|| Person {
            name: msg.session.name.clone(),
            permission: msg.session.permission,
            device: msg.session.device.clone(),
            last_seen_ms: now_ms(),
            conns: Vec::new(),
        });
        p.conns.push(msg.conn);
        p.last_seen_ms = now_ms();
        // A reconnect keeps the permission the owner set last.
        p.permission = self.shared.session_permission(&id).unwrap_or(p.permission);
        self.conns.insert(
            msg.conn,
            Conn {
                person: id.clone(),
                tx: msg.tx,
                wire: msg.wire,
                subs: BTreeMap::new(),
            },
        );
        self.send_to(msg.conn, &msg.auth_ok);
        let agents = self.agents.iter().map(|a| a.name.clone()).collect();
        let node = self.shared.node.clone();
        let conn = msg.conn;
        async move {
            node.send(crate::registry::web_ops::ListComments { agents })
                .await
                .unwrap_or_default()
        }
        .into_actor(self)
        .map(move |comments: Vec<CommentView>, act, _| {
            for c in &comments {
                act.comments.insert(c.id.0.clone(), c.clone());
            }
            let state = ServerMsg::SessionState {
                target: act.target.to_string(),
                agents: act.agent_views(),
                people: act.people_views(),
                control_requests: act.requests.clone(),
                comments,
            };
            act.send_to(conn, &state);
            if let Some(memory) = act.memory.clone() {
                act.send_to(conn, &ServerMsg::Memory { memory });
            }
        })
        .wait(ctx);
        if fresh && let Some(v) = self.person_view(&id) {
            self.broadcast(&ServerMsg::PersonJoined { person: v });
        }
        self.broadcast_presence();
    }
}

/// A connection ended.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Leave {
    pub conn: ConnId,
}

impl Handler<Leave> for SessionActor {
    type Result = ();
    fn handle(&mut self, msg: Leave, ctx: &mut Context<Self>) {
        let _g = self.span.clone().entered();
        self.drop_conn(msg.conn);
        if self.conns.is_empty() {
            self.shared.forget_session(&self.target, ctx.address());
            ctx.stop();
        }
    }
}

/// A control message from a connection.
#[derive(Message)]
#[rtype(result = "()")]
pub struct FromClient {
    pub conn: ConnId,
    pub msg: ClientMsg,
}

impl Handler<FromClient> for SessionActor {
    type Result = ();
    fn handle(&mut self, msg: FromClient, ctx: &mut Context<Self>) {
        let _g = self.span.clone().entered();
        self.handle_client(msg.conn, msg.msg, ctx);
    }
}

/// Keystrokes from a connection, for the agent on `channel`.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Input {
    pub conn: ConnId,
    pub channel: Channel,
    pub data: Vec<u8>,
}

impl Handler<Input> for SessionActor {
    type Result = ();
    fn handle(&mut self, msg: Input, _: &mut Context<Self>) {
        let Some(c) = self.conns.get(&msg.conn) else {
            return;
        };
        let person = c.person.clone();
        let agent = c
            .subs
            .iter()
            .find(|(_, (ch, _))| *ch == msg.channel)
            .map(|(a, _)| a.clone());
        self.shared.metrics.message("input");
        if let Err(e) = self.check(&person, Action::Input) {
            return self.refuse(msg.conn, e, "input");
        }
        let Some(agent) = agent else {
            return self.refuse(
                msg.conn,
                ErrorInfo::new(ErrorCode::InvalidArgument, "no terminal on that channel")
                    .with_hint("send terminal_subscribe first"),
                "input",
            );
        };
        let Some(a) = self.agents.iter().find(|a| a.name == agent) else {
            return;
        };
        let addr = a.addr.clone();
        actix::spawn(async move {
            let _ = addr.send(agent_msgs::Input { data: msg.data }).await;
        });
        // Tag who typed (rate-limited per person and agent).
        let now = now_ms();
        let key = (agent.clone(), person.clone());
        if self
            .last_input_by
            .get(&key)
            .is_none_or(|t| now >= t + INPUT_BY_EVERY_MS)
        {
            self.last_input_by.insert(key, now);
            let name = self
                .people
                .get(&person)
                .map(|p| p.name.clone())
                .unwrap_or_default();
            self.broadcast(&ServerMsg::InputBy {
                agent,
                by: InputSource::Person { id: person, name },
            });
        }
    }
}

/// Input that did not come from a person in this session (`agentos send`,
/// another agent): tell the viewers who typed.
#[derive(Message)]
#[rtype(result = "()")]
pub struct ForeignInput {
    pub agent: String,
    pub by: InputSource,
}

impl Handler<ForeignInput> for SessionActor {
    type Result = ();
    fn handle(&mut self, msg: ForeignInput, _: &mut Context<Self>) {
        if self.agents.iter().any(|a| a.name == msg.agent) {
            self.broadcast(&ServerMsg::InputBy {
                agent: msg.agent,
                by: msg.by,
            });
        }
    }
}

/// The workspace document changed (by sync, or a memory edit from the CLI
/// or another session): re-read the comments and the memory.
#[derive(Message)]
#[rtype(result = "()")]
pub struct DocChanged;

impl Handler<DocChanged> for SessionActor {
    type Result = ();
    fn handle(&mut self, _: DocChanged, ctx: &mut Context<Self>) {
        self.poll_comments(ctx);
        self.poll_memory(ctx);
    }
}

/// A comment changed (from any session, the CLI, or this device).
#[derive(Message)]
#[rtype(result = "()")]
pub struct CommentChanged {
    pub comment: CommentView,
    pub added: bool,
}

impl Handler<CommentChanged> for SessionActor {
    type Result = ();
    fn handle(&mut self, msg: CommentChanged, _: &mut Context<Self>) {
        if !self.agents.iter().any(|a| a.name == msg.comment.agent)
            || self.comments.get(&msg.comment.id.0) == Some(&msg.comment)
        {
            return;
        }
        self.comments
            .insert(msg.comment.id.0.clone(), msg.comment.clone());
        self.broadcast(&if msg.added {
            ServerMsg::CommentAdded {
                comment: msg.comment,
            }
        } else {
            ServerMsg::CommentUpdated {
                comment: msg.comment,
            }
        });
    }
}

/// Close a person's sockets (revoked link, expired link).
#[derive(Message)]
#[rtype(result = "()")]
pub struct ClosePerson {
    pub person: PersonId,
    pub reason: CloseReason,
}

impl Handler<ClosePerson> for SessionActor {
    type Result = ();
    fn handle(&mut self, msg: ClosePerson, _: &mut Context<Self>) {
        self.close_person(&msg.person, msg.reason);
    }
}

/// Resolve a target's agents and start its session actor.
pub async fn open(
    shared: Arc<WebShared>,
    target: super::auth::Target,
) -> Result<Addr<SessionActor>, ErrorInfo> {
    let agents = shared
        .node
        .send(ResolveTarget {
            target: target.clone(),
        })
        .await
        .map_err(|_| ErrorInfo::new(ErrorCode::Internal, "the node is busy"))??;
    Ok(SessionActor::new(target, shared, agents).start())
}

/// Stop a session actor that lost the race to be a target's session.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Stop;

impl Handler<Stop> for SessionActor {
    type Result = ();
    fn handle(&mut self, _: Stop, ctx: &mut Context<Self>) {
        if self.conns.is_empty() {
            ctx.stop();
        }
    }
}
