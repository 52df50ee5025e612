"""Group 7: what ``xclient gateway`` adds, against Xclient's own asyncio path on the same model, in one run.

Both sides stream the same chat from the ``Qwen2-0.5B-Instruct`` stand-in over gRPC (Qwen2's template,
``max_tokens`` 32). Directly: the LLM engine that ChatMetaLM and the gateway share (``arun`` on
``AsyncioDecoupledModelClient``), in this process, without LangChain's per-chunk cost. Through the gateway:
``python -m Xclient gateway`` as its own process on a loopback port, read as server-sent events by a
minimal HTTP/1.1 reader on asyncio streams (the gateway's own added time: the target), and by ``httpx``
(what a Python client such as the ``openai`` SDK adds on top, for information). At concurrency 1 it
measures the time to the first text and to the end of each request; at concurrency 32, requests per second.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from typing import Any

from . import _clients as c
from . import _harness as h

#: Goals: at most this much added per request at concurrency 1, at least this share of direct throughput at 32.
MAX_ADDED_S = 0.001
MIN_THROUGHPUT_RATIO = 0.9
CONCURRENCY = 32
MAX_TOKENS = 32
QUESTION = "请用中文详细地介绍一下你自己，以及你能做些什么事情。"
DIRECT, GATEWAY, GATEWAY_HTTPX = "engine arun (direct)", "gateway, raw SSE reader", "gateway, httpx"

TITLE = "7. Gateway: xclient gateway against Xclient's asyncio path (streamed chat, gRPC)"
COLUMNS = [
    "client",
    "concurrency",
    "first text p50 (ms)",
    "request p50 (ms)",
    "requests/s",
    "added first text (ms)",
    "added per request (ms)",
    "x direct throughput",
    "target",
]
NOTES = (
    "{rounds} rounds after a warm-up round, interleaved; concurrency 1: {requests} requests one after the other "
    "per round; concurrency 32: {burst} requests, 32 in flight. Each request streams the stand-in's answer, cut at "
    "max_tokens 32, with Qwen2's template.",
    "direct: the LLM engine's arun (what ChatMetaLM.astream and the gateway run) in this process. gateway: python "
    "-m Xclient gateway in its own process; raw SSE reader: keep-alive asyncio streams, chunked events read as "
    "they come (one connection per request in flight); httpx: one AsyncClient, aiter_lines. The targets are "
    "checked on the raw reader's rows (the gateway's own cost); httpx's rows add a Python client's.",
    "Goals: at most 1 ms added per request at concurrency 1 (p50 against p50), at least 0.9x the direct "
    "throughput at concurrency 32.",
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def gateway_process(grpc_url: str) -> Iterator[str]:
    """The gateway in front of ``grpc_url``; yields its /v1 URL."""
    import httpx

    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("XCLIENT_")}
    command = [sys.executable, "-m", "Xclient", "gateway", "--url", grpc_url, "--port", str(port)]
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen([*command, "--log-level", "warning"], stdout=log, stderr=log, env=env)
        try:
            deadline = time.monotonic() + 60
            while True:
                with contextlib.suppress(httpx.HTTPError):
                    httpx.get(f"http://127.0.0.1:{port}/health", timeout=2)
                    break
                if process.poll() is not None or time.monotonic() > deadline:
                    log.seek(0)
                    raise RuntimeError(f"the gateway did not start: {log.read().decode(errors='replace')[-2000:]}")
                time.sleep(0.1)
            yield f"http://127.0.0.1:{port}/v1"
        finally:
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


class RawSse:
    """A minimal HTTP/1.1 client for the gateway's event streams: keep-alive connections (one per request in
    flight), the request written in one piece, the chunked answer read event by event."""

    def __init__(self, v1: str, body: bytes) -> None:
        address = v1.removeprefix("http://").split("/", 1)[0]
        self._host, port = address.rsplit(":", 1)
        self._port = int(port)
        head = (
            f"POST /v1/chat/completions HTTP/1.1\r\nhost: {address}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\n\r\n"
        )
        self._request = head.encode() + body
        self._idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

    async def stream(self) -> tuple[float, float]:
        start = time.perf_counter()
        status, connection = b"", None
        while self._idle and not status:  # an idle connection the server closed (uvicorn's keep-alive: 5 s)
            connection = self._idle.pop()
            connection[1].write(self._request)
            status = await connection[0].readline()
        if not status:
            connection = await asyncio.open_connection(self._host, self._port)
            connection[1].write(self._request)
            status = await connection[0].readline()
        assert connection is not None
        reader = connection[0]
        if b" 200 " not in status:
            raise RuntimeError(f"the gateway answered {status!r}")
        while (await reader.readline()) not in (b"\r\n", b""):
            pass
        first = None
        while True:
            size = int((await reader.readline()).strip(), 16)
            if size == 0:
                await reader.readline()
                break
            data = await reader.readexactly(size + 2)
            if first is None and b'"content":"' in data.replace(b'"content":""', b""):
                first = time.perf_counter() - start
        self._idle.append(connection)
        return (first if first is not None else float("nan")), time.perf_counter() - start

    async def close(self) -> None:
        for _, writer in self._idle:
            writer.close()
        self._idle.clear()


class Clients:
    """The direct engine and the gateway's two HTTP clients, on one event loop."""

    def __init__(self, grpc_url: str, gateway_v1: str) -> None:
        import httpx

        from Xclient.llms._backends import Sampling
        from Xclient.llms._engine import Call, Engine, Settings
        from Xclient.llms._templates import BUILTIN_TEMPLATES

        self.loop = asyncio.new_event_loop()
        self.engine = Engine(Settings(server_url=grpc_url))
        template = BUILTIN_TEMPLATES["qwen"]
        sampling = Sampling(max_tokens=MAX_TOKENS, stop=template.stop)
        self.call = Call(c.LLM_MODEL, template.render([("user", QUESTION)]), sampling, stream=True)
        limits = httpx.Limits(max_connections=CONCURRENCY * 2, max_keepalive_connections=CONCURRENCY * 2)
        self.http = h.made_in_loop(self.loop, lambda: httpx.AsyncClient(base_url=gateway_v1, timeout=60, limits=limits))
        self.body = json.dumps(
            {
                "model": c.LLM_MODEL,
                "messages": [{"role": "user", "content": QUESTION}],
                "max_tokens": MAX_TOKENS,
                "stream": True,
            },
            ensure_ascii=False,
        ).encode()
        self.raw = RawSse(gateway_v1, self.body)

    async def direct(self) -> tuple[float, float]:
        from Xclient.llms._engine import arun

        start = time.perf_counter()
        first = None
        async for item in arun(self.engine, self.call):
            if first is None and isinstance(item, str) and item:
                first = time.perf_counter() - start
        return (first if first is not None else float("nan")), time.perf_counter() - start

    async def gateway_raw(self) -> tuple[float, float]:
        return await self.raw.stream()

    async def gateway_httpx(self) -> tuple[float, float]:
        start = time.perf_counter()
        first = None
        headers = {"content-type": "application/json"}
        async with self.http.stream("POST", "/chat/completions", content=self.body, headers=headers) as response:
            response.raise_for_status()
            async for line in response.aiter_lines():
                if first is None and line.startswith("data: {") and '"content":"' in line.replace('"content":""', ""):
                    first = time.perf_counter() - start
        return (first if first is not None else float("nan")), time.perf_counter() - start

    def close(self) -> None:
        self.loop.run_until_complete(self.engine.aclose())
        self.loop.run_until_complete(self.http.aclose())
        self.loop.run_until_complete(self.raw.close())
        self.loop.close()


