"""Distributed job scheduler: HTTP API and services over a PostgreSQL ledger."""


def create_app(*args, **kwargs):
    """Build the Flask app (see scheduler_app.app.create_app)."""
    from scheduler_app.app import create_app as factory

    return factory(*args, **kwargs)
