"""The streaming clients, for decoupled models (one request, any number of responses): over gRPC only.

Design, one place for each rule:

- :class:`_Stream` is one request and its responses, on an asyncio loop. Every rule of a stream
  lives there once: the request (built from the public protobuf, since ``tritonclient`` refuses the
  ``triton_`` parameter this needs), the per-response timeout, the end of the stream (the response
  flagged ``triton_final_response`` is delivered, then the stream stops), errors, and cancellation.
- :class:`AsyncioDecoupledModelClient` runs streams on the caller's loop; config and readiness come
  from the shared flows (:class:`~Xclient.client._asyncio.AsyncClientMixin`), once per client.
- :class:`DecoupledModelClient` is a thin sync bridge: it owns an :class:`AsyncioDecoupledModelClient`
  and a private event-loop thread (started on first use, stopped and joined by ``close()``) and only
  waits for what the asyncio code does there.

Streams share the gRPC channel of the client's transport (the ``tritonclient`` aio client's), so a
client has one connection, one set of channel options (TLS, message size, keepalive) and one close.
Each request is its own ``ModelStreamInfer`` call, so cancelling a call cancels exactly one request.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import queue
import threading
import weakref
from collections.abc import Callable, Coroutine, Mapping
from typing import Any, TypeVar

import numpy as np

from ..exceptions import ClientClosedError, XclientError, XclientValueError
from ._asyncio import AsyncClientMixin
from ._base import ClientWrapper, retry_pause
from ._coding import PreparedRequest, finish_response
from ._config import ModelConfig
from ._loop_thread import _LoopThread
from ._transport import grpc_metadata, grpc_outputs, triton_dtype

T = TypeVar("T")
Outputs = dict[str, np.ndarray]
#: What infer_sample / infer_batch were given: args, named inputs, batch, parameters, headers.
_CallArgs = tuple[tuple[Any, ...], dict[str, Any], bool, "Mapping[str, Any] | None", "Mapping[str, str] | None"]

#: Asks Triton to flag the end of every stream, even when the model ends it with no response (PyTriton).
EMPTY_FINAL_PARAMETER = "triton_enable_empty_final_response"
FINAL_PARAMETER = "triton_final_response"
MODEL_STREAM_INFER = "/inference.GRPCInferenceService/ModelStreamInfer"
#: Request parameters Triton keeps for itself; recent tritonclient versions refuse them too (not all
#: versions Xclient supports export the list, hence this copy).
RESERVED_PARAMETERS = frozenset(
    ("sequence_id", "sequence_start", "sequence_end", "priority", "timeout", "headers", "binary_data_output")
)
RESERVED_PREFIX = "triton_"


# -- one stream, on the event loop ---------------------------------------------------------------


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

    def __init__(
        self, client: AsyncioDecoupledModelClient, call_args: _CallArgs, loop: asyncio.AbstractEventLoop | None = None
    ) -> None:
        self._client = client
        self._call_args = call_args
        self._loop = loop
        self._call: Any = None
        self._request: PreparedRequest | None = None
        self._finished = False
        self._responded = False  # a response came: the request is never sent again
        self._retries = 0
        # The per-response deadline: one timer per stream, moved lazily (see _check_deadline), so that
        # a response costs no timer of its own.
        self._reading = False
        self._deadline = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._timed_out = False
        self.pump: asyncio.Task[None] | None = None  # the sync bridge's reader (ResponseStream), kept alive here

    async def next(self) -> Outputs | None:
        """The outputs of the next response, or None once the stream has ended."""
        self._loop = asyncio.get_running_loop()
        try:
            while not self._finished:
                if self._call is None:
                    await self._start()  # may find the stream closed meanwhile: the loop checks
                    continue
                try:
                    response = await self._read()
                except XclientError as error:
                    if await self._retried(error):
                        continue
                    raise
                if response is None:
                    break
                self._responded = True
                if response.error_message:
                    raise self._client._infer_failed(_server_exception(response.error_message))
                outputs = _response_outputs(response.infer_response)
                final = _is_final(response.infer_response)
                if final:
                    self.close()
                if outputs or not final:
                    assert self._request is not None
                    return finish_response(outputs, self._request)
        except XclientError as error:
            self._client._forget_config(error)  # the model went away: its config may change
            self.close()
            raise
        except BaseException:
            self.close()
            raise
        self.close()  # ended: nothing to cancel, but the call is let go
        return None

    async def _retried(self, error: XclientError) -> bool:
        """Send the request again after the client's backoff when it failed before its first response
        and never reached the server (``error.retryable``), up to the client's ``retries``."""
        client = self._client
        pause = None if self._responded else retry_pause(error, self._retries, client._retries, client._retry_backoff_s)
        if pause is None:
            return False
        self._retries += 1
        self._call = None
        await asyncio.sleep(pause)
        return True

    def close(self) -> None:
        """End the stream; a request still running is cancelled (its gRPC call). Loop thread only.

        The call is let go: a stream object that outlives its end (kept by the caller, or by the
        traceback of its error) must not keep the client's channel alive after the client is closed."""
        self._finished = True
        call, self._call = self._call, None
        if call is not None and not call.done():
            call.cancel()
        timer, self._timer = self._timer, None
        if timer is not None:
            timer.cancel()

    def close_soon(self) -> None:
        """:meth:`close` from any thread (a finalizer, the sync bridge): scheduled on the stream's loop."""
        loop = self._loop
        if loop is None:  # never iterated: nothing was sent
            self._finished = True
            return
        with contextlib.suppress(RuntimeError):  # the loop is closed, and with it the client's channel
            loop.call_soon_threadsafe(self.close)

    async def _start(self) -> None:
        client = self._client
        args, kwargs, batch, parameters, headers = self._call_args
        config = await client._get_config()
        self._request = client._prepare(config, args, kwargs, batch)
        message = build_infer_request(*client._model_args(), self._request.inputs, parameters)
        if self._finished:
            return
        metadata = grpc_metadata(client._call_headers(headers))
        self._call = client._stream_infer()(message, metadata=tuple(metadata.items()) if metadata else None)

    async def _read(self) -> Any:
        """The next gRPC response, or None at the end of the call or when the stream was closed."""
        import grpc

        loop = asyncio.get_running_loop()
        self._deadline = loop.time() + self._client._inference_timeout_s
        if self._timer is None:
            self._timer = loop.call_at(self._deadline, self._check_deadline)
        self._reading = True
        try:
            response = await self._call.read()
        except asyncio.CancelledError:
            if _task_is_cancelled():
                raise
            self._client._check_open()  # the client's close() cancelled every stream
            if not self._timed_out:
                if self._finished:  # this stream's close() cancelled it
                    return None
                raise
            error = self._client._infer_failed(TimeoutError("waiting for the next response; the request was cancelled"))
        except Exception as e:  # noqa: BLE001 - translated into the Xclient error tree
            self._client._check_open()
            if isinstance(e, grpc.aio.AioRpcError):
                e = _server_exception(e.details() or "", e)
            error = self._client._infer_failed(e)
        else:
            return None if response is grpc.aio.EOF else response
        finally:
            self._reading = False
        # Raised outside the handlers, so that it has no __context__: grpc's exception would keep the call's
        # frames, hence the call and the client's channel, alive as long as the caller keeps this error.
        raise error

    def _check_deadline(self) -> None:
        """The stream's timer: cancel the call when a read has waited ``inference_timeout_s``; otherwise
        come back at the current read's deadline (or, between reads, one timeout later)."""
        self._timer = None
        if self._finished or self._call is None:
            return
        loop = asyncio.get_running_loop()
        now = loop.time()
        if self._reading and now >= self._deadline:
            self._timed_out = True
            self._call.cancel()  # the pending read raises CancelledError, turned into the timeout error
            return
        when = self._deadline if self._reading else now + self._client._inference_timeout_s
        self._timer = loop.call_at(when, self._check_deadline)


