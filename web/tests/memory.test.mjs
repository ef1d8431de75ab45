// The shared memory in the browser: an edit-level collaborator adds and
// claims a task and records a decision; the owner sees it live, the CLI
// (what agents use) sees it too, and a view-level guest sees it read-only.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { MOCK, Node, launchBrowser, openGuest, openOwner, tid, until } from './harness.mjs';

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

test('edit level edits the shared memory; everyone sees it; view is read-only', { timeout: 120_000, skip: MOCK && 'needs the real node' }, async () => {
  const owner = await openOwner(browser, node.ownerUrl);
  const editor = await openGuest(browser, (await node.share('t1', 'edit')).url, 'Editor');
  const viewer = await openGuest(browser, (await node.share('t1', 'view')).url, 'Viewer');

  // The editor adds a task from the panel.
  await editor.locator(tid('task-title')).fill('review the parser');
  await editor.locator(tid('task-add')).click();
  const ownerTask = owner.locator(tid('task'), { hasText: 'review the parser' });
  await ownerTask.waitFor();

  // ...claims it: everyone sees who holds it.
  await editor.locator(tid('task'), { hasText: 'review the parser' }).locator(tid('task-claim')).click();
  await ownerTask.locator(tid('task-holder')).waitFor();
  assert.equal(await ownerTask.locator(tid('task-holder')).innerText(), '@web:Editor');
  const viewerTask = viewer.locator(tid('task'), { hasText: 'review the parser' });
  await viewerTask.locator(tid('task-holder')).waitFor();
  assert.equal(await viewerTask.getAttribute('data-status'), 'in_progress');

  // ...and records a decision.
  await editor.locator(tid('decision-text')).fill('Parse with a hand-written lexer');
  await editor.locator(tid('decision-add')).click();
  await owner.locator(tid('decision'), { hasText: 'Parse with a hand-written lexer' }).waitFor();

  // Agents see the same memory through the CLI.
  const tasks = await until('the task in `agentos task list`', async () => {
    const list = JSON.parse(await node.cli(['task', 'list', '--json']));
    return list.find((t) => t.title === 'review the parser') ?? null;
  });
  assert.equal(tasks.holder, 'web:Editor');

  // The view-level guest has no editing controls, and says why.
  await viewer.locator(tid('memory-readonly')).waitFor();
  assert.equal(await viewer.locator(tid('task-form')).count(), 0);
  assert.equal(await viewer.locator(tid('task-claim')).count(), 0);
  assert.equal(await viewer.locator(tid('context-edit')).count(), 0);

  // A change from the CLI (an agent closing it) reaches the browsers live.
  await node.cli(['task', 'close', tasks.id, '--reason', 'done']);
  await until('the closed task leaves the open list', async () => (await owner.locator(tid('task'), { hasText: 'review the parser' }).count()) === 0);
});
