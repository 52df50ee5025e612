"""Group 7: what ``xclient gateway`` adds, against Xclient's own asyncio path on the same model, in one run.

Both sides stream the same chat from the ``Qwen2-0.5B-Instruct`` stand-in over gRPC (Qwen2's template,
``max_tokens`` 32). Directly: the LLM engine that ChatMetaLM and the gateway share (``arun`` on
``AsyncioDecoupledModelClient``), in this process, without LangChain's per-chunk cost. Through the gateway:
``python -m Xclient gateway`` as its own process on a loopback port, read as server-sent events by a
minimal HTTP/1.1 reader on asyncio streams (the gateway's own added time: the target), and by ``httpx``
(what a Python client such as the ``openai`` SDK adds on top, for information). At concurrency 1 it
measures the time to the first text and to the end of each request; at concurrency 32, requests per second.
At concurrency 1 a bare relay on the same stack (:mod:`.relay_floor`) takes its turn too: the floor that
the gateway's figures sit on.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import json
import os
import pathlib
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
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
FLOOR = "bare ASGI relay (the stack's floor), raw SSE reader"
TURNS = "taking turns at concurrency 1"

TITLE = "7. Gateway: xclient gateway against Xclient's asyncio path (streamed chat, gRPC)"
COLUMNS = [
    "client",
    "concurrency",
    "max_tokens",
    "token pace",
    "first text p50 (ms)",
    "request p50 (ms)",
    "requests/s",
    "added first text (ms)",
    "added per request (ms)",
    "x direct throughput",
    "serving CPU (ms/request)",
    "load generator CPU (ms/request)",
    "Triton CPU (ms/request)",
    "x direct per CPU",
    "target",
]
NOTES = (
    "{rounds} rounds after a warm-up round, interleaved; concurrency 1: {requests} requests per client and round, "
    "the clients taking turns request by request (so that their samples come from the same moments of the shared "
    "machine); concurrency 32: {burst} requests, 32 in flight. Each request streams the stand-in's answer, cut at "
    "max_tokens 32, with Qwen2's template.",
    "direct: the LLM engine's arun (what ChatMetaLM.astream and the gateway run) in this process. gateway: python "
    "-m Xclient gateway in its own process; raw SSE reader: keep-alive connections (one per request in flight) read "
    "by an asyncio Protocol that only looks for the first text and the end of the body; httpx: one AsyncClient, "
    "aiter_lines. The targets are checked on the raw reader's rows (the gateway's own cost); httpx's rows add a "
    "Python client's.",
    "bare ASGI relay (the stack's floor): python -m benchmarks.relay_floor, the least a relay on the gateway's "
    "stack does (uvicorn with the same loop and HTTP parser, no Starlette; the body parsed, the template rendered, "
    "the same engine, each text written as an event; no validation, ids, metrics or disconnect watch), read by "
    "the same raw reader. What it adds is the HTTP hop and one more busy process on these cores, whatever the "
    "gateway does: the gateway's own cost is its rows minus the relay's.",
    "Goals: at most 1 ms added per request at concurrency 1 (p50 against p50), at least 0.9x the direct "
    "throughput at concurrency 32.",
    "Token pace: the demo stand-in sends its tokens as fast as the CPU lets it, so on these 2 shared cores each "
    "token's work in the gateway (its event write wakes the reader: about 25 us of system time here) also delays "
    "Triton's next token, and the max_tokens 32 row adds that up. The 1 ms rows ask the same stand-in pacing its "
    "tokens (1 ms before each, as a model on an accelerator: about 1.5 ms per token in all here), which leaves "
    "the CPU room: what the gateway adds to a model's own time. max_tokens 1 rows (for information): the same "
    "chat cut at one token, the gateway's cost per request (its HTTP hop, parsing, template, tasks) without its "
    "cost per token.",
    "CPU per request (concurrency 32, median over rounds, from /proc): serving is what answers the requests (the "
    "benchmark process running the engine directly; the gateway process); the load generator is the benchmark "
    "process reading the gateway's streams; Triton is the server and its Python-backend stubs. On this machine "
    "the three share 2 cores (with other work), so the load generator's CPU, which a deployment spends on other "
    "machines, slows the gateway's rows and not the direct one. x direct per CPU is the throughput ratio with it "
    "taken out: (Triton + serving CPU per request, direct) / (the same through the gateway), Triton's counted "
    "alike on both sides (its median over both rows: the same work), what the ratio becomes when the CPU is "
    "the limit and the clients run elsewhere.",
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


_TICK_S = 1 / os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 0.01


def cpu_seconds(pids: Sequence[int]) -> float | None:
    """The user + system CPU time the processes ``pids`` have spent (Linux ``/proc``); None elsewhere."""
    total = 0.0
    for pid in pids:
        try:
            fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return None
        total += (int(fields[11]) + int(fields[12])) * _TICK_S
    return total


def triton_pids(grpc_url: str) -> list[int]:
    """The Triton server listening on ``grpc_url``'s port and its children (the Python-backend stubs)."""
    flag = f"--grpc-port={grpc_url.rsplit(':', 1)[1]}".encode()
    server = []
    for cmdline in pathlib.Path("/proc").glob("[0-9]*/cmdline"):
        with contextlib.suppress(OSError):
            if flag in cmdline.read_bytes().split(b"\0"):
                server.append(int(cmdline.parent.name))
    children = []
    for stat in pathlib.Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) in server:
                children.append(int(stat.parent.name))
    return server + children


