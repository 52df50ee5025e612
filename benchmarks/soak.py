"""The soak (issue 8): a minute of mixed requests and streams through Xclient, watching for growth.

Workers, all at once, against the local server: blocking ``ModelClient`` loops (HTTP and gRPC), a
``DecoupledModelClient`` streaming 100 responses at a time, ``FuturesModelClient`` bursts, one
event loop running ``AsyncioModelClient`` tasks (both protocols) and ``AsyncioDecoupledModelClient``
streams, and a churn worker that makes a new client for every call and closes it. Resident memory,
threads and open file descriptors are sampled after a warm-up (the start) and at the end, under the
same load; the soak passes when memory grew by no more than ``RSS_TOLERANCE_MB``.
"""

from __future__ import annotations

import asyncio
import collections
import threading
import time
from collections.abc import Callable
from typing import Any

from . import _clients as c
from . import _harness as h

#: Allowed RSS growth between the start and the end of the soak (allocator arenas and caches
#: settle within the warm-up; a leak of a few hundred bytes per call shows as several MB in a minute).
RSS_TOLERANCE_MB = 10.0
FUTURES_BURST = 16
CHURN_PAUSE_S = 0.2


class Workload:
    """The soak's workers and their counts of calls and errors."""

    def __init__(self, urls: dict[str, str]) -> None:
        self.urls = urls
        self.stop = threading.Event()
        self.calls: collections.Counter[str] = collections.Counter()
        self.errors: collections.Counter[str] = collections.Counter()
        self.first_errors: list[str] = []
        self._lock = threading.Lock()

    def record(self, worker: str, error: BaseException | None = None) -> None:
        """Count one call of ``worker``, or its error."""
        with self._lock:
            if error is None:
                self.calls[worker] += 1
                return
            self.errors[worker] += 1
            if len(self.first_errors) < 5:
                self.first_errors.append(f"{worker}: {h.describe_error(error)}")

    def loop(self, worker: str, call: Callable[[], Any], pause_s: float = 0.0) -> None:
        """Call ``call`` until the soak stops, counting calls and errors."""
        while not self.stop.is_set():
            try:
                call()
            except Exception as e:  # counted and reported; the soak goes on
                self.record(worker, e)
            else:
                self.record(worker)
            if pause_s:
                self.stop.wait(pause_s)

    def threads(self) -> list[threading.Thread]:
        """One thread per worker (not started)."""
        from Xclient.client import DecoupledModelClient, FuturesModelClient, ModelClient

        workers: list[tuple[str, Any, Callable[[], Any]]] = []  # (name, client to close, one call)
        for protocol, url in self.urls.items():
            unary = ModelClient(url, c.ECHO_MODEL)
            workers.append((f"ModelClient {protocol}", unary, lambda client=unary: client.infer_sample(c.SAMPLE)))
        streams = DecoupledModelClient(self.urls["grpc"], c.STREAM_MODEL)
        workers.append(("DecoupledModelClient", streams, lambda: list(streams.infer_sample(c.STREAM_SAMPLE))))
        futures = FuturesModelClient(self.urls["grpc"], c.ECHO_MODEL, max_workers=4)

        def burst() -> None:
            for future in [futures.infer_sample(c.SAMPLE) for _ in range(FUTURES_BURST)]:
                future.result()

        workers.append((f"FuturesModelClient (bursts of {FUTURES_BURST})", futures, burst))
        threads = [
            threading.Thread(target=self._serve, args=worker, name=f"soak-{worker[0]}", daemon=True)
            for worker in workers
        ]
        threads.append(
            threading.Thread(target=self.loop, args=("churn (new clients each time)", self._churn_once, CHURN_PAUSE_S))
        )
        threads.append(threading.Thread(target=lambda: asyncio.run(self._asyncio()), name="soak-asyncio"))
        return threads

    def _serve(self, worker: str, client: Any, call: Callable[[], Any]) -> None:
        try:
            self.loop(worker, call)
        finally:
            client.close()

    def _churn_once(self) -> None:
        """A new client per call, closed at once: what a per-request client leaks shows here."""
        from Xclient.client import DecoupledModelClient, ModelClient

        for url in self.urls.values():
            with ModelClient(url, c.ECHO_MODEL) as client:
                client.infer_sample(c.SAMPLE)
        with DecoupledModelClient(self.urls["grpc"], c.STREAM_MODEL) as streams:
            for _ in streams.infer_sample(c.STREAM_SAMPLE):
                pass

    async def _asyncio(self) -> None:
        """Four tasks per protocol on AsyncioModelClient, two streaming tasks, one event loop."""
        from Xclient.client import AsyncioDecoupledModelClient, AsyncioModelClient

        unary = {protocol: AsyncioModelClient(url, c.ECHO_MODEL) for protocol, url in self.urls.items()}
        streams = AsyncioDecoupledModelClient(self.urls["grpc"], c.STREAM_MODEL)

        async def stream_once() -> None:
            async for _ in streams.infer_sample(c.STREAM_SAMPLE):
                pass

        async def task(worker: str, call: Callable[[], Any]) -> None:
            while not self.stop.is_set():
                try:
                    await call()
                except Exception as e:  # counted like the threads' errors
                    self.record(worker, e)
                else:
                    self.record(worker)

        tasks = [
            task(f"AsyncioModelClient {protocol}", lambda client=client: client.infer_sample(c.SAMPLE))
            for protocol, client in unary.items()
            for _ in range(4)
        ]
        tasks += [task("AsyncioDecoupledModelClient", stream_once) for _ in range(2)]
        try:
            await asyncio.gather(*tasks)
        finally:
            for client in [*unary.values(), streams]:
                await client.close()


