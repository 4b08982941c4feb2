// A worker process for the tests that stop or kill one: serves `ts_slow` until SIGTERM.
// argv: URL MS [TOKEN_FILE]. `ts_slow` sleeps MS, then returns {slept: MS}; with
// TOKEN_FILE it first writes its attempt token there.

import { renameSync, writeFileSync } from "node:fs";
import { Worker } from "agentq";

const [url, ms, tokenFile] = process.argv.slice(2);
const worker = new Worker({ url, concurrency: 4, drainTimeoutMs: 10_000, claimWaitMs: 1000 });
worker.agent("ts_slow", {}, async (ctx) => {
  if (tokenFile) {
    // whole or not at all: the test reads it as soon as it exists
    writeFileSync(`${tokenFile}.part`, ctx.token);
    renameSync(`${tokenFile}.part`, tokenFile);
  }
  await new Promise((r) => setTimeout(r, Number(ms)));
  return { slept: Number(ms), attempt: ctx.attempt };
});
console.log("ready");
await worker.run();
