"""The outbound URL policy: which hosts and addresses the platform may call.

``http.request`` and webhook deliveries both go through it: link-local and cloud-metadata targets
are refused in every profile; private, loopback, unspecified, multicast and reserved ones are
refused in ``production`` unless the ``outbound_allowlist`` setting names them. A URL is checked
at submission (literal addresses in every spelling a resolver accepts) and each resolved address
again at connect time (``client.py``).
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any
from urllib.parse import urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
SCHEMES = frozenset({"http", "https"})
# Profiles whose users run local receivers; every other profile gets the strict rules.
PERMISSIVE_PROFILES = frozenset({"development", "test"})


class OutboundRefusedError(Exception):
    """The policy refuses this target; no retry can change that."""


class Category(StrEnum):
    """Why an address is not an ordinary public one, most severe first."""

    METADATA = "cloud metadata address"
    LINK_LOCAL = "link-local address"
    LOOPBACK = "loopback address"
    UNSPECIFIED = "unspecified address"
    MULTICAST = "multicast address"
    PRIVATE = "private address"
    RESERVED = "reserved address"


ALWAYS_REFUSED = frozenset({Category.METADATA, Category.LINK_LOCAL})
_SEVERITY = {category: rank for rank, category in enumerate(Category)}

# Instance metadata and host-platform endpoints outside the link-local ranges (which are refused
# whole): Alibaba, Azure's WireServer, Oracle, AWS IMDS and EKS Pod Identity over IPv6.
METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a)
    for a in (
        "169.254.169.254",
        "100.100.100.200",
        "168.63.129.16",
        "192.0.0.192",
        "fd00:ec2::254",
        "fd00:ec2::23",
    )
)
METADATA_NAMES = frozenset(
    {
        "metadata",
        "metadata.google.internal",
        "metadata.goog",
        "metadata.azure.com",
        "metadata.azure.internal",
        "instance-data",
        "instance-data.ec2.internal",
        "metadata.tencentyun.com",
        "metadata.platformequinix.com",
        "metadata.packet.net",
    }
)
# Names that always mean this machine (RFC 6761), refused like the loopback address.
LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost"})

_N = ipaddress.ip_network
# Written out rather than read from ipaddress' is_private and friends, whose tables changed
# between Python patch releases.
_NETWORKS: tuple[
    tuple[Category, tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]], ...
] = (
    (Category.LINK_LOCAL, (_N("169.254.0.0/16"), _N("fe80::/10"))),
    (Category.LOOPBACK, (_N("127.0.0.0/8"), _N("::1/128"))),
    (Category.UNSPECIFIED, (_N("0.0.0.0/8"), _N("::/128"))),
    (Category.MULTICAST, (_N("224.0.0.0/4"), _N("ff00::/8"))),
    (
        Category.PRIVATE,
        (
            _N("10.0.0.0/8"),
            _N("172.16.0.0/12"),
            _N("192.168.0.0/16"),
            _N("100.64.0.0/10"),  # carrier-grade NAT, also cloud-internal (Alibaba metadata)
            _N("198.18.0.0/15"),
            _N("fc00::/7"),
        ),
    ),
    (
        Category.RESERVED,
        (
            _N("192.0.0.0/24"),
            _N("192.0.2.0/24"),
            _N("198.51.100.0/24"),
            _N("203.0.113.0/24"),
            _N("240.0.0.0/4"),  # 255.255.255.255 included
            _N("100::/64"),
            _N("2001:db8::/32"),
            _N("fec0::/10"),
        ),
    ),
)
# IPv6 ranges that carry an IPv4 address in their low 32 bits (NAT64, IPv4-compatible).
_EMBEDDING_V4 = (_N("64:ff9b::/96"), _N("64:ff9b:1::/48"), _N("::/96"))


def _embedded_v4(ip: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """IPv4 addresses an IPv6 address stands for (mapped, 6to4, Teredo, NAT64, compatible)."""
    if ip.ipv4_mapped is not None:
        return [ip.ipv4_mapped]
    found = [ip.sixtofour] if ip.sixtofour is not None else []
    if ip.teredo is not None:
        found.extend(ip.teredo)
    if any(ip in net for net in _EMBEDDING_V4):
        found.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
    return found


def _listed(ip: IPAddress) -> Category | None:
    for category, networks in _NETWORKS:
        if any(ip.version == net.version and ip in net for net in networks):
            return category
    return None


def classify(ip: IPAddress) -> Category | None:
    """The category of an address, None for an ordinary public one.

    An IPv6 address that carries an IPv4 one (``::ffff:127.0.0.1``, NAT64, 6to4, Teredo) is as
    refused as the worst address it stands for.
    """
    embedded: list[ipaddress.IPv4Address] = []
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.scope_id:
            ip = ipaddress.IPv6Address(ip.compressed.split("%", 1)[0])
        embedded = _embedded_v4(ip)
    found = [Category.METADATA] if ip in METADATA_ADDRESSES else []
    found.extend(c for c in (_listed(ip), *map(classify, embedded)) if c is not None)
    # What the tables do not name but is not globally routable (e.g. IETF protocol ranges); an
    # embedding address is judged by what it carries instead.
    if not found and not embedded and not ip.is_global:
        found.append(Category.RESERVED)
    return min(found, key=_SEVERITY.__getitem__) if found else None


def _ipv4_number(part: str) -> int | None:
    """One part of an inet_aton address: decimal, octal (leading 0) or hex (0x); else None."""
    if part[:2] in {"0x", "0X"}:
        digits, base = part[2:], 16
        if digits == "":
            return 0  # inet_aton reads "0x" as zero
        allowed = "0123456789abcdefABCDEF"
    elif len(part) > 1 and part.startswith("0"):
        digits, base, allowed = part[1:], 8, "01234567"
    else:
        digits, base, allowed = part, 10, "0123456789"
    if not digits or any(ch not in allowed for ch in digits):
        return None
    return int(digits, base)


def _looks_numeric(label: str) -> bool:
    """The WHATWG URL rule: a host whose last label is a number is meant as an IPv4 address."""
    if label[:2] in {"0x", "0X"}:
        return all(ch in "0123456789abcdefABCDEF" for ch in label[2:])
    return label != "" and label.isascii() and label.isdigit()


def parse_literal(host: str) -> IPAddress | None:
    """The address a host literally is, in any spelling resolvers accept; None for a name.

    Accepts IPv6 (brackets and zone ids included) and the inet_aton forms of IPv4 that
    ``getaddrinfo`` would also turn into an address: ``127.1``, ``0x7f000001``, ``2130706433``,
    ``0177.0.0.1``. Raises ValueError for a host that is meant as an address but is not one
    (``1.2.3.256``), which a URL parser refuses too.
    """
    text = host.strip().strip("[]")
    if ":" in text:
        try:
            return ipaddress.IPv6Address(text)
        except ValueError as exc:
            raise ValueError(f"{host!r} is not a valid IPv6 address") from exc
    text = text[:-1] if text.endswith(".") else text
    parts = text.split(".")
    if not _looks_numeric(parts[-1]):
        return None
    numbers = [_ipv4_number(part) for part in parts] if len(parts) <= 4 else [None]
    if None in numbers:
        raise ValueError(f"{host!r} is not a valid IPv4 address")
    *head, last = numbers
    if any(n > 255 for n in head) or last >= 256 ** (4 - len(head)):
        raise ValueError(f"{host!r} is not a valid IPv4 address")
    value = 0
    for n in head:
        value = value << 8 | n
    return ipaddress.IPv4Address(value << 8 * (4 - len(head)) | last)


def normalise_host(host: str) -> str:
    """A host name as the policy compares it: lower case, without the root's trailing dot."""
    return host.strip().strip("[]").lower().rstrip(".")


