// WebSocket protocol v3 (mirror of crates/proto/src/ws.rs): the JSON control
// messages both ways and the binary terminal frames
// `[type u8][agent u8][len u32 BE][payload]`. Pure: no DOM, no sockets.

export const WS_VERSION = 3;
export const HEADER = 6;
/** Largest input frame the node accepts (a paste, not a file). */
export const MAX_INPUT = 64 * 1024;

export type Permission = 'view' | 'comment' | 'edit' | 'owner';
export const PERMISSIONS: readonly Permission[] = ['view', 'comment', 'edit', 'owner'];

/** `a` holds at least the rights of `b`. */
export function atLeast(a: Permission | undefined, b: Permission): boolean {
  if (!a) return false;
  return PERMISSIONS.indexOf(a) >= PERMISSIONS.indexOf(b);
}

export interface PersonView {
  id: string;
  name: string;
  permission: Permission;
  device: string;
  last_seen_ms: number;
  connected: boolean;
  control: boolean;
}

export interface AgentView {
  name: string;
  agent_type: string;
  state: string;
  /** Only in `GET /api/v1/agents`. */
  device?: string;
}

export type InputSource =
  | { kind: 'person'; id: string; name: string }
  | { kind: 'agent'; name: string };

export interface CommentView {
  id: string;
  agent: string;
  line: number;
  line_hash: string;
  line_text: string;
  text: string;
  author: string;
  author_id: string;
  created_at_ms: number;
  parent?: string | null;
  resolved: boolean;
  deleted: boolean;
  reactions: [string, string[]][];
}

export interface TaskView {
  id: string;
  title: string;
  notes: string;
  status: 'open' | 'in_progress' | 'blocked' | 'closed';
  created_by: string;
  created_at_ms: number;
  updated_at_ms: number;
  closed_at_ms: number | null;
  close_reason: string | null;
  deleted_at_ms: number | null;
  holder: string | null;
  claims: { by: string; at_ms: number }[];
}

export interface DecisionView {
  id: string;
  text: string;
  by: string;
  at_ms: number;
  deleted_at_ms: number | null;
}

/** The workspace memory shared by the session's agents and people. */
export interface MemoryView {
  workspace: string;
  tasks: TaskView[];
  decisions: DecisionView[];
  context: string;
}

/** An edit of the shared memory (edit level and up). */
export type MemoryOp =
  | { task_add: { title: string; notes: string } }
  | { task_update: { id: string; title: string | null; notes: string | null; status: string | null } }
  | { task_claim: { id: string } }
  | { task_release: { id: string } }
  | { task_close: { id: string; reason: string | null } }
  | { task_delete: { id: string } }
  | { decision_add: { text: string } }
  | { decision_delete: { id: string } }
  | { context_set: { text: string } };

export type CloseReason = 'revoked' | 'expired' | 'kicked' | 'session_deleted' | 'left' | 'shutting_down';

/** Close codes the node uses (4000–4999 are the application's). */
export const CLOSE_CODES: Record<number, CloseReason> = {
  4001: 'revoked',
  4002: 'expired',
  4003: 'kicked',
  4004: 'session_deleted',
};

export type ClientMsg =
  | { type: 'auth'; token?: string; target?: string; name?: string; device?: string }
  | { type: 'terminal_subscribe'; agent: string; since?: number }
  | { type: 'terminal_unsubscribe'; agent: string }
  | { type: 'terminal_resize'; agent: string; cols: number; rows: number }
  | { type: 'presence_update'; focus?: string }
  | { type: 'control_request' }
  | { type: 'control_grant'; person: string }
  | { type: 'control_deny'; person: string }
  | { type: 'control_revoke'; person: string }
  | { type: 'permission_change'; person: string; permission: Permission }
  | { type: 'kick'; person: string }
  | { type: 'transfer_ownership'; person: string }
  | { type: 'session_delete' }
  | { type: 'session_leave' }
  | { type: 'comment_add'; agent: string; line: number; text: string; parent?: string }
  | { type: 'comment_resolve'; id: string; resolved: boolean }
  | { type: 'comment_delete'; id: string }
  | { type: 'comment_react'; id: string; emoji: string; on: boolean }
  | { type: 'agent_start'; agent: string }
  | { type: 'agent_stop'; agent: string }
  | { type: 'memory_edit'; op: MemoryOp }
  | { type: 'ping' };

