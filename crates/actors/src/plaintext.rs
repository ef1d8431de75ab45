//! Turns raw terminal output into plain text lines for `agentos logs`:
//! escape sequences are dropped, `\r` rewinds the line, backspace steps back.
//! Pure and incremental: feed chunks, take the completed lines.

#[derive(Default)]
struct Lines {
    done: Vec<String>,
    cur: Vec<char>,
    col: usize,
}

impl vte::Perform for Lines {
    fn print(&mut self, c: char) {
        if self.col < self.cur.len() {
            self.cur[self.col] = c;
        } else {
            while self.cur.len() < self.col {
                self.cur.push(' ');
            }
            self.cur.push(c);
        }
        self.col += 1;
    }

    fn execute(&mut self, byte: u8) {
        match byte {
            b'\n' => {
                let line: String = self.cur.iter().collect();
                self.done.push(line.trim_end().to_string());
                self.cur.clear();
                self.col = 0;
            }
            b'\r' => self.col = 0,
            0x08 => self.col = self.col.saturating_sub(1),
            b'\t' => self.col = (self.col / 8 + 1) * 8,
            _ => {}
        }
    }
}

/// Incremental raw-output → plain-text converter.
pub struct PlainText {
    parser: vte::Parser,
    lines: Lines,
}

impl std::fmt::Debug for PlainText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PlainText")
    }
}

impl Default for PlainText {
    fn default() -> Self {
        PlainText {
            parser: vte::Parser::new(),
            lines: Lines::default(),
        }
    }
}

impl PlainText {
    pub fn feed(&mut self, data: &[u8]) {
        self.parser.advance(&mut self.lines, data);
    }

    /// Completed lines since the last call.
    pub fn take_lines(&mut self) -> Vec<String> {
        std::mem::take(&mut self.lines.done)
    }

    /// The unfinished current line.
    pub fn partial(&self) -> String {
        self.lines
            .cur
            .iter()
            .collect::<String>()
            .trim_end()
            .to_string()
    }
}

/// The plain text of one raw output line (the bytes between two `\n`),
/// parsed on its own and trimmed at the end like every [`PlainText`] line.
/// Parsing each line from a fresh state keeps line numbers exact even when
/// an unterminated escape string would swallow a newline.
pub fn line_text(raw: &[u8]) -> String {
    let mut p = PlainText::default();
    p.feed(raw);
    let mut lines = p.take_lines();
    lines.push(p.partial());
    lines.join(" ").trim_end().to_string()
}

/// Convert a whole buffer; returns the last `max` lines (the unfinished line
/// counts when it is not empty).
pub fn last_lines(data: &[u8], max: usize) -> Vec<String> {
    let mut p = PlainText::default();
    p.feed(data);
    let mut lines = p.take_lines();
    let partial = p.partial();
    if !partial.is_empty() {
        lines.push(partial);
    }
    let skip = lines.len().saturating_sub(max);
    lines.split_off(skip)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_escapes_and_handles_cr() {
        let raw = b"\x1b[1;32mgreen\x1b[0m text\r\nprogress 10%\rprogress 99%\r\nab\x08c\r\n\x1b]0;title\x07last";
        assert_eq!(
            last_lines(raw, 10),
            vec!["green text", "progress 99%", "ac", "last"]
        );
        assert_eq!(last_lines(raw, 2), vec!["ac", "last"]);
    }

    #[test]
    fn incremental_equals_whole() {
        let raw = "héllo\r\nwörld\r\n\x1b[31mred\x1b[0m\r\n".as_bytes();
        let mut p = PlainText::default();
        for b in raw.chunks(3) {
            p.feed(b);
        }
        assert_eq!(p.take_lines(), last_lines(raw, 100));
    }

    #[test]
    fn one_line_on_its_own() {
        assert_eq!(line_text(b"\x1b[1mbold\x1b[0m  \r"), "bold");
        assert_eq!(line_text(b"50%\rdone"), "done");
        assert_eq!(line_text(b"  indented"), "  indented");
        assert_eq!(line_text(b""), "");
    }
}
