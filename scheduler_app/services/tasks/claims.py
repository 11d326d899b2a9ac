"""Lazy claims: an attempt is recorded as running only once it has run for a while.

A worker reads and locks an attempt (``ledger.transitions.read_attempt``), runs it, and records
the claim together with the outcome in one statement: one write per task instead of two, which is
most of what the ledger costs a short task. An attempt that runs longer than ``claim_after``
(a setting, 50 ms by default) is claimed on the way by this process's :class:`LateClaims`
thread, so the ledger, ``explain``, cancel (which terminates a running attempt) and the
detection of lost workers see it running, as they would have from its start. Its outcome then
takes the usual running -> terminal move.

Every point where an attempt's fate is decided goes through :class:`Attempt` under its lock, so
the thread's claim and the outcome never cross: the outcome waits for a claim under way, and a
claim that comes after the outcome does nothing.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

log = logging.getLogger(__name__)


@dataclass
class Attempt:
    """One attempt read by this worker: not claimed yet, claimed, or finished (decided)."""

    task_id: uuid.UUID
    number: int
    worker: str
    started: datetime
    claimed: bool = False
    # Set once the outcome is being recorded (or the attempt was given up): no claim after it.
    decided: bool = False
    # The claim found the task moved on (cancelled, expired): its outcome will not apply.
    refused: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def claim(self, record: Callable[[Attempt], bool]) -> bool:
        """Claim it now with ``record`` unless claimed or decided already; whether it is claimed."""
        with self.lock:
            if not (self.claimed or self.decided or self.refused):
                self.claimed = record(self)
                self.refused = not self.claimed
            return self.claimed


class LateClaims:
    """A thread that claims the attempts of this process still running at their deadline.

    Watching an attempt costs a dict entry and nothing else: the thread is not signalled per
    attempt. It looks every ``tick`` seconds while attempts come, and goes to sleep (woken by
    the next ``watch``) after a second without any.
    """

    IDLE = 1.0  # seconds without attempts before the thread sleeps

    def __init__(self, record: Callable[[Attempt], bool], tick: float) -> None:
        self.record = record
        self.tick = tick
        self._watched: dict[int, tuple[float, Attempt]] = {}  # id -> (deadline, attempt)
        self._asleep = True
        self._wake = threading.Event()
        self._pid: int | None = None

    def watch(self, attempt: Attempt, after: float) -> None:
        """Claim ``attempt`` if it is still running ``after`` seconds from now (give or take a
        tick)."""
        if self._pid != os.getpid():  # none yet, or inherited from a parent: not running
            self._start()
        self._watched[id(attempt)] = (time.monotonic() + after, attempt)
        if self._asleep:  # read after the entry is in: a thread going to sleep sees one or other
            self._asleep = False
            self._wake.set()

    def done(self, attempt: Attempt) -> None:
        """Stop watching ``attempt`` (its outcome is being recorded)."""
        self._watched.pop(id(attempt), None)

    def _start(self) -> None:
        self._watched.clear()
        self._asleep = True
        self._wake = threading.Event()
        self._pid = os.getpid()
        threading.Thread(target=self._run, name="ledger-late-claims", daemon=True).start()

    def _run(self) -> None:
        pid = os.getpid()
        idle_since: float | None = None
        while self._pid == pid:
            if self._asleep:
                self._wake.wait()
                self._wake.clear()
                idle_since = None
                continue
            time.sleep(self.tick)
            now = time.monotonic()
            for deadline, attempt in list(self._watched.values()):
                if attempt.decided or attempt.claimed or attempt.refused:
                    self.done(attempt)
                elif deadline <= now:
                    self.done(attempt)
                    try:
                        attempt.claim(self.record)
                    except Exception:  # the outcome claims it instead, or the reconciler sees it
                        log.exception(
                            "could not claim a running attempt",
                            extra={"task_id": str(attempt.task_id)},
                        )
            if self._watched:
                idle_since = None
            elif idle_since is None:
                idle_since = now
            elif now - idle_since > self.IDLE:
                self._asleep = True
                if self._watched:  # one came in between: stay awake
                    self._asleep = False