def build_infer_request(
    model_name: str, model_version: str, inputs: Mapping[str, np.ndarray], parameters: Mapping[str, Any] | None
) -> Any:
    """A ``ModelInferRequest`` protobuf for ``ModelStreamInfer``, asking for an empty final response.

    Parameters follow ``tritonclient``'s rules (str, bool, int, float; Triton's reserved names refused),
    so every client accepts the same ones.
    """
    from tritonclient.grpc import service_pb2
    from tritonclient.utils import serialize_byte_tensor

    request = service_pb2.ModelInferRequest(model_name=model_name, model_version=model_version)
    for key, value in (parameters or {}).items():
        _set_parameter(request.parameters, key, value)
    request.parameters[EMPTY_FINAL_PARAMETER].bool_param = True
    for name, array in inputs.items():
        datatype = triton_dtype(array.dtype)
        request.inputs.add(name=name, datatype=datatype, shape=array.shape)
        if datatype == "BYTES":
            raw = serialize_byte_tensor(array).item() if array.size else b""
        else:
            raw = np.ascontiguousarray(array).tobytes()
        request.raw_input_contents.append(raw)
    return request


def _set_parameter(parameters: Any, key: Any, value: Any) -> None:
    if not isinstance(key, str) or key in RESERVED_PARAMETERS:
        raise XclientValueError(f"parameters: {key!r} cannot be set (a reserved or invalid name)")
    if key.startswith(RESERVED_PREFIX):
        raise XclientValueError(f"parameters: {key!r} cannot be set (the {RESERVED_PREFIX!r} prefix is Triton's)")
    field = {str: "string_param", bool: "bool_param", int: "int64_param", float: "double_param"}.get(type(value))
    if field is None:
        raise XclientValueError(
            f"parameters: {key!r} must be a str, bool, int or float, got {type(value).__name__} {value!r}"
        )
    try:
        setattr(parameters[key], field, value)
    except (ValueError, TypeError) as e:  # an int beyond int64
        raise XclientValueError(f"parameters: {key!r}: {e}") from None


