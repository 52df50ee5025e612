"""Parsing of server URLs: ``host``, ``host:port``, ``http(s)://``, ``grpc(s)://``.

**The rule for a URL with no scheme**, the same for every client, LangChain class and the CLI:
port 8001 (Triton's gRPC port) means gRPC, any other port, or none, means HTTP (no port: 8000).
So ``box:8001`` is ``grpc://box:8001`` and ``box`` is ``http://box:8000``. A scheme always wins:
``http://box:8001`` is HTTP.
"""

from __future__ import annotations

import dataclasses
import urllib.parse
from collections.abc import Sequence
from typing import Literal

from ..exceptions import InvalidUrlError, XclientValueError

Protocol = Literal["http", "grpc"]

_SCHEMES: dict[str, tuple[Protocol, bool]] = {
    "http": ("http", False),
    "https": ("http", True),
    "grpc": ("grpc", False),
    "grpcs": ("grpc", True),
}
DEFAULT_PORTS: dict[Protocol, int] = {"http": 8000, "grpc": 8001}


@dataclasses.dataclass(frozen=True)
class ServerUrl:
    """A parsed server URL. ``address`` is what ``tritonclient`` takes (``host:port``)."""

    protocol: Protocol
    host: str
    port: int
    tls: bool

    @property
    def scheme(self) -> str:
        return {("http", False): "http", ("http", True): "https", ("grpc", False): "grpc", ("grpc", True): "grpcs"}[
            (self.protocol, self.tls)
        ]

    @property
    def address(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    def __str__(self) -> str:
        return f"{self.scheme}://{self.address}"


def parse_url(url: str) -> ServerUrl:
    """Parse ``url``. No scheme: gRPC on port 8001, HTTP otherwise (see the module docstring); no port:
    8000 (HTTP) or 8001 (gRPC).

    >>> str(parse_url("localhost"))
    'http://localhost:8000'
    >>> str(parse_url("box:8001"))
    'grpc://box:8001'
    >>> str(parse_url("grpc://10.0.0.1"))
    'grpc://10.0.0.1:8001'
    >>> parse_url("https://[::1]:9000").address
    '[::1]:9000'
    """
    if not isinstance(url, str):
        raise InvalidUrlError(
            f"Invalid server URL {url!r}: expected a str such as 'localhost:8000' or 'grpc://host:8001'"
        )
    text = url.strip()
    if not text:
        raise InvalidUrlError(
            "Invalid server URL '': it is empty; expected e.g. 'localhost:8000' or 'grpc://host:8001'"
        )
    given_scheme = text.split("://", 1)[0] if "://" in text else None
    if given_scheme is not None and given_scheme.lower() not in _SCHEMES:
        raise InvalidUrlError(
            f"Invalid server URL {url!r}: unknown scheme {given_scheme!r}; expected one of http, https, grpc, grpcs"
        )
    try:
        parts = urllib.parse.urlsplit(text if given_scheme is not None else f"http://{text}")
        port = parts.port
    except ValueError as e:
        raise InvalidUrlError(f"Invalid server URL {url!r}: {e}") from None
    if not parts.hostname:
        raise InvalidUrlError(f"Invalid server URL {url!r}: no host")
    if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username or parts.password:
        raise InvalidUrlError(
            f"Invalid server URL {url!r}: expected only scheme, host and port, e.g. 'grpc://host:8001'"
        )
    if port == 0:
        raise InvalidUrlError(f"Invalid server URL {url!r}: port 0")
    no_scheme = "grpc" if port == DEFAULT_PORTS["grpc"] else "http"  # the rule of the module docstring
    protocol, tls = _SCHEMES[no_scheme if given_scheme is None else given_scheme.lower()]
    return ServerUrl(protocol=protocol, host=parts.hostname, port=port or DEFAULT_PORTS[protocol], tls=tls)


@dataclasses.dataclass(frozen=True)
class DnsName:
    """A ``dns+grpc://name:8001`` (or ``dns+http://``) URL: one replica per address the name resolves to,
    resolved again every ``dns_refresh_s`` (a Kubernetes headless Service lists its pods this way)."""

    url: ServerUrl  # the name's own URL: ``host`` is the name to resolve

    def __str__(self) -> str:
        return f"dns+{self.url}"


#: One entry of a client's ``url``: a server, or a name whose every address is a server.
Target = ServerUrl | DnsName

#: How often a ``dns+`` name is resolved again (the clients' ``dns_refresh_s``), in seconds.
DEFAULT_DNS_REFRESH_S = 30.0


def parse_target(url: str) -> Target:
    """:func:`parse_url`, plus the ``dns+`` prefix (which needs a scheme after it).

    >>> str(parse_target("dns+grpc://triton-headless:8001"))
    'dns+grpc://triton-headless:8001'
    """
    if isinstance(url, str) and url.strip().lower().startswith("dns+"):
        rest = url.strip()[4:]
        if "://" not in rest:
            raise InvalidUrlError(
                f"Invalid server URL {url!r}: dns+ needs a scheme after it, e.g. 'dns+grpc://name:8001'"
            )
        return DnsName(parse_url(rest))
    return parse_url(url)


def target_url(target: Target) -> ServerUrl:
    """A server's URL, or a ``dns+`` name's own URL (which tells the protocol)."""
    return target.url if isinstance(target, DnsName) else target


def serves_replicas(targets: Sequence[Target]) -> bool:
    """Several URLs, or a ``dns+`` name: a replica set serves them, not a single-URL transport."""
    return len(targets) > 1 or isinstance(targets[0], DnsName)


def parse_targets(url: str | Sequence[str]) -> tuple[Target, ...]:
    """A client's ``url``: one URL, or a list of URLs (replicas), all of one protocol.

    >>> [str(t) for t in parse_targets(["a:8001", "grpc://b"])]
    ['grpc://a:8001', 'grpc://b:8001']
    """
    if isinstance(url, str):
        return (parse_target(url),)
    if not isinstance(url, Sequence) or not url:
        raise InvalidUrlError(
            f"Invalid server URL {url!r}: expected a str, or a non-empty list of str "
            "such as ['grpc://a:8001', 'grpc://b:8001']"
        )
    targets = tuple(parse_target(u) for u in url)
    first = target_url(targets[0])
    seen: set[str] = set()
    for given, target in zip(url, targets, strict=True):
        other = target_url(target)
        if other.protocol != first.protocol:
            raise XclientValueError(
                f"url: every replica must speak one protocol; {str(targets[0])!r} is {first.protocol.upper()} "
                f"but {given!r} is {other.protocol.upper()} ({str(target)!r})"
            )
        if str(target) in seen:
            raise XclientValueError(f"url: {str(target)!r} is given twice")
        seen.add(str(target))
    return targets
