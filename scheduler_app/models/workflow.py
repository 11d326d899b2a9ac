"""A workflow (a DAG of tasks): its nodes, which are task rows, and the edges between them."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, UUID
from sqlalchemy.orm import Mapped, mapped_column

from scheduler_app.models.base import Base

WORKFLOW_STATUSES = ("running", "succeeded", "failed", "cancelled")
TRIGGER_RULES = ("all_success", "all_done", "one_success", "one_failed", "none_failed")


class Workflow(Base):
    __tablename__ = "workflows"
    __table_args__ = (
        CheckConstraint(
            "status IN ({})".format(", ".join(f"'{s}'" for s in WORKFLOW_STATUSES)), name="status"
        ),
        Index("ix_workflows_owner_created", "owner_id", text("created_at DESC"), text("id DESC")),
        Index("ix_workflows_created", text("created_at DESC"), text("id DESC")),
        Index("ix_workflows_tags", "tags", postgresql_using="gin"),
        Index(
            "ix_workflows_finished",
            "status",
            "finished_at",
            postgresql_where=text("status <> 'running' AND retention IS NULL"),
        ),
        Index(
            "ix_workflows_prune_after",
            "prune_after",
            postgresql_where=text("prune_after IS NOT NULL"),
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(20))
    owner_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("clients.id", ondelete="RESTRICT")
    )
    tags: Mapped[list[str]] = mapped_column(ARRAY(String(100)), default=list)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Seconds the workflow (and its nodes) is kept once finished; None: its state's default.
    retention: Mapped[float | None] = mapped_column(Float)
    prune_after: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    notify: Mapped[dict[str, Any] | None] = mapped_column(JSONB)


class WorkflowNode(Base):
    """A node's current task (a retry points it at a new one) and its trigger rule."""

    __tablename__ = "workflow_nodes"
    __table_args__ = (
        CheckConstraint(
            "trigger_rule IN ({})".format(", ".join(f"'{r}'" for r in TRIGGER_RULES)),
            name="trigger_rule",
        ),
    )

    workflow_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("workflows.id", ondelete="CASCADE"), primary_key=True
    )
    node_id: Mapped[str] = mapped_column(String(100), primary_key=True)
    task_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), unique=True)
    trigger_rule: Mapped[str] = mapped_column(String(20))
    # How many parents it has, and how many of them ended in each terminal state: a parent's
    # end adds to its children's counts once (``counted`` marks the parent's task as added), so
    # deciding a child reads one row however many parents it has (services/workflows/advance.py).
    parents: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    parents_succeeded: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    parents_failed: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    parents_cancelled: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    parents_upstream_failed: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    parents_skipped: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    counted: Mapped[bool] = mapped_column(Boolean, default=False, server_default="false")


class WorkflowEdge(Base):
    """``child`` depends on ``parent`` (node ids of one workflow)."""

    __tablename__ = "workflow_edges"
    __table_args__ = (Index("ix_workflow_edges_child", "workflow_id", "child"),)

    workflow_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("workflows.id", ondelete="CASCADE"), primary_key=True
    )
    parent: Mapped[str] = mapped_column(String(100), primary_key=True)
    child: Mapped[str] = mapped_column(String(100), primary_key=True)
