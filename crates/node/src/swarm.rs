//! `SwarmActor`: this device on the network. It owns the device group's
//! roster (who may sync, which epoch key seals what), runs pairing, keeps
//! the list of connected peers, routes gossip and point-to-point sync
//! messages to each workspace's `DocActor` (which hosts that workspace's
//! sync engine), and keeps the relay's store-and-forward logs in step.
//! The libp2p swarm itself runs in `agentos_p2p::transport::drive`; this
//! actor talks to it through two bounded channels.
//!
//! Trust: discovery (mDNS, the relay, an incoming connection) never grants
//! anything. Only roster members are synced with; a pairing request is only
//! heard while an invite is open, and it must prove the invite's secret.

use crate::doc_actor::{
    AttachSwarm, DocActor, PeerDown, PeerUp, RemoteEnvelope, RemoteSnapshot, RemoteSync, SetRoster,
    TakeSnapshot,
};
use crate::store::Store;
use actix::prelude::*;
use agentos_actors::holder::now_ms;
use agentos_p2p::engine::{Out, PeerKey};
use agentos_p2p::net::peer_id;
use agentos_p2p::pairing::{Accept, Invite, Inviter, Joiner, PairError, Request as PairRequest};
use agentos_p2p::roster::{Roster, decode_log, encode_log};
use agentos_p2p::transport::{NetCmd, NetEvent, Path};
use agentos_p2p::{DeviceId, DeviceIdentity};
use agentos_proto::peer::{Cursor, PeerRequest, PeerResponse};
use agentos_proto::{
    DeviceView, ErrorCode, ErrorInfo, Response, SyncStatusView, WorkspaceSyncView,
};
use libp2p::Multiaddr;
use libp2p::multiaddr::Protocol;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info, warn};

/// How often the actor redials members and runs a relay round.
const TICK: Duration = Duration::from_millis(1000);
/// Envelopes per relay `Put`.
const PUT_BATCH: usize = 256;
/// Envelopes per relay `Fetch`.
const FETCH_LIMIT: u32 = 1000;
/// Local changes kept for the relay while it is unreachable.
const MAX_QUEUE: usize = 10_000;
/// The relay v2 hop protocol (how identify tells us a peer is a relay).
const HOP: &str = "/libp2p/circuit/relay/0.2.0/hop";

fn err(code: ErrorCode, msg: impl Into<String>) -> ErrorInfo {
    ErrorInfo::new(code, msg)
}

fn error_response(e: ErrorInfo) -> Response {
    Response::Error { error: e }
}

fn hex(k: &PeerKey) -> String {
    k.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(h: &str) -> Option<PeerKey> {
    let b = (0..32)
        .map(|i| u8::from_str_radix(h.get(i * 2..i * 2 + 2)?, 16).ok())
        .collect::<Option<Vec<u8>>>()?;
    b.try_into().ok()
}

fn device_id(k: &PeerKey) -> String {
    DeviceId::from_public_key(k).to_string()
}

/// `host:port`, `/ip4/…` or `/dns4/…`: a multiaddr to dial.
pub fn parse_addr(s: &str) -> Result<Multiaddr, String> {
    let s = s.trim();
    if s.starts_with('/') {
        return s.parse().map_err(|e| format!("bad multiaddr '{s}': {e}"));
    }
    let (host, port) = s
        .rsplit_once(':')
        .ok_or_else(|| format!("'{s}' is neither a multiaddr nor host:port"))?;
    let port: u16 = port.parse().map_err(|_| format!("bad port in '{s}'"))?;
    let proto = if host.parse::<std::net::Ipv4Addr>().is_ok() {
        "ip4"
    } else if host.parse::<std::net::Ipv6Addr>().is_ok() {
        "ip6"
    } else {
        "dns4"
    };
    format!("/{proto}/{host}/tcp/{port}")
        .parse()
        .map_err(|e| format!("bad address '{s}': {e}"))
}

fn without_p2p(a: &Multiaddr) -> Multiaddr {
    a.iter()
        .filter(|p| !matches!(p, Protocol::P2p(_)))
        .collect()
}

#[derive(Debug, Clone)]
struct Conn {
    path: Path,
    addr: Multiaddr,
}

/// A pairing this device is joining.
struct Joining {
    inviter: PeerKey,
    addrs: Vec<Multiaddr>,
    name: String,
}

/// What the node may ask of the swarm (from a client request).
#[derive(Message)]
#[rtype(result = "Response")]
pub enum SwarmRequest {
    PairInvite { ttl_ms: u64 },
    PairWait { timeout_ms: u64 },
    PairJoin { invite: String, timeout_ms: u64 },
    PairConfirm { accept: bool, timeout_ms: u64 },
    Devices,
    DeviceRemove { device: String },
    Status { paths: HashMap<String, String> },
    SetSync { workspace: String, enabled: bool },
    Connect { addr: String },
}

/// A workspace document started on this node.
#[derive(Message)]
#[rtype(result = "()")]
pub struct RegisterDoc {
    pub workspace: String,
    pub addr: Addr<DocActor>,
}

/// What a workspace's engine wants sent.
#[derive(Message)]
#[rtype(result = "()")]
pub struct FromDoc {
    pub workspace: String,
    pub outs: Vec<Out>,
}

/// Ask the node for a workspace's document actor (starting it if needed).
#[derive(Message)]
#[rtype(result = "Addr<DocActor>")]
pub struct EnsureDoc {
    pub workspace: String,
}

#[derive(Message)]
#[rtype(result = "()")]
struct Net(NetEvent);

/// B's side of a handoff: take the agent over (the node does the git work
/// and starts it).
#[derive(Message)]
#[rtype(result = "Result<String, ErrorInfo>")]
pub struct AcceptHandoff {
    pub from: PeerKey,
    pub request: PeerRequest,
}

/// Send a request to a paired device (by id or its first characters).
#[derive(Message)]
#[rtype(result = "Result<PeerResponse, ErrorInfo>")]
pub struct SendToDevice {
    pub device: String,
    pub request: PeerRequest,
}

/// Is this device a member of the group (remote attach asks)?
#[derive(Message)]
#[rtype(result = "bool")]
pub struct IsMember {
    pub peer: PeerKey,
}

/// The key of a member, from its long device id.
#[derive(Message)]
#[rtype(result = "Option<PeerKey>")]
pub struct MemberKey {
    pub device: String,
}

/// Is sync on for this workspace (the node asks before creating docs).
#[derive(Message)]
#[rtype(result = "bool")]
pub struct SyncEnabled {
    pub workspace: String,
}

pub struct SwarmActor {
    store: Store,
    me: DeviceIdentity,
    name: String,
    roster: Roster,
    net: mpsc::Sender<NetCmd>,
    node: Recipient<EnsureDoc>,
    handoff: Recipient<AcceptHandoff>,
    mdns: bool,
    docs: HashMap<String, Addr<DocActor>>,
    disabled: BTreeSet<String>,
    conns: BTreeMap<PeerKey, Conn>,
    /// Last known direct addresses of members (redialed when disconnected).
    known_addrs: BTreeMap<PeerKey, Vec<Multiaddr>>,
    discovered: BTreeMap<PeerKey, Multiaddr>,
    last_seen: BTreeMap<PeerKey, u64>,
    last_sync: BTreeMap<PeerKey, u64>,
    ws_last_sync: HashMap<String, u64>,
    listen: Vec<Multiaddr>,
    relay_addr: Option<Multiaddr>,
    relay_peer: Option<PeerKey>,
    relay_round: bool,
    reserved: bool,
    queue: HashMap<String, Vec<Vec<u8>>>,
    /// Local changes written while nobody could take them (no relay).
    unsent: HashMap<String, u64>,
    cursors: HashMap<String, Vec<Cursor>>,
    snapshot_sent: HashMap<String, bool>,
    inviter: Option<Inviter>,
    sas_waiters: Vec<oneshot::Sender<Response>>,
    paired_waiters: Vec<oneshot::Sender<Response>>,
    joining: Option<(Joiner, Joining)>,
    /// Names that joining devices gave, until they are in the roster.
    joiner_names: HashMap<PeerKey, String>,
    rejected: u64,
    ticks: u64,
    /// The `_agentos._tcp` advertisement and browser (once listening).
    lan: Option<agentos_p2p::lan::Lan>,
}

impl std::fmt::Debug for SwarmActor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SwarmActor")
            .field("peers", &self.conns.len())
            .finish()
    }
}

