// The agent's working tree, read-only, for everyone in the session: one
// directory at a time (click a directory to open it, the path to go back).
// Listed by the node (`GET /api/v1/agents/{name}/files`), which keeps the
// listing inside the tree.

import * as api from '../api';
import { h, mount } from '../dom';
import type { Store } from '../state';

export class FilesPanel {
  readonly el: HTMLElement;
  private readonly body = h('div', { class: 'files-body', testid: 'files-body' });
  private path = '';
  private agent: string | null = null;
  private readonly unsub: (() => void)[] = [];

  constructor(private readonly store: Store) {
    const summary = h('summary', { testid: 'files-toggle' }, 'Files');
    const details = h('details', { class: 'files', testid: 'files-panel' }, summary, this.body);
    details.addEventListener('toggle', () => {
      if (details.open) void this.load();
    });
    this.el = details;
    this.unsub.push(
      store.on('status', () => {
        if (this.agent !== store.state.agent) {
          this.agent = store.state.agent;
          this.path = '';
          if ((this.el as HTMLDetailsElement).open) void this.load();
        }
      }),
    );
  }

  dispose(): void {
    this.unsub.forEach((f) => f());
  }

  private async load(): Promise<void> {
    const agent = this.store.state.agent;
    if (!agent) return;
    const path = this.path;
    try {
      const entries = await api.files(agent, path);
      if (path !== this.path || agent !== this.store.state.agent) return;
      entries.sort((a, b) => (a.kind === b.kind ? a.name.localeCompare(b.name) : a.kind === 'dir' ? -1 : 1));
      const crumbs = ['', ...path.split('/').filter(Boolean)];
      mount(
        this.body,
        h(
          'div',
          { class: 'crumbs', testid: 'files-path' },
          crumbs.map((c, i) =>
            h('a', { href: '#', onclick: (ev: Event) => (ev.preventDefault(), this.open(crumbs.slice(1, i + 1).join('/'))) }, i === 0 ? '/' : `${c}/`),
          ),
        ),
        h(
          'ul',
          { class: 'file-list' },
          entries.map((e) =>
            e.kind === 'dir'
              ? h('li', { class: 'dir', testid: 'file', 'data-kind': 'dir' }, h('a', { href: '#', onclick: (ev: Event) => (ev.preventDefault(), this.open(path ? `${path}/${e.name}` : e.name)) }, `${e.name}/`))
              : h('li', { class: 'file', testid: 'file', 'data-kind': 'file' }, e.name, h('span', { class: 'muted' }, ` ${e.size} B`)),
          ),
        ),
      );
    } catch (e) {
      mount(this.body, h('p', { class: 'muted' }, `Cannot list files: ${(e as Error).message}`));
    }
  }

  private open(path: string): void {
    this.path = path;
    void this.load();
  }
}
