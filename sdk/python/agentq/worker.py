"""The worker: serves agents written in Python to an agentq server.

It declares its agents, long-polls for runs, runs each attempt as an asyncio task under
its time limit, and reports progress, logs, checkpoints, waits and outcomes in batches.
A heartbeat renews its attempts' leases and tells it which to stop. The guarantees
(fencing, leases, retries, deadlines, limits) live in the server: a report from an
attempt that lost its run is refused, never applied.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import os
import random
import signal
import socket
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from ._transport import Transport, __version__
from .errors import AgentqError, AttemptLost, Permanent, StreamFull, Suspended, Unavailable

log = logging.getLogger("agentq.worker")

Handler = Callable[["Context", Any], Awaitable[Any]]

#: How long an agent whose cancellation fired gets to stop before its task is cancelled.
STOP_GRACE = 1.0


@dataclass
class _Agent:
    name: str
    handler: Handler
    declaration: dict[str, Any]


class Context:
    """What an attempt sees of its run, and how it reports back."""

    def __init__(self, worker: Worker, run: dict[str, Any], server_now: str) -> None:
        self._worker = worker
        self._token: str = run["attempt_token"]
        self.run_id: str = run["run_id"]
        self.agent: str = run["agent"]
        self.attempt: int = run["attempt"]
        self.max_attempts: int = run["max_attempts"]
        self.tenant: str = run["tenant"]
        self.metadata: dict[str, str] = dict(run.get("metadata") or {})
        #: Who created the run: ``key:<key id>``, ``run_token:<run id>`` or ``open``;
        #: ``None`` for a run the engine made (a compensation run).
        self.created_by: str | None = run.get("created_by")
        #: The W3C trace context of the request that created the run.
        self.traceparent: str | None = run.get("traceparent")
        #: The results of the runs this one depends on, by run id.
        self.dependencies: dict[str, Any] = dict(run.get("dependencies") or {})
        #: When this attempt must have ended (its time limit, or the run's deadline), on the
        #: server's clock.
        self.deadline: datetime = _parse_time(run["attempt_deadline"])
        # how long it may run, timed from the server's clock, not this machine's
        self._time_left = (self.deadline - _parse_time(server_now)).total_seconds()
        self._saved = run.get("checkpoint")
        #: Set when the attempt should stop: cancelled through the API, its time limit or
        #: the run's deadline reached, the worker shutting down, or the run lost.
        self.cancelled = asyncio.Event()
        #: Why ``cancelled`` fired: ``cancelled``, ``timeout``, ``deadline_exceeded``,
        #: ``shutdown``, ``lost`` or ``finished``.
        self.cancel_reason: str | None = None

    @property
    def saved_checkpoint(self) -> Any:
        """The state last saved with :meth:`checkpoint`, by this attempt or an earlier one."""
        return self._saved

    async def progress(self, percent: int, message: str | None = None) -> None:
        """Reports progress (0–100), shown in ``GET /v1/runs/{id}`` and its events."""
        percent = max(0, min(100, int(percent)))
        await self._report({"type": "progress", "percent": percent, "message": message})

    async def log(self, message: str, level: str = "info") -> None:
        """Appends a ``log`` event to the run (``level``: debug, info, warn, error)."""
        await self._report({"type": "log", "level": level, "message": str(message)})

    async def stream(self, text: str) -> None:
        """Appends ``text`` to the run's output stream (``GET /v1/runs/{id}/stream``, the
        Vercel AI SDK's UI message stream), returning once it is stored. Deltas sent while
        a report is on its way go together. Raises :class:`StreamFull` past the server's
        ``--max-stream-bytes``."""
        await self.stream_part({"type": "text", "text": str(text)})

    async def stream_part(self, part: dict[str, Any]) -> None:
        """Appends a part to the run's output stream: ``{"type": "text" | "reasoning",
        "text"}``, ``{"type": "tool_call", "tool_call_id", "tool_name", "input"}``,
        ``{"type": "tool_result", "tool_call_id", "output"}`` or ``{"type": "data",
        "name", "data"}``."""
        await self._report({"type": "stream", "parts": [part]})

    async def checkpoint(self, state: Any) -> None:
        """Saves ``state`` (JSON, at most 1 MiB) for the attempts that follow."""
        await self._report({"type": "checkpoint", "state": state})
        self._saved = state

    async def wait_for(
        self, *signals: str, timeout: float, on_timeout: str = "fail"
    ) -> dict[str, Any]:
        """Returns the oldest pending signal among ``signals`` (``{"name", "payload",
        "timed_out"}``). When none is there, the run becomes ``waiting``, frees this
        worker's slot, and :class:`Suspended` is raised to end the attempt: let it pass.
        The agent is called again when a signal arrives (or, with ``on_timeout="resume"``,
        after ``timeout`` seconds, with ``timed_out`` set); save a checkpoint before
        waiting and resume from it."""
        answer = await self._report(
            {
                "type": "wait",
                "signals": list(signals),
                "timeout_ms": max(1, int(timeout * 1000)),
                "on_timeout": on_timeout,
                # sent again after a lost answer, it gets back the signal it took
                "report_id": uuid.uuid4().hex,
            }
        )
        if "signal" in answer:
            return answer["signal"]
        self._worker._attempt_ended(self._token)
        raise Suspended()

    async def _report(self, report: dict[str, Any]) -> dict[str, Any]:
        if self.cancel_reason in ("cancelled", "lost", "finished"):
            raise AttemptLost(f"the attempt was {self.cancel_reason}")
        report["attempt_token"] = self._token
        # refused here, to its caller alone, if it is not JSON (NaN and infinities are not)
        body = json.dumps(report, allow_nan=False)
        answer = await self._worker._reporter.send(body)
        status = answer["status"]
        if status == 200:
            return answer
        if status == 409:
            self._fire("lost")
            raise AttemptLost(answer.get("detail") or "the attempt lost its run")
        if status == 413:
            raise StreamFull(answer.get("detail") or "the run's output stream is full")
        if status == 422:
            raise ValueError(answer.get("detail") or "invalid report")
        raise Unavailable(answer.get("detail") or f"report failed with {status}")

    def _fire(self, reason: str) -> None:
        if not self.cancelled.is_set():
            self.cancel_reason = reason
            self.cancelled.set()


def _parse_time(text: str) -> datetime:
    """An RFC 3339 time as the server writes it (up to nanoseconds, `Z`), on any Python
    ≥ 3.10 (whose `fromisoformat` takes at most microseconds)."""
    text = text.replace("Z", "+00:00")
    head, dot, rest = text.partition(".")
    if dot:
        digits = len(rest) - len(rest.lstrip("0123456789"))
        rest = rest[:digits][:6].ljust(6, "0") + rest[digits:]
        text = f"{head}.{rest}"
    return datetime.fromisoformat(text)


class _Reporter:
    """Batches reports: every report queued while a request is on its way goes in the next
    one (up to 1,000 reports or 256 KiB). One request at a time, so one attempt's reports
    keep their order. A batch the server refuses as a whole is sent again one report at a
    time, so one report's fault is its own."""

    MAX_BATCH_BYTES = 256 * 1024

    def __init__(self, http: Transport, worker_id: str, retry_for: float) -> None:
        self._http = http
        self._path = f"/v1/workers/{worker_id}/reports"
        self._retry_for = retry_for
        self._queue: list[tuple[str, asyncio.Future[dict[str, Any]]]] = []
        self._wake = asyncio.Event()

    async def send(self, report: str) -> dict[str, Any]:
        """Queues one report (its JSON) and returns the server's result for it."""
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._queue.append((report, future))
        self._wake.set()
        return await future

    async def run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._queue:
                size, count = 0, 0
                for report, _ in self._queue[:1000]:
                    if count and size + len(report) > self.MAX_BATCH_BYTES:
                        break
                    size += len(report)
                    count += 1
                batch, self._queue = self._queue[:count], self._queue[count:]
                try:
                    await self._flush(batch)
                except Exception as e:  # never leave a report unanswered
                    log.exception("reporting failed")
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(Unavailable(f"could not report: {e!r}"))

    async def _flush(self, batch: list[tuple[str, asyncio.Future[dict[str, Any]]]]) -> None:
        give_up = time.monotonic() + self._retry_for
        delay = 0.05
        while batch:
            body = '{"reports":[' + ",".join(report for report, _ in batch) + "]}"
            try:
                answer = await self._http.json(
                    "POST",
                    self._path,
                    data=body,
                    retry_for=max(0.0, give_up - time.monotonic()),
                )
            except AgentqError as e:
                if len(batch) > 1 and e.status in (400, 413, 422):
                    for one in batch:
                        await self._flush([one])
                    return
                for _, future in batch:
                    if not future.done():
                        future.set_exception(e)
                return
            except Unavailable as e:
                for _, future in batch:
                    if not future.done():
                        future.set_exception(e)
                return
            again = []
            for (report, future), result in zip(batch, answer["results"]):
                if result["status"] == 503 and time.monotonic() < give_up:
                    again.append((report, future))
                elif not future.done():
                    future.set_result(result)
            batch = again
            if batch:
                await asyncio.sleep(delay * (0.5 + random.random() / 2))
                delay = min(delay * 2, 2.0)


