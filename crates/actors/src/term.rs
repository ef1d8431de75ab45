//! The pure terminal model of one agent: a vt100 screen fed with the agent's
//! output, the absolute output sequence number, the absolute line count, and
//! the terminal signals (BEL, OSC 9, OSC 777) that feed state detection.
//!
//! [`TermModel::top_line`] tells which absolute output line the screen's top
//! row shows, so a late-join paint (`wire.rs`) can put the lines before it
//! in the viewer's scrollback.
//!
//! No IO here. Invariant: after `feed`ing bytes `[0, seq)`, `snapshot()`
//! rendered into a fresh terminal of the same size, followed by bytes
//! `[seq, …)`, renders the same screen as replaying everything (see the
//! property test below).

/// What a chunk of output signalled, besides drawing.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct TermSignals {
    pub bell: bool,
    /// Desktop notifications (OSC 9 body, or OSC 777 `notify;title;body`).
    pub notifications: Vec<String>,
}

#[derive(Default)]
struct Signals {
    pending: TermSignals,
}

impl vt100::Callbacks for Signals {
    fn audible_bell(&mut self, _: &mut vt100::Screen) {
        self.pending.bell = true;
    }

    fn unhandled_osc(&mut self, _: &mut vt100::Screen, params: &[&[u8]]) {
        match params.first() {
            // OSC 9;4 is a progress report (ConEmu), not a notification.
            Some(&b"9") if params.get(1) != Some(&&b"4"[..]) => {
                let body = params[1..]
                    .iter()
                    .map(|p| String::from_utf8_lossy(p).into_owned())
                    .collect::<Vec<_>>()
                    .join(";");
                self.pending.notifications.push(body);
            }
            Some(&b"777") if params.get(1) == Some(&&b"notify"[..]) => {
                let body = params[2..]
                    .iter()
                    .map(|p| String::from_utf8_lossy(p).into_owned())
                    .collect::<Vec<_>>()
                    .join(": ");
                self.pending.notifications.push(body);
            }
            _ => {}
        }
    }
}

/// A point-in-time copy of the screen that reproduces it when written to a
/// terminal of `cols`×`rows`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub seq: u64,
    pub cols: u16,
    pub rows: u16,
    pub data: Vec<u8>,
}

impl From<Snapshot> for agentos_proto::ServerFrame {
    fn from(s: Snapshot) -> Self {
        agentos_proto::ServerFrame::Snapshot {
            seq: s.seq,
            cols: s.cols,
            rows: s.rows,
            data: s.data,
        }
    }
}

pub struct TermModel {
    parser: vt100::Parser<Signals>,
    seq: u64,
    lines: u64,
    /// Output bytes after the last point where the parser was in its ground
    /// state: an escape sequence or UTF-8 character split across chunks. A
    /// snapshot replays them so a client's parser ends up mid-sequence too.
    pending: Vec<u8>,
    /// The main screen as it was when the alternate screen was entered
    /// (`CSI ? 1049 h`): the main grid is frozen while the alternate one is
    /// shown, so a snapshot can rebuild both.
    main_at_alt_entry: Option<(Vec<u8>, Vec<u8>)>,
}

const ALT_ENTER: &[u8] = b"\x1b[?1049h";
/// The ways a program leaves the alternate screen.
const ALT_EXITS: [&[u8]; 3] = [b"\x1b[?1049l", b"\x1b[?1047l", b"\x1b[?47l"];

/// Where the output after the last alternate-screen exit in `tail` begins,
/// if there is one.
fn after_last_alt_exit(tail: &[u8]) -> Option<usize> {
    ALT_EXITS
        .iter()
        .filter_map(|p| memchr::memmem::rfind(tail, p).map(|i| i + p.len()))
        .max()
}

