"""``xclient serve``: a real Triton server in the foreground (:class:`~Xclient.server.LocalTritonServer`,
the ``server`` extra), with the demo models or your model repository (Python backend, TorchScript and
ONNX on CPU), until Ctrl-C."""

from __future__ import annotations

import contextlib
import pathlib
import signal
import socket
import threading
import time
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from ..client._base import check_timeout
from ..exceptions import XclientValueError
from ._app import ENV_URL, EXIT_ERROR, Commands, Context, add_api_key_option

if TYPE_CHECKING:
    from ..server import LocalTritonServer


def add_commands(commands: Commands) -> None:
    serve = commands.add(
        "serve",
        _serve,
        help="run a local Triton server with the demo models or your model repository (Python backend, "
        "TorchScript and ONNX on CPU), until Ctrl-C",
        examples=[
            "xclient serve                                    # the demo models on :8000 (HTTP) and :8001 (gRPC)",
            "xclient serve --models text,bge-m3-v --http-port 9000 --grpc-port 9001",
            'xclient serve --model-repository ./models --api-key "$XCLIENT_API_KEY"',
        ],
        connection=False,
    )
    serve.add_argument(
        "--model-repository",
        action="append",
        type=pathlib.Path,
        metavar="DIR",
        help="a model repository (DIR/NAME/config.pbtxt, DIR/NAME/1/model.py|model.pt|model.onnx); repeatable "
        "(default: demo models)",
    )
    serve.add_argument(
        "--models", action="extend", type=_names, metavar="NAME[,NAME]", help="serve only these (default: all)"
    )
    serve.add_argument("--host", default="127.0.0.1", help="the address to listen on (default 127.0.0.1)")
    serve.add_argument("--http-port", type=int, default=8000, help="default 8000; 0: any free port")
    serve.add_argument("--grpc-port", type=int, default=8001, help="default 8001; 0: any free port")
    add_api_key_option(serve, "require this key ('Authorization: Bearer KEY') on every request but health checks")
    serve.add_argument("--timeout", type=float, default=120.0, metavar="SECONDS", help="start-up deadline (120 s)")


def _names(value: str) -> list[str]:
    return [name.strip() for name in value.split(",") if name.strip()]


def _serve(ctx: Context) -> int:
    from ..server import DEMO_MODELS, LocalTritonServer

    args, console = ctx.args, ctx.console
    repositories = args.model_repository or [DEMO_MODELS]
    backends = available_backends()
    for option, port in (("--http-port", args.http_port), ("--grpc-port", args.grpc_port)):
        _check_port(args.host, port, option)
    server = LocalTritonServer(
        repositories,
        host=args.host,
        http_port=args.http_port,
        grpc_port=args.grpc_port,
        models=args.models,
        api_key=args.api_key or None,
        startup_timeout_s=check_timeout("--timeout", args.timeout),
    )
    for refusal in server.refused:  # one line each; the other models still start
        console.error(refusal)
    console.note("starting Triton ...")
    with _sigterm_as_interrupt():
        try:
            server.start()
            _announce(ctx, server, backends)
            while server.is_alive():
                time.sleep(0.2)
            lines = [line for line in server.logs().splitlines() if line.strip()] or ["(empty)"]
            console.error(f"the Triton server exited on its own; the last line of its log: {lines[-1]}")
            return EXIT_ERROR
        except KeyboardInterrupt:
            console.note("stopping Triton ...")
        finally:
            server.stop()
    console.note("stopped")
    return 0


def available_backends() -> list[str]:
    """The backends the installed server has (the nvidia-pytriton wheel's: ``python`` only)."""
    from ..server._local import _pytriton_root

    directory = _pytriton_root() / "tritonserver" / "backends"
    return sorted(p.name for p in directory.iterdir() if p.is_dir()) if directory.is_dir() else []


def _check_port(host: str, port: int, option: str) -> None:
    if port == 0:
        return
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as e:
            raise XclientValueError(
                f"{host}:{port} is not available ({e.strerror}): pick another {option} (0: any free port)"
            ) from None


def _announce(ctx: Context, server: LocalTritonServer, backends: Sequence[str]) -> None:
    from ..client import ServerClient

    console = ctx.console
    with ServerClient(server.http_url, api_key=ctx.args.api_key or None) as client:
        metadata: dict[str, Any] = client.metadata()
        names = sorted({m.name for m in client.models() if m.ready})
    title = f"Triton {metadata.get('version', '')} serves: {', '.join(names) or 'no model'}"
    console.print(console.style(title, "bold"))
    rows = [["  HTTP", server.http_url], ["  gRPC", server.grpc_url], ["  pid", str(server.pid)]]
    console.table(None, [*rows, ["  log", str(server.log_path)]])
    console.print(
        f"backends: {', '.join(backends)} only (the nvidia-pytriton wheel's tritonserver); TorchScript and ONNX "
        "models run on CPU through Xclient's Python-backend runners; vLLM, TensorRT-LLM, TensorRT... need a full "
        "Triton server"
    )
    if ctx.args.api_key:
        console.print("API key: required on every request but health checks (clients: --api-key or XCLIENT_API_KEY)")
    console.print(f"try: export {ENV_URL}={server.http_url} && xclient models list")
    console.print(console.style("Ctrl-C stops the server.", "dim"))


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM stops the server as cleanly as Ctrl-C (the main thread only can set handlers)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
