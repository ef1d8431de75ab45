// The shared memory panel: the workspace's tasks (with who holds them),
// decisions and context. Everyone in the session sees it; edit level and
// the owner add, claim, release and close tasks, record decisions and edit
// the context (the node enforces this too). Live from `memory` messages.

import { ago, h, mount } from '../dom';
import { atLeast, type MemoryOp, type TaskView } from '../protocol';
import type { Store } from '../state';
import type { Actions } from './actions';

export class MemoryPanel {
  readonly el: HTMLElement;
  private readonly body = h('div', { class: 'memory-body', testid: 'memory-body' });
  private readonly taskTitle = h('input', { type: 'text', placeholder: 'New task…', testid: 'task-title' });
  private readonly decisionText = h('input', { type: 'text', placeholder: 'Record a decision…', testid: 'decision-text' });
  private readonly contextText = h('textarea', { rows: 6, testid: 'context-text' });
  private editingContext = false;
  private readonly unsub: (() => void)[] = [];

  constructor(
    private readonly store: Store,
    private readonly actions: Actions,
  ) {
    this.taskTitle.addEventListener('keydown', (ev) => {
      if (ev.key === 'Enter') this.addTask();
    });
    this.decisionText.addEventListener('keydown', (ev) => {
      if (ev.key === 'Enter') this.addDecision();
    });
    this.el = h('aside', { class: 'memory', testid: 'memory-panel' }, h('header', {}, h('h3', {}, 'Shared memory')), this.body);
    this.unsub.push(store.on('memory', () => this.render()));
    this.unsub.push(store.on('people', () => this.render()));
    this.render();
  }

  dispose(): void {
    this.unsub.forEach((f) => f());
  }

  private get canEdit(): boolean {
    return atLeast(this.store.permission, 'edit');
  }

  private edit(op: MemoryOp): boolean {
    return this.actions.send({ type: 'memory_edit', op });
  }

  private addTask(): void {
    const title = this.taskTitle.value.trim();
    if (title && this.edit({ task_add: { title, notes: '' } })) this.taskTitle.value = '';
  }

  private addDecision(): void {
    const text = this.decisionText.value.trim();
    if (text && this.edit({ decision_add: { text } })) this.decisionText.value = '';
  }

  private taskRow(t: TaskView): HTMLElement {
    // The node records web edits as `web:<name>`.
    const me = this.store.state.me?.name;
    const mine = t.holder !== null && t.holder === `web:${me}`;
    const canEdit = this.canEdit;
    return h(
      'li',
      { class: `task status-${t.status}`, testid: 'task', 'data-id': t.id, 'data-status': t.status },
      h('span', { class: 'task-status' }, t.status.replace('_', ' ')),
      h('span', { class: 'task-title', testid: 'task-title-text' }, t.title),
      t.holder && h('span', { class: 'task-holder', testid: 'task-holder' }, `@${t.holder}`),
      canEdit &&
        h(
          'span',
          { class: 'task-actions' },
          t.status !== 'closed' &&
            !t.holder &&
            h('button', { class: 'small', testid: 'task-claim', onclick: () => this.edit({ task_claim: { id: t.id } }) }, 'Claim'),
          mine && h('button', { class: 'small', testid: 'task-release', onclick: () => this.edit({ task_release: { id: t.id } }) }, 'Release'),
          t.status !== 'closed' &&
            h('button', { class: 'small', testid: 'task-close', onclick: () => this.edit({ task_close: { id: t.id, reason: null } }) }, 'Close'),
        ),
    );
  }

  private render(): void {
    const m = this.store.state.memory;
    const canEdit = this.canEdit;
    if (!m) {
      mount(this.body, h('p', { class: 'muted' }, 'No shared memory for this session.'));
      return;
    }
    const tasks = m.tasks.filter((t) => t.deleted_at_ms === null && t.status !== 'closed');
    const closed = m.tasks.filter((t) => t.deleted_at_ms === null && t.status === 'closed').length;
    const decisions = m.decisions.filter((d) => d.deleted_at_ms === null);
    if (!this.editingContext) this.contextText.value = m.context;
    mount(
      this.body,
      !canEdit && h('p', { class: 'muted', testid: 'memory-readonly' }, 'Read-only: editing the shared memory needs edit access.'),
      h('h4', {}, 'Tasks', closed > 0 && h('span', { class: 'count' }, ` (${closed} closed)`)),
      tasks.length === 0 ? h('p', { class: 'muted' }, 'No open tasks.') : h('ul', { class: 'tasks', testid: 'tasks' }, tasks.map((t) => this.taskRow(t))),
      canEdit &&
        h('div', { class: 'row', testid: 'task-form' }, this.taskTitle, h('button', { class: 'small', testid: 'task-add', onclick: () => this.addTask() }, 'Add')),
      h('h4', {}, 'Decisions'),
      decisions.length === 0
        ? h('p', { class: 'muted' }, 'No decisions yet.')
        : h(
            'ul',
            { class: 'decisions', testid: 'decisions' },
            decisions.map((d) =>
              h('li', { testid: 'decision' }, h('span', {}, d.text), h('span', { class: 'muted' }, ` — ${d.by}, ${ago(d.at_ms)}`)),
            ),
          ),
      canEdit &&
        h(
          'div',
          { class: 'row', testid: 'decision-form' },
          this.decisionText,
          h('button', { class: 'small', testid: 'decision-add', onclick: () => this.addDecision() }, 'Record'),
        ),
      h('h4', {}, 'Context'),
      this.editingContext
        ? h(
            'div',
            { class: 'context-edit' },
            this.contextText,
            h(
              'div',
              { class: 'row end' },
              h('button', { class: 'small', onclick: () => ((this.editingContext = false), this.render()) }, 'Cancel'),
              h(
                'button',
                {
                  class: 'small',
                  testid: 'context-save',
                  onclick: () => {
                    if (this.edit({ context_set: { text: this.contextText.value } })) {
                      this.editingContext = false;
                      this.render();
                    }
                  },
                },
                'Save',
              ),
            ),
          )
        : h(
            'div',
            {},
            h('pre', { class: 'context', testid: 'context' }, m.context || '(empty)'),
            canEdit &&
              h('button', { class: 'small', testid: 'context-edit', onclick: () => ((this.editingContext = true), this.render()) }, 'Edit'),
          ),
    );
  }
}