/// Where an incomplete sequence at the end of `data` starts, if any.
/// A small scanner of the ECMA-48 shapes that matter: CSI, OSC/DCS/APC/PM/SOS
/// strings, ESC with intermediates, and UTF-8 multibyte characters.
fn incomplete_tail(data: &[u8]) -> Option<usize> {
    #[derive(Clone, Copy, PartialEq)]
    enum S {
        Ground,
        Esc,
        EscInter,
        Csi,
        Str,
        StrEsc,
        Utf8(u8),
    }
    // Only the bytes from the last ESC (or the last few, for UTF-8) can be incomplete.
    let start = match data.iter().rposition(|b| *b == 0x1b) {
        Some(i) => i,
        None => data.len().saturating_sub(4),
    };
    let mut state = S::Ground;
    let mut began = start;
    for (i, &b) in data.iter().enumerate().skip(start) {
        state = match state {
            S::Ground | S::Utf8(0) => {
                began = i;
                match b {
                    0x1b => S::Esc,
                    0xc0..=0xdf => S::Utf8(1),
                    0xe0..=0xef => S::Utf8(2),
                    0xf0..=0xf7 => S::Utf8(3),
                    _ => S::Ground,
                }
            }
            S::Utf8(n) => {
                if (0x80..=0xbf).contains(&b) {
                    if n == 1 { S::Ground } else { S::Utf8(n - 1) }
                } else {
                    S::Ground
                }
            }
            S::Esc => match b {
                b'[' => S::Csi,
                b']' | b'P' | b'X' | b'^' | b'_' => S::Str,
                0x20..=0x2f => S::EscInter,
                0x18 | 0x1a => S::Ground,
                0x1b => S::Esc,
                _ => S::Ground,
            },
            S::EscInter => match b {
                0x20..=0x2f => S::EscInter,
                _ => S::Ground,
            },
            S::Csi => match b {
                0x40..=0x7e | 0x18 | 0x1a => S::Ground,
                0x1b => S::Esc,
                _ => S::Csi,
            },
            S::Str => match b {
                0x07 | 0x18 | 0x1a => S::Ground,
                0x1b => S::StrEsc,
                _ => S::Str,
            },
            S::StrEsc => match b {
                b'\\' => S::Ground,
                _ => S::Str,
            },
        };
        if state == S::Esc && b == 0x1b {
            began = i;
        }
    }
    match state {
        S::Ground | S::Utf8(0) => None,
        _ => Some(began),
    }
}

impl std::fmt::Debug for TermModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TermModel")
            .field("seq", &self.seq)
            .field("lines", &self.lines)
            .finish()
    }
}

impl TermModel {
    /// A model of `cols`×`rows` whose next byte has sequence number `seq`.
    pub fn new(cols: u16, rows: u16, seq: u64) -> Self {
        TermModel {
            // No scrollback kept in cells: history lives in the on-disk log,
            // which is what keeps resident memory per line near zero.
            parser: vt100::Parser::new_with_callbacks(
                rows.max(1),
                cols.max(1),
                0,
                Signals::default(),
            ),
            seq,
            lines: 0,
            pending: Vec::new(),
            main_at_alt_entry: None,
        }
    }

    /// Feed output; returns the signals it carried.
    pub fn feed(&mut self, data: &[u8]) -> TermSignals {
        let mut rest = data;
        while let Some(i) = memchr::memmem::find(rest, ALT_ENTER) {
            self.parser.process(&rest[..i]);
            if !self.parser.screen().alternate_screen() {
                let screen = self.parser.screen();
                self.main_at_alt_entry =
                    Some((screen.state_formatted(), screen.attributes_formatted()));
            }
            self.parser.process(&rest[i..i + ALT_ENTER.len()]);
            rest = &rest[i + ALT_ENTER.len()..];
        }
        self.parser.process(rest);
        self.seq += data.len() as u64;
        self.track_pending(data);
        self.lines += data.iter().filter(|b| **b == b'\n').count() as u64;
        std::mem::take(&mut self.parser.callbacks_mut().pending)
    }

    fn track_pending(&mut self, data: &[u8]) {
        if self.pending.is_empty() {
            if let Some(i) = incomplete_tail(data) {
                self.pending.extend_from_slice(&data[i..]);
            }
        } else {
            // Re-scan the carried tail together with the new bytes.
            let mut joined = std::mem::take(&mut self.pending);
            joined.extend_from_slice(data);
            if let Some(i) = incomplete_tail(&joined) {
                self.pending = joined[i..].to_vec();
            }
        }
        if self.pending.len() > 64 * 1024 {
            // A runaway unterminated string: stop carrying it.
            self.pending.clear();
        }
    }