/// Load the device group's roster, or start one with this device alone.
pub fn load_roster(store: &Store, me: &DeviceIdentity, name: &str) -> Roster {
    if let Some(bytes) = store.p2p_get("roster") {
        match decode_log(&bytes).and_then(|log| Roster::replay(&log, Some(me))) {
            Ok(r) if r.members().contains(&me.public_key()) => return r,
            Ok(_) => warn!("this device is no longer in its roster; starting a new device group"),
            Err(e) => {
                warn!(error = %e, "the stored roster is damaged; starting a new device group")
            }
        }
    }
    let r = Roster::create(me, name);
    let _ = store.p2p_put("roster", &encode_log(r.entries()));
    let _ = store.flush();
    r
}

/// The name this device shows to others.
pub fn device_name(cfg: &crate::config::SyncConfig) -> String {
    if let Some(n) = cfg.device_name.as_ref().filter(|n| !n.trim().is_empty()) {
        return n.trim().to_string();
    }
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "device".into())
}

/// A request to a peer through the driver; the error is a message.
async fn request(
    net: mpsc::Sender<NetCmd>,
    peer: PeerKey,
    addrs: Vec<Multiaddr>,
    req: PeerRequest,
) -> Result<PeerResponse, String> {
    let (tx, rx) = oneshot::channel();
    net.send(NetCmd::Request {
        peer,
        addrs,
        request: Box::new(req),
        reply: tx,
    })
    .await
    .map_err(|_| "the p2p driver stopped".to_string())?;
    rx.await.map_err(|_| "the p2p driver stopped".to_string())?
}

impl SwarmActor {
    /// Start the swarm driver and the actor.
    pub fn start(
        store: Store,
        me: DeviceIdentity,
        cfg: &crate::config::SyncConfig,
        node: Recipient<EnsureDoc>,
        handoff: Recipient<AcceptHandoff>,
    ) -> Result<(Addr<SwarmActor>, libp2p_stream::Control), String> {
        let name = device_name(cfg);
        let roster = load_roster(&store, &me, &name);
        let swarm =
            // LAN discovery is our own `_agentos._tcp` service (`lan.rs`).
            agentos_p2p::net::build_swarm(me.seed()).map_err(|e| e.to_string())?;
        let control = swarm.behaviour().stream.new_control();
        let (cmd_tx, cmd_rx) = mpsc::channel(agentos_p2p::transport::CHANNEL);
        let (ev_tx, mut ev_rx) = mpsc::channel(agentos_p2p::transport::CHANNEL);
        actix::spawn(agentos_p2p::transport::drive(swarm, cmd_rx, ev_tx));
        let listen = parse_addr(&cfg.listen)?;
        let relay_addr = store
            .p2p_get("relay")
            .and_then(|b| String::from_utf8(b).ok())
            .or_else(|| cfg.relay.clone())
            .map(|s| parse_addr(&s))
            .transpose()?;
        let disabled = store
            .p2p_get("disabled")
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        let actor = SwarmActor {
            store,
            me,
            name,
            roster,
            net: cmd_tx,
            node,
            handoff,
            mdns: cfg.mdns,
            docs: HashMap::new(),
            disabled,
            conns: BTreeMap::new(),
            known_addrs: BTreeMap::new(),
            discovered: BTreeMap::new(),
            last_seen: BTreeMap::new(),
            last_sync: BTreeMap::new(),
            ws_last_sync: HashMap::new(),
            listen: Vec::new(),
            relay_addr,
            relay_peer: None,
            relay_round: false,
            reserved: false,
            queue: HashMap::new(),
            unsent: HashMap::new(),
            cursors: HashMap::new(),
            snapshot_sent: HashMap::new(),
            inviter: None,
            sas_waiters: Vec::new(),
            paired_waiters: Vec::new(),
            joining: None,
            joiner_names: HashMap::new(),
            rejected: 0,
            ticks: 0,
            lan: None,
        };
        let addr = actor.start();
        let a2 = addr.clone();
        actix::spawn(async move {
            while let Some(ev) = ev_rx.recv().await {
                if a2.send(Net(ev)).await.is_err() {
                    break;
                }
            }
        });
        addr.do_send(Listen { addr: listen });
        Ok((addr, control))
    }

    fn cmd(&self, c: NetCmd) {
        if let Err(e) = self.net.try_send(c) {
            warn!(error = %e, "p2p command dropped (driver busy or stopped)");
        }
    }

    fn members(&self) -> BTreeSet<PeerKey> {
        self.roster.members()
    }

    fn is_member(&self, k: &PeerKey) -> bool {
        *k != self.me.public_key() && self.roster.members().contains(k)
    }

    fn enabled(&self, ws: &str) -> bool {
        !self.disabled.contains(ws)
    }

    fn group(&self) -> [u8; 32] {
        self.roster.group_id()
    }

    /// The roster changed (pairing, a removal, a newer log from a peer):
    /// persist it, tell the driver and every document.
    fn roster_changed(&mut self) {
        let _ = self
            .store
            .p2p_put("roster", &encode_log(self.roster.entries()));
        let _ = self.store.flush();
        for d in self.docs.values() {
            d.do_send(SetRoster {
                roster: self.roster.clone(),
            });
        }
        // Peers that left are cut off.
        let gone: Vec<PeerKey> = self
            .conns
            .keys()
            .filter(|k| Some(**k) != self.relay_peer && !self.is_member(k))
            .copied()
            .collect();
        for k in gone {
            for d in self.docs.values() {
                d.do_send(PeerDown { peer: k });
            }
        }
        // New members already connected (the pairing connection) start
        // syncing now; every member's address is remembered.
        let connected: Vec<PeerKey> = self
            .conns
            .keys()
            .filter(|k| self.is_member(k))
            .copied()
            .collect();
        for k in connected {
            self.peer_up(k);
        }
        for m in self.roster.members() {
            self.save_addrs(&m);
        }
        info!(
            epoch = self.roster.epoch(),
            members = self.roster.members().len(),
            "roster updated"
        );
    }

    /// Remember where a member listens, across restarts (a fixed port, or
    /// no mDNS).
    fn save_addrs(&self, peer: &PeerKey) {
        if !self.is_member(peer) {
            return;
        }
        if let Some(addrs) = self.known_addrs.get(peer) {
            let list: Vec<String> = addrs.iter().map(|a| a.to_string()).collect();
            if let Ok(b) = serde_json::to_vec(&list) {
                let _ = self.store.p2p_put(&format!("addr/{}", hex(peer)), &b);
            }
        }
    }

