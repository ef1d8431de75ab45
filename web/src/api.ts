// REST calls to the node (same origin, identified by the HttpOnly
// `agentos_session` cookie): cookie exchange, agents, comments, share links.

import type { AgentView, CommentView, Permission } from './protocol';

/** An error body from the node: `{"code":"E0xx","message","hint"}`. */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly hint = '',
  ) {
    super(message);
  }
}

async function call<T>(method: string, path: string, body?: unknown): Promise<T> {
  const res = await fetch(path, {
    method,
    credentials: 'same-origin',
    headers: body === undefined ? {} : { 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (!res.ok) {
    let code = `HTTP ${res.status}`;
    let message = res.statusText;
    let hint = '';
    try {
      const e = (await res.json()) as { code?: string; message?: string; hint?: string };
      code = e.code ?? code;
      message = e.message ?? message;
      hint = e.hint ?? '';
    } catch {
      /* not JSON */
    }
    throw new ApiError(res.status, code, message, hint);
  }
  if (res.status === 204) return undefined as T;
  const text = await res.text();
  return (text ? JSON.parse(text) : undefined) as T;
}

/** Trade the `auth_ok` ticket for the session cookie. */
export function exchangeTicket(ticket: string): Promise<void> {
  return call('POST', '/api/v1/auth/cookie', { ticket });
}

export interface Me {
  person: string;
  name: string;
  permission: Permission;
  target: string;
}

export const me = (): Promise<Me> => call('GET', '/api/v1/me');
export const agents = (): Promise<AgentView[]> => call('GET', '/api/v1/agents');
export const comments = (agent: string): Promise<CommentView[]> =>
  call('GET', `/api/v1/agents/${encodeURIComponent(agent)}/comments`);

export interface FileEntry {
  name: string;
  kind: 'file' | 'dir';
  size: number;
}
/** One directory of the agent's working tree (read-only; `path` relative to it). */
export const files = (agent: string, path: string): Promise<FileEntry[]> =>
  call('GET', `/api/v1/agents/${encodeURIComponent(agent)}/files?path=${encodeURIComponent(path)}`);

export interface ShareLink {
  id: string;
  target: string;
  permission: Permission;
  created_at_ms: number;
  expires_at_ms?: number;
  max_uses?: number;
  uses: number;
  revoked: boolean;
  /** Sockets open through this link right now. */
  active: number;
}

/** `active`, `revoked`, `expired` or `used up`. */
export function shareStatus(s: ShareLink, now = Date.now()): string {
  if (s.revoked) return 'revoked';
  if (s.expires_at_ms !== undefined && s.expires_at_ms !== null && now >= s.expires_at_ms) return 'expired';
  if (s.max_uses && s.uses >= s.max_uses) return 'used up';
  return 'active';
}

export interface NewShare {
  target: string;
  permission: Exclude<Permission, 'owner'>;
  expires_in_secs?: number;
  max_uses?: number;
  one_time?: boolean;
}

export interface CreatedShare {
  id: string;
  /** `http(s)://host:port/s/<id>#<secret>`: for a browser. */
  url: string;
  /** `agentos://host:port/s/<id>#<secret>`: for `agentos join`. */
  link: string;
  secret?: string;
}

export const shares = (): Promise<ShareLink[]> => call('GET', '/api/v1/shares');
export const createShare = (s: NewShare): Promise<CreatedShare> => call('POST', '/api/v1/shares', s);
export const revokeShare = (id: string): Promise<void> =>
  call('DELETE', `/api/v1/shares/${encodeURIComponent(id)}`);

/**
 * The browser link to hand out (`url`: `http(s)://…/s/<id>#<secret>`;
 * `link` is the `agentos://` form for `agentos join`).
 */
export function shareLinkOf(s: CreatedShare): string {
  if (s.url?.includes('#') || !s.secret) return s.url;
  return `${s.url}#${s.secret}`;
}
