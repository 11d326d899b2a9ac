"""``python -m bench [--quick]``: start everything, run every scenario, print the table."""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
import traceback
from dataclasses import replace
from pathlib import Path

from bench.environment import Environment
from bench.machine import describe_machine, load_average
from bench.plan import FULL, QUICK, with_reps
from bench.report import Row, render

# Run order: memory last, since it leaves 100k scheduled tasks in the ledger and kills a worker.
SCENARIOS = {
    "1": "submit",
    "2": "batch",
    "3": "execution",
    "4": "latency",
    "5": "delay",
    "7": "peers",
    "8": "workflows",
    "9": "schedules",
    "10": "scaling",
    "12": "notifications",
    "6": "memory",
    "11": "ledger",
}
# Run only when named (--only 11): it fills the ledger with millions of rows.
OPT_IN = {"11"}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument(
        "--quick", "--smoke", action="store_true", help="tiny sizes: every row, in under a minute"
    )
    parser.add_argument("--reps", type=int, help="repetitions per scenario (default: 3, quick 2)")
    parser.add_argument(
        "--only", help="comma-separated scenario numbers to run (default: all)", default=""
    )
    parser.add_argument(
        "--schedule-seconds",
        type=float,
        help="length of the schedules rows' window (default: 60, quick 5)",
    )
    parser.add_argument("--json", type=Path, help="also write the rows and machine as JSON here")
    parser.add_argument("--keep", action="store_true", help="keep the logs directory")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the bench; 0 when every scenario produced its rows, 1 otherwise."""
    args = parse_args(argv)
    plan = with_reps(QUICK if args.quick else FULL, args.reps)
    if args.schedule_seconds:
        plan = replace(plan, schedule_seconds=max(2.0, args.schedule_seconds))
    named = args.only.split(",") if args.only else []
    wanted = [key for key in SCENARIOS if key in named or (not named and key not in OPT_IN)]
    began = time.monotonic()
    machine = describe_machine()
    load_before = load_average()
    env = Environment()
    rows: list[Row] = []
    failures: list[str] = []
    timings: dict[str, float] = {}
    log(f"bench: {plan.name} run, {plan.reps} repetitions; logs in {env.logdir}")
    try:
        env.start()
        log(f"bench: services up in {time.monotonic() - began:.1f}s")
        for key in wanted:
            module = importlib.import_module(f"bench.scenarios.{SCENARIOS[key]}")
            started = time.monotonic()
            log(f"bench: [{key}] {module.TITLE} ...")
            try:
                rows += module.run(env, plan)
            except Exception as exc:
                failures.append(f"{key} {module.TITLE}: {exc}")
                traceback.print_exc()
                rows.append(Row(key, f"{module.TITLE}: FAILED ({exc})"[:120], "-"))
            timings[key] = time.monotonic() - started
            log(f"bench: [{key}] done in {timings[key]:.1f}s (load {load_average()[0]:.2f})")
    finally:
        env.close()
    elapsed = time.monotonic() - began
    rows.sort(key=lambda row: row.key)
    print(header(plan, machine, load_before, load_average(), elapsed, timings))
    print()
    print(render(rows))
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "plan": plan.name,
                    "reps": plan.reps,
                    "machine": machine,
                    "elapsed": elapsed,
                    "timings": timings,
                    "rows": [row.as_dict() for row in rows],
                },
                indent=2,
                default=str,
            )
        )
    if not args.keep and not failures:
        env.remove_workdir()
    if failures:
        log("bench: failed scenarios:\n  " + "\n  ".join(failures))
        return 1
    return 0


def header(plan, machine, load_before, load_after, elapsed, timings) -> str:
    """The lines above the table: run, machine, versions, noise."""
    lines = [
        f"# bench: {plan.name} run, {plan.reps} repetitions, {elapsed:.0f} s "
        f"({', '.join(f'[{k}] {v:.0f}s' for k, v in timings.items())})",
        f"machine: {machine['cpu']}, {machine['nproc']} CPUs, {machine['memory_gib']:.0f} GiB; "
        f"{machine['os']}",
        f"versions: {machine['versions']}",
        "noise: load average (1/5/15 min) "
        f"{'/'.join(f'{v:.2f}' for v in load_before)} before, "
        f"{'/'.join(f'{v:.2f}' for v in load_after)} after; "
        "spread = (max - min) / median over the repetitions",
        "ratio = ours / raw (section 7: peer / raw Celery); medians over the repetitions",
    ]
    return "\n".join(lines)


def log(message: str) -> None:
    """Progress on stderr (stdout carries the table)."""
    print(message, file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
