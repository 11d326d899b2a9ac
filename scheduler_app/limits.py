"""Every bound a submission is held to, in one place.

The marshmallow schemas (and so the OpenAPI document), the schemas' fast path
(``api/fastpath.py``) and the tests' generated edge cases all read these names; a bound changed
here changes everywhere at once.
"""

from __future__ import annotations

TASK_NAME_MAX = 200  # characters of a task type name
QUEUE_NAME_MAX = 100
TAG_MAX = 100  # characters of one tag
TAGS_MAX = 20  # tags on one task
IDEMPOTENCY_KEY_MAX = 255
PRIORITY_MIN, PRIORITY_MAX, PRIORITY_DEFAULT = 0, 9, 5
DELAY_MAX = 366 * 86400  # seconds
TIMEOUT_MAX = 86400  # seconds; a timeout is > 0
# How long a finished task is kept (its ``retention``): 1 s to 3650 days.
RETENTION_MIN = 1
RETENTION_MAX = 3650 * 86400
JSON_DEPTH_MAX = 64  # nesting of args, kwargs and results
# digits of one JSON integer: Python's own int/str conversion limit (sys.get_int_max_str_digits)
INT_DIGITS_MAX = 4300
MAX_RETRIES_MAX = 100
BACKOFF_MAX = 86400  # seconds of the first retry delay
BACKOFF_CAP_MAX = 7 * 86400  # seconds of the longest retry delay
RETRY_STRATEGIES = ("exponential", "linear", "fixed")  # retry.strategy (the first is the default)
RETRY_DURATION_MAX = 366 * 86400  # seconds of retry.max_retry_duration; it is > 0
BATCH_MAX = 1000  # tasks in one batch
PAGE_MAX = 1000  # items in one page of a list
ERROR_TYPE_MAX = 200
WORKFLOW_NODES_MAX = 10_000  # nodes of one workflow (one transaction)
NODE_ID_MAX = 100  # characters of a workflow node id (tasks.node_id)
WORKFLOW_NAME_MAX = 200

URL_MAX = 2048  # characters of an outbound URL (http.request, webhooks)
# The outbound URLs the API takes, as one pattern that the OpenAPI document states and the API
# applies (a host name, IPv4 or bracketed IPv6 address, no userinfo, a port up to 65535,
# printable ASCII after the host).
_LABEL = "[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_PORT = "(?:[1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])"
_OCTET = "(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])"
_V4 = f"(?:{_OCTET}\\.){{3}}{_OCTET}"
_H = "[0-9A-Fa-f]{1,4}"
_V6 = "|".join(
    [
        f"(?:{_H}:){{7}}{_H}",
        f"(?:{_H}:){{1,7}}:",
        f"(?:{_H}:){{1,6}}:{_H}",
        *(f"(?:{_H}:){{1,{5 - n}}}(?::{_H}){{1,{n + 2}}}" for n in range(5)),
        f"{_H}:(?::{_H}){{1,6}}",
        f":(?:(?::{_H}){{1,7}}|:)",
        f"(?:{_H}:){{6}}{_V4}",
        f"::(?:[Ff]{{4}}(?::0{{1,4}})?:)?{_V4}",
        f"(?:{_H}:){{1,4}}:{_V4}",
    ]
)
# A name's last label starts with a letter: one ending in a number is meant as an IPv4
# address (the WHATWG URL rule), which must then be a dotted quad.
_TOP = "[A-Za-z](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOST = f"(?:(?:{_LABEL}\\.)*{_TOP}|{_V4}|\\[(?:{_V6})\\])"
HTTP_URL_PATTERN = f"^https?://{_HOST}(?::{_PORT})?(?:[/?#][!-~]*)?$"
EMAIL_PATTERN = f"^[A-Za-z0-9.!#$%&'*+/=?^_`{{|}}~-]{{1,64}}@{_LABEL}(?:\\.{_LABEL})+$"


def around(bound: int | float) -> list[int | float]:
    """The values a test of ``bound`` must try: just below, on, and just above it."""
    step = 1 if isinstance(bound, int) else bound * 1e-9 or 1e-9
    return [bound - step, bound, bound + step]


WORKER_NAME_MAX = 255  # characters of a worker's name (its Celery hostname)
WORKER_CONCURRENCY_MAX = 256  # pool processes (or threads) a scale request may ask for
# Notifications: webhook endpoints per client, and the length of an endpoint's description.
WEBHOOK_ENDPOINTS_MAX = 20
WEBHOOK_DESCRIPTION_MAX = 500
