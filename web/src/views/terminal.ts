// The xterm.js terminal of one agent: writes snapshot and output frames,
// keeps the PTY's size (a viewer never resizes the PTY: the font is scaled
// to fit and the terminal letterboxed), maps buffer rows to absolute line
// numbers, draws comment markers in the gutter, and turns a click on a row
// into "comment on line N".

import { Terminal, type IDecoration, type IMarker } from '@xterm/xterm';
import { absLineAtRow, lineStart, logicalText, rowOfAbsLine, type Anchor } from '../lines';
import type { CommentView } from '../protocol';

export interface TerminalCallbacks {
  /** Keystrokes (xterm `onData`, or `onBinary` as latin-1 bytes). */
  input(data: string | Uint8Array): void;
  /** A click picked absolute line `line` (its text is `text`). */
  pickLine(line: number, text: string): void;
  /** A gutter marker was clicked. */
  openComments(line: number): void;
}

const MIN_FONT = 6;
const MAX_FONT = 18;

export class TerminalView {
  readonly el: HTMLElement;
  readonly term: Terminal;
  private readonly frame: HTMLElement;
  /** Row `anchor.marker.line` starts absolute line `anchor.abs`. */
  private anchor: { marker: IMarker; abs: number } | null = null;
  private decorations: IDecoration[] = [];
  private markers: IMarker[] = [];
  /** Commented lines not in the buffer yet (drawn once output reaches them). */
  private pendingLines = 0;
  private pendingTimer: ReturnType<typeof setTimeout> | undefined;
  private comments: CommentView[] = [];
  private readonly resizeObserver: ResizeObserver;
  private fitQueued = false;
  private decorQueued = false;

  constructor(private readonly cb: TerminalCallbacks) {
    this.frame = document.createElement('div');
    this.frame.className = 'term-frame';
    this.el = document.createElement('div');
    this.el.className = 'term-host';
    this.el.setAttribute('data-testid', 'terminal');
    this.el.appendChild(this.frame);
    this.term = new Terminal({
      scrollback: 100000,
      allowProposedApi: true,
      convertEol: false,
      cursorBlink: false,
      fontSize: 14,
      fontFamily: 'ui-monospace, "DejaVu Sans Mono", Menlo, Consolas, monospace',
      theme: { background: '#111418', foreground: '#d8dee9', selectionBackground: '#3b4252' },
    });
    this.term.onData((d) => this.cb.input(d));
    this.term.onBinary((d) => {
      const bytes = new Uint8Array(d.length);
      for (let i = 0; i < d.length; i++) bytes[i] = d.charCodeAt(i) & 0xff;
      this.cb.input(bytes);
    });
    this.term.buffer.onBufferChange(() => this.queueDecorations());
    this.resizeObserver = new ResizeObserver(() => this.queueFit());
  }

  /** Attach to the DOM (call once `el` is in the document). */
  open(): void {
    if (this.term.element) return;
    this.term.open(this.frame);
    this.resizeObserver.observe(this.el);
    this.frame.addEventListener('click', (ev) => this.onClick(ev));
    this.queueFit();
  }

  dispose(): void {
    this.resizeObserver.disconnect();
    this.term.dispose();
  }

  focus(): void {
    this.term.focus();
  }

  /** The PTY's size changed (or `terminal_subscribed` told it). */
  resize(cols: number, rows: number): void {
    if (cols > 0 && rows > 0 && (cols !== this.term.cols || rows !== this.term.rows)) {
      this.term.resize(cols, rows);
    }
    this.queueFit();
  }

  /** A snapshot: reset, take the PTY's size, paint, and re-anchor line numbers. */
  snapshot(cols: number, rows: number, firstLine: number, data: Uint8Array, done?: () => void): void {
    this.clearDecorations();
    this.anchor?.marker.dispose();
    this.anchor = null;
    this.term.reset();
    this.resize(cols, rows);
    this.term.write(data, () => {
      this.anchor = this.markRow(0, firstLine);
      this.queueDecorations();
      done?.();
    });
  }

  write(data: Uint8Array, done?: () => void): void {
    this.term.write(data, () => {
      this.rebaseAnchor();
      if (this.pendingLines > 0 && !this.pendingTimer) {
        // Throttled: each redraw walks the buffer.
        this.pendingTimer = setTimeout(() => {
          this.pendingTimer = undefined;
          this.queueDecorations();
        }, 250);
      }
      done?.();
    });
  }

  setComments(comments: CommentView[]): void {
    this.comments = comments;
    this.queueDecorations();
  }

  /** Absolute line of buffer row `row` (null before the first snapshot). */
  absLineAtRow(row: number): number | null {
    const a = this.currentAnchor();
    return a ? absLineAtRow(this.term.buffer.normal, a, row) : null;
  }

  /** First buffer row of absolute line `line`, or -1. */
  rowOfAbsLine(line: number): number {
    const a = this.currentAnchor();
    return a ? rowOfAbsLine(this.term.buffer.normal, a, line) : -1;
  }

  /** The text of the logical line at buffer row `row`. */
  textAtRow(row: number): string {
    return logicalText(this.term.buffer.normal, row);
  }

  /** The whole buffer as text, one logical line per entry (for tests). */
  lines(): string[] {
    const buf = this.term.buffer.active;
    const out: string[] = [];
    for (let r = 0; r < buf.length; r++) {
      if (r > 0 && buf.getLine(r)?.isWrapped) continue;
      out.push(logicalText(buf, r));
    }
    return out;
  }

