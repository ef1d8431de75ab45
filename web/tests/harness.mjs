// Shared setup of the browser end-to-end tests: a real AgentOS node (the
// built `agentos` binary with its own temporary AGENTOS_HOME and a web
// server on 127.0.0.1:0), a bash agent `t1`, Debian's Chromium driven by
// playwright-core, and helpers that wait on conditions (never on time).
//
// Environment:
//   AGENTOS_BIN      the binary (default ../target/debug/agentos from web/)
//   CHROMIUM         the browser (default /usr/bin/chromium)
//   AGENTOS_E2E_MOCK=1  use tools/mock-node.mjs instead of the binary (to
//                       work on the client; the node is the real target)

import { spawn, execFile } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { chromium } from 'playwright-core';

const run = promisify(execFile);
const WEB = fileURLToPath(new URL('..', import.meta.url));
export const BIN = resolve(WEB, process.env.AGENTOS_BIN ?? '../target/debug/agentos');
export const CHROMIUM = process.env.CHROMIUM ?? '/usr/bin/chromium';
export const MOCK = process.env.AGENTOS_E2E_MOCK === '1';
/** How long any single condition may take. */
export const WAIT_MS = 20_000;

const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

/** Poll `fn` until it returns a truthy value (or throw after `timeout`). */
export async function until(what, fn, timeout = WAIT_MS, every = 100) {
  const end = Date.now() + timeout;
  let last;
  for (;;) {
    try {
      const v = await fn();
      if (v) return v;
    } catch (e) {
      last = e;
    }
    if (Date.now() > end) {
      throw new Error(`timed out after ${timeout} ms waiting for ${what}${last ? `: ${last.message}` : ''}`);
    }
    await new Promise((r) => setTimeout(r, every));
  }
}

/** A node with one agent, `t1`. */
export class Node {
  static async start() {
    const n = new Node();
    try {
      await (MOCK ? n.startMock() : n.startReal());
    } catch (e) {
      // A half-started node (daemon, agent) must not outlive the test.
      await n.stop();
      throw e;
    }
    return n;
  }

  // ---- the real node ----

  async startReal() {
    if (!existsSync(BIN)) throw new Error(`no agentos binary at ${BIN}: build it (cargo build) or set AGENTOS_BIN`);
    this.home = await mkdtemp(join(tmpdir(), 'agentos-web-e2e-'));
    this.cwd = await mkdtemp(join(tmpdir(), 'agentos-web-cwd-'));
    this.env = {
      ...process.env,
      AGENTOS_HOME: this.home,
      AGENTOS_WEB_LISTEN: '127.0.0.1:0',
      PS1: '$ ',
      TERM: 'xterm-256color',
    };
    await this.cli(['create', 't1', '--detach', '--isolation', 'none', '--', 'bash', '--norc', '-i']);
    const web = JSON.parse(await this.cli(['web', '--json']));
    this.base = web.base;
    this.ownerUrl = web.url;
    // The shell is ready once it runs a command.
    await this.send('t1', 'echo ready-$((20+1))');
    await until('the agent t1 to run a command', async () => (await this.lineOf('t1', 'ready-21')) !== null);
  }

  async cli(args) {
    try {
      const { stdout } = await run(BIN, args, { env: this.env, cwd: this.cwd, timeout: 30_000 });
      return stdout;
    } catch (e) {
      throw new Error(`agentos ${args.join(' ')} failed: ${e.stderr || e.message}`);
    }
  }

  // ---- the mock node ----

  async startMock() {
    this.proc = spawn(process.execPath, [join(WEB, 'tools/mock-node.mjs'), '0'], { stdio: ['ignore', 'pipe', 'inherit'] });
    const first = await new Promise((res, rej) => {
      this.proc.stdout.once('data', (d) => res(String(d)));
      this.proc.once('exit', (c) => rej(new Error(`mock node exited (${c})`)));
    });
    const { base, url } = JSON.parse(first.split('\n')[0]);
    this.base = base;
    this.ownerUrl = url;
  }

  async mock(path, body) {
    const r = await fetch(this.base + path, { method: 'POST', body: JSON.stringify(body ?? {}) });
    return r.json();
  }

  // ---- what the tests do ----

  /** A share link: `{id, url, ...}` (`url` is the browser link with `#secret`). */
  async share(agent, permission) {
    if (MOCK) return this.mock('/mock/share', { target: `agent:${agent}`, permission });
    return JSON.parse(await this.cli(['share', agent, '--permission', permission, '--json']));
  }

  async revoke(id) {
    if (MOCK) return this.mock('/mock/revoke', { id });
    await this.cli(['share', 'revoke', id]);
  }

  /** Type `text` into the agent and press Enter (as `agentos send --enter`). */
  async send(agent, text) {
    if (MOCK) return this.mock('/mock/send', { agent, text: `${text}\r` });
    await this.cli(['send', agent, text, '--enter']);
  }

