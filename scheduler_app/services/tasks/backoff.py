"""Delay before the next attempt, and whether there is one: the retry policy's arithmetic.

Strategies (``retry.strategy``), for failed attempt ``n`` (1-based):

- ``exponential`` (default): ``backoff * 2**(n-1)``, capped at ``backoff_max``;
- ``linear``: ``backoff * n``, capped at ``backoff_max``;
- ``fixed``: ``backoff`` every time.

With jitter the delay is drawn uniformly in ``[0, that]`` (full jitter). ``max_retry_duration``
(Cloud Tasks' name) stops retrying once that many seconds have passed since the first attempt
started, whatever ``max_retries`` still allows.
"""

from __future__ import annotations

import random
from datetime import datetime

from scheduler_app.limits import RETRY_STRATEGIES

EXPONENTIAL, LINEAR, FIXED = RETRY_STRATEGIES


def retry_delay(
    attempt: int,
    backoff: float,
    backoff_max: float,
    jitter: bool,
    rng: random.Random | None = None,
    *,
    strategy: str = EXPONENTIAL,
) -> float:
    """Seconds to wait after failed attempt number ``attempt`` (1-based), per ``strategy``."""
    n = max(attempt, 1)
    if strategy == FIXED:
        cap = backoff
    elif strategy == LINEAR:
        cap = min(backoff_max, backoff * n)
    elif strategy == EXPONENTIAL:
        # 2**(n-1) overflows a float past n = 1024; the cap is reached long before.
        cap = backoff_max if n > 64 else min(backoff_max, backoff * (2 ** (n - 1)))
    else:
        raise ValueError(f"unknown retry strategy {strategy!r}")
    if jitter:
        return (rng or random).uniform(0, cap)
    return cap


def retry_window_closed(
    first_started: datetime | None, now: datetime, max_retry_duration: float | None
) -> bool:
    """True if ``max_retry_duration`` seconds have passed since the first attempt started."""
    if max_retry_duration is None or first_started is None:
        return False
    return (now - first_started).total_seconds() >= max_retry_duration
