"""Trigger rules and graph checks, as pure functions."""

from __future__ import annotations

import pytest

from scheduler_app.services.workflows.graph import find_cycle, graph_errors, mermaid
from scheduler_app.services.workflows.rules import Decision, decide
from scheduler_app.states import ALLOWED_SOURCES, TERMINAL, TaskStatus

R, W, U, S = Decision.RELEASE, Decision.WAIT, Decision.UPSTREAM_FAILED, Decision.SKIPPED


@pytest.mark.parametrize(
    ("rule", "parents", "expected"),
    [
        ("all_success", ["succeeded", "succeeded"], R),
        ("all_success", ["succeeded", "running"], W),
        ("all_success", ["failed", "running"], U),  # decided before the sibling ends
        ("all_success", ["cancelled", "succeeded"], U),
        ("all_success", ["skipped", "succeeded"], S),
        ("all_done", ["failed", "skipped", "cancelled"], R),
        ("all_done", ["failed", "queued"], W),
        ("one_success", ["running", "succeeded"], R),
        ("one_success", ["failed", "running"], W),
        ("one_success", ["failed", "skipped"], U),
        ("one_success", ["skipped", "skipped"], S),
        ("one_failed", ["running", "failed"], R),
        ("one_failed", ["upstream_failed", "pending"], R),
        ("one_failed", ["succeeded", "succeeded"], S),
        ("one_failed", ["succeeded", "running"], W),
        ("one_failed", ["cancelled", "succeeded"], U),
        ("none_failed", ["succeeded", "skipped"], R),
        ("none_failed", ["succeeded", "failed"], U),
        ("none_failed", ["succeeded", "pending"], W),
    ],
)
def test_trigger_rule_decisions(rule, parents, expected):
    assert decide(rule, parents) == expected
    counts: dict[str, int] = {}
    for status in parents:
        counts[status] = counts.get(status, 0) + 1
    assert decide(rule, counts) == expected  # the consumer's form: counts per state


def test_skipped_is_terminal_and_entered_from_pending_only():
    assert TaskStatus.SKIPPED in TERMINAL
    assert ALLOWED_SOURCES[TaskStatus.SKIPPED] == {TaskStatus.PENDING}


def _nodes(graph: dict[str, list[str]]) -> list[dict]:
    return [{"id": n, "depends_on": parents} for n, parents in graph.items()]


def test_graph_errors_name_the_nodes():
    assert graph_errors(_nodes({"a": [], "b": ["a"]})) == {}
    assert graph_errors([{"id": "a"}, {"id": "a"}]) == {
        "nodes.1.id": ["duplicate node id 'a' (also nodes.0)"]
    }
    assert graph_errors(_nodes({"a": ["zz"]})) == {"nodes.0.depends_on": ["unknown node 'zz'"]}
    errors = graph_errors(_nodes({"a": ["c"], "b": ["a"], "c": ["b"], "d": []}))
    cycle = errors["nodes"][0]
    assert cycle.startswith("cycle: ") and {"a", "b", "c"} <= set(cycle[7:].split(" -> "))
    assert "d" not in cycle[7:].split(" -> ")
    assert graph_errors(_nodes({"self": ["self"]})) == {"nodes": ["cycle: self -> self"]}


def test_a_long_chain_is_checked_without_recursion():
    chain = {f"n{i}": [f"n{i - 1}"] if i else [] for i in range(10_000)}
    assert find_cycle(chain) is None
    chain["n0"] = ["n9999"]
    assert len(find_cycle(chain)) == 10_001


def test_mermaid_colours_nodes_and_escapes_labels():
    text = mermaid([("a", "succeeded"), ('b"<x>#', "failed")], [("a", 'b"<x>#')])
    assert text.startswith("flowchart TD\n")
    assert ":::succeeded" in text and ":::failed" in text
    assert "#quot;#lt;x#gt;#35;" in text and "-->" in text
    assert "classDef upstream_failed" in text and "classDef skipped" in text
