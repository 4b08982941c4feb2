"""A Python agent served to agentq, and a run of it.

    cargo run --release                      # agentq on 127.0.0.1:8080
    pip install ./sdk/python                 # once (in a virtualenv)
    python sdk/python/examples/upper.py      # serves py_upper, runs it once, keeps serving

Then submit more runs (`curl -s localhost:8080/v1/runs -H 'content-type: application/json'
-d '{"agent": "py_upper", "input": {"text": "hi"}}'`) and watch them in the dashboard
(http://localhost:8080/ui/). Ctrl-C stops the worker after its running attempts finish.
"""

import asyncio
import os
import signal

from agentq import Client, Permanent, Worker

URL = os.environ.get("AGENTQ_URL", "http://127.0.0.1:8080")
API_KEY = os.environ.get("AGENTQ_API_KEY")  # a key with the `worker` scope, if the server uses keys

worker = Worker(URL, api_key=API_KEY, concurrency=8)


@worker.agent(
    "py_upper",
    input_schema={"type": "object", "required": ["text"], "properties": {"text": {"type": "string"}}},
    max_attempts=3,
)
async def py_upper(ctx, input):
    """Upper-cases text, slowly enough to watch."""
    words = input["text"].split()
    done = ctx.saved_checkpoint or []  # the words an earlier attempt already did
    for i, word in enumerate(words[len(done):], start=len(done)):
        if ctx.cancelled.is_set():
            raise Permanent(f"stopped: {ctx.cancel_reason}")
        await asyncio.sleep(0.2)
        done.append(word.upper())
        await ctx.checkpoint(done)
        await ctx.progress(100 * (i + 1) // len(words), f"{i + 1} of {len(words)} words")
    return {"upper": " ".join(done)}


async def main() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    serving = asyncio.create_task(worker.serve(stop))
    async with Client(URL, api_key=os.environ.get("AGENTQ_CLIENT_KEY", API_KEY)) as client:
        # the agent is declared as the worker starts; until then the run is refused
        for _ in range(50):
            try:
                run = await client.create("py_upper", {"text": "agents in any language"})
                break
            except Exception:
                await asyncio.sleep(0.1)
        async for event in client.events(run["id"]):
            print(event["type"], event["data"] or "")
        print("result:", (await client.get(run["id"]))["result"])
    print("serving py_upper until Ctrl-C")
    await serving


asyncio.run(main())
