"""The worker's Celery app: one Celery task per registered task type, all run through the ledger."""

from __future__ import annotations

import gc
import logging
import os
import socket
import threading
import uuid
from dataclasses import dataclass, field

from celery import Celery, Task, signals
from celery.exceptions import Retry, SoftTimeLimitExceeded, WorkerLostError
from celery.worker.request import Request

from scheduler_app.config import Settings
from scheduler_app.db import make_engine, make_session_factory
from scheduler_app.logs import bind_context, configure_logging
from scheduler_app.services.broker.celery_config import celery_config
from scheduler_app.services.broker.dispatcher import Dispatcher
from scheduler_app.services.broker.layout import RedisLayout
from scheduler_app.services.ledger.connection import LedgerConnection
from scheduler_app.services.metrics import multiproc
from scheduler_app.services.metrics.process import PoolCollector, attempt_metrics, serve
from scheduler_app.services.tasks.batching import Batcher, batch_activity
from scheduler_app.services.tasks.execution import AttemptResult, Executor
from scheduler_app.services.workers.controls import Controls, read_controls
from scheduler_app.services.workers.registry import WorkerRegistry
from scheduler_app.services.workflows.advance import bind_dispatcher
from scheduler_app.task_types import load_task_modules
from tasks import controls as consumer_controls
from tasks.heartbeat import Heartbeat

log = logging.getLogger(__name__)


