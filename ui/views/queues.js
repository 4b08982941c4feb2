// Queues: per agent, its runs by state, the age of its oldest queued run, and its
// finished runs per minute over the last hour; a queue can be paused and resumed here
// (the admin scope's).

import { api } from '../api.js';
import { clock, duration, every, h, redraw, s, table, when } from '../dom.js';

const SERIES = [['succeeded', 'succeeded_per_minute'], ['failed', 'failed_per_minute'], ['cancelled', 'cancelled_per_minute']];

/** The smallest of 1, 2, 5 × 10^k at or above `n`: a round top for the chart's scale. */
function niceTop(n) {
  const step = 10 ** Math.floor(Math.log10(Math.max(1, n)));
  return [1, 2, 5, 10].map((m) => m * step).find((v) => v >= n);
}

/** Stacked bars, one per minute: `sum` per series, drawn in `width` x `height` units up to
 * `scaleOf(the tallest minute)` (with grid lines when given). */
function bars(queues, width, height, label, scaleOf) {
  const minutes = queues.length ? queues[0].succeeded_per_minute.length : 60;
  const totals = Array.from({ length: minutes }, (_, i) =>
    SERIES.map(([, key]) => queues.reduce((n, q) => n + q[key][i], 0)));
  const max = Math.max(1, ...totals.map((t) => t.reduce((a, b) => a + b, 0)));
  const scale = scaleOf ? scaleOf(max) : max;
  const w = width / minutes;
  const svg = s('svg', { viewBox: `0 0 ${width} ${height}`, preserveAspectRatio: 'none', role: 'img', 'aria-label': label });
  if (scaleOf) {
    // grid lines at half and all of the scale
    for (const q of [0.5, 1]) {
      const y = height - q * (height - 2);
      svg.append(s('line', { x1: 0, x2: width, y1: y, y2: y, class: 'grid', 'vector-effect': 'non-scaling-stroke' }));
    }
  }
  totals.forEach((parts, i) => {
    let y = height;
    parts.forEach((n, k) => {
      if (!n) return;
      const bar = (n / scale) * (height - 2);
      y -= bar;
      svg.append(s('rect', { x: i * w + w * 0.1, y, width: w * 0.8, height: bar, class: `c-${SERIES[k][0]}` },
        s('title', {}, `${SERIES[k][0]}: ${n} (${minutes - 1 - i} min ago)`)));
    });
  });
  return { svg, max, scale, totals: totals.map((t) => t.reduce((a, b) => a + b, 0)) };
}

/** The last hour's chart with its axes (runs per minute up the side, clock times along
 * the bottom) and a sentence on the trend: the last 10 minutes against the 50 before. */
function hourChart(queues) {
  const finished = sum(queues.map((q) => sum(q.succeeded_per_minute) + sum(q.failed_per_minute) + sum(q.cancelled_per_minute)));
  const { svg, totals, scale: top } = bars(queues, 600, 140, '', niceTop);
  svg.setAttribute('aria-label', `${finished} runs finished in the last hour; the scale goes to ${top} a minute`);
  svg.setAttribute('class', 'chart');
  const minutes = totals.length;
  const now = Date.now();
  const xs = [minutes, 45, 30, 15, 0].map((ago) => h('span', { class: 'tick', style: { left: `${((minutes - ago) / minutes) * 100}%` } },
    ago === 0 ? 'now' : when(new Date(now - ago * 60e3).toISOString()).slice(11, 16)));
  const ys = [top, top / 2, 0].map((v, i) => h('span', { style: { top: `${i * 50}%` } }, String(v)));
  const rate = (list) => (list.length ? sum(list) / list.length : 0);
  const recent = rate(totals.slice(-10));
  const before = rate(totals.slice(0, -10));
  const fmt = (r) => (r >= 10 ? r.toFixed(0) : r.toFixed(1));
  let trend = `last 10 min: ${fmt(recent)} a minute; the 50 before: ${fmt(before)} a minute`;
  if (before > 0 && recent > 0) {
    const change = Math.round(((recent - before) / before) * 100);
    trend += change === 0 ? ' (steady)' : ` (${change > 0 ? 'up' : 'down'} ${Math.abs(change)} %)`;
  } else if (before === 0 && recent > 0) trend += ' (new work)';
  else if (recent === 0 && before > 0) trend += ' (none lately)';
  return h('div', {},
    h('div', { class: 'chartbox' },
      h('div', { class: 'yaxis', 'aria-hidden': 'true' }, ys),
      svg,
      h('div', { class: 'xaxis track', 'aria-hidden': 'true' }, xs)),
    h('p', { class: 'muted small' }, `Runs finished a minute. ${finished} in the last hour; ${trend}.`));
}

