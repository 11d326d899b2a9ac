"""9. Schedules: many interval schedules for a while, ours vs celery beat with the same entries.

Ours: ``schedule_count`` schedules (``POST /api/v1/schedules``, interval ``schedule_interval``,
``overlap: allow``, tasks to the sink queue no worker consumes), all starting at the same instant
T0 and ending ``schedule_seconds`` later, fired by the run's scheduler process. Raw: celery beat
(``bench/beat_app.py``) with as many interval entries of ``bench.noop`` to the raw sink, started
before T0 and counted over the same window, in the same seconds as ours.

- lag: ours a task's ``created_at`` minus its slot (``run_at``); beat the time it decided a send
  minus the time it held the entry due (its last run + the interval).
- missed: slots of the window with no task (ours: per schedule, each slot T0 + k x interval; beat:
  per entry, the window's length / interval minus the sends in it, when positive).
- doubled: ours tasks beyond one per (schedule, slot); beat sends of an entry less than half an
  interval after its previous send.

Then the same with a second scheduler process of ours and a second beat (what "two beats fire
everything twice" means). One repetition (each takes ``schedule_seconds``).
"""

from __future__ import annotations

import itertools
import sys
import time
import uuid
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta

import requests

from bench.environment import OURS_SINK, Environment
from bench.plan import Plan
from bench.report import Row, Target, percentile
from bench.services import BenchError

TITLE = "schedules"
LEAD = 4.0  # seconds from the creation of the schedules to T0, plus PER_SCHEDULE each
PER_SCHEDULE = 0.05
SETTLE = 3.0  # seconds after the window before counting


def _start_at(plan: Plan) -> datetime:
    lead = LEAD + PER_SCHEDULE * plan.schedule_count
    return (datetime.now(UTC) + timedelta(seconds=lead)).replace(microsecond=0)


def create_ours(env: Environment, plan: Plan, t0: datetime) -> list[str]:
    """The schedules of one round; their ids."""
    end = t0 + timedelta(seconds=plan.schedule_seconds - plan.schedule_interval / 2)
    ids = []
    with requests.Session() as http:
        for index in range(plan.schedule_count):
            response = http.post(
                env.ours_url("/api/v1/schedules"),
                json={
                    "name": f"bench-{index}",
                    "task": "demo.echo",
                    "args": [index],
                    "queue": OURS_SINK,
                    "interval": plan.schedule_interval,
                    "overlap": "allow",
                    "start_at": t0.isoformat(),
                    "end_at": end.isoformat(),
                },
                headers=env.auth,
                timeout=30,
            )
            if response.status_code != 201:
                raise BenchError(f"schedule: {response.status_code} {response.text[:300]}")
            ids.append(response.json()["id"])
    return ids


def count_ours(env: Environment, plan: Plan, ids: list[str], t0: datetime) -> dict:
    """Lags (s), missed and doubled slots of the round's schedules."""
    uuids = [uuid.UUID(i) for i in ids]
    rows = env.ledger.rows(
        "SELECT schedule_id, run_at, created_at FROM tasks WHERE schedule_id = ANY(:ids)",
        ids=uuids,
    )
    per_slot = Counter((row.schedule_id, row.run_at) for row in rows)
    slots = int(plan.schedule_seconds / plan.schedule_interval)
    expected = {
        (sid, t0 + timedelta(seconds=k * plan.schedule_interval))
        for sid in uuids
        for k in range(slots)
    }
    with requests.Session() as http:
        for schedule_id in ids:
            http.delete(env.ours_url(f"/api/v1/schedules/{schedule_id}"), headers=env.auth)
    return {
        "lags": [(row.created_at - row.run_at).total_seconds() for row in rows],
        "missed": len(expected - set(per_slot)),
        "doubled": sum(n - 1 for n in per_slot.values() if n > 1),
        "expected": len(expected),
    }


def start_beats(env: Environment, plan: Plan, count: int) -> list:
    """``count`` beat processes with the round's entries, each logging its sends."""
    beats = []
    for index in range(count):
        log = env.workdir / f"beat-{uuid.uuid4().hex[:6]}.log"
        child = env.spawn(
            f"beat-{index}",
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "bench.beat_app",
                "beat",
                "--scheduler",
                "bench.beat_app:RecordingScheduler",
                "--loglevel",
                "INFO",
                "--schedule",
                str(env.workdir / f"beat-{index}.db"),
            ],
            env.raw_env(
                BENCH_BEAT_ENTRIES=str(plan.schedule_count),
                BENCH_BEAT_INTERVAL=str(plan.schedule_interval),
                BENCH_BEAT_LOG=str(log),
            ),
        )
        child.beat_log = log
        beats.append(child)
    for child in beats:
        child.wait_for_log("beat: Starting", 60)
    return beats


