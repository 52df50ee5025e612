"""Xclient's model clients. ``from Xclient.client import ModelClient`` is a public contract."""

from ..exceptions import *  # noqa: F401,F403 - errors are reachable from here too
from ..exceptions import __all__ as _exceptions_all
from ._asyncio import AsyncioModelClient
from ._auth import request_headers
from ._config import ModelConfig, TensorSpec
from ._decoupled import AsyncioDecoupledModelClient, DecoupledModelClient
from ._futures import FuturesModelClient
from ._model_client import ModelClient
from ._server_client import AsyncioServerClient, ModelStatus, ServerClient

__all__ = [
    "AsyncioDecoupledModelClient",
    "AsyncioModelClient",
    "AsyncioServerClient",
    "DecoupledModelClient",
    "ModelClient",
    "FuturesModelClient",
    "ModelConfig",
    "ModelStatus",
    "ServerClient",
    "TensorSpec",
    "request_headers",
    *_exceptions_all,
]
