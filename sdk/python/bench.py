"""Benchmark of one Python worker process against a running agentq (used by
scripts/bench-sdk.sh): the drain of a backlog of no-op runs, and idle POST → succeeded.

    python bench.py URL [--runs 20000] [--concurrency 64] [--idle 50]

Prints one JSON line: drain runs/s, and idle latency p50/p99 in ms.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time

from agentq import Client, Worker


async def post_backlog(client: Client, runs: int) -> None:
    queue = iter(range(runs))

    async def poster() -> None:
        for i in queue:
            await client.create("py_noop", {"i": i})

    await asyncio.gather(*(poster() for _ in range(64)))


async def counts(client: Client) -> dict:
    return (await client._http.json("GET", "/v1/runs/counts", params={"agent": "py_noop"}))["by_status"]


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("--runs", type=int, default=20000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--idle", type=int, default=50)
    args = parser.parse_args()
    client = Client(args.url, retry_for=120)
    worker = Worker(args.url, concurrency=args.concurrency, claim_wait=10)

    @worker.agent("py_noop")
    async def py_noop(ctx, input):
        return None

    # declare first, then fill the queue while no worker claims
    await client._http.json("PUT", "/v1/agents/py_noop", json={"worker_id": worker.worker_id})
    t0 = time.perf_counter()
    await post_backlog(client, args.runs)
    posted = time.perf_counter() - t0
    stop = asyncio.Event()
    started = time.perf_counter()
    serving = asyncio.create_task(worker.serve(stop))
    while (await counts(client))["succeeded"] < args.runs:
        await asyncio.sleep(0.01)
    drained = time.perf_counter() - started

    latencies = []
    for _ in range(args.idle):
        await asyncio.sleep(0.02)
        t0 = time.perf_counter()
        run = await client.create("py_noop")
        while (await client.get(run["id"]))["status"] != "succeeded":
            pass
        latencies.append((time.perf_counter() - t0) * 1000)
    stop.set()
    await serving
    await client.aclose()
    latencies.sort()
    print(json.dumps({
        "sdk": "python",
        "runs": args.runs,
        "concurrency": args.concurrency,
        "drain_runs_per_s": round(args.runs / drained),
        "post_runs_per_s": round(args.runs / posted),
        "idle_p50_ms": round(statistics.median(latencies), 2),
        "idle_p99_ms": round(latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))], 2),
    }))


asyncio.run(main())
