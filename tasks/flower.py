"""Flower behind its credentials on every path: ``python -m tasks.flower [flower options]``.

Flower 2.2 checks ``--basic-auth``/``--auth`` on its pages and API, but serves ``/metrics`` and
``/healthcheck`` to anyone (their handlers lack ``@web.authenticated``); this entry point adds
it and then runs ``celery -A tasks.worker flower`` with the options given. It refuses to start
without credentials (``--basic-auth``, ``--auth`` or ``FLOWER_BASIC_AUTH``/``FLOWER_AUTH``).

Negative control: ``SCHEDULER_TEST_REMOVE=flower-auth`` leaves Flower's handlers as they are.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

DEFAULT_PORT = 5555
OPEN_HANDLERS = ("Metrics", "Healthcheck")


class MissingCredentialsError(SystemExit):
    """Flower was asked to start without any authentication."""


def guard_every_path() -> None:
    """Put Flower's open handlers behind the same check as the rest of it."""
    from flower.views import monitor
    from tornado import web

    for name in OPEN_HANDLERS:
        handler = getattr(monitor, name)
        if not getattr(handler.get, "__wrapped__", None):
            handler.get = web.authenticated(handler.get)


def has_credentials(argv: Sequence[str], environ: dict[str, str]) -> bool:
    """Whether the options or environment give Flower an authentication method."""
    flags = ("--basic-auth", "--basic_auth", "--auth")
    return any(a.split("=", 1)[0] in flags for a in argv) or bool(
        environ.get("FLOWER_BASIC_AUTH") or environ.get("FLOWER_AUTH")
    )


def main(argv: Sequence[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    if not has_credentials(args, dict(os.environ)):
        raise MissingCredentialsError(
            "refusing to start Flower without credentials: give --basic-auth=USER:PASSWORD "
            "(or FLOWER_BASIC_AUTH) or --auth"
        )
    if "flower-auth" not in os.environ.get("SCHEDULER_TEST_REMOVE", "").split(","):
        guard_every_path()
    if not any(a.startswith("--port") for a in args):
        args.append(f"--port={DEFAULT_PORT}")
    from celery.bin.celery import main as celery

    sys.argv = ["celery", "-A", "tasks.worker", "flower", *args]
    celery()


if __name__ == "__main__":
    main()
