// The app controller: owns the connection and the store, turns server
// messages into state, routes terminal frames to the xterm view, sends
// keystrokes when we may type, and switches screens (join, dashboard,
// terminal, disconnected). Owners open an agent by reconnecting with
// `auth {target: "agent:<name>"}`; everyone else stays on their link's target.

import { Connection, type Credentials, type Ended } from './connection';
import { h, mount } from './dom';
import { MAX_INPUT, encodeInput, type ClientMsg, type Frame, type ServerMsg } from './protocol';
import { isTerminalReport } from './reports';
import { Store, type Screen } from './state';
import type { Actions } from './views/actions';
import { Dashboard } from './views/dashboard';
import { renderDisconnected } from './views/disconnected';
import { renderJoin, storedName } from './views/join';
import { SessionView } from './views/session';
import { ShareDialog } from './views/share';

const HEARTBEAT_MS = 5000;

export class App implements Actions {
  readonly store = new Store();
  session: SessionView | null = null;
  private dashboard: Dashboard | null = null;
  private conn: Connection | null = null;
  private target: string | undefined;
  private name: string | undefined = storedName();
  private readonly share: ShareDialog;
  private readonly header = h('header', { class: 'app-header' });
  private readonly reconnecting = h('div', { class: 'reconnecting', testid: 'reconnecting' });
  private readonly main = h('main', { class: 'app-main' });
  private readonly notices = h('div', { class: 'notices', testid: 'notices' });
  private heartbeat: ReturnType<typeof setInterval> | undefined;
  private readonly encoder = new TextEncoder();
  private shownScreen: Screen | null = null;
  private shownAgent: string | null = null;

  constructor(
    root: HTMLElement,
    private readonly creds: Credentials,
  ) {
    this.share = new ShareDialog(this.store);
    mount(root, this.header, this.reconnecting, this.main, this.notices);
    const s = this.store;
    s.on('screen', () => this.renderScreen());
    s.on('people', () => this.renderHeader());
    s.on('status', () => this.renderHeader());
    s.on('notice', () => this.renderNotices());
    window.addEventListener('popstate', () => this.route());
    document.addEventListener('visibilitychange', () => this.beat());
    window.addEventListener('focus', () => this.beat());
    this.renderHeader();
    this.renderScreen();
  }

  /**
   * Connect to what the URL names (`?agent=<name>` for an owner). A link's
   * secret is redeemed with our name (the node names a person when the link
   * is used), so a first visit asks for it before connecting.
   */
  route(): void {
    const agent = new URLSearchParams(location.search).get('agent');
    const target = agent ? `agent:${agent}` : undefined;
    if (this.creds.token && !this.name) {
      this.target = target;
      this.setScreen('join');
      return;
    }
    this.connect(target);
  }

  /** Resolves once any cookie exchange in flight has finished. */
  cookieReady(): Promise<void> {
    return Promise.resolve(this.creds.pending);
  }

  // ---- Actions (used by the views) ----

  send(msg: ClientMsg): boolean {
    const ok = this.conn?.send(msg) ?? false;
    if (!ok) this.store.notify('error', 'Not connected to the node.');
    return ok;
  }

  openAgent(name: string): void {
    const s = this.store.state;
    if (this.store.isOwner || s.target === '*') {
      const url = new URL(location.href);
      url.searchParams.set('agent', name);
      history.pushState(null, '', url.pathname + url.search);
      this.connect(`agent:${name}`);
    } else {
      // A session link: its agents stream over the same connection.
      this.showAgent(name);
      this.subscribe();
    }
  }

  openDashboard(): void {
    const s = this.store.state;
    if (this.store.isOwner) {
      const url = new URL(location.href);
      url.searchParams.delete('agent');
      history.pushState(null, '', url.pathname + url.search);
      this.connect(undefined);
    } else if (!s.target.startsWith('agent:')) {
      if (s.agent) this.conn?.send({ type: 'terminal_unsubscribe', agent: s.agent });
      s.agent = null;
      this.setScreen('dashboard');
    }
  }

