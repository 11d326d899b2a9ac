"""LateClaims: an attempt still running at its deadline is claimed once; one decided is not."""

from __future__ import annotations

import threading
import time
import uuid
from datetime import UTC, datetime

from scheduler_app.services.tasks.claims import Attempt, LateClaims


def _attempt() -> Attempt:
    return Attempt(uuid.uuid4(), 1, "w", datetime.now(UTC))


def _claims(tick: float = 0.01):
    claimed: list[Attempt] = []

    def record(attempt: Attempt) -> bool:
        claimed.append(attempt)
        return True

    return LateClaims(record, tick=tick), claimed


def test_an_attempt_running_past_its_deadline_is_claimed_once():
    claims, claimed = _claims()
    attempt = _attempt()
    claims.watch(attempt, 0.03)
    deadline = time.monotonic() + 2
    while not claimed and time.monotonic() < deadline:
        time.sleep(0.005)
    time.sleep(0.1)
    assert claimed == [attempt] and attempt.claimed


def test_an_attempt_finished_before_its_deadline_is_never_claimed():
    claims, claimed = _claims()
    attempt = _attempt()
    claims.watch(attempt, 0.05)
    with attempt.lock:
        attempt.decided = True
    claims.done(attempt)
    time.sleep(0.2)
    assert claimed == [] and not attempt.claimed


def test_the_thread_sleeps_when_idle_and_wakes_for_the_next_attempt(monkeypatch):
    monkeypatch.setattr(LateClaims, "IDLE", 0.05)
    claims, claimed = _claims()
    first = _attempt()
    claims.watch(first, 0.01)
    time.sleep(0.3)  # claimed, then idle long enough to sleep
    assert claims._asleep
    second = _attempt()
    claims.watch(second, 0.01)
    time.sleep(0.2)
    assert claimed == [first, second]


def test_a_claim_under_way_finishes_before_the_outcome_decides():
    """The outcome waits for the claim holding the attempt's lock, then sees it claimed."""
    entered, release = threading.Event(), threading.Event()

    def slow_record(attempt: Attempt) -> bool:
        entered.set()
        release.wait(2)
        return True

    attempt = _attempt()
    claimer = threading.Thread(target=attempt.claim, args=(slow_record,))
    claimer.start()
    assert entered.wait(2)
    seen = []

    def decide():
        with attempt.lock:
            attempt.decided = True
            seen.append(attempt.claimed)

    outcome = threading.Thread(target=decide)
    outcome.start()
    time.sleep(0.05)
    assert seen == []  # still waiting for the claim
    release.set()
    claimer.join(2)
    outcome.join(2)
    assert seen == [True]
    # and a claim after the outcome does nothing
    assert attempt.claim(lambda a: _never()) is True


def _never():  # pragma: no cover - only called if a decided attempt were claimed again
    raise AssertionError("a decided attempt was claimed")
