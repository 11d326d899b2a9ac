"""Celery configuration module for tools that expect one (``celery --config celeryconfig``).

It is derived from the one settings loader; entry points import it, libraries never do.
"""

from scheduler_app.celery_settings import celery_config
from scheduler_app.config import load_settings

globals().update(celery_config(load_settings()))
