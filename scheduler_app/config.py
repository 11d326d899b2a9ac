"""One configuration loader: typed defaults -> YAML profile (then SCHEDULER_CONFIG_FILE) ->
AWS SSM Parameter Store (when SCHEDULER_SSM_PATH is set) -> SCHEDULER_* environment -> overrides.

Nothing here runs at import time; entry points call :func:`load_settings` once.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, get_type_hints

import yaml

from scheduler_app import limits

log = logging.getLogger(__name__)

PROFILE_DIR = Path(__file__).parent / "profiles"
ENV_PREFIX = "SCHEDULER_"
# SCHEDULER_* variables that choose where settings come from rather than being settings.
NOT_SETTINGS = frozenset(
    {
        "SCHEDULER_PROFILE",
        "SCHEDULER_CONFIG_FILE",
        "SCHEDULER_SSM_PATH",
        "SCHEDULER_TEST_PG_DSN",
        "SCHEDULER_IMAGE",
    }
)
# SSM: at most this many parameters are read below the path (a wrong path such as "/" must not
# page through a whole account).
SSM_MAX_PARAMETERS = 500
DEFAULT_SECRET = "dev-insecure-secret-change-me-not-for-production"


class ConfigError(Exception):
    """Configuration is missing, malformed or unsafe for the chosen profile."""


@dataclass(frozen=True)
class Settings:
    """Every setting of the platform, with its typed default."""

    profile: str = "development"
    database_url: str = "postgresql+psycopg2://postgres@127.0.0.1:5432/scheduler"
    broker_url: str = "redis://127.0.0.1:6379/0"
    result_backend: str = ""  # empty: results live in Postgres only
    secret_key: str = DEFAULT_SECRET
    jwt_secret: str = DEFAULT_SECRET
    access_token_ttl: int = 900
    refresh_token_ttl: int = 86400
    max_body_bytes: int = 1_048_576
    max_batch: int = 1000
    result_max_bytes: int = 65_536
    default_queue: str = "default"
    queues: tuple[str, ...] = ("default", "high", "low")
    task_modules: tuple[str, ...] = ("tasks.demo", "tasks.http", "tasks.notify")
    # A task due within the look-ahead is published with an ETA; later ones wait in Postgres.
    lookahead_seconds: float = 10.0
    promoter_interval: float = 0.25
    reconciler_interval: float = 15.0
    # A queued task absent from Redis on two scans this far apart is published again.
    reconcile_grace_seconds: float = 10.0
    visibility_timeout: int = 600
    default_max_retries: int = 3
    default_backoff: float = 1.0
    default_backoff_max: float = 300.0
    default_jitter: bool = True
    worker_concurrency: int = 2
    # Worker liveness: heartbeats into the ledger; an instance silent for worker_timeout is dead
    # and its running attempts are retried (or failed past the retry bound).
    heartbeat_interval: float = 5.0
    worker_timeout: float = 30.0
    # An attempt is recorded as running once it has run this long (or at half its timeout), and
    # together with its outcome if it ends before: one ledger write per short task instead of
    # two (services/tasks/claims.py). 0: every attempt is claimed before it runs.
    claim_after: float = 0.05
    # A worker process runs up to this many messages of short task types a batch: one ledger
    # read and one write for all of them (services/tasks/batching.py). 1: one at a time.
    worker_batch: int = 16
    # SIGTERM: finish in-flight work for this long, then requeue it (Celery soft shutdown).
    # Keep the Kubernetes terminationGracePeriodSeconds above it (see README).
    shutdown_timeout: float = 25.0
    dlq_retention_days: float = 30.0
    # Workers' ledger writes need not wait for the WAL flush: a Postgres crash can only lose
    # the last moments of progress, which the reconciler redoes (at-least-once). The API's
    # acceptance of a task always commits synchronously.
    worker_synchronous_commit: bool = False
    log_level: str = "INFO"
    log_json: bool = True
    db_pool_size: int = 10
    db_max_overflow: int = 20
    # A hung database answers nothing: bound every wait on it so requests get a 503 instead.
    db_connect_timeout: float = 3.0
    db_statement_timeout: float = 15.0
    db_pool_timeout: float = 5.0
    readyz_timeout: float = 2.0
    # /metrics asks for "Authorization: Bearer <metrics_token>" when it is set.
    metrics_token: str = ""
    # The ledger-derived series of /metrics are read in one statement at most this often.
    metrics_cache_seconds: float = 1.5
    # Workers and the scheduler process serve their own /metrics on this port (0: not at all).
    worker_metrics_port: int = 0
    scheduler_metrics_port: int = 0
    metrics_bind: str = "127.0.0.1"
    # A page of a list stops before its items' JSON passes this many bytes (next_cursor goes on).
    max_page_bytes: int = 8_388_608
    # Time limits: no timeout above max_task_timeout; a type without its own default gets
    # default_task_timeout; http.request's own timeout is capped at http_timeout_max.
    max_task_timeout: float = 86400.0
    default_task_timeout: float = 3600.0
    http_timeout_max: float = 300.0
    # Outbound HTTP (http.request, webhooks): private and loopback targets are refused in
    # production unless listed here (host names, addresses or CIDR ranges).
    outbound_allowlist: tuple[str, ...] = ()
    # Authentication: a disabled or deleted client's tokens stop working within this many
    # seconds; failed logins per client id and per address are limited per window.
    client_check_seconds: float = 5.0
    login_max_failures: int = 10
    login_failure_window: float = 60.0
    # Schedules: after the scheduler was down, missed slots older than this are not caught up;
    # the firing loop looks for due slots this often at least (it also wakes when the earliest
    # schedule is due, so this bounds how soon a new or changed schedule is seen).
    catchup_window: float = 3600.0
    schedule_interval: float = 0.5
    # Retention (DESIGN.md section 9): seconds a finished task is kept, per terminal state,
    # unless its task, its type or its queue says otherwise (queue_retention: "queue=seconds"
    # entries). A failed task is kept at least as long as its dead letter; retention_failed 0
    # means exactly that long (dlq_retention_days). A workflow's nodes go with their workflow,
    # which is kept for the default of its own state (so skipped and upstream_failed, states
    # only nodes have, need none).
    retention_succeeded: float = 7 * 86400.0
    retention_cancelled: float = 7 * 86400.0
    retention_failed: float = 0.0
    queue_retention: tuple[str, ...] = ()
    # The pruner (scheduler process, one at a time): a pass at least this often, deleting
    # batches of prune_batch tasks while they come back full, for at most prune_budget seconds.
    prune_interval: float = 30.0
    prune_batch: int = 500
    prune_budget: float = 10.0
    # VACUUM what a pass pruned (at most once a minute): "auto" when the server's autovacuum
    # is off (without it deleted rows are never reused and the tables grow however much is
    # pruned), "always", or "never".
    prune_vacuum: str = "auto"
    # Optional archive: JSON Lines of every pruned row, one file per hour and table, written
    # and fsynced before the rows are deleted. Empty: no archive.
    archive_dir: str = ""
    # Notifications (services/notifiers): every scheduler's dispatcher sends due deliveries on
    # webhook_concurrency threads (keep-alive connections, up to as many per host). A webhook
    # is tried webhook_max_attempts times, backing off exponentially with full jitter from
    # webhook_backoff up to webhook_backoff_max seconds (or what Retry-After asks, within that
    # cap), and given up webhook_retry_window seconds after its event; webhook_timeout bounds
    # the connect and each read. An endpoint failing webhook_disable_after events in a row is
    # disabled. A rotated signing key keeps signing beside the new one for webhook_key_overlap.
    webhook_concurrency: int = 16
    webhook_timeout: float = 10.0
    webhook_max_attempts: int = 8
    webhook_backoff: float = 5.0
    webhook_backoff_max: float = 3600.0
    webhook_retry_window: float = 86400.0
    webhook_disable_after: int = 20
    webhook_key_overlap: float = 86400.0
    # Email (notify.email, email.send): plain text over SMTP. The standalone runs a local sink
    # when smtp_host is empty; elsewhere an empty smtp_host fails email deliveries.
    smtp_host: str = ""
    smtp_port: int = 25
    smtp_from: str = "scheduler@localhost"
    smtp_username: str = ""
    smtp_password: str = ""
    smtp_starttls: bool = False
    smtp_timeout: float = 10.0
    # The API's address as users reach it: notification emails link the task with it.
    public_url: str = "http://127.0.0.1:8000"

    def as_dict(self) -> dict[str, Any]:
        """Plain dict of all settings (secrets included; never log it whole)."""
        return dataclasses.asdict(self)


def _coerce(name: str, raw: Any, kind: Any) -> Any:
    kind_text = str(kind)
    try:
        if kind is bool or kind_text == "bool":
            if isinstance(raw, bool):
                return raw
            text = str(raw).strip().lower()
            if text in {"1", "true", "yes", "on"}:
                return True
            if text in {"0", "false", "no", "off"}:
                return False
            raise ValueError(f"not a boolean: {raw!r}")
        if kind is int or kind_text == "int":
            return int(raw)
        if kind is float or kind_text == "float":
            return float(raw)
        if kind_text.startswith("tuple"):
            if isinstance(raw, str):
                text = raw.strip()
                items = json.loads(text) if text.startswith("[") else text.split(",")
            else:
                items = list(raw)
            return tuple(str(item).strip() for item in items if str(item).strip())
        return str(raw)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"setting {name}: {exc}") from exc


def _read_profile(profile: str) -> dict[str, Any]:
    path = PROFILE_DIR / f"{profile}.yaml"
    if not path.exists():
        raise ConfigError(f"unknown profile {profile!r} (no {path.name})")
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"profile {profile!r} must be a mapping")
    return data


def _ssm_name(name: str) -> str:
    """A parameter's setting: the last segment of its name, '-' read as '_', any case.

    '/scheduler/prod/jwt_secret' and '/scheduler/prod/secrets/JWT-SECRET' are both jwt_secret:
    folders below the path only group parameters (e.g. for IAM policies).
    """
    return name.rsplit("/", 1)[-1].replace("-", "_").lower()


def _read_ssm(path: str) -> dict[str, str]:
    """Every parameter below `path` (recursively; SecureString decrypted) by setting name.

    boto3 finds the region and credentials the usual way (AWS_REGION, AWS_PROFILE, an instance
    or pod role); AWS_ENDPOINT_URL_SSM points it at another endpoint (LocalStack, moto).
    """
    if not path.startswith("/"):
        raise ConfigError(f"SCHEDULER_SSM_PATH must start with '/': {path!r}")
    prefix = path if path.endswith("/") else path + "/"
    try:
        import boto3
        from botocore.exceptions import BotoCoreError, ClientError
    except ImportError:
        raise ConfigError(
            "SCHEDULER_SSM_PATH is set but boto3 is not installed: pip install 'job-scheduler[ssm]'"
        ) from None
    values: dict[str, str] = {}
    try:
        client = boto3.client("ssm")
        pages = client.get_paginator("get_parameters_by_path").paginate(
            Path=prefix.rstrip("/") or "/", Recursive=True, WithDecryption=True
        )
        for page in pages:
            for parameter in page["Parameters"]:
                if len(values) >= SSM_MAX_PARAMETERS:
                    raise ConfigError(
                        f"SSM path {prefix}: more than {SSM_MAX_PARAMETERS} parameters"
                    )
                setting = _ssm_name(parameter["Name"])
                if setting in values:
                    raise ConfigError(f"SSM path {prefix}: two parameters set {setting}")
                values[setting] = parameter["Value"]
    except (BotoCoreError, ClientError) as exc:
        raise ConfigError(f"SSM path {prefix}: {exc}") from None
    return values


def load_settings(
    overrides: Mapping[str, Any] | None = None, environ: Mapping[str, str] | None = None
) -> Settings:
    """Build validated settings; raises ConfigError on unknown keys, bad values, weak secrets."""
    environ = os.environ if environ is None else environ
    overrides = dict(overrides or {})
    profile = overrides.get("profile") or environ.get(f"{ENV_PREFIX}PROFILE") or "development"
    hints = get_type_hints(Settings)
    known = {f.name for f in fields(Settings)}

    values: dict[str, Any] = {}
    for source_name, source in (("profile " + profile, _read_profile(profile)),):
        unknown = set(source) - known
        if unknown:
            raise ConfigError(f"{source_name}: unknown settings {sorted(unknown)}")
        values.update(source)
    extra_file = environ.get(f"{ENV_PREFIX}CONFIG_FILE")
    if extra_file:
        data = yaml.safe_load(Path(extra_file).read_text()) or {}
        unknown = set(data) - known
        if unknown:
            raise ConfigError(f"{extra_file}: unknown settings {sorted(unknown)}")
        values.update(data)
    ssm_path = environ.get(f"{ENV_PREFIX}SSM_PATH")
    if ssm_path:
        data = _read_ssm(ssm_path)
        # The profile chose the sources: it cannot come from one of them.
        unknown = set(data) - (known - {"profile"})
        if unknown:
            raise ConfigError(f"SSM path {ssm_path}: unknown settings {sorted(unknown)}")
        values.update(data)
    for name in known:
        env_name = ENV_PREFIX + name.upper()
        if env_name in environ:
            values[name] = environ[env_name]
    strays = sorted(
        name
        for name in environ
        if name.startswith(ENV_PREFIX)
        and name not in NOT_SETTINGS
        and name[len(ENV_PREFIX) :].lower() not in known
    )
    unknown = set(overrides) - known
    if unknown:
        raise ConfigError(f"unknown settings {sorted(unknown)}")
    values.update(overrides)
    values["profile"] = profile

    typed = {name: _coerce(name, raw, hints[name]) for name, raw in values.items()}
    settings = Settings(**typed)
    _validate(settings)
    if strays:
        # A typo (SCHEDULER_PROMOTR_INTERVAL) must not pass for a setting that took effect.
        message = f"unknown SCHEDULER_* environment variables (typos?): {', '.join(strays)}"
        if settings.profile == "production":
            raise ConfigError(message)
        log.warning(message)
    return settings


def _validate(settings: Settings) -> None:
    if not settings.database_url.startswith("postgresql"):
        raise ConfigError("database_url must be a PostgreSQL URL")
    if not settings.broker_url.startswith(("redis://", "rediss://", "redis+socket://")):
        raise ConfigError("broker_url must be a Redis URL")
    if settings.lookahead_seconds * 4 > settings.visibility_timeout:
        raise ConfigError("lookahead_seconds must stay well below visibility_timeout")
    if settings.default_queue not in settings.queues:
        raise ConfigError(f"default_queue {settings.default_queue!r} is not in queues")
    if not 1 <= settings.max_batch <= limits.BATCH_MAX:
        raise ConfigError(f"max_batch must be between 1 and {limits.BATCH_MAX}")
    _validate_retention(settings)
    if settings.webhook_max_attempts < 1 or settings.webhook_disable_after < 1:
        raise ConfigError("webhook_max_attempts and webhook_disable_after must be at least 1")
    if not 1 <= settings.webhook_concurrency <= 256:
        raise ConfigError("webhook_concurrency must be between 1 and 256")
    if not 0 <= settings.claim_after <= 60:
        raise ConfigError("claim_after must be between 0 and 60 seconds")
    if not 1 <= settings.worker_batch <= 256:
        raise ConfigError("worker_batch must be between 1 and 256")
    if settings.webhook_timeout <= 0:
        raise ConfigError("webhook_timeout must be above 0")
    from scheduler_app.services.outbound.policy import Allowlist  # stdlib only; no cycle

    try:
        Allowlist.parse(settings.outbound_allowlist)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    if settings.profile == "production":
        if settings.secret_key == settings.jwt_secret:
            raise ConfigError(
                "production refuses to start: SCHEDULER_SECRET_KEY and SCHEDULER_JWT_SECRET "
                "must differ (a leak of one must not forge the other's signatures)"
            )
        for name in ("secret_key", "jwt_secret"):
            value = getattr(settings, name)
            if value == DEFAULT_SECRET or len(value) < 32:
                raise ConfigError(
                    f"production refuses to start: set SCHEDULER_{name.upper()} "
                    "to a random value of at least 32 characters"
                )


@functools.lru_cache(maxsize=16)
def queue_retention(settings: Settings) -> dict[str, float]:
    """The ``queue_retention`` setting as {queue: seconds}; raises ConfigError when malformed."""
    parsed: dict[str, float] = {}
    for entry in settings.queue_retention:
        name, sep, raw = entry.partition("=")
        try:
            seconds = float(raw)
        except ValueError:
            seconds = float("nan")
        if (
            not sep
            or not name.strip()
            or not (limits.RETENTION_MIN <= seconds <= limits.RETENTION_MAX)
        ):
            raise ConfigError(
                f"queue_retention: {entry!r} is not queue=seconds "
                f"({limits.RETENTION_MIN:g} to {limits.RETENTION_MAX:g})"
            )
        parsed[name.strip()] = seconds
    unknown = sorted(set(parsed) - set(settings.queues))
    if unknown:
        raise ConfigError(f"queue_retention names unknown queues {unknown}")
    return parsed


def _validate_retention(settings: Settings) -> None:
    for name in ("retention_succeeded", "retention_cancelled"):
        if not limits.RETENTION_MIN <= getattr(settings, name) <= limits.RETENTION_MAX:
            raise ConfigError(
                f"{name} must be between {limits.RETENTION_MIN:g} and {limits.RETENTION_MAX:g}"
            )
    if not (
        settings.retention_failed == 0
        or (limits.RETENTION_MIN <= settings.retention_failed <= limits.RETENTION_MAX)
    ):
        raise ConfigError(
            "retention_failed must be 0 (as long as its dead letter) or 1 s to 3650 d"
        )
    queue_retention(settings)
    if not 0 < settings.prune_interval <= 60:
        raise ConfigError("prune_interval must be above 0 and at most 60 seconds")
    if not 1 <= settings.prune_batch <= 10_000:
        raise ConfigError("prune_batch must be between 1 and 10000")
    if settings.prune_budget <= 0:
        raise ConfigError("prune_budget must be above 0")
    if settings.prune_vacuum not in ("auto", "always", "never"):
        raise ConfigError("prune_vacuum must be auto, always or never")


__all__ = ["ConfigError", "Settings", "load_settings", "queue_retention"]
