"""The API server's gunicorn settings, in the one place every launcher reads them:

    gunicorn -c python:scheduler_app.gunicorn_conf --bind HOST:PORT scheduler_app.wsgi:app

(``make api``, docker/Dockerfile, docker-compose, the Helm chart, ``make run`` and the bench).
Where to listen stays on the command line; flags given there override what is set here.

Importing this module (gunicorn's master does) imports nothing of the app.
"""

from __future__ import annotations

import json
import os
import uuid
from typing import Any

# An event loop per process: a client that trickles its headers or body holds a greenlet, not
# one of a few threads, so 50 stalled connections cannot starve /healthz (with 4 threads per
# process, ten were enough). psycopg2 yields to the loop through the wait callback of
# scheduler_app.db.bound_waits, which create_app installs once gevent has patched the process.
worker_class = "gevent"
workers = int(os.environ.get("WEB_CONCURRENCY", "4"))
# Open connections per process; past it the process stops accepting until one closes.
worker_connections = 1000
# A request's headers must arrive within keepalive seconds, and an idle keep-alive connection
# is closed after as long (the gevent worker times both with it).
keepalive = 5
timeout = 30
graceful_timeout = 30
# gunicorn's own limits, stated: longer request lines and headers get a problem+json from
# write_problem below (414, 431, 400). The API's longest URLs (a list with every filter and a
# cursor) stay well under 4094 bytes.
limit_request_line = 4094
limit_request_fields = 100
limit_request_field_size = 8190

# The access log on stdout: JSON lines when log_json (scheduler_app/gunicorn_logging.py).
accesslog = "-"
logger_class = "scheduler_app.gunicorn_logging.JsonLogger"

PROBLEM_CODES = {
    400: "bad-request",
    403: "forbidden",
    414: "uri-too-long",
    417: "expectation-failed",
    431: "request-header-fields-too-large",
    500: "internal-error",
    501: "not-implemented",
}


def write_problem(sock: Any, status_int: int, reason: str, mesg: str) -> None:
    """gunicorn's own error answers (a request it could not parse or refused) as
    application/problem+json, like every other error of the API; replaces its HTML page."""
    from gunicorn import util

    from scheduler_app.api.problems import PROBLEM_BASE

    request_id = uuid.uuid4().hex
    if status_int >= 500:
        mesg = "the server could not handle the request; quote the request_id when reporting it"
    body = json.dumps(
        {
            "type": PROBLEM_BASE + PROBLEM_CODES.get(status_int, str(status_int)),
            "title": reason,
            "status": status_int,
            "detail": mesg or reason,
            "request_id": request_id,
        }
    ).encode()
    head = (
        f"HTTP/1.1 {status_int} {reason}\r\n"
        "Connection: close\r\n"
        "Content-Type: application/problem+json\r\n"
        f"Content-Length: {len(body)}\r\n"
        f"X-Request-ID: {request_id}\r\n\r\n"
    ).encode("latin-1")
    util.write_nonblock(sock, head + body)


def on_starting(server: Any) -> None:
    """In the master, before any worker: Prometheus multiprocess mode in every deployment.

    Each worker process writes its metric values to files in PROMETHEUS_MULTIPROC_DIR and
    /metrics sums them, so a scrape answered by any process counts every process. Without the
    directory each scrape would see only the process that answered it.
    """
    from scheduler_app.services.metrics import multiproc

    multiproc.prepare("api")


def on_exit(server: Any) -> None:
    """The master stops: drop the metrics directory on_starting made (if it made one)."""
    from scheduler_app.services.metrics import multiproc

    multiproc.cleanup()


def post_fork(server: Any, worker: Any) -> None:
    """In each worker process: gunicorn's error pages become problem+json."""
    from gunicorn import util

    # gunicorn has no setting for the format of its own errors; its workers call this function
    # (gunicorn.workers.base.Worker.handle_error) for every one of them.
    util.write_error = write_problem


def child_exit(server: Any, worker: Any) -> None:
    """Prometheus multiprocess mode: a dead worker's live gauges leave the aggregate."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)
