"""The engine ChatMetaLM and MetaLM share: connections per model, and one generation run sync or async.

**Routes.** The first call for a model connects and reads its config (once; reused):

- ``grpc://`` (and ``host:8001``): a :class:`~Xclient.client.DecoupledModelClient` (the gRPC
  stream, for invoke and stream alike); a model that turns out to be coupled gets a
  :class:`~Xclient.client.ModelClient` instead (one response per request).
- ``http(s)://``: the config over HTTP; a decoupled model streams through Triton's ``generate_stream``
  (:mod:`Xclient.llms._http`), a coupled one gets a :class:`~Xclient.client.ModelClient`.

Several URLs (replicas, ``Settings(server_url=[...])``) take the same routes: every client is made over
all of them (the replica set of :mod:`Xclient.client._fleet`), the HTTP generate route included.

The asyncio twins (:class:`~Xclient.client.AsyncioDecoupledModelClient`,
:class:`~Xclient.client.AsyncioModelClient`, an :class:`~Xclient.llms._http.AsyncGenerateClient`) serve the
async methods, one set per event loop.

**One generation** (:func:`run` / :func:`arun`, which differ only in how they wait): the backend builds
the request, a :class:`~Xclient.llms._streaming.Generation` turns responses into text, the stream is
closed (cancelling the request on the server) as soon as a stop sequence ends the text or the caller
leaves, and an :class:`~Xclient.llms._streaming.Ending` comes last. A failure that never reached the
server (connection refused) before any response is retried ``max_retries`` times, as every Xclient
class retries (:class:`~Xclient.client._retry.RetryPolicy`); nothing is retried once a response came,
and other errors are raised at once (after the text already delivered).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import threading
import time
import weakref
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Generator, Iterator, Mapping, Sequence
from typing import Any

from .._replica_urls import client_target, first_url
from ..client import (
    AsyncioDecoupledModelClient,
    AsyncioModelClient,
    DecoupledModelClient,
    ModelClient,
    ModelConfig,
)
from ..client._retry import RetryPolicy
from ..client._urls import ServerUrl
from ..exceptions import IncompatibleModelError, XclientError
from ._backends import Backend, BackendName, Sampling, TritonRequest, detect_backend, explain
from ._http import AsyncGenerateClient, SyncGenerateClient
from ._streaming import Ending, Generation, TextDecoder


@dataclasses.dataclass(frozen=True)
class Settings:
    """How to reach the server, as the LangChain class's fields said on first use. ``options`` are the
    base clients' keywords (:meth:`~Xclient._langchain_fields.ConnectionFields.client_options`), made
    once from the fields; ``max_retries`` is applied here, to the whole generation (:class:`Retry`)."""

    server_url: str | Sequence[str]
    """The server's URL, or one URL per replica (all of one protocol): a sequence becomes a tuple."""
    options: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    max_retries: int = 0
    backend: BackendName | None = None
    input_name: str | None = None
    output_name: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.server_url, str):
            object.__setattr__(self, "server_url", tuple(self.server_url))

    @property
    def target(self) -> str | tuple[str, ...]:
        """What the base clients take: the URL, or the tuple of the replicas' URLs."""
        return client_target(self.server_url)

    @property
    def url(self) -> ServerUrl:
        """The (first) server URL, which tells the protocol (no scheme: the rule of
        :func:`~Xclient.client._urls.parse_url`)."""
        return first_url(self.server_url)

    def client_options(self) -> dict[str, Any]:
        """The base clients' options; they do not retry themselves (:class:`Retry` does, once)."""
        return {**self.options, "retries": 0}

    def http_options(self) -> dict[str, Any]:
        """The generate clients' options: the same, with the inference deadline as their ``timeout_s``."""
        options = dict(self.options)
        options.pop("retries", None)
        if "inference_timeout_s" in options:
            options["timeout_s"] = options.pop("inference_timeout_s")
        return options


