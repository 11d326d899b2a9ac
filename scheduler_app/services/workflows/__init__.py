"""Workflows (DAGs of tasks), their nodes released on the outcome seam (ledger.outcomes).

Not built yet."""
