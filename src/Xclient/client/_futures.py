"""FuturesModelClient: ModelClient's calls, run by a pool of worker threads, returning Futures.

Every call delegates to ONE shared :class:`ModelClient` (thread-safe), so the model config is
fetched once for all workers and the rules (coding, errors, deadlines) live in one place.
This module adds only the waiting: a bounded queue, the workers, and their shutdown.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

import numpy as np

from ..exceptions import ClientClosedError, QueueFullError, XclientValueError
from ._base import ClientWrapper
from ._config import ModelConfig
from ._model_client import ModelClient

T = TypeVar("T")

#: Fixed rather than CPU-based: workers wait on the network, not the CPU. Modest, so one client
#: neither floods a shared server nor opens many HTTP connections (one per worker); raise it for
#: throughput, up to what the model's instances and dynamic batcher can absorb.
DEFAULT_MAX_WORKERS = 4


class FuturesModelClient(ClientWrapper):
    """A :class:`ModelClient` whose calls return :class:`concurrent.futures.Future` objects at once.

    Example::

        with FuturesModelClient("grpc://localhost:8001", "text") as client:
            future = client.infer_sample("你好")
        future.result()["LENGTH"]                     # array([2], dtype=int32)

    Same arguments as ModelClient (``init_timeout_s``, ``inference_timeout_s``, ``api_key``...), plus:

    - ``max_workers`` (default 4): how many calls run at once, over HTTP or gRPC.
    - ``max_queue_size`` (default None, unbounded, like ``ThreadPoolExecutor``): how many calls may
      wait for a worker. A call that finds the queue full waits for room for at most
      ``inference_timeout_s``, or with ``non_blocking=True`` not at all; then it raises
      :class:`~Xclient.exceptions.QueueFullError`.

    A call raises at once only :class:`~Xclient.exceptions.QueueFullError` and
    :class:`~Xclient.exceptions.ClientClosedError`; every other error, bad input included, comes
    out of ``future.result()`` as the same typed error ModelClient raises (bad input still before
    anything is sent: the config it is checked against may have to be fetched first).

    ``close()`` (or leaving ``with``) finishes the queued calls; ``close(wait=False)`` cancels
    them. Both wait for the running calls and the worker threads. Do not call ``close`` from a
    future's done-callback: it runs on a worker thread, which cannot wait for itself.
    """

    def __init__(
        self,
        url: str,
        model_name: str,
        model_version: str | int | None = None,
        *,
        max_workers: int = DEFAULT_MAX_WORKERS,
        max_queue_size: int | None = None,
        non_blocking: bool = False,
        **options: Any,
    ) -> None:
        _check_positive_int("max_workers", max_workers)
        if max_queue_size is not None:
            _check_positive_int("max_queue_size", max_queue_size, "None (unbounded) or ")
        self._client = ModelClient(url, model_name, model_version, **options)  # checks the options; no I/O
        self._max_workers = max_workers
        self._max_queue_size = max_queue_size
        self._non_blocking = bool(non_blocking)
        self._queue_timeout_s: float = self._client._inference_timeout_s  # as checked by ModelClient
        self._slots = threading.BoundedSemaphore(max_queue_size) if max_queue_size else None
        self._executor = ThreadPoolExecutor(max_workers, thread_name_prefix=type(self).__name__)  # threads start lazily
        self._lock = threading.Lock()  # orders submissions against close
        self._closed = False

    # -- public, read-only ---------------------------------------------------------------------

    def __repr__(self) -> str:
        version = f", model_version={self.model_version!r}" if self.model_version else ""
        return (
            f"{type(self).__name__}({self.url!r}, {self.model_name!r}{version}, max_workers={self._max_workers}, "
            f"max_queue_size={self._max_queue_size}, non_blocking={self._non_blocking})"
        )

    def __enter__(self) -> FuturesModelClient:
        """With ``lazy_init=False``, fetch the config and check readiness now (blocking), like ModelClient."""
        try:
            self._client.__enter__()
        except BaseException:
            self.close()
            raise
        return self

    # -- calls: each one queues the ModelClient call of the same name ---------------------------

    def model_config(self) -> Future[ModelConfig]:
        """The model config (fetched once, shared with every worker)."""
        return self._submit(lambda: self._client.model_config)

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
    ) -> Future[dict[str, np.ndarray]]:
        """:meth:`ModelClient.infer_sample`, queued: one sample, the batch axis added and stripped."""
        call = self._client.infer_sample
        return self._submit(functools.partial(call, *inputs, parameters=parameters, headers=headers, **named_inputs))

    def infer_batch(
        self,
        *inputs: Any,
        parameters: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        **named_inputs: Any,
    ) -> Future[dict[str, np.ndarray]]:
        """:meth:`ModelClient.infer_batch`, queued: each input's first axis is the batch."""
        call = self._client.infer_batch
        return self._submit(functools.partial(call, *inputs, parameters=parameters, headers=headers, **named_inputs))

    def close(self, wait: bool = True) -> None:
        """Refuse new calls, finish (``wait=True``) or cancel (``wait=False``) the queued ones, wait for
        the running ones and the worker threads, then close the connections. Closing twice is fine."""
        with self._lock:
            self._closed = True
        self._executor.shutdown(wait=True, cancel_futures=not wait)
        self._client.close()

    # -- the queue -----------------------------------------------------------------------------

    def _submit(self, call: Callable[[], T]) -> Future[T]:
        """Queue ``call``; its queue slot is freed when a worker picks it up or it is cancelled."""
        self._check_open()  # at once, even while close() is still draining a full queue
        release = self._take_slot()
        future: Future[T] = Future()

        def run() -> None:
            release()  # before running(): a running future no longer counts against the queue
            if not future.set_running_or_notify_cancel():
                return
            try:
                result = call()
            except BaseException as e:  # the caller sees every error through the future
                future.set_exception(e)
            else:
                future.set_result(result)

        future.add_done_callback(lambda done: done.cancelled() and release())
        with self._lock:
            if self._closed:  # closed while this call waited for room
                release()
                self._check_open()
            work = self._executor.submit(run)
        work.add_done_callback(lambda item: item.cancelled() and future.cancel())  # close(wait=False)
        return future

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
            raise ClientClosedError(f"{self!r} is closed; create a new client", model=self.model_name)


def _nothing() -> None:
    pass


def _check_positive_int(option: str, value: object, alternative: str = "") -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise XclientValueError(f"{option}: expected {alternative}a positive int, got {value!r}")
