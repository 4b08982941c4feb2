// HTTP to agentq over `fetch`, retried with backoff while agentq is unavailable.

import { AgentqError, Unavailable } from "./errors.js";

export const VERSION = "0.1.0";

/** Answers that mean "not now": retried. */
const RETRY_STATUSES = new Set([429, 502, 503, 504]);

/** @param {number} ms */
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * @typedef {object} SendOptions
 * @property {unknown} [json] the body, as JSON
 * @property {Record<string, string>} [headers]
 * @property {Record<string, string | number | boolean | undefined>} [query]
 * @property {number} [timeoutMs] per try
 * @property {number} [retryForMs] how long to keep trying while agentq is unavailable
 * @property {AbortSignal} [signal] gives up (rejecting with its reason) when it aborts
 * @property {string} [body] a body already serialised as JSON
 */

export class Transport {
  /**
   * @param {string} url
   * @param {{apiKey?: string | null, timeoutMs?: number, retryForMs?: number}} [options]
   */
  constructor(url, options = {}) {
    this.url = url.replace(/\/+$/, "");
    this.timeoutMs = options.timeoutMs ?? 30_000;
    this.retryForMs = options.retryForMs ?? 30_000;
    /** @type {Record<string, string>} */
    this.headers = { "user-agent": `agentq-typescript/${VERSION}` };
    if (options.apiKey) this.headers.authorization = `Bearer ${options.apiKey}`;
  }

  /**
   * Sends a request; while agentq cannot be reached or answers 429/502/503/504, tries again
   * with jittered backoff (honouring `Retry-After`) for up to `retryForMs`.
   * @param {string} method
   * @param {string} path
   * @param {SendOptions} [options]
   * @returns {Promise<Response>}
   */
  async send(method, path, options = {}) {
    const giveUp = Date.now() + (options.retryForMs ?? this.retryForMs);
    let delay = 50;
    let target = this.url + path;
    if (options.query) {
      const params = new URLSearchParams();
      for (const [k, v] of Object.entries(options.query)) if (v !== undefined) params.set(k, String(v));
      const text = params.toString();
      if (text) target += `?${text}`;
    }
    /** @type {Record<string, string>} */
    const headers = { ...this.headers, ...options.headers };
    let body = options.body;
    if (options.json !== undefined) body = JSON.stringify(options.json);
    if (body !== undefined) headers["content-type"] = "application/json";
    for (;;) {
      let wait = delay * (0.5 + Math.random() / 2);
      // the caller's signal or the time limit, whichever comes first (by hand: Node 20.0
      // has no AbortSignal.any)
      const abort = new AbortController();
      const timer = setTimeout(() => abort.abort(new Error("timed out")), options.timeoutMs ?? this.timeoutMs);
      const onAbort = () => abort.abort(options.signal?.reason);
      options.signal?.addEventListener("abort", onAbort, { once: true });
      try {
        const response = await fetch(target, { method, headers, body, signal: abort.signal });
        if (!RETRY_STATUSES.has(response.status)) return response;
        const after = Number(response.headers.get("retry-after"));
        if (Number.isFinite(after) && after > 0) wait = Math.max(wait, after * 1000);
        if (Date.now() + wait > giveUp) return response;
        await response.body?.cancel();
      } catch (e) {
        if (options.signal?.aborted) throw options.signal.reason;
        if (Date.now() + wait > giveUp) {
          throw new Unavailable(`agentq at ${this.url} is unreachable: ${e}`, e);
        }
      } finally {
        clearTimeout(timer);
        options.signal?.removeEventListener("abort", onAbort);
      }
      await sleep(wait);
      delay = Math.min(delay * 2, 2000);
    }
  }

  /**
   * Like `send`, returning the JSON body of a 2xx answer; throws `AgentqError` for any other.
   * @param {string} method
   * @param {string} path
   * @param {SendOptions} [options]
   * @returns {Promise<any>}
   */
  async json(method, path, options) {
    return decode(await this.send(method, path, options));
  }
}

/**
 * @param {Response} response
 * @returns {Promise<any>}
 */
export async function decode(response) {
  const text = await response.text();
  if (response.ok) return text ? JSON.parse(text) : null;
  /** @type {any} */
  let body = text;
  try {
    body = JSON.parse(text);
  } catch {
    // not JSON: the text is the detail
  }
  const code = typeof body === "object" && body ? String(body.code ?? "error") : "error";
  const detail = typeof body === "object" && body ? String(body.detail ?? body.title ?? "") : String(text).slice(0, 500);
  throw new AgentqError(response.status, code, detail, body);
}