  private currentAnchor(): Anchor | null {
    if (!this.anchor || this.anchor.marker.isDisposed || this.anchor.marker.line < 0) return null;
    return { row: this.anchor.marker.line, abs: this.anchor.abs };
  }

  /** A marker on normal-buffer row `row`, or null while the alternate screen shows. */
  private markRow(row: number, abs: number): { marker: IMarker; abs: number } | null {
    const marker = this.registerMarkerAt(row);
    return marker ? { marker, abs } : null;
  }

  private registerMarkerAt(row: number): IMarker | null {
    const buf = this.term.buffer;
    if (buf.active.type !== 'normal') return null;
    const n = buf.normal;
    try {
      return this.term.registerMarker(row - (n.baseY + n.cursorY)) ?? null;
    } catch {
      return null;
    }
  }

  /**
   * Keep the anchor well inside the scrollback: lines trimmed off the top
   * would dispose it, and with it the numbering.
   */
  private rebaseAnchor(): void {
    const a = this.currentAnchor();
    if (!a) return;
    const n = this.term.buffer.normal;
    const limit = this.term.options.scrollback ?? 100000;
    if (n.length < limit * 0.9 || a.row > limit * 0.2) return;
    if (this.term.buffer.active.type !== 'normal') return;
    const row = lineStart(n, n.baseY);
    const abs = absLineAtRow(n, a, row);
    const next = this.markRow(row, abs);
    if (next) {
      this.anchor?.marker.dispose();
      this.anchor = next;
    }
  }

  private onClick(ev: MouseEvent): void {
    const screen = this.term.element?.querySelector('.xterm-screen');
    if (!screen || this.term.hasSelection()) return;
    const target = ev.target as HTMLElement | null;
    if (target?.closest('.comment-marker')) return;
    const rect = screen.getBoundingClientRect();
    if (ev.clientY < rect.top || ev.clientY > rect.bottom) return;
    const rowH = rect.height / this.term.rows;
    const y = Math.min(this.term.rows - 1, Math.floor((ev.clientY - rect.top) / rowH));
    const row = this.term.buffer.active.viewportY + y;
    if (this.term.buffer.active.type !== 'normal') return;
    const line = this.absLineAtRow(row);
    if (line !== null) this.cb.pickLine(line, this.textAtRow(row));
  }

  private queueFit(): void {
    if (this.fitQueued) return;
    this.fitQueued = true;
    requestAnimationFrame(() => {
      this.fitQueued = false;
      this.fit();
    });
  }

  /** Scale the font so that cols×rows fits the host; letterbox the rest. */
  private fit(): void {
    const screen = this.term.element?.querySelector<HTMLElement>('.xterm-screen');
    if (!screen) return;
    const w = screen.offsetWidth;
    const hgt = screen.offsetHeight;
    const availW = this.el.clientWidth - 24;
    const availH = this.el.clientHeight - 8;
    if (!w || !hgt || availW <= 0 || availH <= 0) return;
    const f = this.term.options.fontSize ?? 14;
    const scale = Math.min(availW / w, availH / hgt);
    const next = Math.max(MIN_FONT, Math.min(MAX_FONT, Math.floor(f * scale * 2) / 2));
    if (Math.abs(next - f) >= 0.5) {
      this.term.options.fontSize = next;
    }
  }

  private clearDecorations(): void {
    for (const d of this.decorations) d.dispose();
    for (const m of this.markers) m.dispose();
    this.decorations = [];
    this.markers = [];
  }

  private queueDecorations(): void {
    if (this.decorQueued) return;
    this.decorQueued = true;
    queueMicrotask(() => {
      this.decorQueued = false;
      this.drawDecorations();
    });
  }

  /** One gutter marker (and a soft highlight) per commented line. */
  private drawDecorations(): void {
    this.clearDecorations();
    this.pendingLines = 0;
    if (!this.currentAnchor() || this.term.buffer.active.type !== 'normal') return;
    const byLine = new Map<number, CommentView[]>();
    for (const c of this.comments) {
      if (c.parent || c.deleted) continue;
      const list = byLine.get(c.line) ?? [];
      list.push(c);
      byLine.set(c.line, list);
    }
    for (const [line, list] of byLine) {
      const row = this.rowOfAbsLine(line);
      if (row < 0) {
        if (line >= (this.currentAnchor()?.abs ?? 0)) this.pendingLines++;
        continue;
      }
      const marker = this.registerMarkerAt(row);
      if (!marker) continue;
      this.markers.push(marker);
      const resolved = list.every((c) => c.resolved);
      const highlight = this.term.registerDecoration({
        marker,
        anchor: 'left',
        width: this.term.cols,
        backgroundColor: resolved ? '#1c2026' : '#2e2a14',
        layer: 'bottom',
      });
      if (highlight) {
        highlight.onRender((el) => {
          el.classList.add('comment-line');
          el.style.pointerEvents = 'none';
        });
        this.decorations.push(highlight);
      }
      const badge = this.term.registerDecoration({ marker, anchor: 'right', width: 1 });
      if (!badge) continue;
      badge.onRender((el) => {
        if (el.dataset.testid) return;
        el.dataset.testid = 'comment-marker';
        el.dataset.line = String(line);
        el.classList.add('comment-marker');
        if (resolved) el.classList.add('resolved');
        el.textContent = list.length > 1 ? String(list.length) : '●';
        el.title = list.map((c) => `${c.author}: ${c.text}`).join('\n');
        el.addEventListener('click', (ev) => {
          ev.stopPropagation();
          this.cb.openComments(line);
        });
      });
      this.decorations.push(badge);
    }
  }
}
