"""Celery beat with the bench's schedule entries, recording every message it sends.

``celery -A bench.beat_app beat --scheduler bench.beat_app:RecordingScheduler``: BENCH_BEAT_ENTRIES
interval entries of ``bench.noop`` every BENCH_BEAT_INTERVAL seconds, sent to the raw sink queue
(no worker consumes it). Each send appends ``entry due sent`` (epoch seconds) to BENCH_BEAT_LOG:
``due`` is the time beat itself held the entry due (its last run + the interval), ``sent`` the
time it decided to send it (just before publishing).
"""

from __future__ import annotations

import os
import time
from datetime import timedelta

from celery.beat import Scheduler

from bench.raw_app import NOOP, make_raw_app

app = make_raw_app(os.environ["BENCH_BROKER_URL"])
_INTERVAL = float(os.environ.get("BENCH_BEAT_INTERVAL", "1"))
app.conf.beat_schedule = {
    f"entry-{index}": {
        "task": NOOP,
        "schedule": timedelta(seconds=_INTERVAL),
        "args": [index],
        "options": {"queue": os.environ.get("BENCH_SINK_QUEUE", "raw-sink")},
    }
    for index in range(int(os.environ.get("BENCH_BEAT_ENTRIES", "0")))
}


class RecordingScheduler(Scheduler):
    """Beat's in-memory scheduler, writing down each send (no shelve file)."""

    def __init__(self, *args, **kwargs):
        self._log = open(os.environ["BENCH_BEAT_LOG"], "a", buffering=1)  # noqa: SIM115
        super().__init__(*args, **kwargs)

    def apply_async(self, entry, producer=None, advance=True, **kwargs):
        due = (entry.last_run_at + entry.schedule.run_every).timestamp()
        # Written when the send is decided, as ours' created_at is (before its commit).
        self._log.write(f"{entry.name} {due:.6f} {time.time():.6f}\n")
        return super().apply_async(entry, producer=producer, advance=advance, **kwargs)

    def close(self):
        super().close()
        self._log.close()
