//! A web viewer's queue, bounded twice: in frames, and in bytes that are
//! queued or not yet handed to the viewer's socket (its backlog). Counting
//! bytes is what notices a slow viewer early: a queue of 256 frames of up to
//! 64 KiB each can hide many seconds of output at a slow viewer's pace, and
//! the snapshot that resyncs it would wait behind all of it.
//!
//! The agent queues live output with [`WireTx::try_output`], which refuses a
//! frame that would take the *live* backlog over its budget (the viewer is
//! then lagging and gets a snapshot once [`WireTx::can_resync`]). Replays
//! and snapshots go with [`WireTx::try_force`], bounded by the frame count
//! only and counted apart: a large snapshot still being written never makes
//! the live output after it count as lag (which would answer it with
//! another snapshot, and so on).
//! The connection takes each event with [`WireRx::recv`] and holds the
//! returned [`Backlog`] until the socket has taken the frame; dropping it
//! releases the frame's bytes.

use crate::agent::WireEvent;
use bytes::Bytes;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::mpsc;

/// Frames a viewer's queue holds at most.
pub const WIRE_FRAMES: usize = 256;
/// Bytes a viewer may have queued or unsent before it counts as lagging
/// (25 ms of output from an agent printing 10 MB/s; about 2.5 s of a viewer
/// reading 0.2 MB/s).
pub const WIRE_BACKLOG: u64 = 256 * 1024;

/// Why a frame was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The frame queue is full or the byte budget would be exceeded.
    Full,
    /// The viewer is gone.
    Closed,
}

/// The agent's end of a viewer's queue.
#[derive(Debug, Clone)]
pub struct WireTx {
    tx: mpsc::Sender<Queued>,
    counts: Arc<Counts>,
    budget: u64,
}

/// The connection's end of a viewer's queue.
#[derive(Debug)]
pub struct WireRx {
    rx: mpsc::Receiver<Queued>,
    counts: Arc<Counts>,
}

/// Bytes queued or not yet taken by the socket: live output, and forced
/// frames (replays, snapshots).
#[derive(Debug, Default)]
struct Counts {
    live: AtomicU64,
    forced: AtomicU64,
}

impl Counts {
    fn of(&self, forced: bool) -> &AtomicU64 {
        if forced { &self.forced } else { &self.live }
    }
}

/// An event in the queue, and which count its bytes are in.
#[derive(Debug)]
struct Queued {
    ev: WireEvent,
    forced: bool,
}

/// The bytes of one received frame, still counted in the viewer's backlog
/// until this is dropped (after the socket took the frame).
#[derive(Debug)]
pub struct Backlog {
    bytes: u64,
    forced: bool,
    counts: Arc<Counts>,
}

impl Drop for Backlog {
    fn drop(&mut self) {
        self.counts
            .of(self.forced)
            .fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

/// A viewer's queue of at most `frames` events and `budget` bytes of live
/// output.
pub fn wire_queue(frames: usize, budget: u64) -> (WireTx, WireRx) {
    let (tx, rx) = mpsc::channel(frames.max(1));
    let counts = Arc::new(Counts::default());
    (
        WireTx {
            tx,
            counts: counts.clone(),
            budget,
        },
        WireRx { rx, counts },
    )
}

impl WireTx {
    /// Queue a live output frame, unless the frame queue is full or the
    /// frame would take the live backlog over the budget (a frame larger
    /// than the whole budget still goes when no live output is pending).
    pub fn try_output(&self, frame: Bytes) -> Result<(), Refused> {
        if self.tx.is_closed() {
            return Err(Refused::Closed);
        }
        let live = self.counts.live.load(Ordering::Acquire);
        if live > 0 && live + frame.len() as u64 > self.budget {
            return Err(Refused::Full);
        }
        self.send(WireEvent::Frame(frame), false)
    }

    /// Queue a frame whatever the backlog (a replay or a snapshot), unless
    /// the frame queue is full.
    pub fn try_force(&self, frame: Bytes) -> Result<(), Refused> {
        self.send(WireEvent::Frame(frame), true)
    }

    fn send(&self, ev: WireEvent, forced: bool) -> Result<(), Refused> {
        let n = match &ev {
            WireEvent::Frame(f) => f.len() as u64,
            WireEvent::Exited { .. } => 0,
        };
        let count = self.counts.of(forced);
        // Counted before the send: the receiver may release it at once.
        count.fetch_add(n, Ordering::AcqRel);
        self.tx.try_send(Queued { ev, forced }).map_err(|e| {
            count.fetch_sub(n, Ordering::AcqRel);
            match e {
                mpsc::error::TrySendError::Full(_) => Refused::Full,
                mpsc::error::TrySendError::Closed(_) => Refused::Closed,
            }
        })
    }

    /// Queue a non-frame event (`Exited`).
    pub fn try_event(&self, ev: WireEvent) -> Result<(), Refused> {
        self.send(ev, true)
    }

    /// Whether a lagging viewer has room for its resync snapshot: half its
    /// frame queue free and at most half its byte budget pending, forced
    /// frames included (a viewer that just freed one slot would lag again
    /// at once, and snapshots must not pile up).
    pub fn can_resync(&self) -> bool {
        self.tx.capacity() * 2 >= self.tx.max_capacity() && self.backlog() * 2 <= self.budget
    }

    /// Free frame slots.
    pub fn capacity(&self) -> usize {
        self.tx.capacity()
    }

    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }

    /// Bytes queued or not yet handed to the socket (live and forced).
    pub fn backlog(&self) -> u64 {
        self.counts.live.load(Ordering::Acquire) + self.counts.forced.load(Ordering::Acquire)
    }
}

impl WireRx {
    /// The next event, and the hold on its bytes (drop it once the socket
    /// has taken the frame).
    pub async fn recv(&mut self) -> Option<(WireEvent, Backlog)> {
        let q = self.rx.recv().await?;
        Some(self.held(q))
    }

