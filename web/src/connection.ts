// One WebSocket to the node (protocol v3): sends `auth` first, trades the
// `auth_ok` ticket for the session cookie, routes JSON control messages and
// binary frames, and reconnects with backoff after an abnormal close. It
// stops for good on `closed`, a 4001–4004 close code, or a refused auth.

import * as api from './api';
import {
  CLOSE_CODES,
  decodeFrame,
  parseServerMsg,
  type ClientMsg,
  type CloseReason,
  type Frame,
  type ServerMsg,
} from './protocol';

/** How this browser proves who it is; shared by every connection. */
export interface Credentials {
  /** The share secret from the link's `#fragment`, until the cookie is set. */
  token?: string;
  /** The node has set our session cookie. */
  cookie: boolean;
  /** A ticket exchange in flight: every new socket waits for it. */
  pending?: Promise<void>;
}

/** Why a connection ended for good. */
export interface Ended {
  reason: CloseReason | 'refused' | 'closed';
  code?: number;
  error?: { code: string; message: string; hint: string };
}

export interface ConnectionHandlers {
  message(msg: ServerMsg): void;
  frame(frame: Frame): void;
  /** `open` after every `auth_ok`; `reconnecting` while the socket is down. */
  status(s: 'connecting' | 'open' | 'reconnecting', attempt: number): void;
  ended(e: Ended): void;
}

export interface ConnectionOptions {
  target?: string;
  name?: string;
  device?: string;
}

const BACKOFF_MS = [250, 500, 1000, 2000, 4000, 8000];

export function wsUrl(loc: Location = location): string {
  return `${loc.protocol === 'https:' ? 'wss' : 'ws'}://${loc.host}/ws`;
}

export class Connection {
  private ws: WebSocket | null = null;
  private authed = false;
  private done = false;
  private attempt = 0;
  private timer: ReturnType<typeof setTimeout> | undefined;
  private closedReason: CloseReason | null = null;
  private authError: Ended['error'] | null = null;

  constructor(
    private readonly creds: Credentials,
    private readonly opts: ConnectionOptions,
    private readonly on: ConnectionHandlers,
  ) {}

  get open(): boolean {
    return this.authed && this.ws?.readyState === WebSocket.OPEN;
  }

  start(): void {
    this.on.status('connecting', 0);
    this.dialSoon(0);
  }

  send(msg: ClientMsg): boolean {
    if (!this.ws || this.ws.readyState !== WebSocket.OPEN || (!this.authed && msg.type !== 'auth')) return false;
    this.ws.send(JSON.stringify(msg));
    return true;
  }

  sendBinary(bytes: Uint8Array<ArrayBuffer>): boolean {
    if (!this.open || !this.ws) return false;
    this.ws.send(bytes);
    return true;
  }

  /** Close on purpose: no reconnect, no `ended` callback. */
  stop(): void {
    this.done = true;
    clearTimeout(this.timer);
    const ws = this.ws;
    this.ws = null;
    if (ws && ws.readyState <= WebSocket.OPEN) ws.close(1000, 'client');
  }

  private dial(): void {
    if (this.done) return;
    this.authed = false;
    this.closedReason = null;
    this.authError = null;
    const ws = new WebSocket(wsUrl());
    ws.binaryType = 'arraybuffer';
    this.ws = ws;
    ws.onopen = () => {
      const auth: ClientMsg = { type: 'auth', device: this.opts.device ?? 'browser' };
      if (!this.creds.cookie && this.creds.token) auth.token = this.creds.token;
      if (this.opts.target) auth.target = this.opts.target;
      if (this.opts.name) auth.name = this.opts.name;
      ws.send(JSON.stringify(auth));
    };
    ws.onmessage = (ev) => {
      if (this.ws !== ws) return;
      if (typeof ev.data === 'string') this.onText(ev.data);
      else {
        let frame: Frame;
        try {
          frame = decodeFrame(ev.data as ArrayBuffer);
        } catch (e) {
          console.warn('agentos: bad frame', e);
          return;
        }
        this.on.frame(frame);
      }
    };
    ws.onclose = (ev) => {
      if (this.ws !== ws) return;
      this.ws = null;
      this.onClose(ev.code);
    };
  }

  private onText(text: string): void {
    const msg = parseServerMsg(text);
    if (!msg) return;
    if (msg.type === 'auth_ok') {
      this.authed = true;
      this.attempt = 0;
      this.creds.pending = this.trade(msg.ticket);
      this.on.status('open', 0);
    } else if (msg.type === 'closed') {
      this.closedReason = msg.reason;
    } else if (msg.type === 'error' && !this.authed) {
      this.authError = { code: msg.code, message: msg.message, hint: msg.hint };
    }
    this.on.message(msg);
  }

  /** Trade the ticket for the cookie, so that reconnects need no token. */
  private async trade(ticket: string): Promise<void> {
    if (!ticket) return;
    try {
      await api.exchangeTicket(ticket);
      this.creds.cookie = true;
      // A one-time link is spent: the cookie identifies us from now on.
      this.creds.token = undefined;
    } catch (e) {
      console.warn('agentos: cookie exchange failed', e);
    }
  }

  private onClose(code: number): void {
    if (this.done) return;
    // A refused `auth` comes as an error, then a close (4005).
    if (this.authError && !this.authed) {
      this.done = true;
      this.on.ended({ reason: 'refused', code, error: this.authError });
      return;
    }
    const reason = this.closedReason ?? CLOSE_CODES[code];
    // `shutting_down` also means "you fell behind": come back for a fresh state.
    if (reason && reason !== 'shutting_down') {
      this.done = true;
      this.on.ended({ reason, code });
      return;
    }
    this.attempt++;
    const wait = BACKOFF_MS[Math.min(this.attempt - 1, BACKOFF_MS.length - 1)];
    this.on.status('reconnecting', this.attempt);
    this.dialSoon(wait);
  }

  /** Dial after `ms`, once any cookie exchange has finished. */
  private dialSoon(ms: number): void {
    clearTimeout(this.timer);
    this.timer = setTimeout(() => {
      void Promise.resolve(this.creds.pending).then(() => this.dial());
    }, ms);
  }
}