    /// Sequence number of the next output byte.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// Absolute count of output lines fed (newlines), from the model's start.
    pub fn lines(&self) -> u64 {
        self.lines
    }

    /// The absolute, 1-based number of the output line shown on the screen's
    /// top row: the cursor's line (`lines() + 1`) minus the line breaks
    /// between the top row and the cursor row (rows that do not soft-wrap
    /// into the next). Exact for line-oriented output; an estimate when a
    /// program moves the cursor around. If the top row continues a line
    /// wrapped from above, that line's number.
    pub fn top_line(&self) -> u64 {
        let screen = self.parser.screen();
        let (crow, _) = screen.cursor_position();
        let breaks = (0..crow).filter(|r| !screen.row_wrapped(*r)).count() as u64;
        (self.lines + 1).saturating_sub(breaks).max(1)
    }

    pub fn set_lines(&mut self, lines: u64) {
        self.lines = lines;
    }

    pub fn size(&self) -> (u16, u16) {
        let (rows, cols) = self.parser.screen().size();
        (cols, rows)
    }

    /// Resize like a real terminal: when rows shrink below the cursor, the
    /// top lines scroll away so the cursor line stays visible (vt100 alone
    /// would cut the bottom off).
    pub fn resize(&mut self, cols: u16, rows: u16) {
        let rows = rows.max(1);
        let (old_rows, _) = self.parser.screen().size();
        let (crow, ccol) = self.parser.screen().cursor_position();
        if rows < old_rows && crow >= rows {
            let k = crow + 1 - rows;
            let mut fix = format!("\x1b[{old_rows};1H").into_bytes();
            fix.extend(std::iter::repeat_n(b'\n', k as usize));
            fix.extend(format!("\x1b[{};{}H", crow - k + 1, ccol + 1).into_bytes());
            // Synthetic: not agent output, so neither `seq` nor `lines` move.
            self.parser.process(&fix);
            let _ = std::mem::take(&mut self.parser.callbacks_mut().pending);
        }
        self.parser.screen_mut().set_size(rows, cols.max(1));
    }

    /// Resize to a new width the way a real terminal reflows. vt100 cuts
    /// rows and forgets every soft wrap on a width change, so a line that
    /// wrapped would count as two lines and every absolute line number on
    /// the screen below it (comment anchors, `top_line`) would shift.
    /// Instead the main screen is rebuilt by replaying `tail`, the output
    /// bytes `[tail_start, seq)`, from its first line start at the new size:
    /// what a terminal of that width would show. `seq`, the line count and
    /// any incomplete sequence carry over.
    ///
    /// Returns false, changing nothing, when the alternate screen is shown
    /// (full-screen programs redraw on SIGWINCH), the width is unchanged, or
    /// the tail does not end at `seq` or holds no line start; use
    /// [`TermModel::resize`] then.
    pub fn reflow(&mut self, cols: u16, rows: u16, tail: &[u8], tail_start: u64) -> bool {
        let (old_cols, _) = self.size();
        if cols == old_cols
            || cols == 0
            || self.parser.screen().alternate_screen()
            || tail_start + tail.len() as u64 != self.seq
        {
            return false;
        }
        let from = if tail_start == 0 {
            0
        } else {
            match memchr::memchr(b'\n', tail) {
                Some(i) => i + 1,
                None => return false,
            }
        };
        // The main screen is shown now, so whatever follows the tail's last
        // alternate-screen exit is main-screen output; a full-screen
        // program's screens before it must not be replayed onto the main
        // screen (a real terminal restores the main screen on exit).
        let from = from.max(after_last_alt_exit(tail).unwrap_or(0));
        let replay = &tail[from..];
        let newlines = replay.iter().filter(|b| **b == b'\n').count() as u64;
        let mut fresh = TermModel::new(cols, rows, tail_start + from as u64);
        fresh.lines = self.lines.saturating_sub(newlines);
        fresh.feed(replay);
        // Modes set before the replayed tail (bracketed paste, cursor keys,
        // mouse, a hidden cursor) carry over; synthetic, so neither `seq`
        // nor `lines` move.
        let old = self.parser.screen();
        let mut modes = old.input_mode_formatted();
        if old.hide_cursor() {
            modes.extend_from_slice(b"\x1b[?25l");
        }
        fresh.parser.process(&modes);
        let _ = std::mem::take(&mut fresh.parser.callbacks_mut().pending);
        debug_assert_eq!((fresh.seq, fresh.lines), (self.seq, self.lines));
        *self = fresh;
        true
    }

