// One run: status, progress, its timeline (attempts, waits, backoffs, signals), input,
// result, checkpoint, links, and the events, followed live while the run is not finished;
// cancel, retry, and the signal form of a waiting run.

import { api, credential, followEvents } from '../api.js';
import { TERMINAL, ago, badge, chips, duration, h, json, progressBar, put, redraw, runLink, when } from '../dom.js';
import { LIST_KEY } from './runs.js';
import { describe, phasesOf, signalsView, timelineView } from './timeline.js';

/** The way back to the runs list, with the filters it was left with; none for a run
 * token, which opens its own run and nothing else. */
function backToList() {
  if (credential.tokenRun()) return null;
  return h('p', { class: 'muted small' }, h('a', { href: sessionStorage.getItem(LIST_KEY) || '#/runs' }, '← Runs'));
}

/** Where focus goes when the control holding it is drawn away: the first action (Refresh). */
function keepFocus(box) {
  if (document.activeElement === document.body || !document.activeElement.isConnected) {
    const first = box.querySelector('button');
    if (first) first.focus();
  }
}

/** The run's output stream: one message per attempt that streamed, its parts in order. */
function messagesOf(events) {
  const messages = [];
  let current = null;
  for (const e of events) {
    if (e.type === 'started') current = null;
    if (e.type !== 'stream') continue;
    if (!current) {
      current = { attempt: e.attempt, parts: [] };
      messages.push(current);
    }
    const last = current.parts[current.parts.length - 1];
    const d = e.data || {};
    // adjacent text (or reasoning) reads as one
    if (last && (d.type === 'text' || d.type === 'reasoning') && last.type === d.type) last.text += d.text;
    else current.parts.push({ ...d });
  }
  return messages;
}

/** A part of an output stream as the page shows it. */
function partView(p) {
  const short = (v) => { const t = JSON.stringify(v); return t.length > 240 ? `${t.slice(0, 240)}…` : t; };
  if (p.type === 'text') return h('span', { class: 'outtext' }, p.text);
  if (p.type === 'reasoning') return h('span', { class: 'outtext reasoning' }, p.text);
  if (p.type === 'tool_call') return h('div', { class: 'tool mono' }, `→ ${p.tool_name}(${short(p.input)})`);
  if (p.type === 'tool_result') return h('div', { class: 'tool mono' }, `← ${short(p.output)}`);
  if (p.type === 'data') return h('div', { class: 'tool mono' }, `${p.name}: ${short(p.data)}`);
  return null;
}

