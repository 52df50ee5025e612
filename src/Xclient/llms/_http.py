"""Triton's HTTP generate extension (PROTOCOLS.md section 3), for decoupled LLMs on ``http(s)://`` URLs.

Decoupled models refuse HTTP ``/infer``, so on an HTTP URL the LLM classes fetch the model config and
stream through ``POST /v2/models/{model}/generate_stream`` (server-sent events, one JSON object per
response) with ``httpx``. The rules are the base clients': the same headers and API key
(``Authorization: Bearer <key>`` by default), ``init_timeout_s`` for the config call (an unknown model
fails at once), ``timeout_s`` for each response, errors mapped to the same :mod:`Xclient.exceptions`
types with the key redacted. Leaving a stream closes its connection, which makes Triton cancel the request.

BYTES outputs may hold any bytes, and Triton writes them into the JSON as they are: events are
decoded with ``surrogateescape`` so a UTF-8 character split across two responses survives to the
incremental decoder (:mod:`Xclient.llms._streaming`).

:class:`GenerateClient` holds everything the two clients share; :class:`SyncGenerateClient` and
:class:`AsyncGenerateClient` differ only in how they wait.
"""

from __future__ import annotations

import contextlib
import json
import urllib.parse
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping
from typing import Any

import numpy as np

from ..client import ModelConfig
from ..client._auth import build_headers, scoped_headers, secrets_of
from ..client._transport import CallContext, translate_error
from ..client._urls import ServerUrl
from ..exceptions import XclientError
from ._backends import TritonRequest

Outputs = dict[str, Any]


class SseParser:
    """Server-sent events -> the ``data`` payload of each event, fed bytes as they arrive.

    >>> parser = SseParser()
    >>> parser.feed(b'data: {"a": 1}\\n\\nda'), parser.feed(b'ta: {"b": 2}\\n\\n')
    ([b'{"a": 1}'], [b'{"b": 2}'])
    """

    def __init__(self) -> None:
        self._buffer = b""
        self._data: list[bytes] = []

    def feed(self, chunk: bytes) -> list[bytes]:
        self._buffer += chunk
        events = []
        while b"\n" in self._buffer:
            line, self._buffer = self._buffer.split(b"\n", 1)
            line = line.rstrip(b"\r")
            if not line:  # a blank line ends an event
                if self._data:
                    events.append(b"\n".join(self._data))
                    self._data = []
            elif line.startswith(b"data:"):
                self._data.append(line[5:].removeprefix(b" "))
        return events


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
    """What the sync and async generate clients share: URLs, headers, timeouts, parsing, errors."""

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
    ) -> None:
        self._url = url
        self._model_name = model_name
        self._headers = build_headers(api_key, api_key_header, headers)
        self._ctx = CallContext(url, model_name, tuple(secrets_of(self._headers, api_key)))
        self._init_timeout_s = init_timeout_s
        self._timeout_s = timeout_s
        path = f"/v2/models/{urllib.parse.quote(model_name, safe='')}"
        if model_version:
            path += f"/versions/{urllib.parse.quote(str(model_version), safe='')}"
        self._model_url = f"{url.scheme}://{url.address}{path}"
        self._config: ModelConfig | None = None
        self._version = model_version

    def _timeout(self, read_s: float) -> Any:
        import httpx

        return httpx.Timeout(read_s, connect=self._init_timeout_s)

    def _error(self, exc: BaseException, action: str, timeout_s: float) -> XclientError:
        """Any failure as an Xclient error: HTTP statuses and ``{"error": ...}`` bodies as the base
        clients map Triton's answers, httpx's timeouts and connection failures by kind."""
        import httpx
        from tritonclient.utils import InferenceServerException

        if isinstance(exc, httpx.TimeoutException):
            exc = TimeoutError(str(exc) or type(exc).__name__)
        elif isinstance(exc, httpx.TransportError):
            # The socket's own error (refused, DNS...) says whether the request reached the server.
            exc = _os_error_under(exc) or ConnectionError(str(exc) or type(exc).__name__)
        elif isinstance(exc, _HttpStatus):
            exc = InferenceServerException(msg=exc.message, status=str(exc.status))
        return translate_error(exc, self._ctx, action, timeout_s)

    def _check(self, status: int, body: bytes) -> None:
        if status != 200:
            raise _HttpStatus(status, _error_message(body))

    @contextlib.contextmanager
    def _translated(self, action: str, timeout_s: float) -> Iterator[None]:
        """Failures inside the block (httpx's, HTTP statuses) become Xclient errors; the caller's own
        exceptions pass through."""
        try:
            yield
        except (XclientError, GeneratorExit):
            raise
        except Exception as e:  # noqa: BLE001 - translated into the Xclient error tree
            if _foreign(e):
                raise
            raise self._error(e, action, timeout_s) from None

    def _config_from(self, response: Any) -> ModelConfig:
        """The config from ``GET .../config``'s response (a loaded model: an unknown one is an error)."""
        with self._translated("fetching the model config", self._init_timeout_s):
            self._check(response.status_code, response.content)
        self._config = ModelConfig.from_dict(json.loads(response.content), version=self._version)
        return self._config

    @property
    def _config_request(self) -> tuple[str, Any]:
        return f"{self._model_url}/config", self._timeout(self._init_timeout_s)

    def _stream_request(self, request: TritonRequest) -> dict[str, Any]:
        """``httpx`` ``stream()`` arguments for one request."""
        assert self._config is not None, "the model config is fetched first"
        body = json_inputs(self._config, request.inputs)
        return {
            "url": f"{self._model_url}/generate_stream",
            "json": body,
            "timeout": self._timeout(self._timeout_s),
            "headers": scoped_headers(),  # request_headers(...) around the call (a traceparent)
        }

    def _outputs(self, payload: bytes) -> Outputs:
        """One event's outputs; an ``{"error": ...}`` event (possibly after a 200) raises."""
        try:
            event = json.loads(payload.decode("utf-8", "surrogateescape"))
        except ValueError as e:
            event = {"error": f"invalid event {payload[:80]!r}: {e}"}
        if not isinstance(event, dict):
            event = {"error": f"invalid event {payload[:80]!r}"}
        if "error" in event:
            raise self._error(_HttpStatus(200, str(event["error"])), "inference", self._timeout_s)
        return event

    def _events(self, parser: SseParser, chunk: bytes) -> list[Outputs]:
        return [self._outputs(payload) for payload in parser.feed(chunk)]


