//! The libp2p transport of the sync engine: a swarm whose identity is the
//! device key (so a PeerId is a device id), over TCP + noise + yamux, with
//! gossipsub (one topic per workspace, carrying sealed envelopes), a
//! request-response protocol for point-to-point Automerge sync messages,
//! identify and ping (LAN discovery is `lan.rs`). [`Node::run_until`] drives it.

use crate::engine::{Engine, Out, PeerKey};
use agentos_proto::peer::{self, PeerRequest, PeerResponse};
use futures::StreamExt;
use futures::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{
    Multiaddr, PeerId, StreamProtocol, Swarm, dcutr, gossipsub, identify, identity, noise, ping,
    relay, request_response, tcp, yamux,
};
use std::collections::BTreeMap;
use std::time::Duration;

/// The peer protocol's name (versioned with `agentos_proto::peer`).
pub const PEER_PROTOCOL: StreamProtocol = StreamProtocol::new(agentos_proto::peer::PEER_PROTOCOL);

/// Length-prefixed bincode of [`PeerRequest`] / [`PeerResponse`], bounded
/// by [`agentos_proto::peer::MAX_PEER_MESSAGE`].
#[derive(Debug, Clone, Default)]
pub struct PeerCodec;

async fn read_frame<T: AsyncRead + Unpin + Send>(io: &mut T) -> std::io::Result<Vec<u8>> {
    let mut len = [0u8; 4];
    io.read_exact(&mut len).await?;
    let len = u32::from_be_bytes(len) as usize;
    if len > agentos_proto::peer::MAX_PEER_MESSAGE {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("peer message of {len} bytes is over the limit"),
        ));
    }
    let mut buf = vec![0u8; len];
    io.read_exact(&mut buf).await?;
    Ok(buf)
}

async fn write_frame<T: AsyncWrite + Unpin + Send>(io: &mut T, data: &[u8]) -> std::io::Result<()> {
    io.write_all(&(data.len() as u32).to_be_bytes()).await?;
    io.write_all(data).await?;
    io.flush().await
}

fn invalid(e: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string())
}

impl request_response::Codec for PeerCodec {
    type Protocol = StreamProtocol;
    type Request = PeerRequest;
    type Response = PeerResponse;

    async fn read_request<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
    ) -> std::io::Result<PeerRequest>
    where
        T: AsyncRead + Unpin + Send,
    {
        peer::decode(&read_frame(io).await?).map_err(invalid)
    }

    async fn read_response<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
    ) -> std::io::Result<PeerResponse>
    where
        T: AsyncRead + Unpin + Send,
    {
        peer::decode(&read_frame(io).await?).map_err(invalid)
    }

    async fn write_request<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        req: PeerRequest,
    ) -> std::io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_frame(io, &peer::encode(&req).map_err(invalid)?).await
    }

    async fn write_response<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        res: PeerResponse,
    ) -> std::io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_frame(io, &peer::encode(&res).map_err(invalid)?).await
    }
}

/// A device's behaviour: gossip, the peer protocol, LAN discovery, and the
/// relay client with hole punching for devices that are not on one LAN.
#[derive(NetworkBehaviour)]
pub struct Behaviour {
    pub gossipsub: gossipsub::Behaviour,
    pub peer: request_response::Behaviour<PeerCodec>,
    pub identify: identify::Behaviour,
    pub ping: ping::Behaviour,
    pub relay: relay::client::Behaviour,
    pub dcutr: dcutr::Behaviour,
    /// Raw streams (remote attach on [`ATTACH_PROTOCOL`]).
    pub stream: libp2p_stream::Behaviour,
}

/// Remote attach: the client⇄daemon attach conversation over a stream.
pub const ATTACH_PROTOCOL: StreamProtocol = StreamProtocol::new("/agentos/attach/1");

#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("libp2p: {0}")]
    Libp2p(String),
}

fn e(x: impl std::fmt::Display) -> NetError {
    NetError::Libp2p(x.to_string())
}

/// The PeerId of a device, from its Ed25519 public key.
pub fn peer_id(device: &PeerKey) -> Option<PeerId> {
    let pk = identity::ed25519::PublicKey::try_from_bytes(device).ok()?;
    Some(identity::PublicKey::from(pk).to_peer_id())
}

/// The device key inside a PeerId (Ed25519 ids inline their public key).
pub fn peer_key(peer: &PeerId) -> Option<PeerKey> {
    let mh: &libp2p::multihash::Multihash<64> = peer.as_ref();
    let pk = identity::PublicKey::try_decode_protobuf(mh.digest()).ok()?;
    Some(pk.try_into_ed25519().ok()?.to_bytes())
}

