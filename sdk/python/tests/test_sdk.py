"""The Python SDK against a real agentq server: the worker and the client."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.request
from pathlib import Path

from agentq import AgentqError, AttemptLost, Client, Permanent, StreamFull, Suspended, Worker

from server import Server

HERE = Path(__file__).resolve().parent
UPPER_SCHEMA = {"type": "object", "required": ["text"], "properties": {"text": {"type": "string"}}}


async def eventually(probe, within: float = 10.0, what: str = "the condition"):
    """Awaits `probe()` every 20 ms until it returns something truthy."""
    deadline = time.monotonic() + within
    while True:
        found = await probe()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {within} s: {what}; last seen {found!r}")
        await asyncio.sleep(0.02)


class ServerTest(unittest.IsolatedAsyncioTestCase):
    keys: list[tuple[str, str]] = []
    #: more arguments of `agentq serve`
    args: tuple[str, ...] = ()

    def setUp(self) -> None:
        self.server = Server(*self.args, keys=self.keys)
        self.addCleanup(self.server.stop)

    async def asyncSetUp(self) -> None:
        self.client = Client(self.server.url)
        self.stops: list[tuple[asyncio.Event, asyncio.Task]] = []

    async def asyncTearDown(self) -> None:
        for stop, task in self.stops:
            stop.set()
        for stop, task in self.stops:
            await asyncio.wait_for(task, 20)
        await self.client.aclose()

    def serve(self, worker: Worker) -> None:
        stop = asyncio.Event()
        self.stops.append((stop, asyncio.create_task(worker.serve(stop))))

    async def declared(self, name: str) -> None:
        async def listed():
            agents = await self.client._http.json("GET", "/v1/agents")
            return any(a["name"] == name for a in agents["agents"])

        await eventually(listed, what=f"{name} is declared")


class WorkerTest(ServerTest):
    async def test_success_with_progress_visible_while_running(self) -> None:
        worker = Worker(self.server.url, concurrency=4)
        release = asyncio.Event()

        @worker.agent("py_upper", input_schema=UPPER_SCHEMA)
        async def py_upper(ctx, input):
            await ctx.progress(50, "half way")
            await ctx.log("working on it", level="info")
            await release.wait()
            return {
                "upper": input["text"].upper(),
                "seen": [ctx.tenant, ctx.metadata, ctx.created_by],
            }

        self.serve(worker)
        await self.declared("py_upper")
        # the declared schema is checked when the run is created
        with self.assertRaises(AgentqError) as bad:
            await self.client.create("py_upper", {"text": 1})
        self.assertEqual(bad.exception.status, 422)
        self.assertEqual(bad.exception.errors[0]["field"], "input/text")

        run = await self.client.create("py_upper", {"text": "abc"}, metadata={"user": "u1"})

        async def half_way():
            seen = await self.client.get(run["id"])
            return seen if (seen.get("progress") or {}).get("percent") == 50 else None

        seen = await eventually(half_way, what="progress 50 shows while running")
        self.assertEqual(seen["status"], "running")
        self.assertEqual(seen["progress"]["message"], "half way")
        release.set()
        done = await self.client.wait(run["id"], timeout=10)
        self.assertEqual(done["status"], "succeeded")
        # the run as the context shows it: tenant, metadata, who created it (no keys: open)
        self.assertEqual(
            done["result"], {"upper": "ABC", "seen": ["default", {"user": "u1"}, "open"]}
        )
        kinds = [e["type"] async for e in self.client.events(run["id"])]
        self.assertEqual(kinds[0], "created")
        self.assertIn("log", kinds)
        self.assertEqual(kinds[-1], "succeeded")
        listed = await self.client.list(agent="py_upper")
        self.assertEqual([r["id"] for r in listed["runs"]], [run["id"]])

    async def test_an_exception_is_retried_and_permanent_fails_for_good(self) -> None:
        worker = Worker(self.server.url)
        calls: list[int] = []

        @worker.agent("py_flaky", backoff_base_ms=10, backoff_cap_ms=20)
        async def py_flaky(ctx, input):
            calls.append(ctx.attempt)
            if ctx.attempt == 1:
                raise ConnectionError("upstream flaked")
            return {"attempt": ctx.attempt}

        @worker.agent("py_refuses", max_attempts=5)
        async def py_refuses(ctx, input):
            raise Permanent("the input cannot work")

        self.serve(worker)
        await self.declared("py_refuses")
        flaky = await self.client.create("py_flaky")
        refused = await self.client.create("py_refuses")
        done = await self.client.wait(flaky["id"], timeout=10)
        self.assertEqual(done["status"], "succeeded")
        self.assertEqual(done["result"], {"attempt": 2})
        self.assertEqual(calls, [1, 2])
        failed = await self.client.wait(refused["id"], timeout=10)
        self.assertEqual(failed["status"], "failed")
        self.assertEqual(failed["attempt"], 1)
        self.assertEqual(failed["max_attempts"], 5, "the declared default applies")
        self.assertEqual(failed["error"], {"kind": "agent_error", "message": "the input cannot work"})

    async def test_timeout_and_cancel_reach_the_handler_within_a_second(self) -> None:
        worker = Worker(self.server.url)
        fired: dict[str, tuple[str, float]] = {}
        started: dict[str, float] = {}

        @worker.agent("py_stuck")
        async def py_stuck(ctx, input):
            started[ctx.run_id] = time.monotonic()
            await ctx.cancelled.wait()
            fired[ctx.run_id] = (ctx.cancel_reason, time.monotonic())
            raise RuntimeError("stopped")

        self.serve(worker)
        await self.declared("py_stuck")
        timed = await self.client.create("py_stuck", timeout_ms=500, max_attempts=1)
        failed = await self.client.wait(timed["id"], timeout=10)
        self.assertEqual(failed["status"], "failed")
        self.assertEqual(failed["error"]["kind"], "timeout")
        reason, at = fired[timed["id"]]
        self.assertEqual(reason, "timeout")
        self.assertLess(at - started[timed["id"]], 1.5)

        cancelled = await self.client.create("py_stuck")
        await eventually(lambda: asyncio.sleep(0, cancelled["id"] in started), what="it started")
        asked = time.monotonic()
        await self.client.cancel(cancelled["id"])
        await eventually(lambda: asyncio.sleep(0, cancelled["id"] in fired), what="the cancel reached it")
        reason, at = fired[cancelled["id"]]
        self.assertEqual(reason, "cancelled")
        self.assertLess(at - asked, 1.0)
        self.assertEqual((await self.client.get(cancelled["id"]))["status"], "cancelled")

    async def test_a_wait_is_resumed_by_a_signal_with_its_checkpoint(self) -> None:
        worker = Worker(self.server.url)
        seen_checkpoints = []

        @worker.agent("py_approval")
        async def py_approval(ctx, input):
            seen_checkpoints.append(ctx.saved_checkpoint)
            if ctx.saved_checkpoint is None:
                await ctx.checkpoint({"drafted": True})
            signal = await ctx.wait_for("approve", timeout=60)
            return {"approved": signal["payload"], "drafted": ctx.saved_checkpoint["drafted"]}

        self.serve(worker)
        await self.declared("py_approval")
        run = await self.client.create("py_approval")

        async def waiting():
            seen = await self.client.get(run["id"])
            return seen if seen["status"] == "waiting" else None

        seen = await eventually(waiting, what="the run waits")
        self.assertEqual(seen["waiting_for"]["signals"], ["approve"])
        await self.client.signal(run["id"], "approve", {"by": "ann"})
        done = await self.client.wait(run["id"], timeout=10)
        self.assertEqual(done["status"], "succeeded")
        self.assertEqual(done["result"], {"approved": {"by": "ann"}, "drafted": True})
        self.assertEqual(seen_checkpoints, [None, {"drafted": True}])

    async def test_concurrency_is_respected(self) -> None:
        worker = Worker(self.server.url, concurrency=3)
        now = 0
        most = 0

        @worker.agent("py_busy")
        async def py_busy(ctx, input):
            nonlocal now, most
            now += 1
            most = max(most, now)
            await asyncio.sleep(0.2)
            now -= 1
            return input

        self.serve(worker)
        await self.declared("py_busy")
        runs = [await self.client.create("py_busy", {"i": i}) for i in range(10)]
        for run in runs:
            done = await self.client.wait(run["id"], timeout=20)
            self.assertEqual(done["status"], "succeeded")
        self.assertEqual(most, 3)

    async def test_the_worker_is_listed_with_its_language_and_agents(self) -> None:
        worker = Worker(self.server.url, concurrency=5)

        @worker.agent("py_listed")
        async def py_listed(ctx, input):
            return None

        self.serve(worker)
        await self.declared("py_listed")

        async def listed():
            workers = await self.client._http.json("GET", "/v1/workers")
            return next((w for w in workers["workers"] if w["id"] == worker.worker_id), None)

        me = await eventually(listed, what="the worker is listed")
        self.assertEqual(me["language"], "python")
        self.assertEqual(me["agents"], ["py_listed"])
        self.assertEqual(me["concurrency"], 5)
        self.assertEqual(me["state"], "alive")
        stop, task = self.stops.pop()
        stop.set()
        await asyncio.wait_for(task, 20)
        self.assertEqual((await listed())["state"], "stopped")

    async def test_a_name_agentq_holds_is_refused(self) -> None:
        worker = Worker(self.server.url)

        @worker.agent("echo")
        async def echo(ctx, input):
            return input

        with self.assertRaises(AgentqError) as taken:
            await asyncio.wait_for(worker.serve(asyncio.Event()), 10)
        self.assertEqual(taken.exception.status, 409)
        self.assertEqual(taken.exception.code, "agent_name_taken")


    async def test_an_outcome_the_server_refuses_fails_the_run_saying_why(self) -> None:
        worker = Worker(self.server.url)

        @worker.agent("py_huge", max_attempts=3)
        async def py_huge(ctx, input):
            await ctx.progress(10, "making a lot")
            return {"blob": "x" * (2 * 1024 * 1024)}  # over the server's 1 MiB body limit

        @worker.agent("py_nan")
        async def py_nan(ctx, input):
            with self.assertRaises(ValueError):
                await ctx.checkpoint({"score": float("nan")})
            return {"ok": True}

        self.serve(worker)
        await self.declared("py_nan")
        huge = await self.client.create("py_huge")
        nan = await self.client.create("py_nan")
        failed = await self.client.wait(huge["id"], timeout=15)
        self.assertEqual(failed["status"], "failed")
        self.assertEqual(failed["attempt"], 1, "failed for good, not retried")
        self.assertIn("refused", failed["error"]["message"])
        done = await self.client.wait(nan["id"], timeout=15)
        self.assertEqual(done["result"], {"ok": True})


class StreamTest(ServerTest):
    args = ("--max-stream-bytes", "100")

    async def test_streamed_parts_land_in_order_and_a_full_stream_is_refused(self) -> None:
        worker = Worker(self.server.url)
        refused: list[str] = []

        @worker.agent("py_stream")
        async def py_stream(ctx, input):
            for word in ["Hello", " ", "brave", " ", "world"]:
                await ctx.stream(word)
            # sent together: one request, joined by the server where adjacent
            await asyncio.gather(ctx.stream("!"), ctx.stream("!"))
            await ctx.stream_part(
                {"type": "tool_call", "tool_call_id": "c1", "tool_name": "look", "input": {"q": 1}}
            )
            try:
                await ctx.stream("x" * 100)
            except StreamFull as e:
                refused.append(str(e))
            return {"ok": True}

        self.serve(worker)
        await self.declared("py_stream")
        run = await self.client.create("py_stream")
        done = await self.client.wait(run["id"], timeout=10)
        self.assertEqual(done["status"], "succeeded", done)
        parts = [e["data"] async for e in self.client.events(run["id"]) if e["type"] == "stream"]
        text = "".join(p["text"] for p in parts if p["type"] == "text")
        self.assertEqual(text, "Hello brave world!!")
        self.assertEqual(parts[-1]["type"], "tool_call")
        self.assertEqual(parts[-1]["input"], {"q": 1})
        self.assertEqual(len(refused), 1)
        self.assertIn("100 bytes", refused[0])


class StreamCapTest(ServerTest):
    args = ("--max-streams", "1")

    async def test_events_waits_while_the_server_serves_as_many_streams_as_it_may(self) -> None:
        # the one stream the server may serve: a run waiting for a signal
        waiting = await self.client.create("echo", {"value": "a", "wait_for": ["go"]})

        async def kinds(run_id: str) -> list[str]:
            return [e["type"] async for e in self.client.events(run_id)]

        first = asyncio.create_task(kinds(waiting["id"]))
        done = await self.client.create("echo", {"value": "b"})
        await self.client.wait(done["id"])
        # refused (503 too_many_streams) until the first stream ends
        second = asyncio.create_task(kinds(done["id"]))
        await asyncio.sleep(1.0)
        self.assertFalse(second.done())
        await self.client.signal(waiting["id"], "go")
        self.assertEqual((await asyncio.wait_for(first, 20))[-1], "succeeded")
        followed = await asyncio.wait_for(second, 20)
        self.assertEqual(followed[0], "created")
        self.assertEqual(followed[-1], "succeeded")


class TimeTest(unittest.TestCase):
    def test_server_times_parse_on_every_python(self) -> None:
        from agentq.worker import _parse_time

        t = _parse_time("2026-12-05T10:38:47.299123456Z")
        self.assertEqual((t.microsecond, t.utcoffset().total_seconds()), (299123, 0))
        self.assertEqual(_parse_time("2026-12-05T10:38:47Z").second, 47)
        self.assertEqual(_parse_time("2026-12-05T10:38:47.5+01:00").microsecond, 500000)


class KeyTest(ServerTest):
    keys = [("acme", "worker"), ("acme", "runs:read,runs:write")]

    async def test_a_worker_key_serves_and_can_do_nothing_else(self) -> None:
        worker_key, client_key = self.server.keys
        worker = Worker(self.server.url, api_key=worker_key)

        @worker.agent("py_keyed")
        async def py_keyed(ctx, input):
            return {"tenant": ctx.tenant}

        self.serve(worker)
        client = Client(self.server.url, api_key=client_key)
        self.addAsyncCleanup(client.aclose)

        async def created():
            try:
                return await client.create("py_keyed")
            except AgentqError as e:
                if e.code == "validation_failed":
                    return None  # not declared yet
                raise

        run = await eventually(created, what="the agent is declared")
        done = await client.wait(run["id"], timeout=10)
        self.assertEqual(done["result"], {"tenant": "acme"})
        as_worker = Client(self.server.url, api_key=worker_key)
        self.addAsyncCleanup(as_worker.aclose)
        for call in (as_worker.create("py_keyed"), as_worker.get(run["id"]), as_worker.list()):
            with self.assertRaises(AgentqError) as refused:
                await call
            self.assertEqual(refused.exception.status, 403)


class ProcessTest(ServerTest):
    def start_worker(self, seconds: float, token_file: str | None = None) -> subprocess.Popen:
        args = [sys.executable, str(HERE / "worker_app.py"), self.server.url, str(seconds)]
        if token_file:
            args.append(token_file)
        process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

        def reap() -> None:
            if process.poll() is None:
                process.kill()
                process.wait()
            process.stdout.close()

        self.addCleanup(reap)
        self.assertEqual(process.stdout.readline().strip(), "ready")
        return process

    async def test_sigterm_drains_the_running_attempt(self) -> None:
        process = self.start_worker(1.0)
        await self.declared("py_slow")
        run = await self.client.create("py_slow")

        async def running():
            return (await self.client.get(run["id"]))["status"] == "running"

        await eventually(running, what="the run is running")
        process.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(process.wait, 20)
        self.assertEqual(code, 0, process.stdout.read())
        done = await self.client.get(run["id"])
        self.assertEqual(done["status"], "succeeded", "it finished during the drain")
        self.assertEqual(done["attempt"], 1)

    async def test_kill_9_mid_run_is_retried_after_the_lease_and_the_stale_attempt_is_refused(self) -> None:
        token_file = os.path.join(tempfile.mkdtemp(), "token")
        doomed = self.start_worker(60.0, token_file)
        await self.declared("py_slow")
        run = await self.client.create("py_slow")

        async def token():
            return os.path.exists(token_file) and Path(token_file).read_text()

        stale = await eventually(token, what="the first attempt started")
        doomed.kill()
        await asyncio.to_thread(doomed.wait, 10)
        killed_at = time.monotonic()
        survivor = Worker(self.server.url)

        @survivor.agent("py_slow")
        async def py_slow(ctx, input):
            return {"attempt": ctx.attempt}

        self.serve(survivor)
        done = await self.client.wait(run["id"], timeout=20)
        self.assertEqual(done["status"], "succeeded")
        self.assertEqual(done["result"], {"attempt": 2})
        self.assertGreater(time.monotonic() - killed_at, 1.0, "retried only after the lease")
        events = [e async for e in self.client.events(run["id"])]
        kinds = [(e["type"], e["attempt"]) for e in events]
        lost = kinds.index(("attempt_lost", 1))
        second = kinds.index(("started", 2))
        self.assertLess(lost, second, f"no two attempts overlap: {kinds}")
        # the killed attempt's late write is refused
        stale_worker = Path(token_file).read_text()
        answer = await self.client._http.json(
            "POST",
            f"/v1/workers/{await self.worker_of(events)}/reports",
            json={"reports": [{"attempt_token": stale_worker, "type": "succeed", "result": "stale"}]},
        )
        self.assertEqual(answer["results"][0]["code"], "attempt_lost")
        self.assertEqual((await self.client.get(run["id"]))["result"], {"attempt": 2})

    async def worker_of(self, events) -> str:
        """The worker id of the first attempt, from its `started` event."""
        started = next(e for e in events if e["type"] == "started" and e["attempt"] == 1)
        return started["data"]["worker_id"]


if __name__ == "__main__":
    unittest.main()
