"""http.request: call a URL, Cloud Tasks style."""

from __future__ import annotations

import re
from typing import Any

import requests

from scheduler_app import limits
from scheduler_app.task_types import PermanentError, task_type

RETRYABLE_STATUS = {408, 429}
BODY_LIMIT = 16_384
METHODS = {"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"}


class HttpStatusError(Exception):
    """A response status that a retry may cure (5xx, 408, 429)."""


_URL = re.compile(limits.HTTP_URL_PATTERN)
# The method, in any case, as the document states it: [Gg][Ee][Tt]|...
_METHOD_PATTERN = "^(?:{})$".format(
    "|".join("".join(f"[{c}{c.lower()}]" for c in m) for m in sorted(METHODS))
)


def validate_url(url: Any) -> str:
    """Return the URL if it is absolute http(s) with a host; raise ValueError otherwise."""
    if not isinstance(url, str):
        raise ValueError("url must be a string")
    if len(url) > limits.URL_MAX or not _URL.fullmatch(url):
        raise ValueError(
            "url must be an absolute http:// or https:// URL (a host name or IPv4 address, "
            f"no user info; at most {limits.URL_MAX} characters)"
        )
    return url


def validate(args: list[Any], kwargs: dict[str, Any]) -> dict[str, list[str]]:
    """Field errors of an http.request call, checked at submission."""
    url = kwargs.get("url", args[0] if args else None)
    errors: dict[str, list[str]] = {}
    try:
        validate_url(url)
    except ValueError as exc:
        errors["kwargs.url"] = [str(exc)]
    method = kwargs.get("method", args[1] if len(args) > 1 else None)
    if method is not None and (not isinstance(method, str) or method.upper() not in METHODS):
        errors["kwargs.method"] = [f"must be one of {sorted(METHODS)}"]
    if "json" in kwargs and "body" in kwargs:
        errors["kwargs.body"] = ["give json or body, not both"]
    return errors


@task_type(
    "http.request",
    validator=validate,
    param_schemas={
        "url": {"type": "string", "maxLength": limits.URL_MAX, "pattern": limits.HTTP_URL_PATTERN},
        "method": {"anyOf": [{"type": "null"}, {"type": "string", "pattern": _METHOD_PATTERN}]},
    },
    kwargs_schema={"not": {"required": ["json", "body"]}},
    permanent_errors=(requests.exceptions.InvalidURL, requests.exceptions.MissingSchema),
    parameters={
        "url": "absolute http(s) URL",
        "method": "HTTP method (default GET, or POST when a body is given)",
        "headers": "object of request headers",
        "json": "JSON body",
        "body": "text body (instead of json)",
        "timeout": "seconds (default 30)",
    },
)
def request(
    url: str,
    method: str | None = None,
    headers: dict[str, str] | None = None,
    json: Any = None,
    body: str | None = None,
    timeout: float = 30.0,
    **_: Any,
) -> dict[str, Any]:
    """Call the URL; 2xx succeeds, 5xx/408/429/connection errors retry, other 4xx fail."""
    validate_url(url)
    if json is not None and body is not None:
        raise PermanentError("give json or body, not both")
    method = (method or ("POST" if json is not None or body is not None else "GET")).upper()
    if method not in METHODS:
        raise PermanentError(f"unsupported method {method}")
    response = requests.request(
        method,
        url,
        headers=headers or None,
        json=json,
        data=body.encode() if isinstance(body, str) else None,
        timeout=float(timeout),
        allow_redirects=False,
    )
    summary = {
        "status": response.status_code,
        "headers": dict(response.headers),
        "body": response.text[:BODY_LIMIT],
    }
    if 200 <= response.status_code < 300:
        return summary
    message = f"{method} {url} answered {response.status_code}"
    if response.status_code >= 500 or response.status_code in RETRYABLE_STATUS:
        raise HttpStatusError(message)
    raise PermanentError(message)
