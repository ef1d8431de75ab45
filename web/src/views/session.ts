// The terminal screen of one agent: status line, floor-control bar (request
// control; the owner's grant/deny prompt), the read-only banner, the
// presence bar, the terminal and the comments panel.

import { h, mount } from '../dom';
import { atLeast } from '../protocol';
import type { Store } from '../state';
import type { Actions } from './actions';
import { CommentsPanel } from './comments';
import { FilesPanel } from './files';
import { MemoryPanel } from './memory';
import { PresenceBar } from './presence';
import { TerminalView } from './terminal';

export class SessionView {
  readonly el: HTMLElement;
  readonly terminal: TerminalView;
  readonly comments: CommentsPanel;
  private readonly memory: MemoryPanel;
  private readonly files: FilesPanel;
  private readonly presence: PresenceBar;
  private readonly status = h('div', { class: 'status', testid: 'status' });
  private readonly controlBar = h('div', { class: 'control-bar' });
  private readonly prompts = h('div', { class: 'control-prompts' });
  private readonly banner = h('div', { class: 'readonly-banner', testid: 'readonly-banner', role: 'status' });
  private readonly exited = h('div', { class: 'exited-banner', testid: 'exited' });
  private readonly unsub: (() => void)[] = [];
  private flashTimer: ReturnType<typeof setTimeout> | undefined;

  constructor(
    private readonly store: Store,
    private readonly actions: Actions,
    input: (data: string | Uint8Array) => void,
  ) {
    this.terminal = new TerminalView({
      input,
      pickLine: (line, text) => {
        store.state.selectedLine = line;
        this.comments.setLine(line, text);
      },
      openComments: (line) => this.comments.showLine(line),
    });
    this.comments = new CommentsPanel(store, actions);
    this.presence = new PresenceBar(store, actions);
    this.memory = new MemoryPanel(store, actions);
    this.files = new FilesPanel(store);
    this.el = h(
      'section',
      { class: 'session', testid: 'session' },
      h('div', { class: 'session-top' }, this.status, this.controlBar),
      this.prompts,
      this.banner,
      this.exited,
      this.presence.el,
      h('div', { class: 'session-main' }, this.terminal.el, h('div', { class: 'side' }, this.comments.el, this.memory.el, this.files.el)),
    );
    for (const t of ['status', 'people', 'agents', 'control', 'terminal'] as const) {
      this.unsub.push(store.on(t, () => this.render()));
    }
    this.unsub.push(store.on('comments', () => this.terminal.setComments(this.agentComments())));
    this.render();
  }

  /** Call once `el` is in the document. */
  mounted(): void {
    this.terminal.open();
    this.terminal.setComments(this.agentComments());
  }

  dispose(): void {
    this.unsub.forEach((f) => f());
    this.presence.dispose();
    this.comments.dispose();
    this.memory.dispose();
    this.files.dispose();
    this.terminal.dispose();
    clearTimeout(this.flashTimer);
  }

  /** A keystroke was dropped: make the banner noticeable. */
  flashBanner(): void {
    this.banner.classList.add('flash');
    clearTimeout(this.flashTimer);
    this.flashTimer = setTimeout(() => this.banner.classList.remove('flash'), 600);
  }

  private agentComments() {
    const agent = this.store.state.agent;
    return [...this.store.state.comments.values()].filter((c) => c.agent === agent);
  }