@dataclasses.dataclass(frozen=True)
class Call:
    """One generation: the model, the prompt, the settings, and whether the caller streams."""

    model: str
    prompt: str
    sampling: Sampling
    stream: bool
    turns: tuple[tuple[str, str], ...] | None = None  # a chat's turns, for a backend that renders it itself


@dataclasses.dataclass(frozen=True)
class Connection:
    """One model on one server: its config and backend, ``open(request)`` (a context manager, sync or
    async, over the request's responses) and ``close()``."""

    config: ModelConfig
    backend: Backend
    open: Callable[[TritonRequest], Any]
    close: Callable[[], Any]


def _backend(settings: Settings, config: ModelConfig) -> Backend:
    return detect_backend(config, settings.backend, settings.input_name, settings.output_name)


def connect(settings: Settings, model: str) -> Connection:
    """Connect to ``model`` (blocking): fetch its config and choose the route (see the module docstring)."""
    url, target, options = settings.url, settings.target, settings.client_options()
    if url.protocol == "http":
        http = SyncGenerateClient(target, model, **settings.http_options())
        try:
            config = http.model_config()
            backend = _backend(settings, config)
        except BaseException:
            http.close()
            raise
        if config.decoupled:
            return Connection(config, backend, http.stream, http.close)
        http.close()
        client: Any = ModelClient(target, model, model_config=config, ensure_model_is_ready=False, **options)
        return Connection(config, backend, _one_response(client, config), client.close)
    client = DecoupledModelClient(target, model, **options)
    try:
        try:
            config = client.model_config
        except IncompatibleModelError:  # not decoupled: one response per request
            client.close()
            client = ModelClient(target, model, **options)
            config = client.model_config
            return Connection(config, _backend(settings, config), _one_response(client, config), client.close)
        return Connection(config, _backend(settings, config), _stream(client, config), client.close)
    except BaseException:
        client.close()
        raise


async def aconnect(settings: Settings, model: str) -> Connection:
    """:func:`connect` on the running event loop, with the asyncio clients."""
    url, target, options = settings.url, settings.target, settings.client_options()
    if url.protocol == "http":
        http = AsyncGenerateClient(target, model, **settings.http_options())
        try:
            config = await http.model_config()
            backend = _backend(settings, config)
        except BaseException:
            await http.close()
            raise
        if config.decoupled:
            return Connection(config, backend, http.stream, http.close)
        await http.close()
        client: Any = AsyncioModelClient(target, model, model_config=config, ensure_model_is_ready=False, **options)
        return Connection(config, backend, _aone_response(client, config), client.close)
    client = AsyncioDecoupledModelClient(target, model, **options)
    try:
        try:
            config = await client.model_config
        except IncompatibleModelError:
            await client.close()
            client = AsyncioModelClient(target, model, **options)
            config = await client.model_config
            return Connection(config, _backend(settings, config), _aone_response(client, config), client.close)
        return Connection(config, _backend(settings, config), _stream(client, config), client.close)
    except BaseException:
        await client.close()
        raise


def _stream(client: DecoupledModelClient | AsyncioDecoupledModelClient, config: ModelConfig) -> Callable[..., Any]:
    """A decoupled model's responses: the client's stream is both the iterator and the context manager."""
    return lambda request: client.infer_sample(*request.args(config))


def _one_response(client: ModelClient, config: ModelConfig) -> Callable[..., Any]:
    @contextlib.contextmanager
    def open_(request: TritonRequest) -> Iterator[Iterator[Any]]:
        yield iter((client.infer_sample(*request.args(config)),))

    return open_


def _aone_response(client: AsyncioModelClient, config: ModelConfig) -> Callable[..., Any]:
    @contextlib.asynccontextmanager
    async def open_(request: TritonRequest) -> AsyncIterator[AsyncIterator[Any]]:
        outputs = await client.infer_sample(*request.args(config))

        async def one() -> AsyncIterator[Any]:
            yield outputs

        yield one()

    return open_


