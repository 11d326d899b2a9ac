"""The HTTP client of every outbound call: it connects only where the outbound policy allows.

Each connection resolves its host once, checks every address with the policy and connects to an
address it checked (the TLS handshake still names the original host), so a name that resolves to
a public address for a check and to an internal one for the connection (DNS rebinding) gets
nowhere. Redirects are never followed: a 3xx is the answer. Proxies from the environment are
ignored (urllib3 reads none). Errors carry a fixed description, never bytes the peer sent, so a
caller cannot learn what listens on an internal port from them.
"""

from __future__ import annotations

import errno
import http.client
import ipaddress
import socket
import ssl
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

from urllib3 import HTTPConnectionPool, HTTPSConnectionPool, PoolManager
from urllib3 import exceptions as u3
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.util import Timeout, make_headers

from scheduler_app.services.outbound.policy import OutboundPolicy, OutboundRefusedError

BODY_LIMIT = 16_384  # bytes of a response body kept
DEFAULT_CONNECT_TIMEOUT = 30.0


class OutboundConnectionError(Exception):
    """The call did not get an HTTP answer (refused, timed out, reset, not HTTP); retryable."""


@dataclass(frozen=True)
class OutboundResponse:
    """What an outbound call got back: status, headers and the first bytes of the body."""

    status: int
    headers: dict[str, str]
    body: bytes
    truncated: bool

    @property
    def text(self) -> str:
        """The body decoded with the charset the response names (UTF-8 otherwise)."""
        charset = "utf-8"
        content_type = next((v for k, v in self.headers.items() if k.lower() == "content-type"), "")
        for param in content_type.split(";")[1:]:
            key, _, value = param.partition("=")
            if key.strip().lower() == "charset" and value.strip():
                charset = value.strip().strip('"')
        try:
            return self.body.decode(charset, errors="replace")
        except LookupError:
            return self.body.decode("utf-8", errors="replace")


def redact(url: str) -> str:
    """The URL without credentials or query, for messages and logs."""
    try:
        parts = urlsplit(url)
        netloc = parts.netloc.rpartition("@")[2]
        return urlunsplit((parts.scheme, netloc, parts.path, "", ""))
    except ValueError:
        return "<invalid url>"


_ERRNO_TEXT = {
    errno.ECONNREFUSED: "connection refused",
    errno.ECONNRESET: "connection reset",
    errno.ENETUNREACH: "network unreachable",
    errno.EHOSTUNREACH: "host unreachable",
    errno.ETIMEDOUT: "timed out connecting",
    errno.EPIPE: "connection closed while sending the request",
}


def _cause_chain(exc: BaseException) -> list[BaseException]:
    chain, seen = [], set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        chain.append(exc)
        exc = exc.__cause__ or exc.__context__ or (exc.args[1] if _wraps(exc) else None)
    return chain


def _wraps(exc: BaseException) -> bool:
    # ProtocolError("Connection aborted.", <the real error>) keeps the cause in its args.
    return (
        isinstance(exc, u3.ProtocolError)
        and len(exc.args) > 1
        and isinstance(exc.args[1], BaseException)
    )


def _is(*kinds: type) -> Callable[[BaseException], bool]:
    return lambda exc: isinstance(exc, kinds)


# What went wrong, most specific first; the first rule any exception of the chain meets wins.
_RULES: tuple[tuple[Callable[[BaseException], bool], str], ...] = (
    (_is(u3.NameResolutionError, socket.gaierror), "the host name does not resolve"),
    (
        lambda e: (
            isinstance(e, u3.ConnectTimeoutError) and not isinstance(e, u3.NewConnectionError)
        ),
        "timed out connecting",
    ),
    (_is(u3.ReadTimeoutError, TimeoutError), "timed out waiting for the response"),
    (_is(ssl.SSLCertVerificationError), "TLS certificate not trusted"),
    (_is(u3.SSLError, ssl.SSLError), "TLS handshake failed"),
    (_is(http.client.RemoteDisconnected), "connection closed without a response"),
    (_is(http.client.BadStatusLine), "the peer did not answer with HTTP"),
    (_is(http.client.LineTooLong, u3.HeaderParsingError), "malformed HTTP response"),
    (_is(http.client.IncompleteRead, u3.IncompleteRead), "the response ended early"),
    (_is(u3.DecodeError), "the response body could not be decoded"),
    *(
        ((lambda e, n=number: isinstance(e, OSError) and e.errno == n), text)
        for number, text in _ERRNO_TEXT.items()
    ),
    (_is(u3.NewConnectionError), "could not connect"),
)


def describe(exc: BaseException) -> str:
    """A fixed description of a failed call; never the peer's bytes nor the library's words."""
    chain = _cause_chain(exc)
    for matches, text in _RULES:
        if any(matches(item) for item in chain):
            return text
    return f"request failed ({type(exc).__name__})"


