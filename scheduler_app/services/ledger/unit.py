"""One unit of work: a transaction, and what must happen only once it has committed.

Publishing a task before its row commits can run a task the ledger never accepted; draining an
outcome before its transition commits can release a workflow node for a parent that rolled
back. Code that needs "after commit" registers a hook on the session instead of remembering to
call it after the ``with`` block (Warehouse's ``addAfterCommitHook``): hooks run once the
outermost transaction commits, in order, and are dropped if it rolls back.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from sqlalchemy import event
from sqlalchemy.orm import Session, sessionmaker

log = logging.getLogger(__name__)

_HOOKS = "after_commit_hooks"


def after_commit(session: Session, hook: Callable[[], object]) -> None:
    """Run ``hook`` when the session's current transaction commits; never if it rolls back."""
    session.info.setdefault(_HOOKS, []).append(hook)


def run_hooks(hooks: list[Callable[[], object]]) -> None:
    """Run hooks of a committed unit; one that fails is logged and does not stop the others."""
    for hook in hooks:
        try:
            hook()
        except Exception:
            log.exception(
                "after-commit hook failed",
                extra={"hook": getattr(hook, "__qualname__", repr(hook))},
            )


@event.listens_for(Session, "after_commit")
def _committed(session: Session) -> None:
    hooks = session.info.pop(_HOOKS, None)
    if hooks:
        run_hooks(hooks)


@event.listens_for(Session, "after_rollback")
def _rolled_back(session: Session) -> None:
    session.info.pop(_HOOKS, None)


@contextmanager
def unit_of_work(sessions: sessionmaker[Session]) -> Iterator[Session]:
    """A session in one transaction: commits on success (then runs its hooks), else rolls back."""
    with sessions() as session, session.begin():
        yield session
