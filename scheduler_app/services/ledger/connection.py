"""A worker process's own ledger connection for the two statements every attempt makes.

Through a pooled ``Session`` the claim and the success each cost a pre-ping, a ``BEGIN``, the
statement and a ``COMMIT`` (four round trips), and Postgres parses and plans a three-part CTE
every time. Here each is one round trip: the connection is in autocommit, so a single-statement
CTE is its own transaction; its session settings (``synchronous_commit``, ``application_name``)
are made once when it connects; and each statement is prepared once per connection.

Connected lazily, per process and thread: a pool process forked from the worker's main process
opens its own connection and never uses the parent's socket, and a thread pool's threads never
share one.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import psycopg2
import psycopg2.errors
from sqlalchemy.engine import make_url

from scheduler_app.config import Settings
from scheduler_app.db import connect_options

log = logging.getLogger(__name__)

# How the workers' ledger connections name themselves in pg_stat_activity.
WORKER_APPLICATION_NAME = "scheduler-worker"
# Postgres keeps a prepared statement's generic plan until the tables' statistics change, and a
# plan made while a table was nearly empty (a sequential scan) gets slower with every row added
# before autovacuum analyses it. Preparing again after this many executions bounds that.
REPREPARE_EVERY = 1000

# Connections a forked child inherited: kept referenced so that garbage collection never closes
# them (closing sends a Terminate on the socket the parent still uses).
_inherited: list[Any] = []


@dataclass(frozen=True)
class PreparedStatement:
    """A statement with positional parameters ($1, $2, ...) of the given Postgres types."""

    name: str
    types: tuple[str, ...]
    sql: str
    # A statement sent ahead of every execution on the same round trip (its result is dropped).
    prefix: str | None = None

    def before(self, statement: str) -> PreparedStatement:
        """This statement, with ``statement`` run first on each execution's round trip."""
        return PreparedStatement(self.name, self.types, self.sql, statement)

    @cached_property
    def prepare_sql(self) -> str:
        return f"PREPARE {self.name} ({', '.join(self.types)}) AS {self.sql}"

    @cached_property
    def execute_sql(self) -> str:
        # psycopg2 sends a list as ARRAY[...] of its elements' types (text for strings, which
        # Postgres does not coerce to uuid[] or jsonb[] on its own): arrays say their type.
        params = ", ".join(f"%s::{t}" if t.endswith("[]") else "%s" for t in self.types)
        execute = f"EXECUTE {self.name} ({params})"
        return f"{self.prefix}; {execute}" if self.prefix else execute


def connect_kwargs(database_url: str) -> dict[str, Any]:
    """psycopg2.connect keyword arguments for a SQLAlchemy database URL."""
    url = make_url(database_url)
    kwargs = url.translate_connect_args(username="user", database="dbname")
    kwargs.update(url.query)
    return kwargs


def run_prepared(
    conn: Any, uses: dict[str, int], statement: PreparedStatement, params: Sequence[Any]
) -> list[tuple]:
    """Execute ``statement`` on an autocommit DBAPI connection, preparing it where needed.

    ``uses`` is the connection's record of what it prepared (name -> executions since). The one
    recovery policy for every prepared statement of the ledger: prepared again after
    ``REPREPARE_EVERY`` uses (fresh plans as tables grow), after the session lost its
    statements (``DISCARD ALL``/``DEALLOCATE ALL``, e.g. by a pooler), and after a migration
    changed a table under it ("cached plan must not change result type"; nothing ran, the
    statement is its own transaction).
    """
    try:
        return _execute(conn, uses, statement, params)
    except psycopg2.errors.InvalidSqlStatementName:
        uses.clear()
        return _execute(conn, uses, statement, params)
    except psycopg2.errors.FeatureNotSupported:
        uses.pop(statement.name, None)
        with conn.cursor() as cur:
            cur.execute(f"DEALLOCATE {statement.name}")
        return _execute(conn, uses, statement, params)


def _execute(
    conn: Any, uses: dict[str, int], statement: PreparedStatement, params: Sequence[Any]
) -> list[tuple]:
    with conn.cursor() as cur:
        count = uses.get(statement.name)
        if count is None or count >= REPREPARE_EVERY:
            if count is not None:
                cur.execute(f"DEALLOCATE {statement.name}")
            cur.execute(statement.prepare_sql)
            count = 0
        uses[statement.name] = count + 1
        cur.execute(statement.execute_sql, params)
        return cur.fetchall() if cur.description is not None else []


class _Link(threading.local):
    """A thread's connection, the process that opened it, and its prepared statements' uses."""

    conn: Any = None
    pid: int | None = None

    def __init__(self) -> None:
        self.uses: dict[str, int] = {}


class LedgerConnection:
    """An autocommit psycopg2 connection per process and thread, with prepared statements;
    replaced when it breaks."""

    def __init__(
        self,
        database_url: str,
        *,
        application_name: str = WORKER_APPLICATION_NAME,
        synchronous_commit: bool = True,
        connect_timeout: float = Settings.db_connect_timeout,
    ) -> None:
        given = connect_kwargs(database_url)
        # Connecting to a hung server fails after connect_timeout instead of waiting forever;
        # keepalives end a link to a server that vanished. Options in the URL win.
        self.kwargs = {**connect_options(connect_timeout), **given}
        self.kwargs["application_name"] = application_name
        if not synchronous_commit:
            options = self.kwargs.get("options", "")
            self.kwargs["options"] = f"{options} -c synchronous_commit=off".strip()
        self._link = _Link()

    def execute(self, statement: PreparedStatement, params: Sequence[Any]) -> list[tuple]:
        """Run ``statement`` (preparing it on first use) in a transaction of its own; its rows.

        A connection found broken (Postgres restarted, the backend terminated, an idle link
        dropped) is replaced and the statement sent once more. Callers' statements are guarded
        transitions, so even when the first one committed before its reply was lost, the second
        changes nothing and returns no row.
        """
        try:
            return run_prepared(self._connection(), self._link.uses, statement, params)
        except (psycopg2.OperationalError, psycopg2.InterfaceError):
            conn = self._link.conn
            if conn is not None and not conn.closed:
                raise  # the statement failed, not the connection
            log.warning("ledger connection lost; reconnecting", exc_info=True)
            self._drop()
            return run_prepared(self._connection(), self._link.uses, statement, params)

    def close(self) -> None:
        """Close this thread's connection if this process opened it."""
        self._drop()

    def _connection(self) -> Any:
        link = self._link
        if link.conn is not None and link.pid != os.getpid():
            _inherited.append(link.conn)
            self._drop()
        if link.conn is None or link.conn.closed:
            self._drop()
            conn = psycopg2.connect(**self.kwargs)
            conn.autocommit = True
            link.conn, link.pid = conn, os.getpid()
        return link.conn

    def _drop(self) -> None:
        link = self._link
        if link.conn is not None and link.pid == os.getpid() and not link.conn.closed:
            with contextlib.suppress(psycopg2.Error):
                link.conn.close()
        link.conn = None
        link.pid = None
        link.uses.clear()
