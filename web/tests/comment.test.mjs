// A comment-level guest comments on an output line; the owner sees it live
// with the right absolute line number, and a gutter marker on that row.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { Node, launchBrowser, openGuest, openOwner, tid, until, waitForLine, clickRowWithText } from './harness.mjs';

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

test('a guest comments on a line and the owner sees it on that line', { timeout: 120_000 }, async () => {
  const owner = await openOwner(browser, node.ownerUrl);
  const share = await node.share('t1', 'comment');
  const guest = await openGuest(browser, share.url, 'Commenter');

  await node.send('t1', 'echo comment-$((5*5))');
  await waitForLine(guest, 'comment-25');
  await waitForLine(owner, 'comment-25');
  const expected = await until('comment-25 in the log', () => node.lineOf('t1', 'comment-25'));

  // The guest picks the row by clicking it: the line input gets its absolute number.
  await clickRowWithText(guest, 'comment-25');
  await guest.waitForFunction(
    (n) => document.querySelector('[data-testid="comment-line"]').value === String(n),
    expected,
  );
  await guest.locator(tid('comment-text')).fill('why 25?');
  await guest.locator(tid('comment-add')).click();

  // The owner's panel shows it, on the right line.
  const comment = owner.locator(tid('comment'), { hasText: 'why 25?' });
  await comment.waitFor();
  assert.equal(await comment.locator(tid('comment-line-label')).innerText(), `line ${expected}`);
  assert.equal(await comment.locator(tid('comment-author')).innerText(), 'Commenter');
  // ...and so does the guest's own panel.
  await guest.locator(tid('comment'), { hasText: 'why 25?' }).waitFor();

  // The owner's gutter marker sits on the row that shows the text.
  const marker = owner.locator(`${tid('comment-marker')}[data-line="${expected}"]`);
  await marker.waitFor({ state: 'visible' });
  const rowBox = await owner.evaluate(() => {
    for (const row of document.querySelectorAll('[data-testid="terminal"] .xterm-rows > div')) {
      if (row.textContent.trim() === 'comment-25') {
        const r = row.getBoundingClientRect();
        return { top: r.top, bottom: r.bottom };
      }
    }
    return null;
  });
  assert.ok(rowBox, 'the owner does not show comment-25 on screen');
  const box = await marker.boundingBox();
  const mid = box.y + box.height / 2;
  assert.ok(mid >= rowBox.top && mid <= rowBox.bottom, `marker at y=${mid}, row at ${rowBox.top}..${rowBox.bottom}`);
});