def _sample() -> dict[str, float]:
    return {"rss_mb": h.rss_mb(), "threads": threading.active_count(), "fds": h.open_fds()}


def run(urls: dict[str, str], *, seconds: float, warmup_s: float) -> h.Table:
    before = _sample()
    workload = Workload(urls)
    threads = workload.threads()
    for thread in threads:
        thread.start()
    time.sleep(warmup_s)
    start_calls = sum(workload.calls.values())
    start, samples = _sample(), []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        time.sleep(min(5.0, max(deadline - time.monotonic(), 0.0)))
        samples.append(_sample())
    end = samples[-1] if samples else _sample()
    calls = sum(workload.calls.values()) - start_calls
    workload.stop.set()
    for thread in threads:
        thread.join(timeout=60)
    after = _sample()
    return report(workload, before, start, end, after, samples, seconds, warmup_s, calls)


def report(
    workload: Workload,
    before: dict[str, float],
    start: dict[str, float],
    end: dict[str, float],
    after: dict[str, float],
    samples: list[dict[str, float]],
    seconds: float,
    warmup_s: float,
    calls: int,
) -> h.Table:
    growth = end["rss_mb"] - start["rss_mb"]
    passed = growth <= RSS_TOLERANCE_MB and not workload.errors
    table = h.Table(
        f"Soak: {seconds:g} s of mixed requests and streams through Xclient",
        ["measure", "before", "start (after warm-up)", "end", "end - start", "after close"],
        notes=[
            f"Warm-up {warmup_s:g} s (not counted), then {seconds:g} s measured; samples every 5 s. "
            f"{calls:,} calls in the measured part ({calls / seconds:,.0f}/s); calls and streams per worker: "
            + ", ".join(f"{k} {v:,}" for k, v in sorted(workload.calls.items()))
            + ".",
            f"Errors: {sum(workload.errors.values())}"
            + (f" ({'; '.join(workload.first_errors)})" if workload.errors else "")
            + ".",
            "Open file descriptors after close: the process keeps the pollers gRPC and gevent make on first "
            "use (an epoll and an eventfd each); clients made and closed in a loop leave none behind (the churn "
            "worker).",
            f"RSS over the measured part: min {min(s['rss_mb'] for s in samples):.1f} MB, max "
            f"{max(s['rss_mb'] for s in samples):.1f} MB. Tolerance: growth <= {RSS_TOLERANCE_MB:g} MB "
            "and no error.",
        ],
    )
    for name, unit, digits in (
        ("rss_mb", "RSS (MB)", 1),
        ("threads", "threads", 0),
        ("fds", "open file descriptors", 0),
    ):
        table.add(
            {
                "measure": unit,
                "before": h.fmt(before[name], digits),
                "start (after warm-up)": h.fmt(start[name], digits),
                "end": h.fmt(end[name], digits),
                "end - start": h.fmt(end[name] - start[name], digits),
                "after close": h.fmt(after[name], digits),
            },
            measure=name,
            before=before[name],
            start=start[name],
            end=end[name],
            after=after[name],
        )
    table.data.append({"samples": samples, "calls": dict(workload.calls), "errors": dict(workload.errors)})
    table.targets.append(
        h.Target(
            "soak memory growth",
            f"<= {RSS_TOLERANCE_MB:g} MB, no errors",
            f"{growth:+.1f} MB, {sum(workload.errors.values())} errors",
            passed,
        )
    )
    return table
