//! The simulation driver: configuration, the chaotic phase, anti-entropy
//! until quiescence, and the invariant checks.
//!
//! Everything is a pure function of `(seed, config)`: the only source of
//! randomness is [`Rng`], time is the step counter, and the "network" and
//! "disks" are plain in-memory values.

use std::collections::BTreeMap;
use std::fmt;

use agentos_crdt::{ChangeHash, CrdtError};

use crate::device::Device;
use crate::net::{Faults, Msg, Network, Verdict};
use crate::rng::Rng;

/// Probability (percent) that an operation is acknowledged, i.e. persisted
/// right after it is performed, before it counts as done.
const ACK_PCT: u32 = 50;
/// Per step and device probability of a background snapshot.
const BACKGROUND_PERSIST_PCT: u32 = 8;
/// Per step probability that a random device crashes (when enabled).
const CRASH_PCT: u32 = 4;
/// Per step probability that a new partition starts (when enabled).
const PARTITION_PCT: u32 = 8;
/// Length of a partition window, in steps.
const PARTITION_STEPS: (usize, usize) = (3, 20);
/// Per step probability that the device which just wrote pushes its heads.
const PUSH_PCT: u32 = 60;
/// Safety valve for draining the network in one anti-entropy round.
const MAX_DELIVERIES_PER_ROUND: usize = 1_000_000;

/// Parameters of one simulation run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimConfig {
    /// Number of devices (at least 2; the scenarios use 2–6).
    pub devices: usize,
    /// Number of random operations (one per step of the chaotic phase).
    pub ops: usize,
    /// Percentage of messages lost during the chaotic phase (0–100).
    pub loss_pct: u32,
    /// Percentage of messages the network delivers twice (0–100).
    pub dup_pct: u32,
    /// Cut random device pairs for a window of steps, then heal them.
    pub partitions: bool,
    /// Crash random devices, which restart from their last snapshot.
    pub crashes: bool,
    /// Maximum number of anti-entropy rounds after the chaotic phase.
    pub max_rounds: usize,
    /// Fault injection for testing the checker: everything this device
    /// sends is silently discarded, even after healing.
    pub drop_all_from: Option<usize>,
    /// Give a restarted device a new actor id (`true`, the default). With
    /// `false` it keeps writing as its old actor, which can reuse sequence
    /// numbers of changes it sent before crashing but never persisted.
    pub fresh_actor_on_restart: bool,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            devices: 4,
            ops: 40,
            loss_pct: 10,
            dup_pct: 5,
            partitions: true,
            crashes: true,
            max_rounds: 10,
            drop_all_from: None,
            fresh_actor_on_restart: true,
        }
    }
}

impl SimConfig {
    fn validate(&self) -> Result<(), SimFailure> {
        let problem = if self.devices < 2 {
            Some(format!("need at least 2 devices, got {}", self.devices))
        } else if self.devices > 64 {
            Some(format!("at most 64 devices, got {}", self.devices))
        } else if self.loss_pct > 100 || self.dup_pct > 100 {
            Some(format!(
                "percentages must be 0-100 (loss {}, dup {})",
                self.loss_pct, self.dup_pct
            ))
        } else if self.drop_all_from.is_some_and(|d| d >= self.devices) {
            Some(format!(
                "drop_all_from {:?} is not a device index",
                self.drop_all_from
            ))
        } else {
            None
        };
        match problem {
            Some(p) => Err(SimFailure::InvalidConfig(p)),
            None => Ok(()),
        }
    }

    /// The message budget for a run that needed `rounds` anti-entropy
    /// rounds: `50 × ops + devices² × max(rounds, 1)`.
    pub fn message_bound(&self, rounds: usize) -> u64 {
        50 * self.ops as u64 + (self.devices * self.devices * rounds.max(1)) as u64
    }
}

