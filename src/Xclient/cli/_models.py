"""``xclient models list|config|load|unload|stats`` and ``xclient health``: the server's models and state,
through :class:`~Xclient.client.ServerClient`."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ..exceptions import AccessDeniedError, XclientError, XclientValueError
from ._app import EXIT_ERROR, Commands, Connection, Context, Handler
from ._inputs import json_or_file
from ._output import Console, first_line

if TYPE_CHECKING:
    from ..client import ReplicaState


def add_commands(commands: Commands) -> None:
    commands.add(
        "health",
        _health,
        help="is the server live and ready; its name, version and extensions (with several --url: each replica)",
        examples=[
            "xclient health",
            "xclient health --url grpc://gpu-box:8001 --json",
            "xclient health --url grpc://triton-a:8001 --url grpc://triton-b:8001",
        ],
        json="{url, live, ready, metadata}; with several --url: {urls, up, replicas: [{url, state, ...}]}",
    )
    models = commands.group(
        "models",
        help="list the server's models and manage them (load, unload, config, statistics)",
        examples=["xclient models list", "xclient models config bge-m3-v --json", "xclient models unload text"],
    )
    for name, handler, help, examples, json in _MODEL_COMMANDS:
        _ARGUMENTS.get(name, _no_arguments)(models.add(name, handler, help=help, examples=examples, json=json))
    for alias, name in ALIASES.items():  # `xclient list`, as ollama and Xinference users type it
        _, handler, help, examples, json = next(command for command in _MODEL_COMMANDS if command[0] == name)
        parser = commands.add(
            alias,
            handler,
            help=f"the same as `xclient models {name}`: {help}",
            examples=[example.replace(f"xclient models {name}", f"xclient {alias}") for example in examples],
            json=json,
        )
        _ARGUMENTS.get(name, _no_arguments)(parser)


#: Top-level aliases of ``xclient models ...`` (ollama's ``list``/``ps``, Xinference's ``launch``/``terminate``).
ALIASES = {"list": "list", "ps": "list", "load": "load", "launch": "load", "unload": "unload", "terminate": "unload"}


def _no_arguments(parser: argparse.ArgumentParser) -> None:
    pass


def _config_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", metavar="NAME")
    _add_version(parser)


def _load_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", metavar="NAME")
    parser.add_argument(
        "--config",
        metavar="JSON_OR_FILE",
        help="Triton's JSON model config or its file; without it, the config Triton used last stays",
    )


def _unload_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", metavar="NAME")
    parser.add_argument("--dependents", action="store_true", help="also unload the models it depends on")


def _stats_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", nargs="?", metavar="NAME", help="default: every model")
    _add_version(parser)
    parser.add_argument(
        "--watch",
        nargs="?",
        type=float,
        const=DEFAULT_WATCH_S,
        metavar="SECONDS",
        help=f"refresh every SECONDS (default {DEFAULT_WATCH_S:g}) showing what changed since the last refresh "
        "(--json: one JSON line per refresh); Ctrl-C leaves",
    )
    parser.add_argument("--count", type=int, metavar="N", help="with --watch: stop after N refreshes")


#: ``xclient models stats --watch``'s refresh period when none is given.
DEFAULT_WATCH_S = 2.0
#: How ``--watch`` waits between refreshes (a test makes requests there instead).
pause: Callable[[float], None] = time.sleep


def _add_version(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model-version", metavar="VERSION", help="default: the server's choice")


def _health(ctx: Context) -> int:
    """Live and ready come from the health endpoints, which a server with an API key leaves open; its
    metadata needs the key there, so without a key health still answers (metadata: null). A key that is
    given and refused is an error. Several URLs: :func:`_replicas_health`."""
    if len(ctx.connection.urls) > 1:
        return _replicas_health(ctx)
    with ctx.connection.server() as server:
        live, ready = server.is_live(), server.is_ready()
        try:
            metadata: dict[str, Any] | None = server.metadata()
        except AccessDeniedError:
            if ctx.connection.api_key:
                raise
            metadata = None
    console = ctx.console
    if ctx.args.json:
        console.json({"url": ctx.connection.url, "live": live, "ready": ready, "metadata": metadata})
    else:
        about = (
            [
                ["server", f"{metadata.get('name', '?')} {metadata.get('version', '')}".strip()],
                ["extensions", ", ".join(metadata.get("extensions", []))],
            ]
            if metadata is not None
            else [["server", "(its metadata needs the API key: --api-key or XCLIENT_API_KEY)"]]
        )
        console.table(
            None,
            [["url", ctx.connection.url], ["live", _yes(console, live)], ["ready", _yes(console, ready)], *about],
        )
    return 0 if live and ready else EXIT_ERROR


def _replicas_health(ctx: Context) -> int:
    """Every replica, asked on its own (each call with its deadline): its state (``up``: live and ready;
    ``down``: unreachable or not ready), the requests this command has in flight on it (0 once it has
    answered), the latency of its health calls, and what its failure said. Exit 0 when at least one is
    up: a client over these URLs is served."""
    replicas = [_replica_health(ctx.connection.one(url)) for url in ctx.connection.urls]
    up = sum(r.state == "up" for r, _, _ in replicas)
    console = ctx.console
    if ctx.args.json:
        rows = [{**dataclasses.asdict(r), "live": live, "ready": ready} for r, live, ready in replicas]
        console.json({"urls": list(ctx.connection.urls), "up": up, "replicas": rows})
    else:
        headers = ["replica", "state", "live", "ready", "outstanding", "latency ms", "last error"]
        console.table(
            headers,
            [
                [
                    r.url,
                    console.style(r.state, "green" if r.state == "up" else "red"),
                    _yes(console, live),
                    _yes(console, ready),
                    r.outstanding,
                    "-" if r.latency_ms is None else f"{r.latency_ms:.1f}",
                    r.last_error or "",
                ]
                for r, live, ready in replicas
            ],
        )
        console.print(f"{up} of {len(replicas)} replicas up")
    return 0 if up else EXIT_ERROR


def _replica_health(connection: Connection) -> tuple[ReplicaState, bool, bool]:
    """One replica's state (the replica set's vocabulary), live and ready."""
    from ..client import ReplicaState

    started = time.perf_counter()
    live = ready = False
    try:
        with connection.server() as server:
            live = server.is_live()
            ready = live and server.is_ready()
    except XclientError as e:
        return ReplicaState(connection.urls[0], "down", 0, None, 1, first_line(str(e))[0]), False, False
    latency_ms = (time.perf_counter() - started) * 1000.0 / (2 if live else 1)
    error = None if ready else ("not ready" if live else "not live")
    state: Any = "up" if ready else "down"
    return ReplicaState(connection.urls[0], state, 0, latency_ms, 0 if ready else 1, error), live, ready


def _yes(console: Console, value: bool) -> str:
    return console.style("yes", "green") if value else console.style("no", "red")


def _list(ctx: Context) -> None:
    with ctx.connection.server() as server:
        models = server.models()
    if ctx.args.json:
        ctx.console.json([dataclasses.asdict(m) for m in models])
        return
    console = ctx.console
    rows = [[m.name, m.version or "-", _state(console, m.state), m.reason] for m in models]
    console.table(["model", "version", "state", "reason"], rows)


def _state(console: Console, state: str) -> str:
    return console.style(state or "-", "green" if state == "READY" else "yellow")


def _config(ctx: Context) -> None:
    with ctx.connection.server() as server:
        config = server.model_config(ctx.args.name, ctx.args.model_version)
    console = ctx.console
    if ctx.args.json:
        console.json(config.raw)
        return
    raw = config.raw
    batching = f"max_batch_size {config.max_batch_size}" if config.batching else "no batching"
    if "dynamic_batching" in raw:
        batching += ", dynamic batching"
    instances = ", ".join(
        f"{g.get('count', 1)} x {str(g.get('kind', '')).removeprefix('KIND_')}" for g in raw.get("instance_group", [])
    )
    console.print(console.style(config.name, "bold") + f"  (backend {config.backend or '?'})")
    console.print(
        f"  {batching}; {'decoupled (streams responses)' if config.decoupled else 'one response per request'}"
    )
    if instances:
        console.print(f"  instances: {instances}")
    for title, specs in (("inputs", config.inputs), ("outputs", config.outputs)):
        console.print()
        rows = [[s.name, s.triton_dtype, str(list(s.shape)), "optional" if s.optional else ""] for s in specs]
        console.table([title, "dtype", "dims", ""], rows)


def _replicas(ctx: Context) -> list[Connection]:
    """Each replica on its own: what loads and unloads go to (every replica serves the same models)."""
    return [ctx.connection.one(url) for url in ctx.connection.urls]


def _on(connection: Connection, ctx: Context) -> str:
    """`` on URL`` when the command has several replicas."""
    return f" on {connection.url}" if len(ctx.connection.urls) > 1 else ""


def _load(ctx: Context) -> None:
    """Load on every replica, one after the other (the first failure stops)."""
    config = None if ctx.args.config is None else json_or_file(ctx.args.config, "--config")
    for replica in _replicas(ctx):
        with replica.server() as server:
            server.load_model(ctx.args.name, config)
        if config is None:
            kept = "with the config Triton used last: an earlier --config stays"
            ctx.console.print(f"loaded {ctx.args.name}{_on(replica, ctx)} ({kept})")
        else:
            ctx.console.print(f"loaded {ctx.args.name}{_on(replica, ctx)} with the given config")


def _unload(ctx: Context) -> None:
    """Unload on every replica, and return once the model is gone (a name the server does not have is an
    error)."""
    for replica in _replicas(ctx):
        with replica.server() as server:
            server.unload_model(ctx.args.name, unload_dependents=ctx.args.dependents, wait=True)
        ctx.console.print(f"unloaded {ctx.args.name}{_on(replica, ctx)}")


#: Triton's per-model durations (``inference_stats``, cumulative counts and nanoseconds), in the order shown.
PHASES = ("queue", "compute_input", "compute_infer", "compute_output")


@dataclasses.dataclass(frozen=True)
class ModelStats:
    """One model version's statistics: ``counts`` (``success``, ``fail``, ``inferences``, ``executions``
    and each phase's count) and ``ns`` (each phase's and ``success``'s total nanoseconds), cumulative
    since the server started, or the differences over an interval (:meth:`since`)."""

    name: str
    version: str
    counts: Mapping[str, int]
    ns: Mapping[str, int]

    @classmethod
    def of(cls, entry: Mapping[str, Any]) -> ModelStats:
        """From one entry of Triton's statistics (HTTP or gRPC: counts may come as strings)."""
        inference = entry.get("inference_stats", {})
        counts = {
            "inferences": int(entry.get("inference_count", 0)),
            "executions": int(entry.get("execution_count", 0)),
        }
        ns = {}
        for name in ("success", "fail", *PHASES):
            counts[name] = int(inference.get(name, {}).get("count", 0))
            ns[name] = int(inference.get(name, {}).get("ns", 0))
        return cls(str(entry.get("name", "")), str(entry.get("version", "")), counts, ns)

    @property
    def key(self) -> tuple[str, str]:
        return self.name, self.version

    def since(self, before: ModelStats | None) -> ModelStats:
        """The differences since ``before`` (the same model's earlier statistics; None: all of them).
        Counters that went back (the model was reloaded) start again from zero."""
        if before is None:
            return self
        counts = {k: v - before.counts.get(k, 0) for k, v in self.counts.items()}
        ns = {k: v - before.ns.get(k, 0) for k, v in self.ns.items()}
        if any(v < 0 for v in (*counts.values(), *ns.values())):
            return self
        return ModelStats(self.name, self.version, counts, ns)

    def mean_ms(self, phase: str) -> float | None:
        """The mean of one phase per request, in milliseconds (None: no request)."""
        calls = self.counts.get(phase, 0)
        return self.ns.get(phase, 0) / calls / 1e6 if calls else None

    def as_json(self, interval_s: float | None = None) -> dict[str, Any]:
        """What ``--json`` prints of it (with ``requests_per_s`` over an interval)."""
        found: dict[str, Any] = {"name": self.name, "version": self.version, **self.counts}
        for phase in (*PHASES, "success"):
            found[f"{'request' if phase == 'success' else phase}_ms"] = self.mean_ms(phase)
        if interval_s:
            found["requests_per_s"] = self.counts["success"] / interval_s
        return found


