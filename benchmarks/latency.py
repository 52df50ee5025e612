"""Group 1: sync latency of a small request (one short text to a batched model), p50 and p99.

Contenders, on HTTP and gRPC: raw ``tritonclient`` (the floor), PyTriton's ``ModelClient`` and
Xclient's ``ModelClient``, all given the same numpy array; and Xclient given the text as ``str``
(what its users write), for information. Each round sends ``requests`` back to back per contender.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from typing import Any

from . import _clients as c
from . import _harness as h

#: Xclient's target: p50 within 3% of the raw floor.
MAX_OVERHEAD = 1.03
TITLE = "1. Sync latency, one short text to a batched model"
COLUMNS = ["protocol", "client", "p50 (us)", "p99 (us)", "x raw (p50)", "per-round x raw", "x PyTriton (p50)", "target"]
NOTES = (
    "{rounds} rounds x {requests} requests per client after a warm-up round; p50/p99 over all kept requests. "
    "Target: Xclient's ModelClient p50 within 3% of raw (<= 1.03x).",
    "The str-input row is Xclient given the text as str (its users' usual call), for information.",
)


def timed_calls(call: Callable[[], Any], count: int) -> list[float]:
    """The latency of each of ``count`` calls, in seconds."""
    samples = []
    for _ in range(count):
        start = time.perf_counter()
        call()
        samples.append(time.perf_counter() - start)
    return samples


def make_contenders(urls: dict[str, str], requests: int, stack: contextlib.ExitStack) -> list[h.Contender]:
    """The contenders; their clients are closed when ``stack`` closes."""
    from pytriton.client import ModelClient as PyTritonModelClient

    from Xclient.client import ModelClient

    contenders = []
    for protocol, url in urls.items():
        raw = c.raw_sync_client(protocol, url)
        pytriton = PyTritonModelClient(url, c.ECHO_MODEL)
        xclient = ModelClient(url, c.ECHO_MODEL)
        for client in (raw, pytriton, xclient):
            stack.callback(client.close)
        calls = [
            (h.RAW, "InferenceServerClient", c.raw_echo(protocol, raw)),
            (h.PYTRITON, "ModelClient", lambda client=pytriton: client.infer_sample(c.SAMPLE)),
            (h.XCLIENT, "ModelClient", lambda client=xclient: client.infer_sample(c.SAMPLE)),
            (h.XCLIENT, "ModelClient (str input)", lambda client=xclient: client.infer_sample(c.TEXT.decode())),
        ]
        for library, label, call in calls:
            run = lambda call=call: timed_calls(call, requests)  # noqa: E731
            contenders.append(h.Contender(library, label, protocol, run, kind="sync"))
    return contenders


def run(urls: dict[str, str], *, rounds: int, requests: int) -> h.Table:
    with contextlib.ExitStack() as stack:
        outcomes = h.interleave(make_contenders(urls, requests, stack), rounds)
    return report(outcomes, urls, rounds, requests)


def report(outcomes: list[h.Outcome], urls: dict[str, str], rounds: int, requests: int) -> h.Table:
    table = h.Table.from_templates(TITLE, COLUMNS, NOTES, rounds=rounds, requests=requests)
    for protocol in urls:
        floor = h.find(outcomes, protocol=protocol, library=h.RAW)
        pytriton = h.find(outcomes, protocol=protocol, library=h.PYTRITON)
        for outcome in [o for o in outcomes if o.contender.protocol == protocol]:
            contender = outcome.contender
            samples = outcome.samples()
            p50, p99 = h.percentile(samples, 50), h.percentile(samples, 99)
            x_raw = h.ratio(p50, h.median(floor.samples())) if floor else None
            x_pytriton = h.ratio(p50, h.median(pytriton.samples())) if pytriton and pytriton is not outcome else None
            spread = h.round_ratios(outcome, floor, h.median) if floor and floor is not outcome else []
            checked = contender.library == h.XCLIENT and contender.label == "ModelClient"
            passed = h.verdict(checked, outcome, x_raw, lambda v: v <= MAX_OVERHEAD)
            cells = {
                "p50 (us)": outcome.error or h.fmt(h.scaled(p50)),
                "p99 (us)": h.fmt(h.scaled(p99)),
                "x raw (p50)": h.ratio_cell(contender, x_raw),
                "per-round x raw": h.fmt_spread(spread),
                "x PyTriton (p50)": h.fmt_ratio(x_pytriton),
            }
            table.add_result(outcome, cells, passed, p50_s=p50, p99_s=p99, ratio_raw=x_raw, round_ratios=spread)
            if checked:
                measured = outcome.error or f"{h.fmt_ratio(x_raw)} of raw (p50 {h.fmt(h.scaled(p50))} us)"
                table.targets.append(h.Target(f"sync overhead, {protocol}", "<= 1.03x raw p50", measured, passed))
    return table