    fn push_roster(&self, ctx: &mut Context<Self>, to: PeerKey) {
        let req = PeerRequest::Roster {
            group: self.group(),
            log: encode_log(self.roster.entries()),
        };
        let net = self.net.clone();
        ctx.spawn(
            async move { request(net, to, vec![], req).await }
                .into_actor(self)
                .map(move |r, act, _| {
                    if let Ok(PeerResponse::Roster { log }) = r {
                        act.merge_roster(&log);
                    }
                }),
        );
    }

    fn merge_roster(&mut self, log: &[u8]) {
        let Ok(entries) = decode_log(log) else {
            self.rejected += 1;
            return;
        };
        if entries.first().map(|e| e.hash()) != Some(self.group()) {
            return;
        }
        match self.roster.extend_from(&entries, Some(&self.me)) {
            Ok(true) => self.roster_changed(),
            Ok(false) => {}
            Err(e) => {
                self.rejected += 1;
                warn!(error = %e, "a peer's roster does not extend ours; ignored");
            }
        }
    }

    fn doc_for(
        &mut self,
        ctx: &mut Context<Self>,
        ws: String,
        f: impl FnOnce(&Addr<DocActor>) + 'static,
    ) {
        if let Some(d) = self.docs.get(&ws) {
            f(d);
            return;
        }
        let node = self.node.clone();
        ctx.spawn(
            async move { node.send(EnsureDoc { workspace: ws }).await.ok() }
                .into_actor(self)
                .map(move |d, _, _| {
                    if let Some(d) = d {
                        f(&d);
                    }
                }),
        );
    }

    fn peer_up(&mut self, peer: PeerKey) {
        for (ws, d) in &self.docs {
            if self.enabled(ws) {
                d.do_send(PeerUp { peer });
            }
        }
        self.unsent.clear();
    }

    fn on_request(&mut self, ctx: &mut Context<Self>, peer: PeerKey, id: u64, req: PeerRequest) {
        let respond = |act: &Self, response: PeerResponse| {
            act.cmd(NetCmd::Respond { id, response });
        };
        let denied = |m: &str| PeerResponse::Error {
            code: ErrorCode::PermissionDenied,
            message: m.to_string(),
        };
        match req {
            PeerRequest::Roster { group, log } => {
                if !self.is_member(&peer) || group != self.group() {
                    self.rejected += 1;
                    return respond(self, denied("not a member of this device group"));
                }
                self.merge_roster(&log);
                respond(
                    self,
                    PeerResponse::Roster {
                        log: encode_log(self.roster.entries()),
                    },
                );
            }
            PeerRequest::Sync { workspace, message } => {
                if !self.is_member(&peer) {
                    self.rejected += 1;
                    return respond(self, denied("not a member of this device group"));
                }
                if !self.enabled(&workspace) {
                    return respond(self, denied("sync is disabled for this workspace here"));
                }
                respond(self, PeerResponse::Ok);
                self.last_sync.insert(peer, now_ms());
                self.ws_last_sync.insert(workspace.clone(), now_ms());
                self.doc_for(ctx, workspace, move |d| {
                    d.do_send(RemoteSync {
                        from: peer,
                        message,
                    })
                });
            }
            PeerRequest::PairHello { nonce, proof, name } => {
                let r = self.on_pair_hello(peer, nonce, proof, name);
                respond(self, r);
            }
            PeerRequest::PairConfirm { accepted } => {
                let r = self.on_pair_confirm(peer, accepted);
                respond(self, r);
            }
            req @ PeerRequest::Handoff { .. } => {
                if !self.is_member(&peer) {
                    self.rejected += 1;
                    return respond(self, denied("not a member of this device group"));
                }
                let node = self.handoff.clone();
                ctx.spawn(
                    async move {
                        node.send(AcceptHandoff {
                            from: peer,
                            request: req,
                        })
                        .await
                    }
                    .into_actor(self)
                    .map(move |r, act, _| {
                        let response = match r {
                            Ok(Ok(agent)) => PeerResponse::HandedOff { agent },
                            Ok(Err(e)) => PeerResponse::Error {
                                code: e.code,
                                message: format!("{} ({})", e.message, e.hint()),
                            },
                            Err(_) => PeerResponse::Error {
                                code: ErrorCode::Internal,
                                message: "the node stopped".into(),
                            },
                        };
                        act.cmd(NetCmd::Respond { id, response });
                    }),
                );
            }
            other => {
                debug!(?peer, "unsupported request on a device: {}", kind(&other));
                respond(
                    self,
                    PeerResponse::Error {
                        code: ErrorCode::InvalidArgument,
                        message: format!("a device does not serve {}", kind(&other)),
                    },
                );
            }
        }
    }

    // ---- pairing, inviter side ----

    fn on_pair_hello(
        &mut self,
        peer: PeerKey,
        nonce: [u8; 16],
        proof: [u8; 32],
        name: String,
    ) -> PeerResponse {
        let pairing = |m: String| PeerResponse::Error {
            code: ErrorCode::Pairing,
            message: m,
        };
        let Some(inv) = self.inviter.as_mut() else {
            self.rejected += 1;
            return pairing("this device has no open invite".into());
        };
        match inv.on_request(peer, &PairRequest { nonce, proof }, now_ms()) {
            Ok((Accept { nonce }, sas)) => {
                let name: String = name.chars().filter(|c| !c.is_control()).take(64).collect();
                info!(peer = %DeviceId::from_public_key(&peer).short(), "pairing: a device presented the code");
                for w in self.sas_waiters.drain(..) {
                    let _ = w.send(Response::PairSas {
                        sas: sas.clone(),
                        device: device_id(&peer),
                        name: name.clone(),
                    });
                }
                self.joiner_names.insert(peer, name);
                PeerResponse::PairAccept {
                    nonce,
                    name: self.name.clone(),
                }
            }
            Err(e) => {
                self.rejected += 1;
                warn!(error = %e, "pairing: refused a request");
                if matches!(e, PairError::RateLimited | PairError::Expired) {
                    for w in self.sas_waiters.drain(..) {
                        let _ = w.send(error_response(err(ErrorCode::Pairing, e.to_string())));
                    }
                }
                pairing(e.to_string())
            }
        }
    }

    fn on_pair_confirm(&mut self, peer: PeerKey, accepted: bool) -> PeerResponse {
        let Some(inv) = self.inviter.as_mut() else {
            return PeerResponse::Error {
                code: ErrorCode::Pairing,
                message: "this device has no open invite".into(),
            };
        };
        if inv.peer() != Some(peer) {
            self.rejected += 1;
            return PeerResponse::Error {
                code: ErrorCode::Pairing,
                message: "this device did not present the code".into(),
            };
        }
        if !accepted {
            self.inviter = None;
            self.fail_paired("the other device refused the code");
            return PeerResponse::Error {
                code: ErrorCode::Pairing,
                message: "pairing refused".into(),
            };
        }
        let _ = inv.confirm_remote();
        if self.try_complete_invite() {
            PeerResponse::Roster {
                log: encode_log(self.roster.entries()),
            }
        } else {
            PeerResponse::Ok
        }
    }

    fn fail_paired(&mut self, why: &str) {
        for w in self.paired_waiters.drain(..) {
            let _ = w.send(error_response(err(ErrorCode::Pairing, why)));
        }
    }

    /// Both sides confirmed: add the device to the roster.
    fn try_complete_invite(&mut self) -> bool {
        let Some(peer) = self.inviter.as_ref().and_then(|i| i.paired().ok()) else {
            return false;
        };
        self.inviter = None;
        let name = self
            .joiner_names
            .remove(&peer)
            .unwrap_or_else(|| "device".into());
        if !self.roster.members().contains(&peer) {
            match self.roster.add(&self.me, peer, &name) {
                Ok(_) => self.roster_changed(),
                Err(e) => {
                    warn!(error = %e, "pairing: could not add the device");
                    self.fail_paired(&e.to_string());
                    return false;
                }
            }
        }
        info!(peer = %DeviceId::from_public_key(&peer).short(), "paired");
        for w in self.paired_waiters.drain(..) {
            let _ = w.send(Response::Paired {
                device: device_id(&peer),
                name: name.clone(),
            });
        }
        true
    }

