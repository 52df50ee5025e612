"""Several Triton replicas behind one client: balancing, failover, health, consistency, streams.

Three LocalTritonServers of their own (``identity``, ``slow``, ``stream`` only), started once for the
module and reused; a test that kills one starts it again on the same ports before it ends. What each
server served is read from Triton's own statistics, not only from the client's counters.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import pathlib
import socket
import threading
import time
from collections.abc import Iterator

import numpy as np
import pytest

from Xclient.client import (
    AsyncioDecoupledModelClient,
    AsyncioModelClient,
    AsyncioServerClient,
    DecoupledModelClient,
    FuturesModelClient,
    IncompatibleModelError,
    ModelClient,
    ReplicaState,
    ServerClient,
    ServerUnavailableError,
    XclientValueError,
)
from Xclient.client._transport import GrpcTransport, HttpTransport
from Xclient.server import LocalTritonServer

from .leaks import Resources, assert_released
from .test_threads import run_pattern

MODELS = pathlib.Path(__file__).parent / "models"
FLEET_MODELS = ["identity", "slow", "stream"]
SAMPLE = np.array([1.0, 2.0], dtype=np.float32)


@pytest.fixture(scope="module")
def servers() -> Iterator[list[LocalTritonServer]]:
    """Three servers, started in parallel (each takes seconds on two cores)."""
    fleet = [LocalTritonServer(model_repository=MODELS, models=FLEET_MODELS) for _ in range(3)]
    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        started = [pool.submit(server.start) for server in fleet]
    try:
        for future in started:
            future.result()
        yield fleet
    finally:
        for server in fleet:
            server.stop()


def served(server: LocalTritonServer, model: str = "identity") -> int:
    """How many inferences of ``model`` ``server`` ran, by its own statistics."""
    with ServerClient(server.http_url) as client:
        (stats,) = client.statistics(model)
    return int(stats["inference_count"])


def dead_url(protocol: str) -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"{protocol}://127.0.0.1:{s.getsockname()[1]}"


def state_of(client: ModelClient | FuturesModelClient, url: str) -> ReplicaState:
    return next(r for r in client.replicas if r.url == url)


# -- addresses ---------------------------------------------------------------------------------------


def test_one_url_keeps_the_single_url_transport_and_shows_one_replica(servers):
    url = servers[0].grpc_url
    with ModelClient(url, "identity") as client:
        client.infer_sample(FP32=SAMPLE)
        assert type(client._transport()) is GrpcTransport  # no replica set on the hot path
        assert client.url == url and client.urls == (url,)
        assert client.replicas == (ReplicaState(url, "up", 0, None, 0, None),)


def test_urls_of_two_protocols_are_refused_naming_both():
    with pytest.raises(XclientValueError, match=r"grpc://a:8001.*HTTP.*'http://b:8000'"):
        ModelClient(["grpc://a:8001", "http://b:8000"], "identity")
    with pytest.raises(XclientValueError, match="given twice"):
        ModelClient(["a:8001", "grpc://a"], "identity")
    with pytest.raises(XclientValueError, match="non-empty list"):
        ModelClient([], "identity")


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_requests_split_between_two_replicas_by_tritons_own_statistics(servers, protocol):
    a, b = servers[0], servers[1]
    urls = [a.url(protocol), b.url(protocol)]
    for url in urls:  # a fresh server's first requests are slow: least outstanding would rightly avoid it
        with ModelClient(url, "identity") as warm:
            for _ in range(20):
                warm.infer_sample(FP32=SAMPLE)
    before = [served(a), served(b)]
    with FuturesModelClient(urls, "identity", max_workers=8) as client:
        assert client.url == urls[0] and client.urls == tuple(urls)
        futures = [client.infer_sample(FP32=SAMPLE) for _ in range(200)]
        assert all(f.result()["OUT_FP32"].tolist() == [1.0, 2.0] for f in futures)
        assert [r.state for r in client.replicas] == ["up", "up"]
        assert all(r.latency_ms is not None and r.outstanding == 0 for r in client.replicas)
    counts = [served(a) - before[0], served(b) - before[1]]
    assert sum(counts) == 200, counts
    assert min(counts) >= 50, counts  # least outstanding of two random choices: about even


def test_a_busy_replica_gets_fewer_requests(servers):
    """Server b's two ``slow`` instances are kept busy by another client: requests queue there, so
    its outstanding count stays higher and the fleet sends most requests to a."""
    a, b = servers[0], servers[1]
    before = [served(a, "slow"), served(b, "slow")]
    stop = threading.Event()
    busy_calls = [0]

    def keep_busy() -> None:
        with ModelClient(b.grpc_url, "slow") as busy:
            while not stop.is_set():
                busy.infer_sample(delay_s=[0.5])
                busy_calls[0] += 1

    workers = [threading.Thread(target=keep_busy) for _ in range(3)]
    for worker in workers:
        worker.start()
    try:
        with FuturesModelClient([a.grpc_url, b.grpc_url], "slow", max_workers=6) as client:
            futures = [client.infer_sample(delay_s=[0.02]) for _ in range(60)]
            for future in futures:
                future.result()
    finally:
        stop.set()
        for worker in workers:
            worker.join()
    on_a = served(a, "slow") - before[0]
    on_b = served(b, "slow") - before[1] - busy_calls[0]
    assert on_a + on_b == 60, (on_a, on_b)
    assert on_a > 2 * on_b, (on_a, on_b)


# -- failover ------------------------------------------------------------------------------------


def test_every_replica_down_is_one_error_listing_each(servers):
    dead = [dead_url("grpc"), dead_url("grpc")]
    with ModelClient(dead, "identity", model_config=None) as client:
        with pytest.raises(ServerUnavailableError) as caught:
            client.infer_sample(FP32=SAMPLE)
        assert "Every replica failed" in caught.value.message
        for url in dead:
            assert url in caught.value.message
        assert caught.value.retryable  # nothing reached a server: the user's retries may send it again
        assert [r.state for r in client.replicas] == ["down", "down"]
        assert all(r.last_error for r in client.replicas)


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_a_refused_replica_is_failed_over_at_once_and_taken_down(servers, protocol):
    dead, live = dead_url(protocol), servers[0].url(protocol)
    with ModelClient([dead, live], "identity") as client:
        for _ in range(20):
            assert client.infer_sample(BYTES="你好")["OUT_BYTES"].tolist() == ["你好".encode()]
        assert state_of(client, dead).state in ("down", "open")
        assert state_of(client, live).state == "up"


def _run_sync(urls: list[str], n: int, midway: threading.Event) -> int:
    with ModelClient(urls, "identity", retry_unsafe=True) as client:
        for i in range(n):
            assert client.infer_sample(INT32=np.array([i], dtype=np.int32))["OUT_INT32"].tolist() == [i]
            if i == n // 4:
                midway.set()
    return n


def _run_futures(urls: list[str], n: int) -> int:
    with FuturesModelClient(urls, "identity", max_workers=8, retry_unsafe=True) as client:
        futures = [client.infer_sample(INT32=np.array([i], dtype=np.int32)) for i in range(n)]
        return sum(f.result()["OUT_INT32"].tolist() == [i] for i, f in enumerate(futures))


def _run_asyncio(urls: list[str], n: int) -> int:
    async def main() -> int:
        async with AsyncioModelClient(urls, "identity", retry_unsafe=True) as client:
            limit = asyncio.Semaphore(8)

            async def one(i: int) -> bool:
                async with limit:
                    out = await client.infer_sample(INT32=np.array([i], dtype=np.int32))
                return bool(out["OUT_INT32"].tolist() == [i])

            return sum(await asyncio.gather(*(one(i) for i in range(n))))

    return asyncio.run(main())


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_a_replica_killed_mid_run_fails_no_call_and_comes_back_when_restarted(servers, protocol):
    """2,000 calls each from the sync, futures and asyncio clients, at once, over three replicas; one
    is killed (SIGKILL) a quarter of the way through the sync client's calls. ``retry_unsafe=True``
    (identity is idempotent) also fails over the calls the kill caught in flight. Then the killed
    server is started again on its ports, and comes back into rotation."""
    urls = [s.url(protocol) for s in servers]
    victim = servers[2]
    midway = threading.Event()
    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        runs = [
            pool.submit(_run_sync, urls, 2000, midway),
            pool.submit(_run_futures, urls, 2000),
            pool.submit(_run_asyncio, urls, 2000),
        ]
        assert midway.wait(120)
        victim.kill()
        assert [run.result() for run in runs] == [2000, 2000, 2000]
    with ModelClient(urls, "identity") as client:
        for _ in range(30):  # the victim is still down: it is found so, and taken out
            client.infer_sample(FP32=SAMPLE)
        assert state_of(client, victim.url(protocol)).state in ("down", "open")
        victim.start()  # the same ports; its statistics start at zero
        deadline = time.monotonic() + 60
        while served(victim) == 0 and time.monotonic() < deadline:
            for _ in range(20):
                client.infer_sample(FP32=SAMPLE)
        assert served(victim) > 0  # it came back at its next readiness probe
        assert [r.state for r in client.replicas] == ["up", "up", "up"]


# -- streams ----------------------------------------------------------------------------------------


def test_a_stream_fails_over_before_its_first_response(servers):
    dead, live = dead_url("grpc"), servers[0].grpc_url
    with DecoupledModelClient([dead, live], "stream") as client:
        for _ in range(6):
            assert [r["i"].tolist() for r in client.infer_sample(n=[3])] == [[0], [1], [2]]
        assert state_of(client, dead).state in ("down", "open")

    async def main() -> list[list[int]]:
        async with AsyncioDecoupledModelClient([dead, live], "stream") as aclient:
            got = []
            for _ in range(6):
                got.append([r["i"].tolist()[0] async for r in aclient.infer_sample(n=[2])])
            return got

    assert asyncio.run(main()) == [[0, 1]] * 6


def test_a_stream_does_not_fail_over_after_its_first_response(servers):
    a, b = servers[0], servers[1]
    with DecoupledModelClient([a.grpc_url, b.grpc_url], "stream", inference_timeout_s=20) as client:
        stream = client.infer_sample(n=[5], delay_s=[0.5])
        first = next(stream)
        assert first["text"].tolist() == ["第0段".encode()]
        (busy,) = [r for r in client.replicas if r.outstanding == 1]
        victim = a if busy.url == a.grpc_url else b
        victim.kill()
        try:
            with pytest.raises(ServerUnavailableError):
                list(stream)  # never resent elsewhere: responses would repeat
        finally:
            victim.start()
        assert [r["i"].tolist() for r in client.infer_sample(n=[2])] == [[0], [1]]


# -- consistency ----------------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_replicas_with_different_configs_are_an_error_naming_both(servers, protocol):
    a, b = servers[0], servers[1]
    with ServerClient(b.http_url) as manager:
        original = dict(manager.model_config("identity").raw)
        manager.load_model("identity", {**original, "max_batch_size": 4})
        try:
            client = ModelClient([a.url(protocol), b.url(protocol)], "identity")
            with client, pytest.raises(IncompatibleModelError) as caught:
                for _ in range(60):
                    client.infer_sample(FP32=SAMPLE)
        finally:
            manager.load_model("identity", original)
    message = caught.value.message
    assert a.url(protocol) in message and b.url(protocol) in message
    assert "max_batch_size" in message and "8" in message and "4" in message


# -- dns+, server clients ---------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_a_dns_url_serves_from_every_address_of_the_name(servers, protocol):
    """``localhost`` resolves to 127.0.0.1 (the server) and maybe ::1 (nothing listens there): calls succeed."""
    port = servers[0].http_port if protocol == "http" else servers[0].grpc_port
    url = f"dns+{protocol}://localhost:{port}"
    with ModelClient(url, "identity") as client:
        assert client.url == url and client.urls == (url,)
        for _ in range(10):
            assert client.infer_sample(BYTES="北京")["OUT_BYTES"].tolist() == ["北京".encode()]
        addresses = {r.url for r in client.replicas}
        assert f"{protocol}://127.0.0.1:{port}" in addresses
        assert state_of(client, f"{protocol}://127.0.0.1:{port}").state == "up"


def test_server_clients_take_several_urls(servers):
    urls = [servers[0].grpc_url, servers[1].grpc_url]
    with ServerClient(urls) as client:
        assert client.is_ready()
        assert {m.name for m in client.models()} == set(FLEET_MODELS)
        assert len(client.replicas) == 2

    async def main() -> bool:
        async with AsyncioServerClient([dead_url("grpc"), servers[0].grpc_url]) as aclient:
            return await aclient.is_model_ready("identity")

    assert asyncio.run(main())


# -- resources -----------------------------------------------------------------------------------


def test_descriptors_and_threads_are_back_to_baseline_after_fleet_clients(servers):
    urls = {p: [s.url(p) for s in servers[:2]] for p in ("http", "grpc")}
    with ModelClient(urls["grpc"], "identity") as warm:  # gRPC's own threads, started once per process
        warm.infer_sample(FP32=SAMPLE)
    baseline = Resources.now()
    for protocol in ("http", "grpc"):
        with ModelClient([dead_url(protocol), *urls[protocol]], "identity") as client:
            for _ in range(10):
                client.infer_sample(FP32=SAMPLE)
        with contextlib.closing(FuturesModelClient(urls[protocol], "identity")) as futures:
            futures.infer_sample(FP32=SAMPLE).result()
    assert_released(baseline)


FLEET_AT_EXIT = """
    import asyncio, sys, threading
    from Xclient.client import AsyncioModelClient, FuturesModelClient, ModelClient

    urls = sys.argv[1:]
    def one():
        client = ModelClient(urls, "identity")  # never closed, as scripts do
        client.infer_sample(FP32=[1.0])
    threads = [threading.Thread(target=one) for _ in range(8)]
    for t in threads: t.start()
    for t in threads: t.join()
    futures = FuturesModelClient(urls, "identity", max_workers=4)
    [f.result() for f in [futures.infer_sample(FP32=[2.0]) for _ in range(20)]]
    for _ in range(3):  # several event loops, one client each
        async def main():
            client = AsyncioModelClient(urls, "identity")
            await client.infer_sample(FP32=[3.0])
            await client.close()
        asyncio.run(main())
    print("ok")