  showLine(line: number): void {
    this.session?.comments.showLine(line);
  }

  // ---- Connection ----

  private connect(target: string | undefined): void {
    this.conn?.stop();
    this.target = target;
    const s = this.store.state;
    s.ended = null;
    s.people = [];
    s.controlRequests = [];
    s.requestedControl = false;
    s.channel = null;
    s.agent = null;
    s.nextSeq = null;
    this.setScreen('connecting');
    this.conn = new Connection(
      this.creds,
      { target, name: this.name, device: 'browser' },
      {
        message: (m) => this.onMessage(m),
        frame: (f) => this.onFrame(f),
        status: (st) => {
          s.connection = st;
          this.renderReconnecting();
          this.store.emit('status');
        },
        ended: (e) => this.onEnded(e),
      },
    );
    this.conn.start();
    this.startHeartbeat();
  }

  private onEnded(e: Ended): void {
    const s = this.store.state;
    s.ended = { reason: e.reason, code: e.error?.code, message: e.error?.message, hint: e.error?.hint };
    s.connection = 'open';
    this.renderReconnecting();
    clearInterval(this.heartbeat);
    this.setScreen('disconnected');
  }

  private startHeartbeat(): void {
    clearInterval(this.heartbeat);
    this.heartbeat = setInterval(() => this.beat(), HEARTBEAT_MS);
  }

  /** `presence_update` with what we look at (a ping on the owner's lobby). */
  private beat(): void {
    if (!this.conn?.open) return;
    const s = this.store.state;
    if (s.target === '*') {
      this.conn.send({ type: 'ping' });
      return;
    }
    const visible = document.visibilityState === 'visible';
    const focus = !visible ? 'away' : s.agent ? `agent:${s.agent}` : 'dashboard';
    this.conn.send({ type: 'presence_update', focus });
  }

  private subscribe(): void {
    const s = this.store.state;
    if (!s.agent || !this.conn) return;
    s.channel = null;
    const msg: ClientMsg = { type: 'terminal_subscribe', agent: s.agent };
    if (s.nextSeq !== null && this.session && this.shownAgent === s.agent) msg.since = s.nextSeq;
    this.conn.send(msg);
  }

  private showAgent(name: string): void {
    const s = this.store.state;
    if (s.agent !== name) {
      s.agent = name;
      s.nextSeq = null;
      s.exited = null;
      s.lastInputBy = null;
      s.selectedLine = null;
    }
    this.setScreen('terminal');
  }

