// Terminal reports: what xterm.js answers by itself when the agent queries
// the terminal (device attributes, cursor position, mode and colour
// reports, focus events). Every browser that shows the agent would answer,
// so only the driver's answers go to the PTY. Pure.

const REPORTS = [
  // CSI reports: DA1/DA2/DA3 (c), CPR (R), DSR (n), window ops (t), DECRPM ($y).
  /^\x1b\[[?>=]?[\d;]*(?:c|R|n|t|\$y)$/,
  // DCS replies (DECRQSS, XTGETTCAP).
  /^\x1bP[\s\S]*\x1b\\$/,
  // OSC replies (colour queries).
  /^\x1b\][\s\S]*(?:\x07|\x1b\\)$/,
  // Focus in/out (mode 1004).
  /^\x1b\[[IO]$/,
];

/** Whether `data` from xterm's `onData` is an automatic report, not a keystroke. */
export function isTerminalReport(data: string): boolean {
  return data.startsWith('\x1b') && REPORTS.some((r) => r.test(data));
}
