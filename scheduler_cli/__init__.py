"""The `scheduler` command: a client of the HTTP API (DESIGN.md §7).

It talks to the API only, over HTTP: nothing here imports the Flask app, the services or a
database driver (tests/integration/test_cli.py checks that).
"""

__version__ = "1.0.0"
