"""http.request: call a URL, Cloud Tasks style, under the outbound URL policy."""

from __future__ import annotations

import functools
import json as jsonlib
import math
import os
import re
from typing import Any

from scheduler_app import limits
from scheduler_app.config import Settings
from scheduler_app.services.outbound.client import (
    BODY_LIMIT,
    OutboundClient,
    redact,
)
from scheduler_app.services.outbound.policy import OutboundRefusedError, policy_for
from scheduler_app.task_types import PermanentError, TaskContext, task_type

RETRYABLE_STATUS = {408, 429}
METHODS = {"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"}
DEFAULT_TIMEOUT = 30.0
# The attempt's default time limit: above the longest call the default http_timeout_max allows
# (connect plus read), as Cloud Tasks' 10-minute dispatch deadline.
TASK_TIMEOUT = 600.0
# The call's parameters in positional order: only the url may be given as an arg.
PARAMETERS = ("url",)
_DEFAULTS = Settings()
_URL = re.compile(limits.HTTP_URL_PATTERN)
# The method in any case, as the OpenAPI document states it: [Gg][Ee][Tt]|...
_METHOD_PATTERN = "^(?:{})$".format(
    "|".join("".join(f"[{c}{c.lower()}]" for c in m) for m in sorted(METHODS))
)
_HEADER_TEXT = {"type": "string", "pattern": "^[^\\u0000-\\u0008\\u000a-\\u001f]*$"}


class HttpStatusError(Exception):
    """A response status that a retry may cure (5xx, 408, 429)."""


def _call(args: list[Any], kwargs: dict[str, Any]) -> dict[str, Any]:
    return {**dict(zip(PARAMETERS, args, strict=False)), **kwargs}


def _header_errors(headers: Any) -> list[str]:
    if headers is None:
        return []
    if not isinstance(headers, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in headers.items()
    ):
        return ["must be an object of string values"]
    if any(ord(ch) < 32 and ch != "\t" for pair in headers.items() for ch in "".join(pair)):
        return ["must not contain control characters"]
    return []


def validate(args: list[Any], kwargs: dict[str, Any], settings: Any = None) -> dict[str, list[str]]:
    """Field errors of an http.request call, checked at submission under ``settings``' policy."""
    call = _call(args, kwargs)
    errors: dict[str, list[str]] = {}
    url = call.get("url")
    try:
        policy_for(settings).check_url(url)  # a refusal says why, before the format does
        if len(url) > limits.URL_MAX or not _URL.fullmatch(url):
            raise ValueError(
                "url must be an absolute http:// or https:// URL of a host name or IPv4 "
                f"address, without user info, at most {limits.URL_MAX} characters"
            )
    except (OutboundRefusedError, ValueError) as exc:
        errors["kwargs.url"] = [str(exc)]
    method = call.get("method")
    if method is not None and (not isinstance(method, str) or method.upper() not in METHODS):
        errors["kwargs.method"] = [f"must be one of {sorted(METHODS)}"]
    if call.get("json") is not None and call.get("body") is not None:
        errors["kwargs.body"] = ["give json or body, not both"]
    elif call.get("body") is not None and not isinstance(call["body"], str):
        errors["kwargs.body"] = ["must be a string"]
    if messages := _header_errors(call.get("headers")):
        errors["kwargs.headers"] = messages
    if "timeout" in call:
        bound = (settings or _DEFAULTS).http_timeout_max
        timeout = call["timeout"]
        if (
            isinstance(timeout, bool)
            or not isinstance(timeout, int | float)
            or not math.isfinite(timeout)
            or not 0 < timeout <= bound
        ):
            errors["kwargs.timeout"] = [f"must be a number of seconds above 0, at most {bound:g}"]
    return errors


@functools.lru_cache(maxsize=4)
def _client(settings: Any, pid: int) -> OutboundClient:
    # One client (and its kept-alive connections) per process: a forked pool process opens its own.
    return OutboundClient(policy_for(settings), body_limit=BODY_LIMIT)


@task_type(
    "http.request",
    timeout=TASK_TIMEOUT,
    validator=validate,
    # What validate() enforces, for the OpenAPI document (a setting's bound: a callable of it).
    param_schemas={
        "url": {"type": "string", "maxLength": limits.URL_MAX, "pattern": limits.HTTP_URL_PATTERN},
        "method": {"anyOf": [{"type": "null"}, {"type": "string", "pattern": _METHOD_PATTERN}]},
        "headers": {
            "anyOf": [
                {"type": "null"},
                {
                    "type": "object",
                    "additionalProperties": _HEADER_TEXT,
                    "propertyNames": _HEADER_TEXT,
                },
            ]
        },
        "body": {"anyOf": [{"type": "null"}, {"type": "string"}]},
        "timeout": lambda settings: {
            "type": "number",
            "exclusiveMinimum": 0,
            "maximum": settings.http_timeout_max,
        },
    },
    kwargs_schema={
        "not": {
            "required": ["json", "body"],
            "properties": {"json": {"not": {"type": "null"}}, "body": {"not": {"type": "null"}}},
        }
    },
    permanent_errors=(OutboundRefusedError, ValueError),
    parameters={
        "url": "absolute http(s) URL (the outbound URL policy applies)",
        "method": "HTTP method (default GET, or POST when a body is given)",
        "headers": "object of request headers",
        "json": "JSON body",
        "body": "text body (instead of json)",
        "timeout": "seconds to connect and per read (default 30, at most http_timeout_max)",
    },
)
def request(
    url: str,
    *,
    method: str | None = None,
    headers: dict[str, str] | None = None,
    json: Any = None,
    body: str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    ctx: TaskContext | None = None,
    **_: Any,
) -> dict[str, Any]:
    """Call the URL; 2xx succeeds, 5xx/408/429/connection errors retry, other 4xx fail."""
    settings = ctx.settings if ctx is not None else None
    if json is not None and body is not None:
        raise PermanentError("give json or body, not both")
    method = (method or ("POST" if json is not None or body is not None else "GET")).upper()
    if method not in METHODS:
        raise PermanentError(f"unsupported method {method}")
    send_headers = dict(headers or {})
    payload = None
    if json is not None:
        payload = jsonlib.dumps(json).encode()
        if not any(k.lower() == "content-type" for k in send_headers):
            send_headers["Content-Type"] = "application/json"
    elif isinstance(body, str):
        payload = body.encode()
    # Bounded here as well as at submission: the setting may have been lowered since.
    limit = min(float(timeout), (settings or _DEFAULTS).http_timeout_max)
    # OutboundConnectionError (no HTTP answer) is retried; its message is a fixed description.
    response = _client(settings, os.getpid()).request(
        method, url, headers=send_headers, body=payload, timeout=limit
    )
    summary = {"status": response.status, "headers": response.headers, "body": response.text}
    if 200 <= response.status < 300:
        return summary
    message = f"{method} {redact(url)} answered {response.status}"
    if 300 <= response.status < 400:
        raise PermanentError(f"{message} (redirects are not followed)")
    if response.status >= 500 or response.status in RETRYABLE_STATUS:
        raise HttpStatusError(message)
    raise PermanentError(message)
