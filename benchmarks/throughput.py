"""Group 2: throughput at concurrency 1, 8 and 32 (requests per second, one short text each).

Contenders, per protocol and concurrency: raw ``tritonclient.{grpc,http}.aio`` (the floor: C tasks
sharing one client), PyTriton's and Xclient's ``AsyncioModelClient`` (the same C tasks) and their
``FuturesModelClient`` (``max_workers=C``, every call submitted at once, then every result waited
for). PyTriton's clients run with their defaults (``lazy_init=True``: with ``lazy_init=False`` its
asyncio client refetches the config before every request).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from . import _clients as c
from . import _harness as h

CONCURRENCY = (1, 8, 32)
TITLE = "2. Throughput at concurrency 1, 8 and 32"
COLUMNS = ["protocol", "concurrency", "client", "requests/s", "x raw", "per-round x raw", "x PyTriton", "target"]
NOTES = (
    "{rounds} rounds x {requests} requests per client and concurrency after a warm-up round; requests/s is the "
    "median over rounds. The floor is raw tritonclient's aio client with the same number of tasks. "
    "Target: Xclient's asyncio and futures clients at or above raw (>= 1.00x).",
)


async def drive(call: Callable[[], Awaitable[Any]], requests: int, concurrency: int) -> float:
    """``requests`` calls by ``concurrency`` tasks; requests per second."""
    left = requests

    async def worker() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            await call()

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return requests / (time.perf_counter() - start)


def submit_all(client: Any, requests: int) -> float:
    """``requests`` calls submitted to a futures client at once, then waited for; requests per second."""
    start = time.perf_counter()
    futures = [client.infer_sample(c.SAMPLE) for _ in range(requests)]
    for future in futures:
        future.result()
    return requests / (time.perf_counter() - start)


class Clients:
    """The clients of this group: asyncio ones live on one event loop, made and closed inside it."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._async: list[Any] = []
        self._sync: list[Any] = []

    def make_async(self, factory: Callable[[], Any]) -> Any:
        client = h.made_in_loop(self.loop, factory)
        self._async.append(client)
        return client

    def make_sync(self, client: Any) -> Any:
        self._sync.append(client)
        return client

    def close(self) -> None:
        for client in self._sync:
            client.close()
        for client in self._async:
            self.loop.run_until_complete(client.close())
        self.loop.close()


def make_contenders(urls: dict[str, str], requests: int, clients: Clients) -> list[h.Contender]:
    from pytriton.client import AsyncioModelClient as PyTritonAsyncio
    from pytriton.client import FuturesModelClient as PyTritonFutures

    from Xclient.client import AsyncioModelClient, FuturesModelClient

    contenders = []
    for protocol, url in urls.items():
        raw = clients.make_async(lambda protocol=protocol, url=url: c.raw_aio_client(protocol, url))
        pytriton = clients.make_async(lambda url=url: PyTritonAsyncio(url, c.ECHO_MODEL))
        xclient = clients.make_async(lambda url=url: AsyncioModelClient(url, c.ECHO_MODEL))
        async_calls = [
            (h.RAW, "aio InferenceServerClient", c.raw_aio_echo(protocol, raw)),
            (h.PYTRITON, "AsyncioModelClient", lambda client=pytriton: client.infer_sample(c.SAMPLE)),
            (h.XCLIENT, "AsyncioModelClient", lambda client=xclient: client.infer_sample(c.SAMPLE)),
        ]
        for concurrency in CONCURRENCY:
            for library, label, call in async_calls:

                def run_async(call: Any = call, concurrency: int = concurrency) -> float:
                    return clients.loop.run_until_complete(drive(call, requests, concurrency))

                extra = {"concurrency": concurrency}
                contenders.append(h.Contender(library, label, protocol, run_async, kind="asyncio", extra=extra))
            for library, factory in ((h.PYTRITON, PyTritonFutures), (h.XCLIENT, FuturesModelClient)):
                client = clients.make_sync(factory(url, c.ECHO_MODEL, max_workers=concurrency))
                run = lambda client=client: submit_all(client, requests)  # noqa: E731
                extra = {"concurrency": concurrency}
                contenders.append(
                    h.Contender(library, "FuturesModelClient", protocol, run, kind="futures", extra=extra)
                )
    return contenders


def run(urls: dict[str, str], *, rounds: int, requests: int) -> h.Table:
    clients = Clients()
    try:
        outcomes = h.interleave(make_contenders(urls, requests, clients), rounds)
    finally:
        clients.close()
    return report(outcomes, urls, rounds, requests)


def report(outcomes: list[h.Outcome], urls: dict[str, str], rounds: int, requests: int) -> h.Table:
    table = h.Table.from_templates(TITLE, COLUMNS, NOTES, rounds=rounds, requests=requests)
    for protocol in urls:
        for kind in ("asyncio", "futures"):
            checks: list[tuple[int, float | None, bool | None]] = []
            for concurrency in CONCURRENCY:
                floor = h.find(outcomes, protocol=protocol, library=h.RAW, concurrency=concurrency)
                pytriton = h.find(outcomes, protocol=protocol, library=h.PYTRITON, kind=kind, concurrency=concurrency)
                xclient = h.find(outcomes, protocol=protocol, library=h.XCLIENT, kind=kind, concurrency=concurrency)
                rows = [o for o in (floor, pytriton, xclient) if o is not None]
                if kind == "futures":
                    rows = rows[1:]  # the floor is listed once, with the asyncio clients
                for outcome in rows:
                    x_raw, passed = _add_row(table, outcome, floor, pytriton)
                    if outcome is xclient:
                        checks.append((concurrency, x_raw, passed))
            if checks:
                verdicts = [passed for _, _, passed in checks]
                overall = False if False in verdicts else (None if None in verdicts else True)
                measured = ", ".join(f"{h.fmt_ratio(r)} at {n}" for n, r, _ in checks)
                table.targets.append(
                    h.Target(f"{kind} throughput, {protocol}", ">= 1.00x raw at 1, 8 and 32", measured, overall)
                )
    if any(o.error and "HTTP/" in o.error for o in outcomes if o.contender.library == h.PYTRITON):
        table.notes.append(
            "PyTriton's FuturesModelClient on gRPC fails above one worker: the extra workers' clients lose the "
            "URL's scheme and speak HTTP to the gRPC port (HTTPParseError)."
        )
    return table


def _add_row(
    table: h.Table, outcome: h.Outcome, floor: h.Outcome | None, pytriton: h.Outcome | None
) -> tuple[float | None, bool | None]:
    """Add ``outcome``'s row; return its ratio to raw and its verdict."""
    contender = outcome.contender
    rate = h.median(outcome.rounds)
    x_raw = h.ratio(rate, h.median(floor.rounds)) if floor else None
    x_pytriton = h.ratio(rate, h.median(pytriton.rounds)) if pytriton and contender.library == h.XCLIENT else None
    spread = h.round_ratios(outcome, floor, float) if floor and floor is not outcome else []
    passed = h.verdict(contender.library == h.XCLIENT, outcome, x_raw, lambda v: v >= 1.0)
    cells = {
        "concurrency": str(contender.extra["concurrency"]),
        "requests/s": outcome.error or h.fmt(rate, 0),
        "x raw": h.ratio_cell(contender, x_raw),
        "per-round x raw": h.fmt_spread(spread),
        "x PyTriton": h.fmt_ratio(x_pytriton),
    }
    table.add_result(outcome, cells, passed, requests_per_s=rate, ratio_raw=x_raw, round_ratios=spread)
    return x_raw, passed
