"""The request body limit, however the body arrives: with a Content-Length or chunked.

Werkzeug checks a Content-Length against ``MAX_CONTENT_LENGTH``, but only when a view reads the
body; a chunked body it cuts at the limit without a word, so 2 MiB of JSON padded with spaces
came through as its first valid mebibyte (a 202). Here the limit holds on every endpoint: a
declared length over it is refused before any byte of the body is read, and a chunked body is
read up to one byte past the limit, never more, then handed on with its length known.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterable
from typing import Any

from flask import request
from werkzeug.exceptions import RequestEntityTooLarge

# Set in the WSGI environ when the body is over the limit; the app then answers 413.
TOO_LARGE = "scheduler.body_too_large"
READ_SIZE = 65_536


class BodyLimit:
    """WSGI middleware: flags a body over ``limit`` bytes, reading at most ``limit + 1``."""

    def __init__(self, app: Callable[..., Iterable[bytes]], limit: int) -> None:
        self.app = app
        self.limit = limit

    def __call__(self, environ: dict[str, Any], start_response: Callable) -> Iterable[bytes]:
        if "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower():
            body = _read_at_most(environ["wsgi.input"], self.limit + 1)
            if len(body) > self.limit:
                environ[TOO_LARGE] = True
                body = b""  # the rest is left unread; the server discards it or closes
            environ["wsgi.input"] = io.BytesIO(body)
            environ["CONTENT_LENGTH"] = str(len(body))
            del environ["HTTP_TRANSFER_ENCODING"]
        else:
            length = environ.get("CONTENT_LENGTH", "")
            if length.isdigit() and int(length) > self.limit:
                environ[TOO_LARGE] = True
        return self.app(environ, start_response)


def _read_at_most(stream: Any, size: int) -> bytes:
    parts: list[bytes] = []
    left = size
    while left > 0:
        part = stream.read(min(READ_SIZE, left))
        if not part:
            break
        parts.append(part)
        left -= len(part)
    return b"".join(parts)


def refuse_large_bodies() -> None:
    """before_request: 413 for a body the middleware flagged, whatever the endpoint."""
    if request.environ.get(TOO_LARGE):
        raise RequestEntityTooLarge()