class _HttpStatus(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _error_message(body: bytes) -> str:
    text = body.decode("utf-8", "replace")
    try:
        parsed = json.loads(text)
    except ValueError:
        return text.strip() or "no message"
    return str(parsed.get("error", parsed)) if isinstance(parsed, dict) else text


class SyncGenerateClient(GenerateClient):
    """Blocking: one thread-safe ``httpx.Client``, made on first use."""

    _http: Any = None

    def _client(self) -> Any:
        if self._http is None:
            import httpx

            self._http = httpx.Client(headers=self._headers)
        return self._http

    def model_config(self) -> ModelConfig:
        """The model config, fetched once (an unknown or unloaded model fails at once)."""
        if self._config is None:
            url, timeout = self._config_request
            with self._translated("fetching the model config", self._init_timeout_s):
                response = self._client().get(url, timeout=timeout)
            self._config_from(response)
        assert self._config is not None
        return self._config

    @contextlib.contextmanager
    def stream(self, request: TritonRequest) -> Iterator[Iterator[Outputs]]:
        """The responses of one request; leaving the block closes the connection (cancels the request)."""
        translated = self._translated("inference", self._timeout_s)
        with translated, self._client().stream("POST", **self._stream_request(request)) as response:
            if response.status_code != 200:
                self._check(response.status_code, response.read())
            yield self._iterate(response.iter_bytes())

    def _iterate(self, chunks: Iterable[bytes]) -> Iterator[Outputs]:
        parser = SseParser()
        for chunk in chunks:
            yield from self._events(parser, chunk)

    def close(self) -> None:
        http, self._http = self._http, None
        if http is not None:
            http.close()


class AsyncGenerateClient(GenerateClient):
    """asyncio: one ``httpx.AsyncClient`` (per event loop: the caller keeps one client per loop)."""

    _http: Any = None

    def _client(self) -> Any:
        if self._http is None:
            import httpx

            self._http = httpx.AsyncClient(headers=self._headers)
        return self._http

    async def model_config(self) -> ModelConfig:
        """The model config, fetched once (an unknown or unloaded model fails at once)."""
        if self._config is None:
            url, timeout = self._config_request
            with self._translated("fetching the model config", self._init_timeout_s):
                response = await self._client().get(url, timeout=timeout)
            self._config_from(response)
        assert self._config is not None
        return self._config

    @contextlib.asynccontextmanager
    async def stream(self, request: TritonRequest) -> AsyncIterator[AsyncIterator[Outputs]]:
        """The responses of one request; leaving the block closes the connection (cancels the request)."""
        with self._translated("inference", self._timeout_s):
            async with self._client().stream("POST", **self._stream_request(request)) as response:
                if response.status_code != 200:
                    self._check(response.status_code, await response.aread())
                yield self._iterate(response.aiter_bytes())

    async def _iterate(self, chunks: AsyncIterator[bytes]) -> AsyncIterator[Outputs]:
        parser = SseParser()
        async for chunk in chunks:
            for outputs in self._events(parser, chunk):
                yield outputs

    async def close(self) -> None:
        http, self._http = self._http, None
        if http is not None:
            await http.aclose()


def _os_error_under(exc: BaseException) -> OSError | None:
    """The ``OSError`` that httpx's error wraps (through httpcore's), if any."""
    seen: set[int] = set()
    cause = exc.__cause__ or exc.__context__
    while cause is not None and id(cause) not in seen:
        if isinstance(cause, OSError):
            return cause
        seen.add(id(cause))
        cause = cause.__cause__ or cause.__context__
    return None


def _foreign(exc: BaseException) -> bool:
    """An exception that did not come from the request (the caller's own, raised inside the block)."""
    import httpx

    return not isinstance(exc, (httpx.HTTPError, _HttpStatus, OSError))
