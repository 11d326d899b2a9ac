"""Entry point of the raw-Celery worker and producer: ``celery -A bench.raw_worker worker``.

Reads BENCH_BROKER_URL and BENCH_RESULT_URL, as the platform's worker module reads SCHEDULER_*.
"""

import os

from bench.raw_app import make_raw_app

app = make_raw_app(os.environ["BENCH_BROKER_URL"], os.environ.get("BENCH_RESULT_URL") or None)
