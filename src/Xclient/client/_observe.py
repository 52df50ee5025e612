"""What every request did (:class:`RequestInfo`), and the one place that hands it on.

Every model client records each request it sends: where it went, its id, and client-side timings
(``time.perf_counter_ns``; one wall-clock start). A request costs a few clock reads and one small
object; nothing else runs unless someone asks:

- ``client.last_request_info``: the caller's last finished request on that client, per thread (sync
  clients) or per asyncio task (a :mod:`contextvars` variable: a sync thread has its own context too);
- ``on_request=callable``, a client option: called once per finished request, success or failure;
- the observers enabled process-wide: :func:`Xclient.otel.instrument` (a span per request, and
  ``traceparent`` sent with it) and :func:`Xclient.metrics.enable` (a Prometheus collector). They
  live in :data:`_OBSERVERS`, which is empty (one falsy check per request) until one is enabled.

The LLM layer adds what only it knows (token usage, finish reason) through :func:`generation_started`
and :func:`generation_finished`, fed to the same observers.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import itertools
import logging
import os
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from ..exceptions import XclientValueError

_perf_ns = time.perf_counter_ns
_LOG = logging.getLogger("Xclient")


@dataclasses.dataclass(eq=False, slots=True)
class RequestInfo:
    """The facts of one request, as the client saw them. Read-only once delivered.

    Times are ``time.perf_counter_ns()`` readings (0: not reached); :attr:`started_at` is the
    wall clock (``time.time()``) at the start. For a stream, :attr:`responses` counts the server's
    responses (the empty final one included) and :attr:`gaps_s` holds the seconds between
    consecutive ones (``responses - 1`` of them).
    """

    url: str
    """The server (the replica) that served it, normalized (``grpc://127.0.0.1:8001``)."""
    model: str
    version: str | None
    """The version asked for (None: the server's choice)."""
    protocol: str
    """``"http"`` or ``"grpc"``."""
    request_id: str
    """Triton's request ``id``, sent with the request (Xclient sets a unique one)."""
    stream: bool
    started_at: float
    start_ns: int
    built_ns: int = 0
    """The request was coded (inputs checked, tensors built)."""
    sent_ns: int = 0
    """It was handed to the connection (the last attempt's, after retries)."""
    first_response_ns: int = 0
    last_response_ns: int = 0
    end_ns: int = 0
    responses: int = 0
    gaps_s: list[float] = dataclasses.field(default_factory=list)
    attempts: int = 0
    """How many times it was sent (retries included)."""
    error: str | None = None
    """The error's type name when it failed (``"XclientTimeoutError"``), else None."""
    cancelled: bool = False
    """A stream the caller left before its end (closed, or stopped by a stop sequence)."""
    _trace: Any = dataclasses.field(default=None, repr=False)  # an observer's state (the OTel span)

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def latency_s(self) -> float | None:
        """From the start to the end (the last response read, or the failure)."""
        return (self.end_ns - self.start_ns) / 1e9 if self.end_ns else None

    @property
    def time_to_first_response_s(self) -> float | None:
        """From the start to the first response (for an LLM stream, the time to the first token)."""
        return (self.first_response_ns - self.start_ns) / 1e9 if self.first_response_ns else None

    def headers(self) -> Mapping[str, str] | None:
        """What the observers send with the request (a W3C ``traceparent``), if any."""
        trace = self._trace
        return trace.headers if trace is not None else None

    def responded(self) -> None:
        """A response came now."""
        now = _perf_ns()
        last = self.last_response_ns
        if last:
            self.gaps_s.append((now - last) / 1e9)
        else:
            self.first_response_ns = now
        self.last_response_ns = now
        self.responses += 1

    def as_dict(self) -> dict[str, Any]:
        """Plain values (for LangChain's ``response_metadata``): the fields, times as seconds from the start."""

        def since(ns: int) -> float | None:
            return (ns - self.start_ns) / 1e9 if ns else None

        return {
            "url": self.url,
            "model": self.model,
            "version": self.version,
            "protocol": self.protocol,
            "request_id": self.request_id,
            "stream": self.stream,
            "started_at": self.started_at,
            "built_s": since(self.built_ns),
            "sent_s": since(self.sent_ns),
            "first_response_s": since(self.first_response_ns),
            "last_response_s": since(self.last_response_ns),
            "latency_s": self.latency_s,
            "responses": self.responses,
            "gaps_s": list(self.gaps_s),
            "attempts": self.attempts,
            "error": self.error,
            "cancelled": self.cancelled,
        }


OnRequest = Callable[[RequestInfo], None]


class Observer(Protocol):
    """A process-wide consumer of requests (the OTel tracer, the Prometheus collector)."""

    def started(self, info: RequestInfo) -> None: ...

    def finished(self, info: RequestInfo) -> None: ...

    def generated(self, info: RequestInfo | None, generation: Generation) -> None: ...


#: The enabled observers; empty (falsy) by default, so a request checks it once and does nothing more.
_OBSERVERS: list[Observer] = []


def add_observer(observer: Observer) -> None:
    """Enable ``observer`` for every client of the process (once: a second add is ignored)."""
    if observer not in _OBSERVERS:
        _OBSERVERS.append(observer)


def remove_observer(observer: Observer) -> None:
    if observer in _OBSERVERS:
        _OBSERVERS.remove(observer)


#: Each context's last request per recorder (keyed by the recorder's serial): copied on write, so a
#: task or thread never sees another's.
_LAST: contextvars.ContextVar[Mapping[int, RequestInfo] | None] = contextvars.ContextVar(
    "xclient_last_request", default=None
)
_SERIALS = itertools.count(1)
_IDS = itertools.count(1)
_ID_PREFIX = [f"xc-{os.urandom(4).hex()}-"]


def _renew_prefix() -> None:
    _ID_PREFIX[0] = f"xc-{os.urandom(4).hex()}-"  # a forked child must not repeat its parent's ids


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_renew_prefix)


