// The worker: serves agents written in TypeScript/JavaScript to an agentq server.
//
// It declares its agents, long-polls for runs, runs each attempt under its time limit with
// an AbortSignal, and reports progress, logs, checkpoints, waits and outcomes in batches. A
// heartbeat renews its attempts' leases and tells it which to stop. The guarantees
// (fencing, leases, retries, deadlines, limits) live in the server: a report from an
// attempt that lost its run is refused, never applied.

import os from "node:os";
import { randomBytes } from "node:crypto";

import { AgentqError, AttemptLost, Permanent, StreamFull, Suspended, Unavailable } from "./errors.js";
import { Transport, VERSION } from "./transport.js";

/** How long an agent whose signal fired gets to stop before its outcome is reported. */
const STOP_GRACE_MS = 1000;

/** @param {number} ms */
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * Waits for `promise`, at most `ms`; the timer does not outlive the wait (a pending one
 * would keep the process alive after the worker stopped).
 * @param {Promise<unknown>} promise
 * @param {number} ms
 */
async function within(promise, ms) {
  /** @type {NodeJS.Timeout | undefined} */
  let timer;
  try {
    await Promise.race([promise, new Promise((resolve) => (timer = setTimeout(resolve, ms)))]);
  } finally {
    clearTimeout(timer);
  }
}

/** Why an attempt stops without the server's say: it owns nothing to report any more. */
const GONE = new Set(["cancelled", "lost", "finished"]);

/** What an attempt sees of its run, and how it reports back. */
export class Context {
  /** @param {Worker} worker @param {any} run @param {string} serverNow */
  constructor(worker, run, serverNow) {
    this.#worker = worker;
    this.token = /** @type {string} */ (run.attempt_token);
    /** @type {string} */ this.runId = run.run_id;
    /** @type {string} */ this.agent = run.agent;
    /** @type {number} */ this.attempt = run.attempt;
    /** @type {number} */ this.maxAttempts = run.max_attempts;
    /** @type {string} */ this.tenant = run.tenant;
    /** @type {Record<string, string>} */ this.metadata = run.metadata ?? {};
    /** @type {string | null} */ this.createdBy = run.created_by ?? null;
    /** The W3C trace context of the request that created the run. @type {string | null} */
    this.traceparent = run.traceparent ?? null;
    /** The results of the runs this one depends on, by run id. @type {Record<string, unknown>} */
    this.dependencies = run.dependencies ?? {};
    /** When this attempt must have ended (its time limit, or the run's deadline). */
    this.deadline = new Date(run.attempt_deadline);
    /** How long it may run, from its claim, timed on the server's clock. */
    this.timeLeftMs = this.deadline.getTime() - new Date(serverNow).getTime();
    this.#saved = run.checkpoint ?? null;
    this.#abort = new AbortController();
    /**
     * Fires when the attempt should stop: cancelled through the API, its time limit or the
     * run's deadline reached, the worker shutting down, or the run lost.
     */
    this.signal = this.#abort.signal;
    /** Why `signal` fired: cancelled, timeout, deadline_exceeded, shutdown, lost, finished. @type {string | null} */
    this.cancelReason = null;
  }

  #worker;
  #abort;
  /** @type {unknown} */
  #saved;

  /** The state last saved with `checkpoint`, by this attempt or an earlier one. */
  get savedCheckpoint() {
    return this.#saved;
  }

  /** Reports progress (0–100), shown in `GET /v1/runs/{id}` and its events. @param {number} percent @param {string} [message] */
  async progress(percent, message) {
    const clamped = Math.max(0, Math.min(100, Math.round(percent)));
    await this.#report({ type: "progress", percent: clamped, message: message ?? null });
  }

  /** Appends a `log` event (`level`: debug, info, warn, error). @param {string} message @param {string} [level] */
  async log(message, level = "info") {
    await this.#report({ type: "log", level, message: String(message) });
  }

  /**
   * Appends `text` to the run's output stream (`GET /v1/runs/{id}/stream`, the Vercel AI
   * SDK's UI message stream), resolving once it is stored. Deltas sent while a report is
   * on its way go together. Rejects with `StreamFull` past the server's `--max-stream-bytes`.
   * @param {string} text
   */
  async stream(text) {
    await this.streamPart({ type: "text", text: String(text) });
  }

  /**
   * Appends a part to the run's output stream: `{type: "text" | "reasoning", text}`,
   * `{type: "tool_call", tool_call_id, tool_name, input}`, `{type: "tool_result",
   * tool_call_id, output}` or `{type: "data", name, data}`.
   * @param {Record<string, unknown>} part
   */
  async streamPart(part) {
    await this.#report({ type: "stream", parts: [part] });
  }

