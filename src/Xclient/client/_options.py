"""The keyword options of the public client constructors, typed once.

``ModelClient(url, "text", retries=3)`` is checked by a type checker against
:class:`ModelClientOptions` (``**options: Unpack[ModelClientOptions]``), and at run time by
:class:`~Xclient.client._base.BaseClient`'s explicit keyword-only parameters: a misspelled keyword
is a ``TypeError`` at once. The defaults and the rules live in those parameters; these say the types.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypedDict

from ._config import ModelConfig


class ConnectionOptions(TypedDict, total=False):
    """How every client reaches the server (model clients and server clients alike)."""

    api_key: str | None
    """Sent as ``Authorization: Bearer <key>`` (see ``api_key_header``); never shown."""
    api_key_header: str
    """The header that carries the key; another name than Authorization carries the bare key."""
    headers: Mapping[str, str] | None
    """Headers sent with every request."""
    ca_certs: str | None
    """A PEM file of the CAs to check the server's TLS certificate against (https, grpcs)."""
    client_cert: str | None
    """A PEM client certificate, for mutual TLS."""
    client_key: str | None
    """The PEM key of ``client_cert``."""
    retries: int
    """Resends of a request that never reached the server (0, the default: none)."""
    retry_backoff_s: float
    """The first retry's pause (see :mod:`Xclient.client._retry`)."""
    retry_unsafe: bool
    """Several replicas: also send a call that may have reached a replica that then failed (the
    connection lost under it) to another one (False: only calls that surely never reached one).
    For idempotent models."""
    dns_refresh_s: float
    """How often a ``dns+grpc://name:8001`` URL is resolved again (30 s)."""


class ClientOptions(ConnectionOptions, total=False):
    init_timeout_s: float
    """Deadline of the readiness and config calls of the first use (30 s)."""


class ModelClientOptions(ClientOptions, total=False):
    """The options of ModelClient, AsyncioModelClient, FuturesModelClient and the decoupled clients."""

    lazy_init: bool
    """False: entering ``with`` fetches the config and checks readiness (the constructor never does I/O)."""
    inference_timeout_s: float
    """Deadline of each inference (60 s); of each response on the streaming clients."""
    model_config: ModelConfig | Mapping[str, Any] | None
    """The model config, when known: never fetched then."""
    ensure_model_is_ready: bool
    """Check the model's readiness on first use (True)."""
    wait_for_server_on_first_call: bool
    """Ride out a server that is still starting on the first call, until ``init_timeout_s`` (False): the
    call that fetches the config or checks readiness (with ``model_config=`` and
    ``ensure_model_is_ready=False`` there is none, and nothing waits)."""


class ServerClientOptions(ConnectionOptions, total=False):
    """The options of ServerClient and AsyncioServerClient."""

    timeout_s: float
    """Deadline of every call but load/unload (30 s)."""
    load_timeout_s: float
    """Deadline of load and unload."""
