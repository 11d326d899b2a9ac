"""The outbound URL policy: address classes, literal spellings, allowlist, profiles, time bounds.

Negative control: OUTBOUND_POLICY_NEGATIVE_CONTROL=1 turns the policy off and the refusal tests
fail (tests/outbound_support.py).
"""

from __future__ import annotations

import ipaddress
import socket

import pytest

from scheduler_app.config import ConfigError, load_settings
from scheduler_app.services.outbound.policy import (
    STRICT,
    Allowlist,
    Category,
    OutboundPolicy,
    OutboundRefusedError,
    classify,
    parse_literal,
    policy_for,
)
from scheduler_app.task_types import load_task_modules
from tests import outbound_support as support
from tests.outbound_support import production_settings

outbound_controls = support.outbound_controls  # the negative controls' switch

DEV = policy_for(load_settings({"profile": "development"}, {}))

# Every spelling of a refused address a resolver accepts, with the class it must be refused as.
REFUSED_IN_PRODUCTION = {
    "127.0.0.1": Category.LOOPBACK,
    "0x7f000001": Category.LOOPBACK,
    "2130706433": Category.LOOPBACK,
    "0177.0.0.1": Category.LOOPBACK,
    "127.1": Category.LOOPBACK,
    "0x7f.1": Category.LOOPBACK,
    "127.0.0.1.": Category.LOOPBACK,
    "[::1]": Category.LOOPBACK,
    "[::ffff:127.0.0.1]": Category.LOOPBACK,
    "[::ffff:7f00:1]": Category.LOOPBACK,
    "[0:0:0:0:0:ffff:127.0.0.1]": Category.LOOPBACK,
    "[64:ff9b::7f00:1]": Category.LOOPBACK,  # NAT64
    "[2002:7f00:1::]": Category.LOOPBACK,  # 6to4
    "[::127.0.0.1]": Category.LOOPBACK,  # IPv4-compatible
    "localhost": Category.LOOPBACK,
    "LocalHost.": Category.LOOPBACK,
    "api.localhost": Category.LOOPBACK,
    "0.0.0.0": Category.UNSPECIFIED,
    "0": Category.UNSPECIFIED,
    "[::]": Category.UNSPECIFIED,
    "10.0.0.1": Category.PRIVATE,
    "012.0.0.1": Category.PRIVATE,
    "172.16.5.4": Category.PRIVATE,
    "192.168.1.1": Category.PRIVATE,
    "3232235777": Category.PRIVATE,
    "100.64.0.1": Category.PRIVATE,
    "[fd12:3456::1]": Category.PRIVATE,
    "224.0.0.1": Category.MULTICAST,
    "[ff02::1]": Category.MULTICAST,
    "240.0.0.1": Category.RESERVED,
    "255.255.255.255": Category.RESERVED,
    "192.0.2.10": Category.RESERVED,
    "[2001:db8::1]": Category.RESERVED,
}
REFUSED_EVERYWHERE = {
    "169.254.169.254": Category.METADATA,
    "0xa9fea9fe": Category.METADATA,
    "2852039166": Category.METADATA,
    "0251.0376.0251.0376": Category.METADATA,
    "169.254.43518": Category.METADATA,
    "[::ffff:169.254.169.254]": Category.METADATA,
    "[::ffff:a9fe:a9fe]": Category.METADATA,
    "[64:ff9b::a9fe:a9fe]": Category.METADATA,
    "[2002:a9fe:a9fe::1]": Category.METADATA,
    "[fd00:ec2::254]": Category.METADATA,
    "100.100.100.200": Category.METADATA,
    "168.63.129.16": Category.METADATA,
    "metadata.google.internal": Category.METADATA,
    "METADATA.GOOGLE.INTERNAL.": Category.METADATA,
    "metadata.azure.com": Category.METADATA,
    "169.254.1.1": Category.LINK_LOCAL,
    "[fe80::1]": Category.LINK_LOCAL,
    "[fe80::1%25eth0]": Category.LINK_LOCAL,
    "[::ffff:169.254.7.7]": Category.LINK_LOCAL,
}
PUBLIC = ["93.184.216.34", "8.8.8.8", "[2606:4700:4700::1111]", "[::ffff:8.8.8.8]", "example.com"]


def _refusal(policy: OutboundPolicy, host: str) -> str | None:
    try:
        policy.check_url(f"http://{host}:8080/x")
    except OutboundRefusedError as exc:
        return str(exc)
    return None


@pytest.mark.parametrize("host", REFUSED_IN_PRODUCTION)
def test_production_refuses_private_targets_in_every_spelling(host):
    category = REFUSED_IN_PRODUCTION[host]
    assert _refusal(STRICT, host) == f"refused by the outbound policy: {category}"
    assert _refusal(DEV, host) is None  # development allows local receivers


@pytest.mark.parametrize("host", REFUSED_EVERYWHERE)
def test_metadata_and_link_local_are_refused_in_every_profile(host):
    category = REFUSED_EVERYWHERE[host]
    for policy in (STRICT, DEV, OutboundPolicy(allow_private=True)):
        assert _refusal(policy, host) == f"refused by the outbound policy: {category}"


@pytest.mark.parametrize("host", PUBLIC)
def test_public_targets_pass_in_production(host):
    assert _refusal(STRICT, host) is None