def make_contenders(clients: Clients, requests: int, burst: int) -> list[h.Contender]:
    loop = clients.loop

    def one_by_one(call: Any) -> Any:
        async def run() -> list[tuple[float, float]]:
            return [await call() for _ in range(requests)]

        return lambda: loop.run_until_complete(run())

    def concurrent(call: Any) -> Any:
        async def run() -> float:
            slots = asyncio.Semaphore(CONCURRENCY)

            async def one() -> None:
                async with slots:
                    await call()

            start = time.perf_counter()
            await asyncio.gather(*(one() for _ in range(burst)))
            return burst / (time.perf_counter() - start)

        return lambda: loop.run_until_complete(run())

    contenders = []
    for label, call in (
        (DIRECT, clients.direct),
        (GATEWAY, clients.gateway_raw),
        (GATEWAY_HTTPX, clients.gateway_httpx),
    ):
        contenders.append(h.Contender(h.XCLIENT, label, "grpc", one_by_one(call), extra={"concurrency": 1}))
        contenders.append(h.Contender(h.XCLIENT, label, "grpc", concurrent(call), extra={"concurrency": CONCURRENCY}))
    return contenders


def run(grpc_url: str, *, quick: bool) -> h.Table:
    rounds, requests, burst = (2, 10, 64) if quick else (5, 40, 256)
    with gateway_process(grpc_url) as gateway_v1:
        clients = Clients(grpc_url, gateway_v1)
        try:
            outcomes = h.interleave(make_contenders(clients, requests, burst), rounds)
        finally:
            clients.close()
    return report(outcomes, rounds, requests, burst)


