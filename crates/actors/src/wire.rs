//! Pure cores of an agent's terminal stream to web viewers (WebSocket v3
//! binary frames, [`agentos_proto::ws`]). No IO: the agent actor reads the
//! output log and calls these.
//!
//! - **Resume** ([`resume_plan`], [`replay_frames`]): a viewer that comes back
//!   with `since=<seq>` gets exactly the log bytes `[since, seq)` as output
//!   frames when they are within [`RESUME_WINDOW`], else a snapshot. Followed
//!   by the live frames from `seq`, a resuming viewer receives the same bytes
//!   as one that never left (property test below).
//! - **Paint** ([`paint`]): what a late joiner (or a lagging viewer being
//!   resynced) writes into a freshly reset terminal: up to
//!   [`SCROLLBACK_LINES`] plain-text lines of recent history, pushed into the
//!   terminal's scrollback, then exactly the current screen
//!   ([`TermModel::snapshot`]). The history ends just before the screen's top
//!   line ([`TermModel::top_line`]) and `first_line` is the absolute number
//!   of its first line, so comments anchored to absolute lines land on the
//!   right rows.

use crate::plaintext::line_text;
use crate::term::TermModel;
use agentos_proto::ws::{self, Channel};

/// How far back (bytes) a viewer can resume with `since`; further back it
/// gets a snapshot.
pub const RESUME_WINDOW: u64 = 1024 * 1024;
/// Largest piece of replayed output in one frame.
pub const REPLAY_PIECE: usize = 64 * 1024;
/// Most plain-text history lines in a paint.
pub const SCROLLBACK_LINES: usize = 1000;
/// Most log bytes read (from the tail) to find a paint's history lines.
pub const SCROLLBACK_READ: u64 = 512 * 1024;
/// Snapshot frame fields before the paint bytes.
const SNAPSHOT_FIELDS: usize = 20;

/// What a (re)subscribing viewer gets first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResumePlan {
    /// The log bytes `[from, to)` as output frames (`to` is the current
    /// sequence number; `from == to` means nothing was missed).
    Replay { from: u64, to: u64 },
    /// A snapshot (paint) at the current sequence number.
    Snapshot,
}

/// Decide how a viewer asking for `since` joins a stream whose next byte has
/// sequence number `seq`: replay when `since <= seq` and `seq - since <=
/// window`, otherwise (no `since`, beyond the end, or too old) a snapshot.
pub fn resume_plan(since: Option<u64>, seq: u64, window: u64) -> ResumePlan {
    match since {
        Some(s) if s <= seq && seq - s <= window => ResumePlan::Replay { from: s, to: seq },
        _ => ResumePlan::Snapshot,
    }
}

/// Output frames carrying `bytes` (whose first byte has sequence number
/// `from`), at most `piece` bytes each.
pub fn replay_frames(channel: Channel, from: u64, bytes: &[u8], piece: usize) -> Vec<Vec<u8>> {
    let mut seq = from;
    bytes
        .chunks(piece.max(1))
        .map(|c| {
            let f = ws::encode_output(channel, seq, c);
            seq += c.len() as u64;
            f
        })
        .collect()
}

/// A late-join or resync paint (the body of a snapshot frame).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paint {
    /// Sequence number of the next output byte.
    pub seq: u64,
    pub cols: u16,
    pub rows: u16,
    /// Absolute, 1-based line number of the first history line (of the
    /// screen's top line when there is no history).
    pub first_line: u64,
    /// How many history lines precede the screen.
    pub history: usize,
    pub data: Vec<u8>,
}

impl Paint {
    /// The snapshot frame for `channel`.
    pub fn encode(&self, channel: Channel) -> Vec<u8> {
        ws::encode_snapshot(
            channel,
            self.seq,
            self.cols,
            self.rows,
            self.first_line,
            &self.data,
        )
    }
}

