// Revoking a link (`agentos share revoke <id>`) disconnects its guest at once.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { Node, launchBrowser, openGuest, tid } from './harness.mjs';

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

test('a revoked link disconnects its guest', { timeout: 120_000 }, async () => {
  const share = await node.share('t1', 'view');
  const guest = await openGuest(browser, share.url, 'Revokee');

  await node.revoke(share.id);
  const screen = guest.locator(tid('disconnected'));
  await screen.waitFor({ state: 'visible', timeout: 5000 });
  assert.equal(await screen.getAttribute('data-reason'), 'revoked');
  assert.match(await guest.locator(tid('disconnected-reason')).innerText(), /revoked/i);
});
