"""The client: create runs, read them, wait for them, cancel, signal, follow events."""

from __future__ import annotations

import asyncio
import json as jsonlib
import random
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiohttp

from ._transport import Answer, Transport, decode
from .errors import AgentqError

#: A run in one of these has ended.
TERMINAL = frozenset({"succeeded", "failed", "cancelled"})


class Client:
    """An agentq client. Use ``async with Client(url) as client:`` or call :meth:`aclose`.

    Every call retries while agentq is unavailable (up to ``retry_for`` seconds);
    :meth:`create` sends an ``Idempotency-Key`` so that a retry never creates a run twice.
    """

    def __init__(
        self,
        url: str = "http://127.0.0.1:8080",
        api_key: str | None = None,
        *,
        timeout: float = 30.0,
        retry_for: float = 30.0,
    ) -> None:
        self._http = Transport(url, api_key, timeout=timeout, retry_for=retry_for)

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def create(
        self,
        agent: str,
        input: Any = None,
        *,
        idempotency_key: str | None = None,
        **fields: Any,
    ) -> dict[str, Any]:
        """Creates a run of ``agent`` (other fields of ``POST /v1/runs`` as keywords:
        ``max_attempts``, ``timeout_ms``, ``priority``, ``metadata``, ``deadline``, …)
        and returns it as created (``status`` ``queued`` or ``blocked``)."""
        body = {"agent": agent, "input": {} if input is None else input, **fields}
        key = idempotency_key or f"sdk-{uuid.uuid4()}"
        return await self._http.json(
            "POST", "/v1/runs", json=body, headers={"idempotency-key": key}
        )

    async def get(self, run_id: str) -> dict[str, Any]:
        return await self._http.json("GET", f"/v1/runs/{run_id}")

    async def wait(
        self, run_id: str, timeout: float | None = None, poll: float = 0.25
    ) -> dict[str, Any]:
        """Polls the run (cheaply: ``If-None-Match``) until it has ended and returns it.
        Raises ``TimeoutError`` after ``timeout`` seconds."""
        async def until_ended() -> dict[str, Any]:
            etag: str | None = None
            run: dict[str, Any] = {}
            while True:
                headers = {"if-none-match": etag} if etag else None
                response = await self._http.send("GET", f"/v1/runs/{run_id}", headers=headers)
                if response.status != 304:
                    run = decode(response)
                    etag = response.headers.get("ETag")
                    if run["status"] in TERMINAL:
                        return run
                await asyncio.sleep(poll)

        return await asyncio.wait_for(until_ended(), timeout)

    async def list(self, **params: Any) -> dict[str, Any]:
        """``GET /v1/runs`` with its filters (``status``, ``agent``, ``limit``, ``cursor``, …)."""
        return await self._http.json("GET", "/v1/runs", params=params)

    async def cancel(self, run_id: str) -> dict[str, Any]:
        return await self._http.json("POST", f"/v1/runs/{run_id}/cancel")

    async def signal(self, run_id: str, name: str, payload: Any = None) -> dict[str, Any]:
        body = {"name": name, "payload": payload}
        return await self._http.json("POST", f"/v1/runs/{run_id}/signals", json=body)

    async def events(self, run_id: str, after: int = 0) -> AsyncIterator[dict[str, Any]]:
        """The run's events, from the start (or after seq ``after``), then live as they
        happen; ends after the run's last event. Reconnects where it left off when the
        stream breaks, and while the server is busy (``503``, as when it serves as many
        streams as it may: ``too_many_streams``) tries again with backoff for up to
        ``retry_for`` seconds."""
        last = after
        busy_since: float | None = None
        wait = 0.25
        loop = asyncio.get_running_loop()
        while True:
            try:
                async for event in self._follow(run_id, last):
                    busy_since, wait = None, 0.25
                    last = event["seq"]
                    yield event
                return
            except AgentqError as e:
                if e.status != 503:
                    raise
                busy_since = busy_since if busy_since is not None else loop.time()
                if loop.time() - busy_since > self._http.retry_for:
                    raise
            except asyncio.CancelledError:
                raise
            except Exception:  # the stream broke: resume after the last event seen
                pass
            await asyncio.sleep(wait + random.random() * wait)
            wait = min(wait * 2, 5.0)

    async def _follow(self, run_id: str, after: int) -> AsyncIterator[dict[str, Any]]:
        headers = {"accept": "text/event-stream", "last-event-id": str(after)}
        async with self._http.session().get(
            f"{self._http.url}/v1/runs/{run_id}/events",
            headers=headers,
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=5.0),
        ) as response:
            if response.status == 204:  # the run ended before: nothing more will come
                return
            if response.status != 200:
                decode(Answer(response.status, dict(response.headers), await response.read()))
            data: list[str] = []
            async for raw in response.content:
                line = raw.decode().rstrip("\r\n")
                if line.startswith("data:"):
                    data.append(line[5:].lstrip(" "))
                elif line == "" and data:
                    yield jsonlib.loads("\n".join(data))
                    data = []
