"""``python -m benchmarks --profile``: where each client's own time goes, with the network taken out.

Each client's network is replaced by a stub that answers at once with a real, cached answer (raw
``tritonclient`` and PyTriton: an ``InferResult``; Xclient: its gRPC stubs' ``ModelInferResponse``, or
its HTTP wire's response): what is left is the client's own Python per request (building the request,
checking it, decoding the answer, its own machinery), free of server and network noise. Measured
as the best of several repeats of many calls, for raw ``tritonclient``, PyTriton and Xclient, sync
and asyncio, on both protocols; then Xclient's stubbed paths run under cProfile and the listings are
written next to the results (``profile-*.txt``).

The stubs reach into private attributes (Xclient's transports and wires, PyTriton's ``_infer_client``): this
is a diagnostic for the library's developers, not part of the benchmark.
"""

from __future__ import annotations

import asyncio
import cProfile
import io
import pathlib
import pstats
import timeit
from collections.abc import Callable
from typing import Any

from . import _clients as c
from . import _harness as h

CALLS = 2000
REPEATS = 15
SKETCH = "Xclient coding alone (its floor)"


class _Stub:
    """A ``tritonclient`` client that answers every ``infer`` at once with ``result``."""

    def __init__(self, result: Any) -> None:
        self.result = result

    def infer(self, *args: Any, **kwargs: Any) -> Any:
        return self.result

    def close(self) -> None:
        pass


