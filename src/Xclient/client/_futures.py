"""FuturesModelClient: AsyncioModelClient's calls, run on a private event-loop thread, returning Futures.

Every call is a coroutine of ONE shared :class:`AsyncioModelClient`, so the model config is fetched
once for all calls and the rules (coding, errors, deadlines) live in one place. Those coroutines run
as tasks on ONE private event loop in a daemon thread (:class:`~Xclient.client._loop_thread._LoopThread`),
started on first use: the calls
wait on the network together in one thread, instead of ``max_workers`` threads contending for the GIL.

This module adds only the waiting:

- the queue: ``max_queue_size`` slots (a ``threading.BoundedSemaphore``), taken by the calling thread
  before the call is handed to the loop, given back when the call starts running or is cancelled;
- the workers: the calls wait in a deque; on the loop, at most ``max_workers`` worker tasks take
  them from it in order, one call at a time each (a burst of calls wakes the loop once, and a call
  cancelled while it waits is skipped);
- the shutdown: ``close()`` (or a ``weakref.finalize``, when an unclosed client is garbage collected
  or the interpreter exits) lets the calls finish on the loop (or cancels the queued ones), closes
  the connections there, then stops the loop and joins its thread.

Nothing on the loop holds the FuturesModelClient itself (:class:`_Calls` holds what the loop needs),
so an unclosed one can be collected while its calls run.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import threading
import weakref
from collections.abc import Callable, Coroutine, Mapping, Sequence
from concurrent.futures import Future
from typing import Any, TypeVar

import numpy as np
from typing_extensions import Unpack

from ..exceptions import ClientClosedError, QueueFullError, XclientValueError
from ._asyncio import AsyncioModelClient
from ._base import ClientWrapper, closed_error
from ._config import ModelConfig
from ._loop_thread import _LoopThread
from ._options import ModelClientOptions

T = TypeVar("T")
#: A call not made yet: the coroutine is made on the loop when a worker is free, so a cancelled call makes none.
_Call = Callable[[], Coroutine[Any, Any, T]]
#: A call waiting for a worker: the call, its future, and the release of its queue slot.
_Waiting = tuple[_Call[T], Future[T], Callable[[], None]]

#: Fixed rather than CPU-based: calls wait on the network, not the CPU. Modest, so one client does not
#: flood a shared server; raise it for throughput, up to what the model's instances and dynamic batcher
#: can absorb.
DEFAULT_MAX_WORKERS = 4


class FuturesModelClient(ClientWrapper):
    """A model client whose calls return :class:`concurrent.futures.Future` objects at once.

    Example::

        with FuturesModelClient("grpc://localhost:8001", "text") as client:
            future = client.infer_sample("你好")
        future.result()["LENGTH"]                     # array([2], dtype=int32)

    Same arguments as ModelClient (``init_timeout_s``, ``inference_timeout_s``, ``api_key``...), plus:

    - ``max_workers`` (default 4): how many calls run at once, over HTTP or gRPC.
    - ``max_queue_size`` (default None, unbounded): how many calls may wait for a worker. A call that
      finds the queue full waits for room for at most ``inference_timeout_s``, or with
      ``non_blocking=True`` not at all; then it raises :class:`~Xclient.exceptions.QueueFullError`.

    The calls run as coroutines of one :class:`AsyncioModelClient` on one private event-loop thread
    (``tritonclient.grpc.aio``, or Xclient's asyncio HTTP wire), started on first use:
    however large ``max_workers``, a client adds one thread.

    A call raises at once only :class:`~Xclient.exceptions.QueueFullError` and
    :class:`~Xclient.exceptions.ClientClosedError`; every other error, bad input included, comes
    out of ``future.result()`` as the same typed error ModelClient raises (bad input still before
    anything is sent: the config it is checked against may have to be fetched first).
    ``future.cancel()`` cancels a queued call (and frees its place in the queue); a running one
    runs to its end.

    ``close()`` (or leaving ``with``) finishes the queued calls; ``close(wait=False)`` (or leaving
    ``with`` on KeyboardInterrupt) cancels them. Both wait for the running calls, then stop the
    loop thread. An unclosed client does the same as ``close()`` when it is garbage collected or the
    interpreter exits. A future's done-callbacks run on the loop thread when the call ends there:
    keep them short, and do not wait in them for another call of this client (that call would wait
    for the callback); ``close`` there returns without waiting.
    """

    _client: AsyncioModelClient

    def __init__(
        self,
        url: str | Sequence[str],
        model_name: str,
        model_version: str | int | None = None,
        *,
        max_workers: int = DEFAULT_MAX_WORKERS,
        max_queue_size: int | None = None,
        non_blocking: bool = False,
        **options: Unpack[ModelClientOptions],
    ) -> None:
        _check_positive_int("max_workers", max_workers)
        if max_queue_size is not None:
            _check_positive_int("max_queue_size", max_queue_size, "None (unbounded) or ")
        self._client = AsyncioModelClient(url, model_name, model_version, **options)  # checks the options; no I/O
        self._max_workers = max_workers
        self._max_queue_size = max_queue_size
        self._non_blocking = bool(non_blocking)
        self._queue_timeout_s: float = self._client._inference_timeout_s  # as checked by the client
        self._slots = threading.BoundedSemaphore(max_queue_size) if max_queue_size else None
        self._lock = threading.Lock()  # orders submissions against close
        self._calls: _Calls | None = None  # the loop thread and what runs there: made on first use
        self._finalizer: weakref.finalize[..., Any] | None = None  # stops the loop thread, once: close() or collection
        self._closed = False
        # Holds no reference to self: the loop thread keeps it.
        self._closed_error = functools.partial(closed_error, repr(self), self.model_name)

    # -- public, read-only ---------------------------------------------------------------------

    def __repr__(self) -> str:
        version = f", model_version={self.model_version!r}" if self.model_version else ""
        return (
            f"{type(self).__name__}({self.url!r}, {self.model_name!r}{version}, max_workers={self._max_workers}, "
            f"max_queue_size={self._max_queue_size}, non_blocking={self._non_blocking})"
        )

    def __enter__(self) -> FuturesModelClient:
        """With ``lazy_init=False``, fetch the config and check readiness now (blocking), like ModelClient."""
        if not self._client._lazy_init:
            try:
                self.model_config().result()
            except BaseException:
                self.close()
                raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        """Finish the queued calls; on KeyboardInterrupt, cancel them (the running ones still end)."""
        self.close(wait=not isinstance(exc_info[1], KeyboardInterrupt))

    # -- calls: each one queues the AsyncioModelClient call of the same name --------------------

    def model_config(self) -> Future[ModelConfig]:
        """The model config (fetched once, shared by every call)."""
        return self._submit(self._client._get_config)

    def wait_for_server(self, timeout_s: float) -> Future[None]:
        """Resolves when the server is ready; fails after ``timeout_s``."""
        return self._submit(functools.partial(self._client.wait_for_server, timeout_s))

    def wait_for_model(self, timeout_s: float) -> Future[None]:
        """Resolves when the model is ready (its config then fetched); fails after ``timeout_s``."""
        return self._submit(functools.partial(self._client.wait_for_model, timeout_s))

    def infer_sample(
        self,
        *inputs: Any,
        parameters: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        **named_inputs: Any,
    ) -> Future[dict[str, np.ndarray[Any, Any]]]:
        """:meth:`ModelClient.infer_sample`, queued: one sample, the batch axis added and stripped."""
        call = self._client.infer_sample
        return self._submit(functools.partial(call, *inputs, parameters=parameters, headers=headers, **named_inputs))

    def infer_batch(
        self,
        *inputs: Any,
        parameters: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        **named_inputs: Any,
    ) -> Future[dict[str, np.ndarray[Any, Any]]]:
        """:meth:`ModelClient.infer_batch`, queued: each input's first axis is the batch."""
        call = self._client.infer_batch
        return self._submit(functools.partial(call, *inputs, parameters=parameters, headers=headers, **named_inputs))

    def close(self, wait: bool = True) -> None:
        """Refuse new calls, finish (``wait=True``) or cancel (``wait=False``) the queued ones, wait for
        the running ones, close the connections, then stop and join the loop thread. Closing twice is fine."""
        with self._lock:
            self._closed = True
            calls, finalizer = self._calls, self._finalizer
        if calls is None or finalizer is None:
            self._client._closed = True  # nothing was started: nothing to close
            return
        if finalizer.detach() is not None:  # else it ran already: in an earlier close, or another thread's
            calls.loop_thread.stop(functools.partial(calls.close, wait))
        calls.loop_thread.join()  # also when another thread's close is still at it

    # -- the queue -----------------------------------------------------------------------------

    def _submit(self, call: _Call[T]) -> Future[T]:
        """Queue ``call``; its queue slot is freed when it starts running or is cancelled."""
        self._check_open()  # at once, even while close() is still draining a full queue
        release = self._take_slot()
        try:
            future: Future[T] = Future()
            if release is not _nothing:
                future.add_done_callback(lambda done: done.cancelled() and release())
            with self._lock:
                self._check_open()  # closed while this call waited for room
                self._get_calls().submit(call, future, release)
        except BaseException:  # refused, or interrupted (KeyboardInterrupt): the slot is not kept
            release()
            raise
        return future

    def _get_calls(self) -> _Calls:
        """The loop side, started on first use (under ``self._lock``)."""
        calls = self._calls
        if calls is None:
            calls = _Calls(self._client, self._max_workers, f"{type(self).__name__}-loop", self._closed_error)
            # Also run when the client is garbage collected unclosed, or at exit: no thread outlives it.
            self._finalizer = weakref.finalize(self, calls.loop_thread.stop, calls.close)
            self._calls = calls
        return calls

    def _take_slot(self) -> Callable[[], None]:
        """Wait for room in the queue as configured; return the slot's release, which acts only once."""
        slots = self._slots
        if slots is None:
            return _nothing
        taken = slots.acquire(blocking=False) if self._non_blocking else slots.acquire(timeout=self._queue_timeout_s)
        if not taken:
            how = "non_blocking=True" if self._non_blocking else f"still full after {self._queue_timeout_s:g} s"
            raise QueueFullError(
                f"{self!r}: the queue is full ({self._max_queue_size} calls waiting for {self._max_workers} "
                f"workers; {how}); wait for results, or raise max_queue_size or max_workers",
                model=self.model_name,
            )
        once = threading.Lock()  # taken by the first release and never given back

        def release() -> None:
            if once.acquire(blocking=False):
                slots.release()

        return release

    def _check_open(self) -> None:
        if self._closed:
            raise self._closed_error()


class _Calls:
    """The loop side of a FuturesModelClient; holds nothing of the FuturesModelClient itself.

    Calls wait in a deque, which any thread appends to (:meth:`submit`). On the loop, up to
    ``max_workers`` worker tasks take them from it in order, each running one call of the shared
    AsyncioModelClient at a time, until the deque is empty. The loop is woken only when no dispatch
    is due already (a burst of calls costs one wake-up), and a call cancelled while it waits is skipped.
    """

    def __init__(
        self, client: AsyncioModelClient, max_workers: int, name: str, closed_error: Callable[[], ClientClosedError]
    ) -> None:
        self.loop_thread = _LoopThread(name, closed_error)
        self._client = client
        self._max_workers = max_workers
        self._waiting: collections.deque[_Waiting[Any]] = collections.deque()  # appended by any thread
        self._dispatch_due = False
        self._workers: set[asyncio.Task[None]] = set()  # loop thread only; strong references (the loop keeps weak ones)

    def submit(self, call: _Call[T], future: Future[T], release: Callable[[], None]) -> None:
        """Queue a call (from any thread; the caller serializes submissions); ``future`` gets its outcome."""
        self._waiting.append((call, future, release))
        if not self._dispatch_due:  # else the dispatch due will find this call too: it has not begun yet
            self._dispatch_due = True
            self.loop_thread.call_soon(self._dispatch)

    def _dispatch(self) -> None:
        """Start workers for the waiting calls, up to ``max_workers`` (loop thread)."""
        self._dispatch_due = False
        while len(self._workers) < self._max_workers and (first := self._next()) is not None:
            self._workers.add(self.loop_thread.loop.create_task(self._work(*first)))

    def _next(self) -> tuple[_Call[Any], Future[Any]] | None:
        """The next waiting call, now running; None when none waits (loop thread)."""
        while self._waiting:
            call, future, release = self._waiting.popleft()
            release()  # before running: a running call no longer counts against the queue
            if future.set_running_or_notify_cancel():  # False: cancelled while it waited
                return call, future
        return None

    async def _work(self, call: _Call[Any], future: Future[Any]) -> None:
        """A worker: run calls one after the other, giving each outcome, whatever it is, to its future."""
        try:
            while True:
                try:
                    result = await call()
                except asyncio.CancelledError:  # the loop stopped under it (never after close, which waits)
                    future.set_exception(self.loop_thread.closed_error())
                    raise
                except BaseException as e:  # the caller sees every error through the future
                    future.set_exception(e)
                else:
                    future.set_result(result)
                if (following := self._next()) is None:
                    return
                call, future = following
        finally:
            self._workers.discard(asyncio.current_task())

    async def close(self, wait: bool = True) -> None:
        """The cleanup of :meth:`_LoopThread.stop`: cancel the waiting calls unless ``wait``, wait for every
        call to end, then close the connections. Every call submitted before is in the deque by then."""
        if not wait:
            for _, future, _ in list(self._waiting):
                future.cancel()  # its done-callback frees its queue slot
        self._dispatch()
        while self._workers:
            await asyncio.wait(list(self._workers))
        await self._client.close()


def _nothing() -> None:
    pass


def _check_positive_int(option: str, value: object, alternative: str = "") -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise XclientValueError(f"{option}: expected {alternative}a positive int, got {value!r}")
