"""One webhook attempt: a signed POST under the outbound policy, and what its answer means."""

from __future__ import annotations

import email.utils
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from scheduler_app.models.base import utcnow
from scheduler_app.services.notifiers import signing
from scheduler_app.services.outbound.client import (
    OutboundClient,
    OutboundConnectionError,
    redact,
)
from scheduler_app.services.outbound.policy import OutboundRefusedError, policy_for

RETRYABLE_STATUS = frozenset({408, 429})
EXCERPT = 200  # characters of a response body (or error) kept in the delivery log
BODY_KEPT = 1024  # bytes of a response body read at all


@dataclass(frozen=True)
class WebhookResult:
    """What one attempt got: ``delivered``, ``retry`` (5xx, 408, 429, no answer) or ``refused``
    (any other answer, or the outbound policy said no)."""

    outcome: str
    status_code: int | None
    error: str | None
    retry_after: float | None = None


def retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds a ``Retry-After`` header asks for (delta-seconds or an HTTP date); None if none."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None or when.tzinfo is None:
        return None
    return max(0.0, (when - (now or utcnow())).total_seconds())


def excerpt(text: str) -> str:
    """A short, single-line excerpt of a response or error for the delivery log."""
    flat = " ".join(text.split())
    return flat if len(flat) <= EXCERPT else flat[: EXCERPT - 1] + "…"


def client(settings: Any, per_host: int) -> OutboundClient:
    """A client under the settings' outbound policy keeping ``per_host`` connections alive."""
    return OutboundClient(policy_for(settings), body_limit=BODY_KEPT, per_host=per_host)


def send(
    settings: Any,
    url: str,
    keys: list[str],
    msg_id: str,
    body: str,
    outbound: OutboundClient,
) -> WebhookResult:
    """POST ``body`` signed with ``keys``; redirects are answers, never followed."""
    now = utcnow()
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "scheduler-webhooks/1",
        **signing.headers(keys, msg_id, now, body),
    }
    try:
        response = outbound.request(
            "POST",
            url,
            headers=headers,
            body=body.encode(),
            timeout=min(settings.webhook_timeout, settings.http_timeout_max),
        )
    except OutboundRefusedError as exc:
        return WebhookResult("refused", None, excerpt(str(exc)))
    except ValueError as exc:
        return WebhookResult("refused", None, excerpt(str(exc)))
    except OutboundConnectionError as exc:
        return WebhookResult("retry", None, excerpt(str(exc)))
    status = response.status
    if 200 <= status < 300:
        return WebhookResult("delivered", status, None)
    answer = f"POST {redact(url)} answered {status}"
    text = response.text.strip()
    error = excerpt(f"{answer}: {text}" if text else answer)
    if status >= 500 or status in RETRYABLE_STATUS:
        lookup = {k.lower(): v for k, v in response.headers.items()}
        return WebhookResult("retry", status, error, retry_after(lookup.get("retry-after"), now))
    if 300 <= status < 400:
        error = excerpt(f"{answer} (redirects are not followed)")
    return WebhookResult("refused", status, error)