@dataclass
class _Running:
    ctx: Context
    task: asyncio.Task[Any] | None = None
    started: float = field(default_factory=time.monotonic)


def _default_worker_id() -> str:
    host = "".join(c if c.isalnum() or c in "-_." else "-" for c in socket.gethostname())
    return f"{host[:80] or 'host'}-{os.getpid()}-{random.getrandbits(32):08x}"


class Worker:
    """Serves agents to an agentq server.

    ``concurrency`` attempts run at once, each an asyncio task. ``drain_timeout``: how long
    a stopping worker lets running attempts finish before it hands them back to the
    queue. ``claim_wait``: how long one claim waits for runs (seconds).
    """

    def __init__(
        self,
        url: str = "http://127.0.0.1:8080",
        api_key: str | None = None,
        concurrency: int = 8,
        *,
        worker_id: str | None = None,
        drain_timeout: float = 30.0,
        claim_wait: float = 10.0,
        retry_for: float = 60.0,
    ) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self.url = url
        self.api_key = api_key
        self.concurrency = concurrency
        self.worker_id = worker_id or _default_worker_id()
        self.drain_timeout = drain_timeout
        self.claim_wait = claim_wait
        self.retry_for = retry_for
        self._agents: dict[str, _Agent] = {}
        self._running: dict[str, _Running] = {}
        self._processed = 0
        self._last_error: str | None = None
        self._started_at = datetime.now(timezone.utc)
        self._slot_freed = asyncio.Event()
        self._stop: asyncio.Event | None = None
        self._heartbeat_every = 0.5
        self._lease = 15.0

    def agent(
        self,
        name: str,
        *,
        input_schema: dict[str, Any] | None = None,
        description: str | None = None,
        timeout_ms: int | None = None,
        max_attempts: int | None = None,
        backoff_base_ms: int | None = None,
        backoff_cap_ms: int | None = None,
    ) -> Callable[[Handler], Handler]:
        """Registers an ``async def handler(ctx, input)`` as agent ``name``. Its return
        value (JSON) is the run's result; an exception fails the attempt (retried while
        attempts remain), :class:`Permanent` fails the run for good. The defaults apply
        to runs that do not set their own."""

        def register(handler: Handler) -> Handler:
            if not inspect.iscoroutinefunction(handler):
                raise TypeError(f"agent {name!r} must be an async function")
            if name in self._agents:
                raise ValueError(f"agent {name!r} is registered twice")
            defaults = {
                k: v
                for k, v in {
                    "timeout_ms": timeout_ms,
                    "max_attempts": max_attempts,
                    "backoff_base_ms": backoff_base_ms,
                    "backoff_cap_ms": backoff_cap_ms,
                }.items()
                if v is not None
            }
            doc = (inspect.getdoc(handler) or "").strip().splitlines()
            declaration = {
                "worker_id": self.worker_id,
                "description": description if description is not None else (doc[0] if doc else ""),
                "input_schema": input_schema if input_schema is not None else {},
                "defaults": defaults,
            }
            self._agents[name] = _Agent(name, handler, declaration)
            return handler

        return register

    def run(self) -> None:
        """Serves until SIGINT or SIGTERM, then drains (see ``drain_timeout``) and stops."""
        asyncio.run(self._run_until_signal())

    async def _run_until_signal(self) -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await self.serve(stop)

    async def serve(self, stop: asyncio.Event) -> None:
        """Serves until ``stop`` is set, then drains and says goodbye."""
        if not self._agents:
            raise ValueError("no agents: register one with @worker.agent(name)")
        self._stop = stop
        self._slot_freed = asyncio.Event()
        http = Transport(self.url, self.api_key, timeout=self.claim_wait + 30, retry_for=self.retry_for)
        self._http = http
        self._reporter = _Reporter(http, self.worker_id, self.retry_for)
        reporter = asyncio.create_task(self._reporter.run())
        try:
            await self._beat(stopping=False)
            for agent in self._agents.values():
                await http.json("PUT", f"/v1/agents/{agent.name}", json=agent.declaration)
            log.info("worker %s serving %s", self.worker_id, ", ".join(self._agents))
            heartbeat = asyncio.create_task(self._heartbeats())
            claims = asyncio.create_task(self._claims())
            await stop.wait()
            log.info("worker %s stopping: draining %d attempts", self.worker_id, len(self._running))
            claims.cancel()
            await asyncio.gather(claims, return_exceptions=True)
            await self._drain()
            heartbeat.cancel()
            await asyncio.gather(heartbeat, return_exceptions=True)
            await self._beat(stopping=True)
        finally:
            reporter.cancel()
            await asyncio.gather(reporter, return_exceptions=True)
            await http.aclose()

    async def _beat(self, stopping: bool) -> None:
        answer = await self._http.json(
            "POST",
            f"/v1/workers/{self.worker_id}/heartbeat",
            json={
                "language": "python",
                "version": __version__,
                "host": socket.gethostname()[:255],
                "pid": os.getpid(),
                "agents": list(self._agents),
                "concurrency": self.concurrency,
                "started_at": self._started_at.isoformat(),
                "processed": self._processed,
                "last_error": self._last_error,
                "attempts": list(self._running),
                "stopping": stopping,
            },
        )
        self._heartbeat_every = answer["heartbeat_ms"] / 1000
        self._lease = answer["lease_ms"] / 1000
        for stop in answer["stop"]:
            self._stop_attempt(stop["attempt_token"], stop["reason"])

    async def _heartbeats(self) -> None:
        while True:
            # often while attempts run (a cancel reaches them within a second), else idle
            every = self._heartbeat_every if self._running else min(2.0, self._lease / 3)
            await asyncio.sleep(every)
            try:
                await self._beat(stopping=False)
                self._last_error = None
            except Exception as e:  # a heartbeat that stops would lose every attempt
                self._last_error = f"heartbeat failed: {e!r}"
                log.warning("worker %s: heartbeat failed: %r", self.worker_id, e)

    async def _claims(self) -> None:
        delay = 0.5
        names = list(self._agents)
        while True:
            free = self.concurrency - len(self._running)
            if free <= 0:
                self._slot_freed.clear()
                await self._slot_freed.wait()
                continue
            try:
                answer = await self._http.json(
                    "POST",
                    f"/v1/workers/{self.worker_id}/claim",
                    json={"agents": names, "limit": min(free, 256), "wait_ms": int(self.claim_wait * 1000)},
                )
            except Exception as e:  # a claim loop that stops would starve the worker
                self._last_error = f"claiming runs failed: {e!r}"
                log.warning("worker %s: claiming runs failed: %r", self.worker_id, e)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)
                continue
            delay = 0.5
            for run in answer["runs"]:
                try:
                    self._start(run, answer["now"])
                except Exception:  # its lease runs out and it is retried elsewhere
                    log.exception("worker %s: cannot start run %s", self.worker_id, run.get("run_id"))

    def _start(self, run: dict[str, Any], server_now: str) -> None:
        ctx = Context(self, run, server_now)
        running = _Running(ctx)
        self._running[ctx._token] = running
        running.task = asyncio.create_task(self._execute(running, run))

    def _attempt_ended(self, token: str) -> None:
        """The attempt's outcome is written (or it is lost): its slot is free."""
        if self._running.pop(token, None) is not None:
            self._processed += 1
            self._slot_freed.set()

    def _stop_attempt(self, token: str, reason: str) -> None:
        running = self._running.get(token)
        if running is None:
            return
        log.info("attempt %s of run %s: %s; stopping it", running.ctx.attempt, running.ctx.run_id, reason)
        running.ctx._fire(reason)

    async def _execute(self, running: _Running, run: dict[str, Any]) -> None:
        ctx = running.ctx
        agent = self._agents[run["agent"]]
        left = ctx._time_left - (time.monotonic() - running.started)
        work = asyncio.ensure_future(agent.handler(ctx, run["input"]))
        stopped = asyncio.ensure_future(ctx.cancelled.wait())
        try:
            await asyncio.wait({work, stopped}, timeout=max(0.0, left), return_when=asyncio.FIRST_COMPLETED)
            if not work.done():
                if not ctx.cancelled.is_set():
                    ctx._fire("deadline_exceeded" if run.get("deadline_is_run_deadline") else "timeout")
                # the agent sees `cancelled` and may stop on its own; then it is cancelled
                await asyncio.wait({work}, timeout=STOP_GRACE)
                if not work.done():
                    work.cancel()
                    await asyncio.gather(work, return_exceptions=True)
            await self._conclude(ctx, work, time.monotonic() - running.started)
        except Exception:
            log.exception("attempt %s of run %s: reporting its end failed", ctx.attempt, ctx.run_id)
        finally:
            stopped.cancel()
            if not work.done():
                work.cancel()
            self._attempt_ended(ctx._token)

    async def _conclude(self, ctx: Context, work: asyncio.Future[Any], took: float) -> None:
        reason = ctx.cancel_reason
        if work.done() and not work.cancelled():
            work.exception()  # retrieved, so asyncio does not log it as unhandled
        if reason in ("cancelled", "lost", "finished"):
            return  # the run is no longer this attempt's: nothing to report
        elapsed_ms = int(took * 1000)
        if reason == "shutdown" and (work.cancelled() or work.exception() is not None):
            await self._final(ctx, {"type": "hand_back"})
            return
        if reason in ("timeout", "deadline_exceeded") and (work.cancelled() or work.exception() is not None):
            message = "the attempt ran out of time" if reason == "timeout" else "the run's deadline passed"
            await self._final(ctx, {"type": "fail", "message": message, "reason": reason, "elapsed_ms": elapsed_ms})
            return
        if work.cancelled():
            await self._final(ctx, {"type": "fail", "message": "the agent was cancelled", "elapsed_ms": elapsed_ms})
            return
        error = work.exception()
        if isinstance(error, (Suspended, AttemptLost)):
            return
        if error is None:
            result = work.result()
            try:
                json.dumps(result, allow_nan=False)
            except (TypeError, ValueError) as e:
                await self._final(ctx, {"type": "fail", "message": f"the result is not JSON: {e}", "retryable": False, "elapsed_ms": elapsed_ms})
                return
            await self._final(ctx, {"type": "succeed", "result": result, "elapsed_ms": elapsed_ms})
            return
        message = str(error) or type(error).__name__
        if not isinstance(error, Permanent):
            message = f"{type(error).__name__}: {message}" if str(error) else message
        await self._final(ctx, {
            "type": "fail",
            "message": message,
            "retryable": not isinstance(error, Permanent),
            "elapsed_ms": elapsed_ms,
        })

    async def _final(self, ctx: Context, report: dict[str, Any]) -> None:
        """Reports how the attempt ended, once."""
        try:
            await ctx._report(report)
        except AttemptLost:
            log.info("attempt %s of run %s ended after losing its run; its outcome is dropped", ctx.attempt, ctx.run_id)
        except (AgentqError, ValueError) as e:
            # the server refused this outcome itself (a result over the body limit, say):
            # the run fails for good, saying why, rather than waiting out its lease
            if report.get("type") == "fail" and not report.get("retryable", True):
                raise
            log.warning("run %s: its outcome was refused (%s); failing it", ctx.run_id, e)
            await self._final(ctx, {"type": "fail", "message": f"the outcome was refused: {e}", "retryable": False})

    async def _drain(self) -> None:
        """Lets running attempts finish within ``drain_timeout``; the rest are stopped and
        handed back to the queue without using up their attempt."""
        tasks = [r.task for r in self._running.values() if r.task is not None]
        if tasks:
            await asyncio.wait(tasks, timeout=self.drain_timeout)
        for running in list(self._running.values()):
            running.ctx._fire("shutdown")
        tasks = [r.task for r in self._running.values() if r.task is not None]
        if tasks:
            await asyncio.wait(tasks, timeout=STOP_GRACE * 3)