    // ---- relay ----

    fn relay_round(&mut self, ctx: &mut Context<Self>) {
        let Some(relay) = self.relay_peer else {
            return;
        };
        if self.relay_round || !self.conns.contains_key(&relay) {
            return;
        }
        self.relay_round = true;
        let group = self.group();
        let log = encode_log(self.roster.entries());
        let mut puts: Vec<(String, Vec<Vec<u8>>)> = Vec::new();
        for (ws, q) in self.queue.iter_mut() {
            if !q.is_empty() {
                let n = q.len().min(PUT_BATCH);
                puts.push((ws.clone(), q[..n].to_vec()));
            }
        }
        let workspaces: Vec<String> = self
            .docs
            .keys()
            .filter(|w| !self.disabled.contains(*w))
            .cloned()
            .collect();
        let cursors = self.cursors.clone();
        let snap_needed: Vec<(String, Addr<DocActor>)> = self
            .docs
            .iter()
            .filter(|(w, _)| {
                self.enabled(w) && !self.snapshot_sent.get(*w).copied().unwrap_or(false)
            })
            .map(|(w, d)| (w.clone(), d.clone()))
            .collect();
        let net = self.net.clone();
        let disabled = self.disabled.clone();
        let fut = async move {
            let mut out = RelayResult::default();
            match request(
                net.clone(),
                relay,
                vec![],
                PeerRequest::Roster { group, log },
            )
            .await
            {
                Ok(PeerResponse::Roster { .. }) | Ok(PeerResponse::Ok) => {}
                Ok(PeerResponse::Error { message, .. }) => {
                    out.error = Some(message);
                    return out;
                }
                Ok(_) => {}
                Err(e) => {
                    out.error = Some(e);
                    return out;
                }
            }
            // Our whole document once per run: it carries what was
            // written before pairing or while the queue overflowed.
            for (ws, d) in snap_needed {
                if let Ok(Some(envelope)) = d.send(TakeSnapshot).await {
                    let r = request(
                        net.clone(),
                        relay,
                        vec![],
                        PeerRequest::PutSnapshot {
                            group,
                            workspace: ws.clone(),
                            envelope,
                        },
                    )
                    .await;
                    if matches!(r, Ok(PeerResponse::Ok)) {
                        out.snapshots_sent.push(ws);
                    }
                }
            }
            for (ws, envelopes) in puts {
                let n = envelopes.len();
                let r = request(
                    net.clone(),
                    relay,
                    vec![],
                    PeerRequest::Put {
                        group,
                        workspace: ws.clone(),
                        envelopes,
                    },
                )
                .await;
                match r {
                    Ok(PeerResponse::Ok) => out.put.push((ws, n)),
                    Ok(PeerResponse::Error { message, .. }) => {
                        // Refused envelopes (an old epoch…) are dropped:
                        // the snapshot covers them.
                        warn!(workspace = %ws, %message, "the relay refused envelopes");
                        out.put.push((ws, n));
                    }
                    _ => {}
                }
            }
            // Workspaces the relay holds that this device has not seen yet.
            let mut all = workspaces;
            if let Ok(PeerResponse::Workspaces { names }) = request(
                net.clone(),
                relay,
                vec![],
                PeerRequest::Workspaces { group },
            )
            .await
            {
                for n in names {
                    if !all.contains(&n) && !disabled.contains(&n) {
                        all.push(n);
                    }
                }
            }
            for ws in all {
                let mut cur = cursors.get(&ws).cloned().unwrap_or_default();
                if cur.is_empty()
                    && let Ok(PeerResponse::Snapshots { envelopes }) = request(
                        net.clone(),
                        relay,
                        vec![],
                        PeerRequest::GetSnapshots {
                            group,
                            workspace: ws.clone(),
                        },
                    )
                    .await
                {
                    out.snapshots.push((ws.clone(), envelopes));
                }
                loop {
                    let r = request(
                        net.clone(),
                        relay,
                        vec![],
                        PeerRequest::Fetch {
                            group,
                            workspace: ws.clone(),
                            cursors: cur.clone(),
                            limit: FETCH_LIMIT,
                        },
                    )
                    .await;
                    match r {
                        Ok(PeerResponse::Envelopes { envelopes, cursors }) => {
                            let n = envelopes.len();
                            cur = cursors;
                            out.fetched.push((ws.clone(), envelopes));
                            if n < FETCH_LIMIT as usize {
                                break;
                            }
                        }
                        _ => break,
                    }
                }
                out.cursors.push((ws, cur));
            }
            out
        };
        ctx.spawn(fut.into_actor(self).map(|out, act, ctx| {
            act.relay_round = false;
            if let Some(e) = out.error {
                debug!(error = %e, "relay round failed");
                return;
            }
            for ws in out.snapshots_sent {
                act.snapshot_sent.insert(ws, true);
            }
            for (ws, n) in out.put {
                if let Some(q) = act.queue.get_mut(&ws) {
                    q.drain(..n.min(q.len()));
                }
            }
            for (ws, envs) in out.snapshots {
                if envs.is_empty() {
                    continue;
                }
                act.doc_for(ctx, ws, move |d| {
                    for bytes in envs {
                        d.do_send(RemoteSnapshot { bytes });
                    }
                });
            }
            for (ws, envs) in out.fetched {
                if envs.is_empty() {
                    continue;
                }
                act.ws_last_sync.insert(ws.clone(), now_ms());
                act.doc_for(ctx, ws, move |d| {
                    for bytes in envs {
                        d.do_send(RemoteEnvelope { bytes });
                    }
                });
            }
            for (ws, cur) in out.cursors {
                if let Ok(b) = serde_json::to_vec(
                    &cur.iter()
                        .map(|c| (hex(&c.author), c.next))
                        .collect::<Vec<_>>(),
                ) {
                    let _ = act.store.p2p_put(&format!("cursor/{ws}"), &b);
                }
                act.cursors.insert(ws, cur);
            }
        }));
    }

    fn tick(&mut self, ctx: &mut Context<Self>) {
        self.ticks += 1;
        // Members we know an address of but are not connected to (every
        // other tick: a dial takes a while to fail).
        let members = if self.ticks.is_multiple_of(2) {
            self.members()
        } else {
            BTreeSet::new()
        };
        for m in &members {
            if *m == self.me.public_key() || self.conns.contains_key(m) {
                continue;
            }
            let mut addrs: Vec<Multiaddr> = self.known_addrs.get(m).cloned().unwrap_or_default();
            addrs.extend(self.discovered.get(m).cloned());
            if !addrs.is_empty() {
                debug!(peer = %DeviceId::from_public_key(m).short(), ?addrs, "redialing a member");
            }
            for a in addrs {
                self.cmd(NetCmd::Dial { addr: a });
            }
            // Through the relay as well: whichever way works first is used.
            if let Some(relay) = self.relay_multiaddr()
                && self.relay_peer.is_some_and(|r| self.conns.contains_key(&r))
            {
                self.cmd(NetCmd::DialVia { relay, peer: *m });
            }
        }
        if !self.reserved
            && self.ticks.is_multiple_of(10)
            && self.relay_peer.is_some_and(|r| self.conns.contains_key(&r))
            && let Some(a) = self.relay_multiaddr()
        {
            self.cmd(NetCmd::Reserve { relay: a });
        }
        match (&self.relay_addr, self.relay_peer) {
            (Some(a), None) => self.cmd(NetCmd::Dial { addr: a.clone() }),
            (Some(a), Some(rp)) if !self.conns.contains_key(&rp) => {
                self.reserved = false;
                self.cmd(NetCmd::Dial { addr: a.clone() })
            }
            _ => {}
        }
        self.relay_round(ctx);
    }

