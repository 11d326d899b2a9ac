"""The delivery log: reads, redelivery, and the backoff between attempts.

A delivery is a row of ``deliveries``: what the log shows (status, attempts, last status code
and a short excerpt of the last error), the exact body sent, and its place in the queue the
schedulers' dispatcher works through (``dispatch``).
"""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.orm import Session, sessionmaker

from scheduler_app.config import Settings
from scheduler_app.errors import Conflict, NotFound
from scheduler_app.models import Delivery, Task, Workflow
from scheduler_app.models.base import utcnow
from scheduler_app.services.clients.principal import Principal
from scheduler_app.services.ledger.unit import after_commit, unit_of_work
from scheduler_app.services.notifiers.announce import WRITTEN
from scheduler_app.services.outbound.client import redact


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
        "created_at": delivery.created_at,
        "next_attempt_at": delivery.next_attempt_at if delivery.status == "pending" else None,
        "last_attempt_at": delivery.last_attempt_at,
        "delivered_at": delivery.delivered_at,
    }


@dataclass
class DeliveryService:
    """The API's side of deliveries."""

    sessions: sessionmaker[Session]
    settings: Settings

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
        """Send a delivery again (same webhook-id), due at once in a new round of attempts.
        Raises NotFound, or Conflict while it is still pending."""
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
            session.execute(
                text(
                    "UPDATE deliveries SET status = 'pending', delivered_at = NULL, lease = NULL, "
                    "round_attempts = 0, round_at = :now, next_attempt_at = :now WHERE id = :id"
                ),
                {"id": delivery.id, "now": utcnow()},
            )
            after_commit(session, WRITTEN.set)
        with self.sessions() as session:
            return present(session.get(Delivery, delivery_id))


__all__ = ["DeliveryService", "backoff", "present"]
