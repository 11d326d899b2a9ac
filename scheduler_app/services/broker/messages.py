"""Broker messages built directly: what Celery's ``send_task`` has kombu LPUSH on Redis.

Celery builds each message through several layers (``send_task`` -> ``amqp.as_task_v2`` ->
kombu ``Producer.publish`` -> the Redis channel's ``_put``), about 200 µs a message. Our
messages differ from one another in a few values only, so :class:`MessageFactory` serialises
a message once per (task, queue, priority, timeout) into a template and joins the per-message
values into it. The JSON is byte for byte what kombu would push (Celery protocol 2; celery and
kombu are pinned, and ``tests/integration/test_publish.py`` compares every field with Celery's
own message).
"""

from __future__ import annotations

import binascii
import os
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from json.encoder import encode_basestring_ascii
from typing import Any

from kombu.utils.json import dumps

from scheduler_app.services.broker.celery_config import to_broker_priority
from scheduler_app.services.broker.layout import RedisLayout

# Protocol 2 body: (args, kwargs, embed); our messages carry no callbacks, chains or chords.
EMBED = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}
TEMPLATE_CACHE_LIMIT = 4096

# Per-message values, in the order they appear in the JSON. BARE_STRINGS are always strings with
# nothing to escape (a uuid, base64): the template keeps their quotes.
FIELDS = (
    "body",
    "id",
    "eta",
    "root_id",
    "parent_id",
    "argsrepr",
    "kwargsrepr",
    "origin",
    "request_id",
    "ledger_attempt",
    "ledger_claim",
    "correlation_id",
    "reply_to",
    "delivery_tag",
)
BARE_STRINGS = frozenset({"body", "id", "correlation_id", "delivery_tag"})
_VARIANT = {digit: "89ab"[int(digit, 16) & 3] for digit in "0123456789abcdef"}


@dataclass(frozen=True)
class Dispatch:
    """What the broker needs to deliver one attempt of a task."""

    id: uuid.UUID
    task: str
    queue: str
    priority: int
    eta: datetime | None = None
    timeout: float | None = None
    request_id: str | None = None
    attempt: int = 1  # the attempt this message starts; a stale message cannot start another
    # What Flower shows as the task's args and kwargs (bounded reprs of the ledger's values);
    # None: Celery's defaults for the body's own args ([id]) and kwargs ({}).
    argsrepr: str | None = None
    kwargsrepr: str | None = None
    # "eager": the worker claims the attempt before running it, whatever its length (a message
    # the reconciler publishes again: the last one may have been lost with its worker, which
    # must count as an attempt; see services/tasks/execution.py). None: the worker decides.
    claim: str | None = None


def hard_limit(timeout: float | None) -> float | None:
    """The hard time limit after the soft one: task code gets a moment to clean up."""
    return timeout + max(1.0, timeout * 0.1) if timeout else None


@dataclass(frozen=True)
class Sender:
    """What ``send_task`` takes from the publishing process, thread and current task.

    ``reply_to`` is the app's ``thread_oid`` and ``origin`` is ``anon_nodename()``; inside a
    worker task, ``root_id`` and ``parent_id`` come from that task.
    """

    reply_to: str
    origin: str
    root_id: str | None = None
    parent_id: str | None = None


class UnsupportedLayoutError(ValueError):
    """The Redis channel stores messages in a way the factory does not build."""