@dataclass
class WorkerRuntime:
    """Per-process resources, created lazily so a forked pool child never shares a connection."""

    settings: Settings
    app: Celery
    # One id per worker start, shared by its pool processes: runs record it, heartbeats prove it.
    instance: uuid.UUID = field(default_factory=uuid.uuid4)
    heartbeat: Heartbeat | None = None
    # The stored controls applied to this worker's consumer (main process, once ready).
    controls: consumer_controls.ConsumerControls | None = None
    _executor: Executor | None = field(default=None, repr=False)
    _engine: object = field(default=None, repr=False)
    _ledger: LedgerConnection | None = field(default=None, repr=False)
    _batcher: Batcher | None = field(default=None, repr=False)
    _broker: object = field(default=None, repr=False)
    _events: object = field(default=None, repr=False)

    @property
    def batcher(self) -> Batcher | None:
        """This process's batches, where they can run: a prefork pool process or a solo worker
        (tasks run in the main thread; a thread or green pool runs several at once)."""
        settings = self.settings
        if settings.worker_batch <= 1 or settings.claim_after <= 0:
            return None
        if threading.current_thread() is not threading.main_thread():
            return None
        if self._batcher is None:
            self._batcher = Batcher(
                self.executor,
                self.broker,
                size=settings.worker_batch,
                budget=settings.claim_after,
                timeout_error=(SoftTimeLimitExceeded,),
                terminable=self.pool_process,
                events=self.event_dispatcher,
            )
            self._batcher.forget_process()
        return self._batcher

    # Set in a prefork pool process (worker_process_init): one whose death the main process sees.
    pool_process: bool = False

    def event_dispatcher(self, hostname: str):
        """This process's Celery event dispatcher (buffered: a batch's events, one publish)."""
        cached = self._events
        if cached is None or cached[0] != (os.getpid(), hostname):
            self.broker()  # this process's connection, made if it is not yet
            dispatcher = self.app.events.Dispatcher(
                self._broker[1],
                hostname=hostname,
                enabled=True,
                buffer_group={"task"},
                buffer_limit=1 << 20,
            )
            cached = self._events = ((os.getpid(), hostname), dispatcher)
        return cached[1]

    def broker(self):
        """This process's Redis client and kombu's keys for the batches' takes and acks."""
        if self._broker is None or self._broker[0] != os.getpid():
            connection = self.app.connection_for_write()
            channel = connection.default_channel
            layout = RedisLayout.of_channel(channel, delivery_mode=2)
            self._broker = (
                os.getpid(),
                connection,
                (
                    channel._create_client(),
                    channel.unacked_index_key,
                    channel.unacked_key,
                    layout.queue_keys,
                ),
            )
        return self._broker[2]

    @property
    def executor(self) -> Executor:
        if self._executor is None:
            self._executor = Executor(
                sessions=make_session_factory(self.engine),
                dispatcher=Dispatcher(self.app),
                settings=self.settings,
                types=load_task_modules(self.settings.task_modules),
                instance=self.instance,
                ledger=self.ledger,
                observe=attempt_metrics().observe if self.settings.worker_metrics_port else None,
            )
            bind_dispatcher(self._executor.dispatcher)  # workflow nodes this process releases
        return self._executor

    @property
    def ledger(self) -> LedgerConnection:
        """This process's connection for claims and successes (it connects on first use)."""
        if self._ledger is None:
            self._ledger = LedgerConnection(
                self.settings.database_url,
                synchronous_commit=self.settings.worker_synchronous_commit,
            )
        return self._ledger

    @property
    def engine(self):
        if self._engine is None:
            options = {}
            if not self.settings.worker_synchronous_commit:
                options["connect_args"] = {"options": "-c synchronous_commit=off"}
            self._engine = make_engine(self.settings, pool_size=2, max_overflow=2, **options)
        return self._engine

    def reset(self) -> None:
        """Forget connections inherited from a parent process (after fork)."""
        if self._engine is not None:
            self._engine.dispose(close=False)
        self._engine = None
        self._ledger = None  # an inherited connection stays open for its owner, the parent
        self._executor = None
        self._batcher = None
        self._broker = None  # likewise the parent's broker connection
        self._events = None

    def close(self) -> None:
        """Close this process's ledger connection (a pool process exits)."""
        if self._ledger is not None:
            self._ledger.close()

    def stored_controls(self, name: str) -> Controls:
        """The pauses and pool size stored for the worker ``name``."""
        with make_session_factory(self.engine)() as session:
            return read_controls(session, name)

    def started(self, consumer, queues: list[str]) -> None:
        """Apply the stored controls, register this worker instance and start its heartbeat
        (main process)."""
        name = consumer.hostname
        self.controls = consumer_controls.ConsumerControls(name, tuple(queues))
        try:
            self.controls.apply(consumer, self.stored_controls(name))
        except Exception:  # the claim still refuses paused work; the heartbeat tries again
            log.exception("could not apply the stored controls")
        size = consumer_controls.pool_size(consumer) or consumer.controller.concurrency
        registry = WorkerRegistry(make_session_factory(self.engine))
        registry.register(self.instance, name, os.getpid(), queues, size)

        def check_controls() -> None:
            if self.controls is not None and self.stored_controls(name) != self.controls.applied:
                self.controls.ask(self.app)

        def batches() -> tuple[list[uuid.UUID], int]:
            # the extras running long in this worker's processes, and how many extras ran;
            # tells the processes whether task events are on (Flower turns them on by remote)
            try:
                pids = {os.getpid(), *(consumer.pool.info.get("processes") or ())}
            except AttributeError:  # the pool is stopping
                pids = {os.getpid()}
            keep = max(self.settings.worker_timeout * 10, 600)
            events = consumer.event_dispatcher
            on = bool(events and events.enabled and (not events.groups or "task" in events.groups))
            return batch_activity(self.broker()[0], self.instance, pids, keep, events=on)

        self.heartbeat = Heartbeat(
            registry,
            self.instance,
            self.settings.heartbeat_interval,
            concurrency=lambda: consumer_controls.pool_size(consumer),
            after_beat=check_controls,
            batches=batches if self.settings.worker_batch > 1 else None,
        )
        self.heartbeat.start()

    def stopped(self) -> None:
        if self.heartbeat is None:
            return
        self.heartbeat.stop()
        try:
            self.heartbeat.registry.stopped(self.instance)
        except Exception:
            log.exception("could not record the worker as stopped")


