"""The streaming clients, for decoupled models (one request, any number of responses): over gRPC only.

Design, one place for each rule:

- :class:`_Exchange` is what every stream does, without I/O: the request (built from the public
  protobuf, since ``tritonclient`` refuses the ``triton_`` parameter this needs), each response (a
  server error, the outputs, the end: the response flagged ``triton_final_response`` is delivered
  unless it is empty, then the stream stops), the translation of a failed read (timeout, closed
  client, gRPC status), the retry rule, and the per-response deadline state (``reading``,
  ``deadline``, ``timed_out``).
- :class:`_Stream` waits for it on an asyncio loop (``grpc.aio``): one timer per stream, moved lazily,
  enforces the deadline. :class:`AsyncioDecoupledModelClient` runs streams on the caller's loop.
- :class:`_SyncStream` waits for it in the caller's thread (sync ``grpc``, no event loop, no hop to
  another thread). One watchdog daemon thread per client (:class:`_Watchdog`, started by the first
  stream; ``close()`` and garbage collection stop and join it) enforces the deadlines of all its
  streams: it sleeps until the earliest one and cancels the calls whose read waited too long.
  :class:`DecoupledModelClient` is a sync model client like :class:`~Xclient.client.ModelClient`:
  config and readiness come from the shared sync flows over its ``tritonclient.grpc`` transport.

Streams share the gRPC channel of the client's transport (the ``tritonclient`` client's
``_channel``), so a client has one connection, one set of channel options (TLS, message size,
keepalive) and one close. Each request is its own ``ModelStreamInfer`` call, so cancelling a call
cancels exactly one request.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import threading
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from typing_extensions import Unpack

from ..exceptions import ClientClosedError, XclientError, XclientValueError
from ._asyncio import AsyncClientMixin
from ._base import BaseModelClient, retry_pause
from ._coding import PreparedRequest, finish_response
from ._config import ModelConfig
from ._fleet import AsyncFleetTransport, FleetTransport
from ._grpc_wire import (
    EMPTY_FINAL_PARAMETER,
    FINAL_PARAMETER,
    MODEL_STREAM_INFER,
    build_request,
    channel_is_ready,
    metadata,
    not_connected,
    read_stream_response,
    rpc_failure,
)
from ._loop_thread import _LOOP_THREADS
from ._model_client import SyncClientMixin
from ._options import ModelClientOptions
from ._transport import translate_error

Outputs = dict[str, np.ndarray[Any, Any]]
#: What infer_sample / infer_batch were given: args, named inputs, batch, parameters, headers.
_CallArgs = tuple[tuple[Any, ...], dict[str, Any], bool, "Mapping[str, Any] | None", "Mapping[str, str] | None"]

__all__ = ["EMPTY_FINAL_PARAMETER", "FINAL_PARAMETER", "MODEL_STREAM_INFER"]  # where the tests read them


# -- what every stream does, without I/O ---------------------------------------------------------


class _Exchange:
    """One streaming request's rules, shared by :class:`_Stream` (asyncio) and :class:`_SyncStream`:
    these only wait (for the config, the call, each response, a retry's pause) and hand over what came.

    ``reading``, ``deadline`` and ``timed_out`` are the per-response deadline: a read sets its
    deadline (``inference_timeout_s`` from now) and ``reading``; whoever enforces it (the stream's
    timer, or the client's watchdog) sets ``timed_out`` before cancelling the call.
    """

    __slots__ = (
        "client", "call_args", "request", "finished", "responded", "retries",
        "reading", "deadline", "timed_out", "ended_by_close", "_close", "stubs", "fleet", "replica", "tried",
    )  # fmt: skip

    def __init__(self, client: BaseModelClient, call_args: _CallArgs) -> None:
        self.client = client
        self.call_args = call_args
        self.request: PreparedRequest | None = None
        self.finished = False
        self.responded = False  # a response came: the request is never sent again
        self.retries = 0
        self.reading = False
        self.deadline = 0.0
        self.timed_out = False
        self.ended_by_close = False  # the client's close() ended it: every later next() says so
        self._close: Callable[[], None] | None = None  # the stream's close(), during a step
        self.stubs: Any = None  # the _grpc_wire stubs the call went out on (None: unknown, a test's spy)
        # Several replicas: the replica set, the replica the call went out on, those it failed on.
        self.fleet: Any = None
        self.replica: Any = None
        self.tried: list[tuple[Any, XclientError]] = []

    def message(self, config: ModelConfig) -> tuple[Any, tuple[tuple[str, str], ...] | None]:
        """The request to send (checked and coded now) and its gRPC metadata."""
        client = self.client
        args, kwargs, batch, parameters, headers = self.call_args
        self.request = client._prepare(config, args, kwargs, batch)
        message = build_request(*client._model_args(), self.request.inputs, parameters, stream=True)
        return message, metadata(client._call_headers(headers))

    def received(self, response: Any) -> Outputs | None:
        """What a response delivers (None: nothing, the empty final one, or None at the end of the call);
        after the response flagged final, or the end, :attr:`finished` is set. A server error is raised."""
        if response is None:
            self.finished = True
            return None
        self.responded = True
        if self.stubs is not None:
            self.stubs.answered()  # the channel is connected: later calls wait for it to reconnect
        if response.error_message:
            raise self.client._infer_failed(_server_exception(response.error_message))
        outputs, self.finished = read_stream_response(response.infer_response)
        if outputs or not self.finished:
            assert self.request is not None
            return finish_response(outputs, self.request)
        return None

    def read_failed(self, exc: BaseException | None) -> XclientError | None:
        """The error that ends the stream after a read failed (or was cancelled: ``exc`` None), or None
        when the stream's own close cancelled it. Callers raise it outside their ``except`` blocks: a gRPC
        error as ``__context__`` would keep the call's frames, hence the client's channel, alive."""
        client = self.client
        if client._closed:  # the client's close() cancelled every stream
            return client._closed_error()
        if self.timed_out:
            stubs = self.stubs
            waited = stubs is not None and stubs.wait_for_ready
            if not self.responded and waited and not channel_is_ready(stubs.channel):
                # It waited for a reconnect that never came: the server is down, not slow.
                return self._translate(not_connected("waiting for the first response"))
            return self._translate(TimeoutError("waiting for the next response; the request was cancelled"))
        if self.finished:
            return None
        if exc is None:
            exc = ConnectionError("the stream was cancelled")
        return self._translate(rpc_failure(exc, address=self.stubs.address if self.stubs is not None else None))

    def _translate(self, exc: BaseException) -> XclientError:
        """The client's translation of a failed read, naming the replica it went to (several URLs)."""
        client = self.client
        if self.replica is None:
            return client._infer_failed(exc)
        ctx = dataclasses.replace(client._ctx, url=self.replica.url)
        return translate_error(exc, ctx, "inference", client._inference_timeout_s)

    def opened(self, fleet: Any, replica: Any) -> None:
        """The call went out on ``replica`` of the replica set ``fleet`` (several URLs)."""
        self.fleet, self.replica = fleet, replica

    def _release(self, error: XclientError | None) -> None:
        """The call on the replica ended: the replica set counts it (once)."""
        replica, self.replica = self.replica, None
        if replica is not None:
            self.fleet.stream_ended(replica, error)

    def retry_pause(self, error: XclientError) -> float:
        """The pause before sending the request again (it failed before its first response, without
        reaching the server: ``error.retryable``), up to the client's ``retries``; otherwise ``error`` is raised.
        Over several replicas, such a failure first goes to each other replica at once (no pause); the
        error after every replica failed lists them all."""
        client = self.client
        replica = self.replica
        self._release(error)
        if replica is not None and not self.responded and self.fleet.fails_over(error):
            self.tried.append((replica, error))
            if self.fleet.has_other(r for r, _ in self.tried):
                return 0.0
            error = self.fleet.exhausted(self.tried, "stream")
            self.tried = []  # after the policy's pause, every replica is tried again
        pause = None if self.responded else retry_pause(error, self.retries, client._retries, client._retry_backoff_s)
        if pause is None:
            raise error
        self.retries += 1
        return pause

    def stepping(self, close: Callable[[], None]) -> _Exchange:
        """``with state.stepping(stream.close):`` around each step of a stream: when the stream ends (at
        its end, after its final response, on an error or an interrupt), ``close`` is called."""
        self._close = close
        return self

    def __enter__(self) -> _Exchange:
        return self

    def __exit__(self, exc_type: object, error: BaseException | None, traceback: object) -> None:
        close, self._close = self._close, None
        if self.finished or error is not None:
            self._release(error if isinstance(error, XclientError) else None)
        if error is not None:
            self.finished = True
            self.ended_by_close = isinstance(error, ClientClosedError)
            if isinstance(error, XclientError):
                self.client._forget_config(error)  # the model may have gone away, and its config changed
        if self.finished and close is not None:
            close()  # the call is let go at once (cancelled, unless the server has ended it)


# -- one stream, on an event loop (AsyncioDecoupledModelClient) ------------------------------------


class _Stream:
    """One streaming request and its responses; runs on one event loop (``close_soon`` aside).

    Nothing is sent before the first :meth:`next`. Each response must come within the client's
    ``inference_timeout_s``. The stream ends after the response flagged final (its outputs are
    delivered unless it is empty), on a server error (raised after what came before), or on
    :meth:`close`; whenever it ends early, its gRPC call is cancelled, which cancels the request
    on the server. A request that failed before its first response, without reaching the server
    (connection refused), is sent again as the client's ``retries`` and ``retry_backoff_s`` allow;
    once a response has been delivered, never.
    """

    def __init__(self, client: AsyncioDecoupledModelClient, call_args: _CallArgs) -> None:
        self._client = client
        self._state = _Exchange(client, call_args)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._call: Any = None
        # The per-response deadline: one timer per stream, moved lazily (see _check_deadline), so that
        # a response costs no timer of its own.
        self._timer: asyncio.TimerHandle | None = None

    async def next(self) -> Outputs | None:
        """The outputs of the next response, or None once the stream has ended."""
        self._loop = asyncio.get_running_loop()
        state = self._state
        with state.stepping(self.close):
            while not state.finished:
                if self._call is None:
                    await self._start()  # may find the stream closed meanwhile: the loop checks
                    continue
                try:
                    response = await self._read()
                except XclientError as error:
                    self._call = None
                    await asyncio.sleep(state.retry_pause(error))  # or raise it
                    continue
                if (outputs := state.received(response)) is not None:
                    return outputs
        return None

    def close(self) -> None:
        """End the stream; a request still running is cancelled (its gRPC call). Loop thread only.

        The call is let go: a stream object that outlives its end (kept by the caller, or by the
        traceback of its error) must not keep the client's channel alive after the client is closed."""
        self._state.finished = True
        self._state.stubs = None  # they hold the channel too
        self._state._release(None)
        call, self._call = self._call, None
        if call is not None and not call.done():
            call.cancel()
        timer, self._timer = self._timer, None
        if timer is not None:
            timer.cancel()

    def close_soon(self) -> None:
        """:meth:`close` from any thread (a finalizer): scheduled on the stream's loop."""
        loop = self._loop
        if loop is None:  # never iterated: nothing was sent
            self._state.finished = True
            return
        with contextlib.suppress(RuntimeError):  # the loop is closed, and with it the client's channel
            loop.call_soon_threadsafe(self.close)

    async def _start(self) -> None:
        message, metadata = self._state.message(await self._client._get_config())
        if not self._state.finished:
            transport = self._client._transport()
            if isinstance(transport, AsyncFleetTransport):
                replica = await transport.open_stream(r for r, _ in self._state.tried)
                self._state.opened(transport.fleet, replica)
                stream_infer = replica.transport.stubs.stream
            else:
                stream_infer = self._client._stream_infer()
            self._call = stream_infer(message, metadata=metadata)
            self._state.stubs = getattr(stream_infer, "__self__", None)

    async def _read(self) -> Any:
        """The next gRPC response, or None at the end of the call or when the stream was closed."""
        import grpc

        state = self._state
        loop = asyncio.get_running_loop()
        state.deadline = loop.time() + self._client._inference_timeout_s
        if self._timer is None:
            self._timer = loop.call_at(state.deadline, self._check_deadline)
        state.reading = True
        try:
            response = await self._call.read()
        except asyncio.CancelledError:
            if _task_is_cancelled() or not (self._client._closed or state.timed_out or state.finished):
                raise
            error = state.read_failed(None)
        except Exception as e:  # translated into the Xclient error tree
            error = state.read_failed(e)
        else:
            return None if response is grpc.aio.EOF else response
        finally:
            state.reading = False
        return _raise_if(error)  # outside the handlers: no __context__ (see _Exchange.read_failed)

    def _check_deadline(self) -> None:
        """The stream's timer: cancel the call when a read has waited ``inference_timeout_s``; otherwise
        come back at the current read's deadline (or, between reads, one timeout later)."""
        self._timer = None
        state = self._state
        if state.finished or self._call is None:
            return
        loop = asyncio.get_running_loop()
        now = loop.time()
        if state.reading and now >= state.deadline:
            state.timed_out = True
            self._call.cancel()  # the pending read raises CancelledError, turned into the timeout error
            return
        when = state.deadline if state.reading else now + self._client._inference_timeout_s
        self._timer = loop.call_at(when, self._check_deadline)


# -- one stream, in the caller's thread (DecoupledModelClient) -------------------------------------


class _SyncStream:
    """One streaming request and its responses, read in the caller's thread over sync gRPC.

    The same rules as :class:`_Stream` (they are :class:`_Exchange`'s); the client's :class:`_Watchdog`
    enforces the per-response deadline. :meth:`close` may be called from any thread.
    """

    __slots__ = ("_client", "state", "call")

    def __init__(self, client: DecoupledModelClient, call_args: _CallArgs) -> None:
        self._client = client
        self.state = _Exchange(client, call_args)
        self.call: Any = None

    def next(self) -> Outputs | None:
        """The outputs of the next response, or None once the stream has ended."""
        state = self.state
        if state.ended_by_close:
            self._client._check_open()  # every later next() on a closed client says so
        with state.stepping(self.close):  # KeyboardInterrupt while waiting, too, cancels the request
            while not state.finished:
                if self.call is None:
                    self._start()  # may find the stream closed meanwhile: the loop checks
                    continue
                try:
                    response = self._read()
                except XclientError as error:
                    self._drop_call()
                    time.sleep(state.retry_pause(error))  # or raise it
                    continue
                if (outputs := state.received(response)) is not None:
                    return outputs
        return None

    def close(self) -> None:
        """End the stream; a request still running is cancelled (its gRPC call). Any thread."""
        self.state.finished = True
        self._drop_call()
        self.state._release(None)

    def _drop_call(self) -> None:
        self.state.stubs = None  # they hold the channel too
        call, self.call = self.call, None
        if call is not None:
            self._client._watchdog.unwatch(self)
            call.cancel()  # nothing happens when the call has ended

    def _start(self) -> None:
        client = self._client
        message, metadata = self.state.message(client._get_config())
        if self.state.finished:
            return
        transport = client._transport()
        if isinstance(transport, FleetTransport):
            replica = transport.open_stream(r for r, _ in self.state.tried)
            self.state.opened(transport.fleet, replica)
            grpc_transport: Any = replica.transport  # a GrpcTransport: streams are gRPC only
            stream_infer = grpc_transport.stubs.stream
        else:
            stream_infer = client._stream_infer()
        self.call = stream_infer(message, metadata=metadata)
        self.state.stubs = getattr(stream_infer, "__self__", None)
        if not client._watchdog.watch(self):  # the client was closed meanwhile
            self._drop_call()
            client._check_open()
        if self.state.finished:  # closed from another thread meanwhile
            self._drop_call()

    def _read(self) -> Any:
        """The next gRPC response, or None at the end of the call or when the stream was closed."""
        state = self.state
        call = self.call
        if call is None:  # closed from another thread, or by the client's close()
            error = state.read_failed(None)
        else:
            state.deadline = time.monotonic() + self._client._inference_timeout_s
            state.reading = True
            try:
                return next(call)
            except StopIteration:
                return None
            except Exception as e:  # translated into the Xclient error tree
                error = state.read_failed(e)
            finally:
                state.reading = False
        return _raise_if(error)  # outside the handlers: no __context__ (see _Exchange.read_failed)

    def time_out(self) -> None:
        """The watchdog's verdict: the read waited too long; its call is cancelled."""
        self.state.timed_out = True
        call = self.call
        if call is not None:
            call.cancel()


class _Watchdog:
    """The per-response deadlines of one sync client's streams: one daemon thread, started by the first
    stream, that sleeps until the earliest deadline of a waiting read and cancels the calls whose read
    has waited ``timeout_s`` (the stream then raises the timeout error). A read costs no wake-up of its
    own: it only sets its deadline, which never comes before the watchdog's next check (every deadline
    is ``timeout_s`` after its read began, so the watchdog comes back at least every ``timeout_s``).

    It holds the client's open streams, so :meth:`stop` (``close()``, or garbage collection of an unclosed
    client) cancels them; it never holds the client itself.
    """

    def __init__(self, name: str, timeout_s: float) -> None:
        self._name = name
        self._timeout_s = timeout_s
        self._cond = threading.Condition()  # re-entrant: a finalizer may close a stream on this thread
        self._streams: set[_SyncStream] = set()
        self._thread: threading.Thread | None = None
        self._idle = False
        self._stopped = False

    def watch(self, stream: _SyncStream) -> bool:
        """Watch ``stream``'s reads from now on (False: stopped, the client is closed)."""
        with self._cond:
            if self._stopped:
                return False
            self._streams.add(stream)
            if self._thread is None:
                self._thread = threading.Thread(target=self._serve, name=self._name, daemon=True)
                self._thread.start()
            elif self._idle:
                self._cond.notify()
            return True

    def unwatch(self, stream: _SyncStream) -> None:
        with self._cond:
            self._streams.discard(stream)

    def stop(self) -> None:
        """Cancel every open stream, stop the thread and join it (never from the thread itself, nor from
        a loop thread, where garbage collection may run this: neither ever blocks on another thread)."""
        with self._cond:
            self._stopped = True
            streams, self._streams = tuple(self._streams), set()
            self._cond.notify()
            thread = self._thread
        for stream in streams:
            call = stream.call
            if call is not None:
                call.cancel()
        current = threading.current_thread()
        if thread is not None and current is not thread and current not in _LOOP_THREADS:
            thread.join()

    def _serve(self) -> None:
        cond = self._cond
        while True:
            with cond:
                if self._stopped:
                    return
                if not self._streams:
                    self._idle = True
                    cond.wait()
                    self._idle = False
                    continue
                expired, wait_s = self._expired()
                if not expired:
                    cond.wait(wait_s)
            # Cancelled outside the lock; and no stream stays referenced by this frame while it waits
            # (it would keep its client alive).
            while expired:
                expired.pop().time_out()

    def _expired(self) -> tuple[list[_SyncStream], float]:
        """The streams whose read has waited too long (no longer watched), and how long to wait otherwise."""
        now = time.monotonic()
        wake = now + self._timeout_s  # between reads: a read starting now ends its wait no sooner
        expired = []
        for stream in tuple(self._streams):
            state = stream.state
            if state.reading:
                if now >= state.deadline:
                    expired.append(stream)
                    self._streams.discard(stream)
                else:
                    wake = min(wake, state.deadline)
        return expired, wake - now


def _server_exception(message: str) -> Exception:
    """A server error response as ``tritonclient`` would raise it, so ``translate_error`` maps it."""
    from tritonclient.utils import InferenceServerException

    error: Exception = InferenceServerException(msg=message)  # tritonclient is untyped
    return error


def _raise_if(error: XclientError | None) -> None:
    """Raise ``error``, if any (a read that failed); None: the read ended the stream quietly."""
    if error is not None:
        raise error


def _task_is_cancelled() -> bool:
    """True when the running task itself is being cancelled (Python 3.11+ can tell; 3.10 says False)."""
    task = asyncio.current_task()
    cancelling = getattr(task, "cancelling", None)
    return bool(cancelling and cancelling())


# -- what the caller iterates ------------------------------------------------------------------


class AsyncResponseStream:
    """The responses of one request, as an async iterator of output dicts (one per response).

    Nothing is sent before the first ``__anext__``. Leave early with ``close()`` or ``async with``;
    ``break`` and garbage collection also cancel the request on the server.
    """

    def __init__(self, stream: _Stream) -> None:
        self._stream = stream

    def __aiter__(self) -> AsyncResponseStream:
        return self

    async def __anext__(self) -> Outputs:
        outputs = await self._stream.next()
        if outputs is None:
            raise StopAsyncIteration
        return outputs

    async def close(self) -> None:
        """Stop the stream, cancelling its request on the server if it still runs. Closing twice is fine."""
        self._stream.close()

    aclose = close  # for contextlib.aclosing

    async def __aenter__(self) -> AsyncResponseStream:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self._stream.close_soon()


class ResponseStream:
    """The responses of one request, as an iterator of output dicts (one per response).

    Nothing is sent before the first ``next()``. Leave early with ``close()`` or ``with``; ``break``
    and garbage collection also cancel the request on the server.

    Each ``next()`` reads the next response in the calling thread, straight from the gRPC call; the
    per-response deadline bounds the server's silence while a read waits, not the pauses of a slow reader.
    """

    def __init__(self, stream: _SyncStream) -> None:
        self._stream = stream

    def __iter__(self) -> ResponseStream:
        return self

    def __next__(self) -> Outputs:
        outputs = self._stream.next()
        if outputs is None:
            raise StopIteration
        return outputs

    def close(self) -> None:
        """Stop the stream, cancelling its request on the server if it still runs. Closing twice is fine."""
        self._stream.close()

    def __enter__(self) -> ResponseStream:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()


# -- the clients -------------------------------------------------------------------------------


class _StreamingClient(BaseModelClient):
    """What both streaming clients share: gRPC only, and ``ModelStreamInfer`` over the transport's channel."""

    _for_decoupled = True

    def _refuse_http(self, url: str | Sequence[str]) -> None:
        if self._url.protocol != "grpc":
            raise XclientValueError(
                f"{type(self).__name__} streams over gRPC only; {url!r} is an HTTP URL (without a scheme, "
                f"only port 8001 means gRPC): use e.g. 'grpc://{self._url.host}:8001'"
            )

    def _transport(self) -> Any:
        raise NotImplementedError

    def _stream_infer(self) -> Any:
        """Triton's ``ModelStreamInfer``, called as a server-streaming RPC over the transport's channel
        (its :class:`~._grpc_wire.Stubs`), waiting for a reconnect once the channel has been connected.

        One request per call: it goes out with the headers and the half-close in one batch, after which
        Triton ends the call with the request's last response. As a bidirectional call, the separate
        write can race a server that refuses the call at once (a missing API key), and grpc then reports
        "Internal error from Core" instead of the server's status (grpc/grpc#36066).
        """
        return self._transport().stubs.stream


class AsyncioDecoupledModelClient(AsyncClientMixin, _StreamingClient):
    """An asyncio client for one decoupled (streaming) model, such as an LLM on Triton's vLLM backend.

    Example::

        client = AsyncioDecoupledModelClient("grpc://localhost:8001", "Qwen2-0.5B-Instruct")
        async for answer in client.infer_sample(np.array(["I'm Pickle Rick".encode()])):
            print(answer["text_output"])
        await client.close()

    Same options as :class:`~Xclient.client.ModelClient`. **gRPC only** (Triton streams decoupled
    responses over gRPC's ``ModelStreamInfer``): an ``http://`` URL raises
    :class:`~Xclient.exceptions.XclientValueError` here. A coupled model is refused with
    :class:`~Xclient.exceptions.IncompatibleModelError` on first use. ``inference_timeout_s`` bounds
    the wait for *each* response, so a stalled stream raises
    :class:`~Xclient.exceptions.XclientTimeoutError` (and is cancelled on the server). Many tasks may
    stream through one client at once.
    """

    def __init__(
        self,
        url: str | Sequence[str],
        model_name: str,
        model_version: str | int | None = None,
        **options: Unpack[ModelClientOptions],
    ) -> None:
        super().__init__(url, model_name, model_version, **options)
        self._refuse_http(url)
        self._async_setup()

    def infer_sample(
        self,
        *inputs: Any,
        parameters: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        **named_inputs: Any,
    ) -> AsyncResponseStream:
        """Stream one sample's responses: ``async for outputs in client.infer_sample(...)``.

        Inputs as for :meth:`Xclient.client.ModelClient.infer_sample` (the batch axis is added when
        the model batches and stripped from each response). ``parameters`` and ``headers`` are sent
        with the request. Nothing is sent before the iteration starts.
        """
        self._check_open()
        return AsyncResponseStream(_Stream(self, (inputs, named_inputs, False, parameters, headers)))

    def infer_batch(
        self,
        *inputs: Any,
        parameters: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        **named_inputs: Any,
    ) -> AsyncResponseStream:
        """Stream a batch's responses; each input's first axis is the batch (models with ``max_batch_size > 0``)."""
        self._check_open()
        return AsyncResponseStream(_Stream(self, (inputs, named_inputs, True, parameters, headers)))

    async def close(self) -> None:
        """Close the connection, cancelling open streams; later calls raise ClientClosedError. Twice is fine."""
        await super().close()


class DecoupledModelClient(SyncClientMixin, _StreamingClient):
    """A blocking client for one decoupled (streaming) model; ``for outputs in client.infer_sample(...)``.

    Example::

        with DecoupledModelClient("grpc://localhost:8001", "Qwen2-0.5B-Instruct") as client:
            for answer in client.infer_sample("I'm Pickle Rick"):
                print(answer["text_output"])

    Same options, rules and errors as :class:`AsyncioDecoupledModelClient`, over sync gRPC: each
    response is read in the iterating thread, with no event loop. **gRPC only**: an ``http://`` URL
    raises :class:`~Xclient.exceptions.XclientValueError` here. ``inference_timeout_s`` bounds the wait
    for each response, enforced by one watchdog thread per client (started by the first stream;
    ``close()`` cancels open streams, then stops and joins it; so does garbage collection of an unclosed
    client). Many threads may stream through one client at once; a failed stream leaves the client usable.
    """

    def __init__(
        self,
        url: str | Sequence[str],
        model_name: str,
        model_version: str | int | None = None,
        **options: Unpack[ModelClientOptions],
    ) -> None:
        super().__init__(url, model_name, model_version, **options)
        self._refuse_http(url)
        self._sync_setup()
        self._watchdog = _Watchdog(f"{type(self).__name__}-watchdog", self._inference_timeout_s)
        # Also run when the client is garbage collected unclosed, or at exit: no thread outlives it.
        self._stop_watchdog = weakref.finalize(self, self._watchdog.stop)

    def infer_sample(
        self,
        *inputs: Any,
        parameters: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        **named_inputs: Any,
    ) -> ResponseStream:
        """Stream one sample's responses: ``for outputs in client.infer_sample(...)``.

        See :meth:`AsyncioDecoupledModelClient.infer_sample`. Nothing is sent before the iteration starts.
        """
        self._check_open()
        return ResponseStream(_SyncStream(self, (inputs, named_inputs, False, parameters, headers)))

    def infer_batch(
        self,
        *inputs: Any,
        parameters: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        **named_inputs: Any,
    ) -> ResponseStream:
        """Stream a batch's responses; each input's first axis is the batch (models with ``max_batch_size > 0``)."""
        self._check_open()
        return ResponseStream(_SyncStream(self, (inputs, named_inputs, True, parameters, headers)))

    def close(self) -> None:
        """Close the connection and cancel open streams (a thread waiting in ``next()`` gets
        ClientClosedError), then stop and join the watchdog thread; later calls raise ClientClosedError.
        Closing twice is fine."""
        with self._lock:
            self._closed = True
        self._stop_watchdog.detach()
        self._watchdog.stop()  # a second close() running at once waits for the first one too
        super().close()
