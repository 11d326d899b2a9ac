"""A bounded HTTP load generator: threads, one keep-alive connection each, 127.0.0.1 only."""

from __future__ import annotations

import http.client
import itertools
import threading
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from bench.services import BenchError


@dataclass
class LoadResult:
    """What one load run achieved."""

    ok: int
    errors: int
    elapsed: float
    latencies: list[float] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        """Successful requests per second."""
        return self.ok / self.elapsed if self.elapsed > 0 else 0.0


def post_load(
    url: str,
    body: bytes,
    headers: dict[str, str],
    *,
    connections: int,
    max_requests: int,
    max_seconds: float,
    expect: int = 202,
) -> LoadResult:
    """POST ``body`` to ``url`` from ``connections`` threads until ``max_requests`` were sent or
    ``max_seconds`` passed, whichever comes first. Only loopback addresses are accepted."""
    parts = urlsplit(url)
    if parts.hostname not in {"127.0.0.1", "localhost", "::1"}:
        raise BenchError(f"load is only sent to this machine, not to {parts.hostname}")
    path = parts.path or "/"
    all_headers = {"Content-Type": "application/json", "Connection": "keep-alive", **headers}
    tickets = itertools.count()
    start = threading.Barrier(connections + 1)
    lock = threading.Lock()
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    finished: list[float] = []
    deadline_box: list[float] = []

    def client() -> None:
        """One connection's request loop."""
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
        mine: list[float] = []
        codes: dict[int, int] = {}
        start.wait()
        deadline = deadline_box[0]
        try:
            while next(tickets) < max_requests and time.perf_counter() < deadline:
                began = time.perf_counter()
                try:
                    conn.request("POST", path, body=body, headers=all_headers)
                    response = conn.getresponse()
                    response.read()
                    status = response.status
                except (OSError, http.client.HTTPException):
                    conn.close()
                    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
                    status = 0
                codes[status] = codes.get(status, 0) + 1
                if status == expect:
                    mine.append(time.perf_counter() - began)
        finally:
            conn.close()
            with lock:
                latencies.extend(mine)
                for code, count in codes.items():
                    statuses[code] = statuses.get(code, 0) + count
                finished.append(time.perf_counter())

    threads = [threading.Thread(target=client, daemon=True) for _ in range(connections)]
    for thread in threads:
        thread.start()
    began = time.perf_counter()
    deadline_box.append(began + max_seconds)
    start.wait()
    for thread in threads:
        thread.join(max_seconds + 60)
    elapsed = max(finished, default=time.perf_counter()) - began
    ok = statuses.get(expect, 0)
    return LoadResult(ok, sum(statuses.values()) - ok, elapsed, latencies, statuses)
