"""Every error leaves the API as application/problem+json, rendered here and only here."""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, Response, g, json
from flask_smorest import Api
from marshmallow import Schema, fields
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from scheduler_app.errors import AppError

log = logging.getLogger(__name__)
PROBLEM_BASE = "https://scheduler.dev/problems/"


class ProblemSchema(Schema):
    """RFC 9457 problem details, as every error of this API is sent."""

    type = fields.String()
    title = fields.String()
    status = fields.Integer()
    detail = fields.String()
    errors = fields.Raw(metadata={"description": "per field: a list of messages"})
    request_id = fields.String()


class ProblemApi(Api):
    """flask-smorest's Api documenting errors as application/problem+json."""

    ERROR_SCHEMA = ProblemSchema

    def _register_responses(self):
        self.DEFAULT_RESPONSE_CONTENT_TYPE = "application/problem+json"
        try:
            super()._register_responses()
        finally:
            del self.DEFAULT_RESPONSE_CONTENT_TYPE


def problem(
    status: int,
    title: str,
    detail: str | None = None,
    *,
    code: str | None = None,
    errors: Any = None,
    headers: dict[str, str] | None = None,
) -> Response:
    """A problem+json response."""
    body = {
        "type": PROBLEM_BASE + (code or str(status)),
        "title": title,
        "status": status,
        "detail": detail or title,
        "request_id": getattr(g, "request_id", None),
    }
    if errors:
        body["errors"] = errors
    response = Response(json.dumps(body), status=status, mimetype="application/problem+json")
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


LOCATIONS = {"json", "query", "querystring", "headers", "files", "form", "view_args"}


def _dotted(messages: Any, prefix: str = "") -> dict[str, Any]:
    """Nested marshmallow errors as one level keyed by dotted path: ``tasks.3.priority``.

    The services name fields the same way, so a client reads every 422 alike. A nested
    schema's own ``_schema`` errors belong to the field holding it (``retry``).
    """
    if not isinstance(messages, dict):
        return {prefix or "_schema": messages}
    flat: dict[str, Any] = {}
    for key, value in messages.items():
        path = f"{prefix}.{key}" if prefix else str(key)
        if key == "_schema" and prefix:
            path = prefix
        if isinstance(value, dict):
            flat.update(_dotted(value, path))
        else:
            flat.setdefault(path, []).extend(value if isinstance(value, list) else [value])
    return flat


def _flatten_webargs(messages: Any) -> Any:
    """webargs nests errors by location ({"json": {...}}); clients want them by field."""
    if isinstance(messages, dict) and set(messages) <= LOCATIONS:
        merged: dict[str, Any] = {}
        for location, part in messages.items():
            if isinstance(part, dict):
                merged.update(_dotted(part))
            else:  # the location as a whole failed, e.g. a body that is not JSON
                merged["body" if location == "json" else location] = part
        return merged
    return messages


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(AppError)
    def _app_error(exc: AppError):
        return problem(
            exc.status, exc.title, exc.detail, code=exc.code, errors=exc.errors, headers=exc.headers
        )

    @app.errorhandler(RequestEntityTooLarge)
    def _too_large(exc: RequestEntityTooLarge):
        limit = app.config.get("MAX_CONTENT_LENGTH")
        return problem(
            413,
            "Payload too large",
            f"the request body exceeds {limit} bytes",
            code="payload-too-large",
        )

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException):
        data = getattr(exc, "data", None) or {}
        errors = _flatten_webargs(data.get("messages")) if isinstance(data, dict) else None
        status = exc.code or 500
        if status == 422:
            title, detail = "Validation failed", "one or more fields are invalid"
            code = "validation-failed"
        elif status == 400:
            title, code = "Bad request", "bad-request"
            not_json = isinstance(errors, dict) and "body" in errors
            detail = "the request body is not valid JSON" if not_json else exc.description
        else:
            title, detail, code = exc.name, exc.description, None
        headers = dict(data.get("headers") or {}) if isinstance(data, dict) else {}
        if status == 405 and exc.get_response().headers.get("Allow"):
            headers["Allow"] = exc.get_response().headers["Allow"]
        return problem(status, title, detail, code=code, errors=errors, headers=headers)

    @app.errorhandler(RecursionError)
    def _too_deep(exc: RecursionError):
        return problem(400, "Bad request", "the JSON body is nested too deeply", code="bad-request")

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception):
        log.exception("unhandled error")
        return problem(
            500,
            "Internal server error",
            "an unexpected error occurred; quote the request_id when reporting it",
            code="internal-error",
        )