class Engine:
    """The connections of one LangChain model instance: one :class:`Connection` per model name for the
    sync methods, and one per model name and event loop for the async ones. Made on first use."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._lock = threading.Lock()
        self._sync: dict[str, Connection] = {}
        self._async: weakref.WeakKeyDictionary[Any, tuple[asyncio.Lock, dict[str, Connection]]] = (
            weakref.WeakKeyDictionary()
        )

    def connection(self, model: str) -> Connection:
        with self._lock:
            if model not in self._sync:
                self._sync[model] = connect(self.settings, model)
            return self._sync[model]

    async def aconnection(self, model: str) -> Connection:
        loop = asyncio.get_running_loop()
        entry = self._async.get(loop)
        if entry is None:
            entry = self._async[loop] = (asyncio.Lock(), {})
        lock, connections = entry
        async with lock:
            if model not in connections:
                connections[model] = await aconnect(self.settings, model)
            return connections[model]

    def close(self) -> None:
        """Close the sync connections."""
        with self._lock:
            connections, self._sync = list(self._sync.values()), {}
        for connection in connections:
            connection.close()

    async def aclose(self) -> None:
        """Close this event loop's connections, and the sync ones."""
        entry = self._async.pop(asyncio.get_running_loop(), None)
        for connection in entry[1].values() if entry else ():
            await connection.close()
        self.close()


class Retry:
    """The retries of one generation, by the policy every class shares: a failure that never reached
    the server (``error.retryable``) before any response came, at most ``max_retries`` times."""

    def __init__(self, max_retries: int) -> None:
        self._policy = RetryPolicy(max_retries)
        self._attempts = 0

    def delay(self, error: XclientError, generation: Generation | None) -> float:
        """The wait before the next attempt; raises ``error`` when it must not be retried."""
        pause = self._policy.pause(error, self._attempts, responded=generation is not None and generation.received)
        if pause is None:
            raise error
        self._attempts += 1
        return pause


def start(connection: Connection, call: Call) -> tuple[Generation, TritonRequest]:
    """The request for ``call`` and the :class:`Generation` that reads its responses."""
    request = connection.backend.request(call.prompt, call.sampling, stream=call.stream, turns=call.turns)
    decoder = TextDecoder(
        stop=call.sampling.stop, cumulative=request.cumulative, echo=request.echo, loose_echo=request.loose_echo
    )
    read = request.read or connection.backend.read
    return Generation(decoder, read, call.model, request.counted_max_tokens), request


def run(engine: Engine, call: Call) -> Generator[str | Ending, None, None]:
    """The text of one generation as it comes (blocking), then its :class:`Ending`."""
    retry = Retry(engine.settings.max_retries)
    while True:
        generation = request = None
        try:
            connection = engine.connection(call.model)
            generation, request = start(connection, call)
            with connection.open(request) as responses:
                for outputs in responses:
                    if text := generation.feed(outputs):
                        yield text
                    if generation.stopped:
                        break  # leaving the block cancels the request on the server
            yield generation.finish()
            return
        except XclientError as error:
            if request is not None:
                error = explain(error, request)
            time.sleep(retry.delay(error, generation))


async def arun(engine: Engine, call: Call) -> AsyncGenerator[str | Ending, None]:
    """:func:`run` on the running event loop."""
    retry = Retry(engine.settings.max_retries)
    while True:
        generation = request = None
        try:
            connection = await engine.aconnection(call.model)
            generation, request = start(connection, call)
            async with connection.open(request) as responses:
                async for outputs in responses:
                    if text := generation.feed(outputs):
                        yield text
                    if generation.stopped:
                        break
            yield generation.finish()
            return
        except XclientError as error:
            if request is not None:
                error = explain(error, request)
            await asyncio.sleep(retry.delay(error, generation))