"""


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_unclosed_fleet_clients_in_threads_and_loops_let_the_interpreter_exit(servers, protocol):
    urls = [s.url(protocol) for s in servers[:2]]
    assert run_pattern(FLEET_AT_EXIT, *urls, timeout_s=120).strip() == "ok"


def test_http_replicas_are_single_url_transports(servers):
    """Each replica is the single-URL transport itself (where per-request hooks live)."""
    with ModelClient([s.http_url for s in servers[:2]], "identity") as client:
        client.infer_sample(FP32=SAMPLE)
        fleet = client._transport().fleet  # type: ignore[attr-defined]
        assert all(type(t) is HttpTransport for t in fleet.transports())


@pytest.mark.parametrize("protocol", ["http"])  # the fixture silent_url's protocol
def test_a_replica_that_keeps_timing_out_opens_its_circuit_breaker(servers, silent_url):
    """Timeouts are not failed over (the request may be running there), but after five in a row the
    replica's breaker opens and it gets no request until its cool-down ends."""
    from Xclient.exceptions import XclientTimeoutError

    live, silent = servers[0].http_url, silent_url  # silent: accepts connections, never answers
    with ModelClient(live, "identity") as one:
        config = one.model_config
    with ModelClient([silent, live], "identity", model_config=config, inference_timeout_s=0.2) as client:
        timeouts = 0
        for _ in range(60):
            try:
                client.infer_sample(FP32=SAMPLE)
            except XclientTimeoutError:
                timeouts += 1
            if state_of(client, silent).state == "open":
                break
        assert timeouts == 5 and state_of(client, silent).state == "open"
        assert state_of(client, silent).failures == 5 and "timed out" in str(state_of(client, silent).last_error)
        for _ in range(30):  # all to the live one now
            client.infer_sample(FP32=SAMPLE)


