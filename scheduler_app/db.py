"""Engine and sessions, and the bounds on every wait for PostgreSQL. Nothing connects at import
time.

A PostgreSQL that hangs (its processes stopped, a partition, a stuck failover) accepts TCP
connections and acknowledges bytes but never answers, and libpq would wait for it forever. The
API must answer 503 instead, so every wait of its connections is bounded: connecting by
``db_connect_timeout``, a statement by ``db_statement_timeout`` (the server enforces it too,
while it still runs), a pool checkout by ``db_pool_timeout``, and what runs inside
:func:`deadline` by that block's budget. TCP keepalives end connections to a peer that vanished.
"""

from __future__ import annotations

import contextlib
import math
import select
import sys
import time
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from typing import Any

import psycopg2
import psycopg2.extensions
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.orm import Session, sessionmaker

from scheduler_app.config import Settings

# A connection idle longer than this is pinged before use; one in steady use is not (a ping is a
# round trip per checkout, a quarter of a single submit's). A connection that breaks in use is
# reported as a disconnect, and the pool then replaces every connection older than the break.
PING_AFTER_IDLE = 1.0
# A statement's client-side bound is the server's statement_timeout plus this: a live server
# cancels the statement first and says so; only a hung one reaches the client's bound.
STATEMENT_GRACE = 1.0
# A peer silent this long (idle, then unanswered probes; or sent data unacknowledged) is gone.
KEEPALIVE = {"keepalives": 1, "keepalives_idle": 10, "keepalives_interval": 3}
KEEPALIVE_COUNT = 3
TCP_USER_TIMEOUT_MS = 20_000

_deadline: ContextVar[float | None] = ContextVar("database_deadline", default=None)
_CONNECTED = frozenset(
    {
        psycopg2.extensions.STATUS_READY,
        psycopg2.extensions.STATUS_BEGIN,
        psycopg2.extensions.STATUS_PREPARED,
    }
)


def connect_options(connect_timeout: float) -> dict[str, Any]:
    """libpq options that bound connecting and detect a vanished server (keepalives)."""
    return {
        # libpq counts whole seconds and treats anything below 2 as 2.
        "connect_timeout": max(2, math.ceil(connect_timeout)),
        **KEEPALIVE,
        "keepalives_count": KEEPALIVE_COUNT,
        "tcp_user_timeout": TCP_USER_TIMEOUT_MS,
    }


def make_engine(
    settings: Settings, *, statement_timeout: float | None = None, **kwargs: Any
) -> Engine:
    """A pooled engine for the ledger that survives a Postgres restart.

    Its connections time out connecting and keep their TCP link alive; ``statement_timeout``
    (seconds) also has the server cancel longer statements. Options in the URL's query win.
    """
    url = make_url(settings.database_url)
    connect_args = {
        key: value
        for key, value in connect_options(settings.db_connect_timeout).items()
        if key not in url.query
    }
    given = dict(kwargs.pop("connect_args", {}))
    server_options = [given.pop("options", "")]
    if statement_timeout:
        server_options.append(f"-c statement_timeout={int(statement_timeout * 1000)}")
    connect_args.update(given)
    if any(server_options):
        connect_args["options"] = " ".join(filter(None, server_options))
    options = {
        "pool_size": settings.db_pool_size,
        "max_overflow": settings.db_max_overflow,
        "pool_timeout": settings.db_pool_timeout,
        "pool_pre_ping": False,
        "pool_recycle": 1800,
        "connect_args": connect_args,
    }
    options.update(kwargs)
    engine = create_engine(url, **options)
    if not options["pool_pre_ping"]:
        _ping_after_idle(engine, PING_AFTER_IDLE, settings.db_connect_timeout)
    return engine