class _AsyncStub(_Stub):
    async def infer(self, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        return self.result

    async def close(self) -> None:  # type: ignore[override]
        pass


def repeated(call: Callable[[], Any]) -> Callable[[], Any]:
    """``CALLS`` calls of ``call``."""

    def calls() -> None:
        for _ in range(CALLS):
            call()

    return calls


def interleaved_best_us(paths: dict[str, Callable[[], Any]]) -> dict[str, float]:
    """Microseconds per call of each path: the best of ``REPEATS`` rounds of ``CALLS`` calls, the
    paths taking turns (order rotated each round) like the benchmark's contenders."""
    best = dict.fromkeys(paths, float("inf"))
    names = list(paths)
    for index in range(REPEATS):
        for name in names[index % len(names) :] + names[: index % len(names)]:
            seconds = timeit.timeit(paths[name], number=1)
            best[name] = min(best[name], seconds / CALLS * 1e6)
    return best


def sketch(protocol: str, config: Any, answer: Any, awaited: bool) -> Callable[[], Any]:
    """Xclient's own coding (the same checks and decoding) around a cached answer, with none of the client
    around it: the floor of what ``infer_sample`` can cost once the config is known. gRPC: the protobuf
    request built and the ``ModelInferResponse`` read (:mod:`Xclient.client._grpc_wire`); HTTP: the REST
    request built and the binary answer read (:mod:`Xclient.client._rest`), asyncio HTTP inside
    ``asyncio.timeout`` (the asyncio wire's deadline)."""
    from Xclient.client import _rest
    from Xclient.client._coding import finish_response, prepare_request
    from Xclient.client._grpc_wire import build_request, read_outputs

    if protocol == "grpc":

        def sync_call() -> Any:
            request = prepare_request(config, (c.SAMPLE,), {}, batch=False)
            build_request(c.ECHO_MODEL, "", request.inputs, None)
            return finish_response(read_outputs(answer), request)

        async def grpc_async_call() -> Any:
            return sync_call()

        return grpc_async_call if awaited else sync_call

    def http_call() -> Any:
        request = prepare_request(config, (c.SAMPLE,), {}, batch=False)
        _rest.infer(c.ECHO_MODEL, "", request.inputs, None, None)
        return finish_response(_rest.infer_outputs(answer), request)

    async def async_call() -> Any:
        if not hasattr(asyncio, "timeout"):  # Python 3.10
            return await asyncio.wait_for(asyncio.sleep(0, http_call()), 60.0)
        async with asyncio.timeout(60.0):
            return http_call()

    return async_call if awaited else http_call


def _capture_http(wire: Any) -> list[Any]:
    """Make ``wire`` (a sync or asyncio HTTP wire of Xclient) keep the answers it gets; they are returned."""
    answers: list[Any] = []
    send = wire.send
    if asyncio.iscoroutinefunction(send):

        async def keeping_async(request: Any, timeout_s: float) -> Any:
            answers.append(await send(request, timeout_s))
            return answers[-1]

        wire.send = keeping_async
    else:

        def keeping(request: Any, timeout_s: float) -> Any:
            answers.append(send(request, timeout_s))
            return answers[-1]

        wire.send = keeping
    return answers


def sync_paths(protocol: str, url: str) -> dict[str, Callable[[], Any]]:
    """One stubbed call per library, sync clients (clients warmed up with one real request first)."""
    from pytriton.client import ModelClient as PyTritonModelClient

    from Xclient.client import ModelClient

    raw = c.raw_sync_client(protocol, url)
    stub = _Stub(raw.infer(c.ECHO_MODEL, c.raw_echo_inputs(c.tritonclient_module(protocol))))
    pytriton = PyTritonModelClient(url, c.ECHO_MODEL)
    pytriton.infer_sample(c.SAMPLE)
    pytriton._infer_client = stub
    xclient = ModelClient(url, c.ECHO_MODEL)
    xclient.model_config  # noqa: B018 - the config, fetched before the warm-up request
    transport: Any = xclient._transport()
    if protocol == "grpc":  # inference goes over the transport's own stubs: answer there
        xclient.infer_sample(c.SAMPLE)
        answer = stub.result.get_response()
        transport.stubs._infer = lambda request, **kwargs: answer
    else:  # Xclient's own HTTP wire: it answers with the real answer of the warm-up request
        answers = _capture_http(transport.wire)
        xclient.infer_sample(c.SAMPLE)
        answer = answers[-1]
        transport.wire.send = lambda request, timeout_s: answer
    raw.close()
    return {
        "raw tritonclient": c.raw_echo(protocol, stub),
        "PyTriton ModelClient": lambda: pytriton.infer_sample(c.SAMPLE),
        "Xclient ModelClient": lambda: xclient.infer_sample(c.SAMPLE),
        SKETCH: sketch(protocol, xclient.model_config, answer, awaited=False),
    }


def async_paths(protocol: str, url: str, loop: asyncio.AbstractEventLoop) -> dict[str, Callable[[], Any]]:
    """The same for the asyncio clients: each entry runs one call to completion on ``loop``."""
    from pytriton.client import AsyncioModelClient as PyTritonAsyncio

    from Xclient.client import AsyncioModelClient

    async def make() -> dict[str, Callable[[], Any]]:
        raw = c.raw_aio_client(protocol, url)
        stub = _AsyncStub(await raw.infer(c.ECHO_MODEL, c.raw_echo_inputs(c.tritonclient_module(protocol))))
        await raw.close()
        pytriton = PyTritonAsyncio(url, c.ECHO_MODEL)
        await pytriton.infer_sample(c.SAMPLE)
        await pytriton._infer_client.close()
        pytriton._infer_client = stub
        xclient = AsyncioModelClient(url, c.ECHO_MODEL)
        await xclient.infer_sample(c.SAMPLE)  # makes the transport and its wire
        transport: Any = xclient._transport()
        if protocol == "grpc":  # inference goes over the transport's own stubs: answer there
            answer = stub.result.get_response()

            async def answered(request: Any, **kwargs: Any) -> Any:
                return answer

            transport.stubs._infer = answered
        else:
            answers = _capture_http(transport._wire)
            await xclient.infer_sample(c.SAMPLE)
            answer = answers[-1]

            async def sent(request: Any, timeout_s: float) -> Any:
                return answer

            transport._wire.send = sent
        return {
            "raw tritonclient aio": c.raw_aio_echo(protocol, stub),
            "PyTriton AsyncioModelClient": lambda: pytriton.infer_sample(c.SAMPLE),
            "Xclient AsyncioModelClient": lambda: xclient.infer_sample(c.SAMPLE),
            "raw + asyncio.wait_for": lambda: asyncio.wait_for(c.raw_aio_echo(protocol, stub)(), 60.0),
            SKETCH: sketch(protocol, await xclient.model_config, answer, awaited=True),
        }

    calls = loop.run_until_complete(make())

    def on_loop(call: Callable[[], Any]) -> Callable[[], Any]:
        """``CALLS`` awaited calls inside one ``run_until_complete`` (the loop's own start-up left out)."""

        async def calls() -> None:
            for _ in range(CALLS):
                await call()

        return lambda: loop.run_until_complete(calls())

    return {name: on_loop(call) for name, call in calls.items()}


def cprofile_listing(calls: Callable[[], Any], repeats: int = 5) -> str:
    """cProfile of ``repeats`` x ``CALLS`` calls: the 30 functions with the most own time."""
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(repeats):
        calls()
    profiler.disable()
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(30)
    return out.getvalue()


def stream_listings(url: str, streams: int = 200) -> dict[str, str]:
    """cProfile of Xclient's decoupled clients over ``streams`` real streams of 100 responses each
    (nothing stubbed: the gRPC call, its reads and the sync client's thread hop are the point)."""
    from Xclient.client import AsyncioDecoupledModelClient, DecoupledModelClient

    async def async_streams() -> None:
        client = AsyncioDecoupledModelClient(url, c.STREAM_MODEL)
        try:
            for _ in range(streams):
                async for _ in client.infer_sample(c.STREAM_SAMPLE):
                    pass
        finally:
            await client.close()

    def sync_streams() -> None:
        with DecoupledModelClient(url, c.STREAM_MODEL) as client:
            for _ in range(streams):
                for _ in client.infer_sample(c.STREAM_SAMPLE):
                    pass

    return {
        "asyncio-stream": cprofile_listing(lambda: asyncio.run(async_streams()), repeats=1),
        "sync-stream": cprofile_listing(sync_streams, repeats=1),
    }


def run(urls: dict[str, str], out: pathlib.Path) -> list[h.Table]:
    table = h.Table(
        f"Client-side Python per request, network stubbed (microseconds, best of {REPEATS} x {CALLS:,} calls)",
        ["protocol", "path", "client", "us/request", "x raw", "over raw (us)"],
        notes=[
            "The network inside each library is replaced by a stub answering at once with a real, cached answer "
            "(tritonclient's InferResult; Xclient's gRPC ModelInferResponse or HTTP wire response); the raw row "
            "builds its InferInput and reads as_numpy like the benchmark's floor. "
            "asyncio rows: the calls awaited one after another in one coroutine on one event loop.",
            "'raw + asyncio.wait_for' is the raw asyncio call wrapped in asyncio.wait_for (what Xclient's "
            "AsyncTransport did per call before 2026-11-22: now gRPC carries the deadline, HTTP its wire's).",
            f"'{SKETCH}': Xclient's own request coding and response decoding (prepare_request, the gRPC protobuf "
            "or REST request, the outputs, finish_response) around the cached answer, asyncio HTTP inside "
            "asyncio.timeout: the floor of infer_sample, with none of the client around it.",
        ],
    )
    out.mkdir(parents=True, exist_ok=True)
    loop = asyncio.new_event_loop()
    try:
        for protocol, url in urls.items():
            sync = {name: repeated(call) for name, call in sync_paths(protocol, url).items()}
            for path, calls in (("sync", sync), ("asyncio", async_paths(protocol, url, loop))):
                timings = interleaved_best_us(calls)
                floor = next(iter(timings.values()))
                for name, us in timings.items():
                    table.add(
                        {
                            "protocol": protocol,
                            "path": path,
                            "client": name,
                            "us/request": h.fmt(us, 1),
                            "x raw": h.fmt_ratio(us / floor),
                            "over raw (us)": h.fmt(us - floor, 1),
                        },
                        protocol=protocol,
                        path=path,
                        client=name,
                        us_per_request=us,
                    )
                xclient = next(call for name, call in calls.items() if name.startswith("Xclient"))
                listing = out / f"profile-{path}-{protocol}.txt"
                listing.write_text(cprofile_listing(xclient))
                table.notes.append(f"cProfile of Xclient's stubbed {path} path over {protocol}: {listing.name}")
    finally:
        loop.close()
    for name, listing in stream_listings(urls["grpc"]).items():
        (out / f"profile-{name}-grpc.txt").write_text(listing)
        table.notes.append(f"cProfile of 200 real streams of 100 responses, Xclient's {name}: profile-{name}-grpc.txt")
    return [table]
