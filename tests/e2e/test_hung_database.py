"""A hung PostgreSQL (it accepts and acknowledges but never answers) and a PostgreSQL that drops
every connection: the API answers 503 in bounded time, workers and the scheduler ride it out,
everything recovers by itself, and no task is lost or finished twice.

The machine's PostgreSQL is never stopped: the stack reaches it through a TCP proxy of the test's
own that can freeze (stop forwarding bytes, keep every socket open). Connections are killed only
in the test's own database.
"""

from __future__ import annotations

import contextlib
import select
import socket
import threading
import time
from collections.abc import Iterator

import psycopg2
import pytest
import requests
from sqlalchemy import text

from scheduler_app.db import PING_AFTER_IDLE
from tests.api_server import CONTROL, ApiServer
from tests.e2e.test_failures import Client
from tests.support import PG_ADMIN_DSN, Stack, wait_until

pytestmark = pytest.mark.e2e

PG = ("127.0.0.1", 5432)
# Short API bounds so the test's freeze stays short; production defaults are 15 s and 5 s.
STATEMENT_TIMEOUT = 3.0
POOL_TIMEOUT = 2.0


class FreezableProxy:
    """A threaded TCP proxy to PostgreSQL on a loopback port. Frozen, it forwards nothing but
    keeps every connection open and accepts new ones: what a hung server looks like."""

    def __init__(self, upstream: tuple[str, int] = PG) -> None:
        self.upstream = upstream
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.2)
        self.port = self.listener.getsockname()[1]
        self.thawed = threading.Event()
        self.thawed.set()
        self.stopping = threading.Event()
        self.sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def freeze(self) -> None:
        self.thawed.clear()

    def thaw(self) -> None:
        self.thawed.set()

    def close(self) -> None:
        self.stopping.set()
        self.thawed.set()
        self.listener.close()
        with self._lock:
            for sock in self.sockets:
                sock.close()

    def _accept(self) -> None:
        while not self.stopping.is_set():
            try:
                client, _ = self.listener.accept()
            except (TimeoutError, OSError):
                continue
            try:
                server = socket.create_connection(self.upstream, timeout=5)
            except OSError:
                client.close()
                continue
            with self._lock:
                self.sockets += [client, server]
            for src, dst in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while not self.stopping.is_set():
                if not self.thawed.wait(0.1):
                    continue  # frozen: read nothing, so nothing moves
                readable, _, _ = select.select([src], [], [], 0.1)
                if not readable:
                    continue
                self.thawed.wait()
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except (OSError, ValueError):  # ValueError: select() on a socket closed meanwhile
            pass
        finally:
            for sock in (src, dst):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)


@pytest.fixture
def proxied(tmp_path, logdir) -> Iterator[tuple[Stack, FreezableProxy, ApiServer, Client]]:
    """A stack whose API (real gunicorn), worker and scheduler reach PostgreSQL through the
    proxy; the test's own client works on the database directly."""
    stack = Stack(
        tmp_path, logdir, db_statement_timeout=STATEMENT_TIMEOUT, db_pool_timeout=POOL_TIMEOUT
    )
    proxy = FreezableProxy()
    stack.env["SCHEDULER_DATABASE_URL"] = stack.db.url.replace(
        f"{PG[0]}:{PG[1]}/", f"127.0.0.1:{proxy.port}/"
    )
    if CONTROL == "no-recovery":  # the worker does not reconnect, and no reconciler runs
        stack.env["SCHEDULER_TASK_MODULES"] += ",tests.e2e.recovery_control"
    api = None
    try:
        stack.worker("default", 2)
        if CONTROL != "no-recovery":
            stack.scheduler()
        api = ApiServer(stack.env, logdir, workers=1).start()
        yield stack, proxy, api, Client(stack)
    finally:
        proxy.thaw()
        if api is not None:
            api.stop()
        proxy.close()
        stack.close()


def _succeeded_once(stack: Stack, ids: list[str]) -> dict[str, tuple[str, int]]:
    """Per task: its status and how many 'succeeded' events its timeline has."""
    with stack.ext.engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT t.id::text, t.status,"
                " (SELECT count(*) FROM task_events e"
                "  WHERE e.task_id = t.id AND e.status = 'succeeded')"
                " FROM tasks t WHERE t.id = ANY(CAST(:ids AS uuid[]))"
            ),
            {"ids": ids},
        ).all()
    return {task_id: (status, events) for task_id, status, events in rows}


