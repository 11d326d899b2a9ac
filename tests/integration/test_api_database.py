"""The API's connections to PostgreSQL: lost ones are replaced without failing a request."""

from __future__ import annotations

import dataclasses
import time
import uuid

import psycopg2

from scheduler_app.db import PING_AFTER_IDLE
from tests.support import PG_ADMIN_DSN


def _terminate(application_name: str) -> int:
    conn = psycopg2.connect(PG_ADMIN_DSN)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE application_name = %s",
            (application_name,),
        )
        (count,) = cur.fetchone()
    conn.close()
    return count


def test_connections_killed_while_idle_are_replaced_before_use(settings, database, make_client):
    """A Postgres restart (or an idle-connection reaper) kills pooled connections: the next
    request after a pause still succeeds, because idle connections are pinged before use."""
    from scheduler_app.app import create_app

    name = f"api-{uuid.uuid4().hex[:8]}"
    own = dataclasses.replace(settings, database_url=f"{database.url}?application_name={name}")
    app = create_app(own)
    api = app.test_client()
    headers = make_client("submitter")
    # Several connections in the pool: concurrent checkouts are not needed, one is enough to see.
    assert api.post("/api/v1/tasks", json={"task": "demo.echo"}, headers=headers).status_code == 202
    assert _terminate(name) >= 1

    time.sleep(PING_AFTER_IDLE + 0.2)
    created = api.post("/api/v1/tasks", json={"task": "demo.echo"}, headers=headers)
    assert created.status_code == 202, created.get_json()
    assert api.get(created.headers["Location"], headers=headers).status_code == 200
    app.extensions["scheduler"].engine.dispose()


def test_submit_survives_its_prepared_statement_being_dropped(settings, make_client):
    """Submissions use a statement prepared per connection; a proxy or a DBA dropping it
    (DEALLOCATE ALL) costs a new PREPARE, not a failed request."""
    from scheduler_app.app import create_app

    app = create_app(dataclasses.replace(settings, db_pool_size=1, db_max_overflow=0))
    api = app.test_client()
    headers = make_client("submitter")
    assert api.post("/api/v1/tasks", json={"task": "demo.echo"}, headers=headers).status_code == 202
    engine = app.extensions["scheduler"].engine
    connection = engine.raw_connection()  # the pool's only connection: the one that prepared
    with connection.dbapi_connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_prepared_statements")
        assert cursor.fetchone()[0] >= 1
        cursor.execute("DEALLOCATE ALL")
    connection.commit()
    connection.close()

    created = api.post("/api/v1/tasks", json={"task": "demo.echo", "args": [2]}, headers=headers)
    assert created.status_code == 202, created.get_json()
    assert api.get(created.headers["Location"], headers=headers).get_json()["args"] == [2]
    engine.dispose()
