"""Celery configuration module for tools that expect one (``celery --config celeryconfig``).

It is derived from the one settings loader; entry points import it, libraries never do.
"""

from scheduler_app.config import load_settings
from scheduler_app.services.broker.celery_config import celery_config

globals().update(celery_config(load_settings()))
