"""/metrics: the API's Prometheus text (every gunicorn process of it), behind a scrape token
when ``metrics_token`` is set."""

from __future__ import annotations

import hmac
from collections.abc import Callable
from functools import wraps
from typing import Any

from flask import Flask, request
from prometheus_client import CollectorRegistry, multiprocess
from prometheus_client.exposition import choose_encoder
from prometheus_flask_exporter import PrometheusMetrics
from prometheus_flask_exporter.multiprocess import GunicornInternalPrometheusMetrics
from sqlalchemy.orm import Session, sessionmaker

from scheduler_app.config import Settings
from scheduler_app.errors import Unauthorized
from scheduler_app.services.metrics import multiproc
from scheduler_app.services.metrics.ledger import LedgerCollector


class _WithLedger:
    """The exporter's output plus the ledger-derived series, computed at scrape time."""

    ledger: LedgerCollector

    def generate_metrics(self, accept_header: str | None = None, names: Any = None):
        registry = CollectorRegistry(auto_describe=False)
        if multiproc.enabled():
            # Every gunicorn process's HTTP metrics, whichever of them answers.
            multiprocess.MultiProcessCollector(registry)
        else:
            registry.register(_Forward(self.registry))
        registry.register(self.ledger)
        if names:
            registry = registry.restricted_registry(names)
        generate_latest, content_type = choose_encoder(accept_header)
        return generate_latest(registry).decode("utf-8"), content_type


class _Forward:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry

    def collect(self):
        return self.registry.collect()


class MultiprocessMetrics(_WithLedger, GunicornInternalPrometheusMetrics):
    """Under gunicorn: values in PROMETHEUS_MULTIPROC_DIR, summed over its processes."""


class SingleProcessMetrics(_WithLedger, PrometheusMetrics):
    """One process (the Flask test client, ``flask run``)."""


def init_metrics(
    app: Flask, settings: Settings, sessions: sessionmaker[Session]
) -> PrometheusMetrics:
    """HTTP metrics of ``app`` and its /metrics endpoint with the ledger's series (aggregated
    over processes when PROMETHEUS_MULTIPROC_DIR is set, as gunicorn_conf makes sure)."""
    cls = MultiprocessMetrics if multiproc.enabled() else SingleProcessMetrics
    options: dict[str, Any] = {}
    if cls is SingleProcessMetrics:
        options["registry"] = CollectorRegistry(auto_describe=True)
    metrics = cls(
        app,
        path="/metrics",
        group_by="url_rule",
        defaults_prefix="scheduler_api",
        metrics_decorator=scrape_token_required(settings.metrics_token),
        **options,
    )
    metrics.ledger = LedgerCollector(
        sessions,
        queues=settings.queues,
        worker_timeout=settings.worker_timeout,
        default_concurrency=settings.worker_concurrency,
        ttl=settings.metrics_cache_seconds,
    )
    return metrics


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