@dataclasses.dataclass
class Burst:
    """One round at concurrency 32: requests/s, and the CPU each side spent per request (None: unknown)."""

    rate: float
    serving_s: float | None
    load_s: float | None
    triton_s: float | None


def gateway_process(grpc_url: str) -> contextlib.AbstractContextManager[tuple[str, int]]:
    """The gateway in front of ``grpc_url``; yields its /v1 URL and its process id."""
    port = _free_port()
    command = [sys.executable, "-m", "Xclient", "gateway", "--url", grpc_url, "--port", str(port)]
    return _serving("the gateway", port, [*command, "--log-level", "warning"])


def floor_process(grpc_url: str) -> contextlib.AbstractContextManager[tuple[str, int]]:
    """:mod:`.relay_floor` in front of ``grpc_url``; yields its /v1 URL and its process id."""
    port = _free_port()
    return _serving("the bare relay", port, [sys.executable, "-m", "benchmarks.relay_floor", grpc_url, str(port)])


@contextlib.contextmanager
def _serving(name: str, port: int, command: list[str]) -> Iterator[tuple[str, int]]:
    """``command`` run until its ``/health`` on ``port`` answers; yields its /v1 URL and its process id."""
    import httpx

    env = {k: v for k, v in os.environ.items() if not k.startswith("XCLIENT_")}
    root = str(pathlib.Path(__file__).resolve().parent.parent)  # benchmarks.relay_floor is found from here
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(command, stdout=log, stderr=log, env=env)
        try:
            deadline = time.monotonic() + 60
            while True:
                with contextlib.suppress(httpx.HTTPError):
                    httpx.get(f"http://127.0.0.1:{port}/health", timeout=2)
                    break
                if process.poll() is not None or time.monotonic() > deadline:
                    log.seek(0)
                    raise RuntimeError(f"{name} did not start: {log.read().decode(errors='replace')[-2000:]}")
                time.sleep(0.1)
            yield f"http://127.0.0.1:{port}/v1", process.pid
        finally:
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


