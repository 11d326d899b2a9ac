"""WSGI entry point: ``gunicorn scheduler_app.wsgi:app``."""

from scheduler_app.app import create_app

app = create_app()
