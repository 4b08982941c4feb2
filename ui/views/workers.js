// Workers: the processes running agents, as their heartbeats report them.

import { api } from '../api.js';
import { ago, badge, clock, every, h, table } from '../dom.js';

export function render(root, ctx) {
  const list = h('div');
  const stamp = h('p', { class: 'muted small' });
  root.append(h('h1', {}, 'Workers'),
    h('p', { class: 'muted' }, 'Processes heard from in the last hour: agentq\'s own (rust) and external ones (Python, TypeScript). An agentq worker heartbeats every 2 s, an external one every 0.5–2 s; one silent for 10 s is gone.'),
    list, stamp);
  let stopped = false;

  async function load() {
    try {
      const body = await api('/v1/workers');
      if (stopped) return;
      const state = (w) => badge(w.state === 'alive' ? 'running' : w.state === 'gone' ? 'failed' : 'cancelled');
      list.replaceChildren(body.workers.length ? table([
        { label: 'Worker', cell: (w) => h('span', { class: 'mono' }, w.id) },
        { label: 'State', cell: (w) => { const b = state(w); b.textContent = w.state; return b; } },
        { label: 'Host', cell: (w) => `${w.host} (pid ${w.pid})` },
        { label: 'Agents', cell: (w) => w.agents.join(', ') },
        { label: 'Running', num: true, cell: (w) => `${w.running} / ${w.concurrency}` },
        { label: 'Processed', num: true, cell: (w) => String(w.processed) },
        { label: 'Heartbeat', cell: (w) => ago(w.last_heartbeat_at) },
        { label: 'Started', cell: (w) => ago(w.started_at) },
        { label: 'Restarts', num: true, cell: (w) => String(w.restarts) },
        { label: 'Last error', cell: (w) => w.last_error || h('span', { class: 'muted' }, 'none') },
        { label: 'Language', cell: (w) => w.language },
        { label: 'Version', cell: (w) => w.version },
      ], body.workers) : h('p', { class: 'empty panel' }, 'No worker process has heartbeated in the last hour. Start one with `agentq worker`, or a Python or TypeScript worker (sdk/).'));
      stamp.textContent = `Updated ${clock()}; every 5 s.`;
    } catch (error) {
      if (stopped) return;
      if (error.status === 403) {
        list.replaceChildren(h('p', { class: 'panel' }, 'Workers are shown to keys with the admin scope; this key lacks it.'));
      } else {
        ctx.report(error);
      }
    }
  }

  const stop = every(5000, load);
  return () => { stopped = true; stop(); };
}
