"""HTTP to agentq (aiohttp), retried with backoff while agentq is unavailable."""

from __future__ import annotations

import asyncio
import json as jsonlib
import random
from dataclasses import dataclass
from typing import Any

import aiohttp

from .errors import AgentqError, Unavailable

__version__ = "0.1.0"

#: Answers that mean "not now": retried.
RETRY_STATUSES = frozenset({429, 502, 503, 504})


@dataclass
class Answer:
    """A response, read whole."""

    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return jsonlib.loads(self.body) if self.body else None


class Transport:
    """One connection pool to one agentq server (opened on first use, in the running
    event loop)."""

    def __init__(
        self,
        url: str,
        api_key: str | None = None,
        *,
        timeout: float = 30.0,
        retry_for: float = 30.0,
    ) -> None:
        self.url = url.rstrip("/")
        self.retry_for = retry_for
        self.timeout = timeout
        self.headers = {"user-agent": f"agentq-python/{__version__}"}
        if api_key:
            self.headers["authorization"] = f"Bearer {api_key}"
        self._session: aiohttp.ClientSession | None = None

    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                headers=self.headers,
                connector=aiohttp.TCPConnector(limit=64),
                timeout=aiohttp.ClientTimeout(total=self.timeout, sock_connect=5.0),
            )
        return self._session

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def send(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        data: str | None = None,
        params: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
        timeout: float | None = None,
        retry_for: float | None = None,
    ) -> Answer:
        """Sends a request; while agentq cannot be reached or answers 429/502/503/504,
        tries again with jittered backoff (honouring ``Retry-After``) for up to
        ``retry_for`` seconds (the transport's default when ``None``)."""
        loop = asyncio.get_running_loop()
        give_up = loop.time() + (self.retry_for if retry_for is None else retry_for)
        delay = 0.05
        extra: dict[str, Any] = {}
        if timeout is not None:
            extra["timeout"] = aiohttp.ClientTimeout(total=timeout, sock_connect=5.0)
        if params:
            params = {k: str(v).lower() if isinstance(v, bool) else v for k, v in params.items() if v is not None}
        if data is not None:
            # a body already serialised as JSON
            extra["data"] = data.encode()
            headers = {**(headers or {}), "content-type": "application/json"}
        while True:
            wait = delay * (0.5 + random.random() / 2)
            try:
                async with self.session().request(
                    method, self.url + path, json=json, params=params, headers=headers, **extra
                ) as response:
                    answer = Answer(response.status, dict(response.headers), await response.read())
            except (aiohttp.ClientError, asyncio.TimeoutError) as e:
                if loop.time() + wait > give_up:
                    raise Unavailable(f"agentq at {self.url} is unreachable: {e!r}") from e
            else:
                if answer.status not in RETRY_STATUSES:
                    return answer
                after = answer.headers.get("Retry-After", "")
                if after.isdigit():
                    wait = max(wait, float(after))
                if loop.time() + wait > give_up:
                    return answer
            await asyncio.sleep(wait)
            delay = min(delay * 2, 2.0)

    async def json(self, method: str, path: str, **kwargs: Any) -> Any:
        """Like :meth:`send`, returning the JSON body of a 2xx answer; raises
        :class:`AgentqError` for any other."""
        return decode(await self.send(method, path, **kwargs))


def decode(answer: Answer) -> Any:
    if 200 <= answer.status < 300:
        return answer.json()
    try:
        body = answer.json()
    except ValueError:
        body = answer.body.decode(errors="replace")
    if isinstance(body, dict):
        code = str(body.get("code") or "error")
        detail = str(body.get("detail") or body.get("title") or "")
    else:
        code, detail = "error", str(body)[:500]
    raise AgentqError(answer.status, code, detail, body)