/// Statistics of a successful run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SimReport {
    /// Operations attempted.
    pub ops: u64,
    /// Operations that committed a change (the rest were no-ops, e.g.
    /// removing an already removed agent).
    pub changes: u64,
    /// Operations acknowledged (persisted before counting as done).
    pub acked: u64,
    /// Messages sent by devices (lost ones included, network duplicates not).
    pub messages: u64,
    /// Messages delivered (network duplicates included).
    pub delivered: u64,
    /// Messages lost, partitioned or black-holed.
    pub dropped: u64,
    /// Messages the network duplicated.
    pub duplicated: u64,
    /// Bytes sent by devices.
    pub bytes: u64,
    /// Encoded changes shipped in "here are the changes" messages
    /// (compare with `changes` to see the redundancy of the protocol).
    pub changes_sent: u64,
    /// Anti-entropy rounds run after the chaotic phase.
    pub rounds: u64,
    /// Crashes (each followed by a restart from the last snapshot).
    pub crashes: u64,
    /// Partition windows opened.
    pub partitions: u64,
    /// Snapshots written.
    pub persists: u64,
}

/// Why a run failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SimFailure {
    /// The configuration is unusable.
    InvalidConfig(String),
    /// The document refused an operation, a message or a reload.
    Crdt {
        /// Step of the chaotic phase, or `None` during anti-entropy.
        step: Option<u64>,
        /// The device that got the error.
        device: usize,
        /// What it was doing.
        action: String,
        /// The error.
        error: String,
    },
    /// Heads still differ after the maximum number of anti-entropy rounds.
    NotConverged {
        /// Rounds run.
        rounds: u64,
        /// Which devices differ and how.
        detail: String,
    },
    /// Heads are identical but the materialized state differs.
    StateDiverged {
        /// Which devices and which records differ.
        detail: String,
    },
    /// A change that was part of a persisted snapshot is missing.
    LostPersistedOp {
        /// The missing change.
        hash: String,
        /// Device whose snapshot contained it.
        persisted_by: usize,
        /// Device lacking it.
        missing_on: usize,
        /// What the change was, when it is a known local operation.
        op: String,
    },
    /// More messages than the budget.
    TooManyMessages {
        /// Messages sent.
        messages: u64,
        /// The budget ([`SimConfig::message_bound`]).
        bound: u64,
    },
}

impl fmt::Display for SimFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SimFailure::InvalidConfig(p) => write!(f, "invalid config: {p}"),
            SimFailure::Crdt {
                step,
                device,
                action,
                error,
            } => {
                match step {
                    Some(s) => write!(f, "crdt error at step {s}")?,
                    None => write!(f, "crdt error during anti-entropy")?,
                }
                write!(f, " on device {device} ({action}): {error}")
            }
            SimFailure::NotConverged { rounds, detail } => {
                write!(f, "not converged after {rounds} rounds: {detail}")
            }
            SimFailure::StateDiverged { detail } => {
                write!(f, "identical heads but diverged state: {detail}")
            }
            SimFailure::LostPersistedOp {
                hash,
                persisted_by,
                missing_on,
                op,
            } => write!(
                f,
                "lost persisted op {hash} (persisted by device {persisted_by}, missing on device {missing_on}): {op}"
            ),
            SimFailure::TooManyMessages { messages, bound } => {
                write!(f, "{messages} messages exceed the bound of {bound}")
            }
        }
    }
}

impl std::error::Error for SimFailure {}

/// Run one simulation: a chaotic phase of `cfg.ops` steps, then healing and
/// anti-entropy until every device has identical heads, then the invariant
/// checks. Deterministic: the same `(seed, cfg)` always gives the same
/// result.
///
/// Invariants checked at quiescence:
/// * convergence: identical sorted heads, `agents()` and `sessions()` on
///   every device;
/// * no lost persisted ops: every change covered by any snapshot any device
///   ever persisted (before or after crashes) is present everywhere;
/// * the message count stays within [`SimConfig::message_bound`].
pub fn run(seed: u64, cfg: &SimConfig) -> Result<SimReport, SimFailure> {
    cfg.validate()?;
    let mut sim = Sim::new(seed, cfg);
    sim.chaos()?;
    sim.quiesce()?;
    sim.check()?;
    Ok(sim.report)
}

