"""Sending deliveries: the dispatcher each scheduler runs in a thread of its own.

The ``deliveries`` table is the queue. A pending row is due at ``next_attempt_at``; the
dispatcher claims due rows (``FOR UPDATE SKIP LOCKED``, so two schedulers never take the same
one) by stamping a fresh ``lease`` token and pushing ``next_attempt_at`` past the longest an
attempt can take (:func:`hold`). A dispatcher that dies mid-call therefore loses nothing: the
row comes due again when the hold ends and another dispatcher sends it, with the same
``webhook-id``. An attempt's result is recorded only under its own lease, so an attempt that
outlived its hold cannot overwrite the newer one's.

Sends run on a pool of ``webhook_concurrency`` threads with keep-alive connections; the loop
claims as many rows as there are free threads, and records finished attempts in batches (one
statement for the rows, one for their endpoints). Nothing of this is on a task's path: a slow
or dead receiver holds one thread of one dispatcher, never a worker.

Negative controls (``SCHEDULER_TEST_REMOVE``): ``delivery_lease`` claims without the lease
(another pass or dispatcher takes the row again: duplicates); ``delivery_hold`` claims for
ever (a row whose dispatcher died is never sent).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from scheduler_app.config import Settings
from scheduler_app.services.ledger.unit import unit_of_work
from scheduler_app.services.notifiers import email, signing, webhook
from scheduler_app.services.notifiers.announce import WRITTEN
from scheduler_app.services.notifiers.deliveries import backoff

log = logging.getLogger(__name__)

# Whatever the settings say, a round has at most this many attempts.
MAX_ATTEMPTS_BOUND = 100
# Between looks at the table when nothing woke the dispatcher (another scheduler's sweep, the
# API's redeliveries and retries coming due are seen this late at most).
POLL = 0.5
ANNOUNCE_EVERY = 0.1  # seconds between looks for ended tasks to announce
LINGER = 0.05  # seconds a finished attempt may wait for others to be recorded with
HOLD_MARGIN = 10.0  # seconds a claim outlasts the longest attempt
DELIVERY_NICE = 10  # the dispatcher's threads' niceness (see _yield_cpu)


def _removed(what: str) -> bool:
    return os.environ.get("SCHEDULER_TEST_REMOVE") == what


def hold(settings: Settings) -> float:
    """Seconds a claim keeps a row: connect and read timeouts of one attempt, and a margin."""
    return 2 * max(settings.webhook_timeout, settings.smtp_timeout) + HOLD_MARGIN


@dataclass(frozen=True)
class Claimed:
    """One claimed delivery, with what its attempt needs."""

    id: uuid.UUID
    lease: uuid.UUID
    owner_id: uuid.UUID
    channel: str
    target: str
    webhook_id: str
    payload: str
    endpoint_id: uuid.UUID | None
    endpoint_enabled: bool
    keys: tuple[str, ...]
    round_attempts: int  # this one included
    age: float  # seconds since the round began


@dataclass(frozen=True)
class Result:
    """What an attempt decided: ``delivered``, ``retry`` (after ``delay``) or ``failed``;
    ``tried`` is 0 when no call was made (and the endpoint's failures are not counted)."""

    id: uuid.UUID
    lease: uuid.UUID
    result: str
    code: int | None = None
    error: str | None = None
    delay: float = 0.0
    tried: int = 1
    endpoint_id: uuid.UUID | None = None


def attempt(settings: Settings, claimed: Claimed, outbound: Any = None) -> Result:
    """Make one attempt of a claimed delivery and decide what follows (no database)."""
    return replace(_decide(settings, claimed, outbound), endpoint_id=claimed.endpoint_id)


def _decide(settings: Settings, c: Claimed, outbound: Any) -> Result:
    if c.endpoint_id and not c.endpoint_enabled:
        return Result(c.id, c.lease, "failed", error="the endpoint is disabled", tried=0)
    if c.round_attempts > 1 and c.age > settings.webhook_retry_window:
        return Result(
            c.id,
            c.lease,
            "failed",
            error=f"gave up after {c.age:.0f}s (webhook_retry_window)",
            tried=0,
        )
    if c.channel == "webhook":
        sent = webhook.send(settings, c.target, list(c.keys), c.webhook_id, c.payload, outbound)
        outcome, code, error, asked = sent.outcome, sent.status_code, sent.error, sent.retry_after
    else:
        (outcome, error), code, asked = _email(settings, c), None, None
    if outcome == "delivered":
        return Result(c.id, c.lease, "delivered", code)
    last = c.round_attempts >= min(settings.webhook_max_attempts, MAX_ATTEMPTS_BOUND)
    if outcome == "refused" or last:
        suffix = "" if outcome == "refused" else f" (attempt {c.round_attempts} was the last)"
        return Result(c.id, c.lease, "failed", code, webhook.excerpt(f"{error}{suffix}"))
    delay = backoff(c.round_attempts, settings, asked)
    return Result(c.id, c.lease, "retry", code, error, delay)


def _email(settings: Settings, c: Claimed) -> tuple[str, str | None]:
    subject, body = email.render(json.loads(c.payload), settings.public_url)
    try:
        email.send(settings, c.target, subject, body)
    except email.EmailRefusedError as exc:
        return "refused", webhook.excerpt(str(exc))
    except email.EmailRetryableError as exc:
        return "retry", webhook.excerpt(str(exc))
    return "delivered", None


_CLAIM_SQL = text(
    """
WITH due AS (
    SELECT id FROM deliveries
    WHERE status = 'pending' AND next_attempt_at <= clock_timestamp()
    ORDER BY next_attempt_at LIMIT :limit FOR UPDATE SKIP LOCKED
)
UPDATE deliveries d
SET lease = :lease, round_attempts = d.round_attempts + 1,
    next_attempt_at = CASE WHEN :forever THEN 'infinity'::timestamptz
                           ELSE clock_timestamp() + make_interval(secs => :hold) END
FROM due WHERE d.id = due.id
RETURNING d.id, d.owner_id, d.channel, d.target, d.webhook_id, d.payload, d.endpoint_id,
    d.round_attempts, extract(epoch FROM clock_timestamp() - coalesce(d.round_at, d.created_at))
        AS age
"""
)

_RECORD_SQL = text(
    """
UPDATE deliveries d
SET attempts = d.attempts + r.tried,
    last_status_code = coalesce(r.code, CASE WHEN r.result = 'delivered' THEN NULL
                                             ELSE d.last_status_code END),
    last_error = CASE WHEN r.result = 'delivered' THEN NULL ELSE r.error END,
    last_attempt_at = CASE WHEN r.tried > 0 THEN clock_timestamp() ELSE d.last_attempt_at END,
    status = CASE r.result WHEN 'retry' THEN 'pending' ELSE r.result END,
    delivered_at = CASE WHEN r.result = 'delivered' THEN clock_timestamp() END,
    next_attempt_at = CASE WHEN r.result = 'retry'
                           THEN clock_timestamp() + make_interval(secs => r.delay) END,
    lease = NULL
FROM jsonb_to_recordset(CAST(:results AS jsonb))
    AS r(id uuid, lease uuid, result text, code int, error text, delay float8, tried int)
WHERE d.id = r.id AND d.status = 'pending' AND (d.lease = r.lease OR :unleased)
RETURNING d.id
"""
)

_ENDPOINTS_SQL = text(
    """
UPDATE webhook_endpoints e
SET consecutive_failures = n.failures,
    enabled = e.enabled AND n.failures < :limit,
    disabled_at = CASE WHEN e.enabled AND n.failures >= :limit
                       THEN clock_timestamp() ELSE e.disabled_at END,
    disabled_reason = CASE WHEN e.enabled AND n.failures >= :limit
                           THEN :reason ELSE e.disabled_reason END
FROM (
    SELECT c.id, CASE WHEN c.reset THEN 0 ELSE w.consecutive_failures END + c.failed AS failures
    FROM jsonb_to_recordset(CAST(:counts AS jsonb)) AS c(id uuid, reset boolean, failed int)
    JOIN webhook_endpoints w ON w.id = c.id
) AS n
WHERE e.id = n.id
"""
)


class Dispatcher:
    """Claims due deliveries, sends them on a thread pool, records what each attempt got."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        settings: Settings,
        stop: threading.Event,
        announce: Callable[[], int] | None = None,
    ) -> None:
        """``announce``: writes the deliveries of ended tasks (the outcome seam's deferred
        consumers); the loop calls it every ANNOUNCE_EVERY seconds, at this thread's low
        priority."""
        self.sessions, self.settings, self.stopping = sessions, settings, stop
        self.announce = announce
        self._announce_due = 0.0
        self.slots = settings.webhook_concurrency
        self.outbound = webhook.client(settings, per_host=self.slots)
        self.wake = WRITTEN  # set by this process's announcements and by each send
        self._done: list[Result] = []
        self._first_done = 0.0  # when the oldest of _done finished
        self._lock = threading.Lock()

    # --- the loop -------------------------------------------------------------------------

    def run(self) -> None:
        """Until stopped: claim rows for the free threads, record what finished.

        Both in batches: a claim waits for half the threads to be free (or all, when none is
        busy), and finished attempts wait up to LINGER for others, so that a busy dispatcher
        spends two short transactions on many deliveries, not on each.
        """
        _yield_cpu()
        inflight: set[Future[Result]] = set()
        half = max(1, self.slots // 2)
        with ThreadPoolExecutor(
            self.slots, thread_name_prefix="delivery", initializer=_yield_cpu
        ) as pool:
            while not self.stopping.is_set():
                self.wake.clear()
                self._announce()
                inflight = {f for f in inflight if not f.done()}
                if self._due_to_record(half, bool(inflight)):
                    self.record(self._take_done())
                free = self.slots - len(inflight)
                claimed: list[Claimed] = []
                if free >= half or (free and not inflight):
                    try:
                        claimed = self.claim(free)
                    except Exception:
                        log.exception("could not claim deliveries")
                for item in claimed:
                    future = pool.submit(self._attempt, item)
                    future.add_done_callback(lambda _f: self.wake.set())
                    inflight.add(future)
                if not claimed:
                    wait = LINGER if self._done else POLL
                    if self.announce is not None:
                        wait = min(wait, max(0.0, self._announce_due - time.monotonic()))
                    self.wake.wait(wait)
            for future in inflight:  # let the calls under way end (each is bounded)
                future.exception()
        self.record(self._take_done())

    def _announce(self) -> None:
        if self.announce is None or time.monotonic() < self._announce_due:
            return
        self._announce_due = time.monotonic() + ANNOUNCE_EVERY
        try:
            self.announce()
        except Exception:
            log.exception("could not announce outcomes")

    def _due_to_record(self, half: int, busy: bool) -> bool:
        with self._lock:
            if not self._done:
                return False
            return (
                len(self._done) >= half
                or not busy
                or (time.monotonic() - self._first_done >= LINGER)
            )

    def _attempt(self, claimed: Claimed) -> Result:
        try:
            result = attempt(self.settings, claimed, self.outbound)
        except Exception as exc:  # a bug, not an answer: retry later, say why
            log.exception("delivery attempt failed", extra={"delivery_id": str(claimed.id)})
            result = Result(
                claimed.id,
                claimed.lease,
                "retry",
                error=webhook.excerpt(f"{type(exc).__name__}: {exc}"),
                delay=backoff(claimed.round_attempts, self.settings),
                endpoint_id=claimed.endpoint_id,
            )
        with self._lock:
            if not self._done:
                self._first_done = time.monotonic()
            self._done.append(result)
        return result

    def _take_done(self) -> list[Result]:
        with self._lock:
            done, self._done = self._done, []
        return done

    def drain(self) -> int:
        """Claim and send what is due now, in this thread, until nothing is (tests, probes)."""
        sent = 0
        while claimed := self.claim(self.slots):
            results = [attempt(self.settings, c, self.outbound) for c in claimed]
            self.record(results)
            sent += len(results)
        return sent

    # --- the table --------------------------------------------------------------------------

    def claim(self, limit: int) -> list[Claimed]:
        """Claim up to ``limit`` due deliveries, with their endpoints' state and signing keys."""
        lease = uuid.uuid4()
        with unit_of_work(self.sessions) as session:
            rows = session.execute(
                _CLAIM_SQL,
                {
                    "limit": limit,
                    "lease": lease,
                    "hold": 0.0 if _removed("delivery_lease") else hold(self.settings),
                    "forever": _removed("delivery_hold"),
                },
            ).all()
            if not rows:
                return []
            endpoints = {
                e.id: e
                for e in session.execute(
                    text(
                        "SELECT id, url, secret, enabled FROM webhook_endpoints "
                        "WHERE id = ANY(CAST(:ids AS uuid[]))"
                    ),
                    {"ids": [str(r.endpoint_id) for r in rows if r.endpoint_id]},
                )
            }
            owners = {r.owner_id for r in rows if r.channel == "webhook" and not r.endpoint_id}
            keys = _owner_keys(session, owners)
        claimed = []
        for r in rows:
            endpoint = endpoints.get(r.endpoint_id) if r.endpoint_id else None
            claimed.append(
                Claimed(
                    r.id,
                    lease,
                    r.owner_id,
                    r.channel,
                    endpoint.url if endpoint is not None else r.target,
                    r.webhook_id,
                    r.payload,
                    r.endpoint_id,
                    bool(endpoint.enabled) if endpoint is not None else r.endpoint_id is None,
                    (endpoint.secret,) if endpoint is not None else keys.get(r.owner_id, ()),
                    r.round_attempts,
                    float(r.age),
                )
            )
        return claimed

    def record(self, results: Sequence[Result]) -> None:
        """Write what the attempts got, under their leases, and count them on their endpoints."""
        if not results:
            return
        payload = json.dumps(
            [
                {
                    "id": str(r.id),
                    "lease": str(r.lease),
                    "result": r.result,
                    "code": r.code,
                    "error": r.error,
                    "delay": r.delay,
                    "tried": r.tried,
                }
                for r in results
            ]
        )
        try:
            with unit_of_work(self.sessions) as session:
                recorded = set(
                    session.scalars(
                        _RECORD_SQL, {"results": payload, "unleased": _removed("delivery_lease")}
                    )
                )
                counts = _streaks([r for r in results if r.id in recorded])
                if counts:
                    limit = self.settings.webhook_disable_after
                    session.execute(
                        _ENDPOINTS_SQL,
                        {
                            "counts": json.dumps(counts),
                            "limit": limit,
                            "reason": f"disabled after {limit} consecutive failed events "
                            "(webhook_disable_after)",
                        },
                    )
        except Exception:
            # The rows stay claimed until their hold ends; then they are sent again.
            log.exception("could not record delivery attempts", extra={"count": len(results)})


def _yield_cpu() -> None:
    """Lower this thread's CPU priority (Linux schedules threads one by one): deliveries are
    background work, and on a busy machine the tasks' own processes come first."""
    # Not Linux, or not allowed: the same priority then.
    with contextlib.suppress(AttributeError, OSError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), DELIVERY_NICE)


