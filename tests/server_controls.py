"""Negative controls of the API server's protections (see tests/api_server.py).

As a gunicorn config (``-c python:tests.server_controls``): the production settings without the
hook that makes gunicorn's own errors problem+json. As app factories
(``tests.server_controls:without_body_limit()``): the API without one protection.
"""

from __future__ import annotations

from typing import Any

from scheduler_app.gunicorn_conf import (  # noqa: F401 - read by gunicorn as settings
    child_exit,
    graceful_timeout,
    keepalive,
    limit_request_field_size,
    limit_request_fields,
    limit_request_line,
    timeout,
    worker_class,
    worker_connections,
    workers,
)


def without_body_limit() -> Any:
    """The API with its body-limit middleware taken off (Flask's own checks remain)."""
    from scheduler_app.app import create_app

    app = create_app()
    app.wsgi_app = app.wsgi_app.app
    return app


def with_unbounded_db_waits() -> Any:
    """The API with psycopg2 cooperative under gevent (as psycogreen makes it) but unbounded."""
    import psycopg2.extensions
    from gevent.socket import wait_read, wait_write

    from scheduler_app.app import create_app

    app = create_app()

    def wait(conn: Any) -> None:
        while True:
            state = conn.poll()
            if state == psycopg2.extensions.POLL_OK:
                return
            if state == psycopg2.extensions.POLL_READ:
                wait_read(conn.fileno())
            else:
                wait_write(conn.fileno())

    psycopg2.extensions.set_wait_callback(wait)
    return app
