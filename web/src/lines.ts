// Absolute line numbers over an xterm buffer. The node numbers output lines
// from 1 at the session start; a snapshot says which absolute line its first
// logical line is. A logical line is a run of buffer rows joined by soft
// wraps (`isWrapped`). Pure functions over a minimal buffer shape, so they
// are easy to reason about apart from xterm.

export interface RowLike {
  readonly isWrapped: boolean;
}

export interface BufferLike {
  readonly length: number;
  getLine(row: number): RowLike | undefined;
}

export interface TextBufferLike extends BufferLike {
  getLine(row: number): (RowLike & { translateToString(trimRight?: boolean): string }) | undefined;
}

/** An anchor: the buffer row `row` starts absolute line `abs`. */
export interface Anchor {
  row: number;
  abs: number;
}

/** The first row of the logical line that contains `row`. */
export function lineStart(buf: BufferLike, row: number): number {
  let r = Math.min(Math.max(row, 0), buf.length - 1);
  while (r > 0 && buf.getLine(r)?.isWrapped) r--;
  return r;
}

/** Absolute line number of buffer row `row`, counted from `anchor`. */
export function absLineAtRow(buf: BufferLike, anchor: Anchor, row: number): number {
  if (buf.length === 0) return anchor.abs;
  const target = lineStart(buf, row);
  const from = lineStart(buf, anchor.row);
  let abs = anchor.abs;
  if (target >= from) {
    for (let r = from + 1; r <= target; r++) if (!buf.getLine(r)?.isWrapped) abs++;
  } else {
    for (let r = from; r > target; r--) if (!buf.getLine(r)?.isWrapped) abs--;
  }
  return abs;
}

/** First buffer row of absolute line `abs`, or -1 when it is not in the buffer. */
export function rowOfAbsLine(buf: BufferLike, anchor: Anchor, abs: number): number {
  if (buf.length === 0) return -1;
  let row = lineStart(buf, anchor.row);
  let cur = anchor.abs;
  if (abs >= cur) {
    while (cur < abs) {
      row++;
      while (row < buf.length && buf.getLine(row)?.isWrapped) row++;
      if (row >= buf.length) return -1;
      cur++;
    }
    return row;
  }
  while (cur > abs) {
    if (row === 0) return -1;
    row = lineStart(buf, row - 1);
    cur--;
  }
  return row;
}

/** The text of the logical line that contains `row` (wrapped rows joined). */
export function logicalText(buf: TextBufferLike, row: number): string {
  let r = lineStart(buf, row);
  const parts: string[] = [];
  for (;;) {
    const last = !(r + 1 < buf.length && buf.getLine(r + 1)?.isWrapped);
    // Only the end of the logical line is trimmed: a wrapped row is full.
    parts.push(buf.getLine(r)?.translateToString(last) ?? '');
    if (last) break;
    r++;
  }
  return parts.join('');
}
