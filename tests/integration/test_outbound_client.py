"""The outbound client against real local servers: what it reaches, refuses and reports.

Negative controls (tests/outbound_support.py): OUTBOUND_POLICY_NEGATIVE_CONTROL=1 (the refusal
tests fail), OUTBOUND_REBIND_NEGATIVE_CONTROL=1 (the rebinding test fails),
OUTBOUND_BANNER_NEGATIVE_CONTROL=1 (the no-banner test fails).
"""

from __future__ import annotations

import socket
import time

import pytest

from scheduler_app.services.outbound.client import OutboundClient, OutboundConnectionError
from scheduler_app.services.outbound.policy import STRICT, OutboundPolicy, OutboundRefusedError
from scheduler_app.services.outbound.policy import policy_for as _policy_for
from tests import outbound_support as support
from tests.outbound_support import BANNER_WORDS, Recorder, production_settings

# The shared fixtures (and the negative controls' switch) of tests/outbound_support.py.
outbound_controls = support.outbound_controls
recorder, resolver, silent_socket = support.recorder, support.resolver, support.silent_socket
banner_server = support.banner_server

LOCAL = OutboundPolicy(allow_private=True)  # what development and test allow
FIXED_DESCRIPTIONS = {
    "the peer did not answer with HTTP",
    "connection closed without a response",
    "connection reset",
    "malformed HTTP response",
}


def test_allowed_call_returns_status_headers_and_body(recorder):
    response = OutboundClient(LOCAL).request(
        "POST", recorder.url("/ok"), body=b"hi", headers={"X-Trace": "1"}, timeout=5
    )
    assert (response.status, response.text) == (200, "echo:hi")
    assert response.headers["Content-Type"] == "text/plain; charset=utf-8"
    assert recorder.requests[0]["headers"]["X-Trace"] == "1"
    assert recorder.requests[0]["headers"]["Host"] == f"127.0.0.1:{recorder.port}"


def test_body_is_cut_at_the_limit(recorder):
    response = OutboundClient(LOCAL, body_limit=1000).request(
        "GET", recorder.url("/big"), timeout=5
    )
    assert len(response.body) == 1000 and response.truncated


def test_redirects_are_not_followed(recorder):
    response = OutboundClient(LOCAL).request("GET", recorder.url("/redirect"), timeout=5)
    assert response.status == 302
    assert response.headers["Location"].startswith("http://169.254.169.254/")
    assert recorder.hits == {"/redirect": 1}


def test_production_refuses_a_literal_loopback_target_before_connecting(recorder):
    client = OutboundClient(_policy_for(production_settings()))
    for url in (recorder.url(), recorder.url(host="0x7f000001"), recorder.url(host="[::1]")):
        with pytest.raises(OutboundRefusedError, match="loopback address"):
            client.request("GET", url, timeout=5)
    assert recorder.hit_count == 0


def test_production_refuses_a_name_that_resolves_to_loopback_at_connect_time(recorder, resolver):
    """A name is not checked at submission; the address it resolves to is, when connecting."""
    resolver("receiver.example", ["127.0.0.1"])
    url = recorder.url(host="receiver.example")
    STRICT.check_url(url)  # a name passes the submission check
    with pytest.raises(OutboundRefusedError, match="loopback address"):
        OutboundClient(STRICT).request("GET", url, timeout=5)
    assert recorder.hit_count == 0


def test_production_allows_an_allowlisted_name_and_address(recorder, resolver):
    resolver("receiver.internal", ["127.0.0.1"])
    by_name = OutboundClient(
        _policy_for(production_settings(outbound_allowlist=("receiver.internal",)))
    )
    assert by_name.request("GET", recorder.url(host="receiver.internal"), timeout=5).status == 200
    by_range = OutboundClient(_policy_for(production_settings(outbound_allowlist=("127.0.0.0/8",))))
    assert by_range.request("GET", recorder.url(), timeout=5).status == 200
    assert recorder.hits == {"/ok": 2}


