// The guest's join form: the name others will see in the presence bar
// (remembered in localStorage as `agentosName`).

import { h } from '../dom';

export const NAME_KEY = 'agentosName';

export function storedName(): string | undefined {
  try {
    return localStorage.getItem(NAME_KEY)?.trim() || undefined;
  } catch {
    return undefined;
  }
}

export function renderJoin(join: (name: string) => void): HTMLElement {
  const input = h('input', {
    testid: 'join-name',
    placeholder: 'Your name',
    maxLength: 40,
    autocomplete: 'nickname',
    autofocus: true,
  });
  const submit = (ev: Event) => {
    ev.preventDefault();
    const name = input.value.trim();
    if (!name) {
      input.focus();
      return;
    }
    try {
      localStorage.setItem(NAME_KEY, name);
    } catch {
      /* private mode: the name lasts for this page only */
    }
    join(name);
  };
  const form = h(
    'form',
    { class: 'join card', testid: 'join', onsubmit: submit },
    h('h2', {}, 'Join'),
    h('p', {}, 'You are joining a shared AgentOS session. Others in it will see you under this name.'),
    input,
    h('button', { type: 'submit', testid: 'join-button' }, 'Join'),
  );
  queueMicrotask(() => input.focus());
  return form;
}
