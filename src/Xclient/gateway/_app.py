"""The ASGI app: OpenAI's routes on Starlette, each a thin shell over Xclient's adapters.

- Chat and completions: the request is checked (:mod:`._protocol`), messages are rendered with the model's
  chat template (the same templates as ChatMetaLM), and each choice (``n``, and each prompt of a
  completions list) is one generation of the LLM engine, run as its own task. The first text (or error) is
  awaited before the answer starts, so errors before any text get their HTTP status; later ones come as
  an ``error`` event. A client that goes away mid-stream cancels the tasks, which closes their Triton
  streams: Triton cancels the requests.
- Embeddings and rerank: :class:`~Xclient.MetaLMEmbeddings` (batched to the model's ``max_batch_size``,
  batches in flight at once) and :class:`~Xclient.MetaLMRerank` (scores through a sigmoid, as Cohere and
  Jina answer in [0, 1]).
- A ``traceparent`` (and ``tracestate``) header goes on to Triton with every request it causes
  (:func:`Xclient.client.request_headers`: HTTP headers, gRPC metadata).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import os
import sys
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import Any, TypeAlias

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from ..client import request_headers
from ..exceptions import ModelUnavailableError, XclientError
from ..llms._backends import Sampling
from ..llms._engine import Call, Engine, arun
from ..llms._streaming import Ending
from ..llms._templates import resolve_template
from ._errors import ApiError, from_xclient, unknown_model
from ._metrics import CONTENT_TYPE, Metrics
from ._protocol import (
    DONE,
    Answer,
    Generate,
    add_usage,
    check_backend,
    embeddings_answer,
    event,
    finish_reason,
    new_id,
    parse_chat,
    parse_completion,
    parse_embeddings,
    parse_json,
    parse_rerank,
    usage,
)
from ._servers import Located, Options, Servers

LOGGER = logging.getLogger("Xclient.gateway")
#: Request headers passed on to Triton (W3C trace context).
TRACE_HEADERS = ("traceparent", "tracestate")
ENV_API_KEY = "XCLIENT_API_KEY"

#: What a route answers: a response, or (streaming) an :class:`EventStream`; both are ASGI apps.
Reply: TypeAlias = "Response | EventStream"
Handler = Callable[[Request, "_Exchange"], Awaitable[Reply]]
#: One generation's texts and its :class:`Ending`, as the engine yields them.
Items: TypeAlias = AsyncGenerator[str | Ending, None]


class _Exchange:
    """One request's bookkeeping: its route and model for the metrics, when it started."""

    def __init__(self, route: str) -> None:
        self.route = route
        self.model = ""  # a label only once the model is known to exist: no label per typo
        self.started = time.perf_counter()


class Choices:
    """The choices of one chat or completions request as they come: ``(choice index, item)`` lists, each
    item a text or an :class:`Ending`. The request is sent by the first :meth:`next`, which is awaited in
    the request's own task, inside :func:`request_headers`; an error raises."""

    running: bool = True

    async def next(self) -> list[tuple[int, str | Ending]]:
        raise NotImplementedError

    async def aclose(self) -> None:
        """Stop what still runs: its Triton streams are closed, which cancels the requests."""
        raise NotImplementedError


async def _first_item(items: Items, headers: Mapping[str, str], metrics: Metrics) -> str | Ending:
    """A generation's first item, read by the calling task: its request goes out now, with the trace headers,
    and the generation counts as in flight from here (until the caller ends it; a failure here uncounts it)."""
    metrics.in_flight.inc()
    try:
        with request_headers(headers):
            return await items.__anext__()
    except BaseException:
        metrics.in_flight.dec()
        raise


class OneChoice(Choices):
    """One generation, read straight from the engine (no task, no queue)."""

    def __init__(self, engine: Engine, call: Call, headers: Mapping[str, str], metrics: Metrics) -> None:
        self._items = arun(engine, call)
        self._headers = headers
        self._metrics = metrics
        self._started = False

    async def next(self) -> list[tuple[int, str | Ending]]:
        if not self._started:
            item = await _first_item(self._items, self._headers, self._metrics)
            self._started = True
        else:
            item = await self._items.__anext__()
        if isinstance(item, Ending):
            self.running = False
        return [(0, item)]

    async def aclose(self) -> None:
        await self._items.aclose()
        if self._started:
            self._started = False
            self._metrics.in_flight.dec()


