// Small DOM helpers. Text always goes in as text (never parsed as HTML): run inputs,
// metadata and errors are other people's data.

const SVG_NS = 'http://www.w3.org/2000/svg';

function fill(el, attrs, children) {
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith('on') && typeof value === 'function') {
      el.addEventListener(name.slice(2), value);
    } else if (name === 'text') {
      el.textContent = value;
    } else if (name === 'style') {
      // set through the CSSOM: the page's CSP refuses style attributes
      for (const [prop, v] of Object.entries(value)) el.style.setProperty(prop, v);
    } else if (name === 'dataset') {
      Object.assign(el.dataset, value);
    } else {
      el.setAttribute(name, value === true ? '' : String(value));
    }
  }
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

/** An HTML element: h('a', {href: '#/runs', class: 'x'}, 'text', otherNode). */
export function h(tag, attrs, ...children) {
  return fill(document.createElement(tag), attrs, children);
}

/**
 * Draws `box` again with `draw`, keeping keyboard focus on the element whose `attribute`
 * (a link's href, a chip's data-value) matches the one focused before.
 */
export function redraw(box, attribute, draw) {
  const had = box.contains(document.activeElement) ? document.activeElement.getAttribute(attribute) : null;
  draw();
  if (had === null) return;
  const again = [...box.querySelectorAll(`[${attribute}]`)].find((e) => e.getAttribute(attribute) === had);
  if (again) again.focus();
}

/** Replaces an element's children; null, undefined and false ones are left out. */
export function put(el, ...children) {
  el.replaceChildren();
  return fill(el, {}, children);
}

/** An SVG element. */
export function s(tag, attrs, ...children) {
  return fill(document.createElementNS(SVG_NS, tag), attrs, children);
}

export const TERMINAL = ['succeeded', 'failed', 'cancelled'];
export const STATUSES = ['blocked', 'queued', 'running', 'retrying', 'waiting', 'succeeded', 'failed', 'cancelled'];

export function badge(status) {
  return h('span', { class: `badge s-${status}` }, status);
}

function shortId(id) {
  return id.length > 13 ? `…${id.slice(-12)}` : id;
}

export function runLink(id, text) {
  return h('a', { href: `#/runs/${encodeURIComponent(id)}`, class: 'mono', title: id }, text ?? shortId(id));
}

const pad = (n) => String(n).padStart(2, '0');

/** A local date and time, to the second. */
export function when(iso) {
  if (!iso) return '—';
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return String(iso);
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

/** The time of day now, as `when` writes it (HH:MM:SS): the one time format of the pages. */
export function clock() {
  return when(new Date().toISOString()).slice(11);
}

/** A span of milliseconds, in its largest two units. */
export function duration(ms) {
  if (ms === null || ms === undefined || Number.isNaN(ms)) return '—';
  if (ms < 1000) return `${Math.max(0, Math.round(ms))} ms`;
  const sec = Math.round(ms / 1000);
  if (sec < 60) return `${(ms / 1000).toFixed(ms < 10000 ? 1 : 0)} s`;
  const min = Math.floor(sec / 60);
  if (min < 60) return `${min} min ${sec % 60} s`;
  const hr = Math.floor(min / 60);
  if (hr < 48) return `${hr} h ${min % 60} min`;
  return `${Math.floor(hr / 24)} d ${hr % 24} h`;
}

/** "3 min ago", with the exact time as a tooltip. */
export function ago(iso) {
  if (!iso) return h('span', { class: 'muted' }, '—');
  const ms = Date.now() - new Date(iso).getTime();
  const text = ms >= 0 ? `${duration(ms)} ago` : `in ${duration(-ms)}`;
  return h('time', { datetime: iso, title: when(iso) }, text);
}

export function progressBar(progress, big) {
  const percent = progress ? progress.percent : 0;
  const label = progress && progress.message ? `${percent}% · ${progress.message}` : `${percent}%`;
  return h('div', { class: big ? 'progress bigprogress' : 'progress' },
    h('progress', { max: 100, value: percent, 'aria-label': `progress ${label}` }),
    h('span', {}, label));
}

export function json(value) {
  return h('pre', { class: 'json' }, value === undefined ? '' : JSON.stringify(value, null, 2));
}

export function chips(metadata) {
  return Object.entries(metadata || {}).map(([k, v]) => h('span', { class: 'chip' }, `${k}=${v}`));
}

/** A table that turns into labelled cards on narrow screens. */
export function table(columns, rows, caption) {
  return h('table', { class: 'cards' },
    caption ? h('caption', { class: 'muted small' }, caption) : null,
    h('thead', {}, h('tr', {}, columns.map((c) => h('th', { scope: 'col', class: c.num ? 'num' : null }, c.label)))),
    h('tbody', {}, rows.map((row) => h('tr', {},
      columns.map((c) => h('td', { 'data-label': c.label, class: c.num ? 'num' : null }, c.cell(row)))))));
}

/** Calls `fn` now and every `ms` while the page is visible; returns the stop function. */
export function every(ms, fn) {
  let timer = null;
  let stopped = false;
  const tick = async () => {
    timer = null;
    if (stopped) return;
    if (!document.hidden) {
      try { await fn(); } catch { /* each view reports its own errors */ }
    }
    if (!stopped) timer = setTimeout(tick, ms);
  };
  tick();
  return () => {
    stopped = true;
    if (timer) clearTimeout(timer);
  };
}
