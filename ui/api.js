// The API client: the visitor's credential, problem+json errors, and live event streams.

const STORE = 'agentq.credential';

export const credential = {
  get() { return sessionStorage.getItem(STORE) || ''; },
  set(value) { sessionStorage.setItem(STORE, value.trim()); },
  clear() { sessionStorage.removeItem(STORE); },
  /** The run a run token opens (`rt.<run>.<tenant>.<expiry>.<sig>`), or null for a key. */
  tokenRun() {
    const value = this.get();
    if (!value.startsWith('rt.')) return null;
    return value.split('.')[1] || null;
  },
};

/** A failed request: `problem` is the server's problem document, or one made here. */
export class ApiError extends Error {
  constructor(status, problem) {
    super(problem.detail || problem.title || `HTTP ${status}`);
    this.status = status;
    this.problem = problem;
  }
}

function headers(extra, value) {
  const h = { Accept: 'application/json', ...extra };
  if (value) h.Authorization = `Bearer ${value}`;
  return h;
}

async function problemOf(response) {
  const type = response.headers.get('content-type') || '';
  if (type.includes('json')) {
    try {
      const body = await response.json();
      if (body && typeof body === 'object') {
        return {
          title: String(body.title || response.statusText || 'Error'),
          detail: typeof body.detail === 'string' ? body.detail : '',
          code: body.code,
          errors: Array.isArray(body.errors) ? body.errors : [],
          request_id: body.request_id,
        };
      }
    } catch { /* not JSON after all: described below */ }
  }
  // anything else (a proxy's HTML page, say) is summarised, never shown raw
  return { title: response.statusText || 'Error', detail: `The server answered HTTP ${response.status}.`, errors: [] };
}

function unreachable(error) {
  return new ApiError(0, { title: 'Cannot reach the server', detail: `The request did not complete (${error.name}). Is agentq running?`, errors: [] });
}

/**
 * True for a 401 that refuses the credential itself (missing, unknown, revoked), which the
 * key panel answers; a refused signal signature is a 401 too, but another key cannot help.
 */
export function refusesCredential(error) {
  return error instanceof ApiError && error.status === 401 && error.problem.code !== 'bad_signature';
}

/** A JSON request to the API; throws ApiError. A refused credential also asks for a key. */
export async function api(path, { method = 'GET', body, signal } = {}) {
  let response;
  const used = credential.get();
  try {
    response = await fetch(path, {
      method,
      headers: headers(body === undefined ? {} : { 'Content-Type': 'application/json' }, used),
      body: body === undefined ? undefined : JSON.stringify(body),
      signal,
      cache: 'no-store',
    });
  } catch (error) {
    if (error.name === 'AbortError') throw error;
    throw unreachable(error);
  }
  if (!response.ok) {
    const error = new ApiError(response.status, await problemOf(response));
    if (refusesCredential(error)) {
      window.dispatchEvent(new CustomEvent('agentq:unauthenticated', { detail: { error, credential: used } }));
    }
    throw error;
  }
  return response.status === 204 ? null : response.json();
}

/**
 * Follows a run's events as server-sent events after `after`, calling `onEvent` with each
 * until the server ends the stream (the run finished) or `signal` aborts. Sent with the
 * Authorization header (EventSource cannot send one), so keys never land in URLs.
 */
export async function followEvents(runId, after, onEvent, signal) {
  let response;
  try {
    response = await fetch(`/v1/runs/${encodeURIComponent(runId)}/events`, {
      headers: headers({ Accept: 'text/event-stream', 'Last-Event-ID': String(after) }, credential.get()),
      signal,
      cache: 'no-store',
    });
  } catch (error) {
    if (error.name === 'AbortError') throw error;
    throw unreachable(error);
  }
  if (!response.ok) throw new ApiError(response.status, await problemOf(response));
  // 204: the run finished and nothing more will come
  if (response.status === 204 || !response.body) return;
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value.replace(/\r\n?/g, '\n');
    let end;
    while ((end = buffer.indexOf('\n\n')) >= 0) {
      const frame = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const data = frame.split('\n').filter((l) => l.startsWith('data:')).map((l) => l.slice(5).replace(/^ /, '')).join('\n');
      if (!data) continue; // a comment (keep-alive)
      try { onEvent(JSON.parse(data)); } catch { /* a frame that is not an event */ }
    }
  }
}

/** A human sentence for an error, with the fields a validation error names. */
export function describe(error) {
  if (!(error instanceof ApiError)) return { text: 'Something went wrong in the page. Reload it to try again.', fields: [] };
  const p = error.problem;
  if (p.code === 'bad_signature') {
    return {
      text: 'This server only accepts signed signals (it runs with --signal-secret), and a page cannot sign one '
        + 'with an API key. Open the run from its run-token link to answer it here, or send the signal from a program that signs it.',
      fields: [],
    };
  }
  const text = p.detail && p.detail !== p.title ? `${p.title}: ${p.detail}` : p.title;
  const fields = (p.errors || []).map((e) => `${e.field}: ${e.message}`);
  return { text, fields };
}
