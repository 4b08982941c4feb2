"""A worker process for the tests that stop or kill one: serves `py_slow` until SIGTERM.

argv: URL SECONDS [TOKEN_FILE]. `py_slow` sleeps SECONDS, then returns {"slept": SECONDS};
with TOKEN_FILE it first writes its attempt token there (for the test to play a stale
attempt with).
"""

import asyncio
import sys

from agentq import Worker

url, seconds = sys.argv[1], float(sys.argv[2])
token_file = sys.argv[3] if len(sys.argv) > 3 else None
worker = Worker(url, concurrency=4, drain_timeout=10, claim_wait=1)


@worker.agent("py_slow")
async def py_slow(ctx, input):
    if token_file:
        with open(token_file, "w") as f:
            f.write(ctx._token)
    await asyncio.sleep(seconds)
    return {"slept": seconds, "attempt": ctx.attempt}


print("ready", flush=True)
worker.run()