    /// Escape sequences that reproduce the current screen (contents, cursor,
    /// attributes, modes) on a terminal of the same size.
    pub fn snapshot(&self) -> Snapshot {
        let (cols, rows) = self.size();
        let screen = self.parser.screen();
        let mut data = Vec::with_capacity(cols as usize * rows as usize + 64);
        // Reset to a known state: leave any alternate screen, clear, home.
        data.extend_from_slice(b"\x1b[?1049l\x1b[0m\x1b[H\x1b[2J");
        if screen.alternate_screen() {
            if let Some((main, _)) = &self.main_at_alt_entry {
                data.extend_from_slice(main);
            }
            data.extend_from_slice(ALT_ENTER);
        }
        data.extend_from_slice(&screen.state_formatted());
        if screen.alternate_screen()
            && let Some((_, main_pen)) = &self.main_at_alt_entry
        {
            // The formatted state may use DECSC/DECRC internally; where the
            // saved attributes are shared between screens (vt100, many
            // emulators) that clobbers what `1049h` saved for the main
            // screen. Save the main screen's pen again, then restore the
            // alternate screen's pen.
            data.extend_from_slice(b"\x1b[m");
            data.extend_from_slice(main_pen);
            data.extend_from_slice(b"\x1b7\x1b[m");
            data.extend_from_slice(&screen.attributes_formatted());
        }
        data.extend_from_slice(&self.pending);
        Snapshot {
            seq: self.seq,
            cols,
            rows,
            data,
        }
    }

    /// The visible screen as plain text (used by screen rules).
    pub fn screen_text(&self) -> String {
        self.parser.screen().contents()
    }

    /// The last `n` non-empty visible rows as plain text.
    pub fn bottom_text(&self, n: usize) -> String {
        let (cols, _) = self.size();
        let rows: Vec<String> = self.parser.screen().rows(0, cols).collect();
        let mut keep: Vec<&String> = rows
            .iter()
            .rev()
            .filter(|r| !r.trim().is_empty())
            .take(n)
            .collect();
        keep.reverse();
        keep.into_iter().cloned().collect::<Vec<_>>().join("\n")
    }

    /// For tests: the screen formatted as escape codes, compare-able across models.
    pub fn contents_formatted(&self) -> Vec<u8> {
        self.parser.screen().contents_formatted()
    }

