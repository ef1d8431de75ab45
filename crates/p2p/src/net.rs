//! The libp2p transport of the sync engine: a swarm whose identity is the
//! device key (so a PeerId is a device id), over TCP + noise + yamux, with
//! gossipsub (one topic per workspace, carrying sealed envelopes), a
//! request-response protocol for point-to-point Automerge sync messages,
//! mDNS discovery (which never grants trust: the engine only talks to
//! roster members), identify and ping. [`Node::run_until`] drives it.

use crate::engine::{Engine, Out, PeerKey};
use futures::StreamExt;
use futures::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{
    Multiaddr, PeerId, StreamProtocol, Swarm, gossipsub, identify, identity, mdns, noise, ping,
    request_response, tcp, yamux,
};
use std::collections::BTreeMap;
use std::time::Duration;

/// The sync protocol's name (versioned with the wire format).
pub const SYNC_PROTOCOL: StreamProtocol = StreamProtocol::new("/agentos/sync/1");
/// The largest sync message accepted (a first sync can be ~1 MB).
pub const MAX_SYNC_MESSAGE: usize = 16 << 20;

/// Length-prefixed raw bytes; the response is an empty acknowledgement.
#[derive(Debug, Clone, Default)]
pub struct SyncCodec;

async fn read_frame<T: AsyncRead + Unpin + Send>(io: &mut T) -> std::io::Result<Vec<u8>> {
    let mut len = [0u8; 4];
    io.read_exact(&mut len).await?;
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_SYNC_MESSAGE {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("sync message of {len} bytes is over the limit"),
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

impl request_response::Codec for SyncCodec {
    type Protocol = StreamProtocol;
    type Request = Vec<u8>;
    type Response = Vec<u8>;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> std::io::Result<Vec<u8>>
    where
        T: AsyncRead + Unpin + Send,
    {
        read_frame(io).await
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> std::io::Result<Vec<u8>>
    where
        T: AsyncRead + Unpin + Send,
    {
        read_frame(io).await
    }

    async fn write_request<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        req: Vec<u8>,
    ) -> std::io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_frame(io, &req).await
    }

    async fn write_response<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        res: Vec<u8>,
    ) -> std::io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_frame(io, &res).await
    }
}

#[derive(NetworkBehaviour)]
pub struct Behaviour {
    gossipsub: gossipsub::Behaviour,
    sync: request_response::Behaviour<SyncCodec>,
    mdns: Toggle<mdns::tokio::Behaviour>,
    identify: identify::Behaviour,
    ping: ping::Behaviour,
}

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

/// One device on the network for one workspace.
pub struct Node {
    swarm: Swarm<Behaviour>,
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
    pub fn new(
        seed: [u8; 32],
        workspace: &str,
        engine: Engine,
        mdns: bool,
    ) -> Result<Node, NetError> {
        let mut secret = seed;
        let keypair = identity::Keypair::ed25519_from_bytes(&mut secret).map_err(e)?;
        let swarm = libp2p::SwarmBuilder::with_existing_identity(keypair)
            .with_tokio()
            .with_tcp(
                tcp::Config::default(),
                noise::Config::new,
                yamux::Config::default,
            )
            .map_err(e)?
            .with_behaviour(|key| {
                let gossip_cfg = gossipsub::ConfigBuilder::default()
                    .heartbeat_interval(Duration::from_millis(500))
                    .max_transmit_size(64 * 1024)
                    .build()
                    .map_err(|x| x.to_string())?;
                let gossipsub = gossipsub::Behaviour::new(
                    gossipsub::MessageAuthenticity::Signed(key.clone()),
                    gossip_cfg,
                )?;
                let sync = request_response::Behaviour::new(
                    [(SYNC_PROTOCOL, request_response::ProtocolSupport::Full)],
                    request_response::Config::default()
                        .with_request_timeout(Duration::from_secs(30)),
                );
                let mdns = if mdns {
                    Some(mdns::tokio::Behaviour::new(
                        mdns::Config::default(),
                        key.public().to_peer_id(),
                    )?)
                } else {
                    None
                };
                Ok(Behaviour {
                    gossipsub,
                    sync,
                    mdns: Toggle::from(mdns),
                    identify: identify::Behaviour::new(identify::Config::new(
                        "/agentos/1".into(),
                        key.public(),
                    )),
                    ping: ping::Behaviour::new(ping::Config::new()),
                })
            })
            .map_err(e)?
            .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
            .build();
        let topic = gossipsub::IdentTopic::new(format!("agentos/ws/{workspace}"));
        let mut node = Node {
            swarm,
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
                        self.swarm.behaviour_mut().sync.send_request(&p, message);
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
            SwarmEvent::Behaviour(BehaviourEvent::Sync(request_response::Event::Message {
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
                    .sync
                    .send_response(channel, Vec::new());
                // Only members: a stranger's message is dropped.
                if let Some(key) = self.members.get(&peer).copied() {
                    let outs = self.engine.receive_sync(key, &request);
                    self.dispatch(outs);
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Sync(
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
            SwarmEvent::Behaviour(BehaviourEvent::Mdns(mdns::Event::Discovered(list))) => {
                for (peer, addr) in list {
                    if self.members.contains_key(&peer) && !self.swarm.is_connected(&peer) {
                        let _ = self.swarm.dial(addr);
                    }
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
