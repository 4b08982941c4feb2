"""HTTP to agentq, retried with backoff while agentq is unavailable."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import httpx

from .errors import AgentqError, Unavailable

__version__ = "0.1.0"

#: Answers that mean "not now": retried.
RETRY_STATUSES = frozenset({429, 502, 503, 504})


class Transport:
    """One connection pool to one agentq server."""

    def __init__(
        self,
        url: str,
        api_key: str | None = None,
        *,
        timeout: float = 30.0,
        retry_for: float = 30.0,
    ) -> None:
        headers = {"user-agent": f"agentq-python/{__version__}"}
        if api_key:
            headers["authorization"] = f"Bearer {api_key}"
        self.url = url.rstrip("/")
        self.retry_for = retry_for
        self._client = httpx.AsyncClient(
            base_url=self.url,
            headers=headers,
            timeout=httpx.Timeout(timeout, connect=5.0),
            limits=httpx.Limits(max_connections=64, max_keepalive_connections=32),
        )

    async def aclose(self) -> None:
        await self._client.aclose()

    async def send(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
        timeout: float | None = None,
        retry_for: float | None = None,
    ) -> httpx.Response:
        """Sends a request; while agentq cannot be reached or answers 429/502/503/504,
        tries again with jittered backoff (honouring ``Retry-After``) for up to
        ``retry_for`` seconds (the transport's default when ``None``)."""
        loop = asyncio.get_running_loop()
        give_up = loop.time() + (self.retry_for if retry_for is None else retry_for)
        delay = 0.05
        extra: dict[str, Any] = {}
        if timeout is not None:
            extra["timeout"] = timeout
        while True:
            wait = delay * (0.5 + random.random() / 2)
            try:
                response = await self._client.request(
                    method, path, json=json, params=params, headers=headers, **extra
                )
            except httpx.TransportError as e:
                if loop.time() + wait > give_up:
                    raise Unavailable(f"agentq at {self.url} is unreachable: {e!r}") from e
            else:
                if response.status_code not in RETRY_STATUSES:
                    return response
                after = response.headers.get("retry-after", "")
                if after.isdigit():
                    wait = max(wait, float(after))
                if loop.time() + wait > give_up:
                    return response
            await asyncio.sleep(wait)
            delay = min(delay * 2, 2.0)

    async def json(self, method: str, path: str, **kwargs: Any) -> Any:
        """Like :meth:`send`, returning the JSON body of a 2xx answer; raises
        :class:`AgentqError` for any other."""
        response = await self.send(method, path, **kwargs)
        return decode(response)


def decode(response: httpx.Response) -> Any:
    if 200 <= response.status_code < 300:
        return response.json() if response.content else None
    try:
        body = response.json()
    except ValueError:
        body = response.text
    if isinstance(body, dict):
        code = str(body.get("code") or "error")
        detail = str(body.get("detail") or body.get("title") or "")
    else:
        code, detail = "error", str(body)[:500]
    raise AgentqError(response.status_code, code, detail, body)
