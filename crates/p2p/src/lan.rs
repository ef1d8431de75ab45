//! LAN discovery as a DNS-SD service over mDNS: each device advertises
//! `_agentos._tcp.local.` with its libp2p port and, in a TXT record, its
//! PeerId; each device browses for the same service (so `avahi-browse
//! _agentos._tcp` lists AgentOS devices too). A discovery is only a hint
//! of where a device listens: it never makes anyone trusted, and the node
//! only dials roster members.

use crate::engine::PeerKey;
use crate::net::peer_key;
use libp2p::{Multiaddr, PeerId};
use mdns_sd::{ServiceDaemon, ServiceEvent, ServiceInfo};
use tracing::{debug, warn};

/// The DNS-SD service type.
pub const SERVICE: &str = "_agentos._tcp.local.";

/// A device found on the LAN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub peer: PeerKey,
    pub addrs: Vec<Multiaddr>,
}

/// The advertisement and the browser; both stop when this is dropped.
pub struct Lan {
    daemon: ServiceDaemon,
}

impl std::fmt::Debug for Lan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Lan")
    }
}

impl Lan {
    /// Advertise `me` on `port` and report other devices to `found` (a
    /// thread reads the browser; `found` is called from it).
    pub fn start(
        me: PeerId,
        port: u16,
        found: impl Fn(Found) + Send + 'static,
    ) -> Result<Lan, String> {
        let daemon = ServiceDaemon::new().map_err(|e| format!("mDNS: {e}"))?;
        let id = me.to_string();
        // Instance names are at most 63 bytes; the PeerId's tail is unique.
        let instance = format!("agentos-{}", &id[id.len().saturating_sub(16)..]);
        let host = format!("{instance}.local.");
        let info = ServiceInfo::new(
            SERVICE,
            &instance,
            &host,
            "",
            port,
            &[("peer", id.as_str())][..],
        )
        .map_err(|e| format!("mDNS service: {e}"))?
        .enable_addr_auto();
        daemon
            .register(info)
            .map_err(|e| format!("mDNS register: {e}"))?;
        let rx = daemon
            .browse(SERVICE)
            .map_err(|e| format!("mDNS browse: {e}"))?;
        std::thread::Builder::new()
            .name("agentos-mdns".into())
            .spawn(move || {
                while let Ok(ev) = rx.recv() {
                    if let ServiceEvent::ServiceResolved(s) = ev {
                        let Some(peer) = s
                            .get_property_val_str("peer")
                            .and_then(|p| p.parse::<PeerId>().ok())
                        else {
                            debug!(
                                name = s.get_fullname(),
                                "an _agentos._tcp service without a peer id"
                            );
                            continue;
                        };
                        if peer == me {
                            continue;
                        }
                        let Some(key) = peer_key(&peer) else { continue };
                        let port = s.get_port();
                        let addrs = s
                            .get_addresses_v4()
                            .into_iter()
                            .filter_map(|ip| format!("/ip4/{ip}/tcp/{port}").parse().ok())
                            .collect();
                        found(Found { peer: key, addrs });
                    }
                }
            })
            .map_err(|e| format!("mDNS thread: {e}"))?;
        Ok(Lan { daemon })
    }
}

impl Drop for Lan {
    fn drop(&mut self) {
        if let Err(e) = self.daemon.shutdown() {
            warn!(error = %e, "mDNS shutdown");
        }
    }
}
