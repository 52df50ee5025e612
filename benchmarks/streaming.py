"""Group 3: streaming, time to first response and total time of a decoupled stream of 100 responses.

Contenders on ``bench_stream`` (gRPC): the raw floor (one ``tritonclient.grpc`` stream started once
with a callback, requests sent with ``async_stream_infer``), PyTriton's and Xclient's
``DecoupledModelClient`` and ``AsyncioDecoupledModelClient``. And ``ChatMetaLM.stream`` on the
``Qwen2-0.5B-Instruct`` stand-in (``max_tokens=100``), against the same raw floor sending the same
request to that model by hand.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any

import numpy as np

from . import _clients as c
from . import _harness as h

#: Xclient's target: time to first response at most this much above the raw floor's (seconds).
MAX_TTFR_EXCESS_S = 0.0005
#: The chat benchmark's question: the stand-in's answer to it is 105 tokens, cut at max_tokens=100.
QUESTION = "请用中文详细地介绍一下你自己，以及你能做些什么事情。"
#: What ChatMetaLM sends for QUESTION with Qwen2's template (rendered by hand for the raw floor).
QWEN_PROMPT = (
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    f"<|im_start|>user\n{QUESTION}<|im_end|>\n<|im_start|>assistant\n"
)
CHAT_STOP = ["<|im_end|>", "<|endoftext|>"]
RAW_LABEL = "gRPC stream + callback"
PER_REQUEST_LABEL = "grpc.aio, one call per request"

Timing = tuple[float, float, int]  # (time to first response, total time, responses), seconds

TITLE = "3. Streaming: a decoupled stream of 100 responses (gRPC)"
COLUMNS = [
    "model",
    "client",
    "first response p50 (ms)",
    "first response p99 (ms)",
    "total p50 (ms)",
    "responses",
    "first - raw (ms)",
    "total x raw",
    "total x PyTriton",
    "target",
]
NOTES = (
    "{rounds} rounds x {streams} streams per client after a warm-up round. The raw floor keeps one gRPC stream "
    "open (started once) and reads the responses its callback queues; the first response counts from the call "
    "that sends the request. Target: Xclient's decoupled clients' first response within 0.5 ms of raw (p50).",
    "The 'one call per request' row is raw too: Xclient's way of streaming (a ModelStreamInfer call per "
    "request, which lets one request be cancelled alone) with no Xclient code; against the floor it shows what "
    "opening a call per request costs by itself.",
    "responses: those delivered with outputs (median per stream); PyTriton's decoupled clients drop the outputs "
    "of the response flagged final, which is where vLLM puts its last text.",
    "ChatMetaLM's floor is the same raw stream sending by hand what ChatMetaLM sends (prompt rendered with "
    "Qwen2's template, sampling_parameters, stream and the return_* flags); its responses are text chunks with "
    "content.",
)


def time_stream(responses: Iterable[Any], start: float, counts: Callable[[Any], bool] = bool) -> Timing:
    """Read a stream to its end: (first counted response, end, responses counted), from ``start``."""
    first, count = None, 0
    for item in responses:
        if counts(item):
            count += 1
            first = first if first is not None else time.perf_counter() - start
    return (first if first is not None else float("nan")), time.perf_counter() - start, count


async def atime_stream(responses: AsyncIterator[Any], start: float) -> Timing:
    """:func:`time_stream` for an async stream (a response counts when it has outputs)."""
    first, count = None, 0
    async for item in responses:
        if item:
            count += 1
            first = first if first is not None else time.perf_counter() - start
    return (first if first is not None else float("nan")), time.perf_counter() - start, count


def qwen_inputs(raw: c.RawStream) -> list[Any]:
    """The request ChatMetaLM sends to the vLLM stand-in, built by hand."""
    sampling = json.dumps({"max_tokens": c.STREAM_RESPONSES, "stop": CHAT_STOP})
    tensors = [
        raw.tensor("text_input", np.array([QWEN_PROMPT.encode()], dtype=object), "BYTES"),
        raw.tensor("sampling_parameters", np.array([sampling.encode()], dtype=object), "BYTES"),
    ]
    flags = ("stream", "return_num_input_tokens", "return_num_output_tokens", "return_finish_reason")
    return tensors + [raw.tensor(name, np.array([True]), "BOOL") for name in flags]


class Clients:
    """This group's clients; the asyncio ones on one event loop."""

    def __init__(self, url: str, chat: bool) -> None:
        from pytriton.client import AsyncioDecoupledModelClient as PyTritonAsyncio
        from pytriton.client import DecoupledModelClient as PyTritonSync

        from Xclient.client import AsyncioDecoupledModelClient, DecoupledModelClient

        self.loop = asyncio.new_event_loop()
        self.raw = c.RawStream(url)
        self.pytriton = PyTritonSync(url, c.STREAM_MODEL)
        self.xclient = DecoupledModelClient(url, c.STREAM_MODEL)
        self.pytriton_async = h.made_in_loop(self.loop, lambda: PyTritonAsyncio(url, c.STREAM_MODEL))
        self.xclient_async = h.made_in_loop(self.loop, lambda: AsyncioDecoupledModelClient(url, c.STREAM_MODEL))
        self.call_per_request = h.made_in_loop(self.loop, lambda: c.RawCallPerRequest(url))
        self.chat = None
        if chat:
            from Xclient.llms import ChatMetaLM

            self.chat = ChatMetaLM(server_url=url, model_name=c.LLM_MODEL, max_tokens=c.STREAM_RESPONSES)

    def close(self) -> None:
        self.raw.close()
        self.pytriton.close()
        self.xclient.close()
        for client in (self.pytriton_async, self.xclient_async, self.call_per_request.client):
            self.loop.run_until_complete(client.close())
        if self.chat is not None:
            self.chat.close()
        self.loop.close()


