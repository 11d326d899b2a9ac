"""How much each scenario does: the full run (``make bench``) and the quick one (``--quick``)."""

from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True)
class Plan:
    """Sizes of one run; every scenario reads its own."""

    name: str
    reps: int
    # repetitions of the scenarios that wait on clocks or start processes (5. delay, 7. peers)
    slow_reps: int
    # 1. single submit under load: bounded in count and in time, per repetition and side
    submit_connections: int
    submit_requests: int
    submit_seconds: float
    submit_warmup: int
    raw_loop: int  # apply_async calls of the raw loops (rows 1b, 2a, 2b, 7a, 7b)
    # 2. bulk submit: requests per repetition
    batch100_requests: int
    batch1000_requests: int
    # 3. execution: pre-queued no-op tasks per repetition
    drain_tasks: int
    # 3h: pre-queued 20 ms tasks per drain
    sleep_tasks: int
    # 8. scaling: pre-queued no-op tasks per drain (1 and 2 worker processes)
    scale_tasks: int
    # 4. latency: sequential submissions per repetition and side
    latency_samples: int
    # 5. delay precision: tasks per repetition and side, and the time between their due times
    delay_tasks: int
    delay_spacing: float
    # 6. memory: tasks scheduled an hour ahead (one repetition: it is the costly one)
    memory_tasks: int
    memory_consume_seconds: float
    # 7. peers: enqueued and drained jobs per repetition
    peer_enqueue: int
    peer_drain: int
    rq_drain: int
    # 8. workflows: nodes of the fan-in (plus its join), levels of the chain
    fanin_nodes: int
    chain_levels: int
    # 9. schedules: how many, at which interval (s), for how long (s)
    schedule_count: int
    schedule_interval: float
    schedule_seconds: float
    # 12. notifications: tasks with a webhook per repetition (and as many without)
    notify_tasks: int
    # 11. the ledger at scale (opt-in: --only 11): finished tasks generated in the ledger
    ledger_rows: int = 5_000_000


FULL = Plan(
    name="full",
    reps=3,
    slow_reps=3,
    submit_connections=8,
    submit_requests=4000,
    submit_seconds=6.0,
    submit_warmup=100,
    raw_loop=4000,
    batch100_requests=30,
    batch1000_requests=4,
    drain_tasks=1000,
    sleep_tasks=200,
    scale_tasks=5_000,
    latency_samples=100,
    delay_tasks=50,
    delay_spacing=0.04,
    memory_tasks=100_000,
    memory_consume_seconds=180.0,
    peer_enqueue=3000,
    peer_drain=1000,
    rq_drain=300,
    fanin_nodes=1000,
    chain_levels=100,
    schedule_count=200,
    schedule_interval=1.0,
    schedule_seconds=60.0,
    notify_tasks=1000,
)

QUICK = Plan(
    name="quick",
    reps=2,
    slow_reps=1,
    submit_connections=8,
    submit_requests=80,
    submit_seconds=2.0,
    submit_warmup=16,
    raw_loop=100,
    batch100_requests=2,
    batch1000_requests=1,
    drain_tasks=40,
    sleep_tasks=10,
    scale_tasks=60,
    latency_samples=5,
    delay_tasks=4,
    delay_spacing=0.05,
    memory_tasks=300,
    memory_consume_seconds=20.0,
    peer_enqueue=100,
    peer_drain=60,
    rq_drain=20,
    fanin_nodes=50,
    chain_levels=10,
    schedule_count=20,
    schedule_interval=1.0,
    schedule_seconds=5.0,
    ledger_rows=20_000,
    notify_tasks=40,
)


def with_reps(plan: Plan, reps: int | None) -> Plan:
    """``plan`` with ``reps`` repetitions for every scenario (unchanged when None)."""
    return plan if reps is None else replace(plan, reps=max(1, reps), slow_reps=max(1, reps))
