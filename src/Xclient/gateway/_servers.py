"""The Triton servers behind the gateway: which of them serve each model, what kind it is, and its adapter.

A model lives on every server (in ``--url`` order) that serves it when it is first looked up: those servers
are its replica set, reached through one client over all of them (Xclient's fleet rules,
:mod:`Xclient.client._fleet`: balancing, health, failover to another replica when one cannot be reached).
The answer is kept until a request finds the model gone. Each replica set has one LLM
:class:`~Xclient.llms._engine.Engine` (its connections per model, made on first use), and one
:class:`~Xclient.MetaLMEmbeddings` or :class:`~Xclient.MetaLMRerank` per embedding or rerank model: the
gateway only translates, the adapters do the work. A replica set has one protocol (the fleet's rule): when
servers of both protocols serve a model, the replicas are those of the first one's protocol.

Kinds are detected as the adapters detect their contracts: a vLLM or TensorRT-LLM model is ``chat``, a model
that fits MetaLMRerank is ``rerank``, one that fits MetaLMEmbeddings is ``embedding``, any other text model
(one BYTES input, one BYTES output) is ``completion``; other models are not listed.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Sequence
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
    """One Triton server and its management client (listing, configs, readiness)."""

    def __init__(self, url: str, options: Options) -> None:
        self.url = str(parse_url(url))
        self.protocol = parse_url(url).protocol
        self.client = AsyncioServerClient(self.url, api_key=options.api_key, timeout_s=options.init_timeout_s)

    def __repr__(self) -> str:
        return f"Server({self.url!r})"


class Replicas:
    """The servers that serve a model, as one replica set: one LLM engine and the adapters over their URLs."""

    def __init__(self, servers: Sequence[Server], options: Options) -> None:
        self.servers = tuple(servers)
        self.urls = tuple(server.url for server in self.servers)
        self.options = options
        self.engine = Engine(
            Settings(
                server_url=self._target(),
                options={
                    "api_key": options.api_key,
                    "init_timeout_s": options.init_timeout_s,
                    "inference_timeout_s": options.timeout_s,
                },
            )
        )
        self._adapters: dict[str, Any] = {}

    def __repr__(self) -> str:
        return f"Replicas({list(self.urls)!r})"

    def _target(self) -> Any:
        """What the clients take: the URL, or the list of the replicas' URLs."""
        return self.urls[0] if len(self.urls) == 1 else list(self.urls)

    def adapter(self, model: str, kind: Kind) -> Any:
        """The embeddings or rerank adapter of ``model`` (made once)."""
        adapter = self._adapters.get(model)
        if adapter is None:
            cls: Any = MetaLMEmbeddings if kind == "embedding" else MetaLMRerank
            extra = {"normalize": True} if kind == "rerank" else {}
            adapter = self._adapters[model] = cls(
                model=model,
                base_url=self._target(),
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


@dataclasses.dataclass(frozen=True)
class Located:
    """Where a model lives (its replicas) and what it is."""

    name: str
    replicas: Replicas
    config: ModelConfig
    kind: Kind

    @property
    def server(self) -> Server:
        """The first server that serves it."""
        return self.replicas.servers[0]


class Servers:
    """The servers in ``--url`` order, and which of them serve each model."""

    def __init__(self, urls: Sequence[str], options: Options) -> None:
        if not urls:
            raise ValueError("urls: expected at least one Triton server URL")
        self.options = options
        self.servers = [Server(url, options) for url in urls]
        self._located: dict[str, Located] = {}
        self._sets: dict[tuple[str, ...], Replicas] = {}

    async def locate(self, model: str) -> Located:
        """Where ``model`` lives: every server that serves it. :class:`ModelUnavailableError` if none does (or
        one that is down may: then its error), IncompatibleModelError if the gateway cannot serve it."""
        located = self._located.get(model)
        if located is not None:
            return located
        configs = await asyncio.gather(
            *(server.client.model_config(model) for server in self.servers), return_exceptions=True
        )
        serving: list[tuple[Server, ModelConfig]] = []
        failures: list[BaseException] = []
        for server, config in zip(self.servers, configs, strict=True):
            if isinstance(config, ModelConfig):
                serving.append((server, config))
            elif not isinstance(config, ModelUnavailableError):  # down or refusing: the model may be there
                failures.append(config)
        if serving:
            return self._remember(model, serving)
        if failures:
            raise failures[0]
        raise ModelUnavailableError(f"Model {model!r} is not served by any of the gateway's servers", model=model)

    def _remember(self, model: str, serving: Sequence[tuple[Server, ModelConfig]]) -> Located:
        first, config = serving[0]
        kind = model_kind(config)
        if kind is None:
            raise IncompatibleModelError(
                f"Model {model!r} on {first.url} is neither an LLM, an embedding model nor a reranker",
                model=model,
            )
        servers = tuple(server for server, _ in serving if server.protocol == first.protocol)
        located = self._located[model] = Located(model, self._replicas(servers), config, kind)
        return located

    def _replicas(self, servers: tuple[Server, ...]) -> Replicas:
        """One replica set per group of servers: models on the same servers share its engine."""
        key = tuple(server.url for server in servers)
        replicas = self._sets.get(key)
        if replicas is None:
            replicas = self._sets[key] = Replicas(servers, self.options)
        return replicas

    def forget(self, model: str) -> None:
        """A request found ``model`` gone: look it up again next time."""
        self._located.pop(model, None)

    async def models(self) -> list[Located]:
        """Every model the gateway can serve, each with the servers that list it as ready. Servers that cannot
        be reached are skipped; if none can, the first one's error is raised."""
        listings = await asyncio.gather(*(server.client.models() for server in self.servers), return_exceptions=True)
        if all(isinstance(listing, BaseException) for listing in listings):
            raise listings[0]  # type: ignore[misc]
        wanted: dict[str, list[Server]] = {}
        for server, listing in zip(self.servers, listings, strict=True):
            if isinstance(listing, BaseException):
                continue
            for status in listing:
                if status.ready:
                    wanted.setdefault(status.name, []).append(server)
        found = await asyncio.gather(*(self._kind_of(name, servers) for name, servers in wanted.items()))
        return [located for located in found if located is not None]

    async def _kind_of(self, name: str, servers: list[Server]) -> Located | None:
        known = self._located.get(name)
        if known is not None and known.server is servers[0]:
            return known
        try:
            config = await servers[0].client.model_config(name)
            return self._remember(name, [(servers[0], config), *((server, config) for server in servers[1:])])
        except XclientError:
            return None

    async def health(self) -> tuple[list[tuple[str, bool]], dict[str, list[tuple[str, bool]]]]:
        """Each server's readiness, and each known model's replicas with the model's readiness on each."""

        async def ready(check: Awaitable[bool]) -> bool:
            try:
                return await check
            except XclientError:
                return False

        located = list(self._located.values())
        checks = [server.client.is_ready() for server in self.servers]
        checks += [s.client.is_model_ready(m.name) for m in located for s in m.replicas.servers]
        answers = iter(await asyncio.gather(*map(ready, checks)))
        servers = [(server.url, next(answers)) for server in self.servers]
        models = {m.name: [(s.url, next(answers)) for s in m.replicas.servers] for m in located}
        return servers, models

    async def close(self) -> None:
        for replicas in self._sets.values():
            await replicas.close()
        self._sets.clear()
        for server in self.servers:
            await server.client.close()