/// The gossip topic of a workspace.
pub fn topic(workspace: &str) -> gossipsub::IdentTopic {
    gossipsub::IdentTopic::new(format!("agentos/ws/{workspace}"))
}

/// The identify protocol string of AgentOS devices and relays.
pub const IDENTIFY: &str = "/agentos/1";

/// Build a device swarm from the device `seed`.
pub fn build_swarm(seed: [u8; 32]) -> Result<Swarm<Behaviour>, NetError> {
    let mut secret = seed;
    let keypair = identity::Keypair::ed25519_from_bytes(&mut secret).map_err(e)?;
    let swarm = libp2p::SwarmBuilder::with_existing_identity(keypair)
        .with_tokio()
        .with_tcp(
            tcp::Config::default().nodelay(true),
            noise::Config::new,
            yamux::Config::default,
        )
        .map_err(e)?
        .with_relay_client(noise::Config::new, yamux::Config::default)
        .map_err(e)?
        .with_behaviour(|key, relay| {
            // A tiny mesh: a user's handful of devices (research/sync.md §5.2).
            let gossip_cfg = gossipsub::ConfigBuilder::default()
                .heartbeat_interval(Duration::from_millis(500))
                .mesh_n_low(1)
                .mesh_n(2)
                .mesh_n_high(4)
                .mesh_outbound_min(0)
                .max_transmit_size(64 * 1024)
                .message_id_fn(|m: &gossipsub::Message| {
                    use sha2::Digest;
                    gossipsub::MessageId::from(sha2::Sha256::digest(&m.data).to_vec())
                })
                .build()
                .map_err(|x| x.to_string())?;
            let gossipsub = gossipsub::Behaviour::new(
                gossipsub::MessageAuthenticity::Signed(key.clone()),
                gossip_cfg,
            )?;
            let peer = request_response::Behaviour::new(
                [(PEER_PROTOCOL, request_response::ProtocolSupport::Full)],
                request_response::Config::default().with_request_timeout(Duration::from_secs(30)),
            );
            Ok(Behaviour {
                gossipsub,
                peer,
                identify: identify::Behaviour::new(identify::Config::new(
                    IDENTIFY.into(),
                    key.public(),
                )),
                // A dead link (a partition) is noticed in ~10 s, not at
                // TCP's minutes-long timeout: a failed ping closes it.
                ping: ping::Behaviour::new(
                    ping::Config::new()
                        .with_interval(Duration::from_secs(5))
                        .with_timeout(Duration::from_secs(5)),
                ),
                relay,
                dcutr: dcutr::Behaviour::new(key.public().to_peer_id()),
                stream: libp2p_stream::Behaviour::new(),
            })
        })
        .map_err(e)?
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
        .build();
    Ok(swarm)
}

/// One device on the network for one workspace.
pub struct Node {
    swarm: Swarm<Behaviour>,
    workspace: String,
    pub engine: Engine,
    topic: gossipsub::IdentTopic,
    /// Roster members by PeerId.
    members: BTreeMap<PeerId, PeerKey>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("peer_id", self.swarm.local_peer_id())
            .finish()
    }
}

impl Node {
    /// Build the swarm from the device `seed` (the same key as the engine's).
    pub fn new(seed: [u8; 32], workspace: &str, engine: Engine) -> Result<Node, NetError> {
        let swarm = build_swarm(seed)?;
        let topic = topic(workspace);
        let mut node = Node {
            swarm,
            workspace: workspace.to_string(),
            engine,
            topic,
            members: BTreeMap::new(),
        };
        node.swarm
            .behaviour_mut()
            .gossipsub
            .subscribe(&node.topic)
            .map_err(e)?;
        node.refresh_members();
        Ok(node)
    }

    /// Recompute the member map after the roster changed.
    pub fn refresh_members(&mut self) {
        self.members = self
            .engine
            .roster()
            .members()
            .into_iter()
            .filter_map(|k| peer_id(&k).map(|p| (p, k)))
            .collect();
    }

    pub fn peer_id(&self) -> PeerId {
        *self.swarm.local_peer_id()
    }

    pub fn listen(&mut self, addr: Multiaddr) -> Result<(), NetError> {
        self.swarm.listen_on(addr).map_err(e)?;
        Ok(())
    }

    /// The first listening address (after [`Node::listen`] and some driving).
    pub fn listeners(&self) -> Vec<Multiaddr> {
        self.swarm.listeners().cloned().collect()
    }

    pub fn dial(&mut self, addr: Multiaddr) -> Result<(), NetError> {
        self.swarm.dial(addr).map_err(e)
    }

    /// A local change: sealed, gossiped, and synced to connected peers.
    pub fn write(
        &mut self,
        f: impl FnOnce(&mut agentos_crdt::WorkspaceDoc) -> Result<(), agentos_crdt::CrdtError>,
    ) -> Result<Vec<Vec<u8>>, agentos_crdt::CrdtError> {
        let outs = self.engine.write(f)?;
        Ok(self.dispatch(outs))
    }

