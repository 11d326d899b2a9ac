"""gunicorn's own logs (its error log and the access log) in the platform's format.

``gunicorn_conf`` names :class:`JsonLogger` as gunicorn's ``logger_class``: with ``log_json``
(the default outside development) every line is one JSON object like the app's lines, and an
access line carries the request's ``request_id`` (the X-Request-ID the API answered with), so
it joins the lines the request logged.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from gunicorn.glogging import Logger

from scheduler_app.logs import JsonFormatter


def _log_json() -> bool:
    """The log_json setting, read the way the app reads it (JSON when it cannot be read)."""
    try:
        from scheduler_app.config import load_settings

        return load_settings().log_json
    except Exception:
        return os.environ.get("SCHEDULER_PROFILE", "production") != "development"


class JsonLogger(Logger):
    """gunicorn's Logger with JSON lines and a structured access record."""

    def setup(self, cfg: Any) -> None:
        super().setup(cfg)
        self.json = _log_json()
        if not self.json:
            return
        for log in (self.error_log, self.access_log):
            for handler in log.handlers:
                handler.setFormatter(JsonFormatter())

    def access(self, resp: Any, req: Any, environ: dict, request_time: Any) -> None:
        if not self.access_log_enabled:
            return
        if not self.json:
            return super().access(resp, req, environ, request_time)
        request_id = None
        for name, value in resp.headers:
            if name.lower() == "x-request-id":
                request_id = value
                break
        try:
            self.access_log.info(
                "request",
                extra={
                    "method": environ.get("REQUEST_METHOD"),
                    "path": environ.get("PATH_INFO"),
                    "status": resp.status_code,
                    "bytes": getattr(resp, "sent", None),
                    "duration_ms": round(request_time.total_seconds() * 1000, 3),
                    "remote": environ.get("REMOTE_ADDR"),
                    "user_agent": environ.get("HTTP_USER_AGENT"),
                    "request_id": request_id,
                },
            )
        except Exception:
            logging.getLogger(__name__).exception("could not write an access line")
