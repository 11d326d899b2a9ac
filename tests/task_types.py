"""Task types only the tests register (via the task_modules setting): side effects we can count."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Sequence
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

from scheduler_app.services.ledger.outcomes import Outcome, on_outcome
from scheduler_app.task_types import TaskContext, task_type


class CountedFailure(Exception):
    """Raised by test.count while it still has failures to go."""


@task_type("test.count")
def count(key: str, seconds: float = 0.0, failures: int = 0, *, ctx: TaskContext, **_: Any) -> int:
    """Count each start and each completion of ``key`` in the ledger; optionally sleep and fail."""
    started = ctx.counters.incr(f"started:{key}")
    time.sleep(float(seconds))
    if started <= int(failures):
        raise CountedFailure(f"failure {started} of {failures}")
    return ctx.counters.incr(f"completed:{key}")


@task_type("test.crash")
def crash(**_: Any) -> None:
    """Kill the process running it, as a segfault or the OOM killer would."""
    os.kill(os.getpid(), signal.SIGKILL)


@task_type("test.stubborn")
def stubborn(seconds: float = 30.0, **_: Any) -> None:
    """Ignore the soft time limit (and any other interruption) until the hard limit kills it."""
    deadline = time.monotonic() + float(seconds)
    while time.monotonic() < deadline:
        try:
            time.sleep(0.05)
        except BaseException:
            continue


@task_type("test.patient", max_retries=7, backoff=3.0, backoff_max=60.0, jitter=False)
def patient(**_: Any) -> str:
    """A type with its own default retry policy."""
    return "ok"


@task_type(
    "test.impatient",
    max_retries=50,
    backoff=0.3,
    jitter=False,
    retry_strategy="fixed",
    max_retry_duration=1.5,
)
def impatient(**_: Any) -> None:
    """Always fails; its type retries every 0.3 s, but for 1.5 s at most."""
    raise RuntimeError("not yet")


# The outcome probe: a consumer on the outcome seam that counts, in the ledger, every outcome it
# is handed, for tasks tagged PROBE_TAG. Loaded wherever tests.task_types is (API, workers,
# scheduler), like any consumer a task module registers.
PROBE_TAG = "outcome-probe"
# A pool process whose environment names this file dies (SIGKILL) the first time it is handed an
# outcome, after the transition committed and before its consumers' transaction does: the
# outcome must then reach the probe through the scheduler's sweep, once.
CRASH_MARKER_ENV = "TEST_OUTCOME_CRASH_MARKER"


@on_outcome("test.probe", wants=f"'{PROBE_TAG}' = ANY(tags)", columns=("tags",))
def probe(session: Session, outcomes: Sequence[Outcome]) -> None:
    marker = os.environ.get(CRASH_MARKER_ENV)
    if marker and not os.path.exists(marker):
        open(marker, "w").close()
        os.kill(os.getpid(), signal.SIGKILL)
    for outcome in outcomes:
        for key in (f"outcome:{outcome.task_id}", f"outcome:{outcome.task_id}:{outcome.status}"):
            session.execute(
                text(
                    "INSERT INTO counters (key, value) VALUES (:key, 1) "
                    "ON CONFLICT (key) DO UPDATE SET value = counters.value + 1"
                ),
                {"key": key},
            )


@task_type("test.kept", retention=3600.0)
def kept(**_: Any) -> None:
    """Nothing; its tasks are kept an hour once finished (a task type's retention)."""
