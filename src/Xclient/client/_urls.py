"""Parsing of server URLs: ``host``, ``host:port``, ``http(s)://``, ``grpc(s)://``."""

from __future__ import annotations

import dataclasses
import urllib.parse
from typing import Literal

from ..exceptions import InvalidUrlError

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


def parse_url(url: str, *, default_scheme: str = "http") -> ServerUrl:
    """Parse ``url``; no scheme means ``default_scheme``; no port means 8000 (HTTP) or 8001 (gRPC).

    >>> str(parse_url("localhost"))
    'http://localhost:8000'
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
    if "://" not in text:
        text = f"{default_scheme}://{text}"
    try:
        parts = urllib.parse.urlsplit(text)
        port = parts.port
    except ValueError as e:
        raise InvalidUrlError(f"Invalid server URL {url!r}: {e}") from None
    scheme = parts.scheme.lower()
    if scheme not in _SCHEMES:
        raise InvalidUrlError(
            f"Invalid server URL {url!r}: unknown scheme {parts.scheme!r}; expected one of http, https, grpc, grpcs"
        )
    if not parts.hostname:
        raise InvalidUrlError(f"Invalid server URL {url!r}: no host")
    if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username or parts.password:
        raise InvalidUrlError(
            f"Invalid server URL {url!r}: expected only scheme, host and port, e.g. 'grpc://host:8001'"
        )
    if port == 0:
        raise InvalidUrlError(f"Invalid server URL {url!r}: port 0")
    protocol, tls = _SCHEMES[scheme]
    return ServerUrl(protocol=protocol, host=parts.hostname, port=port or DEFAULT_PORTS[protocol], tls=tls)
