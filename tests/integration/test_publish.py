"""Publishing pushes the messages Celery would: compared field by field with ``send_task``'s own.

The reference path is Celery's: ``app.send_task`` on the dispatcher's own app (same process,
thread and app, so the same ``origin`` and ``reply_to``), through a connection to another
database of the same Redis, so queue names and list keys compare as they are. The one value
that differs by nature is kombu's ``delivery_tag``, a fresh uuid4 per message.
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from datetime import timedelta
from types import SimpleNamespace

import pytest
from celery import signals
from celery._state import _task_stack

from scheduler_app.models.base import utcnow
from scheduler_app.services.broker.celery_config import to_broker_priority
from scheduler_app.services.broker.dispatcher import (
    Dispatch,
    Dispatcher,
    direct_publish_blocker,
    hard_limit,
    make_producer_app,
)
from scheduler_app.services.broker.layout import queue_keys
from scheduler_app.services.broker.messages import delivery_tags
from tests.support import free_port

REFERENCE_DB = 7
PER_MESSAGE = ("delivery_tag",)  # properties that differ between any two messages


def _pushed(client, queue: str) -> dict[str, tuple[str, bytes]]:
    """Every message in the queue's lists: task id -> (list key, raw payload)."""
    found = {}
    for key in queue_keys(queue):
        for raw in client.lrange(key, 0, -1):
            found[json.loads(raw)["headers"]["id"]] = (key, raw)
    return found


def _celery_publish(app, connection, item: Dispatch) -> None:
    """The reference: what the dispatcher published before it built messages itself."""
    now = utcnow()
    app.send_task(
        item.task,
        args=[str(item.id)],
        task_id=str(item.id),
        queue=item.queue,
        priority=to_broker_priority(item.priority),
        eta=item.eta if item.eta and item.eta > now else None,
        soft_time_limit=item.timeout,
        time_limit=hard_limit(item.timeout),
        headers={
            "request_id": item.request_id,
            "ledger_attempt": item.attempt,
            "ledger_claim": item.claim,
        },
        connection=connection,
        **{k: v for k, v in (("argsrepr", item.argsrepr), ("kwargsrepr", item.kwargsrepr)) if v},
        add_to_parent=False,
    )


def _assert_uuid4(text: str) -> None:
    value = uuid.UUID(text)
    assert value.version == 4 and value.variant == uuid.RFC_4122
    assert str(value) == text


def _assert_same_message(ours: bytes, reference: bytes) -> None:
    mine, theirs = json.loads(ours), json.loads(reference)
    # send_task also copies its argsrepr/kwargsrepr options into the properties (it passes
    # every option it does not know on to kombu); the factory writes them once, in the headers.
    copied = [theirs["properties"].pop(name, None) for name in ("argsrepr", "kwargsrepr")]
    for name in PER_MESSAGE:
        _assert_uuid4(mine["properties"].pop(name))
        _assert_uuid4(theirs["properties"].pop(name))
    assert list(mine) == list(theirs)
    assert mine["headers"] == theirs["headers"]
    assert list(mine["headers"]) == list(theirs["headers"])
    assert mine["properties"] == theirs["properties"]
    assert list(mine["properties"]) == list(theirs["properties"])
    assert base64.b64decode(mine["body"]) == base64.b64decode(theirs["body"])
    assert mine == theirs
    if copied != [None, None]:
        assert copied == [mine["headers"]["argsrepr"], mine["headers"]["kwargsrepr"]]
        return
    # And byte for byte, once the delivery tags are the same.
    tag = json.loads(ours)["properties"]["delivery_tag"]
    ref_tag = json.loads(reference)["properties"]["delivery_tag"]
    assert ours.replace(tag.encode(), ref_tag.encode()) == reference