  /** The agent's output as plain lines: `{first, lines}` (line `first + i` is `lines[i]`). */
  async logs(agent) {
    if (MOCK) {
      const r = await fetch(`${this.base}/mock/log?agent=${agent}`, { method: 'POST' });
      return { first: 1, lines: (await r.json()).text.split('\n') };
    }
    return JSON.parse(await this.cli(['logs', agent, '--json']));
  }

  /** Absolute line number of the (last) output line that is exactly `text`. */
  async lineOf(agent, text) {
    const { first, lines } = await this.logs(agent);
    const i = lines.map((l) => l.trim()).lastIndexOf(text);
    return i < 0 ? null : first + i;
  }

  async stop() {
    if (MOCK) {
      this.proc?.kill('SIGTERM');
      return;
    }
    if (!this.home) return;
    try {
      await this.cli(['daemon', 'stop', '--kill-agents']);
    } catch (e) {
      console.error(String(e));
    }
    await rm(this.home, { recursive: true, force: true });
    if (this.cwd) await rm(this.cwd, { recursive: true, force: true });
  }
}

export async function launchBrowser() {
  return chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS, headless: true });
}

/** A fresh browser context (its own cookies and localStorage) with one page. */
export async function newPage(browser, label) {
  const context = await browser.newContext({ viewport: { width: 1400, height: 900 } });
  const page = await context.newPage();
  page.setDefaultTimeout(WAIT_MS);
  page.on('pageerror', (e) => console.error(`[${label}] page error: ${e.message}`));
  page.on('console', (m) => {
    if (m.type() === 'error' || m.type() === 'warning') console.error(`[${label}] ${m.type()}: ${m.text()}`);
  });
  return page;
}

const byTestId = (id) => `[data-testid="${id}"]`;
export { byTestId as tid };

/** Open a link; answer the join form with `name` when it asks. */
export async function openLink(page, url, name) {
  await page.goto(url);
  // The secret leaves the address bar at once.
  await page.waitForFunction(() => !location.hash);
  const join = page.locator(byTestId('join-name'));
  const screen = await page.waitForFunction(() => {
    const s = window.__agentos?.state?.screen;
    return s && s !== 'connecting' ? s : false;
  });
  if ((await screen.jsonValue()) === 'join') {
    await join.fill(name);
    await page.locator(byTestId('join-button')).click();
  }
}

/** Wait until the page shows `agent`'s terminal with its first paint written. */
export async function waitForTerminal(page, agent = 't1') {
  await page.waitForFunction(
    (a) => {
      const s = window.__agentos?.state;
      return s?.screen === 'terminal' && s.agent === a && s.nextSeq !== null && window.__agentos.term;
    },
    agent,
  );
}

/** A guest opens a share link and lands on the agent's terminal. */
export async function openGuest(browser, url, name) {
  const page = await newPage(browser, name);
  await openLink(page, url, name);
  await waitForTerminal(page);
  return page;
}

/** The owner opens `agentos web`'s link, sees the dashboard, and opens `agent`. */
export async function openOwner(browser, url, agent = 't1') {
  const page = await newPage(browser, 'owner');
  await openLink(page, url, 'Owner');
  await page.locator(byTestId('dashboard')).waitFor();
  await page.locator(`${byTestId('agent-row')}[data-name="${agent}"]`).click();
  await waitForTerminal(page, agent);
  return page;
}

/** The terminal's logical lines (trimmed). */
export async function screenLines(page) {
  return page.evaluate(() => window.__agentos.lines().map((l) => l.trim()));
}

/** Wait until some logical line of the page's terminal is exactly `text`. */
export async function waitForLine(page, text) {
  await page.waitForFunction((t) => window.__agentos.lines().some((l) => l.trim() === t), text);
}

/** Click the terminal row (in view) whose text is exactly `text`. */
export async function clickRowWithText(page, text) {
  const pos = await page.evaluate((t) => {
    const term = window.__agentos.term;
    const buf = term.buffer.active;
    for (let r = buf.length - 1; r >= 0; r--) {
      if (buf.getLine(r)?.translateToString(true).trim() !== t) continue;
      const y = r - buf.viewportY;
      if (y < 0 || y >= term.rows) return null;
      const rect = term.element.querySelector('.xterm-screen').getBoundingClientRect();
      const rowH = rect.height / term.rows;
      return { x: rect.left + Math.min(rect.width / 2, 40), y: rect.top + (y + 0.5) * rowH };
    }
    return null;
  }, text);
  if (!pos) throw new Error(`no row showing '${text}' in view`);
  await page.mouse.click(pos.x, pos.y);
}

/** Click into the terminal and type `text`, then Enter. */
export async function typeLine(page, text) {
  await page.locator(`${byTestId('terminal')} .xterm-screen`).click();
  await page.keyboard.type(text);
  await page.keyboard.press('Enter');
}
