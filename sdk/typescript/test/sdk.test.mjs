// The TypeScript SDK against a real agentq server: the worker and the client.

import assert from "node:assert/strict";
import { spawn, execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, existsSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { fileURLToPath } from "node:url";

import { AgentqError, Client, Permanent, StreamFull, Worker } from "agentq";

import { eventually, startServer } from "./server.mjs";

const here = path.dirname(fileURLToPath(import.meta.url));
const upperSchema = { type: "object", required: ["text"], properties: { text: { type: "string" } } };
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** A server, a client, and the workers a test starts (stopped at its end). */
async function setup(t, options) {
  const server = await startServer(options);
  const client = new Client({ url: server.url });
  const stops = [];
  t.after(async () => {
    for (const { stop, serving } of stops) {
      stop.abort();
      await serving;
    }
    await server.stop();
  });
  const serve = (worker) => {
    const stop = new AbortController();
    const serving = worker.serve(stop.signal);
    stops.push({ stop, serving });
    return { stop, serving };
  };
  const declared = (name) =>
    eventually(async () => (await client.http.json("GET", "/v1/agents")).agents.some((a) => a.name === name), {
      what: `${name} is declared`,
    });
  return { server, client, serve, declared };
}

test("the OpenAPI types are generated from the committed document", () => {
  const dir = mkdtempSync(path.join(tmpdir(), "agentq-openapi-"));
  const fresh = path.join(dir, "openapi.d.ts");
  execFileSync(path.join(here, "../node_modules/.bin/openapi-typescript"), [path.join(here, "../../../openapi/openapi.json"), "--output", fresh], { stdio: "ignore" });
  assert.equal(readFileSync(fresh, "utf8"), readFileSync(path.join(here, "../src/openapi.d.ts"), "utf8"), "src/openapi.d.ts is stale: run npm run generate in sdk/typescript");
});

test("success with progress visible while running", async (t) => {
  const { server, client, serve, declared } = await setup(t);
  const worker = new Worker({ url: server.url, concurrency: 4 });
  let release;
  const released = new Promise((r) => (release = r));
  worker.agent("ts_upper", { inputSchema: upperSchema }, async (ctx, input) => {
    await ctx.progress(50, "half way");
    await ctx.log("working on it");
    await released;
    return { upper: input.text.toUpperCase(), seen: [ctx.tenant, ctx.metadata, ctx.createdBy] };
  });
  serve(worker);
  await declared("ts_upper");
  await assert.rejects(client.create("ts_upper", { text: 1 }), (e) => e instanceof AgentqError && e.status === 422 && e.errors[0].field === "input/text");
  const run = await client.create("ts_upper", { text: "abc" }, { metadata: { user: "u1" } });
  const seen = await eventually(async () => {
    const r = await client.get(run.id);
    return r.progress?.percent === 50 && r;
  }, { what: "progress shows while running" });
  assert.equal(seen.status, "running");
  assert.equal(seen.progress.message, "half way");
  release();
  const done = await client.wait(run.id, { timeoutMs: 10_000 });
  assert.equal(done.status, "succeeded");
  // the run as the context shows it: tenant, metadata, who created it (no keys: "open")
  assert.deepEqual(done.result, { upper: "ABC", seen: ["default", { user: "u1" }, "open"] });
  const kinds = [];
  for await (const e of client.events(run.id)) kinds.push(e.type);
  assert.equal(kinds[0], "created");
  assert.ok(kinds.includes("log"));
  assert.equal(kinds.at(-1), "succeeded");
  const listed = await client.list({ agent: "ts_upper" });
  assert.deepEqual(listed.runs.map((r) => r.id), [run.id]);
});

test("an error is retried, and a Permanent fails for good", async (t) => {
  const { server, client, serve, declared } = await setup(t);
  const worker = new Worker({ url: server.url });
  const calls = [];
  worker.agent("ts_flaky", { backoffBaseMs: 10, backoffCapMs: 20 }, async (ctx) => {
    calls.push(ctx.attempt);
    if (ctx.attempt === 1) throw new Error("upstream flaked");
    return { attempt: ctx.attempt };
  });
  worker.agent("ts_refuses", { maxAttempts: 5 }, async () => {
    throw new Permanent("the input cannot work");
  });
  serve(worker);
  await declared("ts_refuses");
  const flaky = await client.create("ts_flaky");
  const refused = await client.create("ts_refuses");
  const done = await client.wait(flaky.id, { timeoutMs: 10_000 });
  assert.equal(done.status, "succeeded");
  assert.deepEqual(done.result, { attempt: 2 });
  assert.deepEqual(calls, [1, 2]);
  const failed = await client.wait(refused.id, { timeoutMs: 10_000 });
  assert.equal(failed.status, "failed");
  assert.equal(failed.attempt, 1);
  assert.equal(failed.max_attempts, 5);
  assert.deepEqual(failed.error, { kind: "agent_error", message: "the input cannot work" });
});

test("streamed parts land in order, and a full stream is refused", async (t) => {
  const { server, client, serve, declared } = await setup(t, { args: ["--max-stream-bytes", "100"] });
  const worker = new Worker({ url: server.url });
  const refused = [];
  worker.agent("ts_stream", {}, async (ctx) => {
    for (const word of ["Hello", " ", "brave", " ", "world"]) await ctx.stream(word);
    // sent together: one request, joined by the server where adjacent
    await Promise.all([ctx.stream("!"), ctx.stream("!")]);
    await ctx.streamPart({ type: "tool_call", tool_call_id: "c1", tool_name: "look", input: { q: 1 } });
    await ctx.stream("x".repeat(100)).catch((e) => {
      if (!(e instanceof StreamFull)) throw e;
      refused.push(e.message);
    });
    return { ok: true };
  });
  serve(worker);
  await declared("ts_stream");
  const run = await client.create("ts_stream");
  const done = await client.wait(run.id, { timeoutMs: 10_000 });
  assert.equal(done.status, "succeeded");
  const parts = [];
  for await (const e of client.events(run.id)) if (e.type === "stream") parts.push(e.data);
  assert.equal(parts.filter((p) => p.type === "text").map((p) => p.text).join(""), "Hello brave world!!");
  assert.equal(parts.at(-1).type, "tool_call");
  assert.deepEqual(parts.at(-1).input, { q: 1 });
  assert.equal(refused.length, 1);
  assert.match(refused[0], /100 bytes/);
});

test("a timeout and a cancel reach the handler within a second", async (t) => {
  const { server, client, serve, declared } = await setup(t);
  const worker = new Worker({ url: server.url });
  const started = new Map();
  const fired = new Map();
  worker.agent("ts_stuck", {}, async (ctx) => {
    started.set(ctx.runId, Date.now());
    await new Promise((r) => ctx.signal.addEventListener("abort", r, { once: true }));
    fired.set(ctx.runId, [ctx.cancelReason, Date.now()]);
    throw new Error("stopped");
  });
  serve(worker);
  await declared("ts_stuck");
  const timed = await client.create("ts_stuck", {}, { timeout_ms: 500, max_attempts: 1 });
  const failed = await client.wait(timed.id, { timeoutMs: 10_000 });
  assert.equal(failed.status, "failed");
  assert.equal(failed.error.kind, "timeout");
  assert.equal(fired.get(timed.id)[0], "timeout");
  assert.ok(fired.get(timed.id)[1] - started.get(timed.id) < 1500);

  const cancelled = await client.create("ts_stuck");
  await eventually(() => started.has(cancelled.id), { what: "it started" });
  const asked = Date.now();
  await client.cancel(cancelled.id);
  await eventually(() => fired.has(cancelled.id), { what: "the cancel reached it" });
  const [reason, at] = fired.get(cancelled.id);
  assert.equal(reason, "cancelled");
  assert.ok(at - asked < 1000, `${at - asked} ms`);
  assert.equal((await client.get(cancelled.id)).status, "cancelled");
});

test("a wait is resumed by a signal with its checkpoint", async (t) => {
  const { server, client, serve, declared } = await setup(t);
  const worker = new Worker({ url: server.url });
  const seen = [];
  worker.agent("ts_approval", {}, async (ctx) => {
    seen.push(ctx.savedCheckpoint);
    if (ctx.savedCheckpoint === null) await ctx.checkpoint({ drafted: true });
    const signal = await ctx.waitFor(["approve"], { timeoutMs: 60_000 });
    return { approved: signal.payload, drafted: ctx.savedCheckpoint.drafted };
  });
  serve(worker);
  await declared("ts_approval");
  const run = await client.create("ts_approval");
  const waiting = await eventually(async () => {
    const r = await client.get(run.id);
    return r.status === "waiting" && r;
  }, { what: "the run waits" });
  assert.deepEqual(waiting.waiting_for.signals, ["approve"]);
  await client.signal(run.id, "approve", { by: "ann" });
  const done = await client.wait(run.id, { timeoutMs: 10_000 });
  assert.equal(done.status, "succeeded");
  assert.deepEqual(done.result, { approved: { by: "ann" }, drafted: true });
  assert.deepEqual(seen, [null, { drafted: true }]);
});

test("concurrency is respected", async (t) => {
  const { server, client, serve, declared } = await setup(t);
  const worker = new Worker({ url: server.url, concurrency: 3 });
  let now = 0;
  let most = 0;
  worker.agent("ts_busy", {}, async (ctx, input) => {
    now += 1;
    most = Math.max(most, now);
    await sleep(200);
    now -= 1;
    return input;
  });
  serve(worker);
  await declared("ts_busy");
  const runs = [];
  for (let i = 0; i < 10; i++) runs.push(await client.create("ts_busy", { i }));
  for (const run of runs) assert.equal((await client.wait(run.id, { timeoutMs: 20_000 })).status, "succeeded");
  assert.equal(most, 3);
});

test("the worker is listed with its language, and a name agentq holds is refused", async (t) => {
  const { server, client, serve, declared } = await setup(t);
  const worker = new Worker({ url: server.url, concurrency: 5 });
  worker.agent("ts_listed", {}, async () => null);
  const { stop, serving } = serve(worker);
  await declared("ts_listed");
  const listed = async () => (await client.http.json("GET", "/v1/workers")).workers.find((w) => w.id === worker.workerId);
  const me = await eventually(listed, { what: "the worker is listed" });
  assert.equal(me.language, "typescript");
  assert.deepEqual(me.agents, ["ts_listed"]);
  assert.equal(me.concurrency, 5);
  stop.abort();
  await serving;
  assert.equal((await listed()).state, "stopped");

  const taken = new Worker({ url: server.url });
  taken.agent("echo", {}, async (_ctx, input) => input);
  await assert.rejects(taken.serve(new AbortController().signal), (e) => e instanceof AgentqError && e.status === 409 && e.code === "agent_name_taken");
});

test("an outcome the server refuses fails the run, saying why", async (t) => {
  const { server, client, serve, declared } = await setup(t);
  const worker = new Worker({ url: server.url });
  worker.agent("ts_huge", { maxAttempts: 3 }, async (ctx) => {
    await ctx.progress(10, "making a lot");
    return { blob: "x".repeat(2 * 1024 * 1024) }; // over the server's 1 MiB body limit
  });
  serve(worker);
  await declared("ts_huge");
  const run = await client.create("ts_huge");
  const failed = await client.wait(run.id, { timeoutMs: 15_000 });
  assert.equal(failed.status, "failed");
  assert.equal(failed.attempt, 1, "failed for good, not retried");
  assert.match(failed.error.message, /refused/);
});

test("a worker key serves and can do nothing else", async (t) => {
  const { server, serve } = await setup(t, { keys: [["acme", "worker"], ["acme", "runs:read,runs:write"]] });
  const [workerKey, clientKey] = server.keys;
  const worker = new Worker({ url: server.url, apiKey: workerKey });
  worker.agent("ts_keyed", {}, async (ctx) => ({ tenant: ctx.tenant }));
  serve(worker);
  const client = new Client({ url: server.url, apiKey: clientKey });
  const run = await eventually(async () => {
    try {
      return await client.create("ts_keyed");
    } catch (e) {
      if (e.code === "validation_failed") return null;
      throw e;
    }
  }, { what: "the agent is declared" });
  assert.deepEqual((await client.wait(run.id, { timeoutMs: 10_000 })).result, { tenant: "acme" });
  const asWorker = new Client({ url: server.url, apiKey: workerKey });
  for (const call of [() => asWorker.create("ts_keyed"), () => asWorker.get(run.id), () => asWorker.list()]) {
    await assert.rejects(call(), (e) => e instanceof AgentqError && e.status === 403);
  }
});

describe("worker processes", () => {
  const startWorker = async (url, ms, tokenFile) => {
    const args = [path.join(here, "worker-app.mjs"), url, String(ms)];
    if (tokenFile) args.push(tokenFile);
    const child = spawn(process.execPath, args, { stdio: ["ignore", "pipe", "inherit"] });
    await new Promise((resolve, reject) => {
      child.stdout.once("data", (d) => (String(d).includes("ready") ? resolve() : reject(new Error(String(d)))));
      child.once("exit", (code) => reject(new Error(`worker exited with ${code}`)));
    });
    return child;
  };
  const exited = (child) => new Promise((r) => (child.exitCode !== null ? r(child.exitCode) : child.once("exit", (code) => r(code))));

  test("SIGTERM drains the running attempt", async (t) => {
    const { server, client, declared } = await setup(t);
    const child = await startWorker(server.url, 1000);
    t.after(() => child.kill("SIGKILL"));
    await declared("ts_slow");
    const run = await client.create("ts_slow");
    await eventually(async () => (await client.get(run.id)).status === "running", { what: "the run is running" });
    child.kill("SIGTERM");
    assert.equal(await exited(child), 0);
    const done = await client.get(run.id);
    assert.equal(done.status, "succeeded", "it finished during the drain");
    assert.equal(done.attempt, 1);
  });

  test("kill -9 mid-run: retried after the lease, and the stale attempt is refused", async (t) => {
    const { server, client, serve, declared } = await setup(t);
    const tokenFile = path.join(mkdtempSync(path.join(tmpdir(), "agentq-token-")), "token");
    const doomed = await startWorker(server.url, 60_000, tokenFile);
    await declared("ts_slow");
    const run = await client.create("ts_slow");
    await eventually(() => existsSync(tokenFile), { what: "the first attempt started" });
    const stale = readFileSync(tokenFile, "utf8");
    doomed.kill("SIGKILL");
    await exited(doomed);
    const killedAt = Date.now();
    const survivor = new Worker({ url: server.url });
    survivor.agent("ts_slow", {}, async (ctx) => ({ attempt: ctx.attempt }));
    serve(survivor);
    const done = await client.wait(run.id, { timeoutMs: 20_000 });
    assert.equal(done.status, "succeeded");
    assert.deepEqual(done.result, { attempt: 2 });
    assert.ok(Date.now() - killedAt > 1000, "retried only after the lease");
    const events = [];
    for await (const e of client.events(run.id)) events.push(e);
    const kinds = events.map((e) => `${e.type}:${e.attempt}`);
    assert.ok(kinds.indexOf("attempt_lost:1") < kinds.indexOf("started:2"), `no two attempts overlap: ${kinds}`);
    const firstWorker = events.find((e) => e.type === "started" && e.attempt === 1).data.worker_id;
    const answer = await client.http.json("POST", `/v1/workers/${firstWorker}/reports`, {
      json: { reports: [{ attempt_token: stale, type: "succeed", result: "stale" }] },
    });
    assert.equal(answer.results[0].code, "attempt_lost");
    assert.deepEqual((await client.get(run.id)).result, { attempt: 2 });
  });
});

test("events() waits while the server serves as many streams as it may, then follows", async (t) => {
  const { client } = await setup(t, { args: ["--max-streams", "1"] });
  // the one stream the server may serve: a run waiting for a signal
  const waiting = await client.create("echo", { value: "a", wait_for: ["go"] });
  const first = (async () => {
    const kinds = [];
    for await (const e of client.events(waiting.id)) kinds.push(e.type);
    return kinds;
  })();
  const done = await client.create("echo", { value: "b" });
  await client.wait(done.id);
  // refused (503 too_many_streams) until the first stream ends
  const second = (async () => {
    const kinds = [];
    for await (const e of client.events(done.id)) kinds.push(e.type);
    return kinds;
  })();
  second.catch(() => {}); // (a refusal fails the test where it is awaited, below)
  await new Promise((resolve) => setTimeout(resolve, 1000));
  await client.signal(waiting.id, "go");
  assert.equal((await first).at(-1), "succeeded");
  const kinds = await second;
  assert.equal(kinds[0], "created");
  assert.equal(kinds.at(-1), "succeeded");
});