def _spread(queue_of) -> list[Dispatch]:
    now = utcnow()
    random_queue = f"pub-{uuid.uuid4().hex[:8]}"
    items = []
    for n, (priority, eta, timeout, request_id, queue) in enumerate(
        [
            (0, None, None, None, "default"),
            (5, None, 30.0, "req-1", "default"),
            (9, None, 30.0, None, "high"),
            (5, now + timedelta(hours=1), None, "req-2", "low"),
            (9, now + timedelta(minutes=5), 2.5, None, random_queue),
            (0, now - timedelta(hours=1), 600.0, "req-3", random_queue),  # due: sent without ETA
            (9, now - timedelta(seconds=1), 30, 'req-é"4', "high"),  # int timeout, odd request id
            (1, None, 1e-3, None, "low"),
            (8, now + timedelta(days=2), None, None, "default"),
        ]
    ):
        items.append(
            Dispatch(
                id=uuid.uuid4(),
                task="demo.echo" if n % 2 else "test.count",
                queue=queue_of(queue),
                priority=priority,
                eta=eta,
                timeout=timeout,
                request_id=request_id,
                attempt=1 + n % 3,
                # Flower's view of the args: none (Celery's default), plain, or to escape.
                argsrepr=(None, "[1, 'x']", "['é\\\"\\n', None]")[n % 3],
                kwargsrepr=(None, "{}", "{'k': 'v\"'}")[n % 3],
                claim=(None, "eager")[n % 2],
            )
        )
    return items


@pytest.fixture
def dispatcher(app) -> Dispatcher:
    dispatcher = app.extensions["scheduler"].dispatcher
    assert dispatcher.direct_blocker is None  # the Redis path, not Celery's
    return dispatcher


@pytest.fixture
def reference(dispatcher, redis_server):
    """A connection of the dispatcher's own app to the reference database."""
    connection = dispatcher.app.connection_for_write(redis_server.url_of(REFERENCE_DB))
    yield connection, redis_server.client(REFERENCE_DB)
    connection.release()


@pytest.fixture
def queues(redis_server):
    """Unique queue names per test (a suffix), deleted afterwards from both databases."""
    suffix = uuid.uuid4().hex[:6]
    used: set[str] = set()

    def queue_of(name: str) -> str:
        used.add(f"{name}-{suffix}")
        return f"{name}-{suffix}"

    yield queue_of
    for db in (0, REFERENCE_DB):
        keys = [key for queue in used for key in queue_keys(queue)]
        keys += [f"_kombu.binding.{queue}" for queue in used]
        redis_server.client(db).delete(*keys)


def test_messages_equal_celery_send_task_field_by_field(
    dispatcher, reference, queues, redis_server
):
    connection, reference_client = reference
    items = _spread(queues)
    assert dispatcher.publish(items) == len(items)
    for item in items:
        _celery_publish(dispatcher.app, connection, item)

    ours = _pushed(redis_server.client(), items[0].queue)
    theirs = _pushed(reference_client, items[0].queue)
    for queue in {item.queue for item in items[1:]}:
        ours |= _pushed(redis_server.client(), queue)
        theirs |= _pushed(reference_client, queue)
    assert set(ours) == set(theirs) == {str(item.id) for item in items}
    for item in items:
        (key, raw), (ref_key, ref_raw) = ours[str(item.id)], theirs[str(item.id)]
        assert key == ref_key, item
        _assert_same_message(raw, ref_raw)
        headers = json.loads(raw)["headers"]
        assert headers["ledger_attempt"] == item.attempt
        assert headers["ledger_claim"] == item.claim
        assert headers["request_id"] == item.request_id
        assert (headers["eta"] is None) == (item.eta is None or item.eta < utcnow())


def test_worker_context_sets_root_and_parent_like_send_task(dispatcher, reference, queues):
    """Inside a worker task (the executor's retries), Celery links the message to that task."""
    connection, reference_client = reference
    parent = SimpleNamespace(
        request=SimpleNamespace(
            called_directly=False, id=str(uuid.uuid4()), root_id=str(uuid.uuid4())
        )
    )
    item = Dispatch(id=uuid.uuid4(), task="demo.echo", queue=queues("retry"), priority=5)
    _task_stack.push(parent)
    try:
        assert dispatcher.publish([item]) == 1
        _celery_publish(dispatcher.app, connection, item)
    finally:
        _task_stack.pop()
    (_, raw), (_, ref_raw) = (
        _pushed(client, item.queue)[str(item.id)]
        for client in (dispatcher._redis[0], reference_client)
    )
    _assert_same_message(raw, ref_raw)
    headers = json.loads(raw)["headers"]
    assert (headers["root_id"], headers["parent_id"]) == (
        parent.request.root_id,
        parent.request.id,
    )


