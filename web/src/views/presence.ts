// The presence bar: one chip per person (name, permission, device, last
// seen, control badge). The owner gets a small menu per person: change
// permission, kick, revoke control. A control holder can release control.

import { ago, h, mount } from '../dom';
import type { Permission, PersonView } from '../protocol';
import type { Store } from '../state';
import type { Actions } from './actions';

const GRANTABLE: Exclude<Permission, 'owner'>[] = ['view', 'comment', 'edit'];

export class PresenceBar {
  readonly el = h('div', { class: 'presence', testid: 'presence' });
  private readonly openMenus = new Set<string>();
  private readonly armedKick = new Set<string>();
  private rendered = '';
  private readonly unsub: (() => void)[] = [];
  private readonly ticker: ReturnType<typeof setInterval>;

  constructor(
    private readonly store: Store,
    private readonly actions: Actions,
  ) {
    this.unsub.push(store.on('people', () => this.render()));
    this.ticker = setInterval(() => this.refreshTimes(), 5000);
    this.render();
  }

  dispose(): void {
    this.unsub.forEach((f) => f());
    clearInterval(this.ticker);
  }

  private render(): void {
    const { people, me } = this.store.state;
    const sorted = [...people].sort(
      (a, b) => Number(b.connected) - Number(a.connected) || a.name.localeCompare(b.name),
    );
    // Heartbeats only move `last_seen`: update the times, keep the elements
    // (an open menu or a click in progress survives).
    const key = JSON.stringify([
      me?.id,
      this.store.isOwner,
      [...this.openMenus],
      [...this.armedKick],
      sorted.map((p) => ({ ...p, last_seen_ms: 0 })),
    ]);
    if (key === this.rendered) {
      this.refreshTimes();
      return;
    }
    this.rendered = key;
    mount(this.el, sorted.map((p) => this.chip(p, p.id === me?.id)));
  }

  private refreshTimes(): void {
    for (const el of this.el.querySelectorAll<HTMLElement>('[data-last-seen]')) {
      const p = this.store.state.people.find((x) => x.id === el.dataset.person);
      if (p) el.textContent = p.connected ? ago(p.last_seen_ms) : `left ${ago(p.last_seen_ms)}`;
    }
  }

  private chip(p: PersonView, self: boolean): HTMLElement {
    const owner = this.store.isOwner;
    const menuOpen = this.openMenus.has(p.id);
    const canManage = owner && !self && p.permission !== 'owner';
    return h(
      'div',
      {
        class: `person${p.connected ? '' : ' offline'}${p.control ? ' has-control' : ''}${self ? ' self' : ''}`,
        testid: 'person',
        'data-person': p.id,
        'data-name': p.name,
        'data-permission': p.permission,
        title: `${p.name} (${p.permission}) on ${p.device}`,
      },
      h('span', { class: 'dot' }),
      h('span', { class: 'person-name', testid: 'person-name' }, p.name, self ? ' (you)' : ''),
      h('span', { class: `perm perm-${p.permission}`, testid: 'person-permission-label' }, p.permission),
      h('span', { class: 'device' }, p.device),
      h(
        'span',
        { class: 'seen', 'data-last-seen': '', 'data-person': p.id },
        p.connected ? ago(p.last_seen_ms) : `left ${ago(p.last_seen_ms)}`,
      ),
      p.control && h('span', { class: 'badge control', testid: 'control-badge' }, '⌨ control'),
      owner &&
        p.control &&
        !self &&
        h(
          'button',
          {
            class: 'small',
            testid: 'person-revoke',
            title: 'Take control back',
            onclick: () => this.actions.send({ type: 'control_revoke', person: p.id }),
          },
          'Revoke control',
        ),
      self &&
        p.control &&
        p.permission !== 'owner' &&
        h(
          'button',
          {
            class: 'small',
            testid: 'control-release',
            onclick: () => this.actions.send({ type: 'control_revoke', person: p.id }),
          },
          'Release control',
        ),
      canManage &&
        h(
          'button',
          {
            class: 'small menu-toggle',
            testid: 'person-menu',
            title: 'Manage',
            onclick: () => {
              if (menuOpen) this.openMenus.delete(p.id);
              else this.openMenus.add(p.id);
              this.render();
            },
          },
          '⋯',
        ),
      canManage && menuOpen && this.menu(p),
    );
  }

  private menu(p: PersonView): HTMLElement {
    const select = h(
      'select',
      {
        testid: 'person-permission',
        onchange: () => {
          this.actions.send({
            type: 'permission_change',
            person: p.id,
            permission: select.value as Permission,
          });
        },
      },
      GRANTABLE.map((perm) => h('option', { value: perm, selected: perm === p.permission }, perm)),
    );
    return h(
      'div',
      { class: 'person-menu' },
      h('label', {}, 'Permission ', select),
      h(
        'button',
        {
          class: 'small danger',
          testid: 'person-kick',
          onclick: () => {
            // Two clicks: the first arms the button.
            if (this.armedKick.has(p.id)) {
              this.armedKick.delete(p.id);
              this.actions.send({ type: 'kick', person: p.id });
            } else {
              this.armedKick.add(p.id);
              this.render();
            }
          },
        },
        this.armedKick.has(p.id) ? 'Really kick?' : 'Kick',
      ),
    );
  }
}
