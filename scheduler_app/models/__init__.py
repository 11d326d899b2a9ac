"""SQLAlchemy models of the ledger."""

from scheduler_app.models.base import Base
from scheduler_app.models.client import Client, RevokedToken
from scheduler_app.models.control import Pause, WorkerSetting
from scheduler_app.models.counter import Counter, PrunedTasks
from scheduler_app.models.dead_letter import DeadLetter
from scheduler_app.models.notification import Delivery, SigningKey, WebhookEndpoint
from scheduler_app.models.outcome import TaskOutcome
from scheduler_app.models.schedule import Schedule, ScheduleRun
from scheduler_app.models.task import Run, Task, TaskEvent
from scheduler_app.models.worker import WorkerInstance
from scheduler_app.models.workflow import Workflow, WorkflowEdge, WorkflowNode

__all__ = [
    "Base",
    "Client",
    "Counter",
    "DeadLetter",
    "Delivery",
    "Pause",
    "PrunedTasks",
    "RevokedToken",
    "Run",
    "Schedule",
    "ScheduleRun",
    "SigningKey",
    "Task",
    "TaskEvent",
    "TaskOutcome",
    "WebhookEndpoint",
    "WorkerInstance",
    "WorkerSetting",
    "Workflow",
    "WorkflowEdge",
    "WorkflowNode",
]
