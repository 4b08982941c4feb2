// Queues: per agent, its runs by state, the age of its oldest queued run, and its
// finished runs per minute over the last hour; a queue can be paused and resumed here
// (the admin scope's).

import { api } from '../api.js';
import { duration, every, h, redraw, s, table } from '../dom.js';

const SERIES = [['succeeded', 'succeeded_per_minute'], ['failed', 'failed_per_minute'], ['cancelled', 'cancelled_per_minute']];

/** Stacked bars, one per minute: `sum` per series, drawn in `width` x `height` units. */
function bars(queues, width, height, label) {
  const minutes = queues.length ? queues[0].succeeded_per_minute.length : 60;
  const totals = Array.from({ length: minutes }, (_, i) =>
    SERIES.map(([, key]) => queues.reduce((n, q) => n + q[key][i], 0)));
  const max = Math.max(1, ...totals.map((t) => t.reduce((a, b) => a + b, 0)));
  const w = width / minutes;
  const svg = s('svg', { viewBox: `0 0 ${width} ${height}`, preserveAspectRatio: 'none', role: 'img', 'aria-label': label });
  totals.forEach((parts, i) => {
    let y = height;
    parts.forEach((n, k) => {
      if (!n) return;
      const bar = (n / max) * (height - 2);
      y -= bar;
      svg.append(s('rect', { x: i * w + w * 0.1, y, width: w * 0.8, height: bar, class: `c-${SERIES[k][0]}` },
        s('title', {}, `${SERIES[k][0]}: ${n} (${minutes - 1 - i} min ago)`)));
    });
  });
  return { svg, max };
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
      const finished = sum(body.queues.map((q) => sum(q.succeeded_per_minute) + sum(q.failed_per_minute) + sum(q.cancelled_per_minute)));
      const { svg, max } = bars(body.queues, 600, 140, `${finished} runs finished in the last hour`);
      svg.setAttribute('class', 'chart');
      chart.replaceChildren(svg, h('p', { class: 'muted small' }, `${finished} finished in the last hour; the tallest minute is ${max}.`));
      // an agent link focused before the table is drawn again keeps the focus
      redraw(list, 'href', () => list.replaceChildren(body.queues.length ? table([
        { label: 'Agent', cell: (q) => h('a', { href: `#/runs?agent=${encodeURIComponent(q.agent)}` }, q.agent) },
        { label: 'Queue', cell: (q) => h('span', { class: 'queue-state' },
          q.paused ? h('span', { class: 'badge paused', title: `paused since ${new Date(q.paused_at).toLocaleString()}` }, 'paused') : null,
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
      stamp.textContent = `Updated ${new Date().toLocaleTimeString()}; every 5 s.`;
    } catch (error) {
      if (!stopped) ctx.report(error);
    }
  }

  const stop = every(5000, load);
  return () => { stopped = true; stop(); };
}
