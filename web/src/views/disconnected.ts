// The screen shown once the node has closed our session for good (link
// revoked or expired, kicked, session deleted, left) or refused our auth.

import { h } from '../dom';
import type { State } from '../state';

const REASONS: Record<string, string> = {
  revoked: 'The link you used was revoked.',
  expired: 'The link you used has expired.',
  kicked: 'The owner removed you from the session.',
  session_deleted: 'The owner ended this session.',
  left: 'You left the session.',
  shutting_down: 'The node is shutting down.',
  refused: 'The node refused to let you in.',
  closed: 'The connection was closed.',
};

export function renderDisconnected(ended: NonNullable<State['ended']>): HTMLElement {
  return h(
    'div',
    { class: 'disconnected card', testid: 'disconnected', 'data-reason': ended.reason },
    h('h2', {}, 'Disconnected'),
    h('p', { testid: 'disconnected-reason' }, REASONS[ended.reason] ?? ended.reason),
    ended.message &&
      h('p', { class: 'error', testid: 'disconnected-message' }, ended.code ? `${ended.code}: ` : '', ended.message),
    h('p', { class: 'hint' }, ended.hint || 'To come back, open a valid share link again.'),
  );
}