def _response_outputs(infer_response: Any) -> Outputs:
    from tritonclient.grpc import InferResult

    return grpc_outputs(InferResult(infer_response))


def _is_final(infer_response: Any) -> bool:
    flag = infer_response.parameters.get(FINAL_PARAMETER)
    return flag is not None and flag.bool_param


def _server_exception(message: str, rpc_error: Any = None) -> Exception:
    """What ``tritonclient`` would raise, so :func:`~Xclient.client._transport.translate_error` maps it."""
    from tritonclient.utils import InferenceServerException

    if rpc_error is None:
        return InferenceServerException(msg=message)
    return InferenceServerException(
        msg=message, status=str(rpc_error.code()), debug_details=rpc_error.debug_error_string()
    )


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

    From the first ``next()`` on, a task on the client's loop thread reads the responses as they come
    and queues them for this iterator (one hand-over per response, not a round trip to the loop); the
    per-response deadline bounds the server's silence, not the pauses of a slow reader.
    """

    def __init__(self, stream: _Stream, loop_thread: _LoopThread) -> None:
        self._stream = stream
        self._loop_thread = loop_thread
        self._queue: queue.SimpleQueue[tuple[bool, Any]] | None = None  # (ended, outputs or error or None)

    def __iter__(self) -> ResponseStream:
        return self

    def __next__(self) -> Outputs:
        if self._queue is None:
            self._queue = queue.SimpleQueue()
            self._loop_thread.call_soon(_start_pump, self._stream, self._queue, self._loop_thread.closed_error)
        try:
            ended, value = self._queue.get()
        except BaseException:  # interrupted while waiting (KeyboardInterrupt): the request is cancelled
            self.close()
            raise
        if not ended:
            return value
        # Every later next() stops too; on a closed client, with the same error.
        self._queue.put((True, value if isinstance(value, ClientClosedError) else None))
        if value is not None:
            raise value
        raise StopIteration

    def close(self) -> None:
        """Stop the stream, cancelling its request on the server if it still runs. Closing twice is fine."""
        self._stream.close_soon()

    def __enter__(self) -> ResponseStream:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()


def _start_pump(stream: _Stream, responses: queue.SimpleQueue[tuple[bool, Any]], closed: Callable[[], Any]) -> None:
    stream.pump = asyncio.get_running_loop().create_task(_pump(stream, responses, closed))


async def _pump(stream: _Stream, responses: queue.SimpleQueue[tuple[bool, Any]], closed: Callable[[], Any]) -> None:
    """Read ``stream`` to its end on the loop, queueing each response's outputs, then (True, error or None)."""
    try:
        while (outputs := await stream.next()) is not None:
            responses.put((False, outputs))
    except asyncio.CancelledError:  # the loop thread is stopping: the client was closed
        responses.put((True, closed()))
        raise
    except BaseException as error:  # noqa: BLE001 - handed to the reading thread
        responses.put((True, error))
    else:
        responses.put((True, None))


