"""The Triton servers behind the gateway: where each model lives, what kind it is, and its adapter.

A model lives on the first server (in ``--url`` order) that serves it; the answer is kept until a request
finds the model gone. Each server has one LLM :class:`~Xclient.llms._engine.Engine` (its connections per
model, made on first use), and one :class:`~Xclient.MetaLMEmbeddings` or :class:`~Xclient.MetaLMRerank` per
embedding or rerank model: the gateway only translates, the adapters do the work.

Kinds are detected as the adapters detect their contracts: a vLLM or TensorRT-LLM model is ``chat``, a model
that fits MetaLMRerank is ``rerank``, one that fits MetaLMEmbeddings is ``embedding``, any other text model
(one BYTES input, one BYTES output) is ``completion``; other models are not listed.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Sequence
from typing import Any, Literal

from ..client import AsyncioServerClient, ModelConfig
from ..client._urls import parse_url
from ..embeddings import MetaLMEmbeddings
from ..exceptions import IncompatibleModelError, ModelUnavailableError, XclientError
from ..llms._backends import detect_backend_name
from ..llms._engine import Engine, Settings
from ..rerank import MetaLMRerank

Kind = Literal["chat", "completion", "embedding", "rerank"]

_RERANK_PROBE = MetaLMRerank(model="probe", base_url="http://localhost")
_EMBEDDINGS_PROBE = MetaLMEmbeddings(model="probe", base_url="http://localhost")


def model_kind(config: ModelConfig) -> Kind | None:
    """The kind of a model, from its config (see the module docstring); None: the gateway cannot serve it."""
    try:
        backend: str | None = detect_backend_name(config)
    except IncompatibleModelError:
        backend = None
    if backend in ("vllm", "tensorrt_llm"):
        return "chat"
    for kind, probe in (("rerank", _RERANK_PROBE), ("embedding", _EMBEDDINGS_PROBE)):
        try:
            probe.detect_contract(config)
            return kind  # type: ignore[return-value]
        except IncompatibleModelError:
            pass
    return "completion" if backend == "text" else None


@dataclasses.dataclass(frozen=True)
class Options:
    """How the gateway reaches Triton: the key it sends, and the deadlines."""

    api_key: str | None = None
    init_timeout_s: float = 30.0
    timeout_s: float = 60.0
    max_concurrency: int = 8  # embeddings and rerank batches in flight per model


class Server:
    """One Triton server: its management client, its LLM engine and its adapters."""

    def __init__(self, url: str, options: Options) -> None:
        self.url = str(parse_url(url))
        self.options = options
        self.client = AsyncioServerClient(self.url, api_key=options.api_key, timeout_s=options.init_timeout_s)
        self.engine = Engine(
            Settings(
                server_url=self.url,
                options={
                    "api_key": options.api_key,
                    "init_timeout_s": options.init_timeout_s,
                    "inference_timeout_s": options.timeout_s,
                },
            )
        )
        self._adapters: dict[str, Any] = {}

    def __repr__(self) -> str:
        return f"Server({self.url!r})"

    def adapter(self, model: str, kind: Kind) -> Any:
        """The embeddings or rerank adapter of ``model`` (made once)."""
        adapter = self._adapters.get(model)
        if adapter is None:
            cls: Any = MetaLMEmbeddings if kind == "embedding" else MetaLMRerank
            extra = {"normalize": True} if kind == "rerank" else {}
            adapter = self._adapters[model] = cls(
                model=model,
                base_url=self.url,
                api_key=self.options.api_key,
                init_timeout_s=self.options.init_timeout_s,
                inference_timeout_s=self.options.timeout_s,
                max_concurrency=self.options.max_concurrency,
                **extra,
            )
        return adapter

    async def close(self) -> None:
        await self.engine.aclose()
        for adapter in self._adapters.values():
            await adapter.aclose()
        self._adapters.clear()
        await self.client.close()


@dataclasses.dataclass(frozen=True)
class Located:
    """Where a model lives and what it is."""

    name: str
    server: Server
    config: ModelConfig
    kind: Kind


class Servers:
    """The servers in ``--url`` order, and where each model lives (the first server that serves it)."""

    def __init__(self, urls: Sequence[str], options: Options) -> None:
        if not urls:
            raise ValueError("urls: expected at least one Triton server URL")
        self.servers = [Server(url, options) for url in urls]
        self._located: dict[str, Located] = {}

    async def locate(self, model: str) -> Located:
        """Where ``model`` lives: :class:`ModelUnavailableError` if no server has it (or one that is down
        may: then its error), IncompatibleModelError if the gateway cannot serve it."""
        located = self._located.get(model)
        if located is not None:
            return located
        failures: list[XclientError] = []
        for server in self.servers:
            try:
                config = await server.client.model_config(model)
            except ModelUnavailableError:
                continue
            except XclientError as e:  # down or refusing: the model may be there; try the next server
                failures.append(e)
                continue
            return self._remember(model, server, config)
        if failures:
            raise failures[0]
        raise ModelUnavailableError(f"Model {model!r} is not served by any of the gateway's servers", model=model)

    def _remember(self, model: str, server: Server, config: ModelConfig) -> Located:
        kind = model_kind(config)
        if kind is None:
            raise IncompatibleModelError(
                f"Model {model!r} on {server.url} is neither an LLM, an embedding model nor a reranker",
                model=model,
            )
        located = self._located[model] = Located(model, server, config, kind)
        return located

    def forget(self, model: str) -> None:
        """A request found ``model`` gone: look it up again next time."""
        self._located.pop(model, None)

    async def models(self) -> list[Located]:
        """Every model the gateway can serve, each on the first server that has it. Servers that cannot be
        reached are skipped; if none can, the first one's error is raised."""
        listings = await asyncio.gather(*(server.client.models() for server in self.servers), return_exceptions=True)
        if all(isinstance(listing, BaseException) for listing in listings):
            raise listings[0]  # type: ignore[misc]
        wanted: dict[str, Server] = {}
        for server, listing in zip(self.servers, listings, strict=True):
            if isinstance(listing, BaseException):
                continue
            for status in listing:
                if status.ready:
                    wanted.setdefault(status.name, server)
        found = await asyncio.gather(*(self._kind_of(name, server) for name, server in wanted.items()))
        return [located for located in found if located is not None]

    async def _kind_of(self, name: str, server: Server) -> Located | None:
        known = self._located.get(name)
        if known is not None and known.server is server:
            return known
        try:
            return self._remember(name, server, await server.client.model_config(name))
        except XclientError:
            return None

    async def health(self) -> list[tuple[str, bool]]:
        async def ready(server: Server) -> bool:
            try:
                return await server.client.is_ready()
            except XclientError:
                return False

        return list(zip((s.url for s in self.servers), await asyncio.gather(*map(ready, self.servers)), strict=True))

    async def close(self) -> None:
        for server in self.servers:
            await server.close()
