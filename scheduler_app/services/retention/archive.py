"""The optional archive: pruned rows as JSON Lines, one file per hour and table, made durable
(written and fsynced) before the rows are deleted.

A pass archives the rows it holds locked, fsyncs, then deletes them in the same transaction; if
the delete does not commit, the rows stay and are archived again by a later pass (at least once:
a reader of the archive keys rows by ``id``).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.orm import Session


class Archive:
    """Appends rows to ``<dir>/<table>/<YYYY-MM-DDTHH>.jsonl`` (UTC hour of the pruning)."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)

    def path(self, table: str, now: datetime) -> Path:
        return self.directory / table / f"{now:%Y-%m-%dT%H}.jsonl"

    def write(self, table: str, lines: Iterable[str], now: datetime) -> int:
        """Append ``lines`` (JSON documents) to the table's file of this hour and fsync it."""
        lines = list(lines)
        if not lines:
            return 0
        path = self.path(table, now)
        fresh = not path.exists()
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        with open(path, "a", encoding="utf-8") as handle:
            handle.write("".join(line + "\n" for line in lines))
            handle.flush()
            os.fsync(handle.fileno())
        if fresh:  # the new directory entry must survive a crash too
            descriptor = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(descriptor)
            finally:
                os.close(descriptor)
        return len(lines)

    def tasks(self, session: Session, ids: list[str], now: datetime) -> None:
        """Archive the tasks ``ids`` and everything that goes with them."""
        for table, column in (
            ("tasks", "id"),
            ("runs", "task_id"),
            ("task_events", "task_id"),
            ("dead_letters", "task_id"),
        ):
            rows = session.scalars(
                text(
                    f"SELECT row_to_json(x)::text FROM {table} x "
                    f"WHERE x.{column} = ANY(CAST(:ids AS uuid[])) ORDER BY x.{column}"
                ),
                {"ids": ids},
            )
            self.write(table, rows, now)

    def workflows(self, session: Session, ids: list[str], now: datetime) -> None:
        """Archive the workflows ``ids`` with their graphs (their tasks go through ``tasks``)."""
        for table, column in (
            ("workflows", "id"),
            ("workflow_nodes", "workflow_id"),
            ("workflow_edges", "workflow_id"),
        ):
            rows = session.scalars(
                text(
                    f"SELECT row_to_json(x)::text FROM {table} x "
                    f"WHERE x.{column} = ANY(CAST(:ids AS uuid[]))"
                ),
                {"ids": ids},
            )
            self.write(table, rows, now)
