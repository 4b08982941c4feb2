// A real agentq server for the SDK's tests: the binary at $AGENTQ_BIN (default: the
// repository's target/debug/agentq), on a free port, with a fresh database: a SQLite file,
// or with AGENTQ_SDK_DB=postgres a database of its own in the PostgreSQL at DATABASE_URL
// (made and dropped with $AGENTQ_PG_BIN/psql); with AGENTQ_SDK_DELIVERY=redis it delivers
// through the Redis at REDIS_URL, under a key namespace of its own.

import { execFileSync, spawn } from "node:child_process";
import { mkdtempSync, openSync, readFileSync, rmSync, accessSync, constants } from "node:fs";
import { randomBytes } from "node:crypto";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../..");

export function binary() {
  const bin = process.env.AGENTQ_BIN || path.join(repo, "target/debug/agentq");
  try {
    accessSync(bin, constants.X_OK);
  } catch {
    throw new Error(`no agentq binary at ${bin}: run cargo build (or set AGENTQ_BIN)`);
  }
  return bin;
}

function freePort() {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.listen(0, "127.0.0.1", () => {
      const { port } = /** @type {import("node:net").AddressInfo} */ (server.address());
      server.close(() => resolve(port));
    });
    server.on("error", reject);
  });
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** `agentq serve` with a short lease (2 s) so lost attempts come back quickly. */
export async function startServer({ keys = [], args = [] } = {}) {
  const dir = mkdtempSync(path.join(tmpdir(), "agentq-sdk-ts-"));
  let db = `sqlite://${dir}/agentq.db`;
  const psql = (sql) => {
    const bin = process.env.AGENTQ_PG_BIN ? path.join(process.env.AGENTQ_PG_BIN, "psql") : "psql";
    execFileSync(bin, [process.env.DATABASE_URL, "-v", "ON_ERROR_STOP=1", "-qAtc", sql], { stdio: "ignore" });
  };
  let pgDatabase = null;
  if (process.env.AGENTQ_SDK_DB === "postgres") {
    pgDatabase = `agentq_sdk_${randomBytes(8).toString("hex")}`;
    psql(`CREATE DATABASE ${pgDatabase}`);
    const url = new URL(process.env.DATABASE_URL);
    url.pathname = `/${pgDatabase}`;
    db = url.toString();
  }
  const delivery = process.env.AGENTQ_SDK_DELIVERY === "redis"
    ? ["--queue-url", process.env.REDIS_URL, "--queue-namespace", `agentq-test-sdk-${randomBytes(6).toString("hex")}`]
    : [];
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  const created = keys.map(([tenant, scopes]) => {
    const out = execFileSync(binary(), ["keys", "--database-url", db, "create", "--tenant", tenant, "--scopes", scopes], { encoding: "utf8" });
    return out.split(/\s+/).find((w) => w.startsWith("aq_"));
  });
  const log = openSync(path.join(dir, "server.log"), "w");
  const child = spawn(binary(), ["serve", "--listen", `127.0.0.1:${port}`, "--database-url", db, "--lease", "2s", "--poll-interval", "50ms", ...delivery, ...args], {
    stdio: ["ignore", log, log],
    env: { ...process.env, RUST_LOG: process.env.AGENTQ_SDK_LOG || "warn" },
  });
  const deadline = Date.now() + 30_000;
  for (;;) {
    try {
      const r = await fetch(`${url}/healthz`);
      if (r.ok) break;
    } catch {
      // not up yet
    }
    if (child.exitCode !== null || Date.now() > deadline) {
      throw new Error(`agentq did not start: ${readFileSync(path.join(dir, "server.log"), "utf8").slice(-4000)}`);
    }
    await sleep(50);
  }
  return {
    url,
    keys: created,
    async stop() {
      child.kill("SIGTERM");
      await new Promise((r) => (child.exitCode !== null ? r(undefined) : child.once("exit", r)));
      rmSync(dir, { recursive: true, force: true });
      if (pgDatabase) psql(`DROP DATABASE IF EXISTS ${pgDatabase} WITH (FORCE)`);
    },
  };
}

/** Calls `probe` every 20 ms until it returns something truthy. */
export async function eventually(probe, { within = 10_000, what = "the condition" } = {}) {
  const deadline = Date.now() + within;
  for (;;) {
    const found = await probe();
    if (found) return found;
    if (Date.now() > deadline) throw new Error(`not within ${within} ms: ${what}; last seen ${JSON.stringify(found)}`);
    await sleep(20);
  }
}
