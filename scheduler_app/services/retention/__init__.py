"""Retention: finished work leaves the ledger once its time has passed (DESIGN.md section 9)."""

from scheduler_app.services.retention.partitions import Partitions
from scheduler_app.services.retention.policy import Retention
from scheduler_app.services.retention.pruner import Pruner, ledger_figures

__all__ = ["Partitions", "Pruner", "Retention", "ledger_figures"]
