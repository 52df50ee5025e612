"""``xclient gateway``: the OpenAI-compatible API of :mod:`Xclient.gateway` on uvicorn, until Ctrl-C."""

from __future__ import annotations

import os

from .._replica_urls import split_urls
from ..client._urls import parse_url
from ..exceptions import XclientValueError
from ._app import ENV_API_KEY, EXIT_ERROR, Commands, Context, env

ENV_GATEWAY_KEY = "XCLIENT_GATEWAY_API_KEY"


def add_commands(commands: Commands) -> None:
    gateway = commands.add(
        "gateway",
        _gateway,
        help="serve an OpenAI-compatible API (chat, completions, embeddings, rerank) in front of Triton servers",
        examples=[
            "xclient gateway --url grpc://localhost:8001                # http://127.0.0.1:9000/v1",
            'xclient gateway --url grpc://triton-a:8001 --url grpc://triton-b:8001 --api-key "$KEY"',
            "xclient gateway --url http://localhost:8000 --host 0.0.0.0 --port 9000",
        ],
        connection=False,
    )
    gateway.add_argument(
        "--url",
        action="append",
        metavar="URL",
        help="a Triton server (grpc://host:8001 or http://host:8000; no scheme: HTTP); repeatable: a model "
        "served by several is reached over all of them, as one replica set (balancing, failover) "
        "(default: env XCLIENT_URL, else http://localhost:8000)",
    )
    gateway.add_argument("--host", default="127.0.0.1", help="the address to listen on (default 127.0.0.1)")
    gateway.add_argument("--port", type=int, default=9000, help="the port to listen on (default 9000)")
    gateway.add_argument(
        "--api-key",
        default=env(ENV_GATEWAY_KEY),
        metavar="KEY",
        help=f"require 'Authorization: Bearer KEY' on every /v1 route (env {ENV_GATEWAY_KEY}); never shown",
    )
    gateway.add_argument(
        "--triton-api-key",
        default=env(ENV_API_KEY),
        metavar="KEY",
        help=f"sent to Triton as 'Authorization: Bearer KEY' (env {ENV_API_KEY}); never shown",
    )
    gateway.add_argument(
        "--timeout", type=float, default=60.0, metavar="SECONDS", help="deadline of each Triton response (60 s)"
    )
    gateway.add_argument(
        "--loop",
        default="auto",
        choices=["auto", "uvloop", "asyncio"],
        help="the event loop, as uvicorn names it: auto takes uvloop where it is installed (the gateway extra "
        "installs it, except on Windows), else asyncio's (default auto)",
    )
    gateway.add_argument(
        "--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"], help="uvicorn's"
    )


def _gateway(ctx: Context) -> int:
    try:
        import uvicorn

        from ..gateway import create_app
    except ImportError:
        ctx.console.error("xclient gateway needs the 'gateway' extra: pip install 'llmops-xclient[gateway]'")
        return EXIT_ERROR
    args = ctx.args
    if args.loop == "uvloop":
        try:
            import uvloop  # noqa: F401 - only whether it is there
        except ImportError:
            ctx.console.error("--loop uvloop: uvloop is not installed (pip install uvloop); --loop auto uses it if so")
            return EXIT_ERROR
    # Several servers: --url repeated, or comma-separated (as XCLIENT_URL is): the integrations' one rule.
    urls = [url for given in args.url or [env("XCLIENT_URL", "http://localhost:8000")] for url in split_urls(given)]
    for url in urls:
        parse_url(url)  # a bad URL is a usage error before anything starts
    if not 0 <= args.port <= 65535:
        raise XclientValueError(f"--port: expected 0 to 65535, got {args.port}")
    app = create_app(
        urls,
        api_key=args.api_key or None,
        triton_api_key=args.triton_api_key or os.environ.get(ENV_API_KEY) or None,
        timeout_s=args.timeout,
    )
    ctx.console.note(f"gateway on http://{args.host}:{args.port}/v1 for {', '.join(str(parse_url(u)) for u in urls)}")
    uvicorn.run(
        app, host=args.host, port=args.port, log_level=args.log_level, loop=args.loop, timeout_graceful_shutdown=5
    )
    return 0
