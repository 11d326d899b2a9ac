"""Request bodies are JSON: anything else is refused with 415 before a view reads it.

webargs treats a body that is not JSON as absent, so a form or text/plain body would otherwise be
answered "task: missing" (422), which hides the client's real mistake.
"""

from __future__ import annotations

from flask import Flask, request

from scheduler_app.api.problems import problem

BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


def init_app(app: Flask) -> None:
    """Refuse non-JSON request bodies on every endpoint (415 problem+json)."""

    @app.before_request
    def _json_bodies_only():
        if request.method not in BODY_METHODS or request.is_json:
            return None
        chunked = "chunked" in request.headers.get("Transfer-Encoding", "").lower()
        if not (request.content_length or chunked):
            return None  # no body: POST /tasks/{id}/cancel and friends
        return problem(
            415,
            "Unsupported media type",
            f"the request body must be application/json, not {request.mimetype or 'untyped'}",
            code="unsupported-media-type",
        )
