"""Our kombu Redis transport: every process resolves to it, and a channel makes one client.

kombu's own Redis channel builds a ``redis.Redis`` per command it sends outside the event loop
(each delivered message's bookkeeping, its ack, each publish); ours keeps one per channel and
pool (services/broker/redis_transport.py). Measured in bench/README.md.
"""

from __future__ import annotations

import uuid

import redis
from kombu import Connection
from kombu.transport import redis as kombu_redis

from scheduler_app.config import load_settings
from scheduler_app.services.broker import redis_transport
from scheduler_app.services.broker.dispatcher import make_producer_app


def _counting_clients(monkeypatch) -> list[object]:
    """Record every redis.Redis the channels construct."""
    made: list[object] = []
    original = redis.Redis.__init__

    def init(self, *args, **kwargs):
        made.append(self)
        original(self, *args, **kwargs)

    monkeypatch.setattr(redis.Redis, "__init__", init)
    return made


def test_every_process_config_resolves_redis_urls_to_our_transport(redis_server):
    settings = load_settings({"broker_url": redis_server.url}, environ={})
    app = make_producer_app(settings)  # builds celery_config, as the API, scheduler and worker do
    with app.connection_for_write() as conn:
        assert conn.transport_cls == "redis"  # the URL scheme still names the transport ...
        assert isinstance(conn.transport, redis_transport.Transport)  # ... which is ours
    for url in ("rediss://127.0.0.1:1/0", "redis+socket:///tmp/redis.sock"):
        assert Connection(url).get_transport_cls() is redis_transport.Transport


def test_rediss_still_means_tls():
    """The scheme, not our class name, still decides TLS (kombu's default for rediss://)."""
    redis_transport.install()
    conn = Connection("rediss://127.0.0.1:6390/0")
    assert conn.ssl  # kombu's ssl_cert_reqs default for a bare rediss:// URL
    assert conn.get_transport_cls() is redis_transport.Transport


def test_a_channel_reuses_one_client_for_publishes_deliveries_and_acks(redis_server, monkeypatch):
    redis_transport.install()
    queue = f"transport-{uuid.uuid4().hex[:8]}"
    with Connection(redis_server.url_of(5)) as conn:
        channel = conn.default_channel
        assert isinstance(channel, redis_transport.Channel)
        made = _counting_clients(monkeypatch)
        simple = conn.SimpleQueue(queue)
        for i in range(20):
            simple.put({"i": i})
        got = []
        for _ in range(20):
            message = simple.get(timeout=5)
            got.append(message.payload["i"])
            message.ack()
        simple.close()
        assert got == list(range(20))
        # one (the first command), not one per command
        assert len(made) <= 2, f"{len(made)} clients for 20 publishes, deliveries and acks"


def test_a_replaced_pool_gets_a_new_client(redis_server):
    """After a reconnect (the channel drops its pools), commands go through the new pool."""
    redis_transport.install()
    with Connection(redis_server.url_of(5)) as conn:
        channel = conn.default_channel
        first = channel._create_client()
        assert channel._create_client() is first
        channel._disconnect_pools()
        second = channel._create_client()
        assert second is not first
        assert second.connection_pool is channel.pool
        assert second.ping()


def test_stock_kombu_makes_a_client_per_command(redis_server, monkeypatch):
    """Control: what the transport removes (kombu's own channel, same commands)."""
    with Connection(redis_server.url_of(5), transport=kombu_redis.Transport) as conn:
        assert not isinstance(conn.default_channel, redis_transport.Channel)
        made = _counting_clients(monkeypatch)
        queue = conn.SimpleQueue(f"transport-{uuid.uuid4().hex[:8]}")
        for i in range(20):
            queue.put({"i": i})
        for _ in range(20):
            queue.get(timeout=5).ack()
        queue.close()
        assert len(made) >= 40  # about four a message: publish, fetch, its bookkeeping, ack