  /** Saves `state` (JSON, at most 1 MiB) for the attempts that follow. @param {unknown} state */
  async checkpoint(state) {
    await this.#report({ type: "checkpoint", state });
    this.#saved = state;
  }

  /**
   * Returns the oldest pending signal among `signals` (`{name, payload, timed_out}`). When
   * none is there the run becomes `waiting`, frees this worker's slot, and `Suspended` is
   * thrown to end the attempt: let it propagate. The agent is called again when a signal
   * arrives (or, with `onTimeout: "resume"`, after `timeoutMs`, with `timed_out` set).
   * @param {string[]} signals
   * @param {{timeoutMs: number, onTimeout?: "fail" | "resume"}} options
   * @returns {Promise<{name: string, payload: any, timed_out: boolean}>}
   */
  async waitFor(signals, options) {
    const answer = await this.#report({
      type: "wait",
      signals,
      timeout_ms: Math.max(1, Math.round(options.timeoutMs)),
      on_timeout: options.onTimeout ?? "fail",
      // sent again after a lost answer, it gets back the signal it took
      report_id: randomBytes(16).toString("hex"),
    });
    if (answer.signal) return answer.signal;
    this.#worker._attemptEnded(this.token);
    throw new Suspended();
  }

  /** @param {Record<string, unknown>} report @returns {Promise<any>} */
  async #report(report) {
    if (this.cancelReason && GONE.has(this.cancelReason)) {
      throw new AttemptLost(`the attempt was ${this.cancelReason}`);
    }
    const answer = await this.#worker._reporter.send(JSON.stringify({ ...report, attempt_token: this.token }));
    if (answer.status === 200) return answer;
    if (answer.status === 409) {
      this._fire("lost");
      throw new AttemptLost(answer.detail ?? "the attempt lost its run");
    }
    if (answer.status === 413) throw new StreamFull(answer.detail ?? "the run's output stream is full");
    if (answer.status === 422) throw new TypeError(answer.detail ?? "invalid report");
    throw new Unavailable(answer.detail ?? `report failed with ${answer.status}`);
  }

  /** Reports how the attempt ended, once. @param {Record<string, unknown>} report @returns {Promise<void>} */
  async _final(report) {
    try {
      await this.#report(report);
    } catch (e) {
      if (e instanceof AttemptLost) return;
      // the server refused this outcome itself (a result over the body limit, say): the
      // run fails for good, saying why, rather than waiting out its lease
      const refused = e instanceof AgentqError || e instanceof TypeError;
      if (!refused || (report.type === "fail" && report.retryable === false)) throw e;
      return this._final({ type: "fail", message: `the outcome was refused: ${e}`, retryable: false });
    }
  }

  /** @param {string} reason */
  _fire(reason) {
    if (!this.signal.aborted) {
      this.cancelReason = reason;
      this.#abort.abort(new Error(`attempt stopped: ${reason}`));
    }
  }
}

/**
 * Batches reports: every report queued while a request is on its way goes in the next one
 * (up to 1,000 reports or 256 KiB). One request at a time, so one attempt's reports keep
 * their order. A batch the server refuses as a whole is sent again one report at a time, so
 * one report's fault is its own.
 */
class Reporter {
  static MAX_BATCH_BYTES = 256 * 1024;

  /** @param {Transport} http @param {string} workerId @param {number} retryForMs */
  constructor(http, workerId, retryForMs) {
    this.http = http;
    this.path = `/v1/workers/${workerId}/reports`;
    this.retryForMs = retryForMs;
    /** @type {Pending[]} */
    this.queue = [];
    this.flushing = false;
  }

  /** Queues one report (its JSON). @param {string} report @returns {Promise<any>} */
  send(report) {
    return new Promise((resolve, reject) => {
      this.queue.push({ report, resolve, reject });
      if (!this.flushing) void this.#flushAll();
    });
  }

