"""Only the ledger package changes a task's state.

Every state change must go through ``services/ledger/transitions.py``, which writes the event,
run, dead letter and outcome beside it; a status written anywhere else would skip them (a
workflow release or a notification silently lost). This reads the product's source and fails on
any write of ``tasks.status`` outside the ledger package.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

from scheduler_app.services.ledger.transitions import CLAIM_MOVE, SUCCEED_MOVE, Move
from scheduler_app.states import TaskStatus

ROOT = Path(__file__).resolve().parents[2]
PRODUCT = ("scheduler_app", "tasks", "manage.py")
LEDGER = ROOT / "scheduler_app" / "services" / "ledger"
SQL_STATUS_WRITE = re.compile(
    r"\bUPDATE\s+tasks\b(?:(?!\bUPDATE\b).)*?\bSET\b(?:(?!\bWHERE\b).)*?\bstatus\s*=",
    re.IGNORECASE | re.DOTALL,
)


def status_writes(source: str) -> list[str]:
    """Where ``source`` changes tasks.status: SQL text, ``update(Task).values(status=...)``,
    ``obj.status = ...`` or ``setattr(obj, "status", ...)``."""
    found = []
    tree = ast.parse(source)
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            if SQL_STATUS_WRITE.search(node.value):
                found.append(f"line {node.lineno}: SQL UPDATE of tasks.status")
        elif isinstance(node, ast.JoinedStr):
            text = "".join(v.value for v in node.values if isinstance(v, ast.Constant))
            if SQL_STATUS_WRITE.search(text):
                found.append(f"line {node.lineno}: SQL UPDATE of tasks.status")
        elif isinstance(node, ast.Call) and _is_values_on_task_update(node):
            keys = {k.arg for k in node.keywords}
            for arg in node.args:
                if isinstance(arg, ast.Dict):
                    keys |= {ast.unparse(k).strip("'\"") for k in arg.keys if k is not None}
            if keys & {"status", "Task.status"}:
                found.append(f"line {node.lineno}: update(Task).values(status=...)")
        elif isinstance(node, ast.Assign | ast.AugAssign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                if isinstance(target, ast.Attribute) and target.attr == "status":
                    found.append(f"line {node.lineno}: assignment to .status")
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id == "setattr"
            and len(node.args) > 1
            and isinstance(node.args[1], ast.Constant)
            and node.args[1].value == "status"
        ):
            found.append(f"line {node.lineno}: setattr(..., 'status', ...)")
    return found


def _is_values_on_task_update(call: ast.Call) -> bool:
    func = call.func
    if not (isinstance(func, ast.Attribute) and func.attr == "values"):
        return False
    node = func.value
    while True:  # walk the method chain back to its start: update(Task).where(...).values
        if isinstance(node, ast.Call):
            if isinstance(node.func, ast.Name) and node.func.id == "update":
                return any(ast.unparse(a) in {"Task", "Task.__table__"} for a in node.args)
            node = node.func
        elif isinstance(node, ast.Attribute):
            node = node.value
        else:
            return False


def _product_files() -> list[Path]:
    files = []
    for name in PRODUCT:
        path = ROOT / name
        files += [path] if path.is_file() else sorted(path.rglob("*.py"))
    return [f for f in files if LEDGER not in f.parents]


def test_no_code_outside_the_ledger_writes_task_status():
    offenders = {
        str(path.relative_to(ROOT)): found
        for path in _product_files()
        if (found := status_writes(path.read_text()))
    }
    assert offenders == {}


def test_the_check_finds_every_kind_of_status_write():
    """Negative control: each way of writing the status outside the ledger is caught."""
    samples = [
        "conn.execute(\"UPDATE tasks SET status = 'failed' WHERE id = %s\", (tid,))",
        'sql = f"""update tasks\n   set finished_at = now(), status = {x}\n where id = 1"""',
        "session.execute(update(Task).where(Task.id == tid).values(status='queued'))",
        "session.execute(update(Task).values({Task.status: 'queued'}))",
        "task.status = 'cancelled'",
        "setattr(task, 'status', 'cancelled')",
    ]
    for sample in samples:
        assert status_writes(sample), sample
    harmless = [
        "conn.execute(\"UPDATE tasks SET dispatched_at = now() WHERE status = 'queued'\")",
        "session.execute(update(Task).where(Task.status == 'queued').values(dispatched_at=now))",
        "worker.state = 'paused'",
    ]
    for sample in harmless:
        assert not status_writes(sample), sample
    # The check is what keeps the ledger's own moves the only ones: they do write the status.
    assert status_writes(f"SQL = {Move(TaskStatus.CANCELLED, rows='id = $1').sql()!r}")


def test_the_fast_moves_are_the_builders_output():
    """The worker's claim and success carry the same side effects as every other move."""
    for move, events in ((CLAIM_MOVE, "'running'"), (SUCCEED_MOVE, "'succeeded'")):
        sql = move.sql()
        assert "INSERT INTO task_events" in sql and events in sql
        assert "runs" in sql
    assert "outcome_id" in SUCCEED_MOVE.sql()
