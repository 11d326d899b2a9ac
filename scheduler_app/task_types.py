"""The registry of task types: a name, the function that runs it, and its defaults.

Task code lives in ``tasks/`` and registers itself with :func:`task_type`. The API learns the names
by importing the modules listed in the ``task_modules`` setting (as Celery's ``include`` does),
never by importing the Celery app.
"""

from __future__ import annotations

import functools
import importlib
import inspect
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from scheduler_app.limits import RETRY_DURATION_MAX, RETRY_STRATEGIES

# The per-type cache of call shapes (does this set of kwarg names bind?): bounded in entries and
# in the names one entry may hold.
MISFITS_KEPT = 1000
MISFIT_NAMES_KEPT = 64
# kwargs the platform gives a task itself: ``ctx`` (its context; a submission may not) and
# ``parents`` (a workflow node's parents' results; never bound to a parameter).
RESERVED_KWARGS = frozenset({"ctx", "parents"})


class PermanentError(Exception):
    """Raised by task code for a failure that retrying cannot fix; the task fails at once."""


class RetryLaterError(Exception):
    """Raised by task code to be retried after ``delay`` seconds (e.g. what a Retry-After
    header asked) instead of its backoff; the task's retry bound still applies."""

    def __init__(self, message: str, delay: float) -> None:
        super().__init__(message)
        self.delay = max(0.0, float(delay))


@dataclass(frozen=True)
class TaskContext:
    """What a running task may know about itself."""

    task_id: str
    attempt: int
    max_retries: int
    worker: str
    request_id: str | None
    counters: Any = None  # scheduler_app.services.tasks.counters.CounterStore, bound per call
    settings: Any = None  # the worker's scheduler_app.config.Settings


@dataclass(frozen=True)
class TaskType:
    name: str
    fn: Callable[..., Any]
    description: str = ""
    queue: str | None = None
    max_retries: int | None = None
    # Default time limit (seconds) of this type's attempts; None: the default_task_timeout setting.
    timeout: float | None = None
    # Seconds this type's tasks are kept once finished; None: the queue's or the state's default.
    retention: float | None = None
    # Default retry policy of this type; a submission's ``retry`` overrides each key.
    retry: dict[str, Any] = field(default_factory=dict)
    permanent_errors: tuple[type[BaseException], ...] = ()
    wants_context: bool = False
    parameters: dict[str, str] = field(default_factory=dict)
    # Submit-time check of a call's values: (args, kwargs, settings or None) -> field errors.
    validator: Callable[[list[Any], dict[str, Any], Any], dict[str, list[str]]] | None = None
    # JSON Schema of kwargs whose values ``validator`` checks, for the OpenAPI document.
    param_schemas: dict[str, Any] = field(default_factory=dict)  # a schema, or settings -> schema
    # JSON Schema ANDed into the kwargs object (rules across kwargs that ``validator`` checks).
    kwargs_schema: dict[str, Any] = field(default_factory=dict)
    # The platform's own: workers run it, the API neither lists nor takes it.
    internal: bool = False

    def check_call(
        self, args: list[Any], kwargs: dict[str, Any], settings: Any = None
    ) -> dict[str, list[str]]:
        """Field errors that would make this call fail for sure; empty when it may run.

        ``settings`` (the API's) reach the type's validator, e.g. for the outbound URL policy.
        """
        if "ctx" in kwargs:
            return {"kwargs.ctx": ["is reserved"]}
        # Whether a call binds depends only on how many args and which keyword names it has.
        shape = (len(args), frozenset(kwargs))
        misfit = self._misfits.get(shape)
        if misfit is None:
            call_kwargs = {k: None for k in kwargs if k not in RESERVED_KWARGS}
            try:
                self.signature.bind(*args, **call_kwargs, **self._context_stub())
                misfit = ""
            except TypeError as exc:
                misfit = f"arguments do not fit {self.name}: {exc}"
            # A hostile batch can name 50,000 distinct kwargs; the cache lives with the process.
            if len(self._misfits) < MISFITS_KEPT and len(shape[1]) <= MISFIT_NAMES_KEPT:
                self._misfits[shape] = misfit
        if misfit:
            return {"kwargs": [misfit]}
        return self.validator(args, kwargs, settings) if self.validator else {}

    @functools.cached_property
    def signature(self) -> inspect.Signature:
        """The task function's signature (what a call must bind)."""
        return inspect.signature(self.fn)

    @functools.cached_property
    def _misfits(self) -> dict[tuple[int, frozenset[str]], str]:
        return {}

    def _context_stub(self) -> dict[str, Any]:
        return {"ctx": None} if self.wants_context else {}

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "queue": self.queue,
            "max_retries": self.max_retries,
            "timeout": self.timeout,
            "retention": self.retention,
            "retry": self.retry,
            "parameters": self.parameters,
        }

    def is_permanent(self, exc: BaseException) -> bool:
        return isinstance(exc, (PermanentError, *self.permanent_errors))


