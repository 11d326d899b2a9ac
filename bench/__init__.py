"""Benchmarks: what the ledger and the HTTP API cost on top of raw Celery (``python -m bench``).

Every scenario runs beside its raw-Celery counterpart in the same run, on services the bench
starts itself (its own database on the machine's PostgreSQL, its own redis-server), and the
result is one table of medians with the ratio ours/raw and whether the issue's target is met.
"""