    fn relay_multiaddr(&self) -> Option<Multiaddr> {
        let a = self.relay_addr.as_ref()?;
        let rp = self.relay_peer?;
        Some(without_p2p(a).with(Protocol::P2p(peer_id(&rp)?)))
    }

    fn on_net(&mut self, ev: NetEvent, ctx: &mut Context<Self>) {
        match ev {
            NetEvent::Listening { addr } => {
                let port = addr.iter().find_map(|p| match p {
                    Protocol::Tcp(port) => Some(port),
                    _ => None,
                });
                if self.mdns
                    && self.lan.is_none()
                    && let (Some(port), Some(me)) = (port, peer_id(&self.me.public_key()))
                {
                    let addr = ctx.address();
                    match agentos_p2p::lan::Lan::start(me, port, move |f| {
                        addr.do_send(LanFound { found: f })
                    }) {
                        Ok(l) => self.lan = Some(l),
                        Err(e) => warn!(error = %e, "LAN discovery unavailable"),
                    }
                }
                if !self.listen.contains(&addr) {
                    self.listen.push(addr);
                }
            }
            NetEvent::Connected { peer, addr, path } => {
                self.last_seen.insert(peer, now_ms());
                let fresh = !self.conns.contains_key(&peer);
                self.conns.insert(
                    peer,
                    Conn {
                        path,
                        addr: addr.clone(),
                    },
                );
                if fresh && self.is_member(&peer) {
                    self.push_roster(ctx, peer);
                    self.peer_up(peer);
                }
                // The relay is the peer at the address we were given (its
                // PeerId, when the address names one).
                if let Some(want) = &self.relay_addr {
                    let named = want.iter().find_map(|p| match p {
                        Protocol::P2p(id) => Some(id),
                        _ => None,
                    });
                    let is_relay = match named {
                        Some(id) => peer_id(&peer) == Some(id),
                        None => path == Path::Direct && without_p2p(&addr) == without_p2p(want),
                    };
                    if is_relay && self.relay_peer != Some(peer) {
                        info!(relay = %DeviceId::from_public_key(&peer).short(), "relay connected");
                        self.relay_peer = Some(peer);
                        self.reserved = false;
                    }
                }
                if Some(peer) == self.relay_peer {
                    if let Some(a) = self.relay_multiaddr() {
                        self.cmd(NetCmd::Reserve { relay: a });
                    }
                    self.relay_round(ctx);
                }
            }
            NetEvent::Disconnected { peer } => {
                self.conns.remove(&peer);
                self.last_seen.insert(peer, now_ms());
                for d in self.docs.values() {
                    d.do_send(PeerDown { peer });
                }
            }
            NetEvent::Gossip {
                workspace,
                from,
                data,
            } => {
                if !self.enabled(&workspace) || !from.is_some_and(|f| self.is_member(&f)) {
                    self.rejected += 1;
                    return;
                }
                if let Some(f) = from {
                    self.last_sync.insert(f, now_ms());
                }
                self.ws_last_sync.insert(workspace.clone(), now_ms());
                self.doc_for(ctx, workspace, move |d| {
                    d.do_send(RemoteEnvelope { bytes: data })
                });
            }
            NetEvent::Request { peer, id, request } => self.on_request(ctx, peer, id, request),
            NetEvent::Reserved { relay } => {
                info!(relay = %DeviceId::from_public_key(&relay).short(), "relay reservation accepted");
                self.reserved = true;
            }
            NetEvent::Identified {
                peer,
                protocols,
                listen_addrs,
                ..
            } => {
                debug!(peer = %DeviceId::from_public_key(&peer).short(), ?listen_addrs, "identified");
                let direct: Vec<Multiaddr> = listen_addrs
                    .into_iter()
                    .filter(|a| !a.iter().any(|p| matches!(p, Protocol::P2pCircuit)))
                    .collect();
                if !direct.is_empty() && self.known_addrs.get(&peer) != Some(&direct) {
                    self.known_addrs.insert(peer, direct);
                    self.save_addrs(&peer);
                }
                // The relay speaks the hop protocol once it knows its own
                // address: reserve a slot then (reachable through it).
                if Some(peer) == self.relay_peer
                    && protocols.iter().any(|p| p == HOP)
                    && !self.reserved
                    && let Some(a) = self.relay_multiaddr()
                {
                    self.cmd(NetCmd::Reserve { relay: a });
                }
            }
        }
    }

    fn status(&self, paths: &HashMap<String, String>) -> SyncStatusView {
        let relay_connected = self.relay_peer.is_some_and(|r| self.conns.contains_key(&r));
        let mut wss: BTreeSet<String> = self.docs.keys().cloned().collect();
        wss.extend(paths.keys().cloned());
        let workspaces = wss
            .into_iter()
            .map(|id| WorkspaceSyncView {
                path: paths.get(&id).cloned().unwrap_or_default(),
                enabled: self.enabled(&id),
                pending: if self.relay_addr.is_some() {
                    self.queue.get(&id).map(|q| q.len() as u64).unwrap_or(0)
                } else {
                    self.unsent.get(&id).copied().unwrap_or(0)
                },
                last_sync_ms: self.ws_last_sync.get(&id).copied(),
                id,
            })
            .collect();
        let mode = match (self.mdns, self.relay_addr.is_some()) {
            (true, true) => "lan+relay",
            (true, false) => "lan",
            (false, true) => "relay",
            (false, false) => "direct",
        };
        SyncStatusView {
            device: self.me.device_id().to_string(),
            mode: mode.into(),
            listen: self.listen.iter().map(|a| a.to_string()).collect(),
            relay: self
                .relay_multiaddr()
                .or(self.relay_addr.clone())
                .map(|a| a.to_string()),
            relay_connected,
            peers: self
                .devices()
                .into_iter()
                .filter(|d| !d.this_device)
                .collect(),
            workspaces,
            accepted: 0,
            rejected: self.rejected,
            duplicates: 0,
            epoch: self.roster.epoch(),
            lan: self.discovered.keys().map(device_id).collect(),
        }
    }

    fn devices(&self) -> Vec<DeviceView> {
        let me = self.me.public_key();
        self.roster
            .names()
            .iter()
            .map(|(k, name)| {
                let id = DeviceId::from_public_key(k);
                let conn = self.conns.get(k);
                DeviceView {
                    id: id.to_string(),
                    short: id.short(),
                    name: name.clone(),
                    this_device: *k == me,
                    connection: conn.map(|c| {
                        match c.path {
                            Path::Relayed => "relay",
                            Path::Direct if self.discovered.contains_key(k) => "lan",
                            Path::Direct => "direct",
                        }
                        .to_string()
                    }),
                    addr: conn.map(|c| c.addr.to_string()),
                    last_seen_ms: if conn.is_some() {
                        Some(now_ms())
                    } else {
                        self.last_seen.get(k).copied()
                    },
                    last_sync_ms: self.last_sync.get(k).copied(),
                }
            })
            .collect()
    }

