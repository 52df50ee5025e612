"""Xclient: a Python client for NVIDIA Triton Inference Server.

``import Xclient`` is light: ``tritonclient`` is imported when a client first talks to a
server, and LangChain or PyTriton only when the classes that need them are used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from . import exceptions
from .client import AsyncioDecoupledModelClient, DecoupledModelClient, ModelClient, ModelConfig, TensorSpec

if TYPE_CHECKING:
    from .embeddings import MetaLMEmbeddings as MetaLMEmbeddings
    from .rerank import MetaLMRerank as MetaLMRerank

__version__ = "0.1.0"

__all__ = [
    "AsyncioDecoupledModelClient",
    "DecoupledModelClient",
    "ModelClient",
    "ModelConfig",
    "TensorSpec",
    "exceptions",
    "__version__",
]

#: Classes imported on first use (they need LangChain): name -> module.
_LAZY = {"MetaLMEmbeddings": ".embeddings", "MetaLMRerank": ".rerank", "ChatMetaLM": ".llms", "MetaLM": ".llms"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
