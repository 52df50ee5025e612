"""Which HTTP library carries Xclient's KServe v2 REST coding: one small infer (``bench_echo``) per library.

Sync: p50/p99 of back-to-back requests on one client (raw ``tritonclient.http`` is the baseline).
Asyncio: requests per second at concurrency 1, 8 and 32 on one client (raw ``tritonclient.http.aio``
is the baseline). Every contender sends the same bytes (JSON header + the binary tensor extension).

Run: ``python -m benchmarks.http_libraries http://127.0.0.1:8000`` against a server serving
``benchmarks/models``.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import statistics
import sys
import time
import urllib.parse
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np

TEXT = b"The quick brown fox jumps over the lazy dog."
PATH = "/v2/models/bench_echo/infer"


def body() -> tuple[bytes, dict[str, str]]:
    from tritonclient.utils import serialize_byte_tensor

    raw = serialize_byte_tensor(np.array([[TEXT]], dtype=object)).item()
    header = json.dumps(
        {
            "inputs": [
                {"name": "TEXT", "shape": [1, 1], "datatype": "BYTES", "parameters": {"binary_data_size": len(raw)}}
            ],
            "parameters": {"binary_data_output": True},
        }
    ).encode()
    return header + raw, {
        "Inference-Header-Content-Length": str(len(header)),
        "Content-Type": "application/octet-stream",
    }


def check(status: int, data: bytes, headers: Any) -> None:
    assert status == 200, data
    length = int(headers["Inference-Header-Content-Length"])
    assert data[length + 4 :] == TEXT, data


def sync_contenders(url: str) -> dict[str, Callable[[], None]]:
    import httpx
    import tritonclient.http as th
    import urllib3

    parts = urllib.parse.urlsplit(url)
    data, headers = body()
    raw = th.InferenceServerClient(parts.netloc)

    def raw_call() -> None:
        tensor = th.InferInput("TEXT", [1, 1], "BYTES")
        tensor.set_data_from_numpy(np.array([[TEXT]], dtype=object))
        assert raw.infer("bench_echo", [tensor]).as_numpy("ECHO")[0, 0] == TEXT

    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)

    def stdlib_call() -> None:
        conn.request("POST", PATH, data, headers)
        response = conn.getresponse()
        check(response.status, response.read(), response.headers)

    pool = urllib3.HTTPConnectionPool(parts.hostname, parts.port, maxsize=4, timeout=10, retries=False)

    def urllib3_call() -> None:
        response = pool.urlopen("POST", PATH, body=data, headers=headers)
        check(response.status, response.data, response.headers)

    client = httpx.Client(base_url=url, timeout=10)

    def httpx_call() -> None:
        response = client.post(PATH, content=data, headers=headers)
        check(response.status_code, response.content, response.headers)

    from Xclient.client import ModelClient

    xclient = ModelClient(url, "bench_echo")
    sample = np.array([TEXT], dtype=object)

    def xclient_call() -> None:
        assert xclient.infer_sample(sample)["ECHO"][0] == TEXT

    return {
        "tritonclient.http (raw)": raw_call,
        "http.client": stdlib_call,
        "urllib3": urllib3_call,
        "httpx": httpx_call,
        "Xclient ModelClient": xclient_call,
    }


def p50_p99(call: Callable[[], None], count: int) -> tuple[float, float]:
    for _ in range(50):
        call()
    samples = []
    for _ in range(count):
        start = time.perf_counter()
        call()
        samples.append(time.perf_counter() - start)
    samples.sort()
    return statistics.median(samples) * 1e6, samples[int(len(samples) * 0.99)] * 1e6


async def async_contenders(url: str) -> dict[str, Callable[[], Awaitable[None]]]:
    import aiohttp
    import httpx
    import tritonclient.http as th
    import tritonclient.http.aio as ta

    parts = urllib.parse.urlsplit(url)
    data, headers = body()
    raw = ta.InferenceServerClient(parts.netloc)

    async def raw_call() -> None:
        tensor = th.InferInput("TEXT", [1, 1], "BYTES")
        tensor.set_data_from_numpy(np.array([[TEXT]], dtype=object))
        assert (await raw.infer("bench_echo", [tensor])).as_numpy("ECHO")[0, 0] == TEXT

    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))

    async def aiohttp_call() -> None:
        async with session.post(url + PATH, data=data, headers=headers) as response:
            check(response.status, await response.read(), response.headers)

    client = httpx.AsyncClient(base_url=url, timeout=10, limits=httpx.Limits(max_connections=64))

    async def httpx_call() -> None:
        response = await client.post(PATH, content=data, headers=headers)
        check(response.status_code, response.content, response.headers)

    idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    head = (
        f"POST {PATH} HTTP/1.1\r\nHost: {parts.netloc}\r\nContent-Length: {len(data)}\r\n"
        + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        + "\r\n"
    ).encode()

    async def streams_call() -> None:
        reader, writer = idle.pop() if idle else await asyncio.open_connection(parts.hostname, parts.port)
        writer.write(head + data)
        lines = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
        fields = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
        content = await reader.readexactly(int(fields["content-length"]))
        length = fields["inference-header-content-length"]
        check(int(lines[0].split()[1]), content, {"Inference-Header-Content-Length": length})
        idle.append((reader, writer))

    from Xclient.client import AsyncioModelClient

    xclient = AsyncioModelClient(url, "bench_echo")
    sample = np.array([TEXT], dtype=object)

    async def xclient_call() -> None:
        assert (await xclient.infer_sample(sample))["ECHO"][0] == TEXT

    contenders = {
        "tritonclient.http.aio (raw)": raw_call,
        "aiohttp": aiohttp_call,
        "httpx.AsyncClient": httpx_call,
        "asyncio streams": streams_call,
        "Xclient AsyncioModelClient": xclient_call,
    }
    contenders["_close"] = lambda: _close(raw, session, client, xclient)  # type: ignore[assignment]
    return contenders


async def _close(*clients: Any) -> None:
    for client in clients:
        await (client.aclose() if hasattr(client, "aclose") else client.close())


async def throughput(call: Callable[[], Awaitable[None]], concurrency: int, seconds: float) -> float:
    done = 0
    end = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal done
        while time.perf_counter() < end:
            await call()
            done += 1

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return done / seconds


async def run_async(url: str, seconds: float) -> None:
    contenders = await async_contenders(url)
    close = contenders.pop("_close")
    for concurrency in (1, 8, 32):
        for call in contenders.values():
            await throughput(call, concurrency, 0.3)  # warm-up: connections opened
        results = {name: await throughput(call, concurrency, seconds) for name, call in contenders.items()}
        base = next(iter(results.values()))
        for name, rps in results.items():
            print(f"asyncio c={concurrency:<3} {name:28} {rps:8.0f} req/s  {rps / base:5.2f}x raw")
    await close()


def main() -> None:
    url = sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:8000"
    count = int(sys.argv[2]) if len(sys.argv) > 2 else 2000
    rounds = []
    for _ in range(3):  # interleaved rounds, so a noisy neighbour hits every contender
        rounds.append({name: p50_p99(call, count // 3) for name, call in sync_contenders(url).items()})
    for name in rounds[0]:
        p50 = statistics.median(r[name][0] for r in rounds)
        base = statistics.median(r["tritonclient.http (raw)"][0] for r in rounds)
        print(f"sync {name:28} p50 {p50:7.0f} us  {p50 / base:5.2f}x raw")
    asyncio.run(run_async(url, 2.0))


if __name__ == "__main__":
    main()