    fn find_device(&self, s: &str) -> Result<PeerKey, ErrorInfo> {
        let want: String = s
            .chars()
            .filter(|c| *c != '-' && !c.is_whitespace())
            .map(|c| c.to_ascii_uppercase())
            .collect();
        let hits: Vec<PeerKey> = self
            .roster
            .members()
            .into_iter()
            .filter(|k| {
                let id: String = device_id(k).chars().filter(|c| *c != '-').collect();
                !want.is_empty() && id.starts_with(&want)
            })
            .collect();
        match hits.as_slice() {
            [one] => Ok(*one),
            [] => Err(err(
                ErrorCode::UnknownDevice,
                format!("no paired device '{s}'"),
            )),
            _ => Err(err(
                ErrorCode::InvalidArgument,
                format!("'{s}' matches several devices: give more characters"),
            )),
        }
    }
}

#[derive(Default)]
struct RelayResult {
    error: Option<String>,
    put: Vec<(String, usize)>,
    fetched: Vec<(String, Vec<Vec<u8>>)>,
    snapshots: Vec<(String, Vec<Vec<u8>>)>,
    snapshots_sent: Vec<String>,
    cursors: Vec<(String, Vec<Cursor>)>,
}

/// Wait (bounded) for an answer that another event will give.
fn wait_for(
    rx: oneshot::Receiver<Response>,
    timeout_ms: u64,
    what: &'static str,
) -> ResponseActFuture<SwarmActor, Response> {
    Box::pin(actix::fut::wrap_future(async move {
        match tokio::time::timeout(Duration::from_millis(timeout_ms), rx).await {
            Ok(Ok(r)) => r,
            _ => error_response(err(
                ErrorCode::Pairing,
                format!("no answer while waiting for {what}"),
            )),
        }
    }))
}

fn kind(r: &PeerRequest) -> &'static str {
    match r {
        PeerRequest::Roster { .. } => "Roster",
        PeerRequest::Sync { .. } => "Sync",
        PeerRequest::PairHello { .. } => "PairHello",
        PeerRequest::PairConfirm { .. } => "PairConfirm",
        PeerRequest::Put { .. } => "Put",
        PeerRequest::Fetch { .. } => "Fetch",
        PeerRequest::PutSnapshot { .. } => "PutSnapshot",
        PeerRequest::GetSnapshots { .. } => "GetSnapshots",
        PeerRequest::Workspaces { .. } => "Workspaces",
        PeerRequest::Handoff { .. } => "Handoff",
    }
}

impl Actor for SwarmActor {
    type Context = Context<Self>;
    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(4096);
        for (k, v) in self.store.p2p_scan("addr/") {
            if let (Some(key), Ok(list)) = (unhex(&k), serde_json::from_slice::<Vec<String>>(&v)) {
                let addrs = list.iter().filter_map(|a| a.parse().ok()).collect();
                self.known_addrs.insert(key, addrs);
            }
        }
        // Relay cursors survive restarts.
        for (k, v) in self.store.p2p_scan("cursor/") {
            if let Ok(list) = serde_json::from_slice::<Vec<(String, u64)>>(&v) {
                let cur = list
                    .into_iter()
                    .filter_map(|(h, next)| {
                        Some(Cursor {
                            author: unhex(&h)?,
                            next,
                        })
                    })
                    .collect();
                self.cursors.insert(k, cur);
            }
        }
        ctx.run_interval(TICK, |act, ctx| act.tick(ctx));
    }
}

#[derive(Message)]
#[rtype(result = "()")]
struct Listen {
    addr: Multiaddr,
}

impl Handler<Listen> for SwarmActor {
    type Result = ();
    fn handle(&mut self, msg: Listen, _: &mut Context<Self>) {
        self.cmd(NetCmd::Listen { addr: msg.addr });
        if let Some(a) = self.relay_addr.clone() {
            self.cmd(NetCmd::Dial { addr: a });
        }
    }
}

/// A device advertised `_agentos._tcp` on the LAN.
#[derive(Message)]
#[rtype(result = "()")]
struct LanFound {
    found: agentos_p2p::lan::Found,
}

impl Handler<LanFound> for SwarmActor {
    type Result = ();
    fn handle(&mut self, msg: LanFound, _: &mut Context<Self>) {
        let agentos_p2p::lan::Found { peer, addrs } = msg.found;
        let Some(first) = addrs.first().cloned() else {
            return;
        };
        // Kept for pairing by short code; only members are dialed.
        self.discovered.insert(peer, first);
        if self.is_member(&peer) && !self.conns.contains_key(&peer) {
            for a in addrs {
                self.cmd(NetCmd::Dial { addr: a });
            }
        }
    }
}

impl Handler<Net> for SwarmActor {
    type Result = ();
    fn handle(&mut self, msg: Net, ctx: &mut Context<Self>) {
        let _span = tracing::debug_span!("swarm").entered();
        self.on_net(msg.0, ctx);
    }
}

impl Handler<SendToDevice> for SwarmActor {
    type Result = ResponseActFuture<Self, Result<PeerResponse, ErrorInfo>>;
    fn handle(&mut self, msg: SendToDevice, _: &mut Context<Self>) -> Self::Result {
        let k = match self.find_device(&msg.device) {
            Ok(k) if k == self.me.public_key() => {
                return Box::pin(actix::fut::ready(Err(err(
                    ErrorCode::InvalidArgument,
                    "that is this device",
                ))));
            }
            Ok(k) => k,
            Err(e) => return Box::pin(actix::fut::ready(Err(e))),
        };
        let mut addrs: Vec<Multiaddr> = self.known_addrs.get(&k).cloned().unwrap_or_default();
        addrs.extend(self.discovered.get(&k).cloned());
        if let (Some(relay), Some(p)) = (self.relay_multiaddr(), peer_id(&k)) {
            addrs.push(relay.with(Protocol::P2pCircuit).with(Protocol::P2p(p)));
        }
        let net = self.net.clone();
        Box::pin(actix::fut::wrap_future(async move {
            request(net, k, addrs, msg.request).await.map_err(|e| {
                err(
                    ErrorCode::PeerUnreachable,
                    format!(
                        "device {} did not answer: {e}",
                        DeviceId::from_public_key(&k).short()
                    ),
                )
            })
        }))
    }
}

impl Handler<IsMember> for SwarmActor {
    type Result = bool;
    fn handle(&mut self, msg: IsMember, _: &mut Context<Self>) -> bool {
        self.is_member(&msg.peer)
    }
}

impl Handler<MemberKey> for SwarmActor {
    type Result = Option<PeerKey>;
    fn handle(&mut self, msg: MemberKey, _: &mut Context<Self>) -> Option<PeerKey> {
        self.roster
            .members()
            .into_iter()
            .find(|k| device_id(k) == msg.device && self.is_member(k))
    }
}

impl Handler<SyncEnabled> for SwarmActor {
    type Result = bool;
    fn handle(&mut self, msg: SyncEnabled, _: &mut Context<Self>) -> bool {
        self.enabled(&msg.workspace)
    }
}

impl Handler<RegisterDoc> for SwarmActor {
    type Result = ();
    fn handle(&mut self, msg: RegisterDoc, ctx: &mut Context<Self>) {
        let enabled = self.enabled(&msg.workspace);
        msg.addr.do_send(AttachSwarm {
            swarm: ctx.address().recipient(),
            roster: self.roster.clone(),
            enabled,
        });
        if enabled {
            self.cmd(NetCmd::Subscribe {
                workspace: msg.workspace.clone(),
            });
            for k in self.conns.keys() {
                if self.is_member(k) {
                    msg.addr.do_send(PeerUp { peer: *k });
                }
            }
        }
        self.docs.insert(msg.workspace, msg.addr);
    }
}

