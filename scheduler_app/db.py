"""Engine and sessions. Nothing connects at import time."""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.orm import Session, sessionmaker

from scheduler_app.config import Settings

# A connection idle longer than this is pinged before use; one in steady use is not (a ping is a
# round trip per checkout, a quarter of a single submit's). A connection that breaks in use is
# reported as a disconnect, and the pool then replaces every connection older than the break.
PING_AFTER_IDLE = 1.0


def make_engine(settings: Settings, **kwargs) -> Engine:
    """A pooled engine for the ledger that survives a Postgres restart."""
    options = {
        "pool_size": settings.db_pool_size,
        "max_overflow": settings.db_max_overflow,
        "pool_pre_ping": False,
        "pool_recycle": 1800,
    }
    options.update(kwargs)
    engine = create_engine(settings.database_url, **options)
    if not options["pool_pre_ping"]:
        _ping_after_idle(engine, PING_AFTER_IDLE)
    return engine


def _ping_after_idle(engine: Engine, idle: float) -> None:
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
            dialect.do_ping(dbapi_connection)
        except dialect.loaded_dbapi.Error as exc:
            if dialect.is_disconnect(exc, dbapi_connection, None):
                raise DisconnectionError("idle connection is gone") from exc  # pool reconnects
            raise


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(bind=engine, expire_on_commit=False, autoflush=False)
