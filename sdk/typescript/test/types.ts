// Compiled (not run) by `npm run typecheck`: the README's example, against the SDK's types.
import { Client, Permanent, Worker, type Run } from "agentq";

const worker = new Worker({ url: "http://127.0.0.1:8080", concurrency: 8 });
worker.agent<{ text: string }, { upper: string }>(
  "ts_upper",
  { inputSchema: { type: "object", required: ["text"] } },
  async (ctx, input) => {
    await ctx.progress(50, "half way");
    if (!input.text) throw new Permanent("no text");
    return { upper: input.text.toUpperCase() };
  },
);

export async function submit(client: Client): Promise<Run> {
  const created = await client.create("ts_upper", { text: "hi" }, { max_attempts: 2 });
  return client.wait(created.id, { timeoutMs: 10_000 });
}