class _CheckedConnection:
    """Mixin of urllib3's connections: resolve once, check each address, connect to it."""

    policy: OutboundPolicy

    def _new_conn(self) -> socket.socket:
        host, port = self._dns_host, self.port
        self.policy.check_host(host)
        try:
            answers = socket.getaddrinfo(host.strip("[]"), port, 0, socket.SOCK_STREAM)
        except socket.gaierror as exc:
            raise u3.NameResolutionError(self.host, self, exc) from exc
        allowed, refused = [], None
        for family, kind, proto, _, address in answers:
            ip = ipaddress.ip_address(address[0])
            reason = self.policy.refusal(ip, host)
            if reason is None:
                allowed.append((family, kind, proto, address))
            elif refused is None:
                refused = reason
        if not allowed:
            raise OutboundRefusedError(f"refused by the outbound policy: {refused}")
        timeout = self.timeout if isinstance(self.timeout, int | float) else None
        timeout = DEFAULT_CONNECT_TIMEOUT if timeout is None else timeout
        error: OSError | None = None
        for family, kind, proto, address in allowed:
            sock = socket.socket(family, kind, proto)
            try:
                for option in self.socket_options or ():
                    sock.setsockopt(*option)
                sock.settimeout(timeout)
                if self.source_address:
                    sock.bind(self.source_address)
                sock.connect(address)
            except OSError as exc:
                sock.close()
                error = exc
                continue
            sys.audit("http.client.connect", self, self.host, self.port)
            return sock
        if isinstance(error, TimeoutError):
            raise u3.ConnectTimeoutError(self, "timed out connecting") from error
        raise u3.NewConnectionError(self, "could not connect") from error


class _CheckedHTTPConnection(_CheckedConnection, HTTPConnection):
    pass


class _CheckedHTTPSConnection(_CheckedConnection, HTTPSConnection):
    pass


def _ca_bundle() -> str | None:
    """certifi's CA bundle (what requests used) when installed, else the system store."""
    try:
        import certifi
    except ImportError:
        return None
    return certifi.where()


def _pool_classes(policy: OutboundPolicy) -> dict[str, type]:
    """Connection pools whose connections enforce ``policy``."""
    http_conn = type("PolicyHTTPConnection", (_CheckedHTTPConnection,), {"policy": policy})
    https_conn = type("PolicyHTTPSConnection", (_CheckedHTTPSConnection,), {"policy": policy})
    return {
        "http": type("PolicyHTTPPool", (HTTPConnectionPool,), {"ConnectionCls": http_conn}),
        "https": type("PolicyHTTPSPool", (HTTPSConnectionPool,), {"ConnectionCls": https_conn}),
    }


class OutboundClient:
    """Makes HTTP calls under one policy; thread-safe, keeps connections alive per host."""

    def __init__(
        self, policy: OutboundPolicy, *, body_limit: int = BODY_LIMIT, per_host: int = 4
    ) -> None:
        self.policy = policy
        self.body_limit = body_limit
        self._pools = PoolManager(
            num_pools=20, maxsize=per_host, block=False, retries=False, ca_certs=_ca_bundle()
        )
        self._pools.pool_classes_by_scheme = _pool_classes(policy)

    def request(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        body: bytes | None = None,
        timeout: float,
    ) -> OutboundResponse:
        """Send one request; connect and read timeouts are both ``timeout`` seconds.

        Raises OutboundRefusedError when the policy refuses the target, ValueError for a URL
        that is not absolute http(s), and OutboundConnectionError (with a fixed description)
        when no HTTP answer came.
        """
        self.policy.check_url(url)
        parts = urlsplit(url)
        send_headers = dict(headers or {})
        if parts.username is not None and not any(
            k.lower() == "authorization" for k in send_headers
        ):
            credentials = f"{parts.username}:{parts.password or ''}"
            send_headers.update(make_headers(basic_auth=credentials))
        target = urlunsplit((parts.scheme, parts.netloc.rpartition("@")[2], *parts[2:]))
        try:
            response = self._pools.urlopen(
                method,
                target,
                body=body,
                headers=send_headers,
                redirect=False,
                retries=False,
                timeout=Timeout(connect=timeout, read=timeout),
                preload_content=False,
            )
            complete = False
            try:
                data = response.read(self.body_limit + 1, decode_content=True)
                complete = len(data) <= self.body_limit  # read() stops short only at the end
            finally:
                if not complete:
                    response.close()  # unread bytes would be the next request's answer
                response.release_conn()
        except OutboundRefusedError:
            raise
        except (u3.HTTPError, OSError, http.client.HTTPException) as exc:
            raise OutboundConnectionError(f"{method} {redact(url)}: {describe(exc)}") from None
        return OutboundResponse(
            status=response.status,
            headers=dict(response.headers),
            body=data[: self.body_limit],
            truncated=len(data) > self.body_limit,
        )
