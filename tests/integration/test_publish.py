"""Batch publishing pipelines its LPUSHes; the messages must be exactly what kombu would push."""

from __future__ import annotations

import json
import uuid

from scheduler_app.services.dispatch import Dispatch


def _messages(client, key):
    return [json.loads(raw) for raw in client.lrange(key, 0, -1)]


def test_pipelined_batch_lands_on_each_priority_list_like_single_publishes(app, redis_server):
    dispatcher = app.extensions["scheduler"].dispatcher
    client = redis_server.client()
    queue = f"pub-{uuid.uuid4().hex[:8]}"
    batch = [
        Dispatch(id=uuid.uuid4(), task="demo.echo", queue=queue, priority=p) for p in (9, 5, 0)
    ]
    single = Dispatch(id=uuid.uuid4(), task="demo.echo", queue=queue, priority=5)
    assert dispatcher.publish(batch) == 3
    assert dispatcher.publish([single]) == 1  # the one-message path: kombu's own _put

    assert [m["headers"]["id"] for m in _messages(client, queue)] == [str(batch[0].id)]
    assert [m["headers"]["id"] for m in _messages(client, f"{queue}:9")] == [str(batch[2].id)]
    pushed, reference = sorted(
        _messages(client, f"{queue}:4"), key=lambda m: m["headers"]["id"] != str(batch[1].id)
    )
    assert pushed["headers"]["id"] == str(batch[1].id)
    assert reference["headers"]["id"] == str(single.id)
    # Same shape as kombu's own push, field for field, apart from per-message values.
    assert set(pushed) == set(reference)
    assert set(pushed["properties"]) == set(reference["properties"])
    assert pushed["properties"]["delivery_info"] == reference["properties"]["delivery_info"]
    assert pushed["properties"]["priority"] == reference["properties"]["priority"] == 4
    assert pushed["headers"]["ledger_attempt"] == 1
    client.delete(queue, f"{queue}:4", f"{queue}:9")
