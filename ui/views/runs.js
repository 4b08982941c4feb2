// Runs: newest first, filtered by status, agent, time range, metadata, concurrency key and
// a search over ids and metadata values, with counts by status and cursor paging.

import { api } from '../api.js';
import { STATUSES, ago, badge, chips, duration, every, h, progressBar, redraw, runLink, table } from '../dom.js';

const RANGES = [
  ['', 'Any time'], ['15m', 'Last 15 minutes'], ['1h', 'Last hour'], ['24h', 'Last 24 hours'],
  ['7d', 'Last 7 days'], ['custom', 'Between…'],
];
const RANGE_MS = { '15m': 15 * 60e3, '1h': 3600e3, '24h': 86400e3, '7d': 7 * 86400e3 };
const PAGE = 25;
const FIELDS = ['q', 'status', 'agent', 'range', 'from', 'to', 'meta', 'key'];

/** Where the list's address, filters and all, is kept for a run page's link back. */
export const LIST_KEY = 'agentq.runs-list';

/** `team=growth note="two words"` into pairs; anything else is an error naming it. */
function parseMeta(text) {
  const pairs = [];
  const rest = text.replace(/([^\s="]+)=(?:"([^"]*)"|([^\s"]*))/g, (_, key, quoted, bare) => {
    pairs.push([key, quoted ?? bare]);
    return ' ';
  }).trim();
  if (rest) throw new Error(`"${rest.split(/\s+/)[0]}" is not key=value (quote a value with spaces: key="a b")`);
  return pairs;
}

function localInput(value) {
  // a datetime-local value is local time without a zone
  if (!value) return null;
  const d = new Date(value);
  return Number.isNaN(d.getTime()) ? null : d.toISOString();
}

export function render(root, params, ctx) {
  const state = Object.fromEntries(FIELDS.map((f) => [f, params.get(f) || '']));
  const typedMeta = state.meta;
  try {
    parseMeta(state.meta);
  } catch (error) {
    // an address edited by hand: said once, and the list is shown without it
    ctx.notify('error', `Metadata filter not applied: ${error.message}`);
    state.meta = '';
  }
  remember();
  let cursors = [null]; // the cursor of each page shown so far; the last is the current page
  let stopped = false;
  let lastShown = '';
  let lastCounts = '';
  let countsAt = 0; // when the counts were last read: they read every matching run, so less often

  const field = (name, label, control) => h('div', { class: name === 'q' || name === 'meta' ? 'wide' : null },
    h('label', { for: `f-${name}` }, label), control);
  const q = h('input', { id: 'f-q', type: 'search', value: state.q, placeholder: 'run id or metadata value', maxlength: 200 });
  const status = h('select', { id: 'f-status' }, h('option', { value: '' }, 'Any status'),
    STATUSES.map((s) => h('option', { value: s, selected: s === state.status }, s)));
  const agent = h('select', { id: 'f-agent' }, h('option', { value: '' }, 'Any agent'));
  if (state.agent) agent.append(h('option', { value: state.agent, selected: true }, state.agent));
  const range = h('select', { id: 'f-range' }, RANGES.map(([v, l]) => h('option', { value: v, selected: v === state.range }, l)));
  const from = h('input', { id: 'f-from', type: 'datetime-local', value: state.from, step: 1 });
  const to = h('input', { id: 'f-to', type: 'datetime-local', value: state.to, step: 1 });
  const meta = h('input', { id: 'f-meta', type: 'text', value: typedMeta, placeholder: 'team=growth note="two words"', spellcheck: 'false' });
  const key = h('input', { id: 'f-key', type: 'text', value: state.key, placeholder: 'user:42', maxlength: 255, spellcheck: 'false' });
  const fromField = field('from', 'Created from', from);
  const toField = field('to', 'Created before', to);
  const form = h('form', { class: 'filters', role: 'search', 'aria-label': 'Filter runs' },
    field('q', 'Search', q), field('status', 'Status', status), field('agent', 'Agent', agent),
    field('range', 'Created', range), fromField, toField, field('meta', 'Metadata', meta),
    field('key', 'Concurrency key', key),
    h('div', {}, h('button', { type: 'submit' }, 'Apply')));
  const counts = h('ul', { class: 'counts', 'aria-label': 'Runs by status' });
  const live = h('input', { type: 'checkbox', id: 'f-live', checked: true });
  const list = h('div', { 'aria-live': 'off' });
  const newer = h('button', { type: 'button', class: 'secondary', disabled: true }, '← Newer');
  const older = h('button', { type: 'button', class: 'secondary', disabled: true }, 'Older →');
  const pageInfo = h('span', { class: 'muted small' });
  root.append(
    h('h1', {}, 'Runs'), form, counts, list,
    h('div', { class: 'pager' }, newer, older, pageInfo,
      h('label', { for: 'f-live', class: 'small' }, live, ' Refresh the first page every 3 s')),
  );

  const showCustom = () => { fromField.hidden = toField.hidden = range.value !== 'custom'; };
  showCustom();

  api('/v1/agents').then((body) => {
    for (const a of body.agents) {
      if (a.name !== state.agent) agent.append(h('option', { value: a.name }, a.name));
    }
  }).catch(() => { /* the list below reports errors */ });

  function query(forCounts) {
    const p = new URLSearchParams();
    if (state.q) p.set('q', state.q);
    if (state.agent) p.set('agent', state.agent);
    if (state.key) p.set('concurrency_key', state.key);
    if (!forCounts && state.status) p.set('status', state.status);
    if (RANGE_MS[state.range]) p.set('created_after', new Date(Date.now() - RANGE_MS[state.range]).toISOString());
    if (state.range === 'custom') {
      const a = localInput(state.from);
      const b = localInput(state.to);
      if (a) p.set('created_after', a);
      if (b) p.set('created_before', b);
    }
    for (const [k, v] of parseMeta(state.meta)) p.set(`metadata[${k}]`, v);
    if (!forCounts) {
      p.set('limit', String(PAGE));
      const cursor = cursors[cursors.length - 1];
      if (cursor) p.set('cursor', cursor);
    }
    return p.toString();
  }

  function remember() {
    const p = new URLSearchParams();
    for (const f of FIELDS) if (state[f]) p.set(f, state[f]);
    const qs = p.toString();
    const address = `#/runs${qs ? `?${qs}` : ''}`;
    history.replaceState(null, '', address);
    sessionStorage.setItem(LIST_KEY, address);
  }

  function renderCounts(c) {
    const signature = JSON.stringify([c, state.status]);
    if (signature === lastCounts) return; // keep the focus on a chip across refreshes
    lastCounts = signature;
    const chip = (value, label, n) => h('li', {}, h('button', {
      type: 'button', 'aria-pressed': String(state.status === value), dataset: { value },
      onclick: () => { state.status = value; status.value = value; apply(); },
    }, label, h('b', {}, String(n))));
    // a chip pressed (or focused) keeps the focus when the chips are drawn again
    redraw(counts, 'data-value', () => counts.replaceChildren(chip('', 'all', c.total),
      ...STATUSES.filter((s) => c.by_status[s] > 0 || s === state.status).map((s) => chip(s, s, c.by_status[s] || 0))));
  }

  function renderRuns(page) {
    const signature = JSON.stringify(page.runs.map((r) => [r.id, r.status, r.progress, r.attempt, r.updated_at, r.waiting_for_key]));
    if (signature === lastShown) return;
    lastShown = signature;
    // keyboard focus stays on the same run across a refresh
    redraw(list, 'href', () => list.replaceChildren(!page.runs.length
      ? h('p', { class: 'empty panel' }, cursors.length > 1 ? 'No older runs.' : 'No runs match. Submit one with POST /v1/runs.')
      : table([
        { label: 'Run', cell: (r) => runLink(r.id) },
        { label: 'Agent', cell: (r) => r.agent },
        { label: 'Status', cell: (r) => badge(r.status) },
        { label: 'Progress', cell: progressCell },
        { label: 'Attempt', num: true, cell: (r) => `${r.attempt} / ${r.max_attempts}` },
        { label: 'Created', cell: (r) => ago(r.created_at) },
        { label: 'Took', num: true, cell: (r) => (r.started_at ? duration(new Date(r.finished_at || Date.now()) - new Date(r.started_at)) : '—') },
        { label: 'Metadata', cell: (r) => chips(r.metadata) },
        { label: 'Key', cell: keyCell },
      ], page.runs)));
    pageInfo.textContent = `Page ${cursors.length}`;
  }

  function pager(page) {
    newer.disabled = cursors.length < 2;
    older.disabled = !page || !page.next_cursor;
    older.dataset.cursor = (page && page.next_cursor) || '';
  }

  let latest = 0;
  let loading = false; // a load is on its way: the timed refresh waits rather than overtake it
  /** Loads the page at `cursors` plus `next` (the older page's cursor), which joins them once it arrived. */
  async function load(next) {
    const mine = ++latest; // an answer to an older query is dropped
    // the metadata filter in `state` parsed before it was kept
    if (next) cursors.push(next);
    const qs = [query(false), query(true)];
    if (next) cursors.pop();
    const withCounts = Date.now() - countsAt > 15000 || !lastCounts;
    newer.disabled = older.disabled = true;
    loading = true;
    try {
      const [page, c] = await Promise.all([api(`/v1/runs?${qs[0]}`), withCounts ? api(`/v1/runs/counts?${qs[1]}`) : null]);
      if (stopped || mine !== latest) return;
      if (next) cursors.push(next);
      renderRuns(page);
      pager(page);
      if (c) {
        countsAt = Date.now();
        renderCounts(c);
      }
    } catch (error) {
      if (!stopped && mine === latest) {
        ctx.report(error);
        pager(null);
        newer.disabled = cursors.length < 2;
      }
    } finally {
      if (mine === latest) loading = false;
    }
  }

  function apply() {
    // a filter that does not parse changes nothing: not the address, not the rows shown
    try {
      parseMeta(meta.value.trim());
    } catch (error) {
      ctx.notify('error', `Metadata filter: ${error.message}`);
      return;
    }
    state.q = q.value.trim();
    state.status = status.value;
    state.agent = agent.value;
    state.range = range.value;
    state.from = from.value;
    state.to = to.value;
    state.meta = meta.value.trim();
    state.key = key.value.trim();
    cursors = [null];
    lastShown = '';
    lastCounts = '';
    remember();
    ctx.clearNotices();
    load();
  }

  /** What a run is at, at a glance: its progress, why it failed, or when it starts. */
  function progressCell(r) {
    if (r.error && r.status !== 'succeeded') {
      return h('span', { class: 'small', title: r.error.message }, h('b', {}, r.error.kind), ': ',
        r.error.message.length > 80 ? `${r.error.message.slice(0, 80)}…` : r.error.message);
    }
    const due = r.next_attempt_at || (r.status === 'queued' ? r.run_at : null);
    if (due && new Date(due).getTime() > Date.now()) {
      return h('span', { class: 'small' }, r.next_attempt_at ? 'retries ' : 'starts ', ago(due));
    }
    return r.progress ? progressBar(r.progress) : h('span', { class: 'muted' }, '—');
  }

  /** A run's concurrency key, a button that lists the key's runs; and whether it waits for it. */
  function keyCell(r) {
    if (!r.concurrency_key) return h('span', { class: 'muted' }, '—');
    return h('span', {},
      h('button', { type: 'button', class: 'link mono', title: 'Show this key\'s runs',
        onclick: () => { key.value = r.concurrency_key; apply(); } }, r.concurrency_key),
      r.waiting_for_key ? h('span', { class: 'muted small' }, ' waits its turn') : null);
  }

  form.addEventListener('submit', (e) => { e.preventDefault(); apply(); });
  for (const control of [status, agent, range, from, to]) control.addEventListener('change', () => { showCustom(); apply(); });
  let typing = null;
  q.addEventListener('input', () => { clearTimeout(typing); typing = setTimeout(apply, 350); });
  newer.addEventListener('click', () => { cursors.pop(); lastShown = ''; load(); });
  older.addEventListener('click', () => { lastShown = ''; load(older.dataset.cursor); });

  const stop = every(3000, async () => {
    if (live.checked && cursors.length === 1 && !loading) await load();
  });
  return () => { stopped = true; stop(); clearTimeout(typing); };
}