class _SseConnection(asyncio.Protocol):
    """One keep-alive connection to the gateway, read with no parsing beyond what the measurement needs: the
    time of the first text, and the end of the chunked body (its last event is ``[DONE]``)."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self._answer: asyncio.Future[float] | None = None
        self._data = bytearray()
        self._first: float | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def send(self, request: bytes) -> asyncio.Future[float]:
        """Write ``request``; the future is the time of the first text once the whole answer is in."""
        assert self.transport is not None
        self._answer = asyncio.get_running_loop().create_future()
        self._data.clear()
        self._first = None
        self.transport.write(request)
        return self._answer

    def data_received(self, data: bytes) -> None:
        if self._first is None and b'"content":"' in data.replace(b'"content":""', b""):
            self._first = time.perf_counter()
        self._data += data
        if self._data.endswith(b"\r\n0\r\n\r\n") and self._answer is not None and not self._answer.done():
            if not self._data.startswith(b"HTTP/1.1 200 ") or not self._data.endswith(_LAST):
                self._answer.set_exception(RuntimeError(f"the gateway answered {bytes(self._data[-300:])!r}"))
            else:
                self._answer.set_result(self._first if self._first is not None else float("nan"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._answer is not None and not self._answer.done():
            self._answer.set_exception(ConnectionResetError(f"closed after {len(self._data)} bytes"))

    @property
    def untouched(self) -> bool:
        """Nothing came for the request sent: an idle connection the server had closed."""
        return not self._data


#: The end of a streamed answer: the ``[DONE]`` event, then the end of the chunked body.
_LAST = b"data: [DONE]\n\n\r\n0\r\n\r\n"


class RawSse:
    """A minimal HTTP/1.1 client for the gateway's event streams, so that the load generator (which shares the
    cores with the gateway and Triton) costs as little as can be: keep-alive connections (one per request in
    flight), the request written in one piece, the chunked answer taken as it comes by an
    :class:`asyncio.Protocol` (no per-event parsing, no stream-reader calls)."""

    def __init__(self, v1: str, body: bytes) -> None:
        address = v1.removeprefix("http://").split("/", 1)[0]
        self._host, port = address.rsplit(":", 1)
        self._port = int(port)
        head = (
            f"POST /v1/chat/completions HTTP/1.1\r\nhost: {address}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\n\r\n"
        )
        self._request = head.encode() + body
        self._idle: list[_SseConnection] = []

    async def _connect(self) -> _SseConnection:
        loop = asyncio.get_running_loop()
        _, connection = await loop.create_connection(_SseConnection, self._host, self._port)
        return connection

    async def stream(self) -> tuple[float, float]:
        start = time.perf_counter()
        while True:
            fresh = not self._idle
            connection = await self._connect() if fresh else self._idle.pop()
            if connection.closed:
                continue
            try:
                first = await connection.send(self._request)
            except ConnectionResetError:
                if fresh or not connection.untouched:
                    raise
                continue  # an idle connection the server closed (uvicorn's keep-alive: 5 s): a new one
            self._idle.append(connection)
            return first - start, time.perf_counter() - start

    async def close(self) -> None:
        for connection in self._idle:
            if connection.transport is not None:
                connection.transport.close()
        self._idle.clear()


def chat_body(max_tokens: int, model: str = c.LLM_MODEL) -> bytes:
    """The streamed chat request the gateway rows send."""
    message = {"role": "user", "content": QUESTION}
    body = {"model": model, "messages": [message], "max_tokens": max_tokens, "stream": True}
    return json.dumps(body, ensure_ascii=False).encode()


class Clients:
    """The direct engine and the gateway's two HTTP clients, on one event loop."""

    def __init__(self, grpc_url: str, gateway_v1: str, floor_v1: str) -> None:
        import httpx

        from Xclient.llms._backends import Sampling
        from Xclient.llms._engine import Call, Engine, Settings
        from Xclient.llms._templates import BUILTIN_TEMPLATES

        self.loop = asyncio.new_event_loop()
        self.engine = Engine(Settings(server_url=grpc_url))
        template = BUILTIN_TEMPLATES["qwen"]
        prompt = template.render([("user", QUESTION)])
        self.call, self.call1, self.call_paced = (
            Call(model, prompt, Sampling(max_tokens=tokens, stop=template.stop), stream=True)
            for model, tokens in ((c.LLM_MODEL, MAX_TOKENS), (c.LLM_MODEL, 1), (c.PACED_LLM_MODEL, MAX_TOKENS))
        )
        limits = httpx.Limits(max_connections=CONCURRENCY * 2, max_keepalive_connections=CONCURRENCY * 2)
        self.http = h.made_in_loop(self.loop, lambda: httpx.AsyncClient(base_url=gateway_v1, timeout=60, limits=limits))
        self.body = chat_body(MAX_TOKENS)
        bodies = (self.body, chat_body(1), chat_body(MAX_TOKENS, c.PACED_LLM_MODEL))
        self.raw, self.raw1, self.raw_paced = (RawSse(gateway_v1, body) for body in bodies)
        self.floor, self.floor1, self.floor_paced = (RawSse(floor_v1, body) for body in bodies)

    async def direct(self, call: Any) -> tuple[float, float]:
        """One streamed ``call`` through the engine: (time to the first text, time to the end)."""
        from Xclient.llms._engine import arun

        start = time.perf_counter()
        first = None
        async for item in arun(self.engine, call):
            if first is None and isinstance(item, str) and item:
                first = time.perf_counter() - start
        return (first if first is not None else float("nan")), time.perf_counter() - start

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
        for raw in (self.raw, self.raw1, self.raw_paced, self.floor, self.floor1, self.floor_paced):
            self.loop.run_until_complete(raw.close())
        self.loop.close()


