"""``xclient bench [MODEL]``: measure a model on a server from the client side, as genai-perf and AIPerf do.

The model's kind is detected as the library detects contracts (``--kind`` overrides it): an LLM (vLLM,
TensorRT-LLM, FastDeploy) streams through the engine ChatMetaLM runs on (:func:`Xclient.llms._engine.arun`,
the asyncio clients); an embeddings model goes through :class:`~Xclient.MetaLMEmbeddings`, a reranker
through :class:`~Xclient.MetaLMRerank`, any other model through :class:`~Xclient.client.AsyncioModelClient`
with inputs made from its config.

Load: a closed loop at each ``--concurrency`` level (``1,4,16``: a sweep), or an open loop at
``--request-rate`` (Poisson or constant arrivals); ``--warmup`` requests first, discarded; then
``--requests`` per level, or as many as ``--duration`` seconds allow. Every request has the
connection's deadline (``--timeout``). The numbers are computed in :mod:`Xclient._bench_stats`.

Output: a table (and a ``rich`` progress display when stderr is a terminal), ``--json [FILE]``,
``--report FILE.md`` and ``--plot FILE.png`` (matplotlib: the ``bench`` extra).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import pathlib
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from .. import _bench_stats as stats
from ..exceptions import XclientError, XclientValueError
from ._app import Commands, Context
from ._llm import Generator, add_llm_options, llm_target
from ._output import first_line, is_tty, to_json

if TYPE_CHECKING:
    from ..client import ModelConfig

#: The default prompt (Chinese, as our users write); ``--prompt`` replaces it.
DEFAULT_PROMPT = "请用三句话介绍一下 Triton 推理服务器，以及它为什么适合部署大语言模型。"
#: Passages a reranker scores per request (generated from the prompt) unless ``--batch-size`` says.
DEFAULT_PASSAGES = 8
#: Elements of each variable-size (-1) dimension of a generated tensor input.
DEFAULT_LENGTH = 16
DEFAULT_REQUESTS = 20
DEFAULT_WARMUP = 2
DEFAULT_MAX_TOKENS = 64
KINDS = ("auto", "llm", "embed", "rerank", "tensor")
BENCH_EXTRA_HINT = "pip install 'llmops-xclient[bench]'"

Send = Callable[[], Awaitable[stats.Sample]]
clock = time.perf_counter


def add_commands(commands: Commands) -> None:
    bench = commands.add(
        "bench",
        _bench,
        help="measure a model on the server from the client side: latency percentiles and throughput; for "
        "LLMs also TTFT, ITL, tokens/s and goodput",
        examples=[
            "xclient bench                                         # the demo LLM, concurrency 1",
            "xclient bench Qwen2-0.5B-Instruct --concurrency 1,4,16 --requests 50 --plot sweep.png",
            "xclient bench --request-rate 5 --duration 30 --goal ttft_ms=500,itl_ms=50 --report bench.md",
            "xclient bench bge-m3-v --batch-size 8 --concurrency 1,8 --json bench.json",
            "xclient bench my_model --kind tensor --length 128",
        ],
    )
    bench.add_argument("model_arg", nargs="?", metavar="MODEL", help="the model (default: --model)")
    load = bench.add_argument_group("load")
    load.add_argument(
        "--concurrency",
        metavar="N[,N...]",
        help="requests in flight at once; a list sweeps (default 1)",
    )
    load.add_argument("--request-rate", type=float, metavar="R", help="requests per second instead (an open loop)")
    load.add_argument(
        "--arrivals",
        choices=("poisson", "constant"),
        default="poisson",
        help="how --request-rate spaces requests (default poisson, seeded)",
    )
    load.add_argument("--requests", type=int, metavar="N", help=f"requests per level (default {DEFAULT_REQUESTS})")
    load.add_argument("--duration", type=float, metavar="SECONDS", help="measure each level for this long instead")
    load.add_argument(
        "--warmup",
        type=int,
        default=DEFAULT_WARMUP,
        metavar="N",
        help=f"requests first, discarded (default {DEFAULT_WARMUP})",
    )
    load.add_argument(
        "--goal", metavar="NAME=MS,...", help=f"latency goals for goodput: {', '.join(stats.GOALS)} (milliseconds)"
    )
    what = bench.add_argument_group("what to send")
    what.add_argument("--kind", choices=KINDS, default="auto", help="the model's kind (default: detected)")
    what.add_argument("--prompt", metavar="TEXT", help="the prompt, text or query (default: a Chinese question)")
    what.add_argument(
        "--batch-size",
        type=int,
        metavar="N",
        help=f"texts per embeddings request, passages per rerank request (default {DEFAULT_PASSAGES}), "
        "rows per tensor request (default 1)",
    )
    what.add_argument(
        "--length",
        type=int,
        default=DEFAULT_LENGTH,
        metavar="N",
        help=f"size of a tensor's -1 dims (default {DEFAULT_LENGTH})",
    )
    add_llm_options(bench, default_max_tokens=DEFAULT_MAX_TOKENS)
    out = bench.add_argument_group("output")
    out.add_argument(
        "--json", nargs="?", const="-", metavar="FILE", help="the results as JSON: to FILE, or stdout (no table)"
    )
    out.add_argument("--report", type=pathlib.Path, metavar="FILE.md", help="a Markdown report")
    out.add_argument(
        "--plot",
        type=pathlib.Path,
        metavar="FILE.png",
        help=f"latency against throughput over the levels ({BENCH_EXTRA_HINT})",
    )


# -- the options, checked before anything is sent ------------------------------------------------------


def parse_concurrency(text: str | None) -> list[int]:
    """``1,4,16`` as ``[1, 4, 16]`` (None: ``[1]``)."""
    if text is None:
        return [1]
    levels = []
    for part in text.split(","):
        try:
            level = int(part.strip())
        except ValueError:
            level = 0
        if level < 1:
            raise XclientValueError(f"--concurrency: expected positive integers separated by commas, got {text!r}")
        levels.append(level)
    return levels


def _check_load(args: argparse.Namespace) -> None:
    if args.request_rate is not None and args.concurrency is not None:
        raise XclientValueError("--concurrency and --request-rate: give one (a closed loop or an open one)")
    if args.requests is not None and args.duration is not None:
        raise XclientValueError("--requests and --duration: give one")
    parse_concurrency(args.concurrency)
    if args.request_rate is not None:
        stats.arrivals(args.request_rate, 0)
    for flag, value in (("--requests", args.requests), ("--batch-size", args.batch_size), ("--length", args.length)):
        if value is not None and value < 1:
            raise XclientValueError(f"{flag}: expected a positive integer, got {value}")
    if args.warmup < 0:
        raise XclientValueError(f"--warmup: expected 0 or more requests, got {args.warmup}")
    if args.duration is not None and not (args.duration > 0 and math.isfinite(args.duration)):
        raise XclientValueError(f"--duration: expected a positive number of seconds, got {args.duration}")
    if args.plot is not None:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise ImportError(f"--plot needs matplotlib: {BENCH_EXTRA_HINT}") from None


# -- the model: its kind and how one request is sent -------------------------------------------------


def detect_kind(config: ModelConfig, adapter_options: dict[str, Any]) -> str:
    """``llm``, ``embed``, ``rerank`` or ``tensor``, by the contracts the library detects: an LLM backend
    (vLLM, TensorRT-LLM, FastDeploy), then the embeddings and rerank contracts, else any tensor model
    (a generic text model too: ``--kind llm`` benches it as an LLM)."""
    from ..llms._backends import detect_backend_name

    with contextlib.suppress(XclientError):
        if detect_backend_name(config) != "text":
            return "llm"
    from ..embeddings import MetaLMEmbeddings
    from ..rerank import MetaLMRerank

    for kind, adapter in (("embed", MetaLMEmbeddings), ("rerank", MetaLMRerank)):
        with contextlib.suppress(XclientError):
            adapter(**adapter_options).detect_contract(config)
            return kind
    return "tensor"


def tensor_inputs(config: ModelConfig, text: str, length: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """One sample's inputs made from ``config``: its required inputs (all of them when none is required),
    -1 dims of ``length``, numbers drawn at random, BYTES filled with ``text``, BOOL False."""
    specs = [s for s in config.inputs if not s.optional] or list(config.inputs)
    made = {}
    for spec in specs:
        shape = tuple(length if d < 0 else d for d in spec.shape)
        if spec.is_bytes:
            array: np.ndarray = np.full(shape, text.encode(), dtype=object)
        elif spec.dtype == np.bool_:
            array = np.zeros(shape, dtype=np.bool_)
        elif spec.dtype.kind == "f":
            array = rng.random(shape).astype(spec.dtype)
        else:
            array = rng.integers(0, 100, shape).astype(spec.dtype)
        made[spec.name] = array
    return made


def _failed(start: float, error: BaseException) -> stats.Sample:
    return stats.Sample(start, clock(), error=f"{type(error).__name__}: {first_line(str(error))[0]}")


class Target:
    """The model under test: ``send()`` runs one request and times it; ``close()`` on the same loop."""

    def __init__(self, ctx: Context, kind: str, model: str, config: ModelConfig) -> None:
        self.kind, self.model, self.config = kind, model, config
        args = ctx.args
        self.prompt = args.prompt or DEFAULT_PROMPT
        self.backend: str | None = None
        self._closers: list[Callable[[], Any]] = []
        options = {**ctx.connection.adapter_options(), "model": model, "model_version": args.model_version}
        if kind == "llm":
            self.llm = Generator.of(ctx, model)
            messages = [*([("system", args.system)] if args.system else []), ("user", self.prompt)]
            self.call = self.llm.call(messages, stream=args.stream)
            from ..llms._backends import detect_backend_name

            self.backend = detect_backend_name(config)
            self._closers.append(self.llm.engine.aclose)
            self.send: Send = self._llm
        elif kind == "embed":
            from ..embeddings import MetaLMEmbeddings

            self.embeddings = MetaLMEmbeddings(**options, max_concurrency=1)
            self.texts = [self.prompt] * (args.batch_size or 1)
            self._closers.append(self.embeddings.aclose)
            self.send = self._embed
        elif kind == "rerank":
            from ..rerank import MetaLMRerank

            self.reranker = MetaLMRerank(**options, max_concurrency=1)
            count = args.batch_size or DEFAULT_PASSAGES
            self.passages = [f"第 {i + 1} 段：{self.prompt}" for i in range(count)]
            self._closers.append(self.reranker.aclose)
            self.send = self._rerank
        else:
            from ..client import AsyncioModelClient

            if config.decoupled:
                raise XclientValueError(
                    f"model {model!r} is decoupled (it streams) and speaks no LLM contract Xclient knows: "
                    "bench measures decoupled LLMs only (--kind llm for a text model)"
                )
            self.client = AsyncioModelClient(
                ctx.connection.url, model, args.model_version, model_config=config, **ctx.connection.client_options()
            )
            rows = args.batch_size or 1
            sample = tensor_inputs(config, self.prompt, args.length, np.random.default_rng(0))
            if config.batching:
                self.inputs = {name: np.stack([value] * rows) for name, value in sample.items()}
            else:
                self.inputs = sample
            self._closers.append(self.client.close)
            self.send = self._tensor

    async def _llm(self) -> stats.Sample:
        from ..llms._engine import arun

        start = clock()
        times: list[float] = []
        ending = None
        try:
            async for piece in arun(self.llm.engine, self.call):
                now = clock()
                if isinstance(piece, str):
                    times.append(now)
                else:
                    ending = piece
                    if piece.text:
                        times.append(now)
        except (XclientError, OSError, asyncio.TimeoutError) as error:
            return _failed(start, error)
        usage = ending.usage if ending is not None else None
        return stats.Sample(
            start,
            clock(),
            tuple(times),
            output_tokens=None if usage is None else usage["output_tokens"],
            input_tokens=None if usage is None else usage["input_tokens"],
            usage_source=None if ending is None else ending.metadata.get("usage_source"),
        )

    async def _embed(self) -> stats.Sample:
        return await self._timed(lambda: self.embeddings.aembed_documents(self.texts))

    async def _rerank(self) -> stats.Sample:
        return await self._timed(lambda: self.reranker.arerank(self.prompt, self.passages))

    async def _tensor(self) -> stats.Sample:
        call = self.client.infer_batch if self.config.batching else self.client.infer_sample
        return await self._timed(lambda: call(**self.inputs))

    async def _timed(self, request: Callable[[], Awaitable[Any]]) -> stats.Sample:
        start = clock()
        try:
            await request()
        except (XclientError, OSError, asyncio.TimeoutError) as error:
            return _failed(start, error)
        return stats.Sample(start, clock())

    async def close(self) -> None:
        for close in self._closers:
            with contextlib.suppress(Exception):
                await close()


# -- the load -----------------------------------------------------------------------------------------


async def closed_loop(
    send: Send, concurrency: int, *, requests: int | None, duration_s: float | None, done: Callable[[], None]
) -> tuple[list[stats.Sample], float]:
    """``concurrency`` workers, each sending its next request when the last one ends, until ``requests``
    were sent or ``duration_s`` passed; the samples and the wall time."""
    samples: list[stats.Sample] = []
    start = clock()
    deadline = start + duration_s if duration_s is not None else math.inf
    issued = 0

    async def worker() -> None:
        nonlocal issued
        while (requests is None or issued < requests) and clock() < deadline:
            issued += 1
            samples.append(await send())
            done()

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return samples, clock() - start


async def open_loop(
    send: Send, starts: Sequence[float], *, duration_s: float | None, done: Callable[[], None]
) -> tuple[list[stats.Sample], float]:
    """A request at each of ``starts`` (seconds from now) whatever is in flight, until ``duration_s``."""
    begin = clock()
    tasks = []

    async def one() -> stats.Sample:
        sample = await send()
        done()
        return sample

    for offset in starts:
        if duration_s is not None and offset >= duration_s:
            break
        if (delay := begin + offset - clock()) > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one()))
    samples = list(await asyncio.gather(*tasks))
    return samples, clock() - begin


class Progress:
    """A ``rich`` progress bar per level on a terminal's stderr; a line per level otherwise."""

    def __init__(self, ctx: Context) -> None:
        self._console = ctx.console
        self._rich: Any = None
        if is_tty(ctx.console.stderr):
            with contextlib.suppress(ImportError):
                from rich.console import Console as RichConsole
                from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

                self._rich = Progress(
                    TextColumn("{task.description}"),
                    BarColumn(),
                    MofNCompleteColumn(),
                    TimeElapsedColumn(),
                    console=RichConsole(file=ctx.console.stderr),
                    transient=False,
                )
        self._task: Any = None

    @contextlib.contextmanager
    def running(self) -> Iterator[None]:
        if self._rich is None:
            yield
            return
        with self._rich:
            yield

    def start(self, label: str, total: int | None) -> None:
        if self._rich is not None:
            self._task = self._rich.add_task(label, total=total)

    def advance(self) -> None:
        if self._rich is not None and self._task is not None:
            self._rich.advance(self._task)

    def finish(self, label: str, level: dict[str, Any]) -> None:
        if self._rich is None:
            self._console.note(
                f"{label}: {level['succeeded']} ok, {level['failed']} failed, {level['requests_per_s']:.2f} req/s"
            )