def make_contenders(clients: Clients, streams: int) -> list[h.Contender]:
    raw, loop, per_request = clients.raw, clients.loop, clients.call_per_request
    stream_input = [raw.tensor("N", c.STREAM_SAMPLE, "INT32")]

    def contender(library: str, label: str, one: Callable[[], Timing], kind: str, model: str) -> h.Contender:
        run = lambda: [one() for _ in range(streams)]  # noqa: E731
        return h.Contender(library, label, "grpc", run, kind=kind, extra={"model": model})

    def sync(client: Any) -> Callable[[], Timing]:
        return lambda: time_stream(client.infer_sample(c.STREAM_SAMPLE), time.perf_counter())

    def in_loop(client: Any) -> Callable[[], Timing]:
        return lambda: loop.run_until_complete(atime_stream(client.infer_sample(c.STREAM_SAMPLE), time.perf_counter()))

    model = c.STREAM_MODEL
    contenders = [
        contender(h.RAW, RAW_LABEL, lambda: raw.stream(c.STREAM_MODEL, stream_input, "TOKEN"), "", model),
        contender(h.RAW, PER_REQUEST_LABEL, lambda: loop.run_until_complete(per_request.stream()), "info", model),
        contender(h.PYTRITON, "DecoupledModelClient", sync(clients.pytriton), "sync", model),
        contender(h.PYTRITON, "AsyncioDecoupledModelClient", in_loop(clients.pytriton_async), "asyncio", model),
        contender(h.XCLIENT, "DecoupledModelClient", sync(clients.xclient), "sync", model),
        contender(h.XCLIENT, "AsyncioDecoupledModelClient", in_loop(clients.xclient_async), "asyncio", model),
    ]
    chat = clients.chat
    if chat is not None:

        def chat_stream() -> Timing:
            return time_stream(chat.stream(QUESTION), time.perf_counter(), lambda chunk: bool(chunk.content))

        model = c.LLM_MODEL
        contenders += [
            contender(h.RAW, RAW_LABEL, lambda: raw.stream(c.LLM_MODEL, qwen_inputs(raw), "text_output"), "", model),
            contender(h.XCLIENT, "ChatMetaLM.stream", chat_stream, "chat", model),
        ]
    return contenders


def run(url: str, *, rounds: int, streams: int, chat: bool) -> h.Table:
    clients = Clients(url, chat)
    try:
        outcomes = h.interleave(make_contenders(clients, streams), rounds)
    finally:
        clients.close()
    return report(outcomes, rounds, streams)


def report(outcomes: list[h.Outcome], rounds: int, streams: int) -> h.Table:
    table = h.Table.from_templates(TITLE, COLUMNS, NOTES, rounds=rounds, streams=streams)
    for outcome in outcomes:
        contender = outcome.contender
        model = contender.extra["model"]
        floor = h.find(outcomes, library=h.RAW, model=model)
        pytriton = h.find(outcomes, library=h.PYTRITON, kind=contender.kind, model=model)
        first, total = _timings(outcome, 0), _timings(outcome, 1)
        ttfr, total_p50 = h.median(first), h.median(total)
        excess = ttfr - h.median(_timings(floor, 0)) if floor else None
        x_raw = h.ratio(total_p50, h.median(_timings(floor, 1))) if floor else None
        x_pytriton = None
        if pytriton is not None and contender.library == h.XCLIENT:
            x_pytriton = h.ratio(total_p50, h.median(_timings(pytriton, 1)))
        checked = contender.library == h.XCLIENT and contender.kind in ("sync", "asyncio")
        passed = h.verdict(checked, outcome, excess, lambda v: v <= MAX_TTFR_EXCESS_S)
        responses = h.median(_timings(outcome, 2))
        cells = {
            "model": model,
            "first response p50 (ms)": outcome.error or h.fmt(h.scaled(ttfr, 1e3), 2),
            "first response p99 (ms)": h.fmt(h.scaled(h.percentile(first, 99), 1e3), 2),
            "total p50 (ms)": h.fmt(h.scaled(total_p50, 1e3), 2),
            "responses": h.fmt(responses, 0),
            "first - raw (ms)": "floor" if floor is outcome else h.fmt(h.scaled(excess, 1e3), 2),
            "total x raw": "floor" if floor is outcome else h.fmt_ratio(x_raw),
            "total x PyTriton": h.fmt_ratio(x_pytriton),
        }
        numbers = {"first_response_p50_s": ttfr, "total_p50_s": total_p50, "first_minus_raw_s": excess}
        table.add_result(outcome, cells, passed, **numbers, total_ratio_raw=x_raw, responses=responses)
        if checked:
            measured = f"{h.fmt(h.scaled(excess, 1e3), 2)} ms above raw (p50 {h.fmt(h.scaled(ttfr, 1e3), 2)} ms)"
            table.targets.append(
                h.Target(
                    f"stream first response, {contender.label}", "<= raw + 0.5 ms", outcome.error or measured, passed
                )
            )
    return table


def _timings(outcome: h.Outcome | None, index: int) -> list[float]:
    """One measure of every stream of ``outcome``: 0 first response, 1 total time, 2 responses."""
    return [timing[index] for timing in outcome.samples()] if outcome else []
