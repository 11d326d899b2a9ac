"""The broker side: Celery configuration, the Redis key layout, message building, publishing,
and the reconciler that publishes again what Redis lost."""
