"""kombu's Redis transport with one client object per channel instead of one per command.

kombu's Redis channel builds a new ``redis.Redis`` for every command it sends outside the
event loop (``Channel.conn_or_acquire``): the unacked bookkeeping of every delivered message
(``QoS.append``), its ack (``QoS.ack``) and every publish (``Channel._put``). In redis-py 6 a
client's constructor fills a table of a few hundred response callbacks, about 40 µs of CPU, twice
a message in a worker's main process, the process that limits a prefork drain. A client holds no
connection of its own (each command takes one from the channel's pool), so one per channel and
pool does the same work: it is made again when the channel replaces its pool (a reconnect).

Installed under kombu's ``redis`` and ``rediss`` aliases (``redis+socket`` URLs resolve to
``redis``), so every process of the platform (API, scheduler, workers) uses it and the URL scheme
still decides TLS as before.
"""

from __future__ import annotations

import os

from kombu import transport as kombu_transport
from kombu.transport import redis as kombu_redis

TRANSPORT = f"{__name__}:Transport"
# Measurement only (bench/README.md): BENCH_KOMBU_CLIENT=stock keeps kombu's own transport.
_STOCK = os.environ.get("BENCH_KOMBU_CLIENT") == "stock"


class Channel(kombu_redis.Channel):
    _sync_client = None

    def _create_client(self, asynchronous=False):
        if asynchronous:
            return super()._create_client(asynchronous=True)
        pool = self.pool
        client = self._sync_client
        if client is None or client.connection_pool is not pool:
            client = self._sync_client = self.Client(connection_pool=pool)
        return client


class Transport(kombu_redis.Transport):
    Channel = Channel


def install() -> None:
    """Make kombu resolve ``redis://`` and ``rediss://`` broker URLs to this transport."""
    if _STOCK:
        return
    for alias in ("redis", "rediss"):
        kombu_transport.TRANSPORT_ALIASES[alias] = TRANSPORT
        # kombu caches what an alias resolved to; one resolved before this must resolve again
        kombu_transport._transport_cache.pop(alias, None)