class MessageFactory:
    """(list key, payload) of each dispatch, as ``send_task`` and kombu's ``_put`` make them.

    The Celery arguments a dispatch stands for are those of ``Dispatcher``'s fallback path:
    args ``[id]``, task_id ``id``, the queue, ``to_broker_priority(priority)``, the ETA unless
    it is not after ``now``, soft limit ``timeout`` and hard limit ``hard_limit(timeout)``,
    and headers ``request_id``, ``ledger_attempt`` and ``ledger_claim``.
    """

    def __init__(self, layout: RedisLayout):
        if layout.body_encoding != "base64":
            raise UnsupportedLayoutError(f"body_encoding is {layout.body_encoding!r}, not base64")
        self.layout = layout
        self._templates: dict[tuple, tuple[str, tuple[str, ...]]] = {}
        marker = f"@{uuid.uuid4().hex}@"
        prefix, suffix = dumps(([marker], {}, EMBED)).split(marker)
        self._body = (prefix, suffix)

    def payload(self, item: Dispatch, sender: Sender, now: datetime) -> tuple[str, str]:
        """(list key, JSON payload) of one dispatch."""
        return self.payloads([item], sender, now)[0]

    def payloads(
        self, items: Sequence[Dispatch], sender: Sender, now: datetime
    ) -> list[tuple[str, str]]:
        """(list key, JSON payload) of each dispatch, in order."""
        templates = self._templates
        b2a = binascii.b2a_base64
        body_prefix, body_suffix = self._body
        origin, reply_to = _json_str(sender.origin), _json_str(sender.reply_to)
        root_id = None if sender.root_id is None else _json_str(sender.root_id)
        parent_id = "null" if sender.parent_id is None else _json_str(sender.parent_id)
        out = []
        for item, tag in zip(items, delivery_tags(len(items)), strict=True):
            priority = to_broker_priority(item.priority)
            timeout = item.timeout
            key = (item.task, item.queue, priority, timeout, type(timeout))
            list_key, p = templates.get(key) or self._template(key)
            tid = str(item.id)
            eta, request_id, attempt = item.eta, item.request_id, item.attempt
            payload = "".join(
                (
                    p[0],
                    b2a(f"{body_prefix}{tid}{body_suffix}".encode(), newline=False).decode(),
                    p[1],
                    tid,
                    p[2],
                    f'"{eta.isoformat()}"' if eta is not None and eta > now else "null",
                    p[3],
                    root_id or f'"{tid}"',
                    p[4],
                    parent_id,
                    p[5],
                    # saferepr([tid]): a uuid's repr needs no escaping, in Python nor in JSON
                    f"\"['{tid}']\"" if item.argsrepr is None else _json_str(item.argsrepr),
                    p[6],
                    '"{}"' if item.kwargsrepr is None else _json_str(item.kwargsrepr),
                    p[7],
                    origin,
                    p[8],
                    "null" if request_id is None else _json_str(request_id),
                    p[9],
                    str(attempt) if type(attempt) is int else dumps(attempt),
                    p[10],
                    "null" if item.claim is None else _json_str(item.claim),
                    p[11],
                    tid,
                    p[12],
                    reply_to,
                    p[13],
                    tag,
                    p[14],
                )
            )
            out.append((list_key, payload))
        return out

    def _template(self, key: tuple) -> tuple[str, tuple[str, ...]]:
        """Serialise a message once with markers where per-message values go; split on them."""
        task, queue, priority, timeout, _ = key
        nonce = uuid.uuid4().hex
        mark = {name: f"@{nonce}:{name}@" for name in FIELDS}
        layout = self.layout
        message = {
            "body": mark["body"],
            "content-encoding": "utf-8",
            "content-type": "application/json",
            "headers": {
                "lang": "py",
                "task": task,
                "id": mark["id"],
                "shadow": None,
                "eta": mark["eta"],
                "expires": None,
                "group": None,
                "group_index": None,
                "retries": 0,
                "timelimit": [hard_limit(timeout), timeout],
                "root_id": mark["root_id"],
                "parent_id": mark["parent_id"],
                "argsrepr": mark["argsrepr"],
                "kwargsrepr": mark["kwargsrepr"],
                "origin": mark["origin"],
                "ignore_result": False,
                "replaced_task_nesting": 0,
                "stamped_headers": None,
                "stamps": {},
                # send_task's headers= argument, merged last by send_task_message
                "request_id": mark["request_id"],
                "ledger_attempt": mark["ledger_attempt"],
                "ledger_claim": mark["ledger_claim"],
            },
            "properties": {
                "correlation_id": mark["correlation_id"],
                "reply_to": mark["reply_to"],
                "delivery_mode": layout.delivery_mode,
                "delivery_info": {"exchange": "", "routing_key": queue},
                "priority": layout.message_priority(priority),
                "body_encoding": layout.body_encoding,
                "delivery_tag": mark["delivery_tag"],
            },
        }
        rest = dumps(message)
        parts = []
        for name in FIELDS:  # in order: a field out of place is not found in the rest
            marker = mark[name] if name in BARE_STRINGS else dumps(mark[name])
            before, found, rest = rest.partition(marker)
            if not found:
                raise ValueError(f"message template: {name} is not where it is expected")
            parts.append(before)
        parts.append(rest)
        if any(nonce in part for part in parts):
            raise ValueError("message template: a field appears twice")
        entry = (layout.list_key(queue, priority), tuple(parts))
        if len(self._templates) >= TEMPLATE_CACHE_LIMIT:
            self._templates.clear()
        self._templates[key] = entry
        return entry


def delivery_tags(n: int) -> list[str]:
    """``n`` random uuid4 strings, as kombu's ``str(uuid4())`` but without a UUID object each."""
    digits = os.urandom(16 * n).hex()
    return [
        f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{_VARIANT[h[16]]}{h[17:20]}-{h[20:32]}"
        for h in (digits[i : i + 32] for i in range(0, 32 * n, 32))
    ]


def _json_str(value: Any) -> str:
    """JSON of a string exactly as kombu's ``dumps`` writes it (ASCII, escaped)."""
    return encode_basestring_ascii(value) if type(value) is str else dumps(value)
