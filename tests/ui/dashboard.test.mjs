// The dashboard in a real browser: Debian's Chromium, headless, driven by playwright-core.
// Run by scripts/ui-test.sh, which starts the server (the approval_flow example: the
// built-in agents plus one that waits for a human) and passes:
//   AGENTQ_BASE      the server's base URL
//   AGENTQ_CLI       the binary, for `keys create`
//   AGENTQ_DB        its --database-url
//   AGENTQ_SHOTS     where screenshots go
//   AGENTQ_CHROMIUM  the browser (default /usr/bin/chromium)
// The tests run in order and share one server: later ones build on earlier ones' runs.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import { chromium } from 'playwright-core';

const BASE = process.env.AGENTQ_BASE;
const SHOTS = process.env.AGENTQ_SHOTS || 'target/ui-screenshots';
assert.ok(BASE, 'AGENTQ_BASE must name the server');
mkdirSync(SHOTS, { recursive: true });

let browser;
let context;
let page;
let key = null; // once made, every API call needs it
const pageErrors = [];
const runs = {};

function watch(p) {
  p.on('pageerror', (e) => pageErrors.push(`${p.url()}: ${e.message}`));
  p.on('console', (m) => {
    // failed requests (a 401 before the key is given, say) are the page's business
    if (m.type() === 'error' && !m.text().startsWith('Failed to load resource')) pageErrors.push(`${p.url()}: ${m.text()}`);
  });
  return p;
}

async function newContext(options = {}) {
  const c = await browser.newContext({ viewport: { width: 1280, height: 900 }, ...options });
  return c;
}

async function call(method, path, body, credential = key) {
  const headers = { 'content-type': 'application/json' };
  if (credential) headers.authorization = `Bearer ${credential}`;
  const response = await fetch(`${BASE}${path}`, { method, headers, body: body ? JSON.stringify(body) : undefined });
  const text = await response.text();
  assert.ok(response.ok, `${method} ${path}: ${response.status} ${text}`);
  return JSON.parse(text);
}

const submit = (body) => call('POST', '/v1/runs', body);

