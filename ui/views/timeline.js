// A run's timeline: what happened when and how long each part took (queued, attempts,
// waits for signals, backoffs, the output stream) as bars on one time axis; the signals it
// got with their payloads and senders; and each event told in words.

import { duration, h, when } from '../dom.js';

/** What ends an attempt, and how the page says it. */
const ATTEMPT_ENDS = {
  succeeded: 'succeeded',
  failed: 'failed',
  retry_scheduled: 'failed, retried',
  attempt_lost: 'worker lost',
  released: 'handed back',
  waiting: 'waits for a signal',
  cancelled: 'cancelled',
};

const ms = (iso) => new Date(iso).getTime();

/**
 * The run's parts in order, from its events: `{kind, label, start, end, note}` with `end`
 * null while the part goes on. Kinds: pending (queued, blocked, due later), attempt, wait,
 * backoff, stream. A wait does not end its attempt's number: the attempt resumed after it
 * is labelled as such, not counted again.
 */
export function phasesOf(run, events) {
  const phases = [];
  let open = null; // the part going on
  let attempt = null; // the attempt part going on
  let stream = null;
  let lastAttempt = 0;
  let resuming = false; // a `resumed` came since the last attempt part: the next continues it
  const close = (at, note) => {
    if (open) {
      open.end = at;
      if (note && !open.note) open.note = note;
    }
    open = null;
  };
  const begin = (kind, label, at, extra = {}) => {
    close(at);
    open = { kind, label, start: at, end: null, ...extra };
    phases.push(open);
    return open;
  };
  for (const e of events) {
    const d = e.data || {};
    switch (e.type) {
      case 'created':
        // due later (run_at) or at once; blocked until an `unblocked` says it was
        begin('pending', phases.length === 0 && !run.started_at && ms(run.run_at) > ms(e.at) + 1000 ? 'Due later' : 'Queued', e.at);
        break;
      case 'unblocked':
        if (open && open.kind === 'pending') open.label = 'Blocked';
        begin('pending', 'Queued', e.at);
        break;
      case 'started': {
        const resumed = resuming && e.attempt === lastAttempt;
        resuming = false;
        lastAttempt = e.attempt;
        attempt = begin('attempt', `Attempt ${e.attempt}${resumed ? ', resumed' : ''}`, e.at, { attempt: e.attempt });
        stream = null;
        break;
      }
      case 'stream':
        if (!attempt) break;
        if (!stream) {
          stream = { kind: 'stream', label: `Output of attempt ${attempt.attempt}`, start: e.at, end: e.at };
          phases.push(stream);
        }
        stream.end = e.at;
        break;
      case 'waiting':
        if (attempt) attempt.outcome = ATTEMPT_ENDS.waiting;
        attempt = null;
        begin('wait', `Waiting for ${(d.signals || []).join(' or ')}`, e.at);
        break;
      case 'resumed':
        if (d.already_received && attempt) {
          // it began to wait for a signal that was already there: no wait at all
          attempt.outcome = `waits for ${(d.signals || []).join(' or ')}: one was already there`;
          attempt = null;
        }
        if (open && open.kind === 'wait') open.note = d.timed_out ? `timed out (${d.signal})` : `got ${d.signal}`;
        resuming = true;
        begin('pending', 'Queued', e.at);
        break;
      case 'retry_scheduled':
        if (attempt) Object.assign(attempt, { outcome: ATTEMPT_ENDS.retry_scheduled, error: d.error });
        attempt = null;
        begin('backoff', 'Backoff', e.at);
        break;
      case 'attempt_lost':
      case 'released':
        if (attempt) Object.assign(attempt, { outcome: ATTEMPT_ENDS[e.type], error: d.error });
        attempt = null;
        begin('pending', 'Queued again', e.at);
        break;
      case 'requeued':
        attempt = null;
        lastAttempt = 0;
        begin('pending', 'Queued (retried by hand)', e.at);
        break;
      case 'succeeded':
      case 'failed':
      case 'cancelled':
        if (attempt && open === attempt) Object.assign(attempt, { outcome: ATTEMPT_ENDS[e.type], error: d.error });
        else if (open && e.type !== 'succeeded') open.note = e.type;
        close(e.at);
        attempt = null;
        break;
      default:
    }
  }
  return phases;
}

/** The time axis: from the run's creation to its end (or now). */
function span(run, phases) {
  const start = ms(run.created_at);
  const ends = phases.map((p) => (p.end ? ms(p.end) : Date.now()));
  const end = Math.max(start + 1, run.finished_at ? ms(run.finished_at) : Date.now(), ...ends);
  return { start, end };
}

