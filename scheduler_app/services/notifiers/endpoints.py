"""Owners' webhook endpoints (Stripe/Svix style) and their default signing key."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select, text
from sqlalchemy.orm import Session, sessionmaker

from scheduler_app import limits as L
from scheduler_app.config import Settings
from scheduler_app.errors import Conflict, NotFound
from scheduler_app.models import WebhookEndpoint
from scheduler_app.models.base import utcnow
from scheduler_app.services.clients.principal import Principal
from scheduler_app.services.ledger.unit import unit_of_work
from scheduler_app.services.notifiers import signing


def present(endpoint: WebhookEndpoint, *, secret: bool = False) -> dict[str, Any]:
    """An endpoint as the API shows it; its secret only where asked (create, GET by id)."""
    shown = {
        "id": endpoint.id,
        "url": endpoint.url,
        "events": endpoint.events,
        "description": endpoint.description,
        "enabled": endpoint.enabled,
        "consecutive_failures": endpoint.consecutive_failures,
        "disabled_reason": endpoint.disabled_reason,
        "disabled_at": endpoint.disabled_at,
        "created_at": endpoint.created_at,
        "owner": endpoint.owner_id,
    }
    if secret:
        shown["secret"] = endpoint.secret
    return shown


@dataclass
class EndpointService:
    """Endpoints are their owner's: someone else's is NotFound (operators see all)."""

    sessions: sessionmaker[Session]
    settings: Settings

    def create(self, principal: Principal, body: Mapping[str, Any]) -> dict[str, Any]:
        """Register an endpoint with a fresh secret; raises Conflict past the per-owner bound."""
        with unit_of_work(self.sessions) as session:
            session.execute(
                text("SELECT pg_advisory_xact_lock(hashtext('webhook_endpoints'), hashtext(:o))"),
                {"o": str(principal.id)},
            )
            count = session.scalar(
                select(func.count()).where(WebhookEndpoint.owner_id == principal.id)
            )
            if count >= L.WEBHOOK_ENDPOINTS_MAX:
                raise Conflict(f"at most {L.WEBHOOK_ENDPOINTS_MAX} webhook endpoints per client")
            endpoint = WebhookEndpoint(
                id=uuid.uuid4(),
                owner_id=principal.id,
                url=body["url"],
                events=body.get("events"),
                description=body.get("description"),
                secret=signing.new_secret(),
                enabled=True,
                consecutive_failures=0,
                created_at=utcnow(),
            )
            session.add(endpoint)
            session.flush()
            return present(endpoint, secret=True)

    def list(self, principal: Principal) -> list[dict[str, Any]]:
        """The caller's endpoints (every one for an operator), oldest first."""
        query = select(WebhookEndpoint).order_by(WebhookEndpoint.created_at, WebhookEndpoint.id)
        if not principal.sees_everything:
            query = query.where(WebhookEndpoint.owner_id == principal.id)
        with self.sessions() as session:
            return [present(e) for e in session.scalars(query.limit(L.PAGE_MAX))]

    def get(self, principal: Principal, endpoint_id: uuid.UUID) -> dict[str, Any]:
        """One endpoint with its secret; raises NotFound."""
        with self.sessions() as session:
            return present(self._visible(session, principal, endpoint_id), secret=True)

    def update(
        self, principal: Principal, endpoint_id: uuid.UUID, changes: Mapping[str, Any]
    ) -> dict[str, Any]:
        """Change url, events, description or enabled; enabling again clears the failure
        count. Raises NotFound."""
        with unit_of_work(self.sessions) as session:
            endpoint = self._visible(session, principal, endpoint_id, lock=True)
            for name in ("url", "events", "description"):
                if name in changes:
                    setattr(endpoint, name, changes[name])
            if changes.get("enabled") is True and not endpoint.enabled:
                endpoint.enabled = True
                endpoint.consecutive_failures = 0
                endpoint.disabled_reason = None
                endpoint.disabled_at = None
            elif changes.get("enabled") is False and endpoint.enabled:
                endpoint.enabled = False
                endpoint.disabled_reason = "disabled by its owner"
                endpoint.disabled_at = utcnow()
            session.flush()
            return present(endpoint, secret=True)

    def delete(self, principal: Principal, endpoint_id: uuid.UUID) -> None:
        """Remove an endpoint; its pending deliveries fail. Raises NotFound."""
        with unit_of_work(self.sessions) as session:
            endpoint = self._visible(session, principal, endpoint_id, lock=True)
            session.execute(
                text(
                    "UPDATE deliveries SET status = 'failed', last_error = 'the endpoint was "
                    "deleted' WHERE endpoint_id = :id AND status = 'pending'"
                ),
                {"id": endpoint.id},
            )
            session.delete(endpoint)

    def default_secret(self, principal: Principal) -> dict[str, str]:
        """The caller's key for ``notify.webhook`` calls (created on first use)."""
        with unit_of_work(self.sessions) as session:
            return {"key": signing.default_key(session, principal.id)}

    def rotate_secret(self, principal: Principal) -> dict[str, str]:
        """A new default key; the old one keeps signing for ``webhook_key_overlap`` seconds."""
        with unit_of_work(self.sessions) as session:
            key = signing.rotate(session, principal.id, self.settings.webhook_key_overlap)
            return {"key": key}

    def _visible(
        self, session: Session, principal: Principal, endpoint_id: uuid.UUID, lock: bool = False
    ) -> WebhookEndpoint:
        query = select(WebhookEndpoint).where(WebhookEndpoint.id == endpoint_id)
        if lock:
            query = query.with_for_update()
        endpoint = session.scalars(query).first()
        if endpoint is None or not (principal.sees_everything or endpoint.owner_id == principal.id):
            raise NotFound("no such webhook endpoint")
        return endpoint
