"""Errors the SDK raises, and the ones an agent raises to say how it failed."""

from __future__ import annotations

from typing import Any


class AgentqError(Exception):
    """The server answered with a problem (``application/problem+json``)."""

    def __init__(self, status: int, code: str, detail: str, body: Any = None):
        super().__init__(f"{status} {code}: {detail}")
        self.status = status
        self.code = code
        self.detail = detail
        self.body = body

    @property
    def errors(self) -> list[dict[str, Any]]:
        """The fields a ``422`` names: ``[{"field", "code", "message"}]``."""
        if isinstance(self.body, dict):
            return list(self.body.get("errors") or [])
        return []


class Unavailable(Exception):
    """agentq could not be reached, or stayed unavailable, for longer than the SDK retries."""


class Permanent(Exception):
    """Raise from an agent for a failure no retry can fix: the run fails at once."""


class StreamFull(Permanent):
    """The run's output stream holds as much as the server allows (``--max-stream-bytes``):
    nothing of the refused part was stored. Unhandled, it fails the run for good."""


class AttemptLost(BaseException):
    """The attempt no longer holds its run (cancelled, finished, or its lease ran out).

    Raised from a context call of an agent whose attempt was lost, to stop it. It derives
    from ``BaseException`` so that ``except Exception`` in the agent does not swallow it.
    """


class Suspended(BaseException):
    """Raised by ``ctx.wait_for`` when no signal is there yet: the run now waits, and this
    attempt ends. Let it pass (it derives from ``BaseException`` for that): the agent is
    called again, from its checkpoint, when a signal arrives."""
