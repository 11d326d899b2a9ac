"""A batch's take (services/tasks/batching.py) leaves every message where kombu finds it.

The extras a worker process takes from Redis must never be anywhere but in their list or in
kombu's ``unacked`` hash, in kombu's own format: a process killed after the take leaves them to
kombu's restore (any worker's ``restore_visible``) and to the reconciler. Against a real Redis:
messages the dispatcher published are taken, found in ``unacked`` exactly as kombu's
``QoS.append`` writes them, and kombu's own restore puts them back in their lists; the take
keeps the priority order, stops at the first message it may not take, and the hand-back returns
messages to the consuming end in their order.

Negative control: ``SCHEDULER_TEST_REMOVE=batch_unacked pytest
tests/integration/test_batch_take.py`` takes without the unacked entries: the restore finds
nothing and the first test fails.
"""

from __future__ import annotations

import json
import uuid
from types import SimpleNamespace

import pytest
from celery import Celery

from scheduler_app.services.broker.celery_config import celery_config
from scheduler_app.services.broker.dispatcher import Dispatch, Dispatcher
from scheduler_app.services.broker.layout import UNACKED_INDEX_KEY, UNACKED_KEY, queue_keys
from scheduler_app.services.tasks.batching import Batcher
from tests.support import settings_for

DB = 5  # a database of the session's redis-server no other test uses


@pytest.fixture
def broker(database, redis_server):
    """A Celery app of ours on its own Redis database, kombu's channel on it, and a batcher."""
    app = Celery("take", set_as_current=False)
    app.conf.update(celery_config(settings_for(database.url, redis_server.url_of(DB))))
    # restore at once what is in unacked (kombu restores what is older than this)
    app.conf.broker_transport_options = {
        **app.conf.broker_transport_options,
        "visibility_timeout": 0,
    }
    connection = app.connection_for_write()
    channel = connection.default_channel
    client = channel._create_client()
    client.flushdb()
    batcher = Batcher(
        SimpleNamespace(on_claim=None, instance=uuid.uuid4()),
        lambda: (client, UNACKED_INDEX_KEY, UNACKED_KEY, queue_keys),
        size=8,
        budget=0.05,
    )
    yield SimpleNamespace(app=app, channel=channel, client=client, batcher=batcher)
    client.flushdb()
    connection.release()


def _publish(app, queue: str, items: list[tuple[str, int]]) -> list[uuid.UUID]:
    """Publish (task type, priority) messages in order; their task ids."""
    dispatches = [Dispatch(uuid.uuid4(), task, queue, priority) for task, priority in items]
    assert Dispatcher(app).publish(dispatches) == len(dispatches)
    return [d.id for d in dispatches]


def _teach(batcher, *types: str) -> None:
    for task in types:
        for _ in range(4):
            batcher.runs.add(task, 0.0001)


def test_taken_messages_wait_in_unacked_as_kombus_own_and_come_back(broker):
    queue = f"take-{uuid.uuid4().hex[:6]}"
    ids = _publish(broker.app, queue, [("demo.echo", 5)] * 5)
    _teach(broker.batcher, "demo.echo")
    first = uuid.uuid4()
    extras, duplicates = broker.batcher._take(
        broker.client, UNACKED_INDEX_KEY, UNACKED_KEY, queue_keys(queue), first
    )
    assert [e.task_id for e in extras] == ids and duplicates == []
    assert sum(broker.client.llen(k) for k in queue_keys(queue)) == 0
    for extra in extras:
        stored = broker.client.hget(UNACKED_KEY, extra.tag)
        assert stored is not None, "taken but in neither its list nor unacked"
        message, exchange, routing_key = json.loads(stored)
        assert message == json.loads(extra.raw) and (exchange, routing_key) == ("", queue)
        assert broker.client.zscore(UNACKED_INDEX_KEY, extra.tag) is not None
    # kombu's own restore (what any worker runs) brings every one back to its queue
    broker.channel.qos.restore_visible(num=100)
    back = [
        json.loads(raw)["headers"]["id"]
        for k in queue_keys(queue)
        for raw in broker.client.lrange(k, 0, -1)
    ]
    assert sorted(back) == sorted(str(i) for i in ids)
    assert broker.client.hlen(UNACKED_KEY) == 0


def test_the_take_keeps_priority_order_and_stops_where_it_may_not_take(broker):
    queue = f"take-{uuid.uuid4().hex[:6]}"
    low = _publish(broker.app, queue, [("demo.echo", 1)] * 2)
    high = _publish(broker.app, queue, [("demo.echo", 9)] * 2)
    _teach(broker.batcher, "demo.echo")
    extras, _ = broker.batcher._take(
        broker.client, UNACKED_INDEX_KEY, UNACKED_KEY, queue_keys(queue), uuid.uuid4()
    )
    assert [e.task_id for e in extras] == high + low  # highest priority first, oldest first

    queue = f"take-{uuid.uuid4().hex[:6]}"
    ids = _publish(broker.app, queue, [("demo.echo", 5), ("demo.sleep", 5), ("demo.echo", 5)])
    extras, _ = broker.batcher._take(
        broker.client, UNACKED_INDEX_KEY, UNACKED_KEY, queue_keys(queue), uuid.uuid4()
    )
    # demo.sleep was never seen short here: the take stops before it, skipping nothing over
    assert [e.task_id for e in extras] == ids[:1]
    assert broker.client.llen(queue_keys(queue)[4]) == 2


def test_the_hand_back_returns_messages_to_the_front_in_order(broker):
    queue = f"take-{uuid.uuid4().hex[:6]}"
    ids = _publish(broker.app, queue, [("demo.echo", 5)] * 4)
    _teach(broker.batcher, "demo.echo")
    extras, _ = broker.batcher._take(
        broker.client, UNACKED_INDEX_KEY, UNACKED_KEY, queue_keys(queue), uuid.uuid4()
    )
    later = _publish(broker.app, queue, [("demo.echo", 5)])
    broker.batcher._hand_back(broker.client, UNACKED_INDEX_KEY, UNACKED_KEY, extras[1:])
    assert broker.client.hlen(UNACKED_KEY) == 1  # only the first is still taken
    key = queue_keys(queue)[4]
    consumed = [json.loads(broker.client.rpop(key))["headers"]["id"] for _ in range(4)]
    assert consumed == [str(i) for i in ids[1:]] + [str(later[0])]


def test_a_duplicate_of_the_batch_is_taken_and_set_apart(broker):
    queue = f"take-{uuid.uuid4().hex[:6]}"
    [one] = _publish(broker.app, queue, [("demo.echo", 5)])
    Dispatcher(broker.app).publish([Dispatch(one, "demo.echo", queue, 5)] * 2)
    _teach(broker.batcher, "demo.echo")
    extras, duplicates = broker.batcher._take(
        broker.client, UNACKED_INDEX_KEY, UNACKED_KEY, queue_keys(queue), uuid.uuid4()
    )
    assert [e.task_id for e in extras] == [one]
    assert [d.task_id for d in duplicates] == [one, one]