def make_contenders(
    clients: Clients, requests: int, burst: int, gateway_pid: int | None, triton: Sequence[int]
) -> list[h.Contender]:
    loop = clients.loop

    def alternating(calls: Sequence[tuple[str, Any]]) -> Any:
        """Concurrency 1: the clients' requests one after the other, taking turns request by request (the order
        rotating), so that each client's samples come from the same moments of the shared machine."""

        async def run() -> dict[str, list[tuple[float, float]]]:
            samples: dict[str, list[tuple[float, float]]] = {label: [] for label, _ in calls}
            order = list(calls)
            for _ in range(requests):
                for label, call in order:
                    samples[label].append(await call())
                order = order[1:] + order[:1]
            return samples

        return lambda: loop.run_until_complete(run())

    def concurrent(call: Any, through_gateway: bool) -> Any:
        serving = [gateway_pid] if through_gateway and gateway_pid is not None else [os.getpid()]

        async def run() -> Burst:
            slots = asyncio.Semaphore(CONCURRENCY)

            async def one() -> None:
                async with slots:
                    await call()

            before = (cpu_seconds(serving), time.process_time(), cpu_seconds(triton))
            start = time.perf_counter()
            await asyncio.gather(*(one() for _ in range(burst)))
            elapsed = time.perf_counter() - start
            after = (cpu_seconds(serving), time.process_time(), cpu_seconds(triton))
            spent = [None if a is None or b is None else (b - a) / burst for a, b in zip(before, after, strict=True)]
            return Burst(burst / elapsed, spent[0], spent[1] if through_gateway else None, spent[2])

        return lambda: loop.run_until_complete(run())

    contenders = []
    direct = functools.partial(clients.direct, clients.call)
    turns = [(DIRECT, direct), (GATEWAY, clients.raw.stream), (GATEWAY_HTTPX, clients.gateway_httpx)]
    for label, call in turns:
        contenders.append(
            h.Contender(
                h.XCLIENT,
                label,
                "grpc",
                concurrent(call, label != DIRECT),
                extra={"concurrency": CONCURRENCY, "max_tokens": MAX_TOKENS, "paced": False},
            )
        )
    # Concurrency 1, taking turns: max_tokens 32; one token per request, for information (the gateway's cost per
    # request without its cost per token); and 32 from the stand-in that paces its tokens. The bare relay takes
    # its turn in each: the floor that the gateway's rows are read against.
    for tokens, paced, calls in (
        (MAX_TOKENS, False, [*turns, (FLOOR, clients.floor.stream)]),
        (
            1,
            False,
            [
                (DIRECT, functools.partial(clients.direct, clients.call1)),
                (GATEWAY, clients.raw1.stream),
                (FLOOR, clients.floor1.stream),
            ],
        ),
        (
            MAX_TOKENS,
            True,
            [
                (DIRECT, functools.partial(clients.direct, clients.call_paced)),
                (GATEWAY, clients.raw_paced.stream),
                (FLOOR, clients.floor_paced.stream),
            ],
        ),
    ):
        extra = {"max_tokens": tokens, "paced": paced, "labels": [label for label, _ in calls]}
        contenders.append(h.Contender(h.XCLIENT, TURNS, "grpc", alternating(calls), extra=extra))
    return contenders


