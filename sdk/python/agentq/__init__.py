"""agentq: serve agents written in Python to an agentq server, and submit and follow runs.

    from agentq import Worker

    worker = Worker("http://127.0.0.1:8080", concurrency=8)

    @worker.agent("py_upper", input_schema={"type": "object", "required": ["text"]})
    async def py_upper(ctx, input):
        await ctx.progress(50, "half way")
        return {"upper": input["text"].upper()}

    worker.run()
"""

from ._transport import __version__
from .client import TERMINAL, Client
from .errors import AgentqError, AttemptLost, Permanent, StreamFull, Suspended, Unavailable
from .worker import Context, Worker

__all__ = [
    "TERMINAL",
    "AgentqError",
    "AttemptLost",
    "Client",
    "Context",
    "Permanent",
    "StreamFull",
    "Suspended",
    "Unavailable",
    "Worker",
    "__version__",
]