    /// Send the engine's outputs; returns the envelopes meant for the relay.
    fn dispatch(&mut self, outs: Vec<Out>) -> Vec<Vec<u8>> {
        let mut relay = Vec::new();
        for o in outs {
            match o {
                Out::Gossip { envelope } => {
                    // No subscribed peer yet is fine: sync catches them up.
                    let _ = self
                        .swarm
                        .behaviour_mut()
                        .gossipsub
                        .publish(self.topic.clone(), envelope);
                }
                Out::Relay { envelope } => relay.push(envelope),
                Out::Sync { to, message } => {
                    if let Some(p) = peer_id(&to) {
                        let workspace = self.workspace.clone();
                        self.swarm
                            .behaviour_mut()
                            .peer
                            .send_request(&p, PeerRequest::Sync { workspace, message });
                    }
                }
            }
        }
        relay
    }

    fn handle(&mut self, event: SwarmEvent<BehaviourEvent>) {
        match event {
            SwarmEvent::ConnectionEstablished { peer_id, .. } => {
                if let Some(key) = self.members.get(&peer_id).copied()
                    && !self.engine.connected_peers().contains(&key)
                {
                    let outs = self.engine.connected(key);
                    self.dispatch(outs);
                }
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                num_established: 0,
                ..
            } => {
                if let Some(key) = self.members.get(&peer_id) {
                    self.engine.disconnected(*key);
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Gossipsub(gossipsub::Event::Message {
                message,
                ..
            })) => {
                let _ = self.engine.receive_envelope(&message.data);
            }
            SwarmEvent::Behaviour(BehaviourEvent::Peer(request_response::Event::Message {
                peer,
                message:
                    request_response::Message::Request {
                        request, channel, ..
                    },
                ..
            })) => {
                let _ = self
                    .swarm
                    .behaviour_mut()
                    .peer
                    .send_response(channel, PeerResponse::Ok);
                // Only members: a stranger's message is dropped.
                if let (Some(key), PeerRequest::Sync { workspace, message }) =
                    (self.members.get(&peer).copied(), request)
                    && workspace == self.workspace
                {
                    let outs = self.engine.receive_sync(key, &message);
                    self.dispatch(outs);
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Peer(
                request_response::Event::OutboundFailure { peer, .. }
                | request_response::Event::InboundFailure { peer, .. },
            )) => {
                // A failed exchange resets the peer's sync state.
                if let Some(key) = self.members.get(&peer).copied() {
                    self.engine.disconnected(key);
                    let outs = self.engine.connected(key);
                    self.dispatch(outs);
                }
            }
            _ => {}
        }
    }

    /// Drive the swarm until `cond` holds or `timeout` passes.
    pub async fn run_until(
        &mut self,
        timeout: Duration,
        mut cond: impl FnMut(&mut Node) -> bool,
    ) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if cond(self) {
                return true;
            }
            let ev = tokio::time::timeout_at(deadline, self.swarm.select_next_some()).await;
            match ev {
                Ok(ev) => self.handle(ev),
                Err(_) => return cond(self),
            }
        }
    }
}

/// Send one peer request on a swarm the caller drives itself (tests,
/// tools) and wait for its answer; other events are dropped. Bound it with
/// a timeout.
pub async fn request_on(
    swarm: &mut Swarm<Behaviour>,
    peer: &PeerId,
    req: PeerRequest,
) -> Result<PeerResponse, String> {
    let id = swarm.behaviour_mut().peer.send_request(peer, req);
    loop {
        if let SwarmEvent::Behaviour(BehaviourEvent::Peer(ev)) = swarm.select_next_some().await {
            match ev {
                request_response::Event::Message {
                    message:
                        request_response::Message::Response {
                            request_id,
                            response,
                        },
                    ..
                } if request_id == id => return Ok(response),
                request_response::Event::OutboundFailure {
                    request_id, error, ..
                } if request_id == id => return Err(error.to_string()),
                _ => {}
            }
        }
    }
}

/// Drive several nodes together until `cond` holds (tests, tools).
pub async fn run_all(
    nodes: &mut [&mut Node],
    timeout: Duration,
    mut cond: impl FnMut(&mut [&mut Node]) -> bool,
) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if cond(nodes) {
            return true;
        }
        if tokio::time::Instant::now() > deadline {
            return false;
        }
        for n in nodes.iter_mut() {
            while let Ok(Some(ev)) =
                tokio::time::timeout(Duration::from_millis(5), n.swarm.next()).await
            {
                n.handle(ev);
            }
        }
    }
}