_REGISTRY: dict[str, TaskType] = {}


def task_type(
    name: str,
    *,
    queue: str | None = None,
    max_retries: int | None = None,
    timeout: float | None = None,
    retention: float | None = None,
    backoff: float | None = None,
    backoff_max: float | None = None,
    jitter: bool | None = None,
    retry_strategy: str | None = None,
    max_retry_duration: float | None = None,
    permanent_errors: Iterable[type[BaseException]] = (),
    parameters: dict[str, str] | None = None,
    validator: Callable[[list[Any], dict[str, Any], Any], dict[str, list[str]]] | None = None,
    param_schemas: dict[str, Any] | None = None,
    kwargs_schema: dict[str, Any] | None = None,
    internal: bool = False,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register the decorated function as the task type ``name`` (an ``area.verb`` name).

    The function receives the task's ``args`` and ``kwargs``; if it declares a keyword-only
    parameter ``ctx`` it also receives a :class:`TaskContext`. ``timeout`` is the default time
    limit of its attempts (seconds; the ``default_task_timeout`` setting when None).
    ``max_retries``, ``backoff``, ``backoff_max``, ``jitter``, ``retry_strategy`` (exponential,
    linear or fixed) and ``max_retry_duration`` (seconds) are the type's default retry policy;
    ``retention`` how long its tasks are kept once finished (seconds, 1 s to 3650 days; the
    queue's or the terminal state's default when None).
    """
    from scheduler_app import limits

    if retention is not None and not limits.RETENTION_MIN <= retention <= limits.RETENTION_MAX:
        raise ValueError(f"task type {name!r}: retention must be 1 s to 3650 days")
    if retry_strategy is not None and retry_strategy not in RETRY_STRATEGIES:
        raise ValueError(f"retry_strategy must be one of {RETRY_STRATEGIES}")
    if max_retry_duration is not None and not 0 < max_retry_duration <= RETRY_DURATION_MAX:
        raise ValueError(f"max_retry_duration must be > 0 and <= {RETRY_DURATION_MAX}")

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        if "." not in name:
            raise ValueError(f"task type name {name!r} must look like area.verb")
        existing = _REGISTRY.get(name)
        if existing is not None and existing.fn.__qualname__ != fn.__qualname__:
            raise ValueError(f"task type {name!r} registered twice")
        sig = inspect.signature(fn)
        ctx_param = sig.parameters.get("ctx")
        _REGISTRY[name] = TaskType(
            name=name,
            fn=fn,
            description=(inspect.getdoc(fn) or "").split("\n")[0],
            queue=queue,
            max_retries=max_retries,
            timeout=timeout,
            retention=retention,
            retry={
                key: value
                for key, value in (
                    ("max_retries", max_retries),
                    ("backoff", backoff),
                    ("backoff_max", backoff_max),
                    ("jitter", jitter),
                    ("strategy", retry_strategy),
                    ("max_retry_duration", max_retry_duration),
                )
                if value is not None
            },
            permanent_errors=tuple(permanent_errors),
            wants_context=ctx_param is not None
            and ctx_param.kind is inspect.Parameter.KEYWORD_ONLY,
            parameters=dict(parameters or {}),
            validator=validator,
            param_schemas=dict(param_schemas or {}),
            kwargs_schema=dict(kwargs_schema or {}),
            internal=internal,
        )
        return fn

    return decorate


def submittable(types: dict[str, TaskType]) -> dict[str, TaskType]:
    """The types a client may submit (every one but the platform's own)."""
    return {name: t for name, t in types.items() if not t.internal}


def load_task_modules(modules: Iterable[str]) -> dict[str, TaskType]:
    """Import the task modules so their types register; return the types they define.

    The platform's outcome consumers (workflows) are loaded too: every process calls this.
    """
    from scheduler_app.services.ledger.outcomes import load_platform_consumers

    load_platform_consumers()
    wanted = set(modules)
    for module in wanted:
        importlib.import_module(module)
    return {name: t for name, t in _REGISTRY.items() if t.fn.__module__ in wanted}
