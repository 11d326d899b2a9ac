"""Email notifications: plain text over SMTP (``smtp_*`` settings)."""

from __future__ import annotations

import smtplib
from email.message import EmailMessage
from typing import Any

from scheduler_app.services.notifiers.webhook import excerpt


class EmailRetryableError(Exception):
    """The SMTP server could not take the mail now (no connection, a 4xx answer)."""


class EmailRefusedError(Exception):
    """The mail cannot be sent as it is (no SMTP server configured, a 5xx answer)."""


def render(event: dict[str, Any], public_url: str) -> tuple[str, str]:
    """Subject and body of an event's email: the resource type, id and status, and its URL."""
    data = event.get("data") or {}
    kind = event.get("type", "")
    status = data.get("status", "")
    base = public_url.rstrip("/")
    if kind.startswith("workflow."):
        subject = f"[scheduler] workflow {data.get('name')} {data.get('id')} {status}"
        lines = [
            f"Workflow {data.get('name')!r} ended {status}.",
            "",
            f"id:          {data.get('id')}",
            f"status:      {status}",
            f"created_at:  {data.get('created_at')}",
            f"finished_at: {data.get('finished_at')}",
            f"nodes:       {len(data.get('nodes') or {})}",
            "",
            f"{base}/api/v1/workflows/{data.get('id')}",
        ]
    else:
        subject = f"[scheduler] {data.get('task')} {data.get('id')} {status}"
        error = data.get("error") or {}
        lines = [
            f"Task {data.get('task')} ended {status}.",
            "",
            f"id:          {data.get('id')}",
            f"status:      {status}",
            f"queue:       {data.get('queue')}",
            f"attempts:    {data.get('attempts')}",
            f"created_at:  {data.get('created_at')}",
            f"finished_at: {data.get('finished_at')}",
        ]
        if error:
            lines.append(f"error:       {error.get('type')}: {excerpt(error.get('message') or '')}")
        lines += ["", f"{base}/api/v1/tasks/{data.get('id')}"]
    return subject, "\n".join(lines) + "\n"


def send(settings: Any, to: str, subject: str, body: str) -> None:
    """Send one plain-text mail; raises EmailRetryableError or EmailRefusedError."""
    if not settings.smtp_host:
        raise EmailRefusedError("no SMTP server is configured (smtp_host)")
    message = EmailMessage()
    message["From"] = settings.smtp_from
    message["To"] = to
    message["Subject"] = subject
    message.set_content(body)
    try:
        with smtplib.SMTP(
            settings.smtp_host, settings.smtp_port, timeout=settings.smtp_timeout
        ) as smtp:
            if settings.smtp_starttls:
                smtp.starttls()
            if settings.smtp_username:
                smtp.login(settings.smtp_username, settings.smtp_password)
            smtp.send_message(message)
    except smtplib.SMTPRecipientsRefused as exc:
        codes = [code for code, _ in exc.recipients.values()]
        error = f"SMTP refused the recipient ({', '.join(map(str, codes))})"
        if all(400 <= code < 500 for code in codes):
            raise EmailRetryableError(error) from None
        raise EmailRefusedError(error) from None
    except smtplib.SMTPResponseException as exc:
        error = excerpt(f"SMTP answered {exc.smtp_code}: {exc.smtp_error!r}")
        if 400 <= exc.smtp_code < 500:
            raise EmailRetryableError(error) from None
        raise EmailRefusedError(error) from None
    except (TimeoutError, smtplib.SMTPException, OSError) as exc:
        raise EmailRetryableError(f"SMTP unreachable: {type(exc).__name__}") from None