/** The timeline as bars on a time axis, one row per part. */
export function timelineView(run, phases) {
  if (!phases.length) return h('p', { class: 'muted' }, 'Nothing yet.');
  const { start, end } = span(run, phases);
  const total = end - start;
  const pct = (t) => `${(((t - start) / total) * 100).toFixed(3)}%`;
  const ticks = [0, 0.25, 0.5, 0.75, 1];
  const axis = h('div', { class: 'grow axis', 'aria-hidden': 'true' },
    h('span', { class: 'glabel muted small' }, when(run.created_at).slice(11)),
    h('div', { class: 'track' }, ticks.map((q) => h('span', { class: 'tick', style: { left: `${q * 100}%` } },
      q === 0 ? '0' : `+${duration(total * q)}`))));
  const rows = phases.map((p) => {
    const from = ms(p.start);
    const to = p.end ? ms(p.end) : Date.now();
    const took = duration(to - from);
    const what = [p.outcome, p.note].filter(Boolean).join('; ');
    const error = p.error ? `${p.error.kind}: ${p.error.message}` : '';
    const tip = `${p.label}: ${when(p.start)} to ${p.end ? when(p.end) : 'now'} (${took})${what ? `, ${what}` : ''}${error ? `. ${error}` : ''}`;
    return h('li', { class: `grow k-${p.kind}${p.end ? '' : ' ongoing'}` },
      h('span', { class: 'glabel' }, h('b', {}, p.label), ' ', h('span', { class: 'muted small' }, p.end ? took : `${took} so far`),
        what ? h('span', { class: 'muted small gnote' }, what) : null,
        error ? h('span', { class: 'small gerror' }, error) : null),
      h('div', { class: 'track' }, h('span', { class: 'bar', title: tip, role: 'img', 'aria-label': tip,
        style: { left: pct(from), width: `max(3px, calc(${pct(to)} - ${pct(from)}))` } })));
  });
  return h('div', { class: 'gantt' }, axis, h('ol', { class: 'gantt-rows', 'aria-label': 'Timeline' }, rows));
}

/** A value read as text: strings as they are, times in the page's format, the rest as JSON. */
function text(v, key = '') {
  if (typeof v === 'string') return /(_at|until)$/.test(key) && !Number.isNaN(Date.parse(v)) ? when(v) : v;
  if (v === null || v === undefined) return '—';
  const t = JSON.stringify(v);
  return t.length > 160 ? `${t.slice(0, 160)}…` : t;
}

/** A payload (or any object) as `key: value` pairs. */
export function pairs(obj) {
  if (obj === null || obj === undefined) return 'none';
  if (typeof obj !== 'object' || Array.isArray(obj)) return text(obj);
  const keys = Object.keys(obj);
  if (!keys.length) return 'none';
  return keys.map((k) => `${k.replace(/_/g, ' ')}: ${text(obj[k], k)}`).join(' · ');
}

/** One event told in words (no raw JSON for the kinds agentq writes). */
export function describe(e) {
  const { result, ...d } = e.data || {}; // a live success carries the result: shown above
  const err = d.error ? `${d.error.kind}: ${d.error.message}` : '';
  switch (e.type) {
    case 'created':
      return null;
    case 'started':
      return d.worker_id ? `on ${d.worker_id}` : null;
    case 'progress':
      return `${d.percent}%${d.message ? ` · ${d.message}` : ''}`;
    case 'log':
      return `[${d.level || 'info'}] ${d.message || ''}`;
    case 'retry_scheduled':
      return `${err}; next attempt ${d.next_attempt_at ? `at ${when(d.next_attempt_at).slice(11)}` : 'soon'}`;
    case 'failed':
    case 'attempt_lost':
      return err || pairs(d);
    case 'released':
      return `handed back by ${d.worker_id || 'its worker'} (shutting down); the attempt is not used up`;
    case 'checkpoint':
      return d.bytes !== undefined ? `saved ${d.bytes} bytes of state` : 'saved its state';
    case 'waiting':
      return `for ${(d.signals || []).join(' or ')} until ${when(d.until)}`;
    case 'signal_received':
      return `${d.name}${d.payload !== undefined && d.payload !== null ? ` · payload ${pairs(d.payload)}` : ''}`;
    case 'resumed':
      if (d.already_received) return `one of ${(d.signals || []).join(', ')} was already there`;
      return d.timed_out ? `the wait timed out (as ${d.signal})` : `by ${d.signal}`;
    case 'unblocked':
      return d.concurrency_key ? `its turn on key ${d.concurrency_key}` : 'every run it depends on succeeded';
    case 'compensation_created':
      return `compensation run ${d.run_id}`;
    case 'webhook_delivered':
      return `delivery ${d.delivery}, attempt ${d.attempt}: HTTP ${d.status}`;
    case 'webhook_failed':
      return `delivery ${d.delivery}, attempt ${d.attempt}: ${d.error}; ${d.given_up ? 'given up' : `next at ${when(d.next_attempt_at).slice(11)}`}`;
    default: // succeeded (its result is shown above), and any other
      return Object.keys(d).length ? pairs(d) : null;
  }
}

/** The signals the run got: name, when, who sent it, and its payload. */
export function signalsView(events) {
  const got = events.filter((e) => e.type === 'signal_received');
  if (!got.length) return null;
  return h('div', {}, h('h2', {}, 'Signals'),
    h('ul', { class: 'signals' }, got.map((e) => h('li', { class: 'panel' },
      h('div', {}, h('b', { class: 'mono' }, e.data.name), ' ', h('span', { class: 'muted small' },
        `${when(e.at)}${e.actor ? ` · by ${e.actor}` : ''}`)),
      h('div', { class: 'small' }, 'Payload: ', pairs(e.data.payload))))));
}
