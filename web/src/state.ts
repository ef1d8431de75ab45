// The client's state (what `window.__agentos.state` shows) and a tiny change
// notifier: views subscribe to topics and re-render the parts they own.

import type { AgentView, CommentView, MemoryView, PersonView, Permission } from './protocol';
import { atLeast } from './protocol';

export type Screen = 'connecting' | 'join' | 'dashboard' | 'terminal' | 'disconnected';

export type Topic = 'screen' | 'people' | 'agents' | 'comments' | 'memory' | 'control' | 'terminal' | 'status' | 'notice';

export interface Notice {
  id: number;
  kind: 'error' | 'info';
  text: string;
}

export interface State {
  screen: Screen;
  /** Who we are, as the node sees us (from `auth_ok`, kept current from presence). */
  me: PersonView | null;
  /** The session target of the current connection (`*`, `agent:<name>`, …). */
  target: string;
  /** The agent whose terminal is shown. */
  agent: string | null;
  agents: AgentView[];
  people: PersonView[];
  /** Pending control requests (owner's view): person id → name. */
  controlRequests: { person: string; name: string }[];
  comments: Map<string, CommentView>;
  /** The workspace memory of the session's agents (null until the node sends it). */
  memory: MemoryView | null;
  /** The terminal channel of `agent` on this connection. */
  channel: number | null;
  cols: number;
  rows: number;
  /** Absolute line of the first logical line of the last snapshot. */
  firstLine: number;
  /** Sequence number of the next output byte (for `since` on reconnect). */
  nextSeq: number | null;
  exited: string | null;
  lastInputBy: string | null;
  /** We asked for control and wait for the owner's answer. */
  requestedControl: boolean;
  connection: 'connecting' | 'open' | 'reconnecting';
  /** Why we were disconnected for good. */
  ended: { reason: string; message?: string; hint?: string; code?: string } | null;
  /** The line picked for a new comment (a click on a terminal row). */
  selectedLine: number | null;
  notices: Notice[];
  stats: { inputFrames: number; outputBytes: number; snapshots: number; droppedKeys: number };
}

export function initialState(): State {
  return {
    screen: 'connecting',
    me: null,
    target: '',
    agent: null,
    agents: [],
    people: [],
    controlRequests: [],
    comments: new Map(),
    memory: null,
    channel: null,
    cols: 80,
    rows: 24,
    firstLine: 1,
    nextSeq: null,
    exited: null,
    lastInputBy: null,
    requestedControl: false,
    connection: 'connecting',
    ended: null,
    selectedLine: null,
    notices: [],
    stats: { inputFrames: 0, outputBytes: 0, snapshots: 0, droppedKeys: 0 },
  };
}

export class Store {
  readonly state: State = initialState();
  private readonly listeners = new Map<Topic, Set<() => void>>();
  private noticeId = 0;

  on(topic: Topic, fn: () => void): () => void {
    let set = this.listeners.get(topic);
    if (!set) this.listeners.set(topic, (set = new Set()));
    set.add(fn);
    return () => set.delete(fn);
  }

  emit(...topics: Topic[]): void {
    for (const t of topics) for (const fn of this.listeners.get(t) ?? []) fn();
  }

  /** Our permission (view when unknown). */
  get permission(): Permission {
    return this.state.me?.permission ?? 'view';
  }

  get isOwner(): boolean {
    return this.permission === 'owner';
  }

  /** Someone other than us holds the floor. */
  get otherHoldsControl(): boolean {
    const me = this.state.me?.id;
    return this.state.people.some((p) => p.control && p.id !== me);
  }

  /**
   * Whether our keystrokes go to the agent: the owner always; whoever holds
   * control; an editor while nobody holds control.
   */
  get canType(): boolean {
    const me = this.state.me;
    if (!me) return false;
    if (me.permission === 'owner') return true;
    if (me.control) return me.permission !== 'view';
    return me.permission === 'edit' && !this.otherHoldsControl;
  }

  /**
   * The driver sets the PTY's size and answers the agent's terminal
   * queries: whoever holds control, or the owner while nobody does.
   */
  get isDriver(): boolean {
    const me = this.state.me;
    if (!me) return false;
    if (me.control) return me.permission !== 'view';
    return me.permission === 'owner' && !this.otherHoldsControl;
  }

  get canComment(): boolean {
    return atLeast(this.permission, 'comment');
  }

  notify(kind: Notice['kind'], text: string, ms = 8000): void {
    const n = { id: ++this.noticeId, kind, text };
    this.state.notices = [...this.state.notices.slice(-4), n];
    this.emit('notice');
    setTimeout(() => {
      this.state.notices = this.state.notices.filter((x) => x !== n);
      this.emit('notice');
    }, ms);
  }

  /** Replace the people list, keeping `me` in step with it. */
  setPeople(people: PersonView[]): void {
    this.state.people = people;
    const me = this.state.me && people.find((p) => p.id === this.state.me!.id);
    if (me) this.state.me = me;
    this.emit('people', 'control', 'status');
  }

  upsertPerson(p: PersonView): void {
    const i = this.state.people.findIndex((x) => x.id === p.id);
    const people = [...this.state.people];
    if (i >= 0) people[i] = p;
    else people.push(p);
    this.setPeople(people);
  }

  patchPerson(id: string, patch: Partial<PersonView>): void {
    const p = this.state.people.find((x) => x.id === id);
    if (p) this.upsertPerson({ ...p, ...patch });
    else if (this.state.me?.id === id) {
      this.state.me = { ...this.state.me, ...patch };
      this.emit('people', 'control', 'status');
    }
  }

  setComments(list: CommentView[]): void {
    this.state.comments = new Map(list.map((c) => [c.id, c]));
    this.emit('comments');
  }

  upsertComment(c: CommentView): void {
    this.state.comments.set(c.id, c);
    this.emit('comments');
  }
}
