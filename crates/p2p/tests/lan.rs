//! LAN discovery on this host's interfaces: two advertisements of
//! `_agentos._tcp.local.` find each other with their PeerIds and ports,
//! and a plain DNS-SD browser sees the service under that name.

use agentos_p2p::lan::{Found, Lan, SERVICE};
use agentos_p2p::net::peer_id;
use std::sync::mpsc;
use std::time::Duration;

#[test]
fn devices_find_each_other_as_agentos_tcp() {
    let ka = agentos_p2p::DeviceIdentity::from_seed([41; 32]).public_key();
    let kb = agentos_p2p::DeviceIdentity::from_seed([42; 32]).public_key();
    let (tx, rx) = mpsc::channel::<(u8, Found)>();
    let ta = tx.clone();
    let _a = Lan::start(peer_id(&ka).unwrap(), 41001, move |f| {
        let _ = ta.send((1, f));
    })
    .unwrap();
    let _b = Lan::start(peer_id(&kb).unwrap(), 41002, move |f| {
        let _ = tx.send((2, f));
    })
    .unwrap();
    let (mut a_saw_b, mut b_saw_a) = (false, false);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !(a_saw_b && b_saw_a) {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let (who, f) = rx
            .recv_timeout(left)
            .expect("the devices did not find each other within 20 s");
        if who == 1 && f.peer == kb {
            assert!(
                f.addrs
                    .iter()
                    .any(|a| a.to_string().ends_with("/tcp/41002")),
                "{f:?}"
            );
            a_saw_b = true;
        }
        if who == 2 && f.peer == ka {
            assert!(
                f.addrs
                    .iter()
                    .any(|a| a.to_string().ends_with("/tcp/41001")),
                "{f:?}"
            );
            b_saw_a = true;
        }
    }
    // Any DNS-SD browser finds the service by its name.
    let d = mdns_sd::ServiceDaemon::new().unwrap();
    let r = d.browse(SERVICE).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match r.recv_timeout(left).expect("no _agentos._tcp service seen") {
            mdns_sd::ServiceEvent::ServiceResolved(s) if s.ty_domain == "_agentos._tcp.local." => {
                break;
            }
            _ => {}
        }
    }
    let _ = d.shutdown();
}
