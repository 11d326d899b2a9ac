"""Where kombu's Redis transport keeps messages: the one rule for its key layout.

A queue is one Redis list per priority step (``queue`` for step 0, ``queue<sep><step>`` for the
others); a message delivered and not yet acknowledged waits in the ``unacked`` hash. The
dispatcher pushes to these keys, the reconciler scans them, and bench/ and the tests read them:
all through this module.
"""

from __future__ import annotations

from bisect import bisect
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

UNACKED_KEY = "unacked"
UNACKED_INDEX_KEY = "unacked_index"
# Our transport options (celery_config): every API priority its own step.
SEP = ":"
PRIORITY_STEPS = tuple(range(10))
# kombu's default separator, as a Celery app left unconfigured uses it (raw Celery in bench/).
KOMBU_SEP = "\x06\x16"


def queue_key(queue: str, step: int, sep: str = SEP) -> str:
    """The list of ``queue`` for one priority step."""
    return f"{queue}{sep}{step}" if step else queue


def queue_keys(queue: str, steps: Sequence[int] = PRIORITY_STEPS, sep: str = SEP) -> list[str]:
    """Every list of ``queue``, highest broker priority (step 0) first."""
    return [queue_key(queue, step, sep) for step in steps]


@dataclass(frozen=True)
class RedisLayout:
    """How kombu's Redis channel stores a message, as read from a configured channel."""

    sep: str
    priority_steps: tuple[int, ...]
    default_priority: int
    min_priority: int
    max_priority: int
    body_encoding: str
    delivery_mode: int  # kombu's value for Celery's task_default_delivery_mode

    @classmethod
    def of_channel(cls, channel: Any, delivery_mode: int) -> RedisLayout:
        """The layout of a kombu ``transport.redis.Channel`` (transport options applied)."""
        return cls(
            sep=channel.sep,
            priority_steps=tuple(channel.priority_steps),
            default_priority=channel.default_priority,
            min_priority=channel.min_priority,
            max_priority=channel.max_priority,
            body_encoding=channel.body_encoding,
            delivery_mode=delivery_mode,
        )

    def message_priority(self, priority: int | None) -> int:
        """``properties.priority`` as kombu's ``Channel.prepare_message`` sets it."""
        return priority or self.default_priority

    def list_key(self, queue: str, priority: int | None) -> str:
        """The list kombu's ``_put`` pushes to (``_get_message_priority``, ``_q_for_pri``)."""
        try:
            pri = int(self.message_priority(priority))
            pri = max(min(pri, self.max_priority), self.min_priority)
        except (TypeError, ValueError):
            pri = self.default_priority
        steps = self.priority_steps
        return queue_key(queue, steps[bisect(steps, pri) - 1], self.sep)

    def queue_keys(self, queue: str) -> list[str]:
        """Every list of ``queue``, highest broker priority (step 0) first."""
        return queue_keys(queue, self.priority_steps, self.sep)
