"""Prometheus metrics: ledger-derived series (ledger.py), process exporters (process.py)."""
