"""Group 9: throughput over one, two and three replicas of a server-bound model, and the ratio to one.

Three local Triton servers of their own, each serving ``bench_service`` (a fixed 20 ms per request,
one instance, no batching: at most 50 requests/s per server). One ``AsyncioModelClient`` over the
first N of them (N = 1, 2, 3), with a fixed number of tasks (enough to keep three servers busy),
sends the requests; the clients take turns round by round (:func:`~._harness.interleave`). A client
over one URL is the plain single-URL client; over several, the replica set balances them.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
from collections.abc import Iterator
from typing import Any

from . import _clients as c
from . import _harness as h
from .throughput import drive

SERVICE_MODEL = "bench_service"
SERVICE_TIME_S = 0.02
REPLICAS = (1, 2, 3)
#: Tasks sending at once: twice what three servers can run, so each replica always has work queued.
CONCURRENCY = 6
GOALS = {2: 1.8, 3: 2.6}
TITLE = "9. Fleets: throughput over 1, 2 and 3 replicas"
COLUMNS = ["protocol", "replicas", "client", "requests/s", "x one replica", "ideal", "target"]
NOTES = (
    "Each replica is its own local Triton server serving bench_service: 20 ms per request, one instance, "
    "no batching (at most 50 requests/s each). One AsyncioModelClient over the first N servers, "
    f"{CONCURRENCY} tasks; {{rounds}} rounds x {{requests}} requests per replica count after a warm-up round "
    "(the requests scale with N, so each round lasts about as long); requests/s is the median over rounds.",
    "All three servers and the client share this machine's cores: the servers sleep through their service "
    "time, so the client's CPU is what can fall short. Targets: >= 1.8x with two replicas, >= 2.6x with three.",
)


@contextlib.contextmanager
def servers(count: int) -> Iterator[list[Any]]:
    """``count`` local servers of ``bench_service``, started in parallel."""
    from Xclient.server import LocalTritonServer

    fleet = [LocalTritonServer(model_repository=c.MODELS, models=[SERVICE_MODEL]) for _ in range(count)]
    try:
        with concurrent.futures.ThreadPoolExecutor(count) as pool:
            for started in [pool.submit(server.start) for server in fleet]:
                started.result()
        yield fleet
    finally:
        for server in fleet:
            server.stop()


def make_contenders(
    fleet: list[Any], requests: int, loop: asyncio.AbstractEventLoop, clients: list[Any]
) -> list[h.Contender]:
    """One contender per protocol and replica count: an asyncio client over the first N servers (made
    in ``loop``, added to ``clients``)."""
    from Xclient.client import AsyncioModelClient

    contenders = []
    for protocol in ("grpc", "http"):
        for n in REPLICAS:
            urls = [server.url(protocol) for server in fleet[:n]]
            url: str | list[str] = urls if n > 1 else urls[0]
            client = h.made_in_loop(loop, lambda url=url: AsyncioModelClient(url, SERVICE_MODEL))
            clients.append(client)

            def run(client: Any = client, n: int = n) -> float:
                return loop.run_until_complete(drive(lambda: client.infer_sample(c.SAMPLE), requests * n, CONCURRENCY))

            label = f"AsyncioModelClient, {n} URL" + ("s" if n > 1 else "")
            contenders.append(h.Contender(h.XCLIENT, label, protocol, run, "asyncio", {"replicas": n}))
    return contenders


def run(*, rounds: int, requests: int) -> h.Table:
    loop = asyncio.new_event_loop()
    clients: list[Any] = []
    try:
        with servers(max(REPLICAS)) as fleet:
            try:
                outcomes = h.interleave(make_contenders(fleet, requests, loop, clients), rounds)
            finally:
                for client in clients:
                    loop.run_until_complete(client.close())
    finally:
        loop.close()
    return report(outcomes, rounds, requests)


def report(outcomes: list[h.Outcome], rounds: int, requests: int) -> h.Table:
    table = h.Table.from_templates(TITLE, COLUMNS, NOTES, rounds=rounds, requests=requests)
    for protocol in ("grpc", "http"):
        one = h.find(outcomes, protocol=protocol, replicas=1)
        base = h.median(one.rounds) if one and not one.error else None
        measured = []
        verdicts: list[bool | None] = []
        for n in REPLICAS:
            outcome = h.find(outcomes, protocol=protocol, replicas=n)
            if outcome is None:
                continue
            rate = h.median(outcome.rounds) if not outcome.error else None
            ratio = h.ratio(rate, base)
            goal = GOALS.get(n)
            passed = None if goal is None or ratio is None else ratio >= goal
            if goal is not None:
                verdicts.append(False if outcome.error else passed)
                measured.append(f"{h.fmt_ratio(ratio)} with {n}")
            cells = {
                "replicas": str(n),
                "requests/s": h.fmt(rate, 1),
                "x one replica": h.fmt_ratio(ratio),
                "ideal": f"{n / SERVICE_TIME_S:,.0f}/s",
            }
            table.add_result(outcome, cells, passed, requests_per_s=rate, ratio_one_replica=ratio)
        overall = False if False in verdicts else (None if None in verdicts or not verdicts else True)
        table.targets.append(
            h.Target(
                f"fleet throughput, {protocol}",
                ">= 1.80x with 2 replicas, >= 2.60x with 3",
                ", ".join(measured),
                overall,
            )
        )
    return table
