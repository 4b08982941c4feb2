// The Vercel AI SDK (the real `ai` package, pinned in package.json) reading agentq's run
// streams the way a page does with `useChat`: `DefaultChatTransport` with `api` set to
// `<base>/v1/runs`, `reconnectToStream({chatId: runId})`, `readUIMessageStream`. Starts
// real agentq processes (the binary at $AGENTQ_BIN, default target/debug/agentq) on a
// fresh SQLite database, or with AGENTQ_STREAM_DB=postgres a fresh database in the
// PostgreSQL at DATABASE_URL.
//
//   node --test stream.test.mjs      (scripts/stream-test.sh installs `ai` and runs this)

import assert from "node:assert/strict";
import { execFileSync, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtempSync, openSync, readFileSync } from "node:fs";
import net from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import { test } from "node:test";
import { fileURLToPath } from "node:url";

import { DefaultChatTransport, readUIMessageStream } from "ai";

const here = path.dirname(fileURLToPath(import.meta.url));
const binary = process.env.AGENTQ_BIN || path.join(here, "../../target/debug/agentq");
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const WORDS = "Streaming tokens from a background run reaches the page live, survives a reload, and resumes after the connection drops without tying the run to it";

/** A fresh database: a SQLite file, or a PostgreSQL database of its own (dropped after). */
function database(t) {
  if (process.env.AGENTQ_STREAM_DB !== "postgres") {
    return `sqlite://${mkdtempSync(path.join(tmpdir(), "agentq-stream-"))}/agentq.db`;
  }
  const name = `agentq_stream_${randomBytes(8).toString("hex")}`;
  const psql = (sql) => {
    const bin = process.env.AGENTQ_PG_BIN ? path.join(process.env.AGENTQ_PG_BIN, "psql") : "psql";
    execFileSync(bin, [process.env.DATABASE_URL, "-v", "ON_ERROR_STOP=1", "-qAtc", sql], { stdio: "ignore" });
  };
  psql(`CREATE DATABASE ${name}`);
  t.after(() => psql(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`));
  const url = new URL(process.env.DATABASE_URL);
  url.pathname = `/${name}`;
  return url.toString();
}

async function freePort() {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
    server.on("error", reject);
  });
}

/** `agentq <command>` with a short lease; stopped (SIGKILL) when the test ends. */
function start(t, command, db, port, ...extra) {
  const dir = mkdtempSync(path.join(tmpdir(), "agentq-stream-log-"));
  const logPath = path.join(dir, `${command}.log`);
  const args = [command, "--database-url", db, "--lease", "2s", "--poll-interval", "50ms", ...extra];
  if (port) args.push("--listen", `127.0.0.1:${port}`);
  const child = spawn(binary, args, {
    stdio: ["ignore", openSync(logPath, "w"), openSync(logPath, "a")],
    env: { ...process.env, RUST_LOG: "warn" },
  });
  const exited = new Promise((resolve) => child.once("exit", resolve));
  t.after(async () => {
    if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
    await exited;
  });
  return { child, exited, log: () => readFileSync(logPath, "utf8").slice(-3000) };
}

/** Waits until `url`/healthz answers. */
async function up(base, proc) {
  const deadline = Date.now() + 30_000;
  for (;;) {
    try {
      if ((await fetch(`${base}/healthz`)).ok) return;
    } catch {
      // not up yet
    }
    if (proc.child.exitCode !== null || Date.now() > deadline) throw new Error(`agentq did not start: ${proc.log()}`);
    await sleep(50);
  }
}

async function createRun(base, input, extra = {}) {
  const response = await fetch(`${base}/v1/runs`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ agent: "echo", input, ...extra }),
  });
  assert.equal(response.status, 202, await response.clone().text());
  return (await response.json()).id;
}

async function getRun(base, id) {
  return (await fetch(`${base}/v1/runs/${id}`)).json();
}

/** Reads the run's stream as `useChat` resumes it; returns the last message and errors. */
async function resume(base, id) {
  const transport = new DefaultChatTransport({ api: `${base}/v1/runs` });
  const stream = await transport.reconnectToStream({ chatId: id });
  assert.ok(stream, "the run has a stream");
  const errors = [];
  let last = null;
  for await (const message of readUIMessageStream({ stream, onError: (e) => errors.push(e.message) })) last = message;
  return { message: last, errors };
}

const textOf = (message) => message.parts.filter((p) => p.type === "text").map((p) => p.text).join("");

/** The raw chunks of the run's stream (JSON, or the string `[DONE]`), read to the end. */
async function chunks(base, id, onChunk = () => {}) {
  const response = await fetch(`${base}/v1/runs/${id}/stream`);
  assert.equal(response.status, 200);
  assert.equal(response.headers.get("x-vercel-ai-ui-message-stream"), "v1");
  const out = [];
  const decoder = new TextDecoder();
  let buffered = "";
  for await (const bytes of response.body) {
    buffered += decoder.decode(bytes, { stream: true });
    let end;
    while ((end = buffered.indexOf("\n\n")) >= 0) {
      const block = buffered.slice(0, end);
      buffered = buffered.slice(end + 2);
      const data = block.split("\n").find((l) => l.startsWith("data:"));
      if (!data) continue;
      const text = data.slice(5).trim();
      const chunk = text === "[DONE]" ? text : JSON.parse(text);
      out.push(chunk);
      onChunk(chunk, out);
    }
  }
  return out;
}

/** The text of each message (`start` … `finish`/`error`) in raw chunks. */
function messages(all) {
  const texts = [];
  for (const chunk of all) {
    if (chunk.type === "start") texts.push("");
    if (chunk.type === "text-delta") texts[texts.length - 1] += chunk.delta;
  }
  return texts;
}

test("useChat's resume reads a running echo run's whole text exactly once, and again after it ended", async (t) => {
  const db = database(t);
  const port = await freePort();
  const base = `http://127.0.0.1:${port}`;
  await up(base, start(t, "serve", db, port));
  const id = await createRun(base, { text: WORDS, delay_ms: 2000 });
  const started = Date.now();
  const live = await resume(base, id);
  assert.ok(Date.now() - started > 1000, "read while the run was streaming");
  assert.equal(textOf(live.message), WORDS);
  assert.deepEqual(live.errors, []);
  assert.equal((await getRun(base, id)).status, "succeeded");
  const after = await resume(base, id);
  assert.equal(textOf(after.message), WORDS);
  assert.equal(after.message.id, live.message.id);
});

test("the API process restarted mid-run: the resumed stream still shows the whole text once", async (t) => {
  const db = database(t);
  const port = await freePort();
  const base = `http://127.0.0.1:${port}`;
  const worker = start(t, "worker", db, null);
  let api = start(t, "api", db, port);
  await up(base, api);
  const id = await createRun(base, { text: WORDS, delay_ms: 3000 });
  // a page follows the run, then the API process dies under it
  const reading = resume(base, id).catch((e) => e);
  await sleep(1000);
  api.child.kill("SIGKILL");
  await api.exited;
  const broken = await reading;
  assert.ok(broken instanceof Error || textOf(broken.message) !== WORDS, "the first read was cut off");
  api = start(t, "api", db, port);
  await up(base, api);
  assert.equal((await getRun(base, id)).status, "running", "the run went on without the API");
  const resumed = await resume(base, id);
  assert.equal(textOf(resumed.message), WORDS);
  assert.equal((await getRun(base, id)).status, "succeeded");
  assert.equal(worker.child.exitCode, null);
});

test("kill -9 of the worker mid-stream: what it streamed stays, the retry follows as a new message", async (t) => {
  const db = database(t);
  const port = await freePort();
  const base = `http://127.0.0.1:${port}`;
  await up(base, start(t, "api", db, port));
  let worker = start(t, "worker", db, null);
  const id = await createRun(base, { text: WORDS, delay_ms: 3000 });
  let seenBeforeKill = null;
  const all = await chunks(base, id, (chunk, so) => {
    // kill the worker once a few words are out
    if (seenBeforeKill === null && chunk.type === "text-delta" && so.filter((c) => c.type === "text-delta").length === 5) {
      seenBeforeKill = messages(so)[0];
      worker.child.kill("SIGKILL");
      worker.exited.then(() => {
        worker = start(t, "worker", db, null);
      });
    }
  });
  assert.ok(seenBeforeKill, "the worker was killed mid-stream");
  const texts = messages(all);
  assert.equal(texts.length, 2, JSON.stringify(all));
  // the first attempt's message: at least what was read before the kill, cut short
  assert.ok(texts[0].startsWith(seenBeforeKill), `${texts[0]} / ${seenBeforeKill}`);
  assert.ok(WORDS.startsWith(texts[0]) && texts[0].length < WORDS.length);
  assert.equal(texts[1], WORDS);
  const finishes = all.filter((c) => c.type === "finish").map((c) => c.finishReason);
  assert.deepEqual(finishes, ["error", "stop"]);
  assert.equal(all.at(-1), "[DONE]");
  // read again, the same; and useChat shows the retried attempt's message alone
  assert.deepEqual(messages(await chunks(base, id)), texts);
  const resumed = await resume(base, id);
  assert.equal(textOf(resumed.message), WORDS);
});

test("a failed run's stream ends with an error part", async (t) => {
  const db = database(t);
  const port = await freePort();
  const base = `http://127.0.0.1:${port}`;
  await up(base, start(t, "serve", db, port));
  const id = await createRun(base, { text: "almost there", delay_ms: 300, fail_permanently: true });
  const read = await resume(base, id);
  assert.equal(textOf(read.message), "almost there");
  assert.deepEqual(read.errors, ["failed permanently, as asked"]);
  const all = await chunks(base, id);
  assert.deepEqual(all.slice(-2).map((c) => c.type ?? c), ["error", "[DONE]"]);
  assert.equal((await getRun(base, id)).status, "failed");
});