struct Sim<'a> {
    cfg: &'a SimConfig,
    rng: Rng,
    devices: Vec<Device>,
    net: Network,
    faults: Faults,
    /// Current step of the chaotic phase (`None` once it is over).
    step: Option<u64>,
    /// Heads of the latest snapshot of each (device, incarnation). Within
    /// an incarnation the document only grows, so the latest snapshot
    /// contains every earlier one; across incarnations each one is kept,
    /// so a restart that lost data is still caught.
    persisted: BTreeMap<(usize, u64), Vec<ChangeHash>>,
    /// Description of each change made by a local operation.
    op_log: BTreeMap<ChangeHash, String>,
    report: SimReport,
}

impl<'a> Sim<'a> {
    fn new(seed: u64, cfg: &'a SimConfig) -> Self {
        let mut sim = Sim {
            cfg,
            rng: Rng::new(seed),
            devices: (0..cfg.devices).map(Device::new).collect(),
            net: Network::default(),
            faults: Faults {
                loss_pct: cfg.loss_pct,
                dup_pct: cfg.dup_pct,
                drop_all_from: cfg.drop_all_from,
            },
            step: Some(0),
            persisted: BTreeMap::new(),
            op_log: BTreeMap::new(),
            report: SimReport::default(),
        };
        // The genesis snapshot every device starts with is persisted too.
        for d in 0..cfg.devices {
            sim.persist(d);
        }
        sim
    }

    fn crdt_err(&self, device: usize, action: impl Into<String>, e: CrdtError) -> SimFailure {
        SimFailure::Crdt {
            step: self.step,
            device,
            action: action.into(),
            error: e.to_string(),
        }
    }

    fn persist(&mut self, d: usize) {
        let heads = self.devices[d].persist();
        let incarnation = self.devices[d].incarnation;
        self.persisted.insert((d, incarnation), heads);
        self.report.persists += 1;
    }

    fn send(&mut self, from: usize, to: usize, msg: Msg) {
        if let Msg::Changes { changes } = &msg {
            self.report.changes_sent += changes.len() as u64;
        }
        self.report.bytes += self.net.send(from, to, msg) as u64;
        self.report.messages += 1;
    }

    fn send_heads(&mut self, from: usize, to: usize) {
        let msg = self.devices[from].sync_msg(false);
        self.send(from, to, msg);
    }

    /// A random peer of `d`.
    fn peer(&mut self, d: usize) -> usize {
        let p = self.rng.below(self.cfg.devices - 1);
        if p >= d { p + 1 } else { p }
    }

    /// Take one random message out of the network and deliver it (or not).
    fn deliver_one(&mut self) -> Result<(), SimFailure> {
        let Some(env) = self.net.take_random(&mut self.rng) else {
            return Ok(());
        };
        let verdict = self.net.verdict(
            &env,
            self.faults,
            self.step.unwrap_or(u64::MAX),
            &mut self.rng,
        );
        match verdict {
            Verdict::Lost | Verdict::Partitioned | Verdict::BlackHoled => {
                self.report.dropped += 1;
                return Ok(());
            }
            Verdict::DeliverAndDuplicate => self.report.duplicated += 1,
            Verdict::Deliver => {}
        }
        self.report.delivered += 1;
        let answers = match self.devices[env.to].handle(&env.msg) {
            Ok(a) => a,
            Err(e) => {
                let what = match &env.msg {
                    Msg::Sync { .. } => "answering heads",
                    Msg::Changes { .. } => "applying changes",
                };
                return Err(self.crdt_err(env.to, format!("{what} from device {}", env.from), e));
            }
        };
        for msg in answers {
            self.send(env.to, env.from, msg);
        }
        Ok(())
    }

