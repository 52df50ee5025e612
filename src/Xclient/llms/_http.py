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

:class:`GenerateClient` holds everything the two clients share; :class:`SyncGenerateClient` and
:class:`AsyncGenerateClient` differ only in how they wait.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from typing import Any

import numpy as np

from ..client import ModelConfig
from ..client import _rest as rest
from ..client._auth import build_headers, merge_headers, scoped_headers, secrets_of
from ..client._observe import Recorder, RequestInfo
from ..client._transport import CallContext, TlsOptions, translate_error
from ..client._urls import ServerUrl
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


class GenerateClient:
    """What the sync and async generate clients share: requests, timeouts, parsing, errors."""

    def __init__(
        self,
        url: ServerUrl,
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
        self._url = url
        self._model_name = model_name
        self._headers = build_headers(api_key, api_key_header, headers)
        self._ctx = CallContext(url, model_name, tuple(secrets_of(self._headers, api_key)))
        self._init_timeout_s = init_timeout_s
        self._timeout_s = timeout_s
        self._tls = tls or TlsOptions()
        self._version = model_version
        self._config: ModelConfig | None = None
        self._recorder = Recorder(str(url), "http", model_name, model_version, None)

    @property
    def last_request_info(self) -> RequestInfo | None:
        """The last request this thread or task finished on this client (see ModelClient's)."""
        return self._recorder.last()

    @contextlib.contextmanager
    def _translated(self, action: str, timeout_s: float) -> Iterator[None]:
        """Failures of the HTTP layer inside the block become Xclient errors."""
        try:
            yield
        except XclientError:
            raise
        except Exception as e:  # translated into the Xclient error tree
            raise translate_error(e, self._ctx, action, timeout_s) from None

    @property
    def _config_request(self) -> rest.Request:
        return rest.get(rest.model_path(self._model_name, self._version or "") + "/config", self._headers)

    def _config_from(self, response: rest.Response) -> ModelConfig:
        """The config from ``GET .../config``'s answer (a loaded model: an unknown one is an error)."""
        with self._translated("fetching the model config", self._init_timeout_s):
            raw = rest.json_body(response)
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
        info.attempts = 1
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

    def _outputs(self, payload: bytes) -> Outputs:
        """One event's outputs; an ``{"error": ...}`` event (possibly after a 200) raises."""
        try:
            event = json.loads(payload.decode("utf-8", "surrogateescape"))
        except ValueError as e:
            event = {"error": f"invalid event {payload[:80]!r}: {e}"}
        if not isinstance(event, dict):
            event = {"error": f"invalid event {payload[:80]!r}"}
        if "error" in event:
            from tritonclient.utils import InferenceServerException

            error = InferenceServerException(msg=str(event["error"]), status="200")
            raise translate_error(error, self._ctx, "inference", self._timeout_s)
        return event

    def _events(self, parser: rest.SseParser, chunk: bytes) -> list[Outputs]:
        return [self._outputs(payload) for payload in parser.feed(chunk)]


class SyncGenerateClient(GenerateClient):
    """Blocking, on the thread-safe sync HTTP wire (made on first use)."""

    _http: Any = None

    def _wire(self) -> Any:
        if self._http is None:
            from ..client._http_wire import SyncWire

            self._http = SyncWire(self._url, self._tls)
        return self._http

    def model_config(self) -> ModelConfig:
        """The model config, fetched once (an unknown or unloaded model fails at once)."""
        if self._config is None:
            with self._translated("fetching the model config", self._init_timeout_s):
                response = self._wire().send(self._config_request, self._init_timeout_s)
            self._config_from(response)
        assert self._config is not None
        return self._config

    @contextlib.contextmanager
    def stream(self, request: TritonRequest) -> Iterator[Iterator[Outputs]]:
        """The responses of one request; leaving the block closes the connection (cancels the request)."""
        with self._observed() as info, contextlib.ExitStack() as stack:
            with self._translated("inference", self._timeout_s):
                coded = self._stream_request(request, info)
                chunks = stack.enter_context(self._wire().stream(coded, self._timeout_s))
            yield self._iterate(chunks, info)

    def _iterate(self, chunks: Iterator[bytes], info: RequestInfo) -> Iterator[Outputs]:
        parser = rest.SseParser()
        info.cancelled = True  # until the server's last event
        while True:
            with self._translated("inference", self._timeout_s):
                chunk = next(chunks, None)
            if chunk is None:
                info.cancelled = False
                return
            for outputs in self._events(parser, chunk):
                info.responded()
                yield outputs

    def close(self) -> None:
        http, self._http = self._http, None
        if http is not None:
            http.close()


class AsyncGenerateClient(GenerateClient):
    """asyncio, on the asyncio HTTP wire (per event loop: the caller keeps one client per loop)."""

    _http: Any = None

    def _wire(self) -> Any:
        if self._http is None:
            from ..client._http_wire import AsyncWire

            self._http = AsyncWire(self._url, self._tls)
        return self._http

    async def model_config(self) -> ModelConfig:
        """The model config, fetched once (an unknown or unloaded model fails at once)."""
        if self._config is None:
            with self._translated("fetching the model config", self._init_timeout_s):
                response = await self._wire().send(self._config_request, self._init_timeout_s)
            self._config_from(response)
        assert self._config is not None
        return self._config

    @contextlib.asynccontextmanager
    async def stream(self, request: TritonRequest) -> AsyncIterator[AsyncIterator[Outputs]]:
        """The responses of one request; leaving the block closes the connection (cancels the request)."""
        with self._observed() as info:
            async with contextlib.AsyncExitStack() as stack:
                with self._translated("inference", self._timeout_s):
                    coded = self._stream_request(request, info)
                    chunks = await stack.enter_async_context(self._wire().stream(coded, self._timeout_s))
                yield self._iterate(chunks, info)

    async def _iterate(self, chunks: AsyncIterator[bytes], info: RequestInfo) -> AsyncIterator[Outputs]:
        parser = rest.SseParser()
        info.cancelled = True  # until the server's last event
        while True:
            with self._translated("inference", self._timeout_s):
                chunk = await anext(chunks, None)
            if chunk is None:
                info.cancelled = False
                return
            for outputs in self._events(parser, chunk):
                info.responded()
                yield outputs

    async def close(self) -> None:
        http, self._http = self._http, None
        if http is not None:
            await http.close()