def test_list_key_is_kombus_for_every_priority(dispatcher):
    """kombu's channel, configured by celery_settings, picks the same list as the factory."""
    _, factory = dispatcher._redis or dispatcher._connect()
    with dispatcher.app.connection_for_write() as connection:
        channel = connection.channel()
        try:
            for priority in range(10):
                broker = to_broker_priority(priority)
                message = channel.prepare_message("", broker, properties={})
                expected = channel._q_for_pri("q", channel._get_message_priority(message))
                assert factory.layout.list_key("q", broker) == expected
        finally:
            channel.close()
    assert [factory.layout.list_key("q", to_broker_priority(p)) for p in (9, 5, 0)] == [
        "q",
        "q:4",
        "q:9",
    ]


def test_a_batch_lands_in_publish_order_on_each_list(dispatcher, queues, redis_server):
    queue = queues("order")
    items = [
        Dispatch(id=uuid.uuid4(), task="demo.echo", queue=queue, priority=(0, 5, 9)[n % 3])
        for n in range(30)
    ]
    assert dispatcher.publish(items) == 30
    client = redis_server.client()
    for priority, key in ((9, queue), (5, f"{queue}:4"), (0, f"{queue}:9")):
        # Workers BRPOP: the right end is consumed first.
        consumed = [json.loads(raw)["headers"]["id"] for raw in client.lrange(key, 0, -1)][::-1]
        assert consumed == [str(i.id) for i in items if i.priority == priority]


def test_publish_signal_receivers_get_celerys_path(dispatcher, queues, redis_server):
    """Whoever listens to before_task_publish (tracing, say) still sees every message."""
    seen = []

    def receiver(headers=None, **_):
        seen.append(headers["id"])

    signals.before_task_publish.connect(receiver, weak=False)
    try:
        item = Dispatch(id=uuid.uuid4(), task="demo.echo", queue=queues("hooked"), priority=5)
        assert dispatcher.publish([item]) == 1
    finally:
        signals.before_task_publish.disconnect(receiver)
    assert seen == [str(item.id)]
    assert str(item.id) in _pushed(redis_server.client(), item.queue)


def test_unmodelled_celery_config_falls_back_to_send_task(settings, queues, redis_server):
    app = make_producer_app(settings)
    app.conf.task_compression = "gzip"
    dispatcher = Dispatcher(app)
    assert dispatcher.direct_blocker == "messages are not uncompressed JSON"
    item = Dispatch(id=uuid.uuid4(), task="demo.echo", queue=queues("gzip"), priority=5)
    assert dispatcher.publish([item]) == 1
    (_, raw) = _pushed(redis_server.client(), item.queue)[str(item.id)]
    assert json.loads(raw)["headers"]["compression"] == "application/x-gzip"


def test_a_body_encoding_the_factory_does_not_build_falls_back_to_send_task(
    settings, queues, redis_server
):
    app = make_producer_app(settings)
    app.conf.broker_transport_options = {
        **app.conf.broker_transport_options,
        "body_encoding": "utf-8",
    }
    dispatcher = Dispatcher(app)
    item = Dispatch(id=uuid.uuid4(), task="demo.echo", queue=queues("utf8"), priority=5)
    assert dispatcher.publish([item]) == 1
    assert dispatcher.direct_blocker == "body_encoding is 'utf-8', not base64"
    (_, raw) = _pushed(redis_server.client(), item.queue)[str(item.id)]
    assert json.loads(raw)["properties"]["body_encoding"] == "utf-8"


def test_only_redis_urls_are_published_to_directly(settings):
    conf = make_producer_app(settings).conf
    for url in ("redis://h:6379/0", "rediss://h:6380/1", "redis+socket:///tmp/redis.sock"):
        conf.broker_url = url
        assert direct_publish_blocker(conf) is None, url
    for url in ("amqp://guest@h//", "memory://", "sentinel://h:26379", "redis://a;redis://b"):
        conf.broker_url = url
        assert direct_publish_blocker(conf) == "the broker is not a single Redis URL", url


def test_broker_down_returns_zero_without_raising(settings, caplog):
    dead = settings.__class__(
        **{**settings.as_dict(), "broker_url": f"redis://127.0.0.1:{free_port()}/0"}
    )
    dispatcher = Dispatcher(make_producer_app(dead))
    item = Dispatch(id=uuid.uuid4(), task="demo.echo", queue="default", priority=5)
    started = time.monotonic()
    assert dispatcher.publish([item, item]) == 0
    assert time.monotonic() - started < 5
    assert "the reconciler will publish again" in caplog.text


def test_delivery_tags_are_distinct_canonical_uuid4s():
    tags = delivery_tags(2000)
    assert len(set(tags)) == 2000
    for tag in tags:
        _assert_uuid4(tag)