class LedgerRequest(Request):
    """Runs in the worker's main process: records what the pool process could not."""

    def on_timeout(self, soft: bool, timeout: float) -> None:
        super().on_timeout(soft, timeout)
        if soft:
            return  # raised inside the task; the executor records it
        try:
            self.task.runtime.executor.timed_out(
                uuid.UUID(self.id), self.hostname, _attempt_of(self.request_dict)
            )
        except Exception:
            log.exception("could not record a hard timeout", extra={"task_id": self.id})

    def on_failure(self, exc_info, send_failed_event=True, return_ok=False) -> None:
        super().on_failure(exc_info, send_failed_event=send_failed_event, return_ok=return_ok)
        if not isinstance(exc_info.exception, WorkerLostError):
            return
        # The pool process died: an attempt it had not claimed yet counts as lost now (one it
        # had claimed is found by the reconciler, from the heartbeats).
        try:
            self.task.runtime.executor.lost(
                uuid.UUID(self.id), self.hostname, _attempt_of(self.request_dict)
            )
        except Exception:
            log.exception("could not record a lost attempt", extra={"task_id": self.id})


def _attempt_of(request: dict) -> int | None:
    """The attempt a message was published for (its ``ledger_attempt`` header)."""
    attempt = request.get("ledger_attempt") or (request.get("headers") or {}).get("ledger_attempt")
    try:
        return int(attempt) if attempt else None
    except (TypeError, ValueError):
        return None


def _eager(request) -> bool:
    """Whether to claim the attempt before running it: the message was published again by the
    reconciler, or redelivered by the broker (its worker may have died running it)."""
    if _LAZY_REPUBLISH:
        return False
    headers = request.headers or {}
    delivery = request.delivery_info or {}
    claim = getattr(request, "ledger_claim", None) or headers.get("ledger_claim")
    redelivered = getattr(request, "redelivered", None) or headers.get("redelivered")
    return claim == "eager" or bool(redelivered or delivery.get("redelivered"))


class AttemptFailed(Exception):
    """The attempt failed and the ledger recorded it: raised so that Celery's events (and so
    Flower) say FAILURE, not SUCCESS."""


class LedgerTask(Task):
    """Base of every task type: the message carries only the ledger id."""

    Request = LedgerRequest
    runtime: WorkerRuntime
    acks_late = True
    ignore_result = True
    typing = False
    # An expected outcome: logged at INFO without a traceback (the ledger keeps the real one).
    throws = (AttemptFailed,)


# Negative control of tests/e2e/test_operations.py: every attempt reported to Celery as a success.
_REPORT_ALL_AS_SUCCESS = "flower-truth" in os.environ.get("SCHEDULER_TEST_REMOVE", "").split(",")


# Negative control of tests/e2e/test_lazy_claim.py: re-published messages claimed lazily too.
_LAZY_REPUBLISH = "eager_claim" in os.environ.get("SCHEDULER_TEST_REMOVE", "").split(",")


def run_ledger_task(self: LedgerTask, task_id: str) -> str:
    """Run one attempt of the ledger task ``task_id`` (the body of every task type)."""
    request = self.request
    headers = request.headers or {}
    request_id = getattr(request, "request_id", None) or headers.get("request_id")
    attempt = getattr(request, "ledger_attempt", None) or headers.get("ledger_attempt")
    worker = request.hostname or socket.gethostname()
    attempt = int(attempt) if attempt else None
    eager = _eager(request)
    runtime = self.runtime
    with bind_context(task_id=task_id, request_id=request_id, task=self.name):
        batcher = runtime.batcher
        queue = (request.delivery_info or {}).get("routing_key")
        if batcher is not None and queue and batcher.wants(self.name, eager=eager):
            batch = batcher.run(self.name, task_id, worker, attempt, queue)
            result, paused = batch.first, batch.paused
        else:

            def run() -> AttemptResult:
                return runtime.executor.run(
                    task_id,
                    worker,
                    attempt=attempt,
                    timeout_error=(SoftTimeLimitExceeded,),
                    eager=eager,
                )

            result = run() if batcher is None else batcher.run_one(self.name, run)
            paused = result.status in ("held", "handed_back")
        log.debug("attempt finished", extra={"result": result.status})
    if paused:
        # A pause this worker has not applied yet: have its consumer stop fetching.
        if runtime.controls is None or runtime.controls.hostname != worker:
            runtime.controls = consumer_controls.ConsumerControls(worker, ())
        runtime.controls.ask(self.app)
    # The ledger has recorded the outcome; Celery's state must tell the same (Flower shows it).
    if _REPORT_ALL_AS_SUCCESS:
        return result.status
    if result.status == "failed":
        raise AttemptFailed(result.error)
    if result.status == "retrying":
        # Not self.retry(): the ledger already scheduled the next attempt; this only reports it.
        raise Retry(result.error, exc=AttemptFailed(result.error), when=result.retry_in)
    # None for a success (its result is in the ledger): Celery's saferepr of any other value
    # for the "succeeded" line cost 60 µs a task; "skipped", "discarded" and the pauses' outcomes
    # still show in Flower and the log.
    return None if result.status == "succeeded" else result.status