def count_beats(env: Environment, plan: Plan, beats: list, t0: datetime) -> dict:
    """Lags (s), missed and doubled sends of the beats in the window [t0, t0 + seconds)."""
    start = t0.timestamp()
    stop = start + plan.schedule_seconds
    sends: dict[str, list[float]] = defaultdict(list)
    lags = []
    for child in beats:
        env.retire(child)
        for line in child.beat_log.read_text().splitlines():
            name, due, sent = line.split()
            if start <= float(sent) < stop:
                sends[name].append(float(sent))
                lags.append(float(sent) - float(due))
    slots = int(plan.schedule_seconds / plan.schedule_interval)
    half = plan.schedule_interval / 2
    missed = doubled = 0
    for index in range(plan.schedule_count):
        times = sorted(sends.get(f"entry-{index}", []))
        again = sum(1 for a, b in itertools.pairwise(times) if b - a < half)
        doubled += again
        missed += max(0, slots - (len(times) - again))
    return {"lags": lags, "missed": missed, "doubled": doubled}


def one_round(env: Environment, plan: Plan, processes: int) -> tuple[dict, dict]:
    """Ours (with ``processes`` scheduler processes) and beat (as many) over the same window."""
    extra = [
        env.spawn(f"scheduler-{n + 2}", [sys.executable, "manage.py", "scheduler"], env.ours_env())
        for n in range(processes - 1)
    ]
    for child in extra:
        child.wait_for_log("scheduler started", 60)
    beats = start_beats(env, plan, processes)
    t0 = _start_at(plan)
    ids = create_ours(env, plan, t0)
    if datetime.now(UTC) > t0:
        raise BenchError("creating the schedules took longer than the lead; raise PER_SCHEDULE")
    time.sleep(max(0.0, (t0 - datetime.now(UTC)).total_seconds()) + plan.schedule_seconds + SETTLE)
    raw = count_beats(env, plan, beats, t0)
    ours = count_ours(env, plan, ids, t0)
    for child in extra:
        env.retire(child)
    env.purge_sinks()
    return ours, raw


def run(env: Environment, plan: Plan) -> list[Row]:
    """Rows 9a-9e."""
    what = (
        f"{plan.schedule_count} schedules every {plan.schedule_interval:g} s for "
        f"{plan.schedule_seconds:g} s"
    )
    p50 = Row("9a", f"{what}: slot -> task created lag p50, ours vs celery beat", "ms")
    p99 = Row(
        "9b",
        f"{what}: lag p99, ours vs celery beat",
        "ms",
        target=Target("ours<=", 100.0),
    )
    missed = Row(
        "9c", f"{what}: missed slots, ours vs celery beat", "slots", target=Target("ours<=", 0)
    )
    doubled = Row(
        "9d", f"{what}: doubled slots, ours vs celery beat", "slots", target=Target("ours<=", 0)
    )
    two = Row(
        "9e",
        f"{what}: doubled slots with 2 schedulers, ours vs 2 celery beats",
        "slots",
        target=Target("ours<=", 0),
    )
    ours, raw = one_round(env, plan, 1)
    p50.ours.append(percentile(ours["lags"], 0.5) * 1000)
    p50.raw.append(percentile(raw["lags"], 0.5) * 1000)
    p99.ours.append(percentile(ours["lags"], 0.99) * 1000)
    p99.raw.append(percentile(raw["lags"], 0.99) * 1000)
    missed.ours.append(ours["missed"])
    missed.raw.append(raw["missed"])
    doubled.ours.append(ours["doubled"])
    doubled.raw.append(raw["doubled"])
    ours2, raw2 = one_round(env, plan, 2)
    two.ours.append(ours2["doubled"])
    two.raw.append(raw2["doubled"])
    p50.note = (
        f"one round each, {ours['expected']} slots; ours: tasks.created_at - run_at, the "
        "run's one scheduler process (schedule_interval setting); beat: the time it decided "
        "a send - the time it held the entry due; both sides in the same seconds"
    )
    two.note = (
        f"a second scheduler process beside the first (missed: {ours2['missed']}); two beat "
        f"processes with the same entries (missed: {raw2['missed']})"
    )
    return [p50, p99, missed, doubled, two]
