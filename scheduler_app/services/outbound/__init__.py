"""Outbound HTTP (http.request, webhooks): the URL policy and the client that enforces it."""
