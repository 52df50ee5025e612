"""``xclient models list|config|load|unload|stats`` and ``xclient health``: the server's models and state,
through :class:`~Xclient.client.ServerClient`."""

from __future__ import annotations

import argparse
import dataclasses
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ..exceptions import AccessDeniedError, XclientError
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


def _stats(ctx: Context) -> None:
    with ctx.connection.server() as server:
        stats = server.statistics(ctx.args.name, ctx.args.model_version)
    if ctx.args.json:
        ctx.console.json(stats)
        return
    headers = ["model", "version", "inferences", "executions", "ok", "failed", "queue ms", "compute ms", "total ms"]
    ctx.console.table(headers, [_stats_row(entry) for entry in stats])


def _stats_row(entry: Mapping[str, Any]) -> Sequence[str]:
    """One model's counts and mean latencies (Triton's durations are cumulative nanoseconds)."""
    stats = entry.get("inference_stats", {})

    def count(name: str) -> int:
        return int(stats.get(name, {}).get("count", 0))

    def mean_ms(*names: str) -> str:
        total = sum(int(stats.get(n, {}).get("ns", 0)) for n in names)
        calls = count(names[0])
        return f"{total / calls / 1e6:.2f}" if calls else "-"

    return [
        str(entry.get("name", "")),
        str(entry.get("version", "")),
        str(int(entry.get("inference_count", 0))),
        str(int(entry.get("execution_count", 0))),
        str(count("success")),
        str(count("fail")),
        mean_ms("queue"),
        mean_ms("compute_input", "compute_infer", "compute_output"),
        mean_ms("success"),
    ]


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
        "inference statistics of a model (or of all): counts and mean latencies",
        ["xclient models stats text", "xclient models stats --json"],
        "Triton's statistics as a JSON array",
    ),
)


#: The arguments of each ``xclient models ...`` command (and of its aliases).
_ARGUMENTS: dict[str, Callable[[argparse.ArgumentParser], None]] = {
    "config": _config_arguments,
    "load": _load_arguments,
    "unload": _unload_arguments,
    "stats": _stats_arguments,
}
