// A client generated from openapi/openapi.json (its types by openapi-typescript, in
// src/openapi.d.ts; its requests by openapi-fetch) against a real agentq server: runs are
// created and listed with a metadata filter through it, so the filter's documented form is
// one a generated client sends right. `npm run typecheck` checks this file too, so the
// calls below are checked against the document's types.

import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { after, before, test } from "node:test";

import createClient from "openapi-fetch";

// the test server, loaded by URL: its untyped helpers stay out of the type check
/** @type {{startServer: () => Promise<{url: string, stop: () => Promise<void>}>}} */
const { startServer } = await import(new URL("./server.mjs", import.meta.url).href);

/** @type {{url: string, stop: () => Promise<void>}} */
let server;
/** @type {import("openapi-fetch").Client<import("../src/openapi.js").paths>} */
let api;

before(async () => {
  server = await startServer();
  api = createClient({ baseUrl: server.url });
});
after(() => server.stop());

test("the metadata filter round-trips through the generated client", async () => {
  const suite = randomUUID(); // this test's runs, whatever else the server holds
  /** @type {Record<string, string>} */
  const made = {};
  for (const [customer, team] of [["globex", "a"], ["globex", "b"], ["initech", "a"]]) {
    const { data, response } = await api.POST("/v1/runs", {
      body: { agent: "echo", input: { value: 1 }, metadata: { customer, team, suite } },
    });
    assert.equal(response.status, 202);
    assert.ok(data);
    made[`${customer}/${team}`] = data.id;
  }
  /** @param {string[]} metadata */
  const listed = async (...metadata) => {
    const { data, error } = await api.GET("/v1/runs", {
      params: { query: { metadata: [`suite=${suite}`, ...metadata], limit: 100 } },
    });
    assert.equal(error, undefined, JSON.stringify(error));
    return (data?.runs ?? []).map((r) => r.id).sort();
  };
  assert.deepEqual(await listed("customer=globex"), [made["globex/a"], made["globex/b"]].sort());
  assert.deepEqual(await listed("customer=globex", "team=b"), [made["globex/b"]]);
  assert.deepEqual(await listed("customer=umbrella"), []);
  assert.equal((await listed()).length, 3);
  const counts = await api.GET("/v1/runs/counts", { params: { query: { metadata: [`suite=${suite}`, "team=a"] } } });
  assert.equal(counts.data?.total, 2);
  // a malformed entry is refused with the field named, not ignored
  const refused = await api.GET("/v1/runs", { params: { query: { metadata: ["no-equals-sign"] } } });
  assert.equal(refused.response.status, 422);
  assert.equal(refused.error?.errors?.[0]?.field, "metadata");
});
