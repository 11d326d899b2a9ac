"""The body-limit middleware reads no more than the limit allows, however the body is sent."""

from __future__ import annotations

import io

from scheduler_app.api.body_limit import TOO_LARGE, BodyLimit


class EndlessBody(io.RawIOBase):
    """A request body that never ends, counting what was read from it."""

    def __init__(self) -> None:
        self.read_bytes = 0

    def read(self, size: int = -1) -> bytes:
        size = 65536 if size is None or size < 0 else size
        self.read_bytes += size
        return b" " * size


def _call(environ: dict) -> dict:
    seen = {}

    def app(env, start_response):
        seen.update(env)
        # The app answers 413 to a flagged request without reading its body.
        seen["body"] = None if env.get(TOO_LARGE) else env["wsgi.input"].read()
        return [b""]

    BodyLimit(app, limit=1000)(environ, lambda *a: None)
    return seen


def test_endless_chunked_body_is_read_only_one_byte_past_the_limit():
    body = EndlessBody()
    seen = _call({"HTTP_TRANSFER_ENCODING": "chunked", "wsgi.input": body})
    assert body.read_bytes == 1001
    assert seen[TOO_LARGE] is True
    assert seen["wsgi.input"].read() == b""


def test_chunked_body_within_the_limit_reaches_the_app_with_its_length():
    seen = _call({"HTTP_TRANSFER_ENCODING": "chunked", "wsgi.input": io.BytesIO(b"x" * 1000)})
    assert TOO_LARGE not in seen
    assert seen["body"] == b"x" * 1000
    assert seen["CONTENT_LENGTH"] == "1000"
    assert "HTTP_TRANSFER_ENCODING" not in seen


def test_declared_length_over_the_limit_is_flagged_without_reading():
    body = EndlessBody()
    seen = _call({"CONTENT_LENGTH": "1001", "wsgi.input": body})
    assert seen[TOO_LARGE] is True
    assert body.read_bytes == 0


def test_declared_length_within_the_limit_is_left_alone():
    seen = _call({"CONTENT_LENGTH": "1000", "wsgi.input": io.BytesIO(b"y" * 1000)})
    assert TOO_LARGE not in seen
    assert seen["body"] == b"y" * 1000
