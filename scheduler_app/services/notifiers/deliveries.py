"""The delivery log: one attempt of a delivery (run by ``notify.deliver``), reads, redelivery.

A delivery is a row of ``deliveries`` plus a task of the ledger (``delivery_task_id``) whose
attempts are the delivery's attempts: the task gets the platform's retries, its runs and
timeline, the dead-letter queue, the reconciler (a lost message is published again) and
redelivery after a worker's death for free. The row keeps what the log shows (status,
attempts, last status code and a short excerpt of the last error) and the exact body sent.
"""

from __future__ import annotations

import json
import random
import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.orm import Session, sessionmaker

from scheduler_app.config import Settings
from scheduler_app.errors import Conflict, NotFound
from scheduler_app.models import Delivery, Task, WebhookEndpoint, Workflow
from scheduler_app.models.base import utcnow
from scheduler_app.services.clients.principal import Principal
from scheduler_app.services.ledger.unit import unit_of_work
from scheduler_app.services.notifiers import email, signing, webhook
from scheduler_app.services.notifiers.announce import (
    MAX_ATTEMPTS_BOUND,
    delivery_task_row,
    publish_after_commit,
)
from scheduler_app.services.outbound.client import redact
from scheduler_app.services.tasks.submission import insert_tasks
from scheduler_app.task_types import PermanentError, RetryLaterError


class DeliveryFailedError(PermanentError):
    """The delivery was given up (no retry can help, or its attempts or time are used up)."""


def backoff(attempt: int, settings: Settings, asked: float | None = None) -> float:
    """Seconds before the next attempt: exponential from webhook_backoff, capped, with jitter
    (half fixed, half random, so retries spread but never bunch at zero); a Retry-After that
    asks for longer wins, within the cap."""
    cap = min(settings.webhook_backoff_max, settings.webhook_backoff * 2 ** max(attempt - 1, 0))
    delay = cap / 2 + random.uniform(0, cap / 2)
    if asked is not None:
        delay = max(delay, asked)
    return min(delay, settings.webhook_backoff_max)


def present(delivery: Any) -> dict[str, Any]:
    """A delivery as the log shows it (a webhook target without credentials or query)."""
    return {
        "id": delivery.id,
        "type": delivery.type,
        "channel": delivery.channel,
        "target": redact(delivery.target) if delivery.channel == "webhook" else delivery.target,
        "endpoint_id": delivery.endpoint_id,
        "status": delivery.status,
        "attempts": delivery.attempts,
        "last_status_code": delivery.last_status_code,
        "last_error": delivery.last_error,
        "webhook_id": delivery.webhook_id,
        "task_id": delivery.task_id,
        "workflow_id": delivery.workflow_id,
        "delivery_task_id": delivery.delivery_task_id,
        "created_at": delivery.created_at,
        "last_attempt_at": delivery.last_attempt_at,
        "delivered_at": delivery.delivered_at,
    }


