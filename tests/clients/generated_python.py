"""A client generated from openapi/openapi.json by openapi-python-client, against the real
server: runs are created and listed with a metadata filter through it, so the filter's
documented form is one a generated client sends right (it once sent `?customer=globex`,
which filtered nothing). Run by scripts/sdk-test.sh with the generated package
(`agentq_api`) and sdk/python/tests (for `server.Server`) on PYTHONPATH."""

from __future__ import annotations

import sys
import time
import unittest
import uuid

from agentq_api import Client
from agentq_api.api.runs import count_runs, create_run, get_run, list_run_events, list_runs
from agentq_api.models import CreateRunRequest, Problem, RunList
from server import Server


class GeneratedClient(unittest.TestCase):
    server: Server

    @classmethod
    def setUpClass(cls) -> None:
        cls.server = Server()

    @classmethod
    def tearDownClass(cls) -> None:
        cls.server.stop()

    def test_the_metadata_filter_round_trips(self) -> None:
        client = Client(base_url=self.server.url, raise_on_unexpected_status=True)
        made = {}
        suite = uuid.uuid4().hex  # this test's runs, whatever else the server holds
        for customer, team in [("globex", "a"), ("globex", "b"), ("initech", "a")]:
            body = CreateRunRequest.from_dict(
                {"agent": "echo", "input": {"value": 1}, "metadata": {"customer": customer, "team": team, "suite": suite}}
            )
            created = create_run.sync_detailed(client=client, body=body)
            self.assertEqual(created.status_code, 202, created.content)
            made[(customer, team)] = created.parsed.id

        def listed(*metadata: str) -> list[str]:
            page = list_runs.sync(client=client, metadata=[f"suite={suite}", *metadata], limit=100)
            self.assertIsInstance(page, RunList, page)
            return sorted(run.id for run in page.runs)

        self.assertEqual(listed("customer=globex"), sorted([made[("globex", "a")], made[("globex", "b")]]))
        self.assertEqual(listed("customer=globex", "team=b"), [made[("globex", "b")]])
        self.assertEqual(listed("customer=umbrella"), [])
        self.assertEqual(len(listed()), 3)
        counts = count_runs.sync(client=client, metadata=[f"suite={suite}", "team=a"])
        self.assertEqual(counts.total, 2)
        # a malformed entry is refused with the field named, not ignored
        refused = list_runs.sync(client=client, metadata=["no-equals-sign"])
        self.assertIsInstance(refused, Problem)
        self.assertEqual(refused.errors[0].field, "metadata")

    def test_a_run_and_its_events_parse(self) -> None:
        client = Client(base_url=self.server.url, raise_on_unexpected_status=True)
        body = CreateRunRequest.from_dict({"agent": "echo", "input": {"value": 2, "steps": 2}})
        run_id = create_run.sync(client=client, body=body).id
        deadline = time.monotonic() + 20
        while True:
            run = get_run.sync(client=client, id=run_id)
            if run.status.value == "succeeded" or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        self.assertEqual(run.status.value, "succeeded")
        events = list_run_events.sync(client=client, id=run_id)
        types = [e.type_.value if hasattr(e.type_, "value") else e.type_ for e in events.events]
        self.assertEqual(types[0], "created")
        self.assertEqual(types[-1], "succeeded")
        self.assertIn("progress", types)


if __name__ == "__main__":
    sys.exit(unittest.main(verbosity=2))
