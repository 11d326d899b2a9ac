"""A real worker's ledger connections: one per pool process, replaced when Postgres drops them."""

from __future__ import annotations

import psycopg2
import pytest

from scheduler_app.services.ledger.connection import WORKER_APPLICATION_NAME
from tests.e2e.test_failures import Client
from tests.support import PG_ADMIN_DSN

pytestmark = pytest.mark.e2e


def _ledger_backends(database: str, terminate: bool = False) -> int:
    """The workers' ledger connections to ``database`` (terminated first with ``terminate``)."""
    admin = psycopg2.connect(PG_ADMIN_DSN)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(
            f"SELECT count({'pg_terminate_backend(pid)' if terminate else '*'}) "
            "FROM pg_stat_activity WHERE datname = %s AND application_name = %s",
            (database, WORKER_APPLICATION_NAME),
        )
        (count,) = cur.fetchone()
    admin.close()
    return count


def test_tasks_succeed_after_postgres_terminates_the_workers_ledger_connections(stack):
    client = Client(stack)
    worker = stack.worker("default", 2)
    first = client.batch([{"task": "demo.echo", "args": [i]} for i in range(6)])
    for task in first:
        assert client.wait(task["id"], timeout=20)["status"] == "succeeded"
    assert 1 <= _ledger_backends(stack.db.name) <= 2  # one per pool process that ran a task
    assert _ledger_backends(stack.db.name, terminate=True) >= 1

    after = client.batch([{"task": "demo.echo", "args": [i]} for i in range(20)])
    for task in after:
        done = client.wait(task["id"], timeout=20)
        assert done["status"] == "succeeded" and done["attempts"] == 1
    assert "ledger connection lost; reconnecting" in worker.log()
    assert 1 <= _ledger_backends(stack.db.name) <= 2