def _streaks(results: Sequence[Result]) -> list[dict[str, Any]]:
    """Per endpoint, in the order the attempts ended: whether an event was delivered (the run
    of failures starts again) and how many events failed after the last delivered one. A
    retry is not an event's end, and a failure without a call (endpoint disabled) is not
    counted."""
    counts: dict[uuid.UUID, dict[str, Any]] = {}
    for r in results:
        if r.endpoint_id is None or r.result == "retry" or not r.tried:
            continue
        count = counts.setdefault(
            r.endpoint_id, {"id": str(r.endpoint_id), "reset": False, "failed": 0}
        )
        if r.result == "delivered":
            count["reset"], count["failed"] = True, 0
        else:
            count["failed"] += 1
    return list(counts.values())


def _owner_keys(session: Session, owners: set[uuid.UUID]) -> dict[uuid.UUID, tuple[str, ...]]:
    """Every key that signs each owner's calls now (a default one is made where none is)."""
    found: dict[uuid.UUID, list[str]] = {o: [] for o in owners}
    if not owners:
        return {}
    for owner_id, secret in session.execute(
        text(
            "SELECT owner_id, secret FROM signing_keys WHERE owner_id = ANY(CAST(:owners AS "
            "uuid[])) AND (expires_at IS NULL OR expires_at > clock_timestamp()) ORDER BY id DESC"
        ),
        {"owners": [str(o) for o in owners]},
    ):
        found[owner_id].append(secret)
    for owner_id, secrets in found.items():
        if not secrets:
            secrets.append(signing.default_key(session, owner_id))
    return {o: tuple(s) for o, s in found.items()}


__all__ = ["Claimed", "Dispatcher", "Result", "attempt", "hold"]
