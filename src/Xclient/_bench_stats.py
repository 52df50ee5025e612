"""The arithmetic of ``xclient bench``, with no I/O: what one request measured (:class:`Sample`), the
summary of one load level (:func:`summarize`), goals (:func:`parse_goals`), request-rate arrival times
(:func:`arrivals`) and the Markdown report (:func:`markdown`). The command (``Xclient/cli/_bench.py``)
times the requests; everything it reports is computed here, so a unit test can drive it with made-up
samples.

Definitions (those of genai-perf and AIPerf):

- **request latency**: from sending the request to its last response;
- **TTFT**: from sending to the first response that carries text; **time to second token**: from the
  first such response to the second;
- **ITL** (inter-token latency) of one request: ``(latency - TTFT) / (output tokens - 1)``, so that
  ``TTFT + ITL x (tokens - 1) = latency``; a request of one token, or answered in one response (not
  streamed), has none;
- **output tokens/s per user**: ``1 / ITL`` per request; **output tokens/s**: all output tokens of the
  level over its duration; **requests/s**: successful requests over the duration;
- **goodput**: requests/s counting only the requests that meet every goal (``--goal ttft_ms=200``); a
  goal on a value a request does not have (ITL of a one-token answer) does not count against it.

Output tokens come from the backend's own counts when it returns them (vLLM's and TensorRT-LLM's
``num_output_tokens``), else from the tokenizer when one is configured (``--tokenizer``), else they are
the streamed responses that carried text, one token each: :attr:`Sample.tokens_source` and the report
say which.
"""

from __future__ import annotations

import dataclasses
import math
import random
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal, cast

from .exceptions import XclientValueError

#: Where a request's output tokens came from: the backend's counts, the configured tokenizer (the usage's
#: ``usage_source``), or the streamed responses that carried text, counted.
TokensSource = Literal["backend", "tokenizer", "backend+tokenizer", "responses"]

#: What ``--goal`` can set, in milliseconds: the per-request value each one limits.
GOALS = ("ttft_ms", "ttst_ms", "itl_ms", "latency_ms")

#: The percentiles every distribution reports.
PERCENTILES = (50, 90, 99)


@dataclasses.dataclass(frozen=True)
class Sample:
    """One request, timed on one monotonic clock (seconds).

    ``token_times``: when each response carrying text arrived (LLMs; empty for other models).
    ``output_tokens``: the backend's count (None: it returns none, the responses are counted).
    ``error``: the first line of the failure, for a request that failed (its times are not used).
    """

    start: float
    end: float
    token_times: tuple[float, ...] = ()
    output_tokens: int | None = None
    input_tokens: int | None = None
    error: str | None = None
    usage_source: str | None = None  # the usage's source when output_tokens is given (default: the backend)

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def latency(self) -> float:
        return self.end - self.start

    @property
    def tokens(self) -> int:
        """Output tokens: the backend's count, else the responses that carried text."""
        return self.output_tokens if self.output_tokens is not None else len(self.token_times)

    @property
    def tokens_source(self) -> TokensSource:
        if self.output_tokens is None:
            return "responses"
        if self.usage_source in ("tokenizer", "backend+tokenizer"):
            return cast(TokensSource, self.usage_source)
        return "backend"

    @property
    def ttft(self) -> float | None:
        return self.token_times[0] - self.start if self.token_times else None

    @property
    def ttst(self) -> float | None:
        return self.token_times[1] - self.token_times[0] if len(self.token_times) > 1 else None

    @property
    def itl(self) -> float | None:
        ttft = self.ttft
        if ttft is None or self.tokens < 2 or len(self.token_times) < 2:
            return None  # one token, or one response (not streamed): no time between tokens was seen
        return (self.latency - ttft) / (self.tokens - 1)

    def value(self, goal: str) -> float | None:
        """The value ``goal`` (one of :data:`GOALS`) limits, in milliseconds (None: this request has none)."""
        seconds = {"ttft_ms": self.ttft, "ttst_ms": self.ttst, "itl_ms": self.itl, "latency_ms": self.latency}[goal]
        return None if seconds is None else seconds * 1000

    def meets(self, goals: Mapping[str, float]) -> bool:
        """Whether this request met every goal (a value it does not have is not held against it)."""
        if not self.ok:
            return False
        return all((value := self.value(goal)) is None or value <= limit for goal, limit in goals.items())