impl Handler<FromDoc> for SwarmActor {
    type Result = ();
    fn handle(&mut self, msg: FromDoc, ctx: &mut Context<Self>) {
        if !self.enabled(&msg.workspace) {
            return;
        }
        let nobody = !self.conns.keys().any(|k| self.is_member(k));
        for o in msg.outs {
            match o {
                Out::Gossip { envelope } => {
                    if nobody && self.relay_addr.is_none() {
                        *self.unsent.entry(msg.workspace.clone()).or_default() += 1;
                    }
                    self.cmd(NetCmd::Publish {
                        workspace: msg.workspace.clone(),
                        data: envelope,
                    });
                }
                Out::Relay { envelope } => {
                    if self.relay_addr.is_some() {
                        let q = self.queue.entry(msg.workspace.clone()).or_default();
                        if q.len() >= MAX_QUEUE {
                            // The next snapshot carries what is dropped here.
                            q.remove(0);
                            self.snapshot_sent.insert(msg.workspace.clone(), false);
                        }
                        q.push(envelope);
                    }
                }
                Out::Sync { to, message } => {
                    let net = self.net.clone();
                    let ws = msg.workspace.clone();
                    let req = PeerRequest::Sync {
                        workspace: ws.clone(),
                        message,
                    };
                    ctx.spawn(
                        async move { request(net, to, vec![], req).await }
                            .into_actor(self)
                            .map(move |r, act, _| match r {
                                Ok(PeerResponse::Ok) => {
                                    act.last_sync.insert(to, now_ms());
                                    act.ws_last_sync.insert(ws, now_ms());
                                }
                                other => {
                                    // A failed exchange resets the peer's state.
                                    debug!(?other, "sync exchange failed; resetting");
                                    if let Some(d) = act.docs.get(&ws) {
                                        d.do_send(PeerDown { peer: to });
                                        if act.conns.contains_key(&to) {
                                            d.do_send(PeerUp { peer: to });
                                        }
                                    }
                                }
                            }),
                    );
                }
            }
        }
    }
}

impl Handler<SwarmRequest> for SwarmActor {
    type Result = ResponseActFuture<Self, Response>;

    fn handle(&mut self, msg: SwarmRequest, ctx: &mut Context<Self>) -> Self::Result {
        let ready =
            |r: Response| -> ResponseActFuture<Self, Response> { Box::pin(actix::fut::ready(r)) };
        match msg {
            SwarmRequest::PairInvite { ttl_ms } => {
                let mut invite = Invite::new(
                    self.me.public_key(),
                    now_ms(),
                    ttl_ms,
                    self.relay_multiaddr().map(|a| a.to_string()),
                );
                invite.addrs = self
                    .listen
                    .iter()
                    .filter(|a| !a.iter().any(|p| matches!(p, Protocol::P2pCircuit)))
                    .map(|a| a.to_string())
                    .collect();
                let r = Response::PairInvite {
                    code: invite.code(),
                    payload: invite.payload(),
                    expires_at_ms: invite.expires_at_ms,
                    relay: invite.relay.clone(),
                };
                self.inviter = Some(Inviter::new(invite));
                self.fail_paired("a newer invite replaced this one");
                ready(r)
            }
            SwarmRequest::PairWait { timeout_ms } => {
                let Some(inv) = &self.inviter else {
                    return ready(error_response(err(
                        ErrorCode::Pairing,
                        "no open invite: run `agentos pair` first",
                    )));
                };
                if let (Some(sas), Some(peer)) = (inv.sas(), inv.peer()) {
                    return ready(Response::PairSas {
                        sas: sas.to_string(),
                        device: device_id(&peer),
                        name: self.joiner_names.get(&peer).cloned().unwrap_or_default(),
                    });
                }
                let (tx, rx) = oneshot::channel();
                self.sas_waiters.push(tx);
                wait_for(rx, timeout_ms, "a device to enter the code")
            }
            SwarmRequest::PairConfirm { accept, timeout_ms } => {
                if self.inviter.as_ref().is_some_and(|i| i.peer().is_some()) {
                    if !accept {
                        self.inviter = None;
                        return ready(error_response(err(ErrorCode::Pairing, "pairing refused")));
                    }
                    if let Some(i) = self.inviter.as_mut() {
                        let _ = i.confirm_local();
                    }
                    let (tx, rx) = oneshot::channel();
                    self.paired_waiters.push(tx);
                    self.try_complete_invite();
                    return wait_for(rx, timeout_ms, "the other device to confirm");
                }
                if self.joining.is_some() {
                    return self.join_confirm(ctx, accept, timeout_ms);
                }
                ready(error_response(err(
                    ErrorCode::Pairing,
                    "no pairing in progress: run `agentos pair` or `agentos pair <invite>`",
                )))
            }
            SwarmRequest::PairJoin { invite, timeout_ms } => self.join(ctx, invite, timeout_ms),
            SwarmRequest::Devices => ready(Response::Devices {
                devices: self.devices(),
            }),
            SwarmRequest::DeviceRemove { device } => {
                let k = match self.find_device(&device) {
                    Ok(k) => k,
                    Err(e) => return ready(error_response(e)),
                };
                if k == self.me.public_key() {
                    return ready(error_response(err(
                        ErrorCode::InvalidArgument,
                        "this is the device you are on: remove it from another paired device",
                    )));
                }
                if let Err(e) = self.roster.remove(&self.me, k) {
                    return ready(error_response(err(ErrorCode::Internal, e.to_string())));
                }
                self.roster_changed();
                self.cmd(NetCmd::Disconnect { peer: k });
                // Every remaining member and the relay hear about it now.
                let targets: Vec<PeerKey> = self
                    .conns
                    .keys()
                    .filter(|p| self.is_member(p) || Some(**p) == self.relay_peer)
                    .copied()
                    .collect();
                for t in targets {
                    self.push_roster(ctx, t);
                }
                ready(Response::Devices {
                    devices: self.devices(),
                })
            }
            SwarmRequest::Status { paths } => {
                let status = self.status(&paths);
                let docs: Vec<Addr<DocActor>> = self.docs.values().cloned().collect();
                // Each workspace's engine counts what it accepted and refused.
                Box::pin(actix::fut::wrap_future(async move {
                    let mut status = status;
                    for d in docs {
                        if let Ok(c) = d.send(crate::doc_actor::EngineCounters).await {
                            status.accepted += c.accepted;
                            status.rejected += c.rejected;
                            status.duplicates += c.duplicates;
                        }
                    }
                    Response::SyncStatus { status }
                }))
            }
            SwarmRequest::SetSync { workspace, enabled } => {
                if enabled {
                    self.disabled.remove(&workspace);
                } else {
                    self.disabled.insert(workspace.clone());
                }
                if let Ok(b) = serde_json::to_vec(&self.disabled) {
                    let _ = self.store.p2p_put("disabled", &b);
                    let _ = self.store.flush();
                }
                if let Some(d) = self.docs.get(&workspace).cloned() {
                    d.do_send(AttachSwarm {
                        swarm: ctx.address().recipient(),
                        roster: self.roster.clone(),
                        enabled,
                    });
                    if enabled {
                        self.cmd(NetCmd::Subscribe {
                            workspace: workspace.clone(),
                        });
                        for k in self.conns.keys() {
                            if self.is_member(k) {
                                d.do_send(PeerUp { peer: *k });
                            }
                        }
                    } else {
                        self.cmd(NetCmd::Unsubscribe {
                            workspace: workspace.clone(),
                        });
                        for k in self.conns.keys() {
                            d.do_send(PeerDown { peer: *k });
                        }
                        self.queue.remove(&workspace);
                    }
                }
                ready(Response::Ok)
            }
            SwarmRequest::Connect { addr } => {
                let a = match parse_addr(&addr) {
                    Ok(a) => a,
                    Err(e) => return ready(error_response(err(ErrorCode::InvalidArgument, e))),
                };
                let _ = self.store.p2p_put("relay", a.to_string().as_bytes());
                let _ = self.store.flush();
                self.relay_addr = Some(a.clone());
                self.relay_peer = None;
                self.reserved = false;
                self.snapshot_sent.clear();
                self.cmd(NetCmd::Dial { addr: a });
                ready(Response::Ok)
            }
        }
    }
}

