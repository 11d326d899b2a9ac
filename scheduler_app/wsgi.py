"""WSGI entry point: ``gunicorn scheduler_app.wsgi:app``."""

import gc

from scheduler_app.app import create_app

app = create_app()
# The objects made while starting (modules, the app, schemas: most of the heap) live as long as
# the process. Frozen, the collector stops walking them on every full collection: a third of a
# 1000-task batch's CPU went there.
gc.freeze()
