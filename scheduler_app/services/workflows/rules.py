"""Trigger rules: what a pending node does given its parents' states."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from enum import StrEnum

from scheduler_app.states import TERMINAL, TaskStatus

S = TaskStatus
# A parent in one of these did not do its work: a node needing it ends upstream_failed.
BAD = frozenset({S.FAILED, S.CANCELLED, S.UPSTREAM_FAILED})
# What one_failed reacts to: a failure upstream (a cancellation is not one).
FAILURES = frozenset({S.FAILED, S.UPSTREAM_FAILED})


class Rule(StrEnum):
    """The trigger rules of a node (Airflow's names)."""

    ALL_SUCCESS = "all_success"
    ALL_DONE = "all_done"
    ONE_SUCCESS = "one_success"
    ONE_FAILED = "one_failed"
    NONE_FAILED = "none_failed"


class Decision(StrEnum):
    """What happens to a pending node now."""

    WAIT = "wait"
    RELEASE = "release"
    UPSTREAM_FAILED = "upstream_failed"
    SKIPPED = "skipped"


def decide(rule: Rule | str, parents: Iterable[TaskStatus | str] | Mapping[str, int]) -> Decision:
    """The decision for a node with ``rule`` whose parents are in these states (a list, or
    how many parents are in each state).

    A node is released as soon as its rule is met; it ends ``upstream_failed`` once the rule
    cannot be met because a parent failed, was cancelled or did not run for that reason, and
    ``skipped`` once it cannot be met for any other reason (e.g. ``one_failed`` when every
    parent succeeded, or ``all_success`` below a skipped parent).
    """
    counts = Counter(
        {S(k): n for k, n in parents.items() if n}
        if isinstance(parents, Mapping)
        else [S(p) for p in parents]
    )
    states = set(counts)
    done = states <= TERMINAL
    bad = bool(states & BAD)
    rule = Rule(rule)
    if rule is Rule.ALL_DONE:
        return Decision.RELEASE if done else Decision.WAIT
    if rule is Rule.ALL_SUCCESS:
        if bad:
            return Decision.UPSTREAM_FAILED
        if S.SKIPPED in states:
            return Decision.SKIPPED
        return Decision.RELEASE if done else Decision.WAIT
    if rule is Rule.NONE_FAILED:
        if bad:
            return Decision.UPSTREAM_FAILED
        return Decision.RELEASE if done else Decision.WAIT
    if rule is Rule.ONE_SUCCESS:
        if S.SUCCEEDED in states:
            return Decision.RELEASE
        if not done:
            return Decision.WAIT
        return Decision.UPSTREAM_FAILED if bad else Decision.SKIPPED
    # one_failed
    if bool(states & FAILURES):
        return Decision.RELEASE
    if not done:
        return Decision.WAIT
    return Decision.UPSTREAM_FAILED if bad else Decision.SKIPPED