async def run_levels(ctx: Context, target: Target, goals: dict[str, float]) -> list[dict[str, Any]]:
    """Every load level: the warm-up, then the measured requests, summarized."""
    args = ctx.args
    requests = args.requests if args.requests is not None or args.duration is not None else DEFAULT_REQUESTS
    progress = Progress(ctx)
    llm = target.kind == "llm"
    levels = []
    with progress.running():
        if args.request_rate is not None:
            count = requests if requests is not None else math.ceil(args.request_rate * args.duration)
            plan = [("rate", args.request_rate)]
        else:
            count = requests
            plan = [("concurrency", c) for c in parse_concurrency(args.concurrency)]
        for mode, value in plan:
            label = f"concurrency {value}" if mode == "concurrency" else f"{value:g} req/s"
            if args.warmup:
                await closed_loop(
                    target.send,
                    min(args.warmup, int(value) if mode == "concurrency" else 1),
                    requests=args.warmup,
                    duration_s=None,
                    done=lambda: None,
                )
            progress.start(label, count)
            if mode == "concurrency":
                samples, duration = await closed_loop(
                    target.send, int(value), requests=requests, duration_s=args.duration, done=progress.advance
                )
                load: dict[str, Any] = {"concurrency": int(value)}
            else:
                starts = stats.arrivals(value, count, poisson=args.arrivals == "poisson")
                samples, duration = await open_loop(
                    target.send, starts, duration_s=args.duration, done=progress.advance
                )
                load = {"request_rate": value, "arrivals": args.arrivals}
            level = stats.summarize(samples, duration_s=duration, goals=goals, llm=llm, load=load)
            level["samples"] = [_sample_record(s) for s in samples]
            progress.finish(label, level)
            levels.append(level)
    return levels


