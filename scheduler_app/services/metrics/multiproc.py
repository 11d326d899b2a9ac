"""Prometheus multiprocess mode: the directory where every process of a server writes its values.

prometheus_client picks its value store when it is first imported, from PROMETHEUS_MULTIPROC_DIR,
so a server's entry point calls :func:`prepare` before anything imports prometheus_client.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

ENV = "PROMETHEUS_MULTIPROC_DIR"
_created: list[Path] = []


def prepare(prefix: str, sub: str | None = None) -> Path:
    """Use (and empty) the launcher's PROMETHEUS_MULTIPROC_DIR, or a new private directory.

    ``sub`` makes a directory of its own inside the launcher's, for servers that may share one
    (several worker instances in one container). Values left by an earlier run are removed: a
    recycled pid would otherwise add them to the new process's.
    """
    base = os.environ.get(ENV)
    if base:
        path = Path(base) / sub if sub else Path(base)
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
    else:
        path = Path(tempfile.mkdtemp(prefix=f"{prefix}-metrics-"))
        _created.append(path)
    for stale in path.glob("*.db"):
        stale.unlink(missing_ok=True)
    os.environ[ENV] = str(path)
    values = sys.modules.get("prometheus_client.values")
    if values is not None:
        # Imported already (the celery command line loads Flower's plugin, which imports it):
        # metrics made from now on take the multiprocess store (metrics.py reads
        # values.ValueClass when a metric is made).
        values.ValueClass = values.get_value_class()
    return path


def enabled() -> bool:
    return bool(os.environ.get(ENV))


def cleanup() -> None:
    """Remove the directories :func:`prepare` created (not a launcher's)."""
    while _created:
        shutil.rmtree(_created.pop(), ignore_errors=True)
