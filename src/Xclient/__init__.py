"""Xclient: a Python client for NVIDIA Triton Inference Server.

``import Xclient`` is light: ``tritonclient`` is imported when a client first talks to a
server, and LangChain or PyTriton only when the classes that need them are used.
"""

from __future__ import annotations

from . import exceptions
from .client import AsyncioDecoupledModelClient, DecoupledModelClient, ModelClient, ModelConfig, TensorSpec

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