def test_fleet_transports_say_which_replica_served_a_call(servers):
    import types

    urls = [dead_url("grpc"), servers[0].grpc_url]
    with ModelClient(urls, "identity") as client:
        transport = client._transport()
        info = types.SimpleNamespace(url=None)
        op = transport.calls.server_ready(timeout_s=5.0, headers=None)
        assert transport.run(op, 5.0, info) is True
        assert info.url == servers[0].grpc_url  # the dead one failed first, or was never tried

    async def main() -> str:
        async with AsyncioModelClient(urls, "identity") as aclient:
            atransport = aclient._transport()
            ainfo = types.SimpleNamespace(url=None)
            await atransport.run(atransport.calls.server_ready(timeout_s=5.0, headers=None), 5.0, ainfo)
            return str(ainfo.url)

    assert asyncio.run(main()) == servers[0].grpc_url


def test_loading_and_unloading_a_model_goes_to_every_replica(servers):
    a, b = servers[0], servers[1]
    with ServerClient([a.grpc_url, b.grpc_url]) as fleet:
        fleet.unload_model("slow")
        try:
            assert not ready(a, "slow") and not ready(b, "slow")
        finally:
            fleet.load_model("slow")
    assert ready(a, "slow") and ready(b, "slow")


def ready(server: LocalTritonServer, model: str) -> bool:
    with ServerClient(server.http_url) as client:
        return client.is_model_ready(model)
