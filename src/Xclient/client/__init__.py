"""Xclient's model clients. ``from Xclient.client import ModelClient`` is a public contract.

The errors of :mod:`Xclient.exceptions` are reachable from here too.
"""

from ..exceptions import (
    AccessDeniedError,
    BatchingNotSupportedError,
    ClientClosedError,
    IncompatibleModelError,
    InferenceServerError,
    InvalidUrlError,
    ModelUnavailableError,
    QueueFullError,
    ServerStartError,
    ServerUnavailableError,
    XclientError,
    XclientTimeoutError,
    XclientValueError,
)
from ._asyncio import AsyncioModelClient
from ._auth import request_headers
from ._config import ModelConfig, TensorSpec
from ._decoupled import AsyncioDecoupledModelClient, AsyncResponseStream, DecoupledModelClient, ResponseStream
from ._fleet import ReplicaState
from ._futures import FuturesModelClient
from ._model_client import ModelClient
from ._options import ConnectionOptions, ModelClientOptions, ServerClientOptions
from ._retry import RetryPolicy
from ._server_client import AsyncioServerClient, ModelStatus, ServerClient

__all__ = [
    "AccessDeniedError",
    "AsyncResponseStream",
    "AsyncioDecoupledModelClient",
    "AsyncioModelClient",
    "AsyncioServerClient",
    "BatchingNotSupportedError",
    "ClientClosedError",
    "ConnectionOptions",
    "DecoupledModelClient",
    "FuturesModelClient",
    "IncompatibleModelError",
    "InferenceServerError",
    "InvalidUrlError",
    "ModelClient",
    "ModelClientOptions",
    "ModelConfig",
    "ModelStatus",
    "ModelUnavailableError",
    "QueueFullError",
    "ReplicaState",
    "ResponseStream",
    "RetryPolicy",
    "ServerClient",
    "ServerClientOptions",
    "ServerStartError",
    "ServerUnavailableError",
    "TensorSpec",
    "XclientError",
    "XclientTimeoutError",
    "XclientValueError",
    "request_headers",
]
