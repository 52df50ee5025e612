"""ModelClient: the synchronous client for models that answer each request once."""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

import numpy as np
from typing_extensions import Unpack

from ._base import BaseClient, BaseModelClient, Flow, Inference, run_flow
from ._config import ModelConfig
from ._options import ModelClientOptions
from ._transport import Transport

_Self = TypeVar("_Self", bound="SyncClientMixin")


class SyncTransportMixin(BaseClient):
    """What every blocking client shares: the transport (made on first use), flows run in place,
    ``close`` and ``with``."""

    _transport_obj: Transport | None = None

    def _sync_setup(self) -> None:
        self._lock = threading.RLock()

    def _transport(self) -> Transport:
        transport = self._transport_obj
        if transport is None:
            with self._lock:
                self._check_open()
                if self._transport_obj is None:
                    self._transport_obj = self._new_transport()
                transport = self._transport_obj
        return transport

    def _run(self, flow: Flow) -> Any:
        return run_flow(
            flow, self._transport(), self._ctx, self._call_headers(None), self._retries, self._retry_backoff_s
        )

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connections; later calls raise ClientClosedError. Closing twice is fine."""
        with self._lock:
            self._closed = True
            transport, self._transport_obj = self._transport_obj, None
        if transport is not None:
            transport.close()


class SyncClientMixin(SyncTransportMixin, BaseModelClient):
    """What every blocking model client shares on top: the config, readiness waits, ``with``."""

    def _get_config(self) -> ModelConfig:
        """The model config, after readiness checks on first use; later calls take no lock."""
        config = self._config
        if config is not None and (self._ready or not self._ensure_model_is_ready):
            return config
        with self._lock:
            self._check_open()
            if self._config is None or (self._ensure_model_is_ready and not self._ready):
                self._config = self._run(self._init_flow())
            return self._config

    def __enter__(self: _Self) -> _Self:
        """With ``lazy_init=False``, fetch the config and check readiness now (closing the client if that fails)."""
        if not self._lazy_init:
            try:
                self._get_config()
            except BaseException:
                self.close()  # __exit__ will not run: leave no connection behind
                raise
        return self

    @property
    def model_config(self) -> ModelConfig:
        """The model config, fetched on first use and reused."""
        self._check_open()
        return self._get_config()

    @property
    def is_batching_supported(self) -> bool:
        """True when the model takes a batch axis (``max_batch_size > 0``)."""
        return self.model_config.batching

    def wait_for_server(self, timeout_s: float) -> None:
        """Block until the server is ready (riding out a server that is down or starting)."""
        self._check_open()
        self._run(self._wait_flow(timeout_s, model=False))

    def wait_for_model(self, timeout_s: float) -> None:
        """Block until the model is ready, then fetch its config if it is still missing."""
        self._check_open()
        config = self._run(self._wait_flow(timeout_s, model=True))
        with self._lock:
            self._config = self._config or config


class ModelClient(SyncClientMixin):
    """A blocking client for one model, over HTTP or gRPC (chosen by the URL's scheme).

    Example::

        with ModelClient("grpc://localhost:8001", "text") as client:
            client.infer_sample("你好")["LENGTH"]      # array([2], dtype=int32)

    The constructor does no network I/O. The first call fetches the model config (once) and
    checks that the model is ready; with ``lazy_init=False`` entering ``with`` does it instead.
    It fails at once on an unknown model; a server that does not answer fails after
    ``init_timeout_s``; each inference has a deadline of ``inference_timeout_s``.
    A client is safe to share between threads.
    """

    def __init__(
        self,
        url: str | Sequence[str],
        model_name: str,
        model_version: str | int | None = None,
        **options: Unpack[ModelClientOptions],
    ) -> None:
        super().__init__(url, model_name, model_version, **options)
        self._sync_setup()

    def infer_sample(
        self,
        *inputs: Any,
        parameters: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        **named_inputs: Any,
    ) -> dict[str, np.ndarray[Any, Any]]:
        """Run one sample: adds the batch axis when the model batches, and strips it from the outputs.

        Inputs go positionally (config order) or by name, never both. Values may be numpy arrays
        or plain Python values (``str``/``bytes`` for BYTES inputs, lists, scalars).
        """
        return self._infer((inputs, named_inputs, False, parameters, headers))

    def infer_batch(
        self,
        *inputs: Any,
        parameters: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        **named_inputs: Any,
    ) -> dict[str, np.ndarray[Any, Any]]:
        """Run a batch: each input's first axis is the batch, at most the model's ``max_batch_size``."""
        return self._infer((inputs, named_inputs, True, parameters, headers))

    def _infer(self, call: Any) -> dict[str, np.ndarray[Any, Any]]:
        transport = self._transport()
        inference = Inference(self, self._get_config(), call, transport.calls)
        while True:
            try:
                return inference.done(transport.run(inference.op, inference.timeout_s))
            except Exception as e:  # failed() raises it, translated, unless it is retried
                time.sleep(inference.failed(e))
