"""Recurring schedules (cron and interval), fired exactly once per slot. Not built yet."""
