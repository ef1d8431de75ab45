// Entry point: take the share secret out of the URL fragment (and out of the
// address bar and history at once), start the app, and expose
// `window.__agentos` for tests and debugging.

import '@xterm/xterm/css/xterm.css';
import './style.css';
import { App } from './app';
import type { Credentials } from './connection';

function takeSecret(): string | undefined {
  const raw = location.hash.replace(/^#/, '');
  if (!raw) return undefined;
  history.replaceState(history.state, '', location.pathname + location.search);
  try {
    return decodeURIComponent(raw);
  } catch {
    return raw;
  }
}

const token = takeSecret();
// Without a secret, the session cookie from an earlier visit identifies us.
const creds: Credentials = { token, cookie: !token };
const root = document.getElementById('app') ?? document.body;
const app = new App(root, creds);

declare global {
  interface Window {
    __agentos: unknown;
  }
}

window.__agentos = {
  app,
  store: app.store,
  get state() {
    return app.store.state;
  },
  /** The xterm.js Terminal of the agent on screen (null elsewhere). */
  get term() {
    return app.session?.terminal.term ?? null;
  },
  /** Absolute line number of buffer row `row`. */
  absLineAtRow: (row: number) => app.session?.terminal.absLineAtRow(row) ?? null,
  /** First buffer row of absolute line `line` (-1 when not in the buffer). */
  rowOfAbsLine: (line: number) => app.session?.terminal.rowOfAbsLine(line) ?? -1,
  /** The buffer as logical lines of text. */
  lines: () => app.session?.terminal.lines() ?? [],
  get canType() {
    return app.store.canType;
  },
};

app.route();
