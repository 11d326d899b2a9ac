"""What a token's client is allowed right now, remembered per process for a few seconds.

A token is self-contained, so without a look at the client it would keep working after the
client was disabled, deleted or demoted. Looking it up on every request would add a database
round trip to each submit; remembering it for ``ttl`` seconds bounds how long a change takes to
reach every API process. The process that makes a change forgets its entry at once.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from scheduler_app.services.clients.principal import Role


@dataclass(frozen=True)
class ClientState:
    role: Role
    generation: int  # of the secret: bumped by each rotation
    active: bool  # neither disabled nor deleted


class ClientStates:
    """A bounded cache of client states, each kept for ``ttl`` seconds (0: always load)."""

    def __init__(
        self,
        load: Callable[[uuid.UUID], ClientState | None],
        ttl: float,
        size: int = 10_000,
    ) -> None:
        self._load = load
        self.ttl = ttl
        self.size = size
        self._entries: dict[uuid.UUID, tuple[float, ClientState | None]] = {}
        self._lock = threading.Lock()

    def get(self, client: uuid.UUID) -> ClientState | None:
        """The client's state (None: no such client), loaded when not known or too old."""
        entry = self._entries.get(client)
        now = time.monotonic()
        if entry is not None and entry[0] > now:
            return entry[1]
        state = self._load(client)
        if self.ttl > 0:
            self._put(client, now + self.ttl, state)
        return state

    def __len__(self) -> int:
        return len(self._entries)

    def forget(self, client: uuid.UUID) -> None:
        """Drop what this process remembers of the client (it has just changed)."""
        with self._lock:
            self._entries.pop(client, None)

    def _put(self, client: uuid.UUID, until: float, state: ClientState | None) -> None:
        with self._lock:
            if len(self._entries) >= self.size:
                now = time.monotonic()
                self._entries = {k: v for k, v in self._entries.items() if v[0] > now}
                if len(self._entries) >= self.size:
                    self._entries.clear()
            self._entries[client] = (until, state)
