"""Xclient: a Python client for NVIDIA Triton Inference Server.

``import Xclient`` is light: every client and LangChain class is imported on first use
(``Xclient.ModelClient``), ``tritonclient`` when a client first talks to a server, and LangChain or
PyTriton only when the classes that need them are used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from . import exceptions

if TYPE_CHECKING:
    from .client import AsyncioDecoupledModelClient as AsyncioDecoupledModelClient
    from .client import AsyncioModelClient as AsyncioModelClient
    from .client import AsyncioServerClient as AsyncioServerClient
    from .client import AsyncResponseStream as AsyncResponseStream
    from .client import DecoupledModelClient as DecoupledModelClient
    from .client import FuturesModelClient as FuturesModelClient
    from .client import ModelClient as ModelClient
    from .client import ModelConfig as ModelConfig
    from .client import ModelStatus as ModelStatus
    from .client import ReplicaState as ReplicaState
    from .client import ResponseStream as ResponseStream
    from .client import ServerClient as ServerClient
    from .client import TensorSpec as TensorSpec
    from .embeddings import MetaLMEmbeddings as MetaLMEmbeddings
    from .llms import ChatMetaLM as ChatMetaLM
    from .llms import MetaLM as MetaLM
    from .rerank import MetaLMRerank as MetaLMRerank

__version__ = "0.1.0"

__all__ = [
    "AsyncResponseStream",
    "AsyncioDecoupledModelClient",
    "AsyncioModelClient",
    "AsyncioServerClient",
    "ChatMetaLM",
    "DecoupledModelClient",
    "FuturesModelClient",
    "MetaLM",
    "MetaLMEmbeddings",
    "MetaLMRerank",
    "ModelClient",
    "ModelConfig",
    "ModelStatus",
    "ReplicaState",
    "ResponseStream",
    "ServerClient",
    "TensorSpec",
    "__version__",
    "exceptions",
]

#: Where the names of ``__all__`` imported on first use live: the LangChain classes (they need the
#: 'langchain' extra) here, every other one in ``.client``.
_LANGCHAIN = {"MetaLMEmbeddings": ".embeddings", "MetaLMRerank": ".rerank", "ChatMetaLM": ".llms", "MetaLM": ".llms"}


def __getattr__(name: str) -> Any:
    if name in __all__:
        return getattr(importlib.import_module(_LANGCHAIN.get(name, ".client"), __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
