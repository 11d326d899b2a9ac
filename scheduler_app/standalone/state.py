"""What a standalone run leaves in its data dir for other commands: where its services are.

``<data-dir>/standalone.json`` holds ``{api_url, broker_url, database_url, flower_url, admin}``
while the run holds ``<data-dir>/standalone.lock``; ``manage.py`` commands read it so that
``python manage.py create-client`` reaches the running platform's database without copying URLs.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

STATE_FILE = "standalone.json"
LOCK_FILE = "standalone.lock"
# The settings a command takes from a running standalone, unless the environment sets them.
SERVICE_SETTINGS = {"database_url": "SCHEDULER_DATABASE_URL", "broker_url": "SCHEDULER_BROKER_URL"}


class StandaloneStateError(RuntimeError):
    """The data dir names a standalone that is not running (or not ready yet)."""


def read_state(data_dir: Path) -> dict[str, Any]:
    """The standalone.json of data_dir, or {} when there is none (or it is not a JSON object)."""
    try:
        data = json.loads((data_dir / STATE_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def is_running(data_dir: Path) -> bool:
    """True while a standalone run holds data_dir's lock."""
    try:
        fd = os.open(data_dir / LOCK_FILE, os.O_RDONLY)
    except OSError:
        return False
    try:
        # Held for an instant only; a run starting in that instant retries its own lock.
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    else:
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


def service_environ(data_dir: Path, environ: Mapping[str, str]) -> dict[str, str]:
    """environ plus the database and broker URLs of the standalone running in data_dir.

    Unchanged when environ sets ``SCHEDULER_DATABASE_URL`` or data_dir holds no standalone.
    Raises StandaloneStateError when data_dir's standalone is stopped or still starting.
    """
    result = dict(environ)
    if result.get("SCHEDULER_DATABASE_URL"):
        return result
    state = read_state(data_dir)
    running = is_running(data_dir)
    if not state and not running:
        return result
    hint = "or set SCHEDULER_DATABASE_URL"
    if not running:
        raise StandaloneStateError(
            f"the standalone platform of {data_dir} is not running: start it (make run), {hint}"
        )
    if not state.get("database_url"):
        raise StandaloneStateError(
            f"the standalone platform of {data_dir} is still starting: try again, {hint}"
        )
    for key, variable in SERVICE_SETTINGS.items():
        if state.get(key) and not result.get(variable):
            result[variable] = state[key]
    return result
