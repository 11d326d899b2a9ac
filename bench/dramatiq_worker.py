"""Entry point of the Dramatiq worker: ``dramatiq bench.dramatiq_worker``.

Reads BENCH_DRAMATIQ_URL, as the platform's worker module reads SCHEDULER_*.
"""

import os

from bench.peers_jobs import declare_dramatiq

broker, noop = declare_dramatiq(os.environ["BENCH_DRAMATIQ_URL"])
