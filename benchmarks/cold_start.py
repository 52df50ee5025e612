"""Group 5: cold start: a new client's first request, and the time to fail on an unknown model.

Here the client is made inside the timed block (that is what is measured): each sample makes a
client, sends one request, and closes it. The raw floor sends the request with no config fetch or
readiness check (it knows the model); PyTriton and Xclient fetch the config first. On an unknown
model PyTriton waits for its ``init_timeout_s`` (default 300 s; set to ``PYTRITON_INIT_TIMEOUT_S``
here), Xclient fails on the server's first answer.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from . import _clients as c
from . import _harness as h

#: Xclient's target: an unknown model fails in under 50 ms.
MAX_FAILURE_S = 0.050
PYTRITON_INIT_TIMEOUT_S = 1.0
FIRST, UNKNOWN = "first request", "unknown model"
TITLE = "5. Cold start: a new client's first request; failing on an unknown model"
COLUMNS = ["case", "protocol", "client", "p50 (ms)", "max (ms)", "x raw", "x PyTriton", "target"]
NOTES = (
    "First request: {rounds} samples per client after a warm-up round; the client is made, sends one request "
    "(config fetch and readiness check included) and is closed (not timed).",
    "Unknown model: {failure_rounds} samples per client, no warm-up; time until the first call raises. PyTriton "
    "waits for init_timeout_s (default 300 s), set to {timeout:g} s here. Target: Xclient under 50 ms (p50).",
)


def timed(make: Callable[[], Any], send: Callable[[Any], Any], *, fails: bool) -> Callable[[], float]:
    """Seconds to make a client and get its first answer, or (``fails``) until its first call raises.
    Closing the client is not timed."""

    def run() -> float:
        start = time.perf_counter()
        client = make()
        try:
            send(client)
        except Exception:
            if not fails:
                raise
            return time.perf_counter() - start
        finally:
            client.close()
        if fails:
            raise RuntimeError(f"a request to {c.UNKNOWN_MODEL!r} did not fail")
        return time.perf_counter() - start

    return run


def make_contenders(urls: dict[str, str], case: str) -> list[h.Contender]:
    from pytriton.client import ModelClient as PyTritonModelClient

    from Xclient.client import ModelClient

    model = c.ECHO_MODEL if case == FIRST else c.UNKNOWN_MODEL
    contenders = []
    for protocol, url in urls.items():

        def raw_send(client: Any, protocol: str = protocol) -> Any:
            return c.raw_echo(protocol, client, model)()

        clients = [
            (
                h.RAW,
                "InferenceServerClient",
                lambda protocol=protocol, url=url: c.raw_sync_client(protocol, url),
                raw_send,
            ),
            (
                h.PYTRITON,
                "ModelClient",
                lambda url=url: PyTritonModelClient(url, model, init_timeout_s=PYTRITON_INIT_TIMEOUT_S),
                lambda client: client.infer_sample(c.SAMPLE),
            ),
            (
                h.XCLIENT,
                "ModelClient",
                lambda url=url: ModelClient(url, model),
                lambda client: client.infer_sample(c.SAMPLE),
            ),
        ]
        for library, label, make, send in clients:
            contenders.append(
                h.Contender(library, label, protocol, timed(make, send, fails=case == UNKNOWN), kind=case)
            )
    return contenders


def run(urls: dict[str, str], *, rounds: int, failure_rounds: int) -> h.Table:
    first = h.interleave(make_contenders(urls, FIRST), rounds)
    unknown = h.interleave(make_contenders(urls, UNKNOWN), failure_rounds, warmup=0)
    return report(first + unknown, rounds, failure_rounds)


def report(outcomes: list[h.Outcome], rounds: int, failure_rounds: int) -> h.Table:
    table = h.Table.from_templates(
        TITLE, COLUMNS, NOTES, rounds=rounds, failure_rounds=failure_rounds, timeout=PYTRITON_INIT_TIMEOUT_S
    )
    for outcome in outcomes:
        contender = outcome.contender
        case, protocol = contender.kind, contender.protocol
        floor = h.find(outcomes, kind=case, protocol=protocol, library=h.RAW)
        pytriton = h.find(outcomes, kind=case, protocol=protocol, library=h.PYTRITON)
        p50 = h.median(outcome.rounds)
        x_raw = h.ratio(p50, h.median(floor.rounds)) if floor else None
        x_pytriton = h.ratio(p50, h.median(pytriton.rounds)) if pytriton and contender.library == h.XCLIENT else None
        checked = case == UNKNOWN and contender.library == h.XCLIENT
        passed = h.verdict(checked, outcome, p50, lambda v: v < MAX_FAILURE_S)
        cells = {
            "case": case,
            "p50 (ms)": outcome.error or h.fmt(h.scaled(p50, 1e3), 2),
            "max (ms)": h.fmt(h.scaled(max(outcome.rounds, default=None), 1e3), 2),
            "x raw": h.ratio_cell(contender, x_raw),
            "x PyTriton": h.fmt_ratio(x_pytriton),
        }
        table.add_result(outcome, cells, passed, case=case, p50_s=p50, samples_s=outcome.rounds, ratio_raw=x_raw)
        if checked:
            measured = outcome.error or f"{h.fmt(h.scaled(p50, 1e3), 2)} ms"
            table.targets.append(h.Target(f"unknown model fails, {protocol}", "< 50 ms", measured, passed))
    return table