def parse_goals(text: str | None) -> dict[str, float]:
    """``ttft_ms=200,itl_ms=20`` as ``{"ttft_ms": 200.0, "itl_ms": 20.0}`` (None or "": no goals).

    >>> parse_goals("ttft_ms=200, itl_ms=20.5")
    {'ttft_ms': 200.0, 'itl_ms': 20.5}
    """
    goals: dict[str, float] = {}
    for part in (text or "").split(","):
        if not part.strip():
            continue
        name, sep, value = (p.strip() for p in part.partition("="))
        if name not in GOALS or not sep:
            raise XclientValueError(
                f"--goal: expected NAME=MILLISECONDS with NAME one of {', '.join(GOALS)}, got {part.strip()!r}"
            )
        try:
            limit = float(value)
        except ValueError:
            limit = math.nan
        if not limit > 0 or math.isinf(limit):
            raise XclientValueError(f"--goal: {name} expected a positive number of milliseconds, got {value!r}")
        goals[name] = limit
    return goals


def arrivals(rate: float, count: int, *, poisson: bool = True, seed: int = 0) -> list[float]:
    """When each of ``count`` requests starts, in seconds from the start, at ``rate`` requests/s: gaps
    drawn from an exponential distribution (a Poisson process, seeded: the same run each time) or
    constant.

    >>> arrivals(4, 3, poisson=False)
    [0.0, 0.25, 0.5]
    """
    if not rate > 0 or math.isinf(rate):
        raise XclientValueError(f"--request-rate: expected a positive number of requests per second, got {rate!r}")
    if not poisson:
        return [i / rate for i in range(count)]
    rng = random.Random(seed)
    times, now = [], 0.0
    for _ in range(count):
        times.append(now)
        now += rng.expovariate(rate)
    return times


def distribution(values: Iterable[float], scale: float = 1000.0) -> dict[str, float] | None:
    """mean, min, max and the :data:`PERCENTILES` (``p50``...) of ``values`` times ``scale`` (seconds to
    milliseconds by default); None when there are none. Percentiles interpolate linearly (numpy's default).

    >>> distribution([0.001, 0.002, 0.003, 0.004])["p50"]
    2.5
    """
    data = sorted(v * scale for v in values)
    if not data:
        return None
    found = {"mean": sum(data) / len(data), "min": data[0], "max": data[-1]}
    for q in PERCENTILES:
        found[f"p{q}"] = percentile(data, q)
    return {key: round(value, 6) for key, value in found.items()}


def percentile(data: Sequence[float], q: float) -> float:
    """The ``q``-th percentile of sorted ``data`` (linear interpolation between the closest ranks)."""
    position = (len(data) - 1) * q / 100
    low = math.floor(position)
    high = min(low + 1, len(data) - 1)
    return data[low] + (data[high] - data[low]) * (position - low)


def summarize(
    samples: Sequence[Sample],
    *,
    duration_s: float,
    goals: Mapping[str, float] | None = None,
    llm: bool,
    load: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """One load level's report: counts, rates and distributions (the keys of ``--json``'s ``levels``).

    ``duration_s``: the wall time of the measured requests (the warm-up excluded). ``load``: how the
    level was driven (``{"concurrency": 4}`` or ``{"request_rate": 2.0}``), copied in.
    """
    goals = dict(goals or {})
    ok = [s for s in samples if s.ok]
    errors: dict[str, int] = {}
    for s in samples:
        if s.error is not None:
            errors[s.error] = errors.get(s.error, 0) + 1
    per_s = (lambda n: n / duration_s) if duration_s > 0 else (lambda n: 0.0)
    met = sum(s.meets(goals) for s in ok) if goals else len(ok)
    report: dict[str, Any] = {
        **dict(load or {}),
        "requests": len(samples),
        "succeeded": len(ok),
        "failed": len(samples) - len(ok),
        "errors": errors,
        "duration_s": round(duration_s, 6),
        "requests_per_s": round(per_s(len(ok)), 6),
        "latency_ms": distribution(s.latency for s in ok),
    }
    if llm:
        sources = {s.tokens_source for s in ok}
        tokens = sum(s.tokens for s in ok)
        inputs = [s.input_tokens for s in ok]
        itls = [itl for s in ok if (itl := s.itl) is not None]
        report.update(
            ttft_ms=distribution(t for s in ok if (t := s.ttft) is not None),
            ttst_ms=distribution(t for s in ok if (t := s.ttst) is not None),
            itl_ms=distribution(itls),
            output_tokens=tokens,
            input_tokens=sum(i for i in inputs if i is not None) if inputs and None not in inputs else None,
            tokens_source=sources.pop() if len(sources) == 1 else ("mixed" if sources else None),
            output_tokens_per_s=round(per_s(tokens), 6),
            output_tokens_per_s_per_user=distribution((1 / itl for itl in itls if itl > 0), scale=1.0),
        )
    report.update(
        goals=goals,
        goodput_requests=met,
        goodput_per_s=round(per_s(met), 6),
    )
    return report


# -- the Markdown report ---------------------------------------------------------------------------------

TOKENS_SOURCE = {
    "backend": "the backend's own token counts",
    "tokenizer": "counted with the configured tokenizer (the backend returns no counts)",
    "backend+tokenizer": "the backend's counts, completed with the configured tokenizer",
    "responses": "counted streamed responses (one token each: the backend returns no counts)",
    "mixed": "the backend's counts for some requests, counted responses for others",
    None: "none (no request succeeded)",
}


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)


