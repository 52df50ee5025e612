"""LangChain classes for LLMs served on Triton (extra ``langchain``).

``from Xclient.llms import ChatMetaLM`` (a chat model) and ``MetaLM`` (text completion) are a public
contract. Importing this package is light: LangChain is imported when a class is first used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .chat_models import ChatMetaLM as ChatMetaLM
    from .llms import MetaLM as MetaLM

__all__ = ["ChatMetaLM", "MetaLM"]

#: Classes imported on first use (they need LangChain): name -> module.
_LAZY = {"ChatMetaLM": ".chat_models", "MetaLM": ".llms"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