def _sample_record(sample: stats.Sample) -> dict[str, Any]:
    """One request in ``--json``: its values in milliseconds (what the summary was computed from)."""

    def ms(value: float | None) -> float | None:
        return None if value is None else round(value * 1000, 6)

    record: dict[str, Any] = {"latency_ms": ms(sample.latency), "error": sample.error}
    if sample.token_times or sample.output_tokens is not None:
        record.update(
            ttft_ms=ms(sample.ttft),
            ttst_ms=ms(sample.ttst),
            itl_ms=ms(sample.itl),
            output_tokens=sample.tokens,
            input_tokens=sample.input_tokens,
            tokens_source=sample.tokens_source,
            responses=len(sample.token_times),
        )
    return record


# -- the command ---------------------------------------------------------------------------------------


def _bench(ctx: Context) -> int:
    args = ctx.args
    _check_load(args)
    goals = stats.parse_goals(args.goal)
    model, _ = llm_target(ctx, args.model_arg)
    with ctx.connection.server() as server:
        config = server.model_config(model, args.model_version)
    kind = detect_kind(config, ctx.connection.adapter_options()) if args.kind == "auto" else args.kind
    report = asyncio.run(_measure(ctx, kind, model, config, goals))
    failed = sum(level["failed"] for level in report["levels"])
    _write(ctx, report)
    return 0 if failed == 0 else 1


