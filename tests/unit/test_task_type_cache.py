"""A task type's cache of call shapes is bounded: hostile kwargs cannot grow a process for life.

Negative control: ``HARDENING_NEGATIVE_CONTROL=1`` lifts the bound on names per entry, and the
test fails (one entry then holds 50,000 names).
"""

from __future__ import annotations

import os

from scheduler_app import task_types
from scheduler_app.task_types import load_task_modules


def test_call_shapes_with_many_kwarg_names_are_not_kept(monkeypatch):
    if os.environ.get("HARDENING_NEGATIVE_CONTROL"):
        monkeypatch.setattr(task_types, "MISFIT_NAMES_KEPT", 10**9)
    echo = load_task_modules(["tasks.demo"])["demo.echo"]
    for batch in range(3):
        names = {f"k{batch}_{n}": 1 for n in range(50_000)}
        assert echo.check_call([], names) == {}  # echo takes any kwargs
    kept = max((len(names) for _, names in echo._misfits), default=0)
    assert kept <= task_types.MISFIT_NAMES_KEPT
    assert len(echo._misfits) <= task_types.MISFITS_KEPT
