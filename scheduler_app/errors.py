"""The AppError hierarchy; the API renders every error once, as application/problem+json."""

from __future__ import annotations

from typing import Any


class AppError(Exception):
    """Base of every error a service raises on purpose."""

    status = 500
    code = "internal-error"
    title = "Internal server error"

    def __init__(self, detail: str | None = None, *, errors: Any = None, headers=None):
        super().__init__(detail or self.title)
        self.detail = detail or self.title
        self.errors = errors
        self.headers = headers or {}


class BadRequest(AppError):
    status, code, title = 400, "bad-request", "Bad request"


class Unauthorized(AppError):
    status, code, title = 401, "unauthorized", "Authentication required"


class Forbidden(AppError):
    status, code, title = 403, "forbidden", "Forbidden"


class NotFound(AppError):
    status, code, title = 404, "not-found", "Not found"


class Conflict(AppError):
    status, code, title = 409, "conflict", "Conflict"


class PayloadTooLarge(AppError):
    status, code, title = 413, "payload-too-large", "Payload too large"


class ValidationFailed(AppError):
    status, code, title = 422, "validation-failed", "Validation failed"


class TooManyRequests(AppError):
    status, code, title = 429, "too-many-requests", "Too many requests"


class ServiceUnavailable(AppError):
    status, code, title = 503, "service-unavailable", "Service unavailable"
