"""tasks.flower refuses to start without credentials; standalone puts Flower on 5555 if free."""

from __future__ import annotations

import socket

import pytest

from scheduler_app import standalone
from tasks import flower


@pytest.mark.parametrize(
    ("argv", "environ", "expected"),
    [
        ([], {}, False),
        (["--port=1"], {"FLOWER_BASIC_AUTH": ""}, False),
        (["--basic-auth=a:b"], {}, True),
        (["--basic_auth=a:b"], {}, True),
        (["--auth=.*@example.com"], {}, True),
        ([], {"FLOWER_BASIC_AUTH": "a:b"}, True),
        ([], {"FLOWER_AUTH": ".*"}, True),
    ],
)
def test_credentials_are_found_in_options_or_environment(argv, environ, expected):
    assert flower.has_credentials(argv, environ) is expected


def test_flower_refuses_to_start_without_credentials(monkeypatch):
    monkeypatch.delenv("FLOWER_BASIC_AUTH", raising=False)
    monkeypatch.delenv("FLOWER_AUTH", raising=False)
    with pytest.raises(SystemExit, match="without credentials"):
        flower.main(["--port=1"])


def test_guard_puts_metrics_and_healthcheck_behind_authentication():
    from flower.views import monitor

    flower.guard_every_path()
    flower.guard_every_path()  # idempotent
    for name in flower.OPEN_HANDLERS:
        handler = getattr(monitor, name).get
        assert handler.__wrapped__ is not None
        assert not hasattr(handler.__wrapped__, "__wrapped__"), "wrapped once"


def test_standalone_flower_port_is_the_usual_one_unless_taken(monkeypatch):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setattr(standalone, "FLOWER_PORT", port)
    assert standalone._flower_port() == port
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", port))
        taken.listen()
        other = standalone._flower_port()
    assert other != port and other > 0
