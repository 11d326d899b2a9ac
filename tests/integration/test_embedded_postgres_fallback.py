"""`make test` without a PostgreSQL on 127.0.0.1:5432 uses an embedded server of its own.

Negative control: ``SCHEDULER_TEST_NO_EMBEDDED_PG=1 pytest
tests/integration/test_embedded_postgres_fallback.py`` turns the fallback off: the first test
then fails ("no PostgreSQL listens on ...").
"""

from __future__ import annotations

import os
import socket

import psycopg2
from sqlalchemy import create_engine, text

from tests import support


def _params(dsn: str) -> dict[str, str]:
    return dict(item.split("=", 1) for item in dsn.split())


def _environ() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "SCHEDULER_TEST_PG_DSN"}


def test_without_postgres_on_the_port_an_embedded_server_is_started_and_used():
    port = support.free_port()  # nothing listens there
    dsn = support.detect_admin_dsn(port=port, environ=_environ())
    params = _params(dsn)
    assert int(params["port"]) != port
    conn = psycopg2.connect(dsn)
    try:
        with conn.cursor() as cur:
            cur.execute("SHOW data_directory")
            data_directory = cur.fetchone()[0]
    finally:
        conn.close()
    assert data_directory.startswith(str(support.EMBEDDED_PG_BASE.resolve())), data_directory

    # The tests' own database on it: created, migrated, usable by URL (as workers use it).
    db = support.TestDatabase(prefix="sched_test_embedded", dsn=dsn)
    db.create()
    try:
        engine = create_engine(db.url)
        with engine.connect() as connection:
            assert connection.execute(text("SELECT count(*) FROM tasks")).scalar() == 0
        engine.dispose()
    finally:
        db.drop()
    # Session-wide: asking again finds the same server, no second one.
    assert support.detect_admin_dsn(port=port, environ=_environ()) == dsn


def test_a_server_listening_on_the_port_is_used_as_it_is():
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        dsn = support.detect_admin_dsn(port=port, environ=_environ())
    assert _params(dsn) == {
        "host": "127.0.0.1",
        "port": str(port),
        "user": "postgres",
        "dbname": "postgres",
    }