# -- the clients -------------------------------------------------------------------------------


class AsyncioDecoupledModelClient(AsyncClientMixin):
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

    _for_decoupled = True

    def __init__(self, url: str, model_name: str, model_version: str | int | None = None, **options: Any) -> None:
        super().__init__(url, model_name, model_version, **options)
        if self._url.protocol != "grpc":
            raise XclientValueError(
                f"{type(self).__name__} streams over gRPC only; {url!r} is an HTTP URL (a URL without a scheme "
                f"means HTTP): use e.g. 'grpc://{self._url.host}:8001'"
            )
        self._async_setup()
        self._stream_method: tuple[Any, Any] | None = None  # (channel, ModelStreamInfer over it)

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
        return AsyncResponseStream(self._stream(inputs, named_inputs, False, parameters, headers))

    def infer_batch(
        self,
        *inputs: Any,
        parameters: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        **named_inputs: Any,
    ) -> AsyncResponseStream:
        """Stream a batch's responses; each input's first axis is the batch (models with ``max_batch_size > 0``)."""
        return AsyncResponseStream(self._stream(inputs, named_inputs, True, parameters, headers))

    async def close(self) -> None:
        """Close the connection, cancelling open streams; later calls raise ClientClosedError. Twice is fine."""
        self._stream_method = None  # it holds the channel
        await super().close()

    def _stream(
        self,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        batch: bool,
        parameters: Mapping[str, Any] | None,
        headers: Mapping[str, str] | None,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> _Stream:
        self._check_open()
        return _Stream(self, (args, kwargs, batch, parameters, headers), loop)

    def _stream_infer(self) -> Any:
        """Triton's ``ModelStreamInfer``, called as a server-streaming RPC over the transport's channel.

        One request per call: it goes out with the headers and the half-close in one batch, after which
        Triton ends the call with the request's last response. As a bidirectional call, the separate
        write can race a server that refuses the call at once (a missing API key), and grpc then reports
        "Internal error from Core" instead of the server's status (grpc/grpc#36066). The channel is the
        ``tritonclient.grpc.aio`` client's ``_channel``: the one private name used.
        """
        from tritonclient.grpc import service_pb2

        channel = getattr(self._transport().client, "_channel", None)
        if channel is None:
            raise XclientError("This tritonclient's grpc.aio client has no _channel: Xclient cannot stream with it")
        if self._stream_method is None or self._stream_method[0] is not channel:
            method = channel.unary_stream(
                MODEL_STREAM_INFER,
                request_serializer=service_pb2.ModelInferRequest.SerializeToString,
                response_deserializer=service_pb2.ModelStreamInferResponse.FromString,
            )
            self._stream_method = (channel, method)
        return self._stream_method[1]


class DecoupledModelClient(ClientWrapper):
    """A blocking client for one decoupled (streaming) model; ``for outputs in client.infer_sample(...)``.

    Example::

        with DecoupledModelClient("grpc://localhost:8001", "Qwen2-0.5B-Instruct") as client:
            for answer in client.infer_sample("I'm Pickle Rick"):
                print(answer["text_output"])

    Same options, rules and errors as :class:`AsyncioDecoupledModelClient`, which it runs in a private
    event-loop thread (started on first use; ``close()`` stops and joins it). **gRPC only**: an
    ``http://`` URL raises :class:`~Xclient.exceptions.XclientValueError` here. ``inference_timeout_s``
    bounds the wait for each response. Many threads may stream through one client at once; a failed
    stream leaves the client usable.
    """

    _client: AsyncioDecoupledModelClient

    def __init__(self, url: str, model_name: str, model_version: str | int | None = None, **options: Any) -> None:
        self._client = AsyncioDecoupledModelClient(url, model_name, model_version, **options)  # checks everything
        self._lock = threading.Lock()
        self._loop_thread: _LoopThread | None = None
        self._close_loop: Callable[[], Any] | None = None
        self._closed = False

    def __repr__(self) -> str:
        return repr(self._client).replace(type(self._client).__name__, type(self).__name__, 1)

    def __enter__(self) -> DecoupledModelClient:
        """With ``lazy_init=False``, fetch the config and check readiness now (closing the client if that fails)."""
        if not self._client._lazy_init:
            try:
                _ = self.model_config
            except BaseException:
                self.close()
                raise
        return self

    @property
    def model_config(self) -> ModelConfig:
        """The model config, fetched on first use and reused."""
        return self._run(self._client.model_config)

    def wait_for_server(self, timeout_s: float) -> None:
        """Block until the server is ready (riding out a server that is down or starting)."""
        self._run(self._client.wait_for_server(timeout_s))

    def wait_for_model(self, timeout_s: float) -> None:
        """Block until the model is ready, then fetch its config if it is still missing."""
        self._run(self._client.wait_for_model(timeout_s))

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
        loop_thread = self._get_loop_thread()
        stream = self._client._stream(inputs, named_inputs, False, parameters, headers, loop_thread.loop)
        return ResponseStream(stream, loop_thread)

    def infer_batch(
        self,
        *inputs: Any,
        parameters: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        **named_inputs: Any,
    ) -> ResponseStream:
        """Stream a batch's responses; each input's first axis is the batch (models with ``max_batch_size > 0``)."""
        loop_thread = self._get_loop_thread()
        stream = self._client._stream(inputs, named_inputs, True, parameters, headers, loop_thread.loop)
        return ResponseStream(stream, loop_thread)

    def close(self) -> None:
        """Close the connection and cancel open streams, then stop and join the loop thread; later calls
        raise ClientClosedError. Closing twice is fine."""
        with self._lock:
            self._closed = True
            close_loop = self._close_loop
        if close_loop is not None:
            close_loop()
            assert self._loop_thread is not None
            self._loop_thread.join()  # a second close() running at once waits for the first one too
        else:
            self._client._closed = True  # nothing was started: nothing to close

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        try:
            loop_thread = self._get_loop_thread()
        except BaseException:
            coro.close()
            raise
        return loop_thread.run(coro)

    def _get_loop_thread(self) -> _LoopThread:
        with self._lock:
            if self._closed:
                raise self._closed_error()
            if self._loop_thread is None:
                loop_thread = _LoopThread(f"{type(self).__name__}-loop", self._closed_error)
                # Also run when the client is garbage collected unclosed, or at exit: no thread outlives it.
                self._close_loop = weakref.finalize(self, loop_thread.stop, self._client.close)
                self._loop_thread = loop_thread
            return self._loop_thread

    @functools.cached_property
    def _closed_error(self) -> Callable[[], ClientClosedError]:
        """Makes the error of a call on a closed client (it must not hold the client: the loop thread keeps it)."""
        return functools.partial(
            ClientClosedError, f"{self!r} is closed; create a new client", model=self._client.model_name
        )
