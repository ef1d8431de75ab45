// The comments side panel: comments anchored to absolute output lines, with
// replies, reactions, resolve and delete, and the form to add one (a click
// on a terminal row fills its line). Updates live from `comment_added` /
// `comment_updated`; keeps reply drafts across re-renders.

import { ago, h, mount, when } from '../dom';
import type { CommentView } from '../protocol';
import type { Store } from '../state';
import type { Actions } from './actions';

export const EMOJIS = ['👍', '🎉', '👀', '❤️'];

export class CommentsPanel {
  readonly el: HTMLElement;
  private readonly list = h('div', { class: 'comment-list', testid: 'comment-list' });
  private readonly count = h('span', { class: 'count' });
  private readonly lineInput = h('input', {
    type: 'number',
    min: '1',
    step: '1',
    placeholder: 'line',
    class: 'line-input',
    testid: 'comment-line',
    title: 'Absolute output line (click a terminal row to pick it)',
  });
  private readonly linePreview = h('div', { class: 'line-preview', testid: 'comment-line-text' });
  private readonly textArea = h('textarea', {
    testid: 'comment-text',
    rows: 3,
    placeholder: 'Comment on this line… (Ctrl+Enter to send)',
  });
  private readonly form: HTMLElement;
  private readonly showResolved = h('input', { type: 'checkbox', checked: true, testid: 'comments-show-resolved' });
  private readonly openReplies = new Set<string>();
  private readonly drafts = new Map<string, string>();
  private highlighted: number | null = null;
  private readonly unsub: (() => void)[] = [];

  constructor(
    private readonly store: Store,
    private readonly actions: Actions,
  ) {
    this.textArea.addEventListener('keydown', (ev) => {
      if (ev.key === 'Enter' && (ev.ctrlKey || ev.metaKey)) this.add();
    });
    this.form = h(
      'div',
      { class: 'comment-form' },
      h('div', { class: 'row' }, h('label', {}, 'Line ', this.lineInput), this.linePreview),
      this.textArea,
      h('div', { class: 'row end' }, h('button', { testid: 'comment-add', onclick: () => this.add() }, 'Comment')),
    );
    this.showResolved.addEventListener('change', () => this.render());
    this.el = h(
      'aside',
      { class: 'comments', testid: 'comments-panel' },
      h(
        'header',
        {},
        h('h3', {}, 'Comments ', this.count),
        h('label', { class: 'small' }, this.showResolved, ' resolved'),
      ),
      this.list,
      this.form,
    );
    this.unsub.push(store.on('comments', () => this.render()));
    this.unsub.push(store.on('people', () => this.renderForm()));
    this.render();
  }

  dispose(): void {
    this.unsub.forEach((f) => f());
  }

  /** A terminal row was clicked: comment on that line. */
  setLine(line: number, text: string): void {
    this.lineInput.value = String(line);
    this.linePreview.textContent = text ? `“${text.slice(0, 120)}”` : '';
    // The focus stays in the terminal: a click there may be to type.
  }

  /** Scroll to and flash the comments of `line`. */
  showLine(line: number): void {
    this.highlighted = line;
    this.render();
    this.list.querySelector(`[data-line="${line}"]`)?.scrollIntoView({ block: 'nearest' });
  }

  private add(): void {
    const agent = this.store.state.agent;
    const line = Number(this.lineInput.value);
    const text = this.textArea.value.trim();
    if (!agent) return;
    if (!Number.isInteger(line) || line < 1) {
      this.store.notify('error', 'Pick a line first: click a row in the terminal.');
      return;
    }
    if (!text) return;
    if (this.actions.send({ type: 'comment_add', agent, line, text })) this.textArea.value = '';
    else this.store.notify('error', 'Not connected: the comment was not sent.');
  }

  private renderForm(): void {
    this.form.hidden = !this.store.canComment;
  }

  private comments(): { top: CommentView[]; replies: Map<string, CommentView[]> } {
    const agent = this.store.state.agent;
    const all = [...this.store.state.comments.values()].filter((c) => !agent || c.agent === agent);
    const replies = new Map<string, CommentView[]>();
    const top: CommentView[] = [];
    for (const c of all) {
      if (c.parent) {
        const l = replies.get(c.parent) ?? [];
        l.push(c);
        replies.set(c.parent, l);
      } else top.push(c);
    }
    for (const l of replies.values()) l.sort((a, b) => a.created_at_ms - b.created_at_ms);
    top.sort((a, b) => a.line - b.line || a.created_at_ms - b.created_at_ms);
    return { top, replies };
  }

  private render(): void {
    this.renderForm();
    // Keep the focus and caret of a reply being written.
    const active = document.activeElement as HTMLTextAreaElement | null;
    const focusId = active?.dataset?.replyFor;
    const caret = focusId ? active!.selectionStart : 0;

    const { top, replies } = this.comments();
    const visible = top.filter(
      (c) => (this.showResolved.checked || !c.resolved) && (!c.deleted || (replies.get(c.id)?.length ?? 0) > 0),
    );
    this.count.textContent = `(${top.filter((c) => !c.deleted && !c.resolved).length})`;
    mount(
      this.list,
      visible.length ? visible.map((c) => this.item(c, replies.get(c.id) ?? [])) : h('p', { class: 'empty' }, 'No comments yet.'),
    );
    if (focusId) {
      const ta = this.list.querySelector<HTMLTextAreaElement>(`textarea[data-reply-for="${focusId}"]`);
      ta?.focus();
      ta?.setSelectionRange(caret, caret);
    }
  }

