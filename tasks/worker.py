"""Worker entry point: ``celery -A tasks.worker worker``."""

from scheduler_app.config import load_settings
from tasks.celery_app import create_celery_app

settings = load_settings()
app = create_celery_app(settings)
