// Schedules: each with when it ticks (cron and time zone, or interval), its next tick, its
// last run, the ticks it missed; Pause / Resume and Delete (with a confirmation step).

import { api } from '../api.js';
import { ago, clock, duration, every, h, put, redraw, runLink, table, when } from '../dom.js';

export function render(root, ctx) {
  const list = h('div');
  const stamp = h('p', { class: 'muted small' });
  root.append(h('h1', {}, 'Schedules'),
    h('p', { class: 'muted' }, 'Runs made on a cron expression or at an interval (POST /v1/schedules).'),
    list, stamp);
  let stopped = false;
  let confirming = null; // the id of a schedule whose deletion is being confirmed

  async function act(schedule, what, done, button) {
    button.disabled = true; // one request per click
    try {
      const path = `/v1/schedules/${encodeURIComponent(schedule.id)}`;
      await api(what === 'delete' ? path : `${path}/${what}`, { method: what === 'delete' ? 'DELETE' : 'POST' });
      ctx.notify('ok', done);
      confirming = null;
      await load();
    } catch (error) {
      ctx.report(error);
      button.disabled = false;
    }
  }

  const label = (x) => x.name || x.id;

  function controls(x) {
    if (!ctx.canWrite) return '';
    if (confirming === x.id) {
      const keep = h('button', { type: 'button', class: 'secondary', onclick: () => { confirming = null; load(); } }, 'Keep it');
      return h('span', { class: 'queue-state' }, `Delete ${label(x)}?`,
        h('button', { type: 'button', class: 'danger', onclick: (e) => act(x, 'delete', `${label(x)} deleted: it makes no more runs.`, e.currentTarget) }, 'Yes, delete it'),
        keep);
    }
    return h('span', { class: 'queue-state' },
      h('button', { type: 'button', class: x.paused ? '' : 'secondary', 'aria-label': `${x.paused ? 'Resume' : 'Pause'} ${label(x)}`,
        onclick: (e) => act(x, x.paused ? 'resume' : 'pause', x.paused ? `${label(x)} resumed.` : `${label(x)} paused: its ticks make no run until it is resumed.`, e.currentTarget) },
        x.paused ? 'Resume' : 'Pause'),
      h('button', { type: 'button', class: 'secondary', 'aria-label': `Delete ${label(x)}`,
        onclick: () => { confirming = x.id; load(); } }, 'Delete'));
  }

  async function load() {
    try {
      const body = await api('/v1/schedules');
      if (stopped) return;
      redraw(list, 'aria-label', () => put(list, body.schedules.length ? table([
        { label: 'Schedule', cell: (x) => h('span', {}, h('b', {}, label(x)), x.paused ? h('span', { class: 'badge paused' }, 'paused') : null) },
        { label: 'Agent', cell: (x) => h('a', { href: `#/runs?agent=${encodeURIComponent(x.agent)}` }, x.agent) },
        { label: 'Ticks', cell: (x) => (x.cron ? h('span', {}, h('code', {}, x.cron), ` ${x.timezone}`) : `every ${duration(x.interval_ms)}`) },
        { label: 'Next tick', cell: (x) => (x.paused || !x.next_tick_at ? h('span', { class: 'muted' }, '—') : h('time', { datetime: x.next_tick_at, title: when(x.next_tick_at) }, when(x.next_tick_at))) },
        { label: 'Last run', cell: (x) => (x.last_run_id ? h('span', {}, runLink(x.last_run_id), ' ', h('span', { class: 'muted small' }, ago(x.last_tick_at))) : h('span', { class: 'muted' }, 'none yet')) },
        { label: 'Missed', num: true, cell: (x) => String(x.missed_ticks) },
        { label: 'Runs', cell: (x) => h('a', { href: `#/runs?meta=${encodeURIComponent(`schedule_id=${x.id}`)}` }, 'its runs') },
        { label: '', cell: controls },
      ], body.schedules) : h('p', { class: 'empty panel' }, 'No schedules. Create one with POST /v1/schedules.')));
      stamp.textContent = `Updated ${clock()}; every 5 s.`;
    } catch (error) {
      if (!stopped) ctx.report(error);
    }
  }

  const stop = every(5000, async () => { if (!confirming) await load(); });
  return () => { stopped = true; stop(); };
}
