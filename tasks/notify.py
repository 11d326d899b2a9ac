"""The ``email.send`` task type (notifications themselves are sent by the schedulers'
dispatcher: scheduler_app/services/notifiers/dispatch.py)."""

from __future__ import annotations

import re
from typing import Any

from scheduler_app import limits
from scheduler_app.services.notifiers import email
from scheduler_app.task_types import PermanentError, TaskContext, task_type

SUBJECT_MAX = 200
BODY_MAX = 65_536
_EMAIL = re.compile(limits.EMAIL_PATTERN)


def validate_email(args: list[Any], kwargs: dict[str, Any], settings: Any = None) -> dict:
    """Field errors of an email.send call."""
    call = {**dict(zip(("to", "subject", "body"), args, strict=False)), **kwargs}
    errors: dict[str, list[str]] = {}
    to = call.get("to")
    if not isinstance(to, str) or len(to) > 254 or not _EMAIL.fullmatch(to):
        errors["kwargs.to"] = ["must be an email address"]
    subject = call.get("subject")
    if (
        not isinstance(subject, str)
        or not 0 < len(subject) <= SUBJECT_MAX
        or any(ord(c) < 32 for c in subject)
    ):
        errors["kwargs.subject"] = [f"must be one line of 1 to {SUBJECT_MAX} characters"]
    body = call.get("body", "")
    if not isinstance(body, str) or len(body) > BODY_MAX:
        errors["kwargs.body"] = [f"must be a string of at most {BODY_MAX} characters"]
    return errors


@task_type(
    "email.send",
    validator=validate_email,
    param_schemas={
        "to": {"type": "string", "maxLength": 254, "pattern": limits.EMAIL_PATTERN},
        "subject": {
            "type": "string",
            "minLength": 1,
            "maxLength": SUBJECT_MAX,
            "pattern": "^[^\\u0000-\\u001f]*$",
        },
        "body": {"type": "string", "maxLength": BODY_MAX},
    },
    kwargs_schema={"required": ["to", "subject"]},
    parameters={
        "to": "the recipient's address",
        "subject": "one line",
        "body": "plain text",
    },
)
def send_email(
    to: str, subject: str, body: str = "", *, ctx: TaskContext | None = None, **_: Any
) -> dict[str, Any]:
    """Send a plain-text email over SMTP (the smtp_* settings)."""
    try:
        email.send(ctx.settings, to, subject, body)
    except email.EmailRefusedError as exc:
        raise PermanentError(str(exc)) from None
    return {"to": to, "subject": subject}