    /// The chaotic phase: one random operation per step, with gossip,
    /// random partial delivery, loss, duplication, partitions and crashes.
    fn chaos(&mut self) -> Result<(), SimFailure> {
        let n = self.cfg.devices;
        for step in 0..self.cfg.ops as u64 {
            self.step = Some(step);
            let now_ms = (step + 1) * 100;

            if self.cfg.partitions {
                self.net.heal_expired(step);
                if self.rng.chance(PARTITION_PCT) {
                    let a = self.rng.below(n);
                    let b = self.peer(a);
                    let len = self.rng.range(PARTITION_STEPS.0, PARTITION_STEPS.1) as u64;
                    self.net.cut(a, b, step + len);
                    self.report.partitions += 1;
                }
            }

            // One user operation on a random device.
            let d = self.rng.below(n);
            let outcome = match self.devices[d].random_op(&mut self.rng, now_ms + d as u64) {
                Ok(o) => o,
                Err(e) => return Err(self.crdt_err(d, "random operation", e)),
            };
            self.report.ops += 1;
            if let Some(hash) = outcome.change {
                self.report.changes += 1;
                self.op_log.insert(hash, outcome.label);
                if self.rng.chance(ACK_PCT) {
                    // The op only counts as acknowledged once it is on disk.
                    self.persist(d);
                    self.report.acked += 1;
                }
            }

            // Gossip: the writer sometimes pushes its heads, and one random
            // pair always exchanges heads.
            if self.rng.chance(PUSH_PCT) {
                let p = self.peer(d);
                self.send_heads(d, p);
            }
            let a = self.rng.below(n);
            let b = self.peer(a);
            self.send_heads(a, b);

            // Deliver a random part of what is in flight, in random order.
            let deliveries = self.rng.below(self.net.in_flight() + 1);
            for _ in 0..deliveries {
                self.deliver_one()?;
            }

            for dev in 0..n {
                if self.rng.chance(BACKGROUND_PERSIST_PCT) {
                    self.persist(dev);
                }
            }

            if self.cfg.crashes && self.rng.chance(CRASH_PCT) {
                let victim = self.rng.below(n);
                if let Err(e) =
                    self.devices[victim].crash_and_restart(self.cfg.fresh_actor_on_restart)
                {
                    return Err(self.crdt_err(victim, "restarting from the last snapshot", e));
                }
                self.report.crashes += 1;
            }
        }
        Ok(())
    }

    fn converged(&mut self) -> bool {
        let first = self.devices[0].sorted_heads();
        self.devices[1..]
            .iter_mut()
            .all(|d| d.sorted_heads() == first)
    }

    /// Heal everything, stop loss, then run anti-entropy rounds (everyone
    /// sends its heads to everyone, the network is drained) until all
    /// heads are identical or `max_rounds` is reached. Duplication and
    /// reordering stay on; a black-holed sender stays black-holed.
    fn quiesce(&mut self) -> Result<(), SimFailure> {
        self.step = None;
        self.net.heal_all();
        self.faults.loss_pct = 0;
        let n = self.cfg.devices;
        for _ in 0..self.cfg.max_rounds {
            if self.converged() {
                return Ok(());
            }
            self.report.rounds += 1;
            for a in 0..n {
                for b in 0..n {
                    if a != b {
                        self.send_heads(a, b);
                    }
                }
            }
            let mut budget = MAX_DELIVERIES_PER_ROUND;
            while self.net.in_flight() > 0 && budget > 0 {
                self.deliver_one()?;
                budget -= 1;
            }
        }
        if self.converged() {
            return Ok(());
        }
        let first = self.devices[0].sorted_heads();
        let mut detail = Vec::new();
        for d in 1..n {
            let heads = self.devices[d].sorted_heads();
            if heads != first {
                detail.push(format!(
                    "device {d} heads [{}] != device 0 heads [{}]",
                    short_hashes(&heads),
                    short_hashes(&first)
                ));
            }
        }
        Err(SimFailure::NotConverged {
            rounds: self.report.rounds,
            detail: detail.join("; "),
        })
    }