impl SwarmActor {
    /// Joiner: reach the inviter and prove the secret.
    fn join(
        &mut self,
        _ctx: &mut Context<Self>,
        invite: String,
        timeout_ms: u64,
    ) -> ResponseActFuture<Self, Response> {
        let ready =
            |r: Response| -> ResponseActFuture<Self, Response> { Box::pin(actix::fut::ready(r)) };
        let me = self.me.public_key();
        // A payload names the inviter; a short code needs the LAN.
        let candidates: Vec<(PeerKey, [u8; 10], Vec<Multiaddr>)> =
            if invite.trim().starts_with("agentos-pair:") {
                let inv = match Invite::parse_payload(&invite) {
                    Ok(i) => i,
                    Err(e) => return ready(error_response(err(ErrorCode::Pairing, e.to_string()))),
                };
                if now_ms() > inv.expires_at_ms {
                    return ready(error_response(err(
                        ErrorCode::Pairing,
                        PairError::Expired.to_string(),
                    )));
                }
                let mut addrs: Vec<Multiaddr> =
                    inv.addrs.iter().filter_map(|a| a.parse().ok()).collect();
                if let Some(r) = inv.relay.as_ref().and_then(|r| r.parse::<Multiaddr>().ok()) {
                    if let Some(p) = peer_id(&inv.device) {
                        addrs.push(r.clone().with(Protocol::P2pCircuit).with(Protocol::P2p(p)));
                    }
                    // Use the inviter's relay from now on, unless we have one.
                    if self.relay_addr.is_none() {
                        self.relay_addr = Some(r.clone());
                        let _ = self.store.p2p_put("relay", r.to_string().as_bytes());
                        self.cmd(NetCmd::Dial { addr: r });
                    }
                }
                if let Some(a) = self.discovered.get(&inv.device) {
                    addrs.insert(0, a.clone());
                }
                vec![(inv.device, inv.secret, addrs)]
            } else {
                let secret = match Invite::parse_code(&invite) {
                    Ok(s) => s,
                    Err(e) => return ready(error_response(err(ErrorCode::Pairing, e.to_string()))),
                };
                self.discovered
                    .iter()
                    .filter(|(k, _)| **k != me)
                    .map(|(k, a)| (*k, secret, vec![a.clone()]))
                    .collect()
            };
        if candidates.is_empty() {
            return ready(error_response(err(
                ErrorCode::PeerUnreachable,
                "no device with an open invite was found on the LAN; use the invite payload (it carries addresses and the relay)",
            )));
        }
        let net = self.net.clone();
        let name = self.name.clone();
        Box::pin(
            async move {
                let deadline = tokio::time::Instant::now() + Duration::from_millis(timeout_ms);
                let mut last = String::from("no device answered");
                loop {
                    for (inviter, secret, addrs) in &candidates {
                        let (joiner, req) = Joiner::new(me, *inviter, *secret);
                        let r = tokio::time::timeout_at(
                            deadline,
                            request(
                                net.clone(),
                                *inviter,
                                addrs.clone(),
                                PeerRequest::PairHello {
                                    nonce: req.nonce,
                                    proof: req.proof,
                                    name: name.clone(),
                                },
                            ),
                        )
                        .await;
                        match r {
                            Ok(Ok(PeerResponse::PairAccept { nonce, name })) => {
                                return Ok((joiner, *inviter, addrs.clone(), nonce, name));
                            }
                            Ok(Ok(PeerResponse::Error { code, message })) => {
                                last = message;
                                if code == ErrorCode::Pairing && candidates.len() == 1 {
                                    return Err(err(ErrorCode::Pairing, last));
                                }
                            }
                            Ok(Ok(_)) => last = "unexpected answer".into(),
                            Ok(Err(e)) => last = e,
                            Err(_) => {}
                        }
                    }
                    if tokio::time::Instant::now() >= deadline {
                        return Err(err(
                            ErrorCode::PeerUnreachable,
                            format!("could not reach the inviting device: {last}"),
                        ));
                    }
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
            .into_actor(self)
            .map(|r, act, _| match r {
                Ok((mut joiner, inviter, addrs, nonce, name)) => {
                    let sas = joiner.on_accept(&Accept { nonce });
                    let name: String = name.chars().filter(|c| !c.is_control()).take(64).collect();
                    act.joining = Some((
                        joiner,
                        Joining {
                            inviter,
                            addrs,
                            name: name.clone(),
                        },
                    ));
                    Response::PairSas {
                        sas,
                        device: device_id(&inviter),
                        name,
                    }
                }
                Err(e) => error_response(e),
            }),
        )
    }

    /// Joiner: the user compared the SAS; wait for the inviter's side.
    fn join_confirm(
        &mut self,
        _ctx: &mut Context<Self>,
        accept: bool,
        timeout_ms: u64,
    ) -> ResponseActFuture<Self, Response> {
        let Some((_, j)) = &self.joining else {
            return Box::pin(actix::fut::ready(error_response(err(
                ErrorCode::Pairing,
                "no pairing in progress",
            ))));
        };
        let (inviter, addrs, name) = (j.inviter, j.addrs.clone(), j.name.clone());
        let net = self.net.clone();
        if !accept {
            self.joining = None;
        }
        Box::pin(
            async move {
                let deadline = tokio::time::Instant::now() + Duration::from_millis(timeout_ms);
                loop {
                    let r = request(
                        net.clone(),
                        inviter,
                        addrs.clone(),
                        PeerRequest::PairConfirm { accepted: accept },
                    )
                    .await;
                    match r {
                        Ok(PeerResponse::Roster { log }) => return Ok(log),
                        Ok(PeerResponse::Error { message, .. }) => {
                            return Err(err(ErrorCode::Pairing, message));
                        }
                        Ok(_) if !accept => {
                            return Err(err(ErrorCode::Pairing, "pairing refused"));
                        }
                        Ok(_) => {}
                        Err(e) => debug!(error = %e, "pair confirm"),
                    }
                    if tokio::time::Instant::now() >= deadline {
                        return Err(err(
                            ErrorCode::Pairing,
                            "the other device did not confirm in time",
                        ));
                    }
                    tokio::time::sleep(Duration::from_millis(300)).await;
                }
            }
            .into_actor(self)
            .map(move |r, act, _| {
                act.joining = None;
                let log = match r {
                    Ok(l) => l,
                    Err(e) => return error_response(e),
                };
                let adopted = decode_log(&log).and_then(|l| Roster::replay(&l, Some(&act.me)));
                match adopted {
                    Ok(r)
                        if r.members().contains(&act.me.public_key())
                            && r.current_key().is_some() =>
                    {
                        act.roster = r;
                        act.roster_changed();
                        Response::Paired {
                            device: device_id(&inviter),
                            name,
                        }
                    }
                    Ok(_) => error_response(err(
                        ErrorCode::Pairing,
                        "the other device's roster does not include this device",
                    )),
                    Err(e) => error_response(err(ErrorCode::Pairing, e.to_string())),
                }
            }),
        )
    }
}
