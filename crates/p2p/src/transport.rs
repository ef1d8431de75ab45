//! The daemon's libp2p driver: one task owns the device swarm and speaks to
//! the rest of the node through two bounded channels, commands in
//! ([`NetCmd`]) and events out ([`NetEvent`]). It makes no trust decisions:
//! the node's `SwarmActor` decides who is a member, what to sync and what
//! to answer. Inbound requests carry an id; the answer comes back as
//! [`NetCmd::Respond`].

use crate::engine::PeerKey;
use crate::net::{Behaviour, BehaviourEvent, peer_id, peer_key, topic};
use agentos_proto::peer::{PeerRequest, PeerResponse};
use futures::StreamExt;
use libp2p::multiaddr::Protocol;
use libp2p::request_response::{self, OutboundRequestId, ResponseChannel};
use libp2p::swarm::SwarmEvent;
use libp2p::{Multiaddr, Swarm, gossipsub, identify, ping, relay};
use std::collections::HashMap;
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info, warn};

/// Bound of both channels.
pub const CHANNEL: usize = 1024;

/// The answer to an outbound request.
pub type Reply = oneshot::Sender<Result<PeerResponse, String>>;

/// What the node asks the swarm to do.
#[derive(Debug)]
pub enum NetCmd {
    Listen {
        addr: Multiaddr,
    },
    /// Dial an address (a peer, or a relay).
    Dial {
        addr: Multiaddr,
    },
    /// Dial through a relay circuit to a device.
    DialVia {
        relay: Multiaddr,
        peer: PeerKey,
    },
    /// Listen through a relay (a reservation), so others can reach us via it.
    Reserve {
        relay: Multiaddr,
    },
    Subscribe {
        workspace: String,
    },
    Unsubscribe {
        workspace: String,
    },
    Publish {
        workspace: String,
        data: Vec<u8>,
    },
    /// A request to a peer; `addrs`, when known, are tried for dialing.
    Request {
        peer: PeerKey,
        addrs: Vec<Multiaddr>,
        request: Box<PeerRequest>,
        reply: Reply,
    },
    Respond {
        id: u64,
        response: PeerResponse,
    },
    Disconnect {
        peer: PeerKey,
    },
}

/// How a connection runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Path {
    Direct,
    Relayed,
}

/// What the swarm reports.
#[derive(Debug)]
pub enum NetEvent {
    Listening {
        addr: Multiaddr,
    },
    Connected {
        peer: PeerKey,
        addr: Multiaddr,
        path: Path,
    },
    Disconnected {
        peer: PeerKey,
    },
    /// A gossip message on a workspace topic; `from` is its signed source.
    Gossip {
        workspace: String,
        from: Option<PeerKey>,
        data: Vec<u8>,
    },
    /// An inbound request; answer with [`NetCmd::Respond`] and this id.
    Request {
        peer: PeerKey,
        id: u64,
        request: PeerRequest,
    },
    /// A relay accepted our reservation.
    Reserved {
        relay: PeerKey,
    },
    /// The identify protocol told us a peer's agent string.
    Identified {
        peer: PeerKey,
        agent: String,
        protocols: Vec<String>,
        /// Where the peer listens (what to dial next time).
        listen_addrs: Vec<Multiaddr>,
    },
}

struct Driver {
    swarm: Swarm<Behaviour>,
    events: mpsc::Sender<NetEvent>,
    inbound: HashMap<u64, ResponseChannel<PeerResponse>>,
    outbound: HashMap<OutboundRequestId, Reply>,
    next_id: u64,
    topics: HashMap<gossipsub::TopicHash, String>,
}

/// Run the driver until the command channel closes.
pub async fn drive(
    swarm: Swarm<Behaviour>,
    mut cmds: mpsc::Receiver<NetCmd>,
    events: mpsc::Sender<NetEvent>,
) {
    let mut d = Driver {
        swarm,
        events,
        inbound: HashMap::new(),
        outbound: HashMap::new(),
        next_id: 0,
        topics: HashMap::new(),
    };
    loop {
        tokio::select! {
            cmd = cmds.recv() => match cmd {
                Some(c) => d.command(c),
                None => break,
            },
            ev = d.swarm.select_next_some() => d.event(ev).await,
        }
    }
    debug!("p2p driver stopped");
}