  private mine(c: CommentView): boolean {
    return c.author_id === this.store.state.me?.id;
  }

  private reactions(c: CommentView): HTMLElement {
    const myName = this.store.state.me?.name;
    const by = new Map(c.reactions);
    const canReact = this.store.canComment && !c.deleted;
    return h(
      'div',
      { class: 'reactions' },
      EMOJIS.map((e) => {
        const names = by.get(e) ?? [];
        const on = !!myName && names.includes(myName);
        if (!canReact && names.length === 0) return null;
        return h(
          'button',
          {
            class: `react${on ? ' on' : ''}${names.length ? '' : ' zero'}`,
            testid: 'comment-react',
            'data-emoji': e,
            title: names.join(', ') || 'React',
            disabled: !canReact,
            onclick: () => this.actions.send({ type: 'comment_react', id: c.id, emoji: e, on: !on }),
          },
          e,
          names.length ? ` ${names.length}` : '',
        );
      }),
    );
  }

  private item(c: CommentView, replies: CommentView[]): HTMLElement {
    const canComment = this.store.canComment;
    const canDelete = !c.deleted && (this.mine(c) || this.store.isOwner);
    const replyOpen = this.openReplies.has(c.id);
    return h(
      'div',
      {
        class: `comment${c.resolved ? ' resolved' : ''}${c.deleted ? ' deleted' : ''}${this.highlighted === c.line ? ' highlight' : ''}`,
        testid: 'comment',
        'data-id': c.id,
        'data-line': String(c.line),
      },
      h(
        'div',
        { class: 'meta' },
        h(
          'button',
          {
            class: 'link line-label',
            testid: 'comment-line-label',
            title: 'Show this line',
            onclick: () => this.actions.showLine(c.line),
          },
          `line ${c.line}`,
        ),
        h('b', { class: 'author', testid: 'comment-author' }, c.author),
        h('time', { title: when(c.created_at_ms) }, ago(c.created_at_ms)),
        c.resolved && h('span', { class: 'badge', testid: 'comment-resolved' }, 'resolved'),
      ),
      c.line_text && h('code', { class: 'anchor-text', title: 'The line when the comment was made' }, c.line_text),
      h('div', { class: 'text', testid: 'comment-body' }, c.deleted ? '(deleted)' : c.text),
      !c.deleted && this.reactions(c),
      !c.deleted &&
        h(
          'div',
          { class: 'actions' },
          canComment &&
            h(
              'button',
              {
                class: 'small',
                testid: 'comment-reply',
                onclick: () => {
                  if (replyOpen) this.openReplies.delete(c.id);
                  else this.openReplies.add(c.id);
                  this.render();
                },
              },
              'Reply',
            ),
          canComment &&
            h(
              'button',
              {
                class: 'small',
                testid: 'comment-resolve',
                onclick: () => this.actions.send({ type: 'comment_resolve', id: c.id, resolved: !c.resolved }),
              },
              c.resolved ? 'Reopen' : 'Resolve',
            ),
          canDelete &&
            h(
              'button',
              {
                class: 'small danger',
                testid: 'comment-delete',
                onclick: () => this.actions.send({ type: 'comment_delete', id: c.id }),
              },
              'Delete',
            ),
        ),
      replies.length > 0 && h('div', { class: 'replies' }, replies.filter((r) => !r.deleted).map((r) => this.reply(r))),
      replyOpen && canComment && this.replyForm(c),
    );
  }

  private reply(r: CommentView): HTMLElement {
    const canDelete = this.mine(r) || this.store.isOwner;
    return h(
      'div',
      { class: 'reply', testid: 'reply', 'data-id': r.id },
      h(
        'div',
        { class: 'meta' },
        h('b', { class: 'author' }, r.author),
        h('time', { title: when(r.created_at_ms) }, ago(r.created_at_ms)),
      ),
      h('div', { class: 'text', testid: 'reply-body' }, r.text),
      this.reactions(r),
      canDelete &&
        h(
          'button',
          {
            class: 'small danger',
            testid: 'comment-delete',
            onclick: () => this.actions.send({ type: 'comment_delete', id: r.id }),
          },
          'Delete',
        ),
    );
  }

  private replyForm(c: CommentView): HTMLElement {
    const ta = h('textarea', {
      rows: 2,
      testid: 'reply-text',
      placeholder: 'Reply…',
      'data-reply-for': c.id,
      value: this.drafts.get(c.id) ?? '',
    });
    const send = () => {
      const text = ta.value.trim();
      if (!text) return;
      if (this.actions.send({ type: 'comment_add', agent: c.agent, line: c.line, text, parent: c.id })) {
        this.drafts.delete(c.id);
        this.openReplies.delete(c.id);
        this.render();
      }
    };
    ta.addEventListener('input', () => this.drafts.set(c.id, ta.value));
    ta.addEventListener('keydown', (ev) => {
      if (ev.key === 'Enter' && (ev.ctrlKey || ev.metaKey)) send();
    });
    return h('div', { class: 'reply-form' }, ta, h('button', { class: 'small', testid: 'reply-send', onclick: send }, 'Send'));
  }
}
