"""The URL lists of the integrations (the LangChain fields, the CLI): several replicas of one server.

One rule, for every integration: a URL is one string; several replicas are a list of them, all of
one protocol. Only a single text that must hold several URLs (the ``XCLIENT_URL`` variable, the
CLI's ``--url``) is comma-separated, by :func:`split_urls`; in Python a comma inside a URL is an
error that says to give a list. :func:`check_urls` checks the syntax only (no network) and names
the field and the entry that is wrong.
"""

from __future__ import annotations

from collections.abc import Sequence

from .client._urls import ServerUrl, Target, parse_target, parse_targets, target_url
from .exceptions import InvalidUrlError, XclientValueError

#: The environment variable of the server URL(s), comma-separated for several replicas.
ENV_URL = "XCLIENT_URL"


def url_tuple(value: str | Sequence[str]) -> tuple[str, ...]:
    """Every URL of ``value`` (one URL, or a list of them), as a tuple."""
    return (value,) if isinstance(value, str) else tuple(value)


def client_target(value: str | Sequence[str]) -> str | tuple[str, ...]:
    """``value`` as the base clients take their ``url``: the one URL, or the tuple of the replicas'."""
    urls = url_tuple(value)
    return urls[0] if len(urls) == 1 else urls


def first_url(value: str | Sequence[str]) -> ServerUrl:
    """The first replica's URL (for a ``dns+`` name, the name's own URL): it tells the protocol."""
    return target_url(parse_target(url_tuple(value)[0]))


def split_urls(text: str) -> list[str]:
    """The URLs of a comma-separated text (``a:8001,b:8001``), stripped; blank entries dropped."""
    return [part.strip() for part in text.split(",") if part.strip()]


def check_urls(field: str, value: str | Sequence[str]) -> tuple[Target, ...]:
    """Every URL of ``value`` (one URL, or a list of them), parsed as the clients parse them
    (:func:`~Xclient.client._urls.parse_targets`: ``dns+`` names too, one protocol, no URL twice). A URL
    holding a comma is refused (several URLs are a list); an error in a list names ``field`` and the
    entry (``base_url[1]: ...``).

    >>> [str(u) for u in check_urls("base_url", ["a:8001", "grpc://b"])]
    ['grpc://a:8001', 'grpc://b:8001']
    """
    entries: list[object] = [value] if isinstance(value, str) else list(value)
    if not entries:
        raise InvalidUrlError(f"{field}: an empty list; expected a URL or a list of URLs such as ['grpc://a:8001']")
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
            parse_target(entry)
        except InvalidUrlError as e:
            if isinstance(value, str):
                raise  # it names the URL; the caller (pydantic, the CLI) names the field
            raise InvalidUrlError(f"{where}: {e}") from None
    try:
        return parse_targets([str(entry) for entry in entries])
    except XclientValueError as e:  # the rules of a list: one protocol, no URL twice
        raise InvalidUrlError(f"{field}: {str(e).removeprefix('url: ')}") from None
