"""WSGI entry point: ``gunicorn -c python:scheduler_app.gunicorn_conf scheduler_app.wsgi:app``
(the server's settings live in scheduler_app/gunicorn_conf.py)."""

import gc

from scheduler_app.app import create_app

app = create_app()
# The objects made while starting (modules, the app, schemas: most of the heap) live as long as
# the process. Frozen, the collector stops walking them on every full collection: a third of a
# 1000-task batch's CPU went there.
gc.freeze()
