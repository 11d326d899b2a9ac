"""The bare-Flask baseline of the submit row: parse the JSON body, ``apply_async``, answer 202.

No authentication, validation, ledger or metrics: what submitting costs with Flask and Celery
alone, served by gunicorn with the same settings as the API. Entry point:
``gunicorn bench.bare_api:app`` (reads BENCH_BROKER_URL and BENCH_SINK_QUEUE).
"""

from __future__ import annotations

import os

from celery import Celery
from flask import Flask, jsonify, request

from bench.raw_app import NOOP, make_raw_app


def create_bare_app(celery: Celery, queue: str) -> Flask:
    """A Flask app whose one endpoint publishes the request as a raw no-op task."""
    app = Flask("bench-bare")
    noop = celery.tasks[NOOP]

    @app.post("/submit")
    def submit():
        """Publish the body's args and kwargs as a no-op task."""
        body = request.get_json(force=True)
        result = noop.apply_async(
            args=body.get("args") or [], kwargs=body.get("kwargs") or {}, queue=queue
        )
        return jsonify(id=result.id), 202

    return app


app = create_bare_app(
    make_raw_app(os.environ["BENCH_BROKER_URL"]), os.environ.get("BENCH_SINK_QUEUE", "raw-sink")
)