def report(outcomes: list[h.Outcome], rounds: int, requests: int, burst: int) -> h.Table:
    table = h.Table.from_templates(TITLE, COLUMNS, NOTES, rounds=rounds, requests=requests, burst=burst)
    direct1 = h.find(outcomes, label=DIRECT, concurrency=1)
    direct32 = h.find(outcomes, label=DIRECT, concurrency=CONCURRENCY)
    base_first = h.median([s[0] for s in direct1.samples()]) if direct1 else None
    base_total = h.median([s[1] for s in direct1.samples()]) if direct1 else None
    base_rate = h.median(direct32.rounds) if direct32 and direct32.rounds else None
    for outcome in outcomes:
        contender = outcome.contender
        concurrency = contender.extra["concurrency"]
        is_gateway = contender.label != DIRECT
        checked = contender.label == GATEWAY
        cells: dict[str, str] = {"concurrency": str(concurrency)}
        numbers: dict[str, Any] = {}
        passed = None
        if concurrency == 1:
            first = h.median([s[0] for s in outcome.samples()])
            total = h.median([s[1] for s in outcome.samples()])
            added_first = first - base_first if is_gateway and base_first is not None else None
            added = total - base_total if is_gateway and base_total is not None else None
            passed = h.verdict(checked, outcome, added, lambda v: v <= MAX_ADDED_S)
            cells.update(
                {
                    "first text p50 (ms)": outcome.error or h.fmt(h.scaled(first, 1e3), 2),
                    "request p50 (ms)": h.fmt(h.scaled(total, 1e3), 2),
                    "added first text (ms)": h.fmt(h.scaled(added_first, 1e3), 2) if is_gateway else "base",
                    "added per request (ms)": h.fmt(h.scaled(added, 1e3), 2) if is_gateway else "base",
                }
            )
            numbers = {"first_p50_s": first, "request_p50_s": total, "added_first_s": added_first, "added_s": added}
            if checked:
                measured = outcome.error or (
                    f"{h.fmt(h.scaled(added, 1e3), 2)} ms per request, "
                    f"{h.fmt(h.scaled(added_first, 1e3), 2)} ms to the first text"
                )
                table.targets.append(h.Target("gateway added time, concurrency 1", "<= 1 ms", measured, passed))
        else:
            rate = h.median(outcome.rounds) if outcome.rounds else None
            x_direct = h.ratio(rate, base_rate) if is_gateway else None
            passed = h.verdict(checked, outcome, x_direct, lambda v: v >= MIN_THROUGHPUT_RATIO)
            cells.update(
                {
                    "requests/s": outcome.error or h.fmt(rate, 1),
                    "x direct throughput": h.fmt_ratio(x_direct) if is_gateway else "base",
                }
            )
            numbers = {"requests_per_s": rate, "ratio_direct": x_direct}
            if checked:
                measured = outcome.error or f"{h.fmt_ratio(x_direct)} direct ({h.fmt(rate, 1)} requests/s)"
                table.targets.append(h.Target("gateway throughput, concurrency 32", ">= 0.9x direct", measured, passed))
        table.add_result(outcome, cells, passed, **numbers)
    return table