@dataclass(frozen=True)
class Allowlist:
    """Hosts (``name`` or ``*.suffix``), addresses and CIDR ranges let through in production."""

    names: frozenset[str] = frozenset()
    suffixes: tuple[str, ...] = ()
    networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()

    @classmethod
    def parse(cls, entries: Iterable[str]) -> Allowlist:
        """Build from setting entries; raises ValueError naming an entry it cannot read."""
        names, suffixes, networks = set(), [], []
        for raw in entries:
            entry = raw.strip()
            if not entry:
                continue
            try:
                networks.append(ipaddress.ip_network(entry.strip("[]"), strict=False))
                continue
            except ValueError:
                pass
            name = normalise_host(entry)
            if name.startswith("*."):
                suffixes.append(name[1:])
            elif name and not any(ch in name for ch in "/*:@ "):
                names.add(name)
            else:
                raise ValueError(f"outbound_allowlist: cannot read {raw!r}")
        return cls(frozenset(names), tuple(suffixes), tuple(networks))

    def has_name(self, host: str | None) -> bool:
        """Whether the host name is listed (exactly or under a ``*.`` suffix)."""
        if not host:
            return False
        name = normalise_host(host)
        return name in self.names or any(name.endswith(s) for s in self.suffixes)

    def has_address(self, ip: IPAddress) -> bool:
        """Whether the address is listed or inside a listed range."""
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return any(ip.version == net.version and ip in net for net in self.networks)


