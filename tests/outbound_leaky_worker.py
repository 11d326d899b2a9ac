"""The worker with outbound errors that echo the peer: the no-banner tests' negative control.

``celery -A tests.outbound_leaky_worker worker``: the same app as ``tasks.worker``, but the
client describes a failed call with the library's exception (and so the peer's bytes).
"""

from scheduler_app.services.outbound import client

client.describe = repr

from tasks.worker import app  # noqa: E402

__all__ = ["app"]
