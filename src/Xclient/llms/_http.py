"""Triton's HTTP generate extension (docs/protocols.md section 3), for decoupled LLMs on ``http(s)://`` URLs.

Decoupled models refuse HTTP ``/infer``, so on an HTTP URL the LLM classes fetch the model config and
stream through ``POST /v2/models/{model}/generate_stream`` (server-sent events, one JSON object per
response), on the same HTTP layer as the model clients (:mod:`Xclient.client._rest` codes the
requests and answers, :mod:`Xclient.client._http_wire` sends them). The rules are the base clients':
the same headers and API key (``Authorization: Bearer <key>`` by default), ``init_timeout_s`` for the
config call (an unknown model fails at once), ``timeout_s`` for each response, errors mapped by the
same :func:`~Xclient.client._transport.translate_error` with the key redacted; a request Triton
refuses before any response (HTTP 400 with an SSE-framed ``data: {"error": ...}`` body) reads as the
server's plain message. Leaving a stream closes its connection, which makes Triton cancel the request.

BYTES outputs may hold any bytes, and Triton writes them into the JSON as they are: events are
decoded with ``surrogateescape`` so a UTF-8 character split across two responses survives to the
incremental decoder (:mod:`Xclient.llms._streaming`).

**Several replicas** (a list of URLs, or a ``dns+http://`` URL): the config call and each stream go
through the clients' replica set (:mod:`Xclient.client._fleet`: balancing, health, the consistency
check of the model config), one HTTP wire per replica. A stream that fails before it opens (the
replica refused the connection) goes to another replica at once (:class:`StreamFailover`); once open,
it stays on its replica. One URL: a single wire, as before.

:class:`GenerateClient` holds everything the two clients share; :class:`SyncGenerateClient` and
:class:`AsyncGenerateClient` differ only in how they wait.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import time
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from ..client import ModelConfig
from ..client import _rest as rest
from ..client._auth import build_headers, merge_headers, scoped_headers, secrets_of
from ..client._observe import Recorder, RequestInfo
from ..client._transport import CallContext, TlsOptions, translate_error
from ..client._urls import DEFAULT_DNS_REFRESH_S, ServerUrl, parse_targets, serves_replicas, target_url
from ..exceptions import XclientError
from ._backends import TritonRequest

SseParser = rest.SseParser
Outputs = dict[str, Any]


def json_inputs(config: ModelConfig, inputs: Mapping[str, np.ndarray]) -> dict[str, Any]:
    """A request's inputs as the generate extension's JSON: a scalar for a one-element [1] input, else a
    list; text as str."""
    body: dict[str, Any] = {}
    for name, array in inputs.items():
        values = array.tolist()
        if array.dtype == np.dtype(object):
            values = [v.decode("utf-8", "surrogateescape") if isinstance(v, bytes) else v for v in array.reshape(-1)]
        spec = config.input(name)
        body[name] = values[0] if spec is not None and spec.shape == (1,) and len(values) == 1 else values
    return body


class StreamFailover:
    """The failover of one stream over the replica set (sans-IO, for both clients): a stream that fails
    to open on a replica goes to another one, while the replica set's rule allows it
    (:meth:`~Xclient.client._fleet.ReplicaSet.fails_over`) and a replica is left; then the error lists
    every replica and what it said."""

    def __init__(self, fleet: Any) -> None:
        self.fleet = fleet
        self._tried: list[tuple[Any, XclientError]] = []

    @property
    def tried(self) -> list[Any]:
        """The replicas this stream failed on."""
        return [replica for replica, _ in self._tried]

    def failed(self, replica: Any, error: BaseException) -> None:
        """The stream could not open on ``replica``: returns to try another, or raises (at once for
        anything but an Xclient error: an interrupt, a cancellation)."""
        if not isinstance(error, XclientError):
            self.fleet.stream_ended(replica, None)
            raise error
        self.fleet.stream_ended(replica, error)
        if not self.fleet.fails_over(error):
            raise error
        self._tried.append((replica, error))
        if not self.fleet.has_other(self.tried):
            raise self.fleet.exhausted(self._tried, "stream")


class GenerateClient:
    """What the sync and async generate clients share: requests, timeouts, parsing, errors."""

    def __init__(
        self,
        url: str | Sequence[str],
        model_name: str,
        model_version: str | None = None,
        *,
        api_key: str | None = None,
        api_key_header: str = "Authorization",
        headers: Mapping[str, str] | None = None,
        init_timeout_s: float = 30.0,
        timeout_s: float = 60.0,
        tls: TlsOptions | None = None,
    ) -> None:
        self._targets = parse_targets(url)
        self._url: ServerUrl = target_url(self._targets[0])
        self._model_name = model_name
        self._headers = build_headers(api_key, api_key_header, headers)
        self._ctx = CallContext(self._url, model_name, tuple(secrets_of(self._headers, api_key)))
        self._init_timeout_s = init_timeout_s
        self._timeout_s = timeout_s
        self._tls = tls or TlsOptions()
        self._version = model_version
        self._config: ModelConfig | None = None
        self._recorder = Recorder(str(self._targets[0]), "http", model_name, model_version, None)

    @property
    def last_request_info(self) -> RequestInfo | None:
        """The last request this thread or task finished on this client (see ModelClient's)."""
        return self._recorder.last()

    @property
    def _several(self) -> bool:
        """Several replicas (or a ``dns+`` name): the replica set serves this client."""
        return serves_replicas(self._targets)

    def _fleet_options(self) -> Any:
        from ..client._fleet import FleetOptions

        model = (self._model_name, self._version or "")
        return FleetOptions(self._targets, self._tls, self._ctx, self._headers, model, False, DEFAULT_DNS_REFRESH_S)

    def _config_op(self, calls: Any) -> Any:
        """The model-config call, for the replica set."""
        return calls.model_config(
            self._model_name, self._version or "", timeout_s=self._init_timeout_s, headers=self._headers
        )

    def _where(self, url: ServerUrl | None) -> CallContext:
        """The context of an error: on ``url`` (a replica), or on the client's URL."""
        return self._ctx if url is None else dataclasses.replace(self._ctx, url=url)

    @contextlib.contextmanager
    def _translated(self, action: str, timeout_s: float, url: ServerUrl | None = None) -> Iterator[None]:
        """Failures of the HTTP layer inside the block become Xclient errors (naming ``url``, the replica)."""
        try:
            yield
        except XclientError:
            raise
        except Exception as e:  # translated into the Xclient error tree
            raise translate_error(e, self._where(url), action, timeout_s) from None

    @property
    def _config_request(self) -> rest.Request:
        return rest.get(rest.model_path(self._model_name, self._version or "") + "/config", self._headers)

    def _config_from(self, response: rest.Response) -> ModelConfig:
        """The config from ``GET .../config``'s answer (a loaded model: an unknown one is an error)."""
        with self._translated("fetching the model config", self._init_timeout_s):
            raw = rest.json_body(response)
        return self._learn_config(raw)

    def _learn_config(self, raw: Mapping[str, Any]) -> ModelConfig:
        self._config = ModelConfig.from_dict(raw, version=self._version)
        return self._config

    def _stream_request(self, request: TritonRequest, info: RequestInfo) -> rest.Request:
        assert self._config is not None, "the model config is fetched first"
        payload = {"id": info.request_id, **json_inputs(self._config, request.inputs)}
        # request_headers(...) around the call (a traceparent) adds to the client's headers
        headers = merge_headers(self._headers, scoped_headers())
        traced = info.headers()
        if traced:
            headers = merge_headers(headers or {}, traced)
        coded = rest.generate_stream(self._model_name, self._version or "", payload, headers or {})
        info.built_ns = info.sent_ns = time.perf_counter_ns()
        info.attempts += 1
        return coded

    @contextlib.contextmanager
    def _observed(self) -> Iterator[RequestInfo]:
        """One stream's :class:`RequestInfo`, handed on when the block ends (``cancelled``: left before
        the server's last event; an error ends it with the error's type). Sync and asyncio streams alike."""
        info = self._recorder.start(True)
        error: BaseException | None = None
        try:
            yield info
        except BaseException as e:
            error = e
            raise
        finally:
            info.cancelled = info.cancelled and error is None
            self._recorder.finish(info, error)

    def _outputs(self, payload: bytes, url: ServerUrl | None = None) -> Outputs:
        """One event's outputs; an ``{"error": ...}`` event (possibly after a 200) raises (naming ``url``,
        the replica)."""
        try:
            event = json.loads(payload.decode("utf-8", "surrogateescape"))
        except ValueError as e:
            event = {"error": f"invalid event {payload[:80]!r}: {e}"}
        if not isinstance(event, dict):
            event = {"error": f"invalid event {payload[:80]!r}"}
        if "error" in event:
            from tritonclient.utils import InferenceServerException

            error = InferenceServerException(msg=str(event["error"]), status="200")
            raise translate_error(error, self._where(url), "inference", self._timeout_s)
        return event

    def _events(self, parser: rest.SseParser, chunk: bytes, url: ServerUrl | None = None) -> list[Outputs]:
        return [self._outputs(payload, url) for payload in parser.feed(chunk)]


class SyncGenerateClient(GenerateClient):
    """Blocking, on the thread-safe sync HTTP wire (made on first use), or the replica set's."""

    _http: Any = None
    _fleet: Any = None

    def _wire(self) -> Any:
        if self._http is None:
            from ..client._http_wire import SyncWire

            self._http = SyncWire(self._url, self._tls)
        return self._http

    def _replicas(self) -> Any:
        """The replica set's transport (several URLs; made on first use)."""
        if self._fleet is None:
            from ..client._fleet import FleetTransport

            self._fleet = FleetTransport(self._fleet_options())
        return self._fleet

    def model_config(self) -> ModelConfig:
        """The model config, fetched once (an unknown or unloaded model fails at once)."""
        if self._config is None:
            if self._several:
                fleet = self._replicas()
                self._learn_config(fleet.run(self._config_op(fleet.calls), self._init_timeout_s))
            else:
                with self._translated("fetching the model config", self._init_timeout_s):
                    response = self._wire().send(self._config_request, self._init_timeout_s)
                self._config_from(response)
        assert self._config is not None
        return self._config

    @contextlib.contextmanager
    def stream(self, request: TritonRequest) -> Iterator[Iterator[Outputs]]:
        """The responses of one request; leaving the block closes the connection (cancels the request)."""
        with self._observed() as info:
            if self._several:
                with self._replica_stream(request, info) as responses:
                    yield responses
                return
            with contextlib.ExitStack() as stack:
                with self._translated("inference", self._timeout_s):
                    coded = self._stream_request(request, info)
                    chunks = stack.enter_context(self._wire().stream(coded, self._timeout_s))
                yield self._iterate(chunks, info)

    @contextlib.contextmanager
    def _replica_stream(self, request: TritonRequest, info: RequestInfo) -> Iterator[Iterator[Outputs]]:
        """:meth:`stream` on a replica of the set (another one if it cannot open there)."""
        fleet = self._replicas()
        failover = StreamFailover(fleet.fleet)
        with contextlib.ExitStack() as stack:
            while True:
                replica = fleet.open_stream(failover.tried)
                info.url = str(replica.url)
                try:
                    with self._translated("inference", self._timeout_s, replica.url):
                        wire = replica.transport.wire
                        coded = self._stream_request(request, info)
                        chunks = stack.enter_context(wire.stream(coded, self._timeout_s))
                except BaseException as error:  # the rule decides: another replica, or raised
                    failover.failed(replica, error)
                    continue
                break
            with _ended(fleet.fleet, replica):
                yield self._iterate(chunks, info, replica.url)

    def _iterate(self, chunks: Iterator[bytes], info: RequestInfo, url: ServerUrl | None = None) -> Iterator[Outputs]:
        parser = rest.SseParser()
        info.cancelled = True  # until the server's last event
        while True:
            with self._translated("inference", self._timeout_s, url):
                chunk = next(chunks, None)
            if chunk is None:
                info.cancelled = False
                return
            for outputs in self._events(parser, chunk, url):
                info.responded()
                yield outputs

    def close(self) -> None:
        http, self._http = self._http, None
        if http is not None:
            http.close()
        fleet, self._fleet = self._fleet, None
        if fleet is not None:
            fleet.close()


@contextlib.contextmanager
def _ended(fleet: Any, replica: Any) -> Iterator[None]:
    """The stream on ``replica`` ends with the block: the replica set counts it, with its error."""
    try:
        yield
    except XclientError as error:
        fleet.stream_ended(replica, error)
        raise
    except BaseException:
        fleet.stream_ended(replica, None)
        raise
    fleet.stream_ended(replica, None)


class AsyncGenerateClient(GenerateClient):
    """asyncio, on the asyncio HTTP wire (per event loop: the caller keeps one client per loop), or the
    replica set's."""

    _http: Any = None
    _fleet: Any = None

    def _wire(self) -> Any:
        if self._http is None:
            from ..client._http_wire import AsyncWire

            self._http = AsyncWire(self._url, self._tls)
        return self._http

    def _replicas(self) -> Any:
        """The replica set's asyncio transport (several URLs; made on first use)."""
        if self._fleet is None:
            from ..client._fleet import AsyncFleetTransport

            self._fleet = AsyncFleetTransport(self._fleet_options())
        return self._fleet

    async def model_config(self) -> ModelConfig:
        """The model config, fetched once (an unknown or unloaded model fails at once)."""
        if self._config is None:
            if self._several:
                fleet = self._replicas()
                self._learn_config(await fleet.run(self._config_op(fleet.calls), self._init_timeout_s))
            else:
                with self._translated("fetching the model config", self._init_timeout_s):
                    response = await self._wire().send(self._config_request, self._init_timeout_s)
                self._config_from(response)
        assert self._config is not None
        return self._config

    @contextlib.asynccontextmanager
    async def stream(self, request: TritonRequest) -> AsyncIterator[AsyncIterator[Outputs]]:
        """The responses of one request; leaving the block closes the connection (cancels the request)."""
        with self._observed() as info:
            if self._several:
                async with self._replica_stream(request, info) as responses:
                    yield responses
                return
            async with contextlib.AsyncExitStack() as stack:
                with self._translated("inference", self._timeout_s):
                    coded = self._stream_request(request, info)
                    chunks = await stack.enter_async_context(self._wire().stream(coded, self._timeout_s))
                yield self._iterate(chunks, info)

    @contextlib.asynccontextmanager
    async def _replica_stream(self, request: TritonRequest, info: RequestInfo) -> AsyncIterator[AsyncIterator[Outputs]]:
        """:meth:`stream` on a replica of the set (another one if it cannot open there)."""
        fleet = self._replicas()
        failover = StreamFailover(fleet.fleet)
        async with contextlib.AsyncExitStack() as stack:
            while True:
                replica = await fleet.open_stream(failover.tried)
                info.url = str(replica.url)
                try:
                    with self._translated("inference", self._timeout_s, replica.url):
                        wire = _async_wire(replica.transport)
                        coded = self._stream_request(request, info)
                        chunks = await stack.enter_async_context(wire.stream(coded, self._timeout_s))
                except BaseException as error:  # the rule decides: another replica, or raised
                    failover.failed(replica, error)
                    continue
                break
            with _ended(fleet.fleet, replica):
                yield self._iterate(chunks, info, replica.url)

    async def _iterate(
        self, chunks: AsyncIterator[bytes], info: RequestInfo, url: ServerUrl | None = None
    ) -> AsyncIterator[Outputs]:
        parser = rest.SseParser()
        info.cancelled = True  # until the server's last event
        while True:
            with self._translated("inference", self._timeout_s, url):
                chunk = await anext(chunks, None)
            if chunk is None:
                info.cancelled = False
                return
            for outputs in self._events(parser, chunk, url):
                info.responded()
                yield outputs

    async def close(self) -> None:
        http, self._http = self._http, None
        if http is not None:
            await http.close()
        fleet, self._fleet = self._fleet, None
        if fleet is not None:
            await fleet.close()


def _async_wire(transport: Any) -> Any:
    """A replica's asyncio HTTP wire: the one its transport sends on (made on first use, as the transport
    makes it), so the stream shares the replica's connections."""
    if transport._wire is None:
        from ..client._http_wire import AsyncWire

        transport._wire = AsyncWire(transport.url, transport.tls)
    return transport._wire
