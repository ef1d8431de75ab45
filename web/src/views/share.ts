// The owner's share dialog: create a link (target, permission, expiry, max
// uses, one-time), show its URL to copy, list existing links and revoke them.

import * as api from '../api';
import { h, mount, when } from '../dom';
import type { Store } from '../state';

const EXPIRY: [string, number | undefined][] = [
  ['1 hour', 3600],
  ['8 hours', 8 * 3600],
  ['24 hours', 24 * 3600],
  ['7 days', 7 * 24 * 3600],
  ['never', undefined],
];

export class ShareDialog {
  readonly el: HTMLDialogElement;
  private readonly target = h('select', { testid: 'share-target' });
  private readonly permission = h(
    'select',
    { testid: 'share-permission' },
    h('option', { value: 'view' }, 'view — watch only'),
    h('option', { value: 'comment' }, 'comment — + comments, ask for control'),
    h('option', { value: 'edit' }, 'edit — + type, start/stop'),
  );
  private readonly expiry = h(
    'select',
    { testid: 'share-expiry' },
    EXPIRY.map(([label, secs]) => h('option', { value: secs === undefined ? '' : String(secs) }, label)),
  );
  private readonly maxUses = h('input', { type: 'number', min: '1', placeholder: 'unlimited', testid: 'share-max-uses' });
  private readonly oneTime = h('input', { type: 'checkbox', testid: 'share-one-time' });
  private readonly result = h('div', { class: 'share-result' });
  private readonly links = h('div', { class: 'share-list', testid: 'share-list' });

  constructor(private readonly store: Store) {
    this.oneTime.addEventListener('change', () => {
      this.maxUses.disabled = this.oneTime.checked;
    });
    this.el = h(
      'dialog',
      { class: 'share-dialog', testid: 'share-dialog' },
      h(
        'header',
        {},
        h('h2', {}, 'Share'),
        h('button', { class: 'small', testid: 'share-close', onclick: () => this.close() }, '✕'),
      ),
      h(
        'div',
        { class: 'share-form' },
        h('label', {}, 'Agent', this.target),
        h('label', {}, 'Permission', this.permission),
        h('label', {}, 'Expires after', this.expiry),
        h('label', {}, 'Max uses', this.maxUses),
        h('label', { class: 'inline' }, this.oneTime, ' One-time link'),
        h('button', { testid: 'share-create', onclick: () => void this.create() }, 'Create link'),
      ),
      this.result,
      h('h3', {}, 'Links'),
      this.links,
    );
  }

  open(): void {
    const { agents, agent } = this.store.state;
    const names = [...new Set([...(agent ? [agent] : []), ...agents.map((a) => a.name)])];
    mount(
      this.target,
      names.map((n) => h('option', { value: `agent:${n}`, selected: n === agent }, n)),
    );
    mount(this.result);
    if (!this.el.isConnected) document.body.appendChild(this.el);
    if (!this.el.open) this.el.showModal();
    void this.refresh();
  }

  close(): void {
    this.el.close();
  }

  private async create(): Promise<void> {
    if (!this.target.value) {
      this.store.notify('error', 'No agent to share.');
      return;
    }
    const req: api.NewShare = {
      target: this.target.value,
      permission: this.permission.value as api.NewShare['permission'],
    };
    if (this.expiry.value) req.expires_in_secs = Number(this.expiry.value);
    if (this.oneTime.checked) req.one_time = true;
    else if (this.maxUses.value) req.max_uses = Math.max(1, Number(this.maxUses.value));
    try {
      const s = await api.createShare(req);
      const url = api.shareLinkOf(s);
      const input = h('input', { readOnly: true, value: url, testid: 'share-url', class: 'url' });
      mount(
        this.result,
        h('p', {}, 'Anyone with this link can join as ', h('b', {}, req.permission), ':'),
        h(
          'div',
          { class: 'row' },
          input,
          h(
            'button',
            {
              class: 'small',
              testid: 'share-copy',
              onclick: async (ev: Event) => {
                input.select();
                const btn = ev.currentTarget as HTMLButtonElement;
                try {
                  await navigator.clipboard.writeText(url);
                  btn.textContent = 'Copied';
                } catch {
                  document.execCommand('copy');
                }
              },
            },
            'Copy',
          ),
        ),
      );
      void this.refresh();
    } catch (e) {
      this.store.notify('error', errText(e));
    }
  }

  private async refresh(): Promise<void> {
    let list: api.ShareLink[];
    try {
      list = await api.shares();
    } catch (e) {
      mount(this.links, h('p', { class: 'error' }, errText(e)));
      return;
    }
    const status = new Map(list.map((s) => [s.id, api.shareStatus(s)]));
    const live = (s: api.ShareLink) => status.get(s.id) === 'active';
    list.sort((a, b) => Number(live(b)) - Number(live(a)) || b.created_at_ms - a.created_at_ms);
    mount(
      this.links,
      list.length === 0
        ? h('p', { class: 'empty' }, 'No links yet.')
        : h(
            'table',
            {},
            h('tr', {}, ['Link', 'Target', 'Permission', 'Uses', 'Expires', 'Connected', 'Status', ''].map((t) => h('th', {}, t))),
            list.map((s) =>
              h(
                'tr',
                { testid: 'share-row', 'data-id': s.id, class: live(s) ? '' : 'inactive' },
                h('td', { class: 'mono' }, s.id),
                h('td', {}, s.target === '*' ? 'everything' : s.target),
                h('td', {}, s.permission),
                h('td', {}, s.max_uses ? `${s.uses}/${s.max_uses}` : String(s.uses)),
                h('td', {}, s.expires_at_ms ? when(s.expires_at_ms) : 'never'),
                h('td', {}, String(Number(s.active) || 0)),
                h('td', { testid: 'share-status' }, status.get(s.id)),
                h(
                  'td',
                  {},
                  // The owner's own link is revoked from the CLI, not from the page it runs.
                  !s.revoked &&
                    s.permission !== 'owner' &&
                    h(
                      'button',
                      {
                        class: 'small danger',
                        testid: 'share-revoke',
                        onclick: async () => {
                          try {
                            await api.revokeShare(s.id);
                          } catch (e) {
                            this.store.notify('error', errText(e));
                          }
                          void this.refresh();
                        },
                      },
                      'Revoke',
                    ),
                ),
              ),
            ),
          ),
    );
  }
}

export function errText(e: unknown): string {
  if (e instanceof api.ApiError) return `${e.code}: ${e.message}${e.hint ? ` — ${e.hint}` : ''}`;
  return e instanceof Error ? e.message : String(e);
}