  async #flushAll() {
    this.flushing = true;
    // the reports queued by the code running now join the first request; later ones wait
    // for it to come back and go together in the next
    await Promise.resolve();
    try {
      while (this.queue.length) {
        let size = 0;
        let count = 0;
        for (const { report } of this.queue.slice(0, 1000)) {
          if (count && size + report.length > Reporter.MAX_BATCH_BYTES) break;
          size += report.length;
          count += 1;
        }
        const batch = this.queue.splice(0, count);
        try {
          await this.#flush(batch);
        } catch (e) {
          // never leave a report unanswered
          for (const b of batch) b.reject(new Unavailable(`could not report: ${e}`, e));
        }
      }
    } finally {
      this.flushing = false;
    }
  }

  /** @param {Pending[]} batch @returns {Promise<void>} */
  async #flush(batch) {
    const giveUp = Date.now() + this.retryForMs;
    let delay = 50;
    while (batch.length) {
      let answer;
      try {
        answer = await this.http.json("POST", this.path, {
          body: `{"reports":[${batch.map((b) => b.report).join(",")}]}`,
          retryForMs: Math.max(0, giveUp - Date.now()),
        });
      } catch (e) {
        if (e instanceof AgentqError && batch.length > 1 && [400, 413, 422].includes(e.status)) {
          for (const one of batch) await this.#flush([one]);
          return;
        }
        for (const b of batch) b.reject(e instanceof AgentqError ? e : new Unavailable(`could not report: ${e}`, e));
        return;
      }
      /** @type {Pending[]} */
      const again = [];
      answer.results.forEach((/** @type {any} */ result, /** @type {number} */ i) => {
        if (result.status === 503 && Date.now() < giveUp) again.push(batch[i]);
        else batch[i].resolve(result);
      });
      batch = again;
      if (batch.length) {
        await sleep(delay * (0.5 + Math.random() / 2));
        delay = Math.min(delay * 2, 2000);
      }
    }
  }
}

/** @typedef {{report: string, resolve: (v: any) => void, reject: (e: unknown) => void}} Pending */

/**
 * @typedef {(ctx: Context, input: any) => Promise<unknown>} Handler
 * @typedef {{inputSchema?: object, description?: string, timeoutMs?: number, maxAttempts?: number, backoffBaseMs?: number, backoffCapMs?: number}} AgentOptions
 * @typedef {{url?: string, apiKey?: string | null, concurrency?: number, workerId?: string, drainTimeoutMs?: number, claimWaitMs?: number, retryForMs?: number}} WorkerOptions
 */

function defaultWorkerId() {
  const host = os.hostname().replace(/[^A-Za-z0-9_.-]/g, "-").slice(0, 80) || "host";
  return `${host}-${process.pid}-${randomBytes(4).toString("hex")}`;
}

export class Worker {
  /** @param {WorkerOptions} [options] */
  constructor(options = {}) {
    this.url = options.url ?? "http://127.0.0.1:8080";
    this.apiKey = options.apiKey ?? null;
    this.concurrency = options.concurrency ?? 8;
    if (!(this.concurrency >= 1)) throw new RangeError("concurrency must be at least 1");
    this.workerId = options.workerId ?? defaultWorkerId();
    this.drainTimeoutMs = options.drainTimeoutMs ?? 30_000;
    this.claimWaitMs = options.claimWaitMs ?? 10_000;
    this.retryForMs = options.retryForMs ?? 60_000;
    /** @type {Map<string, {handler: Handler, declaration: object}>} */
    this.agents = new Map();
    /** @type {Map<string, {ctx: Context, done: Promise<void>}>} */
    this.running = new Map();
    this.processed = 0;
    /** @type {string | null} */
    this.lastError = null;
    this.startedAt = new Date().toISOString();
    this.heartbeatMs = 500;
    this.leaseMs = 15_000;
    /** @type {(() => void) | null} */
    this.slotFreed = null;
    this.http = new Transport(this.url, {
      apiKey: this.apiKey,
      timeoutMs: this.claimWaitMs + 30_000,
      retryForMs: this.retryForMs,
    });
    this._reporter = new Reporter(this.http, this.workerId, this.retryForMs);
  }

  /**
   * Registers `handler(ctx, input)` as agent `name`. Its return value (JSON) is the run's
   * result; a thrown error fails the attempt (retried while attempts remain), a `Permanent`
   * fails the run for good. The defaults apply to runs that do not set their own.
   * @param {string} name
   * @param {AgentOptions} options
   * @param {Handler} handler
   */
  agent(name, options, handler) {
    if (this.agents.has(name)) throw new Error(`agent ${name} is registered twice`);
    /** @type {Record<string, number>} */
    const defaults = {};
    for (const [key, value] of /** @type {[string, number | undefined][]} */ ([
      ["timeout_ms", options.timeoutMs],
      ["max_attempts", options.maxAttempts],
      ["backoff_base_ms", options.backoffBaseMs],
      ["backoff_cap_ms", options.backoffCapMs],
    ])) {
      if (value !== undefined) defaults[key] = value;
    }
    const declaration = {
      worker_id: this.workerId,
      description: options.description ?? "",
      input_schema: options.inputSchema ?? {},
      defaults,
    };
    this.agents.set(name, { handler, declaration });
    return this;
  }

