// A TypeScript/JavaScript agent served to agentq, and a run of it.
//
//   cargo run --release                          # agentq on 127.0.0.1:8080
//   node sdk/typescript/examples/upper.mjs       # serves ts_upper, runs it once, keeps serving
//
// (In your own project: `npm install /path/to/agentq/sdk/typescript`, then import "agentq".)
// Submit more runs with curl and watch them in the dashboard (http://localhost:8080/ui/).
// Ctrl-C stops the worker after its running attempts finish.

import { Client, Permanent, Worker } from "agentq";

const url = process.env.AGENTQ_URL ?? "http://127.0.0.1:8080";
const apiKey = process.env.AGENTQ_API_KEY; // a key with the `worker` scope, if the server uses keys

const worker = new Worker({ url, apiKey, concurrency: 8 });
worker.agent(
  "ts_upper",
  {
    description: "Upper-cases text, slowly enough to watch",
    inputSchema: { type: "object", required: ["text"], properties: { text: { type: "string" } } },
    maxAttempts: 3,
  },
  async (ctx, input) => {
    const words = input.text.split(/\s+/);
    const done = ctx.savedCheckpoint ?? []; // the words an earlier attempt already did
    for (let i = done.length; i < words.length; i++) {
      if (ctx.signal.aborted) throw new Permanent(`stopped: ${ctx.cancelReason}`);
      await new Promise((r) => setTimeout(r, 200));
      done.push(words[i].toUpperCase());
      await ctx.checkpoint(done);
      await ctx.progress((100 * (i + 1)) / words.length, `${i + 1} of ${words.length} words`);
    }
    return { upper: done.join(" ") };
  },
);

const serving = worker.run(); // until SIGINT/SIGTERM
const client = new Client({ url, apiKey: process.env.AGENTQ_CLIENT_KEY ?? apiKey });
let run;
for (let i = 0; i < 50 && !run; i++) {
  // the agent is declared as the worker starts; until then the run is refused
  run = await client.create("ts_upper", { text: "agents in any language" }).catch(() => null);
  if (!run) await new Promise((r) => setTimeout(r, 100));
}
for await (const event of client.events(run.id)) console.log(event.type, event.data ?? "");
console.log("result:", (await client.get(run.id)).result);
console.log("serving ts_upper until Ctrl-C");
await serving;
