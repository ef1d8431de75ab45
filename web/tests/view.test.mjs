// A view-only guest sees live output, and its keystrokes have no effect; it
// browses the agent's file tree, read-only.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { MOCK, Node, launchBrowser, openGuest, tid, typeLine, until, waitForLine, screenLines } from './harness.mjs';

let node;
let browser;

before(async () => {
  node = await Node.start();
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  await node?.stop();
});

test('a view-only guest sees live output and cannot type', { timeout: 120_000 }, async () => {
  const share = await node.share('t1', 'view');
  const guest = await openGuest(browser, share.url, 'Viewer');

  // The keyboard is visibly off.
  await guest.locator(tid('readonly-banner')).waitFor({ state: 'visible' });
  assert.match(await guest.locator(tid('readonly-banner')).innerText(), /View only/i);
  assert.equal(await guest.locator(tid('status-permission')).innerText(), 'view');

  // Live output reaches the guest.
  await node.send('t1', 'echo view-$((40+2))');
  await waitForLine(guest, 'view-42');

  // Typing goes nowhere: not into the agent, not onto the screen.
  await typeLine(guest, 'echo guest-typed-$((1+1))');
  await node.send('t1', 'echo sync-$((3+4))');
  await until('sync-7 in the log', async () => (await node.lineOf('t1', 'sync-7')) !== null);
  await waitForLine(guest, 'sync-7');
  const { lines } = await node.logs('t1');
  assert.ok(!lines.some((l) => l.includes('guest-typed')), 'the guest typed into the agent');
  assert.ok(!(await screenLines(guest)).some((l) => l.includes('guest-typed')));
  const stats = await guest.evaluate(() => window.__agentos.state.stats);
  assert.equal(stats.inputFrames, 0, 'a view-only client sent input frames');
  assert.ok(stats.droppedKeys > 0, 'the keystrokes were not seen at all');
});

test('a view-only guest browses the file tree', { timeout: 120_000, skip: MOCK && 'needs the real node' }, async () => {
  await mkdir(join(node.cwd, 'src'), { recursive: true });
  await writeFile(join(node.cwd, 'src', 'parser.rs'), 'fn parse() {}\n');
  await writeFile(join(node.cwd, 'NOTES.md'), '# notes\n');
  const share = await node.share('t1', 'view');
  const guest = await openGuest(browser, share.url, 'Browser');
  await guest.locator(tid('files-toggle')).click();
  await guest.locator(tid('file'), { hasText: 'NOTES.md' }).waitFor();
  await guest.locator(tid('file'), { hasText: 'src/' }).locator('a').click();
  await guest.locator(tid('file'), { hasText: 'parser.rs' }).waitFor();
  assert.match(await guest.locator(tid('files-path')).innerText(), /src\//);
});
