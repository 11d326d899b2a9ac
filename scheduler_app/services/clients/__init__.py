"""API clients: credentials, roles, and the principal a request acts as."""
