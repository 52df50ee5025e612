"""Group 4: ``embed_documents`` on many short texts, against the demo ``bge-m3-v`` (real MiniLM on CPU).

Contenders, over HTTP: a raw loop of sequential batches of the model's ``max_batch_size`` (the floor),
the original approach (sequential batches of 12, also raw ``tritonclient``), and Xclient's
``MetaLMEmbeddings`` (batches of ``max_batch_size``, ``max_concurrency`` of them in flight); and, for
information, ``MetaLMEmbeddings`` with ``max_concurrency=1`` (its own cost without concurrency). Every
contender returns the dense vectors as lists of Python floats, as LangChain wants them, and asks
for every output (the model computes both anyway). The texts are split into one slice per round:
each round, every contender embeds that round's slice.

Triton's statistics give the server's compute time during each run: when the model is busy most
of the wall time already, sending batches concurrently cannot make the run much faster.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from . import _clients as c
from . import _harness as h

#: Xclient's target: at least twice the texts per second of the sequential raw loop.
MIN_SPEEDUP = 2.0
ORIGINAL_BATCH = 12
ONE_AT_A_TIME = "MetaLMEmbeddings, max_concurrency=1"
TITLE = "4. embed_documents on {count:,} short texts (bge-m3-v, real MiniLM on CPU, HTTP)"
COLUMNS = [
    "client",
    "texts/s",
    "time for {count:,} texts (s)",
    "x raw loop",
    "per-round x raw",
    "server compute share",
    "target",
]
NOTES = (
    "{rounds} rounds, each embedding a slice of {per_round:,} texts per client, after a warm-up round. The raw "
    "loop sends batches of {max_batch} (the model's max_batch_size) one after another; Xclient sends batches of "
    "{max_batch}, {concurrency} at a time (max_concurrency). Target: Xclient at least 2x the raw loop. The "
    "max_concurrency=1 row (Xclient's batches one at a time, like the raw loop) is for information: it "
    "separates Xclient's own cost from concurrency's.",
    "Texts: {count:,}, not the issue's 10,000: MiniLM embeds 40-130 short texts/s on these 2 cores (depending "
    "on the load), so 10,000 would take 80-250 s per contender, 5-17 minutes for the four.",
    "server compute share: the model's compute time (Triton's statistics) over the wall time of the run. The "
    "model has one CPU instance; near 100% the server is the bottleneck and concurrency on the client cannot "
    "make the run much faster.",
)


def texts(count: int) -> list[str]:
    """``count`` short, distinct texts (about 15 tokens each)."""
    return [f"Note {i}: the weather in city {i % 97} was mild on day {i % 31}, with light wind." for i in range(count)]


def server_compute_ns(client: Any) -> int:
    """The model's total compute time so far (input, infer, output), from Triton's statistics."""
    stats = client.get_inference_statistics(c.EMBED_MODEL)["model_stats"][0]["inference_stats"]
    return sum(int(stats[part]["ns"]) for part in ("compute_input", "compute_infer", "compute_output"))


def raw_loop(client: Any, batch_size: int) -> Callable[[list[str]], list[list[float]]]:
    """Sequential batches of ``batch_size`` with raw ``tritonclient.http``."""
    import tritonclient.http as httpclient

    def embed(batch_texts: list[str]) -> list[list[float]]:
        vectors: list[list[float]] = []
        for start in range(0, len(batch_texts), batch_size):
            batch = np.array([[t.encode()] for t in batch_texts[start : start + batch_size]], dtype=object)
            tensor = httpclient.InferInput("text", list(batch.shape), "BYTES")
            tensor.set_data_from_numpy(batch)
            vectors += client.infer(c.EMBED_MODEL, [tensor]).as_numpy("dense_vecs").astype(np.float64).tolist()
        return vectors

    return embed


def run(url: str, *, rounds: int, count: int, warmup_count: int) -> h.Table:
    from Xclient import MetaLMEmbeddings

    corpus = texts(count)
    per_round = count // rounds
    slices = [corpus[:warmup_count]] + [corpus[i * per_round : (i + 1) * per_round] for i in range(rounds)]
    stats_client = c.raw_sync_client("http", url)
    max_batch = int(stats_client.get_model_config(c.EMBED_MODEL)["max_batch_size"])
    raw = c.raw_sync_client("http", url)
    xclient = MetaLMEmbeddings(model=c.EMBED_MODEL, base_url=url)
    one_at_a_time = MetaLMEmbeddings(model=c.EMBED_MODEL, base_url=url, max_concurrency=1)

    def measured(embed: Callable[[list[str]], list[list[float]]]) -> Callable[[], tuple[float, int, int]]:
        remaining: Iterator[list[str]] = iter(slices)  # each contender's calls walk the same slices

        def one_round() -> tuple[float, int, int]:
            batch = next(remaining)
            compute = server_compute_ns(stats_client)
            start = time.perf_counter()
            vectors = embed(batch)
            seconds = time.perf_counter() - start
            if len(vectors) != len(batch):
                raise RuntimeError(f"{len(vectors)} vectors for {len(batch)} texts")
            return seconds, len(batch), server_compute_ns(stats_client) - compute

        return one_round

    contenders = [
        h.Contender(h.RAW, f"sequential batches of {max_batch}", "http", measured(raw_loop(raw, max_batch))),
        h.Contender(
            h.RAW, f"sequential batches of {ORIGINAL_BATCH} (original)", "http", measured(raw_loop(raw, ORIGINAL_BATCH))
        ),
        h.Contender(h.XCLIENT, "MetaLMEmbeddings.embed_documents", "http", measured(xclient.embed_documents)),
        h.Contender(h.XCLIENT, ONE_AT_A_TIME, "http", measured(one_at_a_time.embed_documents), kind="info"),
    ]
    try:
        outcomes = h.interleave(contenders, rounds)
    finally:
        xclient.close()
        one_at_a_time.close()
        raw.close()
        stats_client.close()
    return report(outcomes, count, rounds, max_batch, xclient.max_concurrency)


def report(outcomes: list[h.Outcome], count: int, rounds: int, max_batch: int, concurrency: int) -> h.Table:
    table = h.Table.from_templates(
        TITLE,
        COLUMNS,
        NOTES,
        count=count,
        rounds=rounds,
        per_round=count // rounds,
        max_batch=max_batch,
        concurrency=concurrency,
    )
    floor = h.find(outcomes, library=h.RAW, label=f"sequential batches of {max_batch}")
    floor_rate = _rate(floor)
    for outcome in outcomes:
        contender = outcome.contender
        rate = _rate(outcome)
        x_raw = h.ratio(rate, floor_rate)
        spread = h.round_ratios(outcome, floor, lambda r: r[1] / r[0]) if floor and floor is not outcome else []
        wall = sum(r[0] for r in outcome.rounds)
        share = sum(r[2] for r in outcome.rounds) / 1e9 / wall if wall else None
        checked = contender.library == h.XCLIENT and contender.kind != "info"
        passed = h.verdict(checked, outcome, x_raw, lambda v: v >= MIN_SPEEDUP)
        cells = {
            "texts/s": outcome.error or h.fmt(rate, 0),
            f"time for {count:,} texts (s)": h.fmt(count / rate if rate else None, 1),
            "x raw loop": "floor" if outcome is floor else h.fmt_ratio(x_raw),
            "per-round x raw": h.fmt_spread(spread),
            "server compute share": h.fmt(h.scaled(share, 100), 0, "%"),
        }
        numbers = {"texts_per_s": rate, "ratio_raw": x_raw, "round_ratios": spread, "server_compute_share": share}
        table.add_result(outcome, cells, passed, **numbers)
        if checked:
            measured = outcome.error or f"{h.fmt_ratio(x_raw)} the raw loop ({h.fmt(rate, 0)} texts/s)"
            table.targets.append(h.Target("embed_documents speed-up", ">= 2x the raw loop", measured, passed))
    return table


def _rate(outcome: h.Outcome | None) -> float | None:
    """Texts per second over every kept round."""
    if outcome is None or not outcome.rounds:
        return None
    return sum(r[1] for r in outcome.rounds) / sum(r[0] for r in outcome.rounds)
