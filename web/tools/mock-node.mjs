// A stand-in for the AgentOS node's web server, for working on the client
// without the Rust build: serves dist/, speaks WebSocket protocol v3 and the
// REST API (shares, agents, comments, cookie), with fake agents whose
// "shell" echoes input and answers `echo TEXT` (with `$((a+b))` arithmetic).
// The permission table, floor control and close codes follow
// crates/node/src/web. Not a test of the node: a development tool.
//
//   node tools/mock-node.mjs [port]      (prints the owner link)
//   POST /mock/send   {"agent":"t1","text":"echo hi\r"}   type as `agentos send`
//   POST /mock/share  {"target":"agent:t1","permission":"view"} → share JSON
//   POST /mock/revoke {"id":"s-…"}
//   GET  /mock/log?agent=t1  → plain text of the agent's output
//   POST /mock/drop   cut every WebSocket (tests reconnects)

import { createServer } from 'node:http';
import { readFile } from 'node:fs/promises';
import { randomBytes, createHash } from 'node:crypto';
import { join, extname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { WebSocketServer } from 'ws';

const DIST = fileURLToPath(new URL('../dist/', import.meta.url));
const PORT = Number(process.argv[2] ?? process.env.PORT ?? 0);
const LEVEL = { view: 0, comment: 1, edit: 2, owner: 3 };
const now = () => Date.now();
const rnd = (n) => randomBytes(n).toString('hex');

// ---- Agents (fake shells) ----
class FakeAgent {
  constructor(name) {
    this.name = name;
    this.log = Buffer.alloc(0);
    this.line = '';
    this.subs = new Set(); // (frame) => void
    this.state = 'running';
    this.write('mock shell for ' + name + '\r\n$ ');
  }
  write(text) {
    const bytes = Buffer.from(text, 'utf8');
    const seq = this.log.length;
    this.log = Buffer.concat([this.log, bytes]);
    for (const s of this.subs) s(seq, bytes);
  }
  input(buf) {
    for (const ch of buf.toString('utf8')) {
      if (ch === '\r' || ch === '\n') {
        this.write('\r\n');
        const m = /^echo (.*)$/.exec(this.line.trim());
        if (m) {
          const out = m[1].replace(/\$\(\((\d+)\s*([-+*])\s*(\d+)\)\)/g, (_, a, op, b) =>
            String(op === '+' ? +a + +b : op === '-' ? a - b : a * b),
          );
          this.write(out.replace(/^["']|["']$/g, '') + '\r\n');
        }
        this.line = '';
        this.write('$ ');
      } else if (ch === '\x7f') {
        if (this.line) {
          this.line = this.line.slice(0, -1);
          this.write('\b \b');
        }
      } else if (ch >= ' ') {
        this.line += ch;
        this.write(ch);
      }
    }
  }
  plain() {
    return this.log.toString('utf8').replace(/\x1b\[[0-9;?]*[A-Za-z]/g, '').replace(/\r/g, '');
  }
}
const agents = new Map([['t1', new FakeAgent('t1')], ['t2', new FakeAgent('t2')]]);

// ---- Grants, sessions, cookies ----
const grants = new Map(); // id → grant
const bySecret = new Map(); // sha → id
const people = new Map(); // person id → web session
const cookies = new Map(); // cookie → person
const tickets = new Map(); // ticket → person
const sha = (s) => createHash('sha256').update(s).digest('hex');

function createGrant(target, permission, { expires_in_secs, max_uses } = {}) {
  const id = 's-' + rnd(4);
  const secret = rnd(16);
  const g = {
    id, target, permission, created_at_ms: now(), uses: 0, revoked: false,
    expires_at_ms: expires_in_secs ? now() + expires_in_secs * 1000 : undefined, max_uses,
  };
  grants.set(id, g);
  bySecret.set(sha(secret), id);
  const url = `${base}/s/${id}#${secret}`;
  return { id, url, link: `agentos://${base.replace(/^http:\/\//, '')}/s/${id}#${secret}`, secret };
}
const shareView = (g) => ({
  ...g,
  // Sockets open through the link right now.
  active: [...sessions.values()].flatMap((s) => [...s.conns]).filter((c) => people.get(c.person)?.grant === g.id).length,
});

// ---- Sessions (one per target) ----
const sessions = new Map(); // target → { conns:Set, floor, requests:[], lastSeen:Map }
const comments = []; // CommentView[]
function sessionOf(target) {
  let s = sessions.get(target);
  if (!s) sessions.set(target, (s = { target, conns: new Set(), floor: null, requests: [], seen: new Map() }));
  return s;
}
function agentsOf(target) {
  if (target === '*') return [...agents.keys()];
  if (target.startsWith('agent:')) return [target.slice(6)].filter((n) => agents.has(n));
  return [];
}
function personView(s, id) {
  const p = people.get(id);
  const conns = [...s.conns].filter((c) => c.person === id);
  return { id, name: p.name, permission: p.permission, device: p.device, last_seen_ms: s.seen.get(id) ?? now(), connected: conns.length > 0, control: s.floor === id };
}
function peopleOf(s) {
  return [...new Set([...s.conns].map((c) => c.person))].map((id) => personView(s, id));
}
const agentView = (n) => ({ name: n, agent_type: 'custom', state: agents.get(n).state });
function send(c, msg) { if (c.ws.readyState === 1) c.ws.send(JSON.stringify(msg)); }
function broadcast(s, msg) { for (const c of s.conns) send(c, msg); }
function presence(s) { broadcast(s, { type: 'presence', people: peopleOf(s) }); }
function close(c, reason) {
  send(c, { type: 'closed', reason });
  const code = { revoked: 4001, expired: 4002, kicked: 4003, session_deleted: 4004, left: 1000, shutting_down: 1001 }[reason];
  c.ws.close(code, reason);
}
function refuse(c, code, message, hint, refused) { send(c, { type: 'error', code, message, hint, refused }); }
function allowed(level, action, floor) {
  const L = LEVEL[level];
  switch (action) {
    case 'watch': return true;
    case 'comment': return L >= 1;
    case 'request': return (L === 1 || L === 2) && floor !== 'mine';
    case 'release': return floor === 'mine';
    case 'input': return L === 3 || (floor === 'mine' ? L >= 1 : floor === 'free' ? L >= 2 : false);
    case 'resize': return floor === 'mine' ? L >= 1 : floor === 'free' ? L === 3 : false;
    case 'startstop': return L >= 2;
    case 'moderate': return L === 3;
  }
  return false;
}

// ---- HTTP ----
const MIME = { '.html': 'text/html', '.js': 'text/javascript', '.css': 'text/css', '.map': 'application/json', '.svg': 'image/svg+xml' };
function cookieOf(req) {
  const m = /(?:^|;\s*)agentos_session=([^;]+)/.exec(req.headers.cookie ?? '');
  return m?.[1];
}
function who(req) {
  const p = cookies.get(cookieOf(req));
  return p ? people.get(p) : undefined;
}
async function body(req) {
  let b = '';
  for await (const ch of req) b += ch;
  return b ? JSON.parse(b) : {};
}
function json(res, status, v) {
  res.writeHead(status, { 'content-type': 'application/json' });
  res.end(v === undefined ? '' : JSON.stringify(v));
}
const err = (res, status, code, message) => json(res, status, { code, message, hint: '' });

const server = createServer(async (req, res) => {
  const url = new URL(req.url, base);
  const p = url.pathname;
  try {
    if (p === '/health') return json(res, 200, { status: 'ok', version: 'mock', protocol: 3 });
    if (p === '/api/v1/auth/cookie' && req.method === 'POST') {
      const { ticket } = await body(req);
      const person = tickets.get(ticket);
      if (!person) return err(res, 401, 'E021', 'unknown or used ticket');
      tickets.delete(ticket);
      const c = rnd(16);
      cookies.set(c, person);
      res.writeHead(204, { 'set-cookie': `agentos_session=${c}; HttpOnly; SameSite=Strict; Path=/` });
      return res.end();
    }
    if (p.startsWith('/api/v1/')) {
      const s = who(req);
      if (!s) return err(res, 401, 'E021', 'no session');
      if (p === '/api/v1/me') return json(res, 200, { person: s.id, name: s.name, permission: s.permission, target: s.target });
      if (p === '/api/v1/agents') return json(res, 200, agentsOf(s.target).map((n) => ({ ...agentView(n), device: 'mock' })));
      let m = /^\/api\/v1\/agents\/([^/]+)\/comments$/.exec(p);
      if (m) return json(res, 200, comments.filter((c) => c.agent === decodeURIComponent(m[1])));
      if (p === '/api/v1/shares') {
        if (s.permission !== 'owner') return err(res, 403, 'E021', 'owner only');
        if (req.method === 'POST') {
          const b = await body(req);
          return json(res, 201, createGrant(b.target, b.permission, { expires_in_secs: b.expires_in_secs, max_uses: b.one_time ? 1 : b.max_uses }));
        }
        return json(res, 200, [...grants.values()].map(shareView));
      }
      m = /^\/api\/v1\/shares\/([^/]+)$/.exec(p);
      if (m && req.method === 'DELETE') {
        revoke(m[1]);
        res.writeHead(204);
        return res.end();
      }
      return err(res, 404, 'E003', 'no such route');
    }
    if (p === '/mock/send') {
      const b = await body(req);
      agents.get(b.agent).input(Buffer.from(b.text));
      for (const s of sessions.values()) if (agentsOf(s.target).includes(b.agent)) broadcast(s, { type: 'input_by', agent: b.agent, by: { kind: 'agent', name: 'cli' } });
      return json(res, 200, {});
    }
    if (p === '/mock/share') {
      const b = await body(req);
      return json(res, 200, createGrant(b.target, b.permission, b));
    }
    if (p === '/mock/revoke') {
      revoke((await body(req)).id);
      return json(res, 200, {});
    }
    if (p === '/mock/drop') {
      // An abnormal close of every socket (the client should reconnect).
      for (const ws of wss.clients) ws.terminate();
      return json(res, 200, {});
    }
    if (p === '/mock/log') return json(res, 200, { text: agents.get(url.searchParams.get('agent')).plain() });
    // Static files, SPA fallback.
    let file = p === '/' || p.startsWith('/s/') ? 'index.html' : p.slice(1);
    let data;
    try {
      data = await readFile(join(DIST, file));
    } catch {
      file = 'index.html';
      data = await readFile(join(DIST, file));
    }
    res.writeHead(200, {
      'content-type': MIME[extname(file)] ?? 'application/octet-stream',
      // The node's policy (crates/node/src/web/rest.rs).
      'content-security-policy':
        "default-src 'self'; connect-src 'self' ws: wss:; style-src 'self' 'unsafe-inline'; img-src 'self' data:; frame-ancestors 'none'",
      'referrer-policy': 'no-referrer',
    });
    res.end(data);
  } catch (e) {
    err(res, 500, 'E000', String(e));
  }
});

function revoke(id) {
  const g = grants.get(id);
  if (!g) return;
  g.revoked = true;
  for (const s of sessions.values()) for (const c of [...s.conns]) if (people.get(c.person)?.grant === id) close(c, 'revoked');
  for (const [pid, p] of people) if (p.grant === id) people.delete(pid);
}

// ---- WebSocket ----
const wss = new WebSocketServer({ server, path: '/ws' });
wss.on('connection', (ws, req) => {
  const c = { ws, person: null, session: null, subs: new Map() };
  ws.once('message', (data, isBinary) => {
    let m;
    try { m = JSON.parse(String(data)); } catch { m = null; }
    if (isBinary || !m || m.type !== 'auth') {
      refuse(c, 'E007', 'the first message must be `auth`', '', 'auth');
      return ws.close(4001, 'unauthorized');
    }
    let person;
    if (m.token) {
      const g = grants.get(bySecret.get(sha(m.token)) ?? '');
      if (!g || g.revoked || (g.max_uses && g.uses >= g.max_uses)) {
        refuse(c, 'E021', g ? 'this link was revoked or used up' : 'this share link is not valid on this node', 'ask for a new link', 'auth');
        return ws.close(4001, 'unauthorized');
      }
      g.uses++;
      person = 'p-' + rnd(4);
      people.set(person, { id: person, name: (m.name ?? '').trim() || 'guest-' + rnd(1), permission: g.permission, device: m.device ?? 'browser', target: g.target, grant: g.id });
    } else {
      person = cookies.get(cookieOf(req));
      if (!person || !people.has(person)) {
        refuse(c, 'E021', 'no share secret and no session cookie', 'open the full share link', 'auth');
        return ws.close(4001, 'unauthorized');
      }
    }
    const p = people.get(person);
    const target = p.target === '*' && m.target ? m.target : p.target;
    c.person = person;
    const ticket = rnd(10);
    tickets.set(ticket, person);
    const s = sessionOf(target);
    c.session = s;
    s.conns.add(c);
    s.seen.set(person, now());
    send(c, { type: 'auth_ok', protocol: 3, you: personView(s, person), target, ticket });
    send(c, {
      type: 'session_state', target, agents: agentsOf(target).map(agentView), people: target === '*' ? [] : peopleOf(s),
      control_requests: s.requests, comments: comments.filter((x) => agentsOf(target).includes(x.agent)),
    });
    if (target !== '*') {
      broadcast(s, { type: 'person_joined', person: personView(s, person) });
      presence(s);
    }
    ws.on('message', (d, bin) => (bin ? onInput(c, Buffer.from(d)) : onMsg(c, JSON.parse(String(d)))));
    ws.on('close', () => {
      s.conns.delete(c);
      for (const [name, fn] of c.subs) agents.get(name)?.subs.delete(fn);
      if (![...s.conns].some((x) => x.person === person)) {
        if (s.floor === person) { s.floor = null; broadcast(s, { type: 'control_revoked', person }); }
        s.requests = s.requests.filter((r) => r !== person);
        broadcast(s, { type: 'person_left', person });
        presence(s);
      }
    });
  });
});

function floorFor(s, id) { return s.floor === null ? 'free' : s.floor === id ? 'mine' : 'other'; }

function onInput(c, buf) {
  const s = c.session;
  const p = people.get(c.person);
  if (buf.length < 6 || buf[0] !== 3) return refuse(c, 'E007', 'bad frame', '', undefined);
  if (!allowed(p.permission, 'input', floorFor(s, c.person))) {
    return refuse(c, 'E021', p.permission === 'view' ? 'view-only: your keystrokes are not sent (your permission: view)' : 'you may not type in this session', 'ask for control', 'input');
  }
  const agent = [...c.subs.entries()].find(([, f]) => f.channel === buf[1])?.[0];
  if (!agent) return refuse(c, 'E004', 'no terminal on that channel', '', 'input');
  agents.get(agent).input(buf.subarray(6));
  broadcast(s, { type: 'input_by', agent, by: { kind: 'person', id: c.person, name: p.name } });
}

function frame(ty, ch, payload) {
  const h = Buffer.alloc(6);
  h[0] = ty; h[1] = ch; h.writeUInt32BE(payload.length, 2);
  return Buffer.concat([h, payload]);
}

function onMsg(c, m) {
  const s = c.session;
  const p = people.get(c.person);
  if (!p) return;
  s.seen.set(c.person, now());
  if (s.target === '*') {
    if (m.type === 'ping') return send(c, { type: 'pong' });
    if (m.type === 'session_leave') return close(c, 'left');
    return refuse(c, 'E011', 'open an agent first: reconnect with auth {target: "agent:<name>"}', '', m.type);
  }
  const action = {
    terminal_subscribe: 'watch', terminal_unsubscribe: 'watch', presence_update: 'watch', session_leave: 'watch', ping: 'watch',
    terminal_resize: 'resize', control_request: 'request', control_grant: 'moderate', control_deny: 'moderate',
    control_revoke: m.person === c.person ? 'release' : 'moderate', permission_change: 'moderate', kick: 'moderate',
    comment_add: 'comment', comment_resolve: 'comment', comment_react: 'comment', comment_delete: 'comment',
    agent_start: 'startstop', agent_stop: 'startstop',
  }[m.type];
  if (!action) return refuse(c, 'E007', `unknown message ${m.type}`, '', m.type);
  if (!allowed(p.permission, action, floorFor(s, c.person))) return refuse(c, 'E021', `not allowed (your permission: ${p.permission})`, 'ask the owner', m.type);
  switch (m.type) {
    case 'ping': return send(c, { type: 'pong' });
    case 'presence_update': return presence(s);
    case 'session_leave': return close(c, 'left');
    case 'terminal_subscribe': {
      const a = agents.get(m.agent);
      if (!a) return refuse(c, 'E004', `no agent named '${m.agent}'`, '', m.type);
      const channel = c.subs.size;
      send(c, { type: 'terminal_subscribed', agent: m.agent, channel, cols: 80, rows: 24 });
      if (m.since !== undefined && m.since <= a.log.length) {
        const seqB = Buffer.alloc(8); seqB.writeBigUInt64BE(BigInt(m.since));
        c.ws.send(frame(1, channel, Buffer.concat([seqB, a.log.subarray(m.since)])));
      } else {
        const head = Buffer.alloc(20);
        head.writeBigUInt64BE(BigInt(a.log.length), 0); head.writeUInt16BE(80, 8); head.writeUInt16BE(24, 10); head.writeBigUInt64BE(1n, 12);
        c.ws.send(frame(2, channel, Buffer.concat([head, a.log])));
      }
      const fn = (seq, bytes) => {
        const seqB = Buffer.alloc(8); seqB.writeBigUInt64BE(BigInt(seq));
        if (c.ws.readyState === 1) c.ws.send(frame(1, channel, Buffer.concat([seqB, bytes])));
      };
      fn.channel = channel;
      a.subs.add(fn);
      c.subs.set(m.agent, fn);
      return;
    }
    case 'control_request':
      if (!s.requests.includes(c.person)) s.requests.push(c.person);
      for (const x of s.conns) if (people.get(x.person)?.permission === 'owner' || x.person === c.person) send(x, { type: 'control_requested', person: c.person, name: p.name });
      return;
    case 'control_grant':
      if (s.floor && s.floor !== m.person) broadcast(s, { type: 'control_revoked', person: s.floor });
      s.floor = m.person;
      s.requests = s.requests.filter((r) => r !== m.person);
      broadcast(s, { type: 'control_granted', person: m.person });
      return presence(s);
    case 'control_deny':
      s.requests = s.requests.filter((r) => r !== m.person);
      return broadcast(s, { type: 'control_denied', person: m.person });
    case 'control_revoke':
      if (s.floor === m.person) s.floor = null;
      broadcast(s, { type: 'control_revoked', person: m.person });
      return presence(s);
    case 'permission_change':
      people.get(m.person).permission = m.permission;
      broadcast(s, { type: 'permission_changed', person: m.person, permission: m.permission });
      return presence(s);
    case 'kick':
      for (const x of [...s.conns]) if (x.person === m.person) close(x, 'kicked');
      people.delete(m.person);
      return;
    case 'comment_add': {
      const a = agents.get(m.agent);
      const lines = a.plain().split('\n');
      const cv = {
        id: 'c-' + rnd(4), agent: m.agent, line: m.line, line_hash: '', line_text: (lines[m.line - 1] ?? '').slice(0, 200),
        text: m.text, author: p.name, author_id: c.person, created_at_ms: now(), parent: m.parent, resolved: false, deleted: false, reactions: [],
      };
      comments.push(cv);
      for (const x of sessions.values()) if (agentsOf(x.target).includes(m.agent)) broadcast(x, { type: 'comment_added', comment: cv });
      return;
    }
    case 'comment_resolve':
    case 'comment_delete':
    case 'comment_react': {
      const cv = comments.find((x) => x.id === m.id);
      if (!cv) return refuse(c, 'E004', 'no such comment', '', m.type);
      if (m.type === 'comment_resolve') cv.resolved = m.resolved;
      if (m.type === 'comment_delete') cv.deleted = true;
      if (m.type === 'comment_react') {
        const r = new Map(cv.reactions);
        const names = new Set(r.get(m.emoji) ?? []);
        if (m.on) names.add(p.name); else names.delete(p.name);
        if (names.size) r.set(m.emoji, [...names].sort()); else r.delete(m.emoji);
        cv.reactions = [...r];
      }
      for (const x of sessions.values()) if (agentsOf(x.target).includes(cv.agent)) broadcast(x, { type: 'comment_updated', comment: cv });
      return;
    }
    default:
      return;
  }
}

let base = '';
server.listen(PORT, '127.0.0.1', () => {
  base = `http://127.0.0.1:${server.address().port}`;
  const owner = createGrant('*', 'owner');
  console.log(JSON.stringify({ base, url: owner.url }));
});
