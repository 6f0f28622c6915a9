// Drives the console of a running `crmsync serve` in Debian's headless
// Chromium, as a person would: the list shows every sync, a sync's page
// opens, a hostile name renders as text, Run now starts a run that appears
// in the history. Screenshots go to the folder given, for review.
//
//   node browser.mjs <console URL> <sync with the hostile record> <screenshot folder>
//
// Chromium: $CRMSYNC_TEST_CHROMIUM (scripts/test.sh installs Debian's).
import { chromium } from "playwright-core";
import assert from "node:assert/strict";
import { mkdirSync } from "node:fs";
import { join } from "node:path";

const [base, sync, shots] = process.argv.slice(2);
assert.ok(base && sync && shots, "usage: node browser.mjs <url> <sync> <screenshot folder>");
const executablePath = process.env.CRMSYNC_TEST_CHROMIUM;
assert.ok(executablePath, "CRMSYNC_TEST_CHROMIUM is not set: run the tests with `bash scripts/test.sh`");
mkdirSync(shots, { recursive: true });

// The flags keep a sandboxed, offline machine's Chromium from reaching for
// Google's services at start (their refused connections slow it down).
const browser = await chromium.launch({
  executablePath,
  headless: true,
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
try {
  const problems = [];
  page.on("pageerror", (e) => problems.push(`page error: ${e.message}`));
  page.on("dialog", (d) => { problems.push(`a dialog opened: ${d.message()}`); d.dismiss(); });
  page.on("console", (m) => { if (m.type() === "error") problems.push(`console: ${m.text()}`); });

  await page.goto(base + "/");
  const rows = page.locator("table.syncs tbody tr");
  assert.ok((await rows.count()) >= 2, "the list shows every sync");
  const names = await page.locator("table.syncs tbody tr td:first-child").allTextContents();
  assert.ok(names.includes(sync), `the list names ${sync}: ${names}`);
  await page.screenshot({ path: join(shots, "syncs.png"), fullPage: true });

  await page.locator("table.syncs").getByRole("link", { name: sync, exact: true }).click();
  await page.waitForSelector("section.sync");
  assert.equal(await page.locator("h1 bdi").first().textContent(), sync);
  const runsBefore = await page.locator("table.runs tbody tr[data-run]").count();
  assert.ok(runsBefore >= 1, "the first run is in the history");

  // The hostile records show their text, not markup: a script tag, a
  // right-to-left override and a NUL escaped, a 5,000-character name cut.
  const contacts = (await page.locator("table.contacts").textContent()) ?? "";
  assert.ok(contacts.includes("<script>window.__pwned = true</script>"), `the script tag is text: ${contacts.slice(0, 300)}`);
  assert.ok(contacts.includes("\\u{202e}"), "the right-to-left override is shown escaped");
  assert.ok(contacts.includes("nul\\u{0}byte"), "the NUL is shown escaped");
  assert.ok(contacts.includes("L".repeat(160) + "…"), "the long name is cut");
  assert.equal(await page.locator("main script, main img, main iframe").count(), 0, "no element came from a value");
  assert.equal(await page.evaluate(() => window.__pwned === true), false, "no value ran as script");

  const lastRun = Number(await page.locator("table.runs tbody tr[data-run]").first().getAttribute("data-run"));
  await page.click("#run-now");
  // The page reloads itself when the run changes the sync; wait for the new run.
  await page.waitForSelector(`table.runs tbody tr[data-run="${lastRun + 1}"]`, { timeout: 30_000 });
  await page.waitForSelector(`table.runs tbody tr[data-run="${lastRun + 1}"] .run.completed`, { timeout: 30_000 });
  await page.screenshot({ path: join(shots, "sync.png"), fullPage: true });

  assert.deepEqual(problems, [], "the page ran without errors");
  console.log(`ok: ${names.length} syncs listed; run ${lastRun + 1} started from Run now`);
} catch (error) {
  await page.screenshot({ path: join(shots, "failure.png"), fullPage: true }).catch(() => {});
  console.error(`at ${page.url()}`);
  throw error;
} finally {
  await browser.close();
}
