"""Load: many concurrent requests on one client complete, a full queue fails cleanly, and afterwards the
process has exactly the descriptors and threads it had before (measured here, from /proc)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest

from Xclient.client import AsyncioModelClient, FuturesModelClient
from Xclient.exceptions import QueueFullError

from .leaks import Resources, assert_released


@pytest.fixture(scope="module")
def warm(triton_server) -> Iterator[None]:
    """Use each client once, so that what is made once per process (gRPC's and asyncio's machinery) is in
    the baseline of each test, not counted as its leak."""
    for url in (triton_server.http_url, triton_server.grpc_url):
        asyncio.run(infer_many(url, 3))
        with FuturesModelClient(url, "slow", max_workers=2) as client:
            client.infer_sample(delay_s=0.0).result()
    yield


async def infer_many(url: str, count: int) -> list[list[int]]:
    """``count`` concurrent requests on one client, each echoing its own number back."""
    async with AsyncioModelClient(url, "identity") as client:
        results = await asyncio.gather(*(client.infer_sample(INT64=[i, -i]) for i in range(count)))
    return [result["OUT_INT64"].tolist() for result in results]


def test_a_thousand_concurrent_asyncio_requests_on_one_client_complete_and_leave_nothing_open(
    warm, triton_server, protocol
):
    baseline = Resources.now()
    results = asyncio.run(infer_many(triton_server.url(protocol), 1000))
    assert results == [[i, -i] for i in range(1000)]  # each request got its own answer
    assert_released(baseline)


def test_a_full_futures_queue_refuses_at_once_the_accepted_calls_complete_and_nothing_stays_open(
    warm, triton_server, protocol
):
    baseline = Resources.now()
    client = FuturesModelClient(triton_server.url(protocol), "slow", max_workers=2, max_queue_size=4, non_blocking=True)
    accepted, refused = {}, 0
    started = time.monotonic()
    for i in range(200):  # far faster than 2 workers can serve 0.1 s calls
        try:
            accepted[i] = client.infer_sample(delay_s=0.1, x=[float(i)])
        except QueueFullError as e:
            assert e.model == "slow" and "queue is full" in str(e)
            refused += 1
    assert time.monotonic() - started < 5.0  # a refusal does not wait (200 calls would take 10 s to serve)
    assert refused > 150 and len(accepted) + refused == 200
    assert {i: f.result()["y"].tolist() for i, f in accepted.items()} == {i: [float(i)] for i in accepted}
    assert client.infer_sample(delay_s=0.0, x=[7.0]).result()["y"].tolist() == [7.0]  # the queue has drained
    client.close()
    assert_released(baseline)
