"""The ledger: the only code that changes a task's state, and what happens once it has.

- ``transitions``: every state change as one guarded statement, with its event, run, dead letter
  and outcome written beside it (the worker's prepared claim and success are built by the same
  function as every other move).
- ``outcomes``: the one seam for "a task ended": consumers register there and see each terminal
  outcome exactly once.
- ``unit``: a transaction with hooks that run once it has committed (publish after commit).
- ``connection``: prepared statements on autocommit connections, with one recovery policy.
"""
