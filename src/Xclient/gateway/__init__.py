"""``xclient gateway``: an OpenAI-compatible API (``/v1/chat/completions``, ``/v1/completions``,
``/v1/embeddings``, ``/v1/rerank``, ``/v1/models``) in front of Triton servers, for the tools that speak
OpenAI's API: the ``openai`` SDK, LangChain's ``ChatOpenAI`` and ``OpenAIEmbeddings``, curl.

:func:`create_app` makes the ASGI app (Starlette), to mount in your own server or to run with uvicorn::

    from Xclient.gateway import create_app

    app = create_app(["grpc://triton-a:8001", "grpc://triton-b:8001"], api_key="KEY")
    # uvicorn module:app --port 9000

Needs the ``gateway`` extra: ``pip install 'llmops-xclient[gateway]'``.
"""

from __future__ import annotations

try:
    import prometheus_client  # noqa: F401
    import starlette  # noqa: F401
    from langchain_core import embeddings as _langchain  # noqa: F401
except ImportError:  # pragma: no cover - depends on the installed extras
    raise ImportError("Xclient.gateway needs the 'gateway' extra: pip install 'llmops-xclient[gateway]'") from None

from ._app import create_app

__all__ = ["create_app"]