async def _measure(ctx: Context, kind: str, model: str, config: ModelConfig, goals: dict[str, float]) -> dict[str, Any]:
    from .. import __version__

    args = ctx.args
    target = Target(ctx, kind, model, config)
    try:
        levels = await run_levels(ctx, target, goals)
    finally:
        await target.close()
    return {
        "xclient": __version__,
        "model": model,
        "url": ctx.connection.url,
        "protocol": ctx.connection.protocol,
        "kind": kind,
        "backend": target.backend,
        "prompt": target.prompt if kind != "tensor" or any(s.is_bytes for s in config.inputs) else None,
        "stream": bool(args.stream) if kind == "llm" else None,
        "max_tokens": target.call.sampling.max_tokens if kind == "llm" else None,
        "load": {
            "requests": args.requests if args.requests is not None or args.duration is not None else DEFAULT_REQUESTS,
            "duration_s": args.duration,
            "warmup": args.warmup,
            "concurrency": parse_concurrency(args.concurrency) if args.request_rate is None else None,
            "request_rate": args.request_rate,
            "arrivals": args.arrivals if args.request_rate is not None else None,
        },
        "goals": goals,
        "levels": levels,
    }


def _write(ctx: Context, report: dict[str, Any]) -> None:
    args, console = ctx.args, ctx.console
    if args.json == "-":
        console.print(to_json(report))
    else:
        if args.json is not None:
            pathlib.Path(args.json).write_text(to_json(report) + "\n", encoding="utf-8")
        headers, rows = stats.table_rows(report["levels"], report["kind"] == "llm")
        console.table(headers, rows)
        if report["kind"] == "llm":
            source = report["levels"][-1].get("tokens_source") if report["levels"] else None
            console.note(f"output tokens: {stats.TOKENS_SOURCE.get(source)}")
    if args.report is not None:
        args.report.write_text(stats.markdown(report), encoding="utf-8")
    if args.plot is not None:
        plot(report, args.plot)