  /** Serves until SIGINT or SIGTERM, then drains (`drainTimeoutMs`) and stops. */
  async run() {
    const stop = new AbortController();
    const onSignal = () => stop.abort();
    process.once("SIGINT", onSignal);
    process.once("SIGTERM", onSignal);
    try {
      await this.serve(stop.signal);
    } finally {
      process.off("SIGINT", onSignal);
      process.off("SIGTERM", onSignal);
    }
  }

  /** Serves until `stop` aborts, then drains and says goodbye. @param {AbortSignal} stop */
  async serve(stop) {
    if (!this.agents.size) throw new Error("no agents: register one with worker.agent(name, options, handler)");
    await this.#beat(false);
    for (const [name, { declaration }] of this.agents) {
      await this.http.json("PUT", `/v1/agents/${name}`, { json: declaration });
    }
    const stopped = new Promise((resolve) => {
      if (stop.aborted) resolve(undefined);
      else stop.addEventListener("abort", () => resolve(undefined), { once: true });
    });
    const halt = new AbortController();
    const heartbeats = this.#heartbeats(halt.signal);
    const claims = this.#claims(stop);
    await stopped;
    await claims;
    await this.#drain();
    halt.abort();
    await heartbeats;
    await this.#beat(true);
  }

  /** @param {boolean} stopping */
  async #beat(stopping) {
    const answer = await this.http.json("POST", `/v1/workers/${this.workerId}/heartbeat`, {
      json: {
        language: "typescript",
        version: VERSION,
        host: os.hostname().slice(0, 255),
        pid: process.pid,
        agents: [...this.agents.keys()],
        concurrency: this.concurrency,
        started_at: this.startedAt,
        processed: this.processed,
        last_error: this.lastError,
        attempts: [...this.running.keys()],
        stopping,
      },
    });
    this.heartbeatMs = answer.heartbeat_ms;
    this.leaseMs = answer.lease_ms;
    for (const stop of answer.stop) this.running.get(stop.attempt_token)?.ctx._fire(stop.reason);
  }

  /** @param {AbortSignal} halt */
  async #heartbeats(halt) {
    const halted = new Promise((resolve) => halt.addEventListener("abort", resolve, { once: true }));
    while (!halt.aborted) {
      const every = this.running.size ? this.heartbeatMs : Math.min(2000, this.leaseMs / 3);
      await within(halted, every);
      if (halt.aborted) return;
      try {
        await this.#beat(false);
        this.lastError = null;
      } catch (e) {
        this.lastError = `heartbeat failed: ${e}`;
        console.warn(`agentq worker ${this.workerId}: heartbeat failed: ${e}`);
      }
    }
  }

  /** @param {AbortSignal} stop */
  async #claims(stop) {
    let delay = 500;
    const agents = [...this.agents.keys()];
    // one listener on `stop` for the whole loop: it ends the claim or the wait under way
    /** @type {AbortController | null} */
    let claim = null;
    /** @type {(() => void) | null} */
    let wake = null;
    const onStop = () => {
      claim?.abort(stop.reason);
      wake?.();
    };
    stop.addEventListener("abort", onStop, { once: true });
    /** @param {number} ms */
    const pause = (ms) => within(new Promise((resolve) => (wake = () => resolve(undefined))), ms);
    try {
      while (!stop.aborted) {
        const free = this.concurrency - this.running.size;
        if (free <= 0) {
          await new Promise((resolve) => {
            wake = () => resolve(undefined);
            this.slotFreed = wake;
          });
          this.slotFreed = null;
          continue;
        }
        let answer;
        try {
          // a stop ends the long poll at once; whatever it claimed is handed back by the goodbye
          claim = new AbortController();
          answer = await this.http.json("POST", `/v1/workers/${this.workerId}/claim`, {
            json: { agents, limit: Math.min(free, 256), wait_ms: this.claimWaitMs },
            signal: claim.signal,
          });
        } catch (e) {
          if (stop.aborted) return;
          this.lastError = `claiming runs failed: ${e}`;
          console.warn(`agentq worker ${this.workerId}: claiming runs failed: ${e}`);
          await pause(delay);
          delay = Math.min(delay * 2, 30_000);
          continue;
        }
        delay = 500;
        for (const run of answer.runs) this.#start(run, answer.now);
        // the attempts just started send their first reports before the next claim goes out:
        // an agent done at once is reported ~0.4 ms sooner (idle POST -> succeeded 4.9 -> 4.4
        // ms here), and the claim waits one turn of the event loop
        if (answer.runs.length) await new Promise((resolve) => setImmediate(resolve));
      }
    } finally {
      stop.removeEventListener("abort", onStop);
    }
  }

  /** @param {any} run @param {string} serverNow */
  #start(run, serverNow) {
    const ctx = new Context(this, run, serverNow);
    const entry = { ctx, done: Promise.resolve() };
    this.running.set(ctx.token, entry);
    entry.done = this.#execute(ctx, run).finally(() => this._attemptEnded(ctx.token));
  }

  /** The attempt's outcome is written (or it is lost): its slot is free. @param {string} token */
  _attemptEnded(token) {
    if (this.running.delete(token)) {
      this.processed += 1;
      this.slotFreed?.();
    }
  }

  /** @param {Context} ctx @param {any} run */
  async #execute(ctx, run) {
    const { handler } = /** @type {{handler: Handler}} */ (this.agents.get(run.agent));
    const started = Date.now();
    /** @type {{ok: true, value: unknown} | {ok: false, error: unknown} | null} */
    let outcome = null;
    const work = (async () => handler(ctx, run.input))().then(
      (value) => { outcome = { ok: true, value }; },
      (error) => { outcome = { ok: false, error }; },
    );
    const left = Math.max(0, ctx.timeLeftMs - (Date.now() - started));
    /** @type {NodeJS.Timeout | undefined} */
    let timer;
    const fired = new Promise((resolve) => {
      timer = setTimeout(() => {
        ctx._fire(run.deadline_is_run_deadline ? "deadline_exceeded" : "timeout");
        resolve(undefined);
      }, left);
      ctx.signal.addEventListener("abort", () => resolve(undefined), { once: true });
    });
    try {
      await Promise.race([work, fired]);
      if (!outcome) {
        // the agent sees its signal and may stop on its own, briefly
        await within(work, STOP_GRACE_MS);
      }
      await this.#conclude(ctx, outcome, Date.now() - started);
    } catch (e) {
      console.error(`agentq worker ${this.workerId}: reporting the end of run ${ctx.runId} failed: ${e}`);
    } finally {
      clearTimeout(timer);
    }
  }

  /**
   * @param {Context} ctx
   * @param {{ok: true, value: unknown} | {ok: false, error: unknown} | null} outcome
   * @param {number} elapsedMs
   */
  async #conclude(ctx, outcome, elapsedMs) {
    const reason = ctx.cancelReason;
    if (reason && GONE.has(reason)) return;
    if (!outcome || (!outcome.ok && reason)) {
      if (reason === "shutdown") return ctx._final({ type: "hand_back" });
      if (reason === "timeout" || reason === "deadline_exceeded") {
        const message = reason === "timeout" ? "the attempt ran out of time" : "the run's deadline passed";
        return ctx._final({ type: "fail", message, reason, elapsed_ms: elapsedMs });
      }
    }
    if (!outcome) return ctx._final({ type: "fail", message: "the agent did not stop", elapsed_ms: elapsedMs });
    if (outcome.ok) {
      const result = outcome.value === undefined ? null : outcome.value;
      try {
        JSON.stringify(result);
      } catch (e) {
        return ctx._final({ type: "fail", message: `the result is not JSON: ${e}`, retryable: false, elapsed_ms: elapsedMs });
      }
      return ctx._final({ type: "succeed", result, elapsed_ms: elapsedMs });
    }
    const error = outcome.error;
    if (error instanceof Suspended || error instanceof AttemptLost) return;
    const permanent = error instanceof Permanent;
    const message = error instanceof Error
      ? (permanent ? error.message : `${error.name}: ${error.message}`)
      : String(error);
    return ctx._final({ type: "fail", message, retryable: !permanent, elapsed_ms: elapsedMs });
  }

  /**
   * Lets running attempts finish within `drainTimeoutMs`; the rest are stopped and handed
   * back to the queue without using up their attempt.
   */
  async #drain() {
    const all = () => Promise.all([...this.running.values()].map((r) => r.done));
    await within(all(), this.drainTimeoutMs);
    for (const { ctx } of this.running.values()) ctx._fire("shutdown");
    await within(all(), STOP_GRACE_MS * 3);
  }
}

export { AgentqError };