    pub fn cursor(&self) -> (u16, u16) {
        self.parser.screen().cursor_position()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn bell_and_osc_notifications_are_signalled() {
        let mut t = TermModel::new(80, 24, 0);
        let s = t.feed(b"hello\x07");
        assert!(s.bell);
        let s = t.feed(b"\x1b]9;Claude needs your permission\x07");
        assert_eq!(
            s.notifications,
            vec!["Claude needs your permission".to_string()]
        );
        let s = t.feed(b"\x1b]777;notify;Codex;turn done\x1b\\");
        assert_eq!(s.notifications, vec!["Codex: turn done".to_string()]);
        let s = t.feed(b"\x1b]9;4;1;50\x07");
        assert!(s.notifications.is_empty(), "progress is not a notification");
        let total = b"hello\x07".len()
            + b"\x1b]9;Claude needs your permission\x07".len()
            + b"\x1b]777;notify;Codex;turn done\x1b\\".len()
            + b"\x1b]9;4;1;50\x07".len();
        assert_eq!(t.seq(), total as u64);
    }

    #[test]
    fn shrinking_keeps_the_cursor_line() {
        let mut t = TermModel::new(20, 10, 0);
        for i in 0..30 {
            t.feed(format!("l{i}\r\n").as_bytes());
        }
        t.feed(b"END");
        t.resize(20, 4);
        assert_eq!(t.screen_text(), "l27\nl28\nl29\nEND");
        assert_eq!(t.cursor(), (3, 3));
        assert_eq!(t.seq(), 30 * 5 - 10 + 3, "synthetic scroll is not output");
    }

    #[test]
    fn reflow_keeps_soft_wraps_and_line_numbers() {
        let mut out = Vec::new();
        for i in 0..40 {
            out.extend_from_slice(format!("l{i}\r\n").as_bytes());
        }
        out.extend_from_slice(&[b'0'; 150]);
        out.extend_from_slice(b"\r\nafter\r\n$ ");
        let mut t = TermModel::new(80, 10, 0);
        t.feed(&out);
        let before = t.top_line();

        // vt100's own resize forgets the wrap: the long line counts twice.
        let mut cut = TermModel::new(80, 10, 0);
        cut.feed(&out);
        cut.resize(100, 10);
        assert_eq!(cut.top_line(), before - 1, "the plain resize miscounts");

        // Reflow from a tail that starts mid-line, at two other widths.
        for cols in [100u16, 60] {
            let mut r = TermModel::new(80, 10, 0);
            r.feed(&out);
            let start = 7u64;
            assert!(r.reflow(cols, 10, &out[start as usize..], start));
            let mut want = TermModel::new(cols, 10, 0);
            want.feed(&out);
            assert_eq!(r.contents_formatted(), want.contents_formatted(), "{cols}");
            assert_eq!((r.seq(), r.lines()), (t.seq(), t.lines()));
            assert_eq!(r.top_line(), want.top_line(), "{cols}");
            assert_eq!(r.cursor(), want.cursor());
        }

        // A full-screen program that began before the tail and ended in it
        // leaves nothing on the reflowed main screen.
        let mut vim = b"$ vim\r\n".to_vec();
        vim.extend_from_slice(b"\x1b[?1049h\x1b[2J\x1b[H");
        let alt_start = vim.len();
        for i in 0..30 {
            vim.extend_from_slice(format!("\x1b[{};1H~ editor row {i}", i % 10 + 1).as_bytes());
            vim.extend_from_slice(b"\r\n");
        }
        vim.extend_from_slice(b"\x1b[?1049l$ after vim\r\n$ ");
        let mut r = TermModel::new(80, 10, 0);
        r.feed(&vim);
        let start = alt_start + 5;
        assert!(r.reflow(60, 10, &vim[start..], start as u64));
        let text = r.screen_text();
        assert!(!text.contains("editor row"), "{text}");
        assert!(text.contains("$ after vim"), "{text}");
        assert_eq!(r.seq(), vim.len() as u64);
        // Also when the program re-entered the alternate screen in the tail.
        let reenter = alt_start + 20;
        let mut again = vim[..reenter].to_vec();
        again.extend_from_slice(b"\x1b[?1049h");
        again.extend_from_slice(&vim[reenter..]);
        let mut r = TermModel::new(80, 10, 0);
        r.feed(&again);
        assert!(r.reflow(60, 10, &again[start..], start as u64));
        assert!(
            !r.screen_text().contains("editor row"),
            "{}",
            r.screen_text()
        );

        // Modes set long before the tail survive the reflow.
        let mut modes = b"\x1b[?2004h\x1b[?1h\x1b[?25l".to_vec();
        modes.extend_from_slice(&out);
        let mut r = TermModel::new(80, 10, 0);
        r.feed(&modes);
        let cut = 40;
        assert!(r.reflow(100, 10, &modes[cut..], cut as u64));
        let s = r.parser.screen();
        assert!(s.bracketed_paste() && s.application_cursor() && s.hide_cursor());
        assert_eq!((r.seq(), r.lines()), (modes.len() as u64, t.lines()));

        // Not reflowed: same width, a tail that does not end at seq, the
        // alternate screen.
        let mut r = TermModel::new(80, 10, 0);
        r.feed(&out);
        assert!(!r.reflow(80, 12, &out, 0));
        assert!(!r.reflow(100, 10, &out[..10], 0));
        r.feed(b"\x1b[?1049hfull screen");
        let mut all = out.clone();
        all.extend_from_slice(b"\x1b[?1049hfull screen");
        assert!(!r.reflow(100, 10, &all, 0));
    }

    #[test]
    fn counts_lines_absolutely() {
        let mut t = TermModel::new(20, 5, 100);
        for i in 0..50 {
            t.feed(format!("line {i}\r\n").as_bytes());
        }
        assert_eq!(t.lines(), 50);
        assert!(t.screen_text().contains("line 49"));
        assert_eq!(t.bottom_text(1), "line 49");
    }

    #[test]
    fn top_line_follows_scrolling_and_wrapping() {
        let mut t = TermModel::new(10, 4, 0);
        assert_eq!(t.top_line(), 1);
        t.feed(b"a\r\nb\r\n");
        assert_eq!(t.top_line(), 1);
        for i in 0..10 {
            t.feed(format!("l{i}\r\n").as_bytes());
        }
        // 12 lines fed; the cursor is on line 13, on the bottom row.
        assert_eq!(t.top_line(), 10);
        // A 25-character line wraps over three rows.
        t.feed(b"0123456789012345678901234");
        let rows: Vec<String> = t.parser.screen().rows(0, 10).collect();
        assert_eq!(rows, ["l9", "0123456789", "0123456789", "01234"]);
        assert_eq!(t.top_line(), 12);
    }

    fn chunk() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            "[a-zA-Z0-9 ]{1,40}".prop_map(|s| s.into_bytes()),
            Just(b"\r\n".to_vec()),
            Just(b"\n".to_vec()),
            Just(b"\r".to_vec()),
            Just(b"\x08".to_vec()),
            Just(b"\t".to_vec()),
            (0u8..8, 30u8..38).prop_map(|(a, c)| format!("\x1b[{a};{c}m").into_bytes()),
            (0u8..255, 0u8..255, 0u8..255)
                .prop_map(|(r, g, b)| format!("\x1b[38;2;{r};{g};{b}m").into_bytes()),
            (1u8..30, 1u8..90).prop_map(|(r, c)| format!("\x1b[{r};{c}H").into_bytes()),
            (0u8..3).prop_map(|k| format!("\x1b[{k}K").into_bytes()),
            (0u8..3).prop_map(|k| format!("\x1b[{k}J").into_bytes()),
            (1u8..5).prop_map(|n| format!("\x1b[{n}A").into_bytes()),
            Just(b"\x1b[?1049h".to_vec()),
            Just(b"\x1b[?1049l".to_vec()),
            Just(b"\x1b[?25l".to_vec()),
            Just(b"\x1b[?25h".to_vec()),
            Just(b"\x1b[?2004h".to_vec()),
            Just("héllo wörld ✓ 日本".as_bytes().to_vec()),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2048))]
        /// Snapshot at a random cut point + the remaining deltas renders the
        /// same screen as replaying the full stream.
        #[test]
        fn snapshot_plus_delta_equals_full_replay(
            chunks in proptest::collection::vec(chunk(), 1..80),
            cut in any::<proptest::sample::Index>(),
            cols in 10u16..100,
            rows in 3u16..30,
        ) {
            // Real programs toggle the alternate screen in pairs; a redundant
            // `1049l` restores a cursor saved by DECSC, which lives in the
            // emulator's private state and is outside what a snapshot carries.
            let mut alt = false;
            let chunks: Vec<Vec<u8>> = chunks
                .into_iter()
                .filter(|c| match c.as_slice() {
                    b"\x1b[?1049h" => !std::mem::replace(&mut alt, true),
                    b"\x1b[?1049l" => std::mem::replace(&mut alt, false),
                    _ => true,
                })
                .collect();
            let stream: Vec<u8> = chunks.concat();
            let cut = cut.index(stream.len() + 1);
            let mut full = TermModel::new(cols, rows, 0);
            full.feed(&stream);

            let mut live = TermModel::new(cols, rows, 0);
            live.feed(&stream[..cut]);
            let snap = live.snapshot();
            prop_assert_eq!(snap.seq, cut as u64);

            let mut joined = TermModel::new(cols, rows, 0);
            joined.feed(&snap.data);
            joined.feed(&stream[cut..]);
            prop_assert_eq!(joined.contents_formatted(), full.contents_formatted());
            prop_assert_eq!(joined.cursor(), full.cursor());
        }
    }
}
