"""The five model clients behind one blocking interface, so that one test can run through each of them."""

from __future__ import annotations

import asyncio
import inspect
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from typing import Any

import pytest

from Xclient.client import (
    AsyncioDecoupledModelClient,
    AsyncioModelClient,
    DecoupledModelClient,
    FuturesModelClient,
    ModelClient,
)
from Xclient.client._decoupled import AsyncResponseStream

CLIENTS: dict[str, type] = {
    cls.__name__: cls
    for cls in (ModelClient, FuturesModelClient, AsyncioModelClient, DecoupledModelClient, AsyncioDecoupledModelClient)
}
UNARY = ["ModelClient", "FuturesModelClient", "AsyncioModelClient"]
STREAMING = ["DecoupledModelClient", "AsyncioDecoupledModelClient"]
#: Every client on every protocol it speaks (the streaming clients speak gRPC only).
EVERY_CLIENT = [(kind, protocol) for kind in UNARY for protocol in ("http", "grpc")] + [(k, "grpc") for k in STREAMING]
#: Runs a test once per client and protocol: its arguments ``kind`` (the class name) and ``protocol``.
every_client = pytest.mark.parametrize(("kind", "protocol"), EVERY_CLIENT, ids=[f"{k}-{p}" for k, p in EVERY_CLIENT])


class Driver:
    """One of the five clients, driven from blocking code. An asyncio client runs on a private event loop,
    the same one for every call: it is the same client object throughout, never rebuilt."""

    def __init__(self, kind: str, url: str, model: str, **options: Any) -> None:
        self.kind = kind
        self.streaming = kind in STREAMING
        self.client = CLIENTS[kind](url, model, **options)
        self.loop = asyncio.new_event_loop() if kind.startswith("Asyncio") else None

    def wait(self, outcome: Any) -> Any:
        """The result of what a client call returned: a value, a Future, or an awaitable."""
        if isinstance(outcome, Future):
            return outcome.result()
        if inspect.isawaitable(outcome):
            assert self.loop is not None
            return self.loop.run_until_complete(outcome)
        return outcome

    def stream(self, *args: Any, batch: bool = False, **inputs: Any) -> Iterator[dict[str, Any]]:
        """The responses of one streaming request, as they come."""
        stream = (self.client.infer_batch if batch else self.client.infer_sample)(*args, **inputs)
        if not isinstance(stream, AsyncResponseStream):
            yield from stream
            return
        while True:
            try:
                yield self.wait(anext(stream))
            except StopAsyncIteration:
                return

    def infer(self, *args: Any, batch: bool = False, **inputs: Any) -> list[dict[str, Any]]:
        """Every output of one request (``infer_batch`` with ``batch``): one dict, or one per streamed response."""
        if self.streaming:
            return list(self.stream(*args, batch=batch, **inputs))
        return [self.wait((self.client.infer_batch if batch else self.client.infer_sample)(*args, **inputs))]

    def close(self) -> None:
        self.wait(self.client.close())
        if self.loop is not None:  # as asyncio.run ends: finish what is still scheduled (gRPC's own tasks)
            self.loop.run_until_complete(_finish_pending())
            self.loop.close()


async def _finish_pending() -> None:
    tasks = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await asyncio.get_running_loop().shutdown_asyncgens()


def in_threads(calls: dict[str, Callable[[], Any]], meanwhile: Callable[[], Any] = lambda: None) -> dict[str, Any]:
    """Run blocking calls at once, each in a thread of its own, and ``meanwhile`` in this thread; return
    what each call returned, or the error it raised."""
    outcomes: dict[str, Any] = {}

    def run(name: str, call: Callable[[], Any]) -> None:
        try:
            outcomes[name] = call()
        except BaseException as e:  # the caller inspects it
            outcomes[name] = e

    threads = [threading.Thread(target=run, args=item, name=f"test-{item[0]}") for item in calls.items()]
    for thread in threads:
        thread.start()
    try:
        meanwhile()
    finally:
        for thread in threads:
            thread.join()
    return outcomes