def _ping_after_idle(engine: Engine, idle: float, budget: float) -> None:
    dialect = engine.dialect

    @event.listens_for(engine, "checkin")
    def _checked_in(_dbapi_connection: Any, record: Any) -> None:
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _checked_out(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        since = record.info.get("idle_since")
        if since is None or time.monotonic() - since < idle:
            return
        try:
            with deadline(budget):  # a SELECT 1 needs no statement's budget
                dialect.do_ping(dbapi_connection)
        except dialect.loaded_dbapi.Error as exc:
            if dialect.is_disconnect(exc, dbapi_connection, None):
                raise DisconnectionError("idle connection is gone") from exc  # pool reconnects
            raise


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(bind=engine, expire_on_commit=False, autoflush=False)


def probe_database(engine: Engine, settings: Settings, timeout: float) -> None:
    """Connect afresh to ``engine``'s database and run ``SELECT 1``, all within ``timeout``
    seconds; raises when it cannot.

    A connection of its own, not the pool's: when requests stuck on a hung database hold every
    pooled connection, the probe must not queue behind them for ``db_pool_timeout``.
    """
    cargs, cparams = engine.dialect.create_connect_args(engine.url)
    options = connect_options(min(timeout, settings.db_connect_timeout))
    cparams = {**options, **cparams, "application_name": "scheduler-readyz"}
    with deadline(timeout):
        conn = engine.dialect.loaded_dbapi.connect(*cargs, **cparams)
        try:
            with conn.cursor() as cursor:
                cursor.execute("SELECT 1")
        finally:
            conn.close()


@contextlib.contextmanager
def deadline(seconds: float) -> Iterator[None]:
    """Every database wait inside the block ends within ``seconds`` from now, or raises
    ``psycopg2.OperationalError`` (once :func:`bound_waits` is installed)."""
    at = time.monotonic() + seconds
    outer = _deadline.get()
    token = _deadline.set(at if outer is None else min(at, outer))
    try:
        yield
    finally:
        _deadline.reset(token)


def bound_waits(connect_timeout: float, statement_timeout: float | None) -> None:
    """Make every psycopg2 wait of this process bounded, and cooperative under gevent.

    Process-wide (psycopg2 has one wait callback): psycopg2 then drives each connection
    asynchronously and calls back here whenever it would block. A wait past its bound raises
    ``psycopg2.OperationalError``; psycopg2 closes that connection, and the pool reports it as a
    disconnect. Under gevent's monkey patching (gunicorn's gevent worker) the waits yield to
    the other greenlets, which is what psycogreen would do, bounded.
    """
    wait_read, wait_write = _waiters()
    statement_bound = statement_timeout + STATEMENT_GRACE if statement_timeout else None

    def wait(conn: Any) -> None:
        at = _deadline.get()
        if at is None:
            bound = connect_timeout if conn.status not in _CONNECTED else statement_bound
            at = None if bound is None else time.monotonic() + bound
        fd = conn.fileno()
        while True:
            state = conn.poll()
            if state == psycopg2.extensions.POLL_OK:
                return
            remaining = None if at is None else at - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise _no_answer()
            if state == psycopg2.extensions.POLL_READ:
                ready = wait_read(fd, remaining)
            elif state == psycopg2.extensions.POLL_WRITE:
                ready = wait_write(fd, remaining)
            else:
                raise psycopg2.OperationalError(f"unexpected poll state {state}")
            if not ready:
                raise _no_answer()

    psycopg2.extensions.set_wait_callback(wait)


def _no_answer() -> psycopg2.OperationalError:
    return psycopg2.OperationalError("the database did not answer in time")


Waiter = Callable[[int, float | None], bool]


def _waiters() -> tuple[Waiter, Waiter]:
    """Functions that wait for a socket to be readable/writable for at most N seconds."""
    monkey = sys.modules.get("gevent.monkey")
    if monkey is not None and monkey.is_module_patched("socket"):
        from gevent.socket import wait_read, wait_write

        def gevent_wait(waiter: Callable[..., None]) -> Waiter:
            def wait(fd: int, timeout: float | None) -> bool:
                try:
                    waiter(fd, timeout=timeout, timeout_exc=TimeoutError)
                except TimeoutError:
                    return False
                return True

            return wait

        return gevent_wait(wait_read), gevent_wait(wait_write)

    def poll_wait(events: int) -> Waiter:
        def wait(fd: int, timeout: float | None) -> bool:
            poller = select.poll()
            poller.register(fd, events)
            return bool(poller.poll(None if timeout is None else max(1, math.ceil(timeout * 1000))))

        return wait

    return poll_wait(select.POLLIN | select.POLLPRI), poll_wait(select.POLLOUT)