/// Build the paint of `term`. `tail` is the end of the output log, bytes
/// `[tail_start, term.seq())` (at most [`SCROLLBACK_READ`] of them is
/// enough); a tail that does not end at `term.seq()` is ignored (no history).
///
/// Written into a freshly reset terminal of `cols`×`rows`, the paint leaves
/// the history lines (plain text, soft-wrapped by the terminal) in its
/// scrollback, oldest first, and shows exactly the current screen. The
/// whole frame stays within [`ws::MAX_PAYLOAD`].
pub fn paint(term: &TermModel, tail: &[u8], tail_start: u64) -> Paint {
    let snap = term.snapshot();
    let top = term.top_line();
    let budget =
        ws::MAX_PAYLOAD.saturating_sub(SNAPSHOT_FIELDS + snap.data.len() + usize::from(snap.rows));
    let (first_line, lines) = if tail_start + tail.len() as u64 == snap.seq {
        history(
            tail,
            tail_start == 0,
            term.lines(),
            top,
            SCROLLBACK_LINES,
            budget,
        )
    } else {
        (top, Vec::new())
    };
    let text: usize = lines.iter().map(|l| l.len() + 2).sum();
    let mut data = Vec::with_capacity(text + usize::from(snap.rows) + snap.data.len());
    for l in &lines {
        data.extend_from_slice(l.as_bytes());
        data.extend_from_slice(b"\r\n");
    }
    if !lines.is_empty() {
        // The cursor is on the empty row after the history, row r. Line
        // feeds move it to the bottom row, then scroll: rows - 1 of them
        // scroll exactly r times, which pushes every history row still on
        // the screen into the scrollback (however the lines wrapped) and
        // no blank row. The snapshot then clears the (blank) screen.
        data.extend(std::iter::repeat_n(
            b'\n',
            usize::from(snap.rows.saturating_sub(1)),
        ));
    }
    data.extend_from_slice(&snap.data);
    Paint {
        seq: snap.seq,
        cols: snap.cols,
        rows: snap.rows,
        first_line,
        history: lines.len(),
        data,
    }
}

