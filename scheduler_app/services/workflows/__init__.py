"""Workflows: DAGs of tasks released on the outcome seam (``advance``)."""