@dataclass
class DeliveryService:
    """Deliveries over the ledger; ``attempt`` runs in a worker, the rest serve the API."""

    sessions: sessionmaker[Session]
    settings: Settings

    # --- the worker's side ------------------------------------------------------------------

    def attempt(self, delivery_id: uuid.UUID, attempt: int) -> dict[str, Any]:
        """Send one attempt of a pending delivery and record it.

        Returns the delivery when it was delivered (or was already). Raises RetryLaterError
        (with the backoff, or what Retry-After asked) while attempts and time remain, and
        DeliveryFailedError when it gives up: then the delivery is failed and its endpoint
        counts one more failed event (disabled at webhook_disable_after in a row).
        """
        settings = self.settings
        with unit_of_work(self.sessions) as session:
            delivery = session.get(Delivery, delivery_id)
            if delivery is None:
                raise DeliveryFailedError(f"delivery {delivery_id} does not exist")
            if delivery.status != "pending":
                return {"delivery": str(delivery_id), "status": delivery.status}
            endpoint = (
                session.get(WebhookEndpoint, delivery.endpoint_id) if delivery.endpoint_id else None
            )
            keys: list[str] = []
            if delivery.channel == "webhook":
                keys = (
                    [endpoint.secret]
                    if endpoint
                    else signing.signing_keys(session, delivery.owner_id)
                )
            snapshot = _Snapshot.of(delivery, endpoint)
        if snapshot.endpoint_id and not snapshot.endpoint_enabled:
            self._give_up(snapshot, None, "the endpoint is disabled", count=False)
        age = (utcnow() - snapshot.created_at).total_seconds()
        if attempt > 1 and age > settings.webhook_retry_window:
            self._give_up(snapshot, None, f"gave up after {age:.0f}s (webhook_retry_window)")
        if snapshot.channel == "webhook":
            result = webhook.send(
                settings, snapshot.target, keys, snapshot.webhook_id, snapshot.payload
            )
            outcome, code, error, asked = (
                result.outcome,
                result.status_code,
                result.error,
                result.retry_after,
            )
        else:
            outcome, code, error, asked = self._email(snapshot)
        if outcome == "delivered":
            self._delivered(snapshot, code)
            return {"delivery": str(delivery_id), "status": "delivered", "status_code": code}
        last = attempt >= min(settings.webhook_max_attempts, MAX_ATTEMPTS_BOUND)
        if outcome == "refused" or last:
            suffix = "" if outcome == "refused" else f" (attempt {attempt} was the last)"
            self._give_up(snapshot, code, f"{error}{suffix}")
        delay = backoff(attempt, settings, asked)
        self._record(snapshot.id, code, error)
        raise RetryLaterError(f"{error} (next attempt in {delay:.1f}s)", delay)

    def _email(self, snapshot: _Snapshot) -> tuple[str, int | None, str | None, None]:
        subject, body = email.render(json.loads(snapshot.payload), self.settings.public_url)
        try:
            email.send(self.settings, snapshot.target, subject, body)
        except email.EmailRefusedError as exc:
            return "refused", None, webhook.excerpt(str(exc)), None
        except email.EmailRetryableError as exc:
            return "retry", None, webhook.excerpt(str(exc)), None
        return "delivered", None, None, None

    def _record(self, delivery_id: uuid.UUID, code: int | None, error: str | None) -> None:
        with unit_of_work(self.sessions) as session:
            session.execute(
                text(
                    "UPDATE deliveries SET attempts = attempts + 1, last_status_code = :code, "
                    "last_error = :error, last_attempt_at = clock_timestamp() "
                    "WHERE id = :id AND status = 'pending'"
                ),
                {"id": delivery_id, "code": code, "error": error},
            )

    def _delivered(self, snapshot: _Snapshot, code: int | None) -> None:
        with unit_of_work(self.sessions) as session:
            session.execute(
                text(
                    "UPDATE deliveries SET attempts = attempts + 1, last_status_code = :code, "
                    "last_error = NULL, status = 'delivered', last_attempt_at = clock_timestamp(), "
                    "delivered_at = clock_timestamp() WHERE id = :id AND status = 'pending'"
                ),
                {"id": snapshot.id, "code": code},
            )
            if snapshot.endpoint_id:
                session.execute(
                    text("UPDATE webhook_endpoints SET consecutive_failures = 0 WHERE id = :id"),
                    {"id": snapshot.endpoint_id},
                )

    def _give_up(
        self, snapshot: _Snapshot, code: int | None, error: str | None, *, count: bool = True
    ) -> None:
        error = webhook.excerpt(error or "gave up")
        with unit_of_work(self.sessions) as session:
            failed = session.execute(
                text(
                    "UPDATE deliveries SET attempts = attempts + :tried, last_status_code = "
                    "coalesce(:code, last_status_code), last_error = :error, status = 'failed', "
                    "last_attempt_at = clock_timestamp() WHERE id = :id AND status = 'pending' "
                    "RETURNING id"
                ),
                {"id": snapshot.id, "code": code, "error": error, "tried": 1 if count else 0},
            ).first()
            if failed and count and snapshot.endpoint_id:
                session.execute(
                    text(
                        "UPDATE webhook_endpoints SET consecutive_failures = "
                        "consecutive_failures + 1, enabled = CASE WHEN consecutive_failures + 1 "
                        ">= :limit THEN FALSE ELSE enabled END, disabled_at = CASE WHEN enabled "
                        "AND consecutive_failures + 1 >= :limit THEN clock_timestamp() ELSE "
                        "disabled_at END, disabled_reason = CASE WHEN enabled AND "
                        "consecutive_failures + 1 >= :limit THEN :reason ELSE disabled_reason END "
                        "WHERE id = :endpoint"
                    ),
                    {
                        "endpoint": snapshot.endpoint_id,
                        "limit": self.settings.webhook_disable_after,
                        "reason": (
                            f"disabled after {self.settings.webhook_disable_after} consecutive "
                            "failed events (webhook_disable_after)"
                        ),
                    },
                )
        raise DeliveryFailedError(error)

    # --- the API's side ---------------------------------------------------------------------

    def for_task(self, principal: Principal, task_id: uuid.UUID) -> list[dict[str, Any]]:
        """The deliveries of a task's events, oldest first; raises NotFound."""
        with self.sessions() as session:
            owner = session.scalar(select(Task.owner_id).where(Task.id == task_id))
            return self._of(session, principal, owner, Delivery.task_id == task_id)

    def for_workflow(self, principal: Principal, workflow_id: uuid.UUID) -> list[dict[str, Any]]:
        """The deliveries of a workflow's events, oldest first; raises NotFound."""
        with self.sessions() as session:
            owner = session.scalar(select(Workflow.owner_id).where(Workflow.id == workflow_id))
            return self._of(session, principal, owner, Delivery.workflow_id == workflow_id)

    def _of(self, session: Session, principal: Principal, owner: Any, where: Any) -> list:
        if owner is None or not (principal.sees_everything or owner == principal.id):
            raise NotFound("no such resource")
        rows = session.scalars(
            select(Delivery).where(where).order_by(Delivery.created_at, Delivery.id)
        ).all()
        return [present(row) for row in rows]

    def redeliver(self, principal: Principal, delivery_id: uuid.UUID) -> dict[str, Any]:
        """Send a delivery again (same webhook-id): a new delivery task. Raises NotFound, or
        Conflict while it is still pending."""
        with unit_of_work(self.sessions) as session:
            delivery = session.scalars(
                select(Delivery).where(Delivery.id == delivery_id).with_for_update()
            ).first()
            if delivery is None or not (
                principal.sees_everything or delivery.owner_id == principal.id
            ):
                raise NotFound("no such delivery")
            if delivery.status == "pending":
                raise Conflict("the delivery is still pending")
            row = delivery_task_row(delivery.id, delivery.owner_id, utcnow())
            accepted = insert_tasks(session, [row])
            session.execute(
                text(
                    "UPDATE deliveries SET status = 'pending', delivered_at = NULL, "
                    "delivery_task_id = :task WHERE id = :id"
                ),
                {"id": delivery.id, "task": row["id"]},
            )
            publish_after_commit(session, accepted)
        with self.sessions() as session:
            return present(session.get(Delivery, delivery_id))


@dataclass(frozen=True)
class _Snapshot:
    """What one attempt needs of the delivery, read before any network call."""

    id: uuid.UUID
    channel: str
    target: str
    webhook_id: str
    payload: str
    created_at: Any
    endpoint_id: uuid.UUID | None
    endpoint_enabled: bool

    @classmethod
    def of(cls, delivery: Delivery, endpoint: WebhookEndpoint | None) -> _Snapshot:
        return cls(
            delivery.id,
            delivery.channel,
            endpoint.url if endpoint is not None else delivery.target,
            delivery.webhook_id,
            delivery.payload,
            delivery.created_at,
            delivery.endpoint_id,
            bool(endpoint.enabled) if endpoint is not None else True,
        )


__all__ = ["DeliveryFailedError", "DeliveryService", "backoff", "present"]
