"""The services a bench run starts for itself: a database, a redis-server, child processes."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import psutil
import psycopg2

# One implementation of the private services, shared with the test suite.
from tests.support import (  # noqa: F401
    Process,
    RedisServer,
    TestDatabase,
    free_port,
    redis_server_binary,
)

PG_ADMIN_DSN = os.environ.get(
    "BENCH_PG_DSN", "host=127.0.0.1 port=5432 user=postgres dbname=postgres"
)


def cpu_seconds(process: psutil.Process) -> float:
    """CPU time (user + system) of one process so far; 0 if it is gone."""
    try:
        times = process.cpu_times()
    except psutil.NoSuchProcess:
        return 0.0
    return times.user + times.system


def postgres_cpu_seconds() -> float:
    """CPU time so far of every PostgreSQL process of the machine (backends and background
    writers: the bench's database shares them with whatever else runs)."""
    return sum(
        cpu_seconds(p)
        for p in psutil.process_iter(["name"])
        if "postgres" in (p.info["name"] or "")
    )


class BenchError(Exception):
    """A bench run could not set up or measure what it needed."""


def wait_until(
    predicate: Callable[[], object], timeout: float, interval: float = 0.02, what: str = "it"
) -> object:
    """Poll ``predicate`` until it returns something truthy; raise BenchError after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise BenchError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


class Database(TestDatabase):
    """A database of the run's own on the machine's PostgreSQL, migrated with Alembic."""

    def __init__(self) -> None:
        super().__init__(prefix="sched_bench", dsn=PG_ADMIN_DSN)

    def create(self) -> None:
        """Create and migrate the database; raises BenchError when PostgreSQL is not there."""
        try:
            super().create()
        except psycopg2.OperationalError as exc:
            raise BenchError(f"no PostgreSQL at {PG_ADMIN_DSN!r}: {exc}") from exc


class Child(Process):
    """A child process (API, worker, scheduler) in a session of its own, its output in a log of
    its own: the test suite's ``Process``, plus what the bench measures and how it stops."""

    def __init__(
        self, name: str, argv: Sequence[str], env: Mapping[str, str], logdir: Path
    ) -> None:
        super().__init__(name, list(argv), dict(env), logdir)
        self.node = ""  # a Celery worker's node name, for remote control

    @property
    def pid(self) -> int:
        """Process id (the process group's too)."""
        assert self.process is not None
        return self.process.pid

    def wait_for_log(self, text: str, timeout: float = 60) -> None:
        """Wait until the log shows ``text``; raises BenchError if the process exits first."""
        try:
            super().wait_for_log(text, timeout)
        except AssertionError as exc:
            raise BenchError(str(exc)) from exc

    def rss_bytes(self) -> int:
        """Resident memory of the process and all its children (a worker and its pool)."""
        try:
            root = psutil.Process(self.pid)
            total = root.memory_info().rss
            for child in root.children(recursive=True):
                try:
                    total += child.memory_info().rss
                except psutil.NoSuchProcess:
                    continue
            return total
        except psutil.NoSuchProcess:
            return 0

    def cpu_seconds(self) -> float:
        """CPU time (user + system) used so far by the process and its children."""
        try:
            root = psutil.Process(self.pid)
            return sum(cpu_seconds(p) for p in (root, *root.children(recursive=True)))
        except psutil.NoSuchProcess:
            return 0.0

    def stop(self, timeout: float = 15) -> None:
        """SIGTERM the process group, SIGKILL it after ``timeout``."""
        self.terminate()
        self.reap(timeout)

    def kill(self) -> None:
        """SIGKILL the process group at once (a worker holding messages it must not restore)."""
        if self.process is not None:
            self._signal(signal.SIGKILL)
            self.reap(10)

    def terminate(self) -> None:
        """Ask the process group to stop (see :meth:`reap`)."""
        if self.process is not None and self.process.poll() is None:
            self._signal(signal.SIGTERM)

    def reap(self, timeout: float = 15) -> None:
        """Wait for a terminated process; SIGKILL its group after ``timeout``."""
        if self.process is None:
            return
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self._signal(signal.SIGKILL)
            self.process.wait(10)
        # Pool children left behind by a killed parent belong to the same group.
        self._signal(signal.SIGKILL)
        self._log.close()
        self.process = None

    def _signal(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, sig)