    /// The next event if one is queued now (to batch frames into one write).
    pub fn try_recv(&mut self) -> Option<(WireEvent, Backlog)> {
        let q = self.rx.try_recv().ok()?;
        Some(self.held(q))
    }

    fn held(&self, q: Queued) -> (WireEvent, Backlog) {
        let bytes = match &q.ev {
            WireEvent::Frame(f) => f.len() as u64,
            WireEvent::Exited { .. } => 0,
        };
        (
            q.ev,
            Backlog {
                bytes,
                forced: q.forced,
                counts: self.counts.clone(),
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(n: usize) -> Bytes {
        Bytes::from(vec![0u8; n])
    }

    #[tokio::test]
    async fn the_byte_budget_bounds_live_output_until_the_socket_takes_it() {
        let (tx, mut rx) = wire_queue(16, 100);
        tx.try_output(frame(60)).unwrap();
        assert_eq!(tx.try_output(frame(60)), Err(Refused::Full));
        tx.try_output(frame(40)).unwrap();
        assert_eq!(tx.backlog(), 100);
        assert!(!tx.can_resync());
        // Received but not yet written: still counted.
        let (_, first) = rx.recv().await.unwrap();
        assert_eq!(tx.try_output(frame(1)), Err(Refused::Full));
        drop(first);
        assert_eq!(tx.backlog(), 40);
        assert!(tx.can_resync());
        tx.try_output(frame(60)).unwrap();
    }

    #[tokio::test]
    async fn a_frame_larger_than_the_budget_goes_when_nothing_is_pending() {
        let (tx, mut rx) = wire_queue(4, 100);
        tx.try_output(frame(500)).unwrap();
        assert_eq!(tx.try_output(frame(1)), Err(Refused::Full));
        drop(rx.recv().await.unwrap());
        assert_eq!(tx.backlog(), 0);
    }

    #[tokio::test]
    async fn forced_frames_ignore_the_bytes_but_not_the_frame_count() {
        let (tx, rx) = wire_queue(2, 10);
        tx.try_force(frame(100)).unwrap();
        tx.try_force(frame(100)).unwrap();
        assert_eq!(tx.try_force(frame(1)), Err(Refused::Full));
        assert_eq!(tx.backlog(), 200);
        drop(rx);
        assert_eq!(tx.try_output(frame(1)), Err(Refused::Closed));
        assert_eq!(tx.try_force(frame(1)), Err(Refused::Closed));
        assert_eq!(tx.backlog(), 200);
    }

    #[tokio::test]
    async fn a_big_snapshot_in_flight_does_not_make_live_output_lag() {
        let (tx, mut rx) = wire_queue(16, 100);
        tx.try_force(frame(500)).unwrap();
        // Live output keeps its own budget behind the snapshot.
        tx.try_output(frame(60)).unwrap();
        tx.try_output(frame(40)).unwrap();
        assert_eq!(tx.try_output(frame(1)), Err(Refused::Full));
        // No new snapshot while the first one is still unwritten.
        assert!(!tx.can_resync());
        drop(rx.recv().await.unwrap());
        assert_eq!(tx.backlog(), 100);
    }

    #[tokio::test]
    async fn resync_needs_half_the_frames_free() {
        let (tx, mut rx) = wire_queue(4, 1000);
        for _ in 0..3 {
            tx.try_output(frame(1)).unwrap();
        }
        assert!(!tx.can_resync());
        drop(rx.recv().await.unwrap());
        assert!(tx.can_resync());
    }
}