def check_hook(on_request: object) -> OnRequest | None:
    if on_request is not None and not callable(on_request):
        raise XclientValueError(f"on_request: expected a callable taking a RequestInfo, got {on_request!r}")
    return on_request


class Recorder:
    """The requests of one client: starts and finishes each :class:`RequestInfo` and hands it on."""

    __slots__ = ("url", "model", "version", "protocol", "hook", "key", "latest")

    def __init__(self, url: str, protocol: str, model: str, version: str | None, hook: OnRequest | None) -> None:
        self.url = url
        self.protocol = protocol
        self.model = model
        self.version = version
        self.hook = hook
        self.key = next(_SERIALS)
        self.latest: RequestInfo | None = None  # the last finished request, from any thread or task

    def start(self, stream: bool) -> RequestInfo:
        info = RequestInfo(
            self.url,
            self.model,
            self.version,
            self.protocol,
            f"{_ID_PREFIX[0]}{next(_IDS)}",
            stream,
            time.time(),
            _perf_ns(),
        )
        if _OBSERVERS:
            for observer in tuple(_OBSERVERS):
                _safely(observer.started, info)
        return info

    def finish(self, info: RequestInfo, error: BaseException | None = None) -> None:
        """Hand ``info`` on, once (a second finish of the same request is ignored)."""
        if info.end_ns:
            return
        info.end_ns = _perf_ns()
        if error is not None:
            info.error = type(error).__name__
        self.latest = info
        last = _LAST.get()
        _LAST.set({**last, self.key: info} if last else {self.key: info})
        if self.hook is not None:
            _safely(self.hook, info)
        if _OBSERVERS:
            for observer in tuple(_OBSERVERS):
                _safely(observer.finished, info)

    def last(self) -> RequestInfo | None:
        """The last request this thread or task finished on this client."""
        last = _LAST.get()
        return last.get(self.key) if last is not None else None


def _safely(call: Callable[[RequestInfo], None], info: RequestInfo) -> None:
    """An observer's failure is logged, never raised into the request it watches."""
    try:
        call(info)
    except Exception:  # a hook must not break inference
        _LOG.exception("Xclient: the request observer %r failed", call)


# -- the LLM layer --------------------------------------------------------------------------------


@dataclasses.dataclass(eq=False)
class Generation:
    """One LLM call above the base clients (ChatMetaLM, MetaLM): what only the LLM layer knows."""

    operation: str
    """GenAI's ``gen_ai.operation.name``: ``"chat"`` or ``"text_completion"``."""
    model: str
    prompt: str | None = None
    usage: Mapping[str, int] | None = None
    finish_reason: str | None = None
    error: str | None = None
    _trace: Any = dataclasses.field(default=None, repr=False)


_GENERATION: contextvars.ContextVar[Generation | None] = contextvars.ContextVar("xclient_generation", default=None)


def current_generation() -> Generation | None:
    """The LLM call the request being started belongs to (the OTel tracer makes its span the parent)."""
    return _GENERATION.get()


def generation_started(operation: str, model: str, prompt: str) -> tuple[Generation, contextvars.Token[Any]] | None:
    """Begin an LLM call when an observer is enabled (None otherwise: nothing costs)."""
    if not _OBSERVERS:
        return None
    generation = Generation(operation, model, prompt)
    for observer in tuple(_OBSERVERS):
        starting = getattr(observer, "generation_started", None)
        if starting is not None:
            _safely(starting, generation)  # type: ignore[arg-type]
    return generation, _GENERATION.set(generation)


def generation_finished(
    started: tuple[Generation, contextvars.Token[Any]] | None,
    info: RequestInfo | None,
    usage: Mapping[str, int] | None,
    finish_reason: str | None,
    error: BaseException | None = None,
) -> None:
    """End an LLM call begun by :func:`generation_started` (``info``: its last request)."""
    if started is None:
        return
    generation, token = started
    with contextlib.suppress(ValueError):  # ended in another context (a generator closed elsewhere)
        _GENERATION.reset(token)
    generation.usage, generation.finish_reason = usage, finish_reason
    generation.error = type(error).__name__ if error is not None else None
    for observer in tuple(_OBSERVERS):
        try:
            observer.generated(info, generation)
        except Exception:  # an observer must not break the call
            _LOG.exception("Xclient: the request observer %r failed", observer)