export type ServerMsg =
  | { type: 'auth_ok'; protocol: number; you: PersonView; target: string; ticket: string }
  | {
      type: 'session_state';
      target: string;
      agents: AgentView[];
      people: PersonView[];
      control_requests: string[];
      comments: CommentView[];
    }
  | { type: 'presence'; people: PersonView[] }
  | { type: 'person_joined'; person: PersonView }
  | { type: 'person_left'; person: string }
  | { type: 'permission_changed'; person: string; permission: Permission }
  | { type: 'control_requested'; person: string; name: string }
  | { type: 'control_granted'; person: string }
  | { type: 'control_denied'; person: string }
  | { type: 'control_revoked'; person: string }
  | { type: 'comment_added'; comment: CommentView }
  | { type: 'comment_updated'; comment: CommentView }
  | { type: 'agent_state'; agent: AgentView }
  | { type: 'memory'; memory: MemoryView }
  | { type: 'terminal_subscribed'; agent: string; channel: number; cols: number; rows: number }
  | { type: 'terminal_exited'; agent: string; state: string }
  | { type: 'input_by'; agent: string; by: InputSource }
  | { type: 'error'; code: string; message: string; hint: string; refused?: string }
  | { type: 'closed'; reason: CloseReason }
  | { type: 'pong' };

/** Parse a control message from the node; `null` when it is not one. */
export function parseServerMsg(text: string): ServerMsg | null {
  try {
    const v: unknown = JSON.parse(text);
    if (v && typeof v === 'object' && typeof (v as { type?: unknown }).type === 'string') {
      return v as ServerMsg;
    }
  } catch {
    /* not JSON */
  }
  return null;
}

export const FRAME_OUTPUT = 1;
export const FRAME_SNAPSHOT = 2;
export const FRAME_INPUT = 3;

export type Frame =
  | { type: 'output'; channel: number; seq: number; data: Uint8Array }
  | {
      type: 'snapshot';
      channel: number;
      seq: number;
      cols: number;
      rows: number;
      firstLine: number;
      data: Uint8Array;
    }
  | { type: 'input'; channel: number; data: Uint8Array };

/** u64 BE as a JS number (exact up to 2^53, far beyond any output log). */
function u64(view: DataView, off: number): number {
  return view.getUint32(off) * 2 ** 32 + view.getUint32(off + 4);
}

function putU64(view: DataView, off: number, v: number): void {
  view.setUint32(off, Math.floor(v / 2 ** 32));
  view.setUint32(off + 4, v >>> 0);
}

/** Decode one binary WebSocket message; throws a readable Error on bad input. */
export function decodeFrame(buf: ArrayBuffer | Uint8Array): Frame {
  const bytes = buf instanceof Uint8Array ? buf : new Uint8Array(buf);
  if (bytes.length < HEADER) throw new Error(`frame of ${bytes.length} bytes is shorter than its header`);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const ty = bytes[0];
  const channel = bytes[1];
  const len = view.getUint32(2);
  if (len !== bytes.length - HEADER) {
    throw new Error(`frame says ${len} payload bytes but carries ${bytes.length - HEADER}`);
  }
  const p = HEADER;
  switch (ty) {
    case FRAME_OUTPUT:
      if (len < 8) throw new Error('output payload is truncated');
      return { type: 'output', channel, seq: u64(view, p), data: bytes.subarray(p + 8) };
    case FRAME_SNAPSHOT:
      if (len < 20) throw new Error('snapshot payload is truncated');
      return {
        type: 'snapshot',
        channel,
        seq: u64(view, p),
        cols: view.getUint16(p + 8),
        rows: view.getUint16(p + 10),
        firstLine: u64(view, p + 12),
        data: bytes.subarray(p + 20),
      };
    case FRAME_INPUT:
      return { type: 'input', channel, data: bytes.subarray(p) };
    default:
      throw new Error(`unknown frame type ${ty}`);
  }
}

function header(ty: number, channel: number, payloadLen: number): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(HEADER + payloadLen);
  out[0] = ty;
  out[1] = channel;
  new DataView(out.buffer).setUint32(2, payloadLen);
  return out;
}

/** Encode an input frame (keystrokes for the agent on `channel`). */
export function encodeInput(channel: number, data: Uint8Array): Uint8Array<ArrayBuffer> {
  const out = header(FRAME_INPUT, channel, data.length);
  out.set(data, HEADER);
  return out;
}

/** Encode an output frame (the node's side; used by tests and tools). */
export function encodeOutput(channel: number, seq: number, data: Uint8Array): Uint8Array<ArrayBuffer> {
  const out = header(FRAME_OUTPUT, channel, 8 + data.length);
  putU64(new DataView(out.buffer), HEADER, seq);
  out.set(data, HEADER + 8);
  return out;
}

/** Encode a snapshot frame (the node's side; used by tests and tools). */
export function encodeSnapshot(
  channel: number,
  seq: number,
  cols: number,
  rows: number,
  firstLine: number,
  data: Uint8Array,
): Uint8Array<ArrayBuffer> {
  const out = header(FRAME_SNAPSHOT, channel, 20 + data.length);
  const v = new DataView(out.buffer);
  putU64(v, HEADER, seq);
  v.setUint16(HEADER + 8, cols);
  v.setUint16(HEADER + 10, rows);
  putU64(v, HEADER + 12, firstLine);
  out.set(data, HEADER + 20);
  return out;
}