def create_celery_app(settings: Settings) -> Celery:
    """Build the worker app with every task type of ``settings.task_modules`` registered."""
    app = Celery("scheduler", set_as_current=True)
    app.conf.update(celery_config(settings))
    runtime = WorkerRuntime(settings=settings, app=app)
    for name in load_task_modules(settings.task_modules):
        app.task(name=name, base=LedgerTask, bind=True, runtime=runtime, shared=False)(
            run_ledger_task
        )
    app.runtime = runtime
    consumer_controls.register(lambda name: (runtime.stored_controls(name), runtime.controls))

    @signals.worker_init.connect(weak=False)
    def _metrics_directory(**_):
        # Before the pool forks and before anything imports prometheus_client: every pool
        # process writes its values there and the main process serves their sum.
        if settings.worker_metrics_port:
            multiproc.prepare("worker", sub=f"worker-{os.getpid()}")

    @signals.worker_process_init.connect(weak=False)
    def _reset_after_fork(**_):
        runtime.reset()
        runtime.pool_process = True
        gc.freeze()  # the inherited heap lives as long as the process: keep it out of GC passes

    @signals.worker_process_shutdown.connect(weak=False)
    def _close_after_work(**_):
        runtime.close()

    @signals.worker_ready.connect(weak=False)
    def _ready(sender, **_):
        runtime.started(sender, consumer_controls.configured_queues(sender, settings.default_queue))
        if settings.worker_metrics_port:
            controller = sender.controller

            def processes() -> int:
                return getattr(controller.pool, "num_processes", None) or controller.concurrency

            serve(
                settings.worker_metrics_port,
                settings.metrics_bind,
                [PoolCollector(sender.hostname, processes)],
            )
        gc.freeze()  # likewise in the process that receives and acks (the only one with solo)

    @signals.task_unknown.connect(weak=False)
    def _unknown(sender=None, name=None, id=None, message=None, exc=None, **_):
        # Celery drops a message whose task name no worker registered; the ledger must not
        # wait for it forever (the reconciler would publish it again and again).
        try:
            runtime.executor.reject(
                uuid.UUID(str(id)),
                getattr(sender, "hostname", None) or socket.gethostname(),
                "UnknownTaskType",
                f"task type {name!r} is not registered on this worker",
            )
        except (ValueError, TypeError):
            log.warning("dropped a message that is not a ledger task", extra={"name": name})

    @signals.task_rejected.connect(weak=False)
    def _rejected(sender=None, message=None, exc=None, **_):
        task_id = (getattr(message, "headers", None) or {}).get("id")
        try:
            runtime.executor.reject(
                uuid.UUID(str(task_id)),
                getattr(sender, "hostname", None) or socket.gethostname(),
                "RejectedMessage",
                f"the worker could not decode the message: {exc}",
            )
        except (ValueError, TypeError):
            log.warning("rejected a message that is not a ledger task")

    @signals.worker_shutdown.connect(weak=False)
    def _shutdown(**_):
        runtime.stopped()
        multiproc.cleanup()

    @signals.setup_logging.connect(weak=False)
    def _logging(**_):
        configure_logging(settings)

    return app
