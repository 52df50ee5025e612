"""Request headers (API key, user headers) and the redaction that keeps keys out of every message."""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterable, Iterator, Mapping

REDACTED = "***"


#: Triton's own key check on gRPC (``--grpc-restricted-protocol=...:<key>=<value>``) reads the
#: metadata ``triton-grpc-protocol-<key>``; gateways read ``<key>``. gRPC calls send both.
GRPC_RESTRICTED_PREFIX = "triton-grpc-protocol-"


def build_headers(
    api_key: str | None, api_key_header: str, headers: Mapping[str, str] | None, *, grpc: bool = False
) -> dict[str, str]:
    """Merge user headers with the API key header (``Authorization: Bearer <key>`` by default).

    A header name other than ``Authorization`` carries the bare key (e.g. ``x-api-key: <key>``).
    """
    merged = dict(headers or {})
    if api_key:
        value = f"Bearer {api_key}" if api_key_header.lower() == "authorization" else api_key
        names = [api_key_header] + ([GRPC_RESTRICTED_PREFIX + api_key_header.lower()] if grpc else [])
        for name in names:
            merged = {k: v for k, v in merged.items() if k.lower() != name.lower()}
            merged[name] = value
    return merged


_SCOPED_HEADERS: contextvars.ContextVar[Mapping[str, str] | None] = contextvars.ContextVar(
    "xclient_request_headers", default=None
)


@contextlib.contextmanager
def request_headers(headers: Mapping[str, str]) -> Iterator[None]:
    """Send ``headers`` with every request any client makes inside the block (in this thread or task,
    and in the tasks it starts): per-request headers such as a W3C ``traceparent``, through layers that
    take no headers argument (the LLM, embeddings and rerank adapters). A call's own ``headers=`` win."""
    token = _SCOPED_HEADERS.set(dict(headers))
    try:
        yield
    finally:
        _SCOPED_HEADERS.reset(token)


def scoped_headers() -> Mapping[str, str] | None:
    """The headers of the innermost :func:`request_headers` block, if any."""
    return _SCOPED_HEADERS.get()


def merge_headers(base: Mapping[str, str], extra: Mapping[str, str] | None) -> dict[str, str] | None:
    """Per-call headers override the client's, matching names case-insensitively."""
    if not extra:
        return dict(base) or None
    lowered = {k.lower() for k in extra}
    merged = {k: v for k, v in base.items() if k.lower() not in lowered}
    merged.update(extra)
    return merged


def secrets_of(headers: Mapping[str, str] | None, api_key: str | None = None) -> list[str]:
    """Values that must never be shown: the API key and credential-like header values."""
    found = [api_key] if api_key else []
    for name, value in (headers or {}).items():
        if name.lower() in ("authorization", "x-api-key", "api-key", "proxy-authorization", "cookie") and value:
            found.append(value)
            if value.lower().startswith("bearer "):
                found.append(value[7:])
    return found


def redact(text: str, secrets: Iterable[str]) -> str:
    """Replace every secret in ``text`` (longest first, so a key inside ``Bearer key`` goes too)."""
    for secret in sorted((s for s in secrets if s and len(s) >= 4), key=len, reverse=True):
        text = text.replace(secret, REDACTED)
    return text