  private render(): void {
    const s = this.store.state;
    const agent = s.agents.find((a) => a.name === s.agent);
    const state = s.exited ?? agent?.state ?? '…';
    const perm = this.store.permission;
    mount(
      this.status,
      h('span', { class: 'agent-name', testid: 'status-agent' }, s.agent ?? ''),
      h('span', { class: `state state-${state}`, testid: 'status-state' }, state),
      h('span', { class: `perm perm-${perm}`, testid: 'status-permission' }, perm),
      s.me?.control && h('span', { class: 'badge control', testid: 'status-control' }, 'you have control'),
      s.lastInputBy && h('span', { class: 'input-by', testid: 'status-input-by' }, `last input by ${s.lastInputBy}`),
      s.connection !== 'open' && h('span', { class: 'conn', testid: 'status-connection' }, s.connection),
    );

    // Floor control.
    const holder = s.people.find((p) => p.control);
    const canAsk = (perm === 'comment' || perm === 'edit') && !s.me?.control;
    mount(
      this.controlBar,
      holder && !s.me?.control && h('span', { class: 'holder' }, `${holder.name} has control`),
      canAsk &&
        h(
          'button',
          {
            testid: 'control-request',
            disabled: s.requestedControl,
            onclick: () => {
              if (this.actions.send({ type: 'control_request' })) {
                s.requestedControl = true;
                this.store.emit('control');
              }
            },
          },
          s.requestedControl ? 'Control requested…' : 'Request control',
        ),
      s.me?.control &&
        perm !== 'owner' &&
        h(
          'button',
          {
            testid: 'control-release-bar',
            onclick: () => s.me && this.actions.send({ type: 'control_revoke', person: s.me.id }),
          },
          'Release control',
        ),
      this.store.isDriver &&
        s.agent &&
        h(
          'button',
          {
            class: 'small',
            testid: 'fit-pty',
            title: 'Resize the agent’s terminal to this window (everyone sees the new size)',
            onclick: () => this.fitPty(),
          },
          'Fit PTY to window',
        ),
      atLeast(perm, 'edit') &&
        s.agent &&
        (state === 'exited' || state === 'error'
          ? h('button', { class: 'small', testid: 'agent-start', onclick: () => this.actions.send({ type: 'agent_start', agent: s.agent! }) }, 'Start')
          : h('button', { class: 'small danger', testid: 'agent-stop', onclick: () => this.actions.send({ type: 'agent_stop', agent: s.agent! }) }, 'Stop')),
    );

    // The owner answers control requests.
    mount(
      this.prompts,
      this.store.isOwner &&
        s.controlRequests.map((r) =>
          h(
            'div',
            { class: 'control-prompt', testid: 'control-prompt', 'data-person': r.person },
            h('span', {}, h('b', {}, r.name), ' asks for control of the keyboard'),
            h('button', { testid: 'control-grant', onclick: () => this.actions.send({ type: 'control_grant', person: r.person }) }, 'Grant'),
            h('button', { class: 'danger', testid: 'control-deny', onclick: () => this.actions.send({ type: 'control_deny', person: r.person }) }, 'Deny'),
          ),
        ),
    );

    // Why our keys go nowhere.
    const canType = this.store.canType;
    this.banner.hidden = canType || !s.me;
    if (!canType) {
      this.banner.textContent =
        perm === 'view'
          ? 'View only: your keystrokes are not sent.'
          : perm === 'comment'
            ? 'Comment access: your keystrokes are not sent. Request control to type.'
            : `${holder?.name ?? 'Someone'} has control: your keystrokes are not sent.`;
    }
    this.exited.hidden = !s.exited;
    this.exited.textContent = s.exited ? `The agent has ${s.exited === 'exited' ? 'exited' : `stopped (${s.exited})`}.` : '';
  }

  /** Resize the PTY to what fits here at the default font size. */
  private fitPty(): void {
    const agent = this.store.state.agent;
    const screen = this.terminal.term.element?.querySelector<HTMLElement>('.xterm-screen');
    if (!agent || !screen) return;
    const t = this.terminal.term;
    const cellW = screen.offsetWidth / t.cols;
    const cellH = screen.offsetHeight / t.rows;
    const scale = 14 / (t.options.fontSize ?? 14);
    const cols = Math.max(20, Math.floor((this.terminal.el.clientWidth - 24) / (cellW * scale)));
    const rows = Math.max(5, Math.floor((this.terminal.el.clientHeight - 8) / (cellH * scale)));
    if (this.actions.send({ type: 'terminal_resize', agent, cols, rows })) {
      // A fresh paint at the new size (the node handles both in order).
      this.actions.send({ type: 'terminal_subscribe', agent });
    }
  }
}
