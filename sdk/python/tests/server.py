"""A real agentq server for the SDK's tests: the binary at $AGENTQ_BIN (default: the
repository's target/debug/agentq), on a free port, with a fresh database: a SQLite file, or
with AGENTQ_SDK_DB=postgres a database of its own in the PostgreSQL at DATABASE_URL (made
and dropped with $AGENTQ_PG_BIN/psql); with AGENTQ_SDK_DELIVERY=redis it delivers through
the Redis at REDIS_URL, under a key namespace of its own."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]


def binary() -> str:
    path = os.environ.get("AGENTQ_BIN") or str(REPO / "target" / "debug" / "agentq")
    if not os.access(path, os.X_OK):
        raise RuntimeError(f"no agentq binary at {path}: run `cargo build` (or set AGENTQ_BIN)")
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """``agentq serve`` with a short lease (2 s) so lost attempts come back quickly."""

    def __init__(self, *extra: str, keys: list[tuple[str, str]] = ()) -> None:
        self.dir = tempfile.mkdtemp(prefix="agentq-sdk-")
        self.db = f"sqlite://{self.dir}/agentq.db"
        self.pg_database = None
        if os.environ.get("AGENTQ_SDK_DB") == "postgres":
            self.pg_database = f"agentq_sdk_{uuid.uuid4().hex[:16]}"
            self.psql(f"CREATE DATABASE {self.pg_database}")
            admin = urllib.parse.urlsplit(os.environ["DATABASE_URL"])
            self.db = urllib.parse.urlunsplit(admin._replace(path=f"/{self.pg_database}"))
        if os.environ.get("AGENTQ_SDK_DELIVERY") == "redis":
            namespace = f"agentq-test-sdk-{uuid.uuid4().hex[:12]}"
            extra = (*extra, "--queue-url", os.environ["REDIS_URL"], "--queue-namespace", namespace)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.keys = [self.create_key(tenant, scopes) for tenant, scopes in keys]
        self.log = open(os.path.join(self.dir, "server.log"), "wb")
        env = dict(os.environ, RUST_LOG=os.environ.get("AGENTQ_SDK_LOG", "warn"))
        self.process = subprocess.Popen(
            [binary(), "serve", "--listen", f"127.0.0.1:{self.port}", "--database-url", self.db,
             "--lease", "2s", "--poll-interval", "50ms", *extra],
            stdout=self.log, stderr=subprocess.STDOUT, env=env,
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"{self.url}/healthz", timeout=1) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"agentq did not start: {self.output()}")
            time.sleep(0.05)

    def psql(self, sql: str) -> None:
        psql = os.path.join(os.environ.get("AGENTQ_PG_BIN", ""), "psql") if os.environ.get("AGENTQ_PG_BIN") else "psql"
        subprocess.run([psql, os.environ["DATABASE_URL"], "-v", "ON_ERROR_STOP=1", "-qAtc", sql],
                       check=True, capture_output=True)

    def create_key(self, tenant: str, scopes: str) -> str:
        out = subprocess.run(
            [binary(), "keys", "--database-url", self.db, "create", "--tenant", tenant, "--scopes", scopes],
            check=True, capture_output=True, text=True,
        ).stdout
        return next(w for w in out.split() if w.startswith("aq_"))

    def output(self) -> str:
        self.log.flush()
        return Path(self.dir, "server.log").read_text(errors="replace")[-4000:]

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)
        if self.pg_database:
            self.psql(f"DROP DATABASE IF EXISTS {self.pg_database} WITH (FORCE)")
