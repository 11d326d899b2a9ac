"""Notifications of outcomes (signed webhooks, email), created on the outcome seam.

Not built yet."""