STATS_HEADERS = [
    "model",
    "version",
    "inferences",
    "executions",
    "ok",
    "failed",
    "queue ms",
    "input ms",
    "infer ms",
    "output ms",
    "request ms",
]


def stats_row(stats: ModelStats) -> list[str]:
    """One model's counts and mean durations per request (milliseconds; "-": no request)."""

    def ms(phase: str) -> str:
        mean = stats.mean_ms(phase)
        return "-" if mean is None else f"{mean:.2f}"

    counts = stats.counts
    return [
        stats.name,
        stats.version,
        *(str(counts[k]) for k in ("inferences", "executions", "success", "fail")),
        *(ms(phase) for phase in (*PHASES, "success")),
    ]


def _stats(ctx: Context) -> int:
    args = ctx.args
    if args.watch is None:
        with ctx.connection.server() as server:
            raw = server.statistics(args.name, args.model_version)
        if args.json:
            ctx.console.json(raw)
        else:
            ctx.console.table(STATS_HEADERS, [stats_row(ModelStats.of(entry)) for entry in raw])
        return 0
    if not args.watch > 0:
        raise XclientValueError(f"--watch: expected a positive number of seconds, got {args.watch:g}")
    if args.count is not None and args.count < 1:
        raise XclientValueError(f"--count: expected a positive number of refreshes, got {args.count}")
    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C is how one leaves --watch
        _watch(ctx)
    return 0


