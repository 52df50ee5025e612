"""The URL lists of the integrations (the LangChain fields, the CLI): several replicas of one server.

One rule, for every integration: a URL is one string; several replicas are a list of them, all of
one protocol. Only a single text that must hold several URLs (the ``XCLIENT_URL`` variable, the
CLI's ``--url``) is comma-separated, by :func:`split_urls`; in Python a comma inside a URL is an
error that says to give a list. :func:`check_urls` checks the syntax only (no network) and names
the field and the entry that is wrong.
"""

from __future__ import annotations

from collections.abc import Sequence

from .client._urls import ServerUrl, parse_url
from .exceptions import InvalidUrlError

#: The environment variable of the server URL(s), comma-separated for several replicas.
ENV_URL = "XCLIENT_URL"


def split_urls(text: str) -> list[str]:
    """The URLs of a comma-separated text (``a:8001,b:8001``), stripped; blank entries dropped."""
    return [part.strip() for part in text.split(",") if part.strip()]


def check_urls(field: str, value: str | Sequence[str]) -> tuple[ServerUrl, ...]:
    """Every URL of ``value`` (one URL, or a list of them), parsed. Each must parse, hold no comma (several
    URLs are a list) and share one protocol with the others; an error names ``field`` and the entry.

    >>> [str(u) for u in check_urls("base_url", ["a:8001", "grpc://b"])]
    ['grpc://a:8001', 'grpc://b:8001']
    """
    entries: list[object] = [value] if isinstance(value, str) else list(value)
    if not entries:
        raise InvalidUrlError(f"{field}: an empty list; expected a URL or a list of URLs such as ['grpc://a:8001']")
    parsed: list[ServerUrl] = []
    for index, entry in enumerate(entries):
        where = field if isinstance(value, str) else f"{field}[{index}]"
        if not isinstance(entry, str):
            raise InvalidUrlError(f"{where}: expected a URL (str) such as 'grpc://host:8001', got {entry!r}")
        if "," in entry:
            raise InvalidUrlError(
                f"{where}: {entry!r} holds a comma; give several URLs as a list: {split_urls(entry)!r} "
                f"(only {ENV_URL} and the CLI's --url are comma-separated)"
            )
        try:
            parsed.append(parse_url(entry))
        except InvalidUrlError as e:
            raise InvalidUrlError(f"{where}: {e}") from None
    mixed = [i for i, url in enumerate(parsed) if url.protocol != parsed[0].protocol]
    if mixed:
        first, other = entries[0], entries[mixed[0]]
        raise InvalidUrlError(
            f"{field}: the replicas mix protocols ({first!r} is {parsed[0].protocol}, {other!r} is "
            f"{parsed[mixed[0]].protocol}); give every replica the same protocol"
        )
    return tuple(parsed)
