"""The shape of a workflow: checking a submitted graph, and drawing one (Mermaid)."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

# Mermaid classes per task state (fill, stroke): what the graph colours each node by.
COLOURS = {
    "pending": ("#eeeeee", "#999999"),
    "scheduled": ("#e8eaf6", "#5c6bc0"),
    "queued": ("#e3f2fd", "#1e88e5"),
    "running": ("#fff8e1", "#ffb300"),
    "retrying": ("#fff3e0", "#fb8c00"),
    "succeeded": ("#e8f5e9", "#43a047"),
    "failed": ("#ffebee", "#e53935"),
    "cancelled": ("#f5f5f5", "#616161"),
    "upstream_failed": ("#fce4ec", "#d81b60"),
    "skipped": ("#fafafa", "#bdbdbd"),
}


def graph_errors(nodes: Sequence[Mapping[str, Any]]) -> dict[str, list[str]]:
    """Errors of the graph, naming the nodes: duplicate ids, unknown parents, cycles."""
    errors: dict[str, list[str]] = {}
    seen: dict[str, int] = {}
    for index, node in enumerate(nodes):
        if node["id"] in seen:
            errors[f"nodes.{index}.id"] = [
                f"duplicate node id {node['id']!r} (also nodes.{seen[node['id']]})"
            ]
        else:
            seen[node["id"]] = index
    for index, node in enumerate(nodes):
        unknown = [p for p in node.get("depends_on") or [] if p not in seen]
        if unknown:
            errors[f"nodes.{index}.depends_on"] = [f"unknown node {p!r}" for p in unknown]
    if errors:
        return errors
    cycle = find_cycle({n["id"]: list(n.get("depends_on") or []) for n in nodes})
    if cycle:
        errors["nodes"] = [f"cycle: {' -> '.join(cycle)}"]
    return errors


def find_cycle(parents: Mapping[str, Sequence[str]]) -> list[str] | None:
    """A cycle of the graph as node ids (first repeated at the end), or None.

    Iterative depth-first search: a 10,000-node chain must not hit the recursion limit.
    """
    white, grey, black = 0, 1, 2
    colour = dict.fromkeys(parents, white)
    for start in parents:
        if colour[start] != white:
            continue
        path = [start]
        stack = [iter(parents[start])]
        colour[start] = grey
        while stack:
            step = next(stack[-1], None)
            if step is None:
                colour[path.pop()] = black
                stack.pop()
                continue
            if colour[step] == grey:
                cycle = [*path[path.index(step) :], step]
                return list(reversed(cycle))  # parent -> child order
            if colour[step] == white:
                colour[step] = grey
                path.append(step)
                stack.append(iter(parents[step]))
    return None


_UNSAFE = re.compile(r"[^A-Za-z0-9_]")
# Mermaid's own entity codes: a node id may hold any printable character.
_ENTITIES = {"#": "#35;", '"': "#quot;", "<": "#lt;", ">": "#gt;", "&": "#amp;"}


def mermaid(nodes: Sequence[tuple[str, str]], edges: Sequence[tuple[str, str]]) -> str:
    """A Mermaid ``flowchart`` of ``nodes`` ((node id, status)) and ``edges`` ((parent, child)),
    each node coloured by its status."""
    ids = {node: f"n{index}_{_UNSAFE.sub('_', node)[:40]}" for index, (node, _) in enumerate(nodes)}
    lines = ["flowchart TD"]
    for node, status in nodes:
        label = "".join(_ENTITIES.get(ch, ch) for ch in node)
        lines.append(f'    {ids[node]}["{label}<br/>{status}"]:::{status}')
    for parent, child in edges:
        lines.append(f"    {ids[parent]} --> {ids[child]}")
    for status, (fill, stroke) in COLOURS.items():
        lines.append(f"    classDef {status} fill:{fill},stroke:{stroke}")
    return "\n".join(lines) + "\n"