def _watch(ctx: Context) -> None:
    """Every ``--watch`` seconds: what each model did since the last refresh (the first: since the server
    started), ``--count`` times or until Ctrl-C."""
    args, console = ctx.args, ctx.console
    previous: dict[tuple[str, str], ModelStats] = {}
    last: float | None = None
    refresh = 0
    with ctx.connection.server() as server:
        while args.count is None or refresh < args.count:
            if refresh:
                pause(args.watch)
            now = time.monotonic()
            current = [ModelStats.of(entry) for entry in server.statistics(args.name, args.model_version)]
            interval = None if last is None else now - last
            deltas = [stats.since(previous.get(stats.key)) if interval is not None else stats for stats in current]
            previous, last = {s.key: s for s in current}, now
            refresh += 1
            if args.json:
                console.json(
                    {
                        "refresh": refresh,
                        "interval_s": interval,
                        "since": "last refresh" if interval is not None else "server start",
                        "models": [d.as_json(interval) for d in deltas],
                    }
                )
                continue
            when = "since the server started" if interval is None else f"in the last {interval:.1f} s"
            console.print(console.style(f"{time.strftime('%H:%M:%S')}  refresh {refresh}: per request, {when}", "dim"))
            console.table(STATS_HEADERS, [stats_row(d) for d in deltas])
            console.print()


