"""Batches of short attempts: several messages a ledger round trip instead of two round trips each.

A worker process that Celery hands one message (the *first*) takes up to ``worker_batch - 1``
more of the same queue from Redis itself (the *extras*), reads and locks all of their attempts in
one statement, runs them one after the other, records their successes in one statement and acks
the extras in one pipeline; Celery acks the first as ever. Only what is known to be short is
taken, so that nothing waits long behind a batch or is taken from an idle process:

- the first message and every extra are of task types whose code ran in under
  ``budget / worker_batch`` seconds the last ``LEARN`` times in this process (``RunTimes``),
  and not published again or redelivered (those are claimed before they run);
- the extras are the oldest messages of the first one's queue, highest priority first, and the
  take stops at the first message that is not such (nothing is skipped over, so the order
  stays);
- an extra that has not started ``budget`` (``claim_after``) after the batch's read is handed
  back (its lock released, then its message pushed back where it was): the read is each
  attempt's claim-time check of pauses and cancel, so it is never older than that.

What holds as for one message (tests/e2e/test_batching.py): the take is one Lua script that
moves each message from its list into kombu's ``unacked`` hash exactly as kombu's ``QoS.append``
does, so a worker killed at any point leaves every extra either in its list or in ``unacked``,
from where kombu's restore (and the reconciler) bring it back; a duplicate message in a batch is
acked without running (the connection's advisory lock is re-entrant, so the read must never see
an attempt twice); every success is fenced by its attempt number; an extra that runs long after
all (past ``claim_after``: the usual lazy claim) has its batch's earlier successes recorded at
once, is listed in the worker's heartbeat from a Redis hash (the main process cannot see it),
and in a prefork pool process is ended with its process when cancelled or past its hard time
limit, as Celery ends a prefork process running such a first message (its soft limit is a
SIGALRM in its code). See docs/batching.md.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import threading
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from scheduler_app.logs import bind_context
from scheduler_app.models.base import utcnow
from scheduler_app.services.broker.messages import hard_limit
from scheduler_app.services.ledger.transitions import (
    Finished,
    read_attempts,
    succeed_many,
    unlock_attempts,
)
from scheduler_app.services.tasks.claims import Attempt
from scheduler_app.services.tasks.execution import AttemptResult, Executor

log = logging.getLogger(__name__)

# A type is short once its last LEARN runs in this process were; at most TYPES are remembered.
LEARN = 4
TYPES = 256

# KEYS: unacked_index, unacked, the worker's batch hash, then the queue's lists, highest priority
# first. ARGV: how many, now (kombu's score), then the task types that may be taken. Returns
# whether the worker sends task events (the hash's ``events``), then list index, message, ...
TAKE = """
local want = tonumber(ARGV[1])
local short = {}
for i = 3, #ARGV do short[ARGV[i]] = true end
local taken = {redis.call('HGET', KEYS[3], 'events') or '0'}
local count = 0
for k = 4, #KEYS do
  while count < want do
    local raw = redis.call('LINDEX', KEYS[k], -1)
    if not raw then break end
    local ok, m = pcall(cjson.decode, raw)
    if not ok or type(m) ~= 'table' then return taken end
    local h = m['headers']
    local p = m['properties']
    if type(h) ~= 'table' or type(p) ~= 'table' then return taken end
    local d = p['delivery_info']
    if type(d) ~= 'table' then return taken end
    local tag = p['delivery_tag']
    if type(h['task']) ~= 'string' or not short[h['task']]
      or h['redelivered'] == true or d['redelivered'] == true or h['ledger_claim'] == 'eager'
      or type(tag) ~= 'string' or type(h['id']) ~= 'string'
      or type(d['exchange']) ~= 'string' or type(d['routing_key']) ~= 'string' then
      return taken
    end
    redis.call('RPOP', KEYS[k])
    redis.call('ZADD', KEYS[1], ARGV[2], tag)
    local where = cjson.encode(d['exchange']) .. ',' .. cjson.encode(d['routing_key'])
    redis.call('HSET', KEYS[2], tag, '[' .. raw .. ',' .. where .. ']')
    taken[#taken + 1] = k - 3
    taken[#taken + 1] = raw
    count = count + 1
  end
  if count >= want then break end
end
return taken
"""

# Negative control of tests/integration/test_batch_take.py: taken without an unacked entry.
TAKE_UNRECORDED = TAKE.replace("redis.call('ZADD'", "-- redis.call('ZADD'").replace(
    "redis.call('HSET'", "-- redis.call('HSET'"
)

# KEYS: unacked_index, unacked. ARGV: tag, list, message, ... in the order they are to be consumed.
# Pushed back to the consuming end in reverse, so the first is consumed first; only those whose
# unacked entry is still ours (kombu's restore may have put one back already).
HAND_BACK = """
for i = #ARGV - 2, 1, -3 do
  if redis.call('HDEL', KEYS[2], ARGV[i]) == 1 then
    redis.call('ZREM', KEYS[1], ARGV[i])
    redis.call('RPUSH', ARGV[i + 1], ARGV[i + 2])
  end
end
return 1
"""


def _removed(name: str) -> bool:
    """Negative controls of tests/e2e/test_batching.py (SCHEDULER_TEST_REMOVE)."""
    return name in os.environ.get("SCHEDULER_TEST_REMOVE", "").split(",")


def active_key(instance: uuid.UUID) -> str:
    """The Redis hash of a worker instance's batches: ``pid:<pid>`` -> the task id of an extra
    running long in that process, ``processed`` -> extras run."""
    return f"ledger:batch:{instance}"


def batch_activity(
    client: Any, instance: uuid.UUID, pids: set[int], keep: float, *, events: bool = False
) -> tuple[list[uuid.UUID], int]:
    """The extras running long in the processes ``pids`` of ``instance``, and how many extras it
    ran (the heartbeat adds them to Celery's own); records whether the worker sends task
    ``events`` (its batches send them for their extras). The hash lives ``keep`` seconds past
    the last call (a worker that died leaves nothing behind for long)."""
    pipe = client.pipeline(transaction=False)
    pipe.hset(active_key(instance), "events", "1" if events else "0")
    pipe.hgetall(active_key(instance))
    pipe.expire(active_key(instance), max(int(keep), 1))
    fields = pipe.execute()[1]
    active, processed = [], 0
    for name, value in fields.items():
        name = name.decode() if isinstance(name, bytes) else name
        value = value.decode() if isinstance(value, bytes) else value
        try:
            if name == "processed":
                processed = int(value)
            elif name == "events":
                continue
            elif name.startswith("pid:") and int(name[4:]) in pids:
                active.append(uuid.UUID(value))
        except ValueError:
            continue
    return active, processed


class RunTimes:
    """How long each task type's last runs took in this process (bounded: TYPES types)."""

    def __init__(self, short: float) -> None:
        self.short = short
        self._runs: OrderedDict[str, deque[float]] = OrderedDict()

    def add(self, task: str, seconds: float) -> None:
        runs = self._runs.get(task)
        if runs is None:
            runs = self._runs[task] = deque(maxlen=LEARN)
            if len(self._runs) > TYPES:
                self._runs.popitem(last=False)
        else:
            self._runs.move_to_end(task)
        runs.append(seconds)

    def is_short(self, task: str) -> bool:
        runs = self._runs.get(task)
        return runs is not None and len(runs) == LEARN and max(runs) <= self.short

    def short_types(self) -> list[str]:
        return [task for task in self._runs if self.is_short(task)]


@dataclass
class Extra:
    """A message the batch took from Redis (``started`` and ``timeout`` once it runs)."""

    task_id: uuid.UUID
    attempt: int | None
    task: str
    request_id: str | None
    tag: str
    list_key: str
    raw: str
    started: float = 0.0  # time.monotonic()
    timeout: float | None = None
    watched: bool = False
    shown: dict[str, Any] = field(default_factory=dict)  # what Flower's events carry


# The headers a task-received event carries (as Celery's consumer sends it for a first message).
SHOWN = ("argsrepr", "kwargsrepr", "root_id", "parent_id", "retries", "eta", "expires")


def _parse(raw: str, list_key: str) -> Extra | None:
    try:
        message = json.loads(raw)
        headers = message["headers"]
        attempt = headers.get("ledger_attempt")
        return Extra(
            task_id=uuid.UUID(headers["id"]),
            attempt=int(attempt) if attempt else None,
            task=headers["task"],
            request_id=headers.get("request_id"),
            tag=message["properties"]["delivery_tag"],
            list_key=list_key,
            raw=raw,
            shown={k: headers.get(k) for k in SHOWN},
        )
    except (ValueError, KeyError, TypeError, AttributeError):
        return None


@dataclass
class BatchResult:
    """What became of a batch: the first message's result and whether any attempt met a pause
    this worker's consumer has not applied yet."""

    first: AttemptResult
    paused: bool


@dataclass
class Batcher:
    """Runs batches in one process (created per process, after fork)."""

    executor: Executor
    # () -> (redis client, unacked_index key, unacked key, queue -> its list keys)
    broker: Callable[[], tuple[Any, str, str, Callable[[str], list[str]]]]
    size: int
    budget: float
    timeout_error: tuple[type[BaseException], ...] = ()
    # A prefork pool process, which a cancel may end (a solo worker's cannot be: Celery's solo
    # pool terminates no task either).
    terminable: bool = False
    # hostname -> this process's Celery event dispatcher: Flower sees the extras as it sees the
    # first message (when the worker sends task events, which Flower turns on while it runs)
    events: Callable[[str], Any] | None = None
    _events_on: bool = field(default=False, init=False)
    runs: RunTimes = field(init=False)
    _running: Extra | None = field(default=None, init=False)
    _deferred: list[Finished] = field(default_factory=list, init=False)
    # This batch's successes recorded so far (by its end, or by the watch of a long extra).
    _flushed: set[uuid.UUID] = field(default_factory=set, init=False)
    _moved: set[uuid.UUID] = field(default_factory=set, init=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False)
    _scripts: dict[tuple[int, str], Any] = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        self.runs = RunTimes(self.budget / self.size)
        self.executor.on_claim = self._claimed

    def forget_process(self) -> None:
        """A new process: drop what a dead one of the same pid may have left listed."""
        try:
            self.broker()[0].hdel(active_key(self.executor.instance), f"pid:{os.getpid()}")
        except Exception:
            log.warning("could not clear this process's batch entry", exc_info=True)

    def wants(self, task: str, *, eager: bool) -> bool:
        """Whether a first message of ``task`` starts a batch."""
        return self.size > 1 and not eager and self.runs.is_short(task)

    def run_one(self, task: str, run: Callable[[], AttemptResult]) -> AttemptResult:
        """Run a message, learning how long its type's code takes (if it ran)."""
        executor = self.executor
        executor.last_run = None
        result = run()
        if executor.last_run is not None:
            self.runs.add(task, executor.last_run)
        return result

    def run(
        self, task: str, task_id: str, worker: str, attempt: int | None, queue: str
    ) -> BatchResult:
        """Run the first message (``task_id``) and the extras taken with it."""
        first = uuid.UUID(task_id)
        client, index_key, unacked_key, lists = self.broker()
        try:
            extras, duplicates = self._take(client, index_key, unacked_key, lists(queue), first)
        except Exception:  # Redis went away: the first message runs alone
            log.warning("could not take a batch", exc_info=True)
            extras, duplicates = [], []
        done: list[Extra] = []
        shown: list[tuple[Extra, AttemptResult, float]] = []
        reads: dict[uuid.UUID, Any] = {}
        self._deferred, self._flushed, self._moved = [], set(), set()
        paused = False
        try:
            members = [(first, attempt), *((e.task_id, e.attempt) for e in extras)]
            reads = read_attempts(self.executor.ledger, members, worker=worker, now=utcnow())
            read_at = time.monotonic()
            first_result = self._attempt(task, first, worker, attempt, reads)
            paused = first_result.status in ("held", "handed_back")
            for extra in extras:
                if time.monotonic() - read_at > self.budget and not _removed("batch_reread"):
                    break  # its read is too old to stand for its claim-time checks
                claimed = reads.get(extra.task_id, (None, None))[0]
                extra.timeout = claimed.timeout if claimed is not None else None
                extra.started = time.monotonic()
                self._running = extra
                soft = self._soft_limit(extra)
                try:
                    with bind_context(
                        task_id=str(extra.task_id), request_id=extra.request_id, task=extra.task
                    ):
                        result = self._attempt(
                            extra.task, extra.task_id, worker, extra.attempt, reads
                        )
                finally:
                    self._running = None  # its watch, if any, ends and unlists it
                    if soft:
                        signal.setitimer(signal.ITIMER_REAL, 0)
                done.append(extra)
                shown.append((extra, result, time.monotonic() - extra.started))
                paused = paused or result.status in ("held", "handed_back")
        finally:
            self._finish(
                client, index_key, unacked_key, reads, worker, done, extras[len(done) :], duplicates
            )
        if shown and self._events_on and self.events is not None:
            self._send_events(worker, shown)
        recorded_later = first in self._flushed
        if first_result.status == "succeeded" and recorded_later and first not in self._moved:
            first_result = AttemptResult("discarded")  # cancelled meanwhile
        return BatchResult(first_result, paused)

    def _attempt(
        self,
        task: str,
        task_id: uuid.UUID,
        worker: str,
        attempt: int | None,
        reads: dict[uuid.UUID, Any],
    ) -> AttemptResult:
        return self.run_one(
            task,
            lambda: self.executor.run(
                str(task_id),
                worker,
                attempt=attempt,
                timeout_error=self.timeout_error,
                prefetched=reads.get(task_id, (None, None)),
                deferred=self._deferred,
            ),
        )

    def _take(
        self, client: Any, index_key: str, unacked_key: str, keys: list[str], first: uuid.UUID
    ) -> tuple[list[Extra], list[Extra]]:
        """Up to size - 1 extras (distinct attempts) and the duplicates taken with them."""
        short = self.runs.short_types()
        if not short:
            return [], []
        script = self._script(client, TAKE_UNRECORDED if _removed("batch_unacked") else TAKE)
        hash_key = active_key(self.executor.instance)
        events, *raw = script(
            keys=[index_key, unacked_key, hash_key, *keys],
            args=[self.size - 1, time.time(), *short],
        )
        self._events_on = events in (b"1", "1") and not _removed("batch_events")
        extras: list[Extra] = []
        duplicates: list[Extra] = []
        unreadable: list[Extra] = []
        seen = {first}
        for position in range(0, len(raw), 2):
            list_key = keys[int(raw[position]) - 1]
            text = raw[position + 1]
            text = text.decode() if isinstance(text, bytes) else text
            extra = _parse(text, list_key)
            if extra is None:
                # (the script took it: JSON with a string tag) back to Celery, which judges it
                tag = json.loads(text)["properties"]["delivery_tag"]
                unreadable.append(Extra(first, None, "", None, tag, list_key, text))
            elif extra.task_id in seen and not _removed("batch_dedupe"):
                duplicates.append(extra)  # a second message for an attempt of this batch
            else:
                seen.add(extra.task_id)
                extras.append(extra)
        if unreadable:
            self._hand_back(client, index_key, unacked_key, unreadable)
        return extras, duplicates

    def _finish(
        self,
        client: Any,
        index_key: str,
        unacked_key: str,
        reads: dict[uuid.UUID, Any],
        worker: str,
        done: Sequence[Extra],
        left: Sequence[Extra],
        duplicates: Sequence[Extra],
    ) -> None:
        """Record the batch's successes, give back what did not run, ack what did.

        Successes first: an extra is acked only once its outcome committed. If they cannot be
        recorded, the extras that ran go back with those that did not (to run again: delivery is
        at-least-once) and the error is raised for the first message, as without a batch.
        """
        try:
            self.flush(worker)
        except Exception:
            self._hand_back(client, index_key, unacked_key, [*done, *left])
            self._ack(client, index_key, unacked_key, duplicates, 0)
            raise
        if left:
            try:
                unlock_attempts(
                    self.executor.ledger,
                    [
                        (e.task_id, reads[e.task_id][0].attempts)
                        for e in left
                        if e.task_id in reads and reads[e.task_id][1]
                    ],
                )
            except Exception:  # the connection broke: its locks go with it
                log.warning("could not release a batch's locks", exc_info=True)
            self._hand_back(client, index_key, unacked_key, left)
        self._ack(client, index_key, unacked_key, [*done, *duplicates], len(done))

    def _ack(
        self, client: Any, index_key: str, unacked_key: str, extras: Sequence[Extra], ran: int
    ) -> None:
        """kombu's ack (``QoS.ack``) of each, in one pipeline; count those that ran."""
        if not extras:
            return
        pipe = client.pipeline(transaction=False)
        for extra in extras:
            pipe.zrem(index_key, extra.tag)
            pipe.hdel(unacked_key, extra.tag)
        if ran:
            pipe.hincrby(active_key(self.executor.instance), "processed", ran)
        pipe.execute()

    def flush(self, worker: str) -> set[uuid.UUID]:
        """Record the successes waiting in this batch (once: a second call finds none)."""
        with self._lock:
            deferred, self._deferred = self._deferred, []
            if not deferred:
                return set()
            moved = succeed_many(
                self.executor.ledger,
                deferred,
                worker=worker,
                instance=self.executor.instance,
                now=utcnow(),
                sessions=self.executor.sessions,
            )
            self._flushed.update(f.task_id for f in deferred)
            self._moved |= moved
        for finished in deferred:
            if finished.task_id not in moved:
                log.info(
                    "success not recorded: the task moved on",
                    extra={"task_id": str(finished.task_id)},
                )
        return moved

    def _send_events(self, worker: str, ran: Sequence[tuple[Extra, AttemptResult, float]]) -> None:
        """The events Celery sends for a first message, for each extra, in one publish."""
        try:
            dispatcher = self.events(worker)
            for extra, result, runtime in ran:
                uuid_ = str(extra.task_id)
                shown = extra.shown
                dispatcher.send(
                    "task-received",
                    uuid=uuid_,
                    name=extra.task,
                    args=shown.get("argsrepr"),
                    kwargs=shown.get("kwargsrepr"),
                    root_id=shown.get("root_id"),
                    parent_id=shown.get("parent_id"),
                    retries=shown.get("retries") or 0,
                    eta=shown.get("eta"),
                    expires=shown.get("expires"),
                )
                dispatcher.send("task-started", uuid=uuid_)  # (the dispatcher adds the pid)
                if result.status in ("failed", "retrying"):
                    kind = "task-failed" if result.status == "failed" else "task-retried"
                    dispatcher.send(kind, uuid=uuid_, exception=result.error, traceback="")
                else:  # as run_ledger_task reports it: None for a success, else what became of it
                    value = None if result.status == "succeeded" else result.status
                    dispatcher.send(
                        "task-succeeded", uuid=uuid_, result=repr(value), runtime=runtime
                    )
            dispatcher.flush()
        except Exception:
            log.warning("could not send the batch's task events", exc_info=True)

    def _script(self, client: Any, text: str) -> Any:
        """The script on this client (EVALSHA; loaded again if Redis lost it)."""
        key = (id(client), text)
        script = self._scripts.get(key)
        if script is None:
            if len(self._scripts) >= 8:  # a client replaced: the old one's are of no use
                self._scripts.clear()
            script = self._scripts[key] = client.register_script(text)
        return script

    def _hand_back(
        self, client: Any, index_key: str, unacked_key: str, extras: Sequence[Extra]
    ) -> None:
        args: list[str] = []
        for extra in extras:
            args += [extra.tag, extra.list_key, extra.raw]
        self._script(client, HAND_BACK)(keys=[index_key, unacked_key], args=args)

    # An extra that runs long ------------------------------------------------------------------

    def _soft_limit(self, extra: Extra) -> bool:
        """Raise SoftTimeLimitExceeded in the extra's code at its timeout, as Celery's prefork
        pool does for the first message (a solo worker enforces no limit, for either)."""
        if not (self.terminable and extra.timeout and self.timeout_error):
            return False
        error = self.timeout_error[0]

        def expired(signum: int, frame: Any) -> None:
            # only inside its code (last_run is set the moment the code returns)
            if self._running is extra and self.executor.last_run is None:
                raise error()

        signal.signal(signal.SIGALRM, expired)
        signal.setitimer(signal.ITIMER_REAL, extra.timeout)
        return True

    def _claimed(self, attempt: Attempt) -> None:
        """The late claim of an attempt of this process, made or refused (the executor's hook,
        LateClaims' thread)."""
        if _removed("batch_watch"):
            return
        extra = self._running
        if extra is None or extra.task_id != attempt.task_id or extra.watched:
            return  # the first message: Celery lists it, kills it on cancel and at its limit
        extra.watched = True
        threading.Thread(
            target=self._watch, args=(extra, attempt), name="ledger-batch-watch", daemon=True
        ).start()

    def _watch(self, extra: Extra, attempt: Attempt) -> None:
        """While an extra runs long: its batch's successes so far are recorded now, it is listed
        for the heartbeat, and its process ends if the task is cancelled or the extra passes its
        hard time limit (after recording the timeout), as Celery ends a prefork process running
        such a first message."""
        key, field_ = active_key(self.executor.instance), f"pid:{os.getpid()}"
        try:
            self.flush(attempt.worker)
            self.broker()[0].hset(key, field_, str(extra.task_id))
        except Exception:
            log.exception("could not list a long extra", extra={"task_id": str(extra.task_id)})
        hard = extra.started + hard_limit(extra.timeout) if extra.timeout else None
        tick = max(self.executor.settings.claim_after / 2, 0.05)
        while self._running is extra:
            time.sleep(tick)
            if self._running is not extra or not self.terminable:
                continue
            try:
                if hard is not None and time.monotonic() > hard:
                    self.executor.timed_out(extra.task_id, attempt.worker, attempt.number)
                    why = "passed its hard time limit"
                elif self.executor.status_of(extra.task_id) == "cancelled":
                    why = "cancelled"
                else:
                    continue
            except Exception:
                log.exception("could not check a long extra", extra={"task_id": str(extra.task_id)})
                continue
            if self._running is extra:
                log.info(
                    f"{why} while running in a batch: ending its process",
                    extra={"task_id": str(extra.task_id)},
                )
                try:
                    self.flush(attempt.worker)
                finally:
                    os.kill(os.getpid(), signal.SIGKILL)
        try:
            self.broker()[0].hdel(key, field_)
        except Exception:
            log.exception("could not unlist a long extra", extra={"task_id": str(extra.task_id)})