async function waitForStatus(id, status, ms = 30000) {
  const until = Date.now() + ms;
  for (;;) {
    const run = await call('GET', `/v1/runs/${id}`);
    if (run.status === status) return run;
    assert.ok(Date.now() < until, `run ${id} is ${run.status}, not ${status}, after ${ms} ms`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** The page shows a run's status badge with this text. */
async function runPageShows(p, status, ms = 30000) {
  try {
    await p.locator('h1 .badge', { hasText: new RegExp(`^${status}$`) }).waitFor({ timeout: ms });
  } catch (error) {
    // say what the page and the API showed instead: a rare timeout here is otherwise blind
    const shown = await p.locator('h1').innerText({ timeout: 1000 }).catch(() => '(no h1)');
    const id = decodeURIComponent((p.url().split('#/runs/')[1] || '').split('?')[0]);
    const run = id ? await call('GET', `/v1/runs/${id}`).catch((e) => ({ status: `unreadable: ${e}` })) : null;
    const live = await p.evaluate(() => performance.getEntriesByType('resource')
      .filter((r) => r.responseEnd === 0).map((r) => r.name)).catch(() => []);
    throw new Error(`the page shows "${shown}" while the API says ${run ? run.status : '?'}; `
      + `requests unanswered: ${JSON.stringify(live)}; ${error.message}`);
  }
}

/** No horizontal scrolling: the page fits its viewport's width. */
async function fitsWidth(p) {
  const [scroll, width] = await p.evaluate(() => [document.documentElement.scrollWidth, window.innerWidth]);
  assert.ok(scroll <= width, `${p.url()} is ${scroll} px wide in a ${width} px viewport`);
}

before(async () => {
  browser = await chromium.launch({
    executablePath: process.env.AGENTQ_CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  context = await newContext();
  page = watch(await context.newPage());
});

after(async () => {
  if (browser) await browser.close();
});

test('runs submitted through the API appear in the table, with counts, filters and search', async () => {
  for (let i = 0; i < 3; i++) {
    runs[`growth${i}`] = await submit({ agent: 'echo', input: { value: i }, metadata: { team: 'growth', ticket: `GRO-${100 + i}` } });
  }
  runs.broken = await submit({ agent: 'echo', input: { value: 'x', fail_permanently: true }, metadata: { team: 'infra' }, max_attempts: 1 });
  await waitForStatus(runs.growth2.id, 'succeeded');
  await waitForStatus(runs.broken.id, 'failed');
  await page.goto(`${BASE}/ui/`);
  for (const r of [runs.growth0, runs.growth1, runs.growth2, runs.broken]) {
    await page.locator(`a[href="#/runs/${r.id}"]`).waitFor();
  }
  // counts by status, from the same filters
  await page.locator('.counts button', { hasText: 'failed' }).waitFor();
  assert.match(await page.locator('.counts button', { hasText: 'all' }).innerText(), /all\s*4/);
  // a metadata filter
  await page.fill('#f-meta', 'team=infra');
  await page.press('#f-meta', 'Enter');
  await page.waitForFunction(() => document.querySelectorAll('tbody tr').length === 1);
  assert.equal(await page.locator(`a[href="#/runs/${runs.broken.id}"]`).count(), 1);
  // the list says why a run failed
  assert.match(await page.locator('tbody tr').innerText(), /agent_error: failed permanently, as asked/);
  assert.match(page.url(), /meta=team%3Dinfra/);
  await page.fill('#f-meta', '');
  // search over metadata values, then ids
  await page.fill('#f-q', 'gro-101');
  await page.waitForFunction((id) => document.querySelectorAll('tbody tr').length === 1 && document.querySelector(`a[href="#/runs/${id}"]`), runs.growth1.id);
  await page.fill('#f-q', runs.growth2.id.slice(-10));
  await page.waitForFunction((id) => document.querySelectorAll('tbody tr').length === 1 && document.querySelector(`a[href="#/runs/${id}"]`), runs.growth2.id);
  // a status chip filters by status
  await page.fill('#f-q', '');
  await page.waitForFunction(() => document.querySelectorAll('tbody tr').length === 4);
  await page.locator('.counts button', { hasText: 'failed' }).click();
  await page.waitForFunction(() => document.querySelectorAll('tbody tr').length === 1);
  // the chips are drawn again for the new filter; the one pressed keeps the focus
  await page.waitForFunction(() => document.activeElement.dataset.value === 'failed'
    && document.activeElement.getAttribute('aria-pressed') === 'true');
  await page.selectOption('#f-status', '');
  await page.waitForFunction(() => document.querySelectorAll('tbody tr').length === 4);
  await page.screenshot({ path: `${SHOTS}/runs.png`, fullPage: true });
});

test('a bad filter gets a clear message naming the field, not a trace', async () => {
  await page.goto(`${BASE}/ui/#/runs?status=bogus`);
  const notice = page.locator('.notice.error');
  await notice.waitFor();
  const text = await notice.innerText();
  assert.match(text, /status/);
  assert.doesNotMatch(text, /\bat \S+:\d+|stack|panicked/i);
  // a metadata filter that does not parse changes nothing: not the address, not the rows
  await page.goto(`${BASE}/ui/#/runs?meta=team%3Dinfra`);
  await page.waitForFunction(() => document.querySelectorAll('tbody tr').length === 1);
  await page.fill('#f-meta', 'team');
  await page.press('#f-meta', 'Enter');
  await page.locator('.notice.error', { hasText: 'Metadata filter: "team" is not key=value' }).waitFor();
  assert.match(page.url(), /meta=team%3Dinfra$/);
  // the refresh every 3 s goes on with the filter in force, without repeating the error
  const shown = await page.locator('.notice.error').elementHandle();
  await page.waitForTimeout(3500);
  assert.ok(await shown.evaluate((n) => n.isConnected), 'the same notice, not a new one');
  assert.equal(await page.locator('tbody tr').count(), 1);
  // a run opened from a filtered list leads back to that list
  await page.locator(`a[href="#/runs/${runs.broken.id}"]`).click();
  await runPageShows(page, 'failed');
  await page.getByRole('link', { name: '← Runs' }).click();
  await page.waitForURL(/#\/runs\?meta=team%3Dinfra$/);
  await page.goto(`${BASE}/ui/#/runs/00000000-0000-7000-8000-000000000000`);
  await page.locator('h1', { hasText: 'No such run' }).waitFor();
});

test('a run due later says in the list when it starts', async () => {
  const later = new Date(Date.now() + 3 * 3600e3).toISOString();
  const due = await submit({ agent: 'echo', input: { value: 'later' }, run_at: later, metadata: { demo: 'due' } });
  await page.goto(`${BASE}/ui/#/runs?meta=demo%3Ddue`);
  const row = page.locator('tbody tr', { has: page.locator(`a[href="#/runs/${due.id}"]`) });
  await row.waitFor();
  assert.match(await row.innerText(), /starts in 2 h 59 min|starts in 3 h 0 min/);
  await call('POST', `/v1/runs/${due.id}/cancel`);
});

test('pages cursor through older runs', async () => {
  const extra = [];
  for (let i = 0; i < 26; i++) extra.push(submit({ agent: 'echo', input: { value: i }, metadata: { batch: 'paging' } }));
  await Promise.all(extra);
  await page.goto(`${BASE}/ui/#/runs?meta=batch%3Dpaging`);
  await page.waitForFunction(() => document.querySelectorAll('tbody tr').length === 25);
  await page.getByRole('button', { name: 'Older →' }).click();
  await page.waitForFunction(() => document.querySelectorAll('tbody tr').length === 1);
  await page.getByRole('button', { name: '← Newer' }).click();
  await page.waitForFunction(() => document.querySelectorAll('tbody tr').length === 25);
});

test('a run opened from the table shows its progress reaching 100 % live', async () => {
  runs.slow = await submit({ agent: 'echo', input: { value: 'slow', delay_ms: 4000, steps: 8 }, metadata: { demo: 'progress' } });
  await page.goto(`${BASE}/ui/#/runs`);
  // by keyboard: focus the run's link and press Enter
  const link = page.locator(`a[href="#/runs/${runs.slow.id}"]`);
  await link.focus();
  await page.keyboard.press('Enter');
  await page.waitForURL(`**/ui/#/runs/${runs.slow.id}`);
  await page.locator('h1', { hasText: runs.slow.id }).waitFor();
  // it is followed live: progress arrives without a reload
  await page.waitForFunction(() => {
    const p = document.querySelector('.bigprogress progress');
    return p && p.value > 0 && p.value < 100;
  }, null, { timeout: 20000 });
  await page.screenshot({ path: `${SHOTS}/run-progress.png`, fullPage: true });
  await runPageShows(page, 'succeeded');
  await page.waitForFunction(() => document.querySelector('.bigprogress progress').value === 100);
  // every progress event is in the timeline
  await page.waitForFunction(() => [...document.querySelectorAll('.timeline .badge')]
    .filter((b) => b.textContent === 'progress').length === 8);
  assert.match(await page.locator('section', { hasText: 'Result' }).innerText(), /"value": "slow"/);
  assert.equal(await page.locator('.live').isVisible(), false, 'the stream ends with the run');
  await page.screenshot({ path: `${SHOTS}/run.png`, fullPage: true });
});

test('a streaming run shows its text growing live, as one output', async () => {
  const text = 'Every word of this answer arrives while the run is still going, one after another.';
  const run = await submit({ agent: 'echo', input: { text, delay_ms: 3000 } });
  await page.goto(`${BASE}/ui/#/runs/${run.id}`);
  const output = page.locator('section.output .outbody');
  // part of it, then all of it, without a reload
  await page.waitForFunction((full) => {
    const shown = document.querySelector('section.output .outbody')?.textContent || '';
    return shown.length > 0 && shown.length < full.length && full.startsWith(shown);
  }, text, { timeout: 20000 });
  await page.screenshot({ path: `${SHOTS}/run-streaming.png`, fullPage: true });
  await runPageShows(page, 'succeeded');
  await page.waitForFunction((full) => document.querySelector('section.output .outbody')?.textContent === full, text);
  assert.equal(await output.count(), 1);
  // the parts are not listed one by one among the events
  assert.equal(await page.locator('.timeline .badge', { hasText: /^stream$/ }).count(), 0);
});

test('a waiting run is rejected with a comment, then approved, from its form', async () => {
  runs.plan = await submit({ agent: 'approval_flow', input: { task: 'migrate the billing tables' } });
  await page.goto(`${BASE}/ui/#/runs/${runs.plan.id}`);
  await runPageShows(page, 'waiting');
  const form = page.locator('form.waitbox');
  await form.waitFor();
  // a wait is not time spent running: the page says since when it waits
  await page.locator('dl.facts dt', { hasText: 'Waiting since' }).waitFor();
  assert.doesNotMatch(await page.locator('dl.facts').innerText(), /Took/);
  assert.match(await page.locator('dl.facts').innerText(), /Attempt\s+1 of/, 'a waiting run is in its first attempt');
  await page.fill('#signal-comment', 'do it in two steps');
  assert.equal(await page.getByLabel('Payload (a JSON object)').count(), 1, 'the payload field is labelled');
  await page.screenshot({ path: `${SHOTS}/run-waiting.png`, fullPage: true });
  await form.getByRole('button', { name: 'Send plan_rejected' }).click();
  await page.locator('.notice.ok', { hasText: 'Sent plan_rejected' }).waitFor();
  // the agent plans again with the comment as feedback, and waits again: a fresh form
  await page.waitForFunction(() => [...document.querySelectorAll('.timeline .badge')]
    .filter((b) => b.textContent === 'waiting').length === 2, null, { timeout: 20000 });
  await runPageShows(page, 'waiting');
  assert.equal(await page.inputValue('#signal-comment'), '', 'the new wait has a new form');
  await form.getByRole('button', { name: 'Send plan_approved' }).click();
  await runPageShows(page, 'succeeded');
  await form.waitFor({ state: 'detached' });
  const run = await call('GET', `/v1/runs/${runs.plan.id}`);
  assert.match(JSON.stringify(run.result ?? run.checkpoint), /do it in two steps/, 'the comment reached the agent');
  const signals = (await call('GET', `/v1/runs/${runs.plan.id}/events`)).events.filter((e) => e.type === 'signal_received');
  assert.deepEqual(signals.map((e) => e.data.name), ['plan_rejected', 'plan_approved']);
  // the timeline: one attempt, resumed after each wait (not numbered anew), with the waits
  // between as bars on one time axis
  const rows = await page.locator('.gantt-rows .glabel b').allInnerTexts();
  assert.deepEqual(rows.filter((r) => r.startsWith('Attempt')), ['Attempt 1', 'Attempt 1, resumed', 'Attempt 1, resumed']);
  assert.equal(rows.filter((r) => r.startsWith('Waiting for')).length, 2);
  assert.match(await page.locator('.gantt-rows .k-wait').first().innerText(), /got plan_rejected/);
  const widths = await page.locator('.gantt-rows .bar').evaluateAll((bars) => bars.map((b) => b.getBoundingClientRect().width));
  assert.ok(widths.every((w) => w >= 3), `every part has a visible bar: ${widths}`);
  assert.equal(await page.locator('.gantt .axis .tick').count(), 5);
  // the signals with their payloads and who sent them
  const sent = page.locator('ul.signals li');
  assert.equal(await sent.count(), 2);
  assert.match(await sent.first().innerText(), /plan_rejected[\s\S]*Payload: comment: do it in two steps/);
  assert.match(await sent.first().innerText(), /by (open|key:)/);
  // events read as words, not JSON
  const data = await page.locator('.timeline .data').allInnerTexts();
  assert.ok(data.every((t) => !t.trim().startsWith('{')), `an event shows raw JSON: ${data.join(' | ')}`);
  assert.ok(data.some((t) => /^for plan_approved or plan_rejected or answers_received until \d{4}-\d\d-\d\d \d\d:\d\d:\d\d$/.test(t)), data.join(' | '));
  assert.ok(data.some((t) => /plan_rejected · payload comment: do it in two steps$/.test(t)), data.join(' | '));
});

test('a running run is cancelled, after a confirmation', async () => {
  runs.long = await submit({ agent: 'echo', input: { value: 'long', delay_ms: 60000, steps: 60 } });
  await waitForStatus(runs.long.id, 'running');
  await page.goto(`${BASE}/ui/#/runs/${runs.long.id}`);
  await runPageShows(page, 'running');
  await page.getByRole('button', { name: 'Cancel run' }).click();
  // the question stays put while the run's progress events (one a second) arrive
  const before = await page.locator('.timeline li').count();
  await page.waitForFunction((n) => document.querySelectorAll('.timeline li').length >= n + 2, before, { timeout: 10000 });
  assert.equal(await page.evaluate(() => document.activeElement.textContent), 'Keep it');
  // keeping it leads back to the button that asked
  await page.keyboard.press('Enter');
  assert.equal(await page.evaluate(() => document.activeElement.textContent), 'Cancel run');
  await page.keyboard.press('Enter');
  await page.getByRole('button', { name: 'Yes, cancel it' }).click();
  await runPageShows(page, 'cancelled');
  // the button pressed is gone; the focus is on the page's first action, not lost
  await page.waitForFunction(() => document.activeElement.textContent === 'Refresh');
  assert.equal((await call('GET', `/v1/runs/${runs.long.id}`)).status, 'cancelled');
  assert.equal(await page.getByRole('button', { name: 'Cancel run' }).count(), 0);
});

test('a concurrency key lists its runs, and a run waiting its turn is changed from its page', async () => {
  const holder = await submit({ agent: 'echo', input: { value: 'hold', delay_ms: 60000 }, concurrency_key: 'ui:1' });
  await waitForStatus(holder.id, 'running');
  const next = await submit({ agent: 'echo', input: { value: 'next' }, concurrency_key: 'ui:1' });
  assert.equal(next.status, 'blocked');
  await page.goto(`${BASE}/ui/#/runs?key=ui%3A1`);
  await page.waitForFunction(() => document.querySelectorAll('tbody tr').length === 2);
  assert.equal(await page.locator('#f-key').inputValue(), 'ui:1');
  await page.locator('tbody tr', { hasText: 'waits its turn' }).waitFor();
  await page.goto(`${BASE}/ui/#/runs/${next.id}`);
  await runPageShows(page, 'blocked');
  assert.match(await page.locator('dl.facts').innerText(), /ui:1 \(limit 1\): waits its turn/);
  await page.locator('#change-priority').fill('7');
  await page.getByRole('button', { name: 'Change' }).click();
  await page.locator('.notice.ok', { hasText: 'Changed.' }).waitFor();
  assert.equal((await call('GET', `/v1/runs/${next.id}`)).priority, 7);
  const changed = (await call('GET', `/v1/runs/${next.id}/events`)).events.find((e) => e.type === 'changed');
  assert.equal(changed.data.priority, 7);
  // once the holder is gone the waiting run is let in, and the form goes as it starts
  await call('POST', `/v1/runs/${holder.id}/cancel`);
  await runPageShows(page, 'succeeded');
  assert.equal(await page.locator('#change-priority').count(), 0);
});

test('a failed run shows its error and attempts, and is retried from its page', async () => {
  await page.goto(`${BASE}/ui/#/runs/${runs.broken.id}`);
  await runPageShows(page, 'failed');
  assert.match(await page.locator('.errorbox').innerText(), /agent_error: failed permanently, as asked/);
  // its one attempt's row in the timeline says how it ended and why
  assert.match(await page.locator('.gantt-rows .k-attempt').innerText(), /Attempt 1[\s\S]*failed[\s\S]*agent_error: failed permanently/);
  assert.match(await page.locator('section', { hasText: 'Result' }).innerText(), /None: the run failed\./);
  await page.getByRole('button', { name: 'Retry' }).click();
  await page.locator('.notice.ok', { hasText: 'Queued again' }).waitFor();
  const events = (await call('GET', `/v1/runs/${runs.broken.id}/events`)).events;
  assert.ok(events.some((e) => e.type === 'requeued'));
});

test('queues show each agent with a throughput chart of the last hour', async () => {
  await page.goto(`${BASE}/ui/#/queues`);
  const row = page.locator('tbody tr', { hasText: 'echo' });
  await row.waitFor();
  await page.waitForFunction(() => document.querySelectorAll('svg.chart rect.c-succeeded').length > 0);
  const queues = await call('GET', '/v1/queues');
  const echo = queues.queues.find((q) => q.agent === 'echo');
  const ok = echo.succeeded_per_minute.reduce((a, b) => a + b, 0);
  assert.ok(ok >= 4, `${ok} echo runs succeeded`);
  await page.waitForFunction((text) => [...document.querySelectorAll('tbody tr')].some((r) => r.innerText.includes(text)), ` ${ok} ok`);
  assert.ok(await page.locator('tbody tr', { hasText: 'approval_flow' }).count());
  // axes: runs a minute up the side (0 at the bottom), clock times along it, now last
  assert.equal(await page.locator('.chartbox .yaxis span').last().innerText(), '0');
  assert.equal(await page.locator('.chartbox .xaxis .tick').last().innerText(), 'now');
  assert.match(await page.locator('.chartbox .xaxis .tick').first().innerText(), /^\d\d:\d\d$/);
  assert.match(await page.locator('p', { hasText: 'Runs finished a minute' }).innerText(), /last 10 min: [\d.]+ a minute; the 50 before: [\d.]+ a minute/);
  // one time format on every page: the refresh stamp too
  assert.match(await page.locator('p', { hasText: 'Updated' }).innerText(), /^Updated \d\d:\d\d:\d\d; every 5 s\.$/);
  await page.screenshot({ path: `${SHOTS}/queues.png`, fullPage: true });
});

test('a queue is paused and resumed from the queues page', async () => {
  await page.goto(`${BASE}/ui/#/queues`);
  await page.getByRole('button', { name: 'Pause echo' }).click();
  await page.locator('.notice.ok', { hasText: 'echo paused' }).waitFor();
  await page.locator('tbody tr', { hasText: 'echo' }).locator('.badge.paused').waitFor();
  // while paused, a new run waits
  const waiting = await submit({ agent: 'echo', input: { value: 9 } });
  await new Promise((r) => setTimeout(r, 500));
  assert.equal((await call('GET', `/v1/runs/${waiting.id}`)).status, 'queued');
  await page.getByRole('button', { name: 'Resume echo' }).click();
  await page.locator('.notice.ok', { hasText: 'echo resumed' }).waitFor();
  await waitForStatus(waiting.id, 'succeeded');
  // the table is drawn again after the notice: the badge goes then
  await page.locator('tbody tr', { hasText: 'echo' }).locator('.badge.paused').waitFor({ state: 'detached' });
});

test('schedules show their next tick, and are paused, resumed and deleted from their page', async () => {
  const made = await call('POST', '/v1/schedules', { name: 'ui-nightly', cron: '0 3 * * *', timezone: 'Europe/Paris', agent: 'echo', input: { value: 'nightly' } });
  runs.schedule = made;
  await page.goto(`${BASE}/ui/#/schedules`);
  const row = page.locator('tbody tr', { hasText: 'ui-nightly' });
  await row.waitFor();
  assert.match(await row.innerText(), /0 3 \* \* \* Europe\/Paris/);
  assert.match(await row.innerText(), /none yet/);
  await page.getByRole('button', { name: 'Pause ui-nightly' }).click();
  await page.locator('.notice.ok', { hasText: 'ui-nightly paused' }).waitFor();
  await row.locator('.badge.paused').waitFor();
  assert.equal((await call('GET', `/v1/schedules/${made.id}`)).paused, true);
  await page.getByRole('button', { name: 'Resume ui-nightly' }).click();
  await page.locator('.notice.ok', { hasText: 'ui-nightly resumed' }).waitFor();
  assert.equal((await call('GET', `/v1/schedules/${made.id}`)).paused, false);
  await page.screenshot({ path: `${SHOTS}/schedules.png`, fullPage: true });
  // deleting asks first
  await page.getByRole('button', { name: 'Delete ui-nightly' }).click();
  await page.getByRole('button', { name: 'Yes, delete it' }).click();
  await page.locator('.notice.ok', { hasText: 'ui-nightly deleted' }).waitFor();
  await row.waitFor({ state: 'detached' });
  assert.equal((await call('GET', '/v1/schedules')).schedules.length, 0);
  // one to show on the narrow screen below
  runs.kept = await call('POST', '/v1/schedules', { name: 'ui-hourly', interval: '1h', agent: 'echo', input: { value: 'hourly' } });
});

test('workers show the live process with its agents', async () => {
  await page.goto(`${BASE}/ui/#/workers`);
  const row = page.locator('tbody tr', { hasText: 'alive' });
  await row.waitFor();
  const text = await row.innerText();
  assert.match(text, /approval_flow/);
  assert.match(text, /echo/);
  await page.screenshot({ path: `${SHOTS}/workers.png`, fullPage: true });
});

test('an external worker and its declared agent show their language and where they run', async () => {
  // a Python worker, as the SDK speaks to the API: it declares its agent and heartbeats
  await call('PUT', '/v1/agents/py_ui', { worker_id: 'py-ui-1', description: 'a Python agent' });
  await call('POST', '/v1/workers/py-ui-1/heartbeat', {
    language: 'python', version: '0.1.0', host: 'laptop', pid: 4242, agents: ['py_ui'], concurrency: 8,
  });
  await page.goto(`${BASE}/ui/#/workers`);
  const worker = page.locator('tbody tr', { hasText: 'py-ui-1' });
  await worker.waitFor();
  const text = await worker.innerText();
  assert.match(text, /python/);
  assert.match(text, /py_ui/);
  assert.match(text, /0 \/ 8/);
  await page.goto(`${BASE}/ui/#/queues`);
  const queue = page.locator('tbody tr', { hasText: 'py_ui' });
  await queue.waitFor();
  assert.match(await queue.innerText(), /external worker/);
  assert.match(await page.locator('tbody tr', { hasText: 'approval_flow' }).innerText(), /agentq/);
});

test('every page fits a 360 px wide screen', async () => {
  const narrow = await newContext({ viewport: { width: 360, height: 740 }, isMobile: true, hasTouch: true });
  const p = watch(await narrow.newPage());
  for (const [path, ready, shot] of [
    ['#/runs', 'tbody tr', 'mobile-runs'],
    [`#/runs/${runs.slow.id}`, '.timeline li', 'mobile-run'],
    [`#/runs/${runs.plan.id}`, '.timeline li', null],
    ['#/queues', 'svg.chart', 'mobile-queues'],
    ['#/schedules', 'tbody tr', null],
    ['#/workers', 'tbody tr', null],
  ]) {
    await p.goto(`${BASE}/ui/${path}`);
    await p.locator(ready).first().waitFor();
    await fitsWidth(p);
    if (path === '#/runs') {
      // a run's progress bar is drawn on a phone too, not squeezed to nothing
      const widths = await p.locator('td .progress progress').evaluateAll((bars) => bars.map((b) => b.getBoundingClientRect().width));
      assert.ok(widths.length && widths.every((w) => w > 60), `progress bars at 360 px: ${widths}`);
    }
    if (shot) await p.screenshot({ path: `${SHOTS}/${shot}.png` });
  }
  await narrow.close();
});

test('the keyboard reaches everything: the skip link first, then the sections', async () => {
  const focused = () => page.evaluate(() => {
    const e = document.activeElement;
    return e.id || e.textContent.trim();
  });
  await page.goto(`${BASE}/ui/#/queues`);
  await page.reload();
  await page.locator('tbody tr').first().waitFor();
  await page.keyboard.press('Tab');
  assert.equal(await focused(), 'Skip to content');
  // the skip link moves the focus to the page, and stays on the page
  await page.keyboard.press('Enter');
  assert.equal(await focused(), 'main');
  assert.match(page.url(), /#\/queues$/);
  await page.keyboard.press('Tab');
  assert.equal(await focused(), 'approval_flow', 'the first link of the page');
  // the header's sections, by Tab from the top, open with Enter
  await page.reload();
  await page.locator('tbody tr').first().waitFor();
  const seen = [];
  for (let i = 0; i < 3; i++) {
    await page.keyboard.press('Tab');
    seen.push(await focused());
  }
  assert.deepEqual(seen, ['Skip to content', 'agentq', 'Runs']);
  await page.keyboard.press('Enter');
  await page.waitForURL('**/ui/#/runs');
  await page.locator('tbody tr').first().waitFor();
  // a status chip keeps the focus across the table's refreshes
  const chip = page.locator('.counts button', { hasText: 'all' });
  await chip.focus();
  await page.waitForTimeout(3500);
  assert.match(await focused(), /^all/);
});

test('once a key exists the page asks for one, keeps it for the tab, and refuses a wrong one', async () => {
  const out = execFileSync(process.env.AGENTQ_CLI, ['keys', 'create', '--tenant', 'default', '--scopes', 'runs:read,runs:write', '--name', 'ui-test', '--database-url', process.env.AGENTQ_DB], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
  key = out.match(/aq_[A-Za-z0-9_]+/)[0];
  // the server learns of the first key within its key cache's 5 s
  const until = Date.now() + 15000;
  for (;;) {
    const r = await fetch(`${BASE}/v1/runs?limit=1`);
    if (r.status === 401) break;
    assert.ok(Date.now() < until, 'the API still answers without a key');
    await new Promise((res) => setTimeout(res, 250));
  }
  const fresh = await newContext();
  const p = watch(await fresh.newPage());
  await p.goto(`${BASE}/ui/#/runs`);
  await p.locator('#key-panel').waitFor({ state: 'visible' });
  assert.match(await p.locator('#key-reason').innerText(), /needs an API key/);
  // the command reads as code, not with literal backticks
  assert.equal(await p.locator('#key-reason code').innerText(), 'agentq keys create --tenant <name>');
  assert.doesNotMatch(await p.locator('#key-reason').innerText(), /`/);
  // the page keeps polling (and hearing 401) while the key is typed: what is typed stays
  await p.type('#key-input', 'aq_half');
  await p.waitForTimeout(3500);
  assert.equal(await p.inputValue('#key-input'), 'aq_half');
  await p.fill('#key-input', '');
  await p.fill('#key-input', 'aq_wrong_key');
  await p.press('#key-input', 'Enter');
  await p.locator('#key-reason', { hasText: 'refused' }).waitFor();
  await p.fill('#key-input', key);
  await p.press('#key-input', 'Enter');
  await p.locator(`a[href="#/runs/${runs.slow.id}"]`).waitFor();
  assert.equal(await p.locator('#key-panel').isVisible(), false);
  // kept for this tab: a reload needs no second entry
  await p.reload();
  await p.locator(`a[href="#/runs/${runs.slow.id}"]`).waitFor();
  // a key without admin sees why the workers are not shown
  await p.goto(`${BASE}/ui/#/workers`);
  await p.locator('p', { hasText: 'admin scope' }).waitFor();
  await fresh.close();
});

test('a run token opens its own run and nothing else', async () => {
  const created = await submit({ agent: 'approval_flow', input: { task: 'rotate the keys' } });
  await waitForStatus(created.id, 'waiting');
  const fresh = await newContext();
  const p = watch(await fresh.newPage());
  await p.goto(`${BASE}/ui/#/runs/${created.id}?token=${encodeURIComponent(created.run_token)}`);
  await runPageShows(p, 'waiting');
  assert.doesNotMatch(p.url(), /token=/, 'the token leaves the address bar');
  assert.equal(await p.locator('nav a[data-section="queues"]').isVisible(), false);
  assert.equal(await p.getByRole('button', { name: 'Cancel run' }).count(), 0, 'a token cannot cancel');
  assert.equal(await p.getByRole('link', { name: '← Runs' }).count(), 0, 'no way to a list the token cannot open');
  // one main signal, the others set apart
  const buttons = p.locator('form.waitbox .actions button');
  assert.equal(await buttons.first().getAttribute('class'), null);
  assert.equal(await buttons.last().getAttribute('class'), 'secondary');
  // the token may send the signal its run waits for
  await p.getByRole('button', { name: 'Send plan_approved' }).click();
  await runPageShows(p, 'succeeded');
  await p.locator('form.waitbox').waitFor({ state: 'detached' });
  // the timeline says who sent it: the run's own token
  await p.locator('.timeline li', { hasText: `by run_token:${created.id}` }).waitFor();
  // any other page leads back to the run
  await p.goto(`${BASE}/ui/#/queues`);
  await p.waitForURL(`**/ui/#/runs/${created.id}`);
  await fresh.close();
});

test('the API docs render with no internet: everything they load comes from agentq', async () => {
  const offline = await newContext();
  const outside = [];
  await offline.route('**/*', (route) => {
    if (route.request().url().startsWith(BASE)) return route.continue();
    outside.push(route.request().url());
    return route.abort();
  });
  const p = watch(await offline.newPage());
  await p.goto(`${BASE}/docs/`);
  await p.locator('.swagger-ui .info .title', { hasText: 'agentq' }).waitFor();
  await p.locator('.opblock-tag', { hasText: 'schedules' }).first().waitFor();
  assert.deepEqual(outside, [], 'requests beyond agentq');
  await offline.close();
});

test('no page raised a script error', () => {
  assert.deepEqual(pageErrors, []);
});
