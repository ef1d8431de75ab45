// A comment-level guest comments on an output line; the owner sees it live
// with the right absolute line number, and a gutter marker on that row; after
// the owner resizes the PTY (which re-wraps a long line above it), both
// markers still sit on that row.

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

/** The row box of the visible terminal row whose text is exactly `text`. */
async function rowBox(page, text) {
  return page.evaluate((t) => {
    for (const row of document.querySelectorAll('[data-testid="terminal"] .xterm-rows > div')) {
      if (row.textContent.trim() === t) {
        const r = row.getBoundingClientRect();
        return { top: r.top, bottom: r.bottom };
      }
    }
    return null;
  }, text);
}

/** The gutter marker of absolute line `line` sits on the row showing `text`. */
async function assertMarkerOnRow(page, who, line, text) {
  const marker = page.locator(`${tid('comment-marker')}[data-line="${line}"]`);
  await marker.waitFor({ state: 'visible' });
  // The marker is placed after a paint: allow a frame for layout.
  await until(`${who}: the marker of line ${line} on the row showing ${text}`, async () => {
    const row = await rowBox(page, text);
    const box = await marker.boundingBox();
    if (!row || !box) return false;
    const mid = box.y + box.height / 2;
    return mid >= row.top && mid <= row.bottom;
  });
}

test('a guest comments on a line and the owner sees it on that line, also after a resize', { timeout: 120_000 }, async () => {
  const owner = await openOwner(browser, node.ownerUrl);
  const share = await node.share('t1', 'comment');
  const guest = await openGuest(browser, share.url, 'Commenter');

  // A line longer than the narrowed PTY will be, just above the target.
  await node.send('t1', "printf '%0150d\\n' 0; echo comment-$((5*5))");
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
  await assertMarkerOnRow(owner, 'owner', expected, 'comment-25');
  await assertMarkerOnRow(guest, 'guest', expected, 'comment-25');

  // The owner (the driver) narrows the window and fits the PTY to it: the
  // long line above re-wraps onto more rows, and every viewer is repainted
  // at the new size. The markers follow their line.
  const cols = await owner.evaluate(() => window.__agentos.term.cols);
  await owner.setViewportSize({ width: 760, height: 900 });
  await owner.locator(tid('fit-pty')).click();
  await owner.waitForFunction((c) => window.__agentos.term.cols < c, cols);
  const narrow = await owner.evaluate(() => window.__agentos.term.cols);
  assert.ok(narrow < 150, `the PTY is ${narrow} columns: the long line must wrap`);
  await guest.waitForFunction((c) => window.__agentos.term.cols === c, narrow);
  await waitForLine(owner, 'comment-25');
  await waitForLine(guest, 'comment-25');
  assert.equal(await comment.locator(tid('comment-line-label')).innerText(), `line ${expected}`);
  await assertMarkerOnRow(owner, 'owner', expected, 'comment-25');
  await assertMarkerOnRow(guest, 'guest', expected, 'comment-25');
});