  private onMessage(m: ServerMsg): void {
    const store = this.store;
    const s = store.state;
    switch (m.type) {
      case 'auth_ok': {
        s.me = m.you;
        s.target = m.target;
        store.emit('people', 'status');
        this.beat();
        if (m.target.startsWith('agent:')) {
          this.showAgent(m.target.slice('agent:'.length));
          this.subscribe();
        } else if (s.agent) {
          // A session link whose agent we were watching: resume it.
          this.setScreen('terminal');
          this.subscribe();
        } else {
          this.setScreen('dashboard');
        }
        break;
      }
      case 'session_state': {
        s.target = m.target;
        s.agents = m.agents;
        store.setPeople(m.people);
        s.controlRequests = m.control_requests.map((id) => ({
          person: id,
          name: m.people.find((p) => p.id === id)?.name ?? id,
        }));
        store.setComments(m.comments);
        store.emit('agents', 'control', 'status');
        break;
      }
      case 'presence':
        store.setPeople(m.people);
        break;
      case 'person_joined':
        store.upsertPerson(m.person);
        break;
      case 'person_left':
        store.patchPerson(m.person, { connected: false, control: false });
        break;
      case 'permission_changed':
        store.patchPerson(m.person, { permission: m.permission });
        if (m.person === s.me?.id) store.notify('info', `Your permission is now ${m.permission}.`);
        break;
      case 'control_requested':
        // The asker hears of its own request too.
        if (m.person === s.me?.id) s.requestedControl = true;
        if (!s.controlRequests.some((r) => r.person === m.person)) {
          s.controlRequests = [...s.controlRequests, { person: m.person, name: m.name }];
        }
        store.emit('control');
        break;
      case 'control_granted':
        s.controlRequests = s.controlRequests.filter((r) => r.person !== m.person);
        if (m.person === s.me?.id) {
          s.requestedControl = false;
          store.notify('info', 'You have control: your keystrokes go to the agent.');
        }
        // Only one person holds the floor.
        store.setPeople(s.people.map((p) => ({ ...p, control: p.id === m.person })));
        if (s.me?.id === m.person && !s.people.some((p) => p.id === m.person)) {
          s.me = { ...s.me, control: true };
          store.emit('people', 'control', 'status');
        }
        break;
      case 'control_denied':
        s.controlRequests = s.controlRequests.filter((r) => r.person !== m.person);
        if (m.person === s.me?.id) {
          s.requestedControl = false;
          store.notify('info', 'The owner declined your control request.');
        }
        store.emit('control');
        break;
      case 'control_revoked':
        store.patchPerson(m.person, { control: false });
        if (m.person === s.me?.id) store.notify('info', 'Control was taken back: your keystrokes are not sent.');
        store.emit('control');
        break;
      case 'comment_added':
      case 'comment_updated':
        store.upsertComment(m.comment);
        break;
      case 'memory':
        s.memory = m.memory;
        store.emit('memory');
        break;
      case 'agent_state': {
        const i = s.agents.findIndex((a) => a.name === m.agent.name);
        s.agents = i >= 0 ? s.agents.map((a, j) => (j === i ? { ...a, ...m.agent } : a)) : [...s.agents, m.agent];
        if (m.agent.name === s.agent && m.agent.state !== 'exited' && m.agent.state !== 'error' && s.exited) {
          // Started again: pick the stream up where we left it.
          s.exited = null;
          this.subscribe();
        }
        store.emit('agents', 'status');
        break;
      }
      case 'terminal_subscribed':
        if (m.agent === s.agent) {
          s.channel = m.channel;
          s.cols = m.cols;
          s.rows = m.rows;
          this.session?.terminal.resize(m.cols, m.rows);
          store.emit('terminal');
        }
        break;
      case 'terminal_exited':
        if (m.agent === s.agent) {
          s.exited = m.state || 'exited';
          store.emit('status');
        }
        break;
      case 'input_by':
        if (m.agent === s.agent) {
          s.lastInputBy = m.by.kind === 'person' ? m.by.name : `agent ${m.by.name}`;
          store.emit('status');
        }
        break;
      case 'error':
        if (m.refused === 'control_request') {
          s.requestedControl = false;
          store.emit('control');
        }
        store.notify('error', `${m.code}: ${m.message}${m.hint ? ` — ${m.hint}` : ''}`);
        break;
      case 'closed':
      case 'pong':
        break;
    }
  }

  private onFrame(f: Frame): void {
    const s = this.store.state;
    const term = this.session?.terminal;
    if (!term || f.type === 'input') return;
    if (s.channel !== null && f.channel !== s.channel) return;
    if (f.type === 'snapshot') {
      s.stats.snapshots++;
      s.firstLine = f.firstLine;
      s.nextSeq = f.seq;
      s.cols = f.cols;
      s.rows = f.rows;
      term.snapshot(f.cols, f.rows, f.firstLine, f.data, () => this.store.emit('terminal'));
      return;
    }
    // Output: skip bytes we already have (a resubscribe may overlap).
    let data = f.data;
    if (s.nextSeq !== null) {
      const end = f.seq + data.length;
      if (end <= s.nextSeq) return;
      if (f.seq < s.nextSeq) data = data.subarray(s.nextSeq - f.seq);
    }
    s.nextSeq = f.seq + f.data.length;
    s.stats.outputBytes += data.length;
    term.write(data);
  }