def split_turns(outcomes: Sequence[h.Outcome]) -> list[h.Outcome]:
    """The outcomes with each concurrency-1 outcome (the clients taking turns) split into one per client."""
    out = []
    for outcome in outcomes:
        contender = outcome.contender
        if contender.label != TURNS:
            out.append(outcome)
            continue
        for label in contender.extra["labels"]:
            one = dataclasses.replace(contender, label=label, extra={**contender.extra, "concurrency": 1})
            out.append(h.Outcome(one, [samples[label] for samples in outcome.rounds], outcome.error))
    labels = [DIRECT, GATEWAY, FLOOR, GATEWAY_HTTPX]

    def place(o: h.Outcome) -> tuple[bool, bool, int, int]:  # the table's order: by client, then by concurrency
        return (
            o.contender.extra["paced"],
            o.contender.extra["max_tokens"] != MAX_TOKENS,
            labels.index(o.contender.label),
            o.contender.extra["concurrency"],
        )

    return sorted(out, key=place)


def run(grpc_url: str, *, quick: bool) -> h.Table:
    rounds, requests, burst = (2, 10, 64) if quick else (5, 40, 256)
    with gateway_process(grpc_url) as (gateway_v1, gateway_pid), floor_process(grpc_url) as (floor_v1, _):
        clients = Clients(grpc_url, gateway_v1, floor_v1)
        try:
            contenders = make_contenders(clients, requests, burst, gateway_pid, triton_pids(grpc_url))
            outcomes = split_turns(h.interleave(contenders, rounds))
        finally:
            clients.close()
    return report(outcomes, rounds, requests, burst)