@dataclass(frozen=True)
class OutboundPolicy:
    """The rules for one configuration; build it with :func:`policy_for`."""

    allow_private: bool = False
    allowlist: Allowlist = Allowlist()

    def refusal(self, ip: IPAddress, host: str | None = None) -> Category | None:
        """Why the address (reached through ``host``, if a name) is refused; None if allowed."""
        category = classify(ip)
        if category is None:
            return None
        if category in ALWAYS_REFUSED:
            return category
        if self.allow_private or self.allowlist.has_address(ip) or self.allowlist.has_name(host):
            return None
        return category

    def check_address(self, ip: IPAddress, host: str | None = None) -> None:
        """Raise OutboundRefusedError unless the address may be connected to."""
        category = self.refusal(ip, host)
        if category is not None:
            raise OutboundRefusedError(f"refused by the outbound policy: {category}")

    def check_host(self, host: str) -> IPAddress | None:
        """Check a URL's host before any lookup; return its address when it is a literal one.

        Raises OutboundRefusedError for a refused literal or a metadata or loopback name, and
        ValueError for a host meant as an address that is not one.
        """
        ip = parse_literal(host)
        if ip is not None:
            self.check_address(ip)
            return ip
        name = normalise_host(host)
        if name in METADATA_NAMES:
            raise OutboundRefusedError(f"refused by the outbound policy: {Category.METADATA}")
        if name in LOOPBACK_NAMES or name.endswith(".localhost"):
            self.check_address(ipaddress.IPv4Address("127.0.0.1"), host)
        return None

    def check_url(self, url: Any) -> str:
        """Return the URL if it is absolute http(s) and its host passes :meth:`check_host`.

        Raises ValueError for a malformed URL and OutboundRefusedError (a ValueError's sibling,
        not a subclass) for a refused one.
        """
        if not isinstance(url, str):
            raise ValueError("url must be a string")
        try:
            parts = urlsplit(url)
            parts.port  # noqa: B018 - raises ValueError for a port out of range
        except ValueError as exc:
            raise ValueError(f"url is not a valid URL: {exc}") from None
        if parts.scheme not in SCHEMES or not parts.hostname:
            raise ValueError("url must be an absolute http:// or https:// URL")
        self.check_host(parts.hostname)
        return url


STRICT = OutboundPolicy()


@functools.lru_cache(maxsize=16)
def policy_for(settings: Any) -> OutboundPolicy:
    """The policy of a configuration (a Settings); the strict one when there is none."""
    if settings is None:
        return STRICT
    return OutboundPolicy(
        allow_private=settings.profile in PERMISSIVE_PROFILES,
        allowlist=Allowlist.parse(settings.outbound_allowlist),
    )
