// Benchmark of one TypeScript worker process against a running agentq (used by
// scripts/bench-sdk.sh): the drain of a backlog of no-op runs, and idle POST → succeeded.
//
//   node bench.mjs URL [runs=20000] [concurrency=64] [idle=50]
//
// Prints one JSON line: drain runs/s, and idle latency p50/p99 in ms.

import { Client, Worker } from "agentq";

const [url, runs = "20000", concurrency = "64", idle = "50"] = process.argv.slice(2);
const total = Number(runs);
const client = new Client({ url, retryForMs: 120_000 });
const worker = new Worker({ url, concurrency: Number(concurrency), claimWaitMs: 10_000 });
worker.agent("ts_noop", {}, async () => null);

// declare first, then fill the queue while no worker claims
await client.http.json("PUT", "/v1/agents/ts_noop", { json: { worker_id: worker.workerId } });
let next = 0;
await Promise.all(
  Array.from({ length: 64 }, async () => {
    while (next < total) {
      const i = next++;
      await client.create("ts_noop", { i });
    }
  }),
);
const counts = async () => (await client.http.json("GET", "/v1/runs/counts", { query: { agent: "ts_noop" } })).by_status;
const stop = new AbortController();
const started = performance.now();
const serving = worker.serve(stop.signal);
while ((await counts()).succeeded < total) await new Promise((r) => setTimeout(r, 10));
const drained = (performance.now() - started) / 1000;

const latencies = [];
for (let i = 0; i < Number(idle); i++) {
  await new Promise((r) => setTimeout(r, 20));
  const t0 = performance.now();
  const run = await client.create("ts_noop");
  while ((await client.get(run.id)).status !== "succeeded");
  latencies.push(performance.now() - t0);
}
stop.abort();
await serving;
latencies.sort((a, b) => a - b);
const round = (x) => Math.round(x * 100) / 100;
console.log(JSON.stringify({
  sdk: "typescript",
  runs: total,
  concurrency: Number(concurrency),
  drain_runs_per_s: Math.round(total / drained),
  idle_p50_ms: round(latencies[Math.floor(latencies.length / 2)]),
  idle_p99_ms: round(latencies[Math.min(latencies.length - 1, Math.floor(latencies.length * 0.99))]),
}));