#: ``xclient models ...``: name, handler, help, examples, what --json prints (None: no --json).
_MODEL_COMMANDS: Sequence[tuple[str, Handler, str, list[str], str | None]] = (
    (
        "list",
        _list,
        "every model in the repository, with its versions and state",
        ["xclient models list", "xclient models list --json | jq -r '.[].name'"],
        "a JSON array of {name, version, state, reason}",
    ),
    (
        "config",
        _config,
        "a model's config: inputs, outputs, batching",
        ["xclient models config text", "xclient models config text --json > text.json"],
        "Triton's JSON model config",
    ),
    (
        "load",
        _load,
        "load (or reload) a model, optionally with a config that overrides its config.pbtxt (an override stays "
        "until the next --config or a server restart)",
        ["xclient models load text", "xclient models load text --config text.json"],
        None,
    ),
    (
        "unload",
        _unload,
        "unload a model (and wait until it is gone)",
        ["xclient models unload text", "xclient models unload ensemble --dependents"],
        None,
    ),
    (
        "stats",
        _stats,
        "Triton's inference statistics of a model (or of all): counts and mean queue, compute-input, "
        "compute-infer and compute-output times per request; --watch shows them per interval",
        [
            "xclient models stats text",
            "xclient models stats --json",
            "xclient models stats Qwen2-0.5B-Instruct --watch 5",
        ],
        "Triton's statistics as a JSON array (with --watch: a JSON line per refresh)",
    ),
)


#: The arguments of each ``xclient models ...`` command (and of its aliases).
_ARGUMENTS: dict[str, Callable[[argparse.ArgumentParser], None]] = {
    "config": _config_arguments,
    "load": _load_arguments,
    "unload": _unload_arguments,
    "stats": _stats_arguments,
}