def plot(report: dict[str, Any], path: pathlib.Path) -> None:
    """Latency (p50, p90, p99) against throughput, a point per level; for an LLM also TTFT and ITL
    against output tokens/s. A PNG at ``path``."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    from matplotlib import pyplot

    levels = [level for level in report["levels"] if level.get("latency_ms")]
    llm = report["kind"] == "llm"
    figure, axes = pyplot.subplots(1, 2 if llm else 1, figsize=(12 if llm else 6, 4.5), squeeze=False)
    labels = [stats.load_label(level) for level in levels]

    def draw(ax: Any, xs: list[float], metrics: list[tuple[str, str]], xlabel: str, ylabel: str) -> None:
        for name, key in metrics:
            ys = [(level.get(name) or {}).get(key) for level in levels]
            ax.plot(xs, [math.nan if y is None else y for y in ys], marker="o", label=f"{name} {key}")
        first, key = metrics[0]
        for x, y, label in zip(xs, [(level.get(first) or {}).get(key) for level in levels], labels, strict=True):
            ax.annotate(label, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)

    throughput = [level["requests_per_s"] for level in levels]
    draw(
        axes[0][0],
        throughput,
        [("latency_ms", "p50"), ("latency_ms", "p90"), ("latency_ms", "p99")],
        "requests/s",
        "request latency (ms)",
    )
    if llm:
        tokens = [level["output_tokens_per_s"] for level in levels]
        draw(
            axes[0][1],
            tokens,
            [("ttft_ms", "p50"), ("ttft_ms", "p99"), ("itl_ms", "p50"), ("itl_ms", "p99")],
            "output tokens/s",
            "TTFT / ITL (ms)",
        )
    figure.suptitle(f"xclient bench: {report['model']} ({report['url']})")
    figure.tight_layout()
    figure.savefig(path, format="png", dpi=100)
    pyplot.close(figure)