  /** Keystrokes from xterm: sent only when we may type. */
  private input(data: string | Uint8Array): void {
    const s = this.store.state;
    // Automatic answers to the agent's queries: one browser answers, the driver.
    if (typeof data === 'string' && isTerminalReport(data) && !this.store.isDriver) return;
    if (!this.store.canType) {
      s.stats.droppedKeys++;
      this.session?.flashBanner();
      return;
    }
    if (s.channel === null || !this.conn) return;
    const bytes = typeof data === 'string' ? this.encoder.encode(data) : data;
    for (let i = 0; i < bytes.length; i += MAX_INPUT) {
      if (this.conn.sendBinary(encodeInput(s.channel, bytes.subarray(i, i + MAX_INPUT)))) s.stats.inputFrames++;
    }
  }

  // ---- Rendering ----

  private setScreen(screen: Screen): void {
    this.store.state.screen = screen;
    this.store.emit('screen');
  }

  private renderScreen(): void {
    const s = this.store.state;
    if (this.shownScreen === s.screen && (s.screen !== 'terminal' || this.shownAgent === s.agent)) {
      this.renderHeader();
      return;
    }
    this.session?.dispose();
    this.session = null;
    this.dashboard?.dispose();
    this.dashboard = null;
    this.shownScreen = s.screen;
    this.shownAgent = s.screen === 'terminal' ? s.agent : null;
    document.body.dataset.screen = s.screen;
    switch (s.screen) {
      case 'connecting':
        mount(this.main, h('div', { class: 'card', testid: 'connecting' }, 'Connecting…'));
        break;
      case 'join':
        mount(
          this.main,
          renderJoin((name) => {
            this.name = name;
            this.connect(this.target);
          }),
        );
        break;
      case 'dashboard':
        this.dashboard = new Dashboard(this.store, this, () => this.cookieReady());
        mount(this.main, this.dashboard.el);
        break;
      case 'terminal':
        this.session = new SessionView(this.store, this, (d) => this.input(d));
        mount(this.main, this.session.el);
        this.session.mounted();
        break;
      case 'disconnected': {
        mount(this.main, renderDisconnected(s.ended ?? { reason: 'closed' }));
        this.share.close();
        break;
      }
    }
    this.renderHeader();
  }

  private renderHeader(): void {
    const s = this.store.state;
    const me = s.me;
    const live = s.screen !== 'disconnected' && s.screen !== 'connecting';
    mount(
      this.header,
      h('span', { class: 'brand' }, 'AgentOS'),
      live &&
        this.store.isOwner &&
        s.screen === 'terminal' &&
        h('button', { class: 'link', testid: 'nav-dashboard', onclick: () => this.openDashboard() }, '← Dashboard'),
      live &&
        !this.store.isOwner &&
        s.screen === 'terminal' &&
        !s.target.startsWith('agent:') &&
        h('button', { class: 'link', testid: 'nav-dashboard', onclick: () => this.openDashboard() }, '← Agents'),
      h('span', { class: 'spacer' }),
      live &&
        me &&
        h(
          'span',
          { class: 'me', testid: 'me', 'data-permission': me.permission },
          me.name,
          ' · ',
          h('span', { class: `perm perm-${me.permission}` }, me.permission),
        ),
      live &&
        this.store.isOwner &&
        h('button', { testid: 'share-open', onclick: () => this.share.open() }, 'Share…'),
      live &&
        me &&
        !this.store.isOwner &&
        s.screen !== 'join' &&
        h('button', { class: 'small', testid: 'leave', onclick: () => this.send({ type: 'session_leave' }) }, 'Leave'),
    );
  }

  private renderReconnecting(): void {
    const s = this.store.state;
    this.reconnecting.hidden = s.connection !== 'reconnecting';
    this.reconnecting.textContent = 'Connection lost: reconnecting…';
  }

  private renderNotices(): void {
    mount(
      this.notices,
      this.store.state.notices.map((n) =>
        h(
          'div',
          { class: `notice ${n.kind}`, testid: n.kind === 'error' ? 'error' : 'notice', role: 'alert' },
          n.text,
        ),
      ),
    );
  }
}
