"""/metrics: the API's Prometheus text (every gunicorn process of it), behind a scrape token
when ``metrics_token`` is set."""

from __future__ import annotations

import hmac
from collections.abc import Callable
from functools import wraps
from typing import Any

from flask import Flask, request
from prometheus_flask_exporter import PrometheusMetrics

from scheduler_app.config import Settings
from scheduler_app.errors import Unauthorized


def init_metrics(app: Flask, settings: Settings) -> PrometheusMetrics:
    """HTTP metrics of ``app`` and its /metrics endpoint (aggregated over processes when
    PROMETHEUS_MULTIPROC_DIR is set)."""
    return PrometheusMetrics(
        app,
        path="/metrics",
        group_by="url_rule",
        defaults_prefix="scheduler_api",
        metrics_decorator=scrape_token_required(settings.metrics_token),
    )


def scrape_token_required(token: str) -> Callable[[Callable], Callable]:
    """Decorator: ``Authorization: Bearer <token>`` or 401; no check when ``token`` is empty
    (development)."""
    expected = f"Bearer {token}".encode()

    def decorate(view: Callable) -> Callable:
        if not token:
            return view

        @wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            given = request.headers.get("Authorization", "").encode()
            # Constant time: the comparison must not tell how much of a guess was right.
            if not hmac.compare_digest(given, expected):
                raise Unauthorized(
                    "/metrics needs the scrape token: Authorization: Bearer <metrics_token>",
                    headers={"WWW-Authenticate": 'Bearer realm="metrics"'},
                )
            return view(*args, **kwargs)

        return wrapper

    return decorate
