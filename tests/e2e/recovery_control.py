"""A negative control loaded by the worker as a task module (tests/e2e/test_hung_database.py):
its ledger connection no longer replaces a connection found broken, so a statement that meets a
terminated backend fails instead of being sent again on a new connection. Defines no task type.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from scheduler_app.services.ledger.connection import (
    LedgerConnection,
    PreparedStatement,
    run_prepared,
)


def _execute_without_reconnect(
    self: LedgerConnection, statement: PreparedStatement, params: Sequence[Any]
) -> list[tuple]:
    return run_prepared(self._connection(), self._link.uses, statement, params)


LedgerConnection.execute = _execute_without_reconnect