@pytest.mark.parametrize(
    "spelling",
    ["127.0.0.1", "0x7f000001", "2130706433", "0177.0.0.1", "127.1", "0x7f.1", "1.2.65535", "0"],
)
def test_ipv4_spellings_read_as_the_resolver_reads_them(spelling):
    assert parse_literal(spelling) == ipaddress.IPv4Address(socket.inet_aton(spelling))


@pytest.mark.parametrize(
    "url",
    [
        "http://1.2.3.256/",
        "http://08.0.0.1/",
        "http://1.2.3.4.5/",
        "http://example.123/",
        "http://4294967296/",
        "http://[::1/",
        "http://host:99999/",
        "ftp://example.com/",
        "http:///path",
        "//example.com/",
    ],
)
def test_malformed_urls_are_refused_as_invalid(url):
    with pytest.raises(ValueError):
        STRICT.check_url(url)


def test_classify_orders_metadata_before_link_local():
    assert classify(ipaddress.ip_address("169.254.169.254")) is Category.METADATA
    assert classify(ipaddress.ip_address("169.254.169.253")) is Category.LINK_LOCAL
    assert classify(ipaddress.ip_address("1.1.1.1")) is None


def test_allowlist_lets_named_private_targets_through_in_production():
    policy = policy_for(
        production_settings(
            outbound_allowlist=(
                "10.1.2.3",
                "192.168.50.0/24",
                "partner.internal",
                "*.corp.example",
                "[fd00:1::/64]",
                "169.254.0.0/16",  # has no effect: link-local is refused in every profile
            )
        )
    )
    ip = ipaddress.ip_address
    assert policy.refusal(ip("10.1.2.3")) is None
    assert policy.refusal(ip("::ffff:10.1.2.3")) is None
    assert policy.refusal(ip("10.1.2.4")) is Category.PRIVATE
    assert policy.refusal(ip("192.168.50.7")) is None
    assert policy.refusal(ip("fd00:1::5")) is None
    assert policy.refusal(ip("10.9.9.9"), "partner.internal") is None
    assert policy.refusal(ip("10.9.9.9"), "Partner.Internal.") is None
    assert policy.refusal(ip("10.9.9.9"), "git.corp.example") is None
    assert policy.refusal(ip("10.9.9.9"), "corp.example") is Category.PRIVATE
    assert policy.refusal(ip("10.9.9.9"), "other.internal") is Category.PRIVATE
    assert policy.refusal(ip("169.254.169.254"), "partner.internal") is Category.METADATA
    assert policy.refusal(ip("169.254.1.1")) is Category.LINK_LOCAL


def test_profiles_choose_the_rules():
    assert policy_for(None) is STRICT
    assert policy_for(production_settings()).allow_private is False
    assert policy_for(load_settings({"profile": "test"}, {})).allow_private is True
    assert DEV.allow_private is True


def test_an_unreadable_allowlist_entry_stops_the_start():
    with pytest.raises(ConfigError, match="outbound_allowlist"):
        load_settings({"outbound_allowlist": "10.0.0.0/8,bad/entry"}, {})
    assert Allowlist.parse(["10.0.0.0/8", " ", "a.example"]).names == {"a.example"}


@pytest.fixture(scope="module")
def http_request():
    return load_task_modules(["tasks.demo", "tasks.http"])["http.request"]


def test_http_request_url_is_checked_at_submission_under_the_apps_profile(http_request):
    production = production_settings()
    development = load_settings({"profile": "development"}, {})
    for url in ("http://0x7f000001/", "http://[::ffff:127.0.0.1]:6379/", "http://localhost/"):
        errors = http_request.check_call([], {"url": url}, production)
        assert errors["kwargs.url"] == ["refused by the outbound policy: loopback address"]
    for url in ("http://127.0.0.1/", "http://[::ffff:127.0.0.1]:6379/", "http://localhost/"):
        assert http_request.check_call([], {"url": url}, development) == {}
    # Allowed by the policy in development, but not a spelling the API documents: a dotted quad.
    assert "kwargs.url" in http_request.check_call([], {"url": "http://0x7f000001/"}, development)
    positional = http_request.check_call(["http://169.254.169.254/latest"], {}, development)
    assert "cloud metadata" in positional["kwargs.url"][0]


@pytest.mark.parametrize("timeout", [1e9, 300.5, 0, -1, "5", True, float("inf")])
def test_http_request_timeout_beyond_http_timeout_max_is_refused(http_request, timeout):
    errors = http_request.check_call([], {"url": "http://example.com/", "timeout": timeout})
    assert "kwargs.timeout" in errors


def test_http_request_timeout_bound_follows_the_setting(http_request):
    settings = production_settings(http_timeout_max=5)
    check = http_request.check_call
    assert check([], {"url": "http://example.com/", "timeout": 5}, settings) == {}
    assert (
        "at most 5"
        in check([], {"url": "http://e.com/", "timeout": 6}, settings)["kwargs.timeout"][0]
    )
    assert check([], {"url": "http://example.com/", "timeout": 300}) == {}  # the default bound


def test_http_request_headers_must_be_strings_without_line_breaks(http_request):
    check = http_request.check_call
    assert "kwargs.headers" in check([], {"url": "http://e.com/", "headers": {"a": 1}})
    assert "kwargs.headers" in check([], {"url": "http://e.com/", "headers": {"a": "b\r\nc: d"}})
    assert check([], {"url": "http://e.com/", "headers": {"X-A": "b"}}) == {}