def load_label(level: Mapping[str, Any]) -> str:
    if "concurrency" in level:
        return f"concurrency {level['concurrency']}"
    if "request_rate" in level:
        return f"{level['request_rate']:g} req/s ({level.get('arrivals', 'poisson')})"
    return "-"


def table_rows(levels: Sequence[Mapping[str, Any]], llm: bool) -> tuple[list[str], list[list[str]]]:
    """The summary table (headers, rows), one row per level: what the terminal and the report show."""
    headers = ["load", "ok", "failed", "req/s", "latency p50 ms", "p90", "p99"]
    if llm:
        headers += ["TTFT p50 ms", "p99", "ITL p50 ms", "p99", "tokens/s", "tokens/s/user p50"]
    headers.append("goodput req/s")
    rows = []
    for level in levels:
        latency = level.get("latency_ms") or {}
        row = [
            load_label(level),
            _cell(level["succeeded"]),
            _cell(level["failed"]),
            _cell(level["requests_per_s"]),
            _cell(latency.get("p50")),
            _cell(latency.get("p90")),
            _cell(latency.get("p99")),
        ]
        if llm:
            ttft, itl = level.get("ttft_ms") or {}, level.get("itl_ms") or {}
            user = level.get("output_tokens_per_s_per_user") or {}
            row += [
                _cell(ttft.get("p50")),
                _cell(ttft.get("p99")),
                _cell(itl.get("p50")),
                _cell(itl.get("p99")),
                _cell(level["output_tokens_per_s"]),
                _cell(user.get("p50")),
            ]
        row.append(_cell(level["goodput_per_s"]))
        rows.append(row)
    return headers, rows


def markdown(report: Mapping[str, Any]) -> str:
    """The whole run as a Markdown document: what was measured, a summary table, then each level's details."""
    llm = report["kind"] == "llm"
    levels = report["levels"]
    backend = f", {report['backend']}" if report.get("backend") else ""
    lines = [
        f"# xclient bench: {report['model']}",
        "",
        f"- server: `{report['url']}` ({report['protocol']})",
        f"- model: `{report['model']}` ({report['kind']}{backend})",
        f"- requests per level: {report['load']['requests'] or '-'}; duration per level: "
        f"{_cell(report['load']['duration_s'])} s; warm-up: {report['load']['warmup']} (discarded)",
    ]
    if report.get("prompt") is not None:
        lines.append(f"- prompt: {report['prompt']!r}")
    if llm:
        lines.append(f"- output tokens: {TOKENS_SOURCE.get(levels[-1].get('tokens_source') if levels else None)}")
    goals = report.get("goals") or {}
    lines.append(
        "- goals: " + (", ".join(f"{k} <= {v:g}" for k, v in goals.items()) if goals else "none (goodput = throughput)")
    )
    headers, rows = table_rows(levels, llm)
    lines += ["", "| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    names = ["latency_ms", *(["ttft_ms", "ttst_ms", "itl_ms", "output_tokens_per_s_per_user"] if llm else [])]
    for level in levels:
        lines += [
            "",
            f"## {load_label(level)}",
            "",
            "| metric | mean | min | p50 | p90 | p99 | max |",
            "|---|---|---|---|---|---|---|",
        ]
        for name in names:
            stats = level.get(name) or {}
            lines.append(
                f"| {name} | "
                + " | ".join(_cell(stats.get(k)) for k in ("mean", "min", "p50", "p90", "p99", "max"))
                + " |"
            )
        facts = [
            f"requests: {level['requests']} ({level['failed']} failed)",
            f"duration: {_cell(level['duration_s'])} s",
        ]
        if llm:
            facts += [f"output tokens: {level['output_tokens']}", f"input tokens: {_cell(level['input_tokens'])}"]
        facts.append(f"goodput: {level['goodput_requests']} requests")
        lines += [""] + [f"- {fact}" for fact in facts]
        for error, count in level["errors"].items():
            lines.append(f"- error ({count}x): {error}")
    return "\n".join(lines) + "\n"
