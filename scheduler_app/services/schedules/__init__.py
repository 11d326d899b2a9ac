"""Recurring schedules (cron and interval): slots, the firing loop, the service the API calls."""