export function render(root, id, ctx) {
  const path = `/v1/runs/${encodeURIComponent(id)}`;
  const abort = new AbortController();
  let run = null;
  let events = [];
  let waitKey = '';
  let changeKey = '';
  let actionsKey = '';
  let latest = 0;
  let refreshTimer = null;
  let streaming = false;

  const head = h('div');
  const actions = h('div', { class: 'actions' });
  const body = h('div');
  const waitBox = h('div');
  const changeBox = h('div');
  const attemptsBox = h('div');
  const outputBox = h('div');
  const dataBox = h('div', { class: 'grid2' });
  const liveMark = h('span', { class: 'live', hidden: true }, 'live');
  const timeline = h('ol', { class: 'timeline', 'aria-label': 'Events' });
  root.append(head, actions, changeBox, body, waitBox, outputBox, attemptsBox, dataBox,
    h('h2', {}, 'Events ', liveMark), timeline);

  async function act(url, done, button) {
    button.disabled = true; // one request per click
    try {
      const result = await api(url, { method: 'POST' });
      ++latest; // a refresh sent before this answer must not bring back the old state
      ctx.notify('ok', done);
      actionsKey = '';
      show(result.run || result);
    } catch (error) {
      ctx.report(error);
      renderActions(true);
    }
    keepFocus(actions);
  }


  /** The buttons, rebuilt only when what they offer changes (not while a cancel is being confirmed). */
  function renderActions(force) {
    const key = `${run.status}/${ctx.canWrite}`;
    if (!force && key === actionsKey) return;
    actionsKey = key;
    const focused = actions.contains(document.activeElement) ? document.activeElement.textContent : null;
    const buttons = [h('button', { type: 'button', class: 'secondary', onclick: () => refresh() }, 'Refresh')];
    if (ctx.canWrite && !TERMINAL.includes(run.status)) {
      const cancel = h('button', { type: 'button', class: 'danger' }, 'Cancel run');
      cancel.addEventListener('click', () => {
        // a second, explicit step: no run is cancelled by one stray click or key press
        const sure = h('button', { type: 'button', class: 'danger', onclick: (e) => act(`${path}/cancel`, 'Cancelled.', e.currentTarget) }, 'Yes, cancel it');
        const keep = h('button', { type: 'button', class: 'secondary',
          onclick: () => {
            renderActions(true);
            const back = [...actions.querySelectorAll('button')].find((b) => b.textContent === 'Cancel run');
            if (back) back.focus();
          } }, 'Keep it');
        put(actions, h('span', {}, 'Cancel this run?'), sure, keep);
        actionsKey = 'confirming';
        keep.focus();
      });
      buttons.push(cancel);
    }
    if (ctx.canWrite && run.status === 'failed') {
      buttons.push(h('button', { type: 'button', onclick: (e) => act(`${path}/retry`, 'Queued again.', e.currentTarget) }, 'Retry'));
    }
    put(actions, ...buttons);
    const again = focused && buttons.find((b) => b.textContent === focused);
    if (again) again.focus();
  }

  /** For a run that has not started: a form that changes its priority or when it is due. */
  function renderChange() {
    const open = ctx.canWrite && !run.started_at && ['queued', 'blocked'].includes(run.status);
    const key = open ? `${run.priority}/${run.run_at}` : '';
    if (key === changeKey) return; // keep what the visitor is typing
    changeKey = key;
    if (!key) {
      put(changeBox);
      return;
    }
    const local = (iso) => {
      const d = new Date(iso);
      return new Date(d.getTime() - d.getTimezoneOffset() * 60e3).toISOString().slice(0, 19);
    };
    const priority = h('input', { id: 'change-priority', type: 'number', min: -1000, max: 1000, step: 1, value: String(run.priority) });
    const due = h('input', { id: 'change-run-at', type: 'datetime-local', step: 1, value: local(run.run_at) });
    const form = h('form', { class: 'panel changebox', 'aria-labelledby': 'change-title' },
      h('h2', { id: 'change-title' }, 'Not started yet'),
      h('div', { class: 'filters' },
        h('div', {}, h('label', { for: 'change-priority' }, 'Priority'), priority),
        h('div', {}, h('label', { for: 'change-run-at' }, 'Due (local time)'), due),
        h('div', {}, h('button', { type: 'submit' }, 'Change'))));
    form.addEventListener('submit', async (event) => {
      event.preventDefault();
      const change = {};
      if (priority.value !== String(run.priority)) change.priority = Number(priority.value);
      if (due.value && due.value !== local(run.run_at)) change.run_at = new Date(due.value).toISOString();
      if (!Object.keys(change).length) {
        ctx.notify('error', 'Nothing to change: give another priority or due time.');
        return;
      }
      const button = form.querySelector('button');
      button.disabled = true;
      try {
        const changed = await api(path, { method: 'PATCH', body: change });
        ctx.notify('ok', 'Changed.');
        changeKey = null; // drawn again from the run as changed
        ++latest; // a refresh sent before this answer must not bring back the old values
        show(changed);
      } catch (error) {
        ctx.report(error);
        button.disabled = false;
      }
    });
    put(changeBox, form);
  }

  function renderWait() {
    const key = run.status === 'waiting' ? JSON.stringify(run.waiting_for) : '';
    if (key === waitKey) return; // keep what the visitor is typing
    waitKey = key;
    if (!key) {
      put(waitBox);
      return;
    }
    const w = run.waiting_for;
    const comment = h('textarea', { id: 'signal-comment', name: 'comment', rows: 3, placeholder: 'Optional: sent as payload.comment' });
    const payload = h('textarea', { id: 'signal-payload', name: 'payload', rows: 3, placeholder: '{"key": "value"}', spellcheck: 'false' });
    const form = h('form', { class: 'panel waitbox', 'aria-labelledby': 'wait-title' },
      h('h2', { id: 'wait-title' }, 'Waiting for a signal'),
      h('p', { class: 'muted' }, `It resumes on ${w.signals.join(', ')}; the wait ends ${when(w.until)}.`),
      h('label', { for: 'signal-comment' }, 'Comment'), comment,
      h('details', {}, h('summary', {}, 'Payload'), h('label', { for: 'signal-payload' }, 'Payload (a JSON object)'), payload),
      // the first signal is the form's main action (Enter sends it); the others are set apart
      h('div', { class: 'actions' }, w.signals.map((name, i) => h('button',
        { type: 'submit', value: name, name: 'signal', class: i === 0 ? null : 'secondary' }, `Send ${name}`))));
    form.addEventListener('submit', async (event) => {
      event.preventDefault();
      const name = event.submitter ? event.submitter.value : w.signals[0];
      let body = {};
      if (payload.value.trim()) {
        try {
          body = JSON.parse(payload.value);
        } catch (error) {
          ctx.notify('error', `Payload: not JSON (${error.message}).`);
          payload.focus();
          return;
        }
        if (typeof body !== 'object' || body === null || Array.isArray(body)) {
          ctx.notify('error', 'Payload: must be a JSON object.');
          payload.focus();
          return;
        }
      }
      if (comment.value.trim()) body.comment = comment.value.trim();
      for (const b of form.querySelectorAll('button')) b.disabled = true;
      try {
        const answer = await api(`${path}/signals`, { method: 'POST', body: { name, payload: body } });
        ctx.notify('ok', answer.resumed ? `Sent ${name}: the run is queued again.` : `Sent ${name}: kept until the run waits for it.`);
        waitKey = null; // the form goes, whatever the run does next
        ++latest; // a refresh sent before this answer must not bring the form back
        show(answer.run);
        keepFocus(actions);
      } catch (error) {
        ctx.report(error);
        for (const b of form.querySelectorAll('button')) b.disabled = false;
      }
    });
    put(waitBox, form);
  }

  function renderBody() {
    const phases = phasesOf(run, events);
    /** How long it took, once finished; before, how long the part going on has lasted
     * (a wait is not time spent running). */
    const took = () => {
      if (TERMINAL.includes(run.status)) return ['Took', run.started_at ? duration(new Date(run.finished_at) - new Date(run.started_at)) : '—'];
      // the run read may be newer than the events read before it: then the part going on
      // is not in them yet, and its start is not known until they come
      const now = phases.filter((p) => p.kind !== 'stream').pop();
      if (run.status === 'running') return ['Running for', now && now.kind === 'attempt' ? duration(Date.now() - new Date(now.start)) : '—'];
      if (run.status === 'waiting') return ['Waiting since', now && now.kind === 'wait' ? ago(now.start) : '—'];
      return ['Took', '—'];
    };
    // a link focused in what is drawn again (back, dependencies) keeps the focus
    redraw(head, 'href', () => put(head, backToList(),
      h('h1', {}, h('span', { class: 'mono' }, run.id), ' ', badge(run.status))));
    const facts = [
      ['Agent', run.agent], ['Attempt', `${run.attempt} of ${run.max_attempts}`],
      ['Created', when(run.created_at)], ['Started', when(run.started_at)], ['Finished', when(run.finished_at)],
      took(),
      ['Due', when(run.run_at)], ['Next attempt', when(run.next_attempt_at)], ['Deadline', when(run.deadline)],
      ['Worker', run.worker_id || '—'], ['Priority', String(run.priority)], ['Timeout', duration(run.timeout_ms)],
      ['Tenant', run.tenant],
    ];
    if (run.concurrency_key) {
      facts.push(['Concurrency key', h('span', {},
        h('a', { class: 'mono', href: `#/runs?key=${encodeURIComponent(run.concurrency_key)}` }, run.concurrency_key),
        ` (limit ${run.concurrency_limit})`,
        run.waiting_for_key ? h('span', { class: 'muted' }, ': waits its turn') : null)]);
    }
    const links = [];
    if (run.depends_on.length) links.push(['Depends on', run.depends_on.map((d) => h('div', {}, runLink(d)))]);
    if (run.compensation_run_id) links.push(['Compensation run', runLink(run.compensation_run_id)]);
    if (run.compensates_run_id) links.push(['Compensates', runLink(run.compensates_run_id)]);
    redraw(body, 'href', () => put(body,
      h('div', { class: 'panel' },
        // a run that succeeded is done, whatever its last report said
        h('div', { class: 'bigprogress' }, progressBar(run.status === 'succeeded'
          ? { ...(run.progress || {}), percent: 100 } : (run.progress || { percent: 0 }), true)),
        h('dl', { class: 'facts' }, [...facts, ...links].map(([k, v]) => h('div', {}, h('dt', {}, k), h('dd', {}, v))),
          Object.keys(run.metadata).length ? h('div', {}, h('dt', {}, 'Metadata'), h('dd', {}, chips(run.metadata))) : null)),
      run.error ? h('div', { class: 'panel errorbox', role: 'note' }, h('h2', {}, 'Error'),
        h('p', {}, h('b', {}, run.error.kind), ': ', run.error.message)) : null,
    ));
    put(attemptsBox, h('h2', {}, 'Timeline'), timelineView(run, phases), signalsView(events));
    put(dataBox,
      h('section', {}, h('h2', {}, 'Input'), json(run.input)),
      h('section', {}, h('h2', {}, 'Result'), run.result === null
        ? h('p', { class: 'muted' }, TERMINAL.includes(run.status) ? `None: the run ${run.status}.` : 'None yet.')
        : json(run.result)),
      run.checkpoint === null ? null : h('section', {}, h('h2', {}, 'Checkpoint'), json(run.checkpoint)),
    );
  }

  function renderOutput() {
    const messages = messagesOf(events);
    if (!messages.length) {
      put(outputBox);
      return;
    }
    put(outputBox, h('h2', {}, 'Output'), messages.map((m) => h('section', { class: 'panel output', 'aria-label': `Output of attempt ${m.attempt}` },
      messages.length > 1 ? h('p', { class: 'muted small' }, `Attempt ${m.attempt}`) : null,
      h('div', { class: 'outbody' }, m.parts.map(partView)))));
  }

  function appendEvents(list) {
    let streamed = false;
    for (const e of list) {
      if (events.length && e.seq <= events[events.length - 1].seq) continue;
      events.push(e);
      // stream parts show in the output, not one by one in the timeline
      if (e.type === 'stream') {
        streamed = true;
        continue;
      }
      timeline.append(h('li', {},
        h('span', { class: 'muted mono' }, `#${e.seq}`),
        h('span', { class: 'when' }, h('time', { datetime: e.at, title: when(e.at) }, when(e.at).slice(11))),
        h('span', {}, badge(e.type), e.attempt ? h('span', { class: 'muted small' }, ` a${e.attempt}`) : null),
        h('span', { class: 'data' }, e.actor ? h('span', { class: 'muted small', title: 'who made it' }, `by ${e.actor} `) : null, describe(e))));
    }
    if (streamed) renderOutput();
  }

  function show(next) {
    run = next;
    if (actionsKey !== 'confirming' || TERMINAL.includes(run.status)) renderActions();
    renderBody();
    renderChange();
    renderWait();
    if (!TERMINAL.includes(run.status)) follow();
  }

  async function refresh() {
    const mine = ++latest; // an answer older than one already shown is dropped
    try {
      // the events first, then the run: the run read is at least as new as the last event,
      // so the live stream (which follows after that event) brings every later change. Read
      // at once, a run read before an event the other read returned would show a state
      // older than the log, and nothing would come to correct it (a run waiting for a human
      // stayed `running` on the page)
      // page by page (a page holds at most 1,000 events and about 4 MiB)
      const fresh = [];
      let after = events.length ? events[events.length - 1].seq : 0;
      for (;;) {
        const ev = await api(`${path}/events?after=${after}`, { signal: abort.signal });
        fresh.push(...ev.events);
        if (ev.next_after == null) break;
        after = ev.next_after;
      }
      const r = await api(path, { signal: abort.signal });
      appendEvents(fresh);
      if (mine === latest) show(r);
    } catch (error) {
      if (error.status === 404) {
        put(root, h('div', { class: 'panel' }, h('h1', {}, 'No such run'),
          h('p', {}, `There is no run ${id} (or it belongs to another tenant, or retention deleted it). `, h('a', { href: '#/runs' }, 'See the runs.'))));
        abort.abort();
        return;
      }
      ctx.report(error);
      if (!run) {
        // nothing shown yet: offer the way to try again instead of an empty page
        put(head, backToList(), h('h1', {}, h('span', { class: 'mono' }, id)),
          h('p', {}, 'This run could not be read. ', h('button', { type: 'button', onclick: () => refresh() }, 'Try again')));
      }
    }
  }

  function refreshSoon() {
    if (refreshTimer) return;
    refreshTimer = setTimeout(() => { refreshTimer = null; refresh(); }, 250);
  }

  // one live stream at a time, resumed after the last event seen until the run finishes
  async function follow() {
    if (streaming) return;
    streaming = true;
    liveMark.hidden = false;
    let failures = 0;
    while (!abort.signal.aborted && run && !TERMINAL.includes(run.status)) {
      const after = events.length ? events[events.length - 1].seq : 0;
      const since = Date.now();
      let got = 0;
      try {
        await followEvents(id, after, (e) => { got += 1; appendEvents([e]); refreshSoon(); }, abort.signal);
        // a stream that ends at once without news (a proxy cutting it, say) backs off too
        failures = got || Date.now() - since > 5000 ? 0 : failures + 1;
      } catch (error) {
        if (abort.signal.aborted) break;
        failures += 1;
        if (failures === 3) ctx.report(error);
      }
      if (abort.signal.aborted) break;
      // the stream ended: the run finished, or the connection dropped; read the run again
      await refresh();
      if (run && !TERMINAL.includes(run.status)) await new Promise((r) => setTimeout(r, Math.min(10000, 500 * 2 ** failures)));
    }
    streaming = false;
    liveMark.hidden = true;
  }

  refresh();
  return () => { abort.abort(); clearTimeout(refreshTimer); };
}
