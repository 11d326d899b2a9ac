"""Output: the API's JSON on stdout with --json, rich tables otherwise; messages on stderr."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterable, Sequence
from typing import Any

from rich.console import Console
from rich.table import Table

# Piped output is not cut to 80 columns: ids and timestamps stay whole for grep and scripts.
PIPE_WIDTH = 200
out = Console(width=None if os.isatty(1) else PIPE_WIDTH)
err = Console(stderr=True)


def emit_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, indent=2, sort_keys=True) + "\n")
    sys.stdout.flush()


def cell(value: Any, width: int = 60) -> str:
    if value is None:
        return "-"
    if isinstance(value, dict | list):
        text = json.dumps(value, separators=(",", ":"), sort_keys=True)
    else:
        text = str(value)
    return text if len(text) <= width else text[: width - 1] + "…"


def table(rows: Iterable[dict[str, Any]], columns: Sequence[str], title: str | None = None) -> None:
    grid = Table(title=title, header_style="bold")
    for column in columns:
        grid.add_column(column, overflow="fold")
    count = 0
    for row in rows:
        grid.add_row(*(cell(row.get(column)) for column in columns))
        count += 1
    out.print(grid)
    if count == 0:
        err.print("(none)")


def record(value: dict[str, Any], title: str | None = None, width: int = 200) -> None:
    """One resource as a two-column table, field by field."""
    grid = Table(title=title, show_header=False)
    grid.add_column("field", style="bold")
    grid.add_column("value", overflow="fold")
    for key, item in value.items():
        grid.add_row(key, cell(item, width))
    out.print(grid)