def report(outcomes: list[h.Outcome], rounds: int, requests: int, burst: int) -> h.Table:
    table = h.Table.from_templates(TITLE, COLUMNS, NOTES, rounds=rounds, requests=requests, burst=burst)
    direct32 = h.find(outcomes, label=DIRECT, concurrency=CONCURRENCY)
    bases, floors = {}, {}
    for tokens, paced in ((MAX_TOKENS, False), (1, False), (MAX_TOKENS, True)):
        bases[tokens, paced] = _p50s(h.find(outcomes, label=DIRECT, concurrency=1, max_tokens=tokens, paced=paced))
        floor = h.find(outcomes, label=FLOOR, max_tokens=tokens, paced=paced)
        floors[tokens, paced] = _added(_p50s(floor), bases[tokens, paced])
    base_rate = _median(direct32, "rate")
    direct_serving = _median(direct32, "serving_s")
    for outcome in outcomes:
        contender = outcome.contender
        concurrency = contender.extra["concurrency"]
        is_gateway = contender.label != DIRECT
        tokens, paced = contender.extra["max_tokens"], contender.extra["paced"]
        checked = contender.label == GATEWAY and tokens == MAX_TOKENS
        pace = "1 ms" if paced else "as fast as the CPU"
        cells: dict[str, str] = {"concurrency": str(concurrency), "max_tokens": str(tokens), "token pace": pace}
        numbers: dict[str, Any] = {}
        passed = None
        if concurrency == 1:
            first, total = _p50s(outcome)
            added_first, added = _added((first, total), bases[tokens, paced]) if is_gateway else (None, None)
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
                floor_first, floor = floors[tokens, paced]
                measured = outcome.error or (
                    f"{h.fmt(h.scaled(added, 1e3), 2)} ms per request, "
                    f"{h.fmt(h.scaled(added_first, 1e3), 2)} ms to the first text (the bare relay: "
                    f"{h.fmt(h.scaled(floor, 1e3), 2)} ms, {h.fmt(h.scaled(floor_first, 1e3), 2)} ms)"
                )
                name = "gateway added time, concurrency 1" + (", tokens paced 1 ms" if paced else "")
                table.targets.append(h.Target(name, "<= 1 ms", measured, passed))
        else:
            rate = _median(outcome, "rate")
            x_direct = h.ratio(rate, base_rate) if is_gateway else None
            cpu, x_cpu = _per_cpu(direct32, direct_serving, outcome) if is_gateway else (None, None)
            passed = h.verdict(checked, outcome, x_direct, lambda v: v >= MIN_THROUGHPUT_RATIO)
            serving, load, triton = (_median(outcome, name) for name in ("serving_s", "load_s", "triton_s"))
            cells.update(
                {
                    "requests/s": outcome.error or h.fmt(rate, 1),
                    "x direct throughput": h.fmt_ratio(x_direct) if is_gateway else "base",
                    "serving CPU (ms/request)": h.fmt(h.scaled(serving, 1e3), 2),
                    "load generator CPU (ms/request)": h.fmt(h.scaled(load, 1e3), 2) if is_gateway else "-",
                    "Triton CPU (ms/request)": h.fmt(h.scaled(triton, 1e3), 2),
                    "x direct per CPU": h.fmt_ratio(x_cpu) if is_gateway else "base",
                }
            )
            numbers = {
                "requests_per_s": rate,
                "ratio_direct": x_direct,
                "serving_cpu_s": serving,
                "load_generator_cpu_s": load,
                "triton_cpu_s": triton,
                "ratio_direct_per_cpu": x_cpu,
            }
            if checked:
                measured = outcome.error or f"{h.fmt_ratio(x_direct)} direct ({h.fmt(rate, 1)} requests/s)"
                table.targets.append(h.Target("gateway throughput, concurrency 32", ">= 0.9x direct", measured, passed))
                passed_cpu = h.verdict(True, outcome, x_cpu, lambda v: v >= MIN_THROUGHPUT_RATIO)
                measured_cpu = outcome.error or (
                    f"{h.fmt_ratio(x_cpu)} direct (Triton + gateway {h.fmt(h.scaled(cpu, 1e3), 2)} ms CPU per request)"
                )
                table.targets.append(
                    h.Target(
                        "gateway throughput per CPU, concurrency 32 (load generator's CPU out)",
                        ">= 0.9x direct",
                        measured_cpu,
                        passed_cpu,
                    )
                )
        table.add_result(outcome, cells, passed, **numbers)
    return table


def _p50s(outcome: h.Outcome | None) -> tuple[float | None, float | None]:
    """A concurrency-1 outcome's medians: the time to the first text, the time to the end (None: not measured)."""
    if outcome is None or not outcome.samples():
        return None, None
    return h.median([s[0] for s in outcome.samples()]), h.median([s[1] for s in outcome.samples()])


def _added(p50s: tuple[float | None, float | None], base: tuple[float | None, float | None]) -> tuple[Any, Any]:
    """What ``p50s`` add to the direct path's ``base``, each (None where either is unknown)."""
    return tuple(None if v is None or b is None else v - b for v, b in zip(p50s, base, strict=True))


def _median(outcome: h.Outcome | None, name: str) -> float | None:
    """The median over the kept rounds of one :class:`Burst` field (None: not measured)."""
    values = [getattr(burst, name) for burst in outcome.rounds] if outcome else []
    known = [v for v in values if v is not None]
    return h.median(known) if known else None


def _per_cpu(
    direct: h.Outcome | None, direct_serving: float | None, gateway: h.Outcome
) -> tuple[float | None, float | None]:
    """Triton's + the gateway's CPU per request, and the direct path's over it (the ratio per CPU). Triton does
    the same work per request on both paths, so both sides count the median of what it spent over the two
    rows' rounds: what its figure varies by is the machine's other load, not the path."""
    serving = _median(gateway, "serving_s")
    tritons = [b.triton_s for o in (direct, gateway) if o for b in o.rounds if b.triton_s is not None]
    if serving is None or direct_serving is None or not tritons:
        return None, None
    triton = h.median(tritons)
    return triton + serving, (triton + direct_serving) / (triton + serving)
