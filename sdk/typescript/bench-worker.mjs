// The TypeScript side of scripts/bench-sdk.sh: one worker process serving the no-op agent
// `ts_noop` until SIGTERM. `sdk/python/bench.py --sdk typescript` starts it and measures.
//
//   node bench-worker.mjs URL CONCURRENCY

import { Worker } from "agentq";

const [url, concurrency = "64"] = process.argv.slice(2);
const worker = new Worker({ url, concurrency: Number(concurrency), claimWaitMs: 10_000 });
worker.agent("ts_noop", {}, async () => null);
await worker.run();
