"""Failed logins counted per client id and per remote address, in Redis so every API process
shares the counts.

A login costs a password hash (~70 ms of CPU at 200,000 PBKDF2 rounds): once a counter is at
its limit, further attempts are refused before the hash is computed, and before the database is
asked. Each counter's window starts at its first failure and ends with its key's TTL, which is
what ``Retry-After`` tells. Redis is only the limiter's memory: when it does not answer, logins
are not limited (credentials are still checked, wrong ones still get a 401).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import redis

from scheduler_app.errors import TooManyRequests

log = logging.getLogger(__name__)

FAILURES_KEY = "scheduler:login-failures:"


@dataclass
class LoginThrottle:
    redis: redis.Redis | None
    max_failures: int = 10
    window: float = 60.0

    def check(self, client_id: str, address: str | None) -> None:
        """Raise TooManyRequests (with Retry-After) while either counter is at its limit."""
        keys = self._keys(client_id, address)
        if self.redis is None or self.max_failures <= 0 or not keys:
            return
        try:
            pipe = self.redis.pipeline(transaction=False)
            for _, key in keys:
                pipe.get(key)
                pipe.pttl(key)
            replies = pipe.execute()
        except redis.RedisError as exc:
            log.warning("login limiter unavailable: not limiting", extra={"error": str(exc)})
            return
        for index, (what, _) in enumerate(keys):
            count, ttl_ms = replies[2 * index], replies[2 * index + 1]
            if count is not None and int(count) >= self.max_failures:
                seconds = ttl_ms / 1000 if ttl_ms and ttl_ms > 0 else self.window
                retry_after = max(1, math.ceil(seconds))
                raise TooManyRequests(
                    f"too many failed logins for this {what}; retry in {retry_after} s",
                    headers={"Retry-After": str(retry_after)},
                )

    def failed(self, client_id: str, address: str | None) -> None:
        """Count one failed login against the client id and the address."""
        keys = self._keys(client_id, address)
        if self.redis is None or self.max_failures <= 0 or not keys:
            return
        window_ms = max(1, int(self.window * 1000))
        try:
            pipe = self.redis.pipeline(transaction=True)
            for _, key in keys:
                pipe.set(key, 0, px=window_ms, nx=True)  # the window starts at the first failure
                pipe.incr(key)
            pipe.execute()
        except redis.RedisError as exc:
            log.warning("failed login not counted", extra={"error": str(exc)})

    @staticmethod
    def _keys(client_id: str, address: str | None) -> list[tuple[str, str]]:
        keys = [("client id", f"{FAILURES_KEY}client:{client_id}")]
        if address:
            keys.append(("address", f"{FAILURES_KEY}address:{address}"))
        return keys
