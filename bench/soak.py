"""``python -m bench.soak``: a steady intake with a short retention; the database size over time.

The platform runs as in ``python -m bench`` (its API, scheduler and worker), with every task
kept ``--retention`` seconds once finished. Tasks are submitted in one batch a second at
``--rate`` tasks/s, drained by the worker, and pruned by the scheduler; every ``--sample``
seconds the sizes of the database and of the ledger's tables are recorded. With pruning keeping
up, the size levels off after the retention (plus the time a partition of ``task_events`` waits
to be dropped: a day past the shortest retention, so in a short soak the events grow — the
``task_events`` column — while tasks and runs level off).

    python -m bench.soak --minutes 20 --retention 120 --rate 200
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import requests

from bench.environment import OURS_QUEUE, Environment
from bench.services import BenchError

SIZES = """
SELECT pg_database_size(current_database()),
       pg_total_relation_size('tasks'),
       (SELECT coalesce(sum(pg_total_relation_size(i.inhrelid)), 0) FROM pg_inherits i
        WHERE i.inhparent = 'task_events'::regclass),
       pg_total_relation_size('runs'),
       (SELECT count(*) FROM tasks)
"""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__)
    parser.add_argument("--minutes", type=float, default=20.0)
    parser.add_argument("--retention", type=float, default=120.0, help="seconds (succeeded)")
    parser.add_argument("--rate", type=int, default=200, help="tasks submitted per second")
    parser.add_argument("--sample", type=float, default=30.0, help="seconds between samples")
    parser.add_argument("--json", help="also write the samples here")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    env = Environment()
    env.settings_env = {
        "SCHEDULER_RETENTION_SUCCEEDED": str(args.retention),
        "SCHEDULER_PRUNE_INTERVAL": str(min(30.0, max(1.0, args.retention / 4))),
    }
    samples: list[dict[str, float]] = []
    body = json.dumps({"tasks": [{"task": "demo.echo", "queue": OURS_QUEUE}] * args.rate})
    try:
        env.start()
        headers = {**env.auth, "Content-Type": "application/json"}
        url = env.ours_url("/api/v1/tasks/batch")
        began = time.monotonic()
        next_sample = began
        with requests.Session() as session:
            while time.monotonic() - began < args.minutes * 60:
                tick = time.monotonic()
                response = session.post(url, data=body, headers=headers, timeout=60)
                if response.status_code == 401:  # the access token's lifetime is shorter
                    env.renew_token()
                    headers = {**env.auth, "Content-Type": "application/json"}
                    response = session.post(url, data=body, headers=headers, timeout=60)
                if response.status_code != 202:
                    raise BenchError(f"batch: {response.status_code} {response.text[:300]}")
                if tick >= next_sample:
                    database, tasks, events, runs, rows = env.ledger.rows(SIZES)[0]
                    samples.append(
                        {
                            "minute": (tick - began) / 60,
                            "database_mb": database / 2**20,
                            "tasks_mb": tasks / 2**20,
                            "task_events_mb": float(events) / 2**20,
                            "runs_mb": runs / 2**20,
                            "tasks": rows,
                        }
                    )
                    print(f"soak: {samples[-1]}", file=sys.stderr, flush=True)
                    next_sample += args.sample
                time.sleep(max(0.0, 1.0 - (time.monotonic() - tick)))
    finally:
        env.close()
    print(f"# soak: {args.minutes:g} min at {args.rate} tasks/s, retention {args.retention:g} s\n")
    print("| minute | database MB | tasks MB | task_events MB | runs MB | tasks rows |")
    print("|---|---|---|---|---|---|")
    for s in samples:
        print(
            f"| {s['minute']:.1f} | {s['database_mb']:.1f} | {s['tasks_mb']:.1f} "
            f"| {s['task_events_mb']:.1f} | {s['runs_mb']:.1f} | {s['tasks']:,} |"
        )
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(samples, handle, indent=2)
    if not samples:
        return 1
    env.remove_workdir()
    return 0


if __name__ == "__main__":
    sys.exit(main())
