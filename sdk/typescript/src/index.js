// agentq: serve agents written in TypeScript or JavaScript to an agentq server, and submit
// and follow runs. No runtime dependencies beyond `fetch` (Node ≥ 20).

export { Client, TERMINAL } from "./client.js";
export { AgentqError, AttemptLost, Permanent, StreamFull, Suspended, Unavailable } from "./errors.js";
export { VERSION } from "./transport.js";
export { Context, Worker } from "./worker.js";
