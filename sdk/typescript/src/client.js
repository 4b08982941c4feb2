// The client: create runs, read them, wait for them, cancel, signal, follow events.

import { randomUUID } from "node:crypto";

import { Transport, decode } from "./transport.js";

/** A run in one of these has ended. */
export const TERMINAL = new Set(["succeeded", "failed", "cancelled"]);

/** @param {number} ms */
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

export class Client {
  /**
   * Every call retries while agentq is unavailable (up to `retryForMs`); `create` sends an
   * `Idempotency-Key`, so a retry never creates a run twice.
   * @param {{url?: string, apiKey?: string | null, timeoutMs?: number, retryForMs?: number}} [options]
   */
  constructor(options = {}) {
    this.http = new Transport(options.url ?? "http://127.0.0.1:8080", options);
  }

  /**
   * Creates a run of `agent`; `fields` are the other fields of `POST /v1/runs`.
   * @param {string} agent
   * @param {unknown} [input]
   * @param {Record<string, unknown> & {idempotencyKey?: string}} [fields]
   */
  async create(agent, input = {}, fields = {}) {
    const { idempotencyKey, ...rest } = fields;
    const key = idempotencyKey ?? `sdk-${randomUUID()}`;
    return this.http.json("POST", "/v1/runs", {
      json: { agent, input, ...rest },
      headers: { "idempotency-key": key },
    });
  }

  /** @param {string} runId */
  async get(runId) {
    return this.http.json("GET", `/v1/runs/${runId}`);
  }

  /**
   * Polls the run (cheaply: `If-None-Match`) until it has ended and returns it; rejects
   * after `timeoutMs`.
   * @param {string} runId
   * @param {{timeoutMs?: number, pollMs?: number}} [options]
   */
  async wait(runId, options = {}) {
    const giveUp = Date.now() + (options.timeoutMs ?? Infinity);
    /** @type {string | null} */
    let etag = null;
    for (;;) {
      /** @type {Record<string, string>} */
      const headers = etag ? { "if-none-match": etag } : {};
      const response = await this.http.send("GET", `/v1/runs/${runId}`, { headers });
      if (response.status !== 304) {
        etag = response.headers.get("etag");
        const run = await decode(response);
        if (TERMINAL.has(run.status)) return run;
      } else {
        await response.body?.cancel();
      }
      if (Date.now() > giveUp) throw new Error(`run ${runId} has not ended within ${options.timeoutMs} ms`);
      await sleep(options.pollMs ?? 250);
    }
  }

  /** `GET /v1/runs` with its filters (`status`, `agent`, `limit`, `cursor`, …). */
  /** @param {Record<string, string | number | boolean | undefined>} [query] */
  async list(query = {}) {
    return this.http.json("GET", "/v1/runs", { query });
  }

  /** @param {string} runId */
  async cancel(runId) {
    return this.http.json("POST", `/v1/runs/${runId}/cancel`);
  }

  /** @param {string} runId @param {string} name @param {unknown} [payload] */
  async signal(runId, name, payload = null) {
    return this.http.json("POST", `/v1/runs/${runId}/signals`, { json: { name, payload } });
  }

  /**
   * The run's events from the start (or after seq `after`), then live; ends after the run's
   * last event. Reconnects where it left off when the stream breaks, and while the server
   * is busy (`503`, as when it serves as many streams as it may: `too_many_streams`) it
   * tries again with backoff for up to `retryForMs`.
   * @param {string} runId
   * @param {{after?: number}} [options]
   * @returns {AsyncGenerator<any>}
   */
  async *events(runId, options = {}) {
    let last = options.after ?? 0;
    let busySince = null;
    let wait = 250;
    for (;;) {
      let ended = false;
      try {
        for await (const event of this.#follow(runId, last)) {
          busySince = null;
          wait = 250;
          last = event.seq;
          yield event;
        }
        ended = true;
      } catch (e) {
        const error = /** @type {any} */ (e);
        if (error?.name === "AgentqError") {
          if (error.status !== 503) throw e;
          busySince ??= Date.now();
          if (Date.now() - busySince > this.http.retryForMs) throw e;
        }
        await sleep(wait + Math.random() * wait);
        wait = Math.min(wait * 2, 5000);
      }
      if (ended) return;
    }
  }

  /** @param {string} runId @param {number} after @returns {AsyncGenerator<any>} */
  async *#follow(runId, after) {
    const response = await fetch(`${this.http.url}/v1/runs/${runId}/events`, {
      headers: { ...this.http.headers, accept: "text/event-stream", "last-event-id": String(after) },
    });
    if (response.status !== 200 || !response.body) {
      await decode(response);
      return;
    }
    const decoder = new TextDecoder();
    let buffer = "";
    /** @type {string[]} */
    let data = [];
    for await (const chunk of response.body) {
      buffer += decoder.decode(chunk, { stream: true });
      let newline;
      while ((newline = buffer.indexOf("\n")) >= 0) {
        const line = buffer.slice(0, newline).replace(/\r$/, "");
        buffer = buffer.slice(newline + 1);
        if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
        else if (line === "" && data.length) {
          yield JSON.parse(data.join("\n"));
          data = [];
        }
      }
    }
  }
}
