"""What the numbers were measured on: CPU, memory, load, versions."""

from __future__ import annotations

import os
import platform
import subprocess
from importlib import metadata

import psutil


def load_average() -> tuple[float, float, float]:
    """The 1, 5 and 15 minute load averages."""
    return os.getloadavg()


def cpu_model() -> str:
    """The CPU's model name."""
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "-"


def _command_version(argv: list[str]) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return "-"
    return out.split()[2] if out.count(" ") >= 2 else out.strip() or "-"


def describe_machine() -> dict:
    """A JSON-able description of the machine and of the versions under test."""
    from bench.services import redis_server_binary

    versions = {
        "python": platform.python_version(),
        **{name: _version(name) for name in ("celery", "kombu", "redis", "gunicorn", "flask")},
        "postgres": _command_version(["psql", "--version"]),
        "redis-server": _command_version([redis_server_binary(), "--version"]),
        **{name: _version(name) for name in ("dramatiq", "rq")},
    }
    return {
        "cpu": cpu_model(),
        "nproc": os.cpu_count(),
        "memory_gib": psutil.virtual_memory().total / 2**30,
        "os": f"{platform.system()} {platform.release()}",
        "versions": ", ".join(f"{k} {v}" for k, v in versions.items()),
    }