/// The plain text of the lines just before absolute line `top`, at most
/// `max` of them and `budget` bytes (counting a `\r\n` per line), oldest
/// first, with the absolute number of the first (`top` when none).
///
/// `tail` ends where line `lines + 1` (the unfinished current line) ends;
/// its first segment is a whole line only when `at_start` (it begins the
/// log), otherwise it is skipped.
pub fn history(
    tail: &[u8],
    at_start: bool,
    lines: u64,
    top: u64,
    max: usize,
    budget: usize,
) -> (u64, Vec<String>) {
    let top = top.clamp(1, lines + 1);
    let mut out = Vec::new();
    let mut used = 0usize;
    let mut end = tail.len();
    // The line number of the segment that ends at `end`.
    let mut line = lines + 1;
    let mut newlines = memchr::memrchr_iter(b'\n', tail);
    while out.len() < max && line >= 1 {
        let (begin, whole, next_end) = match newlines.next() {
            Some(p) => (p + 1, true, Some(p)),
            None => (0, at_start, None),
        };
        if line < top {
            if !whole {
                break;
            }
            let text = line_text(&tail[begin..end]);
            used += text.len() + 2;
            if used > budget {
                break;
            }
            out.push(text);
        }
        match next_end {
            Some(p) => end = p,
            None => break,
        }
        line -= 1;
    }
    out.reverse();
    (top - out.len() as u64, out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use agentos_proto::ws::{Frame, decode_frame};
    use proptest::prelude::*;

    /// A terminal row's text and whether it soft-wraps into the next.
    type Row = (String, bool);

    /// Scrollback rows (oldest first) and screen rows of a vt100 terminal.
    fn read_back(p: &mut vt100::Parser) -> (Vec<Row>, Vec<Row>) {
        let (_, cols) = p.screen().size();
        let screen = p.screen_mut();
        screen.set_scrollback(usize::MAX);
        let depth = screen.scrollback();
        let mut back = Vec::new();
        for off in (1..=depth).rev() {
            screen.set_scrollback(off);
            let row = screen.rows(0, cols).next().unwrap_or_default();
            back.push((row, screen.row_wrapped(0)));
        }
        screen.set_scrollback(0);
        let rows: Vec<String> = screen.rows(0, cols).collect();
        let front = rows
            .into_iter()
            .enumerate()
            .map(|(i, r)| (r, screen.row_wrapped(i as u16)))
            .collect();
        (back, front)
    }

    /// Join soft-wrapped rows into logical lines.
    fn logical(rows: &[Row]) -> Vec<String> {
        let mut out = Vec::new();
        let mut cur = String::new();
        for (text, wrapped) in rows {
            cur.push_str(text);
            if !wrapped {
                out.push(std::mem::take(&mut cur));
            }
        }
        if !cur.is_empty() {
            out.push(cur);
        }
        out
    }

    fn painted(term: &TermModel, p: &Paint) -> vt100::Parser {
        let (cols, rows) = term.size();
        let mut v = vt100::Parser::new(rows, cols, 10_000);
        v.process(&p.data);
        assert_eq!(v.screen().contents_formatted(), term.contents_formatted());
        assert_eq!(v.screen().cursor_position(), term.cursor());
        v
    }

    #[test]
    fn paint_puts_history_in_scrollback_then_the_screen() {
        let log: Vec<u8> = (1..=300)
            .flat_map(|n| format!("line {n}\r\n").into_bytes())
            .collect();
        let mut term = TermModel::new(80, 24, 0);
        term.feed(&log);
        assert_eq!(term.top_line(), 278);
        let p = paint(&term, &log, 0);
        assert_eq!((p.seq, p.cols, p.rows), (log.len() as u64, 80, 24));
        assert_eq!((p.first_line, p.history), (1, 277));
        let mut v = painted(&term, &p);
        let (back, front) = read_back(&mut v);
        let all: Vec<String> = back.iter().chain(&front).map(|r| r.0.clone()).collect();
        let mut want: Vec<String> = (1..=300).map(|n| format!("line {n}")).collect();
        want.push(String::new());
        assert_eq!(all, want);
        assert_eq!(back.len(), 277);
    }

    #[test]
    fn paint_keeps_the_last_lines_of_a_partial_tail() {
        let mut log: Vec<u8> = (1..=1500)
            .flat_map(|n| format!("\x1b[32mrow\x1b[0m {n}\r\n").into_bytes())
            .collect();
        log.extend_from_slice(b"$ ");
        let mut term = TermModel::new(40, 10, 0);
        term.feed(&log);
        // The cursor is on line 1501, on the bottom row.
        assert_eq!(term.top_line(), 1492);
        // Only the end of the log was read; its first line is cut.
        let start = 8_000;
        let p = paint(&term, &log[start..], start as u64);
        assert_eq!(p.first_line, 1492 - 1000);
        assert_eq!(p.history, 1000);
        let mut v = painted(&term, &p);
        let (back, _) = read_back(&mut v);
        let want: Vec<String> = (492..1492).map(|n| format!("row {n}")).collect();
        let got: Vec<String> = back.into_iter().map(|r| r.0).collect();
        assert_eq!(got, want);
        // A tail that does not end at the model's sequence number is ignored.
        let p = paint(&term, &log[start..log.len() - 1], start as u64);
        assert_eq!((p.first_line, p.history), (1492, 0));
    }

    #[test]
    fn paint_accounts_for_soft_wrapping() {
        let lines: Vec<String> = (1..=60)
            .map(|n| format!("{n}:{}", "x".repeat((n * 37) % 170)))
            .collect();
        let log: Vec<u8> = lines
            .iter()
            .flat_map(|l| format!("{l}\r\n").into_bytes())
            .collect();
        let mut term = TermModel::new(50, 12, 0);
        term.feed(&log);
        let top = term.top_line();
        let p = paint(&term, &log, 0);
        assert_eq!(p.first_line, 1);
        assert_eq!(p.history as u64, top - 1);
        let mut v = painted(&term, &p);
        let (back, front) = read_back(&mut v);
        assert_eq!(logical(&back), lines[..(top - 1) as usize].to_vec());
        // The screen starts with line `top` (whole, or its wrapped end).
        let first_on_screen = &logical(&front)[0];
        assert!(lines[(top - 1) as usize].ends_with(first_on_screen.as_str()));
    }

    #[test]
    fn short_output_is_just_the_screen() {
        let mut term = TermModel::new(80, 24, 0);
        term.feed(b"one\r\ntwo\r\n$ ");
        let p = paint(&term, b"one\r\ntwo\r\n$ ", 0);
        assert_eq!((p.first_line, p.history), (1, 0));
        assert_eq!(p.data, term.snapshot().data);
        let mut v = painted(&term, &p);
        assert!(read_back(&mut v).0.is_empty());
    }

    #[test]
    fn paint_under_the_alternate_screen() {
        let mut log: Vec<u8> = (1..=50)
            .flat_map(|n| format!("sh {n}\r\n").into_bytes())
            .collect();
        log.extend_from_slice(b"\x1b[?1049h\x1b[H\x1b[2J\x1b[7mTUI\x1b[0m\x1b[5;3Hbox");
        let mut term = TermModel::new(30, 8, 0);
        term.feed(&log);
        let p = paint(&term, &log, 0);
        let mut v = painted(&term, &p);
        assert!(v.screen().alternate_screen());
        // The history is in the main screen's scrollback.
        v.process(b"\x1b[?1049l");
        let (back, _) = read_back(&mut v);
        assert_eq!(back.len(), p.history);
        assert_eq!(back[0].0, format!("sh {}", p.first_line));
    }

    #[test]
    fn paint_fits_in_one_frame() {
        // Tabs expand: 1000 lines of 2,400 columns each is more than a frame.
        let log: Vec<u8> = (0..1100)
            .flat_map(|_| {
                let mut l = b"\tx".repeat(300);
                l.extend_from_slice(b"\r\n");
                l
            })
            .collect();
        let mut term = TermModel::new(200, 50, 0);
        term.feed(&log);
        let tail = &log[log.len() - SCROLLBACK_READ as usize..];
        let p = paint(&term, tail, (log.len() - tail.len()) as u64);
        assert!(p.history > 0 && p.history < SCROLLBACK_LINES);
        assert_eq!(p.first_line, term.top_line() - p.history as u64);
        let frame = p.encode(Channel(1));
        assert!(frame.len() - ws::HEADER <= ws::MAX_PAYLOAD);
        assert!(
            matches!(decode_frame(&frame), Ok(Frame::Snapshot { first_line, .. }) if first_line == p.first_line)
        );
    }

    #[test]
    fn resume_plan_cases() {
        assert_eq!(resume_plan(None, 10, 5), ResumePlan::Snapshot);
        assert_eq!(
            resume_plan(Some(10), 10, 5),
            ResumePlan::Replay { from: 10, to: 10 }
        );
        assert_eq!(
            resume_plan(Some(5), 10, 5),
            ResumePlan::Replay { from: 5, to: 10 }
        );
        assert_eq!(resume_plan(Some(4), 10, 5), ResumePlan::Snapshot);
        assert_eq!(resume_plan(Some(11), 10, 5), ResumePlan::Snapshot);
        let frames = replay_frames(Channel(2), 100, &[7u8; 10], 4);
        let seqs: Vec<(u64, usize)> = frames
            .iter()
            .map(|f| match decode_frame(f) {
                Ok(Frame::Output { seq, data, .. }) => (seq, data.len()),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(seqs, [(100, 4), (104, 4), (108, 2)]);
    }

    /// Bytes of a run of output frames, checking that they are contiguous
    /// from `from`.
    fn contiguous(frames: &[Vec<u8>], from: u64) -> Result<Vec<u8>, TestCaseError> {
        let mut next = from;
        let mut out = Vec::new();
        for f in frames {
            match decode_frame(f) {
                Ok(Frame::Output { seq, data, .. }) => {
                    prop_assert_eq!(seq, next);
                    next += data.len() as u64;
                    out.extend_from_slice(data);
                }
                other => prop_assert!(false, "not an output frame: {:?}", other),
            }
        }
        Ok(out)
    }

    proptest! {
        /// A viewer that resumes with `since = s` (within the window) receives
        /// exactly the bytes a viewer that never left received from `s` on;
        /// outside the window or beyond the end it is told to take a snapshot.
        #[test]
        fn resume_equals_continuous(
            chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 1..40), 1..30),
            joined_after in any::<proptest::sample::Index>(),
            since in 0u64..1300,
            window in 0u64..1300,
            piece in 1usize..50,
        ) {
            let ch = Channel(5);
            // The log as the holder writes it, and the live frames as fanout
            // encodes them (one per chunk).
            let mut log = Vec::new();
            let mut live = Vec::new();
            for c in &chunks {
                live.push(ws::encode_output(ch, log.len() as u64, c));
                log.extend_from_slice(c);
            }
            let continuous = contiguous(&live, 0)?;
            prop_assert_eq!(&continuous, &log);

            // The resuming viewer subscribes after `k` chunks.
            let k = joined_after.index(chunks.len() + 1);
            let seq: u64 = chunks[..k].iter().map(|c| c.len() as u64).sum();
            match resume_plan(Some(since), seq, window) {
                ResumePlan::Replay { from, to } => {
                    prop_assert!(since <= seq && seq - since <= window);
                    prop_assert_eq!((from, to), (since, seq));
                    let mut frames =
                        replay_frames(ch, from, &log[from as usize..to as usize], piece);
                    prop_assert!(frames.iter().all(|f| f.len() <= ws::HEADER + 8 + piece));
                    frames.extend_from_slice(&live[k..]);
                    let got = contiguous(&frames, since)?;
                    prop_assert_eq!(&got[..], &continuous[since as usize..]);
                }
                ResumePlan::Snapshot => {
                    prop_assert!(since > seq || seq - since > window);
                }
            }
        }
    }
}
