// The dashboard shell: hash routes, the key panel, notices.

import { credential, describe, refusesCredential } from './api.js';
import { h } from './dom.js';
import * as runs from './views/runs.js';
import * as run from './views/run.js';
import * as queues from './views/queues.js';
import * as schedules from './views/schedules.js';
import * as workers from './views/workers.js';

const main = document.getElementById('main');
const notices = document.getElementById('notices');
const keyPanel = document.getElementById('key-panel');
const keyForm = document.getElementById('key-form');
const keyInput = document.getElementById('key-input');
const keyReason = document.getElementById('key-reason');
let cleanup = null;

/** Shows a message above the page: `kind` is 'error' or 'ok'. Errors stay until closed. */
export function notify(kind, text, fields = []) {
  const close = h('button', { type: 'button', class: 'link', 'aria-label': 'Dismiss' }, '×');
  const note = h('div', { class: `notice ${kind}` },
    h('p', {}, text, fields.length ? h('ul', {}, fields.map((f) => h('li', {}, f))) : null), close);
  close.addEventListener('click', () => note.remove());
  notices.replaceChildren(note);
  if (kind !== 'error') setTimeout(() => note.remove(), 6000);
}

/** Reports a failed request; a refused credential is answered by the key panel instead. */
export function report(error) {
  if (error && error.name === 'AbortError') return;
  if (refusesCredential(error)) return;
  const { text, fields } = describe(error);
  notify('error', text, fields);
}

export function clearNotices() {
  notices.replaceChildren();
}

/** Opens the key panel saying why: text, or text and elements (a command as code). */
function showKeyPanel(...reason) {
  keyReason.replaceChildren(...reason);
  // already open: leave what is being typed, and the focus, alone
  if (!keyPanel.hidden) return;
  keyPanel.hidden = false;
  keyInput.value = '';
  keyInput.focus();
}

function renderWho() {
  const who = document.getElementById('who');
  const value = credential.get();
  const tokenRun = credential.tokenRun();
  if (!value) who.textContent = 'no key';
  else if (tokenRun) who.textContent = `run token for …${tokenRun.slice(-12)}`;
  else {
    // a key's public id (`aq_<id>_<secret>`), never its secret
    const id = /^(aq_[0-9a-z]+)_/i.exec(value);
    who.textContent = id ? `key ${id[1]}` : 'key (not an agentq key)';
  }
  for (const link of document.querySelectorAll('.top nav a')) {
    link.hidden = Boolean(tokenRun) && link.dataset.section !== 'runs';
  }
}

window.addEventListener('agentq:unauthenticated', (event) => {
  // an answer to a request sent with a credential since replaced says nothing of this one
  if (event.detail.credential !== credential.get()) return;
  const reason = credential.get()
    ? 'The server refused this credential (revoked, expired, or mistyped). Enter another.'
    : ['This server needs an API key. Create one with ', h('code', {}, 'agentq keys create --tenant <name>'), ', or use a run token.'];
  showKeyPanel(...[reason].flat());
});

keyForm.addEventListener('submit', (event) => {
  event.preventDefault();
  // an HTTP header carries visible ASCII only: a pasted "…" or zero-width space would
  // otherwise fail every request as if the server were down
  if (!/^[\x21-\x7e]+$/.test(keyInput.value.trim())) {
    keyReason.textContent = 'That is not a key or token: it holds spaces or characters beyond plain ASCII. Paste it again.';
    keyInput.focus();
    return;
  }
  credential.set(keyInput.value);
  keyInput.value = '';
  keyPanel.hidden = true;
  renderWho();
  clearNotices();
  route();
  main.focus({ preventScroll: true });
});
document.getElementById('key-forget').addEventListener('click', () => {
  credential.clear();
  keyPanel.hidden = true;
  renderWho();
  route();
});
document.getElementById('key-button').addEventListener('click', () => {
  if (keyPanel.hidden) showKeyPanel('Use another API key or run token, or forget the one in use.');
  else keyPanel.hidden = true;
});

/** `#/path?query` split into its parts (a part that is not valid percent-encoding is kept as it is). */
function parseHash() {
  const raw = location.hash.replace(/^#/, '') || '/runs';
  const [path, query = ''] = raw.split('?');
  const decode = (part) => {
    try { return decodeURIComponent(part); } catch { return part; }
  };
  return { parts: path.split('/').filter(Boolean).map(decode), params: new URLSearchParams(query) };
}

function route() {
  let { parts, params } = parseHash();
  // a link with a run token (`#/runs/<id>?token=rt.…`): keep the token, drop it from the URL
  const token = params.get('token');
  if (token) {
    credential.set(token);
    params.delete('token');
    const rest = params.toString();
    history.replaceState(null, '', `#/${parts.map(encodeURIComponent).join('/')}${rest ? `?${rest}` : ''}`);
    renderWho();
  }
  const tokenRun = credential.tokenRun();
  if (tokenRun && !(parts[0] === 'runs' && parts[1] === tokenRun)) {
    // a run token opens its own run and nothing else
    location.replace(`#/runs/${encodeURIComponent(tokenRun)}`);
    return;
  }
  const section = parts[0] || 'runs';
  if (cleanup) cleanup();
  cleanup = null;
  main.replaceChildren();
  for (const link of document.querySelectorAll('.top nav a')) {
    if (link.dataset.section === section) link.setAttribute('aria-current', 'page');
    else link.removeAttribute('aria-current');
  }
  const ctx = { notify, report, clearNotices, canWrite: !tokenRun };
  let view;
  if (section === 'runs' && parts[1]) view = run.render(main, parts[1], ctx);
  else if (section === 'runs') view = runs.render(main, params, ctx);
  else if (section === 'queues') view = queues.render(main, ctx);
  else if (section === 'schedules') view = schedules.render(main, ctx);
  else if (section === 'workers') view = workers.render(main, ctx);
  else {
    main.append(h('div', { class: 'panel' }, h('h1', {}, 'Not found'), h('p', {}, 'No such page. ', h('a', { href: '#/runs' }, 'See the runs.'))));
  }
  cleanup = view || null;
  document.title = `agentq · ${section === 'runs' && parts[1] ? `run …${parts[1].slice(-12)}` : section}`;
}

// the skip link moves the focus; as a link it would change the route
document.querySelector('.skip').addEventListener('click', (event) => {
  event.preventDefault();
  main.focus();
});

window.addEventListener('hashchange', () => {
  clearNotices();
  route();
  // move focus to the new page for keyboard and screen-reader users
  if (!main.contains(document.activeElement)) main.focus({ preventScroll: true });
});
renderWho();
route();