impl Driver {
    fn command(&mut self, cmd: NetCmd) {
        match cmd {
            NetCmd::Listen { addr } => {
                if let Err(e) = self.swarm.listen_on(addr.clone()) {
                    warn!(%addr, error = %e, "cannot listen");
                }
            }
            NetCmd::Dial { addr } => {
                if let Err(e) = self.swarm.dial(addr.clone()) {
                    warn!(%addr, error = %e, "cannot dial");
                }
            }
            NetCmd::DialVia { relay, peer } => {
                if let Some(p) = peer_id(&peer) {
                    let addr = relay.with(Protocol::P2pCircuit).with(Protocol::P2p(p));
                    if let Err(e) = self.swarm.dial(addr.clone()) {
                        debug!(%addr, error = %e, "cannot dial through the relay");
                    }
                }
            }
            NetCmd::Reserve { relay } => {
                let addr = relay.with(Protocol::P2pCircuit);
                if let Err(e) = self.swarm.listen_on(addr.clone()) {
                    warn!(%addr, error = %e, "cannot reserve on the relay");
                }
            }
            NetCmd::Subscribe { workspace } => {
                let t = topic(&workspace);
                self.topics.insert(t.hash(), workspace);
                let _ = self.swarm.behaviour_mut().gossipsub.subscribe(&t);
            }
            NetCmd::Unsubscribe { workspace } => {
                let t = topic(&workspace);
                self.topics.remove(&t.hash());
                self.swarm.behaviour_mut().gossipsub.unsubscribe(&t);
            }
            NetCmd::Publish { workspace, data } => {
                // No subscribed peer yet is normal: sync catches them up.
                if let Err(e) = self
                    .swarm
                    .behaviour_mut()
                    .gossipsub
                    .publish(topic(&workspace), data)
                {
                    debug!(workspace, error = %e, "gossip not published");
                }
            }
            NetCmd::Request {
                peer,
                addrs,
                request,
                reply,
            } => {
                let Some(p) = peer_id(&peer) else {
                    let _ = reply.send(Err("not a device key".into()));
                    return;
                };
                let id = self
                    .swarm
                    .behaviour_mut()
                    .peer
                    .send_request_with_addresses(&p, *request, addrs);
                self.outbound.insert(id, reply);
            }
            NetCmd::Respond { id, response } => {
                if let Some(ch) = self.inbound.remove(&id) {
                    let _ = self.swarm.behaviour_mut().peer.send_response(ch, response);
                }
            }
            NetCmd::Disconnect { peer } => {
                if let Some(p) = peer_id(&peer) {
                    let _ = self.swarm.disconnect_peer_id(p);
                }
            }
        }
    }

    async fn emit(&mut self, ev: NetEvent) {
        // Bounded: a slow node slows the swarm, it never grows a queue.
        let _ = self.events.send(ev).await;
    }

    async fn event(&mut self, ev: SwarmEvent<BehaviourEvent>) {
        match ev {
            SwarmEvent::NewListenAddr { address, .. } => {
                info!(%address, "p2p listening");
                self.emit(NetEvent::Listening { addr: address }).await;
            }
            SwarmEvent::ConnectionEstablished {
                peer_id, endpoint, ..
            } => {
                let addr = endpoint.get_remote_address().clone();
                let path = if endpoint.is_relayed() {
                    Path::Relayed
                } else {
                    Path::Direct
                };
                if let Some(peer) = peer_key(&peer_id) {
                    self.emit(NetEvent::Connected { peer, addr, path }).await;
                }
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                num_established: 0,
                ..
            } => {
                if let Some(peer) = peer_key(&peer_id) {
                    self.emit(NetEvent::Disconnected { peer }).await;
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Gossipsub(gossipsub::Event::Message {
                message,
                ..
            })) => {
                if let Some(ws) = self.topics.get(&message.topic).cloned() {
                    let from = message.source.as_ref().and_then(peer_key);
                    self.emit(NetEvent::Gossip {
                        workspace: ws,
                        from,
                        data: message.data,
                    })
                    .await;
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Peer(ev)) => self.peer_event(ev).await,
            SwarmEvent::Behaviour(BehaviourEvent::Identify(identify::Event::Received {
                peer_id,
                info,
                ..
            })) => {
                if let Some(peer) = peer_key(&peer_id) {
                    self.emit(NetEvent::Identified {
                        peer,
                        agent: info.agent_version,
                        protocols: info.protocols.iter().map(|p| p.to_string()).collect(),
                        listen_addrs: info.listen_addrs,
                    })
                    .await;
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Ping(ping::Event {
                peer,
                connection,
                result: Err(e),
            })) => {
                debug!(%peer, error = %e, "ping failed; closing the connection");
                let _ = self.swarm.close_connection(connection);
            }
            SwarmEvent::Behaviour(BehaviourEvent::Relay(
                relay::client::Event::ReservationReqAccepted { relay_peer_id, .. },
            )) => {
                if let Some(relay) = peer_key(&relay_peer_id) {
                    self.emit(NetEvent::Reserved { relay }).await;
                }
            }
            _ => {}
        }
    }

    async fn peer_event(&mut self, ev: request_response::Event<PeerRequest, PeerResponse>) {
        match ev {
            request_response::Event::Message { peer, message, .. } => match message {
                request_response::Message::Request {
                    request, channel, ..
                } => {
                    let Some(key) = peer_key(&peer) else {
                        return;
                    };
                    self.next_id += 1;
                    let id = self.next_id;
                    self.inbound.insert(id, channel);
                    self.emit(NetEvent::Request {
                        peer: key,
                        id,
                        request,
                    })
                    .await;
                }
                request_response::Message::Response {
                    request_id,
                    response,
                } => {
                    if let Some(r) = self.outbound.remove(&request_id) {
                        let _ = r.send(Ok(response));
                    }
                }
            },
            request_response::Event::OutboundFailure {
                request_id, error, ..
            } => {
                if let Some(r) = self.outbound.remove(&request_id) {
                    let _ = r.send(Err(error.to_string()));
                }
            }
            request_response::Event::InboundFailure { .. }
            | request_response::Event::ResponseSent { .. } => {}
        }
        // Channels of requests whose connection died are dropped here.
        self.inbound.retain(|_, ch| ch.is_open());
    }
}