const sum = (list) => list.reduce((a, b) => a + b, 0);

export function render(root, ctx) {
  const chart = h('div');
  const list = h('div');
  const stamp = h('p', { class: 'muted small' });
  root.append(h('h1', {}, 'Queues'), h('h2', {}, 'Finished per minute, last hour'), chart,
    h('div', { class: 'legend' }, SERIES.map(([name]) => h('span', {}, h('i', { class: `c-${name}` }), name))),
    h('h2', {}, 'By agent'), list, stamp);
  let stopped = false;

  /** Pauses or resumes the agent's queue, then shows the table again. */
  async function toggle(q, button) {
    button.disabled = true; // one request per click
    const what = q.paused ? 'resume' : 'pause';
    try {
      await api(`/v1/agents/${encodeURIComponent(q.agent)}/${what}`, { method: 'POST' });
      ctx.notify('ok', q.paused ? `${q.agent} resumed: its runs are claimed again.` : `${q.agent} paused: none of its runs is claimed until it is resumed.`);
      await load();
    } catch (error) {
      ctx.report(error);
      button.disabled = false;
    }
  }

  async function load() {
    try {
      const [body, agents] = await Promise.all([
        api('/v1/queues'),
        api('/v1/agents').catch(() => ({ agents: [] })),
      ]);
      if (stopped) return;
      // where each agent runs: compiled into agentq, or an external (Python, TypeScript) worker
      const kind = new Map(agents.agents.map((a) => [a.name, a.kind === 'external' ? 'external worker' : 'agentq']));
      chart.replaceChildren(hourChart(body.queues));
      // an agent link focused before the table is drawn again keeps the focus
      redraw(list, 'href', () => list.replaceChildren(body.queues.length ? table([
        { label: 'Agent', cell: (q) => h('a', { href: `#/runs?agent=${encodeURIComponent(q.agent)}` }, q.agent) },
        { label: 'Queue', cell: (q) => h('span', { class: 'queue-state' },
          q.paused ? h('span', { class: 'badge paused', title: `paused since ${when(q.paused_at)}` }, 'paused') : null,
          h('button', { type: 'button', class: q.paused ? '' : 'secondary', 'aria-label': `${q.paused ? 'Resume' : 'Pause'} ${q.agent}`,
            onclick: (e) => toggle(q, e.currentTarget) }, q.paused ? 'Resume' : 'Pause')) },
        { label: 'Runs in', cell: (q) => kind.get(q.agent) || h('span', { class: 'muted' }, 'unknown') },
        { label: 'Queued', num: true, cell: (q) => String(q.queued) },
        { label: 'Oldest queued', num: true, cell: (q) => (q.oldest_queued_age_ms === null ? '—' : duration(q.oldest_queued_age_ms)) },
        { label: 'Scheduled', num: true, cell: (q) => String(q.scheduled) },
        { label: 'Running', num: true, cell: (q) => String(q.running) },
        { label: 'Retrying', num: true, cell: (q) => String(q.retrying) },
        { label: 'Waiting', num: true, cell: (q) => String(q.waiting) },
        { label: 'Blocked', num: true, cell: (q) => String(q.blocked) },
        { label: 'Last hour', cell: (q) => {
          const done = sum(q.succeeded_per_minute);
          const failed = sum(q.failed_per_minute);
          const spark = bars([q], 120, 24, `${q.agent}: ${done} succeeded, ${failed} failed in the last hour`).svg;
          spark.setAttribute('class', 'spark');
          return h('span', {}, spark, ` ${done} ok`, failed ? `, ${failed} failed` : '');
        } },
      ], body.queues) : h('p', { class: 'empty panel' }, 'No agents.')));
      stamp.textContent = `Updated ${clock()}; every 5 s.`;
    } catch (error) {
      if (!stopped) ctx.report(error);
    }
  }

  const stop = every(5000, load);
  return () => { stopped = true; stop(); };
}
