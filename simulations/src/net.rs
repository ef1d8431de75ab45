//! The simulated network: an in-memory bag of messages in flight.
//!
//! Nothing here does IO. Messages are queued by [`Network::send`] and taken
//! out again, in random order, by [`Network::take_random`]; the caller then
//! decides (with [`Network::verdict`]) whether the message is lost, cut by a
//! partition, discarded by a deliberately broken sender, or delivered, and
//! whether the network duplicates it.

use agentos_crdt::ChangeHash;

use crate::rng::Rng;

/// Fixed per-message overhead counted in the byte total (framing, ids).
const HEADER_BYTES: usize = 8;

/// One message of the replication protocol.
#[derive(Debug, Clone)]
pub(crate) enum Msg {
    /// "I have heads `heads`": the receiver answers with the changes the
    /// sender lacks. Unless `reply` is set, a receiver that sees heads it
    /// does not have itself also answers with its own heads, so that it can
    /// be sent what it lacks in turn (replies are never answered that way,
    /// which bounds every exchange to four messages).
    ///
    /// `have` lists a few earlier heads of the sender. A receiver ignores
    /// hashes it does not know, so without them a single new local change
    /// of the sender would make it send the whole history; with them it
    /// usually finds a recent common state.
    Sync {
        heads: Vec<ChangeHash>,
        have: Vec<ChangeHash>,
        reply: bool,
    },
    /// "Here are the changes since your heads."
    Changes { changes: Vec<Vec<u8>> },
}

impl Msg {
    /// Size of the message on the wire.
    pub(crate) fn wire_bytes(&self) -> usize {
        HEADER_BYTES
            + match self {
                Msg::Sync { heads, have, .. } => (heads.len() + have.len()) * 32,
                Msg::Changes { changes } => changes.iter().map(|c| 4 + c.len()).sum(),
            }
    }
}

/// A message in flight.
#[derive(Debug, Clone)]
pub(crate) struct Envelope {
    pub(crate) from: usize,
    pub(crate) to: usize,
    pub(crate) msg: Msg,
    /// A copy made by the network; copies are never duplicated again.
    pub(crate) copy: bool,
}

/// A link between two devices that is cut (both directions) until a step.
#[derive(Debug, Clone, Copy)]
struct Cut {
    a: usize,
    b: usize,
    until_step: u64,
}

/// What happens to a message taken out of the network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Delivered once.
    Deliver,
    /// Delivered, and a copy stays in flight to be delivered again later.
    DeliverAndDuplicate,
    /// Lost at random.
    Lost,
    /// Dropped because the link is partitioned.
    Partitioned,
    /// Dropped because the sender is configured as a black hole.
    BlackHoled,
}

/// Fault parameters currently in force.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Faults {
    pub(crate) loss_pct: u32,
    pub(crate) dup_pct: u32,
    /// Everything this device sends is silently discarded, always.
    pub(crate) drop_all_from: Option<usize>,
}

/// Messages in flight plus the current partitions.
#[derive(Debug, Default)]
pub(crate) struct Network {
    queue: Vec<Envelope>,
    cuts: Vec<Cut>,
}

impl Network {
    /// Put a message in flight; returns its wire size.
    pub(crate) fn send(&mut self, from: usize, to: usize, msg: Msg) -> usize {
        let bytes = msg.wire_bytes();
        self.queue.push(Envelope {
            from,
            to,
            msg,
            copy: false,
        });
        bytes
    }

    /// Number of messages in flight.
    pub(crate) fn in_flight(&self) -> usize {
        self.queue.len()
    }

    /// Remove a uniformly chosen message from the network (this is where
    /// reordering comes from). `None` when nothing is in flight.
    pub(crate) fn take_random(&mut self, rng: &mut Rng) -> Option<Envelope> {
        if self.queue.is_empty() {
            return None;
        }
        let i = rng.below(self.queue.len());
        Some(self.queue.swap_remove(i))
    }

    /// Decide the fate of `env`; a duplicate is put back in flight here.
    pub(crate) fn verdict(
        &mut self,
        env: &Envelope,
        faults: Faults,
        step: u64,
        rng: &mut Rng,
    ) -> Verdict {
        if faults.drop_all_from == Some(env.from) {
            return Verdict::BlackHoled;
        }
        if self.is_cut(env.from, env.to, step) {
            return Verdict::Partitioned;
        }
        if rng.chance(faults.loss_pct) {
            return Verdict::Lost;
        }
        if !env.copy && rng.chance(faults.dup_pct) {
            let mut copy = env.clone();
            copy.copy = true;
            self.queue.push(copy);
            return Verdict::DeliverAndDuplicate;
        }
        Verdict::Deliver
    }

    /// Cut the link between `a` and `b` until `until_step` (exclusive).
    pub(crate) fn cut(&mut self, a: usize, b: usize, until_step: u64) {
        self.cuts.push(Cut { a, b, until_step });
    }

    /// Forget the cuts whose window is over.
    pub(crate) fn heal_expired(&mut self, step: u64) {
        self.cuts.retain(|c| c.until_step > step);
    }

    /// Heal every partition now.
    pub(crate) fn heal_all(&mut self) {
        self.cuts.clear();
    }

    fn is_cut(&self, from: usize, to: usize, step: u64) -> bool {
        self.cuts
            .iter()
            .any(|c| c.until_step > step && ((c.a, c.b) == (from, to) || (c.a, c.b) == (to, from)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn faults(loss_pct: u32, dup_pct: u32) -> Faults {
        Faults {
            loss_pct,
            dup_pct,
            drop_all_from: None,
        }
    }

    fn sync() -> Msg {
        Msg::Sync {
            heads: vec![],
            have: vec![],
            reply: false,
        }
    }

    #[test]
    fn partitions_cut_both_ways_until_healed() {
        let mut rng = Rng::new(1);
        let mut net = Network::default();
        net.cut(0, 1, 10);
        let env = Envelope {
            from: 1,
            to: 0,
            msg: sync(),
            copy: false,
        };
        assert_eq!(
            net.verdict(&env, faults(0, 0), 9, &mut rng),
            Verdict::Partitioned
        );
        assert_eq!(
            net.verdict(&env, faults(0, 0), 10, &mut rng),
            Verdict::Deliver
        );
        net.heal_expired(10);
        assert!(net.cuts.is_empty());
    }

    #[test]
    fn duplicates_are_not_duplicated_again() {
        let mut rng = Rng::new(1);
        let mut net = Network::default();
        net.send(0, 1, sync());
        let env = net.take_random(&mut rng).unwrap();
        assert_eq!(
            net.verdict(&env, faults(0, 100), 0, &mut rng),
            Verdict::DeliverAndDuplicate
        );
        let copy = net.take_random(&mut rng).unwrap();
        assert!(copy.copy);
        assert_eq!(
            net.verdict(&copy, faults(0, 100), 0, &mut rng),
            Verdict::Deliver
        );
        assert_eq!(net.in_flight(), 0);
    }

    #[test]
    fn black_hole_wins_over_everything() {
        let mut rng = Rng::new(1);
        let mut net = Network::default();
        let env = Envelope {
            from: 2,
            to: 0,
            msg: sync(),
            copy: false,
        };
        let f = Faults {
            drop_all_from: Some(2),
            ..faults(0, 100)
        };
        assert_eq!(net.verdict(&env, f, 0, &mut rng), Verdict::BlackHoled);
        assert_eq!(
            net.verdict(&env, faults(100, 0), 0, &mut rng),
            Verdict::Lost
        );
    }
}
