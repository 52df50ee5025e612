"""Group 6: the client's own cost per request: CPU time, and resident memory after 1,000 requests.

Each measurement runs in a fresh Python process that imports only its client's library, so one
library's memory never counts against another. In that process: RSS after ``import numpy``
(the baseline), then the client is made, sends warm-up requests, and ``requests`` timed requests;
CPU time is the process's (``time.process_time``: every thread of the client process, gRPC's and
the HTTP client's included; the server is another process), divided by ``requests``. Processes
for the six contenders (three libraries, two protocols) run one after another, in an order
rotated each round.

Run as ``python -m benchmarks.client_cost LIBRARY PROTOCOL URL REQUESTS`` it is one such process
and prints its measurement as JSON.
"""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

from . import _clients as c  # numpy with it: the baseline includes numpy, which every client needs
from . import _harness as h

WARMUP_REQUESTS = 20
LABELS = {h.RAW: "InferenceServerClient", h.PYTRITON: "ModelClient", h.XCLIENT: "ModelClient"}
TITLE = "6. Client-side cost: CPU time per request, memory after {requests:,} requests"
COLUMNS = [
    "protocol",
    "client",
    "CPU (us/request)",
    "x raw CPU",
    "x PyTriton CPU",
    "RSS after {requests:,} (MB)",
    "RSS over baseline (MB)",
    "x raw (over baseline)",
]
NOTES = (
    "Each figure is the median of {rounds} fresh processes (one per client per round, order rotated). CPU: "
    "process CPU time (all the client's threads) over the timed requests / requests. Baseline: the process's "
    "RSS after importing numpy, before the client's library.",
)


def _client(library: str, protocol: str, url: str) -> tuple[Any, Callable[[], Any]]:
    """The client (imported here: its library's memory counts) and one request."""
    if library == h.RAW:
        client = c.raw_sync_client(protocol, url)
        return client, c.raw_echo(protocol, client)
    if library == h.PYTRITON:
        from pytriton.client import ModelClient as PyTritonModelClient

        client = PyTritonModelClient(url, c.ECHO_MODEL)
    else:
        from Xclient.client import ModelClient

        client = ModelClient(url, c.ECHO_MODEL)
    return client, lambda: client.infer_sample(c.SAMPLE)


def measure(library: str, protocol: str, url: str, requests: int) -> dict[str, float]:
    """One process's measurement (run it in a fresh process)."""
    baseline = h.rss_mb()
    client, call = _client(library, protocol, url)
    for _ in range(WARMUP_REQUESTS):
        call()
    cpu, wall = time.process_time(), time.perf_counter()
    for _ in range(requests):
        call()
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    result = {
        "cpu_us_per_request": cpu / requests * 1e6,
        "wall_us_per_request": wall / requests * 1e6,
        "rss_baseline_mb": baseline,
        "rss_mb": h.rss_mb(),
    }
    client.close()
    return result


def in_process(library: str, protocol: str, url: str, requests: int) -> Callable[[], dict[str, float]]:
    """A fresh process's measurement, run from the repository root."""
    root = pathlib.Path(__file__).resolve().parents[1]
    command = [sys.executable, "-m", "benchmarks.client_cost", library, protocol, url, str(requests)]

    def run() -> dict[str, float]:
        done = subprocess.run(command, cwd=root, capture_output=True, text=True, timeout=300, check=False)
        if done.returncode != 0:
            raise RuntimeError(done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "failed")
        return json.loads(done.stdout.strip().splitlines()[-1])

    return run


def run(urls: dict[str, str], *, rounds: int, requests: int) -> h.Table:
    contenders = [
        h.Contender(library, LABELS[library], protocol, in_process(library, protocol, url, requests))
        for protocol, url in urls.items()
        for library in (h.RAW, h.PYTRITON, h.XCLIENT)
    ]
    return report(h.interleave(contenders, rounds, warmup=0), rounds, requests)


def report(outcomes: list[h.Outcome], rounds: int, requests: int) -> h.Table:
    table = h.Table.from_templates(TITLE, COLUMNS, NOTES, rounds=rounds, requests=requests)

    def value(outcome: h.Outcome | None, name: str) -> float:
        """The median of a measure over the outcome's processes (NaN when there is none)."""
        return h.median([r[name] for r in outcome.rounds]) if outcome else float("nan")

    def growth(outcome: h.Outcome | None) -> float:
        return value(outcome, "rss_mb") - value(outcome, "rss_baseline_mb")

    for outcome in outcomes:
        contender = outcome.contender
        floor = h.find(outcomes, protocol=contender.protocol, library=h.RAW)
        pytriton = h.find(outcomes, protocol=contender.protocol, library=h.PYTRITON)
        cpu, rss = value(outcome, "cpu_us_per_request"), value(outcome, "rss_mb")
        x_pytriton = h.ratio(cpu, value(pytriton, "cpu_us_per_request")) if contender.library == h.XCLIENT else None
        cells = {
            "CPU (us/request)": outcome.error or h.fmt(cpu, 0),
            "x raw CPU": h.ratio_cell(contender, h.ratio(cpu, value(floor, "cpu_us_per_request"))),
            "x PyTriton CPU": h.fmt_ratio(x_pytriton),
            f"RSS after {requests:,} (MB)": h.fmt(rss, 1),
            "RSS over baseline (MB)": h.fmt(growth(outcome), 1),
            "x raw (over baseline)": h.ratio_cell(contender, h.ratio(growth(outcome), growth(floor))),
        }
        table.add_result(outcome, cells, cpu_us_per_request=cpu, rss_mb=rss, rss_over_baseline_mb=growth(outcome))
    return table


if __name__ == "__main__":
    import warnings

    warnings.simplefilter("ignore")
    library_arg, protocol_arg, url_arg, requests_arg = sys.argv[1:5]
    print(json.dumps(measure(library_arg, protocol_arg, url_arg, int(requests_arg))))