    fn check(&mut self) -> Result<(), SimFailure> {
        // Heads are identical (quiesce guarantees it); the materialized
        // state must be too.
        let agents0 = self.devices[0].doc.agents();
        let sessions0 = self.devices[0].doc.sessions();
        for d in 1..self.devices.len() {
            let agents = self.devices[d].doc.agents();
            if agents != agents0 {
                let ids = |v: &[agentos_crdt::AgentRecord]| {
                    v.iter().map(|a| a.id.0.clone()).collect::<Vec<_>>()
                };
                let first_diff = agents0
                    .iter()
                    .zip(&agents)
                    .find(|(a, b)| a != b)
                    .map(|(a, b)| format!("; first difference: {a:?} vs {b:?}"))
                    .unwrap_or_default();
                return Err(SimFailure::StateDiverged {
                    detail: format!(
                        "agents of device {d} {:?} differ from device 0 {:?}{first_diff}",
                        ids(&agents),
                        ids(&agents0)
                    ),
                });
            }
            if self.devices[d].doc.sessions() != sessions0 {
                return Err(SimFailure::StateDiverged {
                    detail: format!("sessions of device {d} differ from device 0"),
                });
            }
        }

        // Every persisted change is present everywhere. A change hash covers
        // its dependencies, so identical heads (checked above) mean
        // identical change sets and checking one device checks them all;
        // the first and the last are checked, which keeps this cheap.
        let mut persisted: BTreeMap<ChangeHash, usize> = BTreeMap::new();
        for (&(by, _), heads) in &self.persisted {
            for h in heads {
                persisted.entry(*h).or_insert(by);
            }
        }
        let last = self.devices.len() - 1;
        for d in [0, last] {
            let doc = &mut self.devices[d].doc;
            let total = doc.changes_since(&[]).len();
            for (hash, by) in &persisted {
                // Unknown hashes are ignored by `changes_since`, so a known
                // change (which excludes itself) yields strictly fewer.
                if doc.changes_since(&[*hash]).len() >= total {
                    return Err(SimFailure::LostPersistedOp {
                        hash: hash.to_string(),
                        persisted_by: *by,
                        missing_on: d,
                        op: self
                            .op_log
                            .get(hash)
                            .cloned()
                            .unwrap_or_else(|| "not a logged local operation".to_owned()),
                    });
                }
            }
        }

        let bound = self.cfg.message_bound(self.report.rounds as usize);
        if self.report.messages > bound {
            return Err(SimFailure::TooManyMessages {
                messages: self.report.messages,
                bound,
            });
        }
        Ok(())
    }
}

fn short_hashes(h: &[ChangeHash]) -> String {
    h.iter()
        .map(|h| h.to_string()[..8].to_owned())
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn converged_sim(cfg: &SimConfig) -> Sim<'_> {
        let mut sim = Sim::new(11, cfg);
        sim.chaos().unwrap();
        sim.quiesce().unwrap();
        sim.check().unwrap();
        sim
    }

    #[test]
    fn checker_catches_a_lost_persisted_op() {
        let cfg = SimConfig {
            devices: 2,
            ops: 6,
            ..SimConfig::default()
        };
        let mut sim = converged_sim(&cfg);
        // A change that was persisted but never reached any replica.
        let mut stray = Device::new(1);
        let op = stray.random_op(&mut Rng::new(5), 1).unwrap();
        let lost = stray.persist();
        assert_eq!(Some(lost[0]), op.change);
        sim.persisted.insert((1, 99), lost);
        match sim.check() {
            Err(SimFailure::LostPersistedOp {
                hash, persisted_by, ..
            }) => {
                assert_eq!(hash, op.change.unwrap().to_string());
                assert_eq!(persisted_by, 1);
            }
            other => panic!("expected LostPersistedOp, got {other:?}"),
        }
    }

    #[test]
    fn checker_catches_too_many_messages() {
        let cfg = SimConfig {
            devices: 3,
            ops: 6,
            ..SimConfig::default()
        };
        let mut sim = converged_sim(&cfg);
        let bound = cfg.message_bound(sim.report.rounds as usize);
        sim.report.messages = bound + 1;
        assert_eq!(
            sim.check(),
            Err(SimFailure::TooManyMessages {
                messages: bound + 1,
                bound
            })
        );
    }

    #[test]
    fn message_bound_formula() {
        let cfg = SimConfig {
            devices: 3,
            ops: 10,
            ..SimConfig::default()
        };
        assert_eq!(cfg.message_bound(0), 500 + 9);
        assert_eq!(cfg.message_bound(2), 500 + 18);
    }
}
