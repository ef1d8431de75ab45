// The owner's dashboard: every agent this person may see, with its live
// state (polled from `GET /api/v1/agents` every second); a click opens the
// agent's terminal (start/stop live there: the owner's lobby connection
// carries no agent commands).

import * as api from '../api';
import { h, mount } from '../dom';
import type { Store } from '../state';
import type { Actions } from './actions';
import { errText } from './share';

export class Dashboard {
  readonly el: HTMLElement;
  private readonly body = h('tbody');
  private readonly error = h('p', { class: 'error', testid: 'agents-error' });
  private readonly timer: ReturnType<typeof setInterval>;
  private readonly unsub: () => void;
  private polling = false;
  private rendered = '';

  constructor(
    private readonly store: Store,
    private readonly actions: Actions,
    /** The REST calls need the session cookie: wait for its exchange. */
    private readonly ready: () => Promise<void>,
  ) {
    this.el = h(
      'section',
      { class: 'dashboard', testid: 'dashboard' },
      h('h2', {}, 'Agents'),
      this.error,
      h(
        'table',
        { class: 'agents', testid: 'agents' },
        h('thead', {}, h('tr', {}, ['Agent', 'Type', 'State', 'Device'].map((t) => h('th', {}, t)))),
        this.body,
      ),
    );
    this.error.hidden = true;
    this.unsub = store.on('agents', () => this.render());
    this.render();
    void this.poll();
    this.timer = setInterval(() => void this.poll(), 1000);
  }

  dispose(): void {
    clearInterval(this.timer);
    this.unsub();
  }

  private async poll(): Promise<void> {
    if (this.polling) return;
    this.polling = true;
    try {
      await this.ready();
      this.store.state.agents = await api.agents();
      this.error.hidden = true;
      this.store.emit('agents');
    } catch (e) {
      this.error.textContent = errText(e);
      this.error.hidden = false;
    } finally {
      this.polling = false;
    }
  }

  private render(): void {
    const agents = [...this.store.state.agents].sort((a, b) => a.name.localeCompare(b.name));
    // Re-render only on a change, so that a click is never lost to a redraw.
    const key = JSON.stringify(agents);
    if (key === this.rendered) return;
    this.rendered = key;
    mount(
      this.body,
      agents.length === 0
        ? h('tr', {}, h('td', { colSpan: 4, class: 'empty' }, 'No agents. Create one with `agentos create`.'))
        : agents.map((a) =>
            h(
              'tr',
              {
                class: 'agent-row',
                testid: 'agent-row',
                'data-name': a.name,
                'data-state': a.state,
                tabIndex: 0,
                onclick: () => this.actions.openAgent(a.name),
                onkeydown: (ev: KeyboardEvent) => {
                  if (ev.key === 'Enter') this.actions.openAgent(a.name);
                },
              },
              h('td', { class: 'name', testid: 'agent-name' }, a.name),
              h('td', {}, a.agent_type),
              h('td', {}, h('span', { class: `state state-${a.state}`, testid: 'agent-state' }, a.state)),
              h('td', {}, a.device || 'this device'),
            ),
          ),
    );
  }
}
