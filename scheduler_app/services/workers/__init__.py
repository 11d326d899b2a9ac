"""Worker instances: registration, heartbeats, and attempts whose worker is gone."""
