"""Group 1: sync latency of a small request (one short text to a batched model), p50 and p99; and of a
large one (a 4 MB FP32 tensor, echoed back by ``bench_large``).

Contenders, on HTTP and gRPC: raw ``tritonclient`` (the floor), PyTriton's ``ModelClient`` and
Xclient's ``ModelClient``, all given the same numpy array; and Xclient given the text as ``str``
(what its users write), for information. Each round sends ``requests`` back to back per contender
(a tenth of that, at least 3, for the large tensor).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from typing import Any

from . import _clients as c
from . import _harness as h

#: Xclient's targets: a small request's p50 at most 0.95x the raw floor's; a 4 MB tensor's at most raw's.
MAX_OVERHEAD = 0.95
MAX_OVERHEAD_LARGE = 1.0
TITLE = "1. Sync latency, one short text to a batched model"
TITLE_LARGE = "1b. Sync latency, one 4 MB FP32 tensor (echoed back)"
COLUMNS = ["protocol", "client", "p50 (us)", "p99 (us)", "x raw (p50)", "per-round x raw", "x PyTriton (p50)", "target"]
NOTES = (
    "{rounds} rounds x {requests} requests per client after a warm-up round; p50/p99 over all kept requests. "
    "Target: Xclient's ModelClient p50 at most 0.95x raw (knowing the config lets it do less per call).",
    "The str-input row is Xclient given the text as str (its users' usual call), for information.",
    "The on_request row is Xclient with a hook that gets every request's RequestInfo (a no-op function): "
    "what observing costs; every row records RequestInfo (last_request_info), which is always on.",
)
NOTES_LARGE = (
    "{rounds} rounds x {requests} requests per client after a warm-up round: 1,048,576 FP32 values (4 MB) to "
    "bench_large, which sends them back. Target: Xclient's ModelClient p50 at most raw's (<= 1.00x).",
)


def _ignore(info: object) -> None:
    """The on_request hook of the observed contender: the cost of the hook path, not of its work."""


def timed_calls(call: Callable[[], Any], count: int) -> list[float]:
    """The latency of each of ``count`` calls, in seconds."""
    samples = []
    for _ in range(count):
        start = time.perf_counter()
        call()
        samples.append(time.perf_counter() - start)
    return samples


def make_contenders(
    urls: dict[str, str], requests: int, stack: contextlib.ExitStack, *, large: bool = False
) -> list[h.Contender]:
    """The contenders (``large``: of the 4 MB tensor); their clients are closed when ``stack`` closes."""
    from pytriton.client import ModelClient as PyTritonModelClient

    from Xclient.client import ModelClient

    model = c.LARGE_MODEL if large else c.ECHO_MODEL
    contenders = []
    for protocol, url in urls.items():
        raw = c.raw_sync_client(protocol, url)
        pytriton = PyTritonModelClient(url, model)
        xclient = ModelClient(url, model)
        hooked = ModelClient(url, model, on_request=_ignore)  # RequestInfo handed to a hook on every call
        for client in (raw, pytriton, xclient, hooked):
            stack.callback(client.close)
        if large:
            calls = [
                (h.RAW, "InferenceServerClient", c.raw_large(protocol, raw)),
                (h.PYTRITON, "ModelClient", lambda client=pytriton: client.infer_sample(c.LARGE)),
                (h.XCLIENT, "ModelClient", lambda client=xclient: client.infer_sample(c.LARGE)),
            ]
        else:
            calls = [
                (h.RAW, "InferenceServerClient", c.raw_echo(protocol, raw)),
                (h.PYTRITON, "ModelClient", lambda client=pytriton: client.infer_sample(c.SAMPLE)),
                (h.XCLIENT, "ModelClient", lambda client=xclient: client.infer_sample(c.SAMPLE)),
                (h.XCLIENT, "ModelClient (str input)", lambda client=xclient: client.infer_sample(c.TEXT.decode())),
                (h.XCLIENT, "ModelClient (on_request hook)", lambda client=hooked: client.infer_sample(c.SAMPLE)),
            ]
        for library, label, call in calls:
            run = lambda call=call: timed_calls(call, requests)  # noqa: E731
            contenders.append(h.Contender(library, label, protocol, run, kind="sync"))
    return contenders


def run(urls: dict[str, str], *, rounds: int, requests: int) -> list[h.Table]:
    """The small request's table, then the 4 MB tensor's."""
    tables = []
    for large in (False, True):
        count = max(3, requests // 10) if large else requests
        with contextlib.ExitStack() as stack:
            outcomes = h.interleave(make_contenders(urls, count, stack, large=large), rounds)
        tables.append(report(outcomes, urls, rounds, count, large=large))
    return tables


def report(
    outcomes: list[h.Outcome], urls: dict[str, str], rounds: int, requests: int, *, large: bool = False
) -> h.Table:
    title, notes = (TITLE_LARGE, NOTES_LARGE) if large else (TITLE, NOTES)
    limit = MAX_OVERHEAD_LARGE if large else MAX_OVERHEAD
    table = h.Table.from_templates(title, COLUMNS, notes, rounds=rounds, requests=requests)
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
            passed = h.verdict(checked, outcome, x_raw, lambda v: v <= limit)
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
                what = "4 MB FP32 tensor" if large else "sync overhead"
                table.targets.append(h.Target(f"{what}, {protocol}", f"<= {limit:.2f}x raw p50", measured, passed))
    return table
