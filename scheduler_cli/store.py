"""Where `scheduler login` keeps its sessions: ``$XDG_CONFIG_HOME/scheduler/config.json``.

The directory is 0700 and the file 0600 (it holds tokens). One entry per profile:
``{url, client_id, access_token, refresh_token, expires_at}``; ``current`` names the profile
used when none is given. The client secret is never stored: a session whose refresh token has
expired too needs ``scheduler login`` again.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

PROFILE_ENV = "SCHEDULER_CLI_PROFILE"


def config_dir() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "scheduler"


def config_path() -> Path:
    return config_dir() / "config.json"


def load() -> dict[str, Any]:
    path = config_path()
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {"current": None, "profiles": {}}
    except (OSError, ValueError) as exc:
        raise StoreError(f"cannot read {path}: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("profiles"), dict):
        raise StoreError(f"{path} is not a scheduler CLI config")
    return data


def save(data: dict[str, Any]) -> None:
    """Write atomically, private from the first byte (no window where the file is 0644)."""
    directory = config_dir()
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(directory, 0o700)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".config-", suffix=".json")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w") as out:
            json.dump(data, out, indent=2, sort_keys=True)
        os.replace(tmp, config_path())
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def profile_name(explicit: str | None, data: dict[str, Any]) -> str:
    return explicit or os.environ.get(PROFILE_ENV) or data.get("current") or "default"


class StoreError(Exception):
    """The config file is unreadable or malformed."""