def _twin_servers() -> tuple[Recorder, Recorder]:
    """An allowed server on 127.0.0.2 and an internal one on 127.0.0.1, on the same port."""
    for _ in range(20):
        allowed = Recorder("127.0.0.2")
        try:
            internal = Recorder("127.0.0.1", allowed.port)
        except OSError:
            allowed.server.server_close()
            continue
        return allowed, internal
    raise AssertionError("no port free on both 127.0.0.1 and 127.0.0.2")


def test_dns_rebinding_cannot_reach_an_address_that_was_not_checked(resolver):
    """The name answers an allowed address first and an internal one on every later lookup: the
    client connects to the address it checked, so the internal server is never reached."""
    allowed, internal = _twin_servers()
    with allowed, internal:
        resolver("rebind.example", ["127.0.0.2"], ["127.0.0.1"])
        client = OutboundClient(_policy_for(production_settings(outbound_allowlist=("127.0.0.2",))))
        response = client.request("GET", allowed.url(host="rebind.example"), timeout=5)
        assert response.status == 200
        assert (allowed.hit_count, internal.hit_count) == (1, 0)
        assert allowed.requests[0]["headers"]["Host"] == f"rebind.example:{allowed.port}"


def test_a_name_with_refused_and_allowed_addresses_connects_only_to_an_allowed_one(
    recorder, resolver
):
    resolver("mixed.example", ["169.254.169.254", "127.0.0.1"])
    resolver("imds.example", ["169.254.169.254", "fe80::1"])
    client = OutboundClient(LOCAL)
    assert client.request("GET", recorder.url(host="mixed.example"), timeout=5).status == 200
    with pytest.raises(OutboundRefusedError, match="cloud metadata"):
        client.request("GET", recorder.url(host="imds.example"), timeout=5)
    assert recorder.hits == {"/ok": 1}


def test_https_connections_go_through_the_same_checks(recorder, resolver):
    resolver("tls.example", ["127.0.0.1"])
    with pytest.raises(OutboundRefusedError, match="loopback address"):
        OutboundClient(STRICT).request("GET", f"https://tls.example:{recorder.port}/", timeout=5)
    # Allowed, it connects (to a server that speaks plain HTTP, so the handshake fails).
    message = _connection_error(f"https://tls.example:{recorder.port}/")
    assert message == f"GET https://tls.example:{recorder.port}/: TLS handshake failed"


def _connection_error(url: str, timeout: float = 5) -> str:
    with pytest.raises(OutboundConnectionError) as caught:
        OutboundClient(LOCAL).request("GET", url, timeout=timeout)
    assert caught.value.__cause__ is None and caught.value.__suppress_context__
    return str(caught.value)


def test_errors_describe_the_failure_without_the_peers_banner(banner_server, redis_server):
    """A service that speaks first has its banner read as the status line; the message names
    the failure and nothing the peer sent. Redis and PostgreSQL (which hang up on HTTP) too."""
    message = _connection_error(banner_server.url())
    assert message == f"GET {banner_server.url()}: the peer did not answer with HTTP"
    for url in (f"http://127.0.0.1:{redis_server.port}/", "http://127.0.0.1:5432/"):
        message = _connection_error(url)
        assert message.startswith(f"GET {url}: ")
        assert message.partition(": ")[2] in FIXED_DESCRIPTIONS, message
    for url in (banner_server.url(), f"http://127.0.0.1:{redis_server.port}/"):
        message = _connection_error(url)
        assert not [word for word in BANNER_WORDS if word in message], message


def test_connection_refused_and_unresolvable_names_are_named_plainly(resolver):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, not listening: nothing accepts
    assert _connection_error(f"http://127.0.0.1:{port}/").endswith(": connection refused")
    resolver("no-such-host.example", [])
    assert _connection_error("http://no-such-host.example/").endswith(
        ": the host name does not resolve"
    )


def test_a_silent_peer_times_out_within_the_timeout(silent_socket):
    started = time.monotonic()
    message = _connection_error(silent_socket.url(), timeout=1)
    assert message.endswith(": timed out waiting for the response")
    assert time.monotonic() - started < 10
