"""Benchmark of one SDK worker process against a running agentq (scripts/bench-sdk.sh):
the drain of a backlog of no-op runs, and idle POST → succeeded.

    python bench.py URL --sdk python|typescript [--runs 20000] [--concurrency 64] [--idle 50]

The worker runs in a child process of its own, as it would beside a web app: this file with
`--serve` for Python, `sdk/typescript/bench-worker.mjs` for TypeScript. This process, the same
client for both, posts the runs and watches them. Prints one JSON line: drain runs/s, and idle
POST → succeeded (as seen by polling GET) p50/p99 in ms.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path

from agentq import Client, Worker


def serve(url: str, concurrency: int) -> None:
    worker = Worker(url, concurrency=concurrency, claim_wait=10)

    @worker.agent("py_noop")
    async def py_noop(ctx, input):
        return None

    worker.run()


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("--sdk", choices=["python", "typescript"], default="python")
    parser.add_argument("--runs", type=int, default=20000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--idle", type=int, default=50)
    args = parser.parse_args()
    client = Client(args.url, retry_for=120)
    agent = "py_noop" if args.sdk == "python" else "ts_noop"
    # declare first, then fill the queue while no worker claims
    await client._http.json("PUT", f"/v1/agents/{agent}", json={"worker_id": "bench"})
    numbers = iter(range(args.runs))

    async def poster() -> None:
        for i in numbers:
            await client.create(agent, {"i": i})

    t0 = time.perf_counter()
    await asyncio.gather(*(poster() for _ in range(64)))
    posted = time.perf_counter() - t0

    async def succeeded() -> int:
        counts = await client._http.json("GET", "/v1/runs/counts", params={"agent": agent})
        return counts["by_status"]["succeeded"]

    started = time.perf_counter()
    if args.sdk == "python":
        command = [sys.executable, __file__, "--serve", args.url, str(args.concurrency)]
    else:
        script = Path(__file__).resolve().parents[1] / "typescript" / "bench-worker.mjs"
        command = ["node", str(script), args.url, str(args.concurrency)]
    worker = await asyncio.create_subprocess_exec(*command)
    while await succeeded() < args.runs:
        await asyncio.sleep(0.01)
    drained = time.perf_counter() - started

    latencies = []
    for _ in range(args.idle):
        await asyncio.sleep(0.02)
        t0 = time.perf_counter()
        run = await client.create(agent)
        while (await client.get(run["id"]))["status"] != "succeeded":
            pass
        latencies.append((time.perf_counter() - t0) * 1000)
    worker.terminate()
    await worker.wait()
    await client.aclose()
    latencies.sort()
    print(json.dumps({
        "sdk": args.sdk,
        "runs": args.runs,
        "concurrency": args.concurrency,
        "drain_runs_per_s": round(args.runs / drained),
        "post_runs_per_s": round(args.runs / posted),
        "idle_p50_ms": round(statistics.median(latencies), 2),
        "idle_p99_ms": round(latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))], 2),
    }))


if __name__ == "__main__":
    if sys.argv[1:2] == ["--serve"]:
        serve(sys.argv[2], int(sys.argv[3]))
    else:
        asyncio.run(main())
