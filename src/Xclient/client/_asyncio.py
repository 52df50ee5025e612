"""AsyncioModelClient: the asyncio client, on native asyncio transports (grpc.aio, asyncio streams; no thread pool)."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Mapping, Sequence
from typing import Any, TypeVar

import numpy as np
from typing_extensions import Unpack

from ..exceptions import XclientError
from ._base import BaseClient, BaseModelClient, Flow, Inference, run_flow_async
from ._config import ModelConfig
from ._options import ModelClientOptions
from ._transport import AsyncTransport

_Self = TypeVar("_Self", bound="AsyncClientMixin")


class AsyncTransportMixin(BaseClient):
    """What every asyncio client shares: the transport (made on first use, inside the loop), flows
    awaited, ``close`` and ``async with``."""

    _transport_obj: AsyncTransport | None = None

    def _async_setup(self) -> None:
        self._init_lock = asyncio.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None

    def _transport(self) -> AsyncTransport:
        """The transport of the running event loop: asyncio connections belong to one loop, so a
        client used again under a new loop (a second ``asyncio.run``) starts afresh there."""
        self._check_open()
        loop = asyncio.get_running_loop()
        if self._transport_obj is None or self._loop is not loop:
            if self._loop is not None and self._loop is not loop and not self._loop.is_closed():
                raise XclientError(
                    f"{self!r} is in use by another running event loop; create one client per event loop"
                )
            self._transport_obj = self._new_async_transport()
            self._init_lock = asyncio.Lock()
            self._loop = loop
        return self._transport_obj

    async def _run(self, flow: Flow) -> Any:
        return await run_flow_async(
            flow, self._transport(), self._ctx, self._call_headers(None), self._retries, self._retry_backoff_s
        )

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the connections; later calls raise ClientClosedError. Closing twice is fine."""
        self._closed = True
        transport, self._transport_obj = self._transport_obj, None
        if transport is not None:
            await transport.close()


class AsyncClientMixin(AsyncTransportMixin, BaseModelClient):
    """What every asyncio model client shares on top: the config (checked once per client, not
    before every request), readiness waits, ``async with``."""

    async def _get_config(self) -> ModelConfig:
        config = self._config
        if config is not None and (self._ready or not self._ensure_model_is_ready):
            return config
        self._transport()  # first: under a new event loop it renews the transport and the lock
        async with self._init_lock:
            self._check_open()
            if self._config is None or (self._ensure_model_is_ready and not self._ready):
                self._config = await self._run(self._init_flow())
            return self._config

    async def __aenter__(self: _Self) -> _Self:
        """With ``lazy_init=False``, fetch the config and check readiness now (closing the client if that fails)."""
        if not self._lazy_init:
            try:
                await self._get_config()
            except BaseException:
                await self.close()  # __aexit__ will not run: leave no connection behind
                raise
        return self

    @property
    def model_config(self) -> Coroutine[Any, Any, ModelConfig]:
        """An awaitable of the model config: ``await client.model_config``."""
        return self._get_config()

    async def wait_for_server(self, timeout_s: float) -> None:
        """Wait until the server is ready (riding out a server that is down or starting)."""
        await self._run(self._wait_flow(timeout_s, model=False))

    async def wait_for_model(self, timeout_s: float) -> None:
        """Wait until the model is ready, then fetch its config if it is still missing."""
        config = await self._run(self._wait_flow(timeout_s, model=True))
        self._config = self._config or config


class AsyncioModelClient(AsyncClientMixin):
    """An asyncio client for one model, over HTTP (Xclient's asyncio HTTP wire) or gRPC
    (``tritonclient.grpc.aio``). Same options and rules as :class:`~Xclient.client.ModelClient`.

    Example::

        async with AsyncioModelClient("grpc://localhost:8001", "text") as client:
            config = await client.model_config
            result = await client.infer_sample("你好")

    Hundreds of concurrent requests on one client are fine.
    """

    def __init__(
        self,
        url: str | Sequence[str],
        model_name: str,
        model_version: str | int | None = None,
        **options: Unpack[ModelClientOptions],
    ) -> None:
        super().__init__(url, model_name, model_version, **options)
        self._async_setup()

    async def infer_sample(
        self,
        *inputs: Any,
        parameters: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        **named_inputs: Any,
    ) -> dict[str, np.ndarray[Any, Any]]:
        """Run one sample (see :meth:`Xclient.client.ModelClient.infer_sample`)."""
        return await self._infer((inputs, named_inputs, False, parameters, headers))

    async def infer_batch(
        self,
        *inputs: Any,
        parameters: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        **named_inputs: Any,
    ) -> dict[str, np.ndarray[Any, Any]]:
        """Run a batch (see :meth:`Xclient.client.ModelClient.infer_batch`)."""
        return await self._infer((inputs, named_inputs, True, parameters, headers))

    async def _infer(self, call: Any) -> dict[str, np.ndarray[Any, Any]]:
        config = await self._get_config()
        transport = self._transport()
        inference = Inference(self, config, call, transport.calls)
        while True:
            try:
                return inference.done(await transport.run(inference.op, inference.timeout_s))
            except Exception as e:  # failed() raises it, translated, unless it is retried
                await asyncio.sleep(inference.failed(e))
