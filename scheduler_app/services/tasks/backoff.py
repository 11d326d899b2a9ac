"""Delay before the next attempt: exponential, capped, optionally with full jitter."""

from __future__ import annotations

import random


def retry_delay(
    attempt: int, backoff: float, backoff_max: float, jitter: bool, rng: random.Random | None = None
) -> float:
    """Seconds to wait after failed attempt number ``attempt`` (1-based).

    ``backoff * 2**(attempt-1)`` capped at ``backoff_max``; with jitter, uniform in [0, that].
    """
    cap = min(backoff_max, backoff * (2 ** max(attempt - 1, 0)))
    if jitter:
        return (rng or random).uniform(0, cap)
    return cap
