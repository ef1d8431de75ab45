//! Seeded simulation of the P2P sync engine ([`agentos_p2p::engine`]):
//! N devices and a relay, with gossip loss and duplication, partitions,
//! devices going offline, crashes that keep only persisted state, a device
//! removal with key rotation, and (optionally) devices that are never
//! online at the same time. At quiescence it checks convergence of every
//! remaining device, that nothing written is missing, that the relay holds
//! no plaintext, that the removed device cannot read the new epoch, and a
//! bound on the sync messages needed to converge.

use crate::rng::Rng;
use agentos_crdt::{ActorId, AgentId, AgentRecord, StateTransition, WorkspaceDoc};
use agentos_p2p::DeviceIdentity;
use agentos_p2p::engine::{Engine, Out, PeerKey, RelayStore};
use agentos_p2p::roster::Roster;
use std::collections::{BTreeMap, BTreeSet, VecDeque};

/// A string every written record carries, to look for at the relay.
const MARKER: &str = "PLAINTEXT-MARKER";

#[derive(Debug, Clone)]
pub struct P2pConfig {
    pub devices: usize,
    pub steps: usize,
    pub loss_pct: u32,
    pub dup_pct: u32,
    pub crashes: bool,
    pub partitions: bool,
    /// Remove the last device (and rotate the key) halfway.
    pub rotate: bool,
    /// At most one device is online at any time.
    pub never_together: bool,
}