class ManyChoices(Choices):
    """Several generations (``n``, or several prompts), or one streamed, each read by a task of its own; their
    items come out in arrival order: each :meth:`next` takes every item that has come (a task reads its next
    response while the last event is being sent). One stream's first response is read by the caller's task
    instead: its request goes out at once, and its first text reaches the client with no task switch."""

    def __init__(self, engine: Engine, calls: Sequence[Call], headers: Mapping[str, str], metrics: Metrics) -> None:
        self._headers = headers
        self._metrics = metrics
        # A list and one waiter, not an asyncio.Queue: the same order for a fraction of its cost per token.
        self._items: list[tuple[int, str | Ending | BaseException]] = []
        self._waiter: asyncio.Future[None] | None = None
        self._left = len(calls)
        self._streams = [arun(engine, call) for call in calls]
        self._first = len(calls) == 1  # the first response is still to be read inline
        self._tasks = [] if self._first else [self._reader(i, stream) for i, stream in enumerate(self._streams)]

    def _reader(self, index: int, stream: Items, started: bool = False) -> asyncio.Future[None]:
        return asyncio.ensure_future(self._generate(index, stream, started))

    def _put(self, item: tuple[int, str | Ending | BaseException]) -> None:
        self._items.append(item)
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def _generate(self, index: int, stream: Items, started: bool) -> None:
        if not started:
            self._metrics.in_flight.inc()
        try:
            with request_headers(self._headers):
                async for item in stream:
                    self._put((index, item))
        except Exception as e:  # handed to the reader, which raises it
            self._put((index, e))
        finally:
            self._metrics.in_flight.dec()

    async def next(self) -> list[tuple[int, str | Ending]]:
        if self._first:
            self._first = False
            return [(0, await self._read_first())]
        while not self._items:
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        items, self._items = self._items, []
        out: list[tuple[int, str | Ending]] = []
        for index, item in items:
            if isinstance(item, BaseException):
                raise item
            if isinstance(item, Ending):
                self._left -= 1
                self.running = self._left > 0
            out.append((index, item))
        return out

    async def _read_first(self) -> str | Ending:
        stream = self._streams[0]
        item = await _first_item(stream, self._headers, self._metrics)
        if isinstance(item, Ending):
            self.running = False
            self._metrics.in_flight.dec()
        else:
            self._tasks.append(self._reader(0, stream, started=True))
        return item

    async def aclose(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for stream in self._streams:  # those no task has read to the end (closing an ended one does nothing)
            with contextlib.suppress(Exception):
                await stream.aclose()


def choices(
    engine: Engine, calls: Sequence[Call], headers: Mapping[str, str], metrics: Metrics, *, stream: bool
) -> Choices:
    """One generation not streamed is read straight from the engine. Streams are read by a task per
    generation after their first response, so that the next response is read while the last event is being
    sent. (Measured on this 2-core machine: reading a whole stream in the sending task cost about 15% more
    gateway CPU at concurrency 32; reading its first response there took 0.2-0.25 ms off the time to the first
    text at concurrency 1.)"""
    if len(calls) == 1 and not stream:
        return OneChoice(engine, calls[0], headers, metrics)
    return ManyChoices(engine, calls, headers, metrics)


class EventStream:
    """A server-sent event stream (an ASGI response) that stops as soon as the client disconnects, also
    while waiting for the next event. ``write(send)`` sends the body (its last part with ``more_body``
    false); ``close()`` runs at the end whatever happened (the stream's generations are closed then)."""

    HEADERS = [
        (b"content-type", b"text/event-stream; charset=utf-8"),
        (b"cache-control", b"no-cache"),
        (b"x-accel-buffering", b"no"),
    ]

    def __init__(self, write: Callable[[Send], Awaitable[None]], close: Callable[[], Awaitable[None]]) -> None:
        self._write = write
        self._close = close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # The events are sent by this task, and a watcher cancels it if the client goes away first. (Sending
        # from a task of its own, as Starlette does, took 0.3-0.4 ms more to the first text at concurrency 1.)
        this = asyncio.current_task()
        assert this is not None
        gone = False  # the client disconnected while the stream was being sent

        async def watch() -> None:
            nonlocal gone
            with contextlib.suppress(Exception):
                while (await receive())["type"] != "http.disconnect":
                    pass
                gone = True
                this.cancel()

        # On one event loop: once the last event is sent, the watcher is cancelled before it can run again.
        watching = asyncio.ensure_future(watch())
        try:
            await send({"type": "http.response.start", "status": 200, "headers": self.HEADERS})
            await self._write(send)
        except asyncio.CancelledError:
            if not gone:
                raise  # cancelled from outside (the server shutting down)
            if sys.version_info >= (3, 11):
                this.uncancel()
        finally:
            watching.cancel()
            await self._close()


class Gateway:
    """The routes' handlers and what they share: the servers, the key, the metrics."""

    def __init__(self, servers: Servers, api_key: str | None, metrics: Metrics) -> None:
        self.servers = servers
        self._api_key = api_key.encode() if api_key else None
        self.metrics = metrics

    # -- the frame of every /v1 route -------------------------------------------------------------

    def route(self, name: str, handler: Handler) -> Callable[[Request], Awaitable[Reply]]:
        async def endpoint(request: Request) -> Reply:
            exchange = _Exchange(name)
            try:
                self.authorize(request)
                response = await handler(request, exchange)
            except ApiError as e:
                response = self._error(e, exchange)
            except XclientError as e:
                response = self._error(from_xclient(e), exchange)
            if not isinstance(response, EventStream):
                self._record(exchange, response.status_code)
            return response

        return endpoint

    def authorize(self, request: Request) -> None:
        if self._api_key is None:
            return
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), self._api_key):
            raise ApiError(
                401,
                "Missing or wrong API key: send 'Authorization: Bearer KEY' with the gateway's --api-key",
                code="invalid_api_key",
            )

    def _error(self, error: ApiError, exchange: _Exchange) -> Response:
        if error.status >= 500:
            LOGGER.warning("%s %s: %s %s", exchange.route, exchange.model or "-", error.status, error.message)
        return JSONResponse(error.body(), status_code=error.status)

    def _record(self, exchange: _Exchange, status: int) -> None:
        self.metrics.requests.labels(exchange.route, exchange.model, str(status)).inc()
        self.metrics.latency.labels(exchange.route, exchange.model).observe(time.perf_counter() - exchange.started)

    async def _locate(self, model: str, exchange: _Exchange, kinds: tuple[str, ...]) -> Located:
        try:
            located = await self.servers.locate(model)
        except ModelUnavailableError as e:
            raise unknown_model(model, e.message) from None
        exchange.model = model
        if located.kind not in kinds:
            route = {"embedding": "/v1/embeddings", "rerank": "/v1/rerank"}.get(located.kind, "/v1/chat/completions")
            raise ApiError(
                400,
                f"Model {model!r} is a {located.kind} model: it is served on {route}",
                param="model",
                code="model_not_supported",
            )
        return located

    # -- chat and completions ------------------------------------------------------------------------

    async def chat(self, request: Request, exchange: _Exchange) -> Reply:
        return await self._generate(parse_chat(parse_json(await request.body())), request, exchange, chat=True)

    async def completions(self, request: Request, exchange: _Exchange) -> Reply:
        return await self._generate(parse_completion(parse_json(await request.body())), request, exchange, chat=False)

    async def _generate(self, parsed: Generate, request: Request, exchange: _Exchange, *, chat: bool) -> Reply:
        located = await self._locate(parsed.model, exchange, ("chat", "completion"))
        engine = located.replicas.engine
        headers = _trace_headers(request)
        with request_headers(headers):
            connection = await self._guard(parsed, engine.aconnection(parsed.model))
        check_backend(parsed, connection.backend)
        prompts = parsed.prompts or []
        template_stop: tuple[str, ...] = ()
        if chat:
            template = resolve_template(None, parsed.model)
            prompts, template_stop = [template.render(parsed.turns or [])], template.stop
        sampling = Sampling(
            max_tokens=parsed.max_tokens,
            settings=parsed.settings,
            stop=tuple(dict.fromkeys((*parsed.stop, *template_stop))),
        )
        calls = [Call(parsed.model, prompt, sampling, parsed.stream) for prompt in prompts for _ in range(parsed.n)]
        generations = choices(engine, calls, headers, self.metrics, stream=parsed.stream)
        try:
            first = await self._guard(parsed, generations.next())
        except BaseException:
            await generations.aclose()
            raise
        answer = Answer(parsed, chat)
        if parsed.stream:

            async def write(send: Send) -> None:
                await self._events(parsed, answer, generations, first, exchange, len(prompts), send)

            async def close() -> None:
                try:
                    await generations.aclose()
                finally:
                    self._record(exchange, 200)

            return EventStream(write, close)
        try:
            return JSONResponse(await self._whole(parsed, answer, generations, first, len(prompts)))
        finally:
            await generations.aclose()

    async def _guard(self, parsed: Generate, awaitable: Awaitable[Any]) -> Any:
        """``awaitable``'s result; an Xclient error as an ApiError naming the request's field, if any."""
        try:
            return await awaitable
        except XclientError as e:
            if isinstance(e, ModelUnavailableError):
                self.servers.forget(parsed.model)
            raise from_xclient(e, parsed.fields) from None

    async def _whole(
        self, parsed: Generate, answer: Answer, generations: Choices, first: list[Any], prompts: int
    ) -> dict[str, Any]:
        count = prompts * parsed.n
        texts = [""] * count
        endings: list[Ending | None] = [None] * count
        items = first
        while True:
            for index, item in items:
                if isinstance(item, Ending):
                    texts[index] += item.text
                    endings[index] = item
                else:
                    texts[index] += item
            if not generations.running:
                break
            items = await self._guard(parsed, generations.next())
        done = [e for e in endings if e is not None]
        total = add_usage([usage(done[p * parsed.n : (p + 1) * parsed.n]) for p in range(prompts)])
        self.metrics.count_tokens(parsed.model, total)
        return answer.whole(texts, done, total)

    async def _events(
        self,
        parsed: Generate,
        answer: Answer,
        generations: Choices,
        first: list[Any],
        exchange: _Exchange,
        prompts: int,
        send: Send,
    ) -> None:
        """The stream's events, each sent as it comes: the role chunks with the first texts, then each text that
        came while the last was being sent (several choices: one event each) in one body part; the last texts,
        the usage and ``[DONE]`` with the end of the body."""
        count = prompts * parsed.n
        endings: list[Ending | None] = [None] * count
        head = b"".join(answer.chunk(index, None, role=True) for index in range(count)) if answer.chat else b""
        items, timed = first, False
        while True:
            out = [head]
            head = b""
            for index, item in items:
                if isinstance(item, Ending):
                    if item.text:
                        out.append(answer.chunk(index, item.text))
                    out.append(answer.chunk(index, None, finish_reason(item)))
                    endings[index] = item
                elif item:
                    if not timed:
                        timed = True
                        self.metrics.first_token.labels(exchange.route, exchange.model).observe(
                            time.perf_counter() - exchange.started
                        )
                    out.append(answer.chunk(index, item))
            if not generations.running:
                break
            await send({"type": "http.response.body", "body": b"".join(out), "more_body": True})
            try:
                items = await generations.next()
            except XclientError as e:
                if isinstance(e, ModelUnavailableError):
                    self.servers.forget(parsed.model)
                error = event(from_xclient(e, parsed.fields).body())  # after a 200: OpenAI's clients raise it
                await send({"type": "http.response.body", "body": error, "more_body": False})
                return
        done = [e for e in endings if e is not None]
        total = add_usage([usage(done[p * parsed.n : (p + 1) * parsed.n]) for p in range(prompts)])
        self.metrics.count_tokens(parsed.model, total)
        # The last texts, the usage and [DONE] leave in one write, with the end of the body.
        out.append(answer.usage_chunk(total) if parsed.include_usage else b"")
        await send({"type": "http.response.body", "body": b"".join((*out, DONE)), "more_body": False})

    # -- embeddings and rerank ------------------------------------------------------------------------

    async def embeddings(self, request: Request, exchange: _Exchange) -> Response:
        parsed = parse_embeddings(parse_json(await request.body()))
        located = await self._locate(parsed.model, exchange, ("embedding",))
        adapter = located.replicas.adapter(parsed.model, "embedding")
        dimension = adapter.detect_contract(located.config).dense.shape[0]
        if parsed.dimensions is not None and parsed.dimensions != dimension:
            raise ApiError(
                400,
                f"'dimensions': model {parsed.model!r} gives {dimension}-dimensional vectors, got {parsed.dimensions}",
                param="dimensions",
                code="unsupported_value",
            )
        with request_headers(_trace_headers(request)):
            vectors = await self._adapter_call(parsed.model, adapter.aembed_documents(parsed.texts))
        return JSONResponse(embeddings_answer(parsed.model, vectors, parsed.base64))

    async def rerank(self, request: Request, exchange: _Exchange) -> Response:
        parsed = parse_rerank(parse_json(await request.body()))
        located = await self._locate(parsed.model, exchange, ("rerank",))
        adapter = located.replicas.adapter(parsed.model, "rerank")
        with request_headers(_trace_headers(request)):
            ranked = await self._adapter_call(
                parsed.model, adapter.arerank(parsed.query, parsed.documents, parsed.top_n)
            )
        results = []
        for result in ranked:
            entry: dict[str, Any] = {"index": result.index, "relevance_score": result.score}
            if parsed.return_documents:
                entry["document"] = {"text": parsed.documents[result.index]}
            results.append(entry)
        return JSONResponse(
            {"id": new_id("rerank"), "model": parsed.model, "results": results, "usage": {"total_tokens": 0}}
        )

    async def _adapter_call(self, model: str, awaitable: Awaitable[Any]) -> Any:
        try:
            return await awaitable
        except ModelUnavailableError:
            self.servers.forget(model)
            raise

    # -- listing, health, metrics -----------------------------------------------------------------------

    async def list_models(self, request: Request, exchange: _Exchange) -> Response:
        located = await self.servers.models()
        data = [
            {
                "id": m.name,
                "object": "model",
                "created": 0,
                "owned_by": "triton",
                "kind": m.kind,
                "server": m.server.url,
                "servers": list(m.replicas.urls),
            }
            for m in located
        ]
        return JSONResponse({"object": "list", "data": data})

    async def health(self, request: Request) -> Response:
        servers, models = await self.servers.health()
        ok = any(ready for _, ready in servers)
        body = {
            "status": "ok" if ok else "unavailable",
            "servers": [{"url": u, "ready": r} for u, r in servers],
            "models": {name: [{"url": u, "ready": r} for u, r in replicas] for name, replicas in models.items()},
        }
        return JSONResponse(body, status_code=200 if ok else 503)

    async def prometheus(self, request: Request) -> Response:
        return Response(self.metrics.exposition(), media_type=CONTENT_TYPE)