def test_hung_database_gives_bounded_503s_and_loses_nothing(proxied):
    """While PostgreSQL hangs: /readyz is 503 within 2.5 s, a submission 503 within its bounds,
    /healthz still answers; worker and scheduler keep running. Thawed, every task submitted
    before succeeds exactly once and the API accepts work again, with nothing restarted.

    Negative control: ``SCHEDULER_TEST_CONTROL=unbounded-db-waits`` (psycopg2 cooperative under
    gevent but unbounded, as psycogreen alone makes it): /readyz waits for the whole freeze.
    """
    stack, proxy, api, client = proxied
    http = requests.Session()
    http.headers.update(client.headers)
    submitted = http.post(
        f"{api.url}/api/v1/tasks/batch",
        json={"tasks": [{"task": "demo.sleep", "kwargs": {"seconds": 0.2}} for _ in range(20)]},
        timeout=30,
    )
    assert submitted.status_code == 202, submitted.text
    ids = [task["id"] for task in submitted.json()["items"]]
    time.sleep(0.5)  # some run, some wait in the queue
    proxy.freeze()
    try:
        started = time.monotonic()
        ready = http.get(f"{api.url}/readyz", timeout=30)
        readyz_took = time.monotonic() - started
        assert ready.status_code == 503, ready.text
        assert ready.json()["errors"]["postgres"].startswith("down")

        started = time.monotonic()
        refused = http.post(f"{api.url}/api/v1/tasks", json={"task": "demo.echo"}, timeout=60)
        submit_took = time.monotonic() - started
        assert refused.status_code == 503, refused.text
        assert refused.headers["Content-Type"] == "application/problem+json"
        assert refused.headers["Retry-After"]

        assert http.get(f"{api.url}/healthz", timeout=1).status_code == 200
        for proc in stack.processes:
            assert proc.process.poll() is None, f"{proc.name} exited:\n{proc.log()[-3000:]}"
    finally:
        proxy.thaw()
    assert readyz_took <= 2.5, readyz_took
    # Pool checkout, then connecting or a statement, each bounded: never the whole freeze.
    assert submit_took <= POOL_TIMEOUT + STATEMENT_TIMEOUT + 1 + 3 + 2, submit_took

    def ready_again() -> bool:
        return http.get(f"{api.url}/readyz", timeout=5).status_code == 200

    wait_until(ready_again, 20, 0.5, message="/readyz to recover")
    after = http.post(f"{api.url}/api/v1/tasks", json={"task": "demo.echo"}, timeout=30)
    assert after.status_code == 202, after.text
    ids.append(after.json()["id"])
    client.wait_all(ids, timeout=60)
    outcome = _succeeded_once(stack, ids)
    assert outcome == {task_id: ("succeeded", 1) for task_id in ids}
    for proc in stack.processes:
        assert proc.process.poll() is None, f"{proc.name} exited:\n{proc.log()[-3000:]}"


def _terminate_all(database: str) -> int:
    """Terminate every backend connected to ``database`` (the test's own), but this one."""
    admin = psycopg2.connect(PG_ADMIN_DSN)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE datname = %s AND pid <> pg_backend_pid()",
            (database,),
        )
        (count,) = cur.fetchone()
    admin.close()
    return count


def test_killing_every_database_connection_four_times_loses_no_task(proxied):
    """200 tasks drain while every connection to the test's database is terminated four times
    (API, worker and scheduler alike); each task succeeds exactly once, and the API still
    accepts work afterwards.

    Negative control: ``SCHEDULER_TEST_CONTROL=no-recovery`` (the worker's ledger connection
    does not replace a terminated connection, tests/e2e/recovery_control.py, and no scheduler
    re-publishes what that left behind): tasks stay queued and the wait times out (without the
    scheduler alone it still passes: the reconnect suffices). ``_terminate_all`` asserts that
    it ended backends each time, so the test cannot pass without having killed anything.
    """
    stack, _proxy, api, client = proxied
    http = requests.Session()
    http.headers.update(client.headers)
    ids: list[str] = []
    for _ in range(4):
        batch = [{"task": "demo.sleep", "kwargs": {"seconds": 0.02}} for _ in range(50)]
        response = http.post(f"{api.url}/api/v1/tasks/batch", json={"tasks": batch}, timeout=30)
        assert response.status_code == 202, response.text
        ids += [task["id"] for task in response.json()["items"]]
    for _ in range(4):
        assert _terminate_all(stack.db.name) > 0
        time.sleep(0.5)
    time.sleep(PING_AFTER_IDLE)  # idle pooled connections are then checked before use
    after = http.post(f"{api.url}/api/v1/tasks", json={"task": "demo.echo"}, timeout=30)
    assert after.status_code == 202, after.text
    ids.append(after.json()["id"])
    client.wait_all(ids, timeout=120)
    outcome = _succeeded_once(stack, ids)
    assert len(ids) == len(set(ids)) == 201
    assert outcome == {task_id: ("succeeded", 1) for task_id in ids}