impl Default for P2pConfig {
    fn default() -> Self {
        P2pConfig {
            devices: 4,
            steps: 150,
            loss_pct: 20,
            dup_pct: 10,
            crashes: true,
            partitions: true,
            rotate: true,
            never_together: false,
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct P2pReport {
    pub writes: usize,
    pub envelopes: u64,
    pub final_sync_messages: u64,
}

struct Dev {
    id: DeviceIdentity,
    key: PeerKey,
    engine: Engine,
    online: bool,
    removed: bool,
    /// Persisted state: last snapshot and the sequence number.
    snapshot: Vec<u8>,
    relay_cursor: BTreeMap<PeerKey, usize>,
    incarnation: u64,
}

fn actor(device: usize, incarnation: u64) -> ActorId {
    let mut a = [0u8; 16];
    a[0] = 0x50 | device as u8;
    a[1..9].copy_from_slice(&incarnation.to_be_bytes());
    a[15] = 1;
    ActorId(a)
}

fn key_of(i: usize) -> DeviceIdentity {
    let mut seed = [0u8; 32];
    seed[0] = i as u8 + 1;
    seed[31] = 0xa5;
    DeviceIdentity::from_seed(seed)
}

/// Run one seed.
pub fn run_p2p(seed: u64, cfg: &P2pConfig) -> Result<P2pReport, String> {
    let mut rng = Rng::new(seed);
    let ws = "ws-sim";
    // Device 0 creates the workspace and pairs the others.
    let owner = key_of(0);
    let mut roster = Roster::create(&owner, "dev0");
    for i in 1..cfg.devices {
        roster
            .add(&owner, key_of(i).public_key(), &format!("dev{i}"))
            .map_err(|e| e.to_string())?;
    }
    let entries = roster.entries().to_vec();
    let mut devs: Vec<Dev> = (0..cfg.devices)
        .map(|i| {
            let id = key_of(i);
            let view = Roster::replay(&entries, Some(&id)).expect("the owner's log replays");
            let doc = WorkspaceDoc::new(actor(i, 0));
            let mut d = Dev {
                key: id.public_key(),
                engine: Engine::new(key_of(i), ws, doc, view, 0),
                id,
                online: true,
                removed: false,
                snapshot: Vec::new(),
                relay_cursor: BTreeMap::new(),
                incarnation: 0,
            };
            d.snapshot = d.engine.doc.save();
            d
        })
        .collect();
    let mut report = P2pReport::default();
    let mut net = Net {
        wire: VecDeque::new(),
        gossip: VecDeque::new(),
        relay: RelayStore::default(),
        cut: BTreeSet::new(),
    };
    let mut written: Vec<(usize, String)> = Vec::new();
    let mut removed_epoch: Option<(usize, u64)> = None;

    for step in 0..cfg.steps {
        // Churn.
        if cfg.never_together {
            let who = rng.below(cfg.devices);
            for (i, d) in devs.iter_mut().enumerate() {
                d.online = i == who && !d.removed;
            }
        } else if rng.chance(10) {
            let i = rng.below(cfg.devices);
            devs[i].online = !devs[i].online && !devs[i].removed;
        }
        if cfg.partitions && rng.chance(8) {
            let (a, b) = (rng.below(cfg.devices), rng.below(cfg.devices));
            if a != b {
                net.cut.insert((a.min(b), a.max(b)));
            }
        }
        if cfg.partitions && rng.chance(10) {
            net.cut.clear();
        }
        // Connections follow online state and cuts.
        for a in 0..cfg.devices {
            for b in 0..cfg.devices {
                if a == b {
                    continue;
                }
                let up = devs[a].online
                    && devs[b].online
                    && !devs[a].removed
                    && !devs[b].removed
                    && !net.cut.contains(&(a.min(b), a.max(b)));
                let is = devs[a].engine.connected_peers().contains(&devs[b].key);
                if up && !is {
                    let out = {
                        let k = devs[b].key;
                        devs[a].engine.connected(k)
                    };
                    route(&devs, a, out, &mut net, &mut report, &mut rng, cfg, true);
                } else if !up && is {
                    {
                        let k = devs[b].key;
                        devs[a].engine.disconnected(k)
                    };
                }
            }
        }
        // A write.
        let writer = rng.below(cfg.devices);
        if devs[writer].online && !devs[writer].removed {
            let name = format!("{MARKER}-{seed}-{step}");
            let rec = record(&name, writer, step as u64);
            let out = devs[writer]
                .engine
                .write(|doc| doc.upsert_agent(&rec))
                .map_err(|e| e.to_string())?;
            written.push((writer, name));
            report.writes += 1;
            route(
                &devs,
                writer,
                out,
                &mut net,
                &mut report,
                &mut rng,
                cfg,
                true,
            );
            if rng.chance(50) {
                devs[writer].snapshot = devs[writer].engine.doc.save();
            }
        }
        // Gossip arrives (in random order) at devices still online.
        let mut batch: Vec<(usize, Vec<u8>)> = net.gossip.drain(..).collect();
        for i in (1..batch.len()).rev() {
            batch.swap(i, rng.below(i + 1));
        }
        for (to, env) in batch {
            if devs[to].online && !devs[to].removed {
                let _ = devs[to].engine.receive_envelope(&env);
            }
        }
        // Relay pulls.
        for d in devs.iter_mut().filter(|d| d.online && !d.removed) {
            if rng.chance(30) {
                for env in net.relay.fetch(&mut d.relay_cursor) {
                    let _ = d.engine.receive_envelope(&env);
                }
            }
        }
        // Deliver some sync traffic; a lost message resets both sides.
        for _ in 0..rng.range(1, 20) {
            let Some((from, to, msg)) = net.wire.pop_front() else {
                break;
            };
            let linked = devs[from].engine.connected_peers().contains(&devs[to].key)
                && devs[to].engine.connected_peers().contains(&devs[from].key);
            if !linked {
                continue;
            }
            if rng.chance(cfg.loss_pct) {
                {
                    let k = devs[to].key;
                    devs[from].engine.disconnected(k)
                };
                {
                    let k = devs[from].key;
                    devs[to].engine.disconnected(k)
                };
                continue;
            }
            let from_key = devs[from].key;
            let out = devs[to].engine.receive_sync(from_key, &msg);
            route(&devs, to, out, &mut net, &mut report, &mut rng, cfg, true);
        }
        // Crashes keep only the snapshot and the sequence number.
        if cfg.crashes && rng.chance(4) {
            let i = rng.below(cfg.devices);
            if !devs[i].removed {
                let d = &mut devs[i];
                d.incarnation += 1;
                let doc = WorkspaceDoc::load(&d.snapshot, actor(i, d.incarnation))
                    .map_err(|e| e.to_string())?;
                let seq = d.engine.seq();
                let roster = d.engine.roster().clone();
                d.engine = Engine::new(key_of(i), ws, doc, roster, seq);
                d.relay_cursor.clear();
            }
        }
        // Halfway: the owner removes the last device and rotates the key.
        if cfg.rotate && cfg.devices >= 3 && step == cfg.steps / 2 {
            let gone = cfg.devices - 1;
            let mut r = devs[0].engine.roster().clone();
            r.remove(&owner, key_of(gone).public_key())
                .map_err(|e| e.to_string())?;
            let all = r.entries().to_vec();
            for (i, d) in devs.iter_mut().enumerate() {
                let view = Roster::replay(&all, Some(&d.id)).map_err(|e| e.to_string())?;
                if i == gone {
                    d.removed = true;
                    d.online = false;
                }
                d.engine.set_roster(view);
            }
            removed_epoch = Some((gone, r.epoch()));
        }
    }

    // Quiescence: everyone remaining online, no loss, no cuts.
    let live: Vec<usize> = (0..cfg.devices).filter(|i| !devs[*i].removed).collect();
    for &i in &live {
        devs[i].online = true;
        for env in net.relay.fetch(&mut devs[i].relay_cursor) {
            let _ = devs[i].engine.receive_envelope(&env);
        }
    }
    net.wire.clear();
    net.gossip.clear();
    net.cut.clear();
    let before: u64 = live
        .iter()
        .map(|i| devs[*i].engine.counters.sync_sent)
        .sum();
    for &a in &live {
        for &b in &live {
            if a != b {
                {
                    let k = devs[b].key;
                    devs[a].engine.disconnected(k)
                };
            }
        }
    }
    for &a in &live {
        for &b in &live {
            if a != b {
                let out = {
                    let k = devs[b].key;
                    devs[a].engine.connected(k)
                };
                route(&devs, a, out, &mut net, &mut report, &mut rng, cfg, false);
            }
        }
    }
    let mut guard = 0;
    while let Some((from, to, msg)) = net.wire.pop_front() {
        guard += 1;
        if guard > 100_000 {
            return Err("sync did not quiesce".into());
        }
        let from_key = devs[from].key;
        let out = devs[to].engine.receive_sync(from_key, &msg);
        route(&devs, to, out, &mut net, &mut report, &mut rng, cfg, false);
    }
    let after: u64 = live
        .iter()
        .map(|i| devs[*i].engine.counters.sync_sent)
        .sum();
    report.final_sync_messages = after - before;

    // Convergence.
    let mut heads: Vec<_> = Vec::new();
    for &i in &live {
        let mut h = devs[i].engine.doc.heads();
        h.sort();
        heads.push(h);
    }
    if heads.windows(2).any(|w| w[0] != w[1]) {
        return Err("devices did not converge".into());
    }
    // No gaps: every write reached the relay (writes happen online), so
    // every write is in the converged document, crashes or not.
    let names: BTreeSet<String> = devs[live[0]]
        .engine
        .doc
        .agents()
        .into_iter()
        .map(|a| a.name)
        .collect();
    for (w, name) in &written {
        if !names.contains(name) {
            return Err(format!("write {name} of device {w} is missing"));
        }
    }
    // The relay never held plaintext.
    let raw = net.relay.raw();
    if raw.windows(MARKER.len()).any(|w| w == MARKER.as_bytes()) {
        return Err("plaintext found at the relay".into());
    }
    // The removed device cannot read anything of the new epoch.
    if let Some((gone, epoch)) = removed_epoch
        && devs[gone].engine.roster().keys().contains_key(&epoch)
    {
        return Err("the removed device holds the new epoch key".into());
    }
    let pairs = (live.len() * (live.len() - 1)) as u64;
    if report.final_sync_messages > 40 * pairs.max(1) {
        return Err(format!(
            "{} sync messages to converge {} pairs",
            report.final_sync_messages, pairs
        ));
    }
    Ok(report)
}

/// Where a device's outputs go.
struct Net {
    /// Sync messages in flight: (from, to, message).
    wire: VecDeque<(usize, usize, Vec<u8>)>,
    /// Gossip deliveries in flight: (to, envelope).
    gossip: VecDeque<(usize, Vec<u8>)>,
    relay: RelayStore,
    cut: BTreeSet<(usize, usize)>,
}

#[allow(clippy::too_many_arguments)]
fn route(
    devs: &[Dev],
    from: usize,
    out: Vec<Out>,
    net: &mut Net,
    report: &mut P2pReport,
    rng: &mut Rng,
    cfg: &P2pConfig,
    chaos: bool,
) {
    let members = devs[0].engine.roster().authors_by_epoch().clone();
    for o in out {
        match o {
            Out::Gossip { envelope } => {
                report.envelopes += 1;
                for (to, d) in devs.iter().enumerate() {
                    if to == from
                        || !d.online
                        || d.removed
                        || net.cut.contains(&(from.min(to), from.max(to)))
                        || (chaos && rng.chance(cfg.loss_pct))
                    {
                        continue;
                    }
                    net.gossip.push_back((to, envelope.clone()));
                    if chaos && rng.chance(cfg.dup_pct) {
                        net.gossip.push_back((to, envelope.clone()));
                    }
                }
            }
            // The relay is reachable whenever the device is online.
            Out::Relay { envelope } => {
                let _ = net.relay.put(&envelope, &members);
            }
            Out::Sync { to, message } => {
                if let Some(t) = devs.iter().position(|d| d.key == to) {
                    net.wire.push_back((from, t, message));
                }
            }
        }
    }
}

fn record(name: &str, device: usize, step: u64) -> AgentRecord {
    AgentRecord {
        id: AgentId(format!("a{device}-{step}")),
        name: name.to_owned(),
        agent_type: "shell".to_owned(),
        command: vec!["bash".to_owned()],
        cwd: "/w".to_owned(),
        workspace: "ws".to_owned(),
        host_device: format!("dev{device}"),
        env: vec![],
        created_at_ms: step,
        pid: None,
        resume_id: None,
        removed_at_ms: None,
        worktree: None,
        state: StateTransition::initial(step),
        transitions: Vec::new(),
    }
}