def _trace_headers(request: Request) -> dict[str, str]:
    return {name: value for name in TRACE_HEADERS if (value := request.headers.get(name))}


async def _not_found(request: Request, exc: Exception) -> Response:
    """Unknown routes and methods, in OpenAI's shape; under ``/v1`` only for callers with the key."""
    if request.url.path.startswith("/v1/"):
        try:
            request.app.state.gateway.authorize(request)
        except ApiError as e:
            return JSONResponse(e.body(), status_code=e.status)
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    message = f"{request.method} {request.url.path}: " + ("no such route" if status == 404 else str(exc))
    code = {404: "unknown_url", 405: "method_not_allowed"}.get(status)
    return JSONResponse(ApiError(status, message, code=code).body(), status_code=status)


def create_app(
    urls: str | Sequence[str],
    api_key: str | None = None,
    triton_api_key: str | None = None,
    *,
    init_timeout_s: float = 30.0,
    timeout_s: float = 60.0,
    max_concurrency: int = 8,
) -> Starlette:
    """An ASGI app serving OpenAI's API in front of the Triton servers at ``urls``.

    Args:
        urls: one Triton URL or several (``grpc://host:8001``, ``http://host:8000``; no scheme: HTTP); a
            model served by several is reached over all of them, as one replica set (balancing, failover).
        api_key: when set, every ``/v1`` route requires ``Authorization: Bearer <api_key>``.
        triton_api_key: sent to Triton (``Authorization: Bearer``); None: ``XCLIENT_API_KEY`` if set.
        init_timeout_s: deadline of Triton's config and readiness calls.
        timeout_s: deadline of each Triton response (of each streamed response).
        max_concurrency: embedding and rerank batches in flight at once, per model.

    Nothing connects before the first request; the app closes its connections at shutdown (lifespan).
    """
    url_list = [urls] if isinstance(urls, str) else list(urls)
    if triton_api_key is None:
        triton_api_key = os.environ.get(ENV_API_KEY, "").strip() or None
    options = Options(
        api_key=triton_api_key, init_timeout_s=init_timeout_s, timeout_s=timeout_s, max_concurrency=max_concurrency
    )
    servers = Servers(url_list, options)
    gateway = Gateway(servers, api_key, Metrics())

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        gateway.metrics.bind(asyncio.get_running_loop())
        try:
            yield
        finally:
            await servers.close()

    routes = [
        Route("/v1/models", gateway.route("models", gateway.list_models), methods=["GET"]),
        Route("/v1/chat/completions", gateway.route("chat", gateway.chat), methods=["POST"]),
        Route("/v1/completions", gateway.route("completions", gateway.completions), methods=["POST"]),
        Route("/v1/embeddings", gateway.route("embeddings", gateway.embeddings), methods=["POST"]),
        Route("/v1/rerank", gateway.route("rerank", gateway.rerank), methods=["POST"]),
        Route("/health", gateway.health, methods=["GET"]),
        Route("/metrics", gateway.prometheus, methods=["GET"]),
    ]
    app = Starlette(routes=routes, lifespan=lifespan, exception_handlers={HTTPException: _not_found})
    app.state.gateway = gateway
    return app
