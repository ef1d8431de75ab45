// Floor control: a comment-level guest asks for control, the owner grants
// it, the guest's typing reaches the agent; the owner revokes it and the
// guest's keyboard is dead again.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { Node, launchBrowser, openGuest, openOwner, tid, typeLine, until, waitForLine } from './harness.mjs';

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

test('control is requested, granted, used and revoked', { timeout: 120_000 }, async () => {
  const owner = await openOwner(browser, node.ownerUrl);
  const share = await node.share('t1', 'comment');
  const guest = await openGuest(browser, share.url, 'Driver');

  await guest.locator(tid('readonly-banner')).waitFor({ state: 'visible' });
  await guest.locator(tid('control-request')).click();

  // The owner is asked, and grants.
  const prompt = owner.locator(tid('control-prompt'), { hasText: 'Driver' });
  await prompt.waitFor();
  await prompt.locator(tid('control-grant')).click();

  // The guest's keyboard is live.
  await guest.waitForFunction(() => window.__agentos.canType === true);
  await guest.locator(tid('readonly-banner')).waitFor({ state: 'hidden' });
  await owner.locator(`${tid('person')}[data-name="Driver"] ${tid('control-badge')}`).waitFor();
  await typeLine(guest, 'echo typed-by-guest');
  await until('typed-by-guest in the log', async () => (await node.lineOf('t1', 'typed-by-guest')) !== null);
  await waitForLine(owner, 'typed-by-guest');

  // The owner takes control back.
  await owner.locator(`${tid('person')}[data-name="Driver"] ${tid('person-revoke')}`).click();
  await guest.waitForFunction(() => window.__agentos.canType === false);
  await guest.locator(tid('readonly-banner')).waitFor({ state: 'visible' });

  const sentBefore = await guest.evaluate(() => window.__agentos.state.stats.inputFrames);
  await typeLine(guest, 'echo after-revoke-$((2+2))');
  await node.send('t1', 'echo sync-$((8+1))');
  await until('sync-9 in the log', async () => (await node.lineOf('t1', 'sync-9')) !== null);
  await waitForLine(guest, 'sync-9');
  const { lines } = await node.logs('t1');
  assert.ok(!lines.some((l) => l.includes('after-revoke')), 'the guest still typed after revocation');
  assert.equal(await guest.evaluate(() => window.__agentos.state.stats.inputFrames), sentBefore);
});
